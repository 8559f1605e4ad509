//! The console's side of the relay: its files under a strict CSP, logging in for a session
//! cookie, what the cookie may do, logging out, wrong tokens slowed down and then refused, and
//! the webhook deliveries it lists and redelivers.

use std::time::{Duration, Instant};

use confab_server::webhooks::EndpointConfig;
use confab_tests::{MockUpstream, Reply, TestRelay, WebhookReceiver, json_body};
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-for-the-console-0123456789";

struct Console {
    relay: TestRelay,
    _dir: tempfile::TempDir,
}

/// A relay with an admin token and a console directory holding an `index.html`.
async fn console(
    mock: &MockUpstream,
    change: impl FnOnce(&mut confab_server::config::Config),
) -> Console {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), TOKEN).unwrap();
    let files = dir.path().join("console");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("index.html"), "<!doctype html><title>Confab console</title>")
        .unwrap();
    let token_file = dir.path().join("admin-token");
    let relay = TestRelay::builder(mock)
        .config(|c| {
            c.admin.token_file = Some(token_file);
            c.admin.console_dir = Some(files);
            change(c);
        })
        .start()
        .await;
    Console { relay, _dir: dir }
}

/// The relay's own origin, as a browser on the console's page sends it.
fn own_origin(relay: &TestRelay) -> String {
    relay.base_url.clone()
}

