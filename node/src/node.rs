//! The node's public face: [`Node::spawn`] starts the event loop, and a cloneable
//! [`NodeHandle`] talks to it with bounded commands and oneshot replies (the handle-plus-
//! actor shape of rust-libp2p's file-sharing example). Only our own types cross here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use membrane_crdt::intents::TopicView;
use membrane_crdt::{Draft, Event, EventKind, Exposed, Filter, QueryAnswer, SearchAnswer, Storage};
use membrane_immune::{AuditEvent, AuditRecord, Override};
use membrane_protocol::cost::TokenCounter;
use membrane_protocol::permeability::Reader;
use membrane_protocol::signals::{Capability, ThreatSignal};
use membrane_protocol::{EnvelopeId, Key, Keypair, Pattern, PublicKey, Score, Space};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::budget::Meter;
use crate::immune::{AuditPage, ImmuneReport};
use crate::network::{DirectPolicy, Refusal, TransportKind};

/// Commands waiting for the event loop, at most.
pub const COMMAND_CAPACITY: usize = 256;
/// Events buffered for each subscriber; a slower subscriber misses the oldest.
pub const EVENT_CAPACITY: usize = 4096;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Its identity.
    pub keypair: Keypair,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and redial while disconnected).
    pub bootstrap: Vec<Multiaddr>,
    /// Spaces to join (the default space is always joined).
    pub spaces: Vec<Space>,
    /// The agent's name, in its capability ad.
    pub name: String,
    /// The agent's capabilities.
    pub capabilities: Vec<Capability>,
    /// Run Kademlia in server mode.
    pub kad_server: bool,
    /// Relay connections for nodes behind NAT (public bootstrap nodes).
    pub relay_server: bool,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// A light node for large simulations: gossipsub, sync, ping and the limits only, no
    /// Kademlia, identify, AutoNAT, DCUtR, relay or mDNS (it meets only the peers it dials
    /// and those that dial it). Overrides `kad_server`, `relay_server` and `mdns`.
    pub light: bool,
    /// TCP or in-process memory.
    pub transport: TransportKind,
    /// How often to resync with every connected peer.
    pub anti_entropy: Duration,
    /// The medium's own configuration.
    pub medium: membrane_crdt::Config,
    /// Where to write `node.json` when ready, if anywhere.
    pub data_dir: Option<PathBuf>,
    /// The agent API's address, for `node.json` (the API itself is served by the binary).
    pub api: Option<String>,
    /// Quorum sensing over intent signals.
    pub intents: membrane_crdt::intents::Config,
    /// Form a swarm around a topic whose intents reach a quorum (and dissolve it when
    /// they decay below).
    pub intent_swarms: bool,
    /// The immune layer's settings (reputation, detectors, quorum, breakers).
    pub immune: membrane_immune::Config,
    /// Whom and how much the agent takes direct messages from.
    pub direct: DirectPolicy,
}

impl NodeOptions {
    /// Options for an in-process test or simulation node.
    pub fn memory(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            spaces: Vec::new(),
            name: "agent".into(),
            capabilities: Vec::new(),
            kad_server: true,
            relay_server: false,
            mdns: false,
            light: false,
            transport: TransportKind::Memory,
            anti_entropy: Duration::from_secs(30),
            medium: membrane_crdt::Config::default(),
            data_dir: None,
            api: None,
            intents: membrane_crdt::intents::Config::default(),
            intent_swarms: false,
            immune: membrane_immune::Config::default(),
            direct: DirectPolicy::default(),
        }
    }
}

