//! Flooders against the immune layer, over real libp2p nodes in one process: a node that
//! gossips far above any normal rate, one that repeats the same content, and one that
//! writes entries far above any normal rate are each quarantined by every honest node
//! within a bounded number of events, nothing they send after that is taken, no honest
//! node is marked, and a restarted honest node still refuses them. An honest node writing
//! 100 entries a second is never marked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adversaries;
mod common;
mod immune_support;

use std::time::Duration;

use tokio::time::Instant;

use adversaries::{Mesh, arrivals_from, assert_honest_unmarked};
use common::{DEADLINE, eventually};
use immune_support::{addr, shuts_out, space, spawn, spawn_with, standing, wait_shut_out};
use membrane_crdt::{Draft, EventKind};
use membrane_immune::AuditEvent;
use membrane_node::{NodeEvent, NodeHandle};
use membrane_protocol::signals::{Severity, ThreatKind};
use membrane_protocol::{Keypair, PublicKey, Tier};

/// Most marks before a quarantine: five lows make −25, the threshold, only when they come
/// at once; spread over seconds they decay a little, so the sixth does it (fewer when
/// some are mid: a rate four times over the line).
const MARKS_TO_QUARANTINE: usize = 6;

/// These tests flood as fast as a node can send and measure rates by the receivers' clocks;
/// they run one at a time so each has the machine's cores, as a real node would (a node
/// too starved of CPU to read a flood faster than the rate floor cannot see it as one).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn all_shut_out(honest: &[NodeHandle], peer: &PublicKey) -> bool {
    for node in honest {
        if !shuts_out(node, peer).await {
            return false;
        }
    }
    true
}

async fn meet(node: &NodeHandle, others: &[NodeHandle]) {
    eventually(node, "meeting every honest node", || async {
        let peers = node.peers().await.unwrap();
        others.iter().all(|o| peers.contains(o.id()))
    })
    .await;
}

/// Checks each honest node quarantined `offender` in the event of a detection of `kind`
/// it made itself, after at most [`MARKS_TO_QUARANTINE`] of them, all of that kind and
/// none worse than mid.
async fn quarantined_for(honest: &[NodeHandle], offender: &PublicKey, kind: ThreatKind) {
    for (i, node) in honest.iter().enumerate() {
        let events = adversaries::events_about(node, offender).await;
        let shut = events
            .iter()
            .position(|e| matches!(e, AuditEvent::Quarantine { .. }))
            .unwrap_or_else(|| panic!("node {i} never quarantined it: {events:?}"));
        assert!(
            shut > 0
                && matches!(&events[shut - 1], AuditEvent::ThreatDetected { detection } if detection.kind == kind),
            "node {i}: the quarantine does not follow a {kind:?} detection: {events:?}"
        );
        let found: Vec<_> = events[..shut]
            .iter()
            .filter_map(|e| match e {
                AuditEvent::ThreatDetected { detection } => {
                    Some((detection.kind, detection.severity))
                }
                _ => None,
            })
            .collect();
        assert!(
            found.len() <= MARKS_TO_QUARANTINE
                && found.iter().all(|(k, s)| *k == kind && *s <= Severity::Mid),
            "node {i} quarantined after {found:?}"
        );
    }
}

/// After `offender` is shut out everywhere: it says something, then an honest node does;
/// once the honest word reached every node, none of them took the offender's. Gossip
/// does not promise delivery (a flood can fill the links' send queues, and a message
/// dropped there is gone once it leaves the gossip history), so the honest node says
/// its word again, as a new message, whenever a node has not heard it for a while.
async fn nothing_more_taken(mesh: &Mesh, offender: &NodeHandle) {
    const MARKER: &str = "honest marker";
    let last = "after the quarantine";
    let mut feeds: Vec<_> = mesh.nodes.iter().map(NodeHandle::subscribe).collect();
    offender.broadcast(&space(), last.into()).await.unwrap();
    let honest = &mesh.nodes[1];
    let say = async |n: u32| {
        honest
            .broadcast(&space(), format!("{MARKER} {n}"))
            .await
            .unwrap();
    };
    let mut said = 1;
    say(said).await;
    let deadline = Instant::now() + DEADLINE;
    for (i, feed) in feeds.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
        loop {
            let quiet = (Instant::now() + Duration::from_secs(3)).min(deadline);
            match tokio::time::timeout_at(quiet, feed.recv()).await {
                Ok(Ok(NodeEvent::Medium(event))) => match &event.kind {
                    EventKind::Broadcast { from, message, .. }
                        if from == honest.id() && message.starts_with(MARKER) =>
                    {
                        break;
                    }
                    EventKind::Broadcast { from, message, .. } => assert!(
                        !(from == offender.id() && message == last),
                        "node {i} took gossip from a quarantined node"
                    ),
                    _ => {}
                },
                Ok(Ok(_)) => {}
                // The feed fell behind the flood's events: what it skipped is not checked
                // here (the medium's own answers are, by the callers).
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("node {i}: {e}"),
                Err(_) if Instant::now() >= deadline => {
                    let view = standing(&mesh.nodes[i], honest.id()).await;
                    let peers = mesh.nodes[i].peers().await;
                    panic!(
                        "node {i} never heard the marker, said {said} times; its view of the \
                         honest speaker: {view:?}; its peers: {peers:?}"
                    )
                }
                Err(_) => {
                    said += 1;
                    say(said).await;
                }
            }
        }
    }
}

