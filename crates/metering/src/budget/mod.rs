//! Spending: model prices, budgets per secret key and per site, and the ledger that admits calls.
//!
//! Money is counted in micro-dollars ([`Micros`]) and tokens as integers; no float is involved.
//!
//! A call goes through the [`Ledger`] in two steps. Before the upstream is called, its worst case
//! (the estimated prompt plus the capped `max_tokens`, priced by the [`PriceTable`]) is reserved
//! against every budget it falls under, all or nothing; a call that does not fit is refused with
//! [`Exhausted`] and never reaches the upstream. Once the call is over, the [`Reservation`] is
//! settled with the real cost, which releases what was reserved and records what was spent.
//!
//! A reservation is admitted only when `spent + reserved + amount <= budget` holds for every
//! budget it touches, so however many calls run at once, the recorded spend cannot pass a budget
//! as long as no call costs more than it reserved. That holds because the relay caps `max_tokens`
//! and reserves the cap: a call cannot produce more output than it was allowed.
//!
//! Budgets run per calendar month and per day, in UTC ([`Period`]). A new period is a new entry
//! that starts at zero; entries of past periods are dropped once nothing is reserved against them,
//! so the ledger holds about two entries per payer whatever its age.
//!
//! The ledger lives in the process (one mutex around a map); it is the single-instance setup.
//! At start-up it is given what the usage table already records for the current periods.
//!
//! One file per concern: [`prices`] (the price table and what a call costs), [`periods`] (UTC
//! months and days, by calendar arithmetic) and [`ledger`] (payers, budgets, reservations and
//! threshold crossings).

pub mod ledger;
pub mod periods;
pub mod prices;

pub use ledger::{ALERT_PERCENTS, BudgetRule, Crossing, Exhausted, Ledger, Payer, Reservation};
pub use periods::{Period, PeriodKind};
pub use prices::{Micros, Price, PriceTable, Usd};
