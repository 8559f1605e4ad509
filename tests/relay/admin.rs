//! The admin API: authentication, sites, keys, usage, errors, and its OpenAPI document.

use confab_server::sites::{self, VerificationChange};
use confab_server::visitor::TokenMode;
use confab_tests::{MockUpstream, TestRelay, TestRelayBuilder, json_body};
use reqwest::Method;
use serde_json::{Value, json};

pub(crate) const TOKEN: &str = "admin-token-for-the-tests-0123456789";

/// A relay whose admin token is read from a file (as an operator would mount a secret).
async fn relay_with_admin(mock: &MockUpstream) -> (TestRelay, tempfile::TempDir) {
    let (builder, dir) = with_admin_token(TestRelay::builder(mock));
    (builder.start().await, dir)
}

/// `builder` with the admin token ([`TOKEN`]) in a file of the returned directory.
pub(crate) fn with_admin_token(builder: TestRelayBuilder) -> (TestRelayBuilder, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    (builder.config(|c| c.admin.token_file = Some(token_file)), dir)
}

pub(crate) async fn admin(
    relay: &TestRelay,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = relay.client.request(method, relay.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    if response.status() == 204 {
        return (204, Value::Null);
    }
    json_body(response).await
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_refuses_a_wrong_one() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response =
        relay.client.get(relay.url("/admin/v1/sites")).bearer_auth(TOKEN).send().await.unwrap();
    let (status, body) = json_body(response).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("admin_disabled")));

    let (relay, _dir) = relay_with_admin(&mock).await;
    let response = relay.client.get(relay.url("/admin/v1/sites")).send().await.unwrap();
    assert_eq!(json_body(response).await.0, 401);
    // A site key is not an admin token.
    let response = relay
        .client
        .get(relay.url("/admin/v1/sites"))
        .bearer_auth(&relay.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(response).await,
        (
            401,
            json!({"error": {
                "message": "the admin token is not valid",
                "type": "authentication_error",
                "code": "invalid_admin_token",
            }})
        )
    );
}

#[tokio::test]
async fn sites_are_created_listed_limited_and_deleted_over_the_admin_api() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let (status, created) = admin(
        &relay,
        Method::POST,
        "/admin/v1/sites",
        Some(json!({
            "name": "Blog",
            "origins": ["https://blog.example"],
            "widget": {"title": "Ask the blog"},
            "limits": {"visitor_rpm": 5, "monthly_budget_micros": 2000000},
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["key"].as_str().unwrap().starts_with("confab_pk_"));
    assert_eq!(created["limits"]["visitor_rpm"], 5);
    assert_eq!(created["widget"]["title"], "Ask the blog");

    let (status, list) = admin(&relay, Method::GET, "/admin/v1/sites", None).await;
    assert_eq!(status, 200);
    let listed: Vec<&Value> =
        list["data"].as_array().unwrap().iter().filter(|s| s["id"] == id).collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("key").is_none(), "a listing never shows a key");

    let path = format!("/admin/v1/sites/{id}/limits");
    let (status, limited) = admin(&relay, Method::PUT, &path, Some(json!({"rpm": 100}))).await;
    assert_eq!(status, 200, "{limited}");
    assert_eq!(limited["limits"]["rpm"], 100);
    assert_eq!(limited["limits"]["visitor_rpm"], Value::Null, "PUT replaces limits as a whole");
    let (status, body) = admin(&relay, Method::PUT, &path, Some(json!({"rpm": 0}))).await;
    assert_eq!(
        (status, &body["error"]["message"]),
        (400, &json!("rpm: must be at least 1 (leave it out for no limit)"))
    );
    let (status, body) = admin(&relay, Method::PUT, &path, Some(json!({"rpmm": 1}))).await;
    assert_eq!((status, &body["error"]["type"]), (400, &json!("invalid_request_error")), "{body}");

    let site = format!("/admin/v1/sites/{id}");
    assert_eq!(admin(&relay, Method::DELETE, &site, None).await.0, 204);
    assert_eq!(
        admin(&relay, Method::GET, &site, None).await,
        (
            404,
            json!({"error": {
                "message": format!("no site with id `{id}`"),
                "type": "invalid_request_error",
                "code": "not_found",
            }})
        )
    );
}

/// `value` read as `T` and written back is `value` again: the admin API's type has every field
/// the relay sends, and no other.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value);
    typed
}

