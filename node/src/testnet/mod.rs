//! `membrane testnet --nodes N`: N node processes on loopback, node 1 as bootstrap, each
//! with its own data directory; waits until every node has a peer, prints a table, and
//! stops them all on Ctrl-C (or SIGTERM, or SIGHUP).
//!
//! With `--netns` (root only, Linux), each node runs in a network namespace of its own,
//! joined by a bridge, listening on its own `10.x.y.z` address instead of loopback: see
//! [`netns`] for the names and addresses. Cutting a node off is then
//! `ip link set <its veth> down`. Each node's API is bound to its `10.x` address (with
//! `--api-allow-remote`; the token still guards it), which the root namespace reaches over
//! the bridge, so `membrane <verb> --data-dir <dir>/node<i>` works from the root namespace as
//! usual — except for a node that is cut off, whose API is then reachable only from inside
//! its namespace (`ip netns exec <netns> membrane <verb> ...`). On exit — a signal, an error, or half-way through start-up — the nodes are
//! killed and then the namespaces, veths and bridge removed.

mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use membrane_node::info;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use netns::Netns;

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
    /// Run each node in a network namespace of its own, joined by a bridge, so one can be
    /// cut off with `ip link set <veth> down` (root only; needs `ip` from iproute2).
    #[arg(long)]
    netns: bool,
}

/// The running testnet. Stopping it (also on drop) kills the nodes first, then removes the
/// namespaces they ran in.
#[derive(Debug, Default)]
struct Testnet {
    nodes: Vec<Child>,
    netns: Option<Netns>,
}

impl Testnet {
    fn stop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes.clear();
        if let Some(net) = &mut self.netns {
            net.teardown();
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `dir`'s `node.json` until `ready` holds, failing early if `child` exits.
async fn wait_for(
    name: &str,
    dir: &Path,
    child: &mut Child,
    deadline: Instant,
    ready: impl Fn(&info::NodeInfo) -> bool,
) -> anyhow::Result<info::NodeInfo> {
    loop {
        if let Ok(node) = info::read(dir)
            && ready(&node)
        {
            return Ok(node);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{name} exited ({status}); see {}",
                dir.join("node.log").display()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} not ready in time; see {}",
            dir.join("node.log").display()
        );
        // A CLI polling a file: a short pause between reads is the simplest wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn run(args: TestnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&args.nodes),
        "--nodes: expected 1 to 64, got {}",
        args.nodes
    );
    let ip = if args.netns {
        Some(netns::check()?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Catch the signals before anything starts, so that one arriving during start-up
        // still leads to a teardown rather than leftover processes and namespaces.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let stopped = async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
        };
        tokio::pin!(stopped);
        let mut testnet = Testnet::default();
        tokio::select! {
            started = start(&args, ip, &mut testnet) => started?,
            () = &mut stopped => anyhow::bail!("stopped before every node was up"),
        }
        stopped.await;
        testnet.stop();
        Ok(())
    })
}

/// Starts the nodes (in namespaces when `ip` is given) and prints the table.
async fn start(
    args: &TestnetArgs,
    ip: Option<PathBuf>,
    testnet: &mut Testnet,
) -> anyhow::Result<()> {
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("membrane-testnet-{}", std::process::id())),
    };
    std::fs::create_dir_all(&root)?;
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    if let Some(ip) = ip {
        testnet.netns = Some(Netns::create(ip, args.nodes)?);
    }
    let mut bootstrap: Option<String> = None;
    let mut dirs = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("node{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let _ = info::remove(&dir);
        let (mut cmd, host) = match &testnet.netns {
            Some(net) => (net.command(i, &exe), net.addr(i).to_string()),
            None => (Command::new(&exe), "127.0.0.1".to_owned()),
        };
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("/ip4/{host}/tcp/0"), "--kad-server"])
            // Each node's API on a port of its own; node.json names it for the CLI.
            .args(["--api", &format!("{host}:0")])
            .args(["--space", &args.space, "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("node.log"))?));
        if testnet.netns.is_some() {
            // The root namespace reaches the API over the bridge; the token still guards it.
            cmd.arg("--api-allow-remote");
        }
        if let Some(addr) = &bootstrap {
            cmd.args(["--bootstrap", addr]);
        }
        testnet.nodes.push(cmd.spawn()?);
        let Some(child) = testnet.nodes.last_mut() else {
            continue;
        };
        let ready = wait_for(&name, &dir, child, deadline, |n| !n.listen.is_empty()).await?;
        if bootstrap.is_none() {
            bootstrap = ready.listen.first().cloned();
        }
        dirs.push(dir);
    }
    let need = usize::from(args.nodes > 1);
    for (i, (dir, child)) in dirs.iter().zip(&mut testnet.nodes).enumerate() {
        let name = format!("node{}", i + 1);
        wait_for(&name, dir, child, deadline, |n| n.peers >= need).await?;
    }
    print_table(&dirs, testnet.netns.as_ref(), &root);
    Ok(())
}

fn print_table(dirs: &[PathBuf], net: Option<&Netns>, root: &Path) {
    let place = |i: usize| match net {
        Some(net) => format!("{:<20} {:<13} ", net.namespace(i), net.veth(i)),
        None => String::new(),
    };
    let head = match net {
        Some(_) => format!("{:<20} {:<13} ", "netns", "veth"),
        None => String::new(),
    };
    println!(
        "{:<8} {:<54} {:<6} {head}{:<22} listen",
        "name", "peer id", "peers", "api"
    );
    for (i, dir) in dirs.iter().enumerate() {
        let Ok(node) = info::read(dir) else {
            continue;
        };
        println!(
            "{:<8} {:<54} {:<6} {}{:<22} {}",
            format!("node{}", i + 1),
            node.peer_id,
            node.peers,
            place(i + 1),
            node.api,
            node.listen.join(" ")
        );
    }
    if let Some(first) = dirs.first() {
        println!(
            "\ntry, in another shell:\n  membrane expose --data-dir {0} notes.hello 'hello from node1' --tier public\n  \
             membrane query --data-dir {1} 'notes.**'",
            first.display(),
            dirs.last().unwrap_or(first).display()
        );
    }
    if let Some(net) = net {
        let last = dirs.len();
        println!(
            "cut node{last} off the network, and put it back:\n  ip link set {0} down\n  \
             ip link set {0} up\n\
             while it is cut off, its API is reachable only from inside its namespace:\n  \
             ip netns exec {1} membrane status --data-dir {2}",
            net.veth(last),
            net.namespace(last),
            dirs.last()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        );
    }
    println!(
        "\ndata and logs under {}; Ctrl-C stops every node",
        root.display()
    );
}
