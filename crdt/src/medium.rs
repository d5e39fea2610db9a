//! The shared medium of one node: its documents, private store, index, event log and
//! sync sessions, over a [`Storage`].
//!
//! Every mutating call builds one storage [`Batch`] and writes it before returning, so
//! whatever a call acknowledges is durable. Reopening replays storage into the same
//! documents, heads and index.

use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::ChangeHash;
use membrane_protocol::codec;
use membrane_protocol::cost::TokenCounter;
use membrane_protocol::entry::EntryError;
use membrane_protocol::envelope::SealError;
use membrane_protocol::permeability::{ExposePolicy, Exposure};
use membrane_protocol::signals::DocRef;
use membrane_protocol::{
    Entry, EntryBody, EntryKind, Envelope, EnvelopeId, Evidence, Key, Keypair, Kind, Presence,
    PublicKey, Retraction, Score, Space, Tag, Tier, TrustEdge,
};

use crate::doc::{DocId, Record, SignedDoc};
use crate::events::{Event, EventKind};
use crate::index::{Conflict, Index, Newest};

mod query;
mod sync;

use crate::storage::{Batch, Storage};
pub use query::{
    Denial, Filter, QueryAnswer, SEARCH_CANDIDATES, SearchAnswer, SearchHit, Withheld, hidden_text,
    render_hit, search_candidates,
};
pub use sync::{MAX_SYNC_FRAME_BYTES, SyncError, SyncFrame, SyncReport};

/// Compact a document once its incremental changes reach this many bytes and exceed its
/// last compacted save.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// How the medium behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the agent may expose, and at which tier at most.
    pub expose: ExposePolicy,
    /// Trusted-tier threshold.
    pub trust_threshold: Score,
    /// Publish a presence trace (key and tier, never the value) for private entries, so
    /// readers learn an entry was hidden. Trusted entries always have one.
    pub trace_private: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            expose: ExposePolicy::default(),
            trust_threshold: Score::DEFAULT_THRESHOLD,
            trace_private: true,
        }
    }
}

/// What an agent asks to expose.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Dotted key.
    pub key: Key,
    /// The digest.
    pub value: String,
    /// Requested tier; none means private.
    pub tier: Option<Tier>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Kind of knowledge.
    pub kind: EntryKind,
    /// How the agent knows.
    pub evidence: Evidence,
    /// What it remixes.
    pub parents: Vec<EnvelopeId>,
    /// Expiry after creation, ms.
    pub ttl_ms: Option<u64>,
    /// Ranking half-life, ms.
    pub half_life_ms: Option<u64>,
}

impl Draft {
    /// A public fact with no tags, parents or expiry: the common case, for tests.
    pub fn new(key: Key, value: impl Into<String>, tier: Option<Tier>) -> Self {
        Self {
            key,
            value: value.into(),
            tier,
            tags: Vec::new(),
            kind: EntryKind::Fact,
            evidence: Evidence::AgentOpinion,
            parents: Vec::new(),
            ttl_ms: None,
            half_life_ms: None,
        }
    }
}

/// The answer to an expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The entry's id.
    pub id: EnvelopeId,
    /// The owner's sequence number.
    pub seq: u64,
    /// The tier it went out at, and why if lower than asked.
    pub exposure: Exposure,
    /// The entry this one superseded, if the key held one.
    pub superseded: Option<EnvelopeId>,
    /// Conflicts on the key after the write.
    pub conflicts: Vec<Conflict>,
}

/// Why a medium call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E: std::error::Error + 'static> {
    /// The node is not a member of the space.
    #[error("not a member of space {0}")]
    UnknownSpace(Space),
    /// The entry breaks a limit.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Sealing failed (the entry does not fit its kind's limit).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The key holds no entry of ours to retract.
    #[error("no entry of yours under key {key} in space {space}")]
    NotFound {
        /// The space.
        space: Space,
        /// The key.
        key: Key,
    },
    /// Trusting oneself is meaningless.
    #[error("a trust edge must name another agent")]
    SelfTrust,
    /// Storage failed; nothing was acknowledged.
    #[error("storage: {0}")]
    Storage(E),
    /// The document refused a local change (a bug, never peer input).
    #[error("document: {0}")]
    Document(String),
    /// A stored document could not be loaded.
    #[error("corrupt storage for {doc}: {detail}")]
    Corrupt {
        /// Document name.
        doc: String,
        /// What failed.
        detail: String,
    },
}

