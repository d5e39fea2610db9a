//! One replicated document with signed changes and a validity predicate.
//!
//! Automerge hash-chains changes but neither signs them nor restricts who writes where.
//! [`SignedDoc`] adds both, following Kleppmann, "Making CRDTs Byzantine Fault Tolerant"
//! (PaPoC 2022): every local change is signed over its hash, and a change from a peer is
//! applied only if a deterministic predicate over the change and its causal past holds:
//!
//! 1. its signature strictly verifies under the key equal to its actor id;
//! 2. its dependencies are present (otherwise it waits in a bounded buffer);
//! 3. every op is the first `put` of a byte value under the actor's own key prefix
//!    (see [`crate::layout`]), in a document the actor may write to;
//! 4. every value is a valid envelope signed by the actor, whose id is the key's id, whose
//!    kind matches the namespace and whose payload belongs to this document's space and
//!    audience, and whose owner seq is not already used by another record.
//!
//! Changes that fail are never applied and come back as [`Rejection`]s naming the change
//! and the reason, so the node can report the peer.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::legacy::{Key as OpKey, ObjectId, OpType};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ROOT, ReadDoc, ScalarValue};
use membrane_protocol::envelope::{self, EnvelopeError};
use membrane_protocol::identity::SIGNATURE_LEN;
use membrane_protocol::signals::DocRef;
use membrane_protocol::{
    Entry, Envelope, Keypair, Presence, PublicKey, Retraction, Space, Tier, TrustEdge,
};

use crate::layout::{Namespace, RecordKey};

/// A change signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// Most changes held while waiting for their dependencies, per document.
pub const MAX_PENDING_CHANGES: usize = 4096;

/// Which document: a space's public document, or an owner's trusted document in a space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId {
    /// The space.
    pub space: Space,
    /// Public, or whose trusted document.
    pub doc: DocRef,
}

impl DocId {
    /// The public document of `space`.
    pub fn public(space: Space) -> Self {
        Self {
            space,
            doc: DocRef::Public,
        }
    }

    /// The trusted document of `owner` in `space`.
    pub fn trusted(space: Space, owner: PublicKey) -> Self {
        Self {
            space,
            doc: DocRef::Trusted(owner),
        }
    }

    /// A stable text name, used in storage keys and logs.
    pub fn name(&self) -> String {
        match &self.doc {
            DocRef::Public => format!("{}/public", self.space),
            DocRef::Trusted(owner) => {
                format!(
                    "{}/trusted-{}",
                    self.space,
                    crate::layout::hex(owner.as_bytes())
                )
            }
        }
    }
}

/// Why a peer's change was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Bytes that are not a change (or a frame that is not a sync frame).
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// Larger than allowed.
    #[error("oversize: {len} bytes, the limit is {max}")]
    Oversize {
        /// Bytes received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// No signature came with the change.
    #[error("unsigned change")]
    Unsigned,
    /// A signature that does not verify, an actor that is not a key, or a record signed by
    /// someone other than the change's author.
    #[error("forged: {0}")]
    Forged(String),
    /// A write outside the author's own records, or into a document it may not write.
    #[error("trespass: {0}")]
    Trespass(String),
    /// A record that reuses its owner's sequence number for different content.
    #[error("equivocation: {owner} used seq {seq} twice")]
    Equivocation {
        /// The owner.
        owner: PublicKey,
        /// The reused number.
        seq: u64,
    },
    /// Dependencies did not arrive while the change waited.
    #[error("missing dependencies: the buffer of {max} waiting changes is full")]
    MissingDeps {
        /// Buffer capacity.
        max: usize,
    },
    /// Automerge panicked applying the change; the document was restored.
    #[error("the document library panicked applying this change; the change was discarded")]
    Panicked,
}

/// A refused change and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The change's hash, when it could be decoded.
    pub change: Option<ChangeHash>,
    /// Its actor, when it is a valid key.
    pub actor: Option<PublicKey>,
    /// Why.
    pub reason: RejectReason,
}

/// A record found in a document, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An entry (public or trusted).
    Entry(Entry),
    /// A retraction.
    Retraction(Envelope, Retraction),
    /// A trust edge.
    Trust(Envelope, TrustEdge),
    /// A presence trace.
    Presence(Envelope, Presence),
}