#[tokio::test]
async fn the_console_reads_sites_keys_and_usage_as_the_admin_api_types_describe_them() {
    use confab_admin_api::{KeyView, List, SiteView, UsageReport};
    // Every setting a site has, so that every field of the view holds a value.
    let docs = json!({
        "name": "Docs",
        "origins": ["https://docs.example", "https://www.docs.example"],
        "allow_no_origin": true,
        "models": ["model-b"],
        "system_prompt": "Answer from the docs.",
        "max_tokens": 300,
        "temperature_max": 0.7,
        "context_messages": 8,
        "client_instructions": "drop",
        "widget": {"title": "Ask the docs", "suggestions": ["Install"], "primary_color": "#112233"},
        "limits": {"rpm": 10, "daily_budget_micros": 500000, "verified_rpd": 40},
    });
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let (status, created) = admin(&relay, Method::POST, "/admin/v1/sites", Some(docs)).await;
    assert_eq!(status, 201, "{created}");
    let site: SiteView = round_trips(&created);
    assert_eq!(site.temperature_max, Some(0.7));
    assert_eq!(site.limits.daily_budget_micros, Some(500_000));
    assert!(site.key.is_some());
    let verification = format!("/admin/v1/sites/{}/verification", site.id);
    let (_, verified) =
        admin(&relay, Method::POST, &verification, Some(json!({"new_secret": true}))).await;
    assert!(round_trips::<SiteView>(&verified).visitor_secret.is_some());
    let (_, list) = admin(&relay, Method::GET, "/admin/v1/sites", None).await;
    round_trips::<List<SiteView>>(&list);

    let (status, key) = admin(
        &relay,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "Reports", "scopes": ["usage"], "models": ["model-a"], "tpm": 900,
                    "monthly_budget_micros": 3000000})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key: KeyView = round_trips(&key);
    assert_eq!((key.tpm, key.monthly_budget_micros), (Some(900), Some(3_000_000)));
    let (_, list) = admin(&relay, Method::GET, "/admin/v1/keys", None).await;
    round_trips::<List<KeyView>>(&list);
    let (_, usage) = admin(&relay, Method::GET, "/admin/v1/usage?days=2", None).await;
    round_trips::<UsageReport>(&usage);
}

#[tokio::test]
async fn the_usage_report_picks_one_model_when_asked() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let relay =
        TestRelay::metered(&mock).config(|c| c.admin.token_file = Some(token_file)).start().await;
    mock.push(confab_tests::Reply::answer(&["Hi"], (7, 3)));
    mock.push(confab_tests::Reply::answer(&["Hello"], (20, 5)));
    let hello =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    relay.send_chat(hello("model-a")).await.text().await.unwrap();
    relay.send_chat(hello("model-b")).await.text().await.unwrap();
    relay.settled_usage(2).await;

    let (status, all) = admin(&relay, Method::GET, "/admin/v1/usage?days=1", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["totals"]["requests"], 2);
    let model_b = all["by_model"].as_object().unwrap().keys().find(|m| m.contains("model-b"));
    let model_b = model_b.unwrap().clone();

    let path = format!("/admin/v1/usage?days=1&model={}", model_b.replace(':', "%3A"));
    let (status, only) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{only}");
    assert_eq!(only["totals"]["requests"], 1);
    assert_eq!(only["totals"]["input_tokens"], 20);
    assert_eq!(only["by_model"].as_object().unwrap().keys().collect::<Vec<_>>(), [&model_b]);
    assert_eq!(only["days"][0]["output_tokens"], 5);

    let (_, none) = admin(&relay, Method::GET, "/admin/v1/usage?days=1&model=nope", None).await;
    assert_eq!(none["totals"]["requests"], 0);
    assert_eq!(none["by_model"], json!({}));
}

