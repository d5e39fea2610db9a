//! # membrane-node
//!
//! The membrane node: the only crate that does IO. It runs the shared medium
//! ([`membrane_crdt::Medium`]) on durable storage ([`storage::SledStorage`]) and connects
//! it to other nodes over libp2p: Kademlia discovery, gossipsub signals, and validated sync
//! over request-response. [`node::Node::spawn`] starts one; [`node::NodeHandle`] drives it.

pub mod api;
pub mod budget;
pub mod cli;
pub mod config;
pub mod content;
#[doc(hidden)]
pub mod fuzzing;
mod governance;
pub mod immune;
pub mod info;
pub mod keyfile;
pub mod mcp;
pub mod metrics;
pub mod network;
pub mod node;
pub mod storage;

pub use network::{DirectAccept, DirectPolicy, Refusal, RefusalReason, TransportKind};
pub use node::{
    Delivery, Node, NodeError, NodeEvent, NodeHandle, NodeOptions, Outgoing, PeerInfo, Status,
    TrustEdgeView,
};
