//! Prometheus metrics: the relay's one registry and every metric in it, behind a small API so
//! that each instrumentation point is one call (`metrics.request(...)`, `metrics.settled(...)`).
//!
//! The registry is `prometheus-client`'s (typed, no global state: each `AppState` has its own,
//! which keeps tests apart). It is served in Prometheus' text format (0.0.4) at `GET /metrics`;
//! where, and with what authentication, is decided in `http::metrics`.
//!
//! Label values are bounded, so that no client can grow the registry: routes are the router's
//! templates (never a raw path), models come from the configured set (anything else is
//! `other`), sites are those with a valid key. Label values are interned `Arc<str>`s, so the
//! request path clones a pointer instead of allocating a string. Every metric is listed in
//! [`METRIC_NAMES`], which the documentation and the tests share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use confab_metering::{Decision, Observer};

use crate::budget::Exhausted;
use crate::limits::{Rejected, Subject};
use crate::upstreams::{BreakerStatus, Target};
use crate::webhooks::Webhooks;
use confab_providers::{TimeoutKind, UpstreamError};

/// Every metric the relay exports, by the name it has in the exposition (counters end in
/// `_total`). The README's "Metrics" table documents each; a test scrapes `/metrics` and checks
/// that every one of them is there.
pub const METRIC_NAMES: &[&str] = &[
    "confab_requests_total",
    "confab_chat_first_token_seconds",
    "confab_chat_duration_seconds",
    "confab_upstream_errors_total",
    "confab_limit_refusals_total",
    "confab_budget_refusals_total",
    "confab_tokens_total",
    "confab_spent_microdollars_total",
    "confab_open_streams",
    "confab_webhook_backlog",
    "confab_webhook_delivery_failures_total",
    "confab_webhook_events_dropped_total",
    "confab_metering_degraded_total",
    "confab_metering_pending_settlements",
    "confab_upstream_breaker_state",
    "confab_upstream_calls_total",
    "confab_upstream_call_failures_total",
    "confab_upstream_first_byte_microseconds",
    "confab_feedback_total",
    "confab_handoffs_total",
    "confab_knowledge_embedding_fallbacks_total",
];

/// What this relay counted since it started, summed over labels.
#[derive(Debug, Default)]
pub struct SinceStart {
    pub upstream_errors: AtomicU64,
    pub limit_refusals: AtomicU64,
    pub budget_refusals: AtomicU64,
}

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The model label of a model that no upstream serves.
const OTHER_MODEL: &str = "other";

/// Histogram buckets for chat timings, in seconds: 5 ms to 5 minutes.
const TIME_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A label value: a shared string, cloned without allocating.
pub type LabelValue = Arc<str>;

