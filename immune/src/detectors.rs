//! Detectors: pure functions (and small per-peer trackers) that turn what the node saw
//! into [`Detection`]s.
//!
//! Each returns the detections an observation proves, with the offender, the
//! [`ThreatKind`], a [`Severity`] and, when the offence is a piece of content, its hash
//! (which then goes into the memory cells so a replay is refused at once). None of them
//! touches a clock: the trackers take `now_ms`.

use std::collections::BTreeMap;

use membrane_protocol::PublicKey;
use membrane_protocol::cost::{Budget, BudgetAction};
use membrane_protocol::signals::{CapabilityAd, Severity, ThreatKind, ThreatSignal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of a payload: how rejected content is remembered.
pub type ContentHash = [u8; 32];

/// The SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    Sha256::digest(bytes).into()
}

/// One offence found, by us or (once verified) by a reporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// Who misbehaved.
    #[serde(with = "crate::text::peer")]
    pub offender: PublicKey,
    /// What they did.
    pub kind: ThreatKind,
    /// How bad.
    pub severity: Severity,
    /// Hash of the offending content, remembered so a replay is refused.
    #[serde(default, with = "crate::text::opt_hex")]
    pub evidence_hash: Option<ContentHash>,
    /// Why, in words, for logs and the audit trail.
    pub reason: String,
}

impl Detection {
    fn new(offender: PublicKey, kind: ThreatKind, severity: Severity, reason: String) -> Self {
        Self {
            offender,
            kind,
            severity,
            evidence_hash: None,
            reason,
        }
    }

    fn with_evidence(mut self, hash: ContentHash) -> Self {
        self.evidence_hash = Some(hash);
        self
    }

    /// The gossip signal for this detection in `space`, for the node to seal and publish.
    /// It carries no evidence bytes: the node attaches the offending frame
    /// (`signal.evidence`) when it is small enough, which is the content whose hash the
    /// detection names. Without an evidence hash the signal names the hash of the reason.
    pub fn to_signal(&self, space: membrane_protocol::Space) -> ThreatSignal {
        ThreatSignal {
            space,
            offender: self.offender,
            kind: self.kind,
            severity: self.severity,
            evidence_hash: self
                .evidence_hash
                .unwrap_or_else(|| content_hash(self.reason.as_bytes())),
            evidence: None,
        }
    }
}

/// The severity each kind carries when we establish it ourselves. A verified report is
/// held to this, whatever severity its reporter claimed.
pub fn default_severity(kind: ThreatKind) -> Severity {
    match kind {
        ThreatKind::Forgery => Severity::Fatal,
        ThreatKind::Trespass | ThreatKind::Equivocation => Severity::High,
        ThreatKind::Malformed
        | ThreatKind::Replay
        | ThreatKind::BudgetAbuse
        | ThreatKind::CapabilityViolation => Severity::Mid,
        // Kinds added to the protocol later default to the mildest.
        _ => Severity::Low,
    }
}

/// Why the medium (or the node's frame check) refused something a peer sent; the node
/// maps `membrane_crdt::RejectReason` onto this one to one (equivocation has its own
/// detector, [`equivocation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// A signature that does not verify, or a record signed by someone else.
    Forged,
    /// A change that came without its signature.
    Unsigned,
    /// A validly signed write outside the author's own records.
    Trespass,
    /// Bytes that do not decode.
    Undecodable,
    /// A frame larger than its limit.
    Oversize,
    /// Automerge panicked on the change.
    Panicked,
    /// Dependencies never arrived.
    MissingDeps,
}

