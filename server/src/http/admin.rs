//! `/admin/v1/...`: sites, keys and usage for the operator's own tools, authenticated with the
//! admin token (`[admin]`). JSON in and out, the same error envelope as the public API, and an
//! OpenAPI document at `/admin/v1/openapi.json`. The rules are the CLI's (`sites`, `keys`,
//! `usage`): the two front ends never disagree.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::console;
use super::json::{ApiQuery, OptionalApiJson};
use super::{ApiJson, AppState, usage::days_param};
use crate::config::ClientInstructions;
use crate::error::ApiError;
use crate::keys::{self, KeyError, KeySpec};
use crate::sites::{self, Change, LimitsChange, SiteError, SiteSpec};
use crate::store::{CallerLimits, Grounding, Scope, SiteWidget, VisitorLimits};
use confab_admin_api::{DeliveryView, Page, present};

/// The OpenAPI 3.1 description of this module's routes (kept in step by a test).
pub const OPENAPI: &str = include_str!("admin_openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/admin/v1/sites", get(list_sites).post(create_site))
        .route("/admin/v1/sites/{id}", get(show_site).patch(change_site).delete(delete_site))
        .route("/admin/v1/sites/{id}/verification", post(change_site_verification))
        .route("/admin/v1/sites/{id}/limits", put(replace_site_limits).patch(change_site_limits))
        .route("/admin/v1/sites/{id}/origins", patch(change_site_origins))
        .route("/admin/v1/sites/{id}/rekey", post(rekey_site))
        .route("/admin/v1/keys", get(list_keys).post(create_key))
        .route("/admin/v1/keys/{id}/rotate", post(rotate_key))
        .route("/admin/v1/keys/{id}/revoke", post(revoke_key))
        .route("/admin/v1/usage", get(usage))
        .route("/admin/v1/upstreams", get(upstreams))
        .route("/admin/v1/webhooks/deliveries", get(deliveries))
        .route("/admin/v1/webhooks/deliveries/{id}/redeliver", post(redeliver))
        .merge(super::conversations::admin_router())
        .merge(super::knowledge::router())
        .merge(super::console::session_router())
        .merge(super::overview::router())
}

/// One upstream target as `GET /admin/v1/upstreams` shows it.
#[derive(Debug, serde::Serialize)]
struct UpstreamTarget {
    /// `<upstream>:<model>`.
    target: String,
    upstream: String,
    model: String,
    /// `closed`, `half_open` or `open`.
    breaker: &'static str,
    calls: u64,
    /// Calls that failed before the answer started.
    failures: u64,
    /// On its last answered call; `null` before one.
    last_first_byte_ms: Option<u64>,
}

/// `GET /admin/v1/upstreams`: every upstream target, its breaker and how its calls went.
async fn upstreams(_: Admin, State(state): State<AppState>) -> Json<serde_json::Value> {
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let data: Vec<UpstreamTarget> = state
        .upstreams
        .targets()
        .iter()
        .map(|target| {
            let first_byte_us = target.last_first_byte_us.load(relaxed);
            UpstreamTarget {
                target: target.label.clone(),
                upstream: target.upstream.clone(),
                model: target.model.clone(),
                breaker: target.breaker.status().as_str(),
                calls: target.calls.load(relaxed),
                failures: target.failures.load(relaxed),
                last_first_byte_ms: (first_byte_us > 0).then(|| first_byte_us.div_ceil(1000)),
            }
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data }))
}

fn delivery_view(delivery: &crate::store::WebhookDelivery) -> DeliveryView {
    let status = if delivery.delivered_at_ms.is_some() {
        "delivered"
    } else if delivery.failed_at_ms.is_some() {
        "failed"
    } else {
        "pending"
    };
    DeliveryView {
        id: delivery.id.clone(),
        event_id: delivery.event_id.clone(),
        event: delivery.kind.clone(),
        endpoint: delivery.endpoint.clone(),
        attempts: delivery.attempts,
        status: status.into(),
        created_at_ms: delivery.created_at_ms,
        delivered_at_ms: delivery.delivered_at_ms,
        failed_at_ms: delivery.failed_at_ms,
        last_error: delivery.last_error.clone(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    limit: Option<u32>,
}

/// `GET /admin/v1/webhooks/deliveries?limit=N`: the latest deliveries (50; at most 500).
async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", "`limit` is 1 to 500"));
    }
    let list = state.store.webhook_deliveries(limit).await.map_err(ApiError::internal)?;
    Ok(Json(Page::new(list.iter().map(delivery_view).collect(), None)))
}

