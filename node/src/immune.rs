//! The immune layer, wired into the node: the sans-IO engine ([`membrane_immune::Immune`])
//! with its persistence and its evidence checks.
//!
//! * [`ImmuneStore`]: where the engine's state lives between restarts. With
//!   [`SledStorage`] it is a sled tree of its own ([`TREE`]) in the node's store; with any
//!   other storage (in-process tests, simulations) it is kept in memory. It holds the audit
//!   chain (`a/` + index, one JSON record each), the memory cells (`m/`), the operator's
//!   quarantines (`q/`) and the pause flag.
//! * `Defences` (crate-private): the engine, the audit log's writing end and the store,
//!   kept consistent: every `Audit` action is appended, signed and persisted before the
//!   event loop carries out the rest, memory cells are persisted as soon as they ban or
//!   unban (and on every tick otherwise), operator quarantines and the pause survive a
//!   restart.
//! * Evidence: a rejected change is published with a minimal sync frame holding just that
//!   change and its signature, and a received report's evidence is checked by running the
//!   medium's own validity predicate on it ([`verify_evidence`]): a change *signed by the
//!   accused* that is invalid wherever it could have been placed proves the offence;
//!   evidence whose hash does not match, or that shows nothing wrong at all, refutes the
//!   report; anything else (a forged signature proves nothing about who sent it) is
//!   unverifiable and only counts toward the engine's quorum of reputable reporters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync;
use automerge::{Change, ReadDoc};
use membrane_crdt::doc::SignedDoc;
use membrane_crdt::medium::{MAX_SYNC_FRAME_BYTES, SyncFrame};
use membrane_crdt::{DocId, Medium, RejectReason, Storage};
use membrane_immune::audit::{AuditEvent, AuditLog, AuditRecord, GENESIS};
use membrane_immune::memory::MemoryRecord;
use membrane_immune::{
    Action, Blocked, BreakerKey, BreakerState, ChainVerifier, Config, ContentHash, Fault, Immune,
    Observation, Override, Quarantined, Verdict, content_hash,
};
use membrane_protocol::envelope::verify_change;
use membrane_protocol::signals::{MAX_EVIDENCE_BYTES, ThreatKind, ThreatSignal};
use membrane_protocol::{EnvelopeId, Keypair, PublicKey, Space, codec};
use serde_bytes::ByteBuf;
use tracing::{error, warn};

use crate::storage::SledStorage;

/// The sled tree holding the immune layer's state.
pub const TREE: &str = "immune";
const AUDIT: &[u8] = b"a/";
const MEMORY: &[u8] = b"m/";
const QUARANTINE: &[u8] = b"q/";
const ARCHIVE: &[u8] = b"x/";
const PAUSED: &[u8] = b"paused";

/// Threat records kept in memory for the `threats` verb.
pub const MAX_RECENT_THREATS: usize = 256;
/// Audit records one page holds at most.
pub const MAX_AUDIT_PAGE: usize = 1000;
/// Audit records read from the store at a time when the whole chain is verified at start.
const VERIFY_BATCH: usize = 1024;

/// The store key of audit record `index`.
pub fn audit_key(index: u64) -> Vec<u8> {
    [AUDIT, &index.to_be_bytes()].concat()
}

/// Why the immune store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed.
    #[error("immune store: {0}")]
    Sled(#[from] sled::Error),
}

/// A stored key and its value.
type Pair = (Vec<u8>, Vec<u8>);

enum Backend {
    Sled(sled::Tree),
    Memory(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// Where the immune layer's state is kept: a sled tree, or memory.
pub struct ImmuneStore {
    backend: Backend,
}

impl std::fmt::Debug for ImmuneStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Sled(_) => "sled",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("ImmuneStore")
            .field("backend", &kind)
            .finish()
    }
}

