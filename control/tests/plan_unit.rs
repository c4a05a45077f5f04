//! The NB planner on hand-written inputs: names, columns, ownership marks and issues.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ferrovn_api::names::router_port_mac;
use ferrovn_control::plan::{
    AclIntent, DEFAULT_ROUTER, Desired, NodeIntent, OWNER_KEY, OWNER_VALUE, PlanIssue,
    PolicyIntent, PortIntent, ROW_KEY, RouteIntent, RoutePolicy, SUBNET_ACL_TIER, SubnetIntent,
    VlanIntent, VpcIntent, netpol::NETPOL_TIER, plan,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, last])
}

fn base() -> Desired {
    common::default_cluster("10.16.0.0/16", None)
}

fn pod(name: &str, ns: &str, subnet: &str, ips: &[&str], m: u8) -> PortIntent {
    PortIntent {
        pod: name.into(),
        namespace: ns.into(),
        provider: "ovn".into(),
        subnet: subnet.into(),
        node: "node1".into(),
        mac: mac(m),
        ips: ips.iter().map(|s| ip(s)).collect(),
        port_security: false,
    }
}

#[test]
fn default_topology_follows_kube_ovn_names() {
    let p = plan(&base());
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let router = &p.routers["ovn-cluster"];
    assert_eq!(router.external_ids[OWNER_KEY], OWNER_VALUE);
    let lrp = &router.ports["ovn-cluster-ovn-default"];
    assert_eq!(lrp.networks, vec!["10.16.0.1/16".to_string()]);
    assert_eq!(
        lrp.mac,
        router_port_mac("ovn-cluster-ovn-default").to_string()
    );
    assert_eq!(
        router.ports["ovn-cluster-join"].networks,
        vec!["100.64.0.1/16".to_string()]
    );

    let ls = &p.switches["ovn-default"];
    assert_eq!(ls.other_config["subnet"], "10.16.0.0/16");
    assert_eq!(ls.other_config["gateway"], "10.16.0.1");
    let peer = &ls.ports["ovn-default-ovn-cluster"];
    assert_eq!(peer.type_, "router");
    assert_eq!(peer.addresses, vec!["router".to_string()]);
    assert_eq!(peer.options["router-port"], "ovn-cluster-ovn-default");

    // the default route towards the join gateway, as Kube-OVN installs it
    let route = router
        .static_routes
        .values()
        .find(|r| r.ip_prefix == "0.0.0.0/0")
        .expect("default route");
    assert_eq!(route.nexthop, "100.64.0.1");
}

#[test]
fn router_port_macs_differ_and_are_unicast() {
    let a = router_port_mac("ovn-cluster-ovn-default");
    let b = router_port_mac("ovn-cluster-join");
    assert_ne!(a, b);
    assert!(a.is_unicast() && b.is_unicast());
    assert_eq!(a.0[0], 0x0a);
}

#[test]
fn pod_port_has_addresses_and_identity() {
    let mut d = base();
    let mut p1 = pod("web-0", "default", "ovn-default", &["10.16.0.5"], 5);
    p1.port_security = true;
    d.ports.push(p1);
    let p = plan(&d);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let (ls, port) = p.find_port("web-0.default").expect("port planned");
    assert_eq!(ls.name, "ovn-default");
    assert_eq!(
        port.addresses,
        vec!["0e:00:00:00:00:05 10.16.0.5".to_string()]
    );
    assert_eq!(port.port_security, port.addresses);
    let ids = &port.external_ids;
    assert_eq!(ids["pod"], "default/web-0");
    assert_eq!(ids["namespace"], "default");
    assert_eq!(ids["node"], "node1");
    assert_eq!(ids[OWNER_KEY], OWNER_VALUE);
    assert_eq!(ids[ROW_KEY], "lsp/web-0.default");
}

#[test]
fn port_security_off_unless_asked() {
    let mut d = base();
    d.ports
        .push(pod("a", "default", "ovn-default", &["10.16.0.5"], 5));
    let p = plan(&d);
    assert!(p.find_port("a.default").unwrap().1.port_security.is_empty());
}

