//! The ledger several relays share, in Redis. Each step is one Lua script, so it is atomic
//! across relays: a reservation runs the script that admits a whole request
//! (`admission/admit.lua`, here with no rate limit: all or nothing, with a lease), a settle the
//! one that settles it (`admission/settle.lua`: idempotent per reservation; alerts once per
//! account); besides, `release.lua`, `seed.lua` and `renew.lua`.
//!
//! # Keys
//!
//! Under the configured prefix, for each account (a payer, `k:<key id>` or `s:<site id>`, in a
//! period, `2026-05` or `2026-05-14`): `<prefix>:b:<payer>:<period>:spent` (micro-dollars),
//! `…:holds` (a hash of the open reservations' amounts and their `sum`), `…:leases` (a sorted set
//! of lease ends), `…:alert80` and `…:alert100` (the alert flags). They expire two days after
//! the period ends. Besides: `<prefix>:b:gen:<month>`, the month's generation marker (see
//! below), and `<prefix>:settled:<reservation id>`, a settle's idempotency marker (kept
//! [`SETTLED_MARKER`](crate::admission::SETTLED_MARKER)).
//!
//! # Seeding and generations
//!
//! A month's spend starts from what the database records: the first relay that finds the month's
//! generation marker absent (at start-up, or on first use) reads the usage totals and writes
//! them with `SET NX`, then the marker, a random generation number. A relay starting beside
//! others finds the marker and writes nothing. If Redis loses its data (a restart without
//! persistence), the marker is gone too and the next reservation or settle seeds again, from the
//! database, under a new generation. A reservation remembers its generation; a settle under
//! another one adds nothing, since the database the new seed was read from is where that call's
//! cost is recorded. (The call's usage record is written within `usage.flush_ms` of its end, so
//! only calls ending just as the seed is read can be missed.)
//!
//! # Leases
//!
//! Every reservation holds a lease of `lease` (Redis's clock). Its relay renews the leases of
//! the reservations it still has open every third of that, so a live call keeps its room however
//! long it streams; a relay that vanished stops renewing, and its reservations are released by
//! the next reservation against the same account once their leases have run out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::ledger::{
    BudgetLedger, BudgetRule, Crossing, Exhausted, Hold, Payer, Reservation, ReserveError, holds_of,
};
use super::periods::Period;
use super::prices::Micros;
use crate::admission::redis::{
    AdmitAnswer, AdmitCall, MOST_MICROS, Scripts, SettleAnswer, SettleCall, expires_at, millis,
    month_of,
};
use crate::degraded::{Decision, DegradedLog};
use crate::engines::{OnStoreError, RedisSettings, SpendSource};
use crate::limits::TokenCharge;
use crate::{Unavailable, budget::unix_now};

/// Renewals are sent in batches of at most this many leases.
const RENEW_BATCH: usize = 500;

/// Spend, reservations and alerts in Redis, shared by every relay with the same server and key
/// prefix.
#[derive(Debug)]
pub struct RedisLedger {
    scripts: Arc<Scripts>,
    lease: Duration,
    on_store_error: OnStoreError,
    spend: Arc<dyn SpendSource>,
    degraded: Arc<DegradedLog>,
    /// The generation last seen (0: none yet).
    generation: AtomicU64,
    /// One seed at a time from this relay.
    seeding: tokio::sync::Mutex<()>,
    /// The leases of this relay's open reservations, by reservation id, for renewal.
    open: Mutex<HashMap<String, Vec<String>>>,
    release: Script,
    seed: Script,
    renew: Script,
}

/// A seed failed: the database or Redis.
type SeedError = Box<dyn std::error::Error + Send + Sync>;