impl ImmuneStore {
    /// A store that forgets everything when dropped.
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(BTreeMap::new()),
        }
    }

    /// The immune tree of a node's sled store.
    pub fn open(storage: &SledStorage) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sled(storage.db().open_tree(TREE)?),
        })
    }

    /// The tree of `storage` if it is a [`SledStorage`], else memory.
    pub(crate) fn for_storage<S: 'static>(storage: &S) -> Result<Self, StoreError> {
        let any: &dyn std::any::Any = storage;
        match any.downcast_ref::<SledStorage>() {
            Some(sled) => Self::open(sled),
            None => Ok(Self::memory()),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match &self.backend {
            Backend::Sled(t) => t.get(key)?.map(|v| v.to_vec()),
            Backend::Memory(m) => m.get(key).cloned(),
        })
    }

    /// Sets `key` (not flushed: see [`ImmuneStore::flush`]). Public for tests that tamper
    /// with a stored record.
    #[doc(hidden)]
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Sled(t) => {
                t.insert(key, value)?;
            }
            Backend::Memory(m) => {
                m.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    /// Removes `key` (not flushed). Public for tests that tamper with the stored log.
    #[doc(hidden)]
    pub fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Sled(t) => {
                t.remove(key)?;
            }
            Backend::Memory(m) => {
                m.remove(key);
            }
        }
        Ok(())
    }

    /// Up to `limit` pairs under `prefix` from `start` on, in key order.
    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        match &self.backend {
            Backend::Sled(t) => t
                .range(start.to_vec()..)
                .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
                .take(limit)
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
                .collect(),
            Backend::Memory(m) => Ok(m
                .range(start.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
        }
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Pair>, StoreError> {
        self.scan_from(prefix, prefix, usize::MAX)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        match &self.backend {
            Backend::Sled(t) => Ok(t
                .scan_prefix(prefix)
                .next_back()
                .transpose()?
                .map(|(k, v)| (k.to_vec(), v.to_vec()))),
            Backend::Memory(m) => Ok(m
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .last()
                .map(|(k, v)| (k.clone(), v.clone()))),
        }
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        if let Backend::Sled(t) = &self.backend {
            t.flush()?;
        }
        Ok(())
    }
}

/// One audit page, verified.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The records, from `since` on.
    pub records: Vec<AuditRecord>,
    /// The index to read on from.
    pub next: u64,
    /// Records in the log.
    pub total: u64,
    /// The hash of the newest record (zeros for an empty log).
    pub head: [u8; 32],
    /// Why the page (or the log) does not verify, if it does not.
    pub problem: Option<String>,
}

/// One peer as the immune layer sees it.
#[derive(Debug, Clone)]
pub struct PeerStanding {
    /// Who.
    pub peer: PublicKey,
    /// Its reputation, in `[-100, 100]`.
    pub reputation: f64,
    /// Its gossipsub application score.
    pub app_score: f64,
    /// Its quarantine, if in force.
    pub quarantine: Option<Quarantined>,
    /// Its ban's end, if banned.
    pub banned_until_ms: Option<u64>,
    /// Whether it is connected now.
    pub connected: bool,
}

/// The immune layer's state, for the `threats` verb.
#[derive(Debug, Clone)]
pub struct ImmuneReport {
    /// Whether the operator paused every crossing.
    pub paused: bool,
    /// Peers with a standing: a non-neutral reputation, a quarantine, a ban, or a
    /// connection.
    pub peers: Vec<PeerStanding>,
    /// The most recent threats detected or received, oldest first.
    pub threats: Vec<AuditRecord>,
    /// Records in the audit log.
    pub audit_records: u64,
    /// Why the audit log does not verify, if it did not at start.
    pub audit_problem: Option<String>,
    /// Delegation breakers that are not closed with no failures, in key order.
    pub breakers: Vec<(BreakerKey, BreakerState)>,
}

/// What the engine decided about one observation, after the audit records were written.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// What the event loop still has to carry out (audit actions included, done).
    pub(crate) actions: Vec<Action>,
    /// The audit records appended.
    pub(crate) records: Vec<AuditRecord>,
}

/// The engine, the audit log and their store, kept consistent.
pub(crate) struct Defences {
    engine: Immune,
    log: AuditLog,
    store: ImmuneStore,
    me: PublicKey,
    quarantined: BTreeSet<PublicKey>,
    recent: VecDeque<AuditRecord>,
    persisted: BTreeMap<Vec<u8>, Vec<u8>>,
    memory_dirty: bool,
    scored: BTreeSet<PublicKey>,
    paused: bool,
    audit_problem: Option<String>,
}

impl std::fmt::Debug for Defences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defences")
            .field("store", &self.store)
            .field("audit_records", &self.log.len())
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

fn is_threat(event: &AuditEvent) -> bool {
    matches!(
        event,
        AuditEvent::ThreatDetected { .. } | AuditEvent::ThreatReceived { .. }
    )
}

