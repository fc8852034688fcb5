//! `easel generate`: a client of a running Easel. It asks the server's catalog which API serves
//! a model, submits the task there, follows it on the dialect-free task view
//! (`GET /api/v1/tasks/{id}`) with a progress bar, and saves the images.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::catalog::Size;
use crate::sse_reader::{Frame, SseReader};

/// What to generate.
pub struct Request {
    pub model: String,
    pub prompt: String,
    pub size: Option<String>,
    pub n: u32,
    pub references: Vec<String>,
}

/// Where a task is created, with the body it is created with. A model offered on APIXO's
/// per-model API goes there, so its request and failure codes read as the seeds define them;
/// the unified API takes the models APIXO's does not offer, and requests whose fields the
/// model's APIXO `input` cannot say.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Apixo { model: String, input: Value },
    Unified { model: String, body: Value },
}

/// How long one call keeps trying through connection errors, 5xx and 429 before giving up.
const RETRY_BUDGET: Duration = Duration::from_secs(180);
/// The longest pause between two tries, whatever `Retry-After` says.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(15);
/// Between two polls of a task that is still running.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Seed 002's image counts (`input.num_images`).
const SEED_002_COUNTS: [u32; 3] = [1, 2, 4];

impl Route {
    /// The route for `r` given the model's entry in `GET /api/v1/models`.
    pub fn choose(entry: &Value, r: &Request) -> anyhow::Result<Route> {
        let id = entry["id"].as_str().context("a catalog entry without an id")?.to_owned();
        let offered = |api: &str| entry["apis"].as_array().is_some_and(|a| a.iter().any(|n| n == api));
        let apixo = offered("apixo").then(|| apixo_input(entry, &id, r));
        match apixo {
            Some(Ok(input)) => Ok(Route::Apixo { model: id, input }),
            _ if offered("unified") => Ok(Route::Unified { body: unified_body(&id, r), model: id }),
            Some(Err(reason)) => {
                bail!("{id} is offered only through generateTask/{id}, whose input cannot say {reason}")
            }
            None => bail!("model {id:?} is offered on neither task API (generateTask or images/generations)"),
        }
    }

    /// `apixo` or `unified`, as the task view's `api` says.
    pub fn api(&self) -> &'static str {
        match self {
            Route::Apixo { .. } => "apixo",
            Route::Unified { .. } => "unified",
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Route::Apixo { model, .. } | Route::Unified { model, .. } => model,
        }
    }
}

/// The `input` of `generateTask/{id}` for `r`, by the model's family (see
/// `catalog::family::*::parse_apixo_input`), or what of `r` it cannot say.
fn apixo_input(entry: &Value, id: &str, r: &Request) -> Result<Value, String> {
    let mut input = match entry["family"].as_str() {
        Some("seedream") => {
            let mode = if r.references.is_empty() { "text-to-image" } else { "image-to-image" };
            let mut input = json!({"mode": mode, "prompt": r.prompt, "max_images": r.n});
            // `size` takes a tier or `WxH`, and wins over resolution and aspect ratio.
            if let Some(size) = &r.size {
                input["size"] = json!(size);
            }
            input
        }
        Some("gpt-image") => {
            let max = entry["limits"]["maxImages"].as_u64().unwrap_or(u64::MAX);
            if !SEED_002_COUNTS.iter().any(|c| *c == r.n && u64::from(*c) <= max) {
                return Err(format!("--n {} (num_images is 1, 2 or 4)", r.n));
            }
            let mut input = json!({"mode": id, "prompt": r.prompt, "num_images": r.n});
            if let Some(size) = r.size.as_deref().filter(|s| *s != "auto") {
                let ratio = gpt_aspect_ratio(entry, size).ok_or_else(|| format!("--size {size}"))?;
                input["aspect_ratio"] = json!(ratio);
            }
            input
        }
        other => return Err(format!("a request of family {}", other.unwrap_or("unknown"))),
    };
    if !r.references.is_empty() {
        input["image_urls"] = json!(r.references);
    }
    Ok(input)
}