#[test]
fn dual_stack_addresses_are_ipv4_first() {
    let mut d = base();
    d.subnets.push(SubnetIntent::overlay(
        "dual",
        DEFAULT_ROUTER,
        Some("10.77.0.0/16".parse().unwrap()),
        Some("fd00:10:77::/64".parse().unwrap()),
    ));
    d.ports
        .push(pod("a", "ns", "dual", &["fd00:10:77::5", "10.77.0.5"], 9));
    let p = plan(&d);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let port = p.find_port("a.ns").unwrap().1;
    assert_eq!(
        port.addresses,
        vec!["0e:00:00:00:00:09 10.77.0.5 fd00:10:77::5".to_string()]
    );
    let ls = &p.switches["dual"];
    assert_eq!(ls.other_config["ipv6_prefix"], "fd00:10:77::");
    let lrp = &p.routers["ovn-cluster"].ports["ovn-cluster-dual"];
    assert_eq!(
        lrp.networks,
        vec!["10.77.0.1/16".to_string(), "fd00:10:77::1/64".to_string()]
    );
}

#[test]
fn attachment_port_name_carries_provider() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "dpdk-net",
        DEFAULT_ROUTER,
        Some("172.18.0.0/24".parse().unwrap()),
        None,
    );
    s.provider = "dpdk-net.default.ovn".into();
    d.subnets.push(s);
    let mut p = pod("testpmd", "default", "dpdk-net", &["172.18.0.9"], 3);
    p.provider = "dpdk-net.default.ovn".into();
    d.ports.push(p);
    let out = plan(&d);
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    let (ls, port) = out
        .find_port("testpmd.default.dpdk-net.default.ovn")
        .expect("attachment port");
    assert_eq!(ls.name, "dpdk-net");
    assert_eq!(port.external_ids["provider"], "dpdk-net.default.ovn");
}

#[test]
fn ipam_only_subnets_make_no_switch() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "macvlan",
        DEFAULT_ROUTER,
        Some("192.168.9.0/24".parse().unwrap()),
        None,
    );
    s.provider = "macvlan.default".into();
    d.subnets.push(s);
    let mut p = pod("m", "default", "macvlan", &["192.168.9.9"], 3);
    p.provider = "macvlan.default".into();
    d.ports.push(p);
    let out = plan(&d);
    assert!(!out.switches.contains_key("macvlan"));
    assert!(
        !out.routers["ovn-cluster"]
            .ports
            .contains_key("ovn-cluster-macvlan")
    );
    assert!(matches!(
        out.issues.as_slice(),
        [PlanIssue::UnknownSubnet { .. }]
    ));
}

#[test]
fn excludes_in_other_config_are_ipv4_ranges() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "team-a",
        DEFAULT_ROUTER,
        Some("10.66.0.0/16".parse().unwrap()),
        None,
    );
    s.exclude = vec![
        (ip("10.66.0.1"), ip("10.66.0.10")),
        (ip("10.66.255.254"), ip("10.66.255.254")),
    ];
    d.subnets.push(s);
    let out = plan(&d);
    assert_eq!(
        out.switches["team-a"].other_config["exclude_ips"],
        "10.66.0.1..10.66.0.10 10.66.255.254"
    );
}

#[test]
fn private_subnet_gets_kube_ovn_acls() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "priv",
        DEFAULT_ROUTER,
        Some("10.77.0.0/16".parse().unwrap()),
        Some("fd00:10:77::/64".parse().unwrap()),
    );
    s.private = true;
    s.allow_subnets = vec!["10.66.0.0/16".parse().unwrap()];
    d.subnets.push(s);
    let out = plan(&d);
    let acls: Vec<_> = out.switches["priv"].acls.values().collect();
    let find = |prio: i64, m: &str| {
        acls.iter()
            .find(|a| a.priority == prio && a.match_ == m)
            .unwrap_or_else(|| panic!("no ACL {prio} {m} in {acls:#?}"))
    };
    let drop = find(1000, "ip");
    assert_eq!(drop.action, "drop");
    assert!(drop.log);
    assert_eq!(drop.direction, "to-lport");
    assert_eq!(
        find(1001, "ip4.src == 10.77.0.0/16 && ip4.dst == 10.77.0.0/16").action,
        "allow-related"
    );
    find(
        1001,
        "ip6.src == fd00:10:77::/64 && ip6.dst == fd00:10:77::/64",
    );
    find(3000, "ip4.src == 100.64.0.0/16");
    find(
        1001,
        "(ip4.src == 10.77.0.0/16 && ip4.dst == 10.66.0.0/16) || (ip4.src == 10.66.0.0/16 && ip4.dst == 10.77.0.0/16)",
    );
    // no IPv6 allow rule for an IPv4 allowSubnet, no IPv6 join rule without an IPv6 join
    assert_eq!(acls.len(), 5);
    // NetworkPolicy's tier (as in Kube-OVN): a policy's 2000 drop outranks the 1001
    // same-subnet allow instead of running after it
    assert!(acls.iter().all(|a| a.tier == 2), "{acls:#?}");
    assert_eq!(SUBNET_ACL_TIER, NETPOL_TIER);
    // a public subnet has none
    assert!(out.switches["ovn-default"].acls.is_empty());
}

