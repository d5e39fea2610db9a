//! Entries: the signed, provenance-carrying records of the shared medium.
//!
//! An entry is an [`EntryBody`] sealed in an [`Envelope`] of kind `entry`: the envelope's
//! author is the entry's owner, its `created_at_ms` the entry's creation time, and its id
//! (the hash of the canonical envelope) the entry's id. Parents name what an entry remixes,
//! so provenance chains are walks over ids; the evidence kind says how the owner knows.
//!
//! Retraction and supersession never delete: they are new signed [`Retraction`] records.
//! Trust is a signed, directed [`TrustEdge`] the truster publishes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EnvelopeError, EnvelopeId, Kind, Payload};
use crate::identity::PublicKey;
use crate::key::{Key, Space, Tag};

/// Largest entry value, in bytes (a digest, not raw tool output).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most tags on an entry.
pub const MAX_TAGS: usize = 16;
/// Most parents an entry may name.
pub const MAX_PARENTS: usize = 32;
/// Longest retraction reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

macro_rules! small_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The number on the wire.
            pub fn code(self) -> u8 {
                match self { $($name::$variant => $code),+ }
            }

            /// The lowercase name agents write.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}: expected one of {}",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u8(self.code())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let code = u8::deserialize(d)?;
                match code {
                    $($code => Ok($name::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "unknown {} code {other}", stringify!($name).to_lowercase()
                    ))),
                }
            }
        }
    };
}

small_enum! {
    /// Who may read an entry. Ordered from most closed to most open.
    Tier {
        /// Only the owner's node; never enters a replicated document.
        Private = 0 => "private",
        /// Peers the owner trusts at or above the threshold.
        Trusted = 1 => "trusted",
        /// Every member of the space.
        Public = 2 => "public",
    }
}

small_enum! {
    /// How the owner knows what the entry says. Ordered from weakest to strongest.
    Evidence {
        /// The agent's opinion.
        AgentOpinion = 0 => "agent_opinion",
        /// A language model's reading of something.
        LlmInterpretation = 1 => "llm_interpretation",
        /// A source outside the swarm (a page, a paper).
        ExternalSource = 2 => "external_source",
        /// The output of a tool run.
        ToolResult = 3 => "tool_result",
    }
}

small_enum! {
    /// What kind of knowledge an entry holds; queries and search filter on it.
    EntryKind {
        /// A claim the owner holds true.
        Fact = 0 => "fact",
        /// A claim the owner is testing.
        Hypothesis = 1 => "hypothesis",
        /// Something found while working.
        Finding = 2 => "finding",
        /// Work in progress.
        Draft = 3 => "draft",
        /// Comments on another entry.
        Feedback = 4 => "feedback",
        /// Work to be done.
        Task = 5 => "task",
        /// The result of a task.
        Result = 6 => "result",
        /// A recorded disagreement.
        Conflict = 7 => "conflict",
        /// A discussion thread.
        Thread = 8 => "thread",
        /// A solution to a problem.
        Solution = 9 => "solution",
        /// About the swarm or the medium itself.
        Meta = 10 => "meta",
        /// A question.
        Question = 11 => "question",
    }
}

/// Why an entry, retraction or trust edge breaks the rules.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// The value is too large.
    #[error("value is {len} bytes, the limit is {max} bytes (store a digest, not raw output)")]
    ValueTooLarge {
        /// Bytes given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Too many tags.
    #[error("{count} tags given, the limit is {MAX_TAGS}")]
    TooManyTags {
        /// Tags given.
        count: usize,
    },
    /// The same tag twice.
    #[error("tag {tag} appears more than once")]
    DuplicateTag {
        /// The repeated tag.
        tag: Tag,
    },
    /// Too many parents.
    #[error("{count} parents given, the limit is {MAX_PARENTS}")]
    TooManyParents {
        /// Parents given.
        count: usize,
    },
    /// The same parent twice.
    #[error("parent {parent} appears more than once")]
    DuplicateParent {
        /// The repeated parent id.
        parent: EnvelopeId,
    },
    /// Sequence numbers start at 1.
    #[error("owner seq must be at least 1")]
    ZeroSeq,
    /// A ttl or half-life of zero.
    #[error("{field} must be positive when given (milliseconds)")]
    ZeroDuration {
        /// "ttl_ms" or "half_life_ms".
        field: &'static str,
    },
    /// A retraction reason that is too long.
    #[error("retraction reason is {len} bytes, the limit is {MAX_REASON_BYTES}")]
    ReasonTooLong {
        /// Bytes given.
        len: usize,
    },
    /// A trust score out of range.
    #[error("trust score {milli}/1000 is out of range: expected 0 to 1000 (0.0 to 1.0)")]
    ScoreOutOfRange {
        /// Score given.
        milli: u32,
    },
    /// Trusting oneself is meaningless.
    #[error("a trust edge must name another agent, not its author")]
    SelfTrust,
}

