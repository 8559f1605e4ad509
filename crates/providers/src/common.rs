//! What every network provider does the same way: the [`Endpoint`] a provider posts to (a path
//! under `base_url`, its keep-alive connections), sending the request and mapping the client's
//! failures to [`UpstreamError`]s, turning an error status into an error (its body logged, never
//! forwarded), reading an SSE body event by event under a size cap (and handing each event to a
//! provider's [`Translate`]), reading `Retry-After`, and logging an upstream's error body with
//! the key scrubbed.

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

/// How long the end of a body is waited for after its last event, to keep its connection.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

/// One URL a provider posts every call to (`relative` under `base_url`), and the keep-alive
/// connections to its origin.
pub(crate) struct Endpoint {
    /// `[[upstreams]] name`.
    name: String,
    pub(crate) url: url::Url,
    /// The URL's path and query, as the request line names it.
    path: String,
    api_key: Option<Secret>,
    client: Arc<http1::Client>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint `relative` (e.g. `chat/completions`) under the `base_url` of `settings`,
    /// which `kind` requires; the key, if any, is checked for use in a header.
    pub(crate) fn new(
        settings: &Settings<'_>,
        kind: &str,
        relative: &str,
    ) -> Result<Self, SettingsError> {
        let invalid = |problem| SettingsError { field: "base_url", problem };
        let Some(base) = settings.base_url else {
            return Err(invalid(format!("is required for kind `{kind}`")));
        };
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base.join(relative).map_err(|e| invalid(e.to_string()))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        if let Some(key) = &settings.api_key {
            check_header_safe(key)?;
        }
        let client = http1::Client::new(&url, settings.connect_timeout, IDLE_CONNECTION_TIMEOUT)
            .map_err(invalid)?;
        Ok(Self {
            name: settings.name.to_owned(),
            url,
            path,
            api_key: settings.api_key.clone(),
            client: Arc::new(client),
        })
    }

    /// `[[upstreams]] name`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The key from `api_key_env`, which error logs scrub.
    pub(crate) fn api_key(&self) -> Option<&Secret> {
        self.api_key.as_ref()
    }

    /// Posts `body` (see [`post_json`]) and returns the answer's body once its head says 2xx;
    /// any other answer is an error, its body logged (scrubbed) in the background so that the
    /// client gets its answer now.
    pub(crate) async fn post(
        &self,
        body: &[u8],
        accept: &'static str,
        headers: &[(&str, &[u8])],
        call: Call<'_>,
    ) -> Result<http1::Body, UpstreamError> {
        let response = post_json(&self.client, &self.path, body, accept, headers, call).await?;
        if (200..300).contains(&response.status) {
            return Ok(response.body);
        }
        let retry_after = response.retry_after.as_deref().and_then(parse_retry_after);
        let name = self.name.clone();
        let secret = self.api_key.clone();
        let status = response.status;
        tokio::spawn(
            async move {
                log_error_body(&name, secret.as_ref(), status, response.body).await;
            }
            .instrument(tracing::Span::current()),
        );
        Err(UpstreamError::Status { status, retry_after })
    }
}

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
/// provider's own headers `more` (its key header if it has one, its API version), and returns
/// the response once its head has arrived (any status), with the client's failures in the
/// relay's terms. `call.sent` is marked once the request is written.
pub(crate) async fn post_json(
    client: &Arc<http1::Client>,
    path: &str,
    body: &[u8],
    accept: &'static str,
    more: &[(&str, &[u8])],
    call: Call<'_>,
) -> Result<http1::Response, UpstreamError> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(3 + more.len());
    if let Some(id) = call.request_id {
        headers.push(("X-Request-Id", id.as_bytes()));
    }
    headers.push(("Content-Type", b"application/json"));
    headers.push(("Accept", accept.as_bytes()));
    headers.extend_from_slice(more);
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
}

impl SseBody {
    pub(crate) fn new(body: http1::Body) -> Self {
        Self { body, parser: SseParser::default(), ready: VecDeque::new() }
    }

    /// The next event, `None` at the end of the body, or the read error that ends it.
    pub(crate) async fn next(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            match self.body.read().await {
                Ok(Some(bytes)) => {
                    let (ready, mut oversize) = (&mut self.ready, false);
                    self.parser.feed(&bytes, |event| {
                        oversize |= event.data.len() > MAX_EVENT_BYTES;
                        ready.push_back(event);
                    });
                    // Bytes that have made no event yet are held by the parser: an upstream
                    // that sends an endless line must not grow them without end. Every event,
                    // whole or not yet, is held to the cap (the bytes of a read that finish one
                    // event and start the next count towards each).
                    if oversize || self.parser.unfinished_len() > MAX_EVENT_BYTES {
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

/// What a provider makes of the SSE events of its body: each event becomes any number of
/// [`UpstreamEvent`]s (or an error, which ends the stream), in order.
pub(crate) trait Translate: Send + 'static {
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>);

    /// The body has ended (for a provider whose stream has no terminal event of its own).
    fn end(&mut self, _out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>) {}
}

/// The events of an SSE body, translated, in order, each as soon as its blank line has arrived.
/// An error (translated or from the read) ends the stream with that error, and an event left
/// unfinished at the end is dropped, as the SSE rules say. At [`UpstreamEvent::Done`] the rest
/// of the body (the end of its chunked encoding, usually a moment later) is read in the
/// background, so that the connection serves the next call instead of being closed and opened
/// again, a TLS handshake each time.
pub(crate) fn sse_stream(body: http1::Body, translate: impl Translate) -> EventStream {
    let state = (SseBody::new(body), translate, VecDeque::new());
    Box::pin(stream::unfold(Some(state), |state| async move {
        let (mut events, mut translate, mut ready) = state?;
        loop {
            match ready.pop_front() {
                Some(Ok(UpstreamEvent::Done)) => {
                    events.finish_in_background(DRAIN_AFTER_DONE);
                    return Some((Ok(UpstreamEvent::Done), None));
                }
                Some(Err(error)) => return Some((Err(error), None)),
                Some(event) => return Some((event, Some((events, translate, ready)))),
                None => {}
            }
            match events.next().await {
                Some(Ok(event)) => translate.event(event, &mut ready),
                Some(Err(error)) => return Some((Err(error), None)),
                None => {
                    translate.end(&mut ready);
                    if ready.is_empty() {
                        return None;
                    }
                }
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
