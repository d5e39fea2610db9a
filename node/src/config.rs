//! The node's configuration: raw flags, environment variables and an optional TOML file
//! become one validated [`NodeConfig`] before anything starts.
//!
//! [`NodeArgs`] holds the flags exactly as clap parsed them, every one optional and every
//! value still text. [`NodeConfig::resolve`] layers them per setting (**flag > environment
//! variable > config file > default**), parses each value, checks it and reports the first
//! bad one as a [`ConfigError`] that names where it came from and what was expected:
//!
//! ```text
//! --listen: "/ip4/1.2.3" is not a multiaddr (expected e.g. /ip4/127.0.0.1/tcp/4001)
//! MEMBRANE_API_ADDR (--api): "7420" is not a socket address (expected e.g. 127.0.0.1:7420)
//! bootstrap in /home/a/.local/share/membrane/membrane.toml (--bootstrap): "/dns4/boot.example/tcp/4001" …
//! ```
//!
//! Lists are replaced, never merged: `--bootstrap` on the command line replaces the file's
//! `bootstrap` list. The boolean switches (`--mdns`, `--kad-server`, `--api-allow-remote`)
//! can only be turned on by a flag, so a file that turns one on wins over an absent flag.
//!
//! | flag | environment | file key | default |
//! |---|---|---|---|
//! | `--data-dir` | `MEMBRANE_DATA_DIR` | `data_dir` | the platform data dir (`~/.local/share/membrane` on Linux) |
//! | `--config` | `MEMBRANE_CONFIG` | — | `<data-dir>/membrane.toml` if it exists |
//! | `--listen` | `MEMBRANE_LISTEN` (comma-separated) | `listen` | `/ip4/127.0.0.1/tcp/0`, or `/ip4/0.0.0.0/tcp/0` with `--mdns` |
//! | `--api` | `MEMBRANE_API_ADDR` | `api` | `127.0.0.1:7420` |
//! | `--api-allow-remote` | — | `api_allow_remote` | off |
//! | `--bootstrap` | `MEMBRANE_BOOTSTRAP` (comma-separated) | `bootstrap` | none |
//! | `--space` | — | `spaces` | `default` (always joined) |
//! | `--name` | `MEMBRANE_NAME` | `name` | `agent` |
//! | `--capability` | — | `capabilities` | none |
//! | `--kad-server` | — | `kad_server` | off |
//! | `--relay-server` | — | `relay_server` | off |
//! | `--mdns` | — | `mdns` | off |
//! | `--log-format` | `MEMBRANE_LOG_FORMAT` | `log_format` | `text` |
//! | `--trust-threshold` | — | `trust_threshold` | `0.5` |
//! | `--budget-tokens` | `MEMBRANE_BUDGET_TOKENS` | `budget_tokens` | none (unlimited) |
//! | `--budget-window` | — | `budget_window_secs` | `3600` |
//! | `--budget-action` | — | `budget_action` | `halt` |
//! | `--intent-quorum` | — | `intent_quorum` | `3` |
//! | `--intent-half-life` | — | `intent_half_life_secs` | `60` |
//! | `--intent-swarms` | — | `intent_swarms` | off |
//! | `--space-budget` | — | `space_budgets` | none |
//! | `--direct-accept` | — | `direct_accept` | `open` |
//! | `--direct-max-bytes` | — | `direct_max_bytes` | `16384` |
//! | `--direct-rate` | — | `direct_rate` | `30` (per sender per minute; bursts of up to 10) |
//!
//! An environment variable that is set but empty counts as unset. A relative `data_dir` in
//! a config file is relative to the file's directory; a leading `~` is the home directory.
//!
//! The peer-to-peer listen address defaults to loopback: a node serves one agent on its
//! own machine, and it joins a mesh by dialling its bootstrap peers, so nothing needs to
//! accept connections from other hosts until the user says so with `--listen`. `--mdns`
//! only makes sense with an address the LAN can reach, so with `--mdns` (and no listen
//! address given) the default becomes `/ip4/0.0.0.0/tcp/0`.
//!
//! A config file given with `--config`, with every key (a `membrane.toml` found in the data
//! dir itself may not move the data dir, so it leaves `data_dir` out):
//!
//! ```toml
//! data_dir = "~/membrane-a"
//! listen = ["/ip4/0.0.0.0/tcp/4001"]
//! api = "127.0.0.1:7420"
//! api_allow_remote = false
//! bootstrap = ["/dns4/boot.example.org/tcp/4001/p2p/12D3KooW…"]
//! spaces = ["climate-brief"]
//! name = "researcher"
//! kad_server = false
//! mdns = false
//! log_format = "json"
//! trust_threshold = 0.6
//! budget_tokens = 200000
//! budget_window_secs = 3600
//! budget_action = "halt"
//! intent_quorum = 3
//! intent_half_life_secs = 60
//! intent_swarms = true
//! direct_accept = "trusted"
//! direct_max_bytes = 4096
//! direct_rate = 10
//!
//! # A token budget of its own for a space (each a window of its own), on top of the
//! # agent's: `--space-budget climate-brief=50000/3600/warn` on the command line.
//! [space_budgets.climate-brief]
//! tokens = 50000
//! window_secs = 3600
//! action = "warn"
//!
//! [capabilities]
//! fact_check = "Checks claims against cited sources"
//! ```
//!
//! `capabilities` may also be a list: `capabilities = [{ name = "fact_check",
//! description = "…" }]`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use membrane_protocol::cost::BudgetAction;
use membrane_protocol::signals::{
    Capability, MAX_CAPABILITIES, MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES,
};
use membrane_protocol::{PublicKey, Score, Space};
use serde::Deserialize;

use crate::network::{DirectAccept, DirectPolicy};

/// Environment variable for `--data-dir`.
pub const ENV_DATA_DIR: &str = "MEMBRANE_DATA_DIR";
/// Environment variable for `--config`.
pub const ENV_CONFIG: &str = "MEMBRANE_CONFIG";
/// Environment variable for `--listen`, comma-separated.
pub const ENV_LISTEN: &str = "MEMBRANE_LISTEN";
/// Environment variable for `--budget-tokens`.
pub const ENV_BUDGET_TOKENS: &str = "MEMBRANE_BUDGET_TOKENS";
/// Environment variable for `--api`.
pub const ENV_API_ADDR: &str = "MEMBRANE_API_ADDR";
/// Environment variable for `--bootstrap`, comma-separated.
pub const ENV_BOOTSTRAP: &str = "MEMBRANE_BOOTSTRAP";
/// Environment variable for `--name`.
pub const ENV_NAME: &str = "MEMBRANE_NAME";
/// Environment variable for `--log-format`.
pub const ENV_LOG_FORMAT: &str = "MEMBRANE_LOG_FORMAT";

/// Name of the config file looked for in the data dir when `--config` is not given.
pub const CONFIG_FILE_NAME: &str = "membrane.toml";
/// Default address of the agent's API: loopback only.
pub const DEFAULT_API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7420);
/// Default peer-to-peer listen address: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";
/// Default listen address with `--mdns`: every interface, so LAN peers can connect.
pub const DEFAULT_LISTEN_MDNS: &str = "/ip4/0.0.0.0/tcp/0";
/// Default agent name.
pub const DEFAULT_NAME: &str = "agent";
/// Most listen addresses a node takes.
pub const MAX_LISTEN: usize = 16;
/// Most bootstrap addresses a node takes.
pub const MAX_BOOTSTRAP: usize = 64;
/// Most spaces a node joins, `default` included (each costs four gossip topics).
pub const MAX_SPACES: usize = 64;
/// A budget's window when none is given: an hour.
pub const DEFAULT_BUDGET_WINDOW_SECS: u64 = 3600;

const LISTEN_EXAMPLE: &str = "e.g. /ip4/127.0.0.1/tcp/4001";
const BOOTSTRAP_EXAMPLE: &str = "e.g. /dns4/boot.example.org/tcp/4001/p2p/12D3KooW…";

