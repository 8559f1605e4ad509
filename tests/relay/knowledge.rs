//! A site's knowledge filled and emptied: `confab knowledge ...` (run in-process on the relay's
//! database) and `/admin/v1/sites/{id}/knowledge`, against a real site served on 127.0.0.1.

use std::path::Path;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::Parser;
use confab_server::cli::{self, Cli};
use confab_server::knowledge::ingest::{self, KnowledgeError, OnFailure, Quiet, Source, Status};
use confab_server::store::KnowledgeDocument;
use confab_tests::{MockUpstream, TestRelay};
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{admin, with_admin_token};

/// A small site on 127.0.0.1: pages, a sitemap of them, a sitemap loop; no robots.txt (404:
/// everything allowed).
async fn site_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .fallback(|request: axum::extract::Request| async move { page(request.uri().path()) });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    origin
}

fn page(path: &str) -> Response {
    let xml = |body: String| ([(header::CONTENT_TYPE, "application/xml")], body).into_response();
    let urlset = |locs: &[&str]| {
        let entries: String = locs.iter().map(|l| format!("<url><loc>{l}</loc></url>")).collect();
        xml(format!(
            "<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">{entries}</urlset>"
        ))
    };
    match path {
        "/sitemap.xml" => urlset(&["/returns", "/shipping"]),
        "/loop.xml" => xml("<sitemapindex><sitemap><loc>/loop.xml</loc></sitemap></sitemapindex>".into()),
        "/returns" | "/shipping" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!(
                "<html><head><title>{path}</title></head><body><nav>Menu</nav><main>\
                 <h1>About {path}</h1><p>Everything about {path} at the shop.</p></main></body></html>"
            ),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A relay with the admin API whose test site's origin is `origin`, with `change` made to its
/// configuration.
async fn relay_for(
    origin: &str,
    change: impl FnOnce(&mut confab_server::config::Config),
) -> (TestRelay, tempfile::TempDir) {
    let mock = MockUpstream::start().await;
    let builder =
        TestRelay::builder(&mock).site(|site| site.origins = vec![origin.to_owned()]).config(|c| {
            c.knowledge.fetch_interval_ms = 1;
            change(c);
        });
    let (builder, dir) = with_admin_token(builder);
    (builder.start().await, dir)
}

/// `confab --database <the relay's> ARGS`, in this process.
async fn confab(relay: &TestRelay, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["confab", "--database", relay.config.database.url.as_str()];
    all.extend_from_slice(args);
    cli::run(Cli::try_parse_from(all).unwrap()).await
}

async fn documents(relay: &TestRelay) -> Vec<KnowledgeDocument> {
    relay.store.knowledge_documents(&relay.site_id).await.unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A folder of a Markdown file, an HTML page and a text file, with a hidden file and an image
/// that a walk skips.
fn docs_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("help")).unwrap();
    write(root, "faq.md", "# FAQ\n\n## Returns\n\nReturns are free within 30 days.\n");
    write(
        &root.join("help"),
        "shipping.html",
        "<html><body><main><h1>Shipping</h1><p>We ship in two days.</p></main></body></html>",
    );
    write(root, "hours.txt", "Open from nine to five, Monday to Friday.\n");
    write(root, ".draft.md", "# Not yet\n\nSecret plans.\n");
    write(root, "logo.png", "not really a png");
    dir
}

fn canonical(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}

async fn add(relay: &TestRelay, sources: Vec<Source>) -> Result<ingest::Report, KnowledgeError> {
    let config = &relay.config.knowledge;
    let (store, site) = (relay.store.as_ref(), relay.site_id.as_str());
    ingest::add(store, config, None, site, sources, OnFailure::StoreTheRest, &mut Quiet).await
}

fn statuses(report: &ingest::Report) -> Vec<(String, Status)> {
    let mut statuses: Vec<_> =
        report.documents.iter().map(|d| (d.source.clone(), d.status)).collect();
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    statuses
}

#[tokio::test]
async fn the_cli_adds_a_folders_supported_files_by_path_and_adding_them_again_changes_nothing() {
    let (relay, _admin) = relay_for("https://shop.example", |_| {}).await;
    let folder = docs_folder();
    let dir = folder.path().display().to_string();
    confab(&relay, &["knowledge", "add", &relay.site_id, &dir]).await.unwrap();

    let stored = documents(&relay).await;
    let mut sources: Vec<&str> = stored.iter().map(|d| d.source.as_str()).collect();
    sources.sort_unstable();
    let root = folder.path();
    let mut expected = vec![
        canonical(&root.join("faq.md")),
        canonical(&root.join("help/shipping.html")),
        canonical(&root.join("hours.txt")),
    ];
    expected.sort();
    assert_eq!(sources, expected, "hidden files and unsupported extensions are skipped");
    assert!(stored.iter().all(|d| d.passages > 0), "{stored:?}");
    let faq = stored.iter().find(|d| d.source.ends_with("faq.md")).unwrap();
    assert_eq!(faq.title, "FAQ");

    // `list` answers what the admin API lists.
    confab(&relay, &["knowledge", "list", &relay.site_id, "--json"]).await.unwrap();
    let (status, listed) =
        admin(&relay, Method::GET, &format!("/admin/v1/sites/{}/knowledge", relay.site_id), None)
            .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);

    let again = add(&relay, vec![Source::Path(root.to_owned())]).await.unwrap();
    assert_eq!(
        statuses(&again),
        expected.iter().map(|s| (s.clone(), Status::Unchanged)).collect::<Vec<_>>()
    );
    assert_eq!(again.notes.len(), 2, "{:?}", again.notes);
    assert_eq!(documents(&relay).await, stored, "nothing changed, not even a date");
}

