//! [`InProcessLog`]: the replay logs of one relay, in its memory.
//!
//! Each stream is an [`Entry`] with two `watch` channels. `log` holds the events; the producer
//! appends under its lock and every follower is woken to copy what is new (the events' data is
//! shared, not copied). `control` counts the followers attached and carries a cancellation, and
//! is what the producer's [`super::StopSignal`] waits on. The map of streams is touched only to open,
//! look up and forget streams, never per event.
//!
//! A shared engine ([`super::RedisLog`]) keeps its streams here too, for the clients that follow
//! them through this relay, and tells this log through [`Elsewhere`] whether a stream is
//! followed or was cancelled through another relay.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use confab_protocol::ErrorEnvelope;
use futures_util::stream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::ResumeConfig;
use super::{
    Frame, FrameKind, Frames, Opened, Owner, ReplayLog, Stop, StreamNotFound, StreamWriter,
};

/// The replay logs of this relay.
#[derive(Debug, Clone)]
pub struct InProcessLog(Arc<Shared>);

/// An [`InProcessLog`] that does not keep it alive.
#[derive(Debug, Clone)]
pub(super) struct WeakLog(Weak<Shared>);

#[derive(Debug)]
struct Shared {
    grace: Duration,
    keep: Duration,
    bounds: Bounds,
    max_streams: usize,
    streams: Mutex<Streams>,
    elsewhere: Option<Arc<dyn Elsewhere>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) max_events: usize,
    pub(super) max_bytes: usize,
}

/// What other relays know of a stream produced here.
#[async_trait]
pub(super) trait Elsewhere: Send + Sync + std::fmt::Debug + 'static {
    /// Asked once nobody has followed the stream `id` through this relay for the grace period.
    async fn check(&self, id: &str) -> Remote;
}

/// A stream's state elsewhere (see [`Elsewhere`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Remote {
    /// Followed through another relay, or within the grace period before now: it counts as
    /// followed for this long yet.
    Followed(Duration),
    /// Cancelled through another relay.
    Cancelled,
    /// Neither (or unknown: the shared engine did not answer).
    Alone,
}

#[derive(Debug, Default)]
struct Streams {
    by_id: HashMap<String, Arc<Entry>>,
    /// The streams that have ended, in the order they ended: the first is the first to expire
    /// or to be forgotten for room.
    ended: VecDeque<(Instant, String)>,
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    log: watch::Sender<Log>,
    control: watch::Sender<Control>,
}

/// The events kept of one stream.
#[derive(Debug, Default)]
struct Log {
    frames: VecDeque<Frame>,
    /// Bytes of data in `frames`.
    bytes: usize,
    /// The sequence number the next event gets.
    next_seq: u64,
    finished: bool,
}

#[derive(Debug, Default)]
struct Control {
    /// Followers attached now.
    attached: usize,
    /// Attachments so far, so that one that came and went between two looks is still seen.
    attaches: u64,
    cancelled: bool,
}

impl InProcessLog {
    pub fn new(config: &ResumeConfig) -> Self {
        Self::with_elsewhere(config, None)
    }

    /// The log of a shared engine, which `elsewhere` tells of other relays.
    pub(super) fn with_elsewhere(
        config: &ResumeConfig,
        elsewhere: Option<Arc<dyn Elsewhere>>,
    ) -> Self {
        Self(Arc::new(Shared {
            grace: config.grace(),
            keep: config.keep(),
            bounds: bounds(config),
            max_streams: config.max_streams,
            streams: Mutex::default(),
            elsewhere,
        }))
    }

    pub(super) fn downgrade(&self) -> WeakLog {
        WeakLog(Arc::downgrade(&self.0))
    }

    /// Whether the stream `id` is held here (whoever its owner).
    pub(super) fn holds(&self, id: &str) -> bool {
        self.0.streams().by_id.contains_key(id)
    }

