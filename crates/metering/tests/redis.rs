//! The Redis engines against a real Redis server (`confab_tests::servers::RedisServer`, on a free
//! port of 127.0.0.1, stopped at the end of each test): the Lua GCRA (all or nothing across
//! subjects, the same headers as in process, token settles given back once), the ledger
//! (exact budgets under concurrency across two relays, idempotent settles, alerts once, leases,
//! seeding once), admission (both in one step each way, all or nothing: the same contract run
//! against the in-process engine too) and what all do while Redis is down.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share.
#![expect(clippy::unwrap_used, reason = "test helpers: a failure fails the test")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_metering::admission::{Admission, Claim, Refusal};
use confab_metering::budget::{BudgetRule, Micros, Payer, Period, PeriodKind, ReserveError};
use confab_metering::limits::{InProcessLimiter, RateLimitStatus, Rule, Subject, Window};
use confab_metering::{Engines, OnStoreError, RedisSettings, SpendSource, Unobserved};
use confab_tests::servers::RedisServer;
use futures_util::future::join_all;
use http::HeaderMap;

/// What the "database" says was spent, for seeding.
#[derive(Debug, Default)]
struct FixedSpend(Mutex<HashMap<(Payer, Period), Micros>>);

#[async_trait]
impl SpendSource for FixedSpend {
    async fn spent(
        &self,
        _month: Period,
        _day: Period,
    ) -> Result<HashMap<(Payer, Period), Micros>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.lock().unwrap().clone())
    }
}

fn settings(redis: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: redis.url(),
        key_prefix: "test".into(),
        command_timeout: Duration::from_millis(500),
        breaker_failures: 1,
        breaker_open: Duration::from_millis(200),
        expected_instances: 2,
        lease: Duration::from_secs(30),
        on_store_error: OnStoreError::Closed,
    }
}

/// One relay's engines on `redis`.
fn relay(settings: &RedisSettings, spend: &Arc<FixedSpend>) -> Engines {
    let spend: Arc<dyn SpendSource> = Arc::clone(spend) as _;
    Engines::redis(settings, spend, Arc::new(Unobserved)).unwrap()
}

fn site() -> Subject {
    Subject::Site("site-1".into())
}

fn visitor(name: &str) -> Subject {
    Subject::Visitor { site: "site-1".into(), visitor: name.into() }
}

fn rpm(n: u32) -> Rule {
    Rule { rpm: Some(n), ..Rule::default() }
}

fn site_payer() -> Payer {
    Payer::Site("site-1".into())
}

fn monthly(budget: Micros) -> BudgetRule {
    BudgetRule { monthly: Some(budget), daily: None }
}

fn this_month() -> Period {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    Period::month_of(now.as_secs())
}

async fn get(redis: &RedisServer, key: &str) -> Option<u64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET").arg(key).query_async(&mut connection).await.unwrap()
}

fn spent_key(period: Period) -> String {
    format!("test:b:s:site-1:{period}:spent")
}

// The limiter.

#[tokio::test]
async fn a_request_refused_by_the_visitor_limit_is_not_charged_to_the_site() {
    let redis = RedisServer::start();
    let engines = relay(&settings(&redis), &Arc::default());
    let limiter = &engines.limiter;
    let from = |name| vec![(site(), rpm(100)), (visitor(name), rpm(2))];

    limiter.admit("r1", from("a"), 0).await.unwrap();
    let admitted = limiter.admit("r2", from("a"), 0).await.unwrap();
    assert_eq!(admitted.status.unwrap().remaining_rpm, Some(0));
    assert!(!admitted.charge.local, "decided in Redis");

    let rejected = limiter.admit("r3", from("a"), 0).await.unwrap_err();
    assert_eq!(rejected.subject, visitor("a"));
    assert_eq!(rejected.window, Window::RequestsPerMinute);
    assert_eq!(rejected.retry_after, Duration::from_secs(30));

    let status = limiter.admit("r4", vec![(site(), rpm(100))], 0).await.unwrap().status.unwrap();
    assert_eq!(status.remaining, 97, "two admitted requests and this one, not the refused one");
    let status = limiter.admit("r5", from("b"), 0).await.unwrap().status.unwrap();
    assert_eq!(status.remaining_rpm, Some(1), "another visitor still gets in");
}

