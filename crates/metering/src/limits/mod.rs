//! Rate limits: requests per minute and per day and tokens per minute for each secret key and
//! site, and requests per minute and per day for each visitor of a site. [`RateLimiter`] is the
//! seam the HTTP layer calls; [`InProcessLimiter`] implements it in memory for the
//! single-instance default. A backend shared by several relays can implement the same trait later.
//!
//! # Why GCRA by hand rather than the `governor` crate
//!
//! - **A request is admitted against several subjects at once, all or nothing.** A visitor's
//!   request counts against the site (or key) *and* the visitor. Either every limit has room and
//!   all are charged, or none is charged. `governor` charges each limiter on its own, so a request
//!   the visitor's limit turns away would still use up the site's capacity, and one noisy visitor
//!   could then exhaust the whole site.
//! - **Tokens are reserved, then settled.** The size of an answer is known only once it has been
//!   streamed, so admission charges the request's worst case (its prompt's ceiling and
//!   `max_tokens`) to the tokens-per-minute windows, possibly into debt, and
//!   [`RateLimiter::settle_tokens`] gives back the difference to what was used. Concurrent
//!   requests therefore see each other's reservations: a burst of N requests is not all admitted
//!   while the window looks empty. `governor` can only refuse a charge that does not fit, and
//!   cannot give one back.
//!
//! # Semantics
//!
//! A limit of N per period P (60 s or 86 400 s) is a GCRA with emission interval
//! T = ⌈P / N⌉ nanoseconds and a capacity of N × T. The state per (subject, window) is the
//! theoretical arrival time (TAT). A request is admitted when `max(TAT, now) + T - now ≤ N × T`,
//! and admitting it moves TAT to `max(TAT, now) + T`. So "N per minute" admits N at once from a
//! fresh state, then one more every T. The sustained rate is N per P, with bursts of up to N.
//! Rounding T up means the limiter never admits more than the configured rate.
//!
//! - *remaining* is how many more requests (tokens for tokens per minute) would be admitted
//!   right now, and *reset* is `TAT - now` (0 when fully replenished).
//! - **Tokens per minute.** At admission a request only needs room for one token. It is refused
//!   while the window is in debt, and its `Retry-After` is when room for one token returns.
//!   Admitting it moves TAT to `max(TAT, now) + reserved × T` (no bound except saturating
//!   arithmetic); settling moves it back by `(reserved - used) × T` (or on by `used - reserved`),
//!   never below `now`, as if only what was used had been charged.
//! - **A limit of 0** admits nothing. Such a window reports 0 remaining, and its reset and
//!   `Retry-After` are the whole period.
//! - **Refusals.** When several windows refuse a request, the [`Rejected`] names the one that
//!   frees up last: the request can only get in once all of them have room. Its `retry_after` is
//!   whole seconds, rounded up, at least 1 s.
//! - **Status.** [`RateLimitStatus`] describes the window with the fewest remaining (each in its
//!   own unit: requests, or tokens for tokens per minute), and on a tie the one that resets last.
//!   When `checks` holds no limit at all, `admit` returns `Ok(None)` and the response carries no
//!   rate-limit headers.
//!
//! # Time
//!
//! `now` is a [`std::time::Instant`] passed in by the caller, so tests are deterministic without
//! sleeping and the limiter needs no runtime. Under `tokio::time::pause` a caller can pass
//! `tokio::time::Instant::now().into_std()`. The in-process limiter counts nanoseconds from the
//! instant it was created (as `u64`, which lasts 584 years), and treats earlier instants as that
//! instant.
//!
//! # Memory
//!
//! Visitors are unbounded (every IP address is one), but a subject whose windows have all fully
//! replenished (TAT ≤ now) is the same as one with no state at all. Such entries are dropped by
//! an amortised sweep. The sweep runs when the map has doubled since the last sweep (and holds at
//! least [`MIN_SWEEP_LEN`] entries), and at most once a minute otherwise. So memory stays
//! proportional to the subjects active within their longest window (a day, for a per-day limit).
//!
//! # A shared backend later
//!
//! The trait is synchronous because the in-process limiter never waits: its critical section is
//! a few hash lookups under a `std::sync::Mutex`. A backend that does network I/O (Redis, say)
//! must not block an async worker. When one is added, the trait should become async. The calls
//! are admission and the token charge, so the change is small. Such a backend should also take
//! time from its own clock rather than `now`, because `Instant`s do not compare across processes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// `X-RateLimit-Limit`: the limit of the most constraining window.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: what the most constraining window would still admit right now.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds (rounded up) until the most constraining window has fully
/// replenished. This is a delay, not a timestamp.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `X-RateLimit-Remaining-RPM`: the fewest requests left this minute across the subjects checked.
pub const X_RATELIMIT_REMAINING_RPM: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-rpm");
/// `X-RateLimit-Remaining-RPD`: the fewest requests left today across the subjects checked.
pub const X_RATELIMIT_REMAINING_RPD: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-rpd");

