//! The HTTP surface: one module per resource, each with its own `router()`, merged here with the
//! cross-cutting layers (request logging, body limit, CORS, JSON fallbacks).
//!
//! **Architecture Invariant:** handlers never touch SQL; they call the `Store` trait and the domain
//! modules (`policy`, `relay`, `sites`).

mod admin;
pub mod assets;
mod auth;
mod chat;
mod console;
mod conversations;
mod health;
mod json;
mod knowledge;
mod metrics;
mod models;
mod overview;
mod serve;
mod streams;
mod usage;
mod widget;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, request::Parts};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tracing::Instrument;

pub use auth::{Caller, SiteAuth};
pub use json::ApiJson;
pub use serve::{serve, serve_admin, serve_metrics};

use crate::budget::PriceTable;
use crate::config::Config;
use crate::conversations::{Live, TurnRecorder};
use crate::cut::Cut;
use crate::error::{ApiError, ErrorDetail};
use crate::keys::KeyActivity;
use crate::knowledge::embed::Embedder;
use crate::knowledge::library::Library;
use crate::meter::{Metering, MeteringOptions};
use crate::metrics::{ChatLabels, Metrics};
use crate::resume::{InProcessLog, Producers, RedisLog, ReplayLog};
use crate::store::Store;
use crate::upstreams::Upstreams;
use crate::webhooks::Webhooks;

/// Shared state, cloned into every handler.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppInner>);

#[derive(Debug, Clone)]
pub struct AppInner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub upstreams: Upstreams,
    /// When secret keys were last used, written to the store in batches.
    pub key_activity: Arc<KeyActivity>,
    /// Rate limits, budgets and usage records.
    pub metering: Arc<Metering>,
    /// The Prometheus registry (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Webhook endpoints, the queue into the outbox, and the delivery worker (run by `serve`).
    pub webhooks: Arc<Webhooks>,
    /// The salt of hashed visitor ids in usage records (kept in the database).
    pub visitor_salt: Vec<u8>,
    /// The admin API's token; `None`: the admin API is off.
    pub admin_token: Option<crate::config::Secret>,
    /// In demo mode, what the demo page at `/` embeds.
    pub demo: Option<DemoPage>,
    /// Fired by `serve` when shutdown's grace period is over: ends the answers still open.
    pub cut: Cut,
    /// Fired by `serve` when shutdown begins: ends what has nothing to finish (visitors'
    /// conversation event streams, which their widgets open again elsewhere).
    pub draining: Cut,
    /// Where resumable streams are kept; `None` when `resume.grace_ms` is 0.
    pub replay: Option<Arc<dyn ReplayLog>>,
    /// The producers of resumable streams, which their followers drive, and those on their
    /// own (no follower left), which shutdown waits for.
    pub producers: Arc<Producers>,
    /// Writes conversation turns of the sites that keep transcripts, in batches.
    pub turns: TurnRecorder,
    /// Wakes visitors' conversation event streams on this relay.
    pub live: Live,
    /// Signs the links to conversations that `conversation.handoff` webhooks carry (kept in
    /// the database, so every relay signs and checks alike).
    pub link_secret: Vec<u8>,
    /// The console's sessions and the wrong admin tokens seen lately.
    pub sessions: Arc<console::Sessions>,
    /// The search indexes of the sites' knowledge (polled by `serve`).
    pub knowledge: Arc<Library>,
}

