//! What NetworkPolicy translation reads from the cluster's objects: the policies, every pod's
//! labels and named ports, and the namespaces' labels. The pods' ports and addresses come later
//! from the allocations ([`input`]), so a pod without an OVN port is in no policy's rows.

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::plan::netpol::{PolicyInput, PolicyNamespace, PolicyPod};
use crate::plan::{NodeIntent, PortIntent};
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// The policy-relevant part of the cluster, before allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySource {
    pub policies: Vec<NetworkPolicy>,
    /// (namespace, pod) → the pod with its labels and named ports (port and addresses empty).
    pub pods: BTreeMap<(String, String), PolicyPod>,
    pub namespaces: Vec<PolicyNamespace>,
}

/// Reads the policies, pods and namespaces of `manifest`.
pub fn read(manifest: &Manifest) -> PolicySource {
    let policies: Vec<NetworkPolicy> = manifest.network_policies().cloned().collect();
    if policies.is_empty() {
        // Nothing selects anything: skip copying every pod's labels.
        return PolicySource::default();
    }
    let pods = manifest
        .pods()
        .map(|p| {
            let pod = PolicyPod::from_pod(p, String::new(), Vec::new());
            ((pod.namespace.clone(), pod.name.clone()), pod)
        })
        .collect();
    let namespaces = manifest
        .namespaces()
        .map(|n| PolicyNamespace {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    PolicySource {
        policies,
        pods,
        namespaces,
    }
}

/// The translation's input: every OVN port of the pods (the primary one and each secondary
/// attachment's, e.g. a DPDK pod's vhost-user interface, one entry each: a policy applies to
/// all of them unless its `network_policy_for` names some) with their addresses, and the
/// nodes' join addresses (where kubelet probes come from).
pub fn input(src: &PolicySource, ports: &[PortIntent], nodes: &[NodeIntent]) -> PolicyInput {
    if src.policies.is_empty() {
        return PolicyInput::default();
    }
    let pods = ports
        .iter()
        .filter_map(|p| {
            let mut pod = src.pods.get(&(p.namespace.clone(), p.pod.clone()))?.clone();
            pod.port = p.port_name();
            pod.ips = p.ips.clone();
            Some(pod)
        })
        .collect();
    PolicyInput {
        policies: src.policies.clone(),
        pods,
        namespaces: src.namespaces.clone(),
        node_ips: nodes.iter().flat_map(|n| n.join_ips.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::netpol::policy_for::provider_of;
    use ferrovn_api::MacAddr;

    fn port(pod: &str, provider: &str, ip: &str) -> PortIntent {
        PortIntent {
            pod: pod.into(),
            namespace: "x".into(),
            provider: provider.into(),
            subnet: "ovn-default".into(),
            node: "n1".into(),
            mac: MacAddr([0x0e, 0, 0, 0, 0, 1]),
            ips: vec![ip.parse().unwrap()],
            port_security: true,
        }
    }

    /// Every OVN interface of a pod is in the input, one entry each, with the pod's labels: a
    /// policy applies to a DPDK pod's vhost-user attachment too (unless `network_policy_for`
    /// says otherwise).
    #[test]
    fn every_attachment_of_a_pod_is_policy_input() {
        let pod = PolicyPod {
            namespace: "x".into(),
            name: "d".into(),
            labels: BTreeMap::from([("app".to_string(), "d".to_string())]),
            port: String::new(),
            ips: Vec::new(),
            named_ports: Vec::new(),
        };
        let src = PolicySource {
            policies: vec![NetworkPolicy::default()],
            pods: BTreeMap::from([(("x".to_string(), "d".to_string()), pod)]),
            namespaces: Vec::new(),
        };
        let ports = [
            port("d", "ovn", "10.16.0.5"),
            port("d", "dpdk.default.ovn", "10.16.0.6"),
            port("gone", "ovn", "10.16.0.7"),
        ];
        let input = input(&src, &ports, &[]);
        let got: Vec<(String, &str, String)> = input
            .pods
            .iter()
            .map(|p| (p.port.clone(), provider_of(p), p.ips[0].to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("d.x".to_string(), "ovn", "10.16.0.5".to_string()),
                (
                    "d.x.dpdk.default.ovn".to_string(),
                    "dpdk.default.ovn",
                    "10.16.0.6".to_string()
                ),
            ]
        );
        assert!(input.pods.iter().all(|p| p.labels["app"] == "d"));
    }
}