/// `POST /admin/v1/webhooks/deliveries/{id}/redeliver`: attempted again at once, as a new
/// series of attempts (receivers deduplicate by its `Confab-Delivery` id).
async fn redeliver(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let now = crate::unix_now_ms();
    match state.store.redeliver_webhook(&id, now).await.map_err(ApiError::internal)? {
        Some(delivery) => Ok(Json(delivery_view(&delivery))),
        None => Err(not_found("webhook delivery", &id)),
    }
}

/// A change to a site's widget (each field given replaces the site's own; `null` falls back to
/// the `[widget]` default) and to what happens to its visitors' own instructions, as `confab
/// sites update` makes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteChangeBody {
    #[serde(default)]
    widget: Option<WidgetChangeBody>,
    /// `layer`, `drop` or `reject`; `null`: the `[policy]` default.
    #[serde(default, deserialize_with = "present_instructions")]
    client_instructions: Option<Option<ClientInstructions>>,
    /// `prefer` or `strict`: how the site answers once it has knowledge.
    #[serde(default)]
    grounding: Option<Grounding>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WidgetChangeBody {
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    greeting: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    suggestions: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    primary_color: Option<Option<String>>,
}

fn present_instructions<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<ClientInstructions>>, D::Error> {
    let name = Option::<String>::deserialize(d)?;
    match name {
        None => Ok(Some(None)),
        Some(name) => {
            ClientInstructions::from_name(&name).map(|c| Some(Some(c))).ok_or_else(|| {
                serde::de::Error::custom(format!("`{name}` is not layer, drop or reject"))
            })
        }
    }
}

