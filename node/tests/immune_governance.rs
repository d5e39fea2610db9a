//! Governance through the agent API and the CLI: an operator's quarantine, release, ban and
//! unban of a peer take effect and are audited; pause stops every crossing (and sync) until
//! resume; the audit chain verifies on read, and a record tampered with on disk is caught.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod immune_support;

use std::sync::Arc;

use common::eventually;
use common::process::NodeProcess;
use immune_support::{addr, report, space, spawn, spawn_with, standing};
use membrane_crdt::Draft;
use membrane_immune::{AuditEvent, AuditRecord, Override, audit};
use membrane_node::api::client::Client;
use membrane_node::api::{self, Ctx};
use membrane_node::immune::{ImmuneStore, audit_key};
use membrane_node::storage::SledStorage;
use membrane_node::{NodeError, NodeHandle};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, PublicKey, Tier};
use serde_json::{Value, json};

const TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

struct Api {
    client: Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(node: &NodeHandle) -> Api {
    let ctx = Arc::new(Ctx::new(
        node.clone(),
        space(),
        Arc::new(ApproxCounter),
        TOKEN.to_owned(),
        None,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, ctx, async move {
        let _ = stopped.await;
    }));
    Api {
        client: Client::new(&addr, TOKEN).unwrap(),
        _stop: stop,
    }
}

impl Api {
    async fn ok(&self, verb: &str, body: Value) -> Value {
        self.client
            .call(verb, &body)
            .await
            .unwrap_or_else(|e| panic!("{verb} {body}: {e}"))
    }

