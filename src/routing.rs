//! Channels (configured upstream accounts) and the choice of one for a task.

use std::sync::Arc;

use crate::catalog::{Catalog, Routing};
use crate::config::{ChannelConfig, LocalOptions, ProviderKind, Tier};
use crate::providers::Provider;
use crate::providers::local::LocalProvider;

pub struct Channel {
    pub id: String,
    /// `None` serves every tier (the default local channel).
    pub tier: Option<Tier>,
    /// Public model id -> upstream model id.
    pub models: Vec<(String, String)>,
    pub priority: i32,
    pub provider: Arc<dyn Provider>,
}

impl Channel {
    fn serves(&self, model: &str, routing: Routing) -> bool {
        let tier_ok = match (routing, self.tier) {
            (Routing::Auto, _) | (_, None) => true,
            (Routing::Official, Some(t)) => t == Tier::Official,
            (Routing::Value, Some(t)) => t == Tier::Value,
        };
        tier_ok && self.models.iter().any(|(public, _)| public == model)
    }
}

pub struct Router {
    channels: Vec<Channel>,
}

impl Router {
    pub fn from_config(
        channels: &[ChannelConfig],
        default_local: &LocalOptions,
        catalog: &Catalog,
    ) -> anyhow::Result<Self> {
        if channels.is_empty() {
            // A fresh install generates real images with no upstream account.
            let models = catalog.models().iter().map(|m| (m.id.to_owned(), m.id.to_owned())).collect();
            let provider = Arc::new(LocalProvider::new(default_local.clone()));
            return Ok(Self {
                channels: vec![Channel { id: "local".into(), tier: None, models, priority: 0, provider }],
            });
        }
        let mut built = Vec::with_capacity(channels.len());
        for c in channels {
            let provider: Arc<dyn Provider> = match c.provider {
                ProviderKind::Local => Arc::new(LocalProvider::new(c.local.clone().unwrap_or_default())),
                other => anyhow::bail!("channel {:?}: provider {other:?} is not available in this build yet", c.id),
            };
            let models: Vec<(String, String)> = if c.models.is_empty() {
                catalog.models().iter().map(|m| (m.id.to_owned(), m.id.to_owned())).collect()
            } else {
                c.models.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            for (public, _) in &models {
                anyhow::ensure!(catalog.get(public).is_some(), "channel {:?} maps unknown model {public:?}", c.id);
            }
            built.push(Channel { id: c.id.clone(), tier: Some(c.tier), models, priority: c.priority, provider });
        }
        built.sort_by_key(|c| std::cmp::Reverse(c.priority));
        Ok(Self { channels: built })
    }

    /// The channel to serve `model` under `routing`, highest priority first.
    pub fn pick(&self, model: &str, routing: Routing) -> Option<&Channel> {
        self.channels.iter().find(|c| c.serves(model, routing))
    }
}