impl Defences {
    /// Loads the persisted state: memory cells (expired ones dropped), the audit chain
    /// (verified whole; a problem is logged and reported on every read, and a last record
    /// that does not verify has the chain archived and a new one started), the operator's
    /// quarantines and the pause.
    pub(crate) fn open(
        keypair: &Keypair,
        mut store: ImmuneStore,
        config: Config,
        now_ms: u64,
    ) -> anyhow::Result<Self> {
        let me = keypair.public();
        let mut persisted = BTreeMap::new();
        let mut cells = Vec::new();
        for (k, v) in store.scan(MEMORY)? {
            match serde_json::from_slice::<MemoryRecord>(&v) {
                Ok(record) => cells.push(record),
                Err(e) => warn!(error = %e, "dropping an unreadable memory cell"),
            }
            persisted.insert(k, v);
        }
        let engine = Immune::with_memory(config, me, &cells, now_ms)?;
        let mut audit_problem = verify_stored_chain(&store, me)?.map(|problem| {
            let problem = format!(
                "at start ({now_ms} ms) the audit log failed verification: {problem}; the \
                 records from there on cannot be trusted"
            );
            error!(%problem, "audit log tampered with");
            problem
        });
        let log = match store.last(AUDIT)? {
            None => AuditLog::new(keypair.clone()),
            Some((_, bytes)) => {
                let resumed = serde_json::from_slice::<AuditRecord>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|last| {
                        AuditLog::resume(keypair.clone(), &last).map_err(|e| e.to_string())
                    });
                match resumed {
                    Ok(log) => log,
                    Err(why) => {
                        let archive = [ARCHIVE, &now_ms.to_be_bytes()[..], b"/"].concat();
                        for (k, v) in store.scan(AUDIT)? {
                            store.put(&[archive.as_slice(), &k].concat(), &v)?;
                            store.remove(&k)?;
                        }
                        store.flush()?;
                        let problem = format!(
                            "at start ({now_ms} ms), the audit log's last record did not verify \
                             under this node's key ({why}); the old chain was archived in the \
                             store and a new chain started"
                        );
                        error!(%problem, "audit log tampered with");
                        audit_problem = Some(match audit_problem {
                            Some(first) => format!("{first}; {problem}"),
                            None => problem,
                        });
                        AuditLog::new(keypair.clone())
                    }
                }
            }
        };
        let paused = store.get(PAUSED)?.is_some();
        let mut defences = Self {
            engine,
            log,
            store,
            me,
            quarantined: BTreeSet::new(),
            recent: VecDeque::new(),
            persisted,
            memory_dirty: false,
            scored: BTreeSet::new(),
            paused,
            audit_problem,
        };
        // The operator's quarantines hold until released, restarts included; they were
        // audited when made.
        for (k, _) in defences.store.scan(QUARANTINE)? {
            if let Ok(peer) = PublicKey::from_bytes(&k[QUARANTINE.len()..]) {
                let _ = defences
                    .engine
                    .on_event(Observation::Operator(Override::Quarantine(peer)), now_ms);
                defences.quarantined.insert(peer);
            }
        }
        let len = defences.log.len();
        let from = len.saturating_sub(MAX_RECENT_THREATS as u64);
        for (_, v) in defences
            .store
            .scan_from(AUDIT, &audit_key(from), MAX_RECENT_THREATS)?
        {
            if let Ok(record) = serde_json::from_slice::<AuditRecord>(&v)
                && is_threat(&record.event)
            {
                defences.recent.push_back(record);
            }
        }
        Ok(defences)
    }

    /// Feeds one observation to the engine and records what it decided.
    pub(crate) fn observe(&mut self, observation: Observation, now_ms: u64) -> Outcome {
        let actions = self.engine.on_event(observation, now_ms);
        self.absorb(actions, now_ms, true)
    }

    /// An operator's override; quarantines are remembered across restarts.
    pub(crate) fn operator(&mut self, o: Override, now_ms: u64) -> Outcome {
        if let Override::Quarantine(peer) = o
            && peer != self.me
            && let Err(e) = self.store.put(&[QUARANTINE, peer.as_bytes()].concat(), b"")
        {
            warn!(error = %e, "cannot persist a quarantine");
        }
        self.observe(Observation::Operator(o), now_ms)
    }

    /// Pauses (or resumes) every crossing; audited, persisted. No change, no record.
    pub(crate) fn set_paused(
        &mut self,
        paused: bool,
        reason: Option<String>,
        now_ms: u64,
    ) -> Outcome {
        if self.paused == paused {
            return Outcome::default();
        }
        self.paused = paused;
        let written = if paused {
            self.store.put(PAUSED, b"1")
        } else {
            self.store.remove(PAUSED)
        };
        if let Err(e) = written {
            warn!(error = %e, "cannot persist the pause");
        }
        let event = AuditEvent::Pause { paused, reason };
        self.absorb(vec![Action::Audit(event)], now_ms, true)
    }

    /// Appends records written on the API's side (crossings, budget charges). They are
    /// not flushed one by one (the store flushes on its own within half a second): an
    /// answer does not wait on the disk.
    pub(crate) fn record(&mut self, events: Vec<AuditEvent>, now_ms: u64) -> Outcome {
        self.absorb(
            events.into_iter().map(Action::Audit).collect(),
            now_ms,
            false,
        )
    }

    /// Admits a delegation (taking a half-open breaker's trial) or names the breaker that
    /// blocks it.
    pub(crate) fn admit_delegation(
        &mut self,
        agent: PublicKey,
        capability: &str,
        now_ms: u64,
    ) -> Result<(), Blocked> {
        self.engine.admit_delegation(agent, capability, now_ms)
    }

    /// The breaker that would block a delegation now, without taking a trial.
    pub(crate) fn delegation_blocked(
        &self,
        agent: PublicKey,
        capability: &str,
        now_ms: u64,
    ) -> Option<Blocked> {
        [
            BreakerKey::Agent(agent),
            BreakerKey::Capability(capability.to_owned()),
        ]
        .into_iter()
        .find_map(|key| {
            let breaker = self.engine.breaker(&key);
            (!breaker.would_admit(now_ms)).then(|| Blocked {
                state: breaker.state(),
                key,
            })
        })
    }

    /// Time passed: expire bans and quarantines, persist the memory cells.
    pub(crate) fn tick(&mut self, now_ms: u64) -> Outcome {
        let outcome = self.observe(Observation::Tick, now_ms);
        self.memory_dirty = true;
        self.persist_memory(now_ms);
        outcome
    }

    /// Writes everything out (at shutdown).
    pub(crate) fn flush(&mut self, now_ms: u64) {
        self.memory_dirty = true;
        self.persist_memory(now_ms);
    }

    fn absorb(&mut self, actions: Vec<Action>, now_ms: u64, flush: bool) -> Outcome {
        let mut records = Vec::new();
        let mut bans = false;
        let mut wrote = false;
        for action in &actions {
            match action {
                Action::Audit(event) => match self.log.append(now_ms, event.clone()) {
                    Ok(record) => {
                        match serde_json::to_vec(&record) {
                            Ok(json) => {
                                if let Err(e) = self.store.put(&audit_key(record.index), &json) {
                                    error!(error = %e, "cannot persist an audit record");
                                }
                                wrote = true;
                            }
                            Err(e) => error!(error = %e, "cannot encode an audit record"),
                        }
                        if is_threat(&record.event) {
                            if self.recent.len() >= MAX_RECENT_THREATS {
                                self.recent.pop_front();
                            }
                            self.recent.push_back(record.clone());
                        }
                        records.push(record);
                    }
                    Err(e) => error!(error = %e, "cannot append to the audit log"),
                },
                Action::Quarantine { peer, .. } => {
                    self.quarantined.insert(*peer);
                    // A quarantine by score is a memory cell too: persist it at once.
                    bans = true;
                }
                Action::Release(peer) => {
                    self.quarantined.remove(peer);
                    bans = true;
                    if let Err(e) = self.store.remove(&[QUARANTINE, peer.as_bytes()].concat()) {
                        warn!(error = %e, "cannot forget a quarantine");
                    }
                    wrote = true;
                }
                Action::Ban { .. } | Action::Unban(_) => bans = true,
                Action::LowerScore { .. } => self.memory_dirty = true,
                _ => {}
            }
        }
        if bans {
            self.memory_dirty = true;
            self.persist_memory(now_ms);
        } else if wrote
            && flush
            && let Err(e) = self.store.flush()
        {
            error!(error = %e, "cannot flush the immune store");
        }
        Outcome { actions, records }
    }

    /// Brings the stored memory cells in line with the engine's (only what changed).
    fn persist_memory(&mut self, now_ms: u64) {
        if !self.memory_dirty {
            return;
        }
        self.memory_dirty = false;
        let mut now: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for record in self.engine.memory_records(now_ms) {
            let (Ok(key), Ok(value)) =
                (serde_json::to_vec(&record.key), serde_json::to_vec(&record))
            else {
                continue;
            };
            now.insert([MEMORY, &key].concat(), value);
        }
        let result = (|| -> Result<(), StoreError> {
            for k in self.persisted.keys() {
                if !now.contains_key(k) {
                    self.store.remove(k)?;
                }
            }
            for (k, v) in &now {
                if self.persisted.get(k) != Some(v) {
                    self.store.put(k, v)?;
                }
            }
            self.store.flush()
        })();
        match result {
            Ok(()) => self.persisted = now,
            Err(e) => {
                error!(error = %e, "cannot persist the memory cells");
                self.memory_dirty = true;
            }
        }
    }

    /// Whether a connection from `peer` may stand.
    pub(crate) fn admits(&self, peer: &PublicKey, now_ms: u64) -> bool {
        self.engine.admits(peer, now_ms)
    }

    /// Whether `peer`'s data may be applied (and ours sent to it).
    pub(crate) fn accepts_from(&self, peer: &PublicKey, now_ms: u64) -> bool {
        self.engine.accepts_from(peer, now_ms)
    }

    /// Whether `peer` is held in quarantine now.
    pub(crate) fn is_quarantined(&self, peer: &PublicKey) -> bool {
        self.engine.quarantine(peer).is_some()
    }

    /// Why entries owned by `owner` are hidden from the agent, if they are: it is
    /// quarantined or banned.
    pub(crate) fn hides(&self, owner: &PublicKey, now_ms: u64) -> Option<&'static str> {
        if owner == &self.me {
            None
        } else if self.engine.is_known_offender(owner, now_ms) {
            Some("its owner is banned")
        } else if self.engine.quarantine(owner).is_some() {
            Some("its owner is quarantined")
        } else {
            None
        }
    }

    /// Whether a payload with this hash was rejected before.
    pub(crate) fn is_replayed(&self, content: &ContentHash, now_ms: u64) -> bool {
        self.engine.is_replayed(content, now_ms)
    }

    /// The banned peers, for the ban gate.
    pub(crate) fn banned(&self, now_ms: u64) -> Vec<(PublicKey, u64)> {
        self.engine.banned(now_ms)
    }

    /// At most one threat publication per (offender, kind) per this interval.
    pub(crate) fn publish_interval_ms(&self) -> u64 {
        self.engine.config().publish_interval_ms
    }

    /// Whether every crossing is paused.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// The application score of one peer.
    pub(crate) fn app_score(&self, peer: &PublicKey, now_ms: u64) -> f64 {
        self.engine.app_score(peer, now_ms)
    }

    /// Application scores to hand gossipsub: every non-zero one, and a zero for each peer
    /// that had one last time and has none now (released, forgiven).
    pub(crate) fn app_scores(&mut self, now_ms: u64) -> Vec<(PublicKey, f64)> {
        let scores = self.engine.app_scores(now_ms);
        let now: BTreeSet<PublicKey> = scores.iter().map(|(p, _)| *p).collect();
        let mut out = scores;
        out.extend(self.scored.difference(&now).map(|p| (*p, 0.0)));
        self.scored = now;
        out
    }

    /// The standings and recent threats.
    pub(crate) fn report(
        &self,
        connected: &BTreeSet<PublicKey>,
        limit: usize,
        now_ms: u64,
    ) -> ImmuneReport {
        let banned: BTreeMap<PublicKey, u64> = self.engine.banned(now_ms).into_iter().collect();
        let mut peers: BTreeSet<PublicKey> = self
            .engine
            .app_scores(now_ms)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        peers.extend(banned.keys().copied());
        peers.extend(self.quarantined.iter().copied());
        peers.extend(connected.iter().copied());
        let peers = peers
            .into_iter()
            .map(|peer| PeerStanding {
                peer,
                reputation: self.engine.reputation(&peer, now_ms),
                app_score: self.engine.app_score(&peer, now_ms),
                quarantine: self.engine.quarantine(&peer),
                banned_until_ms: banned.get(&peer).copied(),
                connected: connected.contains(&peer),
            })
            .collect();
        let skip = self.recent.len().saturating_sub(limit);
        ImmuneReport {
            paused: self.paused,
            peers,
            threats: self.recent.iter().skip(skip).cloned().collect(),
            audit_records: self.log.len(),
            audit_problem: self.audit_problem.clone(),
            breakers: self
                .engine
                .breakers()
                .map(|(k, b)| (k.clone(), b.state()))
                .collect(),
        }
    }

    /// Up to `limit` audit records from index `since` on, verified against the record
    /// before them and this node's key.
    pub(crate) fn audit_page(&self, since: u64, limit: usize) -> AuditPage {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let total = self.log.len();
        let mut problem = self.audit_problem.clone();
        let mut note = |p: String| {
            problem = Some(match problem.take() {
                Some(old) => format!("{old}; {p}"),
                None => p,
            });
        };
        let prev_hash = if since == 0 || since > total {
            Some(GENESIS)
        } else {
            match self.store.get(&audit_key(since - 1)) {
                Ok(Some(bytes)) => match serde_json::from_slice::<AuditRecord>(&bytes) {
                    Ok(r) => Some(r.hash),
                    Err(e) => {
                        note(format!("audit record {} is unreadable: {e}", since - 1));
                        None
                    }
                },
                Ok(None) => {
                    note(format!("audit record {} is missing", since - 1));
                    None
                }
                Err(e) => {
                    note(e.to_string());
                    None
                }
            }
        };
        let mut records = Vec::new();
        match self.store.scan_from(AUDIT, &audit_key(since), limit) {
            Ok(rows) => {
                for (i, (_, bytes)) in rows.into_iter().enumerate() {
                    match serde_json::from_slice::<AuditRecord>(&bytes) {
                        Ok(r) => records.push(r),
                        Err(e) => {
                            note(format!(
                                "audit record {} is unreadable: {e}",
                                since + i as u64
                            ));
                            break;
                        }
                    }
                }
            }
            Err(e) => note(e.to_string()),
        }
        if let Some(prev) = prev_hash
            && since <= total
            && let Err(e) = membrane_immune::audit::verify_segment(&records, &self.me, prev, since)
        {
            let at = e.index().map_or(since, |i| since + i as u64);
            note(format!("audit record {at} does not verify: {e}"));
        }
        let next = records.last().map_or(since, |r| r.index + 1);
        AuditPage {
            records,
            next,
            total,
            head: self.log.head(),
            problem,
        }
    }
}

