//! `GET /v1/usage?days=N`: a secret key with the `usage` scope reads its own usage.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::store::Scope;
use crate::usage::{self, MAX_DAYS, UsageReport};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", get(own_usage))
}

/// `days` from the query string: 1 to 366, 30 when absent.
pub fn days_param(query: Option<&str>) -> Result<u32, ApiError> {
    let mut days = 30;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "days" {
            days = value.parse::<u32>().ok().filter(|d| (1..=MAX_DAYS).contains(d)).ok_or_else(
                || {
                    ApiError::invalid(
                        "invalid_value",
                        format!("`days` must be a whole number from 1 to {MAX_DAYS}"),
                    )
                },
            )?;
        }
    }
    Ok(days)
}

async fn own_usage(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageReport>, ApiError> {
    caller.require(Scope::Usage)?;
    let days = days_param(query.as_deref())?;
    let Caller::Key(key) = &caller else {
        return Err(ApiError::internal(anyhow::anyhow!("a site key passed the usage scope check")));
    };
    let report = usage::report(state.store.as_ref(), days, None, Some(&key.id), crate::unix_now())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}