#[derive(Debug, Default)]
pub(crate) struct SpaceState {
    pub(crate) docs: BTreeMap<DocRef, SignedDoc>,
    pub(crate) index: Index,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DocStore {
    next_change: u64,
    change_bytes: u64,
    snapshot_bytes: u64,
}

/// The shared medium of one node.
pub struct Medium<S: Storage> {
    keypair: Keypair,
    me: PublicKey,
    storage: S,
    /// Events were written lazily since the last durable write.
    unflushed: bool,
    config: Config,
    tokens: Arc<dyn TokenCounter>,
    spaces: BTreeMap<Space, SpaceState>,
    stores: BTreeMap<DocId, DocStore>,
    sessions: BTreeMap<(PublicKey, DocId), automerge::sync::State>,
    seq: u64,
    events: Vec<Event>,
}

impl<S: Storage> std::fmt::Debug for Medium<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Medium")
            .field("me", &self.me)
            .field("spaces", &self.spaces.keys().collect::<Vec<_>>())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

const SEQ_KEY: &[u8] = b"m/seq";

pub(crate) fn space_key(space: &Space) -> Vec<u8> {
    format!("m/space/{space}").into_bytes()
}

pub(crate) fn doc_list_key(doc: &DocId) -> Vec<u8> {
    format!("m/doc/{}", doc.name()).into_bytes()
}

pub(crate) fn change_key(doc: &DocId, n: u64) -> Vec<u8> {
    format!("d/{}/c/{n:016x}", doc.name()).into_bytes()
}

pub(crate) fn change_prefix(doc: &DocId) -> Vec<u8> {
    format!("d/{}/c/", doc.name()).into_bytes()
}

pub(crate) fn snapshot_key(doc: &DocId) -> Vec<u8> {
    format!("d/{}/snap", doc.name()).into_bytes()
}

pub(crate) fn sig_key(hash: &ChangeHash) -> Vec<u8> {
    format!("s/{hash}").into_bytes()
}

pub(crate) fn private_key(space: &Space, id: &EnvelopeId) -> Vec<u8> {
    format!("v/{space}/{id}").into_bytes()
}

pub(crate) fn event_key(seq: u64) -> Vec<u8> {
    format!("ev/{seq:016x}").into_bytes()
}

impl<S: Storage> Medium<S> {
    /// Opens the medium stored in `storage` (empty storage gives an empty medium), and
    /// joins the default space.
    pub fn open(
        keypair: Keypair,
        storage: S,
        config: Config,
        tokens: Arc<dyn TokenCounter>,
    ) -> Result<Self, Error<S::Error>> {
        let me = keypair.public();
        let mut medium = Self {
            keypair,
            me,
            storage,
            unflushed: false,
            config,
            tokens,
            spaces: BTreeMap::new(),
            stores: BTreeMap::new(),
            sessions: BTreeMap::new(),
            seq: 0,
            events: Vec::new(),
        };
        medium.load()?;
        medium.join(Space::default_space())?;
        Ok(medium)
    }