/// Seed 002 asks for a size by its aspect ratio, which picks the model's first listed size of
/// that ratio: `size` can be asked for only if it is that size.
fn gpt_aspect_ratio(entry: &Value, size: &str) -> Option<String> {
    let wanted = parse_wxh(size)?;
    let ratio = wanted.aspect_ratio();
    let listed = entry["sizes"]["sizes"].as_array()?.iter().filter_map(|s| parse_wxh(s.as_str()?));
    let picked = listed.into_iter().find(|s| s.aspect_ratio() == ratio)?;
    (picked == wanted).then_some(ratio)
}

fn parse_wxh(raw: &str) -> Option<Size> {
    let (w, h) = raw.trim().to_ascii_lowercase().split_once('x').map(|(w, h)| (w.parse().ok(), h.parse().ok()))?;
    Some(Size::new(w?, h?))
}

/// Seed 003's body for `r`.
fn unified_body(id: &str, r: &Request) -> Value {
    let mut body = json!({"model": id, "prompt": r.prompt, "n": r.n});
    if let Some(size) = &r.size {
        body["size"] = json!(size);
    }
    if !r.references.is_empty() {
        body["image_url"] = json!(r.references);
    }
    body
}

/// Why one attempt at a call failed, and whether another can go differently.
enum Failure {
    /// No answer, a 5xx, 408, 409 or 429: the next try may succeed (after `after`, when the
    /// server said how long).
    Transient { error: anyhow::Error, after: Option<Duration> },
    /// An answer that will not change by asking again: 401, 404, 400, or not Easel's.
    Final(anyhow::Error),
}

/// Statuses worth asking again for. 409 is an idempotent submit whose first try is still
/// being processed; the others are the usual passing ones.
fn transient(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS)
}

/// The pause before retry `tries` (0 for the first): 250 ms, doubling, at most [`MAX_RETRY_DELAY`].
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << tries.min(10))).min(MAX_RETRY_DELAY)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// The message of an error answer in any of Easel's envelopes.
fn error_message(body: &Value) -> Option<&str> {
    body["message"].as_str().or(body["msg"].as_str()).or(body["error"]["message"].as_str())
}

/// Runs `attempt` until it succeeds, fails for good, or has failed for [`RETRY_BUDGET`];
/// `on_retry` hears each transient failure and the pause before the next try.
async fn with_retries<T, F, Fut>(
    mut attempt: F,
    mut on_retry: impl FnMut(&anyhow::Error, Duration),
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Final(error)) => return Err(error),
            Err(Failure::Transient { error, after }) => {
                let delay = after.unwrap_or_else(|| backoff(tries)).min(MAX_RETRY_DELAY);
                if started.elapsed() + delay > RETRY_BUDGET {
                    let tried = started.elapsed().as_secs();
                    return Err(error.context(format!("gave up after {} tries in {tried} s", tries + 1)));
                }
                on_retry(&error, delay);
                tokio::time::sleep(delay).await;
                tries += 1;
            }
        }
    }
}

/// Tells stderr of a retry outside the progress bar, so a wait (for a rate limit, say) is not silent.
fn note_retry(what: &str) -> impl FnMut(&anyhow::Error, Duration) + '_ {
    move |error, delay| eprintln!("{what}: {}; trying again in {delay:?}", error.root_cause())
}

pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
    /// For event streams, which last as long as the task: no overall timeout, but a quiet
    /// stream (no heartbeat for this long) counts as broken.
    stream_http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), key: key.to_owned(), http, stream_http })
    }

    /// One call to the server: `data` of a house-envelope answer, or why not.
    async fn attempt(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = match request.bearer_auth(&self.key).send().await {
            Ok(response) => response,
            Err(e) => {
                let error = anyhow!(e).context(format!("reaching the Easel server at {}", self.base));
                return Err(Failure::Transient { error, after: None });
            }
        };
        let (status, after) = (response.status(), retry_after(&response));
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Err(Failure::Transient { error: anyhow!(e).context("reading the server's answer"), after });
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success()
            && let Some(body) = &parsed
            && body["code"] == 200
        {
            return Ok(body["data"].clone());
        }
        let message = parsed.as_ref().and_then(error_message).unwrap_or(status.canonical_reason().unwrap_or("?"));
        let error = anyhow!("the server answered: {message} (HTTP {})", status.as_u16());
        if transient(status) {
            Err(Failure::Transient { error, after })
        } else if parsed.is_none() {
            Err(Failure::Final(error.context(format!("{} does not answer like an Easel server", self.base))))
        } else {
            Err(Failure::Final(error))
        }
    }

    /// How the server's catalog (`GET /api/v1/models`) says `r` is asked for.
    pub async fn route(&self, r: &Request) -> anyhow::Result<Route> {
        let url = format!("{}/api/v1/models", self.base);
        let models = with_retries(|| self.attempt(self.http.get(&url)), note_retry("reading the catalog"))
            .await
            .context("reading the catalog")?;
        let named = |m: &&Value| {
            m["id"] == r.model.as_str()
                || m["aliases"].as_array().is_some_and(|a| a.iter().any(|n| n == r.model.as_str()))
        };
        let entry = models
            .as_array()
            .into_iter()
            .flatten()
            .find(named)
            .with_context(|| format!("the server has no model {:?} (GET /api/v1/models lists them)", r.model))?;
        Route::choose(entry, r)
    }

    /// Creates the task and returns its id. The idempotency key makes a retry after a lost
    /// answer return the same task instead of making (and billing) a second one.
    pub async fn submit(&self, route: &Route) -> anyhow::Result<String> {
        let (url, body) = match route {
            Route::Apixo { model, input } => {
                (format!("{}/api/v1/generateTask/{model}", self.base), json!({ "input": input }))
            }
            Route::Unified { body, .. } => (format!("{}/api/v1/images/generations", self.base), body.clone()),
        };
        let key = format!("easel-cli-{}", uuid::Uuid::now_v7().simple());
        let post = || self.attempt(self.http.post(&url).header("Idempotency-Key", &key).json(&body));
        let data = with_retries(post, note_retry("submitting the task")).await.context("submitting the task")?;
        data["taskId"].as_str().map(str::to_owned).context("the server's answer has no taskId")
    }

    /// Follows the task (of `asked` images) with a progress bar until it ends, and returns its
    /// last view (`GET /api/v1/tasks/{id}`, whether it succeeded or not). The bar moves with the
    /// task's live events; when the stream breaks, the view is polled (failed polls are retried)
    /// and the stream resumed after the last event seen.
    pub async fn wait(&self, task: &str, asked: u32) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1/tasks/{task}", self.base);
        let progress = Progress::new(task, asked);
        let mut last_event = None;
        loop {
            if let Err(e) = self.follow(task, &mut last_event, &progress).await {
                tracing::debug!(error = %e, "the event stream broke; polling");
            }
            let poll = with_retries(|| self.attempt(self.http.get(&url)), |e, delay| progress.retrying(e, delay)).await;
            let view = match poll {
                Ok(view) => view,
                Err(e) => {
                    progress.abandon("could not follow it");
                    return Err(e.context(format!("following task {task}")));
                }
            };
            progress.show(&view);
            if is_final(&view) {
                progress.finish(&view);
                return Ok(view);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Reads the task's event stream until it ends (after the task's final event) or breaks,
    /// moving the bar; `last_event` keeps the id to resume after.
    async fn follow(&self, task: &str, last_event: &mut Option<String>, progress: &Progress) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/tasks/{task}/events", self.base);
        let mut request = self.stream_http.get(&url).bearer_auth(&self.key);
        if let Some(id) = last_event.as_deref() {
            request = request.header("last-event-id", id);
        }
        let mut response = request.send().await?.error_for_status()?;
        let mut reader = SseReader::default();
        while let Some(chunk) = response.chunk().await? {
            for frame in reader.push(&chunk) {
                if let Frame::Event { id, event, data } = frame {
                    if id.is_some() {
                        *last_event = id;
                    }
                    progress.event(&event, &serde_json::from_str(&data).unwrap_or(Value::Null));
                }
            }
        }
        Ok(())
    }

    /// Saves each image as `<task>-<i>.<ext>` in `dir` and returns the paths.
    pub async fn save(&self, task: &str, urls: &[String], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut saved = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let bytes = with_retries(|| self.download(url), note_retry("downloading an image"))
                .await
                .with_context(|| format!("downloading image {i}"))?;
            let ext = match crate::media::sniff(&bytes) {
                Some(image::ImageFormat::Png) => "png",
                Some(image::ImageFormat::WebP) => "webp",
                Some(image::ImageFormat::Gif) => "gif",
                Some(_) => "jpeg",
                None => bail!("image {i} of task {task} is not an image"),
            };
            let path = dir.join(format!("{task}-{i}.{ext}"));
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            saved.push(path);
        }
        Ok(saved)
    }

    /// One image. Its link is signed, so it carries no key (it may point at another host).
    async fn download(&self, url: &str) -> Result<bytes::Bytes, Failure> {
        let lost = |error: anyhow::Error| Failure::Transient { error, after: None };
        let response = self.http.get(url).send().await.map_err(|e| lost(anyhow!(e)))?;
        let status = response.status();
        if !status.is_success() {
            let error = anyhow!("the image link answered HTTP {}", status.as_u16());
            return Err(if transient(status) { lost(error) } else { Failure::Final(error) });
        }
        response.bytes().await.map_err(|e| lost(anyhow!(e)))
    }
}

