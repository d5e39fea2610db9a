//! Direct messages through the CLI over five node processes each: sending by id and by
//! capability with threaded replies, the receiver's refusals (accept rules, quarantine,
//! budget, size, rate) and the sender's errors (unknown agent, timeout, unreachable),
//! and fan-out / gather with an agent that never answers. Waits follow event streams and
//! log lines with deadlines; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::process::{Follower, NodeProcess, eventually};
use serde_json::Value;

/// Five nodes in space `brief`, node 0 the bootstrap, each with its own extra flags,
/// connected to all four others and registered as `agents[i]`.
fn five(root: &Path, agents: [(&str, &str, &[&str]); 5]) -> Vec<NodeProcess> {
    let start = |i: usize, boot: Option<&str>| {
        let (name, _, extra) = agents[i];
        let mut flags = vec!["--space", "brief"];
        if let Some(boot) = boot {
            flags.extend(["--bootstrap", boot]);
        }
        flags.extend(extra);
        NodeProcess::start(&root.join(name), &flags)
    };
    let first = start(0, None);
    first.wait_ready();
    let boot = first.boot_addr();
    let mut nodes = vec![first];
    for i in 1..5 {
        nodes.push(start(i, Some(&boot)));
    }
    for node in &nodes[1..] {
        node.wait_ready();
    }
    for node in &nodes {
        node.wait_peers(4);
    }
    for (node, (name, caps, _)) in nodes.iter().zip(agents) {
        let mut args = vec!["register", name];
        if !caps.is_empty() {
            args.extend(["--capabilities", caps]);
        }
        node.cli_json(&args);
    }
    nodes
}

