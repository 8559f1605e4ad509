//! Confab's metering: what a chat request is allowed before it starts. [`limits`] holds the rate
//! limiter (requests per minute and per day, tokens per minute, GCRA) and [`budget`] the budget
//! ledger (worst cases reserved before a call, real costs settled after it), with the prices
//! and periods they count in.
//!
//! Each is a trait with two engines: in process (one relay, the default) and Redis (several
//! relays sharing one set of limits and budgets). [`admission`] composes the two of an engine:
//! a request is admitted against its rate limits and its budget in one all-or-nothing step (one
//! round trip to Redis) and settled in one step after it. [`Engines`] is where one or the other is
//! built, once, at start-up; nothing else names an engine. Work that must reach Redis after a
//! request (settling its budget and tokens) is never done in a destructor: it is handed to the
//! [`Settler`], a background task that retries it (idempotently) until it is done, and that
//! shutdown waits for.

pub mod admission;
pub mod budget;
mod degraded;
mod engines;
pub mod limits;
mod settle;
mod shared;

use std::time::Duration;

pub use degraded::{Decision, Observer, Unobserved};
pub use engines::{Engines, OnStoreError, RedisSettings, SpendSource};
pub use settle::{Backoff, Settler};
pub use shared::RedisHealth;

/// The shared store (Redis) could not be reached, did not answer in time, or its breaker is
/// open: try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared metering store is unavailable")]
pub struct Unavailable {
    pub retry_after: Duration,
}
