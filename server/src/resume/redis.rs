//! [`RedisLog`]: replay logs shared by every relay on one Redis, so that a client whose
//! connection dropped may reattach through any of them.
//!
//! A stream is produced on one relay, which keeps it in its own [`InProcessLog`] for the clients
//! that follow it there (the one that asked, above all: nothing on its path waits for Redis).
//! Only when a client asks for it through another relay is it mirrored to Redis: that relay
//! publishes the stream's id on `<prefix>:streams:want`, and the producing relay writes what its
//! log holds, then each event as it comes, in order, from a task of its own (so an answer nobody
//! reattaches elsewhere, nearly every one, costs Redis nothing):
//!
//! - `<prefix>:stream:<id>`, a Redis stream whose entry `0-<seq>` is the event `seq` (fields `k`,
//!   its kind, and `d`, its data), trimmed to `resume.max_events` and `resume.max_bytes` as the
//!   in-process log is, and ended by an entry of kind `end`;
//! - `<prefix>:stream:<id>:meta`, a hash: `owner` (who may follow it), `end` (the end entry's
//!   sequence number, once it has ended) and `lost` (set when the mirror could not keep up);
//! - both expire `resume.keep_ms` after the end, or `keep_ms + grace_ms` after the last event
//!   while it runs, so that a relay that dies leaves nothing behind for long.
//!
//! A client that reattaches through another relay waits (up to [`WANT_WAIT`]) for that stream to
//! appear, reads it (`XREAD BLOCK`, on a connection of its own) and says it is there by setting `<prefix>:stream:<id>:seen`, which
//! expires `grace_ms` after its last refresh: the producing relay asks for it ([`Elsewhere`])
//! before it stops a stream nobody follows through it. A cancellation through another relay
//! sets `<prefix>:stream:<id>:cancel` and is published on `<prefix>:streams:cancel`; every relay
//! listens to both channels, and the key is what the producer finds if the message was lost.
//!
//! When Redis is unavailable, streams are still produced and followed through the relay that
//! produces them; only reattaching through another relay fails (the stream is not found, or
//! ends with a `stream_truncated` error where the mirror fell behind).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::ResumeConfig;
use super::memory::{self, Bounds, Elsewhere, Remote, WeakLog};
use super::{
    Frame, FrameKind, Frames, InProcessLog, Opened, Owner, ReplayLog, StreamNotFound, StreamWriter,
};

/// How long a reattached client's `XREAD` waits for new events before it looks whether the
/// stream is still there.
const BLOCK: Duration = Duration::from_secs(1);
/// Events read at once by a client that reattached.
const READ_COUNT: usize = 512;
/// How long `cancel` through another relay waits for the producer to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// How long a relay that does not hold a stream waits for the one that does to mirror it.
const WANT_WAIT: Duration = Duration::from_secs(2);

/// Replay logs mirrored to Redis when they are wanted elsewhere.
#[derive(Debug, Clone)]
pub struct RedisLog {
    local: InProcessLog,
    remote: Arc<RemoteStreams>,
    mirrors: Mirrors,
    _listener: Arc<AbortOnDrop>,
}

/// The streams being produced here, with their mirror (started or not), by id.
#[derive(Debug, Clone, Default)]
struct Mirrors(Arc<Mutex<HashMap<String, Arc<Mirror>>>>);

