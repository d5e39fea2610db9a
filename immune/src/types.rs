//! What flows in and out of the [`Immune`](crate::Immune) engine: observations from
//! the node, actions for it, operator overrides and quarantine states.

use membrane_protocol::PublicKey;
use membrane_protocol::signals::{CapabilityAd, Severity, ThreatSignal};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, Verdict};
use crate::breaker::{BreakerKey, Transition};
use crate::detectors::{CapabilityAct, ContentHash, Detection, Fault};

/// Which per-peer rate a received message counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Sync frames. They are checked against remembered rejected payloads only: the
    /// records they apply count toward their owners' entry rates through
    /// [`Observation::Applied`].
    Entries,
    /// Gossip messages: rate, duplicate content, replays.
    Gossip,
}

/// An operator's decision, fed in through the node's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "peer", rename_all = "snake_case")]
pub enum Override {
    /// Lift a quarantine (and any negative score).
    Release(#[serde(with = "crate::text::peer")] PublicKey),
    /// Lift a ban (and any negative score and quarantine).
    Unban(#[serde(with = "crate::text::peer")] PublicKey),
    /// Ban for the configured `ban_ms`.
    Ban(#[serde(with = "crate::text::peer")] PublicKey),
    /// Quarantine until released.
    Quarantine(#[serde(with = "crate::text::peer")] PublicKey),
    /// Declare a peer innocent of what it was reported for.
    Exonerate(#[serde(with = "crate::text::peer")] PublicKey),
}

/// Something the node saw.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Observation {
    /// A peer connected (checked against the memory cells).
    Connected {
        /// The peer.
        peer: PublicKey,
    },
    /// A message or frame arrived from `peer`: checked against remembered rejected
    /// payloads and, for gossip, counted toward its rate and for duplicate content.
    Received {
        /// The sender (for gossip, the origin that signed it).
        peer: PublicKey,
        /// What kind of traffic.
        channel: Channel,
        /// Hash of the payload ([`content_hash`](crate::content_hash)). For gossip, of
        /// what it says rather than when it was sealed, so a copy sealed again counts as
        /// the same content.
        content: ContentHash,
    },
    /// `records` records signed by `owner`, created lately, were applied from sync:
    /// counted toward the owner's entry rate, whoever relayed them.
    Applied {
        /// Their signer.
        owner: PublicKey,
        /// How many.
        records: u32,
    },
    /// The node refused something `peer` sent.
    Rejected {
        /// The sender.
        peer: PublicKey,
        /// The refused record's signer, when it is a valid key.
        author: Option<PublicKey>,
        /// Hash of the refused payload.
        content: ContentHash,
        /// Why.
        fault: Fault,
    },
    /// `owner` signed two different records with the same seq.
    Equivocation {
        /// The signer.
        owner: PublicKey,
        /// The reused seq.
        seq: u64,
        /// Hash of the record held first.
        first: ContentHash,
        /// Hash of the conflicting one.
        second: ContentHash,
    },
    /// `tokens` of `peer`'s content crossed into our agent's context.
    BudgetCharged {
        /// The content's owner.
        peer: PublicKey,
        /// Tokens charged.
        tokens: u64,
    },
    /// `peer` claimed a task or joined a swarm needing `capability`.
    CapabilityUse {
        /// The agent.
        peer: PublicKey,
        /// The capability needed.
        capability: String,
        /// Claim or join.
        act: CapabilityAct,
        /// The newest capability ad held for the peer.
        ad: Option<CapabilityAd>,
    },
    /// `peer` contributed a valid record: a small reward, at most once per interval.
    Contributed {
        /// The contributor.
        peer: PublicKey,
    },
    /// A signed threat signal by `reporter` arrived; the node checked its evidence.
    ThreatReceived {
        /// The signal's author (the envelope's signer).
        reporter: PublicKey,
        /// The signal.
        signal: ThreatSignal,
        /// What the evidence showed.
        verdict: Verdict,
    },
    /// The node verified data that contradicts what `peer` was reported for.
    Exonerated {
        /// The accused.
        peer: PublicKey,
    },
    /// A delegated task toward `agent` for `capability` ended.
    TaskOutcome {
        /// Who took it.
        agent: PublicKey,
        /// What it needed.
        capability: String,
        /// Whether it succeeded.
        success: bool,
    },
    /// Time passed: expire bans and quarantines, prune old reports, move breakers whose
    /// cooldown ended to half-open.
    Tick,
    /// An operator decided.
    Operator(Override),
}

/// Something the node should do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// A peer's reputation dropped; feed `app_score` to gossipsub.
    LowerScore {
        /// The peer.
        peer: PublicKey,
        /// For what.
        severity: Severity,
        /// The new reputation.
        reputation: f64,
        /// The new gossipsub application score.
        app_score: f64,
    },
    /// Stop applying and serving this peer's data.
    Quarantine {
        /// The peer.
        peer: PublicKey,
        /// When it lifts by itself at the earliest (`None`: once the score recovers, or
        /// never for an operator's quarantine).
        until_ms: Option<u64>,
    },
    /// Lift a quarantine.
    Release(PublicKey),
    /// Drop every sync session with this peer.
    DropSessions(PublicKey),
    /// Close connections to this peer (and refuse it while [`Immune::admits`](crate::Immune::admits) is false).
    Disconnect(PublicKey),
    /// Add to the ban gate until `until_ms`.
    Ban {
        /// The peer.
        peer: PublicKey,
        /// Ban end.
        until_ms: u64,
    },
    /// Remove from the ban gate.
    Unban(PublicKey),
    /// Seal and publish this detection as a [`ThreatSignal`]
    /// ([`Detection::to_signal`]) on the space's threats topic.
    PublishThreat(Detection),
    /// A delegation breaker changed state.
    Breaker {
        /// Which.
        key: BreakerKey,
        /// How.
        transition: Transition,
    },
    /// Append this to the audit log.
    Audit(AuditEvent),
}

/// Why a peer is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Its score fell to the quarantine threshold; lifts when it recovers.
    Score,
    /// A quorum of reputable reporters; lifts after `quarantine_ms` once the score allows.
    Quorum,
    /// The operator; lifts only on release.
    Operator,
}

/// A quarantine in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Why.
    pub reason: QuarantineReason,
    /// Since when.
    pub since_ms: u64,
    /// Not before this instant (for a quorum's quarantine).
    pub until_ms: Option<u64>,
}
