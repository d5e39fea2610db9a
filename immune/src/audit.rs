//! The audit log: append-only records, hash-chained and signed by the node's key.
//!
//! Record `i` holds `prev_hash` (the hash of record `i − 1`, zeros for the first) and
//! `hash = SHA-256(prev_hash ‖ canonical bytes)`, where the canonical bytes are the CBOR
//! encoding (the workspace's one codec) of `(index, at_ms, event)`; the node's key signs
//! `"membrane/v1/audit" ‖ hash`. [`verify_chain`] recomputes all of it and names the
//! first bad record, so an edited, dropped, inserted or reordered record is caught; only
//! cutting records off the end needs the head kept elsewhere ([`AuditLog::head`]).
//!
//! Sans-IO: [`AuditLog::append`] returns the record; the node persists it (one JSON line
//! each, [`to_jsonl`]) and resumes after a restart from the last one.

use membrane_protocol::codec;
use membrane_protocol::identity::{SIGNATURE_LEN, verify_strict};
use membrane_protocol::signals::{Severity, ThreatKind};
use membrane_protocol::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::breaker::{BreakerKey, Transition};
use crate::detectors::{ContentHash, Detection};

/// Domain separation for audit signatures.
pub const AUDIT_CONTEXT: &[u8] = b"membrane/v1/audit";
/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];
/// Longest request text an [`AuditEvent::Answer`] keeps.
pub const MAX_AUDIT_REQUEST_BYTES: usize = 256;

/// `text` cut to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What a crossing decided (the permeability engine's answer for one entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossingDecision {
    /// Shown to the agent.
    Visible,
    /// Counted, never shown.
    Hidden,
    /// Refused, with a reason.
    Denied,
}

/// One entry's crossing decision within an answer, as the node builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossed {
    /// The entry's key.
    pub key: String,
    /// Its owner.
    pub owner: PublicKey,
    /// The decision.
    pub decision: CrossingDecision,
    /// Why (for hidden and denied).
    pub reason: Option<String>,
}

/// One entry's decision as an [`AuditEvent::Answer`] stores it, under its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDecision {
    /// The entry's key.
    pub key: String,
    /// The decision.
    pub decision: CrossingDecision,
    /// Why (for hidden and denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The decisions on one owner's entries within an answer. Grouping by owner writes each
/// owner's id once per record: turning a key into its PeerId text (and back, when the log
/// is verified) costs more than the rest of an entry's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDecisions {
    /// The owner.
    #[serde(with = "crate::text::peer")]
    pub owner: PublicKey,
    /// Its entries' decisions, in the answer's order.
    pub entries: Vec<EntryDecision>,
}

impl AuditEvent {
    /// The record of one answer: `decisions` grouped by owner (owners in key order).
    pub fn answer(
        verb: &str,
        space: &str,
        request: &str,
        tokens: u64,
        decisions: impl IntoIterator<Item = Crossed>,
    ) -> Self {
        let mut by_owner: std::collections::BTreeMap<PublicKey, Vec<EntryDecision>> =
            std::collections::BTreeMap::new();
        for d in decisions {
            by_owner.entry(d.owner).or_default().push(EntryDecision {
                key: d.key,
                decision: d.decision,
                reason: d.reason,
            });
        }
        Self::Answer {
            verb: verb.to_owned(),
            space: space.to_owned(),
            request: cut(request, MAX_AUDIT_REQUEST_BYTES),
            tokens,
            decisions: by_owner
                .into_iter()
                .map(|(owner, entries)| OwnerDecisions { owner, entries })
                .collect(),
        }
    }

