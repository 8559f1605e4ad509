//! The single-instance limiter: GCRA state in one mutex-guarded map.
//!
//! # Memory
//!
//! Visitors are unbounded (every IP address is one), but a subject whose windows have all fully
//! replenished (TAT ≤ now) is the same as one with no state at all. Such entries are dropped by
//! an amortised sweep. The sweep runs when the map has doubled since the last sweep (and holds at
//! least [`MIN_SWEEP_LEN`] entries), and at most once a minute otherwise. So memory stays
//! proportional to the subjects active within their longest window (a day, for a per-day limit).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;

use super::gcra::{self, Gcra, Unit};
use super::{Admitted, RateLimitStatus, RateLimiter, Rejected, Rule, Subject, TokenCharge, Window};
use crate::Unavailable;

/// Below this many tracked subjects, the in-process limiter sweeps only on the timer.
pub const MIN_SWEEP_LEN: usize = 1024;

/// The longest the in-process limiter goes between sweeps while it is in use.
const SWEEP_INTERVAL_NANOS: u64 = 60 * 1_000_000_000;

/// The single-instance [`RateLimiter`]: GCRA state in one mutex-guarded map.
pub struct InProcessLimiter {
    /// Times are kept as nanoseconds since this instant.
    origin: Instant,
    state: Mutex<State>,
}

/// The state behind the mutex.
#[derive(Default)]
struct State {
    /// Theoretical arrival times in nanoseconds since `origin`, indexed by [`Window::index`].
    /// A TAT at or before now means that window holds no backlog (0 is used for "never").
    tats: HashMap<Subject, [u64; 3]>,
    /// The map's size after the last sweep.
    len_after_sweep: usize,
    /// When the last sweep ran.
    swept_at: u64,
}

impl InProcessLimiter {
    pub fn new() -> Self {
        Self { origin: Instant::now(), state: Mutex::new(State::default()) }
    }

    /// How many subjects hold state.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().tats.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in a critical section panics, and a panic elsewhere cannot leave the map
        // inconsistent. A poisoned lock is therefore safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InProcessLimiter {
    /// Prints the number of tracked subjects, never their identifiers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessLimiter")
            .field("tracked", &self.lock().tats.len())
            .finish_non_exhaustive()
    }
}

