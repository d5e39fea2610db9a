//! The agent HTTP API against the node's Rust handle, in the same run.
//!
//! `cargo run -p membrane-simulations --release --bin api-bench [-- --quick] [--storage memory|sled]`
//!
//! One in-process node (memory transport) with its API served on `127.0.0.1:0`, called
//! through `membrane_node::api::client::Client` (reqwest, keep-alive): a real loopback HTTP
//! round trip with the bearer token, JSON both ways and the verb's own work (key parsing,
//! token counting of query hits). Values are ~200-byte slices of HotpotQA paragraphs.
//!
//! Prints, for each storage (in-memory, and sled on a temporary directory with its flush
//! per write, as in production; `--storage` picks one):
//! * round-trip latency of `expose`, of `query` on an exact key and of `query` on a
//!   `prefix.**` pattern with 10 hits: API and handle calls alternate, so both see the
//!   same medium;
//! * sustained `expose` throughput through the handle and through the API, sequential and
//!   with 8 concurrent tasks, each run on a fresh node, median of 3 runs (1 with
//!   `--quick`), and the ratio API / handle against the goal of 0.5.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use membrane_crdt::{Draft, MemoryStorage};
use membrane_node::api::client::Client;
use membrane_node::api::{Ctx, serve};
use membrane_node::storage::SledStorage;
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::{Tiktoken, TokenCounter};
use membrane_protocol::{Keypair, Pattern, Space, Tier};
use membrane_simulations::corpus;
use membrane_simulations::stats::quantile;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Any 64 hex digits will do: the token is only compared.
const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Target length of a value, in bytes.
const VALUE_BYTES: usize = 200;
/// Concurrent tasks in the concurrent runs.
const TASKS: usize = 8;
/// Untimed writes on a fresh node before a throughput run (connections, first document).
const WARM_UP: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    Memory,
    Sled,
}

impl StorageKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Memory => "in-memory storage (`MemoryStorage`)",
            Self::Sled => {
                "sled on a temporary directory, flushed on every write (as in production)"
            }
        }
    }
}

/// A node with its API served and a client of it.
struct Bench {
    handle: NodeHandle,
    task: JoinHandle<()>,
    client: Client,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    dir: Option<PathBuf>,
}

