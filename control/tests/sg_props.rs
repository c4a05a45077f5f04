//! SecurityGroup translation against an independent model: for random pods, security groups
//! (every rule field, both tiers, `pass`, same-group traffic, remote groups, invalid fields),
//! annotations naming groups (also missing ones) and NetworkPolicies on the same pods, the
//! verdict of *evaluating* the generated OVN rows (`acl_eval`: tiers, priorities, `pass`)
//! equals the model's for every (source, destination, protocol, port). The model reads the
//! objects directly (Kube-OVN's documented semantics) and shares no code with the planner.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod acl_eval;
mod netpol_model;
mod sg_model;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use acl_eval::{Packet, Rows};
use ferrovn_api::security_group::{SecurityGroup, SecurityGroupRule, SecurityGroupSpec};
use ferrovn_control::plan::netpol::{
    PlannedPortGroup, PolicyNamespace, PolicyPod, Protocol, plan_network_policies,
};
use ferrovn_control::plan::security_group::plan_security_groups;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netpol_model::{Endpoint, World};
use proptest::prelude::*;
use sg_model::SgWorld;

// The model and the evaluator agree on where connections come from.
const _: () = assert!(acl_eval::SOURCE_PORT == sg_model::SOURCE_PORT);

const NAMESPACES: [&str; 2] = ["x", "y"];
const KUBELET4: &str = "100.64.0.2";
const KUBELET6: &str = "fd00:100:64::2";
/// Group names the generator uses; the last is never defined (an annotation naming it
/// isolates its pod).
const GROUPS: [&str; 4] = ["sg-a", "sg-b", "web.front", "missing"];

// =============================================================================================
// Generators

const V4_ADDRS: [&str; 7] = [
    "10.0.0.0/30",
    "10.0.0.2",
    "10.0.0.0/24",
    "0.0.0.0/0",
    "192.168.1.0/24",
    "100.64.0.0/16",
    "10.0.0.5/29",
];
const V6_ADDRS: [&str; 4] = ["fd00::/120", "fd00::3", "::/0", "2001:db8::/32"];

/// A field of a rule made invalid (how a manifest that bypassed the API server looks).
#[derive(Debug, Clone, Copy)]
enum Bad {
    IpVersion,
    Priority,
    Policy,
    Protocol,
    RemoteType,
    RemoteAddress,
    PortRange,
    SourcePortRange,
    FamilyMismatch,
}

fn bad_strategy() -> impl Strategy<Value = Option<Bad>> {
    prop::option::weighted(
        0.05,
        prop::sample::select(vec![
            Bad::IpVersion,
            Bad::Priority,
            Bad::Policy,
            Bad::Protocol,
            Bad::RemoteType,
            Bad::RemoteAddress,
            Bad::PortRange,
            Bad::SourcePortRange,
            Bad::FamilyMismatch,
        ]),
    )
}

fn rule_strategy() -> impl Strategy<Value = (SecurityGroupRule, Option<Bad>)> {
    let ports = prop::sample::select(vec![(80, 80), (80, 81), (53, 90), (81, 8080)]);
    let sports = prop::option::of(prop::sample::select(vec![(1024, 65535), (1, 1023)]));
    (
        any::<bool>(),
        prop::sample::select(vec!["", "all", "icmp", "tcp", "udp", "tcp", "udp"]),
        prop::sample::select(vec!["allow", "allow", "drop", "deny", "pass"]),
        any::<bool>(),
        (any::<prop::sample::Index>(), 0..GROUPS.len()),
        ports,
        sports,
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        bad_strategy(),
    )
        .prop_map(
            |(v4, protocol, policy, by_address, (addr, group), ports, sports, local, bad)| {
                let pick = |i: &prop::sample::Index| {
                    if v4 {
                        V4_ADDRS[i.index(V4_ADDRS.len())]
                    } else {
                        V6_ADDRS[i.index(V6_ADDRS.len())]
                    }
                    .to_string()
                };
                let mut r = SecurityGroupRule {
                    ip_version: if v4 { "ipv4" } else { "ipv6" }.into(),
                    protocol: protocol.into(),
                    priority: 0,
                    remote_type: if by_address {
                        "address"
                    } else {
                        "securityGroup"
                    }
                    .into(),
                    remote_address: if by_address {
                        pick(&addr)
                    } else {
                        String::new()
                    },
                    remote_security_group: if by_address {
                        String::new()
                    } else {
                        GROUPS[group].into()
                    },
                    port_range_min: 0,
                    port_range_max: 0,
                    local_address: local.map(|l| pick(&l)).unwrap_or_default(),
                    source_port_range_min: 0,
                    source_port_range_max: 0,
                    policy: policy.into(),
                };
                if matches!(protocol, "tcp" | "udp") {
                    r.port_range_min = ports.0;
                    r.port_range_max = ports.1;
                    if let Some((lo, hi)) = sports {
                        r.source_port_range_min = lo;
                        r.source_port_range_max = hi;
                    }
                }
                (r, bad)
            },
        )
}

