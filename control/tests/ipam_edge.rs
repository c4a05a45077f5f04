//! Edge cases of the IPAM, each as a user would meet it.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use ferrovn_control::ipam::{
    AddrRange, AllocationRequest, Conflict, Counts, ExistingAllocation, Family, Forbidden,
    IpPoolSpec, Ipam, IpamError, MacAddr, OwnerKey, RecordSource, SubnetSpec,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn owner(name: &str) -> OwnerKey {
    OwnerKey::new("default", name, "ovn")
}

fn v4_subnet(name: &str, cidr: &str, gw: Option<&str>) -> SubnetSpec {
    let mut s = SubnetSpec::new(name, Some(cidr.parse().unwrap()), None);
    s.v4_gateway = gw.map(|g| g.parse().unwrap());
    s
}

fn v6_subnet(name: &str, cidr: &str, gw: Option<&str>) -> SubnetSpec {
    let mut s = SubnetSpec::new(name, None, Some(cidr.parse().unwrap()));
    s.v6_gateway = gw.map(|g| g.parse().unwrap());
    s
}

fn dual(name: &str, v4: &str, v6: &str) -> SubnetSpec {
    let mut s = SubnetSpec::new(name, Some(v4.parse().unwrap()), Some(v6.parse().unwrap()));
    s.v4_gateway = Some(
        v4.parse::<ipnet::Ipv4Net>()
            .unwrap()
            .hosts()
            .next()
            .unwrap(),
    );
    s.v6_gateway = Some((u128::from(v6.parse::<ipnet::Ipv6Net>().unwrap().network()) + 1).into());
    s
}

fn ipam_with(spec: SubnetSpec) -> Ipam {
    let mut ipam = Ipam::new(1);
    ipam.upsert_subnet(spec).unwrap();
    ipam
}

fn alloc(ipam: &mut Ipam, name: &str, subnet: &str) -> Result<Vec<IpAddr>, IpamError> {
    ipam.allocate(&AllocationRequest::dynamic(owner(name), subnet))
        .map(|a| a.ips())
}

fn alloc_static(
    ipam: &mut Ipam,
    name: &str,
    subnet: &str,
    ips: &[&str],
) -> Result<Vec<IpAddr>, IpamError> {
    let mut req = AllocationRequest::dynamic(owner(name), subnet);
    req.static_ips = ips.iter().map(|s| ip(s)).collect();
    ipam.allocate(&req).map(|a| a.ips())
}

/// Allocates until exhaustion; returns everything handed out, in order.
fn drain(ipam: &mut Ipam, subnet: &str) -> (Vec<Vec<IpAddr>>, IpamError) {
    let mut out = Vec::new();
    for i in 0.. {
        match alloc(ipam, &format!("drain-{i}"), subnet) {
            Ok(ips) => out.push(ips),
            Err(e) => return (out, e),
        }
    }
    unreachable!()
}

#[test]
fn first_free_in_order_skips_network_and_gateway() {
    let mut ipam = ipam_with(v4_subnet("ovn-default", "10.16.0.0/16", Some("10.16.0.1")));
    assert_eq!(
        alloc(&mut ipam, "a", "ovn-default").unwrap(),
        vec![ip("10.16.0.2")]
    );
    assert_eq!(
        alloc(&mut ipam, "b", "ovn-default").unwrap(),
        vec![ip("10.16.0.3")]
    );
    ipam.release(&owner("a")).unwrap();
    // The lowest free address is reused first.
    assert_eq!(
        alloc(&mut ipam, "c", "ovn-default").unwrap(),
        vec![ip("10.16.0.2")]
    );
}

#[test]
fn slash30_has_one_address_besides_gateway() {
    let mut ipam = ipam_with(v4_subnet("p2p", "10.0.0.0/30", Some("10.0.0.1")));
    let (got, err) = drain(&mut ipam, "p2p");
    assert_eq!(got, vec![vec![ip("10.0.0.2")]]);
    assert_eq!(
        err,
        IpamError::SubnetExhausted {
            subnet: "p2p".into(),
            family: Family::V4
        }
    );
    assert_eq!(
        err.to_string(),
        "subnet p2p exhausted: no free IPv4 address"
    );
}

#[test]
fn slash31_uses_both_addresses_minus_gateway() {
    let mut ipam = ipam_with(v4_subnet("l", "10.0.0.0/31", None));
    let (got, _) = drain(&mut ipam, "l");
    assert_eq!(got, vec![vec![ip("10.0.0.0")], vec![ip("10.0.0.1")]]);

    let mut ipam = ipam_with(v4_subnet("l", "10.0.0.0/31", Some("10.0.0.0")));
    let (got, _) = drain(&mut ipam, "l");
    assert_eq!(got, vec![vec![ip("10.0.0.1")]]);
}

#[test]
fn slash32_and_slash128_hold_one_address() {
    let mut ipam = ipam_with(v4_subnet("one", "10.0.0.7/32", None));
    let (got, _) = drain(&mut ipam, "one");
    assert_eq!(got, vec![vec![ip("10.0.0.7")]]);

    let mut ipam = ipam_with(v6_subnet("one6", "fd00::7/128", None));
    let (got, err) = drain(&mut ipam, "one6");
    assert_eq!(got, vec![vec![ip("fd00::7")]]);
    assert!(matches!(
        err,
        IpamError::SubnetExhausted {
            family: Family::V6,
            ..
        }
    ));

    // With the only address as gateway, nothing is left.
    let mut ipam = ipam_with(v4_subnet("gw", "10.0.0.7/32", Some("10.0.0.7")));
    assert!(matches!(
        alloc(&mut ipam, "x", "gw"),
        Err(IpamError::SubnetExhausted { .. })
    ));
}

