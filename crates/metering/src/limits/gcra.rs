//! The GCRA arithmetic both limiters share, in integer units of time: nanoseconds for the
//! in-process limiter, microseconds for Redis (whose `TIME` has microseconds, and whose Lua
//! numbers are doubles, exact only below 2^53). The Redis script does the same arithmetic in Lua
//! and hands back the theoretical arrival times; the readings, the refusal and the headers are
//! then worked out here, by the same code for both engines.

use std::time::Duration;

use super::{RateLimitStatus, Rejected, Rule, Subject, Window};

/// A unit of time: how many of it make a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit(pub(crate) u64);

impl Unit {
    pub(crate) const NANOS: Self = Self(1_000_000_000);
    pub(crate) const MICROS: Self = Self(1_000_000);

    pub(crate) fn period(self, window: Window) -> u64 {
        window.period().as_secs().saturating_mul(self.0)
    }

    pub(crate) fn duration(self, amount: u64) -> Duration {
        Duration::from_nanos(amount.saturating_mul(1_000_000_000 / self.0))
    }
}

/// The GCRA constants of one limit: N per period P.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    /// T = ⌈P / N⌉ units.
    pub(crate) interval: u64,
    /// N × T: the backlog the window can hold.
    pub(crate) capacity: u64,
}

impl Gcra {
    /// `None` for a limit of 0, which admits nothing.
    pub(crate) fn new(window: Window, limit: u32, unit: Unit) -> Option<Self> {
        let limit = u64::from(limit);
        if limit == 0 {
            return None;
        }
        let interval = unit.period(window).div_ceil(limit);
        Some(Self { interval, capacity: interval.saturating_mul(limit) })
    }

    /// The TAT after charging `units` requests or tokens.
    pub(crate) fn charge(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.max(now).saturating_add(units.saturating_mul(self.interval))
    }

    /// The TAT after replacing a charge of `reserved` units by `used`: what was reserved and not
    /// used is given back, but never below `now` (time already passed is not owed back).
    pub(crate) fn settle(self, tat: u64, now: u64, reserved: u64, used: u64) -> u64 {
        if used >= reserved {
            self.charge(tat, now, used - reserved)
        } else {
            tat.saturating_sub((reserved - used).saturating_mul(self.interval)).max(now)
        }
    }
}

/// One window's state at `now`.
#[derive(Debug)]
pub(crate) struct Reading {
    /// How many more units it would admit right now.
    pub(crate) remaining: u32,
    /// Time units until it has fully replenished.
    pub(crate) reset: u64,
    /// Time units until it admits one more unit; 0 if it does now.
    pub(crate) wait: u64,
}

impl Reading {
    pub(crate) fn new(window: Window, limit: u32, tat: u64, now: u64, unit: Unit) -> Self {
        let Some(gcra) = Gcra::new(window, limit, unit) else {
            let period = unit.period(window);
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

/// The theoretical arrival times of one subject, indexed by [`Window::index`]; 0 is "never".
pub(crate) type Tats = [u64; 3];

/// The refusal of `checks` at `now` given each subject's TATs (in the order of `checks`), or
/// `Ok` when every limit has room. When several windows refuse, the one that frees up last is
/// named; its `Retry-After` is whole seconds, rounded up, at least 1 s.
pub(crate) fn refusal(
    checks: &[(Subject, Rule)],
    tats: impl Fn(usize) -> Tats,
    now: u64,
    unit: Unit,
) -> Result<(), Rejected> {
    let mut before = StatusBuilder::default();
    let mut refused: Option<(&Subject, Window, u32, u64)> = None;
    for (index, (subject, rule)) in checks.iter().enumerate() {
        let tats = tats(index);
        for (window, limit) in rule.windows() {
            let reading = Reading::new(window, limit, tats[window.index()], now, unit);
            before.add(window, limit, &reading);
            if reading.wait > 0 && refused.is_none_or(|(.., wait)| reading.wait > wait) {
                refused = Some((subject, window, limit, reading.wait));
            }
        }
    }
    let Some((subject, window, limit, wait)) = refused else { return Ok(()) };
    let wait = unit.duration(wait);
    let retry_after = Duration::from_secs(seconds_rounded_up(wait).max(1));
    let status = before.finish(unit).unwrap_or(RateLimitStatus {
        limit,
        remaining: 0,
        reset: wait,
        remaining_rpm: None,
        remaining_rpd: None,
    });
    Err(Rejected { subject: subject.clone(), window, limit, retry_after, status })
}

/// The status of `checks` at `now` given each subject's TATs (after the request's charge).
pub(crate) fn status(
    checks: &[(Subject, Rule)],
    tats: impl Fn(usize) -> Tats,
    now: u64,
    unit: Unit,
) -> Option<RateLimitStatus> {
    let mut after = StatusBuilder::default();
    for (index, (_, rule)) in checks.iter().enumerate() {
        let tats = tats(index);
        for (window, limit) in rule.windows() {
            after.add(window, limit, &Reading::new(window, limit, tats[window.index()], now, unit));
        }
    }
    after.finish(unit)
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

    fn finish(self, unit: Unit) -> Option<RateLimitStatus> {
        let (limit, remaining, reset) = self.headline?;
        Some(RateLimitStatus {
            limit,
            remaining,
            reset: unit.duration(reset),
            remaining_rpm: self.remaining_rpm,
            remaining_rpd: self.remaining_rpd,
        })
    }
}

/// Whole seconds, rounded up.
pub(crate) fn seconds_rounded_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}
