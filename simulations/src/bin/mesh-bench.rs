//! Time for an entry to reach every node of an in-process mesh (libp2p memory transport),
//! and the `membrane` binary's startup-to-ready time and idle memory.
//!
//! `cargo run -p membrane-simulations --release --bin mesh-bench [-- --nodes 5,20,100]`
//!
//! Two more modes, each run alone:
//! * `--processes 5,20`: N `membrane node` processes on loopback (the binary from
//!   `MEMBRANE_BIN`, else `membrane` next to this executable: build it first with
//!   `cargo build --release --bin membrane`); entries are exposed through the agent API on a
//!   rotating node and watched arriving on every other node's event stream.
//! * `--light 1000`: N light nodes (gossipsub, sync and ping only) in one process, each
//!   dialing a few random others; resident memory per node and the time for one broadcast
//!   to reach them all.
//!
//! `--quick` runs fewer rounds.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use membrane_crdt::{Draft, EventKind, MemoryStorage};
use membrane_node::api::client::Client;
use membrane_node::{Node, NodeEvent, NodeHandle, NodeOptions, info};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, Space, Tier};
use membrane_simulations::stats::{quantile, rss_bytes};

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, p99 and max of `samples`, in ms.
fn spread_ms(samples: &mut [Duration]) -> (f64, f64, f64) {
    (
        ms(quantile(samples, 0.5)),
        ms(quantile(samples, 0.99)),
        ms(quantile(samples, 1.0)),
    )
}

/// The `membrane` binary: `MEMBRANE_BIN`, else next to this executable.
fn membrane_exe() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MEMBRANE_BIN") {
        return Ok(path.into());
    }
    std::env::current_exe()?
        .parent()
        .map(|d| d.join("membrane"))
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))
}

