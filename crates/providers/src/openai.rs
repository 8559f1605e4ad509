//! Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.

use std::collections::VecDeque;

use bytes::Bytes;

use async_trait::async_trait;
use confab_protocol::sse::SseEvent;
use confab_protocol::{ChatRequest, DONE_SENTINEL};

use crate::common::{self, Endpoint, Translate};
use crate::http1;
use crate::{
    Call, EventStream, Provider, Secret, Settings, SettingsError, UpstreamError, UpstreamEvent,
};

pub struct OpenAiProvider {
    endpoint: Endpoint,
    /// `Bearer <key>`, built once; a `Secret` so that no `Debug` prints it.
    authorization: Option<Secret>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(settings: Settings<'_>) -> Result<Self, SettingsError> {
        let endpoint = Endpoint::new(&settings, "openai", "chat/completions")?;
        let authorization =
            settings.api_key.as_ref().map(|key| Secret::new(format!("Bearer {}", key.expose())));
        Ok(Self { endpoint, authorization })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        self.endpoint.name()
    }

    /// Asks for a stream (`request.stream` must be set) and returns its events once the
    /// upstream has accepted the request.
    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        let body = self.send(request, "text/event-stream", call).await?;
        Ok(common::sse_stream(body, PassThrough))
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
    /// answer is an error (its body is logged, scrubbed, in the background).
    async fn send(
        &self,
        request: &ChatRequest,
        accept: &'static str,
        call: Call<'_>,
    ) -> Result<http1::Body, UpstreamError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let authorization =
            self.authorization.as_ref().map(|value| ("Authorization", value.expose().as_bytes()));
        self.endpoint.post(&body, accept, authorization.as_slice(), call).await
    }
}

/// An OpenAI stream's events are already the relay's: each `data` passed on as it came (no
/// parse, no copy beyond the SSE framing), `[DONE]` as the end, an `error` event as an error.
struct PassThrough;

impl Translate for PassThrough {
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>) {
        out.push_back(if event.is("error") {
            Err(UpstreamError::Reported)
        } else if event.data == DONE_SENTINEL {
            Ok(UpstreamEvent::Done)
        } else {
            Ok(UpstreamEvent::Data(event.data))
        });
    }
}