impl Record {
    /// The record's envelope.
    pub fn envelope(&self) -> &Envelope {
        match self {
            Record::Entry(entry) => entry.envelope(),
            Record::Retraction(env, _) | Record::Trust(env, _) | Record::Presence(env, _) => env,
        }
    }

    /// The owner sequence number the record carries, if its kind has one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Record::Entry(entry) => Some(entry.body().seq),
            Record::Retraction(_, r) => Some(r.seq),
            Record::Trust(..) | Record::Presence(..) => None,
        }
    }

    /// Reads and checks a record stored under `key` in document `doc`.
    pub fn from_stored(doc: &DocId, key: &RecordKey, bytes: &[u8]) -> Result<Record, RejectReason> {
        let kind = key.ns.kind();
        // Replicas must agree whatever their clocks say, so stored records are not held to
        // the clock-skew rule (the writer was, when it wrote).
        let envelope = Envelope::decode(bytes, kind.max_frame_bytes(), u64::MAX)
            .map_err(|e| forged_or_undecodable(&e))?;
        if envelope.author() != &key.author {
            return Err(RejectReason::Forged(format!(
                "record under {}'s key is signed by {}",
                key.author,
                envelope.author()
            )));
        }
        if envelope.kind() != kind {
            return Err(RejectReason::Trespass(format!(
                "a {} record in the {} namespace",
                envelope.kind(),
                kind
            )));
        }
        if envelope.id() != key.id {
            return Err(RejectReason::Trespass(format!(
                "key names id {} but the record's id is {}",
                key.id.short(),
                envelope.id().short()
            )));
        }
        let invalid = |e: EnvelopeError| RejectReason::Forged(format!("invalid record: {e}"));
        let record = match key.ns {
            Namespace::Entry => Record::Entry(Entry::from_envelope(envelope).map_err(invalid)?),
            Namespace::Retraction => {
                let body = envelope.open::<Retraction>().map_err(invalid)?;
                Record::Retraction(envelope, body)
            }
            Namespace::Trust => {
                let body = envelope.open::<TrustEdge>().map_err(invalid)?;
                body.check_author(&key.author)
                    .map_err(|e| RejectReason::Forged(e.to_string()))?;
                Record::Trust(envelope, body)
            }
            Namespace::Presence => {
                let body = envelope.open::<Presence>().map_err(invalid)?;
                Record::Presence(envelope, body)
            }
        };
        record.check_placement(doc)?;
        Ok(record)
    }

    /// Whether the record belongs in document `doc`.
    fn check_placement(&self, doc: &DocId) -> Result<(), RejectReason> {
        let space = match self {
            Record::Entry(e) => &e.body().space,
            Record::Retraction(_, r) => &r.space,
            Record::Trust(_, t) => &t.space,
            Record::Presence(_, p) => &p.space,
        };
        if space != &doc.space {
            return Err(RejectReason::Trespass(format!(
                "a record of space {space} in a document of space {}",
                doc.space
            )));
        }
        match (&doc.doc, self) {
            (DocRef::Public, Record::Entry(e)) if e.body().tier != Tier::Public => Err(
                RejectReason::Trespass(format!("a {} entry in a public document", e.body().tier)),
            ),
            (DocRef::Trusted(_), Record::Entry(e)) if e.body().tier != Tier::Trusted => Err(
                RejectReason::Trespass(format!("a {} entry in a trusted document", e.body().tier)),
            ),
            (DocRef::Trusted(_), Record::Entry(_)) | (DocRef::Public, _) => Ok(()),
            (DocRef::Trusted(_), _) => Err(RejectReason::Trespass(
                "only entries belong in a trusted document".into(),
            )),
        }
    }
}

fn forged_or_undecodable(e: &EnvelopeError) -> RejectReason {
    match e {
        EnvelopeError::Decode(d) => RejectReason::Undecodable(d.to_string()),
        other => RejectReason::Forged(other.to_string()),
    }
}

/// A change made here, ready to persist.
#[derive(Debug, Clone)]
pub struct LocalChange {
    /// Its hash.
    pub hash: ChangeHash,
    /// Its encoded bytes.
    pub bytes: Vec<u8>,
    /// Our signature over its hash.
    pub signature: Signature,
}

/// Why a local commit failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Automerge refused the change.
    #[error("the document refused the change: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Nothing to commit.
    #[error("no records to commit")]
    Empty,
}

