//! What every request handler shares: the node handle, the home space, the token counter,
//! the agent's budget, its subscriptions and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use membrane_protocol::cost::{BudgetAction, TokenCounter};
use membrane_protocol::{Key, Pattern, PublicKey, Space};

use super::error::ApiError;
use super::metrics::Metrics;
use super::types::{BudgetResponse, EventView};
use super::verbs::{MAX_SUBSCRIPTIONS, parse_space};
use crate::config::BudgetConfig;
use crate::node::NodeHandle;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        // The budget lives with the node, whose event loop charges direct messages to it.
        node.meter().configure(budget, now_ms());
        let metrics = Metrics::new(&mut node.metrics().lock());
        Self {
            node,
            home,
            tokens,
            token,
            metrics,
            subscriptions: Mutex::new(BTreeMap::new()),
            next_subscription: AtomicU64::new(1),
        }
    }

    /// The space a request names, or the home space.
    pub(crate) fn space(&self, raw: Option<&str>) -> Result<Space, ApiError> {
        raw.map_or_else(|| Ok(self.home.clone()), parse_space)
    }

    /// Refuses an answer of `cost` tokens if a halt budget cannot take it.
    pub(crate) fn check_budget(&self, cost: u64) -> Result<(), ApiError> {
        self.node
            .meter()
            .check(cost, now_ms())
            .map_err(|(exceeded, total)| {
                self.metrics.budget_refusals.inc();
                ApiError::budget(&exceeded, total)
            })
    }

    /// Charges an answer that crossed.
    pub(crate) fn charge(&self, cost: u64) {
        self.metrics.tokens_charged.inc_by(cost);
        if let Some((charge, BudgetAction::Warn)) = self.node.meter().charge(cost, now_ms())
            && charge.over
        {
            tracing::warn!(
                used = charge.used,
                limit = charge.limit,
                "the agent's token budget is spent (warn: answers still pass)"
            );
        }
    }

    /// The budget as the `budget` verb shows it.
    pub(crate) fn budget_state(&self) -> BudgetResponse {
        match self.node.meter().state(now_ms()) {
            (Some(state), total) => BudgetResponse::from_state(&state, total),
            (None, total) => BudgetResponse {
                limit: None,
                used: total,
                remaining: None,
                window_ms: 0,
                resets_at_ms: None,
                action: None,
                total,
            },
        }
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

/// Whether an event passes a filter: no patterns pass everything; with patterns, an event
/// with a key passes if a pattern matches it, and of the keyless ones only broadcasts,
/// threat signals, direct messages and fan-outs pass (they concern this agent; merges and
/// trust changes are noise to a filtered follower).
pub(crate) fn matches(patterns: &[Pattern], event: &EventView) -> bool {
    if patterns.is_empty() {
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
