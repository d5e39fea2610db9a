//! Governance through the agent API on real nodes (memory transport, each with its HTTP
//! API on loopback): per-space token budgets (`halt` at exactly the limit, `warn` with an
//! event), every answer's crossing decisions and charges in the audit log, delegation
//! circuit breakers fed by task outcomes across nodes, claims and joins without the
//! capability as offences, and escalation of contradicting facts and of a dispute of a
//! verified fact. Every wait is event-driven with a deadline; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use membrane_crdt::{Draft, EventKind, MemoryStorage, coord};
use membrane_immune::breaker::BreakerConfig;
use membrane_immune::{AuditEvent, AuditRecord, BreakerKey, Crossed, CrossingDecision, Override};
use membrane_node::api::{self, Ctx};
use membrane_node::config::BudgetConfig;
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::{ApproxCounter, BudgetAction};
use membrane_protocol::signals::ThreatKind;
use membrane_protocol::{EntryKind, Keypair, PublicKey, Space, Tier};
use serde_json::{Value, json};

const TOKEN: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";

fn space() -> Space {
    "gov".parse().unwrap()
}

/// A node with key seed `seed` in spaces `default` and `gov`, bootstrapping from
/// `bootstrap`, with `immune` settings.
async fn node(
    seed: u8,
    bootstrap: Option<&NodeHandle>,
    immune: membrane_immune::Config,
) -> NodeHandle {
    let mut options = NodeOptions::memory(Keypair::from_seed(&[seed; 32]));
    options.anti_entropy = Duration::from_millis(500);
    options.spaces = vec![space()];
    options.immune = immune;
    if let Some(boot) = bootstrap {
        options.bootstrap = vec![boot.listening().await.unwrap()[0].parse().unwrap()];
    }
    Node::spawn(options, MemoryStorage::new(), Arc::new(ApproxCounter))
        .await
        .unwrap()
        .0
}

