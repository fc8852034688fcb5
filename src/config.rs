//! Settings, layered as defaults < `easel.toml` < `EASEL_*` environment < command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` (default, inside the data dir) or `postgres://…`.
    pub database_url: Option<String>,
    /// `file://…` (default, inside the data dir).
    pub storage_url: Option<String>,
    /// Base of result URLs; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    pub redis_url: Option<String>,
    /// How the shared rate limiter talks to Redis (only read when `redis_url` is set).
    pub redis: RedisConfig,
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// What this node runs: the API, the task workers, or both.
    pub role: Role,
    pub server: ServerConfig,
    /// `[http]`: the listener's timeouts and connection cap.
    pub http: HttpConfig,
    pub webhooks: WebhookConfig,
    /// `[media]`: limits on decoding images Easel did not make.
    pub media: MediaConfig,
    /// `[console]`: the web console's sessions and sign-in.
    pub console: ConsoleConfig,
    pub channels: Vec<ChannelConfig>,
    /// Options of the built-in local channel used when no `[[channels]]` are configured.
    pub local: LocalOptions,
    pub models: BTreeMap<String, crate::catalog::ModelEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub allow_private_network: bool,
    pub result_retention_days: u32,
    pub task_timeout_secs: u64,
    /// How many tasks one node works on at once.
    pub workers: usize,
    /// How long a claimed task stays owned by its worker without a heartbeat.
    pub lease_secs: u64,
    /// Credits given to the `default` account created on first start.
    pub bootstrap_credits_usd: f64,
    /// Status polls per minute per API key.
    pub status_rpm: u32,
    /// `false` switches off every per-minute and concurrency limit (creations per model and
    /// account, unfinished tasks, status polls): for benchmarks and trusted single-tenant setups.
    pub limits: bool,
    /// How long the OpenAI-compatible routes wait for a task before answering 504.
    pub openai_wait_secs: u64,
    /// This node's name in lease tokens and logs (`EASEL_SERVER__NODE_ID`); a random one when unset.
    pub node_id: Option<String>,
    /// Consecutive retryable failures that open a channel's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before letting one probe through.
    pub breaker_cooldown_secs: u64,
    /// On SIGTERM, how long in-flight requests and tasks may run on before their leases are
    /// handed back.
    pub shutdown_grace_secs: u64,
    /// A task whose processing was lost this many times (the process died or its lease ran
    /// out while it ran) fails instead of running again, so one task cannot crash-loop a node.
    /// 0 never gives up.
    pub max_task_interruptions: u32,
    /// How often a live event stream (`GET /api/v1/tasks/{id}/events`) sends a heartbeat
    /// comment, so that proxies keep a quiet stream open.
    pub event_heartbeat_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            allow_private_network: false,
            result_retention_days: 15,
            task_timeout_secs: 600,
            workers: 64,
            lease_secs: 30,
            node_id: None,
            bootstrap_credits_usd: 10.0,
            status_rpm: 1200,
            limits: true,
            openai_wait_secs: 300,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            shutdown_grace_secs: 20,
            max_task_interruptions: 3,
            event_heartbeat_secs: 15,
        }
    }
}

/// `[console]`: the web console at `/console`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// How long a console session lasts from sign-in.
    pub session_hours: u64,
    /// Sign-in attempts per minute from one address.
    pub sign_in_per_minute: u32,
    /// Take the caller's address from the last `X-Forwarded-For` entry (set this behind a
    /// reverse proxy that appends it), so sign-in limits are per client and not per proxy.
    pub trust_forwarded_for: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { session_hours: 12, sign_in_per_minute: 10, trust_forwarded_for: false }
    }
}

/// `[media]`: what one image Easel did not make (a reference, a mask, an upstream's result)
/// may cost to decode. Headers are read first, so an image over a limit is refused before any
/// pixel is decoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    /// Largest width × height accepted (50 MP: above any phone camera's default).
    pub max_pixels: u64,
    /// Largest buffer one decode may allocate (256 MiB: a 50 MP RGBA image is 200 MB).
    pub max_alloc_bytes: u64,
    /// Memory all decodes in the process share at any moment (1 GiB); a decode waits for its
    /// share, and one that needs more than the whole budget fails at once.
    pub decode_budget_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { max_pixels: 50_000_000, max_alloc_bytes: 256 << 20, decode_budget_bytes: 1 << 30 }
    }
}

/// `[http]`: how long a client may take over each part of a request, and how many connections
/// may be open at once. Each timeout closes the connection; `0` switches that timeout off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// From a new connection, or from the first byte of a later request, until the whole request
    /// head (request line and headers) has arrived.
    pub header_read_timeout_ms: u64,
    /// From the end of the request head until the whole body has arrived (in total, not between
    /// reads); a body still arriving then is answered 408.
    pub body_read_timeout_ms: u64,
    /// How long a kept-alive connection may sit between requests.
    pub idle_timeout_ms: u64,
    /// Open connections at most; beyond it the listener stops accepting and new connections wait
    /// in the kernel's backlog. Unset: the descriptor limit less `fd_reserve`, at most 16384.
    pub max_connections: Option<usize>,
    /// Descriptors kept free of client connections, for the database, outbound requests and files.
    pub fd_reserve: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 20_000,
            max_connections: None,
            fd_reserve: 512,
        }
    }
}

