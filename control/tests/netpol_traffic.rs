//! NetworkPolicy truth tables with real traffic, in the spirit of the upstream netpol e2e suite:
//! namespaces x, y, z with pods a, b, c each (kernel pods: network namespaces on veths) spread
//! over two OVN nodes (own OVS + ovn-controller each, Geneve between them), every pod serving
//! TCP 80/81 and UDP 80/81, plus a node (the join port, where kubelet probes come from) that
//! serves too. The pods are plumbed once; each case only changes the policies (planner +
//! reconciler into the NB), waits for the flows on both chassis, probes every (source,
//! destination, protocol, port) cell and compares the whole matrix with the brute-force model
//! of `netpol_model` (Kubernetes semantics read directly). Same-node and cross-node pairs are
//! in every matrix. Node → pod stays allowed in every case.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod netpol_model;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::netpol::{NamedPort, PolicyNamespace, PolicyPod, Protocol};
use ferrovn_control::plan::{Desired, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, POD_MTU, TwoNodes};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use netpol_model::{Endpoint, World};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const NODE_IP: &str = "100.64.0.2";
const NODE_MAC: MacAddr = MacAddr([0x0e, 0, 0, 0, 0xfe, 1]);
/// (protocol, port) of every probe column.
const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

/// Pod `i` (0..9): namespace `NAMESPACES[i / 3]`, name `PODS[i % 3]`.
fn pod_ip(i: usize) -> IpAddr {
    format!("10.16.0.{}", 10 + i).parse().unwrap()
}

fn pod_mac(i: usize) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, 0x10 + i as u8])
}

/// Every pod serves its four ports under the upstream suite's names; `web` is 80/TCP on `a`
/// pods and 81/TCP on `b` pods (one name, a different number per pod).
fn pod(i: usize) -> PolicyPod {
    let (ns, name) = (NAMESPACES[i / 3], PODS[i % 3]);
    let mut named_ports: Vec<NamedPort> = PORTS
        .iter()
        .map(|(proto, port)| NamedPort {
            name: format!("serve-{port}-{}", proto.ovn()),
            protocol: *proto,
            port: *port,
        })
        .collect();
    match name {
        "a" => named_ports.push(NamedPort {
            name: "web".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }),
        "b" => named_ports.push(NamedPort {
            name: "web".into(),
            protocol: Protocol::Tcp,
            port: 81,
        }),
        _ => {}
    }
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
        port: format!("{name}.{ns}"),
        ips: vec![pod_ip(i)],
        named_ports,
    }
}

fn world(policies: Vec<NetworkPolicy>) -> World {
    World {
        namespaces: NAMESPACES
            .iter()
            .map(|ns| PolicyNamespace {
                name: ns.to_string(),
                labels: BTreeMap::from([("ns".to_string(), ns.to_string())]),
            })
            .collect(),
        pods: (0..9).map(pod).collect(),
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
            provider: "ovn".into(),
            subnet: "ovn-default".into(),
            node: format!("n{}", i % 2 + 1),
            mac: pod_mac(i),
            ips: p.ips.clone(),
            port_security: true,
        });
    }
    d.network_policy = w.input();
    d
}

/// A network namespace on `node` whose eth0 is bound to logical port `lsp`.
fn plumb(
    node: &Node,
    tag: &str,
    short: &str,
    lsp: &str,
    mac: MacAddr,
    cidr: &str,
    routes: &[(&str, &str)],
) -> Netns {
    let ns = Netns::create(&format!("fnp-{tag}-{short}")).expect("netns");
    let host = format!("np{tag}{short}");
    let host = &host[host.len().saturating_sub(15)..];
    node.netns()
        .ip([
            "link",
            "add",
            host,
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
    node.netns().ip(["link", "set", host, "up"]).unwrap();
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
    // Checksums done in the pod: TCP across the userspace Geneve tunnel needs them.
    ns.run(10, "ethtool", ["-K", "eth0", "tx", "off"])
        .expect("ethtool");
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

/// A probe cell: source, destination (endpoint index: 0..9 pods, 9 the node), column.
type Cell = (usize, usize, usize);
const NODE: usize = 9;

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
        format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])
    }
}

