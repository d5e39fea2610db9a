//! The agent's token budgets: its own, and one per space that has one configured.
//!
//! One [`Meter`] holds them for the node: the API charges the query and search answers
//! that cross into the agent's context to it, and the event loop charges the direct
//! messages it accepts for the agent; both refuse once a halt budget is spent.
//!
//! An answer (a query or a search) crosses into the agent's context only if every budget
//! it draws on lets it: the agent's, then its space's. [`Ledger::check`] runs before the
//! answer leaves and charges nothing; [`Ledger::charge`] runs after and charges every
//! budget it drew on, reporting each charge for the audit log and, for a `warn` budget
//! that the charge took over its limit, once per window, for an event. Time comes in as
//! `now_ms`; nothing here reads a clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use membrane_protocol::Space;
use membrane_protocol::cost::{Budget, BudgetAction, BudgetExceeded, BudgetState};

use crate::config::BudgetConfig;

/// Whose budget.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The agent's own, over every space.
    Agent,
    /// One space's.
    Space(Space),
}

impl Scope {
    /// `agent`, or the space's name: the metrics' label.
    pub fn label(&self) -> String {
        match self {
            Self::Agent => "agent".to_owned(),
            Self::Space(space) => format!("space:{space}"),
        }
    }
}

/// A halt budget refused an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Whose budget refused.
    pub scope: Scope,
    /// How, with its state.
    pub exceeded: BudgetExceeded,
    /// Tokens charged to that budget since start, every window.
    pub total: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Scope::Agent => write!(f, "the agent's {}", self.exceeded),
            Scope::Space(space) => write!(f, "space {space}'s {}", self.exceeded),
        }
    }
}

/// One budget charged for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// Whose budget.
    pub scope: Scope,
    /// Tokens charged.
    pub tokens: u64,
    /// Its state after the charge.
    pub state: BudgetState,
    /// Whether it is over its limit now.
    pub over: bool,
    /// This charge took a `warn` budget over its limit for the first time in its window:
    /// tell the agent.
    pub warn: bool,
}

#[derive(Debug)]
struct Account {
    budget: Budget,
    total: u64,
    /// The window (its start) in which a warning was last given.
    warned_window: Option<u64>,
}

impl Account {
    fn new(config: &BudgetConfig, now_ms: u64) -> Self {
        Self {
            budget: Budget::new(
                config.tokens,
                config.window_secs.saturating_mul(1000),
                config.action,
                now_ms,
            ),
            total: 0,
            warned_window: None,
        }
    }

    fn charge(&mut self, scope: Scope, tokens: u64, now_ms: u64) -> Charged {
        let charge = self.budget.charge(tokens, now_ms);
        self.total = self.total.saturating_add(tokens);
        let window = self.budget.window_start_ms;
        let warn = charge.over
            && self.budget.action == BudgetAction::Warn
            && self.warned_window != Some(window);
        if warn {
            self.warned_window = Some(window);
        }
        Charged {
            scope,
            tokens,
            state: self.budget.state(),
            over: charge.over,
            warn,
        }
    }
}

/// A budget's state as the `budget` verb shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Whose.
    pub scope: Scope,
    /// Its window now.
    pub state: BudgetState,
    /// Tokens charged to it since start.
    pub total: u64,
}

/// Every budget of one agent.
#[derive(Debug, Default)]
pub struct Ledger {
    agent: Option<Account>,
    spaces: BTreeMap<Space, Account>,
    total: u64,
}

impl Ledger {
    /// The agent's budget (if any) and the spaces' (each its own window), from `now_ms`.
    pub fn new(
        agent: Option<BudgetConfig>,
        spaces: &BTreeMap<Space, BudgetConfig>,
        now_ms: u64,
    ) -> Self {
        Self {
            agent: agent.map(|c| Account::new(&c, now_ms)),
            spaces: spaces
                .iter()
                .map(|(s, c)| (s.clone(), Account::new(c, now_ms)))
                .collect(),
            total: 0,
        }
    }

    /// Whether an answer of `cost` tokens from `space` may cross: the agent's budget,
    /// then the space's. Charges nothing.
    pub fn check(&mut self, space: &Space, cost: u64, now_ms: u64) -> Result<(), Refusal> {
        if let Some(account) = &mut self.agent
            && let Err(exceeded) = account.budget.check(cost, now_ms)
        {
            return Err(Refusal {
                scope: Scope::Agent,
                exceeded,
                total: account.total,
            });
        }
        if let Some(account) = self.spaces.get_mut(space)
            && let Err(exceeded) = account.budget.check(cost, now_ms)
        {
            return Err(Refusal {
                scope: Scope::Space(space.clone()),
                exceeded,
                total: account.total,
            });
        }
        Ok(())
    }

    /// Charges an answer of `cost` tokens from `space` that crossed, to every budget it
    /// draws on; what each charge did.
    pub fn charge(&mut self, space: &Space, cost: u64, now_ms: u64) -> Vec<Charged> {
        self.total = self.total.saturating_add(cost);
        let mut out = Vec::new();
        if let Some(account) = &mut self.agent {
            out.push(account.charge(Scope::Agent, cost, now_ms));
        }
        if let Some(account) = self.spaces.get_mut(space) {
            out.push(account.charge(Scope::Space(space.clone()), cost, now_ms));
        }
        out
    }