/// Whether the task view's `state` is one a task never leaves.
pub fn is_final(view: &Value) -> bool {
    matches!(view["state"].as_str(), Some("success" | "failed" | "cancelled"))
}

/// `CODE: message` of a task that ended without success, `None` for one that succeeded.
pub fn failure(view: &Value) -> Option<String> {
    let state = view["state"].as_str().unwrap_or("unknown");
    if state == "success" {
        return None;
    }
    let code = view["failCode"].as_str().map(str::to_owned).unwrap_or_else(|| state.to_uppercase());
    Some(match view["failMsg"].as_str().filter(|m| !m.is_empty()) {
        Some(message) => format!("{code}: {message}"),
        None => code,
    })
}

/// The signed links of the task view's `images`.
pub fn images(view: &Value) -> Vec<String> {
    view["images"].as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_owned)).collect()
}

/// What the progress bar says of a task view: its queue position while pending, what it is
/// doing while processing, how it ended.
fn describe(view: &Value) -> String {
    let progress = &view["progress"];
    match view["state"].as_str().unwrap_or("unknown") {
        "pending" => match progress["queuePosition"].as_u64() {
            Some(position) => format!("queued, position {position}"),
            None => "queued".to_owned(),
        },
        "processing" => "generating".to_owned(),
        "success" => "done".to_owned(),
        "failed" | "cancelled" => failure(view).unwrap_or_default(),
        other => other.to_owned(),
    }
}

/// The bar of `--wait`: images done of those asked, and [`describe`]'s words. Drawn on stderr
/// when it is a terminal (so stdout stays the paths or the JSON), hidden otherwise.
struct Progress {
    bar: ProgressBar,
    task: String,
}

impl Progress {
    fn new(task: &str, asked: u32) -> Self {
        let bar = ProgressBar::new(u64::from(asked));
        let template = "{spinner} {elapsed:>4} [{bar:24}] {pos}/{len} images  {msg}";
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(format!("{task}: submitted"));
        Self { bar, task: task.to_owned() }
    }

    fn show(&self, view: &Value) {
        let progress = &view["progress"];
        if let Some(asked) = progress["imagesRequested"].as_u64() {
            self.bar.set_length(asked);
        }
        self.bar.set_position(progress["imagesDone"].as_u64().unwrap_or(0));
        self.bar.set_message(format!("{}: {}", self.task, describe(view)));
    }

    /// One live event of the task (see the `TaskEvent` schema).
    fn event(&self, kind: &str, data: &Value) {
        let words = match kind {
            "created" => "queued".to_owned(),
            "started" => format!("generating on {}", data["channel"].as_str().unwrap_or("a channel")),
            "progress" => match (data["queuePosition"].as_u64(), data["percent"].as_u64()) {
                (Some(position), _) => format!("queued, position {position}"),
                (None, Some(percent)) => format!("generating, {percent}%"),
                (None, None) => return,
            },
            "image" => {
                self.bar.inc(1);
                return;
            }
            _ => return,
        };
        self.bar.set_message(format!("{}: {words}", self.task));
    }

