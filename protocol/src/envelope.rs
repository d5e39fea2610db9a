//! The signed envelope every record travels in.
//!
//! Wire form (CBOR array of six items, see `docs/wire-protocol.md`):
//!
//! ```text
//! [version: uint, kind: uint, author: bstr(32), created_at_ms: uint, payload: bstr, signature: bstr(64)]
//! ```
//!
//! The signature is ed25519 over
//! `len(context) || context || CBOR([version, kind, author, created_at_ms, payload])`, where
//! `context` is `membrane/v1/<kind name>`. Because the context differs per kind, a signature
//! made for one kind never verifies as another, even over identical bytes. Verification is
//! strict (`verify_strict`: canonical scalars, no small-order points), so a valid signature
//! cannot be mutated into a second valid one, and the envelope id, the SHA-256 of the
//! canonical wire bytes, names exactly one record.
//!
//! Decoding runs in two steps with distinct errors: [`RawEnvelope::decode`] checks the size
//! before parsing and parses; [`RawEnvelope::verify`] checks version, kind, key, payload
//! size, clock and signature, and only then yields an [`Envelope`]. Nothing else builds an
//! `Envelope` but [`Envelope::seal`], so holding one means it verified.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::codec::{self, DecodeError, EncodeError};
use crate::identity::{self, KeyError, Keypair, PublicKey, SIGNATURE_LEN};

/// The envelope format this crate writes and reads.
pub const VERSION: u8 = 1;
/// Largest envelope accepted from anyone, before decoding. Gossipsub's own cap is 64 KiB.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How far in the future `created_at_ms` may lie: 10 minutes, in milliseconds.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// Bytes an envelope adds around its payload, at most (array header, version, kind,
/// author, timestamp, payload header, signature).
pub const ENVELOPE_OVERHEAD: usize = 1 + 2 + 3 + 34 + 9 + 5 + 66;

/// What a record is. The number is what travels; the name is the signature context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A shared-medium entry ([`crate::entry::EntryBody`]).
    Entry,
    /// A retraction or supersession of an entry ([`crate::entry::Retraction`]).
    Retraction,
    /// A directed trust edge ([`crate::entry::TrustEdge`]).
    TrustEdge,
    /// The public trace of a trusted or private entry: its key and tier, never its value
    /// ([`crate::entry::Presence`]).
    Presence,
    /// A report of a misbehaving peer ([`crate::signals::ThreatSignal`]).
    ThreatSignal,
    /// What an agent can do ([`crate::signals::CapabilityAd`]).
    CapabilityAd,
    /// An intent signal for quorum sensing ([`crate::signals::Intent`]).
    Intent,
    /// A document's heads, announced after a change ([`crate::signals::Heads`]).
    Heads,
    /// "Who can help with …" ([`crate::signals::Help`]).
    Help,
    /// An answer to a help request ([`crate::signals::Offer`]).
    Offer,
    /// A proposal ([`crate::signals::Proposal`]).
    Proposal,
    /// A contribution building on a parent record ([`crate::signals::BuildOn`]).
    BuildOn,
    /// A message to every agent of a space ([`crate::signals::Broadcast`]).
    Broadcast,
    /// A message from one agent to another over a direct stream
    /// ([`crate::signals::DirectMessage`]).
    Direct,
}

