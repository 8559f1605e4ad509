//! The single-instance ledger: one mutex around a map of accounts, started from what the usage
//! table records for the current month and day.
//!
//! A new period is a new entry that starts at zero; entries of past periods are dropped once
//! nothing is reserved against them, so the ledger holds about two entries per payer whatever
//! its age.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::ledger::{
    ALERT_PERCENTS, BudgetLedger, BudgetRule, Crossing, Exhausted, Hold, Payer, Reservation,
    ReserveError, holds_of, reached,
};
use super::periods::{Period, SECONDS_PER_DAY};
use super::prices::Micros;
use crate::Unavailable;

/// What the ledger knows of one payer in one period.
#[derive(Debug, Clone, Default)]
struct Account {
    spent: Micros,
    reserved: Micros,
    /// Reservations not yet settled or dropped; the entry is kept while there are any.
    open: usize,
    /// Which of [`ALERT_PERCENTS`] have been reported, by index.
    reported: [bool; ALERT_PERCENTS.len()],
}

#[derive(Debug, Default)]
struct LedgerState {
    accounts: HashMap<(Payer, Period), Account>,
    /// The start of the latest day seen by `reserve`: periods that end by then are past.
    today: u64,
}

impl LedgerState {
    /// Drops the accounts of past periods, once per new day (so the cost is amortised over the
    /// day's calls). Accounts with open reservations stay until those end (see `finish`).
    fn sweep(&mut self, now_unix: u64) {
        let today = now_unix - now_unix % SECONDS_PER_DAY;
        // Only forwards: a clock stepping back must not drop the current periods.
        if today <= self.today {
            return;
        }
        self.today = today;
        self.accounts.retain(|(_, period), account| account.open > 0 || period.ends_at() > today);
    }

    /// Ends a reservation: releases `amount` from each hold and, when settled, adds the actual
    /// cost and reports the thresholds that this crossed.
    fn finish(&mut self, holds: &[Hold], amount: Micros, actual: Option<Micros>) -> Vec<Crossing> {
        let mut crossings = Vec::new();
        for Hold { payer, period, budget } in holds {
            let (budget, key) = (*budget, (payer.clone(), *period));
            // The account exists while the reservation is open; recreate it rather than lose
            // the spend if that ever fails to hold.
            let account = self.accounts.entry(key.clone()).or_default();
            account.reserved = account.reserved.saturating_sub(amount);
            account.open = account.open.saturating_sub(1);
            if let Some(actual) = actual {
                let before = account.spent;
                account.spent = before.saturating_add(actual);
                if let Some(budget) = budget {
                    for (index, &percent) in ALERT_PERCENTS.iter().enumerate() {
                        let reached = |spent: Micros| reached(spent, budget, percent);
                        // Spend loaded at start-up above a threshold was reported before then.
                        if !account.reported[index] && !reached(before) && reached(account.spent) {
                            account.reported[index] = true;
                            crossings.push(Crossing {
                                payer: key.0.clone(),
                                period: key.1,
                                percent,
                                spent: account.spent,
                                budget,
                            });
                        }
                    }
                }
            }
            // A call that began before midnight settles into its own period, which is past now.
            if account.open == 0 && key.1.ends_at() <= self.today {
                self.accounts.remove(&key);
            }
        }
        crossings
    }
}

/// Why [`InProcessLedger::reserve_with`] made no reservation.
#[derive(Debug)]
pub(crate) enum ReserveOr<E> {
    /// A budget has no room.
    Exhausted(Exhausted),
    /// The step run with the reservation failed.
    Other(E),
}

/// Spend and reservations per payer and period, in this process.
#[derive(Debug, Default)]
pub struct InProcessLedger {
    state: Mutex<LedgerState>,
}

impl InProcessLedger {
    /// A ledger that starts from what the usage table records for the current month and day of
    /// each payer. Entries of other periods are harmless: they are dropped at the first call.
    pub fn new(spent: HashMap<(Payer, Period), Micros>) -> Self {
        let accounts = spent
            .into_iter()
            .map(|(key, spent)| (key, Account { spent, ..Account::default() }))
            .collect();
        Self { state: Mutex::new(LedgerState { accounts, today: 0 }) }
    }

