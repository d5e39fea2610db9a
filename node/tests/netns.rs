//! `membrane testnet --netns`: three nodes, each in a network namespace of its own joined by
//! a bridge. An entry exposed on node1 reaches node3; with node3's veth down, a second entry
//! reaches node2 but not node3; with the veth up again node3 catches up. SIGINT then removes
//! the namespaces. Without root, `--netns` is refused with a message saying so.
//!
//! Everything goes through the `membrane` binary and the CLI, from the root namespace. Waits
//! read the testnet's stdout or follow a node's event stream (`membrane events`), bounded by
//! a deadline; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use common::DEADLINE;
use common::process::bin;
use serde_json::Value;

/// The effective uid, from `/proc/self/status`.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Lines of a child's stdout, on a channel.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for `child` to exit, at most [`DEADLINE`]; kills it past that.
fn wait_exit(child: Child, what: &str) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(status) => status.unwrap(),
        Err(e) => {
            signal(pid, "KILL");
            panic!("waiting for {what} to exit: {e}");
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A running `membrane testnet`; on drop it gets SIGINT (so it removes its namespaces) and
/// is waited for.
struct Testnet {
    child: Option<Child>,
    lines: Receiver<String>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            signal(child.id(), "INT");
            let _ = std::panic::catch_unwind(|| wait_exit(child, "the testnet"));
        }
    }
}

impl Testnet {
    fn start(dir: &Path, extra: &[&str]) -> Testnet {
        let mut child = Command::new(bin())
            .args(["testnet", "--nodes", "3", "--timeout", "90", "--dir"])
            .arg(dir)
            .args(extra)
            .env_remove("MEMBRANE_API")
            .env_remove("MEMBRANE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        Testnet {
            child: Some(child),
            lines,
        }
    }

    /// Reads stdout up to the closing "Ctrl-C stops every node" line; returns the table's
    /// rows, split into columns.
    fn wait_table(&self) -> Vec<Vec<String>> {
        let deadline = Instant::now() + DEADLINE;
        let mut rows = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for the testnet's table: {e}"));
            if line.contains("Ctrl-C stops every node") {
                return rows;
            }
            if line.starts_with("node") {
                rows.push(line.split_whitespace().map(str::to_owned).collect());
            }
        }
    }

    /// SIGINT, then the exit status.
    fn interrupt(mut self) -> ExitStatus {
        let child = self.child.take().unwrap();
        signal(child.id(), "INT");
        wait_exit(child, "the testnet")
    }
}

/// Runs `membrane <args> --data-dir <dir>`.
fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMBRANE_API")
        .env_remove("MEMBRANE_TOKEN")
        .output()
        .unwrap()
}