/// Node processes, killed when dropped.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `dir`'s `node.json` satisfies `ready`.
async fn wait_info(
    dir: &Path,
    deadline: Instant,
    ready: impl Fn(&info::NodeInfo) -> bool,
) -> anyhow::Result<info::NodeInfo> {
    loop {
        if let Ok(node) = info::read(dir)
            && ready(&node)
        {
            return Ok(node);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node in {} not ready in time (see its node.log)",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one `--processes N` run measured.
struct ProcessFigures {
    /// Per round, when the last node had the entry.
    to_all: Vec<Duration>,
    /// Per node and round, when that node had it.
    per_node: Vec<Duration>,
    /// Per round, how long the expose call took to answer.
    ack: Vec<Duration>,
    /// Fewest peers any node had when the rounds began.
    min_peers: usize,
    /// How long the processes took to start and connect.
    connect: Duration,
    /// Median resident memory of a node process after the rounds.
    rss: u64,
}

/// N `membrane node` processes on loopback, node 0 as bootstrap; per round a rotating node
/// exposes an entry through its API and every other node's event stream reports it.
async fn processes(n: usize, rounds: usize) -> anyhow::Result<ProcessFigures> {
    anyhow::ensure!(n >= 2, "--processes needs at least 2 nodes");
    let exe = membrane_exe()?;
    anyhow::ensure!(
        exe.exists(),
        "no binary at {}: build it with `cargo build --release --bin membrane` or set MEMBRANE_BIN",
        exe.display()
    );
    let root = std::env::temp_dir().join(format!("mesh-bench-procs-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + 3 * n as u64);
    let mut children = Processes(Vec::new());
    let mut dirs = Vec::new();
    let mut bootstrap: Option<String> = None;
    for i in 0..n {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--kad-server"])
            .args(["--api", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log"))?);
        if let Some(addr) = &bootstrap {
            cmd.args(["--bootstrap", addr]);
        }
        children.0.push(cmd.spawn()?);
        let ready = wait_info(&dir, deadline, |i| !i.listen.is_empty()).await?;
        if bootstrap.is_none() {
            bootstrap = ready.listen.first().cloned();
        }
        dirs.push(dir);
    }
    // The DHT introduces every node to every other (up to 32 connections each): wait for
    // the full mesh, or at least one peer each if it does not form in time.
    let full = Instant::now() + Duration::from_secs(30);
    let min_peers = loop {
        let mut peers = Vec::new();
        for dir in &dirs {
            peers.push(info::read(dir).map_or(0, |i| i.peers));
        }
        let min = peers.iter().copied().min().unwrap_or(0);
        if min >= n - 1 || Instant::now() > full {
            break min;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for dir in &dirs {
        wait_info(dir, deadline, |i| i.peers >= 1).await?;
    }
    let connect = started.elapsed();
    // A few gossipsub heartbeats (500 ms) for the meshes to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Like an agent, each node's event stream stays open on a connection of its own. (On a
    // connection reused after verb calls, the API's small SSE writes can wait up to 40 ms
    // for the client's delayed ACK: the server does not set TCP_NODELAY.)
    let (arrived, mut arrivals) =
        tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut readers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let stream = Client::locate(None, None, dir)?
            .events(&format!("pattern=bench.p{n}.**"), None)
            .await?;
        let arrived = arrived.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(Ok(event)) = stream.next().await {
                if event.kind == "arrived"
                    && let Some(key) = event.key
                    && arrived.send((i, key, Instant::now())).is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(arrived);
    let mut clients = Vec::new();
    for dir in &dirs {
        clients.push(Client::locate(None, None, dir)?);
    }
    let mut figures = ProcessFigures {
        to_all: Vec::new(),
        per_node: Vec::new(),
        ack: Vec::new(),
        min_peers,
        connect,
        rss: 0,
    };
    for round in 0..rounds {
        // Entries some time apart, as agents write them (and past any delayed ACK).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let source = round % n;
        let key = format!("bench.p{n}.r{round}");
        let start = Instant::now();
        clients[source]
            .call(
                "expose",
                &serde_json::json!({"key": key, "value": "payload", "tier": "public"}),
            )
            .await?;
        figures.ack.push(start.elapsed());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut got = BTreeSet::new();
        let mut last = Duration::ZERO;
        while got.len() < n - 1 {
            let (i, k, at) = tokio::time::timeout_at(deadline, arrivals.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "round {round}: {} of {} nodes had the entry",
                        got.len(),
                        n - 1
                    )
                })?
                .ok_or_else(|| anyhow::anyhow!("every event stream ended"))?;
            if k == key && i != source && got.insert(i) {
                let time = at.duration_since(start);
                last = last.max(time);
                figures.per_node.push(time);
            }
        }
        figures.to_all.push(last);
    }
    for reader in readers {
        reader.abort();
    }
    let mut rss: Vec<u64> = children
        .0
        .iter()
        .filter_map(|c| rss_kib(c.id()))
        .map(|kib| kib * 1024)
        .collect();
    rss.sort_unstable();
    figures.rss = rss.get(rss.len() / 2).copied().unwrap_or(0);
    drop(children);
    let _ = std::fs::remove_dir_all(&root);
    Ok(figures)
}

/// splitmix64: a small seeded generator, so the light mesh is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What one `--light N` run measured.
struct LightFigures {
    /// Connections in all (each counted once).
    edges: usize,
    /// Time to spawn the nodes.
    spawn: Duration,
    /// Time from the first dial until every node had all its peers.
    connect: Duration,
    /// Resident memory added by the nodes, per node, once connected and settled.
    rss_per_node: u64,
    /// Resident memory of the whole process then.
    rss_total: u64,
    /// Per broadcast, when the last node had it.
    to_all: Vec<Duration>,
    /// Per node and broadcast, when that node had it.
    per_node: Vec<Duration>,
    /// Receivers that never got a broadcast, over all rounds.
    missed: usize,
}

/// N light nodes over the memory transport, each dialing `dials` random others.
async fn light(n: usize, dials: usize, rounds: usize) -> anyhow::Result<LightFigures> {
    anyhow::ensure!(n > dials, "--light needs more than {dials} nodes");
    let before = rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        seed[8] = 0x11;
        let mut options = NodeOptions::memory(Keypair::from_seed(&seed));
        options.light = true;
        // No periodic resync or capability ads during the measurement.
        options.anti_entropy = Duration::from_secs(3600);
        let (handle, _task) =
            Node::spawn(options, MemoryStorage::new(), Arc::new(ApproxCounter)).await?;
        let addr = handle
            .listening()
            .await?
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("node {i} does not listen"))?;
        addrs.push(addr);
        nodes.push(handle);
    }
    let spawn = started.elapsed();
    // Each node picks `dials` distinct others; a pair is connected once.
    let mut rng = Rng(0x6d65_6d62_7261_6e65);
    let mut edges = BTreeSet::new();
    for i in 0..n {
        let mut picked = BTreeSet::new();
        while picked.len() < dials {
            let j = rng.below(n);
            if j != i {
                picked.insert(j);
            }
        }
        for j in picked {
            edges.insert((i.min(j), i.max(j)));
        }
    }
    let mut expected = vec![0usize; n];
    for &(a, b) in &edges {
        expected[a] += 1;
        expected[b] += 1;
    }
    let connecting = Instant::now();
    for &(a, b) in &edges {
        nodes[a].dial(addrs[b].parse()?).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for i in pending {
            if nodes[i].peers().await?.len() < expected[i] {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {n} light nodes still lack peers",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let connect = connecting.elapsed();
    // Subscriptions travel and gossipsub grafts its meshes on the next heartbeats (500 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes().unwrap_or(0);
    let mut figures = LightFigures {
        edges: edges.len(),
        spawn,
        connect,
        rss_per_node: after.saturating_sub(before) / n as u64,
        rss_total: after,
        to_all: Vec::new(),
        per_node: Vec::new(),
        missed: 0,
    };
    for round in 0..rounds {
        let source = (round * 7919) % n;
        let tag = format!("bench light {round}");
        let mut watchers = Vec::with_capacity(n - 1);
        for (i, node) in nodes.iter().enumerate() {
            if i == source {
                continue;
            }
            let mut feed = node.subscribe();
            let tag = tag.clone();
            watchers.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match tokio::time::timeout_at(deadline, feed.recv()).await {
                        Ok(Ok(NodeEvent::Medium(e))) => {
                            if let EventKind::Broadcast { message, .. } = &e.kind
                                && *message == tag
                            {
                                return Some(Instant::now());
                            }
                        }
                        Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                        Ok(Err(_)) | Err(_) => return None,
                    }
                }
            }));
        }
        // Every receiver is subscribed before the clock starts.
        let start = Instant::now();
        nodes[source]
            .broadcast(&Space::default_space(), tag.clone())
            .await?;
        let mut last = Duration::ZERO;
        for watcher in watchers {
            match watcher.await? {
                Some(at) => {
                    let time = at.duration_since(start);
                    last = last.max(time);
                    figures.per_node.push(time);
                }
                None => figures.missed += 1,
            }
        }
        figures.to_all.push(last);
    }
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(figures)
}

/// The comma-separated numbers after `flag`, if given.
fn numbers(flag: &str) -> Option<Vec<usize>> {
    std::env::args()
        .skip_while(|a| a != flag)
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("# mesh-bench\n");
    if let Some(sizes) = numbers("--processes") {
        let rounds = if quick { 5 } else { 20 };
        println!(
            "`membrane node` processes on loopback, node 0 as bootstrap and the DHT introducing \
             the rest. Each round a rotating node exposes one public entry through its API; \
             every other node's event stream (one per node, open throughout, on its own \
             connection) reports it arriving. {rounds} rounds 200 ms apart, times from the \
             expose call.\n"
        );
        println!(
            "| processes | min peers | start+connect | to all: median | p99 | max | per node: median | p99 | expose ack: median | RSS/process |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for n in sizes {
            let mut f = runtime.block_on(processes(n, rounds))?;
            let (all50, all99, allmax) = spread_ms(&mut f.to_all);
            let (node50, node99, _) = spread_ms(&mut f.per_node);
            let (ack50, _, _) = spread_ms(&mut f.ack);
            println!(
                "| {n} | {} | {:.1} s | {all50:.1} ms | {all99:.1} ms | {allmax:.1} ms | {node50:.1} ms | {node99:.1} ms | {ack50:.1} ms | {:.1} MiB |",
                f.min_peers,
                f.connect.as_secs_f64(),
                f.rss as f64 / (1024.0 * 1024.0)
            );
        }
        return Ok(());
    }
    if let Some(sizes) = numbers("--light") {
        let rounds = if quick { 3 } else { 10 };
        let dials = 4;
        println!(
            "Light nodes (gossipsub, sync, ping; no Kademlia, identify, AutoNAT, relay) in one \
             process over the memory transport, each dialing {dials} random others (seeded). \
             One broadcast per round from a different node, {rounds} rounds. RSS per node is \
             the process's growth from before the first node to after the mesh settled, \
             divided by N.\n"
        );
        println!(
            "| nodes | connections | spawn | connect | RSS/node | RSS total | to all: median | p99 | max | per node: median | p99 | missed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for n in sizes {
            let mut f = runtime.block_on(light(n, dials, rounds))?;
            let (all50, all99, allmax) = spread_ms(&mut f.to_all);
            let (node50, node99, _) = spread_ms(&mut f.per_node);
            println!(
                "| {n} | {} | {:.1} s | {:.1} s | {:.0} KiB | {:.0} MiB | {all50:.1} ms | {all99:.1} ms | {allmax:.1} ms | {node50:.1} ms | {node99:.1} ms | {} |",
                f.edges,
                f.spawn.as_secs_f64(),
                f.connect.as_secs_f64(),
                f.rss_per_node as f64 / 1024.0,
                f.rss_total as f64 / (1024.0 * 1024.0),
                f.missed
            );
        }
        let slot = std::mem::size_of::<NodeEvent>();
        println!(
            "\nEach node's event buffer alone: {} slots of at least {slot} bytes = {} KiB, \
             written at creation.",
            membrane_node::node::EVENT_CAPACITY,
            membrane_node::node::EVENT_CAPACITY * slot / 1024
        );
        return Ok(());
    }
    let sizes =
        numbers("--nodes").unwrap_or_else(|| if quick { vec![5, 20] } else { vec![5, 20, 100] });
    let rounds = if quick { 3 } else { ROUNDS };
    println!(
        "Entry from node 0 to every other node, in one process over the memory transport, {rounds} rounds.\n"
    );
    println!("| nodes | median | p99 | max |");
    println!("|---|---|---|---|");
    for n in sizes {
        let mut all = runtime.block_on(async {
            let nodes = mesh(n).await?;
            let mut all = Vec::new();
            for round in 0..rounds {
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
