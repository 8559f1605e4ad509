//! The widget: `GET /v1/widget/config` (the site's widget settings over the `[widget]` defaults)
//! and the loader and module files served from `widget.assets_dir`.

use confab_server::sites::{self, SiteError, SiteSpec};
use confab_server::store::SiteWidget;
use confab_tests::{MockUpstream, SITE_ORIGIN, TestRelay, json_body};
use serde_json::json;

#[tokio::test]
async fn a_site_without_settings_gets_the_configured_defaults() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock)
        .config(|c| {
            c.widget.suggestions = vec!["Shipping?".into()];
            c.limits.max_message_bytes = 2000;
        })
        .start()
        .await;
    let response = relay
        .client
        .get(relay.url("/v1/widget/config"))
        .bearer_auth(&relay.key)
        .header("Origin", SITE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], SITE_ORIGIN);
    assert_eq!(
        json_body(response).await,
        (
            200,
            json!({
                "title": "Chat with us",
                "greeting": "Hi! How can I help you today?",
                "suggestions": ["Shipping?"],
                "theme": {},
                "max_message_bytes": 2000,
            })
        )
    );
}

#[tokio::test]
async fn a_sites_own_settings_win_and_other_origins_get_nothing() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock)
        .site(|s| {
            s.widget = SiteWidget {
                title: Some("  Shop help ".into()),
                greeting: Some("Ahoy".into()),
                suggestions: Some(vec!["Where is my order?".into(), " ".into()]),
                primary_color: Some("#1A73E8".into()),
            }
        })
        .start()
        .await;
    let get = |origin: &str| {
        relay
            .client
            .get(relay.url("/v1/widget/config"))
            .bearer_auth(&relay.key)
            .header("Origin", origin)
            .send()
    };
    let (status, body) = json_body(get(SITE_ORIGIN).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "title": "Shop help",
            "greeting": "Ahoy",
            "suggestions": ["Where is my order?"],
            "theme": {"primary_color": "#1a73e8"},
            "max_message_bytes": 16384,
        })
    );
    let (status, body) = json_body(get("https://evil.example").await.unwrap()).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");

    // Settings can change after creation.
    let updated = SiteWidget { title: Some("New title".into()), ..SiteWidget::default() };
    assert!(sites::update_widget(relay.store.as_ref(), &relay.site_id, updated).await.unwrap());
    let (_, body) = json_body(get(SITE_ORIGIN).await.unwrap()).await;
    assert_eq!(body["title"], "New title");
    assert_eq!(body["greeting"], "Hi! How can I help you today?");
}

#[tokio::test]
async fn a_colour_that_is_not_a_hex_colour_is_refused() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    // Anything else could smuggle CSS into the widget.
    for color in ["red;}body{display:none", "url(x)", "#12345", "#ggg"] {
        let spec = SiteSpec {
            name: "X".into(),
            origins: vec!["https://x.example".into()],
            widget: SiteWidget { primary_color: Some(color.into()), ..SiteWidget::default() },
            ..SiteSpec::default()
        };
        let error =
            sites::create_site(relay.store.as_ref(), &relay.config, spec, false).await.unwrap_err();
        assert!(
            matches!(&error, SiteError::Invalid { field: "primary_color", .. }),
            "{color}: {error}"
        );
    }
}

#[tokio::test]
async fn the_loader_and_the_widget_files_are_served_from_the_assets_directory() {
    let mock = MockUpstream::start().await;
    let assets = tempfile::tempdir().unwrap();
    std::fs::write(assets.path().join("confab.js"), "/* loader */").unwrap();
    std::fs::write(assets.path().join("confab-widget.0123456789abcdef.js"), "/* glue */").unwrap();
    let dir = assets.path().to_owned();
    let relay = TestRelay::builder(&mock).config(|c| c.widget.assets_dir = Some(dir)).start().await;
    for (path, body) in [
        ("/confab.js", "/* loader */"),
        ("/widget/confab-widget.0123456789abcdef.js", "/* glue */"),
    ] {
        let response = relay.client.get(relay.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body, "{path}");
    }
}