/// `PATCH /admin/v1/sites/{id}`: the widget fields and the client instructions given change;
/// what the body leaves out stays.
async fn change_site(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SiteChangeBody>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store.as_ref();
    let site = store.site(&id).await.map_err(ApiError::internal)?;
    let site = site.ok_or_else(|| not_found("site", &id))?;
    if let Some(change) = body.widget {
        let mut widget = site.settings.widget.clone();
        if let Some(title) = change.title {
            widget.title = title;
        }
        if let Some(greeting) = change.greeting {
            widget.greeting = greeting;
        }
        if let Some(suggestions) = change.suggestions {
            widget.suggestions = suggestions;
        }
        if let Some(color) = change.primary_color {
            widget.primary_color = color;
        }
        sites::update_widget(store, &id, widget).await?;
    }
    if let Some(setting) = body.client_instructions {
        store.set_site_client_instructions(&id, setting).await.map_err(ApiError::internal)?;
    }
    if let Some(grounding) = body.grounding {
        store.set_site_grounding(&id, grounding).await.map_err(ApiError::internal)?;
    }
    let site = store.site(&id).await.map_err(ApiError::internal)?;
    Ok(Json(sites::site_view(&site.ok_or_else(|| not_found("site", &id))?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerificationBody {
    #[serde(default)]
    new_secret: bool,
    #[serde(default)]
    off: bool,
    required: Option<bool>,
    /// `hmac` or `jwt`.
    mode: Option<String>,
}

/// `POST /admin/v1/sites/{id}/verification`: as `confab sites verification`; a new visitor
/// secret is in the answer once (`visitor_secret`).
async fn change_site_verification(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VerificationBody>,
) -> Result<Response, ApiError> {
    let mode = body
        .mode
        .map(|mode| {
            mode.parse::<crate::visitor::TokenMode>()
                .map_err(|_| ApiError::invalid("invalid_value", "`mode` is hmac or jwt"))
        })
        .transpose()?;
    let change = sites::VerificationChange {
        new_secret: body.new_secret,
        off: body.off,
        required: body.required,
        mode,
    };
    let Some((site, secret)) =
        sites::change_verification(state.store.as_ref(), &id, change).await?
    else {
        return Err(not_found("site", &id));
    };
    let mut view = sites::site_view(&site);
    if let Some(secret) = secret {
        view["visitor_secret"] = json!(secret.reveal());
    }
    Ok(with_secret(StatusCode::OK, view))
}

/// A request carrying the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    /// The admin token as a bearer token, or the console's session cookie (with the relay's
    /// own `Origin` on a change; see `console`).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.admin_token.is_none() {
            return Err(disabled());
        }
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = bearer else {
            return from_session(parts, state).await;
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        state.sessions.admit(peer)?;
        if !console::is_admin_token(state, presented) {
            state.sessions.failed(peer).await;
            return Err(ApiError::Unauthenticated {
                code: "invalid_admin_token",
                message: "the admin token is not valid",
            });
        }
        Ok(Admin)
    }
}

/// A request of the console, authenticated by its session cookie.
async fn from_session(parts: &Parts, state: &AppState) -> Result<Admin, ApiError> {
    let valid = match console::cookie(&parts.headers, console::COOKIE) {
        Some(value) => console::valid_session(state, value).await?,
        None => None,
    };
    if valid.is_none() {
        return Err(ApiError::Unauthenticated {
            code: "missing_admin_token",
            message: "missing admin token; send `Authorization: Bearer <admin token>`",
        });
    }
    if !console::same_origin(&parts.method, &parts.headers) {
        return Err(ApiError::PermissionDenied {
            code: "bad_origin",
            message: "a change made with the console's session must come from the console".into(),
        });
    }
    Ok(Admin)
}

/// 403 `admin_disabled`: no admin token is configured.
pub(super) fn disabled() -> ApiError {
    ApiError::PermissionDenied {
        code: "admin_disabled",
        message: "the admin API is off: set its token (see [admin] in the configuration)".into(),
    }
}

pub(super) fn not_found(what: &'static str, id: &str) -> ApiError {
    ApiError::NotFound { what, id: id.to_owned() }
}

impl From<SiteError> for ApiError {
    fn from(error: SiteError) -> Self {
        match error {
            SiteError::Invalid { field, problem } => {
                ApiError::invalid("invalid_value", format!("{field}: {problem}"))
            }
            SiteError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Invalid { field, problem } => {
                ApiError::invalid("invalid_value", format!("{field}: {problem}"))
            }
            KeyError::NotFound(id) => not_found("active key", &id),
            KeyError::Store(e) => ApiError::internal(e),
        }
    }
}

/// An answer that carries a secret shown once (a new site key or secret key): no cache, the
/// browser's or a proxy's, may keep a copy.
fn with_secret(status: StatusCode, body: Value) -> Response {
    let no_store = [(axum::http::header::CACHE_CONTROL, "no-store")];
    (status, no_store, Json(body)).into_response()
}

/// How long a replaced secret keeps working; absent: `keys.rotation_grace_secs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraceBody {
    grace_secs: Option<u64>,
}

impl GraceBody {
    fn grace(&self, state: &AppState) -> Duration {
        Duration::from_secs(self.grace_secs.unwrap_or(state.config.keys.rotation_grace_secs))
    }
}

async fn openapi(_: Admin) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Limits in the admin API's JSON (all optional: unlimited, or the `[visitors]` default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsBody {
    rpm: Option<u32>,
    rpd: Option<u32>,
    tpm: Option<u32>,
    monthly_budget_micros: Option<u64>,
    daily_budget_micros: Option<u64>,
    visitor_rpm: Option<u32>,
    visitor_rpd: Option<u32>,
    verified_rpm: Option<u32>,
    verified_rpd: Option<u32>,
}

impl LimitsBody {
    fn split(&self) -> (CallerLimits, VisitorLimits) {
        (
            CallerLimits {
                rpm: self.rpm,
                rpd: self.rpd,
                tpm: self.tpm,
                monthly_budget_micros: self.monthly_budget_micros,
                daily_budget_micros: self.daily_budget_micros,
            },
            VisitorLimits {
                rpm: self.visitor_rpm,
                rpd: self.visitor_rpd,
                verified_rpm: self.verified_rpm,
                verified_rpd: self.verified_rpd,
            },
        )
    }
}