/// What happened at the node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A listener is up on this address.
    Listening {
        /// The address, with `/p2p/<peer id>`.
        addr: String,
    },
    /// A peer connected.
    PeerConnected {
        /// Who.
        peer: PublicKey,
    },
    /// A peer's last connection closed.
    PeerDisconnected {
        /// Who.
        peer: PublicKey,
    },
    /// The medium integrated something (an exposed entry, a merge, a conflict, a
    /// rejection …).
    Medium(membrane_crdt::Event),
    /// A verified threat signal arrived (or this node published one).
    Threat {
        /// Who reported it.
        reporter: PublicKey,
        /// The report.
        signal: ThreatSignal,
    },
    /// The immune layer appended a record to the audit log (a threat detected or received,
    /// a quarantine, a ban, an operator's override, a pause …).
    Audit(AuditRecord),
}

/// What the node says about itself.
#[derive(Debug, Clone)]
pub struct Status {
    /// Its identity.
    pub peer: PublicKey,
    /// The agent's name.
    pub name: String,
    /// The agent's capabilities.
    pub capabilities: Vec<Capability>,
    /// Spaces joined.
    pub spaces: Vec<Space>,
    /// Listening addresses, with `/p2p/<peer id>`.
    pub listening: Vec<String>,
    /// Connected peers.
    pub peers: usize,
    /// When the node started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The newest event's sequence number.
    pub last_event: u64,
}

/// A connected peer and what its newest capability ad says, if one arrived.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Who.
    pub peer: PublicKey,
    /// The agent's name.
    pub name: Option<String>,
    /// Its capabilities.
    pub capabilities: Vec<Capability>,
    /// Spaces its ads came from.
    pub spaces: Vec<Space>,
}

/// One trust edge: `truster` trusts `trustee` this much.
pub type TrustEdgeView = (PublicKey, PublicKey, Score);

/// Sorts a medium error by whose fault it is.
pub(crate) fn medium_error<E: std::error::Error + 'static>(
    e: membrane_crdt::Error<E>,
) -> NodeError {
    use membrane_crdt::Error;
    match e {
        Error::UnknownSpace(space) => NodeError::UnknownSpace(space),
        Error::NotFound { .. } => NodeError::NotFound(e.to_string()),
        Error::Entry(_) | Error::Seal(_) | Error::SelfTrust => NodeError::Invalid(e.to_string()),
        other => NodeError::Internal(other.to_string()),
    }
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request breaks a rule of the medium (a limit, a bad tier, trusting oneself):
    /// the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The thing named does not exist (no entry of this agent under the key).
    #[error("{0}")]
    NotFound(String),
    /// The node failed (storage, a corrupt document); nothing was acknowledged.
    #[error("{0}")]
    Internal(String),
    /// The address could not be dialled.
    #[error("cannot dial {addr}: {detail}")]
    Dial {
        /// The address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The space is not one this node has joined.
    #[error("this node has not joined space {0} (join it first, or use one of its spaces)")]
    UnknownSpace(Space),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The operator paused every crossing in and out of this node.
    #[error(
        "this node is paused by its operator: nothing crosses in or out (queries, search, \
         writes, sync) until it is resumed (membrane resume)"
    )]
    Paused,
    /// A delegation circuit breaker refused: tasks routed there failed too often lately.
    #[error("{0}")]
    Blocked(membrane_immune::Blocked),
    /// No agent by this id is known: not connected, no capability ad or card, not in the
    /// DHT's routing table.
    #[error(
        "no agent {0} is known to this node (not connected, no capability card or ad, not in \
         the DHT); check the id with peers or discover"
    )]
    UnknownAgent(PublicKey),
    /// The agent is known but its node could not be reached.
    #[error("agent {peer} could not be reached: {detail}")]
    Unreachable {
        /// Who.
        peer: PublicKey,
        /// What failed.
        detail: String,
    },
    /// The agent's node did not answer in time; the message may or may not have arrived.
    #[error(
        "agent {peer} did not acknowledge within {secs} s; it may or may not have the message \
         (its node may be overloaded or stalled: try again later, or ask another agent)"
    )]
    Timeout {
        /// Who.
        peer: PublicKey,
        /// How long this node waited.
        secs: u64,
    },
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// A request for the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Expose(Space, Draft, Reply<Exposed>),
    Retract(Space, Key, Reply<EnvelopeId>),
    Trust(Space, PublicKey, Score, Reply<EnvelopeId>),
    Query(Space, Pattern, bool, Filter, Reply<QueryAnswer>),
    Search(Space, String, u32, Filter, Reply<SearchAnswer>),
    Join(Space, Reply<()>),
    Dial(Multiaddr, Reply<()>),
    Peers(Reply<Vec<PublicKey>>),
    Listening(Reply<Vec<String>>),
    FindProviders(String, Reply<Vec<PublicKey>>),
    Register(String, Vec<Capability>, Reply<()>),
    Broadcast(Space, String, Reply<EnvelopeId>),
    Intent(Space, String, Score, Reply<Vec<TopicView>>),
    Intents(Space, Reply<Vec<TopicView>>),
    Status(Reply<Status>),
    PeerInfos(Reply<Vec<PeerInfo>>),
    Trusts(Space, Reply<Vec<TrustEdgeView>>),
    EventsSince(u64, usize, Reply<Vec<Event>>),
    Coordination(Space, Reply<membrane_crdt::coord::Snapshot>),
    Verification(Space, EnvelopeId, usize, Reply<VerificationView>),
    Immune(usize, Reply<ImmuneReport>),
    Govern(Override, Reply<Vec<AuditRecord>>),
    Pause(bool, Option<String>, Reply<Vec<AuditRecord>>),
    Audit(u64, usize, Reply<AuditPage>),
    PublishThreat(ThreatSignal, Reply<()>),
    Governance(Governance),
    Send(Outgoing, Reply<Delivery>),
    FindEvents(EventFilter, usize, Reply<Vec<Event>>),
    Note(EventKind, Reply<u64>),
}

