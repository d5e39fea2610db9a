//! An equivocator against the immune layer, over real libp2p nodes in one process: a node
//! that signs two different entries with the same owner seq is shut out by every honest
//! node in the event that proves it (its own detection, or a report whose evidence it
//! verified), the second entry is never applied anywhere, nothing it wrote is shown, no
//! honest node is marked (relaying its first entry is no offence), and a restarted honest
//! node still refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adversaries;
mod common;
mod immune_support;

use adversaries::{
    Equivocation, Mesh, arrived, assert_honest_unmarked, decisive, events_about,
    refuses_on_contact, remembers, shut_out_at,
};
use common::eventually;
use immune_support::{addr, space, spawn_with, standing, wait_shut_out};
use membrane_immune::{AuditEvent, Verdict};
use membrane_protocol::Keypair;
use membrane_protocol::signals::ThreatKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocator_is_shut_out_by_every_honest_node_and_its_second_record_never_applied() {
    let mut mesh = Mesh::new(4).await;
    let evil_key = Keypair::from_seed(&[77; 32]);
    let equivocation = Equivocation::new(&evil_key);
    let (evil, _task) = spawn_with(77, Some(&mesh.boot().await), equivocation.storage()).await;
    let evil_id = *evil.id();
    for node in &mesh.nodes {
        let _ = evil.dial(addr(node).await.parse().unwrap()).await;
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        wait_shut_out(
            node,
            &evil_id,
            &format!("node {i} shuts the equivocator out"),
        )
        .await;
        // Bounded: the event that first proves the equivocation shuts it out; before it
        // come at most the unverifiable reports of the other honest nodes.
        let before = shut_out_at(node, &evil_id, decisive).await;
        assert!(
            before <= 2 * mesh.nodes.len(),
            "node {i}: {before} threat records before the equivocator was shut out"
        );
        let kinds: Vec<ThreatKind> = events_about(node, &evil_id)
            .await
            .iter()
            .filter_map(|e| match e {
                AuditEvent::ThreatDetected { detection } => Some(detection.kind),
                AuditEvent::ThreatReceived { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| *k == ThreatKind::Equivocation),
            "node {i}: {kinds:?}"
        );
        // It knows the offending record by its content signature, from its own detection
        // or from evidence it verified; the other honest nodes' reports carried that
        // evidence, and it held up.
        assert!(remembers(node, &equivocation.second_signature()).await);
        eventually(node, &format!("node {i} verifies a report"), || async {
            events_about(node, &evil_id).await.iter().any(|e| {
                matches!(
                    e,
                    AuditEvent::ThreatReceived {
                        kind: ThreatKind::Equivocation,
                        verdict: Verdict::Confirmed,
                        ..
                    }
                )
            })
        })
        .await;
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        assert!(
            !arrived(node, &equivocation.second).await,
            "node {i} applied the equivocating record"
        );
        let answer = node
            .query(&space(), &"claims.**".parse().unwrap(), true)
            .await
            .unwrap();
        assert!(
            answer.hits.is_empty(),
            "node {i} shows the equivocator's entries"
        );
    }
    assert_honest_unmarked(&mesh.nodes).await;

    // A restarted honest node still refuses it: its standing is remembered, its first
    // record (held) stays hidden, and it is refused when it comes back.
    let node = mesh.restart_first().await;
    let s = standing(&node, &evil_id)
        .await
        .expect("a standing after restart");
    assert!(
        s.quarantine.is_some() || s.banned_until_ms.is_some(),
        "forgotten after restart: {s:?}"
    );
    assert!(s.reputation <= -25.0, "{s:?}");
    let answer = node
        .query(&space(), &"claims.**".parse().unwrap(), true)
        .await
        .unwrap();
    assert!(answer.hits.is_empty());
    if s.banned_until_ms.is_some() {
        refuses_on_contact(&node, &evil).await;
    }
    assert!(!arrived(&node, &equivocation.second).await);
}