    /// An answer's decisions, one per entry (empty for other events).
    pub fn crossings(&self) -> Vec<Crossed> {
        match self {
            Self::Answer { decisions, .. } => decisions
                .iter()
                .flat_map(|o| {
                    o.entries.iter().map(|e| Crossed {
                        key: e.key.clone(),
                        owner: o.owner,
                        decision: e.decision,
                        reason: e.reason.clone(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What a received threat report's evidence showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The evidence proves the offence: act at once.
    Confirmed,
    /// The evidence does not show what the report claims: the reporter lied.
    Refuted,
    /// No evidence, or none we can check: counts toward a quorum.
    Unverifiable,
}

/// An operator's override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    /// Lift a quarantine.
    Release,
    /// Lift a ban.
    Unban,
    /// Ban.
    Ban,
    /// Quarantine.
    Quarantine,
    /// Declare a peer innocent of what it was reported for.
    Exonerate,
}

/// One audited event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// An entry's crossing into the agent's context was decided.
    Crossing {
        /// The entry's key.
        key: String,
        /// Its owner.
        #[serde(default, with = "crate::text::opt_peer")]
        owner: Option<PublicKey>,
        /// The decision.
        decision: CrossingDecision,
        /// Why (for hidden and denied).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Tokens charged to a budget: the agent's, or a space's.
    BudgetCharge {
        /// Tokens charged.
        tokens: u64,
        /// Used in the window after the charge.
        used: u64,
        /// The window's limit.
        limit: u64,
        /// Whether the charge went over.
        over: bool,
        /// The space whose budget it is (none: the agent's own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        space: Option<String>,
    },
    /// One answer (a query or a search) and every entry's crossing decision in it: what
    /// crossed into the agent's context, what was withheld and what was refused, and why.
    Answer {
        /// `query` or `search`.
        verb: String,
        /// The space asked.
        space: String,
        /// The pattern or the search text (cut to [`MAX_AUDIT_REQUEST_BYTES`]).
        request: String,
        /// Tokens of what crossed (or would have, when refused).
        tokens: u64,
        /// Each entry's decision, grouped by owner.
        decisions: Vec<OwnerDecisions>,
    },
    /// The operator paused (or resumed) every crossing in and out.
    Pause {
        /// Paused (`true`) or resumed.
        paused: bool,
        /// Why, as given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A value conflict escalated to the agent: owners' facts disagree on one key, or a
    /// verified entry was disputed.
    Conflict {
        /// The space.
        space: String,
        /// The contested key.
        key: String,
        /// The entries involved (hex ids).
        entries: Vec<String>,
        /// Their owners (for a dispute: the owner, then the disputers).
        #[serde(with = "crate::text::peers")]
        owners: Vec<PublicKey>,
        /// What the conflict is.
        reason: String,
    },
    /// We detected an offence.
    ThreatDetected {
        /// What we found.
        detection: Detection,
    },
    /// Another node reported an offence.
    ThreatReceived {
        /// Who reported.
        #[serde(with = "crate::text::peer")]
        reporter: PublicKey,
        /// Who it accuses.
        #[serde(with = "crate::text::peer")]
        offender: PublicKey,
        /// What it says happened.
        kind: ThreatKind,
        /// How bad it says it was.
        severity: Severity,
        /// The evidence named.
        #[serde(with = "crate::text::hex")]
        evidence_hash: ContentHash,
        /// What the evidence showed.
        verdict: Verdict,
        /// What we did about it.
        outcome: String,
    },
    /// An operator overrode the immune layer.
    Override {
        /// What they did.
        action: OverrideAction,
        /// To whom.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
    },
    /// A peer was quarantined.
    Quarantine {
        /// Who.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
        /// Why.
        reason: String,
        /// When it lifts by itself, if it does.
        #[serde(default)]
        until_ms: Option<u64>,
    },
    /// A quarantine was lifted.
    Release {
        /// Who.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
        /// Why.
        reason: String,
    },
    /// A peer was banned.
    Ban {
        /// Who.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
        /// Until when.
        until_ms: u64,
        /// Why.
        reason: String,
    },
    /// A ban was lifted.
    Unban {
        /// Who.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
        /// Why.
        reason: String,
    },
    /// A delegation circuit breaker changed state.
    Breaker {
        /// Which breaker.
        key: BreakerKey,
        /// What happened.
        transition: Transition,
    },
}

/// One record of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 0.
    pub index: u64,
    /// When it was written.
    pub at_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// Hash of the record before (zeros for the first).
    #[serde(with = "crate::text::hex")]
    pub prev_hash: [u8; 32],
    /// SHA-256 of `prev_hash ‖ CBOR(index, at_ms, event)`.
    #[serde(with = "crate::text::hex")]
    pub hash: [u8; 32],
    /// The node's signature over `"membrane/v1/audit" ‖ hash`.
    #[serde(with = "crate::text::hex")]
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why an audit operation failed. Verification names the first bad record by its
/// position in the slice checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event could not be encoded.
    #[error("audit event could not be encoded: {detail}")]
    Encode {
        /// What the encoder said.
        detail: String,
    },
    /// A JSONL line is not a record.
    #[error("audit line {line} is not a record: {detail}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        detail: String,
    },
    /// A record is not where its index says (dropped, inserted or reordered records).
    #[error("audit record {index} has index {found}, expected {expected}")]
    OutOfOrder {
        /// Position in the slice.
        index: usize,
        /// The index it carries.
        found: u64,
        /// The index it should carry.
        expected: u64,
    },
    /// A record does not link to the one before it.
    #[error("audit record {index} does not link to the record before it")]
    BrokenLink {
        /// Position in the slice.
        index: usize,
    },
    /// A record's content does not match its hash (it was edited).
    #[error("audit record {index} does not match its hash")]
    HashMismatch {
        /// Position in the slice.
        index: usize,
    },
    /// A record's signature does not verify under the node's key.
    #[error("audit record {index} has a bad signature")]
    BadSignature {
        /// Position in the slice.
        index: usize,
    },
}

impl AuditError {
    /// The position of the bad record, for verification failures.
    pub fn index(&self) -> Option<usize> {
        match self {
            Self::OutOfOrder { index, .. }
            | Self::BrokenLink { index }
            | Self::HashMismatch { index }
            | Self::BadSignature { index } => Some(*index),
            Self::Json { line, .. } => Some(line.saturating_sub(1)),
            Self::Encode { .. } => None,
        }
    }
}

/// `SHA-256(prev_hash ‖ CBOR(index, at_ms, event))`.
pub fn record_hash(
    prev_hash: &[u8; 32],
    index: u64,
    at_ms: u64,
    event: &AuditEvent,
) -> Result<[u8; 32], AuditError> {
    let canonical = codec::to_vec(&(index, at_ms, event)).map_err(|e| AuditError::Encode {
        detail: e.to_string(),
    })?;
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(&canonical);
    Ok(h.finalize().into())
}

fn signed_message(hash: &[u8; 32]) -> Vec<u8> {
    [AUDIT_CONTEXT, hash].concat()
}

/// The writing end of a node's audit log: the chain's head and the key that signs.
#[derive(Debug)]
pub struct AuditLog {
    key: Keypair,
    head: [u8; 32],
    next_index: u64,
}

impl AuditLog {
    /// A new, empty log signed by `key`.
    pub fn new(key: Keypair) -> Self {
        Self {
            key,
            head: GENESIS,
            next_index: 0,
        }
    }

    /// Continues a log after `last`, its last persisted record, which must verify under
    /// `key`.
    pub fn resume(key: Keypair, last: &AuditRecord) -> Result<Self, AuditError> {
        verify_segment(
            std::slice::from_ref(last),
            &key.public(),
            last.prev_hash,
            last.index,
        )?;
        Ok(Self {
            key,
            head: last.hash,
            next_index: last.index + 1,
        })
    }

    /// Appends `event` at `at_ms` and returns the record for the node to persist.
    pub fn append(&mut self, at_ms: u64, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        let hash = record_hash(&self.head, self.next_index, at_ms, &event)?;
        let record = AuditRecord {
            index: self.next_index,
            at_ms,
            event,
            prev_hash: self.head,
            hash,
            signature: self.key.sign(&signed_message(&hash)),
        };
        self.head = hash;
        self.next_index += 1;
        Ok(record)
    }

    /// The hash of the last record (zeros when empty): keep it apart from the log to
    /// detect truncation.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Records written.
    pub fn len(&self) -> u64 {
        self.next_index
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.next_index == 0
    }

    /// The key records are verified with.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }
}

/// Verifies a whole log from its first record: indexes 0, 1, …, each linked to the one
/// before, each hash recomputed, each signature checked under `key`.
pub fn verify_chain(records: &[AuditRecord], key: &PublicKey) -> Result<(), AuditError> {
    verify_segment(records, key, GENESIS, 0)
}

/// Verifies consecutive records starting at index `first_index` after a record whose
/// hash is `prev_hash`.
pub fn verify_segment(
    records: &[AuditRecord],
    key: &PublicKey,
    prev_hash: [u8; 32],
    first_index: u64,
) -> Result<(), AuditError> {
    let mut verifier = ChainVerifier::after(*key, prev_hash, first_index);
    records.iter().try_for_each(|r| verifier.push(r))
}

/// Checks a log one record at a time, as it is read, so a whole log can be verified
/// without holding it in memory. Errors name the record by its position among those
/// pushed.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    key: PublicKey,
    prev: [u8; 32],
    next_index: u64,
    pushed: usize,
}

impl ChainVerifier {
    /// A verifier for a log from its first record.
    pub fn new(key: PublicKey) -> Self {
        Self::after(key, GENESIS, 0)
    }

    /// A verifier for the records after one with hash `prev_hash`, the first of them at
    /// index `first_index`.
    pub fn after(key: PublicKey, prev_hash: [u8; 32], first_index: u64) -> Self {
        Self {
            key,
            prev: prev_hash,
            next_index: first_index,
            pushed: 0,
        }
    }

    /// Checks the next record: its index, its link to the one before, its hash and its
    /// signature, in that order. After an error the verifier stays where it was.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), AuditError> {
        let index = self.pushed;
        if r.index != self.next_index {
            return Err(AuditError::OutOfOrder {
                index,
                found: r.index,
                expected: self.next_index,
            });
        }
        if r.prev_hash != self.prev {
            return Err(AuditError::BrokenLink { index });
        }
        if record_hash(&r.prev_hash, r.index, r.at_ms, &r.event)? != r.hash {
            return Err(AuditError::HashMismatch { index });
        }
        if !verify_strict(&self.key, &signed_message(&r.hash), &r.signature) {
            return Err(AuditError::BadSignature { index });
        }
        self.prev = r.hash;
        self.next_index += 1;
        self.pushed += 1;
        Ok(())
    }

    /// Records verified so far.
    pub fn verified(&self) -> usize {
        self.pushed
    }

    /// The index the next record must carry.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }
}

/// One JSON object per line, each line ending in `\n`.
pub fn to_jsonl(records: &[AuditRecord]) -> Result<String, AuditError> {
    let mut out = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| AuditError::Encode {
            detail: e.to_string(),
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Parses JSONL written by [`to_jsonl`] (blank lines are skipped). Parsing does not
/// verify: call [`verify_chain`] on the result.
pub fn from_jsonl(text: &str) -> Result<Vec<AuditRecord>, AuditError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| AuditError::Json {
                line: i + 1,
                detail: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::{Fault, rejected};
    use crate::testutil::{keypair, peer};

    fn events() -> Vec<AuditEvent> {
        vec![
            AuditEvent::Crossing {
                key: "climate.sources".into(),
                owner: Some(peer(2)),
                decision: CrossingDecision::Denied,
                reason: Some("writer's trust in reviewer is 0.00 < 0.50".into()),
            },
            AuditEvent::BudgetCharge {
                tokens: 120,
                used: 970,
                limit: 1_000,
                over: false,
                space: None,
            },
            AuditEvent::ThreatDetected {
                detection: rejected(peer(3), None, [3; 32], Fault::Forged).remove(0),
            },
            AuditEvent::ThreatReceived {
                reporter: peer(4),
                offender: peer(3),
                kind: ThreatKind::Trespass,
                severity: Severity::High,
                evidence_hash: [4; 32],
                verdict: Verdict::Unverifiable,
                outcome: "held for quorum (1 of 3)".into(),
            },
            AuditEvent::Override {
                action: OverrideAction::Unban,
                peer: peer(3),
            },
            AuditEvent::Quarantine {
                peer: peer(5),
                reason: "quorum".into(),
                until_ms: Some(10),
            },
            AuditEvent::Release {
                peer: peer(5),
                reason: "operator".into(),
            },
            AuditEvent::Breaker {
                key: BreakerKey::Agent(peer(6)),
                transition: Transition::Opened { until_ms: 9 },
            },
            AuditEvent::answer(
                "query",
                "climate",
                "notes.*",
                42,
                [
                    Crossed {
                        key: "notes.a".into(),
                        owner: peer(2),
                        decision: CrossingDecision::Visible,
                        reason: None,
                    },
                    Crossed {
                        key: "notes.b".into(),
                        owner: peer(3),
                        decision: CrossingDecision::Hidden,
                        reason: Some("its owner is quarantined".into()),
                    },
                    Crossed {
                        key: "notes.c".into(),
                        owner: peer(2),
                        decision: CrossingDecision::Denied,
                        reason: Some("trust".into()),
                    },
                ],
            ),
            AuditEvent::Pause {
                paused: true,
                reason: Some("drill".into()),
            },
            AuditEvent::Conflict {
                space: "climate".into(),
                key: "facts.sea_level".into(),
                entries: vec!["ab".repeat(32), "cd".repeat(32)],
                owners: vec![peer(2), peer(3)],
                reason: "facts disagree".into(),
            },
            AuditEvent::BudgetCharge {
                tokens: 5,
                used: 5,
                limit: 10,
                over: false,
                space: Some("climate".into()),
            },
        ]
    }

    fn chain() -> (Vec<AuditRecord>, PublicKey) {
        let mut log = AuditLog::new(keypair(1));
        let records: Vec<AuditRecord> = events()
            .into_iter()
            .zip(100..)
            .map(|(e, t)| log.append(t, e).unwrap())
            .collect();
        assert_eq!(log.head(), records.last().unwrap().hash);
        (records, log.public())
    }

    #[test]
    fn a_written_chain_verifies_and_round_trips_jsonl() {
        let (records, key) = chain();
        assert_eq!(verify_chain(&records, &key), Ok(()));
        assert_eq!(records[0].prev_hash, GENESIS);
        assert_eq!(records[1].prev_hash, records[0].hash);
        let text = to_jsonl(&records).unwrap();
        assert_eq!(text.lines().count(), records.len());
        assert!(text.starts_with(r#"{"index":0,"at_ms":100,"event":{"type":"crossing","#));
        assert!(text.contains(r#""decision":"denied""#));
        // The agent's budget charge encodes as before space budgets existed, so records
        // written then still hash (and verify) the same.
        let line = text.lines().nth(1).unwrap();
        assert_eq!(
            &line[line.find("\"event\"").unwrap()..line.find(",\"prev_hash\"").unwrap()],
            r#""event":{"type":"budget_charge","tokens":120,"used":970,"limit":1000,"over":false}"#
        );
        let back = from_jsonl(&text).unwrap();
        assert_eq!(back, records);
        assert_eq!(verify_chain(&back, &key), Ok(()));
        // Another key does not verify it.
        assert_eq!(
            verify_chain(&records, &peer(9)),
            Err(AuditError::BadSignature { index: 0 })
        );
    }

    #[test]
    fn an_answer_groups_decisions_by_owner_and_gives_them_back() {
        let event = &events()[8];
        let AuditEvent::Answer { decisions, .. } = event else {
            panic!("{event:?}")
        };
        assert_eq!(decisions.len(), 2, "two owners");
        assert_eq!(decisions[0].entries.len() + decisions[1].entries.len(), 3);
        let back = event.crossings();
        let mut keys: Vec<&str> = back.iter().map(|c| c.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["notes.a", "notes.b", "notes.c"]);
        assert!(back.iter().any(|c| c.key == "notes.c"
            && c.owner == peer(2)
            && c.decision == CrossingDecision::Denied));
        let json = serde_json::to_string(event).unwrap();
        assert_eq!(json.matches(&peer(2).to_string()).count(), 1, "{json}");
        // The request is cut at a character boundary.
        let long = "é".repeat(MAX_AUDIT_REQUEST_BYTES);
        let AuditEvent::Answer { request, .. } = AuditEvent::answer("search", "s", &long, 0, [])
        else {
            panic!()
        };
        assert_eq!(request.len(), MAX_AUDIT_REQUEST_BYTES);
        assert_eq!(
            AuditEvent::Pause {
                paused: true,
                reason: None
            }
            .crossings(),
            []
        );
    }

    #[test]
    fn resume_continues_the_chain() {
        let (mut records, _) = chain();
        let mut log = AuditLog::resume(keypair(1), records.last().unwrap()).unwrap();
        assert_eq!(log.len(), records.len() as u64);
        records.push(
            log.append(
                500,
                AuditEvent::Unban {
                    peer: peer(3),
                    reason: "expired".into(),
                },
            )
            .unwrap(),
        );
        assert_eq!(verify_chain(&records, &keypair(1).public()), Ok(()));
        assert!(AuditLog::resume(keypair(2), records.last().unwrap()).is_err());
    }

    #[test]
    fn a_flipped_byte_fails_at_its_record() {
        let (records, key) = chain();
        let text = to_jsonl(&records).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for target in 0..records.len() {
            // Flip one byte inside a string value of line `target`: the reason, the key,
            // the outcome or, failing those, the first hex digit of the signature.
            let line = lines[target];
            let at = [
                "0.50",
                "tokens\":120",
                "forged",
                "quorum (1",
                "unban",
                "quoru",
                "operator",
                "until_ms\":9",
                "quarantined",
                "drill",
                "disagree",
                "climate",
            ][target];
            let pos = line.find(at).unwrap_or_else(|| panic!("{at} in {line}"));
            let mut bytes = line.as_bytes().to_vec();
            let b = &mut bytes[pos + at.len() - 1];
            *b = if b.is_ascii_digit() {
                b'0' + (*b - b'0' + 1) % 10
            } else {
                *b ^ 0x01
            };
            let mut tampered = lines.clone();
            let edited = String::from_utf8(bytes).unwrap();
            tampered[target] = &edited;
            let parsed = from_jsonl(&tampered.join("\n"));
            match parsed {
                Ok(parsed) => assert_eq!(
                    verify_chain(&parsed, &key).map_err(|e| e.index()),
                    Err(Some(target)),
                    "{edited}"
                ),
                // A flip that breaks the JSON itself is caught at its line.
                Err(e) => assert_eq!(e.index(), Some(target)),
            }
        }
        // A flipped signature bit, and a flipped hash bit.
        let mut bad = records.clone();
        bad[3].signature[10] ^= 0x80;
        assert_eq!(
            verify_chain(&bad, &key),
            Err(AuditError::BadSignature { index: 3 })
        );
        let mut bad = records.clone();
        bad[2].hash[0] ^= 0x01;
        assert_eq!(
            verify_chain(&bad, &key),
            Err(AuditError::HashMismatch { index: 2 })
        );
    }

    #[test]
    fn dropped_inserted_and_reordered_records_fail_at_the_gap() {
        let (records, key) = chain();
        let mut dropped = records.clone();
        dropped.remove(4);
        assert_eq!(
            verify_chain(&dropped, &key),
            Err(AuditError::OutOfOrder {
                index: 4,
                found: 5,
                expected: 4
            })
        );
        let mut reordered = records.clone();
        reordered.swap(2, 3);
        assert_eq!(
            verify_chain(&reordered, &key),
            Err(AuditError::OutOfOrder {
                index: 2,
                found: 3,
                expected: 2
            })
        );
        // Renumbering to hide a drop breaks the link (and the hash) instead.
        let mut renumbered = dropped.clone();
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.index = i as u64;
        }
        assert_eq!(
            verify_chain(&renumbered, &key),
            Err(AuditError::BrokenLink { index: 4 })
        );
        // Dropping the first record: the new first is not index 0.
        assert_eq!(
            verify_chain(&records[1..], &key).map_err(|e| e.index()),
            Err(Some(0))
        );
        // A verified segment from the middle.
        assert_eq!(
            verify_segment(&records[3..], &key, records[2].hash, 3),
            Ok(())
        );
        // Record by record: errors name the position among those pushed, and the
        // verifier stays at the last good record.
        let mut v = ChainVerifier::new(key);
        for r in &dropped[..4] {
            v.push(r).unwrap();
        }
        assert_eq!(
            v.push(&dropped[4]),
            Err(AuditError::OutOfOrder {
                index: 4,
                found: 5,
                expected: 4
            })
        );
        assert_eq!((v.verified(), v.next_index()), (4, 4));
        v.push(&records[4]).unwrap();
    }
}
