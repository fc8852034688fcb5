//! Generation tasks: their states, failure codes and durable store, and the workers that run them.

pub mod ended;
pub mod events;
mod group_commit;
pub mod idempotency;
pub mod store;
pub mod worker;

use serde::Serialize;

use crate::accounts::ledger::Closing;
use crate::catalog::price::{ImageFacts, Tariff};
use crate::catalog::{Routing, TaskSpec};
use crate::ids::{AccountId, TaskId};
use crate::money::Micros;
use crate::storage::UPLOAD_SCHEME;

pub use store::TaskStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Processing,
    Success,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Processing => "processing",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskState::Pending,
            "processing" => TaskState::Processing,
            "success" => TaskState::Success,
            "failed" => TaskState::Failed,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed)
    }
}

/// Why a task failed, as the seeds' `failCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCode {
    ContentViolation,
    InvalidImageUrl,
    GenerationFailed,
    Timeout,
    /// Stopped by its owner or by its `Cancel-After` deadline.
    Cancelled,
}

impl FailCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailCode::ContentViolation => "CONTENT_VIOLATION",
            FailCode::InvalidImageUrl => "INVALID_IMAGE_URL",
            FailCode::GenerationFailed => "GENERATION_FAILED",
            FailCode::Timeout => "TIMEOUT",
            FailCode::Cancelled => "CANCELLED",
        }
    }
}

/// A task's state as the dialect-free API tells it. The seeds' dialects have no `cancelled`:
/// a cancelled task is stored, and reads there, as `failed` with `failCode: CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TaskLifeState)]
pub enum LifeState {
    Pending,
    Processing,
    Success,
    Failed,
    Cancelled,
}

impl LifeState {
    pub fn of(task: &Task) -> Self {
        match task.state {
            TaskState::Pending => LifeState::Pending,
            TaskState::Processing => LifeState::Processing,
            TaskState::Success => LifeState::Success,
            TaskState::Failed if task.fail_code.as_deref() == Some(FailCode::Cancelled.as_str()) => {
                LifeState::Cancelled
            }
            TaskState::Failed => LifeState::Failed,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cancelled" => LifeState::Cancelled,
            _ => match TaskState::parse(s)? {
                TaskState::Pending => LifeState::Pending,
                TaskState::Processing => LifeState::Processing,
                TaskState::Success => LifeState::Success,
                TaskState::Failed => LifeState::Failed,
            },
        })
    }

    /// The stored state, and whether the failure is a cancel (`None`: either).
    pub fn stored(self) -> (TaskState, Option<bool>) {
        match self {
            LifeState::Pending => (TaskState::Pending, None),
            LifeState::Processing => (TaskState::Processing, None),
            LifeState::Success => (TaskState::Success, None),
            LifeState::Failed => (TaskState::Failed, Some(false)),
            LifeState::Cancelled => (TaskState::Failed, Some(true)),
        }
    }
}

/// Which of a task's events its callback URL is sent: by default only its end (as the seeds
/// say), else those its create asked for with the `Callback-Events` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackEvents {
    pub started: bool,
    pub progress: bool,
    pub completed: bool,
}

impl Default for CallbackEvents {
    fn default() -> Self {
        Self { started: false, progress: false, completed: true }
    }
}

impl CallbackEvents {
    /// `started, progress, completed` in any order and case; an unknown name is an error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut events = Self { started: false, progress: false, completed: false };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "started" => events.started = true,
                "progress" => events.progress = true,
                "completed" => events.completed = true,
                _ => return Err(format!("unknown callback event {name:?} (use started, progress, completed)")),
            }
        }
        if events == (Self { started: false, progress: false, completed: false }) {
            return Err("name at least one callback event: started, progress, completed".into());
        }
        Ok(events)
    }

    /// As stored: `None` for the default.
    pub fn stored(self) -> Option<String> {
        if self == Self::default() {
            return None;
        }
        let names = [(self.started, "started"), (self.progress, "progress"), (self.completed, "completed")];
        Some(names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect::<Vec<_>>().join(","))
    }

    pub fn from_stored(stored: Option<&str>) -> Self {
        stored.and_then(|s| Self::parse(s).ok()).unwrap_or_default()
    }

    /// Whether a callback goes out for `kind` (the final events all count as `completed`).
    pub fn wants(self, kind: events::EventKind) -> bool {
        use events::EventKind::*;
        match kind {
            Started => self.started,
            Progress => self.progress,
            Succeeded | Failed | Cancelled => self.completed,
            Created | Image => false,
        }
    }
}

