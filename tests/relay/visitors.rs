//! Verified visitors: a site's backend signs visitor tokens; the relay verifies them, may
//! require them, and gives verified visitors their own limits.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_server::sites::{self, VerificationChange};
use confab_server::store::VisitorLimits;
use confab_server::visitor::{TokenMode, VisitorSecret, hmac_token};
use confab_tests::{MockUpstream, Reply, TestRelay, json_body};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}]})
}

async fn new_secret(relay: &TestRelay, required: bool) -> VisitorSecret {
    change_verification(relay, Some(required), None).await
}

/// A new secret for tokens of the form `mode` names.
async fn new_secret_in(relay: &TestRelay, mode: TokenMode) -> VisitorSecret {
    change_verification(relay, None, Some(mode)).await
}

async fn change_verification(
    relay: &TestRelay,
    required: Option<bool>,
    mode: Option<TokenMode>,
) -> VisitorSecret {
    let change = VerificationChange { new_secret: true, off: false, required, mode };
    let (_, secret) = sites::change_verification(relay.store.as_ref(), &relay.site_id, change)
        .await
        .unwrap()
        .unwrap();
    secret.unwrap()
}

async fn chat_as_visitor(relay: &TestRelay, token: Option<&str>) -> (u16, Value) {
    let mut request = relay.chat().json(&hello());
    if let Some(token) = token {
        request = request.header("X-Confab-Visitor", token);
    }
    json_body(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_site_that_requires_verification_refuses_missing_and_forged_tokens() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let secret = new_secret(&relay, true).await;

    let (status, body) = chat_as_visitor(&relay, None).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("visitor_token_required")), "{body}");
    let forged = hmac_token(b"not-the-site-secret-not-the-site-secret", "alice");
    let (status, body) = chat_as_visitor(&relay, Some(&forged)).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("invalid_visitor_token")), "{body}");
    let (status, body) = chat_as_visitor(&relay, Some("hmac.!!!.zz")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("malformed_visitor_token")),
        "{body}"
    );
    assert!(mock.requests().is_empty(), "nothing unverified reaches the upstream");

    let token = hmac_token(secret.key(), "alice");
    let (status, body) = chat_as_visitor(&relay, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    // The secret never comes back in any answer.
    assert!(!body.to_string().contains(secret.reveal()));
}

#[tokio::test]
async fn verified_visitors_get_their_own_limits_whatever_their_address() {
    let mock = MockUpstream::start().await;
    for _ in 0..6 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    let relay = TestRelay::builder(&mock)
        .site(|s| {
            s.visitor_limits =
                VisitorLimits { rpm: Some(1), verified_rpm: Some(2), ..Default::default() }
        })
        .start()
        .await;
    let secret = new_secret(&relay, false).await;
    let (alice, bob) = (hmac_token(secret.key(), "alice"), hmac_token(secret.key(), "bob"));

    // Anonymous visitors (by IP) get one request a minute...
    assert_eq!(chat_as_visitor(&relay, None).await.0, 200);
    assert_eq!(chat_as_visitor(&relay, None).await.0, 429);
    // ...while each verified visitor, from the same address, has two of their own.
    for _ in 0..2 {
        assert_eq!(chat_as_visitor(&relay, Some(&alice)).await.0, 200);
    }
    let (status, body) = chat_as_visitor(&relay, Some(&alice)).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"].as_str().unwrap().contains("2 requests per minute"), "{body}");
    assert_eq!(chat_as_visitor(&relay, Some(&bob)).await.0, 200);
}