#[test]
fn slash127_uses_both_and_slash126_skips_network_only() {
    let mut ipam = ipam_with(v6_subnet("l", "fd00::/127", None));
    let (got, _) = drain(&mut ipam, "l");
    assert_eq!(got, vec![vec![ip("fd00::")], vec![ip("fd00::1")]]);

    // IPv6 has no broadcast: the last address is usable.
    let mut ipam = ipam_with(v6_subnet("s", "fd00::/126", Some("fd00::1")));
    let (got, _) = drain(&mut ipam, "s");
    assert_eq!(got, vec![vec![ip("fd00::2")], vec![ip("fd00::3")]]);
}

#[test]
fn gateway_at_the_end_of_the_range() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/29", Some("10.0.0.6")));
    let (got, _) = drain(&mut ipam, "s");
    let got: Vec<IpAddr> = got.into_iter().flatten().collect();
    assert_eq!(
        got,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
            .map(ip)
            .to_vec()
    );
}

#[test]
fn excluding_everything_exhausts_immediately() {
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.0..10.0.0.255".parse().unwrap()];
    let mut ipam = ipam_with(spec);
    assert_eq!(
        ipam.counts("s").unwrap(),
        Counts {
            v4_available: 0,
            ..Counts::default()
        }
    );
    assert!(matches!(
        alloc(&mut ipam, "x", "s"),
        Err(IpamError::SubnetExhausted { .. })
    ));
}

#[test]
fn excluded_ranges_and_singles_are_skipped() {
    let mut spec = v4_subnet("s", "10.0.0.0/28", Some("10.0.0.1"));
    spec.exclude = vec![
        "10.0.0.2..10.0.0.4".parse().unwrap(),
        "10.0.0.6".parse().unwrap(),
        // Outside the CIDR: ignored.
        "192.168.0.0/24".parse().unwrap(),
    ];
    let mut ipam = ipam_with(spec);
    assert_eq!(ipam.counts("s").unwrap().v4_available, 14 - 1 - 4);
    let (got, _) = drain(&mut ipam, "s");
    let got: Vec<IpAddr> = got.into_iter().flatten().collect();
    assert_eq!(got[0], ip("10.0.0.5"));
    assert_eq!(got[1], ip("10.0.0.7"));
    assert_eq!(got.len(), 9);
}

#[test]
fn huge_subnets_cost_nothing_up_front() {
    let mut ipam = Ipam::new(1);
    ipam.upsert_subnet(v4_subnet("big4", "10.0.0.0/8", Some("10.0.0.1")))
        .unwrap();
    ipam.upsert_subnet(v6_subnet("big6", "fd00::/64", Some("fd00::1")))
        .unwrap();
    let mut whole = SubnetSpec::new("all6", None, Some("::/0".parse().unwrap()));
    whole.exclude = vec!["::/1".parse().unwrap()];
    ipam.upsert_subnet(whole).unwrap();
    let c = ipam.counts("big4").unwrap();
    assert_eq!(c.v4_available, (1 << 24) - 3);
    let c = ipam.counts("big6").unwrap();
    assert_eq!(c.v6_available, (1u128 << 64) - 2);
    assert_eq!(alloc(&mut ipam, "a", "big6").unwrap(), vec![ip("fd00::2")]);
    assert_eq!(alloc(&mut ipam, "b", "all6").unwrap(), vec![ip("8000::")]);
    assert_eq!(
        ipam.counts("all6").unwrap().v6_available,
        (1u128 << 127) - 1
    );
}

