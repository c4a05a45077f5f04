//! NetworkPolicy truth tables with real traffic through **DPDK pods**: node A runs OVS-DPDK
//! (`ovs-vswitchd-dpdk`, netdev datapath, one PMD), node B the plain userspace datapath, with
//! Geneve between them and a real OVN central (planner + reconciler into the NB). Pods:
//! kernel pods (veths) on both nodes, and two DPDK pods on node A whose interface is a
//! vhost-user port (`dpdkvhostuserclient`) served by `dpdk-testpmd`'s virtio-user PMD, the
//! way a DPDK app attaches. The DPDK pods' attachment is a secondary network
//! (`dpdk.default.ovn`, NAD default/dpdk), so their ports are `<pod>.<ns>.dpdk.default.ovn`.
//!
//! Honest probe endpoints: testpmd forwards (`io`) between each vhost-user port and a veth
//! whose other end is the DPDK pod's kernel interface, so the same socket probes as for
//! kernel pods (TCP 80/81 connect + answer, UDP 80/81 echo) run on every DPDK pod, as client
//! and as server; every packet of a DPDK pod enters and leaves OVS through its vhost-user
//! port, and so meets OVN's ACLs and conntrack in the userspace datapath of OVS-DPDK.
//! Every cell of every case (sources x destinations x 4 columns, including the node's join
//! port) is probed and compared with the brute-force model `netpol_model`. The cases cover
//! default deny both ways, port restriction, pod/namespace selectors, ipBlock with except,
//! stateful return traffic and Kube-OVN's `network_policy_for` (which attachments a policy
//! applies to).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod netpol_model;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_api::names::lsp_name;
use ferrovn_control::plan::netpol::{PolicyNamespace, PolicyPod, Protocol};
use ferrovn_control::plan::{Desired, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::dpdk::{HugepageLease, PodMemory, Testpmd, TestpmdSpec};
use ferrovn_testkit::dpdk_node::{DPDK_PROVIDER, DpdkAndKernelNodes};
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, POD_MTU};
use ferrovn_testkit::ovs_paths::vswitchd_dpdk;
use ferrovn_testkit::require::{Need, fallback, require};
use ferrovn_testkit::wait::wait_until;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use netpol_model::{Endpoint, World};

const TEST: &str = "netpol_truth_tables_with_dpdk_pods";
const NODE_IP: &str = "100.64.0.2";
const NODE_MAC: MacAddr = MacAddr([0x0e, 0, 0, 0, 0xfe, 1]);
/// (protocol, port) of every probe column.
const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];
/// The pods: (namespace, name, DPDK, node index: 0 = OVS-DPDK node A, 1 = kernel node B).
const PODS: [(&str, &str, bool, usize); 6] = [
    ("x", "a", false, 0),
    ("x", "b", false, 1),
    ("y", "a", false, 1),
    ("y", "b", false, 0),
    ("x", "d", true, 0),
    ("y", "d", true, 0),
];
/// Endpoint index of the node (its join port, where kubelet probes come from), on node B.
const NODE: usize = PODS.len();

fn pod_ip(i: usize) -> IpAddr {
    format!("10.16.0.{}", 10 + i).parse().unwrap()
}

fn pod_mac(i: usize) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, 0x10 + i as u8])
}

fn provider(i: usize) -> &'static str {
    if PODS[i].2 { DPDK_PROVIDER } else { "ovn" }
}

/// Labels `pod=<name>` and `kind=kernel|dpdk`.
fn pod(i: usize) -> PolicyPod {
    let (ns, name, dpdk, _) = PODS[i];
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([
            ("pod".to_string(), name.to_string()),
            (
                "kind".to_string(),
                if dpdk { "dpdk" } else { "kernel" }.to_string(),
            ),
        ]),
        port: lsp_name(name, ns, provider(i)),
        ips: vec![pod_ip(i)],
        named_ports: Vec::new(),
    }
}

