//! Channels (configured upstream accounts), their health, and the order in which a task tries
//! them: priority first, weighted random within a priority, skipping channels the operator
//! switched off ([`switches`]), whose circuit breaker is open or that are at their concurrency
//! limit.

pub mod probe;
pub mod switches;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Notify;

use crate::catalog::{Catalog, Family, Model, Routing};
use crate::config::{ChannelConfig, LocalOptions, ProviderKind, ServerConfig, Tier};
use crate::providers::Provider;
use crate::providers::a1111::{self, A1111Provider};
use crate::providers::apixo::{self, ApixoProvider};
use crate::providers::ark::{self, ArkProvider};
use crate::providers::bfl::{self, BflProvider};
use crate::providers::comfyui::{self, ComfyProvider};
use crate::providers::fal::{self, FalProvider};
use crate::providers::gemini::{self, GeminiProvider};
use crate::providers::local::LocalProvider;
use crate::providers::openai::{self, OpenAiProvider};
use crate::providers::replicate::{self, ReplicateProvider};
use crate::providers::upstream::Upstream;

/// How many channels one execution of a task may try.
pub const MAX_CHANNELS_PER_TASK: usize = 3;
const LATENCY_SAMPLES: usize = 256;
/// The longest an upstream's `Retry-After` may bench a channel, whatever it asks for.
pub const MAX_REST: Duration = Duration::from_secs(300);

pub struct Channel {
    pub id: String,
    /// `None` serves every tier (the default local channel).
    pub tier: Option<Tier>,
    /// Public model id -> upstream model id.
    pub models: Vec<(String, String)>,
    pub priority: i32,
    pub weight: u32,
    pub max_concurrency: Option<u32>,
    pub provider: Arc<dyn Provider>,
    pub health: Health,
    /// How often the channel is tested on its own (`probe_interval_secs`), if it is.
    pub probe_interval: Option<Duration>,
    /// Off: the channel takes no new task (see [`switches`]); on unless the operator said so.
    enabled: AtomicBool,
    /// Told when a slot of a channel with `max_concurrency` frees (shared by the router's
    /// channels): tasks held back for want of one may be claimed.
    freed: Arc<Notify>,
}

impl Channel {
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    fn serves(&self, model: &str, routing: Routing) -> bool {
        let tier_ok = match (routing, self.tier) {
            (Routing::Auto, _) | (_, None) => true,
            (Routing::Official, Some(t)) => t == Tier::Official,
            (Routing::Value, Some(t)) => t == Tier::Value,
        };
        tier_ok && self.models.iter().any(|(public, _)| public == model)
    }

    /// The upstream's id for a model: the channel's mapping, else the model's own
    /// `upstream_model`, else its id.
    pub fn upstream_model<'a>(&'a self, model: &'a Model) -> &'a str {
        match self.models.iter().find(|(public, _)| *public == model.id) {
            Some((_, upstream)) => upstream,
            None => model.upstream_model.as_deref().unwrap_or(&model.id),
        }
    }

    /// Takes one of the channel's slots if its breaker and concurrency limit allow.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let in_flight = self.health.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if self.max_concurrency.is_some_and(|max| in_flight > max)
            || self.health.resting_for().is_some()
            || !self.health.breaker.admit()
        {
            self.health.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot { channel: self.clone(), started: Instant::now() })
    }

    /// Every slot of its `max_concurrency` is taken.
    fn is_full(&self) -> bool {
        self.max_concurrency.is_some_and(|max| self.health.in_flight.load(Ordering::SeqCst) >= max)
    }

    /// A slot whatever the breaker, the concurrency limit or the switch say: for a test the
    /// operator asked for, which counts as a try all the same, and for following a job the
    /// upstream already runs (it holds the upstream's slot already).
    pub fn force_slot(self: &Arc<Self>) -> Slot {
        self.health.in_flight.fetch_add(1, Ordering::SeqCst);
        Slot { channel: self.clone(), started: Instant::now() }
    }
}

/// A task's hold on a channel; reports how the try went and frees the slot when dropped.
pub struct Slot {
    pub channel: Arc<Channel>,
    started: Instant,
}

