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
//! port) is probed and compared with the brute-force models `netpol_model` and `sg_model`.
//! The NetworkPolicy cases cover default deny both ways, port restriction and ranges,
//! pod/namespace selectors and expressions, ipBlock with except, unions, stateful return
//! traffic and Kube-OVN's `network_policy_for` (which attachments a policy applies to); the
//! security group cases, on the same lab, rules by remote address and port with priorities,
//! same-group traffic, the isolation of a member, and groups over NetworkPolicy.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod netpol_model;
mod sg_model;
mod subnet_acl_model;
mod truth_world;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::truth::{Table, kernel_pod, objects, pod_netns};
use ferrovn_api::names::lsp_name;
use ferrovn_api::security_group::SecurityGroup;
use ferrovn_control::plan::netpol::{PolicyPod, Protocol};
use ferrovn_control::plan::plan;
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::dpdk::{TestMemory, Testpmd, TestpmdSpec};
use ferrovn_testkit::dpdk_node::{DPDK_PROVIDER, DpdkAndKernelNodes};
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::require::{Need, ovs_dpdk_needs, require};
use ferrovn_testkit::wait::wait_until;
use sg_model::SgWorld;
use subnet_acl_model::SubnetAcl;
use truth_world::{
    Layout, NODE_IP, SERVER_REPLY_CASE, made_stateful, node_port, pod_ip, pod_mac, policies,
    serve_ports, server_reply_drops, subnet_drops, web,
};

const TEST: &str = "netpol_truth_tables_with_dpdk_pods";
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

fn provider(i: usize) -> &'static str {
    if PODS[i].2 { DPDK_PROVIDER } else { "ovn" }
}

/// Labels `pod=<name>` and `kind=kernel|dpdk`. Every pod serves its four ports under the
/// upstream suite's names; `web` is 80/TCP on the kernel pods and 81/TCP on the DPDK pods.
fn pod(i: usize) -> PolicyPod {
    let (ns, name, dpdk, _) = PODS[i];
    let mut named_ports = serve_ports();
    named_ports.push(web(if dpdk { 81 } else { 80 }));
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
        named_ports,
    }
}

fn layout() -> Layout {
    Layout {
        namespaces: &["x", "y"],
        pods: (0..PODS.len()).map(pod).collect(),
        placement: (0..PODS.len()).map(|i| (provider(i), PODS[i].3)).collect(),
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
        (
            "x/d from x only on TCP 80-81 (endPort)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{podSelector: {}}], ports: [{protocol: TCP, port: 80, endPort: 81}]}]}}",
        ),
        (
            "two policies on y/d are a union: TCP 80 from x, UDP from anyone",
            "{metadata: {name: tcp, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}], ports: [{port: 80}]}]}}
---
{metadata: {name: udp, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{ports: [{protocol: UDP}]}]}}",
        ),
        (
            "x/d from kernel pods only (matchExpressions NotIn across namespaces)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: kind, operator: NotIn, values: [dpdk]}]}}]}]}}",
        ),
        (
            "y/d egress to the pod network except x/d (ipBlock except), TCP 80 and UDP 81",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.16.0.0/16, except: [10.16.0.14/32]}}], ports: [{port: 80}, {protocol: UDP, port: 81}]}]}}",
        ),
        (
            "DPDK pods isolated both ways, egress to kernel pods of x only (DPDK -> kernel, same and cross node)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Ingress, Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {kind: kernel}}}]}]}}
---
{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Ingress, Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {kind: kernel}}}]}]}}",
        ),
        (
            "policyTypes Ingress only: y/d's egress rules are ignored, ingress from y/a only",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}], egress: [{to: [{podSelector: {matchLabels: {pod: a}}}]}]}}",
        ),
        (
            "kernel pods of x accept only the DPDK pods, on UDP (DPDK as the only client)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {kind: kernel}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{protocol: UDP, port: 80}, {protocol: UDP, port: 81}]}]}}",
        ),
        (
            "default deny all in both namespaces, DPDK pods allowed to each other on TCP 81 both ways",
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}
---
{metadata: {name: deny, namespace: y}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}
---
{metadata: {name: d81, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{port: 81}]}], egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{port: 81}]}]}}
---
{metadata: {name: d81, namespace: y}, spec: {podSelector: {matchLabels: {kind: dpdk}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{port: 81}]}], egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{port: 81}]}]}}",
        ),
        (
            "namespace x open to everything from the node's network only (ipBlock 100.64.0.0/16)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 100.64.0.0/16}}]}]}}",
        ),
        (
            "x/d on its named port serve-80-tcp only (a DPDK pod's named port)",
            "{metadata: {name: p, namespace: x}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{ports: [{port: serve-80-tcp}]}]}}",
        ),
        (
            "y/d on named port serve-81-udp from the DPDK pods only",
            "{metadata: {name: p, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}], ports: [{protocol: UDP, port: serve-81-udp}]}]}}",
        ),
        (
            "named port web in x and y: TCP 80 on the kernel pods, TCP 81 on the DPDK pods",
            "{metadata: {name: web, namespace: x}, spec: {podSelector: {}, ingress: [{ports: [{port: web}]}]}}
---
{metadata: {name: web, namespace: y}, spec: {podSelector: {}, ingress: [{ports: [{port: web}]}]}}",
        ),
        (
            "DPDK pods' egress by named ports of the destinations: serve-80-tcp and web (81 on DPDK pods)",
            "{metadata: {name: out, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: serve-80-tcp}, {port: web}]}]}}
---
{metadata: {name: out, namespace: y}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: serve-80-tcp}, {port: web}]}]}}",
        ),
        ("policies removed: everything open again", ""),
    ]
}

