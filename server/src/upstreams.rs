//! The configured upstreams and the routes to them: each `[[upstreams]]` entry is made into a
//! provider (`confab_providers::build`, the one place that knows the kinds), and each model a
//! client may name into a [`Route`], an ordered list of [`Target`]s (an upstream and the model
//! it is asked for). A model an upstream lists is a route of one target; a `[[models]]` entry is
//! a route of its `targets`, tried in turn. A request is never served by a model it did not ask
//! for, unless the operator listed it as a target of the model it asked for.
//!
//! Every target has a [`Breaker`] (shared by every route it is in) and the relay one
//! [`RetryBudget`]: a call falls back to the next target only within it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use confab_providers::{Provider, ProviderKind, Settings};
use tokio::time::Instant;

use crate::config::{Config, ConfigError, FallbackConfig, parse_http_url};

/// One way to answer: an upstream, asked for one of its models.
#[derive(Debug)]
pub struct Target {
    /// `[[upstreams]] name`.
    pub upstream: String,
    /// The model the upstream is asked for.
    pub model: String,
    /// `<upstream>:<model>`: the `X-Confab-Upstream` header, and how metrics name it.
    pub label: String,
    pub provider: Arc<dyn Provider>,
    pub breaker: Breaker,
    /// Calls made, and of them failed (before the answer started).
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// The last call's time to first byte, in microseconds (0: none yet).
    pub last_first_byte_us: AtomicU64,
}

impl Target {
    fn new(
        upstream: &str,
        model: &str,
        provider: Arc<dyn Provider>,
        fallback: &FallbackConfig,
    ) -> Self {
        Self {
            upstream: upstream.to_owned(),
            model: model.to_owned(),
            label: format!("{upstream}:{model}"),
            provider,
            breaker: Breaker::new(fallback),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_first_byte_us: AtomicU64::new(0),
        }
    }

    /// Notes how a call went: `Ok(time to first byte)` or a failure before the answer started.
    pub fn record(&self, outcome: Result<Duration, ()>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(first_byte) => {
                let us = u64::try_from(first_byte.as_micros()).unwrap_or(u64::MAX).max(1);
                self.last_first_byte_us.store(us, Ordering::Relaxed);
                self.breaker.succeeded();
            }
            Err(()) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failed();
            }
        }
    }
}

/// The targets of a model, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Route {
    pub targets: Vec<Arc<Target>>,
    /// `[[models]] context_length`, when set.
    pub context_length: Option<u32>,
}

impl Route {
    /// Whether every target answers a whole answer in one call (so the relay need not collect
    /// a stream for a client that wants one).
    pub fn answers_whole(&self) -> bool {
        self.targets.iter().all(|target| target.provider.answers_whole())
    }
}

/// A target's circuit breaker: closed (calls go through), open (skipped without a connection
/// attempt, for `breaker_open_ms`), half-open (one call probes; its result closes or reopens it).
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy)]
struct BreakerState {
    failures: u32,
    /// Open until then.
    open_until: Option<Instant>,
    /// A probe is out (half-open).
    probing: bool,
}

/// What a breaker says, as `/metrics` and the admin API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerStatus {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl Breaker {
    fn new(fallback: &FallbackConfig) -> Self {
        Self {
            failures_to_open: fallback.breaker_failures.max(1),
            open_for: Duration::from_millis(fallback.breaker_open_ms),
            state: Mutex::new(BreakerState { failures: 0, open_until: None, probing: false }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to this target now; when the open time is over, the first caller
    /// gets to probe it and others are still turned away until the probe's result.
    pub fn allow(&self) -> bool {
        let mut state = self.state();
        match state.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if state.probing => false,
            Some(_) => {
                state.probing = true;
                true
            }
        }
    }

    pub fn status(&self) -> BreakerStatus {
        let state = self.state();
        match state.open_until {
            None => BreakerStatus::Closed,
            Some(until) if Instant::now() < until && !state.probing => BreakerStatus::Open,
            Some(_) => BreakerStatus::HalfOpen,
        }
    }

    fn succeeded(&self) {
        *self.state() = BreakerState { failures: 0, open_until: None, probing: false };
    }

    fn failed(&self) {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        if state.probing || state.failures >= self.failures_to_open {
            if state.open_until.is_none() || state.probing {
                tracing::warn!(failures = state.failures, "an upstream target's breaker opens");
            }
            state.open_until = Some(Instant::now() + self.open_for);
            state.probing = false;
        }
    }
}

/// How many calls may go to a model's next target: a share of the requests, and a few per
/// second however quiet the relay is. A token bucket that each request fills by the share and
/// time by the floor, holding at most ten seconds of the floor and [`MAX_SAVED`] retries more,
/// so that a quiet hour does not save up a burst.
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens added per request, in thousandths of a retry.
    per_request: u64,
    /// Tokens added per second.
    per_second: u64,
    /// The most the bucket holds: ten seconds' worth.
    cap: u64,
    bucket: Mutex<(u64, Instant)>,
}

