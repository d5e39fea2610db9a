//! Inputs kept from the node's fuzz targets (`node/fuzz/regressions/<target>/`: seeds, and
//! crash inputs if a target ever finds one), replayed through the same entry points: none
//! may panic.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for path in files {
        run(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn sync_message_inputs() {
    replay("sync_message", membrane_node::fuzzing::sync_message);
}

#[test]
fn api_request_inputs() {
    replay("api_request", membrane_node::fuzzing::api_request);
}

#[test]
fn sse_inputs() {
    replay("sse", membrane_node::fuzzing::sse);
}

#[test]
fn direct_message_inputs() {
    replay("direct_message", membrane_node::fuzzing::direct_message);
}
