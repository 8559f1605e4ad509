//! Recording events in the outbox: the background writer that takes the events the request
//! path queues (a burst becomes one transaction) and keeps the backlog under
//! `webhooks.max_backlog`, and [`record_key_revoked`], which writes directly.
//!
//! The cap drops `request.completed` events only: they are a sampled stream of records whose
//! loss costs some statistics, while a missed `budget.threshold` or `key.revoked` is an alert
//! nobody gets. So those two are always recorded, and take the room first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use super::Stats;
use super::events::{EventKind, key_revoked};
use crate::store::{ApiKey, Store, StoreError, WebhookEvent};

/// While the outbox cannot be written, queued events are kept and retried this often...
const RETRY_WRITE: Duration = Duration::from_secs(1);
/// ... up to this many.
const MAX_QUEUED: usize = 100_000;
/// Events dropped because the backlog is full are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the request path sends the writer.
pub(super) enum Command {
    Event(WebhookEvent),
    /// Answered `true` once everything queued before it is in the outbox, `false` if some of
    /// it could not be written.
    Flush(oneshot::Sender<bool>),
}

/// Records `key.revoked` in the outbox; the relay's delivery worker sends it to the endpoints
/// that want it (also when the key was revoked from the CLI).
pub async fn record_key_revoked(store: &dyn Store, key: &ApiKey) -> Result<(), StoreError> {
    store.add_webhook_events(&[key_revoked(key)]).await
}

/// Writes queued events to the outbox as they come (a burst becomes one transaction), keeping
/// them across failed writes, and wakes the delivery worker.
pub(super) async fn write_events(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    recorded: Arc<Notify>,
    stats: Arc<Stats>,
    max_backlog: u64,
) {
    let mut drops = DropLog::default();
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
            cap_backlog(store.as_ref(), &mut pending, &stats, max_backlog, &mut drops).await;
        }
        if !pending.is_empty() {
            match store.add_webhook_events(&pending).await {
                Ok(()) => {
                    let written = u64::try_from(pending.len()).unwrap_or(u64::MAX);
                    stats.backlog.fetch_add(written, Ordering::Relaxed);
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
            let _ = done.send(pending.is_empty());
        }
    }
}

fn droppable(event: &WebhookEvent) -> bool {
    event.kind == EventKind::RequestCompleted.as_str()
}

/// Drops `request.completed` events from `pending` so that the backlog stays within
/// `max_backlog`, counting and logging what it dropped.
async fn cap_backlog(
    store: &dyn Store,
    pending: &mut Vec<WebhookEvent>,
    stats: &Stats,
    max_backlog: u64,
    drops: &mut DropLog,
) {
    if !pending.iter().any(droppable) {
        return;
    }
    let backlog = match store.webhook_backlog().await {
        Ok(backlog) => backlog,
        Err(error) => {
            // The write that follows most likely fails too, and says so at error level.
            tracing::debug!(%error, "cannot count the webhook backlog");
            return;
        }
    };
    stats.backlog.store(backlog, Ordering::Relaxed);
    let dropped = drop_over_cap(pending, backlog, max_backlog);
    if dropped > 0 {
        stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        drops.record(dropped, backlog, max_backlog);
    }
}

/// Drops the `request.completed` events of `pending` that do not fit in the room `backlog`
/// leaves under `max_backlog`, once the other events (always kept) have taken theirs; the
/// earliest ones are kept. Returns how many it dropped.
fn drop_over_cap(pending: &mut Vec<WebhookEvent>, backlog: u64, max_backlog: u64) -> u64 {
    let kept_anyway = pending.iter().filter(|event| !droppable(event)).count();
    let mut room = max_backlog
        .saturating_sub(backlog)
        .saturating_sub(u64::try_from(kept_anyway).unwrap_or(u64::MAX));
    let before = pending.len();
    pending.retain(|event| {
        if !droppable(event) {
            return true;
        }
        let fits = room > 0;
        room = room.saturating_sub(1);
        fits
    });
    u64::try_from(before - pending.len()).unwrap_or(u64::MAX)
}

/// Logs dropped events at most once per [`DROP_LOG_EVERY`], with how many were dropped since
/// the previous line; events carry no secrets, and the line names none of them anyway.
#[derive(Debug, Default)]
struct DropLog {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl DropLog {
    fn record(&mut self, dropped: u64, backlog: u64, max_backlog: u64) {
        self.unlogged = self.unlogged.saturating_add(dropped);
        if self.logged_at.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY) {
            tracing::warn!(
                dropped = self.unlogged,
                backlog,
                max_backlog,
                "the webhook backlog is full: request.completed events dropped"
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: EventKind) -> WebhookEvent {
        WebhookEvent {
            id: id.into(),
            kind: kind.as_str().into(),
            site_id: None,
            payload: "{}".into(),
            created_at_ms: 1,
        }
    }

    fn ids(events: &[WebhookEvent]) -> Vec<&str> {
        events.iter().map(|event| event.id.as_str()).collect()
    }

    #[test]
    fn a_full_backlog_drops_request_completed_events_and_keeps_the_others() {
        use EventKind::{BudgetThreshold, KeyRevoked, RequestCompleted};
        let batch = || {
            vec![
                event("rc1", RequestCompleted),
                event("budget", BudgetThreshold),
                event("rc2", RequestCompleted),
                event("key", KeyRevoked),
                event("rc3", RequestCompleted),
            ]
        };

        let mut pending = batch();
        assert_eq!(drop_over_cap(&mut pending, 0, 100), 0, "room for all");
        assert_eq!(pending.len(), 5);

        // Room for three: the alerts take two, the earliest request takes the last one.
        let mut pending = batch();
        assert_eq!(drop_over_cap(&mut pending, 7, 10), 2);
        assert_eq!(ids(&pending), ["rc1", "budget", "key"]);

        // Full, or past full: the alerts are still kept.
        for backlog in [10, 11, 1_000] {
            let mut pending = batch();
            assert_eq!(drop_over_cap(&mut pending, backlog, 10), 3);
            assert_eq!(ids(&pending), ["budget", "key"]);
        }
    }
}
