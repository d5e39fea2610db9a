//! A peer that sends forged, unsigned, trespassing, equivocating or garbage sync data is
//! refused with a typed reason, and the receiver's state does not change.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use automerge::sync::{Message, MessageVersion};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ROOT};
use common::{NOW, Replica, replica, space, sync_pair};
use membrane_crdt::medium::{MAX_SYNC_FRAME_BYTES, SyncFrame};
use membrane_crdt::{DocId, Draft, RejectReason, SyncError};
use membrane_protocol::envelope::sign_change;
use membrane_protocol::permeability::Reader;
use membrane_protocol::signals::DocRef;
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, Evidence, Keypair, Pattern, Score, Space, Tier, codec,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_bytes::ByteBuf;

/// What a receiver's state looks like from outside.
fn snapshot(r: &Replica, space: &Space) -> (Vec<Vec<automerge::ChangeHash>>, String) {
    let heads = r.docs(space).iter().map(|d| d.heads()).collect::<Vec<_>>();
    let reader = Reader::open(*r.me());
    let answer = r.query(&reader, space, &Pattern::all(), NOW, true).unwrap();
    (heads, format!("{:?}", answer))
}

/// Two honest replicas with some shared state; the first trusts the second.
fn honest() -> (Replica, Replica, Space) {
    let space = space();
    let mut a = replica(1);
    let mut b = replica(2);
    a.join(space.clone()).unwrap();
    b.join(space.clone()).unwrap();
    let b_key = *b.me();
    a.set_trust(&space, b_key, Score::ONE, NOW).unwrap();
    a.expose(
        &space,
        Draft::new("findings.a".parse().unwrap(), "alpha", Some(Tier::Public)),
        NOW,
    )
    .unwrap();
    a.expose(
        &space,
        Draft::new(
            "drafts.a".parse().unwrap(),
            "trusted alpha",
            Some(Tier::Trusted),
        ),
        NOW,
    )
    .unwrap();
    let reports = sync_pair(&mut a, &mut b, &space);
    assert!(reports.iter().all(|r| r.rejected.is_empty()));
    (a, b, space)
}

fn body(space: &Space, key: &str, tier: Tier, seq: u64) -> EntryBody {
    EntryBody {
        space: space.clone(),
        key: key.parse().unwrap(),
        value: format!("attack {key}"),
        tier,
        tags: vec![],
        kind: EntryKind::Fact,
        evidence: Evidence::ToolResult,
        parents: vec![],
        seq,
        ttl_ms: None,
        half_life_ms: None,
    }
}

fn record_key(ns: char, author: &membrane_protocol::PublicKey, env: &Envelope) -> String {
    format!("{ns}/{}/{}", hex::encode(author.as_bytes()), env.id())
}

/// An Automerge change by `actor` putting `puts` at the root.
fn change(actor: &Keypair, puts: Vec<(String, Vec<u8>)>) -> automerge::Change {
    let mut doc = Automerge::new().with_actor(ActorId::from(actor.public().as_bytes().as_slice()));
    let mut tx = doc.transaction();
    for (k, v) in puts {
        tx.put(ROOT, k, automerge::ScalarValue::Bytes(v)).unwrap();
    }
    tx.commit();
    doc.get_last_local_change().unwrap()
}

fn frame(space: &Space, doc: DocRef, changes: Vec<(Vec<u8>, Option<[u8; 64]>)>) -> Vec<u8> {
    let mut sigs = Vec::new();
    let mut chunks = Vec::new();
    for (bytes, sig) in changes {
        if let (Some(sig), Ok(change)) = (sig, automerge::Change::from_bytes(bytes.clone())) {
            sigs.push((
                ByteBuf::from(change.hash().0.to_vec()),
                ByteBuf::from(sig.to_vec()),
            ));
        }
        chunks.push(bytes);
    }
    let msg = Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: chunks.into(),
        flags: None,
        version: MessageVersion::V1,
    };
    codec::to_vec(&SyncFrame {
        space: space.clone(),
        doc,
        msg: ByteBuf::from(msg.encode()),
        sigs,
    })
    .unwrap()
}

fn signed(actor: &Keypair, c: &automerge::Change) -> (Vec<u8>, Option<[u8; 64]>) {
    (
        c.raw_bytes().to_vec(),
        Some(sign_change(actor, &c.hash().0)),
    )
}

