//! Configuration: embedded defaults, overridden by a TOML file, overridden by `CONFAB__SECTION__KEY`
//! environment variables, overridden by command-line flags. `validate()` runs before anything
//! starts and names the field that is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

// Defined in the leaf module `config_base`, so that sections defined elsewhere (`webhooks::config`)
// can use them without importing this module, which imports those sections.
pub use crate::config_base::{ClientInstructions, ConfigError, Secret, parse_http_url};
use crate::store::Engine;

/// The whole configuration. Every section has defaults, so an empty file (or none) is valid.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub timeouts: TimeoutConfig,
    pub policy: PolicyDefaults,
    pub limits: RequestLimits,
    pub demo: DemoConfig,
    /// What the widget shows for sites that set nothing of their own.
    pub widget: WidgetDefaults,
    /// Secret API keys.
    pub keys: KeysConfig,
    /// Default limits per visitor of a site.
    pub visitors: VisitorDefaults,
    /// Usage records.
    pub usage: UsageConfig,
    /// Conversations of the sites that keep transcripts.
    pub conversations: ConversationsConfig,
    /// The admin API (`/admin/v1/...`).
    pub admin: AdminConfig,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: MetricsConfig,
    /// Log lines: text for people, or JSON for a log pipeline.
    pub log: LogConfig,
    /// Webhook endpoints and their events.
    pub webhooks: crate::webhooks::config::WebhooksConfig,
    /// Several relays sharing rate limits and budgets through Redis; unset, they stay in this
    /// process.
    pub redis: RedisConfig,
    /// What budgets do when Redis cannot be reached.
    pub budgets: BudgetsConfig,
    /// Streamed answers that survive a dropped connection.
    pub resume: crate::resume::config::ResumeConfig,
    /// Sites' knowledge: caps, retrieval and fetching.
    pub knowledge: crate::knowledge::config::KnowledgeConfig,
    /// Model prices, for budgets and usage costs: `[prices."model"]`.
    pub prices: std::collections::BTreeMap<String, crate::budget::Price>,
    /// LLM providers. With none configured the built-in demo upstream serves `demo.model`.
    pub upstreams: Vec<UpstreamConfig>,
    /// Models served by an ordered list of targets, tried in turn: `[[models]]`.
    pub models: Vec<ModelConfig>,
    /// When a request falls back to the next target, and when a target is left alone.
    pub fallback: FallbackConfig,
}

/// `[[models]]`: a model that clients name, served by the first of its targets that answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use (and sites list), e.g. `support-bot`.
    pub name: String,
    /// `"<upstream name>:<model>"`, in the order they are tried.
    pub targets: Vec<String>,
    /// The most tokens of prompt and answer together, shown by `GET /v1/models?detail=true`.
    #[serde(default)]
    pub context_length: Option<u32>,
}

/// `[fallback]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Retries (calls to a model's next target) allowed, as a percentage of the requests of the
    /// last ten seconds, so that an outage of one provider does not double the load on the next.
    pub retry_budget_percent: u32,
    /// Retries allowed per second whatever the traffic, so that a quiet relay still falls back.
    pub min_retries_per_second: u32,
    /// Failures in a row (no connection, 429, 5xx, 529, no first byte in time) that open a
    /// target's breaker: it is skipped without a connection attempt ...
    pub breaker_failures: u32,
    /// ... for this long; then one request probes it (half-open), and its result closes the
    /// breaker or opens it again.
    pub breaker_open_ms: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            retry_budget_percent: 20,
            min_retries_per_second: 3,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the relay listens on.
    pub listen: SocketAddr,
    /// The URL people reach the relay at. Defaults to `http://<listen address>`; the demo site's
    /// origin and the printed instructions use it.
    pub public_url: Option<String>,
    /// Send an SSE comment after this long without an event, so proxies keep the stream open.
    pub heartbeat_ms: u64,
    /// On Ctrl-C or SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace_ms: u64,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` is believed; from
    /// anyone else it is ignored and the peer address is the client.
    pub trusted_proxies: Vec<crate::visitor::TrustedProxy>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            heartbeat_ms: 15_000,
            shutdown_grace_ms: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The admin API: on when its token is set (an environment variable or a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Environment variable holding the admin token.
    pub token_env: String,
    /// Or a file holding it (takes precedence when set).
    pub token_file: Option<PathBuf>,
    /// Serve the admin API (and the console) on this address only, instead of on
    /// `server.listen`.
    pub listen: Option<SocketAddr>,
    /// The console's files (the output of `scripts/build-console`), served at `/console/`.
    /// Unset: the console built into the binary (`--features embed-assets`), or else
    /// `dist/console`.
    pub console_dir: Option<PathBuf>,
    /// How long a console login lasts.
    pub session_hours: u32,
    /// The URL operators reach the admin listener (and the console) at, for the links that
    /// webhooks carry. Unset: `server.public_url` when the admin API shares the public listener.
    pub public_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: "CONFAB_ADMIN_TOKEN".into(),
            token_file: None,
            listen: None,
            console_dir: None,
            session_hours: 12,
            public_url: None,
        }
    }
}