/// `dpdk`: TCP 80 from the pod network, but TCP 80-81 from y/b dropped (priority 5 over 10),
/// UDP 81 from x/a and x/b (10.16.0.10/31) only; sends TCP 80-81 to the pod network only.
/// `mesh`: members open to each other (same-group traffic), sends anything. `closed`: no
/// rules at all (a member is only isolated).
const SG_GROUPS: &str = "{metadata: {name: dpdk}, spec: {ingressRules: [
  {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 80, remoteType: address, remoteAddress: 10.16.0.0/16, policy: allow, priority: 10},
  {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 81, remoteType: address, remoteAddress: 10.16.0.13, policy: drop, priority: 5},
  {ipVersion: ipv4, protocol: udp, portRangeMin: 81, portRangeMax: 81, remoteType: address, remoteAddress: 10.16.0.10/31, policy: allow, priority: 20}],
  egressRules: [{ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 81, remoteType: address, remoteAddress: 10.16.0.0/16, policy: allow, priority: 1}]}}
---
{metadata: {name: mesh}, spec: {allowSameGroupTraffic: true,
  egressRules: [{ipVersion: ipv4, protocol: all, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}]}}
---
{metadata: {name: closed}, spec: {allowSameGroupTraffic: false}}";

/// (name, groups, `security_groups` annotation per pod index, NetworkPolicies). Pods: x/a 0,
/// x/b 1, y/a 2, y/b 3 (kernel), x/d 4, y/d 5 (DPDK).
type SgCase = (
    &'static str,
    &'static str,
    Vec<(usize, &'static str)>,
    &'static str,
);

fn sg_cases() -> Vec<SgCase> {
    vec![
        (
            "SG dpdk on x/d: TCP 80 from the pod network, y/b dropped by priority, UDP 81 from .10/31, egress TCP only",
            SG_GROUPS,
            vec![(4, "dpdk")],
            "",
        ),
        (
            "SG mesh on both DPDK pods (x/d also in dpdk): y/d open to x/d only, closed to the node",
            SG_GROUPS,
            vec![(4, "dpdk,mesh"), (5, "mesh")],
            "",
        ),
        (
            "SG closed on y/d and the kernel pod y/b: both isolated both ways, also from the node",
            SG_GROUPS,
            vec![(3, "closed"), (5, "closed")],
            "",
        ),
        (
            "SG and NetworkPolicy: x isolated by NP, x/d's group decides for it; the node reaches x/d (NP 3000)",
            SG_GROUPS,
            vec![(4, "dpdk")],
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}",
        ),
        (
            "SG and NetworkPolicy: NP opens y/d to everyone, its group mesh still decides",
            SG_GROUPS,
            vec![(4, "mesh"), (5, "mesh")],
            "{metadata: {name: open, namespace: y}, spec: {podSelector: {matchLabels: {pod: d}}, ingress: [{}]}}",
        ),
        (
            "SG groups and annotations removed: everything open again",
            "",
            vec![],
            "",
        ),
    ]
}