/// Delivers `frame` from the attacker to `b` and returns the single rejection reason.
fn rejected(b: &mut Replica, attacker: &Keypair, space: &Space, frame: &[u8]) -> RejectReason {
    let before = snapshot(b, space);
    let report = b.sync_receive(&attacker.public(), frame).unwrap();
    assert_eq!(report.applied, 0, "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(snapshot(b, space), before, "state changed");
    report.rejected[0].reason.clone()
}

#[test]
fn every_kind_of_bad_change_is_refused_and_changes_nothing() {
    let (a, mut b, space) = honest();
    let mallory = Keypair::from_seed(&[66; 32]);
    let m = mallory.public();
    let a_key = *a.me();
    let good = Envelope::seal(&mallory, NOW, &body(&space, "x.y", Tier::Public, 1)).unwrap();
    let good_put = (record_key('e', &m, &good), good.to_bytes());

    // Forged: signed by someone else.
    let c = change(&mallory, vec![good_put.clone()]);
    let wrong_sig = sign_change(&Keypair::from_seed(&[67; 32]), &c.hash().0);
    let f = frame(
        &space,
        DocRef::Public,
        vec![(c.raw_bytes().to_vec(), Some(wrong_sig))],
    );
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Forged(_)
    ));

    // Unsigned.
    let f = frame(&space, DocRef::Public, vec![(c.raw_bytes().to_vec(), None)]);
    assert_eq!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Unsigned
    );

    // Trespass: writing under someone else's key.
    let c = change(
        &mallory,
        vec![(record_key('e', &a_key, &good), good.to_bytes())],
    );
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Trespass(_)
    ));

    // Forged record: someone else's genuine envelope under the attacker's own key.
    let theirs = Envelope::seal(
        &Keypair::from_seed(&[1; 32]),
        NOW,
        &body(&space, "x.z", Tier::Public, 99),
    )
    .unwrap();
    let c = change(
        &mallory,
        vec![(record_key('e', &m, &theirs), theirs.to_bytes())],
    );
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Forged(_)
    ));

    // Trespass: a trusted-tier entry smuggled into the public document.
    let hidden = Envelope::seal(&mallory, NOW, &body(&space, "x.t", Tier::Trusted, 2)).unwrap();
    let c = change(
        &mallory,
        vec![(record_key('e', &m, &hidden), hidden.to_bytes())],
    );
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Trespass(_)
    ));

    // Trespass: writing into a's trusted document (which b holds, as a trusts b).
    let c = change(
        &mallory,
        vec![(record_key('e', &m, &hidden), hidden.to_bytes())],
    );
    let f = frame(&space, DocRef::Trusted(a_key), vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Trespass(_)
    ));

    // Trespass: a nested object instead of a record.
    let mut doc = Automerge::new().with_actor(ActorId::from(m.as_bytes().as_slice()));
    let mut tx = doc.transaction();
    tx.put_object(ROOT, "agents", ObjType::Map).unwrap();
    tx.commit();
    let c = doc.get_last_local_change().unwrap();
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Trespass(_)
    ));

    // Trespass: a key whose id does not match the record.
    let c = change(
        &mallory,
        vec![(
            format!("e/{}/{}", hex::encode(m.as_bytes()), "ab".repeat(32)),
            good.to_bytes(),
        )],
    );
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c)]);
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Trespass(_)
    ));

    // Undecodable change bytes inside a valid frame.
    let f = frame(
        &space,
        DocRef::Public,
        vec![(vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3], None)],
    );
    assert!(matches!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Undecodable(_)
    ));
}

#[test]
fn equivocation_is_refused_after_the_first_use_of_a_seq() {
    let (_a, mut b, space) = honest();
    let mallory = Keypair::from_seed(&[66; 32]);
    let m = mallory.public();
    let first = Envelope::seal(&mallory, NOW, &body(&space, "x.one", Tier::Public, 7)).unwrap();
    let c1 = change(
        &mallory,
        vec![(record_key('e', &m, &first), first.to_bytes())],
    );
    let report = b
        .sync_receive(
            &m,
            &frame(&space, DocRef::Public, vec![signed(&mallory, &c1)]),
        )
        .unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    // A different record with the same seq, in a change that builds on the first.
    let second = Envelope::seal(&mallory, NOW, &body(&space, "x.two", Tier::Public, 7)).unwrap();
    let mut doc = Automerge::new().with_actor(ActorId::from(m.as_bytes().as_slice()));
    doc.apply_changes(vec![c1]).unwrap();
    let mut tx = doc.transaction();
    tx.put(
        ROOT,
        record_key('e', &m, &second),
        automerge::ScalarValue::Bytes(second.to_bytes()),
    )
    .unwrap();
    tx.commit();
    let c2 = doc.get_last_local_change().unwrap();
    let f = frame(&space, DocRef::Public, vec![signed(&mallory, &c2)]);
    assert_eq!(
        rejected(&mut b, &mallory, &space, &f),
        RejectReason::Equivocation { owner: m, seq: 7 }
    );
}