#[test]
fn subnet_spec_acls_are_planned() {
    let mut d = base();
    let ovn_default = d.subnets.iter_mut().find(|s| s.name == "ovn-default");
    ovn_default.unwrap().acls.push(AclIntent {
        direction: "from-lport".into(),
        priority: 1200,
        match_: "ip4.dst == 8.8.8.8".into(),
        action: "drop".into(),
    });
    let out = plan(&d);
    let acl = out.switches["ovn-default"].acls.values().next().unwrap();
    assert_eq!(acl.direction, "from-lport");
    assert_eq!(acl.action, "drop");
    assert_eq!(acl.tier, 2);
}

#[test]
fn custom_vpc_has_its_own_router_routes_and_policies() {
    let mut d = base();
    d.vpcs.push(VpcIntent {
        name: "vpc-blue".into(),
        static_routes: vec![RouteIntent {
            ip_prefix: "0.0.0.0/0".into(),
            nexthop: "10.66.0.254".into(),
            policy: RoutePolicy::DstIp,
            route_table: String::new(),
        }],
        policy_routes: vec![PolicyIntent {
            priority: 31000,
            match_: "ip4.src == 10.66.0.0/24".into(),
            action: "reroute".into(),
            nexthops: vec!["10.66.0.253".into()],
        }],
    });
    // same CIDR as a subnet of the default VPC: allowed, VPCs are isolated
    d.subnets.push(SubnetIntent::overlay(
        "team-a",
        DEFAULT_ROUTER,
        Some("10.66.0.0/16".parse().unwrap()),
        None,
    ));
    d.subnets.push(SubnetIntent::overlay(
        "blue-net",
        "vpc-blue",
        Some("10.66.0.0/24".parse().unwrap()),
        None,
    ));
    d.ports
        .push(pod("b", "blue", "blue-net", &["10.66.0.5"], 1));
    d.ports
        .push(pod("a", "team-a", "team-a", &["10.66.0.5"], 2));
    let out = plan(&d);
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    let blue = &out.routers["vpc-blue"];
    assert!(blue.ports.contains_key("vpc-blue-blue-net"));
    assert!(
        !out.routers["ovn-cluster"]
            .ports
            .contains_key("ovn-cluster-blue-net")
    );
    assert_eq!(blue.static_routes.len(), 1);
    let policy = blue.policies.values().next().unwrap();
    assert_eq!(policy.nexthops, vec!["10.66.0.253".to_string()]);
    assert_eq!(
        out.switches["blue-net"].ports["blue-net-vpc-blue"].options["router-port"],
        "vpc-blue-blue-net"
    );
    // the join default route exists only in the default VPC
    assert!(
        !blue
            .static_routes
            .values()
            .any(|r| r.nexthop == "100.64.0.1")
    );
}

#[test]
fn nodes_get_join_ports_and_route_policies() {
    let mut d = base();
    d.nodes.push(NodeIntent {
        name: "node1".into(),
        join_ips: vec![ip("100.64.0.2")],
        join_mac: Some(mac(0x42)),
        internal_ips: vec![ip("192.168.1.10")],
    });
    d.nodes.push(NodeIntent {
        name: "node2".into(),
        join_ips: vec![],
        join_mac: None,
        internal_ips: vec![],
    });
    let out = plan(&d);
    let port = &out.switches["join"].ports["node-node1"];
    assert_eq!(
        port.addresses,
        vec!["0e:00:00:00:00:42 100.64.0.2".to_string()]
    );
    assert_eq!(port.external_ids["node"], "node1");
    let policy = out.routers["ovn-cluster"]
        .policies
        .values()
        .find(|p| p.priority == 30000)
        .expect("node policy");
    assert_eq!(policy.match_, "ip4.dst == 192.168.1.10");
    assert_eq!(policy.action, "reroute");
    assert_eq!(policy.nexthops, vec!["100.64.0.2".to_string()]);
    assert_eq!(
        out.issues,
        vec![PlanIssue::NodeWithoutJoinAddress {
            node: "node2".into()
        }]
    );
}