/// The callback schedule of seed 003: an attempt at once, quick retries after 1, 2 and 4 s,
/// then background retries with growing gaps until 30 minutes after the first attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    pub retry_delays_ms: Vec<u64>,
    pub max_gap_secs: u64,
    pub retry_window_secs: u64,
    pub attempt_timeout_secs: u64,
    /// How many callbacks one node sends at once. One account gets at most
    /// `dispatch_slots / (accounts with due callbacks + 1)` of them (at least one), so a slow
    /// receiver never holds every slot while other accounts wait.
    pub dispatch_slots: usize,
    /// Manual retries (`POST /api/v1/callbacks/{id}/retry`) per minute per API key.
    pub retry_rpm: u32,
    /// Manual retries per minute of one delivery: the first passes at once, then one per
    /// `60 / retry_delivery_rpm` seconds.
    pub retry_delivery_rpm: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_delays_ms: vec![1000, 2000, 4000],
            max_gap_secs: 300,
            retry_window_secs: 1800,
            attempt_timeout_secs: 10,
            dispatch_slots: 32,
            retry_rpm: 30,
            retry_delivery_rpm: 6,
        }
    }
}

/// `[redis]`: bounds on every exchange with Redis, so that a Redis that is away costs a
/// request milliseconds, not seconds; while it is away limits hold per node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// How long opening a connection (TCP and handshake) may take, at start-up and on reconnect.
    pub connect_timeout_ms: u64,
    /// How long one command may take before Redis counts as away.
    pub command_timeout_ms: u64,
    /// While Redis is away, how often a background probe tries to reconnect.
    pub retry_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { connect_timeout_ms: 1000, command_timeout_ms: 200, retry_interval_ms: 1000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub id: String,
    pub provider: ProviderKind,
    #[serde(default = "default_tier")]
    pub tier: Tier,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the upstream key (preferred).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The key itself, for tests and local setups; `api_key_env` wins when both are set.
    #[serde(default, skip_serializing)]
    pub api_key: Option<String>,
    /// Public model id -> upstream model id. Empty means every catalog model, same id.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// How long one upstream request may take (default 300 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub local: Option<LocalOptions>,
    /// `[channels.apixo]`: polling of an APIXO-compatible upstream.
    #[serde(default)]
    pub apixo: Option<ApixoOptions>,
    /// `[channels.polling]`: how a `bfl`, `fal` or `replicate` channel polls its upstream's jobs.
    #[serde(default)]
    pub polling: Option<PollOptions>,
    /// `[channels.bfl]`: Black Forest Labs' region.
    #[serde(default)]
    pub bfl: Option<BflOptions>,
    /// `[channels.replicate]`: how long a create waits for the prediction (`Prefer: wait`).
    #[serde(default)]
    pub replicate: Option<ReplicateOptions>,
    /// `[channels.comfyui]`: the workflow a `comfyui` channel runs and where each parameter goes.
    #[serde(default)]
    pub comfyui: Option<ComfyOptions>,
    /// Tests the channel on this schedule (`POST /admin/v1/channels/{id}/test` by itself); a
    /// failed test rests the channel until the next one passes. Off when absent.
    #[serde(default)]
    pub probe_interval_secs: Option<u64>,
}

impl ChannelConfig {
    /// A channel with every optional setting at its default.
    pub fn new(id: &str, provider: ProviderKind, tier: Tier) -> Self {
        Self {
            id: id.to_owned(),
            provider,
            tier,
            base_url: None,
            api_key_env: None,
            api_key: None,
            models: BTreeMap::new(),
            priority: 0,
            weight: default_weight(),
            max_concurrency: None,
            timeout_secs: None,
            local: None,
            apixo: None,
            polling: None,
            bfl: None,
            replicate: None,
            comfyui: None,
            probe_interval_secs: None,
        }
    }
}

fn default_tier() -> Tier {
    Tier::Official
}

fn default_weight() -> u32 {
    1
}

/// A node's part in a deployment (`easel serve --role`, `EASEL_ROLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API only: accepts and answers, runs no tasks.
    Api,
    /// Task workers, callback delivery and the retention sweeper; HTTP only for probes and metrics.
    Worker,
    /// Everything in one process (the default).
    All,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub fn runs_tasks(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Ark,
    Openai,
    Apixo,
    Local,
    /// Google's Gemini API (Gemini image models and Imagen).
    Gemini,
    /// Black Forest Labs' API (FLUX).
    Bfl,
    /// fal's queue.
    Fal,
    Replicate,
    /// A self-hosted Automatic1111 or Forge server.
    A1111,
    /// A self-hosted ComfyUI server running the channel's workflow.
    Comfyui,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Official,
    Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalOptions {
    /// Simulated generation time for a 2K (2048×2048) image; other sizes scale with pixel count.
    pub latency_ms: u64,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self { latency_ms: 1500 }
    }
}

