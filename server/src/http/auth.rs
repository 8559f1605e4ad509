//! Authentication: a site key with the origin check (a website's pages), or a secret API key
//! with its scopes (a server), as extractors.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};

use super::AppState;
use crate::error::ApiError;
use crate::sitekey::{KeyKind, PresentedKey};
use crate::store::{ApiKey, Scope, Site, SiteSettings, StoreError};
use crate::visitor::{Visitor, VisitorRules, VisitorSecret, client_ip, identify};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A page of a website, with the site's key, from one of the site's origins (or with no
    /// `Origin` at all, when the site allows that).
    Site(Arc<Site>),
    /// A server, with a secret API key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// Refuses a secret key without `scope`; site keys may chat and list models, nothing else.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        let allowed = match self {
            Caller::Site(_) => matches!(scope, Scope::Chat | Scope::Models),
            Caller::Key(key) => key.has_scope(scope),
        };
        if allowed {
            return Ok(());
        }
        Err(ApiError::PermissionDenied {
            code: "insufficient_scope",
            message: match self {
                Caller::Site(_) => format!("a site key cannot use the `{}` scope", scope.as_str()),
                Caller::Key(_) => format!("this API key lacks the `{}` scope", scope.as_str()),
            }
            .into(),
        })
    }
}

/// A request authenticated with a site key (for what only the widget asks, like its config).
#[derive(Debug, Clone)]
pub struct SiteAuth {
    pub site: Arc<Site>,
}

const MISSING_KEY: ApiError = ApiError::Unauthenticated {
    code: "missing_api_key",
    message: "missing API key; send `Authorization: Bearer <site key>`",
};
const INVALID_KEY: ApiError =
    ApiError::Unauthenticated { code: "invalid_api_key", message: "the API key is not valid" };

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(MISSING_KEY)?;
        let presented = PresentedKey::parse(token).ok_or(INVALID_KEY)?;
        match presented.kind {
            KeyKind::Site => {
                let credentials = state
                    .store
                    .site_by_key(presented.lookup_id, crate::unix_now_i64())
                    .await
                    .map_err(lookup_failed)?
                    .ok_or(INVALID_KEY)?;
                if !presented.matches(&credentials.key_hash) {
                    return Err(INVALID_KEY);
                }
                let site = credentials.site;
                tracing::Span::current().record("site", KeyKind::Site.public(&site.key_lookup_id));
                check_origin(&site.settings, &parts.headers)?;
                Ok(Caller::Site(site))
            }
            KeyKind::Secret => {
                let now = crate::unix_now_i64();
                let credentials = state
                    .store
                    .api_key_by_lookup(presented.lookup_id, now)
                    .await
                    .map_err(lookup_failed)?
                    .ok_or(INVALID_KEY)?;
                if !presented.matches(&credentials.key_hash) {
                    return Err(INVALID_KEY);
                }
                let key = credentials.key;
                tracing::Span::current().record("key", KeyKind::Secret.public(presented.lookup_id));
                state.key_activity.touch(&key.id);
                Ok(Caller::Key(key))
            }
        }
    }
}

/// A key lookup that failed. A directory too stale to trust is the relay's own state, not the
/// caller's fault: 503, so that clients retry, rather than a 401 that says the key is bad.
fn lookup_failed(error: StoreError) -> ApiError {
    match error {
        StoreError::DirectoryStale { .. } => ApiError::Unavailable {
            code: "directory_stale",
            message: "the relay cannot check keys right now (its copy of sites and keys could not \
                      be refreshed); retry later",
        },
        other => ApiError::internal(other),
    }
}

impl FromRequestParts<AppState> for SiteAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Site(site) => Ok(Self { site }),
            Caller::Key(_) => Err(ApiError::PermissionDenied {
                code: "site_key_required",
                message: "this endpoint is for the widget: call it with a site key".into(),
            }),
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who is asking on one of `site`'s pages: the visitor its `X-Confab-Visitor` token names, or
/// the anonymous visitor at the client's address (`peer`, or behind a trusted proxy the address
/// it forwarded), under the site's rules for visitor tokens.
pub(super) fn site_visitor(
    state: &AppState,
    site: &Site,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Visitor, ApiError> {
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| {
        client_ip(peer, headers, &state.config.server.trusted_proxies)
    });
    let secret = site.verification.secret.clone().map(VisitorSecret::new);
    let rules = VisitorRules {
        site_id: &site.id,
        secret: secret.as_ref().map(VisitorSecret::key),
        mode: site.verification.mode,
        require_verified: site.verification.required,
    };
    identify(headers, ip, rules, crate::unix_now())
        .map_err(|error| ApiError::Unauthenticated { code: error.code(), message: error.message() })
}

/// `visitor` as usage records store it: hashed under the relay's salt and the site's id.
pub(super) fn visitor_hash(state: &AppState, site: &Site, visitor: &Visitor) -> String {
    let mut salt = state.visitor_salt.clone();
    salt.extend_from_slice(site.id.as_bytes());
    visitor.usage_hash(&salt)
}

/// The calling page's origin: the `Origin` header, or for same-origin `GET`s (where browsers
/// send no `Origin`) the origin of the `Referer`. Neither can be forged by a page in a browser,
/// which is all the origin check can promise: a non-browser client can send any header.
pub(super) fn page_origin(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.clone());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let origin = url::Url::parse(referer).ok()?.origin();
    origin.is_tuple().then(|| HeaderValue::from_str(&origin.ascii_serialization()).ok())?
}

fn check_origin(site: &SiteSettings, headers: &HeaderMap) -> Result<(), ApiError> {
    match page_origin(headers).as_ref() {
        None if site.allow_no_origin => Ok(()),
        None => Err(ApiError::PermissionDenied {
            code: "origin_required",
            message: "this site key may only be used from the site's own pages (no Origin header \
                      was sent)"
                .into(),
        }),
        Some(origin) if site.origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::PermissionDenied {
            code: "origin_not_allowed",
            message: "this site key may not be used from this origin".into(),
        }),
    }
}
