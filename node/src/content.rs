//! Content signatures: the hashes by which the immune layer names, and remembers, what a
//! peer sent.
//!
//! * A **change** is named by SHA-256(`"membrane/v1/change"` ‖ document name ‖ change
//!   hash ‖ signature): the same for that change with that signature in that document,
//!   whatever sync frame carries it and whoever sends it, so a change refused once is
//!   refused unprocessed when anyone offers it again ([`change_signatures`]). The
//!   signature is part of the name, so a forger who sends an honest author's change
//!   under a bad signature cannot get the genuine one refused later; so is the document,
//!   because a change's signature does not cover where it is placed.
//! * A **gossip message** is named, for duplicate content, by what it says
//!   ([`gossip_payload`]): its kind, author and payload, not the instant it was sealed,
//!   so copies sealed again count as one content. (Its replay identity is its message
//!   id, the SHA-256 of its bytes.)

use std::collections::BTreeMap;
use std::panic::catch_unwind;

use automerge::Change;
use automerge::sync;
use membrane_crdt::DocId;
use membrane_crdt::medium::{MAX_SYNC_FRAME_BYTES, SyncFrame};
use membrane_immune::{ContentHash, content_hash};
use membrane_protocol::{Envelope, codec};
use sha2::{Digest, Sha256};

const CHANGE_DOMAIN: &[u8] = b"membrane/v1/change";
const GOSSIP_DOMAIN: &[u8] = b"membrane/v1/gossip";

