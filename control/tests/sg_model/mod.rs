//! The brute-force SecurityGroup model shared by the property tests (against the planner's
//! rows) and the real-traffic truth tables (against packets): Kube-OVN's documented semantics
//! read directly from the objects, reusing nothing of the planner. Pods that name no group
//! get NetworkPolicy's verdict (netpol_model's helpers).

// Each test crate uses a part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferrovn_api::security_group::{SecurityGroup, SecurityGroupRule};
use ferrovn_control::plan::netpol::Protocol;
use ferrovn_control::plan::security_group::{SecurityGroupInput, SgPort};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use super::netpol_model::{Endpoint, World};

/// The source port of a connection: an ephemeral one (Linux picks from 32768..=60999; the
/// generated rules' source ranges either hold all of those or none). acl_eval's packets come
/// from this port too.
pub const SOURCE_PORT: u16 = 40000;

#[derive(Debug, Clone)]
pub struct SgWorld {
    pub base: World,
    pub groups: Vec<SecurityGroup>,
    /// Per pod: the annotation's group names.
    pub member_of: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

fn net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl SgWorld {
    pub fn group(&self, name: &str) -> Option<&SecurityGroup> {
        self.groups
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(name))
    }

    /// Every address of the pods naming `name`.
    pub fn member_ips(&self, name: &str) -> Vec<IpAddr> {
        self.base
            .pods
            .iter()
            .zip(&self.member_of)
            .filter(|(_, m)| m.iter().any(|g| g == name))
            .flat_map(|(p, _)| p.ips.clone())
            .collect()
    }

    pub fn rule_valid(&self, r: &SecurityGroupRule, tier: i64) -> bool {
        let v4 = match r.ip_version.as_str() {
            "ipv4" => true,
            "ipv6" => false,
            _ => return false,
        };
        let fam_ok = |s: &str| net(s).is_some_and(|n| n.addr().is_ipv4() == v4);
        let port_ok = |n: i64| (1..=65535).contains(&n);
        (1..=16384).contains(&r.priority)
            && match r.policy.as_str() {
                "allow" | "drop" | "deny" => true,
                "pass" => tier == 0,
                _ => false,
            }
            && match r.remote_type.as_str() {
                "address" => fam_ok(&r.remote_address),
                "securityGroup" => self.group(&r.remote_security_group).is_some(),
                _ => false,
            }
            && (r.local_address.is_empty() || fam_ok(&r.local_address))
            && match r.protocol.as_str() {
                "" | "all" | "icmp" => true,
                "tcp" | "udp" => {
                    port_ok(r.port_range_min)
                        && port_ok(r.port_range_max)
                        && r.port_range_min <= r.port_range_max
                        && ((r.source_port_range_min == 0 && r.source_port_range_max == 0)
                            || (port_ok(r.source_port_range_min)
                                && port_ok(r.source_port_range_max)
                                && r.source_port_range_min <= r.source_port_range_max))
                }
                _ => false,
            }
    }

    pub fn group_valid(&self, g: &SecurityGroup) -> bool {
        matches!(g.spec.tier, 0 | 1)
            && g.spec
                .ingress_rules
                .iter()
                .chain(&g.spec.egress_rules)
                .all(|r| self.rule_valid(r, g.spec.tier))
    }

