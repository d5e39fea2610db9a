//! The immune engine: one sans-IO state machine that takes what the node observed and
//! answers with what the node should do.
//!
//! `Immune::on_event(observation, now_ms) -> Vec<Action>`; queries (`admits`,
//! `accepts_from`, `is_replayed`, `app_score`, `admit_delegation`, …) answer the node's
//! gates between events. Time is only ever `now_ms`.

use std::collections::BTreeMap;

use membrane_protocol::PublicKey;
use membrane_protocol::signals::{Severity, ThreatKind, ThreatSignal};

use crate::audit::{AuditEvent, OverrideAction, Verdict};
use crate::breaker::{Blocked, Breaker, BreakerKey, Breakers};
use crate::config::{Config, ConfigError, MAX_PUBLISHED};
use crate::detectors::{self, BudgetTracker, ContentHash, Detection, FloodTracker, RateTracker};
use crate::memory::{Memory, MemoryCells, MemoryKey, MemoryRecord};
use crate::quorum::{Quorum, Report};
use crate::reputation::{Reputation, app_score, decay};
use crate::types::{Action, Channel, Observation, Override, QuarantineReason, Quarantined};

#[derive(Debug, Clone)]
struct PeerState {
    rep: Reputation,
    last_reward_ms: Option<u64>,
    entries: RateTracker,
    gossip: RateTracker,
    flood: FloodTracker,
    budget: Option<BudgetTracker>,
    quarantine: Option<Quarantined>,
    /// The latest offence, for the memory cell a quarantine leaves across restarts.
    offence: Option<(ThreatKind, Severity)>,
    last_seen_ms: u64,
}

impl PeerState {
    fn new(now_ms: u64) -> Self {
        Self {
            rep: Reputation::new(now_ms),
            last_reward_ms: None,
            entries: RateTracker::new(now_ms),
            gossip: RateTracker::new(now_ms),
            flood: FloodTracker::default(),
            budget: None,
            quarantine: None,
            offence: None,
            last_seen_ms: now_ms,
        }
    }
}

/// Whether a detection is ours (audit it, publish it) or a verified report (already
/// gossiped, audited as received).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Local,
    Reported,
}

/// The immune layer of one node.
#[derive(Debug)]
pub struct Immune {
    config: Config,
    me: PublicKey,
    peers: BTreeMap<PublicKey, PeerState>,
    memory: MemoryCells,
    quorum: Quorum,
    breakers: Breakers,
    published: BTreeMap<(PublicKey, ThreatKind), u64>,
}