/// Every header this module writes, for the CORS layer's `expose_headers` (a browser script can
/// read only the headers listed there).
pub const HEADERS: [HeaderName; 6] = [
    X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET,
    X_RATELIMIT_REMAINING_RPM,
    X_RATELIMIT_REMAINING_RPD,
    header::RETRY_AFTER,
];

/// Below this many tracked subjects, the in-process limiter sweeps only on the timer.
pub const MIN_SWEEP_LEN: usize = 1024;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The longest the in-process limiter goes between sweeps while it is in use.
const SWEEP_INTERVAL_NANOS: u64 = 60 * NANOS_PER_SEC;

/// Who a limit applies to.
///
/// The strings are identifiers, never secrets: for a key, its public lookup id. `Debug` prints
/// them, and so does anything that logs a `Subject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A secret (server-side) key, by its public lookup id.
    Key(String),
    /// A site, by its id.
    Site(String),
    /// One visitor (an IP address or a visitor id), counted within one site.
    Visitor { site: String, visitor: String },
}

impl fmt::Display for Subject {
    /// The kind of subject only ("key", "site", "visitor"), as used in messages to clients.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Key(_) => "key",
            Self::Site(_) => "site",
            Self::Visitor { .. } => "visitor",
        })
    }
}

/// Limits for one subject; `None` means unlimited, `Some(0)` means nothing is admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Requests per day.
    pub rpd: Option<u32>,
    /// Tokens per minute: the worst case reserved at admission, settled after the answer by
    /// [`RateLimiter::settle_tokens`].
    pub tpm: Option<u32>,
}

impl Rule {
    /// Whether this rule limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.rpd.is_none() && self.tpm.is_none()
    }

    /// The limit this rule sets for `window`.
    pub fn limit(&self, window: Window) -> Option<u32> {
        match window {
            Window::RequestsPerMinute => self.rpm,
            Window::RequestsPerDay => self.rpd,
            Window::TokensPerMinute => self.tpm,
        }
    }

    /// The windows this rule limits, with their limits.
    fn windows(self) -> impl Iterator<Item = (Window, u32)> {
        Window::ALL.into_iter().filter_map(move |window| Some((window, self.limit(window)?)))
    }
}

/// One rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    RequestsPerMinute,
    RequestsPerDay,
    TokensPerMinute,
}

impl Window {
    pub const ALL: [Self; 3] =
        [Self::RequestsPerMinute, Self::RequestsPerDay, Self::TokensPerMinute];

    /// A short code: `rpm`, `rpd` or `tpm`.
    pub fn code(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "rpm",
            Self::RequestsPerDay => "rpd",
            Self::TokensPerMinute => "tpm",
        }
    }

    /// For messages: "requests per minute", "requests per day" or "tokens per minute".
    pub fn describe(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests per minute",
            Self::RequestsPerDay => "requests per day",
            Self::TokensPerMinute => "tokens per minute",
        }
    }

    /// The length of the window.
    pub fn period(self) -> Duration {
        Duration::from_nanos(self.period_nanos())
    }

    fn period_nanos(self) -> u64 {
        match self {
            Self::RequestsPerMinute | Self::TokensPerMinute => 60 * NANOS_PER_SEC,
            Self::RequestsPerDay => 86_400 * NANOS_PER_SEC,
        }
    }

    /// "1 request per minute", "10 tokens per minute".
    fn describe_limit(self, limit: u32) -> String {
        let (one, many, per) = match self {
            Self::RequestsPerMinute => ("request", "requests", "minute"),
            Self::RequestsPerDay => ("request", "requests", "day"),
            Self::TokensPerMinute => ("token", "tokens", "minute"),
        };
        format!("{limit} {} per {per}", if limit == 1 { one } else { many })
    }

    /// The window's slot in the in-process limiter's state.
    fn index(self) -> usize {
        match self {
            Self::RequestsPerMinute => 0,
            Self::RequestsPerDay => 1,
            Self::TokensPerMinute => 2,
        }
    }
}

