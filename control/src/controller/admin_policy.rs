//! What AdminNetworkPolicy / BaselineAdminNetworkPolicy translation reads from the cluster's
//! objects: the policies, every pod's labels and named ports, the namespaces' labels and the
//! nodes' labels. Pods' ports and addresses, and the nodes' addresses, come later from the
//! allocations ([`input`]).

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::plan::netpol::admin::{AdminNode, AdminPolicyInput};
use crate::plan::netpol::{PolicyNamespace, PolicyPod};
use crate::plan::{NodeIntent, PortIntent};
use ferrovn_api::annotations::OVN_PROVIDER;
use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};

/// The admin-policy-relevant part of the cluster, before allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminPolicySource {
    pub anps: Vec<AdminNetworkPolicy>,
    pub banps: Vec<BaselineAdminNetworkPolicy>,
    /// (namespace, pod) → the pod with its labels and named ports (port and addresses empty).
    pub pods: BTreeMap<(String, String), PolicyPod>,
    pub namespaces: Vec<PolicyNamespace>,
    /// Node name → labels.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads the admin policies of `manifest` and what they select from.
pub fn read(manifest: &Manifest) -> AdminPolicySource {
    let anps: Vec<AdminNetworkPolicy> = manifest.admin_network_policies().cloned().collect();
    let banps: Vec<BaselineAdminNetworkPolicy> = manifest
        .baseline_admin_network_policies()
        .cloned()
        .collect();
    if anps.is_empty() && banps.is_empty() {
        // Nothing selects anything: skip copying every pod's labels.
        return AdminPolicySource::default();
    }
    AdminPolicySource {
        anps,
        banps,
        pods: manifest
            .pods()
            .map(|p| {
                let pod = PolicyPod::from_pod(p, String::new(), Vec::new());
                ((pod.namespace.clone(), pod.name.clone()), pod)
            })
            .collect(),
        namespaces: manifest
            .namespaces()
            .map(|n| PolicyNamespace {
                name: n.metadata.name.clone().unwrap_or_default(),
                labels: n.metadata.labels.clone().unwrap_or_default(),
            })
            .collect(),
        node_labels: manifest
            .nodes()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// The translation's input: pods with their primary OVN ports and addresses; nodes with the
/// addresses a pod reaches them by (InternalIPs and join addresses).
pub fn input(
    src: &AdminPolicySource,
    ports: &[PortIntent],
    nodes: &[NodeIntent],
) -> AdminPolicyInput {
    if src.anps.is_empty() && src.banps.is_empty() {
        return AdminPolicyInput::default();
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
    AdminPolicyInput {
        anps: src.anps.clone(),
        banps: src.banps.clone(),
        pods,
        namespaces: src.namespaces.clone(),
        nodes: nodes
            .iter()
            .map(|n| AdminNode {
                name: n.name.clone(),
                labels: src.node_labels.get(&n.name).cloned().unwrap_or_default(),
                ips: n.internal_ips.iter().chain(&n.join_ips).copied().collect(),
            })
            .collect(),
        kubelet_ips: nodes.iter().flat_map(|n| n.join_ips.clone()).collect(),
    }
}
