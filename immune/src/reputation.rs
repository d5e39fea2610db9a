//! Per-peer reputation: a score in `[-100, 100]` that decays toward neutral (0) with a
//! half-life, lowered by offences of a named [`Severity`] and raised, slowly, by valid
//! work.
//!
//! The score is stored with the instant it was last changed; its value at `now` is
//! `score × 2^(−elapsed / half_life)`, so reading it never mutates anything and two
//! readers at the same instant agree. Decay is multiplicative: it never crosses zero, so
//! an offender only ever drifts back *toward* neutral and a good peer's standing fades
//! unless it keeps earning it.

use membrane_protocol::signals::Severity;
use serde::{Deserialize, Serialize};

/// Highest score.
pub const MAX_SCORE: f64 = 100.0;
/// Lowest score.
pub const MIN_SCORE: f64 = -100.0;

/// How scores move and where the named thresholds sit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReputationConfig {
    /// Time for any score to halve on its way back to 0.
    pub half_life_ms: u64,
    /// Points a [`Severity::Low`] offence costs.
    pub low: f64,
    /// Points a [`Severity::Mid`] offence costs.
    pub mid: f64,
    /// Points a [`Severity::High`] offence costs.
    pub high: f64,
    /// Points a [`Severity::Fatal`] offence costs.
    pub fatal: f64,
    /// At or below this score a peer is quarantined: its data is not applied.
    pub quarantine_at: f64,
    /// At or below this score a peer is disconnected and refused until it recovers.
    pub disconnect_at: f64,
    /// At or below this score a peer is banned (remembered as an offender).
    pub ban_at: f64,
    /// Points one reward (a valid contribution, a confirmed report) earns.
    pub reward: f64,
    /// At most one reward per peer per this interval, so standing takes time to earn.
    pub reward_interval_ms: u64,
    /// Factor applied to positive scores in [`app_score`]; negative ones pass as is.
    pub positive_app_weight: f64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            half_life_ms: 6 * 3_600_000,
            low: 5.0,
            mid: 20.0,
            high: 50.0,
            fatal: 200.0,
            quarantine_at: -25.0,
            disconnect_at: -50.0,
            ban_at: -90.0,
            reward: 0.5,
            reward_interval_ms: 60_000,
            positive_app_weight: 0.25,
        }
    }
}

impl ReputationConfig {
    /// Points an offence of `severity` costs.
    pub fn penalty(&self, severity: Severity) -> f64 {
        match severity {
            Severity::Low => self.low,
            Severity::Mid => self.mid,
            Severity::High => self.high,
            Severity::Fatal => self.fatal,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let penalties = [self.low, self.mid, self.high, self.fatal];
        if penalties.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err("penalties must be finite and non-negative".into());
        }
        if !penalties.is_sorted() {
            return Err(format!(
                "penalties must not decrease with severity (low {} ≤ mid {} ≤ high {} ≤ fatal {})",
                self.low, self.mid, self.high, self.fatal
            ));
        }
        let thresholds = [self.ban_at, self.disconnect_at, self.quarantine_at];
        if thresholds
            .iter()
            .any(|t| !t.is_finite() || *t < MIN_SCORE || *t >= 0.0)
            || !thresholds.is_sorted()
        {
            return Err(format!(
                "thresholds must satisfy {MIN_SCORE} ≤ ban_at {} ≤ disconnect_at {} ≤ \
                 quarantine_at {} < 0",
                self.ban_at, self.disconnect_at, self.quarantine_at
            ));
        }
        if self.half_life_ms == 0 {
            return Err("half_life_ms must be positive".into());
        }
        if !self.reward.is_finite() || self.reward < 0.0 {
            return Err("reward must be finite and non-negative".into());
        }
        if !(0.0..=1.0).contains(&self.positive_app_weight) {
            return Err("positive_app_weight must be within 0..=1".into());
        }
        Ok(())
    }
}

/// `score` after `elapsed_ms` of decay with `half_life_ms` (0: no decay).
pub fn decay(score: f64, elapsed_ms: u64, half_life_ms: u64) -> f64 {
    if half_life_ms == 0 || elapsed_ms == 0 {
        return score;
    }
    // u64 → f64 rounds above 2^53 ms, far beyond any real elapsed time.
    #[allow(clippy::cast_precision_loss)]
    let halvings = elapsed_ms as f64 / half_life_ms as f64;
    score * (-halvings).exp2()
}

/// One peer's reputation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    score: f64,
    at_ms: u64,
}