/// The values of the `X-RateLimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// The limit of the most constraining window checked: the one with the fewest remaining,
    /// and on a tie the one that resets last.
    pub limit: u32,
    /// What that window would still admit right now.
    pub remaining: u32,
    /// Time until that window has fully replenished.
    pub reset: Duration,
    /// The fewest requests left this minute across the subjects checked; `None` if none has a
    /// per-minute limit.
    pub remaining_rpm: Option<u32>,
    /// The fewest requests left today across the subjects checked; `None` if none has a per-day
    /// limit.
    pub remaining_rpd: Option<u32>,
}

impl RateLimitStatus {
    /// Writes the `X-RateLimit-*` headers. The reset is in whole seconds, rounded up. The
    /// per-window headers are written only for windows that were limited.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(seconds_rounded_up(self.reset)));
        if let Some(remaining) = self.remaining_rpm {
            headers.insert(X_RATELIMIT_REMAINING_RPM, HeaderValue::from(remaining));
        }
        if let Some(remaining) = self.remaining_rpd {
            headers.insert(X_RATELIMIT_REMAINING_RPD, HeaderValue::from(remaining));
        }
    }
}

/// A request that a limit turned away; nothing was charged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Whose limit it was.
    pub subject: Subject,
    /// Which of its windows. When several refused, this is the one that frees up last.
    pub window: Window,
    /// That window's limit.
    pub limit: u32,
    /// When that window will admit the request: whole seconds, rounded up, at least 1 s.
    pub retry_after: Duration,
    /// The headers' values at the time of the refusal.
    pub status: RateLimitStatus,
}

impl Rejected {
    /// `Retry-After`, in seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs()
    }

    /// What the client is told, e.g. "rate limit exceeded: the visitor's limit of 10 requests
    /// per minute; retry in 7 s". It names the kind of subject, never its identifier.
    pub fn message(&self) -> String {
        format!(
            "rate limit exceeded: the {}'s limit of {}; retry in {} s",
            self.subject,
            self.window.describe_limit(self.limit),
            self.retry_after_secs()
        )
    }

    /// Writes the `X-RateLimit-*` headers and `Retry-After`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.status.apply(headers);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Rejected {}

/// Admits requests and charges tokens under per-subject limits.
pub trait RateLimiter: Send + Sync + fmt::Debug + 'static {
    /// Charges one request, and `reserved_tokens` to the tokens-per-minute windows, to every
    /// (subject, rule) in `checks`, all or nothing: either every limit has room and all are
    /// charged, or nothing is charged and the refusal is returned. `Ok(None)` means no rule in
    /// `checks` limits anything, so there are no headers to send.
    ///
    /// Each subject should appear at most once in `checks`.
    fn admit(
        &self,
        checks: &[(Subject, Rule)],
        reserved_tokens: u64,
        now: Instant,
    ) -> Result<Option<RateLimitStatus>, Rejected>;

    /// Settles the tokens-per-minute windows of `checks` once the answer's size is known:
    /// `used` replaces the `reserved` charged at admission. Using more than was reserved may put
    /// a window (further) into debt, and later requests then wait until it is paid off.
    fn settle_tokens(&self, checks: &[(Subject, Rule)], reserved: u64, used: u64, now: Instant);
}

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