/// Governance requests of the API: what it audits, and the delegation breakers.
#[derive(Debug)]
pub(crate) enum Governance {
    /// Append these audit records (crossings, budget charges), not flushed, and log these
    /// events for the agent (budget warnings).
    Record(Vec<AuditEvent>, Vec<EventKind>, Reply<Vec<AuditRecord>>),
    /// Admit a delegation to an agent for a capability, taking a half-open trial, or say
    /// which breaker blocks it ([`NodeError::Blocked`]).
    Admit(PublicKey, String, Reply<()>),
    /// Whether a delegation would be admitted now, without taking a trial.
    Blocks(PublicKey, String, Reply<Option<membrane_immune::Blocked>>),
}

/// Selects events of the log.
pub(crate) struct EventFilter(pub(crate) Box<dyn Fn(&Event) -> bool + Send>);

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventFilter")
    }
}

/// A direct message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The agent it is for.
    pub to: PublicKey,
    /// The space whose rules it is judged by (both must have joined it).
    pub space: Space,
    /// The text.
    pub message: String,
    /// The earlier message it answers.
    pub reply_to: Option<EnvelopeId>,
    /// An entry it refers to.
    pub entry: Option<EnvelopeId>,
}

/// What the receiver said of a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id (replies name it).
    pub id: EnvelopeId,
    /// Who received it.
    pub to: PublicKey,
    /// Its tokens as the receiver counted them.
    pub tokens: u64,
    /// The receiver had it already (a retry), so it was not delivered twice.
    pub duplicate: bool,
    /// Set when the receiver refused it, with the reason.
    pub refused: Option<Refusal>,
}

impl Command {
    /// Answers a command that crosses the membrane with `e` (a pause). Any other command
    /// is dropped, which its caller sees as [`NodeError::Stopped`].
    pub(crate) fn refuse(self, e: NodeError) {
        match self {
            Command::Expose(.., r) => drop(r.send(Err(e))),
            Command::Intent(.., r) | Command::Intents(.., r) => drop(r.send(Err(e))),
            Command::Retract(.., r) | Command::Trust(.., r) | Command::Broadcast(.., r) => {
                drop(r.send(Err(e)));
            }
            Command::Query(.., r) => drop(r.send(Err(e))),
            Command::Search(.., r) => drop(r.send(Err(e))),
            Command::Coordination(.., r) => drop(r.send(Err(e))),
            Command::Verification(.., r) => drop(r.send(Err(e))),
            Command::Send(.., r) => drop(r.send(Err(e))),
            other => drop(other),
        }
    }
}

