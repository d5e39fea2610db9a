//! The Python example agent (examples/python-agent/agent.py) against real `membrane node`
//! processes: alone on one node, through the environment variables with a wrong token, and
//! across two nodes, where what it exposes on B must arrive at A. Needs `python3` on PATH
//! (CI installs it): without it these tests fail, they do not skip. Every wait is bounded by
//! [`DEADLINE`]: the script by its own --follow-seconds and a kill, the CLI followers by a
//! kill; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

use common::DEADLINE;
use common::process::{NodeProcess, bin};
use serde_json::Value;

/// The script under test.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python-agent/agent.py")
}

/// Fails, with how to get it, unless `python3` runs. Called before any node starts.
fn require_python() {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 --version failed ({}): {}; the Python example test needs a working \
             python3 on PATH (.ci/run installs it with apt-get)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "python3 is not on PATH ({e}); the Python example test needs it: install python3 \
             (e.g. apt-get install python3; .ci/run does this in CI)"
        ),
    }
}

/// What a bounded run printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion, killing it if it outlives [`DEADLINE`].
fn run_bounded(mut cmd: Command, what: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (tx, rx) = mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // Stdout closes when the process exits: wait for that, up to the deadline.
    let stdout = match rx.recv_timeout(DEADLINE) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!("{what} still running after {DEADLINE:?}; killed it. stderr:\n{stderr}");
        }
    };
    let status = child.wait().unwrap();
    let stderr = err_reader.join().unwrap();
    Run {
        status,
        stdout,
        stderr,
    }
}

