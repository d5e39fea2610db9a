//! A replayer against the immune layer, over real libp2p nodes in one process: after a
//! forger's changes were rejected (and the forger shut out), another node offers the very
//! same changes. Every honest node refuses them at once by their content signature,
//! without the medium processing them (no rejection by the validity predicate, only a
//! replay detection), shuts the replayer out in that event, applies nothing of it, marks
//! no honest node, and still refuses it after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adversaries;
mod common;
mod immune_support;

use adversaries::{
    Mesh, Poison, arrivals_from, assert_honest_unmarked, events_about, medium_refused_from,
    refuses_on_contact, remembers,
};
use common::eventually;
use immune_support::{addr, space, spawn_with, standing, wait_shut_out};
use membrane_immune::AuditEvent;
use membrane_protocol::Keypair;
use membrane_protocol::signals::{Severity, ThreatKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_of_rejected_changes_is_refused_at_once_by_content_signature() {
    let mut mesh = Mesh::new(4).await;
    let forger_key = Keypair::from_seed(&[66; 32]);
    let poison = Poison::new(&forger_key, mesh.nodes[2].id());
    let signatures = poison.signatures();

    // The forger first: rejected by the validity predicate everywhere, and shut out.
    let (forger, _forger_task) = spawn_with(66, Some(&mesh.boot().await), poison.storage()).await;
    let forger_id = *forger.id();
    for node in &mesh.nodes {
        let _ = forger.dial(addr(node).await.parse().unwrap()).await;
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        wait_shut_out(node, &forger_id, &format!("node {i} shuts the forger out")).await;
        // Each honest node knows the trespassing change by its content signature, from
        // its own detection or from evidence it verified (the forged one only if it saw
        // it itself: a bad signature proves nothing about who sent it, so that report
        // is not verifiable).
        eventually(node, &format!("node {i} remembers the trespass"), || {
            remembers(node, &signatures[0])
        })
        .await;
    }

    // The replayer: another identity offering the very same changes and signatures.
    let (replayer, _replayer_task) =
        spawn_with(88, Some(&mesh.boot().await), poison.storage()).await;
    let replayer_id = *replayer.id();
    for node in &mesh.nodes {
        let _ = replayer.dial(addr(node).await.parse().unwrap()).await;
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        wait_shut_out(
            node,
            &replayer_id,
            &format!("node {i} shuts the replayer out"),
        )
        .await;
        // Never processed by the medium: no rejection by the validity predicate, no
        // forgery or trespass detection, only replays, each refused at once; the replayer
        // is shut out in the event of a replay, after at most two (a replayed trespass
        // is mid, a replayed forgery fatal: sending one again is forging).
        assert!(
            !medium_refused_from(node, &replayer_id).await,
            "node {i} ran the replayed changes through the medium"
        );
        let events = events_about(node, &replayer_id).await;
        let shut = events
            .iter()
            .position(|e| matches!(e, AuditEvent::Quarantine { .. } | AuditEvent::Ban { .. }))
            .unwrap();
        let detected: Vec<(ThreatKind, Severity)> = events
            .iter()
            .filter_map(|e| match e {
                AuditEvent::ThreatDetected { detection } => {
                    Some((detection.kind, detection.severity))
                }
                _ => None,
            })
            .collect();
        assert!(
            !detected.is_empty() && detected.iter().all(|(k, _)| *k == ThreatKind::Replay),
            "node {i}: {detected:?}"
        );
        let replays_first = events[..shut]
            .iter()
            .filter(|e| matches!(e, AuditEvent::ThreatDetected { .. }))
            .count();
        assert!(
            (1..=2).contains(&replays_first)
                && matches!(events[shut - 1], AuditEvent::ThreatDetected { .. }),
            "node {i}: {events:?}"
        );
        if detected.iter().any(|(_, s)| *s == Severity::Fatal) {
            assert!(
                standing(node, &replayer_id)
                    .await
                    .is_some_and(|s| s.banned_until_ms.is_some()),
                "node {i}: a replayed forgery bans"
            );
        }
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        for offender in [&forger_id, &replayer_id] {
            assert_eq!(
                arrivals_from(node, offender).await,
                0,
                "node {i} applied a change of an offender"
            );
        }
        let answer = node
            .query(&space(), &"poison.**".parse().unwrap(), true)
            .await
            .unwrap();
        assert!(answer.hits.is_empty(), "node {i} shows a poisoned record");
    }
    assert_honest_unmarked(&mesh.nodes).await;

    // A restarted honest node still refuses the replayer (and the forger).
    let node = mesh.restart_first().await;
    for offender in [&forger_id, &replayer_id] {
        let s = standing(&node, offender)
            .await
            .expect("a standing after restart");
        assert!(
            s.quarantine.is_some() || s.banned_until_ms.is_some(),
            "forgotten after restart: {s:?}"
        );
    }
    // Banned (it replayed a forgery this node had seen): not let back in. Quarantined
    // only (it replayed the trespass): let in, but nothing it sends is taken.
    let s = standing(&node, &replayer_id).await.unwrap();
    if s.banned_until_ms.is_some() {
        refuses_on_contact(&node, &replayer).await;
    }

    assert_eq!(arrivals_from(&node, &replayer_id).await, 0);
}
