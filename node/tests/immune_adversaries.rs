//! The immune layer against hostile nodes, over real libp2p nodes in one process: a forger
//! and trespasser is shut out by every honest node within a bounded number of events and
//! nothing it sent is ever applied; a false accuser, and a Sybil cluster of them, cannot
//! get an honest node quarantined, and a liar whose evidence does not hold up loses its
//! standing; a restarted node still refuses a remembered offender.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod immune_support;

use common::eventually;
use immune_support::{
    addr, anything_arrived_from, honest_mesh, poisoned, received_report, shuts_out, space, spawn,
    spawn_with, standing, wait_shut_out,
};
use membrane_crdt::Draft;
use membrane_immune::{AuditEvent, Verdict};
use membrane_node::NodeHandle;
use membrane_node::storage::SledStorage;
use membrane_protocol::signals::{Severity, ThreatKind, ThreatSignal};
use membrane_protocol::{Keypair, Pattern, PublicKey, Tier};
use serde_bytes::ByteBuf;

fn all() -> Pattern {
    "**".parse().unwrap()
}

/// Whether an audit event concerns `peer` as the one acted on or accused.
fn about(event: &AuditEvent, peer: &PublicKey) -> bool {
    match event {
        AuditEvent::ThreatDetected { detection } => &detection.offender == peer,
        AuditEvent::ThreatReceived { offender, .. } => offender == peer,
        AuditEvent::Quarantine { peer: p, .. } | AuditEvent::Ban { peer: p, .. } => p == peer,
        _ => false,
    }
}

/// Whether an audit event proves an offence of `peer` at this node: detected here at high
/// severity or worse, or reported with evidence this node verified.
fn decisive(event: &AuditEvent) -> bool {
    match event {
        AuditEvent::ThreatDetected { detection } => detection.severity >= Severity::High,
        AuditEvent::ThreatReceived { verdict, .. } => *verdict == Verdict::Confirmed,
        _ => false,
    }
}

