//! Talking to the relay's admin API, same-origin with the session cookie: one `fetch` wrapper,
//! the error envelope, and one function per call, in and out through `confab-admin-api`'s
//! types (the relay's tests read its answers through the same types).
//!
//! A 401 from anything but the login itself means the session is gone: the hook set with
//! [`on_unauthorized`] sends the operator back to the login form.

use std::cell::RefCell;

use confab_admin_api::{
    ConversationSettingsPatch, ConversationView, DeliveryView, LimitsPatch, List, LoginRequest,
    MessageView, NewKey, NewSite, OperatorMessage, OriginsPatch, OverviewView, Page, SessionView,
    SitePatch, VerificationChange,
};
pub use confab_admin_api::{KeyView, SiteView, UsageReport};
use leptos::prelude::window;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestCredentials, RequestInit, Response};

/// A failed call: the relay's `{"error": {"message", "type", "code"}}`, or a network failure
/// (status 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub code: String,
}

impl ApiError {
    /// The error for a failed response from its status and body.
    pub fn from_response(status: u16, body: &str) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            message: String,
            #[serde(default)]
            code: Option<String>,
        }
        match serde_json::from_str::<Envelope>(body) {
            Ok(envelope) => Self {
                status,
                message: envelope.error.message,
                code: envelope.error.code.unwrap_or_default(),
            },
            Err(_) => Self {
                status,
                message: format!("The relay answered {status}."),
                code: String::new(),
            },
        }
    }

    fn network() -> Self {
        Self {
            status: 0,
            message: "The relay cannot be reached. Check the connection and try again.".into(),
            code: "network".into(),
        }
    }

    fn unreadable() -> Self {
        Self {
            status: 0,
            message: "The relay's answer could not be read.".into(),
            code: "unreadable".into(),
        }
    }
}

thread_local! {
    static UNAUTHORIZED: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// What to do when a call answers 401 (the session expired or was revoked).
pub fn on_unauthorized(hook: impl Fn() + 'static) {
    UNAUTHORIZED.with(|cell| *cell.borrow_mut() = Some(Box::new(hook)));
}

/// One call: `method` on `path` (absolute, like `/admin/v1/sites`) with an optional JSON body;
/// resolves to the status and the body's text on a 2xx, to the error otherwise. Same-origin
/// with `credentials: same-origin`, so the browser sends the cookie and its own `Origin`.
async fn call(method: &str, path: &str, body: Option<String>) -> Result<(u16, String), ApiError> {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_credentials(RequestCredentials::SameOrigin);
    let headers = Headers::new().map_err(|_| ApiError::network())?;
    headers.set("accept", "application/json").map_err(|_| ApiError::network())?;
    if let Some(body) = body {
        headers.set("content-type", "application/json").map_err(|_| ApiError::network())?;
        init.set_body(&body.into());
    }
    init.set_headers(&headers);
    let response = JsFuture::from(window().fetch_with_str_and_init(path, &init))
        .await
        .map_err(|_| ApiError::network())?;
    let response: Response = response.dyn_into().map_err(|_| ApiError::network())?;
    let status = response.status();
    let text = match response.text() {
        Ok(promise) => {
            JsFuture::from(promise).await.ok().and_then(|v| v.as_string()).unwrap_or_default()
        }
        Err(_) => String::new(),
    };
    if (200..300).contains(&status) {
        return Ok((status, text));
    }
    let error = ApiError::from_response(status, &text);
    let is_login = path == SESSION && method == "POST";
    if status == 401 && !is_login {
        UNAUTHORIZED.with(|cell| {
            if let Some(hook) = cell.borrow().as_ref() {
                hook();
            }
        });
    }
    Err(error)
}

async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    let (_, text) = call("GET", path, None).await?;
    serde_json::from_str(&text).map_err(|_| ApiError::unreadable())
}

async fn send<B: Serialize, T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: &B,
) -> Result<T, ApiError> {
    let body = serde_json::to_string(body).map_err(|_| ApiError::unreadable())?;
    let (_, text) = call(method, path, Some(body)).await?;
    serde_json::from_str(&text).map_err(|_| ApiError::unreadable())
}

/// Percent-encodes a query value or path segment (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `path?name=value&...` with the empty values left out.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{}", query.join("&")) }
}

const SESSION: &str = "/admin/v1/session";

// ----- session -------------------------------------------------------------------------------

pub async fn session() -> Result<SessionView, ApiError> {
    get(SESSION).await
}

