//! The event loop: one task owns the swarm and the medium, and turns commands, swarm
//! events and timers into medium operations, sync exchanges and gossip.
//!
//! Sync runs per (peer, document) as request/response pairs of [`SyncMessage`]s. Each side
//! keeps an outbox of frames its medium generated for the other; a message carries what
//! fits, with `more` set when frames remain, and the exchange goes on until neither side
//! has anything to say. It starts when a peer connects, when a heads announcement names a
//! change this node lacks, and on every anti-entropy tick.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::kad::{self, RecordKey};
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use membrane_crdt::EventKind;
use membrane_crdt::medium::SyncError;
use membrane_crdt::{DocId, Medium, RejectReason, Storage, SyncReport};
use membrane_immune::{
    Action, Channel as Traffic, ContentHash, Detection, Fault, Observation, content_hash,
};
use membrane_protocol::cost::TokenCounter;
use membrane_protocol::envelope::EnvelopeError;
use membrane_protocol::signals::{
    Broadcast, CapabilityAd, Heads, Intent, MAX_EVIDENCE_BYTES, ThreatKind, ThreatSignal,
};
use membrane_protocol::{Envelope, EnvelopeId, Keypair, PublicKey, Space};
use serde_bytes::ByteBuf;
use sha2::Digest;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, trace, warn};

mod intents;
mod roles;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::codec::{MAX_SYNC_MESSAGE_BYTES, Refusal, SyncMessage};
use super::topics::{self, Channel};
use crate::immune::{self, Defences, Outcome};
use crate::node::{Command, NodeError, NodeEvent, NodeOptions, PeerInfo, Status, own_reader};

mod governance;
mod messages;

/// Bytes of frames one sync message carries at most (frames are each ≤ 4 MiB).
const MESSAGE_FRAME_BUDGET: usize = MAX_SYNC_MESSAGE_BYTES - 64 * 1024;
/// Peers discovered through the DHT are dialled while fewer than this many are connected.
const MAX_DIAL_MESH: usize = 32;
/// Threat signals kept for a retry while no peer listens, at most.
const MAX_PENDING_THREATS: usize = 64;
/// How long a threat signal that found no peer is retried.
const PENDING_THREAT_MS: u64 = 5 * 60_000;
/// (offender, kind) pairs whose last publication time is remembered, at most.
const MAX_PUBLISHED: usize = 4096;
/// How long a capability ad stays valid.
const AD_LIFETIME: Duration = Duration::from_secs(3600);
/// Heads of one document are announced at most once per this interval; local changes in
/// between go out together when it ends (connected peers get each change pushed at once
/// anyway), so a node's gossip rate does not grow with its write rate.
const HEADS_INTERVAL: Duration = Duration::from_millis(250);
/// Records signed longer ago than this when they arrive are history being caught up
/// with, not new writing, and do not count toward their owner's entry rate.
const RECENT_RECORD_MS: u64 = 60_000;

