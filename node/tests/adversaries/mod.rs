//! Adversarial test nodes and checks for the immune layer's multi-node tests: an honest
//! mesh whose first node keeps its state on disk (so it can be restarted), stores holding
//! an equivocation or a copy of payloads honest nodes rejected, and checks on the audit
//! logs. Every wait is event-driven with a deadline; nothing sleeps.
#![allow(dead_code, clippy::panic, clippy::expect_used, unreachable_pub)]

use membrane_crdt::hostile::Hostile;
use membrane_crdt::{DocId, EventKind, MemoryStorage};
use membrane_immune::{AuditEvent, AuditRecord, ContentHash, Verdict};
use membrane_node::NodeHandle;
use membrane_node::content::change_signature;
use membrane_node::storage::SledStorage;
use membrane_protocol::signals::{Severity, ThreatKind};
use membrane_protocol::{EnvelopeId, Keypair, PublicKey};

use crate::common::eventually;
use crate::immune_support::{addr, space, spawn, spawn_with, standing};

/// Honest nodes (seeds 1, 2, …), all connected; the first keeps its store on disk.
pub struct Mesh {
    pub nodes: Vec<NodeHandle>,
    first_task: Option<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn new(count: u8) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let (first, task) = spawn_with(
            1,
            None,
            SledStorage::open(&dir.path().join("store")).unwrap(),
        )
        .await;
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
        Mesh {
            nodes,
            first_task: Some(task),
            dir,
        }
    }

    /// A bootstrap address (the second node's, which stays up across restarts).
    pub async fn boot(&self) -> String {
        addr(&self.nodes[1]).await
    }

    pub fn ids(&self) -> Vec<PublicKey> {
        self.nodes.iter().map(|n| *n.id()).collect()
    }

    /// Stops the first node and starts it again on the same store, bootstrapping from
    /// the second.
    pub async fn restart_first(&mut self) -> NodeHandle {
        self.nodes[0].shutdown().await;
        if let Some(task) = self.first_task.take() {
            task.await.unwrap();
        }
        let boot = self.boot().await;
        let (node, task) = spawn_with(
            1,
            Some(&boot),
            SledStorage::open(&self.dir.path().join("store")).unwrap(),
        )
        .await;
        self.first_task = Some(task);
        self.nodes[0] = node.clone();
        node
    }
}

/// Every audit record of `node`, verified.
pub async fn audit(node: &NodeHandle) -> Vec<AuditRecord> {
    let mut records = Vec::new();
    loop {
        let page = node.audit(records.len() as u64, 1000).await.unwrap();
        assert_eq!(page.problem, None, "the audit log verifies");
        let done = page.records.is_empty() || page.next >= page.total;
        records.extend(page.records);
        if done {
            break;
        }
    }
    membrane_immune::verify_chain(&records, node.id()).unwrap();
    records
}

/// Whether an audit event concerns `peer` as the one accused or acted on.
pub fn about(event: &AuditEvent, peer: &PublicKey) -> bool {
    match event {
        AuditEvent::ThreatDetected { detection } => &detection.offender == peer,
        AuditEvent::ThreatReceived { offender, .. } => offender == peer,
        AuditEvent::Quarantine { peer: p, .. } | AuditEvent::Ban { peer: p, .. } => p == peer,
        _ => false,
    }
}

/// The events about `peer` in `node`'s audit log.
pub async fn events_about(node: &NodeHandle, peer: &PublicKey) -> Vec<AuditEvent> {
    audit(node)
        .await
        .into_iter()
        .map(|r| r.event)
        .filter(|e| about(e, peer))
        .collect()
}

/// The detections this node made about `peer`, in order.
pub async fn detections(node: &NodeHandle, peer: &PublicKey) -> Vec<(ThreatKind, Severity)> {
    events_about(node, peer)
        .await
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::ThreatDetected { detection } => Some((detection.kind, detection.severity)),
            _ => None,
        })
        .collect()
}

/// Checks `node` shut `peer` out (quarantine or ban) in the very event that `proves`
/// enough against it: the record right after it. Returns the threat records about it
/// before that proof.
pub async fn shut_out_at(
    node: &NodeHandle,
    peer: &PublicKey,
    proves: impl Fn(&AuditEvent) -> bool,
) -> usize {
    let events = events_about(node, peer).await;
    let shut = |e: &AuditEvent| matches!(e, AuditEvent::Quarantine { .. } | AuditEvent::Ban { .. });
    let first_shut = events.iter().position(shut).expect("shut out");
    let proof = events.iter().position(&proves).expect("a proof");
    assert!(
        first_shut <= proof + 1,
        "shut out {} records after the proof: {events:?}",
        first_shut.saturating_sub(proof)
    );
    proof
}

/// Whether an event proves an offence by itself: detected here at high severity or worse,
/// or reported with evidence this node verified.
pub fn decisive(event: &AuditEvent) -> bool {
    match event {
        AuditEvent::ThreatDetected { detection } => detection.severity >= Severity::High,
        AuditEvent::ThreatReceived { verdict, .. } => *verdict == Verdict::Confirmed,
        _ => false,
    }
}

