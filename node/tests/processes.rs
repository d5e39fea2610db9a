//! The `membrane` binary as a user runs it: several node processes on loopback form a mesh,
//! a bad flag is refused with a message naming it, and SIGTERM shuts a node down cleanly.
//! Waits read the nodes' log lines with a deadline; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(90);

struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .arg("node")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--kad-server",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

/// Reads log lines until one satisfies `want`; returns it.
fn wait_line(
    node: &Running,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
            && want(&json)
        {
            return json;
        }
    }
}

fn message(json: &serde_json::Value) -> &str {
    json["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn three_processes_form_a_mesh_and_stop_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let first = start(&root.path().join("a"), &[]);
    let ready = wait_line(&first, "node a ready", |j| {
        message(j) == "membrane node ready"
    });
    let listen = ready["fields"]["listen"].as_str().unwrap().to_owned();
    // The field is the Debug form of a list: take the first address out of it.
    let boot = listen
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .next()
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_owned();
    assert!(boot.contains("/p2p/12D3KooW"), "{boot}");
    let others: Vec<Running> = ["b", "c"]
        .iter()
        .map(|n| start(&root.path().join(n), &["--bootstrap", &boot]))
        .collect();
    // Every node ends up connected to both others (the DHT introduces b and c).
    for (name, node) in [("a", &first), ("b", &others[0]), ("c", &others[1])] {
        wait_line(node, &format!("{name} has two peers"), |j| {
            message(j) == "peer connected" && j["fields"]["peers"].as_u64() == Some(2)
        });
    }
    // node.json names the node for scripts.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("a/node.json")).unwrap()).unwrap();
    assert_eq!(info["listen"][0].as_str().unwrap(), boot);
    // SIGTERM: a clean exit that removes node.json.
    let mut first = first;
    let pid = first.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = first.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!root.path().join("a/node.json").exists());
    // The identity survives a restart.
    let again = start(&root.path().join("a"), &[]);
    let ready = wait_line(&again, "node a ready again", |j| {
        message(j) == "membrane node ready"
    });
    assert!(
        ready["fields"]["listen"]
            .as_str()
            .unwrap()
            .contains(boot.rsplit('/').next().unwrap())
    );
}

#[test]
fn a_bad_flag_is_refused_with_its_name() {
    let root = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .arg("node")
        .arg("--data-dir")
        .arg(root.path())
        .args(["--listen", "not-a-multiaddr"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(stderr.contains("expected"), "{stderr}");
}

#[test]
fn id_is_stable_and_keygen_writes_a_private_key() {
    let root = tempfile::tempdir().unwrap();
    let id = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["id", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let first = id(root.path());
    assert!(first.starts_with("12D3KooW"));
    assert_eq!(id(root.path()), first);
    let key = root.path().join("other.key");
    let out = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