/// Verifies every stored audit record from the first, in batches; why the chain does not
/// verify, naming the first bad record, if it does not.
fn verify_stored_chain(store: &ImmuneStore, me: PublicKey) -> Result<Option<String>, StoreError> {
    let mut verifier = ChainVerifier::new(me);
    loop {
        let from = audit_key(verifier.next_index());
        let rows = store.scan_from(AUDIT, &from, VERIFY_BATCH)?;
        let Some((last_key, _)) = rows.last() else {
            return Ok(None);
        };
        let last_key = last_key.clone();
        for (key, bytes) in rows {
            let record = match serde_json::from_slice::<AuditRecord>(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    return Ok(Some(format!(
                        "audit record {} is unreadable: {e}",
                        stored_index(&key)
                    )));
                }
            };
            if let Err(e) = verifier.push(&record) {
                return Ok(Some(e.to_string()));
            }
        }
        // A record whose key does not follow (one removed) is caught by the verifier on
        // the next batch; a batch that made no progress ends the walk.
        if audit_key(verifier.next_index()) <= last_key {
            return Ok(None);
        }
    }
}

/// The index in an audit record's store key (`a/` + big-endian u64).
fn stored_index(key: &[u8]) -> String {
    key.get(AUDIT.len()..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or_else(|| "?".to_owned(), |b| u64::from_be_bytes(b).to_string())
}

/// The engine's fault for a medium rejection (`None`: equivocation, its own detector).
pub(crate) fn fault_of(reason: &RejectReason) -> Option<Fault> {
    Some(match reason {
        RejectReason::Undecodable(_) => Fault::Undecodable,
        RejectReason::Oversize { .. } => Fault::Oversize,
        RejectReason::Unsigned => Fault::Unsigned,
        RejectReason::Forged(_) => Fault::Forged,
        RejectReason::Trespass(_) => Fault::Trespass,
        RejectReason::Equivocation { .. } => return None,
        RejectReason::MissingDeps { .. } => Fault::MissingDeps,
        RejectReason::Panicked => Fault::Panicked,
        // Reasons added to the medium later: bytes it could not take.
        _ => Fault::Undecodable,
    })
}

fn kind_of(reason: &RejectReason) -> ThreatKind {
    match reason {
        RejectReason::Forged(_) | RejectReason::Unsigned => ThreatKind::Forgery,
        RejectReason::Trespass(_) => ThreatKind::Trespass,
        RejectReason::Equivocation { .. } => ThreatKind::Equivocation,
        _ => ThreatKind::Malformed,
    }
}

/// One change a sync frame carries, with its signature.
pub(crate) struct Carried {
    change: Change,
    chunk: Vec<u8>,
    signature: Option<[u8; 64]>,
}

/// A sync frame, decoded as far as the immune layer needs.
pub(crate) struct Decoded {
    frame: SyncFrame,
    message: sync::Message,
    changes: Vec<Carried>,
}

impl Decoded {
    /// The document the frame is for.
    pub(crate) fn doc(&self) -> DocId {
        DocId {
            space: self.frame.space.clone(),
            doc: self.frame.doc.clone(),
        }
    }
}

/// Decodes a sync frame and the changes it carries (panics in the decoder contained).
pub(crate) fn decode_frame(bytes: &[u8]) -> Option<Decoded> {
    let frame: SyncFrame = codec::from_slice(bytes, MAX_SYNC_FRAME_BYTES).ok()?;
    let message = catch_unwind(|| sync::Message::decode(&frame.msg))
        .ok()?
        .ok()?;
    let mut sigs = BTreeMap::new();
    for (hash, sig) in &frame.sigs {
        if let (Ok(hash), Ok(sig)) = (
            <[u8; 32]>::try_from(hash.as_slice()),
            <[u8; 64]>::try_from(sig.as_slice()),
        ) {
            sigs.insert(hash, sig);
        }
    }
    let mut changes = Vec::new();
    for chunk in message.changes.iter() {
        let chunk = chunk.to_vec();
        if let Ok(Ok(change)) = catch_unwind(AssertUnwindSafe(|| Change::from_bytes(chunk.clone())))
        {
            let signature = sigs.get(&change.hash().0).copied();
            changes.push(Carried {
                change,
                chunk,
                signature,
            });
        }
    }
    Some(Decoded {
        frame,
        message,
        changes,
    })
}

/// The change with hash `hash` in a decoded frame.
pub(crate) fn find_change<'a>(decoded: &'a Decoded, hash: &[u8; 32]) -> Option<&'a Carried> {
    decoded.changes.iter().find(|c| &c.change.hash().0 == hash)
}