fn make_bad(r: &mut SecurityGroupRule, bad: Bad) {
    match bad {
        Bad::IpVersion => r.ip_version = "IPv4".into(),
        Bad::Priority => r.priority = 16385,
        Bad::Policy => r.policy = "permit".into(),
        Bad::Protocol => r.protocol = "sctp".into(),
        Bad::RemoteType => r.remote_type = "cidr".into(),
        Bad::RemoteAddress => {
            r.remote_type = "address".into();
            r.remote_address = "10.0.0.300".into();
        }
        Bad::PortRange => {
            r.protocol = "tcp".into();
            r.port_range_min = 90;
            r.port_range_max = 80;
        }
        Bad::SourcePortRange => {
            r.protocol = "udp".into();
            r.port_range_min = 53;
            r.port_range_max = 53;
            r.source_port_range_min = 0;
            r.source_port_range_max = 70000;
        }
        Bad::FamilyMismatch => {
            r.remote_type = "address".into();
            r.remote_address = if r.ip_version == "ipv4" {
                "fd00::1".into()
            } else {
                "10.0.0.1".into()
            };
        }
    }
}

type GroupSpec = (
    bool,
    bool,
    Vec<(SecurityGroupRule, Option<Bad>)>,
    Vec<(SecurityGroupRule, Option<Bad>)>,
);

fn group_strategy() -> impl Strategy<Value = GroupSpec> {
    (
        any::<bool>(),
        prop::bool::weighted(0.25),
        prop::collection::vec(rule_strategy(), 0..4),
        prop::collection::vec(rule_strategy(), 0..3),
    )
}

fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
    prop::option::of(prop::sample::select(vec!["a", "b"])).prop_map(|app| LabelSelector {
        match_labels: app.map(|a| BTreeMap::from([("app".to_string(), a.to_string())])),
        match_expressions: None,
    })
}

/// NetworkPolicies on the same pods: enough to isolate, allow some peers and see that a pod's
/// groups decide over them.
fn np_strategy() -> impl Strategy<Value = NetworkPolicy> {
    let rule = || {
        (
            prop::option::of(selector_strategy()),
            prop::option::of(prop::sample::select(vec![80, 81])),
        )
    };
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::option::of(selector_strategy()),
        prop::sample::select(vec![
            vec!["Ingress"],
            vec!["Egress"],
            vec!["Ingress", "Egress"],
        ]),
        prop::collection::vec(rule(), 0..2),
        prop::collection::vec(rule(), 0..2),
    )
        .prop_map(|(ns, sel, types, ing, eg)| {
            let peers = |s: Option<LabelSelector>| {
                s.map(|s| {
                    vec![NetworkPolicyPeer {
                        pod_selector: Some(s),
                        ..Default::default()
                    }]
                })
            };
            let ports = |p: Option<i32>| {
                p.map(|p| {
                    vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(p)),
                        ..Default::default()
                    }]
                })
            };
            NetworkPolicy {
                metadata: ObjectMeta {
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                spec: Some(NetworkPolicySpec {
                    pod_selector: sel,
                    policy_types: Some(types.iter().map(|s| s.to_string()).collect()),
                    ingress: Some(
                        ing.into_iter()
                            .map(|(s, p)| NetworkPolicyIngressRule {
                                from: peers(s),
                                ports: ports(p),
                            })
                            .collect(),
                    ),
                    egress: Some(
                        eg.into_iter()
                            .map(|(s, p)| NetworkPolicyEgressRule {
                                to: peers(s),
                                ports: ports(p),
                            })
                            .collect(),
                    ),
                }),
            }
        })
}

