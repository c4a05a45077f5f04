//! The allocation contract, both directions: whatever the controller can emit, the node agent
//! parses back to the same value; and what it cannot use it refuses, naming the key.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrovn_api::allocation::Allocation;
use ferrovn_api::annotations::Annotations;
use ferrovn_api::net::{CidrBlock, DualIp, MacAddr};
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;

/// An address of `net` chosen by `pick`.
fn v4_in(net: Ipv4Net, pick: u32) -> Ipv4Addr {
    let host_bits = 32 - u32::from(net.prefix_len());
    let mask = if host_bits == 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    Ipv4Addr::from(u32::from(net.network()) | (pick & mask))
}

fn v6_in(net: Ipv6Net, pick: u128) -> Ipv6Addr {
    let host_bits = 128 - u32::from(net.prefix_len());
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    Ipv6Addr::from(u128::from(net.network()) | (pick & mask))
}

/// Kubernetes-style object names (what subnets and VPCs are called).
fn name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?"
}

fn provider() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ovn".to_string()),
        ("[a-z0-9-]{1,20}", "[a-z0-9-]{1,20}").prop_map(|(n, ns)| format!("{n}.{ns}.ovn")),
        // IPAM-only attachments name the NAD without the `.ovn` suffix
        ("[a-z0-9-]{1,20}", "[a-z0-9-]{1,20}").prop_map(|(n, ns)| format!("{n}.{ns}")),
    ]
}

/// One family's part of an allocation: net, address, and optionally a gateway.
type Family<N, A> = Option<(N, A, Option<A>)>;

fn v4_family() -> impl Strategy<Value = Family<Ipv4Net, Ipv4Addr>> {
    proptest::option::of(
        (
            any::<u32>(),
            0u8..=32,
            any::<u32>(),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(base, prefix, ip, gw)| {
                let net = Ipv4Net::new(Ipv4Addr::from(base), prefix)
                    .unwrap_or_default()
                    .trunc();
                (net, v4_in(net, ip), gw.map(|g| v4_in(net, g)))
            }),
    )
}

fn v6_family() -> impl Strategy<Value = Family<Ipv6Net, Ipv6Addr>> {
    proptest::option::of(
        (
            any::<u128>(),
            0u8..=128,
            any::<u128>(),
            proptest::option::of(any::<u128>()),
        )
            .prop_map(|(base, prefix, ip, gw)| {
                let net = Ipv6Net::new(Ipv6Addr::from(base), prefix)
                    .unwrap_or_default()
                    .trunc();
                (net, v6_in(net, ip), gw.map(|g| v6_in(net, g)))
            }),
    )
}

