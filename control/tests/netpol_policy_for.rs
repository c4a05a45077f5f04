//! Kube-OVN's `ovn.kubernetes.io/network_policy_for` (which of the pods' OVN attachments a
//! NetworkPolicy applies to):
//! - unit: the rows of a pod with a primary and a secondary (DPDK) attachment, per annotation
//!   value; bad entries reported by field; no valid entry keeps the policy closed;
//! - property: for random pods with random sets of attachments and random policies with random
//!   annotations, evaluating the generated ACLs (`acl_eval`) gives the verdict of the
//!   brute-force model (`netpol_model`, which reads the annotation itself) for every
//!   (source interface, destination interface, protocol, port);
//! - real NB: the rows go through the reconciler into OVN 25.03, and `ovn-trace` of packets
//!   from and to each attachment of a two-interface pod gives the verdicts the annotation
//!   means.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod acl_eval;
mod common;
mod netpol_model;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;

use acl_eval::{Packet, Rows};
use ferrovn_api::MacAddr;
use ferrovn_api::names::lsp_name;
use ferrovn_control::plan::netpol::policy_for::{NETWORK_POLICY_FOR, provider_of};
use ferrovn_control::plan::netpol::{
    PolicyInput, PolicyNamespace, PolicyPod, Protocol, plan_network_policies,
};
use ferrovn_control::plan::{Desired, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::process::output_of;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netpol_model::{Endpoint, World};
use proptest::prelude::*;

const DPDK: &str = "dpdk.x.ovn";

fn policy(yaml: &str) -> NetworkPolicy {
    let mut v: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    v["apiVersion"] = "networking.k8s.io/v1".into();
    v["kind"] = "NetworkPolicy".into();
    serde_json::from_value(v).unwrap()
}

/// One interface of pod `ns/name` on attachment `provider`.
fn iface(ns: &str, name: &str, app: &str, provider: &str, ip: &str) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        port: lsp_name(name, ns, provider),
        ips: vec![ip.parse().unwrap()],
        named_ports: Vec::new(),
    }
}

/// x/web (primary 10.16.0.5); x/app with a primary (10.16.0.6) and a DPDK attachment
/// through NAD x/dpdk (10.16.0.7); y/other likewise (10.16.0.8, 10.16.0.9).
fn pods() -> Vec<PolicyPod> {
    vec![
        iface("x", "web", "web", "ovn", "10.16.0.5"),
        iface("x", "app", "app", "ovn", "10.16.0.6"),
        iface("x", "app", "app", DPDK, "10.16.0.7"),
        iface("y", "other", "other", "ovn", "10.16.0.8"),
        iface("y", "other", "other", DPDK, "10.16.0.9"),
    ]
}

fn input(policies: Vec<NetworkPolicy>) -> PolicyInput {
    PolicyInput {
        policies,
        pods: pods(),
        namespaces: ["x", "y"]
            .iter()
            .map(|n| PolicyNamespace {
                name: n.to_string(),
                labels: BTreeMap::new(),
            })
            .collect(),
        node_ips: vec!["100.64.0.2".parse().unwrap()],
    }
}

/// `app` isolated for ingress, open to every pod; `annotation` as given.
fn app_open_to_all(annotation: Option<&str>) -> NetworkPolicy {
    let ann = annotation
        .map(|a| format!(", annotations: {{{NETWORK_POLICY_FOR}: {a:?}}}"))
        .unwrap_or_default();
    policy(&format!(
        "{{metadata: {{name: app, namespace: x{ann}}}, spec: {{podSelector: {{matchLabels: {{app: app}}}}, \
         ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}}}"
    ))
}