impl Mirrors {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Mirror>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One stream's mirror to Redis: not started until another relay wants the stream.
#[derive(Debug, Default)]
struct Mirror {
    /// Started: the writer hands it each new event. Read on every event, so an atomic.
    active: AtomicBool,
    state: Mutex<MirrorState>,
}

#[derive(Debug, Default)]
struct MirrorState {
    /// The mirror task's queue; `None` before it starts or once it is given up.
    tx: Option<mpsc::Sender<Mirrored>>,
    /// The last event queued.
    sent: u64,
    ended: bool,
}

impl Mirror {
    fn state(&self) -> MutexGuard<'_, MirrorState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the mirror, with what the log holds now (`snapshot`), unless it has started.
    fn start(
        &self,
        remote: &Arc<RemoteStreams>,
        id: &str,
        owner: &Owner,
        snapshot: impl FnOnce() -> (Vec<Frame>, bool),
    ) {
        let mut state = self.state();
        if state.tx.is_some() || state.ended {
            return;
        }
        // Room for every event the log keeps: past that, the mirror is too far behind to be
        // of use, and is given up for this stream.
        let (tx, rx) = mpsc::channel(remote.bounds.max_events + 1);
        tokio::spawn(mirror(Arc::clone(remote), id.to_owned(), owner_json(owner), rx));
        state.tx = Some(tx);
        // Active before the snapshot: an event the producer appends from here on is either in
        // the snapshot or seen by its `catch_up`.
        self.active.store(true, Ordering::SeqCst);
        let (frames, finished) = snapshot();
        state.queue(frames, finished);
    }

    /// Queues what the producer's log holds past what was queued (`snapshot`).
    fn catch_up(&self, snapshot: impl FnOnce(u64) -> (Vec<Frame>, bool)) {
        let mut state = self.state();
        if state.tx.is_none() {
            return;
        }
        let (frames, finished) = snapshot(state.sent);
        state.queue(frames, finished);
    }
}

impl MirrorState {
    fn queue(&mut self, frames: Vec<Frame>, finished: bool) {
        let Some(tx) = self.tx.take() else { return };
        for frame in frames {
            if frame.seq <= self.sent {
                continue;
            }
            self.sent = frame.seq;
            if tx.try_send(Mirrored::Event(frame)).is_err() {
                // Full (Redis is too slow or gone) or closed (the mirror failed): given up, and
                // the mirror task marks the stream lost.
                return;
            }
        }
        if finished {
            self.ended = true;
            let _ = tx.try_send(Mirrored::End);
            return;
        }
        self.tx = Some(tx);
    }
}

/// The Redis side of the logs: where they are, and how to reach them.
#[derive(Debug)]
struct RemoteStreams {
    client: Client,
    manager: ConnectionManager,
    prefix: String,
    command_timeout: Duration,
    grace: Duration,
    keep: Duration,
    bounds: Bounds,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Redis error of a command, or its time limit.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl RedisLog {
    /// Logs on the Redis at `url`, under `prefix`. The connection is made on first use, so the
    /// relay starts while Redis is down. Must be called inside a Tokio runtime.
    pub fn new(
        config: &ResumeConfig,
        url: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        let remote = Arc::new(RemoteStreams {
            client,
            manager,
            prefix: prefix.to_owned(),
            command_timeout,
            grace: config.grace(),
            keep: config.keep(),
            bounds: memory::bounds(config),
        });
        let local =
            InProcessLog::with_elsewhere(config, Some(Arc::clone(&remote) as Arc<dyn Elsewhere>));
        let mirrors = Mirrors::default();
        let listener =
            tokio::spawn(listen(Arc::clone(&remote), local.downgrade(), mirrors.clone()));
        Ok(Self { local, remote, mirrors, _listener: Arc::new(AbortOnDrop(listener)) })
    }
}

impl RemoteStreams {
    fn key(&self, id: &str) -> String {
        format!("{}:stream:{id}", self.prefix)
    }

    fn meta(&self, id: &str) -> String {
        format!("{}:stream:{id}:meta", self.prefix)
    }

    fn seen(&self, id: &str) -> String {
        format!("{}:stream:{id}:seen", self.prefix)
    }

    fn cancelled(&self, id: &str) -> String {
        format!("{}:stream:{id}:cancel", self.prefix)
    }

    fn cancels(&self) -> String {
        format!("{}:streams:cancel", self.prefix)
    }

    fn wants(&self) -> String {
        format!("{}:streams:want", self.prefix)
    }