/// Restarts the mesh's first node and checks it still refuses `offender` at once.
async fn restarted_still_refuses(mesh: &mut Mesh, offender: &PublicKey) {
    let node = mesh.restart_first().await;
    let s = standing(&node, offender)
        .await
        .expect("a standing after restart");
    assert!(
        s.quarantine.is_some() || s.banned_until_ms.is_some(),
        "the restarted node forgot the offender: {s:?}"
    );
    let answer = node
        .query(&space(), &"**".parse().unwrap(), true)
        .await
        .unwrap();
    assert!(
        answer.hits.iter().all(|e| e.owner() != offender),
        "the restarted node shows the offender's entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_flooder_is_quarantined_by_every_honest_node_within_bounded_events() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut mesh = Mesh::new(4).await;
    let flooder = spawn(90, Some(&mesh.boot().await)).await;
    let id = *flooder.id();
    meet(&flooder, &mesh.nodes).await;
    // Distinct messages as fast as its node publishes them, far above the 50/s any peer
    // may gossip without a history, until every honest node shut it out.
    let flood = {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            for n in 0..200_000u32 {
                if flooder
                    .broadcast(&space(), format!("flood {n}"))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    for (i, node) in mesh.nodes.iter().enumerate() {
        wait_shut_out(node, &id, &format!("node {i} shuts the gossip flooder out")).await;
    }
    flood.abort();
    quarantined_for(&mesh.nodes, &id, ThreatKind::RateAnomaly).await;
    nothing_more_taken(&mesh, &flooder).await;
    assert_honest_unmarked(&mesh.nodes).await;
    restarted_still_refuses(&mut mesh, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_content_flooder_is_quarantined_by_every_honest_node() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut mesh = Mesh::new(4).await;
    let flooder = spawn(91, Some(&mesh.boot().await)).await;
    let id = *flooder.id();
    meet(&flooder, &mesh.nodes).await;
    // The same words over and over, each copy sealed anew (a new gossip message; two
    // sealed in the same millisecond are one, which gossipsub does not send twice), at
    // most 200 in all so the rate stays normal: only the repetition offends.
    let mut sent = 0;
    while !all_shut_out(&mesh.nodes, &id).await {
        assert!(sent < 200, "still not shut out after {sent} copies");
        flooder.broadcast(&space(), "BUY NOW".into()).await.unwrap();
        sent += 1;
    }
    quarantined_for(&mesh.nodes, &id, ThreatKind::Flooding).await;
    nothing_more_taken(&mesh, &flooder).await;
    assert_honest_unmarked(&mesh.nodes).await;
    restarted_still_refuses(&mut mesh, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_flooder_is_quarantined_and_its_entries_hidden_everywhere() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut mesh = Mesh::new(4).await;
    // 30,000 entries signed just now, pushed to every peer as it connects: far above the
    // 500/s any owner may write without a history. (An adversary need not go through an
    // honest node's write path; this one is faster than this test machine could make
    // that path go.)
    let evil = Keypair::from_seed(&[92; 32]);
    let storage = adversaries::entry_flood(&evil, 30_000, adversaries::now_ms());
    let (flooder, _task) = spawn_with(92, Some(&mesh.boot().await), storage).await;
    let id = *flooder.id();
    for node in &mesh.nodes {
        let _ = flooder.dial(addr(node).await.parse().unwrap()).await;
    }
    for (i, node) in mesh.nodes.iter().enumerate() {
        wait_shut_out(node, &id, &format!("node {i} shuts the entry flooder out")).await;
    }
    quarantined_for(&mesh.nodes, &id, ThreatKind::RateAnomaly).await;
    for (i, node) in mesh.nodes.iter().enumerate() {
        // What arrived before the quarantine is kept for audit, never shown.
        assert!(arrivals_from(node, &id).await > 0);
        let answer = node
            .query(&space(), &"spam.**".parse().unwrap(), false)
            .await
            .unwrap();
        assert!(answer.hits.is_empty(), "node {i} shows the flood");
        assert!(answer.hidden > 0);
    }
    assert_honest_unmarked(&mesh.nodes).await;
    restarted_still_refuses(&mut mesh, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_heavy_writer_is_never_marked() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mesh = Mesh::new(4).await;
    let writer = &mesh.nodes[1];
    // 100 entries a second for 12 s (more than two rate buckets), paced by a timer: the
    // workload, not a wait.
    const ENTRIES: usize = 1_200;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = std::time::Instant::now();
    for n in 0..ENTRIES {
        pace.tick().await;
        writer
            .expose(
                &space(),
                Draft::new(
                    format!("work.w{n}").parse().unwrap(),
                    format!("result {n}"),
                    Some(Tier::Public),
                ),
            )
            .await
            .unwrap();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(11), "paced at 100/s: {took:?}");
    for (i, node) in mesh.nodes.iter().enumerate() {
        eventually(node, &format!("node {i} holds every entry"), || async {
            arrivals_from(node, writer.id()).await == ENTRIES || i == 1
        })
        .await;
        let answer = node
            .query(&space(), &"work.**".parse().unwrap(), false)
            .await
            .unwrap();
        assert_eq!(answer.hits.len(), ENTRIES, "node {i}");
    }
    assert_honest_unmarked(&mesh.nodes).await;
}
