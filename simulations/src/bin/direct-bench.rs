//! Direct messages through the agent API: delivery latency against a broadcast in the same
//! run, throughput to one receiver, and fan-out + gather to N agents.
//!
//! `cargo run -p membrane-simulations --release --bin direct-bench [-- --quick]`
//!
//! Real nodes in this process (libp2p memory transport, in-memory storage, the o200k
//! tokenizer), each with its HTTP API on `127.0.0.1:0`, driven through the agent's client.
//! The receivers' per-sender rate limit is raised out of the way (the measured sends would
//! otherwise be refused after 10); everything else is the default. Measuring starts once
//! every node holds every agent's capability card and the process has gone idle (set-up
//! syncs and DHT records done: under 5 % of a core for half a second).
//!
//! * Delivery (5 nodes, 40 rounds, 10 with `--quick`): a rotating pair; `send` of a
//!   200-byte message, timed to its answer (the receiver logged it and acknowledged) and to
//!   the receiver's event stream showing it; then a `broadcast` of the same text, timed to
//!   the same receiver's stream (the reference: gossip, no acknowledgement).
//! * Throughput: 200 sends one after another from one agent to another (each waiting for
//!   its acknowledgement), then 4 agents sending 50 each at once to one receiver.
//! * Fan-out + gather (N = 5 and 20, 10 rounds, 3 with `--quick`): agent 0 fans a task out
//!   to the N − 1 others, each of which replies as soon as its event stream shows the task;
//!   timed from the `fan-out` call until `gather` answers with all N − 1 results.
//!   `DIRECT_BENCH_ROUNDS=1` prints every round's time.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use futures::StreamExt;
use membrane_node::api::client::Client;
use membrane_protocol::Space;
use membrane_protocol::cost::{Tiktoken, TokenCounter};
use membrane_simulations::apinode::{ApiNode, keypair};
use membrane_simulations::stats::quantile;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest wait for anything.
const DEADLINE: Duration = Duration::from_secs(60);
/// Seed of the nodes' keys.
const SEED: u64 = 0xd1;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `n` nodes in one space, each knowing all the others.
async fn mesh(n: usize, tokens: &Arc<dyn TokenCounter>) -> anyhow::Result<Vec<ApiNode>> {
    let space = Space::default_space();
    let mut nodes: Vec<ApiNode> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = nodes.first().map(|b| b.addrs.clone()).unwrap_or_default();
        let node = ApiNode::start_with(keypair(SEED, i), &space, &boot, Arc::clone(tokens), |o| {
            o.direct.per_minute = 1_000_000;
            o.direct.burst = 10_000;
        })
        .await?;
        nodes.push(node);
    }
    // The DHT introduces the rest; dial what it has not by the time everyone started.
    for i in 1..n {
        for j in 1..i {
            if let Some(addr) = nodes[j].addrs.first() {
                nodes[i].handle.dial(addr.parse()?).await?;
            }
        }
    }
    for node in &nodes {
        node.wait_peers(n - 1, DEADLINE).await?;
    }
    for (i, node) in nodes.iter().enumerate() {
        node.call("register", json!({"name": format!("agent-{i}")}))
            .await?;
    }
    // Let the registrations settle (every card on every node), then the rest of the set-up
    // work (syncs, DHT records), before measuring anything.
    for node in &nodes {
        node.until("every card", DEADLINE, || async {
            let cards = node.handle.coordination(&space).await?.cards.len();
            Ok((cards == n).then_some(()))
        })
        .await?;
    }
    settle().await;
    Ok(nodes)
}

/// CPU time this process's threads have had so far (`/proc/self/task/*/schedstat`, ns).
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

/// Waits until half a second passes with the process under 5 % of a core (or 30 s), so
/// no round shares the machine with set-up work.
async fn settle() {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let (cpu0, t0) = (cpu_time(), Instant::now());
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu_time().saturating_sub(cpu0).as_secs_f64() < 0.05 * t0.elapsed().as_secs_f64() {
            return;
        }
    }
}

async fn send(from: &ApiNode, to: &ApiNode, message: &str) -> anyhow::Result<String> {
    let answer = from
        .call("send", json!({"to": to.peer, "message": message}))
        .await
        .with_context(|| format!("send to {}", to.peer))?;
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("send answered {answer}"))
}

struct Delivery {
    ack: Vec<Duration>,
    seen: Vec<Duration>,
    broadcast: Vec<Duration>,
}

async fn delivery(nodes: &[ApiNode], rounds: usize) -> anyhow::Result<Delivery> {
    let n = nodes.len();
    let mut out = Delivery {
        ack: Vec::new(),
        seen: Vec::new(),
        broadcast: Vec::new(),
    };
    for round in 0..=rounds {
        let (a, b) = (round % n, (round + 1 + round / n) % n);
        let b = if a == b { (b + 1) % n } else { b };
        let text = format!("r{round:04} {}", "x".repeat(194));
        let t0 = Instant::now();
        let id = send(&nodes[a], &nodes[b], &text).await?;
        let ack = t0.elapsed();
        nodes[b]
            .wait_event("the direct message", DEADLINE, |e| {
                e.kind == "direct" && e.id.as_deref() == Some(id.as_str())
            })
            .await?;
        let seen = t0.elapsed();
        let reference = format!("b{round:04} {}", "x".repeat(194));
        let t1 = Instant::now();
        nodes[a]
            .call("broadcast", json!({"message": reference}))
            .await?;
        nodes[b]
            .wait_event("the broadcast", DEADLINE, |e| {
                e.kind == "broadcast" && e.text.as_deref() == Some(reference.as_str())
            })
            .await?;
        let broadcast = t1.elapsed();
        // Round 0 warms the connections and the tokenizer.
        if round > 0 {
            out.ack.push(ack);
            out.seen.push(seen);
            out.broadcast.push(broadcast);
        }
    }
    Ok(out)
}