    /// Whether `owner` started the stream `id`, asking the relay that produces it to mirror it
    /// first if it is not in Redis yet. `Ok(false)`: not theirs, or nobody has it.
    async fn locate(&self, id: &str, owner: &Owner) -> Result<bool, Failed> {
        let (stored,): (Option<String>,) =
            self.query(redis::pipe().hget(self.meta(id), "owner")).await?;
        let stored = match stored {
            Some(stored) => stored,
            None => {
                self.query::<()>(redis::pipe().publish(self.wants(), id).ignore()).await?;
                let deadline = tokio::time::Instant::now() + WANT_WAIT;
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let (stored,): (Option<String>,) =
                        self.query(redis::pipe().hget(self.meta(id), "owner")).await?;
                    match stored {
                        Some(stored) => break stored,
                        None if tokio::time::Instant::now() >= deadline => return Ok(false),
                        None => {}
                    }
                }
            }
        };
        Ok(stored == owner_json(owner))
    }

    /// Runs `pipe` on the shared connection, within the command time limit.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Failed> {
        let mut manager = self.manager.clone();
        tokio::time::timeout(self.command_timeout, pipe.query_async(&mut manager))
            .await
            .map_err(|_| Failed::Timeout(self.command_timeout))?
            .map_err(Failed::Redis)
    }

    /// Says that a client follows the stream `id` through this relay (for the grace period).
    async fn mark_seen(&self, id: &str) -> Result<(), Failed> {
        let grace = millis(self.grace);
        self.query(redis::pipe().cmd("SET").arg(self.seen(id)).arg(1).arg("PX").arg(grace).ignore())
            .await
    }

    /// A connection of its own for a client's `XREAD BLOCK`, which would hold up every other
    /// command on the shared one.
    async fn blocking_connection(&self) -> Result<MultiplexedConnection, Failed> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(BLOCK + self.command_timeout));
        tokio::time::timeout(
            self.command_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| Failed::Timeout(self.command_timeout))?
        .map_err(Failed::Redis)
    }
}

#[async_trait]
impl Elsewhere for RemoteStreams {
    async fn check(&self, id: &str) -> Remote {
        let mut pipe = redis::pipe();
        pipe.pttl(self.seen(id)).exists(self.cancelled(id));
        match self.query::<(i64, bool)>(&pipe).await {
            Ok((_, true)) => Remote::Cancelled,
            Ok((left, false)) if left > 0 => {
                Remote::Followed(Duration::from_millis(left.unsigned_abs()))
            }
            Ok(_) => Remote::Alone,
            Err(error) => {
                tracing::warn!(%error, "cannot ask Redis whether a stream is followed elsewhere");
                Remote::Alone
            }
        }
    }
}

#[async_trait]
impl ReplayLog for RedisLog {
    async fn open(&self, owner: Owner) -> Option<Opened> {
        let (opened, local) = self.local.open_here(owner)?;
        let mirror = Arc::new(Mirror::default());
        self.mirrors.map().insert(opened.id.clone(), Arc::clone(&mirror));
        let writer = Writer {
            local,
            id: opened.id.clone(),
            mirror,
            mirrors: self.mirrors.clone(),
            finished: false,
        };
        Some(Opened { writer: Box::new(writer), ..opened })
    }

    async fn follow(&self, id: &str, owner: &Owner, after: u64) -> Result<Frames, StreamNotFound> {
        if self.local.holds(id) {
            return self.local.follow(id, owner, after).await;
        }
        let remote = &self.remote;
        match remote.locate(id, owner).await {
            Ok(true) => {}
            Ok(false) => return Err(StreamNotFound),
            Err(error) => {
                tracing::warn!(%error, "cannot look up a stream in Redis");
                return Err(StreamNotFound);
            }
        }
        let connection = remote.blocking_connection().await.map_err(|error| {
            tracing::warn!(%error, "cannot connect to Redis to follow a stream");
            StreamNotFound
        })?;
        Ok(follow_remote(Arc::clone(remote), id.to_owned(), connection, after))
    }

