//! `/admin/v1/sites/{id}/knowledge`: a site's knowledge over the admin API, through the same
//! pipeline as `confab knowledge` (`knowledge::ingest`). The relay fetches the pages and sitemaps
//! it is given (own origins only) and reads uploaded documents; it takes no file paths (only the
//! CLI adds files, which a refresh reads again).
//!
//! An add is synchronous: the answer comes when every page is fetched and stored, which for a
//! large sitemap takes as long as its pages at `[knowledge] fetch_interval_ms` apart. An add is
//! all or nothing: a bad item (not a URL, off the site's origins, unreadable, too large, binary,
//! past the caps) is a 400 that names it, and nothing is stored.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use confab_admin_api::{KnowledgeAdd, KnowledgeDocumentView, KnowledgeReport, Page};
use url::Url;

use super::admin::{Admin, not_found};
use super::{ApiJson, AppState};
use crate::error::ApiError;
use crate::knowledge::ingest::{
    self, KnowledgeError, OnFailure, Quiet, Source, document_view, report_view,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/sites/{id}/knowledge", get(list).post(add))
        .route("/admin/v1/sites/{id}/knowledge/refresh", post(refresh))
        .route("/admin/v1/sites/{id}/knowledge/{doc_id}", delete(remove))
}

impl From<KnowledgeError> for ApiError {
    fn from(error: KnowledgeError) -> Self {
        match error {
            KnowledgeError::NoSuchSite(id) => not_found("site", &id),
            KnowledgeError::OverCaps(exceeded) => {
                ApiError::invalid("knowledge_caps_exceeded", exceeded.to_string())
            }
            KnowledgeError::Refused(failures) => ApiError::invalid(
                "invalid_document",
                format!("{}; nothing was changed", failures.join("; ")),
            ),
            KnowledgeError::Store(e) => ApiError::internal(e),
        }
    }
}

/// `GET`: the site's documents, by source.
async fn list(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Page<KnowledgeDocumentView>>, ApiError> {
    let store = state.store.as_ref();
    if store.site(&id).await.map_err(ApiError::internal)?.is_none() {
        return Err(not_found("site", &id));
    }
    let documents = store.knowledge_documents(&id).await.map_err(ApiError::internal)?;
    Ok(Json(Page::new(documents.iter().map(document_view).collect(), None)))
}

/// `POST`: adds `urls` (pages, or sitemaps whose pages are added) and uploaded `documents`.
async fn add(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KnowledgeAdd>,
) -> Result<Json<KnowledgeReport>, ApiError> {
    let sources = sources(body)?;
    let config = &state.config.knowledge;
    let report = ingest::add(
        state.store.as_ref(),
        config,
        state.knowledge.embedder(),
        &id,
        sources,
        OnFailure::StoreNothing,
        &mut Quiet,
    )
    .await?;
    if report.changed() {
        state.knowledge.site_changed(&id).await;
    }
    Ok(Json(report_view(&report)))
}

/// The body's items as sources, or a 400 naming the first bad one.
fn sources(body: KnowledgeAdd) -> Result<Vec<Source>, ApiError> {
    if body.urls.is_empty() && body.documents.is_empty() {
        return Err(ApiError::invalid(
            "invalid_value",
            "give `urls` (pages or sitemaps of the site's origins) or `documents`, or both",
        ));
    }
    let mut sources = Vec::new();
    for (i, text) in body.urls.iter().enumerate() {
        let url = Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_value",
                    format!("urls[{i}]: `{text}` is not an http(s) URL"),
                )
            })?;
        sources.push(Source::Url(url));
    }
    for (i, document) in body.documents.into_iter().enumerate() {
        let name = document.name.trim();
        if name.is_empty() || name.contains(['/', '\\']) || name.chars().count() > 200 {
            return Err(ApiError::invalid(
                "invalid_value",
                format!(
                    "documents[{i}].name: `{name}` is not a file name (1 to 200 characters, \
                     no `/` or `\\`)"
                ),
            ));
        }
        let bytes = match (document.text, document.base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => {
                base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|e| {
                    ApiError::invalid(
                        "invalid_value",
                        format!("documents[{i}].base64 ({name}): not base64 ({e})"),
                    )
                })?
            }
            _ => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!(
                        "documents[{i}] ({name}): give its content as `text` or `base64`, one of the two"
                    ),
                ));
            }
        };
        sources.push(Source::Upload {
            name: name.to_owned(),
            content_type: document.content_type,
            bytes,
        });
    }
    Ok(sources)
}

/// `DELETE /admin/v1/sites/{id}/knowledge/{doc_id}`.
async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path((id, doc_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let document = doc_id.parse::<i64>().map_err(|_| not_found("knowledge document", &doc_id))?;
    let missing = ingest::remove(state.store.as_ref(), &id, &[document]).await?;
    if !missing.is_empty() {
        return Err(not_found("knowledge document", &doc_id));
    }
    state.knowledge.site_changed(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../knowledge/refresh`: every document read again from its source; one whose source
/// is gone is reported as `failed` and kept.
async fn refresh(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KnowledgeReport>, ApiError> {
    let (store, config) = (state.store.as_ref(), &state.config.knowledge);
    let report =
        ingest::refresh(store, config, state.knowledge.embedder(), &id, &mut Quiet).await?;
    if report.changed() {
        state.knowledge.site_changed(&id).await;
    }
    Ok(Json(report_view(&report)))
}