impl RateLimiter for InProcessLimiter {
    fn admit(
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

        // Pass 1: every limit must have room. Nothing is charged yet.
        let mut before = StatusBuilder::default();
        let mut refusal: Option<(&Subject, Window, u32, u64)> = None;
        for (subject, rule) in checks {
            let tats = state.tats.get(subject);
            for (window, limit) in rule.windows() {
                let reading = Reading::new(window, limit, tats, now);
                before.add(window, limit, &reading);
                if reading.wait > 0 && refusal.is_none_or(|(.., wait)| reading.wait > wait) {
                    refusal = Some((subject, window, limit, reading.wait));
                }
            }
        }
        if let Some((subject, window, limit, wait)) = refusal {
            let retry_after =
                Duration::from_secs(seconds_rounded_up(Duration::from_nanos(wait)).max(1));
            let status = before.finish().unwrap_or(RateLimitStatus {
                limit,
                remaining: 0,
                reset: Duration::from_nanos(wait),
                remaining_rpm: None,
                remaining_rpd: None,
            });
            return Err(Rejected { subject: subject.clone(), window, limit, retry_after, status });
        }

        // Pass 2: charge every request window, and the reservation to every token window. A
        // subject's key is cloned only when it has no state yet.
        let mut after = StatusBuilder::default();
        for (subject, rule) in checks {
            if let Some(tats) = state.tats.get_mut(subject) {
                charge_request(tats, *rule, reserved_tokens, now, &mut after);
            } else {
                let mut tats = [0; 3];
                charge_request(&mut tats, *rule, reserved_tokens, now, &mut after);
                if tats.iter().any(|&tat| tat > 0) {
                    state.tats.insert(subject.clone(), tats);
                }
            }
        }
        Ok(after.finish())
    }

