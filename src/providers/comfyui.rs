//! A self-hosted ComfyUI server running the channel's workflow (docs/PROVIDERS.md §7). The
//! workflow is ComfyUI's API-format graph; the channel's `inputs` say which node input takes the
//! prompt, size, seed, batch size and reference. Easel uploads the reference
//! (`POST /upload/image`), opens the `/ws` socket of its own client id, queues the graph
//! (`POST /prompt` with that `client_id`) and records the prompt id on the task. The socket's
//! messages give the progress and the end ([`socket`]); `GET /history/{prompt_id}` (with
//! `GET /queue` for where the prompt stands) is polled all the same, and has the outputs, which
//! are fetched through `GET /view`. A cancel deletes a queued prompt (`POST /queue`) or
//! interrupts a running one (`POST /interrupt`).

mod socket;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::RequestBuilder;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::polling::{self, PollError, Status};
use super::upstream::{Secret, Upstream, cancel_call, clip, json_of, mime_of, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::config::{ChannelConfig, PollOptions};

/// The families a `comfyui` channel serves.
pub const FAMILIES: &[Family] = &[Family::Diffusion];

/// The parameters a workflow's inputs can take.
const PARAMETERS: [&str; 7] = ["prompt", "negative_prompt", "width", "height", "batch_size", "seed", "image"];

/// Where a parameter goes: a node of the graph and one of its inputs.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    node: String,
    input: String,
}

pub struct ComfyProvider {
    upstream: Upstream,
    /// The header and value a proxy in front of the server wants, if any.
    auth: Option<(String, Secret)>,
    workflow: Value,
    inputs: BTreeMap<String, Target>,
    polling: PollOptions,
}

/// One image of the outputs, as `/view` names it.
#[derive(Debug, Clone, PartialEq)]
struct Output {
    filename: String,
    subfolder: String,
}