#[tokio::test]
async fn the_redis_limiter_gives_the_same_answers_and_headers_as_the_in_process_one() {
    let redis = RedisServer::start();
    let engines = relay(&settings(&redis), &Arc::default());
    let local = InProcessLimiter::new();
    let start = Instant::now();
    // 6 per minute and 10 per day for the visitor, 1000 tokens per minute for the site: whole
    // intervals (10 s, 8640 s, 60 ms), so that the microseconds Redis's clock moves during the
    // test never change a whole-second header.
    let checks = vec![
        (site(), Rule { tpm: Some(1_000), ..Rule::default() }),
        (visitor("a"), Rule { rpm: Some(6), rpd: Some(10), tpm: None }),
    ];
    for n in 0..8 {
        let shared = engines.limiter.admit(&format!("r{n}"), checks.clone(), 100).await;
        let expected = local.admit_at(&checks, 100, start);
        // Redis counts microseconds, not nanoseconds: the headers (whole seconds) are the same.
        let headers = |status: Option<RateLimitStatus>| {
            let mut headers = HeaderMap::new();
            status.unwrap().apply(&mut headers);
            headers
        };
        match (shared, expected) {
            (Ok(shared), Ok(expected)) => {
                assert_eq!(headers(shared.status), headers(expected), "request {n}");
            }
            (Err(shared), Err(expected)) => {
                let (mut got, mut want) = (HeaderMap::new(), HeaderMap::new());
                shared.apply(&mut got);
                expected.apply(&mut want);
                assert_eq!(got, want, "request {n}");
                assert_eq!(shared.message(), expected.message());
                assert_eq!(
                    shared.message(),
                    "rate limit exceeded: the visitor's limit of 6 requests per minute; retry in \
                     10 s"
                );
            }
            (shared, expected) => panic!("request {n}: {shared:?} != {expected:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_redis_admit_exactly_the_limit_between_them() {
    let redis = RedisServer::start();
    let spend = Arc::default();
    let (one, two) = (relay(&settings(&redis), &spend), relay(&settings(&redis), &spend));
    let key = Subject::Key("key-1".into());
    let attempts = (0..40).map(|n| {
        let limiter = if n % 2 == 0 { &one.limiter } else { &two.limiter };
        limiter.admit("r", vec![(key.clone(), rpm(10))], 0)
    });
    let admitted = join_all(attempts).await.iter().filter(|result| result.is_ok()).count();
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn a_token_settle_gives_back_what_was_not_used_once_however_often_it_is_retried() {
    let redis = RedisServer::start();
    let engines = relay(&settings(&redis), &Arc::default());
    let checks = vec![(site(), Rule { tpm: Some(1_000), ..Rule::default() })];
    let admitted = engines.limiter.admit("r1", checks.clone(), 600).await.unwrap();
    assert_eq!(admitted.status.unwrap().remaining, 400);

    engines.limiter.settle_tokens(&admitted.charge, 100).await.unwrap();
    engines.limiter.settle_tokens(&admitted.charge, 100).await.unwrap();
    let status = engines.limiter.admit("r2", checks.clone(), 0).await.unwrap().status.unwrap();
    assert_eq!(status.remaining, 900, "given back once: 1000 - 100");

    // Using more than was reserved puts the window into debt.
    let admitted = engines.limiter.admit("r3", checks.clone(), 0).await.unwrap();
    engines.limiter.settle_tokens(&admitted.charge, 1_500).await.unwrap();
    let rejected = engines.limiter.admit("r4", checks, 0).await.unwrap_err();
    assert_eq!(rejected.window, Window::TokensPerMinute);
}

// The ledger.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_on_two_relays_against_a_budget_for_fifty_serve_fifty() {
    const COST: Micros = 12_345;
    let redis = RedisServer::start();
    let spend = Arc::default();
    let (one, two) = (relay(&settings(&redis), &spend), relay(&settings(&redis), &spend));
    let payers = [(site_payer(), monthly(50 * COST))];
    let calls = (0..200).map(|n| {
        let ledger = if n % 2 == 0 { &one.ledger } else { &two.ledger };
        let payers = &payers;
        async move {
            let reservation = ledger.reserve(&format!("call-{n}"), payers, COST).await.ok()?;
            ledger.settle(&reservation, COST).await.unwrap();
            Some(())
        }
    });
    let served = join_all(calls).await.into_iter().flatten().count();
    assert_eq!(served, 50);
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(50 * COST));
    let refused = one.ledger.reserve("one-more", &payers, COST).await.unwrap_err();
    let ReserveError::Exhausted(refused) = refused else { panic!("{refused:?}") };
    assert_eq!((refused.spent, refused.reserved), (50 * COST, 0));
    assert_eq!(refused.period_kind(), PeriodKind::Monthly);
}

#[tokio::test]
async fn a_retried_settle_counts_once_and_alerts_once_across_relays() {
    let redis = RedisServer::start();
    let spend = Arc::default();
    let (one, two) = (relay(&settings(&redis), &spend), relay(&settings(&redis), &spend));
    let payers = [(site_payer(), monthly(1_000))];

    let first = one.ledger.reserve("a", &payers, 900).await.unwrap();
    let crossings = one.ledger.settle(&first, 850).await.unwrap();
    assert_eq!(crossings.iter().map(|c| (c.percent, c.spent)).collect::<Vec<_>>(), [(80, 850)]);
    assert_eq!(one.ledger.settle(&first, 850).await.unwrap(), vec![], "a retry");
    assert_eq!(two.ledger.settle(&first, 850).await.unwrap(), vec![], "a retry elsewhere");
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(850));

    // The 100 % threshold, crossed on the other relay, once.
    let second = two.ledger.reserve("b", &payers, 150).await.unwrap();
    let crossings = two.ledger.settle(&second, 150).await.unwrap();
    assert_eq!(crossings.iter().map(|c| c.percent).collect::<Vec<_>>(), [100]);
    // A budget raised later does not report its thresholds again in the period.
    let raised = [(site_payer(), monthly(1_200))];
    let third = one.ledger.reserve("c", &raised, 10).await.unwrap();
    assert_eq!(one.ledger.settle(&third, 10).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_released_reservation_frees_its_room_and_a_second_release_changes_nothing() {
    let redis = RedisServer::start();
    let engines = relay(&settings(&redis), &Arc::default());
    let payers = [(site_payer(), monthly(1_000))];
    let held = engines.ledger.reserve("a", &payers, 1_000).await.unwrap();
    assert!(engines.ledger.reserve("b", &payers, 1).await.is_err());
    engines.ledger.release(&held).await.unwrap();
    engines.ledger.release(&held).await.unwrap();
    let again = engines.ledger.reserve("c", &payers, 1_000).await.unwrap();
    assert!(again.is_held());
    assert_eq!(get(&redis, &spent_key(this_month())).await, None, "nothing was spent");
}

#[tokio::test]
async fn the_reservation_of_a_relay_that_vanished_is_released_once_its_lease_runs_out() {
    let redis = RedisServer::start();
    let spend = Arc::default();
    let mut short = settings(&redis);
    short.lease = Duration::from_millis(300);
    let payers = [(site_payer(), monthly(1_000))];

    let live = relay(&short, &spend);
    let vanishing = relay(&short, &spend);
    let held = vanishing.ledger.reserve("gone", &payers, 600).await.unwrap();
    drop(vanishing);
    // The live relay's own reservation is renewed, so it outlasts the lease.
    let kept = live.ledger.reserve("kept", &payers, 400).await.unwrap();
    assert!(live.ledger.reserve("early", &payers, 1).await.is_err(), "both still held");

    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = live.ledger.reserve("after", &payers, 600).await.unwrap();
    assert!(after.is_held(), "the vanished relay's 600 were released, the live 400 were not");
    assert!(live.ledger.reserve("more", &payers, 1).await.is_err());

    // Its settle, should it come after all, still counts what it cost.
    live.ledger.settle(&held, 50).await.unwrap();
    live.ledger.settle(&kept, 0).await.unwrap();
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(50));
}

#[tokio::test]
async fn a_month_is_seeded_from_the_database_once_and_never_overwritten_by_a_later_relay() {
    let redis = RedisServer::start();
    let spend = Arc::new(FixedSpend::default());
    spend.0.lock().unwrap().insert((site_payer(), this_month()), 700);
    let one = relay(&settings(&redis), &spend);
    assert!(one.redis_ledger.as_ref().unwrap().seed_current_periods().await.unwrap());
    let reservation = one.ledger.reserve("a", &[(site_payer(), monthly(1_000))], 100).await;
    one.ledger.settle(&reservation.unwrap(), 100).await.unwrap();

    // A relay starting now reads an older figure from its database: it must not win.
    let two = relay(&settings(&redis), &spend);
    assert!(!two.redis_ledger.as_ref().unwrap().seed_current_periods().await.unwrap());
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(800));
    let refused = two.ledger.reserve("b", &[(site_payer(), monthly(1_000))], 201).await;
    assert!(matches!(refused, Err(ReserveError::Exhausted(_))));
}

// Without Redis.

#[tokio::test]
async fn while_redis_is_down_limits_fall_back_to_this_relays_share_and_budgets_refuse() {
    let mut redis = RedisServer::start();
    let spend = Arc::new(FixedSpend::default());
    let engines = relay(&settings(&redis), &spend);
    let payers = [(site_payer(), monthly(1_000))];
    let before = engines.ledger.reserve("before", &payers, 100).await.unwrap();
    redis.stop();

    // 10 per minute over 2 expected relays: 5 here.
    let key = Subject::Key("key-1".into());
    let mut admitted = 0;
    for n in 0..10 {
        if let Ok(ok) =
            engines.limiter.admit(&format!("r{n}"), vec![(key.clone(), rpm(10))], 0).await
        {
            assert!(ok.charge.local);
            assert_eq!(ok.status.unwrap().limit, 5, "the headers show the share");
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    match engines.ledger.reserve("during", &payers, 100).await {
        Err(ReserveError::Unavailable(unavailable)) => {
            assert!(unavailable.retry_after > Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
    assert!(engines.ledger.settle(&before, 100).await.is_err(), "the settle must be retried");

    // Back, empty: the month is seeded again from the database, which recorded the call.
    redis.restart();
    spend.0.lock().unwrap().insert((site_payer(), this_month()), 100);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match engines.ledger.reserve("after", &payers, 900).await {
            Ok(reservation) => break reservation,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("{error:?}"),
        }
    };
    assert!(after.is_held());
    // The call reserved before the loss settles now: the seed counted it already.
    engines.ledger.settle(&before, 100).await.unwrap();
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(100));
    assert!(engines.ledger.reserve("full", &payers, 1).await.is_err(), "exact again: 100 + 900");
    let status = engines.limiter.admit("exact", vec![(key, rpm(10))], 0).await.unwrap();
    assert!(!status.charge.local, "decided in Redis again");
    assert_eq!(status.status.unwrap().limit, 10);
}

#[tokio::test]
async fn with_on_store_error_open_a_call_is_admitted_unreserved_and_its_cost_still_counts() {
    let mut redis = RedisServer::start();
    let mut open = settings(&redis);
    open.on_store_error = OnStoreError::Open;
    let engines = relay(&open, &Arc::default());
    let payers = [(site_payer(), monthly(1_000))];
    engines.ledger.reserve("first", &payers, 1).await.unwrap();

    redis.stop();
    let unreserved = engines.ledger.reserve("during", &payers, 100).await.unwrap();
    assert!(!unreserved.is_held());
    // Redis was only unreachable, not emptied: simulated by seeding the same generation back.
    redis.restart();
    let generation = engines.redis_ledger.as_ref().unwrap().generation();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let marker = format!("test:b:gen:{}", this_month());
    let _: () =
        redis::cmd("SET").arg(marker).arg(generation).query_async(&mut connection).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while engines.ledger.settle(&unreserved, 70).await.is_err() {
        assert!(Instant::now() < deadline, "Redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(70));
}

// Admission: rate limits and budget in one step each way, the same contract for both engines.

fn in_process() -> Engines {
    Engines::in_process(HashMap::new(), Arc::new(Unobserved))
}

fn claim<'a>(
    checks: Vec<(Subject, Rule)>,
    tokens: u64,
    payers: &'a [(Payer, BudgetRule)],
    cost: Micros,
) -> Claim<'a> {
    Claim { checks, tokens, payers, cost }
}

async fn a_refused_rate_limit_reserves_no_budget(engines: Engines) {
    let payers = [(site_payer(), monthly(1_000))];
    let admission = &engines.admission;
    admission.admit(claim(vec![(visitor("a"), rpm(1))], 0, &payers, 600)).await.unwrap();
    match admission.admit(claim(vec![(visitor("a"), rpm(1))], 0, &payers, 400)).await {
        Err(Refusal::RateLimited(rejected)) => assert_eq!(rejected.subject, visitor("a")),
        other => panic!("{other:?}"),
    }
    // The refused request held nothing: the 400 left are still there, for another visitor.
    let pass = admission.admit(claim(vec![(visitor("b"), rpm(1))], 0, &payers, 400)).await.unwrap();
    assert!(pass.reservation().is_held());
    assert!(matches!(
        admission.admit(claim(vec![(visitor("c"), rpm(1))], 0, &payers, 1)).await,
        Err(Refusal::Exhausted(_))
    ));
}

async fn a_refused_budget_consumes_no_rate_limit_token(engines: Engines) {
    let payers = [(site_payer(), monthly(1_000))];
    let checks = || vec![(site(), Rule { rpm: Some(2), tpm: Some(1_000), rpd: None })];
    let admission = &engines.admission;
    let first = admission.admit(claim(checks(), 100, &payers, 600)).await.unwrap();
    assert_eq!(first.status.as_ref().unwrap().remaining_rpm, Some(1));
    match admission.admit(claim(checks(), 100, &payers, 600)).await {
        Err(Refusal::Exhausted(exhausted)) => assert_eq!(exhausted.payer, site_payer()),
        other => panic!("{other:?}"),
    }
    // The refused request took neither a request nor its tokens.
    let second = admission.admit(claim(checks(), 100, &payers, 400)).await.unwrap();
    let status = second.status.unwrap();
    assert_eq!(status.remaining_rpm, Some(0), "two requests admitted, not three");
    assert_eq!((status.limit, status.remaining), (2, 0));
}

async fn a_retried_settle_of_a_pass_counts_once(engines: Engines) {
    let payers = [(site_payer(), monthly(1_000))];
    let checks = || vec![(site(), Rule { tpm: Some(1_000), ..Rule::default() })];
    let admission = &engines.admission;
    let mut pass = admission.admit(claim(checks(), 600, &payers, 500)).await.unwrap();
    let mut retry = pass.clone();
    let crossings = admission.settle(&mut pass, 800, 100).await.unwrap();
    assert_eq!(crossings.iter().map(|c| c.percent).collect::<Vec<_>>(), [80]);
    assert_eq!(admission.settle(&mut pass, 800, 100).await.unwrap(), vec![], "a retry");
    // A copy settled as if by another attempt: with Redis, its marker stops it; in process,
    // nothing retries, and the copy is what would double count, so it is not tried there.
    if engines.redis_ledger.is_some() {
        assert_eq!(admission.settle(&mut retry, 800, 100).await.unwrap(), vec![], "a copy");
    }
    // 800 spent once: 200 left. 100 tokens used once: 900 left.
    let next = admission.admit(claim(checks(), 0, &payers, 200)).await.unwrap();
    assert_eq!(next.status.unwrap().remaining, 900);
    assert!(matches!(
        admission.admit(claim(checks(), 0, &payers, 1)).await,
        Err(Refusal::Exhausted(_))
    ));
}

async fn next_id(admission: &Arc<dyn Admission>, payers: &[(Payer, BudgetRule)]) -> String {
    let mut pass = admission.admit(claim(vec![], 0, payers, 0)).await.unwrap();
    let id = pass.id().to_owned();
    admission.settle(&mut pass, 0, 0).await.unwrap();
    id
}

#[tokio::test]
async fn in_process_a_refused_rate_limit_reserves_no_budget() {
    a_refused_rate_limit_reserves_no_budget(in_process()).await;
}

#[tokio::test]
async fn in_redis_a_refused_rate_limit_reserves_no_budget() {
    let redis = RedisServer::start();
    a_refused_rate_limit_reserves_no_budget(relay(&settings(&redis), &Arc::default())).await;
}

#[tokio::test]
async fn in_process_a_refused_budget_consumes_no_rate_limit_token() {
    a_refused_budget_consumes_no_rate_limit_token(in_process()).await;
}

#[tokio::test]
async fn in_redis_a_refused_budget_consumes_no_rate_limit_token() {
    let redis = RedisServer::start();
    a_refused_budget_consumes_no_rate_limit_token(relay(&settings(&redis), &Arc::default())).await;
}

#[tokio::test]
async fn in_process_a_retried_settle_of_a_pass_counts_once() {
    let engines = in_process();
    let payers = [(site_payer(), monthly(1_000))];
    assert_eq!(next_id(&engines.admission, &payers).await, "", "in process no id is needed");
    a_retried_settle_of_a_pass_counts_once(engines).await;
}

#[tokio::test]
async fn in_redis_a_retried_settle_of_a_pass_counts_once_even_from_another_relay() {
    let redis = RedisServer::start();
    let engines = relay(&settings(&redis), &Arc::default());
    let payers = [(site_payer(), monthly(1_000))];
    let ids =
        (next_id(&engines.admission, &payers).await, next_id(&engines.admission, &payers).await);
    assert_ne!(ids.0, ids.1, "every admission has a reservation id of its own");
    assert_eq!(ids.0.len(), 32);
    a_retried_settle_of_a_pass_counts_once(engines).await;
    assert_eq!(get(&redis, &spent_key(this_month())).await, Some(800));
}

#[tokio::test]
async fn an_admission_of_a_relay_that_vanished_is_released_once_its_lease_runs_out() {
    let redis = RedisServer::start();
    let spend = Arc::default();
    let mut short = settings(&redis);
    short.lease = Duration::from_millis(300);
    let payers = [(site_payer(), monthly(1_000))];
    let checks = || vec![(site(), rpm(100))];

    let live = relay(&short, &spend);
    let vanishing = relay(&short, &spend);
    vanishing.admission.admit(claim(checks(), 0, &payers, 600)).await.unwrap();
    drop(vanishing);
    let mut kept = live.admission.admit(claim(checks(), 0, &payers, 400)).await.unwrap();
    assert!(matches!(
        live.admission.admit(claim(checks(), 0, &payers, 1)).await,
        Err(Refusal::Exhausted(_))
    ));

    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = live.admission.admit(claim(checks(), 0, &payers, 600)).await.unwrap();
    assert!(after.reservation().is_held(), "the vanished 600 were released, the live 400 not");
    assert!(live.admission.admit(claim(checks(), 0, &payers, 1)).await.is_err());
    live.admission.settle(&mut kept, 0, 0).await.unwrap();
}

#[tokio::test]
async fn while_redis_is_down_an_admission_degrades_as_the_limiter_and_the_ledger_do() {
    let mut redis = RedisServer::start();
    let mut open = settings(&redis);
    open.on_store_error = OnStoreError::Open;
    let (closed, open) = (relay(&settings(&redis), &Arc::default()), relay(&open, &Arc::default()));
    let payers = [(site_payer(), monthly(1_000))];
    let key = Subject::Key("key-1".into());
    closed.admission.admit(claim(vec![], 0, &payers, 1)).await.unwrap();
    redis.stop();

    match closed.admission.admit(claim(vec![(key.clone(), rpm(10))], 0, &payers, 1)).await {
        Err(Refusal::Unavailable(unavailable)) => assert!(unavailable.retry_after > Duration::ZERO),
        other => panic!("{other:?}"),
    }
    let mut admitted = 0;
    for _ in 0..10 {
        if let Ok(pass) =
            open.admission.admit(claim(vec![(key.clone(), rpm(10))], 0, &payers, 1)).await
        {
            assert!(pass.charge().local && !pass.reservation().is_held());
            assert_eq!(pass.status.unwrap().limit, 5, "this relay's share");
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}
