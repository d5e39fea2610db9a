//! # membrane-simulations
//!
//! Simulations and benchmarks of membrane over many nodes. This crate is being built;
//! until then it exports nothing, so nothing here claims to work.
