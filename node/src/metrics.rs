//! The node's Prometheus metrics: libp2p's own swarm and protocol metrics, and ours: peers,
//! gossip in and out, sync sessions and messages, changes applied and rejected, entries,
//! direct messages sent, received, refused (by reason) and failed.
//! One registry per node, shared with the API, which serves it at `GET /metrics`. Label
//! values come from our own enums, never from peers, so their number is bounded.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A gossip channel, as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ChannelLabels {
    pub(crate) channel: &'static str,
}

/// A sync direction, as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub(crate) direction: &'static str,
}

/// A direct message's direction and, for refusals and failures, why: labels from our own
/// enums (`RefusalReason::name`, and `unreachable` / `timeout`), never from peers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectLabels {
    pub(crate) direction: &'static str,
    pub(crate) reason: &'static str,
}

/// The node's own metrics.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    pub(crate) peers: Gauge,
    pub(crate) gossip_in: Family<ChannelLabels, Counter>,
    pub(crate) gossip_out: Family<ChannelLabels, Counter>,
    pub(crate) gossip_rejected: Counter,
    pub(crate) sync_sessions: Gauge,
    pub(crate) sync_messages: Family<DirectionLabels, Counter>,
    pub(crate) changes_applied: Counter,
    pub(crate) changes_rejected: Counter,
    pub(crate) entries: Gauge,
    pub(crate) threats: Counter,
    pub(crate) direct_sent: Counter,
    pub(crate) direct_received: Counter,
    pub(crate) direct_refused: Family<DirectLabels, Counter>,
    pub(crate) direct_failed: Family<DirectLabels, Counter>,
}

impl NodeMetrics {
    /// Registers the node's metrics, and libp2p's, in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> (Self, libp2p::metrics::Metrics) {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let metrics = Self {
            peers: Gauge::default(),
            gossip_in: Family::default(),
            gossip_out: Family::default(),
            gossip_rejected: Counter::default(),
            sync_sessions: Gauge::default(),
            sync_messages: Family::default(),
            changes_applied: Counter::default(),
            changes_rejected: Counter::default(),
            entries: Gauge::default(),
            threats: Counter::default(),
            direct_sent: Counter::default(),
            direct_received: Counter::default(),
            direct_refused: Family::default(),
            direct_failed: Family::default(),
        };
        registry.register("peers", "Connected peers", metrics.peers.clone());
        registry.register(
            "gossip_received",
            "Gossip messages accepted, by channel",
            metrics.gossip_in.clone(),
        );
        registry.register(
            "gossip_published",
            "Gossip messages published, by channel",
            metrics.gossip_out.clone(),
        );
        registry.register(
            "gossip_rejected",
            "Gossip messages rejected by validation",
            metrics.gossip_rejected.clone(),
        );
        registry.register(
            "sync_sessions",
            "Sync exchanges in flight (peer, document)",
            metrics.sync_sessions.clone(),
        );
        registry.register(
            "sync_messages",
            "Sync messages, by direction",
            metrics.sync_messages.clone(),
        );
        registry.register(
            "changes_applied",
            "Peers' changes applied to the shared medium",
            metrics.changes_applied.clone(),
        );
        registry.register(
            "changes_rejected",
            "Peers' changes refused by the shared medium",
            metrics.changes_rejected.clone(),
        );
        registry.register(
            "entries",
            "Entries held, in every space",
            metrics.entries.clone(),
        );
        registry.register(
            "threat_signals",
            "Threat signals received or published",
            metrics.threats.clone(),
        );
        registry.register(
            "direct_sent",
            "Direct messages this agent sent that their receiver accepted",
            metrics.direct_sent.clone(),
        );
        registry.register(
            "direct_received",
            "Direct messages accepted for this agent",
            metrics.direct_received.clone(),
        );
        registry.register(
            "direct_refused",
            "Direct messages refused, by direction (in: this node refused; out: the receiver \
             refused ours) and reason",
            metrics.direct_refused.clone(),
        );
        registry.register(
            "direct_failed",
            "Direct messages of this agent that got no acknowledgement, by reason \
             (unknown_agent, unreachable, timeout)",
            metrics.direct_failed.clone(),
        );
        (metrics, libp2p)
    }
}

/// The registry a node and its API share.
#[derive(Debug, Clone, Default)]
pub struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    /// An empty registry, every name prefixed `membrane_`.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Registry::with_prefix("membrane"))))
    }

    /// The registry, to register more metrics in.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.lock()).is_err() {
            out.clear();
        }
        out
    }
}