fn members(annotation: Option<&str>) -> (BTreeSet<String>, BTreeSet<String>) {
    let p = plan_network_policies(&input(vec![app_open_to_all(annotation)]));
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let ports = p.port_groups["np.x.app"].ports.clone();
    let peer = p
        .address_sets
        .values()
        .find(|s| s.name.starts_with("np.peer."))
        .unwrap();
    (ports, peer.addresses.clone())
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn provider_comes_from_the_port_name() {
    let ps = pods();
    assert_eq!(provider_of(&ps[1]), "ovn");
    assert_eq!(provider_of(&ps[2]), DPDK);
    // A port the planner did not name counts as the primary interface.
    let mut odd = ps[0].clone();
    odd.port = "lsp-7".into();
    assert_eq!(provider_of(&odd), "ovn");
}

#[test]
fn annotation_picks_the_attachments_on_both_sides() {
    // No annotation: every attachment is isolated, every attachment of a peer counts.
    assert_eq!(
        members(None),
        (
            set(&["app.x", "app.x.dpdk.x.ovn"]),
            set(&[
                "10.16.0.5",
                "10.16.0.6",
                "10.16.0.7",
                "10.16.0.8",
                "10.16.0.9"
            ])
        )
    );
    // The primary interfaces only.
    assert_eq!(
        members(Some("ovn")),
        (
            set(&["app.x"]),
            set(&["10.16.0.5", "10.16.0.6", "10.16.0.8"])
        )
    );
    // NAD x/dpdk only (provider dpdk.x.ovn); case and spaces as Kube-OVN reads them.
    assert_eq!(
        members(Some(" x/dpdk ")),
        (set(&["app.x.dpdk.x.ovn"]), set(&["10.16.0.7", "10.16.0.9"]))
    );
    assert_eq!(
        members(Some("OVN, x/dpdk")),
        members(None),
        "both attachments listed = no annotation"
    );
    // An attachment no pod has: the policy selects nothing, its peers are empty.
    assert_eq!(members(Some("x/sriov")), (set(&[]), set(&[])));
}

#[test]
fn sets_without_annotation_keep_their_names() {
    // Shared peer sets are named after the selector; the annotation adds to the name only
    // when present, so a policy without it keeps the names (and rows) it had before.
    let peer = |ann: Option<&str>| {
        let p = plan_network_policies(&input(vec![app_open_to_all(ann)]));
        let s = p
            .address_sets
            .into_values()
            .find(|s| s.name.starts_with("np.peer."))
            .unwrap();
        (s.name, s.external_ids["np-peer"].clone())
    };
    let (plain_name, plain) = peer(None);
    let (ovn_name, ovn) = peer(Some("ovn"));
    assert!(!plain.contains("providers"), "{plain}");
    assert_eq!(ovn, format!("{plain};providers=ovn"));
    assert_ne!(plain_name, ovn_name);
    let (_, both) = peer(Some("x/dpdk,ovn"));
    assert_eq!(both, format!("{plain};providers=dpdk.x.ovn,ovn"));
}

#[test]
fn bad_entries_are_reported_and_fail_closed() {
    let p = plan_network_policies(&input(vec![app_open_to_all(Some("x/dpdk, eth1, a/b/c"))]));
    let issues: Vec<String> = p.issues.iter().map(ToString::to_string).collect();
    assert_eq!(
        issues,
        vec![
            format!(
                "NetworkPolicy x/app: metadata.annotations[{NETWORK_POLICY_FOR}]: \"a/b/c\" is \
                 neither \"ovn\" nor <namespace>/<nad>; skipped"
            ),
            format!(
                "NetworkPolicy x/app: metadata.annotations[{NETWORK_POLICY_FOR}]: \"eth1\" is \
                 neither \"ovn\" nor <namespace>/<nad>; skipped"
            ),
        ]
    );
    // The valid entry still applies.
    assert_eq!(p.port_groups["np.x.app"].ports, set(&["app.x.dpdk.x.ovn"]));
    // Nothing valid: reported, and the policy isolates every attachment (not none of them).
    let p = plan_network_policies(&input(vec![app_open_to_all(Some("eth1"))]));
    assert_eq!(p.issues.len(), 2, "{:?}", p.issues);
    assert!(
        p.issues[1].reason.contains("names no attachment"),
        "{:?}",
        p.issues
    );
    assert_eq!(
        p.port_groups["np.x.app"].ports,
        set(&["app.x", "app.x.dpdk.x.ovn"])
    );
}

// =============================================================================================
// Property: evaluated ACLs against the model, with attachments.

const NAMESPACES: [&str; 2] = ["x", "y"];
const PROVIDERS: [&str; 3] = ["ovn", "dpdk.x.ovn", "net2.y.ovn"];
const NODE: &str = "100.64.0.2";

fn annotation_strategy() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        None,
        Some("ovn"),
        Some("x/dpdk"),
        Some("y/net2"),
        Some("OVN, y/net2"),
        Some("x/dpdk,ovn,y/net2"),
        Some("x/dpdk, bogus"),
        Some("bogus"),
        Some("y/nothing"),
    ])
}

