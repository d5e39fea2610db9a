//! Coordination latency through the agent API: swarm activation and task-claim resolution.
//!
//! `cargo run -p membrane-simulations --release --bin coord-bench [-- --quick]`
//!
//! Real nodes in this process (libp2p memory transport, in-memory storage, full mesh), each
//! with its HTTP API on `127.0.0.1:0`, driven through the agent's client; every agent is
//! registered with the capability the swarms and tasks need, and every node holds every
//! capability card before the first round. Times are taken where an agent would see them:
//! on each node's event stream (`GET /v1/events`, one connection per node).
//!
//! * Activation (N = 5 and 20, threshold 3): per round a rotating node creates a swarm and
//!   two others join; once every node's stream shows it forming with 2 members, the clock
//!   starts and a third joins. Measured: until every node's stream shows it `active`.
//! * Claims (10 claimants + 1 poster): per round the poster posts a task; once every node's
//!   stream shows it open, the 10 claimants call `task-claim` at once. Measured: until every
//!   node's task events name the winner it ends with, and until every node holds all 10
//!   claims; then every node's `tasks` must agree on one winner and the same 10 claims (the
//!   run fails otherwise).
//!
//! One untimed warm-up round each; 20 timed rounds (5 with `--quick`).
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use membrane_crdt::MemoryStorage;
use membrane_node::api::client::Client;
use membrane_node::api::types::EventView;
use membrane_node::api::{Ctx, serve};
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::{ApproxCounter, TokenCounter};
use membrane_protocol::{Keypair, Space};
use membrane_simulations::stats::quantile;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Any 64 hex digits will do: the API only compares the bearer token.
const TOKEN: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
/// The capability every agent registers and every swarm and task needs.
const CAPABILITY: &str = "bench_review";
/// Members that activate a swarm.
const THRESHOLD: usize = 3;
/// Concurrent claimants per task.
const CLAIMANTS: usize = 10;
/// Longest wait for anything.
const DEADLINE: Duration = Duration::from_secs(60);

/// A node with its API and the agent's client of it.
struct Member {
    handle: NodeHandle,
    api: String,
    client: Client,
    peer: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    task: JoinHandle<()>,
}

