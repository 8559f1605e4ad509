//! `ApiJson<T>`: a JSON body extractor whose every rejection is an `ApiError` in the OpenAI
//! envelope, with a message that says what was wrong (and where, as a field path).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        parse(&read_body(request, state).await?).map(ApiJson)
    }
}

/// Like [`ApiJson`], for a body that may be left out: none at all (or only whitespace) is
/// `T::default()`, for operations whose every option has a default.
#[derive(Debug, Clone)]
pub struct OptionalApiJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        if bytes.trim_ascii().is_empty() {
            return Ok(OptionalApiJson(T::default()));
        }
        parse(&bytes).map(OptionalApiJson)
    }
}

/// The whole body, within `timeouts.request_body_ms` and `limits.max_body_bytes`.
async fn read_body(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.config.timeouts.request_body();
    tokio::time::timeout(limit, Bytes::from_request(request, state))
        .await
        .map_err(|_| ApiError::RequestTimeout { limit })?
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: state.config.limits.max_body_bytes }
            } else {
                ApiError::invalid("invalid_body", "the request body could not be read")
            }
        })
}

/// Parses a JSON body, reporting UTF-8, syntax and type errors separately.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::invalid(
            "invalid_body",
            format!("request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "invalid_json",
            "request body is empty; expected a JSON object",
        ));
    }
    // Derived structs also accept a JSON array (as a tuple), which only yields confusing errors.
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid("invalid_json", "request body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid("invalid_json", format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::invalid("invalid_field", format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid("invalid_field", format!("invalid `{path}`: {inner}"))
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::invalid("invalid_json", format!("request body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// `ApiQuery<T>`: the query string parsed into `T`, or a 400 `invalid_query` in the envelope
/// (axum's own `Query` answers a rejection in plain text).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid("invalid_query", rejection.body_text()))
    }
}
