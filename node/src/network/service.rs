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
use membrane_protocol::cost::TokenCounter;
use membrane_protocol::signals::{
    Broadcast, CapabilityAd, Heads, Intent, Severity, ThreatKind, ThreatSignal,
};
use membrane_protocol::{Envelope, EnvelopeId, Keypair, PublicKey, Space};
use serde_bytes::ByteBuf;
use sha2::Digest;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, trace, warn};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::codec::{MAX_SYNC_MESSAGE_BYTES, Refusal, SyncMessage};
use super::topics::{self, Channel};
use crate::node::{Command, NodeError, NodeEvent, NodeOptions, PeerInfo, Status, own_reader};

/// Bytes of frames one sync message carries at most (frames are each ≤ 4 MiB).
const MESSAGE_FRAME_BUDGET: usize = MAX_SYNC_MESSAGE_BYTES - 64 * 1024;
/// Peers discovered through the DHT are dialled while fewer than this many are connected.
const MAX_DIAL_MESH: usize = 32;
/// How long a capability ad stays valid.
const AD_LIFETIME: Duration = Duration::from_secs(3600);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
}

impl<S: Storage + Send + 'static> Service<S> {
    pub(crate) async fn new(
        options: NodeOptions,
        (metrics, p2p_metrics): (crate::metrics::NodeMetrics, libp2p::metrics::Metrics),
        storage: S,
        tokens: Arc<dyn TokenCounter>,
        commands: mpsc::Receiver<Command>,
        shutdown: mpsc::Receiver<()>,
        events: broadcast::Sender<NodeEvent>,
    ) -> anyhow::Result<Self> {
        let keypair = options.keypair.clone();
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
        };
        let spaces: Vec<Space> = service.medium.spaces().cloned().collect();
        for space in &spaces {
            service.subscribe(space);
        }
        // What the log already says about coordination is not news after a restart.
        service.check_coordination(false);
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
        self.publish_ad();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => break,
                Some(command) = self.commands.recv() => self.on_command(command),
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = tick.tick() => self.anti_entropy(),
            }
            self.forward_medium_events();
        }
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
        let new: Vec<_> = self.medium.events_since(self.last_event).to_vec();
        for event in new {
            self.last_event = event.seq;
            let _ = self.events.send(NodeEvent::Medium(event));
        }
    }

    fn me(&self) -> PublicKey {
        self.keypair.public()
    }

    fn on_command(&mut self, command: Command) {
        let now = now_ms();
        let reader = own_reader(self.me());
        let err = crate::node::medium_error::<S::Error>;
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
            Command::Query(space, pattern, expired, reply) => {
                let _ = reply.send(
                    self.medium
                        .query(&reader, &space, &pattern, now, expired)
                        .map_err(err),
                );
            }
            Command::Search(space, text, max_tokens, reply) => {
                let _ = reply.send(
                    self.medium
                        .search(&reader, &space, &text, max_tokens, now)
                        .map_err(err),
                );
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

    /// Recomputes coordination in every space and logs an event for each swarm or task
    /// whose state changed since the last check.
    fn coordination_events(&mut self) {
        self.check_coordination(true);
    }

    /// Brings `self.coordination` up to date, logging changes if `log`.
    fn check_coordination(&mut self, log: bool) {
        let now = now_ms();
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
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
        }
    }

    /// Logs an event the medium did not produce itself.
    fn note(&mut self, kind: EventKind) {
        if let Err(e) = self.medium.note(kind) {
            warn!(error = %e, "cannot log an event");
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

    /// Announces the heads of this node's documents in `space` after a local change.
    fn announce(&mut self, space: &Space) {
        let docs = [
            DocId::public(space.clone()),
            DocId::trusted(space.clone(), self.me()),
        ];
        for doc in docs {
            let Some(heads) = self.medium.heads(&doc) else {
                continue;
            };
            let payload = Heads {
                space: space.clone(),
                doc: doc.doc.clone(),
                heads: heads.iter().map(|h| ByteBuf::from(h.0.to_vec())).collect(),
            };
            self.publish(space, Channel::Heads, &payload);
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

    fn publish<P: membrane_protocol::Payload>(
        &mut self,
        space: &Space,
        channel: Channel,
        payload: &P,
    ) {
        match Envelope::seal(&self.keypair, now_ms(), payload) {
            Ok(env) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(channel.topic(space), env.to_bytes());
                match result {
                    Ok(_) => self.count_out(channel),
                    Err(e) => trace!(%space, ?channel, error = %e, "publish"),
                }
            }
            Err(e) => warn!(error = %e, "cannot seal gossip"),
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

    fn anti_entropy(&mut self) {
        for addr in self.options.bootstrap.clone() {
            let connected = match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => self.connected.contains(&peer),
                _ => false,
            };
            if !connected {
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
        if self.in_flight.contains(&(peer, doc.clone())) {
            return;
        }
        let Ok(key) = PublicKey::from_peer_id(&peer) else {
            return;
        };
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
        for frame in frames {
            match self.medium.sync_receive(&key, frame) {
                Ok(report) if report.rejected.is_empty() => {
                    self.metrics.changes_applied.inc_by(report.applied as u64);
                }
                Ok(report) => {
                    self.metrics.changes_applied.inc_by(report.applied as u64);
                    self.metrics
                        .changes_rejected
                        .inc_by(report.rejected.len() as u64);
                    self.report_threat(key, &report, frame);
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
                    self.report_threat(key, &report, frame);
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
        None
    }

    fn drop_peer_sessions(&mut self, peer: PeerId) {
        if let Ok(key) = PublicKey::from_peer_id(&peer) {
            self.medium.drop_sessions(&key);
        }
        self.outbox.retain(|(p, _), _| *p != peer);
        self.in_flight.retain(|(p, _)| *p != peer);
    }

    fn report_threat(&mut self, offender: PublicKey, report: &SyncReport, evidence: &[u8]) {
        let Some(first) = report.rejected.first() else {
            return;
        };
        let (kind, severity) = match &first.reason {
            RejectReason::Forged(_) | RejectReason::Unsigned => {
                (ThreatKind::Forgery, Severity::Fatal)
            }
            RejectReason::Trespass(_) => (ThreatKind::Trespass, Severity::High),
            RejectReason::Equivocation { .. } => (ThreatKind::Equivocation, Severity::High),
            RejectReason::Oversize { .. }
            | RejectReason::Undecodable(_)
            | RejectReason::Panicked => (ThreatKind::Malformed, Severity::Mid),
            _ => (ThreatKind::Malformed, Severity::Low),
        };
        warn!(peer = %offender, reason = %first.reason, "peer sent bad sync data");
        let signal = ThreatSignal {
            space: report.doc.space.clone(),
            offender,
            kind,
            severity,
            evidence_hash: sha2::Sha256::digest(evidence).into(),
            evidence: (evidence.len() <= membrane_protocol::signals::MAX_EVIDENCE_BYTES)
                .then(|| ByteBuf::from(evidence.to_vec())),
        };
        let space = report.doc.space.clone();
        self.metrics.threats.inc();
        self.publish(&space, Channel::Threats, &signal);
        self.note(EventKind::Threat {
            space: space.clone(),
            reporter: self.me(),
            offender,
            offence: kind,
            severity,
        });
        let _ = self.events.send(NodeEvent::Threat {
            reporter: self.me(),
            signal,
        });
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
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
        let verdict = self.check_gossip(&message, &spaces);
        let acceptance = match &verdict {
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
            Ok(v) => v,
            Err(Some(why)) => {
                debug!(%source, why, "gossip rejected");
                return;
            }
            Err(None) => return,
        };
        let author = *envelope.author();
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
                    info!(reporter = %author, offender = %signal.offender, kind = ?signal.kind, "threat signal");
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
                        signal,
                    });
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
                if let Ok(intent) = envelope.open::<Intent>() {
                    trace!(agent = %author, topic = %intent.topic, "intent");
                }
            }
            Channel::Broadcasts => {
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
    #[allow(clippy::type_complexity)]
    fn check_gossip(
        &self,
        message: &gossipsub::Message,
        spaces: &[Space],
    ) -> Result<(Space, Channel, Envelope), Option<String>> {
        let (space, channel) = topics::lookup(&message.topic, spaces).ok_or(None)?;
        let envelope = Envelope::decode(&message.data, channel.kind().max_frame_bytes(), now_ms())
            .map_err(|e| Some(e.to_string()))?;
        if envelope.kind() != channel.kind() {
            return Err(Some(format!(
                "a {} on the {channel:?} topic",
                envelope.kind()
            )));
        }
        let source = message.source.ok_or_else(|| Some("no source".to_owned()))?;
        let source_key = PublicKey::from_peer_id(&source).map_err(|e| Some(e.to_string()))?;
        envelope
            .expect_author(&source_key)
            .map_err(|e| Some(e.to_string()))?;
        let payload_space = match channel {
            Channel::Heads => envelope.open::<Heads>().map(|p| p.space),
            Channel::Threats => envelope.open::<ThreatSignal>().map(|p| p.space),
            Channel::Capabilities => envelope.open::<CapabilityAd>().map(|p| p.space),
            Channel::Intents => envelope.open::<Intent>().map(|p| p.space),
            Channel::Broadcasts => envelope.open::<Broadcast>().map(|p| p.space),
        }
        .map_err(|e| Some(e.to_string()))?;
        if payload_space != space {
            return Err(Some(format!(
                "a payload of space {payload_space} on a topic of {space}"
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
                    && let Err(e) = self.swarm.dial(peer)
                {
                    trace!(%peer, error = %e, "dial discovered peer");
                }
            }
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
                    if !self.connected.contains(&peer) {
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