fn selector_strategy() -> impl Strategy<Value = Option<LabelSelector>> {
    prop::sample::select(vec![None, Some("a"), Some("b")]).prop_map(|app| {
        app.map(|a| LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), a.to_string())])),
            match_expressions: None,
        })
    })
}

fn peer_strategy() -> impl Strategy<Value = NetworkPolicyPeer> {
    prop_oneof![
        selector_strategy().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s.unwrap_or_default()),
            ..Default::default()
        }),
        (selector_strategy(), prop::sample::select(vec!["x", "y"])).prop_map(|(p, ns)| {
            NetworkPolicyPeer {
                pod_selector: p,
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        ns.to_string(),
                    )])),
                    match_expressions: None,
                }),
                ..Default::default()
            }
        }),
        prop::sample::select(vec!["10.0.0.0/29", "10.0.0.8/29", "0.0.0.0/0"]).prop_map(|c| {
            NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: c.into(),
                    except: None,
                }),
                ..Default::default()
            }
        }),
    ]
}

type RuleParts = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

fn rule_strategy() -> impl Strategy<Value = RuleParts> {
    (
        prop::option::of(prop::collection::vec(peer_strategy(), 0..3)),
        prop::sample::select(vec![None, Some(("TCP", 80)), Some(("UDP", 81))]).prop_map(|p| {
            p.map(|(proto, n)| {
                vec![NetworkPolicyPort {
                    protocol: Some(proto.into()),
                    port: Some(IntOrString::Int(n)),
                    end_port: None,
                }]
            })
        }),
    )
}

fn policy_strategy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        selector_strategy(),
        prop::sample::select(vec![
            None,
            Some(vec!["Ingress"]),
            Some(vec!["Egress"]),
            Some(vec!["Ingress", "Egress"]),
        ]),
        prop::option::of(prop::collection::vec(rule_strategy(), 0..3)),
        prop::option::of(prop::collection::vec(rule_strategy(), 0..3)),
        annotation_strategy(),
    )
        .prop_map(|(ns, sel, types, ing, eg, ann)| NetworkPolicy {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some("p".into()),
                annotations: ann.map(|a| BTreeMap::from([(NETWORK_POLICY_FOR.into(), a.into())])),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: sel,
                policy_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
                ingress: ing.map(|v| {
                    v.into_iter()
                        .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                        .collect()
                }),
                egress: eg.map(|v| {
                    v.into_iter()
                        .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                        .collect()
                }),
            }),
        })
}