    async fn cancel(&self, id: &str, owner: &Owner) -> Result<(), StreamNotFound> {
        if self.local.holds(id) {
            return self.local.cancel(id, owner).await;
        }
        let remote = &self.remote;
        let unreachable = |error: Failed| {
            tracing::warn!(%error, "cannot cancel a stream through Redis");
            StreamNotFound
        };
        if !remote.locate(id, owner).await.map_err(unreachable)? {
            return Err(StreamNotFound);
        }
        let linger = millis(remote.keep + remote.grace);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(remote.cancelled(id)).arg(1).arg("PX").arg(linger).ignore();
        pipe.publish(remote.cancels(), id).ignore();
        remote.query::<()>(&pipe).await.map_err(unreachable)?;
        // Returns once the producer has stopped: its end is in the log.
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        let meta = remote.meta(id);
        while tokio::time::Instant::now() < deadline {
            let mut pipe = redis::pipe();
            pipe.exists(&meta).hexists(&meta, "end").hexists(&meta, "lost");
            match remote.query::<(bool, bool, bool)>(&pipe).await {
                Ok((true, false, false)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(_) => return Ok(()),
                Err(error) => return Err(unreachable(error)),
            }
        }
        Ok(())
    }
}

/// The producer's end of a stream: the in-process log, and its mirror once it has started.
#[derive(Debug)]
struct Writer {
    local: memory::Writer,
    id: String,
    mirror: Arc<Mirror>,
    mirrors: Mirrors,
    finished: bool,
}

/// What the mirror writes to Redis.
#[derive(Debug)]
enum Mirrored {
    Event(Frame),
    End,
}

impl Writer {
    fn catch_up(&self) {
        if self.mirror.active.load(Ordering::SeqCst) {
            self.mirror.catch_up(|after| self.local.snapshot(after));
        }
    }
}

impl StreamWriter for Writer {
    fn append(&mut self, kind: FrameKind, data: String) {
        self.local.append(kind, data);
        self.catch_up();
    }