/// Signs a JWT the way a site's backend would, with the site's visitor secret.
fn hs256(secret: &[u8], claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The forgery that one key shared by both token forms allowed. A site that issues HMAC user
/// hashes signs whatever user id a visitor registers; an id shaped like
/// `base64url(header).base64url(claims)` gets, as its hash, an HS256 signature over a JWT that
/// names any `sub`. A site verifies one form only, and a change of form comes with a new secret,
/// so the forgery is refused in either mode.
#[tokio::test]
async fn a_user_hash_reshaped_as_a_jwt_signature_is_refused_in_both_modes() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (1, 1)));
    mock.push(Reply::answer(&["Hi"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let hmac_secret = new_secret(&relay, true).await;

    // The attacker's chosen user id, and the hash the site's backend issues for it.
    let claims = json!({"sub": "victim", "exp": now() + 600});
    let chosen_id = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let issued = hmac_token(hmac_secret.key(), &chosen_id);
    let user_hash = issued.rsplit('.').next().unwrap();
    let forged = format!("{chosen_id}.{}", URL_SAFE_NO_PAD.encode(hex::decode(user_hash).unwrap()));

    // HMAC mode (the default): the forged JWT is refused for its form, before any signature
    // check; the issued token itself only names the odd user id it was issued for.
    let (status, body) = chat_as_visitor(&relay, Some(&forged)).await;
    assert_eq!(
        (status, &body["error"]),
        (
            401,
            &json!({
                "message": "this site accepts only HMAC visitor tokens (hmac.<base64url user id>.<hex \
                            hash>), not JWTs: its visitor token mode is hmac",
                "type": "authentication_error",
                "code": "wrong_visitor_token_form",
            })
        ),
        "{body}"
    );
    assert_eq!(chat_as_visitor(&relay, Some(&issued)).await.0, 200);

    // JWT mode: the mode cannot change under the secret that issued HMAC hashes...
    let keep_secret = VerificationChange {
        new_secret: false,
        off: false,
        required: None,
        mode: Some(TokenMode::Jwt),
    };
    let refused = sites::change_verification(relay.store.as_ref(), &relay.site_id, keep_secret)
        .await
        .unwrap_err();
    assert!(refused.to_string().starts_with("mode: changing the visitor token mode"), "{refused}");
    // ...so it changes with a new one, under which the forgery's signature is worthless and the
    // HMAC form is refused.
    let jwt_secret = new_secret_in(&relay, TokenMode::Jwt).await;
    let (status, body) = chat_as_visitor(&relay, Some(&forged)).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("invalid_visitor_token")), "{body}");
    let (status, body) = chat_as_visitor(&relay, Some(&issued)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("wrong_visitor_token_form")),
        "{body}"
    );
    let reissued = hmac_token(jwt_secret.key(), &chosen_id);
    let (status, body) = chat_as_visitor(&relay, Some(&reissued)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("wrong_visitor_token_form")),
        "{body}"
    );
    assert_eq!(mock.requests().len(), 1, "only the issued HMAC token reached the upstream");

    // The site's own JWTs work.
    let genuine = hs256(jwt_secret.key(), &json!({"sub": "alice", "exp": now() + 600}));
    assert_eq!(chat_as_visitor(&relay, Some(&genuine)).await.0, 200);
}

#[tokio::test]
async fn a_site_in_jwt_mode_refuses_hmac_tokens_and_accepts_its_jwts() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let secret = new_secret_in(&relay, TokenMode::Jwt).await;

    let (status, body) = chat_as_visitor(&relay, Some(&hmac_token(secret.key(), "alice"))).await;
    assert_eq!(
        (status, &body["error"]),
        (
            401,
            &json!({
                "message": "this site accepts only HS256 JWT visitor tokens, not \
                            hmac.<user id>.<hash> tokens: its visitor token mode is jwt",
                "type": "authentication_error",
                "code": "wrong_visitor_token_form",
            })
        ),
        "{body}"
    );
    let jwt = hs256(secret.key(), &json!({"sub": "alice", "exp": now() + 600}));
    assert_eq!(chat_as_visitor(&relay, Some(&jwt)).await.0, 200);
}

/// Behind a reverse proxy that is not in `server.trusted_proxies`, every visitor has the proxy's
/// address: the relay says so in its log, once per process rather than on every request.
#[tokio::test]
async fn a_proxy_nobody_listed_as_trusted_is_reported_once_not_on_every_request() {
    let mock = MockUpstream::start().await;
    for _ in 0..3 {
        mock.push(Reply::answer(&["Hi"], (1, 1)));
    }
    let relay = TestRelay::start(&mock).await;
    // The test client connects from 127.0.0.1, as a proxy on the same host would.
    for visitor in ["203.0.113.7", "203.0.113.8", "203.0.113.9"] {
        let response =
            relay.chat().header("X-Forwarded-For", visitor).json(&hello()).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let logs = confab_tests::captured_logs();
    let warnings = logs.matches("server.trusted_proxies is empty").count();
    assert_eq!(warnings, 1, "{logs}");
    let line = logs.lines().find(|line| line.contains("server.trusted_proxies is empty")).unwrap();
    assert!(line.contains("WARN") && line.contains("peer=127.0.0.1"), "{line}");
}