/// The DPDK pods x/d and y/d, and the kernel pods of y.
const DPDK_PODS: &[&str] = &["10.16.0.14", "10.16.0.15"];
const Y_KERNEL: &[&str] = &["10.16.0.12", "10.16.0.13"];

/// The subnet `spec.acls` cases of the kernel table with DPDK pods on both ends: (name,
/// entries, NetworkPolicies).
fn subnet_acl_cases() -> Vec<(&'static str, Vec<SubnetAcl>, &'static str)> {
    // TCP 81 to the DPDK pods, UDP 80 from x/d, everything y/d sends.
    let drops = || subnet_drops(DPDK_PODS, &["10.16.0.14"], &["10.16.0.15"]);
    vec![
        (
            "subnet drops, no stateful ACL: TCP 81 to the DPDK pods, UDP 80 from x/d, y/d's packets (so no reply of y/d either)",
            drops(),
            "",
        ),
        (
            "the same drops with one allow-related entry: the switch is stateful, replies of y/d pass (the node's too)",
            made_stateful(drops(), &["10.16.0.11"]),
            "",
        ),
        (
            "to-lport entries against NetworkPolicy by priority: 2500 allow from the DPDK pods over x's kernel pods' deny, 1500 drop of x/d under y's NP allow, 3500 drop over the node allow",
            vec![
                SubnetAcl::allow_to(2500)
                    .src(DPDK_PODS)
                    .dport(Protocol::Tcp, 80),
                SubnetAcl::drop_to(1500).src(&["10.16.0.14"]),
                SubnetAcl::drop_to(3500)
                    .src(&[NODE_IP])
                    .dport(Protocol::Udp, 81),
            ],
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {matchLabels: {kind: kernel}}, policyTypes: [Ingress]}}
---
{metadata: {name: dpdk, namespace: y}, spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {kind: dpdk}}}]}]}}",
        ),
        (
            "from-lport entries are a stage before NetworkPolicy's egress: a 2500 allow does not open the DPDK pods' egress to y's kernel pods, a 1500 drop of UDP 81 to x/d holds",
            vec![
                SubnetAcl::allow_from(2500).src(DPDK_PODS).dst(Y_KERNEL),
                SubnetAcl::drop_from(1500)
                    .dst(&["10.16.0.14"])
                    .dport(Protocol::Udp, 81),
            ],
            "{metadata: {name: to-x, namespace: x}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}}
---
{metadata: {name: to-x, namespace: y}, spec: {podSelector: {matchLabels: {kind: dpdk}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}}",
        ),
        (SERVER_REPLY_CASE, server_reply_drops(), ""),
        ("subnet ACLs removed: everything open again", Vec::new(), ""),
    ]
}

/// Whether a cell has a DPDK pod on one side.
fn has_dpdk(s: usize, d: usize) -> bool {
    [s, d].iter().any(|i| *i < NODE && PODS[*i].2)
}

