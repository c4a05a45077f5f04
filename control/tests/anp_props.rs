//! AdminNetworkPolicy / NetworkPolicy / BaselineAdminNetworkPolicy ordering against an
//! independent model (`anp_model`): for random namespaces, pods, nodes and policies of all
//! three kinds, the verdict of *evaluating* the generated OVN rows (`acl_eval`: tiers, priorities,
//! `pass`) equals the model's for every (source, destination, protocol, port).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod acl_eval;
mod anp_model;
mod netpol_model;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use acl_eval::{Packet, Rows};
use anp_model::AdminWorld;
use ferrovn_api::anp::{
    AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule, AdminNetworkPolicy,
    AdminNetworkPolicySpec, AdminPolicyPort, AdminPolicySubject, AdminPortNumber, AdminPortRange,
    BaselineAdminNetworkPolicy, BaselineAdminNetworkPolicySpec, BaselineEgressRule,
    BaselineIngressRule, NamespacedPod,
};
use ferrovn_control::plan::netpol::admin::{ANP_TIER, AdminNode, BANP_TIER, plan_admin_policies};
use ferrovn_control::plan::netpol::{
    NamedPort, PolicyNamespace, PolicyPod, Protocol, plan_network_policies,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netpol_model::{Endpoint, World};
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const KUBELET4: &str = "100.64.0.2";
const KUBELET6: &str = "fd00:100:64::2";
/// Node InternalIPs: destinations only (kubelet traffic comes from the join addresses).
const NODE1_INTERNAL: &str = "172.18.0.2";
const NODE2_INTERNAL: &str = "172.18.0.3";

// =============================================================================================
// Generators

fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(prop::sample::select(vec!["fe", "be"])),
    )
        .prop_map(|(app, tier)| {
            let mut m = BTreeMap::new();
            if let Some(a) = app {
                m.insert("app".to_string(), a.to_string());
            }
            if let Some(t) = tier {
                m.insert("tier".to_string(), t.to_string());
            }
            m
        })
}

fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
    let req = (
        prop::sample::select(vec!["app", "tier", "team", "role"]),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::sample::subsequence(vec!["a", "b", "fe", "red", "blue", "edge"], 1..3),
    )
        .prop_map(|(k, op, vals)| LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: matches!(op, "In" | "NotIn")
                .then(|| vals.iter().map(|v| v.to_string()).collect()),
        });
    (
        prop::option::of((
            prop::sample::select(vec!["app", "tier", "team", "role"]),
            prop::sample::select(vec!["a", "b", "fe", "red", "blue", "edge"]),
        )),
        prop::collection::vec(req, 0..2),
    )
        .prop_map(|(ml, exprs)| LabelSelector {
            match_labels: ml.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
}

fn namespaced_pod() -> impl Strategy<Value = NamespacedPod> {
    (selector_strategy(), selector_strategy()).prop_map(|(n, p)| NamespacedPod {
        namespace_selector: n,
        pod_selector: p,
    })
}

fn subject_strategy() -> impl Strategy<Value = AdminPolicySubject> {
    prop_oneof![
        selector_strategy().prop_map(|s| AdminPolicySubject {
            namespaces: Some(s),
            pods: None,
        }),
        namespaced_pod().prop_map(|p| AdminPolicySubject {
            namespaces: None,
            pods: Some(p),
        }),
    ]
}

fn ingress_peer() -> impl Strategy<Value = AdminIngressPeer> {
    prop_oneof![
        selector_strategy().prop_map(|s| AdminIngressPeer {
            namespaces: Some(s),
            pods: None,
        }),
        namespaced_pod().prop_map(|p| AdminIngressPeer {
            namespaces: None,
            pods: Some(p),
        }),
    ]
}

fn egress_peer() -> impl Strategy<Value = AdminEgressPeer> {
    let nets = prop::sample::select(vec![
        vec!["10.0.0.0/30"],
        vec!["10.0.0.0/24", "fd00::/120"],
        vec!["0.0.0.0/0"],
        vec!["172.18.0.0/30"],
        vec!["192.168.1.0/24", "8.8.8.8/32"],
        vec!["2001:db8::/32"],
    ]);
    prop_oneof![
        ingress_peer().prop_map(|p| AdminEgressPeer {
            namespaces: p.namespaces,
            pods: p.pods,
            ..Default::default()
        }),
        selector_strategy().prop_map(|s| AdminEgressPeer {
            nodes: Some(s),
            ..Default::default()
        }),
        nets.prop_map(|n| AdminEgressPeer {
            networks: n.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    ]
}

fn port_strategy() -> impl Strategy<Value = AdminPolicyPort> {
    let proto = prop::sample::select(vec!["", "TCP", "UDP", "SCTP"]);
    prop_oneof![
        (proto.clone(), prop::sample::select(vec![53, 80, 81, 8080])).prop_map(|(pr, port)| {
            AdminPolicyPort {
                port_number: Some(AdminPortNumber {
                    protocol: if pr.is_empty() {
                        "TCP".into()
                    } else {
                        pr.into()
                    },
                    port,
                }),
                ..Default::default()
            }
        }),
        (
            proto,
            prop::sample::select(vec![(80, 81), (53, 80), (81, 90)])
        )
            .prop_map(|(pr, (start, end))| AdminPolicyPort {
                port_range: Some(AdminPortRange {
                    protocol: pr.into(),
                    start,
                    end,
                }),
                ..Default::default()
            }),
        prop::sample::select(vec!["http", "dns", "nope"]).prop_map(|n| AdminPolicyPort {
            named_port: Some(n.into()),
            ..Default::default()
        }),
    ]
}

fn ports_strategy() -> impl Strategy<Value = Option<Vec<AdminPolicyPort>>> {
    prop::option::of(prop::collection::vec(port_strategy(), 1..3))
}

/// A named port cannot go with nodes / networks peers (the API server refuses it).
fn fix_ports(
    peers: &[AdminEgressPeer],
    ports: Option<Vec<AdminPolicyPort>>,
) -> Option<Vec<AdminPolicyPort>> {
    let off_cluster = peers
        .iter()
        .any(|p| p.nodes.is_some() || !p.networks.is_empty());
    let ports: Vec<AdminPolicyPort> = ports?
        .into_iter()
        .filter(|p| !(off_cluster && p.named_port.is_some()))
        .collect();
    (!ports.is_empty()).then_some(ports)
}

fn anp_strategy() -> impl Strategy<Value = AdminNetworkPolicy> {
    let action = prop::sample::select(vec!["Allow", "Deny", "Pass"]);
    let ingress = (
        action.clone(),
        prop::collection::vec(ingress_peer(), 1..3),
        ports_strategy(),
    )
        .prop_map(|(action, from, ports)| AdminIngressRule {
            name: String::new(),
            action: action.into(),
            from,
            ports,
        });
    let egress = (
        action,
        prop::collection::vec(egress_peer(), 1..3),
        ports_strategy(),
    )
        .prop_map(|(action, to, ports)| AdminEgressRule {
            name: String::new(),
            action: action.into(),
            ports: fix_ports(&to, ports),
            to,
        });
    (
        subject_strategy(),
        prop::collection::vec(ingress, 0..3),
        prop::collection::vec(egress, 0..3),
    )
        .prop_map(|(subject, ingress, egress)| AdminNetworkPolicy {
            metadata: ObjectMeta::default(),
            spec: AdminNetworkPolicySpec {
                priority: 0,
                subject,
                ingress,
                egress,
            },
            status: None,
        })
}

fn banp_strategy() -> impl Strategy<Value = BaselineAdminNetworkPolicy> {
    let action = prop::sample::select(vec!["Allow", "Deny"]);
    let ingress = (
        action.clone(),
        prop::collection::vec(ingress_peer(), 1..3),
        ports_strategy(),
    )
        .prop_map(|(action, from, ports)| BaselineIngressRule {
            name: String::new(),
            action: action.into(),
            from,
            ports,
        });
    let egress = (
        action,
        prop::collection::vec(egress_peer(), 1..3),
        ports_strategy(),
    )
        .prop_map(|(action, to, ports)| BaselineEgressRule {
            name: String::new(),
            action: action.into(),
            ports: fix_ports(&to, ports),
            to,
        });
    (
        subject_strategy(),
        prop::collection::vec(ingress, 0..3),
        prop::collection::vec(egress, 0..3),
    )
        .prop_map(|(subject, ingress, egress)| BaselineAdminNetworkPolicy {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            spec: BaselineAdminNetworkPolicySpec {
                subject,
                ingress,
                egress,
            },
            status: None,
        })
}

/// NetworkPolicies: enough shapes to isolate pods per direction and allow some of their peers
/// (the NetworkPolicy planner has its own, fuller property test).
type NpRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

fn np_rule() -> impl Strategy<Value = NpRule> {
    let peer = prop_oneof![
        selector_strategy().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        (selector_strategy(), selector_strategy()).prop_map(|(n, p)| NetworkPolicyPeer {
            namespace_selector: Some(n),
            pod_selector: Some(p),
            ..Default::default()
        }),
    ];
    let port = prop::option::of(prop::sample::select(vec![80, 81])).prop_map(|p| {
        p.map(|p| {
            vec![NetworkPolicyPort {
                port: Some(IntOrString::Int(p)),
                ..Default::default()
            }]
        })
    });
    (prop::option::of(prop::collection::vec(peer, 1..2)), port)
}

/// NetworkPolicies: enough shapes to isolate pods per direction and allow some of their peers
/// (the NetworkPolicy planner has its own, fuller property test).
fn np_strategy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::option::of(selector_strategy()),
        prop::sample::select(vec![
            vec!["Ingress"],
            vec!["Egress"],
            vec!["Ingress", "Egress"],
        ]),
        prop::collection::vec(np_rule(), 0..2),
        prop::collection::vec(np_rule(), 0..2),
    )
        .prop_map(|(ns, sel, types, ing, eg)| NetworkPolicy {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: sel,
                policy_types: Some(types.iter().map(|s| s.to_string()).collect()),
                ingress: Some(
                    ing.into_iter()
                        .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                        .collect(),
                ),
                egress: Some(
                    eg.into_iter()
                        .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                        .collect(),
                ),
            }),
        })
}

