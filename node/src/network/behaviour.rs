//! One composed `NetworkBehaviour`, in the order that matters: connection and memory limits
//! first (they refuse before anything else spends on a connection), then the gate that
//! refuses banned peers (fed by the immune layer's bans, `crate::immune`), then identify,
//! ping, Kademlia, gossipsub (scored, with the immune layer's application score), the
//! sync protocol and direct messages.
//! A light node (simulations) leaves out everything but the limits, the gate, ping,
//! gossipsub, sync and direct messages: it talks only to the peers it dials or that dial it.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity, kad, mdns, memory_connection_limits, ping, relay, request_response,
};
use sha2_hash::content_id;

use super::codec::{SYNC_PROTOCOL, SyncCodec};
use super::direct_codec::{DIRECT_PROTOCOL, DirectCodec};

/// Kademlia protocol name: our own, so the node never joins the IPFS DHT.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/membrane/kad/1.0.0");
/// Identify protocol name.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/membrane/id/1.0.0";
/// Largest gossip message: gossipsub's own cap.
pub(crate) const MAX_GOSSIP_BYTES: usize = 64 * 1024;
/// Connections kept at most, in all and per peer.
pub(crate) const MAX_ESTABLISHED: u32 = 256;
/// Connections per peer at most.
pub(crate) const MAX_PER_PEER: u32 = 2;
/// Incoming connections being negotiated at once, at most.
pub(crate) const MAX_PENDING_INCOMING: u32 = 64;
/// Refuse new connections when the process uses more than this share of system memory.
pub(crate) const MAX_MEMORY_PERCENTAGE: f64 = 0.9;
/// How long a sync request may take before it is abandoned.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Sync streams open at once, at most.
pub(crate) const MAX_SYNC_STREAMS: usize = 64;
/// How long a direct message may wait for its acknowledgement.
pub(crate) const DIRECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Direct-message streams open at once per connection, at most.
pub(crate) const MAX_DIRECT_STREAMS: usize = 32;

/// Peer-score thresholds for gossipsub (see the gossipsub v1.1 spec): below
/// `GOSSIP_THRESHOLD` a peer gets no gossip from us, below `PUBLISH_THRESHOLD` none of our
/// own messages, below `GRAYLIST_THRESHOLD` we ignore it altogether.
pub(crate) const GOSSIP_THRESHOLD: f64 = -10.0;
/// See [`GOSSIP_THRESHOLD`].
pub(crate) const PUBLISH_THRESHOLD: f64 = -50.0;
/// See [`GOSSIP_THRESHOLD`].
pub(crate) const GRAYLIST_THRESHOLD: f64 = -80.0;
/// Broken gossip promises (IWANT not answered) a peer may have, decaying, before they
/// count against its score...
const BEHAVIOUR_PENALTY_THRESHOLD: f64 = 10.0;
/// ...and then each one more costs its square times this: 13 over the threshold are
/// below the publish threshold, a sustained IWANT-spammer's pattern, not a slow node's.
const BEHAVIOUR_PENALTY_WEIGHT: f64 = -0.3;
/// Weight of the immune layer's application score (`membrane_immune::reputation::app_score`,
/// fed with `set_application_score`) in a peer's gossipsub score.
pub(crate) const APP_SPECIFIC_WEIGHT: f64 = 1.0;

mod sha2_hash {
    /// A gossip message id that depends only on content, so duplicates relayed by
    /// different peers are recognised.
    pub(super) fn content_id(data: &[u8]) -> libp2p::gossipsub::MessageId {
        use sha2::Digest;
        libp2p::gossipsub::MessageId::from(sha2::Sha256::digest(data).to_vec())
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) gate: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) relay_client: Toggle<relay::client::Behaviour>,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    pub(crate) autonat: Toggle<autonat::Behaviour>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) identify: Toggle<identify::Behaviour>,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) direct: request_response::Behaviour<DirectCodec>,
}

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
    #[error("mDNS: {0}")]
    Mdns(std::io::Error),
}