pub async fn login(token: String) -> Result<(), ApiError> {
    let body =
        serde_json::to_string(&LoginRequest { token }).map_err(|_| ApiError::unreadable())?;
    call("POST", SESSION, Some(body)).await.map(|_| ())
}

pub async fn logout() -> Result<(), ApiError> {
    call("DELETE", SESSION, None).await.map(|_| ())
}

// ----- conversations -------------------------------------------------------------------------

/// The filters of the conversation list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    pub site: String,
    pub q: String,
    pub rating: String,
    pub holder: String,
    /// Updated within this many days (empty: any time).
    pub days: String,
    /// The visitor's hash.
    pub visitor: String,
}

pub const CONVERSATIONS_PER_PAGE: &str = "20";

pub fn conversations_path(filter: &ConversationFilter, cursor: &str) -> String {
    with_query(
        "/admin/v1/conversations",
        &[
            ("site", &filter.site),
            ("q", &filter.q),
            ("rating", &filter.rating),
            ("holder", &filter.holder),
            ("days", &filter.days),
            ("visitor", &filter.visitor),
            ("limit", CONVERSATIONS_PER_PAGE),
            ("cursor", cursor),
        ],
    )
}

pub async fn conversations(
    filter: &ConversationFilter,
    cursor: &str,
) -> Result<Page<ConversationView>, ApiError> {
    get(&conversations_path(filter, cursor)).await
}

pub async fn conversation(id: &str) -> Result<ConversationView, ApiError> {
    get(&format!("/admin/v1/conversations/{}", encode(id))).await
}

/// A conversation through a hand-off link's signature (`query`: its `expires=…&sig=…`), no
/// session needed.
pub async fn shared_conversation(id: &str, query: &str) -> Result<ConversationView, ApiError> {
    get(&format!("/admin/v1/shared/conversations/{}?{query}", encode(id))).await
}

pub async fn reply(id: &str, content: String) -> Result<MessageView, ApiError> {
    let path = format!("/admin/v1/conversations/{}/messages", encode(id));
    send("POST", &path, &OperatorMessage { content }).await
}

pub async fn release(id: &str) -> Result<(), ApiError> {
    let path = format!("/admin/v1/conversations/{}/release", encode(id));
    call("POST", &path, None).await.map(|_| ())
}

pub async fn delete_conversation(id: &str) -> Result<(), ApiError> {
    call("DELETE", &format!("/admin/v1/conversations/{}", encode(id)), None).await.map(|_| ())
}

/// Erases every conversation of a visitor (by hash); resolves to how many went.
pub async fn erase_visitor(visitor: &str) -> Result<u64, ApiError> {
    #[derive(Deserialize)]
    struct Erased {
        deleted: u64,
    }
    let path = with_query("/admin/v1/conversations", &[("visitor", visitor)]);
    let (_, text) = call("DELETE", &path, None).await?;
    serde_json::from_str::<Erased>(&text).map(|e| e.deleted).map_err(|_| ApiError::unreadable())
}

// ----- sites ---------------------------------------------------------------------------------

fn site_path(id: &str, rest: &str) -> String {
    format!("/admin/v1/sites/{}{rest}", encode(id))
}

pub async fn sites() -> Result<Vec<SiteView>, ApiError> {
    get::<List<SiteView>>("/admin/v1/sites").await.map(|l| l.data)
}

pub async fn create_site(site: &NewSite) -> Result<SiteView, ApiError> {
    send("POST", "/admin/v1/sites", site).await
}

pub async fn change_site(id: &str, patch: &SitePatch) -> Result<SiteView, ApiError> {
    send("PATCH", &site_path(id, ""), patch).await
}

pub async fn change_site_limits(id: &str, patch: &LimitsPatch) -> Result<SiteView, ApiError> {
    send("PATCH", &site_path(id, "/limits"), patch).await
}

pub async fn change_site_origins(id: &str, patch: &OriginsPatch) -> Result<SiteView, ApiError> {
    send("PATCH", &site_path(id, "/origins"), patch).await
}

pub async fn change_verification(
    id: &str,
    change: &VerificationChange,
) -> Result<SiteView, ApiError> {
    send("POST", &site_path(id, "/verification"), change).await
}

pub async fn rekey_site(id: &str) -> Result<SiteView, ApiError> {
    send("POST", &site_path(id, "/rekey"), &serde_json::json!({})).await
}

pub async fn delete_site(id: &str) -> Result<(), ApiError> {
    call("DELETE", &site_path(id, ""), None).await.map(|_| ())
}

