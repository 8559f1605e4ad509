//! Visitor tokens: the site's [`VisitorSecret`], the two token forms a site's backend signs
//! with it, the site's [`TokenMode`] that says which one it uses, and [`verify`], which checks a
//! token of that form and refuses the other.
//!
//! **Why a site accepts only one form.** Both forms are HMAC-SHA256 under the same secret: the
//! HMAC form signs the user id, a JWT signs `base64url(header).base64url(claims)`. A site that
//! hands out HMAC user hashes signs whatever user id it is given, and a user id can be chosen to
//! be `base64url({"alg":"HS256"}).base64url({"sub":"admin",...})`: its hash, hex-decoded and
//! base64url-encoded, is a valid JWT signature for any `sub`. (And the other way round: a JWT's
//! signature is the HMAC hash of a user id that is the JWT's first two parts.) The relay cannot
//! tell such a forgery from a real token, so a site verifies one form, the one its backend
//! issues, and a token of the other form is refused ([`VisitorTokenError::WrongForm`]). A secret
//! is never used for both: changing a site's mode comes with a new secret (`sites`).
//!
//! JWTs are verified here by hand (HMAC-SHA256 with the `hmac` crate, base64url, serde_json)
//! rather than with the `jsonwebtoken` crate: only HS256 is accepted, which is a few lines, while
//! `jsonwebtoken`'s pure-Rust backend brings in RSA, P-256, P-384 and Ed25519 (about thirty
//! crates, among them `rsa`, with its timing advisory RUSTSEC-2023-0071) for algorithms this
//! module must refuse anyway. Doing it here also keeps every rule in view: the accepted
//! algorithm, the required claims, the clock leeway and the 24-hour cap.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longer tokens are refused before any work is done on them.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The longest visitor id (HMAC user id or JWT `sub`), in bytes of UTF-8.
pub const MAX_VISITOR_ID_BYTES: usize = 256;
/// Clock skew allowed between the site's backend and the relay, for `exp`, `nbf` and `iat`.
pub const CLOCK_LEEWAY_SECS: u64 = 60;
/// A JWT may not expire later than this from now: visitor JWTs are meant to be short-lived, and a
/// site that wants tokens that never expire has the HMAC form for that.
pub const MAX_JWT_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Keys shorter than this are refused, so that a site whose secret was never set (an empty
/// value somewhere) cannot have tokens forged with an empty key.
pub const MIN_SECRET_BYTES: usize = 32;

const HMAC_TOKEN_PREFIX: &str = "hmac.";

pub use confab_store::{TokenMode, UnknownTokenMode};

type HmacSha256 = Hmac<Sha256>;

pub(super) fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail; the
    // `Result` comes from the generic `KeyInit` trait.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// A site's visitor secret: 32 random bytes, hex-encoded.
///
/// The 64-character hex text is itself the HMAC key, as ASCII, on both sides: it is what the
/// site's backend is shown once and passes to its HMAC or JWT library as a string, and every such
/// library uses a string secret's bytes as the key. (Decoding the hex first would make the
/// obvious `hmac(secret, user_id)` on the site's side produce tokens the relay refuses.)
/// `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct VisitorSecret(String);

impl VisitorSecret {
    /// A secret as stored (the text that was shown to the site).
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The text to show the site's operator, once, and to store.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The key to give [`verify`].
    pub fn key(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for VisitorSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VisitorSecret([redacted])")
    }
}

/// A new visitor secret from 32 bytes of the thread's cryptographic RNG.
pub fn new_visitor_secret() -> VisitorSecret {
    VisitorSecret(hex::encode(rand::random::<[u8; 32]>()))
}

/// A verified visitor's id: the site's own user id, as its backend signed it.
///
/// It is not a secret, but it is personal, so `Debug` shows only a pseudonym (the first 4 bytes
/// of its SHA-256); [`VisitorId::as_str`] gives the id itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VisitorId(String);

impl VisitorId {
    fn new(id: String) -> Result<Self, VisitorTokenError> {
        if id.is_empty() {
            return Err(VisitorTokenError::Malformed("the visitor token's user id is empty"));
        }
        if id.len() > MAX_VISITOR_ID_BYTES {
            return Err(VisitorTokenError::Malformed(
                "the visitor token's user id is longer than 256 bytes",
            ));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = Sha256::digest(self.0.as_bytes());
        write!(f, "VisitorId(sha256:{})", hex::encode(&digest[..4]))
    }
}

/// Why a visitor token was refused. Each one is answered with 401; [`VisitorTokenError::code`]
/// is the envelope's `code`, and the message names the rule broken, never the token or the
/// secret, and never echoes what the token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum VisitorTokenError {
    /// The site requires verified visitors and the request has no token.
    Missing,
    /// Not shaped like either token form, or a JWT whose claims are missing or of the wrong type.
    Malformed(&'static str),
    /// A token of the form the site does not accept: the site's mode is the one named.
    WrongForm(TokenMode),
    /// The signature does not match the site's secret: forged, altered, or another site's.
    BadSignature,
    /// A JWT whose `aud` does not name this site.
    WrongAudience,
    /// A JWT past its `exp` (plus the leeway).
    Expired,
    /// A JWT whose `nbf` or `iat` is in the future (beyond the leeway).
    NotYetValid,
    /// A token the relay does not accept by policy: another algorithm than HS256, critical header
    /// extensions, encryption, a lifetime over 24 hours, or a site without a usable secret.
    Unsupported(&'static str),
}

impl VisitorTokenError {
    /// The `code` of the API error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "visitor_token_required",
            Self::Malformed(_) => "malformed_visitor_token",
            Self::WrongForm(_) => "wrong_visitor_token_form",
            Self::BadSignature | Self::WrongAudience | Self::NotYetValid => "invalid_visitor_token",
            Self::Expired => "expired_visitor_token",
            Self::Unsupported(_) => "unsupported_visitor_token",
        }
    }

    /// The message for the API error envelope (also the `Display`).
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => {
                "this site requires a verified visitor: send a visitor token in X-Confab-Visitor"
            }
            Self::Malformed(reason) | Self::Unsupported(reason) => reason,
            Self::WrongForm(TokenMode::Hmac) => {
                "this site accepts only HMAC visitor tokens (hmac.<base64url user id>.<hex hash>), \
                 not JWTs: its visitor token mode is hmac"
            }
            Self::WrongForm(TokenMode::Jwt) => {
                "this site accepts only HS256 JWT visitor tokens, not hmac.<user id>.<hash> \
                 tokens: its visitor token mode is jwt"
            }
            Self::BadSignature => {
                "the visitor token's signature does not match this site's visitor secret"
            }
            Self::WrongAudience => "the visitor token was issued for another site (aud)",
            Self::Expired => "the visitor token has expired",
            Self::NotYetValid => "the visitor token is not valid yet (nbf or iat is in the future)",
        }
    }
}

