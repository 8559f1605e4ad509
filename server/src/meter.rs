//! Metering: what a chat request is allowed before it starts (rate limits, budget reservation)
//! and what is recorded when it ends, however it ends: completed, failed, or dropped half way by
//! the client. A [`Meter`] travels with the answer's stream; finishing it (or dropping it)
//! settles the budget with what was generated, charges the tokens to the token limits, and hands
//! a usage record to the [`UsageRecorder`], which writes records in batches off the request path.
//! Settling also queues the `budget.threshold` and `request.completed` webhook events, which
//! never makes the request wait either (see `webhooks`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::Usage;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Crossing, Ledger, Payer, Period, PriceTable, Reservation};
use crate::limits::{RateLimiter, Rule, Subject};
use crate::store::{Outcome, Store, UsageRecord};
use crate::webhooks::Webhooks;

/// Everything the request path needs to meter calls; part of the app state.
#[derive(Debug)]
pub struct Metering {
    pub limiter: Arc<dyn RateLimiter>,
    pub ledger: Arc<Ledger>,
    pub prices: PriceTable,
    pub recorder: UsageRecorder,
    /// Where budget alerts and finished requests are sent.
    pub webhooks: Arc<Webhooks>,
}

impl Metering {
    /// Starts the usage writer and loads what was already spent this month and today, so that
    /// budgets hold across restarts.
    pub async fn start(
        store: Arc<dyn Store>,
        prices: PriceTable,
        flush_every: Duration,
        webhooks: Arc<Webhooks>,
    ) -> Result<Self, crate::store::StoreError> {
        let now = crate::unix_now();
        let month = Period::month_of(now);
        let day = Period::day_of(now);
        let since_ms = i64::try_from(month.starts_at().saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut spent: HashMap<(Payer, Period), u64> = HashMap::new();
        for group in store.usage_totals(since_ms, None, None).await? {
            let payer = match (group.key_id, group.site_id) {
                (Some(key), _) => Payer::Key(key),
                (None, Some(site)) => Payer::Site(site),
                (None, None) => continue,
            };
            *spent.entry((payer.clone(), month)).or_default() += group.cost_micros;
            if Period::day_of(group.day_start) == day {
                *spent.entry((payer, day)).or_default() += group.cost_micros;
            }
        }
        Ok(Self {
            limiter: Arc::new(crate::limits::InProcessLimiter::new()),
            ledger: Arc::new(Ledger::new(spent)),
            prices,
            recorder: UsageRecorder::start(store, flush_every),
            webhooks,
        })
    }
}

/// An upper bound of a prompt's tokens, for budget reservations: tokenizers of the BPE family
/// never make more tokens than bytes, and chat formats add a few tokens per message.
pub fn prompt_token_ceiling(prompt_bytes: usize, messages: usize) -> u64 {
    let bytes = u64::try_from(prompt_bytes).unwrap_or(u64::MAX);
    let messages = u64::try_from(messages).unwrap_or(u64::MAX);
    bytes.saturating_add(messages.saturating_mul(4)).saturating_add(3)
}

/// One request's metering, from admission to its usage record.
pub struct Meter {
    metering: Arc<Metering>,
    checks: Vec<(Subject, Rule)>,
    reservation: Option<Reservation>,
    /// Taken when the meter is settled (so it is settled once, by `finish` or by `Drop`).
    record: Option<UsageRecord>,
    started: Instant,
    first_text: Option<Duration>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = self.record.as_ref().map(|r| r.model.as_str());
        f.debug_struct("Meter").field("model", &model).finish_non_exhaustive()
    }
}

impl Meter {
    /// `record` carries who called, the model and the upstream; the rest is filled in at the end.
    pub fn new(
        metering: Arc<Metering>,
        checks: Vec<(Subject, Rule)>,
        reservation: Option<Reservation>,
        record: UsageRecord,
    ) -> Self {
        Self {
            metering,
            checks,
            reservation,
            record: Some(record),
            started: Instant::now(),
            first_text: None,
        }
    }

