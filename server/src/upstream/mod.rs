//! Upstreams: the LLM providers the relay forwards to, and the built-in demo.
//!
//! A streamed request is sent with `stream_options.include_usage` and yields the `data:` payloads
//! of its events one by one, which the relay rewrites and times (see `relay`); an `openai`
//! upstream is asked for a whole answer when the client wants one (`OpenAiUpstream::complete`).
//! Each model is served by exactly one upstream: a request runs on the model it names, never
//! silently on another.

mod demo;
mod http1;
mod openai;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use confab_protocol::ChatRequest;
use futures_util::Stream;

pub use demo::DemoUpstream;
pub use openai::OpenAiUpstream;

use crate::config::{Config, ConfigError, UpstreamKind};

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
}

/// What an upstream call carries beyond the request: the relay's request id (sent as
/// `X-Request-Id`, so the provider's logs can be matched to the relay's) and the flag to mark
/// once the request is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    pub request_id: Option<&'a str>,
    pub sent: Option<&'a Sent>,
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
}

/// A configured upstream.
#[derive(Debug)]
pub enum Upstream {
    OpenAi(OpenAiUpstream),
    Demo(DemoUpstream),
}

impl Upstream {
    pub fn name(&self) -> &str {
        match self {
            Self::OpenAi(u) => u.name(),
            Self::Demo(_) => "demo",
        }
    }

    /// Sends the request and returns once the upstream has accepted it (status line and headers
    /// received). The caller applies the first-byte and idle limits to the returned stream.
    /// `call.sent` is marked once the request is written.
    pub async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        match self {
            Self::OpenAi(u) => u.open(request, call).await,
            Self::Demo(u) => {
                if let Some(sent) = call.sent {
                    sent.mark();
                }
                Ok(u.open(request))
            }
        }
    }
}

/// Every configured upstream, indexed by the models they serve.
#[derive(Debug, Clone)]
pub struct Upstreams {
    by_model: HashMap<String, Arc<Upstream>>,
    /// Models in configuration order; the first is the default for new sites.
    models: Vec<String>,
    demo_only: bool,
}

impl Upstreams {
    /// Builds the upstreams from the config, reading their secret keys. With none configured,
    /// the demo upstream serves `demo.model`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut by_model = HashMap::new();
        let mut models = Vec::new();
        let demo_delay = Duration::from_millis(config.demo.token_delay_ms);
        if config.upstreams.is_empty() {
            let demo = Arc::new(Upstream::Demo(DemoUpstream::new(demo_delay)));
            by_model.insert(config.demo.model.clone(), demo);
            models.push(config.demo.model.clone());
            return Ok(Self { by_model, models, demo_only: true });
        }
        for (i, upstream_config) in config.upstreams.iter().enumerate() {
            let upstream = Arc::new(match upstream_config.kind {
                UpstreamKind::Demo => Upstream::Demo(DemoUpstream::new(demo_delay)),
                UpstreamKind::Openai => Upstream::OpenAi(OpenAiUpstream::new(
                    upstream_config,
                    upstream_config.load_api_key(i)?,
                    &config.timeouts,
                    i,
                )?),
            });
            for model in &upstream_config.models {
                by_model.insert(model.clone(), Arc::clone(&upstream));
                models.push(model.clone());
            }
        }
        Ok(Self { by_model, models, demo_only: false })
    }

    pub fn for_model(&self, model: &str) -> Option<&Arc<Upstream>> {
        self.by_model.get(model)
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// True when only the built-in demo upstream is configured.
    pub fn demo_only(&self) -> bool {
        self.demo_only
    }
}
