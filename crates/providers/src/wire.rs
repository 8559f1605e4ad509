//! What every provider that calls an HTTP API shares: the endpoint it posts to, the turn of an
//! error status into an [`UpstreamError`] (the body logged with the key scrubbed, never
//! forwarded), the read of an SSE body under the event size cap, and the read of a whole answer.
//! Each provider only says what its request looks like and what each of its events becomes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confab_protocol::sse::{SseEvent, SseParser};
use futures_util::stream;
use tracing::Instrument;

use crate::http1::{self, ReadAllError};
use crate::{
    Call, EventStream, Secret, Settings, SettingsError, TimeoutKind, UpstreamError, UpstreamEvent,
};

/// How much of an upstream's error body is read, to log it (never to forward it).
const ERROR_BODY_LOG_LIMIT: usize = 2048;
/// The largest whole answer read from an upstream: far above what any `max_tokens` allows, low
/// enough that a broken upstream cannot make the relay hold an unbounded body.
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The longest event read from an upstream (a chunk is a few hundred bytes).
const MAX_EVENT_BYTES: usize = 1 << 20;
/// How long the end of a body is waited for after its last event, to keep its connection.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);
/// How long an idle upstream connection is kept for the next call.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// One URL a provider posts its calls to, and the keep-alive connections to its origin.
pub(crate) struct Endpoint {
    pub url: url::Url,
    /// The URL's path and query, as the request line names it.
    path: String,
    log: Arc<ErrorLog>,
    client: Arc<http1::Client>,
}

/// Where what an upstream says about an error goes: the operator's log, with the upstream's
/// name and its key scrubbed (providers echo parts of a rejected key).
#[derive(Debug)]
pub(crate) struct ErrorLog {
    /// `[[upstreams]] name`.
    name: String,
    api_key: Option<Secret>,
}

impl ErrorLog {
    /// Logs an error an upstream reported inside a 200 answer (an SSE `error` event, an error
    /// object in place of the answer); the client is told only that the provider reported one.
    pub fn reported(&self, text: &str) {
        let text = scrubbed(text, self.api_key.as_ref());
        tracing::warn!(upstream = %self.name, body = %text, "upstream reported an error");
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.log.name)
            .field("url", &self.url.as_str())
            .field("api_key", &self.log.api_key)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint `relative` (e.g. `chat/completions`) under the base URL of `settings`,
    /// which `kind` requires.
    pub fn new(settings: &Settings<'_>, kind: &str, relative: &str) -> Result<Self, SettingsError> {
        let Some(base) = settings.base_url else {
            return Err(invalid("base_url", format!("is required for kind `{kind}`")));
        };
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base.join(relative).map_err(|e| invalid("base_url", e.to_string()))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        if let Some(key) = &settings.api_key {
            header_value(key.expose())?;
        }
        let client = http1::Client::new(&url, settings.connect_timeout, IDLE_CONNECTION_TIMEOUT)
            .map_err(|problem| invalid("base_url", problem))?;
        let log = ErrorLog { name: settings.name.to_owned(), api_key: settings.api_key.clone() };
        Ok(Self { url, path, log: Arc::new(log), client: Arc::new(client) })
    }

    /// `[[upstreams]] name`.
    pub fn name(&self) -> &str {
        &self.log.name
    }

    /// Where errors the upstream reports in its answers are logged.
    pub fn error_log(&self) -> &Arc<ErrorLog> {
        &self.log
    }

    /// Posts the JSON `body`, asking for `accept` (an SSE stream or JSON), with the provider's
    /// own headers `more` (its key, its API version), and returns the answer's body once its
    /// head says 2xx; any other answer is an error (its body is logged, scrubbed, in the
    /// background). The call's request id goes along as `X-Request-Id`.
    pub async fn post(
        &self,
        accept: &[u8],
        more: &[(&str, &[u8])],
        body: &[u8],
        call: Call<'_>,
    ) -> Result<http1::Body, UpstreamError> {
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(3 + more.len());
        if let Some(id) = call.request_id {
            headers.push(("X-Request-Id", id.as_bytes()));
        }
        headers.push(("Content-Type", b"application/json"));
        headers.push(("Accept", accept));
        headers.extend_from_slice(more);
        let request = http1::Request { path: &self.path, headers: &headers, body };
        let response = self.client.post_marking_sent(&request, call.sent).await.map_err(
            |error| match error {
                http1::Error::Connect(_) => UpstreamError::Connect,
                http1::Error::ConnectTimeout(after) => {
                    UpstreamError::Timeout { kind: TimeoutKind::Connect, after }
                }
                // Connected, then the connection failed before the response head.
                other => read_error(other),
            },
        )?;

        if !(200..300).contains(&response.status) {
            let retry_after = response.retry_after.as_deref().and_then(parse_retry_after);
            // The client gets its answer now; the body is read for the log in the background.
            tokio::spawn(
                log_error_body(Arc::clone(&self.log), response.status, response.body)
                    .instrument(tracing::Span::current()),
            );
            return Err(UpstreamError::Status { status: response.status, retry_after });
        }
        Ok(response.body)
    }
}

