//! Fault injection through real HTTP, for each provider kind: the relay in front of
//! [`FaultServer`], a raw TCP upstream that refuses, resets, answers error statuses, goes silent
//! after its head, cuts a stream, sends garbage, an event over the relay's size cap, or a slow
//! trickle. Every case must end with the documented status (or, once text was sent, an SSE
//! `error` event and no `[DONE]`), within the configured limits (a hang guard, not a speed
//! check), with no connection to the upstream left open, the stream gauge back at zero, and the
//! request's reservation settled: one usage record with its outcome and charge, and the budget
//! free again for the next request. With a second target configured, a fault before any text is
//! answered by that target and a fault after text is not retried.
//!
//! Each table runs its cases concurrently, each with its own relay and fault server, and
//! reports every failing case by name.

use std::future::Future;
use std::time::Duration;

use confab_server::budget::Price;
use confab_server::config::{ModelConfig, UpstreamConfig, UpstreamKind};
use confab_server::store::{CallerLimits, Outcome, UsageRecord};
use confab_tests::faults::{ApiKind, Fault, FaultServer};
use confab_tests::{MockUpstream, Reply, TestRelay, TestRelayBuilder, json_body, read_events};
use serde_json::{Value, json};

/// The `max_tokens` of every faulty request: its reservation's answer part.
const MAX_TOKENS: u64 = 1_000;
/// The question, long enough that its prompt ceiling dominates the reservation probe's
/// arithmetic (see [`DAILY_BUDGET`]).
const QUESTION_BYTES: usize = 400;
/// The site's daily budget, at one micro-dollar a token: it admits one faulty request's
/// reservation (prompt ceiling P plus `MAX_TOKENS`) but not that and the probe's (P plus 1) at
/// once, while a settled faulty request (charged at most P and a few answer tokens) leaves room
/// for the probe. So the probe is refused with 402 exactly when the first reservation leaked.
/// That holds for any P in (325, 650]: above 325, two reservations (2P + 1001) exceed the budget;
/// at most 650, the faulty request was admitted. P is at least 407 (the question's 400 bytes,
/// four tokens a message and three) and, with the site's prompt, well under 650.
const DAILY_BUDGET: u64 = 1_650;

const ADMIN_TOKEN: &str = "admin-token-for-the-fault-suite-0123";

/// The time limits of every relay here: small, so that the suite is quick.
const FIRST_BYTE_MS: u64 = 1_000;
const IDLE_MS: u64 = 1_000;
const STREAM_MS: u64 = 3_000;
const ANSWER_MS: u64 = 3_000;
/// Reading an event or an answer past its size cap (a megabyte or eight) takes a debug build
/// under a loaded machine longer than the limits above; the cases that send one get ten times
/// those limits, so that the cap, not a timer, is what ends them.
const ROOMY: u64 = 10;

/// A bound on one case, start to stop: far above every limit above; a case that reaches it hung.
const CASE_GUARD: Duration = Duration::from_secs(40);

fn ask(model: &str, stream: bool, max_tokens: u64) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "x".repeat(QUESTION_BYTES)}]})
}

fn upstream_kind(kind: ApiKind) -> UpstreamKind {
    match kind {
        ApiKind::OpenAi => UpstreamKind::Openai,
        ApiKind::Anthropic => UpstreamKind::Anthropic,
        ApiKind::Gemini => UpstreamKind::Gemini,
    }
}