/// Thousandths of a retry: the bucket's unit.
const RETRY: u64 = 1_000;
/// Retries the bucket saves up beyond ten seconds of the floor.
const MAX_SAVED: u64 = 50 * RETRY;

impl RetryBudget {
    fn new(fallback: &FallbackConfig) -> Self {
        let per_second = u64::from(fallback.min_retries_per_second) * RETRY;
        Self {
            per_request: u64::from(fallback.retry_budget_percent) * RETRY / 100,
            per_second,
            cap: per_second * 10 + MAX_SAVED,
            bucket: Mutex::new((per_second * 10, Instant::now())),
        }
    }

    /// A request arrived: it adds its share.
    pub fn deposit(&self) {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.0 = bucket.0.saturating_add(self.per_request).min(self.cap);
    }

    /// Takes one retry if the budget has one.
    #[must_use]
    pub fn withdraw(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.1);
        let refill =
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).saturating_mul(self.per_second)
                / 1000;
        if refill > 0 {
            bucket.0 = bucket.0.saturating_add(refill).min(self.cap);
            bucket.1 = now;
        }
        if bucket.0 >= RETRY {
            bucket.0 -= RETRY;
            true
        } else {
            false
        }
    }
}

/// Every configured upstream, and the route of every model clients may name.
#[derive(Debug, Clone)]
pub struct Upstreams {
    routes: HashMap<String, Route>,
    /// Every target, once each, in configuration order (for metrics and the admin API).
    targets: Vec<Arc<Target>>,
    /// Models in configuration order (the upstreams' own, then `[[models]]`); the first is the
    /// default for new sites.
    models: Vec<String>,
    demo_only: bool,
    pub retry_budget: Arc<RetryBudget>,
}

