//! Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.

use std::collections::VecDeque;

use bytes::Bytes;

use async_trait::async_trait;
use confab_protocol::sse::SseEvent;
use confab_protocol::{ChatRequest, DONE_SENTINEL};

use crate::common::{self, Endpoint, Translate};
use crate::http1;
use crate::{
    Call, EmbeddingRequest, EventStream, Provider, Secret, Settings, SettingsError, UpstreamError,
    UpstreamEvent,
};

pub struct OpenAiProvider {
    endpoint: Endpoint,
    /// `embeddings` under the same `base_url`.
    embeddings: Endpoint,
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
        let embeddings = Endpoint::new(&settings, "openai", "embeddings")?;
        let authorization =
            settings.api_key.as_ref().map(|key| Secret::new(format!("Bearer {}", key.expose())));
        Ok(Self { endpoint, embeddings, authorization })
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

    fn embeds(&self) -> bool {
        true
    }

    async fn embed(
        &self,
        request: &EmbeddingRequest<'_>,
        call: Call<'_>,
    ) -> Result<Vec<Vec<f32>>, UpstreamError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let authorization =
            self.authorization.as_ref().map(|value| ("Authorization", value.expose().as_bytes()));
        let mut answer =
            self.embeddings.post(&body, "application/json", authorization.as_slice(), call).await?;
        let answer = common::read_answer(&mut answer).await?;
        vectors(&answer, request.input.len())
    }
}

/// OpenAI's embeddings answer: `data[].embedding` with the `index` of its input.
#[derive(serde::Deserialize)]
struct EmbeddingAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// The vectors of an embeddings answer in input order: exactly one per input, all of one
/// length, every value finite; anything else is an unreadable answer.
fn vectors(answer: &[u8], inputs: usize) -> Result<Vec<Vec<f32>>, UpstreamError> {
    let bad = |problem: String| UpstreamError::Protocol(format!("embeddings answer: {problem}"));
    // Only where and how the JSON failed, never its text: an upstream's own words stay out of
    // the relay's errors (they could echo a key).
    let answer: EmbeddingAnswer = serde_json::from_slice(answer).map_err(|e| {
        bad(format!(
            "not an embeddings list ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if answer.data.len() != inputs {
        return Err(bad(format!("{} vectors for {inputs} inputs", answer.data.len())));
    }
    let mut ordered: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for item in answer.data {
        let slot =
            ordered.get_mut(item.index).ok_or_else(|| bad(format!("index {}", item.index)))?;
        if slot.replace(item.embedding).is_some() {
            return Err(bad(format!("index {} twice", item.index)));
        }
    }
    // Every slot is filled: as many items as slots, none twice.
    let vectors: Vec<Vec<f32>> = ordered.into_iter().flatten().collect();
    let length = vectors.first().map_or(0, Vec::len);
    if vectors.iter().any(|v| v.is_empty() || v.len() != length) {
        return Err(bad("vectors of different or no length".into()));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(bad("a value that is not a finite number".into()));
    }
    Ok(vectors)
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

#[cfg(test)]
mod tests {
    use super::vectors;

    #[test]
    fn an_embeddings_answer_is_read_in_input_order() {
        let answer = br#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[0.5,-1.0]},
            {"object":"embedding","index":0,"embedding":[1e-7,2.0]}],"model":"m"}"#;
        assert_eq!(vectors(answer, 2).unwrap(), vec![vec![1e-7, 2.0], vec![0.5, -1.0]]);
    }

    #[test]
    fn an_embeddings_answer_that_does_not_fit_its_inputs_is_refused() {
        for (answer, inputs) in [
            (&br#"{"data":[{"index":0,"embedding":[1.0]}]}"#[..], 2),
            (br#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#, 2),
            (br#"{"data":[{"index":5,"embedding":[1.0]}]}"#, 1),
            (br#"{"data":[{"index":0,"embedding":[1.0]},{"index":1,"embedding":[1.0,2.0]}]}"#, 2),
            (br#"{"data":[{"index":0,"embedding":[]}]}"#, 1),
            (br#"{"error":{"message":"no"}}"#, 1),
            (b"[1,2]", 1),
        ] {
            let error = vectors(answer, inputs).unwrap_err().to_string();
            assert!(error.contains("embeddings answer"), "{error}");
        }
    }
}