/// How often decay is applied to intents: an eighth of the half-life, within 100 ms to 5 s,
/// so a quorum ends within about 12% of a half-life of when decay ends it.
fn intent_tick_period(config: &membrane_crdt::intents::Config) -> Duration {
    Duration::from_millis((config.half_life_ms / 8).clamp(100, 5_000))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An entry a defence left out of an answer, for the audit log.
fn withheld(entry: &membrane_protocol::Entry, why: &str) -> membrane_crdt::Withheld {
    membrane_crdt::Withheld {
        key: entry.body().key.clone(),
        owner: *entry.owner(),
        reason: why.to_owned(),
    }
}

fn capability_key(capability: &str) -> RecordKey {
    RecordKey::new(&sha2::Sha256::digest(format!("cap:{capability}")).to_vec())
}

/// Coordination states last logged: swarm (state, members) and task (state, winner).
#[derive(Debug, Default)]
struct CoordSeen {
    swarms: BTreeMap<String, (String, usize)>,
    tasks: BTreeMap<String, (String, Option<PublicKey>)>,
}

type ProviderQuery = (BTreeSet<PublicKey>, crate::node::Reply<Vec<PublicKey>>);

/// Where an observation came from, for the threat signals the immune layer may publish
/// about it: the space (all joined spaces if none) and the evidence at hand, by hash.
#[derive(Debug, Default)]
struct ThreatContext {
    space: Option<Space>,
    evidence: BTreeMap<ContentHash, Vec<u8>>,
}

impl ThreatContext {
    fn space(space: Space) -> Self {
        Self {
            space: Some(space),
            evidence: BTreeMap::new(),
        }
    }
}

/// Why a gossip message was rejected, and the offence it proves of its origin, if any.
#[derive(Debug)]
struct GossipRefusal {
    why: String,
    fault: Option<Fault>,
}

impl GossipRefusal {
    fn new(why: impl Into<String>, fault: Option<Fault>) -> Self {
        Self {
            why: why.into(),
            fault,
        }
    }
}

/// The offence an envelope that does not decode proves of the peer that signed the gossip
/// message carrying it. Versions, kinds and clocks that differ are not offences.
fn envelope_fault(e: &EnvelopeError) -> Option<Fault> {
    match e {
        EnvelopeError::BadSignature { .. } | EnvelopeError::AuthorMismatch { .. } => {
            Some(Fault::Forged)
        }
        EnvelopeError::Decode(_)
        | EnvelopeError::BadAuthor(_)
        | EnvelopeError::BadSignatureLength { .. }
        | EnvelopeError::PayloadTooLarge { .. }
        | EnvelopeError::Payload { .. }
        | EnvelopeError::InvalidPayload { .. } => Some(Fault::Undecodable),
        _ => None,
    }
}

pub(crate) struct Service<S: Storage> {
    swarm: Swarm<Behaviour>,
    medium: Medium<S>,
    keypair: Keypair,
    options: NodeOptions,
    commands: mpsc::Receiver<Command>,
    shutdown: mpsc::Receiver<()>,
    events: broadcast::Sender<NodeEvent>,
    last_event: u64,
    connected: BTreeSet<PeerId>,
    outbox: BTreeMap<(PeerId, DocId), VecDeque<Vec<u8>>>,
    in_flight: BTreeSet<(PeerId, DocId)>,
    listening: Vec<Multiaddr>,
    ad_version: u64,
    started_at_ms: u64,
    announced: bool,
    // Looked up by id only, never iterated: a HashMap is fine (QueryId is not Ord).
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    metrics: crate::metrics::NodeMetrics,
    p2p_metrics: libp2p::metrics::Metrics,
    /// What coordination looked like at the last check, per space: swarm states and task
    /// states, to log an event when one changes.
    coordination: BTreeMap<Space, CoordSeen>,
    /// The newest capability ad of each agent, per space.
    ads: BTreeMap<(PublicKey, Space), CapabilityAd>,
    /// The immune layer: reputation, quarantine, bans, memory cells, audit log.
    defences: Defences,
    /// This node's threat signals that found no peer yet: (first try, signal).
    pending_threats: VecDeque<(u64, ThreatSignal)>,
    /// When this node last published about (offender, kind), itself or corroborating.
    published: BTreeMap<(PublicKey, ThreatKind), u64>,
    /// Intent signals per (space, topic), decaying: quorum sensing.
    intents: membrane_crdt::intents::Intents,
    /// Role hints given and gaps watched.
    roles: roles::Roles,
    /// Task outcomes fed to the breakers and conflicts escalated so far.
    governance: crate::governance::Governance,
    /// Direct messages: the inbox's rules and the sends awaiting acknowledgement.
    direct: messages::Direct,
    /// When the heads of each of our documents were last announced.
    heads_announced: BTreeMap<DocId, u64>,
    /// Our documents whose heads changed since their last announcement, due when the
    /// interval ends.
    heads_due: BTreeSet<DocId>,
}

impl<S: Storage + Send + 'static> Service<S> {
    pub(crate) async fn new(
        options: NodeOptions,
        (metrics, p2p_metrics): (crate::metrics::NodeMetrics, libp2p::metrics::Metrics),
        storage: S,
        (tokens, meter): (Arc<dyn TokenCounter>, crate::budget::Meter),
        commands: mpsc::Receiver<Command>,
        shutdown: mpsc::Receiver<()>,
        events: broadcast::Sender<NodeEvent>,
    ) -> anyhow::Result<Self> {
        let keypair = options.keypair.clone();
        options
            .intents
            .validate()
            .map_err(|e| anyhow::anyhow!("intent settings: {e}"))?;
        let intents = options.intents.clone();
        let immune_store = immune::ImmuneStore::for_storage(&storage)?;
        let defences = Defences::open(&keypair, immune_store, options.immune.clone(), now_ms())?;
        let direct = messages::Direct::new(options.direct, tokens.clone(), meter);
        let mut medium = Medium::open(keypair.clone(), storage, options.medium.clone(), tokens)
            .map_err(|e| anyhow::anyhow!("opening the medium: {e}"))?;
        for space in &options.spaces {
            medium
                .join(space.clone())
                .map_err(|e| anyhow::anyhow!("joining {space}: {e}"))?;
        }
        let roles = super::Roles {
            kad_server: options.kad_server,
            relay_server: options.relay_server,
            mdns: options.mdns,
            light: options.light,
        };
        let swarm = super::build_swarm(keypair.to_libp2p(), options.transport, roles)?;
        let last_event = medium.events_since(0).last().map_or(0, |e| e.seq);
        let mut service = Self {
            swarm,
            medium,
            keypair,
            options,
            commands,
            shutdown,
            events,
            last_event,
            connected: BTreeSet::new(),
            outbox: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            listening: Vec::new(),
            ad_version: now_ms(),
            started_at_ms: now_ms(),
            announced: false,
            provider_queries: HashMap::new(),
            ads: BTreeMap::new(),
            coordination: BTreeMap::new(),
            metrics,
            p2p_metrics,
            defences,
            pending_threats: VecDeque::new(),
            published: BTreeMap::new(),
            intents: membrane_crdt::intents::Intents::new(intents),
            roles: roles::Roles::default(),
            governance: crate::governance::Governance::default(),
            direct,
            heads_announced: BTreeMap::new(),
            heads_due: BTreeSet::new(),
        };
        // Remembered offenders stay shut out across restarts.
        for (peer, until_ms) in service.defences.banned(now_ms()) {
            debug!(%peer, until_ms, "banned (remembered)");
            service
                .swarm
                .behaviour_mut()
                .gate
                .block_peer(peer.to_peer_id());
        }
        let spaces: Vec<Space> = service.medium.spaces().cloned().collect();
        for space in &spaces {
            service.subscribe(space);
        }
        // What the log already says about coordination is not news after a restart.
        let spaces = service.medium.spaces().cloned().collect();
        service.check_coordination(spaces, false);
        let listen = if service.options.listen.is_empty() {
            match service.options.transport {
                super::TransportKind::Memory => vec!["/memory/0".parse()?],
                super::TransportKind::Tcp => vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            }
        } else {
            service.options.listen.clone()
        };
        for addr in &listen {
            service.swarm.listen_on(addr.clone())?;
        }
        // Wait until every listener reports its address, so callers get a dialable node.
        while service.listening.len() < listen.len() {
            match service.swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => service.on_listen(address),
                SwarmEvent::ListenerError { error, .. } => {
                    anyhow::bail!("listener failed: {error}")
                }
                SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    anyhow::bail!("listener closed: {error}")
                }
                other => trace!(?other, "event before ready"),
            }
        }
        for addr in service.options.bootstrap.clone() {
            service.dial(addr);
        }
        service.provide_capabilities();
        Ok(service)
    }

    /// Announces this agent as a provider of each capability in the DHT, under
    /// `sha256("cap:" + capability)`. Kademlia republishes the records hourly after that.
    fn provide_capabilities(&mut self) {
        // A light node has no DHT.
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        for cap in &self.options.capabilities {
            if let Err(e) = kad.start_providing(capability_key(&cap.name)) {
                warn!(capability = %cap.name, error = %e, "cannot announce capability");
            }
        }
    }

    fn subscribe(&mut self, space: &Space) {
        for channel in Channel::ALL {
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&channel.topic(space))
            {
                warn!(%space, error = %e, "cannot subscribe");
            }
        }
    }

    fn on_listen(&mut self, address: Multiaddr) {
        let full = address
            .clone()
            .with_p2p(*self.swarm.local_peer_id())
            .unwrap_or(address.clone());
        info!(addr = %full, "listening");
        self.listening.push(address);
        let _ = self.events.send(NodeEvent::Listening {
            addr: full.to_string(),
        });
        self.write_info();
    }

    /// Rewrites `node.json` (atomically) for scripts: who, where, how many peers.
    fn write_info(&self) {
        let Some(dir) = &self.options.data_dir else {
            return;
        };
        let info = crate::info::NodeInfo {
            peer_id: self.keypair.public().to_string(),
            listen: self.listening_full(),
            api: self.options.api.clone().unwrap_or_default(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            peers: self.connected.len(),
        };
        if let Err(e) = crate::info::write(dir, &info) {
            warn!(error = %e, "cannot write node.json");
        }
    }

    fn listening_full(&self) -> Vec<String> {
        let me = *self.swarm.local_peer_id();
        self.listening
            .iter()
            .map(|a| a.clone().with_p2p(me).unwrap_or(a.clone()).to_string())
            .collect()
    }

    fn dial(&mut self, addr: Multiaddr) {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last()
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            kad.add_address(&peer, addr.clone());
        }
        if let Err(e) = self.swarm.dial(addr.clone()) {
            debug!(%addr, error = %e, "dial failed");
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.options.anti_entropy);
        tick.tick().await;
        let mut intent_tick = tokio::time::interval(intent_tick_period(&self.options.intents));
        intent_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heads_tick = tokio::time::interval(HEADS_INTERVAL);
        heads_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_ad();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => break,
                Some(command) = self.commands.recv() => self.on_command(command),
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = tick.tick() => {
                    self.anti_entropy();
                    self.immune_tick();
                }
                _ = intent_tick.tick() => {
                    self.intent_tick();
                    self.role_tick();
                    self.flush_events();
                }
                _ = heads_tick.tick(), if !self.heads_due.is_empty() => self.announce_due(),
            }
            self.forward_medium_events();
        }
        self.defences.flush(now_ms());
        self.flush_events();
        info!("node stopped");
    }

    fn forward_medium_events(&mut self) {
        self.metrics.sync_sessions.set(self.in_flight.len() as i64);
        self.metrics.peers.set(self.connected.len() as i64);
        if self.medium.last_event() == self.last_event {
            return;
        }
        let entries: usize = self
            .medium
            .spaces()
            .filter_map(|s| self.medium.index(s))
            .map(|index| index.len())
            .sum();
        self.metrics.entries.set(entries as i64);
        self.coordination_events();
        self.escalate_conflicts();
        let new: Vec<_> = self.medium.events_since(self.last_event).to_vec();
        for event in new {
            self.last_event = event.seq;
            let _ = self.events.send(NodeEvent::Medium(event));
        }
    }

    fn me(&self) -> PublicKey {
        self.keypair.public()
    }

    /// Whether a command carries something across the membrane (into the agent's context
    /// or out of this node), which a pause stops.
    fn crosses(command: &Command) -> bool {
        matches!(
            command,
            Command::Expose(..)
                | Command::Retract(..)
                | Command::Trust(..)
                | Command::Query(..)
                | Command::Search(..)
                | Command::Broadcast(..)
                | Command::Intent(..)
                | Command::Coordination(..)
                | Command::Verification(..)
                | Command::Send(..)
        )
    }

    fn on_command(&mut self, command: Command) {
        let now = now_ms();
        let reader = own_reader(self.me());
        let err = crate::node::medium_error::<S::Error>;
        if self.defences.paused() && Self::crosses(&command) {
            command.refuse(NodeError::Paused);
            return;
        }
        match command {
            Command::Expose(space, draft, reply) => {
                let result = self.medium.expose(&space, draft, now).map_err(err);
                if result.is_ok() {
                    self.announce(&space);
                }
                let _ = reply.send(result);
            }
            Command::Retract(space, key, reply) => {
                let result = self.medium.retract(&space, &key, None, now).map_err(err);
                if result.is_ok() {
                    self.announce(&space);
                }
                let _ = reply.send(result);
            }
            Command::Trust(space, peer, score, reply) => {
                let result = self.medium.set_trust(&space, peer, score, now).map_err(err);
                if result.is_ok() {
                    self.announce(&space);
                    // The trusted document may now go to this peer.
                    self.sync_all_docs(peer.to_peer_id(), &space);
                }
                let _ = reply.send(result);
            }
            Command::Query(space, pattern, expired, filter, reply) => {
                let result = self
                    .medium
                    .query_with(&reader, &space, &pattern, now, expired, &filter)
                    .map_err(err)
                    .map(|mut answer| {
                        // Quarantined and banned owners' entries are kept (for audit) but
                        // never shown: they count as hidden.
                        let hits = std::mem::take(&mut answer.hits);
                        let tokens = std::mem::take(&mut answer.hit_tokens);
                        for (entry, tokens) in hits.into_iter().zip(tokens) {
                            match self.defences.hides(entry.owner(), now) {
                                Some(why) => {
                                    answer.hidden += 1;
                                    answer.withheld.push(withheld(&entry, why));
                                }
                                None => {
                                    answer.hits.push(entry);
                                    answer.hit_tokens.push(tokens);
                                }
                            }
                        }
                        answer
                    });
                let _ = reply.send(result);
            }
            Command::Search(space, text, max_tokens, filter, reply) => {
                let result = self
                    .medium
                    .search_with(&reader, &space, &text, max_tokens, now, &filter)
                    .map_err(err)
                    .map(|mut answer| {
                        let hits = std::mem::take(&mut answer.hits);
                        for hit in hits {
                            match self.defences.hides(hit.entry.owner(), now) {
                                Some(why) => answer.withheld.push(withheld(&hit.entry, why)),
                                None => answer.hits.push(hit),
                            }
                        }
                        answer.total_tokens = answer.hits.iter().map(|h| u64::from(h.tokens)).sum();
                        answer
                    });
                if let Ok(answer) = &result {
                    let charges: Vec<(PublicKey, u64)> = answer
                        .hits
                        .iter()
                        .map(|h| (*h.entry.owner(), u64::from(h.tokens)))
                        .collect();
                    for (peer, tokens) in charges {
                        self.observe(
                            Observation::BudgetCharged { peer, tokens },
                            &ThreatContext::space(space.clone()),
                        );
                    }
                }
                let _ = reply.send(result);
            }
            Command::Join(space, reply) => {
                let result = self.medium.join(space.clone()).map_err(err);
                if result.is_ok() {
                    self.subscribe(&space);
                    for peer in self.connected.clone() {
                        self.sync_all_docs(peer, &space);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Dial(addr, reply) => {
                let text = addr.to_string();
                let result = self.swarm.dial(addr).map_err(|e| NodeError::Dial {
                    addr: text,
                    detail: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::Peers(reply) => {
                let peers = self
                    .connected
                    .iter()
                    .filter_map(|p| PublicKey::from_peer_id(p).ok())
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::Listening(reply) => {
                let _ = reply.send(Ok(self.listening_full()));
            }
            Command::Register(name, capabilities, reply) => {
                self.options.name = name;
                self.options.capabilities = capabilities;
                self.publish_ad();
                self.provide_capabilities();
                let _ = reply.send(Ok(()));
            }
            Command::Broadcast(space, message, reply) => {
                let _ = reply.send(self.broadcast(space, message));
            }
            Command::Intent(space, topic, strength, reply) => {
                let _ = reply.send(self.intent(space, topic, strength));
            }
            Command::Intents(space, reply) => {
                let _ = reply.send(self.intent_topics(&space));
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(Status {
                    peer: self.me(),
                    name: self.options.name.clone(),
                    capabilities: self.options.capabilities.clone(),
                    spaces: self.medium.spaces().cloned().collect(),
                    listening: self.listening_full(),
                    peers: self.connected.len(),
                    started_at_ms: self.started_at_ms,
                    last_event: self.medium.last_event(),
                }));
            }
            Command::PeerInfos(reply) => {
                let _ = reply.send(Ok(self.peer_infos()));
            }
            Command::Trusts(space, reply) => {
                let result = if self.medium.spaces().any(|s| s == &space) {
                    Ok(self
                        .medium
                        .trust(&space)
                        .edges()
                        .map(|(from, to, score)| (*from, *to, score))
                        .collect())
                } else {
                    Err(NodeError::UnknownSpace(space))
                };
                let _ = reply.send(result);
            }
            Command::EventsSince(seq, limit, reply) => {
                let events = self.medium.events_since(seq);
                let _ = reply.send(Ok(events[..events.len().min(limit)].to_vec()));
            }
            Command::Coordination(space, reply) => {
                let result = match self.medium.index(&space) {
                    Some(index) => Ok(membrane_crdt::coord::snapshot(index, now)),
                    None => Err(NodeError::UnknownSpace(space)),
                };
                let _ = reply.send(result);
            }
            Command::Verification(space, id, k, reply) => {
                let trust = self.medium.trust(&space);
                let me = self.me();
                let result = match self.medium.index(&space) {
                    Some(index) => {
                        let owner = index.entry(&id).map(|e| *e.owner());
                        let v = membrane_crdt::coord::verification(
                            index,
                            &id,
                            owner.as_ref(),
                            &me,
                            &trust,
                            k,
                        );
                        Ok((v, owner))
                    }
                    None => Err(NodeError::UnknownSpace(space)),
                };
                let _ = reply.send(result);
            }
            Command::Immune(limit, reply) => {
                let connected = self
                    .connected
                    .iter()
                    .filter_map(|p| PublicKey::from_peer_id(p).ok())
                    .collect();
                let _ = reply.send(Ok(self.defences.report(&connected, limit, now)));
            }
            Command::Govern(decision, reply) => {
                let _ = reply.send(self.govern(decision, now));
            }
            Command::Pause(paused, reason, reply) => {
                let outcome = self.defences.set_paused(paused, reason, now);
                let records = outcome.records.clone();
                self.carry_out(outcome, &ThreatContext::default());
                if paused {
                    // Sessions in flight end here; nothing more goes out or comes in.
                    for peer in self.connected.clone() {
                        self.drop_peer_sessions(peer);
                    }
                    warn!("paused by the operator: no crossing in or out until resumed");
                } else if !records.is_empty() {
                    info!("resumed by the operator");
                    let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
                    for peer in self.connected.clone() {
                        for space in &spaces {
                            self.sync_all_docs(peer, space);
                        }
                    }
                }
                let _ = reply.send(Ok(records));
            }
            Command::Audit(since, limit, reply) => {
                let _ = reply.send(Ok(self.defences.audit_page(since, limit)));
            }
            Command::PublishThreat(signal, reply) => {
                let _ = reply.send(self.publish_raw_threat(&signal));
            }
            Command::Governance(command) => self.on_governance(command),
            Command::FindProviders(capability, reply) => {
                match self.swarm.behaviour_mut().kad.as_mut() {
                    Some(kad) => {
                        let query = kad.get_providers(capability_key(&capability));
                        self.provider_queries
                            .insert(query, (BTreeSet::new(), reply));
                    }
                    // A light node has no DHT: it knows of no provider.
                    None => {
                        let _ = reply.send(Ok(Vec::new()));
                    }
                }
            }
            Command::Send(out, reply) => self.send_direct(out, reply),
            Command::FindEvents(filter, limit, reply) => {
                let _ = reply.send(Ok(self.find_events(&filter, limit)));
            }
            Command::Note(kind, reply) => {
                let _ = reply.send(self.medium.note(kind).map_err(err));
            }
        }
    }

    /// Publishes a broadcast to `space` and records it in this node's own event log.
    fn broadcast(&mut self, space: Space, message: String) -> Result<EnvelopeId, NodeError> {
        if !self.medium.spaces().any(|s| s == &space) {
            return Err(NodeError::UnknownSpace(space));
        }
        let payload = Broadcast {
            space: space.clone(),
            message,
        };
        let envelope = Envelope::seal(&self.keypair, now_ms(), &payload)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let id = envelope.id();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(Channel::Broadcasts.topic(&space), envelope.to_bytes())
        {
            // No peer in the mesh yet: the message is still the agent's, and logged.
            debug!(%space, error = %e, "broadcast not gossiped");
        } else {
            self.count_out(Channel::Broadcasts);
        }
        self.note(EventKind::Broadcast {
            space,
            from: self.me(),
            message: payload.message,
        });
        Ok(id)
    }

    fn count_out(&self, channel: Channel) {
        self.metrics
            .gossip_out
            .get_or_create(&crate::metrics::ChannelLabels {
                channel: channel.name(),
            })
            .inc();
    }

    /// Recomputes coordination in the spaces whose new events touched a `coord.` record,
    /// and logs an event for each swarm or task whose state changed since the last check.
    fn coordination_events(&mut self) {
        let mut touched = BTreeSet::new();
        let mut conflicts = Vec::new();
        for event in self.medium.events_since(self.last_event) {
            let (space, key) = match &event.kind {
                EventKind::Conflict { space, conflict } => {
                    conflicts.push((space.clone(), conflict.clone()));
                    continue;
                }
                EventKind::Exposed { space, key, .. }
                | EventKind::Retracted { space, key, .. }
                | EventKind::Arrived { space, key, .. }
                | EventKind::Withdrawn { space, key, .. } => (space, key),
                _ => continue,
            };
            if key.as_str().starts_with(membrane_crdt::coord::PREFIX) {
                touched.insert(space.clone());
            }
        }
        if !touched.is_empty() {
            self.check_coordination(touched, true);
        }
        for (space, conflict) in conflicts {
            self.role_on_conflict(&space, &conflict);
        }
    }

    /// Brings `self.coordination` of `spaces` up to date, logging changes if `log`.
    fn check_coordination(&mut self, spaces: BTreeSet<Space>, log: bool) {
        let now = now_ms();
        for space in spaces {
            let Some(index) = self.medium.index(&space) else {
                continue;
            };
            let snapshot = membrane_crdt::coord::snapshot(index, now);
            let seen = self.coordination.entry(space.clone()).or_default();
            let mut notes = Vec::new();
            for (slug, swarm) in &snapshot.swarms {
                let (state, reason) = match &swarm.state {
                    membrane_crdt::coord::SwarmState::Forming => ("forming", None),
                    membrane_crdt::coord::SwarmState::Active => ("active", None),
                    membrane_crdt::coord::SwarmState::Dissolved { reason } => {
                        ("dissolved", Some(reason.clone()))
                    }
                };
                let now_seen = (state.to_owned(), swarm.members.len());
                if seen.swarms.get(slug) != Some(&now_seen) {
                    seen.swarms.insert(slug.clone(), now_seen);
                    notes.push(EventKind::Swarm {
                        space: space.clone(),
                        slug: slug.clone(),
                        state: state.to_owned(),
                        members: swarm.members.len(),
                        reason,
                    });
                }
            }
            for (id, task) in &snapshot.tasks {
                let state = match &task.state {
                    membrane_crdt::coord::TaskState::Open => "open",
                    membrane_crdt::coord::TaskState::Claimed => "claimed",
                    membrane_crdt::coord::TaskState::Completed { .. } => "completed",
                    membrane_crdt::coord::TaskState::Failed { .. } => "failed",
                };
                let now_seen = (state.to_owned(), task.winner);
                if seen.tasks.get(id) != Some(&now_seen) {
                    seen.tasks.insert(id.clone(), now_seen);
                    notes.push(EventKind::Task {
                        space: space.clone(),
                        id: id.clone(),
                        state: state.to_owned(),
                        winner: task.winner,
                    });
                }
            }
            if log {
                for note in notes {
                    self.note(note);
                }
            }
            self.roles_after(&space, &snapshot, log);
            self.govern_coordination(&space, &snapshot, log);
        }
    }

    /// Logs an event the medium did not produce itself.
    /// Logs an event of the node's own (gossip that arrived, threats, intents, role
    /// hints, escalations): nobody was promised it, so it is written without a disk sync
    /// of its own and made durable with the next durable write or within a second
    /// (decision 111). A flood of gossip must not cost a sync per message.
    fn note(&mut self, kind: EventKind) {
        if let Err(e) = self.medium.note_lazy(kind) {
            warn!(error = %e, "cannot log an event");
        }
    }

    /// Makes the lazily logged events durable.
    fn flush_events(&mut self) {
        if let Err(e) = self.medium.flush() {
            warn!(error = %e, "cannot flush the event log");
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut infos = Vec::new();
        for peer in &self.connected {
            let Ok(key) = PublicKey::from_peer_id(peer) else {
                continue;
            };
            let ads: Vec<&CapabilityAd> = self
                .ads
                .iter()
                .filter(|((k, _), _)| k == &key)
                .map(|(_, ad)| ad)
                .collect();
            let newest = ads.iter().max_by_key(|ad| ad.version);
            infos.push(PeerInfo {
                peer: key,
                name: newest.map(|ad| ad.name.clone()),
                capabilities: newest.map(|ad| ad.capabilities.clone()).unwrap_or_default(),
                spaces: ads.iter().map(|ad| ad.space.clone()).collect(),
            });
        }
        infos
    }

    /// Announces the heads of this node's documents in `space` after a local change (at
    /// most once per [`HEADS_INTERVAL`] per document; later changes go out when it ends),
    /// and pushes the change to connected peers at once.
    fn announce(&mut self, space: &Space) {
        let now = now_ms();
        let interval = HEADS_INTERVAL.as_millis() as u64;
        let docs = [
            DocId::public(space.clone()),
            DocId::trusted(space.clone(), self.me()),
        ];
        for doc in docs {
            let recent = self
                .heads_announced
                .get(&doc)
                .is_some_and(|at| now.saturating_sub(*at) < interval);
            if recent {
                self.heads_due.insert(doc);
            } else {
                self.announce_heads(doc, now);
            }
        }
        // Push the change to every connected peer that may hold the document: after a local
        // change Automerge always has a message to send, so this is one round trip. The
        // heads announcement reaches the rest, who pull.
        for peer in self.connected.clone() {
            let Ok(key) = PublicKey::from_peer_id(&peer) else {
                continue;
            };
            for doc in self.medium.docs_for_peer(space, &key) {
                let ours = match &doc.doc {
                    membrane_protocol::signals::DocRef::Public => true,
                    membrane_protocol::signals::DocRef::Trusted(owner) => owner == &self.me(),
                };
                if ours {
                    self.start_sync(peer, doc, false);
                }
            }
        }
    }

    /// Publishes the heads of one of our documents (if we hold it).
    fn announce_heads(&mut self, doc: DocId, now: u64) {
        let Some(heads) = self.medium.heads(&doc) else {
            return;
        };
        let payload = Heads {
            space: doc.space.clone(),
            doc: doc.doc.clone(),
            heads: heads.iter().map(|h| ByteBuf::from(h.0.to_vec())).collect(),
        };
        self.publish(&doc.space, Channel::Heads, &payload);
        self.heads_announced.insert(doc, now);
    }

    /// Announces the heads that changed during the last interval.
    fn announce_due(&mut self) {
        let now = now_ms();
        for doc in std::mem::take(&mut self.heads_due) {
            self.announce_heads(doc, now);
        }
    }

    /// Seals and publishes `payload` on `space`'s `channel`; whether it went out.
    fn publish<P: membrane_protocol::Payload>(
        &mut self,
        space: &Space,
        channel: Channel,
        payload: &P,
    ) -> bool {
        match Envelope::seal(&self.keypair, now_ms(), payload) {
            Ok(env) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(channel.topic(space), env.to_bytes());
                match result {
                    Ok(_) => {
                        self.count_out(channel);
                        true
                    }
                    Err(e) => {
                        trace!(%space, ?channel, error = %e, "publish");
                        false
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot seal gossip");
                false
            }
        }
    }

    /// Publishes one of this node's threat signals; one that finds no peer to go to (the
    /// mesh is still forming) is kept and retried when a peer subscribes and on every
    /// tick, for a while.
    fn publish_signal(&mut self, signal: ThreatSignal) {
        let space = signal.space.clone();
        if !self.publish(&space, Channel::Threats, &signal) {
            if self.pending_threats.len() >= MAX_PENDING_THREATS {
                self.pending_threats.pop_front();
            }
            self.pending_threats.push_back((now_ms(), signal));
        }
    }

    /// Retries the threat signals that found no peer.
    fn retry_signals(&mut self) {
        let now = now_ms();
        let pending = std::mem::take(&mut self.pending_threats);
        for (at, signal) in pending {
            if now.saturating_sub(at) > PENDING_THREAT_MS {
                continue;
            }
            let space = signal.space.clone();
            if !self.publish(&space, Channel::Threats, &signal) {
                self.pending_threats.push_back((at, signal));
            }
        }
    }

    fn publish_ad(&mut self) {
        self.ad_version += 1;
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
        for space in spaces {
            let ad = CapabilityAd {
                space: space.clone(),
                name: self.options.name.clone(),
                capabilities: self.options.capabilities.clone(),
                exposes: Vec::new(),
                version: self.ad_version,
                expires_at_ms: now_ms() + AD_LIFETIME.as_millis() as u64,
            };
            self.publish(&space, Channel::Capabilities, &ad);
        }
    }

    /// Whether the immune layer lets us meet `peer` (not banned, not disconnected).
    fn may_meet(&self, peer: &PeerId) -> bool {
        PublicKey::from_peer_id(peer).is_ok_and(|k| self.defences.admits(&k, now_ms()))
    }

    fn anti_entropy(&mut self) {
        for addr in self.options.bootstrap.clone() {
            let skip = match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
                    self.connected.contains(&peer) || !self.may_meet(&peer)
                }
                _ => false,
            };
            if !skip {
                self.dial(addr);
            }
        }
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
        for peer in self.connected.clone() {
            for space in &spaces {
                self.sync_all_docs(peer, space);
            }
        }
        self.publish_ad();
    }

    fn sync_all_docs(&mut self, peer: PeerId, space: &Space) {
        let Ok(key) = PublicKey::from_peer_id(&peer) else {
            return;
        };
        for doc in self.medium.docs_for_peer(space, &key) {
            self.start_sync(peer, doc, false);
        }
    }

    /// Sends the next sync message for (`peer`, `doc`) unless one is in flight. With
    /// `pull`, sends even when this side has nothing, to fetch what the peer has queued.
    fn start_sync(&mut self, peer: PeerId, doc: DocId, pull: bool) {
        if self.defences.paused() || self.in_flight.contains(&(peer, doc.clone())) {
            return;
        }
        let Ok(key) = PublicKey::from_peer_id(&peer) else {
            return;
        };
        if !self.defences.accepts_from(&key, now_ms()) {
            return;
        }
        let frames = self.medium.sync_generate(&key, &doc);
        let outbox = self.outbox.entry((peer, doc.clone())).or_default();
        outbox.extend(frames);
        if outbox.is_empty() && !pull {
            return;
        }
        let message = drain(&doc, outbox);
        self.in_flight.insert((peer, doc));
        self.metrics
            .sync_messages
            .get_or_create(&crate::metrics::DirectionLabels { direction: "out" })
            .inc();
        self.swarm.behaviour_mut().sync.send_request(&peer, message);
    }

    /// Applies the frames of a message from `peer`. Returns the refusal to send back, if any.
    fn receive_frames(&mut self, peer: PeerId, doc: &DocId, frames: &[ByteBuf]) -> Option<Refusal> {
        let Ok(key) = PublicKey::from_peer_id(&peer) else {
            return Some(Refusal::Rejected);
        };
        if self.defences.paused() {
            return Some(Refusal::NotYet);
        }
        if !self.defences.accepts_from(&key, now_ms()) {
            // Quarantined or banned: nothing it sends is applied.
            self.drop_peer_sessions(peer);
            return Some(Refusal::Rejected);
        }
        let mut applied = 0;
        for frame in frames {
            let content = content_hash(frame);
            if self.refuse_replay(key, doc, frame, content) {
                self.drop_peer_sessions(peer);
                return Some(Refusal::Rejected);
            }
            let before = self.medium.last_event();
            match self.medium.sync_receive(&key, frame) {
                Ok(report) if report.rejected.is_empty() => {
                    self.metrics.changes_applied.inc_by(report.applied as u64);
                    applied += report.applied;
                    if report.records > 0 {
                        let context = ThreatContext::space(doc.space.clone());
                        self.count_applied(before, &context);
                        self.observe(Observation::Contributed { peer: key }, &context);
                        if !self.defences.accepts_from(&key, now_ms()) {
                            return Some(Refusal::Rejected);
                        }
                    }
                }
                Ok(report) => {
                    self.metrics.changes_applied.inc_by(report.applied as u64);
                    self.metrics
                        .changes_rejected
                        .inc_by(report.rejected.len() as u64);
                    if report.records > 0 {
                        self.count_applied(before, &ThreatContext::space(doc.space.clone()));
                    }
                    self.on_rejected(key, &report, frame, content);
                    self.drop_peer_sessions(peer);
                    return Some(Refusal::Rejected);
                }
                Err(SyncError::NotInAudience { .. }) => return Some(Refusal::NotYet),
                Err(SyncError::UnknownSpace(_)) => return Some(Refusal::UnknownSpace),
                Err(SyncError::Frame(reason)) => {
                    self.metrics.changes_rejected.inc();
                    let report = SyncReport {
                        doc: doc.clone(),
                        applied: 0,
                        records: 0,
                        rejected: vec![membrane_crdt::Rejection {
                            change: None,
                            actor: Some(key),
                            reason,
                        }],
                    };
                    self.on_rejected(key, &report, frame, content);
                    self.drop_peer_sessions(peer);
                    return Some(Refusal::Rejected);
                }
                Err(e) => {
                    warn!(peer = %key, error = %e, "sync frame not applied");
                    self.medium.reset_session(&key, doc);
                    return Some(Refusal::NotYet);
                }
            }
        }
        if applied > 0 {
            self.pass_on(peer, doc);
        }
        None
    }

    /// Offers what just arrived from `from` to every other connected peer that may hold
    /// `doc`. A heads announcement can outrun the change it names (the relay forwards the
    /// gossip before it has synced), so a peer that pulled from the relay too early would
    /// otherwise wait for anti-entropy; pushing on merge carries the change hop by hop.
    /// Automerge sends nothing to a peer its sync state says already has everything.
    fn pass_on(&mut self, from: PeerId, doc: &DocId) {
        for peer in self.connected.clone() {
            if peer == from {
                continue;
            }
            let Ok(key) = PublicKey::from_peer_id(&peer) else {
                continue;
            };
            if self.medium.docs_for_peer(&doc.space, &key).contains(doc) {
                self.start_sync(peer, doc.clone(), false);
            }
        }
    }

    /// Whether `frame` from `key`, or a change it carries, was rejected before; if so the
    /// immune layer hears of each such payload (a replay), until it stops accepting the
    /// sender, and the frame is refused unprocessed.
    fn refuse_replay(
        &mut self,
        key: PublicKey,
        doc: &DocId,
        frame: &[u8],
        content: ContentHash,
    ) -> bool {
        let now = now_ms();
        let replayed: Vec<ContentHash> = if self.defences.is_replayed(&content, now) {
            vec![content]
        } else {
            crate::content::change_signatures(frame)
                .into_iter()
                .filter(|c| self.defences.is_replayed(c, now))
                .collect()
        };
        if replayed.is_empty() {
            return false;
        }
        debug!(peer = %key, payloads = replayed.len(), "refused a replay of rejected content");
        self.metrics.changes_rejected.inc();
        let context = ThreatContext::space(doc.space.clone());
        for content in replayed {
            self.observe(
                Observation::Received {
                    peer: key,
                    channel: Traffic::Entries,
                    content,
                },
                &context,
            );
            if !self.defences.accepts_from(&key, now_ms()) {
                break;
            }
        }
        true
    }

    /// Counts the entries the medium logged as arrived since event `before` toward their
    /// owners' entry rates, those signed lately only (older ones are history).
    fn count_applied(&mut self, before: u64, context: &ThreatContext) {
        let now = now_ms();
        let mut owners: BTreeMap<PublicKey, u32> = BTreeMap::new();
        for event in self.medium.events_since(before) {
            let EventKind::Arrived {
                space, id, owner, ..
            } = &event.kind
            else {
                continue;
            };
            let recent = self
                .medium
                .index(space)
                .and_then(|index| index.entry(id))
                .is_some_and(|e| now.saturating_sub(e.created_at_ms()) <= RECENT_RECORD_MS);
            if recent {
                *owners.entry(*owner).or_default() += 1;
            }
        }
        for (owner, records) in owners {
            self.observe(Observation::Applied { owner, records }, context);
        }
    }

    fn drop_peer_sessions(&mut self, peer: PeerId) {
        if let Ok(key) = PublicKey::from_peer_id(&peer) {
            self.medium.drop_sessions(&key);
        }
        self.outbox.retain(|(p, _), _| *p != peer);
        self.in_flight.retain(|(p, _)| *p != peer);
    }

    /// Tells the immune layer what the medium refused from `peer` in `frame` (whose hash
    /// is `frame_hash`): each rejected change with a minimal frame of its own as evidence.
    fn on_rejected(
        &mut self,
        peer: PublicKey,
        report: &SyncReport,
        frame: &[u8],
        frame_hash: ContentHash,
    ) {
        let Some(first) = report.rejected.first() else {
            return;
        };
        warn!(%peer, reason = %first.reason, rejected = report.rejected.len(), "peer sent bad sync data");
        let space = report.doc.space.clone();
        let mut context = ThreatContext::space(space.clone());
        if frame.len() <= MAX_EVIDENCE_BYTES {
            context.evidence.insert(frame_hash, frame.to_vec());
        }
        let decoded = report
            .rejected
            .iter()
            .any(|r| r.change.is_some())
            .then(|| immune::decode_frame(frame))
            .flatten();
        let mut observations = Vec::new();
        for rejection in &report.rejected {
            let carried = decoded
                .as_ref()
                .zip(rejection.change)
                .and_then(|(d, hash)| immune::find_change(d, &hash.0));
            // An equivocation's evidence carries both records when both came in this frame
            // (then it verifies anywhere), else the second alone.
            let first = match &rejection.reason {
                RejectReason::Equivocation { owner, seq } => self
                    .medium
                    .index(&space)
                    .and_then(|i| i.seq_owner(owner, *seq)),
                _ => None,
            };
            let evidence = decoded.as_ref().zip(carried).and_then(|(d, c)| {
                first
                    .and_then(|f| immune::equivocation_evidence(d, &f, c))
                    .or_else(|| immune::minimal_evidence(d, c))
            });
            // A refused change is named by its content signature, whatever frame brought
            // it (the evidence frame is what that name verifies against); anything else
            // by the frame.
            let content = match (rejection.change, &decoded) {
                (Some(hash), Some(d)) => {
                    let signature = immune::find_change(d, &hash.0).and_then(immune::signature_of);
                    crate::content::change_signature(&d.doc(), &hash.0, signature.as_ref())
                }
                _ => frame_hash,
            };
            if let Some(bytes) = evidence {
                context.evidence.insert(content, bytes);
            }
            match &rejection.reason {
                RejectReason::Equivocation { owner, seq } => {
                    observations.push(Observation::Equivocation {
                        owner: *owner,
                        seq: *seq,
                        first: first.map_or([0; 32], |id| id.0),
                        second: content,
                    });
                }
                reason => {
                    let Some(fault) = immune::fault_of(reason) else {
                        continue;
                    };
                    // A change refused only for where it was placed (its signature does not
                    // cover the document) is the doing of whoever placed it.
                    let author = match (fault, carried) {
                        (Fault::Trespass, Some(c)) => {
                            let index = self.medium.index(&space);
                            let lookup = |owner: &PublicKey, seq: u64| {
                                index.and_then(|i| i.seq_owner(owner, seq))
                            };
                            immune::authored_fault(&self.medium, &space, &report.doc, c, &lookup)
                                .map(|(a, _)| a)
                        }
                        (Fault::Trespass, None) => None,
                        _ => rejection.actor,
                    };
                    observations.push(Observation::Rejected {
                        peer,
                        author,
                        content,
                        fault,
                    });
                }
            }
        }
        for observation in observations {
            self.observe(observation, &context);
        }
    }

    /// Feeds one observation to the immune layer and carries out what it decides.
    fn observe(&mut self, observation: Observation, context: &ThreatContext) {
        let outcome = self.defences.observe(observation, now_ms());
        self.carry_out(outcome, context);
    }

    /// Carries out the immune layer's decisions (the audit records are already written).
    fn carry_out(&mut self, outcome: Outcome, context: &ThreatContext) {
        for record in outcome.records {
            let _ = self.events.send(NodeEvent::Audit(record));
        }
        for action in outcome.actions {
            match action {
                Action::LowerScore {
                    peer,
                    severity,
                    reputation,
                    app_score,
                } => {
                    debug!(%peer, ?severity, reputation, "reputation lowered");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer.to_peer_id(), app_score);
                }
                Action::Quarantine { peer, until_ms } => {
                    warn!(%peer, ?until_ms, "peer quarantined: its data is neither applied nor shown");
                }
                Action::Release(peer) => {
                    info!(%peer, "peer released from quarantine");
                    let peer_id = peer.to_peer_id();
                    if self.connected.contains(&peer_id) {
                        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
                        for space in &spaces {
                            self.sync_all_docs(peer_id, space);
                        }
                    }
                }
                Action::DropSessions(peer) => self.drop_peer_sessions(peer.to_peer_id()),
                Action::Disconnect(peer) => {
                    info!(%peer, "disconnecting a refused peer");
                    let _ = self.swarm.disconnect_peer_id(peer.to_peer_id());
                }
                Action::Ban { peer, until_ms } => {
                    warn!(%peer, until_ms, "peer banned");
                    self.swarm
                        .behaviour_mut()
                        .gate
                        .block_peer(peer.to_peer_id());
                }
                Action::Unban(peer) => {
                    info!(%peer, "peer unbanned");
                    self.swarm
                        .behaviour_mut()
                        .gate
                        .unblock_peer(peer.to_peer_id());
                }
                Action::PublishThreat(detection) => self.publish_threat(&detection, context),
                Action::Breaker { key, transition } => {
                    info!(?key, ?transition, "delegation breaker");
                }
                _ => {}
            }
        }
    }

    /// Seals and publishes one of our detections in its space (every joined space when it
    /// has none), with its evidence when small enough to carry.
    fn publish_threat(&mut self, detection: &Detection, context: &ThreatContext) {
        let spaces: Vec<Space> = match &context.space {
            Some(space) => vec![space.clone()],
            None => self.medium.spaces().cloned().collect(),
        };
        for space in spaces {
            let mut signal = detection.to_signal(space.clone());
            signal.evidence = detection
                .evidence_hash
                .and_then(|h| context.evidence.get(&h))
                .filter(|bytes| bytes.len() <= MAX_EVIDENCE_BYTES)
                .map(|bytes| ByteBuf::from(bytes.clone()));
            self.metrics.threats.inc();
            self.published
                .insert((signal.offender, signal.kind), now_ms());
            self.publish_signal(signal.clone());
            self.note(EventKind::Threat {
                space: space.clone(),
                reporter: self.me(),
                offender: signal.offender,
                offence: signal.kind,
                severity: signal.severity,
            });
            let _ = self.events.send(NodeEvent::Threat {
                reporter: self.me(),
                signal,
            });
        }
    }

    /// Publishes, as this node's own, a report whose evidence it verified: the offence is
    /// proven, so saying so again reaches the peers the first report missed (at most once
    /// per offender and kind per publish interval, and never above what the evidence
    /// proves).
    fn corroborate(&mut self, signal: ThreatSignal) {
        let now = now_ms();
        let me = self.me();
        let interval = self.defences.publish_interval_ms();
        let slot = (signal.offender, signal.kind);
        if signal.offender == me
            || self
                .published
                .get(&slot)
                .is_some_and(|at| now.saturating_sub(*at) < interval)
        {
            return;
        }
        if self.published.len() >= MAX_PUBLISHED {
            self.published
                .retain(|_, at| now.saturating_sub(*at) < interval);
            if self.published.len() >= MAX_PUBLISHED {
                return;
            }
        }
        self.published.insert(slot, now);
        let signal = ThreatSignal {
            severity: signal
                .severity
                .min(membrane_immune::detectors::default_severity(signal.kind)),
            ..signal
        };
        debug!(offender = %signal.offender, kind = ?signal.kind, "corroborating a verified report");
        self.metrics.threats.inc();
        self.note(EventKind::Threat {
            space: signal.space.clone(),
            reporter: me,
            offender: signal.offender,
            offence: signal.kind,
            severity: signal.severity,
        });
        let _ = self.events.send(NodeEvent::Threat {
            reporter: me,
            signal: signal.clone(),
        });
        self.publish_signal(signal);
    }

    /// Publishes a threat signal as is (adversarial tests), retried like this node's own
    /// while no peer listens.
    fn publish_raw_threat(&mut self, signal: &ThreatSignal) -> Result<(), NodeError> {
        if !self.medium.spaces().any(|s| s == &signal.space) {
            return Err(NodeError::UnknownSpace(signal.space.clone()));
        }
        self.publish_signal(signal.clone());
        Ok(())
    }

    /// An operator's override.
    fn govern(
        &mut self,
        decision: membrane_immune::Override,
        now: u64,
    ) -> Result<Vec<membrane_immune::AuditRecord>, NodeError> {
        use membrane_immune::Override;
        let (Override::Release(peer)
        | Override::Unban(peer)
        | Override::Ban(peer)
        | Override::Quarantine(peer)
        | Override::Exonerate(peer)) = decision;
        if peer == self.me() {
            return Err(NodeError::Invalid(format!(
                "{peer} is this node itself (expected another peer's id)"
            )));
        }
        let outcome = self.defences.operator(decision, now);
        let records = outcome.records.clone();
        self.carry_out(outcome, &ThreatContext::default());
        Ok(records)
    }

    /// The immune layer's timer: expire bans and quarantines, refresh gossipsub's
    /// application scores (they decay between events).
    fn immune_tick(&mut self) {
        let now = now_ms();
        self.retry_signals();
        let interval = self.defences.publish_interval_ms();
        self.published
            .retain(|_, at| now.saturating_sub(*at) < interval);
        let outcome = self.defences.tick(now);
        self.carry_out(outcome, &ThreatContext::default());
        for (peer, score) in self.defences.app_scores(now) {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer.to_peer_id(), score);
        }
    }

    fn on_sync_request(
        &mut self,
        peer: PeerId,
        request: SyncMessage,
        channel: ResponseChannel<SyncMessage>,
    ) {
        self.metrics
            .sync_messages
            .get_or_create(&crate::metrics::DirectionLabels { direction: "in" })
            .inc();
        let doc = DocId {
            space: request.space.clone(),
            doc: request.doc.clone(),
        };
        let refused = self.receive_frames(peer, &doc, &request.frames);
        let response = match refused {
            Some(refusal) => SyncMessage {
                space: doc.space.clone(),
                doc: doc.doc.clone(),
                frames: Vec::new(),
                more: false,
                refused: Some(refusal),
            },
            None => {
                let frames = PublicKey::from_peer_id(&peer)
                    .map(|key| self.medium.sync_generate(&key, &doc))
                    .unwrap_or_default();
                let outbox = self.outbox.entry((peer, doc.clone())).or_default();
                outbox.extend(frames);
                drain(&doc, outbox)
            }
        };
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response)
            .is_err()
        {
            debug!(%peer, "sync response dropped: the peer went away");
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, response: SyncMessage) {
        let doc = DocId {
            space: response.space.clone(),
            doc: response.doc.clone(),
        };
        self.in_flight.remove(&(peer, doc.clone()));
        let Ok(key) = PublicKey::from_peer_id(&peer) else {
            return;
        };
        match response.refused {
            // Not now (retried by a later round) or not at all: either way this exchange
            // ends and the next one starts from a fresh session.
            Some(Refusal::NotYet | Refusal::UnknownSpace) => {
                self.medium.reset_session(&key, &doc);
                self.outbox.remove(&(peer, doc));
                return;
            }
            Some(Refusal::Rejected) => {
                self.drop_peer_sessions(peer);
                return;
            }
            None => {}
        }
        if self.receive_frames(peer, &doc, &response.frames).is_some() {
            return;
        }
        // Our generator decides whether an answer is due; if the peer holds more, pull it.
        self.start_sync(peer, doc, response.more);
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let now = now_ms();
        let content = immune::gossip_content(&id.0, &message.data);
        // In strict mode the origin signed the message: what it carries is its doing.
        let origin = message
            .source
            .and_then(|p| PublicKey::from_peer_id(&p).ok());
        if self.defences.is_replayed(&content, now) {
            self.metrics.gossip_rejected.inc();
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, MessageAcceptance::Reject);
            if let Some(origin) = origin {
                self.observe(
                    Observation::Received {
                        peer: origin,
                        channel: Traffic::Gossip,
                        content,
                    },
                    &ThreatContext::default(),
                );
            }
            return;
        }
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
        let verdict = self.check_gossip(&message, &spaces);
        // A quarantined or banned origin's messages are neither used nor passed on.
        let refused = origin.is_some_and(|o| !self.defences.accepts_from(&o, now));
        let acceptance = match &verdict {
            Ok(_) if refused => MessageAcceptance::Ignore,
            Ok((_, channel, _)) => {
                self.metrics
                    .gossip_in
                    .get_or_create(&crate::metrics::ChannelLabels {
                        channel: channel.name(),
                    })
                    .inc();
                MessageAcceptance::Accept
            }
            Err(Some(_)) => {
                self.metrics.gossip_rejected.inc();
                MessageAcceptance::Reject
            }
            Err(None) => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        let (space, channel, envelope) = match verdict {
            Ok(_) if refused => return,
            Ok(v) => v,
            Err(Some(refusal)) => {
                debug!(%source, why = refusal.why, "gossip rejected");
                if let (Some(origin), Some(fault)) = (origin, refusal.fault) {
                    let mut context = ThreatContext {
                        space: topics::lookup(&message.topic, &spaces).map(|(s, _)| s),
                        evidence: BTreeMap::new(),
                    };
                    if message.data.len() <= MAX_EVIDENCE_BYTES {
                        context.evidence.insert(content, message.data.clone());
                    }
                    self.observe(
                        Observation::Rejected {
                            peer: origin,
                            author: None,
                            content,
                            fault,
                        },
                        &context,
                    );
                }
                return;
            }
            Err(None) => return,
        };
        let author = *envelope.author();
        self.observe(
            Observation::Received {
                peer: author,
                channel: Traffic::Gossip,
                content: crate::content::gossip_payload(&envelope),
            },
            &ThreatContext::space(space.clone()),
        );
        match channel {
            Channel::Heads => {
                let Ok(heads) = envelope.open::<Heads>() else {
                    return;
                };
                let doc = DocId {
                    space,
                    doc: heads.doc,
                };
                let known = self.medium.heads(&doc).unwrap_or_default();
                let unknown = heads
                    .heads
                    .iter()
                    .any(|h| !known.iter().any(|k| k.0.as_slice() == h.as_slice()));
                if unknown {
                    // Sync with the author if connected, else with whoever relayed it.
                    let author_peer = author.to_peer_id();
                    let peer = if self.connected.contains(&author_peer) {
                        author_peer
                    } else {
                        source
                    };
                    if let Ok(key) = PublicKey::from_peer_id(&peer)
                        && self.medium.docs_for_peer(&doc.space, &key).contains(&doc)
                    {
                        // Automerge generates nothing new while it awaits an answer to its
                        // last message, and the peer may have had nothing to answer. A fresh
                        // session always speaks first, and the peer, receiving it, sends
                        // what we lack.
                        self.medium.reset_session(&key, &doc);
                        self.start_sync(peer, doc, true);
                    }
                }
            }
            Channel::Threats => {
                if let Ok(signal) = envelope.open::<ThreatSignal>() {
                    let verdict = immune::verify_evidence(&self.medium, &signal);
                    info!(reporter = %author, offender = %signal.offender, kind = ?signal.kind, ?verdict, "threat signal");
                    self.metrics.threats.inc();
                    self.note(EventKind::Threat {
                        space: signal.space.clone(),
                        reporter: author,
                        offender: signal.offender,
                        offence: signal.kind,
                        severity: signal.severity,
                    });
                    let _ = self.events.send(NodeEvent::Threat {
                        reporter: author,
                        signal: signal.clone(),
                    });
                    let accepted = self.defences.accepts_from(&author, now);
                    self.observe(
                        Observation::ThreatReceived {
                            reporter: author,
                            signal: signal.clone(),
                            verdict,
                        },
                        &ThreatContext::space(space),
                    );
                    if verdict == membrane_immune::Verdict::Confirmed && accepted {
                        self.corroborate(signal);
                    }
                }
            }
            Channel::Capabilities => {
                if let Ok(ad) = envelope.open::<CapabilityAd>() {
                    trace!(agent = %author, name = %ad.name, "capability ad");
                    let slot = (author, ad.space.clone());
                    if self
                        .ads
                        .get(&slot)
                        .is_none_or(|old| old.version < ad.version)
                    {
                        self.ads.insert(slot, ad);
                    }
                }
            }
            Channel::Intents => {
                // Paused: nothing crosses in.
                if self.defences.paused() {
                    return;
                }
                if let Ok(intent) = envelope.open::<Intent>() {
                    self.on_intent(&intent, author);
                }
            }
            Channel::Broadcasts => {
                // Paused: nothing crosses in.
                if self.defences.paused() {
                    return;
                }
                if let Ok(broadcast) = envelope.open::<Broadcast>() {
                    self.note(EventKind::Broadcast {
                        space: broadcast.space,
                        from: author,
                        message: broadcast.message,
                    });
                }
            }
        }
    }

    /// Validates a gossip message: our signature, its size, its kind for the topic, its
    /// space, and that its author is the gossip source. `Err(None)` means ignore.
    fn check_gossip(
        &self,
        message: &gossipsub::Message,
        spaces: &[Space],
    ) -> Result<(Space, Channel, Envelope), Option<GossipRefusal>> {
        let (space, channel) = topics::lookup(&message.topic, spaces).ok_or(None)?;
        let envelope = Envelope::decode(&message.data, channel.kind().max_frame_bytes(), now_ms())
            .map_err(|e| Some(GossipRefusal::new(e.to_string(), envelope_fault(&e))))?;
        if envelope.kind() != channel.kind() {
            return Err(Some(GossipRefusal::new(
                format!("a {} on the {channel:?} topic", envelope.kind()),
                Some(Fault::Undecodable),
            )));
        }
        let source = message
            .source
            .ok_or_else(|| Some(GossipRefusal::new("no source", None)))?;
        let source_key = PublicKey::from_peer_id(&source)
            .map_err(|e| Some(GossipRefusal::new(e.to_string(), None)))?;
        envelope
            .expect_author(&source_key)
            .map_err(|e| Some(GossipRefusal::new(e.to_string(), envelope_fault(&e))))?;
        let payload_space = match channel {
            Channel::Heads => envelope.open::<Heads>().map(|p| p.space),
            Channel::Threats => envelope.open::<ThreatSignal>().map(|p| p.space),
            Channel::Capabilities => envelope.open::<CapabilityAd>().map(|p| p.space),
            Channel::Intents => envelope.open::<Intent>().map(|p| p.space),
            Channel::Broadcasts => envelope.open::<Broadcast>().map(|p| p.space),
        }
        .map_err(|e| Some(GossipRefusal::new(e.to_string(), Some(Fault::Undecodable))))?;
        if payload_space != space {
            return Err(Some(GossipRefusal::new(
                format!("a payload of space {payload_space} on a topic of {space}"),
                Some(Fault::Undecodable),
            )));
        }
        Ok((space, channel, envelope))
    }

    /// Feeds libp2p's own metrics.
    fn record(&self, event: &SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.p2p_metrics.record(event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.p2p_metrics.record(e),
            _ => {}
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen(address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    self.connected.insert(peer_id);
                    self.write_info();
                    if let Ok(peer) = PublicKey::from_peer_id(&peer_id) {
                        info!(%peer, peers = self.connected.len(), "peer connected");
                        let _ = self.events.send(NodeEvent::PeerConnected { peer });
                        let score = self.defences.app_score(&peer, now_ms());
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .set_application_score(&peer_id, score);
                        // A peer whose standing does not admit it is disconnected at once.
                        self.observe(Observation::Connected { peer }, &ThreatContext::default());
                    }
                    let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
                    for space in &spaces {
                        self.sync_all_docs(peer_id, space);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.write_info();
                self.drop_peer_sessions(peer_id);
                if let Ok(peer) = PublicKey::from_peer_id(&peer_id) {
                    let _ = self.events.send(NodeEvent::PeerDisconnected { peer });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for addr in info.listen_addrs {
                        kad.add_address(&peer_id, addr);
                    }
                    // Now the routing table holds someone: look for the rest of the mesh.
                    if let Err(e) = kad.bootstrap() {
                        trace!(error = %e, "kad bootstrap");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => {
                // The first peer in the routing table: announce our capabilities to the DHT
                // (at start there was nobody to store the records with).
                if !self.announced {
                    self.announced = true;
                    self.provide_capabilities();
                }
                // Meet every peer the DHT reveals, up to a bound, so a small mesh becomes
                // fully connected and sync need not route through one node.
                if !self.connected.contains(&peer)
                    && self.connected.len() < MAX_DIAL_MESH
                    && self.may_meet(&peer)
                    && let Err(e) = self.swarm.dial(peer)
                {
                    trace!(%peer, error = %e, "dial discovered peer");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) if !self.pending_threats.is_empty() => self.retry_signals(),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.on_sync_request(peer, request, channel);
                }
                request_response::Message::Response { response, .. } => {
                    self.on_sync_response(peer, response);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => {
                debug!(%peer, %error, "sync request failed");
                self.in_flight.retain(|(p, _)| *p != peer);
                if let Ok(key) = PublicKey::from_peer_id(&peer) {
                    self.medium.drop_sessions(&key);
                }
                self.outbox.retain(|(p, _), _| *p != peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(event)) => self.on_direct(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => {
                if let kad::QueryResult::GetProviders(result) = result {
                    if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                        && let Some((found, _)) = self.provider_queries.get_mut(&id)
                    {
                        found.extend(
                            providers
                                .iter()
                                .filter_map(|p| PublicKey::from_peer_id(p).ok()),
                        );
                    }
                    if step.last
                        && let Some((found, reply)) = self.provider_queries.remove(&id)
                    {
                        let _ = reply.send(Ok(found.into_iter().collect()));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.connected.contains(&peer) && self.may_meet(&peer) {
                        debug!(%peer, %addr, "found on the LAN");
                        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                            kad.add_address(&peer, addr.clone());
                        }
                        if let Err(e) = self.swarm.dial(addr) {
                            trace!(%peer, error = %e, "dial LAN peer");
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(
                libp2p::autonat::Event::StatusChanged { new, .. },
            )) => {
                info!(status = ?new, "NAT status");
                // Behind NAT: listen through the bootstrap nodes as relays, so others can
                // reach us (and DCUtR can upgrade to a direct connection).
                if matches!(new, libp2p::autonat::NatStatus::Private) {
                    for addr in self.options.bootstrap.clone() {
                        let circuit = addr.with(libp2p::multiaddr::Protocol::P2pCircuit);
                        if let Err(e) = self.swarm.listen_on(circuit.clone()) {
                            debug!(%circuit, error = %e, "cannot listen through relay");
                        }
                    }
                }
            }
            other => trace!(?other, "swarm event"),
        }
    }
}

/// Takes frames from the front of `outbox` up to the message budget.
fn drain(doc: &DocId, outbox: &mut VecDeque<Vec<u8>>) -> SyncMessage {
    let mut frames = Vec::new();
    let mut size = 0;
    while let Some(front) = outbox.front() {
        if !frames.is_empty() && size + front.len() > MESSAGE_FRAME_BUDGET {
            break;
        }
        size += front.len();
        if let Some(frame) = outbox.pop_front() {
            frames.push(ByteBuf::from(frame));
        }
    }
    SyncMessage {
        space: doc.space.clone(),
        doc: doc.doc.clone(),
        frames,
        more: !outbox.is_empty(),
        refused: None,
    }
}
