//! Small signed messages: gossip signals and agent-to-agent coordination.
//!
//! Gossip carries [`ThreatSignal`], [`CapabilityAd`], [`Intent`] and [`Heads`]; the agent
//! mesh verbs are [`Help`], [`Offer`], [`Proposal`], [`BuildOn`] and [`Broadcast`]; a
//! [`DirectMessage`] goes from one agent to another over a direct stream. Each is
//! a [`Payload`] sealed in an envelope of its own kind, with the size limit its kind sets
//! ([`Kind::max_payload_bytes`]) and field limits checked by `validate`, on sealing and on
//! opening alike.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::entry::{Score, Tier};
use crate::envelope::{EnvelopeId, Kind, Payload};
use crate::identity::PublicKey;
use crate::key::{Pattern, Space};

/// Largest evidence carried inline in a threat signal.
pub const MAX_EVIDENCE_BYTES: usize = 8 * 1024;
/// Longest agent name.
pub const MAX_NAME_BYTES: usize = 64;
/// Most capabilities in one ad.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability description.
pub const MAX_DESCRIPTION_BYTES: usize = 256;
/// Most exposure patterns in one ad.
pub const MAX_EXPOSES: usize = 16;
/// Longest intent topic.
pub const MAX_TOPIC_BYTES: usize = 128;
/// Most heads in one announcement.
pub const MAX_HEADS: usize = 64;
/// Longest help request.
pub const MAX_NEED_BYTES: usize = 1024;
/// Longest proposal or build-on body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest proposal title.
pub const MAX_TITLE_BYTES: usize = 256;
/// Longest broadcast.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest direct message.
pub const MAX_DIRECT_BYTES: usize = 16 * 1024;

fn limit(field: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        Err(format!("{field} is {len} long, the limit is {max}"))
    } else {
        Ok(())
    }
}

fn non_empty(field: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        Err(format!("{field} is empty"))
    } else {
        Ok(())
    }
}

/// What a reported peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ThreatKind {
    /// Sent something with a signature that does not verify.
    Forgery,
    /// Wrote outside its own subtree.
    Trespass,
    /// Signed two different records with the same sequence number.
    Equivocation,
    /// Sent undecodable or oversized frames.
    Malformed,
    /// Sent far more than its usual rate.
    RateAnomaly,
    /// Repeated the same content over and over.
    Flooding,
    /// Replayed content already rejected.
    Replay,
    /// Spent others' budgets on purpose.
    BudgetAbuse,
    /// Claimed or joined without the capability.
    CapabilityViolation,
}

/// How bad an offence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Noise.
    Low,
    /// Suspicious.
    Mid,
    /// Harmful.
    High,
    /// Proof of malice (for example a forged signature).
    Fatal,
}

/// A report that `offender` misbehaved, signed by the reporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatSignal {
    /// Space where it happened.
    pub space: Space,
    /// Who misbehaved.
    pub offender: PublicKey,
    /// What they did.
    pub kind: ThreatKind,
    /// How bad.
    pub severity: Severity,
    /// SHA-256 of the evidence.
    #[serde(with = "serde_bytes")]
    pub evidence_hash: [u8; 32],
    /// The evidence itself, when small and self-verifying (a forged change, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<ByteBuf>,
}

impl Payload for ThreatSignal {
    const KIND: Kind = Kind::ThreatSignal;

    fn validate(&self) -> Result<(), String> {
        if let Some(evidence) = &self.evidence {
            limit("evidence", evidence.len(), MAX_EVIDENCE_BYTES)?;
        }
        Ok(())
    }
}

/// One capability an agent offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// Short name, such as `fact_check`.
    pub name: String,
    /// What it means, for matching help requests.
    pub description: String,
}

/// A key pattern an agent exposes, and at which tier at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exposure {
    /// Keys covered.
    pub pattern: Pattern,
    /// Highest tier they are exposed at.
    pub tier: Tier,
}

/// What an agent can do and what it exposes, signed, versioned and expiring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityAd {
    /// Space the ad is for.
    pub space: Space,
    /// The agent's name.
    pub name: String,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
    /// Patterns exposed and their tiers.
    #[serde(default)]
    pub exposes: Vec<Exposure>,
    /// Increases with each new ad from the same agent; the highest wins.
    pub version: u64,
    /// After this instant (ms since the Unix epoch) the ad no longer counts.
    pub expires_at_ms: u64,
}

impl CapabilityAd {
    /// Whether the ad lists `capability` by name.
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.name == capability)
    }
}

impl Payload for CapabilityAd {
    const KIND: Kind = Kind::CapabilityAd;

