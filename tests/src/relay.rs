//! A real relay for one test: fresh SQLite database in a temp dir, the mock as its only
//! upstream, one site, and a client that sends the site's key and origin by default.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use confab_server::budget::Price;
use confab_server::config::{Config, UpstreamConfig, UpstreamKind};
use confab_server::keys::{self, KeySpec};
use confab_server::sites::{self, SiteSpec};
use confab_server::store::{ApiKey, Outcome, Store, UsageRecord};
use confab_server::webhooks::Webhooks;
use confab_server::{AppState, serve};
use reqwest::header::{AUTHORIZATION, ORIGIN};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::MockUpstream;

/// The provider key the relay holds. Tests prove it never leaves the relay except towards the
/// upstream.
pub const UPSTREAM_SECRET: &str = "sk-test-UPSTREAM-SECRET-7f3a9c1e5b";
/// The origin the default test site lists.
pub const SITE_ORIGIN: &str = "https://shop.example";
/// Models the mock upstream serves.
pub const UPSTREAM_MODELS: [&str; 3] = ["model-a", "model-b", "model-c"];

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of every relay in this test binary, at every level.
fn install_log_capture() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(Arc::clone(&buffer));
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    });
}

/// Everything logged so far by any relay in this test binary.
pub fn captured_logs() -> String {
    LOGS.get().map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned()).unwrap_or_default()
}

#[derive(Debug)]
pub struct TestRelayBuilder {
    config: Config,
    site: SiteSpec,
    database_dir: Option<PathBuf>,
    database_url: Option<String>,
}

impl TestRelayBuilder {
    /// Changes the relay's configuration before it starts.
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Changes the test site before it is created.
    pub fn site(mut self, change: impl FnOnce(&mut SiteSpec)) -> Self {
        change(&mut self.site);
        self
    }

    /// Keeps the database in `dir` (which outlives the relay) instead of a fresh one, so that
    /// another relay can be started on it: a restart.
    pub fn database(mut self, dir: &Path) -> Self {
        self.database_dir = Some(dir.to_owned());
        self
    }

