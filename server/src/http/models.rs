//! `GET /v1/models`: the models the calling key may use, and nothing else.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use confab_protocol::{Model, ModelList};

use super::{AppState, SiteAuth};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

#[tracing::instrument(skip_all)]
async fn list_models(State(state): State<AppState>, auth: SiteAuth) -> Json<ModelList> {
    let created = u64::try_from(auth.site.created_at).unwrap_or_default();
    // A site model that no configured upstream serves (any more) cannot be used, so it is not
    // listed.
    let data = auth
        .site
        .models
        .iter()
        .filter_map(|id| {
            let upstream = state.upstreams.for_model(id)?;
            Some(Model {
                id: id.clone(),
                object: "model".into(),
                created,
                owned_by: upstream.name().to_owned(),
            })
        })
        .collect();
    Json(ModelList { object: "list".into(), data })
}
