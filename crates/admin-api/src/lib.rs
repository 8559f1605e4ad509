//! The admin API's request and response types (`/admin/v1/...`), shared by the relay, which
//! serves them, and the console, which reads them, as `confab-protocol` is for the widget.
//!
//! **Invariant:** serde and serde_json only, so that it builds for `wasm32-unknown-unknown`.
//! The OpenAPI document (`server/src/http/admin_openapi.json`) describes these shapes; a test
//! keeps the routes and the document in step.

use std::collections::BTreeMap;

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

/// A listing that is not paged: `{"data": [...]}` (`GET /admin/v1/sites`, `/admin/v1/keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

// ----- knowledge -----------------------------------------------------------------------------

/// A document of a site's knowledge, as `GET /admin/v1/sites/{id}/knowledge` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeDocumentView {
    pub id: i64,
    /// A file's canonical path, a page's URL (after redirects), or an upload's name.
    pub source: String,
    pub title: String,
    /// SHA-256 of the bytes it was read from (hex).
    pub content_hash: String,
    pub passages: u64,
    /// Characters of its passages' text.
    pub chars: u64,
    pub added_at_ms: i64,
    pub updated_at_ms: i64,
}

/// `POST /admin/v1/sites/{id}/knowledge`: pages or sitemaps of the site's own origins for the
/// relay to fetch, and documents handed in; at least one of either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeAdd {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<KnowledgeUpload>,
}

/// A document handed in: a file name (no `/`) and its content, as `text` (Markdown, HTML, plain
/// text) or as `base64` (any format, PDF included); exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeUpload {
    pub name: String,
    /// Like `text/markdown`; without it, the name's extension (then the content) says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// What an add or a refresh did to one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeResult {
    pub source: String,
    /// `added`, `replaced`, `unchanged`, `failed` or `skipped` (an upload, on refresh).
    pub status: String,
    /// The stored document (not for a failed one).
    pub document: Option<KnowledgeDocumentView>,
    /// Why it failed, naming it.
    pub error: Option<String>,
}

/// The answer of `POST /admin/v1/sites/{id}/knowledge` and `.../knowledge/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeReport {
    pub added: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub skipped: u64,
    pub results: Vec<KnowledgeResult>,
    /// What was passed over, and why.
    pub notes: Vec<String>,
}

// ----- sites ---------------------------------------------------------------------------------

/// What happens to instructions a visitor's client sends (a `system` message): added under the
/// site's own (`layer`), dropped, or the request refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientInstructions {
    Layer,
    Drop,
    Reject,
}

/// How a site with knowledge answers: from its sources where they help (`prefer`), or only from
/// them, saying when they do not cover the question (`strict`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grounding {
    #[default]
    Prefer,
    Strict,
}

/// A site's own widget settings; `None`: the relay's `[widget]` default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetSettings {
    pub title: Option<String>,
    pub greeting: Option<String>,
    pub suggestions: Option<Vec<String>>,
    /// `#rrggbb`.
    pub primary_color: Option<String>,
}

/// A site's limits, as its view shows them and as a new site sets them; `None`: unlimited (or,
/// for the visitor limits, the `[visitors]` default). Money in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLimits {
    pub rpm: Option<u32>,
    pub rpd: Option<u32>,
    pub tpm: Option<u32>,
    pub monthly_budget_micros: Option<u64>,
    pub daily_budget_micros: Option<u64>,
    pub visitor_rpm: Option<u32>,
    pub visitor_rpd: Option<u32>,
    pub verified_rpm: Option<u32>,
    pub verified_rpd: Option<u32>,
}

/// How a site verifies its visitors (the secret itself is shown once, when made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationView {
    /// A visitor secret exists: visitor tokens are accepted.
    pub enabled: bool,
    /// Visitors without a valid token are refused.
    pub required: bool,
    /// `hmac` or `jwt`.
    pub mode: String,
}

/// A site as `GET /admin/v1/sites` and `GET /admin/v1/sites/{id}` show it, and as every change
/// to it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    /// The key replaced by a re-key, still accepted until `previous_key_expires_at`.
    pub previous_key_prefix: Option<String>,
    pub previous_key_expires_at: Option<String>,
    pub origins: Vec<String>,
    pub allow_no_origin: bool,
    pub models: Vec<String>,
    pub system_prompt: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature_max: Option<f32>,
    pub context_messages: Option<u32>,
    /// `None`: the `[policy]` default.
    pub client_instructions: Option<ClientInstructions>,
    /// How the site answers once it has knowledge.
    #[serde(default)]
    pub grounding: Grounding,
    pub widget: WidgetSettings,
    pub limits: SiteLimits,
    pub conversations: ConversationSettingsView,
    pub verification: VerificationView,
    /// RFC 3339.
    pub created_at: String,
    /// The full site key: only in the answers to creation and re-key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A new visitor secret: only in the answer to `POST .../verification` that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_secret: Option<String>,
}

