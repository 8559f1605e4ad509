//! The ledger several relays share, in Redis. Each step is one Lua script, so it is atomic
//! across relays: `reserve.lua` (all or nothing, with a lease), `settle.lua` (idempotent per
//! request; alerts once per account), `release.lua`, `seed.lua` and `renew.lua`.
//!
//! # Keys
//!
//! Under the configured prefix, for each account (a payer, `k:<key id>` or `s:<site id>`, in a
//! period, `2026-05` or `2026-05-14`): `<prefix>:b:<payer>:<period>:spent` (micro-dollars),
//! `…:holds` (a hash of the open reservations' amounts and their `sum`), `…:leases` (a sorted set
//! of lease ends), `…:alert80` and `…:alert100` (the alert flags). They expire two days after
//! the period ends. Besides: `<prefix>:b:gen:<month>`, the month's generation marker (see
//! below), and `<prefix>:b:settled:<request id>`, a settle's idempotency marker (kept
//! [`SETTLED_MARKER`]).
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
use super::periods::{Period, SECONDS_PER_DAY};
use super::prices::Micros;
use crate::degraded::{Decision, DegradedLog};
use crate::engines::{OnStoreError, RedisSettings, SpendSource};
use crate::shared::Connection;
use crate::{Unavailable, budget::unix_now};

/// Amounts beyond this are counted as this: Lua's doubles are exact below 2^53.
const MOST_MICROS: Micros = 1 << 50;

/// How long a settle's idempotency marker is kept: longer than any retry goes on.
pub const SETTLED_MARKER: Duration = Duration::from_secs(2 * 86_400);

/// Renewals are sent in batches of at most this many leases.
const RENEW_BATCH: usize = 500;

/// Spend, reservations and alerts in Redis, shared by every relay with the same server and key
/// prefix.
#[derive(Debug)]
pub struct RedisLedger {
    connection: Connection,
    prefix: String,
    lease: Duration,
    on_store_error: OnStoreError,
    spend: Arc<dyn SpendSource>,
    degraded: Arc<DegradedLog>,
    /// The generation last seen (0: none yet).
    generation: AtomicU64,
    /// One seed at a time from this relay.
    seeding: tokio::sync::Mutex<()>,
    /// The leases of this relay's open reservations, by request id, for renewal.
    open: Mutex<HashMap<String, Vec<String>>>,
    scripts: Scripts,
}

#[derive(Debug)]
struct Scripts {
    reserve: Script,
    settle: Script,
    release: Script,
    seed: Script,
    renew: Script,
}

/// What `reserve.lua` answered.
enum Reserved {
    Held { generation: u64 },
    Refused { account: usize, spent: Micros, reserved: Micros },
    NotSeeded,
}

/// A seed failed: the database or Redis.
type SeedError = Box<dyn std::error::Error + Send + Sync>;

