//! The local event log: one monotonic sequence over everything the medium integrated.
//!
//! Agents follow it (the node serves it as Server-Sent Events) and resume from a sequence
//! number with [`crate::Medium::events_since`]. It is local to the node: replicas agree on
//! the medium's content, not on the order their logs saw it.

use membrane_protocol::signals::{DocRef, Severity, ThreatKind};
use membrane_protocol::{EnvelopeId, Key, PublicKey, Score, Space, Tier};
use serde::{Deserialize, Serialize};

use crate::index::Conflict;

/// One integrated event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// The local agent exposed an entry.
    Exposed {
        /// Space.
        space: Space,
        /// Entry id.
        id: EnvelopeId,
        /// Key.
        key: Key,
        /// Tier it went out at.
        tier: Tier,
    },
    /// The local agent retracted an entry.
    Retracted {
        /// Space.
        space: Space,
        /// The retracted entry.
        id: EnvelopeId,
        /// Its key.
        key: Key,
    },
    /// The local agent set a trust edge.
    TrustSet {
        /// Space.
        space: Space,
        /// Who.
        trustee: PublicKey,
        /// How much.
        score: Score,
    },
    /// Changes from a peer were merged.
    Merged {
        /// Space.
        space: Space,
        /// Document.
        doc: DocRef,
        /// The peer.
        from: PublicKey,
        /// Changes applied.
        changes: usize,
        /// New records they carried.
        records: usize,
    },
    /// A peer's entry arrived through sync (one event per new entry; read it with a query).
    Arrived {
        /// Space.
        space: Space,
        /// Entry id.
        id: EnvelopeId,
        /// Key.
        key: Key,
        /// Its owner.
        owner: PublicKey,
        /// Its tier.
        tier: Tier,
    },
    /// A peer retracted one of its entries, and the retraction arrived through sync.
    Withdrawn {
        /// Space.
        space: Space,
        /// The retracted entry.
        id: EnvelopeId,
        /// Its key.
        key: Key,
        /// Its owner.
        owner: PublicKey,
    },
    /// A broadcast message arrived from an agent of the space (or this node sent one).
    Broadcast {
        /// Space.
        space: Space,
        /// Who sent it.
        from: PublicKey,
        /// The message.
        message: String,
    },
    /// A verified threat signal arrived (or this node published one).
    Threat {
        /// Space.
        space: Space,
        /// Who reported it.
        reporter: PublicKey,
        /// Who misbehaved.
        offender: PublicKey,
        /// What they did.
        offence: ThreatKind,
        /// How bad.
        severity: Severity,
    },
    /// A swarm changed state (formed, activated, dissolved) or membership.
    Swarm {
        /// Space.
        space: Space,
        /// Its slug.
        slug: String,
        /// `forming`, `active` or `dissolved`.
        state: String,
        /// Members now.
        members: usize,
        /// Why, when dissolved.
        reason: Option<String>,
    },
    /// A task was posted, claimed (or changed hands), completed or failed.
    Task {
        /// Space.
        space: Space,
        /// Its id.
        id: String,
        /// `open`, `claimed`, `completed` or `failed`.
        state: String,
        /// The winning claimant, if any.
        winner: Option<PublicKey>,
    },
    /// Intents on a topic reached a quorum, or decayed below it.
    Intent {
        /// Space.
        space: Space,
        /// The topic, normalised.
        topic: String,
        /// `quorum` or `dispersed`.
        state: String,
        /// The agents whose intent counts now.
        agents: Vec<PublicKey>,
        /// Sum of the decayed strengths.
        concentration: f64,
    },
    /// A role the medium suggests for this node's agent, with the reason; the agent is free
    /// to ignore it.
    Role {
        /// Space.
        space: Space,
        /// `coordinate`, `fill_gap` or `mediate`.
        role: String,
        /// What it is about: a swarm, task, help request or key.
        subject: String,
        /// Why.
        reason: String,
    },
    /// Two owners disagree on a key.
    Conflict {
        /// Space.
        space: Space,
        /// The conflict.
        conflict: Conflict,
    },
    /// Something needs the agent's (and its operator's) attention: facts of different
    /// owners contradict each other on one key, or an entry verified by others was
    /// disputed. Written by the node, which also audits it.
    Escalation {
        /// Space.
        space: Space,
        /// The contested key.
        key: Key,
        /// The entries involved.
        entries: Vec<EnvelopeId>,
        /// Their owners (for a dispute: the entry's owner, then the disputers).
        owners: Vec<PublicKey>,
        /// What the conflict is, in words.
        reason: String,
    },
    /// A `warn` token budget was spent in its window: answers still cross. Written by
    /// the node.
    Budget {
        /// The space of the answer that spent it.
        space: Space,
        /// `agent` (the agent's own budget) or `space` (the space's).
        scope: String,
        /// Tokens used in the window.
        used: u64,
        /// The window's limit.
        limit: u64,
    },
    /// A direct message to or from this node's agent, acknowledged by its receiver (the
    /// receiver logs it on accepting it, the sender on the acknowledgement).
    Direct {
        /// The space whose rules judged it.
        space: Space,
        /// The message's envelope id (what a reply names).
        id: EnvelopeId,
        /// Its sender.
        from: PublicKey,
        /// Its recipient.
        to: PublicKey,
        /// The message it answers, if any.
        reply_to: Option<EnvelopeId>,
        /// An entry of the medium it refers to, if any.
        entry: Option<EnvelopeId>,
        /// The text.
        message: String,
        /// Its tokens as the receiver counted (and charged) them.
        tokens: u64,
        /// When this node accepted it (receiver) or had it acknowledged (sender), ms since
        /// the Unix epoch, by this node's clock.
        at_ms: u64,
    },
    /// This node's agent fanned a task out to several agents over direct messages.
    FanOut {
        /// Space.
        space: Space,
        /// The fan-out's id (what `gather` names).
        id: String,
        /// The task's first words.
        task: String,
        /// Results count until this instant, ms since the Unix epoch.
        deadline_ms: u64,
        /// Each agent addressed and what became of its message.
        targets: Vec<FanOutTarget>,
    },
    /// A peer's change was refused.
    Rejected {
        /// Space.
        space: Space,
        /// Document.
        doc: DocRef,
        /// The peer.
        from: PublicKey,
        /// Why.
        reason: String,
    },
}

/// One agent a fan-out addressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutTarget {
    /// Who.
    pub agent: PublicKey,
    /// The message it accepted (its replies name this id), if it accepted one.
    pub message: Option<EnvelopeId>,
    /// Why the message did not reach it, if it did not.
    pub failed: Option<String>,
}
