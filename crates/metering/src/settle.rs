//! Settling after a request: work that may have to wait for the shared store is never done in a
//! destructor (a `Meter` settles in `Drop`). It is handed to the [`Settler`] as a future, and
//! the settler runs it.
//!
//! - With the in-process engines nothing ever waits, so the settler runs the future at once, in
//!   the caller: a request's budget and tokens are settled before the next request can be
//!   admitted, as they always were.
//! - With Redis, a background task runs the settlements, many at a time; each retries with
//!   [`Backoff`] until Redis takes it (settles are idempotent, so a retry never counts twice).
//!   [`Settler::flush`] waits until none is left (shutdown does, for a bounded time).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, mpsc};

use crate::Unavailable;
use crate::degraded::Observer;

/// A settlement: settles one request's budget and tokens, retrying until done.
pub type Settlement = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs settlements (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Settler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: settlements run at once, in the caller.
    queue: Option<mpsc::UnboundedSender<Settlement>>,
    pending: AtomicUsize,
    done: Notify,
    observer: Arc<dyn Observer>,
}

impl Settler {
    /// For engines that never wait: every settlement completes when first polled.
    pub fn inline(observer: Arc<dyn Observer>) -> Self {
        let inner =
            Inner { queue: None, pending: AtomicUsize::new(0), done: Notify::new(), observer };
        Self { inner: Arc::new(inner) }
    }

    /// Settlements run by a background task (needs a Tokio runtime).
    pub fn background(observer: Arc<dyn Observer>) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            queue: Some(queue),
            pending: AtomicUsize::new(0),
            done: Notify::new(),
            observer,
        });
        tokio::spawn(run(receiver, Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Hands a settlement over. It never blocks and never runs Redis I/O in the caller.
    pub fn submit(&self, settlement: Settlement) {
        let Some(queue) = &self.inner.queue else {
            if settlement.now_or_never().is_none() {
                // An in-process engine that waited: a bug, and the settlement is lost.
                tracing::error!("an in-process settlement did not complete at once");
            }
            return;
        };
        self.inner.pending.fetch_add(1, Ordering::AcqRel);
        self.inner.observer.settlements_pending(1);
        if queue.send(settlement).is_err() {
            self.finished();
            tracing::error!("the settler has stopped; a settlement is lost");
        }
    }

    /// Settlements handed over and not yet done.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Waits until every settlement handed over so far is done, for at most `within`: `true`
    /// when none is left.
    pub async fn flush(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let done = self.inner.done.notified();
                if self.pending() == 0 {
                    return;
                }
                done.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    fn finished(&self) {
        self.inner.finished();
    }
}

impl Inner {
    fn finished(&self) {
        self.observer.settlements_pending(-1);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }
}

/// Runs queued settlements, all at once, until the settler is dropped and its queue is empty.
async fn run(mut queue: mpsc::UnboundedReceiver<Settlement>, inner: std::sync::Weak<Inner>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            settlement = queue.recv() => match settlement {
                Some(settlement) => running.push(settlement),
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {
                if let Some(inner) = inner.upgrade() {
                    inner.finished();
                }
            }
        }
    }
    while running.next().await.is_some() {
        if let Some(inner) = inner.upgrade() {
            inner.finished();
        }
    }
}

/// Waits between attempts to reach the shared store: 50 ms, doubling up to 2 s, or longer if
/// the store said when to come back.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MOST: Duration = Duration::from_secs(2);

    /// Sleeps before the next attempt after `error`.
    pub async fn wait(&mut self, error: Unavailable) {
        let wait = self.next.max(error.retry_after.min(Self::MOST));
        self.next = (self.next * 2).min(Self::MOST);
        tokio::time::sleep(wait).await;
    }
}
