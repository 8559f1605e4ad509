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
//!    in the transaction that marks the event dispatched). Each endpoint has a loop of its own
//!    that attempts its due deliveries, so an endpoint that is slow or down (an attempt may
//!    wait `timeout_ms`) delays only its own deliveries. A 2xx answer delivers; anything else is
//!    retried after a doubling backoff, up to `max_attempts`, after which the delivery is kept
//!    as a dead letter with its last error. Pending deliveries survive a restart: they are rows,
//!    and the next worker picks them up (those to an endpoint no longer configured are given up).
//!
//! Delivery is at least once (a delivery whose answer was lost is attempted again), so every
//! attempt carries the same `Confab-Delivery` id for receivers to deduplicate. Each attempt is
//! signed afresh, with the `Confab-Timestamp` it was made at, so that receivers can refuse old
//! (replayed) requests:
//!
//! ```text
//! Confab-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>,
//!                   v2=<hex HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>
//! ```
//!
//! (one line, comma-separated, as Stripe does). `v2` covers the delivery id too, so a captured
//! request cannot be replayed under another `Confab-Delivery` to get past deduplication. `v1` is
//! deprecated: it is still sent, for receivers written before `v2`, and will be removed.
//!
//! The backlog (events recorded and not yet delivered) is capped at `max_backlog`: past it, the
//! writer drops new `request.completed` events (counted in [`Webhooks::dropped`] and logged at
//! most once a minute), and always records `budget.threshold` and `key.revoked`.
//!
//! Signing secrets are read at start-up and never logged; logs name an endpoint by its origin
//! only, since webhook URLs often carry a token in their path.
//!
//! The module is split by concern: [`config`] (the `[webhooks]` section, its validation, the
//! endpoints' secrets), [`events`] (kinds, payloads, signing), `outbox` (recording) and
//! `delivery` (the worker). [`Webhooks`] here is the handle the rest of the relay holds.

pub mod config;
mod delivery;
pub mod events;
mod outbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use config::{ConfigError, Endpoint, invalid};
pub use config::{EndpointConfig, MIN_SECRET_LEN, WebhooksConfig};
pub use events::{EventKind, budget_threshold, key_revoked, request_completed, signature};
pub use outbox::record_key_revoked;
use outbox::{Command, write_events};

use crate::budget::{Crossing, Payer};
use crate::store::{Store, UsageRecord, WebhookEvent};

/// The relay's webhooks: the endpoints, the queue into the outbox, and the delivery worker.
#[derive(Debug)]
pub struct Webhooks {
    config: WebhooksConfig,
    endpoints: Vec<Endpoint>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    queue: mpsc::UnboundedSender<Command>,
    /// Wakes the delivery worker's dispatcher when events were recorded.
    recorded: Arc<Notify>,
    /// One per endpoint, in the same order: wakes that endpoint's delivery loop when
    /// deliveries to it were created.
    wake: Vec<Notify>,
    stats: Arc<Stats>,
}

/// What [`Webhooks::backlog`], [`Webhooks::failures`] and [`Webhooks::dropped`] report; kept
/// up to date by the writer and the delivery worker.
#[derive(Debug, Default)]
struct Stats {
    /// As last counted in the store, plus the events recorded since.
    backlog: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
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
        let stats = Arc::new(Stats::default());
        tokio::spawn(write_events(
            Arc::clone(&store),
            commands,
            Arc::clone(&recorded),
            Arc::clone(&stats),
            config.max_backlog,
        ));
        let wake = endpoints.iter().map(|_| Notify::new()).collect();
        Ok(Self { config: config.clone(), endpoints, store, client, queue, recorded, wake, stats })
    }

    /// The events in the outbox still waiting to be delivered (not yet dispatched, or with a
    /// delivery still to make), for metrics. The count is refreshed from the store by the
    /// delivery worker every `poll_ms` and by the writer before it records a
    /// `request.completed`, so it may lag by that much.
    pub fn backlog(&self) -> u64 {
        self.stats.backlog.load(Ordering::Relaxed)
    }

    /// Delivery attempts that failed (an answer other than 2xx, or none in time) since the
    /// relay started; every retry counts. For metrics.
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// `request.completed` events dropped since the relay started because the backlog was at
    /// `webhooks.max_backlog`. For metrics.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
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

    /// Queues `conversation.handoff` for the outbox; never waits.
    pub fn conversation_handoff(
        &self,
        conversation: &crate::store::Conversation,
        messages: &[crate::store::Message],
        link: &events::SharedLink,
    ) {
        if self.wanted(EventKind::ConversationHandoff, Some(&conversation.site_id)) {
            self.enqueue(events::conversation_handoff(conversation, messages, link));
        }
    }

    /// Resolves once every event queued before the call is in the outbox: `true`, or could not
    /// be written (logged at error): `false`.
    pub async fn flush(&self) -> bool {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}