impl Bench {
    async fn start(
        storage: StorageKind,
        tokens: &Arc<dyn TokenCounter>,
        run: usize,
    ) -> anyhow::Result<Self> {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(run as u64).to_le_bytes());
        let options = NodeOptions::memory(Keypair::from_seed(&seed));
        let (handle, task, dir) = match storage {
            StorageKind::Memory => {
                let (h, t) = Node::spawn(options, MemoryStorage::new(), Arc::clone(tokens)).await?;
                (h, t, None)
            }
            StorageKind::Sled => {
                let dir =
                    std::env::temp_dir().join(format!("api-bench-{}-{run}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let (h, t) =
                    Node::spawn(options, SledStorage::open(&dir)?, Arc::clone(tokens)).await?;
                (h, t, Some(dir))
            }
        };
        let ctx = Arc::new(Ctx::new(
            handle.clone(),
            Space::default_space(),
            Arc::clone(tokens),
            TOKEN.to_owned(),
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, ctx, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&addr.to_string(), TOKEN)?;
        Ok(Self {
            handle,
            task,
            client,
            stop,
            server,
            dir,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let Self {
            handle,
            task,
            client,
            stop,
            server,
            dir,
        } = self;
        drop(client);
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        handle.shutdown().await;
        drop(handle);
        tokio::time::timeout(Duration::from_secs(30), task).await??;
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}

/// One write through the handle, as an embedding program would make it.
async fn expose_direct(handle: &NodeHandle, key: &str, value: &str) -> anyhow::Result<()> {
    let draft = Draft::new(key.parse()?, value.to_owned(), Some(Tier::Public));
    handle.expose(&Space::default_space(), draft).await?;
    Ok(())
}

/// The same write through the API.
async fn expose_api(client: &Client, key: &str, value: &str) -> anyhow::Result<()> {
    client
        .call(
            "expose",
            &json!({ "key": key, "value": value, "tier": "public" }),
        )
        .await?;
    Ok(())
}

async fn query_direct(handle: &NodeHandle, pattern: &str) -> anyhow::Result<usize> {
    let pattern: Pattern = pattern.parse()?;
    let answer = handle
        .query(&Space::default_space(), &pattern, false)
        .await?;
    Ok(answer.hits.len())
}

async fn query_api(client: &Client, pattern: &str) -> anyhow::Result<usize> {
    let answer = client.call("query", &json!({ "pattern": pattern })).await?;
    Ok(answer
        .get("hits")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len))
}

/// Values of about [`VALUE_BYTES`] bytes, cut from real paragraphs at a char boundary.
fn values(paragraphs: &[corpus::Paragraph], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let p = &paragraphs[i % paragraphs.len()];
            let mut v = format!("{}: {}", p.title, p.text);
            if v.len() > VALUE_BYTES {
                let mut end = VALUE_BYTES;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
            }
            v
        })
        .collect()
}

fn ms(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / samples.len() as u32
}

/// `| p50 | p99 | mean |` of `samples`.
fn cells(samples: &mut [Duration]) -> (Duration, String) {
    let p50 = quantile(samples, 0.5);
    let p99 = quantile(samples, 0.99);
    (
        p50,
        format!("{} | {} | {}", ms(p50), ms(p99), ms(mean(samples))),
    )
}

async fn latency(
    storage: StorageKind,
    tokens: &Arc<dyn TokenCounter>,
    values: &[String],
    n: usize,
) -> anyhow::Result<()> {
    let bench = Bench::start(storage, tokens, 0).await?;
    // Untimed: opens the connection and creates the document.
    for i in 0..WARM_UP {
        expose_api(
            &bench.client,
            &format!("warm.n{i}"),
            &values[i % values.len()],
        )
        .await?;
    }
    let (mut api_w, mut dir_w) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let value = &values[i % values.len()];
        // Groups of 10 keys per prefix: `api.g7.**` and `dir.g7.**` have 10 hits each.
        let (g, e) = (i / 10, i % 10);
        let start = Instant::now();
        expose_api(&bench.client, &format!("api.g{g}.e{e}"), value).await?;
        api_w.push(start.elapsed());
        let start = Instant::now();
        expose_direct(&bench.handle, &format!("dir.g{g}.e{e}"), value).await?;
        dir_w.push(start.elapsed());
    }
    // The floor: a verb that does no node work (the budget is a counter behind a mutex).
    let mut floor = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        bench.client.call("budget", &json!({})).await?;
        floor.push(start.elapsed());
    }
    let groups = (n / 10).max(1);
    let (mut api_k, mut dir_k, mut api_p, mut dir_p) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (g, e) = ((i * 7) % groups, i % 10);
        let start = Instant::now();
        let hits = query_api(&bench.client, &format!("api.g{g}.e{e}")).await?;
        api_k.push(start.elapsed());
        anyhow::ensure!(hits == 1, "exact query through the API found {hits} hits");
        let start = Instant::now();
        let hits = query_direct(&bench.handle, &format!("dir.g{g}.e{e}")).await?;
        dir_k.push(start.elapsed());
        anyhow::ensure!(
            hits == 1,
            "exact query through the handle found {hits} hits"
        );
        let start = Instant::now();
        let hits = query_api(&bench.client, &format!("api.g{g}.**")).await?;
        api_p.push(start.elapsed());
        anyhow::ensure!(hits == 10, "prefix query through the API found {hits} hits");
        let start = Instant::now();
        let hits = query_direct(&bench.handle, &format!("dir.g{g}.**")).await?;
        dir_p.push(start.elapsed());
        anyhow::ensure!(
            hits == 10,
            "prefix query through the handle found {hits} hits"
        );
    }
    bench.stop().await?;
    println!(
        "### Round-trip latency ({n} calls of each, sequential, API and handle calls alternating)\n"
    );
    println!(
        "| operation | API p50 | API p99 | API mean | handle p50 | handle p99 | handle mean | API cost at p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (_, f) = cells(&mut floor);
    println!("| `budget` (no node work: the HTTP round trip itself) | {f} | | | | |");
    for (name, api, direct) in [
        ("expose (~200-byte value)", &mut api_w, &mut dir_w),
        ("query, exact key (1 hit)", &mut api_k, &mut dir_k),
        ("query, `prefix.**` (10 hits)", &mut api_p, &mut dir_p),
    ] {
        let (a50, a) = cells(api);
        let (d50, d) = cells(direct);
        println!("| {name} | {a} | {d} | +{} |", ms(a50.saturating_sub(d50)));
    }
    println!();
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Api,
}

