//! Tests of the real `confab` binary: the `sites` commands, start-up configuration errors, the
//! `serve` command with its demo site, graceful shutdown, and a conformance run of the official
//! `openai` Python package against a running relay.
//!
//! Every test runs the binary in a fresh temporary directory (so `confab.db` and `confab.toml`
//! land there), on `127.0.0.1:0`, learns the bound address from the relay's own first line of
//! output instead of sleeping, bounds every wait, and kills every child it started.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the harness they share.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed step aborts the test with its message"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use confab_server::store::{Outcome, SqliteStore, Store, UsageRecord};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);
/// The Python conformance script makes several round trips; it gets more room.
const CONFORMANCE_WAIT: Duration = Duration::from_secs(120);

const DEMO_MODEL: &str = "confab-demo";
const LISTENING: &str = "Confab relay listening on http://";
const DEMO_KEY_LINE: &str = "Demo site key (new at every start): ";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh working directory for one test; `confab` runs with it as its current directory.
struct Workdir {
    dir: TempDir,
}

/// What a finished `confab` command left behind.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_success(self) -> Self {
        assert!(
            self.status.success(),
            "confab failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    fn assert_failure(self) -> Self {
        assert!(
            !self.status.success(),
            "confab succeeded but should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Stdout as exactly one JSON value.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.stdout))
    }
}

impl Workdir {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `confab ARGS` in this directory, with none of the caller's `CONFAB__*` or `RUST_LOG`
    /// variables leaking in.
    fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
        command.args(args).current_dir(self.path()).stdin(Stdio::null()).kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CONFAB__") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(envs.iter().copied());
        command
    }

    /// Runs `confab ARGS` to completion (at most `WAIT`).
    async fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let output = timeout(WAIT, self.command(args, envs).output())
            .await
            .unwrap_or_else(|_| {
                panic!("`confab {}` did not finish within {WAIT:?}", args.join(" "))
            })
            .unwrap();
        Run {
            status: output.status,
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// `confab sites create ARGS --json`, which must succeed; returns the printed object.
    async fn create_site(&self, args: &[&str], envs: &[(&str, &str)]) -> Value {
        let mut all = vec!["sites", "create"];
        all.extend_from_slice(args);
        all.push("--json");
        self.run(&all, envs).await.assert_success().json()
    }

    async fn list_sites(&self) -> Value {
        self.run(&["sites", "list", "--json"], &[]).await.assert_success().json()
    }

    /// The bytes of the SQLite database and its side files (`-wal`, `-shm`).
    fn database_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with("confab.db") {
                bytes.extend(std::fs::read(entry.path()).unwrap());
            }
        }
        assert!(!bytes.is_empty(), "no database file in {}", self.path().display());
        bytes
    }
}

/// A running `confab serve`, with what it printed at start-up.
struct Relay {
    child: Child,
    addr: SocketAddr,
    demo_site_id: String,
    /// The origins the demo-site line names, as printed.
    demo_origins: String,
    key: String,
    /// Kept open so the relay never writes into a closed pipe.
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_log: PathBuf,
}

impl Relay {
    /// Starts `confab serve --listen 127.0.0.1:0` and reads its start-up lines (at most `WAIT`).
    async fn start(work: &Workdir, envs: &[(&str, &str)]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let stderr_log =
            work.path().join(format!("serve-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let mut command = work.command(&["serve", "--listen", "127.0.0.1:0"], envs);
        command.stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr_log).unwrap());
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

        let mut next_line = async || -> String {
            match timeout(WAIT, stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => panic!(
                    "confab serve closed its stdout during start-up; stderr:\n{}",
                    read_log(&stderr_log)
                ),
                Ok(Err(e)) => panic!("cannot read confab's stdout: {e}"),
                Err(_) => panic!(
                    "confab serve printed nothing for {WAIT:?}; stderr:\n{}",
                    read_log(&stderr_log)
                ),
            }
        };

        let first = next_line().await;
        let addr: SocketAddr = first
            .strip_prefix(LISTENING)
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .parse()
            .unwrap();

        // The demo site's lines follow a line about the upstream; read a bounded number of lines.
        let mut demo = None;
        let mut key = None;
        for _ in 0..8 {
            let line = next_line().await;
            if let Some(rest) = line.strip_prefix(DEMO_KEY_LINE) {
                key = Some(rest.to_owned());
                break;
            }
            if let Some(rest) = line.strip_prefix("Demo site ") {
                let (id, origins) = rest
                    .split_once(" for origin ")
                    .unwrap_or_else(|| panic!("unexpected demo site line: {line:?}"));
                demo = Some((id.to_owned(), origins.to_owned()));
            }
        }
        let (demo_site_id, demo_origins) = demo.expect("confab serve printed no demo site line");
        let key = key.expect("confab serve printed no demo site key");
        Self { child, addr, demo_site_id, demo_origins, key, stdout, stderr_log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Reads start-up lines (at most 8) until one starts with `prefix`; returns the rest of it.
    async fn line_starting_with(&mut self, prefix: &str) -> String {
        for _ in 0..8 {
            let line = timeout(WAIT, self.stdout.next_line()).await.unwrap().unwrap().unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("confab serve printed no line starting with {prefix:?}")
    }

    /// The origin of the relay's own address, as a browser on it would send it.
    fn own_origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and waits (at most `WAIT`) for the relay to exit.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the relay has already exited").to_string();
        let kill = timeout(WAIT, Command::new("kill").args(["-TERM", &pid]).status())
            .await
            .unwrap()
            .unwrap();
        assert!(kill.success(), "`kill -TERM {pid}` failed with {kill}");
        match timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the relay did not exit within {WAIT:?} of SIGTERM; stderr:\n{}",
                read_log(&self.stderr_log)
            ),
        }
    }

    /// Kills the relay and waits for it to go.
    async fn kill(mut self) {
        timeout(WAIT, self.child.kill()).await.unwrap().unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // `kill_on_drop` ends the process; a failing test also shows what the relay logged.
        if std::thread::panicking() {
            eprintln!("--- confab serve stderr ---\n{}", read_log(&self.stderr_log));
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// `confab_pk_` + 12 alphanumerics + `_` + 32 alphanumerics.
fn is_site_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("confab_pk_") else { return false };
    let Some((lookup, secret)) = rest.split_once('_') else { return false };
    let alnum = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    alnum(lookup, 12) && alnum(secret, 32)
}

/// `confab_pk_<lookup>`: what listings may show of a key.
fn key_prefix(key: &str) -> &str {
    let (prefix, _secret) = key.rsplit_once('_').unwrap();
    prefix
}

/// The part of a key that must never be shown or stored again.
fn key_secret(key: &str) -> &str {
    key.rsplit_once('_').unwrap().1
}

fn http_client() -> reqwest::Client {
    // The relay is on loopback: no proxy from the environment may stand in between.
    reqwest::Client::builder().no_proxy().timeout(WAIT).build().unwrap()
}

async fn post_chat(
    client: &reqwest::Client,
    relay: &Relay,
    key: &str,
    origin: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(relay.url("/v1/chat/completions"))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .header(ORIGIN, origin)
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap()
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

fn content_type(response: &reqwest::Response) -> &str {
    response.headers()[CONTENT_TYPE].to_str().unwrap()
}

/// Reads a whole SSE response through a real SSE parser (at most `WAIT`).
async fn read_events(response: reqwest::Response) -> Vec<Event> {
    timeout(WAIT, response.bytes_stream().eventsource().map(Result::unwrap).collect())
        .await
        .expect("the stream did not end in time")
}

fn invalid_key_envelope() -> Value {
    json!({"error": {
        "message": "the API key is not valid",
        "type": "authentication_error",
        "code": "invalid_api_key",
    }})
}

/// A streamed answer, checked event by event: every event is a `chat.completion.chunk` of the
/// demo model sharing one id, the last chunk has no choices and carries usage, then `[DONE]`.
/// Returns the streamed text and the usage.
fn check_stream(events: &[Event]) -> (String, Value) {
    assert!(events.len() >= 3, "too few events: {events:?}");
    for event in events {
        assert_eq!(event.event, "message", "unexpected event: {event:?}");
    }
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {e:?}")))
        .collect();
    let id = &chunks[0]["id"];
    assert!(id.as_str().is_some_and(|id| !id.is_empty()), "chunk without an id: {}", chunks[0]);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["model"], DEMO_MODEL, "{chunk}");
        assert_eq!(&chunk["id"], id, "{chunk}");
    }
    let (last, answer) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    for chunk in answer {
        assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1), "{chunk}");
        assert!(chunk.get("usage").is_none_or(Value::is_null), "usage before the end: {chunk}");
    }
    assert_eq!(answer[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> =
        answer.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("stop")]);
    let text: String =
        answer.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (text, last["usage"].clone())
}

