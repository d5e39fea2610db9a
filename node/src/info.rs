//! `node.json`: what a running node tells scripts about itself.
//!
//! When the node is ready it writes `<data-dir>/node.json` with its peer id, the addresses
//! it actually listens on (ports chosen by the OS included) and its API address, and
//! removes the file on clean shutdown. A script starts the node and polls for the file:
//!
//! ```json
//! {"peer_id":"12D3KooW…","listen":["/ip4/127.0.0.1/tcp/40123"],"api":"127.0.0.1:7420","pid":4242,"started_at_ms":1767225600000}
//! ```
//!
//! The file is written to a temporary name and renamed into place, so a reader sees
//! either no file, the previous one, or the whole new one — never half of it. A file left
//! by a node that crashed names a `pid` that no longer runs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Name of the file inside the data dir.
pub const INFO_FILE_NAME: &str = "node.json";

static WRITES: AtomicU64 = AtomicU64::new(0);

/// What a running node publishes about itself in `node.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's peer id, `12D3KooW…`.
    pub peer_id: String,
    /// The multiaddrs the node listens on, as the OS bound them.
    pub listen: Vec<String>,
    /// The agent API's socket address, such as `127.0.0.1:7420`.
    pub api: String,
    /// The node's process id.
    pub pid: u32,
    /// When the node started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Peers connected when the file was last written (rewritten as that changes).
    #[serde(default)]
    pub peers: usize,
}

/// The path of `node.json` in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(INFO_FILE_NAME)
}

/// Writes `<data_dir>/node.json` atomically (temporary file, flush, rename).
pub fn write(data_dir: &Path, info: &NodeInfo) -> io::Result<()> {
    let target = path(data_dir);
    // Unique per process and call, so concurrent writers never share a temporary file.
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let temp = data_dir.join(format!(".{INFO_FILE_NAME}.{}.{n}.tmp", std::process::id()));
    let result = write_temp(&temp, info).and_then(|()| fs::rename(&temp, &target));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_temp(temp: &Path, info: &NodeInfo) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(info).map_err(io::Error::other)?;
    json.push(b'\n');
    let mut file = File::create(temp)?;
    file.write_all(&json)?;
    file.sync_all()
}

/// Reads `<data_dir>/node.json`. A file that is not a `NodeInfo` is an
/// [`io::ErrorKind::InvalidData`] error.
pub fn read(data_dir: &Path) -> io::Result<NodeInfo> {
    let target = path(data_dir);
    let bytes = fs::read(&target)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", target.display()),
        )
    })
}

/// Removes `<data_dir>/node.json`, as on clean shutdown. A missing file is not an error.
pub fn remove(data_dir: &Path) -> io::Result<()> {
    match fs::remove_file(path(data_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeInfo {
        NodeInfo {
            peer_id: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".to_owned(),
            listen: vec![
                "/ip4/127.0.0.1/tcp/40123".to_owned(),
                "/ip6/::1/tcp/40124".to_owned(),
            ],
            api: "127.0.0.1:7420".to_owned(),
            pid: 4242,
            started_at_ms: 1_767_225_600_000,
            peers: 2,
        }
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let info = sample();
        write(dir.path(), &info).unwrap();
        assert_eq!(read(dir.path()).unwrap(), info);

        let mut next = info.clone();
        next.pid = 4243;
        next.listen.clear();
        write(dir.path(), &next).unwrap();
        assert_eq!(read(dir.path()).unwrap(), next);
        // Only node.json is left: no temporary file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn is_plain_json_with_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&fs::read(path(dir.path())).unwrap()).unwrap();
        assert_eq!(value["api"], "127.0.0.1:7420");
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["listen"][0], "/ip4/127.0.0.1/tcp/40123");
        assert_eq!(value["started_at_ms"], 1_767_225_600_000_u64);
    }

    #[test]
    fn remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        remove(dir.path()).unwrap();
        assert_eq!(
            read(dir.path()).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        remove(dir.path()).unwrap();
    }

    #[test]
    fn garbage_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), b"{\"peer_id\":").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("node.json"), "{err}");
    }
}