impl Reputation {
    /// Neutral (0) as of `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            score: 0.0,
            at_ms: now_ms,
        }
    }

    /// The score at `now_ms` (no decay for a `now_ms` before the last change).
    pub fn score(&self, now_ms: u64, half_life_ms: u64) -> f64 {
        decay(self.score, now_ms.saturating_sub(self.at_ms), half_life_ms)
    }

    /// Adds `delta` (negative lowers) to the score at `now_ms`, clamps it to
    /// `[MIN_SCORE, MAX_SCORE]` and returns it. A non-finite delta changes nothing.
    pub fn adjust(&mut self, delta: f64, now_ms: u64, half_life_ms: u64) -> f64 {
        let current = self.score(now_ms, half_life_ms);
        let next = if delta.is_finite() {
            (current + delta).clamp(MIN_SCORE, MAX_SCORE)
        } else {
            current
        };
        self.score = next;
        self.at_ms = self.at_ms.max(now_ms);
        next
    }

    /// Lowers the score for an offence of `severity`; returns the new score.
    pub fn penalize(&mut self, severity: Severity, now_ms: u64, config: &ReputationConfig) -> f64 {
        self.adjust(-config.penalty(severity), now_ms, config.half_life_ms)
    }

    /// The first instant (ms) at which the score, decaying toward 0, is above `level`
    /// (a negative level, such as the quarantine threshold); `None` if it is above it
    /// already at its last change, or if `level` is not negative.
    pub fn rises_above_at(&self, level: f64, half_life_ms: u64) -> Option<u64> {
        if level >= 0.0 || level.is_nan() || self.score > level || half_life_ms == 0 {
            return None;
        }
        // score · 2^(−t/h) = level  ⇔  t = h · log2(score / level); the ratio is ≥ 1.
        #[allow(clippy::cast_precision_loss)]
        let t = half_life_ms as f64 * (self.score / level).log2();
        // Finite and non-negative: score and level are negative and |score| ≤ 100.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let t = t.floor() as u64;
        Some(self.at_ms.saturating_add(t).saturating_add(1))
    }

    /// The reputation at `now_ms` that rises above the negative `level` at `until_ms`
    /// (how a remembered quarantine is restored after a restart; the inverse of
    /// [`Reputation::rises_above_at`]).
    pub fn rising_above_at(level: f64, until_ms: u64, now_ms: u64, half_life_ms: u64) -> Self {
        let remaining = until_ms.saturating_sub(now_ms);
        let score = if half_life_ms == 0 || !level.is_finite() {
            level
        } else {
            #[allow(clippy::cast_precision_loss)]
            let halvings = remaining as f64 / half_life_ms as f64;
            level * halvings.exp2()
        };
        Self {
            score: score.clamp(MIN_SCORE, MAX_SCORE),
            at_ms: now_ms,
        }
    }

    /// Sets a negative score back to neutral (operator release or unban).
    pub fn forgive(&mut self, now_ms: u64, half_life_ms: u64) {
        let current = self.score(now_ms, half_life_ms);
        self.score = current.max(0.0);
        self.at_ms = self.at_ms.max(now_ms);
    }
}