#[tokio::test]
async fn keys_are_created_rotated_and_revoked_over_the_admin_api() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let (status, created) = admin(
        &relay,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "Backend", "scopes": ["models"], "rpm": 10})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["key"].as_str().unwrap().to_owned();
    let models = |secret: String| {
        let request = relay.client.get(relay.url("/v1/models")).bearer_auth(secret);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(models(first.clone()).await, 200);

    let (status, rotated) =
        admin(&relay, Method::POST, &format!("/admin/v1/keys/{id}/rotate"), None).await;
    assert_eq!(status, 200);
    let second = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(models(second.clone()).await, 200);

    let (status, revoked) =
        admin(&relay, Method::POST, &format!("/admin/v1/keys/{id}/revoke"), None).await;
    assert_eq!((status, &revoked["active"]), (200, &json!(false)));
    assert!(revoked.get("key").is_none());
    assert_eq!(models(second).await, 401);
    let (status, again) =
        admin(&relay, Method::POST, &format!("/admin/v1/keys/{id}/revoke"), None).await;
    assert_eq!(
        (status, &again["error"]["message"]),
        (404, &json!(format!("no active key with id `{id}`")))
    );

    let (status, body) = admin(
        &relay,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "x", "scopes": ["admin"]})),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["message"]),
        (400, &json!("scopes: unknown scope `admin` (known: chat, models, usage, tools)"))
    );
    let (status, list) = admin(&relay, Method::GET, "/admin/v1/keys", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_usage_report_is_served_and_bad_days_are_refused() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let (status, report) = admin(&relay, Method::GET, "/admin/v1/usage?days=3", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["days"].as_array().unwrap().len(), 3);
    assert_eq!(report["totals"]["requests"], 0);
    let (status, body) = admin(&relay, Method::GET, "/admin/v1/usage?days=400", None).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_value")));
}

#[tokio::test]
async fn the_openapi_document_describes_every_admin_route() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let (status, doc) = admin(&relay, Method::GET, "/admin/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != "parameters")
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // Every documented operation exists (answers something other than 404/405 for a made-up id)...
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "nonexistent");
        let body = (method == "POST" || method == "PUT").then(|| json!({}));
        let (status, _) =
            admin(&relay, Method::from_bytes(method.as_bytes()).unwrap(), &concrete, body).await;
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
    }
    // ...and every route the relay serves under /admin is documented.
    let routed = [
        ("GET", "/admin/v1/openapi.json"),
        ("GET", "/admin/v1/sites"),
        ("POST", "/admin/v1/sites"),
        ("GET", "/admin/v1/sites/{id}"),
        ("DELETE", "/admin/v1/sites/{id}"),
        ("PUT", "/admin/v1/sites/{id}/limits"),
        ("PATCH", "/admin/v1/sites/{id}/limits"),
        ("PATCH", "/admin/v1/sites/{id}/origins"),
        ("POST", "/admin/v1/sites/{id}/rekey"),
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/keys"),
        ("POST", "/admin/v1/keys/{id}/rotate"),
        ("POST", "/admin/v1/keys/{id}/revoke"),
        ("GET", "/admin/v1/usage"),
        ("GET", "/admin/v1/upstreams"),
        ("GET", "/admin/v1/conversations"),
        ("DELETE", "/admin/v1/conversations"),
        ("GET", "/admin/v1/conversations/{id}"),
        ("DELETE", "/admin/v1/conversations/{id}"),
        ("POST", "/admin/v1/conversations/{id}/messages"),
        ("POST", "/admin/v1/conversations/{id}/release"),
        ("GET", "/admin/v1/shared/conversations/{id}"),
        ("PATCH", "/admin/v1/sites/{id}/conversations"),
        ("PATCH", "/admin/v1/sites/{id}"),
        ("GET", "/admin/v1/overview"),
        ("POST", "/admin/v1/sites/{id}/verification"),
        ("GET", "/admin/v1/webhooks/deliveries"),
        ("POST", "/admin/v1/webhooks/deliveries/{id}/redeliver"),
        ("GET", "/admin/v1/session"),
        ("POST", "/admin/v1/session"),
        ("DELETE", "/admin/v1/session"),
        ("GET", "/admin/v1/sites/{id}/knowledge"),
        ("POST", "/admin/v1/sites/{id}/knowledge"),
        ("POST", "/admin/v1/sites/{id}/knowledge/refresh"),
        ("DELETE", "/admin/v1/sites/{id}/knowledge/{doc_id}"),
    ];
    let mut expected: Vec<(String, String)> =
        routed.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let mut documented = documented;
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn a_sites_visitor_token_mode_is_shown_as_the_openapi_document_describes_it() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let path = format!("/admin/v1/sites/{}", relay.site_id);
    let (_, site) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(site["verification"], json!({"enabled": false, "required": false, "mode": "hmac"}));

    let change = VerificationChange {
        new_secret: true,
        off: false,
        required: None,
        mode: Some(TokenMode::Jwt),
    };
    sites::change_verification(relay.store.as_ref(), &relay.site_id, change).await.unwrap();
    let (status, site) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(site["verification"], json!({"enabled": true, "required": false, "mode": "jwt"}));

    let (_, doc) = admin(&relay, Method::GET, "/admin/v1/openapi.json", None).await;
    let documented = &doc["components"]["schemas"]["Site"]["properties"]["verification"];
    assert_eq!(documented["properties"]["mode"]["enum"], json!(["hmac", "jwt"]));
}