/// Runs a verb that must fail; returns its stderr.
fn cli_err(node: &NodeProcess, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(
        !out.status.success(),
        "membrane {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Waits until `node` holds the capability cards of `n` agents with `capability`.
fn cards_for(node: &NodeProcess, capability: &str, n: usize) {
    eventually(node, &format!("{n} cards with {capability}"), || {
        node.cli_json(&["discover", capability])["agents"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|c| c["capability"] == capability).count() == n)
    });
}

/// The node's metrics text (`GET /metrics` with its token).
fn metrics(node: &NodeProcess) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", node.api()))
            .bearer_auth(node.token())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn direct_from(follower: &Follower, what: &str, from: &str) -> Value {
    follower.wait(what, |e| e["type"] == "direct" && e["from"] == from)
}

#[test]
fn send_by_id_and_by_capability_with_threaded_replies() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five(
        root.path(),
        [
            ("alice", "planning=Splits work and assigns it", &[]),
            ("bob", "research=Finds and summarises sources", &[]),
            ("carol", "reviewing=Reviews drafts for accuracy", &[]),
            ("dave", "writing=Drafts briefs", &[]),
            ("erin", "reviewing=Reviews drafts for accuracy", &[]),
        ],
    );
    let [alice, bob, carol, dave, erin] = &nodes[..] else {
        unreachable!()
    };
    let (a, b) = (alice.peer_id(), bob.peer_id());
    let at_alice = Follower::start(alice, &["--since", "0"]);
    let at_bob = Follower::start(bob, &["--since", "0"]);

    // By id: bob's agent gets the message as an event; alice gets the receipt.
    let sent = alice.cli_json(&["send", "--to", &b, "Can you check figure 3 of the brief?"]);
    assert_eq!(sent["to"], b.as_str());
    assert_eq!(sent["name"], "bob");
    assert!(sent["tokens"].as_u64().unwrap() > 3, "{sent}");
    let first = sent["id"].as_str().unwrap().to_owned();
    let event = direct_from(&at_bob, "the message at bob", &a);
    assert_eq!(event["id"], first.as_str());
    assert_eq!(event["text"], "Can you check figure 3 of the brief?");
    assert_eq!(event["about"][0], b.as_str());
    // The sender's own log has it too, once acknowledged.
    let own = direct_from(&at_alice, "the sent message at alice", &a);
    assert_eq!(own["id"], first.as_str());

    // Bob replies; alice answers the reply: one thread of three.
    let reply = bob.cli_json(&[
        "send",
        "--to",
        &a,
        "Figure 3 is right; the caption is off by a year.",
        "--reply-to",
        &first,
    ]);
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    let event = direct_from(&at_alice, "bob's reply at alice", &b);
    assert_eq!(event["reply_to"], first.as_str());
    let third = alice.cli_json(&[
        "send",
        "--to",
        &b,
        "Thanks, fixing the caption.",
        "--reply-to",
        &reply_id,
    ]);
    // Another conversation that is not part of the thread.
    alice.cli_json(&["send", "--to", &b, "Unrelated: lunch?"]);
    for (node, name) in [(alice, "alice"), (bob, "bob")] {
        eventually(node, &format!("the thread at {name}"), || {
            node.cli_json(&["messages", "--thread", &reply_id])["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        });
        let thread = node.cli_json(&["messages", "--thread", &first])["messages"].clone();
        let ids: Vec<&str> = thread
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [&first, &reply_id, third["id"].as_str().unwrap()]);
        assert_eq!(thread[1]["reply_to"], first.as_str());
        assert_eq!(thread[2]["reply_to"], reply_id.as_str());
        let all = node.cli_json(&["messages", "--with", if name == "alice" { &b } else { &a }]);
        assert_eq!(all["messages"].as_array().unwrap().len(), 4, "{all}");
    }
    let thread = alice.cli_json(&["messages", "--thread", &first])["messages"].clone();
    let directions: Vec<&str> = thread
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["out", "in", "out"]);

    // By capability: one of the two reviewers, named in the answer.
    cards_for(alice, "reviewing", 2);
    let reviewers = [carol.peer_id(), erin.peer_id()];
    let chosen = alice.cli_json(&[
        "send",
        "--capability",
        "reviewing",
        "Please review section 2.",
    ]);
    assert_eq!(chosen["capability"], "reviewing");
    let first_choice = chosen["to"].as_str().unwrap().to_owned();
    assert!(reviewers.contains(&first_choice), "{chosen}");
    assert!(chosen["passed_over"].is_null(), "{chosen}");
    let (best, other) = if first_choice == reviewers[0] {
        (carol, erin)
    } else {
        (erin, carol)
    };
    let at_best = Follower::start(best, &["--since", "0"]);
    let event = direct_from(&at_best, "the capability message", &a);
    assert_eq!(event["text"], "Please review section 2.");
    // The best-ranked reviewer now distrusts alice: the message goes to the other, and the
    // answer says who was passed over and why.
    best.cli_json(&["trust", &a, "0.1"]);
    let fallback = alice.cli_json(&[
        "send",
        "--capability",
        "reviewing",
        "Please review section 3.",
    ]);
    assert_eq!(fallback["to"], other.peer_id().as_str(), "{fallback}");
    assert_eq!(fallback["passed_over"][0]["agent"], first_choice.as_str());
    let why = fallback["passed_over"][0]["why"].as_str().unwrap();
    assert!(why.starts_with("untrusted"), "{why}");
    // A capability nobody advertises.
    let none = cli_err(alice, &["send", "--capability", "astrology", "Any stars?"]);
    assert!(none.contains("no_provider"), "{none}");

    // The sender's own errors.
    let stranger = membrane_protocol::Keypair::from_seed(&[0xaa; 32]).public();
    let unknown = cli_err(alice, &["send", "--to", &stranger.to_string(), "hello?"]);
    assert!(unknown.contains("unknown_agent"), "{unknown}");
    let to_self = cli_err(alice, &["send", "--to", &a, "note to self"]);
    assert!(to_self.contains("yourself"), "{to_self}");
    let bad_reply = cli_err(alice, &["send", "--to", &b, "x", "--reply-to", "abc"]);
    assert!(bad_reply.contains("bad_id"), "{bad_reply}");
    let neither = cli_err(alice, &["send", "hello"]);
    assert!(neither.contains("exactly one of to"), "{neither}");

    // A node that stops answering (SIGSTOP): the send times out; once it is gone
    // (SIGKILL), it is unreachable.
    let d = dave.peer_id();
    let pid = dave.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let silent = cli_err(alice, &["send", "--to", &d, "Are you there?"]);
    assert!(silent.contains("timeout"), "{silent}");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Whether the dead connection is noticed before or during the send, it is unreachable.
    let gone = cli_err(alice, &["send", "--to", &d, "Are you there?"]);
    assert!(gone.contains("unreachable"), "{gone}");

    // Counted on both sides.
    let text = metrics(alice);
    assert_eq!(metric(&text, "membrane_direct_sent_total"), 5.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "membrane_direct_refused_total{direction=\"out\",reason=\"untrusted\"}"
        ),
        1.0,
        "{text}"
    );
    for reason in ["timeout", "unreachable", "unknown_agent"] {
        let line = format!("membrane_direct_failed_total{{direction=\"out\",reason=\"{reason}\"}}");
        assert!(metric(&text, &line) >= 1.0, "{reason}: {text}");
    }
    assert!(metric(&metrics(bob), "membrane_direct_received_total") >= 3.0);
}

