//! The default VPC's gateway rows (distributed and centralized) against a simple model: which
//! 29000 reroute carries each pod's egress, to which join address(es), and how many rows there
//! are (nodes + subnets, never nodes × subnets).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, GatewayLiveness, NodeIntent, PlanIssue, PlannedPolicy, PortIntent,
    SubnetIntent, plan,
};
use proptest::prelude::*;

fn node(i: usize) -> NodeIntent {
    NodeIntent {
        name: format!("n{i}"),
        join_ips: vec![format!("100.64.0.{}", i + 2).parse().unwrap()],
        join_mac: Some(MacAddr([0x0e, 0, 0, 0, 1, i as u8])),
        internal_ips: vec![],
    }
}

fn join_ip(i: usize) -> String {
    format!("100.64.0.{}", i + 2)
}

fn pod(name: &str, subnet: &str, ip: &str, node: &str, m: u16) -> PortIntent {
    PortIntent {
        pod: name.into(),
        namespace: "default".into(),
        provider: "ovn".into(),
        subnet: subnet.into(),
        node: node.into(),
        mac: MacAddr([0x0e, 0, 0, 2, (m >> 8) as u8, m as u8]),
        ips: vec![ip.parse().unwrap()],
        port_security: false,
    }
}

fn centralized(name: &str, cidr: &str, gateway_node: &str, ecmp: bool) -> SubnetIntent {
    let mut s = common::overlay(name, cidr);
    s.centralized_gateway = true;
    s.gateway_node = gateway_node.into();
    s.gateway_ecmp = ecmp;
    s
}

fn reroutes(d: &Desired) -> Vec<PlannedPolicy> {
    plan(d).routers[DEFAULT_ROUTER]
        .policies
        .values()
        .filter(|p| p.priority == 29000)
        .cloned()
        .collect()
}

fn live(nodes: &[&str]) -> GatewayLiveness {
    GatewayLiveness {
        alive: Some(nodes.iter().map(|s| s.to_string()).collect()),
        previous_active: BTreeMap::new(),
    }
}

fn cluster(n: usize) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    d.nodes = (0..n).map(node).collect();
    d
}

#[test]
fn centralized_subnet_is_one_reroute_to_its_active_gateway() {
    let mut d = cluster(3);
    d.subnets.push(centralized(
        "c",
        "10.20.0.0/16",
        "n1, n2:203.0.113.7",
        false,
    ));
    d.ports.push(pod("p", "c", "10.20.0.5", "n0", 1));
    let out = plan(&d);
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    let key = "lrp-policy/ovn-cluster/29000/centralized/c/ip4";
    let row = &out.routers[DEFAULT_ROUTER].policies[key];
    assert_eq!(row.match_, "ip4.src == 10.20.0.0/16");
    assert_eq!(row.action, "reroute");
    assert_eq!(row.nexthops, [join_ip(1)]);
    assert_eq!(row.external_ids["active-gateway"], "n1");
    assert_eq!(out.active_gateways["c"], ["n1"]);

    // n1 dies: n2 takes over; n1 coming back does not take it back (sticky)
    d.gateway_liveness = live(&["n0", "n2"]);
    let out = plan(&d);
    assert_eq!(
        out.routers[DEFAULT_ROUTER].policies[key].nexthops,
        [join_ip(2)]
    );
    d.gateway_liveness = live(&["n0", "n1", "n2"]);
    d.gateway_liveness
        .previous_active
        .insert("c".into(), "n2".into());
    assert_eq!(
        plan(&d).routers[DEFAULT_ROUTER].policies[key].nexthops,
        [join_ip(2)]
    );
    // both die: the row stays on the last choice and the plan says why
    d.gateway_liveness = live(&["n0"]);
    d.gateway_liveness
        .previous_active
        .insert("c".into(), "n2".into());
    let out = plan(&d);
    assert_eq!(
        out.routers[DEFAULT_ROUTER].policies[key].nexthops,
        [join_ip(2)]
    );
    assert!(
        out.issues
            .iter()
            .any(|i| matches!(i, PlanIssue::NoLiveGateway { .. })),
        "{:?}",
        out.issues
    );
}

#[test]
fn ecmp_reroutes_to_every_live_gateway() {
    let mut d = cluster(3);
    d.subnets
        .push(centralized("c", "10.20.0.0/16", "n0,n1,n2", true));
    d.gateway_liveness = live(&["n0", "n2"]);
    let r = reroutes(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].nexthops, [join_ip(0), join_ip(2)]);
}

#[test]
fn bad_or_unknown_gateway_nodes_are_issues_naming_the_field() {
    let mut d = cluster(1);
    d.subnets
        .push(centralized("c", "10.20.0.0/16", "n0:x", false));
    d.subnets
        .push(centralized("e", "10.21.0.0/16", "ghost", false));
    let out = plan(&d);
    let text: Vec<String> = out.issues.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("subnet c") && t.contains("gatewayNode")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("subnet e") && t.contains("ghost")),
        "{text:?}"
    );
    assert!(reroutes(&d).is_empty());
}

