//! Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use async_trait::async_trait;
use confab_protocol::sse::{SseEvent, SseParser};
use confab_protocol::{ChatRequest, DONE_SENTINEL};
use futures_util::{Stream, stream};
use tracing::Instrument;

use crate::http1::{self, ReadAllError};
use crate::{
    Call, EventStream, Provider, Secret, Settings, SettingsError, TimeoutKind, UpstreamError,
    UpstreamEvent,
};

/// How much of an upstream's error body is read, to log it (never to forward it).
const ERROR_BODY_LOG_LIMIT: usize = 2048;
/// The largest whole answer read from an upstream: far above what any `max_tokens` allows, low
/// enough that a broken upstream cannot make the relay hold an unbounded body.
const MAX_ANSWER_BYTES: usize = 8 << 20;

pub struct OpenAiProvider {
    name: String,
    endpoint: url::Url,
    /// The endpoint's path and query, as the request line names it.
    path: String,
    api_key: Option<Secret>,
    /// `Bearer <key>`, built once; a `Secret` so that no `Debug` prints it.
    authorization: Option<Secret>,
    client: Arc<http1::Client>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(settings: Settings<'_>) -> Result<Self, SettingsError> {
        let invalid = |field, problem| SettingsError { field, problem };
        let Some(base) = settings.base_url else {
            return Err(invalid("base_url", "is required for kind `openai`".into()));
        };
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint =
            base.join("chat/completions").map_err(|e| invalid("base_url", e.to_string()))?;
        let path = match endpoint.query() {
            Some(query) => format!("{}?{query}", endpoint.path()),
            None => endpoint.path().to_owned(),
        };
        let api_key = settings.api_key;
        let authorization = match &api_key {
            // Header values may hold visible ASCII, spaces and tabs; a key with anything else
            // (a line break above all) would change the request itself.
            Some(key)
                if !key.expose().bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) =>
            {
                return Err(invalid(
                    "api_key_env",
                    "the key contains characters not allowed in an HTTP header".into(),
                ));
            }
            Some(key) => Some(Secret::new(format!("Bearer {}", key.expose()))),
            None => None,
        };
        let client =
            http1::Client::new(&endpoint, settings.connect_timeout, IDLE_CONNECTION_TIMEOUT)
                .map_err(|problem| invalid("base_url", problem))?;
        Ok(Self {
            name: settings.name.to_owned(),
            endpoint,
            path,
            api_key,
            authorization,
            client: Arc::new(client),
        })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// Asks for a stream (`request.stream` must be set) and returns its events once the
    /// upstream has accepted the request.
    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        let body = self.send(request, "text/event-stream", call).await?;
        Ok(Box::pin(upstream_events(body)))
    }

    fn answers_whole(&self) -> bool {
        true
    }

    /// Asks for a whole answer (`request.stream` unset) and returns its body, the upstream's
    /// `chat.completion` as it sent it.
    async fn complete(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let mut body = self.send(request, "application/json", call).await?;
        body.read_all(MAX_ANSWER_BYTES).await.map_err(|error| match error {
            ReadAllError::TooLarge => {
                UpstreamError::Protocol(format!("answer larger than {MAX_ANSWER_BYTES} bytes"))
            }
            ReadAllError::Read(error) => read_error(error),
        })
    }
}

impl OpenAiProvider {
    /// Sends the request and returns the answer's body once its head says 2xx; any other
    /// answer is an error (its body is logged, scrubbed).
    async fn send(
        &self,
        request: &ChatRequest,
        accept: &'static str,
        call: Call<'_>,
    ) -> Result<http1::Body, UpstreamError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(4);
        if let Some(id) = call.request_id {
            headers.push(("X-Request-Id", id.as_bytes()));
        }
        headers.push(("Content-Type", b"application/json"));
        headers.push(("Accept", accept.as_bytes()));
        if let Some(authorization) = &self.authorization {
            headers.push(("Authorization", authorization.expose().as_bytes()));
        }
        let request = http1::Request { path: &self.path, headers: &headers, body: &body };
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
            let name = self.name.clone();
            let secret = self.api_key.clone();
            tokio::spawn(
                log_error_body(name, secret, response.status, response.body)
                    .instrument(tracing::Span::current()),
            );
            return Err(UpstreamError::Status { status: response.status, retry_after });
        }
        Ok(response.body)
    }
}

/// How long an idle upstream connection is kept for the next call.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// A body read failure as the relay reports it.
fn read_error(error: http1::Error) -> UpstreamError {
    match error {
        http1::Error::Invalid(problem) => UpstreamError::Protocol(problem),
        _ => UpstreamError::Dropped,
    }
}

/// The events of an SSE body, in order, each as soon as its blank line has arrived; a read
/// error ends the stream with that error, and an event left unfinished at the end is dropped, as
/// the SSE rules say. At `[DONE]` the rest of the body (the end of its chunked encoding, usually
/// a moment later) is read in the background, so that the connection serves the next call
/// instead of being closed and opened again, a TLS handshake each time.
fn upstream_events(
    body: http1::Body,
) -> impl Stream<Item = Result<UpstreamEvent, UpstreamError>> + Send + 'static {
    let state = (body, SseParser::default(), VecDeque::<SseEvent>::new(), 0usize);
    stream::unfold(Some(state), |state| async move {
        let (mut body, mut parser, mut ready, mut unfinished) = state?;
        loop {
            if let Some(event) = ready.pop_front() {
                if event.is("error") {
                    return Some((Err(UpstreamError::Reported), None));
                }
                if event.data == DONE_SENTINEL {
                    body.finish_in_background(DRAIN_AFTER_DONE);
                    return Some((Ok(UpstreamEvent::Done), None));
                }
                let state = Some((body, parser, ready, unfinished));
                return Some((Ok(UpstreamEvent::Data(event.data)), state));
            }
            match body.read().await {
                Ok(Some(bytes)) => {
                    parser.feed(&bytes, |event| ready.push_back(event));
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
    })
}

/// The longest event read from an upstream (a chunk is a few hundred bytes).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// How long the end of a body is waited for after `[DONE]`, to keep its connection.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

/// `Retry-After` as seconds, from either of its forms (delta-seconds or an HTTP date).
fn parse_retry_after(value: &str) -> Option<u64> {
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
async fn log_error_body(
    upstream: String,
    secret: Option<Secret>,
    status: u16,
    mut response: http1::Body,
) {
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
    // Redacted before it is cut to length, so that a key echoed across the cut is still found.
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if let Some(secret) = &secret {
        text = text.replace(secret.expose(), "[redacted]");
    }
    let mut end = text.len().min(ERROR_BODY_LOG_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    tracing::warn!(%upstream, status, body = %text, "upstream error body");
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
}
