//! Reopening a medium from its storage gives the same documents, heads and answers; the
//! event log resumes; conflicts are recorded; compaction keeps storage bounded.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{NOW, Replica, replica, space, sync_pair};
use membrane_crdt::{Config, DocId, Draft, EventKind, Medium, MemoryStorage, Storage};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::permeability::Reader;
use membrane_protocol::{Keypair, Pattern, Score, Tier};

fn answers(r: &Replica) -> String {
    let reader = Reader::open(*r.me());
    format!(
        "{:?}",
        r.query(&reader, &space(), &Pattern::all(), NOW, true)
            .unwrap()
    )
}

fn reopen(r: Replica, seed: u8) -> Replica {
    let storage = r.into_storage();
    Medium::open(
        Keypair::from_seed(&[seed; 32]),
        storage,
        Config::default(),
        Arc::new(ApproxCounter),
    )
    .unwrap()
}

#[test]
fn reopening_restores_documents_heads_answers_and_events() {
    let space = space();
    let mut a = replica(1);
    let mut b = replica(2);
    a.join(space.clone()).unwrap();
    b.join(space.clone()).unwrap();
    let b_key = *b.me();
    a.set_trust(&space, b_key, Score::ONE, NOW).unwrap();
    for (i, tier) in [Tier::Public, Tier::Trusted, Tier::Private]
        .into_iter()
        .enumerate()
    {
        a.expose(
            &space,
            Draft::new(
                format!("notes.n{i}").parse().unwrap(),
                format!("note {i}"),
                Some(tier),
            ),
            NOW,
        )
        .unwrap();
    }
    a.retract(&space, &"notes.n0".parse().unwrap(), None, NOW)
        .unwrap();
    sync_pair(&mut a, &mut b, &space);
    let heads_a = a.heads(&DocId::public(space.clone())).unwrap();
    let (answers_a, answers_b) = (answers(&a), answers(&b));
    let events_a = a.events_since(0).to_vec();
    assert!(events_a.len() >= 5);

    let a = reopen(a, 1);
    let b = reopen(b, 2);
    assert_eq!(a.heads(&DocId::public(space.clone())).unwrap(), heads_a);
    assert_eq!(b.heads(&DocId::public(space.clone())).unwrap(), heads_a);
    assert_eq!(answers(&a), answers_a);
    assert_eq!(answers(&b), answers_b);
    assert_eq!(a.events_since(0), events_a.as_slice());
    // Resuming from a sequence number gives exactly what came after it.
    let mid = events_a[2].seq;
    assert_eq!(a.events_since(mid), &events_a[3..]);
    // The private entry survived in the private store only.
    let reader = Reader::open(*a.me());
    let private = a
        .query(&reader, &space, &"notes.n2".parse().unwrap(), NOW, false)
        .unwrap();
    assert_eq!(private.hits.len(), 1);
    assert_eq!(private.hits[0].body().tier, Tier::Private);
    // And it keeps going: the owner seq continues after the reopen.
    let mut a = a;
    let next = a
        .expose(
            &space,
            Draft::new("notes.n3".parse().unwrap(), "after", Some(Tier::Public)),
            NOW,
        )
        .unwrap();
    assert!(next.seq > 5);
}

#[test]
fn concurrent_writes_to_one_key_by_two_owners_are_a_conflict_everywhere() {
    let space = space();
    let mut a = replica(1);
    let mut b = replica(2);
    a.join(space.clone()).unwrap();
    b.join(space.clone()).unwrap();
    let key: membrane_protocol::Key = "facts.sea_level_rise".parse().unwrap();
    a.expose(
        &space,
        Draft::new(key.clone(), "0.3 m by 2100", Some(Tier::Public)),
        NOW,
    )
    .unwrap();
    b.expose(
        &space,
        Draft::new(key.clone(), "1.0 m by 2100", Some(Tier::Public)),
        NOW,
    )
    .unwrap();
    assert!(a.conflicts(&space, &Pattern::all()).is_empty());
    sync_pair(&mut a, &mut b, &space);
    let ca = a.conflicts(&space, &Pattern::all());
    let cb = b.conflicts(&space, &Pattern::all());
    assert_eq!(ca.len(), 1);
    assert_eq!(ca, cb);
    assert_eq!(ca[0].key, key);
    assert!(
        a.events_since(0)
            .iter()
            .any(|e| matches!(e.kind, EventKind::Conflict { .. }))
    );
    // A write to a key the other owner holds, with a different value, conflicts at once.
    let mut c = replica(3);
    c.join(space.clone()).unwrap();
    sync_pair(&mut a, &mut c, &space);
    let exposed = c
        .expose(
            &space,
            Draft::new(key.clone(), "2 m", Some(Tier::Public)),
            NOW,
        )
        .unwrap();
    assert_eq!(exposed.conflicts.len(), 1);
    assert_eq!(exposed.conflicts[0].entries.len(), 3);
}

#[test]
fn storage_stays_within_a_small_factor_of_a_compacted_save() {
    let space = space();
    let mut a = replica(1);
    a.join(space.clone()).unwrap();
    for i in 0..600 {
        a.expose(
            &space,
            Draft::new(
                format!("bulk.k{i}").parse().unwrap(),
                format!("value number {i} with a little text"),
                Some(Tier::Public),
            ),
            NOW,
        )
        .unwrap();
    }
    let compacted: u64 = a.docs(&space).iter().map(|d| d.save().len() as u64).sum();
    let stored = a.storage().size_on_disk().unwrap();
    assert!(
        stored < 4 * compacted + 64 * 1024,
        "stored {stored} bytes against a compacted save of {compacted}"
    );
    // Reopening from the compacted form still gives every entry.
    let a = reopen(a, 1);
    let reader = Reader::open(*a.me());
    let hits = a
        .query(&reader, &space, &"bulk.*".parse().unwrap(), NOW, false)
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 600);
    let _ = MemoryStorage::new();
}

#[test]
fn a_large_history_syncs_across_several_bounded_frames() {
    let space = space();
    let mut a = replica(1);
    a.join(space.clone()).unwrap();
    // About 5 MiB of changes: more than one frame's share.
    let value = "x".repeat(8 * 1024);
    for i in 0..650 {
        a.expose(
            &space,
            Draft::new(
                format!("big.k{i}").parse().unwrap(),
                value.clone(),
                Some(Tier::Public),
            ),
            NOW,
        )
        .unwrap();
    }
    let mut b = replica(2);
    b.join(space.clone()).unwrap();
    let doc = DocId::public(space.clone());
    let (ka, kb) = (*a.me(), *b.me());
    let mut largest_frames = 0;
    for _ in 0..20 {
        let to_b = a.sync_generate(&kb, &doc);
        largest_frames = largest_frames.max(to_b.len());
        for f in &to_b {
            assert!(f.len() <= membrane_crdt::medium::MAX_SYNC_FRAME_BYTES);
            let report = b.sync_receive(&ka, f).unwrap();
            assert!(report.rejected.is_empty());
        }
        let to_a = b.sync_generate(&ka, &doc);
        for f in &to_a {
            a.sync_receive(&kb, f).unwrap();
        }
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
    }
    assert!(
        largest_frames >= 2,
        "the history should need several frames"
    );
    assert_eq!(a.heads(&doc), b.heads(&doc));
}