/// A trust score from 0.0 to 1.0, held in thousandths so it compares and encodes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Score(u16);

impl Score {
    /// No trust.
    pub const ZERO: Score = Score(0);
    /// Full trust.
    pub const ONE: Score = Score(1000);
    /// The default threshold for the trusted tier, 0.5.
    pub const DEFAULT_THRESHOLD: Score = Score(500);

    /// A score in thousandths, 0 to 1000.
    pub fn from_milli(milli: u32) -> Result<Score, EntryError> {
        u16::try_from(milli)
            .ok()
            .filter(|m| *m <= 1000)
            .map(Score)
            .ok_or(EntryError::ScoreOutOfRange { milli })
    }

    /// A score from a float in 0.0..=1.0, rounded to thousandths.
    pub fn from_f64(value: f64) -> Result<Score, EntryError> {
        if !(0.0..=1.0).contains(&value) {
            let milli = if value.is_finite() && value > 0.0 {
                (value * 1000.0).min(f64::from(u32::MAX)) as u32
            } else {
                u32::MAX
            };
            return Err(EntryError::ScoreOutOfRange { milli });
        }
        Ok(Score((value * 1000.0).round() as u16))
    }

    /// Thousandths.
    pub fn milli(self) -> u16 {
        self.0
    }

    /// As a float in 0.0..=1.0.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.as_f64())
    }
}

impl Serialize for Score {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let milli = u32::deserialize(d)?;
        Score::from_milli(milli).map_err(serde::de::Error::custom)
    }
}

/// The signed content of an entry. Owner and creation time come from its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryBody {
    /// The space the entry belongs to (signed, so it cannot be replayed into another).
    #[serde(rename = "sp")]
    pub space: Space,
    /// Dotted key.
    #[serde(rename = "k")]
    pub key: Key,
    /// The digest: the owner's interpretation, not raw output.
    #[serde(rename = "v")]
    pub value: String,
    /// Who may read it.
    #[serde(rename = "t")]
    pub tier: Tier,
    /// Free tags, for accept rules and search.
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// What kind of knowledge it is.
    #[serde(rename = "n")]
    pub kind: EntryKind,
    /// How the owner knows.
    #[serde(rename = "e")]
    pub evidence: Evidence,
    /// Ids of the records this one remixes.
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<EnvelopeId>,
    /// The owner's monotonic sequence number, from 1.
    #[serde(rename = "s")]
    pub seq: u64,
    /// After this many ms past creation the entry expires from queries.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Ranking weight halves every this many ms.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub half_life_ms: Option<u64>,
}

impl EntryBody {
    /// Checks every limit, returning the first violation.
    pub fn check(&self) -> Result<(), EntryError> {
        if self.value.len() > MAX_VALUE_BYTES {
            return Err(EntryError::ValueTooLarge {
                len: self.value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        if self.tags.len() > MAX_TAGS {
            return Err(EntryError::TooManyTags {
                count: self.tags.len(),
            });
        }
        if let Some(tag) = first_duplicate(&self.tags) {
            return Err(EntryError::DuplicateTag { tag: tag.clone() });
        }
        if self.parents.len() > MAX_PARENTS {
            return Err(EntryError::TooManyParents {
                count: self.parents.len(),
            });
        }
        if let Some(parent) = first_duplicate(&self.parents) {
            return Err(EntryError::DuplicateParent { parent: *parent });
        }
        if self.seq == 0 {
            return Err(EntryError::ZeroSeq);
        }
        if self.ttl_ms == Some(0) {
            return Err(EntryError::ZeroDuration { field: "ttl_ms" });
        }
        if self.half_life_ms == Some(0) {
            return Err(EntryError::ZeroDuration {
                field: "half_life_ms",
            });
        }
        Ok(())
    }
}

fn first_duplicate<T: Ord>(items: &[T]) -> Option<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl Payload for EntryBody {
    const KIND: Kind = Kind::Entry;

    fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }
}

/// A verified entry: its envelope and its decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    envelope: Envelope,
    body: EntryBody,
    id: EnvelopeId,
}

impl Entry {
    /// Reads a verified envelope as an entry.
    pub fn from_envelope(envelope: Envelope) -> Result<Entry, EnvelopeError> {
        let body = envelope.open::<EntryBody>()?;
        let id = envelope.id();
        Ok(Entry { envelope, body, id })
    }

    /// The entry's id.
    pub fn id(&self) -> EnvelopeId {
        self.id
    }

