//! The admin API's request and response types (`/admin/v1/...`), shared by the relay, which
//! serves them, and the console, which reads them, as `confab-protocol` is for the widget.
//!
//! **Invariant:** serde and serde_json only, so that it builds for `wasm32-unknown-unknown`.
//! The OpenAPI document (`server/src/http/admin_openapi.json`) describes these shapes; a test
//! keeps the routes and the document in step.

use serde::{Deserialize, Serialize};

/// A page of a listing: `next` is the cursor of the following page (`None` on the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub object: String,
    pub data: Vec<T>,
    #[serde(default)]
    pub next: Option<String>,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, next: Option<String>) -> Self {
        Self { object: "list".into(), data, next }
    }
}

/// Ratings of a conversation's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackCounts {
    pub up: u64,
    pub down: u64,
}

/// A conversation as `GET /admin/v1/conversations` lists it, and (with `messages`) as
/// `GET /admin/v1/conversations/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub id: String,
    pub site_id: String,
    /// The visitor's salted hash.
    pub visitor: Option<String>,
    pub page_url: Option<String>,
    pub model: Option<String>,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub messages_count: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    /// How the latest answer ended: `completed`, `interrupted`, `upstream_error`.
    pub outcome: Option<String>,
    /// `bot`, `waiting` (a person was asked for) or `person`.
    pub holder: String,
    pub handoff_at_ms: Option<i64>,
    pub feedback: FeedbackCounts,
    /// Only in a single conversation's view: its first 1,000 messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub seq: i64,
    /// `visitor`, `bot` or `operator`.
    pub author: String,
    pub content: String,
    /// Unix milliseconds.
    pub at: i64,
    /// The bot's answers: the chat request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// `up` or `down`.
    pub rating: Option<String>,
    pub comment: Option<String>,
}

/// `POST /admin/v1/conversations/{id}/messages`: a person's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorMessage {
    pub content: String,
}

/// `PATCH /admin/v1/sites/{id}/conversations`: the fields given change. `notice: null` (or
/// `""`) restores the relay's default notice; a field left out keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcripts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_contacts: Option<bool>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub notice: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<bool>,
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a field
/// that is present, even as `null`, is `Some`; a missing one stays `None` (the default).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A site's conversation settings, as the site's view shows them (`conversations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSettingsView {
    pub transcripts: bool,
    pub retention_days: u32,
    pub mask_contacts: bool,
    pub notice: Option<String>,
    pub handoff: bool,
}

/// `POST /admin/v1/session`: log in to the console with the admin token; the answer sets an
/// HttpOnly session cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub token: String,
}

/// `GET /admin/v1/session`: the session the cookie names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Unix seconds.
    pub expires_at: i64,
}

/// A webhook delivery as `GET /admin/v1/webhooks/deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    /// The event's type (`request.completed`, `conversation.handoff`, ...).
    pub event: String,
    pub endpoint: String,
    pub attempts: u32,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub failed_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Requests and spend over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendView {
    pub requests: u64,
    pub cost_micros: u64,
}

/// One UTC day of the overview's chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayView {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub requests: u64,
    pub cost_micros: u64,
}

/// A budget and what was spent against it in its current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    /// `site` or `key`.
    pub payer: String,
    pub id: String,
    pub name: String,
    /// `monthly` or `daily`.
    pub period: String,
    pub budget_micros: u64,
    pub spent_micros: u64,
}

/// What this relay counted since it started (counters of its metrics, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinceStartView {
    pub upstream_errors: u64,
    pub rate_limit_refusals: u64,
    pub budget_refusals: u64,
}

/// `GET /admin/v1/overview`: today and this month (UTC), every budget against its spend, the
/// last 30 days, and the relay's error and refusal counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewView {
    pub today: SpendView,
    pub month: SpendView,
    pub budgets: Vec<BudgetView>,
    /// The last 30 days, oldest first (days without requests are zeros).
    pub days: Vec<DayView>,
    pub since_start: SinceStartView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_tells_a_null_notice_from_a_missing_one() {
        let cleared: ConversationSettingsPatch =
            serde_json::from_str(r#"{"notice":null}"#).unwrap();
        assert_eq!(cleared.notice, Some(None));
        let kept: ConversationSettingsPatch = serde_json::from_str(r#"{"handoff":true}"#).unwrap();
        assert_eq!((kept.notice, kept.handoff), (None, Some(true)));
        assert!(serde_json::from_str::<ConversationSettingsPatch>(r#"{"x":1}"#).is_err());
        assert_eq!(serde_json::to_string(&cleared).unwrap(), r#"{"notice":null}"#);
    }
}