fn assert_usage_adds_up(usage: &Value) {
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion), "{usage}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// `confab sites ...`
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_created_site_is_listed_shown_and_deleted_without_its_secret_ever_showing_again() {
    let work = Workdir::new();
    let created = work
        .create_site(
            &[
                "--name",
                "Shop",
                "--origin",
                "https://Shop.Example:443/",
                "--origin",
                "https://www.shop.example",
            ],
            &[],
        )
        .await;

    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(id.starts_with("site_") && id.len() > "site_".len(), "{id}");
    assert!(is_site_key(&key), "{key}");
    let created_at = created["created_at"].as_str().unwrap();
    assert!(created_at.len() == 20 && created_at.ends_with('Z'), "{created_at}");
    let public = json!({
        "id": id,
        "name": "Shop",
        "key_prefix": key_prefix(&key),
        "previous_key_prefix": null,
        "previous_key_expires_at": null,
        "origins": ["https://shop.example", "https://www.shop.example"],
        "allow_no_origin": false,
        "models": [DEMO_MODEL],
        "system_prompt": null,
        "max_tokens": null,
        "temperature_max": null,
        "context_messages": null,
        "client_instructions": null,
        "grounding": "prefer",
        "widget": {"title": null, "greeting": null, "suggestions": null, "primary_color": null},
        "limits": {
            "rpm": null, "rpd": null, "tpm": null,
            "monthly_budget_micros": null, "daily_budget_micros": null,
            "visitor_rpm": null, "visitor_rpd": null,
            "verified_rpm": null, "verified_rpd": null,
        },
        "conversations": {
            "transcripts": false, "retention_days": 30, "mask_contacts": false,
            "notice": null, "handoff": false,
        },
        "verification": {"enabled": false, "required": false, "mode": "hmac"},
        "created_at": created_at,
    });
    let mut with_key = public.clone();
    with_key["key"] = json!(key);
    assert_eq!(created, with_key);

    let list = work.run(&["sites", "list", "--json"], &[]).await.assert_success();
    assert_eq!(list.json(), json!([public]));
    let show = work.run(&["sites", "show", &id, "--json"], &[]).await.assert_success();
    assert_eq!(show.json(), public);
    let list_text = work.run(&["sites", "list"], &[]).await.assert_success();
    let show_text = work.run(&["sites", "show", &id], &[]).await.assert_success();
    assert!(list_text.stdout.contains(key_prefix(&key)), "{}", list_text.stdout);
    assert!(show_text.stdout.contains(key_prefix(&key)), "{}", show_text.stdout);

    let secret = key_secret(&key);
    for run in [&list, &show, &list_text, &show_text] {
        assert!(!run.stdout.contains(secret), "the key's secret was shown:\n{}", run.stdout);
        assert!(!run.stderr.contains(secret), "the key's secret was logged:\n{}", run.stderr);
    }
    let database = work.database_bytes();
    assert!(
        !database.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the key's secret is stored in the database"
    );

    let deleted = work.run(&["sites", "delete", &id], &[]).await.assert_success();
    assert_eq!(deleted.stdout, format!("Deleted site {id}; its key no longer works.\n"));
    assert_eq!(deleted.stderr, "");
    assert_eq!(work.list_sites().await, json!([]));

    let again = work.run(&["sites", "delete", &id], &[]).await.assert_failure();
    assert_eq!(again.stdout, "");
    assert_eq!(again.stderr, format!("error: no site with id `{id}` (see `confab sites list`)\n"));
}

