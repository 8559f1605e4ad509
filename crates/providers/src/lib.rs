//! Confab's providers: the LLM APIs the relay forwards to, behind one trait.
//!
//! A [`Provider`] takes the relay's OpenAI-shaped [`ChatRequest`] (after site policy) and
//! answers with OpenAI-shaped events: `chat.completion.chunk` payloads, then the usage chunk,
//! then [`UpstreamEvent::Done`]. Whatever API it speaks, the relay, the meter and the widget see
//! the same stream, so none of them knows which provider answered. The relay holds
//! `Arc<dyn Provider>`s; the one place that knows the kinds is [`build`], called once at
//! start-up for each `[[upstreams]]` entry.
//!
//! - [`OpenAiProvider`] (`kind = "openai"`): any OpenAI-compatible server, with its events
//!   passed through as they come (no parse, no copy beyond the SSE framing).
//! - [`GeminiProvider`] (`kind = "gemini"`): Google's Gemini API, its `generateContent` answers
//!   translated into OpenAI chunks.
//! - [`DemoProvider`] (`kind = "demo"`): canned answers, no network, no key.
//!
//! Errors never carry a provider's own text ([`UpstreamError`]): it can echo request details or
//! parts of the relay's credentials. Error bodies are logged with the key scrubbed.

pub mod estimate;

mod anthropic;
mod common;
mod demo;
mod gemini;
mod http1;
mod openai;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use confab_protocol::ChatRequest;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use anthropic::AnthropicProvider;
pub use demo::DemoProvider;
pub use gemini::GeminiProvider;
pub use openai::OpenAiProvider;

/// A provider: one configured upstream API.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// The name it was configured under (`[[upstreams]] name`), as logs and metrics show it.
    fn name(&self) -> &str;

    /// Sends a streaming request and returns once the provider has accepted it (status line
    /// and headers received): its events as OpenAI chunks. The caller applies the first-byte and
    /// idle limits to the stream. `call.sent` is marked once the request is written.
    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError>;

    /// Whether [`Provider::complete`] answers in one call. When not, a client that wants one
    /// whole answer gets the stream collected.
    fn answers_whole(&self) -> bool {
        false
    }

    /// Asks for a whole answer (`request.stream` unset) and returns it as an OpenAI
    /// `chat.completion` body. Only called when [`Provider::answers_whole`].
    async fn complete(
        &self,
        _request: &ChatRequest,
        _call: Call<'_>,
    ) -> Result<Bytes, UpstreamError> {
        Err(UpstreamError::Protocol("this provider answers by streaming only".into()))
    }

    /// Whether [`Provider::embed`] is served: an OpenAI-compatible upstream's `/embeddings`.
    fn embeds(&self) -> bool {
        false
    }

    /// One vector per text of `request.input`, in order, as the upstream's embedding model
    /// makes them (used by hybrid retrieval of a site's knowledge). Only called when
    /// [`Provider::embeds`].
    async fn embed(
        &self,
        _request: &EmbeddingRequest<'_>,
        _call: Call<'_>,
    ) -> Result<Vec<Vec<f32>>, UpstreamError> {
        Err(UpstreamError::Protocol("this provider has no embeddings API".into()))
    }
}

/// What [`Provider::embed`] asks for: OpenAI's `POST /embeddings` body, vectors as floats.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingRequest<'a> {
    pub model: &'a str,
    pub input: &'a [String],
    /// Shorter vectors, for the models that can make them (`text-embedding-3-*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    pub encoding_format: &'static str,
}

impl<'a> EmbeddingRequest<'a> {
    pub fn new(model: &'a str, input: &'a [String], dimensions: Option<u32>) -> Self {
        Self { model, input, dimensions, encoding_format: "float" }
    }
}

/// The API a provider speaks: `[[upstreams]] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible server: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama.
    Openai,
    /// Google's Gemini API (`generateContent`), with `base_url` its root and version, e.g.
    /// `https://generativelanguage.googleapis.com/v1beta`.
    Gemini,
    /// Anthropic's Messages API (`base_url` without `/v1`, e.g. `https://api.anthropic.com`).
    Anthropic,
    /// The built-in demo (no network, no key).
    Demo,
}

