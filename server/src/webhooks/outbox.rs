//! Recording events in the outbox: the background writer that takes the events the request
//! path queues (a burst becomes one transaction), and [`record_key_revoked`], which writes
//! directly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::events::key_revoked;
use crate::store::{ApiKey, Store, StoreError, WebhookEvent};

/// While the outbox cannot be written, queued events are kept and retried this often...
const RETRY_WRITE: Duration = Duration::from_secs(1);
/// ... up to this many.
const MAX_QUEUED: usize = 100_000;

/// What the request path sends the writer.
pub(super) enum Command {
    Event(WebhookEvent),
    Flush(oneshot::Sender<()>),
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