#[tokio::test]
async fn a_refresh_replaces_only_the_edited_file_and_keeps_the_document_of_a_deleted_one() {
    let (relay, _admin) = relay_for("https://shop.example", |_| {}).await;
    let folder = docs_folder();
    let root = folder.path();
    add(&relay, vec![Source::Path(root.to_owned())]).await.unwrap();
    let before = documents(&relay).await;

    write(root, "faq.md", "# FAQ\n\n## Returns\n\nReturns are free within 60 days now.\n");
    let hours = canonical(&root.join("hours.txt"));
    std::fs::remove_file(root.join("hours.txt")).unwrap();
    let config = &relay.config.knowledge;
    let report = ingest::refresh(relay.store.as_ref(), config, None, &relay.site_id, &mut Quiet)
        .await
        .unwrap();
    assert_eq!(
        statuses(&report),
        vec![
            (canonical(&root.join("faq.md")), Status::Replaced),
            (canonical(&root.join("help/shipping.html")), Status::Unchanged),
            (hours.clone(), Status::Failed),
        ]
    );
    let gone = report.documents.iter().find(|d| d.source == hours).unwrap();
    let id = before.iter().find(|d| d.source == hours).unwrap().id;
    assert_eq!(
        gone.error.as_deref().unwrap(),
        format!(
            "{hours}: No such file or directory (os error 2) (its stored document is kept; \
             remove it with `confab knowledge remove {} {id}`)",
            relay.site_id
        )
    );
    let after = documents(&relay).await;
    assert_eq!(after.len(), 3, "a source that is gone is reported, not deleted");
    let faq = after.iter().find(|d| d.source.ends_with("faq.md")).unwrap();
    assert_ne!(faq.content_hash, before.iter().find(|d| d.id == faq.id).unwrap().content_hash);

    // The CLI's refresh fails (one document did), and `remove` removes the one that is gone.
    let error = confab(&relay, &["knowledge", "refresh", &relay.site_id]).await.unwrap_err();
    assert_eq!(error.to_string(), "1 document(s) failed (see above); the others were stored");
    confab(&relay, &["knowledge", "remove", &relay.site_id, &id.to_string()]).await.unwrap();
    assert_eq!(documents(&relay).await.len(), 2);
    let error = confab(&relay, &["knowledge", "remove", &relay.site_id, &id.to_string()])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "site {site} has no document with id {id} (see `confab knowledge list {site}`)",
            site = relay.site_id
        )
    );
}

