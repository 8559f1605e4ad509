//! Confab's metering: what a chat request is allowed before it starts. [`limits`] holds the rate
//! limiter (requests per minute and per day, tokens per minute, GCRA) and [`budget`] the budget
//! ledger (worst cases reserved before a call, real costs settled after it), with the prices
//! and periods they count in.

pub mod budget;
pub mod limits;