    /// Notes the arrival of the answer's first text (latency to first token).
    pub fn text_arrived(&mut self) {
        if self.first_text.is_none() {
            self.first_text = Some(self.started.elapsed());
        }
    }

    /// Settles the request: `usage` is what the upstream reported or the relay's estimate of
    /// what was sent and streamed (`estimated`). A request the upstream never answered costs
    /// nothing.
    pub fn finish(mut self, usage: Usage, estimated: bool, outcome: Outcome) {
        self.settle(usage, estimated, outcome);
    }

    fn settle(&mut self, usage: Usage, estimated: bool, outcome: Outcome) {
        let Some(mut record) = self.record.take() else { return };
        let metering = &self.metering;
        let cost =
            metering.prices.cost(&record.model, usage.prompt_tokens, usage.completion_tokens);
        if let Some(reservation) = self.reservation.take() {
            for crossing in reservation.settle(cost) {
                log_crossing(&crossing);
                metering.webhooks.budget_crossed(&crossing);
            }
        }
        let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        if tokens > 0 {
            metering.limiter.charge_tokens(&self.checks, tokens, Instant::now());
        }
        record.input_tokens = usage.prompt_tokens;
        record.output_tokens = usage.completion_tokens;
        record.estimated = estimated;
        record.cost_micros = cost;
        record.first_token_ms =
            self.first_text.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        record.total_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        record.outcome = outcome;
        metering.webhooks.request_completed(&record);
        metering.recorder.record(record);
    }
}

fn log_crossing(crossing: &Crossing) {
    tracing::warn!(
        payer = %crossing.payer,
        payer_id = crossing.payer.id(),
        period = %crossing.period,
        percent = crossing.percent,
        spent_micros = crossing.spent,
        budget_micros = crossing.budget,
        "budget threshold crossed"
    );
}

impl Drop for Meter {
    /// A meter dropped unfinished belongs to a request whose owner went away before settling
    /// (the relay stream settles its own meter with what was streamed): record it as
    /// interrupted, at no cost, rather than lose it.
    fn drop(&mut self) {
        self.settle(Usage::new(0, 0), true, Outcome::Interrupted);
    }
}

enum Command {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
}

/// Writes usage records in batches from a background task, so that a request never waits for
/// the database; `flush` writes everything recorded so far (at shutdown).
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    commands: mpsc::UnboundedSender<Command>,
}

impl UsageRecorder {
    /// Starts the writer (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, flush_every: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, receiver, flush_every));
        Self { commands }
    }

    pub fn record(&self, record: UsageRecord) {
        if self.commands.send(Command::Record(record)).is_err() {
            tracing::error!("the usage writer has stopped; a usage record is lost");
        }
    }

    /// Resolves once everything recorded before the call is written (or could not be, which
    /// is logged).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// Records waiting to be written are kept across failed writes, up to this many.
const MAX_PENDING: usize = 100_000;

async fn write_batches(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    flush_every: Duration,
) {
    let mut pending: Vec<UsageRecord> = Vec::new();
    let mut every = tokio::time::interval(flush_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Record(record)) => pending.push(record),
                Some(Command::Flush(done)) => {
                    // Take everything already queued too, so the flush covers it.
                    while let Ok(command) = commands.try_recv() {
                        match command {
                            Command::Record(record) => pending.push(record),
                            Command::Flush(other) => { let _ = other.send(()); }
                        }
                    }
                    write(store.as_ref(), &mut pending).await;
                    let _ = done.send(());
                }
                None => {
                    write(store.as_ref(), &mut pending).await;
                    return;
                }
            },
            _ = every.tick() => write(store.as_ref(), &mut pending).await,
        }
    }
}

async fn write(store: &dyn Store, pending: &mut Vec<UsageRecord>) {
    if pending.is_empty() {
        return;
    }
    match store.record_usage(pending).await {
        Ok(()) => pending.clear(),
        Err(error) => {
            tracing::error!(%error, records = pending.len(), "cannot write usage records; will retry");
            if pending.len() > MAX_PENDING {
                let dropped = pending.len() - MAX_PENDING;
                pending.drain(..dropped);
                tracing::error!(dropped, "usage records dropped: the database is unavailable");
            }
        }
    }
}