/// A relay whose upstream `faulty` is `server` (serving `model-a`, `model-b`, `model-c`, priced at
/// a micro-dollar a token), with the test limits, metrics behind the admin token, and the site's
/// daily budget. With `backup`, also `support-bot`: `faulty:model-a`, then `backup:model-z` (the
/// mock, as an OpenAI upstream).
fn fault_relay(
    server: &FaultServer,
    mock: &MockUpstream,
    backup: bool,
    token_file: std::path::PathBuf,
    roomy: bool,
) -> TestRelayBuilder {
    let scale = if roomy { ROOMY } else { 1 };
    let (base_url, kind, backup_url) =
        (server.base_url(), upstream_kind(server.kind), mock.base_url.clone());
    TestRelay::builder(mock)
        .config(move |c| {
            c.upstreams[0].name = "faulty".into();
            c.upstreams[0].kind = kind;
            c.upstreams[0].base_url = Some(base_url);
            c.timeouts.first_byte_ms = FIRST_BYTE_MS * scale;
            c.timeouts.idle_ms = IDLE_MS * scale;
            c.timeouts.stream_ms = STREAM_MS * scale;
            c.timeouts.answer_ms = ANSWER_MS * scale;
            c.admin.token_file = Some(token_file);
            c.usage.flush_ms = 50;
            c.prices.insert("model-a".into(), Price::new(1_000_000, 1_000_000));
            if backup {
                c.upstreams.push(UpstreamConfig {
                    name: "backup".into(),
                    kind: UpstreamKind::Openai,
                    base_url: Some(backup_url),
                    api_key_env: None,
                    api_key_file: None,
                    models: vec!["model-z".into()],
                });
                c.models.push(ModelConfig {
                    name: "support-bot".into(),
                    targets: vec!["faulty:model-a".into(), "backup:model-z".into()],
                    context_length: None,
                });
                c.prices.insert("model-z".into(), Price::new(1_000_000, 1_000_000));
            }
        })
        .site(move |s| {
            if backup {
                s.models.push("support-bot".into());
            }
            s.limits =
                CallerLimits { daily_budget_micros: Some(DAILY_BUDGET), ..CallerLimits::default() };
        })
}

/// The admin token in a file, for `admin.token_file`; removed when dropped.
fn admin_token_file() -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ADMIN_TOKEN).unwrap();
    file.into_temp_path()
}