/// Where `GET /metrics` is served: on this address alone when set (no token); otherwise on
/// `admin.listen` when that is set (no token), otherwise on `server.listen` with the admin token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// How log lines are written (to stderr; `RUST_LOG` sets the level).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: the event's fields at the top level, the request's (its
    /// `request_id`, method, path, site, key) under `span`.
    Json,
}

/// An admin token shorter than this is refused: it guards every site, key and budget.
pub const MIN_ADMIN_TOKEN_LEN: usize = 24;

impl AdminConfig {
    /// The admin token, or `None` (the admin API is off) when neither source is set.
    pub fn load_token(&self) -> Result<Option<Secret>, ConfigError> {
        let (field, value) = match &self.token_file {
            Some(path) => (
                "admin.token_file",
                std::fs::read_to_string(path).map_err(|e| {
                    invalid("admin.token_file", format!("cannot read {}: {e}", path.display()))
                })?,
            ),
            None => match std::env::var(&self.token_env) {
                Ok(value) => ("admin.token_env", value),
                Err(_) => return Ok(None),
            },
        };
        let value = value.trim();
        if value.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(invalid(
                field,
                format!("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            ));
        }
        Ok(Some(Secret::new(value)))
    }
}

/// Requests one visitor of a site may make, unless the site sets its own. A visitor is the
/// client's IP address (IPv6 by /64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitorDefaults {
    pub rpm: u32,
    pub rpd: u32,
    /// For visitors with a valid visitor token (a site's logged-in users).
    pub verified_rpm: u32,
    pub verified_rpd: u32,
}

impl Default for VisitorDefaults {
    fn default() -> Self {
        Self { rpm: 20, rpd: 500, verified_rpm: 60, verified_rpd: 2_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsConfig {
    /// Turns are written in batches, at most this long after their request ended.
    pub flush_ms: u64,
    /// How often conversations past their site's retention are looked for and deleted.
    pub sweep_every_ms: u64,
    /// How often a visitor's open event stream looks in the database for a person's replies
    /// written through another relay (replies through this relay arrive at once).
    pub poll_ms: u64,
    /// How long the console link in a `conversation.handoff` webhook works, in hours.
    pub link_ttl_hours: u32,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        Self { flush_ms: 500, sweep_every_ms: 600_000, poll_ms: 1_000, link_ttl_hours: 168 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Usage records are written in batches, at most this long after the request ended (and all
    /// of them at shutdown).
    pub flush_ms: u64,
    /// The reservation journal: each request's worst case, written before its upstream call so
    /// that a crash cannot lose it. One directory per relay (it is locked). Default: beside the
    /// SQLite file (`confab.db` → `confab.db.reservations`); none for an in-memory database;
    /// `confab.reservations` in the working directory for PostgreSQL, where relays share the
    /// database but each needs a journal of its own (set it for relays that share a working
    /// directory).
    pub journal_dir: Option<PathBuf>,
    /// Raw usage records are deleted after this many days (0: kept for ever); the daily rollup
    /// that reports and budgets read is kept.
    pub retention_days: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { flush_ms: 1_000, journal_dir: None, retention_days: 90 }
    }
}

impl UsageConfig {
    /// How long raw records are kept; `None`: for ever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }
}

impl Config {
    /// Where the reservation journal lives (see [`UsageConfig::journal_dir`]).
    pub fn journal_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.usage.journal_dir {
            return Some(dir.clone());
        }
        let url = &self.database.url;
        if Engine::of(url) == Some(Engine::Postgres) {
            return Some(PathBuf::from("confab.reservations"));
        }
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
            return None;
        }
        Some(PathBuf::from(format!("{path}.reservations")))
    }
}

/// `[redis]`: with a `url`, rate limits, budget reservations and budget alerts live in Redis
/// (or Valkey), shared by every relay that uses it; without one, each relay keeps its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). Also
    /// `CONFAB__REDIS__URL`.
    pub url: Option<RedisUrl>,
    /// Every key starts with `<key_prefix>:`, so that deployments can share a server.
    pub key_prefix: String,
    /// A command that takes longer counts as a failure.
    pub command_timeout_ms: u64,
    /// This many failures in a row open the breaker: Redis is left alone (and limits and
    /// budgets degrade, see `expected_instances` and `budgets.on_store_error`) ...
    pub breaker_failures: u32,
    /// ... for this long, then one command probes it.
    pub breaker_open_ms: u64,
    /// While Redis is unavailable each relay enforces `limit / expected_instances` of every rate
    /// limit by itself, so set it to the number of relays.
    pub expected_instances: u32,
    /// A budget reservation not renewed for this long is released: the relay holding it is
    /// gone. Live relays renew their reservations every third of it.
    pub lease_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "confab".into(),
            command_timeout_ms: 250,
            breaker_failures: 3,
            breaker_open_ms: 2_000,
            expected_instances: 2,
            lease_ms: 30_000,
        }
    }
}