impl ComfyProvider {
    /// Reads and checks the workflow: every mapped input must name a node and an input it has,
    /// so that a typo stops start-up rather than every task.
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let options = c.comfyui.clone().with_context(|| format!("channel {:?} needs [channels.comfyui]", c.id))?;
        let (upstream, key) = Upstream::self_hosted(c)?;
        let path = &options.workflow;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("channel {:?}: cannot read the workflow {}", c.id, path.display()))?;
        let workflow: Value = serde_json::from_str(&text)
            .with_context(|| format!("channel {:?}: the workflow {} is not JSON", c.id, path.display()))?;
        anyhow::ensure!(
            workflow.as_object().is_some_and(|g| g.values().all(|n| n["class_type"].is_string())),
            "channel {:?}: {} is not a workflow in ComfyUI's API format (export it with \"Save (API)\")",
            c.id,
            path.display()
        );
        let mut inputs = BTreeMap::new();
        for (parameter, at) in &options.inputs {
            let key = format!("[channels.comfyui.inputs] {parameter}");
            anyhow::ensure!(
                PARAMETERS.contains(&parameter.as_str()),
                "channel {:?}: {key}: unknown parameter (known: {})",
                c.id,
                PARAMETERS.join(", ")
            );
            let (node, input) =
                at.split_once('.').with_context(|| format!("channel {:?}: {key} must be \"node_id.input\"", c.id))?;
            anyhow::ensure!(
                workflow[node]["inputs"].get(input).is_some(),
                "channel {:?}: {key}: the workflow has no input {input:?} on node {node:?}",
                c.id
            );
            inputs.insert(parameter.clone(), Target { node: node.to_owned(), input: input.to_owned() });
        }
        anyhow::ensure!(inputs.contains_key("prompt"), "channel {:?}: [channels.comfyui.inputs] needs prompt", c.id);
        let header = options.auth_header.unwrap_or_else(|| "authorization".into());
        Ok(Self {
            upstream,
            auth: key.map(|k| (header, k)),
            workflow,
            inputs,
            polling: c.polling.clone().unwrap_or_default(),
        })
    }

    /// The header and value the proxy in front wants: the key as a bearer token in
    /// `Authorization`, or verbatim in the header the channel names.
    fn auth_header(&self) -> Option<(&str, String)> {
        self.auth.as_ref().map(|(name, key)| match name.eq_ignore_ascii_case("authorization") {
            true => ("authorization", format!("Bearer {}", key.expose())),
            false => (name.as_str(), key.expose().to_owned()),
        })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        let Some((name, value)) = self.auth_header() else { return request };
        match reqwest::header::HeaderValue::try_from(value.as_str()) {
            // A secret: kept out of debug output, as `bearer_auth` does.
            Ok(mut secret) => {
                secret.set_sensitive(true);
                request.header(name, secret)
            }
            // Not a header value: the request fails with the builder's error when it is sent.
            Err(_) => request.header(name, value),
        }
    }

    /// The socket of the task's client id, where the server tells it of its prompt.
    async fn socket(&self, client_id: &str) -> Option<socket::Socket> {
        let url = self.upstream.url(&format!("ws?clientId={client_id}"));
        let url = url.strip_prefix("http").map(|rest| format!("ws{rest}"))?;
        socket::open(&url, self.auth_header()).await
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        // Opened first, so that no message of the prompt is missed; the task id is the client id.
        let socket = self.socket(job.task_id).await;
        let prompt_id = match job.upstream_task_id {
            Some(id) => {
                tracing::info!(upstream_task = id, "resuming the ComfyUI prompt");
                id.to_owned()
            }
            None => {
                let graph = self.graph(&job).await?;
                let id = self.queue(&graph, job.task_id).await?;
                polling::record(job.checkpoint, &id).await?;
                id
            }
        };
        let interval = Duration::from_millis(self.polling.poll_interval_ms.max(50));
        let (ended, reported) = (Notify::new(), AtomicU32::new(0));
        // Nodes report their steps in turn (a sampler, then an upscaler's): progress only grows.
        let progress = |percent: u32| {
            if percent > reported.fetch_max(percent, Ordering::SeqCst) {
                job.checkpoint.progress(percent);
            }
        };
        let live = socket.is_some();
        let follow = async {
            match socket {
                Some(socket) => socket.follow(&prompt_id, progress, &ended).await,
                None => std::future::pending().await,
            }
        };
        let poll = || self.poll(&prompt_id, live);
        let outputs = tokio::select! {
            outputs = polling::wait_woken(job.checkpoint, &prompt_id, interval, &ended, poll) => outputs?,
            never = follow => match never {},
        };
        let mut images = Vec::new();
        for output in outputs.iter().take(job.spec.images as usize) {
            let view = self.upstream.http.get(self.upstream.url("view")).query(&[
                ("filename", output.filename.as_str()),
                ("subfolder", output.subfolder.as_str()),
                ("type", "output"),
            ]);
            let bytes = self.upstream.fetch(self.authorized(view)).await.map_err(|e| {
                ProviderError::Permanent(format!("fetching {} from ComfyUI failed: {e}", output.filename))
            })?;
            images.push(
                GeneratedImage::sniffed(bytes).ok_or_else(|| {
                    ProviderError::Permanent(format!("ComfyUI's {} is not an image", output.filename))
                })?,
            );
        }
        Ok(images)
    }

    /// The workflow with the task's parameters in their inputs (the reference uploaded first).
    async fn graph(&self, job: &Job<'_>) -> Result<Value, ProviderError> {
        let spec = job.spec;
        let seed = spec.seed.unwrap_or_else(|| u64::from(u32::from_le_bytes(crate::ids::random_bytes::<4>())));
        let mut values = vec![
            ("prompt", json!(spec.prompt)),
            ("negative_prompt", json!(spec.negative_prompt.as_deref().unwrap_or_default())),
            ("width", json!(spec.size.width)),
            ("height", json!(spec.size.height)),
            ("batch_size", json!(spec.images)),
            ("seed", json!(seed)),
        ];
        match (job.references.first(), self.inputs.contains_key("image")) {
            (Some(reference), true) => values.push(("image", json!(self.upload(job.task_id, reference).await?))),
            (Some(_), false) => {
                return Err(ProviderError::Permanent(
                    "this ComfyUI workflow takes no reference image ([channels.comfyui.inputs] has no image)".into(),
                ));
            }
            (None, _) => {}
        }
        let mut graph = self.workflow.clone();
        for (parameter, value) in values {
            if let Some(Target { node, input }) = self.inputs.get(parameter) {
                graph[node.as_str()]["inputs"][input.as_str()] = value;
            }
        }
        Ok(graph)
    }

    /// Uploads a reference; returns the name a LoadImage node takes.
    async fn upload(&self, task_id: &str, reference: &super::Reference) -> Result<String, ProviderError> {
        let ext = mime_of(reference.format).trim_start_matches("image/");
        let part = Part::bytes(reference.bytes.clone())
            .file_name(format!("easel-{task_id}.{ext}"))
            .mime_str(mime_of(reference.format))
            .map_err(|e| ProviderError::Permanent(format!("building the upload failed: {e}")))?;
        let form = Form::new().part("image", part).text("overwrite", "true");
        let request = self.upstream.http.post(self.upstream.url("upload/image")).multipart(form);
        let answer = json_of(&send(self.authorized(request), map_error).await?);
        let name = answer["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
            ProviderError::Permanent(format!("ComfyUI's upload answered no name: {}", clip(&answer.to_string())))
        })?;
        Ok(match answer["subfolder"].as_str().filter(|s| !s.is_empty()) {
            Some(folder) => format!("{folder}/{name}"),
            None => name.to_owned(),
        })
    }

    /// Queues the graph; returns its prompt id. A graph the server refuses (`node_errors`) is
    /// final: it would be refused anywhere.
    async fn queue(&self, graph: &Value, client_id: &str) -> Result<String, ProviderError> {
        let request = self
            .upstream
            .http
            .post(self.upstream.url("prompt"))
            .json(&json!({"prompt": graph, "client_id": client_id}));
        let answer = json_of(&send(self.authorized(request), map_error).await?);
        if let Some(errors) = answer["node_errors"].as_object().filter(|e| !e.is_empty()) {
            return Err(ProviderError::Permanent(clip(&format!(
                "ComfyUI refused the workflow: {}",
                node_errors(errors)
            ))));
        }
        answer["prompt_id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Permanent(format!("ComfyUI queued no prompt: {}", clip(&answer.to_string()))))
    }

    /// Where the prompt stands; `live` when the socket tells its progress (polling then does not).
    async fn poll(&self, prompt_id: &str, live: bool) -> Result<Status<Vec<Output>>, PollError> {
        let request = self.upstream.http.get(self.upstream.url(&format!("history/{prompt_id}")));
        let history = json_of(&send(self.authorized(request), map_error).await?);
        if let Some(entry) = history.get(prompt_id) {
            return finished(entry).map(Status::Done).map_err(PollError::Fatal);
        }
        let queue =
            json_of(&send(self.authorized(self.upstream.http.get(self.upstream.url("queue"))), map_error).await?);
        match place_in(&queue, prompt_id) {
            Some(Place::Running) => Ok(Status::Running((!live).then_some(50))),
            // Queued behind others: 4 % when next, less the further back (as fal's queue reads).
            Some(Place::Pending(ahead)) => Ok(Status::Running(Some(4u32.saturating_sub(ahead as u32)))),
            None => Err(PollError::Fatal(ProviderError::Permanent(
                "ComfyUI no longer knows the prompt (the server restarted?)".into(),
            ))),
        }
    }

    async fn cancel_prompt(&self, prompt_id: &str) {
        let queue = match send(self.authorized(self.upstream.http.get(self.upstream.url("queue"))), map_error).await {
            Ok(text) => json_of(&text),
            Err(e) => return tracing::warn!(error = %e, "could not read ComfyUI's queue to cancel"),
        };
        let request = match place_in(&queue, prompt_id) {
            // Newer servers interrupt only the prompt named, if it is the one running.
            Some(Place::Running) => {
                self.upstream.http.post(self.upstream.url("interrupt")).json(&json!({"prompt_id": prompt_id}))
            }
            Some(Place::Pending(_)) => {
                self.upstream.http.post(self.upstream.url("queue")).json(&json!({"delete": [prompt_id]}))
            }
            None => return,
        };
        cancel_call(self.authorized(request), "ComfyUI").await;
    }
}