/// A validated change, ready to apply.
#[derive(Debug, Clone)]
pub struct ValidChange {
    /// The change.
    pub change: Change,
    /// Its author's signature.
    pub signature: Signature,
    /// The records it adds.
    pub records: Vec<Record>,
}

/// A document with signed changes.
#[derive(Debug)]
pub struct SignedDoc {
    id: DocId,
    doc: Automerge,
    signatures: BTreeMap<ChangeHash, Signature>,
    pending: BTreeMap<ChangeHash, (Change, Signature)>,
}

impl SignedDoc {
    /// An empty document whose local actor is `actor`.
    pub fn new(id: DocId, actor: &PublicKey) -> Self {
        let doc = Automerge::new().with_actor(ActorId::from(actor.actor_id().as_slice()));
        Self {
            id,
            doc,
            signatures: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Which document this is.
    pub fn id(&self) -> &DocId {
        &self.id
    }

    /// The Automerge document (read-only).
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// Mutable access for the sync machinery in this crate.
    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// The current heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The signature of change `hash`, if known.
    pub fn signature(&self, hash: &ChangeHash) -> Option<&Signature> {
        self.signatures.get(hash)
    }

    /// Records a signature loaded from storage.
    pub(crate) fn insert_signature(&mut self, hash: ChangeHash, signature: Signature) {
        self.signatures.insert(hash, signature);
    }

    /// Changes waiting for dependencies.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Commits `records` (already sealed by `keypair`) as one signed change.
    pub fn commit(
        &mut self,
        keypair: &Keypair,
        records: &[Envelope],
        now_ms: u64,
    ) -> Result<LocalChange, CommitError> {
        if records.is_empty() {
            return Err(CommitError::Empty);
        }
        let mut tx = self.doc.transaction();
        for record in records {
            let Some(ns) = Namespace::for_kind(record.kind()) else {
                continue;
            };
            let key = RecordKey {
                ns,
                author: *record.author(),
                id: record.id(),
            };
            tx.put(ROOT, key.to_string(), ScalarValue::Bytes(record.to_bytes()))?;
        }
        let time = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time));
        let hash = hash.ok_or(CommitError::Empty)?;
        let bytes = self
            .doc
            .get_change_by_hash(&hash)
            .map(|c| c.raw_bytes().to_vec())
            .ok_or(CommitError::Empty)?;
        let signature = envelope::sign_change(keypair, &hash.0);
        self.signatures.insert(hash, signature);
        Ok(LocalChange {
            hash,
            bytes,
            signature,
        })
    }