/// A Redis URL, which may hold a password: `Debug` shows it without one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once("://").and_then(|(scheme, rest)| {
            let (_, host) = rest.rsplit_once('@')?;
            Some((scheme, host))
        }) {
            Some((scheme, host)) => write!(f, "\"{scheme}://[redacted]@{host}\""),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// The shortest `redis.lease_ms`.
pub const MIN_LEASE_MS: u64 = 100;

impl RedisConfig {
    /// The engines' settings, when Redis is configured.
    pub fn settings(&self, budgets: &BudgetsConfig) -> Option<confab_metering::RedisSettings> {
        let url = self.url.as_ref()?;
        Some(confab_metering::RedisSettings {
            url: url.0.clone(),
            key_prefix: self.key_prefix.clone(),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            breaker_failures: self.breaker_failures,
            breaker_open: Duration::from_millis(self.breaker_open_ms),
            expected_instances: self.expected_instances,
            lease: Duration::from_millis(self.lease_ms),
            on_store_error: match budgets.on_store_error {
                OnStoreError::Closed => confab_metering::OnStoreError::Closed,
                OnStoreError::Open => confab_metering::OnStoreError::Open,
            },
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(RedisUrl(url)) = &self.url
            && !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid("redis.url", "must be a redis:// or rediss:// URL"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis.key_prefix", "must be non-empty, without spaces"));
        }
        for (field, value) in [
            ("redis.command_timeout_ms", self.command_timeout_ms),
            ("redis.breaker_failures", u64::from(self.breaker_failures)),
            ("redis.breaker_open_ms", self.breaker_open_ms),
            ("redis.expected_instances", u64::from(self.expected_instances)),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.lease_ms < MIN_LEASE_MS {
            return Err(invalid("redis.lease_ms", format!("must be at least {MIN_LEASE_MS}")));
        }
        Ok(())
    }
}

/// `[budgets]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// When Redis cannot be reached: `closed` refuses requests with 503 and `Retry-After` (no
    /// budget can be overspent), `open` admits them without a reservation (their cost is still
    /// counted once Redis is back).
    pub on_store_error: OnStoreError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// After `keys rotate`, the previous secret keeps working this long, so callers can switch.
    pub rotation_grace_secs: u64,
    /// `last_used` is written in batches, at most this often (never once per request).
    pub last_used_flush_ms: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { rotation_grace_secs: 86_400, last_used_flush_ms: 5_000 }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created if missing), or
    /// `postgres://user:password@host:port/database` (the database must exist; its tables are
    /// created). Never printed with its password.
    pub url: String,
    pub max_connections: u32,
    /// When the in-memory copy of sites and keys cannot be checked against the database for this
    /// long, keys are refused (503 `directory_stale`) until it can: a key revoked meanwhile must
    /// not keep working.
    pub directory_max_stale_ms: u64,
}

/// Shows the URL without its password (`crate::store::redacted_url`), so that a logged config
/// cannot leak it.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::store::redacted_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("directory_max_stale_ms", &self.directory_max_stale_ms)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://confab.db".into(),
            max_connections: 8,
            directory_max_stale_ms: 30_000,
        }
    }
}