#[test]
fn static_ip_errors_say_which_problem() {
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.100..10.0.0.110".parse().unwrap()];
    let mut ipam = ipam_with(spec);
    alloc_static(&mut ipam, "holder", "s", &["10.0.0.50"]).unwrap();

    let err = alloc_static(&mut ipam, "x", "s", &["10.0.0.50"]).unwrap_err();
    assert_eq!(
        err,
        IpamError::StaticIpTaken {
            subnet: "s".into(),
            ip: ip("10.0.0.50"),
            holder: owner("holder"),
        }
    );
    assert!(err.to_string().contains("already held by default/holder"));

    let err = alloc_static(&mut ipam, "x", "s", &["10.0.1.5"]).unwrap_err();
    assert!(
        matches!(err, IpamError::StaticIpOutsideSubnet { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("outside subnet s (10.0.0.0/24)"));

    for (addr, why) in [
        ("10.0.0.0", Forbidden::NetworkAddress),
        ("10.0.0.255", Forbidden::Broadcast),
        ("10.0.0.1", Forbidden::Gateway),
    ] {
        let err = alloc_static(&mut ipam, "x", "s", &[addr]).unwrap_err();
        assert_eq!(
            err,
            IpamError::StaticIpForbidden {
                subnet: "s".into(),
                ip: ip(addr),
                why
            }
        );
    }

    let err = alloc_static(&mut ipam, "x", "s", &["fd00::5"]).unwrap_err();
    assert!(matches!(err, IpamError::StaticIpFamilyNotInSubnet { .. }));

    // Nothing was taken by the failed attempts.
    assert!(ipam.allocation(&owner("x")).is_none());
    assert_eq!(ipam.counts("s").unwrap().v4_using, 1);
}

#[test]
fn static_ip_in_exclude_ips_follows_the_subnet_policy() {
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.100..10.0.0.110".parse().unwrap()];
    let mut ipam = ipam_with(spec.clone());
    // Kube-OVN's behaviour: excludeIps reserves addresses for static use.
    assert_eq!(
        alloc_static(&mut ipam, "fixed", "s", &["10.0.0.105"]).unwrap(),
        vec![ip("10.0.0.105")]
    );
    assert_eq!(ipam.counts("s").unwrap().v4_using, 1);
    assert_eq!(ipam.counts("s").unwrap().v4_available, 253 - 11);
    // Released, it goes back to being excluded, not free.
    ipam.release(&owner("fixed")).unwrap();
    assert_eq!(ipam.counts("s").unwrap().v4_available, 253 - 11);

    spec.allow_static_in_excluded = false;
    let mut ipam = ipam_with(spec);
    let err = alloc_static(&mut ipam, "fixed", "s", &["10.0.0.105"]).unwrap_err();
    assert_eq!(
        err,
        IpamError::StaticIpForbidden {
            subnet: "s".into(),
            ip: ip("10.0.0.105"),
            why: Forbidden::Excluded
        }
    );
    assert!(err.to_string().contains("it is in excludeIps"));
}

#[test]
fn static_ip_is_not_handed_out_dynamically_afterwards() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/29", Some("10.0.0.1")));
    alloc_static(&mut ipam, "fixed", "s", &["10.0.0.2"]).unwrap();
    assert_eq!(alloc(&mut ipam, "a", "s").unwrap(), vec![ip("10.0.0.3")]);
}

#[test]
fn dual_stack_gets_one_address_per_family() {
    let mut ipam = ipam_with(dual("d", "10.0.0.0/24", "fd00::/120"));
    let a = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "d"))
        .unwrap();
    assert_eq!(a.ips(), vec![ip("10.0.0.2"), ip("fd00::2")]);
    // A v4-only static still gets a dynamic v6.
    assert_eq!(
        alloc_static(&mut ipam, "b", "d", &["10.0.0.9"]).unwrap(),
        vec![ip("10.0.0.9"), ip("fd00::3")]
    );
    let err = alloc_static(&mut ipam, "c", "d", &["10.0.0.10", "10.0.0.11"]).unwrap_err();
    assert!(matches!(err, IpamError::StaticIpsSameFamily { .. }));
}

#[test]
fn dual_stack_partially_full_rolls_back_the_other_family() {
    // v6 has 2 usable addresses, v4 many.
    let mut spec = dual("d", "10.0.0.0/24", "fd00::/126");
    spec.v6_gateway = None;
    let mut ipam = ipam_with(spec);
    let before_v4 = ipam.counts("d").unwrap().v4_available;
    alloc(&mut ipam, "a", "d").unwrap();
    alloc(&mut ipam, "b", "d").unwrap();
    alloc(&mut ipam, "c", "d").unwrap();
    let err = alloc(&mut ipam, "d", "d").unwrap_err();
    assert_eq!(
        err,
        IpamError::SubnetExhausted {
            subnet: "d".into(),
            family: Family::V6
        }
    );
    let c = ipam.counts("d").unwrap();
    assert_eq!(
        c.v4_available,
        before_v4 - 3,
        "the v4 address was given back"
    );
    assert_eq!((c.v4_using, c.v6_using, c.v6_available), (3, 3, 0));
    // The next allocation after a release reuses the lowest v4 again.
    ipam.release(&owner("b")).unwrap();
    assert_eq!(
        alloc(&mut ipam, "e", "d").unwrap(),
        vec![ip("10.0.0.3"), ip("fd00::2")]
    );
}

#[test]
fn same_owner_gets_the_same_address_back() {
    let mut ipam = ipam_with(dual("d", "10.0.0.0/24", "fd00::/120"));
    let first = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "d"))
        .unwrap();
    alloc(&mut ipam, "b", "d").unwrap();
    let again = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "d"))
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(ipam.counts("d").unwrap().v4_using, 2);
    // Another interface of the same pod is another owner.
    let nic2 = OwnerKey::new("default", "a", "net1.default");
    let other = ipam
        .allocate(&AllocationRequest::dynamic(nic2, "d"))
        .unwrap();
    assert_ne!(other.ips(), first.ips());
    assert_ne!(other.mac, first.mac);
    assert_eq!(ipam.release_pod("default", "a").len(), 2);
}

#[test]
fn changing_the_static_ip_moves_the_owner_atomically() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    let a = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "s"))
        .unwrap();
    alloc_static(&mut ipam, "b", "s", &["10.0.0.50"]).unwrap();
    // Asking for a taken address fails and leaves the old allocation in place.
    assert!(alloc_static(&mut ipam, "a", "s", &["10.0.0.50"]).is_err());
    assert_eq!(ipam.allocation(&owner("a")), Some(&a));
    // A free one moves it, keeping nothing of the old address.
    let moved = alloc_static(&mut ipam, "a", "s", &["10.0.0.60"]).unwrap();
    assert_eq!(moved, vec![ip("10.0.0.60")]);
    assert_eq!(ipam.holder("s", ip("10.0.0.2")), None);
    assert_eq!(ipam.counts("s").unwrap().v4_using, 2);
}