/// The signature that came with a carried change, if any.
pub(crate) fn signature_of(change: &Carried) -> Option<[u8; 64]> {
    change.signature
}

/// A sync frame for the same document carrying only `change` and its signature: small,
/// self-verifying evidence (`None` if it would not fit in a threat signal).
pub(crate) fn minimal_evidence(decoded: &Decoded, change: &Carried) -> Option<Vec<u8>> {
    evidence_of(decoded, &[change])
}

/// A sync frame for the same document carrying only `changes` (in order) and their
/// signatures (`None` if it would not fit in a threat signal).
pub(crate) fn evidence_of(decoded: &Decoded, changes: &[&Carried]) -> Option<Vec<u8>> {
    let mut message = decoded.message.clone();
    message.heads = Vec::new();
    message.need = Vec::new();
    message.have = Vec::new();
    message.changes = changes
        .iter()
        .map(|c| c.chunk.clone())
        .collect::<Vec<_>>()
        .into();
    let frame = SyncFrame {
        space: decoded.frame.space.clone(),
        doc: decoded.frame.doc.clone(),
        msg: ByteBuf::from(message.encode()),
        sigs: changes
            .iter()
            .filter_map(|c| {
                c.signature.map(|sig| {
                    (
                        ByteBuf::from(c.change.hash().0.to_vec()),
                        ByteBuf::from(sig.to_vec()),
                    )
                })
            })
            .collect(),
    };
    codec::to_vec_limited(&frame, MAX_EVIDENCE_BYTES).ok()
}