    /// Who wrote and signed it.
    pub fn owner(&self) -> &PublicKey {
        self.envelope.author()
    }

    /// When it was written, ms since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.envelope.created_at_ms()
    }

    /// The signed content.
    pub fn body(&self) -> &EntryBody {
        &self.body
    }

    /// The envelope it travels in.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Whether the entry's ttl has run out at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.body
            .ttl_ms
            .is_some_and(|ttl| now_ms >= self.created_at_ms().saturating_add(ttl))
    }

    /// Half-life decay weight at `now_ms`: 1.0 when fresh or without a half-life.
    pub fn decay(&self, now_ms: u64) -> f64 {
        match self.body.half_life_ms {
            None => 1.0,
            Some(half_life) => {
                let age = now_ms.saturating_sub(self.created_at_ms()) as f64;
                0.5f64.powf(age / half_life as f64)
            }
        }
    }
}

/// Why an entry leaves queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetractionReason {
    /// Withdrawn: it should no longer be relied on.
    Withdrawn,
    /// Replaced by a newer entry under the same or another key.
    Superseded,
}

/// The signed record that retracts or supersedes an entry of the same owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retraction {
    /// Space of the retracted entry.
    #[serde(rename = "sp")]
    pub space: Space,
    /// Key of the retracted entry.
    #[serde(rename = "k")]
    pub key: Key,
    /// Id of the retracted entry.
    #[serde(rename = "id")]
    pub target: EnvelopeId,
    /// Why.
    #[serde(rename = "r")]
    pub reason: RetractionReason,
    /// The entry that supersedes it, if any.
    #[serde(rename = "by", default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<EnvelopeId>,
    /// Free text for the audit trail.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The owner's sequence number; retractions share the entries' sequence.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl Payload for Retraction {
    const KIND: Kind = Kind::Retraction;

    fn validate(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err(EntryError::ZeroSeq.to_string());
        }
        match &self.note {
            Some(note) if note.len() > MAX_REASON_BYTES => {
                Err(EntryError::ReasonTooLong { len: note.len() }.to_string())
            }
            _ => Ok(()),
        }
    }
}

/// The public trace of a trusted or private entry, published in the space's public
/// document: readers learn that an entry exists under `key` at `tier` (so a query can say
/// "one entry hidden" or "denied, because …"), never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// Space of the entry.
    #[serde(rename = "sp")]
    pub space: Space,
    /// Key of the entry.
    #[serde(rename = "k")]
    pub key: Key,
    /// Tier of the entry: trusted or private.
    #[serde(rename = "t")]
    pub tier: Tier,
    /// Id of the entry.
    #[serde(rename = "id")]
    pub entry: EnvelopeId,
    /// The entry's owner seq, so the newest version of a key is known without the entry.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl Payload for Presence {
    const KIND: Kind = Kind::Presence;

    fn validate(&self) -> Result<(), String> {
        if self.tier == Tier::Public {
            return Err("a public entry needs no presence record".into());
        }
        Ok(())
    }
}

/// A signed, directed trust edge: the author trusts `trustee` with `score` in `space`.
/// The newest edge (by `seq`) from an author to a trustee replaces older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustEdge {
    /// Space the edge applies to.
    #[serde(rename = "sp")]
    pub space: Space,
    /// Who is trusted.
    #[serde(rename = "to")]
    pub trustee: PublicKey,
    /// How much, 0.0 to 1.0.
    #[serde(rename = "sc")]
    pub score: Score,
    /// The author's sequence number for trust edges, from 1.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl Payload for TrustEdge {
    const KIND: Kind = Kind::TrustEdge;

    fn validate(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err(EntryError::ZeroSeq.to_string());
        }
        Ok(())
    }
}

