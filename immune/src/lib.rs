//! # membrane-immune: the immune layer and governance rules
//!
//! Everything here is a pure state machine or a pure function (sans-IO, like `protocol`
//! and `crdt`): time arrives as `now_ms`, nothing reads a clock, does IO or draws
//! randomness, and decisions leave as data ([`Action`]) for the node to carry out.
//!
//! * [`reputation`]: a per-peer score in `[-100, 100]`, lowered by offences of a named
//!   [`Severity`](membrane_protocol::signals::Severity), decaying toward 0 with a
//!   half-life, with named thresholds (quarantine, disconnect, ban) and a mapping to a
//!   gossipsub application score.
//! * [`detectors`]: invalid signatures, trespass, equivocation, malformed frames, rate
//!   anomalies (EWMA mean and deviation per peer and channel, after a warm-up),
//!   duplicate-content flooding, budget abuse, capability violations.
//! * [`memory`]: memory cells, offenders and rejected payloads' hashes with an expiry,
//!   persisted by the node as records, so a returning offender or a replay is refused at
//!   once, also across restarts.
//! * [`quorum`]: threat reports from other nodes. Verifiable evidence acts at once;
//!   unverifiable reports only through a quorum of distinct reporters with earned
//!   reputation, so one liar or a Sybil cluster of fresh identities cannot shut an
//!   honest node out, and reporters of contradicted reports lose reputation. (Sybil
//!   resistance by earned reputation, after Douceur, *The Sybil Attack*, 2002.)
//! * [`breaker`]: circuit breakers on delegation, per agent and per capability.
//! * [`audit`]: the hash-chained, signed audit log and its verification.
//! * [`Immune`] ties them together: `on_event(Observation, now_ms) -> Vec<Action>`.
//!
//! Every per-peer structure is bounded ([`config::MAX_PEERS`], [`memory::MAX_OFFENDERS`],
//! [`memory::MAX_CONTENTS`], [`breaker::MAX_BREAKERS`], the quorum's `max_accused` and
//! `max_reports`), evicting what matters least (the most neutral peer, the soonest
//! expiry, the accusation with the fewest reputable reporters), so a flood of fresh
//! identities cannot exhaust memory.

pub mod audit;
pub mod breaker;
pub mod config;
pub mod detectors;
mod engine;
pub mod memory;
pub mod quorum;
pub mod reputation;
mod text;
mod types;

#[cfg(test)]
mod testutil;

pub use audit::{
    AuditError, AuditEvent, AuditLog, AuditRecord, ChainVerifier, Crossed, CrossingDecision,
    EntryDecision, OwnerDecisions, Verdict, verify_chain,
};
pub use breaker::{Blocked, Breaker, BreakerKey, BreakerState, Transition};
pub use config::{Config, ConfigError};
pub use detectors::{CapabilityAct, ContentHash, Detection, Fault, content_hash};
pub use engine::Immune;
pub use memory::{MemoryCells, MemoryKey, MemoryRecord};
pub use types::{Action, Channel, Observation, Override, QuarantineReason, Quarantined};
