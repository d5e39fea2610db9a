//! Adversarial test nodes and checks for the immune layer's multi-node tests: an honest
//! mesh whose first node keeps its state on disk (so it can be restarted), stores holding
//! an equivocation or a copy of payloads honest nodes rejected, and checks on the audit
//! logs. Every wait is event-driven with a deadline; nothing sleeps.
#![allow(dead_code, clippy::panic, clippy::expect_used, unreachable_pub)]

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ROOT};
use membrane_crdt::hostile::plant_change;
use membrane_crdt::{DocId, EventKind, MemoryStorage};
use membrane_immune::{AuditEvent, AuditRecord, ContentHash, Verdict};
use membrane_node::NodeHandle;
use membrane_node::content::change_signature;
use membrane_node::storage::SledStorage;
use membrane_protocol::envelope::sign_change;
use membrane_protocol::signals::{Severity, ThreatKind};
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, EnvelopeId, Evidence, Keypair, PublicKey, Tier,
};

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

fn body(key: &str, seq: u64, value: &str) -> EntryBody {
    EntryBody {
        space: space(),
        key: key.parse().unwrap(),
        value: value.into(),
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

/// A change by `doc`'s actor writing `envelope` under `author`'s key.
fn put(doc: &mut Automerge, author: &PublicKey, envelope: &Envelope) -> Change {
    let mut tx = doc.transaction();
    tx.put(
        ROOT,
        format!("e/{}/{}", hex::encode(author.as_bytes()), envelope.id()),
        automerge::ScalarValue::Bytes(envelope.to_bytes()),
    )
    .unwrap();
    tx.commit();
    doc.get_last_local_change().unwrap().clone()
}

fn actor_doc(key: &Keypair) -> Automerge {
    Automerge::new().with_actor(ActorId::from(key.public().as_bytes().as_slice()))
}

/// An equivocation by `evil`: two changes, each validly signed, writing two different
/// entries with the same owner seq (1) into the public document.
pub struct Equivocation {
    pub first: EnvelopeId,
    pub second: EnvelopeId,
    changes: Vec<(Change, [u8; 64])>,
}

impl Equivocation {
    pub fn new(evil: &Keypair) -> Self {
        let mut doc = actor_doc(evil);
        let a = Envelope::seal(evil, 0, &body("claims.a", 1, "EQUIVOCATION A")).unwrap();
        let b = Envelope::seal(evil, 0, &body("claims.b", 1, "EQUIVOCATION B")).unwrap();
        let ca = put(&mut doc, &evil.public(), &a);
        let cb = put(&mut doc, &evil.public(), &b);
        let changes = [ca, cb]
            .into_iter()
            .map(|c| {
                let sig = sign_change(evil, &c.hash().0);
                (c, sig)
            })
            .collect();
        Self {
            first: a.id(),
            second: b.id(),
            changes,
        }
    }

    /// A store holding both changes, for the equivocator's node.
    pub fn storage(&self) -> MemoryStorage {
        let mut storage = MemoryStorage::new();
        for (n, (change, sig)) in self.changes.iter().enumerate() {
            plant_change(&mut storage, &DocId::public(space()), n as u64, change, sig).unwrap();
        }
        storage
    }

    /// The content signature of the second change.
    pub fn second_signature(&self) -> ContentHash {
        let (change, sig) = &self.changes[1];
        change_signature(&DocId::public(space()), &change.hash().0, Some(sig))
    }
}

/// Two bad changes by `evil`: one writing under `victim`'s key (trespass, correctly
/// signed), one whose signature does not verify (forgery). The same bytes can be planted
/// in several stores: the forger's, and a replayer's.
pub struct Poison {
    changes: Vec<(Change, [u8; 64])>,
}

impl Poison {
    pub fn new(evil: &Keypair, victim: &PublicKey) -> Self {
        let mut doc = actor_doc(evil);
        let own = Envelope::seal(evil, 0, &body("poison.trespass", 1, "POISON trespass")).unwrap();
        let trespass = put(&mut doc, victim, &own);
        let env = Envelope::seal(evil, 0, &body("poison.forged", 2, "POISON forged")).unwrap();
        let forged = put(&mut doc, &evil.public(), &env);
        let good = sign_change(evil, &trespass.hash().0);
        let wrong = sign_change(&Keypair::from_seed(&[99; 32]), &forged.hash().0);
        Self {
            changes: vec![(trespass, good), (forged, wrong)],
        }
    }

    /// A store holding both changes.
    pub fn storage(&self) -> MemoryStorage {
        let mut storage = MemoryStorage::new();
        for (n, (change, sig)) in self.changes.iter().enumerate() {
            plant_change(&mut storage, &DocId::public(space()), n as u64, change, sig).unwrap();
        }
        storage
    }

    /// The content signatures of the two changes (trespass, forgery).
    pub fn signatures(&self) -> Vec<ContentHash> {
        self.changes
            .iter()
            .map(|(c, sig)| change_signature(&DocId::public(space()), &c.hash().0, Some(sig)))
            .collect()
    }
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

/// A store holding `count` valid public entries by `evil` (keys `spam.e<n>`, seqs 1, 2,
/// …), all signed at `now_ms`, 500 to a change: an entry flood ready to push to whoever
/// connects.
pub fn entry_flood(evil: &Keypair, count: usize, now_ms: u64) -> MemoryStorage {
    let mut doc = actor_doc(evil);
    let mut storage = MemoryStorage::new();
    let id = DocId::public(space());
    let mut n = 0;
    let mut changes = 0u64;
    while n < count {
        let mut tx = doc.transaction();
        for _ in 0..500.min(count - n) {
            let envelope = Envelope::seal(
                evil,
                now_ms,
                &body(&format!("spam.e{n}"), n as u64 + 1, "spam"),
            )
            .unwrap();
            tx.put(
                ROOT,
                format!(
                    "e/{}/{}",
                    hex::encode(evil.public().as_bytes()),
                    envelope.id()
                ),
                automerge::ScalarValue::Bytes(envelope.to_bytes()),
            )
            .unwrap();
            n += 1;
        }
        tx.commit();
        let change = doc.get_last_local_change().unwrap().clone();
        let sig = sign_change(evil, &change.hash().0);
        plant_change(&mut storage, &id, changes, &change, &sig).unwrap();
        changes += 1;
    }
    storage
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
