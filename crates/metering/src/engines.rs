//! The one place where the engines are chosen: in process, or Redis. The relay calls
//! [`Engines::in_process`] or [`Engines::redis`] once, at start-up, and from then on holds
//! trait objects: above all the [`Admission`], which admits and settles a request's rate limits
//! and budget together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::admission::redis::Scripts;
use crate::admission::{Admission, InProcessAdmission, RedisAdmission};
use crate::budget::{BudgetLedger, InProcessLedger, Micros, Payer, Period, RedisLedger};
use crate::degraded::{DegradedLog, Observer};
use crate::limits::{InProcessLimiter, RateLimiter, RedisLimiter};
use crate::settle::Settler;
use crate::shared::{Connection, RedisHealth};

/// What budgets do when the shared store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStoreError {
    /// Refuse the request (503 with `Retry-After`): no budget can be overspent.
    #[default]
    Closed,
    /// Admit it without a reservation; its cost is still counted once the store is back.
    Open,
}

/// The `[redis]` settings the engines need.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://...` or `rediss://...`.
    pub url: String,
    /// Every key starts with this and a colon, so that several deployments can share a server.
    pub key_prefix: String,
    /// The longest a command may take before it counts as a failure.
    pub command_timeout: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open: Duration,
    /// While Redis is unavailable, each relay enforces `limit / expected_instances` of every
    /// rate limit in process.
    pub expected_instances: u32,
    /// A reservation not renewed for this long is released (its relay is gone).
    pub lease: Duration,
    pub on_store_error: OnStoreError,
}

/// Where the spend of a period is read from to seed the ledger: the usage records in the
/// database.
#[async_trait]
pub trait SpendSource: Send + Sync + std::fmt::Debug + 'static {
    /// What each payer has spent in `month` (from its start until now) and in `day`, keyed by
    /// payer and period.
    async fn spent(
        &self,
        month: Period,
        day: Period,
    ) -> Result<HashMap<(Payer, Period), Micros>, Box<dyn std::error::Error + Send + Sync>>;
}

/// The admission, the limiter and the ledger it is made of, and the settler that settles after
/// requests.
#[derive(Debug, Clone)]
pub struct Engines {
    /// What the request path uses: rate limits and budget in one step each way.
    pub admission: Arc<dyn Admission>,
    /// The admission's rate limits alone.
    pub limiter: Arc<dyn RateLimiter>,
    /// The admission's budgets alone (what a settle outside a request needs: recovery).
    pub ledger: Arc<dyn BudgetLedger>,
    pub settler: Settler,
    /// The Redis ledger, when that is the engine (for what only it does: recovery at start).
    pub redis_ledger: Option<Arc<RedisLedger>>,
    /// Whether Redis answers, when it is the engine.
    pub redis_health: Option<RedisHealth>,
}

impl Engines {
    /// Limits and budgets in this process, the ledger started from `spent`.
    pub fn in_process(
        spent: HashMap<(Payer, Period), Micros>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let limiter = Arc::new(InProcessLimiter::new());
        let ledger = Arc::new(InProcessLedger::new(spent));
        Self {
            admission: Arc::new(InProcessAdmission::new(Arc::clone(&limiter), Arc::clone(&ledger))),
            limiter,
            ledger,
            settler: Settler::inline(observer),
            redis_ledger: None,
            redis_health: None,
        }
    }

    /// Limits and budgets in Redis, shared with every relay that uses the same server and key
    /// prefix. The connection is made lazily, so a relay starts (degraded) while Redis is down.
    /// The current periods' spend is seeded from `spend` on first use, unless another relay did
    /// it already (or at once: [`RedisLedger::seed_current_periods`]).
    pub fn redis(
        settings: &RedisSettings,
        spend: Arc<dyn SpendSource>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, redis::RedisError> {
        let connection = Connection::lazy(
            &settings.url,
            settings.command_timeout,
            settings.breaker_failures,
            settings.breaker_open,
        )?;
        let degraded = Arc::new(DegradedLog::new(Arc::clone(&observer)));
        let redis_health = Some(connection.health());
        let scripts = Arc::new(Scripts::new(connection, &settings.key_prefix));
        let limiter = Arc::new(RedisLimiter::new(
            Arc::clone(&scripts),
            settings.expected_instances,
            Arc::clone(&degraded),
        ));
        let ledger = RedisLedger::new(Arc::clone(&scripts), settings, spend, degraded);
        let admission = RedisAdmission::new(Arc::clone(&limiter), Arc::clone(&ledger), scripts);
        Ok(Self {
            admission: Arc::new(admission),
            limiter,
            ledger: Arc::clone(&ledger) as Arc<dyn BudgetLedger>,
            settler: Settler::background(observer),
            redis_ledger: Some(ledger),
            redis_health,
        })
    }
}