impl Upstreams {
    /// Builds the upstreams from the config, reading their secret keys. With none configured,
    /// the demo upstream serves `demo.model`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut upstreams = Self {
            routes: HashMap::new(),
            targets: Vec::new(),
            models: Vec::new(),
            demo_only: config.upstreams.is_empty(),
            retry_budget: Arc::new(RetryBudget::new(&config.fallback)),
        };
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
            upstreams.add_direct("demo", &config.demo.model, demo, &config.fallback);
            return Ok(upstreams);
        }
        let mut providers: HashMap<&str, Arc<dyn Provider>> = HashMap::new();
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
            if providers.insert(&upstream.name, Arc::clone(&provider)).is_some() {
                return Err(ConfigError::Invalid {
                    field: field("name"),
                    problem: format!("`{}` names another upstream too", upstream.name),
                });
            }
            for model in &upstream.models {
                upstreams.add_direct(
                    &upstream.name,
                    model,
                    Arc::clone(&provider),
                    &config.fallback,
                );
            }
        }
        for (i, model) in config.models.iter().enumerate() {
            let invalid = |field: &str, problem: String| ConfigError::Invalid {
                field: format!("models[{i}].{field}"),
                problem,
            };
            if model.name.trim().is_empty() {
                return Err(invalid("name", "must not be empty".into()));
            }
            if upstreams.routes.contains_key(&model.name) {
                return Err(invalid(
                    "name",
                    format!(
                        "`{}` is already a model of an upstream or of another [[models]] entry",
                        model.name
                    ),
                ));
            }
            if model.targets.is_empty() {
                return Err(invalid(
                    "targets",
                    "must list at least one `<upstream>:<model>`".into(),
                ));
            }
            let mut targets = Vec::with_capacity(model.targets.len());
            for target in &model.targets {
                let Some((upstream, name)) =
                    target.split_once(':').filter(|(u, m)| !u.is_empty() && !m.trim().is_empty())
                else {
                    return Err(invalid(
                        "targets",
                        format!("`{target}` is not `<upstream>:<model>`"),
                    ));
                };
                let Some(provider) = providers.get(upstream) else {
                    return Err(invalid(
                        "targets",
                        format!("`{target}` names no configured upstream `{upstream}`"),
                    ));
                };
                targets.push(upstreams.target(upstream, name, provider, &config.fallback));
            }
            let context_length = model.context_length;
            upstreams.routes.insert(model.name.clone(), Route { targets, context_length });
            upstreams.models.push(model.name.clone());
        }
        Ok(upstreams)
    }

    /// The target `upstream:model`, made once.
    fn target(
        &mut self,
        upstream: &str,
        model: &str,
        provider: &Arc<dyn Provider>,
        fallback: &FallbackConfig,
    ) -> Arc<Target> {
        if let Some(target) =
            self.targets.iter().find(|t| t.upstream == upstream && t.model == model)
        {
            return Arc::clone(target);
        }
        let target = Arc::new(Target::new(upstream, model, Arc::clone(provider), fallback));
        self.targets.push(Arc::clone(&target));
        target
    }

    fn add_direct(
        &mut self,
        upstream: &str,
        model: &str,
        provider: Arc<dyn Provider>,
        fallback: &FallbackConfig,
    ) {
        let target = self.target(upstream, model, &provider, fallback);
        self.routes.insert(model.to_owned(), Route { targets: vec![target], context_length: None });
        self.models.push(model.to_owned());
    }

    /// The provider of `[[upstreams]] name`, for calls other than a model's answers
    /// (embeddings).
    pub fn provider(&self, upstream: &str) -> Option<Arc<dyn Provider>> {
        self.targets.iter().find(|t| t.upstream == upstream).map(|t| Arc::clone(&t.provider))
    }

    pub fn route(&self, model: &str) -> Option<&Route> {
        self.routes.get(model)
    }

    /// Every target, once each.
    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// True when only the built-in demo upstream is configured.
    pub fn demo_only(&self) -> bool {
        self.demo_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, UpstreamConfig, UpstreamKind};

    fn config(targets: &[&str], name: &str) -> Config {
        let mut config = Config::default();
        config.upstreams.push(UpstreamConfig {
            name: "local".into(),
            kind: UpstreamKind::Demo,
            base_url: None,
            api_key_env: None,
            api_key_file: None,
            models: vec!["m1".into(), "m2".into()],
        });
        config.models.push(ModelConfig {
            name: name.into(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            context_length: None,
        });
        config
    }

    fn error(config: &Config) -> String {
        Upstreams::from_config(config).unwrap_err().to_string()
    }

    #[test]
    fn a_model_of_targets_is_a_route_that_shares_their_breakers_with_the_direct_ones() {
        let upstreams = Upstreams::from_config(&config(&["local:m2", "local:m1"], "bot")).unwrap();
        assert_eq!(upstreams.models(), ["m1", "m2", "bot"]);
        let labels: Vec<_> =
            upstreams.route("bot").unwrap().targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["local:m2", "local:m1"]);
        assert_eq!(upstreams.targets().len(), 2, "one target per upstream and model");
        assert!(Arc::ptr_eq(
            &upstreams.route("bot").unwrap().targets[1],
            &upstreams.route("m1").unwrap().targets[0]
        ));
    }

    #[test]
    fn bad_models_entries_are_refused_with_the_field_and_the_reason() {
        assert_eq!(
            error(&config(&["elsewhere:m1"], "bot")),
            "invalid configuration: `models[0].targets` `elsewhere:m1` names no configured \
             upstream `elsewhere`"
        );
        assert_eq!(
            error(&config(&["m1"], "bot")),
            "invalid configuration: `models[0].targets` `m1` is not `<upstream>:<model>`"
        );
        assert_eq!(
            error(&config(&[], "bot")),
            "invalid configuration: `models[0].targets` must list at least one \
             `<upstream>:<model>`"
        );
        assert!(error(&config(&["local:m1"], "m2")).contains("`m2` is already a model"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opens_after_its_failures_and_lets_one_probe_through_after_its_time() {
        let fallback =
            FallbackConfig { breaker_failures: 2, breaker_open_ms: 1_000, ..Default::default() };
        let breaker = Breaker::new(&fallback);
        breaker.failed();
        assert!(breaker.allow());
        breaker.failed();
        assert_eq!(breaker.status(), BreakerStatus::Open);
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe at a time");
        assert_eq!(breaker.status(), BreakerStatus::HalfOpen);
        breaker.failed();
        assert!(!breaker.allow(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert!(breaker.allow());
        breaker.succeeded();
        assert_eq!(breaker.status(), BreakerStatus::Closed);
        assert!(breaker.allow() && breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_is_a_share_of_requests_and_a_floor_per_second() {
        let fallback = FallbackConfig {
            retry_budget_percent: 25,
            min_retries_per_second: 1,
            ..Default::default()
        };
        let budget = RetryBudget::new(&fallback);
        // Ten seconds of the floor to start with.
        for _ in 0..10 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
        // Four requests earn one retry.
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        // And a second of time one more.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }
}
