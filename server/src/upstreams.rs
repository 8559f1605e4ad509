//! The configured upstreams, by the models they serve: each `[[upstreams]]` entry is made into
//! a provider (`confab_providers::build`, the one place that knows the kinds), and the relay
//! holds only `Arc<dyn Provider>`s. Each model is served by exactly one upstream: a request runs
//! on the model it names, never silently on another. With none configured, the demo serves
//! `demo.model`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use confab_providers::{Provider, ProviderKind, Settings};

use crate::config::{Config, ConfigError, parse_http_url};

/// Every configured upstream, indexed by the models they serve.
#[derive(Debug, Clone)]
pub struct Upstreams {
    by_model: HashMap<String, Arc<dyn Provider>>,
    /// Models in configuration order; the first is the default for new sites.
    models: Vec<String>,
    demo_only: bool,
}

impl Upstreams {
    /// Builds the upstreams from the config, reading their secret keys. With none configured,
    /// the demo upstream serves `demo.model`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut by_model = HashMap::new();
        let mut models = Vec::new();
        let demo_delay = Duration::from_millis(config.demo.token_delay_ms);
        if config.upstreams.is_empty() {
            let demo = confab_providers::build(
                ProviderKind::Demo,
                Settings {
                    name: "demo",
                    base_url: None,
                    api_key: None,
                    connect_timeout: config.timeouts.connect(),
                    demo_token_delay: demo_delay,
                },
            )
            .map_err(|e| ConfigError::Invalid { field: "demo".into(), problem: e.problem })?;
            by_model.insert(config.demo.model.clone(), demo);
            models.push(config.demo.model.clone());
            return Ok(Self { by_model, models, demo_only: true });
        }
        for (i, upstream) in config.upstreams.iter().enumerate() {
            let field = |name: &str| format!("upstreams[{i}].{name}");
            let base_url = match upstream.base_url.as_deref() {
                Some(url) => Some(parse_http_url(url).map_err(|problem| ConfigError::Invalid {
                    field: field("base_url"),
                    problem,
                })?),
                None => None,
            };
            let settings = Settings {
                name: &upstream.name,
                base_url: base_url.as_ref(),
                api_key: upstream.load_api_key(i)?,
                connect_timeout: config.timeouts.connect(),
                demo_token_delay: demo_delay,
            };
            let provider = confab_providers::build(upstream.kind, settings)
                .map_err(|e| ConfigError::Invalid { field: field(e.field), problem: e.problem })?;
            for model in &upstream.models {
                by_model.insert(model.clone(), Arc::clone(&provider));
                models.push(model.clone());
            }
        }
        Ok(Self { by_model, models, demo_only: false })
    }

    pub fn for_model(&self, model: &str) -> Option<&Arc<dyn Provider>> {
        self.by_model.get(model)
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// True when only the built-in demo upstream is configured.
    pub fn demo_only(&self) -> bool {
        self.demo_only
    }
}