/// A change to limits in the admin API's JSON (`PATCH`): an absent field keeps its value, `null`
/// clears it, a number sets it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsPatchBody {
    #[serde(default, deserialize_with = "change")]
    rpm: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    rpd: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    tpm: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    monthly_budget_micros: Change<u64>,
    #[serde(default, deserialize_with = "change")]
    daily_budget_micros: Change<u64>,
    #[serde(default, deserialize_with = "change")]
    visitor_rpm: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    visitor_rpd: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    verified_rpm: Change<u32>,
    #[serde(default, deserialize_with = "change")]
    verified_rpd: Change<u32>,
}

/// A present field: `null` clears, a value sets (an absent one is `Change::Keep`, the default).
fn change<'de, D, T>(deserializer: D) -> Result<Change<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Change::replacing(Option::<T>::deserialize(deserializer)?))
}

impl LimitsPatchBody {
    fn change(&self) -> LimitsChange {
        LimitsChange {
            rpm: self.rpm,
            rpd: self.rpd,
            tpm: self.tpm,
            monthly_budget_micros: self.monthly_budget_micros,
            daily_budget_micros: self.daily_budget_micros,
            visitor_rpm: self.visitor_rpm,
            visitor_rpd: self.visitor_rpd,
            verified_rpm: self.verified_rpm,
            verified_rpd: self.verified_rpd,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WidgetBody {
    title: Option<String>,
    greeting: Option<String>,
    suggestions: Option<Vec<String>>,
    primary_color: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSiteBody {
    name: String,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    allow_no_origin: bool,
    #[serde(default)]
    models: Vec<String>,
    system_prompt: Option<String>,
    max_tokens: Option<u32>,
    temperature_max: Option<f32>,
    context_messages: Option<u32>,
    client_instructions: Option<ClientInstructions>,
    #[serde(default)]
    grounding: Grounding,
    #[serde(default)]
    widget: WidgetBody,
    #[serde(default)]
    limits: LimitsBody,
}

async fn list_sites(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sites = state.store.list_sites().await.map_err(ApiError::internal)?;
    Ok(Json(json!({"data": sites.iter().map(sites::site_view).collect::<Vec<_>>()})))
}

async fn create_site(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSiteBody>,
) -> Result<Response, ApiError> {
    let (limits, visitor_limits) = body.limits.split();
    let spec = SiteSpec {
        name: body.name,
        origins: body.origins,
        allow_no_origin: body.allow_no_origin,
        models: body.models,
        system_prompt: body.system_prompt,
        max_tokens: body.max_tokens,
        temperature_max: body.temperature_max,
        context_messages: body.context_messages,
        client_instructions: body.client_instructions,
        widget: SiteWidget {
            title: body.widget.title,
            greeting: body.widget.greeting,
            suggestions: body.widget.suggestions,
            primary_color: body.widget.primary_color,
        },
        limits,
        visitor_limits,
        conversations: Default::default(),
        grounding: body.grounding,
    };
    let created = sites::create_site(state.store.as_ref(), &state.config, spec, false).await?;
    let mut view = sites::site_view(&created.site);
    view["key"] = json!(created.key.reveal());
    Ok(with_secret(StatusCode::CREATED, view))
}

async fn show_site(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = state.store.site(&id).await.map_err(ApiError::internal)?;
    site.map(|site| Json(sites::site_view(&site))).ok_or_else(|| not_found("site", &id))
}

async fn delete_site(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_site(&id).await.map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("site", &id))
    }
}

/// `PATCH`: the limits the body names change, the others keep their value (as `confab sites
/// limits` does).
async fn change_site_limits(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LimitsPatchBody>,
) -> Result<Json<Value>, ApiError> {
    changed_site_limits(&state, &id, &body.change()).await
}

/// `PUT`: the body is the whole set of limits; what it leaves out is removed.
async fn replace_site_limits(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LimitsBody>,
) -> Result<Json<Value>, ApiError> {
    let (limits, visitor_limits) = body.split();
    changed_site_limits(&state, &id, &LimitsChange::replacing(limits, visitor_limits)).await
}

async fn changed_site_limits(
    state: &AppState,
    id: &str,
    change: &LimitsChange,
) -> Result<Json<Value>, ApiError> {
    let site = sites::update_limits(state.store.as_ref(), id, change).await?;
    site.map(|site| Json(sites::site_view(&site))).ok_or_else(|| not_found("site", id))
}

/// The body, optional, may set `grace_secs` (0: the old key stops at once).
async fn rekey_site(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(body): OptionalApiJson<GraceBody>,
) -> Result<Response, ApiError> {
    let Some(rekeyed) = sites::rekey_site(state.store.as_ref(), &id, body.grace(&state)).await?
    else {
        return Err(not_found("site", &id));
    };
    let mut view = sites::site_view(&rekeyed.site);
    view["key"] = json!(rekeyed.key.reveal());
    Ok(with_secret(StatusCode::OK, view))
}

/// Origins to add and to remove.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn change_site_origins(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OriginsBody>,
) -> Result<Json<Value>, ApiError> {
    let site = sites::change_origins(state.store.as_ref(), &id, &body.add, &body.remove).await?;
    site.map(|site| Json(sites::site_view(&site))).ok_or_else(|| not_found("site", &id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    rpd: Option<u32>,
    #[serde(default)]
    tpm: Option<u32>,
    #[serde(default)]
    monthly_budget_micros: Option<u64>,
    #[serde(default)]
    daily_budget_micros: Option<u64>,
}

async fn list_keys(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = state.store.list_api_keys().await.map_err(ApiError::internal)?;
    Ok(Json(json!({"data": keys.iter().map(keys::key_view).collect::<Vec<_>>()})))
}

fn issued_view(issued: &keys::IssuedKey) -> Value {
    let mut view = keys::key_view(&issued.key);
    view["key"] = json!(issued.secret.reveal());
    view
}

async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let scopes = body
        .scopes
        .iter()
        .map(|name| {
            Scope::from_name(name).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_value",
                    format!("scopes: unknown scope `{name}` (known: {})", Scope::names()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = KeySpec {
        name: body.name,
        scopes,
        models: body.models,
        limits: CallerLimits {
            rpm: body.rpm,
            rpd: body.rpd,
            tpm: body.tpm,
            monthly_budget_micros: body.monthly_budget_micros,
            daily_budget_micros: body.daily_budget_micros,
        },
    };
    let issued = keys::create_key(state.store.as_ref(), &state.config, spec).await?;
    Ok(with_secret(StatusCode::CREATED, issued_view(&issued)))
}

/// The body, optional, may set `grace_secs` (0: the old secret stops at once).
async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(body): OptionalApiJson<GraceBody>,
) -> Result<Response, ApiError> {
    let issued = keys::rotate_key(state.store.as_ref(), &id, body.grace(&state)).await?;
    Ok(with_secret(StatusCode::OK, issued_view(&issued)))
}

async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    keys::revoke_key(state.store.as_ref(), &id).await?;
    let key = state.store.api_key(&id).await.map_err(ApiError::internal)?;
    key.map(|key| Json(keys::key_view(&key))).ok_or_else(|| not_found("key", &id))
}

/// `?days=N&site=ID&key=ID&model=NAME`.
async fn usage(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<crate::usage::UsageReport>, ApiError> {
    let days = days_param(query.as_deref())?;
    // Decoded, as the console percent-encodes values (a model may be `provider:name`).
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .find_map(|(key, value)| (key == name && !value.is_empty()).then(|| value.into_owned()))
    };
    let (site, key, model) = (param("site"), param("key"), param("model"));
    let filter = crate::usage::UsageFilter {
        site: site.as_deref(),
        key: key.as_deref(),
        model: model.as_deref(),
    };
    let report =
        crate::usage::filtered_report(state.store.as_ref(), days, filter, crate::unix_now())
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(report))
}
