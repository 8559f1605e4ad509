//! `GET /v1/models`: the models the calling key may use, and nothing else.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use confab_protocol::{Model, ModelList};

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
) -> Result<Json<ModelList>, ApiError> {
    caller.require(Scope::Models)?;
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
            Some(Model {
                id: id.clone(),
                object: "model".into(),
                created,
                owned_by: route.targets[0].upstream.clone(),
            })
        })
        .collect();
    Ok(Json(ModelList { object: "list".into(), data }))
}