impl Kind {
    /// Every kind, in wire-number order.
    pub const ALL: [Kind; 14] = [
        Kind::Entry,
        Kind::Retraction,
        Kind::TrustEdge,
        Kind::Presence,
        Kind::ThreatSignal,
        Kind::CapabilityAd,
        Kind::Intent,
        Kind::Heads,
        Kind::Help,
        Kind::Offer,
        Kind::Proposal,
        Kind::BuildOn,
        Kind::Broadcast,
        Kind::Direct,
    ];

    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            Kind::Entry => 1,
            Kind::Retraction => 2,
            Kind::TrustEdge => 3,
            Kind::Presence => 4,
            Kind::ThreatSignal => 16,
            Kind::CapabilityAd => 17,
            Kind::Intent => 18,
            Kind::Heads => 19,
            Kind::Help => 32,
            Kind::Offer => 33,
            Kind::Proposal => 34,
            Kind::BuildOn => 35,
            Kind::Broadcast => 36,
            Kind::Direct => 40,
        }
    }

    /// The kind with wire number `code`, if this version knows it.
    pub fn from_code(code: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The stable name, used in the signature context and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Entry => "entry",
            Kind::Retraction => "retraction",
            Kind::TrustEdge => "trust-edge",
            Kind::Presence => "presence",
            Kind::ThreatSignal => "threat-signal",
            Kind::CapabilityAd => "capability-ad",
            Kind::Intent => "intent",
            Kind::Heads => "heads",
            Kind::Help => "help",
            Kind::Offer => "offer",
            Kind::Proposal => "proposal",
            Kind::BuildOn => "build-on",
            Kind::Broadcast => "broadcast",
            Kind::Direct => "direct",
        }
    }

    /// Largest payload of this kind, in bytes.
    pub fn max_payload_bytes(self) -> usize {
        match self {
            Kind::Entry => 20 * 1024,
            Kind::Retraction => 1024,
            Kind::TrustEdge => 256,
            Kind::Presence => 512,
            Kind::ThreatSignal => 9 * 1024,
            Kind::CapabilityAd => 16 * 1024,
            Kind::Intent => 512,
            Kind::Heads => 4 * 1024,
            Kind::Help => 2 * 1024,
            Kind::Offer => 1024,
            Kind::Proposal => 10 * 1024,
            Kind::BuildOn => 10 * 1024,
            Kind::Broadcast => 5 * 1024,
            // The message (16 KiB at most) and its addressing: space, recipient, ids.
            Kind::Direct => 17 * 1024,
        }
    }

    /// Largest envelope of this kind, in bytes.
    pub fn max_frame_bytes(self) -> usize {
        self.max_payload_bytes() + ENVELOPE_OVERHEAD
    }

    /// The domain-separation context signatures of this kind are made under.
    pub fn context(self) -> String {
        format!("membrane/v{VERSION}/{}", self.name())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The content id of an envelope: SHA-256 of its canonical wire bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvelopeId(pub [u8; 32]);

impl EnvelopeId {
    /// The first 12 hex digits, for logs and compact answers.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(12);
        text
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({})", self.short())
    }
}

/// Why text is not an envelope id.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("not an id: expected 64 lowercase hex digits, got {got:?}")]
pub struct IdParseError {
    got: String,
}

impl FromStr for EnvelopeId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError {
            got: s.chars().take(80).collect(),
        };
        if s.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| err())?;
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err());
            }
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| err())?;
        }
        Ok(Self(out))
    }
}

impl Serialize for EnvelopeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvelopeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = ByteBuf::deserialize(deserializer)?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            serde::de::Error::custom(format!("id has {} bytes, expected 32", bytes.len()))
        })?;
        Ok(Self(raw))
    }
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes could not be decoded (oversized, truncated or garbage).
    #[error("undecodable envelope: {0}")]
    Decode(#[from] DecodeError),
    /// A version this node does not speak.
    #[error("envelope version {found} is not supported (this node speaks version {VERSION})")]
    UnsupportedVersion {
        /// Version in the envelope.
        found: u64,
    },
    /// A kind number this version does not know.
    #[error("unknown envelope kind {found}")]
    UnknownKind {
        /// Kind number in the envelope.
        found: u64,
    },
    /// A different kind from the one the receiver asked for.
    #[error("expected a {expected} envelope, got {found}")]
    WrongKind {
        /// Kind asked for.
        expected: Kind,
        /// Kind received.
        found: Kind,
    },
    /// The author field is not a usable key.
    #[error("bad author key: {0}")]
    BadAuthor(KeyError),
    /// The envelope is signed by someone other than the peer it must come from.
    #[error("author mismatch: signed by {found}, expected {expected}")]
    AuthorMismatch {
        /// Key the receiver expected.
        expected: PublicKey,
        /// Key that signed.
        found: PublicKey,
    },
    /// The signature field does not have 64 bytes.
    #[error("signature has {len} bytes, expected {SIGNATURE_LEN}")]
    BadSignatureLength {
        /// Bytes given.
        len: usize,
    },
    /// The payload is larger than its kind allows.
    #[error("{kind} payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The envelope's kind.
        kind: Kind,
        /// Payload length.
        len: usize,
        /// Limit for the kind.
        max: usize,
    },
    /// `created_at_ms` is further in the future than the allowed clock skew.
    #[error(
        "created_at {created_at_ms} ms is {ahead_ms} ms in the future (now {now_ms} ms, at most {MAX_CLOCK_SKEW_MS} ms allowed)"
    )]
    FromTheFuture {
        /// Timestamp in the envelope, ms since the Unix epoch.
        created_at_ms: u64,
        /// Receiver's clock, ms since the Unix epoch.
        now_ms: u64,
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The signature does not verify under the author's key for this kind.
    #[error("bad signature: does not verify under the author's key for kind {kind}")]
    BadSignature {
        /// The envelope's kind.
        kind: Kind,
    },
    /// The payload does not decode as its kind.
    #[error("undecodable {kind} payload: {source}")]
    Payload {
        /// The envelope's kind.
        kind: Kind,
        /// What the decoder said.
        source: DecodeError,
    },
    /// The payload decoded but breaks its kind's rules.
    #[error("invalid {kind} payload: {reason}")]
    InvalidPayload {
        /// The envelope's kind.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
}

/// Why an envelope could not be sealed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The payload did not encode, or is too large for its kind.
    #[error("cannot seal {kind}: {source}")]
    Encode {
        /// The kind being sealed.
        kind: Kind,
        /// What went wrong.
        source: EncodeError,
    },
    /// The payload breaks its kind's rules.
    #[error("cannot seal invalid {kind} payload: {reason}")]
    Invalid {
        /// The kind being sealed.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
}

/// A typed payload: what goes inside an envelope of one kind.
pub trait Payload: Serialize + serde::de::DeserializeOwned {
    /// The envelope kind this payload travels as.
    const KIND: Kind;

    /// Checks the payload's own rules (lengths, ranges, grammar). Returns what is wrong.
    fn validate(&self) -> Result<(), String>;
}

/// The envelope exactly as it travels: no field checked yet. Build one to test receivers
/// against hostile input; turn one into an [`Envelope`] with [`RawEnvelope::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEnvelope(
    /// Format version.
    pub u64,
    /// Kind number.
    pub u64,
    /// Author's public key.
    pub ByteBuf,
    /// Creation time, ms since the Unix epoch.
    pub u64,
    /// The payload, CBOR of the kind's payload type.
    pub ByteBuf,
    /// ed25519 signature.
    pub ByteBuf,
);

