//! Threat reports from other nodes, and the quorum rule for the ones we cannot verify.
//!
//! A report that carries verifiable evidence is acted on at once (the node checks the
//! evidence; see `Verdict`). A report we cannot verify only counts toward a quorum: at
//! least `quorum` *distinct* reporters, none of them the accused, each with a reputation
//! of at least `reporter_min` *at the time of the tally*, within `window_ms`. Fresh
//! identities start at 0 and earn at most one small reward per interval, so a single
//! liar, or a Sybil cluster of any size made of fresh or low-reputation keys, never
//! reaches it. Without proof nothing is ever fatal: the decided severity is the one at
//! least `quorum` counted reporters agree on, capped at [`Severity::High`].
//!
//! Every report is kept for `memory_ms`, so if the accused is later exonerated, each
//! reporter (counted or not) loses reputation for the false report.

use std::collections::BTreeMap;

use membrane_protocol::PublicKey;
use membrane_protocol::signals::{Severity, ThreatKind};
use serde::{Deserialize, Serialize};

use crate::detectors::ContentHash;

/// Quorum settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumConfig {
    /// Distinct reputable reporters needed to act on unverifiable reports.
    pub quorum: usize,
    /// Lowest reputation a reporter needs to count.
    pub reporter_min: f64,
    /// Reports older than this do not count toward a quorum.
    pub window_ms: u64,
    /// Reports are kept this long for a later contradiction.
    pub memory_ms: u64,
    /// Most accused peers tracked at once.
    pub max_accused: usize,
    /// Most reports kept per accused peer (one per reporter).
    pub max_reports: usize,
    /// What a false report costs its reporter (evidence refuted, or the accused later
    /// exonerated).
    pub false_report: Severity,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        Self {
            quorum: 3,
            reporter_min: 20.0,
            window_ms: 10 * 60_000,
            memory_ms: 24 * 3_600_000,
            max_accused: 1_024,
            max_reports: 32,
            false_report: Severity::Mid,
        }
    }
}

impl QuorumConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.quorum < 2 {
            return Err(format!(
                "quorum is {}, expected at least 2 (one reporter must never suffice)",
                self.quorum
            ));
        }
        if !self.reporter_min.is_finite() || self.reporter_min <= 0.0 {
            return Err(format!(
                "reporter_min is {}, expected above 0 (fresh identities start at 0)",
                self.reporter_min
            ));
        }
        if self.max_reports < self.quorum {
            return Err(format!(
                "max_reports {} is below quorum {}",
                self.max_reports, self.quorum
            ));
        }
        if self.max_accused == 0 || self.window_ms == 0 || self.memory_ms < self.window_ms {
            return Err("max_accused and window_ms must be positive, memory_ms ≥ window_ms".into());
        }
        Ok(())
    }
}

/// One unverifiable report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Who reported.
    #[serde(with = "crate::text::peer")]
    pub reporter: PublicKey,
    /// What they say happened.
    pub kind: ThreatKind,
    /// How bad they say it was.
    pub severity: Severity,
    /// The evidence hash they named.
    #[serde(with = "crate::text::hex")]
    pub evidence_hash: ContentHash,
    /// When we received it.
    pub at_ms: u64,
}

/// A quorum reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumDecision {
    /// The reporters that counted, in key order.
    pub reporters: Vec<PublicKey>,
    /// The kind most of them reported (ties: the first in [`ThreatKind`] order).
    pub kind: ThreatKind,
    /// The severity at least `quorum` of them agree on, at most [`Severity::High`].
    pub severity: Severity,
}

/// The quorum rule, as a pure function of the reports about `offender`, the instant and
/// each reporter's current reputation.
pub fn decide(
    reports: &[Report],
    offender: &PublicKey,
    now_ms: u64,
    config: &QuorumConfig,
    reputation: impl Fn(&PublicKey) -> f64,
) -> Option<QuorumDecision> {
    // The newest counting report of each distinct reporter.
    let mut counted: BTreeMap<PublicKey, &Report> = BTreeMap::new();
    for r in reports {
        let fresh = now_ms.saturating_sub(r.at_ms) < config.window_ms;
        if !fresh || &r.reporter == offender || reputation(&r.reporter) < config.reporter_min {
            continue;
        }
        let slot = counted.entry(r.reporter).or_insert(r);
        if r.at_ms > slot.at_ms {
            *slot = r;
        }
    }
    if counted.len() < config.quorum {
        return None;
    }
    let mut severities: Vec<Severity> = counted.values().map(|r| r.severity).collect();
    severities.sort_unstable_by(|a, b| b.cmp(a));
    let agreed = severities[config.quorum - 1].min(Severity::High);
    let mut kinds: BTreeMap<ThreatKind, usize> = BTreeMap::new();
    for r in counted.values() {
        *kinds.entry(r.kind).or_default() += 1;
    }
    let most = kinds.values().copied().max().unwrap_or(0);
    let kind = kinds
        .iter()
        .find(|(_, n)| **n == most)
        .map(|(k, _)| *k)
        .unwrap_or(ThreatKind::Malformed);
    Some(QuorumDecision {
        reporters: counted.into_keys().collect(),
        kind,
        severity: agreed,
    })
}