/// The visitor token for `user_id` in the live-chat (HMAC) form:
/// `hmac.<base64url-no-pad(user_id)>.<hex HMAC-SHA256(secret, user_id)>`.
///
/// A site's backend usually computes only the hex HMAC, as live-chat products document it, and
/// hands it to the page with the user id; the widget puts the two together in this form.
pub fn hmac_token(secret: &[u8], user_id: &str) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(user_id.as_bytes());
    let hash = hex::encode(mac.finalize().into_bytes());
    format!("{HMAC_TOKEN_PREFIX}{}.{hash}", URL_SAFE_NO_PAD.encode(user_id))
}

/// Verifies a visitor token for the site `site_id`, whose visitor secret is `secret` (see
/// [`VisitorSecret::key`]) and whose mode is `mode`, at `now_unix` (seconds since the epoch).
///
/// There are two forms, both signed with HMAC-SHA256 under the site's secret; only the one
/// `mode` names is accepted, and a token of the other is [`VisitorTokenError::WrongForm`]:
///
/// - `hmac.<base64url-no-pad(user id)>.<hex HMAC-SHA256(secret, user id)>` (hex in either case).
///   This is the live-chat convention, and like it the token **never expires**: it proves only
///   that the site's backend once vouched for this user id. Rotating the site's secret is the only
///   way to revoke one.
/// - A compact JWS (`header.payload.signature`) with `"alg":"HS256"`, nothing else (`none`,
///   HS384/512 and asymmetric algorithms are refused, as is any `crit` header). Claims: `sub`,
///   the user id (required, a non-empty string of at most 256 bytes); `exp` (required); `nbf`
///   and `iat` (optional, must not be in the future); `aud` (optional, a string or array that
///   must name `site_id`). Times are checked with a 60-second leeway, and `exp` may be at most
///   24 hours (plus the leeway) from now. Other claims are ignored.
///
/// The same user id gives the same [`VisitorId`] in either form.
pub fn verify(
    token: &str,
    secret: &[u8],
    mode: TokenMode,
    site_id: &str,
    now_unix: u64,
) -> Result<VisitorId, VisitorTokenError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(VisitorTokenError::Unsupported(
            "this site has no usable visitor secret, so its visitor tokens cannot be verified",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VisitorTokenError::Malformed("the visitor token is longer than 4096 bytes"));
    }
    // The two forms cannot be mistaken for each other: a JWT starts with its base64url JSON
    // header (`{` encodes as `ey`), which `hmac.` can never decode to.
    match (mode, token.strip_prefix(HMAC_TOKEN_PREFIX)) {
        (TokenMode::Hmac, Some(rest)) => verify_hmac_token(rest, secret),
        (TokenMode::Jwt, None) => verify_jwt(token, secret, site_id, now_unix),
        (TokenMode::Jwt, Some(_)) => Err(VisitorTokenError::WrongForm(TokenMode::Jwt)),
        (TokenMode::Hmac, None) if matches!(token.split('.').count(), 3 | 5) => {
            Err(VisitorTokenError::WrongForm(TokenMode::Hmac))
        }
        (TokenMode::Hmac, None) => Err(VisitorTokenError::Malformed(
            "a visitor token must be hmac.<base64url user id>.<hex hash>",
        )),
    }
}