    /// Opens a stream with this engine's own writer (see [`ReplayLog::open`]).
    pub(super) fn open_here(&self, owner: Owner) -> Option<(Opened, Writer)> {
        let shared = &self.0;
        let entry = Arc::new(Entry {
            owner,
            log: watch::Sender::new(Log { next_seq: 1, ..Log::default() }),
            control: watch::Sender::new(Control::default()),
        });
        let id = format!("cs_{:032x}", rand::random::<u128>());
        {
            let mut streams = shared.streams();
            if streams.by_id.len() >= shared.max_streams {
                // Room is made by forgetting the stream that ended first; running ones are kept.
                let (_, oldest) = streams.ended.pop_front()?;
                streams.by_id.remove(&oldest);
            }
            streams.by_id.insert(id.clone(), Arc::clone(&entry));
        }
        let frames = follow(Arc::clone(&entry), 0, shared.bounds);
        let elsewhere = shared.elsewhere.clone().map(|e| (e, id.clone()));
        let stop = Box::pin(stop_signal(entry.control.subscribe(), shared.grace, elsewhere));
        let writer = Writer { shared: Arc::clone(shared), id: id.clone(), entry };
        let opened = Opened { id, writer: Box::new(NoWriter), stop, frames };
        Some((opened, writer))
    }
}

/// The events of a stream after `after` that its log still holds, and whether it has ended.
fn snapshot(entry: &Entry, after: u64) -> (Vec<Frame>, bool) {
    let log = entry.log.borrow();
    let frames = log.frames.iter().filter(|frame| frame.seq > after).cloned().collect();
    (frames, log.finished)
}

impl WeakLog {
    /// The stream `id` if it is held here: its owner, its events after `after` that are still
    /// held, and whether it has ended.
    pub(super) fn snapshot(&self, id: &str, after: u64) -> Option<(Owner, Vec<Frame>, bool)> {
        let shared = self.0.upgrade()?;
        let entry = shared.streams().by_id.get(id).cloned()?;
        let (frames, finished) = snapshot(&entry, after);
        Some((entry.owner.clone(), frames, finished))
    }

    /// Stops the stream `id` if it is produced here, for whoever asked through another relay
    /// (which checked that they own it).
    pub(super) fn cancel_here(&self, id: &str) {
        let Some(shared) = self.0.upgrade() else { return };
        let entry = shared.streams().by_id.get(id).cloned();
        if let Some(entry) = entry {
            entry.control.send_modify(|control| control.cancelled = true);
        }
    }
}

pub(super) fn bounds(config: &ResumeConfig) -> Bounds {
    Bounds { max_events: config.max_events, max_bytes: config.max_bytes }
}

/// Stands in [`Opened::writer`] until [`InProcessLog::open_here`]'s caller puts its own.
#[derive(Debug)]
struct NoWriter;

impl StreamWriter for NoWriter {
    fn append(&mut self, _: FrameKind, _: String) {}
    fn finish(&mut self) {}
}

impl Shared {
    /// The map, with the streams whose time after their end is up forgotten.
    fn streams(&self) -> MutexGuard<'_, Streams> {
        let mut streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        while let Some((ended, _)) = streams.ended.front()
            && *ended + self.keep <= now
        {
            if let Some((_, id)) = streams.ended.pop_front() {
                streams.by_id.remove(&id);
            }
        }
        streams
    }

    /// The stream `id`, if `owner` started it.
    fn entry(&self, id: &str, owner: &Owner) -> Result<Arc<Entry>, StreamNotFound> {
        let entry = self.streams().by_id.get(id).cloned().ok_or(StreamNotFound)?;
        if entry.owner != *owner {
            return Err(StreamNotFound);
        }
        Ok(entry)
    }
}

#[async_trait]
impl ReplayLog for InProcessLog {
    async fn open(&self, owner: Owner) -> Option<Opened> {
        let (opened, writer) = self.open_here(owner)?;
        Some(Opened { writer: Box::new(writer), ..opened })
    }

    async fn follow(&self, id: &str, owner: &Owner, after: u64) -> Result<Frames, StreamNotFound> {
        let entry = self.0.entry(id, owner)?;
        Ok(follow(entry, after, self.0.bounds))
    }