#[tokio::test]
async fn visitor_verification_accepts_one_token_form_and_changes_form_only_with_a_new_secret() {
    let work = Workdir::new();
    let created =
        work.create_site(&["--name", "Shop", "--origin", "https://shop.example"], &[]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let verification =
        |mode: &str, enabled: bool| json!({"enabled": enabled, "required": false, "mode": mode});
    let shown =
        || async { work.run(&["sites", "show", &id, "--json"], &[]).await.assert_success().json() };

    // New verification takes the HMAC form unless told otherwise.
    let made =
        work.run(&["sites", "verification", &id, "--new-secret"], &[]).await.assert_success();
    assert!(
        made.stdout.starts_with(&format!(
            "Site {id}: visitor tokens accepted in the hmac form only; unverified visitors allowed.\n"
        )),
        "{}",
        made.stdout
    );
    assert_eq!(shown().await["verification"], verification("hmac", true));

    // The form does not change under a secret that has issued tokens of the other one.
    let refused =
        work.run(&["sites", "verification", &id, "--mode", "jwt"], &[]).await.assert_failure();
    assert_eq!(
        refused.stderr,
        "error: mode: changing the visitor token mode from hmac to jwt needs a new secret (add \
         --new-secret): a secret that signed tokens of one form must never verify the other\n"
    );
    assert_eq!(shown().await["verification"], verification("hmac", true));
    let moved = work
        .run(&["sites", "verification", &id, "--mode", "jwt", "--new-secret"], &[])
        .await
        .assert_success();
    assert!(
        moved.stdout.contains("visitor tokens accepted as HS256 JWTs only"),
        "{}",
        moved.stdout
    );
    assert_eq!(shown().await["verification"], verification("jwt", true));
    // Rotating keeps the form.
    work.run(&["sites", "verification", &id, "--new-secret"], &[]).await.assert_success();
    assert_eq!(shown().await["verification"], verification("jwt", true));

    let unknown =
        work.run(&["sites", "verification", &id, "--mode", "HS256"], &[]).await.assert_failure();
    assert!(
        unknown.stderr.contains("`HS256` is not a visitor token mode: use hmac or jwt"),
        "{}",
        unknown.stderr
    );
    // Turning verification off forgets the form too: the next secret is for HMAC tokens again.
    work.run(&["sites", "verification", &id, "--off"], &[]).await.assert_success();
    assert_eq!(shown().await["verification"], verification("hmac", false));
}

// ---------------------------------------------------------------------------------------------
// `confab keys ...`
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_secret_key_is_created_listed_rotated_and_revoked_and_its_secret_shown_only_once() {
    let work = Workdir::new();
    let created = work
        .run(
            &[
                "keys",
                "create",
                "--name",
                "Backend",
                "--scope",
                "chat",
                "--scope",
                "models",
                "--rpm",
                "60",
                "--monthly-budget",
                "12.50",
                "--json",
            ],
            &[],
        )
        .await
        .assert_success()
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("confab_sk_"), "{key}");
    assert_eq!(created["scopes"], json!(["chat", "models"]));
    assert_eq!(created["rpm"], 60);
    assert_eq!(created["monthly_budget_micros"], 12_500_000);
    assert_eq!(created["active"], true);
    assert_eq!(created["last_used_at"], Value::Null);
    let secret = key.rsplit('_').next().unwrap().to_owned();

    let list = work.run(&["keys", "list", "--json"], &[]).await.assert_success();
    let listed = list.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["key_prefix"], key[..key.len() - secret.len() - 1]);
    let list_text = work.run(&["keys", "list"], &[]).await.assert_success();
    assert!(list_text.stdout.contains("Backend") && list_text.stdout.contains("never"));

    let rotated = work.run(&["keys", "rotate", &id, "--json"], &[]).await.assert_success().json();
    let new_key = rotated["key"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(rotated["previous_key_prefix"], listed[0]["key_prefix"]);

    let revoked = work.run(&["keys", "revoke", &id], &[]).await.assert_success();
    assert_eq!(revoked.stdout, format!("Revoked key {id}; it no longer works.\n"));
    let listed = work.run(&["keys", "list", "--json"], &[]).await.assert_success().json();
    assert_eq!(listed[0]["active"], false);
    let again = work.run(&["keys", "revoke", &id], &[]).await.assert_failure();
    assert_eq!(
        again.stderr,
        format!("error: no active key with id `{id}` (see `confab keys list`)\n")
    );

    for run in [&list, &list_text, &revoked] {
        assert!(!run.stdout.contains(&secret) && !run.stderr.contains(&secret));
    }
    let database = work.database_bytes();
    assert!(!database.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[tokio::test]
async fn creating_a_key_without_a_scope_or_with_a_bad_budget_fails_and_says_why() {
    let work = Workdir::new();
    let no_scope = work.run(&["keys", "create", "--name", "x"], &[]).await.assert_failure();
    assert!(no_scope.stderr.contains("--scope"), "{}", no_scope.stderr);
    let bad_scope = work
        .run(&["keys", "create", "--name", "x", "--scope", "admin"], &[])
        .await
        .assert_failure();
    assert!(
        bad_scope.stderr.contains("unknown scope `admin` (known: chat, models, usage, tools)"),
        "{}",
        bad_scope.stderr
    );
    let bad_budget = work
        .run(&["keys", "create", "--name", "x", "--scope", "chat", "--daily-budget", "1.2.3"], &[])
        .await
        .assert_failure();
    assert!(bad_budget.stderr.contains("is not an amount in dollars"), "{}", bad_budget.stderr);
    let zero = work
        .run(&["keys", "create", "--name", "x", "--scope", "chat", "--rpm", "0"], &[])
        .await
        .assert_failure();
    assert_eq!(zero.stderr, "error: rpm: must be at least 1 (leave it out for no limit)\n");
}

#[tokio::test]
async fn what_happens_to_client_instructions_is_set_at_creation_and_changed_by_update() {
    let work = Workdir::new();
    let args = ["--name", "Shop", "--origin", "https://shop.example"];
    let created =
        work.create_site(&[&args[..], &["--client-instructions", "reject"]].concat(), &[]).await;
    assert_eq!(created["client_instructions"], "reject");
    let id = created["id"].as_str().unwrap();
    work.run(&["sites", "update", id, "--client-instructions", "drop"], &[]).await.assert_success();
    let shown = work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json();
    assert_eq!(shown["client_instructions"], "drop");
    let bad = work
        .run(&["sites", "update", id, "--client-instructions", "obey"], &[])
        .await
        .assert_failure();
    assert!(bad.stderr.contains("possible values: layer, drop, reject"), "{}", bad.stderr);
}

#[tokio::test]
async fn grounding_is_prefer_by_default_set_at_creation_and_changed_by_update() {
    let work = Workdir::new();
    let args = ["--name", "Shop", "--origin", "https://shop.example"];
    let plain = work.create_site(&args, &[]).await;
    assert_eq!(plain["grounding"], "prefer");
    let created = work.create_site(&[&args[..], &["--grounding", "strict"]].concat(), &[]).await;
    assert_eq!(created["grounding"], "strict");
    let id = created["id"].as_str().unwrap();
    work.run(&["sites", "update", id, "--grounding", "prefer"], &[]).await.assert_success();
    let shown = work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json();
    assert_eq!(shown["grounding"], "prefer");
    let bad =
        work.run(&["sites", "update", id, "--grounding", "loose"], &[]).await.assert_failure();
    assert!(bad.stderr.contains("possible values: prefer, strict"), "{}", bad.stderr);
    let text = work.run(&["sites", "show", id], &[]).await.assert_success();
    assert!(text.stdout.contains("grounding:    prefer"), "{}", text.stdout);
}

#[tokio::test]
async fn conversation_settings_are_changed_by_update_and_conversations_managed_by_the_cli() {
    let work = Workdir::new();
    let created =
        work.create_site(&["--name", "Shop", "--origin", "https://shop.example"], &[]).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["conversations"]["transcripts"], false);
    // Hand-off needs transcripts: refused, and nothing changes.
    let bad = work.run(&["sites", "update", id, "--handoff", "on"], &[]).await.assert_failure();
    assert!(bad.stderr.contains("handoff: needs transcripts on"), "{}", bad.stderr);
    let args = [
        "sites",
        "update",
        id,
        "--transcripts",
        "on",
        "--handoff",
        "on",
        "--retention-days",
        "7",
        "--mask-contacts",
        "on",
        "--notice",
        "We keep chats for 7 days.",
    ];
    let shown = work.run(&args, &[]).await.assert_success();
    assert!(
        shown.stdout.contains("conversations: kept 7 days, contacts masked, hand-off"),
        "{}",
        shown.stdout
    );
    let shown = work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json();
    assert_eq!(
        shown["conversations"],
        json!({"transcripts": true, "retention_days": 7, "mask_contacts": true,
               "notice": "We keep chats for 7 days.", "handoff": true})
    );
    let bad =
        work.run(&["sites", "update", id, "--retention-days", "0"], &[]).await.assert_failure();
    assert!(bad.stderr.contains("retention_days"), "{}", bad.stderr);

    let listed = work.run(&["conversations", "list", "--json"], &[]).await.assert_success().json();
    assert_eq!(listed["data"], json!([]));
    let erased =
        work.run(&["conversations", "delete", "--visitor", "nobody"], &[]).await.assert_success();
    assert!(erased.stdout.contains("Deleted 0 conversation(s)"), "{}", erased.stdout);
    let missing = work.run(&["conversations", "show", "c_none_0000000000000"], &[]).await;
    assert!(missing.assert_failure().stderr.contains("no conversation"));
}

#[tokio::test]
async fn a_site_keeps_the_system_prompt_read_from_a_file() {
    let work = Workdir::new();
    let prompt = "You are the assistant of a small shop.\nAnswer in one sentence.\n";
    std::fs::write(work.path().join("prompt.txt"), prompt).unwrap();

    let created = work
        .create_site(
            &[
                "--name",
                "Shop",
                "--origin",
                "https://shop.example",
                "--system-prompt-file",
                "prompt.txt",
            ],
            &[],
        )
        .await;
    assert_eq!(created["system_prompt"], prompt);

    let id = created["id"].as_str().unwrap();
    let shown = work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json();
    assert_eq!(shown["system_prompt"], prompt);
    let text = work.run(&["sites", "show", id], &[]).await.assert_success();
    let expected_line = format!("  system prompt: {} characters", prompt.chars().count());
    assert!(text.stdout.lines().any(|l| l == expected_line), "{}", text.stdout);
}

#[tokio::test]
async fn widget_settings_are_set_at_creation_and_changed_by_update() {
    let work = Workdir::new();
    let created = work
        .create_site(
            &[
                "--name",
                "Shop",
                "--origin",
                "https://shop.example",
                "--title",
                "Shop help",
                "--suggestion",
                "Where is my order?",
                "--suggestion",
                "Do you ship abroad?",
                "--primary-color",
                "#1A73E8",
            ],
            &[],
        )
        .await;
    assert_eq!(
        created["widget"],
        json!({
            "title": "Shop help",
            "greeting": null,
            "suggestions": ["Where is my order?", "Do you ship abroad?"],
            "primary_color": "#1a73e8",
        })
    );
    let id = created["id"].as_str().unwrap();

    work.run(&["sites", "update", id, "--greeting", "Hello!", "--no-suggestions"], &[])
        .await
        .assert_success();
    let shown = work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json();
    assert_eq!(
        shown["widget"],
        json!({
            "title": "Shop help",
            "greeting": "Hello!",
            "suggestions": null,
            "primary_color": "#1a73e8",
        })
    );

    let refused = work
        .run(&["sites", "update", id, "--primary-color", "red;}*{display:none"], &[])
        .await
        .assert_failure();
    assert_eq!(
        refused.stderr.trim_end(),
        "error: primary_color: must be a colour like #1a73e8 or #17e"
    );
    let missing = work.run(&["sites", "update", "site_nope", "--title", "x"], &[]).await;
    assert_eq!(
        missing.assert_failure().stderr.trim_end(),
        "error: no site with id `site_nope` (see `confab sites list`)"
    );
}

#[tokio::test]
async fn creating_a_site_with_a_model_no_upstream_serves_fails_and_names_the_model() {
    let work = Workdir::new();
    let run = work
        .run(
            &[
                "sites",
                "create",
                "--name",
                "Shop",
                "--origin",
                "https://shop.example",
                "--model",
                "nope",
            ],
            &[],
        )
        .await
        .assert_failure();
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: model: `nope` is not served by any configured upstream (served: confab-demo)\n"
    );
    assert_eq!(work.list_sites().await, json!([]));
}

