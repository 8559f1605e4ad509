//! Resumable streams: a streamed answer that outlives the connection it was asked on.
//!
//! When `resume.grace_ms` is above 0, a streamed answer is produced (`relay::produce`) into a
//! [`ReplayLog`], and every client of it follows that log: the one that asked (the `POST`
//! response, from the first event) and any that reattaches later with
//! `GET /v1/chat/streams/{id}` and `Last-Event-ID` (from the event after that one). Each event
//! of the log has a sequence number, sent as its SSE `id`, consecutive from 1. The producer is
//! driven by the clients that follow the stream through this relay, or by a task of its own
//! once none does ([`Producers`]).
//!
//! The producer runs whether or not anyone follows: once nobody has followed for the grace
//! period it ends the upstream call ([`Stop::Abandoned`]), and `POST .../cancel` ends it at
//! once ([`Stop::Cancelled`]); either way the answer settles as interrupted at what was
//! generated, as a client's disconnect settles it with `grace_ms = 0`.
//!
//! Only the caller that started a stream may follow or cancel it ([`Owner`]): the same site,
//! page origin and visitor, or the same secret key. Anyone else is told the stream does not
//! exist, exactly as for an id that never did.
//!
//! [`ReplayLog`] is the seam for where logs live: [`InProcessLog`] keeps them in this relay's
//! memory; [`RedisLog`] (when `[redis]` is configured) also mirrors them to a Redis stream per
//! answer, with a TTL, so that a client may reattach through another relay.

pub mod config;
mod memory;
mod producers;
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use confab_protocol::ErrorEnvelope;
use futures_util::Stream;

pub use memory::InProcessLog;
pub use producers::{Driver, Producers};
pub use redis::RedisLog;

/// Who may follow or cancel a stream: the caller that started it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Owner {
    /// A page of a site: the site, the page's origin (`None`: it sent none, as native apps may)
    /// and the visitor, hashed as usage records store it.
    Site { site: String, origin: Option<String>, visitor: String },
    /// A server, with a secret key.
    Key { key: String },
}

/// What an event of a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A default-type SSE event: a chunk, the usage chunk, or `[DONE]`.
    Data,
    /// An `event: error`, which ends the stream.
    Error,
}

/// One event of a stream.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its place in the stream, from 1: the SSE `id`. 0 for a notice to one follower that is
    /// not part of the log (it is sent without an `id`).
    pub seq: u64,
    pub kind: FrameKind,
    /// Shared, not copied, by everyone who follows the stream.
    pub data: Arc<str>,
}

/// Why a producer stopped before its answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `POST /v1/chat/streams/{id}/cancel`.
    Cancelled,
    /// Nobody followed the stream for `resume.grace_ms`.
    Abandoned,
}

impl Stop {
    /// The `error` event that ends a stream stopped this way (for whoever reattaches later).
    pub fn envelope(self) -> String {
        let envelope = match self {
            Self::Cancelled => ErrorEnvelope::new(
                "invalid_request_error",
                "stream_cancelled",
                "the answer was cancelled; it is incomplete",
            ),
            Self::Abandoned => ErrorEnvelope::new(
                "timeout_error",
                "stream_abandoned",
                "nobody followed the answer for resume.grace_ms, so it was stopped; it is \
                 incomplete",
            ),
        };
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

/// The events of a stream for one follower: those after the position it asked for, then those
/// appended since, until the stream's last; each item is every event there was to take at
/// once (never empty), so that a follower sends them on together. The follower counts as
/// attached (see [`Stop::Abandoned`]) until this is dropped.
pub type Frames = Pin<Box<dyn Stream<Item = Vec<Frame>> + Send>>;

/// Resolves when the producer must stop (see [`Stop`]).
pub type StopSignal = Pin<Box<dyn Future<Output = Stop> + Send>>;

/// The stream does not exist, or is not the caller's: the two are never told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such stream")]
pub struct StreamNotFound;

/// A new stream, as [`ReplayLog::open`] hands it out.
pub struct Opened {
    /// `cs_` and 32 hex digits of randomness: the `X-Confab-Stream` header.
    pub id: String,
    /// Where the producer appends the answer's events.
    pub writer: Box<dyn StreamWriter>,
    /// What the producer watches to know when to stop early.
    pub stop: StopSignal,
    /// The stream from its first event, for the client that asked (already attached, so that
    /// the grace period does not start before its response does).
    pub frames: Frames,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Where the events of resumable streams are kept, bounded, while they are produced and for
/// `resume.keep_ms` after their end.
#[async_trait]
pub trait ReplayLog: Send + Sync + fmt::Debug + 'static {
    /// Starts the log of a new stream for `owner`. `None` when no more streams may be held (all
    /// `resume.max_streams` are still being produced): the answer is then streamed as with
    /// `grace_ms = 0`, without a log.
    async fn open(&self, owner: Owner) -> Option<Opened>;

    /// The stream `id`, for its owner, from the event after `after` (the client's
    /// `Last-Event-ID`; 0 for all of it). Only events that are no longer held (beyond the
    /// log's bounds) are missing: the follower then gets a `stream_truncated` error event.
    async fn follow(&self, id: &str, owner: &Owner, after: u64) -> Result<Frames, StreamNotFound>;

    /// Stops the stream `id` for its owner, and returns once its producer has stopped (at once
    /// if it had ended already).
    async fn cancel(&self, id: &str, owner: &Owner) -> Result<(), StreamNotFound>;
}

/// The producer's end of one stream's log.
pub trait StreamWriter: Send + fmt::Debug {
    /// Appends the next event. Never waits: it is on the path of every chunk (an engine that
    /// must do I/O queues the event for a writer of its own, in order).
    fn append(&mut self, kind: FrameKind, data: String);

    /// Appends the events of `batch` in order, leaving it empty: the events that arrived
    /// together, which followers then find together (one wake-up for all of them).
    fn append_all(&mut self, batch: &mut Vec<(FrameKind, String)>) {
        for (kind, data) in batch.drain(..) {
            self.append(kind, data);
        }
    }

    /// The stream has ended: followers get what is left and their response ends; the log stays
    /// readable for `resume.keep_ms`. A writer dropped without it finishes the same way.
    fn finish(&mut self);
}
