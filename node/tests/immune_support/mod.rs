//! Shared helpers for the immune layer's multi-node tests: nodes over the memory
//! transport, a storage poisoned with a forged and a trespassing change, and waits on the
//! immune layer's view. Every wait is event-driven with a deadline; nothing sleeps.
#![allow(dead_code, clippy::panic, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use membrane_crdt::hostile::plant_change;
use membrane_crdt::{DocId, EventKind, MemoryStorage, Storage};
use membrane_immune::AuditEvent;
use membrane_node::immune::{ImmuneReport, PeerStanding};
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::envelope::sign_change;
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, Evidence, Keypair, PublicKey, Space, Tier,
};

use crate::common::eventually;

pub fn space() -> Space {
    "immune-test".parse().unwrap()
}

/// Starts a node with key seed `seed` over `storage`, bootstrapping from `bootstrap`.
pub async fn spawn_with<S: Storage + Send + 'static>(
    seed: u8,
    bootstrap: Option<&str>,
    storage: S,
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let mut options = NodeOptions::memory(Keypair::from_seed(&[seed; 32]));
    options.anti_entropy = Duration::from_millis(500);
    options.spaces = vec![space()];
    if let Some(addr) = bootstrap {
        options.bootstrap = vec![addr.parse().unwrap()];
    }
    Node::spawn(options, storage, Arc::new(ApproxCounter))
        .await
        .unwrap()
}

/// Starts a node in memory.
pub async fn spawn(seed: u8, bootstrap: Option<&str>) -> NodeHandle {
    spawn_with(seed, bootstrap, MemoryStorage::new()).await.0
}

/// Its first listen address, with `/p2p/<peer id>`.
pub async fn addr(node: &NodeHandle) -> String {
    node.listening().await.unwrap()[0].clone()
}

/// `count` honest nodes (seeds 1, 2, …), all bootstrapping from the first, each connected
/// to every other.
pub async fn honest_mesh(count: u8) -> Vec<NodeHandle> {
    let first = spawn(1, None).await;
    let boot = addr(&first).await;
    let mut nodes = vec![first];
    for seed in 2..=count {
        nodes.push(spawn(seed, Some(&boot)).await);
    }
    let want = usize::from(count) - 1;
    for (i, node) in nodes.iter().enumerate() {
        eventually(node, &format!("node {i} meets the others"), || async {
            node.peers().await.unwrap().len() >= want
        })
        .await;
    }
    nodes
}

fn record_key(author: &PublicKey, env: &Envelope) -> String {
    format!("e/{}/{}", hex::encode(author.as_bytes()), env.id())
}

fn body(key: &str, seq: u64) -> EntryBody {
    EntryBody {
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
    }
}

/// A storage holding two bad changes by `evil`: one writing under `victim`'s key
/// (trespass, correctly signed by `evil`), one with a signature that does not verify
/// (forgery).
pub fn poisoned(evil: &Keypair, victim: &PublicKey) -> MemoryStorage {
    let mut storage = MemoryStorage::new();
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

/// `peer`'s standing at `node`, if it has one.
pub async fn standing(node: &NodeHandle, peer: &PublicKey) -> Option<PeerStanding> {
    report(node)
        .await
        .peers
        .into_iter()
        .find(|s| &s.peer == peer)
}

/// The immune layer's view at `node`, with every recent threat.
pub async fn report(node: &NodeHandle) -> ImmuneReport {
    node.immune_report(membrane_node::immune::MAX_RECENT_THREATS)
        .await
        .unwrap()
}

/// Whether `node` shuts `peer` out: quarantined or banned.
pub async fn shuts_out(node: &NodeHandle, peer: &PublicKey) -> bool {
    standing(node, peer)
        .await
        .is_some_and(|s| s.quarantine.is_some() || s.banned_until_ms.is_some())
}

/// Waits until `node` quarantines or bans `peer`.
pub async fn wait_shut_out(node: &NodeHandle, peer: &PublicKey, what: &str) {
    eventually(node, what, || shuts_out(node, peer)).await;
}

/// Whether `node` received (and audited) a threat report by `reporter` about `offender`.
pub async fn received_report(
    node: &NodeHandle,
    reporter: &PublicKey,
    offender: &PublicKey,
) -> bool {
    report(node).await.threats.iter().any(|r| {
        matches!(
            &r.event,
            AuditEvent::ThreatReceived { reporter: rep, offender: off, .. }
                if rep == reporter && off == offender
        )
    })
}

/// Whether any entry by `owner` ever arrived at `node` through sync.
pub async fn anything_arrived_from(node: &NodeHandle, owner: &PublicKey) -> bool {
    node.events_since(0, 100_000)
        .await
        .unwrap()
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Arrived { owner: o, .. } if o == owner))
}