/// Flags of `membrane node` as given: every one optional, every value still text.
/// `NodeConfig::resolve` layers them over the environment, the config file and the
/// defaults.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Directory for the identity key, the store and node.json, e.g. --data-dir
    /// ~/membrane-a [env: MEMBRANE_DATA_DIR] [default: the platform data dir]
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// TOML config file with the same settings in snake_case, e.g. --config ./node.toml
    /// [env: MEMBRANE_CONFIG] [default: membrane.toml in the data dir, if it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept peer connections on; repeatable, e.g. --listen
    /// /ip4/0.0.0.0/tcp/4001 [env: MEMBRANE_LISTEN, comma-separated] [default:
    /// /ip4/127.0.0.1/tcp/0, or /ip4/0.0.0.0/tcp/0 with --mdns]
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub listen: Vec<String>,

    /// Address of the agent's HTTP API, e.g. --api 127.0.0.1:7420 [env:
    /// MEMBRANE_API_ADDR] [default: 127.0.0.1:7420]
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,

    /// Allow --api to be a non-loopback address, e.g. --api 0.0.0.0:7420
    /// --api-allow-remote (the API then answers any host that has the token)
    #[arg(long)]
    pub api_allow_remote: bool,

    /// Peer to join the mesh through, with its peer id; repeatable, /dns* allowed, e.g.
    /// --bootstrap /dns4/boot.example.org/tcp/4001/p2p/12D3KooW… [env: MEMBRANE_BOOTSTRAP,
    /// comma-separated]
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub bootstrap: Vec<String>,

    /// Space to join besides `default`; repeatable, e.g. --space climate-brief
    #[arg(long = "space", value_name = "NAME", value_delimiter = ',')]
    pub spaces: Vec<String>,

    /// The agent's name as peers see it, e.g. --name researcher [env: MEMBRANE_NAME]
    /// [default: agent]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Capability the agent offers; repeatable, e.g. --capability "fact_check=Checks
    /// claims against cited sources"
    #[arg(long = "capability", value_name = "NAME[=DESCRIPTION]")]
    pub capabilities: Vec<String>,

    /// Run Kademlia in server mode even before the node knows it is reachable, e.g. for
    /// local testnets: --kad-server
    #[arg(long)]
    pub kad_server: bool,

    /// Relay connections for nodes behind NAT (for public bootstrap nodes): --relay-server
    #[arg(long)]
    pub relay_server: bool,

    /// Find peers on the local network with mDNS, e.g. --mdns
    #[arg(long)]
    pub mdns: bool,

    /// Log format, e.g. --log-format json [env: MEMBRANE_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,

    /// Lowest trust score (0 to 1) a peer needs to receive trusted-tier entries, e.g.
    /// --trust-threshold 0.7 [default: 0.5]
    #[arg(long, value_name = "SCORE")]
    pub trust_threshold: Option<String>,

    /// Tokens the agent may take in through query and search answers per window, e.g.
    /// --budget-tokens 200000 [env: MEMBRANE_BUDGET_TOKENS] [default: unlimited]
    #[arg(long, value_name = "TOKENS")]
    pub budget_tokens: Option<String>,

    /// Length of the budget window in seconds (0: never resets), e.g. --budget-window
    /// 3600 [default: 3600]
    #[arg(long, value_name = "SECS")]
    pub budget_window: Option<String>,

    /// What a spent budget does: halt refuses answers with 429, warn lets them through
    /// and logs, e.g. --budget-action warn [default: halt]
    #[arg(long, value_name = "ACTION", value_parser = ["halt", "warn"])]
    pub budget_action: Option<String>,

    /// Distinct agents whose intent on one topic makes a quorum, e.g. --intent-quorum 5
    /// [default: 3]
    #[arg(long, value_name = "AGENTS")]
    pub intent_quorum: Option<String>,

    /// Half-life of an intent signal's strength in seconds, e.g. --intent-half-life 300
    /// [default: 60]
    #[arg(long, value_name = "SECS")]
    pub intent_half_life: Option<String>,

    /// Form a swarm around a topic when intents on it reach a quorum, and dissolve it
    /// when they decay below
    #[arg(long)]
    pub intent_swarms: bool,
    /// A token budget for one space, on top of the agent's: tokens per window, the window
    /// in seconds (0: never resets) and halt or warn; repeatable, e.g. --space-budget
    /// climate-brief=50000/3600/warn [default window 3600, action halt]
    #[arg(long = "space-budget", value_name = "SPACE=TOKENS[/SECS[/ACTION]]")]
    pub space_budgets: Vec<String>,
    /// Whom the agent takes direct messages from: open (anyone it has not rated below the
    /// trust threshold) or trusted (only agents it trusts at or above it), e.g.
    /// --direct-accept trusted [default: open]
    #[arg(long, value_name = "POLICY", value_parser = ["open", "trusted"])]
    pub direct_accept: Option<String>,

    /// Longest direct message taken, in bytes (1 to 16384), e.g. --direct-max-bytes 4096
    /// [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub direct_max_bytes: Option<String>,

    /// Direct messages one sender may send per minute (bursts of up to 10, or of this many
    /// if fewer), e.g. --direct-rate 10 [default: 30]
    #[arg(long, value_name = "PER_MINUTE")]
    pub direct_rate: Option<String>,
}

/// How the node writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("is not a log format".to_owned()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The node's validated configuration.
///
/// Build it with [`NodeConfig::resolve`] from flags, or in code with [`NodeConfig::new`]
/// (or `NodeConfig { data_dir, ..NodeConfig::default() }`) and check it with
/// [`NodeConfig::validate`]. `Default` leaves `data_dir` empty, which `validate` rejects.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Directory holding the identity key, the store and `node.json`.
    pub data_dir: PathBuf,
    /// The config file that was read, if any (for the startup log).
    pub config_file: Option<PathBuf>,
    /// Peer-to-peer listen addresses; empty means dial-out only.
    pub listen: Vec<Multiaddr>,
    /// Address of the agent's API.
    pub api: SocketAddr,
    /// Whether `api` may be a non-loopback address.
    pub api_allow_remote: bool,
    /// Peers to join the mesh through; each ends in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Spaces to join: `default` first, no duplicates.
    pub spaces: Vec<Space>,
    /// The agent's name.
    pub name: String,
    /// Capabilities the agent offers, with unique names.
    pub capabilities: Vec<Capability>,
    /// Run Kademlia in server mode from the start.
    pub kad_server: bool,
    /// Act as a circuit relay for nodes behind NAT.
    pub relay_server: bool,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Lowest trust a peer needs to receive this node's trusted-tier entries.
    pub trust_threshold: Score,
    /// The agent's token budget, if it has one.
    pub budget: Option<BudgetConfig>,
    /// Quorum sensing over intent signals.
    pub intents: IntentConfig,
    /// Token budgets of single spaces (each one of `spaces`), on top of the agent's.
    pub space_budgets: BTreeMap<Space, BudgetConfig>,
    /// Whom and how much the agent takes direct messages from.
    pub direct: DirectPolicy,
}

/// Quorum sensing over intents (see `membrane_crdt::intents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentConfig {
    /// Distinct agents for a quorum.
    pub quorum: usize,
    /// Half-life of a signal's strength, seconds.
    pub half_life_secs: u64,
    /// Form (and dissolve) swarms around quorate topics.
    pub swarms: bool,
}

impl Default for IntentConfig {
    fn default() -> Self {
        IntentConfig {
            quorum: 3,
            half_life_secs: 60,
            swarms: false,
        }
    }
}

/// Most agents an intent quorum may need.
pub const MAX_INTENT_QUORUM: usize = 1000;
/// Longest intent half-life: a day.
pub const MAX_INTENT_HALF_LIFE_SECS: u64 = 86_400;

/// The agent's token budget: what crosses into its context through answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Tokens per window.
    pub tokens: u64,
    /// Window length in seconds; 0 means it never resets.
    pub window_secs: u64,
    /// Halt or warn once spent.
    pub action: BudgetAction,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self::new(PathBuf::new())
    }
}

/// Where a value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// A key in a config file.
    File {
        /// The file.
        path: PathBuf,
        /// The key, in snake_case.
        key: &'static str,
    },
    /// A field of a [`NodeConfig`] checked by [`NodeConfig::validate`]; named by its flag.
    Config,
}

/// Why the flags, environment and config file do not make a valid [`NodeConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is malformed or out of range.
    #[error("{}: {value:?} {problem} (expected {expected})", place(.flag, .origin))]
    InvalidValue {
        /// The flag the value is for, such as `--listen`.
        flag: &'static str,
        /// Where the value came from (boxed to keep the error small).
        origin: Box<Source>,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        problem: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A list holds more values than the node takes.
    #[error("{}: {count} values given (expected at most {max})", place(.flag, .origin))]
    TooMany {
        /// The flag the list is for.
        flag: &'static str,
        /// Where the list came from (boxed to keep the error small).
        origin: Box<Source>,
        /// Values given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The API would be reachable from other hosts without `--api-allow-remote`.
    #[error(
        "--api: {addr} is not a loopback address, and the API is meant for the local agent \
         (expected e.g. 127.0.0.1:7420, or pass --api-allow-remote / set \
         api_allow_remote = true to serve other hosts)"
    )]
    RemoteApi {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The config file could not be read or parsed (unknown keys included).
    #[error("config file {}: {detail}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong, with the line for parse errors.
        detail: String,
    },
    /// No data dir was given and the platform has none for this user.
    #[error(
        "--data-dir: no platform data directory is known for this user (no home \
         directory?) (expected --data-dir PATH or {ENV_DATA_DIR}=PATH)"
    )]
    NoDataDir,
}

impl ConfigError {
    /// The flag the error is about, if it is about one.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            Self::InvalidValue { flag, .. } | Self::TooMany { flag, .. } => Some(flag),
            Self::RemoteApi { .. } => Some(API.flag),
            Self::NoDataDir => Some(DATA_DIR.flag),
            Self::File { .. } => None,
        }
    }
}

/// Displays a flag and the source of its value the way the user wrote it.
struct Place<'a> {
    flag: &'a str,
    origin: &'a Source,
}

fn place<'a>(flag: &'a str, origin: &'a Source) -> Place<'a> {
    Place { flag, origin }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Source::Flag | Source::Config => f.write_str(self.flag),
            Source::Env(var) => write!(f, "{var} ({})", self.flag),
            Source::File { path, key } => {
                write!(f, "{key} in {} ({})", path.display(), self.flag)
            }
        }
    }
}

/// One setting's names as a flag, a file key and an environment variable.
#[derive(Clone, Copy)]
struct Setting {
    flag: &'static str,
    key: &'static str,
    env: Option<&'static str>,
}

const fn setting(flag: &'static str, key: &'static str, env: Option<&'static str>) -> Setting {
    Setting { flag, key, env }
}

const DATA_DIR: Setting = setting("--data-dir", "data_dir", Some(ENV_DATA_DIR));
const CONFIG: Setting = setting("--config", "config", Some(ENV_CONFIG));
const LISTEN: Setting = setting("--listen", "listen", Some(ENV_LISTEN));
const API: Setting = setting("--api", "api", Some(ENV_API_ADDR));
const BOOTSTRAP: Setting = setting("--bootstrap", "bootstrap", Some(ENV_BOOTSTRAP));
const SPACES: Setting = setting("--space", "spaces", None);
const NAME: Setting = setting("--name", "name", Some(ENV_NAME));
const CAPABILITIES: Setting = setting("--capability", "capabilities", None);
const LOG_FORMAT: Setting = setting("--log-format", "log_format", Some(ENV_LOG_FORMAT));
const TRUST_THRESHOLD: Setting = setting("--trust-threshold", "trust_threshold", None);
const BUDGET_TOKENS: Setting = setting("--budget-tokens", "budget_tokens", Some(ENV_BUDGET_TOKENS));
const BUDGET_WINDOW: Setting = setting("--budget-window", "budget_window_secs", None);
const BUDGET_ACTION: Setting = setting("--budget-action", "budget_action", None);
const INTENT_QUORUM: Setting = setting("--intent-quorum", "intent_quorum", None);
const INTENT_HALF_LIFE: Setting = setting("--intent-half-life", "intent_half_life_secs", None);
const SPACE_BUDGETS: Setting = setting("--space-budget", "space_budgets", None);
const DIRECT_ACCEPT: Setting = setting("--direct-accept", "direct_accept", None);
const DIRECT_MAX_BYTES: Setting = setting("--direct-max-bytes", "direct_max_bytes", None);
const DIRECT_RATE: Setting = setting("--direct-rate", "direct_rate", None);
/// Largest burst `--direct-rate` gives.
pub const DIRECT_BURST: u32 = 10;