#[tokio::test]
async fn patching_a_sites_limits_keeps_what_the_body_leaves_out_and_null_clears() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let path = format!("/admin/v1/sites/{}/limits", relay.site_id);
    let body = json!({"monthly_budget_micros": 5_000_000, "visitor_rpm": 7});
    let (status, site) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{site}");

    let (status, site) = admin(&relay, Method::PATCH, &path, Some(json!({"rpm": 10}))).await;
    assert_eq!(status, 200, "{site}");
    let limits = &site["limits"];
    assert_eq!(
        (&limits["rpm"], &limits["monthly_budget_micros"], &limits["visitor_rpm"]),
        (&json!(10), &json!(5_000_000), &json!(7)),
        "{limits}"
    );

    let body = json!({"monthly_budget_micros": null});
    let (status, site) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{site}");
    let limits = &site["limits"];
    assert_eq!(
        (&limits["rpm"], &limits["monthly_budget_micros"], &limits["visitor_rpm"]),
        (&json!(10), &Value::Null, &json!(7)),
        "{limits}"
    );

    // The merged result is validated, and a refused change changes nothing.
    let (status, body) = admin(&relay, Method::PATCH, &path, Some(json!({"rpd": 0}))).await;
    assert_eq!(
        (status, &body["error"]["message"]),
        (400, &json!("rpd: must be at least 1 (leave it out for no limit)"))
    );
    let (_, site) =
        admin(&relay, Method::GET, &format!("/admin/v1/sites/{}", relay.site_id), None).await;
    assert_eq!(site["limits"]["rpm"], 10);
    let missing =
        admin(&relay, Method::PATCH, "/admin/v1/sites/site_none/limits", Some(json!({}))).await;
    assert_eq!(missing.0, 404);
}

#[tokio::test]
async fn a_key_rotated_with_no_grace_refuses_its_old_secret_at_once() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let body = json!({"name": "Backend", "scopes": ["models"]});
    let (_, created) = admin(&relay, Method::POST, "/admin/v1/keys", Some(body)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["key"].as_str().unwrap().to_owned();
    let models = |secret: String| {
        let request = relay.client.get(relay.url("/v1/models")).bearer_auth(secret);
        async move { request.send().await.unwrap().status().as_u16() }
    };

    let rotate = format!("/admin/v1/keys/{id}/rotate");
    let (status, rotated) =
        admin(&relay, Method::POST, &rotate, Some(json!({"grace_secs": 3600}))).await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!((models(first.clone()).await, models(second.clone()).await), (200, 200));

    let (status, rotated) =
        admin(&relay, Method::POST, &rotate, Some(json!({"grace_secs": 0}))).await;
    assert_eq!(status, 200, "{rotated}");
    let third = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!((models(second).await, models(third).await), (401, 200));

    let (status, body) =
        admin(&relay, Method::POST, &rotate, Some(json!({"grace_secs": -1}))).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_field")), "{body}");
}