#[test]
fn static_and_generated_macs_never_collide() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    let a = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "s"))
        .unwrap();
    assert_eq!(a.mac.0[0], 0x0e);
    let mut req = AllocationRequest::dynamic(owner("b"), "s");
    req.static_mac = Some(a.mac);
    assert_eq!(
        ipam.allocate(&req).unwrap_err(),
        IpamError::MacTaken {
            mac: a.mac,
            holder: owner("a")
        }
    );
    req.static_mac = Some("01:00:5e:00:00:01".parse().unwrap());
    assert!(matches!(
        ipam.allocate(&req),
        Err(IpamError::MacNotUnicast { .. })
    ));
    // A static MAC equal to the MAC the generator would give "c" first: "c" gets another.
    let c_first = ferrovn_control::ipam::candidate_mac(1, &owner("c"), 0);
    req.static_mac = Some(c_first);
    ipam.allocate(&req).unwrap();
    let c = ipam
        .allocate(&AllocationRequest::dynamic(owner("c"), "s"))
        .unwrap();
    assert_ne!(c.mac, c_first);
    // Re-allocation keeps the MAC; release frees it for others.
    let c_again = ipam
        .allocate(&AllocationRequest::dynamic(owner("c"), "s"))
        .unwrap();
    assert_eq!(c.mac, c_again.mac);
    ipam.release(&owner("b")).unwrap();
    assert_eq!(ipam.mac_holder(c_first), None);
}

#[test]
fn mac_syntax() {
    let m: MacAddr = "0A-58-0a-10-00-05".parse().unwrap();
    assert_eq!(m.to_string(), "0a:58:0a:10:00:05");
    for bad in [
        "",
        "0a:58:0a:10:00",
        "0a:58:0a:10:00:05:06",
        "0a:58:0a:10:00:g5",
        "a:58:0a:10:00:05",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
}

#[test]
fn range_syntax() {
    assert_eq!(
        "10.0.0.1..10.0.0.9".parse::<AddrRange>().unwrap(),
        AddrRange::new(ip("10.0.0.1"), ip("10.0.0.9"))
    );
    assert_eq!(
        "10.0.0.8/30".parse::<AddrRange>().unwrap(),
        AddrRange::new(ip("10.0.0.8"), ip("10.0.0.11"))
    );
    assert!("10.0.0.1..".parse::<AddrRange>().is_err());
    let mut spec = v4_subnet("s", "10.0.0.0/24", None);
    spec.exclude = vec![AddrRange::new(ip("10.0.0.9"), ip("10.0.0.1"))];
    assert!(Ipam::new(0).upsert_subnet(spec.clone()).is_err());
    spec.exclude = vec![AddrRange::new(ip("10.0.0.1"), ip("fd00::1"))];
    let err = Ipam::new(0).upsert_subnet(spec).unwrap_err();
    assert!(
        err.to_string().contains("different address families"),
        "{err}"
    );
}

#[test]
fn subnet_spec_errors() {
    let mut ipam = Ipam::new(0);
    let err = ipam
        .upsert_subnet(SubnetSpec::new("empty", None, None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet empty: it has neither an IPv4 nor an IPv6 CIDR"
    );
    let err = ipam
        .upsert_subnet(v4_subnet("s", "10.0.0.0/24", Some("10.0.1.1")))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("gateway 10.0.1.1 is outside its CIDR 10.0.0.0/24")
    );
    assert!(matches!(
        alloc(&mut ipam, "a", "nope"),
        Err(IpamError::UnknownSubnet { .. })
    ));
}

fn pool(name: &str, subnet: &str, ranges: &[&str], namespaces: &[&str]) -> IpPoolSpec {
    IpPoolSpec {
        name: name.into(),
        subnet: subnet.into(),
        addresses: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
    }
}

#[test]
fn pools_draw_only_from_their_addresses_and_others_avoid_them() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    ipam.upsert_pool(pool("p", "s", &["10.0.0.2..10.0.0.3"], &["team"]))
        .unwrap();
    // Non-pool pods skip the pool's addresses.
    assert_eq!(alloc(&mut ipam, "a", "s").unwrap(), vec![ip("10.0.0.4")]);
    // Pods of the bound namespace draw from the pool by default.
    let team = |n: &str| AllocationRequest::dynamic(OwnerKey::new("team", n, "ovn"), "s");
    assert_eq!(
        ipam.allocate(&team("t1")).unwrap().ips(),
        vec![ip("10.0.0.2")]
    );
    assert_eq!(
        ipam.allocate(&team("t2")).unwrap().ips(),
        vec![ip("10.0.0.3")]
    );
    let err = ipam.allocate(&team("t3")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPPool p of subnet s exhausted: no free IPv4 address"
    );
    // Another namespace may not ask for a bound pool.
    let mut req = AllocationRequest::dynamic(owner("x"), "s");
    req.pool = Some("p".into());
    assert!(matches!(
        ipam.allocate(&req),
        Err(IpamError::PoolNotForNamespace { .. })
    ));
    req.pool = Some("nope".into());
    assert!(matches!(
        ipam.allocate(&req),
        Err(IpamError::UnknownPool { .. })
    ));
    let pc = ipam.pool_counts("p").unwrap();
    assert_eq!((pc.v4_available, pc.v4_using), (0, 2));
    let sc = ipam.counts("s").unwrap();
    assert_eq!((sc.v4_available, sc.v4_using), (253 - 3, 3));
    // Removing the pool returns nothing but its free addresses; holders keep theirs.
    ipam.release(&OwnerKey::new("team", "t1", "ovn")).unwrap();
    ipam.remove_pool("p").unwrap();
    assert_eq!(alloc(&mut ipam, "b", "s").unwrap(), vec![ip("10.0.0.2")]);
    assert_eq!(ipam.holder("s", ip("10.0.0.3")).unwrap().name, "t2");
}