fn verify_hmac_token(rest: &str, secret: &[u8]) -> Result<VisitorId, VisitorTokenError> {
    const SHAPE: &str = "a visitor token starting with `hmac.` must be \
                         hmac.<base64url user id>.<64 hex digits>";
    let (encoded_id, hash) = rest.split_once('.').ok_or(VisitorTokenError::Malformed(SHAPE))?;
    let id = URL_SAFE_NO_PAD.decode(encoded_id).map_err(|_| VisitorTokenError::Malformed(SHAPE))?;
    let id = String::from_utf8(id)
        .map_err(|_| VisitorTokenError::Malformed("the visitor token's user id is not UTF-8"))?;
    let hash = hex::decode(hash).map_err(|_| VisitorTokenError::Malformed(SHAPE))?;
    if hash.len() != 32 {
        return Err(VisitorTokenError::Malformed(SHAPE));
    }
    let mut mac = hmac_sha256(secret);
    mac.update(id.as_bytes());
    mac.verify_slice(&hash).map_err(|_| VisitorTokenError::BadSignature)?;
    VisitorId::new(id)
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct JwtClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    aud: Option<Audience>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, site_id: &str) -> bool {
        match self {
            Self::One(aud) => aud == site_id,
            Self::Many(auds) => auds.iter().any(|aud| aud == site_id),
        }
    }
}

/// A JWT NumericDate as whole seconds (rounded down), if it is a non-negative finite number.
fn numeric_date(value: Option<f64>) -> Result<Option<u64>, VisitorTokenError> {
    match value {
        None => Ok(None),
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds as u64)),
        Some(_) => Err(VisitorTokenError::Malformed(
            "the visitor token's exp, nbf and iat must be non-negative numbers of seconds",
        )),
    }
}

