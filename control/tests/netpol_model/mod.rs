//! The brute-force NetworkPolicy model shared by the property tests (against the planner's
//! rows) and the real-traffic truth tables (against packets): Kubernetes semantics read
//! directly from the objects, reusing nothing of the planner.

// Each test crate uses a part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrovn_control::plan::netpol::{PolicyInput, PolicyNamespace, PolicyPod, Protocol};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub fn model_labels_match(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.clone().unwrap_or_default();
    if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|r| {
        let vals = r.values.clone().unwrap_or_default();
        let v = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => v.is_some_and(|v| vals.contains(v)),
            "NotIn" => !v.is_some_and(|v| vals.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => unreachable!(),
        }
    })
}

/// The attachments a policy's `ovn.kubernetes.io/network_policy_for` names (`ovn`, or
/// `<ns>/<nad>` = provider `<nad>.<ns>.ovn`); `None`: every attachment (no annotation, or no
/// valid entry in it).
pub fn model_policy_for(pol: &NetworkPolicy) -> Option<Vec<String>> {
    let raw = pol
        .metadata
        .annotations
        .as_ref()?
        .get("ovn.kubernetes.io/network_policy_for")?;
    let mut out = Vec::new();
    for e in raw.split(',') {
        let e = e.trim();
        if e.eq_ignore_ascii_case("ovn") {
            out.push("ovn".to_string());
        } else if let [ns, nad] = &e.split('/').collect::<Vec<_>>()[..]
            && !ns.is_empty()
            && !nad.is_empty()
        {
            out.push(format!("{nad}.{ns}.ovn"));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Which attachment an interface is: its port is `<pod>.<ns>` (primary, `ovn`) or
/// `<pod>.<ns>.<provider>`.
pub fn model_provider(pod: &PolicyPod) -> String {
    let primary = format!("{}.{}", pod.name, pod.namespace);
    match pod.port.strip_prefix(&format!("{primary}.")) {
        Some(p) if pod.port != primary => p.to_string(),
        _ => "ovn".to_string(),
    }
}

/// Whether `pol` applies to the interface `pod` (as the selected pod or as a peer).
pub fn model_attached(pol: &NetworkPolicy, pod: &PolicyPod) -> bool {
    model_policy_for(pol).is_none_or(|v| v.contains(&model_provider(pod)))
}

#[derive(Debug, Clone)]
pub enum Endpoint {
    Pod(usize),
    External,
    Node,
}

#[derive(Debug, Clone)]
pub struct World {
    pub namespaces: Vec<PolicyNamespace>,
    pub pods: Vec<PolicyPod>,
    pub policies: Vec<NetworkPolicy>,
    pub node_ips: Vec<IpAddr>,
}

impl World {
    pub fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut l = self
            .namespaces
            .iter()
            .find(|n| n.name == ns)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        l.insert("kubernetes.io/metadata.name".into(), ns.into());
        l
    }

    pub fn peer_matches(
        &self,
        policy_ns: &str,
        peer: &NetworkPolicyPeer,
        ep: &Endpoint,
        ip: IpAddr,
    ) -> bool {
        if let Some(b) = &peer.ip_block {
            let cidr: IpNet = b.cidr.parse().unwrap();
            return cidr.contains(&ip)
                && !b
                    .except
                    .iter()
                    .flatten()
                    .any(|e| e.parse::<IpNet>().unwrap().contains(&ip));
        }
        let Endpoint::Pod(i) = ep else { return false };
        let pod = &self.pods[*i];
        let ns_ok = match &peer.namespace_selector {
            Some(s) => model_labels_match(s, &self.ns_labels(&pod.namespace)),
            None => pod.namespace == policy_ns,
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| model_labels_match(s, &pod.labels));
        ns_ok && pod_ok
    }

    /// [`World::peer_matches`] for a peer of `pol`: a selector peer stands only for the
    /// attachments `pol` applies to; an ipBlock for its addresses, whoever has them.
    pub fn policy_peer_matches(
        &self,
        pol: &NetworkPolicy,
        policy_ns: &str,
        peer: &NetworkPolicyPeer,
        ep: &Endpoint,
        ip: IpAddr,
    ) -> bool {
        self.peer_matches(policy_ns, peer, ep, ip)
            && (peer.ip_block.is_some()
                || match ep {
                    Endpoint::Pod(i) => model_attached(pol, &self.pods[*i]),
                    _ => true,
                })
    }

    pub fn port_matches(
        ports: &Option<Vec<NetworkPolicyPort>>,
        dst: &Endpoint,
        w: &World,
        proto: Protocol,
        port: u16,
    ) -> bool {
        let ports = ports.clone().unwrap_or_default();
        if ports.is_empty() {
            return true;
        }
        ports.iter().any(|p| {
            let pp = match p.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                _ => Protocol::Sctp,
            };
            if pp != proto {
                return false;
            }
            match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    let lo = *n as u16;
                    let hi = p.end_port.map(|e| e as u16).unwrap_or(lo);
                    port >= lo && port <= hi
                }
                Some(IntOrString::String(name)) => match dst {
                    Endpoint::Pod(i) => w.pods[*i]
                        .named_ports
                        .iter()
                        .any(|np| np.name == *name && np.protocol == proto && np.port == port),
                    _ => false,
                },
            }
        })
    }

    pub fn types(spec: &NetworkPolicySpec) -> (bool, bool) {
        match &spec.policy_types {
            Some(t) if !t.is_empty() => (
                t.iter().any(|x| x == "Ingress"),
                t.iter().any(|x| x == "Egress"),
            ),
            _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        }
    }

    pub fn selects(&self, pol: &NetworkPolicy, pod: &PolicyPod) -> bool {
        pol.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
            && model_attached(pol, pod)
            && pol
                .spec
                .as_ref()
                .and_then(|s| s.pod_selector.as_ref())
                .is_none_or(|s| model_labels_match(s, &pod.labels))
    }

    /// Kubernetes: is a new connection src → dst allowed?
    pub fn allowed(
        &self,
        src: &Endpoint,
        sip: IpAddr,
        dst: &Endpoint,
        dip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        self.egress_allowed(src, dst, dip, proto, port)
            && self.ingress_allowed(src, sip, dst, proto, port)
    }

    /// The source's half of [`World::allowed`]: its egress policies.
    pub fn egress_allowed(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        dip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        match src {
            Endpoint::Pod(i) => {
                let pod = &self.pods[*i];
                let pols: Vec<&NetworkPolicy> = self
                    .policies
                    .iter()
                    .filter(|p| self.selects(p, pod) && World::types(p.spec.as_ref().unwrap()).1)
                    .collect();
                pols.is_empty()
                    || pols.iter().any(|p| {
                        let ns = p.metadata.namespace.as_deref().unwrap();
                        p.spec.as_ref().unwrap().egress.iter().flatten().any(|r| {
                            let peers = r.to.clone().unwrap_or_default();
                            (peers.is_empty()
                                || peers
                                    .iter()
                                    .any(|pe| self.policy_peer_matches(p, ns, pe, dst, dip)))
                                && World::port_matches(&r.ports, dst, self, proto, port)
                        })
                    })
            }
            _ => true,
        }
    }

    /// The destination's half of [`World::allowed`]: its ingress policies.
    pub fn ingress_allowed(
        &self,
        src: &Endpoint,
        sip: IpAddr,
        dst: &Endpoint,
        proto: Protocol,
        port: u16,
    ) -> bool {
        match (dst, src) {
            // Kubelet probes: the node reaches its pods whatever the policies say.
            (Endpoint::Pod(_), Endpoint::Node) => true,
            (Endpoint::Pod(i), _) => {
                let pod = &self.pods[*i];
                let pols: Vec<&NetworkPolicy> = self
                    .policies
                    .iter()
                    .filter(|p| self.selects(p, pod) && World::types(p.spec.as_ref().unwrap()).0)
                    .collect();
                pols.is_empty()
                    || pols.iter().any(|p| {
                        let ns = p.metadata.namespace.as_deref().unwrap();
                        p.spec.as_ref().unwrap().ingress.iter().flatten().any(|r| {
                            let peers = r.from.clone().unwrap_or_default();
                            (peers.is_empty()
                                || peers
                                    .iter()
                                    .any(|pe| self.policy_peer_matches(p, ns, pe, src, sip)))
                                && World::port_matches(&r.ports, dst, self, proto, port)
                        })
                    })
            }
            _ => true,
        }
    }

    pub fn input(&self) -> PolicyInput {
        PolicyInput {
            policies: self.policies.clone(),
            pods: self.pods.clone(),
            namespaces: self.namespaces.clone(),
            node_ips: self.node_ips.clone(),
        }
    }
}