#[tokio::test]
async fn creating_a_site_with_an_origin_that_has_a_path_fails_and_names_the_origin() {
    let work = Workdir::new();
    let run = work
        .run(&["sites", "create", "--name", "Shop", "--origin", "https://shop.example/shop"], &[])
        .await
        .assert_failure();
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: origin: `https://shop.example/shop` must be an origin only (scheme, host and \
         port), without a path\n"
    );
    assert_eq!(work.list_sites().await, json!([]));
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wrongly_typed_field_in_the_config_file_stops_start_up_and_is_named() {
    let work = Workdir::new();
    std::fs::write(work.path().join("confab.toml"), "[timeouts]\nidle_ms = \"soon\"\n").unwrap();

    let run = work.run(&["serve", "--listen", "127.0.0.1:0"], &[]).await.assert_failure();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("error: invalid configuration: "), "{}", run.stderr);
    assert!(run.stderr.contains("timeouts.idle_ms"), "{}", run.stderr);
    assert!(run.stderr.contains("confab.toml"), "{}", run.stderr);
    assert!(!work.path().join("confab.db").exists(), "the database was opened anyway");
}

#[tokio::test]
async fn an_invalid_value_from_the_environment_stops_start_up_and_is_named() {
    let work = Workdir::new();
    let run = work
        .run(&["serve", "--listen", "127.0.0.1:0"], &[("CONFAB__SERVER__HEARTBEAT_MS", "0")])
        .await
        .assert_failure();
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: invalid configuration: `server.heartbeat_ms` must be greater than 0\n"
    );
    assert!(!work.path().join("confab.db").exists(), "the database was opened anyway");
}

#[tokio::test]
async fn a_config_file_that_does_not_exist_stops_start_up_and_is_named() {
    let work = Workdir::new();
    let run = work
        .run(&["--config", "missing.toml", "serve", "--listen", "127.0.0.1:0"], &[])
        .await
        .assert_failure();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "error: config file missing.toml does not exist\n");
}

#[tokio::test]
async fn an_environment_variable_overrides_the_demo_model() {
    let work = Workdir::new();
    let created = work
        .create_site(
            &["--name", "A", "--origin", "https://a.example"],
            &[("CONFAB__DEMO__MODEL", "house-model")],
        )
        .await;
    assert_eq!(created["models"], json!(["house-model"]));
}

// ---------------------------------------------------------------------------------------------
// `confab serve`
// ---------------------------------------------------------------------------------------------

