//! The brute-force model of AdminNetworkPolicy → NetworkPolicy → BaselineAdminNetworkPolicy,
//! read directly from the objects (upstream network-policy-api semantics), reusing nothing of
//! the planner. Per direction: the ANPs' rules in (priority, name, rule order) decide first
//! (Allow / Deny final, Pass skips every remaining ANP rule); then NetworkPolicy, if one
//! isolates the pod in that direction (its allows, else its default deny); then the BANP's
//! rules in order; then allow. A connection needs both its source's egress and its
//! destination's ingress.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

use std::net::IpAddr;

use ferrovn_api::anp::{
    AdminEgressPeer, AdminNetworkPolicy, AdminPolicyPort, AdminPolicySubject,
    BaselineAdminNetworkPolicy, NamespacedPod,
};
use ferrovn_control::plan::netpol::admin::{AdminNode, AdminPolicyInput};
use ferrovn_control::plan::netpol::{PolicyPod, Protocol};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::netpol_model::{Endpoint, World, model_labels_match};

#[derive(Debug, Clone)]
pub struct AdminWorld {
    /// Namespaces, pods, NetworkPolicies and the kubelet's (join) addresses.
    pub base: World,
    pub anps: Vec<AdminNetworkPolicy>,
    pub banp: Option<BaselineAdminNetworkPolicy>,
    pub nodes: Vec<AdminNode>,
}

