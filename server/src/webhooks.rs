//! Webhooks: signed HTTP POSTs to the operator's endpoints when a budget crosses 80 % or 100 %
//! (`budget.threshold`), a secret key is revoked (`key.revoked`), or a chat request ends
//! (`request.completed`).
//!
//! Every event goes through a durable outbox in the store, in two steps:
//!
//! 1. **Recording.** The request path never waits: [`Webhooks::budget_crossed`] and
//!    [`Webhooks::request_completed`] hand the event to a background task that writes it to the
//!    outbox (and [`Webhooks::flush`], awaited at shutdown, writes whatever is still queued).
//!    [`record_key_revoked`] writes directly, since revoking also runs in the CLI, where no relay
//!    and no endpoint configuration may be around.
//! 2. **Delivering.** The delivery worker ([`Webhooks::deliver`], run while the relay serves)
//!    dispatches each recorded event to the endpoints that want it (one delivery each, created
//!    in the transaction that marks the event dispatched), then attempts the deliveries that are
//!    due. A 2xx answer delivers; anything else is retried after a doubling backoff, up to
//!    `max_attempts`, after which the delivery is kept as a dead letter with its last error.
//!    Pending deliveries survive a restart: they are rows, and the next worker picks them up.
//!
//! Delivery is at least once (a delivery whose answer was lost is attempted again), so every
//! attempt carries the same `Confab-Delivery` id for receivers to deduplicate. Each attempt is
//! signed afresh: `Confab-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
//! the `Confab-Timestamp` it was made at, so that receivers can refuse old (replayed) requests.
//!
//! Signing secrets are read at start-up and never logged; logs name an endpoint by its origin
//! only, since webhook URLs often carry a token in their path.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::budget::{Crossing, Payer};
use crate::config::{ConfigError, Secret, parse_http_url};
use crate::sitekey::KeyKind;
use crate::store::{
    ApiKey, NewWebhookDelivery, Store, StoreError, UsageRecord, WebhookDelivery, WebhookEvent,
};

/// `[webhooks]`: delivery settings and the endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// A delivery is attempted this many times at most, then kept as failed (a dead letter).
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles after each failed attempt...
    pub initial_backoff_ms: u64,
    /// ... up to this.
    pub max_backoff_ms: u64,
    /// An endpoint must answer within this time (connecting included).
    pub timeout_ms: u64,
    /// How often the worker looks for due deliveries (new events wake it at once).
    pub poll_ms: u64,
    /// Delivered and failed deliveries are deleted after this many days.
    pub retention_days: u32,
    /// `[[webhooks.endpoints]]`.
    pub endpoints: Vec<EndpointConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 600_000,
            timeout_ms: 10_000,
            poll_ms: 1_000,
            retention_days: 7,
            endpoints: Vec::new(),
        }
    }
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// Environment variable holding the signing secret...
    #[serde(default)]
    pub secret_env: Option<String>,
    /// ... or a file holding it (surrounding whitespace is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event names: `budget.threshold`, `key.revoked`, `request.completed`.
    pub events: Vec<String>,
    /// Only this site's events; without it, every event.
    #[serde(default)]
    pub site: Option<String>,
    /// The share of `request.completed` events sent, in percent (decided once per event).
    #[serde(default = "every_request")]
    pub request_completed_sample_percent: u8,
}

fn every_request() -> u8 {
    100
}

/// A signing secret shorter than this is refused.
pub const MIN_SECRET_LEN: usize = 16;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A budget of a key or a site crossed 80 % or 100 % in its period.
    BudgetThreshold,
    /// A secret API key was revoked.
    KeyRevoked,
    /// A chat request ended (completed, interrupted or failed upstream).
    RequestCompleted,
}

impl EventKind {
    pub const ALL: [EventKind; 3] =
        [EventKind::BudgetThreshold, EventKind::KeyRevoked, EventKind::RequestCompleted];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BudgetThreshold => "budget.threshold",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::RequestCompleted => "request.completed",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

fn invalid(field: String, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, problem: problem.into() }
}