fn sg_world(groups: &str, members: &[(usize, &str)], np: &str) -> SgWorld {
    let mut member_of = vec![Vec::new(); PODS.len()];
    for (i, names) in members {
        member_of[*i] = names.split(',').map(str::to_string).collect();
    }
    SgWorld {
        base: layout().world(policies(np)),
        groups: objects::<SecurityGroup>(groups, "kubeovn.io/v1", "SecurityGroup"),
        member_of,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_truth_tables_with_dpdk_pods() {
    let needs = ovs_dpdk_needs(&[Need::Tool("python3"), Need::Tool("ethtool")]);
    if !require(TEST, &needs) {
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 8, "{} cases", cases.len());
    let layout = layout();
    let tag = unique_tag();
    let rnd = short_rand();
    // OVS-DPDK 256 MiB + testpmd 128 MiB, in 2 MiB pages, with room to spare.
    let memory = TestMemory::acquire(
        TEST,
        &format!("netpol-dpdk-{tag}"),
        256,
        &PathBuf::from(format!("/tmp/fndh{rnd}")),
        "OVS-DPDK and testpmd with --no-huge",
    );
    // Its DPDK set-up runs a runtime of its own: not on this test's runtime threads.
    let (r, h) = (rnd.clone(), memory.huge_dir().map(|p| p.to_path_buf()));
    let lab =
        tokio::task::spawn_blocking(move || DpdkAndKernelNodes::start("fnd", &r, h.as_deref()))
            .await
            .unwrap()
            .expect("OVS-DPDK node, kernel node, OVN central");
    let tb = &lab.lab;
    let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
        .await
        .expect("NB");
    let w0 = layout.world(Vec::new());
    sync.sync(&plan(&layout.desired(&w0)))
        .await
        .expect("sync pods");

    let route = [("default", "10.16.0.1")];
    let mut endpoints: Vec<Option<Netns>> = (0..PODS.len()).map(|_| None).collect();
    // Kernel pods.
    for (i, (ns, name, dpdk, n)) in PODS.iter().enumerate() {
        if !dpdk {
            endpoints[i] = Some(kernel_pod(
                &tb.nodes[*n],
                "d",
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
            &format!("fnd-{tag}-{ns}{name}"),
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
    let mut testpmd = Testpmd::start(&TestpmdSpec {
        prefix: format!("fnd{rnd}tp"),
        netns: Some(&app),
        cpu: 0,
        memory: memory.pod(128),
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
    let node_ns = node_port(&tb.nodes[1], "d", &tag);
    let mut endpoints: Vec<(Netns, IpAddr, String)> = endpoints
        .into_iter()
        .enumerate()
        .map(|(i, ns)| (ns.unwrap(), pod_ip(i), label(i)))
        .collect();
    endpoints.push((node_ns, NODE_IP.parse().unwrap(), label(NODE)));
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    let mut table = Table::serve(endpoints);

    let started = Instant::now();
    let mut failures = Vec::new();
    for (name, yaml) in &cases {
        let (p, want) = layout.policy_case(name, yaml);
        common::truth::apply(&sync, &tb.central, &p).await;
        failures.extend(table.check(name, &want));
    }
    // Security groups on the same pods, DPDK pods among their members.
    let mut denied_member = false;
    let sg = sg_cases();
    for (name, groups, members, np) in &sg {
        let w = sg_world(groups, members, np);
        let mut d = layout.desired(&w.base);
        d.security_groups = w.sg_input();
        for sp in &mut d.security_groups.ports {
            if sp.port.ends_with(DPDK_PROVIDER) {
                sp.annotation = format!("{DPDK_PROVIDER}.kubernetes.io/security_groups");
            }
        }
        let p = plan(&d);
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        common::truth::apply(&sync, &tb.central, &p).await;
        let want =
            layout.want(|s, sip, d, dip, proto, port| w.allowed(s, sip, d, dip, proto, port));
        // The group cases must deny a DPDK member something, or they prove nothing about it.
        denied_member |= want.iter().any(|((s, d, _), ok)| !ok && has_dpdk(*s, *d));
        failures.extend(table.check(name, &want));
    }
    assert!(denied_member, "no group case denies a DPDK pod anything");
    // Subnet `spec.acls` on the pods' switch, DPDK pods on both ends.
    let acl_cases = subnet_acl_cases();
    let mut denied_dpdk = 0;
    for (name, acls, np) in &acl_cases {
        let (p, want) = layout.subnet_acl_case(name, acls, np);
        denied_dpdk += want
            .iter()
            .filter(|((s, d, _), ok)| !**ok && has_dpdk(*s, *d))
            .count();
        common::truth::apply(&sync, &tb.central, &p).await;
        failures.extend(table.check(name, &want));
    }
    assert!(
        denied_dpdk > 0,
        "no subnet ACL case denies a DPDK pod anything"
    );
    let dpdk_per_case = common::truth::all_cells(NODE + 1)
        .iter()
        .filter(|(s, d, _)| has_dpdk(*s, *d))
        .count();
    eprintln!(
        "{} cases ({} NetworkPolicy, {} security group, {} subnet ACL), {} cells probed ({} with a DPDK pod) in {:.1} s ({:.1} s of probing)",
        table.cases,
        cases.len(),
        sg.len(),
        acl_cases.len(),
        table.probed,
        table.cases * dpdk_per_case,
        started.elapsed().as_secs_f64(),
        table.probing.as_secs_f64()
    );
    drop(table);
    let alive = testpmd.is_running();
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