fn world_strategy() -> impl Strategy<Value = SgWorld> {
    let pod = (
        0..NAMESPACES.len(),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::bool::weighted(0.3),
        prop::collection::btree_set(0..GROUPS.len(), 0..3),
        prop::bool::weighted(0.3),
    );
    (
        prop::collection::vec(pod, 1..7),
        prop::collection::vec(group_strategy(), 0..GROUPS.len()),
        // Distinct rule priorities: two overlapping rules of one priority have no defined
        // order in OVN. 15484 would tie with NetworkPolicy's kubelet allow (ACL 3000).
        Just(
            [
                1, 2, 3, 5, 8, 10, 40, 100, 999, 1000, 2000, 8000, 15000, 15483, 15485, 16000,
                16383, 16384, 4, 6, 7, 9, 11, 12,
            ]
            .to_vec(),
        )
        .prop_shuffle(),
        prop::collection::vec(np_strategy(), 0..3),
    )
        .prop_map(|(pods, groups, prios, mut nps)| {
            for (i, p) in nps.iter_mut().enumerate() {
                p.metadata.name = Some(format!("np-{i}"));
            }
            let mut prios = prios.into_iter();
            let groups: Vec<SecurityGroup> = groups
                .into_iter()
                .enumerate()
                .map(|(gi, (same, tier1, ingress, egress))| {
                    let tier = i64::from(tier1);
                    let mut fix = |rules: Vec<(SecurityGroupRule, Option<Bad>)>| {
                        rules
                            .into_iter()
                            .map(|(mut r, bad)| {
                                r.priority = prios.next().unwrap();
                                if tier == 1 && r.policy == "pass" {
                                    r.policy = "allow".into();
                                }
                                if let Some(b) = bad {
                                    make_bad(&mut r, b);
                                }
                                r
                            })
                            .collect::<Vec<_>>()
                    };
                    let ingress_rules = fix(ingress);
                    let egress_rules = fix(egress);
                    let mut g = SecurityGroup::new(
                        GROUPS[gi],
                        SecurityGroupSpec {
                            ingress_rules,
                            egress_rules,
                            allow_same_group_traffic: same,
                            tier,
                        },
                    );
                    g.metadata.name = Some(GROUPS[gi].into());
                    g
                })
                // The last name stays undefined.
                .filter(|g| g.metadata.name.as_deref() != Some("missing"))
                .collect();
            let mut member_of = Vec::new();
            let pods: Vec<PolicyPod> = pods
                .into_iter()
                .enumerate()
                .map(|(i, (ns, app, v6, groups, with_groups))| {
                    let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
                    if v6 {
                        ips.push(format!("fd00::{}", i + 1).parse().unwrap());
                    }
                    member_of.push(if with_groups {
                        groups.iter().map(|g| GROUPS[*g].to_string()).collect()
                    } else {
                        Vec::new()
                    });
                    PolicyPod {
                        namespace: NAMESPACES[ns].into(),
                        name: format!("pod{i}"),
                        labels: app
                            .map(|a| BTreeMap::from([("app".to_string(), a.to_string())]))
                            .unwrap_or_default(),
                        port: format!("pod{i}.{}", NAMESPACES[ns]),
                        ips,
                        named_ports: Vec::new(),
                    }
                })
                .collect();
            SgWorld {
                base: World {
                    namespaces: NAMESPACES
                        .iter()
                        .map(|n| PolicyNamespace {
                            name: n.to_string(),
                            labels: BTreeMap::new(),
                        })
                        .collect(),
                    pods,
                    policies: nps,
                    node_ips: vec![KUBELET4.parse().unwrap(), KUBELET6.parse().unwrap()],
                },
                groups,
                member_of,
            }
        })
}

// =============================================================================================
// Properties

