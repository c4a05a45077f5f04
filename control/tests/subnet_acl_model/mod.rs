//! A model of Kube-OVN Subnet `spec.acls` entries on the pods' switch next to NetworkPolicy,
//! built from how ovn-northd(8) lays out the switch's ACL stages, for the real-traffic truth
//! tables (kernel and DPDK pods). It reads the entries and the policies' model, not the
//! planner's rows.

// Each test crate uses a part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::IpAddr;

use ferrovn_control::plan::AclIntent;
use ferrovn_control::plan::netpol::Protocol;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::netpol_model::{Endpoint, World};

/// A `spec.acls` entry of a case, in a form both the OVN match and the model are made from:
/// `ip4` plus the listed sources, destinations and L4 source / destination port.
pub struct SubnetAcl {
    /// `to-lport` (towards a port of the switch) or `from-lport` (entering from one).
    pub to_lport: bool,
    pub priority: i64,
    pub src: &'static [&'static str],
    pub dst: &'static [&'static str],
    /// `<proto>.dst == <port>`.
    pub l4: Option<(Protocol, u16)>,
    /// `<proto>.src == <port>`: what only a reply from a server port carries.
    pub l4_src: Option<(Protocol, u16)>,
    /// `allow-related`, else `drop`.
    pub allow: bool,
}

impl SubnetAcl {
    fn new(to_lport: bool, priority: i64, allow: bool) -> Self {
        SubnetAcl {
            to_lport,
            priority,
            src: &[],
            dst: &[],
            l4: None,
            l4_src: None,
            allow,
        }
    }

    /// A `to-lport` `drop` entry matching every IPv4 packet until narrowed.
    pub fn drop_to(priority: i64) -> Self {
        Self::new(true, priority, false)
    }

    pub fn drop_from(priority: i64) -> Self {
        Self::new(false, priority, false)
    }

    /// A `to-lport` `allow-related` entry.
    pub fn allow_to(priority: i64) -> Self {
        Self::new(true, priority, true)
    }

    pub fn allow_from(priority: i64) -> Self {
        Self::new(false, priority, true)
    }

    pub fn src(mut self, v: &'static [&'static str]) -> Self {
        self.src = v;
        self
    }

    pub fn dst(mut self, v: &'static [&'static str]) -> Self {
        self.dst = v;
        self
    }

    pub fn dport(mut self, proto: Protocol, port: u16) -> Self {
        self.l4 = Some((proto, port));
        self
    }

    pub fn sport(mut self, proto: Protocol, port: u16) -> Self {
        self.l4_src = Some((proto, port));
        self
    }

    /// The entry as the Subnet's `spec.acls` carries it.
    pub fn intent(&self) -> AclIntent {
        let set = |field: &str, v: &[&str]| match v {
            [one] => format!("ip4.{field} == {one}"),
            _ => format!("ip4.{field} == {{{}}}", v.join(", ")),
        };
        let mut m = vec!["ip4".to_string()];
        if !self.src.is_empty() {
            m.push(set("src", self.src));
        }
        if !self.dst.is_empty() {
            m.push(set("dst", self.dst));
        }
        if let Some((proto, port)) = self.l4 {
            m.push(format!("{}.dst == {port}", proto.ovn()));
        }
        if let Some((proto, port)) = self.l4_src {
            m.push(format!("{}.src == {port}", proto.ovn()));
        }
        AclIntent {
            direction: if self.to_lport {
                "to-lport"
            } else {
                "from-lport"
            }
            .into(),
            priority: self.priority,
            match_: m.join(" && "),
            action: if self.allow { "allow-related" } else { "drop" }.into(),
        }
    }

    /// Whether a packet matches. A request carries the server port as its destination and an
    /// ephemeral source port (`None`: no entry names one); a reply the other way round.
    fn matches(
        &self,
        sip: IpAddr,
        dip: IpAddr,
        proto: Protocol,
        sport: Option<u16>,
        dport: Option<u16>,
    ) -> bool {
        let has = |v: &[&str], ip: IpAddr| {
            v.is_empty() || v.iter().any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip))
        };
        let l4 = |want: Option<(Protocol, u16)>, got: Option<u16>| {
            want.is_none_or(|(p, n)| p == proto && got == Some(n))
        };
        has(self.src, sip) && has(self.dst, dip) && l4(self.l4, dport) && l4(self.l4_src, sport)
    }
}

/// OVN's verdict for a connection `src` → `dst` on `proto`/`port` with `acls` on the pods'
/// switch and the NetworkPolicies of `w`, from how northd builds the stages (ovn-northd(8)):
/// - from-lport subnet ACLs are evaluated before load balancing, NetworkPolicy's egress ACLs
///   (`apply-after-lb`) in a stage of their own after it: both must allow;
/// - to-lport subnet ACLs and NetworkPolicy's ingress ACLs (drop 2000, allow 2001, node 3000)
///   are one stage of tier 2: the highest priority that matches decides, none allows;
/// - when the switch has a stateful ACL (an `allow-related` entry, or any NetworkPolicy), a
///   reply passes every stage on its connection's conntrack entry, with one exception: a
///   reply entering from the router port (the node's reply to a pod) is untracked, because
///   the switch skips conntrack for packets from a router port, so it meets the from-lport
///   ACLs as a new packet would (the case "from-lport drop of the server ports' replies"
///   shows it). Towards the router port the switch skips conntrack too, but the packet still
///   carries the state of the lookup at its source pod's port: a pod's reply to the node
///   passes. Without a stateful ACL every reply is a new packet for the ACLs.
pub fn allowed(
    w: &World,
    acls: &[SubnetAcl],
    (src, sip): (&Endpoint, IpAddr),
    (dst, dip): (&Endpoint, IpAddr),
    proto: Protocol,
    port: u16,
) -> bool {
    let stateful = !w.policies.is_empty() || acls.iter().any(|a| a.allow);
    let stage = |to_lport: bool, sip, dip, sport, dport, np: Vec<(i64, bool)>| {
        acls.iter()
            .filter(|a| a.to_lport == to_lport && a.matches(sip, dip, proto, sport, dport))
            .map(|a| (a.priority, a.allow))
            .chain(np)
            .max_by_key(|c| c.0)
            .is_none_or(|c| c.1)
    };
    // NetworkPolicy's to-lport ACLs at the destination pod that match.
    let mut np_in = Vec::new();
    if let Endpoint::Pod(i) = dst {
        let pod = &w.pods[*i];
        let selecting: Vec<&NetworkPolicy> =
            w.policies.iter().filter(|p| w.selects(p, pod)).collect();
        if matches!(src, Endpoint::Node) && !selecting.is_empty() {
            np_in.push((3000, true));
        }
        if selecting
            .iter()
            .any(|p| World::types(p.spec.as_ref().unwrap()).0)
        {
            np_in.push(if w.ingress_allowed(src, sip, dst, proto, port) {
                (2001, true)
            } else {
                (2000, false)
            });
        }
    }
    let to_node = matches!(dst, Endpoint::Node);
    let forward = stage(false, sip, dip, None, Some(port), Vec::new())
        && w.egress_allowed(src, dst, dip, proto, port)
        && stage(true, sip, dip, None, Some(port), np_in);
    let reply = ((stateful && !to_node) || stage(false, dip, sip, Some(port), None, Vec::new()))
        && (stateful || stage(true, dip, sip, Some(port), None, Vec::new()));
    forward && reply
}