impl InProcessLimiter {
    /// [`RateLimiter::admit`] at `now`: `Ok(None)` means no rule in `checks` limits anything.
    pub fn admit_at(
        &self,
        checks: &[(Subject, Rule)],
        reserved_tokens: u64,
        now: Instant,
    ) -> Result<Option<RateLimitStatus>, Rejected> {
        debug_assert!(
            checks.iter().enumerate().all(|(i, (subject, _))| {
                checks[..i].iter().all(|(earlier, _)| earlier != subject)
            }),
            "each subject should appear at most once in `checks`"
        );
        let now = self.nanos(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        state.sweep_if_due(now);
        let tats_of = |state: &State, index: usize| {
            state.tats.get(&checks[index].0).copied().unwrap_or_default()
        };

        // Every limit must have room before anything is charged.
        gcra::refusal(checks, |index| tats_of(state, index), now, Unit::NANOS)?;

        // Charge every request window, and the reservation to every token window. A subject's
        // key is cloned only when it has no state yet.
        for (subject, rule) in checks {
            if let Some(tats) = state.tats.get_mut(subject) {
                charge_request(tats, *rule, reserved_tokens, now);
            } else {
                let mut tats = [0; 3];
                charge_request(&mut tats, *rule, reserved_tokens, now);
                if tats.iter().any(|&tat| tat > 0) {
                    state.tats.insert(subject.clone(), tats);
                }
            }
        }
        Ok(gcra::status(checks, |index| tats_of(state, index), now, Unit::NANOS))
    }

    /// [`RateLimiter::settle_tokens`] at `now`, for a request admitted under `checks` with
    /// `reserved` tokens.
    pub fn settle_tokens_at(
        &self,
        checks: &[(Subject, Rule)],
        reserved: u64,
        used: u64,
        now: Instant,
    ) {
        if reserved == used {
            return;
        }
        let now = self.nanos(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        state.sweep_if_due(now);
        let slot = Window::TokensPerMinute.index();
        for (subject, rule) in checks {
            let Some(gcra) =
                rule.tpm.and_then(|limit| Gcra::new(Window::TokensPerMinute, limit, Unit::NANOS))
            else {
                continue;
            };
            if let Some(tats) = state.tats.get_mut(subject) {
                tats[slot] = gcra.settle(tats[slot], now, reserved, used);
            } else if used > reserved {
                // Swept meanwhile (the reservation was paid off): only the excess is new.
                let mut tats = [0; 3];
                tats[slot] = gcra.charge(0, now, used - reserved);
                state.tats.insert(subject.clone(), tats);
            }
        }
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn admit(
        &self,
        id: &str,
        checks: Vec<(Subject, Rule)>,
        reserved_tokens: u64,
    ) -> Result<Admitted, Rejected> {
        let status = self.admit_at(&checks, reserved_tokens, Instant::now())?;
        let charge =
            TokenCharge { id: id.to_owned(), checks, reserved: reserved_tokens, local: true };
        Ok(Admitted { status, charge })
    }

    async fn settle_tokens(&self, charge: &TokenCharge, used: u64) -> Result<(), Unavailable> {
        self.settle_tokens_at(&charge.checks, charge.reserved, used, Instant::now());
        Ok(())
    }
}

impl State {
    /// Drops subjects whose windows have all fully replenished. The sweep runs when the map has
    /// doubled since the last sweep (and is not tiny), or when a minute has passed since the
    /// last one. Its cost is therefore amortised over the insertions that grew the map, or
    /// spread over a minute.
    fn sweep_if_due(&mut self, now: u64) {
        let grown = self.tats.len() >= self.len_after_sweep.saturating_mul(2).max(MIN_SWEEP_LEN);
        let stale = now.saturating_sub(self.swept_at) >= SWEEP_INTERVAL_NANOS;
        if !grown && !stale {
            return;
        }
        self.tats.retain(|_, tats| tats.iter().any(|&tat| tat > now));
        let len = self.tats.len();
        if self.tats.capacity() > 4 * len.max(MIN_SWEEP_LEN) {
            self.tats.shrink_to(2 * len);
        }
        self.len_after_sweep = len;
        self.swept_at = self.swept_at.max(now);
    }
}

/// Charges one request to `rule`'s request windows in `tats` and `reserved_tokens` to its
/// token window. Every window has been checked for room already.
fn charge_request(tats: &mut [u64; 3], rule: Rule, reserved_tokens: u64, now: u64) {
    for (window, limit) in rule.windows() {
        let slot = window.index();
        let units = if window == Window::TokensPerMinute { reserved_tokens } else { 1 };
        if units > 0
            && let Some(gcra) = Gcra::new(window, limit, Unit::NANOS)
        {
            tats[slot] = gcra.charge(tats[slot], now, units);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
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

    /// A limiter and the instant tests count from (after the limiter's origin).
    fn limiter() -> (InProcessLimiter, Instant) {
        let limiter = InProcessLimiter::new();
        (limiter, Instant::now())
    }

    #[test]
    fn n_per_minute_admits_exactly_n_at_once_then_one_more_every_interval() {
        let (limiter, start) = limiter();
        // 7 per minute: T = 60 s / 7 ≈ 8.57 s.
        let checks = [(visitor("a"), rpm(7))];
        for admitted in 1..=7 {
            let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
            assert_eq!(status.remaining, 7 - admitted);
        }

        let rejected = limiter.admit_at(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.subject, visitor("a"));
        assert_eq!(rejected.window, Window::RequestsPerMinute);
        assert_eq!(rejected.limit, 7);
        assert_eq!(rejected.retry_after, secs(9), "T rounded up to whole seconds");
        assert_eq!(
            rejected.message(),
            "rate limit exceeded: the visitor's limit of 7 requests per minute; retry in 9 s"
        );
        assert_eq!(rejected.status.remaining, 0);

        assert!(limiter.admit_at(&checks, 0, start + secs(8)).is_err(), "less than T later");
        let status = limiter.admit_at(&checks, 0, start + secs(9)).unwrap().unwrap();
        assert_eq!(status.remaining, 0, "only one more is admitted after T");
        assert!(limiter.admit_at(&checks, 0, start + secs(9)).is_err());
    }

    #[test]
    fn n_per_minute_admits_exactly_n_under_concurrent_load() {
        let (limiter, start) = limiter();
        let checks = [(site(), rpm(50))];
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // 16 threads, 200 attempts in all.
            for thread in 0..16 {
                let attempts = 200 / 16 + usize::from(thread < 200 % 16);
                let (limiter, checks, admitted) = (&limiter, &checks, &admitted);
                scope.spawn(move || {
                    for _ in 0..attempts {
                        if limiter.admit_at(checks, 0, start).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn a_request_refused_by_the_visitor_limit_is_not_charged_to_the_site() {
        let (limiter, start) = limiter();
        let from = |name| [(site(), rpm(100)), (visitor(name), rpm(2))];

        limiter.admit_at(&from("a"), 0, start).unwrap();
        let status = limiter.admit_at(&from("a"), 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(0), "the visitor has none left");

        let rejected = limiter.admit_at(&from("a"), 0, start).unwrap_err();
        assert_eq!(rejected.subject, visitor("a"));
        assert_eq!(rejected.window, Window::RequestsPerMinute);
        assert_eq!(rejected.retry_after, secs(30));

        let site_only = [(site(), rpm(100))];
        let status = limiter.admit_at(&site_only, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 97, "two admitted requests and this one, not the refused one");

        let status = limiter.admit_at(&from("b"), 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(1), "another visitor still gets in");
    }

    #[test]
    fn a_refusal_by_a_later_subject_charges_no_earlier_subject() {
        let (limiter, start) = limiter();
        let blocked = Rule { rpd: Some(0), ..Rule::default() };
        let checks = [(site(), rpm(10)), (visitor("a"), rpm(10)), (visitor("b"), blocked)];
        let rejected = limiter.admit_at(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.subject, visitor("b"));
        assert_eq!(rejected.window, Window::RequestsPerDay);
        assert_eq!(rejected.retry_after, secs(86_400), "a limit of 0 refuses for the whole period");
        assert_eq!(limiter.tracked(), 0, "nothing was charged");
    }

    #[test]
    fn a_daily_limit_works_independently_of_the_per_minute_limit() {
        let (limiter, start) = limiter();
        // T for 15 per day is 5760 s.
        let checks = [(site(), Rule { rpm: Some(10), rpd: Some(15), tpm: None })];
        for _ in 0..10 {
            limiter.admit_at(&checks, 0, start).unwrap();
        }
        let rejected = limiter.admit_at(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.window, Window::RequestsPerMinute);

        let later = start + secs(60);
        for _ in 0..5 {
            limiter.admit_at(&checks, 0, later).unwrap();
        }
        let rejected = limiter.admit_at(&checks, 0, later).unwrap_err();
        assert_eq!(rejected.window, Window::RequestsPerDay);
        assert_eq!(rejected.retry_after, secs(15 * 5760 + 5760 - 86_400 - 60));
        assert_eq!(
            rejected.status,
            RateLimitStatus {
                limit: 15,
                remaining: 0,
                reset: secs(15 * 5760 - 60),
                remaining_rpm: Some(5),
                remaining_rpd: Some(0),
            }
        );
        assert!(limiter.admit_at(&checks, 0, later + secs(5700)).is_ok());
    }

    #[test]
    fn the_per_window_remaining_counts_are_the_fewest_across_subjects() {
        let (limiter, start) = limiter();
        let checks = [
            (Subject::Key("key-1".into()), Rule { rpd: Some(1000), ..Rule::default() }),
            (site(), rpm(100)),
            (visitor("a"), Rule { rpm: Some(10), rpd: Some(20), tpm: None }),
        ];
        let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
        assert_eq!(
            status,
            RateLimitStatus {
                limit: 10,
                remaining: 9,
                reset: secs(6),
                remaining_rpm: Some(9),
                remaining_rpd: Some(19),
            }
        );
    }

    #[test]
    fn the_status_names_the_window_that_resets_last_among_equally_constrained_ones() {
        let (limiter, start) = limiter();
        let checks = [(visitor("a"), Rule { rpm: Some(1), rpd: Some(1), tpm: None })];
        let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 0);
        assert_eq!(status.reset, secs(86_400));
    }

    #[test]
    fn a_token_debt_holds_back_the_next_requests_until_it_is_paid_off() {
        let (limiter, start) = limiter();
        // 600 tokens per minute: T = 100 ms, so the window holds 60 s of backlog.
        let checks = [(site(), Rule { rpm: Some(100), tpm: Some(600), rpd: None })];
        let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(99), "admission charges no tokens");

        limiter.settle_tokens_at(&checks, 0, 1200, start);
        let rejected = limiter.admit_at(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.window, Window::TokensPerMinute);
        assert_eq!(rejected.limit, 600);
        // A backlog of 120 s against a capacity of 60 s: room for one token in 60.1 s.
        assert_eq!(rejected.retry_after, secs(61));
        assert_eq!(
            rejected.message(),
            "rate limit exceeded: the site's limit of 600 tokens per minute; retry in 61 s"
        );
        assert_eq!((rejected.status.limit, rejected.status.remaining), (600, 0));
        assert_eq!(rejected.status.reset, secs(120));

        assert!(limiter.admit_at(&checks, 0, start + secs(60)).is_err());
        let status =
            limiter.admit_at(&checks, 0, start + Duration::from_millis(60_100)).unwrap().unwrap();
        assert_eq!(status.remaining, 1, "the tokens-per-minute window has room for one token");
    }

    #[test]
    fn tokens_are_charged_only_to_subjects_with_a_token_limit() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(600), ..Rule::default() }), (visitor("a"), rpm(5))];
        limiter.settle_tokens_at(&checks, 0, 30, start);
        assert_eq!(limiter.tracked(), 1);
        let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 4, "the visitor's 4 requests are fewer than 570 tokens");
        assert_eq!(status.remaining_rpm, Some(4));
    }

    #[test]
    fn apply_writes_the_rate_limit_headers() {
        let status = RateLimitStatus {
            limit: 10,
            remaining: 3,
            reset: Duration::from_millis(1200),
            remaining_rpm: Some(3),
            remaining_rpd: None,
        };
        let mut headers = HeaderMap::new();
        status.apply(&mut headers);
        let mut expected = HeaderMap::new();
        expected.insert("x-ratelimit-limit", HeaderValue::from_static("10"));
        expected.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        expected.insert("x-ratelimit-reset", HeaderValue::from_static("2"));
        expected.insert("x-ratelimit-remaining-rpm", HeaderValue::from_static("3"));
        assert_eq!(headers, expected);
    }

    #[test]
    fn a_rejection_adds_retry_after_to_the_headers() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { rpm: Some(1), rpd: Some(100), tpm: None })];
        limiter.admit_at(&checks, 0, start).unwrap();
        let rejected =
            limiter.admit_at(&checks, 0, start + Duration::from_millis(500)).unwrap_err();
        let mut headers = HeaderMap::new();
        rejected.apply(&mut headers);
        let mut expected = HeaderMap::new();
        expected.insert("x-ratelimit-limit", HeaderValue::from_static("1"));
        expected.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        expected.insert("x-ratelimit-reset", HeaderValue::from_static("60"));
        expected.insert("x-ratelimit-remaining-rpm", HeaderValue::from_static("0"));
        expected.insert("x-ratelimit-remaining-rpd", HeaderValue::from_static("99"));
        expected.insert("retry-after", HeaderValue::from_static("60"));
        assert_eq!(headers, expected);
        assert_eq!(
            rejected.message(),
            "rate limit exceeded: the site's limit of 1 request per minute; retry in 60 s"
        );
    }