    fn validate(&self) -> Result<(), String> {
        non_empty("name", &self.name)?;
        limit("name", self.name.len(), MAX_NAME_BYTES)?;
        limit("capabilities", self.capabilities.len(), MAX_CAPABILITIES)?;
        for cap in &self.capabilities {
            non_empty("capability name", &cap.name)?;
            limit("capability name", cap.name.len(), MAX_NAME_BYTES)?;
            limit(
                "capability description",
                cap.description.len(),
                MAX_DESCRIPTION_BYTES,
            )?;
        }
        limit("exposes", self.exposes.len(), MAX_EXPOSES)
    }
}

/// An intent signal for quorum sensing: "I want to work on `topic` this much".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Space of the intent.
    pub space: Space,
    /// Topic, free text.
    pub topic: String,
    /// Strength, 0.0 to 1.0.
    pub strength: Score,
}

impl Payload for Intent {
    const KIND: Kind = Kind::Intent;

    fn validate(&self) -> Result<(), String> {
        non_empty("topic", &self.topic)?;
        limit("topic", self.topic.len(), MAX_TOPIC_BYTES)
    }
}

/// Which replicated document of a space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocRef {
    /// The space's public document.
    Public,
    /// An owner's trusted document.
    Trusted(PublicKey),
}

/// A document's current heads, announced so peers sync promptly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heads {
    /// Space of the document.
    pub space: Space,
    /// Which document.
    pub doc: DocRef,
    /// Automerge change hashes of the heads.
    pub heads: Vec<ByteBuf>,
}

impl Payload for Heads {
    const KIND: Kind = Kind::Heads;

    fn validate(&self) -> Result<(), String> {
        limit("heads", self.heads.len(), MAX_HEADS)?;
        match self.heads.iter().find(|h| h.len() != 32) {
            Some(bad) => Err(format!("a head has {} bytes, expected 32", bad.len())),
            None => Ok(()),
        }
    }
}

/// "Who can help with …?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Help {
    /// Space asked in.
    pub space: Space,
    /// The need, in words.
    pub need: String,
    /// Offers after this instant (ms since the Unix epoch) are not considered.
    pub deadline_ms: u64,
}

impl Payload for Help {
    const KIND: Kind = Kind::Help;

    fn validate(&self) -> Result<(), String> {
        non_empty("need", &self.need)?;
        limit("need", self.need.len(), MAX_NEED_BYTES)
    }
}

/// An answer to a help request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Space of the request.
    pub space: Space,
    /// Id of the help request answered.
    pub help: EnvelopeId,
    /// The capability offered.
    pub capability: String,
    /// Confidence, 0.0 to 1.0.
    pub confidence: Score,
}

impl Payload for Offer {
    const KIND: Kind = Kind::Offer;

    fn validate(&self) -> Result<(), String> {
        non_empty("capability", &self.capability)?;
        limit("capability", self.capability.len(), MAX_NAME_BYTES)
    }
}

/// A proposal put to the space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Space of the proposal.
    pub space: Space,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
}

impl Payload for Proposal {
    const KIND: Kind = Kind::Proposal;

    fn validate(&self) -> Result<(), String> {
        non_empty("title", &self.title)?;
        limit("title", self.title.len(), MAX_TITLE_BYTES)?;
        limit("body", self.body.len(), MAX_BODY_BYTES)
    }
}

/// A contribution building on an earlier record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildOn {
    /// Space of the thread.
    pub space: Space,
    /// The record built on.
    pub parent: EnvelopeId,
    /// The contribution.
    pub body: String,
}

impl Payload for BuildOn {
    const KIND: Kind = Kind::BuildOn;

    fn validate(&self) -> Result<(), String> {
        non_empty("body", &self.body)?;
        limit("body", self.body.len(), MAX_BODY_BYTES)
    }
}

/// A message to every agent of a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    /// Space broadcast to.
    pub space: Space,
    /// The message.
    pub message: String,
}

impl Payload for Broadcast {
    const KIND: Kind = Kind::Broadcast;

    fn validate(&self) -> Result<(), String> {
        non_empty("message", &self.message)?;
        limit("message", self.message.len(), MAX_MESSAGE_BYTES)
    }
}

/// A message from one agent to another, sent over a direct stream between their nodes.
/// The recipient is signed with it, so a message cannot be replayed to someone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectMessage {
    /// The space whose rules (trust, accept policy) the message is judged by.
    pub space: Space,
    /// The agent it is for.
    pub to: PublicKey,
    /// The message.
    pub message: String,
    /// The earlier message (its envelope id) this one answers, threading a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<EnvelopeId>,
    /// An entry of the medium the message refers to (a result, a draft to look at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EnvelopeId>,
}

impl Payload for DirectMessage {
    const KIND: Kind = Kind::Direct;