/// How an `apixo` channel polls its upstream's tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApixoOptions {
    /// Wait before the first status poll (the seeds advise 20 s).
    pub first_poll_ms: u64,
    /// Gap between later polls (the seeds advise 3 s), with ±20% jitter.
    pub poll_interval_ms: u64,
}

impl Default for ApixoOptions {
    fn default() -> Self {
        Self { first_poll_ms: 20_000, poll_interval_ms: 3_000 }
    }
}

/// How a channel polls an asynchronous upstream's jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PollOptions {
    /// Wait before the first status poll.
    pub first_poll_ms: u64,
    /// Gap between later polls, with ±20% jitter.
    pub poll_interval_ms: u64,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self { first_poll_ms: 1_000, poll_interval_ms: 1_500 }
    }
}

/// A ComfyUI channel's workflow (ComfyUI's API format) and the inputs Easel fills in, each
/// `parameter = "node_id.input_name"`: `prompt`, `negative_prompt`, `width`, `height`,
/// `batch_size`, `seed`, `image` (the first reference, uploaded to the server).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComfyOptions {
    /// A relative path is relative to the configuration file.
    pub workflow: PathBuf,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// The header a proxy in front of ComfyUI takes the channel's key in; `Authorization`
    /// (as `Bearer <key>`) when not set.
    #[serde(default)]
    pub auth_header: Option<String>,
}

/// Black Forest Labs' API hosts: `global` (`api.bfl.ai`, the default), `eu` or `us`; a
/// channel's `base_url` wins over it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BflOptions {
    pub region: BflRegion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BflRegion {
    #[default]
    Global,
    Eu,
    Us,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicateOptions {
    /// Seconds a create may wait for the prediction to finish (`Prefer: wait=N`, 1-60); 0 polls
    /// from the start.
    pub wait_secs: u64,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        Self { wait_secs: 30 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./easel-data"),
            database_url: None,
            storage_url: None,
            public_url: None,
            redis_url: None,
            redis: RedisConfig::default(),
            admin_token: None,
            role: Role::All,
            server: ServerConfig::default(),
            http: HttpConfig::default(),
            webhooks: WebhookConfig::default(),
            media: MediaConfig::default(),
            console: ConsoleConfig::default(),
            channels: Vec::new(),
            local: LocalOptions::default(),
            models: BTreeMap::new(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in place.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// The configuration file read from the working directory when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "easel.toml";

impl Config {
    /// Loads the layered configuration. `config_file` is `--config`/`EASEL_CONFIG`; without it
    /// `easel.toml` in the working directory is read if it exists, and no other: figment's
    /// `Toml::file` would also search every parent directory, so a stray file above the working
    /// directory could configure the server unseen. Logs which file it read, or that none.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let file = match config_file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
                Some(path.to_path_buf())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut config: Config = figment
            .merge(Env::prefixed("EASEL_").split("__").ignore(&["config", "url", "api_key"]))
            .merge(Serialized::defaults(overrides))
            .extract()?;
        // Files a channel names are relative to the configuration file, wherever Easel runs.
        if let Some(dir) = file.as_deref().and_then(Path::parent) {
            for comfy in config.channels.iter_mut().filter_map(|c| c.comfyui.as_mut()) {
                if comfy.workflow.is_relative() {
                    comfy.workflow = dir.join(&comfy.workflow);
                }
            }
        }
        config.validate()?;
        match &file {
            Some(path) => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                tracing::info!(file = %path.display(), "loaded the configuration file");
            }
            None => tracing::info!(
                "no configuration file: no --config or EASEL_CONFIG, and no {DEFAULT_CONFIG_FILE} in the working \
                 directory; using the defaults and EASEL_* variables"
            ),
        }
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(node) = &self.server.node_id {
            let ok = !node.is_empty()
                && node.len() <= 64
                && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            anyhow::ensure!(ok, "server.node_id must be 1 to 64 letters, digits, '-' or '_'");
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.channels {
            anyhow::ensure!(seen.insert(&c.id), "channel id {:?} is used twice", c.id);
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("easel.db").display()))
    }

    pub fn storage_url(&self) -> String {
        self.storage_url.clone().unwrap_or_else(|| format!("file://{}", self.data_dir.join("files").display()))
    }

    /// Base URL of links handed out to clients, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{bound}")).trim_end_matches('/').to_owned()
    }

    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.server.shutdown_grace_secs)
    }

    pub fn retention_ms(&self) -> i64 {
        i64::from(self.server.result_retention_days) * 24 * 3600 * 1000
    }
}
