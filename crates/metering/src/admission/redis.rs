//! Admission in Redis: one script admits a request (`admit.lua`: its rate limits and its budget
//! reservation, all or nothing) and one settles it (`settle.lua`: its budgets and its tokens),
//! so that a request costs two round trips to Redis in all. The limiter and the ledger run the
//! same two scripts with the other half empty.
//!
//! [`Scripts`] builds their arguments and reads their answers; what the answers mean is the
//! limiter's business (the GCRA readings, the headers, the fallback to this relay's share) and
//! the ledger's (refusals, leases, seeding, degraded budgets), and [`RedisAdmission`] asks each.
//!
//! A settle's idempotency marker is `<prefix>:settled:<reservation id>`, kept
//! [`SETTLED_MARKER`]: the id is made by the relay for each admission (random), never taken from
//! the request, so a retried settle counts once and two requests that share an `X-Request-Id`
//! both count.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{Admission, Claim, Pass, Refusal};
use crate::Unavailable;
use crate::budget::{
    Crossing, Hold, Micros, Payer, Period, RedisLedger, Reservation, ReserveError,
};
use crate::limits::{RedisLimiter, Rule, Subject, TokenCharge};
use crate::shared::Connection;

/// Larger reservations are charged as this many tokens: TATs stay exact in Lua's doubles.
const MOST_TOKENS: u64 = 1 << 40;

/// Amounts beyond this are counted as this: Lua's doubles are exact below 2^53.
pub(crate) const MOST_MICROS: Micros = 1 << 50;

/// How long a settle's idempotency marker is kept: longer than any retry goes on.
pub const SETTLED_MARKER: Duration = Duration::from_secs(2 * 86_400);

/// A new reservation id: 32 hex digits of randomness.
pub(crate) fn reservation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The admit and settle scripts, and the keys they name.
#[derive(Debug)]
pub(crate) struct Scripts {
    connection: Connection,
    prefix: String,
    admit: Script,
    settle: Script,
}

/// What an admission asks of `admit.lua`.
pub(crate) struct AdmitCall<'a> {
    pub(crate) id: &'a str,
    /// Empty: no rate limit.
    pub(crate) checks: &'a [(Subject, Rule)],
    pub(crate) tokens: u64,
    /// Empty: no budget.
    pub(crate) holds: &'a [Hold],
    pub(crate) amount: Micros,
    pub(crate) lease: Duration,
}

/// What `admit.lua` answered.
#[derive(Debug)]
pub(crate) enum AdmitAnswer {
    /// The month's spend was never seeded (or Redis lost it): nothing was done.
    NotSeeded,
    /// The budget of `holds[account]` has no room: nothing was charged.
    OverBudget { account: usize, spent: Micros, reserved: Micros },
    /// A rate limit refused: nothing was charged. The TATs are those before the request.
    RateLimited(TatsAt),
    /// Everything was charged. The TATs are those after the request.
    Admitted { tats: TatsAt, generation: u64, expired: u64 },
}

/// The TATs of an answer, read per subject, and Redis's clock (microseconds).
#[derive(Debug)]
pub(crate) struct TatsAt {
    pub(crate) now: u64,
    answer: Vec<i64>,
    from: usize,
}

impl TatsAt {
    pub(crate) fn of(&self, subject: usize) -> crate::limits::Tats {
        let at = |window: usize| {
            let value = self.answer.get(self.from + subject * 3 + window).copied().unwrap_or(0);
            u64::try_from(value).unwrap_or(0)
        };
        [at(0), at(1), at(2)]
    }
}

