//! Shared helpers for the node's multi-node tests.
#![allow(dead_code, clippy::panic, unreachable_pub)]

pub mod process;

use std::future::Future;
use std::time::Duration;

use membrane_node::NodeHandle;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// How long any one wait may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Waits until `check` holds, re-checking after every event the node emits; panics with
/// `what` at the deadline. Never sleeps.
pub async fn eventually<F, Fut>(node: &NodeHandle, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut events = node.subscribe();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("node stopped while waiting for {what}"),
            Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
        }
    }
}
