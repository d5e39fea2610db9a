//! `membrane testnet --netns`: each node in a network namespace of its own, all joined by a
//! bridge, so a test can cut one node off the network with `ip link set <veth> down`.
//!
//! Names and addresses, with `<k>` the testnet's process id (unique while it runs, at most
//! 7 digits, so every interface name stays within Linux's 15 characters):
//!
//! | what | name | address |
//! | --- | --- | --- |
//! | bridge, in the root namespace | `mbr<k>` | `10.<a>.<b>.1/24` |
//! | node i's namespace (i from 1) | `membrane-<k>-<i>` | |
//! | node i's veth, on the bridge | `mv<k>-<i>` | |
//! | its peer, inside the namespace | `eth0` (and `lo`, up) | `10.<a>.<b>.<i+1>/24` |
//!
//! `<a>.<b>` are the two low bytes of the pid, moved on past any `10.x.y.0/24` this host
//! already has an address or route in. The namespaces have no default route: a node reaches
//! the other nodes and the root namespace's bridge address, nothing else. The bridge address
//! is what lets the CLI, run in the root namespace, reach each node's API.
//!
//! `ip link set mv<k>-<i> down` cuts node i off (its `eth0` loses carrier); `up` puts it back.
//!
//! [`Netns::teardown`] (also run on drop) removes the veths, the namespaces and the bridge;
//! it is idempotent and works on whatever a half-finished [`Netns::create`] left.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Refuses `--netns` unless this process runs as root and `ip` (iproute2) is on `PATH`.
pub(super) fn check() -> anyhow::Result<PathBuf> {
    let euid = effective_uid()?;
    anyhow::ensure!(
        euid == 0,
        "--netns needs root, to create network namespaces, veth pairs and a bridge \
         (running as uid {euid}); run it as root, e.g. with sudo"
    );
    find_on_path("ip").ok_or_else(|| {
        anyhow::anyhow!("--netns needs the `ip` command (Debian's iproute2) on PATH; none found")
    })
}

/// The effective uid, from the second field of `Uid:` in `/proc/self/status`.
fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| {
        anyhow::anyhow!("--netns works on Linux only: cannot read /proc/self/status: {e}")
    })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no effective uid in /proc/self/status"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The namespaces, veths and bridge of one testnet; removed on drop.
#[derive(Debug)]
pub(super) struct Netns {
    ip: PathBuf,
    id: u32,
    subnet: [u8; 2],
    nodes: usize,
    torn_down: bool,
}

impl Netns {
    /// Builds the bridge and one namespace per node (see the module docs). On error, what
    /// was built is removed before the error is returned.
    pub(super) fn create(ip: PathBuf, nodes: usize) -> anyhow::Result<Netns> {
        let id = std::process::id();
        let subnet = free_subnet(&ip, id)?;
        let net = Netns {
            ip,
            id,
            subnet,
            nodes,
            torn_down: false,
        };
        // Leftovers of an earlier testnet that had this pid and was killed outright.
        net.remove_all(false);
        // From here on, an early return drops `net`, which removes what was built.
        let bridge = net.bridge();
        net.ip(&["link", "add", "name", &bridge, "type", "bridge"])?;
        net.ip(&[
            "addr",
            "add",
            &format!("{}/24", net.bridge_addr()),
            "dev",
            &bridge,
        ])?;
        net.ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=nodes {
            let (ns, veth) = (net.namespace(i), net.veth(i));
            net.ip(&["netns", "add", &ns])?;
            net.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            net.ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.addr(i));
            net.ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            net.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            net.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The bridge, `mbr<k>`.
    pub(super) fn bridge(&self) -> String {
        format!("mbr{}", self.id)
    }

    /// Node `i`'s namespace (`i` from 1), `membrane-<k>-<i>`.
    pub(super) fn namespace(&self, i: usize) -> String {
        format!("membrane-{}-{i}", self.id)
    }

    /// Node `i`'s veth on the bridge, `mv<k>-<i>`: set it down to cut the node off.
    pub(super) fn veth(&self, i: usize) -> String {
        format!("mv{}-{i}", self.id)
    }

    /// The bridge's address, `10.<a>.<b>.1`.
    fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], 1)
    }

    /// Node `i`'s address, `10.<a>.<b>.<i+1>`.
    pub(super) fn addr(&self, i: usize) -> Ipv4Addr {
        let host = u8::try_from(i + 1).unwrap_or(u8::MAX);
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], host)
    }

    /// `ip netns exec <node i's namespace> <program>`: `ip` enters the namespace and execs
    /// the program, so the child's pid is the program's.
    pub(super) fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.namespace(i)]).arg(program);
        cmd
    }

    /// Removes the veths, namespaces and bridge. Run after the nodes are stopped; safe to
    /// run again (later calls do nothing).
    pub(super) fn teardown(&mut self) {
        if !self.torn_down {
            self.torn_down = true;
            self.remove_all(true);
        }
    }

    /// Deletes each veth (both ends go), namespace and the bridge, whichever exist. With
    /// `report`, failures other than "not there" are told on stderr.
    fn remove_all(&self, report: bool) {
        let mut steps = Vec::new();
        for i in 1..=self.nodes {
            steps.push(vec!["link".to_owned(), "del".to_owned(), self.veth(i)]);
            steps.push(vec![
                "netns".to_owned(),
                "del".to_owned(),
                self.namespace(i),
            ]);
        }
        steps.push(vec!["link".to_owned(), "del".to_owned(), self.bridge()]);
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = self.ip(&args) {
                let text = e.to_string();
                let absent = text.contains("Cannot find device")
                    || text.contains("No such file")
                    || text.contains("does not exist");
                if report && !absent {
                    eprintln!("membrane testnet: cleaning up: {e}");
                }
            }
        }
    }

    /// Runs `ip <args>`; a failure carries the command and what `ip` said.
    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ip(&self.ip, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn run_ip(ip: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(ip)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", ip.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `10.<a>.<b>.0/24` that no address or route of this host touches, starting from the
/// pid's two low bytes.
fn free_subnet(ip: &Path, id: u32) -> anyhow::Result<[u8; 2]> {
    let mut used = std::collections::HashSet::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let text = run_ip(ip, args)?;
        for word in text.split_whitespace() {
            let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
            let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                continue;
            };
            let [ten, a, b, _] = addr.octets();
            if ten != 10 {
                continue;
            }
            // A /24 of ours inside a wider 10.x range of the host would take part of it
            // over: keep out of /16s to /23s too (wider ones are left alone).
            match len {
                24.. => {
                    used.insert([a, b]);
                }
                16..=23 => {
                    let span = 1u16 << (24 - len);
                    let first = u16::from_be_bytes([a, b]) & !(span - 1);
                    used.extend((0..span).map(|n| (first + n).to_be_bytes()));
                }
                _ => {}
            }
        }
    }
    let start = (id & 0xffff) as u16;
    (0..=u16::MAX)
        .map(|n| start.wrapping_add(n).to_be_bytes())
        .find(|subnet| !used.contains(subnet))
        .ok_or_else(|| anyhow::anyhow!("no free 10.x.y.0/24 subnet for the bridge"))
}
