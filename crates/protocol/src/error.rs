//! The OpenAI error envelope: `{"error":{"message","type","code"}}`.

use serde::{Deserialize, Serialize};

/// The body of every error response and of the `error` event that ends a failed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A sentence for a person: what was wrong and, where it helps, what to do.
    pub message: String,
    /// The error class (`invalid_request_error`, `rate_limit_error`, ...). A string rather than an
    /// enum so that a widget keeps working when the relay adds a class.
    #[serde(rename = "type")]
    pub kind: String,
    /// A stable machine-readable code (`origin_not_allowed`, `upstream_timeout`, ...).
    pub code: String,
}

impl ErrorEnvelope {
    pub fn new(
        kind: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { error: ErrorBody { message: message.into(), kind: kind.into(), code: code.into() } }
    }
}