/// Self-verifying evidence of an equivocation: a frame carrying the change in `decoded`
/// that wrote record `first` and the conflicting `second`, both signed by their owner,
/// so any node can check it, whatever it holds (`None` if `first` did not come in the
/// same frame, or it would not fit).
pub(crate) fn equivocation_evidence(
    decoded: &Decoded,
    first: &EnvelopeId,
    second: &Carried,
) -> Option<Vec<u8>> {
    let suffix = format!("/{first}");
    let holder = decoded.changes.iter().find(|c| {
        c.change.hash() != second.change.hash()
            && catch_unwind(AssertUnwindSafe(|| c.change.decode())).is_ok_and(|expanded| {
                expanded.operations.iter().any(|op| {
                    matches!(&op.key, automerge::legacy::Key::Map(key) if key.ends_with(&suffix))
                })
            })
    })?;
    evidence_of(decoded, &[holder, second])
}

/// The author of a change, when its actor is a key and its signature is that key's.
fn signer(change: &Carried) -> Option<PublicKey> {
    let actor = PublicKey::from_bytes(change.change.actor_id().to_bytes()).ok()?;
    let sig = change.signature?;
    verify_change(&actor, &change.change.hash().0, &sig).then_some(actor)
}

/// Why a change signed by its actor is invalid wherever it could have been placed in
/// `space` (the public document, or the actor's own trusted one), if it is: the reason
/// where it was `placed` (when that is one of them). A change that is valid in one of
/// them but was refused where it arrived was misplaced by whoever sent it: its author's
/// signature does not cover the document, so its author is not to blame.
pub(crate) fn authored_fault<S: Storage>(
    medium: &Medium<S>,
    space: &Space,
    placed: &DocId,
    change: &Carried,
    lookup: &dyn Fn(&PublicKey, u64) -> Option<EnvelopeId>,
) -> Option<(PublicKey, RejectReason)> {
    let author = signer(change)?;
    let mut reason = None;
    for doc in [
        DocId::public(space.clone()),
        DocId::trusted(space.clone(), author),
    ] {
        let fresh = SignedDoc::new(doc.clone(), medium.me());
        match fresh.validate(&change.change, change.signature.as_ref(), lookup) {
            Ok(_) => return None,
            // A public entry is also refused from a trusted document, for being there:
            // what it did wrong is said where it was put.
            Err(rejection) if reason.is_none() || &doc == placed => {
                reason = Some(rejection.reason);
            }
            Err(_) => {}
        }
    }
    reason.map(|r| (author, r))
}

