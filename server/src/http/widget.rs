//! `GET /v1/widget/config`: what the widget needs to know about its site (key and origin
//! checked like every API call).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use confab_protocol::{ConversationsConfig, WidgetConfig, WidgetTheme};

use super::{AppState, SiteAuth};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/widget/config", get(widget_config))
}

async fn widget_config(State(state): State<AppState>, auth: SiteAuth) -> Json<WidgetConfig> {
    let defaults = &state.config.widget;
    let own = &auth.site.settings.widget;
    let kept = &auth.site.settings.conversations;
    Json(WidgetConfig {
        title: own.title.as_ref().unwrap_or(&defaults.title).clone(),
        greeting: own.greeting.as_ref().unwrap_or(&defaults.greeting).clone(),
        suggestions: own.suggestions.as_ref().unwrap_or(&defaults.suggestions).clone(),
        theme: WidgetTheme {
            primary_color: own.primary_color.as_ref().or(defaults.primary_color.as_ref()).cloned(),
        },
        max_message_bytes: state.config.limits.max_message_bytes,
        conversations: kept.transcripts.then(|| ConversationsConfig {
            notice: kept.notice.clone().unwrap_or_else(|| crate::conversations::NOTICE.into()),
            handoff: kept.handoff,
        }),
    })
}