/// Polls `GET /v1/models` with `key` until it answers `status` (bounded by `WAIT`).
async fn wait_for_models_status(relay: &Relay, key: &str, status: StatusCode) {
    let client = http_client();
    let answered = timeout(WAIT, async {
        loop {
            let response =
                client.get(relay.url("/v1/models")).bearer_auth(key).send().await.unwrap();
            if response.status() == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(answered.is_ok(), "the relay never answered {status} to the key");
}

#[tokio::test]
async fn keys_created_and_revoked_with_the_cli_apply_to_a_relay_already_running() {
    let work = Workdir::new();
    let relay = Relay::start(&work, &[]).await;
    // The relay has read its keys (a request with the demo key) before the CLI adds one.
    let client = http_client();
    let demo = client
        .get(relay.url("/v1/models"))
        .bearer_auth(&relay.key)
        .header(ORIGIN, relay.own_origin())
        .send()
        .await
        .unwrap();
    assert_eq!(demo.status(), StatusCode::OK);

    let created = work
        .run(&["keys", "create", "--name", "Backend", "--scope", "models", "--json"], &[])
        .await
        .assert_success()
        .json();
    let key = created["key"].as_str().unwrap().to_owned();
    wait_for_models_status(&relay, &key, StatusCode::OK).await;

    let id = created["id"].as_str().unwrap();
    work.run(&["keys", "revoke", id], &[]).await.assert_success();
    wait_for_models_status(&relay, &key, StatusCode::UNAUTHORIZED).await;
    // Revoked for good: it does not come back on a later reload.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = client.get(relay.url("/v1/models")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    relay.kill().await;
}

#[tokio::test]
async fn serving_with_no_config_creates_a_demo_site_whose_key_streams_an_answer() {
    let work = Workdir::new();
    let relay = Relay::start(&work, &[("CONFAB__DEMO__TOKEN_DELAY_MS", "0")]).await;
    assert_eq!(relay.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(relay.addr.port(), 0);
    assert_eq!(relay.demo_origins, relay.own_origin());
    assert!(relay.demo_site_id.starts_with("site_"), "{}", relay.demo_site_id);
    assert!(is_site_key(&relay.key), "{}", relay.key);

    let client = http_client();
    let health = client.get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(json_body(health).await, json!({"status": "ok"}));

    let question = "Does the demo site answer?";
    let messages = json!([{"role": "user", "content": question}]);
    let origin = relay.own_origin();

    let whole =
        post_chat(&client, &relay, &relay.key, &origin, &json!({"messages": messages})).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let completion = json_body(whole).await;
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], DEMO_MODEL);
    let expected_text = completion["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(expected_text.contains(question), "{expected_text}");
    assert_usage_adds_up(&completion["usage"]);

    let streamed = post_chat(
        &client,
        &relay,
        &relay.key,
        &origin,
        &json!({"stream": true, "messages": messages}),
    )
    .await;
    assert_eq!(streamed.status(), StatusCode::OK);
    assert_eq!(content_type(&streamed), "text/event-stream");
    let (text, usage) = check_stream(&read_events(streamed).await);
    assert_eq!(text, expected_text);
    assert_eq!(usage, completion["usage"]);

    let sites = work.list_sites().await;
    assert_eq!(sites.as_array().map(Vec::len), Some(1), "{sites}");
    assert_eq!(sites[0]["id"], relay.demo_site_id);
    assert_eq!(sites[0]["origins"], json!([origin]));
    assert_eq!(sites[0]["key_prefix"], key_prefix(&relay.key));

    relay.kill().await;
}

#[tokio::test]
async fn restarting_the_relay_re_keys_the_demo_site_instead_of_adding_another() {
    let work = Workdir::new();
    // A fixed public URL keeps the demo site's origin the same across the two random ports.
    let envs = [
        ("CONFAB__DEMO__TOKEN_DELAY_MS", "0"),
        ("CONFAB__SERVER__PUBLIC_URL", "http://relay.test"),
    ];
    let client = http_client();
    let body = json!({"messages": [{"role": "user", "content": "Hello again"}]});

    let first = Relay::start(&work, &envs).await;
    assert_eq!(first.demo_origins, "http://relay.test");
    let (old_key, site_id) = (first.key.clone(), first.demo_site_id.clone());
    let answered = post_chat(&client, &first, &old_key, "http://relay.test", &body).await;
    assert_eq!(answered.status(), StatusCode::OK);
    let status = first.terminate().await;
    assert!(status.success(), "{status}");

    let second = Relay::start(&work, &envs).await;
    assert_eq!(second.demo_site_id, site_id);
    assert_eq!(second.demo_origins, "http://relay.test");
    assert!(is_site_key(&second.key), "{}", second.key);
    assert_ne!(second.key, old_key);

    let old = post_chat(&client, &second, &old_key, "http://relay.test", &body).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(old).await, invalid_key_envelope());
    let new = post_chat(&client, &second, &second.key, "http://relay.test", &body).await;
    assert_eq!(new.status(), StatusCode::OK);
    assert_eq!(json_body(new).await["object"], "chat.completion");

    let sites = work.list_sites().await;
    assert_eq!(sites.as_array().map(Vec::len), Some(1), "{sites}");
    assert_eq!(sites[0]["id"], site_id);
    assert_eq!(sites[0]["key_prefix"], key_prefix(&second.key));

    second.kill().await;
}

#[tokio::test]
async fn restarting_the_relay_at_another_address_moves_the_demo_site_there() {
    let work = Workdir::new();
    let envs = [("CONFAB__DEMO__TOKEN_DELAY_MS", "0")];
    Relay::start(&work, &envs).await.kill().await;

    let second = Relay::start(&work, &envs).await;
    assert_eq!(second.demo_origins, second.own_origin());
    let body = json!({"messages": [{"role": "user", "content": "Hello again"}]});
    let response =
        post_chat(&http_client(), &second, &second.key, &second.own_origin(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(work.list_sites().await[0]["origins"], json!([second.own_origin()]));

    second.kill().await;
}

#[tokio::test]
async fn a_public_url_with_a_path_gives_the_demo_site_that_url_s_origin() {
    let work = Workdir::new();
    let relay = Relay::start(
        &work,
        &[
            ("CONFAB__DEMO__TOKEN_DELAY_MS", "0"),
            ("CONFAB__SERVER__PUBLIC_URL", "https://relay.example/confab"),
        ],
    )
    .await;
    assert_eq!(relay.demo_origins, "https://relay.example");
    relay.kill().await;
}

#[tokio::test]
async fn sigterm_sent_as_soon_as_the_relay_reports_ready_still_stops_it_gracefully() {
    // The window is short; repeat so that the race shows reliably.
    for _ in 0..20 {
        let work = Workdir::new();
        let relay = Relay::start(&work, &[]).await;
        let status = relay.terminate().await;
        assert!(status.success(), "the relay exited with {status} after SIGTERM");
    }
}

#[tokio::test]
async fn sigterm_lets_an_answer_in_flight_finish_then_the_relay_exits_successfully() {
    let work = Workdir::new();
    // Slow enough that the answer is still streaming when the signal arrives.
    let relay = Relay::start(&work, &[("CONFAB__DEMO__TOKEN_DELAY_MS", "20")]).await;
    let body = json!({"stream": true, "messages": [{"role": "user", "content": "Still there?"}]});
    let response = post_chat(&http_client(), &relay, &relay.key, &relay.own_origin(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.bytes_stream().eventsource();
    let first = timeout(WAIT, events.next()).await.unwrap().unwrap().unwrap();

    let terminated = tokio::spawn(relay.terminate());

    let rest: Vec<Event> =
        timeout(WAIT, events.map(Result::unwrap).collect()).await.expect("the stream stalled");
    let all: Vec<Event> = std::iter::once(first).chain(rest).collect();
    let (text, usage) = check_stream(&all);
    assert!(text.contains("Still there?"), "{text}");
    assert_usage_adds_up(&usage);

    let status = terminated.await.unwrap();
    assert!(status.success(), "the relay exited with {status} after SIGTERM");
}

#[tokio::test]
async fn the_admin_api_can_listen_on_its_own_address_and_only_there() {
    let work = Workdir::new();
    let token = "an-admin-token-of-enough-length";
    let envs = [("CONFAB_ADMIN_TOKEN", token), ("CONFAB__ADMIN__LISTEN", "127.0.0.1:0")];
    // A built console where `admin.console_dir` looks by default.
    std::fs::create_dir_all(work.path().join("dist/console")).unwrap();
    std::fs::write(work.path().join("dist/console/index.html"), "<!DOCTYPE html><title>c</title>")
        .unwrap();
    let mut relay = Relay::start(&work, &envs).await;
    let admin = relay.line_starting_with("Admin API: ").await;
    let admin = admin.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
    let client = http_client();
    // The start-up text says where the console is: on the admin listener.
    let console = relay.line_starting_with("Console: ").await;
    let console = console.split_whitespace().next().unwrap().to_owned();
    assert_eq!(console, format!("{}/console/", admin.trim_end_matches("/admin/v1")));
    let page = client.get(&console).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let sites = client.get(format!("{admin}/sites")).bearer_auth(token).send().await.unwrap();
    assert_eq!(sites.status(), StatusCode::OK);
    let listed = json_body(sites).await;
    assert_eq!(listed["data"][0]["id"], relay.demo_site_id.as_str());
    // The public listener does not serve it, and nothing warns that it does.
    let public = client.get(relay.url("/admin/v1/sites")).bearer_auth(token).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert!(!read_log(&relay.stderr_log).contains(SHARED_ADMIN_WARNING));
    assert!(relay.terminate().await.success());
}

#[tokio::test]
async fn sigterm_under_load_loses_no_usage_record_of_a_completed_request() {
    let work = Workdir::new();
    // Records are written in batches this far apart, so every one of them is still in memory
    // when the signal arrives: only the shutdown flush can save them.
    let envs = [("CONFAB__USAGE__FLUSH_MS", "600000"), ("CONFAB__DEMO__TOKEN_DELAY_MS", "1")];
    let relay = Relay::start(&work, &envs).await;
    let client = http_client();
    let body = json!({"messages": [{"role": "user", "content": "Count me"}]});
    let origin = relay.own_origin();
    let completed = futures_util::future::join_all(
        (0..12).map(|_| post_chat(&client, &relay, &relay.key, &origin, &body)),
    )
    .await;
    for response in completed {
        assert_eq!(response.status(), StatusCode::OK);
        let _ = json_body(response).await;
    }
    // More load while the signal arrives: streams in flight finish within the grace period.
    let stream = json!({"stream": true, "messages": [{"role": "user", "content": "And me"}]});
    let in_flight = post_chat(&client, &relay, &relay.key, &relay.own_origin(), &stream).await;
    assert_eq!(in_flight.status(), StatusCode::OK);
    let status = relay.terminate().await;
    assert!(status.success(), "the relay exited with {status}");
    let _ = in_flight.bytes().await;

    let usage = work.run(&["usage", "--days", "1", "--json"], &[]).await.assert_success().json();
    assert_eq!(usage["totals"]["requests"], 13, "{usage}");
    assert_eq!(usage["by_model"][DEMO_MODEL]["requests"], 13);
    assert_eq!(usage["days"].as_array().unwrap().len(), 1);
}

/// The usage records in a work directory's database, oldest first.
async fn stored_usage(work: &Workdir) -> Vec<UsageRecord> {
    let url = format!("sqlite://{}", work.path().join("confab.db").display());
    let store = SqliteStore::open(&url, 1).await.unwrap();
    store.usage_since(0, None, None).await.unwrap()
}

/// How many lines the reservation journal in `dir` holds, in all its segments.
fn journal_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .map(|path| std::fs::read_to_string(path).unwrap().lines().count())
        .sum()
}

#[tokio::test]
async fn sigterm_with_a_stream_outliving_the_grace_period_still_writes_every_usage_record() {
    let work = Workdir::new();
    // Records are written in batches far apart, so the finished ones are still in memory when
    // the signal arrives; one token every 300 ms, so a 50-token answer outlives the 1 s grace.
    let envs = [
        ("CONFAB__USAGE__FLUSH_MS", "600000"),
        ("CONFAB__SERVER__SHUTDOWN_GRACE_MS", "1000"),
        ("CONFAB__DEMO__TOKEN_DELAY_MS", "300"),
    ];
    let relay = Relay::start(&work, &envs).await;
    let client = http_client();
    let origin = relay.own_origin();
    let short = json!({"max_tokens": 2, "messages": [{"role": "user", "content": "Count me"}]});
    let finished = futures_util::future::join_all(
        (0..3).map(|_| post_chat(&client, &relay, &relay.key, &origin, &short)),
    )
    .await;
    for response in finished {
        assert_eq!(response.status(), StatusCode::OK);
        let _ = json_body(response).await;
    }
    let long = json!({"stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let response = post_chat(&client, &relay, &relay.key, &origin, &long).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.bytes_stream().eventsource();
    let _first = timeout(WAIT, events.next()).await.unwrap().unwrap().unwrap();

    let status = relay.terminate().await;
    assert!(status.success(), "the relay exited with {status}");
    // The stream was cut short with an error event, not left hanging.
    let rest: Vec<Event> =
        timeout(WAIT, events.filter_map(|e| async { e.ok() }).collect()).await.unwrap();
    let last = rest.last().expect("the stream ended without an event");
    assert_eq!(last.event, "error", "{rest:?}");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(error["error"]["code"], "relay_shutting_down");

    let records = stored_usage(&work).await;
    let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Completed, Outcome::Completed, Outcome::Completed, Outcome::Interrupted],
        "{records:?}"
    );
    let cut = &records[3];
    assert!(cut.estimated && cut.input_tokens > 0 && cut.output_tokens > 0, "{cut:?}");
    let usage = work.run(&["usage", "--days", "1", "--json"], &[]).await.assert_success().json();
    assert_eq!(usage["totals"]["requests"], 4, "{usage}");
}

#[tokio::test]
async fn a_relay_that_cannot_write_its_records_at_shutdown_exits_non_zero_and_says_so() {
    let work = Workdir::new();
    let relay = Relay::start(&work, &[("CONFAB__USAGE__FLUSH_MS", "600000")]).await;
    let body = json!({"max_tokens": 2, "messages": [{"role": "user", "content": "Count me"}]});
    let response = post_chat(&http_client(), &relay, &relay.key, &relay.own_origin(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let _ = json_body(response).await;
    // The request's final record waits in memory; the table it goes to disappears under the
    // relay (as far as the relay can tell, the disk failed).
    let url = format!("sqlite://{}", work.path().join("confab.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE usage RENAME TO usage_elsewhere").execute(&pool).await.unwrap();
    pool.close().await;

    let log = relay.stderr_log.clone();
    let status = relay.terminate().await;
    assert!(!status.success(), "a relay that lost records exited with {status}");
    let stderr = read_log(&log);
    assert!(stderr.contains("could not all be written at shutdown"), "{stderr}");
}

#[tokio::test]
async fn a_relay_that_cannot_write_its_webhook_events_at_shutdown_exits_non_zero() {
    let work = Workdir::new();
    // An endpoint that wants every finished request (nobody listens there: the events only
    // have to reach the outbox).
    std::fs::write(
        work.path().join("confab.toml"),
        "[[webhooks.endpoints]]\nurl = \"http://127.0.0.1:9/hook\"\n\
         secret_env = \"CONFAB_TEST_WEBHOOK_SECRET\"\nevents = [\"request.completed\"]\n",
    )
    .unwrap();
    let envs = [("CONFAB_TEST_WEBHOOK_SECRET", "a-secret-of-twenty-chars")];
    let relay = Relay::start(&work, &envs).await;
    // The outbox disappears under the relay before the request's event is written.
    let url = format!("sqlite://{}", work.path().join("confab.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE webhook_events RENAME TO webhook_events_elsewhere")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let body = json!({"max_tokens": 2, "messages": [{"role": "user", "content": "Count me"}]});
    let response = post_chat(&http_client(), &relay, &relay.key, &relay.own_origin(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let _ = json_body(response).await;

    let log = relay.stderr_log.clone();
    let status = relay.terminate().await;
    assert!(!status.success(), "a relay that lost webhook events exited with {status}");
    let stderr = read_log(&log);
    assert!(stderr.contains("cannot record webhook events"), "{stderr}");
    assert!(stderr.contains("could not all be written at shutdown"), "{stderr}");
    // The usage record itself was written.
    assert_eq!(stored_usage(&work).await.len(), 1);
}

#[tokio::test]
async fn a_relay_killed_during_priced_streams_charges_their_worst_case_after_restart() {
    let work = Workdir::new();
    // One micro-dollar per token, so costs equal token counts.
    std::fs::write(
        work.path().join("confab.toml"),
        "[prices.\"confab-demo\"]\ninput_per_million = 1000000\noutput_per_million = 1000000\n",
    )
    .unwrap();
    let envs = [("CONFAB__DEMO__TOKEN_DELAY_MS", "500")];
    let relay = Relay::start(&work, &envs).await;
    let client = http_client();
    let origin = relay.own_origin();
    let body = json!({"stream": true, "max_tokens": 40,
        "messages": [{"role": "user", "content": "A long answer, please"}]});
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = post_chat(&client, &relay, &relay.key, &origin, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut events = response.bytes_stream().eventsource();
        let _first = timeout(WAIT, events.next()).await.unwrap().unwrap().unwrap();
        streams.push(events);
    }
    relay.kill().await;
    drop(streams);

    // Nothing settled them, and nothing reached the database: the lines written to the
    // reservation journal before each upstream call hold the worst case.
    assert!(stored_usage(&work).await.is_empty());
    let journal = work.path().join("confab.db.reservations");
    let lines = journal_lines(&journal);
    assert_eq!(lines, 3, "one journal line per running request");

    // At the next start they are settled as interrupted, at that worst case.
    let restarted = Relay::start(&work, &envs).await;
    assert!(restarted.terminate().await.success());
    let records = stored_usage(&work).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for record in &records {
        assert_eq!(record.outcome, Outcome::Interrupted);
        assert!(record.estimated);
        assert_eq!(record.output_tokens, 40, "all of max_tokens: {record:?}");
        assert!(record.input_tokens > 0);
        assert_eq!(record.cost_micros, record.input_tokens + 40);
    }
    // Settled, so the previous run's journal is gone; the new run leaves an empty segment.
    let left = journal_lines(&journal);
    assert_eq!(left, 0);
    let expected: u64 = records.iter().map(|r| r.cost_micros).sum();
    let usage = work.run(&["usage", "--days", "1", "--json"], &[]).await.assert_success().json();
    assert_eq!(usage["totals"]["requests"], 3, "{usage}");
    assert_eq!(usage["totals"]["cost_micros"], expected, "{usage}");
}

// ---------------------------------------------------------------------------------------------
// Conformance with the official `openai` Python package
// ---------------------------------------------------------------------------------------------

/// The Python with the `openai` package: `CONFAB_PYTHON`, or the workspace's `.venv`.
fn conformance_python() -> PathBuf {
    let python = std::env::var_os("CONFAB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python for the conformance test at {}: run `scripts/test`, which creates .venv with \
         the `openai` package (or set CONFAB_PYTHON to a Python that has it)",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_official_openai_python_client_works_against_the_relay() {
    let python = conformance_python();
    let script = workspace_root().join("tests/conformance/openai_client.py");
    assert!(script.exists(), "missing {}", script.display());

    let work = Workdir::new();
    let site = work.create_site(&["--name", "Native app", "--allow-no-origin"], &[]).await;
    assert_eq!(site["allow_no_origin"], true);
    assert_eq!(site["origins"], json!([]));
    let key = site["key"].as_str().unwrap().to_owned();
    // A second one with knowledge: its streamed answers carry the sources chunk.
    let grounded = work.create_site(&["--name", "Grounded app", "--allow-no-origin"], &[]).await;
    let grounded_key = grounded["key"].as_str().unwrap().to_owned();
    let notes = work.path().join("conformance.md");
    std::fs::write(&notes, "# Conformance\n\nThe conformance check asks the relay a question.\n")
        .unwrap();
    let grounded_id = grounded["id"].as_str().unwrap();
    let notes_path = notes.to_str().unwrap();
    work.run(&["knowledge", "add", grounded_id, notes_path], &[]).await.assert_success();

    let relay = Relay::start(&work, &[("CONFAB__DEMO__TOKEN_DELAY_MS", "1")]).await;
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .current_dir(work.path())
        .env("CONFAB_BASE_URL", relay.url("/v1"))
        .env("CONFAB_API_KEY", &key)
        .env("CONFAB_GROUNDED_API_KEY", &grounded_key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Loopback traffic must not go through a proxy from the environment.
    for proxy in
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
    {
        command.env_remove(proxy);
    }
    let output = timeout(CONFORMANCE_WAIT, command.output())
        .await
        .expect("the conformance script did not finish in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        python.display(),
        script.display(),
        output.status
    );
    println!("{stdout}");

    relay.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Operator safety: changes that keep what they do not mention, rotation with a chosen grace,
// origins added and removed one by one
// ---------------------------------------------------------------------------------------------

/// `confab sites show ID --json`'s `limits` object.
async fn site_limits(work: &Workdir, id: &str) -> Value {
    work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json()["limits"].clone()
}

#[tokio::test]
async fn setting_one_site_limit_keeps_the_others_and_clear_removes_only_the_one_named() {
    let work = Workdir::new();
    let created =
        work.create_site(&["--name", "Shop", "--origin", "https://shop.example"], &[]).await;
    let id = created["id"].as_str().unwrap();

    work.run(&["sites", "limits", id, "--monthly-budget", "5", "--visitor-rpm", "7"], &[])
        .await
        .assert_success();
    work.run(&["sites", "limits", id, "--rpm", "10"], &[]).await.assert_success();
    let limits = site_limits(&work, id).await;
    assert_eq!(
        (&limits["rpm"], &limits["monthly_budget_micros"], &limits["visitor_rpm"]),
        (&json!(10), &json!(5_000_000), &json!(7)),
        "{limits}"
    );

    work.run(&["sites", "limits", id, "--clear", "monthly-budget"], &[]).await.assert_success();
    let limits = site_limits(&work, id).await;
    assert_eq!(
        (&limits["rpm"], &limits["monthly_budget_micros"], &limits["visitor_rpm"]),
        (&json!(10), &Value::Null, &json!(7)),
        "{limits}"
    );
    work.run(&["sites", "limits", id, "--clear", "rpm", "--clear", "visitor-rpm"], &[])
        .await
        .assert_success();
    assert_eq!(
        site_limits(&work, id).await,
        json!({
            "rpm": null, "rpd": null, "tpm": null,
            "monthly_budget_micros": null, "daily_budget_micros": null,
            "visitor_rpm": null, "visitor_rpd": null,
            "verified_rpm": null, "verified_rpd": null,
        })
    );

    let both = work
        .run(&["sites", "limits", id, "--rpm", "5", "--clear", "rpm"], &[])
        .await
        .assert_failure();
    assert_eq!(
        both.stderr,
        "error: --rpm and --clear rpm contradict each other; give one of them\n"
    );
    let help = work.run(&["sites", "limits", "--help"], &[]).await.assert_success();
    assert!(help.stdout.contains("keep their current value"), "{}", help.stdout);
    assert!(help.stdout.contains("--clear <LIMIT>"), "{}", help.stdout);
}

#[tokio::test]
async fn a_key_rotated_with_no_grace_stops_its_old_secret_on_a_running_relay() {
    let work = Workdir::new();
    let relay = Relay::start(&work, &[]).await;
    let created = work
        .run(&["keys", "create", "--name", "Backend", "--scope", "models", "--json"], &[])
        .await
        .assert_success()
        .json();
    let id = created["id"].as_str().unwrap();
    let first = created["key"].as_str().unwrap();
    wait_for_models_status(&relay, first, StatusCode::OK).await;

    // The default grace is `keys.rotation_grace_secs` (a day).
    let rotated = work.run(&["keys", "rotate", id, "--json"], &[]).await.assert_success().json();
    let second = rotated["key"].as_str().unwrap().to_owned();
    let until = rotated["previous_expires_at"].as_str().unwrap();
    assert!(until > rfc3339_in(86_000).as_str(), "{until}");
    wait_for_models_status(&relay, &second, StatusCode::OK).await;
    wait_for_models_status(&relay, first, StatusCode::OK).await;

    let rotated = work.run(&["keys", "rotate", id, "--grace", "0"], &[]).await.assert_success();
    assert!(
        rotated.stdout.contains("New secret (shown once); the previous one no longer works:"),
        "{}",
        rotated.stdout
    );
    wait_for_models_status(&relay, &second, StatusCode::UNAUTHORIZED).await;
    relay.kill().await;
}

/// The RFC 3339 UTC time `secs` seconds from now, as the CLI prints times (so that the strings
/// compare in time order).
fn rfc3339_in(secs: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    confab_server::rfc3339(i64::try_from(now.as_secs()).unwrap() + secs)
}

#[tokio::test]
async fn origins_are_added_and_removed_normalised_and_the_last_one_is_kept() {
    let work = Workdir::new();
    let created =
        work.create_site(&["--name", "Shop", "--origin", "https://shop.example"], &[]).await;
    let id = created["id"].as_str().unwrap();
    let origins = async || {
        work.run(&["sites", "show", id, "--json"], &[]).await.assert_success().json()["origins"]
            .clone()
    };

    work.run(
        &[
            "sites",
            "origins",
            id,
            "--add",
            "https://WWW.Shop.Example:443/",
            "--add",
            "http://x.example",
        ],
        &[],
    )
    .await
    .assert_success();
    assert_eq!(
        origins().await,
        json!(["https://shop.example", "https://www.shop.example", "http://x.example"])
    );
    work.run(
        &[
            "sites",
            "origins",
            id,
            "--remove",
            "https://shop.example",
            "--remove",
            "http://x.example",
        ],
        &[],
    )
    .await
    .assert_success();
    assert_eq!(origins().await, json!(["https://www.shop.example"]));

    let last = work
        .run(&["sites", "origins", id, "--remove", "https://www.shop.example"], &[])
        .await
        .assert_failure();
    assert_eq!(
        last.stderr,
        format!(
            "error: origin: cannot remove the last origin of site {id}: its key would work from \
             nowhere (add another origin first, or delete the site)\n"
        )
    );
    let unknown = work
        .run(&["sites", "origins", id, "--remove", "https://other.example"], &[])
        .await
        .assert_failure();
    assert_eq!(
        unknown.stderr,
        format!(
            "error: origin: `https://other.example` is not an origin of site {id} (it lists: \
             https://www.shop.example)\n"
        )
    );
    let path = work
        .run(&["sites", "origins", id, "--add", "https://shop.example/cart"], &[])
        .await
        .assert_failure();
    assert!(path.stderr.contains("must be an origin only"), "{}", path.stderr);
    assert_eq!(
        origins().await,
        json!(["https://www.shop.example"]),
        "a refused change changes nothing"
    );

    // A site that accepts calls without an Origin may be left with none.
    let native = work
        .create_site(
            &["--name", "App", "--origin", "https://app.example", "--allow-no-origin"],
            &[],
        )
        .await;
    let native_id = native["id"].as_str().unwrap();
    work.run(&["sites", "origins", native_id, "--remove", "https://app.example"], &[])
        .await
        .assert_success();
    let shown =
        work.run(&["sites", "show", native_id, "--json"], &[]).await.assert_success().json();
    assert_eq!(shown["origins"], json!([]));
}

#[tokio::test]
async fn a_rekeyed_site_keeps_its_old_key_for_the_grace_period_on_a_running_relay() {
    let work = Workdir::new();
    let relay = Relay::start(&work, &[]).await;
    let created = work
        .create_site(
            &["--name", "App", "--origin", "https://app.example", "--allow-no-origin"],
            &[],
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let old = created["key"].as_str().unwrap();
    wait_for_models_status(&relay, old, StatusCode::OK).await;

    let rekeyed = work.run(&["sites", "rekey", id, "--json"], &[]).await.assert_success().json();
    let new = rekeyed["key"].as_str().unwrap().to_owned();
    assert!(is_site_key(&new) && new != old, "{new}");
    assert_eq!(rekeyed["previous_key_prefix"], key_prefix(old));
    let until = rekeyed["previous_key_expires_at"].as_str().unwrap();
    assert!(until > rfc3339_in(86_000).as_str(), "the default grace is a day: {until}");
    wait_for_models_status(&relay, &new, StatusCode::OK).await;
    wait_for_models_status(&relay, old, StatusCode::OK).await;

    let again = work.run(&["sites", "rekey", id, "--grace", "0"], &[]).await.assert_success();
    assert!(
        again.stdout.contains("New site key (shown once; the previous key no longer works):"),
        "{}",
        again.stdout
    );
    wait_for_models_status(&relay, &new, StatusCode::UNAUTHORIZED).await;
    relay.kill().await;
}

const SHARED_ADMIN_WARNING: &str = "the admin API is served on the public listener";

#[tokio::test]
async fn an_admin_api_on_the_public_listener_is_warned_about_once_at_start() {
    let work = Workdir::new();
    let envs = [("CONFAB_ADMIN_TOKEN", "an-admin-token-of-enough-length")];
    let relay = Relay::start(&work, &envs).await;
    // The warning is written before the address is printed, so it is in the log by now.
    let log = read_log(&relay.stderr_log);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(SHARED_ADMIN_WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("set admin.listen (CONFAB__ADMIN__LISTEN)"), "{}", warnings[0]);
    // Requests do not repeat it.
    let client = http_client();
    for _ in 0..3 {
        client.get(relay.url("/healthz")).send().await.unwrap();
    }
    assert_eq!(read_log(&relay.stderr_log).matches(SHARED_ADMIN_WARNING).count(), 1);
    relay.kill().await;

    // Without an admin token there is no admin API, and no warning.
    let work = Workdir::new();
    let relay = Relay::start(&work, &[]).await;
    assert!(!read_log(&relay.stderr_log).contains(SHARED_ADMIN_WARNING));
    relay.kill().await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id_and_integer_timings() {
    let work = Workdir::new();
    let envs = [("CONFAB__DEMO__TOKEN_DELAY_MS", "0"), ("CONFAB__LOG__FORMAT", "json")];
    let relay = Relay::start(&work, &envs).await;
    let client = http_client();
    let origin = relay.own_origin();
    let body = json!({"messages": [{"role": "user", "content": "Hello"}]});
    let response = post_chat(&client, &relay, &relay.key, &origin, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    json_body(response).await;
    let stderr_log = relay.stderr_log.clone();
    assert!(relay.terminate().await.success());

    let log = read_log(&stderr_log);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().any(|line| line["message"] == "relay started"), "{log}");
    let request = lines
        .iter()
        .find(|line| line["message"] == "request" && line["span"]["path"] == "/v1/chat/completions")
        .unwrap_or_else(|| panic!("no request line in:\n{log}"));
    assert_eq!(request["span"]["request_id"], request_id.as_str());
    assert_eq!(request["status"], 200);
    assert!(request["latency_us"].is_u64(), "{request}");
    // Every timing any line carries is an integer, with its unit in its name.
    for line in &lines {
        for (field, value) in line.as_object().unwrap() {
            if field.ends_with("_ms") || field.ends_with("_us") || field.ends_with("_secs") {
                assert!(value.is_u64(), "{field} is not an integer in {line}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// `args` with `--database URL` in front.
fn on_database<'a>(url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--database", url], args].concat()
}

#[tokio::test]
async fn the_cli_the_admin_api_and_a_relay_share_one_postgresql_database() {
    let work = Workdir::new();
    let url = confab_tests::servers::postgres().database();
    let site = work
        .create_site(
            &on_database(&url, &["--name", "Shop", "--origin", "https://shop.example"]),
            &[],
        )
        .await;
    let created = work
        .run(
            &on_database(
                &url,
                &["keys", "create", "--name", "Backend", "--scope", "models", "--json"],
            ),
            &[],
        )
        .await
        .assert_success()
        .json();
    let (key, key_id) = (created["key"].as_str().unwrap(), created["id"].as_str().unwrap());

    // A relay on the same database knows the key the CLI made, and hears of its revocation.
    let token = "an-admin-token-of-enough-length";
    let envs = [
        ("CONFAB__DATABASE__URL", url.as_str()),
        ("CONFAB_ADMIN_TOKEN", token),
        ("CONFAB__DEMO__TOKEN_DELAY_MS", "0"),
    ];
    let relay = Relay::start(&work, &envs).await;
    wait_for_models_status(&relay, key, StatusCode::OK).await;
    work.run(&on_database(&url, &["keys", "revoke", key_id]), &[]).await.assert_success();
    wait_for_models_status(&relay, key, StatusCode::UNAUTHORIZED).await;

    // A site made through the admin API is one the CLI lists, beside the CLI's and the demo's.
    let client = http_client();
    let made = client
        .post(relay.url("/admin/v1/sites"))
        .bearer_auth(token)
        .json(&json!({"name": "Blog", "origins": ["https://blog.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let blog = json_body(made).await;
    let listed = work.run(&on_database(&url, &["sites", "list", "--json"]), &[]).await;
    let listed = listed.assert_success().json();
    let mut ids: Vec<&str> =
        listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected =
        [site["id"].as_str().unwrap(), blog["id"].as_str().unwrap(), &relay.demo_site_id];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // A request's usage is recorded there, and the CLI reports it.
    let body = json!({"max_tokens": 2, "messages": [{"role": "user", "content": "Hello"}]});
    let response = post_chat(&client, &relay, &relay.key, &relay.own_origin(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    json_body(response).await;
    assert!(relay.terminate().await.success());
    let usage = work.run(&on_database(&url, &["usage", "--days", "1", "--json"]), &[]).await;
    let usage = usage.assert_success().json();
    assert_eq!(usage["totals"]["requests"], 1, "{usage}");

    assert!(!work.path().join("confab.db").exists(), "nothing went to SQLite");
    assert!(work.path().join("confab.reservations").is_dir(), "the relay's own journal");
}

/// `envs` as `Relay::start` takes them.
fn borrowed<'a>(envs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    envs.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

#[tokio::test]
async fn a_relay_killed_mid_stream_frees_its_reservation_within_the_lease_and_the_other_serves_on()
{
    let work = Workdir::new();
    let url = confab_tests::servers::postgres().database();
    let redis = confab_tests::servers::RedisServer::start();
    // One micro-dollar a token. The request below may cost at most 28 (its prompt's ceiling) +
    // 40 (max_tokens) = 68 micro-dollars, so a budget of 100 holds one such request at a time.
    std::fs::write(
        work.path().join("confab.toml"),
        "[prices.\"confab-demo\"]\ninput_per_million = 1000000\noutput_per_million = 1000000\n",
    )
    .unwrap();
    let created = work
        .run(
            &on_database(
                &url,
                &[
                    "keys",
                    "create",
                    "--name",
                    "B",
                    "--scope",
                    "chat",
                    "--monthly-budget",
                    "0.0001",
                    "--json",
                ],
            ),
            &[("CONFAB__DEMO__TOKEN_DELAY_MS", "300")],
        )
        .await
        .assert_success()
        .json();
    let key = created["key"].as_str().unwrap().to_owned();
    let redis_url = redis.url();
    // The doomed relay answers slowly (its stream is still open when it is killed); the other
    // at once.
    let relay_envs = |journal: &str, token_delay_ms: &str| {
        [
            ("CONFAB__DATABASE__URL", url.clone()),
            ("CONFAB__REDIS__URL", redis_url.clone()),
            ("CONFAB__REDIS__LEASE_MS", "1000".to_owned()),
            ("CONFAB__USAGE__JOURNAL_DIR", journal.to_owned()),
            ("CONFAB__DEMO__TOKEN_DELAY_MS", token_delay_ms.to_owned()),
        ]
    };
    let envs_a = relay_envs("a.reservations", "300");
    let envs_b = relay_envs("b.reservations", "0");
    let doomed = Relay::start(&work, &borrowed(&envs_a)).await;
    let other = Relay::start(&work, &borrowed(&envs_b)).await;
    let client = http_client();
    let body = json!({"stream": true, "max_tokens": 40,
        "messages": [{"role": "user", "content": "A long answer, please"}]});
    let chat = |relay: &Relay| {
        client.post(relay.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send()
    };

    // The doomed relay's stream holds the whole budget: the other refuses.
    let response = chat(&doomed).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.bytes_stream().eventsource();
    let _first = timeout(WAIT, events.next()).await.unwrap().unwrap().unwrap();
    let refused = chat(&other).await.unwrap();
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);

    doomed.kill().await;
    drop(events);
    // Its reservation lapses with its lease (1 s); the other relay serves again.
    let served = timeout(WAIT, async {
        loop {
            let response = chat(&other).await.unwrap();
            if response.status() == StatusCode::OK {
                return response.text().await.unwrap();
            }
            assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the killed relay's reservation was never released");
    assert!(served.contains("[DONE]"), "{served}");
    assert!(other.terminate().await.success());
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_named_without_its_password() {
    let work = Workdir::new();
    let port = confab_tests::servers::postgres().port();
    // The test server trusts any password, but knows no such role.
    let url = format!("postgres://nobody:hunter2@127.0.0.1:{port}/postgres");
    let failed = work.run(&["--database", &url, "sites", "list"], &[]).await.assert_failure();
    let named = format!("cannot open the database postgres://nobody:***@127.0.0.1:{port}/postgres");
    assert!(failed.stderr.contains(&named), "{}", failed.stderr);
    assert!(failed.stderr.contains("role \"nobody\" does not exist"), "{}", failed.stderr);
    assert!(!failed.stderr.contains("hunter2") && !failed.stdout.contains("hunter2"));
}
