//! `[webhooks]`: the delivery settings and the endpoints as configured ([`WebhooksConfig`],
//! [`EndpointConfig`]), their validation, and [`Endpoint`], an endpoint ready to deliver to
//! (its signing secret read).
//!
//! This is the only webhooks module that uses the configuration's shared pieces, and it takes
//! them from the leaf module `config_base`, not from `config` (which imports
//! [`WebhooksConfig`]): so `config` and `webhooks` do not import each other.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::config_base::ConfigError;
use crate::config_base::{Secret, parse_http_url};

use super::events::EventKind;

/// `[webhooks]`: delivery settings and the endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// A delivery is attempted this many times at most, then kept as failed (a dead letter).
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles after each failed attempt...
    pub initial_backoff_ms: u64,
    /// ... up to this.
    pub max_backoff_ms: u64,
    /// An endpoint must answer within this time (connecting included).
    pub timeout_ms: u64,
    /// How often the worker looks for due deliveries (new events wake it at once).
    pub poll_ms: u64,
    /// Delivered and failed deliveries are deleted after this many days.
    pub retention_days: u32,
    /// The most events the outbox keeps waiting to be delivered (not yet dispatched, or with a
    /// delivery still to make). Past it, new `request.completed` events are dropped (counted
    /// and logged); `budget.threshold` and `key.revoked` are always recorded.
    pub max_backlog: u64,
    /// `[[webhooks.endpoints]]`.
    pub endpoints: Vec<EndpointConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 600_000,
            timeout_ms: 10_000,
            poll_ms: 1_000,
            retention_days: 7,
            max_backlog: 10_000,
            endpoints: Vec::new(),
        }
    }
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// Environment variable holding the signing secret...
    #[serde(default)]
    pub secret_env: Option<String>,
    /// ... or a file holding it (surrounding whitespace is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event names: `budget.threshold`, `key.revoked`, `request.completed`.
    pub events: Vec<String>,
    /// Only this site's events; without it, every event.
    #[serde(default)]
    pub site: Option<String>,
    /// The share of `request.completed` events sent, in percent (decided once per event).
    #[serde(default = "every_request")]
    pub request_completed_sample_percent: u8,
}

fn every_request() -> u8 {
    100
}

/// A signing secret shorter than this is refused.
pub const MIN_SECRET_LEN: usize = 16;

pub(super) fn invalid(field: String, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, problem: problem.into() }
}

impl WebhooksConfig {
    /// Checks what types alone cannot (secrets are read later, by
    /// [`Webhooks::start`](super::Webhooks::start)).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("max_attempts", u64::from(self.max_attempts)),
            ("initial_backoff_ms", self.initial_backoff_ms),
            ("max_backoff_ms", self.max_backoff_ms),
            ("timeout_ms", self.timeout_ms),
            ("poll_ms", self.poll_ms),
            ("retention_days", u64::from(self.retention_days)),
            ("max_backlog", self.max_backlog),
        ] {
            if value == 0 {
                return Err(invalid(format!("webhooks.{field}"), "must be greater than 0"));
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(invalid(
                "webhooks.max_backoff_ms".into(),
                "must be at least webhooks.initial_backoff_ms",
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = |name: &str| format!("webhooks.endpoints[{i}].{name}");
            parse_http_url(&endpoint.url).map_err(|problem| invalid(field("url"), problem))?;
            if let Some(j) = self.endpoints[..i].iter().position(|e| e.url == endpoint.url) {
                return Err(invalid(
                    field("url"),
                    format!("is already the url of webhooks.endpoints[{j}]"),
                ));
            }
            match (&endpoint.secret_env, &endpoint.secret_file) {
                (None, None) => {
                    return Err(invalid(
                        field("secret_env"),
                        "or secret_file is required: deliveries are signed with that secret",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        field("secret_file"),
                        "cannot be set together with secret_env; choose one",
                    ));
                }
                _ => {}
            }
            if endpoint.events.is_empty() {
                return Err(invalid(field("events"), format!("must list events ({})", known())));
            }
            for name in &endpoint.events {
                if EventKind::from_name(name).is_none() {
                    return Err(invalid(
                        field("events"),
                        format!("has an unknown event `{name}` (known: {})", known()),
                    ));
                }
            }
            if endpoint.site.as_deref().is_some_and(|site| site.trim().is_empty()) {
                return Err(invalid(field("site"), "must not be empty (leave it out for all)"));
            }
            if !(1..=100).contains(&endpoint.request_completed_sample_percent) {
                return Err(invalid(
                    field("request_completed_sample_percent"),
                    "must be between 1 and 100",
                ));
            }
        }
        Ok(())
    }
}

fn known() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

/// An endpoint ready to deliver to: its secret read, its events parsed.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// As configured: deliveries in the outbox name their endpoint by it.
    pub(super) url: String,
    /// `scheme://host[:port]`: what logs show.
    pub(super) origin: String,
    pub(super) secret: Secret,
    pub(super) events: HashSet<EventKind>,
    pub(super) site: Option<String>,
    pub(super) sample_percent: u8,
}

