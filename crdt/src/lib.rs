//! # membrane-crdt: the shared medium
//!
//! Layer 2 of the membrane: what a swarm of agents knows, replicated as Automerge
//! documents of signed, provenance-carrying entries (Kleppmann et al., "Automerge",
//! and Kleppmann, "Making CRDTs Byzantine Fault Tolerant", PaPoC 2022).
//!
//! * Documents per audience ([`doc::DocId`]): each space's public document, synced with
//!   every member, and one trusted document per owner, synced only with the peers that
//!   owner trusts at or above the threshold. Private entries never enter a document.
//! * Every change is signed over its hash; a peer's change is applied only if it passes
//!   the validity predicate in [`doc`] (signature, dependencies, own-subtree writes,
//!   valid records). Rejections come back typed so the node can report the peer.
//! * [`Medium`] is the node's view: the write path (`expose`, `retract`, `set_trust`),
//!   queries with hidden counts and denial reasons, search ranked by BM25 × trust × decay
//!   × evidence and packed to a token budget, conflicts, an event log, and sync sessions.
//! * Storage sits behind [`storage::Storage`]; every acknowledged write is durable.
//!
//! Sans-IO: time is `now_ms`, storage a trait, and nothing here opens a file or socket.

pub mod coord;
pub mod doc;
pub mod events;
pub mod hostile;
pub mod index;
pub mod intents;
pub mod layout;
pub mod medium;
pub mod search;
pub mod storage;

pub use doc::{DocId, RejectReason, Rejection};
pub use events::{Event, EventKind, FanOutTarget};
pub use index::Conflict;
pub use medium::{
    Config, Draft, Error, Exposed, Filter, Medium, QueryAnswer, SearchAnswer, SearchHit, SyncError,
    SyncReport, Withheld,
};
pub use storage::{MemoryStorage, Storage};