/// `POST /admin/v1/sites`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    pub name: String,
    #[serde(default)]
    pub origins: Vec<String>,
    /// Accept calls without an `Origin` header (native apps).
    #[serde(default)]
    pub allow_no_origin: bool,
    /// The first is the site's default.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_max: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_messages: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_instructions: Option<ClientInstructions>,
    /// `None`: `prefer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
    #[serde(default)]
    pub widget: WidgetSettings,
    #[serde(default)]
    pub limits: SiteLimits,
}

/// `PATCH /admin/v1/sites/{id}`: what is given changes, what is left out stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widget: Option<WidgetPatch>,
    /// `Some(None)` (`null`): the `[policy]` default.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub client_instructions: Option<Option<ClientInstructions>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
}

/// The widget fields of a [`SitePatch`]: `Some(None)` (`null`) falls back to the `[widget]`
/// default, `None` (left out) keeps the site's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetPatch {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub greeting: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<Option<String>>,
}

/// `PATCH /admin/v1/sites/{id}/limits`: `Some(None)` (`null`) removes a limit, `Some(n)` sets
/// it, `None` (left out) keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub rpd: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub monthly_budget_micros: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub daily_budget_micros: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub visitor_rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub visitor_rpd: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub verified_rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub verified_rpd: Option<Option<u32>>,
}

/// `PATCH /admin/v1/sites/{id}/origins`: origins to add and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginsPatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `POST /admin/v1/sites/{id}/verification`, as `confab sites verification`: a new visitor
/// secret (in the answer once, `visitor_secret`), verification off (the secret removed),
/// required or not, and the token's form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationChange {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_secret: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// `hmac` or `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

// ----- keys ----------------------------------------------------------------------------------

/// A secret key as `GET /admin/v1/keys` lists it and its changes answer. Limits `None`:
/// unlimited; money in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub scopes: Vec<String>,
    /// Empty: every model.
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub rpd: Option<u32>,
    pub tpm: Option<u32>,
    pub monthly_budget_micros: Option<u64>,
    pub daily_budget_micros: Option<u64>,
    /// RFC 3339, as are the other times.
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub active: bool,
    pub revoked_at: Option<String>,
    /// The secret replaced by a rotation, still accepted until `previous_expires_at`.
    pub previous_key_prefix: Option<String>,
    pub previous_expires_at: Option<String>,
    /// The full secret: only in the answers to creation and rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /admin/v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    /// `chat`, `models`, `usage`, `tools`.
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_micros: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_micros: Option<u64>,
}

// ----- usage ---------------------------------------------------------------------------------

/// Counts for one group of requests; money in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those read from and written to the provider's prompt cache.
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

/// One UTC day of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /admin/v1/usage` (and `GET /v1/usage`, `confab usage --json`): totals and a per-day
/// series over the last N days, by site, key and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// First day covered, `YYYY-MM-DD` (UTC).
    pub since: String,
    pub days: Vec<UsageDay>,
    pub totals: UsageTotals,
    pub by_site: BTreeMap<String, UsageTotals>,
    pub by_key: BTreeMap<String, UsageTotals>,
    pub by_model: BTreeMap<String, UsageTotals>,
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

    #[test]
    fn a_limits_patch_sends_null_to_clear_and_leaves_out_what_it_keeps() {
        let patch = LimitsPatch { rpm: Some(Some(5)), tpm: Some(None), ..Default::default() };
        assert_eq!(serde_json::to_string(&patch).unwrap(), r#"{"rpm":5,"tpm":null}"#);
        let back: LimitsPatch = serde_json::from_str(r#"{"rpm":5,"tpm":null}"#).unwrap();
        assert_eq!(back, patch);
    }

    #[test]
    fn a_widget_patch_clears_with_null_and_names_client_instructions_in_lowercase() {
        let patch = SitePatch {
            widget: Some(WidgetPatch {
                title: Some(Some("Ask us".into())),
                primary_color: Some(None),
                ..Default::default()
            }),
            client_instructions: Some(Some(ClientInstructions::Reject)),
            grounding: Some(Grounding::Strict),
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert_eq!(
            text,
            r#"{"widget":{"title":"Ask us","primary_color":null},"client_instructions":"reject","grounding":"strict"}"#
        );
        assert_eq!(serde_json::from_str::<SitePatch>(&text).unwrap(), patch);
    }

    #[test]
    fn a_verification_change_sends_only_what_it_changes() {
        let change = VerificationChange { new_secret: true, ..Default::default() };
        assert_eq!(serde_json::to_string(&change).unwrap(), r#"{"new_secret":true}"#);
    }
}
