//! Circuit breakers on delegation.
//!
//! Consecutive task failures toward an agent, or toward a capability, trip its breaker
//! (closed → open): claims and offers routed there are blocked. Once the cooldown has
//! passed the breaker is half-open and admits exactly one trial: its success closes the
//! breaker, its failure opens it again for another cooldown. A trial that never reports
//! back (a claim that lost to another, a task abandoned) is given up after one cooldown,
//! so a half-open breaker cannot stay shut for good. (Nygard, *Release It!*, "Circuit
//! Breaker".)

use std::collections::BTreeMap;
use std::fmt;

use membrane_protocol::PublicKey;
use serde::{Deserialize, Serialize};

/// Most breakers held. Closed breakers with no failures are not held at all, so this
/// bounds only the agents and capabilities that recently failed.
pub const MAX_BREAKERS: usize = 4_096;

/// Breaker settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failures: u32,
    /// How long an open breaker blocks before it admits a trial (and how long a trial
    /// may take before another one is admitted).
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            cooldown_ms: 60_000,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.failures == 0 {
            return Err("breaker failures must be at least 1".into());
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Delegation flows; `failures` in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Blocked until `until_ms`, then half-open.
    Open {
        /// End of the cooldown.
        until_ms: u64,
    },
    /// One trial may go; `trial_until_ms` is set while one is out (until it reports back
    /// or that instant passes).
    HalfOpen {
        /// End of the trial in flight, if one is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trial_until_ms: Option<u64>,
    },
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { failures } => write!(f, "closed ({failures} failures in a row)"),
            Self::Open { until_ms } => write!(f, "open until {until_ms} ms"),
            Self::HalfOpen {
                trial_until_ms: None,
            } => f.write_str("half-open (one trial may go)"),
            Self::HalfOpen {
                trial_until_ms: Some(t),
            } => write!(f, "half-open with its one trial out until {t} ms"),
        }
    }
}

/// A change of state worth telling the node about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Transition {
    /// The breaker opened (again) until `until_ms`.
    Opened {
        /// End of the cooldown.
        until_ms: u64,
    },
    /// The cooldown passed: one trial may go.
    HalfOpen,
    /// A trial succeeded: the breaker closed.
    Closed,
}

/// One circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    /// The state as stored (an open breaker past its cooldown reports `Open` until the
    /// next [`tick`](Self::tick), [`admit`](Self::admit) or [`record`](Self::record)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Blocked: open and the cooldown has not elapsed.
    pub fn is_blocked(&self, now_ms: u64) -> bool {
        matches!(self.state, BreakerState::Open { until_ms } if now_ms < until_ms)
    }

    /// Whether [`admit`](Self::admit) would let a task through now, without taking the
    /// half-open trial.
    pub fn would_admit(&self, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until_ms } => now_ms >= until_ms,
            BreakerState::HalfOpen { trial_until_ms } => {
                trial_until_ms.is_none_or(|until| now_ms >= until)
            }
        }
    }

    /// Moves an open breaker whose cooldown has passed to half-open; the transition if it
    /// did.
    pub fn tick(&mut self, now_ms: u64) -> Option<Transition> {
        match self.state {
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen {
                    trial_until_ms: None,
                };
                Some(Transition::HalfOpen)
            }
            _ => None,
        }
    }

    /// Lets a task through (`true`) or not. Past the cooldown the breaker goes half-open
    /// and the first call takes the one trial (out for at most one more cooldown); later
    /// calls are refused until the trial reports back or runs out.
    pub fn admit(&mut self, now_ms: u64, config: &BreakerConfig) -> bool {
        if !self.would_admit(now_ms) {
            return false;
        }
        if !matches!(self.state, BreakerState::Closed { .. }) {
            self.state = BreakerState::HalfOpen {
                trial_until_ms: Some(now_ms.saturating_add(config.cooldown_ms)),
            };
        }
        true
    }

    /// Records a task's outcome.
    ///
    /// Closed: a success resets the count, a failure adds to it and opens the breaker at
    /// `config.failures`. Half-open (or open past its cooldown): a success closes it, a
    /// failure reopens it. Open within its cooldown: outcomes of tasks admitted before it
    /// opened change nothing.
    pub fn record(
        &mut self,
        success: bool,
        now_ms: u64,
        config: &BreakerConfig,
    ) -> Option<Transition> {
        self.tick(now_ms);
        let open = |until_ms| {
            (
                BreakerState::Open { until_ms },
                Transition::Opened { until_ms },
            )
        };
        let (next, transition) = match (self.state, success) {
            (BreakerState::Closed { .. }, true) => (BreakerState::Closed { failures: 0 }, None),
            (BreakerState::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= config.failures {
                    let (s, t) = open(now_ms.saturating_add(config.cooldown_ms));
                    (s, Some(t))
                } else {
                    (BreakerState::Closed { failures }, None)
                }
            }
            (BreakerState::HalfOpen { .. }, true) => (
                BreakerState::Closed { failures: 0 },
                Some(Transition::Closed),
            ),
            (BreakerState::HalfOpen { .. }, false) => {
                let (s, t) = open(now_ms.saturating_add(config.cooldown_ms));
                (s, Some(t))
            }
            (open @ BreakerState::Open { .. }, _) => (open, None),
        };
        self.state = next;
        transition
    }

    fn is_neutral(&self) -> bool {
        self.state == BreakerState::Closed { failures: 0 }
    }

    /// Eviction order: closed (fewest failures first), then half-open, then open
    /// (soonest to end first).
    fn eviction_rank(&self) -> (u8, u64) {
        match self.state {
            BreakerState::Closed { failures } => (0, u64::from(failures)),
            BreakerState::HalfOpen { .. } => (1, 0),
            BreakerState::Open { until_ms } => (2, until_ms),
        }
    }
}

