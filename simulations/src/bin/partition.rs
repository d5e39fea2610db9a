//! A partition that heals: N light nodes in one process (libp2p memory transport) in two
//! groups that cannot reach each other. Each group posts the same task and one agent on
//! each side claims it; every node writes entries and counts the ones acknowledged. Then a
//! few links join the groups, and the run measures the time until every node gives the
//! same answer: every entry id in the space, and the same task winner.
//!
//! `cargo run -p membrane-simulations --release --bin partition [-- --nodes 20 --writes 10
//! --runs 5 --links 2]`
//!
//! Goal (issue 7): identical answers on all nodes ≤ 2 s after the heal on loopback, and
//! zero acknowledged writes lost. The run exits non-zero if a write is lost or the nodes
//! disagree on the winner.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use membrane_crdt::coord;
use membrane_crdt::{Draft, EventKind, MemoryStorage};
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{EntryKind, EnvelopeId, Keypair, Pattern, PublicKey, Space, Tier};
use membrane_simulations::stats::quantile;

/// How long anything may take before the run gives up.
const DEADLINE: Duration = Duration::from_secs(120);
const TASK: &str = "t-partition";

struct Args {
    nodes: usize,
    writes: usize,
    runs: usize,
    links: usize,
    seed: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        nodes: 20,
        writes: 10,
        runs: 5,
        links: 2,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
                .parse()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => out.nodes = value()?,
            "--writes" => out.writes = value()?,
            "--runs" => out.runs = value()?,
            "--links" => out.links = value()?,
            "--seed" => out.seed = value()? as u64,
            other => anyhow::bail!(
                "unknown flag {other} (expected --nodes, --writes, --runs, --links, --seed)"
            ),
        }
    }
    anyhow::ensure!(out.nodes >= 4, "--nodes must be at least 4");
    anyhow::ensure!(
        out.links >= 1 && out.links <= out.nodes / 2,
        "--links must be 1 to nodes / 2"
    );
    Ok(out)
}

fn space() -> Space {
    Space::default_space()
}

fn draft(key: &str, value: String) -> anyhow::Result<Draft> {
    let mut draft = Draft::new(key.parse()?, value, Some(Tier::Public));
    draft.kind = EntryKind::Meta;
    Ok(draft)
}

/// Light nodes (they meet only the peers they dial): two groups, each dialing its own first
/// node.
async fn groups(n: usize, seed: u64, run: usize) -> anyhow::Result<Vec<NodeHandle>> {
    let half = n / 2;
    let mut nodes = Vec::with_capacity(n);
    let mut boots: [Option<String>; 2] = [None, None];
    for i in 0..n {
        let group = usize::from(i >= half);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(run as u64).to_le_bytes());
        key[16..24].copy_from_slice(&(i as u64).to_le_bytes());
        let mut options = NodeOptions::memory(Keypair::from_seed(&key));
        options.light = true;
        // Only the heal may bring the groups together; no periodic resync hides its time.
        options.anti_entropy = Duration::from_secs(3600);
        if let Some(addr) = &boots[group] {
            options.bootstrap = vec![addr.parse()?];
        }
        let (handle, _task) =
            Node::spawn(options, MemoryStorage::new(), Arc::new(ApproxCounter)).await?;
        if boots[group].is_none() {
            boots[group] = handle.listening().await?.first().cloned();
        }
        nodes.push(handle);
    }
    for node in &nodes {
        until(node, "a peer", || async {
            Ok(!node.peers().await?.is_empty())
        })
        .await?;
    }
    Ok(nodes)
}

/// Waits, on `node`'s own event feed, until `check` holds.
async fn until<F, Fut>(node: &NodeHandle, what: &str, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut feed = node.subscribe();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await? {
            return Ok(());
        }
        // Any event may be the one; peers connecting are events too. A tick bounds the
        // wait for conditions no event announces (a peer count).
        match tokio::time::timeout(Duration::from_millis(50), feed.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => anyhow::bail!("{what}: {e}"),
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
    }
}

async fn ids(node: &NodeHandle) -> anyhow::Result<BTreeSet<EnvelopeId>> {
    let all: Pattern = "**".parse()?;
    Ok(node
        .query(&space(), &all, true)
        .await?
        .hits
        .iter()
        .map(|e| e.id())
        .collect())
}

struct Run {
    acked: usize,
    lost: usize,
    heal_to_identical: Duration,
    winner_agrees: bool,
}