    /// Every update under the lock is plain saturating arithmetic on a map, so a thread that
    /// panicked while holding it cannot have left a half-done change: the state is still usable.
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`BudgetLedger::reserve`] for a call made at `now_unix`.
    pub fn reserve_at(
        &self,
        id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
        now_unix: u64,
    ) -> Result<Reservation, Exhausted> {
        let also = || Ok::<(), std::convert::Infallible>(());
        match self.reserve_with(id, payers, amount, now_unix, also) {
            Ok((reservation, ())) => Ok(reservation),
            Err(ReserveOr::Exhausted(exhausted)) => Err(exhausted),
        }
    }

    /// Reserves as [`InProcessLedger::reserve_at`] does, and runs `also` once every budget is
    /// known to have room, under the ledger's lock: the reservation is made only if `also`
    /// succeeds, so that the two are one all-or-nothing step (admission runs the rate limits
    /// there). `also` must not lock the ledger.
    pub(crate) fn reserve_with<T, E>(
        &self,
        id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
        now_unix: u64,
        also: impl FnOnce() -> Result<T, E>,
    ) -> Result<(Reservation, T), ReserveOr<E>> {
        let holds = holds_of(payers, now_unix);
        let mut state = self.lock();
        state.sweep(now_unix);
        for hold in &holds {
            let Some(budget) = hold.budget else { continue };
            let (spent, reserved) = state
                .accounts
                .get(&(hold.payer.clone(), hold.period))
                .map_or((0, 0), |account| (account.spent, account.reserved));
            let committed = spent.saturating_add(reserved).saturating_add(amount);
            if spent >= budget || committed > budget {
                return Err(ReserveOr::Exhausted(Exhausted {
                    payer: hold.payer.clone(),
                    period: hold.period,
                    budget,
                    spent,
                    reserved,
                }));
            }
        }
        let also = also().map_err(ReserveOr::Other)?;
        for hold in &holds {
            let account = state.accounts.entry((hold.payer.clone(), hold.period)).or_default();
            account.reserved = account.reserved.saturating_add(amount);
            account.open += 1;
        }
        drop(state);
        let reservation =
            Reservation { id: id.to_owned(), holds, amount, held: true, generation: 0 };
        Ok((reservation, also))
    }

    /// [`BudgetLedger::settle`], which in process cannot fail. A reservation is settled or
    /// released once (nothing in process retries).
    pub fn settle_now(&self, reservation: &Reservation, actual: Micros) -> Vec<Crossing> {
        let amount = if reservation.held { reservation.amount } else { 0 };
        let mut state = self.lock();
        if !reservation.held {
            // Nothing was held: count the open entry `finish` closes.
            for hold in &reservation.holds {
                state.accounts.entry((hold.payer.clone(), hold.period)).or_default().open += 1;
            }
        }
        state.finish(&reservation.holds, amount, Some(actual))
    }

    /// [`BudgetLedger::release`], which in process cannot fail.
    pub fn release_now(&self, reservation: &Reservation) {
        if reservation.held {
            self.lock().finish(&reservation.holds, reservation.amount, None);
        }
    }

    /// What a payer has spent (settled) in a period, as far as this ledger knows: what it was
    /// started with plus what was settled since. Past periods read 0 once dropped.
    pub fn spent(&self, payer: &Payer, period: Period) -> Micros {
        self.lock().accounts.get(&(payer.clone(), period)).map_or(0, |account| account.spent)
    }

    /// What calls in flight have reserved against a payer in a period.
    pub fn reserved(&self, payer: &Payer, period: Period) -> Micros {
        self.lock().accounts.get(&(payer.clone(), period)).map_or(0, |account| account.reserved)
    }
}

#[async_trait]
impl BudgetLedger for InProcessLedger {
    async fn reserve(
        &self,
        id: &str,
        payers: &[(Payer, BudgetRule)],
        amount: Micros,
    ) -> Result<Reservation, ReserveError> {
        self.reserve_at(id, payers, amount, crate::budget::unix_now())
            .map_err(|exhausted| ReserveError::Exhausted(Box::new(exhausted)))
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual: Micros,
    ) -> Result<Vec<Crossing>, Unavailable> {
        Ok(self.settle_now(reservation, actual))
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        self.release_now(reservation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::PeriodKind;

    use std::sync::{Arc, Barrier};

    /// A reservation that settles itself, or releases itself when dropped: the shape the tests
    /// below were written for.
    #[derive(Debug)]
    struct Held<'a> {
        ledger: &'a InProcessLedger,
        reservation: Option<Reservation>,
    }

    impl Held<'_> {
        fn settle(mut self, actual: Micros) -> Vec<Crossing> {
            let reservation = self.reservation.take().unwrap();
            self.ledger.settle_now(&reservation, actual)
        }
    }