    pub fn rule_matches(
        &self,
        r: &SecurityGroupRule,
        local: IpAddr,
        remote: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        if (r.ip_version == "ipv4") != remote.is_ipv4() {
            return false;
        }
        let remote_ok = match r.remote_type.as_str() {
            "address" => net(&r.remote_address).unwrap().contains(&remote),
            _ => self.member_ips(&r.remote_security_group).contains(&remote),
        };
        let local_ok =
            r.local_address.is_empty() || net(&r.local_address).unwrap().contains(&local);
        let in_range = |n: u16, lo: i64, hi: i64| i64::from(n) >= lo && i64::from(n) <= hi;
        let l4_ok = match r.protocol.as_str() {
            "" | "all" => true,
            // The packets here are TCP, UDP or SCTP.
            "icmp" => false,
            p => {
                let want = if p == "tcp" {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                proto == want
                    && in_range(port, r.port_range_min, r.port_range_max)
                    && (r.source_port_range_min == 0 && r.source_port_range_max == 0
                        || in_range(
                            SOURCE_PORT,
                            r.source_port_range_min,
                            r.source_port_range_max,
                        ))
            }
        };
        remote_ok && local_ok && l4_ok
    }

    /// Kube-OVN's security group semantics for pod `i` in `dir`; `None` when it names no
    /// group. Within a tier the rule with the smallest `priority` wins, ahead of same-group
    /// traffic, ahead of the isolation drop; NetworkPolicy's kubelet allow ranks like rule
    /// priority 15484. `pass` (tier 0) hands over to the tier 1 groups, where again everything
    /// not allowed is dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn sg_verdict(
        &self,
        i: usize,
        dir: Dir,
        other: &Endpoint,
        local: IpAddr,
        remote: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> Option<bool> {
        let named: BTreeSet<&str> = self.member_of[i].iter().map(String::as_str).collect();
        if named.is_empty() {
            return None;
        }
        let np_selected = self
            .base
            .policies
            .iter()
            .any(|p| self.base.selects(p, &self.base.pods[i]));
        for tier in [0, 1] {
            // (rank: higher wins, action)
            let mut cands: Vec<(i64, &str)> = vec![(2003, "drop")];
            if tier == 0 && dir == Dir::Ingress && matches!(other, Endpoint::Node) && np_selected {
                cands.push((3000, "allow"));
            }
            for g in named.iter().filter_map(|n| self.group(n)) {
                if g.spec.tier != tier || !self.group_valid(g) {
                    continue;
                }
                let rules = match dir {
                    Dir::Ingress => &g.spec.ingress_rules,
                    Dir::Egress => &g.spec.egress_rules,
                };
                for r in rules {
                    if self.rule_matches(r, local, remote, proto, port) {
                        let a = match r.policy.as_str() {
                            "allow" => "allow",
                            "pass" => "pass",
                            _ => "drop",
                        };
                        cands.push((18484 - r.priority, a));
                    }
                }
                let name = g.metadata.name.as_deref().unwrap();
                if g.spec.allow_same_group_traffic && self.member_ips(name).contains(&remote) {
                    cands.push((2004, "allow"));
                }
            }
            let best = cands.iter().max_by_key(|c| c.0).unwrap();
            match best.1 {
                "allow" => return Some(true),
                "drop" => return Some(false),
                _ => continue,
            }
        }
        Some(false)
    }

    /// NetworkPolicy's verdict for pod `i` in `dir` (Kubernetes semantics, netpol_model's
    /// helpers): allowed unless a policy isolates it there and no rule allows.
    pub fn np_verdict(
        &self,
        i: usize,
        dir: Dir,
        other: &Endpoint,
        other_ip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        let w = &self.base;
        let pod = &w.pods[i];
        let me = Endpoint::Pod(i);
        if dir == Dir::Ingress && matches!(other, Endpoint::Node) {
            return true;
        }
        let dst = if dir == Dir::Ingress { &me } else { other };
        let pols: Vec<&NetworkPolicy> = w
            .policies
            .iter()
            .filter(|p| {
                let (ing, eg) = World::types(p.spec.as_ref().unwrap());
                w.selects(p, pod) && if dir == Dir::Ingress { ing } else { eg }
            })
            .collect();
        pols.is_empty()
            || pols.iter().any(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap();
                let spec = p.spec.as_ref().unwrap();
                let rules: Vec<(Vec<NetworkPolicyPeer>, &Option<Vec<NetworkPolicyPort>>)> =
                    match dir {
                        Dir::Ingress => spec
                            .ingress
                            .iter()
                            .flatten()
                            .map(|r| (r.from.clone().unwrap_or_default(), &r.ports))
                            .collect(),
                        Dir::Egress => spec
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
            })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn direction(
        &self,
        i: usize,
        dir: Dir,
        other: &Endpoint,
        own_ip: IpAddr,
        other_ip: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> bool {
        self.sg_verdict(i, dir, other, own_ip, other_ip, proto, port)
            .unwrap_or_else(|| self.np_verdict(i, dir, other, other_ip, proto, port))
    }

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
            Endpoint::Pod(i) => self.direction(*i, Dir::Egress, dst, sip, dip, proto, port),
            _ => true,
        };
        let ingress = match dst {
            Endpoint::Pod(i) => self.direction(*i, Dir::Ingress, src, dip, sip, proto, port),
            _ => true,
        };
        egress && ingress
    }

    pub fn sg_input(&self) -> SecurityGroupInput {
        SecurityGroupInput {
            groups: self.groups.clone(),
            ports: self
                .base
                .pods
                .iter()
                .zip(&self.member_of)
                .map(|(p, m)| SgPort {
                    port: p.port.clone(),
                    ips: p.ips.clone(),
                    groups: m.clone(),
                    owner: format!("Pod {}/{}", p.namespace, p.name),
                    annotation: "ovn.kubernetes.io/security_groups".into(),
                })
                .collect(),
        }
    }
}