#[test]
fn switching_gateway_type_replaces_the_rows() {
    let mut d = cluster(2);
    d.subnets.push(common::overlay("c", "10.20.0.0/16"));
    d.ports.push(pod("p", "c", "10.20.0.5", "n0", 1));
    let before = reroutes(&d);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].match_, "ip4.src == {10.20.0.5}");
    d.subnets.pop();
    d.subnets
        .push(centralized("c", "10.20.0.0/16", "n1", false));
    let after = reroutes(&d);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].match_, "ip4.src == 10.20.0.0/16");
    assert_eq!(after[0].nexthops, [join_ip(1)]);
    // the gateway node leaves: no row (and an issue), nothing points at a gone join port
    d.nodes.pop();
    let out = plan(&d);
    assert!(
        out.routers[DEFAULT_ROUTER]
            .policies
            .values()
            .all(|p| p.priority != 29000)
    );
    assert!(
        out.issues
            .iter()
            .any(|i| matches!(i, PlanIssue::NoGatewayNode { .. }))
    );
}

/// One generated cluster: nodes, subnets (each distributed, or centralized with a gateway list
/// and a mode), pods, and the live nodes.
#[derive(Debug, Clone)]
struct Case {
    nodes: usize,
    /// Per subnet: None = distributed, Some((gateway node indices, ecmp)).
    subnets: Vec<Option<(Vec<usize>, bool)>>,
    /// (subnet, node) per pod.
    pods: Vec<(usize, usize)>,
    alive: BTreeSet<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..6, 1usize..6).prop_flat_map(|(nodes, subnets)| {
        (
            proptest::collection::vec(
                proptest::option::of((proptest::collection::vec(0..nodes, 1..4), any::<bool>())),
                subnets,
            ),
            proptest::collection::vec((0..subnets, 0..nodes), 0..30),
            proptest::collection::btree_set(0..nodes, 0..=nodes),
        )
            .prop_map(move |(subnets, pods, alive)| Case {
                nodes,
                subnets,
                pods,
                alive,
            })
    })
}

fn desired_of(c: &Case) -> Desired {
    let mut d = cluster(c.nodes);
    for (i, s) in c.subnets.iter().enumerate() {
        let cidr = format!("10.{}.0.0/16", 100 + i);
        d.subnets.push(match s {
            None => common::overlay(&format!("s{i}"), &cidr),
            Some((gws, ecmp)) => {
                let list: Vec<String> = gws.iter().map(|g| format!("n{g}")).collect();
                centralized(&format!("s{i}"), &cidr, &list.join(","), *ecmp)
            }
        });
    }
    for (k, (s, n)) in c.pods.iter().enumerate() {
        d.ports.push(pod(
            &format!("p{k}"),
            &format!("s{s}"),
            &format!("10.{}.{}.{}", 100 + s, k / 200, k % 200 + 2),
            &format!("n{n}"),
            k as u16,
        ));
    }
    d.gateway_liveness = GatewayLiveness {
        alive: Some(c.alive.iter().map(|n| format!("n{n}")).collect()),
        previous_active: BTreeMap::new(),
    };
    d
}

proptest! {
    #[test]
    fn every_pod_egress_follows_the_model(c in case()) {
        let d = desired_of(&c);
        let out = plan(&d);
        let policies: Vec<&PlannedPolicy> = out.routers[DEFAULT_ROUTER].policies.values().collect();
        let gw: Vec<&&PlannedPolicy> = policies.iter().filter(|p| p.priority == 29000).collect();
        // model: distributed rows = nodes holding a distributed pod; centralized = one per subnet
        let dist_nodes: BTreeSet<usize> = c.pods.iter()
            .filter(|(s, _)| c.subnets[*s].is_none()).map(|(_, n)| *n).collect();
        let central = c.subnets.iter().filter(|s| s.is_some()).count();
        prop_assert_eq!(gw.len(), dist_nodes.len() + central);
        // linear: 31000 allow per subnet (+ join + ovn-default), nothing per (node, subnet)
        let allows = policies.iter().filter(|p| p.priority == 31000).count();
        prop_assert_eq!(allows, c.subnets.len() + 2);
        for (k, (s, n)) in c.pods.iter().enumerate() {
            let ip: IpAddr = format!("10.{}.{}.{}", 100 + s, k / 200, k % 200 + 2).parse().unwrap();
            let matching: Vec<&&&PlannedPolicy> = gw.iter().filter(|p| {
                p.match_.contains(&format!(" {ip},")) || p.match_.contains(&format!("{{{ip},"))
                    || p.match_.contains(&format!(" {ip}}}")) || p.match_.contains(&format!("{{{ip}}}"))
                    || p.match_ == format!("ip4.src == 10.{}.0.0/16", 100 + s)
            }).collect();
            prop_assert_eq!(matching.len(), 1, "pod {} {}", k, ip);
            let want: Vec<String> = match &c.subnets[*s] {
                None => vec![join_ip(*n)],
                Some((gws, ecmp)) => {
                    let mut listed: Vec<usize> = Vec::new();
                    for g in gws { if !listed.contains(g) { listed.push(*g); } }
                    let alive: Vec<usize> = listed.iter().copied().filter(|g| c.alive.contains(g)).collect();
                    let pick = match (ecmp, alive.is_empty()) {
                        (true, false) => alive,
                        (true, true) => listed.clone(),
                        (false, false) => vec![alive[0]],
                        (false, true) => vec![listed[0]],
                    };
                    let mut hops: Vec<String> = pick.into_iter().map(join_ip).collect();
                    hops.sort();
                    hops
                }
            };
            prop_assert_eq!(&matching[0].nexthops, &want);
        }
    }
}
