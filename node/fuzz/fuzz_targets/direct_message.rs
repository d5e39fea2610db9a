//! Fuzz target: `membrane_node::fuzzing::direct_message` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| membrane_node::fuzzing::direct_message(data));
