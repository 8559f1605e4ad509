//! `GET /v1/models`: the models the calling key may use, and nothing else.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use confab_protocol::{Model, ModelDetail, ModelList, ModelPricing};

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::store::Scope;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

#[tracing::instrument(skip_all)]
async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(Scope::Models)?;
    let detail = detail_param(query.as_deref())?;
    let (models, created): (&[String], i64) = match &caller {
        Caller::Site(site) => (&site.settings.models, site.created_at),
        Caller::Key(key) if key.models.is_empty() => (state.upstreams.models(), key.created_at),
        Caller::Key(key) => (&key.models, key.created_at),
    };
    let created = u64::try_from(created).unwrap_or_default();
    // A model that no configured upstream serves (any more) cannot be used, so it is not listed.
    let data = models
        .iter()
        .filter_map(|id| {
            let route = state.upstreams.route(id)?;
            let first = &route.targets[0];
            let detail = detail.then(|| ModelDetail {
                targets: route.targets.iter().map(|target| target.label.clone()).collect(),
                context_length: route.context_length,
                pricing: state
                    .metering
                    .prices
                    .price(&first.model)
                    .or_else(|| state.metering.prices.price(id))
                    .map(|price| ModelPricing {
                        input_per_million: price.input_per_million,
                        output_per_million: price.output_per_million,
                        cache_read_per_million: price.cache_read_per_million,
                        cache_write_per_million: price.cache_write_per_million,
                    }),
            });
            Some(Model {
                id: id.clone(),
                object: "model".into(),
                created,
                owned_by: first.upstream.clone(),
                detail,
            })
        })
        .collect();
    Ok(Json(ModelList { object: "list".into(), data }))
}

/// `?detail=true` (or `1`): whether to add each model's targets, context length and prices.
fn detail_param(query: Option<&str>) -> Result<bool, ApiError> {
    let mut detail = false;
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "detail" {
            continue;
        }
        detail = match value {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::invalid("invalid_value", "detail must be true or false"));
            }
        };
    }
    Ok(detail)
}
