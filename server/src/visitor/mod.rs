//! Who a visitor is, for per-visitor limits and usage records.
//!
//! A visitor is either **verified**, when the site vouches for them with a visitor token, or
//! **anonymous**, known only by the client's IP address. By concern:
//!
//! - `client_ip` (the [`client_ip()`] function and [`TrustedProxy`]) finds the client's address:
//!   the socket's peer, or, when the peer is one of the configured [`TrustedProxy`] networks, the
//!   right-most address in `X-Forwarded-For` that is not a trusted proxy.
//! - `tokens` ([`verify`], [`VisitorSecret`], [`TokenMode`]) checks a visitor token against the
//!   site's secret. There are two forms: the live-chat convention, `hmac.<base64url(user
//!   id)>.<hex HMAC-SHA256(secret, user id)>`, which never expires, and a short-lived HS256 JWT
//!   whose `sub` is the user id. A site accepts exactly one, the one its mode names: under one
//!   key, each form could be made to stand for the other.
//! - This module puts the two together: [`identify`] decides who sent a request, under the
//!   site's [`VisitorRules`]; [`Visitor::limit_key`] and [`Visitor::usage_hash`] are what the
//!   limits and the usage records store; usage records never hold a visitor id or an address in
//!   clear.

mod client_ip;
mod tokens;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use axum::http::header::HeaderName;
use hmac::Mac as _;

pub use self::client_ip::{TrustedProxy, TrustedProxyError, client_ip};
use self::tokens::hmac_sha256;
pub use self::tokens::{
    CLOCK_LEEWAY_SECS, MAX_JWT_LIFETIME_SECS, MAX_TOKEN_BYTES, MAX_VISITOR_ID_BYTES,
    MIN_SECRET_BYTES, TokenMode, UnknownTokenMode, VisitorId, VisitorSecret, VisitorTokenError,
    hmac_token, new_visitor_secret, verify,
};

/// The request header that carries a visitor token.
pub const VISITOR_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-confab-visitor");

/// Who is asking, for limits and usage records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Visitor {
    /// The site vouched for this user with a visitor token.
    Verified(VisitorId),
    /// Known only by address (as [`client_ip()`] found it).
    Anonymous(IpAddr),
}

impl Visitor {
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified(_))
    }

    /// The key the visitor's limits are counted under: `v:<visitor id>` or `ip:<address>`.
    ///
    /// It does not name the site: callers count limits per site and key. IPv6 addresses are
    /// counted per /64 (`ip:2001:db8:1:2::/64`), since one host usually holds a whole /64 and
    /// could otherwise dodge its limit by changing address. IPv4-mapped addresses count as IPv4.
    pub fn limit_key(&self) -> String {
        match self {
            Self::Verified(id) => format!("v:{}", id.as_str()),
            Self::Anonymous(ip) => match ip.to_canonical() {
                IpAddr::V4(v4) => format!("ip:{v4}"),
                IpAddr::V6(v6) => {
                    let network = Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX));
                    format!("ip:{network}/64")
                }
            },
        }
    }

    /// The visitor as usage records store it: 32 hex digits, the first 16 bytes of
    /// HMAC-SHA256(salt, [`Visitor::limit_key`]).
    ///
    /// The salt must be a secret of the relay's: IPv4 addresses and most user ids are few enough
    /// to be recovered from an unkeyed hash by trying them all. A salt that includes the site id
    /// also keeps one visitor's records on two sites from being linked. (A keyed HMAC rather than
    /// SHA-256 of `salt || key`, so the salt and the key cannot run into each other.)
    pub fn usage_hash(&self, salt: &[u8]) -> String {
        let mut mac = hmac_sha256(salt);
        mac.update(self.limit_key().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// A site's rules for visitor tokens, as [`identify`] needs them. `Debug` hides the secret.
#[derive(Clone, Copy)]
pub struct VisitorRules<'a> {
    pub site_id: &'a str,
    /// The site's visitor secret ([`VisitorSecret::key`]), if it has one.
    pub secret: Option<&'a [u8]>,
    /// The one form of token the site accepts.
    pub mode: TokenMode,
    /// Refuse requests without a valid visitor token.
    pub require_verified: bool,
}

impl fmt::Debug for VisitorRules<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VisitorRules")
            .field("site_id", &self.site_id)
            .field("secret", &self.secret.map(|_| "[redacted]"))
            .field("mode", &self.mode)
            .field("require_verified", &self.require_verified)
            .finish()
    }
}

