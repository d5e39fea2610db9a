//! Everything libp2p: the composed behaviour, the sync codec, the gossip topics, the swarm
//! builder and the event loop that translates swarm events into medium operations. No
//! libp2p type leaves this module except through [`crate::node`]'s own types.

mod behaviour;
pub(crate) mod codec;
pub(crate) mod direct;
pub(crate) mod direct_codec;
pub(crate) mod service;
mod topics;

use std::time::Duration;

use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::{Swarm, SwarmBuilder, Transport, noise, tcp, yamux};

pub(crate) use behaviour::{Behaviour, Roles};
pub use direct::{Accept as DirectAccept, Policy as DirectPolicy};
pub use direct_codec::{Reason as RefusalReason, Refusal};

/// Which transport a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP with DNS resolution: real nodes.
    Tcp,
    /// libp2p's in-process memory transport: many nodes in one test or simulation.
    Memory,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn behaviour(
    key: &libp2p::identity::Keypair,
    relay_client: libp2p::relay::client::Behaviour,
    roles: Roles,
) -> Result<Behaviour, BoxError> {
    Ok(Behaviour::new(key, relay_client, roles)?)
}

/// How long an idle connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn build_swarm(
    key: libp2p::identity::Keypair,
    transport: TransportKind,
    roles: Roles,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = match transport {
        TransportKind::Tcp => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_dns()?
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, relay| behaviour(key, relay, roles))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build(),
        TransportKind::Memory => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| -> Result<_, BoxError> {
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })?
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, relay| behaviour(key, relay, roles))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build(),
    };
    Ok(swarm)
}
