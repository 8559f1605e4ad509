//! Writes conversation turns in batches from a background task, like usage records, so that a
//! chat request never waits for the database to keep its transcript.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::mask::mask_contacts;
use crate::store::{Store, Turn};

/// Turns waiting to be written are kept across failed writes, up to this many; older ones are
/// dropped beyond it (logged): a transcript is worth less than the relay's memory.
const MAX_PENDING: usize = 20_000;

#[derive(Debug)]
enum Command {
    Turn(Box<Turn>),
    Flush(oneshot::Sender<bool>),
}

/// The handle the meters hand finished turns to.
#[derive(Debug, Clone)]
pub struct TurnRecorder {
    commands: mpsc::UnboundedSender<Command>,
    /// Turns handed over and not written yet.
    backlog: Arc<AtomicUsize>,
}

impl TurnRecorder {
    /// Starts the writer (needs a Tokio runtime); it writes every `flush_every`, and once more
    /// when every handle is gone.
    pub fn start(store: Arc<dyn Store>, flush_every: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_batches(store, receiver, flush_every, Arc::clone(&backlog)));
        Self { commands, backlog }
    }

    /// Queues a finished turn, its contacts masked first when `mask` (off the request path: the
    /// writer does it).
    pub fn record(&self, mut turn: Turn, mask: bool) {
        if mask {
            turn.question = mask_contacts(&turn.question);
            turn.answer = mask_contacts(&turn.answer);
        }
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.commands.send(Command::Turn(Box::new(turn))).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the conversation writer has stopped; a turn is lost");
        }
    }

    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Resolves once every turn queued before the call is written (`true`) or could not be
    /// (logged; `false`).
    pub async fn flush(&self) -> bool {
        let (done, written) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    flush_every: Duration,
    backlog: Arc<AtomicUsize>,
) {
    let mut turns: Vec<Turn> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut every = tokio::time::interval(flush_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Turn(turn)) => {
                    turns.push(*turn);
                    continue;
                }
                Some(Command::Flush(done)) => flushes.push(done),
                None => {
                    write(store.as_ref(), &mut turns, &backlog).await;
                    return;
                }
            },
            _ = every.tick() => {}
        }
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Turn(turn) => turns.push(*turn),
                Command::Flush(done) => flushes.push(done),
            }
        }
        let written = write(store.as_ref(), &mut turns, &backlog).await;
        for done in flushes.drain(..) {
            let _ = done.send(written);
        }
    }
}

/// Writes the queued turns in one transaction; `true` when none is left.
async fn write(store: &dyn Store, turns: &mut Vec<Turn>, backlog: &AtomicUsize) -> bool {
    if turns.is_empty() {
        return true;
    }
    match store.record_turns(turns).await {
        Ok(()) => {
            backlog.fetch_sub(turns.len(), Ordering::Relaxed);
            turns.clear();
            true
        }
        Err(error) => {
            tracing::error!(%error, turns = turns.len(), "cannot write conversation turns; will retry");
            if turns.len() > MAX_PENDING {
                let dropped = turns.len() - MAX_PENDING;
                turns.drain(..dropped);
                backlog.fetch_sub(dropped, Ordering::Relaxed);
                tracing::error!(dropped, "conversation turns dropped: the database is unavailable");
            }
            false
        }
    }
}
