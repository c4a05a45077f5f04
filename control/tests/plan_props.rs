//! Properties of the NB planner over random clusters.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, NodeIntent, PortIntent, SubnetIntent, VpcIntent, plan,
};
use proptest::prelude::*;

/// Subnet i is 10.(i+1).0.0/24; pods pick a subnet index and a host number, which may collide
/// or hit the gateway on purpose.
fn desired(
    n_subnets: usize,
    pods: Vec<(usize, u8, u8, bool)>,
    nodes: Vec<u8>,
    private: Vec<bool>,
) -> Desired {
    let mut d = common::default_vpc_with_join();
    d.vpcs.push(VpcIntent {
        name: "vpc-x".into(),
        ..Default::default()
    });
    for i in 0..n_subnets {
        let vpc = if i % 3 == 2 { "vpc-x" } else { DEFAULT_ROUTER };
        let mut s = SubnetIntent::overlay(
            format!("s{i}"),
            vpc,
            Some(format!("10.{}.0.0/24", i + 1).parse().unwrap()),
            None,
        );
        s.private = private.get(i).copied().unwrap_or(false);
        if s.private {
            s.allow_subnets = vec!["10.200.0.0/16".parse().unwrap()];
        }
        d.subnets.push(s);
    }
    for (k, (subnet, host, mac_byte, sec)) in pods.into_iter().enumerate() {
        let subnet = subnet % n_subnets.max(1);
        d.ports.push(PortIntent {
            pod: format!("p{k}"),
            namespace: format!("ns{}", k % 3),
            provider: "ovn".into(),
            subnet: format!("s{subnet}"),
            node: format!("n{}", k % 4),
            mac: MacAddr([0x0e, 0, 0, 0, (k / 256) as u8, mac_byte]),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, subnet as u8 + 1, 0, host))],
            port_security: sec,
        });
    }
    for (k, _) in nodes.into_iter().enumerate() {
        let n = k as u8 + 2;
        d.nodes.push(NodeIntent {
            name: format!("node{k}"),
            join_ips: vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, n))],
            join_mac: Some(MacAddr([0x0e, 1, 0, 0, 0, n])),
            internal_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, n))],
        });
    }
    d
}

fn arb_desired() -> impl Strategy<Value = Desired> {
    (
        1usize..6,
        prop::collection::vec((0usize..6, any::<u8>(), any::<u8>(), any::<bool>()), 0..60),
        prop::collection::vec(2u8..20, 0..6),
        prop::collection::vec(any::<bool>(), 6),
    )
        .prop_map(|(n, pods, nodes, private)| desired(n, pods, nodes, private))
}

fn shuffle<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut s = seed | 1;
    for i in (1..out.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.swap(i, (s % (i as u64 + 1)) as usize);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn planning_is_deterministic_and_order_independent(d in arb_desired(), seed in any::<u64>()) {
        let a = plan(&d);
        let mut shuffled = d.clone();
        shuffled.ports = shuffle(&d.ports, seed);
        shuffled.subnets = shuffle(&d.subnets, seed.rotate_left(7));
        shuffled.nodes = shuffle(&d.nodes, seed.rotate_left(13));
        shuffled.vpcs = shuffle(&d.vpcs, seed.rotate_left(17));
        prop_assert_eq!(&a, &plan(&shuffled));
        prop_assert_eq!(&a, &plan(&d));
    }

    #[test]
    fn every_pod_port_lands_on_its_subnets_switch(d in arb_desired()) {
        let p = plan(&d);
        for port in &d.ports {
            if let Some((switch, planned)) = p.find_port(&port.port_name()) {
                prop_assert_eq!(&switch.name, &port.subnet);
                let want = format!("{} {}", port.mac, port.ips[0]);
                prop_assert_eq!(&planned.addresses, &vec![want]);
                prop_assert_eq!(planned.port_security.is_empty(), !port.port_security);
            }
        }
        // A port is either planned or explained by an issue.
        let planned: usize = p.switches.values()
            .map(|s| s.ports.values().filter(|x| x.external_ids.contains_key("pod")).count())
            .sum();
        let port_issues = p.issues.iter().filter(|i| !matches!(i,
            ferrovn_control::plan::PlanIssue::NodeWithoutJoinAddress { .. })).count();
        prop_assert_eq!(planned + port_issues, d.ports.len());
    }

    #[test]
    fn no_two_ports_share_an_address_or_mac(d in arb_desired()) {
        let p = plan(&d);
        let mut ips: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut macs: BTreeSet<String> = BTreeSet::new();
        for s in p.switches.values() {
            let gw = s.other_config.get("gateway").cloned();
            for port in s.ports.values() {
                for a in &port.addresses {
                    let mut parts = a.split_whitespace();
                    let Some(mac) = parts.next() else { continue };
                    if mac == "router" || mac == "unknown" { continue; }
                    prop_assert!(macs.insert(mac.to_string()), "MAC {} twice", mac);
                    for ip in parts {
                        prop_assert!(Some(ip.to_string()) != gw, "gateway {} given to {}", ip, port.name);
                        let prev = ips.insert((s.name.clone(), ip.to_string()), port.name.clone());
                        prop_assert!(prev.is_none(), "{} twice in {}", ip, s.name);
                    }
                }
            }
        }
    }

    #[test]
    fn switches_connect_to_their_own_vpc_router_only(d in arb_desired()) {
        let p = plan(&d);
        for s in &d.subnets {
            let Some(sw) = p.switches.get(&s.name) else { continue };
            let peer = format!("{}-{}", s.name, s.vpc);
            prop_assert!(sw.ports.contains_key(&peer));
            for r in p.routers.values() {
                let lrp = format!("{}-{}", r.name, s.name);
                prop_assert_eq!(r.ports.contains_key(&lrp), r.name == s.vpc);
            }
            // the conntrack bypass (plan::ctbypass) is not a subnet ACL
            let subnet_acls = sw.acls.keys().filter(|k| !k.starts_with("ctbypass/")).count();
            prop_assert_eq!(subnet_acls == 0, !s.private);
        }
    }
}
