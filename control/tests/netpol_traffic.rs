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
mod subnet_acl_model;
mod truth_world;

use std::collections::BTreeMap;
use std::time::Duration;

use common::truth::{Cell, Table, kernel_pod, objects};
use ferrovn_control::plan::netpol::{PolicyPod, Protocol};
use ferrovn_control::plan::{Desired, NbPlan, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::TwoNodes;
use subnet_acl_model::SubnetAcl;
use truth_world::{
    Layout, NODE_IP, SERVER_REPLY_CASE, made_stateful, node_port, pod_ip, pod_mac, policies,
    serve_ports, server_reply_drops, subnet_drops, web,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// Endpoint index of the node (its join port, where kubelet probes come from): 0..9 are pods.
const NODE: usize = 9;

/// Pod `i` (0..9): namespace `NAMESPACES[i / 3]`, name `PODS[i % 3]`. Every pod serves its
/// four ports under the upstream suite's names; `web` is 80/TCP on `a` pods and 81/TCP on `b`
/// pods (one name, a different number per pod).
fn pod(i: usize) -> PolicyPod {
    let (ns, name) = (NAMESPACES[i / 3], PODS[i % 3]);
    let mut named_ports = serve_ports();
    match name {
        "a" => named_ports.push(web(80)),
        "b" => named_ports.push(web(81)),
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

/// The nine pods, spread over both nodes (so every matrix has same-node and cross-node pairs).
fn layout() -> Layout {
    Layout {
        namespaces: &NAMESPACES,
        pods: (0..9).map(pod).collect(),
        placement: (0..9).map(|i| ("ovn", i % 2)).collect(),
    }
}

fn label(i: usize) -> String {
    if i == NODE {
        "node".into()
    } else {
        format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])
    }
}

/// The lab of every kernel table: two OVN nodes, the nine pods spread over them, the node's
/// join port, each serving its ports. Fields drop in order: the pods before the nodes.
struct KernelLab {
    layout: Layout,
    table: Table,
    sync: NbSync,
    tb: TwoNodes,
}

impl KernelLab {
    async fn start() -> Self {
        let tb = TwoNodes::start().expect("two nodes");
        let sync = NbSync::connect(&tb.central.nb_remote(), 1000)
            .await
            .expect("NB");
        let layout = layout();
        let w0 = layout.world(Vec::new());
        sync.sync(&plan(&layout.desired(&w0)))
            .await
            .expect("sync pods");
        let tag = unique_tag();
        let mut endpoints: Vec<_> = (0..9)
            .map(|i| {
                let p = &w0.pods[i];
                let ns = kernel_pod(
                    &tb.nodes[i % 2],
                    "p",
                    &tag,
                    &format!("{}{}", p.namespace, p.name),
                    &p.port,
                    pod_mac(i),
                    &format!("{}/16", pod_ip(i)),
                    &[("default", "10.16.0.1")],
                );
                (ns, pod_ip(i), label(i))
            })
            .collect();
        let node = node_port(&tb.nodes[0], "p", &tag);
        endpoints.push((node, NODE_IP.parse().unwrap(), label(NODE)));
        tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
        tb.central
            .nbctl(&["--wait=hv", "sync"])
            .expect("flows on both nodes");
        KernelLab {
            layout,
            table: Table::serve(endpoints),
            sync,
            tb,
        }
    }

    /// Applies `plan`, probes every cell and compares with `want`: the failure's text.
    async fn check(
        &mut self,
        name: &str,
        plan: &NbPlan,
        want: &BTreeMap<Cell, bool>,
    ) -> Option<String> {
        common::truth::apply(&self.sync, &self.tb.central, plan).await;
        self.table.check(name, want)
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_truth_tables_with_real_traffic() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut lab = KernelLab::start().await;
    let mut failures = Vec::new();
    for (name, yaml) in &cases {
        let (p, want) = lab.layout.policy_case(name, yaml);
        failures.extend(lab.check(name, &p, &want).await);
    }
    lab.table.summary("NetworkPolicy");
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

fn admin_world(np: &str, anp: &str, banp: &str) -> AdminWorld {
    let v1a1 = "policy.networking.k8s.io/v1alpha1";
    AdminWorld {
        base: layout().world(policies(np)),
        anps: objects::<AdminNetworkPolicy>(anp, v1a1, "AdminNetworkPolicy"),
        banp: objects::<BaselineAdminNetworkPolicy>(banp, v1a1, "BaselineAdminNetworkPolicy")
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
    let mut d = layout().desired(&w.base);
    d.admin_policy = w.admin_input();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_policy_truth_tables_with_real_traffic() {
    let mut lab = KernelLab::start().await;
    let mut failures = Vec::new();
    for (name, np, anp, banp) in &admin_cases() {
        let w = admin_world(np, anp, banp);
        let p = plan(&admin_desired(&w));
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        let want = lab
            .layout
            .want(|s, sip, d, dip, proto, port| w.allowed(s, sip, d, dip, proto, port));
        lab.layout.assert_node_reaches_pods(&want);
        failures.extend(lab.check(name, &p, &want).await);
    }
    lab.table.summary("admin");
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
        base: layout().world(policies(np)),
        groups: objects::<SecurityGroup>(groups, "kubeovn.io/v1", "SecurityGroup"),
        member_of,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_truth_tables_with_real_traffic() {
    let mut lab = KernelLab::start().await;
    let mut failures = Vec::new();
    let mut denied_somewhere = false;
    for (name, groups, members, np) in &sg_cases() {
        let w = sg_world(groups, members, np);
        let mut d = lab.layout.desired(&w.base);
        d.security_groups = w.sg_input();
        let p = plan(&d);
        let expected_issues = usize::from(members.iter().any(|(_, g)| *g == "nope"));
        assert_eq!(p.issues.len(), expected_issues, "{name}: {:?}", p.issues);
        let want = lab
            .layout
            .want(|s, sip, d, dip, proto, port| w.allowed(s, sip, d, dip, proto, port));
        denied_somewhere |= want.values().any(|v| !v);
        failures.extend(lab.check(name, &p, &want).await);
    }
    lab.table.summary("security group");
    assert!(
        denied_somewhere,
        "no case denies anything: the tables prove nothing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// =============================================================================================
// Kube-OVN Subnet `spec.acls` on the pods' switch, alone and against NetworkPolicy, against the
// model of `subnet_acl_model`.

const Y_PODS: &[&str] = &["10.16.0.13", "10.16.0.14", "10.16.0.15"];
const Z_PODS: &[&str] = &["10.16.0.16", "10.16.0.17", "10.16.0.18"];

/// (name, subnet ACLs, NetworkPolicies).
fn subnet_acl_cases() -> Vec<(&'static str, Vec<SubnetAcl>, &'static str)> {
    // TCP 81 to y (from everyone, the node too), UDP 80 from z/c, everything z/a sends.
    let drops = || subnet_drops(Y_PODS, &["10.16.0.18"], &["10.16.0.16"]);
    vec![
        (
            "subnet drops, no stateful ACL: TCP 81 to y, UDP 80 from z/c, z/a's packets (so no reply of z/a either)",
            drops(),
            "",
        ),
        (
            "the same drops with one allow-related entry: the switch is stateful, replies of z/a pass (the node's too)",
            made_stateful(drops(), &["10.16.0.17"]),
            "",
        ),
        (
            "to-lport entries against NetworkPolicy by priority: 2500 allow over x's default deny, 1500 drop under y's NP allow, 3500 drop over the node allow",
            vec![
                SubnetAcl::allow_to(2500)
                    .src(Y_PODS)
                    .dport(Protocol::Tcp, 80),
                SubnetAcl::drop_to(1500).src(&["10.16.0.16"]),
                SubnetAcl::drop_to(3500)
                    .src(&[NODE_IP])
                    .dport(Protocol::Udp, 81),
            ],
            "{metadata: {name: deny, namespace: x}, spec: {podSelector: {}, policyTypes: [Ingress]}}
---
{metadata: {name: za, namespace: y}, spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: a}}}]}]}}",
        ),
        (
            "from-lport entries are a stage before NetworkPolicy's egress: a 2500 allow does not open z's egress to y, a 1500 drop of UDP 81 to x/a holds",
            vec![
                SubnetAcl::allow_from(2500).src(Z_PODS).dst(Y_PODS),
                SubnetAcl::drop_from(1500)
                    .dst(&["10.16.0.10"])
                    .dport(Protocol::Udp, 81),
            ],
            "{metadata: {name: to-x, namespace: z}, spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}}",
        ),
        (
            SERVER_REPLY_CASE,
            server_reply_drops(),
            "",
        ),
        ("subnet ACLs removed: everything open again", Vec::new(), ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_acl_truth_tables_with_real_traffic() {
    let mut lab = KernelLab::start().await;
    let mut failures = Vec::new();
    let mut denied = 0;
    for (name, acls, np) in &subnet_acl_cases() {
        let (p, want) = lab.layout.subnet_acl_case(name, acls, np);
        denied += want.values().filter(|v| !**v).count();
        failures.extend(lab.check(name, &p, &want).await);
    }
    lab.table.summary("subnet ACL");
    assert!(
        denied > 0,
        "no case denies anything: the tables prove nothing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