/// Pods: namespace, app label, which of [`PROVIDERS`] they have an interface on.
fn world_strategy() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(
            (
                0..NAMESPACES.len(),
                prop::sample::select(vec!["a", "b"]),
                prop::sample::subsequence(PROVIDERS.to_vec(), 1..=3),
            ),
            1..5,
        ),
        prop::collection::vec(policy_strategy(), 0..4),
    )
        .prop_map(|(pods, mut policies)| {
            for (i, p) in policies.iter_mut().enumerate() {
                p.metadata.name = Some(format!("pol-{i}"));
            }
            let mut ifaces = Vec::new();
            for (i, (ns, app, providers)) in pods.into_iter().enumerate() {
                for prov in providers {
                    // Interface addresses 10.0.0.1.. in order: ipBlocks split them.
                    let ip = format!("10.0.0.{}", ifaces.len() + 1);
                    ifaces.push(iface(NAMESPACES[ns], &format!("pod{i}"), app, prov, &ip));
                }
            }
            World {
                namespaces: NAMESPACES
                    .iter()
                    .map(|n| PolicyNamespace {
                        name: n.to_string(),
                        labels: BTreeMap::new(),
                    })
                    .collect(),
                pods: ifaces,
                policies,
                node_ips: vec![NODE.parse().unwrap()],
            }
        })
}

fn check_world(w: &World) -> Result<(), TestCaseError> {
    let p = plan_network_policies(&w.input());
    for i in &p.issues {
        // Only the deliberately bad annotation entries.
        prop_assert_eq!(
            &i.field,
            &format!("metadata.annotations[{NETWORK_POLICY_FOR}]")
        );
    }
    let rows = Rows::new(p.port_groups.values(), p.address_sets.values());
    let mut eps: Vec<(Endpoint, IpAddr, String)> = w
        .pods
        .iter()
        .enumerate()
        .map(|(i, pod)| (Endpoint::Pod(i), pod.ips[0], pod.port.clone()))
        .collect();
    eps.push((
        Endpoint::External,
        "10.0.0.14".parse().unwrap(),
        "ext".into(),
    ));
    eps.push((Endpoint::Node, NODE.parse().unwrap(), "node-n1".into()));
    for (src, sip, sport) in &eps {
        for (dst, dip, dport) in &eps {
            if !matches!(src, Endpoint::Pod(_)) && !matches!(dst, Endpoint::Pod(_)) {
                continue;
            }
            for (proto, port) in [
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 81),
                (Protocol::Udp, 81),
            ] {
                let want = w.allowed(src, *sip, dst, *dip, proto, port);
                let mut pkt = Packet {
                    inport: sport.clone(),
                    outport: String::new(),
                    src: *sip,
                    dst: *dip,
                    proto,
                    dport: port,
                };
                let egress = rows.stage(&pkt, "from-lport").0;
                pkt.inport = "router".into();
                pkt.outport = dport.clone();
                let ingress = rows.stage(&pkt, "to-lport").0;
                prop_assert_eq!(
                    egress && ingress,
                    want,
                    "{} {} -> {} {} {:?}/{}",
                    sport,
                    sip,
                    dport,
                    dip,
                    proto,
                    port
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// For every pair of interfaces (and external addresses and the node), the evaluated ACLs
    /// agree with the model, whatever attachments the pods have and the policies name.
    #[test]
    fn acls_follow_network_policy_for(w in world_strategy()) {
        check_world(&w)?;
    }
}

// =============================================================================================
// Real NB: the rows in OVN 25.03, traced.

fn mac(i: u8) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, i])
}

/// Every interface of [`pods`] as a port of `ovn-default` (10.16.0.0/16); the last IP byte
/// is also the MAC's.
fn desired(policies: Vec<NetworkPolicy>) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    d.nodes.push(NodeIntent {
        name: "n1".into(),
        join_ips: vec![NODE.parse().unwrap()],
        join_mac: Some(mac(200)),
        internal_ips: vec!["172.18.0.2".parse().unwrap()],
    });
    for p in pods() {
        let provider = provider_of(&p).to_string();
        let IpAddr::V4(v4) = p.ips[0] else {
            unreachable!()
        };
        d.ports.push(PortIntent {
            pod: p.name.clone(),
            namespace: p.namespace.clone(),
            provider,
            subnet: "ovn-default".into(),
            node: "n1".into(),
            mac: mac(v4.octets()[3]),
            ips: p.ips.clone(),
            port_security: true,
        });
    }
    d.network_policy = input(policies);
    d
}