/// What a settle asks of `settle.lua`.
pub(crate) struct SettleCall<'a> {
    pub(crate) id: &'a str,
    /// The charge whose tokens-per-minute windows are settled, and the tokens used; `None`:
    /// none to settle here.
    pub(crate) tokens: Option<(&'a TokenCharge, u64)>,
    /// The reservation whose budgets are settled, and its cost; `None`: none to settle here.
    pub(crate) budget: Option<(&'a Reservation, Micros)>,
}

/// What `settle.lua` answered.
#[derive(Debug)]
pub(crate) enum SettleAnswer {
    NotSeeded,
    /// Settled before (a retry): nothing changed.
    AlreadySettled,
    /// `counted`: false when the spend was seeded again since the admission (its cost is counted
    /// from the database). The crossings are (account index, percent, spent after).
    Settled {
        counted: bool,
        crossings: Vec<(usize, u8, u64)>,
    },
}

impl Scripts {
    pub(crate) fn new(connection: Connection, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            admit: Script::new(include_str!("admit.lua")),
            settle: Script::new(include_str!("settle.lua")),
        }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// `<prefix>:rl:k:<key id>`, `<prefix>:rl:s:<site id>`, `<prefix>:rl:v:<site id>:<visitor>`.
    pub(crate) fn subject_key(&self, subject: &Subject) -> String {
        let prefix = &self.prefix;
        match subject {
            Subject::Key(id) => format!("{prefix}:rl:k:{id}"),
            Subject::Site(id) => format!("{prefix}:rl:s:{id}"),
            Subject::Visitor { site, visitor } => format!("{prefix}:rl:v:{site}:{visitor}"),
        }
    }

    /// `<prefix>:b:gen:<month>`.
    pub(crate) fn generation_key(&self, month: Period) -> String {
        format!("{}:b:gen:{month}", self.prefix)
    }

    /// `<prefix>:b:<k|s>:<payer id>:<period>:<what>`.
    pub(crate) fn account_key(&self, payer: &Payer, period: Period, what: &str) -> String {
        let kind = match payer {
            Payer::Key(_) => "k",
            Payer::Site(_) => "s",
        };
        format!("{}:b:{kind}:{}:{period}:{what}", self.prefix, payer.id())
    }

    pub(crate) async fn admit(&self, call: AdmitCall<'_>) -> Result<AdmitAnswer, Unavailable> {
        let AdmitCall { id, checks, tokens, holds, amount, lease } = call;
        let mut script = self.admit.prepare_invoke();
        script.arg(checks.len()).arg(holds.len()).arg(tokens.min(MOST_TOKENS));
        script.arg(id).arg(amount.min(MOST_MICROS)).arg(millis(lease));
        for (subject, rule) in checks {
            script.key(self.subject_key(subject));
            for window in crate::limits::Window::ALL {
                script.arg(rule.limit(window).map_or(-1, i64::from));
            }
        }
        if let Some(month) = month_of(holds) {
            script.key(self.generation_key(month));
            for hold in holds {
                for what in ["spent", "holds", "leases"] {
                    script.key(self.account_key(&hold.payer, hold.period, what));
                }
                script.arg(budget_arg(hold.budget)).arg(expires_at(hold.period));
            }
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        let number = |index: usize| answer.get(index).map_or(0, |&n| u64::try_from(n).unwrap_or(0));
        Ok(match answer.first() {
            Some(0) => AdmitAnswer::OverBudget {
                account: usize::try_from(number(1)).unwrap_or(1).saturating_sub(1),
                spent: number(2),
                reserved: number(3),
            },
            Some(1) => AdmitAnswer::RateLimited(TatsAt { now: number(1), answer, from: 2 }),
            Some(2) => {
                let (generation, expired) = (number(2), number(3));
                AdmitAnswer::Admitted {
                    tats: TatsAt { now: number(1), answer, from: 4 },
                    generation,
                    expired,
                }
            }
            _ => AdmitAnswer::NotSeeded,
        })
    }

    pub(crate) async fn settle(&self, call: SettleCall<'_>) -> Result<SettleAnswer, Unavailable> {
        let SettleCall { id, tokens, budget } = call;
        let limited = |(charge, _): &(&'_ TokenCharge, u64)| {
            charge.checks.iter().filter(|(_, rule)| rule.tpm.is_some()).count()
        };
        let holds = budget.map_or(&[][..], |(reservation, _)| reservation.holds());
        let mut script = self.settle.prepare_invoke();
        script.key(format!("{}:settled:{id}", self.prefix));
        script.arg(tokens.as_ref().map_or(0, limited)).arg(holds.len());
        let (reserved, used) = tokens.map_or((0, 0), |(charge, used)| (charge.reserved, used));
        script.arg(reserved.min(MOST_TOKENS)).arg(used.min(MOST_TOKENS)).arg(id);
        let (generation, cost) =
            budget.map_or((0, 0), |(reservation, cost)| (reservation.generation, cost));
        script.arg(generation).arg(cost.min(MOST_MICROS)).arg(millis(SETTLED_MARKER));
        if let Some((charge, _)) = tokens {
            for (subject, rule) in &charge.checks {
                if let Some(limit) = rule.tpm {
                    script.key(self.subject_key(subject)).arg(limit);
                }
            }
        }
        if let Some(month) = month_of(holds) {
            script.key(self.generation_key(month));
            for hold in holds {
                for what in ["spent", "holds", "leases", "alert80", "alert100"] {
                    script.key(self.account_key(&hold.payer, hold.period, what));
                }
                script.arg(budget_arg(hold.budget)).arg(expires_at(hold.period));
            }
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        Ok(match answer.first() {
            Some(0) => SettleAnswer::AlreadySettled,
            Some(1) => SettleAnswer::Settled {
                counted: answer.get(1) != Some(&0),
                crossings: answer
                    .get(2..)
                    .unwrap_or_default()
                    .chunks_exact(3)
                    .filter_map(|triple| {
                        let account = usize::try_from(triple[0]).ok()?.checked_sub(1)?;
                        let percent = u8::try_from(triple[1]).ok()?;
                        Some((account, percent, u64::try_from(triple[2]).unwrap_or(0)))
                    })
                    .collect(),
            },
            _ => SettleAnswer::NotSeeded,
        })
    }
}

/// The month of a reservation's holds (all of them are in one month and one day); `None` when
/// there are none.
pub(crate) fn month_of(holds: &[Hold]) -> Option<Period> {
    holds.iter().map(|hold| hold.period).find(|period| matches!(period, Period::Month { .. }))
}

/// A budget as the scripts take it: -1 for none.
fn budget_arg(budget: Option<Micros>) -> i64 {
    budget.map_or(-1, |budget| i64::try_from(budget.min(MOST_MICROS)).unwrap_or(i64::MAX))
}

/// When an account's keys expire (unix ms): two days after its period ends, so that calls open
/// across the period's end still settle into it.
pub(crate) fn expires_at(period: Period) -> u64 {
    period
        .ends_at()
        .saturating_add(2 * crate::budget::periods::SECONDS_PER_DAY)
        .saturating_mul(1000)
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Rate limits and budgets in Redis, admitted together and settled together.
#[derive(Debug)]
pub struct RedisAdmission {
    limiter: Arc<RedisLimiter>,
    ledger: Arc<RedisLedger>,
    scripts: Arc<Scripts>,
}

impl RedisAdmission {
    pub(crate) fn new(
        limiter: Arc<RedisLimiter>,
        ledger: Arc<RedisLedger>,
        scripts: Arc<Scripts>,
    ) -> Self {
        Self { limiter, ledger, scripts }
    }

    /// Admission without Redis (unavailable, or the month could not be seeded): budgets refuse
    /// or admit unreserved as `on_store_error` says, and then rate limits are checked against
    /// this relay's share of each, in process, unless `shared_limits` (Redis answers; only the
    /// seed failed) lets them still be decided there.
    async fn degraded(
        &self,
        id: String,
        claim: Claim<'_>,
        holds: Vec<Hold>,
        error: Unavailable,
        shared_limits: bool,
    ) -> Result<Pass, Refusal> {
        let reservation = match self.ledger.degraded_reservation(&id, holds, claim.cost, error) {
            Ok(reservation) => reservation,
            Err(ReserveError::Unavailable(unavailable)) => {
                return Err(Refusal::Unavailable(unavailable));
            }
            Err(ReserveError::Exhausted(exhausted)) => return Err(Refusal::Exhausted(exhausted)),
        };
        let admitted = if shared_limits {
            self.limiter.admit_shared_or_local(&id, claim.checks, claim.tokens).await
        } else {
            self.limiter.admit_locally(&id, claim.checks, claim.tokens)
        };
        let admitted = admitted.map_err(|rejected| Refusal::RateLimited(Box::new(rejected)))?;
        Ok(Pass::new(admitted.status, admitted.charge, reservation))
    }
}

#[async_trait]
impl Admission for RedisAdmission {
    async fn admit(&self, claim: Claim<'_>) -> Result<Pass, Refusal> {
        let id = reservation_id();
        let (holds, amount) = self.ledger.holds_now(claim.payers, claim.cost);
        let call = |checks| AdmitCall {
            id: &id,
            checks,
            tokens: claim.tokens,
            holds: &holds,
            amount,
            lease: self.ledger.lease(),
        };
        let mut answer = self.scripts.admit(call(&claim.checks)).await;
        if let Ok(AdmitAnswer::NotSeeded) = answer {
            self.ledger.seed_now().await;
            answer = self.scripts.admit(call(&claim.checks)).await;
        }
        match answer {
            Ok(AdmitAnswer::Admitted { tats, generation, expired }) => {
                let status = self.limiter.status(&claim.checks, &tats);
                let reservation = self.ledger.held(&id, holds, amount, generation, expired);
                let charge =
                    TokenCharge { id, checks: claim.checks, reserved: claim.tokens, local: false };
                Ok(Pass::new(status, charge, reservation))
            }
            Ok(AdmitAnswer::RateLimited(tats)) => {
                Err(Refusal::RateLimited(Box::new(self.limiter.refusal(&claim.checks, &tats))))
            }
            Ok(AdmitAnswer::OverBudget { account, spent, reserved }) => {
                let exhausted = RedisLedger::exhausted(&holds, account, spent, reserved);
                Err(Refusal::Exhausted(Box::new(exhausted)))
            }
            Ok(AdmitAnswer::NotSeeded) => {
                let error = Unavailable { retry_after: self.scripts.connection().retry_after() };
                self.degraded(id, claim, holds, error, true).await
            }
            Err(error) => self.degraded(id, claim, holds, error, false).await,
        }
    }

    async fn settle(
        &self,
        pass: &mut Pass,
        cost: Micros,
        tokens: u64,
    ) -> Result<Vec<Crossing>, Unavailable> {
        if pass.settled {
            return Ok(Vec::new());
        }
        // Tokens charged in process (Redis was unavailable at admission) are settled there,
        // once, whatever happens to the budget's settle.
        if pass.charge.local && !pass.tokens_settled {
            self.limiter.settle_locally(&pass.charge, tokens);
            pass.tokens_settled = true;
        }
        let tokens = (!pass.charge.local && pass.charge.needs_settling(tokens))
            .then_some((&pass.charge, tokens));
        let crossings = self.ledger.settle_with(&pass.reservation, cost, tokens).await?;
        pass.settled = true;
        Ok(crossings)
    }
}