    fn settle_tokens(&self, checks: &[(Subject, Rule)], reserved: u64, used: u64, now: Instant) {
        if reserved == used {
            return;
        }
        let now = self.nanos(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        state.sweep_if_due(now);
        let slot = Window::TokensPerMinute.index();
        for (subject, rule) in checks {
            let Some(gcra) = rule.tpm.and_then(|limit| Gcra::new(Window::TokensPerMinute, limit))
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
/// token window, and adds every window's reading after the charge to `status`. Pass 1 has
/// already checked that every window has room.
fn charge_request(
    tats: &mut [u64; 3],
    rule: Rule,
    reserved_tokens: u64,
    now: u64,
    status: &mut StatusBuilder,
) {
    for (window, limit) in rule.windows() {
        let slot = window.index();
        let units = if window == Window::TokensPerMinute { reserved_tokens } else { 1 };
        if units > 0
            && let Some(gcra) = Gcra::new(window, limit)
        {
            tats[slot] = gcra.charge(tats[slot], now, units);
        }
        status.add(window, limit, &Reading::new(window, limit, Some(tats), now));
    }
}

/// The GCRA constants of one limit: N per period P.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// T = ⌈P / N⌉ nanoseconds.
    interval: u64,
    /// N × T: the backlog the window can hold.
    capacity: u64,
}

impl Gcra {
    /// `None` for a limit of 0, which admits nothing.
    fn new(window: Window, limit: u32) -> Option<Self> {
        let limit = u64::from(limit);
        if limit == 0 {
            return None;
        }
        let interval = window.period_nanos().div_ceil(limit);
        Some(Self { interval, capacity: interval.saturating_mul(limit) })
    }

    /// The TAT after charging `units` requests or tokens.
    fn charge(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.max(now).saturating_add(units.saturating_mul(self.interval))
    }

    /// The TAT after replacing a charge of `reserved` units by `used`: what was reserved and not
    /// used is given back, but never below `now` (time already passed is not owed back).
    fn settle(self, tat: u64, now: u64, reserved: u64, used: u64) -> u64 {
        if used >= reserved {
            self.charge(tat, now, used - reserved)
        } else {
            tat.saturating_sub((reserved - used).saturating_mul(self.interval)).max(now)
        }
    }
}

/// One window's state at `now`.
#[derive(Debug)]
struct Reading {
    /// How many more units it would admit right now.
    remaining: u32,
    /// Nanoseconds until it has fully replenished.
    reset: u64,
    /// Nanoseconds until it admits one more unit; 0 if it does now.
    wait: u64,
}

impl Reading {
    fn new(window: Window, limit: u32, tats: Option<&[u64; 3]>, now: u64) -> Self {
        let tat = tats.map_or(0, |tats| tats[window.index()]);
        let Some(gcra) = Gcra::new(window, limit) else {
            let period = window.period_nanos();
            return Self { remaining: 0, reset: period, wait: period };
        };
        let backlog = tat.saturating_sub(now);
        let room = gcra.capacity.saturating_sub(backlog);
        Self {
            remaining: u32::try_from(room / gcra.interval).unwrap_or(u32::MAX),
            reset: backlog,
            wait: (backlog.saturating_add(gcra.interval)).saturating_sub(gcra.capacity),
        }
    }
}

/// Folds window readings into a [`RateLimitStatus`].
#[derive(Debug, Default)]
struct StatusBuilder {
    /// (limit, remaining, reset) of the most constraining window so far.
    headline: Option<(u32, u32, u64)>,
    remaining_rpm: Option<u32>,
    remaining_rpd: Option<u32>,
}

impl StatusBuilder {
    fn add(&mut self, window: Window, limit: u32, reading: &Reading) {
        let tighter = self.headline.is_none_or(|(_, remaining, reset)| {
            reading.remaining < remaining
                || (reading.remaining == remaining && reading.reset > reset)
        });
        if tighter {
            self.headline = Some((limit, reading.remaining, reading.reset));
        }
        let fewest = match window {
            Window::RequestsPerMinute => &mut self.remaining_rpm,
            Window::RequestsPerDay => &mut self.remaining_rpd,
            Window::TokensPerMinute => return,
        };
        *fewest = Some(fewest.map_or(reading.remaining, |fewest| fewest.min(reading.remaining)));
    }

    fn finish(self) -> Option<RateLimitStatus> {
        let (limit, remaining, reset) = self.headline?;
        Some(RateLimitStatus {
            limit,
            remaining,
            reset: Duration::from_nanos(reset),
            remaining_rpm: self.remaining_rpm,
            remaining_rpd: self.remaining_rpd,
        })
    }
}

/// Whole seconds, rounded up.
fn seconds_rounded_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
            let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
            assert_eq!(status.remaining, 7 - admitted);
        }

        let rejected = limiter.admit(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.subject, visitor("a"));
        assert_eq!(rejected.window, Window::RequestsPerMinute);
        assert_eq!(rejected.limit, 7);
        assert_eq!(rejected.retry_after, secs(9), "T rounded up to whole seconds");
        assert_eq!(
            rejected.message(),
            "rate limit exceeded: the visitor's limit of 7 requests per minute; retry in 9 s"
        );
        assert_eq!(rejected.status.remaining, 0);

        assert!(limiter.admit(&checks, 0, start + secs(8)).is_err(), "less than T later");
        let status = limiter.admit(&checks, 0, start + secs(9)).unwrap().unwrap();
        assert_eq!(status.remaining, 0, "only one more is admitted after T");
        assert!(limiter.admit(&checks, 0, start + secs(9)).is_err());
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
                        if limiter.admit(checks, 0, start).is_ok() {
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

        limiter.admit(&from("a"), 0, start).unwrap();
        let status = limiter.admit(&from("a"), 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(0), "the visitor has none left");

        let rejected = limiter.admit(&from("a"), 0, start).unwrap_err();
        assert_eq!(rejected.subject, visitor("a"));
        assert_eq!(rejected.window, Window::RequestsPerMinute);
        assert_eq!(rejected.retry_after, secs(30));

        let site_only = [(site(), rpm(100))];
        let status = limiter.admit(&site_only, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 97, "two admitted requests and this one, not the refused one");

        let status = limiter.admit(&from("b"), 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(1), "another visitor still gets in");
    }

    #[test]
    fn a_refusal_by_a_later_subject_charges_no_earlier_subject() {
        let (limiter, start) = limiter();
        let blocked = Rule { rpd: Some(0), ..Rule::default() };
        let checks = [(site(), rpm(10)), (visitor("a"), rpm(10)), (visitor("b"), blocked)];
        let rejected = limiter.admit(&checks, 0, start).unwrap_err();
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
            limiter.admit(&checks, 0, start).unwrap();
        }
        let rejected = limiter.admit(&checks, 0, start).unwrap_err();
        assert_eq!(rejected.window, Window::RequestsPerMinute);

        let later = start + secs(60);
        for _ in 0..5 {
            limiter.admit(&checks, 0, later).unwrap();
        }
        let rejected = limiter.admit(&checks, 0, later).unwrap_err();
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
        assert!(limiter.admit(&checks, 0, later + secs(5700)).is_ok());
    }