    fn load(&mut self) -> Result<(), Error<S::Error>> {
        let storage_err = Error::Storage;
        if let Some(raw) = self.storage.get(SEQ_KEY).map_err(storage_err)? {
            self.seq = raw
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
        }
        for (key, _) in self
            .storage
            .scan_prefix(b"m/space/")
            .map_err(Error::Storage)?
        {
            let name = String::from_utf8_lossy(&key[b"m/space/".len()..]).into_owned();
            if let Ok(space) = name.parse::<Space>() {
                self.spaces.entry(space).or_default();
            }
        }
        for (_, raw) in self
            .storage
            .scan_prefix(b"m/doc/")
            .map_err(Error::Storage)?
        {
            let Ok((space, doc)) = codec::from_slice::<(Space, DocRef)>(&raw, 1024) else {
                continue;
            };
            self.load_doc(DocId { space, doc })?;
        }
        for (key, raw) in self.storage.scan_prefix(b"v/").map_err(Error::Storage)? {
            let name = String::from_utf8_lossy(&key);
            let Some(space) = name.split('/').nth(1).and_then(|s| s.parse::<Space>().ok()) else {
                continue;
            };
            if let Ok(entry) = Envelope::decode(&raw, Kind::Entry.max_frame_bytes(), u64::MAX)
                .and_then(Entry::from_envelope)
            {
                self.spaces
                    .entry(space)
                    .or_default()
                    .index
                    .add_counted(&Record::Entry(entry), &*self.tokens);
            }
        }
        for (_, raw) in self.storage.scan_prefix(b"ev/").map_err(Error::Storage)? {
            if let Ok(event) = codec::from_slice::<Event>(&raw, 64 * 1024) {
                self.events.push(event);
            }
        }
        Ok(())
    }

    fn load_doc(&mut self, id: DocId) -> Result<(), Error<S::Error>> {
        let corrupt = |detail: String| Error::Corrupt {
            doc: id.name(),
            detail,
        };
        let snapshot = self
            .storage
            .get(&snapshot_key(&id))
            .map_err(Error::Storage)?;
        let changes = self
            .storage
            .scan_prefix(&change_prefix(&id))
            .map_err(Error::Storage)?;
        let next_change = changes
            .last()
            .and_then(|(k, _)| {
                let text = String::from_utf8_lossy(k);
                u64::from_str_radix(text.rsplit('/').next()?, 16).ok()
            })
            .map_or(0, |n| n + 1);
        let change_bytes: Vec<Vec<u8>> = changes.into_iter().map(|(_, v)| v).collect();
        let mut doc = SignedDoc::load(id.clone(), &self.me, snapshot.as_deref(), &change_bytes)
            .map_err(|e| corrupt(e.to_string()))?;
        for change in doc.automerge().get_changes(&[]) {
            let hash = change.hash();
            if let Some(raw) = self.storage.get(&sig_key(&hash)).map_err(Error::Storage)?
                && let Ok(sig) = <[u8; 64]>::try_from(raw.as_slice())
            {
                doc.insert_signature(hash, sig);
            }
        }
        let state = self.spaces.entry(id.space.clone()).or_default();
        for record in doc.records() {
            state.index.add_counted(&record, &*self.tokens);
        }
        self.stores.insert(
            id.clone(),
            DocStore {
                next_change,
                change_bytes: change_bytes.iter().map(|c| c.len() as u64).sum(),
                snapshot_bytes: snapshot.map_or(0, |s| s.len() as u64),
            },
        );
        state.docs.insert(id.doc.clone(), doc);
        Ok(())
    }

    /// This node's key.
    pub fn me(&self) -> &PublicKey {
        &self.me
    }

    /// The spaces joined.
    pub fn spaces(&self) -> impl Iterator<Item = &Space> {
        self.spaces.keys()
    }

    /// Joins `space` (idempotent), creating its public document.
    pub fn join(&mut self, space: Space) -> Result<(), Error<S::Error>> {
        let id = DocId::public(space.clone());
        let mut batch = Batch::new();
        batch.put(space_key(&space), Vec::new());
        batch.put(doc_list_key(&id), self.doc_list_value(&id));
        self.storage.write(batch).map_err(Error::Storage)?;
        let me = self.me;
        let state = self.spaces.entry(space).or_default();
        state
            .docs
            .entry(DocRef::Public)
            .or_insert_with(|| SignedDoc::new(id.clone(), &me));
        self.stores.entry(id).or_default();
        Ok(())
    }

    fn doc_list_value(&self, id: &DocId) -> Vec<u8> {
        codec::to_vec(&(&id.space, &id.doc)).unwrap_or_default()
    }

    fn space(&self, space: &Space) -> Result<&SpaceState, Error<S::Error>> {
        self.spaces
            .get(space)
            .ok_or_else(|| Error::UnknownSpace(space.clone()))
    }