#[test]
fn pool_requested_by_name_and_re_allocation_into_a_pool() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    alloc(&mut ipam, "a", "s").unwrap();
    ipam.upsert_pool(pool("open", "s", &["10.0.0.200/29"], &[]))
        .unwrap();
    let mut req = AllocationRequest::dynamic(owner("a"), "s");
    req.pool = Some("open".into());
    // "a" held 10.0.0.2 outside the pool: asking for the pool moves it into the pool.
    assert_eq!(ipam.allocate(&req).unwrap().ips(), vec![ip("10.0.0.200")]);
    assert_eq!(ipam.holder("s", ip("10.0.0.2")), None);
    // Asked again, it stays.
    assert_eq!(ipam.allocate(&req).unwrap().ips(), vec![ip("10.0.0.200")]);
}

#[test]
fn pool_validation() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    ipam.upsert_pool(pool("a", "s", &["10.0.0.10..10.0.0.20"], &[]))
        .unwrap();
    let err = ipam
        .upsert_pool(pool("b", "s", &["10.0.0.20..10.0.0.30"], &[]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPPool b overlaps IPPool a of subnet s (at 10.0.0.20)"
    );
    let err = ipam
        .upsert_pool(pool("c", "s", &["10.0.1.0/28"], &[]))
        .unwrap_err();
    assert!(matches!(err, IpamError::PoolOutsideSubnet { .. }));
    let err = ipam
        .upsert_pool(pool("a", "other", &["10.0.0.10"], &[]))
        .unwrap_err();
    assert!(matches!(err, IpamError::PoolSubnetChanged { .. }));
    assert_eq!(
        ipam.remove_pool("nope").unwrap_err().to_string(),
        "IPPool nope does not exist"
    );
    assert_eq!(
        ipam.forbidden("s", ip("10.0.0.1")),
        Ok(Some(Forbidden::Gateway))
    );
    assert_eq!(ipam.forbidden("s", ip("10.0.0.10")), Ok(None));
    assert!(ipam.forbidden("nope", ip("10.0.0.10")).is_err());
    // Updating a pool in place (shrinking it) is fine.
    ipam.upsert_pool(pool("a", "s", &["10.0.0.10..10.0.0.12"], &[]))
        .unwrap();
    assert_eq!(ipam.pool_counts("a").unwrap().v4_available, 3);
}

#[test]
fn resize_and_exclude_changes_keep_holders_and_report_them() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    for n in ["a", "b", "c"] {
        alloc(&mut ipam, n, "s").unwrap(); // .2 .3 .4
    }
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.3".parse().unwrap()];
    let report = ipam.upsert_subnet(spec).unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].owner, owner("b"));
    assert_eq!(report[0].why, Forbidden::Excluded);
    let c = ipam.counts("s").unwrap();
    // .3 is both held and excluded: counted once, as using.
    assert_eq!((c.v4_using, c.v4_available), (3, 253 - 3));
    // It stays with its holder, also when asked again.
    assert_eq!(alloc(&mut ipam, "b", "s").unwrap(), vec![ip("10.0.0.3")]);
    // Released, it is not handed out again.
    ipam.release(&owner("b")).unwrap();
    assert_eq!(alloc(&mut ipam, "d", "s").unwrap(), vec![ip("10.0.0.5")]);

    // Shrinking to a /30 leaves .4 and .5 outside; growing back frees them again.
    let report = ipam
        .upsert_subnet(v4_subnet("s", "10.0.0.0/30", Some("10.0.0.1")))
        .unwrap();
    let why: Vec<_> = report.iter().map(|m| (m.ip, m.why)).collect();
    assert_eq!(
        why,
        vec![
            (ip("10.0.0.4"), Forbidden::OutsideCidr),
            (ip("10.0.0.5"), Forbidden::OutsideCidr)
        ]
    );
    assert_eq!(ipam.counts("s").unwrap().v4_available, 0);
    assert!(ipam.remove_subnet("s").is_err());

    // Dual stack → IPv4 only: v6 holders are reported, counted, kept.
    let mut ipam = ipam_with(dual("d", "10.1.0.0/24", "fd00::/120"));
    alloc(&mut ipam, "a", "d").unwrap();
    let report = ipam
        .upsert_subnet(v4_subnet("d", "10.1.0.0/24", Some("10.1.0.1")))
        .unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].why, Forbidden::FamilyNotInSubnet);
    // IPv4 → dual stack: re-allocation adds the missing family, keeps the v4 address.
    let mut ipam = ipam_with(v4_subnet("e", "10.2.0.0/24", Some("10.2.0.1")));
    alloc(&mut ipam, "a", "e").unwrap();
    ipam.upsert_subnet(dual("e", "10.2.0.0/24", "fd02::/120"))
        .unwrap();
    assert_eq!(
        alloc(&mut ipam, "a", "e").unwrap(),
        vec![ip("10.2.0.2"), ip("fd02::2")]
    );
}