impl RedisLedger {
    /// The ledger, with its lease renewer running (stopped when the ledger is dropped).
    pub(crate) fn new(
        scripts: Arc<Scripts>,
        settings: &RedisSettings,
        spend: Arc<dyn SpendSource>,
        degraded: Arc<DegradedLog>,
    ) -> Arc<Self> {
        let ledger = Arc::new(Self {
            scripts,
            lease: settings.lease,
            on_store_error: settings.on_store_error,
            spend,
            degraded,
            generation: AtomicU64::new(0),
            seeding: tokio::sync::Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            release: Script::new(include_str!("release.lua")),
            seed: Script::new(include_str!("seed.lua")),
            renew: Script::new(include_str!("renew.lua")),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&ledger), settings.lease / 3));
        ledger
    }

    /// The generation of the shared spend last seen by this relay (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Seeds this month's and today's spend from the database unless it was already: `true`
    /// when this call did.
    pub async fn seed_current_periods(&self) -> Result<bool, SeedError> {
        self.seed(unix_now()).await
    }

    /// Seeds the current periods, logging a failure (the caller then goes on degraded).
    pub(crate) async fn seed_now(&self) {
        if let Err(error) = self.seed(unix_now()).await {
            tracing::warn!(%error, "cannot seed this month's spend in Redis");
        }
    }

    async fn seed(&self, now_unix: u64) -> Result<bool, SeedError> {
        let _one_at_a_time = self.seeding.lock().await;
        let (month, day) = (Period::month_of(now_unix), Period::day_of(now_unix));
        let spent = self.spend.spent(month, day).await?;
        let mut script = self.seed.prepare_invoke();
        let generation = rand::random_range(1..(1_u64 << 52));
        script.key(self.scripts.generation_key(month)).arg(generation).arg(expires_at(month));
        for ((payer, period), micros) in &spent {
            if *period == month || *period == day {
                script.key(self.scripts.account_key(payer, *period, "spent"));
                script.arg((*micros).min(MOST_MICROS)).arg(expires_at(*period));
            }
        }
        let answer: Vec<i64> = self.scripts.connection().run(&script).await?;
        let seeded = answer.first() == Some(&1);
        let generation = answer.get(1).map_or(0, |&g| u64::try_from(g).unwrap_or(0));
        self.generation.store(generation, Ordering::Relaxed);
        if seeded {
            tracing::info!(%month, payers = spent.len(), "seeded the shared spend from the database");
        }
        Ok(seeded)
    }

    /// How long a reservation holds without being renewed.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// The holds of a call by `payers` made now, and its amount as the scripts count it.
    pub(crate) fn holds_now(
        &self,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
    ) -> (Vec<Hold>, Micros) {
        (holds_of(payers, unix_now()), amount.min(MOST_MICROS))
    }

    /// The reservation `admit.lua` just made, registered for lease renewal.
    pub(crate) fn held(
        &self,
        id: &str,
        holds: Vec<Hold>,
        amount: Micros,
        generation: u64,
        expired: u64,
    ) -> Reservation {
        if expired > 0 {
            tracing::info!(
                reservations = expired,
                "reservations whose lease ran out were released (their relay is gone)"
            );
        }
        self.generation.store(generation, Ordering::Relaxed);
        let leases = holds
            .iter()
            .map(|hold| self.scripts.account_key(&hold.payer, hold.period, "leases"))
            .collect();
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), leases);
        Reservation { id: id.to_owned(), holds, amount, held: true, generation }
    }

    /// The refusal `admit.lua` answered for `holds[account]`.
    pub(crate) fn exhausted(
        holds: &[Hold],
        account: usize,
        spent: Micros,
        reserved: Micros,
    ) -> Exhausted {
        let hold = &holds[account.min(holds.len().saturating_sub(1))];
        Exhausted {
            payer: hold.payer.clone(),
            period: hold.period,
            budget: hold.budget.unwrap_or(0),
            spent,
            reserved,
        }
    }

    /// A reservation that could not be made: refused (`on_store_error = "closed"`), or admitted
    /// without one (`"open"`, or a caller with no budget at all).
    pub(crate) fn degraded_reservation(
        &self,
        id: &str,
        holds: Vec<Hold>,
        amount: Micros,
        error: Unavailable,
    ) -> Result<Reservation, ReserveError> {
        // A caller without any budget has nothing to overspend: it is admitted either way.
        let unbudgeted = holds.iter().all(|hold| hold.budget.is_none());
        match self.on_store_error {
            OnStoreError::Closed if !unbudgeted => {
                self.degraded.record(Decision::BudgetRefused, "Redis unavailable");
                Err(ReserveError::Unavailable(error))
            }
            OnStoreError::Closed | OnStoreError::Open => {
                self.degraded.record(Decision::BudgetUnreserved, "Redis unavailable");
                Ok(Reservation {
                    id: id.to_owned(),
                    holds,
                    amount,
                    held: false,
                    generation: self.generation(),
                })
            }
        }
    }

    fn forget(&self, id: &str) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    fn unavailable(&self) -> Unavailable {
        Unavailable { retry_after: self.scripts.connection().retry_after() }
    }

    /// Settles `reservation` with its `cost` and, in the same round trip, `tokens` (a charge
    /// and the tokens it used), idempotently per reservation id.
    pub(crate) async fn settle_with(
        &self,
        reservation: &Reservation,
        cost: Micros,
        tokens: Option<(&TokenCharge, u64)>,
    ) -> Result<Vec<Crossing>, Unavailable> {
        let month = month_of(&reservation.holds);
        if month.is_none() && tokens.is_none() {
            return Ok(Vec::new());
        }
        let id = reservation.id.as_str();
        let call = || SettleCall { id, tokens, budget: Some((reservation, cost)) };
        let mut answer = self.scripts.settle(call()).await?;
        if let SettleAnswer::NotSeeded = answer {
            if month != Some(Period::month_of(unix_now())) {
                // A past month that nobody seeded: nothing is admitted against it any more, and
                // the database has the call's cost. Only the tokens are left to settle.
                if tokens.is_some() {
                    self.scripts.settle(SettleCall { id, tokens, budget: None }).await?;
                }
                self.forget(id);
                return Ok(Vec::new());
            }
            self.seed(unix_now()).await.map_err(|error| {
                tracing::warn!(%error, "cannot seed this month's spend in Redis");
                self.unavailable()
            })?;
            answer = self.scripts.settle(call()).await?;
        }
        let crossings = match answer {
            SettleAnswer::NotSeeded => return Err(self.unavailable()),
            SettleAnswer::AlreadySettled => Vec::new(),
            SettleAnswer::Settled { counted, crossings } => {
                if !counted {
                    tracing::info!(
                        reservation = id,
                        "a call reserved before Redis lost its data was settled; its cost is \
                         counted from the database"
                    );
                }
                crossings
                    .into_iter()
                    .filter_map(|(account, percent, spent)| {
                        let hold = reservation.holds.get(account)?;
                        Some(Crossing {
                            payer: hold.payer.clone(),
                            period: hold.period,
                            percent,
                            spent,
                            budget: hold.budget.unwrap_or(0),
                        })
                    })
                    .collect()
            }
        };
        self.forget(id);
        Ok(crossings)
    }
}