/// What is wrong with one value, before it is tied to a flag and a source.
struct Bad {
    problem: String,
    expected: String,
}

fn bad(problem: impl Into<String>, expected: impl Into<String>) -> Bad {
    Bad {
        problem: problem.into(),
        expected: expected.into(),
    }
}

impl Bad {
    fn at(self, setting: Setting, origin: &Source, value: impl Into<String>) -> ConfigError {
        ConfigError::InvalidValue {
            flag: setting.flag,
            origin: Box::new(origin.clone()),
            value: value.into(),
            problem: self.problem,
            expected: self.expected,
        }
    }
}

/// The config file's keys: the flags' names in snake_case, values still raw.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<Vec<String>>,
    api: Option<String>,
    api_allow_remote: Option<bool>,
    bootstrap: Option<Vec<String>>,
    spaces: Option<Vec<String>>,
    name: Option<String>,
    capabilities: Option<FileCapabilities>,
    kad_server: Option<bool>,
    relay_server: Option<bool>,
    mdns: Option<bool>,
    log_format: Option<String>,
    trust_threshold: Option<f64>,
    budget_tokens: Option<u64>,
    budget_window_secs: Option<u64>,
    budget_action: Option<String>,
    direct_accept: Option<String>,
    direct_max_bytes: Option<u64>,
    direct_rate: Option<u64>,
    intent_quorum: Option<u64>,
    intent_half_life_secs: Option<u64>,
    intent_swarms: Option<bool>,
    space_budgets: Option<BTreeMap<String, FileBudget>>,
}

/// One space's budget in a config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    tokens: u64,
    #[serde(default = "default_window_secs")]
    window_secs: u64,
    #[serde(default)]
    action: Option<String>,
}

fn default_window_secs() -> u64 {
    DEFAULT_BUDGET_WINDOW_SECS
}

/// `capabilities` in a file: a table of name = description, or a list of
/// `{ name, description }` tables. Order is kept either way.
#[derive(Debug, Default)]
struct FileCapabilities(Vec<Capability>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCapability {
    name: String,
    #[serde(default)]
    description: String,
}

impl<'de> Deserialize<'de> for FileCapabilities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileCapabilities;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of name = \"description\", or a list of { name, description } tables",
                )
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut caps = Vec::new();
                while let Some((name, description)) = map.next_entry::<String, String>()? {
                    caps.push(Capability { name, description });
                }
                Ok(FileCapabilities(caps))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut caps = Vec::new();
                while let Some(FileCapability { name, description }) = seq.next_element()? {
                    caps.push(Capability { name, description });
                }
                Ok(FileCapabilities(caps))
            }
        }

        d.deserialize_any(Visitor)
    }
}

/// The config file, once read.
struct LoadedFile {
    path: PathBuf,
    config: FileConfig,
}

impl LoadedFile {
    fn source(&self, setting: Setting) -> Source {
        Source::File {
            path: self.path.clone(),
            key: setting.key,
        }
    }
}

fn load_file(path: &Path) -> Result<LoadedFile, ConfigError> {
    let file_error = |detail: String| ConfigError::File {
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let config = toml::from_str::<FileConfig>(&text).map_err(|e| {
        // toml's own rendering spans several lines; keep one line that still shows the
        // key: the line number and the line itself.
        let message = e.message().trim_end().replace('\n', "; ");
        let start = e.span().map_or(0, |span| span.start);
        let Some(before) = text.get(..start) else {
            return file_error(message);
        };
        let line_no = before.matches('\n').count() + 1;
        let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
        let line: String = line.chars().take(80).collect();
        file_error(format!("line {line_no} `{line}`: {message}"))
    })?;
    Ok(LoadedFile {
        path: path.to_owned(),
        config,
    })
}

/// The environment as [`NodeConfig::resolve`] sees it: unset and empty are the same.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, setting: Setting) -> Option<(String, Source)> {
        let var = setting.env?;
        (self.0)(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v, Source::Env(var)))
    }

    fn list(&self, setting: Setting) -> Option<(Vec<String>, Source)> {
        self.get(setting).map(|(v, source)| {
            let items = v.split(',').map(str::trim).filter(|s| !s.is_empty());
            (items.map(str::to_owned).collect(), source)
        })
    }
}

/// A flag's value, if given.
fn flag<T: Clone>(value: &Option<T>) -> Option<(T, Source)> {
    value.clone().map(|v| (v, Source::Flag))
}

/// A repeatable flag's values, if any were given.
fn flag_list(values: &[String]) -> Option<(Vec<String>, Source)> {
    (!values.is_empty()).then(|| (values.to_vec(), Source::Flag))
}

/// A config file's value for `setting`, if there is a file and it has the key.
fn in_file<T>(
    file: Option<&LoadedFile>,
    setting: Setting,
    get: impl FnOnce(&FileConfig) -> Option<T>,
) -> Option<(T, Source)> {
    let file = file?;
    get(&file.config).map(|v| (v, file.source(setting)))
}

/// Finds the config file and the data dir, which depend on each other: the data dir
/// holds the default config file, and an explicit config file may name the data dir.
fn locate(args: &NodeArgs, env: &Env<'_>) -> Result<(Option<LoadedFile>, PathBuf), ConfigError> {
    let dir_given = flag(&args.data_dir).or_else(|| env.get(DATA_DIR).map(path_value));
    let config_given = flag(&args.config).or_else(|| env.get(CONFIG).map(path_value));
    if let Some((path, at)) = config_given {
        let path = expand_home(path);
        if path.as_os_str().is_empty() {
            return Err(bad("is empty", "a path to a TOML file").at(CONFIG, &at, ""));
        }
        let file = load_file(&path)?;
        // A relative data_dir in a file is relative to the file.
        let base = path.parent().unwrap_or(Path::new(""));
        let dir = match dir_given.or_else(|| {
            in_file(Some(&file), DATA_DIR, |c| c.data_dir.clone())
                .map(|(dir, at)| (base.join(expand_home(dir)), at))
        }) {
            Some(dir) => dir,
            None => (platform_data_dir()?, Source::Config),
        };
        return Ok((Some(file), resolve_data_dir(dir)?));
    }

    let (dir, at) = match dir_given {
        Some(dir) => dir,
        None => (platform_data_dir()?, Source::Config),
    };
    let dir = expand_home(dir);
    let implicit = dir.join(CONFIG_FILE_NAME);
    if !implicit.is_file() {
        return Ok((None, resolve_data_dir((dir, at))?));
    }
    let file = load_file(&implicit)?;
    if let Some(other) = &file.config.data_dir
        && dir.join(expand_home(other.clone())) != dir
    {
        let problem = format!(
            "points away from the data dir {} the file is in",
            dir.display()
        );
        let expected = "no data_dir key in <data-dir>/membrane.toml, or a file outside the \
                        data dir given with --config";
        let value = other.display().to_string();
        return Err(bad(problem, expected).at(DATA_DIR, &file.source(DATA_DIR), value));
    }
    Ok((Some(file), resolve_data_dir((dir, at))?))
}

