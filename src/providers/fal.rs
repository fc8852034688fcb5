//! PLACEHOLDER: being written.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::upstream::Upstream;
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::config::ChannelConfig;

pub const FAMILIES: &[Family] = &[Family::Flux, Family::Diffusion];

pub struct FalProvider {
    #[allow(dead_code)]
    upstream: Upstream,
}

impl FalProvider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        Ok(Self { upstream: Upstream::from_channel(c, None)? })
    }
}

impl Provider for FalProvider {
    fn generate<'a>(&'a self, _job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        async { Err(ProviderError::Permanent("not written yet".into())) }.boxed()
    }
}
