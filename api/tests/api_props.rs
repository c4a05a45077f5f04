//! Property tests of the API layer's parsers and validators against independent, brute-force
//! definitions of what they should accept.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrovn_api::annotations::{Annotations, PodNetwork};
use ferrovn_api::crd::{Subnet, SubnetSpec};
use ferrovn_api::net::{CidrBlock, DualIp, IpRange, MacAddr};
use ferrovn_api::validate::{
    ObjectRef, ValidatedSubnet, ValidationError, check_static_ip, check_subnet_overlaps,
    validate_subnet,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, p)| Ipv6Net::new(Ipv6Addr::from(a), p).unwrap().trunc())
}

/// Small v4 nets packed into 10.0.0.0/16 so random sets overlap often.
fn crowded_v4net() -> impl Strategy<Value = Ipv4Net> {
    (0u32..65536, 16u8..=28).prop_map(|(off, p)| {
        Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | off), p)
            .unwrap()
            .trunc()
    })
}

fn subnet(name: &str, vpc: &str, cidr: &str, gateway: &str, exclude: Vec<String>) -> Subnet {
    Subnet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: SubnetSpec {
            vpc: vpc.into(),
            cidr_block: cidr.into(),
            gateway: gateway.into(),
            exclude_ips: exclude,
            ..SubnetSpec::default()
        },
        status: None,
    }
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cidr_block_round_trips(v4 in proptest::option::of(v4net()), v6 in proptest::option::of(v6net()), swap: bool) {
        prop_assume!(v4.is_some() || v6.is_some());
        let mut parts: Vec<String> = v4.iter().map(|n| n.to_string()).chain(v6.iter().map(|n| n.to_string())).collect();
        if swap { parts.reverse(); }
        let text = parts.join(",");
        let block = CidrBlock::parse(&text).unwrap();
        prop_assert_eq!(block.v4(), v4);
        prop_assert_eq!(block.v6(), v6);
        prop_assert_eq!(CidrBlock::parse(&block.to_string()).unwrap(), block);
        // Every address of the block's own nets is contained; the default gateway too.
        for gw in block.default_gateway().addrs() {
            prop_assert!(block.contains(&gw));
        }
    }

    #[test]
    fn cidr_block_never_panics(text in "[0-9a-f:./, ]{0,40}") {
        let _ = CidrBlock::parse(&text);
        let _ = DualIp::parse(&text);
        let _ = IpRange::parse(&text);
        let _ = MacAddr::parse(&text);
    }

    #[test]
    fn ranges_accept_exactly_ordered_same_family_pairs(a: u32, b: u32, v6_end: bool) {
        let start = IpAddr::V4(Ipv4Addr::from(a));
        let end = if v6_end { IpAddr::V6(Ipv6Addr::from(u128::from(b))) } else { IpAddr::V4(Ipv4Addr::from(b)) };
        let parsed = IpRange::parse(&format!("{start}..{end}"));
        let ok = !v6_end && a <= b;
        prop_assert_eq!(parsed.is_ok(), ok);
        if let Ok(r) = parsed {
            prop_assert_eq!(IpRange::parse(&r.to_string()).unwrap(), r);
            prop_assert!(r.contains(&start) && r.contains(&end));
        }
    }

    #[test]
    fn mac_round_trips_in_any_notation(octets: [u8; 6], upper: bool, dash: bool) {
        let mac = MacAddr(octets);
        let mut text = mac.to_string();
        if upper { text = text.to_uppercase(); }
        if dash { text = text.replace(':', "-"); }
        prop_assert_eq!(MacAddr::parse(&text).unwrap(), mac);
        let unicast = MacAddr::parse_unicast(&text);
        prop_assert_eq!(unicast.is_ok(), octets[0] & 1 == 0 && octets != [0; 6]);
    }

    /// Every subnet that overlaps another in its VPC is named by some error; every error names a
    /// pair that really overlaps, in the same VPC; nothing is reported across VPCs.
    #[test]
    fn overlap_detection_matches_brute_force(
        nets in proptest::collection::vec((crowded_v4net(), 0usize..2), 0..24)
    ) {
        let subnets: Vec<ValidatedSubnet> = nets.iter().enumerate().map(|(i, (n, vpc))| {
            let s = subnet(&format!("s{i}"), &format!("vpc{vpc}"), &n.to_string(), "", vec![]);
            validate_subnet(&s).unwrap()
        }).collect();
        let errors = check_subnet_overlaps(&subnets);
        let mut named = BTreeSet::new();
        for e in &errors {
            let ValidationError::SubnetOverlap { object, cidr, other, other_cidr, vpc } = e else {
                panic!("unexpected {e}");
            };
            prop_assert!(nets_overlap(cidr, other_cidr), "{e}");
            let a = subnets.iter().position(|s| s.name == object.name).unwrap();
            let b = subnets.iter().position(|s| &s.name == other).unwrap();
            prop_assert!(a > b, "the later subnet is blamed: {e}");
            prop_assert_eq!(&subnets[a].vpc, vpc);
            prop_assert_eq!(&subnets[b].vpc, vpc);
            named.insert(a);
            named.insert(b);
        }
        let mut expected = BTreeSet::new();
        for i in 0..nets.len() {
            for j in 0..nets.len() {
                if i != j && nets[i].1 == nets[j].1
                    && nets_overlap(&IpNet::V4(nets[i].0), &IpNet::V4(nets[j].0)) {
                    expected.insert(i);
                }
            }
        }
        prop_assert_eq!(named, expected);
    }

    /// A static address is accepted exactly when it is inside the subnet, is neither the network,
    /// broadcast nor gateway address, and nobody else holds it.
    #[test]
    fn static_ip_rule(net in (any::<u32>(), 8u8..=30).prop_map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc()),
                      offset in 0u32..4096, outside: bool, taken_by_other: bool, taken_by_me: bool) {
        let s = validate_subnet(&subnet("s", "", &net.to_string(), "", vec![])).unwrap();
        let size = 1u64 << (32 - net.prefix_len());
        let base = u32::from(net.network());
        let ip = if outside {
            Ipv4Addr::from(base.wrapping_add(size as u32).wrapping_add(offset))
        } else {
            Ipv4Addr::from(base + (u64::from(offset) % size) as u32)
        };
        let ip = IpAddr::V4(ip);
        let me = ObjectRef::namespaced("Pod", "ns", "me");
        let mut taken = HashMap::new();
        if taken_by_other { taken.insert(ip, "Pod ns/other".to_string()); }
        else if taken_by_me { taken.insert(ip, me.to_string()); }
        let result = check_static_ip(&me, "ip_address", ip, &s, &taken);
        let inside = IpNet::V4(net).contains(&ip);
        let reserved = ip == IpAddr::V4(net.network()) || ip == IpAddr::V4(net.broadcast())
            || Some(ip) == s.gateway.addrs().next();
        prop_assert_eq!(result.is_ok(), inside && !reserved && !taken_by_other, "{:?}", result);
    }

    /// excludeIps entries are accepted exactly when they parse, are ordered, and lie inside.
    #[test]
    fn exclude_ips_rule(a in 0u32..512, b in 0u32..512, single: bool) {
        let base = 0x0a42_0000u32; // 10.66.0.0/24 holds offsets 0..256
        let (sa, sb) = (Ipv4Addr::from(base + a), Ipv4Addr::from(base + b));
        let entry = if single { sa.to_string() } else { format!("{sa}..{sb}") };
        let result = validate_subnet(&subnet("s", "", "10.66.0.0/24", "", vec![entry]));
        let ok = if single { a < 256 } else { a <= b && a < 256 && b < 256 };
        prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
    }

    #[test]
    fn gateway_rule(net in (any::<u32>(), 8u8..=30).prop_map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc()),
                    gw: u32) {
        let gw = Ipv4Addr::from(gw);
        let result = validate_subnet(&subnet("s", "", &net.to_string(), &gw.to_string(), vec![]));
        let ok = net.contains(&gw) && gw != net.network() && gw != net.broadcast();
        prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
    }

    #[test]
    fn rate_annotations_accept_exactly_whole_numbers(text in "[0-9]{1,25}|[-+.a-zA-Z0-9 ]{0,8}") {
        let mut a = Annotations::new();
        a.insert("ovn.kubernetes.io/ingress_rate".into(), text.clone());
        let parsed = PodNetwork::primary(&a).ingress_rate();
        prop_assert_eq!(parsed.ok().flatten(), text.trim().parse::<u64>().ok());
    }
}