/// A `[[upstreams]]` setting a provider cannot work with.
pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError { field, problem: problem.into() }
}

/// `value` if it may be sent as an HTTP header value: visible ASCII, spaces and tabs. A key with
/// anything else (a line break above all) would change the request itself.
pub(crate) fn header_value(value: &str) -> Result<&str, SettingsError> {
    if value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(value)
    } else {
        Err(invalid("api_key_env", "the key contains characters not allowed in an HTTP header"))
    }
}

/// Reads a whole answer's body, up to a bound.
pub(crate) async fn read_answer(mut body: http1::Body) -> Result<Bytes, UpstreamError> {
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

/// What a provider makes of the SSE events of its body: each event becomes any number of
/// [`UpstreamEvent`]s (or an error), in order.
pub(crate) trait Translate: Send + 'static {
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>);
}

/// The events of an SSE body, translated, in order, each as soon as its blank line has arrived.
/// An error (translated or from the read) ends the stream with that error, and an event left
/// unfinished at the end is dropped, as the SSE rules say. At [`UpstreamEvent::Done`] the rest
/// of the body (the end of its chunked encoding, usually a moment later) is read in the
/// background, so that the connection serves the next call instead of being closed and opened
/// again, a TLS handshake each time.
pub(crate) fn sse_stream(body: http1::Body, translate: impl Translate) -> EventStream {
    let state = (body, SseParser::default(), translate, VecDeque::new(), 0usize);
    Box::pin(stream::unfold(Some(state), |state| async move {
        let (mut body, mut parser, mut translate, mut ready, mut unfinished) = state?;
        loop {
            match ready.pop_front() {
                Some(Ok(UpstreamEvent::Done)) => {
                    body.finish_in_background(DRAIN_AFTER_DONE);
                    return Some((Ok(UpstreamEvent::Done), None));
                }
                Some(Err(error)) => return Some((Err(error), None)),
                Some(event) => {
                    return Some((event, Some((body, parser, translate, ready, unfinished))));
                }
                None => {}
            }
            match body.read().await {
                Ok(Some(bytes)) => {
                    parser.feed(&bytes, |event| translate.event(event, &mut ready));
                    // Bytes that have made no event yet are held by the parser: an upstream
                    // that sends an endless line must not grow them without end.
                    unfinished = if ready.is_empty() { unfinished + bytes.len() } else { 0 };
                    if unfinished > MAX_EVENT_BYTES {
                        let problem = format!("an event longer than {MAX_EVENT_BYTES} bytes");
                        return Some((Err(UpstreamError::Protocol(problem)), None));
                    }
                }
                Ok(None) => return None,
                Err(error) => return Some((Err(read_error(error)), None)),
            }
        }
    }))
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

/// Logs the start of an upstream error body for the operator, with the secret key scrubbed
/// (providers echo parts of a rejected key).
async fn log_error_body(log: Arc<ErrorLog>, status: u16, mut response: http1::Body) {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(piece)) = response.read().await {
            body.extend_from_slice(&piece);
            if body.len() >= 2 * ERROR_BODY_LOG_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    let text = scrubbed(&String::from_utf8_lossy(&body), log.api_key.as_ref());
    tracing::warn!(upstream = %log.name, status, body = %text, "upstream error body");
}

/// `text` with the key replaced, cut to [`ERROR_BODY_LOG_LIMIT`] bytes. Redacted before it is
/// cut, so that a key echoed across the cut is still found.
fn scrubbed(text: &str, secret: Option<&Secret>) -> String {
    let mut text = match secret {
        Some(secret) if !secret.expose().is_empty() => text.replace(secret.expose(), "[redacted]"),
        _ => text.to_owned(),
    };
    let mut end = text.len().min(ERROR_BODY_LOG_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
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
    fn a_logged_body_has_the_key_scrubbed_before_it_is_cut() {
        let key = Secret::new("sk-secret");
        let body = format!("{}sk-secret tail", "x".repeat(ERROR_BODY_LOG_LIMIT - 3));
        let text = scrubbed(&body, Some(&key));
        assert!(!text.contains("sk-"), "{text}");
        assert_eq!(text.len(), ERROR_BODY_LOG_LIMIT);
        assert_eq!(scrubbed("é", None), "é");
    }
}