fn all_cells() -> Vec<Cell> {
    let mut v = Vec::new();
    for s in 0..10 {
        for d in 0..10 {
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

fn expected(w: &World) -> BTreeMap<Cell, bool> {
    all_cells()
        .into_iter()
        .map(|cell @ (s, d, c)| {
            let (src, sip) = endpoint(s);
            let (dst, dip) = endpoint(d);
            let (proto, port) = PORTS[c];
            (cell, w.allowed(&src, sip, &dst, dip, proto, port))
        })
        .collect()
}

/// The cases: (name, policies as YAML documents).
fn cases() -> Vec<(&'static str, &'static str)> {
    vec![
        ("no policy: everything open", ""),
        (
            "default deny ingress in x",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "default deny egress in x",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress]}}",
        ),
        (
            "default deny all in x (Cyclonus default-deny-all, Kube-OVN #2217)",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}",
        ),
        (
            "ingress: [] denies all ingress",
            "{metadata: {name: deny, namespace: y}, spec: {podSelector: {}, ingress: []}}",
        ),
        (
            "deny ingress + allow-all ingress in x: the union allows",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}
---
{metadata: {name: all, namespace: x}, spec: {podSelector: {}, ingress: [{}]}}",
        ),
        (
            "x/a from pods b of x",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}}",
        ),
        (
            "x/a from the pods of x (empty podSelector peer)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}]}]}}",
        ),
        (
            "x/a from namespace y",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}",
        ),
        (
            "x/a from every namespace",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}}]}]}}",
        ),
        (
            "x/a from namespace y AND pod b (one peer)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}}",
        ),
        (
            "x/a from namespace y OR pod b (two peers)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]}}",
        ),
        (
            "x/a from namespaces NotIn (y) by kubernetes.io/metadata.name",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]}}]}]}}",
        ),
        (
            "z pods with label pod (Exists) but not c (NotIn), from a/c pods anywhere (In)",
            "{metadata: {name: p, namespace: z}, spec: {podSelector: {matchExpressions: [{key: pod, operator: Exists}, {key: pod, operator: NotIn, values: [c]}]}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}}]}]}}",
        ),
        (
            "x/a on TCP 80 only, from anywhere",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80}]}]}}",
        ),
        (
            "x/a on UDP 81 only, from y",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{protocol: UDP, port: 81}]}]}}",
        ),
        (
            "x/a on named port serve-80-tcp (Kube-OVN #2206)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: serve-80-tcp}]}]}}",
        ),
        (
            "x/a on named port serve-81-udp",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: UDP, port: serve-81-udp}]}]}}",
        ),
        (
            "named port web: 80 on a pods, 81 on b pods (Kube-OVN #2326)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, ingress: [{ports: [{port: web}]}]}}",
        ),
        (
            "x/a on TCP 80-81 (endPort)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80, endPort: 81}]}]}}",
        ),
        (
            "x/a on UDP 80-81 (endPort) from z",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{protocol: UDP, port: 80, endPort: 81}]}]}}",
        ),
        (
            "x/a from ipBlock 10.16.0.0/24 except y/b (Kube-OVN #2206 except)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.16.0.0/24, except: [10.16.0.14/32]}}]}]}}",
        ),
        (
            "x/a on TCP 81 and UDP 80 from ipBlock 10.16.0.16/29 except .16/31: only z/c",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.16.0.16/29, except: [10.16.0.16/31]}}], ports: [{port: 81}, {protocol: UDP, port: 80}]}]}}",
        ),
        (
            "x egress only to namespace y",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}",
        ),
        (
            "x egress to 10.16.0.0/16 except the z pods, TCP only",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.16.0.0/16, except: [10.16.0.16/30, 10.16.0.20/32]}}], ports: [{protocol: TCP}]}]}}",
        ),
        (
            "x egress denied except to the node (ipBlock of the node)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 100.64.0.2/32}}]}]}}",
        ),
        (
            "x egress to 0.0.0.0/0 except the pod network: only the node",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.16.0.0/16]}}]}]}}",
        ),
        (
            "y/b egress on named port serve-80-tcp of any pod",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: serve-80-tcp}]}]}}",
        ),
        (
            "z egress UDP 80-81 (endPort) to x/c",
            "{metadata: {name: p, namespace: z}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: c}}}], ports: [{protocol: UDP, port: 80, endPort: 81}]}]}}",
        ),
        (
            "egress rules without policyTypes: Ingress and Egress isolated",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: a}}, egress: [{to: [{podSelector: {}}]}]}}",
        ),
        (
            "policyTypes [Ingress] with egress rules: egress not isolated",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}], egress: [{to: [{podSelector: {matchLabels: {pod: c}}}]}]}}",
        ),
        (
            "union of two policies on x/a: pod b on 80, namespace z on UDP 81",
            "{metadata: {name: p1, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]}}
---
{metadata: {name: p2, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{protocol: UDP, port: 81}]}]}}",
        ),
        (
            "ingress and egress meet: x/a from y, but y may only send to z",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}