    /// The index of `space`.
    pub fn index(&self, space: &Space) -> Option<&Index> {
        self.spaces.get(space).map(|s| &s.index)
    }

    /// The documents of `space` this node holds.
    pub fn docs(&self, space: &Space) -> Vec<&SignedDoc> {
        self.spaces
            .get(space)
            .map(|s| s.docs.values().collect())
            .unwrap_or_default()
    }

    /// Heads of one document, if held.
    pub fn heads(&self, doc: &DocId) -> Option<Vec<ChangeHash>> {
        self.spaces
            .get(&doc.space)?
            .docs
            .get(&doc.doc)
            .map(SignedDoc::heads)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Commits records to one document and adds the persistence of the change to `batch`.
    fn commit_to(
        &mut self,
        id: &DocId,
        records: &[Envelope],
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<(), Error<S::Error>> {
        let me = self.me;
        let state = self
            .spaces
            .get_mut(&id.space)
            .ok_or_else(|| Error::UnknownSpace(id.space.clone()))?;
        let doc = state
            .docs
            .entry(id.doc.clone())
            .or_insert_with(|| SignedDoc::new(id.clone(), &me));
        let change = doc
            .commit(&self.keypair, records, now_ms)
            .map_err(|e| Error::Document(e.to_string()))?;
        batch.put(doc_list_key(id), self.doc_list_value(id));
        batch.put(sig_key(&change.hash), change.signature.to_vec());
        let store = self.stores.entry(id.clone()).or_default();
        batch.put(change_key(id, store.next_change), change.bytes.clone());
        store.next_change += 1;
        store.change_bytes += change.bytes.len() as u64;
        Ok(())
    }

    /// Adds a compaction of every document that needs one to `batch`.
    fn compact_into(&mut self, batch: &mut Batch) -> Result<(), Error<S::Error>> {
        let due: Vec<DocId> = self
            .stores
            .iter()
            .filter(|(_, s)| s.change_bytes >= COMPACT_MIN_BYTES.max(s.snapshot_bytes))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(doc) = self.spaces.get(&id.space).and_then(|s| s.docs.get(&id.doc)) else {
                continue;
            };
            let snapshot = doc.save();
            let old = self
                .storage
                .scan_prefix(&change_prefix(&id))
                .map_err(Error::Storage)?;
            for (key, _) in old {
                batch.delete(key);
            }
            // Changes added earlier in this same batch are in the snapshot too.
            let pending: Vec<Vec<u8>> = batch
                .ops()
                .iter()
                .filter_map(|op| match op {
                    crate::storage::BatchOp::Put(k, _) if k.starts_with(&change_prefix(&id)) => {
                        Some(k.clone())
                    }
                    _ => None,
                })
                .collect();
            for key in pending {
                batch.delete(key);
            }
            let store = self.stores.entry(id.clone()).or_default();
            store.snapshot_bytes = snapshot.len() as u64;
            store.change_bytes = 0;
            batch.put(snapshot_key(&id), snapshot);
        }
        Ok(())
    }

    fn log(&mut self, kind: EventKind, batch: &mut Batch) {
        let seq = self.events.last().map_or(1, |e| e.seq + 1);
        let event = Event { seq, kind };
        if let Ok(bytes) = codec::to_vec(&event) {
            batch.put(event_key(seq), bytes);
        }
        self.events.push(event);
    }

    fn finish(&mut self, mut batch: Batch) -> Result<(), Error<S::Error>> {
        batch.put(SEQ_KEY.to_vec(), self.seq.to_be_bytes().to_vec());
        self.compact_into(&mut batch)?;
        self.storage.write(batch).map_err(Error::Storage)
    }

    /// Exposes an entry: validates it, applies the expose policy, signs it, commits it to
    /// the document of its tier (or the private store), and persists it durably.
    pub fn expose(
        &mut self,
        space: &Space,
        draft: Draft,
        now_ms: u64,
    ) -> Result<Exposed, Error<S::Error>> {
        self.space(space)?;
        let exposure = self
            .config
            .expose
            .apply(&draft.key, &draft.tags, draft.tier);
        let previous = self.own_newest(space, &draft.key);
        let seq = self.seq + 1;
        let body = EntryBody {
            space: space.clone(),
            key: draft.key.clone(),
            value: draft.value,
            tier: exposure.tier,
            tags: draft.tags,
            kind: draft.kind,
            evidence: draft.evidence,
            parents: draft.parents,
            seq,
            ttl_ms: draft.ttl_ms,
            half_life_ms: draft.half_life_ms,
        };
        body.check()?;
        let envelope = Envelope::seal(&self.keypair, now_ms, &body)?;
        let entry =
            Entry::from_envelope(envelope.clone()).map_err(|e| Error::Document(e.to_string()))?;
        self.seq = seq;
        let id = entry.id();
        let mut batch = Batch::new();
        let mut public_records = Vec::new();
        match exposure.tier {
            Tier::Public => public_records.push(envelope),
            Tier::Trusted => {
                let trusted = DocId::trusted(space.clone(), self.me);
                self.commit_to(&trusted, &[envelope], now_ms, &mut batch)?;
            }
            Tier::Private => {
                batch.put(private_key(space, &id), envelope.to_bytes());
            }
        }
        let mut records = vec![Record::Entry(entry)];
        if exposure.tier == Tier::Trusted
            || (exposure.tier == Tier::Private && self.config.trace_private)
        {
            let presence = Presence {
                space: space.clone(),
                key: draft.key.clone(),
                tier: exposure.tier,
                entry: id,
                seq,
            };
            let env = Envelope::seal(&self.keypair, now_ms, &presence)?;
            records.push(Record::Presence(env.clone(), presence));
            public_records.push(env);
        }
        if let Some(old) = previous {
            let retraction = Retraction {
                space: space.clone(),
                key: draft.key.clone(),
                target: old,
                reason: membrane_protocol::entry::RetractionReason::Superseded,
                superseded_by: Some(id),
                note: None,
                seq: self.next_seq(),
            };
            let env = Envelope::seal(&self.keypair, now_ms, &retraction)?;
            records.push(Record::Retraction(env.clone(), retraction));
            public_records.push(env);
        }
        if !public_records.is_empty() {
            self.commit_to(
                &DocId::public(space.clone()),
                &public_records,
                now_ms,
                &mut batch,
            )?;
        }
        let state = self.spaces.entry(space.clone()).or_default();
        for record in &records {
            state.index.add_counted(record, &*self.tokens);
        }
        let conflicts = state
            .index
            .conflicts(draft.key.as_str(), |k| k == &draft.key);
        self.log(
            EventKind::Exposed {
                space: space.clone(),
                id,
                key: draft.key.clone(),
                tier: exposure.tier,
            },
            &mut batch,
        );
        for conflict in &conflicts {
            self.log(
                EventKind::Conflict {
                    space: space.clone(),
                    conflict: conflict.clone(),
                },
                &mut batch,
            );
        }
        self.finish(batch)?;
        Ok(Exposed {
            id,
            seq,
            exposure,
            superseded: previous,
            conflicts,
        })
    }

    fn own_newest(&self, space: &Space, key: &Key) -> Option<EnvelopeId> {
        let index = &self.spaces.get(space)?.index;
        index
            .newest(key.as_str(), |k| k == key)
            .into_iter()
            .find(|(_, owner, _)| owner == &self.me)
            .map(|(_, _, newest)| match newest {
                Newest::Held(id) | Newest::Traced(id, _) => id,
            })
    }

    /// Retracts this node's newest entry under `key`, with a signed retraction record.
    pub fn retract(
        &mut self,
        space: &Space,
        key: &Key,
        note: Option<String>,
        now_ms: u64,
    ) -> Result<EnvelopeId, Error<S::Error>> {
        self.space(space)?;
        let target = self.own_newest(space, key).ok_or_else(|| Error::NotFound {
            space: space.clone(),
            key: key.clone(),
        })?;
        let retraction = Retraction {
            space: space.clone(),
            key: key.clone(),
            target,
            reason: membrane_protocol::entry::RetractionReason::Withdrawn,
            superseded_by: None,
            note,
            seq: self.seq + 1,
        };
        let env = Envelope::seal(&self.keypair, now_ms, &retraction)?;
        let event = EventKind::Retracted {
            space: space.clone(),
            id: target,
            key: key.clone(),
        };
        self.publish_record(space, Record::Retraction(env, retraction), event, now_ms)
    }

    /// Publishes this node's trust in `trustee` as a signed edge in the public document.
    pub fn set_trust(
        &mut self,
        space: &Space,
        trustee: PublicKey,
        score: Score,
        now_ms: u64,
    ) -> Result<EnvelopeId, Error<S::Error>> {
        self.space(space)?;
        if trustee == self.me {
            return Err(Error::SelfTrust);
        }
        let edge = TrustEdge {
            space: space.clone(),
            trustee,
            score,
            seq: self.seq + 1,
        };
        let env = Envelope::seal(&self.keypair, now_ms, &edge)?;
        let event = EventKind::TrustSet {
            space: space.clone(),
            trustee,
            score,
        };
        self.publish_record(space, Record::Trust(env, edge), event, now_ms)
    }

    /// Commits one sealed record of ours (which used the next owner seq) to the public
    /// document of `space`, indexes it, logs `event`, and persists it all in one batch.
    fn publish_record(
        &mut self,
        space: &Space,
        record: Record,
        event: EventKind,
        now_ms: u64,
    ) -> Result<EnvelopeId, Error<S::Error>> {
        self.seq += 1;
        let env = record.envelope().clone();
        let mut batch = Batch::new();
        self.commit_to(
            &DocId::public(space.clone()),
            std::slice::from_ref(&env),
            now_ms,
            &mut batch,
        )?;
        if let Some(state) = self.spaces.get_mut(space) {
            state.index.add_counted(&record, &*self.tokens);
        }
        self.log(event, &mut batch);
        self.finish(batch)?;
        Ok(env.id())
    }

    /// Everyone's trust edges in `space`, with this node's threshold.
    pub fn trust(&self, space: &Space) -> membrane_protocol::permeability::TrustGraph {
        self.spaces.get(space).map_or_else(
            || membrane_protocol::permeability::TrustGraph::new(self.config.trust_threshold),
            |s| s.index.trust_graph(self.config.trust_threshold),
        )
    }

    /// Records something the node observed outside the medium (a broadcast, a threat
    /// signal) in the event log, durably, so agents follow one sequence.
    pub fn note(&mut self, kind: EventKind) -> Result<u64, Error<S::Error>> {
        let mut batch = Batch::new();
        self.log(kind, &mut batch);
        self.storage.write(batch).map_err(Error::Storage)?;
        Ok(self.events.last().map_or(0, |e| e.seq))
    }

    /// Logs an event without waiting for it to be durable (it is once the next durable
    /// write or [`Medium::flush`] returns): for events nobody was promised, such as
    /// what arrived over gossip, so a flood of them costs no disk sync each.
    pub fn note_lazy(&mut self, kind: EventKind) -> Result<u64, Error<S::Error>> {
        let mut batch = Batch::new();
        self.log(kind, &mut batch);
        self.storage.write_lazy(batch).map_err(Error::Storage)?;
        self.unflushed = true;
        Ok(self.events.last().map_or(0, |e| e.seq))
    }

    /// Makes every lazily logged event durable.
    pub fn flush(&mut self) -> Result<(), Error<S::Error>> {
        if self.unflushed {
            self.storage.flush().map_err(Error::Storage)?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// The sequence number of the newest event, 0 when the log is empty.
    pub fn last_event(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }

    /// Events with a sequence number above `seq`, oldest first.
    pub fn events_since(&self, seq: u64) -> &[Event] {
        let start = self.events.partition_point(|e| e.seq <= seq);
        &self.events[start..]
    }

    /// Closes the medium and hands back its storage (to reopen it, or inspect it).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// The storage, for inspection in tests and benchmarks.
    pub fn storage(&self) -> &S {
        &self.storage
    }
}
