//! Admission: a request's rate limits and its budget, decided together and settled together.
//!
//! [`Admission::admit`] charges one request (and its worst-case tokens) to the rate limits of
//! every subject it counts against *and* reserves its worst-case cost against every budget it
//! falls under, as one all-or-nothing step: a rate limit that refuses reserves nothing, a budget
//! that refuses consumes no rate-limit token. [`Admission::settle`] then settles both with what
//! the request used, as one step too. With Redis each step is one Lua script, one round trip
//! (`redis.rs`); in process, one critical section ([`InProcessAdmission`]).
//!
//! Every admission gets a reservation id of its own, made by the relay (random with Redis), not
//! the request's id, which a client or proxy may repeat: settling is idempotent per reservation,
//! so a retried settle counts once and two requests that share an `X-Request-Id` both count.
//!
//! The [`RateLimiter`](crate::limits::RateLimiter) and the
//! [`BudgetLedger`](crate::budget::BudgetLedger) remain the engines' halves, usable alone; an
//! `Admission` composes the two of the same engine.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::Unavailable;
use crate::budget::{BudgetRule, Crossing, Exhausted, InProcessLedger, Micros, Payer, Reservation};
use crate::limits::{InProcessLimiter, RateLimitStatus, Rejected, Rule, Subject, TokenCharge};

pub(crate) mod redis;

pub use redis::{RedisAdmission, SETTLED_MARKER};

/// What a request asks for at admission: its worst case.
#[derive(Debug)]
pub struct Claim<'a> {
    /// The subjects whose rate limits it counts against (each at most once), with their rules.
    pub checks: Vec<(Subject, Rule)>,
    /// Tokens charged to the tokens-per-minute windows: its prompt's ceiling and `max_tokens`.
    pub tokens: u64,
    /// Whose budgets its cost counts against.
    pub payers: &'a [(Payer, BudgetRule)],
    /// Its worst-case cost, reserved against every budget.
    pub cost: Micros,
}

/// An admitted request: the rate-limit headers' values, and what to settle once it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// `None` when no rule limits anything, so there are no headers to send.
    pub status: Option<RateLimitStatus>,
    charge: TokenCharge,
    reservation: Reservation,
    /// This pass was settled: settling it again does nothing.
    settled: bool,
    /// Its tokens, charged in process, were settled there (its budget may still be waiting for
    /// Redis).
    tokens_settled: bool,
}

impl Pass {
    fn new(status: Option<RateLimitStatus>, charge: TokenCharge, reservation: Reservation) -> Self {
        Self { status, charge, reservation, settled: false, tokens_settled: false }
    }

    /// The reservation id: unique per admission, it keys the settle's idempotency.
    pub fn id(&self) -> &str {
        self.reservation.id()
    }

    /// What the rate limits charged.
    pub fn charge(&self) -> &TokenCharge {
        &self.charge
    }

    /// What the budgets hold.
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }
}

/// Why a request was not admitted; nothing was charged or reserved for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit has no room (HTTP 429).
    RateLimited(Box<Rejected>),
    /// A budget has no room for its worst case (HTTP 402).
    Exhausted(Box<Exhausted>),
    /// The shared store could not be reached and budgets fail closed (HTTP 503 with
    /// `Retry-After`).
    Unavailable(Unavailable),
}

/// Admits requests against their rate limits and budgets at once, and settles them.
#[async_trait]
pub trait Admission: Send + Sync + fmt::Debug + 'static {
    /// Charges the request to every rate limit in `claim.checks` and reserves its cost against
    /// every budget of `claim.payers`, all or nothing (see the module's documentation). Budgets
    /// are checked first: a request that neither fits is refused for its budget.
    async fn admit(&self, claim: Claim<'_>) -> Result<Pass, Refusal>;

    /// Settles an admitted request: its budgets with its `cost` (releasing what it held and
    /// reporting the alert thresholds this crossed, as [`BudgetLedger::settle`] does) and its
    /// tokens-per-minute windows with the `tokens` it used. Settling the same pass again, or a
    /// copy of it (on any relay), changes nothing and reports nothing. An error means the shared
    /// store could not be reached: retry later.
    ///
    /// [`BudgetLedger::settle`]: crate::budget::BudgetLedger::settle
    async fn settle(
        &self,
        pass: &mut Pass,
        cost: Micros,
        tokens: u64,
    ) -> Result<Vec<Crossing>, Unavailable>;
}

/// Rate limits and budgets in this process: admission is one critical section (the ledger's
/// lock, and the limiter's inside it), settling never waits.
#[derive(Debug)]
pub struct InProcessAdmission {
    limiter: Arc<InProcessLimiter>,
    ledger: Arc<InProcessLedger>,
}

impl InProcessAdmission {
    pub fn new(limiter: Arc<InProcessLimiter>, ledger: Arc<InProcessLedger>) -> Self {
        Self { limiter, ledger }
    }

    /// [`Admission::admit`] at `now` (the limiter's clock) and `now_unix` (the budgets').
    pub fn admit_at(&self, claim: Claim<'_>, now: Instant, now_unix: u64) -> Result<Pass, Refusal> {
        let Claim { checks, tokens, payers, cost } = claim;
        let limits = || self.limiter.admit_at(&checks, tokens, now);
        let (reservation, status) = self
            .ledger
            .reserve_with("", payers, cost, now_unix, limits)
            .map_err(|refused| match refused {
                crate::budget::ReserveOr::Exhausted(exhausted) => {
                    Refusal::Exhausted(Box::new(exhausted))
                }
                crate::budget::ReserveOr::Other(rejected) => {
                    Refusal::RateLimited(Box::new(rejected))
                }
            })?;
        let charge = TokenCharge { id: String::new(), checks, reserved: tokens, local: true };
        Ok(Pass::new(status, charge, reservation))
    }

    /// [`Admission::settle`], which in process cannot fail.
    pub fn settle_now(
        &self,
        pass: &mut Pass,
        cost: Micros,
        tokens: u64,
        now: Instant,
    ) -> Vec<Crossing> {
        if pass.settled {
            return Vec::new();
        }
        pass.settled = true;
        let charge = &pass.charge;
        self.limiter.settle_tokens_at(&charge.checks, charge.reserved, tokens, now);
        self.ledger.settle_now(&pass.reservation, cost)
    }
}

#[async_trait]
impl Admission for InProcessAdmission {
    async fn admit(&self, claim: Claim<'_>) -> Result<Pass, Refusal> {
        self.admit_at(claim, Instant::now(), crate::budget::unix_now())
    }

    async fn settle(
        &self,
        pass: &mut Pass,
        cost: Micros,
        tokens: u64,
    ) -> Result<Vec<Crossing>, Unavailable> {
        Ok(self.settle_now(pass, cost, tokens, Instant::now()))
    }
}
