//! The limiter several relays share: GCRA state in Redis, one Lua script per admission (one
//! round trip, all or nothing across the request's subjects, on the Redis server's clock), and
//! one per token settle.
//!
//! Keys, under the configured prefix: `<prefix>:rl:k:<key id>`, `<prefix>:rl:s:<site id>` and
//! `<prefix>:rl:v:<site id>:<visitor>`, each a hash of three TATs in microseconds (fields `0`,
//! `1`, `2`: requests per minute, requests per day, tokens per minute) that expires once its
//! longest backlog has run out (a replenished subject is the same as an absent one); and
//! `<prefix>:rl:settled:<request id>`, the marker that makes a token settle idempotent (ten
//! minutes).
//!
//! While Redis cannot be reached (an error, a time limit, the breaker open), a request is
//! checked by an in-process limiter against this relay's share of each limit,
//! `limit / expected_instances` (at least 1 of a limit that is not 0), so that the relays
//! together still admit about the limit, and its tokens are settled there too. Each such
//! decision is counted and logged (`degraded`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use redis::Script;

use super::gcra::{self, Tats, Unit};
use super::{
    Admitted, InProcessLimiter, RateLimiter, Rejected, Rule, Subject, TokenCharge, Window,
};
use crate::Unavailable;
use crate::degraded::{Decision, DegradedLog};
use crate::shared::Connection;

/// Larger reservations are charged as this many tokens: TATs stay exact in Lua's doubles.
const MOST_TOKENS: u64 = 1 << 40;

/// Rate limits in Redis, shared by every relay with the same server and key prefix.
#[derive(Debug)]
pub struct RedisLimiter {
    connection: Connection,
    prefix: String,
    expected_instances: u32,
    fallback: InProcessLimiter,
    degraded: Arc<DegradedLog>,
    admit: Script,
    settle: Script,
}

impl RedisLimiter {
    pub(crate) fn new(
        connection: Connection,
        prefix: &str,
        expected_instances: u32,
        degraded: Arc<DegradedLog>,
    ) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            expected_instances: expected_instances.max(1),
            fallback: InProcessLimiter::new(),
            degraded,
            admit: Script::new(include_str!("gcra_admit.lua")),
            settle: Script::new(include_str!("gcra_settle.lua")),
        }
    }

    fn subject_key(&self, subject: &Subject) -> String {
        match subject {
            Subject::Key(id) => format!("{}:rl:k:{id}", self.prefix),
            Subject::Site(id) => format!("{}:rl:s:{id}", self.prefix),
            Subject::Visitor { site, visitor } => format!("{}:rl:v:{site}:{visitor}", self.prefix),
        }
    }

    /// One attempt at Redis: `Ok(Err(_))` is a refusal, `Err(_)` an unavailable store.
    async fn admit_shared(
        &self,
        checks: &[(Subject, Rule)],
        reserved_tokens: u64,
    ) -> Result<Result<Option<super::RateLimitStatus>, Rejected>, Unavailable> {
        let mut script = self.admit.prepare_invoke();
        script.arg(reserved_tokens.min(MOST_TOKENS));
        for (subject, rule) in checks {
            script.key(self.subject_key(subject));
            for window in Window::ALL {
                script.arg(rule.limit(window).map_or(-1, i64::from));
            }
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        let number = |index: usize| answer.get(index).map_or(0, |&n| u64::try_from(n).unwrap_or(0));
        let (admitted, now) = (number(0) == 1, number(1));
        let tats = |subject: usize| -> Tats {
            let first = 2 + subject * 3;
            [number(first), number(first + 1), number(first + 2)]
        };
        if !admitted {
            return Ok(Err(match gcra::refusal(checks, tats, now, Unit::MICROS) {
                Err(rejected) => rejected,
                // The script and `gcra` do the same arithmetic; were they ever to disagree, the
                // script's refusal stands (nothing was charged), with a short retry.
                Ok(()) => inconsistent_refusal(checks),
            }));
        }
        Ok(Ok(gcra::status(checks, tats, now, Unit::MICROS)))
    }

    /// This relay's share of a rule, for decisions taken without Redis.
    fn share(&self, rule: Rule) -> Rule {
        let share = |limit: Option<u32>| {
            limit.map(|limit| if limit == 0 { 0 } else { (limit / self.expected_instances).max(1) })
        };
        Rule { rpm: share(rule.rpm), rpd: share(rule.rpd), tpm: share(rule.tpm) }
    }
}

fn inconsistent_refusal(checks: &[(Subject, Rule)]) -> Rejected {
    let (subject, rule) = &checks[0];
    let (window, limit) = rule.windows().next().unwrap_or((Window::RequestsPerMinute, 0));
    let status = super::RateLimitStatus {
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
        request_id: &str,
        checks: Vec<(Subject, Rule)>,
        reserved_tokens: u64,
    ) -> Result<Admitted, Rejected> {
        let charge = |checks, local| TokenCharge {
            request_id: request_id.to_owned(),
            checks,
            reserved: reserved_tokens,
            local,
        };
        if checks.iter().all(|(_, rule)| rule.is_unlimited()) {
            return Ok(Admitted { status: None, charge: charge(checks, false) });
        }
        match self.admit_shared(&checks, reserved_tokens).await {
            Ok(decision) => {
                let status = decision?;
                Ok(Admitted { status, charge: charge(checks, false) })
            }
            Err(_) => {
                self.degraded.record(Decision::LimitLocalShare, "Redis unavailable");
                let local: Vec<(Subject, Rule)> =
                    checks.into_iter().map(|(subject, rule)| (subject, self.share(rule))).collect();
                let status = self.fallback.admit_at(&local, reserved_tokens, Instant::now())?;
                Ok(Admitted { status, charge: charge(local, true) })
            }
        }
    }

    async fn settle_tokens(&self, charge: &TokenCharge, used: u64) -> Result<(), Unavailable> {
        if charge.local {
            self.fallback.settle_tokens_at(&charge.checks, charge.reserved, used, Instant::now());
            return Ok(());
        }
        if !charge.needs_settling(used) {
            return Ok(());
        }
        let mut script = self.settle.prepare_invoke();
        script.key(format!("{}:rl:settled:{}", self.prefix, charge.request_id));
        script.arg(charge.reserved.min(MOST_TOKENS)).arg(used.min(MOST_TOKENS));
        for (subject, rule) in &charge.checks {
            if let Some(limit) = rule.tpm {
                script.key(self.subject_key(subject)).arg(limit);
            }
        }
        let _settled: i64 = self.connection.run(&script).await?;
        Ok(())
    }
}
