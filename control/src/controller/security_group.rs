//! What SecurityGroup translation reads from the cluster's objects: the groups, and which pod
//! interfaces name which groups (`ovn.kubernetes.io/security_groups` for the primary network,
//! `<provider>.kubernetes.io/security_groups` for an attachment). The interfaces' ports and
//! addresses come later from the allocations ([`input`]).

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::plan::PortIntent;
use crate::plan::security_group::{SecurityGroupInput, SgPort};
use ferrovn_api::annotations::{Annotations, PodKey, PodNetwork};
use ferrovn_api::security_group::SecurityGroup;

/// The security-group-relevant part of the cluster, before allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityGroupSource {
    pub groups: Vec<SecurityGroup>,
    /// (namespace, pod) → annotations, of the pods with a `security_groups` annotation.
    pub pods: BTreeMap<(String, String), Annotations>,
}

fn names_groups(a: &Annotations) -> bool {
    let suffix = format!(".kubernetes.io/{}", PodKey::SecurityGroups.name());
    a.iter()
        .any(|(k, v)| k.ends_with(&suffix) && !v.trim().is_empty())
}

/// Reads the groups of `manifest` and the pods that name any.
pub fn read(manifest: &Manifest) -> SecurityGroupSource {
    SecurityGroupSource {
        groups: manifest.security_groups().cloned().collect(),
        pods: manifest
            .pods()
            .filter_map(|p| {
                let a = p.metadata.annotations.as_ref()?;
                names_groups(a).then(|| {
                    (
                        (
                            p.metadata.namespace.clone().unwrap_or_default(),
                            p.metadata.name.clone().unwrap_or_default(),
                        ),
                        a.clone(),
                    )
                })
            })
            .collect(),
    }
}

/// The translation's input: every allocated OVN interface whose provider's annotation names
/// groups, with its port and addresses.
pub fn input(src: &SecurityGroupSource, ports: &[PortIntent]) -> SecurityGroupInput {
    if src.groups.is_empty() && src.pods.is_empty() {
        return SecurityGroupInput::default();
    }
    let ports = ports
        .iter()
        .filter_map(|p| {
            let a = src.pods.get(&(p.namespace.clone(), p.pod.clone()))?;
            let net = PodNetwork::for_provider(a, &p.provider);
            let groups: Vec<String> = net
                .security_groups()
                .into_iter()
                .map(str::to_string)
                .collect();
            (!groups.is_empty()).then(|| SgPort {
                port: p.port_name(),
                ips: p.ips.clone(),
                groups,
                owner: format!("Pod {}/{}", p.namespace, p.pod),
                annotation: net.key(PodKey::SecurityGroups),
            })
        })
        .collect();
    SecurityGroupInput {
        groups: src.groups.clone(),
        ports,
    }
}