fn world(policies: Vec<NetworkPolicy>) -> World {
    World {
        namespaces: ["x", "y"]
            .iter()
            .map(|ns| PolicyNamespace {
                name: ns.to_string(),
                labels: BTreeMap::from([("ns".to_string(), ns.to_string())]),
            })
            .collect(),
        pods: (0..PODS.len()).map(pod).collect(),
        policies,
        node_ips: vec![NODE_IP.parse().unwrap()],
    }
}

fn desired(w: &World) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    d.nodes.push(NodeIntent {
        name: "n1".into(),
        join_ips: vec![NODE_IP.parse().unwrap()],
        join_mac: Some(NODE_MAC),
        internal_ips: vec!["172.18.0.2".parse().unwrap()],
    });
    for (i, p) in w.pods.iter().enumerate() {
        d.ports.push(PortIntent {
            pod: p.name.clone(),
            namespace: p.namespace.clone(),
            provider: provider(i).into(),
            subnet: "ovn-default".into(),
            node: format!("n{}", PODS[i].3 + 1),
            mac: pod_mac(i),
            ips: p.ips.clone(),
            port_security: true,
        });
    }
    d.network_policy = w.input();
    d
}

/// The kernel side of a pod: namespace `fnd-<tag>-<short>` whose `eth0` (veth, MTU
/// [`POD_MTU`], `mac`, `cidr`, default route to the gateway; checksums computed in the pod,
/// as the userspace datapath needs) has its other end `far` in `far_ns`.
fn pod_netns(
    far_ns: &Netns,
    far: &str,
    tag: &str,
    short: &str,
    mac: MacAddr,
    cidr: &str,
    routes: &[(&str, &str)],
) -> Netns {
    let ns = Netns::create(&format!("fnd-{tag}-{short}")).expect("netns");
    far_ns
        .ip([
            "link",
            "add",
            far,
            "mtu",
            &POD_MTU.to_string(),
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
    ns.ip(["link", "set", "eth0", "mtu", &POD_MTU.to_string()])
        .unwrap();
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

/// A kernel pod: its veth's far end is a port of `node`'s br-int bound to `lsp`.
fn kernel_pod(
    node: &Node,
    tag: &str,
    short: &str,
    lsp: &str,
    mac: MacAddr,
    cidr: &str,
    routes: &[(&str, &str)],
) -> Netns {
    let host = format!("nd{tag}{short}");
    let host = &host[host.len().saturating_sub(15)..];
    let ns = pod_netns(node.netns(), host, tag, short, mac, cidr, routes);
    node.vsctl([
        "add-port",
        "br-int",
        host,
        "--",
        "set",
        "Interface",
        host,
        &format!("external_ids:iface-id={lsp}"),
    ])
    .expect("add-port");
    node.wait_ovn_installed(host, Duration::from_secs(60))
        .expect("ovn-installed");
    ns
}

fn serve(ns: &Netns, name: &str, dir: &Path) -> Child {
    ns.command("python3")
        .arg(dir.join("server.py"))
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server")
}

/// A probe cell: source, destination (endpoint index), column.
type Cell = (usize, usize, usize);

fn endpoint(i: usize) -> (Endpoint, IpAddr) {
    if i == NODE {
        (Endpoint::Node, NODE_IP.parse().unwrap())
    } else {
        (Endpoint::Pod(i), pod_ip(i))
    }
}

fn label(i: usize) -> String {
    if i == NODE {
        "node".into()
    } else {
        let (ns, name, dpdk, n) = PODS[i];
        format!(
            "{ns}/{name}({}@{})",
            if dpdk { "dpdk" } else { "kernel" },
            ["A", "B"][n]
        )
    }
}

fn all_cells() -> Vec<Cell> {
    let mut v = Vec::new();
    for s in 0..=NODE {
        for d in 0..=NODE {
            if s != d {
                for c in 0..PORTS.len() {
                    v.push((s, d, c));
                }
            }
        }
    }
    v
}

/// Probes `cells` (every source in parallel, every target of a source at once).
fn probe(sources: &[Netns], dir: &Path, cells: &[Cell], timeout: f64) -> BTreeMap<Cell, bool> {
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
                    format!("{}/{}/{port}", endpoint(*d).1, proto.ovn())
                })
                .collect();
            let child = sources[s]
                .command("python3")
                .arg(dir.join("prober.py"))
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

/// The cases: (name, policies as YAML documents without apiVersion / kind).
fn cases() -> Vec<(&'static str, &'static str)> {
    vec![
        ("no policy: everything open", ""),
        (
            "default deny ingress in x (x/d a DPDK pod)",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "default deny egress in y: y/d can start nothing, replies into it still pass",
            "{metadata: {name: deny, namespace: y}, spec: {podSelector: {}, policyTypes: [Egress]}}",
        ),
        (
            "default deny all in x",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}",
        ),
        (
            "x/d from the DPDK pods only (pod selector across namespaces)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}]}]}}",
        ),
        (
            "x/d from namespace y (namespace selector)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}",
        ),
        (
            "x/d on TCP 80 only, and UDP 81 from kernel pods of y",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{ports: [{port: 80}]}, {from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {kind: kernel}}}], ports: [{protocol: UDP, port: 81}]}]}}",
        ),
        (
            "y/d from ipBlock 10.16.0.0/16 except x/a and x/b (.10/31)",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{ipBlock: {cidr: 10.16.0.0/16, except: [10.16.0.10/31]}}]}]}}",
        ),
        (
            "x/d egress only to the DPDK pod y/d and the node (ipBlock), UDP",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: d}}}, {ipBlock: {cidr: 100.64.0.2/32}}], ports: [{protocol: UDP}]}]}}",
        ),
        (
            "stateful return: y/d isolated both ways, may reach x/a and x/d on TCP 81; their replies come back",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Ingress, Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, d]}]}}], ports: [{port: 81}]}]}}",
        ),
        (
            "DPDK pods open to each other on every port (the conntrack bypass case), closed to others",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}]}]}}