impl Endpoint {
    pub(super) fn load(index: usize, config: &EndpointConfig) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("webhooks.endpoints[{index}].{name}");
        let url = parse_http_url(&config.url).map_err(|problem| invalid(field("url"), problem))?;
        let (source, value) = match (&config.secret_env, &config.secret_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(value) => ("secret_env", value),
                Err(_) => {
                    return Err(invalid(
                        field("secret_env"),
                        format!("names the environment variable {var}, which is not set"),
                    ));
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(value) => ("secret_file", value),
                Err(e) => {
                    return Err(invalid(
                        field("secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            },
            (None, None) => {
                return Err(invalid(field("secret_env"), "or secret_file is required"));
            }
        };
        let value = value.trim();
        if value.len() < MIN_SECRET_LEN {
            return Err(invalid(
                field(source),
                format!("the signing secret must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        Ok(Self {
            url: config.url.clone(),
            origin: url.origin().ascii_serialization(),
            secret: Secret::new(value),
            events: config.events.iter().filter_map(|name| EventKind::from_name(name)).collect(),
            site: config.site.clone(),
            sample_percent: config.request_completed_sample_percent,
        })
    }

    /// Whether the endpoint subscribes to this kind of event about this site (`None`: an event
    /// about no site, such as a key's).
    pub(super) fn wants(&self, kind: EventKind, site_id: Option<&str>) -> bool {
        self.events.contains(&kind) && self.site.as_deref().is_none_or(|site| site_id == Some(site))
    }

    /// Whether this event is sent at all: `request.completed` events are sampled.
    pub(super) fn samples(&self, kind: EventKind) -> bool {
        kind != EventKind::RequestCompleted
            || self.sample_percent >= 100
            || rand::random_range(0..100u8) < self.sample_percent
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{SqliteStore, Store};
    use crate::webhooks::Webhooks;

    fn endpoint(url: &str) -> EndpointConfig {
        EndpointConfig {
            url: url.into(),
            secret_env: Some("CONFAB_TEST_WEBHOOK_SECRET_UNSET".into()),
            secret_file: None,
            events: vec!["key.revoked".into()],
            site: None,
            request_completed_sample_percent: 100,
        }
    }

    fn with(endpoints: Vec<EndpointConfig>) -> WebhooksConfig {
        WebhooksConfig { endpoints, ..WebhooksConfig::default() }
    }

    fn error_of(config: &WebhooksConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        WebhooksConfig::default().validate().unwrap();
        with(vec![endpoint("https://hooks.example/confab")]).validate().unwrap();
    }

    #[test]
    fn the_endpoint_commented_out_in_the_example_config_is_valid() {
        let example = include_str!("../../../confab.example.toml");
        let start = example.find("# [[webhooks.endpoints]]").unwrap();
        let uncommented: String = example[start..]
            .lines()
            .map_while(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        use figment::providers::Format;
        let config: WebhooksConfig =
            figment::Figment::from(figment::providers::Toml::string(&uncommented))
                .extract_inner("webhooks")
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(config.endpoints[0].events.len(), 3);
    }

    #[test]
    fn a_bad_url_is_named() {
        assert_eq!(
            error_of(&with(vec![endpoint("https://ok.example"), endpoint("ftp://hooks.example")])),
            "invalid configuration: `webhooks.endpoints[1].url` must be an http:// or https:// \
             URL with a host"
        );
        assert_eq!(
            error_of(&with(vec![endpoint("https://a.example/x"), endpoint("https://a.example/x")])),
            "invalid configuration: `webhooks.endpoints[1].url` is already the url of \
             webhooks.endpoints[0]"
        );
    }

    #[test]
    fn an_unknown_event_is_named() {
        let mut bad = endpoint("https://hooks.example");
        bad.events = vec!["key.revoked".into(), "key.created".into()];
        assert_eq!(
            error_of(&with(vec![bad])),
            "invalid configuration: `webhooks.endpoints[0].events` has an unknown event \
             `key.created` (known: budget.threshold, key.revoked, request.completed, \
             conversation.handoff)"
        );
    }

    #[test]
    fn an_endpoint_needs_exactly_one_secret_source() {
        let mut none = endpoint("https://hooks.example");
        none.secret_env = None;
        assert_eq!(
            error_of(&with(vec![none])),
            "invalid configuration: `webhooks.endpoints[0].secret_env` or secret_file is \
             required: deliveries are signed with that secret"
        );
        let mut both = endpoint("https://hooks.example");
        both.secret_file = Some("/run/secrets/hook".into());
        assert!(error_of(&with(vec![both])).contains("`webhooks.endpoints[0].secret_file`"));
    }

    #[test]
    fn a_sample_percent_out_of_range_is_refused() {
        let mut zero = endpoint("https://hooks.example");
        zero.request_completed_sample_percent = 0;
        assert!(
            error_of(&with(vec![zero]))
                .contains("`webhooks.endpoints[0].request_completed_sample_percent`")
        );
        let config = WebhooksConfig { poll_ms: 0, ..WebhooksConfig::default() };
        assert_eq!(
            error_of(&config),
            "invalid configuration: `webhooks.poll_ms` must be greater than 0"
        );
        let config = WebhooksConfig { max_backlog: 0, ..WebhooksConfig::default() };
        assert_eq!(
            error_of(&config),
            "invalid configuration: `webhooks.max_backlog` must be greater than 0"
        );
    }

    #[tokio::test]
    async fn a_missing_or_short_secret_fails_start_up_naming_the_field_and_never_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url, 2).await.unwrap());

        let unset = with(vec![endpoint("https://hooks.example")]);
        let error = Webhooks::start(&unset, Arc::clone(&store)).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid configuration: `webhooks.endpoints[0].secret_env` names the environment \
             variable CONFAB_TEST_WEBHOOK_SECRET_UNSET, which is not set"
        );

        let file = dir.path().join("hook.secret");
        std::fs::write(&file, "too-short\n").unwrap();
        let mut short = endpoint("https://hooks.example");
        short.secret_env = None;
        short.secret_file = Some(file.clone());
        let error = Webhooks::start(&with(vec![short.clone()]), Arc::clone(&store))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid configuration: `webhooks.endpoints[0].secret_file` the signing secret must \
             be at least 16 characters"
        );
        assert!(!error.contains("too-short"));

        std::fs::write(&file, "  a-long-enough-signing-secret\n").unwrap();
        let webhooks = Webhooks::start(&with(vec![short]), store).unwrap();
        assert_eq!(webhooks.endpoints[0].secret.expose(), "a-long-enough-signing-secret");
        assert_eq!(webhooks.endpoints[0].origin, "https://hooks.example");
        assert!(!format!("{webhooks:?}").contains("a-long-enough"));
    }

    #[test]
    fn a_site_scoped_endpoint_wants_only_its_sites_events() {
        let endpoint = Endpoint {
            url: "https://hooks.example".into(),
            origin: "https://hooks.example".into(),
            secret: Secret::new("s"),
            events: [EventKind::RequestCompleted, EventKind::BudgetThreshold].into(),
            site: Some("site_a".into()),
            sample_percent: 100,
        };
        assert!(endpoint.wants(EventKind::RequestCompleted, Some("site_a")));
        assert!(!endpoint.wants(EventKind::RequestCompleted, Some("site_b")));
        assert!(!endpoint.wants(EventKind::RequestCompleted, None), "a key's request");
        assert!(!endpoint.wants(EventKind::KeyRevoked, None), "not subscribed");
        let global = Endpoint { site: None, ..endpoint };
        assert!(global.wants(EventKind::RequestCompleted, Some("site_b")));
        assert!(global.wants(EventKind::BudgetThreshold, None));
        assert!(global.samples(EventKind::RequestCompleted));
    }
}
