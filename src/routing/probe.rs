//! The operator's test of a channel: the cheapest request it can serve, sent straight to its
//! provider. No task is created and no account is billed; the outcome is kept on the channel and
//! counts towards its health as a real try does (a success closes a half-open breaker, a
//! retryable failure counts towards opening it).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ChannelError, Router};
use crate::catalog::Catalog;
use crate::db::now_ms;
use crate::media::Media;
use crate::providers::{Checkpoint, GeneratedImage, Job, ProviderError};
use tokio_util::sync::CancellationToken;

/// The longest a test waits for its channel, whatever the task timeout.
pub const MAX_TEST_TIME: Duration = Duration::from_secs(120);

/// What a test asks for: harmless, and quick to render.
const TEST_PROMPT: &str = "A plain test card: one blue circle on a white background.";

/// How a channel test went, as answered and as kept on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTest {
    pub channel_id: String,
    /// The model asked for: the channel's cheapest.
    pub model: String,
    /// Whether the channel delivered at least one image.
    pub ok: bool,
    /// From the request to the answer (or to giving up).
    pub latency_ms: u64,
    /// Why it failed, as the upstream said where it said; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Images delivered.
    pub images: u32,
    /// When the test ran, Unix milliseconds.
    pub tested_at: i64,
}

/// A test has no task to note anything on.
struct Unrecorded;

impl Checkpoint for Unrecorded {
    fn record_upstream_id<'a>(&'a self, _upstream_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        async { Ok(()) }.boxed()
    }

    fn progress(&self, _percent: u32) {}

    fn partial_image<'a>(&'a self, _index: u32, _image: GeneratedImage) -> BoxFuture<'a, ()> {
        async {}.boxed()
    }
}

impl Router {
    /// Tests channel `id` with the cheapest request it can serve (see
    /// [`Model::cheapest_request`](crate::catalog::Model::cheapest_request)): among its models
    /// the one whose cheapest image costs least, one image, no references. Waits at most
    /// `timeout` (capped at [`MAX_TEST_TIME`]). A switched-off channel can be tested too, and so
    /// can one whose breaker is open or that is full: the operator asked.
    pub async fn test_channel(
        &self,
        id: &str,
        catalog: &Catalog,
        media: &Media,
        timeout: Duration,
    ) -> Result<ChannelTest, ChannelError> {
        let channel = self.channel(id)?;
        let cheapest = channel
            .models
            .iter()
            .filter_map(|(public, _)| catalog.get(public))
            .map(|model| (model, model.cheapest_request(TEST_PROMPT)))
            .min_by_key(|(_, (_, price))| *price);
        let Some((model, (spec, _))) = cheapest else {
            return Err(ChannelError::NoModel(id.to_owned()));
        };
        let timeout = timeout.min(MAX_TEST_TIME);
        let slot = channel.force_slot();
        let job = Job {
            task_id: "channel-test",
            spec: &spec,
            model,
            media,
            references: &[],
            mask: None,
            upstream_model: channel.upstream_model(model),
            upstream_task_id: None,
            checkpoint: &Unrecorded,
        };
        let answer = tokio::time::timeout(timeout, channel.provider.generate(job)).await;
        // Reported as the worker reports a try: only a retryable failure (a timeout is one) is
        // the upstream's fault.
        let (images, message) = match answer {
            Ok(Ok(images)) => {
                slot.succeeded();
                let message = images.is_empty().then(|| "the model returned no image".to_owned());
                (images.len() as u32, message)
            }
            Ok(Err(ProviderError::Retryable { message, retry_after })) => {
                slot.failed(retry_after);
                (0, Some(message))
            }
            Ok(Err(e)) => {
                slot.succeeded();
                (0, Some(e.to_string()))
            }
            Err(_elapsed) => {
                slot.failed(None);
                (0, Some(format!("the channel did not answer within {} seconds", timeout.as_secs())))
            }
        };
        let test = ChannelTest {
            channel_id: channel.id.clone(),
            model: model.id.clone(),
            ok: images > 0,
            latency_ms: slot.elapsed().as_millis() as u64,
            message,
            images,
            tested_at: now_ms(),
        };
        tracing::info!(channel = %channel.id, model = %test.model, ok = test.ok, latency_ms = test.latency_ms,
            message = test.message.as_deref().unwrap_or_default(), "channel tested");
        *channel.health.last_test.lock().expect("test lock") = Some(test.clone());
        Ok(test)
    }
}

/// Tests each channel that has a `probe_interval_secs` on that schedule, as the operator's
/// test does (billing nobody). A failed test rests the channel, so that no task is sent to it,
/// until a later test passes. Channels the operator switched off are not tested.
pub async fn schedule(router: Arc<Router>, catalog: Arc<Catalog>, media: Media, shutdown: CancellationToken) {
    let probed: Vec<_> = router.channels.iter().filter_map(|c| Some((c.clone(), c.probe_interval?))).collect();
    let probes = probed.into_iter().map(|(channel, every)| {
        let (router, catalog, media, shutdown) = (router.clone(), catalog.clone(), media.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if !channel.is_enabled() {
                    continue;
                }
                let id = &channel.id;
                match router.test_channel(id, &catalog, &media, every).await {
                    Ok(test) if test.ok => channel.health.end_rest(),
                    Ok(test) => {
                        tracing::warn!(channel = %id, message = test.message.as_deref().unwrap_or_default(),
                            "the scheduled test failed; resting the channel until one passes");
                        channel.health.rest(every);
                    }
                    Err(e) => tracing::warn!(channel = %id, error = %e, "could not test the channel"),
                }
            }
        }
    });
    futures::future::join_all(probes).await;
}