/// Parses a JWT header or claims set, which must be a JSON object. (A derived `Deserialize` would
/// also take an array of the fields in order; it does refuse duplicate names, which a map would
/// silently resolve.)
fn json_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    let first = json.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn verify_jwt(
    token: &str,
    secret: &[u8],
    site_id: &str,
    now: u64,
) -> Result<VisitorId, VisitorTokenError> {
    const SHAPE: &str = "a visitor token must be hmac.<base64url user id>.<hex hash> \
                         or a JWT (header.payload.signature)";
    const HEADER: &str = "the visitor token's JWT header is not base64url JSON with an alg";
    const CLAIMS: &str = "the visitor token's JWT claims are not base64url JSON with sub a \
                          string, exp, nbf and iat numbers, and aud a string or list of strings";
    match token.split('.').count() {
        3 => {}
        5 => {
            return Err(VisitorTokenError::Unsupported(
                "encrypted visitor tokens (JWE) are not supported: sign with HS256",
            ));
        }
        _ => return Err(VisitorTokenError::Malformed(SHAPE)),
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(VisitorTokenError::Malformed(SHAPE))?;
    let (header, payload) = signed.split_once('.').ok_or(VisitorTokenError::Malformed(SHAPE))?;

    let header =
        URL_SAFE_NO_PAD.decode(header).map_err(|_| VisitorTokenError::Malformed(HEADER))?;
    let header: JwtHeader = json_object(&header).ok_or(VisitorTokenError::Malformed(HEADER))?;
    if header.alg != "HS256" {
        return Err(VisitorTokenError::Unsupported("only HS256 visitor tokens are accepted"));
    }
    if header.crit.is_some() {
        return Err(VisitorTokenError::Unsupported(
            "visitor tokens with critical header extensions (crit) are not supported",
        ));
    }

    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| {
        VisitorTokenError::Malformed("the visitor token's signature is not base64url")
    })?;
    let mut mac = hmac_sha256(secret);
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature).map_err(|_| VisitorTokenError::BadSignature)?;

    // From here on the claims are the site's own words.
    let claims =
        URL_SAFE_NO_PAD.decode(payload).map_err(|_| VisitorTokenError::Malformed(CLAIMS))?;
    let claims: JwtClaims = json_object(&claims).ok_or(VisitorTokenError::Malformed(CLAIMS))?;
    let sub = claims
        .sub
        .ok_or(VisitorTokenError::Malformed("the visitor token has no sub (the user id)"))?;
    let id = VisitorId::new(sub)?;
    let exp = numeric_date(claims.exp)?.ok_or(VisitorTokenError::Malformed(
        "the visitor token has no exp: visitor JWTs must expire",
    ))?;
    let nbf = numeric_date(claims.nbf)?;
    let iat = numeric_date(claims.iat)?;
    if let Some(aud) = &claims.aud
        && !aud.names(site_id)
    {
        return Err(VisitorTokenError::WrongAudience);
    }
    if now >= exp.saturating_add(CLOCK_LEEWAY_SECS) {
        return Err(VisitorTokenError::Expired);
    }
    if exp > now.saturating_add(MAX_JWT_LIFETIME_SECS + CLOCK_LEEWAY_SECS) {
        return Err(VisitorTokenError::Unsupported(
            "the visitor token expires more than 24 hours from now: \
             visitor JWTs must be short-lived",
        ));
    }
    let in_future =
        |at: Option<u64>| at.is_some_and(|at| at > now.saturating_add(CLOCK_LEEWAY_SECS));
    if in_future(nbf) || in_future(iat) {
        return Err(VisitorTokenError::NotYetValid);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A secret as a site would be shown it; the vectors below were made with Python's `hmac`,
    /// `hashlib` and `base64` under this key, independently of this module.
    const SECRET: &[u8] = b"3f9a6c2e8b0d4f1a7c5e9b3d2f8a6c4e1b7d9f0a3c5e8b2d4f6a9c1e7b3d5f80";
    const OTHER_SECRET: &[u8] = b"0000000000000000000000000000000000000000000000000000000000000001";
    const SITE: &str = "site_demo";
    const NOW: u64 = 1_700_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs a JWT by hand, so that tests can build every kind of broken token.
    fn jwt(secret: &[u8], header: &Value, claims: &Value) -> String {
        jwt_text(secret, &header.to_string(), &claims.to_string())
    }

    fn jwt_text(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn hs256(claims: &Value) -> String {
        jwt(SECRET, &json!({"alg": "HS256", "typ": "JWT"}), claims)
    }

    /// The mode a site that issues tokens of `token`'s form would have.
    fn mode_of(token: &str) -> TokenMode {
        if token.starts_with(HMAC_TOKEN_PREFIX) { TokenMode::Hmac } else { TokenMode::Jwt }
    }

    /// Verifies `token` for a site in the mode of its own form.
    fn check(token: &str) -> Result<String, VisitorTokenError> {
        verify(token, SECRET, mode_of(token), SITE, NOW).map(|id| id.as_str().to_owned())
    }

    #[test]
    fn each_mode_refuses_the_other_form_with_its_own_code() {
        let hmac = hmac_token(SECRET, "user-42");
        let jwt = hs256(&json!({"sub": "user-42", "exp": NOW + 600}));
        assert_eq!(verify(&hmac, SECRET, TokenMode::Hmac, SITE, NOW).unwrap().as_str(), "user-42");
        assert_eq!(verify(&jwt, SECRET, TokenMode::Jwt, SITE, NOW).unwrap().as_str(), "user-42");

        let refused = verify(&jwt, SECRET, TokenMode::Hmac, SITE, NOW).unwrap_err();
        assert_eq!(refused, VisitorTokenError::WrongForm(TokenMode::Hmac));
        assert_eq!(refused.code(), "wrong_visitor_token_form");
        assert!(refused.message().contains("only HMAC visitor tokens"), "{refused}");
        let refused = verify(&hmac, SECRET, TokenMode::Jwt, SITE, NOW).unwrap_err();
        assert_eq!(refused, VisitorTokenError::WrongForm(TokenMode::Jwt));
        assert!(refused.message().contains("only HS256 JWT visitor tokens"), "{refused}");

        // A JWE is of the JWT family too; what is neither is malformed, in either mode.
        let jwe = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVy.dGFn";
        assert_eq!(
            verify(jwe, SECRET, TokenMode::Hmac, SITE, NOW),
            Err(VisitorTokenError::WrongForm(TokenMode::Hmac))
        );
        for mode in [TokenMode::Hmac, TokenMode::Jwt] {
            let result = verify("not a token", SECRET, mode, SITE, NOW);
            assert!(matches!(result, Err(VisitorTokenError::Malformed(_))), "{mode}");
        }
    }

    /// The forgery that one shared key allowed: a site in HMAC mode signs whatever user id it is
    /// given, so a visitor who registers the id `base64url(header).base64url(claims)` gets, as
    /// their user hash, a valid HS256 signature over a JWT that names any `sub` they like.
    #[test]
    fn an_hmac_user_hash_over_a_jwt_shaped_id_is_never_taken_for_a_jwt() {
        let claims = json!({"sub": "admin", "exp": NOW + 600});
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": "HS256"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let issued = hmac_token(SECRET, &signed);
        let user_hash = issued.rsplit('.').next().unwrap();
        let forged = format!("{signed}.{}", b64(&hex::decode(user_hash).unwrap()));
        // Under one key with both forms accepted, this was a valid token for `admin`:
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(signed.as_bytes());
        assert!(mac.verify_slice(&hex::decode(user_hash).unwrap()).is_ok());
        // A site in HMAC mode (the one that issued the hash) refuses it as a JWT...
        assert_eq!(
            verify(&forged, SECRET, TokenMode::Hmac, SITE, NOW),
            Err(VisitorTokenError::WrongForm(TokenMode::Hmac))
        );
        // ...and the issued token itself only names the odd-looking user id it was made for.
        assert_eq!(
            verify(&issued, SECRET, TokenMode::Hmac, SITE, NOW).unwrap().as_str(),
            signed.as_str()
        );
        // The reverse: a JWT's signature as the user hash of its first two parts is refused by a
        // site in JWT mode.
        let jwt = hs256(&claims);
        let (jwt_signed, signature) = jwt.rsplit_once('.').unwrap();
        let reshaped = format!(
            "hmac.{}.{}",
            b64(jwt_signed.as_bytes()),
            hex::encode(URL_SAFE_NO_PAD.decode(signature).unwrap())
        );
        assert_eq!(
            verify(&reshaped, SECRET, TokenMode::Jwt, SITE, NOW),
            Err(VisitorTokenError::WrongForm(TokenMode::Jwt))
        );
    }

    #[test]
    fn token_modes_read_and_print_as_the_cli_and_the_database_write_them() {
        for mode in [TokenMode::Hmac, TokenMode::Jwt] {
            assert_eq!(mode.as_str().parse::<TokenMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(TokenMode::default(), TokenMode::Hmac);
        let error = "HS256".parse::<TokenMode>().unwrap_err();
        assert_eq!(error.to_string(), "`HS256` is not a visitor token mode: use hmac or jwt");
    }

    #[test]
    fn an_hmac_token_matches_what_a_site_backend_computes() {
        let python =
            "hmac.dXNlci00Mg.67325f11104c3b3138da097a05b4f4d0685a590519e583a217eb8471ffd18d2d";
        assert_eq!(hmac_token(SECRET, "user-42"), python);
        assert_eq!(check(python), Ok("user-42".to_owned()));
        assert_eq!(
            check(&python.to_uppercase().replacen("HMAC.DXNLCI00MG", "hmac.dXNlci00Mg", 1)),
            Ok("user-42".to_owned())
        );
    }

    #[test]
    fn hmac_tokens_round_trip_user_ids_with_dots_and_unicode() {
        let python = "hmac.YW5hLm3DvGxsZXJAZXhhbXBsZS5jb20.\
                      47f277a1b38b7e520278152263ace49a7c5f263b4ad8eb4d9c0818df0ee2cdca";
        assert_eq!(check(python), Ok("ana.müller@example.com".to_owned()));
        for id in ["a.b.c", "..", "名前", "x", &"z".repeat(MAX_VISITOR_ID_BYTES)] {
            assert_eq!(check(&hmac_token(SECRET, id)), Ok(id.to_owned()), "{id}");
        }
    }

    #[test]
    fn an_hmac_token_made_with_another_secret_is_invalid() {
        let token = hmac_token(OTHER_SECRET, "user-42");
        assert_eq!(check(&token), Err(VisitorTokenError::BadSignature));
    }

    #[test]
    fn an_hmac_token_with_an_altered_user_id_is_invalid() {
        let genuine = hmac_token(SECRET, "user-42");
        let hash = genuine.rsplit('.').next().unwrap();
        let forged = format!("hmac.{}.{hash}", b64(b"user-43"));
        assert_eq!(check(&forged), Err(VisitorTokenError::BadSignature));
    }

    #[test]
    fn misshapen_hmac_tokens_are_malformed() {
        let hash = "67325f11104c3b3138da097a05b4f4d0685a590519e583a217eb8471ffd18d2d";
        for token in [
            "hmac.".to_owned(),
            "hmac.dXNlci00Mg".to_owned(),
            format!("hmac.dXNlci00Mg=.{hash}"),
            format!("hmac.!!!.{hash}"),
            format!("hmac.dXNlci00Mg.{hash}.x"),
            "hmac.dXNlci00Mg.zz".to_owned(),
            format!("hmac.dXNlci00Mg.{}", &hash[..62]),
            format!("hmac.dXNlci00Mg.{hash}00"),
            format!("hmac.{}.{hash}", b64(b"\xff\xfe")),
        ] {
            assert!(matches!(check(&token), Err(VisitorTokenError::Malformed(_))), "{token}");
        }
    }

    #[test]
    fn hmac_tokens_with_an_empty_or_overlong_user_id_are_malformed() {
        for id in ["", &"z".repeat(MAX_VISITOR_ID_BYTES + 1)] {
            let result = check(&hmac_token(SECRET, id));
            assert!(matches!(result, Err(VisitorTokenError::Malformed(_))), "{}", id.len());
        }
    }

    #[test]
    fn nothing_verifies_under_a_short_or_empty_secret() {
        for secret in [&b""[..], b"short"] {
            let token = hmac_token(secret, "user-42");
            assert!(matches!(
                verify(&token, secret, TokenMode::Hmac, SITE, NOW),
                Err(VisitorTokenError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn overlong_tokens_are_refused_unread() {
        let token = format!("hmac.{}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(check(&token), Err(VisitorTokenError::Malformed(_))));
    }

    // --- JWTs -------------------------------------------------------------------------------

    #[test]
    fn a_jwt_signed_by_another_implementation_verifies() {
        let python = concat!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
            "eyJzdWIiOiJ1c2VyLTQyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsImF1ZCI6",
            "InNpdGVfZGVtbyIsIm5hbWUiOiJBbmEifQ.",
            "EcUKm9H6vFo9KL-zctFX4iV5uvpH5DozgbQdrISzCwI",
        );
        assert_eq!(check(python), Ok("user-42".to_owned()));
    }

    #[test]
    fn a_valid_jwt_names_its_subject() {
        let token = hs256(&json!({"sub": "user-42", "exp": NOW + 600}));
        assert_eq!(check(&token), Ok("user-42".to_owned()));
        // The same user id is the same visitor in either form.
        let by_hmac =
            verify(&hmac_token(SECRET, "user-42"), SECRET, TokenMode::Hmac, SITE, NOW).unwrap();
        assert_eq!(verify(&token, SECRET, TokenMode::Jwt, SITE, NOW).unwrap(), by_hmac);
    }

    #[test]
    fn a_jwt_with_fractional_times_and_extra_claims_verifies() {
        let token = hs256(&json!({
            "sub": "user-42", "exp": (NOW + 600) as f64 + 0.5, "iat": NOW as f64 - 0.25,
            "nbf": NOW - 10, "iss": "https://shop.example", "email": "a@shop.example"
        }));
        assert_eq!(check(&token), Ok("user-42".to_owned()));
    }

    #[test]
    fn an_expired_jwt_is_refused_after_the_leeway() {
        let token = hs256(&json!({"sub": "user-42", "exp": NOW - CLOCK_LEEWAY_SECS + 1}));
        assert_eq!(check(&token), Ok("user-42".to_owned()));
        let token = hs256(&json!({"sub": "user-42", "exp": NOW - CLOCK_LEEWAY_SECS}));
        assert_eq!(check(&token), Err(VisitorTokenError::Expired));
        let token = hs256(&json!({"sub": "user-42", "exp": 0}));
        assert_eq!(check(&token), Err(VisitorTokenError::Expired));
    }

    #[test]
    fn a_jwt_that_lives_longer_than_a_day_is_unsupported() {
        let limit = NOW + MAX_JWT_LIFETIME_SECS + CLOCK_LEEWAY_SECS;
        let token = hs256(&json!({"sub": "user-42", "exp": limit}));
        assert_eq!(check(&token), Ok("user-42".to_owned()));
        let token = hs256(&json!({"sub": "user-42", "exp": limit + 1}));
        assert!(matches!(check(&token), Err(VisitorTokenError::Unsupported(_))));
    }

    #[test]
    fn a_jwt_not_yet_valid_is_refused_after_the_leeway() {
        let exp = NOW + 600;
        let token = hs256(&json!({"sub": "u", "exp": exp, "nbf": NOW + CLOCK_LEEWAY_SECS}));
        assert_eq!(check(&token), Ok("u".to_owned()));
        let token = hs256(&json!({"sub": "u", "exp": exp, "nbf": NOW + CLOCK_LEEWAY_SECS + 1}));
        assert_eq!(check(&token), Err(VisitorTokenError::NotYetValid));
        let token = hs256(&json!({"sub": "u", "exp": exp, "iat": NOW + 3600}));
        assert_eq!(check(&token), Err(VisitorTokenError::NotYetValid));
    }

    #[test]
    fn jwts_with_other_algorithms_are_unsupported() {
        let claims = json!({"sub": "user-42", "exp": NOW + 600});
        for alg in ["none", "None", "HS512", "HS384", "RS256", "ES256", "EdDSA", "hs256"] {
            let token = jwt(SECRET, &json!({"alg": alg, "typ": "JWT"}), &claims);
            assert!(matches!(check(&token), Err(VisitorTokenError::Unsupported(_))), "{alg}");
        }
        // The classic `alg: none` forgery, with its empty signature.
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg": "none"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(check(&unsigned), Err(VisitorTokenError::Unsupported(_))));
    }

    #[test]
    fn jwts_with_critical_extensions_or_encryption_are_unsupported() {
        let claims = json!({"sub": "user-42", "exp": NOW + 600});
        let token = jwt(SECRET, &json!({"alg": "HS256", "crit": ["b64"], "b64": false}), &claims);
        assert!(matches!(check(&token), Err(VisitorTokenError::Unsupported(_))));
        let jwe = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVy.dGFn";
        assert!(matches!(check(jwe), Err(VisitorTokenError::Unsupported(_))));
    }

    #[test]
    fn a_jwt_with_a_bad_signature_is_invalid() {
        let token = hs256(&json!({"sub": "user-42", "exp": NOW + 600}));
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        assert_eq!(check(&forged), Err(VisitorTokenError::BadSignature));
        let truncated = format!("{signed}.{}", &signature[..20]);
        assert_eq!(check(&truncated), Err(VisitorTokenError::BadSignature));
        let empty = format!("{signed}.");
        assert_eq!(check(&empty), Err(VisitorTokenError::BadSignature));
    }

    #[test]
    fn a_jwt_with_altered_claims_is_invalid() {
        let token = hs256(&json!({"sub": "user-42", "exp": NOW + 600}));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(json!({"sub": "admin", "exp": NOW + 600}).to_string().as_bytes());
        assert_eq!(check(&parts.join(".")), Err(VisitorTokenError::BadSignature));
    }

    #[test]
    fn a_jwt_signed_with_another_sites_secret_is_invalid() {
        let token =
            jwt(OTHER_SECRET, &json!({"alg": "HS256"}), &json!({"sub": "u", "exp": NOW + 600}));
        assert_eq!(check(&token), Err(VisitorTokenError::BadSignature));
    }

    #[test]
    fn a_jwt_for_another_audience_is_invalid() {
        let exp = NOW + 600;
        for (aud, ok) in [
            (json!(SITE), true),
            (json!(["other", SITE]), true),
            (json!("site_other"), false),
            (json!(["site_other"]), false),
            (json!([]), false),
        ] {
            let token = hs256(&json!({"sub": "u", "exp": exp, "aud": aud}));
            let expected =
                if ok { Ok("u".to_owned()) } else { Err(VisitorTokenError::WrongAudience) };
            assert_eq!(check(&token), expected, "{aud}");
        }
    }

    #[test]
    fn a_jwt_without_a_usable_sub_or_exp_is_malformed() {
        let exp = NOW + 600;
        for claims in [
            json!({"exp": exp}),
            json!({"sub": "", "exp": exp}),
            json!({"sub": "z".repeat(MAX_VISITOR_ID_BYTES + 1), "exp": exp}),
            json!({"sub": 42, "exp": exp}),
            json!({"sub": null, "exp": exp}),
            json!({"sub": "u"}),
            json!({"sub": "u", "exp": "tomorrow"}),
            json!({"sub": "u", "exp": -5}),
            json!({"sub": "u", "exp": exp, "nbf": -1}),
            json!({"sub": "u", "exp": exp, "aud": 7}),
            json!(["u", exp]),
        ] {
            assert!(
                matches!(check(&hs256(&claims)), Err(VisitorTokenError::Malformed(_))),
                "{claims}"
            );
        }
        for (header, claims) in [
            (r#"{"alg":"HS256"}"#, r#"{"sub":"u","sub":"admin","exp":1700000600}"#),
            (r#"{"alg":"HS256","alg":"none"}"#, r#"{"sub":"u","exp":1700000600}"#),
            (r#"["HS256"]"#, r#"{"sub":"u","exp":1700000600}"#),
            (r#" {"alg":"HS256"}"#, "null"),
        ] {
            let result = check(&jwt_text(SECRET, header, claims));
            assert!(matches!(result, Err(VisitorTokenError::Malformed(_))), "{header} {claims}");
        }
        let spaced =
            jwt_text(SECRET, "\n{ \"alg\" : \"HS256\" }", r#" {"sub":"u","exp":1700000600}"#);
        assert_eq!(check(&spaced), Ok("u".to_owned()));
        let longest = "z".repeat(MAX_VISITOR_ID_BYTES);
        assert_eq!(check(&hs256(&json!({"sub": longest, "exp": exp}))), Ok(longest));
    }

    #[test]
    fn misshapen_jwts_are_malformed() {
        let good = hs256(&json!({"sub": "u", "exp": NOW + 600}));
        let (header, rest) = good.split_once('.').unwrap();
        for token in [
            String::new(),
            "not a token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{header}.{rest}.extra"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", b64(b"not json")),
            format!("{}.{rest}", b64(br#"{"typ":"JWT"}"#)),
            format!("{}=.{rest}", header),
        ] {
            assert!(matches!(check(&token), Err(VisitorTokenError::Malformed(_))), "{token}");
        }
        let (signed, _) = good.rsplit_once('.').unwrap();
        assert!(matches!(check(&format!("{signed}.***")), Err(VisitorTokenError::Malformed(_))));
    }

    #[test]
    fn errors_have_codes_and_never_repeat_the_token_or_the_secret() {
        let token = hs256(&json!({"sub": "secret-user", "exp": NOW - 3600}));
        let error = check(&token).unwrap_err();
        assert_eq!(error.code(), "expired_visitor_token");
        let secret = String::from_utf8(SECRET.to_vec()).unwrap();
        for error in [
            error,
            check(&format!("{token}x")).unwrap_err(),
            check("hmac.c2VjcmV0LXVzZXI.00").unwrap_err(),
            check(&jwt(SECRET, &json!({"alg": "HS512"}), &json!({}))).unwrap_err(),
        ] {
            let message = error.to_string();
            assert!(!message.contains("secret-user") && !message.contains(&secret), "{message}");
            assert!(!message.contains(&token[..20]), "{message}");
        }
        let codes: Vec<&str> = [
            VisitorTokenError::Missing,
            VisitorTokenError::Malformed("m"),
            VisitorTokenError::WrongForm(TokenMode::Hmac),
            VisitorTokenError::BadSignature,
            VisitorTokenError::WrongAudience,
            VisitorTokenError::NotYetValid,
            VisitorTokenError::Expired,
            VisitorTokenError::Unsupported("u"),
        ]
        .iter()
        .map(VisitorTokenError::code)
        .collect();
        assert_eq!(
            codes,
            [
                "visitor_token_required",
                "malformed_visitor_token",
                "wrong_visitor_token_form",
                "invalid_visitor_token",
                "invalid_visitor_token",
                "invalid_visitor_token",
                "expired_visitor_token",
                "unsupported_visitor_token",
            ]
        );
    }
}

/// Property tests: reading a visitor token never panics, whatever it holds, and a valid token
/// with any one byte changed is never accepted (except a hex digit of an HMAC hash changing
/// case, which is the same hash: both cases are accepted, as backends write either).
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"3f9a6c2e8b0d4f1a7c5e9b3d2f8a6c4e1b7d9f0a3c5e8b2d4f6a9c1e7b3d5f80";
    const SITE: &str = "site_demo";
    const NOW: u64 = 1_700_000_000;

    fn jwt(claims: &serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = hmac_sha256(SECRET);
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Strings shaped like tokens of either form, with their parts damaged.
    fn token_like() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just("hmac".to_owned()),
            Just("eyJhbGciOiJIUzI1NiJ9".to_owned()),
            Just("eyJzdWIiOiJ1In0".to_owned()),
            Just(String::new()),
            "[A-Za-z0-9_=+/-]{0,70}",
            any::<String>(),
        ];
        proptest::collection::vec(part, 0..6).prop_map(|parts| parts.join("."))
    }

    fn mode() -> impl Strategy<Value = TokenMode> {
        prop_oneof![Just(TokenMode::Hmac), Just(TokenMode::Jwt)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn reading_any_string_as_a_token_never_panics(
            token in prop_oneof![any::<String>(), token_like()],
            mode in mode(),
        ) {
            let _ = verify(&token, SECRET, mode, SITE, NOW);
        }

        #[test]
        fn an_hmac_token_with_one_byte_changed_is_never_accepted(
            user_id in "\\PC{1,40}",
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let token = hmac_token(SECRET, &user_id);
            prop_assert_eq!(
                verify(&token, SECRET, TokenMode::Hmac, SITE, NOW).map(|id| id.0),
                Ok(user_id.clone())
            );
            let mut bytes = token.clone().into_bytes();
            let at = at % bytes.len();
            prop_assume!(bytes[at] != byte);
            let hash_starts = token.len() - 64;
            let same_hash = at >= hash_starts && bytes[at].eq_ignore_ascii_case(&byte);
            bytes[at] = byte;
            // A token is text: bytes that are not UTF-8 never get this far.
            let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
            let result = verify(&mutated, SECRET, TokenMode::Hmac, SITE, NOW);
            if same_hash {
                prop_assert_eq!(result.map(|id| id.0), Ok(user_id));
            } else {
                prop_assert!(result.is_err(), "{mutated:?} was accepted");
            }
        }

        #[test]
        fn a_jwt_with_one_byte_changed_is_never_accepted(
            sub in "\\PC{1,40}",
            lifetime in 1u64..MAX_JWT_LIFETIME_SECS,
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let token = jwt(&json!({"sub": sub, "exp": NOW + lifetime, "aud": SITE}));
            prop_assert_eq!(
                verify(&token, SECRET, TokenMode::Jwt, SITE, NOW).map(|id| id.0),
                Ok(sub)
            );
            let mut bytes = token.into_bytes();
            let at = at % bytes.len();
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
            let result = verify(&mutated, SECRET, TokenMode::Jwt, SITE, NOW);
            prop_assert!(result.is_err(), "{mutated:?} was accepted");
        }
    }
}
