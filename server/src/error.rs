//! The HTTP boundary's error type. Every failure a client can see is one of these variants, and
//! every one renders the OpenAI envelope `{"error":{"message","type","code"}}`.
//!
//! Errors are not logged here: `into_response` stores the detail in the response's extensions and
//! the request-logging middleware logs it once, next to the status.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_protocol::ErrorEnvelope;

use confab_providers::{TimeoutKind, UpstreamError};

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request_error`: the request is malformed or breaks a limit.
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: Cow<'static, str> },
    /// 413 `invalid_request_error`: the body is larger than `limits.max_body_bytes`.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 408 `invalid_request_error`/`request_timeout`: the body did not arrive in time.
    #[error("the request body was not received within {}", seconds(*.limit))]
    RequestTimeout { limit: Duration },
    /// 401 `authentication_error`: no key, or a key the relay does not know.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: &'static str },
    /// 429 `rate_limit_error`/`rate_limit_exceeded`: a limit of the key, site or visitor; the
    /// response carries `Retry-After` and the `X-RateLimit-*` headers.
    #[error("{}", .0.message())]
    RateLimited(Box<crate::limits::Rejected>),
    /// 404 `invalid_request_error`/`not_found`: no such site or key (admin API).
    #[error("no {what} with id `{id}`")]
    NotFound { what: &'static str, id: String },
    /// 429 `rate_limit_error`/`too_many_attempts`: too many wrong admin tokens from one address.
    #[error("too many wrong admin tokens; wait ten minutes")]
    TooManyAttempts,
    /// 402 `insufficient_quota`: the request does not fit the key's or site's budget.
    #[error("{0}")]
    InsufficientQuota(Box<crate::budget::Exhausted>),
    /// 403 `permission_error`: a valid key used from somewhere it may not be.
    #[error("{message}")]
    PermissionDenied { code: &'static str, message: Cow<'static, str> },
    /// 409 `invalid_request_error`: the request does not fit the resource's state (a person
    /// holds the conversation the bot was asked to answer).
    #[error("{message}")]
    Conflict { code: &'static str, message: Cow<'static, str> },
    /// 404 `invalid_request_error`/`model_not_found`: the key may not use the model it named.
    #[error("the model `{model}` does not exist or this key may not use it")]
    ModelNotFound { model: String },
    /// 404 `invalid_request_error`/`stream_not_found`: no stream with this id that the caller
    /// may follow (it never existed, it is another caller's, or it is no longer kept): the
    /// three are never told apart.
    #[error("no stream with this id (it may have ended too long ago)")]
    StreamNotFound,
    /// 404 `invalid_request_error`/`not_found`: no such route.
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    /// 405 `invalid_request_error`/`method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 503 `service_unavailable_error`/`model_unavailable`: no configured upstream serves the
    /// site's model.
    #[error("the model `{model}` is not available right now")]
    ModelUnavailable { model: String },
    /// 503 `service_unavailable_error`: the relay cannot serve the request safely right now (its
    /// usage could not be recorded, its directory of keys is too stale to trust).
    #[error("{message}")]
    Unavailable { code: &'static str, message: &'static str },
    /// 503 `service_unavailable_error`/`budget_unavailable`: the shared budget store (Redis)
    /// cannot be reached and `budgets.on_store_error` is `closed`; the response carries
    /// `Retry-After` (whole seconds).
    #[error("budgets cannot be checked right now; retry in {retry_after} s")]
    BudgetUnavailable { retry_after: u64 },
    /// 429 `rate_limit_error`/`upstream_rate_limited`: the provider is limiting the relay.
    #[error("the model provider is rate limiting requests; retry later")]
    UpstreamRateLimited { retry_after: Option<u64> },
    /// 503 `service_unavailable_error`/`upstream_overloaded`: the provider says it is
    /// overloaded (Anthropic's 529); `Retry-After` when it sent one.
    #[error("the model provider is overloaded; retry later")]
    UpstreamOverloaded { retry_after: Option<u64> },
    /// 502 `upstream_error`: the provider failed or answered something unusable.
    #[error("{message}")]
    Upstream { code: &'static str, message: Cow<'static, str> },
    /// 504 `timeout_error`/`upstream_timeout`: the provider did not answer in time.
    #[error("{message}")]
    UpstreamTimeout { message: Cow<'static, str> },
    /// 500 `api_error`/`internal_error`: a bug or a storage failure. The detail is logged, never
    /// sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// What the logging middleware logs about a failed request: for a 500 the internal cause (never
/// sent to the client), otherwise the message the client got.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidRequest { code, message: message.into() }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            Self::ModelNotFound { .. }
            | Self::RouteNotFound { .. }
            | Self::NotFound { .. }
            | Self::StreamNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ModelUnavailable { .. }
            | Self::Unavailable { .. }
            | Self::BudgetUnavailable { .. }
            | Self::UpstreamOverloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamRateLimited { .. } | Self::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::InsufficientQuota(_) => StatusCode::PAYMENT_REQUIRED,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope a client sees. Also used for the `error` event that ends a failed stream.
    pub fn envelope(&self) -> ErrorEnvelope {
        let (kind, code) = match self {
            Self::InvalidRequest { code, .. } | Self::Conflict { code, .. } => {
                ("invalid_request_error", *code)
            }
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "body_too_large"),
            Self::RequestTimeout { .. } => ("invalid_request_error", "request_timeout"),
            Self::Unauthenticated { code, .. } => ("authentication_error", *code),
            Self::PermissionDenied { code, .. } => ("permission_error", *code),
            Self::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            Self::StreamNotFound => ("invalid_request_error", "stream_not_found"),
            Self::RouteNotFound { .. } | Self::NotFound { .. } => {
                ("invalid_request_error", "not_found")
            }
            Self::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            Self::ModelUnavailable { .. } => ("service_unavailable_error", "model_unavailable"),
            Self::Unavailable { code, .. } => ("service_unavailable_error", *code),
            Self::BudgetUnavailable { .. } => ("service_unavailable_error", "budget_unavailable"),
            Self::UpstreamRateLimited { .. } => ("rate_limit_error", "upstream_rate_limited"),
            Self::UpstreamOverloaded { .. } => ("service_unavailable_error", "upstream_overloaded"),
            Self::RateLimited(_) => ("rate_limit_error", "rate_limit_exceeded"),
            Self::TooManyAttempts => ("rate_limit_error", "too_many_attempts"),
            Self::InsufficientQuota(_) => ("insufficient_quota", "insufficient_quota"),
            Self::Upstream { code, .. } => ("upstream_error", *code),
            Self::UpstreamTimeout { .. } => ("timeout_error", "upstream_timeout"),
            Self::Internal(_) => ("api_error", "internal_error"),
        };
        // `Display` of `Internal` is deliberately generic: the source is never rendered.
        ErrorEnvelope::new(kind, code, self.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.envelope())
            .unwrap_or_else(|_| r#"{"error":{"message":"internal error","type":"api_error","code":"internal_error"}}"#.into());
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response();
        if let Self::UpstreamRateLimited { retry_after: Some(seconds) }
        | Self::UpstreamOverloaded { retry_after: Some(seconds) }
        | Self::BudgetUnavailable { retry_after: seconds } = &self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if let Self::RateLimited(rejected) = &self {
            rejected.apply(response.headers_mut());
        }
        // A 4xx is logged by its code: its message may quote what the client sent (a model
        // name, a JSON error's snippet), which must not reach the log as it came.
        let detail = match &self {
            Self::Internal(source) => format!("{source:#}"),
            other if other.status().is_server_error() => other.to_string(),
            other => other.envelope().error.code,
        };
        response.extensions_mut().insert(ErrorDetail(detail));
        response
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        Self::from(&error)
    }
}