/// One rule in a form common to both kinds and both directions.
struct ModelRule<'a> {
    action: &'a str,
    peers: Vec<AdminEgressPeer>,
    ports: Option<&'a Vec<AdminPolicyPort>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl AdminWorld {
    fn in_pods(&self, p: &NamespacedPod, pod: &PolicyPod) -> bool {
        model_labels_match(&p.namespace_selector, &self.base.ns_labels(&pod.namespace))
            && model_labels_match(&p.pod_selector, &pod.labels)
    }

    fn subject(&self, s: &AdminPolicySubject, pod: &PolicyPod) -> bool {
        if let Some(ns) = &s.namespaces {
            return model_labels_match(ns, &self.base.ns_labels(&pod.namespace));
        }
        self.in_pods(s.pods.as_ref().unwrap(), pod)
    }

    /// Does `peer` name the other end (`ep` at `ip`)?
    fn peer(&self, peer: &AdminEgressPeer, ep: &Endpoint, ip: IpAddr) -> bool {
        if let Some(ns) = &peer.namespaces {
            let Endpoint::Pod(i) = ep else { return false };
            return model_labels_match(ns, &self.base.ns_labels(&self.base.pods[*i].namespace));
        }
        if let Some(p) = &peer.pods {
            let Endpoint::Pod(i) = ep else { return false };
            return self.in_pods(p, &self.base.pods[*i]);
        }
        if let Some(sel) = &peer.nodes {
            return self
                .nodes
                .iter()
                .any(|n| model_labels_match(sel, &n.labels) && n.ips.contains(&ip));
        }
        peer.networks
            .iter()
            .any(|n| n.parse::<IpNet>().unwrap().contains(&ip))
    }

    /// Does the rule's `ports` take (proto, port) towards `dst`?
    fn ports(
        &self,
        ports: Option<&Vec<AdminPolicyPort>>,
        dst: &Endpoint,
        proto: Protocol,
        port: u16,
    ) -> bool {
        let Some(ports) = ports else { return true };
        let parse = |s: &str| {
            if s.is_empty() {
                Protocol::Tcp
            } else {
                Protocol::parse(Some(s)).unwrap()
            }
        };
        ports.iter().any(|p| {
            if let Some(n) = &p.port_number {
                return parse(&n.protocol) == proto && i32::from(port) == n.port;
            }
            if let Some(r) = &p.port_range {
                return parse(&r.protocol) == proto && (r.start..=r.end).contains(&i32::from(port));
            }
            let name = p.named_port.as_ref().unwrap();
            match dst {
                Endpoint::Pod(i) => self.base.pods[*i]
                    .named_ports
                    .iter()
                    .any(|np| np.name == *name && np.protocol == proto && np.port == port),
                _ => false,
            }
        })
    }

    fn first_match(
        &self,
        rules: Vec<ModelRule<'_>>,
        other: &Endpoint,
        other_ip: IpAddr,
        dst: &Endpoint,
        proto: Protocol,
        port: u16,
    ) -> Option<&'static str> {
        for r in rules {
            if r.peers.iter().any(|p| self.peer(p, other, other_ip))
                && self.ports(r.ports, dst, proto, port)
            {
                return Some(match r.action {
                    "Allow" => "Allow",
                    "Deny" => "Deny",
                    "Pass" => "Pass",
                    a => panic!("action {a}"),
                });
            }
        }
        None
    }

    fn anp_rules<'a>(p: &'a AdminNetworkPolicy, dir: Direction) -> Vec<ModelRule<'a>> {
        match dir {
            Direction::Ingress => p
                .spec
                .ingress
                .iter()
                .map(|r| ModelRule {
                    action: &r.action,
                    peers: r
                        .from
                        .iter()
                        .map(|f| AdminEgressPeer {
                            namespaces: f.namespaces.clone(),
                            pods: f.pods.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ports: r.ports.as_ref(),
                })
                .collect(),
            Direction::Egress => p
                .spec
                .egress
                .iter()
                .map(|r| ModelRule {
                    action: &r.action,
                    peers: r.to.clone(),
                    ports: r.ports.as_ref(),
                })
                .collect(),
        }
    }

    fn banp_rules(p: &BaselineAdminNetworkPolicy, dir: Direction) -> Vec<ModelRule<'_>> {
        match dir {
            Direction::Ingress => p
                .spec
                .ingress
                .iter()
                .map(|r| ModelRule {
                    action: &r.action,
                    peers: r
                        .from
                        .iter()
                        .map(|f| AdminEgressPeer {
                            namespaces: f.namespaces.clone(),
                            pods: f.pods.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ports: r.ports.as_ref(),
                })
                .collect(),
            Direction::Egress => p
                .spec
                .egress
                .iter()
                .map(|r| ModelRule {
                    action: &r.action,
                    peers: r.to.clone(),
                    ports: r.ports.as_ref(),
                })
                .collect(),
        }
    }

    /// NetworkPolicy's verdict for `pod` in `dir`: `None` when no policy isolates it there.
    fn np_verdict(
        &self,
        pod: &PolicyPod,
        dir: Direction,
        other: &Endpoint,
        other_ip: IpAddr,
        dst: &Endpoint,
        proto: Protocol,
        port: u16,
    ) -> Option<bool> {
        let w = &self.base;
        let pols: Vec<&NetworkPolicy> = w
            .policies
            .iter()
            .filter(|p| {
                let (i, e) = World::types(p.spec.as_ref().unwrap());
                w.selects(p, pod) && if dir == Direction::Ingress { i } else { e }
            })
            .collect();
        if pols.is_empty() {
            return None;
        }
        if dir == Direction::Ingress && matches!(other, Endpoint::Node) {
            // Kubelet probes.
            return Some(true);
        }
        Some(pols.iter().any(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap();
            let spec = p.spec.as_ref().unwrap();
            let rules: Vec<(Vec<_>, _)> = match dir {
                Direction::Ingress => spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.clone().unwrap_or_default(), &r.ports))
                    .collect(),
                Direction::Egress => spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.clone().unwrap_or_default(), &r.ports))
                    .collect(),
            };
            rules.iter().any(|(peers, ports)| {
                (peers.is_empty()
                    || peers
                        .iter()
                        .any(|pe| w.peer_matches(ns, pe, other, other_ip)))
                    && World::port_matches(ports, dst, w, proto, port)
            })
        }))
    }

    /// The verdict for `pod` (the source for egress, the destination for ingress).
    pub fn direction_allows(
        &self,
        pod_index: usize,
        dir: Direction,
        other: &Endpoint,
        other_ip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        let pod = &self.base.pods[pod_index];
        let me = Endpoint::Pod(pod_index);
        let dst = match dir {
            Direction::Ingress => &me,
            Direction::Egress => other,
        };
        let mut anps: Vec<&AdminNetworkPolicy> = self.anps.iter().collect();
        anps.sort_by_key(|p| (p.spec.priority, p.metadata.name.clone()));
        'anp: for p in anps {
            if !self.subject(&p.spec.subject, pod) {
                continue;
            }
            match self.first_match(Self::anp_rules(p, dir), other, other_ip, dst, proto, port) {
                Some("Allow") => return true,
                Some("Deny") => return false,
                Some(_) => break 'anp,
                None => {}
            }
        }
        if let Some(v) = self.np_verdict(pod, dir, other, other_ip, dst, proto, port) {
            return v;
        }
        if let Some(b) = &self.banp
            && self.subject(&b.spec.subject, pod)
        {
            match self.first_match(Self::banp_rules(b, dir), other, other_ip, dst, proto, port) {
                Some("Allow") => return true,
                Some("Deny") => return false,
                _ => {}
            }
        }
        true
    }

    /// Is a new connection src → dst allowed?
    pub fn allowed(
        &self,
        src: &Endpoint,
        sip: IpAddr,
        dst: &Endpoint,
        dip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        let egress = match src {
            Endpoint::Pod(i) => self.direction_allows(*i, Direction::Egress, dst, dip, proto, port),
            _ => true,
        };
        let ingress = match dst {
            Endpoint::Pod(i) => {
                self.direction_allows(*i, Direction::Ingress, src, sip, proto, port)
            }
            _ => true,
        };
        egress && ingress
    }

    pub fn admin_input(&self) -> AdminPolicyInput {
        AdminPolicyInput {
            anps: self.anps.clone(),
            banps: self.banp.iter().cloned().collect(),
            pods: self.base.pods.clone(),
            namespaces: self.base.namespaces.clone(),
            nodes: self.nodes.clone(),
            kubelet_ips: self.base.node_ips.clone(),
        }
    }
}