/// Runs a CLI verb with `--json` that must succeed; returns its answer.
fn cli_json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cli(dir, &args);
    assert!(
        out.status.success(),
        "membrane {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Follows `dir`'s event stream from the start until an event about `key`; returns it.
fn first_event(dir: &Path, key: &str) -> Value {
    let mut child = Command::new(bin())
        .args(["events", "--since", "0", "--patterns", key, "--json"])
        .args(["--count", "1", "--data-dir"])
        .arg(dir)
        .env_remove("MEMBRANE_API")
        .env_remove("MEMBRANE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let line = lines.recv_timeout(DEADLINE);
    let _ = child.kill();
    let status = wait_exit(child, "membrane events");
    let line =
        line.unwrap_or_else(|e| panic!("waiting for {key} at {} ({status}): {e}", dir.display()));
    serde_json::from_str(&line).unwrap()
}

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

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

fn ip_ok(args: &[&str]) -> String {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether this machine lets us create a network namespace (root in a container may not).
fn can_make_namespaces() -> bool {
    let name = format!("membrane-probe-{}", std::process::id());
    let made = ip(&["netns", "add", &name]).status.success();
    if made {
        let _ = ip(&["netns", "del", &name]);
    }
    made
}

/// `membrane testnet --netns` as a user who is not root: refused, saying root is needed,
/// and nothing started.
fn assert_refused(mut cmd: Command, dir: &Path) {
    let out = cmd
        .args(["testnet", "--netns", "--nodes", "2", "--dir"])
        .arg(dir.join("refused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--netns needs root"), "{stderr}");
    assert!(!dir.join("refused").exists());
}

#[test]
fn a_node_cut_off_catches_up_when_its_link_returns() {
    let root = tempfile::tempdir().unwrap();
    if euid() != 0 {
        assert_refused(Command::new(bin()), root.path());
        return;
    }
    if !can_make_namespaces() {
        // Root without the privilege (a container): refused with the reason, nothing left.
        let out = Command::new(bin())
            .args(["testnet", "--netns", "--nodes", "2", "--dir"])
            .arg(root.path().join("net"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("netns"), "{stderr}");
        let pid = format!("membrane-{}-", std::process::id());
        assert!(!ip_ok(&["netns", "list"]).contains(&pid));
        return;
    }
    let testnet = Testnet::start(root.path(), &["--netns"]);
    let rows = testnet.wait_table();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // name, peer id, peers, netns, veth, api, listen.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("node{}", i + 1));
        assert!(row[3].starts_with("membrane-"), "{row:?}");
        assert!(row[5].starts_with("10."), "{row:?}");
        assert!(row[6].starts_with("/ip4/10."), "{row:?}");
    }
    let namespaces: Vec<String> = rows.iter().map(|r| r[3].clone()).collect();
    let listed = ip_ok(&["netns", "list"]);
    for ns in &namespaces {
        assert!(listed.contains(ns.as_str()), "{ns} not in {listed}");
    }
    let veth3 = rows[2][4].clone();
    let bridge = format!(
        "mbr{}",
        veth3
            .strip_prefix("mv")
            .and_then(|v| v.split('-').next())
            .unwrap()
    );
    let dir = |i: usize| -> PathBuf { root.path().join(format!("node{i}")) };

    // Connected: an entry exposed on node1 reaches node3.
    cli_json(
        &dir(1),
        &["expose", "mesh.first", "before the cut", "--tier", "public"],
    );
    let first = first_event(&dir(3), "mesh.first");
    assert_eq!(first["type"], "arrived", "{first}");

    // Cut off: node2 gets the next entry, node3 does not.
    ip_ok(&["link", "set", &veth3, "down"]);
    let second = cli_json(
        &dir(1),
        &[
            "expose",
            "mesh.second",
            "during the cut",
            "--tier",
            "public",
        ],
    );
    let at2 = first_event(&dir(2), "mesh.second");
    assert_eq!(at2["type"], "arrived", "{at2}");
    assert_eq!(at2["id"], second["id"]);
    // The bridge is node3's only way to the root namespace too: ask from inside its own.
    let out = Command::new("ip")
        .args(["netns", "exec", &namespaces[2], bin()])
        .args(["query", "mesh.**", "--json", "--data-dir"])
        .arg(dir(3))
        .env_remove("MEMBRANE_API")
        .env_remove("MEMBRANE_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query inside node3's namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at3: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys(&at3), ["mesh.first"], "{at3}");

    // Back on the network: node3 catches up.
    ip_ok(&["link", "set", &veth3, "up"]);
    let caught = first_event(&dir(3), "mesh.second");
    assert_eq!(caught["type"], "arrived", "{caught}");
    assert_eq!(caught["id"], second["id"]);
    let at3 = cli_json(&dir(3), &["query", "mesh.**"]);
    assert_eq!(keys(&at3), ["mesh.first", "mesh.second"], "{at3}");

    // SIGINT: a clean exit that leaves no namespace, veth or bridge behind.
    let status = testnet.interrupt();
    assert!(status.success(), "{status}");
    let listed = ip_ok(&["netns", "list"]);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} left in {listed}");
    }
    assert!(!ip(&["link", "show", &bridge]).status.success());
    assert!(!ip(&["link", "show", &veth3]).status.success());
}

#[test]
fn netns_is_refused_without_root() {
    let root = tempfile::tempdir().unwrap();
    if euid() != 0 {
        assert_refused(Command::new(bin()), root.path());
        return;
    }
    // As root: drop to nobody for this one command.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        bin(),
    ]);
    assert_refused(cmd, root.path());
}