impl NodeConfig {
    /// The defaults, with `data_dir` as given.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            config_file: None,
            listen: Vec::new(),
            api: DEFAULT_API_ADDR,
            api_allow_remote: false,
            bootstrap: Vec::new(),
            spaces: vec![Space::default_space()],
            name: DEFAULT_NAME.to_owned(),
            capabilities: Vec::new(),
            kad_server: false,
            relay_server: false,
            mdns: false,
            log_format: LogFormat::Text,
            trust_threshold: Score::DEFAULT_THRESHOLD,
            budget: None,
            intents: IntentConfig::default(),
            space_budgets: BTreeMap::new(),
            direct: DirectPolicy::default(),
        }
        .with_default_listen()
    }

    fn with_default_listen(mut self) -> Self {
        self.listen = vec![Self::default_listen(self.mdns)];
        self
    }

    /// The listen address used when none is configured: [`DEFAULT_LISTEN`], or
    /// [`DEFAULT_LISTEN_MDNS`] when mDNS is on.
    pub fn default_listen(mdns: bool) -> Multiaddr {
        let ip = if mdns {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        Multiaddr::empty()
            .with(Protocol::Ip4(ip))
            .with(Protocol::Tcp(0))
    }

    /// Layers flags, environment variables (read through `env`, so tests need not touch
    /// the process environment) and the config file over the defaults, and validates the
    /// result.
    ///
    /// In the binary: `NodeConfig::resolve(&args, &|name| std::env::var(name).ok())`.
    pub fn resolve(
        args: &NodeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let env = Env(env);
        let (file, data_dir) = locate(args, &env)?;
        let file = file.as_ref();
        let mut config = NodeConfig::new(data_dir);
        config.config_file = file.map(|f| f.path.clone());

        let switch = |flag: bool, get: fn(&FileConfig) -> Option<bool>| {
            flag || file.and_then(|f| get(&f.config)).unwrap_or(false)
        };
        config.api_allow_remote = switch(args.api_allow_remote, |c| c.api_allow_remote);
        config.kad_server = switch(args.kad_server, |c| c.kad_server);
        config.relay_server = switch(args.relay_server, |c| c.relay_server);
        config.mdns = switch(args.mdns, |c| c.mdns);
        config.intents.swarms = switch(args.intent_swarms, |c| c.intent_swarms);
        config = config.with_default_listen();

        if let Some((raw, at)) = flag_list(&args.listen)
            .or_else(|| env.list(LISTEN))
            .or_else(|| in_file(file, LISTEN, |c| c.listen.clone()))
        {
            config.listen = parse_list(LISTEN, &at, &raw, MAX_LISTEN, parse_listen)?;
        }
        if let Some((raw, at)) = flag(&args.api)
            .or_else(|| env.get(API))
            .or_else(|| in_file(file, API, |c| c.api.clone()))
        {
            config.api = raw.trim().parse().map_err(|_| {
                bad("is not a socket address", "e.g. 127.0.0.1:7420").at(API, &at, raw)
            })?;
        }
        if let Some((raw, at)) = flag_list(&args.bootstrap)
            .or_else(|| env.list(BOOTSTRAP))
            .or_else(|| in_file(file, BOOTSTRAP, |c| c.bootstrap.clone()))
        {
            config.bootstrap = parse_list(BOOTSTRAP, &at, &raw, MAX_BOOTSTRAP, parse_bootstrap)?;
        }
        if let Some((raw, at)) =
            flag_list(&args.spaces).or_else(|| in_file(file, SPACES, |c| c.spaces.clone()))
        {
            config.spaces = parse_spaces(&at, &raw)?;
        }
        if let Some((raw, at)) = flag(&args.name)
            .or_else(|| env.get(NAME))
            .or_else(|| in_file(file, NAME, |c| c.name.clone()))
        {
            check_name(&raw).map_err(|b| b.at(NAME, &at, raw.as_str()))?;
            config.name = raw;
        }
        let capability_flags = flag_list(&args.capabilities).map(|(raw, at)| {
            let caps = raw.iter().map(|raw| parse_capability_flag(raw)).collect();
            (caps, at)
        });
        if let Some((caps, at)) = capability_flags.or_else(|| {
            in_file(file, CAPABILITIES, |c| {
                c.capabilities.as_ref().map(|caps| caps.0.clone())
            })
        }) {
            check_capabilities(&caps, &at)?;
            config.capabilities = caps;
        }
        if let Some((raw, at)) = flag(&args.log_format)
            .or_else(|| env.get(LOG_FORMAT))
            .or_else(|| in_file(file, LOG_FORMAT, |c| c.log_format.clone()))
        {
            config.log_format = raw
                .trim()
                .parse()
                .map_err(|problem: String| bad(problem, "text or json").at(LOG_FORMAT, &at, raw))?;
        }
        if let Some((raw, at)) = flag(&args.trust_threshold).or_else(|| {
            in_file(file, TRUST_THRESHOLD, |c| {
                c.trust_threshold.map(|v| v.to_string())
            })
        }) {
            config.trust_threshold =
                parse_threshold(&raw).map_err(|b| b.at(TRUST_THRESHOLD, &at, raw))?;
        }
        config.budget = resolve_budget(args, &env, file)?;
        if let Some((raw, at)) = flag(&args.intent_quorum).or_else(|| {
            in_file(file, INTENT_QUORUM, |c| {
                c.intent_quorum.map(|v| v.to_string())
            })
        }) {
            config.intents.quorum = raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_INTENT_QUORUM).contains(n))
                .ok_or_else(|| {
                    bad(
                        "is not a whole number of agents in range",
                        format!("1 to {MAX_INTENT_QUORUM}, e.g. 3"),
                    )
                    .at(INTENT_QUORUM, &at, raw.as_str())
                })?;
        }
        if let Some((raw, at)) = flag(&args.intent_half_life).or_else(|| {
            in_file(file, INTENT_HALF_LIFE, |c| {
                c.intent_half_life_secs.map(|v| v.to_string())
            })
        }) {
            config.intents.half_life_secs = raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_INTENT_HALF_LIFE_SECS).contains(n))
                .ok_or_else(|| {
                    bad(
                        "is not a whole number of seconds in range",
                        format!("1 to {MAX_INTENT_HALF_LIFE_SECS}, e.g. 60"),
                    )
                    .at(INTENT_HALF_LIFE, &at, raw.as_str())
                })?;
        }
        config.space_budgets = resolve_space_budgets(args, file)?;
        config.direct = resolve_direct(args, file)?;

        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants a [`NodeConfig`] must hold, whoever built it: a data dir;
    /// at most [`MAX_LISTEN`] listen and [`MAX_BOOTSTRAP`] bootstrap addresses, each of
    /// a kind the node can use, bootstrap ones ending in `/p2p/<peer id>`; a loopback API
    /// address unless `api_allow_remote`; `default` among at most [`MAX_SPACES`] unique
    /// spaces; a name of 1 to 64 bytes; at most 32 capabilities with unique names of 1 to
    /// 64 bytes of `[a-z0-9_-]` and descriptions of at most 256 bytes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let here = Source::Config;
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("is empty", "a directory path").at(DATA_DIR, &here, ""));
        }
        check_count(LISTEN, &here, self.listen.len(), MAX_LISTEN)?;
        for addr in &self.listen {
            check_listen(addr).map_err(|b| b.at(LISTEN, &here, addr.to_string()))?;
        }
        check_count(BOOTSTRAP, &here, self.bootstrap.len(), MAX_BOOTSTRAP)?;
        for addr in &self.bootstrap {
            check_bootstrap(addr).map_err(|b| b.at(BOOTSTRAP, &here, addr.to_string()))?;
        }
        if !self.api.ip().is_loopback() && !self.api_allow_remote {
            return Err(ConfigError::RemoteApi { addr: self.api });
        }
        check_count(SPACES, &here, self.spaces.len(), MAX_SPACES)?;
        let default = Space::default_space();
        if !self.spaces.contains(&default) {
            let value = join(&self.spaces);
            return Err(
                bad("lacks the default space", "a list that includes default")
                    .at(SPACES, &here, value),
            );
        }
        for (i, space) in self.spaces.iter().enumerate() {
            if self.spaces[..i].contains(space) {
                return Err(bad("is listed twice", "each space once").at(
                    SPACES,
                    &here,
                    space.to_string(),
                ));
            }
        }
        check_name(&self.name).map_err(|b| b.at(NAME, &here, self.name.as_str()))?;
        check_capabilities(&self.capabilities, &here)?;
        check_space_budgets(&self.space_budgets, &self.spaces, &here)?;
        self.direct.validate().map_err(|problem| {
            bad(
                problem,
                "a limit of 1 to 16384 bytes and a rate of at least 1",
            )
            .at(DIRECT_RATE, &here, format!("{:?}", self.direct))
        })?;
        Ok(())
    }
}

/// Every budgeted space must be one the node joins (a typo would otherwise budget
/// nothing, silently).
fn check_space_budgets(
    budgets: &BTreeMap<Space, BudgetConfig>,
    spaces: &[Space],
    origin: &Source,
) -> Result<(), ConfigError> {
    for space in budgets.keys() {
        if !spaces.contains(space) {
            return Err(bad(
                "is not a space this node joins",
                format!("one of the node's spaces: {}", join(spaces)),
            )
            .at(SPACE_BUDGETS, origin, space.to_string()));
        }
    }
    Ok(())
}

fn budget_action(raw: &str) -> Result<BudgetAction, Bad> {
    match raw.trim() {
        "halt" => Ok(BudgetAction::Halt),
        "warn" => Ok(BudgetAction::Warn),
        _ => Err(bad("is not a budget action", "halt or warn")),
    }
}

fn budget_space(raw: &str) -> Result<Space, Bad> {
    raw.trim().parse().map_err(|e| {
        bad(
            format!("does not name a space: {e}"),
            "a space name, e.g. climate-brief",
        )
    })
}

/// `SPACE=TOKENS[/SECS[/ACTION]]`.
fn parse_space_budget(raw: &str) -> Result<(Space, BudgetConfig), Bad> {
    let expected = "SPACE=TOKENS[/SECS[/ACTION]], e.g. climate-brief=50000/3600/warn";
    let (space, rest) = raw
        .split_once('=')
        .ok_or_else(|| bad("has no `=`", expected))?;
    let space = budget_space(space)?;
    let mut parts = rest.split('/');
    let number = |part: Option<&str>, what: &str| -> Result<Option<u64>, Bad> {
        part.map(|p| {
            p.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("has {what} {p:?}, not a whole number"), expected))
        })
        .transpose()
    };
    let tokens = number(parts.next(), "tokens")?.ok_or_else(|| bad("has no tokens", expected))?;
    let window_secs = number(parts.next(), "a window")?.unwrap_or(DEFAULT_BUDGET_WINDOW_SECS);
    let action = parts
        .next()
        .map(budget_action)
        .transpose()?
        .unwrap_or(BudgetAction::Halt);
    if parts.next().is_some() {
        return Err(bad("has more than three parts after `=`", expected));
    }
    Ok((
        space,
        BudgetConfig {
            tokens,
            window_secs,
            action,
        },
    ))
}

