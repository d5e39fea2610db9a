//! The agent's token budget, as one meter the API and the event loop share: the API charges
//! query and search answers to it, the event loop charges the direct messages it accepts
//! for the agent, and both refuse once a halt budget is spent. The accounting itself is
//! `membrane_protocol::cost::Budget` (pure, time as input); this is only its shared home.

use std::sync::{Arc, Mutex, MutexGuard};

use membrane_protocol::cost::{Budget, BudgetAction, BudgetExceeded, BudgetState, Charge};

use crate::config::BudgetConfig;

#[derive(Debug, Default)]
struct Book {
    budget: Option<Budget>,
    /// Tokens charged since the node started, whatever the window.
    total: u64,
}

/// The agent's budget, shared by the API and the event loop (a short lock around pure
/// accounting; nothing awaits while holding it).
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<Book>>);

impl Meter {
    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves plain numbers behind; keep counting.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or removes) the budget, starting its first window at `now_ms`. The total
    /// charged so far is kept.
    pub fn configure(&self, budget: Option<BudgetConfig>, now_ms: u64) {
        self.book().budget = budget.map(|b| {
            Budget::new(
                b.tokens,
                b.window_secs.saturating_mul(1000),
                b.action,
                now_ms,
            )
        });
    }

    /// Refuses `cost` tokens if a halt budget cannot take them; charges nothing. The error
    /// carries the total charged since start.
    pub fn check(&self, cost: u64, now_ms: u64) -> Result<(), (BudgetExceeded, u64)> {
        let mut book = self.book();
        let total = book.total;
        match &mut book.budget {
            Some(budget) => budget.check(cost, now_ms).map_err(|e| (e, total)),
            None => Ok(()),
        }
    }

    /// Charges `cost` tokens that crossed into the agent's context; with a budget, says
    /// where it stands and what it does once spent.
    pub fn charge(&self, cost: u64, now_ms: u64) -> Option<(Charge, BudgetAction)> {
        let mut book = self.book();
        book.total = book.total.saturating_add(cost);
        book.budget
            .as_mut()
            .map(|b| (b.charge(cost, now_ms), b.action))
    }

    /// The budget's state at `now_ms` (if there is one) and the total since start.
    pub fn state(&self, now_ms: u64) -> (Option<BudgetState>, u64) {
        let mut book = self.book();
        let total = book.total;
        let state = book.budget.as_mut().map(|b| {
            b.roll(now_ms);
            b.state()
        });
        (state, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_halt_budget_refuses_what_it_cannot_take_and_resets_with_its_window() {
        let meter = Meter::default();
        assert!(
            meter.check(1_000_000, 0).is_ok(),
            "no budget: anything passes"
        );
        meter.configure(
            Some(BudgetConfig {
                tokens: 100,
                window_secs: 60,
                action: BudgetAction::Halt,
            }),
            1_000,
        );
        assert!(meter.check(100, 1_000).is_ok());
        meter.charge(70, 1_000);
        let (refused, total) = meter.check(31, 2_000).unwrap_err();
        assert_eq!(refused.cost(), 31);
        assert_eq!(total, 70);
        assert!(meter.check(30, 2_000).is_ok());
        // A new window: the 70 no longer count, the total still does.
        assert!(meter.check(100, 61_000).is_ok());
        let (state, total) = meter.state(61_000);
        assert_eq!(state.map(|s| s.used), Some(0));
        assert_eq!(total, 70);
    }

    #[test]
    fn a_warn_budget_never_refuses_but_reports_going_over() {
        let meter = Meter::default();
        meter.configure(
            Some(BudgetConfig {
                tokens: 10,
                window_secs: 0,
                action: BudgetAction::Warn,
            }),
            0,
        );
        assert!(meter.check(50, 0).is_ok());
        assert!(
            meter
                .charge(50, 0)
                .is_some_and(|(c, action)| c.over && action == BudgetAction::Warn)
        );
    }
}
