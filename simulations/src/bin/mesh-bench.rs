//! Time for an entry to reach every node of an in-process mesh (libp2p memory transport),
//! and the `membrane` binary's startup-to-ready time and idle memory.
//!
//! `cargo run -p membrane-simulations --release --bin mesh-bench [-- --nodes 5,20,100]`
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use membrane_crdt::{Draft, EventKind, MemoryStorage};
use membrane_node::{Node, NodeEvent, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, Space, Tier};
use membrane_simulations::stats::quantile;

const ROUNDS: usize = 10;

async fn mesh(n: usize) -> anyhow::Result<Vec<NodeHandle>> {
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    let mut boot: Option<String> = None;
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let mut options = NodeOptions::memory(Keypair::from_seed(&seed));
        options.spaces = vec![Space::default_space()];
        if let Some(addr) = &boot {
            options.bootstrap = vec![addr.parse()?];
        }
        let (handle, _task) =
            Node::spawn(options, MemoryStorage::new(), Arc::new(ApproxCounter)).await?;
        if boot.is_none() {
            boot = handle.listening().await?.first().cloned();
        }
        nodes.push(handle);
    }
    // Wait until every node has a peer.
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in &nodes {
        while node.peers().await?.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "mesh did not connect");
            tokio::task::yield_now().await;
        }
    }
    Ok(nodes)
}

/// Exposes one entry on node 0 and returns how long each other node took to merge it,
/// each node watched by its own task so one slow check never delays another's clock.
async fn spread(nodes: &[NodeHandle], round: usize) -> anyhow::Result<Vec<Duration>> {
    let key: membrane_protocol::Key = format!("bench.r{round}").parse()?;
    let pattern: membrane_protocol::Pattern = key.as_str().parse()?;
    let start = Instant::now();
    let mut watchers = Vec::new();
    for node in &nodes[1..] {
        let node = node.clone();
        let mut feed = node.subscribe();
        let pattern = pattern.clone();
        watchers.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let event = tokio::time::timeout_at(deadline, feed.recv()).await.ok()?;
                if let Ok(NodeEvent::Medium(e)) = event
                    && matches!(e.kind, EventKind::Merged { .. })
                {
                    let answer = node
                        .query(&Space::default_space(), &pattern, false)
                        .await
                        .ok()?;
                    if !answer.hits.is_empty() {
                        return Some(start.elapsed());
                    }
                }
            }
        }));
    }
    nodes[0]
        .expose(
            &Space::default_space(),
            Draft::new(key.clone(), "payload", Some(Tier::Public)),
        )
        .await?;
    let mut times = Vec::with_capacity(watchers.len());
    for (i, watcher) in watchers.into_iter().enumerate() {
        let time = watcher
            .await?
            .ok_or_else(|| anyhow::anyhow!("node {} never received round {round}", i + 1))?;
        times.push(time);
    }
    Ok(times)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Starts the release `membrane` binary, times it to its ready line, reads its idle RSS.
fn binary(runs: usize) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe()?
        .parent()
        .map(|d| d.join("membrane"))
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))?;
    if !exe.exists() {
        println!("(skipping the binary: build it with `cargo build --release --bin membrane`)");
        return Ok(());
    }
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let dir = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let start = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(["node", "--log-format", "json", "--data-dir"])
            .arg(&dir)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        for line in BufReader::new(stderr).lines() {
            if line?.contains("membrane node ready") {
                break;
            }
        }
        ready.push(start.elapsed());
        // Idle: the node has nothing to do; read its resident set.
        std::thread::sleep(Duration::from_secs(1));
        rss.push(Duration::from_micros(rss_kib(child.id()).unwrap_or(0)));
        child.kill()?;
        child.wait()?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let median_rss = quantile(&mut rss, 0.5).as_micros() as f64 / 1024.0;
    println!(
        "| `membrane node` startup to ready (median of {runs}, includes the first key creation and tokenizer load) | {:.0} ms |",
        quantile(&mut ready, 0.5).as_secs_f64() * 1e3
    );
    println!("| `membrane node` idle RSS (median of {runs}) | {median_rss:.1} MiB |");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip_while(|a| a != "--nodes")
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![5, 20, 100]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("# mesh-bench\n");
    println!(
        "Entry from node 0 to every other node, in one process over the memory transport, {ROUNDS} rounds.\n"
    );
    println!("| nodes | median | p99 | max |");
    println!("|---|---|---|---|");
    for n in sizes {
        let mut all = runtime.block_on(async {
            let nodes = mesh(n).await?;
            let mut all = Vec::new();
            for round in 0..ROUNDS {
                all.extend(spread(&nodes, round).await?);
            }
            for node in &nodes {
                node.shutdown().await;
            }
            anyhow::Ok(all)
        })?;
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} ms |",
            quantile(&mut all, 0.5).as_secs_f64() * 1e3,
            quantile(&mut all, 0.99).as_secs_f64() * 1e3,
            quantile(&mut all, 1.0).as_secs_f64() * 1e3
        );
    }
    println!("\n| measurement | value |\n|---|---|");
    binary(5)?;
    Ok(())
}