impl TrustEdge {
    /// Checks that an edge's author is not its trustee.
    pub fn check_author(&self, author: &PublicKey) -> Result<(), EntryError> {
        if &self.trustee == author {
            Err(EntryError::SelfTrust)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::envelope::MAX_FRAME_BYTES;
    use crate::identity::Keypair;

    pub(crate) fn body(key: &str, tier: Tier, seq: u64) -> EntryBody {
        EntryBody {
            space: Space::default_space(),
            key: key.parse().unwrap(),
            value: format!("value of {key}"),
            tier,
            tags: vec![],
            kind: EntryKind::Finding,
            evidence: Evidence::ExternalSource,
            parents: vec![],
            seq,
            ttl_ms: None,
            half_life_ms: None,
        }
    }

    #[test]
    fn entries_round_trip_and_are_content_addressed() {
        let kp = Keypair::from_seed(&[1; 32]);
        let env = Envelope::seal(&kp, 1000, &body("findings.a", Tier::Public, 1)).unwrap();
        let entry =
            Entry::from_envelope(Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, 1000).unwrap())
                .unwrap();
        assert_eq!(entry.owner(), &kp.public());
        assert_eq!(entry.body().key.as_str(), "findings.a");
        assert_eq!(entry.id(), env.id());
        let other = Envelope::seal(&kp, 1000, &body("findings.a", Tier::Public, 2)).unwrap();
        assert_ne!(other.id(), env.id());
    }

    #[test]
    fn each_limit_is_a_distinct_error() {
        let mut b = body("a", Tier::Public, 1);
        b.value = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(matches!(b.check(), Err(EntryError::ValueTooLarge { .. })));
        let mut b = body("a", Tier::Public, 1);
        b.tags = (0..17).map(|i| format!("t{i}").parse().unwrap()).collect();
        assert_eq!(b.check(), Err(EntryError::TooManyTags { count: 17 }));
        let mut b = body("a", Tier::Public, 1);
        b.tags = vec!["x".parse().unwrap(), "x".parse().unwrap()];
        assert!(matches!(b.check(), Err(EntryError::DuplicateTag { .. })));
        let mut b = body("a", Tier::Public, 1);
        b.parents = (0..33u8).map(|i| EnvelopeId([i; 32])).collect();
        assert_eq!(b.check(), Err(EntryError::TooManyParents { count: 33 }));
        let mut b = body("a", Tier::Public, 1);
        b.parents = vec![EnvelopeId([1; 32]), EnvelopeId([1; 32])];
        assert!(matches!(b.check(), Err(EntryError::DuplicateParent { .. })));
        assert_eq!(body("a", Tier::Public, 0).check(), Err(EntryError::ZeroSeq));
        let mut b = body("a", Tier::Public, 1);
        b.ttl_ms = Some(0);
        assert!(matches!(b.check(), Err(EntryError::ZeroDuration { .. })));
    }

    #[test]
    fn the_largest_valid_entry_fits_its_kind() {
        let mut b = body(&vec!["a".repeat(64); 3].join("."), Tier::Public, u64::MAX);
        b.value = "x".repeat(MAX_VALUE_BYTES);
        b.tags = (0..16)
            .map(|i| format!("{i:0>64}").parse().unwrap())
            .collect();
        b.parents = (0..32u8).map(|i| EnvelopeId([i; 32])).collect();
        b.ttl_ms = Some(u64::MAX);
        b.half_life_ms = Some(u64::MAX);
        let kp = Keypair::from_seed(&[1; 32]);
        assert!(Envelope::seal(&kp, 0, &b).is_ok());
    }

    #[test]
    fn unknown_fields_and_codes_are_refused() {
        #[derive(Serialize)]
        struct Extra {
            sp: &'static str,
            zz: u8,
        }
        let bytes = crate::codec::to_vec(&Extra {
            sp: "default",
            zz: 1,
        })
        .unwrap();
        assert!(crate::codec::from_slice::<EntryBody>(&bytes, 1024).is_err());
        assert!(crate::codec::from_slice::<Tier>(&[0x05], 8).is_err());
    }

    #[test]
    fn scores_are_exact_thousandths() {
        assert_eq!(Score::from_f64(0.7).unwrap().milli(), 700);
        assert_eq!(Score::from_f64(0.0).unwrap().to_string(), "0.00");
        assert!(Score::from_f64(1.01).is_err());
        assert!(Score::from_f64(-0.1).is_err());
        assert!(Score::from_f64(f64::NAN).is_err());
        assert!(Score::from_milli(1001).is_err());
        assert!(crate::codec::from_slice::<Score>(&[0x19, 0x03, 0xE9], 8).is_err());
    }

    #[test]
    fn expiry_and_decay_follow_time() {
        let kp = Keypair::from_seed(&[1; 32]);
        let mut b = body("a", Tier::Public, 1);
        b.ttl_ms = Some(100);
        b.half_life_ms = Some(1000);
        let entry = Entry::from_envelope(Envelope::seal(&kp, 1000, &b).unwrap()).unwrap();
        assert!(!entry.expired(1099));
        assert!(entry.expired(1100));
        assert!((entry.decay(2000) - 0.5).abs() < 1e-12);
        assert!((entry.decay(1000) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn names_parse_with_helpful_errors() {
        assert_eq!("trusted".parse::<Tier>(), Ok(Tier::Trusted));
        let err = "secret".parse::<Tier>().unwrap_err();
        assert!(err.contains("private, trusted, public"), "{err}");
        assert!(Tier::Private < Tier::Trusted && Tier::Trusted < Tier::Public);
        assert!(Evidence::AgentOpinion < Evidence::ToolResult);
    }
}