fn allocation() -> impl Strategy<Value = Allocation> {
    (
        provider(),
        v4_family(),
        v6_family(),
        any::<[u8; 6]>(),
        name(),
        proptest::option::of(name()),
    )
        .prop_filter("at least one family", |(_, v4, v6, ..)| {
            v4.is_some() || v6.is_some()
        })
        .prop_map(
            |(provider, v4, v6, mut mac, logical_switch, logical_router)| {
                // a unicast, non-zero MAC (what an interface may have)
                mac[0] = (mac[0] & 0xfe) | 0x02;
                let cidr = CidrBlock::new(v4.map(|f| f.0), v6.map(|f| f.0))
                    .expect("filtered: one family is present");
                Allocation {
                    provider,
                    ip: DualIp {
                        v4: v4.map(|f| f.1),
                        v6: v6.map(|f| f.1),
                    },
                    mac: MacAddr(mac),
                    cidr,
                    gateway: DualIp {
                        v4: v4.and_then(|f| f.2),
                        v6: v6.and_then(|f| f.2),
                    },
                    logical_switch,
                    logical_router,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_emitted_allocation_parses_back(a in allocation()) {
        let annotations = a.emit();
        prop_assert_eq!(Allocation::parse(&annotations, &a.provider), Ok(Some(a.clone())));
        // and only under its own provider
        let other = if a.provider == "ovn" { "x.y.ovn" } else { "ovn" };
        prop_assert_eq!(Allocation::parse(&annotations, other), Ok(None));
    }

    #[test]
    fn emitted_allocations_mix_with_others(a in allocation(), b in allocation()) {
        prop_assume!(a.provider != b.provider);
        let mut annotations = a.emit();
        annotations.extend(b.emit());
        annotations.insert("user/label".into(), "x".into());
        prop_assert_eq!(Allocation::parse(&annotations, &a.provider), Ok(Some(a.clone())));
        prop_assert_eq!(Allocation::parse(&annotations, &b.provider), Ok(Some(b.clone())));
    }

    /// Junk in any one key never panics the parser, and when it is refused the error names
    /// that key.
    #[test]
    fn damaged_keys_are_named(a in allocation(), which in 0usize..7, junk in ".{0,24}") {
        let mut annotations = a.emit();
        let keys: Vec<String> = annotations.keys().cloned().collect();
        let key = keys[which % keys.len()].clone();
        annotations.insert(key.clone(), junk);
        if let Err(e) = Allocation::parse(&annotations, &a.provider) {
            // blanking logical_switch reads as its absence
            let named = e.key() == key;
            prop_assert!(named, "error {} does not name {}", e, key);
        }
    }
}

#[test]
fn ipv6_only_and_missing_gateway() {
    let a = Allocation {
        provider: "net1.default.ovn".into(),
        ip: DualIp::parse("fd00:10:16::5").unwrap(),
        mac: MacAddr::parse("0e:01:02:03:04:05").unwrap(),
        cidr: CidrBlock::parse("fd00:10:16::/64").unwrap(),
        gateway: DualIp::default(),
        logical_switch: "net1".into(),
        logical_router: None,
    };
    let ann = a.emit();
    assert!(!ann.contains_key("net1.default.ovn.kubernetes.io/gateway"));
    assert!(!ann.contains_key("net1.default.ovn.kubernetes.io/logical_router"));
    assert_eq!(Allocation::parse(&ann, "net1.default.ovn"), Ok(Some(a)));
}

#[test]
fn refusals_name_the_key() {
    let base = || -> Annotations {
        [
            ("ovn.kubernetes.io/allocated", "true"),
            ("ovn.kubernetes.io/ip_address", "10.16.0.5"),
            ("ovn.kubernetes.io/mac_address", "0e:00:00:00:00:05"),
            ("ovn.kubernetes.io/cidr", "10.16.0.0/16"),
            ("ovn.kubernetes.io/gateway", "10.16.0.1"),
            ("ovn.kubernetes.io/logical_switch", "ovn-default"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    assert!(Allocation::parse(&base(), "ovn").unwrap().is_some());
    for (key, value, why) in [
        ("ovn.kubernetes.io/gateway", "10.17.0.1", "outside"),
        (
            "ovn.kubernetes.io/mac_address",
            "01:00:5e:00:00:01",
            "multicast",
        ),
        ("ovn.kubernetes.io/cidr", "10.16.0.0/33", "10.16.0.0/33"),
        (
            "ovn.kubernetes.io/ip_address",
            "10.16.0.5,10.16.0.6",
            "IPv4",
        ),
    ] {
        let mut a = base();
        a.insert(key.into(), value.into());
        let e = Allocation::parse(&a, "ovn").unwrap_err();
        assert_eq!(e.key(), key, "{e}");
        let text = e.to_string();
        assert!(text.contains(value) && text.contains(why), "{text}");
    }
    let mut a = base();
    a.remove("ovn.kubernetes.io/logical_switch");
    let e = Allocation::parse(&a, "ovn").unwrap_err();
    assert_eq!(e.key(), "ovn.kubernetes.io/logical_switch");
    assert_eq!(
        e.to_string(),
        "annotation ovn.kubernetes.io/logical_switch is missing although \
         ovn.kubernetes.io/allocated is \"true\""
    );
}