/// An entry's verdicts as this node's agent sees them, with the entry's owner.
pub type VerificationView = (membrane_crdt::coord::Verification, Option<PublicKey>);

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    id: PublicKey,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NodeEvent>,
    shutdown: mpsc::Sender<()>,
    metrics: crate::metrics::SharedRegistry,
    meter: Meter,
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node on the current tokio runtime over `storage`. Returns once it is
    /// listening on every requested address.
    pub async fn spawn<S>(
        options: NodeOptions,
        storage: S,
        tokens: Arc<dyn TokenCounter>,
    ) -> anyhow::Result<(NodeHandle, tokio::task::JoinHandle<()>)>
    where
        S: Storage + Send + 'static,
    {
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (shutdown, shutdown_rx) = mpsc::channel(1);
        let id = options.keypair.public();
        let registry = crate::metrics::SharedRegistry::new();
        let metrics = crate::metrics::NodeMetrics::register(&mut registry.lock());
        let meter = Meter::default();
        // Boxed: the service is large, and callers' futures would carry it inline.
        let service = Box::pin(crate::network::service::Service::new(
            options,
            metrics,
            storage,
            (tokens, meter.clone()),
            command_rx,
            shutdown_rx,
            events.clone(),
        ))
        .await?;
        let task = tokio::spawn(service.run());
        Ok((
            NodeHandle {
                id,
                commands,
                events,
                shutdown,
                metrics: registry,
                meter,
            },
            task,
        ))
    }
}

