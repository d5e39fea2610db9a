//! Over real libp2p nodes: a node that offers forged and trespassing changes is refused by
//! every honest node, threat signals about it reach the others, and nothing it sent is
//! ever applied. Kademlia finds a capability provider among 20 nodes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use common::{DEADLINE, eventually};
use membrane_crdt::hostile::plant_change;
use membrane_crdt::{DocId, MemoryStorage};
use membrane_node::{Node, NodeEvent, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::envelope::sign_change;
use membrane_protocol::signals::Capability;
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, Evidence, Keypair, Pattern, PublicKey, Space, Tier,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

fn space() -> Space {
    "climate-brief".parse().unwrap()
}

async fn spawn(
    seed: u8,
    bootstrap: Option<&str>,
    storage: MemoryStorage,
    caps: &[&str],
) -> NodeHandle {
    let mut options = NodeOptions::memory(Keypair::from_seed(&[seed; 32]));
    options.anti_entropy = Duration::from_millis(500);
    options.spaces = vec![space()];
    options.capabilities = caps
        .iter()
        .map(|c| Capability {
            name: (*c).to_owned(),
            description: format!("can {c}"),
        })
        .collect();
    if let Some(addr) = bootstrap {
        options.bootstrap = vec![addr.parse().unwrap()];
    }
    Node::spawn(options, storage, Arc::new(ApproxCounter))
        .await
        .unwrap()
        .0
}

fn record_key(author: &PublicKey, env: &Envelope) -> String {
    format!("e/{}/{}", hex::encode(author.as_bytes()), env.id())
}

/// A storage holding two bad changes by `evil`: one writing under `victim`'s key
/// (trespass, correctly signed by `evil`), one with a signature that does not verify.
fn poisoned(evil: &Keypair, victim: &PublicKey) -> MemoryStorage {
    let mut storage = MemoryStorage::new();
    let body = |key: &str, seq| EntryBody {
        space: space(),
        key: key.parse().unwrap(),
        value: format!("POISON {key}"),
        tier: Tier::Public,
        tags: vec![],
        kind: EntryKind::Fact,
        evidence: Evidence::ToolResult,
        parents: vec![],
        seq,
        ttl_ms: None,
        half_life_ms: None,
    };
    let mut doc = Automerge::new().with_actor(ActorId::from(evil.public().as_bytes().as_slice()));
    let own = Envelope::seal(evil, 0, &body("poison.trespass", 1)).unwrap();
    let mut tx = doc.transaction();
    tx.put(
        ROOT,
        record_key(victim, &own),
        automerge::ScalarValue::Bytes(own.to_bytes()),
    )
    .unwrap();
    tx.commit();
    let trespass = doc.get_last_local_change().unwrap();
    let forged_env = Envelope::seal(evil, 0, &body("poison.forged", 2)).unwrap();
    let mut tx = doc.transaction();
    tx.put(
        ROOT,
        record_key(&evil.public(), &forged_env),
        automerge::ScalarValue::Bytes(forged_env.to_bytes()),
    )
    .unwrap();
    tx.commit();
    let forged = doc.get_last_local_change().unwrap();
    let id = DocId::public(space());
    plant_change(
        &mut storage,
        &id,
        0,
        &trespass,
        &sign_change(evil, &trespass.hash().0),
    )
    .unwrap();
    let wrong = sign_change(&Keypair::from_seed(&[99; 32]), &forged.hash().0);
    plant_change(&mut storage, &id, 1, &forged, &wrong).unwrap();
    storage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forging_trespassing_node_is_refused_by_all_and_reported() {
    let first = spawn(1, None, MemoryStorage::new(), &[]).await;
    let boot = first.listening().await.unwrap()[0].clone();
    let mut honest = vec![first];
    for seed in 2..=4 {
        honest.push(spawn(seed, Some(&boot), MemoryStorage::new(), &[]).await);
    }
    // Every honest node listens for threat signals from the start.
    let mut threat_feeds: Vec<_> = honest.iter().map(|n| n.subscribe()).collect();
    let evil_key = Keypair::from_seed(&[66; 32]);
    let victim = *honest[1].id();
    let evil = spawn(66, Some(&boot), poisoned(&evil_key, &victim), &[]).await;
    assert_eq!(evil.id(), &evil_key.public());

    // Each honest node receives, over gossip, a verified threat signal about the offender
    // from another reporter (besides any it raised itself).
    for (i, feed) in threat_feeds.iter_mut().enumerate() {
        let me = *honest[i].id();
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, feed.recv()).await {
                Ok(Ok(NodeEvent::Threat { reporter, signal }))
                    if signal.offender == *evil.id() && reporter != me =>
                {
                    break;
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => panic!("node {i} stopped"),
                Err(_) => panic!("node {i} never received a threat signal about the offender"),
            }
        }
    }
    // And nothing the offender sent was applied anywhere.
    let all: Pattern = "**".parse().unwrap();
    for (i, node) in honest.iter().enumerate() {
        let answer = node.query(&space(), &all, true).await.unwrap();
        assert!(
            answer
                .hits
                .iter()
                .all(|e| !e.body().value.starts_with("POISON")),
            "node {i} applied a poisoned record"
        );
    }
    // Honest replication still works with the offender around.
    honest[3]
        .expose(
            &space(),
            membrane_crdt::Draft::new(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_finds_a_capability_provider_among_twenty_nodes() {
    let first = spawn(1, None, MemoryStorage::new(), &[]).await;
    let boot = first.listening().await.unwrap()[0].clone();
    let mut nodes = vec![first];
    for seed in 2..=20 {
        let caps: &[&str] = if seed == 7 { &["fact_check"] } else { &[] };
        nodes.push(spawn(seed, Some(&boot), MemoryStorage::new(), caps).await);
    }
    let provider = *nodes[6].id();
    let seeker = &nodes[19];
    // Ask until the DHT answers; every failed query emits events that wake this loop.
    eventually(seeker, "the fact_check provider", || {
        let seeker = seeker.clone();
        async move {
            let providers = seeker.find_providers("fact_check").await.unwrap();
            providers.contains(&provider)
        }
    })
    .await;
}