/// The part of the envelope the signature covers.
#[derive(Serialize)]
struct Signed<'a>(
    u64,
    u64,
    &'a serde_bytes::Bytes,
    u64,
    &'a serde_bytes::Bytes,
);

fn signing_bytes(
    kind: Kind,
    author: &PublicKey,
    created_at_ms: u64,
    payload: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let context = kind.context();
    let body = codec::to_vec(&Signed(
        u64::from(VERSION),
        u64::from(kind.code()),
        serde_bytes::Bytes::new(author.as_bytes()),
        created_at_ms,
        serde_bytes::Bytes::new(payload),
    ))?;
    let mut message = Vec::with_capacity(1 + context.len() + body.len());
    // Contexts are short ASCII constants; one length byte suffices.
    message.push(context.len() as u8);
    message.extend_from_slice(context.as_bytes());
    message.extend_from_slice(&body);
    Ok(message)
}

impl RawEnvelope {
    /// Parses wire bytes, refusing frames longer than `limit` before decoding.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, EnvelopeError> {
        Ok(codec::from_slice(bytes, limit.min(MAX_FRAME_BYTES))?)
    }

    /// Encodes as wire bytes (for tests and tools that build hostile frames).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::to_vec(self)
    }

    /// Checks every field and the signature, in a fixed order, and yields the envelope.
    pub fn verify(self, now_ms: u64) -> Result<Envelope, EnvelopeError> {
        let RawEnvelope(version, kind, author, created_at_ms, payload, signature) = self;
        if version != u64::from(VERSION) {
            return Err(EnvelopeError::UnsupportedVersion { found: version });
        }
        let kind = u16::try_from(kind)
            .ok()
            .and_then(Kind::from_code)
            .ok_or(EnvelopeError::UnknownKind { found: kind })?;
        let author = PublicKey::from_bytes(&author).map_err(EnvelopeError::BadAuthor)?;
        let signature: [u8; SIGNATURE_LEN] =
            signature
                .as_slice()
                .try_into()
                .map_err(|_| EnvelopeError::BadSignatureLength {
                    len: signature.len(),
                })?;
        if payload.len() > kind.max_payload_bytes() {
            return Err(EnvelopeError::PayloadTooLarge {
                kind,
                len: payload.len(),
                max: kind.max_payload_bytes(),
            });
        }
        if created_at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(EnvelopeError::FromTheFuture {
                created_at_ms,
                now_ms,
                ahead_ms: created_at_ms - now_ms,
            });
        }
        let message = signing_bytes(kind, &author, created_at_ms, &payload)
            .map_err(|_| EnvelopeError::BadSignature { kind })?;
        if !identity::verify_strict(&author, &message, &signature) {
            return Err(EnvelopeError::BadSignature { kind });
        }
        Ok(Envelope {
            kind,
            author,
            created_at_ms,
            payload: payload.into_vec(),
            signature,
        })
    }
}