    #[test]
    fn state_of_subjects_that_have_replenished_is_swept_away() {
        let (limiter, start) = limiter();
        let daily = [(visitor("daily"), Rule { rpd: Some(1), ..Rule::default() })];
        limiter.admit_at(&daily, 0, start).unwrap();
        for i in 0..10_000 {
            limiter.admit_at(&[(visitor(&i.to_string()), rpm(1))], 0, start).unwrap();
        }
        assert!(limiter.tracked() > 10_000);

        let later = start + secs(120);
        limiter.admit_at(&[(visitor("new"), rpm(1))], 0, later).unwrap();
        assert_eq!(limiter.tracked(), 2, "only the per-day visitor and the new one are left");
        assert!(limiter.admit_at(&daily, 0, later).is_err(), "live state survives the sweep");

        let next_day = start + secs(86_400 + 60);
        limiter.admit_at(&[(visitor("newer"), rpm(1))], 0, next_day).unwrap();
        assert_eq!(limiter.tracked(), 1);
        assert!(limiter.state.lock().unwrap().tats.capacity() < 4 * MIN_SWEEP_LEN);
    }

    #[test]
    fn a_growing_map_is_swept_before_the_minute_is_up() {
        let (limiter, start) = limiter();
        // Each visitor is admitted at its own millisecond and has replenished 1 ms later, all
        // within 11 s: without the growth trigger, all of them would wait for the minute's sweep.
        for i in 0..(10 * MIN_SWEEP_LEN as u64) {
            let now = start + Duration::from_millis(i);
            limiter
                .admit_at(
                    &[(visitor(&i.to_string()), Rule { rpm: Some(60_000), ..Rule::default() })],
                    0,
                    now,
                )
                .unwrap();
        }
        assert!(limiter.tracked() <= MIN_SWEEP_LEN);
    }