/// The value of an unlabelled sample in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (bounded) until no relay stream is open and no settle is waiting, per `/metrics`.
async fn assert_nothing_open(relay: &TestRelay) {
    let settled = tokio::time::timeout(confab_tests::WAIT, async {
        loop {
            let response = relay.client.get(relay.url("/metrics")).bearer_auth(ADMIN_TOKEN);
            let text = response.send().await.unwrap().text().await.unwrap();
            let open = sample(&text, "confab_open_streams");
            let pending = sample(&text, "confab_metering_pending_settlements");
            if open == Some(0.0) && pending == Some(0.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "a relay stream or a settle was still open");
}

/// What the client must see.
#[derive(Debug, Clone)]
enum Expect {
    /// An error status with this envelope (and `Retry-After`, when given).
    Status {
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: String,
        retry_after: Option<&'static str>,
    },
    /// A 200 stream with some text, ending with an `error` event of this envelope, no `[DONE]`.
    ErrorEvent { kind: &'static str, code: &'static str, message: String },
}

/// What the request is charged, once settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charged {
    /// Refused (no connection, an error status, an error in place of the answer): free.
    Nothing,
    /// Taken by the upstream, answered in part or not at all: the prompt's ceiling and what
    /// was streamed, well under the reservation.
    Prompt,
    /// A whole answer that failed after the upstream took it: the reservation itself.
    WorstCase,
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    /// `None`: nothing listens.
    fault: Option<Fault>,
    stream: bool,
    expect: Expect,
    charged: Charged,
}

impl Case {
    /// Whether the case sends more than a cap allows (see [`ROOMY`]).
    fn oversize(&self) -> bool {
        matches!(self.fault, Some(Fault::Oversize { .. }))
    }
}

fn status(status: u16, code: &'static str, message: impl Into<String>) -> Expect {
    let kind = match status {
        429 => "rate_limit_error",
        502 => "upstream_error",
        503 => "service_unavailable_error",
        504 => "timeout_error",
        _ => unreachable!("no upstream failure is a {status}"),
    };
    Expect::Status { status, kind, code, message: message.into(), retry_after: None }
}

fn error_event(kind: &'static str, code: &'static str, message: impl Into<String>) -> Expect {
    Expect::ErrorEvent { kind, code, message: message.into() }
}

fn with_retry_after(expect: Expect, seconds: &'static str) -> Expect {
    match expect {
        Expect::Status { status, kind, code, message, .. } => {
            Expect::Status { status, kind, code, message, retry_after: Some(seconds) }
        }
        other => other,
    }
}

const UNREACHABLE: &str = "the model provider could not be reached";
const DISCONNECTED: &str =
    "the model provider closed the connection before the answer was complete";
const INVALID: &str = "the model provider sent a response the relay could not read";
const REPORTED: &str = "the model provider reported an error while answering";
const RATE_LIMITED: &str = "the model provider is rate limiting requests; retry later";
const OVERLOADED: &str = "the model provider is overloaded; retry later";

/// What the client gets for the provider's error inside a 200 (`after_text`: once some of the
/// answer was sent): Anthropic's is an `overloaded_error`, which is its 529; the others' are
/// reported errors.
fn reported(kind: ApiKind, after_text: bool) -> Expect {
    match (kind, after_text) {
        (ApiKind::Anthropic, false) => status(503, "upstream_overloaded", OVERLOADED),
        (ApiKind::Anthropic, true) => {
            error_event("service_unavailable_error", "upstream_overloaded", OVERLOADED)
        }
        (_, false) => status(502, "upstream_error", REPORTED),
        (_, true) => error_event("upstream_error", "upstream_error", REPORTED),
    }
}

fn failed_with(status: u16) -> String {
    format!("the model provider failed (HTTP {status})")
}

/// A time limit as the relay words it in its messages.
fn limit(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{} s", ms / 1000) } else { format!("{ms} ms") }
}

fn trickle(every_ms: u64) -> Duration {
    Duration::from_millis(every_ms)
}

/// The faults every kind gets, before any head: refused, reset, the error statuses.
fn before_head_cases(stream: bool) -> Vec<Case> {
    let reset_charge = if stream { Charged::Prompt } else { Charged::WorstCase };
    let head = |status: u16, retry_after: Option<u64>| Some(Fault::Status { status, retry_after });
    vec![
        Case {
            name: "connection refused",
            fault: None,
            stream,
            expect: status(502, "upstream_unreachable", UNREACHABLE),
            charged: Charged::Nothing,
        },
        Case {
            name: "reset before the head",
            fault: Some(Fault::ResetBeforeHead),
            stream,
            expect: status(502, "upstream_disconnected", DISCONNECTED),
            charged: reset_charge,
        },
        Case {
            name: "a 500 head",
            fault: head(500, None),
            stream,
            expect: status(502, "upstream_error", failed_with(500)),
            charged: Charged::Nothing,
        },
        Case {
            name: "a 503 head",
            fault: head(503, None),
            stream,
            expect: status(502, "upstream_error", failed_with(503)),
            charged: Charged::Nothing,
        },
        Case {
            name: "a 529 head",
            fault: head(529, Some(30)),
            stream,
            expect: with_retry_after(status(503, "upstream_overloaded", OVERLOADED), "30"),
            charged: Charged::Nothing,
        },
        Case {
            name: "a 429 head",
            fault: head(429, Some(7)),
            stream,
            expect: with_retry_after(status(429, "upstream_rate_limited", RATE_LIMITED), "7"),
            charged: Charged::Nothing,
        },
    ]
}

/// Every fault of a streamed answer.
fn stream_cases(kind: ApiKind) -> Vec<Case> {
    let first_byte =
        format!("the model provider did not start answering within {}", limit(FIRST_BYTE_MS));
    let idle = format!(
        "the model provider stopped sending for {}; the answer is incomplete",
        limit(IDLE_MS)
    );
    let whole_stream = format!(
        "the answer ran longer than the relay allows ({}); it is incomplete",
        limit(STREAM_MS)
    );
    let mut cases = before_head_cases(true);
    cases.extend([
        Case {
            name: "a head then silence",
            fault: Some(Fault::HeadThenSilence),
            stream: true,
            expect: status(504, "upstream_timeout", first_byte.clone()),
            charged: Charged::Prompt,
        },
        Case {
            name: "a head then bytes that are not SSE",
            fault: Some(Fault::NotSse),
            stream: true,
            expect: status(504, "upstream_timeout", first_byte.clone()),
            charged: Charged::Prompt,
        },
        Case {
            name: "garbage instead of the first event",
            fault: Some(Fault::Garbage { events: 0 }),
            stream: true,
            expect: status(502, "upstream_invalid_response", INVALID),
            charged: Charged::Prompt,
        },
        Case {
            name: "a first event over the size cap",
            fault: Some(Fault::Oversize { events: 0 }),
            stream: true,
            expect: status(502, "upstream_invalid_response", INVALID),
            charged: Charged::Prompt,
        },
        Case {
            name: "the provider's error as the first event",
            fault: Some(Fault::Reported { events: 0 }),
            stream: true,
            expect: reported(kind, false),
            charged: Charged::Nothing,
        },
        Case {
            name: "the first event trickled a byte at a time",
            fault: Some(Fault::TrickleBytes { events: 0, every: trickle(50) }),
            stream: true,
            expect: status(504, "upstream_timeout", first_byte),
            charged: Charged::Prompt,
        },
        Case {
            name: "a stream cut mid-answer",
            fault: Some(Fault::CutAfter { events: 2 }),
            stream: true,
            expect: error_event("upstream_error", "upstream_disconnected", DISCONNECTED),
            charged: Charged::Prompt,
        },
        Case {
            name: "garbage after text",
            fault: Some(Fault::Garbage { events: 2 }),
            stream: true,
            expect: error_event("upstream_error", "upstream_invalid_response", INVALID),
            charged: Charged::Prompt,
        },
        Case {
            name: "an event over the size cap after text",
            fault: Some(Fault::Oversize { events: 2 }),
            stream: true,
            expect: error_event("upstream_error", "upstream_invalid_response", INVALID),
            charged: Charged::Prompt,
        },
        Case {
            name: "the provider's error after text",
            fault: Some(Fault::Reported { events: 2 }),
            stream: true,
            expect: reported(kind, true),
            charged: Charged::Prompt,
        },
        Case {
            name: "an event trickled a byte at a time after text",
            fault: Some(Fault::TrickleBytes { events: 2, every: trickle(50) }),
            stream: true,
            expect: error_event("timeout_error", "upstream_timeout", idle),
            charged: Charged::Prompt,
        },
        Case {
            name: "events trickled for ever, each in time",
            fault: Some(Fault::TrickleEvents { every: trickle(50) }),
            stream: true,
            expect: error_event("timeout_error", "upstream_timeout", whole_stream),
            charged: Charged::Prompt,
        },
    ]);
    cases
}

/// Every fault of a whole answer.
fn whole_cases(kind: ApiKind) -> Vec<Case> {
    let answer =
        format!("the model provider did not finish its answer within {}", limit(ANSWER_MS));
    let mut cases = before_head_cases(false);
    cases.extend([
        Case {
            name: "a head then silence",
            fault: Some(Fault::HeadThenSilence),
            stream: false,
            expect: status(504, "upstream_timeout", answer.clone()),
            charged: Charged::WorstCase,
        },
        Case {
            name: "a body cut short",
            fault: Some(Fault::CutAfter { events: 0 }),
            stream: false,
            expect: status(502, "upstream_disconnected", DISCONNECTED),
            charged: Charged::WorstCase,
        },
        Case {
            name: "a body that is not JSON",
            fault: Some(Fault::Garbage { events: 0 }),
            stream: false,
            expect: status(502, "upstream_invalid_response", INVALID),
            charged: Charged::WorstCase,
        },
        Case {
            name: "a body over the size cap",
            fault: Some(Fault::Oversize { events: 0 }),
            stream: false,
            expect: status(502, "upstream_invalid_response", INVALID),
            charged: Charged::WorstCase,
        },
        Case {
            name: "the provider's error in a 200",
            fault: Some(Fault::Reported { events: 0 }),
            stream: false,
            expect: reported(kind, false),
            charged: Charged::Nothing,
        },
        Case {
            name: "a body trickled a byte at a time",
            fault: Some(Fault::TrickleBytes { events: 0, every: trickle(50) }),
            stream: false,
            expect: status(504, "upstream_timeout", answer),
            charged: Charged::WorstCase,
        },
    ]);
    cases
}

/// The text of the chunks of a stream's events.
fn streamed_text(events: &[eventsource_stream::Event]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Checks the response against `expect`.
async fn check_response(response: reqwest::Response, expect: &Expect) {
    match expect {
        Expect::Status { status, kind, code, message, retry_after } => {
            let got_retry_after =
                response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let (got, body) = json_body(response).await;
            assert_eq!(
                (got, body),
                (*status, json!({"error": {"message": message, "type": kind, "code": code}}))
            );
            assert_eq!(got_retry_after.as_deref(), *retry_after, "Retry-After");
        }
        Expect::ErrorEvent { kind, code, message } => {
            assert_eq!(response.status(), 200);
            let events = read_events(response).await;
            assert!(!streamed_text(&events).is_empty(), "some text was sent: {events:?}");
            assert!(!events.iter().any(|e| e.data == "[DONE]"), "{events:?}");
            let last = events.last().unwrap();
            assert_eq!(last.event, "error", "{events:?}");
            assert_eq!(
                serde_json::from_str::<Value>(&last.data).unwrap(),
                json!({"error": {"message": message, "type": kind, "code": code}})
            );
        }
    }
}

fn check_charge(record: &UsageRecord, charged: Charged) {
    match charged {
        Charged::Nothing => assert_eq!(
            (record.input_tokens, record.output_tokens, record.cost_micros),
            (0, 0, 0),
            "{record:?}"
        ),
        Charged::Prompt => {
            assert!(record.input_tokens > 0, "the prompt is charged: {record:?}");
            assert!(record.output_tokens < MAX_TOKENS / 10, "{record:?}");
        }
        Charged::WorstCase => assert_eq!(record.output_tokens, MAX_TOKENS, "{record:?}"),
    }
    assert_eq!(record.cost_micros, record.input_tokens + record.output_tokens, "{record:?}");
}

/// One case against a relay whose only upstream is the fault server.
async fn run_case(kind: ApiKind, case: Case) {
    let mock = MockUpstream::start().await;
    let server = match &case.fault {
        Some(fault) => FaultServer::start(kind, fault.clone()).await,
        None => FaultServer::refusing(kind).await,
    };
    let token = admin_token_file();
    let roomy = case.oversize();
    let relay = fault_relay(&server, &mock, false, token.to_path_buf(), roomy).start().await;

    let response = relay.send_chat(ask("model-a", case.stream, MAX_TOKENS)).await;
    check_response(response, &case.expect).await;
    if case.fault.is_some() {
        let requests = server.requests();
        assert_eq!(
            requests[0].path,
            kind.path("model-a", case.stream),
            "the call went where it should"
        );
    }

    // Settled once, as an upstream error, at what the documentation says it costs.
    let record = relay.only_settled_usage().await;
    assert_eq!((record.outcome, record.upstream.as_str()), (Outcome::UpstreamError, "faulty"));
    check_charge(&record, case.charged);
    server.wait_all_closed().await;
    assert_nothing_open(&relay).await;

    // The reservation is free again: a request that fits the budget only beside a settled one
    // is admitted (and answered, by the server's well-formed answer to any later connection).
    // After a worst-case charge the budget is spent instead, which the probe cannot tell apart.
    if case.charged != Charged::WorstCase {
        let probe = relay.send_chat(ask("model-a", case.stream, 1)).await;
        // Admitted, and then refused by the address where nothing listens, or answered.
        let admitted = if case.fault.is_some() { 200 } else { 502 };
        assert_eq!(
            probe.status(),
            admitted,
            "the probe was admitted: the reservation was released"
        );
        let _ = probe.bytes().await;
        server.wait_all_closed().await;
    }
    assert!(mock.requests().is_empty());
    relay.stop().await;
}

/// Runs every case concurrently (each its own relay and server, under [`CASE_GUARD`]) and fails
/// with the names and messages of all that failed.
async fn run_table<Fut>(label: &str, cases: Vec<(&'static str, Fut)>)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let total = cases.len();
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, case)| (name, tokio::spawn(tokio::time::timeout(CASE_GUARD, case))))
        .collect();
    let mut failures = Vec::new();
    for (name, handle) in handles {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failures.push(format!("{name}: hung past {CASE_GUARD:?}")),
            Err(error) => {
                let panic = error.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn stream_table(kind: ApiKind) {
    let cases =
        stream_cases(kind).into_iter().map(|case| (case.name, run_case(kind, case))).collect();
    run_table(&format!("{kind:?} streams"), cases).await;
}

async fn whole_table(kind: ApiKind) {
    let cases =
        whole_cases(kind).into_iter().map(|case| (case.name, run_case(kind, case))).collect();
    run_table(&format!("{kind:?} whole answers"), cases).await;
}

#[tokio::test]
async fn every_fault_of_an_openai_stream_ends_as_documented_and_leaks_nothing() {
    stream_table(ApiKind::OpenAi).await;
}

#[tokio::test]
async fn every_fault_of_an_anthropic_stream_ends_as_documented_and_leaks_nothing() {
    stream_table(ApiKind::Anthropic).await;
}

#[tokio::test]
async fn every_fault_of_a_gemini_stream_ends_as_documented_and_leaks_nothing() {
    stream_table(ApiKind::Gemini).await;
}

#[tokio::test]
async fn every_fault_of_an_openai_whole_answer_ends_as_documented_and_leaks_nothing() {
    whole_table(ApiKind::OpenAi).await;
}

#[tokio::test]
async fn every_fault_of_an_anthropic_whole_answer_ends_as_documented_and_leaks_nothing() {
    whole_table(ApiKind::Anthropic).await;
}

#[tokio::test]
async fn every_fault_of_a_gemini_whole_answer_ends_as_documented_and_leaks_nothing() {
    whole_table(ApiKind::Gemini).await;
}

// Fallback: `support-bot` is `faulty:model-a`, then `backup:model-z`.

/// A fault that must (`true`) or must not be answered by the next target.
#[derive(Debug, Clone)]
struct FallbackCase {
    name: &'static str,
    fault: Option<Fault>,
    stream: bool,
    falls_back: bool,
}

async fn run_fallback_case(kind: ApiKind, case: FallbackCase) {
    let backup = MockUpstream::start().await;
    backup.push(Reply::answer(&["From", " the", " backup"], (5, 3)));
    let server = match &case.fault {
        Some(fault) => FaultServer::start(kind, fault.clone()).await,
        None => FaultServer::refusing(kind).await,
    };
    let token = admin_token_file();
    // The backup must answer within the first-byte limit on a loaded machine: every case that
    // does not need a small limit to make the fault gets roomy ones.
    let roomy = match &case.fault {
        Some(Fault::Oversize { .. }) => true,
        Some(Fault::HeadThenSilence) => false,
        _ => case.falls_back,
    };
    let relay = fault_relay(&server, &backup, true, token.to_path_buf(), roomy).start().await;

    let response = relay.send_chat(ask("support-bot", case.stream, MAX_TOKENS)).await;
    let upstream =
        response.headers().get("x-confab-upstream").map(|v| v.to_str().unwrap().to_owned());
    let record = if case.falls_back {
        if response.status() != 200 {
            let (status, body) = json_body(response).await;
            panic!("not answered by the backup: {status} {body}");
        }
        assert_eq!(upstream.as_deref(), Some("backup:model-z"));
        let text = if case.stream {
            let events = read_events(response).await;
            assert_eq!(events.last().unwrap().data, "[DONE]", "{events:?}");
            streamed_text(&events)
        } else {
            let (_, body) = json_body(response).await;
            body["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, "From the backup");
        assert_eq!(backup.requests().len(), 1);
        let record = relay.only_settled_usage().await;
        assert_eq!(
            (record.outcome, record.upstream.as_str(), record.model.as_str()),
            (Outcome::Completed, "backup", "model-z")
        );
        record
    } else {
        assert_eq!(response.status(), 200, "the answer had started");
        assert_eq!(upstream.as_deref(), Some("faulty:model-a"));
        let events = read_events(response).await;
        assert!(!streamed_text(&events).is_empty(), "{events:?}");
        assert_eq!(events.last().unwrap().event, "error", "{events:?}");
        assert!(!events.iter().any(|e| e.data == "[DONE]"), "{events:?}");
        assert!(backup.requests().is_empty(), "the backup was never called");
        let record = relay.only_settled_usage().await;
        assert_eq!((record.outcome, record.upstream.as_str()), (Outcome::UpstreamError, "faulty"));
        record
    };
    assert!(record.cost_micros > 0, "{record:?}");
    if case.fault.is_some() {
        assert_eq!(server.accepted(), 1, "the faulty target was called once");
    }
    server.wait_all_closed().await;
    assert_nothing_open(&relay).await;
    relay.stop().await;
}

/// The faults before any text, streamed and whole, that the documentation says fall back today:
/// no connection, and the error statuses (429, 5xx, 529).
fn fallback_before_text_cases() -> Vec<FallbackCase> {
    let mut cases = Vec::new();
    for stream in [true, false] {
        cases.push(FallbackCase {
            name: "connection refused",
            fault: None,
            stream,
            falls_back: true,
        });
        for (name, status) in
            [("a 500 head", 500), ("a 503 head", 503), ("a 529 head", 529), ("a 429 head", 429)]
        {
            let fault = Some(Fault::Status { status, retry_after: Some(1) });
            cases.push(FallbackCase { name, fault, stream, falls_back: true });
        }
    }
    cases
}

/// The faults after text: never retried.
fn no_fallback_after_text_cases() -> Vec<FallbackCase> {
    [
        ("a stream cut mid-answer", Fault::CutAfter { events: 2 }),
        ("garbage after text", Fault::Garbage { events: 2 }),
        ("the provider's error after text", Fault::Reported { events: 2 }),
        ("an event over the size cap after text", Fault::Oversize { events: 2 }),
        (
            "an event trickled a byte at a time after text",
            Fault::TrickleBytes { events: 2, every: trickle(50) },
        ),
    ]
    .into_iter()
    .map(|(name, fault)| FallbackCase { name, fault: Some(fault), stream: true, falls_back: false })
    .collect()
}

async fn fallback_table(label: &str, kind: ApiKind, cases: Vec<FallbackCase>) {
    let cases = cases.into_iter().map(|case| (case.name, run_fallback_case(kind, case))).collect();
    run_table(label, cases).await;
}

#[tokio::test]
async fn faults_of_an_openai_target_before_any_text_fall_back_to_the_next_target() {
    fallback_table("OpenAi before text", ApiKind::OpenAi, fallback_before_text_cases()).await;
}

#[tokio::test]
async fn faults_of_an_anthropic_target_before_any_text_fall_back_to_the_next_target() {
    fallback_table("Anthropic before text", ApiKind::Anthropic, fallback_before_text_cases()).await;
}

#[tokio::test]
async fn faults_of_a_gemini_target_before_any_text_fall_back_to_the_next_target() {
    fallback_table("Gemini before text", ApiKind::Gemini, fallback_before_text_cases()).await;
}

#[tokio::test]
async fn faults_after_text_are_never_retried_on_the_next_target() {
    let mut cases = Vec::new();
    for kind in ApiKind::ALL {
        for case in no_fallback_after_text_cases() {
            cases.push((case.name, run_fallback_case(kind, case)));
        }
    }
    run_table("after text", cases).await;
}

/// A connection reset before any head: the request was written but nothing came back, which is
/// "no first byte" as much as silence is; nothing reached the client, so the next target may
/// answer.
#[tokio::test]
async fn a_reset_before_the_head_falls_back_to_the_next_target() {
    let mut cases = Vec::new();
    for kind in ApiKind::ALL {
        for stream in [true, false] {
            let fault = Some(Fault::ResetBeforeHead);
            let case =
                FallbackCase { name: "reset before the head", fault, stream, falls_back: true };
            cases.push((case.name, run_fallback_case(kind, case)));
        }
    }
    run_table("reset before the head", cases).await;
}

/// A 200 head and then no first event within `timeouts.first_byte_ms`: no text reached the
/// client, so the next target answers (README: "no first byte within `timeouts.first_byte_ms`").
#[tokio::test]
async fn a_head_then_silence_falls_back_to_the_next_target() {
    let mut cases = Vec::new();
    for kind in ApiKind::ALL {
        let fault = Some(Fault::HeadThenSilence);
        let case =
            FallbackCase { name: "a head then silence", fault, stream: true, falls_back: true };
        cases.push((case.name, run_fallback_case(kind, case)));
    }
    run_table("a head then silence", cases).await;
}

/// Anthropic's `overloaded_error` event as the first event after a 200 is an overloaded
/// provider that has sent nothing yet: the next target answers.
#[tokio::test]
async fn an_anthropic_error_as_the_first_event_falls_back_to_the_next_target() {
    let fault = Some(Fault::Reported { events: 0 });
    let case = FallbackCase { name: "error event first", fault, stream: true, falls_back: true };
    run_fallback_case(ApiKind::Anthropic, case).await;
}
