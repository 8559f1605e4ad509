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
    let data = auth
        .site
        .models
        .iter()
        .map(|id| Model {
            id: id.clone(),
            object: "model".into(),
            created,
            owned_by: state
                .upstreams
                .for_model(id)
                .map_or_else(|| "unavailable".to_owned(), |u| u.name().to_owned()),
        })
        .collect();
    Json(ModelList { object: "list".into(), data })
}
