//! The truth-table harness shared by every real-traffic policy table (NetworkPolicy,
//! AdminNetworkPolicy, security groups, subnet ACLs; kernel and DPDK pods): plumbing a pod's
//! network namespace, a server on every endpoint, probing a whole (source, destination,
//! column) matrix and comparing it with a model's verdicts.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::NbPlan;
use ferrovn_control::plan::netpol::Protocol;
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, POD_MTU};
use ferrovn_testkit::ovsdb::OvnCentral;

/// (protocol, port) of every probe column.
pub const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

/// A probe cell: source, destination (endpoint indexes), column of [`PORTS`].
pub type Cell = (usize, usize, usize);

/// Every cell between `n` endpoints (no endpoint probes itself).
pub fn all_cells(n: usize) -> Vec<Cell> {
    let mut v = Vec::new();
    for s in 0..n {
        for d in 0..n {
            if s != d {
                for c in 0..PORTS.len() {
                    v.push((s, d, c));
                }
            }
        }
    }
    v
}

/// The model's verdict for every cell: `verdict(src, dst, protocol, port)`.
pub fn expect(
    n: usize,
    verdict: impl Fn(usize, usize, Protocol, u16) -> bool,
) -> BTreeMap<Cell, bool> {
    all_cells(n)
        .into_iter()
        .map(|cell @ (s, d, c)| {
            let (proto, port) = PORTS[c];
            (cell, verdict(s, d, proto, port))
        })
        .collect()
}

/// Network namespace `name` whose `eth0` (veth, MTU [`POD_MTU`], `mac`, `cidr`, `routes`;
/// checksums computed in the pod, as TCP across the userspace datapath and Geneve needs) has
/// its other end `far` (at most 15 characters) in `far_ns`.
pub fn pod_netns(
    far_ns: &Netns,
    far: &str,
    name: &str,
    mac: MacAddr,
    cidr: &str,
    routes: &[(&str, &str)],
) -> Netns {
    let ns = Netns::create(name).expect("netns");
    let mtu = POD_MTU.to_string();
    far_ns
        .ip([
            "link",
            "add",
            far,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])
        .expect("veth");
    far_ns.ip(["link", "set", far, "up"]).unwrap();
    ns.ip(["link", "set", "eth0", "address", &mac.to_string()])
        .unwrap();
    ns.ip(["link", "set", "eth0", "mtu", &mtu]).unwrap();
    ns.ip(["addr", "add", cidr, "dev", "eth0"]).unwrap();
    ns.ip(["link", "set", "eth0", "up"]).unwrap();
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    for (to, via) in routes {
        ns.ip(["route", "add", to, "via", via]).unwrap();
    }
    ns.run(10, "ethtool", ["-K", "eth0", "tx", "off"])
        .expect("ethtool");
    ns
}

/// A kernel pod: [`pod_netns`] `fn<prefix>-<tag>-<short>` whose veth's far end is a port of
/// `node`'s br-int bound to logical port `lsp`, installed by ovn-controller.
#[allow(clippy::too_many_arguments)]
pub fn kernel_pod(
    node: &Node,
    prefix: &str,
    tag: &str,
    short: &str,
    lsp: &str,
    mac: MacAddr,
    cidr: &str,
    routes: &[(&str, &str)],
) -> Netns {
    let host = format!("{prefix}{tag}{short}");
    let host = &host[host.len().saturating_sub(15)..];
    let ns = pod_netns(
        node.netns(),
        host,
        &format!("fn{prefix}-{tag}-{short}"),
        mac,
        cidr,
        routes,
    );
    node.bind_port(host, lsp, Duration::from_secs(60))
        .expect("add-port, ovn-installed");
    ns
}