impl Member {
    async fn call(&self, verb: &str, body: Value) -> anyhow::Result<Value> {
        self.client
            .call(verb, &body)
            .await
            .with_context(|| format!("POST /v1/{verb} {body} on {}", self.peer))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.handle.shutdown().await;
        drop(self.handle);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Starts `n` nodes, connects them in a full mesh, registers every agent with
/// [`CAPABILITY`] and waits until every node holds every card.
async fn start(n: usize, seed: u8) -> anyhow::Result<Vec<Member>> {
    let space = Space::default_space();
    let tokens: Arc<dyn TokenCounter> = Arc::new(ApproxCounter);
    let mut members = Vec::with_capacity(n);
    let mut addrs: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        bytes[8] = seed;
        bytes[9] = 0xc0;
        let mut options = NodeOptions::memory(Keypair::from_seed(&bytes));
        options.spaces = vec![space.clone()];
        if let Some(boot) = addrs.first() {
            options.bootstrap = vec![boot.parse()?];
        }
        let (handle, task) =
            Node::spawn(options, MemoryStorage::new(), Arc::clone(&tokens)).await?;
        let addr = handle
            .listening()
            .await?
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("node {i} does not listen"))?;
        addrs.push(addr);
        let ctx = Arc::new(Ctx::new(
            handle.clone(),
            space.clone(),
            Arc::clone(&tokens),
            TOKEN.to_owned(),
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?.to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, ctx, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&api, TOKEN)?;
        let peer = handle.id().to_string();
        members.push(Member {
            handle,
            api,
            client,
            peer,
            stop,
            server,
            task,
        });
    }
    // Full mesh: node 0 is everyone's bootstrap; every other pair is dialed here.
    for i in 2..n {
        for addr in &addrs[1..i] {
            members[i].handle.dial(addr.parse()?).await?;
        }
    }
    let deadline = Instant::now() + DEADLINE;
    for (i, m) in members.iter().enumerate() {
        while m.handle.peers().await?.len() < n - 1 {
            ensure!(
                Instant::now() < deadline,
                "node {i} has {} of {} peers",
                m.handle.peers().await?.len(),
                n - 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut cards = Streams::open(&members, "coord.agents.*").await?;
    for (i, m) in members.iter().enumerate() {
        m.call(
            "register",
            json!({
                "name": format!("agent-{i}"),
                "capabilities": [{"name": CAPABILITY, "description": "reviews drafts"}],
            }),
        )
        .await?;
    }
    let mut held: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
    let deadline = Instant::now() + DEADLINE;
    while held.iter().any(|h| h.len() < n) {
        let seen = cards
            .next(deadline, "every capability card on every node")
            .await?;
        if matches!(seen.event.kind.as_str(), "exposed" | "arrived")
            && let Some(key) = seen.event.key
        {
            held[seen.node].insert(key);
        }
    }
    Ok(members)
}

/// One event as a node's stream delivered it, and when.
struct Seen {
    node: usize,
    event: EventView,
    at: Instant,
}

/// Every node's event stream filtered by one pattern, each on its own connection and
/// followed by its own task, which stamps each event as it arrives.
struct Streams {
    rx: mpsc::UnboundedReceiver<Seen>,
    readers: Vec<JoinHandle<()>>,
}

impl Streams {
    async fn open(members: &[Member], pattern: &str) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut readers = Vec::with_capacity(members.len());
        for (node, m) in members.iter().enumerate() {
            let client = Client::new(&m.api, TOKEN)?;
            let stream = client.events(&format!("pattern={pattern}"), None).await?;
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let _client = client;
                let mut stream = Box::pin(stream);
                while let Some(Ok(event)) = stream.next().await {
                    let at = Instant::now();
                    if tx.send(Seen { node, event, at }).is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(Self { rx, readers })
    }

    async fn next(&mut self, deadline: Instant, what: &str) -> anyhow::Result<Seen> {
        tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .ok_or_else(|| anyhow!("every event stream ended while waiting for {what}"))
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// A swarm event's state and member count: "forming, 2 members" → ("forming", 2).
fn swarm_state(event: &EventView) -> Option<(&str, usize)> {
    let text = event.text.as_deref()?;
    match text.split_once(", ") {
        Some((state, rest)) => Some((state, rest.strip_suffix(" members")?.parse().ok()?)),
        None => Some((text.split(':').next()?, 0)),
    }
}

/// Reads `streams` until `done` holds for an event of every one of `n` nodes.
async fn until_all(
    streams: &mut Streams,
    n: usize,
    what: &str,
    done: impl Fn(&EventView) -> bool,
) -> anyhow::Result<()> {
    let mut pending: BTreeSet<usize> = (0..n).collect();
    let deadline = Instant::now() + DEADLINE;
    while !pending.is_empty() {
        let seen = streams
            .next(deadline, &format!("{what} ({} nodes left)", pending.len()))
            .await?;
        if done(&seen.event) {
            pending.remove(&seen.node);
        }
    }
    Ok(())
}

/// What one activation round measured.
struct Activation {
    /// Until the last node's stream showed the swarm active.
    to_all: Duration,
    /// Per node, until its stream showed it.
    per_node: Vec<Duration>,
    /// The threshold-crossing `swarm-join` call's round trip.
    ack: Duration,
    /// CPU time the process used from the call until every node showed it, and that span.
    cpu: (Duration, Duration),
}

async fn activation_round(
    members: &[Member],
    tag: &str,
    round: usize,
) -> anyhow::Result<Activation> {
    let n = members.len();
    let slug = format!("{tag}-r{round}");
    let key = format!("coord.swarms.{slug}");
    let creator = round % n;
    let joiners: Vec<usize> = (1..THRESHOLD).map(|k| (round + k) % n).collect();
    let crossing = (round + THRESHOLD) % n;
    let mut streams = Streams::open(members, "coord.swarms.*").await?;
    members[creator]
        .call(
            "swarm-create",
            json!({"name": slug, "capability": CAPABILITY, "threshold": THRESHOLD}),
        )
        .await?;
    until_all(&mut streams, n, &format!("swarm {slug} forming"), |e| {
        e.kind == "swarm" && e.key.as_deref() == Some(&key)
    })
    .await?;
    for &j in &joiners {
        members[j]
            .call("swarm-join", json!({"swarm": slug}))
            .await?;
    }
    until_all(
        &mut streams,
        n,
        &format!("swarm {slug} with {} members", THRESHOLD - 1),
        |e| {
            e.kind == "swarm"
                && e.key.as_deref() == Some(&key)
                && swarm_state(e) == Some(("forming", THRESHOLD - 1))
        },
    )
    .await?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let answer = members[crossing]
        .call("swarm-join", json!({"swarm": slug}))
        .await?;
    let ack = t0.elapsed();
    ensure!(
        answer["state"] == "active",
        "the threshold-crossing join answered {answer}"
    );
    let mut per_node: Vec<Option<Duration>> = vec![None; n];
    let deadline = t0 + DEADLINE;
    while per_node.iter().any(Option::is_none) {
        let seen = streams
            .next(deadline, &format!("swarm {slug} active everywhere"))
            .await?;
        if seen.event.kind != "swarm" || seen.event.key.as_deref() != Some(&key) {
            continue;
        }
        match swarm_state(&seen.event) {
            Some(("active", m)) if m == THRESHOLD => {
                per_node[seen.node].get_or_insert(seen.at.duration_since(t0));
            }
            Some(("forming", _)) => {}
            _ => bail!(
                "node {}: swarm {slug} went {:?} after the crossing join",
                seen.node,
                seen.event.text
            ),
        }
    }
    let cpu = (cpu_time().saturating_sub(cpu0), t0.elapsed());
    let per_node: Vec<Duration> = per_node.into_iter().flatten().collect();
    Ok(Activation {
        to_all: per_node.iter().copied().max().unwrap_or_default(),
        per_node,
        ack,
        cpu,
    })
}

/// What one claims round measured.
struct Claims {
    /// Until every node's task events named the final winner (and never changed after).
    agreed: Duration,
    /// Until every node held all the claims.
    all_claims: Duration,
    /// `task-claim` round trips.
    acks: Vec<Duration>,
    /// Claimants whose own answer named themselves the winner.
    self_winners: usize,
    /// Winner changes seen on the streams, over all nodes.
    flips: usize,
    /// CPU time the process used from the calls until every node held every claim, and
    /// that span.
    cpu: (Duration, Duration),
}

/// What the task's events have shown each node so far.
struct ClaimWatch {
    key: String,
    claim_prefix: String,
    /// Per node: the winner its events name last, and when they named it.
    winner: Vec<Option<(String, Instant)>>,
    /// Per node: the claims it holds.
    held: Vec<BTreeSet<String>>,
    /// Per node: when it held them all.
    complete: Vec<Option<Instant>>,
    /// Winner changes after the first, over all nodes.
    flips: usize,
}

impl ClaimWatch {
    fn new(n: usize, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            claim_prefix: format!("{key}.claims."),
            winner: vec![None; n],
            held: vec![BTreeSet::new(); n],
            complete: vec![None; n],
            flips: 0,
        }
    }

    fn absorb(&mut self, seen: &Seen) -> anyhow::Result<()> {
        let e = &seen.event;
        let Some(k) = e.key.as_deref() else {
            return Ok(());
        };
        if e.kind == "task" && k == self.key {
            match (e.text.as_deref(), e.about.first()) {
                (Some("claimed"), Some(w)) => {
                    if self.winner[seen.node].is_some() {
                        self.flips += 1;
                    }
                    self.winner[seen.node] = Some((w.clone(), seen.at));
                }
                (Some("open"), None) => {}
                (text, named) => bail!(
                    "node {}: {} event {text:?} naming {named:?} during the claims",
                    seen.node,
                    self.key
                ),
            }
        } else if matches!(e.kind.as_str(), "exposed" | "arrived")
            && k.starts_with(&self.claim_prefix)
        {
            self.held[seen.node].insert(k.to_owned());
            if self.held[seen.node].len() == CLAIMANTS {
                self.complete[seen.node].get_or_insert(seen.at);
            }
        }
        Ok(())
    }
}

async fn claims_round(members: &[Member], round: usize) -> anyhow::Result<Claims> {
    let n = members.len();
    let mut streams = Streams::open(members, "coord.tasks.**").await?;
    let posted = members[0]
        .call(
            "task-post",
            json!({"description": format!("claim bench round {round}"), "capability": CAPABILITY}),
        )
        .await?;
    let id = posted["task"]
        .as_str()
        .ok_or_else(|| anyhow!("task-post answered without a task id: {posted}"))?
        .to_owned();
    let key = format!("coord.tasks.{id}");
    until_all(&mut streams, n, &format!("task {id} open"), |e| {
        e.kind == "task" && e.key.as_deref() == Some(&key) && e.text.as_deref() == Some("open")
    })
    .await?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut calls = Vec::with_capacity(CLAIMANTS);
    for m in &members[1..=CLAIMANTS] {
        let client = m.client.clone();
        let body = json!({"task": id});
        calls.push(tokio::spawn(async move {
            let answer = client.call("task-claim", &body).await;
            (answer, t0.elapsed())
        }));
    }
    let mut watch = ClaimWatch::new(n, &key);
    let deadline = t0 + DEADLINE;
    while watch.complete.iter().any(Option::is_none) {
        let seen = streams
            .next(deadline, &format!("every claim on task {id} everywhere"))
            .await?;
        watch.absorb(&seen)?;
    }
    let cpu = (cpu_time().saturating_sub(cpu0), t0.elapsed());
    let mut acks = Vec::with_capacity(CLAIMANTS);
    let mut self_winners = 0;
    for (call, m) in calls.into_iter().zip(&members[1..=CLAIMANTS]) {
        let (answer, took) = call.await?;
        let answer = answer.with_context(|| format!("task-claim {id} on {}", m.peer))?;
        acks.push(took);
        if answer["winner"].as_str() == Some(m.peer.as_str()) {
            self_winners += 1;
        }
    }
    // Every node's own account: one winner, the same claims.
    let mut views = Vec::with_capacity(n);
    for m in members {
        let tasks = m.call("tasks", json!({})).await?;
        let task = tasks["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["task"] == id.as_str()))
            .cloned()
            .ok_or_else(|| anyhow!("node {} does not list task {id}: {tasks}", m.peer))?;
        views.push(task);
    }
    let final_winner = views[0]["winner"]
        .as_str()
        .ok_or_else(|| anyhow!("node 0 names no winner of task {id}: {}", views[0]))?
        .to_owned();
    let claimants = &views[0]["claimants"];
    ensure!(
        claimants.as_array().map(Vec::len) == Some(CLAIMANTS),
        "node 0 lists {claimants} as the claims on task {id}, not {CLAIMANTS}"
    );
    let mut by_winner: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, v) in views.iter().enumerate() {
        by_winner
            .entry(v["winner"].as_str().unwrap_or("none").to_owned())
            .or_default()
            .push(i);
        ensure!(
            v["state"] == "claimed" && &v["claimants"] == claimants,
            "node {i} disagrees on task {id}: {v} against node 0's {}",
            views[0]
        );
    }
    ensure!(
        by_winner.len() == 1,
        "task {id}: nodes name different winners: {by_winner:?}"
    );
    // The streams end on that winner (its last event may still be on its way).
    while watch
        .winner
        .iter()
        .any(|w| w.as_ref().map(|(w, _)| w) != Some(&final_winner))
    {
        let seen = streams
            .next(deadline, &format!("every stream naming the winner of {id}"))
            .await?;
        watch.absorb(&seen)?;
    }
    let last = |times: Vec<Instant>| {
        times
            .into_iter()
            .max()
            .map(|at| at.duration_since(t0))
            .unwrap_or_default()
    };
    Ok(Claims {
        agreed: last(
            watch
                .winner
                .into_iter()
                .flatten()
                .map(|(_, at)| at)
                .collect(),
        ),
        all_claims: last(watch.complete.into_iter().flatten().collect()),
        acks,
        self_winners,
        flips: watch.flips,
        cpu,
    })
}

/// CPU time the threads of this process have had so far, from each thread's
/// `/proc/self/task/<tid>/schedstat` (nanoseconds, Linux); zero where there is none. The
/// threads (the runtime's workers) live through the whole run, so differences are exact.
fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Cores busy on average: CPU time over wall time, summed over rounds.
fn cores(spans: impl Iterator<Item = (Duration, Duration)>) -> f64 {
    let (cpu, wall) = spans.fold((0.0, 0.0), |(c, w), (cpu, wall)| {
        (c + cpu.as_secs_f64(), w + wall.as_secs_f64())
    });
    if wall > 0.0 { cpu / wall } else { 0.0 }
}

/// Waits until the nodes have finished settling in (card syncs, DHT provider records: a
/// few seconds of both cores at N = 20), so no round shares the machine with set-up work:
/// until a half-second passes with the process under 5 % of a core, or 30 s.
async fn settle() {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cores(std::iter::once((
            cpu_time().saturating_sub(cpu0),
            t0.elapsed(),
        ))) < 0.05
        {
            return;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and p99 of `samples`, in ms.
fn mid99(samples: &mut [Duration]) -> (f64, f64) {
    (ms(quantile(samples, 0.5)), ms(quantile(samples, 0.99)))
}

async fn activation(n: usize, rounds: usize) -> anyhow::Result<Vec<Activation>> {
    ensure!(
        n > THRESHOLD,
        "activation needs more than {THRESHOLD} nodes"
    );
    let members = start(n, n as u8).await?;
    settle().await;
    let tag = format!("act-n{n}");
    activation_round(&members, &format!("{tag}-warm"), 0).await?;
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        out.push(activation_round(&members, &tag, round).await?);
    }
    for m in members {
        m.stop().await;
    }
    Ok(out)
}

async fn claims(rounds: usize) -> anyhow::Result<Vec<Claims>> {
    let members = start(CLAIMANTS + 1, 0xcc).await?;
    settle().await;
    claims_round(&members, usize::MAX).await?;
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        out.push(claims_round(&members, round).await?);
    }
    for m in members {
        m.stop().await;
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("# coord-bench\n");
    println!(
        "In-process nodes (memory transport, full mesh, in-memory storage), each with its HTTP \
         API on loopback; every agent registered with `{CAPABILITY}`. Times are read on every \
         node's event stream. {rounds} rounds after one warm-up. CPU busy: the process's \
         CPU time in the measured windows (nodes, APIs and this benchmark's clients together) \
         over their wall time; 2.0 is both cores.\n"
    );
    println!(
        "**Swarm activation** (threshold {THRESHOLD}): from the threshold-crossing \
         `swarm-join` call to its `active` event on every node's stream.\n"
    );
    println!(
        "| nodes | to all: median | p99 | per node: median | p99 | crossing join ack: median | CPU busy in window |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [5, 20] {
        let samples = runtime.block_on(activation(n, rounds))?;
        let busy = cores(samples.iter().map(|s| s.cpu));
        let mut to_all: Vec<Duration> = samples.iter().map(|s| s.to_all).collect();
        let mut per_node: Vec<Duration> = samples.iter().flat_map(|s| s.per_node.clone()).collect();
        let mut acks: Vec<Duration> = samples.iter().map(|s| s.ack).collect();
        let (all50, all99) = mid99(&mut to_all);
        let (node50, node99) = mid99(&mut per_node);
        let (ack50, _) = mid99(&mut acks);
        println!(
            "| {n} | {all50:.1} ms | {all99:.1} ms | {node50:.1} ms | {node99:.1} ms | {ack50:.1} ms | {busy:.1} cores |"
        );
    }
    println!(
        "\n**Claim resolution** ({CLAIMANTS} claimants + 1 poster, {} nodes): the \
         {CLAIMANTS} `task-claim` calls fired at once; \"agreed\" is when every node's task \
         events last changed, to the winner every node's `tasks` then names; \"all claims\" \
         when every node held all {CLAIMANTS} claims.\n",
        CLAIMANTS + 1
    );
    let samples = runtime.block_on(claims(rounds))?;
    let busy = cores(samples.iter().map(|s| s.cpu));
    let mut agreed: Vec<Duration> = samples.iter().map(|s| s.agreed).collect();
    let mut all_claims: Vec<Duration> = samples.iter().map(|s| s.all_claims).collect();
    let mut acks: Vec<Duration> = samples.iter().flat_map(|s| s.acks.clone()).collect();
    let (agreed50, agreed99) = mid99(&mut agreed);
    let (all50, all99) = mid99(&mut all_claims);
    let (ack50, ack99) = mid99(&mut acks);
    let self_winners =
        samples.iter().map(|s| s.self_winners).sum::<usize>() as f64 / samples.len() as f64;
    let flips = samples.iter().map(|s| s.flips).sum::<usize>() as f64 / samples.len() as f64;
    println!(
        "| claimants | agreed: median | p99 | all claims: median | p99 | claim ack: median | p99 | answers naming the caller (mean) | winner changes per round (mean) | CPU busy in window |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {CLAIMANTS} | {agreed50:.1} ms | {agreed99:.1} ms | {all50:.1} ms | {all99:.1} ms | {ack50:.1} ms | {ack99:.1} ms | {self_winners:.1} | {flips:.1} | {busy:.1} cores |"
    );
    println!(
        "\nExactly one winner, the same {CLAIMANTS} claims on all {} nodes, in every round.",
        CLAIMANTS + 1
    );
    Ok(())
}
