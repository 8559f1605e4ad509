//! Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use confab_protocol::sse::{SseEvent, SseParser};
use confab_protocol::{ChatRequest, DONE_SENTINEL};
use futures_util::{Stream, StreamExt, stream};
use reqwest::header::{self, HeaderMap, HeaderValue};
use tracing::Instrument;

use super::{EventStream, TimeoutKind, UpstreamError, UpstreamEvent};
use crate::config::{ConfigError, Secret, TimeoutConfig, UpstreamConfig, parse_http_url};

/// How much of an upstream's error body is read, to log it (never to forward it).
const ERROR_BODY_LOG_LIMIT: usize = 2048;
/// The largest whole answer read from an upstream: far above what any `max_tokens` allows, low
/// enough that a broken upstream cannot make the relay hold an unbounded body.
const MAX_ANSWER_BYTES: usize = 8 << 20;

pub struct OpenAiUpstream {
    name: String,
    endpoint: url::Url,
    api_key: Option<Secret>,
    /// `Authorization: Bearer <key>`, built once and marked sensitive so that no `Debug` of a
    /// request (ours or the HTTP stack's) prints it.
    authorization: Option<HeaderValue>,
    connect_timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiUpstream")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl OpenAiUpstream {
    pub fn new(
        config: &UpstreamConfig,
        api_key: Option<Secret>,
        timeouts: &TimeoutConfig,
        index: usize,
    ) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("upstreams[{index}].{name}");
        let base = config.base_url.as_deref().unwrap_or_default();
        let mut base = parse_http_url(base)
            .map_err(|problem| ConfigError::Invalid { field: field("base_url"), problem })?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base.join("chat/completions").map_err(|e| ConfigError::Invalid {
            field: field("base_url"),
            problem: e.to_string(),
        })?;
        let authorization =
            match &api_key {
                Some(key) => {
                    let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                        .map_err(|_| ConfigError::Invalid {
                            field: field("api_key_env"),
                            problem: "the key contains characters not allowed in an HTTP header"
                                .into(),
                        })?;
                    value.set_sensitive(true);
                    Some(value)
                }
                None => None,
            };
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ConfigError::Invalid {
                field: field("kind"),
                problem: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            name: config.name.clone(),
            endpoint,
            api_key,
            authorization,
            connect_timeout: timeouts.connect(),
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks for a stream (`request.stream` must be set) and returns its events once the
    /// upstream has accepted the request.
    pub async fn open(&self, request: &ChatRequest) -> Result<EventStream, UpstreamError> {
        let response = self.send(request, "text/event-stream").await?;
        let events = sse_events(response.bytes_stream()).map(|event| match event {
            Ok(event) if event.is("error") => Err(UpstreamError::Reported),
            Ok(event) if event.data == DONE_SENTINEL => Ok(UpstreamEvent::Done),
            Ok(event) => Ok(UpstreamEvent::Data(event.data)),
            Err(_) => Err(UpstreamError::Dropped),
        });
        Ok(Box::pin(events))
    }

    /// Asks for a whole answer (`request.stream` unset) and returns its body, the upstream's
    /// `chat.completion` as it sent it.
    pub async fn complete(&self, request: &ChatRequest) -> Result<Bytes, UpstreamError> {
        let response = self.send(request, "application/json").await?;
        let too_large =
            || UpstreamError::Protocol(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        let expected = response.content_length().unwrap_or(0);
        if expected > MAX_ANSWER_BYTES as u64 {
            return Err(too_large());
        }
        let mut body = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0));
        let mut frames = response.bytes_stream();
        while let Some(frame) = frames.next().await {
            let frame = frame.map_err(|_| UpstreamError::Dropped)?;
            if body.len() + frame.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&frame);
        }
        Ok(body.freeze())
    }

    /// Sends the request; an answer other than 2xx is an error (its body is logged, scrubbed).
    async fn send(
        &self,
        request: &ChatRequest,
        accept: &'static str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        let response = self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(&e))?;

        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            // The client gets its answer now; the body is read for the log in the background.
            let name = self.name.clone();
            let secret = self.api_key.clone();
            tokio::spawn(
                log_error_body(name, secret, status, response).instrument(tracing::Span::current()),
            );
            return Err(UpstreamError::Status { status: status.as_u16(), retry_after });
        }
        Ok(response)
    }

    fn classify(&self, error: &reqwest::Error) -> UpstreamError {
        if error.is_timeout() {
            UpstreamError::Timeout { kind: TimeoutKind::Connect, after: self.connect_timeout }
        } else if error.is_connect() {
            UpstreamError::Connect
        } else {
            // Connected, then the connection failed before the response headers.
            UpstreamError::Dropped
        }
    }
}

/// The events of an SSE body, in order, each as soon as its blank line has arrived; a transport
/// error ends the stream with that error. An event left unfinished at the end is dropped, as
/// the SSE rules say.
fn sse_events<E>(
    body: impl Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, E>> + Send + 'static {
    let state = (Box::pin(body), SseParser::default(), std::collections::VecDeque::new());
    stream::unfold(Some(state), |state| async move {
        let (mut body, mut parser, mut ready) = state?;
        loop {
            if let Some(event) = ready.pop_front() {
                return Some((Ok(event), Some((body, parser, ready))));
            }
            match body.next().await? {
                Ok(bytes) => parser.feed(&bytes, |event| ready.push_back(event)),
                Err(error) => return Some((Err(error), None)),
            }
        }
    })
}

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
    status: reqwest::StatusCode,
    response: reqwest::Response,
) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY_LOG_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    body.truncate(ERROR_BODY_LOG_LIMIT);
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if let Some(secret) = &secret {
        text = text.replace(secret.expose(), "[redacted]");
    }
    tracing::warn!(%upstream, status = status.as_u16(), body = %text, "upstream error body");
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