impl NodeHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// This node's identity.
    pub fn id(&self) -> &PublicKey {
        &self.id
    }

    /// The node's metrics registry (the API adds its own and serves it at `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::SharedRegistry {
        &self.metrics
    }

    /// The agent's token budget, shared with the API (which sets it and charges answers to
    /// it); the node charges the direct messages it accepts to it.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Follows the node's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Exposes an entry (acknowledged only once durable).
    pub async fn expose(&self, space: &Space, draft: Draft) -> Result<Exposed, NodeError> {
        self.call(|r| Command::Expose(space.clone(), draft, r))
            .await
    }

    /// Retracts this node's entry under `key`.
    pub async fn retract(&self, space: &Space, key: &Key) -> Result<EnvelopeId, NodeError> {
        self.call(|r| Command::Retract(space.clone(), key.clone(), r))
            .await
    }

    /// Publishes this node's trust in `peer`.
    pub async fn trust(
        &self,
        space: &Space,
        peer: PublicKey,
        score: Score,
    ) -> Result<EnvelopeId, NodeError> {
        self.call(|r| Command::Trust(space.clone(), peer, score, r))
            .await
    }

    /// Queries as this node's agent.
    pub async fn query(
        &self,
        space: &Space,
        pattern: &Pattern,
        include_expired: bool,
    ) -> Result<QueryAnswer, NodeError> {
        self.query_with(space, pattern, include_expired, Filter::default())
            .await
    }

    /// Queries as this node's agent, keeping only what `filter` admits (entry kinds,
    /// verified entries).
    pub async fn query_with(
        &self,
        space: &Space,
        pattern: &Pattern,
        include_expired: bool,
        filter: Filter,
    ) -> Result<QueryAnswer, NodeError> {
        self.call(|r| Command::Query(space.clone(), pattern.clone(), include_expired, filter, r))
            .await
    }

    /// Searches as this node's agent.
    pub async fn search(
        &self,
        space: &Space,
        text: &str,
        max_tokens: u32,
    ) -> Result<SearchAnswer, NodeError> {
        self.search_with(space, text, max_tokens, Filter::default())
            .await
    }

    /// Searches as this node's agent among the entries `filter` admits.
    pub async fn search_with(
        &self,
        space: &Space,
        text: &str,
        max_tokens: u32,
        filter: Filter,
    ) -> Result<SearchAnswer, NodeError> {
        self.call(|r| Command::Search(space.clone(), text.to_owned(), max_tokens, filter, r))
            .await
    }

    /// Joins a space.
    pub async fn join(&self, space: &Space) -> Result<(), NodeError> {
        self.call(|r| Command::Join(space.clone(), r)).await
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.call(|r| Command::Dial(addr, r)).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PublicKey>, NodeError> {
        self.call(Command::Peers).await
    }

    /// Addresses this node listens on, with `/p2p/<peer id>`.
    pub async fn listening(&self) -> Result<Vec<String>, NodeError> {
        self.call(Command::Listening).await
    }

    /// Agents advertising `capability` in the DHT.
    pub async fn find_providers(&self, capability: &str) -> Result<Vec<PublicKey>, NodeError> {
        self.call(|r| Command::FindProviders(capability.to_owned(), r))
            .await
    }

    /// Sets the agent's name and capabilities, republishes its capability ad and its
    /// provider records.
    pub async fn register(
        &self,
        name: String,
        capabilities: Vec<Capability>,
    ) -> Result<(), NodeError> {
        self.call(|r| Command::Register(name, capabilities, r))
            .await
    }

    /// Sends a message to every agent of `space` over gossip.
    pub async fn broadcast(&self, space: &Space, message: String) -> Result<EnvelopeId, NodeError> {
        self.call(|r| Command::Broadcast(space.clone(), message, r))
            .await
    }

    /// States the agent's intent to work on `topic` (strength 0 withdraws it): gossiped to
    /// the space, counted here. Answers the space's topics as this node sees them.
    pub async fn intent(
        &self,
        space: &Space,
        topic: String,
        strength: Score,
    ) -> Result<Vec<TopicView>, NodeError> {
        self.call(|r| Command::Intent(space.clone(), topic, strength, r))
            .await
    }

    /// The intent topics of `space`, most concentrated first.
    pub async fn intents(&self, space: &Space) -> Result<Vec<TopicView>, NodeError> {
        self.call(|r| Command::Intents(space.clone(), r)).await
    }

    /// What the node says about itself.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.call(Command::Status).await
    }

    /// Connected peers with their capability ads.
    pub async fn peer_infos(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.call(Command::PeerInfos).await
    }

    /// Every trust edge published in `space`.
    pub async fn trusts(&self, space: &Space) -> Result<Vec<TrustEdgeView>, NodeError> {
        self.call(|r| Command::Trusts(space.clone(), r)).await
    }

    /// Up to `limit` events of the log with a sequence number above `seq`, oldest first.
    pub async fn events_since(&self, seq: u64, limit: usize) -> Result<Vec<Event>, NodeError> {
        self.call(|r| Command::EventsSince(seq, limit, r)).await
    }

    /// Cards, swarms and tasks of `space`, as computed from the medium now.
    pub async fn coordination(
        &self,
        space: &Space,
    ) -> Result<membrane_crdt::coord::Snapshot, NodeError> {
        self.call(|r| Command::Coordination(space.clone(), r)).await
    }

    /// The verdicts on entry `id` (verified with `k` verifiers), and the entry's owner if
    /// this node holds it.
    pub async fn verification(
        &self,
        space: &Space,
        id: EnvelopeId,
        k: usize,
    ) -> Result<VerificationView, NodeError> {
        self.call(|r| Command::Verification(space.clone(), id, k, r))
            .await
    }

    /// The immune layer's view: each peer's standing (reputation, quarantine, ban) and the
    /// newest `limit` threats detected or received.
    pub async fn immune_report(&self, limit: usize) -> Result<ImmuneReport, NodeError> {
        self.call(|r| Command::Immune(limit, r)).await
    }

    /// An operator's override (quarantine, release, ban, unban, exonerate), carried out at
    /// once; answers with the audit records it wrote.
    pub async fn govern(&self, decision: Override) -> Result<Vec<AuditRecord>, NodeError> {
        self.call(|r| Command::Govern(decision, r)).await
    }

    /// Stops every crossing in or out: the agent's queries, search and writes are refused
    /// with [`NodeError::Paused`], and sync stops, until [`NodeHandle::resume`]. Survives a
    /// restart. Answers with the audit record written (none if already paused).
    pub async fn pause(&self, reason: Option<String>) -> Result<Vec<AuditRecord>, NodeError> {
        self.call(|r| Command::Pause(true, reason, r)).await
    }

    /// Lifts a pause and resyncs with every connected peer.
    pub async fn resume(&self, reason: Option<String>) -> Result<Vec<AuditRecord>, NodeError> {
        self.call(|r| Command::Pause(false, reason, r)).await
    }

    /// Up to `limit` audit records from index `since` on, verified on read.
    pub async fn audit(&self, since: u64, limit: usize) -> Result<AuditPage, NodeError> {
        self.call(|r| Command::Audit(since, limit, r)).await
    }

    /// Appends audit records written on the API's side (an answer's crossing decisions,
    /// budget charges) and logs events for the agent; answers with the records.
    pub async fn record(
        &self,
        audit: Vec<AuditEvent>,
        events: Vec<EventKind>,
    ) -> Result<Vec<AuditRecord>, NodeError> {
        self.call(|r| Command::Governance(Governance::Record(audit, events, r)))
            .await
    }

    /// Admits a delegation to `agent` for `capability` through the circuit breakers
    /// (taking the one trial of a half-open breaker), or refuses with
    /// [`NodeError::Blocked`] naming the breaker.
    pub async fn admit_delegation(
        &self,
        agent: PublicKey,
        capability: &str,
    ) -> Result<(), NodeError> {
        self.call(|r| Command::Governance(Governance::Admit(agent, capability.to_owned(), r)))
            .await
    }

    /// The breaker that would block a delegation to `agent` for `capability` now, if one
    /// would (no trial is taken).
    pub async fn delegation_blocked(
        &self,
        agent: PublicKey,
        capability: &str,
    ) -> Result<Option<membrane_immune::Blocked>, NodeError> {
        self.call(|r| Command::Governance(Governance::Blocks(agent, capability.to_owned(), r)))
            .await
    }

    /// Seals and publishes an arbitrary threat signal as this node, with no check at all:
    /// for adversarial tests and simulations (a false accuser). While no peer listens it is
    /// kept and retried, like the node's own signals.
    #[doc(hidden)]
    pub async fn publish_threat(&self, signal: ThreatSignal) -> Result<(), NodeError> {
        self.call(|r| Command::PublishThreat(signal, r)).await
    }

    /// Sends a direct message and waits for the receiver's acknowledgement: accepted (and
    /// on its agent's event log) or refused with the reason. Errors when the receiver is
    /// unknown, unreachable or silent.
    pub async fn send(&self, message: Outgoing) -> Result<Delivery, NodeError> {
        self.call(|r| Command::Send(message, r)).await
    }

    /// Up to `limit` events of the log that `filter` selects, newest first.
    pub async fn find_events(
        &self,
        filter: impl Fn(&Event) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<Vec<Event>, NodeError> {
        self.call(|r| Command::FindEvents(EventFilter(Box::new(filter)), limit, r))
            .await
    }

    /// Logs an event of the agent's own making (a fan-out); answers with its sequence
    /// number.
    pub async fn note(&self, kind: EventKind) -> Result<u64, NodeError> {
        self.call(|r| Command::Note(kind, r)).await
    }

    /// Asks the node to stop; the event loop flushes and returns.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(()).await;
    }
}

/// The reader a node's agent reads as: itself, accepting everything it may see.
pub(crate) fn own_reader(id: PublicKey) -> Reader {
    Reader::open(id)
}
