//! # membrane-immune: the immune layer and governance rules
//!
//! Per-peer reputation, detectors, memory cells, threat-signal handling, budgets and
//! circuit breakers, as pure state machines. This crate is being built; until then it
//! exports nothing, so nothing here claims to work.