/// The space budgets: the flags replace the file's table.
fn resolve_space_budgets(
    args: &NodeArgs,
    file: Option<&LoadedFile>,
) -> Result<BTreeMap<Space, BudgetConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some((raw, at)) = flag_list(&args.space_budgets) {
        check_count(SPACE_BUDGETS, &at, raw.len(), MAX_SPACES)?;
        for item in raw {
            let (space, budget) =
                parse_space_budget(&item).map_err(|b| b.at(SPACE_BUDGETS, &at, item.as_str()))?;
            out.insert(space, budget);
        }
    } else if let Some((table, at)) = in_file(file, SPACE_BUDGETS, |c| c.space_budgets.clone()) {
        check_count(SPACE_BUDGETS, &at, table.len(), MAX_SPACES)?;
        for (name, b) in table {
            let space = budget_space(&name).map_err(|e| e.at(SPACE_BUDGETS, &at, name.as_str()))?;
            let action = match &b.action {
                Some(raw) => {
                    budget_action(raw).map_err(|e| e.at(SPACE_BUDGETS, &at, raw.as_str()))?
                }
                None => BudgetAction::Halt,
            };
            out.insert(
                space,
                BudgetConfig {
                    tokens: b.tokens,
                    window_secs: b.window_secs,
                    action,
                },
            );
        }
    }
    Ok(out)
}

fn join(spaces: &[Space]) -> String {
    spaces
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn path_value((value, source): (String, Source)) -> (PathBuf, Source) {
    (PathBuf::from(value), source)
}

/// The platform's per-user data directory for membrane (what `--data-dir` defaults to).
pub fn default_data_dir() -> Result<PathBuf, ConfigError> {
    platform_data_dir()
}

/// The platform's per-user data directory for membrane.
fn platform_data_dir() -> Result<PathBuf, ConfigError> {
    directories::ProjectDirs::from("org", "membrane", "membrane")
        .map(|dirs| dirs.data_dir().to_owned())
        .ok_or(ConfigError::NoDataDir)
}

/// Replaces a leading `~` with the home directory.
pub fn expand_home(path: PathBuf) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => match directories::BaseDirs::new() {
            Some(base) => base.home_dir().join(rest),
            None => path,
        },
        Err(_) => path,
    }
}

fn resolve_data_dir((dir, source): (PathBuf, Source)) -> Result<PathBuf, ConfigError> {
    let dir = expand_home(dir);
    if dir.as_os_str().is_empty() {
        return Err(bad("is empty", "a directory path").at(DATA_DIR, &source, ""));
    }
    std::path::absolute(&dir).map_err(|e| {
        bad(format!("cannot be made absolute: {e}"), "a directory path").at(
            DATA_DIR,
            &source,
            dir.display().to_string(),
        )
    })
}

fn check_count(
    setting: Setting,
    origin: &Source,
    count: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if count > max {
        return Err(ConfigError::TooMany {
            flag: setting.flag,
            origin: Box::new(origin.clone()),
            count,
            max,
        });
    }
    Ok(())
}

fn parse_list<T>(
    setting: Setting,
    origin: &Source,
    raw: &[String],
    max: usize,
    parse: fn(&str) -> Result<T, Bad>,
) -> Result<Vec<T>, ConfigError> {
    check_count(setting, origin, raw.len(), max)?;
    raw.iter()
        .map(|item| parse(item.trim()).map_err(|b| b.at(setting, origin, item.as_str())))
        .collect()
}

fn parse_multiaddr(raw: &str, example: &str) -> Result<Multiaddr, Bad> {
    let addr: Multiaddr = raw
        .parse()
        .map_err(|_| bad("is not a multiaddr", example))?;
    if addr.is_empty() {
        return Err(bad("is an empty multiaddr", example));
    }
    Ok(addr)
}

fn parse_listen(raw: &str) -> Result<Multiaddr, Bad> {
    let addr = parse_multiaddr(raw, LISTEN_EXAMPLE)?;
    check_listen(&addr)?;
    Ok(addr)
}

fn check_listen(addr: &Multiaddr) -> Result<(), Bad> {
    let mut parts = addr.iter();
    match parts.next() {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => match parts.next() {
            Some(Protocol::Tcp(_) | Protocol::Udp(_)) => {}
            _ => return Err(bad("has no port", LISTEN_EXAMPLE)),
        },
        // The in-memory transport, for in-process tests.
        Some(Protocol::Memory(_)) => {}
        _ => return Err(bad("does not start with an IP address", LISTEN_EXAMPLE)),
    }
    if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        return Err(bad(
            "carries a peer id, which a listen address cannot",
            LISTEN_EXAMPLE,
        ));
    }
    Ok(())
}

fn parse_bootstrap(raw: &str) -> Result<Multiaddr, Bad> {
    let addr = parse_multiaddr(raw, BOOTSTRAP_EXAMPLE)?;
    check_bootstrap(&addr)?;
    Ok(addr)
}

fn check_bootstrap(addr: &Multiaddr) -> Result<(), Bad> {
    let mut parts = addr.iter();
    match parts.next() {
        Some(
            Protocol::Ip4(_)
            | Protocol::Ip6(_)
            | Protocol::Dns(_)
            | Protocol::Dns4(_)
            | Protocol::Dns6(_),
        ) => match parts.next() {
            Some(Protocol::Tcp(_) | Protocol::Udp(_)) => {}
            _ => return Err(bad("has no port", BOOTSTRAP_EXAMPLE)),
        },
        // `/dnsaddr` resolves to full addresses through DNS TXT records.
        Some(Protocol::Dnsaddr(_) | Protocol::Memory(_)) => {}
        _ => {
            return Err(bad(
                "does not start with /ip4, /ip6, /dns, /dns4, /dns6 or /dnsaddr",
                BOOTSTRAP_EXAMPLE,
            ));
        }
    }
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            if PublicKey::from_peer_id(&peer).is_err() {
                return Err(bad(
                    format!("names peer {peer}, which is not an ed25519 key as membrane nodes use"),
                    "a membrane node's peer id, e.g. /p2p/12D3KooW…",
                ));
            }
            Ok(())
        }
        _ => Err(bad(
            "does not end in /p2p/<peer id>, and a bootstrap peer whose id is not known \
             cannot be dialled safely",
            BOOTSTRAP_EXAMPLE,
        )),
    }
}

fn parse_spaces(origin: &Source, raw: &[String]) -> Result<Vec<Space>, ConfigError> {
    let mut spaces = vec![Space::default_space()];
    for item in raw {
        let space: Space = item.trim().parse().map_err(|e| {
            bad(
                format!("is not a space name: {e}"),
                "1 to 64 bytes of [a-z0-9_-], e.g. climate-brief",
            )
            .at(SPACES, origin, item.as_str())
        })?;
        if !spaces.contains(&space) {
            spaces.push(space);
        }
    }
    check_count(SPACES, origin, spaces.len(), MAX_SPACES)?;
    Ok(spaces)
}

/// Checks an agent's name and capabilities as `register` gives them, with the same rules
/// as the flags; the message names the bad value and what was expected.
pub(crate) fn check_agent(name: &str, caps: &[Capability]) -> Result<(), String> {
    check_name(name)
        .map_err(|b| format!("name {name:?} {} (expected {})", b.problem, b.expected))?;
    if caps.len() > MAX_CAPABILITIES {
        return Err(format!(
            "{} capabilities given (expected at most {MAX_CAPABILITIES})",
            caps.len()
        ));
    }
    for (i, cap) in caps.iter().enumerate() {
        check_capability(cap, &caps[..i]).map_err(|b| {
            format!(
                "capability {:?} {} (expected {})",
                cap.name, b.problem, b.expected
            )
        })?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Bad> {
    let expected =
        format!("1 to {MAX_NAME_BYTES} bytes without control characters, e.g. researcher");
    if name.is_empty() {
        return Err(bad("is empty", expected));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(format!("is {} bytes long", name.len()), expected));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains a control character", expected));
    }
    Ok(())
}

/// `NAME[=DESCRIPTION]`, checked later with the rest.
fn parse_capability_flag(raw: &str) -> Capability {
    match raw.split_once('=') {
        Some((name, description)) => Capability {
            name: name.trim().to_owned(),
            description: description.trim().to_owned(),
        },
        None => Capability {
            name: raw.trim().to_owned(),
            description: String::new(),
        },
    }
}

/// Checks the number of capabilities, then each one.
fn check_capabilities(caps: &[Capability], origin: &Source) -> Result<(), ConfigError> {
    check_count(CAPABILITIES, origin, caps.len(), MAX_CAPABILITIES)?;
    for (i, cap) in caps.iter().enumerate() {
        let shown = if cap.description.is_empty() {
            cap.name.clone()
        } else {
            format!("{}={}", cap.name, cap.description)
        };
        check_capability(cap, &caps[..i]).map_err(|b| b.at(CAPABILITIES, origin, shown))?;
    }
    Ok(())
}

fn check_capability(cap: &Capability, earlier: &[Capability]) -> Result<(), Bad> {
    let name_expected = format!(
        "a name of 1 to {MAX_NAME_BYTES} bytes of [a-z0-9_-], e.g. fact_check=Checks claims"
    );
    if cap.name.is_empty() {
        return Err(bad("has an empty name", name_expected));
    }
    if cap.name.len() > MAX_NAME_BYTES {
        let problem = format!("has a name of {} bytes", cap.name.len());
        return Err(bad(problem, name_expected));
    }
    if let Some(c) = cap
        .name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        return Err(bad(format!("has {c:?} in its name"), name_expected));
    }
    if cap.description.len() > MAX_DESCRIPTION_BYTES {
        let problem = format!("has a description of {} bytes", cap.description.len());
        let expected = format!("a description of at most {MAX_DESCRIPTION_BYTES} bytes");
        return Err(bad(problem, expected));
    }
    if earlier.iter().any(|e| e.name == cap.name) {
        return Err(bad("repeats a capability name", "each capability once"));
    }
    Ok(())
}

