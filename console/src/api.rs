//! Talking to the relay's admin API, same-origin with the session cookie: one `fetch` wrapper,
//! the error envelope, and the shapes the console reads that `confab-admin-api` does not have
//! yet (sites, keys, usage), kept to the fields the console shows.
//!
//! A 401 from anything but the login itself means the session is gone: the hook set with
//! [`on_unauthorized`] sends the operator back to the login form.

use std::cell::RefCell;
use std::collections::BTreeMap;

use confab_admin_api::{
    ConversationSettingsPatch, ConversationSettingsView, ConversationView, DeliveryView,
    LoginRequest, MessageView, OperatorMessage, OverviewView, Page, SessionView,
};
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

pub async fn reply(id: &str, content: String) -> Result<MessageView, ApiError> {
    let path = format!("/admin/v1/conversations/{}/messages", encode(id));
    send("POST", &path, &OperatorMessage { content }).await
}

pub async fn release(id: &str) -> Result<(), ApiError> {
    let path = format!("/admin/v1/conversations/{}/release", encode(id));
    call("POST", &path, None).await.map(|_| ())
}

// ----- sites ---------------------------------------------------------------------------------

/// A site as `GET /admin/v1/sites` lists it (the fields the console shows).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    #[serde(default)]
    pub origins: Vec<String>,
    /// The full site key: only in the answers to creation and re-key.
    #[serde(default)]
    pub key: Option<String>,
    pub conversations: ConversationSettingsView,
}

#[derive(Debug, Clone, Deserialize)]
struct List<T> {
    data: Vec<T>,
}

pub async fn sites() -> Result<Vec<SiteView>, ApiError> {
    get::<List<SiteView>>("/admin/v1/sites").await.map(|l| l.data)
}

#[derive(Debug, Serialize)]
struct NewSite<'a> {
    name: &'a str,
    origins: Vec<&'a str>,
}

pub async fn create_site(name: &str, origin: &str) -> Result<SiteView, ApiError> {
    let origins = if origin.is_empty() { vec![] } else { vec![origin] };
    send("POST", "/admin/v1/sites", &NewSite { name, origins }).await
}

pub async fn rekey_site(id: &str) -> Result<SiteView, ApiError> {
    let path = format!("/admin/v1/sites/{}/rekey", encode(id));
    send("POST", &path, &serde_json::json!({})).await
}

pub async fn change_conversation_settings(
    id: &str,
    patch: &ConversationSettingsPatch,
) -> Result<(), ApiError> {
    let path = format!("/admin/v1/sites/{}/conversations", encode(id));
    let body = serde_json::to_string(patch).map_err(|_| ApiError::unreadable())?;
    call("PATCH", &path, Some(body)).await.map(|_| ())
}

// ----- keys ----------------------------------------------------------------------------------

/// A secret key as `GET /admin/v1/keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub active: bool,
    pub revoked_at: Option<String>,
    /// The full secret: only in the answers to creation and rotation.
    #[serde(default)]
    pub key: Option<String>,
}

pub async fn keys() -> Result<Vec<KeyView>, ApiError> {
    get::<List<KeyView>>("/admin/v1/keys").await.map(|l| l.data)
}

#[derive(Debug, Serialize)]
struct NewKey<'a> {
    name: &'a str,
    scopes: &'a [String],
}

pub async fn create_key(name: &str, scopes: &[String]) -> Result<KeyView, ApiError> {
    send("POST", "/admin/v1/keys", &NewKey { name, scopes }).await
}

pub async fn revoke_key(id: &str) -> Result<(), ApiError> {
    let path = format!("/admin/v1/keys/{}/revoke", encode(id));
    call("POST", &path, None).await.map(|_| ())
}

// ----- usage ---------------------------------------------------------------------------------

/// Counts for one group of requests; money in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DayView {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// `GET /admin/v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UsageView {
    pub since: String,
    pub days: Vec<DayView>,
    pub totals: Totals,
    #[serde(default)]
    pub by_site: BTreeMap<String, Totals>,
    #[serde(default)]
    pub by_key: BTreeMap<String, Totals>,
    #[serde(default)]
    pub by_model: BTreeMap<String, Totals>,
}

pub async fn usage(days: u32, site: &str, key: &str) -> Result<UsageView, ApiError> {
    let days = days.to_string();
    get(&with_query("/admin/v1/usage", &[("days", &days), ("site", site), ("key", key)])).await
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
    fn usage_reads_the_relays_report_with_flattened_days() {
        let report: UsageView = serde_json::from_str(
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