/// Which public API a task was created through; decides how it is rendered back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// APIXO's per-model task API (seeds 000-002).
    Apixo,
    /// apimodels' unified API (seed 003).
    Unified,
    /// The OpenAI-compatible Images API.
    OpenAi,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Apixo => "apixo",
            Dialect::Unified => "unified",
            Dialect::OpenAi => "openai",
        }
    }

    /// The request field that names reference images in this dialect, for failure messages.
    pub fn references_field(self) -> &'static str {
        match self {
            Dialect::Apixo => "image_urls",
            Dialect::Unified => "image_url",
            Dialect::OpenAi => "image",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "apixo" => Dialect::Apixo,
            "unified" => Dialect::Unified,
            "openai" => Dialect::OpenAi,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: TaskId,
    pub account_id: AccountId,
    pub model: String,
    pub dialect: Dialect,
    pub state: TaskState,
    pub spec: TaskSpec,
    /// The request as the client sent it (JSON).
    pub param: String,
    pub routing: Routing,
    pub callback_url: Option<String>,
    pub requested_images: u32,
    pub delivered_images: Option<u32>,
    /// The hold per requested image.
    pub price: Micros,
    /// How delivered images are priced; `None` for tasks from before price rows (flat price).
    pub tariff: Option<Tariff>,
    /// What the task was charged, once it ended.
    pub charged: Option<Micros>,
    /// When its images were deleted (by the retention sweep or by its owner).
    pub files_purged_at: Option<i64>,
    /// Object-store keys of the delivered images, in order.
    pub result_keys: Vec<String>,
    pub fail_code: Option<String>,
    pub fail_msg: Option<String>,
    /// Claims so far, counting every run, handed back or not.
    pub attempts: u32,
    /// Runs lost without an end or a hand-back (the process died, or the lease ran out):
    /// counted at the claim that follows, so a task that keeps killing its node is recognised.
    pub interruptions: u32,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub deadline_at: i64,
    /// An asynchronous upstream's id for this task, and the channel it belongs to.
    pub upstream_task_id: Option<String>,
    pub upstream_channel: Option<String>,
    /// The channels this task was tried on, in order.
    pub channel_log: Vec<ChannelAttempt>,
    /// Its `Cancel-After` deadline, Unix milliseconds.
    pub cancel_at: Option<i64>,
    /// When its owner asked it to stop while it ran.
    pub cancel_requested_at: Option<i64>,
    pub callback_events: CallbackEvents,
    /// The provider's own progress while it runs, 0-100, where it reports one.
    pub progress_percent: Option<u32>,
}

/// One try of a task on one channel.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelAttempt {
    pub channel: String,
    /// `success`, `retryable`, `content_violation`, `invalid_reference` or `permanent`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub latency_ms: i64,
}

impl Task {
    /// What was put on hold when the task was accepted.
    pub fn held(&self) -> Micros {
        self.price.times(self.requested_images)
    }

    /// What `delivered` images cost, described by `images` (where the worker knows them): each
    /// at its own price, never more than its hold.
    pub fn charge_for(&self, images: &[ImageFacts], delivered: u32) -> Micros {
        match &self.tariff {
            Some(tariff) if images.len() == delivered as usize => tariff.charge(images, self.price),
            _ => self.price.times(delivered),
        }
    }

    /// The URL its callback for `kind` goes to, if it wants one.
    pub fn callback_for(&self, kind: events::EventKind) -> Option<&str> {
        self.callback_url.as_deref().filter(|_| self.callback_events.wants(kind))
    }

    /// The task as it was while it ran: what a `started` or `progress` callback reports, the
    /// same whenever it is sent.
    pub fn while_running(&self) -> Task {
        Task {
            state: TaskState::Processing,
            result_keys: Vec::new(),
            delivered_images: None,
            fail_code: None,
            fail_msg: None,
            completed_at: None,
            charged: None,
            ..self.clone()
        }
    }