/// The demo site's key and the relay's public URL, for the demo page.
#[derive(Debug, Clone)]
pub struct DemoPage {
    pub public_url: String,
    pub site_key: String,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    /// Builds the state: reads the upstreams' secret keys (so it fails on a missing one), loads
    /// what was spent this month for the budgets, and starts the usage writer (so it must run
    /// inside a Tokio runtime).
    pub async fn new(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let upstreams = Upstreams::from_config(&config)?;
        for model in upstreams.models() {
            if !config.prices.contains_key(model) && !upstreams.demo_only() {
                tracing::warn!(%model, "no price for this model in [prices]: its calls cost 0 against budgets");
            }
        }
        let prices = PriceTable::new(config.prices.clone().into_iter().collect());
        let flush_every = Duration::from_millis(config.usage.flush_ms);
        let webhooks = Arc::new(Webhooks::start(&config.webhooks, Arc::clone(&store))?);
        let metrics = Arc::new(Metrics::new(upstreams.models()));
        let metering = Arc::new(
            Metering::start(
                Arc::clone(&store),
                MeteringOptions {
                    journal_dir: config.journal_dir().as_deref(),
                    prices,
                    flush_every,
                    retention: config.usage.retention(),
                    redis: config.redis.settings(&config.budgets).as_ref(),
                },
                Arc::clone(&webhooks),
                Arc::clone(&metrics),
            )
            .await?,
        );
        let visitor_salt = store.relay_secret("visitor_salt", 32).await?;
        let link_secret = store.relay_secret("conversation_links", 32).await?;
        let sessions = Arc::new(console::Sessions::new(
            store.relay_secret("console_sessions", 32).await?,
            Duration::from_secs(u64::from(config.admin.session_hours) * 3600),
        ));
        let admin_token = config.admin.load_token()?;
        let key_activity = Arc::new(KeyActivity::default());
        let turns = TurnRecorder::start(
            Arc::clone(&store),
            Duration::from_millis(config.conversations.flush_ms),
        );
        // Replay logs in this relay's memory, mirrored to Redis when it is configured.
        let replay: Option<Arc<dyn ReplayLog>> = match (&config.redis.url, config.resume.enabled())
        {
            (_, false) => None,
            (None, true) => Some(Arc::new(InProcessLog::new(&config.resume))),
            (Some(url), true) => Some(Arc::new(RedisLog::new(
                &config.resume,
                &url.0,
                &config.redis.key_prefix,
                Duration::from_millis(config.redis.command_timeout_ms),
            )?)),
        };
        let embedder =
            Embedder::from_config(&config, &upstreams, metrics.embedding_fallbacks.clone())?;
        let knowledge = Arc::new(Library::new(Arc::clone(&store), embedder));
        let sites = knowledge.load().await?;
        if sites > 0 {
            tracing::info!(sites, "knowledge indexes built");
        }
        Ok(Self(Arc::new(AppInner {
            config,
            store,
            upstreams,
            key_activity,
            metering,
            metrics,
            webhooks,
            visitor_salt,
            admin_token,
            demo: None,
            cut: Cut::new(),
            draining: Cut::new(),
            replay,
            producers: Arc::default(),
            turns,
            live: Live::default(),
            link_secret,
            sessions,
            knowledge,
        })))
    }

    /// Writes what is batched in memory (usage records, when keys were last used, webhook
    /// events) to the store; run periodically while serving and once more at shutdown. `false`
    /// when something could not be written (logged).
    pub async fn flush(&self) -> bool {
        // First, since settling budgets queues their alerts. Settles still waiting for Redis do
        // not fail the flush: their usage records are written below either way.
        self.metering.flush_settlements().await;
        let mut written = true;
        if let Err(error) = self.key_activity.flush(self.store.as_ref()).await {
            tracing::warn!(%error, "cannot record when keys were last used; will retry");
            written = false;
        }
        written &= self.metering.recorder.flush().await;
        written &= self.turns.flush().await;
        written &= self.webhooks.flush().await;
        written
    }

    /// The same state, serving the demo page at `/`.
    pub fn with_demo_page(self, demo: DemoPage) -> Self {
        let inner = Arc::unwrap_or_clone(self.0);
        Self(Arc::new(AppInner { demo: Some(demo), ..inner }))
    }
}

