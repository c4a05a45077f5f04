//! The health-check probe source of a subnet, held in the IPAM while a Service needs it
//! (docs/services.md, "Health checks").
//!
//! OVN's service monitor probes a backend from the subnet's probe source
//! (`plan::services::health_check_source`, the last usable address) and answers ARP / ND for
//! it itself, so no pod may hold it. Kube-OVN allocates the same thing on demand: a `Vip`
//! object named after the subnet, created when a health-checked load balancer first needs one,
//! which then counts in the subnet's `usingIPs`. FerrOVN does the same: a subnet that holds an
//! endpoint of a Service with `ovn.kubernetes.io/service_health_check: "true"` gets its probe
//! sources allocated (statically) for the owner [`owner`], before any dynamic pod, so
//! `v4availableIPs` / `v6availableIPs` drop by one and `usingIPs` rise by one exactly while
//! probing needs it. A subnet no Service probes keeps Kube-OVN's numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ipam::{OwnerKey, SubnetSpec};
use crate::plan::ServiceInputs;
use crate::plan::services::{HEALTH_CHECK_ANNOTATION, SERVICE_NAME_LABEL, health_check_source};

/// The `provider` of a probe source's IPAM owner (namespace empty, name = the subnet), which
/// no pod interface can have (pods' providers are `ovn` or `<nad>.<namespace>[.ovn]`).
pub const PROVIDER: &str = "health-check";

/// The IPAM owner of `subnet`'s probe sources.
pub fn owner(subnet: &str) -> OwnerKey {
    OwnerKey::new("", subnet, PROVIDER)
}

/// The probe sources to hold, per subnet (sorted by name): every family's source of each
/// subnet (but `join`) that contains an endpoint address of a health-checked Service. Families
/// too small to spare an address, or whose source is the gateway, have none.
pub fn needed(
    services: &ServiceInputs,
    subnets: &[SubnetSpec],
    join: &str,
) -> BTreeMap<String, Vec<IpAddr>> {
    let probed: BTreeSet<(&str, &str)> = services
        .services
        .iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(HEALTH_CHECK_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|s| {
            Some((
                s.metadata.namespace.as_deref()?,
                s.metadata.name.as_deref()?,
            ))
        })
        .collect();
    let addrs: BTreeSet<IpAddr> = services
        .endpoint_slices
        .iter()
        .filter(|sl| {
            let ns = sl.metadata.namespace.as_deref().unwrap_or_default();
            sl.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|svc| probed.contains(&(ns, svc.as_str())))
        })
        .flat_map(|sl| sl.endpoints.iter())
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut out = BTreeMap::new();
    if addrs.is_empty() {
        return out;
    }
    for s in subnets.iter().filter(|s| s.name != join) {
        let nets = [s.v4.map(IpNet::V4), s.v6.map(IpNet::V6)];
        if !nets
            .iter()
            .flatten()
            .any(|n| addrs.iter().any(|a| n.contains(a)))
        {
            continue;
        }
        let gateways = [s.v4_gateway.map(IpAddr::V4), s.v6_gateway.map(IpAddr::V6)];
        let sources: Vec<IpAddr> = nets
            .into_iter()
            .flatten()
            .filter_map(health_check_source)
            .filter(|src| !gateways.contains(&Some(*src)))
            .collect();
        if !sources.is_empty() {
            out.insert(s.name.clone(), sources);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{AllocationRequest, Ipam};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use proptest::prelude::*;
    use serde_json::json;

    fn inputs(health: &str, addrs: &[&str]) -> ServiceInputs {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default",
                         "annotations": {HEALTH_CHECK_ANNOTATION: health}},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": addrs.iter().map(|a| json!({"addresses": [a]})).collect::<Vec<_>>(),
        }))
        .unwrap();
        ServiceInputs {
            services: vec![svc],
            endpoint_slices: vec![slice],
            ..Default::default()
        }
    }

    fn subnet(name: &str, v4: &str, gw: &str, v6: Option<&str>) -> SubnetSpec {
        let mut s = SubnetSpec::new(
            name,
            Some(v4.parse().unwrap()),
            v6.map(|n| n.parse().unwrap()),
        );
        s.v4_gateway = Some(gw.parse().unwrap());
        s
    }

    #[test]
    fn only_subnets_with_a_probed_endpoint_hold_their_sources() {
        let subnets = [
            subnet(
                "ovn-default",
                "10.16.0.0/24",
                "10.16.0.1",
                Some("fd00:10:16::/64"),
            ),
            subnet("other", "10.17.0.0/24", "10.17.0.1", None),
            subnet("join", "100.64.0.0/16", "100.64.0.1", None),
        ];
        let got = needed(
            &inputs("true", &["10.16.0.11", "100.64.0.2"]),
            &subnets,
            "join",
        );
        assert_eq!(
            got,
            BTreeMap::from([(
                "ovn-default".to_string(),
                vec![
                    "10.16.0.254".parse().unwrap(),
                    "fd00:10:16::ffff:ffff:ffff:ffff".parse().unwrap()
                ]
            )])
        );
        assert!(needed(&inputs("false", &["10.16.0.11"]), &subnets, "join").is_empty());
        assert!(needed(&inputs("true", &[]), &subnets, "join").is_empty());
    }

    proptest! {
        /// With the source held first, pods allocated dynamically never get it, whatever
        /// their number; `availableIPs` is exactly one lower than without it, and the subnet
        /// is full one pod earlier.
        #[test]
        fn a_held_probe_source_is_never_a_pods_and_costs_one_address(pods in 0usize..16) {
            let spec = subnet("s", "10.16.0.0/28", "10.16.0.1", None);
            let src: IpAddr = "10.16.0.14".parse().unwrap();
            let mut with = Ipam::new(1);
            with.upsert_subnet(spec.clone()).unwrap();
            let mut without = Ipam::new(1);
            without.upsert_subnet(spec).unwrap();
            let free_before = without.counts("s").unwrap().v4_available;
            with.allocate(&AllocationRequest {
                static_ips: vec![src],
                ..AllocationRequest::dynamic(owner("s"), "s")
            })
            .unwrap();
            let c = with.counts("s").unwrap();
            prop_assert_eq!(c.v4_available + 1, free_before);
            prop_assert_eq!(c.v4_using, 1);
            let mut granted = 0;
            for i in 0..pods {
                let req = AllocationRequest::dynamic(OwnerKey::new("default", format!("p{i}"), "ovn"), "s");
                let _ = without.allocate(&req);
                if let Ok(a) = with.allocate(&req) {
                    prop_assert_ne!(a.v4.map(IpAddr::V4), Some(src));
                    granted += 1;
                }
            }
            // /28: 16 - network - broadcast - gateway = 13 addresses, one is the source
            prop_assert_eq!(granted, pods.min(12));
            prop_assert_eq!(with.holder("s", src), Some(&owner("s")));
        }
    }
}
