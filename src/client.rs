//! `easel generate`: a small client of a running Easel. Submits a task, shows a progress bar
//! while it runs, and saves the images.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// What to generate.
pub struct Request {
    pub model: String,
    pub prompt: String,
    pub size: Option<String>,
    pub n: u32,
    pub references: Vec<String>,
}

pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// Which of the server's task APIs a model is asked through: the unified one where the model
/// is offered there (one body for every model), else APIXO's with the `input` of its family.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Unified,
    Apixo { family: String },
}

impl Client {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), key: key.to_owned(), http })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(&self.key).send().await.context("reaching the Easel server")?;
        let status = response.status();
        let body: Value = response.json().await.context("reading the server's answer")?;
        if !status.is_success() || body["code"] != 200 {
            let message = body["message"].as_str().or(body["msg"].as_str()).unwrap_or("unknown error");
            bail!("the server refused: {message} (HTTP {status})");
        }
        Ok(body["data"].clone())
    }

    /// How the server's catalog (`GET /api/v1/models`) says `model` is asked for.
    pub async fn route(&self, model: &str) -> anyhow::Result<Route> {
        let models = self.call(self.http.get(format!("{}/api/v1/models", self.base))).await?;
        let entry = models
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == model || m["aliases"].as_array().is_some_and(|a| a.iter().any(|n| n == model)))
            .with_context(|| format!("the server has no model {model:?} (GET /api/v1/models lists them)"))?;
        let offered = |api: &str| entry["apis"].as_array().is_some_and(|a| a.iter().any(|n| n == api));
        if offered("unified") {
            Ok(Route::Unified)
        } else if offered("apixo") {
            Ok(Route::Apixo { family: entry["family"].as_str().unwrap_or_default().to_owned() })
        } else {
            bail!("model {model:?} is offered on neither task API")
        }
    }

    /// Submits the task through `route` and returns its id.
    pub async fn submit(&self, r: &Request, route: &Route) -> anyhow::Result<String> {
        let (url, body) = if let Route::Apixo { family } = route {
            let mut input = if family == "gpt-image" {
                json!({"mode": r.model, "prompt": r.prompt, "num_images": r.n})
            } else {
                let mode = if r.references.is_empty() { "text-to-image" } else { "image-to-image" };
                let mut input = json!({"mode": mode, "prompt": r.prompt, "max_images": r.n});
                if let Some(size) = &r.size {
                    input["size"] = json!(size);
                }
                input
            };
            if !r.references.is_empty() {
                input["image_urls"] = json!(r.references);
            }
            (format!("{}/api/v1/generateTask/{}", self.base, r.model), json!({ "input": input }))
        } else {
            let mut body = json!({"model": r.model, "prompt": r.prompt, "n": r.n});
            if let Some(size) = &r.size {
                body["size"] = json!(size);
            }
            if !r.references.is_empty() {
                body["image_url"] = json!(r.references);
            }
            (format!("{}/api/v1/images/generations", self.base), body)
        };
        let data = self.call(self.http.post(url).json(&body)).await?;
        data["taskId"].as_str().map(str::to_owned).context("the answer has no taskId")
    }

    /// Polls until the task ends, showing a spinner; returns the result URLs.
    pub async fn wait(&self, model: &str, route: &Route, task: &str) -> anyhow::Result<Vec<String>> {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        let started = Instant::now();
        loop {
            let data = if matches!(route, Route::Apixo { .. }) {
                let url = format!("{}/api/v1/statusTask/{model}", self.base);
                self.call(self.http.get(url).query(&[("taskId", task)])).await?
            } else {
                let url = format!("{}/api/v1/images/generations", self.base);
                self.call(self.http.get(url).query(&[("task_id", task)])).await?
            };
            let state = data["state"].as_str().unwrap_or("unknown").to_owned();
            bar.set_message(format!("{task}: {state}"));
            match state.as_str() {
                "success" | "completed" => {
                    bar.finish_with_message(format!("{task}: done in {:.1}s", started.elapsed().as_secs_f64()));
                    return Ok(result_urls(&data));
                }
                "failed" => {
                    bar.abandon_with_message(format!("{task}: failed"));
                    let code = data["failCode"].as_str().unwrap_or("GENERATION_FAILED");
                    bail!("{code}: {}", data["failMsg"].as_str().unwrap_or(""));
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Saves each image as `<task>-<i>.<ext>` in `dir` and returns the paths.
    pub async fn save(&self, task: &str, urls: &[String], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut saved = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let bytes = self.http.get(url).send().await?.error_for_status()?.bytes().await?;
            let ext = match crate::media::sniff(&bytes) {
                Some(image::ImageFormat::Png) => "png",
                Some(image::ImageFormat::WebP) => "webp",
                _ => "jpeg",
            };
            let path = dir.join(format!("{task}-{i}.{ext}"));
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            saved.push(path);
        }
        Ok(saved)
    }
}

/// `resultUrls` of either dialect's status object.
fn result_urls(data: &Value) -> Vec<String> {
    let list = match data["resultJson"].as_str() {
        Some(raw) => serde_json::from_str::<Value>(raw).map(|v| v["resultUrls"].clone()).unwrap_or_default(),
        None => data["resultUrls"].clone(),
    };
    list.as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_owned)).collect()
}