/// Detections for content `content` that `peer` sent and the node refused for `fault`.
/// `author` is the signer of the refused record, when it is a valid key.
///
/// Forged, unsigned and malformed content is the sender's fault: an honest node
/// validates before it stores, so it never relays such content. A trespass is signed, so
/// its author answers for it; a different sender relayed what it should have refused
/// and earns a low-severity mark.
pub fn rejected(
    peer: PublicKey,
    author: Option<PublicKey>,
    content: ContentHash,
    fault: Fault,
) -> Vec<Detection> {
    match fault {
        Fault::Forged | Fault::Unsigned => vec![
            Detection::new(
                peer,
                ThreatKind::Forgery,
                Severity::Fatal,
                format!("sent a {} record", fault_word(fault)),
            )
            .with_evidence(content),
        ],
        Fault::Trespass => {
            let author = author.unwrap_or(peer);
            let mut out = vec![
                Detection::new(
                    author,
                    ThreatKind::Trespass,
                    Severity::High,
                    "signed a write outside its own records".into(),
                )
                .with_evidence(content),
            ];
            if author != peer {
                out.push(
                    Detection::new(
                        peer,
                        ThreatKind::Trespass,
                        Severity::Low,
                        format!("relayed a trespassing change by {author}"),
                    )
                    .with_evidence(content),
                );
            }
            out
        }
        Fault::Undecodable | Fault::Oversize | Fault::Panicked => vec![
            Detection::new(
                peer,
                ThreatKind::Malformed,
                Severity::Mid,
                format!("sent an {} frame", fault_word(fault)),
            )
            .with_evidence(content),
        ],
        // Not the content's fault: it may be valid once its dependencies arrive, so it
        // is not remembered as rejected.
        Fault::MissingDeps => vec![Detection::new(
            peer,
            ThreatKind::Malformed,
            Severity::Low,
            "sent changes whose dependencies never arrived".into(),
        )],
    }
}

fn fault_word(fault: Fault) -> &'static str {
    match fault {
        Fault::Forged => "forged",
        Fault::Unsigned => "unsigned",
        Fault::Trespass => "trespassing",
        Fault::Undecodable => "undecodable",
        Fault::Oversize => "oversized",
        Fault::Panicked => "unprocessable",
        Fault::MissingDeps => "dependency-less",
    }
}

/// Detections for `owner` signing two different records (`first`, `second`) with the same
/// owner `seq`. Both signatures are the owner's, so the owner answers for it, not
/// whoever relayed the halves. The second record is the one remembered as rejected.
/// The same content twice is not an equivocation.
pub fn equivocation(
    owner: PublicKey,
    seq: u64,
    first: ContentHash,
    second: ContentHash,
) -> Vec<Detection> {
    if first == second {
        return Vec::new();
    }
    vec![
        Detection::new(
            owner,
            ThreatKind::Equivocation,
            Severity::High,
            format!("signed two different records with seq {seq}"),
        )
        .with_evidence(second),
    ]
}

/// What an agent tried to do with a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapabilityAct {
    /// Claimed a task that needs it.
    Claim,
    /// Joined a swarm that needs it.
    Join,
}

/// A detection if `peer` claimed or joined with `capability` that its current ad (`ad`,
/// the newest the node holds) does not list. An ad that expired is a milder offence than
/// none at all.
pub fn capability_violation(
    peer: PublicKey,
    capability: &str,
    act: CapabilityAct,
    ad: Option<&CapabilityAd>,
    now_ms: u64,
) -> Option<Detection> {
    let verb = match act {
        CapabilityAct::Claim => "claimed",
        CapabilityAct::Join => "joined",
    };
    let (severity, why) = match ad {
        None => (Severity::Mid, "with no capability ad"),
        Some(ad) if !ad.has(capability) => (Severity::Mid, "without listing it in its ad"),
        Some(ad) if now_ms > ad.expires_at_ms => (Severity::Low, "with an expired ad"),
        Some(_) => return None,
    };
    Some(Detection::new(
        peer,
        ThreatKind::CapabilityViolation,
        severity,
        format!("{verb} with capability {capability:?} {why}"),
    ))
}

/// Rate-anomaly settings for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Length of one counting bucket.
    pub bucket_ms: u64,
    /// EWMA weight of the newest bucket.
    pub alpha: f64,
    /// Buckets observed before the peer's own history counts; until then the threshold
    /// is the floor.
    pub warmup_buckets: u32,
    /// How many standard deviations above the mean is anomalous.
    pub sigmas: f64,
    /// A bucket count at or below this is never anomalous: the most any peer may send
    /// before it has a history (idle peers have σ ≈ 0, and a burst from nothing is what
    /// an honest heavy writer does when it starts).
    pub floor: u32,
    /// The most a peer's history may raise the threshold to.
    pub ceiling: u32,
}