---
{metadata: {name: p, namespace: y}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}}",
        ),
        (
            "deny all everywhere, allow x → z/b on TCP 81 both ways of the policy",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}
---
{metadata: {name: deny, namespace: y}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}
---
{metadata: {name: deny, namespace: z}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}
---
{metadata: {name: out, namespace: x}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}], ports: [{port: 81}]}]}}
---
{metadata: {name: in, namespace: z}, spec: {podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}], ports: [{port: 81}]}]}}",
        ),
        (
            "a policy selecting no pod changes nothing",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: nobody}}, policyTypes: [Ingress, Egress]}}",
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
async fn netpol_truth_tables_with_real_traffic() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let tb = TwoNodes::start().expect("two nodes");
    let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
        .await
        .expect("NB");
    let w0 = world(Vec::new());
    sync.sync(&plan(&desired(&w0))).await.expect("sync pods");

    let tag = unique_tag();
    let mut endpoints: Vec<Netns> = (0..9)
        .map(|i| {
            let p = &w0.pods[i];
            plumb(
                &tb.nodes[i % 2],
                &tag,
                &format!("{}{}", p.namespace, p.name),
                &p.port,
                pod_mac(i),
                &format!("{}/16", pod_ip(i)),
                &[("default", "10.16.0.1")],
            )
        })
        .collect();
    // The node: its join port (as ovn0 on a real node), routes to the pod network.
    endpoints.push(plumb(
        &tb.nodes[0],
        &tag,
        "node",
        "node-n1",
        NODE_MAC,
        &format!("{NODE_IP}/16"),
        &[("10.16.0.0/16", "100.64.0.1")],
    ));
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    let dir = tempfile::tempdir().unwrap();
    common::probe::write_scripts(dir.path());
    let mut servers: Vec<Child> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ns)| serve(ns, &label(i), dir.path()))
        .collect();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut probed = 0;
    for (name, yaml) in &cases {
        let w = world(policies(yaml));
        let p = plan(&desired(&w));
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        sync.sync(&p).await.expect("sync policies");
        tb.central
            .nbctl(&["--wait=hv", "sync"])
            .expect("flows on both nodes");
        let want = expected(&w);
        // Node → pod is allowed in every case (kubelet probes).
        for ((s, d, _), ok) in &want {
            assert!(*s != NODE || *d == NODE || *ok, "model: node -> pod denied");
        }
        let cells = all_cells();
        let mut got = probe(&endpoints, dir.path(), &cells, 1.0);
        // A cell that disagrees is probed again (a lost UDP datagram or a slow answer on a
        // loaded machine looks like a deny); a deny that passes is never retried away.
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
    eprintln!(
        "{} cases, {probed} cells probed in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// =============================================================================================
// AdminNetworkPolicy / BaselineAdminNetworkPolicy around NetworkPolicy, on the same lab.

mod anp_model;

use anp_model::AdminWorld;
use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use ferrovn_control::plan::netpol::admin::AdminNode;

/// The ANP cases: (name, NetworkPolicies, AdminNetworkPolicies, BaselineAdminNetworkPolicy),
/// each as YAML documents without apiVersion / kind.
fn admin_cases() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "ANP Deny overrides an NP allow: y may not reach x although x allows everyone",
            "{metadata: {name: all, namespace: x}, spec: {podSelector: {}, ingress: [{}]}}",
            "{metadata: {name: no-y}, spec: {priority: 10, subject: {namespaces: {matchLabels: {ns: x}}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]}}",
            "",
        ),
        (
            "ANP Pass defers to NP: y passes to x's NP (y/a only), everyone else denied by the ANP",
            "{metadata: {name: ya, namespace: x}, spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]}}",
            "{metadata: {name: pass-y}, spec: {priority: 20, subject: {namespaces: {matchLabels: {ns: x}}}, ingress: [{action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}, {action: Deny, from: [{namespaces: {}}]}]}}",
            "",
        ),
        (
            "BANP deny applies only where no NP selects: z is denied everywhere but at y/a",
            "{metadata: {name: a-open, namespace: y}, spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}}]}]}}",
            "",
            "{metadata: {name: default}, spec: {subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: z}}}]}]}}",
        ),
        (
            "ANP Allow overrides an NP deny: x isolated, but y may reach it on TCP 80",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
            "{metadata: {name: y-web}, spec: {priority: 30, subject: {namespaces: {matchLabels: {ns: x}}}, ingress: [{action: Allow, from: [{namespaces: {matchLabels: {ns: y}}}], ports: [{portNumber: {protocol: TCP, port: 80}}]}]}}",
            "",
        ),
        (
            "ANP egress Deny to nodes and to a network (the z pods); replies of z → y still pass",
            "",
            "{metadata: {name: y-out}, spec: {priority: 40, subject: {namespaces: {matchLabels: {ns: y}}}, egress: [{action: Deny, to: [{nodes: {}}]}, {action: Deny, to: [{networks: [10.16.0.16/30]}]}]}}",
            "",
        ),
        (
            "egress: ANP Allow, then ANP Pass to NP, then BANP deny; priorities across two ANPs",
            "{metadata: {name: b-to-y, namespace: z}, spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}}",
            "{metadata: {name: z-to-xa}, spec: {priority: 5, subject: {namespaces: {matchLabels: {ns: z}}}, egress: [{action: Allow, to: [{pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}]}]}}
---
{metadata: {name: z-pass}, spec: {priority: 6, subject: {namespaces: {matchLabels: {ns: z}}}, egress: [{action: Pass, to: [{namespaces: {}}]}, {action: Deny, to: [{namespaces: {}}]}]}}",
            "{metadata: {name: default}, spec: {subject: {namespaces: {matchLabels: {ns: z}}}, egress: [{action: Deny, to: [{namespaces: {matchLabels: {ns: x}}}]}]}}",
        ),
        (
            "ANP rule order and ports: x/b from anywhere denied on UDP, allowed on TCP 81 over a later Deny",
            "",
            "{metadata: {name: xb}, spec: {priority: 50, subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}}, ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portRange: {protocol: UDP, start: 80, end: 81}}]}, {action: Allow, from: [{namespaces: {}}], ports: [{portNumber: {protocol: TCP, port: 81}}]}, {action: Deny, from: [{namespaces: {}}]}]}}",
            "",
        ),
        ("admin policies removed: everything open again", "", "", ""),
    ]
}