#[test]
fn whole_frames_that_are_not_frames_are_refused() {
    let (_a, mut b, space) = honest();
    let m = Keypair::from_seed(&[66; 32]).public();
    let before = snapshot(&b, &space);
    assert!(matches!(
        b.sync_receive(&m, &[0xFF, 0x00, 0x13]),
        Err(SyncError::Frame(RejectReason::Undecodable(_)))
    ));
    assert!(matches!(
        b.sync_receive(&m, &vec![0; MAX_SYNC_FRAME_BYTES + 1]),
        Err(SyncError::Frame(RejectReason::Oversize { .. }))
    ));
    let other_space: Space = "elsewhere".parse().unwrap();
    let f = frame(&other_space, DocRef::Public, vec![]);
    assert!(matches!(
        b.sync_receive(&m, &f),
        Err(SyncError::UnknownSpace(_))
    ));
    // A trusted document whose owner does not trust this node.
    let f = frame(&space, DocRef::Trusted(m), vec![]);
    assert!(matches!(
        b.sync_receive(&m, &f),
        Err(SyncError::NotInAudience { .. })
    ));
    assert_eq!(snapshot(&b, &space), before);
}

#[test]
fn a_thousand_hostile_payloads_change_nothing_and_never_panic() {
    let (mut a, mut b, space) = honest();
    // A real frame carrying real changes, from a fresh replica's point of view.
    a.expose(
        &space,
        Draft::new("findings.b".parse().unwrap(), "beta", Some(Tier::Public)),
        NOW,
    )
    .unwrap();
    let mut fresh = replica(9);
    fresh.join(space.clone()).unwrap();
    let fresh_key = *fresh.me();
    let a_key = *a.me();
    // First exchange: heads only; second: a frame carrying every change.
    let hello = fresh
        .sync_generate(&a_key, &DocId::public(space.clone()))
        .remove(0);
    a.sync_receive(&fresh_key, &hello).unwrap();
    let full = a
        .sync_generate(&fresh_key, &DocId::public(space.clone()))
        .remove(0);
    let decoded: SyncFrame = codec::from_slice(&full, MAX_SYNC_FRAME_BYTES).unwrap();
    let msg = Message::decode(&decoded.msg).unwrap();
    assert!(msg.changes.len() >= 3, "the frame carries changes");

    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let before = snapshot(&b, &space);
    let mut tried = 0;
    let mut deliver = |payload: Vec<u8>, b: &mut Replica| {
        tried += 1;
        if let Ok(report) = b.sync_receive(&a_key, &payload) {
            assert_eq!(report.applied, 0, "hostile payload applied: {report:?}");
        }
    };
    // Random bytes.
    for len in [0usize, 1, 3, 10, 100, 1000] {
        for _ in 0..50 {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            deliver(bytes, &mut b);
        }
    }
    // Every truncation of the real frame (it is refused as truncated CBOR).
    for len in (0..full.len()).step_by((full.len() / 400).max(1)) {
        deliver(full[..len].to_vec(), &mut b);
    }
    // The real frame with its changes tampered: bit flips in change bytes, kept signatures.
    let chunks: Vec<Vec<u8>> = msg.changes.iter().map(<[u8]>::to_vec).collect();
    for i in 0..400 {
        let mut tampered = chunks.clone();
        let which = rng.next_u32() as usize % tampered.len();
        let _ = which;
        let at = rng.next_u32() as usize % tampered[which].len();
        tampered[which][at] ^= 1 << (i % 8);
        let mut m = msg.clone();
        m.changes = tampered.into();
        let frame = SyncFrame {
            space: space.clone(),
            doc: DocRef::Public,
            msg: ByteBuf::from(m.encode()),
            sigs: decoded.sigs.clone(),
        };
        // Deliver to a fresh replica, which lacks these changes and would apply valid ones.
        let mut target = replica(10);
        target.join(space.clone()).unwrap();
        let target_before = snapshot(&target, &space);
        let genuine: Vec<&[u8]> = decoded.sigs.iter().map(|(h, _)| h.as_slice()).collect();
        match target.sync_receive(&a_key, &codec::to_vec(&frame).unwrap()) {
            Ok(_) => {
                // Untampered changes may legitimately apply, and so may a flip in bytes the
                // change hash does not cover (the chunk checksum): the content is the genuine
                // signed change. Nothing whose hash was not signed ever applies.
                for doc in target.docs(&space) {
                    for c in doc.automerge().get_changes(&[]) {
                        assert!(
                            genuine.contains(&c.hash().0.as_slice()),
                            "tampered change applied"
                        );
                    }
                }
            }
            Err(_) => assert_eq!(snapshot(&target, &space), target_before),
        }
        tried += 1;
    }
    assert_eq!(snapshot(&b, &space), before);
    assert!(tried >= 1000, "only {tried} payloads");
}