fn record(
    name: &str,
    subnet: &str,
    ips: &[&str],
    mac: Option<&str>,
    source: RecordSource,
) -> ExistingAllocation {
    ExistingAllocation {
        owner: owner(name),
        subnet: subnet.into(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        mac: mac.map(|m| m.parse().unwrap()),
        source,
    }
}

#[test]
fn rebuild_reports_conflicts_precisely_and_deterministically() {
    let subnets = vec![dual("d", "10.0.0.0/24", "fd00::/120")];
    let mut records = vec![
        // Same owner from three sources, agreeing (NB port lacks the v6): merged.
        record(
            "a",
            "d",
            &["10.0.0.5", "fd00::5"],
            Some("0e:00:00:00:00:05"),
            RecordSource::IpObject,
        ),
        record(
            "a",
            "d",
            &["10.0.0.5", "fd00::5"],
            Some("0e:00:00:00:00:05"),
            RecordSource::PodAnnotation,
        ),
        record("a", "d", &["10.0.0.5"], None, RecordSource::NbPort),
        // Two owners, one address: the IP object beats the annotation.
        record(
            "b",
            "d",
            &["10.0.0.6"],
            Some("0e:00:00:00:00:06"),
            RecordSource::PodAnnotation,
        ),
        record(
            "c",
            "d",
            &["10.0.0.6"],
            Some("0e:00:00:00:00:07"),
            RecordSource::IpObject,
        ),
        // Same owner, disagreeing records.
        record("e", "d", &["10.0.0.8"], None, RecordSource::IpObject),
        record("e", "d", &["10.0.0.9"], None, RecordSource::PodAnnotation),
        // MAC claimed twice.
        record(
            "f",
            "d",
            &["10.0.0.10"],
            Some("0e:00:00:00:00:05"),
            RecordSource::IpObject,
        ),
        // Unknown subnet.
        record("g", "gone", &["10.0.0.11"], None, RecordSource::IpObject),
    ];
    let r1 = Ipam::rebuild(3, subnets.clone(), vec![], records.clone());
    records.reverse();
    let r2 = Ipam::rebuild(3, subnets, vec![], records);
    assert_eq!(
        r1.conflicts, r2.conflicts,
        "order of records does not matter"
    );
    assert_eq!(
        r1.ipam.export(RecordSource::IpObject),
        r2.ipam.export(RecordSource::IpObject)
    );

    let ipam = &r1.ipam;
    assert_eq!(
        ipam.allocation(&owner("a")).unwrap().ips(),
        vec![ip("10.0.0.5"), ip("fd00::5")]
    );
    assert_eq!(ipam.holder("d", ip("10.0.0.6")), Some(&owner("c")));
    assert!(
        ipam.allocation(&owner("b")).is_none(),
        "b held nothing else"
    );
    assert_eq!(
        ipam.allocation(&owner("e")).unwrap().ips(),
        vec![ip("10.0.0.8")]
    );
    assert_eq!(ipam.holder("d", ip("10.0.0.9")), None);
    let f = ipam.allocation(&owner("f")).unwrap();
    assert_ne!(f.mac.to_string(), "0e:00:00:00:00:05");
    assert!(f.mac.is_unicast());

    let c = &r1.conflicts;
    assert_eq!(c.len(), 4, "{c:#?}");
    assert!(c.contains(&Conflict::IpClaimedTwice {
        subnet: "d".into(),
        ip: ip("10.0.0.6"),
        kept: owner("c"),
        dropped: owner("b"),
        dropped_source: RecordSource::PodAnnotation,
    }));
    assert!(c.contains(&Conflict::MacClaimedTwice {
        mac: "0e:00:00:00:00:05".parse().unwrap(),
        kept: owner("a"),
        dropped: owner("f"),
        replacement: f.mac,
    }));
    assert!(c.iter().any(|x| matches!(x, Conflict::OwnerRecordsDisagree { dropped, .. } if dropped.ips == vec![ip("10.0.0.9")])));
    assert!(c.contains(&Conflict::UnknownSubnet {
        owner: owner("g"),
        subnet: "gone".into()
    }));
    for x in c {
        assert!(!x.to_string().is_empty());
    }
    let counts = ipam.counts("d").unwrap();
    assert_eq!((counts.v4_using, counts.v6_using), (4, 1));
    assert_eq!(counts.v4_available, 253 - 4);
}

#[test]
fn rebuild_then_allocate_continues_where_it_left_off() {
    let spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    let mut live = ipam_with(spec.clone());
    for i in 0..10 {
        alloc(&mut live, &format!("p{i}"), "s").unwrap();
    }
    live.release(&owner("p3"));
    let r = Ipam::rebuild(
        1,
        vec![spec],
        vec![],
        live.export(RecordSource::PodAnnotation),
    );
    assert!(r.conflicts.is_empty() && r.misplaced.is_empty() && r.rejected.is_empty());
    let mut rebuilt = r.ipam;
    assert_eq!(rebuilt.counts("s"), live.counts("s"));
    let a = alloc(&mut live, "new", "s").unwrap();
    let b = alloc(&mut rebuilt, "new", "s").unwrap();
    assert_eq!(a, b);
    assert_eq!(a, vec![ip("10.0.0.5")]);
}

#[test]
fn rebuild_keeps_excluded_addresses_and_reports_them() {
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.5".parse().unwrap()];
    let r = Ipam::rebuild(
        1,
        vec![spec],
        vec![pool("p", "s", &["10.0.0.20..10.0.0.29"], &[])],
        vec![
            record("a", "s", &["10.0.0.5"], None, RecordSource::IpObject),
            record("b", "s", &["10.0.0.21"], None, RecordSource::IpObject),
            record("c", "s", &["10.0.1.1"], None, RecordSource::IpObject),
        ],
    );
    assert!(r.conflicts.is_empty());
    let why: Vec<_> = r
        .misplaced
        .iter()
        .map(|m| (m.owner.name.as_str(), m.why))
        .collect();
    assert_eq!(
        why,
        vec![("a", Forbidden::Excluded), ("c", Forbidden::OutsideCidr)]
    );
    let pc = r.ipam.pool_counts("p").unwrap();
    assert_eq!((pc.v4_available, pc.v4_using), (9, 1));
    assert_eq!(r.ipam.counts("s").unwrap().v4_using, 3);
}

/// The worked example of docs/ipam.md, step by step.
#[test]
fn docs_worked_example() {
    let mut ipam = Ipam::new(0x5eed);
    let mut demo = SubnetSpec::new(
        "demo",
        Some("10.66.0.0/24".parse().unwrap()),
        Some("fd66::/120".parse().unwrap()),
    );
    demo.v4_gateway = Some("10.66.0.1".parse().unwrap());
    demo.v6_gateway = Some("fd66::1".parse().unwrap());
    demo.exclude = vec!["10.66.0.2..10.66.0.9".parse().unwrap()];
    ipam.upsert_subnet(demo.clone()).unwrap();
    let db_pool = IpPoolSpec {
        name: "db-pool".into(),
        subnet: "demo".into(),
        addresses: vec![
            "10.66.0.200..10.66.0.209".parse().unwrap(),
            "fd66::c8..fd66::d1".parse().unwrap(),
        ],
        namespaces: vec!["db".into()],
    };
    ipam.upsert_pool(db_pool.clone()).unwrap();
    let c = ipam.counts("demo").unwrap();
    assert_eq!((c.v4_available, c.v6_available), (245, 254));

    let pod = |ns: &str, n: &str| OwnerKey::new(ns, n, "ovn");
    let dynamic = |ipam: &mut Ipam, ns: &str, n: &str| {
        ipam.allocate(&AllocationRequest::dynamic(pod(ns, n), "demo"))
            .unwrap()
            .ips()
    };
    assert_eq!(
        dynamic(&mut ipam, "default", "web-0"),
        vec![ip("10.66.0.10"), ip("fd66::2")]
    );
    assert_eq!(
        dynamic(&mut ipam, "default", "web-1"),
        vec![ip("10.66.0.11"), ip("fd66::3")]
    );
    assert_eq!(
        dynamic(&mut ipam, "db", "pg-0"),
        vec![ip("10.66.0.200"), ip("fd66::c8")]
    );
    let mut fixed = AllocationRequest::dynamic(pod("default", "fixed"), "demo");
    fixed.static_ips = vec![ip("10.66.0.5")];
    assert_eq!(
        ipam.allocate(&fixed).unwrap().ips(),
        vec![ip("10.66.0.5"), ip("fd66::4")]
    );
    fixed.owner = pod("default", "copycat");
    assert_eq!(
        ipam.allocate(&fixed).unwrap_err().to_string(),
        "static IP 10.66.0.5 in subnet demo is already held by default/fixed (ovn)"
    );

    ipam.release(&pod("default", "web-0")).unwrap();
    assert_eq!(
        dynamic(&mut ipam, "default", "web-2"),
        vec![ip("10.66.0.10"), ip("fd66::2")]
    );
    let c = ipam.counts("demo").unwrap();
    assert_eq!((c.v4_available, c.v4_using), (245 - 3, 4));
    let p = ipam.pool_counts("db-pool").unwrap();
    assert_eq!((p.v4_available, p.v4_using), (9, 1));

    // Restart: the controller reads back what it wrote (annotations, IP objects).
    let mut records = ipam.export(RecordSource::PodAnnotation);
    records.push(ExistingAllocation {
        owner: pod("default", "ghost"),
        subnet: "demo".into(),
        ips: vec![ip("10.66.0.11")],
        mac: None,
        source: RecordSource::NbPort,
    });
    let r = Ipam::rebuild(0x5eed, vec![demo], vec![db_pool], records);
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(
        r.conflicts[0].to_string(),
        "10.66.0.11 in subnet demo is claimed by default/web-1 (ovn) and by default/ghost (ovn) (NbPort); kept default/web-1 (ovn)"
    );
    assert_eq!(r.ipam.counts("demo"), ipam.counts("demo"));
}

#[test]
fn ip_pool_as_address_list_takes_the_first_free_one() {
    let mut spec = v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"));
    spec.exclude = vec!["10.0.0.20".parse().unwrap()];
    let mut ipam = ipam_with(spec);
    let list: Vec<IpAddr> = ["10.0.0.1", "10.0.0.15", "10.0.0.16", "10.0.0.20"]
        .map(ip)
        .to_vec();
    let req = |n: &str| {
        let mut r = AllocationRequest::dynamic(owner(n), "s");
        r.candidate_ips = list.clone();
        r
    };
    alloc_static(&mut ipam, "squatter", "s", &["10.0.0.16"]).unwrap();
    // .1 is the gateway, .16 is taken: .15, then the excluded .20 (allowed, as a static IP).
    assert_eq!(
        ipam.allocate(&req("w0")).unwrap().ips(),
        vec![ip("10.0.0.15")]
    );
    assert_eq!(
        ipam.allocate(&req("w1")).unwrap().ips(),
        vec![ip("10.0.0.20")]
    );
    assert_eq!(
        ipam.allocate(&req("w2")).unwrap_err(),
        IpamError::NoFreeCandidate {
            subnet: "s".into(),
            family: Family::V4,
            candidates: 4
        }
    );
    // Holders keep their address when asked again, even if an earlier one became free.
    ipam.release(&owner("w0")).unwrap();
    assert_eq!(
        ipam.allocate(&req("w1")).unwrap().ips(),
        vec![ip("10.0.0.20")]
    );
    // A dynamic holder not in the list moves into it.
    alloc(&mut ipam, "mover", "s").unwrap();
    assert_eq!(
        ipam.allocate(&req("mover")).unwrap().ips(),
        vec![ip("10.0.0.15")]
    );
    // Candidates of a family the subnet lacks are an error, not silently ignored.
    let mut r = req("v6");
    r.candidate_ips = vec![ip("fd00::5")];
    assert!(matches!(
        ipam.allocate(&r),
        Err(IpamError::StaticIpFamilyNotInSubnet { .. })
    ));
}

#[test]
fn allocations_round_trip_through_json() {
    let mut ipam = ipam_with(dual("d", "10.0.0.0/24", "fd00::/120"));
    let a = ipam
        .allocate(&AllocationRequest::dynamic(owner("a"), "d"))
        .unwrap();
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["mac"], serde_json::json!(a.mac.to_string()));
    assert_eq!(json["v4"], serde_json::json!("10.0.0.2"));
    let back: ferrovn_control::ipam::Allocation = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
    let range: AddrRange = serde_json::from_str("\"10.0.0.1..10.0.0.9\"").unwrap();
    assert_eq!(
        serde_json::to_string(&range).unwrap(),
        "\"10.0.0.1..10.0.0.9\""
    );
    assert!(serde_json::from_str::<MacAddr>("\"zz\"").is_err());
}