async fn login(relay: &TestRelay, token: &str) -> reqwest::Response {
    relay
        .client
        .post(relay.url("/admin/v1/session"))
        .header("Origin", own_origin(relay))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

/// The `name=value` of the response's session cookie.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_console_is_served_under_a_strict_content_security_policy() {
    let mock = MockUpstream::start().await;
    let Console { relay, _dir } = console(&mock, |_| {}).await;
    let response = relay.client.get(relay.url("/console/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(response.text().await.unwrap().contains("Confab console"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(relay.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (redirect.status().as_u16(), redirect.headers()["location"].to_str().unwrap()),
        (308, "/console/")
    );
}

#[tokio::test]
async fn a_session_cookie_stands_for_the_token_until_logout() {
    let mock = MockUpstream::start().await;
    let Console { relay, _dir } = console(&mock, |_| {}).await;
    let (status, _) =
        json_body(relay.client.get(relay.url("/admin/v1/session")).send().await.unwrap()).await;
    assert_eq!(status, 401);

    let started = Instant::now();
    let wrong = login(&relay, "not-the-token").await;
    assert!(started.elapsed() >= Duration::from_millis(900), "a wrong token waits");
    assert!(wrong.headers().get("set-cookie").is_none());
    let (status, error) = json_body(wrong).await;
    assert_eq!((status, &error["error"]["code"]), (401, &json!("invalid_admin_token")));

    let response = login(&relay, TOKEN).await;
    assert_eq!(response.status(), 204);
    let set = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token");
    let cookie = session_cookie(&response);

    let (status, session) = json_body(
        relay
            .client
            .get(relay.url("/admin/v1/session"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(session["expires_at"].as_i64().unwrap() > 0);
    // Reads need only the cookie.
    let sites =
        relay.client.get(relay.url("/admin/v1/sites")).header("Cookie", &cookie).send().await;
    assert_eq!(sites.unwrap().status(), 200);
    // A change needs the relay's own Origin too: a page elsewhere cannot make one.
    let path = format!("/admin/v1/sites/{}/conversations", relay.site_id);
    for origin in [None, Some("https://evil.example")] {
        let mut request = relay
            .client
            .patch(relay.url(&path))
            .header("Cookie", &cookie)
            .json(&json!({"transcripts": true}));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let (status, error) = json_body(request.send().await.unwrap()).await;
        assert_eq!((status, &error["error"]["code"]), (403, &json!("bad_origin")), "{origin:?}");
    }
    let site = relay.store.site(&relay.site_id).await.unwrap().unwrap();
    assert!(!site.settings.conversations.transcripts, "nothing changed");
    let response = relay
        .client
        .patch(relay.url(&path))
        .header("Cookie", &cookie)
        .header("Origin", own_origin(&relay))
        .json(&json!({"transcripts": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Logged out: the cookie no longer works, and is cleared.
    let logout = relay
        .client
        .delete(relay.url("/admin/v1/session"))
        .header("Cookie", &cookie)
        .header("Origin", own_origin(&relay))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let after =
        relay.client.get(relay.url("/admin/v1/sites")).header("Cookie", &cookie).send().await;
    assert_eq!(after.unwrap().status(), 401);
    // A forged cookie never worked.
    let forged = format!("{}0", cookie);
    let forged =
        relay.client.get(relay.url("/admin/v1/sites")).header("Cookie", forged).send().await;
    assert_eq!(forged.unwrap().status(), 401);
}

/// Two relays on one database: a session opened on one works on the other, and a logout on
/// either ends it on both.
#[tokio::test]
async fn a_logout_ends_the_session_on_every_relay_of_the_database() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let start = |journal: &str| {
        let (token_file, journal) = (token_file.clone(), dir.path().join(journal));
        TestRelay::builder(&mock)
            .database(dir.path())
            .config(|c| {
                c.admin.token_file = Some(token_file);
                c.usage.journal_dir = Some(journal);
            })
            .start()
    };
    let (first, second) = (start("first").await, start("second").await);
    let cookie = session_cookie(&login(&first, TOKEN).await);
    let sites = |relay: &TestRelay| {
        relay.client.get(relay.url("/admin/v1/sites")).header("Cookie", &cookie).send()
    };
    assert_eq!(sites(&first).await.unwrap().status(), 200);
    assert_eq!(sites(&second).await.unwrap().status(), 200);

    let logout = second
        .client
        .delete(second.url("/admin/v1/session"))
        .header("Cookie", &cookie)
        .header("Origin", own_origin(&second))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    for relay in [&first, &second] {
        let (status, error) = json_body(sites(relay).await.unwrap()).await;
        assert_eq!((status, &error["error"]["code"]), (401, &json!("missing_admin_token")));
        let session =
            relay.client.get(relay.url("/admin/v1/session")).header("Cookie", &cookie).send();
        assert_eq!(session.await.unwrap().status(), 401);
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn ten_wrong_tokens_from_one_address_are_refused_for_a_while() {
    let mock = MockUpstream::start().await;
    let Console { relay, _dir } = console(&mock, |_| {}).await;
    let attempts = (0..10).map(|_| login(&relay, "wrong-token-wrong-token"));
    for response in futures_util::future::join_all(attempts).await {
        assert_eq!(response.status(), 401);
    }
    // Then even the right token, on login or as a bearer token, is refused from that address.
    let (status, error) = json_body(login(&relay, TOKEN).await).await;
    assert_eq!((status, &error["error"]["code"]), (429, &json!("too_many_attempts")));
    let bearer = relay.client.get(relay.url("/admin/v1/sites")).bearer_auth(TOKEN).send().await;
    assert_eq!(bearer.unwrap().status(), 429);
}

#[tokio::test]
async fn failed_webhook_deliveries_are_listed_and_redelivered() {
    let mock = MockUpstream::start().await;
    let receiver = WebhookReceiver::start(&[500]).await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("secret"), "whsec-console-0123456789abcdef").unwrap();
    let endpoint = EndpointConfig {
        url: receiver.url.clone(),
        secret_env: None,
        secret_file: Some(secrets.path().join("secret")),
        events: vec!["request.completed".into()],
        site: None,
        request_completed_sample_percent: 100,
    };
    let Console { relay, _dir } = console(&mock, |c| {
        c.webhooks.endpoints = vec![endpoint];
        c.webhooks.poll_ms = 20;
        c.webhooks.max_attempts = 1;
    })
    .await;
    mock.push(Reply::answer(&["Hi"], (1, 1)));
    relay
        .send_chat(json!({"messages": [{"role": "user", "content": "Hi"}]}))
        .await
        .text()
        .await
        .unwrap();

    let list = || async {
        let response = relay
            .client
            .get(relay.url("/admin/v1/webhooks/deliveries?limit=10"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        json_body(response).await.1
    };
    let failed = tokio::time::timeout(confab_tests::WAIT, async {
        loop {
            let page = list().await;
            if page["data"][0]["status"] == "failed" {
                return page["data"][0].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the delivery was never given up");
    assert_eq!((&failed["event"], &failed["attempts"]), (&json!("request.completed"), &json!(1)));
    assert!(failed["last_error"].as_str().unwrap().contains("500"), "{failed}");

    let id = failed["id"].as_str().unwrap();
    let response = relay
        .client
        .post(relay.url(&format!("/admin/v1/webhooks/deliveries/{id}/redeliver")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (status, again) = json_body(response).await;
    assert_eq!((status, &again["status"], &again["attempts"]), (200, &json!("pending"), &json!(0)));
    let deliveries = receiver.wait_for(2).await;
    assert_eq!(deliveries[1].header("confab-delivery"), id);
    let delivered: Value = tokio::time::timeout(confab_tests::WAIT, async {
        loop {
            let page = list().await;
            if page["data"][0]["status"] == "delivered" {
                return page["data"][0].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the redelivery was never made");
    assert_eq!(delivered["id"], id);
    let response = relay
        .client
        .post(relay.url("/admin/v1/webhooks/deliveries/whd_none/redeliver"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
