//! `membrane`: run a node beside an agent, print its identity, or start a local testnet.

// The command line prints its answers: that is its job.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use membrane_node::api::{self, client::Client, verbs};
use membrane_node::config::{LogFormat, NodeArgs, NodeConfig};
use membrane_node::storage::SledStorage;
use membrane_node::{Node, NodeOptions, TransportKind, info, keyfile};
use membrane_protocol::Space;
use membrane_protocol::cost::LazyTiktoken;

mod testnet;

/// membrane: a shared, selectively permeable memory for LLM agents, one node per agent.
///
/// Start a node beside your agent with `membrane node`, then use it through the HTTP API,
/// `membrane mcp`, or the verb subcommands below (each a client of the node's API).
///
/// Example: membrane node --data-dir ./alice --space climate-brief &
///          membrane expose --data-dir ./alice findings.x 'what I found' --tier public
///          membrane search --data-dir ./alice 'what did others find'
#[derive(Debug, Parser)]
#[command(
    name = "membrane",
    version,
    propagate_version = true,
    disable_help_subcommand = true
)]
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
    Node(Box<NodeArgs>),
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
    /// Serve the node's verbs as MCP tools over stdio, for an MCP client (Claude Code, an
    /// IDE, an agent framework) to start as a child process.
    ///
    /// Example: membrane mcp --data-dir ./alice
    Mcp(McpArgs),
    /// Write docs/openapi.json and docs/api.md from the verb list (for developers).
    #[command(hide = true)]
    ApiDocs {
        /// The docs directory.
        #[arg(long, default_value = "docs")]
        out: PathBuf,
    },
}

/// Where `membrane mcp` finds its node.
#[derive(Debug, clap::Args)]
struct McpArgs {
    /// Data directory of the node [env: MEMBRANE_DATA_DIR] [default: the platform data dir]
    #[arg(long, env = "MEMBRANE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The node's API address [default: from node.json in the data dir]
    #[arg(long, env = "MEMBRANE_API")]
    api: Option<String>,
    /// The API token [default: <data-dir>/api-token]
    #[arg(long, env = "MEMBRANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let mut command = Cli::command();
    for verb in membrane_node::cli::verb_commands() {
        command = command.subcommand(verb);
    }
    let matches = command.get_matches();
    if let Some((name, sub)) = matches.subcommand()
        && let Some(verb) = verbs::find(name)
    {
        return run_verb(verb, sub);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Node(args) => run_node(*args),
        Command::Mcp(args) => run_mcp(args),
        Command::ApiDocs { out } => write_api_docs(&out),
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

fn run_verb(verb: &'static verbs::VerbSpec, matches: &clap::ArgMatches) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(membrane_node::cli::run(verb, matches)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membrane {}: {e:#}", verb.name);
            ExitCode::FAILURE
        }
    }
}

fn run_mcp(args: McpArgs) -> anyhow::Result<()> {
    // stdout is the protocol's: logs go to stderr, quietly.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let data_dir = match args.data_dir {
        // MCP clients pass arguments without a shell: expand `~` ourselves.
        Some(dir) => membrane_node::config::expand_home(dir),
        None => membrane_node::config::default_data_dir()?,
    };
    let client = Client::locate(args.api.as_deref(), args.token.as_deref(), &data_dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(membrane_node::mcp::serve_stdio(client))
}

fn write_api_docs(out: &std::path::Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(&api::openapi::document())?;
    std::fs::write(out.join("openapi.json"), json + "\n")?;
    std::fs::write(out.join("api.md"), api::openapi::markdown())?;
    println!("wrote {0}/openapi.json and {0}/api.md", out.display());
    Ok(())
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
    let token = api::token::load_or_create(&config.data_dir)?;
    let storage = SledStorage::open(&config.data_dir.join("store"))?;
    // Loaded on first use: an idle node does not hold the ~40 MB vocabulary.
    let tokens = Arc::new(LazyTiktoken::new());
    if !config.api.ip().is_loopback() {
        tracing::warn!(
            api = %config.api,
            "the agent API is bound to a non-loopback address (--api-allow-remote): any host \
             that can reach it and holds the token can act as this agent"
        );
    }
    // Bind the API first, so node.json names the port the OS chose.
    let listener = std::net::TcpListener::bind(config.api)
        .map_err(|e| anyhow::anyhow!("cannot bind the API to {}: {e}", config.api))?;
    listener.set_nonblocking(true)?;
    let api_addr = listener.local_addr()?;
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
        light: false,
        transport: TransportKind::Tcp,
        anti_entropy: Duration::from_secs(30),
        medium: membrane_crdt::Config {
            trust_threshold: config.trust_threshold,
            ..membrane_crdt::Config::default()
        },
        data_dir: Some(config.data_dir.clone()),
        api: Some(api_addr.to_string()),
        intents: membrane_crdt::intents::Config {
            quorum: config.intents.quorum,
            half_life_ms: config.intents.half_life_secs * 1000,
            ..membrane_crdt::intents::Config::default()
        },
        intent_swarms: config.intents.swarms,
        immune: membrane_immune::Config::default(),
        direct: config.direct,
    };
    let home = config
        .spaces
        .iter()
        .find(|s| **s != Space::default_space())
        .cloned()
        .unwrap_or_else(Space::default_space);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (handle, task) = Node::spawn(options, storage, tokens.clone()).await?;
        let ctx = Arc::new(
            api::Ctx::new(handle.clone(), home, tokens, token, config.budget)
                .with_space_budgets(&config.space_budgets),
        );
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, ctx, async move {
            let _ = api_stopped.await;
        }));
        tracing::info!(
            peer = %handle.id(),
            listen = ?handle.listening().await?,
            api = %api_addr,
            data_dir = %config.data_dir.display(),
            "membrane node ready"
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_api.send(());
        // Open event streams never end on their own: give the API a moment, then go on.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
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
