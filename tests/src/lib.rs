//! Helpers for Confab's end-to-end tests: a scriptable HTTP mock of an OpenAI-compatible upstream,
//! a real relay started on `127.0.0.1:0` with a fresh SQLite database, an SSE reader, and a
//! scriptable webhook receiver.
//!
//! Everything here talks to 127.0.0.1 only, and every wait is bounded.

pub mod faults;
pub mod mock;
pub mod receiver;
pub mod relay;
pub mod servers;
pub mod sse;

pub use mock::{MOCK_MODEL_NAME, MockUpstream, Reply, Step};
pub use receiver::{WebhookReceiver, unused_address};
pub use relay::{
    SITE_ORIGIN, TestRelay, TestRelayBuilder, UPSTREAM_MODELS, UPSTREAM_SECRET, captured_logs,
    json_body, wait_for_log,
};
pub use sse::{read_events, read_raw};

use std::time::Duration;

/// Upper bound for any single wait in a test; a test that hits it has found a hang.
pub const WAIT: Duration = Duration::from_secs(10);
