//! Quorum sensing over five node processes: three agents state an intent on one topic
//! (spelt differently, one too weakly to count at first), every node sees the quorum, a
//! swarm forms around the topic and activates everywhere, and when the intents decay the
//! quorum disperses and the swarm dissolves on every node. Waits follow event streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{Follower, NodeProcess};
use serde_json::Value;

const FLAGS: [&str; 7] = [
    "--space",
    "brief",
    "--intent-quorum",
    "3",
    "--intent-half-life",
    "2",
    "--intent-swarms",
];

fn five_nodes(root: &std::path::Path) -> Vec<NodeProcess> {
    let first = NodeProcess::start(&root.join("n0"), &FLAGS);
    first.wait_ready();
    let boot = first.boot_addr();
    let mut nodes = vec![first];
    for i in 1..5 {
        let mut flags = FLAGS.to_vec();
        flags.extend(["--bootstrap", &boot]);
        nodes.push(NodeProcess::start(&root.join(format!("n{i}")), &flags));
    }
    for node in &nodes[1..] {
        node.wait_ready();
    }
    for node in &nodes {
        node.wait_peers(4);
    }
    nodes
}

fn is(event: &Value, kind: &str, text_starts: &str) -> bool {
    event["type"] == kind
        && event["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(text_starts))
}

#[test]
fn a_quorum_of_intents_forms_a_swarm_that_dissolves_when_they_decay() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five_nodes(root.path());
    let followers: Vec<Follower> = nodes
        .iter()
        .map(|n| Follower::start(n, &["--since", "0"]))
        .collect();
    let slug = "intent-rust-parsers";
    let swarm_key = format!("coord.swarms.{slug}");

    // Two strong intents and one too weak to count: no quorum anywhere yet.
    nodes[1].cli_json(&["intent", "rust parsers", "--strength", "1"]);
    nodes[2].cli_json(&["intent", "Rust  Parsers", "--strength", "0.9"]);
    let weak = nodes[3].cli_json(&["intent", "rust parsers", "--strength", "0.1"]);
    let topic = &weak["topics"][0];
    assert_eq!(topic["topic"], "rust parsers");
    assert_eq!(topic["quorate"], false);
    // The weak agent makes up its mind: the third distinct agent above the threshold.
    let strong = nodes[3].cli_json(&["intent", "rust parsers", "--strength", "1"]);
    assert_eq!(strong["topics"][0]["quorate"], true, "{strong}");

    let intenders: Vec<String> = nodes[1..4].iter().map(NodeProcess::peer_id).collect();
    for (i, follower) in followers.iter().enumerate() {
        let quorum = follower.wait("the quorum", |e| is(e, "intent", "quorum"));
        assert_eq!(quorum["key"], "rust parsers");
        let mut about: Vec<String> = quorum["about"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        about.sort();
        let mut want = intenders.clone();
        want.sort();
        assert_eq!(about, want, "node {i}");
    }
    // The bystander sees the topic, not being in it.
    let seen = nodes[4].cli_json(&["intents"]);
    assert_eq!(seen["topics"][0]["agents"].as_array().unwrap().len(), 3);

    // Nobody repeats their intent: with a 2 s half-life it decays below 0.3 in about 3.5 s,
    // the quorum disperses and the creator dissolves the swarm, on every node (in either
    // order: the creator's node may disperse first).
    for (i, follower) in followers.iter().enumerate() {
        let (mut dispersed, mut dissolved) = (false, false);
        while !(dispersed && dissolved) {
            let event = follower.wait("the quorum dispersed and the swarm dissolved", |e| {
                is(e, "intent", "dispersed")
                    || (e["key"] == swarm_key.as_str() && is(e, "swarm", "dissolved"))
            });
            if event["type"] == "intent" {
                dispersed = true;
            } else {
                assert!(
                    event["text"]
                        .as_str()
                        .unwrap()
                        .contains("dissolved by its creator"),
                    "node {i}: {event}"
                );
                dissolved = true;
            }
        }
    }
    // Every node computed the same swarm from the medium: formed around the topic by the
    // lowest intender, activated by the three joins, dissolved by its creator.
    let creator = intenders.iter().min().unwrap();
    for node in &nodes {
        let swarm = node.cli_json(&["swarms"])["swarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["swarm"] == slug)
            .cloned()
            .unwrap();
        assert_eq!(swarm["name"], "intent: rust parsers");
        assert_eq!(swarm["capability"], "*");
        assert_eq!(swarm["threshold"], 3);
        assert_eq!(swarm["creator"], creator.as_str());
        assert_eq!(swarm["state"], "dissolved", "{swarm}");
        assert!(swarm["activated_at_ms"].as_u64().is_some(), "{swarm}");
    }
    // Bad input is refused with the reason and changes nothing.
    for (args, words) in [
        (vec!["intent", ""], "topic"),
        (vec!["intent", "x", "--strength", "1.5"], "strength"),
        (vec!["intent", &"y".repeat(200)], "topic"),
    ] {
        let out = nodes[0].cli(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(words),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let topics = nodes[0].cli_json(&["intents"]);
    assert!(
        topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["topic"] == "rust parsers"),
        "{topics}"
    );
}
