//! The connection to Redis both Redis engines share: one multiplexed connection
//! (`redis::aio::ConnectionManager`, which reconnects by itself), a short time limit on every
//! command, and a breaker.
//!
//! # The breaker
//!
//! Every call either answers within `command_timeout` or counts as a failure. After
//! `breaker_failures` failures in a row the breaker opens for `breaker_open`: calls fail at once
//! (so that requests do not each wait out a time limit against a Redis that is gone), and the
//! engines take their degraded decisions. Once that time is up, one call goes through as a
//! probe; if it succeeds the breaker closes, otherwise it opens again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, ScriptInvocation};

use crate::Unavailable;

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    manager: ConnectionManager,
    command_timeout: Duration,
    breaker: std::sync::Arc<Breaker>,
}

impl Connection {
    /// A connection made on first use: the relay starts (degraded) when Redis is down.
    pub(crate) fn lazy(
        url: &str,
        command_timeout: Duration,
        breaker_failures: u32,
        breaker_open: Duration,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(breaker_open);
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        let breaker = std::sync::Arc::new(Breaker::new(breaker_failures, breaker_open));
        Ok(Self { manager, command_timeout, breaker })
    }

    /// Runs a script under the time limit and the breaker.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        self.breaker.allow()?;
        let mut manager = self.manager.clone();
        let result =
            tokio::time::timeout(self.command_timeout, script.invoke_async::<T>(&mut manager))
                .await;
        match result {
            Ok(Ok(value)) => {
                self.breaker.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "a Redis command failed");
                Err(self.breaker.failed())
            }
            Err(_) => {
                tracing::debug!(timeout = ?self.command_timeout, "a Redis command timed out");
                Err(self.breaker.failed())
            }
        }
    }

    /// What `/healthz` reports of this connection.
    pub(crate) fn health(&self) -> RedisHealth {
        RedisHealth(std::sync::Arc::clone(&self.breaker))
    }

    /// How long a caller refused now should wait: the breaker's remaining open time, or its
    /// whole open time.
    pub(crate) fn retry_after(&self) -> Duration {
        self.breaker.open_for
    }
}

/// Whether the relay reaches Redis now, as its last commands found.
#[derive(Debug, Clone)]
pub struct RedisHealth(std::sync::Arc<Breaker>);

impl RedisHealth {
    /// `false` since the last command failed, until one succeeds again.
    pub fn reachable(&self) -> bool {
        let state = self.0.lock();
        state.failures == 0 && state.open_until.is_none()
    }
}

/// Consecutive failures open it; a successful probe closes it.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// A probe is out (the breaker is half open).
    probing: bool,
}

impl Breaker {
    pub(crate) fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self { failures_to_open: failures_to_open.max(1), open_for, state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Ok` when a call may go to Redis now.
    pub(crate) fn allow(&self) -> Result<(), Unavailable> {
        let mut state = self.lock();
        let Some(until) = state.open_until else { return Ok(()) };
        let now = Instant::now();
        if now < until {
            return Err(Unavailable { retry_after: until - now });
        }
        if state.probing {
            return Err(Unavailable { retry_after: self.open_for });
        }
        state.probing = true;
        Ok(())
    }

    pub(crate) fn succeeded(&self) {
        let mut state = self.lock();
        if state.open_until.is_some() {
            tracing::info!("the shared metering store (Redis) answers again");
        }
        *state = BreakerState::default();
    }

    /// Records a failure; the error to return.
    pub(crate) fn failed(&self) -> Unavailable {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        if state.probing || state.failures >= self.failures_to_open {
            if state.open_until.is_none() {
                tracing::warn!(
                    failures = state.failures,
                    open_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX),
                    "the shared metering store (Redis) is unavailable; degraded until it answers"
                );
            }
            state.open_until = Some(Instant::now() + self.open_for);
            state.probing = false;
        }
        Unavailable { retry_after: self.open_for }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through_later() {
        let breaker = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(breaker.allow().is_ok());
            breaker.failed();
        }
        assert!(breaker.allow().is_ok(), "two failures are not enough");
        breaker.failed();
        let refused = breaker.allow().unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(30));

        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow().is_ok(), "the probe");
        assert!(breaker.allow().is_err(), "only one probe at a time");
        breaker.failed();
        assert!(breaker.allow().is_err(), "a failed probe opens it again");

        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow().is_ok());
        breaker.succeeded();
        assert!(breaker.allow().is_ok() && breaker.allow().is_ok(), "closed");
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        assert!(breaker.allow().is_ok());
    }
}
