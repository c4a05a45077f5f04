//! The lab's "outside world" and its node rows: a network namespace standing for the
//! internet, reachable only through the nodes' uplinks (a bridge in it with one veth to each
//! node, 203.0.113.0/24, TEST-NET-3), never through eth0; and the status rows node → pod,
//! pod → own node, pod → other node, pod → outside (docs/node-connectivity.md).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ferrovn_api::annotations::NodeNetwork;

use ferrovn_testkit::process::which;

use crate::model::{LabState, NodeState, PodState, Resource, render_table};
use crate::sys::{Place, Records, run, run_in, spawn_daemon};

/// The outside server's address (HTTP `/clientip` on 8080 when agnhost is there, and ping).
pub const OUTSIDE_IP: &str = "203.0.113.10";
const OUTSIDE_IF_NODE: &str = "fvout";

/// Node `i`'s address on its uplink to the outside.
pub fn uplink_ip(i: usize) -> String {
    format!("203.0.113.{}", i + 1)
}

pub fn netns_name(prefix: &str) -> String {
    format!("{prefix}-outside")
}

/// Builds the outside namespace and links every node to it; starts agnhost's HTTP server in it
/// when the Kubernetes binaries are there. Returns a note for the step line.
pub fn start(
    prefix: &str,
    records: &Records,
    nodes: &[NodeState],
    log_dir: &Path,
) -> anyhow::Result<String> {
    let ns = netns_name(prefix);
    run(10, "ip", ["netns", "add", &ns])?;
    records.add(&Resource::Netns { name: ns.clone() })?;
    run_in(&ns, 5, "ip", ["link", "set", "lo", "up"])?;
    run_in(&ns, 5, "ip", ["link", "add", "br-out", "type", "bridge"])?;
    for (i, node) in nodes.iter().enumerate() {
        let peer = format!("out{i}");
        run(
            10,
            "ip",
            [
                "link",
                "add",
                OUTSIDE_IF_NODE,
                "netns",
                &node.netns,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &ns,
            ],
        )?;
        records.add(&Resource::Link {
            netns: node.netns.clone(),
            name: OUTSIDE_IF_NODE.into(),
        })?;
        run_in(
            &ns,
            5,
            "ip",
            ["link", "set", &peer, "master", "br-out", "up"],
        )?;
        let addr = format!("{}/24", uplink_ip(i));
        run_in(
            &node.netns,
            5,
            "ip",
            ["addr", "add", &addr, "dev", OUTSIDE_IF_NODE],
        )?;
        run_in(&node.netns, 5, "ip", ["link", "set", OUTSIDE_IF_NODE, "up"])?;
        // a Kubernetes node forwards (kubelet and kube-proxy require it); the lab's nodes are
        // network namespaces, so this is theirs alone, never the machine's
        run_in(&node.netns, 5, "sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
    }
    run_in(
        &ns,
        5,
        "ip",
        ["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "br-out"],
    )?;
    run_in(&ns, 5, "ip", ["link", "set", "br-out", "up"])?;
    let agnhost = ferrovn_testkit::kube::bin_dir().join("agnhost");
    if agnhost.exists() {
        spawn_daemon(
            records,
            "agnhost@outside",
            Place::NetOnly(&ns),
            &[],
            &agnhost.display().to_string(),
            &[
                "netexec".into(),
                "--http-port=8080".into(),
                "--udp-port=-1".into(),
            ],
            &log_dir.join("outside-agnhost.log"),
            // its command line cannot carry the lab's marker (the state dir): its own path
            // and mode guard against PID reuse instead
            &format!("{} netexec", agnhost.display()),
            false,
        )?;
        Ok(format!(
            "{OUTSIDE_IP} (HTTP :8080 /clientip), uplinks 203.0.113.1..{}",
            nodes.len()
        ))
    } else {
        Ok(format!(
            "{OUTSIDE_IP} (ping only: no agnhost at {})",
            agnhost.display()
        ))
    }
}

fn ping(netns: &str, dst: &str) -> bool {
    (0..3).any(|_| run_in(netns, 4, "ping", ["-c1", "-W1", dst]).is_ok())
}

/// The source address the outside saw for a GET from `netns`, if its HTTP server answers.
fn seen_source(netns: &str) -> Option<String> {
    which("curl")?;
    let url = format!("http://{OUTSIDE_IP}:8080/clientip");
    let out = run_in(netns, 5, "curl", ["-s", "-m", "2", &url]).ok()?;
    out.trim().rsplit_once(':').map(|(ip, _)| ip.to_string())
}

/// The pod CIDRs without natOutgoing, from the Nodes' annotations the controller wrote (by
/// Node name, as the API server has them).
fn routed_cidrs(node_annotations: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let labels = ferrovn_api::annotations::Annotations::new();
    for annotations in node_annotations.values() {
        let n = NodeNetwork::new(annotations, &labels);
        let nat: BTreeSet<String> = n
            .nat_outgoing_cidrs()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        for c in n.pod_cidrs().unwrap_or_default() {
            let c = c.to_string();
            if c.contains('.') && !nat.contains(&c) {
                out.insert(c);
            }
        }
    }
    out
}

/// Prints the node and outside rows; returns (reachable, total). First the outside learns a
/// route to every routed (`natOutgoing: false`) pod subnet via the first node's uplink, as the
/// upstream router of a cluster with routed pod addresses is configured; answers to pods on
/// other nodes go on from there through OVN.
pub fn print_rows(
    lab: &LabState,
    pods: &[PodState],
    node_annotations: &BTreeMap<String, BTreeMap<String, String>>,
) -> (usize, usize) {
    let ns = netns_name(&lab.prefix);
    for cidr in routed_cidrs(node_annotations) {
        let _ = run_in(
            &ns,
            5,
            "ip",
            ["route", "replace", &cidr, "via", &uplink_ip(0)],
        );
    }
    let mut rows = Vec::new();
    let (mut ok, mut total) = (0, 0);
    let mut row = |from: String, to: String, path: String, reached: bool, note: String| {
        total += 1;
        if reached {
            ok += 1;
        }
        let result = if reached { "ok" } else { "UNREACHABLE" };
        rows.push(vec![from, to, path, format!("{result}{note}")]);
    };
    for p in pods.iter().filter(|p| p.unavailable().is_none()) {
        let Some(node) = lab.node(&p.node) else {
            continue;
        };
        let Some(IpAddr::V4(ip)) = p.probe_interface().and_then(|i| i.ip) else {
            continue;
        };
        let ip = ip.to_string();
        let kind = if p.dpdk { "DPDK pod" } else { "pod" };
        row(
            format!("node {}", node.name),
            format!("{kind} {} {ip}", p.key()),
            "ovn0 -> router".into(),
            ping(&node.netns, &ip),
            String::new(),
        );
        if p.dpdk {
            // testpmd's icmpecho answers; it never starts a conversation
            continue;
        }
        for other in &lab.nodes {
            let own = other.name == node.name;
            row(
                format!("{kind} {}", p.key()),
                format!(
                    "{} node {} {}",
                    if own { "own" } else { "other" },
                    other.name,
                    other.encap_ip
                ),
                format!("router policy 30000 -> ovn0 of {}", other.name),
                ping(&p.netns, &other.encap_ip),
                String::new(),
            );
        }
        let reached = ping(&p.netns, OUTSIDE_IP);
        let note = match seen_source(&p.netns) {
            Some(src) if src == ip => format!(" (outside saw {src}: routed)"),
            Some(src) => format!(" (outside saw {src}: SNAT)"),
            None => String::new(),
        };
        row(
            format!("{kind} {}", p.key()),
            format!("outside {OUTSIDE_IP}"),
            format!("distributed gateway via {}", node.name),
            reached,
            note,
        );
    }
    println!();
    println!("NODES AND OUTSIDE (ping; the outside's HTTP /clientip shows the source it saw)");
    print!("{}", render_table(&["from", "to", "path", "result"], &rows));
    println!("node/outside rows: {ok}/{total} reachable");
    (ok, total)
}
