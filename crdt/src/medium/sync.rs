//! Replicating the medium: validated sync sessions per (peer, document).
//!
//! Frames carry an Automerge sync message in the version-1 format (one chunk per change)
//! together with the signature of every change it carries. The receiver validates every
//! change with [`crate::doc::SignedDoc::validate`], applies the valid ones whose
//! dependencies are present, parks the others in a bounded buffer, and hands Automerge the
//! message with only the applied changes so its sync state stays right.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync::{self, SyncDoc};
use automerge::{Change, ChangeHash, ReadDoc};
use membrane_protocol::codec;
use membrane_protocol::signals::DocRef;
use membrane_protocol::{EnvelopeId, PublicKey, Space};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{Medium, change_key, doc_list_key, sig_key};
use crate::doc::{DocId, Record, RejectReason, Rejection, SignedDoc, ValidChange};
use crate::events::EventKind;
use crate::index::Conflict;
use crate::storage::{Batch, Storage};

/// Largest sync frame accepted, before decoding.
pub const MAX_SYNC_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of changes one frame carries at most; the rest of the frame's room is for the
/// heads, the Bloom-filter summary and the signatures.
const FRAME_CHANGE_BUDGET: usize = MAX_SYNC_FRAME_BYTES / 2;
/// CBOR bytes one (hash, signature) pair adds to a frame.
const SIG_ENTRY_BYTES: usize = 1 + 2 + 32 + 2 + 64;
/// What a sync frame did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The document.
    pub doc: DocId,
    /// Changes applied.
    pub applied: usize,
    /// Records they carried.
    pub records: usize,
    /// Changes refused, with reasons. Non-empty means the peer sent bad data.
    pub rejected: Vec<Rejection>,
}

/// Why a sync frame was refused as a whole.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncError {
    /// The frame could not be read.
    #[error("sync frame refused: {0}")]
    Frame(RejectReason),
    /// The frame is for a space this node is not in.
    #[error("sync frame for space {0}, which this node has not joined")]
    UnknownSpace(Space),
    /// The frame carries a trusted document this node may not hold.
    #[error(
        "sync frame carries {owner}'s trusted document, which its owner does not share with this node"
    )]
    NotInAudience {
        /// The document's owner.
        owner: PublicKey,
    },
    /// Storage failed; nothing was applied.
    #[error("storage: {0}")]
    Storage(String),
}

/// The wire form of one sync step for one document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFrame {
    /// Space of the document.
    pub space: Space,
    /// Which document.
    pub doc: DocRef,
    /// An Automerge sync message (version 1 format: one chunk per change).
    pub msg: ByteBuf,
    /// Signatures of the changes the message carries: (change hash, signature).
    pub sigs: Vec<(ByteBuf, ByteBuf)>,
}

impl<S: Storage> Medium<S> {
    /// The documents of `space` that `peer` may receive: the public document, and every
    /// trusted document held whose owner trusts `peer` at or above the threshold.
    pub fn docs_for_peer(&self, space: &Space, peer: &PublicKey) -> Vec<DocId> {
        let Some(state) = self.spaces.get(space) else {
            return Vec::new();
        };
        let trust = state.index.trust_graph(self.config.trust_threshold);
        state
            .docs
            .keys()
            .filter(|doc| match doc {
                DocRef::Public => true,
                DocRef::Trusted(owner) => owner == peer || trust.admits(owner, peer),
            })
            .map(|doc| DocId {
                space: space.clone(),
                doc: doc.clone(),
            })
            .collect()
    }

    /// Forgets sync state with `peer` (on disconnect, or after it sent bad data).
    pub fn drop_sessions(&mut self, peer: &PublicKey) {
        self.sessions.retain(|(p, _), _| p != peer);
    }

    /// Forgets the sync state of one document with `peer`, so the next frame starts over.
    /// Call it when `peer` refused a frame for that document (for instance with
    /// [`SyncError::NotInAudience`], which means "not yet": the owner's trust edge has not
    /// reached it), so nothing the session believes was sent is lost.
    pub fn reset_session(&mut self, peer: &PublicKey, doc: &DocId) {
        self.sessions.remove(&(*peer, doc.clone()));
    }