impl ProviderKind {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Gemini => "gemini",
            Self::Anthropic => "anthropic",
            Self::Demo => "demo",
        }
    }

    /// Whether it is reached over the network (and so needs a `base_url`).
    pub fn needs_base_url(self) -> bool {
        match self {
            Self::Openai => true,
            Self::Gemini => true,
            Self::Anthropic => true,
            Self::Demo => false,
        }
    }
}

/// What [`build`] needs to make a provider.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// `[[upstreams]] name`.
    pub name: &'a str,
    /// The API root, e.g. `https://api.openai.com/v1` (not used by the demo).
    pub base_url: Option<&'a url::Url>,
    pub api_key: Option<Secret>,
    /// The longest a connection may take to open.
    pub connect_timeout: Duration,
    /// The demo's pace: the time between its words.
    pub demo_token_delay: Duration,
}

/// A setting a provider cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct SettingsError {
    /// The `[[upstreams]]` field at fault: `base_url` or `api_key_env`.
    pub field: &'static str,
    pub problem: String,
}

/// Makes the provider of `kind`: the one place that knows every kind.
pub fn build(
    kind: ProviderKind,
    settings: Settings<'_>,
) -> Result<Arc<dyn Provider>, SettingsError> {
    Ok(match kind {
        ProviderKind::Openai => Arc::new(OpenAiProvider::new(settings)?),
        ProviderKind::Gemini => Arc::new(GeminiProvider::new(settings)?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(settings)?),
        ProviderKind::Demo => Arc::new(DemoProvider::new(settings.demo_token_delay)),
    })
}

/// A secret (a provider's API key, a token): `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Set by the upstream client once the request's bytes are written: from then on the upstream
/// may be generating (and billing) an answer, so the request costs at least its prompt however
/// it ends. Shared between the meter and the upstream call.
#[derive(Debug, Clone, Default)]
pub struct Sent(Arc<AtomicBool>);

impl Sent {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Clears the flag before the request goes to another target, so that it tells whether
    /// that call was written.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What an upstream call carries beyond the request: the relay's request id (sent as
/// `X-Request-Id`, so the provider's logs can be matched to the relay's) and the flag to mark
/// once the request is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    pub request_id: Option<&'a str>,
    pub sent: Option<&'a Sent>,
}

impl Call<'_> {
    /// Marks the request as written.
    pub fn mark_sent(&self) {
        if let Some(sent) = self.sent {
            sent.mark();
        }
    }
}

/// One event from an upstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// The JSON payload of a `data:` line (a `chat.completion.chunk`).
    Data(String),
    /// `data: [DONE]`.
    Done,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<UpstreamEvent, UpstreamError>> + Send>>;

/// Which time limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    FirstByte,
    Idle,
    /// The whole answer of a non-streaming call.
    Answer,
    /// A whole stream (`timeouts.stream_ms`), however steadily it streamed.
    Stream,
}

/// Why an upstream call failed. Never carries the provider's error text to a client: it can
/// echo request details or parts of the relay's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream")]
    Connect,
    #[error("{kind:?} timeout after {} ms", after.as_millis())]
    Timeout { kind: TimeoutKind, after: Duration },
    #[error("upstream answered HTTP {status}")]
    Status { status: u16, retry_after: Option<u64> },
    #[error("upstream closed the connection mid-answer")]
    Dropped,
    #[error("upstream sent something unreadable: {0}")]
    Protocol(String),
    #[error("upstream reported an error in its stream")]
    Reported,
    /// Not the upstream's doing: the relay is shutting down and its grace period is over, so
    /// the answer was cut short (and settled as interrupted).
    #[error("cut short: the relay is shutting down")]
    Cut,
    /// Not called: every target of the model is failing (its breaker is open).
    #[error("every target of the model is failing; none was called")]
    Unavailable,
}

/// Seconds since the Unix epoch (for the `created` of chunks a provider makes itself).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
