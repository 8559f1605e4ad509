//! Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use async_trait::async_trait;
use confab_protocol::{ChatRequest, DONE_SENTINEL};
use futures_util::{Stream, stream};
use tracing::Instrument;

use crate::common::{self, SseBody, log_error_body, parse_retry_after};
use crate::http1;
use crate::{
    Call, EventStream, Provider, Secret, Settings, SettingsError, UpstreamError, UpstreamEvent,
};

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
            Some(key) => {
                common::check_header_safe(key)?;
                Some(Secret::new(format!("Bearer {}", key.expose())))
            }
            None => None,
        };
        let client = http1::Client::new(
            &endpoint,
            settings.connect_timeout,
            common::IDLE_CONNECTION_TIMEOUT,
        )
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
        common::read_answer(&mut body).await
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
        let key_header = self.authorization.as_ref().map(|value| ("Authorization", value));
        let response =
            common::post_json(&self.client, &self.path, &body, accept, key_header, call).await?;

        if !(200..300).contains(&response.status) {
            let retry_after = response.retry_after.as_deref().and_then(parse_retry_after);
            // The client gets its answer now; the body is read for the log in the background.
            let name = self.name.clone();
            let secret = self.api_key.clone();
            let status = response.status;
            tokio::spawn(
                async move {
                    log_error_body(&name, secret.as_ref(), status, response.body).await;
                }
                .instrument(tracing::Span::current()),
            );
            return Err(UpstreamError::Status { status: response.status, retry_after });
        }
        Ok(response.body)
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
    stream::unfold(Some(SseBody::new(body)), |events| async move {
        let mut events = events?;
        let event = match events.next().await? {
            Ok(event) => event,
            Err(error) => return Some((Err(error), None)),
        };
        if event.is("error") {
            return Some((Err(UpstreamError::Reported), None));
        }
        if event.data == DONE_SENTINEL {
            events.finish_in_background(DRAIN_AFTER_DONE);
            return Some((Ok(UpstreamEvent::Done), None));
        }
        Some((Ok(UpstreamEvent::Data(event.data)), Some(events)))
    })
}

/// How long the end of a body is waited for after `[DONE]`, to keep its connection.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);