#[test]
fn underlay_subnet_has_localnet_and_no_router_unless_logical_gateway() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "vlan10",
        DEFAULT_ROUTER,
        Some("192.168.10.0/24".parse().unwrap()),
        None,
    );
    s.vlan = Some(VlanIntent {
        tag: 10,
        provider_network: "net1".into(),
    });
    d.subnets.push(s.clone());
    let out = plan(&d);
    let ln = &out.switches["vlan10"].ports["localnet.vlan10"];
    assert_eq!(ln.type_, "localnet");
    assert_eq!(ln.tag, Some(10));
    assert_eq!(ln.options["network_name"], "net1");
    assert!(
        !out.routers["ovn-cluster"]
            .ports
            .contains_key("ovn-cluster-vlan10")
    );

    s.logical_gateway = true;
    d.subnets.pop();
    d.subnets.push(s);
    let out = plan(&d);
    assert!(
        out.routers["ovn-cluster"]
            .ports
            .contains_key("ovn-cluster-vlan10")
    );
}

#[test]
fn conflicting_inputs_become_issues_not_rows() {
    let mut d = base();
    d.ports
        .push(pod("a", "ns", "ovn-default", &["10.16.0.5"], 1));
    d.ports
        .push(pod("b", "ns", "ovn-default", &["10.16.0.5"], 2)); // same IP
    d.ports
        .push(pod("c", "ns", "ovn-default", &["10.16.0.6"], 1)); // same MAC
    d.ports
        .push(pod("d", "ns", "ovn-default", &["10.17.0.6"], 4)); // outside
    d.ports.push(pod("e", "ns", "nope", &["10.16.0.9"], 5)); // unknown subnet
    d.ports
        .push(pod("f", "ns", "ovn-default", &["10.16.0.1"], 6)); // gateway
    d.ports.push(pod("g", "ns", "ovn-default", &[], 7)); // no address
    d.subnets.push(SubnetIntent::overlay(
        "orphan",
        "no-such-vpc",
        Some("10.99.0.0/16".parse().unwrap()),
        None,
    ));
    let out = plan(&d);
    assert!(out.find_port("a.ns").is_some());
    for gone in ["b.ns", "c.ns", "d.ns", "e.ns", "f.ns", "g.ns"] {
        assert!(out.find_port(gone).is_none(), "{gone} planned");
    }
    assert!(!out.switches.contains_key("orphan"));
    let kinds: Vec<String> = out
        .issues
        .iter()
        .map(|i| {
            format!("{i:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in [
        "AddressTaken",
        "MacTaken",
        "AddressOutsideSubnet",
        "UnknownSubnet",
        "PortWithoutAddress",
        "UnknownVpc",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {:?}", out.issues);
    }
}

#[test]
fn every_row_is_marked_with_a_unique_key() {
    let mut d = base();
    let mut s = SubnetIntent::overlay(
        "priv",
        DEFAULT_ROUTER,
        Some("10.77.0.0/16".parse().unwrap()),
        None,
    );
    s.private = true;
    d.subnets.push(s);
    d.ports.push(pod("a", "ns", "priv", &["10.77.0.5"], 1));
    d.nodes.push(NodeIntent {
        name: "n".into(),
        join_ips: vec![ip("100.64.0.2")],
        join_mac: Some(mac(9)),
        internal_ips: vec![ip("192.168.0.2")],
    });
    let out = plan(&d);
    let mut keys = std::collections::BTreeSet::new();
    let mut check = |ids: &std::collections::BTreeMap<String, String>| {
        assert_eq!(ids[OWNER_KEY], OWNER_VALUE);
        assert!(
            keys.insert(ids[ROW_KEY].clone()),
            "duplicate {}",
            ids[ROW_KEY]
        );
    };
    for s in out.switches.values() {
        check(&s.external_ids);
        s.ports.values().for_each(|p| check(&p.external_ids));
        s.acls.values().for_each(|a| check(&a.external_ids));
    }
    for r in out.routers.values() {
        check(&r.external_ids);
        r.ports.values().for_each(|p| check(&p.external_ids));
        r.static_routes
            .values()
            .for_each(|p| check(&p.external_ids));
        r.policies.values().for_each(|p| check(&p.external_ids));
    }
    // Load_Balancer_Group has no external_ids: its reserved name is its mark and key.
    let mut groups = 0;
    for g in out.lb_groups.values() {
        assert!(g.name.starts_with(ferrovn_api::names::LB_GROUP_PREFIX));
        groups += 1;
        g.load_balancers
            .values()
            .for_each(|l| check(&l.external_ids));
    }
    assert_eq!(groups, 1);
    assert_eq!(keys.len() + groups, out.row_count());
}

#[test]
fn distributed_gateway_is_one_reroute_per_node_and_one_allow_per_subnet() {
    let mut d = base();
    let mut central = SubnetIntent::overlay(
        "central",
        DEFAULT_ROUTER,
        Some("10.20.0.0/16".parse().unwrap()),
        None,
    );
    central.centralized_gateway = true;
    central.gateway_node = "node2".into();
    d.subnets.push(SubnetIntent::overlay(
        "team-a",
        DEFAULT_ROUTER,
        Some("10.66.0.0/16".parse().unwrap()),
        None,
    ));
    d.subnets.push(central);
    for (n, j) in [("node1", "100.64.0.2"), ("node2", "100.64.0.3")] {
        d.nodes.push(NodeIntent {
            name: n.into(),
            join_ips: vec![ip(j)],
            join_mac: Some(mac(if n == "node1" { 0x42 } else { 0x43 })),
            internal_ips: vec![],
        });
    }
    d.ports
        .push(pod("a", "default", "ovn-default", &["10.16.0.5"], 1));
    d.ports
        .push(pod("b", "team-a", "team-a", &["10.66.0.5"], 2));
    d.ports
        .push(pod("c", "default", "central", &["10.20.0.5"], 3));
    let mut other = pod("d", "default", "ovn-default", &["10.16.0.6"], 4);
    other.node = "node2".into();
    d.ports.push(other);
    let out = plan(&d);
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    let policies = &out.routers[DEFAULT_ROUTER].policies;
    let mut allows: Vec<&str> = policies
        .values()
        .filter(|p| p.priority == 31000)
        .map(|p| p.match_.as_str())
        .collect();
    allows.sort();
    assert_eq!(
        allows,
        [
            "ip4.dst == 10.16.0.0/16",
            "ip4.dst == 10.20.0.0/16",
            "ip4.dst == 10.66.0.0/16",
            "ip4.dst == 100.64.0.0/16"
        ]
    );
    let mut reroutes: Vec<(String, Vec<String>)> = policies
        .values()
        .filter(|p| p.priority == 29000)
        .map(|p| (p.match_.clone(), p.nexthops.clone()))
        .collect();
    reroutes.sort();
    // node1's pods of every distributed subnet in one row; the centralized subnet's pod in none
    // of them: its whole CIDR goes to its gateway node
    assert_eq!(
        reroutes,
        [
            (
                "ip4.src == 10.20.0.0/16".to_string(),
                vec!["100.64.0.3".to_string()]
            ),
            (
                "ip4.src == {10.16.0.5, 10.66.0.5}".to_string(),
                vec!["100.64.0.2".to_string()]
            ),
            (
                "ip4.src == {10.16.0.6}".to_string(),
                vec!["100.64.0.3".to_string()]
            ),
        ]
    );
    // the key does not carry the match: a new pod updates the row, it does not replace it
    let key = policies
        .iter()
        .find(|(_, p)| p.nexthops == ["100.64.0.2"] && p.priority == 29000)
        .map(|(k, _)| k.clone())
        .unwrap();
    assert_eq!(key, "lrp-policy/ovn-cluster/29000/gateway/node1/ip4");
    d.ports
        .push(pod("e", "default", "ovn-default", &["10.16.0.7"], 5));
    let again = plan(&d);
    assert_eq!(
        again.routers[DEFAULT_ROUTER].policies[&key].match_,
        "ip4.src == {10.16.0.5, 10.16.0.7, 10.66.0.5}"
    );
}
