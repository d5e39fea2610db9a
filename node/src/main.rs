//! `membrane`: run a node beside an agent, print its identity, or start a local testnet.

// The command line prints its answers: that is its job.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use membrane_node::config::{LogFormat, NodeArgs, NodeConfig};
use membrane_node::storage::SledStorage;
use membrane_node::{Node, NodeOptions, TransportKind, info, keyfile};
use membrane_protocol::cost::Tiktoken;

mod testnet;

/// membrane: a shared, selectively permeable memory for LLM agents, one node per agent.
#[derive(Debug, Parser)]
#[command(name = "membrane", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node beside your agent.
    ///
    /// Example: membrane node --data-dir ./alice --space climate-brief --name alice
    ///          --capability research=finds sources --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…
    Node(NodeArgs),
    /// Print the peer id of the node in a data directory (creating its key on first use).
    ///
    /// Example: membrane id --data-dir ./alice
    Id {
        /// Data directory of the node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Generate a new identity key file and print its peer id.
    ///
    /// Example: membrane keygen --out ./alice/identity.key
    Keygen {
        /// Where to write the key (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Start N nodes on loopback, node 1 as bootstrap, and wait until all are connected.
    ///
    /// Example: membrane testnet --nodes 5
    Testnet(testnet::TestnetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Id { data_dir } => print_id(data_dir),
        Command::Keygen { out, force } => keyfile::generate(&out, force)
            .map(|kp| println!("{}", kp.public()))
            .map_err(anyhow::Error::from),
        Command::Testnet(args) => testnet::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membrane: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_id(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let args = NodeArgs {
        data_dir,
        ..NodeArgs::default()
    };
    let config = NodeConfig::resolve(&args, &|k| std::env::var(k).ok())?;
    let (keypair, _) = keyfile::load_or_create(&config.data_dir)?;
    println!("{}", keypair.public());
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    // Flags become a validated config before anything starts.
    let config = NodeConfig::resolve(&args, &|k| std::env::var(k).ok())?;
    config.validate()?;
    init_logs(config.log_format);
    let (keypair, created) = keyfile::load_or_create(&config.data_dir)?;
    if created {
        tracing::info!(peer = %keypair.public(), "created a new identity key");
    }
    let storage = SledStorage::open(&config.data_dir.join("store"))?;
    let tokens = Arc::new(Tiktoken::o200k()?);
    let options = NodeOptions {
        keypair,
        listen: config.listen.clone(),
        bootstrap: config.bootstrap.clone(),
        spaces: config.spaces.clone(),
        name: config.name.clone(),
        capabilities: config.capabilities.clone(),
        kad_server: config.kad_server,
        relay_server: config.relay_server,
        mdns: config.mdns,
        transport: TransportKind::Tcp,
        anti_entropy: Duration::from_secs(30),
        medium: membrane_crdt::Config {
            trust_threshold: config.trust_threshold,
            ..membrane_crdt::Config::default()
        },
        data_dir: Some(config.data_dir.clone()),
        api: None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (handle, task) = Node::spawn(options, storage, tokens).await?;
        tracing::info!(
            peer = %handle.id(),
            listen = ?handle.listening().await?,
            data_dir = %config.data_dir.display(),
            "membrane node ready"
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        task.await?;
        let _ = info::remove(&config.data_dir);
        anyhow::Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