/// The content signature of the change with hash `change` and `signature` (none, for an
/// unsigned change) in `doc`.
pub fn change_signature(
    doc: &DocId,
    change: &[u8; 32],
    signature: Option<&[u8; 64]>,
) -> ContentHash {
    let name = doc.name();
    let mut h = Sha256::new();
    h.update(CHANGE_DOMAIN);
    h.update((name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    h.update(change);
    match signature {
        Some(sig) => {
            h.update([1]);
            h.update(sig);
        }
        None => h.update([0]),
    }
    h.finalize().into()
}

/// The content signature of every change a sync frame carries that decodes, in order;
/// empty for bytes that are not a sync frame. Bounded like the medium's own decoding (a
/// frame is size-checked before it is parsed) and panics in Automerge's parsers are
/// contained.
pub fn change_signatures(frame: &[u8]) -> Vec<ContentHash> {
    let Ok(frame) = codec::from_slice::<SyncFrame>(frame, MAX_SYNC_FRAME_BYTES) else {
        return Vec::new();
    };
    let Ok(Ok(message)) = catch_unwind(|| sync::Message::decode(&frame.msg)) else {
        return Vec::new();
    };
    let doc = DocId {
        space: frame.space.clone(),
        doc: frame.doc.clone(),
    };
    let sigs: BTreeMap<[u8; 32], [u8; 64]> = frame
        .sigs
        .iter()
        .filter_map(|(hash, sig)| {
            Some((
                <[u8; 32]>::try_from(hash.as_slice()).ok()?,
                <[u8; 64]>::try_from(sig.as_slice()).ok()?,
            ))
        })
        .collect();
    message
        .changes
        .iter()
        .filter_map(|chunk| {
            let change = catch_unwind(|| Change::from_bytes(chunk.to_vec()))
                .ok()?
                .ok()?;
            let hash = change.hash().0;
            Some(change_signature(&doc, &hash, sigs.get(&hash)))
        })
        .collect()
}

/// Whether `evidence` is what `hash` names: bytes hashing to it, or a sync frame carrying
/// a change whose content signature it is.
pub fn names(evidence: &[u8], hash: &ContentHash) -> bool {
    content_hash(evidence) == *hash || change_signatures(evidence).contains(hash)
}

/// What a gossip message says, for duplicate content: its kind, author and payload.
pub fn gossip_payload(envelope: &Envelope) -> ContentHash {
    let mut h = Sha256::new();
    h.update(GOSSIP_DOMAIN);
    h.update(envelope.kind().code().to_be_bytes());
    h.update(envelope.author().as_bytes());
    h.update(envelope.payload());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ROOT};
    use membrane_protocol::signals::{Broadcast, DocRef};
    use membrane_protocol::{Keypair, Space};
    use serde_bytes::ByteBuf;

    fn space() -> Space {
        "content-test".parse().unwrap()
    }

    fn change(seed: u8, value: &str) -> Change {
        let key = Keypair::from_seed(&[seed; 32]);
        let mut doc =
            Automerge::new().with_actor(ActorId::from(key.public().as_bytes().as_slice()));
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", value).unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().clone()
    }

    /// A sync frame for `doc` carrying `changes` with `sigs`, and `heads` as the sender's.
    fn frame(doc: &DocId, changes: &[&Change], sigs: &[[u8; 64]], heads: usize) -> Vec<u8> {
        let message = sync::Message {
            heads: changes.iter().take(heads).map(|c| c.hash()).collect(),
            need: Vec::new(),
            have: Vec::new(),
            changes: changes
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect::<Vec<_>>()
                .into(),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        let frame = SyncFrame {
            space: doc.space.clone(),
            doc: doc.doc.clone(),
            msg: ByteBuf::from(message.encode()),
            sigs: changes
                .iter()
                .zip(sigs)
                .map(|(c, s)| {
                    (
                        ByteBuf::from(c.hash().0.to_vec()),
                        ByteBuf::from(s.to_vec()),
                    )
                })
                .collect(),
        };
        codec::to_vec(&frame).unwrap()
    }

    #[test]
    fn a_change_is_named_the_same_in_any_frame_but_not_with_another_signature_or_place() {
        let public = DocId::public(space());
        let (a, b) = (change(1, "a"), change(2, "b"));
        let (sa, sb) = ([7; 64], [8; 64]);
        let alone = change_signatures(&frame(&public, &[&a], &[sa], 0));
        let with_other = change_signatures(&frame(&public, &[&b, &a], &[sb, sa], 2));
        assert_eq!(alone.len(), 1);
        assert_eq!(
            with_other[1], alone[0],
            "another frame, other heads, same name"
        );
        assert_eq!(alone[0], change_signature(&public, &a.hash().0, Some(&sa)));
        assert_ne!(alone[0], change_signature(&public, &a.hash().0, Some(&sb)));
        assert_ne!(alone[0], change_signature(&public, &a.hash().0, None));
        let trusted = DocId {
            space: space(),
            doc: DocRef::Trusted(Keypair::from_seed(&[1; 32]).public()),
        };
        assert_ne!(alone[0], change_signature(&trusted, &a.hash().0, Some(&sa)));
        // Evidence is named by its bytes or by a change it carries.
        let evidence = frame(&public, &[&a], &[sa], 0);
        assert!(names(&evidence, &alone[0]));
        assert!(names(&evidence, &content_hash(&evidence)));
        assert!(!names(&evidence, &[0; 32]));
        assert!(change_signatures(b"not a frame").is_empty());
    }

    #[test]
    fn a_gossip_payload_sealed_again_is_the_same_content() {
        let key = Keypair::from_seed(&[3; 32]);
        let say = |message: &str, at: u64| {
            let payload = Broadcast {
                space: space(),
                message: message.into(),
            };
            Envelope::seal(&key, at, &payload).unwrap()
        };
        let (first, again) = (say("buy now", 1), say("buy now", 2));
        assert_ne!(first.to_bytes(), again.to_bytes());
        assert_eq!(gossip_payload(&first), gossip_payload(&again));
        assert_ne!(gossip_payload(&first), gossip_payload(&say("buy later", 1)));
        let other = Envelope::seal(
            &Keypair::from_seed(&[4; 32]),
            1,
            &Broadcast {
                space: space(),
                message: "buy now".into(),
            },
        )
        .unwrap();
        assert_ne!(gossip_payload(&first), gossip_payload(&other));
    }
}
