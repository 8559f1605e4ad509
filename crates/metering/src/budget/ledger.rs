//! The ledger's contract, shared by both engines: payers and their budgets, the all-or-nothing
//! reservation of a call's worst case against every budget it falls under, refusals, and the
//! 80/100 % threshold crossings that settling reports.

use std::fmt;

use async_trait::async_trait;

use super::periods::{Period, PeriodKind};
use super::prices::{Micros, Usd};
use crate::Unavailable;

/// The shares of a budget at which an alert is raised, in percent.
pub const ALERT_PERCENTS: [u8; 2] = [80, 100];

/// Whom a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payer {
    /// A secret API key, by its id (never by its secret).
    Key(String),
    /// A site, by its id.
    Site(String),
}

impl Payer {
    pub fn id(&self) -> &str {
        match self {
            Payer::Key(id) | Payer::Site(id) => id,
        }
    }
}

/// Only the kind of payer: this text reaches clients, in the 402 message.
impl fmt::Display for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Payer::Key(_) => "key",
            Payer::Site(_) => "site",
        })
    }
}

/// The budgets of one payer; `None` is unlimited.
///
/// A budget of 0 blocks every call, even one to a model without a price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetRule {
    pub monthly: Option<Micros>,
    pub daily: Option<Micros>,
}

/// A budget crossing one of the [`ALERT_PERCENTS`]: the relay sends an alert webhook for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub payer: Payer,
    pub period: Period,
    /// 80 or 100.
    pub percent: u8,
    /// The spend right after the settlement that crossed the threshold.
    pub spent: Micros,
    pub budget: Micros,
}

/// A call refused because one of its budgets has no room for its worst case (HTTP 402,
/// `insufficient_quota`). Its `Display` is meant for the client: it names the kind of payer and
/// period and the budget, never the payer's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub payer: Payer,
    pub period: Period,
    pub budget: Micros,
    /// Settled spend in the period when the call was refused.
    pub spent: Micros,
    /// Reserved by calls in flight when the call was refused.
    pub reserved: Micros,
}

impl Exhausted {
    pub fn period_kind(&self) -> PeriodKind {
        self.period.kind()
    }
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (payer, kind, budget) = (&self.payer, self.period.kind(), Usd(self.budget));
        if self.spent >= self.budget {
            write!(f, "the {payer}'s {kind} budget of {budget} is used up")
        } else {
            // Room is left, but not for this call's worst case next to the calls in flight.
            write!(
                f,
                "the {payer}'s {kind} budget of {budget} has too little left for this request"
            )
        }
    }
}

impl std::error::Error for Exhausted {}

/// One budget entry a reservation holds: the account, and the budget it was admitted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub payer: Payer,
    pub period: Period,
    pub budget: Option<Micros>,
}

/// The holds of a call made at `now_unix` by `payers`: the month and the day containing it, for
/// every payer. A payer listed twice is held once, under the tighter of its budgets.
pub(crate) fn holds_of(payers: &[(Payer, BudgetRule)], now_unix: u64) -> Vec<Hold> {
    let (month, day) = (Period::month_of(now_unix), Period::day_of(now_unix));
    let mut holds: Vec<Hold> = Vec::with_capacity(payers.len() * 2);
    for (payer, rule) in payers {
        for (period, budget) in [(month, rule.monthly), (day, rule.daily)] {
            match holds.iter_mut().find(|h| h.period == period && &h.payer == payer) {
                Some(hold) => hold.budget = tighter(hold.budget, budget),
                None => holds.push(Hold { payer: payer.clone(), period, budget }),
            }
        }
    }
    holds
}

/// The tighter of two budgets, where `None` is unlimited.
fn tighter(a: Option<Micros>, b: Option<Micros>) -> Option<Micros> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `spent` has reached `percent` of `budget`.
pub(crate) fn reached(spent: Micros, budget: Micros, percent: u8) -> bool {
    u128::from(spent) * 100 >= u128::from(budget) * u128::from(percent)
}

