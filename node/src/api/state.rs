//! What every request handler shares: the node handle, the home space, the token counter,
//! the agent's budgets, its subscriptions and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use membrane_crdt::EventKind;
use membrane_immune::audit::AuditEvent;
use membrane_immune::{Crossed, CrossingDecision};
use membrane_protocol::cost::{BudgetState, TokenCounter};
use membrane_protocol::{Key, Pattern, PublicKey, Space};

use super::error::ApiError;
use super::metrics::{BudgetLabels, Metrics, SpaceLabels};
use super::types::{BudgetResponse, EventView, SpaceBudgetView};
use super::verbs::{MAX_SUBSCRIPTIONS, parse_space};
use crate::budget::{Charged, Ledger, Scope};
use crate::config::BudgetConfig;
use crate::node::NodeHandle;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One answer about to cross into the agent's context, with every entry's decision.
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    /// `query`, `search` or `thread`.
    pub(crate) verb: &'static str,
    /// The space asked.
    pub(crate) space: &'a Space,
    /// The pattern, text or id asked for.
    pub(crate) request: &'a str,
    /// Tokens of what crosses.
    pub(crate) tokens: u64,
    /// Each entry's decision: visible ones cross, hidden and denied ones say why not.
    pub(crate) decisions: Vec<Crossed>,
}