/// Writes `count` entries through `path` with `tasks` concurrent tasks on a fresh node;
/// returns entries per second.
async fn throughput(
    storage: StorageKind,
    tokens: &Arc<dyn TokenCounter>,
    values: &Arc<Vec<String>>,
    path: Via,
    tasks: usize,
    count: usize,
    run: usize,
) -> anyhow::Result<f64> {
    let bench = Bench::start(storage, tokens, run).await?;
    for i in 0..WARM_UP.max(tasks) {
        let (key, value) = (format!("warm.n{i}"), &values[i % values.len()]);
        match path {
            Via::Direct => expose_direct(&bench.handle, &key, value).await?,
            Via::Api => expose_api(&bench.client, &key, value).await?,
        }
    }
    let start = Instant::now();
    let mut workers = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (handle, client, values) = (
            bench.handle.clone(),
            bench.client.clone(),
            Arc::clone(values),
        );
        workers.push(tokio::spawn(async move {
            for i in (t..count).step_by(tasks) {
                let key = format!("t.n{}.c{}", i / 1000, i % 1000);
                let value = &values[i % values.len()];
                match path {
                    Via::Direct => expose_direct(&handle, &key, value).await?,
                    Via::Api => expose_api(&client, &key, value).await?,
                }
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = start.elapsed();
    bench.stop().await?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

async fn throughputs(
    storage: StorageKind,
    tokens: &Arc<dyn TokenCounter>,
    values: &Arc<Vec<String>>,
    count: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let modes = [
        ("handle, sequential", Via::Direct, 1),
        ("handle, 8 tasks", Via::Direct, TASKS),
        ("API, sequential", Via::Api, 1),
        ("API, 8 client tasks", Via::Api, TASKS),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut run_id = 1;
    for rep in 0..runs {
        // Rotate the order so drift over the run does not favour one path.
        for k in 0..modes.len() {
            let m = (k + rep) % modes.len();
            let (_, path, tasks) = modes[m];
            rates[m].push(throughput(storage, tokens, values, path, tasks, count, run_id).await?);
            run_id += 1;
        }
    }
    let med: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    println!(
        "### Sustained `expose` throughput ({count} entries per run, fresh node per run, median of {runs})\n"
    );
    println!(
        "| path | entries/s | runs | ratio to handle, sequential | ratio to handle, same concurrency |"
    );
    println!("|---|---|---|---|---|");
    for (m, (name, path, tasks)) in modes.iter().enumerate() {
        let same = if *path == Via::Api {
            let d = if *tasks == 1 { med[0] } else { med[1] };
            format!("**{:.2}**", med[m] / d)
        } else {
            "1.00".to_owned()
        };
        let runs: Vec<String> = rates[m].iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {name} | {:.0} | {} | {:.2} | {same} |",
            med[m],
            runs.join(" / "),
            med[m] / med[0]
        );
    }
    let (seq, conc) = (med[2] / med[0], med[3] / med[1]);
    let verdict = |r: f64| if r >= 0.5 { "met" } else { "not met" };
    println!(
        "\nGoal API ≥ 0.5 × handle: sequential {seq:.2} ({}), 8 tasks {conc:.2} ({}).\n",
        verdict(seq),
        verdict(conc)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let storages = match args
        .iter()
        .skip_while(|a| *a != "--storage")
        .nth(1)
        .map(String::as_str)
    {
        None => vec![StorageKind::Memory, StorageKind::Sled],
        Some("memory") => vec![StorageKind::Memory],
        Some("sled") => vec![StorageKind::Sled],
        Some(other) => anyhow::bail!("--storage {other:?}: expected memory or sled"),
    };
    let (n, count, runs) = if quick {
        (200, 300, 1)
    } else {
        (1000, 2000, 3)
    };
    let questions = corpus::load(&corpus::default_path())?;
    let paragraphs = corpus::paragraphs(&questions);
    let values = Arc::new(values(&paragraphs, 4096));
    let avg = values.iter().map(String::len).sum::<usize>() / values.len();
    let tokens: Arc<dyn TokenCounter> = Arc::new(Tiktoken::o200k()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "# api-bench (one node, memory transport, API on 127.0.0.1 over HTTP/1.1 keep-alive, \
         o200k tokens, values {avg} bytes on average from HotpotQA, {} runtime workers)\n",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    for storage in storages {
        println!("## {}\n", storage.describe());
        runtime.block_on(async {
            latency(storage, &tokens, &values, n).await?;
            throughputs(storage, &tokens, &values, count, runs).await
        })?;
    }
    Ok(())
}