/// `ovn-trace` of the first packet of a new TCP connection from port `src` to port `dst`
/// (both on `ovn-default`, named by their last IP byte); true when it leaves through `dst`.
fn delivered(central: &OvnCentral, src: u8, dst: u8, port: u16) -> bool {
    let port_of = |b: u8| {
        pods()
            .into_iter()
            .find(|p| p.ips[0].to_string() == format!("10.16.0.{b}"))
            .unwrap()
            .port
    };
    let (sp, dp) = (port_of(src), port_of(dst));
    let flow = format!(
        "inport == \"{sp}\" && eth.src == {} && eth.dst == {} && ip4.src == 10.16.0.{src} && \
         ip4.dst == 10.16.0.{dst} && ip.ttl == 64 && tcp.dst == {port} && tcp.src == 40000",
        mac(src),
        mac(dst)
    );
    let db = format!("--db={}", central.sb_remote());
    let out = output_of(
        "ovn-trace",
        Command::new("ovn-trace").args([
            &db,
            "--minimal",
            "--ct=new",
            "--ct=new",
            "ovn-default",
            &flow,
        ]),
    )
    .unwrap_or_else(|e| panic!("ovn-trace {flow}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "ovn-trace complained: {err}");
    String::from_utf8_lossy(&out.stdout).contains(&format!("output(\"{dp}\")"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_for_in_a_real_nb_traced() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 100)
        .await
        .expect("NB");
    // app: isolated on its DPDK attachment only, open there to the DPDK attachments of every
    // pod. web: isolated on its primary interface, open to the primary interfaces of every pod.
    let policies = vec![
        policy(&format!(
            "{{metadata: {{name: app-dpdk, namespace: x, annotations: {{{NETWORK_POLICY_FOR}: x/dpdk}}}}, \
             spec: {{podSelector: {{matchLabels: {{app: app}}}}, ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}}}"
        )),
        policy(&format!(
            "{{metadata: {{name: web, namespace: x, annotations: {{{NETWORK_POLICY_FOR}: ovn}}}}, \
             spec: {{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}}}"
        )),
    ];
    let p = plan(&desired(policies));
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    sync.sync(&p).await.expect("sync");
    central.sync_sb().expect("northd caught up");

    let pg = central
        .nbctl(&[
            "--bare",
            "--columns=ports",
            "find",
            "Port_Group",
            "name=np.x.app_dpdk",
        ])
        .expect("port group");
    let lsp = central
        .nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Logical_Switch_Port",
            "name=app.x.dpdk.x.ovn",
        ])
        .expect("lsp");
    assert_eq!(
        pg.trim(),
        lsp.trim(),
        "the DPDK attachment is the only member"
    );

    // app's DPDK attachment (.7): only DPDK attachments get in.
    assert!(delivered(&central, 9, 7, 80), "other dpdk -> app dpdk");
    assert!(!delivered(&central, 8, 7, 80), "other primary -> app dpdk");
    assert!(!delivered(&central, 5, 7, 80), "web primary -> app dpdk");
    // app's primary interface (.6) is not isolated by a policy for x/dpdk.
    assert!(delivered(&central, 8, 6, 80), "other -> app primary");
    assert!(delivered(&central, 9, 6, 80), "other dpdk -> app primary");
    // web (.5): open to the primary interfaces of every pod, not to DPDK attachments.
    assert!(delivered(&central, 8, 5, 80), "other primary -> web");
    assert!(delivered(&central, 6, 5, 80), "app primary -> web");
    assert!(!delivered(&central, 9, 5, 80), "other dpdk -> web");
    assert!(!delivered(&central, 7, 5, 80), "app dpdk -> web");
}