/// A verified (or freshly sealed) envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: Kind,
    author: PublicKey,
    created_at_ms: u64,
    payload: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("author", &self.author)
            .field("created_at_ms", &self.created_at_ms)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Signs `payload` as an envelope of its kind, authored by `keypair`.
    pub fn seal<P: Payload>(
        keypair: &Keypair,
        created_at_ms: u64,
        payload: &P,
    ) -> Result<Self, SealError> {
        let kind = P::KIND;
        payload
            .validate()
            .map_err(|reason| SealError::Invalid { kind, reason })?;
        let bytes = codec::to_vec_limited(payload, kind.max_payload_bytes())
            .map_err(|source| SealError::Encode { kind, source })?;
        Self::seal_bytes(keypair, kind, created_at_ms, bytes)
    }

    /// Signs already-encoded payload bytes. Prefer [`Envelope::seal`]; this exists for
    /// tests and tools that must produce well-signed envelopes around arbitrary bytes.
    pub fn seal_bytes(
        keypair: &Keypair,
        kind: Kind,
        created_at_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Self, SealError> {
        if payload.len() > kind.max_payload_bytes() {
            return Err(SealError::Encode {
                kind,
                source: EncodeError::Oversized {
                    len: payload.len(),
                    limit: kind.max_payload_bytes(),
                },
            });
        }
        let author = keypair.public();
        let message = signing_bytes(kind, &author, created_at_ms, &payload)
            .map_err(|source| SealError::Encode { kind, source })?;
        let signature = keypair.sign(&message);
        Ok(Self {
            kind,
            author,
            created_at_ms,
            payload,
            signature,
        })
    }

    /// Decodes and verifies wire bytes in one step.
    pub fn decode(bytes: &[u8], limit: usize, now_ms: u64) -> Result<Self, EnvelopeError> {
        RawEnvelope::decode(bytes, limit)?.verify(now_ms)
    }

    /// The unverified wire form of this envelope.
    pub fn to_raw(&self) -> RawEnvelope {
        RawEnvelope(
            u64::from(VERSION),
            u64::from(self.kind.code()),
            ByteBuf::from(self.author.as_bytes().to_vec()),
            self.created_at_ms,
            ByteBuf::from(self.payload.clone()),
            ByteBuf::from(self.signature.to_vec()),
        )
    }

    /// The canonical wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a>(
            u64,
            u64,
            &'a serde_bytes::Bytes,
            u64,
            &'a serde_bytes::Bytes,
            &'a serde_bytes::Bytes,
        );
        let wire = Wire(
            u64::from(VERSION),
            u64::from(self.kind.code()),
            serde_bytes::Bytes::new(self.author.as_bytes()),
            self.created_at_ms,
            serde_bytes::Bytes::new(&self.payload),
            serde_bytes::Bytes::new(&self.signature),
        );
        // Serializing integers and byte strings into a Vec cannot fail.
        codec::to_vec(&wire).unwrap_or_default()
    }

    /// The content id: SHA-256 of [`Envelope::to_bytes`].
    pub fn id(&self) -> EnvelopeId {
        EnvelopeId(Sha256::digest(self.to_bytes()).into())
    }

    /// What the envelope carries.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Who signed it.
    pub fn author(&self) -> &PublicKey {
        &self.author
    }

    /// When its author says it was made, ms since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The message the signature covers (for batch verification).
    pub fn signed_message(&self) -> Vec<u8> {
        signing_bytes(self.kind, &self.author, self.created_at_ms, &self.payload)
            .unwrap_or_default()
    }

    /// Refuses the envelope unless `expected` signed it (for example the gossip source, or
    /// the actor of the change it travels with).
    pub fn expect_author(&self, expected: &PublicKey) -> Result<(), EnvelopeError> {
        if &self.author == expected {
            Ok(())
        } else {
            Err(EnvelopeError::AuthorMismatch {
                expected: *expected,
                found: self.author,
            })
        }
    }

    /// Decodes and validates the payload as `P`, refusing other kinds.
    pub fn open<P: Payload>(&self) -> Result<P, EnvelopeError> {
        if self.kind != P::KIND {
            return Err(EnvelopeError::WrongKind {
                expected: P::KIND,
                found: self.kind,
            });
        }
        let payload: P =
            codec::from_slice(&self.payload, self.kind.max_payload_bytes()).map_err(|source| {
                EnvelopeError::Payload {
                    kind: self.kind,
                    source,
                }
            })?;
        payload
            .validate()
            .map_err(|reason| EnvelopeError::InvalidPayload {
                kind: self.kind,
                reason,
            })?;
        Ok(payload)
    }
}