    /// The error code and message of a call that must fail.
    async fn refused(&self, verb: &str, body: Value) -> String {
        match self.client.call(verb, &body).await {
            Ok(answer) => panic!("{verb} {body} succeeded: {answer}"),
            Err(e) => e.to_string(),
        }
    }
}

async fn notes(node: &NodeHandle) -> (usize, usize) {
    let answer = node
        .query(&space(), &"notes.*".parse().unwrap(), false)
        .await
        .unwrap();
    (answer.hits.len(), answer.hidden)
}

fn records(answer: &Value) -> Vec<AuditRecord> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_overrides_through_the_api_take_effect_and_are_audited() {
    let a = spawn(1, None).await;
    let b = spawn(2, Some(&addr(&a).await)).await;
    let api = serve(&a).await;
    let peer_b = b.id().to_string();
    b.expose(
        &space(),
        Draft::new("notes.b".parse().unwrap(), "from b", Some(Tier::Public)),
    )
    .await
    .unwrap();
    eventually(&a, "b's note arrives", || async { notes(&a).await.0 == 1 }).await;

    // Quarantine: the peer's entries leave query and search (kept, counted as hidden).
    let answer = api.ok("quarantine", json!({ "peer": peer_b })).await;
    assert_eq!(answer["standing"]["quarantined"], "operator", "{answer}");
    assert!(!answer["audit"].as_array().unwrap().is_empty());
    assert_eq!(notes(&a).await, (0, 1));
    let search = api.ok("search", json!({ "text": "from b" })).await;
    assert_eq!(search["hits"].as_array().unwrap().len(), 0, "{search}");
    let threats = api.ok("threats", json!({})).await;
    let listed = threats["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == peer_b.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["quarantined"], "operator", "{threats}");
    // Release: they show again.
    api.ok("release", json!({ "peer": peer_b })).await;
    assert_eq!(notes(&a).await, (1, 0));

    // Ban: disconnected and refused; unban: it comes back (it redials its bootstrap).
    let answer = api.ok("ban", json!({ "peer": peer_b })).await;
    assert!(
        answer["standing"]["banned_until_ms"].as_u64().is_some(),
        "{answer}"
    );
    eventually(&a, "b is gone", || async {
        !a.peers().await.unwrap().contains(b.id())
    })
    .await;
    assert_eq!(
        notes(&a).await,
        (0, 1),
        "a banned peer's entries are hidden"
    );
    api.ok("unban", json!({ "peer": peer_b })).await;
    eventually(&a, "b is back", || async {
        a.peers().await.unwrap().contains(b.id())
    })
    .await;
    assert_eq!(notes(&a).await, (1, 0));
    api.ok("exonerate", json!({ "peer": peer_b })).await;

    // Bad input: 4xx with a reason.
    let bad = api.refused("ban", json!({ "peer": "nobody" })).await;
    assert!(bad.contains("bad_peer"), "{bad}");
    let me = api
        .refused("quarantine", json!({ "peer": a.id().to_string() }))
        .await;
    assert!(me.contains("this node itself"), "{me}");

    // Every override is in the audit log, which verifies under the node's key.
    let answer = api.ok("audit", json!({ "since": 0 })).await;
    assert_eq!(answer["verified"], true, "{answer}");
    let log = records(&answer);
    audit::verify_chain(&log, a.id()).unwrap();
    let overrides: Vec<String> = log
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::Override { action, peer } if peer == b.id() => Some(
                serde_json::to_value(action)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        overrides,
        ["quarantine", "release", "ban", "unban", "exonerate"],
        "{log:?}"
    );
    // Paging: since = the previous answer's next.
    let first = api.ok("audit", json!({ "since": 0, "limit": 2 })).await;
    let next = first["next"].as_u64().unwrap();
    assert_eq!(next, 2);
    let rest = api.ok("audit", json!({ "since": next })).await;
    assert_eq!(rest["verified"], true);
    assert_eq!(
        records(&rest)[0],
        log[2],
        "the second page starts where the first ended"
    );
    assert_eq!(rest["total"].as_u64().unwrap(), log.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_every_crossing_and_sync_until_resume() {
    let a = spawn(1, None).await;
    let b = spawn(2, Some(&addr(&a).await)).await;
    let api = serve(&a).await;
    eventually(&a, "b connects", || async {
        a.peers().await.unwrap().contains(b.id())
    })
    .await;
    let answer = api
        .ok("pause", json!({ "reason": "suspected poisoning" }))
        .await;
    assert_eq!(answer["paused"], true);
    // Pausing twice changes nothing and audits nothing.
    let again = api.ok("pause", json!({})).await;
    assert_eq!(again["audit"], json!([]));
    for (verb, body) in [
        ("query", json!({ "pattern": "notes.*" })),
        ("search", json!({ "text": "anything" })),
        (
            "expose",
            json!({ "key": "notes.a", "value": "v", "tier": "public" }),
        ),
        ("broadcast", json!({ "message": "hello" })),
    ] {
        let refused = api.refused(verb, body).await;
        assert!(refused.contains("paused"), "{verb}: {refused}");
    }
    assert!(matches!(
        a.query(&space(), &"**".parse().unwrap(), false).await,
        Err(NodeError::Paused)
    ));
    // What the node says about itself and its threats is still there.
    api.ok("status", json!({})).await;
    assert_eq!(api.ok("threats", json!({})).await["paused"], true);
    // Nothing comes in while paused; it all arrives after resume.
    b.expose(
        &space(),
        Draft::new(
            "notes.during".parse().unwrap(),
            "while paused",
            Some(Tier::Public),
        ),
    )
    .await
    .unwrap();
    api.ok("resume", json!({ "reason": "all clear" })).await;
    eventually(&a, "the note written during the pause", || async {
        notes(&a).await.0 == 1
    })
    .await;
    let log = records(&api.ok("audit", json!({})).await);
    let pauses: Vec<&AuditEvent> = log
        .iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, AuditEvent::Pause { .. }))
        .collect();
    assert_eq!(
        pauses,
        [
            &AuditEvent::Pause {
                paused: true,
                reason: Some("suspected poisoning".into())
            },
            &AuditEvent::Pause {
                paused: false,
                reason: Some("all clear".into())
            }
        ]
    );
}

/// An operator's bans and quarantines on `node`: at least five audit records.
async fn some_overrides(node: &NodeHandle) -> (PublicKey, PublicKey) {
    let x = Keypair::from_seed(&[40; 32]).public();
    let y = Keypair::from_seed(&[41; 32]).public();
    node.govern(Override::Ban(x)).await.unwrap();
    node.govern(Override::Unban(x)).await.unwrap();
    node.govern(Override::Quarantine(y)).await.unwrap();
    (x, y)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_verifies_and_a_tampered_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (node, task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let (_, y) = some_overrides(&node).await;
    let page = node.audit(0, 100).await.unwrap();
    assert_eq!(page.problem, None);
    assert!(page.records.len() >= 5, "{:?}", page.records);
    audit::verify_chain(&page.records, node.id()).unwrap();
    assert_eq!(page.head, page.records.last().unwrap().hash);
    // JSON Lines round trip.
    let text = audit::to_jsonl(&page.records).unwrap();
    assert_eq!(audit::from_jsonl(&text).unwrap(), page.records);
    let total = page.total;
    node.shutdown().await;
    task.await.unwrap();

    // Edit record 1 on disk: its content no longer matches its hash.
    {
        let storage = SledStorage::open(&store).unwrap();
        let mut immune = ImmuneStore::open(&storage).unwrap();
        let bytes = immune.get(&audit_key(1)).unwrap().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let edited = text.replacen("operator", "0perator", 1);
        assert_ne!(edited, text, "{text}");
        immune.put(&audit_key(1), edited.as_bytes()).unwrap();
        immune.flush().unwrap();
    }
    let (node, task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let page = node.audit(0, 100).await.unwrap();
    let problem = page.problem.clone().expect("the edit is caught");
    assert!(
        problem.contains("at start") && problem.contains("audit record 1 does not match its hash"),
        "{problem}"
    );
    assert!(matches!(
        audit::verify_chain(&page.records, node.id()),
        Err(membrane_immune::AuditError::HashMismatch { index: 1 })
    ));
    // The whole chain was verified at start: a page that does not reach the edited record
    // still says the log is not to be trusted, and so does `threats`.
    let at_start = report(&node)
        .await
        .audit_problem
        .expect("reported at start");
    assert!(problem.starts_with(&at_start), "{problem}");
    let later = node.audit(2, 100).await.unwrap();
    assert_eq!(later.problem.as_deref(), Some(at_start.as_str()));
    // The operator's quarantine survived the restart.
    let s = standing(&node, &y).await.unwrap();
    assert!(s.quarantine.is_some(), "{s:?}");
    node.govern(Override::Release(y)).await.unwrap();
    // The chain goes on after its (valid) last record.
    let tail = node.audit(total, 100).await.unwrap();
    assert_eq!(tail.problem.as_deref(), Some(at_start.as_str()));
    audit::verify_segment(
        &tail.records,
        node.id(),
        page.records[total as usize - 1].hash,
        total,
    )
    .unwrap();
    assert!(tail.records.len() >= 2);
    node.shutdown().await;
    task.await.unwrap();

    // Edit the last record: the node cannot extend a chain it cannot verify, so it keeps
    // the old one aside, says so, and starts a new one.
    {
        let storage = SledStorage::open(&store).unwrap();
        let mut immune = ImmuneStore::open(&storage).unwrap();
        let last = tail.records.last().unwrap().index;
        let bytes = immune.get(&audit_key(last)).unwrap().unwrap();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replacen("operator", "0perator", 1);
        immune.put(&audit_key(last), text.as_bytes()).unwrap();
        immune.flush().unwrap();
    }
    let (node, _task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let page = node.audit(0, 100).await.unwrap();
    let problem = page.problem.expect("the restart says what happened");
    assert!(problem.contains("archived"), "{problem}");
    assert_eq!(page.total, 0);
    some_overrides(&node).await;
    let page = node.audit(0, 100).await.unwrap();
    audit::verify_chain(&page.records, node.id()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_removed_from_the_middle_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (node, task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    some_overrides(&node).await;
    let before = node.audit(0, 100).await.unwrap();
    assert_eq!(before.problem, None);
    node.shutdown().await;
    task.await.unwrap();
    {
        let storage = SledStorage::open(&store).unwrap();
        let mut immune = ImmuneStore::open(&storage).unwrap();
        immune.remove(&audit_key(2)).unwrap();
        immune.flush().unwrap();
    }
    let (node, _task) = spawn_with(1, None, SledStorage::open(&store).unwrap()).await;
    let report = report(&node).await;
    let problem = report.audit_problem.expect("the gap is reported at start");
    assert!(
        problem.contains("at start") && problem.contains("audit record 2 has index 3, expected 2"),
        "{problem}"
    );
    // Every read says so, also one that starts after the gap.
    for since in [0, 3] {
        let page = node.audit(since, 100).await.unwrap();
        assert!(
            page.problem
                .as_deref()
                .is_some_and(|p| p.contains(&problem)),
            "{since}: {:?}",
            page.problem
        );
    }
    // The chain still goes on from its last record.
    node.govern(Override::Quarantine(Keypair::from_seed(&[43; 32]).public()))
        .await
        .unwrap();
    let page = node.audit(before.total, 100).await.unwrap();
    assert_eq!(page.records.first().map(|r| r.index), Some(before.total));
}

#[test]
fn the_cli_bans_pauses_and_reads_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    node.wait_ready();
    let stranger = Keypair::from_seed(&[42; 32]).public().to_string();
    let banned = node.cli_json(&["ban", &stranger]);
    assert!(banned["standing"]["banned_until_ms"].is_u64(), "{banned}");
    node.cli_ok(&["unban", &stranger]);
    let text = node.cli_ok(&["audit", "--since", "0"]);
    assert!(text.contains("chain verified"), "{text}");
    assert!(text.contains(" ban ") && text.contains(" unban "), "{text}");
    let page = node.cli_json(&["audit", "--since", "1", "--limit", "2"]);
    assert_eq!(page["records"][0]["index"], 1, "{page}");
    assert_eq!(page["next"], 3);
    // JSON Lines export, verified by the reader.
    let jsonl = node.cli_ok(&["audit", "--since", "0", "--jsonl"]);
    let records = audit::from_jsonl(&jsonl).unwrap();
    let key: PublicKey = node.peer_id().parse().unwrap();
    audit::verify_chain(&records, &key).unwrap();
    // Pause refuses the agent's reads; resume lifts it.
    node.cli_ok(&["pause", "--reason", "drill"]);
    let refused = node.cli(&["query", "notes.*"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("paused"), "{stderr}");
    node.cli_ok(&["resume"]);
    node.cli_ok(&["query", "notes.*"]);
}