#[tokio::test]
async fn the_cli_refuses_an_unknown_site_by_name() {
    let (relay, _admin) = relay_for("https://shop.example", |_| {}).await;
    for args in [
        &["knowledge", "add", "nope", "."][..],
        &["knowledge", "list", "nope"],
        &["knowledge", "remove", "nope", "1"],
        &["knowledge", "refresh", "nope"],
    ] {
        let error = confab(&relay, args).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "no site with id `nope` (see `confab sites list`)",
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn the_admin_api_adds_a_sitemaps_pages_and_uploads_lists_and_removes_them() {
    let origin = site_server().await;
    let (relay, _admin) = relay_for(&origin, |_| {}).await;
    let path = format!("/admin/v1/sites/{}/knowledge", relay.site_id);
    let body = json!({
        "urls": [format!("{origin}/sitemap.xml")],
        "documents": [{"name": "faq.md", "text": "# FAQ\n\nAsk us anything, any day.\n"}],
    });
    let (status, report) = admin(&relay, Method::POST, &path, Some(body.clone())).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["added"], &report["unchanged"], &report["failed"]),
        (&json!(3), &json!(0), &json!(0))
    );
    let results: Vec<(&str, &str)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["source"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    let (returns, shipping) = (format!("{origin}/returns"), format!("{origin}/shipping"));
    assert_eq!(
        results,
        [(returns.as_str(), "added"), (shipping.as_str(), "added"), ("faq.md", "added")]
    );

    let (status, listed) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    let listed = listed["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3);
    let returns_doc = listed.iter().find(|d| d["source"] == returns).unwrap();

    // The same again changes nothing.
    let (status, report) = admin(&relay, Method::POST, &path, Some(body)).await;
    assert_eq!((status, &report["unchanged"], &report["added"]), (200, &json!(3), &json!(0)));

    // Refresh reads the pages again (unchanged) and skips the upload.
    let (status, report) = admin(&relay, Method::POST, &format!("{path}/refresh"), None).await;
    assert_eq!((status, &report["unchanged"], &report["skipped"]), (200, &json!(2), &json!(1)));

    let id = returns_doc["id"].as_i64().unwrap();
    let one = format!("{path}/{id}");
    assert_eq!(admin(&relay, Method::DELETE, &one, None).await.0, 204);
    assert_eq!(documents(&relay).await.len(), 2);
    assert_eq!(
        admin(&relay, Method::DELETE, &one, None).await,
        (
            404,
            json!({"error": {
                "message": format!("no knowledge document with id `{id}`"),
                "type": "invalid_request_error",
                "code": "not_found",
            }})
        )
    );
    let (status, _) = admin(&relay, Method::GET, "/admin/v1/sites/nope/knowledge", None).await;
    assert_eq!(status, 404);
}

fn refusal(message: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "code": code}})
}

#[tokio::test]
async fn off_origin_urls_and_looping_sitemaps_are_refused_by_name_and_change_nothing() {
    let origin = site_server().await;
    let (relay, _admin) = relay_for(&origin, |_| {}).await;
    let path = format!("/admin/v1/sites/{}/knowledge", relay.site_id);
    let page = format!("{origin}/returns");

    let body = json!({"urls": [page, "http://elsewhere.example/faq"]});
    assert_eq!(
        admin(&relay, Method::POST, &path, Some(body)).await,
        (
            400,
            refusal(
                &format!(
                    "http://elsewhere.example/faq: not on the site's origins ({origin}); only the \
                     site's own pages are fetched; nothing was changed"
                ),
                "invalid_document"
            )
        )
    );
    let loop_url = format!("{origin}/loop.xml");
    let body = json!({"urls": [page, loop_url]});
    assert_eq!(
        admin(&relay, Method::POST, &path, Some(body)).await,
        (
            400,
            refusal(
                &format!(
                    "{loop_url}: sitemap loop (this sitemap is listed again by a sitemap it \
                     lists); nothing was changed"
                ),
                "invalid_document"
            )
        )
    );
    assert_eq!(
        admin(&relay, Method::POST, &path, Some(json!({"urls": ["shop.example/faq"]}))).await,
        (400, refusal("urls[0]: `shop.example/faq` is not an http(s) URL", "invalid_value"))
    );
    let (status, body) = admin(&relay, Method::POST, &path, Some(json!({"urls": []}))).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_value")));
    assert!(documents(&relay).await.is_empty(), "the good page was not stored either");
}