pub async fn change_conversation_settings(
    id: &str,
    patch: &ConversationSettingsPatch,
) -> Result<(), ApiError> {
    let body = serde_json::to_string(patch).map_err(|_| ApiError::unreadable())?;
    call("PATCH", &site_path(id, "/conversations"), Some(body)).await.map(|_| ())
}

// ----- keys ----------------------------------------------------------------------------------

pub async fn keys() -> Result<Vec<KeyView>, ApiError> {
    get::<List<KeyView>>("/admin/v1/keys").await.map(|l| l.data)
}

pub async fn create_key(key: &NewKey) -> Result<KeyView, ApiError> {
    send("POST", "/admin/v1/keys", key).await
}

/// A new secret for the key (the old one keeps working for the relay's grace period).
pub async fn rotate_key(id: &str) -> Result<KeyView, ApiError> {
    let path = format!("/admin/v1/keys/{}/rotate", encode(id));
    send("POST", &path, &serde_json::json!({})).await
}

pub async fn revoke_key(id: &str) -> Result<(), ApiError> {
    let path = format!("/admin/v1/keys/{}/revoke", encode(id));
    call("POST", &path, None).await.map(|_| ())
}

// ----- usage ---------------------------------------------------------------------------------

/// The filters of the usage report (empty: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub days: u32,
    pub site: String,
    pub key: String,
    pub model: String,
}

pub fn usage_path(filter: &UsageFilter) -> String {
    let days = filter.days.to_string();
    with_query(
        "/admin/v1/usage",
        &[("days", &days), ("site", &filter.site), ("key", &filter.key), ("model", &filter.model)],
    )
}

pub async fn usage(filter: &UsageFilter) -> Result<UsageReport, ApiError> {
    get(&usage_path(filter)).await
}

/// `GET /admin/v1/overview`: today, this month, budgets, the last 30 days.
pub async fn overview() -> Result<OverviewView, ApiError> {
    get("/admin/v1/overview").await
}

// ----- webhooks ------------------------------------------------------------------------------

pub async fn deliveries(limit: u32) -> Result<Page<DeliveryView>, ApiError> {
    get(&format!("/admin/v1/webhooks/deliveries?limit={limit}")).await
}

pub async fn redeliver(id: &str) -> Result<DeliveryView, ApiError> {
    let path = format!("/admin/v1/webhooks/deliveries/{}/redeliver", encode(id));
    send("POST", &path, &serde_json::json!({})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_envelope_gives_its_message_and_code() {
        let e = ApiError::from_response(
            401,
            r#"{"error":{"message":"Wrong admin token.","type":"authentication_error","code":"invalid_admin_token"}}"#,
        );
        assert_eq!(e.message, "Wrong admin token.");
        assert_eq!(e.code, "invalid_admin_token");
        let e = ApiError::from_response(502, "<html>bad gateway</html>");
        assert_eq!(e.message, "The relay answered 502.");
    }

    #[test]
    fn a_query_leaves_out_empty_filters_and_escapes_the_rest() {
        let filter = ConversationFilter {
            q: "a&b c/é".into(),
            holder: "waiting".into(),
            ..Default::default()
        };
        assert_eq!(
            conversations_path(&filter, ""),
            "/admin/v1/conversations?q=a%26b%20c%2F%C3%A9&holder=waiting&limit=20"
        );
        assert_eq!(with_query("/x", &[("a", "")]), "/x");
    }

    #[test]
    fn usage_asks_for_a_model_escaped() {
        let filter = UsageFilter { days: 7, model: "openai:gpt-4o".into(), ..Default::default() };
        assert_eq!(usage_path(&filter), "/admin/v1/usage?days=7&model=openai%3Agpt-4o");
    }

    #[test]
    fn usage_reads_the_relays_report_with_flattened_days() {
        let report: UsageReport = serde_json::from_str(
            r#"{"since":"2026-12-01","days":[{"date":"2026-12-01","requests":2,"input_tokens":10,
            "output_tokens":5,"cache_read_tokens":0,"cache_write_tokens":0,"cost_micros":30}],
            "totals":{"requests":2,"input_tokens":10,"output_tokens":5,"cache_read_tokens":0,
            "cache_write_tokens":0,"cost_micros":30},"by_site":{},"by_key":{},"by_model":{}}"#,
        )
        .unwrap();
        assert_eq!(report.days[0].totals.cost_micros, 30);
        assert_eq!(report.days[0].date, "2026-12-01");
    }
}