/// `count` connected nodes (seeds 1, 2, …).
async fn mesh(count: u8, immune: &membrane_immune::Config) -> Vec<NodeHandle> {
    let first = node(1, None, immune.clone()).await;
    let mut nodes = vec![first.clone()];
    for seed in 2..=count {
        nodes.push(node(seed, Some(&first), immune.clone()).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        eventually(n, &format!("node {i} meets the others"), || async {
            n.peers().await.unwrap().len() >= usize::from(count) - 1
        })
        .await;
    }
    nodes
}

/// A node's agent API over real HTTP.
struct Agent {
    node: NodeHandle,
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn agent(node: &NodeHandle, space_budgets: &[(Space, BudgetConfig)]) -> Agent {
    let budgets: BTreeMap<Space, BudgetConfig> = space_budgets.iter().cloned().collect();
    let ctx = Arc::new(
        Ctx::new(
            node.clone(),
            space(),
            Arc::new(ApproxCounter),
            TOKEN.to_owned(),
            None,
        )
        .with_space_budgets(&budgets),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, ctx, async move {
        let _ = stopped.await;
    }));
    Agent {
        node: node.clone(),
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

impl Agent {
    async fn post(&self, verb: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/{verb}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, verb: &str, body: Value) -> Value {
        let (status, answer) = self.post(verb, body.clone()).await;
        assert_eq!(status, 200, "{verb} {body}: {answer}");
        answer
    }

    /// The error body of a call that must fail with `status`.
    async fn refused(&self, verb: &str, body: Value, status: u16) -> Value {
        let (got, answer) = self.post(verb, body.clone()).await;
        assert_eq!(got, status, "{verb} {body}: {answer}");
        answer
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// The whole audit log of `node`, verified.
async fn audit_log(node: &NodeHandle) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    loop {
        let page = node.audit(out.len() as u64, 1000).await.unwrap();
        assert_eq!(page.problem, None);
        let done = page.records.is_empty() || page.next >= page.total;
        out.extend(page.records);
        if done {
            break;
        }
    }
    membrane_immune::verify_chain(&out, node.id()).unwrap();
    out
}

/// Waits until `node` audits an event that `want` accepts.
async fn wait_audit(node: &NodeHandle, what: &str, want: impl Fn(&AuditEvent) -> bool) {
    eventually(node, what, || async {
        audit_log(node).await.iter().any(|r| want(&r.event))
    })
    .await;
}

fn answers(log: &[AuditRecord]) -> Vec<(String, Vec<Crossed>)> {
    log.iter()
        .filter_map(|r| match &r.event {
            AuditEvent::Answer { verb, .. } => Some((verb.clone(), r.event.crossings())),
            _ => None,
        })
        .collect()
}

fn charges(log: &[AuditRecord]) -> Vec<(u64, u64, bool, Option<String>)> {
    log.iter()
        .filter_map(|r| match &r.event {
            AuditEvent::BudgetCharge {
                tokens,
                used,
                over,
                space,
                ..
            } => Some((*tokens, *used, *over, space.clone())),
            _ => None,
        })
        .collect()
}

/// Exposes a public fact under `key` and returns the tokens a query for it costs.
async fn fact_cost(node: &NodeHandle, key: &str, value: &str) -> u64 {
    node.expose(
        &space(),
        Draft::new(key.parse().unwrap(), value, Some(Tier::Public)),
    )
    .await
    .unwrap();
    let answer = node
        .query(&space(), &key.parse().unwrap(), false)
        .await
        .unwrap();
    answer.hit_tokens.iter().map(|t| u64::from(*t)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_space_budget_refuses_at_exactly_its_limit_with_its_state() {
    let n = node(1, None, Default::default()).await;
    let cost = fact_cost(
        &n,
        "notes.sea",
        "sea level rises 3.7 mm per year since 2006",
    )
    .await;
    assert!(cost > 0);
    let api = agent(
        &n,
        &[(
            space(),
            BudgetConfig {
                tokens: 2 * cost,
                window_secs: 3600,
                action: BudgetAction::Halt,
            },
        )],
    )
    .await;
    let query = json!({ "pattern": "notes.*" });
    assert_eq!(api.ok("query", query.clone()).await["tokens"], cost);
    // The second answer brings the space's budget to exactly its limit: it crosses.
    api.ok("query", query.clone()).await;
    let budget = api.ok("budget", json!({})).await;
    let gov = &budget["spaces"][0];
    assert_eq!(gov["space"], "gov", "{budget}");
    assert_eq!(
        (gov["used"].as_u64(), gov["remaining"].as_u64()),
        (Some(2 * cost), Some(0))
    );
    assert_eq!(gov["action"], "halt");
    assert_eq!(
        budget["limit"],
        Value::Null,
        "the agent itself has no budget"
    );
    // At the limit: refused with 429 and the space budget's state.
    let refused = api.refused("query", query.clone(), 429).await;
    assert_eq!(refused["error"], "budget_exhausted", "{refused}");
    assert_eq!(refused["budget"]["space"], "gov");
    assert_eq!(refused["budget"]["used"], 2 * cost);
    assert_eq!(refused["budget"]["limit"], 2 * cost);
    assert_eq!(refused["budget"]["remaining"], 0);
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.starts_with("space gov's token budget exhausted"),
        "{message}"
    );
    let refused = api
        .refused("search", json!({ "text": "sea level" }), 429)
        .await;
    assert_eq!(refused["budget"]["space"], "gov");
    // Another space has no budget of its own.
    n.expose(
        &Space::default_space(),
        Draft::new(
            "notes.elsewhere".parse().unwrap(),
            "free",
            Some(Tier::Public),
        ),
    )
    .await
    .unwrap();
    let other = api
        .ok("query", json!({ "pattern": "notes.*", "space": "default" }))
        .await;
    assert_eq!(other["hits"].as_array().unwrap().len(), 1);

    // Metrics: the space's window, what crossed from it, the refusals.
    let metrics = api.metrics().await;
    let gauge = |name: &str| metric(&metrics, &format!("{name}{{budget=\"space:gov\"}}"));
    assert_eq!(gauge("membrane_budget_used_tokens"), (2 * cost) as f64);
    assert_eq!(gauge("membrane_budget_limit_tokens"), (2 * cost) as f64);
    assert_eq!(metric(&metrics, "membrane_budget_refusals_total"), 2.0);
    assert_eq!(
        metric(
            &metrics,
            "membrane_space_tokens_charged_total{space=\"gov\"}"
        ),
        (2 * cost) as f64
    );
    // The audit log has both charges, and the refused answer with its entry denied.
    let log = audit_log(&n).await;
    assert_eq!(
        charges(&log),
        [
            (cost, cost, false, Some("gov".to_owned())),
            (cost, 2 * cost, false, Some("gov".to_owned()))
        ]
    );
    let queries: Vec<Vec<Crossed>> = answers(&log)
        .into_iter()
        .filter(|(verb, _)| verb == "query")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(queries.len(), 4, "two crossed, one refused, one elsewhere");
    assert_eq!(queries[0][0].decision, CrossingDecision::Visible);
    assert_eq!(queries[2][0].decision, CrossingDecision::Denied);
    assert!(
        queries[2][0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("space gov's token budget exhausted")),
        "{:?}",
        queries[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_space_budget_lets_answers_through_and_emits_one_event_a_window() {
    let n = node(1, None, Default::default()).await;
    let cost = fact_cost(
        &n,
        "notes.sea",
        "sea level rises 3.7 mm per year since 2006",
    )
    .await;
    let api = agent(
        &n,
        &[(
            space(),
            BudgetConfig {
                tokens: cost + 1,
                window_secs: 3600,
                action: BudgetAction::Warn,
            },
        )],
    )
    .await;
    let query = json!({ "pattern": "notes.*" });
    for _ in 0..3 {
        let answer = api.ok("query", query.clone()).await;
        assert_eq!(
            answer["hits"].as_array().unwrap().len(),
            1,
            "warn never refuses"
        );
    }
    let budget = api.ok("budget", json!({})).await;
    assert_eq!(budget["spaces"][0]["used"], 3 * cost);
    assert_eq!(budget["spaces"][0]["action"], "warn");
    // One event, when the second answer took the budget over its limit.
    let events = api.ok("events", json!({ "since": 0 })).await;
    let warnings: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "budget")
        .collect();
    assert_eq!(warnings.len(), 1, "{events}");
    assert_eq!(warnings[0]["space"], "gov");
    let text = warnings[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "space gov's token budget is spent: {} of {}",
            2 * cost,
            cost + 1
        )),
        "{text}"
    );
    // A follower filtering on other keys still gets it: it asks for the agent's attention.
    let sub = api
        .ok("subscribe", json!({ "patterns": ["unrelated.**"] }))
        .await;
    let filtered = api
        .ok(
            "events",
            json!({ "since": 0, "subscription": sub["subscription"] }),
        )
        .await;
    assert!(
        filtered["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "budget"),
        "{filtered}"
    );
    let metrics = api.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "membrane_budget_warnings_total{budget=\"space:gov\"}"
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "membrane_budget_refusals_total"), 0.0);
    let overs: Vec<bool> = charges(&audit_log(&n).await).iter().map(|c| c.2).collect();
    assert_eq!(overs, [false, true, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crossing_decision_is_audited_with_why() {
    let nodes = mesh(3, &Default::default()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let api = agent(a, &[]).await;
    let write = |n: &NodeHandle, key: &str, tier: Tier| {
        let n = n.clone();
        let key = key.to_owned();
        async move {
            n.expose(
                &space(),
                Draft::new(key.parse().unwrap(), format!("value of {key}"), Some(tier)),
            )
            .await
            .unwrap();
        }
    };
    write(a, "notes.a", Tier::Public).await;
    write(b, "notes.b_public", Tier::Public).await;
    write(b, "notes.b_private", Tier::Private).await;
    write(b, "notes.b_trusted", Tier::Trusted).await;
    write(c, "notes.c", Tier::Public).await;
    eventually(a, "every public note and trace arrives", || async {
        let answer = a
            .query(&space(), &"notes.*".parse().unwrap(), false)
            .await
            .unwrap();
        answer.hits.len() == 3 && answer.hidden == 1 && answer.denied.len() == 1
    })
    .await;
    a.govern(Override::Quarantine(*c.id())).await.unwrap();

    let answer = api.ok("query", json!({ "pattern": "notes.*" })).await;
    assert_eq!(answer["hits"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer["hidden"], 2);
    let search = api
        .ok("search", json!({ "text": "value of notes.c" }))
        .await;
    assert!(
        search["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["entry"]["owner"] != c.id().to_string()),
        "{search}"
    );

    let log = audit_log(a).await;
    let all = answers(&log);
    let (verb, query) = &all[0];
    assert_eq!(verb, "query");
    let seen: BTreeMap<&str, (CrossingDecision, Option<&str>, PublicKey)> = query
        .iter()
        .map(|d| (d.key.as_str(), (d.decision, d.reason.as_deref(), d.owner)))
        .collect();
    assert_eq!(
        seen,
        BTreeMap::from([
            ("notes.a", (CrossingDecision::Visible, None, *a.id())),
            ("notes.b_public", (CrossingDecision::Visible, None, *b.id())),
            (
                "notes.b_private",
                (
                    CrossingDecision::Hidden,
                    Some("private to its owner"),
                    *b.id()
                )
            ),
            (
                "notes.c",
                (
                    CrossingDecision::Hidden,
                    Some("its owner is quarantined"),
                    *c.id()
                )
            ),
            (
                "notes.b_trusted",
                (
                    CrossingDecision::Denied,
                    query
                        .iter()
                        .find(|d| d.key == "notes.b_trusted")
                        .and_then(|d| d.reason.as_deref()),
                    *b.id()
                )
            ),
        ])
    );
    let trusted = seen["notes.b_trusted"].1.unwrap();
    assert!(
        trusted.contains("trust in") && trusted.contains("< 0.5"),
        "{trusted}"
    );
    // The search: what crossed, and the quarantined owner's entry held back.
    let (verb, search) = &all[1];
    assert_eq!(verb, "search");
    assert!(
        search.iter().any(|d| d.key == "notes.c"
            && d.decision == CrossingDecision::Hidden
            && d.reason.as_deref() == Some("its owner is quarantined")),
        "{search:?}"
    );
    assert!(
        search
            .iter()
            .any(|d| d.decision == CrossingDecision::Visible)
    );
    // The quarantine that hid it is in the log before the answers.
    let quarantined_at = log
        .iter()
        .position(|r| matches!(&r.event, AuditEvent::Override { peer, .. } if peer == c.id()))
        .unwrap();
    let first_answer = log
        .iter()
        .position(|r| matches!(r.event, AuditEvent::Answer { .. }))
        .unwrap();
    assert!(quarantined_at < first_answer);
}

fn capability(name: &str) -> Value {
    json!({ "name": name, "description": format!("does {name}") })
}

/// Posts a task needing `capability` through `api`; its id.
async fn post_task(api: &Agent, description: &str, capability: &str) -> String {
    let task = api
        .ok(
            "task-post",
            json!({ "description": description, "capability": capability }),
        )
        .await;
    task["task"].as_str().unwrap().to_owned()
}

fn breaker_moved(key: &BreakerKey, to: &str) -> impl Fn(&AuditEvent) -> bool {
    let key = key.clone();
    let to = to.to_owned();
    move |e| {
        matches!(e, AuditEvent::Breaker { key: k, transition }
            if *k == key && serde_json::to_value(transition).unwrap()["to"] == to.as_str())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_failures_trip_breakers_on_every_node_and_one_success_closes_them() {
    let immune = membrane_immune::Config {
        breaker: BreakerConfig {
            failures: 3,
            cooldown_ms: 6_000,
        },
        ..Default::default()
    };
    let nodes = mesh(2, &immune).await;
    let (worker, poster) = (agent(&nodes[0], &[]).await, agent(&nodes[1], &[]).await);
    let (w, p) = (worker.node.id(), poster.node.id());
    worker
        .ok(
            "register",
            json!({ "name": "worker", "capabilities": [capability("flaky"), capability("steady")] }),
        )
        .await;
    poster
        .ok(
            "register",
            json!({ "name": "poster", "capabilities": [capability("flaky")] }),
        )
        .await;
    let mut flaky = Vec::new();
    for i in 0..4 {
        flaky.push(post_task(&poster, &format!("flaky job {i}"), "flaky").await);
    }
    let steady = post_task(&poster, "steady job", "steady").await;
    let help = poster
        .ok(
            "help",
            json!({ "need": "does flaky", "within_ms": 600_000 }),
        )
        .await["help"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(&worker.node, "the tasks arrive", || async {
        let tasks = worker.ok("tasks", json!({})).await;
        tasks["tasks"].as_array().unwrap().len() == 5
    })
    .await;
    // The worker's node offers on its own (its card matches the need).
    eventually(
        &poster.node,
        "the worker's automatic offer arrives",
        || async {
            let offers = poster.ok("offers", json!({ "help": help })).await;
            offers["offers"].as_array().unwrap().len() == 1
        },
    )
    .await;

    // Three tasks toward the worker fail in a row.
    for id in &flaky[..3] {
        let claimed = worker.ok("task-claim", json!({ "task": id })).await;
        assert_eq!(claimed["winner"], w.to_string());
        let failed = worker
            .ok("task-fail", json!({ "task": id, "result": "flaked" }))
            .await;
        assert_eq!(failed["state"], "failed");
    }
    // Both breakers opened at the worker's own node: its claims and offers are refused,
    // naming its agent breaker, for any capability.
    for id in [&flaky[3], &steady] {
        let refused = worker
            .refused("task-claim", json!({ "task": id }), 409)
            .await;
        assert_eq!(refused["error"], "breaker_open", "{refused}");
        assert_eq!(refused["breaker"]["guards"], "agent");
        assert_eq!(refused["breaker"]["id"], w.to_string());
        assert_eq!(refused["breaker"]["state"], "open");
        assert!(refused["breaker"]["until_ms"].is_u64());
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("circuit breaker for agent"),
            "{refused}"
        );
    }
    let refused = worker
        .refused("offer", json!({ "help": help, "capability": "flaky" }), 409)
        .await;
    assert_eq!(refused["breaker"]["guards"], "agent", "{refused}");
    let threats = worker.ok("threats", json!({})).await;
    assert_eq!(
        threats["breakers"].as_array().unwrap().len(),
        2,
        "{threats}"
    );

    // The poster's node read the same outcomes from the medium: its capability breaker
    // refuses its own claim of a flaky task, and the worker's offer shows as blocked.
    let agent_key = BreakerKey::Agent(*w);
    let flaky_key = BreakerKey::Capability("flaky".into());
    wait_audit(&poster.node, "the poster's breakers open", |e| {
        breaker_moved(&flaky_key, "opened")(e)
    })
    .await;
    let log = audit_log(&poster.node).await;
    assert!(
        log.iter()
            .any(|r| breaker_moved(&agent_key, "opened")(&r.event))
    );
    let refused = poster
        .refused("task-claim", json!({ "task": flaky[3] }), 409)
        .await;
    assert_eq!(refused["breaker"]["guards"], "capability", "{refused}");
    assert_eq!(refused["breaker"]["id"], "flaky");
    let offers = poster.ok("offers", json!({ "help": help })).await;
    let offered = offers["offers"].as_array().unwrap();
    assert_eq!(offered.len(), 1, "{offers}");
    assert_eq!(offered[0]["agent"], w.to_string());
    assert_eq!(offered[0]["blocked"]["guards"], "agent", "{offers}");

    // After the cooldown the poster's capability breaker is half-open: its claim is the
    // one trial, and its success closes the breaker, here and, through the medium, at the
    // worker's node too.
    wait_audit(
        &poster.node,
        "the poster's capability breaker half-opens",
        |e| breaker_moved(&flaky_key, "half_open")(e),
    )
    .await;
    let claimed = poster.ok("task-claim", json!({ "task": flaky[3] })).await;
    assert_eq!(claimed["winner"], p.to_string());
    poster
        .ok(
            "task-complete",
            json!({ "task": flaky[3], "result": "done" }),
        )
        .await;
    for n in [&poster.node, &worker.node] {
        wait_audit(n, "the capability breaker closes", |e| {
            breaker_moved(&flaky_key, "closed")(e)
        })
        .await;
    }
    // The worker's own breaker half-opens too; its next claim is the trial, and closes it.
    wait_audit(&worker.node, "the worker's breaker half-opens", |e| {
        breaker_moved(&agent_key, "half_open")(e)
    })
    .await;
    worker.ok("task-claim", json!({ "task": steady })).await;
    worker
        .ok("task-complete", json!({ "task": steady, "result": "done" }))
        .await;
    for n in [&worker.node, &poster.node] {
        wait_audit(n, "the worker's breaker closes", |e| {
            breaker_moved(&agent_key, "closed")(e)
        })
        .await;
    }
    let threats = worker.ok("threats", json!({})).await;
    assert_eq!(threats["breakers"], Value::Null, "all closed: {threats}");
    // Failing tasks are not offences.
    let standing = poster.node.immune_report(0).await.unwrap();
    let worker_rep = standing
        .peers
        .iter()
        .find(|s| s.peer == *w)
        .map(|s| s.reputation);
    assert!(worker_rep.is_some_and(|r| r >= 0.0), "{worker_rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_joins_without_the_capability_lower_the_offenders_reputation() {
    let nodes = mesh(3, &Default::default()).await;
    let (host, honest, rogue) = (&nodes[0], &nodes[1], &nodes[2]);
    let host_api = agent(host, &[]).await;
    let honest_api = agent(honest, &[]).await;
    host_api
        .ok(
            "register",
            json!({ "name": "host", "capabilities": [capability("surgery")] }),
        )
        .await;
    honest_api
        .ok(
            "register",
            json!({ "name": "honest", "capabilities": [capability("surgery")] }),
        )
        .await;
    let task = post_task(&host_api, "operate", "surgery").await;
    host_api
        .ok(
            "swarm-create",
            json!({ "name": "ward", "capability": "surgery", "threshold": 2 }),
        )
        .await;
    for n in [honest, rogue] {
        eventually(n, "the task and the swarm arrive", || async {
            let snap = n.coordination(&space()).await.unwrap();
            snap.tasks.contains_key(&task) && snap.swarms.contains_key("ward")
        })
        .await;
    }
    // The honest agent claims and joins with the capability on its card.
    honest_api.ok("task-claim", json!({ "task": task })).await;
    honest_api
        .ok("swarm-join", json!({ "swarm": "ward" }))
        .await;
    // The rogue writes a claim with no card at all (the API would refuse; it writes the
    // record itself).
    let record = |key: String, value: &str| {
        let mut draft = Draft::new(key.parse().unwrap(), value, Some(Tier::Public));
        draft.kind = EntryKind::Meta;
        draft
    };
    rogue
        .expose(
            &space(),
            record(coord::claim_key(&task, rogue.id()), r#"{"lamport": 1}"#),
        )
        .await
        .unwrap();
    let violation = |e: &AuditEvent| {
        matches!(e, AuditEvent::ThreatDetected { detection }
            if detection.offender == *rogue.id() && detection.kind == ThreatKind::CapabilityViolation)
    };
    wait_audit(
        host,
        "the host sees the rogue's claim as a violation",
        violation,
    )
    .await;
    let standing = |n: &NodeHandle, peer: PublicKey| {
        let n = n.clone();
        async move {
            n.immune_report(0)
                .await
                .unwrap()
                .peers
                .into_iter()
                .find(|s| s.peer == peer)
        }
    };
    let rogue_at_host = standing(host, *rogue.id()).await.unwrap();
    // A mid offence costs 20 (its valid records may have earned it half a point before).
    assert!(
        (-20.0..=-19.0).contains(&rogue_at_host.reputation),
        "{rogue_at_host:?}"
    );
    assert!(rogue_at_host.quarantine.is_none());
    // The claim counts nowhere, as before: the honest agent won.
    let snap = host.coordination(&space()).await.unwrap();
    assert_eq!(snap.tasks[&task].winner, Some(*honest.id()));
    // A join without the capability is a second offence: quarantined.
    rogue
        .expose(
            &space(),
            record(coord::member_key("ward", rogue.id()), "{}"),
        )
        .await
        .unwrap();
    eventually(host, "the rogue is quarantined", || async {
        standing(host, *rogue.id())
            .await
            .is_some_and(|s| s.quarantine.is_some() && s.reputation <= -39.0)
    })
    .await;
    let detections: Vec<String> = audit_log(host)
        .await
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::ThreatDetected { detection } if detection.offender == *rogue.id() => {
                Some(detection.reason.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        detections,
        [
            "claimed with capability \"surgery\" with no capability ad",
            "joined with capability \"surgery\" with no capability ad"
        ]
    );
    // Nothing against the honest agent, anywhere.
    for n in [host, rogue] {
        assert!(
            standing(n, *honest.id())
                .await
                .is_none_or(|s| s.reputation >= 0.0),
            "honest agent punished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_of_a_verified_fact_is_escalated_to_every_agent() {
    let nodes = mesh(4, &Default::default()).await;
    let (owner, v1, v2, disputer) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let apis = [
        agent(owner, &[]).await,
        agent(v1, &[]).await,
        agent(v2, &[]).await,
        agent(disputer, &[]).await,
    ];
    let fact = apis[0]
        .ok(
            "expose",
            json!({ "key": "facts.sea_level", "value": "3.7 mm/yr", "tier": "public", "kind": "fact" }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id: membrane_protocol::EnvelopeId = fact.parse().unwrap();
    for api in &apis[1..] {
        eventually(&api.node, "the fact arrives", || async {
            api.node
                .verification(&space(), id, 2)
                .await
                .unwrap()
                .1
                .is_some()
        })
        .await;
    }
    apis[1]
        .ok("verify", json!({ "id": fact, "note": "checked" }))
        .await;
    apis[2]
        .ok("verify", json!({ "id": fact, "note": "checked" }))
        .await;
    eventually(disputer, "the fact is verified at the disputer", || async {
        disputer
            .verification(&space(), id, 2)
            .await
            .unwrap()
            .0
            .verified
    })
    .await;
    // Nothing to escalate yet.
    assert!(
        !escalated(disputer)
            .await
            .iter()
            .any(|(key, _)| key == "facts.sea_level")
    );
    apis[3]
        .ok(
            "dispute",
            json!({ "id": fact, "note": "the source says 3.3" }),
        )
        .await;
    for (i, n) in nodes.iter().enumerate() {
        eventually(n, &format!("node {i} escalates the dispute"), || async {
            escalated(n).await.iter().any(|(key, reason)| {
                key == "facts.sea_level" && reason == "a fact verified by 2 agents is disputed by 1"
            })
        })
        .await;
        let conflicts: Vec<AuditEvent> = audit_log(n)
            .await
            .into_iter()
            .map(|r| r.event)
            .filter(|e| matches!(e, AuditEvent::Conflict { .. }))
            .collect();
        assert_eq!(
            conflicts,
            [AuditEvent::Conflict {
                space: "gov".into(),
                key: "facts.sea_level".into(),
                entries: vec![fact.clone()],
                owners: vec![*owner.id(), *disputer.id()],
                reason: "a fact verified by 2 agents is disputed by 1".into(),
            }],
            "node {i}: once, with the owner and the disputer"
        );
    }
    // Through the API: an `escalation` event, past any filter.
    let sub = apis[0]
        .ok("subscribe", json!({ "patterns": ["other.**"] }))
        .await;
    let events = apis[0]
        .ok(
            "events",
            json!({ "since": 0, "subscription": sub["subscription"] }),
        )
        .await;
    let event = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "escalation")
        .cloned()
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(event["key"], "facts.sea_level");
    assert_eq!(event["id"], fact.as_str());
    assert_eq!(event["about"][1], disputer.id().to_string());
}

/// The escalations in `node`'s event log: (key, reason).
async fn escalated(node: &NodeHandle) -> Vec<(String, String)> {
    node.events_since(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Escalation { key, reason, .. } => Some((key.to_string(), reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn contradicting_facts_of_two_owners_are_escalated_and_logged_for_the_operator() {
    use common::process::{Follower, NodeProcess, message};
    let root = tempfile::tempdir().unwrap();
    let a = NodeProcess::start(&root.path().join("a"), &["--space", "facts"]);
    a.wait_ready();
    let b = NodeProcess::start(
        &root.path().join("b"),
        &["--space", "facts", "--bootstrap", &a.boot_addr()],
    );
    b.wait_ready();
    a.wait_peers(1);
    b.wait_peers(1);
    let expose = |node: &NodeProcess, key: &str, value: &str, kind: &str| {
        node.cli_ok(&["expose", key, value, "--tier", "public", "--kind", kind]);
    };
    expose(&b, "hypotheses.cause", "thermal expansion", "hypothesis");
    expose(&b, "facts.sea_level", "3.3 mm/yr", "fact");
    common::process::eventually(&a, "b's entries arrive", || {
        a.cli_json(&["query", "**"])["hits"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    // Two owners, two hypotheses: an ordinary conflict. Two owners, two facts: escalated.
    expose(&a, "hypotheses.cause", "ice melt", "hypothesis");
    expose(&a, "facts.sea_level", "3.7 mm/yr", "fact");
    let events = Follower::start(&a, &["--since", "0"]);
    let seen = std::cell::RefCell::new(Vec::new());
    let escalation = events.wait("the escalation", |e| {
        seen.borrow_mut()
            .push((e["type"].clone(), e["key"].clone()));
        e["type"] == "escalation"
    });
    let seen = seen.into_inner();
    assert_eq!(escalation["key"], "facts.sea_level", "{escalation}");
    assert_eq!(
        escalation["text"],
        "2 owners state contradicting facts under facts.sea_level"
    );
    assert_eq!(escalation["about"].as_array().unwrap().len(), 2);
    assert!(
        seen.contains(&(json!("conflict"), json!("hypotheses.cause"))),
        "the hypotheses' conflict came first, without an escalation: {seen:?}"
    );
    // The operator's log line.
    let line = a.wait_line("the escalation's log line", |j| {
        message(j).starts_with("value conflict escalated to the agent")
    });
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["fields"]["key"], "facts.sea_level");
    // The conflict record, at both nodes (b sees a's fact arrive).
    for node in [&a, &b] {
        common::process::eventually(node, "the conflict record", || {
            node.cli_json(&["audit"])["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["event"]["type"] == "conflict" && r["event"]["key"] == "facts.sea_level")
        });
        let audit = node.cli_json(&["audit"]);
        assert_eq!(audit["verified"], true, "{audit}");
        let conflicts = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["event"]["type"] == "conflict")
            .count();
        assert_eq!(conflicts, 1, "only the facts: {audit}");
    }
}