/// The site and model labels of one chat request, resolved once when the request is admitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatLabels {
    /// The site's id; empty for a secret key's request.
    pub site: LabelValue,
    /// A served model, or `other`.
    pub model: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: LabelValue,
    status: u16,
    site: LabelValue,
    model: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SiteModelLabels {
    site: LabelValue,
    model: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    site: LabelValue,
    model: LabelValue,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    /// `<upstream>:<model>` (configured, so bounded).
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    rule: &'static str,
    subject: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RatingLabels {
    rating: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeriodLabels {
    period: &'static str,
}

type TimeHistograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn time_histogram() -> Histogram {
    Histogram::new(TIME_BUCKETS)
}

/// The registry and its metrics; part of the app state.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    first_token: TimeHistograms,
    duration: TimeHistograms,
    upstream_errors: Family<KindLabels, Counter>,
    limit_refusals: Family<LimitLabels, Counter>,
    budget_refusals: Family<PeriodLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    spent: Family<SiteModelLabels, Counter>,
    open_streams: Gauge,
    webhook_backlog: Gauge,
    webhook_failures: Counter,
    webhook_dropped: Counter,
    feedback: Family<RatingLabels, Counter>,
    handoffs: Counter,
    /// Questions retrieved by BM25 alone because their embedding failed or was late (counted
    /// by the `Embedder`).
    pub embedding_fallbacks: Counter,
    /// Sums of some labelled counters, for the console's overview (a `Family` cannot be summed).
    pub since_start: SinceStart,
    degraded: Family<DecisionLabels, Counter>,
    pending_settlements: Gauge,
    /// Each upstream target's breaker (0 closed, 1 half-open, 2 open), calls, failures and last
    /// time to first byte, read from the targets at each scrape.
    target_breaker: Family<TargetLabels, Gauge>,
    target_calls: Family<TargetLabels, Counter>,
    target_failures: Family<TargetLabels, Counter>,
    target_first_byte_us: Family<TargetLabels, Gauge>,
    /// The served models' label values; any other model is `other`.
    models: HashMap<Box<str>, LabelValue>,
    other_model: LabelValue,
    empty: LabelValue,
    /// Interned site ids and route templates (both bounded: sites with a valid key, routes of
    /// the router).
    sites: Interned,
    routes: Interned,
}

impl Metrics {
    /// A registry with every metric, for a relay serving `models`.
    pub fn new(models: &[String]) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "confab_requests",
            "HTTP requests answered, by route template, status, and (chat only) site and model",
            requests.clone(),
        );
        let first_token: TimeHistograms = Family::new_with_constructor(time_histogram);
        registry.register(
            "confab_chat_first_token_seconds",
            "Chat requests: time from admission to the answer's first text",
            first_token.clone(),
        );
        let duration: TimeHistograms = Family::new_with_constructor(time_histogram);
        registry.register(
            "confab_chat_duration_seconds",
            "Chat requests: time from admission to the end of the answer, however it ended",
            duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "confab_upstream_errors",
            "Failed upstream calls, by kind of failure",
            upstream_errors.clone(),
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "confab_limit_refusals",
            "Chat requests refused by a rate limit, by rule and subject",
            limit_refusals.clone(),
        );
        let budget_refusals = Family::<PeriodLabels, Counter>::default();
        registry.register(
            "confab_budget_refusals",
            "Chat requests refused by a budget, by period",
            budget_refusals.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "confab_tokens",
            "Tokens charged, by site, model and direction (input or output)",
            tokens.clone(),
        );
        let spent = Family::<SiteModelLabels, Counter>::default();
        registry.register(
            "confab_spent_microdollars",
            "Cost charged against budgets, in micro-dollars, by site and model",
            spent.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "confab_open_streams",
            "Upstream answers being relayed right now",
            open_streams.clone(),
        );
        let webhook_backlog = Gauge::default();
        registry.register(
            "confab_webhook_backlog",
            "Webhook deliveries waiting to be made",
            webhook_backlog.clone(),
        );
        let webhook_failures = Counter::default();
        registry.register(
            "confab_webhook_delivery_failures",
            "Webhook delivery attempts that failed (each is retried)",
            webhook_failures.clone(),
        );
        let webhook_dropped = Counter::default();
        registry.register(
            "confab_webhook_events_dropped",
            "Webhook events dropped to keep the backlog under webhooks.max_backlog",
            webhook_dropped.clone(),
        );
        let feedback = Family::<RatingLabels, Counter>::default();
        registry.register(
            "confab_feedback",
            "Visitors' ratings of answers, by rating (up or down)",
            feedback.clone(),
        );
        let handoffs = Counter::default();
        registry.register(
            "confab_handoffs",
            "Conversations whose visitor asked for a person",
            handoffs.clone(),
        );
        let embedding_fallbacks = Counter::default();
        registry.register(
            "confab_knowledge_embedding_fallbacks",
            "Grounded requests retrieved by BM25 alone because the question's embedding failed \
             or was later than knowledge.embeddings.query_timeout_ms",
            embedding_fallbacks.clone(),
        );
        let degraded = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "confab_metering_degraded",
            "Decisions taken without Redis (limits on this relay's share, budgets refused or \
             admitted unreserved), by decision",
            degraded.clone(),
        );
        let pending_settlements = Gauge::default();
        registry.register(
            "confab_metering_pending_settlements",
            "Budget and token settlements waiting for Redis",
            pending_settlements.clone(),
        );
        let target_breaker = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "confab_upstream_breaker_state",
            "Each upstream target's circuit breaker: 0 closed, 1 half-open, 2 open",
            target_breaker.clone(),
        );
        let target_calls = Family::<TargetLabels, Counter>::default();
        registry.register(
            "confab_upstream_calls",
            "Calls to each upstream target",
            target_calls.clone(),
        );
        let target_failures = Family::<TargetLabels, Counter>::default();
        registry.register(
            "confab_upstream_call_failures",
            "Calls to each upstream target that failed before the answer started (no \
             connection, no first byte in time, 429, 5xx)",
            target_failures.clone(),
        );
        let target_first_byte_us = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "confab_upstream_first_byte_microseconds",
            "Each upstream target's time to first byte on its last answered call",
            target_first_byte_us.clone(),
        );
        // The series of bounded label sets exist from the start, at 0, so that a rate over them
        // is defined before the first refusal or failure.
        for kind in ERROR_KINDS {
            drop(upstream_errors.get_or_create(&KindLabels { kind }));
        }
        for rule in ["rpm", "rpd", "tpm"] {
            for subject in ["site", "visitor", "key"] {
                drop(limit_refusals.get_or_create(&LimitLabels { rule, subject }));
            }
        }
        for period in ["monthly", "daily"] {
            drop(budget_refusals.get_or_create(&PeriodLabels { period }));
        }
        for decision in Decision::ALL {
            drop(degraded.get_or_create(&DecisionLabels { decision: decision.as_str() }));
        }
        for rating in ["up", "down"] {
            drop(feedback.get_or_create(&RatingLabels { rating }));
        }
        Self {
            registry,
            requests,
            first_token,
            duration,
            upstream_errors,
            limit_refusals,
            budget_refusals,
            tokens,
            spent,
            open_streams,
            webhook_backlog,
            webhook_failures,
            webhook_dropped,
            feedback,
            handoffs,
            embedding_fallbacks,
            since_start: SinceStart::default(),
            degraded,
            pending_settlements,
            target_breaker,
            target_calls,
            target_failures,
            target_first_byte_us,
            models: models
                .iter()
                .map(|m| (m.as_str().into(), LabelValue::from(m.as_str())))
                .collect(),
            other_model: OTHER_MODEL.into(),
            empty: "".into(),
            sites: Interned::default(),
            routes: Interned::default(),
        }
    }

    /// The labels of a chat request by `site` (`None`: a secret key) for `model`.
    pub fn chat_labels(&self, site: Option<&str>, model: &str) -> ChatLabels {
        ChatLabels {
            site: site.map_or_else(|| self.empty.clone(), |site| self.sites.get(site)),
            model: self.model(model),
        }
    }

    /// The label of `model`: itself if served, `other` if not, empty if none was named.
    pub fn model(&self, model: &str) -> LabelValue {
        if model.is_empty() {
            return self.empty.clone();
        }
        self.models.get(model).unwrap_or(&self.other_model).clone()
    }

    /// One answered request: `route` is the matched route template (`None`: no route matched).
    pub fn request(&self, route: Option<&str>, status: u16, chat: Option<&ChatLabels>) {
        let route = route.map_or_else(|| LabelValue::from("unmatched"), |r| self.routes.get(r));
        let (site, model) = match chat {
            Some(labels) => (labels.site.clone(), labels.model.clone()),
            None => (self.empty.clone(), self.empty.clone()),
        };
        self.requests.get_or_create(&RequestLabels { route, status, site, model }).inc();
    }

    /// A chat request settled: its timings, tokens and cost.
    pub fn settled(
        &self,
        labels: &ChatLabels,
        first_token: Option<Duration>,
        total: Duration,
        tokens: (u64, u64),
        cost_micros: u64,
    ) {
        let model = ModelLabels { model: labels.model.clone() };
        if let Some(first) = first_token {
            self.first_token.get_or_create(&model).observe(first.as_secs_f64());
        }
        self.duration.get_or_create(&model).observe(total.as_secs_f64());
        let (input, output) = tokens;
        let (site, model) = (labels.site.clone(), labels.model.clone());
        for (direction, count) in [("input", input), ("output", output)] {
            if count > 0 {
                let labels = TokenLabels { site: site.clone(), model: model.clone(), direction };
                self.tokens.get_or_create(&labels).inc_by(count);
            }
        }
        if cost_micros > 0 {
            self.spent.get_or_create(&SiteModelLabels { site, model }).inc_by(cost_micros);
        }
    }

    /// A failed upstream call (a cut at shutdown is not the upstream's failure and is not
    /// counted).
    pub fn upstream_error(&self, error: &UpstreamError) {
        if let Some(kind) = error_kind(error) {
            self.upstream_errors.get_or_create(&KindLabels { kind }).inc();
            self.since_start.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request refused by a rate limit.
    pub fn limit_refused(&self, rejected: &Rejected) {
        let subject = match rejected.subject {
            Subject::Key(_) => "key",
            Subject::Site(_) => "site",
            Subject::Visitor { .. } => "visitor",
        };
        let labels = LimitLabels { rule: rejected.window.code(), subject };
        self.limit_refusals.get_or_create(&labels).inc();
        self.since_start.limit_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused by a budget.
    pub fn budget_refused(&self, exhausted: &Exhausted) {
        let period = exhausted.period_kind().as_str();
        self.budget_refusals.get_or_create(&PeriodLabels { period }).inc();
        self.since_start.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// A visitor rated an answer (`up` or `down`).
    pub fn feedback(&self, rating: &'static str) {
        self.feedback.get_or_create(&RatingLabels { rating }).inc();
    }

    /// A visitor asked for a person.
    pub fn handoff(&self) {
        self.handoffs.inc();
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn stream_opened(&self) -> OpenStream {
        self.open_streams.inc();
        OpenStream(self.open_streams.clone())
    }

    /// The exposition, with the webhook figures read now.
    pub fn encode(&self, webhooks: &Webhooks, targets: &[Arc<Target>]) -> String {
        self.webhook_backlog.set(i64::try_from(webhooks.backlog()).unwrap_or(i64::MAX));
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        for target in targets {
            let labels = TargetLabels { target: target.label.clone() };
            let state = match target.breaker.status() {
                BreakerStatus::Closed => 0,
                BreakerStatus::HalfOpen => 1,
                BreakerStatus::Open => 2,
            };
            self.target_breaker.get_or_create(&labels).set(state);
            let calls = target.calls.load(relaxed);
            self.target_calls.get_or_create(&labels).inner().store(calls, relaxed);
            let failures = target.failures.load(relaxed);
            self.target_failures.get_or_create(&labels).inner().store(failures, relaxed);
            let first_byte =
                i64::try_from(target.last_first_byte_us.load(relaxed)).unwrap_or(i64::MAX);
            self.target_first_byte_us.get_or_create(&labels).set(first_byte);
        }
        self.webhook_failures.inner().store(webhooks.failures(), relaxed);
        self.webhook_dropped.inner().store(webhooks.dropped(), relaxed);
        let mut text = String::with_capacity(8 * 1024);
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// Decisions the metering took without Redis, and its settlements waiting for it.
impl Observer for Metrics {
    fn degraded(&self, decision: Decision) {
        self.degraded.get_or_create(&DecisionLabels { decision: decision.as_str() }).inc();
    }

    fn settlements_pending(&self, change: i64) {
        self.pending_settlements.inc_by(change);
    }
}

/// Every `kind` of upstream failure ([`error_kind`]).
const ERROR_KINDS: [&str; 13] = [
    "connect",
    "timeout_connect",
    "timeout_first_byte",
    "timeout_idle",
    "timeout_answer",
    "timeout_stream",
    "status_429",
    "status_4xx",
    "status_5xx",
    "dropped",
    "protocol",
    "reported",
    "unavailable",
];

/// The `kind` label of an upstream failure; `None` for a cut at shutdown.
fn error_kind(error: &UpstreamError) -> Option<&'static str> {
    Some(match error {
        UpstreamError::Connect => "connect",
        UpstreamError::Timeout { kind, .. } => match kind {
            TimeoutKind::Connect => "timeout_connect",
            TimeoutKind::FirstByte => "timeout_first_byte",
            TimeoutKind::Idle => "timeout_idle",
            TimeoutKind::Answer => "timeout_answer",
            TimeoutKind::Stream => "timeout_stream",
        },
        UpstreamError::Status { status: 429, .. } => "status_429",
        UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
        UpstreamError::Status { .. } => "status_4xx",
        UpstreamError::Dropped => "dropped",
        UpstreamError::Protocol(_) => "protocol",
        UpstreamError::Reported => "reported",
        UpstreamError::Unavailable => "unavailable",
        UpstreamError::Cut => return None,
    })
}

/// An open stream, counted in `confab_open_streams` until dropped.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Label values made once and shared afterwards.
#[derive(Debug, Default)]
struct Interned(RwLock<HashMap<Box<str>, LabelValue>>);

impl Interned {
    fn get(&self, value: &str) -> LabelValue {
        if let Ok(known) = self.0.read()
            && let Some(label) = known.get(value)
        {
            return label.clone();
        }
        let label = LabelValue::from(value);
        if let Ok(mut known) = self.0.write() {
            return known.entry(value.into()).or_insert(label).clone();
        }
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_no_upstream_serves_is_labelled_other() {
        let metrics = Metrics::new(&["model-a".to_owned()]);
        assert_eq!(&*metrics.chat_labels(Some("s1"), "model-a").model, "model-a");
        assert_eq!(&*metrics.chat_labels(Some("s1"), "gpt-9000").model, "other");
        assert_eq!(&*metrics.chat_labels(None, "model-a").site, "");
    }

    #[test]
    fn the_exposition_has_every_documented_metric_once_something_was_counted() {
        let metrics = Metrics::new(&["m".to_owned()]);
        let labels = metrics.chat_labels(Some("s1"), "m");
        metrics.request(Some("/v1/chat/completions"), 200, Some(&labels));
        metrics.settled(
            &labels,
            Some(Duration::from_millis(5)),
            Duration::from_millis(9),
            (3, 4),
            7,
        );
        metrics.upstream_error(&UpstreamError::Dropped);
        let text = metrics.encode_registry_only();
        assert!(text.contains(
            "confab_requests_total{route=\"/v1/chat/completions\",status=\"200\",site=\"s1\",model=\"m\"} 1"
        ), "{text}");
        assert!(
            text.contains("confab_tokens_total{site=\"s1\",model=\"m\",direction=\"output\"} 4")
        );
        assert!(text.contains("confab_upstream_errors_total{kind=\"dropped\"} 1"));
    }

    impl Metrics {
        fn encode_registry_only(&self) -> String {
            let mut text = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
                .unwrap();
            text
        }
    }
}