/// Who sent a request: the verified visitor its `X-Confab-Visitor` token names, or the anonymous
/// visitor at `client_ip` (from [`client_ip()`]).
///
/// - No token (or an empty header): anonymous, unless the site requires verification
///   ([`VisitorTokenError::Missing`]).
/// - A token, and the site has a secret: it must verify; a bad token is refused, not downgraded
///   to anonymous.
/// - A token, and the site has no secret: the token is ignored, since there is nothing to check it
///   against (the site has not set up verification); if it also requires verification, which
///   configuration should not allow, the request is refused.
/// - More than one `X-Confab-Visitor` header: malformed.
pub fn identify(
    headers: &HeaderMap,
    client_ip: IpAddr,
    rules: VisitorRules<'_>,
    now_unix: u64,
) -> Result<Visitor, VisitorTokenError> {
    let mut values = headers.get_all(VISITOR_TOKEN_HEADER).iter();
    let token = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(VisitorTokenError::Malformed(
                "send one X-Confab-Visitor header, not several",
            ));
        }
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| {
                VisitorTokenError::Malformed("the visitor token is not printable ASCII")
            })?;
            Some(value.trim()).filter(|token| !token.is_empty())
        }
    };
    match (token, rules.secret) {
        (Some(token), Some(secret)) => {
            verify(token, secret, rules.mode, rules.site_id, now_unix).map(Visitor::Verified)
        }
        (None, _) if rules.require_verified => Err(VisitorTokenError::Missing),
        (Some(_), None) if rules.require_verified => Err(VisitorTokenError::Unsupported(
            "this site has no usable visitor secret, so its visitor tokens cannot be verified",
        )),
        (_, _) => Ok(Visitor::Anonymous(client_ip.to_canonical())),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &[u8] = b"3f9a6c2e8b0d4f1a7c5e9b3d2f8a6c4e1b7d9f0a3c5e8b2d4f6a9c1e7b3d5f80";
    const OTHER_SECRET: &[u8] = b"0000000000000000000000000000000000000000000000000000000000000001";
    const SITE: &str = "site_demo";
    const NOW: u64 = 1_700_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn secrets_and_visitor_ids_do_not_show_in_debug_output() {
        let secret = new_visitor_secret();
        assert_eq!(secret.reveal().len(), 64);
        assert!(secret.reveal().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(secret, new_visitor_secret());
        assert_eq!(format!("{secret:?}"), "VisitorSecret([redacted])");
        let rules = VisitorRules {
            site_id: SITE,
            secret: Some(secret.key()),
            mode: TokenMode::Hmac,
            require_verified: false,
        };
        assert!(!format!("{rules:?}").contains(secret.reveal()));

        let id = verify(
            &hmac_token(secret.key(), "ana@shop.example"),
            secret.key(),
            TokenMode::Hmac,
            SITE,
            NOW,
        )
        .unwrap();
        let shown = format!("{:?}", Visitor::Verified(id.clone()));
        assert!(!shown.contains("ana"), "{shown}");
        assert!(shown.starts_with("Verified(VisitorId(sha256:"), "{shown}");
        assert_eq!(id.as_str(), "ana@shop.example");
    }

    #[test]
    fn limit_keys_name_the_visitor_and_bucket_ipv6_by_64() {
        let verified = Visitor::Verified(
            verify(&hmac_token(SECRET, "user-42"), SECRET, TokenMode::Hmac, SITE, NOW).unwrap(),
        );
        assert_eq!(verified.limit_key(), "v:user-42");
        assert_eq!(Visitor::Anonymous(ip("203.0.113.7")).limit_key(), "ip:203.0.113.7");
        assert_eq!(Visitor::Anonymous(ip("::ffff:203.0.113.7")).limit_key(), "ip:203.0.113.7");
        let a = Visitor::Anonymous(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        let b = Visitor::Anonymous(ip("2001:db8:1:2::1"));
        let c = Visitor::Anonymous(ip("2001:db8:1:3::1"));
        assert_eq!(a.limit_key(), "ip:2001:db8:1:2::/64");
        assert_eq!(a.limit_key(), b.limit_key());
        assert_ne!(a.limit_key(), c.limit_key());
        // A user id that looks like an address is still not one.
        let lookalike = Visitor::Verified(
            verify(&hmac_token(SECRET, "ip:203.0.113.7"), SECRET, TokenMode::Hmac, SITE, NOW)
                .unwrap(),
        );
        assert_ne!(lookalike.limit_key(), "ip:203.0.113.7");
    }

    #[test]
    fn usage_hashes_are_stable_keyed_and_short() {
        let verified = Visitor::Verified(
            verify(&hmac_token(SECRET, "user-42"), SECRET, TokenMode::Hmac, SITE, NOW).unwrap(),
        );
        let anonymous = Visitor::Anonymous(ip("203.0.113.7"));
        // Made with Python: hmac.new(b"salt-one", key, sha256).hexdigest()[:32].
        assert_eq!(verified.usage_hash(b"salt-one"), "3d71eedd67434ca905fee2262a6f7bad");
        assert_eq!(anonymous.usage_hash(b"salt-one"), "c437955536b63a7778d6c6eefc59ed21");
        assert_eq!(anonymous.usage_hash(b"salt-one"), anonymous.usage_hash(b"salt-one"));
        assert_ne!(anonymous.usage_hash(b"salt-one"), anonymous.usage_hash(b"salt-two"));
        let a = Visitor::Anonymous(ip("2001:db8:1:2::1"));
        let b = Visitor::Anonymous(ip("2001:db8:1:2::2"));
        assert_eq!(a.usage_hash(b"s"), b.usage_hash(b"s"));
    }

    fn with_token(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(VISITOR_TOKEN_HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn identify_tells_verified_from_anonymous_visitors() {
        let rules = VisitorRules {
            site_id: SITE,
            secret: Some(SECRET),
            mode: TokenMode::Hmac,
            require_verified: false,
        };
        let client = ip("203.0.113.7");
        let token = hmac_token(SECRET, "user-42");

        let anonymous = identify(&HeaderMap::new(), client, rules, NOW);
        assert_eq!(anonymous, Ok(Visitor::Anonymous(client)));
        assert_eq!(
            identify(&with_token(&[b" "]), client, rules, NOW),
            Ok(Visitor::Anonymous(client))
        );

        let verified = identify(&with_token(&[token.as_bytes()]), client, rules, NOW).unwrap();
        assert_eq!(verified.limit_key(), "v:user-42");
        assert!(verified.is_verified());

        // A bad token is refused, not treated as no token.
        let forged = hmac_token(OTHER_SECRET, "user-42");
        let result = identify(&with_token(&[forged.as_bytes()]), client, rules, NOW);
        assert_eq!(result, Err(VisitorTokenError::BadSignature));

        let twice =
            identify(&with_token(&[token.as_bytes(), token.as_bytes()]), client, rules, NOW);
        assert!(matches!(twice, Err(VisitorTokenError::Malformed(_))));
        let binary = identify(&with_token(&[b"hmac.\xff"]), client, rules, NOW);
        assert!(matches!(binary, Err(VisitorTokenError::Malformed(_))));
    }

    #[test]
    fn identify_checks_tokens_in_the_sites_mode() {
        let client = ip("203.0.113.7");
        let token = hmac_token(SECRET, "user-42");
        let jwt_site = VisitorRules {
            site_id: SITE,
            secret: Some(SECRET),
            mode: TokenMode::Jwt,
            require_verified: false,
        };
        let refused = identify(&with_token(&[token.as_bytes()]), client, jwt_site, NOW);
        assert_eq!(refused, Err(VisitorTokenError::WrongForm(TokenMode::Jwt)));
        let hmac_site = VisitorRules { mode: TokenMode::Hmac, ..jwt_site };
        let verified = identify(&with_token(&[token.as_bytes()]), client, hmac_site, NOW);
        assert!(verified.is_ok_and(|visitor| visitor.is_verified()));
    }

    #[test]
    fn identify_enforces_a_sites_requirement_of_verified_visitors() {
        let client = ip("203.0.113.7");
        let token = hmac_token(SECRET, "user-42");
        let required = VisitorRules {
            site_id: SITE,
            secret: Some(SECRET),
            mode: TokenMode::Hmac,
            require_verified: true,
        };
        assert_eq!(
            identify(&HeaderMap::new(), client, required, NOW),
            Err(VisitorTokenError::Missing)
        );
        let verified = identify(&with_token(&[token.as_bytes()]), client, required, NOW);
        assert!(verified.is_ok_and(|visitor| visitor.is_verified()));

        // A site without a secret cannot check tokens: they are ignored, unless it requires them.
        let no_secret = VisitorRules {
            site_id: SITE,
            secret: None,
            mode: TokenMode::Hmac,
            require_verified: false,
        };
        let ignored = identify(&with_token(&[token.as_bytes()]), client, no_secret, NOW);
        assert_eq!(ignored, Ok(Visitor::Anonymous(client)));
        let impossible = VisitorRules { require_verified: true, ..no_secret };
        let refused = identify(&with_token(&[token.as_bytes()]), client, impossible, NOW);
        assert!(matches!(refused, Err(VisitorTokenError::Unsupported(_))));
    }
}