impl DatabaseConfig {
    pub fn directory_max_stale(&self) -> Duration {
        Duration::from_millis(self.directory_max_stale_ms)
    }
}

/// The shortest `database.directory_max_stale_ms`: four checks of the directory, so that one slow
/// or failed check never refuses keys.
pub const MIN_DIRECTORY_MAX_STALE_MS: u64 = 1_000;

/// Time limits on the upstream call, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// Establishing the TCP/TLS connection.
    pub connect_ms: u64,
    /// From sending the request to the first streamed event (the model's first token).
    pub first_byte_ms: u64,
    /// Longest silence between two streamed events once the answer has started.
    pub idle_ms: u64,
    /// A client that asked for no stream is answered by an upstream call that does not stream
    /// either: from sending it to the upstream's whole answer.
    pub answer_ms: u64,
    /// The longest a streamed answer may run in all, however steadily it streams: an upstream
    /// that never ends cannot hold a budget reservation (or a shutdown) for ever.
    pub stream_ms: u64,
    /// A client must send its request headers within this time (also the keep-alive idle limit).
    pub request_header_ms: u64,
    /// ... and its request body within this time (408 otherwise).
    pub request_body_ms: u64,
    /// A client that stops reading a response for this long is disconnected.
    pub client_write_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_ms: 10_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            answer_ms: 300_000,
            stream_ms: 600_000,
            request_header_ms: 10_000,
            request_body_ms: 30_000,
            client_write_ms: 30_000,
        }
    }
}

impl TimeoutConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn answer(&self) -> Duration {
        Duration::from_millis(self.answer_ms)
    }
    pub fn stream(&self) -> Duration {
        Duration::from_millis(self.stream_ms)
    }
    pub fn request_header(&self) -> Duration {
        Duration::from_millis(self.request_header_ms)
    }
    pub fn request_body(&self) -> Duration {
        Duration::from_millis(self.request_body_ms)
    }
    pub fn client_write(&self) -> Duration {
        Duration::from_millis(self.client_write_ms)
    }
}

/// Policy applied to every site that does not set its own value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyDefaults {
    /// Cap on `max_tokens`; also the value used when a request names none.
    pub max_tokens: u32,
    /// `temperature` is clamped into `0..=temperature_max`.
    pub temperature_max: f32,
    /// The conversation sent upstream keeps at most this many of the latest messages.
    pub context_messages: u32,
    /// ... and at most this many bytes of them (the latest message is always kept).
    pub context_bytes: u32,
    /// What happens to a client's own `system`/`developer` messages (sites can override it).
    pub client_instructions: ClientInstructions,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            max_tokens: 1024,
            temperature_max: 1.0,
            context_messages: 20,
            context_bytes: 32_768,
            client_instructions: ClientInstructions::Layer,
        }
    }
}

/// Hard limits on what a client may send; a request over them is rejected, not trimmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Most messages in one request.
    pub max_messages: u32,
    /// Largest single message content, in bytes.
    pub max_message_bytes: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_body_bytes: 256 * 1024, max_messages: 100, max_message_bytes: 16 * 1024 }
    }
}

/// Widget defaults, served by `GET /v1/widget/config` for sites without their own values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetDefaults {
    pub title: String,
    pub greeting: String,
    /// Suggested first questions, shown before the first message.
    pub suggestions: Vec<String>,
    /// `#rgb` or `#rrggbb`; unset: the widget's own colour.
    pub primary_color: Option<String>,
    /// Where the built widget is (`scripts/build-widget` writes it to `dist/widget`); the relay
    /// serves `/confab.js` and `/widget/...` from here. Unset: the widget built into the binary
    /// (`--features embed-assets`), or else `dist/widget`.
    pub assets_dir: Option<PathBuf>,
}

impl Default for WidgetDefaults {
    fn default() -> Self {
        Self {
            title: "Chat with us".into(),
            greeting: "Hi! How can I help you today?".into(),
            suggestions: Vec::new(),
            primary_color: None,
            assets_dir: None,
        }
    }
}