async fn one_run(args: &Args, run: usize) -> anyhow::Result<Run> {
    let nodes = groups(args.nodes, args.seed, run).await?;
    let half = args.nodes / 2;
    // Cards for everyone, the same task posted on each side, one claim on each side.
    for (i, node) in nodes.iter().enumerate() {
        let card = coord::Card {
            name: format!("n{i}"),
            capabilities: vec![coord::CardCapability {
                name: "work".into(),
                description: String::new(),
            }],
        };
        node.expose(
            &space(),
            draft(&coord::agent_key(node.id()), serde_json::to_string(&card)?)?,
        )
        .await?;
    }
    let spec = coord::TaskSpec {
        description: "do the work".into(),
        capability: "work".into(),
        reward: None,
        priority: None,
        swarm: None,
    };
    for poster in [0, half] {
        nodes[poster]
            .expose(
                &space(),
                draft(&coord::task_key(TASK), serde_json::to_string(&spec)?)?,
            )
            .await?;
    }
    let claimants = [1, half + 1];
    for &c in &claimants {
        let node = &nodes[c];
        until(node, "the task on the claimant's side", || async {
            Ok(node.coordination(&space()).await?.tasks.contains_key(TASK))
        })
        .await?;
        node.expose(
            &space(),
            draft(
                &coord::claim_key(TASK, node.id()),
                serde_json::json!({"lamport": 1}).to_string(),
            )?,
        )
        .await?;
    }
    // Writes on both sides; an expose that returns is acknowledged (durable).
    let mut acked = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        for w in 0..args.writes {
            let exposed = node
                .expose(
                    &space(),
                    draft(&format!("p.n{i}.w{w}"), format!("write {w} of node {i}"))?,
                )
                .await?;
            acked.insert(exposed.id);
        }
    }
    // Each side settles on itself first, so the heal is all that is left.
    for (group, range) in [(0..half), (half..args.nodes)].into_iter().enumerate() {
        let mut want: BTreeSet<EnvelopeId> = BTreeSet::new();
        for node in &nodes[range.clone()] {
            want.extend(own_ids(node).await?);
        }
        for node in &nodes[range] {
            let want = &want;
            until(node, &format!("group {group} settled"), || async {
                Ok(ids(node).await?.is_superset(want))
            })
            .await?;
        }
    }
    // Heal: a few cross links.
    let start = Instant::now();
    for l in 0..args.links {
        let target = nodes[half + l]
            .listening()
            .await?
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("node {} has no address", half + l))?;
        nodes[l].dial(target.parse()?).await?;
    }
    let mut want: BTreeSet<EnvelopeId> = BTreeSet::new();
    for node in &nodes {
        want.extend(own_ids(node).await?);
    }
    let expected_winner: PublicKey = claimants
        .iter()
        .map(|c| *nodes[*c].id())
        .min()
        .ok_or_else(|| anyhow::anyhow!("no claimant"))?;
    let mut watchers = Vec::new();
    for node in &nodes {
        let node = node.clone();
        let want = want.clone();
        watchers.push(tokio::spawn(async move {
            until(&node, "identical answers after the heal", || async {
                Ok(ids(&node).await? == want)
            })
            .await?;
            let winner = node.coordination(&space()).await?.tasks[TASK].winner;
            anyhow::Ok((start.elapsed(), winner))
        }));
    }
    let mut slowest = Duration::ZERO;
    let mut winner_agrees = true;
    for w in watchers {
        let (took, winner) = w.await??;
        slowest = slowest.max(took);
        winner_agrees &= winner == Some(expected_winner);
    }
    let mut lost = 0;
    for node in &nodes {
        lost += acked.difference(&ids(node).await?).count();
    }
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(Run {
        acked: acked.len(),
        lost,
        heal_to_identical: slowest,
        winner_agrees,
    })
}

/// The ids of the entries `node` itself wrote, from its event log.
async fn own_ids(node: &NodeHandle) -> anyhow::Result<BTreeSet<EnvelopeId>> {
    Ok(node
        .events_since(0, 100_000)
        .await?
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Exposed { id, .. } => Some(id),
            _ => None,
        })
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    println!(
        "partition: {} light nodes in two groups of {} and {}, {} writes each, {} cross links \
         at the heal, {} runs",
        args.nodes,
        args.nodes / 2,
        args.nodes - args.nodes / 2,
        args.writes,
        args.links,
        args.runs
    );
    let mut times = Vec::new();
    let mut failures = Vec::new();
    println!("| run | acknowledged writes | lost | heal → identical answers | one winner |");
    println!("|---|---|---|---|---|");
    for run in 0..args.runs {
        let r = one_run(&args, run).await?;
        println!(
            "| {} | {} | {} | {:.0} ms | {} |",
            run + 1,
            r.acked,
            r.lost,
            r.heal_to_identical.as_secs_f64() * 1000.0,
            if r.winner_agrees { "yes" } else { "NO" }
        );
        if r.lost > 0 {
            failures.push(format!(
                "run {}: {} acknowledged writes lost",
                run + 1,
                r.lost
            ));
        }
        if !r.winner_agrees {
            failures.push(format!("run {}: nodes disagree on the winner", run + 1));
        }
        times.push(r.heal_to_identical);
    }
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "\nheal → identical answers on all {} nodes: median {:.0} ms, max {:.0} ms (goal ≤ 2000 ms)",
        args.nodes,
        quantile(&mut times, 0.5).as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    if let Some(first) = failures.first() {
        anyhow::bail!("{first}");
    }
    Ok(())
}
