//! Where a resumable answer's producer (`relay::produce`) runs.
//!
//! It is one future shared by the clients that follow the stream through this relay: each
//! [`Driver`] polls it whenever its client's response is polled for the next event, so while a
//! client follows, the answer is read from the upstream and sent on in that client's own task,
//! as a stream with `grace_ms = 0` is, with no hop between tasks per chunk (which cost about as
//! much CPU as the rest of a stream; BENCHMARKS.md). Any follower drives it, so a client whose
//! connection stalls (a dead one the relay has not noticed yet) holds up no one who reattached.
//! When the last driver goes before the producer has ended, it is handed to a task of its own,
//! which drives it to its end (the answer's, or a stop: cancelled, or nobody following for the
//! grace period), and which shutdown waits for and cuts short.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Frame, Frames};

type Producer = Shared<BoxFuture<'static, ()>>;

/// The producers of this relay's resumable streams, by stream id.
#[derive(Debug, Default)]
pub struct Producers(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: Mutex<HashMap<String, Running>>,
    /// The producers handed to tasks of their own.
    tasks: Mutex<JoinSet<()>>,
    /// How many of those tasks are running.
    on_their_own: watch::Sender<usize>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producers").finish_non_exhaustive()
    }
}

struct Running {
    producer: Producer,
    /// Drivers alive.
    drivers: usize,
    /// Handed to a task of its own (once, for good).
    on_its_own: bool,
}

impl Inner {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Producers {
    /// Starts producing the stream `id` with `producer`, and returns its first driver.
    pub fn start(&self, id: &str, producer: impl Future<Output = ()> + Send + 'static) -> Driver {
        let done = (Arc::downgrade(&self.0), id.to_owned());
        let producer = async move {
            producer.await;
            let (inner, id) = done;
            if let Some(inner) = inner.upgrade() {
                inner.running().remove(&id);
            }
        }
        .boxed()
        .shared();
        let running = Running { producer: producer.clone(), drivers: 1, on_its_own: false };
        self.0.running().insert(id.to_owned(), running);
        Driver { inner: Arc::clone(&self.0), id: id.to_owned(), producer: Some(producer) }
    }

    /// Another driver of the stream `id`, if it is still being produced here.
    pub fn driver(&self, id: &str) -> Option<Driver> {
        let mut running = self.0.running();
        let entry = running.get_mut(id)?;
        entry.drivers += 1;
        let producer = Some(entry.producer.clone());
        Some(Driver { inner: Arc::clone(&self.0), id: id.to_owned(), producer })
    }

    /// Resolves once no producer runs on its own. Call it once no client follows any stream
    /// (every connection is closed), so that none can be handed over afterwards.
    pub async fn finished(&self) {
        let _ = self.0.on_their_own.subscribe().wait_for(|running| *running == 0).await;
    }

    /// Ends every producer (each settles its answer as it is dropped).
    pub async fn abort(&self) {
        let mut tasks = std::mem::take(&mut *self.0.tasks());
        tasks.shutdown().await;
        let running = std::mem::take(&mut *self.0.running());
        drop(running);
    }
}

/// Drives a stream's producer while it is polled; when the last one is dropped before the
/// producer has ended, the producer is handed to a task of its own.
pub struct Driver {
    inner: Arc<Inner>,
    id: String,
    /// `None` once the producer has ended.
    producer: Option<Producer>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Driver {
    /// `frames`, driving the producer before each look for the next one.
    pub fn frames(self, frames: Frames) -> Frames {
        Box::pin(Driven { driver: self, frames })
    }
}

impl Future for Driver {
    type Output = ();