/// Verifies many envelopes at once with ed25519 batch verification, which is cheaper per
/// signature than one by one. Returns `true` only if every signature is valid; on `false`
/// the caller verifies one by one to find the bad ones.
///
/// Batch verification uses the cofactored equation, which accepts a few signatures that
/// `verify_strict` refuses; callers use it only to speed up re-checking envelopes whose
/// fields [`RawEnvelope::verify`] already validated, never as the only check.
pub fn verify_batch(envelopes: &[&Envelope]) -> bool {
    let messages: Vec<Vec<u8>> = envelopes.iter().map(|e| e.signed_message()).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = envelopes
        .iter()
        .map(|e| ed25519_dalek::Signature::from_bytes(&e.signature))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> =
        envelopes.iter().map(|e| e.author.verifying_key()).collect();
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok()
}

/// Signs an Automerge change hash under the `membrane/v1/change` context.
///
/// Changes are hash-chained but unsigned in Automerge; the shared medium signs each change
/// hash so a receiver can check who made it (see `docs/wire-protocol.md`).
pub fn sign_change(keypair: &Keypair, change_hash: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
    keypair.sign(&change_message(change_hash))
}

/// Strictly verifies a change-hash signature made by [`sign_change`].
pub fn verify_change(
    author: &PublicKey,
    change_hash: &[u8; 32],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    identity::verify_strict(author, &change_message(change_hash), signature)
}

/// Context for change signatures.
pub const CHANGE_CONTEXT: &str = "membrane/v1/change";