impl RateConfig {
    /// Records signed by one owner: 5 s buckets, floor 2,500 (500/s, five times an
    /// honest heavy writer's 100/s), ceiling 10,000 (2,000/s).
    pub fn entries() -> Self {
        Self {
            bucket_ms: 5_000,
            alpha: 0.1,
            warmup_buckets: 12,
            sigmas: 4.0,
            floor: 2_500,
            ceiling: 10_000,
        }
    }

    /// Gossip messages from one origin: 5 s buckets, floor 250 (50/s; an honest node
    /// sends a few a second: coalesced heads, its ads, its threat reports), ceiling
    /// 1,000 (200/s).
    pub fn gossip() -> Self {
        Self {
            floor: 250,
            ceiling: 1_000,
            ..Self::entries()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.bucket_ms == 0 {
            return Err("bucket_ms must be positive".into());
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!("alpha is {}, expected within (0, 1]", self.alpha));
        }
        if !self.sigmas.is_finite() || self.sigmas < 0.0 {
            return Err("sigmas must be finite and non-negative".into());
        }
        if self.floor == 0 || self.floor > self.ceiling {
            return Err(format!(
                "floor {} and ceiling {}: expected 0 < floor ≤ ceiling",
                self.floor, self.ceiling
            ));
        }
        Ok(())
    }
}

/// A bucket whose count crossed the anomaly threshold, or doubled it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTrip {
    /// Events in the bucket when it crossed.
    pub count: u32,
    /// The level it crossed: the threshold times 2^`doublings`.
    pub threshold: f64,
    /// How many times the threshold doubled to make that level (0: the threshold).
    pub doublings: u32,
    /// The EWMA mean per bucket before this bucket.
    pub mean: f64,
}

/// From this many doublings of the threshold on (four times it), a rate is a flood rather
/// than a busy peer, and each further level is a mid-severity offence.
pub const FLOOD_DOUBLINGS: u32 = 2;

/// EWMA mean and variance of events per bucket for one peer and channel.
///
/// Closed buckets update the mean and variance (Finch, *Incremental calculation of
/// weighted mean and variance*, 2009). The open bucket trips when its count first exceeds
/// the threshold, `max(mean + sigmas·σ, floor)` capped at the ceiling after warm-up and
/// the floor before, and again at every doubling of it: a peer just over the line is
/// marked once, one at four times it three times (the third mid, see
/// [`FLOOD_DOUBLINGS`]), so a flood far above normal is shut out within one bucket while a
/// busy peer is only marked. Counts fed into the average are capped at the threshold, so
/// a flood does not quickly become the new normal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateTracker {
    bucket_start_ms: u64,
    count: u32,
    mean: f64,
    var: f64,
    buckets: u32,
    trips: u32,
}

/// After this many empty buckets in a row the average is zero for every practical
/// purpose (0.9^200 ≈ 7e-10), so longer gaps are not iterated.
const MAX_EMPTY_BUCKETS: u64 = 200;

/// Most trips in one bucket: the threshold doubled 31 times is beyond any `u32` count.
const MAX_TRIPS_PER_BUCKET: u32 = 32;

