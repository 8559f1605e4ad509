//! Site-key authentication and the origin check, as one extractor.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};

use super::AppState;
use crate::error::ApiError;
use crate::sitekey::{PresentedSiteKey, public_prefix};
use crate::store::Site;

/// A request authenticated with a site key and coming from one of the site's origins (or with no
/// `Origin` at all, when the site allows that).
#[derive(Debug, Clone)]
pub struct SiteAuth {
    pub site: Site,
}

const MISSING_KEY: ApiError = ApiError::Unauthenticated {
    code: "missing_api_key",
    message: "missing API key; send `Authorization: Bearer <site key>`",
};
const INVALID_KEY: ApiError =
    ApiError::Unauthenticated { code: "invalid_api_key", message: "the API key is not valid" };

impl FromRequestParts<AppState> for SiteAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(MISSING_KEY)?;
        let presented = PresentedSiteKey::parse(token).ok_or(INVALID_KEY)?;
        let credentials = state
            .store
            .site_by_key(presented.lookup_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(INVALID_KEY)?;
        if !presented.matches(&credentials.key_hash) {
            return Err(INVALID_KEY);
        }
        let site = credentials.site;
        tracing::Span::current().record("site", public_prefix(&site.key_lookup_id));
        check_origin(&site, &parts.headers)?;
        Ok(Self { site })
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The calling page's origin: the `Origin` header, or for same-origin `GET`s (where browsers
/// send no `Origin`) the origin of the `Referer`. Neither can be forged by a page in a browser,
/// which is all the origin check can promise: a non-browser client can send any header.
fn page_origin(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.clone());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let origin = url::Url::parse(referer).ok()?.origin();
    origin.is_tuple().then(|| HeaderValue::from_str(&origin.ascii_serialization()).ok())?
}

fn check_origin(site: &Site, headers: &HeaderMap) -> Result<(), ApiError> {
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