fn typed<T: serde::de::DeserializeOwned>(yaml: &str, api_version: &str, kind: &str) -> Vec<T> {
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

fn admin_world(np: &str, anp: &str, banp: &str) -> AdminWorld {
    let v1a1 = "policy.networking.k8s.io/v1alpha1";
    AdminWorld {
        base: world(policies(np)),
        anps: typed::<AdminNetworkPolicy>(anp, v1a1, "AdminNetworkPolicy"),
        banp: typed::<BaselineAdminNetworkPolicy>(banp, v1a1, "BaselineAdminNetworkPolicy")
            .into_iter()
            .next(),
        // As the controller builds it from `desired`: n1's InternalIP and join address.
        nodes: vec![AdminNode {
            name: "n1".into(),
            labels: BTreeMap::new(),
            ips: vec!["172.18.0.2".parse().unwrap(), NODE_IP.parse().unwrap()],
        }],
    }
}

fn admin_desired(w: &AdminWorld) -> Desired {
    let mut d = desired(&w.base);
    d.admin_policy = w.admin_input();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_policy_truth_tables_with_real_traffic() {
    let cases = admin_cases();
    let tb = TwoNodes::start().expect("two nodes");
    let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
        .await
        .expect("NB");
    let w0 = world(Vec::new());
    sync.sync(&plan(&desired(&w0))).await.expect("sync pods");

    let tag = unique_tag();
    let mut endpoints: Vec<Netns> = (0..9)
        .map(|i| {
            let p = &w0.pods[i];
            plumb(
                &tb.nodes[i % 2],
                &tag,
                &format!("{}{}", p.namespace, p.name),
                &p.port,
                pod_mac(i),
                &format!("{}/16", pod_ip(i)),
                &[("default", "10.16.0.1")],
            )
        })
        .collect();
    endpoints.push(plumb(
        &tb.nodes[0],
        &tag,
        "node",
        "node-n1",
        NODE_MAC,
        &format!("{NODE_IP}/16"),
        &[("10.16.0.0/16", "100.64.0.1")],
    ));
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    let dir = tempfile::tempdir().unwrap();
    common::probe::write_scripts(dir.path());
    let mut servers: Vec<Child> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ns)| serve(ns, &label(i), dir.path()))
        .collect();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut probed = 0;
    for (name, np, anp, banp) in &cases {
        let w = admin_world(np, anp, banp);
        let p = plan(&admin_desired(&w));
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        sync.sync(&p).await.expect("sync policies");
        tb.central
            .nbctl(&["--wait=hv", "sync"])
            .expect("flows on both nodes");
        let want: BTreeMap<Cell, bool> = all_cells()
            .into_iter()
            .map(|cell @ (s, d, c)| {
                let (src, sip) = endpoint(s);
                let (dst, dip) = endpoint(d);
                let (proto, port) = PORTS[c];
                (cell, w.allowed(&src, sip, &dst, dip, proto, port))
            })
            .collect();
        for ((s, d, _), ok) in &want {
            assert!(*s != NODE || *d == NODE || *ok, "model: node -> pod denied");
        }
        let cells = all_cells();
        let mut got = probe(&endpoints, dir.path(), &cells, 1.0);
        // Only a missing allow is probed again (a lost datagram on a loaded machine); a deny
        // that passes is never retried away.
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
    eprintln!(
        "{} admin cases, {probed} cells probed in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// =============================================================================================
// Kube-OVN SecurityGroups, on the same pods: the groups' rules decide for their members (also
// over NetworkPolicy, as in Kube-OVN), remoteSecurityGroup follows the annotations.

mod sg_model;

use ferrovn_api::security_group::SecurityGroup;
use sg_model::SgWorld;

/// `web`: TCP 80 from anywhere, TCP 81 dropped (above same-group traffic), UDP 80-81 from the
/// members of `clients`, members open to each other; sends anything. `clients`: accepts
/// anything; sends anything to `web` members and TCP 80-81 to the pod network.
const SG_GROUPS: &str = "{metadata: {name: web}, spec: {allowSameGroupTraffic: true, ingressRules: [
  {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 80, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 10},
  {ipVersion: ipv4, protocol: tcp, portRangeMin: 81, portRangeMax: 81, remoteType: address, remoteAddress: 0.0.0.0/0, policy: drop, priority: 5},
  {ipVersion: ipv4, protocol: udp, portRangeMin: 80, portRangeMax: 81, remoteType: securityGroup, remoteSecurityGroup: clients, policy: allow, priority: 20}],
  egressRules: [{ipVersion: ipv4, protocol: all, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}]}}