    /// Uses the database at `url` (PostgreSQL: `confab_tests::servers::postgres().database()`)
    /// instead of a fresh SQLite file; the relay's reservation journal stays in its own temp
    /// dir unless the config names one.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    pub async fn start(self) -> TestRelay {
        install_log_capture();
        let dir = tempfile::tempdir().unwrap();
        let mut config = self.config;
        match &self.database_url {
            Some(url) => {
                config.database.url = url.clone();
                if config.usage.journal_dir.is_none() {
                    config.usage.journal_dir = Some(dir.path().join("reservations"));
                }
            }
            None => {
                let database_dir = self.database_dir.as_deref().unwrap_or(dir.path());
                config.database.url =
                    format!("sqlite://{}", database_dir.join("relay.db").display());
            }
        }
        let key_file = dir.path().join("upstream.key");
        std::fs::write(&key_file, format!("{UPSTREAM_SECRET}\n")).unwrap();
        for upstream in &mut config.upstreams {
            upstream.api_key_file = Some(key_file.clone());
        }
        let store = confab_server::store::open(&config.database).await.unwrap();
        let created = sites::create_site(store.as_ref(), &config, self.site, false).await.unwrap();
        let state = AppState::new(config.clone(), Arc::clone(&store)).await.unwrap();
        let webhooks = Arc::clone(&state.webhooks);
        let knowledge = Arc::clone(&state.knowledge);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(state, listener, async {
            let _ = shutdown_rx.await;
        }));
        TestRelay {
            base_url: format!("http://{addr}"),
            key: created.key.reveal().to_owned(),
            site_id: created.site.id,
            config,
            store,
            webhooks,
            knowledge,
            client: reqwest::Client::new(),
            _dir: dir,
            shutdown: shutdown_tx,
            server,
        }
    }
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct TestRelay {
    pub base_url: String,
    /// The test site's full key.
    pub key: String,
    pub site_id: String,
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// The relay's webhooks handle, for what it reports (`backlog`, `failures`, `dropped`).
    pub webhooks: Arc<Webhooks>,
    /// The relay's knowledge indexes: `site_changed` after writing knowledge to `store`
    /// directly, as the admin API does after its changes.
    pub knowledge: Arc<confab_server::knowledge::library::Library>,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestRelay {
    /// A relay whose only upstream is `mock`, with short time limits suited to tests, and a site
    /// for `https://shop.example` that may use `model-a` (default) and `model-b`.
    pub fn builder(mock: &MockUpstream) -> TestRelayBuilder {
        let mut config = Config {
            upstreams: vec![UpstreamConfig {
                name: "mock".into(),
                kind: UpstreamKind::Openai,
                base_url: Some(mock.base_url.clone()),
                api_key_env: None,
                api_key_file: None,
                models: UPSTREAM_MODELS.iter().map(|m| (*m).to_owned()).collect(),
            }],
            ..Config::default()
        };
        config.timeouts.first_byte_ms = 5_000;
        config.timeouts.idle_ms = 5_000;
        let site = SiteSpec {
            name: "Shop".into(),
            origins: vec![SITE_ORIGIN.into()],
            models: vec!["model-a".into(), "model-b".into()],
            system_prompt: Some("You are the shop's assistant.".into()),
            ..SiteSpec::default()
        };
        TestRelayBuilder { config, site, database_dir: None, database_url: None }
    }

    /// [`TestRelay::builder`] with `model-a` priced at one micro-dollar per token, in and out
    /// (so costs equal token counts), and usage records written every 50 ms.
    pub fn metered(mock: &MockUpstream) -> TestRelayBuilder {
        let price = Price::new(1_000_000, 1_000_000);
        Self::builder(mock).config(|c| {
            c.prices.insert("model-a".into(), price);
            c.usage.flush_ms = 50;
        })
    }

    pub async fn start(mock: &MockUpstream) -> Self {
        Self::builder(mock).start().await
    }

    /// Shuts the relay down as SIGTERM would and waits (bounded) until `serve` has returned:
    /// in-flight requests finished, background work stopped, batched records written.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(crate::WAIT, self.server)
            .await
            .expect("the relay did not stop")
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /v1/chat/completions` with the site's key and origin.
    pub fn chat(&self) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/v1/chat/completions"))
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .header(ORIGIN, SITE_ORIGIN)
    }

    /// `POST /v1/chat/completions` with any key, from any origin (or none).
    pub fn chat_as(&self, key: &str, origin: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.post(self.url("/v1/chat/completions")).bearer_auth(key);
        match origin {
            Some(origin) => request.header(ORIGIN, origin),
            None => request,
        }
    }

    /// `GET /v1/chat/streams/{id}` (follow a resumable stream again) with the site's key and
    /// origin.
    pub fn follow(&self, id: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(&format!("/v1/chat/streams/{id}")))
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .header(ORIGIN, SITE_ORIGIN)
    }

    /// `POST /v1/chat/streams/{id}/cancel` with the site's key and origin.
    pub fn cancel(&self, id: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!("/v1/chat/streams/{id}/cancel")))
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .header(ORIGIN, SITE_ORIGIN)
    }

    /// Sends a JSON chat request with the site's key and origin.
    pub async fn send_chat(&self, body: Value) -> reqwest::Response {
        self.chat().json(&body).send().await.unwrap()
    }

    /// Creates a secret API key on this relay and returns it with its full secret.
    pub async fn create_key(&self, spec: KeySpec) -> (ApiKey, String) {
        let issued = keys::create_key(self.store.as_ref(), &self.config, spec).await.unwrap();
        (issued.key, issued.secret.reveal().to_owned())
    }

    /// Waits (bounded) until at least `count` usage records are written and all of them are
    /// settled (none still `pending`), and returns them, oldest first.
    pub async fn settled_usage(&self, count: usize) -> Vec<UsageRecord> {
        tokio::time::timeout(crate::WAIT, async {
            loop {
                let records = self.store.usage_since(0, None, None).await.unwrap();
                if records.len() >= count && records.iter().all(|r| r.outcome != Outcome::Pending) {
                    return records;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} settled usage records were written"))
    }

    /// Waits (bounded) until the one usage record of a test's one request is settled, and
    /// returns it.
    pub async fn only_settled_usage(&self) -> UsageRecord {
        let mut records = self.settled_usage(1).await;
        assert_eq!(records.len(), 1, "one request, one record: {records:?}");
        records.remove(0)
    }

    /// Creates another site on this relay and returns its key.
    pub async fn create_site(&self, spec: SiteSpec) -> (String, String) {
        let created =
            sites::create_site(self.store.as_ref(), &self.config, spec, false).await.unwrap();
        (created.site.id, created.key.reveal().to_owned())
    }
}

/// Waits (bounded) until some relay has logged a line containing `needle`; for log lines that
/// are written in the background.
pub async fn wait_for_log(needle: &str) {
    tokio::time::timeout(crate::WAIT, async {
        while !captured_logs().contains(needle) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no log line contains {needle:?}"));
}

/// The parsed JSON body and status of a response.
pub async fn json_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    (status, body)
}