/// The built-in demo upstream, used when no upstream is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// The model name the demo upstream answers to.
    pub model: String,
    /// Pause between streamed words, to look like a real model.
    pub token_delay_ms: u64,
    /// Create a demo site for the public URL at start-up when the demo upstream is in use.
    pub create_site: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { model: "confab-demo".into(), token_delay_ms: 35, create_site: true }
    }
}

/// `[[upstreams]] kind`: the API an upstream speaks (see `confab_providers`).
pub use confab_providers::ProviderKind as UpstreamKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub kind: UpstreamKind,
    /// For `openai`: the API root, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the provider's secret key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the provider's secret key (surrounding whitespace is ignored).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Models this upstream serves; requests name one of them.
    pub models: Vec<String>,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), problem: problem.into() }
}

/// Where configuration comes from, as given on the command line.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    /// `--config FILE`; when `None`, `confab.toml` is read if it exists.
    pub file: Option<PathBuf>,
    /// `--database URL`.
    pub database_url: Option<String>,
    /// `--listen ADDR` (serve only).
    pub listen: Option<SocketAddr>,
}

pub const DEFAULT_CONFIG_FILE: &str = "confab.toml";

impl Config {
    /// Loads defaults, then the file, then `CONFAB__*` variables, then flags; then validates.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &sources.file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.clone())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("CONFAB__").split("__"));
        if let Some(url) = &sources.database_url {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if let Some(listen) = &sources.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match Engine::of(&self.database.url) {
            Some(Engine::Sqlite) => {}
            // The URL is never part of the message: it may hold a password.
            Some(Engine::Postgres) => {
                url::Url::parse(&self.database.url).map_err(|e| {
                    invalid("database.url", format!("is not a valid postgres:// URL: {e}"))
                })?;
            }
            None => {
                return Err(invalid(
                    "database.url",
                    "must be a sqlite: URL (for example sqlite://confab.db) or a postgres:// URL \
                     (for example postgres://confab:PASSWORD@localhost/confab)",
                ));
            }
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.directory_max_stale_ms < MIN_DIRECTORY_MAX_STALE_MS {
            return Err(invalid(
                "database.directory_max_stale_ms",
                format!(
                    "must be at least {MIN_DIRECTORY_MAX_STALE_MS} (the directory is checked \
                     every 250 ms)"
                ),
            ));
        }
        if let Some(url) = &self.server.public_url {
            parse_http_url(url).map_err(|problem| invalid("server.public_url", problem))?;
        }
        if let Some(url) = &self.admin.public_url {
            parse_http_url(url).map_err(|problem| invalid("admin.public_url", problem))?;
        }
        for (field, value) in [
            ("server.heartbeat_ms", self.server.heartbeat_ms),
            ("keys.last_used_flush_ms", self.keys.last_used_flush_ms),
            ("usage.flush_ms", self.usage.flush_ms),
            ("conversations.flush_ms", self.conversations.flush_ms),
            ("conversations.sweep_every_ms", self.conversations.sweep_every_ms),
            ("conversations.poll_ms", self.conversations.poll_ms),
            ("conversations.link_ttl_hours", u64::from(self.conversations.link_ttl_hours)),
            ("admin.session_hours", u64::from(self.admin.session_hours)),
            ("visitors.rpm", u64::from(self.visitors.rpm)),
            ("visitors.rpd", u64::from(self.visitors.rpd)),
            ("visitors.verified_rpm", u64::from(self.visitors.verified_rpm)),
            ("visitors.verified_rpd", u64::from(self.visitors.verified_rpd)),
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("timeouts.first_byte_ms", self.timeouts.first_byte_ms),
            ("timeouts.idle_ms", self.timeouts.idle_ms),
            ("timeouts.answer_ms", self.timeouts.answer_ms),
            ("timeouts.stream_ms", self.timeouts.stream_ms),
            ("timeouts.request_header_ms", self.timeouts.request_header_ms),
            ("timeouts.request_body_ms", self.timeouts.request_body_ms),
            ("timeouts.client_write_ms", self.timeouts.client_write_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        self.policy.validate("policy")?;
        self.webhooks.validate()?;
        self.redis.validate()?;
        self.resume.validate()?;
        self.knowledge.validate()?;
        if let Some(embeddings) = &self.knowledge.embeddings {
            match self.upstreams.iter().find(|u| u.name == embeddings.upstream) {
                None => {
                    return Err(invalid(
                        "knowledge.embeddings.upstream",
                        format!("names no `[[upstreams]]` entry: `{}`", embeddings.upstream),
                    ));
                }
                Some(upstream) if upstream.kind != UpstreamKind::Openai => {
                    return Err(invalid(
                        "knowledge.embeddings.upstream",
                        format!(
                            "`{}` is of kind `{}`, which has no embeddings API here; name an \
                             upstream of kind `openai` (OpenAI or a server compatible with it)",
                            upstream.name,
                            upstream.kind.as_str()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if self.limits.max_messages == 0 {
            return Err(invalid("limits.max_messages", "must be at least 1"));
        }
        if self.limits.max_message_bytes == 0 {
            return Err(invalid("limits.max_message_bytes", "must be at least 1"));
        }
        if self.widget.title.trim().is_empty() {
            return Err(invalid("widget.title", "must not be empty"));
        }
        if let Some(color) = &self.widget.primary_color
            && !is_hex_color(color)
        {
            return Err(invalid("widget.primary_color", "must be a colour like #1a73e8 or #17e"));
        }
        if self.demo.model.trim().is_empty() {
            return Err(invalid("demo.model", "must not be empty"));
        }
        let mut served: Vec<(&str, &str)> = Vec::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let field = |name: &str| format!("upstreams[{i}].{name}");
            if upstream.name.trim().is_empty() {
                return Err(invalid(field("name"), "must not be empty"));
            }
            if upstream.kind.needs_base_url() {
                let Some(url) = &upstream.base_url else {
                    let problem = format!("is required for kind `{}`", upstream.kind.as_str());
                    return Err(invalid(field("base_url"), problem));
                };
                parse_http_url(url).map_err(|problem| invalid(field("base_url"), problem))?;
            }
            if upstream.api_key_env.is_some() && upstream.api_key_file.is_some() {
                return Err(invalid(
                    field("api_key_file"),
                    "cannot be set together with api_key_env; choose one",
                ));
            }
            if upstream.models.is_empty() {
                return Err(invalid(field("models"), "must list at least one model"));
            }
            for model in &upstream.models {
                if model.trim().is_empty() {
                    return Err(invalid(field("models"), "must not contain an empty name"));
                }
                if let Some((_, other)) = served.iter().find(|(m, _)| m == model) {
                    return Err(invalid(
                        field("models"),
                        format!("model `{model}` is already served by upstream `{other}`"),
                    ));
                }
                served.push((model, &upstream.name));
            }
        }
        Ok(())
    }

    /// The URL people reach the relay at, given the address it actually bound.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if bound.ip().is_unspecified() => format!("http://127.0.0.1:{}", bound.port()),
            None => format!("http://{bound}"),
        }
    }

    /// The URL operators reach the admin listener at, without a trailing `/`, when known:
    /// `admin.public_url`, or `server.public_url` when the admin API has no listener of its own.
    pub fn admin_public_url(&self) -> Option<String> {
        let url = match (&self.admin.public_url, self.admin.listen) {
            (Some(url), _) => url,
            (None, None) => self.server.public_url.as_ref()?,
            (None, Some(_)) => return None,
        };
        Some(url.trim_end_matches('/').to_owned())
    }

    /// Every model clients may name, in configuration order: the upstreams' own, then the
    /// `[[models]]` (the demo model when no upstream is configured). Needs no secret keys.
    pub fn served_models(&self) -> Vec<String> {
        if self.upstreams.is_empty() {
            return vec![self.demo.model.clone()];
        }
        let own = self.upstreams.iter().flat_map(|u| u.models.iter().cloned());
        own.chain(self.models.iter().map(|m| m.name.clone())).collect()
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.server.heartbeat_ms)
    }
}

impl PolicyDefaults {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.max_tokens == 0 {
            return Err(invalid(format!("{section}.max_tokens"), "must be at least 1"));
        }
        if !(0.0..=2.0).contains(&self.temperature_max) {
            return Err(invalid(format!("{section}.temperature_max"), "must be between 0 and 2"));
        }
        if self.context_messages == 0 {
            return Err(invalid(format!("{section}.context_messages"), "must be at least 1"));
        }
        if self.context_bytes == 0 {
            return Err(invalid(format!("{section}.context_bytes"), "must be at least 1"));
        }
        Ok(())
    }
}

impl UpstreamConfig {
    /// Reads the secret key from the environment variable or file named in the config.
    pub fn load_api_key(&self, index: usize) -> Result<Option<Secret>, ConfigError> {
        if let Some(var) = &self.api_key_env {
            return match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(Secret::new(value.trim()))),
                _ => Err(invalid(
                    format!("upstreams[{index}].api_key_env"),
                    format!("names the environment variable {var}, which is not set"),
                )),
            };
        }
        if let Some(path) = &self.api_key_file {
            return match std::fs::read_to_string(path) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(Secret::new(value.trim()))),
                Ok(_) => Err(invalid(
                    format!("upstreams[{index}].api_key_file"),
                    format!("{} is empty", path.display()),
                )),
                Err(e) => Err(invalid(
                    format!("upstreams[{index}].api_key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )),
            };
        }
        Ok(None)
    }
}

/// `#rgb` or `#rrggbb`: the only colour syntax accepted, since it ends up in the widget's CSS.
pub fn is_hex_color(value: &str) -> bool {
    value
        .strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(toml: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn an_empty_file_gives_the_embedded_defaults() {
        let config = load_toml("").unwrap();
        assert_eq!(config.server.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.database.url, "sqlite://confab.db");
        assert!(config.upstreams.is_empty());
    }

    #[test]
    fn the_documented_example_config_is_valid_and_shows_the_defaults() {
        let example = load_toml(include_str!("../../confab.example.toml")).unwrap();
        assert_eq!(
            serde_json::to_value(&example).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }

    #[test]
    fn links_for_operators_point_where_the_admin_api_is_reached() {
        let url = |toml: &str| load_toml(toml).unwrap().admin_public_url();
        assert_eq!(url(""), None);
        let shared = "[server]\npublic_url = \"https://chat.example/\"\n";
        assert_eq!(url(shared).as_deref(), Some("https://chat.example"));
        // An admin listener of its own is not reached at the public URL.
        let own = format!("{shared}[admin]\nlisten = \"127.0.0.1:8081\"\n");
        assert_eq!(url(&own), None);
        let named = format!("{own}public_url = \"https://ops.example\"\n");
        assert_eq!(url(&named).as_deref(), Some("https://ops.example"));
        let bad = load_toml("[admin]\npublic_url = \"ftp://ops.example\"\n").unwrap_err();
        assert!(bad.to_string().contains("admin.public_url"), "{bad}");
    }

    #[test]
    fn the_reservation_journal_sits_beside_the_sqlite_file_unless_set() {
        let journal = |toml: &str| load_toml(toml).unwrap().journal_dir();
        assert_eq!(journal(""), Some(PathBuf::from("confab.db.reservations")));
        assert_eq!(
            journal("[database]\nurl = \"sqlite:///var/lib/confab/c.db?mode=rwc\""),
            Some(PathBuf::from("/var/lib/confab/c.db.reservations"))
        );
        assert_eq!(journal("[database]\nurl = \"sqlite::memory:\""), None);
        assert_eq!(journal("[database]\nurl = \"sqlite://x?mode=memory\""), None);
        assert_eq!(
            journal("[database]\nurl = \"sqlite::memory:\"\n[usage]\njournal_dir = \"/j\""),
            Some(PathBuf::from("/j"))
        );
    }

    #[test]
    fn the_reservation_journal_of_a_postgres_relay_is_in_its_working_directory() {
        let journal = |toml: &str| load_toml(toml).unwrap().journal_dir();
        assert_eq!(
            journal("[database]\nurl = \"postgres://confab:pw@db.example/confab\""),
            Some(PathBuf::from("confab.reservations"))
        );
        assert_eq!(
            journal("[database]\nurl = \"postgresql://db/c\"\n[usage]\njournal_dir = \"/j\""),
            Some(PathBuf::from("/j"))
        );
    }

    #[test]
    fn a_database_url_of_no_known_engine_is_rejected_without_being_echoed() {
        let err = load_toml("[database]\nurl = \"mysql://root:hunter2@db/confab\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration: `database.url` must be a sqlite: URL (for example \
             sqlite://confab.db) or a postgres:// URL (for example \
             postgres://confab:PASSWORD@localhost/confab)"
        );
        let err = load_toml("[database]\nurl = \"postgres://confab:hunter2@db:port/confab\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration: `database.url` is not a valid postgres:// URL: invalid port \
             number"
        );
    }

    #[test]
    fn a_database_password_never_shows_in_the_config_debug_output() {
        let config =
            load_toml("[database]\nurl = \"postgres://confab:s3cret-pw@db.internal:5432/confab\"")
                .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = load_toml("[server]\nlisten_on = \"x\"").unwrap_err().to_string();
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_field() {
        let err = load_toml("[timeouts]\nidle_ms = \"soon\"").unwrap_err().to_string();
        assert!(err.contains("timeouts.idle_ms"), "{err}");
    }

    #[test]
    fn an_openai_upstream_needs_a_base_url() {
        let err = load_toml("[[upstreams]]\nname = \"a\"\nkind = \"openai\"\nmodels = [\"m\"]")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration: `upstreams[0].base_url` is required for kind `openai`"
        );
    }

    #[test]
    fn a_directory_max_staleness_shorter_than_four_polls_is_rejected() {
        let err = load_toml("[database]\ndirectory_max_stale_ms = 250").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: `database.directory_max_stale_ms` must be at least 1000 (the \
             directory is checked every 250 ms)"
        );
    }

    #[test]
    fn embeddings_name_an_upstream_with_an_embeddings_api() {
        let upstreams = "[[upstreams]]\nname = \"oa\"\nkind = \"openai\"\n\
                         base_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"m\"]\n\
                         [[upstreams]]\nname = \"an\"\nkind = \"anthropic\"\n\
                         base_url = \"http://127.0.0.1:9\"\nmodels = [\"c\"]\n";
        let with = |section: &str| load_toml(&format!("{upstreams}{section}"));
        let config =
            with("[knowledge.embeddings]\nupstream = \"oa\"\nmodel = \"e\"\ndimensions = 256")
                .unwrap();
        let embeddings = config.knowledge.embeddings.unwrap();
        assert_eq!(embeddings.key(), "oa:e@256");
        assert_eq!((embeddings.batch, embeddings.query_timeout_ms), (64, 1_000));
        assert!(load_toml("").unwrap().knowledge.embeddings.is_none(), "off by default");

        let err = with("[knowledge.embeddings]\nupstream = \"nope\"\nmodel = \"e\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`knowledge.embeddings.upstream` names no `[[upstreams]]` entry: `nope`"),
            "{err}"
        );
        let err = with("[knowledge.embeddings]\nupstream = \"an\"\nmodel = \"e\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`an` is of kind `anthropic`, which has no embeddings API"), "{err}");
        let err = with("[knowledge.embeddings]\nupstream = \"oa\"\nmodel = \"e\"\nbatch = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("knowledge.embeddings.batch"), "{err}");
    }

    #[test]
    fn a_model_served_twice_is_rejected() {
        let err = load_toml(
            "[[upstreams]]\nname = \"a\"\nkind = \"demo\"\nmodels = [\"m\"]\n\
             [[upstreams]]\nname = \"b\"\nkind = \"demo\"\nmodels = [\"m\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`upstreams[1].models` model `m` is already served by upstream `a`"));
    }

    #[test]
    fn redis_is_configured_by_its_url_and_checked_field_by_field() {
        assert!(load_toml("").unwrap().redis.settings(&BudgetsConfig::default()).is_none());
        let config = load_toml(
            "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\nlease_ms = 500\n\
             [budgets]\non_store_error = \"open\"",
        )
        .unwrap();
        let settings = config.redis.settings(&config.budgets).unwrap();
        assert_eq!(settings.lease, Duration::from_millis(500));
        assert_eq!(settings.on_store_error, confab_metering::OnStoreError::Open);
        assert_eq!(
            format!("{:?}", config.redis.url.unwrap()),
            "\"redis://[redacted]@127.0.0.1:6379/0\""
        );
        let err = load_toml("[redis]\nurl = \"http://x\"").unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: `redis.url` must be a redis:// or rediss:// URL");
        let err = load_toml("[redis]\nexpected_instances = 0").unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: `redis.expected_instances` must be greater than 0");
    }

    #[test]
    fn a_secret_never_prints() {
        assert_eq!(format!("{:?}", Secret::new("sk-live")), "[redacted]");
    }
}
