//! The relay's SSE responses, written by hand: each batch of events (every event one read of the
//! upstream delivered, or every event a follower finds in a replay log at once) becomes one
//! buffer and one body frame, where axum's `Sse` made an `Event` (with a buffer of its own), a
//! body frame and a chunked-encoding header per event. The bytes a client reads are the ones
//! `Sse` wrote, event for event (the tests compare them), and the response keeps its headers
//! and its keep-alive comment after `server.heartbeat_ms` without an event.
//!
//! Batching never holds an event back: a batch is what is ready when the body is polled, and
//! it is sent as soon as it is; nothing waits for a next event to join it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::resume::FrameKind;

/// The keep-alive: an empty comment, as axum's `KeepAlive` sends it.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// Appends one event to `body` as axum's `Event` writes it: `event: error` for an error, then
/// `id: {seq}` when `seq` is above 0, then the data, one `data: ` line per line of it (split
/// after each CR or LF, as `Event::data` splits it), then the blank line.
pub fn write_event(body: &mut BytesMut, kind: FrameKind, seq: u64, data: &str) {
    body.reserve(data.len() + 40);
    if kind == FrameKind::Error {
        body.put_slice(b"event: error\n");
    }
    if seq > 0 {
        body.put_slice(b"id: ");
        body.put_slice(decimal(seq, &mut [0; 20]));
        body.put_u8(b'\n');
    }
    let data = data.as_bytes();
    if !data.is_empty() {
        body.put_slice(b"data: ");
        let mut start = 0;
        for (at, byte) in data.iter().enumerate() {
            if matches!(byte, b'\n' | b'\r') {
                body.put_slice(&data[start..=at]);
                body.put_slice(b"data: ");
                start = at + 1;
            }
        }
        body.put_slice(&data[start..]);
        body.put_u8(b'\n');
    }
    body.put_u8(b'\n');
}

/// `n` in decimal, written into `digits` (no allocation: this is done for every event).
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[start..]
}

/// An SSE response whose body is `batches`, each one body frame, with a keep-alive comment
/// after `heartbeat` without one; `Content-Type: text/event-stream` and
/// `Cache-Control: no-cache`, as axum's `Sse` sets them.
pub fn response(
    batches: impl Stream<Item = Bytes> + Send + 'static,
    heartbeat: Duration,
) -> Response {
    let body = Body::from_stream(KeepAlive::new(Box::pin(batches), heartbeat));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `batches` with a keep-alive comment whenever `every` has passed since the last frame. The
/// timer is moved only when it fires (a batch just notes the time), so a busy stream costs it
/// nothing per batch.
struct KeepAlive<S> {
    batches: S,
    every: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the last frame was sent.
    last: Instant,
}

impl<S> KeepAlive<S> {
    fn new(batches: S, every: Duration) -> Self {
        let now = Instant::now();
        Self { batches, every, timer: Box::pin(tokio::time::sleep_until(now + every)), last: now }
    }
}

impl<S: Stream<Item = Bytes> + Unpin> Stream for KeepAlive<S> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.batches).poll_next(cx) {
            Poll::Ready(Some(batch)) => {
                this.last = Instant::now();
                return Poll::Ready(Some(Ok(batch)));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            let due = this.last + this.every;
            if due > now {
                this.timer.as_mut().reset(due);
                continue;
            }
            this.last = now;
            this.timer.as_mut().reset(now + this.every);
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::response::sse::Event;
    use futures_util::{StreamExt, stream};

    use super::*;

    /// What axum's `Sse` wrote for the same event (see `http::streams` before this module).
    fn axum_event(kind: FrameKind, seq: u64, data: &str) -> Vec<u8> {
        let event = match kind {
            FrameKind::Data => Event::default(),
            FrameKind::Error => Event::default().event("error"),
        };
        let event = if seq > 0 { event.id(seq.to_string()) } else { event };
        let event = event.data(data);
        // `Event` writes its bytes only into a response body: read one back.
        let body = axum::response::sse::Sse::new(stream::iter([Ok::<_, Infallible>(event)]));
        let response = axum::response::IntoResponse::into_response(body);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap().to_vec()
    }

    #[test]
    fn events_are_written_byte_for_byte_as_axum_wrote_them() {
        let cases = [
            (FrameKind::Data, 0, r#"{"choices":[{"delta":{"content":"é"}}]}"#),
            (FrameKind::Data, 7, "[DONE]"),
            (FrameKind::Error, 0, r#"{"error":{"message":"m"}}"#),
            (FrameKind::Error, 12_345_678_901, "x"),
            (FrameKind::Data, 1, "two\nlines\r\nand\rmore\n"),
            (FrameKind::Data, 3, ""),
            (FrameKind::Data, u64::MAX, " leading space"),
        ];
        for (kind, seq, data) in cases {
            let mut body = BytesMut::new();
            write_event(&mut body, kind, seq, data);
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&axum_event(kind, seq, data)),
                "{kind:?} {seq} {data:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_comes_after_the_interval_without_a_frame_and_only_then() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let batches = Box::pin(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        }));
        let mut body = KeepAlive::new(batches, Duration::from_secs(15));
        tokio::time::advance(Duration::from_secs(10)).await;
        tx.send(Bytes::from_static(b"data: a\n\n")).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "data: a\n\n");
        // 10 s after the event: nothing yet; 15 s after it: the comment.
        let next = tokio::time::timeout(Duration::from_secs(10), body.next()).await;
        assert!(next.is_err(), "a keep-alive 10 s after an event: {next:?}");
        let started = Instant::now();
        assert_eq!(body.next().await.unwrap().unwrap(), ":\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(tx);
        assert!(body.next().await.is_none());
    }
}