---
{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {kind: dpdk}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}]}]}}",
        ),
        (
            "network_policy_for default/dpdk: deny ingress in x on the DPDK attachment only",
            "{metadata: {name: deny, namespace: x, annotations: {ovn.kubernetes.io/network_policy_for: default/dpdk}}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "network_policy_for ovn: deny ingress in x on primary interfaces only (x/d stays open)",
            "{metadata: {name: deny, namespace: x, annotations: {ovn.kubernetes.io/network_policy_for: ovn}}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "network_policy_for ovn on peers: x from every pod, counting primary interfaces only",
            "{metadata: {name: p, namespace: x, annotations: {ovn.kubernetes.io/network_policy_for: ovn}}, spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}}",
        ),
        ("policies removed: everything open again", ""),
    ]
}

fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    if yaml.trim().is_empty() {
        return Vec::new();
    }
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let mut v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            v["apiVersion"] = "networking.k8s.io/v1".into();
            v["kind"] = "NetworkPolicy".into();
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn show(cells: &[(Cell, bool, bool)]) -> String {
    cells
        .iter()
        .map(|((s, d, c), want, got)| {
            let (proto, port) = PORTS[*c];
            format!(
                "  {} -> {} {}/{port}: want {}, got {}\n",
                label(*s),
                label(*d),
                proto.ovn(),
                if *want { "allow" } else { "deny" },
                if *got { "allow" } else { "deny" },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_truth_tables_with_dpdk_pods() {
    let needs = [
        Need::Root,
        Need::Tool("ovsdb-server"),
        Need::Tool("ovn-northd"),
        Need::Tool("ovn-controller"),
        Need::Tool("dpdk-testpmd"),
        Need::Tool("python3"),
        Need::Tool("ethtool"),
        Need::Program(vswitchd_dpdk()),
    ];
    if !require(TEST, &needs) {
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 8, "{} cases", cases.len());
    let tag = unique_tag();
    let rnd = short_rand();
    // OVS-DPDK 256 MiB + testpmd 128 MiB, in 2 MiB pages, with room to spare.
    let huge_dir = PathBuf::from(format!("/tmp/fndh{rnd}"));
    let lease = match HugepageLease::acquire(&format!("netpol-dpdk-{tag}"), 256, &huge_dir) {
        Ok(l) => Some(l),
        Err(why) => {
            fallback(TEST, "OVS-DPDK and testpmd with --no-huge", &why);
            None
        }
    };
    // Its DPDK set-up runs a runtime of its own: not on this test's runtime threads.
    let (r, h) = (rnd.clone(), lease.as_ref().map(|l| l.mount().to_path_buf()));
    let lab =
        tokio::task::spawn_blocking(move || DpdkAndKernelNodes::start("fnd", &r, h.as_deref()))
            .await
            .unwrap()
            .expect("OVS-DPDK node, kernel node, OVN central");
    let tb = &lab.lab;
    let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
        .await
        .expect("NB");
    let w0 = world(Vec::new());
    sync.sync(&plan(&desired(&w0))).await.expect("sync pods");

    let route = [("default", "10.16.0.1")];
    let mut endpoints: Vec<Option<Netns>> = (0..PODS.len()).map(|_| None).collect();
    // Kernel pods.
    for (i, (ns, name, dpdk, n)) in PODS.iter().enumerate() {
        if !dpdk {
            endpoints[i] = Some(kernel_pod(
                &tb.nodes[*n],
                &tag,
                &format!("{ns}{name}"),
                &w0.pods[i].port,
                pod_mac(i),
                &format!("{}/16", pod_ip(i)),
                &route,
            ));
        }
    }
    // DPDK pods: testpmd in its own namespace serves every DPDK pod's vhost-user socket and
    // forwards each one to and from that pod's veth (ports 2k and 2k+1 are a pair).
    let app = Netns::create(&format!("fnd-{tag}-app")).expect("app netns");
    let sock_dir = tempfile::Builder::new()
        .prefix("fnds")
        .tempdir_in("/tmp")
        .unwrap();
    let dpdk_pods: Vec<usize> = (0..PODS.len()).filter(|i| PODS[*i].2).collect();
    let mut vdevs = Vec::new();
    for (k, &i) in dpdk_pods.iter().enumerate() {
        let (ns, name, _, _) = PODS[i];
        let far = format!("dpk{k}");
        endpoints[i] = Some(pod_netns(
            &app,
            &far,
            &tag,
            &format!("{ns}{name}"),
            pod_mac(i),
            &format!("{}/16", pod_ip(i)),
            &route,
        ));
        app.run(
            5,
            "sysctl",
            ["-qw", &format!("net.ipv6.conf.{far}.disable_ipv6=1")],
        )
        .expect("sysctl");
        let sock = sock_dir.path().join(format!("{k}.sock"));
        vdevs.push(format!(
            "net_virtio_user{k},path={},server=1,queues=1,mac={}",
            sock.display(),
            pod_mac(i)
        ));
        vdevs.push(format!("net_af_packet{k},iface={far}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let pod_memory = match &lease {
        Some(l) => PodMemory::Hugepages {
            dir: l.mount().to_path_buf(),
            mib: 128,
        },
        None => PodMemory::NoHuge { mib: 256 },
    };
    let mut testpmd = Testpmd::start(&TestpmdSpec {
        prefix: format!("fnd{rnd}tp"),
        netns: Some(&app),
        cpu: 0,
        memory: pod_memory,
        vdevs,
        forward_mode: "io".into(),
        app_args: vec!["--rxd=256".into(), "--txd=256".into()],
        log: dir.path().join("testpmd.log"),
        interactive: false,
    })
    .expect("testpmd");
    let dpdk_node = &tb.nodes[0];
    for (k, &i) in dpdk_pods.iter().enumerate() {
        let sock = sock_dir.path().join(format!("{k}.sock"));
        assert!(
            wait_until(Duration::from_secs(30), || sock.exists()),
            "testpmd made no socket {}: {}",
            sock.display(),
            testpmd.log_text()
        );
        dpdk_node
            .add_vhost_user_client(&format!("vhu{k}"), &sock, &w0.pods[i].port)
            .expect("vhost-user port");
    }
    for k in 0..dpdk_pods.len() {
        let port = format!("vhu{k}");
        let up = wait_until(Duration::from_secs(60), || {
            dpdk_node
                .vsctl(["get", "Interface", &port, "link_state"])
                .is_ok_and(|s| s.trim() == "up")
        });
        assert!(
            up,
            "{port} never came up: {}; testpmd: {}",
            dpdk_node
                .vsctl(["get", "Interface", &port, "error"])
                .unwrap_or_default(),
            testpmd.log_text()
        );
        dpdk_node
            .wait_ovn_installed(&port, Duration::from_secs(60))
            .expect("ovn-installed");
    }
    // The io pairs are (vhost-user of pod k, veth of pod k) because DPDK numbers the ports in
    // --vdev order; were they not, every DPDK cell of the first case would fail.
    // The node: its join port (as ovn0 on a real node), routes to the pod network.
    let node_ns = kernel_pod(
        &tb.nodes[1],
        &tag,
        "node",
        "node-n1",
        NODE_MAC,
        &format!("{NODE_IP}/16"),
        &[("10.16.0.0/16", "100.64.0.1")],
    );
    let mut endpoints: Vec<Netns> = endpoints.into_iter().map(Option::unwrap).collect();
    endpoints.push(node_ns);
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    common::probe::write_scripts(dir.path());
    let mut servers: Vec<Child> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ns)| serve(ns, &label(i), dir.path()))
        .collect();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut probed = 0;
    let mut dpdk_cells = 0;
    for (name, yaml) in &cases {
        let w = world(policies(yaml));
        let p = plan(&desired(&w));
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        sync.sync(&p).await.expect("sync policies");
        tb.central
            .nbctl(&["--wait=hv", "sync"])
            .expect("flows on both nodes");
        let cells = all_cells();
        let want: BTreeMap<Cell, bool> = cells
            .iter()
            .map(|cell @ (s, d, c)| {
                let (src, sip) = endpoint(*s);
                let (dst, dip) = endpoint(*d);
                let (proto, port) = PORTS[*c];
                (*cell, w.allowed(&src, sip, &dst, dip, proto, port))
            })
            .collect();
        for ((s, d, _), ok) in &want {
            assert!(*s != NODE || *d == NODE || *ok, "model: node -> pod denied");
        }
        let mut got = probe(&endpoints, dir.path(), &cells, 1.0);
        // Only a missing allow is probed again (a lost datagram or a slow answer on a loaded
        // machine looks like a deny); a deny that passes is never retried away.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let wrong: Vec<Cell> = cells
                .iter()
                .filter(|c| got[c] != want[c] && want[c])
                .copied()
                .collect();
            if wrong.is_empty() || Instant::now() > deadline {
                break;
            }
            got.extend(probe(&endpoints, dir.path(), &wrong, 3.0));
        }
        probed += cells.len();
        dpdk_cells += cells
            .iter()
            .filter(|(s, d, _)| [s, d].iter().any(|i| **i < NODE && PODS[**i].2))
            .count();
        let wrong: Vec<(Cell, bool, bool)> = cells
            .iter()
            .filter(|c| got[c] != want[c])
            .map(|c| (*c, want[c], got[c]))
            .collect();
        let allowed = want.values().filter(|v| **v).count();
        eprintln!(
            "case {name:?}: {allowed}/{} cells allowed, {} wrong",
            want.len(),
            wrong.len()
        );
        if !wrong.is_empty() {
            failures.push(format!("case {name:?}:\n{}", show(&wrong)));
        }
    }
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let alive = testpmd.is_running();
    eprintln!(
        "{} cases, {probed} cells probed ({dpdk_cells} with a DPDK pod) in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(alive, "testpmd died: {}", testpmd.log_text());
    // The DPDK pods' traffic went through their vhost-user ports (OVS's counters, which it
    // writes to its database every few seconds).
    for k in 0..dpdk_pods.len() {
        let port = format!("vhu{k}");
        let stat = |key: &str| -> u64 {
            dpdk_node
                .vsctl(["get", "Interface", &port, &format!("statistics:{key}")])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let counted = wait_until(Duration::from_secs(15), || {
            stat("rx_packets") > 500 && stat("tx_packets") > 500
        });
        eprintln!(
            "{port}: OVS received {} packets from the DPDK pod, sent it {}",
            stat("rx_packets"),
            stat("tx_packets")
        );
        assert!(counted, "{port} carried almost nothing");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    testpmd.stop();
}