async fn throughput(nodes: &[ApiNode]) -> anyhow::Result<(f64, f64)> {
    let text = "y".repeat(200);
    let t0 = Instant::now();
    for _ in 0..200 {
        send(&nodes[0], &nodes[1], &text).await?;
    }
    let sequential = 200.0 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let senders = nodes[1..5].iter().map(|from| {
        let text = text.clone();
        async move {
            for _ in 0..50 {
                send(from, &nodes[0], &text).await?;
            }
            anyhow::Ok(())
        }
    });
    for result in futures::future::join_all(senders).await {
        result?;
    }
    let concurrent = 200.0 / t1.elapsed().as_secs_f64();
    Ok((sequential, concurrent))
}

/// Replies to every direct message from `poster` that does not itself reply to anything,
/// as soon as the node's event stream shows it.
async fn responder(node: &ApiNode, poster: String) -> anyhow::Result<JoinHandle<()>> {
    let client: Client = node.client.clone();
    // From now on: the delivery rounds' messages are not tasks.
    let last = node.call("status", json!({})).await?["last_event"]
        .as_u64()
        .unwrap_or(0);
    let stream = client.events(&format!("since={last}"), None).await?;
    Ok(tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(event)) = stream.next().await {
            if event.kind != "direct"
                || event.from.as_deref() != Some(poster.as_str())
                || event.reply_to.is_some()
            {
                continue;
            }
            let Some(id) = event.id else { continue };
            let _ = client
                .call(
                    "send",
                    &json!({"to": poster, "message": "done", "reply_to": id}),
                )
                .await;
        }
    }))
}

async fn fan_out(nodes: &[ApiNode], rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let poster = &nodes[0];
    let mut responders = Vec::new();
    for node in &nodes[1..] {
        responders.push(responder(node, poster.peer.clone()).await?);
    }
    let to: Vec<&str> = nodes[1..].iter().map(|n| n.peer.as_str()).collect();
    let mut times = Vec::new();
    for round in 0..=rounds {
        let t0 = Instant::now();
        let fan = poster
            .call(
                "fan-out",
                json!({"task": format!("task {round}: check one claim"), "to": to, "within_ms": 60_000}),
            )
            .await?;
        let id = fan["fanout"]
            .as_str()
            .ok_or_else(|| anyhow!("fan-out answered {fan}"))?;
        let gathered = poster.call("gather", json!({"fanout": id})).await?;
        let elapsed = t0.elapsed();
        ensure!(
            gathered["results"].as_array().map(Vec::len) == Some(nodes.len() - 1),
            "round {round}: gathered {gathered}"
        );
        if std::env::var_os("DIRECT_BENCH_ROUNDS").is_some() {
            println!("round {round}: {}", ms(elapsed));
        }
        if round > 0 {
            times.push(elapsed);
        }
    }
    for r in responders {
        r.abort();
    }
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let tokens: Arc<dyn TokenCounter> = Arc::new(Tiktoken::o200k()?);
    let nodes = mesh(5, &tokens).await?;

    let mut d = delivery(&nodes, if quick { 10 } else { 40 }).await?;
    println!("## Delivery, 5 nodes ({} rounds)\n", d.ack.len());
    println!("| measurement | median | p90 | max |");
    println!("|---|---|---|---|");
    for (name, samples) in [
        (
            "send answered (receiver logged and acknowledged)",
            &mut d.ack,
        ),
        ("send → receiver's event stream", &mut d.seen),
        (
            "broadcast → receiver's event stream (reference)",
            &mut d.broadcast,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(quantile(samples, 0.5)),
            ms(quantile(samples, 0.9)),
            ms(quantile(samples, 1.0))
        );
    }
    let ratio =
        quantile(&mut d.seen, 0.5).as_secs_f64() / quantile(&mut d.broadcast, 0.5).as_secs_f64();
    println!("\ndirect / broadcast delivery (medians): {ratio:.2}\n");

    let (sequential, concurrent) = throughput(&nodes).await?;
    println!("## Throughput to one receiver\n");
    println!("| pattern | messages/s |");
    println!("|---|---|");
    println!("| 1 sender, one at a time (200) | {sequential:.0} |");
    println!("| 4 senders at once (4 × 50) | {concurrent:.0} |\n");

    let rounds = if quick { 3 } else { 10 };
    println!("## Fan-out + gather ({rounds} rounds)\n");
    println!("| agents | median | max |");
    println!("|---|---|---|");
    let mut times = fan_out(&nodes, rounds).await?;
    println!(
        "| 5 (4 reached) | {} | {} |",
        ms(quantile(&mut times, 0.5)),
        ms(quantile(&mut times, 1.0))
    );
    for node in nodes {
        node.stop().await;
    }
    let nodes = mesh(20, &tokens).await?;
    let mut times = fan_out(&nodes, rounds).await?;
    println!(
        "| 20 (19 reached) | {} | {} |",
        ms(quantile(&mut times, 0.5)),
        ms(quantile(&mut times, 1.0))
    );
    for node in nodes {
        node.stop().await;
    }
    Ok(())
}
