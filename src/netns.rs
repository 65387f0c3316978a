//! A market across network namespaces (`bazaar run --netns`): each node in a
//! namespace of its own with its own address, joined by veth pairs to a
//! bridge, and network faults as real packet filter rules (nftables).
//!
//! Layout, for a launcher of pid `P` (every name carries the prefix `bzP`,
//! so parallel runs and `bazaar netns clean` never touch anything else):
//!
//! ```text
//! namespace bzP-hub:  bridge br0, and one veth end bzPb<id> per node on it
//! namespace bzP-n<id>: lo, and the other end bzPa<id> with address 10.77.x.y/16
//! ```
//!
//! The bridge lives in a namespace of its own, not in the host's: the
//! market's packets travel only between the namespaces the run made, and
//! the host's interfaces, routes and firewall are never touched.
//!
//! Faults: a partition is, in each node's namespace, a drop of every packet
//! to or from the nodes of the other groups (input and output hooks); loss
//! is a `numgen random` drop of that share of the packets the node sends.
//! Each namespace's rules are one table (`inet bazaar`) replaced whole in
//! one `nft -f` transaction whenever the faults in force change. (Delay
//! and jitter need `tc netem`, which kernels like this one lack: the
//! transport's fault layer, [`crate::net::Faulty`], makes them.)
//!
//! Clean-up: [`Netns`] deletes its namespaces (and with them the veths and
//! the rules) when dropped; the launcher also cleans on a second Ctrl-C or
//! SIGTERM before it exits ([`clean_registered`]); a launcher killed
//! outright leaves them to `bazaar netns clean`, which removes every `bzP-`
//! namespace whose launcher `P` is no longer running ([`clean_orphans`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;

use crate::config::NetFault;
use crate::wire::NodeId;

/// Why the netns mode cannot run here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetnsError(pub String);

/// The table every namespace's fault rules live in.
const TABLE: &str = "bazaar";

/// Prefixes of the namespaces this process made and has not yet removed.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this process can make namespaces: root, with `ip` and `nft`.
pub fn preflight(needs_nft: bool) -> Result<(), NetnsError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetnsError(
            "--netns needs root (network namespaces, veth pairs and nftables rules): run it with sudo, or drop --netns to run on loopback".into(),
        ));
    }
    if run(&["ip", "netns", "list"]).is_err() {
        return Err(NetnsError(
            "--netns needs `ip netns` (iproute2), which does not work here".into(),
        ));
    }
    if needs_nft && run(&["nft", "--version"]).is_err() {
        return Err(NetnsError(
            "the config's partitions and loss need nftables in --netns mode: `apt-get install nftables`".into(),
        ));
    }
    Ok(())
}

/// Runs a command; its stderr is the error.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `nft -f -` in namespace `ns` with `script` on its stdin.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot feed nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The address of `node` in the run's network: 10.77.0.1 for the
/// warehouse, 10.77.0.(id+1) for peers, on to 10.77.x.y.
pub fn address(node: NodeId) -> IpAddr {
    let i = node.0;
    IpAddr::V4(Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// The namespaces, veths and bridge of one run; removed when dropped.
pub struct Netns {
    prefix: String,
    nodes: Vec<NodeId>,
}

impl Netns {
    /// Makes the hub namespace with its bridge and one namespace per node,
    /// each joined to the bridge by a veth pair.
    pub fn create(nodes: &[NodeId]) -> Result<Netns, NetnsError> {
        if nodes.iter().any(|n| n.0 >= 250 * 250) {
            return Err(NetnsError("--netns runs at most 62500 nodes".into()));
        }
        let prefix = format!("bz{}", std::process::id());
        LIVE.lock().expect("live").push(prefix.clone());
        // From here on, a failure drops `net`, which removes what was made.
        let net = Netns {
            prefix,
            nodes: nodes.to_vec(),
        };
        net.build().map_err(NetnsError)?;
        Ok(net)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace `node` runs in.
    pub fn namespace(&self, node: NodeId) -> String {
        format!("{}-n{}", self.prefix, node.0)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub();
        run(&["ip", "netns", "add", &hub])?;
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        for &n in &self.nodes {
            let ns = self.namespace(n);
            let (inside, outside) = (
                format!("{}a{}", self.prefix, n.0),
                format!("{}b{}", self.prefix, n.0),
            );
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&[
                "ip", "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name",
                &outside, "netns", &hub,
            ])?;
            let addr = format!("{}/16", address(n));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"])?;
            run(&["ip", "-n", &hub, "link", "set", &outside, "master", "br0"])?;
            run(&["ip", "-n", &hub, "link", "set", &outside, "up"])?;
        }
        Ok(())
    }

    /// The command that runs `program` inside `node`'s namespace.
    pub fn command(&self, node: NodeId, program: &std::path::Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(node)])
            .arg(program);
        cmd
    }

    /// Replaces every namespace's rules with those for `faults` (the
    /// partitions and losses in force; delays are not nftables' work).
    pub fn apply(&self, faults: &[NetFault]) -> Result<(), NetnsError> {
        for (&n, script) in &rules(&self.nodes, faults) {
            nft(&self.namespace(n), script).map_err(NetnsError)?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.prefix);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.prefix);
    }
}