/// A quorum acted on: kept so an exoneration can undo it and blame the reporters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acted {
    /// When.
    pub at_ms: u64,
    /// Points actually taken from the accused.
    pub penalty: f64,
    /// The reports that led to it.
    pub reports: Vec<Report>,
}

/// What is held about one accused peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accusation {
    /// Reports not (yet) acted on, one per reporter.
    pub pending: Vec<Report>,
    /// Quorums acted on.
    pub acted: Vec<Acted>,
}

impl Accusation {
    /// Every reporter, pending or acted on, in key order without repeats.
    pub fn reporters(&self) -> Vec<PublicKey> {
        let mut all: Vec<PublicKey> = self
            .pending
            .iter()
            .chain(self.acted.iter().flat_map(|a| &a.reports))
            .map(|r| r.reporter)
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn newest_ms(&self) -> u64 {
        self.pending
            .iter()
            .chain(self.acted.iter().flat_map(|a| &a.reports))
            .map(|r| r.at_ms)
            .max()
            .unwrap_or(0)
    }
}

/// The unverifiable reports held, bounded by [`QuorumConfig::max_accused`] and
/// [`QuorumConfig::max_reports`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quorum {
    accused: BTreeMap<PublicKey, Accusation>,
}

impl Quorum {
    /// Holds `report` against `offender` and tallies. `Some` when a quorum is reached;
    /// the reports that counted then move to an [`Acted`] record (with `penalty` 0 until
    /// [`Quorum::set_penalty`]), so the same reports never decide twice.
    pub fn add(
        &mut self,
        offender: PublicKey,
        report: Report,
        now_ms: u64,
        config: &QuorumConfig,
        reputation: impl Fn(&PublicKey) -> f64,
    ) -> Option<QuorumDecision> {
        if !self.accused.contains_key(&offender) && self.accused.len() >= config.max_accused {
            self.evict(config, &reputation);
        }
        let accusation = self.accused.entry(offender).or_default();
        if let Some(same) = accusation
            .pending
            .iter_mut()
            .find(|r| r.reporter == report.reporter)
        {
            *same = report;
        } else if accusation.pending.len() < config.max_reports {
            accusation.pending.push(report);
        } else {
            // Full: the newcomer replaces the least reputable reporter, if it beats it.
            let weakest = accusation
                .pending
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    reputation(&a.reporter).total_cmp(&reputation(&b.reporter))
                })
                .map(|(i, r)| (i, reputation(&r.reporter)));
            match weakest {
                Some((i, weak)) if reputation(&report.reporter) > weak => {
                    accusation.pending[i] = report;
                }
                _ => return None,
            }
        }
        let decision = decide(&accusation.pending, &offender, now_ms, config, &reputation)?;
        let (used, kept): (Vec<Report>, Vec<Report>) = accusation
            .pending
            .iter()
            .partition(|r| decision.reporters.binary_search(&r.reporter).is_ok());
        accusation.pending = kept;
        accusation.acted.push(Acted {
            at_ms: now_ms,
            penalty: 0.0,
            reports: used,
        });
        Some(decision)
    }

    /// Records the points the last quorum against `offender` actually took.
    pub fn set_penalty(&mut self, offender: &PublicKey, penalty: f64) {
        if let Some(last) = self
            .accused
            .get_mut(offender)
            .and_then(|a| a.acted.last_mut())
        {
            last.penalty = penalty;
        }
    }

    /// Removes and returns everything held against `offender` (it was exonerated).
    pub fn take(&mut self, offender: &PublicKey) -> Option<Accusation> {
        self.accused.remove(offender)
    }

    /// What is held against `offender`.
    pub fn get(&self, offender: &PublicKey) -> Option<&Accusation> {
        self.accused.get(offender)
    }

    /// Accused peers held.
    pub fn len(&self) -> usize {
        self.accused.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.accused.is_empty()
    }

    /// Forgets reports and quorums older than `memory_ms`.
    pub fn prune(&mut self, now_ms: u64, config: &QuorumConfig) {
        let live = |at: u64| now_ms.saturating_sub(at) < config.memory_ms;
        self.accused.retain(|_, a| {
            a.pending.retain(|r| live(r.at_ms));
            a.acted.retain(|q| live(q.at_ms));
            !(a.pending.is_empty() && a.acted.is_empty())
        });
    }

    /// Makes room: drops the accusation with no quorum acted on, the fewest reputable
    /// reporters and the oldest newest report, so a flood of accusations by nobodies
    /// cannot push out one that reputable reporters are building.
    fn evict(&mut self, config: &QuorumConfig, reputation: &impl Fn(&PublicKey) -> f64) {
        let victim = self
            .accused
            .iter()
            .min_by_key(|(key, a)| {
                let reputable = a
                    .pending
                    .iter()
                    .filter(|r| reputation(&r.reporter) >= config.reporter_min)
                    .count();
                (!a.acted.is_empty(), reputable, a.newest_ms(), **key)
            })
            .map(|(key, _)| *key);
        if let Some(victim) = victim {
            self.accused.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::peer;

    fn report(n: u8, severity: Severity, at_ms: u64) -> Report {
        Report {
            reporter: peer(n),
            kind: ThreatKind::Trespass,
            severity,
            evidence_hash: [n; 32],
            at_ms,
        }
    }

    /// Peers 1..=9 are reputable (50), 100.. are fresh (0), 200.. slightly positive (10).
    fn rep(key: &PublicKey) -> f64 {
        if (1..=9).any(|n| peer(n) == *key) {
            50.0
        } else if (200..=220).any(|n| peer(n) == *key) {
            10.0
        } else {
            0.0
        }
    }

    const ACCUSED: u8 = 50;

    #[test]
    fn one_liar_is_not_a_quorum() {
        let c = QuorumConfig::default();
        let reports = [report(1, Severity::Fatal, 0)];
        assert_eq!(decide(&reports, &peer(ACCUSED), 0, &c, rep), None);
        // Nor is the same liar three times.
        let thrice = [
            report(1, Severity::Fatal, 0),
            report(1, Severity::Fatal, 1),
            report(1, Severity::Fatal, 2),
        ];
        assert_eq!(decide(&thrice, &peer(ACCUSED), 2, &c, rep), None);
    }

    #[test]
    fn sybil_cluster_is_not_a_quorum() {
        let c = QuorumConfig::default();
        let fresh: Vec<Report> = (100..110).map(|n| report(n, Severity::Fatal, 0)).collect();
        assert_eq!(decide(&fresh, &peer(ACCUSED), 0, &c, rep), None);
        let low: Vec<Report> = (200..210).map(|n| report(n, Severity::Fatal, 0)).collect();
        assert_eq!(decide(&low, &peer(ACCUSED), 0, &c, rep), None);
        // Ten Sybils plus two reputable reporters are still two.
        let mut mixed = fresh.clone();
        mixed.extend([report(1, Severity::High, 0), report(2, Severity::High, 0)]);
        assert_eq!(decide(&mixed, &peer(ACCUSED), 0, &c, rep), None);
    }

    #[test]
    fn three_reputable_reporters_decide() {
        let c = QuorumConfig::default();
        let reports = [
            report(3, Severity::Mid, 0),
            report(1, Severity::Fatal, 0),
            report(2, Severity::High, 0),
            report(100, Severity::Fatal, 0),
        ];
        assert_eq!(
            decide(&reports, &peer(ACCUSED), 0, &c, rep),
            Some(QuorumDecision {
                reporters: {
                    let mut r = vec![peer(1), peer(2), peer(3)];
                    r.sort_unstable();
                    r
                },
                kind: ThreatKind::Trespass,
                // The third-worst of the counted: Mid.
                severity: Severity::Mid,
            })
        );
        // Unproven claims never reach Fatal.
        let fatal: Vec<Report> = (1..=3).map(|n| report(n, Severity::Fatal, 0)).collect();
        assert_eq!(
            decide(&fatal, &peer(ACCUSED), 0, &c, rep).map(|d| d.severity),
            Some(Severity::High)
        );
    }

    #[test]
    fn old_reports_and_self_reports_do_not_count() {
        let c = QuorumConfig::default();
        let reports = [
            report(1, Severity::High, 0),
            report(2, Severity::High, 0),
            report(3, Severity::High, c.window_ms),
        ];
        assert_eq!(decide(&reports, &peer(ACCUSED), c.window_ms, &c, rep), None);
        assert!(decide(&reports, &peer(ACCUSED), c.window_ms - 1, &c, rep).is_some());
        let own = [
            report(1, Severity::High, 0),
            report(2, Severity::High, 0),
            report(3, Severity::High, 0),
        ];
        assert_eq!(decide(&own, &peer(3), 0, &c, rep), None);
    }

    #[test]
    fn store_decides_once_and_keeps_reports_for_contradiction() {
        let c = QuorumConfig::default();
        let mut q = Quorum::default();
        let accused = peer(ACCUSED);
        for n in 100..110 {
            assert_eq!(
                q.add(accused, report(n, Severity::High, 0), 0, &c, rep),
                None
            );
        }
        assert_eq!(
            q.add(accused, report(1, Severity::High, 0), 0, &c, rep),
            None
        );
        assert_eq!(
            q.add(accused, report(2, Severity::High, 0), 0, &c, rep),
            None
        );
        let d = q
            .add(accused, report(3, Severity::High, 1), 1, &c, rep)
            .unwrap();
        assert_eq!(d.reporters.len(), 3);
        q.set_penalty(&accused, 50.0);
        // A fourth reputable report alone is no new quorum.
        assert_eq!(
            q.add(accused, report(4, Severity::High, 2), 2, &c, rep),
            None
        );
        let a = q.take(&accused).unwrap();
        assert_eq!(a.acted.len(), 1);
        assert_eq!(a.acted[0].penalty, 50.0);
        assert_eq!(a.reporters().len(), 14, "10 Sybils, 3 counted, 1 pending");
        assert!(q.is_empty());
    }

    #[test]
    fn bounded() {
        let c = QuorumConfig {
            max_accused: 4,
            max_reports: 3,
            ..QuorumConfig::default()
        };
        let mut q = Quorum::default();
        // A reputable accusation building up survives a flood of nobodies' accusations.
        q.add(peer(ACCUSED), report(1, Severity::High, 0), 0, &c, rep);
        for n in 100..140 {
            q.add(peer(n), report(n, Severity::High, 1), 1, &c, rep);
        }
        assert_eq!(q.len(), 4);
        assert!(q.get(&peer(ACCUSED)).is_some());
        // A full accusation takes a more reputable reporter in place of the weakest.
        for n in [100, 101, 200, 201, 202] {
            q.add(peer(ACCUSED), report(n, Severity::High, 2), 2, &c, rep);
        }
        let mut expected = vec![peer(1), peer(200), peer(201)];
        expected.sort_unstable();
        assert_eq!(q.get(&peer(ACCUSED)).unwrap().reporters(), expected);
        q.prune(c.memory_ms + 10, &c);
        assert!(q.is_empty());
    }

    #[test]
    fn config_refuses_a_quorum_of_one() {
        let c = QuorumConfig {
            quorum: 1,
            ..QuorumConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("at least 2"));
        assert_eq!(QuorumConfig::default().validate(), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn a_quorum_always_has_enough_reputable_distinct_reporters(
            reports in proptest::collection::vec(
                (0u8..12, 0u8..4, 0u64..1_000_000),
                0..40,
            ),
            reputations in proptest::collection::vec(-50.0..60.0f64, 12),
            now in 0u64..2_000_000,
        ) {
            let c = QuorumConfig::default();
            let sev = [Severity::Low, Severity::Mid, Severity::High, Severity::Fatal];
            let reports: Vec<Report> = reports
                .iter()
                .map(|&(r, s, at)| report(r, sev[usize::from(s)], at))
                .collect();
            let rep = |k: &PublicKey| {
                (0..12u8)
                    .find(|n| peer(*n) == *k)
                    .map_or(0.0, |n| reputations[usize::from(n)])
            };
            if let Some(d) = decide(&reports, &peer(0), now, &c, rep) {
                proptest::prop_assert!(d.reporters.len() >= c.quorum);
                proptest::prop_assert!(d.severity <= Severity::High);
                for r in &d.reporters {
                    proptest::prop_assert!(*r != peer(0));
                    proptest::prop_assert!(rep(r) >= c.reporter_min);
                    proptest::prop_assert!(reports.iter().any(|x| x.reporter == *r
                        && now.saturating_sub(x.at_ms) < c.window_ms));
                }
                proptest::prop_assert!(d.reporters.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