    #[test]
    fn checks_without_limits_are_admitted_with_no_status() {
        let (limiter, start) = limiter();
        assert_eq!(limiter.admit_at(&[], 0, start), Ok(None));
        assert_eq!(
            limiter.admit_at(
                &[(site(), Rule::default()), (visitor("a"), Rule::default())],
                9,
                start
            ),
            Ok(None)
        );
        limiter.settle_tokens_at(&[(site(), Rule::default())], 0, 1000, start);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_burst_is_bounded_by_the_worst_cases_reserved_at_admission() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(1000), ..Rule::default() })];
        // Concurrent requests, none settled yet: each sees the others' reservations.
        limiter.admit_at(&checks, 600, start).unwrap();
        limiter.admit_at(&checks, 600, start).unwrap();
        let rejected = limiter.admit_at(&checks, 600, start).unwrap_err();
        assert_eq!(rejected.window, Window::TokensPerMinute);
    }

    #[test]
    fn settling_gives_back_what_was_reserved_and_not_used() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(1000), ..Rule::default() })];
        limiter.admit_at(&checks, 500, start).unwrap();
        limiter.admit_at(&checks, 500, start).unwrap();
        assert!(limiter.admit_at(&checks, 1, start).is_err(), "the window is full");
        // Both answers were short: 100 tokens each.
        limiter.settle_tokens_at(&checks, 500, 100, start);
        limiter.settle_tokens_at(&checks, 500, 100, start);
        let status = limiter.admit_at(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 800);
        // Using more than reserved charges the excess.
        limiter.settle_tokens_at(&checks, 0, 800, start);
        assert!(limiter.admit_at(&checks, 0, start).is_err());
    }

    #[tokio::test]
    async fn the_limiter_can_be_shared_as_a_trait_object() {
        let limiter: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(InProcessLimiter::new());
        assert_eq!(format!("{limiter:?}"), "InProcessLimiter { tracked: 0, .. }");
        let checks = vec![(site(), Rule { tpm: Some(1000), ..Rule::default() })];
        let admitted = limiter.admit("req-1", checks.clone(), 600).await.unwrap();
        assert_eq!(admitted.status.unwrap().remaining, 400);
        assert!(admitted.charge.local, "in process, every charge is local");
        limiter.settle_tokens(&admitted.charge, 100).await.unwrap();
        let admitted = limiter.admit("req-2", checks, 0).await.unwrap();
        assert_eq!(admitted.status.unwrap().remaining, 900);
    }
}