/// The nftables script for each node's namespace: the table replaced whole.
pub fn rules(nodes: &[NodeId], faults: &[NetFault]) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for &me in nodes {
        let mut cut: Vec<IpAddr> = Vec::new();
        let mut drop_per_mille = 0u32;
        for f in faults {
            match f {
                NetFault::Partition { groups } => {
                    let mine = groups.iter().position(|g| g.contains(&me));
                    if let Some(mine) = mine {
                        for (i, g) in groups.iter().enumerate() {
                            if i != mine {
                                cut.extend(g.iter().map(|n| address(*n)));
                            }
                        }
                    }
                }
                NetFault::Loss { on, per_mille } if *on == me => {
                    drop_per_mille = drop_per_mille.max(*per_mille).min(1000);
                }
                _ => {}
            }
        }
        cut.sort();
        cut.dedup();
        let mut input = String::new();
        let mut output = String::from("    oifname \"lo\" accept\n");
        if !cut.is_empty() {
            let set: Vec<String> = cut.iter().map(|a| a.to_string()).collect();
            let set = set.join(", ");
            input.push_str(&format!("    ip saddr {{ {set} }} drop\n"));
            output.push_str(&format!("    ip daddr {{ {set} }} drop\n"));
        }
        if drop_per_mille > 0 {
            output.push_str(&format!(
                "    numgen random mod 1000 < {drop_per_mille} drop\n"
            ));
        }
        let script = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        );
        out.insert(me, script);
    }
    out
}

/// Deletes every namespace of `prefix` (their veths and rules go with them).
fn remove(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for ns in list()
        .into_iter()
        .filter(|ns| owner(ns).is_some_and(|(p, _)| p == prefix))
    {
        match run(&["ip", "netns", "del", &ns]) {
            Ok(()) => removed.push(ns),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    removed
}

/// Removes the namespaces of this process's runs (a launcher about to exit
/// without unwinding).
pub fn clean_registered() {
    let prefixes = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for p in prefixes {
        remove(&p);
    }
}

/// The namespaces `ip netns list` shows.
fn list() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `(prefix, launcher pid)` of a namespace named `bz<pid>-hub` or
/// `bz<pid>-n<id>`; `None` for any other name.
pub fn owner(ns: &str) -> Option<(&str, u32)> {
    let (prefix, rest) = ns.split_once('-')?;
    let pid: u32 = prefix.strip_prefix("bz")?.parse().ok()?;
    let ours = rest == "hub"
        || rest
            .strip_prefix('n')
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    ours.then_some((prefix, pid))
}

/// The namespaces of runs whose launcher is gone (`bazaar netns clean`),
/// removed; returns their names.
pub fn clean_orphans() -> Result<Vec<String>, NetnsError> {
    preflight(false)?;
    let mut prefixes: Vec<String> = list()
        .iter()
        .filter_map(|ns| owner(ns))
        .filter(|(_, pid)| !alive(*pid))
        .map(|(p, _)| p.to_string())
        .collect();
    prefixes.sort();
    prefixes.dedup();
    Ok(prefixes.iter().flat_map(|p| remove(p)).collect())
}

/// Whether a process `pid` runs and is a bazaar (a pid reused by another
/// program counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bazaar")
}

/// The namespaces of the launcher `pid` that exist now (for tests).
pub fn left_by(pid: u32) -> Vec<String> {
    let prefix = format!("bz{pid}");
    list()
        .into_iter()
        .filter(|ns| owner(ns).is_some_and(|(p, _)| p == prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_ours() {
        assert_eq!(owner("bz123-hub"), Some(("bz123", 123)));
        assert_eq!(owner("bz123-n6"), Some(("bz123", 123)));
        for other in [
            "bz-hub", "bzx-n1", "bz123-n", "bz123-nx", "docker1", "bz12-foo", "cni-123",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_partition_drops_both_ways_in_each_group_and_loss_only_what_the_node_sends() {
        let nodes = [NodeId(0), NodeId(1), NodeId(5), NodeId(6)];
        let faults = [
            NetFault::Partition {
                groups: vec![vec![NodeId(5)], vec![NodeId(6), NodeId(0)]],
            },
            NetFault::Loss {
                on: NodeId(1),
                per_mille: 100,
            },
        ];
        let r = rules(&nodes, &faults);
        assert!(r[&NodeId(5)].contains("ip saddr { 10.77.0.1, 10.77.0.7 } drop"));
        assert!(r[&NodeId(5)].contains("ip daddr { 10.77.0.1, 10.77.0.7 } drop"));
        assert!(r[&NodeId(0)].contains("ip daddr { 10.77.0.6 } drop"));
        assert!(!r[&NodeId(1)].contains("daddr"), "node 1 is in no group");
        assert!(r[&NodeId(1)].contains("numgen random mod 1000 < 100 drop"));
        assert!(!r[&NodeId(5)].contains("numgen"));
        // Healed: every table is replaced by an empty one.
        assert!(rules(&nodes, &[]).values().all(|s| !s.contains("drop")));
    }

    #[test]
    fn addresses_are_distinct() {
        let a: std::collections::BTreeSet<_> = (0..1000).map(|i| address(NodeId(i))).collect();
        assert_eq!(a.len(), 1000);
    }
}
