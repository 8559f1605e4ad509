//! Delivering: the worker that dispatches recorded events to the endpoints that want them, and
//! one loop per endpoint that attempts its due deliveries, retrying failed ones with a doubling
//! backoff. Endpoints are attempted apart so that one that is slow or down delays only its own
//! deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::{join, join_all};
use tokio::sync::Notify;

use super::Webhooks;
use super::config::Endpoint;
use super::events::{EventKind, new_id, signature};
use crate::store::{NewWebhookDelivery, StoreError, WebhookDelivery, WebhookEvent};

/// Events dispatched, and deliveries to one endpoint attempted, per batch.
const BATCH: u32 = 32;
/// An attempt is leased for its time limit and this much more: if the process stops during
/// the attempt, the delivery is due again once the lease is over.
const LEASE_MARGIN_MS: i64 = 1_000;
/// How often delivered and failed deliveries past `retention_days` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// The error a delivery to an endpoint that is no longer configured is given up with.
const UNCONFIGURED: &str = "the endpoint is no longer configured";

/// Why an attempt did not deliver.
#[derive(Debug)]
enum AttemptError {
    /// The endpoint answered, but not with a 2xx.
    Status(reqwest::StatusCode),
    /// No answer: connection refused, timed out, and the like.
    Request(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
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

/// Whether a batch came back full, so that more may be waiting.
fn full(n: usize) -> bool {
    u32::try_from(n).is_ok_and(|n| n >= BATCH)
}

impl Webhooks {
    /// The delivery worker, forever: a dispatcher that turns recorded events into deliveries,
    /// and one loop per endpoint that attempts that endpoint's due deliveries. An endpoint that
    /// hangs until `timeout_ms` holds up its own loop only; the others keep delivering.
    ///
    /// The loops are joined in the caller's task, not spawned, so that stopping that task
    /// stops every attempt: `http::serve` aborts it at shutdown and waits for it, and nothing
    /// is sent after that. An attempt cut short there is made again after a restart, once its
    /// lease is over.
    pub async fn deliver(self: Arc<Self>) {
        let endpoints = join_all(
            self.endpoints
                .iter()
                .zip(&self.wake)
                .map(|(endpoint, wake)| self.deliver_to(endpoint, wake)),
        );
        join(self.dispatch_recorded(), endpoints).await;
    }

    /// The dispatcher: creates the deliveries of recorded events and wakes the endpoints'
    /// loops; also prunes the outbox, and gives up the deliveries to endpoints that are no
    /// longer configured (no loop attempts those).
    async fn dispatch_recorded(&self) {
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                self.give_up_unconfigured().await;
                self.prune().await;
            }
            self.count_backlog().await;
            let more = match self.dispatch_batch().await {
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

    /// Dispatches a batch of recorded events; `true` when it was full.
    async fn dispatch_batch(&self) -> Result<bool, StoreError> {
        let events = self.store.undispatched_webhook_events(BATCH).await?;
        for event in &events {
            self.dispatch(event).await?;
        }
        Ok(full(events.len()))
    }

    /// Creates the deliveries of one event: one per endpoint that wants it (and samples it);
    /// then wakes those endpoints' loops.
    async fn dispatch(&self, event: &WebhookEvent) -> Result<(), StoreError> {
        let Some(kind) = EventKind::from_name(&event.kind) else {
            tracing::warn!(
                event = %event.id, kind = %event.kind, "unknown webhook event kind; not sent"
            );
            self.store.dispatch_webhook_event(&event.id, &[], crate::unix_now_ms()).await?;
            return Ok(());
        };
        let to: Vec<(&Endpoint, &Notify)> = self
            .endpoints
            .iter()
            .zip(&self.wake)
            .filter(|(e, _)| e.wants(kind, event.site_id.as_deref()) && e.samples(kind))
            .collect();
        let deliveries: Vec<NewWebhookDelivery> = to
            .iter()
            .map(|(e, _)| NewWebhookDelivery { id: new_id("whd"), endpoint: e.url.clone() })
            .collect();
        self.store.dispatch_webhook_event(&event.id, &deliveries, crate::unix_now_ms()).await?;
        for (_, wake) in to {
            wake.notify_one();
        }
        Ok(())
    }

    /// One endpoint's loop: attempts its due deliveries, batch after batch, forever.
    async fn deliver_to(&self, endpoint: &Endpoint, wake: &Notify) {
        let poll = Duration::from_millis(self.config.poll_ms);
        loop {
            let more = match self.attempt_due(endpoint).await {
                Ok(more) => more,
                Err(error) => {
                    tracing::error!(
                        %error, endpoint = %endpoint.origin,
                        "cannot read the webhook outbox; will retry"
                    );
                    false
                }
            };
            if !more {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = wake.notified() => {}
                }
            }
        }
    }

    /// Attempts a batch of the endpoint's due deliveries at once; `true` when it was full.
    async fn attempt_due(&self, endpoint: &Endpoint) -> Result<bool, StoreError> {
        let now = crate::unix_now_ms();
        let timeout = i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(timeout).saturating_add(LEASE_MARGIN_MS);
        let due =
            self.store.claim_webhook_deliveries_to(&endpoint.url, now, lease_until, BATCH).await?;
        let results = join_all(due.iter().map(|delivery| self.attempt(endpoint, delivery))).await;
        for (delivery, result) in due.iter().zip(results) {
            if let Err(error) = self.settle(endpoint, delivery, result).await {
                // The delivery stays leased, and is attempted again once the lease is over.
                tracing::error!(%error, delivery = %delivery.id, "cannot record a webhook attempt");
            }
        }
        Ok(full(due.len()))
    }

    /// One attempt: POSTs the event's body, signed now, and waits for a 2xx.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        delivery: &WebhookDelivery,
    ) -> Result<(), AttemptError> {
        let timestamp = crate::unix_now();
        let signature = signature(
            endpoint.secret.expose().as_bytes(),
            &delivery.id,
            timestamp,
            delivery.payload.as_bytes(),
        );
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
        endpoint: &Endpoint,
        delivery: &WebhookDelivery,
        result: Result<(), AttemptError>,
    ) -> Result<(), StoreError> {
        let now = crate::unix_now_ms();
        let attempt = delivery.attempts.saturating_add(1);
        let origin = endpoint.origin.as_str();
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
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let text = error.to_string();
        if attempt >= self.config.max_attempts {
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
                error = %text, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "webhook delivery failed; will retry"
            );
            self.store.webhook_attempt_failed(&delivery.id, &text, now, Some(retry_at)).await
        }
    }

    /// Counts the backlog afresh for [`Webhooks::backlog`]: deliveries made or given up since
    /// the last count have shrunk it, and events recorded by another process have grown it.
    async fn count_backlog(&self) {
        match self.store.webhook_backlog().await {
            Ok(backlog) => self.stats.backlog.store(backlog, Ordering::Relaxed),
            // Reading the outbox, which comes next, fails too and says so.
            Err(error) => tracing::debug!(%error, "cannot count the webhook backlog"),
        }
    }

    /// Gives up the deliveries still to make to endpoints removed from the configuration:
    /// their secret is unknown, and no loop attempts them.
    async fn give_up_unconfigured(&self) {
        let configured: Vec<String> = self.endpoints.iter().map(|e| e.url.clone()).collect();
        let now = crate::unix_now_ms();
        match self.store.give_up_webhook_deliveries_except(&configured, UNCONFIGURED, now).await {
            Ok(0) => {}
            Ok(deliveries) => tracing::warn!(
                deliveries,
                "webhook deliveries to endpoints no longer configured were given up"
            ),
            Err(error) => tracing::warn!(
                %error, "cannot give up webhook deliveries to endpoints no longer configured"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Store};
    use crate::webhooks::WebhooksConfig;

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
}