impl RedisLedger {
    /// The ledger, with its lease renewer running (stopped when the ledger is dropped).
    pub(crate) fn new(
        connection: Connection,
        settings: &RedisSettings,
        spend: Arc<dyn SpendSource>,
        degraded: Arc<DegradedLog>,
    ) -> Arc<Self> {
        let ledger = Arc::new(Self {
            connection,
            prefix: settings.key_prefix.clone(),
            lease: settings.lease,
            on_store_error: settings.on_store_error,
            spend,
            degraded,
            generation: AtomicU64::new(0),
            seeding: tokio::sync::Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            scripts: Scripts {
                reserve: Script::new(include_str!("reserve.lua")),
                settle: Script::new(include_str!("settle.lua")),
                release: Script::new(include_str!("release.lua")),
                seed: Script::new(include_str!("seed.lua")),
                renew: Script::new(include_str!("renew.lua")),
            },
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

    async fn seed(&self, now_unix: u64) -> Result<bool, SeedError> {
        let _one_at_a_time = self.seeding.lock().await;
        let (month, day) = (Period::month_of(now_unix), Period::day_of(now_unix));
        let spent = self.spend.spent(month, day).await?;
        let mut script = self.scripts.seed.prepare_invoke();
        let generation = rand::random_range(1..(1_u64 << 52));
        script.key(self.generation_key(month)).arg(generation).arg(expires_at(month));
        for ((payer, period), micros) in &spent {
            if *period == month || *period == day {
                script.key(self.account_key(payer, *period, "spent"));
                script.arg((*micros).min(MOST_MICROS)).arg(expires_at(*period));
            }
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        let seeded = answer.first() == Some(&1);
        let generation = answer.get(1).map_or(0, |&g| u64::try_from(g).unwrap_or(0));
        self.generation.store(generation, Ordering::Relaxed);
        if seeded {
            tracing::info!(%month, payers = spent.len(), "seeded the shared spend from the database");
        }
        Ok(seeded)
    }

    fn generation_key(&self, month: Period) -> String {
        format!("{}:b:gen:{month}", self.prefix)
    }

    fn account_key(&self, payer: &Payer, period: Period, what: &str) -> String {
        let kind = match payer {
            Payer::Key(_) => "k",
            Payer::Site(_) => "s",
        };
        format!("{}:b:{kind}:{}:{period}:{what}", self.prefix, payer.id())
    }

    /// The month of a reservation's holds (all of them are in one month and one day).
    fn month_of(holds: &[Hold]) -> Option<Period> {
        holds.iter().map(|hold| hold.period).find(|period| matches!(period, Period::Month { .. }))
    }

    async fn reserve_shared(
        &self,
        request_id: &str,
        holds: &[Hold],
        amount: Micros,
        month: Period,
    ) -> Result<Reserved, Unavailable> {
        let mut script = self.scripts.reserve.prepare_invoke();
        script.key(self.generation_key(month));
        script.arg(request_id).arg(amount).arg(millis(self.lease));
        for hold in holds {
            for what in ["spent", "holds", "leases"] {
                script.key(self.account_key(&hold.payer, hold.period, what));
            }
            script.arg(budget_arg(hold.budget)).arg(expires_at(hold.period));
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        let number = |index: usize| answer.get(index).map_or(0, |&n| u64::try_from(n).unwrap_or(0));
        Ok(match answer.first() {
            Some(1) => {
                if number(2) > 0 {
                    tracing::info!(
                        reservations = number(2),
                        "reservations whose lease ran out were released (their relay is gone)"
                    );
                }
                Reserved::Held { generation: number(1) }
            }
            Some(0) => Reserved::Refused {
                account: usize::try_from(number(1)).unwrap_or(1).saturating_sub(1),
                spent: number(2),
                reserved: number(3),
            },
            _ => Reserved::NotSeeded,
        })
    }

    /// A reservation that could not be made: refused (`on_store_error = "closed"`), or admitted
    /// without one (`"open"`, or a caller with no budget at all).
    fn degraded_reservation(
        &self,
        request_id: &str,
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
                    request_id: request_id.to_owned(),
                    holds,
                    amount,
                    held: false,
                    generation: self.generation(),
                })
            }
        }
    }

    fn forget(&self, request_id: &str) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(request_id);
    }

    async fn settle_shared(
        &self,
        reservation: &Reservation,
        actual: Micros,
        month: Period,
    ) -> Result<Option<Vec<Crossing>>, Unavailable> {
        let mut script = self.scripts.settle.prepare_invoke();
        script.key(self.generation_key(month));
        script.key(format!("{}:b:settled:{}", self.prefix, reservation.request_id));
        script
            .arg(&reservation.request_id)
            .arg(reservation.generation)
            .arg(actual.min(MOST_MICROS))
            .arg(millis(SETTLED_MARKER));
        for hold in &reservation.holds {
            for what in ["spent", "holds", "leases", "alert80", "alert100"] {
                script.key(self.account_key(&hold.payer, hold.period, what));
            }
            script.arg(budget_arg(hold.budget)).arg(expires_at(hold.period));
        }
        let answer: Vec<i64> = self.connection.run(&script).await?;
        let number = |index: usize| answer.get(index).map_or(0, |&n| u64::try_from(n).unwrap_or(0));
        match answer.first() {
            Some(-1) => return Ok(None),
            Some(1) if number(1) == 0 => tracing::info!(
                request_id = %reservation.request_id,
                "a call reserved before Redis lost its data was settled; its cost is counted \
                 from the database"
            ),
            _ => {}
        }
        let mut crossings = Vec::new();
        for triple in answer.get(2..).unwrap_or_default().chunks_exact(3) {
            let account = usize::try_from(triple[0]).unwrap_or(1).saturating_sub(1);
            let (Some(hold), Ok(percent)) =
                (reservation.holds.get(account), u8::try_from(triple[1]))
            else {
                continue;
            };
            crossings.push(Crossing {
                payer: hold.payer.clone(),
                period: hold.period,
                percent,
                spent: u64::try_from(triple[2]).unwrap_or(0),
                budget: hold.budget.unwrap_or(0),
            });
        }
        Ok(Some(crossings))
    }
}

