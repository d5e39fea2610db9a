//! # membrane-simulations
//!
//! Benchmarks and simulations that turn membrane's claims into figures anyone can rerun.
//! Each binary prints a table; `docs/benchmarks.md` records the latest figures with the
//! command that produced them.
//!
//! * `medium-bench`: the shared medium against raw Automerge in the same run (write
//!   throughput, cold and incremental sync, query and search latency, storage, memory).

pub mod corpus;
pub mod stats;