/// YAML documents (`---` separated, without apiVersion / kind) as objects of one kind.
pub fn objects<T: serde::de::DeserializeOwned>(
    yaml: &str,
    api_version: &str,
    kind: &str,
) -> Vec<T> {
    if yaml.trim().is_empty() {
        return Vec::new();
    }
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let mut v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            v["apiVersion"] = api_version.into();
            v["kind"] = kind.into();
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

/// Writes `plan` into the NB and waits until both chassis have its flows.
pub async fn apply(sync: &NbSync, central: &OvnCentral, plan: &NbPlan) {
    sync.sync(plan).await.expect("sync");
    central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
}

/// The endpoints of a table, each serving [`PORTS`] (its label as the answer), and the
/// prober that checks a whole matrix against a model.
pub struct Table {
    netns: Vec<Netns>,
    addrs: Vec<IpAddr>,
    labels: Vec<String>,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
    /// Cases checked, cells probed, time spent probing.
    pub cases: usize,
    pub probed: usize,
    pub probing: Duration,
}

impl Table {
    /// Starts a server in every endpoint: (network namespace, address, label).
    pub fn serve(endpoints: Vec<(Netns, IpAddr, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        super::probe::write_scripts(dir.path());
        let mut t = Table {
            netns: Vec::new(),
            addrs: Vec::new(),
            labels: Vec::new(),
            dir,
            servers: Vec::new(),
            cases: 0,
            probed: 0,
            probing: Duration::ZERO,
        };
        for (ns, addr, label) in endpoints {
            let server = ns
                .command("python3")
                .arg(t.dir.path().join("server.py"))
                .arg(&label)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("server");
            t.servers.push(server);
            t.netns.push(ns);
            t.addrs.push(addr);
            t.labels.push(label);
        }
        t
    }

    /// How many endpoints the table has.
    pub fn size(&self) -> usize {
        self.netns.len()
    }

    pub fn label(&self, i: usize) -> &str {
        &self.labels[i]
    }

    /// Probes `cells` (every source in parallel, every target of a source at once).
    fn probe(&self, cells: &[Cell], timeout: f64) -> BTreeMap<Cell, bool> {
        let mut by_src: BTreeMap<usize, Vec<Cell>> = BTreeMap::new();
        for c in cells {
            by_src.entry(c.0).or_default().push(*c);
        }
        let children: Vec<(Vec<Cell>, Child)> = by_src
            .into_iter()
            .map(|(s, cells)| {
                let targets: Vec<String> = cells
                    .iter()
                    .map(|(_, d, c)| {
                        let (proto, port) = PORTS[*c];
                        format!("{}/{}/{port}", self.addrs[*d], proto.ovn())
                    })
                    .collect();
                let child = self.netns[s]
                    .command("python3")
                    .arg(self.dir.path().join("prober.py"))
                    .arg(timeout.to_string())
                    .args(&targets)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("prober");
                (cells, child)
            })
            .collect();
        let mut out = BTreeMap::new();
        for (cells, child) in children {
            let o = child.wait_with_output().expect("prober output");
            let text = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), cells.len(), "prober output: {text}");
            for (cell, line) in cells.into_iter().zip(lines) {
                out.insert(cell, line.ends_with(" 1"));
            }
        }
        out
    }

    /// Probes every cell of `want` and compares: `None` when each matches, else the wrong
    /// cells, one per line. Only a missing allow is probed again until a deadline (a lost
    /// datagram or a slow answer on a loaded machine looks like a deny); a deny that passes
    /// is never retried away.
    pub fn check(&mut self, case: &str, want: &BTreeMap<Cell, bool>) -> Option<String> {
        let started = Instant::now();
        let cells: Vec<Cell> = want.keys().copied().collect();
        let mut got = self.probe(&cells, 1.0);
        let first = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reprobed = 0;
        loop {
            let wrong: Vec<Cell> = cells
                .iter()
                .filter(|c| got[c] != want[c] && want[c])
                .copied()
                .collect();
            if wrong.is_empty() || Instant::now() > deadline {
                break;
            }
            reprobed += wrong.len();
            got.extend(self.probe(&wrong, 3.0));
        }
        self.cases += 1;
        self.probed += cells.len();
        self.probing += started.elapsed();
        let wrong: Vec<String> = cells
            .iter()
            .filter(|c| got[c] != want[c])
            .map(|(s, d, c)| {
                let (proto, port) = PORTS[*c];
                let word = |b: bool| if b { "allow" } else { "deny" };
                format!(
                    "  {} -> {} {}/{port}: want {}, got {}\n",
                    self.labels[*s],
                    self.labels[*d],
                    proto.ovn(),
                    word(want[&(*s, *d, *c)]),
                    word(got[&(*s, *d, *c)]),
                )
            })
            .collect();
        let allowed = want.values().filter(|v| **v).count();
        eprintln!(
            "case {case:?}: {allowed}/{} cells allowed, {} wrong ({:.1} s, first pass {:.1} s, {reprobed} cells re-probed)",
            want.len(),
            wrong.len(),
            started.elapsed().as_secs_f64(),
            first.as_secs_f64(),
        );
        (!wrong.is_empty()).then(|| format!("case {case:?}:\n{}", wrong.concat()))
    }

    /// One line for the test's log: cases, cells and the time spent probing.
    pub fn summary(&self, what: &str) {
        eprintln!(
            "{} {what} cases, {} cells probed in {:.1} s",
            self.cases,
            self.probed,
            self.probing.as_secs_f64()
        );
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}