/// What a received threat signal's evidence shows about its claim.
pub(crate) fn verify_evidence<S: Storage>(medium: &Medium<S>, signal: &ThreatSignal) -> Verdict {
    let Some(evidence) = &signal.evidence else {
        return Verdict::Unverifiable;
    };
    // Evidence is named by its hash, or (a refused change) by the change's content
    // signature (`crate::content`).
    if !crate::content::names(evidence, &signal.evidence_hash) {
        return Verdict::Refuted;
    }
    // Only a signed change proves who did something; bytes in general do not.
    if !matches!(
        signal.kind,
        ThreatKind::Forgery | ThreatKind::Trespass | ThreatKind::Equivocation
    ) {
        return Verdict::Unverifiable;
    }
    let Some(decoded) = decode_frame(evidence) else {
        // Those claims are about changes, and this is not a sync frame.
        return Verdict::Refuted;
    };
    if decoded.frame.space != signal.space {
        return Verdict::Refuted;
    }
    let doc = decoded.doc();
    let held = medium.docs(&doc.space).into_iter().find(|d| d.id() == &doc);
    let index = medium.index(&doc.space);
    // Seqs taken by the valid changes earlier in the evidence count as held: evidence of
    // an equivocation carries both records, so it verifies wherever it arrives.
    let mut earlier: BTreeMap<(PublicKey, u64), EnvelopeId> = BTreeMap::new();
    let fresh = SignedDoc::new(doc.clone(), medium.me());
    let context = held.unwrap_or(&fresh);
    let mut clean = true;
    for change in &decoded.changes {
        // What this node accepted is valid by its own rules.
        if context
            .automerge()
            .get_change_by_hash(&change.change.hash())
            .is_some()
        {
            continue;
        }
        let lookup = |owner: &PublicKey, seq: u64| -> Option<EnvelopeId> {
            index
                .and_then(|i| i.seq_owner(owner, seq))
                .or_else(|| earlier.get(&(*owner, seq)).copied())
        };
        if let Ok(records) = context.validate(&change.change, change.signature.as_ref(), &lookup) {
            for record in records {
                if let Some(seq) = record.seq() {
                    earlier.insert((*record.envelope().author(), seq), record.envelope().id());
                }
            }
            continue;
        }
        clean = false;
        if let Some((author, reason)) = authored_fault(medium, &doc.space, &doc, change, &lookup)
            && author == signal.offender
            && kind_of(&reason) == signal.kind
        {
            return Verdict::Confirmed;
        }
    }
    // Evidence that carries no change, or only changes valid by this node's rules, shows
    // nothing wrong; an equivocation may need a record this node does not hold.
    if decoded.changes.is_empty() || (clean && signal.kind != ThreatKind::Equivocation) {
        Verdict::Refuted
    } else {
        Verdict::Unverifiable
    }
}

/// The content hash of a gossip message: its id is already the SHA-256 of its data.
pub(crate) fn gossip_content(id: &[u8], data: &[u8]) -> ContentHash {
    <[u8; 32]>::try_from(id).unwrap_or_else(|_| content_hash(data))
}
