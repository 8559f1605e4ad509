//! Decisions taken without the shared store: each is reported to an [`Observer`] (the relay
//! counts them in its metrics) and logged, at most once per [`LOG_EVERY`] per kind of decision
//! with the number taken since the last line, so that an outage under load does not write one
//! line per request.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a kind of degraded decision goes unlogged while it is being taken.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A decision taken without the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A request's rate limits were checked in process, against this relay's share of each
    /// limit.
    LimitLocalShare,
    /// A request was refused (503) because its budget could not be reserved.
    BudgetRefused,
    /// A request was admitted without a budget reservation (`budgets.on_store_error = "open"`).
    BudgetUnreserved,
}

impl Decision {
    pub const ALL: [Self; 3] = [Self::LimitLocalShare, Self::BudgetRefused, Self::BudgetUnreserved];

    /// The metric label: `limit_local_share`, `budget_refused`, `budget_unreserved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LimitLocalShare => "limit_local_share",
            Self::BudgetRefused => "budget_refused",
            Self::BudgetUnreserved => "budget_unreserved",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::LimitLocalShare => {
                "rate limits checked in process against this relay's share of each limit"
            }
            Self::BudgetRefused => "requests refused (503): their budget could not be reserved",
            Self::BudgetUnreserved => {
                "requests admitted without a budget reservation (budgets.on_store_error = open)"
            }
        }
    }

    fn index(self) -> usize {
        match self {
            Self::LimitLocalShare => 0,
            Self::BudgetRefused => 1,
            Self::BudgetUnreserved => 2,
        }
    }
}

/// Told of every degraded decision and of the settlements waiting for the shared store.
pub trait Observer: Send + Sync + fmt::Debug + 'static {
    fn degraded(&self, decision: Decision);
    /// Settlements queued for the shared store went up (`+1`) or down (`-1`).
    fn settlements_pending(&self, change: i64);
}

/// An observer that ignores everything (tests, the in-process engines).
#[derive(Debug, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn degraded(&self, _: Decision) {}
    fn settlements_pending(&self, _: i64) {}
}

/// Counts degraded decisions, tells the observer, and logs each kind at most every
/// [`LOG_EVERY`].
#[derive(Debug)]
pub(crate) struct DegradedLog {
    observer: std::sync::Arc<dyn Observer>,
    since_last_line: [AtomicU64; 3],
    last_line: Mutex<[Option<Instant>; 3]>,
}

impl DegradedLog {
    pub(crate) fn new(observer: std::sync::Arc<dyn Observer>) -> Self {
        Self { observer, since_last_line: Default::default(), last_line: Mutex::new([None; 3]) }
    }

    /// Records one decision taken because of `cause`.
    pub(crate) fn record(&self, decision: Decision, cause: &str) {
        self.observer.degraded(decision);
        let index = decision.index();
        self.since_last_line[index].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Ok(mut last) = self.last_line.lock() else { return };
        if last[index].is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        last[index] = Some(now);
        drop(last);
        let decisions = self.since_last_line[index].swap(0, Ordering::Relaxed);
        tracing::warn!(
            decision = decision.as_str(),
            decisions,
            cause,
            "shared metering store unavailable: {}",
            decision.describe()
        );
    }
}