    fn validate(&self) -> Result<(), String> {
        non_empty("message", &self.message)?;
        limit("message", self.message.len(), MAX_DIRECT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, EnvelopeError, MAX_FRAME_BYTES};
    use crate::identity::Keypair;

    fn space() -> Space {
        Space::default_space()
    }

    fn round_trip<P: Payload + PartialEq + std::fmt::Debug>(payload: P) {
        let kp = Keypair::from_seed(&[5; 32]);
        let env = Envelope::seal(&kp, 10, &payload).unwrap();
        assert_eq!(env.kind(), P::KIND);
        let back = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, 10).unwrap();
        assert_eq!(back.open::<P>().unwrap(), payload);
    }

    /// The largest valid instance of each payload must fit its kind's limit.
    #[test]
    fn every_signal_round_trips_and_its_largest_form_fits() {
        let kp = Keypair::from_seed(&[5; 32]);
        let long = |n: usize| "x".repeat(n);
        round_trip(ThreatSignal {
            space: space(),
            offender: kp.public(),
            kind: ThreatKind::Forgery,
            severity: Severity::Fatal,
            evidence_hash: [1; 32],
            evidence: Some(ByteBuf::from(vec![0; MAX_EVIDENCE_BYTES])),
        });
        round_trip(CapabilityAd {
            space: space(),
            name: long(MAX_NAME_BYTES),
            capabilities: (0..MAX_CAPABILITIES)
                .map(|_| Capability {
                    name: long(MAX_NAME_BYTES),
                    description: long(MAX_DESCRIPTION_BYTES),
                })
                .collect(),
            exposes: (0..MAX_EXPOSES)
                .map(|_| Exposure {
                    pattern: vec!["a".repeat(63); 4].join(".").parse().unwrap(),
                    tier: Tier::Trusted,
                })
                .collect(),
            version: u64::MAX,
            expires_at_ms: u64::MAX,
        });
        round_trip(Intent {
            space: space(),
            topic: long(MAX_TOPIC_BYTES),
            strength: Score::ONE,
        });
        round_trip(Heads {
            space: space(),
            doc: DocRef::Trusted(kp.public()),
            heads: (0..MAX_HEADS).map(|_| ByteBuf::from(vec![7; 32])).collect(),
        });
        round_trip(Help {
            space: space(),
            need: long(MAX_NEED_BYTES),
            deadline_ms: u64::MAX,
        });
        round_trip(Offer {
            space: space(),
            help: EnvelopeId([2; 32]),
            capability: long(MAX_NAME_BYTES),
            confidence: Score::ONE,
        });
        round_trip(Proposal {
            space: space(),
            title: long(MAX_TITLE_BYTES),
            body: long(MAX_BODY_BYTES),
        });
        round_trip(BuildOn {
            space: space(),
            parent: EnvelopeId([3; 32]),
            body: long(MAX_BODY_BYTES),
        });
        round_trip(Broadcast {
            space: space(),
            message: long(MAX_MESSAGE_BYTES),
        });
        round_trip(DirectMessage {
            space: long(crate::key::MAX_SPACE_LEN).parse().unwrap(),
            to: kp.public(),
            message: "é".repeat(MAX_DIRECT_BYTES / 2),
            reply_to: Some(EnvelopeId([4; 32])),
            entry: Some(EnvelopeId([5; 32])),
        });
    }

    #[test]
    fn a_direct_message_is_bounded_and_not_empty() {
        let kp = Keypair::from_seed(&[5; 32]);
        let message = |text: String| DirectMessage {
            space: space(),
            to: kp.public(),
            message: text,
            reply_to: None,
            entry: None,
        };
        assert!(Envelope::seal(&kp, 0, &message("x".repeat(MAX_DIRECT_BYTES))).is_ok());
        let over = Envelope::seal(&kp, 0, &message("x".repeat(MAX_DIRECT_BYTES + 1)));
        assert!(
            matches!(&over, Err(crate::envelope::SealError::Invalid { reason, .. }) if reason.contains("16384")),
            "{over:?}"
        );
        assert!(Envelope::seal(&kp, 0, &message(" \n".into())).is_err());
    }

    #[test]
    fn field_limits_are_checked_on_seal_and_on_open() {
        let kp = Keypair::from_seed(&[5; 32]);
        let too_long = Broadcast {
            space: space(),
            message: "x".repeat(MAX_MESSAGE_BYTES + 1),
        };
        assert!(Envelope::seal(&kp, 0, &too_long).is_err());
        // A peer that skips validation and signs raw bytes is still refused on open.
        let bytes = crate::codec::to_vec(&Intent {
            space: space(),
            topic: String::new(),
            strength: Score::ONE,
        })
        .unwrap();
        let env = Envelope::seal_bytes(&kp, Kind::Intent, 0, bytes).unwrap();
        assert!(matches!(
            env.open::<Intent>(),
            Err(EnvelopeError::InvalidPayload { .. })
        ));
        let bad_heads = Heads {
            space: space(),
            doc: DocRef::Public,
            heads: vec![ByteBuf::from(vec![0; 31])],
        };
        assert!(bad_heads.validate().is_err());
    }
}
