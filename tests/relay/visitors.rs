//! Verified visitors: a site's backend signs visitor tokens; the relay verifies them, may
//! require them, and gives verified visitors their own limits.

use confab_server::sites::{self, VerificationChange};
use confab_server::store::VisitorLimits;
use confab_server::visitor::{VisitorSecret, hmac_token};
use confab_tests::{MockUpstream, Reply, TestRelay, json_body};
use serde_json::{Value, json};

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}]})
}

async fn new_secret(relay: &TestRelay, required: bool) -> VisitorSecret {
    let change = VerificationChange { new_secret: true, off: false, required: Some(required) };
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
