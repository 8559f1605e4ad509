//! The limiter several relays share: GCRA state in Redis, decided by the same script that
//! admits a whole request (`admission/admit.lua`, here with no budget): one round trip, all or
//! nothing across the request's subjects, on the Redis server's clock. Token settles run
//! `admission/settle.lua` likewise.
//!
//! Keys, under the configured prefix: `<prefix>:rl:k:<key id>`, `<prefix>:rl:s:<site id>` and
//! `<prefix>:rl:v:<site id>:<visitor>`, each a hash of three TATs in microseconds (fields `0`,
//! `1`, `2`: requests per minute, requests per day, tokens per minute) that expires once its
//! longest backlog has run out (a replenished subject is the same as an absent one); and
//! `<prefix>:settled:<charge id>`, the marker that makes a settle idempotent.
//!
//! While Redis cannot be reached (an error, a time limit, the breaker open), a request is
//! checked by an in-process limiter against this relay's share of each limit,
//! `limit / expected_instances` (at least 1 of a limit that is not 0), so that the relays
//! together still admit about the limit, and its tokens are settled there too. Each such
//! decision is counted and logged (`degraded`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::gcra::{self, Unit};
use super::{
    Admitted, InProcessLimiter, RateLimitStatus, RateLimiter, Rejected, Rule, Subject, TokenCharge,
    Window,
};
use crate::Unavailable;
use crate::admission::redis::{AdmitAnswer, AdmitCall, Scripts, SettleCall, TatsAt};
use crate::degraded::{Decision, DegradedLog};

/// Rate limits in Redis, shared by every relay with the same server and key prefix.
#[derive(Debug)]
pub struct RedisLimiter {
    scripts: Arc<Scripts>,
    expected_instances: u32,
    fallback: InProcessLimiter,
    degraded: Arc<DegradedLog>,
}

impl RedisLimiter {
    pub(crate) fn new(
        scripts: Arc<Scripts>,
        expected_instances: u32,
        degraded: Arc<DegradedLog>,
    ) -> Self {
        Self {
            scripts,
            expected_instances: expected_instances.max(1),
            fallback: InProcessLimiter::new(),
            degraded,
        }
    }

    /// The status of `checks` after an admission, from the script's TATs.
    pub(crate) fn status(
        &self,
        checks: &[(Subject, Rule)],
        tats: &TatsAt,
    ) -> Option<RateLimitStatus> {
        gcra::status(checks, |subject| tats.of(subject), tats.now, Unit::MICROS)
    }

    /// The refusal of `checks`, from the TATs the script refused them on.
    pub(crate) fn refusal(&self, checks: &[(Subject, Rule)], tats: &TatsAt) -> Rejected {
        match gcra::refusal(checks, |subject| tats.of(subject), tats.now, Unit::MICROS) {
            Err(rejected) => rejected,
            // The script and `gcra` do the same arithmetic; were they ever to disagree, the
            // script's refusal stands (nothing was charged), with a short retry.
            Ok(()) => inconsistent_refusal(checks),
        }
    }

    /// Admits `checks` in Redis, or against this relay's share in process when Redis cannot
    /// be reached.
    pub(crate) async fn admit_shared_or_local(
        &self,
        id: &str,
        checks: Vec<(Subject, Rule)>,
        tokens: u64,
    ) -> Result<Admitted, Rejected> {
        if checks.iter().all(|(_, rule)| rule.is_unlimited()) {
            return Ok(unlimited(id, checks, tokens));
        }
        let call = AdmitCall {
            id,
            checks: &checks,
            tokens,
            holds: &[],
            amount: 0,
            lease: Default::default(),
        };
        match self.scripts.admit(call).await {
            Ok(AdmitAnswer::Admitted { tats, .. }) => {
                let status = self.status(&checks, &tats);
                let charge =
                    TokenCharge { id: id.to_owned(), checks, reserved: tokens, local: false };
                Ok(Admitted { status, charge })
            }
            Ok(AdmitAnswer::RateLimited(tats)) => Err(self.refusal(&checks, &tats)),
            // Without accounts the script answers neither; treated as unavailable.
            Ok(AdmitAnswer::NotSeeded | AdmitAnswer::OverBudget { .. }) | Err(_) => {
                self.admit_locally(id, checks, tokens)
            }
        }
    }

    /// Admits `checks` against this relay's share of each limit, in process (Redis cannot be
    /// reached): a degraded decision, counted and logged.
    pub(crate) fn admit_locally(
        &self,
        id: &str,
        checks: Vec<(Subject, Rule)>,
        tokens: u64,
    ) -> Result<Admitted, Rejected> {
        if checks.iter().all(|(_, rule)| rule.is_unlimited()) {
            return Ok(unlimited(id, checks, tokens));
        }
        self.degraded.record(Decision::LimitLocalShare, "Redis unavailable");
        let local: Vec<(Subject, Rule)> =
            checks.into_iter().map(|(subject, rule)| (subject, self.share(rule))).collect();
        let status = self.fallback.admit_at(&local, tokens, Instant::now())?;
        let charge =
            TokenCharge { id: id.to_owned(), checks: local, reserved: tokens, local: true };
        Ok(Admitted { status, charge })
    }

    /// Settles the tokens of a charge admitted in process (see `admit_locally`).
    pub(crate) fn settle_locally(&self, charge: &TokenCharge, used: u64) {
        self.fallback.settle_tokens_at(&charge.checks, charge.reserved, used, Instant::now());
    }

    /// This relay's share of a rule, for decisions taken without Redis.
    fn share(&self, rule: Rule) -> Rule {
        let share = |limit: Option<u32>| {
            limit.map(|limit| if limit == 0 { 0 } else { (limit / self.expected_instances).max(1) })
        };
        Rule { rpm: share(rule.rpm), rpd: share(rule.rpd), tpm: share(rule.tpm) }
    }
}

/// Checks that limit nothing: admitted without asking anyone, and with no headers.
fn unlimited(id: &str, checks: Vec<(Subject, Rule)>, tokens: u64) -> Admitted {
    let charge = TokenCharge { id: id.to_owned(), checks, reserved: tokens, local: false };
    Admitted { status: None, charge }
}

fn inconsistent_refusal(checks: &[(Subject, Rule)]) -> Rejected {
    let (subject, rule) = &checks[0];
    let (window, limit) = rule.windows().next().unwrap_or((Window::RequestsPerMinute, 0));
    let status = RateLimitStatus {
        limit,
        remaining: 0,
        reset: std::time::Duration::from_secs(1),
        remaining_rpm: None,
        remaining_rpd: None,
    };
    let retry_after = std::time::Duration::from_secs(1);
    Rejected { subject: subject.clone(), window, limit, retry_after, status }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn admit(
        &self,
        id: &str,
        checks: Vec<(Subject, Rule)>,
        reserved_tokens: u64,
    ) -> Result<Admitted, Rejected> {
        self.admit_shared_or_local(id, checks, reserved_tokens).await
    }

    async fn settle_tokens(&self, charge: &TokenCharge, used: u64) -> Result<(), Unavailable> {
        if charge.local {
            self.settle_locally(charge, used);
            return Ok(());
        }
        if !charge.needs_settling(used) {
            return Ok(());
        }
        let call = SettleCall { id: &charge.id, tokens: Some((charge, used)), budget: None };
        self.scripts.settle(call).await?;
        Ok(())
    }
}