impl RateTracker {
    /// A tracker whose first bucket starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            bucket_start_ms: now_ms,
            count: 0,
            mean: 0.0,
            var: 0.0,
            buckets: 0,
            trips: 0,
        }
    }

    /// The anomaly threshold for the open bucket.
    pub fn threshold(&self, config: &RateConfig) -> f64 {
        let floor = f64::from(config.floor);
        if self.buckets < config.warmup_buckets {
            return floor;
        }
        let deviation = self.mean + config.sigmas * self.var.max(0.0).sqrt();
        deviation.max(floor).min(f64::from(config.ceiling))
    }

    /// Counts one event at `now_ms`; `Some` when the open bucket crosses its threshold or
    /// doubles it again.
    pub fn observe(&mut self, now_ms: u64, config: &RateConfig) -> Option<RateTrip> {
        self.observe_n(now_ms, 1, config).pop()
    }

    /// Counts `n` events at `now_ms`; one trip for every level (the threshold, twice it,
    /// four times it, …) the open bucket's count crossed with them.
    pub fn observe_n(&mut self, now_ms: u64, n: u32, config: &RateConfig) -> Vec<RateTrip> {
        self.roll(now_ms, config);
        self.count = self.count.saturating_add(n);
        let threshold = self.threshold(config);
        let mut trips = Vec::new();
        while self.trips < MAX_TRIPS_PER_BUCKET {
            let level = threshold * f64::from(self.trips).exp2();
            if f64::from(self.count) <= level {
                break;
            }
            trips.push(RateTrip {
                count: self.count,
                threshold: level,
                doublings: self.trips,
                mean: self.mean,
            });
            self.trips += 1;
        }
        trips
    }

    /// Closes every bucket that ended by `now_ms`.
    fn roll(&mut self, now_ms: u64, config: &RateConfig) {
        let elapsed = now_ms.saturating_sub(self.bucket_start_ms);
        let closed = elapsed / config.bucket_ms;
        if closed == 0 {
            return;
        }
        let threshold = self.threshold(config);
        self.push(f64::from(self.count).min(threshold), config.alpha);
        let empty = closed - 1;
        for _ in 0..empty.min(MAX_EMPTY_BUCKETS) {
            self.push(0.0, config.alpha);
        }
        if empty > MAX_EMPTY_BUCKETS {
            (self.mean, self.var) = (0.0, 0.0);
        }
        self.buckets = self
            .buckets
            .saturating_add(u32::try_from(closed).unwrap_or(u32::MAX));
        self.bucket_start_ms += closed * config.bucket_ms;
        self.count = 0;
        self.trips = 0;
    }

    fn push(&mut self, x: f64, alpha: f64) {
        let diff = x - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
    }

    /// The mean events per bucket.
    pub fn mean(&self) -> f64 {
        self.mean
    }
}

/// The detection for a rate trip on `channel` (`"entries"` or `"gossip"`): low, mid from
/// [`FLOOD_DOUBLINGS`] doublings of the threshold on.
pub fn rate_anomaly(peer: PublicKey, channel: &str, trip: RateTrip) -> Detection {
    let severity = if trip.doublings >= FLOOD_DOUBLINGS {
        Severity::Mid
    } else {
        Severity::Low
    };
    Detection::new(
        peer,
        ThreatKind::RateAnomaly,
        severity,
        format!(
            "{} {channel} in one bucket, above the threshold {:.1} (mean {:.1})",
            trip.count, trip.threshold, trip.mean
        ),
    )
}

/// Duplicate-content flooding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodConfig {
    /// Copies of the same content within `window_ms` that count as flooding.
    pub copies: u32,
    /// The window copies are counted in.
    pub window_ms: u64,
    /// Distinct contents remembered per peer (the oldest goes first).
    pub max_tracked: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            copies: 5,
            window_ms: 60_000,
            max_tracked: 32,
        }
    }
}

/// Recent contents from one peer and how often each came.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodTracker {
    seen: BTreeMap<ContentHash, (u64, u32)>,
}

impl FloodTracker {
    /// Counts one arrival of `content` from `peer`; a detection when it is the
    /// `copies`-th within the window (the count then starts again).
    pub fn observe(
        &mut self,
        peer: PublicKey,
        content: ContentHash,
        now_ms: u64,
        config: &FloodConfig,
    ) -> Option<Detection> {
        if !self.seen.contains_key(&content) && self.seen.len() >= config.max_tracked.max(1) {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(hash, (first, _))| (*first, **hash))
                .map(|(hash, _)| *hash);
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
        let slot = self.seen.entry(content).or_insert((now_ms, 0));
        if now_ms.saturating_sub(slot.0) >= config.window_ms {
            *slot = (now_ms, 0);
        }
        slot.1 += 1;
        if slot.1 >= config.copies {
            *slot = (now_ms, 0);
            return Some(
                Detection::new(
                    peer,
                    ThreatKind::Flooding,
                    Severity::Low,
                    format!(
                        "sent the same content {} times within {} s",
                        config.copies,
                        config.window_ms / 1_000
                    ),
                )
                .with_evidence(content),
            );
        }
        None
    }
}

/// Budget-abuse settings: how many tokens one peer's content may cost our agent per
/// window before it counts as abuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetAbuseConfig {
    /// Tokens per window attributable to one peer.
    pub tokens_per_window: u64,
    /// Window length.
    pub window_ms: u64,
}