/// Which optional roles the behaviour takes on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Roles {
    /// Kademlia server mode from the start.
    pub(crate) kad_server: bool,
    /// Circuit relay for nodes behind NAT.
    pub(crate) relay_server: bool,
    /// LAN discovery.
    pub(crate) mdns: bool,
    /// A light node: no Kademlia, identify, AutoNAT, DCUtR, relay or mDNS (overrides the
    /// roles above).
    pub(crate) light: bool,
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        roles: Roles,
    ) -> Result<Self, BuildError> {
        let kad_server = roles.kad_server;
        let full = !roles.light;
        let peer_id = key.public().to_peer_id();
        let mdns = if roles.mdns && full {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(BuildError::Mdns)?,
            )
        } else {
            None
        };
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(MAX_ESTABLISHED))
            .with_max_established_per_peer(Some(MAX_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));

        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_BYTES)
            .message_id_fn(|m: &gossipsub::Message| content_id(&m.data))
            .build()
            .map_err(|e| BuildError::Gossipsub(e.to_string()))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| BuildError::Gossipsub(e.to_owned()))?;
        gossipsub
            .with_peer_score(
                gossipsub::PeerScoreParams {
                    // The immune layer's application score is a reputation in [-100, 25],
                    // scaled for a weight of 1: its disconnect threshold (-50) meets our
                    // publish threshold, and a ban (-90 or less) falls below the graylist.
                    app_specific_weight: APP_SPECIFIC_WEIGHT,
                    // A node a flood slows down breaks gossip promises and lets its peers'
                    // send queues fill. Scored as gossipsub does by default, one broken
                    // promise (-10) or a backlog is enough for every peer to prune it and
                    // stop sending to it for the prune backoff, cutting an honest node off
                    // just when the flood ends (decision 112). Misbehaviour is the immune
                    // layer's to score; here, only many broken promises count.
                    behaviour_penalty_weight: BEHAVIOUR_PENALTY_WEIGHT,
                    behaviour_penalty_threshold: BEHAVIOUR_PENALTY_THRESHOLD,
                    slow_peer_weight: 0.0,
                    ..gossipsub::PeerScoreParams::default()
                },
                gossipsub::PeerScoreThresholds {
                    gossip_threshold: GOSSIP_THRESHOLD,
                    publish_threshold: PUBLISH_THRESHOLD,
                    graylist_threshold: GRAYLIST_THRESHOLD,
                    ..gossipsub::PeerScoreThresholds::default()
                },
            )
            .map_err(BuildError::Gossipsub)?;

        let kad = full.then(|| {
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            // Provider records live 48 h by default; republishing hourly keeps them fresh
            // long before they could expire.
            kad_config.set_provider_publication_interval(Some(Duration::from_secs(3600)));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            if kad_server {
                kad.set_mode(Some(kad::Mode::Server));
            }
            kad
        });

        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            memory: memory_connection_limits::Behaviour::with_max_percentage(MAX_MEMORY_PERCENTAGE),
            gate: allow_block_list::Behaviour::default(),
            relay_client: Toggle::from(full.then_some(relay_client)),
            relay_server: Toggle::from(
                (roles.relay_server && full)
                    .then(|| relay::Behaviour::new(peer_id, relay::Config::default())),
            ),
            dcutr: Toggle::from(full.then(|| dcutr::Behaviour::new(peer_id))),
            autonat: Toggle::from(
                full.then(|| autonat::Behaviour::new(peer_id, autonat::Config::default())),
            ),
            mdns: Toggle::from(mdns),
            identify: Toggle::from(full.then(|| {
                identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("membrane/{}", env!("CARGO_PKG_VERSION"))),
                )
            })),
            ping: ping::Behaviour::default(),
            kad: Toggle::from(kad),
            gossipsub,
            sync: request_response::Behaviour::with_codec(
                SyncCodec,
                [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(SYNC_TIMEOUT)
                    .with_max_concurrent_streams(MAX_SYNC_STREAMS),
            ),
            direct: request_response::Behaviour::with_codec(
                DirectCodec,
                [(DIRECT_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(DIRECT_TIMEOUT)
                    .with_max_concurrent_streams(MAX_DIRECT_STREAMS),
            ),
        })
    }
}