/// The budget flags: none without `--budget-tokens`; window and action only refine it.
fn resolve_budget(
    args: &NodeArgs,
    env: &Env<'_>,
    file: Option<&LoadedFile>,
) -> Result<Option<BudgetConfig>, ConfigError> {
    let number = |setting: Setting, at: &Source, raw: String| {
        raw.trim().parse::<u64>().map_err(|_| {
            bad("is not a whole number", "e.g. 200000 (or 0 for the window)").at(setting, at, raw)
        })
    };
    let Some((raw, at)) = flag(&args.budget_tokens)
        .or_else(|| env.get(BUDGET_TOKENS))
        .or_else(|| {
            in_file(file, BUDGET_TOKENS, |c| {
                c.budget_tokens.map(|v| v.to_string())
            })
        })
    else {
        return Ok(None);
    };
    let tokens = number(BUDGET_TOKENS, &at, raw)?;
    let mut budget = BudgetConfig {
        tokens,
        window_secs: DEFAULT_BUDGET_WINDOW_SECS,
        action: BudgetAction::Halt,
    };
    if let Some((raw, at)) = flag(&args.budget_window).or_else(|| {
        in_file(file, BUDGET_WINDOW, |c| {
            c.budget_window_secs.map(|v| v.to_string())
        })
    }) {
        budget.window_secs = number(BUDGET_WINDOW, &at, raw)?;
    }
    if let Some((raw, at)) = flag(&args.budget_action)
        .or_else(|| in_file(file, BUDGET_ACTION, |c| c.budget_action.clone()))
    {
        budget.action = match raw.trim() {
            "halt" => BudgetAction::Halt,
            "warn" => BudgetAction::Warn,
            _ => {
                return Err(bad("is not a budget action", "halt or warn").at(
                    BUDGET_ACTION,
                    &at,
                    raw,
                ));
            }
        };
    }
    Ok(Some(budget))
}

/// The direct-message flags, each refining the default policy.
fn resolve_direct(args: &NodeArgs, file: Option<&LoadedFile>) -> Result<DirectPolicy, ConfigError> {
    let mut policy = DirectPolicy::default();
    if let Some((raw, at)) = flag(&args.direct_accept)
        .or_else(|| in_file(file, DIRECT_ACCEPT, |c| c.direct_accept.clone()))
    {
        policy.accept = raw.parse::<DirectAccept>().map_err(|problem| {
            bad(problem, "open or trusted").at(DIRECT_ACCEPT, &at, raw.as_str())
        })?;
    }
    if let Some((raw, at)) = flag(&args.direct_max_bytes).or_else(|| {
        in_file(file, DIRECT_MAX_BYTES, |c| {
            c.direct_max_bytes.map(|v| v.to_string())
        })
    }) {
        let expected = format!("a whole number from 1 to {}", policy.max_message_bytes);
        policy.max_message_bytes = raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=policy.max_message_bytes).contains(n))
            .ok_or_else(|| {
                bad("is not a byte limit", expected).at(DIRECT_MAX_BYTES, &at, raw.as_str())
            })?;
    }
    if let Some((raw, at)) = flag(&args.direct_rate)
        .or_else(|| in_file(file, DIRECT_RATE, |c| c.direct_rate.map(|v| v.to_string())))
    {
        let rate = raw
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                bad(
                    "is not a rate",
                    "a whole number of messages a minute, at least 1, e.g. 10",
                )
                .at(DIRECT_RATE, &at, raw.as_str())
            })?;
        policy.per_minute = rate;
        policy.burst = rate.min(DIRECT_BURST);
    }
    Ok(policy)
}