/// The gossipsub application-specific score for a reputation, meant for
/// `PeerScoreParams::app_specific_weight = 1.0`: negative reputation passes unchanged (so
/// the immune layer's disconnect threshold, −50, lines up with the node's publish
/// threshold, and a ban, ≤ −90, falls below its graylist threshold, −80); positive
/// reputation is scaled by `positive_app_weight` so standing earned here cannot mask
/// gossipsub's own delivery penalties.
pub fn app_score(reputation: f64, config: &ReputationConfig) -> f64 {
    if reputation.is_nan() {
        0.0
    } else if reputation > 0.0 {
        reputation * config.positive_app_weight
    } else {
        reputation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn named_penalties_and_thresholds() {
        let c = ReputationConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let mut r = Reputation::new(0);
        assert_eq!(r.penalize(Severity::Low, 0, &c), -5.0);
        assert_eq!(r.penalize(Severity::Mid, 0, &c), -25.0);
        assert!(r.score(0, c.half_life_ms) <= c.quarantine_at);
        assert_eq!(r.penalize(Severity::High, 0, &c), -75.0);
        assert_eq!(r.penalize(Severity::Fatal, 0, &c), MIN_SCORE);
        // One fatal offence from the best standing still bans.
        let mut best = Reputation::new(0);
        best.adjust(500.0, 0, c.half_life_ms);
        assert_eq!(best.score(0, c.half_life_ms), MAX_SCORE);
        assert!(best.penalize(Severity::Fatal, 0, &c) <= c.ban_at);
    }

    #[test]
    fn halves_every_half_life() {
        let c = ReputationConfig::default();
        let mut r = Reputation::new(0);
        r.adjust(-80.0, 0, c.half_life_ms);
        assert_eq!(r.score(6 * HOUR, c.half_life_ms), -40.0);
        assert_eq!(r.score(12 * HOUR, c.half_life_ms), -20.0);
        // Time going backwards does not decay (nor grow) the score.
        r.adjust(0.0, 12 * HOUR, c.half_life_ms);
        assert_eq!(r.score(HOUR, c.half_life_ms), -20.0);
        assert_eq!(r.adjust(f64::NAN, 12 * HOUR, c.half_life_ms), -20.0);
    }

    #[test]
    fn forgive_clears_only_negative() {
        let h = ReputationConfig::default().half_life_ms;
        let mut r = Reputation::new(0);
        r.adjust(-60.0, 0, h);
        r.forgive(0, h);
        assert_eq!(r.score(0, h), 0.0);
        r.adjust(30.0, 0, h);
        r.forgive(0, h);
        assert_eq!(r.score(0, h), 30.0);
    }

    #[test]
    fn recovery_instant_round_trips() {
        let c = ReputationConfig::default();
        let h = c.half_life_ms;
        let mut r = Reputation::new(1_000);
        r.adjust(-50.0, 1_000, h);
        // −50 halves to −25 in one half-life: above −25 one millisecond later.
        assert_eq!(
            r.rises_above_at(c.quarantine_at, h),
            Some(1_000 + 6 * HOUR + 1)
        );
        assert!(r.score(1_000 + 6 * HOUR + 1, h) > c.quarantine_at);
        assert!(r.score(1_000 + 6 * HOUR, h) <= c.quarantine_at);
        let back = Reputation::rising_above_at(c.quarantine_at, 1_000 + 6 * HOUR, 1_000 + HOUR, h);
        let want = r.score(1_000 + HOUR, h);
        assert!(
            (back.score(1_000 + HOUR, h) - want).abs() < 1e-9,
            "{back:?} vs {want}"
        );
        assert_eq!(Reputation::new(0).rises_above_at(c.quarantine_at, h), None);
        assert_eq!(r.rises_above_at(0.0, h), None);
        // A score at the floor comes back clamped.
        let deep = Reputation::rising_above_at(-25.0, 100 * HOUR, 0, h);
        assert_eq!(deep.score(0, h), MIN_SCORE);
    }

    #[test]
    fn app_score_mapping() {
        let c = ReputationConfig::default();
        assert_eq!(app_score(-90.0, &c), -90.0);
        assert_eq!(app_score(80.0, &c), 20.0);
        assert_eq!(app_score(0.0, &c), 0.0);
        assert_eq!(app_score(f64::NAN, &c), 0.0);
    }

    #[test]
    fn config_validation_names_the_problem() {
        let bad = ReputationConfig {
            mid: 60.0,
            ..ReputationConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("must not decrease"));
        let bad = ReputationConfig {
            ban_at: -10.0,
            ..ReputationConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("ban_at"));
    }

    fn severity() -> impl Strategy<Value = Severity> {
        prop::sample::select(vec![
            Severity::Low,
            Severity::Mid,
            Severity::High,
            Severity::Fatal,
        ])
    }

    #[derive(Debug, Clone)]
    enum Op {
        Penalize(Severity),
        Reward(f64),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            severity().prop_map(Op::Penalize),
            (-300.0..300.0f64).prop_map(Op::Reward),
            (0u64..48 * HOUR).prop_map(Op::Wait),
        ]
    }

    fn run(ops: &[Op], c: &ReputationConfig) -> (Reputation, u64) {
        let mut r = Reputation::new(0);
        let mut now = 0;
        for op in ops {
            match op {
                Op::Penalize(s) => {
                    r.penalize(*s, now, c);
                }
                Op::Reward(d) => {
                    r.adjust(*d, now, c.half_life_ms);
                }
                Op::Wait(dt) => now += dt,
            }
        }
        (r, now)
    }

    proptest! {
        #[test]
        fn always_within_bounds(ops in prop::collection::vec(op(), 0..40), probe in 0u64..1_000 * HOUR) {
            let c = ReputationConfig::default();
            let (r, now) = run(&ops, &c);
            for t in [now, now + probe, probe] {
                let s = r.score(t, c.half_life_ms);
                prop_assert!((MIN_SCORE..=MAX_SCORE).contains(&s), "{s}");
            }
        }

        #[test]
        fn decays_toward_zero_monotonically(
            ops in prop::collection::vec(op(), 0..20),
            mut steps in prop::collection::vec(0u64..100 * HOUR, 1..10),
        ) {
            let c = ReputationConfig::default();
            let (r, now) = run(&ops, &c);
            steps.sort_unstable();
            let start = r.score(now, c.half_life_ms);
            let mut last = start;
            for dt in steps {
                let s = r.score(now + dt, c.half_life_ms);
                // Never crosses zero, never moves away from it.
                prop_assert!(s.abs() <= last.abs());
                prop_assert!(s == 0.0 || s.signum() == start.signum());
                last = s;
            }
        }

        #[test]
        fn worse_severity_never_leaves_a_higher_score(
            ops in prop::collection::vec(op(), 0..20),
            a in severity(),
            b in severity(),
            later in 0u64..100 * HOUR,
        ) {
            let c = ReputationConfig::default();
            let (r, now) = run(&ops, &c);
            let (worse, milder) = if a >= b { (a, b) } else { (b, a) };
            let (mut rw, mut rm) = (r, r);
            let sw = rw.penalize(worse, now, &c);
            let sm = rm.penalize(milder, now, &c);
            prop_assert!(sw <= sm);
            prop_assert!(rw.score(now + later, c.half_life_ms) <= rm.score(now + later, c.half_life_ms));
        }
    }
}