#[async_trait]
impl BudgetLedger for RedisLedger {
    async fn reserve(
        &self,
        id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
    ) -> Result<Reservation, ReserveError> {
        let (holds, amount) = self.holds_now(payers, amount);
        let call =
            || AdmitCall { id, checks: &[], tokens: 0, holds: &holds, amount, lease: self.lease };
        let mut answer = self.scripts.admit(call()).await;
        if let Ok(AdmitAnswer::NotSeeded) = answer {
            self.seed_now().await;
            answer = self.scripts.admit(call()).await;
        }
        match answer {
            Ok(AdmitAnswer::Admitted { generation, expired, .. }) => {
                Ok(self.held(id, holds, amount, generation, expired))
            }
            Ok(AdmitAnswer::OverBudget { account, spent, reserved }) => {
                Err(ReserveError::Exhausted(Box::new(Self::exhausted(
                    &holds, account, spent, reserved,
                ))))
            }
            // Without subjects the script never refuses a rate limit.
            Ok(AdmitAnswer::NotSeeded | AdmitAnswer::RateLimited(_)) => {
                let error = self.unavailable();
                self.degraded_reservation(id, holds, amount, error)
            }
            Err(error) => self.degraded_reservation(id, holds, amount, error),
        }
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Micros,
    ) -> Result<Vec<Crossing>, Unavailable> {
        self.settle_with(reservation, actual, None).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        if !reservation.held {
            return Ok(());
        }
        let mut script = self.release.prepare_invoke();
        script.arg(&reservation.id);
        for hold in &reservation.holds {
            script.key(self.scripts.account_key(&hold.payer, hold.period, "holds"));
            script.key(self.scripts.account_key(&hold.payer, hold.period, "leases"));
        }
        let _: i64 = self.scripts.connection().run(&script).await?;
        self.forget(&reservation.id);
        Ok(())
    }
}

/// Renews the leases of the ledger's open reservations every `every`, until it is dropped.
async fn renew_leases(ledger: Weak<RedisLedger>, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(ledger) = ledger.upgrade() else { return };
        let leases: Vec<(String, String)> = {
            let open = ledger.open.lock().unwrap_or_else(PoisonError::into_inner);
            open.iter()
                .flat_map(|(id, keys)| keys.iter().map(move |key| (key.clone(), id.clone())))
                .collect()
        };
        for batch in leases.chunks(RENEW_BATCH) {
            let mut script = ledger.renew.prepare_invoke();
            script.arg(millis(ledger.lease));
            for (key, id) in batch {
                script.key(key).arg(id);
            }
            if ledger.scripts.connection().run::<i64>(&script).await.is_err() {
                tracing::debug!("cannot renew reservation leases now; will retry");
                break;
            }
        }
    }
}