/// Checks `node`'s audit log (which must verify) shows `peer` shut out by the very event
/// that first proved its offence: the record after the first decisive one about it is a
/// quarantine or a ban. Returns how many threat records about it came before.
async fn shut_out_at_first_proof(node: &NodeHandle, peer: &PublicKey) -> usize {
    let page = node.audit(0, 1000).await.unwrap();
    assert_eq!(page.problem, None, "the audit log verifies");
    membrane_immune::verify_chain(&page.records, node.id()).unwrap();
    let events: Vec<&AuditEvent> = page
        .records
        .iter()
        .map(|r| &r.event)
        .filter(|e| about(e, peer))
        .collect();
    let shut = |e: &AuditEvent| matches!(e, AuditEvent::Quarantine { .. } | AuditEvent::Ban { .. });
    let first_shut = events.iter().position(|e| shut(e)).expect("shut out");
    let first_proof = events.iter().position(|e| decisive(e)).expect("a proof");
    assert!(
        first_shut <= first_proof + 1,
        "shut out {} records after the first proof: {events:?}",
        first_shut - first_proof
    );
    first_shut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forger_and_trespasser_is_shut_out_by_every_honest_node_within_bounded_events() {
    let honest = honest_mesh(4).await;
    let boot = addr(&honest[0]).await;
    let evil_key = Keypair::from_seed(&[66; 32]);
    let victim = *honest[1].id();
    let (evil, _task) = spawn_with(66, Some(&boot), poisoned(&evil_key, &victim)).await;
    let evil_id = *evil.id();
    // It offers its changes to everyone it can reach; some may refuse it already.
    for node in &honest[1..] {
        let _ = evil.dial(addr(node).await.parse().unwrap()).await;
    }
    for (i, node) in honest.iter().enumerate() {
        wait_shut_out(node, &evil_id, &format!("node {i} shuts the offender out")).await;
        // Bounded: the event that first proves the offence (a forged or trespassing change
        // seen here, or reported with evidence this node verified) shuts it out, and only
        // unverifiable reports (at most one per other honest node and kind) come before.
        let before = shut_out_at_first_proof(node, &evil_id).await;
        assert!(
            before <= 2 * honest.len(),
            "node {i}: {before} threat records before the offender was shut out"
        );
    }
    // Nothing it sent was ever applied anywhere, and honest nodes were never quarantined.
    for (i, node) in honest.iter().enumerate() {
        assert!(
            !anything_arrived_from(node, &evil_id).await,
            "node {i} applied an entry of the offender"
        );
        let answer = node.query(&space(), &all(), true).await.unwrap();
        assert!(
            answer
                .hits
                .iter()
                .all(|e| !e.body().value.starts_with("POISON")),
            "node {i} shows a poisoned record"
        );
        for other in &honest {
            assert!(
                !shuts_out(node, other.id()).await,
                "node {i} shut out an honest node"
            );
        }
    }
    // Honest replication goes on.
    honest[3]
        .expose(
            &space(),
            Draft::new(
                "findings.ok".parse().unwrap(),
                "still fine",
                Some(Tier::Public),
            ),
        )
        .await
        .unwrap();
    for (i, node) in honest.iter().enumerate() {
        eventually(node, &format!("node {i} has findings.ok"), || async {
            node.query(&space(), &"findings.*".parse().unwrap(), false)
                .await
                .unwrap()
                .hits
                .len()
                == 1
        })
        .await;
    }
}

/// A report that `offender` forged something, with no evidence: unverifiable.
fn accusation(offender: PublicKey, nonce: u8) -> ThreatSignal {
    ThreatSignal {
        space: space(),
        offender,
        kind: ThreatKind::Forgery,
        severity: Severity::Fatal,
        evidence_hash: [nonce; 32],
        evidence: None,
    }
}

/// Waits until `node` is connected to every node of `others`.
async fn meet_all(node: &NodeHandle, others: &[NodeHandle]) {
    eventually(node, "meeting every honest node", || async {
        let peers = node.peers().await.unwrap();
        others.iter().all(|o| peers.contains(o.id()))
    })
    .await;
}

/// Has `accuser`, once it meets every honest node, publish `signal`, and waits until every
/// node in `observers` has audited a report by it about `offender`.
async fn accuse_until_heard(
    accuser: &NodeHandle,
    honest: &[NodeHandle],
    observers: &[&NodeHandle],
    offender: &PublicKey,
    signal: ThreatSignal,
) {
    meet_all(accuser, honest).await;
    accuser.publish_threat(signal).await.unwrap();
    for (i, node) in observers.iter().enumerate() {
        eventually(node, &format!("observer {i} hears the accuser"), || {
            received_report(node, accuser.id(), offender)
        })
        .await;
    }
}

/// Reports by `reporter` that `node` refuted.
async fn refuted(node: &NodeHandle, reporter: &PublicKey) -> usize {
    node.audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                AuditEvent::ThreatReceived { reporter: by, verdict: Verdict::Refuted, .. }
                    if by == reporter
            )
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_accuser_gets_no_honest_node_quarantined_and_a_proven_liar_is_shut_out() {
    let honest = honest_mesh(4).await;
    let boot = addr(&honest[0]).await;
    let victim = *honest[1].id();
    honest[1]
        .expose(
            &space(),
            Draft::new(
                "findings.victim".parse().unwrap(),
                "true",
                Some(Tier::Public),
            ),
        )
        .await
        .unwrap();
    let accuser = spawn(70, Some(&boot)).await;
    let observers: Vec<&NodeHandle> = honest.iter().filter(|n| n.id() != &victim).collect();

    // Unverifiable accusations: held for a quorum the accuser can never make alone.
    accuse_until_heard(
        &accuser,
        &honest,
        &observers,
        &victim,
        accusation(victim, 1),
    )
    .await;
    for (i, node) in honest.iter().enumerate() {
        let s = standing(node, &victim).await;
        assert!(
            s.as_ref()
                .is_none_or(|s| s.quarantine.is_none() && s.banned_until_ms.is_none()),
            "node {i} shut the victim out on an unverifiable report: {s:?}"
        );
        assert!(s.is_none_or(|s| s.reputation >= 0.0));
        eventually(
            node,
            &format!("node {i} still shows the victim's entry"),
            || async {
                node.query(&space(), &"findings.victim".parse().unwrap(), false)
                    .await
                    .unwrap()
                    .hits
                    .len()
                    == 1
            },
        )
        .await;
    }
    for node in &observers {
        let held = node.audit(0, 1000).await.unwrap().records.iter().any(|r| {
            matches!(
                &r.event,
                AuditEvent::ThreatReceived { reporter, verdict: Verdict::Unverifiable, outcome, .. }
                    if reporter == accuser.id() && outcome.contains("quorum")
            )
        });
        assert!(held, "the accusation is held for a quorum");
    }

    // Evidence that does not hash to what the report names: refuted, and each refutation
    // costs the liar; twice is enough to quarantine it.
    let liar = *accuser.id();
    for round in 0..2u8 {
        let lie = ThreatSignal {
            evidence: Some(ByteBuf::from(format!("made up {round}").into_bytes())),
            ..accusation(victim, 100 + round)
        };
        accuser.publish_threat(lie).await.unwrap();
        for (i, node) in observers.iter().enumerate() {
            eventually(
                node,
                &format!("observer {i} refutes lie {round}"),
                || async {
                    refuted(node, &liar).await > usize::from(round) || shuts_out(node, &liar).await
                },
            )
            .await;
        }
    }
    for (i, node) in observers.iter().enumerate() {
        wait_shut_out(node, &liar, &format!("observer {i} quarantines the liar")).await;
    }
    for (i, node) in honest.iter().enumerate() {
        assert!(
            standing(node, &victim)
                .await
                .is_none_or(|s| s.quarantine.is_none() && s.banned_until_ms.is_none()),
            "node {i} shut the victim out"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sybil_cluster_of_false_accusers_gets_no_honest_node_quarantined() {
    let honest = honest_mesh(3).await;
    let boot = addr(&honest[0]).await;
    let victim = *honest[2].id();
    let mut sybils = Vec::new();
    for seed in 80..85u8 {
        sybils.push(spawn(seed, Some(&boot)).await);
    }
    let observers: Vec<&NodeHandle> = honest.iter().filter(|n| n.id() != &victim).collect();
    for (k, sybil) in sybils.iter().enumerate() {
        let signal = ThreatSignal {
            kind: ThreatKind::Trespass,
            severity: Severity::High,
            ..accusation(victim, 10 + k as u8)
        };
        accuse_until_heard(sybil, &honest, &observers, &victim, signal).await;
    }
    // Five distinct reporters, none with earned reputation: no quorum, no quarantine.
    for (i, node) in honest.iter().enumerate() {
        let s = standing(node, &victim).await;
        assert!(
            s.as_ref()
                .is_none_or(|s| s.quarantine.is_none() && s.banned_until_ms.is_none()),
            "node {i} shut the victim out on a Sybil quorum: {s:?}"
        );
        assert!(
            s.is_none_or(|s| s.reputation >= 0.0),
            "unverifiable reports cost the victim nothing"
        );
    }
    for node in &observers {
        let page = node.audit(0, 1000).await.unwrap();
        let reporters: std::collections::BTreeSet<PublicKey> = page
            .records
            .iter()
            .filter_map(|r| match &r.event {
                AuditEvent::ThreatReceived {
                    reporter, offender, ..
                } if offender == &victim => Some(*reporter),
                _ => None,
            })
            .collect();
        assert!(reporters.len() >= 5, "{reporters:?}");
        assert!(
            !page.records.iter().any(|r| matches!(
                &r.event,
                AuditEvent::Quarantine { peer, .. } if peer == &victim
            )),
            "no quarantine of the victim was ever audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_still_refuses_a_remembered_offender() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (node, task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let evil_key = Keypair::from_seed(&[66; 32]);
    let (evil, _evil_task) =
        spawn_with(66, Some(&addr(&node).await), poisoned(&evil_key, node.id())).await;
    let evil_id = *evil.id();
    eventually(&node, "the forger is banned", || async {
        standing(&node, &evil_id)
            .await
            .is_some_and(|s| s.banned_until_ms.is_some())
    })
    .await;
    node.shutdown().await;
    task.await.unwrap();

    let (node, _task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let s = standing(&node, &evil_id)
        .await
        .expect("a standing after restart");
    assert!(s.banned_until_ms.is_some(), "the ban is remembered: {s:?}");
    // The gate refuses it: a dial is denied before it starts.
    let refused = node.dial(addr(&evil).await.parse().unwrap()).await;
    assert!(refused.is_err(), "dialling a banned peer: {refused:?}");
    assert!(!node.peers().await.unwrap().contains(&evil_id));
    assert!(!anything_arrived_from(&node, &evil_id).await);
    let answer = node.query(&space(), &all(), true).await.unwrap();
    assert!(answer.hits.is_empty(), "{:?}", answer.hits);
    // The audit chain went on across the restart, and still verifies.
    let page = node.audit(0, 1000).await.unwrap();
    assert_eq!(page.problem, None);
    membrane_immune::verify_chain(&page.records, node.id()).unwrap();
    assert!(page.records.iter().any(|r| matches!(
        &r.event,
        AuditEvent::Ban { peer, .. } if peer == &evil_id
    )));
}