impl From<&UpstreamError> for ApiError {
    /// What the client is told about an upstream failure.
    fn from(error: &UpstreamError) -> Self {
        match error {
            UpstreamError::Connect => Self::Upstream {
                code: "upstream_unreachable",
                message: "the model provider could not be reached".into(),
            },
            UpstreamError::Timeout { kind, after } => Self::UpstreamTimeout {
                message: match kind {
                    TimeoutKind::Connect => format!(
                        "could not connect to the model provider within {}",
                        seconds(*after)
                    ),
                    TimeoutKind::FirstByte => format!(
                        "the model provider did not start answering within {}",
                        seconds(*after)
                    ),
                    TimeoutKind::Answer => format!(
                        "the model provider did not finish its answer within {}",
                        seconds(*after)
                    ),
                    TimeoutKind::Stream => format!(
                        "the answer ran longer than the relay allows ({}); it is incomplete",
                        seconds(*after)
                    ),
                    TimeoutKind::Idle => format!(
                        "the model provider stopped sending for {}; the answer is incomplete",
                        seconds(*after)
                    ),
                }
                .into(),
            },
            UpstreamError::Cut => Self::Unavailable {
                code: "relay_shutting_down",
                message: "the relay is shutting down; the answer is incomplete",
            },
            UpstreamError::Unavailable => Self::Unavailable {
                code: "upstream_unavailable",
                message: "every provider of this model is failing; retry later",
            },
            UpstreamError::Status { status: 429, retry_after } => {
                Self::UpstreamRateLimited { retry_after: *retry_after }
            }
            UpstreamError::Status { status: 529, retry_after } => {
                Self::UpstreamOverloaded { retry_after: *retry_after }
            }
            UpstreamError::Status { status: 401 | 403, .. } => Self::Upstream {
                code: "upstream_auth_failed",
                message: "the model provider rejected the relay's credentials".into(),
            },
            UpstreamError::Status { status, .. } => Self::Upstream {
                code: "upstream_error",
                message: format!("the model provider failed (HTTP {status})").into(),
            },
            UpstreamError::Dropped => Self::Upstream {
                code: "upstream_disconnected",
                message: "the model provider closed the connection before the answer was complete"
                    .into(),
            },
            UpstreamError::Protocol(_) => Self::Upstream {
                code: "upstream_invalid_response",
                message: "the model provider sent a response the relay could not read".into(),
            },
            UpstreamError::Reported => Self::Upstream {
                code: "upstream_error",
                message: "the model provider reported an error while answering".into(),
            },
        }
    }
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{} s", ms / 1000) } else { format!("{ms} ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_says_nothing_internal() {
        let error = ApiError::internal(anyhow::anyhow!("database is locked at /var/lib/x"));
        let envelope = error.envelope();
        assert_eq!(envelope, ErrorEnvelope::new("api_error", "internal_error", "internal error"));
    }

    #[test]
    fn an_upstream_rate_limit_carries_retry_after() {
        let response = ApiError::UpstreamRateLimited { retry_after: Some(7) }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn an_overloaded_provider_is_a_503_that_says_so() {
        let error = ApiError::from(UpstreamError::Status { status: 529, retry_after: Some(30) });
        assert_eq!(
            error.envelope(),
            ErrorEnvelope::new(
                "service_unavailable_error",
                "upstream_overloaded",
                "the model provider is overloaded; retry later"
            )
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
