//! Spending: model prices, budgets per secret key and per site, and the ledger that admits calls.
//!
//! Money is counted in micro-dollars ([`Micros`]) and tokens as integers; no float is involved.
//!
//! A call goes through the [`BudgetLedger`] in two steps. Before the upstream is called, its
//! worst case (the estimated prompt plus the capped `max_tokens`, priced by the [`PriceTable`])
//! is reserved against every budget it falls under, all or nothing; a call that does not fit is
//! refused with [`Exhausted`] and never reaches the upstream. Once the call is over, the
//! [`Reservation`] is settled with the real cost, which releases what was reserved and records
//! what was spent.
//!
//! A reservation is admitted only when `spent + reserved + amount <= budget` holds for every
//! budget it touches, so however many calls run at once, the recorded spend cannot pass a budget
//! as long as no call costs more than it reserved. That holds because the relay caps `max_tokens`
//! and reserves the cap: a call cannot produce more output than it was allowed.
//!
//! Budgets run per calendar month and per day, in UTC ([`Period`]).
//!
//! Two engines: [`InProcessLedger`] (one relay; started from what the usage table records for
//! the current periods) and [`RedisLedger`] (several relays; the spend of each period is seeded
//! once from the database, reservations carry a lease so that a relay that vanishes does not
//! hold room for ever, settles are idempotent per request, alerts are sent once across relays).
//!
//! One file per concern: [`prices`] (the price table and what a call costs), [`periods`] (UTC
//! months and days, by calendar arithmetic), [`ledger`] (payers, budgets, reservations,
//! threshold crossings and the trait), `in_process` and `redis` (the engines).

mod in_process;
pub mod ledger;
pub mod periods;
pub mod prices;
mod redis;

pub use in_process::InProcessLedger;
pub(crate) use in_process::ReserveOr;
pub use ledger::{
    ALERT_PERCENTS, BudgetLedger, BudgetRule, Crossing, Exhausted, Hold, Payer, Reservation,
    ReserveError,
};
pub use periods::{Period, PeriodKind};
pub use prices::{CacheTokens, Micros, Price, PriceTable, Usd};
pub use redis::RedisLedger;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