    async fn cancel(&self, id: &str, owner: &Owner) -> Result<(), StreamNotFound> {
        let entry = self.0.entry(id, owner)?;
        let mut log = entry.log.subscribe();
        entry.control.send_modify(|control| control.cancelled = true);
        // The producer stops at its next poll; a finished log is also what a dropped writer
        // leaves, so this never waits for ever.
        let _ = log.wait_for(|log| log.finished).await;
        Ok(())
    }
}

/// Resolves when the stream is cancelled, or when nobody has been attached for `grace`, here
/// or (asking `elsewhere`) through another relay.
async fn stop_signal(
    mut control: watch::Receiver<Control>,
    grace: Duration,
    elsewhere: Option<(Arc<dyn Elsewhere>, String)>,
) -> Stop {
    loop {
        let attaches = match control.wait_for(|c| c.cancelled || c.attached == 0).await {
            Ok(c) if c.cancelled => return Stop::Cancelled,
            Ok(c) => c.attaches,
            // The entry is gone: nothing can attach or cancel any more.
            Err(_) => return Stop::Abandoned,
        };
        let mut wait = grace;
        loop {
            let back = control.wait_for(|c| c.cancelled || c.attaches != attaches);
            match tokio::time::timeout(wait, back).await {
                Ok(Err(_)) => return Stop::Abandoned,
                Ok(Ok(c)) if c.cancelled => return Stop::Cancelled,
                // Someone came back (and may have left again): the grace period starts over.
                Ok(Ok(_)) => break,
                Err(_) => {}
            }
            let Some((elsewhere, id)) = &elsewhere else { return Stop::Abandoned };
            match elsewhere.check(id).await {
                Remote::Followed(left) => wait = left.max(Duration::from_millis(1)),
                Remote::Cancelled => return Stop::Cancelled,
                Remote::Alone => return Stop::Abandoned,
            }
        }
    }
}

/// The producer's end of an [`Entry`].
#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    id: String,
    entry: Arc<Entry>,
}

impl Writer {
    /// The events after `after` that the log still holds, and whether it has ended.
    pub(super) fn snapshot(&self, after: u64) -> (Vec<Frame>, bool) {
        snapshot(&self.entry, after)
    }

    /// Appends `events` in order, in one change of the log (one wake-up of its followers).
    fn push(&mut self, events: impl Iterator<Item = (FrameKind, String)>) {
        let bounds = self.shared.bounds;
        self.entry.log.send_modify(|log| {
            for (kind, data) in events {
                let frame = Frame { seq: log.next_seq, kind, data: Arc::from(data) };
                log.next_seq += 1;
                log.bytes += frame.data.len();
                log.frames.push_back(frame);
            }
            // The newest event is always kept, however large.
            while log.frames.len() > 1
                && (log.frames.len() > bounds.max_events || log.bytes > bounds.max_bytes)
            {
                if let Some(dropped) = log.frames.pop_front() {
                    log.bytes -= dropped.data.len();
                }
            }
        });
    }
}

impl StreamWriter for Writer {
    fn append(&mut self, kind: FrameKind, data: String) {
        self.push(std::iter::once((kind, data)));
    }

    fn append_all(&mut self, batch: &mut Vec<(FrameKind, String)>) {
        if !batch.is_empty() {
            self.push(batch.drain(..));
        }
    }