/// Checks no node of `honest` ever accused, quarantined or banned another, or holds a
/// negative view of it.
pub async fn assert_honest_unmarked(honest: &[NodeHandle]) {
    let ids: Vec<PublicKey> = honest.iter().map(|n| *n.id()).collect();
    for (i, node) in honest.iter().enumerate() {
        for record in audit(node).await {
            assert!(
                !ids.iter().any(|id| about(&record.event, id)),
                "node {i} audited an honest node: {:?}",
                record.event
            );
        }
        for id in &ids {
            if let Some(s) = standing(node, id).await {
                assert!(
                    s.reputation >= 0.0 && s.quarantine.is_none() && s.banned_until_ms.is_none(),
                    "node {i} holds {s:?} for an honest node"
                );
            }
        }
    }
}

/// Whether the medium of `node` ever logged an entry with this id as arrived.
pub async fn arrived(node: &NodeHandle, id: &EnvelopeId) -> bool {
    node.events_since(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Arrived { id: got, .. } if got == id))
}

/// How many entries of `owner` ever arrived at `node`.
pub async fn arrivals_from(node: &NodeHandle, owner: &PublicKey) -> usize {
    node.events_since(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Arrived { owner: o, .. } if o == owner))
        .count()
}

/// Whether the medium of `node` ever processed (and refused) a change sent by `peer`.
pub async fn medium_refused_from(node: &NodeHandle, peer: &PublicKey) -> bool {
    node.events_since(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Rejected { from, .. } if from == peer))
}

/// An equivocation by `evil`: two changes, each validly signed, writing two different
/// entries with the same owner seq (1) into the public document.
pub struct Equivocation {
    pub first: EnvelopeId,
    pub second: EnvelopeId,
    hostile: Hostile,
}

impl Equivocation {
    pub fn new(evil: &Keypair) -> Self {
        let hostile = Hostile::equivocation(evil, &space());
        Self {
            first: hostile.entries[0],
            second: hostile.entries[1],
            hostile,
        }
    }

    /// A store holding both changes, for the equivocator's node.
    pub fn storage(&self) -> MemoryStorage {
        planted(&self.hostile)
    }

    /// The content signature of the second change.
    pub fn second_signature(&self) -> ContentHash {
        signature(&self.hostile.changes[1])
    }
}

/// Two bad changes by `evil`: one writing under `victim`'s key (trespass, correctly
/// signed), one whose signature does not verify (forgery). The same bytes can be planted
/// in several stores: the forger's, and a replayer's.
pub struct Poison {
    hostile: Hostile,
}

impl Poison {
    pub fn new(evil: &Keypair, victim: &PublicKey) -> Self {
        Self {
            hostile: Hostile::forgery_and_trespass(evil, victim, &space()),
        }
    }

    /// A store holding both changes.
    pub fn storage(&self) -> MemoryStorage {
        planted(&self.hostile)
    }

    /// The content signatures of the two changes (trespass, forgery).
    pub fn signatures(&self) -> Vec<ContentHash> {
        self.hostile.changes.iter().map(signature).collect()
    }
}

fn planted(hostile: &Hostile) -> MemoryStorage {
    let mut storage = MemoryStorage::new();
    hostile
        .plant(&mut storage, &DocId::public(space()))
        .unwrap();
    storage
}

fn signature((change, sig): &(automerge::Change, [u8; 64])) -> ContentHash {
    change_signature(&DocId::public(space()), &change.hash().0, Some(sig))
}

/// Whether `node`'s audit log names `hash` as the evidence of a threat it detected or
/// received.
pub async fn remembers(node: &NodeHandle, hash: &ContentHash) -> bool {
    audit(node).await.iter().any(|r| match &r.event {
        AuditEvent::ThreatDetected { detection } => detection.evidence_hash.as_ref() == Some(hash),
        AuditEvent::ThreatReceived {
            evidence_hash,
            verdict,
            ..
        } => evidence_hash == hash && *verdict == Verdict::Confirmed,
        _ => false,
    })
}

/// Has `node` dial `other` and checks it does not let it stay: the ban gate refuses the
/// dial, or the connection is closed as soon as it is made.
pub async fn refuses_on_contact(node: &NodeHandle, other: &NodeHandle) {
    use membrane_node::NodeEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = node.subscribe();
    if node.dial(addr(other).await.parse().unwrap()).await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(NodeEvent::PeerDisconnected { peer })) if &peer == other.id() => break,
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("node stopped"),
            Err(_) => panic!("the refused peer was let stay"),
        }
    }
    assert!(!node.peers().await.unwrap().contains(other.id()));
}

/// A store holding `count` valid public entries by `evil`, all signed at `now_ms`: an
/// entry flood ready to push to whoever connects.
pub fn entry_flood(evil: &Keypair, count: usize, now_ms: u64) -> MemoryStorage {
    planted(&Hostile::entry_flood(evil, &space(), count, now_ms))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