    #[test]
    fn the_per_window_remaining_counts_are_the_fewest_across_subjects() {
        let (limiter, start) = limiter();
        let checks = [
            (Subject::Key("key-1".into()), Rule { rpd: Some(1000), ..Rule::default() }),
            (site(), rpm(100)),
            (visitor("a"), Rule { rpm: Some(10), rpd: Some(20), tpm: None }),
        ];
        let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
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
        let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 0);
        assert_eq!(status.reset, secs(86_400));
    }

    #[test]
    fn a_token_debt_holds_back_the_next_requests_until_it_is_paid_off() {
        let (limiter, start) = limiter();
        // 600 tokens per minute: T = 100 ms, so the window holds 60 s of backlog.
        let checks = [(site(), Rule { rpm: Some(100), tpm: Some(600), rpd: None })];
        let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining_rpm, Some(99), "admission charges no tokens");

        limiter.settle_tokens(&checks, 0, 1200, start);
        let rejected = limiter.admit(&checks, 0, start).unwrap_err();
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

        assert!(limiter.admit(&checks, 0, start + secs(60)).is_err());
        let status =
            limiter.admit(&checks, 0, start + Duration::from_millis(60_100)).unwrap().unwrap();
        assert_eq!(status.remaining, 1, "the tokens-per-minute window has room for one token");
    }

    #[test]
    fn tokens_are_charged_only_to_subjects_with_a_token_limit() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(600), ..Rule::default() }), (visitor("a"), rpm(5))];
        limiter.settle_tokens(&checks, 0, 30, start);
        assert_eq!(limiter.tracked(), 1);
        let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
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
        limiter.admit(&checks, 0, start).unwrap();
        let rejected = limiter.admit(&checks, 0, start + Duration::from_millis(500)).unwrap_err();
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
        limiter.admit(&daily, 0, start).unwrap();
        for i in 0..10_000 {
            limiter.admit(&[(visitor(&i.to_string()), rpm(1))], 0, start).unwrap();
        }
        assert!(limiter.tracked() > 10_000);

        let later = start + secs(120);
        limiter.admit(&[(visitor("new"), rpm(1))], 0, later).unwrap();
        assert_eq!(limiter.tracked(), 2, "only the per-day visitor and the new one are left");
        assert!(limiter.admit(&daily, 0, later).is_err(), "live state survives the sweep");

        let next_day = start + secs(86_400 + 60);
        limiter.admit(&[(visitor("newer"), rpm(1))], 0, next_day).unwrap();
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
                .admit(
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
        assert_eq!(limiter.admit(&[], 0, start), Ok(None));
        assert_eq!(
            limiter.admit(&[(site(), Rule::default()), (visitor("a"), Rule::default())], 9, start),
            Ok(None)
        );
        limiter.settle_tokens(&[(site(), Rule::default())], 0, 1000, start);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_burst_is_bounded_by_the_worst_cases_reserved_at_admission() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(1000), ..Rule::default() })];
        // Concurrent requests, none settled yet: each sees the others' reservations.
        limiter.admit(&checks, 600, start).unwrap();
        limiter.admit(&checks, 600, start).unwrap();
        let rejected = limiter.admit(&checks, 600, start).unwrap_err();
        assert_eq!(rejected.window, Window::TokensPerMinute);
    }

    #[test]
    fn settling_gives_back_what_was_reserved_and_not_used() {
        let (limiter, start) = limiter();
        let checks = [(site(), Rule { tpm: Some(1000), ..Rule::default() })];
        limiter.admit(&checks, 500, start).unwrap();
        limiter.admit(&checks, 500, start).unwrap();
        assert!(limiter.admit(&checks, 1, start).is_err(), "the window is full");
        // Both answers were short: 100 tokens each.
        limiter.settle_tokens(&checks, 500, 100, start);
        limiter.settle_tokens(&checks, 500, 100, start);
        let status = limiter.admit(&checks, 0, start).unwrap().unwrap();
        assert_eq!(status.remaining, 800);
        // Using more than reserved charges the excess.
        limiter.settle_tokens(&checks, 0, 800, start);
        assert!(limiter.admit(&checks, 0, start).is_err());
    }

    #[test]
    fn the_limiter_can_be_shared_as_a_trait_object() {
        let limiter: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(InProcessLimiter::new());
        assert_eq!(format!("{limiter:?}"), "InProcessLimiter { tracked: 0, .. }");
    }
}
