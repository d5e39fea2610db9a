//! # membrane-node
//!
//! The membrane node: the only crate that does IO. Today it holds the durable storage
//! backend ([`storage::SledStorage`]) the shared medium runs on; the libp2p mesh, the
//! agent's API and the `membrane` command arrive with their issues.

pub mod storage;