/// What a breaker guards.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum BreakerKey {
    /// Tasks delegated to one agent.
    Agent(#[serde(with = "crate::text::peer")] PublicKey),
    /// Tasks needing one capability, whoever takes them.
    Capability(String),
}

impl fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent(peer) => write!(f, "agent {peer}"),
            Self::Capability(c) => write!(f, "capability {c:?}"),
        }
    }
}

/// Why a delegation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the circuit breaker for {key} is {state}: delegation there is blocked after consecutive \
     task failures (it admits one trial once the cooldown has passed)"
)]
pub struct Blocked {
    /// The breaker that refused.
    pub key: BreakerKey,
    /// Its state.
    pub state: BreakerState,
}

/// The breakers of one node, keyed by agent and by capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakers {
    map: BTreeMap<BreakerKey, Breaker>,
    cap: usize,
}

impl Default for Breakers {
    fn default() -> Self {
        Self::with_cap(MAX_BREAKERS)
    }
}

impl Breakers {
    /// Empty, holding at most `cap` breakers.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            cap: cap.max(1),
        }
    }

    /// The breaker for `key` (closed with no failures if none is held).
    pub fn get(&self, key: &BreakerKey) -> Breaker {
        self.map.get(key).copied().unwrap_or_default()
    }

    /// Admits a task delegated to `agent` for `capability` if both breakers admit it;
    /// a half-open trial is taken only when both do.
    pub fn admit(
        &mut self,
        agent: PublicKey,
        capability: &str,
        now_ms: u64,
        config: &BreakerConfig,
    ) -> Result<(), Blocked> {
        let keys = [
            BreakerKey::Agent(agent),
            BreakerKey::Capability(capability.to_owned()),
        ];
        for key in &keys {
            let b = self.get(key);
            if !b.would_admit(now_ms) {
                return Err(Blocked {
                    key: key.clone(),
                    state: b.state(),
                });
            }
        }
        for key in keys {
            if let Some(b) = self.map.get_mut(&key) {
                b.admit(now_ms, config);
            }
        }
        Ok(())
    }

    /// Whether a delegation to `agent` for `capability` is blocked (either breaker open
    /// within its cooldown).
    pub fn is_blocked(&self, agent: PublicKey, capability: &str, now_ms: u64) -> bool {
        self.get(&BreakerKey::Agent(agent)).is_blocked(now_ms)
            || self
                .get(&BreakerKey::Capability(capability.to_owned()))
                .is_blocked(now_ms)
    }

    /// Records a task's outcome on both breakers; the transitions, agent first.
    pub fn record(
        &mut self,
        agent: PublicKey,
        capability: &str,
        success: bool,
        now_ms: u64,
        config: &BreakerConfig,
    ) -> Vec<(BreakerKey, Transition)> {
        let mut out = Vec::new();
        for key in [
            BreakerKey::Agent(agent),
            BreakerKey::Capability(capability.to_owned()),
        ] {
            let mut b = self.get(&key);
            let transition = b.record(success, now_ms, config);
            if b.is_neutral() {
                self.map.remove(&key);
            } else {
                self.insert(key.clone(), b);
            }
            if let Some(t) = transition {
                out.push((key, t));
            }
        }
        out
    }

    /// Moves every open breaker whose cooldown has passed to half-open; the transitions,
    /// in key order.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(BreakerKey, Transition)> {
        self.map
            .iter_mut()
            .filter_map(|(k, b)| b.tick(now_ms).map(|t| (k.clone(), t)))
            .collect()
    }

    /// Every breaker held (none is closed with no failures), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&BreakerKey, &Breaker)> {
        self.map.iter()
    }

    fn insert(&mut self, key: BreakerKey, breaker: Breaker) {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            let victim = self
                .map
                .iter()
                .min_by_key(|(k, b)| (b.eviction_rank(), (*k).clone()))
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                self.map.remove(&victim);
            }
        }
        self.map.insert(key, breaker);
    }

    /// Breakers held (all non-neutral).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::peer;
    use proptest::prelude::*;

    #[test]
    fn trips_after_consecutive_failures_then_one_trial() {
        let c = BreakerConfig::default();
        let mut b = Breaker::default();
        assert_eq!(b.record(false, 0, &c), None);
        assert_eq!(b.record(true, 1, &c), None, "a success resets the count");
        assert_eq!(b.record(false, 2, &c), None);
        assert_eq!(b.record(false, 3, &c), None);
        assert_eq!(
            b.record(false, 4, &c),
            Some(Transition::Opened { until_ms: 60_004 })
        );
        assert!(b.is_blocked(60_003) && !b.admit(60_003, &c));
        assert_eq!(b.tick(60_003), None);
        assert!(!b.is_blocked(60_004));
        assert!(b.admit(60_004, &c), "the one trial");
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                trial_until_ms: Some(120_004)
            }
        );
        assert!(!b.admit(60_005, &c), "only one");
        assert_eq!(
            b.record(false, 60_010, &c),
            Some(Transition::Opened { until_ms: 120_010 })
        );
        assert_eq!(b.tick(120_010), Some(Transition::HalfOpen));
        assert_eq!(b.tick(120_010), None, "once");
        assert!(b.admit(120_010, &c));
        assert_eq!(b.record(true, 120_011, &c), Some(Transition::Closed));
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(b.admit(120_012, &c) && b.admit(120_012, &c));
    }

    #[test]
    fn a_trial_that_never_reports_back_is_given_up_after_a_cooldown() {
        let c = BreakerConfig {
            failures: 1,
            cooldown_ms: 100,
        };
        let mut b = Breaker::default();
        b.record(false, 0, &c);
        assert!(b.admit(100, &c));
        assert!(!b.admit(199, &c), "the trial is out");
        assert!(b.admit(200, &c), "it ran out: another trial");
        assert!(!b.admit(201, &c));
    }

    #[test]
    fn an_outcome_after_the_cooldown_counts_as_a_trial() {
        // Another node's agent took the trial; this node never ticked or admitted.
        let c = BreakerConfig {
            failures: 1,
            cooldown_ms: 100,
        };
        let mut b = Breaker::default();
        b.record(false, 0, &c);
        assert_eq!(b.record(true, 50, &c), None, "within the cooldown: ignored");
        assert_eq!(b.record(true, 100, &c), Some(Transition::Closed));
    }

    #[test]
    fn agent_and_capability_breakers() {
        let c = BreakerConfig {
            failures: 2,
            cooldown_ms: 100,
        };
        let mut all = Breakers::default();
        let (a, b) = (peer(1), peer(2));
        assert_eq!(all.record(a, "code", false, 0, &c), vec![]);
        assert_eq!(
            all.record(b, "code", false, 1, &c),
            vec![(
                BreakerKey::Capability("code".into()),
                Transition::Opened { until_ms: 101 }
            )]
        );
        // The capability is blocked for everyone; another capability of agent a is not.
        assert!(all.is_blocked(peer(3), "code", 50));
        let err = all.admit(peer(3), "code", 50, &c).unwrap_err();
        assert_eq!(err.key, BreakerKey::Capability("code".into()));
        assert_eq!(
            err.to_string(),
            "the circuit breaker for capability \"code\" is open until 101 ms: delegation \
             there is blocked after consecutive task failures (it admits one trial once the \
             cooldown has passed)"
        );
        assert_eq!(all.admit(a, "search", 50, &c), Ok(()));
        // Agent a has one failure; a success toward it resets (and forgets) it.
        all.record(a, "search", true, 60, &c);
        assert_eq!(
            all.len(),
            2,
            "agent b's one failure and the open capability"
        );
        // Past the cooldown one trial passes, and it is not taken when the agent blocks.
        for _ in 0..2 {
            all.record(b, "other", false, 70, &c);
        }
        assert!(all.admit(b, "code", 101, &c).is_err(), "agent b is open");
        assert_eq!(all.admit(a, "code", 101, &c), Ok(()));
        assert!(all.admit(a, "code", 102, &c).is_err());
        let json = serde_json::to_string(&BreakerKey::Capability("code".into())).unwrap();
        assert_eq!(json, r#"{"type":"capability","id":"code"}"#);
        // The tick moves what is past its cooldown, in key order.
        assert_eq!(
            all.tick(170),
            vec![
                (BreakerKey::Agent(b), Transition::HalfOpen),
                (BreakerKey::Capability("other".into()), Transition::HalfOpen)
            ]
        );
        assert_eq!(all.iter().count(), 3);
    }

    #[test]
    fn bounded() {
        let c = BreakerConfig::default();
        let mut all = Breakers::with_cap(8);
        for i in 0..100u8 {
            all.record(peer(i), &format!("cap{i}"), false, 0, &c);
        }
        assert_eq!(all.len(), 8);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Outcome(bool),
        Tick,
        Wait(u64),
    }

    proptest! {
        /// The breaker against a reference model written from the rules alone: closed
        /// counts failures in a row and opens at the threshold; open blocks for the
        /// cooldown; then exactly one trial at a time, each out for at most a cooldown; a
        /// success closes, a failure reopens.
        #[test]
        fn state_machine_matches_the_model(
            failures in 1u32..5,
            cooldown in 0u64..50,
            ops in prop::collection::vec(prop_oneof![
                Just(Op::Admit),
                any::<bool>().prop_map(Op::Outcome),
                Just(Op::Tick),
                (0u64..40).prop_map(Op::Wait),
            ], 0..200),
        ) {
            #[derive(Debug, Clone, Copy, PartialEq)]
            enum Model {
                Closed(u32),
                Open(u64),
                Trial(Option<u64>),
            }
            let c = BreakerConfig { failures, cooldown_ms: cooldown };
            let mut b = Breaker::default();
            let mut m = Model::Closed(0);
            let mut now = 0u64;
            for op in ops {
                // The model's lazy move from open to half-open.
                let settled = |m: Model, now: u64| match m {
                    Model::Open(until) if now >= until => Model::Trial(None),
                    other => other,
                };
                prop_assert_eq!(b.is_blocked(now), matches!(m, Model::Open(u) if now < u));
                match op {
                    Op::Wait(dt) => now += dt,
                    Op::Tick => {
                        let t = b.tick(now);
                        let next = settled(m, now);
                        prop_assert_eq!(t.is_some(), next != m);
                        m = next;
                    }
                    Op::Admit => {
                        let admitted = b.admit(now, &c);
                        let (expected, next) = match settled(m, now) {
                            Model::Closed(n) => (true, Model::Closed(n)),
                            Model::Open(u) => (false, Model::Open(u)),
                            Model::Trial(Some(until)) if now < until => {
                                (false, Model::Trial(Some(until)))
                            }
                            Model::Trial(_) => (true, Model::Trial(Some(now + cooldown))),
                        };
                        prop_assert_eq!(admitted, expected);
                        m = next;
                    }
                    Op::Outcome(success) => {
                        let t = b.record(success, now, &c);
                        let (expected, next) = match (settled(m, now), success) {
                            (Model::Closed(_), true) => (None, Model::Closed(0)),
                            (Model::Closed(n), false) if n + 1 >= failures => (
                                Some(Transition::Opened { until_ms: now + cooldown }),
                                Model::Open(now + cooldown),
                            ),
                            (Model::Closed(n), false) => (None, Model::Closed(n + 1)),
                            (Model::Open(u), _) => (None, Model::Open(u)),
                            (Model::Trial(_), true) => (Some(Transition::Closed), Model::Closed(0)),
                            (Model::Trial(_), false) => (
                                Some(Transition::Opened { until_ms: now + cooldown }),
                                Model::Open(now + cooldown),
                            ),
                        };
                        prop_assert_eq!(t, expected);
                        m = next;
                    }
                }
                let state = match m {
                    Model::Closed(n) => BreakerState::Closed { failures: n },
                    Model::Open(u) => BreakerState::Open { until_ms: u },
                    Model::Trial(t) => BreakerState::HalfOpen { trial_until_ms: t },
                };
                prop_assert_eq!(b.state(), state, "model {:?}", m);
            }
        }
    }
}