#[tokio::test]
async fn every_admin_answer_that_carries_a_secret_forbids_caching_it() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut request = relay.client.request(method, relay.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap() }
    };
    let cache_control = |response: &reqwest::Response| {
        response.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned())
    };

    let site = json!({"name": "Blog", "origins": ["https://blog.example"]});
    let created = send(Method::POST, "/admin/v1/sites", Some(site)).await;
    assert_eq!(created.status(), 201);
    assert_eq!(cache_control(&created).as_deref(), Some("no-store"));

    let key = json!({"name": "Backend", "scopes": ["models"]});
    let created = send(Method::POST, "/admin/v1/keys", Some(key)).await;
    assert_eq!(created.status(), 201);
    assert_eq!(cache_control(&created).as_deref(), Some("no-store"));
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Without a body, a rotation takes the configured grace.
    let rotated = send(Method::POST, &format!("/admin/v1/keys/{id}/rotate"), None).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(cache_control(&rotated).as_deref(), Some("no-store"));

    let path = format!("/admin/v1/sites/{}/rekey", relay.site_id);
    let rekeyed = send(Method::POST, &path, Some(json!({"grace_secs": 0}))).await;
    assert_eq!(rekeyed.status(), 200);
    assert_eq!(cache_control(&rekeyed).as_deref(), Some("no-store"));

    // Answers without a secret are not affected.
    let listed = send(Method::GET, "/admin/v1/keys", None).await;
    assert_eq!(cache_control(&listed), None);
}

#[tokio::test]
async fn origins_changed_over_the_admin_api_apply_to_the_sites_key_at_once() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let models_from = |origin: &'static str| {
        let request = relay
            .client
            .get(relay.url("/v1/models"))
            .bearer_auth(&relay.key)
            .header("origin", origin);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(models_from("https://new.example").await, 403);

    let path = format!("/admin/v1/sites/{}/origins", relay.site_id);
    let body = json!({"add": ["https://NEW.example:443"], "remove": ["https://shop.example"]});
    let (status, site) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{site}");
    assert_eq!(site["origins"], json!(["https://new.example"]));
    assert_eq!(models_from("https://new.example").await, 200);
    assert_eq!(models_from("https://shop.example").await, 403);

    let body = json!({"remove": ["https://new.example"]});
    let (status, error) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(
        (status, &error["error"]["message"]),
        (
            400,
            &json!(format!(
                "origin: cannot remove the last origin of site {}: its key would work from \
                 nowhere (add another origin first, or delete the site)",
                relay.site_id
            ))
        )
    );
    let body = json!({"add": ["https://shop.example/path"]});
    let (status, error) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("invalid_value")), "{error}");
    let missing = admin(
        &relay,
        Method::PATCH,
        "/admin/v1/sites/site_none/origins",
        Some(json!({"add": ["https://a.example"]})),
    )
    .await;
    assert_eq!(missing.0, 404);
}