    /// How its hold closes once `charge` of it is spent; the rest is released.
    pub fn closing(&self, charge: Micros) -> Closing<'_> {
        Closing { account: &self.account_id, task: &self.id, held: self.held(), charge }
    }
}

/// The files a task keeps in the store: its results and their thumbnails, the references its
/// client uploaded, and the preview frames it streamed.
pub fn stored_files(task: &TaskId, result_keys: &[String], spec: &TaskSpec) -> Vec<String> {
    let thumbnails = result_keys.iter().map(|key| thumbnail_key(key));
    let uploads = spec.references.iter().chain(&spec.mask).filter_map(|r| r.strip_prefix(UPLOAD_SCHEME));
    let partials = (0..spec.partial_images).map(|index| partial_key(task, index, spec));
    result_keys.iter().cloned().chain(thumbnails).chain(uploads.map(str::to_owned)).chain(partials).collect()
}

/// Where a task keeps its result `index` (0-based): flat, in one of 256 folders named by the
/// id's last two (random) hex digits, so that storing a result makes no folder of its own (on a
/// local disk a folder per task cost more than the file). Results stored before this layout
/// are at `results/<task>/<index>.<ext>`; every key is kept on its task, so both are read.
pub fn result_key(task: &TaskId, index: usize, format: crate::catalog::OutputFormat) -> String {
    let id = task.as_str();
    let shard = id.get(id.len().saturating_sub(2)..).unwrap_or_default();
    format!("results/{shard}/{id}-{index}.{}", format.extension())
}

/// Where the thumbnail of the result stored at `result_key` is: the same path under `thumbs/`,
/// in WebP whatever the result's format (so results of either layout have theirs). Made when
/// first asked for (see [`thumbnail_sources`]), then kept.
pub fn thumbnail_key(result_key: &str) -> String {
    let path = result_key.strip_prefix("results/").unwrap_or(result_key);
    let stem = path.rsplit_once('.').map_or(path, |(stem, _)| stem);
    format!("thumbs/{stem}.webp")
}

/// The result keys whose thumbnail `thumbnail_key` may be, one per output format (the
/// thumbnail's name keeps no format); `None` for a key that is not a thumbnail's.
pub fn thumbnail_sources(thumbnail_key: &str) -> Option<Vec<String>> {
    let stem = thumbnail_key.strip_prefix("thumbs/")?.strip_suffix(".webp")?;
    let formats = crate::catalog::OutputFormat::ALL;
    Some(formats.iter().map(|format| format!("results/{stem}.{}", format.extension())).collect())
}

/// Where a task keeps its preview frame `index` (0-based), for streaming clients on any node.
pub fn partial_key(task: &TaskId, index: u32, spec: &TaskSpec) -> String {
    format!("partials/{task}/{index}.{}", spec.output_format.extension())
}

/// A task to be accepted: everything the client decided.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub account_id: AccountId,
    pub dialect: Dialect,
    pub spec: TaskSpec,
    pub param: String,
    pub routing: Routing,
    pub callback_url: Option<String>,
    /// The hold per requested image: the highest price the request can reach.
    pub price: Micros,
    pub tariff: Tariff,
    /// From `Cancel-After`: how long it may take before it is cancelled.
    pub cancel_after_ms: Option<i64>,
    pub callback_events: CallbackEvents,
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use crate::catalog::OutputFormat;

    #[test]
    fn results_are_flat_in_shards_and_thumbnails_follow_either_layout() {
        let id = TaskId::from_db("task_01a2368c14c17333a8f3a01c53d1a194".into());
        let key = result_key(&id, 1, OutputFormat::Png);
        assert_eq!(key, "results/94/task_01a2368c14c17333a8f3a01c53d1a194-1.png");
        assert_eq!(thumbnail_key(&key), "thumbs/94/task_01a2368c14c17333a8f3a01c53d1a194-1.webp");
        // A result stored before the flat layout keeps the thumbnail it was given then.
        assert_eq!(thumbnail_key("results/task_0a/2.jpeg"), "thumbs/task_0a/2.webp");
        for result in [key.as_str(), "results/task_0a/2.jpeg"] {
            let sources = thumbnail_sources(&thumbnail_key(result)).unwrap();
            assert!(sources.iter().any(|source| source == result), "{result} in {sources:?}");
        }
        assert_eq!(thumbnail_sources("results/94/task_01-0.png"), None);
    }
}