#[test]
fn rebuild_takes_the_mac_from_whichever_record_has_it() {
    let subnets = vec![v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"))];
    let records = vec![
        // The IP object lacks the MAC, the annotation has it: no conflict, MAC kept.
        record("a", "s", &["10.0.0.5"], None, RecordSource::IpObject),
        record(
            "a",
            "s",
            &["10.0.0.5"],
            Some("0e:00:00:00:00:0a"),
            RecordSource::PodAnnotation,
        ),
        // b's IP object MAC is taken by c's (higher-precedence) record; b's annotation
        // offers another MAC, which b then gets.
        record(
            "c",
            "s",
            &["10.0.0.7"],
            Some("0e:00:00:00:00:0b"),
            RecordSource::IpObject,
        ),
        record(
            "b",
            "s",
            &["10.0.0.6"],
            Some("0e:00:00:00:00:0b"),
            RecordSource::PodAnnotation,
        ),
        record(
            "b",
            "s",
            &["10.0.0.6"],
            Some("0e:00:00:00:00:0c"),
            RecordSource::NbPort,
        ),
    ];
    let r = Ipam::rebuild(1, subnets, vec![], records);
    let mac = |n: &str| r.ipam.allocation(&owner(n)).unwrap().mac.to_string();
    assert_eq!(mac("a"), "0e:00:00:00:00:0a");
    assert_eq!(mac("c"), "0e:00:00:00:00:0b");
    assert_eq!(mac("b"), "0e:00:00:00:00:0c");
    assert_eq!(
        r.conflicts,
        vec![Conflict::MacClaimedTwice {
            mac: "0e:00:00:00:00:0b".parse().unwrap(),
            kept: owner("c"),
            dropped: owner("b"),
            replacement: "0e:00:00:00:00:0c".parse().unwrap(),
        }]
    );
}

#[test]
fn release_pod_frees_every_interface_and_nothing_else() {
    let mut ipam = ipam_with(v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1")));
    for provider in ["ovn", "net1.default", "net2.default"] {
        ipam.allocate(&AllocationRequest::dynamic(
            OwnerKey::new("default", "multi", provider),
            "s",
        ))
        .unwrap();
    }
    // Same name in another namespace, and a name sharing a prefix: untouched.
    ipam.allocate(&AllocationRequest::dynamic(
        OwnerKey::new("other", "multi", "ovn"),
        "s",
    ))
    .unwrap();
    alloc(&mut ipam, "multi-2", "s").unwrap();
    let released = ipam.release_pod("default", "multi");
    let providers: Vec<&str> = released.iter().map(|a| a.owner.provider.as_str()).collect();
    assert_eq!(providers, vec!["net1.default", "net2.default", "ovn"]);
    assert_eq!(ipam.len(), 2);
    assert!(ipam.release_pod("default", "multi").is_empty());
    // After a rebuild the pod index is there too.
    let r = Ipam::rebuild(
        1,
        vec![v4_subnet("s", "10.0.0.0/24", Some("10.0.0.1"))],
        vec![],
        ipam.export(RecordSource::PodAnnotation),
    );
    let mut ipam = r.ipam;
    assert_eq!(ipam.release_pod("other", "multi").len(), 1);
    assert_eq!(ipam.len(), 1);
}