impl Slot {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The upstream answered (with images, or with a verdict that is not its fault).
    pub fn succeeded(&self) {
        let h = &self.channel.health;
        h.successes.fetch_add(1, Ordering::Relaxed);
        h.latency.observe(self.started.elapsed());
        h.breaker.success();
        let mut samples = h.latencies_ms.lock().expect("latency lock");
        if samples.len() == LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(self.started.elapsed().as_millis() as u64);
    }

    /// The upstream failed in a way worth retrying elsewhere (429, 5xx, timeout). When it said
    /// when to come back (`Retry-After`), no task is sent to the channel before then.
    pub fn failed(&self, retry_after: Option<Duration>) {
        if let Some(wait) = retry_after.filter(|w| !w.is_zero()) {
            self.channel.health.rest(wait.min(MAX_REST));
        }
        self.channel.health.failures.fetch_add(1, Ordering::Relaxed);
        self.channel.health.latency.observe(self.started.elapsed());
        self.channel.health.breaker.failure();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.channel.health.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.channel.max_concurrency.is_some() {
            self.channel.freed.notify_one();
        }
    }
}

pub struct Health {
    pub breaker: Breaker,
    in_flight: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    latencies_ms: Mutex<VecDeque<u64>>,
    /// Set from an upstream's `Retry-After`, or by a failed scheduled test.
    resting_until: Mutex<Option<Instant>>,
    pub latency: Histogram,
    /// The latest test the operator ran on the channel (this process's own, like the rest).
    last_test: Mutex<Option<probe::ChannelTest>>,
}

impl Health {
    fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            in_flight: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latencies_ms: Mutex::new(VecDeque::new()),
            resting_until: Mutex::new(None),
            latency: Histogram::default(),
            last_test: Mutex::new(None),
        }
    }

    /// Sends no task to the channel for `time` (an upstream's `Retry-After`, a failed
    /// scheduled test).
    pub fn rest(&self, time: Duration) {
        *self.resting_until.lock().expect("rest lock") = Some(Instant::now() + time);
    }

    /// Ends a rest early (a scheduled test passed).
    pub fn end_rest(&self) {
        *self.resting_until.lock().expect("rest lock") = None;
    }

    /// How much longer the channel rests after a `Retry-After`, if it does.
    fn resting_for(&self) -> Option<Duration> {
        let until = (*self.resting_until.lock().expect("rest lock"))?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }
}

/// Upper bounds, in seconds, of the upstream latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A cumulative-on-read latency histogram, in the shape Prometheus expects.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(elapsed.as_millis() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut running = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                running += n.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        (buckets, self.count.load(Ordering::Relaxed), self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// After the cooldown one probe goes through; its result closes or reopens the breaker.
    HalfOpen {
        probing: bool,
    },
}

