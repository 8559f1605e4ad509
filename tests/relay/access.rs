//! Who may call: site keys, origins, CORS, and what `/v1/models` and `/healthz` reveal.

use confab_server::sites::SiteSpec;
use confab_tests::{MockUpstream, Reply, SITE_ORIGIN, TestRelay, json_body};
use reqwest::Method;
use serde_json::{Value, json};

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}]})
}

fn envelope(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

#[tokio::test]
async fn answers_a_cors_preflight_from_a_site_origin() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response = relay
        .client
        .request(Method::OPTIONS, relay.url("/v1/chat/completions"))
        .header("Origin", SITE_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], SITE_ORIGIN);
    assert_eq!(headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(headers["access-control-allow-headers"], "authorization,content-type");
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(headers["vary"].to_str().unwrap().contains("origin"));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn gives_no_cors_grant_to_an_origin_no_site_lists() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response = relay
        .client
        .request(Method::OPTIONS, relay.url("/v1/chat/completions"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn grants_the_site_origin_on_the_response_itself() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["ok"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let response = relay.send_chat(hello()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], SITE_ORIGIN);
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "x-ratelimit-limit,x-ratelimit-remaining,x-ratelimit-reset,x-ratelimit-remaining-rpm,\
         x-ratelimit-remaining-rpd,retry-after,x-confab-stream,x-request-id"
    );
    // Every visitor of a site is limited by default ([visitors] rpm = 20, rpd = 500).
    assert_eq!(response.headers()["x-ratelimit-remaining-rpm"], "19");
    assert_eq!(response.headers()["x-ratelimit-remaining-rpd"], "499");
}

#[tokio::test]
async fn rejects_a_site_key_from_an_origin_it_does_not_list() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    // The other origin belongs to another site: a key is bound to its own site's origins.
    relay
        .create_site(SiteSpec {
            name: "Other".into(),
            origins: vec!["https://other.example".into()],
            ..SiteSpec::default()
        })
        .await;
    for origin in [
        "https://evil.example",
        "https://other.example",
        "null",
        "https://shop.example.evil.example",
    ] {
        let response = relay.chat_as(&relay.key, Some(origin)).json(&hello()).send().await.unwrap();
        assert_eq!(
            json_body(response).await,
            (
                403,
                envelope(
                    "permission_error",
                    "origin_not_allowed",
                    "this site key may not be used from this origin"
                )
            ),
            "{origin}"
        );
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn rejects_a_call_without_origin_unless_the_site_allows_native_apps() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["ok"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let response = relay.chat_as(&relay.key, None).json(&hello()).send().await.unwrap();
    assert_eq!(
        json_body(response).await,
        (
            403,
            envelope(
                "permission_error",
                "origin_required",
                "this site key may only be used from the site's own pages (no Origin header was sent)"
            )
        )
    );

    let (_, native_key) = relay
        .create_site(SiteSpec {
            name: "App".into(),
            allow_no_origin: true,
            models: vec!["model-c".into()],
            ..SiteSpec::default()
        })
        .await;
    let response = relay.chat_as(&native_key, None).json(&hello()).send().await.unwrap();
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], "model-c");
}

#[tokio::test]
async fn rejects_missing_malformed_unknown_and_forged_keys() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let invalid = envelope("authentication_error", "invalid_api_key", "the API key is not valid");

    let response = relay
        .client
        .post(relay.url("/v1/chat/completions"))
        .header("Origin", SITE_ORIGIN)
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(response).await,
        (
            401,
            envelope(
                "authentication_error",
                "missing_api_key",
                "missing API key; send `Authorization: Bearer <site key>`"
            )
        )
    );

    let mut forged = relay.key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'x' { 'y' } else { 'x' });
    let unknown = format!("confab_pk_AAAAAAAAAAAA_{}", &relay.key[relay.key.len() - 32..]);
    for token in ["not-a-key", "confab_pk_short", unknown.as_str(), forged.as_str()] {
        let response = relay.chat_as(token, Some(SITE_ORIGIN)).json(&hello()).send().await.unwrap();
        assert_eq!(json_body(response).await, (401, invalid.clone()), "{token}");
    }
    // A key is checked before the body is read: a bad key learns nothing about the body.
    let response = relay
        .client
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth("nope")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await, (401, invalid));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_deleted_sites_key_stops_working_at_once() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    assert!(relay.store.delete_site(&relay.site_id).await.unwrap());
    let (status, body) = json_body(relay.send_chat(hello()).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn lists_only_the_models_the_calling_key_may_use() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response = relay
        .client
        .get(relay.url("/v1/models"))
        .bearer_auth(&relay.key)
        .header("Origin", SITE_ORIGIN)
        .send()
        .await
        .unwrap();
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> =
        body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    // The upstream also serves model-c; this site may not use it, so it is not listed.
    assert_eq!(ids, ["model-a", "model-b"]);
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["owned_by"], "mock");

    let response = relay.client.get(relay.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn health_answers_without_touching_the_upstream() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response = relay.client.get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(json_body(response).await, (200, json!({"status": "ok"})));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_browser_on_a_listed_origin_can_read_the_error_it_gets() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    relay
        .create_site(SiteSpec {
            name: "Other".into(),
            origins: vec!["https://other.example".into()],
            ..SiteSpec::default()
        })
        .await;
    // A bad key from the site's own page, and this site's key from another site's page.
    for (key, origin, status) in
        [("confab_pk_nope", SITE_ORIGIN, 401), (relay.key.as_str(), "https://other.example", 403)]
    {
        let response = relay.chat_as(key, Some(origin)).json(&hello()).send().await.unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["access-control-allow-origin"], origin);
    }
}
