//! What every network provider does the same way: sending the request and mapping the client's
//! failures to [`UpstreamError`]s, reading an SSE body event by event under a size cap, reading
//! `Retry-After`, and logging an upstream's error body with the key scrubbed (never forwarding
//! it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confab_protocol::sse::{SseEvent, SseParser};

use crate::http1::{self, ReadAllError};
use crate::{Call, Secret, SettingsError, TimeoutKind, UpstreamError};

/// How much of an upstream's error body is logged (never forwarded).
const ERROR_BODY_LOG_LIMIT: usize = 2048;
/// How much of an upstream's error body is read: more than is logged, so that a key echoed
/// across the cut is still scrubbed, and so that a provider's error object can be read whole.
const ERROR_BODY_READ_LIMIT: usize = 2 * ERROR_BODY_LOG_LIMIT;
/// How long an error body is waited for.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// The largest whole answer read from an upstream: far above what any `max_tokens` allows, low
/// enough that a broken upstream cannot make the relay hold an unbounded body.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// How long an idle upstream connection is kept for the next call.
pub(crate) const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// The longest event read from an upstream (a chunk is a few hundred bytes).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Checks that a key can be sent as a header value: visible ASCII, spaces and tabs. A key with
/// anything else (a line break above all) would change the request itself.
pub(crate) fn check_header_safe(key: &Secret) -> Result<(), SettingsError> {
    if key.expose().bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(SettingsError {
            field: "api_key_env",
            problem: "the key contains characters not allowed in an HTTP header".into(),
        })
    }
}

/// Sends `body` (JSON) to `path` as a `POST`, with the call's `X-Request-Id`, `accept`, and the
/// provider's key header if it has one, and returns the response once its head has arrived
/// (any status), with the client's failures in the relay's terms. `call.sent` is marked once
/// the request is written.
pub(crate) async fn post_json(
    client: &Arc<http1::Client>,
    path: &str,
    body: &[u8],
    accept: &'static str,
    key_header: Option<(&'static str, &Secret)>,
    call: Call<'_>,
) -> Result<http1::Response, UpstreamError> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(4);
    if let Some(id) = call.request_id {
        headers.push(("X-Request-Id", id.as_bytes()));
    }
    headers.push(("Content-Type", b"application/json"));
    headers.push(("Accept", accept.as_bytes()));
    if let Some((name, key)) = key_header {
        headers.push((name, key.expose().as_bytes()));
    }
    let request = http1::Request { path, headers: &headers, body };
    client.post_marking_sent(&request, call.sent).await.map_err(|error| match error {
        http1::Error::Connect(_) => UpstreamError::Connect,
        http1::Error::ConnectTimeout(after) => {
            UpstreamError::Timeout { kind: TimeoutKind::Connect, after }
        }
        // Connected, then the connection failed before the response head.
        other => read_error(other),
    })
}

/// A whole answer's body, refused past [`MAX_ANSWER_BYTES`].
pub(crate) async fn read_answer(body: &mut http1::Body) -> Result<Bytes, UpstreamError> {
    body.read_all(MAX_ANSWER_BYTES).await.map_err(|error| match error {
        ReadAllError::TooLarge => {
            UpstreamError::Protocol(format!("answer larger than {MAX_ANSWER_BYTES} bytes"))
        }
        ReadAllError::Read(error) => read_error(error),
    })
}

/// A body read failure as the relay reports it.
pub(crate) fn read_error(error: http1::Error) -> UpstreamError {
    match error {
        http1::Error::Invalid(problem) => UpstreamError::Protocol(problem),
        _ => UpstreamError::Dropped,
    }
}

/// The events of an SSE body, in order, each as soon as its blank line has arrived; an event
/// left unfinished at the end is dropped, as the SSE rules say.
pub(crate) struct SseBody {
    body: http1::Body,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    /// Bytes read since the last complete event.
    unfinished: usize,
}

impl SseBody {
    pub(crate) fn new(body: http1::Body) -> Self {
        Self { body, parser: SseParser::default(), ready: VecDeque::new(), unfinished: 0 }
    }

    /// The next event, `None` at the end of the body, or the read error that ends it.
    pub(crate) async fn next(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            match self.body.read().await {
                Ok(Some(bytes)) => {
                    let ready = &mut self.ready;
                    self.parser.feed(&bytes, |event| ready.push_back(event));
                    // Bytes that have made no event yet are held by the parser: an upstream
                    // that sends an endless line must not grow them without end.
                    self.unfinished =
                        if self.ready.is_empty() { self.unfinished + bytes.len() } else { 0 };
                    if self.unfinished > MAX_EVENT_BYTES {
                        let problem = format!("an event longer than {MAX_EVENT_BYTES} bytes");
                        return Some(Err(UpstreamError::Protocol(problem)));
                    }
                }
                Ok(None) => return None,
                Err(error) => return Some(Err(read_error(error))),
            }
        }
    }

    /// Reads what is left of the body in the background, for at most `limit`, so that its
    /// connection serves the next call (see [`http1::Body::finish_in_background`]).
    pub(crate) fn finish_in_background(self, limit: Duration) {
        self.body.finish_in_background(limit);
    }
}

/// `Retry-After` as seconds, from either of its forms (delta-seconds or an HTTP date).
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// Reads the start of an upstream error body (bounded in size and time), logs it for the
/// operator with the secret key scrubbed (providers echo parts of a rejected key), and returns
/// what it read, scrubbed, for the provider to classify. It is never sent to a client.
pub(crate) async fn log_error_body(
    upstream: &str,
    secret: Option<&Secret>,
    status: u16,
    mut response: http1::Body,
) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(piece)) = response.read().await {
            body.extend_from_slice(&piece);
            if body.len() >= ERROR_BODY_READ_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_WAIT, read).await;
    log_error_text(upstream, secret, status, &body)
}

/// Logs an upstream's error text (a body, or an error event inside a stream) with the secret
/// key scrubbed and cut to length; returns it scrubbed, uncut.
pub(crate) fn log_error_text(
    upstream: &str,
    secret: Option<&Secret>,
    status: u16,
    raw: &[u8],
) -> String {
    // Redacted before it is cut to length, so that a key echoed across the cut is still found.
    let mut text = String::from_utf8_lossy(raw).into_owned();
    if let Some(secret) = secret.filter(|secret| !secret.expose().is_empty()) {
        text = text.replace(secret.expose(), "[redacted]");
    }
    let mut end = text.len().min(ERROR_BODY_LOG_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    tracing::warn!(%upstream, status, body = %&text[..end], "upstream error body");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_both_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(7));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let seconds = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        assert!((58..=61).contains(&seconds), "{seconds}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn an_error_text_comes_back_scrubbed_of_the_key() {
        let secret = Secret::new("sk-secret");
        let text = log_error_text("up", Some(&secret), 401, b"{\"error\":\"bad key sk-secret\"}");
        assert_eq!(text, "{\"error\":\"bad key [redacted]\"}");
    }

    #[test]
    fn a_key_that_would_break_the_header_is_refused() {
        assert!(check_header_safe(&Secret::new("AIza-ok key\t")).is_ok());
        let error = check_header_safe(&Secret::new("AIza\r\nX-Evil: 1")).unwrap_err();
        assert_eq!(error.field, "api_key_env");
    }
}
