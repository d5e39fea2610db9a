//! A node process killed with SIGKILL while its agent writes through the API, then
//! restarted: every write the API acknowledged is there, with its value and id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::DEADLINE;
use common::process::NodeProcess;
use membrane_node::api::client::Client;
use serde_json::json;

const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    // key → (id, value) of every acknowledged write.
    let mut acknowledged: BTreeMap<String, (String, String)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut node = NodeProcess::start(&dir, &["--space", "crash"]);
        tokio::task::block_in_place(|| node.wait_ready());
        let client = Client::locate(None, None, &dir).unwrap();
        // Everything acknowledged before is still there after the restart.
        let answer = client
            .call("query", &json!({"pattern": "crash.**"}))
            .await
            .unwrap();
        let held: BTreeMap<String, (String, String)> = answer["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let text = |f: &str| h[f].as_str().unwrap().to_owned();
                (text("key"), (text("id"), text("value")))
            })
            .collect();
        for (key, written) in &acknowledged {
            assert_eq!(held.get(key), Some(written), "round {round}: {key} lost");
        }
        // A write made durable whose answer the kill cut off may be there too; from now on
        // it is held like the rest.
        acknowledged = held;
        // Write as fast as the API answers, from two tasks, and kill the node mid-stream
        // once 40 more writes are acknowledged.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let client = client.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("crash.r{round}.w{w}.n{i}");
                        let value = format!("value {i} of writer {w} in round {round} ✓");
                        let body = json!({"key": key, "value": value, "tier": "public"});
                        match client.call("expose", &body).await {
                            Ok(answer) => {
                                let id = answer["id"].as_str().unwrap().to_owned();
                                if tx.send((key, id, value)).is_err() {
                                    return;
                                }
                            }
                            // The node died under us: this write was never acknowledged.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut this_round = 0;
        while this_round < 40 {
            let (key, id, value) = tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("writes in time")
                .expect("writers alive");
            acknowledged.insert(key, (id, value));
            this_round += 1;
        }
        node.child.kill().unwrap(); // SIGKILL
        node.child.wait().unwrap();
        // Writes acknowledged between our count and the kill count too.
        while let Some((key, id, value)) = rx.recv().await {
            acknowledged.insert(key, (id, value));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        drop(node);
    }
    assert!(acknowledged.len() >= ROUNDS * 40);
}