/// The API's shared state.
pub struct Ctx {
    pub(crate) node: NodeHandle,
    pub(crate) home: Space,
    pub(crate) tokens: Arc<dyn TokenCounter>,
    pub(crate) token: String,
    pub(crate) metrics: Metrics,
    subscriptions: Mutex<BTreeMap<String, Vec<Pattern>>>,
    next_subscription: AtomicU64,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("node", self.node.id())
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ctx {
    /// State for an API over `node`. `home` is the space verbs use when none is named;
    /// `token` the bearer token every request must carry.
    pub fn new(
        node: NodeHandle,
        home: Space,
        tokens: Arc<dyn TokenCounter>,
        token: String,
        budget: Option<BudgetConfig>,
    ) -> Self {
        // The budgets live with the node, whose event loop charges direct messages to them.
        node.meter()
            .replace(Ledger::new(budget, &BTreeMap::new(), now_ms()));
        let metrics = Metrics::new(&mut node.metrics().lock());
        let ctx = Self {
            node,
            home,
            tokens,
            token,
            metrics,
            subscriptions: Mutex::new(BTreeMap::new()),
            next_subscription: AtomicU64::new(1),
        };
        ctx.export_budgets();
        ctx
    }

    /// Gives spaces token budgets of their own, on top of the agent's (each space must be
    /// one the node joined, as `NodeConfig::validate` checks).
    pub fn with_space_budgets(self, budgets: &BTreeMap<Space, BudgetConfig>) -> Self {
        let agent = {
            let mut ledger = self.node.meter().lock();
            ledger.agent(now_ms()).map(|s| BudgetConfig {
                tokens: s.state.limit,
                window_secs: s.state.window_ms / 1000,
                action: s.state.action,
            })
        };
        self.node
            .meter()
            .replace(Ledger::new(agent, budgets, now_ms()));
        self.export_budgets();
        self
    }

    /// Sets the budget gauges from the ledger.
    fn export_budgets(&self) {
        let mut ledger = self.node.meter().lock();
        let now = now_ms();
        let standings = ledger.agent(now).into_iter().chain(ledger.spaces(now));
        for s in standings {
            self.export_state(&s.scope, &s.state);
        }
    }

    fn export_state(&self, scope: &Scope, state: &BudgetState) {
        let labels = BudgetLabels {
            budget: scope.label(),
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics
            .budget_used
            .get_or_create(&labels)
            .set(gauge(state.used));
        self.metrics
            .budget_limit
            .get_or_create(&labels)
            .set(gauge(state.limit));
    }

    /// The space a request names, or the home space.
    pub(crate) fn space(&self, raw: Option<&str>) -> Result<Space, ApiError> {
        raw.map_or_else(|| Ok(self.home.clone()), parse_space)
    }

    /// Lets an answer cross into the agent's context: checks every budget it draws on
    /// (the agent's, then its space's) before, charges them after, and audits the answer's
    /// crossing decisions and each charge. A halt budget that cannot take it refuses with
    /// 429 and that budget's state (the refusal is audited too, every entry denied); a
    /// `warn` budget it takes over its limit lets it through and logs an event for the
    /// agent, once per window.
    pub(crate) async fn cross(&self, answer: Answer<'_>) -> Result<(), ApiError> {
        let now = now_ms();
        let space = answer.space;
        let checked = self.node.meter().lock().check(space, answer.tokens, now);
        let mut decisions = answer.decisions;
        if let Err(refusal) = checked {
            self.metrics.budget_refusals.inc();
            let why = refusal.to_string();
            for d in &mut decisions {
                if d.decision == CrossingDecision::Visible {
                    d.decision = CrossingDecision::Denied;
                    d.reason = Some(why.clone());
                }
            }
            let event = AuditEvent::answer(
                answer.verb,
                space.as_str(),
                answer.request,
                answer.tokens,
                decisions,
            );
            self.node.record(vec![event], Vec::new()).await?;
            return Err(ApiError::budget(&refusal));
        }
        let charged = self.node.meter().lock().charge(space, answer.tokens, now);
        self.metrics.tokens_charged.inc_by(answer.tokens);
        self.metrics
            .space_tokens
            .get_or_create(&SpaceLabels {
                space: space.to_string(),
            })
            .inc_by(answer.tokens);
        let mut audit = vec![AuditEvent::answer(
            answer.verb,
            space.as_str(),
            answer.request,
            answer.tokens,
            decisions,
        )];
        let mut events = Vec::new();
        for c in &charged {
            self.export_state(&c.scope, &c.state);
            audit.push(charge_record(c));
            if c.warn {
                events.push(self.warning(space, c));
            }
        }
        self.node.record(audit, events).await?;
        Ok(())
    }

    /// The event (and log line and metric) for a `warn` budget just spent.
    fn warning(&self, space: &Space, c: &Charged) -> EventKind {
        self.metrics
            .budget_warnings
            .get_or_create(&BudgetLabels {
                budget: c.scope.label(),
            })
            .inc();
        let scope = match &c.scope {
            Scope::Agent => "agent",
            Scope::Space(_) => "space",
        };
        tracing::warn!(
            budget = %c.scope.label(),
            used = c.state.used,
            limit = c.state.limit,
            "a token budget is spent (warn: answers still cross)"
        );
        EventKind::Budget {
            space: space.clone(),
            scope: scope.to_owned(),
            used: c.state.used,
            limit: c.state.limit,
        }
    }

    /// The budgets as the `budget` verb shows them.
    pub(crate) fn budget_state(&self) -> BudgetResponse {
        let mut ledger = self.node.meter().lock();
        let now = now_ms();
        let total = ledger.total();
        let mut response = match ledger.agent(now) {
            Some(agent) => BudgetResponse::from_state(&agent.state, total),
            None => BudgetResponse {
                limit: None,
                used: total,
                remaining: None,
                window_ms: 0,
                resets_at_ms: None,
                action: None,
                total,
                space: None,
                spaces: Vec::new(),
            },
        };
        response.spaces = ledger
            .spaces(now)
            .into_iter()
            .filter_map(|s| match s.scope {
                Scope::Space(space) => Some(SpaceBudgetView::new(&space, &s.state, s.total)),
                Scope::Agent => None,
            })
            .collect();
        response
    }

    /// Agents' names by key, from their capability ads.
    pub(crate) async fn names(&self) -> BTreeMap<PublicKey, String> {
        let mut names: BTreeMap<PublicKey, String> = self
            .node
            .peer_infos()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.name.map(|n| (p.peer, n)))
            .collect();
        if let Ok(status) = self.node.status().await {
            names.insert(status.peer, status.name);
        }
        names
    }

    /// Stores a subscription and returns its id.
    pub(crate) fn subscribe(&self, patterns: Vec<Pattern>) -> Result<String, ApiError> {
        let mut subs = lock(&self.subscriptions);
        if subs.len() >= MAX_SUBSCRIPTIONS {
            // Forget the oldest: subscriptions are cheap to make again.
            if let Some(oldest) = subs.keys().next().cloned() {
                subs.remove(&oldest);
            }
        }
        let id = format!(
            "s{:06}",
            self.next_subscription.fetch_add(1, Ordering::Relaxed)
        );
        subs.insert(id.clone(), patterns);
        Ok(id)
    }

    /// A subscription's patterns.
    pub(crate) fn subscription(&self, id: &str) -> Option<Vec<Pattern>> {
        lock(&self.subscriptions).get(id).cloned()
    }
}

/// The audit record of one budget charge.
fn charge_record(c: &Charged) -> AuditEvent {
    AuditEvent::BudgetCharge {
        tokens: c.tokens,
        used: c.state.used,
        limit: c.state.limit,
        over: c.over,
        space: match &c.scope {
            Scope::Agent => None,
            Scope::Space(space) => Some(space.to_string()),
        },
    }
}

/// Whether an event passes a filter: no patterns pass everything; escalations, budget
/// warnings, intent quorums and role hints always pass (they ask for the agent's
/// attention); with patterns, an event with a key passes if a pattern matches it, and of
/// the keyless ones only broadcasts, threat signals, direct messages and fan-outs pass
/// (they concern this agent; merges and trust changes are noise to a filtered follower).
pub(crate) fn matches(patterns: &[Pattern], event: &EventView) -> bool {
    if patterns.is_empty()
        || matches!(
            event.kind.as_str(),
            "escalation" | "budget" | "intent" | "role"
        )
    {
        return true;
    }
    match event.key.as_deref().map(str::parse::<Key>) {
        Some(Ok(key)) => patterns.iter().any(|p| p.matches(&key)),
        _ => matches!(
            event.kind.as_str(),
            "broadcast" | "threat" | "direct" | "fan_out"
        ),
    }
}