impl WebhooksConfig {
    /// Checks what types alone cannot (secrets are read later, by [`Webhooks::start`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("max_attempts", u64::from(self.max_attempts)),
            ("initial_backoff_ms", self.initial_backoff_ms),
            ("max_backoff_ms", self.max_backoff_ms),
            ("timeout_ms", self.timeout_ms),
            ("poll_ms", self.poll_ms),
            ("retention_days", u64::from(self.retention_days)),
        ] {
            if value == 0 {
                return Err(invalid(format!("webhooks.{field}"), "must be greater than 0"));
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(invalid(
                "webhooks.max_backoff_ms".into(),
                "must be at least webhooks.initial_backoff_ms",
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = |name: &str| format!("webhooks.endpoints[{i}].{name}");
            parse_http_url(&endpoint.url).map_err(|problem| invalid(field("url"), problem))?;
            if let Some(j) = self.endpoints[..i].iter().position(|e| e.url == endpoint.url) {
                return Err(invalid(
                    field("url"),
                    format!("is already the url of webhooks.endpoints[{j}]"),
                ));
            }
            match (&endpoint.secret_env, &endpoint.secret_file) {
                (None, None) => {
                    return Err(invalid(
                        field("secret_env"),
                        "or secret_file is required: deliveries are signed with that secret",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        field("secret_file"),
                        "cannot be set together with secret_env; choose one",
                    ));
                }
                _ => {}
            }
            if endpoint.events.is_empty() {
                return Err(invalid(field("events"), format!("must list events ({})", known())));
            }
            for name in &endpoint.events {
                if EventKind::from_name(name).is_none() {
                    return Err(invalid(
                        field("events"),
                        format!("has an unknown event `{name}` (known: {})", known()),
                    ));
                }
            }
            if endpoint.site.as_deref().is_some_and(|site| site.trim().is_empty()) {
                return Err(invalid(field("site"), "must not be empty (leave it out for all)"));
            }
            if !(1..=100).contains(&endpoint.request_completed_sample_percent) {
                return Err(invalid(
                    field("request_completed_sample_percent"),
                    "must be between 1 and 100",
                ));
            }
        }
        Ok(())
    }
}

fn known() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

/// An endpoint ready to deliver to: its secret read, its events parsed.
#[derive(Debug)]
struct Endpoint {
    /// As configured: deliveries in the outbox name their endpoint by it.
    url: String,
    /// `scheme://host[:port]`: what logs show.
    origin: String,
    secret: Secret,
    events: HashSet<EventKind>,
    site: Option<String>,
    sample_percent: u8,
}

impl Endpoint {
    fn load(index: usize, config: &EndpointConfig) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("webhooks.endpoints[{index}].{name}");
        let url = parse_http_url(&config.url).map_err(|problem| invalid(field("url"), problem))?;
        let (source, value) = match (&config.secret_env, &config.secret_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(value) => ("secret_env", value),
                Err(_) => {
                    return Err(invalid(
                        field("secret_env"),
                        format!("names the environment variable {var}, which is not set"),
                    ));
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(value) => ("secret_file", value),
                Err(e) => {
                    return Err(invalid(
                        field("secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            },
            (None, None) => {
                return Err(invalid(field("secret_env"), "or secret_file is required"));
            }
        };
        let value = value.trim();
        if value.len() < MIN_SECRET_LEN {
            return Err(invalid(
                field(source),
                format!("the signing secret must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        Ok(Self {
            url: config.url.clone(),
            origin: url.origin().ascii_serialization(),
            secret: Secret::new(value),
            events: config.events.iter().filter_map(|name| EventKind::from_name(name)).collect(),
            site: config.site.clone(),
            sample_percent: config.request_completed_sample_percent,
        })
    }

    /// Whether the endpoint subscribes to this kind of event about this site (`None`: an event
    /// about no site, such as a key's).
    fn wants(&self, kind: EventKind, site_id: Option<&str>) -> bool {
        self.events.contains(&kind) && self.site.as_deref().is_none_or(|site| site_id == Some(site))
    }

    /// Whether this event is sent at all: `request.completed` events are sampled.
    fn samples(&self, kind: EventKind) -> bool {
        kind != EventKind::RequestCompleted
            || self.sample_percent >= 100
            || rand::random_range(0..100u8) < self.sample_percent
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The `Confab-Signature` header of a body sent at `timestamp` (unix seconds):
/// `v1=` and the hex HMAC-SHA256, under the endpoint's secret, of `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(20).map(char::from).collect();
    format!("{prefix}_{suffix}")
}

/// An event ready for the outbox: its body is `{"id", "type", "created", "data"}`.
fn event(kind: EventKind, site_id: Option<String>, data: Value) -> WebhookEvent {
    let id = new_id("evt");
    let created_at_ms = crate::unix_now_ms();
    let payload = json!({
        "id": id,
        "type": kind.as_str(),
        "created": created_at_ms / 1000,
        "data": data,
    })
    .to_string();
    WebhookEvent { id, kind: kind.as_str().to_owned(), site_id, payload, created_at_ms }
}

/// `budget.threshold`: who crossed which share of which budget.
pub fn budget_threshold(crossing: &Crossing) -> WebhookEvent {
    let site = match &crossing.payer {
        Payer::Site(id) => Some(id.clone()),
        Payer::Key(_) => None,
    };
    event(
        EventKind::BudgetThreshold,
        site,
        json!({
            "payer": crossing.payer.to_string(),
            "payer_id": crossing.payer.id(),
            "period": crossing.period.to_string(),
            "period_kind": crossing.period.kind().as_str(),
            "percent": crossing.percent,
            "spent_micros": crossing.spent,
            "budget_micros": crossing.budget,
        }),
    )
}

/// `key.revoked`: the key's id, name and public prefix (never its secret).
pub fn key_revoked(key: &ApiKey) -> WebhookEvent {
    event(
        EventKind::KeyRevoked,
        None,
        json!({
            "id": key.id,
            "name": key.name,
            "key_prefix": KeyKind::Secret.public(&key.lookup_id),
            "revoked_at": key.revoked_at,
        }),
    )
}

/// `request.completed`: the usage record (who, which model, tokens, cost, latency, outcome);
/// never the messages.
pub fn request_completed(record: &UsageRecord) -> WebhookEvent {
    event(
        EventKind::RequestCompleted,
        record.site_id.clone(),
        json!({
            "at_ms": record.at_ms,
            "site_id": record.site_id,
            "key_id": record.key_id,
            "visitor": record.visitor,
            "model": record.model,
            "upstream": record.upstream,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "estimated": record.estimated,
            "cost_micros": record.cost_micros,
            "first_token_ms": record.first_token_ms,
            "total_ms": record.total_ms,
            "outcome": record.outcome.as_str(),
        }),
    )
}

/// Records `key.revoked` in the outbox; the relay's delivery worker sends it to the endpoints
/// that want it (also when the key was revoked from the CLI).
pub async fn record_key_revoked(store: &dyn Store, key: &ApiKey) -> Result<(), StoreError> {
    store.add_webhook_events(&[key_revoked(key)]).await
}

/// Events and deliveries handled per round of the delivery worker.
const BATCH: u32 = 32;
/// An attempt is leased for its time limit and this much more: if the process stops during
/// the attempt, the delivery is due again once the lease is over.
const LEASE_MARGIN_MS: i64 = 1_000;
/// How often delivered and failed deliveries past `retention_days` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
/// While the outbox cannot be written, queued events are kept and retried this often...
const RETRY_WRITE: Duration = Duration::from_secs(1);
/// ... up to this many.
const MAX_QUEUED: usize = 100_000;

enum Command {
    Event(WebhookEvent),
    Flush(oneshot::Sender<()>),
}

/// The relay's webhooks: the endpoints, the queue into the outbox, and the delivery worker.
#[derive(Debug)]
pub struct Webhooks {
    config: WebhooksConfig,
    endpoints: Vec<Endpoint>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    queue: mpsc::UnboundedSender<Command>,
    /// Wakes the delivery worker when events were recorded.
    recorded: Arc<Notify>,
}

/// Why an attempt did not deliver.
#[derive(Debug)]
enum AttemptError {
    /// The endpoint is no longer in the configuration (its secret is unknown): given up.
    Unconfigured,
    /// The endpoint answered, but not with a 2xx.
    Status(reqwest::StatusCode),
    /// No answer: connection refused, timed out, and the like.
    Request(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Unconfigured => f.write_str("the endpoint is no longer configured"),
            AttemptError::Status(status) => write!(f, "answered HTTP {status}"),
            AttemptError::Request(error) => f.write_str(error),
        }
    }
}

/// A request error as text without the URL (which may carry a token), with its causes.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer within webhooks.timeout_ms".into();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Webhooks {
    /// Reads the endpoints' signing secrets (failing, with the field's name, when one is
    /// missing) and starts the task that writes events to the outbox, so it must run inside a
    /// Tokio runtime. Deliveries are made by [`Webhooks::deliver`].
    pub fn start(config: &WebhooksConfig, store: Arc<dyn Store>) -> Result<Self, ConfigError> {
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| Endpoint::load(index, endpoint))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is a failed delivery: the receiver's address is what was configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Confab-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid("webhooks".into(), format!("cannot build an HTTP client: {e}")))?;
        let (queue, commands) = mpsc::unbounded_channel();
        let recorded = Arc::new(Notify::new());
        tokio::spawn(write_events(Arc::clone(&store), commands, Arc::clone(&recorded)));
        Ok(Self { config: config.clone(), endpoints, store, client, queue, recorded })
    }

    /// Whether some endpoint may want this event; the others are not even recorded.
    fn wanted(&self, kind: EventKind, site_id: Option<&str>) -> bool {
        self.endpoints.iter().any(|endpoint| endpoint.wants(kind, site_id))
    }

    fn enqueue(&self, event: WebhookEvent) {
        if self.queue.send(Command::Event(event)).is_err() {
            tracing::error!("the webhook event writer has stopped; an event is lost");
        }
    }

    /// Queues `budget.threshold` for the outbox; never waits.
    pub fn budget_crossed(&self, crossing: &Crossing) {
        let site = match &crossing.payer {
            Payer::Site(id) => Some(id.as_str()),
            Payer::Key(_) => None,
        };
        if self.wanted(EventKind::BudgetThreshold, site) {
            self.enqueue(budget_threshold(crossing));
        }
    }

    /// Queues `request.completed` for the outbox; never waits.
    pub fn request_completed(&self, record: &UsageRecord) {
        if self.wanted(EventKind::RequestCompleted, record.site_id.as_deref()) {
            self.enqueue(request_completed(record));
        }
    }

    /// Resolves once every event queued before the call is in the outbox (or could not be
    /// written, which is logged).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// The delivery worker: dispatches recorded events and attempts due deliveries, forever.
    /// `http::serve` runs it while serving and stops it at shutdown; an attempt cut short there
    /// is made again after a restart, once its lease is over.
    pub async fn deliver(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                self.prune().await;
            }
            let more = match self.round().await {
                Ok(more) => more,
                Err(error) => {
                    tracing::error!(%error, "cannot read the webhook outbox; will retry");
                    false
                }
            };
            if !more {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = self.recorded.notified() => {}
                }
            }
        }
    }

    /// One round: dispatches recorded events, then attempts the due deliveries at once.
    /// `true` when a batch was full, so more may be waiting.
    async fn round(&self) -> Result<bool, StoreError> {
        let events = self.store.undispatched_webhook_events(BATCH).await?;
        for event in &events {
            self.dispatch(event).await?;
        }
        let now = crate::unix_now_ms();
        let timeout = i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(timeout).saturating_add(LEASE_MARGIN_MS);
        let due = self.store.claim_webhook_deliveries(now, lease_until, BATCH).await?;
        let results = join_all(due.iter().map(|delivery| self.attempt(delivery))).await;
        for (delivery, result) in due.iter().zip(results) {
            if let Err(error) = self.settle(delivery, result).await {
                // The delivery stays leased, and is attempted again once the lease is over.
                tracing::error!(%error, delivery = %delivery.id, "cannot record a webhook attempt");
            }
        }
        let full = |n: usize| u32::try_from(n).is_ok_and(|n| n >= BATCH);
        Ok(full(events.len()) || full(due.len()))
    }

    /// Creates the deliveries of one event: one per endpoint that wants it (and samples it).
    async fn dispatch(&self, event: &WebhookEvent) -> Result<(), StoreError> {
        let deliveries: Vec<NewWebhookDelivery> = match EventKind::from_name(&event.kind) {
            Some(kind) => self
                .endpoints
                .iter()
                .filter(|e| e.wants(kind, event.site_id.as_deref()) && e.samples(kind))
                .map(|e| NewWebhookDelivery { id: new_id("whd"), endpoint: e.url.clone() })
                .collect(),
            None => {
                tracing::warn!(
                    event = %event.id, kind = %event.kind, "unknown webhook event kind; not sent"
                );
                Vec::new()
            }
        };
        self.store.dispatch_webhook_event(&event.id, &deliveries, crate::unix_now_ms()).await?;
        Ok(())
    }

    /// One attempt: POSTs the event's body, signed now, and waits for a 2xx.
    async fn attempt(&self, delivery: &WebhookDelivery) -> Result<(), AttemptError> {
        let endpoint = self
            .endpoints
            .iter()
            .find(|endpoint| endpoint.url == delivery.endpoint)
            .ok_or(AttemptError::Unconfigured)?;
        let timestamp = crate::unix_now();
        let signature =
            signature(endpoint.secret.expose().as_bytes(), timestamp, delivery.payload.as_bytes());
        let response = self
            .client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Confab-Event", &delivery.kind)
            .header("Confab-Delivery", &delivery.id)
            .header("Confab-Timestamp", timestamp.to_string())
            .header("Confab-Signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(|error| AttemptError::Request(describe(error)))?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(AttemptError::Status(status)) }
    }

    /// The wait after the `attempts`-th failed attempt.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts.saturating_sub(1)).unwrap_or(u64::MAX);
        let ms = self.config.initial_backoff_ms.saturating_mul(factor);
        Duration::from_millis(ms.min(self.config.max_backoff_ms))
    }

    /// Records how an attempt went: delivered, due again after the backoff, or given up.
    async fn settle(
        &self,
        delivery: &WebhookDelivery,
        result: Result<(), AttemptError>,
    ) -> Result<(), StoreError> {
        let now = crate::unix_now_ms();
        let attempt = delivery.attempts.saturating_add(1);
        let origin = self
            .endpoints
            .iter()
            .find(|endpoint| endpoint.url == delivery.endpoint)
            .map_or("[unconfigured]", |endpoint| endpoint.origin.as_str());
        let error = match result {
            Ok(()) => {
                tracing::debug!(
                    delivery = %delivery.id, event = %delivery.kind, endpoint = origin, attempt,
                    "webhook delivered"
                );
                return self.store.webhook_delivered(&delivery.id, now).await;
            }
            Err(error) => error,
        };
        let give_up =
            matches!(error, AttemptError::Unconfigured) || attempt >= self.config.max_attempts;
        let text = error.to_string();
        if give_up {
            tracing::error!(
                delivery = %delivery.id, event = %delivery.kind, endpoint = origin, attempt,
                error = %text, "webhook delivery failed; giving up"
            );
            self.store.webhook_attempt_failed(&delivery.id, &text, now, None).await
        } else {
            let wait = self.backoff(attempt);
            let retry_at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            tracing::warn!(
                delivery = %delivery.id, event = %delivery.kind, endpoint = origin, attempt,
                error = %text, retry_in_ms = wait.as_millis(), "webhook delivery failed; will retry"
            );
            self.store.webhook_attempt_failed(&delivery.id, &text, now, Some(retry_at)).await
        }
    }

    /// Deletes what is past `retention_days`.
    async fn prune(&self) {
        let retention = i64::from(self.config.retention_days).saturating_mul(86_400_000);
        match self.store.prune_webhook_events(crate::unix_now_ms().saturating_sub(retention)).await
        {
            Ok(0) => {}
            Ok(events) => tracing::info!(events, "old webhook events deleted"),
            Err(error) => tracing::warn!(%error, "cannot delete old webhook events"),
        }
    }
}

/// Writes queued events to the outbox as they come (a burst becomes one transaction), keeping
/// them across failed writes, and wakes the delivery worker.
async fn write_events(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    recorded: Arc<Notify>,
) {
    let mut pending: Vec<WebhookEvent> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let first = if !open {
            None
        } else if pending.is_empty() {
            commands.recv().await
        } else {
            tokio::select! {
                command = commands.recv() => command,
                () = tokio::time::sleep(RETRY_WRITE) => None,
            }
        };
        let mut flushes = Vec::new();
        let mut take = |command: Command| match command {
            Command::Event(event) => pending.push(event),
            Command::Flush(done) => flushes.push(done),
        };
        match first {
            Some(command) => take(command),
            // Closed, or a retry of what is pending.
            None => open = open && !commands.is_closed(),
        }
        while let Ok(command) = commands.try_recv() {
            take(command);
        }
        if !pending.is_empty() {
            match store.add_webhook_events(&pending).await {
                Ok(()) => {
                    pending.clear();
                    recorded.notify_one();
                }
                Err(error) => {
                    tracing::error!(
                        %error, events = pending.len(), "cannot record webhook events; will retry"
                    );
                    if pending.len() > MAX_QUEUED {
                        let dropped = pending.len() - MAX_QUEUED;
                        pending.drain(..dropped);
                        tracing::error!(
                            dropped,
                            "webhook events dropped: the database is unavailable"
                        );
                    }
                    if !open {
                        // Nobody is left to retry for.
                        return;
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Period;
    use crate::store::{CallerLimits, Outcome, Scope, SqliteStore};

    fn endpoint(url: &str) -> EndpointConfig {
        EndpointConfig {
            url: url.into(),
            secret_env: Some("CONFAB_TEST_WEBHOOK_SECRET_UNSET".into()),
            secret_file: None,
            events: vec!["key.revoked".into()],
            site: None,
            request_completed_sample_percent: 100,
        }
    }

    fn with(endpoints: Vec<EndpointConfig>) -> WebhooksConfig {
        WebhooksConfig { endpoints, ..WebhooksConfig::default() }
    }

    fn error_of(config: &WebhooksConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // Computed independently, with Python's hmac module.
        assert_eq!(
            signature(b"whsec_test_0123456789abcdef", 1_700_000_000, br#"{"id":"evt_1"}"#),
            "v1=950d8e5fabb3af089049297d5e94a2a84e25776792dfb61711758872d45f2336"
        );
    }

    #[test]
    fn the_defaults_are_valid() {
        WebhooksConfig::default().validate().unwrap();
        with(vec![endpoint("https://hooks.example/confab")]).validate().unwrap();
    }

    #[test]
    fn the_endpoint_commented_out_in_the_example_config_is_valid() {
        let example = include_str!("../../confab.example.toml");
        let start = example.find("# [[webhooks.endpoints]]").unwrap();
        let uncommented: String = example[start..]
            .lines()
            .map_while(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        use figment::providers::Format;
        let config: WebhooksConfig =
            figment::Figment::from(figment::providers::Toml::string(&uncommented))
                .extract_inner("webhooks")
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(config.endpoints[0].events.len(), 3);
    }

    #[test]
    fn a_bad_url_is_named() {
        assert_eq!(
            error_of(&with(vec![endpoint("https://ok.example"), endpoint("ftp://hooks.example")])),
            "invalid configuration: `webhooks.endpoints[1].url` must be an http:// or https:// \
             URL with a host"
        );
        assert_eq!(
            error_of(&with(vec![endpoint("https://a.example/x"), endpoint("https://a.example/x")])),
            "invalid configuration: `webhooks.endpoints[1].url` is already the url of \
             webhooks.endpoints[0]"
        );
    }

    #[test]
    fn an_unknown_event_is_named() {
        let mut bad = endpoint("https://hooks.example");
        bad.events = vec!["key.revoked".into(), "key.created".into()];
        assert_eq!(
            error_of(&with(vec![bad])),
            "invalid configuration: `webhooks.endpoints[0].events` has an unknown event \
             `key.created` (known: budget.threshold, key.revoked, request.completed)"
        );
    }

    #[test]
    fn an_endpoint_needs_exactly_one_secret_source() {
        let mut none = endpoint("https://hooks.example");
        none.secret_env = None;
        assert_eq!(
            error_of(&with(vec![none])),
            "invalid configuration: `webhooks.endpoints[0].secret_env` or secret_file is \
             required: deliveries are signed with that secret"
        );
        let mut both = endpoint("https://hooks.example");
        both.secret_file = Some("/run/secrets/hook".into());
        assert!(error_of(&with(vec![both])).contains("`webhooks.endpoints[0].secret_file`"));
    }

    #[test]
    fn a_sample_percent_out_of_range_is_refused() {
        let mut zero = endpoint("https://hooks.example");
        zero.request_completed_sample_percent = 0;
        assert!(
            error_of(&with(vec![zero]))
                .contains("`webhooks.endpoints[0].request_completed_sample_percent`")
        );
        let config = WebhooksConfig { poll_ms: 0, ..WebhooksConfig::default() };
        assert_eq!(
            error_of(&config),
            "invalid configuration: `webhooks.poll_ms` must be greater than 0"
        );
    }

    #[tokio::test]
    async fn a_missing_or_short_secret_fails_start_up_naming_the_field_and_never_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url, 2).await.unwrap());

        let unset = with(vec![endpoint("https://hooks.example")]);
        let error = Webhooks::start(&unset, Arc::clone(&store)).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid configuration: `webhooks.endpoints[0].secret_env` names the environment \
             variable CONFAB_TEST_WEBHOOK_SECRET_UNSET, which is not set"
        );

        let file = dir.path().join("hook.secret");
        std::fs::write(&file, "too-short\n").unwrap();
        let mut short = endpoint("https://hooks.example");
        short.secret_env = None;
        short.secret_file = Some(file.clone());
        let error = Webhooks::start(&with(vec![short.clone()]), Arc::clone(&store))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid configuration: `webhooks.endpoints[0].secret_file` the signing secret must \
             be at least 16 characters"
        );
        assert!(!error.contains("too-short"));

        std::fs::write(&file, "  a-long-enough-signing-secret\n").unwrap();
        let webhooks = Webhooks::start(&with(vec![short]), store).unwrap();
        assert_eq!(webhooks.endpoints[0].secret.expose(), "a-long-enough-signing-secret");
        assert_eq!(webhooks.endpoints[0].origin, "https://hooks.example");
        assert!(!format!("{webhooks:?}").contains("a-long-enough"));
    }

    #[test]
    fn a_site_scoped_endpoint_wants_only_its_sites_events() {
        let endpoint = Endpoint {
            url: "https://hooks.example".into(),
            origin: "https://hooks.example".into(),
            secret: Secret::new("s"),
            events: [EventKind::RequestCompleted, EventKind::BudgetThreshold].into(),
            site: Some("site_a".into()),
            sample_percent: 100,
        };
        assert!(endpoint.wants(EventKind::RequestCompleted, Some("site_a")));
        assert!(!endpoint.wants(EventKind::RequestCompleted, Some("site_b")));
        assert!(!endpoint.wants(EventKind::RequestCompleted, None), "a key's request");
        assert!(!endpoint.wants(EventKind::KeyRevoked, None), "not subscribed");
        let global = Endpoint { site: None, ..endpoint };
        assert!(global.wants(EventKind::RequestCompleted, Some("site_b")));
        assert!(global.wants(EventKind::BudgetThreshold, None));
        assert!(global.samples(EventKind::RequestCompleted));
    }

    #[tokio::test]
    async fn the_backoff_doubles_up_to_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url, 2).await.unwrap());
        let config = WebhooksConfig {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 5_000,
            ..WebhooksConfig::default()
        };
        let webhooks = Webhooks::start(&config, store).unwrap();
        let waits: Vec<u128> = (1..=5).map(|n| webhooks.backoff(n).as_millis()).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(webhooks.backoff(200).as_millis(), 5_000);
    }

    fn data(event: &WebhookEvent) -> Value {
        let body: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(body["id"], event.id.as_str());
        assert_eq!(body["type"], event.kind.as_str());
        assert_eq!(body["created"], event.created_at_ms / 1000);
        body["data"].clone()
    }

    #[test]
    fn event_payloads_carry_the_documented_fields() {
        let crossing = Crossing {
            payer: Payer::Site("site_a".into()),
            period: Period::Month { year: 2026, month: 11 },
            percent: 80,
            spent: 8_000_000,
            budget: 10_000_000,
        };
        let event = budget_threshold(&crossing);
        assert_eq!(event.site_id.as_deref(), Some("site_a"));
        assert_eq!(
            data(&event),
            json!({"payer": "site", "payer_id": "site_a", "period": "2026-11",
                   "period_kind": "monthly", "percent": 80, "spent_micros": 8_000_000,
                   "budget_micros": 10_000_000})
        );

        let key = ApiKey {
            id: "key_1".into(),
            name: "backend".into(),
            lookup_id: "abcd1234".into(),
            scopes: vec![Scope::Chat],
            models: Vec::new(),
            limits: CallerLimits::default(),
            created_at: 1,
            last_used_at: None,
            revoked_at: Some(1_700_000_000),
            previous_lookup_id: None,
            previous_expires_at: None,
        };
        let event = key_revoked(&key);
        assert_eq!((event.kind.as_str(), event.site_id.as_deref()), ("key.revoked", None));
        assert_eq!(
            data(&event),
            json!({"id": "key_1", "name": "backend",
                   "key_prefix": KeyKind::Secret.public("abcd1234"), "revoked_at": 1_700_000_000})
        );

        let record = UsageRecord {
            request_id: "req_1".into(),
            at_ms: 1_700_000_000_000,
            site_id: None,
            key_id: Some("key_1".into()),
            visitor: None,
            model: "m".into(),
            upstream: "u".into(),
            input_tokens: 7,
            output_tokens: 3,
            estimated: false,
            cost_micros: 10,
            first_token_ms: Some(5),
            total_ms: 9,
            outcome: Outcome::Completed,
        };
        let event = request_completed(&record);
        assert_eq!(
            data(&event),
            json!({"at_ms": 1_700_000_000_000_i64, "site_id": null, "key_id": "key_1",
                   "visitor": null, "model": "m", "upstream": "u", "input_tokens": 7,
                   "output_tokens": 3, "estimated": false, "cost_micros": 10,
                   "first_token_ms": 5, "total_ms": 9, "outcome": "completed"})
        );
    }
}
