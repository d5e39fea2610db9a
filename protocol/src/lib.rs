//! # membrane-protocol: the membrane's wire and rules
//!
//! Everything two membrane nodes must agree on, with no IO: no sockets, no clocks, no
//! global randomness. Time arrives as `now_ms` arguments and randomness as a caller-given
//! RNG, so every function here is deterministic and testable to the byte.
//!
//! * [`identity`]: one ed25519 key per node, which is also its libp2p PeerId and its
//!   Automerge actor id.
//! * [`envelope`]: the versioned, signed envelope every record travels in, with
//!   domain-separated signatures per kind and strict verification (RFC 8032 §5.1.7, with
//!   the canonical-encoding checks of `verify_strict`).
//! * [`codec`]: the one module that knows the wire is CBOR (RFC 8949); every decode is
//!   size-limited before it starts.
//! * [`key`]: dotted entry keys, glob patterns, tags and space names.
//! * [`entry`]: the shared medium's entries with their provenance (owner, parents,
//!   evidence kind, owner seq), retractions and trust edges.
//! * [`permeability`]: the pure decision engine behind default-deny, trust-gated exposure.
//! * [`signals`]: small signed gossip and coordination messages.
//! * [`cost`]: token counting with a real tokenizer, budgets, and packing answers into a
//!   token budget.
//!
//! The wire format is specified in `docs/wire-protocol.md`.

pub mod codec;
pub mod cost;
pub mod entry;
pub mod envelope;
pub mod identity;
pub mod key;
pub mod permeability;
pub mod signals;

pub use entry::{
    Entry, EntryBody, EntryKind, Evidence, Presence, Retraction, Score, Tier, TrustEdge,
};
pub use envelope::{Envelope, EnvelopeError, EnvelopeId, Kind, Payload, RawEnvelope};
pub use identity::{Keypair, PublicKey};
pub use key::{Key, Pattern, Space, Tag};