    impl Drop for Held<'_> {
        fn drop(&mut self) {
            if let Some(reservation) = self.reservation.take() {
                self.ledger.release_now(&reservation);
            }
        }
    }

    impl InProcessLedger {
        fn hold(
            &self,
            payers: &[(Payer, BudgetRule)],
            amount: Micros,
            now_unix: u64,
        ) -> Result<Held<'_>, Exhausted> {
            let reservation = self.reserve_at("request", payers, amount, now_unix)?;
            Ok(Held { ledger: self, reservation: Some(reservation) })
        }
    }

    /// 2026-05-14T12:00:00Z.
    const NOW: u64 = 1_778_760_000;

    fn site() -> Payer {
        Payer::Site("site_1".to_owned())
    }

    fn key() -> Payer {
        Payer::Key("key_1".to_owned())
    }

    fn monthly(budget: Micros) -> BudgetRule {
        BudgetRule { monthly: Some(budget), daily: None }
    }

    fn month() -> Period {
        Period::month_of(NOW)
    }

    fn ledger() -> Arc<InProcessLedger> {
        Arc::new(InProcessLedger::new(HashMap::new()))
    }

    // The ledger.

    #[tokio::test]
    async fn a_settle_of_a_call_admitted_without_a_reservation_still_counts_its_cost() {
        let ledger = InProcessLedger::default();
        let unheld = Reservation::unheld("r", &[(site(), monthly(1_000))], NOW, 0);
        let shared: &dyn BudgetLedger = &ledger;
        assert_eq!(shared.settle(&unheld, 300).await.unwrap(), vec![]);
        assert_eq!(ledger.spent(&site(), month()), 300);
        assert_eq!(ledger.reserved(&site(), month()), 0);
    }

    #[test]
    fn two_hundred_concurrent_calls_against_a_budget_for_fifty_serve_exactly_fifty() {
        const COST: Micros = 12_345;
        let ledger = ledger();
        let payers = [(site(), monthly(50 * COST))];
        let barrier = Barrier::new(200);
        let served = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..200)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let reservation = ledger.hold(&payers, COST, NOW).ok()?;
                        assert!(ledger.spent(&site(), month()) <= 50 * COST);
                        reservation.settle(COST);
                        Some(())
                    })
                })
                .collect();
            threads.into_iter().filter_map(|thread| thread.join().unwrap()).count()
        });
        assert_eq!(served, 50);
        assert_eq!(ledger.spent(&site(), month()), 50 * COST);
        assert_eq!(ledger.reserved(&site(), month()), 0);

        let refused = ledger.hold(&payers, COST, NOW).unwrap_err();
        assert_eq!(refused.payer, site());
        assert_eq!(refused.period_kind(), PeriodKind::Monthly);
        assert_eq!(refused.period_kind().as_str(), "monthly");
        assert_eq!(refused.spent, 50 * COST);
    }

    #[test]
    fn settling_for_less_than_reserved_releases_the_rest() {
        let ledger = ledger();
        let payers = [(site(), monthly(1_000))];
        let first = ledger.hold(&payers, 600, NOW).unwrap();
        assert_eq!(ledger.reserved(&site(), month()), 600);
        assert!(ledger.hold(&payers, 600, NOW).is_err());

        assert!(first.settle(100).is_empty());
        assert_eq!(ledger.spent(&site(), month()), 100);
        assert_eq!(ledger.reserved(&site(), month()), 0);
        let second = ledger.hold(&payers, 600, NOW).unwrap();
        assert_eq!(ledger.reserved(&site(), month()), 600);
        drop(second);
    }

    #[test]
    fn dropping_an_unsettled_reservation_releases_it_without_charging() {
        let ledger = ledger();
        let payers = [(site(), monthly(1_000))];
        let reservation = ledger.hold(&payers, 1_000, NOW).unwrap();
        assert!(ledger.hold(&payers, 1, NOW).is_err());
        drop(reservation);
        assert_eq!(ledger.reserved(&site(), month()), 0);
        assert_eq!(ledger.spent(&site(), month()), 0);
        assert!(ledger.hold(&payers, 1_000, NOW).is_ok());
    }

    #[test]
    fn settling_more_than_reserved_records_what_was_actually_spent() {
        let ledger = ledger();
        let reservation = ledger.hold(&[(site(), monthly(1_000))], 100, NOW).unwrap();
        reservation.settle(1_500);
        assert_eq!(ledger.spent(&site(), month()), 1_500);
        assert_eq!(ledger.reserved(&site(), month()), 0);
    }

    #[test]
    fn a_reservation_is_all_or_nothing_across_payers() {
        let ledger = Arc::new(InProcessLedger::new(HashMap::from([((site(), month()), 1_000)])));
        let held = ledger.hold(&[(key(), monthly(10_000))], 300, NOW).unwrap();

        let refused = ledger
            .hold(&[(key(), monthly(10_000)), (site(), monthly(1_000))], 200, NOW)
            .unwrap_err();
        assert_eq!(refused.payer, site());
        assert_eq!(ledger.reserved(&key(), month()), 300);
        assert_eq!(ledger.reserved(&site(), month()), 0);
        drop(held);
    }

    #[test]
    fn a_payer_listed_twice_is_held_once_under_the_tighter_budget() {
        let ledger = ledger();
        let payers = [(site(), monthly(10_000)), (site(), monthly(500))];
        assert_eq!(ledger.hold(&payers, 600, NOW).unwrap_err().budget, 500);
        let reservation = ledger.hold(&payers, 400, NOW).unwrap();
        assert_eq!(ledger.reserved(&site(), month()), 400);
        reservation.settle(400);
        assert_eq!(ledger.spent(&site(), month()), 400);
    }

    #[test]
    fn a_daily_budget_blocks_while_the_month_has_room_and_admits_again_the_next_day() {
        let ledger = ledger();
        let payers = [(key(), BudgetRule { monthly: Some(10_000), daily: Some(1_000) })];
        ledger.hold(&payers, 1_000, NOW).unwrap().settle(1_000);

        let refused = ledger.hold(&payers, 1, NOW).unwrap_err();
        assert_eq!(refused.period, Period::day_of(NOW));
        assert_eq!(refused.period_kind(), PeriodKind::Daily);

        let tomorrow = NOW + SECONDS_PER_DAY;
        ledger.hold(&payers, 1_000, tomorrow).unwrap().settle(1_000);
        assert_eq!(ledger.spent(&key(), Period::month_of(tomorrow)), 2_000);
        assert_eq!(ledger.spent(&key(), Period::day_of(tomorrow)), 1_000);
    }

    #[test]
    fn a_new_month_starts_with_nothing_spent() {
        let ledger = ledger();
        let payers = [(site(), monthly(1_000))];
        let last_second = 1_798_761_599; // 2026-12-31T23:59:59Z
        ledger.hold(&payers, 1_000, last_second).unwrap().settle(1_000);
        assert!(ledger.hold(&payers, 1, last_second).is_err());
        assert!(ledger.hold(&payers, 1_000, last_second + 1).is_ok());
    }

    #[test]
    fn spend_is_tracked_for_payers_without_a_budget() {
        let ledger = ledger();
        ledger.hold(&[(key(), BudgetRule::default())], u64::MAX, NOW).unwrap().settle(700);
        assert_eq!(ledger.spent(&key(), month()), 700);
        assert_eq!(ledger.spent(&key(), Period::day_of(NOW)), 700);
        // A budget set later applies to what was already spent.
        assert!(ledger.hold(&[(key(), monthly(1_000))], 400, NOW).is_err());
    }

    #[test]
    fn a_used_up_budget_refuses_even_a_free_call() {
        let ledger = Arc::new(InProcessLedger::new(HashMap::from([((site(), month()), 1_000)])));
        assert!(ledger.hold(&[(site(), monthly(1_000))], 0, NOW).is_err());
        assert!(ledger.hold(&[(site(), monthly(1_001))], 0, NOW).is_ok());
        assert!(ledger.hold(&[(site(), monthly(0))], 0, NOW).is_err());
    }

    #[test]
    fn crossing_80_then_100_percent_is_reported_once_each() {
        let ledger = ledger();
        let payers = [(site(), monthly(1_000))];
        let settle = |actual| ledger.hold(&payers, 100, NOW).unwrap().settle(actual);

        assert_eq!(settle(790), vec![]);
        let crossing =
            Crossing { payer: site(), period: month(), percent: 80, spent: 800, budget: 1_000 };
        assert_eq!(settle(10), vec![crossing]);
        assert_eq!(settle(100), vec![]);
        let crossing =
            Crossing { payer: site(), period: month(), percent: 100, spent: 1_000, budget: 1_000 };
        assert_eq!(settle(100), vec![crossing]);
        // A budget raised later in the period does not report its thresholds again: each is
        // reported once per payer and period.
        let raised = ledger.hold(&[(site(), monthly(2_000))], 700, NOW).unwrap().settle(700);
        assert_eq!(raised, vec![]);
        assert_eq!(ledger.spent(&site(), month()), 1_700);
    }

    #[test]
    fn a_settlement_jumping_from_50_to_100_percent_reports_both_thresholds() {
        let ledger = Arc::new(InProcessLedger::new(HashMap::from([((site(), month()), 500)])));
        let crossings = ledger.hold(&[(site(), monthly(1_000))], 500, NOW).unwrap().settle(500);
        let percents: Vec<u8> = crossings.iter().map(|c| c.percent).collect();
        assert_eq!(percents, [80, 100]);
        assert!(crossings.iter().all(|c| c.spent == 1_000 && c.budget == 1_000));
    }

    #[test]
    fn spend_loaded_at_start_up_above_a_threshold_is_not_reported_again() {
        let ledger = Arc::new(InProcessLedger::new(HashMap::from([((site(), month()), 850)])));
        let crossings = ledger.hold(&[(site(), monthly(1_000))], 100, NOW).unwrap().settle(100);
        assert_eq!(crossings, vec![]);
    }

    #[test]
    fn crossings_are_reported_for_each_budget_that_crosses() {
        let ledger = ledger();
        let payers = [
            (key(), BudgetRule { monthly: Some(10_000), daily: Some(1_000) }),
            (site(), monthly(1_250)),
        ];
        let crossings = ledger.hold(&payers, 1_000, NOW).unwrap().settle(1_000);
        let seen: Vec<(Payer, PeriodKind, u8)> =
            crossings.iter().map(|c| (c.payer.clone(), c.period.kind(), c.percent)).collect();
        assert_eq!(
            seen,
            [
                (key(), PeriodKind::Daily, 80),
                (key(), PeriodKind::Daily, 100),
                (site(), PeriodKind::Monthly, 80)
            ]
        );
    }

    #[test]
    fn the_refusal_message_names_the_payer_kind_the_period_and_the_budget() {
        let used_up = Exhausted {
            payer: site(),
            period: month(),
            budget: 5_000_000,
            spent: 5_000_000,
            reserved: 0,
        };
        assert_eq!(used_up.to_string(), "the site's monthly budget of $5.00 is used up");

        let little_left = Exhausted {
            payer: key(),
            period: Period::day_of(NOW),
            budget: 250_000,
            spent: 100_000,
            reserved: 120_000,
        };
        assert_eq!(
            little_left.to_string(),
            "the key's daily budget of $0.25 has too little left for this request"
        );
    }

    #[test]
    fn entries_for_past_periods_are_dropped() {
        let last_month = Period::Month { year: 2026, month: 4 };
        let yesterday = Period::day_of(NOW - SECONDS_PER_DAY);
        let ledger = Arc::new(InProcessLedger::new(HashMap::from([
            ((site(), last_month), 9_000),
            ((site(), yesterday), 500),
            ((site(), month()), 700),
        ])));
        ledger.hold(&[(site(), monthly(10_000))], 100, NOW).unwrap().settle(100);

        assert_eq!(ledger.spent(&site(), last_month), 0);
        assert_eq!(ledger.spent(&site(), yesterday), 0);
        assert_eq!(ledger.spent(&site(), month()), 800);
        let mut kept: Vec<Period> = ledger.lock().accounts.keys().map(|(_, p)| *p).collect();
        kept.sort_by_key(Period::starts_at);
        assert_eq!(kept, [month(), Period::day_of(NOW)]);
    }

    #[test]
    fn a_call_open_across_midnight_settles_into_its_own_day_which_is_dropped_afterwards() {
        let ledger = ledger();
        let payers = [(site(), BudgetRule { monthly: None, daily: Some(1_000) })];
        let before_midnight = Period::day_of(NOW).ends_at() - 1;
        let late_call = ledger.hold(&payers, 400, before_midnight).unwrap();
        ledger.hold(&payers, 400, before_midnight + 1).unwrap().settle(400);

        // The first day's account survives the sweep while its call is open.
        assert_eq!(ledger.reserved(&site(), Period::day_of(before_midnight)), 400);
        let crossings = late_call.settle(900);
        assert_eq!(crossings.iter().map(|c| c.percent).collect::<Vec<_>>(), [80]);
        assert_eq!(ledger.spent(&site(), Period::day_of(before_midnight)), 0);
        assert_eq!(ledger.spent(&site(), Period::day_of(before_midnight + 1)), 400);
        assert_eq!(ledger.spent(&site(), month()), 1_300);
    }

    #[test]
    fn the_ledger_keeps_working_after_a_thread_panicked_while_holding_it() {
        let ledger = ledger();
        let holder = Arc::clone(&ledger);
        let panicked = std::thread::spawn(move || {
            let _state = holder.lock();
            panic!("panicking while the ledger is locked");
        })
        .join();
        assert!(panicked.is_err());
        assert!(ledger.state.is_poisoned());
        ledger.hold(&[(site(), monthly(1_000))], 100, NOW).unwrap().settle(100);
        assert_eq!(ledger.spent(&site(), month()), 100);
    }
}
