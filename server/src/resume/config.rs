//! The `[resume]` section: how long an answer outlives its connection, and the bounds of what
//! is kept so that it can be followed again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_base::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// A streamed answer goes on this long after its last client left, so that one that comes
    /// back (`GET /v1/chat/streams/{id}`) loses nothing; then its upstream call is ended. 0:
    /// no stream can be resumed, and a client that leaves ends the upstream call at once.
    pub grace_ms: u64,
    /// A stream that has ended can be followed again for this long.
    pub keep_ms: u64,
    /// Events kept per stream; past it, the oldest are dropped.
    pub max_events: usize,
    /// Bytes of event data kept per stream; past it, the oldest events are dropped.
    pub max_bytes: usize,
    /// Streams held at once, running or ended. When it is reached, the stream that ended first
    /// is forgotten; if none has ended, a new answer streams without a log (as with
    /// `grace_ms = 0`).
    pub max_streams: usize,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            grace_ms: 60_000,
            keep_ms: 300_000,
            max_events: 4_096,
            max_bytes: 1_048_576,
            max_streams: 1_000,
        }
    }
}

impl ResumeConfig {
    /// Whether answers are resumable at all.
    pub fn enabled(&self) -> bool {
        self.grace_ms > 0
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    pub fn keep(&self) -> Duration {
        Duration::from_millis(self.keep_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value, least) in [
            ("resume.max_events", self.max_events, 16),
            ("resume.max_bytes", self.max_bytes, 4_096),
            ("resume.max_streams", self.max_streams, 1),
        ] {
            if value < least {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    problem: format!("must be at least {least}"),
                });
            }
        }
        Ok(())
    }
}