#[async_trait]
impl BudgetLedger for RedisLedger {
    async fn reserve(
        &self,
        request_id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
    ) -> Result<Reservation, ReserveError> {
        let now = unix_now();
        let holds = holds_of(payers, now);
        let amount = amount.min(MOST_MICROS);
        let month = Period::month_of(now);
        let mut answer = self.reserve_shared(request_id, &holds, amount, month).await;
        if let Ok(Reserved::NotSeeded) = answer {
            if let Err(error) = self.seed(now).await {
                tracing::warn!(%error, "cannot seed this month's spend in Redis");
            }
            answer = self.reserve_shared(request_id, &holds, amount, month).await;
        }
        match answer {
            Ok(Reserved::Held { generation }) => {
                self.generation.store(generation, Ordering::Relaxed);
                let leases = holds
                    .iter()
                    .map(|hold| self.account_key(&hold.payer, hold.period, "leases"))
                    .collect();
                self.open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(request_id.to_owned(), leases);
                Ok(Reservation {
                    request_id: request_id.to_owned(),
                    holds,
                    amount,
                    held: true,
                    generation,
                })
            }
            Ok(Reserved::Refused { account, spent, reserved }) => {
                let hold = &holds[account.min(holds.len().saturating_sub(1))];
                Err(ReserveError::Exhausted(Box::new(Exhausted {
                    payer: hold.payer.clone(),
                    period: hold.period,
                    budget: hold.budget.unwrap_or(0),
                    spent,
                    reserved,
                })))
            }
            Ok(Reserved::NotSeeded) => {
                let error = Unavailable { retry_after: self.connection.retry_after() };
                self.degraded_reservation(request_id, holds, amount, error)
            }
            Err(error) => self.degraded_reservation(request_id, holds, amount, error),
        }
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Micros,
    ) -> Result<Vec<Crossing>, Unavailable> {
        let Some(month) = Self::month_of(&reservation.holds) else { return Ok(Vec::new()) };
        let mut answer = self.settle_shared(reservation, actual, month).await?;
        if answer.is_none() {
            if month != Period::month_of(unix_now()) {
                // A past month that nobody seeded: nothing is admitted against it any more, and
                // the database has the call's cost.
                self.forget(&reservation.request_id);
                return Ok(Vec::new());
            }
            self.seed(unix_now()).await.map_err(|error| {
                tracing::warn!(%error, "cannot seed this month's spend in Redis");
                Unavailable { retry_after: self.connection.retry_after() }
            })?;
            answer = self.settle_shared(reservation, actual, month).await?;
        }
        let crossings = answer.ok_or(Unavailable { retry_after: self.connection.retry_after() })?;
        self.forget(&reservation.request_id);
        Ok(crossings)
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        if !reservation.held {
            return Ok(());
        }
        let mut script = self.scripts.release.prepare_invoke();
        script.arg(&reservation.request_id);
        for hold in &reservation.holds {
            script.key(self.account_key(&hold.payer, hold.period, "holds"));
            script.key(self.account_key(&hold.payer, hold.period, "leases"));
        }
        let _: i64 = self.connection.run(&script).await?;
        self.forget(&reservation.request_id);
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
            let mut script = ledger.scripts.renew.prepare_invoke();
            script.arg(millis(ledger.lease));
            for (key, id) in batch {
                script.key(key).arg(id);
            }
            if ledger.connection.run::<i64>(&script).await.is_err() {
                tracing::debug!("cannot renew reservation leases now; will retry");
                break;
            }
        }
    }
}

/// A budget as the scripts take it: -1 for none.
fn budget_arg(budget: Option<Micros>) -> i64 {
    budget.map_or(-1, |budget| i64::try_from(budget.min(MOST_MICROS)).unwrap_or(i64::MAX))
}

/// When an account's keys expire (unix ms): two days after its period ends, so that calls open
/// across the period's end still settle into it.
fn expires_at(period: Period) -> u64 {
    period.ends_at().saturating_add(2 * SECONDS_PER_DAY).saturating_mul(1000)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