/// A circuit breaker: opens after `threshold` consecutive retryable failures, lets one probe
/// through after `cooldown`, and closes on the probe's success.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, inner: Mutex::new(Inner::Closed { consecutive_failures: 0 }) }
    }

    fn admit(&self) -> bool {
        let mut inner = self.inner.lock().expect("breaker lock");
        match *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } if Instant::now() >= until => {
                *inner = Inner::HalfOpen { probing: true };
                true
            }
            Inner::Open { .. } | Inner::HalfOpen { probing: true } => false,
            Inner::HalfOpen { probing: false } => {
                *inner = Inner::HalfOpen { probing: true };
                true
            }
        }
    }

    fn success(&self) {
        *self.inner.lock().expect("breaker lock") = Inner::Closed { consecutive_failures: 0 };
    }

    fn failure(&self) {
        let mut inner = self.inner.lock().expect("breaker lock");
        *inner = match *inner {
            Inner::Closed { consecutive_failures } if consecutive_failures + 1 < self.threshold => {
                Inner::Closed { consecutive_failures: consecutive_failures + 1 }
            }
            _ => Inner::Open { until: Instant::now() + self.cooldown },
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.inner.lock().expect("breaker lock") {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// What `GET /admin/v1/channels` shows of a channel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    pub id: String,
    pub tier: Option<Tier>,
    pub priority: i32,
    pub weight: u32,
    pub models: Vec<String>,
    pub breaker: BreakerState,
    pub in_flight: u32,
    pub max_concurrency: Option<u32>,
    pub successes: u64,
    pub failures: u64,
    /// Successes over all tries, when there were any.
    pub success_rate: Option<f64>,
    pub p50_latency_ms: Option<u64>,
    /// Milliseconds left of a rest an upstream asked for with `Retry-After`.
    pub resting_ms: Option<u64>,
    /// `false` once the operator switched the channel off: it takes no new task.
    pub enabled: bool,
    /// The latest test of the channel on this node (`POST /admin/v1/channels/{id}/test`).
    pub last_test: Option<probe::ChannelTest>,
}

pub struct Router {
    pub channels: Vec<Arc<Channel>>,
    freed: Arc<Notify>,
}

/// Every channel that would take a task has all its slots taken.
#[derive(Debug, PartialEq)]
pub struct Busy;

/// What the router's operations on one channel can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {0} not found")]
    NotFound(String),
    #[error("channel {0} serves no model of the catalog")]
    NoModel(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a channel with no `models` table serves: every model of the families its provider
/// knows, under each model's upstream id.
fn all_models(catalog: &Catalog, families: &[Family]) -> Vec<(String, String)> {
    let served = catalog.models().iter().filter(|m| families.contains(&m.family));
    served.map(|m| (m.id.clone(), m.upstream_model.clone().unwrap_or_else(|| m.id.clone()))).collect()
}

/// The families a kind of channel can serve.
fn families_of(kind: ProviderKind) -> &'static [Family] {
    match kind {
        ProviderKind::Local => &Family::ALL,
        ProviderKind::Apixo => apixo::FAMILIES,
        ProviderKind::Ark => ark::FAMILIES,
        ProviderKind::Openai => openai::FAMILIES,
        ProviderKind::Gemini => gemini::FAMILIES,
        ProviderKind::Bfl => bfl::FAMILIES,
        ProviderKind::Fal => fal::FAMILIES,
        ProviderKind::Replicate => replicate::FAMILIES,
        ProviderKind::A1111 => a1111::FAMILIES,
        ProviderKind::Comfyui => comfyui::FAMILIES,
    }
}

/// Builds the provider a channel names.
fn provider_for(c: &ChannelConfig) -> anyhow::Result<Arc<dyn Provider>> {
    match c.provider {
        ProviderKind::Local => Ok(Arc::new(LocalProvider::new(c.local.clone().unwrap_or_default()))),
        ProviderKind::Apixo => Ok(Arc::new(ApixoProvider::from_channel(c)?)),
        ProviderKind::Ark => Ok(Arc::new(ArkProvider::new(Upstream::from_channel(c, Some(ark::DEFAULT_BASE_URL))?))),
        ProviderKind::Openai => {
            Ok(Arc::new(OpenAiProvider::new(Upstream::from_channel(c, Some(openai::DEFAULT_BASE_URL))?)))
        }
        ProviderKind::Gemini => {
            Ok(Arc::new(GeminiProvider::new(Upstream::from_channel(c, Some(gemini::DEFAULT_BASE_URL))?)))
        }
        ProviderKind::Bfl => Ok(Arc::new(BflProvider::from_channel(c)?)),
        ProviderKind::Fal => Ok(Arc::new(FalProvider::from_channel(c)?)),
        ProviderKind::Replicate => Ok(Arc::new(ReplicateProvider::from_channel(c)?)),
        ProviderKind::A1111 => Ok(Arc::new(A1111Provider::from_channel(c)?)),
        ProviderKind::Comfyui => Ok(Arc::new(ComfyProvider::from_channel(c)?)),
    }
}

impl Router {
    pub fn from_config(
        channels: &[ChannelConfig],
        default_local: &LocalOptions,
        server: &ServerConfig,
        catalog: &Catalog,
    ) -> anyhow::Result<Self> {
        let breaker = || Breaker::new(server.breaker_failures, Duration::from_secs(server.breaker_cooldown_secs));
        let freed = Arc::new(Notify::new());
        if channels.is_empty() {
            // A fresh install generates real images with no upstream account.
            let local = Channel {
                id: "local".into(),
                tier: None,
                models: all_models(catalog, &Family::ALL),
                priority: 0,
                weight: 1,
                max_concurrency: None,
                provider: Arc::new(LocalProvider::new(default_local.clone())),
                health: Health::new(breaker()),
                probe_interval: None,
                enabled: AtomicBool::new(true),
                freed: freed.clone(),
            };
            return Ok(Self { channels: vec![Arc::new(local)], freed });
        }
        let mut built = Vec::with_capacity(channels.len());
        for c in channels {
            let models = if c.models.is_empty() {
                all_models(catalog, families_of(c.provider))
            } else {
                // Keyed by the model's id, whichever of its names the table used.
                let mut mapped = Vec::with_capacity(c.models.len());
                for (public, upstream) in &c.models {
                    let model = catalog
                        .get(public)
                        .with_context(|| format!("channel {:?} maps unknown model {public:?}", c.id))?;
                    mapped.push((model.id.clone(), upstream.clone()));
                }
                mapped
            };
            built.push(Arc::new(Channel {
                id: c.id.clone(),
                tier: Some(c.tier),
                models,
                priority: c.priority,
                weight: c.weight.max(1),
                max_concurrency: c.max_concurrency,
                provider: provider_for(c)?,
                health: Health::new(breaker()),
                probe_interval: c.probe_interval_secs.filter(|s| *s > 0).map(Duration::from_secs),
                enabled: AtomicBool::new(true),
                freed: freed.clone(),
            }));
        }
        Ok(Self { channels: built, freed })
    }

    /// The channels that may serve `model` under `routing`, in the order to try them:
    /// `first` (the channel holding an upstream task to resume) ahead of all, then by priority,
    /// and by weighted random order within a priority. A channel switched off is left out,
    /// except as `first`: resuming the upstream task it already accepted is no new task, and
    /// starting over elsewhere would pay for the images twice.
    pub fn candidates(&self, model: &str, routing: Routing, first: Option<&str>) -> Vec<Arc<Channel>> {
        let mut eligible: Vec<(bool, i32, f64, Arc<Channel>)> = self
            .channels
            .iter()
            .filter(|c| c.serves(model, routing) && (c.is_enabled() || first == Some(c.id.as_str())))
            .map(|c| {
                // Weighted order without replacement: sort by u^(1/w), largest first.
                let u = (u64::from_le_bytes(crate::ids::random_bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64;
                let key = u.max(f64::MIN_POSITIVE).powf(1.0 / f64::from(c.weight));
                (first == Some(c.id.as_str()), c.priority, key, c.clone())
            })
            .collect();
        eligible.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.total_cmp(&a.2)));
        eligible.into_iter().map(|(.., c)| c).collect()
    }

    /// A channel by its id.
    pub fn channel(&self, id: &str) -> Result<&Arc<Channel>, ChannelError> {
        self.channels.iter().find(|c| c.id == id).ok_or_else(|| ChannelError::NotFound(id.to_owned()))
    }

    /// The models and tiers whose every channel is switched off or has every slot of its
    /// `max_concurrency` taken. Their tasks stay queued rather than fail for want of a channel,
    /// until one is switched on or frees a slot, or they time out. (A model and tier that no
    /// channel serves at all is not among them: its tasks fail.)
    pub fn held_back(&self) -> Vec<(String, Routing)> {
        let mut held = Vec::new();
        for channel in self.channels.iter().filter(|c| !c.is_enabled() || c.is_full()) {
            for (model, _) in &channel.models {
                for routing in [Routing::Auto, Routing::Value, Routing::Official] {
                    let mut serving = self.channels.iter().filter(|c| c.serves(model, routing)).peekable();
                    let waits = serving.peek().is_some() && serving.all(|c| !c.is_enabled() || c.is_full());
                    if waits && !held.contains(&(model.clone(), routing)) {
                        held.push((model.clone(), routing));
                    }
                }
            }
        }
        held
    }

    /// A slot on the first channel, in routing order, that has one for a new task of `model`;
    /// taken as the task is claimed, so that the next claim already sees it gone.
    /// `Err(Busy)` when the channels that would take it are all full: the task should wait.
    pub fn reserve(&self, model: &str, routing: Routing) -> Result<Option<Slot>, Busy> {
        let candidates = self.candidates(model, routing, None);
        if let Some(slot) = candidates.iter().find_map(|c| c.try_acquire()) {
            return Ok(Some(slot));
        }
        // None free: waiting helps only if a channel is merely full (not broken or resting).
        let full = candidates.iter().any(|c| c.is_full());
        if full { Err(Busy) } else { Ok(None) }
    }

    /// Told whenever a slot of a channel with `max_concurrency` frees.
    pub fn capacity_freed(&self) -> Arc<Notify> {
        self.freed.clone()
    }

    /// The models whose tasks queue for the same channels as `model`'s under `routing`: a
    /// pending task's place in the queue counts only the tasks ahead of it among these.
    pub fn sharing(&self, model: &str, routing: Routing) -> Vec<String> {
        let mut models = vec![model.to_owned()];
        for channel in self.channels.iter().filter(|c| c.serves(model, routing)) {
            for (other, _) in &channel.models {
                if !models.contains(other) {
                    models.push(other.clone());
                }
            }
        }
        models
    }

    pub fn status(&self) -> Vec<ChannelStatus> {
        self.channels.iter().map(|c| status_of(c)).collect()
    }
}

/// What the operator sees of one channel.
pub fn status_of(c: &Channel) -> ChannelStatus {
    let h = &c.health;
    let (successes, failures) = (h.successes.load(Ordering::Relaxed), h.failures.load(Ordering::Relaxed));
    let mut samples: Vec<u64> = h.latencies_ms.lock().expect("latency lock").iter().copied().collect();
    samples.sort_unstable();
    ChannelStatus {
        id: c.id.clone(),
        tier: c.tier,
        priority: c.priority,
        weight: c.weight,
        models: c.models.iter().map(|(public, _)| public.clone()).collect(),
        breaker: h.breaker.state(),
        in_flight: h.in_flight.load(Ordering::SeqCst),
        max_concurrency: c.max_concurrency,
        successes,
        failures,
        success_rate: (successes + failures > 0).then(|| successes as f64 / (successes + failures) as f64),
        p50_latency_ms: samples.get(samples.len() / 2).copied(),
        resting_ms: h.resting_for().map(|d| d.as_millis() as u64),
        enabled: c.is_enabled(),
        last_test: h.last_test.lock().expect("test lock").clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_wait_only_where_every_channel_serving_them_is_off() {
        let catalog = Catalog::builtin();
        let channel = |id: &str, tier| {
            let mut c = ChannelConfig::new(id, ProviderKind::Local, tier);
            c.models = [("gpt-image-1".to_owned(), "gpt-image-1".to_owned())].into();
            c
        };
        let configs = [channel("a", Tier::Official), channel("b", Tier::Official)];
        let router =
            Router::from_config(&configs, &LocalOptions::default(), &ServerConfig::default(), &catalog).unwrap();
        assert!(router.held_back().is_empty());
        router.channel("a").unwrap().set_enabled(false);
        assert!(router.held_back().is_empty(), "b still serves it");
        assert_eq!(router.candidates("gpt-image-1", Routing::Auto, None).len(), 1);
        assert_eq!(router.candidates("gpt-image-1", Routing::Auto, Some("a")).len(), 2, "a resume goes back to a");
        router.channel("b").unwrap().set_enabled(false);
        let off = router.held_back();
        // No channel is of the value tier: those tasks fail as before rather than wait.
        let gpt = |routing| ("gpt-image-1".to_owned(), routing);
        assert_eq!(off, [gpt(Routing::Auto), gpt(Routing::Official)]);
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_recovers_through_one_probe() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(b.admit());
        b.failure();
        b.failure();
        b.success();
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed, "a success resets the count");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admit());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "one probe after the cooldown");
        assert!(!b.admit(), "only one");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit() && b.admit());
    }
}