/// Runs the script with `args` (plus `--json-summary`), with `env` set and the node's
/// variables otherwise cleared.
fn agent(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("python3");
    cmd.arg("-B")
        .arg(script())
        .args(args)
        .arg("--json-summary")
        .env_remove("MEMBRANE_API")
        .env_remove("MEMBRANE_TOKEN")
        .env_remove("MEMBRANE_DATA_DIR")
        // The API is on loopback: the script must not route it through a proxy.
        .env("http_proxy", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    for (name, value) in env {
        cmd.env(name, value);
    }
    run_bounded(cmd, &format!("agent.py {args:?}"))
}

/// The `--json-summary` line: the last line of stdout.
fn summary(run: &Run) -> Value {
    let last = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "no JSON summary as the last line ({e}); stdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

/// Runs the script and requires exit 0; returns its summary.
fn agent_ok(args: &[&str], env: &[(&str, &str)]) -> Value {
    let run = agent(args, env);
    assert!(
        run.status.success(),
        "agent.py {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let summary = summary(&run);
    assert_eq!(summary["ok"], true, "{summary}");
    summary
}

fn node(dir: &std::path::Path, extra: &[&str]) -> NodeProcess {
    let node = NodeProcess::start(dir, extra);
    node.wait_ready();
    node
}

#[test]
fn the_agent_registers_exposes_searches_queries_and_sees_its_events() {
    require_python();
    let root = tempfile::tempdir().unwrap();
    let a = node(&root.path().join("a"), &["--space", "py-test"]);
    let dir = a.dir.to_str().unwrap().to_owned();
    let s = agent_ok(
        &[
            "--data-dir",
            &dir,
            "--name",
            "py-agent",
            "--capability",
            "summarize=Summarizes notes",
            // Follow only its notes (register also writes the agent's capability card).
            "--pattern",
            "notes.**",
            "--expose",
            "notes.sea_level=the sea rises 3.7 mm per year",
            "--expose",
            "notes.glaciers=glaciers retreat in the alps",
            "--tier",
            "public",
            "--search",
            "sea rises",
            "--max-tokens",
            "500",
            "--query",
            "notes.**",
            "--follow-seconds",
            "60",
        ],
        &[],
    );
    assert_eq!(s["peer"], a.peer_id(), "{s}");
    let ids: Vec<&str> = s["exposed_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{s}");
    assert!(ids.iter().all(|id| id.len() == 64), "{s}");
    assert!(
        s["exposed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tier"] == "public"),
        "{s}"
    );
    assert_eq!(s["exposes_confirmed"], true, "{s}");
    assert_eq!(s["search_hits"], 1, "{s}");
    assert_eq!(s["query_hits"], 2, "{s}");
    assert_eq!(s["event_types"], serde_json::json!(["exposed"]), "{s}");
    assert_eq!(s["events_seen"], 2, "{s}");
    // The node agrees: the agent's name and what it wrote.
    let status = a.cli_json(&["status"]);
    assert_eq!(status["name"], "py-agent");
    assert_eq!(status["capabilities"][0]["name"], "summarize");
    let query = a.cli_json(&["query", "notes.**"]);
    let mut got: Vec<&str> = query["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(got, want);

    // Found through MEMBRANE_API/MEMBRANE_TOKEN (no data dir), with no exposes: it follows
    // for --follow-seconds and exits 0.
    let api = a.api();
    let token = a.token();
    let s = agent_ok(
        &["--query", "notes.sea_level", "--follow-seconds", "0"],
        &[("MEMBRANE_API", &api), ("MEMBRANE_TOKEN", &token)],
    );
    assert_eq!(s["query_hits"], 1, "{s}");
    assert_eq!(s["exposed_ids"], serde_json::json!([]), "{s}");

    // API errors end it non-zero with the API's message: a wrong token…
    let run = agent(
        &["--follow-seconds", "0"],
        &[("MEMBRANE_API", &api), ("MEMBRANE_TOKEN", "not-the-token")],
    );
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(run.stderr.contains("wrong bearer token"), "{}", run.stderr);
    assert_eq!(summary(&run)["error_code"], "unauthorized");
    // …and a bad key.
    let run = agent(&["--data-dir", &dir, "--expose", "Not A Key=x"], &[]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(run.stderr.contains("Not A Key"), "{}", run.stderr);
    let s = summary(&run);
    assert_eq!(s["ok"], false, "{s}");
    assert_eq!(s["error_code"], "bad_key", "{s}");
}

/// Reads A's events (through `membrane events`, which follows the stream and blocks until
/// one arrives) until the `arrived` event of `id`; at most `rounds` events.
fn wait_arrived(node: &NodeProcess, pattern: &str, id: &str, rounds: usize) -> Value {
    let mut since = 0u64;
    for _ in 0..rounds {
        let mut cmd = Command::new(bin());
        cmd.args(["events", "--since", &since.to_string(), "--count", "1"])
            .args(["--patterns", pattern, "--json", "--data-dir"])
            .arg(&node.dir)
            .env_remove("MEMBRANE_API")
            .env_remove("MEMBRANE_TOKEN");
        let run = run_bounded(cmd, "membrane events --count 1");
        assert!(
            run.status.success(),
            "membrane events failed: {}",
            run.stderr
        );
        let event: Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("membrane events printed {:?}: {e}", run.stdout));
        if event["type"] == "arrived" && event["id"] == id {
            return event;
        }
        // Keyless events (merges) pass every pattern: read on past them.
        since = event["seq"].as_u64().unwrap();
    }
    panic!("no arrived event for {id} among {rounds} events");
}

#[test]
fn what_the_agent_exposes_on_b_arrives_at_a() {
    require_python();
    let root = tempfile::tempdir().unwrap();
    let a = node(
        &root.path().join("a"),
        &["--space", "py-test", "--name", "a"],
    );
    let boot = a.boot_addr();
    let b = node(
        &root.path().join("b"),
        &["--space", "py-test", "--name", "b", "--bootstrap", &boot],
    );
    a.wait_peers(1);
    b.wait_peers(1);

    let b_dir = b.dir.to_str().unwrap().to_owned();
    let s = agent_ok(
        &[
            "--data-dir",
            &b_dir,
            "--name",
            "py-on-b",
            "--expose",
            "notes.tides=spring tides follow the new and full moon",
            "--tier",
            "public",
            "--follow-seconds",
            "60",
        ],
        &[],
    );
    assert_eq!(s["exposes_confirmed"], true, "{s}");
    let id = s["exposed_ids"][0].as_str().unwrap().to_owned();

    // A hears of it on its event stream, from B…
    let event = wait_arrived(&a, "notes.**", &id, 32);
    assert_eq!(event["key"], "notes.tides", "{event}");
    assert_eq!(event["from"], b.peer_id(), "{event}");
    assert_eq!(event["space"], "py-test", "{event}");
    // …and can read it.
    let query = a.cli_json(&["query", "notes.**"]);
    let hits = query["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{query}");
    assert_eq!(hits[0]["id"], id.as_str());
    assert_eq!(hits[0]["owner"], b.peer_id());
    assert_eq!(
        hits[0]["value"],
        "spring tides follow the new and full moon"
    );
    // The script on A finds it too, by search and by query.
    let a_dir = a.dir.to_str().unwrap().to_owned();
    let s = agent_ok(
        &[
            "--data-dir",
            &a_dir,
            "--search",
            "spring tides",
            "--query",
            "notes.**",
            "--follow-seconds",
            "0",
        ],
        &[],
    );
    assert_eq!(s["search_hits"], 1, "{s}");
    assert_eq!(s["query_hits"], 1, "{s}");
}