    /// The next sync frames for `doc` towards `peer`, in order; empty when there is
    /// nothing to say. A message whose changes would not fit one frame is split: every
    /// frame carries the same heads and summary and a share of the changes, each under
    /// [`MAX_SYNC_FRAME_BYTES`], and the receiver applies them as they arrive.
    pub fn sync_generate(&mut self, peer: &PublicKey, doc: &DocId) -> Vec<Vec<u8>> {
        if !self.docs_for_peer(&doc.space, peer).contains(doc) {
            return Vec::new();
        }
        let Some(signed) = self
            .spaces
            .get(&doc.space)
            .and_then(|s| s.docs.get(&doc.doc))
        else {
            return Vec::new();
        };
        let state = self.sessions.entry((*peer, doc.clone())).or_default();
        let Some(mut msg) = signed.automerge().generate_sync_message(state) else {
            return Vec::new();
        };
        // Only the version-1 format carries changes one by one, which is what we validate.
        msg.flags = None;
        // Automerge never saw the changes we parked, so it asks for them by hash; the peer
        // already sent them in this session and will not again. Ask for what they wait on.
        if signed.pending_len() > 0 {
            let mut need = msg.need.clone();
            for hash in signed.missing_through_pending(&msg.need) {
                if !need.contains(&hash) {
                    need.push(hash);
                }
            }
            msg.need = need;
        }
        let chunks: Vec<Vec<u8>> = msg.changes.iter().map(<[u8]>::to_vec).collect();
        msg.changes = Vec::<Vec<u8>>::new().into();
        let mut groups: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
        let mut size = 0;
        for chunk in chunks {
            let cost = chunk.len() + SIG_ENTRY_BYTES;
            if size + cost > FRAME_CHANGE_BUDGET && groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
                size = 0;
            }
            size += cost;
            if let Some(group) = groups.last_mut() {
                group.push(chunk);
            }
        }
        let mut frames = Vec::with_capacity(groups.len());
        for group in groups {
            let mut sigs = Vec::with_capacity(group.len());
            for chunk in &group {
                if let Ok(change) = Change::from_bytes(chunk.clone()) {
                    let hash = change.hash();
                    if let Some(sig) = signed.signature(&hash) {
                        sigs.push((ByteBuf::from(hash.0.to_vec()), ByteBuf::from(sig.to_vec())));
                    }
                }
            }
            let mut part = msg.clone();
            part.changes = group.into();
            let frame = SyncFrame {
                space: doc.space.clone(),
                doc: doc.doc.clone(),
                msg: ByteBuf::from(part.encode()),
                sigs,
            };
            if let Ok(bytes) = codec::to_vec_limited(&frame, MAX_SYNC_FRAME_BYTES) {
                frames.push(bytes);
            }
        }
        frames
    }

    /// Receives a sync frame from `peer`: validates every change it carries, applies the
    /// valid ones whose dependencies are present, parks the rest (bounded), persists, and
    /// reports what was refused.
    pub fn sync_receive(
        &mut self,
        peer: &PublicKey,
        frame: &[u8],
    ) -> Result<SyncReport, SyncError> {
        let frame: SyncFrame = codec::from_slice(frame, MAX_SYNC_FRAME_BYTES).map_err(|e| {
            SyncError::Frame(match e {
                codec::DecodeError::Oversized { len, limit } => {
                    RejectReason::Oversize { len, max: limit }
                }
                other => RejectReason::Undecodable(other.to_string()),
            })
        })?;
        let id = DocId {
            space: frame.space.clone(),
            doc: frame.doc.clone(),
        };
        let state = self
            .spaces
            .get(&id.space)
            .ok_or_else(|| SyncError::UnknownSpace(id.space.clone()))?;
        if let DocRef::Trusted(owner) = &id.doc {
            let trust = state.index.trust_graph(self.config.trust_threshold);
            if owner != &self.me && !trust.admits(owner, &self.me) {
                return Err(SyncError::NotInAudience { owner: *owner });
            }
        }
        let message = catch_unwind(|| sync::Message::decode(&frame.msg))
            .map_err(|_| SyncError::Frame(RejectReason::Panicked))?
            .map_err(|e| SyncError::Frame(RejectReason::Undecodable(e.to_string())))?;
        let mut sigs = BTreeMap::new();
        for (hash, sig) in &frame.sigs {
            let (Ok(hash), Ok(sig)) = (
                <[u8; 32]>::try_from(hash.as_slice()),
                <[u8; 64]>::try_from(sig.as_slice()),
            ) else {
                return Err(SyncError::Frame(RejectReason::Undecodable(
                    "a signature entry is not (32-byte hash, 64-byte signature)".into(),
                )));
            };
            sigs.insert(ChangeHash(hash), sig);
        }
        let mut report = SyncReport {
            doc: id.clone(),
            applied: 0,
            records: 0,
            rejected: Vec::new(),
        };
        let me = self.me;
        let Self {
            spaces,
            sessions,
            stores,
            tokens,
            ..
        } = self;
        let space_state = spaces
            .get_mut(&id.space)
            .ok_or_else(|| SyncError::UnknownSpace(id.space.clone()))?;
        let doc = space_state
            .docs
            .entry(id.doc.clone())
            .or_insert_with(|| SignedDoc::new(id.clone(), &me));
        let mut incoming: Vec<(Change, Option<[u8; 64]>)> = Vec::new();
        for chunk in message.changes.iter() {
            match catch_unwind(|| Change::from_bytes(chunk.to_vec())) {
                Ok(Ok(change)) => {
                    let sig = sigs.get(&change.hash()).copied();
                    incoming.push((change, sig));
                }
                Ok(Err(e)) => report.rejected.push(Rejection {
                    change: None,
                    actor: None,
                    reason: RejectReason::Undecodable(e.to_string()),
                }),
                Err(_) => report.rejected.push(Rejection {
                    change: None,
                    actor: None,
                    reason: RejectReason::Panicked,
                }),
            }
        }
        for (change, sig) in doc.take_pending() {
            incoming.push((change, Some(sig)));
        }
        // Validate, then apply in dependency order; what cannot be ordered yet is parked.
        let index = &space_state.index;
        let mut batch_seqs: BTreeMap<(PublicKey, u64), EnvelopeId> = BTreeMap::new();
        let mut valid: Vec<ValidChange> = Vec::new();
        let mut seen = BTreeSet::new();
        for (change, sig) in incoming {
            let hash = change.hash();
            if doc.automerge().get_change_by_hash(&hash).is_some() || !seen.insert(hash) {
                continue;
            }
            let lookup = |owner: &PublicKey, seq: u64| {
                index
                    .seq_owner(owner, seq)
                    .or_else(|| batch_seqs.get(&(*owner, seq)).copied())
            };
            match doc.validate(&change, sig.as_ref(), &lookup) {
                Ok(records) => {
                    for record in &records {
                        if let Some(seq) = record.seq() {
                            batch_seqs
                                .insert((*record.envelope().author(), seq), record.envelope().id());
                        }
                    }
                    if let Some(signature) = sig {
                        valid.push(ValidChange {
                            change,
                            signature,
                            records,
                        });
                    }
                }
                Err(rejection) => report.rejected.push(rejection),
            }
        }
        let mut ready: Vec<ValidChange> = Vec::new();
        let mut ready_hashes = BTreeSet::new();
        loop {
            let before = ready.len();
            let mut rest = Vec::new();
            for change in valid {
                if doc.deps_met(&change.change, &ready_hashes) {
                    ready_hashes.insert(change.change.hash());
                    ready.push(change);
                } else {
                    rest.push(change);
                }
            }
            valid = rest;
            if ready.len() == before {
                break;
            }
        }
        for change in valid {
            let hash = change.change.hash();
            if let Err(reason) = doc.park(change.change, change.signature) {
                report.rejected.push(Rejection {
                    change: Some(hash),
                    actor: None,
                    reason,
                });
            }
        }
        // Hand Automerge the same message with only the ready changes, so its sync state
        // (their heads, what they need) stays right.
        let mut filtered = message;
        filtered.flags = None;
        filtered.changes = ready
            .iter()
            .map(|c| c.change.raw_bytes().to_vec())
            .collect::<Vec<_>>()
            .into();
        let session = sessions.entry((*peer, id.clone())).or_default();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            doc.automerge_mut().receive_sync_message(session, filtered)
        }));
        let mut batch = Batch::new();
        let mut conflicts: Vec<Conflict> = Vec::new();
        let mut arrivals: Vec<EventKind> = Vec::new();
        match applied {
            Ok(Ok(())) => {
                batch.put(
                    doc_list_key(&id),
                    codec::to_vec(&(&id.space, &id.doc)).unwrap_or_default(),
                );
                let store = stores.entry(id.clone()).or_default();
                let mut new_keys = BTreeSet::new();
                for change in &ready {
                    doc.insert_signature(change.change.hash(), change.signature);
                    batch.put(sig_key(&change.change.hash()), change.signature.to_vec());
                    let bytes = change.change.raw_bytes().to_vec();
                    store.change_bytes += bytes.len() as u64;
                    batch.put(change_key(&id, store.next_change), bytes);
                    store.next_change += 1;
                    for record in &change.records {
                        if !space_state.index.add_counted(record, &**tokens) {
                            continue;
                        }
                        report.records += 1;
                        match record {
                            Record::Entry(entry) => {
                                new_keys.insert(entry.body().key.clone());
                                arrivals.push(EventKind::Arrived {
                                    space: id.space.clone(),
                                    id: entry.id(),
                                    key: entry.body().key.clone(),
                                    owner: *entry.owner(),
                                    tier: entry.body().tier,
                                });
                            }
                            Record::Retraction(envelope, retraction) => {
                                arrivals.push(EventKind::Withdrawn {
                                    space: id.space.clone(),
                                    id: retraction.target,
                                    key: retraction.key.clone(),
                                    owner: *envelope.author(),
                                });
                            }
                            Record::Trust(..) | Record::Presence(..) => {}
                        }
                    }
                }
                report.applied = ready.len();
                conflicts = new_keys
                    .iter()
                    .flat_map(|key| space_state.index.conflicts(key.as_str(), |k| k == key))
                    .collect();
            }
            Ok(Err(e)) => report.rejected.push(Rejection {
                change: None,
                actor: Some(*peer),
                reason: RejectReason::Undecodable(e.to_string()),
            }),
            Err(_) => {
                // The document may be inconsistent: rebuild it from storage.
                sessions.remove(&(*peer, id.clone()));
                space_state.docs.remove(&id.doc);
                self.reload(&id).map_err(SyncError::Storage)?;
                report.rejected.push(Rejection {
                    change: None,
                    actor: Some(*peer),
                    reason: RejectReason::Panicked,
                });
            }
        }
        if report.applied > 0 {
            self.log(
                EventKind::Merged {
                    space: id.space.clone(),
                    doc: id.doc.clone(),
                    from: *peer,
                    changes: report.applied,
                    records: report.records,
                },
                &mut batch,
            );
        }
        for arrival in arrivals {
            self.log(arrival, &mut batch);
        }
        for conflict in conflicts {
            self.log(
                EventKind::Conflict {
                    space: id.space.clone(),
                    conflict,
                },
                &mut batch,
            );
        }
        for rejection in &report.rejected {
            self.log(
                EventKind::Rejected {
                    space: id.space.clone(),
                    doc: id.doc.clone(),
                    from: *peer,
                    reason: rejection.reason.to_string(),
                },
                &mut batch,
            );
        }
        self.finish(batch)
            .map_err(|e| SyncError::Storage(e.to_string()))?;
        Ok(report)
    }

    fn reload(&mut self, id: &DocId) -> Result<(), String> {
        self.load_doc(id.clone()).map_err(|e| e.to_string())
    }
}