---
{metadata: {name: clients}, spec: {
  ingressRules: [{ipVersion: ipv4, protocol: all, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}],
  egressRules: [
    {ipVersion: ipv4, remoteType: securityGroup, remoteSecurityGroup: web, policy: allow, priority: 1},
    {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 81, remoteType: address, remoteAddress: 10.16.0.0/16, policy: allow, priority: 2}]}}";

/// (name, groups, `security_groups` annotation per pod index, NetworkPolicies). Pods: x/a 0,
/// x/b 1, x/c 2, y/a 3, y/b 4, y/c 5, z/a 6, z/b 7, z/c 8.
type SgCase = (
    &'static str,
    &'static str,
    Vec<(usize, &'static str)>,
    &'static str,
);

fn sg_cases() -> Vec<SgCase> {
    vec![
        (
            "web on x/a x/b, clients y/a: TCP 80 open, TCP 81 dropped, UDP only from clients",
            SG_GROUPS,
            vec![(0, "web"), (1, "web"), (3, "clients")],
            "",
        ),
        (
            "y/b joins clients, x/c is in both groups",
            SG_GROUPS,
            vec![
                (0, "web"),
                (1, "web"),
                (2, "web,clients"),
                (3, "clients"),
                (4, "clients"),
            ],
            "",
        ),
        (
            "y/a leaves clients (its annotation removed)",
            SG_GROUPS,
            vec![(0, "web"), (1, "web"), (2, "web,clients"), (4, "clients")],
            "",
        ),
        (
            "default deny ingress in x: the groups still decide for their members (node allow 3000 competes)",
            SG_GROUPS,
            vec![(0, "web"), (1, "web"), (4, "clients")],
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "z/c names a group that does not exist: isolated",
            SG_GROUPS,
            vec![(0, "web"), (8, "nope")],
            "",
        ),
        (
            "groups and annotations removed: everything open again",
            "",
            vec![],
            "",
        ),
    ]
}

fn sg_world(groups: &str, members: &[(usize, &str)], np: &str) -> SgWorld {
    let mut member_of = vec![Vec::new(); 9];
    for (i, names) in members {
        member_of[*i] = names.split(',').map(str::to_string).collect();
    }
    SgWorld {
        base: world(policies(np)),
        groups: typed::<SecurityGroup>(groups, "kubeovn.io/v1", "SecurityGroup"),
        member_of,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_truth_tables_with_real_traffic() {
    let cases = sg_cases();
    let tb = TwoNodes::start().expect("two nodes");
    let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
        .await
        .expect("NB");
    let w0 = world(Vec::new());
    sync.sync(&plan(&desired(&w0))).await.expect("sync pods");

    let tag = unique_tag();
    let mut endpoints: Vec<Netns> = (0..9)
        .map(|i| {
            let p = &w0.pods[i];
            plumb(
                &tb.nodes[i % 2],
                &tag,
                &format!("{}{}", p.namespace, p.name),
                &p.port,
                pod_mac(i),
                &format!("{}/16", pod_ip(i)),
                &[("default", "10.16.0.1")],
            )
        })
        .collect();
    endpoints.push(plumb(
        &tb.nodes[0],
        &tag,
        "node",
        "node-n1",
        NODE_MAC,
        &format!("{NODE_IP}/16"),
        &[("10.16.0.0/16", "100.64.0.1")],
    ));
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    let dir = tempfile::tempdir().unwrap();
    common::probe::write_scripts(dir.path());
    let mut servers: Vec<Child> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ns)| serve(ns, &label(i), dir.path()))
        .collect();

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut probed = 0;
    let mut denied_somewhere = false;
    for (name, groups, members, np) in &cases {
        let w = sg_world(groups, members, np);
        let mut d = desired(&w.base);
        d.security_groups = w.sg_input();
        let p = plan(&d);
        let expected_issues = usize::from(members.iter().any(|(_, g)| *g == "nope"));
        assert_eq!(p.issues.len(), expected_issues, "{name}: {:?}", p.issues);
        sync.sync(&p).await.expect("sync groups");
        tb.central
            .nbctl(&["--wait=hv", "sync"])
            .expect("flows on both nodes");
        let want: BTreeMap<Cell, bool> = all_cells()
            .into_iter()
            .map(|cell @ (s, d, c)| {
                let (src, sip) = endpoint(s);
                let (dst, dip) = endpoint(d);
                let (proto, port) = PORTS[c];
                (cell, w.allowed(&src, sip, &dst, dip, proto, port))
            })
            .collect();
        denied_somewhere |= want.values().any(|v| !v);
        let cells = all_cells();
        let mut got = probe(&endpoints, dir.path(), &cells, 1.0);
        // Only a missing allow is probed again (a lost datagram on a loaded machine); a deny
        // that passes is never retried away.
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
    eprintln!(
        "{} security group cases, {probed} cells probed in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        denied_somewhere,
        "no case denies anything: the tables prove nothing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