/// The admin API alone, for its own listener (`admin.listen`), with `/metrics` unless that has a
/// listener of its own.
pub fn admin_router(state: AppState) -> Router {
    let metrics =
        if state.config.metrics.listen.is_none() { metrics::open_router() } else { Router::new() };
    Router::new()
        .merge(admin::router())
        .merge(console::router(&state))
        .merge(metrics)
        .route_layer(middleware::from_fn(note_route))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::RouteNotFound { method: method.to_string(), path: uri.path().to_owned() }
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// `/metrics` alone, for its own listener (`metrics.listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .merge(metrics::open_router())
        .route_layer(middleware::from_fn(note_route))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::RouteNotFound { method: method.to_string(), path: uri.path().to_owned() }
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// The whole application (with the admin API, unless it has a listener of its own, and
/// `/metrics` for the admin token, unless it is served on another listener).
pub fn router(state: AppState) -> Router {
    let (admin_listen, metrics_listen) = (&state.config.admin.listen, &state.config.metrics.listen);
    let admin = if admin_listen.is_none() {
        admin::router().merge(console::router(&state))
    } else {
        Router::new()
    };
    let metrics = if admin_listen.is_none() && metrics_listen.is_none() {
        metrics::admin_only_router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(admin)
        .merge(metrics)
        .merge(chat::router())
        .merge(conversations::router())
        .merge(streams::router())
        .merge(models::router())
        .merge(widget::router())
        .merge(usage::router())
        .merge(health::router())
        .merge(assets::router(&state))
        .route_layer(middleware::from_fn(note_route))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::RouteNotFound { method: method.to_string(), path: uri.path().to_owned() }
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(cors(&state))
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// Headers a browser script may read from a relay response: `Retry-After`, the
/// `X-RateLimit-*` family, `X-Confab-Stream` (the id to resume a stream with) and
/// `X-Request-Id` (what feedback on an answer names).
fn exposed_headers() -> Vec<HeaderName> {
    crate::limits::HEADERS.into_iter().chain([streams::X_CONFAB_STREAM, X_REQUEST_ID]).collect()
}

/// CORS. For the API, a preflight carries no key, so it is answered for any origin that some site
/// lists; the request itself is then checked against its own site's origins (403 otherwise, in
/// `auth`). An origin no site lists gets no CORS headers at all.
fn cors(state: &AppState) -> CorsLayer {
    let store = Arc::clone(&state.store);
    CorsLayer::new()
        .allow_origin(AllowOrigin::async_predicate(move |origin: HeaderValue, parts: &Parts| {
            let store = Arc::clone(&store);
            // The widget's files are public: any page may load them.
            let asset = assets::is_asset_path(parts.uri.path());
            async move {
                if asset {
                    return true;
                }
                let Ok(origin) = origin.to_str() else { return false };
                match store.origin_is_registered(origin).await {
                    Ok(known) => known,
                    Err(error) => {
                        tracing::error!(%error, "origin lookup failed during CORS check");
                        false
                    }
                }
            }
        }))
        .allow_methods([Method::GET, Method::POST])
        // Browser SDKs add their own headers (the OpenAI one sends `x-stainless-*`); the origin is
        // what is restricted, so whatever headers a preflight asks for are allowed.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(exposed_headers())
        .max_age(Duration::from_secs(600))
}

/// `X-Request-Id`: taken from a trusted proxy's request, otherwise made here; sent back on every
/// response, carried by every log line of the request, its usage record and its upstream call.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being handled (see [`X_REQUEST_ID`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// `req_` and 32 hex digits of randomness.
    fn new() -> Self {
        Self(format!("req_{:032x}", rand::random::<u128>()).into())
    }

    /// A proxy's id, if it is one a log line and a header can carry safely: 1 to 128 of
    /// `A-Z a-z 0-9 . _ : -`.
    fn from_proxy(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let safe = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        let valid = (1..=128).contains(&bytes.len()) && bytes.iter().all(safe);
        valid.then(|| Self(String::from_utf8_lossy(bytes).into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    /// The id the logging middleware gave the request (a fresh one where it did not run).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestId>().cloned().unwrap_or_else(RequestId::new))
    }
}

/// Logs one line per request: method, path, status, latency, the request id, the public prefix
/// of the site key or secret key and the upstream when known, and what went wrong for a failed
/// request (for a 500, its internal cause, which the client never sees; for a 4xx, its error
/// code). Keys, bodies and the client's own text are never logged.
async fn log_request(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let from_trusted_proxy =
        request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().is_some_and(|peer| {
            state.config.server.trusted_proxies.iter().any(|proxy| proxy.contains(peer.0.ip()))
        });
    let id = request
        .headers()
        .get(X_REQUEST_ID)
        .filter(|_| from_trusted_proxy)
        .and_then(RequestId::from_proxy)
        .unwrap_or_else(RequestId::new);
    request.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %request.method(),
        path = %crate::logsafe::Escaped(request.uri().path()),
        site = tracing::field::Empty,
        key = tracing::field::Empty,
        upstream = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let route = response.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    state.metrics.request(route, status, response.extensions().get::<ChatLabels>());
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let error = response.extensions().get::<ErrorDetail>().map(|ErrorDetail(detail)| detail);
    span.in_scope(|| match error {
        Some(error) if status >= 500 => {
            tracing::warn!(status, latency_us, %error, "request failed")
        }
        Some(code) => tracing::info!(status, latency_us, %code, "request rejected"),
        None => tracing::info!(status, latency_us, "request"),
    });
    response
}

/// Hands the matched route's template to `log_request` (on the response: the request has gone
/// into the router by then), for the metrics' `route` label, which must never be a raw path.
/// A nested service (the widget's files under `/widget`) has no matched path: its requests are
/// served as they are and counted under no route, never refused for the lack of one.
async fn note_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}
