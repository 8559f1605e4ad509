//! Rate limits: requests per minute and per day and tokens per minute for each secret key and
//! site, and requests per minute and per day for each visitor of a site. [`RateLimiter`] is the
//! seam the HTTP layer calls, with two engines: [`InProcessLimiter`] keeps the state in memory,
//! for one relay; [`RedisLimiter`] keeps it in Redis, so that several relays share one set of
//! limits (and falls back to each relay's share of every limit, in process, while Redis cannot
//! be reached).
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
//! - **The same arithmetic runs in Redis**, in the one Lua script that admits a request
//!   (`admission/admit.lua`, shared with the budget's reservation: see [`crate::admission`]).
//!
//! # Semantics
//!
//! A limit of N per period P (60 s or 86 400 s) is a GCRA with emission interval
//! T = ⌈P / N⌉ time units (nanoseconds in process, microseconds in Redis) and a capacity of
//! N × T. The state per (subject, window) is the theoretical arrival time (TAT). A request is
//! admitted when `max(TAT, now) + T - now ≤ N × T`, and admitting it moves TAT to
//! `max(TAT, now) + T`. So "N per minute" admits N at once from a fresh state, then one more
//! every T. The sustained rate is N per P, with bursts of up to N. Rounding T up means the
//! limiter never admits more than the configured rate.
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
//!   When `checks` holds no limit at all, `admit` returns no status and the response carries no
//!   rate-limit headers.
//!
//! Both engines compute readings, refusals and headers with the same code (`gcra.rs`); Redis's
//! script only decides and returns the TATs.
//!
//! # Time
//!
//! The in-process limiter reads [`std::time::Instant`]; its `admit_at` and `settle_tokens_at`
//! take the instant from the caller, so tests are deterministic without sleeping. It counts
//! nanoseconds from the instant it was created (as `u64`, which lasts 584 years), and treats
//! earlier instants as that instant. The Redis limiter takes time from the Redis server's clock
//! (`TIME`), since the relays' clocks do not agree with each other.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::Unavailable;

mod gcra;
mod in_process;
mod redis;

pub(crate) use gcra::Tats;
pub use in_process::{InProcessLimiter, MIN_SWEEP_LEN};
pub use redis::RedisLimiter;

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
    pub(crate) fn windows(self) -> impl Iterator<Item = (Window, u32)> {
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
        match self {
            Self::RequestsPerMinute | Self::TokensPerMinute => Duration::from_secs(60),
            Self::RequestsPerDay => Duration::from_secs(86_400),
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

    /// The window's slot in a subject's state (both engines).
    pub(crate) fn index(self) -> usize {
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
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(gcra::seconds_rounded_up(self.reset)));
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

/// What a request was charged at admission, kept until its answer's size is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCharge {
    /// The charge's id, unique per admission (with Redis, the reservation id the relay made):
    /// settling the same charge twice (a retry) gives back once. Empty in process, where
    /// nothing is retried.
    pub id: String,
    /// The subjects and rules it was admitted under (the local share of each rule, when
    /// `local`).
    pub checks: Vec<(Subject, Rule)>,
    /// Tokens charged to the tokens-per-minute windows: the request's worst case.
    pub reserved: u64,
    /// Admitted by the in-process fallback while the shared store could not be reached: it is
    /// settled there too.
    pub local: bool,
}

impl TokenCharge {
    /// Whether settling `used` tokens would change anything.
    pub fn needs_settling(&self, used: u64) -> bool {
        used != self.reserved && self.checks.iter().any(|(_, rule)| rule.tpm.is_some())
    }
}

/// An admitted request: the headers' values, and what to settle later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// `None` when no rule limits anything, so there are no headers to send.
    pub status: Option<RateLimitStatus>,
    pub charge: TokenCharge,
}

/// Admits requests and charges tokens under per-subject limits.
#[async_trait]
pub trait RateLimiter: Send + Sync + fmt::Debug + 'static {
    /// Charges one request, and `reserved_tokens` to the tokens-per-minute windows, to every
    /// (subject, rule) in `checks`, all or nothing: either every limit has room and all are
    /// charged, or nothing is charged and the refusal is returned.
    ///
    /// Each subject should appear at most once in `checks`. `id` identifies the charge for
    /// [`RateLimiter::settle_tokens`]: unique per admission.
    async fn admit(
        &self,
        id: &str,
        checks: Vec<(Subject, Rule)>,
        reserved_tokens: u64,
    ) -> Result<Admitted, Rejected>;

    /// Settles the tokens-per-minute windows of a charge once the answer's size is known:
    /// `used` replaces the tokens reserved at admission. Using more than was reserved may put a
    /// window (further) into debt, and later requests then wait until it is paid off. Settling
    /// the same charge again changes nothing. An error means the shared store could not be
    /// reached: retry later.
    async fn settle_tokens(&self, charge: &TokenCharge, used: u64) -> Result<(), Unavailable>;
}