    fn append_all(&mut self, batch: &mut Vec<(FrameKind, String)>) {
        self.local.append_all(batch);
        self.catch_up();
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.local.finish();
        self.catch_up();
        // Wanted later, the ended stream is mirrored from the log (see `listen`).
        self.mirrors.map().remove(&self.id);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes the stream `id` to Redis as its events come, each batch of what is queued in one
/// round trip, until its end; marks it lost if a write fails or the queue is given up.
async fn mirror(
    remote: Arc<RemoteStreams>,
    id: String,
    owner: String,
    mut rx: mpsc::Receiver<Mirrored>,
) {
    let (key, meta) = (remote.key(&id), remote.meta(&id));
    let Bounds { max_events, max_bytes } = remote.bounds;
    let running_ttl = millis(remote.keep + remote.grace);
    // The sizes of the events Redis holds, oldest first, to trim it by bytes as the log is.
    let mut held: VecDeque<(u64, usize)> = VecDeque::new();
    let mut bytes = 0;
    let mut last = 0;
    let mut first = true;
    let mut ended = false;
    let mut batch = Vec::new();
    while !ended && rx.recv_many(&mut batch, READ_COUNT).await > 0 {
        let mut pipe = redis::pipe();
        if first {
            pipe.hset(&meta, "owner", &owner).ignore();
            first = false;
        }
        let mut trim_to = None;
        for item in batch.drain(..) {
            match item {
                Mirrored::Event(frame) => {
                    last = frame.seq;
                    let kind = match frame.kind {
                        FrameKind::Data => "d",
                        FrameKind::Error => "e",
                    };
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("MAXLEN")
                        .arg(max_events)
                        .arg(format!("0-{}", frame.seq))
                        .arg("k")
                        .arg(kind)
                        .arg("d")
                        .arg(frame.data.as_bytes())
                        .ignore();
                    held.push_back((frame.seq, frame.data.len()));
                    bytes += frame.data.len();
                    while held.len() > max_events {
                        if let Some((_, size)) = held.pop_front() {
                            bytes -= size;
                        }
                    }
                    // The newest event is always kept, however large.
                    while held.len() > 1 && bytes > max_bytes {
                        if let Some((_, size)) = held.pop_front() {
                            bytes -= size;
                            trim_to = held.front().map(|(seq, _)| *seq);
                        }
                    }
                }
                Mirrored::End => {
                    let end = last + 1;
                    pipe.cmd("XADD").arg(&key).arg(format!("0-{end}")).arg("k").arg("end").ignore();
                    pipe.hset(&meta, "end", end).ignore();
                    ended = true;
                }
            }
        }
        if let Some(seq) = trim_to {
            pipe.cmd("XTRIM").arg(&key).arg("MINID").arg(format!("0-{seq}")).ignore();
        }
        let ttl = if ended { millis(remote.keep) } else { running_ttl };
        pipe.pexpire(&key, ttl).ignore().pexpire(&meta, ttl).ignore();
        if let Err(error) = remote.query::<()>(&pipe).await {
            tracing::warn!(%error, stream = %id, "cannot mirror a stream to Redis: it can be followed through this relay only");
            break;
        }
    }
    if !ended {
        // The writer gave up the queue, or a write failed: whoever follows through another
        // relay is told the rest is missing (if Redis takes this).
        let mut pipe = redis::pipe();
        pipe.hset(&meta, "lost", 1).ignore().pexpire(&meta, millis(remote.keep)).ignore();
        let _ = remote.query::<()>(&pipe).await;
    }
}

/// One reattached client's place in a stream produced through another relay.
struct Following {
    remote: Arc<RemoteStreams>,
    id: String,
    key: String,
    connection: MultiplexedConnection,
    after: u64,
    /// Read but not handed out yet.
    ready: VecDeque<Frame>,
    done: bool,
    _seen: AbortOnDrop,
}

/// The events of the stream `id` after `after`, read from Redis as they come.
fn follow_remote(
    remote: Arc<RemoteStreams>,
    id: String,
    connection: MultiplexedConnection,
    after: u64,
) -> Frames {
    let seen = tokio::spawn(keep_seen(Arc::clone(&remote), id.clone()));
    let key = remote.key(&id);
    let following = Following {
        remote,
        id,
        key,
        connection,
        after,
        ready: VecDeque::new(),
        done: false,
        _seen: AbortOnDrop(seen),
    };
    stream::unfold(following, |mut f| async move {
        loop {
            if !f.ready.is_empty() {
                let frames = f.ready.drain(..).collect();
                return Some((frames, f));
            }
            if f.done {
                return None;
            }
            f.read().await;
        }
    })
    .boxed()
}

/// Refreshes `<prefix>:stream:<id>:seen` while a client follows through this relay.
async fn keep_seen(remote: Arc<RemoteStreams>, id: String) {
    let every = (remote.grace / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if let Err(error) = remote.mark_seen(&id).await {
            tracing::debug!(%error, "cannot tell Redis that a stream is followed");
        }
        tokio::time::sleep(every).await;
    }
}

/// `XREAD`'s reply for one stream: its entries, each an id and its fields and values.
type Entries = Vec<(String, Vec<Vec<u8>>)>;

impl Following {
    /// Reads what follows `after` into `ready`, waiting up to [`BLOCK`] for it; notes the end.
    async fn read(&mut self) {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(millis(BLOCK))
            .arg("STREAMS")
            .arg(&self.key)
            .arg(format!("0-{}", self.after));
        let reply: Result<Option<Vec<(String, Entries)>>, _> =
            xread.query_async(&mut self.connection).await;
        let entries = match reply {
            Ok(Some(mut streams)) => streams.pop().map(|(_, entries)| entries).unwrap_or_default(),
            Ok(None) => return self.check_gone().await,
            Err(error) => {
                tracing::warn!(%error, "lost Redis while following a stream");
                return self.stop_with(lost(self.after));
            }
        };
        for (entry_id, fields) in entries {
            let seq = entry_id.strip_prefix("0-").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            if seq != self.after + 1 {
                // Trimmed away (or not an entry of ours).
                return self.stop_with(memory::truncated(self.after, self.remote.bounds));
            }
            let field = |name: &[u8]| {
                fields.chunks_exact(2).find(|pair| pair[0] == name).map(|pair| pair[1].as_slice())
            };
            let kind = match field(b"k") {
                Some(b"d") => FrameKind::Data,
                Some(b"e") => FrameKind::Error,
                _ => {
                    self.done = true;
                    return;
                }
            };
            let data = String::from_utf8_lossy(field(b"d").unwrap_or_default());
            self.after = seq;
            self.ready.push_back(Frame { seq, kind, data: Arc::from(data) });
        }
    }

    /// Nothing new for [`BLOCK`]: whether the stream ended before `after`, was lost, or is gone.
    async fn check_gone(&mut self) {
        let meta = self.remote.meta(&self.id);
        let mut pipe = redis::pipe();
        pipe.exists(&meta).hget(&meta, "end").hexists(&meta, "lost");
        match self.remote.query::<(bool, Option<u64>, bool)>(&pipe).await {
            Ok((true, None, false)) => {}
            // It ended at or before the client's position: nothing more comes.
            Ok((true, Some(end), _)) if end <= self.after + 1 => self.done = true,
            Ok((true, Some(_), _)) => {}
            Ok(_) => self.stop_with(lost(self.after)),
            Err(error) => {
                tracing::warn!(%error, "lost Redis while following a stream");
                self.stop_with(lost(self.after));
            }
        }
    }

    fn stop_with(&mut self, notice: Frame) {
        self.ready.push_back(notice);
        self.done = true;
    }
}

/// The notice for a client whose next events were not kept where it reattached.
fn lost(after: u64) -> Frame {
    let envelope = confab_protocol::ErrorEnvelope::new(
        "invalid_request_error",
        "stream_truncated",
        format!(
            "the events after {after} could not be kept for other relays; the answer cannot be \
             resumed from there"
        ),
    );
    let data = serde_json::to_string(&envelope).unwrap_or_default();
    Frame { seq: 0, kind: FrameKind::Error, data: Arc::from(data) }
}

/// Answers other relays: mirrors the streams produced here that one of them wants, and stops
/// those cancelled through one of them.
async fn listen(remote: Arc<RemoteStreams>, log: WeakLog, mirrors: Mirrors) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscribe(&remote).await {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(id) = message.get_payload::<String>() else { continue };
                    if message.get_channel_name() == remote.cancels() {
                        log.cancel_here(&id);
                    } else {
                        want(&remote, &log, &mirrors, &id);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot listen to other relays through Redis"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe(remote: &RemoteStreams) -> Result<redis::aio::PubSub, RedisError> {
    let mut pubsub = remote.client.get_async_pubsub().await?;
    pubsub.subscribe(&[remote.cancels(), remote.wants()]).await?;
    Ok(pubsub)
}

/// Another relay wants the stream `id`: mirrors it if it is held here.
fn want(remote: &Arc<RemoteStreams>, log: &WeakLog, mirrors: &Mirrors, id: &str) {
    let running = mirrors.map().get(id).cloned();
    let Some((owner, _, _)) = log.snapshot(id, u64::MAX) else { return };
    // A stream still produced here has its mirror, which its writer then keeps up to date; one
    // that has ended is mirrored whole, once more if it was already.
    let mirror = running.unwrap_or_default();
    mirror.start(remote, id, &owner, || {
        log.snapshot(id, 0).map_or((Vec::new(), true), |(_, frames, finished)| (frames, finished))
    });
}

/// An owner as the log stores it.
fn owner_json(owner: &Owner) -> String {
    serde_json::to_string(owner).unwrap_or_default()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
