//! The Confab relay as a library: `confab` (the binary) parses the command line and calls
//! [`cli::run`]; tests build an [`AppState`] and call [`serve`] on a listener of their own.

pub mod cli;
pub mod config;
pub mod config_base;
pub mod conversations;
pub mod cut;
pub mod error;
pub mod http;
pub mod journal;
pub mod keys;
pub mod knowledge;
pub mod logsafe;
pub mod meter;
pub mod metrics;
pub mod policy;
pub mod relay;
pub mod resume;
pub mod sitekey;
pub mod sites;
pub mod sse;
pub mod store;
pub mod upstreams;
pub mod usage;
pub mod visitor;
pub mod webhooks;

// Rate limits and budgets live in the `confab-metering` crate; they keep their paths here.
pub use confab_metering::{budget, limits};

pub use http::{AppState, router, serve};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch as SQLite stores them.
pub(crate) fn unix_now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

pub use confab_store::rfc3339;