#[tokio::test]
async fn a_rekeyed_site_accepts_both_keys_during_the_grace_period_and_only_the_new_one_after() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let models = |key: String| {
        let request = relay
            .client
            .get(relay.url("/v1/models"))
            .bearer_auth(key)
            .header("origin", confab_tests::SITE_ORIGIN);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let old = relay.key.clone();
    let path = format!("/admin/v1/sites/{}/rekey", relay.site_id);
    // Expiry is kept in whole seconds, so a grace of N s lasts between N - 1 and N s: 2 s leaves
    // at least one second in which both keys must work.
    let (status, rekeyed) =
        admin(&relay, Method::POST, &path, Some(json!({"grace_secs": 2}))).await;
    assert_eq!(status, 200, "{rekeyed}");
    let new = rekeyed["key"].as_str().unwrap().to_owned();
    assert!(new.starts_with("confab_pk_") && new != old);
    let old_prefix = old.rsplit_once('_').unwrap().0;
    assert_eq!(rekeyed["previous_key_prefix"], old_prefix);
    assert!(rekeyed["previous_key_expires_at"].is_string(), "{rekeyed}");

    assert_eq!((models(old.clone()).await, models(new.clone()).await), (200, 200));
    // The old key stops within a bounded wait; the new one keeps working.
    let stopped = tokio::time::timeout(confab_tests::WAIT, async {
        while models(old.clone()).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the old site key still works after its grace period");
    assert_eq!(models(new.clone()).await, 200);

    // With no grace, the old key stops at once.
    let (_, again) = admin(&relay, Method::POST, &path, Some(json!({"grace_secs": 0}))).await;
    let newest = again["key"].as_str().unwrap().to_owned();
    assert_eq!((models(new).await, models(newest).await), (401, 200));
    assert_eq!(again["previous_key_prefix"], Value::Null);
    let missing = admin(&relay, Method::POST, "/admin/v1/sites/site_none/rekey", None).await;
    assert_eq!(missing.0, 404);
}

#[tokio::test]
async fn a_sites_widget_instructions_and_verification_are_changed_over_the_admin_api() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay_with_admin(&mock).await;
    let path = format!("/admin/v1/sites/{}", relay.site_id);
    let body = json!({
        "widget": {"title": "Help", "suggestions": ["Where is my order?"], "primary_color": "#1A73E8"},
        "client_instructions": "drop",
    });
    let (status, site) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{site}");
    assert_eq!(
        site["widget"],
        json!({"title": "Help", "greeting": null, "suggestions": ["Where is my order?"], "primary_color": "#1a73e8"})
    );
    assert_eq!(site["client_instructions"], "drop");
    // What the body leaves out stays; null goes back to the default.
    let body = json!({"widget": {"title": null}, "client_instructions": null});
    let (_, site) = admin(&relay, Method::PATCH, &path, Some(body)).await;
    assert_eq!(
        (&site["widget"]["title"], &site["widget"]["primary_color"]),
        (&json!(null), &json!("#1a73e8"))
    );
    assert_eq!(site["client_instructions"], json!(null));
    for bad in [
        json!({"widget": {"primary_color": "red; background: url(x)"}}),
        json!({"client_instructions": "obey"}),
        json!({"widget": {"font": "x"}}),
    ] {
        let (status, error) = admin(&relay, Method::PATCH, &path, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {error}");
    }
    let (_, unchanged) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(unchanged["widget"]["primary_color"], "#1a73e8");

    let verification = format!("{path}/verification");
    let (status, error) =
        admin(&relay, Method::POST, &verification, Some(json!({"required": true}))).await;
    assert_eq!(status, 400, "no secret yet: {error}");
    let body = json!({"new_secret": true, "required": true, "mode": "jwt"});
    let (status, site) = admin(&relay, Method::POST, &verification, Some(body)).await;
    assert_eq!(status, 200, "{site}");
    assert!(site["visitor_secret"].as_str().unwrap().len() >= 32);
    assert_eq!(site["verification"], json!({"enabled": true, "required": true, "mode": "jwt"}));
    let (_, shown) = admin(&relay, Method::GET, &path, None).await;
    assert!(shown.get("visitor_secret").is_none(), "shown once");
}

#[tokio::test]
async fn the_overview_shows_spend_against_budgets_and_refusals() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let relay = TestRelay::metered(&mock)
        .config(|c| c.admin.token_file = Some(token_file))
        .site(|site| {
            site.limits.monthly_budget_micros = Some(1_000_000);
            site.visitor_limits.rpm = Some(1);
        })
        .start()
        .await;
    mock.push(confab_tests::Reply::answer(&["Hi"], (7, 3)));
    let hello = json!({"messages": [{"role": "user", "content": "Hi"}]});
    relay.send_chat(hello.clone()).await.text().await.unwrap();
    // The visitor's second request in the minute is refused.
    assert_eq!(relay.send_chat(hello).await.status(), 429);
    relay.settled_usage(1).await;
    let (status, overview) = admin(&relay, Method::GET, "/admin/v1/overview", None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["today"], json!({"requests": 1, "cost_micros": 10}));
    assert_eq!(overview["month"], json!({"requests": 1, "cost_micros": 10}));
    assert_eq!(overview["days"].as_array().unwrap().len(), 30);
    assert_eq!(overview["days"][29]["cost_micros"], 10);
    assert_eq!(
        overview["budgets"],
        json!([{"payer": "site", "id": relay.site_id, "name": "Shop", "period": "monthly",
                "budget_micros": 1_000_000, "spent_micros": 10}])
    );
    assert_eq!(overview["since_start"]["rate_limit_refusals"], 1);
    assert_eq!(overview["since_start"]["upstream_errors"], 0);
}
