//! Fixtures shared by the control test crates: the default VPC as Kube-OVN installs it.

// Each test crate uses a part of this module; fixed CIDRs parse or the fixture is wrong.
#![allow(dead_code, clippy::unwrap_used)]

pub mod probe;
pub mod service_pods;
pub mod truth;

use ferrovn_control::plan::{DEFAULT_ROUTER, Desired, SubnetIntent, VpcIntent};

/// An overlay subnet of the default VPC with one IPv4 CIDR.
pub fn overlay(name: &str, v4: &str) -> SubnetIntent {
    SubnetIntent::overlay(name, DEFAULT_ROUTER, Some(v4.parse().unwrap()), None)
}

/// The default VPC `ovn-cluster` and its node subnet `join` (100.64.0.0/16), nothing else.
pub fn default_vpc_with_join() -> Desired {
    Desired {
        vpcs: vec![VpcIntent {
            name: DEFAULT_ROUTER.into(),
            ..Default::default()
        }],
        subnets: vec![overlay("join", "100.64.0.0/16")],
        join_subnet: Some("join".into()),
        ..Default::default()
    }
}

/// Subnets `s0`..`s{n-1}` of the default VPC, `s{i}` at 10.{i+1}.0.0/24; `s1` is private when
/// `private_s1`.
pub fn add_numbered_subnets(d: &mut Desired, n: u8, private_s1: bool) {
    for i in 0..n {
        let mut s = overlay(&format!("s{i}"), &format!("10.{}.0.0/24", i + 1));
        s.private = private_s1 && i == 1;
        d.subnets.push(s);
    }
}

/// [`default_vpc_with_join`] plus the default pod subnet `ovn-default` (`v4`, optional `v6`).
pub fn default_cluster(v4: &str, v6: Option<&str>) -> Desired {
    let mut d = default_vpc_with_join();
    d.subnets.push(SubnetIntent::overlay(
        "ovn-default",
        DEFAULT_ROUTER,
        Some(v4.parse().unwrap()),
        v6.map(|n| n.parse().unwrap()),
    ));
    d
}
