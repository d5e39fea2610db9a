//! Coordination through the CLI over five node processes: the five-agent scenario's swarm
//! steps (13–14), a task claimed by two agents at once with one winner on every node,
//! completion, and verification of a fact by other agents. Waits follow event streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{Follower, NodeProcess, eventually};
use serde_json::Value;

const AGENTS: [(&str, &str); 5] = [
    ("orchestrator", "planning=Splits work and assigns it"),
    ("researcher", "research=Finds and summarises sources"),
    ("writer", "writing=Drafts briefs"),
    ("reviewer", "reviewing=Reviews drafts for accuracy"),
    ("editor", "reviewing=Reviews drafts for accuracy"),
];

fn swarm_at(node: &NodeProcess, slug: &str) -> Value {
    node.cli_json(&["swarms"])["swarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["swarm"] == slug)
        .cloned()
        .unwrap_or(Value::Null)
}

fn task_at(node: &NodeProcess, id: &str) -> Value {
    node.cli_json(&["tasks"])["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Five nodes in one space, connected, each agent registered.
fn five_nodes(root: &std::path::Path) -> Vec<NodeProcess> {
    let first = NodeProcess::start(&root.join("orchestrator"), &["--space", "brief"]);
    first.wait_ready();
    let boot = first.boot_addr();
    let mut nodes = vec![first];
    for (name, _) in &AGENTS[1..] {
        nodes.push(NodeProcess::start(
            &root.join(name),
            &["--space", "brief", "--bootstrap", &boot],
        ));
    }
    for node in &nodes[1..] {
        node.wait_ready();
    }
    for node in &nodes {
        node.wait_peers(4);
    }
    // Step 1: all five register (their signed capability cards go into the medium).
    for (node, (name, cap)) in nodes.iter().zip(AGENTS) {
        node.cli_json(&["register", name, "--capabilities", cap]);
    }
    nodes
}

#[test]
fn swarms_tasks_and_verification_across_five_nodes() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five_nodes(root.path());
    let [orchestrator, researcher, _writer, reviewer, editor] = &nodes[..] else {
        unreachable!()
    };
    // Everyone will watch the swarm's events.
    let followers: Vec<Follower> = nodes
        .iter()
        .map(|n| Follower::start(n, &["--patterns", "coord.swarms.*"]))
        .collect();

    // Step 13: the orchestrator creates "Final Review" for reviewing, threshold 2.
    let created = orchestrator.cli_json(&[
        "swarm-create",
        "Final Review",
        "--capability",
        "reviewing",
        "--threshold",
        "2",
    ]);
    assert_eq!(created["swarm"], "final-review");
    assert_eq!(created["state"], "forming");
    // Step 14: the editor joins (1/2, not active) ...
    eventually(editor, "the swarm at the editor", || {
        swarm_at(editor, "final-review") != Value::Null
    });
    let joined = editor.cli_json(&["swarm-join", "final-review"]);
    assert_eq!(joined["members"].as_array().unwrap().len(), 1);
    assert_eq!(joined["state"], "forming");
    // ... an agent without the capability is refused, with the reason ...
    eventually(researcher, "the swarm at the researcher", || {
        swarm_at(researcher, "final-review") != Value::Null
    });
    let refused = researcher.cli(&["swarm-join", "final-review"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("lacks reviewing"), "{stderr}");
    // ... the reviewer joins: 2/2, active on every node, each seeing the event.
    eventually(reviewer, "the editor's join at the reviewer", || {
        swarm_at(reviewer, "final-review")["members"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    });
    let active = reviewer.cli_json(&["swarm-join", "final-review"]);
    assert_eq!(active["state"], "active");
    for (i, follower) in followers.iter().enumerate() {
        let event = follower.wait(&format!("activation at node {i}"), |e| {
            e["type"] == "swarm" && e["text"].as_str().unwrap_or("").starts_with("active")
        });
        assert_eq!(event["key"], "coord.swarms.final-review");
    }
    let expected = swarm_at(orchestrator, "final-review");
    for node in &nodes {
        let mut seen = swarm_at(node, "final-review");
        let mut want = expected.clone();
        for v in [&mut seen, &mut want] {
            v["members"]
                .as_array_mut()
                .unwrap()
                .sort_by_key(|m| m.to_string());
        }
        assert_eq!(seen, want);
    }

    // A task claimed by two reviewers at once: one winner, the same on every node.
    let posted = orchestrator.cli_json(&[
        "task-post",
        "Check the brief's figures",
        "--capability",
        "reviewing",
    ]);
    let task = posted["task"].as_str().unwrap().to_owned();
    for node in [reviewer, editor] {
        eventually(node, "the task", || task_at(node, &task) != Value::Null);
    }
    let claim = |dir: std::path::PathBuf, task: String| {
        std::thread::spawn(move || {
            let out = std::process::Command::new(common::process::bin())
                .args(["task-claim", &task, "--json", "--data-dir"])
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    let (a, b) = (
        claim(reviewer.dir.clone(), task.clone()),
        claim(editor.dir.clone(), task.clone()),
    );
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a["state"], "claimed");
    assert_eq!(b["state"], "claimed");
    let ids = [reviewer.peer_id(), editor.peer_id()];
    for node in &nodes {
        eventually(node, "both claims", || {
            task_at(node, &task)["claimants"]
                .as_array()
                .is_some_and(|c| c.len() == 2)
        });
    }
    let winner = task_at(orchestrator, &task)["winner"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ids.contains(&winner));
    for node in &nodes {
        assert_eq!(
            task_at(node, &task)["winner"].as_str(),
            Some(winner.as_str())
        );
    }
    // The loser cannot complete it; the winner can, and everyone sees the result.
    let (won, lost) = if winner == ids[0] {
        (reviewer, editor)
    } else {
        (editor, reviewer)
    };
    let denied = lost.cli(&["task-complete", &task, "I did it too"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("was won by"));
    // The researcher lacks the capability altogether.
    let no_cap = researcher.cli(&["task-claim", &task]);
    assert!(!no_cap.status.success());
    let done = won.cli_json(&["task-complete", &task, "two figures corrected"]);
    assert_eq!(done["state"], "completed");
    for node in &nodes {
        eventually(node, "the completed task", || {
            task_at(node, &task)["state"] == "completed"
        });
    }

    // Verification: the researcher's finding, verified by two others.
    let fact = researcher.cli_json(&[
        "expose",
        "findings.sea_level",
        "3.7 mm/yr since 2006",
        "--tier",
        "public",
    ]);
    let id = fact["id"].as_str().unwrap().to_owned();
    let guess = researcher.cli_json(&[
        "expose",
        "findings.sea_level_2100",
        "sea level may rise 1 m by 2100",
        "--tier",
        "public",
        "--kind",
        "hypothesis",
    ]);
    let guess = guess["id"].as_str().unwrap().to_owned();
    for node in [reviewer, editor] {
        eventually(node, "the finding and the hypothesis", || {
            node.cli_json(&["query", "findings.*"])["hits"]
                .as_array()
                .is_some_and(|h| h.len() == 2)
        });
    }
    let own = researcher.cli(&["verify", &id]);
    assert!(!own.status.success());
    let once = reviewer.cli_json(&["verify", &id, "--note", "matches AR6"]);
    assert_eq!(once["verified"], false);
    eventually(editor, "the first verdict at the editor", || {
        editor.cli_json(&["query", "coord.verdicts.**"])["hits"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    });
    let twice = editor.cli_json(&["verify", &id, "--note", "checked the table"]);
    assert_eq!(twice["verified"], true, "{twice}");
    assert_eq!(twice["verifiers"].as_array().unwrap().len(), 2);

    // Kinds and verification filter queries and searches, on a node that verified nothing.
    let ids = |answer: &Value, hits: &str| -> Vec<String> {
        let mut ids: Vec<String> = answer[hits]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let entry = if hits == "hits" && h.get("entry").is_some() {
                    &h["entry"]
                } else {
                    h
                };
                entry["id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    let orchestrator = &nodes[0];
    eventually(
        orchestrator,
        "the finding verified at the orchestrator",
        || {
            ids(
                &orchestrator.cli_json(&["search", "sea level", "--verified"]),
                "hits",
            ) == vec![id.clone()]
        },
    );
    let mut both = vec![id.clone(), guess.clone()];
    both.sort();
    assert_eq!(
        ids(&orchestrator.cli_json(&["search", "sea level"]), "hits"),
        both
    );
    assert_eq!(
        ids(
            &orchestrator.cli_json(&["query", "findings.*", "--kinds", "hypothesis"]),
            "hits"
        ),
        vec![guess.clone()]
    );
    assert_eq!(
        ids(
            &orchestrator.cli_json(&["query", "findings.*", "--verified"]),
            "hits"
        ),
        vec![id.clone()]
    );
    let bad = orchestrator.cli(&["query", "findings.*", "--kinds", "rumour"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rumour"));
}

#[test]
fn discover_help_offers_and_threads_across_five_nodes() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five_nodes(root.path());
    let [orchestrator, researcher, writer, reviewer, editor] = &nodes[..] else {
        unreachable!()
    };
    // Every card has reached the orchestrator.
    eventually(orchestrator, "five cards", || {
        orchestrator.cli_json(&["query", "coord.agents.*"])["hits"]
            .as_array()
            .is_some_and(|h| h.len() == 5)
    });
    // discover: the two reviewers first; the writer's card shares a word ("drafts") and
    // comes after; the researcher's shares none.
    let found = orchestrator.cli_json(&["discover", "review the draft for accuracy"]);
    let agents = found["agents"].as_array().unwrap();
    let mut top: Vec<&str> = agents[..2]
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["editor", "reviewer"], "{found}");
    assert_eq!(agents.len(), 3, "{found}");
    assert_eq!(agents[2]["name"], "writer");
    assert!(agents[2]["score"].as_f64() < agents[1]["score"].as_f64());

    // help: the capable agents' nodes offer on their own, within the deadline; the writer
    // declines by hand.
    let help = orchestrator.cli_json(&[
        "help",
        "review the draft brief for accuracy",
        "--within-ms",
        "60000",
    ]);
    let id = help["help"].as_str().unwrap().to_owned();
    eventually(writer, "the help request at the writer", || {
        writer.cli_json(&["query", &format!("coord.help.{id}")])["hits"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    });
    writer.cli_json(&["offer", &id, "--decline", "--note", "not my field"]);
    eventually(orchestrator, "two offers and a decline", || {
        let offers = orchestrator.cli_json(&["offers", &id]);
        offers["offers"].as_array().is_some_and(|o| o.len() == 2)
            && offers["declined"].as_array().is_some_and(|d| d.len() == 1)
    });
    let offers = orchestrator.cli_json(&["offers", &id]);
    let offerers: std::collections::BTreeSet<String> = offers["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["capability"], "reviewing");
            assert_eq!(o["by"], "node");
            assert_eq!(o["in_time"], true);
            assert!(o["confidence"].as_f64().unwrap() > 0.0);
            o["agent"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: std::collections::BTreeSet<String> =
        [reviewer.peer_id(), editor.peer_id()].into_iter().collect();
    assert_eq!(offerers, expected);
    assert!(!offerers.contains(&researcher.peer_id()));

    // propose → build-on → build-on: the thread reads as a tree on another node.
    let root_id = writer.cli_json(&[
        "propose",
        "Structure of the brief",
        "Intro, findings, advice",
    ])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(editor, "the proposal at the editor", || {
        editor.cli(&["thread", &root_id]).status.success()
    });
    let reply = editor.cli_json(&["build-on", &root_id, "Add a section on costs"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(researcher, "the reply at the researcher", || {
        researcher.cli(&["thread", &reply]).status.success()
    });
    researcher.cli_json(&["build-on", &reply, "Costs: see findings.costs"]);
    eventually(orchestrator, "the whole thread", || {
        orchestrator.cli_json(&["thread", &root_id])["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
    });
    let thread = orchestrator.cli_json(&["thread", &root_id]);
    let depths: Vec<u64> = thread["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2]);
    let text = orchestrator.cli_ok(&["thread", &root_id]);
    assert!(text.contains("    ["), "{text}");

    // Teams: the orchestrator and the editor pair up in a swarm that gets a task done; from
    // then on the orchestrator's discover puts the editor before the other reviewer, and
    // naming the reviewer as the team instead brings back the tie.
    orchestrator.cli_json(&[
        "swarm-create",
        "Pair",
        "--capability",
        "*",
        "--threshold",
        "2",
    ]);
    eventually(editor, "the pair swarm", || {
        swarm_at(editor, "pair") != Value::Null
    });
    orchestrator.cli_json(&["swarm-join", "pair"]);
    editor.cli_json(&["swarm-join", "pair"]);
    let bad = orchestrator.cli(&[
        "task-post",
        "x",
        "--capability",
        "writing",
        "--swarm",
        "nope",
    ]);
    assert!(!bad.status.success());
    let task = orchestrator.cli_json(&[
        "task-post",
        "Draft the summary",
        "--capability",
        "writing",
        "--swarm",
        "pair",
    ]);
    assert_eq!(task["swarm"], "pair");
    let task = task["task"].as_str().unwrap().to_owned();
    eventually(writer, "the pair's task", || {
        task_at(writer, &task) != Value::Null
    });
    writer.cli_json(&["task-claim", &task]);
    writer.cli_json(&["task-complete", &task, "summary drafted"]);
    eventually(orchestrator, "the pair's task completed", || {
        task_at(orchestrator, &task)["state"] == "completed"
    });
    eventually(orchestrator, "both pair members", || {
        swarm_at(orchestrator, "pair")["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    });
    let ranked = |extra: &[&str]| -> Vec<(String, f64)> {
        let mut args = vec!["discover", "review the draft for accuracy"];
        args.extend_from_slice(extra);
        orchestrator.cli_json(&args)["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["teamwork"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let mine = ranked(&[]);
    // One task completed together: 2 × (1 + 1) / (2 + 1).
    assert_eq!(mine[0].0, "editor", "{mine:?}");
    assert!((mine[0].1 - 4.0 / 3.0).abs() < 1e-9, "{mine:?}");
    assert_eq!(mine[1], ("reviewer".to_owned(), 1.0), "{mine:?}");
    let reviewer_id = reviewer.peer_id();
    let theirs = ranked(&["--with", &reviewer_id]);
    assert!(theirs[..2].iter().all(|(_, t)| *t == 1.0), "{theirs:?}");
}

fn role_events(node: &NodeProcess) -> Vec<Value> {
    node.cli_json(&["events", "--no-follow", "--limit", "1000"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "role")
        .cloned()
        .collect()
}

#[test]
fn role_hints_reach_the_agents_the_medium_points_at() {
    let root = tempfile::tempdir().unwrap();
    let nodes = five_nodes(root.path());
    let [orchestrator, researcher, writer, reviewer, editor] = &nodes[..] else {
        unreachable!()
    };
    let followers: Vec<Follower> = nodes
        .iter()
        .map(|n| Follower::start(n, &["--since", "0"]))
        .collect();
    let role = |i: usize, role: &str, subject: &str| {
        followers[i].wait(&format!("{role} hint for {subject} at node {i}"), |e| {
            e["type"] == "role"
                && e["key"] == subject
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("{role}:")))
        })
    };

    // Mediate: the researcher and the writer disagree on a key the others can see.
    researcher.cli_json(&["expose", "findings.rate", "3.7 mm/yr", "--tier", "public"]);
    writer.cli_json(&["expose", "findings.rate", "3.2 mm/yr", "--tier", "public"]);
    for i in [0, 3, 4] {
        let hint = role(i, "mediate", "findings.rate");
        assert!(
            hint["text"].as_str().unwrap().contains("2 owners disagree"),
            "{hint}"
        );
    }

    // Fill gap: a writing task nobody claims reaches the writer (the only writer) after a
    // few seconds.
    let posted =
        orchestrator.cli_json(&["task-post", "Draft the brief", "--capability", "writing"]);
    let task = posted["task"].as_str().unwrap().to_owned();
    let hint = role(2, "fill_gap", &task);
    assert!(
        hint["text"].as_str().unwrap().contains("needs writing"),
        "{hint}"
    );

    // Coordinate: in an active review swarm, the member holding the most relevant entries.
    for (node, key, text) in [
        (
            reviewer,
            "notes.checklist",
            "final review checklist for reviewing drafts",
        ),
        (reviewer, "notes.figures", "reviewing the final figures"),
        (editor, "notes.intro", "a final review of the intro"),
    ] {
        node.cli_json(&["expose", key, text, "--tier", "public"]);
    }
    for node in [reviewer, editor] {
        eventually(node, "the three review notes", || {
            node.cli_json(&["query", "notes.*"])["hits"]
                .as_array()
                .is_some_and(|h| h.len() == 3)
        });
    }
    orchestrator.cli_json(&[
        "swarm-create",
        "Final Review",
        "--capability",
        "reviewing",
        "--threshold",
        "2",
    ]);
    for node in [reviewer, editor] {
        eventually(node, "the swarm", || {
            swarm_at(node, "final-review") != Value::Null
        });
    }
    editor.cli_json(&["swarm-join", "final-review"]);
    reviewer.cli_json(&["swarm-join", "final-review"]);
    let hint = role(3, "coordinate", "final-review");
    assert!(
        hint["text"].as_str().unwrap().contains("2 of the 3"),
        "{hint}"
    );
    // Everyone has seen the activation by now (the hint follows it): the editor, the
    // researcher and the writer got no coordinate hint; the owners in conflict got no
    // mediate hint; only the writer got the fill-gap hint.
    for node in &nodes {
        eventually(node, "the active swarm", || {
            swarm_at(node, "final-review")["state"] == "active"
        });
    }
    let subjects = |node: &NodeProcess| -> Vec<String> {
        role_events(node)
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(subjects(researcher), Vec::<String>::new());
    assert_eq!(subjects(writer), vec![task.clone()]);
    assert_eq!(subjects(editor), vec!["findings.rate".to_owned()]);
    assert_eq!(subjects(orchestrator), vec!["findings.rate".to_owned()]);
    let mut reviewer_subjects = subjects(reviewer);
    reviewer_subjects.sort();
    assert_eq!(reviewer_subjects, vec!["final-review", "findings.rate"]);
}