    /// Tokens that crossed since start, every space, budget or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The agent's budget now, if it has one.
    pub fn agent(&mut self, now_ms: u64) -> Option<Standing> {
        self.agent.as_mut().map(|a| {
            a.budget.roll(now_ms);
            Standing {
                scope: Scope::Agent,
                state: a.budget.state(),
                total: a.total,
            }
        })
    }

    /// Every space's budget now, in space order.
    pub fn spaces(&mut self, now_ms: u64) -> Vec<Standing> {
        self.spaces
            .iter_mut()
            .map(|(space, a)| {
                a.budget.roll(now_ms);
                Standing {
                    scope: Scope::Space(space.clone()),
                    state: a.budget.state(),
                    total: a.total,
                }
            })
            .collect()
    }
}

/// The node's budgets, shared by the API and the event loop (a short lock around pure
/// accounting; nothing awaits while holding it).
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<Ledger>>);

impl Meter {
    /// The ledger, locked.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves plain numbers behind; keep counting.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the budgets (the total charged so far is kept).
    pub fn replace(&self, mut ledger: Ledger) {
        let mut held = self.lock();
        ledger.total = held.total;
        *held = ledger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: u64, action: BudgetAction) -> BudgetConfig {
        BudgetConfig {
            tokens,
            window_secs: 10,
            action,
        }
    }

    fn space(name: &str) -> Space {
        name.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_halt_space_budget_passes_exactly_its_limit_then_refuses() {
        let (a, b) = (space("alpha"), space("beta"));
        let spaces = BTreeMap::from([(a.clone(), config(100, BudgetAction::Halt))]);
        let mut ledger = Ledger::new(None, &spaces, 0);
        assert_eq!(ledger.check(&a, 60, 1), Ok(()));
        ledger.charge(&a, 60, 1);
        // 40 brings it to exactly the limit: it passes.
        assert_eq!(ledger.check(&a, 40, 2), Ok(()));
        let charged = ledger.charge(&a, 40, 2);
        assert_eq!(charged.len(), 1);
        assert_eq!((charged[0].state.used, charged[0].over), (100, false));
        // At the limit, one more token is refused, with the state at the limit.
        let refusal = ledger.check(&a, 1, 3).unwrap_err();
        assert_eq!(refusal.scope, Scope::Space(a.clone()));
        assert_eq!(refusal.exceeded.state().used, 100);
        assert_eq!(refusal.exceeded.state().remaining, 0);
        assert_eq!(refusal.total, 100);
        assert!(
            refusal.to_string().starts_with(
                "space alpha's token budget exhausted: answer needs 1 tokens but 0 of 100 remain"
            ),
            "{refusal}"
        );
        // Another space has no budget: it is not limited, and charges nothing of alpha's.
        assert_eq!(ledger.check(&b, 1_000, 3), Ok(()));
        assert!(ledger.charge(&b, 1_000, 3).is_empty());
        assert_eq!(ledger.total(), 1_100);
        // The next window starts afresh.
        assert_eq!(ledger.check(&a, 100, 10_000), Ok(()));
    }

    #[test]
    fn the_agent_budget_is_checked_before_the_space_budget() {
        let a = space("alpha");
        let spaces = BTreeMap::from([(a.clone(), config(50, BudgetAction::Halt))]);
        let mut ledger = Ledger::new(Some(config(30, BudgetAction::Halt)), &spaces, 0);
        let refusal = ledger.check(&a, 40, 0).unwrap_err();
        assert_eq!(refusal.scope, Scope::Agent);
        assert!(
            refusal
                .to_string()
                .starts_with("the agent's token budget too small")
        );
        let charged = ledger.charge(&a, 20, 0);
        assert_eq!(
            charged.iter().map(|c| c.scope.clone()).collect::<Vec<_>>(),
            [Scope::Agent, Scope::Space(a.clone())]
        );
        assert_eq!(ledger.agent(0).map(|s| s.state.used), Some(20));
        assert_eq!(ledger.spaces(0)[0].state.used, 20);
    }

    #[test]
    fn a_warn_budget_lets_everything_through_and_warns_once_a_window() {
        let a = space("alpha");
        let spaces = BTreeMap::from([(a.clone(), config(50, BudgetAction::Warn))]);
        let mut ledger = Ledger::new(None, &spaces, 0);
        let mut warnings = Vec::new();
        for (i, now) in [0, 1, 2, 3, 10_000, 10_001, 10_002].into_iter().enumerate() {
            assert_eq!(ledger.check(&a, 30, now), Ok(()), "never refused");
            let charged = ledger.charge(&a, 30, now);
            if charged[0].warn {
                warnings.push(i);
            }
        }
        // Over at the second charge of each window; told once per window.
        assert_eq!(warnings, [1, 5]);
        assert_eq!(ledger.spaces(10_002)[0].total, 210);
        assert_eq!(Scope::Space(a).label(), "space:alpha");
    }
}