/// Room held for one call's worst case, from admission until the call is settled (with its real
/// cost) or released (it never reached the upstream).
///
/// It is plain data: the ledger that made it settles or releases it, and a settle of the same
/// reservation that is retried after a failure is counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique per admission: with Redis, a random id the relay made, which keys the lease and
    /// the settle's idempotency (never the request's `X-Request-Id`, which a client or proxy
    /// may repeat). Empty in process, where nothing is retried.
    pub(crate) id: String,
    pub(crate) holds: Vec<Hold>,
    pub(crate) amount: Micros,
    /// `false` for a call admitted without a reservation while the shared store could not be
    /// reached (`budgets.on_store_error = "open"`): nothing is held, its cost is still counted.
    pub(crate) held: bool,
    /// Redis: the generation of the shared spend the reservation was made under (0: unknown).
    /// A settle under another generation (Redis lost its data and was seeded again from the
    /// database since) adds nothing, since the seed counted what the database had.
    pub(crate) generation: u64,
}

impl Reservation {
    /// A call that holds nothing but whose cost counts against the budgets of `payers` in the
    /// periods of `at_unix`: for requests recovered after a crash, recorded at their worst case.
    /// `id` keys its settle's idempotency, as a reservation id does.
    pub fn unheld(id: &str, payers: &[(Payer, BudgetRule)], at_unix: u64, generation: u64) -> Self {
        Self {
            id: id.to_owned(),
            holds: holds_of(payers, at_unix),
            amount: 0,
            held: false,
            generation,
        }
    }

    /// The amount reserved: the call's worst case.
    pub fn amount(&self) -> Micros {
        self.amount
    }

    /// The reservation's id (see the field).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether room is held (see [`Reservation::unheld`]).
    pub fn is_held(&self) -> bool {
        self.held
    }

    pub fn holds(&self) -> &[Hold] {
        &self.holds
    }
}

/// Why a reservation was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// A budget has no room for the call (HTTP 402).
    #[error(transparent)]
    Exhausted(Box<Exhausted>),
    /// The shared store could not be reached, and calls are refused then (HTTP 503 with
    /// `Retry-After`; `budgets.on_store_error = "closed"`).
    #[error(transparent)]
    Unavailable(Unavailable),
}

/// Spend and reservations per payer and period.
///
/// Every method is all or nothing. `reserve` admits a call when `spent + reserved + amount <=
/// budget` holds for every budget it touches, and a budget that is used up (`spent >= budget`)
/// refuses even a call that costs nothing: used up means used up. Spend is tracked in both
/// periods whether or not the payer has a budget there, so a budget that changes at run time
/// applies to what was already spent. On refusal nothing is reserved and the first budget
/// without room is named, in the order given, monthly before daily.
#[async_trait]
pub trait BudgetLedger: Send + Sync + fmt::Debug + 'static {
    /// Reserves `amount` for a call against the month and the day containing now, for every
    /// payer. `id` names the reservation: unique per admission, it keys the settle's
    /// idempotency.
    async fn reserve(
        &self,
        id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
    ) -> Result<Reservation, ReserveError>;

    /// Releases the reservation and records `actual` as spent in each of its periods, even when
    /// it is more than was reserved (the truth is recorded; the cap on `max_tokens` is what keeps
    /// that from happening). Returns the alert thresholds this settlement crossed: a threshold is
    /// crossed when the spend goes from below it to at or above it, and each is reported at most
    /// once per payer and period, even if the budget is changed in the meantime. Spend the ledger
    /// was seeded with does not count as crossing, so a restart does not repeat alerts.
    ///
    /// Settling the same reservation again (a retry after an error whose first attempt did go
    /// through) changes nothing and reports nothing.
    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Micros,
    ) -> Result<Vec<Crossing>, Unavailable>;

    /// Releases the reservation without charging anything: right only when the upstream was
    /// never called. Releasing twice changes nothing.
    async fn release(&self, reservation: &Reservation) -> Result<(), Unavailable>;
}