fn change_message(change_hash: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(1 + CHANGE_CONTEXT.len() + 32);
    message.push(CHANGE_CONTEXT.len() as u8);
    message.extend_from_slice(CHANGE_CONTEXT.as_bytes());
    message.extend_from_slice(change_hash);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
    }

    impl Payload for Note {
        const KIND: Kind = Kind::Broadcast;
        fn validate(&self) -> Result<(), String> {
            if self.text.is_empty() {
                Err("empty text".into())
            } else {
                Ok(())
            }
        }
    }

    const NOW: u64 = 1_763_700_000_000;

    fn keypair() -> Keypair {
        Keypair::from_seed(&[3; 32])
    }

    fn sealed() -> Envelope {
        Envelope::seal(&keypair(), NOW, &Note { text: "hi".into() }).unwrap()
    }

    #[test]
    fn seal_decode_open_round_trip() {
        let env = sealed();
        let back = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, NOW).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.id(), env.id());
        assert_eq!(back.open::<Note>().unwrap(), Note { text: "hi".into() });
        assert_eq!(back.author(), &keypair().public());
    }

    #[test]
    fn kind_codes_are_unique_and_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
            assert!(kind.max_frame_bytes() <= MAX_FRAME_BYTES);
        }
        let mut codes: Vec<u16> = Kind::ALL.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Kind::ALL.len());
    }

    #[test]
    fn the_clock_limit_is_ten_minutes_in_milliseconds() {
        let at_limit = Envelope::seal(
            &keypair(),
            NOW + 600_000,
            &Note {
                text: "edge".into(),
            },
        )
        .unwrap();
        assert!(Envelope::decode(&at_limit.to_bytes(), MAX_FRAME_BYTES, NOW).is_ok());
        let past_limit = Envelope::seal(
            &keypair(),
            NOW + 600_001,
            &Note {
                text: "edge".into(),
            },
        )
        .unwrap();
        assert_eq!(
            Envelope::decode(&past_limit.to_bytes(), MAX_FRAME_BYTES, NOW),
            Err(EnvelopeError::FromTheFuture {
                created_at_ms: NOW + 600_001,
                now_ms: NOW,
                ahead_ms: 600_001,
            })
        );
        // Had the unit been seconds, ten minutes would be 600: this is far more.
        assert_eq!(MAX_CLOCK_SKEW_MS, 600_000);
    }

    #[test]
    fn typed_errors_for_each_field() {
        let raw = sealed().to_raw();
        let mut v = raw.clone();
        v.0 = 2;
        assert_eq!(
            v.verify(NOW),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        );
        let mut k = raw.clone();
        k.1 = 999;
        assert_eq!(
            k.verify(NOW),
            Err(EnvelopeError::UnknownKind { found: 999 })
        );
        let mut a = raw.clone();
        a.2 = ByteBuf::from(vec![1; 31]);
        assert!(matches!(
            a.verify(NOW),
            Err(EnvelopeError::BadAuthor(KeyError::WrongLength { len: 31 }))
        ));
        let mut s = raw.clone();
        s.5 = ByteBuf::from(vec![0; 63]);
        assert_eq!(
            s.verify(NOW),
            Err(EnvelopeError::BadSignatureLength { len: 63 })
        );
        let mut p = raw.clone();
        p.4 = ByteBuf::from(vec![0; Kind::Broadcast.max_payload_bytes() + 1]);
        assert!(matches!(
            p.verify(NOW),
            Err(EnvelopeError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn a_signature_for_one_kind_never_verifies_as_another() {
        let env = sealed();
        for kind in Kind::ALL {
            if kind == env.kind() {
                continue;
            }
            let mut raw = env.to_raw();
            raw.1 = u64::from(kind.code());
            assert_eq!(raw.verify(NOW), Err(EnvelopeError::BadSignature { kind }));
        }
    }

    #[test]
    fn author_mismatch_and_wrong_kind() {
        let env = sealed();
        let other = Keypair::from_seed(&[4; 32]).public();
        assert_eq!(
            env.expect_author(&other),
            Err(EnvelopeError::AuthorMismatch {
                expected: other,
                found: keypair().public()
            })
        );
        #[derive(Debug, Serialize, Deserialize)]
        struct Other;
        impl Payload for Other {
            const KIND: Kind = Kind::Intent;
            fn validate(&self) -> Result<(), String> {
                Ok(())
            }
        }
        assert!(matches!(
            env.open::<Other>(),
            Err(EnvelopeError::WrongKind { .. })
        ));
    }

    #[test]
    fn oversized_frames_are_refused_before_decoding() {
        let bytes = vec![0xFF; MAX_FRAME_BYTES + 1];
        assert_eq!(
            Envelope::decode(&bytes, usize::MAX, NOW),
            Err(EnvelopeError::Decode(DecodeError::Oversized {
                len: MAX_FRAME_BYTES + 1,
                limit: MAX_FRAME_BYTES
            }))
        );
    }

    #[test]
    fn sealing_refuses_invalid_payloads() {
        assert!(matches!(
            Envelope::seal(&keypair(), NOW, &Note { text: "".into() }),
            Err(SealError::Invalid { .. })
        ));
    }

    #[test]
    fn change_signatures_are_domain_separated() {
        let kp = keypair();
        let hash = [7u8; 32];
        let sig = sign_change(&kp, &hash);
        assert!(verify_change(&kp.public(), &hash, &sig));
        assert!(!verify_change(&kp.public(), &[8u8; 32], &sig));
        // A plain signature over the hash is not a change signature.
        assert!(!verify_change(&kp.public(), &hash, &kp.sign(&hash)));
    }

    #[test]
    fn batch_verification_agrees_with_single() {
        let kps: Vec<Keypair> = (0..8u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
        let envs: Vec<Envelope> = kps
            .iter()
            .map(|kp| {
                Envelope::seal(
                    kp,
                    NOW,
                    &Note {
                        text: "batch".into(),
                    },
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&Envelope> = envs.iter().collect();
        assert!(verify_batch(&refs));
        let mut forged = envs[3].clone();
        forged.signature[0] ^= 1;
        let mut refs = refs;
        refs[3] = &forged;
        assert!(!verify_batch(&refs));
    }

    #[test]
    fn ids_parse_back() {
        let id = sealed().id();
        assert_eq!(id.to_string().parse::<EnvelopeId>().unwrap(), id);
        assert!("zz".parse::<EnvelopeId>().is_err());
        assert!(id.to_string().to_uppercase().parse::<EnvelopeId>().is_err());
    }
}
