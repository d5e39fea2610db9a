//! `membrane testnet --nodes N`: N node processes on loopback, node 1 as bootstrap, each
//! with its own data directory; waits until every node has a peer, prints a table, and
//! stops them all on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use membrane_node::info;

/// Flags of `membrane testnet`.
#[derive(Debug, clap::Args)]
pub(crate) struct TestnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Folder for the nodes' data directories (default: a new temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Space every node joins, besides `default`.
    #[arg(long, default_value = "testnet")]
    space: String,
    /// Give up if the mesh is not connected after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(
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
            "node in {} not ready in time",
            dir.display()
        );
        // A CLI polling a file: a short pause between reads is the simplest wait.
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn run(args: TestnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&args.nodes),
        "--nodes: expected 1 to 64, got {}",
        args.nodes
    );
    let root = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("membrane-testnet-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root)?;
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut nodes = Nodes(Vec::new());
    let mut bootstrap: Option<String> = None;
    let mut dirs = Vec::new();
    for i in 1..=args.nodes {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir)?;
        let _ = info::remove(&dir);
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--kad-server"])
            // Each node's API on a port of its own; node.json names it for the CLI.
            .args(["--api", "127.0.0.1:0"])
            .args(["--space", &args.space, "--name", &format!("node{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("node.log"))?));
        if let Some(addr) = &bootstrap {
            cmd.args(["--bootstrap", addr]);
        }
        nodes.0.push(cmd.spawn()?);
        let ready = wait_for(&dir, deadline, |n| !n.listen.is_empty())?;
        if bootstrap.is_none() {
            bootstrap = ready.listen.first().cloned();
        }
        dirs.push(dir);
    }
    let mut table = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let need = if args.nodes > 1 { 1 } else { 0 };
        let node = wait_for(dir, deadline, |n| n.peers >= need)?;
        table.push((format!("node{}", i + 1), node));
    }
    println!(
        "{:<8} {:<54} {:<6} {:<16} listen",
        "name", "peer id", "peers", "api"
    );
    for (name, node) in &table {
        let node = info::read(&dirs[table.iter().position(|(n, _)| n == name).unwrap_or(0)])
            .unwrap_or(node.clone());
        println!(
            "{name:<8} {:<54} {:<6} {:<16} {}",
            node.peer_id,
            node.peers,
            node.api,
            node.listen.join(" ")
        );
    }
    println!(
        "\ndata and logs under {}; Ctrl-C stops every node",
        root.display()
    );
    if let Some(first) = dirs.first() {
        println!(
            "try, in another shell:\n  membrane expose --data-dir {0} notes.hello 'hello from node1' --tier public\n  \
             membrane query --data-dir {1} 'notes.**'",
            first.display(),
            dirs.last().unwrap_or(first).display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    drop(nodes);
    Ok(())
}