    fn retrying(&self, error: &anyhow::Error, delay: Duration) {
        // The root cause alone fits on the bar's line; the whole chain is reported if it gives up.
        self.bar.set_message(format!("{}: {}; trying again in {delay:?}", self.task, error.root_cause()));
    }

    fn finish(&self, view: &Value) {
        let words = format!("{}: {}", self.task, describe(view));
        if view["state"] == "success" {
            self.bar.finish_with_message(words)
        } else {
            self.bar.abandon_with_message(words)
        }
    }

    fn abandon(&self, why: &str) {
        self.bar.abandon_with_message(format!("{}: {why}", self.task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str, size: Option<&str>, n: u32) -> Request {
        Request { model: model.into(), prompt: "p".into(), size: size.map(str::to_owned), n, references: vec![] }
    }

    fn gpt_entry(apis: &[&str]) -> Value {
        json!({"id": "gpt-image-1", "family": "gpt-image", "apis": apis, "limits": {"maxImages": 10},
            "sizes": {"sizes": ["1024x1024", "1536x1024", "1024x1536"]}})
    }

    #[test]
    fn a_model_offered_on_apixo_goes_there_first() {
        let route = Route::choose(&gpt_entry(&["apixo", "unified"]), &request("gpt-image-1", Some("1536x1024"), 2));
        let input = json!({"mode": "gpt-image-1", "prompt": "p", "num_images": 2, "aspect_ratio": "3:2"});
        assert_eq!(route.unwrap(), Route::Apixo { model: "gpt-image-1".into(), input });
        let seedream = json!({"id": "seedream-5-0", "family": "seedream", "apis": ["apixo", "openai"]});
        let mut r = request("seedream-5-0", Some("2K"), 3);
        r.references = vec!["https://ref.invalid/a.png".into()];
        let input = json!({"mode": "image-to-image", "prompt": "p", "max_images": 3, "size": "2K",
            "image_urls": ["https://ref.invalid/a.png"]});
        assert_eq!(Route::choose(&seedream, &r).unwrap(), Route::Apixo { model: "seedream-5-0".into(), input });
    }

    #[test]
    fn what_apixo_cannot_say_goes_unified_where_offered() {
        let both = gpt_entry(&["apixo", "unified"]);
        for (size, n) in [(Some("2048x2048"), 1), (None, 3)] {
            let route = Route::choose(&both, &request("gpt-image-1", size, n)).unwrap();
            assert_eq!(route.api(), "unified", "{size:?} x{n}");
        }
        let err = Route::choose(&gpt_entry(&["apixo"]), &request("gpt-image-1", None, 3)).unwrap_err();
        assert!(err.to_string().contains("--n 3"), "{err}");
        let unified = json!({"id": "doubao-seedream-4-5-251128", "family": "seedream", "apis": ["unified", "openai"]});
        assert_eq!(Route::choose(&unified, &request("x", None, 1)).unwrap().api(), "unified");
        let neither = json!({"id": "m", "family": "seedream", "apis": ["openai"]});
        assert!(Route::choose(&neither, &request("m", None, 1)).is_err());
    }

    #[test]
    fn backoff_grows_to_a_cap_and_only_passing_statuses_are_retried() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(40), MAX_RETRY_DELAY);
        for code in [500, 502, 503, 408, 409, 429] {
            assert!(transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            assert!(!transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn a_failure_reads_code_and_message() {
        let failed = json!({"state": "failed", "failCode": "CONTENT_VIOLATION", "failMsg": "no"});
        assert_eq!(failure(&failed).as_deref(), Some("CONTENT_VIOLATION: no"));
        assert_eq!(failure(&json!({"state": "cancelled"})).as_deref(), Some("CANCELLED"));
        assert_eq!(failure(&json!({"state": "success"})), None);
        let queued =
            json!({"state": "pending", "progress": {"imagesRequested": 2, "imagesDone": 0, "queuePosition": 3}});
        assert_eq!(describe(&queued), "queued, position 3");
    }
}
