//! The agent's verbs end to end, as a user drives them: three `membrane node` processes on
//! loopback, and every step through the `membrane` CLI. Register, expose in each tier,
//! query from each node (hits, hidden counts, denials), retract, subscribe and follow the
//! event stream, broadcast. Waits follow the event stream (`membrane events`), bounded by a
//! deadline; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{Follower, NodeProcess, eventually};
use serde_json::Value;

fn keys(answer: &Value) -> Vec<String> {
    let mut keys: Vec<String> = answer["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

#[test]
fn three_nodes_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let space = ["--space", "e2e"];
    let alice = NodeProcess::start(&root.path().join("alice"), &space);
    alice.wait_ready();
    let boot = alice.boot_addr();
    let bob = NodeProcess::start(
        &root.path().join("bob"),
        &["--space", "e2e", "--bootstrap", &boot],
    );
    let carol = NodeProcess::start(
        &root.path().join("carol"),
        &["--space", "e2e", "--bootstrap", &boot],
    );
    bob.wait_ready();
    carol.wait_ready();
    for node in [&alice, &bob, &carol] {
        node.wait_peers(2);
    }

    // Register: the name and capabilities show in status, and reach the peers.
    for (node, name, cap) in [
        (&alice, "alice", "research=Finds and summarises sources"),
        (&bob, "bob", "fact_check=Checks claims against sources"),
        (&carol, "carol", "writing=Drafts briefs"),
    ] {
        let answer = node.cli_json(&["register", name, "--capabilities", cap]);
        assert_eq!(answer["name"], name);
        let status = node.cli_json(&["status"]);
        assert_eq!(status["name"], name);
        assert_eq!(status["home_space"], "e2e");
    }
    let human = alice.cli_ok(&["status"]);
    assert!(human.starts_with("alice ("), "{human}");
    eventually(&alice, "bob's ad at alice", || {
        alice.cli_json(&["peers"])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "bob" && p["capabilities"][0]["name"] == "fact_check")
    });

    // Carol subscribes before anything is written, and follows her subscription.
    let sub = carol.cli_json(&["subscribe", "findings.**"]);
    let sub_id = sub["subscription"].as_str().unwrap().to_owned();
    let carol_follows = Follower::start(&carol, &["--subscription", &sub_id]);

    // Alice trusts bob enough for her trusted tier, carol not; she writes in each tier.
    let (bob_id, carol_id) = (bob.peer_id(), carol.peer_id());
    alice.cli_json(&["trust", &bob_id, "0.8"]);
    alice.cli_json(&["trust", &carol_id, "0.2"]);
    let trusts = alice.cli_json(&["trusts"]);
    assert_eq!(trusts["edges"].as_array().unwrap().len(), 2, "{trusts}");
    let public = alice.cli_json(&[
        "expose",
        "findings.public",
        "sea level rose 3.7 mm/yr since 2006",
        "--tier",
        "public",
        "--evidence",
        "external_source",
    ]);
    assert_eq!(public["tier"], "public");
    let trusted = alice.cli_json(&[
        "expose",
        "findings.trusted",
        "draft figures",
        "--tier",
        "trusted",
    ]);
    assert_eq!(trusted["tier"], "trusted");
    let private = alice.cli_json(&[
        "expose",
        "findings.private",
        "my notes",
        "--tier",
        "private",
    ]);
    assert_eq!(private["tier"], "private");
    // A bad verb call fails with the API's message and a non-zero exit.
    let bad = alice.cli(&["expose", "Findings.Bad", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad_key"));

    // Carol's stream shows the public entry arriving.
    let arrived = carol_follows.wait("the public entry at carol", |e| e["type"] == "arrived");
    assert_eq!(arrived["key"], "findings.public");
    assert_eq!(arrived["id"], public["id"]);
    assert_eq!(arrived["from"].as_str().unwrap(), alice.peer_id());

    // Queries: alice sees all three; bob public and trusted; carol public, and one hidden
    // with the reason.
    let mine = alice.cli_json(&["query", "findings.**"]);
    assert_eq!(
        keys(&mine),
        ["findings.private", "findings.public", "findings.trusted"]
    );
    eventually(&bob, "public and trusted at bob", || {
        keys(&bob.cli_json(&["query", "findings.**"])) == ["findings.public", "findings.trusted"]
    });
    // The private entry leaves only a trace (key and tier): counted as hidden, never shown.
    let at_bob = bob.cli_json(&["query", "findings.**"]);
    assert_eq!(at_bob["hidden"], 1, "{at_bob}");
    // Hidden counts what may never be shown (the private trace); a trusted entry comes
    // with the reason carol may not read it.
    eventually(&carol, "the trusted and private traces at carol", || {
        let answer = carol.cli_json(&["query", "findings.**"]);
        answer["hidden"] == 1 && answer["denied"].as_array().is_some_and(|d| d.len() == 1)
    });
    let at_carol = carol.cli_json(&["query", "findings.**"]);
    assert_eq!(keys(&at_carol), ["findings.public"]);
    assert!(
        !at_carol.to_string().contains("my notes")
            && !at_carol.to_string().contains("draft figures")
    );
    let denied = at_carol["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{at_carol}");
    assert_eq!(denied[0]["key"], "findings.trusted");
    let reason = denied[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("trust in") && reason.contains("0.20 < 0.50"),
        "{reason}"
    );
    assert!(reason.starts_with("alice's"), "{reason}");
    let text = carol.cli_ok(&["query", "findings.**"]);
    assert!(text.contains("1 hits, 1 hidden"), "{text}");
    assert!(
        text.contains("denied findings.trusted: alice's trust in carol"),
        "{text}"
    );
    // Search from bob finds alice's public finding, within budget.
    let found = bob.cli_json(&["search", "sea level rise", "--max-tokens", "200"]);
    assert_eq!(found["hits"][0]["entry"]["key"], "findings.public");
    assert!(found["total_tokens"].as_u64().unwrap() <= 200);

    // Retract: the entry leaves bob's queries, and carol's stream shows it withdrawn.
    alice.cli_json(&["retract", "findings.public"]);
    let withdrawn = carol_follows.wait("the retraction at carol", |e| e["type"] == "withdrawn");
    assert_eq!(withdrawn["id"], public["id"]);
    eventually(&bob, "the retraction at bob", || {
        keys(&bob.cli_json(&["query", "findings.**"])) == ["findings.trusted"]
    });

    // Broadcast: delivered to the others' streams (keyless, so it passes carol's filter).
    let bob_follows = Follower::start(&bob, &["--patterns", "nothing.*"]);
    let sent = alice.cli_json(&["broadcast", "starting the literature review"]);
    for (name, follower) in [("bob", &bob_follows), ("carol", &carol_follows)] {
        let event = follower.wait(&format!("the broadcast at {name}"), |e| {
            e["type"] == "broadcast"
        });
        assert_eq!(event["text"], "starting the literature review");
        assert_eq!(event["from"].as_str().unwrap(), alice.peer_id());
    }
    assert!(sent["id"].as_str().unwrap().len() == 64);

    // The budget shows what crossed into each agent's context.
    let budget = bob.cli_json(&["budget"]);
    assert!(budget["total"].as_u64().unwrap() > 0, "{budget}");
}