type PodSpec = (
    usize,
    BTreeMap<String, String>,
    bool,
    Vec<(usize, Protocol, u16)>,
);

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0..NAMESPACES.len(),
        labels_strategy(),
        any::<bool>(),
        prop::collection::vec(
            (
                0..2usize,
                prop::sample::select(Protocol::ALL.to_vec()),
                prop::sample::select(vec![80u16, 81, 8080, 53]),
            ),
            0..2,
        ),
    )
}

fn world_strategy() -> impl Strategy<Value = AdminWorld> {
    let ns_labels = prop::option::of(prop::sample::select(vec!["red", "blue"])).prop_map(|t| {
        t.map(|t| BTreeMap::from([("team".to_string(), t.to_string())]))
            .unwrap_or_default()
    });
    let node_labels = prop::option::of(prop::sample::select(vec!["edge", "a"])).prop_map(|r| {
        r.map(|r| BTreeMap::from([("role".to_string(), r.to_string())]))
            .unwrap_or_default()
    });
    (
        prop::collection::vec(ns_labels, 3),
        prop::collection::vec(pod_strategy(), 1..7),
        prop::collection::vec(np_strategy(), 0..3),
        prop::collection::vec(anp_strategy(), 0..4),
        // Distinct ANP priorities (the order of equal ones is undefined upstream).
        Just(vec![0, 1, 7, 500, 999, 1000]).prop_shuffle(),
        prop::option::of(banp_strategy()),
        prop::collection::vec(node_labels, 2),
    )
        .prop_map(|(nsl, pods, mut nps, mut anps, prios, banp, nl)| {
            for (i, p) in nps.iter_mut().enumerate() {
                p.metadata.name = Some(format!("np-{i}"));
            }
            for (i, p) in anps.iter_mut().enumerate() {
                p.metadata.name = Some(format!("anp-{i}"));
                p.spec.priority = prios[i];
            }
            let pods: Vec<PolicyPod> = pods
                .into_iter()
                .enumerate()
                .map(|(i, (ns, labels, v6, named))| {
                    let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
                    if v6 {
                        ips.push(format!("fd00::{}", i + 1).parse().unwrap());
                    }
                    let mut named_ports: Vec<NamedPort> = Vec::new();
                    for (n, protocol, port) in named {
                        let name = ["http", "dns"][n].to_string();
                        if named_ports.iter().all(|x| x.name != name) {
                            named_ports.push(NamedPort {
                                name,
                                protocol,
                                port,
                            });
                        }
                    }
                    PolicyPod {
                        namespace: NAMESPACES[ns].into(),
                        name: format!("pod{i}"),
                        labels,
                        port: format!("pod{i}.{}", NAMESPACES[ns]),
                        ips,
                        named_ports,
                    }
                })
                .collect();
            AdminWorld {
                base: World {
                    namespaces: NAMESPACES
                        .iter()
                        .zip(nsl)
                        .map(|(n, labels)| PolicyNamespace {
                            name: n.to_string(),
                            labels,
                        })
                        .collect(),
                    pods,
                    policies: nps,
                    node_ips: vec![KUBELET4.parse().unwrap(), KUBELET6.parse().unwrap()],
                },
                anps,
                banp,
                nodes: vec![
                    AdminNode {
                        name: "n1".into(),
                        labels: nl[0].clone(),
                        ips: vec![
                            NODE1_INTERNAL.parse().unwrap(),
                            KUBELET4.parse().unwrap(),
                            KUBELET6.parse().unwrap(),
                        ],
                    },
                    AdminNode {
                        name: "n2".into(),
                        labels: nl[1].clone(),
                        ips: vec![NODE2_INTERNAL.parse().unwrap()],
                    },
                ],
            }
        })
}

// =============================================================================================
// Properties