impl Provider for ComfyProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }

    fn cancel<'a>(&'a self, upstream_task_id: &'a str) -> BoxFuture<'a, ()> {
        self.cancel_prompt(upstream_task_id).boxed()
    }
}

/// Where a prompt stands in `GET /queue`'s `{"queue_running": [[number, id, …]], "queue_pending": …}`.
#[derive(Debug, PartialEq)]
enum Place {
    Running,
    /// With this many prompts ahead of it.
    Pending(usize),
}

fn place_in(queue: &Value, prompt_id: &str) -> Option<Place> {
    let ids = |key: &str| -> Vec<(i64, String)> {
        let items = queue[key].as_array().map(Vec::as_slice).unwrap_or_default();
        items.iter().filter_map(|i| Some((i[0].as_i64()?, i[1].as_str()?.to_owned()))).collect()
    };
    if ids("queue_running").iter().any(|(_, id)| id == prompt_id) {
        return Some(Place::Running);
    }
    let mut pending = ids("queue_pending");
    pending.sort();
    pending.iter().position(|(_, id)| id == prompt_id).map(Place::Pending)
}

/// A history entry's output images, or why the prompt failed.
fn finished(entry: &Value) -> Result<Vec<Output>, ProviderError> {
    let status = &entry["status"];
    if status["status_str"] == "error" {
        let messages = status["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        let error = messages.iter().find(|m| m[0] == "execution_error").map(|m| &m[1]);
        let detail = match error {
            Some(e) => format!(
                "{} in node {} ({}): {}",
                e["exception_type"].as_str().unwrap_or("error"),
                e["node_id"].as_str().unwrap_or("?"),
                e["node_type"].as_str().unwrap_or("?"),
                e["exception_message"].as_str().unwrap_or_default().trim()
            ),
            None => "no message".into(),
        };
        return Err(ProviderError::Permanent(clip(&format!("the ComfyUI workflow failed: {detail}"))));
    }
    let outputs = entry["outputs"].as_object().map(|o| o.values().collect::<Vec<_>>()).unwrap_or_default();
    let images: Vec<Output> = outputs
        .iter()
        .flat_map(|o| o["images"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"] == "output")
        .filter_map(|i| {
            Some(Output {
                filename: i["filename"].as_str()?.to_owned(),
                subfolder: i["subfolder"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect();
    if images.is_empty() {
        return Err(ProviderError::Permanent("the ComfyUI workflow saved no image (does it end in SaveImage?)".into()));
    }
    Ok(images)
}

/// `node_errors`' messages: `node 5 (EmptyLatentImage): Value 7 smaller than min of 16 (width)`.
fn node_errors(errors: &serde_json::Map<String, Value>) -> String {
    let mut said = Vec::new();
    for (node, e) in errors {
        let class = e["class_type"].as_str().unwrap_or("?");
        for err in e["errors"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let message = err["message"].as_str().unwrap_or("error");
            let details = err["details"].as_str().unwrap_or_default();
            said.push(format!("node {node} ({class}): {message} {details}").trim().to_owned());
        }
    }
    said.join("; ")
}

/// ComfyUI's refusals: `{"error": {"type","message","details"}, "node_errors": {…}}` (400).
fn map_error(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> ProviderError {
    let body = json_of(text);
    let mut message = match &body["error"] {
        Value::Object(e) => format!(
            "{} {}",
            e.get("message").and_then(Value::as_str).unwrap_or_default(),
            e.get("details").and_then(Value::as_str).unwrap_or_default()
        ),
        Value::String(s) => s.clone(),
        _ => text.chars().take(200).collect(),
    };
    if let Some(errors) = body["node_errors"].as_object().filter(|e| !e.is_empty()) {
        message = format!("{}: {}", message.trim(), node_errors(errors));
    }
    status_error(status, headers, clip(message.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_places_and_failures_read() {
        let queue = json!({"queue_running": [[3, "a", {}, {}, []]], "queue_pending": [[5, "c", {}], [4, "b", {}]]});
        assert_eq!(place_in(&queue, "a"), Some(Place::Running));
        assert_eq!(place_in(&queue, "c"), Some(Place::Pending(1)), "ordered by number");
        assert_eq!(place_in(&queue, "z"), None);
        let failed = json!({"status": {"status_str": "error", "completed": false, "messages": [
            ["execution_start", {}],
            ["execution_error", {"node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
                "exception_message": "CUDA out of memory\n"}]]}, "outputs": {}});
        match finished(&failed) {
            Err(ProviderError::Permanent(m)) => {
                assert!(m.contains("KSampler") && m.contains("CUDA out of memory"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let done = json!({"status": {"status_str": "success", "completed": true}, "outputs": {"9": {"images": [
            {"filename": "a.png", "subfolder": "", "type": "output"}, {"filename": "p.png", "subfolder": "", "type": "temp"}]}}});
        assert_eq!(finished(&done).unwrap(), vec![Output { filename: "a.png".into(), subfolder: String::new() }]);
    }
}