    /// Every record in the document, verified (for rebuilding indexes on load).
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for item in self.doc.map_range(ROOT, ..) {
            let Ok(key) = RecordKey::parse(&item.key) else {
                continue;
            };
            if let automerge::ValueRef::Scalar(automerge::ScalarValueRef::Bytes(bytes)) = item.value
                && let Ok(record) = Record::from_stored(&self.id, &key, &bytes)
            {
                out.push(record);
            }
        }
        out
    }

    /// Checks one change from a peer against the validity predicate. `seq_owner` tells
    /// which record already holds an owner's sequence number, if any.
    pub fn validate(
        &self,
        change: &Change,
        signature: Option<&Signature>,
        seq_owner: &dyn Fn(&PublicKey, u64) -> Option<membrane_protocol::EnvelopeId>,
    ) -> Result<Vec<Record>, Rejection> {
        let hash = change.hash();
        let reject = |actor: Option<PublicKey>, reason| Rejection {
            change: Some(hash),
            actor,
            reason,
        };
        let actor = PublicKey::from_bytes(change.actor_id().to_bytes()).map_err(|e| {
            reject(
                None,
                RejectReason::Forged(format!("actor id is not a valid key: {e}")),
            )
        })?;
        let Some(signature) = signature else {
            return Err(reject(Some(actor), RejectReason::Unsigned));
        };
        if !envelope::verify_change(&actor, &hash.0, signature) {
            return Err(reject(
                Some(actor),
                RejectReason::Forged("the change signature does not verify".into()),
            ));
        }
        if let DocRef::Trusted(owner) = &self.id.doc
            && owner != &actor
        {
            return Err(reject(
                Some(actor),
                RejectReason::Trespass(format!("only {owner} writes its trusted document")),
            ));
        }
        // Decoding is Automerge's own code on peer bytes: contain any panic.
        let expanded = catch_unwind(AssertUnwindSafe(|| change.decode()))
            .map_err(|_| reject(Some(actor), RejectReason::Panicked))?;
        let mut records = Vec::with_capacity(expanded.operations.len());
        let mut seqs = BTreeSet::new();
        for op in &expanded.operations {
            let trespass = |why: String| reject(Some(actor), RejectReason::Trespass(why));
            if op.obj != ObjectId::Root || op.insert || !op.pred.is_empty() {
                return Err(trespass(
                    "ops must add new keys to the root map; nothing is nested, inserted or overwritten"
                        .into(),
                ));
            }
            let OpKey::Map(key) = &op.key else {
                return Err(trespass("a sequence op in a map document".into()));
            };
            let OpType::Put(ScalarValue::Bytes(bytes)) = &op.action else {
                return Err(trespass(format!("op on {key} is not a put of bytes")));
            };
            let key = RecordKey::parse(key).map_err(|e| trespass(e.to_string()))?;
            if key.author != actor {
                return Err(trespass(format!(
                    "{actor} wrote under {}'s key",
                    key.author
                )));
            }
            if self.doc.get(ROOT, key.to_string()).ok().flatten().is_some() {
                return Err(trespass(format!("key {key} already exists")));
            }
            let record = Record::from_stored(&self.id, &key, bytes)
                .map_err(|reason| reject(Some(actor), reason))?;
            if let Some(seq) = record.seq() {
                let id = record.envelope().id();
                let taken = seq_owner(&actor, seq).is_some_and(|other| other != id);
                if taken || !seqs.insert(seq) {
                    return Err(reject(
                        Some(actor),
                        RejectReason::Equivocation { owner: actor, seq },
                    ));
                }
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Whether every dependency of `change` is in the document or in `also`.
    pub(crate) fn deps_met(&self, change: &Change, also: &BTreeSet<ChangeHash>) -> bool {
        change
            .deps()
            .iter()
            .all(|d| also.contains(d) || self.doc.get_change_by_hash(d).is_some())
    }

    /// Parks a valid change whose dependencies have not arrived. Refuses past the bound.
    pub(crate) fn park(
        &mut self,
        change: Change,
        signature: Signature,
    ) -> Result<(), RejectReason> {
        if self.pending.len() >= MAX_PENDING_CHANGES && !self.pending.contains_key(&change.hash()) {
            return Err(RejectReason::MissingDeps {
                max: MAX_PENDING_CHANGES,
            });
        }
        self.pending.insert(change.hash(), (change, signature));
        Ok(())
    }

    /// What the document lacks to reach `wanted`, looking through parked changes: a wanted
    /// hash that is parked is replaced by its own missing dependencies, recursively. A peer
    /// asked only for a parked change would not send it again (it believes it did), so the
    /// request must name what the parked change waits for.
    pub(crate) fn missing_through_pending(&self, wanted: &[ChangeHash]) -> Vec<ChangeHash> {
        let mut missing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<ChangeHash> = wanted.to_vec();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) || self.doc.get_change_by_hash(&hash).is_some() {
                continue;
            }
            match self.pending.get(&hash) {
                Some((change, _)) => stack.extend(change.deps().iter().copied()),
                None => {
                    missing.insert(hash);
                }
            }
        }
        missing.into_iter().collect()
    }

    /// Takes every parked change out.
    pub(crate) fn take_pending(&mut self) -> Vec<(Change, Signature)> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    /// Loads a document from a compacted save plus incremental change bytes.
    pub fn load(
        id: DocId,
        actor: &PublicKey,
        snapshot: Option<&[u8]>,
        changes: &[Vec<u8>],
    ) -> Result<Self, automerge::AutomergeError> {
        let mut doc = match snapshot {
            Some(bytes) => Automerge::load(bytes)?,
            None => Automerge::new(),
        }
        .with_actor(ActorId::from(actor.actor_id().as_slice()));
        for bytes in changes {
            doc.load_incremental(bytes)?;
        }
        Ok(Self {
            id,
            doc,
            signatures: BTreeMap::new(),
            pending: BTreeMap::new(),
        })
    }

    /// A compacted save of the whole document.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }
}