fn endpoints(w: &SgWorld) -> Vec<(Endpoint, Vec<IpAddr>, String)> {
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

fn check_world(w: &SgWorld) -> Result<(), TestCaseError> {
    let np = plan_network_policies(&w.base.input());
    let sg = plan_security_groups(&w.sg_input());
    prop_assert!(np.issues.is_empty(), "issues: {:?}", np.issues);
    // Invalid groups are reported, and only they.
    for g in &w.groups {
        let name = g.metadata.name.clone().unwrap();
        let reported = sg
            .issues
            .iter()
            .any(|i| i.object == format!("SecurityGroup {name}"));
        prop_assert_eq!(
            reported,
            !w.group_valid(g),
            "group {}: {:?}",
            name,
            sg.issues
        );
        prop_assert_eq!(sg.applied.get(&name).copied(), Some(w.group_valid(g)));
    }
    for (pg, a) in sg.acls() {
        prop_assert!(
            a.tier == 2 || a.tier == 3,
            "{} {}: tier {}",
            pg.name,
            a.match_,
            a.tier
        );
        if a.direction == "from-lport" {
            prop_assert_eq!(
                a.options.get("apply-after-lb").map(String::as_str),
                Some("true")
            );
        }
    }
    let pgs: Vec<&PlannedPortGroup> = np
        .port_groups
        .values()
        .chain(sg.port_groups.values())
        .collect();
    let rows = Rows::new(
        pgs,
        np.address_sets.values().chain(sg.address_sets.values()),
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
                        for port in [53u16, 80, 81, 85, 8080] {
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
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For every (src, dst, protocol, port) among pods, external addresses and the node, the
    /// evaluated security group and NetworkPolicy ACLs agree with the model.
    #[test]
    fn acls_implement_security_group_semantics(w in world_strategy()) {
        check_world(&w)?;
    }

    /// A pod joining or leaving groups (its annotation changes) rewrites only the groups'
    /// port groups and address sets: no ACL changes (none depends on membership), no row
    /// appears or goes, except the isolation group's first or last member.
    #[test]
    fn membership_change_touches_only_groups_and_sets(
        w in world_strategy(),
        which in any::<prop::sample::Index>(),
        groups in prop::collection::btree_set(0..GROUPS.len(), 1..3),
    ) {
        let before = plan_security_groups(&w.sg_input());
        let i = which.index(w.base.pods.len());
        let mut input = w.sg_input();
        input.ports[i].groups = groups.iter().map(|g| GROUPS[*g].to_string()).collect();
        let after = plan_security_groups(&input);
        let pod = &w.base.pods[i];
        let ips: BTreeSet<String> = pod.ips.iter().map(IpAddr::to_string).collect();
        let names = |p: &ferrovn_control::plan::security_group::SecurityGroupPlan| {
            p.port_groups
                .keys()
                .filter(|n| *n != "sg_deny_all")
                .cloned()
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(names(&before), names(&after));
        prop_assert_eq!(
            before.address_sets.keys().collect::<Vec<_>>(),
            after.address_sets.keys().collect::<Vec<_>>()
        );
        for (name, b) in &before.port_groups {
            let Some(a) = after.port_groups.get(name) else { continue };
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
        let a = plan_security_groups(&w.sg_input());
        let mut input = w.sg_input();
        input.ports.reverse();
        input.groups.reverse();
        for p in &mut input.ports {
            p.groups.reverse();
        }
        prop_assert_eq!(a, plan_security_groups(&input));
    }
}

/// The model itself: a group naming an undefined remote group is invalid, and a pod naming
/// only an undefined group is isolated (the model must be able to say no).
#[test]
fn model_isolates_pods_naming_missing_groups() {
    let pod = PolicyPod {
        namespace: "x".into(),
        name: "p".into(),
        labels: BTreeMap::new(),
        port: "p.x".into(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        named_ports: Vec::new(),
    };
    let w = SgWorld {
        base: World {
            namespaces: Vec::new(),
            pods: vec![pod],
            policies: Vec::new(),
            node_ips: Vec::new(),
        },
        groups: Vec::new(),
        member_of: vec![vec!["missing".into()]],
    };
    let ext: IpAddr = "8.8.8.8".parse().unwrap();
    let me: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(!w.allowed(
        &Endpoint::External,
        ext,
        &Endpoint::Pod(0),
        me,
        Protocol::Tcp,
        80
    ));
}
