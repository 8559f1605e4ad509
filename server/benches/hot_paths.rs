//! Micro-benchmarks of what every chat request goes through: the key check, the site lookup,
//! the policy, the rate limiter, and the parsing and rewriting of each upstream chunk. Run with
//! `cargo bench -p confab-server --bench hot_paths`; the figures are in BENCHMARKS.md.

#![expect(clippy::unwrap_used, reason = "benchmark: a failure aborts the run")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::ChatRequest;
use confab_protocol::sse::SseParser;
use confab_providers::{EventStream, UpstreamEvent};
use confab_server::config::{PolicyDefaults, RequestLimits};
use confab_server::cut::Cut;
use confab_server::limits::{InProcessLimiter, Rule, Subject};
use confab_server::policy::SitePolicy;
use confab_server::relay::{RelayStream, Step, Timing};
use confab_server::sitekey::{KeyKind, NewKey, PresentedKey};
use confab_server::store::{NewSite, SiteSettings, SqliteStore, Store};
use criterion::{Criterion, criterion_group, criterion_main};

/// A chunk as OpenAI streams it (one or two words of text each).
const CHUNK: &str = r#"{"id":"chatcmpl-8x1","object":"chat.completion.chunk","created":1732400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" relay"},"logprobs":null,"finish_reason":null}]}"#;

fn relay_chunks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    c.bench_function("relay: read and rewrite 20 upstream chunks", |b| {
        b.to_async(&runtime).iter(|| async {
            let events: Vec<_> = (0..20)
                .map(|_| Ok(UpstreamEvent::Data(CHUNK.to_owned())))
                .chain(std::iter::once(Ok(UpstreamEvent::Done)))
                .collect();
            let upstream: EventStream = Box::pin(futures_util::stream::iter(events));
            let minute = Duration::from_secs(60);
            let timing = Timing {
                requested_at: tokio::time::Instant::now(),
                first_byte: minute,
                idle: minute,
                stream: minute,
                cut: Some(Cut::new().watch()),
            };
            let mut relay = RelayStream::new(upstream, "site-model".into(), timing, 64, None);
            loop {
                match relay.step().await {
                    Step::Chunk(chunk) => {
                        black_box(chunk);
                    }
                    Step::Done => break,
                    Step::Failed(error) => panic!("{error}"),
                }
            }
        });
    });
}

fn sse_parsing(c: &mut Criterion) {
    let mut body = String::new();
    for _ in 0..20 {
        body.push_str("data: ");
        body.push_str(CHUNK);
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    c.bench_function("sse: split 21 upstream events out of one read", |b| {
        b.iter(|| {
            let mut parser = SseParser::default();
            let mut events = 0;
            parser.feed(black_box(body.as_bytes()), |event| {
                black_box(event);
                events += 1;
            });
            assert_eq!(events, 21);
        });
    });
}

fn site_key_check(c: &mut Criterion) {
    let key = NewKey::generate(KeyKind::Site);
    let token = key.reveal().to_owned();
    c.bench_function("auth: parse a site key and verify its hash", |b| {
        b.iter(|| {
            let presented = PresentedKey::parse(black_box(&token)).unwrap();
            assert!(presented.matches(&key.hash));
        });
    });
}

fn site_lookup(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime.block_on(SqliteStore::open(&url, 4)).unwrap();
    let key = NewKey::generate(KeyKind::Site);
    let site = NewSite {
        settings: SiteSettings {
            name: "bench".into(),
            origins: vec!["https://shop.example".into()],
            models: vec!["model-a".into()],
            system_prompt: Some("You are the shop's assistant.".into()),
            ..SiteSettings::default()
        },
        is_demo: false,
        key_lookup_id: key.lookup_id.clone(),
        key_hash: key.hash,
    };
    runtime.block_on(store.create_site(site)).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    c.bench_function("store: find a site by its key (in memory)", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(store.site_by_key(&key.lookup_id, 0).await.unwrap().unwrap());
        });
    });
    c.bench_function("store: is an origin registered (in memory)", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(store.origin_is_registered("https://shop.example").await.unwrap());
        });
    });
}

fn policy(c: &mut Criterion) {
    let models = vec!["model-a".to_owned(), "model-b".to_owned()];
    let defaults = PolicyDefaults::default();
    let limits = RequestLimits::default();
    let policy = SitePolicy::for_key(&models, &defaults, &limits);
    let request: ChatRequest = serde_json::from_str(
        r#"{"model":"model-a","stream":true,"max_tokens":300,"temperature":0.7,"messages":[
            {"role":"system","content":"Answer briefly."},
            {"role":"user","content":"What are your opening hours?"},
            {"role":"assistant","content":"We are open from 9 to 6, Monday to Saturday."},
            {"role":"user","content":"And on holidays?"}]}"#,
    )
    .unwrap();
    c.bench_function("policy: apply to a 4-message request", |b| {
        b.iter(|| black_box(policy.apply(black_box(request.clone())).unwrap()));
    });
}

fn limiter(c: &mut Criterion) {
    let limiter = InProcessLimiter::new();
    let site = Rule { rpm: Some(1_000_000_000), rpd: Some(1_000_000_000), tpm: None };
    let visitor = Rule { rpm: Some(1_000_000_000), rpd: Some(1_000_000_000), tpm: None };
    let mut n = 0u32;
    c.bench_function("limiter: admit against site and visitor (1,000 visitors)", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let checks = [
                (Subject::Site("site_bench".into()), site),
                (
                    Subject::Visitor {
                        site: "site_bench".into(),
                        visitor: format!("ip:{}", n % 1000),
                    },
                    visitor,
                ),
            ];
            black_box(limiter.admit_at(&checks, 0, Instant::now()).unwrap());
        });
    });
}

criterion_group!(
    hot_paths,
    relay_chunks,
    sse_parsing,
    site_key_check,
    site_lookup,
    policy,
    limiter
);
criterion_main!(hot_paths);