impl Immune {
    /// A fresh engine for the node whose key is `me`.
    pub fn new(config: Config, me: PublicKey) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            me,
            peers: BTreeMap::new(),
            memory: MemoryCells::default(),
            quorum: Quorum::default(),
            breakers: Breakers::default(),
            published: BTreeMap::new(),
        })
    }

    /// An engine that remembers the persisted memory cells (dropping the expired ones):
    /// banned offenders, rejected payloads, and peers quarantined by their score, whose
    /// score and quarantine come back as they would have been at `now_ms`. Re-apply
    /// [`Immune::banned`] to the node's ban gate after this.
    pub fn with_memory<'a>(
        config: Config,
        me: PublicKey,
        records: impl IntoIterator<Item = &'a MemoryRecord>,
        now_ms: u64,
    ) -> Result<Self, ConfigError> {
        let mut immune = Self::new(config, me)?;
        let records: Vec<&MemoryRecord> = records.into_iter().collect();
        immune.memory.load(records.iter().copied(), now_ms);
        let rc = immune.config.reputation.clone();
        for record in records {
            let MemoryKey::Quarantined { peer } = record.key else {
                continue;
            };
            if record.expires_at_ms <= now_ms || peer == me {
                continue;
            }
            let state = immune.peer_mut(peer, now_ms);
            state.rep = Reputation::rising_above_at(
                rc.quarantine_at,
                record.expires_at_ms,
                now_ms,
                rc.half_life_ms,
            );
            state.offence = record.value.kind.map(|k| (k, record.value.severity));
            state.quarantine = Some(Quarantined {
                reason: QuarantineReason::Score,
                since_ms: record.value.since_ms,
                until_ms: None,
            });
        }
        Ok(immune)
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles one observation at `now_ms`.
    pub fn on_event(&mut self, observation: Observation, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match observation {
            Observation::Connected { peer } => {
                if peer != self.me && !self.admits(&peer, now_ms) {
                    out.push(Action::Disconnect(peer));
                }
            }
            Observation::Received {
                peer,
                channel,
                content,
            } => self.on_received(peer, channel, content, now_ms, &mut out),
            Observation::Applied { owner, records } => {
                if owner != self.me && records > 0 {
                    let rate = self.config.entry_rate.clone();
                    let trips = self
                        .peer_mut(owner, now_ms)
                        .entries
                        .observe_n(now_ms, records, &rate);
                    for trip in trips {
                        let d = detectors::rate_anomaly(owner, "entries", trip);
                        self.apply(d, Origin::Local, now_ms, &mut out);
                    }
                }
            }
            Observation::Rejected {
                peer,
                author,
                content,
                fault,
            } => {
                for d in detectors::rejected(peer, author, content, fault) {
                    self.apply(d, Origin::Local, now_ms, &mut out);
                }
            }
            Observation::Equivocation {
                owner,
                seq,
                first,
                second,
            } => {
                for d in detectors::equivocation(owner, seq, first, second) {
                    self.apply(d, Origin::Local, now_ms, &mut out);
                }
            }
            Observation::BudgetCharged { peer, tokens } => {
                if peer != self.me {
                    let config = self.config.budget.clone();
                    let state = self.peer_mut(peer, now_ms);
                    let tracker = state
                        .budget
                        .get_or_insert_with(|| BudgetTracker::new(now_ms, &config));
                    if let Some(d) = tracker.charge(peer, tokens, now_ms) {
                        self.apply(d, Origin::Local, now_ms, &mut out);
                    }
                }
            }
            Observation::CapabilityUse {
                peer,
                capability,
                act,
                ad,
            } => {
                if let Some(d) =
                    detectors::capability_violation(peer, &capability, act, ad.as_ref(), now_ms)
                {
                    self.apply(d, Origin::Local, now_ms, &mut out);
                }
            }
            Observation::Contributed { peer } => {
                self.reward(peer, now_ms);
            }
            Observation::ThreatReceived {
                reporter,
                signal,
                verdict,
            } => self.on_report(reporter, signal, verdict, now_ms, &mut out),
            Observation::Exonerated { peer } => self.exonerate(peer, now_ms, &mut out),
            Observation::TaskOutcome {
                agent,
                capability,
                success,
            } => {
                for (key, transition) in
                    self.breakers
                        .record(agent, &capability, success, now_ms, &self.config.breaker)
                {
                    out.push(Action::Breaker {
                        key: key.clone(),
                        transition,
                    });
                    out.push(Action::Audit(AuditEvent::Breaker { key, transition }));
                }
            }
            Observation::Tick => self.tick(now_ms, &mut out),
            Observation::Operator(o) => self.operator(o, now_ms, &mut out),
        }
        dedup_gating(&mut out);
        out
    }

    fn on_received(
        &mut self,
        peer: PublicKey,
        channel: Channel,
        content: ContentHash,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if peer == self.me {
            return;
        }
        let mut found = Vec::new();
        if let Some(memory) = self.memory.content(&content, now_ms) {
            found.push(replay(peer, content, memory));
        }
        if channel == Channel::Gossip {
            let (rate, flood) = (self.config.gossip_rate.clone(), self.config.flood.clone());
            let state = self.peer_mut(peer, now_ms);
            if let Some(trip) = state.gossip.observe(now_ms, &rate) {
                found.push(detectors::rate_anomaly(peer, "gossip messages", trip));
            }
            if let Some(d) = state.flood.observe(peer, content, now_ms, &flood) {
                found.push(d);
            }
        } else {
            self.peer_mut(peer, now_ms);
        }
        for d in found {
            self.apply(d, Origin::Local, now_ms, out);
        }
    }

    /// Applies a detection: remember its content (when no honest node would send it),
    /// lower the offender's score, gate it, and (ours, Mid or worse, not published
    /// lately) publish it.
    fn apply(&mut self, d: Detection, origin: Origin, now_ms: u64, out: &mut Vec<Action>) {
        if d.offender == self.me {
            return;
        }
        if origin == Origin::Local {
            out.push(Action::Audit(AuditEvent::ThreatDetected {
                detection: d.clone(),
            }));
        }
        if let Some(hash) = d.evidence_hash.filter(|_| refused_everywhere(d.kind)) {
            let memory = Memory {
                kind: Some(d.kind),
                severity: d.severity,
                since_ms: now_ms,
            };
            self.memory.remember_content(
                hash,
                memory,
                now_ms.saturating_add(self.config.content_memory_ms),
            );
        }
        self.punish(d.offender, d.severity, d.kind, &d.reason, now_ms, out);
        if origin == Origin::Local && d.severity >= Severity::Mid && self.should_publish(&d, now_ms)
        {
            out.push(Action::PublishThreat(d));
        }
    }

    fn should_publish(&mut self, d: &Detection, now_ms: u64) -> bool {
        let slot = (d.offender, d.kind);
        if let Some(&last) = self.published.get(&slot)
            && now_ms.saturating_sub(last) < self.config.publish_interval_ms
        {
            return false;
        }
        if !self.published.contains_key(&slot) && self.published.len() >= MAX_PUBLISHED {
            let oldest = self
                .published
                .iter()
                .min_by_key(|(k, t)| (**t, **k))
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.published.remove(&oldest);
            }
        }
        self.published.insert(slot, now_ms);
        true
    }

    /// Lowers `peer`'s score for `severity` and applies the thresholds it crossed.
    /// Returns the points actually taken.
    fn punish(
        &mut self,
        peer: PublicKey,
        severity: Severity,
        kind: ThreatKind,
        reason: &str,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) -> f64 {
        let rc = self.config.reputation.clone();
        let state = self.peer_mut(peer, now_ms);
        let before = state.rep.score(now_ms, rc.half_life_ms);
        let after = state.rep.penalize(severity, now_ms, &rc);
        state.offence = Some((kind, severity));
        out.push(Action::LowerScore {
            peer,
            severity,
            reputation: after,
            app_score: app_score(after, &rc),
        });
        let mut dropped = false;
        if after <= rc.quarantine_at && state.quarantine.is_none() {
            state.quarantine = Some(Quarantined {
                reason: QuarantineReason::Score,
                since_ms: now_ms,
                until_ms: None,
            });
            out.push(Action::Quarantine {
                peer,
                until_ms: None,
            });
            out.push(Action::Audit(AuditEvent::Quarantine {
                peer,
                reason: format!("reputation {after:.1} ≤ {:.1}: {reason}", rc.quarantine_at),
                until_ms: None,
            }));
            out.push(Action::DropSessions(peer));
            dropped = true;
        }
        if after <= rc.disconnect_at {
            if !dropped {
                out.push(Action::DropSessions(peer));
            }
            out.push(Action::Disconnect(peer));
        }
        if after <= rc.ban_at && !self.memory.is_known_offender(&peer, now_ms) {
            let length = if severity == Severity::Fatal {
                self.config.fatal_ban_ms
            } else {
                self.config.ban_ms
            };
            let until_ms = now_ms.saturating_add(length);
            self.memory.remember_offender(
                peer,
                Memory {
                    kind: Some(kind),
                    severity,
                    since_ms: now_ms,
                },
                until_ms,
            );
            out.push(Action::Ban { peer, until_ms });
            out.push(Action::Audit(AuditEvent::Ban {
                peer,
                until_ms,
                reason: format!("reputation {after:.1} ≤ {:.1}: {reason}", rc.ban_at),
            }));
        }
        before - after
    }

    /// Raises `peer`'s score by one reward if its last reward is an interval old.
    fn reward(&mut self, peer: PublicKey, now_ms: u64) -> bool {
        if peer == self.me || self.memory.is_known_offender(&peer, now_ms) {
            return false;
        }
        let rc = self.config.reputation.clone();
        let state = self.peer_mut(peer, now_ms);
        if state
            .last_reward_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < rc.reward_interval_ms)
        {
            return false;
        }
        state.last_reward_ms = Some(now_ms);
        state.rep.adjust(rc.reward, now_ms, rc.half_life_ms);
        true
    }

    fn on_report(
        &mut self,
        reporter: PublicKey,
        signal: ThreatSignal,
        verdict: Verdict,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let offender = signal.offender;
        // Our own signals echoed back, self-accusations, and reports by peers whose data
        // we no longer accept carry no weight.
        if reporter == self.me || reporter == offender || !self.accepts_from(&reporter, now_ms) {
            return;
        }
        let received = |outcome: String| {
            Action::Audit(AuditEvent::ThreatReceived {
                reporter,
                offender,
                kind: signal.kind,
                severity: signal.severity,
                evidence_hash: signal.evidence_hash,
                verdict,
                outcome,
            })
        };
        match verdict {
            Verdict::Confirmed => {
                if offender == self.me {
                    out.push(received(
                        "evidence against this node verified: check this node".into(),
                    ));
                    return;
                }
                // The reporter cannot inflate what its evidence proves.
                let severity = signal
                    .severity
                    .min(detectors::default_severity(signal.kind));
                out.push(received(format!("evidence verified: {severity:?} applied")));
                let d = Detection {
                    offender,
                    kind: signal.kind,
                    severity,
                    evidence_hash: Some(signal.evidence_hash),
                    reason: format!("reported by {reporter} with verified evidence"),
                };
                self.apply(d, Origin::Reported, now_ms, out);
                self.reward(reporter, now_ms);
            }
            Verdict::Refuted => {
                out.push(received("evidence refuted: reporter penalized".into()));
                self.punish(
                    reporter,
                    self.config.quorum.false_report,
                    signal.kind,
                    "its threat report's evidence did not verify",
                    now_ms,
                    out,
                );
            }
            Verdict::Unverifiable => {
                if offender == self.me {
                    return;
                }
                let report = Report {
                    reporter,
                    kind: signal.kind,
                    severity: signal.severity,
                    evidence_hash: signal.evidence_hash,
                    at_ms: now_ms,
                };
                let (peers, half_life) = (&self.peers, self.config.reputation.half_life_ms);
                let reputation = |k: &PublicKey| score_of(peers, k, now_ms, half_life);
                let decision =
                    self.quorum
                        .add(offender, report, now_ms, &self.config.quorum, reputation);
                let Some(decision) = decision else {
                    out.push(received(
                        "held until a quorum of reputable reporters".into(),
                    ));
                    return;
                };
                out.push(received(format!(
                    "quorum of {} reputable reporters: {:?} applied, quarantined",
                    decision.reporters.len(),
                    decision.severity
                )));
                let until_ms = now_ms.saturating_add(self.config.quarantine_ms);
                let state = self.peer_mut(offender, now_ms);
                if state
                    .quarantine
                    .is_none_or(|q| q.reason == QuarantineReason::Score)
                {
                    state.quarantine = Some(Quarantined {
                        reason: QuarantineReason::Quorum,
                        since_ms: now_ms,
                        until_ms: Some(until_ms),
                    });
                    out.push(Action::Quarantine {
                        peer: offender,
                        until_ms: Some(until_ms),
                    });
                    out.push(Action::Audit(AuditEvent::Quarantine {
                        peer: offender,
                        reason: format!(
                            "reported for {:?} by a quorum of {}",
                            decision.kind,
                            decision.reporters.len()
                        ),
                        until_ms: Some(until_ms),
                    }));
                    out.push(Action::DropSessions(offender));
                }
                let taken = self.punish(
                    offender,
                    decision.severity,
                    decision.kind,
                    "reported by a quorum of reputable peers",
                    now_ms,
                    out,
                );
                self.quorum.set_penalty(&offender, taken);
            }
        }
    }

    /// Undoes what reports against `peer` did and penalizes every reporter.
    fn exonerate(&mut self, peer: PublicKey, now_ms: u64, out: &mut Vec<Action>) {
        let Some(accusation) = self.quorum.take(&peer) else {
            return;
        };
        let rc = self.config.reputation.clone();
        let refund: f64 = accusation
            .acted
            .iter()
            .map(|a| decay(a.penalty, now_ms.saturating_sub(a.at_ms), rc.half_life_ms))
            .sum();
        let state = self.peer_mut(peer, now_ms);
        state.rep.adjust(refund, now_ms, rc.half_life_ms);
        if state
            .quarantine
            .is_some_and(|q| q.reason == QuarantineReason::Quorum)
        {
            state.quarantine = None;
            out.push(Action::Release(peer));
            out.push(Action::Audit(AuditEvent::Release {
                peer,
                reason: "exonerated: the reports against it were contradicted".into(),
            }));
        }
        let severity = self.config.quorum.false_report;
        for reporter in accusation.reporters() {
            if reporter != self.me {
                self.punish(
                    reporter,
                    severity,
                    ThreatKind::Malformed,
                    &format!("its report against {peer} was contradicted"),
                    now_ms,
                    out,
                );
            }
        }
    }

    fn tick(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for (key, transition) in self.breakers.tick(now_ms) {
            out.push(Action::Breaker {
                key: key.clone(),
                transition,
            });
            out.push(Action::Audit(AuditEvent::Breaker { key, transition }));
        }
        for peer in self.memory.prune(now_ms) {
            out.push(Action::Unban(peer));
            out.push(Action::Audit(AuditEvent::Unban {
                peer,
                reason: "ban expired".into(),
            }));
        }
        self.quorum.prune(now_ms, &self.config.quorum);
        let interval = self.config.publish_interval_ms;
        self.published
            .retain(|_, at| now_ms.saturating_sub(*at) < interval);
        let rc = &self.config.reputation;
        for (peer, state) in &mut self.peers {
            let Some(q) = state.quarantine else { continue };
            let recovered = state.rep.score(now_ms, rc.half_life_ms) > rc.quarantine_at;
            let due = q.until_ms.is_none_or(|until| now_ms >= until);
            let lifts = match q.reason {
                QuarantineReason::Score => recovered,
                QuarantineReason::Quorum => recovered && due,
                QuarantineReason::Operator => false,
            };
            if lifts {
                state.quarantine = None;
                out.push(Action::Release(*peer));
                out.push(Action::Audit(AuditEvent::Release {
                    peer: *peer,
                    reason: "reputation recovered".into(),
                }));
            }
        }
    }

    fn operator(&mut self, o: Override, now_ms: u64, out: &mut Vec<Action>) {
        let (action, peer) = match o {
            Override::Release(p) => (OverrideAction::Release, p),
            Override::Unban(p) => (OverrideAction::Unban, p),
            Override::Ban(p) => (OverrideAction::Ban, p),
            Override::Quarantine(p) => (OverrideAction::Quarantine, p),
            Override::Exonerate(p) => (OverrideAction::Exonerate, p),
        };
        if peer == self.me {
            return;
        }
        out.push(Action::Audit(AuditEvent::Override { action, peer }));
        let half_life = self.config.reputation.half_life_ms;
        match o {
            Override::Release(_) => {
                let state = self.peer_mut(peer, now_ms);
                state.quarantine = None;
                state.rep.forgive(now_ms, half_life);
                out.push(Action::Release(peer));
                out.push(Action::Audit(AuditEvent::Release {
                    peer,
                    reason: "operator".into(),
                }));
            }
            Override::Unban(_) => {
                self.memory.forget_offender(&peer);
                let state = self.peer_mut(peer, now_ms);
                state.rep.forgive(now_ms, half_life);
                let was_quarantined = state.quarantine.take().is_some();
                out.push(Action::Unban(peer));
                out.push(Action::Audit(AuditEvent::Unban {
                    peer,
                    reason: "operator".into(),
                }));
                if was_quarantined {
                    out.push(Action::Release(peer));
                }
            }
            Override::Ban(_) => {
                let until_ms = now_ms.saturating_add(self.config.ban_ms);
                self.memory.forget_offender(&peer);
                self.memory.remember_offender(
                    peer,
                    Memory {
                        kind: None,
                        severity: Severity::Fatal,
                        since_ms: now_ms,
                    },
                    until_ms,
                );
                out.push(Action::Ban { peer, until_ms });
                out.push(Action::Audit(AuditEvent::Ban {
                    peer,
                    until_ms,
                    reason: "operator".into(),
                }));
                out.push(Action::DropSessions(peer));
                out.push(Action::Disconnect(peer));
            }
            Override::Quarantine(_) => {
                self.peer_mut(peer, now_ms).quarantine = Some(Quarantined {
                    reason: QuarantineReason::Operator,
                    since_ms: now_ms,
                    until_ms: None,
                });
                out.push(Action::Quarantine {
                    peer,
                    until_ms: None,
                });
                out.push(Action::Audit(AuditEvent::Quarantine {
                    peer,
                    reason: "operator".into(),
                    until_ms: None,
                }));
                out.push(Action::DropSessions(peer));
            }
            Override::Exonerate(_) => self.exonerate(peer, now_ms, out),
        }
    }

    /// The state of `peer`, made (and room made for it) if absent.
    fn peer_mut(&mut self, peer: PublicKey, now_ms: u64) -> &mut PeerState {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_peers {
            let half_life = self.config.reputation.half_life_ms;
            let victim = self
                .peers
                .iter()
                .min_by(|(ka, a), (kb, b)| {
                    let key = |s: &PeerState| {
                        (
                            s.quarantine.is_some(),
                            s.rep.score(now_ms, half_life).abs(),
                            s.last_seen_ms,
                        )
                    };
                    let (qa, sa, ta) = key(a);
                    let (qb, sb, tb) = key(b);
                    qa.cmp(&qb)
                        .then(sa.total_cmp(&sb))
                        .then(ta.cmp(&tb))
                        .then(ka.cmp(kb))
                })
                .map(|(k, _)| *k);
            if let Some(victim) = victim {
                self.peers.remove(&victim);
            }
        }
        let state = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(now_ms));
        state.last_seen_ms = state.last_seen_ms.max(now_ms);
        state
    }

    /// `peer`'s reputation at `now_ms` (0 for a peer never seen).
    pub fn reputation(&self, peer: &PublicKey, now_ms: u64) -> f64 {
        score_of(
            &self.peers,
            peer,
            now_ms,
            self.config.reputation.half_life_ms,
        )
    }

    /// `peer`'s gossipsub application score at `now_ms`.
    pub fn app_score(&self, peer: &PublicKey, now_ms: u64) -> f64 {
        app_score(self.reputation(peer, now_ms), &self.config.reputation)
    }

    /// Every non-zero application score at `now_ms`, in key order, for the node's
    /// periodic refresh of gossipsub (scores decay between events).
    pub fn app_scores(&self, now_ms: u64) -> Vec<(PublicKey, f64)> {
        self.peers
            .keys()
            .map(|k| (*k, self.app_score(k, now_ms)))
            .filter(|(_, s)| *s != 0.0)
            .collect()
    }

    /// Whether a connection from `peer` may stand: not banned, score above the
    /// disconnect threshold.
    pub fn admits(&self, peer: &PublicKey, now_ms: u64) -> bool {
        !self.memory.is_known_offender(peer, now_ms)
            && self.reputation(peer, now_ms) > self.config.reputation.disconnect_at
    }

    /// Whether `peer`'s data may be applied: admitted and not quarantined.
    pub fn accepts_from(&self, peer: &PublicKey, now_ms: u64) -> bool {
        self.admits(peer, now_ms) && self.quarantine(peer).is_none()
    }

    /// `peer`'s quarantine, if one is in force.
    pub fn quarantine(&self, peer: &PublicKey) -> Option<Quarantined> {
        self.peers.get(peer).and_then(|s| s.quarantine)
    }

    /// Whether `peer` is a remembered offender (banned) at `now_ms`.
    pub fn is_known_offender(&self, peer: &PublicKey, now_ms: u64) -> bool {
        self.memory.is_known_offender(peer, now_ms)
    }

    /// Whether a payload with this hash was rejected before: refuse it unprocessed.
    pub fn is_replayed(&self, content: &ContentHash, now_ms: u64) -> bool {
        self.memory.is_replayed(content, now_ms)
    }

    /// The banned peers and their ban ends, for the node's ban gate (after a restart).
    pub fn banned(&self, now_ms: u64) -> Vec<(PublicKey, u64)> {
        self.memory.offenders(now_ms).collect()
    }

    /// The memory cells as records to persist (call after actions that ban or
    /// quarantine, or on a timer): the cells, then one record per peer quarantined by a
    /// score still at or below the threshold, expiring when it would recover, in key
    /// order. Operator quarantines are the node's to persist.
    pub fn memory_records(&self, now_ms: u64) -> Vec<MemoryRecord> {
        let mut records = self.memory.to_records(now_ms);
        let rc = &self.config.reputation;
        for (peer, state) in &self.peers {
            let Some(q) = state.quarantine else { continue };
            if q.reason == QuarantineReason::Operator {
                continue;
            }
            let Some(expires_at_ms) = state.rep.rises_above_at(rc.quarantine_at, rc.half_life_ms)
            else {
                continue;
            };
            if expires_at_ms <= now_ms {
                continue;
            }
            let (kind, severity) = state
                .offence
                .map_or((None, Severity::Low), |(k, s)| (Some(k), s));
            records.push(MemoryRecord {
                key: MemoryKey::Quarantined { peer: *peer },
                value: Memory {
                    kind,
                    severity,
                    since_ms: q.since_ms,
                },
                expires_at_ms,
            });
        }
        records
    }

    /// The memory cells.
    pub fn memory(&self) -> &MemoryCells {
        &self.memory
    }

    /// Admits a delegation to `agent` for `capability` (taking a half-open trial), or
    /// says which breaker blocks it.
    pub fn admit_delegation(
        &mut self,
        agent: PublicKey,
        capability: &str,
        now_ms: u64,
    ) -> Result<(), Blocked> {
        self.breakers
            .admit(agent, capability, now_ms, &self.config.breaker)
    }

    /// Whether a delegation to `agent` for `capability` is blocked, without taking a
    /// trial.
    pub fn delegation_blocked(&self, agent: PublicKey, capability: &str, now_ms: u64) -> bool {
        self.breakers.is_blocked(agent, capability, now_ms)
    }

    /// One breaker's state.
    pub fn breaker(&self, key: &BreakerKey) -> Breaker {
        self.breakers.get(key)
    }

    /// Every breaker that is not closed with no failures, in key order.
    pub fn breakers(&self) -> impl Iterator<Item = (&BreakerKey, &Breaker)> {
        self.breakers.iter()
    }

    /// Peers with per-peer state (at most `max_peers`).
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }
}