    fn finish(&mut self) {
        let mut finished_now = false;
        self.entry.log.send_if_modified(|log| {
            finished_now = !log.finished;
            log.finished = true;
            finished_now
        });
        if finished_now {
            self.shared.streams().ended.push_back((Instant::now(), self.id.clone()));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One follower's place in a stream.
struct Following {
    entry: Arc<Entry>,
    log: watch::Receiver<Log>,
    /// The last sequence number handed out (or asked to start after).
    after: u64,
    done: bool,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.entry.control.send_modify(|control| control.attached -= 1);
    }
}

/// The events of `entry` after `after`, as they come (see [`Frames`]).
fn follow(entry: Arc<Entry>, after: u64, bounds: Bounds) -> Frames {
    entry.control.send_modify(|control| {
        control.attached += 1;
        control.attaches += 1;
    });
    let log = entry.log.subscribe();
    let following = Following { entry, log, after, done: false };
    Box::pin(stream::unfold(following, move |mut f| async move {
        while !f.done {
            let frames = f.next(bounds);
            if !frames.is_empty() {
                return Some((frames, f));
            }
            if !f.done && f.log.changed().await.is_err() {
                f.done = true;
            }
        }
        None
    }))
}

impl Following {
    /// Every event after `after` that the log holds yet (empty if none); notes when there will
    /// be no other.
    fn next(&mut self, bounds: Bounds) -> Vec<Frame> {
        let log = self.log.borrow_and_update();
        let first = log.frames.front().map_or(log.next_seq, |frame| frame.seq);
        if self.after + 1 < first {
            self.done = true;
            return vec![truncated(self.after, bounds)];
        }
        let index = usize::try_from(self.after + 1 - first).unwrap_or(usize::MAX);
        let frames: Vec<Frame> = log.frames.range(index.min(log.frames.len())..).cloned().collect();
        if let Some(last) = frames.last() {
            self.after = last.seq;
        }
        self.done = log.finished;
        frames
    }
}

/// The notice for a follower whose next event is no longer held.
pub(super) fn truncated(after: u64, bounds: Bounds) -> Frame {
    let message = format!(
        "the events after {after} are no longer held (a stream keeps its last {} events and {} \
         bytes); the answer cannot be resumed from there",
        bounds.max_events, bounds.max_bytes
    );
    let envelope = ErrorEnvelope::new("invalid_request_error", "stream_truncated", message);
    let data = serde_json::to_string(&envelope).unwrap_or_default();
    Frame { seq: 0, kind: FrameKind::Error, data: Arc::from(data) }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn config() -> ResumeConfig {
        ResumeConfig { grace_ms: 60_000, max_events: 16, max_bytes: 4_096, ..Default::default() }
    }

    fn owner(visitor: &str) -> Owner {
        Owner::Site {
            site: "site_a".into(),
            origin: Some("https://shop.example".into()),
            visitor: visitor.into(),
        }
    }

    async fn collect(frames: Frames) -> Vec<(u64, String)> {
        let batches: Vec<Vec<Frame>> = frames.collect().await;
        batches.into_iter().flatten().map(|frame| (frame.seq, frame.data.to_string())).collect()
    }

    fn data(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
        seqs.map(|seq| (seq, format!("e{seq}"))).collect()
    }

    #[tokio::test]
    async fn followers_get_every_event_after_their_position_once() {
        let log = InProcessLog::new(&config());
        let Opened { id, mut writer, frames, .. } = log.open(owner("v")).await.unwrap();
        for seq in 1..=3 {
            writer.append(FrameKind::Data, format!("e{seq}"));
        }
        let late = log.follow(&id, &owner("v"), 2).await.unwrap();
        writer.append(FrameKind::Data, "e4".into());
        writer.finish();
        assert_eq!(collect(frames).await, data(1..=4));
        assert_eq!(collect(late).await, data(3..=4));
        // After its end it can still be read, from anywhere.
        let again = log.follow(&id, &owner("v"), 4).await.unwrap();
        assert_eq!(collect(again).await, []);
    }

    #[tokio::test]
    async fn a_follower_takes_every_event_appended_since_it_last_looked_in_one_batch() {
        let log = InProcessLog::new(&config());
        let Opened { mut writer, mut frames, .. } = log.open(owner("v")).await.unwrap();
        writer.append(FrameKind::Data, "e1".into());
        let mut batch = vec![(FrameKind::Data, "e2".into()), (FrameKind::Error, "e3".into())];
        writer.append_all(&mut batch);
        assert!(batch.is_empty());
        let seqs = |frames: Vec<Frame>| frames.iter().map(|f| f.seq).collect::<Vec<_>>();
        assert_eq!(seqs(frames.next().await.unwrap()), [1, 2, 3]);
        writer.append(FrameKind::Data, "e4".into());
        writer.finish();
        assert_eq!(seqs(frames.next().await.unwrap()), [4]);
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn another_owner_or_an_unknown_id_finds_nothing() {
        let log = InProcessLog::new(&config());
        let opened = log.open(owner("v")).await.unwrap();
        assert!(log.follow(&opened.id, &owner("w"), 0).await.is_err());
        assert!(log.cancel(&opened.id, &owner("w")).await.is_err());
        assert!(log.follow("cs_0", &owner("v"), 0).await.is_err());
        assert!(log.follow(&opened.id, &owner("v"), 0).await.is_ok());
    }

    #[tokio::test]
    async fn beyond_its_bounds_the_log_drops_its_oldest_events() {
        let log = InProcessLog::new(&config());
        let Opened { id, mut writer, frames, .. } = log.open(owner("v")).await.unwrap();
        drop(frames);
        for seq in 1..=20 {
            writer.append(FrameKind::Data, format!("e{seq}"));
        }
        writer.finish();
        // 16 events are kept: 5 to 20.
        let kept = log.follow(&id, &owner("v"), 4).await.unwrap();
        assert_eq!(collect(kept).await, data(5..=20));
        let lost = collect(log.follow(&id, &owner("v"), 3).await.unwrap()).await;
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, 0);
        assert!(lost[0].1.contains("stream_truncated"), "{lost:?}");
        // Bytes too: one large event pushes the small ones out, and is itself kept.
        let Opened { id, mut writer, .. } = log.open(owner("v")).await.unwrap();
        writer.append(FrameKind::Data, "small".into());
        writer.append(FrameKind::Data, "x".repeat(5_000));
        writer.finish();
        let kept = collect(log.follow(&id, &owner("v"), 1).await.unwrap()).await;
        assert_eq!(kept.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [2]);
    }

    #[tokio::test]
    async fn when_full_the_stream_that_ended_first_is_forgotten_and_running_ones_never_are() {
        let log = InProcessLog::new(&ResumeConfig { max_streams: 2, ..config() });
        let mut first = log.open(owner("v")).await.unwrap();
        let second = log.open(owner("v")).await.unwrap();
        assert!(log.open(owner("v")).await.is_none(), "both are running");
        first.writer.finish();
        let third = log.open(owner("v")).await.unwrap();
        assert!(log.follow(&first.id, &owner("v"), 0).await.is_err());
        assert!(log.follow(&second.id, &owner("v"), 0).await.is_ok());
        assert!(log.follow(&third.id, &owner("v"), 0).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_stream_is_forgotten_after_keep_ms() {
        let log = InProcessLog::new(&ResumeConfig { keep_ms: 1_000, ..config() });
        let Opened { id, mut writer, .. } = log.open(owner("v")).await.unwrap();
        writer.finish();
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(log.follow(&id, &owner("v"), 0).await.is_ok());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(log.follow(&id, &owner("v"), 0).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_producer_stops_after_the_grace_period_without_followers() {
        let log = InProcessLog::new(&ResumeConfig { grace_ms: 1_000, ..config() });
        let Opened { id, writer, mut stop, frames } = log.open(owner("v")).await.unwrap();
        drop(frames);
        tokio::time::advance(Duration::from_millis(600)).await;
        // Someone comes back and leaves again: the grace period starts over.
        drop(log.follow(&id, &owner("v"), 0).await.unwrap());
        let stopped = tokio::time::timeout(Duration::from_millis(900), &mut stop).await;
        assert!(stopped.is_err(), "stopped before the grace period since the last follower");
        assert_eq!(stop.await, Stop::Abandoned);
        drop(writer);
    }

    #[tokio::test]
    async fn cancel_stops_the_producer_and_returns_once_the_log_is_finished() {
        let log = InProcessLog::new(&config());
        let Opened { id, mut writer, stop, frames } = log.open(owner("v")).await.unwrap();
        let producer = tokio::spawn(async move {
            let stop = stop.await;
            writer.append(FrameKind::Error, stop.envelope());
            writer.finish();
            stop
        });
        log.cancel(&id, &owner("v")).await.unwrap();
        assert_eq!(producer.await.unwrap(), Stop::Cancelled);
        let events = collect(frames).await;
        assert_eq!(events.len(), 1);
        assert!(events[0].1.contains("stream_cancelled"));
        // Cancelling an ended stream is no error.
        log.cancel(&id, &owner("v")).await.unwrap();
    }
}