#[test]
fn the_receiver_refuses_by_accept_rules_quarantine_budget_size_and_rate() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five(
        root.path(),
        [
            ("sender", "", &[]),
            ("picky", "", &["--direct-accept", "trusted"]),
            (
                "thrifty",
                "",
                &["--budget-tokens", "40", "--budget-window", "0"],
            ),
            ("busy", "", &["--direct-rate", "2"]),
            ("terse", "", &["--direct-max-bytes", "64"]),
        ],
    );
    let [sender, picky, thrifty, busy, terse] = &nodes[..] else {
        unreachable!()
    };
    let s = sender.peer_id();
    let refused =
        |to: &NodeProcess, text: &str| cli_err(sender, &["send", "--to", &to.peer_id(), text]);

    // Trusted-only: refused while unrated, accepted once trusted.
    let err = refused(picky, "hello");
    assert!(
        err.contains("refused") && err.contains("untrusted"),
        "{err}"
    );
    assert!(err.contains("has not rated"), "{err}");
    picky.cli_json(&["trust", &s, "0.8"]);
    sender.cli_json(&["send", "--to", &picky.peer_id(), "hello again"]);

    // An explicit rating below the threshold refuses, in an open inbox too.
    terse.cli_json(&["trust", &s, "0.2"]);
    let err = refused(terse, "hi");
    assert!(err.contains("untrusted") && err.contains("0.20"), "{err}");
    terse.cli_json(&["trust", &s, "0.6"]);
    sender.cli_json(&["send", "--to", &terse.peer_id(), "short enough"]);
    // Size: over the receiver's limit, refused by it; over the protocol's, by the sender.
    let err = refused(terse, &"a long message ".repeat(7));
    assert!(err.contains("too_large") && err.contains("64"), "{err}");
    let err = refused(terse, &"x".repeat(16 * 1024 + 1));
    assert!(err.contains("too_large") && err.contains("16384"), "{err}");

    // Budget: 40 tokens; a 26-token message passes, the same again does not.
    let message = "word ".repeat(25);
    let first = sender.cli_json(&["send", "--to", &thrifty.peer_id(), &message]);
    let tokens = first["tokens"].as_u64().unwrap();
    assert!((20..=40).contains(&tokens), "{first}");
    let err = refused(thrifty, &message);
    assert!(err.contains("budget_exhausted"), "{err}");
    let budget = thrifty.cli_json(&["budget"]);
    assert_eq!(budget["used"], tokens, "{budget}");

    // Rate: two at once, then refused with when to retry.
    for i in 0..2 {
        sender.cli_json(&["send", "--to", &busy.peer_id(), &format!("burst {i}")]);
    }
    let err = refused(busy, "one too many");
    assert!(
        err.contains("rate_limited") && err.contains("retry in"),
        "{err}"
    );

    // Quarantine comes before the rate: the reason says quarantined.
    busy.cli_json(&["quarantine", &s]);
    let err = refused(busy, "let me in");
    assert!(err.contains("quarantined"), "{err}");

    // Nothing refused reached an agent's log; everything accepted did.
    for (node, accepted) in [(picky, 1), (terse, 1), (thrifty, 1), (busy, 2)] {
        let log = node.cli_json(&["messages"])["messages"].clone();
        assert_eq!(log.as_array().unwrap().len(), accepted, "{log}");
    }
    // Each refusal counted by reason on the receiver.
    for (node, reason, n) in [
        (picky, "untrusted", 1.0),
        (terse, "untrusted", 1.0),
        (terse, "too_large", 1.0),
        (thrifty, "budget_exhausted", 1.0),
        (busy, "rate_limited", 1.0),
        (busy, "quarantined", 1.0),
    ] {
        let line = format!("membrane_direct_refused_total{{direction=\"in\",reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics(node), &line), n, "{reason}");
    }
    let text = metrics(sender);
    assert_eq!(
        metric(&text, "membrane_direct_refused_total"),
        6.0,
        "{text}"
    );
}