fn endpoints(w: &AdminWorld) -> Vec<(Endpoint, Vec<IpAddr>, String)> {
    let mut v: Vec<(Endpoint, Vec<IpAddr>, String)> = w
        .base
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (Endpoint::Pod(i), p.ips.clone(), p.port.clone()))
        .collect();
    for ext in [
        "192.168.1.7",
        "10.0.0.200",
        "8.8.8.8",
        "fd00::99",
        "2001:db8::1",
        NODE1_INTERNAL,
        NODE2_INTERNAL,
    ] {
        v.push((
            Endpoint::External,
            vec![ext.parse().unwrap()],
            "ovn-cluster-ext".into(),
        ));
    }
    v.push((
        Endpoint::Node,
        vec![KUBELET4.parse().unwrap(), KUBELET6.parse().unwrap()],
        "node-n1".into(),
    ));
    v
}

fn check_world(w: &AdminWorld) -> Result<(), TestCaseError> {
    let np = plan_network_policies(&w.base.input());
    let admin = plan_admin_policies(&w.admin_input());
    prop_assert!(np.issues.is_empty(), "issues: {:?}", np.issues);
    prop_assert!(admin.issues.is_empty(), "issues: {:?}", admin.issues);
    for (pg, a) in admin.acls() {
        let want = if pg.name.starts_with("anp.") {
            ANP_TIER
        } else {
            BANP_TIER
        };
        prop_assert_eq!(a.tier, want, "{}", a.match_);
        if a.direction == "from-lport" {
            prop_assert_eq!(
                a.options.get("apply-after-lb").map(String::as_str),
                Some("true")
            );
        }
    }
    let rows = Rows::new(
        np.port_groups.values().chain(admin.port_groups.values()),
        np.address_sets.values().chain(admin.address_sets.values()),
    );
    let eps = endpoints(w);
    for (src, sips, sport) in &eps {
        for (dst, dips, dport_name) in &eps {
            if !matches!(src, Endpoint::Pod(_)) && !matches!(dst, Endpoint::Pod(_)) {
                continue;
            }
            for sip in sips {
                for dip in dips.iter().filter(|d| d.is_ipv4() == sip.is_ipv4()) {
                    for proto in Protocol::ALL {
                        for port in [53u16, 80, 81, 85, 90, 8080] {
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
                            pkt.outport = dport_name.clone();
                            let ingress = rows.stage(&pkt, "to-lport").0;
                            prop_assert_eq!(
                                egress && ingress,
                                want,
                                "{:?} {} -> {:?} {} {:?}/{} (egress stage {}, ingress stage {})",
                                src,
                                sip,
                                dst,
                                dip,
                                proto,
                                port,
                                egress,
                                ingress
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// For every (src, dst, protocol, port) among pods, external addresses and nodes, the
    /// evaluated tier 1 / 2 / 3 ACLs agree with the ANP → NP → BANP model.
    #[test]
    fn tiers_implement_admin_policy_semantics(w in world_strategy()) {
        check_world(&w)?;
    }

    /// A pod's label change rewrites only port groups and address sets that gain or lose the
    /// pod: no ACL changes (the ACL priorities do not depend on labels), no row appears.
    #[test]
    fn label_change_touches_only_affected_sets(
        w in world_strategy(),
        which in any::<prop::sample::Index>(),
        labels in labels_strategy(),
    ) {
        let before = plan_admin_policies(&w.admin_input());
        let i = which.index(w.base.pods.len());
        let mut input = w.admin_input();
        input.pods[i].labels = labels;
        let after = plan_admin_policies(&input);
        let pod = &w.base.pods[i];
        let ips: BTreeSet<String> = pod.ips.iter().map(IpAddr::to_string).collect();
        prop_assert_eq!(
            before.port_groups.keys().collect::<Vec<_>>(),
            after.port_groups.keys().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            before.address_sets.keys().collect::<Vec<_>>(),
            after.address_sets.keys().collect::<Vec<_>>()
        );
        for (name, b) in &before.port_groups {
            let a = &after.port_groups[name];
            prop_assert_eq!(&a.acls, &b.acls, "ACLs of {} changed", name);
            let diff: BTreeSet<&String> = a.ports.symmetric_difference(&b.ports).collect();
            prop_assert!(diff.iter().all(|p| **p == pod.port), "{} changed by {:?}", name, diff);
        }
        for (name, b) in &before.address_sets {
            let a = &after.address_sets[name];
            let diff: BTreeSet<&String> = a.addresses.symmetric_difference(&b.addresses).collect();
            prop_assert!(diff.iter().all(|x| ips.contains(*x)), "{} changed by {:?}", name, diff);
        }
    }

    /// The plan does not depend on the order of its input.
    #[test]
    fn plan_ignores_input_order(w in world_strategy()) {
        let a = plan_admin_policies(&w.admin_input());
        let mut input = w.admin_input();
        input.pods.reverse();
        input.anps.reverse();
        input.namespaces.reverse();
        input.nodes.reverse();
        prop_assert_eq!(a, plan_admin_policies(&input));
    }
}
