//! # membrane-simulations
//!
//! Benchmarks and simulations that turn membrane's claims into figures anyone can rerun.
//! Each binary prints a table; `docs/benchmarks.md` records the latest figures with the
//! command that produced them, and `docs/simulations.md` explains each.
//!
//! * `medium-bench`: the shared medium against raw Automerge in the same run (write
//!   throughput, cold and incremental sync, query and search latency, storage, memory).
//! * `five-agents`: the reference scenario over five real nodes through the agent API
//!   ([`five_agents`]).
//! * `benchmark`: the design documents' cost model reproduced (`--model seed`,
//!   [`costmodel`]) and the real measurement with tiktoken and recall on HotpotQA
//!   (`--model measured`, [`measured`]).

pub mod apinode;
pub mod corpus;
pub mod costmodel;
pub mod five_agents;
pub mod measured;
pub mod stats;
pub mod svg;