#[test]
fn fan_out_to_offerers_and_a_swarm_then_gather_with_a_silent_agent() {
    let root = tempfile::tempdir().unwrap();
    let checker = "fact_check=Checks claims against cited sources";
    let nodes = five(
        root.path(),
        [
            ("poster", "planning=Splits work and assigns it", &[]),
            ("c1", checker, &[]),
            ("c2", checker, &[]),
            ("c3", checker, &[]),
            ("silent", checker, &[]),
        ],
    );
    let poster = &nodes[0];
    let p = poster.peer_id();
    let followers: Vec<Follower> = nodes[1..]
        .iter()
        .map(|n| Follower::start(n, &["--since", "0"]))
        .collect();

    // A help request; every checker's node offers on its own.
    let help = poster.cli_json(&["help", "check the claims against cited sources"]);
    let help = help["help"].as_str().unwrap().to_owned();
    eventually(poster, "four offers", || {
        poster.cli_json(&["offers", &help])["offers"]
            .as_array()
            .is_some_and(|o| o.len() == 4)
    });

    // Fan the task out to the offerers; results count for 15 s.
    let fan = poster.cli_json(&[
        "fan-out",
        "Check one claim each and reply with your verdict.",
        "--offers",
        &help,
        "--within-ms",
        "15000",
    ]);
    let fanout = fan["fanout"].as_str().unwrap().to_owned();
    assert_eq!(fan["sent"].as_array().unwrap().len(), 4, "{fan}");
    assert!(fan["failed"].as_array().unwrap().is_empty(), "{fan}");
    let peek = poster.cli_json(&["gather", &fanout, "--peek"]);
    assert_eq!(peek["done"], false);
    assert_eq!(peek["pending"].as_array().unwrap().len(), 4, "{peek}");

    // Three checkers reply to the message they received; one with a result entry.
    let result_entry = nodes[2].cli_json(&[
        "expose",
        "findings.claim2",
        "claim 2 holds (two sources)",
        "--tier",
        "public",
    ])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, (node, follower)) in nodes[1..4].iter().zip(&followers).enumerate() {
        let task = direct_from(follower, &format!("the task at c{}", i + 1), &p);
        assert_eq!(
            task["text"],
            "Check one claim each and reply with your verdict."
        );
        let mut args = vec![
            "send".to_owned(),
            "--to".into(),
            p.clone(),
            format!("claim {} holds", i + 1),
            "--reply-to".into(),
            task["id"].as_str().unwrap().to_owned(),
        ];
        if i == 1 {
            args.extend(["--entry".into(), result_entry.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.cli_json(&args);
    }
    // The silent one got the task too, and says nothing.
    let silent_task = direct_from(&followers[3], "the task at the silent one", &p);

    // gather waits for the deadline, since one never answers.
    let gathered = poster.cli_json(&["gather", &fanout]);
    assert_eq!(gathered["done"], true);
    let results = gathered["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{gathered}");
    let mut texts: Vec<&str> = results
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, ["claim 1 holds", "claim 2 holds", "claim 3 holds"]);
    let with_entry: Vec<&Value> = results.iter().filter(|r| !r["entry"].is_null()).collect();
    assert_eq!(with_entry.len(), 1);
    assert_eq!(with_entry[0]["entry"], result_entry.as_str());
    assert_eq!(with_entry[0]["agent"], nodes[2].peer_id().as_str());
    let missed = gathered["missed"].as_array().unwrap();
    assert_eq!(missed.len(), 1, "{gathered}");
    assert_eq!(missed[0]["agent"], nodes[4].peer_id().as_str());
    assert_eq!(missed[0]["name"], "silent");
    assert!(
        missed[0]["why"]
            .as_str()
            .unwrap()
            .contains("no result by the deadline"),
        "{gathered}"
    );
    // A reply after the deadline is listed as late; the agent still missed it.
    nodes[4].cli_json(&[
        "send",
        "--to",
        &p,
        "sorry, late",
        "--reply-to",
        silent_task["id"].as_str().unwrap(),
    ]);
    let again = poster.cli_json(&["gather", &fanout]);
    assert_eq!(again["late"][0]["text"], "sorry, late", "{again}");
    assert_eq!(again["missed"].as_array().unwrap().len(), 1);

    // A swarm's members: everyone answers, so gather returns before the deadline.
    poster.cli_json(&[
        "swarm-create",
        "Claim checkers",
        "--capability",
        "fact_check",
        "--threshold",
        "2",
    ]);
    for node in &nodes[1..3] {
        eventually(node, "the swarm", || {
            node.cli_json(&["swarms"])["swarms"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["swarm"] == "claim-checkers"))
        });
        node.cli_json(&["swarm-join", "claim-checkers"]);
    }
    eventually(poster, "two members at the poster", || {
        poster.cli_json(&["swarms"])["swarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["swarm"] == "claim-checkers" && s["members"].as_array().unwrap().len() == 2)
    });
    let fan = poster.cli_json(&[
        "fan-out",
        "Summarise your check in one line.",
        "--swarm",
        "claim-checkers",
    ]);
    let fanout = fan["fanout"].as_str().unwrap().to_owned();
    let deadline = fan["deadline_ms"].as_u64().unwrap();
    let sent: Vec<&str> = fan["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert_eq!(sent.len(), 2, "{fan}");
    for (i, (node, follower)) in nodes[1..3].iter().zip(&followers).enumerate() {
        assert!(sent.contains(&node.peer_id().as_str()));
        let task = follower.wait("the swarm task", |e| {
            e["type"] == "direct" && e["text"] == "Summarise your check in one line."
        });
        node.cli_json(&[
            "send",
            "--to",
            &p,
            &format!("summary {i}"),
            "--reply-to",
            task["id"].as_str().unwrap(),
        ]);
    }
    let gathered = poster.cli_json(&["gather", &fanout]);
    assert_eq!(gathered["done"], true);
    assert_eq!(
        gathered["results"].as_array().unwrap().len(),
        2,
        "{gathered}"
    );
    assert!(
        gathered["missed"].as_array().unwrap().is_empty(),
        "{gathered}"
    );
    // Done because everyone answered, not because time ran out.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now < deadline, "gathered at {now}, deadline {deadline}");
    // Unknown fan-outs and bad addressing are clear errors.
    let err = cli_err(poster, &["gather", "fnope"]);
    assert!(err.contains("not_found"), "{err}");
    let err = cli_err(poster, &["fan-out", "x", "--swarm", "nope"]);
    assert!(err.contains("not_found"), "{err}");
    let err = cli_err(poster, &["fan-out", "x"]);
    assert!(err.contains("exactly one of offers"), "{err}");
}
