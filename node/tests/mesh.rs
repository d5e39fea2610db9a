//! Real libp2p nodes in one process over the memory transport: they find each other
//! through a bootstrap node, replicate the medium by validated sync, keep trusted entries
//! among trusted peers, and let a late joiner replay the history. Every wait is on events
//! with a deadline; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use membrane_crdt::{Draft, Storage};
use membrane_node::storage::SledStorage;
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, Pattern, Score, Space, Tier};

async fn spawn(seed: u8, bootstrap: Option<&str>, dir: &Path) -> NodeHandle {
    let mut options = NodeOptions::memory(Keypair::from_seed(&[seed; 32]));
    options.anti_entropy = Duration::from_millis(500);
    options.spaces = vec![space()];
    if let Some(addr) = bootstrap {
        options.bootstrap = vec![addr.parse().unwrap()];
    }
    let storage = SledStorage::open(&dir.join(format!("node{seed}"))).unwrap();
    let (handle, _task) = Node::spawn(options, storage, Arc::new(ApproxCounter))
        .await
        .unwrap();
    handle
}

fn space() -> Space {
    "climate-brief".parse().unwrap()
}

async fn hits(node: &NodeHandle, pattern: &str) -> usize {
    let pattern: Pattern = pattern.parse().unwrap();
    node.query(&space(), &pattern, false)
        .await
        .unwrap()
        .hits
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_and_keep_trusted_entries_among_the_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn(1, None, dir.path()).await;
    let boot = first.listening().await.unwrap()[0].clone();
    let mut nodes = vec![first];
    for seed in 2..=5 {
        nodes.push(spawn(seed, Some(&boot), dir.path()).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        eventually(node, &format!("node {i} connected"), || async {
            !node.peers().await.unwrap().is_empty()
        })
        .await;
    }

    // An entry exposed on one node is queryable on every other.
    nodes[2]
        .expose(
            &space(),
            Draft::new(
                "findings.heat".parse().unwrap(),
                "urban heat islands",
                Some(Tier::Public),
            ),
        )
        .await
        .unwrap();
    for (i, node) in nodes.iter().enumerate() {
        eventually(node, &format!("node {i} has findings.heat"), || async {
            hits(node, "findings.*").await == 1
        })
        .await;
    }

    // Every node writes; all converge on the same five entries.
    for (i, node) in nodes.iter().enumerate() {
        node.expose(
            &space(),
            Draft::new(
                format!("notes.n{i}").parse().unwrap(),
                format!("note {i}"),
                Some(Tier::Public),
            ),
        )
        .await
        .unwrap();
    }
    for (i, node) in nodes.iter().enumerate() {
        eventually(node, &format!("node {i} has five notes"), || async {
            hits(node, "notes.*").await == 5
        })
        .await;
    }

    // Each node's metrics saw it: peers, gossip, changes applied, entries, and libp2p's own.
    for (i, node) in nodes.iter().enumerate() {
        let text = node.metrics().encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert!(value("membrane_peers ") >= 1.0, "node {i}:\n{text}");
        assert_eq!(value("membrane_entries "), 6.0, "node {i}:\n{text}");
        assert!(
            value("membrane_changes_applied_total") >= 4.0,
            "node {i}:\n{text}"
        );
        assert!(
            value("membrane_gossip_received_total") >= 1.0,
            "node {i}:\n{text}"
        );
        assert!(
            value("membrane_gossip_published_total") >= 1.0,
            "node {i}:\n{text}"
        );
        assert!(
            value("membrane_sync_messages_total") >= 1.0,
            "node {i}:\n{text}"
        );
        assert!(
            value("membrane_libp2p_swarm_connections_established_total") >= 1.0,
            "node {i}:\n{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    // Node 0 trusts node 1 only; its trusted entry reaches node 1 and no one else.
    let trusted_peer = *nodes[1].id();
    nodes[0]
        .trust(&space(), trusted_peer, Score::from_f64(0.9).unwrap())
        .await
        .unwrap();
    nodes[0]
        .expose(
            &space(),
            Draft::new(
                "drafts.secret".parse().unwrap(),
                "SECRET-TRUSTED-VALUE",
                Some(Tier::Trusted),
            ),
        )
        .await
        .unwrap();
    eventually(&nodes[1], "node 1 has the trusted draft", || async {
        hits(&nodes[1], "drafts.*").await == 1
    })
    .await;
    for (i, node) in nodes.iter().enumerate().skip(2) {
        // They learn of it (presence) and are denied, with the reason.
        eventually(node, &format!("node {i} is denied the draft"), || async {
            let answer = node
                .query(&space(), &"drafts.*".parse().unwrap(), false)
                .await
                .unwrap();
            answer.hits.is_empty() && answer.denied.len() == 1
        })
        .await;
    }
    // Their storage never held the value: shut them down and read every byte sled wrote.
    for (i, node) in nodes.iter().enumerate() {
        node.shutdown().await;
        let path = dir.path().join(format!("node{}", i + 1));
        // Wait until the event loop has released the store.
        let store = loop {
            if let Ok(store) = SledStorage::open(&path) {
                break store;
            }
            tokio::task::yield_now().await;
        };
        let values = store.scan_prefix(b"").unwrap();
        let holds = values
            .iter()
            .any(|(_, v)| v.windows(20).any(|w| w == b"SECRET-TRUSTED-VALUE"));
        assert_eq!(holds, i <= 1, "node {i} storage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_replays_the_whole_history() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn(1, None, dir.path()).await;
    let boot = first.listening().await.unwrap()[0].clone();
    let second = spawn(2, Some(&boot), dir.path()).await;
    eventually(&second, "connected", || async {
        !second.peers().await.unwrap().is_empty()
    })
    .await;
    for i in 0..20 {
        let node = if i % 2 == 0 { &first } else { &second };
        node.expose(
            &space(),
            Draft::new(
                format!("history.h{i}").parse().unwrap(),
                format!("event {i}"),
                Some(Tier::Public),
            ),
        )
        .await
        .unwrap();
    }
    first
        .retract(&space(), &"history.h0".parse().unwrap())
        .await
        .unwrap();
    let late = spawn(3, Some(&boot), dir.path()).await;
    eventually(&late, "late joiner has the history", || async {
        hits(&late, "history.*").await == 19
    })
    .await;
    let all: Pattern = "**".parse().unwrap();
    let mine = late.query(&space(), &all, true).await.unwrap();
    let theirs = first.query(&space(), &all, true).await.unwrap();
    assert_eq!(mine.hits, theirs.hits);
}
