//! # membrane-crdt: the shared medium
//!
//! Layer 2 of the membrane: Automerge documents of signed entries, validated sync,
//! audiences, queries, search, decay and durable storage. Sans-IO: time, randomness and
//! storage come in through parameters and a trait. This crate is being built; until then
//! it exports nothing, so nothing here claims to work.