impl Default for BudgetAbuseConfig {
    fn default() -> Self {
        Self {
            tokens_per_window: 50_000,
            window_ms: 3_600_000,
        }
    }
}

/// Tokens one peer's content cost our agent, in fixed windows ([`Budget`] in warn mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetTracker {
    budget: Budget,
    tripped_window: Option<u64>,
}

impl BudgetTracker {
    /// A tracker whose first window starts at `now_ms`.
    pub fn new(now_ms: u64, config: &BudgetAbuseConfig) -> Self {
        Self {
            budget: Budget::new(
                config.tokens_per_window,
                config.window_ms,
                BudgetAction::Warn,
                now_ms,
            ),
            tripped_window: None,
        }
    }

    /// Charges `tokens` of `peer`'s content; a detection once per window that goes over.
    pub fn charge(&mut self, peer: PublicKey, tokens: u64, now_ms: u64) -> Option<Detection> {
        let charge = self.budget.charge(tokens, now_ms);
        let window = self.budget.window_start_ms;
        if charge.over && self.tripped_window != Some(window) {
            self.tripped_window = Some(window);
            return Some(Detection::new(
                peer,
                ThreatKind::BudgetAbuse,
                Severity::Mid,
                format!(
                    "its content cost {} tokens in one window, the allowance is {}",
                    charge.used, charge.limit
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::peer;
    use membrane_protocol::signals::Capability;

    #[test]
    fn forged_and_unsigned_are_fatal_for_the_sender() {
        let (p, a, h) = (peer(1), peer(2), [7; 32]);
        for fault in [Fault::Forged, Fault::Unsigned] {
            let d = rejected(p, Some(a), h, fault);
            assert_eq!(d.len(), 1);
            assert_eq!(
                (d[0].offender, d[0].kind, d[0].severity, d[0].evidence_hash),
                (p, ThreatKind::Forgery, Severity::Fatal, Some(h))
            );
        }
        assert_eq!(
            rejected(p, None, h, Fault::Forged)[0].reason,
            "sent a forged record"
        );
    }

    #[test]
    fn trespass_blames_the_author_and_marks_the_relay() {
        let (p, a, h) = (peer(1), peer(2), [7; 32]);
        let d = rejected(p, Some(a), h, Fault::Trespass);
        assert_eq!(
            d.iter()
                .map(|d| (d.offender, d.kind, d.severity))
                .collect::<Vec<_>>(),
            vec![
                (a, ThreatKind::Trespass, Severity::High),
                (p, ThreatKind::Trespass, Severity::Low)
            ]
        );
        let own = rejected(p, Some(p), h, Fault::Trespass);
        assert_eq!(own.len(), 1);
        assert_eq!((own[0].offender, own[0].severity), (p, Severity::High));
    }

    #[test]
    fn malformed_frames() {
        let (p, h) = (peer(1), [9; 32]);
        for (fault, word) in [
            (Fault::Undecodable, "sent an undecodable frame"),
            (Fault::Oversize, "sent an oversized frame"),
            (Fault::Panicked, "sent an unprocessable frame"),
        ] {
            assert_eq!(
                rejected(p, None, h, fault),
                vec![Detection {
                    offender: p,
                    kind: ThreatKind::Malformed,
                    severity: Severity::Mid,
                    evidence_hash: Some(h),
                    reason: word.into(),
                }]
            );
        }
        let deps = rejected(p, None, h, Fault::MissingDeps);
        assert_eq!(
            (deps[0].severity, deps[0].evidence_hash),
            (Severity::Low, None)
        );
    }

    #[test]
    fn equivocation_needs_two_different_records() {
        let o = peer(3);
        assert!(equivocation(o, 4, [1; 32], [1; 32]).is_empty());
        assert_eq!(
            equivocation(o, 4, [1; 32], [2; 32]),
            vec![Detection {
                offender: o,
                kind: ThreatKind::Equivocation,
                severity: Severity::High,
                evidence_hash: Some([2; 32]),
                reason: "signed two different records with seq 4".into(),
            }]
        );
    }

    fn ad(caps: &[&str], expires_at_ms: u64) -> CapabilityAd {
        CapabilityAd {
            space: "default".parse().unwrap(),
            name: "agent".into(),
            capabilities: caps
                .iter()
                .map(|c| Capability {
                    name: (*c).into(),
                    description: String::new(),
                })
                .collect(),
            exposes: vec![],
            version: 1,
            expires_at_ms,
        }
    }

    #[test]
    fn capability_checks() {
        let p = peer(1);
        let good = ad(&["fact_check"], 1_000);
        assert_eq!(
            capability_violation(p, "fact_check", CapabilityAct::Claim, Some(&good), 1_000),
            None
        );
        let none = capability_violation(p, "fact_check", CapabilityAct::Join, None, 0).unwrap();
        assert_eq!(
            (none.kind, none.severity, none.reason.as_str()),
            (
                ThreatKind::CapabilityViolation,
                Severity::Mid,
                "joined with capability \"fact_check\" with no capability ad"
            )
        );
        let other = capability_violation(p, "code", CapabilityAct::Claim, Some(&good), 0).unwrap();
        assert_eq!(other.severity, Severity::Mid);
        let stale = capability_violation(p, "fact_check", CapabilityAct::Claim, Some(&good), 1_001)
            .unwrap();
        assert_eq!(
            (stale.severity, stale.reason.as_str()),
            (
                Severity::Low,
                "claimed with capability \"fact_check\" with an expired ad"
            )
        );
    }

    fn small_rate() -> RateConfig {
        RateConfig {
            bucket_ms: 1_000,
            alpha: 0.5,
            warmup_buckets: 3,
            sigmas: 2.0,
            floor: 4,
            ceiling: 20,
        }
    }

    /// Sends `n` events evenly inside the bucket starting at `start`.
    fn burst(t: &mut RateTracker, start: u64, n: u32, c: &RateConfig) -> Vec<(u32, RateTrip)> {
        (0..n)
            .filter_map(|i| t.observe(start + u64::from(i), c).map(|trip| (i + 1, trip)))
            .collect()
    }

    #[test]
    fn rate_is_held_to_the_floor_until_warm_then_to_its_history() {
        let c = small_rate();
        let mut t = RateTracker::new(0);
        // Warm-up: 3 buckets at the floor, nothing trips.
        for b in 0..3 {
            assert!(burst(&mut t, b * 1_000, 4, &c).is_empty());
        }
        // Mean and variance after three 4s from 0 with α = 0.5: (2, 4), (3, 3),
        // (3.5, 1.75); the threshold is then 3.5 + 2·√1.75 ≈ 6.15, above the floor.
        let trips = burst(&mut t, 3_000, 30, &c);
        let threshold = 3.5 + 2.0 * 1.75f64.sqrt();
        assert_eq!(
            trips
                .iter()
                .map(|(nth, trip)| (*nth, trip.threshold))
                .collect::<Vec<_>>(),
            vec![(7, threshold), (13, 2.0 * threshold), (25, 4.0 * threshold)],
            "once over the threshold, once more at each doubling"
        );
        assert!(trips.iter().all(|(_, trip)| trip.mean == 3.5));
        // The next bucket starts over; the flood entered the mean capped at the threshold.
        let next = burst(&mut t, 4_000, 10, &c);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1.mean, 3.5 + 0.5 * (threshold - 3.5));
    }

    #[test]
    fn before_warmup_the_floor_holds_and_a_flood_trips_per_doubling() {
        let c = small_rate();
        let mut t = RateTracker::new(0);
        let trips: Vec<u32> = burst(&mut t, 0, 100, &c)
            .iter()
            .map(|(nth, _)| *nth)
            .collect();
        assert_eq!(trips, vec![5, 9, 17, 33, 65]);
        // Counted at once, the same levels.
        let mut at_once = RateTracker::new(0);
        let trips = at_once.observe_n(0, 100, &c);
        assert_eq!(
            trips.iter().map(|t| t.threshold).collect::<Vec<_>>(),
            vec![4.0, 8.0, 16.0, 32.0, 64.0]
        );
        assert!(trips.iter().all(|t| t.count == 100));
        let severities: Vec<Severity> = trips
            .iter()
            .map(|t| rate_anomaly(peer(1), "gossip", *t).severity)
            .collect();
        assert_eq!(
            severities,
            [
                Severity::Low,
                Severity::Low,
                Severity::Mid,
                Severity::Mid,
                Severity::Mid
            ],
            "from four times the threshold on, a flood"
        );
        assert!(at_once.observe_n(1, 1, &c).is_empty());
    }

    #[test]
    fn history_never_raises_the_threshold_past_the_ceiling() {
        let c = RateConfig {
            ceiling: 5,
            ..small_rate()
        };
        let mut t = RateTracker::new(0);
        for b in 0..3 {
            burst(&mut t, b * 1_000, 4, &c);
        }
        let trips = burst(&mut t, 3_000, 6, &c);
        assert_eq!((trips[0].0, trips[0].1.threshold), (6, 5.0));
        assert!(
            RateConfig {
                floor: 0,
                ..small_rate()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn long_silence_forgets_the_mean() {
        let c = small_rate();
        let mut t = RateTracker::new(0);
        for b in 0..3 {
            burst(&mut t, b * 1_000, 4, &c);
        }
        t.observe(3_000, &c);
        assert!(t.mean() > 3.0);
        t.observe(3_000 + 1_000 * 500, &c);
        assert_eq!(t.mean(), 0.0);
    }

    #[test]
    fn flooding_trips_on_the_nth_copy_within_the_window() {
        let c = FloodConfig::default();
        let p = peer(1);
        let mut f = FloodTracker::default();
        let trips: Vec<u64> = (0..12u64)
            .filter_map(|i| f.observe(p, [1; 32], i * 1_000, &c).map(|_| i))
            .collect();
        assert_eq!(trips, vec![4, 9]);
        // Copies spread wider than the window never trip.
        let mut g = FloodTracker::default();
        assert!((0..20u64).all(|i| g.observe(p, [2; 32], i * 20_000, &c).is_none()));
        // Bounded: many distinct contents keep at most max_tracked.
        for i in 0..200u8 {
            g.observe(p, [i; 32], 0, &c);
        }
        assert_eq!(g.seen.len(), c.max_tracked);
        let d = f
            .observe(p, [3; 32], 0, &FloodConfig { copies: 1, ..c })
            .unwrap();
        assert_eq!(
            (d.kind, d.severity, d.evidence_hash, d.reason.as_str()),
            (
                ThreatKind::Flooding,
                Severity::Low,
                Some([3; 32]),
                "sent the same content 1 times within 60 s"
            )
        );
    }

    #[test]
    fn budget_abuse_once_per_window() {
        let c = BudgetAbuseConfig {
            tokens_per_window: 100,
            window_ms: 1_000,
        };
        let p = peer(1);
        let mut b = BudgetTracker::new(0, &c);
        assert_eq!(b.charge(p, 100, 0), None);
        let d = b.charge(p, 1, 10).unwrap();
        assert_eq!(
            (d.kind, d.severity, d.reason.as_str()),
            (
                ThreatKind::BudgetAbuse,
                Severity::Mid,
                "its content cost 101 tokens in one window, the allowance is 100"
            )
        );
        assert_eq!(b.charge(p, 500, 20), None);
        assert!(b.charge(p, 101, 1_000).is_some());
    }

    #[test]
    fn detection_to_signal() {
        let d = rejected(peer(1), None, [5; 32], Fault::Forged).remove(0);
        let s = d.to_signal("default".parse().unwrap());
        assert_eq!((s.evidence_hash, s.evidence), ([5; 32], None));
        assert_eq!((s.kind, s.severity), (ThreatKind::Forgery, Severity::Fatal));
        let r = rejected(peer(1), None, [5; 32], Fault::MissingDeps).remove(0);
        let s = r.to_signal("default".parse().unwrap());
        assert_eq!(s.evidence_hash, content_hash(r.reason.as_bytes()));
    }

    #[test]
    fn default_severities() {
        assert_eq!(default_severity(ThreatKind::Forgery), Severity::Fatal);
        assert_eq!(default_severity(ThreatKind::Equivocation), Severity::High);
        assert_eq!(default_severity(ThreatKind::RateAnomaly), Severity::Low);
        assert_eq!(default_severity(ThreatKind::Replay), Severity::Mid);
    }
}