#[tokio::test]
async fn a_one_gigabyte_file_is_refused_by_name_from_its_size_and_changes_nothing() {
    let (relay, _admin) = relay_for("https://shop.example", |_| {}).await;
    let folder = tempfile::tempdir().unwrap();
    write(folder.path(), "small.md", "# Small\n\nA small page.\n");
    let big = folder.path().join("huge.md");
    // Sparse: no disk is used, and reading it would take seconds, which is what is avoided.
    std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    let big = canonical(&big);

    let error = ingest::add(
        relay.store.as_ref(),
        &relay.config.knowledge,
        None,
        &relay.site_id,
        vec![Source::Path(big.clone().into())],
        OnFailure::StoreNothing,
        &mut Quiet,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{big}: 1073741824 bytes is more than the limit of 5242880 bytes ([knowledge] \
             max_document_bytes)"
        )
    );
    // The CLI stores the rest and fails; the huge file left no trace.
    let dir = folder.path().display().to_string();
    let error = confab(&relay, &["knowledge", "add", &relay.site_id, &dir]).await.unwrap_err();
    assert_eq!(error.to_string(), "1 document(s) failed (see above); the others were stored");
    let stored = documents(&relay).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].source.ends_with("small.md"));
}

#[tokio::test]
async fn malformed_binary_and_oversized_uploads_are_refused_by_name() {
    let (relay, _admin) =
        relay_for("https://shop.example", |c| c.knowledge.max_document_bytes = 64).await;
    let path = format!("/admin/v1/sites/{}/knowledge", relay.site_id);
    let pdf = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.7\n nope");
    let (status, body) = admin(
        &relay,
        Method::POST,
        &path,
        Some(json!({"documents": [{"name": "broken.pdf", "base64": pdf}]})),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_document")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("broken.pdf: malformed PDF: "), "{message}");
    assert!(message.ends_with("; nothing was changed"), "{message}");

    let body = json!({"documents": [{"name": "a.txt", "text": "x".repeat(65)}]});
    assert_eq!(
        admin(&relay, Method::POST, &path, Some(body)).await,
        (
            400,
            refusal(
                "a.txt: 65 bytes is more than the limit of 64 bytes; nothing was changed",
                "invalid_document"
            )
        )
    );
    let (status, body) = admin(
        &relay,
        Method::POST,
        &path,
        Some(json!({"documents": [{"name": "notes.txt", "text": "a\u{0}b\u{0}c"}]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("notes.txt: binary content"));
    let body = json!({"documents": [{"name": "../etc/passwd", "text": "x"}]});
    let (status, body) = admin(&relay, Method::POST, &path, Some(body)).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_value")));
    assert!(documents(&relay).await.is_empty());
}

#[tokio::test]
async fn adds_past_the_sites_caps_are_refused_naming_the_caps_and_change_nothing() {
    let (relay, _admin) = relay_for("https://shop.example", |c| {
        c.knowledge.max_documents_per_site = 2;
    })
    .await;
    let path = format!("/admin/v1/sites/{}/knowledge", relay.site_id);
    let upload = |name: &str| json!({"name": name, "text": format!("# {name}\n\nAbout {name}.\n")});
    let body = json!({"documents": [upload("a.md"), upload("b.md"), upload("c.md")]});
    let expected = format!(
        "site {} would hold 3 documents / 3 passages; the cap is 2 documents / 20000 passages \
         per site ([knowledge] max_documents_per_site, max_passages_per_site); nothing was changed",
        relay.site_id
    );
    assert_eq!(
        admin(&relay, Method::POST, &path, Some(body)).await,
        (400, refusal(&expected, "knowledge_caps_exceeded"))
    );
    assert!(documents(&relay).await.is_empty());

    // A folder past the caps is refused alike, whole.
    let folder = docs_folder();
    let error = add(&relay, vec![Source::Path(folder.path().to_owned())]).await.unwrap_err();
    let KnowledgeError::OverCaps(exceeded) = &error else { panic!("{error}") };
    assert_eq!((exceeded.documents, exceeded.max_documents), (3, 2), "{error}");
    assert!(error.to_string().ends_with("nothing was changed"), "{error}");
    assert!(documents(&relay).await.is_empty());
}