    /// Drives the producer; ready once it has ended.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(producer) = self.producer.as_mut() else { return Poll::Ready(()) };
        let ended = Pin::new(producer).poll(cx);
        if ended.is_ready() {
            self.producer = None;
        }
        ended
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.producer.is_none() {
            return;
        }
        let mut running = self.inner.running();
        // Gone from the map: it has ended.
        let Some(entry) = running.get_mut(&self.id) else { return };
        entry.drivers -= 1;
        if entry.drivers > 0 || entry.on_its_own {
            return;
        }
        // A task can only be started inside the runtime; outside it (the runtime itself being
        // dropped) the producer is dropped with the map, which settles it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        entry.on_its_own = true;
        let producer = entry.producer.clone();
        drop(running);
        let counted = OnItsOwn::new(&self.inner.on_their_own);
        let mut tasks = self.inner.tasks();
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(
            async move {
                let _counted = counted;
                producer.await;
            },
            &runtime,
        );
    }
}

/// Counts a producer task in `on_their_own` while it lives.
struct OnItsOwn(watch::Sender<usize>);

impl OnItsOwn {
    fn new(count: &watch::Sender<usize>) -> Self {
        count.send_modify(|running| *running += 1);
        Self(count.clone())
    }
}

impl Drop for OnItsOwn {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running -= 1);
    }
}

/// A follower's frames with its driver: see [`Driver::frames`].
struct Driven {
    driver: Driver,
    frames: Frames,
}

impl Stream for Driven {
    type Item = Vec<Frame>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<Frame>>> {
        // What the producer appends now is in the log by the time the log is looked at.
        let _ = Pin::new(&mut self.driver).poll(cx);
        self.frames.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio::sync::oneshot;

    use super::*;
    use crate::resume::FrameKind;

    /// A producer that appends one frame per message until its sender is dropped.
    fn producer(
        log: Arc<Mutex<Vec<u32>>>,
    ) -> (tokio::sync::mpsc::UnboundedSender<u32>, impl Future<Output = ()> + Send) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, async move {
            while let Some(n) = rx.recv().await {
                log.lock().unwrap().push(n);
            }
        })
    }

    #[tokio::test]
    async fn a_follower_drives_the_producer_in_its_own_task() {
        let producers = Producers::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, produce) = producer(Arc::clone(&log));
        let mut driver = producers.start("s", produce);
        tx.send(1).unwrap();
        // Nothing else runs it: polling the driver is what moves it.
        assert!((&mut driver).now_or_never().is_none());
        assert_eq!(*log.lock().unwrap(), [1]);
        drop(tx);
        (&mut driver).await;
        assert!(producers.driver("s").is_none(), "an ended producer is forgotten");
        assert_eq!(*producers.0.on_their_own.borrow(), 0);
    }

    #[tokio::test]
    async fn the_last_driver_gone_hands_the_producer_to_a_task_that_shutdown_waits_for() {
        let producers = Producers::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, produce) = producer(Arc::clone(&log));
        let first = producers.start("s", produce);
        let second = producers.driver("s").unwrap();
        drop(first);
        assert_eq!(*producers.0.on_their_own.borrow(), 0, "one driver is left");
        drop(second);
        assert_eq!(*producers.0.on_their_own.borrow(), 1);
        tx.send(7).unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), producers.finished()).await.unwrap();
        assert_eq!(*log.lock().unwrap(), [7]);
        assert!(producers.driver("s").is_none());
    }

    #[tokio::test]
    async fn abort_drops_the_producers_left() {
        let producers = Producers::default();
        let (ended_tx, ended) = oneshot::channel::<()>();
        let driver = producers.start("s", async move {
            let _ended = ended_tx;
            std::future::pending::<()>().await;
        });
        drop(driver);
        producers.abort().await;
        assert!(ended.await.is_err(), "the producer was dropped");
    }

    #[tokio::test]
    async fn driven_frames_see_what_the_producer_appended_in_the_same_poll() {
        let producers = Producers::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
        let frame = Frame { seq: 1, kind: FrameKind::Data, data: Arc::from("x") };
        let (log_tx, log_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
        let driver = producers.start("s", async move {
            while let Some(frame) = rx.recv().await {
                let _ = log_tx.send(frame);
            }
        });
        let frames: Frames = Box::pin(tokio_stream_from(log_rx).map(|frame| vec![frame]));
        let mut driven = driver.frames(frames);
        tx.send(frame).unwrap();
        let next = driven.next().now_or_never();
        let first = next.as_ref().and_then(|next| next.as_deref());
        assert!(matches!(first, Some([Frame { seq: 1, .. }])), "{next:?}");
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
    ) -> impl Stream<Item = Frame> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
