//! What NetworkPolicy translation reads from the cluster's objects: the policies, every pod's
//! labels and named ports, and the namespaces' labels. The pods' ports and addresses come later
//! from the allocations ([`input`]), so a pod without an OVN port is in no policy's rows.

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::plan::netpol::{PolicyInput, PolicyNamespace, PolicyPod};
use crate::plan::{NodeIntent, PortIntent};
use ferrovn_api::annotations::OVN_PROVIDER;
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

/// The translation's input: the pods' primary OVN ports with their addresses, and the nodes'
/// join addresses (where kubelet probes come from).
pub fn input(src: &PolicySource, ports: &[PortIntent], nodes: &[NodeIntent]) -> PolicyInput {
    if src.policies.is_empty() {
        return PolicyInput::default();
    }
    let pods = ports
        .iter()
        .filter(|p| p.provider == OVN_PROVIDER)
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