/// Keeps only the first `DropSessions` and `Disconnect` per peer: several steps of one
/// event may each ask for them.
fn dedup_gating(out: &mut Vec<Action>) {
    let mut seen: Vec<Action> = Vec::new();
    out.retain(|a| match a {
        Action::DropSessions(_) | Action::Disconnect(_) => {
            if seen.contains(a) {
                false
            } else {
                seen.push(a.clone());
                true
            }
        }
        _ => true,
    });
}

fn score_of(
    peers: &BTreeMap<PublicKey, PeerState>,
    peer: &PublicKey,
    now_ms: u64,
    half_life_ms: u64,
) -> f64 {
    peers
        .get(peer)
        .map_or(0.0, |s| s.rep.score(now_ms, half_life_ms))
}

/// Whether content proven bad in an offence of `kind` is bad wherever it comes from, so
/// it is remembered and a copy is refused unprocessed. Not so for an equivocation's
/// second record (an honest replica may hold it: whichever half reaches it first is
/// valid there), nor for flooding or a rate (the repetition offends, not the content).
fn refused_everywhere(kind: ThreatKind) -> bool {
    !matches!(
        kind,
        ThreatKind::Equivocation | ThreatKind::Flooding | ThreatKind::RateAnomaly
    )
}

/// The detection for `peer` sending content rejected before. Sending a forgery again is
/// forging (an honest node validates before it relays, so it never holds one); any other
/// replay is of mid severity.
fn replay(peer: PublicKey, content: ContentHash, memory: Memory) -> Detection {
    let severity = if memory.kind == Some(ThreatKind::Forgery) {
        Severity::Fatal
    } else {
        Severity::Mid
    };
    Detection {
        offender: peer,
        kind: ThreatKind::Replay,
        severity,
        evidence_hash: Some(content),
        reason: format!(
            "replayed content rejected before ({})",
            memory
                .kind
                .map_or_else(|| "operator".to_owned(), |k| format!("{k:?}"))
        ),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