fn parse_threshold(raw: &str) -> Result<Score, Bad> {
    let expected = "a number from 0 to 1, e.g. 0.5";
    let value: f64 = raw
        .trim()
        .parse()
        .map_err(|_| bad("is not a number", expected))?;
    Score::from_f64(value).map_err(|_| bad("is out of range", expected))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn args_in(dir: &Path) -> NodeArgs {
        NodeArgs {
            data_dir: Some(dir.to_owned()),
            ..NodeArgs::default()
        }
    }

    fn peer(seed: u8) -> String {
        membrane_protocol::Keypair::from_seed(&[seed; 32])
            .public()
            .to_string()
    }

    fn boot(seed: u8) -> String {
        format!("/ip4/10.0.0.{seed}/tcp/4001/p2p/{}", peer(seed))
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join(CONFIG_FILE_NAME);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn err_of(args: &NodeArgs, env: &dyn Fn(&str) -> Option<String>) -> ConfigError {
        NodeConfig::resolve(args, env).unwrap_err()
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.data_dir, dir.path());
        assert_eq!(config.config_file, None);
        assert_eq!(config.listen, vec![addr("/ip4/127.0.0.1/tcp/0")]);
        assert_eq!(config.api, "127.0.0.1:7420".parse().unwrap());
        assert!(!config.api_allow_remote);
        assert!(config.bootstrap.is_empty());
        assert_eq!(config.spaces, vec![Space::default_space()]);
        assert_eq!(config.name, "agent");
        assert!(config.capabilities.is_empty());
        assert!(!config.kad_server && !config.mdns);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.trust_threshold, Score::DEFAULT_THRESHOLD);
        NodeConfig::new(dir.path().to_owned()).validate().unwrap();
    }

    #[test]
    fn without_a_data_dir_the_platform_one_is_used() {
        // Only meaningful where the platform has one (a home directory).
        if let Ok(expected) = platform_data_dir() {
            let config = NodeConfig::resolve(&NodeArgs::default(), &no_env);
            // The platform dir may hold a real membrane.toml; only check the dir itself.
            if let Ok(config) = config {
                assert_eq!(config.data_dir, expected);
            }
        }
    }

    #[test]
    fn default_listen_matches_its_documented_text() {
        assert_eq!(NodeConfig::default_listen(false), addr(DEFAULT_LISTEN));
        assert_eq!(NodeConfig::default_listen(true), addr(DEFAULT_LISTEN_MDNS));
    }

    #[test]
    fn mdns_widens_the_default_listen_address_only() {
        let dir = tempfile::tempdir().unwrap();
        let args = NodeArgs {
            mdns: true,
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.listen, vec![addr("/ip4/0.0.0.0/tcp/0")]);

        let args = NodeArgs {
            listen: vec!["/ip4/127.0.0.1/tcp/9".into()],
            ..args
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.listen, vec![addr("/ip4/127.0.0.1/tcp/9")]);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"
                name = "from-file"
                api = "127.0.0.1:1003"
                listen = ["/ip4/127.0.0.1/tcp/1003"]
                log_format = "json"
                bootstrap = ["/ip4/10.0.0.3/tcp/4001/p2p/PEER3"]
            "#
            .replace("PEER3", &peer(3))
            .as_str(),
        );
        let full_env = env_of(&[
            (ENV_NAME, "from-env"),
            (ENV_API_ADDR, "127.0.0.1:1002"),
            (ENV_LISTEN, "/ip4/127.0.0.1/tcp/1002"),
            (ENV_LOG_FORMAT, "text"),
            (ENV_BOOTSTRAP, &boot(2)),
        ]);
        let flags = NodeArgs {
            name: Some("from-flag".into()),
            api: Some("127.0.0.1:1001".into()),
            listen: vec!["/ip4/127.0.0.1/tcp/1001".into()],
            log_format: Some("json".into()),
            bootstrap: vec![boot(1)],
            ..args_in(dir.path())
        };

        let config = NodeConfig::resolve(&flags, &full_env).unwrap();
        assert_eq!(config.name, "from-flag");
        assert_eq!(config.api.port(), 1001);
        assert_eq!(config.listen, vec![addr("/ip4/127.0.0.1/tcp/1001")]);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.bootstrap, vec![addr(&boot(1))]);

        let config = NodeConfig::resolve(&args_in(dir.path()), &full_env).unwrap();
        assert_eq!(config.name, "from-env");
        assert_eq!(config.api.port(), 1002);
        assert_eq!(config.listen, vec![addr("/ip4/127.0.0.1/tcp/1002")]);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.bootstrap, vec![addr(&boot(2))]);

        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.name, "from-file");
        assert_eq!(config.api.port(), 1003);
        assert_eq!(config.listen, vec![addr("/ip4/127.0.0.1/tcp/1003")]);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.bootstrap, vec![addr(&boot(3))]);
        assert_eq!(config.config_file, Some(dir.path().join(CONFIG_FILE_NAME)));

        let empty = tempfile::tempdir().unwrap();
        let config = NodeConfig::resolve(&args_in(empty.path()), &no_env).unwrap();
        assert_eq!(config.name, "agent");
        assert_eq!(config.api.port(), 7420);
    }

    #[test]
    fn data_dir_flag_beats_env_and_env_is_used() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let env = env_of(&[(ENV_DATA_DIR, b.path().to_str().unwrap())]);
        let config = NodeConfig::resolve(&args_in(a.path()), &env).unwrap();
        assert_eq!(config.data_dir, a.path());
        let config = NodeConfig::resolve(&NodeArgs::default(), &env).unwrap();
        assert_eq!(config.data_dir, b.path());
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[(ENV_NAME, ""), (ENV_LISTEN, " "), (ENV_API_ADDR, "")]);
        let config = NodeConfig::resolve(&args_in(dir.path()), &env).unwrap();
        assert_eq!(config.name, "agent");
        assert_eq!(config.listen, vec![addr(DEFAULT_LISTEN)]);
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[
            (ENV_LISTEN, "/ip4/127.0.0.1/tcp/1, /ip6/::1/tcp/2,,"),
            (ENV_BOOTSTRAP, &format!("{},{}", boot(1), boot(2))),
        ]);
        let config = NodeConfig::resolve(&args_in(dir.path()), &env).unwrap();
        assert_eq!(
            config.listen,
            vec![addr("/ip4/127.0.0.1/tcp/1"), addr("/ip6/::1/tcp/2")]
        );
        assert_eq!(config.bootstrap, vec![addr(&boot(1)), addr(&boot(2))]);
    }

    #[test]
    fn flags_parse_repeated_and_comma_separated() {
        let cli = Cli::try_parse_from([
            "membrane",
            "--listen",
            "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
            "--listen",
            "/ip4/127.0.0.1/tcp/3",
            "--space",
            "a,b",
            "--space",
            "c",
            "--capability",
            "fact_check=Checks claims, cites sources",
            "--mdns",
            "--kad-server",
            "--api-allow-remote",
            "--trust-threshold",
            "0.7",
        ])
        .unwrap();
        let args = cli.node;
        assert_eq!(args.listen.len(), 3);
        assert_eq!(args.spaces, vec!["a", "b", "c"]);
        assert_eq!(
            args.capabilities,
            vec!["fact_check=Checks claims, cites sources"]
        );
        assert!(args.mdns && args.kad_server && args.api_allow_remote);
        assert_eq!(args.trust_threshold.as_deref(), Some("0.7"));
    }

    #[test]
    fn clap_rejects_an_unknown_log_format_naming_the_flag() {
        let err = Cli::try_parse_from(["membrane", "--log-format", "xml"]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("--log-format"), "{message}");
        assert!(
            message.contains("text") && message.contains("json"),
            "{message}"
        );
    }

    #[test]
    fn default_space_is_always_present_and_spaces_are_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let args = NodeArgs {
            spaces: vec![
                "climate-brief".into(),
                "default".into(),
                "climate-brief".into(),
            ],
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        let names: Vec<String> = config.spaces.iter().map(ToString::to_string).collect();
        assert_eq!(names, vec!["default", "climate-brief"]);

        let mut broken = config.clone();
        broken.spaces.remove(0);
        let err = broken.validate().unwrap_err();
        assert_eq!(err.flag(), Some("--space"));
        broken.spaces = vec![Space::default_space(), Space::default_space()];
        assert_eq!(broken.validate().unwrap_err().flag(), Some("--space"));
    }

    #[test]
    fn capability_flags_split_at_the_first_equals_sign() {
        let dir = tempfile::tempdir().unwrap();
        let args = NodeArgs {
            capabilities: vec!["fact_check=Checks claims: a=b".into(), "summarize".into()],
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(
            config.capabilities,
            vec![
                Capability {
                    name: "fact_check".into(),
                    description: "Checks claims: a=b".into()
                },
                Capability {
                    name: "summarize".into(),
                    description: String::new()
                },
            ]
        );
    }

    #[test]
    fn file_capabilities_as_a_table_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            "[capabilities]\nfact_check = \"Checks claims\"\nsummarize = \"\"\n",
        );
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        let names: Vec<&str> = config
            .capabilities
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, vec!["fact_check", "summarize"]);
        assert_eq!(config.capabilities[0].description, "Checks claims");

        write_config(
            dir.path(),
            "capabilities = [{ name = \"translate\", description = \"en-fr\" }, { name = \"x\" }]\n",
        );
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.capabilities.len(), 2);
        assert_eq!(config.capabilities[0].description, "en-fr");
        assert_eq!(config.capabilities[1].description, "");

        // Flags replace the file's list.
        let args = NodeArgs {
            capabilities: vec!["search".into()],
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.capabilities.len(), 1);
        assert_eq!(config.capabilities[0].name, "search");
    }

    #[test]
    fn a_full_file_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
            listen = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
            api = "127.0.0.1:7421"
            api_allow_remote = false
            bootstrap = ["/dns4/boot.example.org/tcp/4001/p2p/{p}"]
            spaces = ["climate-brief"]
            name = "researcher"
            kad_server = true
            mdns = true
            log_format = "json"
            trust_threshold = 1

            [capabilities]
            fact_check = "Checks claims"
            "#,
            p = peer(1)
        );
        write_config(dir.path(), &text);
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.api.port(), 7421);
        assert_eq!(config.bootstrap.len(), 1);
        assert_eq!(config.spaces.len(), 2);
        assert_eq!(config.name, "researcher");
        assert!(config.kad_server && config.mdns);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.trust_threshold, Score::ONE);
        assert_eq!(config.capabilities.len(), 1);
    }

    #[test]
    fn explicit_config_file_and_its_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("etc");
        std::fs::create_dir(&conf_dir).unwrap();
        let file = conf_dir.join("node.toml");
        std::fs::write(&file, "data_dir = \"../data\"\nname = \"x\"\n").unwrap();

        let args = NodeArgs {
            config: Some(file.clone()),
            ..NodeArgs::default()
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.data_dir, conf_dir.join("../data"));
        assert_eq!(config.name, "x");
        assert_eq!(config.config_file, Some(file.clone()));

        // MEMBRANE_CONFIG works the same; --data-dir still beats the file's data_dir.
        let env = env_of(&[(ENV_CONFIG, file.to_str().unwrap())]);
        let config = NodeConfig::resolve(&args_in(dir.path()), &env).unwrap();
        assert_eq!(config.data_dir, dir.path());
        assert_eq!(config.name, "x");

        // A missing explicit file is an error, not a silent default.
        let args = NodeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..NodeArgs::default()
        };
        let err = err_of(&args, &no_env);
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn a_file_found_in_the_data_dir_cannot_move_it() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "data_dir = \"/somewhere/else\"\n");
        let err = err_of(&args_in(dir.path()), &no_env);
        assert_eq!(err.flag(), Some("--data-dir"));
        assert!(err.to_string().starts_with("data_dir in "), "{err}");

        write_config(dir.path(), "data_dir = \".\"\n");
        NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
    }

    #[test]
    fn unknown_file_key_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "name = \"a\"\nlisten_addr = [\"/ip4/1.2.3.4/tcp/1\"]\n",
        );
        let err = err_of(&args_in(dir.path()), &no_env);
        let message = err.to_string();
        assert!(matches!(err, ConfigError::File { .. }), "{message}");
        assert!(message.contains("listen_addr"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_file_of_the_wrong_type_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "mdns = \"yes\"\n");
        let message = err_of(&args_in(dir.path()), &no_env).to_string();
        assert!(message.contains("line 1 `mdns = \"yes\"`"), "{message}");
        assert!(message.contains("bool"), "{message}");
    }

    #[test]
    fn every_invalid_flag_value_names_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = peer(1);
        let rsa = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN";
        let many =
            |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(",");
        // (flag, value, what the message must say)
        let cases = [
            ("--listen", "/ip4/1.2.3".to_owned(), "is not a multiaddr"),
            ("--listen", "/ip4/1.2.3.4".into(), "has no port"),
            ("--listen", boot(1), "peer id"),
            ("--listen", "/dns4/a.example/tcp/1".into(), "IP address"),
            (
                "--listen",
                many(17, &|i| format!("/ip4/127.0.0.1/tcp/{i}")),
                "at most 16",
            ),
            ("--api", "7420".into(), "is not a socket address"),
            ("--api", "localhost:7420".into(), "is not a socket address"),
            ("--api", "0.0.0.0:7420".into(), "--api-allow-remote"),
            ("--bootstrap", "nonsense".into(), "is not a multiaddr"),
            (
                "--bootstrap",
                "/ip4/10.0.0.1/tcp/4001".into(),
                "/p2p/<peer id>",
            ),
            (
                "--bootstrap",
                format!("/ip4/10.0.0.1/p2p/{p}"),
                "has no port",
            ),
            ("--bootstrap", format!("/p2p/{p}"), "does not start with"),
            (
                "--bootstrap",
                format!("/ip4/10.0.0.1/tcp/1/p2p/{rsa}"),
                "not an ed25519 key",
            ),
            (
                "--bootstrap",
                many(65, &|i| format!("/ip4/10.0.0.1/tcp/{i}/p2p/{p}")),
                "at most 64",
            ),
            ("--space", "Climate".into(), "is not a space name"),
            ("--space", "a.b".into(), "is not a space name"),
            ("--space", many(64, &|i| format!("s{i}")), "at most 64"),
            ("--name", "n".repeat(65), "65 bytes"),
            ("--name", "a\nb".into(), "control character"),
            ("--capability", "Fact Check=x".into(), "in its name"),
            ("--capability", "=x".into(), "empty name"),
            ("--capability", "c".repeat(65), "65 bytes"),
            (
                "--capability",
                format!("c={}", "d".repeat(257)),
                "257 bytes",
            ),
            ("--trust-threshold", "high".into(), "is not a number"),
            ("--trust-threshold", "1.5".into(), "out of range"),
            ("--trust-threshold", "NaN".into(), "out of range"),
        ];
        for (flag, value, detail) in cases {
            let data_dir = dir.path().to_str().unwrap();
            let cli = Cli::try_parse_from(["membrane", "--data-dir", data_dir, flag, &value]);
            let err = err_of(&cli.unwrap().node, &no_env);
            let message = err.to_string();
            assert_eq!(err.flag(), Some(flag), "{message}");
            assert!(message.starts_with(&format!("{flag}:")), "{message}");
            assert!(message.contains(detail), "{flag}: {message}");
            assert!(message.contains("expected"), "{message}");
        }

        // Values clap cannot produce, or that need several flags.
        let base = args_in(dir.path());
        let cases = [
            (
                "--name",
                NodeArgs {
                    name: Some(String::new()),
                    ..base.clone()
                },
                "is empty",
            ),
            (
                "--capability",
                NodeArgs {
                    capabilities: many(33, &|i| format!("c{i}"))
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                    ..base.clone()
                },
                "at most 32",
            ),
            (
                "--capability",
                NodeArgs {
                    capabilities: vec!["c=1".into(), "c=2".into()],
                    ..base.clone()
                },
                "repeats",
            ),
            (
                "--log-format",
                NodeArgs {
                    log_format: Some("xml".into()),
                    ..base.clone()
                },
                "text or json",
            ),
            (
                "--data-dir",
                NodeArgs {
                    data_dir: Some(PathBuf::new()),
                    ..base.clone()
                },
                "is empty",
            ),
            (
                "--config",
                NodeArgs {
                    config: Some(PathBuf::new()),
                    ..base.clone()
                },
                "is empty",
            ),
        ];
        for (flag, args, detail) in cases {
            let err = err_of(&args, &no_env);
            let message = err.to_string();
            assert_eq!(err.flag(), Some(flag), "{message}");
            assert!(message.starts_with(&format!("{flag}:")), "{message}");
            assert!(message.contains(detail), "{flag}: {message}");
        }
    }

    #[test]
    fn intent_settings_come_from_flags_or_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.intents, IntentConfig::default());
        write_config(
            dir.path(),
            "intent_quorum = 5\nintent_half_life_secs = 300\nintent_swarms = true\n",
        );
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(
            config.intents,
            IntentConfig {
                quorum: 5,
                half_life_secs: 300,
                swarms: true
            }
        );
        let args = NodeArgs {
            intent_quorum: Some("2".into()),
            ..args_in(dir.path())
        };
        assert_eq!(
            NodeConfig::resolve(&args, &no_env).unwrap().intents.quorum,
            2
        );
        for (args, flag) in [
            (
                NodeArgs {
                    intent_quorum: Some("0".into()),
                    ..args_in(dir.path())
                },
                "--intent-quorum",
            ),
            (
                NodeArgs {
                    intent_half_life: Some("soon".into()),
                    ..args_in(dir.path())
                },
                "--intent-half-life",
            ),
        ] {
            let err = err_of(&args, &no_env);
            assert_eq!(err.flag(), Some(flag), "{err}");
        }
    }

    #[test]
    fn a_bad_listen_flag_reads_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let args = NodeArgs {
            listen: vec!["/ip4/1.2.3".into()],
            ..args_in(dir.path())
        };
        assert_eq!(
            err_of(&args, &no_env).to_string(),
            "--listen: \"/ip4/1.2.3\" is not a multiaddr (expected e.g. /ip4/127.0.0.1/tcp/4001)"
        );
    }

    #[test]
    fn env_and_file_errors_say_where_the_value_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[(ENV_LISTEN, "/ip4/127.0.0.1/tcp/1,bogus")]);
        let message = err_of(&args_in(dir.path()), &env).to_string();
        assert!(
            message.starts_with("MEMBRANE_LISTEN (--listen): \"bogus\""),
            "{message}"
        );

        let env = env_of(&[(ENV_API_ADDR, "nowhere")]);
        let message = err_of(&args_in(dir.path()), &env).to_string();
        assert!(
            message.starts_with("MEMBRANE_API_ADDR (--api):"),
            "{message}"
        );

        let path = write_config(dir.path(), "bootstrap = [\"/ip4/10.0.0.1/tcp/4001\"]\n");
        let err = err_of(&args_in(dir.path()), &no_env);
        assert_eq!(err.flag(), Some("--bootstrap"));
        let message = err.to_string();
        let expected = format!("bootstrap in {} (--bootstrap):", path.display());
        assert!(message.starts_with(&expected), "{message}");

        write_config(dir.path(), "trust_threshold = -0.1\n");
        let message = err_of(&args_in(dir.path()), &no_env).to_string();
        assert!(message.starts_with("trust_threshold in "), "{message}");
        assert!(message.contains("0 to 1"), "{message}");
    }

    #[test]
    fn a_remote_api_needs_the_allow_remote_switch() {
        let dir = tempfile::tempdir().unwrap();
        let remote = NodeArgs {
            api: Some("0.0.0.0:7420".into()),
            ..args_in(dir.path())
        };
        let err = err_of(&remote, &no_env);
        assert!(matches!(err, ConfigError::RemoteApi { .. }));
        let message = err.to_string();
        assert!(
            message.contains("--api") && message.contains("--api-allow-remote"),
            "{message}"
        );

        let allowed = NodeArgs {
            api_allow_remote: true,
            ..remote.clone()
        };
        let config = NodeConfig::resolve(&allowed, &no_env).unwrap();
        assert_eq!(config.api, "0.0.0.0:7420".parse().unwrap());

        write_config(dir.path(), "api_allow_remote = true\n");
        NodeConfig::resolve(&remote, &no_env).unwrap();

        let ipv6_loopback = NodeArgs {
            api: Some("[::1]:7420".into()),
            ..NodeArgs::default()
        };
        let other = tempfile::tempdir().unwrap();
        let ipv6_loopback = NodeArgs {
            data_dir: Some(other.path().to_owned()),
            ..ipv6_loopback
        };
        NodeConfig::resolve(&ipv6_loopback, &no_env).unwrap();

        let mut config = NodeConfig::new(other.path().to_owned());
        config.api = "192.168.1.5:7420".parse().unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::RemoteApi { .. })
        ));
    }

    #[test]
    fn dns_bootstrap_addresses_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let p = peer(9);
        let bootstrap = vec![
            format!("/dns/boot.example.org/tcp/4001/p2p/{p}"),
            format!("/dns4/boot.example.org/tcp/4001/p2p/{p}"),
            format!("/dns6/boot.example.org/tcp/4001/p2p/{p}"),
            format!("/dnsaddr/boot.example.org/p2p/{p}"),
            format!("/ip6/::1/tcp/4001/p2p/{p}"),
        ];
        let args = NodeArgs {
            bootstrap: bootstrap.clone(),
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.bootstrap.len(), bootstrap.len());
    }

    #[test]
    fn validate_catches_what_code_can_build() {
        let err = NodeConfig::default().validate().unwrap_err();
        assert_eq!(err.flag(), Some("--data-dir"));

        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path().to_owned());
        config.bootstrap = vec![addr("/ip4/10.0.0.1/tcp/4001")];
        let message = config.validate().unwrap_err().to_string();
        assert!(message.starts_with("--bootstrap: "), "{message}");
        assert!(message.contains("/p2p/<peer id>"), "{message}");

        let mut config = NodeConfig::new(dir.path().to_owned());
        config.name = String::new();
        assert_eq!(config.validate().unwrap_err().flag(), Some("--name"));

        // Memory addresses serve in-process tests.
        let mut config = NodeConfig::new(dir.path().to_owned());
        config.listen = vec![addr("/memory/0")];
        config.bootstrap = vec![addr(&format!("/memory/7/p2p/{}", peer(1)))];
        config.validate().unwrap();
    }

    #[test]
    fn space_budgets_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_in(dir.path());
        args.spaces = vec!["climate-brief".into(), "ops".into()];
        args.space_budgets = vec!["climate-brief=50000/60/warn".into(), "ops=900".into()];
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        let climate: Space = "climate-brief".parse().unwrap();
        let ops: Space = "ops".parse().unwrap();
        assert_eq!(
            config.space_budgets.get(&climate),
            Some(&BudgetConfig {
                tokens: 50_000,
                window_secs: 60,
                action: BudgetAction::Warn
            })
        );
        assert_eq!(
            config.space_budgets.get(&ops),
            Some(&BudgetConfig {
                tokens: 900,
                window_secs: DEFAULT_BUDGET_WINDOW_SECS,
                action: BudgetAction::Halt
            })
        );

        // The same from a file.
        write_config(
            dir.path(),
            "spaces = [\"ops\"]\n[space_budgets.ops]\ntokens = 70\naction = \"warn\"\n",
        );
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(
            config.space_budgets.get(&ops),
            Some(&BudgetConfig {
                tokens: 70,
                window_secs: DEFAULT_BUDGET_WINDOW_SECS,
                action: BudgetAction::Warn
            })
        );

        // Bad values name the flag, the value and what was expected.
        for (raw, says) in [
            ("ops", "has no `=`"),
            ("ops=lots", "not a whole number"),
            ("ops=5/60/maybe", "is not a budget action"),
            ("Ops!=5", "does not name a space"),
            ("ops=5/60/warn/x", "more than three parts"),
        ] {
            let mut args = args_in(dir.path());
            args.space_budgets = vec![raw.into()];
            let message = err_of(&args, &no_env).to_string();
            assert!(message.starts_with("--space-budget"), "{message}");
            assert!(message.contains(says), "{raw}: {message}");
        }
        // A budget for a space the node does not join is a typo, not silence.
        let mut args = args_in(dir.path());
        args.space_budgets = vec!["elsewhere=5".into()];
        let message = err_of(&args, &no_env).to_string();
        assert!(
            message.contains("is not a space this node joins"),
            "{message}"
        );
        assert!(message.contains("default,ops"), "{message}");
    }

    #[test]
    fn direct_message_flags_and_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.direct, DirectPolicy::default());

        let args = NodeArgs {
            direct_accept: Some("trusted".into()),
            direct_max_bytes: Some("4096".into()),
            direct_rate: Some("3".into()),
            ..args_in(dir.path())
        };
        let config = NodeConfig::resolve(&args, &no_env).unwrap();
        assert_eq!(config.direct.accept, DirectAccept::Trusted);
        assert_eq!(config.direct.max_message_bytes, 4096);
        assert_eq!((config.direct.per_minute, config.direct.burst), (3, 3));

        // From a file; a rate above the burst cap keeps the cap.
        write_config(
            dir.path(),
            "direct_accept = \"open\"\ndirect_max_bytes = 100\ndirect_rate = 120\n",
        );
        let config = NodeConfig::resolve(&args_in(dir.path()), &no_env).unwrap();
        assert_eq!(config.direct.max_message_bytes, 100);
        assert_eq!(
            (config.direct.per_minute, config.direct.burst),
            (120, DIRECT_BURST)
        );

        for (args, flag) in [
            (
                NodeArgs {
                    direct_max_bytes: Some("16385".into()),
                    ..args_in(dir.path())
                },
                "--direct-max-bytes",
            ),
            (
                NodeArgs {
                    direct_max_bytes: Some("0".into()),
                    ..args_in(dir.path())
                },
                "--direct-max-bytes",
            ),
            (
                NodeArgs {
                    direct_rate: Some("0".into()),
                    ..args_in(dir.path())
                },
                "--direct-rate",
            ),
            (
                NodeArgs {
                    direct_accept: Some("closed".into()),
                    ..args_in(dir.path())
                },
                "--direct-accept",
            ),
        ] {
            let err = err_of(&args, &no_env);
            assert_eq!(err.flag(), Some(flag), "{err}");
        }
    }
}
