//! Conntrack bypass: pod↔pod traffic on a switch that carries Service load balancers skips
//! conntrack; traffic addressed to a VIP and the replies of load-balanced connections do not.
//!
//! Why (docs/services.md, "Pod-to-pod does not pay for Services"): OVN 25.03 sends every IP
//! packet of a switch with load balancers through conntrack twice (ingress in the sender's zone,
//! egress in the receiver's zone; ovn-northd(8) Pre-LB), which cut DPDK pod↔pod to about a quarter
//! in `bench-ctcost`. Packets marked by an `allow-stateless` ACL skip both Pre-ACL and Pre-LB
//! (`REGBIT_ACL_STATELESS`), and so conntrack. The marks must spare exactly what needs conntrack,
//! and must treat both legs of a connection alike in each zone (conntrack calls a SYN-ACK whose
//! SYN it never saw invalid, and OVN drops it). A pod's zone sees its outgoing packets in the
//! ingress pipeline and its incoming ones in the egress pipeline, so a packet is marked when its
//! **peer** is a pod address on a port no Service targets:
//! - **ingress** (from-lport): `ip4.dst == {pod subnets of the VPC}` and the destination port is
//!   no target port of that protocol. A VIP is never in a pod subnet (a subnet holding one is
//!   left out), so traffic to a VIP keeps its DNAT;
//! - **egress** (to-lport): `ip4.src == {pod subnets}` and the source port is no target port.
//!   A backend's reply comes from its target port, so it keeps conntrack and is un-DNATed in the
//!   client's zone, and the client's zone saw the request (to the VIP, or directly to the
//!   target port) on the way out. A hairpinned packet (a pod reaching itself through its
//!   Service) is SNATed to the VIP by a `ct(commit, nat)` that does not recirculate, so the
//!   egress pipeline still matches the pod's own address: `!flags.loopback` (set by
//!   `ls_in_hairpin`) keeps it in conntrack, where the pod's zone must see it for the reply.
//!
//! Other IP protocols (ICMP: echo, and errors about Service connections) keep conntrack both
//! ways.
//!
//! Every match is positive: OVN expands `!=` against a set into the product of per-bit
//! mismatches, which with 1,000 VIPs never finished (`ovn-nbctl --wait=hv` timed out).
//!
//! An `allow-stateless` verdict would also bypass stateful allows and drops on the same packet,
//! so only switches without ACLs of their own get the marks, and when the caller excludes ports
//! of a switch (the ports any NetworkPolicy / AdminNetworkPolicy / security group selects), the
//! marks move to a port group of the switch's other pod ports instead of covering the whole
//! switch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_api::names::lb_group_name;
use ipnet::IpNet;

use super::netpol::{PlannedPgAcl, PlannedPortGroup};
use super::services::{PlannedChassisVars, PlannedLbGroup};
use super::{NbPlan, PlannedAcl, Protocol, SubnetIntent, owned_ids};

/// Priority of the bypass ACLs (OVN puts stateless ACLs in Pre-ACL at priority + 1000, above
/// the stateful hint at 100; the value only orders it among stateless ACLs, of which FerrOVN
/// plans no other).
pub const CT_BYPASS_PRIORITY: i64 = 1;
/// Tier of the bypass ACLs: the last one evaluated, after ANP (1), NetworkPolicy and subnet ACLs
/// (2); BANP (3) shares it and, like every policy, selects only excluded ports.
pub const CT_BYPASS_TIER: i64 = 3;

/// Per protocol, the ports Services target.
type TargetPorts = BTreeMap<Protocol, BTreeSet<u16>>;

/// A disjunction of `field` ranges holding exactly the ports not in `taken`: `None` when every
/// port is free (no condition needed), `Some("0")` (OVN's false) when none is.
fn free_ranges(field: &str, taken: &BTreeSet<u16>) -> Option<String> {
    let mut parts = Vec::new();
    let mut next: u32 = 0;
    for &p in taken {
        let p = u32::from(p);
        if p > next {
            parts.push((next, p - 1));
        }
        next = p + 1;
    }
    if next <= 65535 {
        parts.push((next, 65535));
    }
    if parts == [(0, 65535)] {
        return None;
    }
    if parts.is_empty() {
        return Some("0".into());
    }
    let terms: Vec<String> = parts
        .iter()
        .map(|&(lo, hi)| match (lo, hi) {
            (lo, hi) if lo == hi => format!("{field} == {lo}"),
            (0, hi) => format!("{field} <= {hi}"),
            (lo, 65535) => format!("{field} >= {lo}"),
            (lo, hi) => format!("({field} >= {lo} && {field} <= {hi})"),
        })
        .collect();
    Some(terms.join(" || "))
}

/// VIP addresses and, per protocol, the backend (target) ports of a VPC's load balancers.
/// Template load balancers (Local traffic policies) write `^VARIABLE` for the VIP address and
/// the backends; their values come from every chassis' `Chassis_Template_Var` row. `None` when
/// a template variable has no value anywhere or an address does not parse: then the VPC's
/// VIPs are not known for sure, and it gets no bypass.
fn vips_and_target_ports(
    group: &PlannedLbGroup,
    chassis_vars: &BTreeMap<String, PlannedChassisVars>,
) -> Option<(BTreeSet<IpAddr>, TargetPorts)> {
    let split = |s: &str| -> Option<(IpAddr, u16)> {
        let (ip, port) = s.rsplit_once(':')?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        Some((ip.parse().ok()?, port.parse().ok()?))
    };
    // `^NAME` (optionally followed by `:port`) → every chassis' value of NAME
    let expand = |s: &str| -> Option<Vec<String>> {
        let Some(rest) = s.strip_prefix('^') else {
            return Some(vec![s.to_string()]);
        };
        let (name, tail) = match rest.split_once(':') {
            Some((n, port)) => (n, format!(":{port}")),
            None => (rest, String::new()),
        };
        let values: Vec<String> = chassis_vars
            .values()
            .filter_map(|c| c.variables.get(name))
            .map(|v| format!("{v}{tail}"))
            .collect();
        (!values.is_empty()).then_some(values)
    };
    let mut vips = BTreeSet::new();
    let mut ports = TargetPorts::new();
    for lb in group.load_balancers.values() {
        for (vip, backends) in &lb.vips {
            for key in expand(vip)? {
                vips.insert(split(&key)?.0);
            }
            for value in expand(backends)? {
                for b in value.split(',').filter(|b| !b.is_empty()) {
                    ports.entry(lb.protocol).or_default().insert(split(b)?.1);
                }
            }
        }
    }
    Some((vips, ports))
}

/// TCP, UDP or SCTP with the peer's port (`dir`: `dst` on the way out of a pod, `src` on the
/// way in) no Service target port. Both legs of one connection then decide alike in each zone
/// (see the module doc).
fn peer_port_free(dir: &str, ports: &TargetPorts) -> String {
    Protocol::ALL
        .into_iter()
        .map(|proto| {
            let name = proto.ovn();
            let taken = ports.get(&proto).cloned().unwrap_or_default();
            match free_ranges(&format!("{name}.{dir}"), &taken) {
                None => name.to_string(),
                Some(free) => format!("({name} && ({free}))"),
            }
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

/// The two matches (from-lport, to-lport) of one address family, or `None` when the VPC has no
/// pod subnet of that family free of VIPs.
fn family_matches(
    af: &str,
    nets: &[IpNet],
    ports: &TargetPorts,
    port_group: Option<&str>,
) -> Option<(String, String)> {
    if nets.is_empty() {
        return None;
    }
    let nets = nets
        .iter()
        .map(|n| n.trunc().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let l4 = |dir: &str| peer_port_free(dir, ports);
    Some((
        format!(
            "{}{af}.dst == {{{nets}}} && ({})",
            port_group
                .map(|g| format!("inport == @{g} && "))
                .unwrap_or_default(),
            l4("dst")
        ),
        format!(
            "{}!flags.loopback && {af}.src == {{{nets}}} && ({})",
            port_group
                .map(|g| format!("outport == @{g} && "))
                .unwrap_or_default(),
            l4("src")
        ),
    ))
}

/// The port group of the pods of `switch` that get the bypass when some pods of the switch do
/// not (see [`plan_ct_bypass`]).
pub fn bypass_port_group_name(switch: &str) -> String {
    // OVN identifiers take no `-`; Kubernetes names have no `_`, so this stays injective.
    format!("ctbypass.{}", switch.replace('-', "_"))
}

/// Adds the bypass ACLs to every switch of `out` that references its VPC's load balancer group,
/// has no ACL of its own and holds pod ports not in `excluded`. Without an excluded port on the
/// switch the ACLs are the switch's own and cover it whole. With one, they belong to a port
/// group ([`bypass_port_group_name`]) of the switch's other pod ports: a pod entering or leaving
/// a policy's selection then moves one port group member (a `mutate`, like the policy's own
/// port group) instead of rewriting a match that lists every other pod of the switch, and a
/// pod label change stays a change of port groups and address sets only
/// (reconcile::scoped).
pub(super) fn plan_ct_bypass(
    out: &mut NbPlan,
    subnets: &BTreeMap<&str, &SubnetIntent>,
    excluded: &BTreeSet<String>,
) {
    let mut per_vpc: BTreeMap<String, (Vec<IpNet>, TargetPorts)> = BTreeMap::new();
    for vpc in out.routers.keys() {
        let Some(group) = out.lb_groups.get(&lb_group_name(vpc)) else {
            continue;
        };
        let Some((vips, ports)) = vips_and_target_ports(group, &out.chassis_vars) else {
            continue;
        };
        let nets: Vec<IpNet> = subnets
            .values()
            .filter(|s| s.vpc == *vpc)
            .flat_map(|s| s.nets())
            .filter(|n| !vips.iter().any(|v| n.contains(v)))
            .collect();
        per_vpc.insert(vpc.clone(), (nets, ports));
    }
    let mut groups = Vec::new();
    for sw in out.switches.values_mut() {
        let Some(subnet) = subnets.get(sw.name.as_str()) else {
            continue;
        };
        if sw.lb_groups.is_empty() || !sw.acls.is_empty() {
            continue;
        }
        let Some((nets, ports)) = per_vpc.get(&subnet.vpc) else {
            continue;
        };
        let pods: BTreeSet<String> = sw
            .ports
            .values()
            .filter(|p| p.type_.is_empty() && p.external_ids.contains_key("pod"))
            .filter(|p| !excluded.contains(&p.name))
            .map(|p| p.name.clone())
            .collect();
        if pods.is_empty() {
            continue;
        }
        // Router and localnet ports meet no conntrack here anyway (ovn-northd(8) Pre-LB
        // priority 110), so without an excluded pod the whole switch can carry the marks.
        let pg_name = bypass_port_group_name(&sw.name);
        let partial = sw.ports.keys().any(|p| excluded.contains(p));
        let mut pg = PlannedPortGroup {
            name: pg_name.clone(),
            ports: pods,
            acls: BTreeMap::new(),
            external_ids: owned_ids(&format!("pg/{pg_name}"), &[("ctbypass", &sw.name)]),
        };
        for (af, want_v4) in [("ip4", true), ("ip6", false)] {
            let fam: Vec<IpNet> = nets
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == want_v4)
                .copied()
                .collect();
            let Some((from, to)) =
                family_matches(af, &fam, ports, partial.then_some(pg_name.as_str()))
            else {
                continue;
            };
            for (direction, match_) in [("from-lport", from), ("to-lport", to)] {
                // keyed by switch, direction and family: a new pod changes nothing here
                let key = format!("ctbypass/{}/{direction}/{af}", sw.name);
                let external_ids = owned_ids(&key, &[("subnet", &sw.name)]);
                if partial {
                    pg.acls.insert(
                        key,
                        PlannedPgAcl {
                            direction: direction.into(),
                            priority: CT_BYPASS_PRIORITY,
                            tier: CT_BYPASS_TIER,
                            match_,
                            action: "allow-stateless".into(),
                            name: None,
                            options: Default::default(),
                            external_ids,
                        },
                    );
                } else {
                    sw.acls.insert(
                        key,
                        PlannedAcl {
                            direction: direction.into(),
                            priority: CT_BYPASS_PRIORITY,
                            tier: CT_BYPASS_TIER,
                            match_,
                            action: "allow-stateless".into(),
                            log: false,
                            severity: None,
                            name: None,
                            external_ids,
                        },
                    );
                }
            }
        }
        if partial && !pg.acls.is_empty() {
            groups.push(pg);
        }
    }
    for pg in groups {
        out.port_groups.insert(pg.name.clone(), pg);
    }
}

/// Conntrack bypass for pods a policy selects, where their own zone has nothing to track:
/// towards and from the peers of [`super::netpol::PolicyPlan::open_peers`] (every member accepts them on
/// every port and protocol, and no member's egress is isolated) both directions pass the
/// member's ACLs on their own merits, so the stateful verdicts need no connection state there.
/// OVN's conntrack zones are per logical port: the peer's zone decides for itself (tracked, or
/// bypassed on the same terms). Stateless packets still meet every ACL: an untracked packet
/// matching `allow-related` is allowed without a commit, one matching a drop is dropped
/// (ovn-northd(8), ACL hints), so the markers change no verdict; they sit in the last tier at
/// the lowest priority, where they only decide what nothing else decided (and allow it, as
/// the default would). Service traffic keeps conntrack exactly as in [`plan_ct_bypass`]
/// (peer ports that are Service target ports, hairpin). `None` target ports (a template
/// variable without a value) plan nothing, and neither does a group with a port on a switch
/// with ACLs of its own (a private subnet's drops rely on conntrack for return traffic, as in
/// [`plan_ct_bypass`]).
///
/// The callers' policies beyond NetworkPolicy (AdminNetworkPolicy, security groups) must leave
/// their ports out of `open` (a tier-1 deny would make the open peers not open).
pub(super) fn plan_policy_bypass(
    out: &mut NbPlan,
    open: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
) {
    let mut ports = TargetPorts::new();
    for group in out.lb_groups.values() {
        let Some((_, p)) = vips_and_target_ports(group, &out.chassis_vars) else {
            return;
        };
        for (proto, set) in p {
            ports.entry(proto).or_default().extend(set);
        }
    }
    let guarded: BTreeSet<&str> = out
        .switches
        .values()
        .filter(|sw| sw.acls.keys().any(|k| !k.starts_with("ctbypass/")))
        .flat_map(|sw| sw.ports.keys().map(String::as_str))
        .collect();
    let eligible: Vec<&String> = open
        .keys()
        .filter(|pg| {
            out.port_groups
                .get(*pg)
                .is_some_and(|g| g.ports.iter().all(|p| !guarded.contains(p.as_str())))
        })
        .collect();
    for pg_name in eligible {
        let Some(families) = open.get(pg_name) else {
            continue;
        };
        let Some(pg) = out.port_groups.get_mut(pg_name) else {
            continue;
        };
        let key_base = pg
            .external_ids
            .get(super::ROW_KEY)
            .cloned()
            .unwrap_or_else(|| pg_name.clone());
        for (af, sets) in families {
            let any = |side: &str| {
                sets.iter()
                    .map(|s| format!("{af}.{side} == ${s}"))
                    .collect::<Vec<_>>()
                    .join(" || ")
            };
            let from = format!(
                "inport == @{pg_name} && ({}) && ({})",
                any("dst"),
                peer_port_free("dst", &ports)
            );
            let to = format!(
                "outport == @{pg_name} && !flags.loopback && ({}) && ({})",
                any("src"),
                peer_port_free("src", &ports)
            );
            for (direction, match_) in [("from-lport", from), ("to-lport", to)] {
                let key = format!("ctbypass/{key_base}/{direction}/{af}");
                pg.acls.insert(
                    key.clone(),
                    PlannedPgAcl {
                        direction: direction.into(),
                        priority: CT_BYPASS_PRIORITY,
                        tier: CT_BYPASS_TIER,
                        match_,
                        action: "allow-stateless".into(),
                        name: None,
                        options: Default::default(),
                        external_ids: owned_ids(&key, &[("pg", pg_name)]),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DEFAULT_ROUTER, Desired, PortIntent, ServiceInputs, VpcIntent, plan};
    use ferrovn_api::MacAddr;
    use proptest::prelude::*;
    use serde_json::json;

    fn desired() -> Desired {
        let mut d = Desired {
            vpcs: vec![VpcIntent {
                name: DEFAULT_ROUTER.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        d.subnets.push(SubnetIntent::overlay(
            "ovn-default",
            DEFAULT_ROUTER,
            Some("10.16.0.0/16".parse().unwrap()),
            Some("fd00:10:16::/64".parse().unwrap()),
        ));
        let mut private = SubnetIntent::overlay(
            "private",
            DEFAULT_ROUTER,
            Some("10.17.0.0/16".parse().unwrap()),
            None,
        );
        private.private = true;
        d.subnets.push(private);
        for (i, (pod, subnet, ip)) in [
            ("a", "ovn-default", "10.16.0.5"),
            ("b", "ovn-default", "10.16.0.6"),
            ("c", "private", "10.17.0.5"),
        ]
        .into_iter()
        .enumerate()
        {
            d.ports.push(PortIntent {
                pod: pod.into(),
                namespace: "default".into(),
                provider: "ovn".into(),
                subnet: subnet.into(),
                node: "n0".into(),
                mac: MacAddr([0x0e, 0, 0, 0, 0, i as u8 + 1]),
                ips: vec![ip.parse().unwrap()],
                port_security: false,
            });
        }
        d.services = ServiceInputs {
            services: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.10",
                             "ports": [{"port": 80, "targetPort": 8080},
                                       {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]},
                }))
                .unwrap(),
            ],
            endpoint_slices: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "web-1", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "web"}},
                    "addressType": "IPv4",
                    "ports": [{"port": 8080, "protocol": "TCP"},
                              {"name": "dns", "port": 5353, "protocol": "UDP"}],
                    "endpoints": [{"addresses": ["10.16.0.6"]}],
                }))
                .unwrap(),
            ],
            ..Default::default()
        };
        d
    }

    fn bypass_acls(p: &NbPlan, switch: &str) -> Vec<PlannedAcl> {
        p.switches[switch]
            .acls
            .iter()
            .filter(|(k, _)| k.starts_with("ctbypass/"))
            // keys sort from-lport before to-lport, ip4 before ip6
            .map(|(_, a)| a.clone())
            .collect()
    }

    #[test]
    fn lb_switch_pods_skip_conntrack_except_vips_and_service_replies() {
        let p = plan(&desired());
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        let acls = bypass_acls(&p, "ovn-default");
        let got: Vec<(&str, &str)> = acls
            .iter()
            .map(|a| (a.direction.as_str(), a.match_.as_str()))
            .collect();

        assert_eq!(
            got,
            vec![
                (
                    "from-lport",
                    "ip4.dst == {10.16.0.0/16, 10.17.0.0/16} && \
                         ((tcp && (tcp.dst <= 8079 || tcp.dst >= 8081)) || \
                         (udp && (udp.dst <= 5352 || udp.dst >= 5354)) || sctp)"
                ),
                (
                    "from-lport",
                    "ip6.dst == {fd00:10:16::/64} && \
                         ((tcp && (tcp.dst <= 8079 || tcp.dst >= 8081)) || \
                         (udp && (udp.dst <= 5352 || udp.dst >= 5354)) || sctp)"
                ),
                (
                    "to-lport",
                    "!flags.loopback && ip4.src == {10.16.0.0/16, 10.17.0.0/16} && \
                     ((tcp && (tcp.src <= 8079 || tcp.src >= 8081)) || \
                     (udp && (udp.src <= 5352 || udp.src >= 5354)) || sctp)"
                ),
                (
                    "to-lport",
                    "!flags.loopback && ip6.src == {fd00:10:16::/64} && \
                     ((tcp && (tcp.src <= 8079 || tcp.src >= 8081)) || \
                     (udp && (udp.src <= 5352 || udp.src >= 5354)) || sctp)"
                ),
            ]
        );
        assert!(acls.iter().all(|a| a.action == "allow-stateless"
            && a.tier == CT_BYPASS_TIER
            && a.priority == CT_BYPASS_PRIORITY));
        // the private subnet has ACLs of its own: a stateless allow would bypass its drops
        assert!(bypass_acls(&p, "private").is_empty());
    }

    #[test]
    fn no_bypass_without_lbs_when_off_or_for_excluded_ports() {
        let mut d = desired();
        d.ct_bypass_off = true;
        assert!(bypass_acls(&plan(&d), "ovn-default").is_empty());

        let mut d = desired();
        d.subnets[0].enable_lb = false;
        assert!(
            bypass_acls(&plan(&d), "ovn-default").is_empty(),
            "no LB, no conntrack to skip"
        );

        let mut d = desired();
        d.ct_bypass_off = true;
        let mut p = plan(&d);
        let by_name: BTreeMap<&str, &SubnetIntent> =
            d.subnets.iter().map(|s| (s.name.as_str(), s)).collect();
        plan_ct_bypass(&mut p, &by_name, &["b.default".to_string()].into());
        assert!(
            bypass_acls(&p, "ovn-default").is_empty(),
            "not switch-wide with a pod excluded"
        );
        let pg = &p.port_groups[&bypass_port_group_name("ovn-default")];
        assert_eq!(pg.ports, ["a.default".to_string()].into(), "b is excluded");
        let got: Vec<(&str, &str)> = pg
            .acls
            .values()
            .map(|a| (a.direction.as_str(), a.match_.as_str()))
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        for (direction, m) in got {
            let port = if direction == "from-lport" {
                "inport"
            } else {
                "outport"
            };
            assert!(
                m.starts_with(&format!("{port} == @ctbypass.ovn_default && ")),
                "{m}"
            );
        }
        assert!(pg.acls.values().all(|a| a.action == "allow-stateless"
            && a.tier == CT_BYPASS_TIER
            && a.priority == CT_BYPASS_PRIORITY));
    }

    /// A Local-policy Service is a template load balancer: its target port comes from the
    /// chassis variables, so replies from its backends keep conntrack too.
    #[test]
    fn template_backends_keep_their_target_port_in_conntrack() {
        let mut d = desired();
        d.nodes.push(crate::plan::NodeIntent {
            name: "n0".into(),
            join_ips: vec![],
            join_mac: None,
            internal_ips: vec!["172.18.0.2".parse().unwrap()],
        });
        d.services.node_chassis = [("n0".to_string(), "ch0".to_string())].into();
        d.services.services.push(
            serde_json::from_value(json!({
                "metadata": {"name": "local", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "internalTrafficPolicy": "Local",
                         "ports": [{"port": 80, "targetPort": 9090}]},
            }))
            .unwrap(),
        );
        d.services.endpoint_slices.push(
            serde_json::from_value(json!({
                "metadata": {"name": "local-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "local"}},
                "addressType": "IPv4",
                "ports": [{"port": 9090, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.16.0.5"], "nodeName": "n0"}],
            }))
            .unwrap(),
        );
        let p = plan(&d);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert!(
            p.lb_groups.values().any(|g| g
                .load_balancers
                .values()
                .any(|lb| lb.vips.keys().any(|k| k.starts_with('^')))),
            "the Local Service is a template load balancer"
        );
        let acls = bypass_acls(&p, "ovn-default");
        assert!(!acls.is_empty());
        for a in &acls {
            assert!(
                a.match_.contains("<= 8079") && a.match_.contains("<= 9089"),
                "9090 (template backend) and 8080 keep conntrack: {}",
                a.match_
            );
        }
    }

    #[test]
    fn a_subnet_holding_a_vip_keeps_conntrack() {
        let mut d = desired();
        d.services.services[0].spec.as_mut().unwrap().cluster_ip = Some("10.17.0.99".into());
        let p = plan(&d);
        let acls = bypass_acls(&p, "ovn-default");
        assert!(
            acls.iter().all(|a| !a.match_.contains("10.17.0.0/16")),
            "{acls:?}"
        );
        assert!(acls.iter().any(|a| a.match_.contains("10.16.0.0/16")));
    }

    /// `d` with one NetworkPolicy in `default` selecting pods a and b (`app: x`), ingress from
    /// the same pods, `ports` if given; plus `extra` policies.
    fn with_policy(ports: serde_json::Value, extra: Vec<serde_json::Value>) -> Desired {
        use crate::plan::netpol::{PolicyInput, PolicyPod};
        let mut d = desired();
        let mut rule = json!({"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]});
        if !ports.is_null() {
            rule["ports"] = ports;
        }
        let mut policies = vec![json!({"metadata": {"name": "x", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [rule]}})];
        policies.extend(extra);
        d.network_policy = PolicyInput {
            policies: policies
                .into_iter()
                .map(|p| serde_json::from_value(p).unwrap())
                .collect(),
            pods: d
                .ports
                .iter()
                .map(|p| PolicyPod {
                    namespace: p.namespace.clone(),
                    name: p.pod.clone(),
                    labels: if p.pod == "c" {
                        Default::default()
                    } else {
                        [("app".to_string(), "x".to_string())].into()
                    },
                    port: p.port_name(),
                    ips: p.ips.clone(),
                    named_ports: Vec::new(),
                })
                .collect(),
            ..Default::default()
        };
        d
    }

    fn policy_marks(p: &NbPlan) -> Vec<(String, String)> {
        p.port_groups["np.default.x"]
            .acls
            .values()
            .filter(|a| a.action == "allow-stateless")
            .map(|a| (a.direction.clone(), a.match_.clone()))
            .collect()
    }

    #[test]
    fn pods_open_to_each_other_skip_conntrack_between_them() {
        let p = plan(&with_policy(serde_json::Value::Null, Vec::new()));
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        let set = p.port_groups["np.default.x"]
            .acls
            .values()
            .find(|a| a.action == "allow-related" && a.priority == 2001)
            .map(|a| a.match_.clone())
            .unwrap();
        let set = set
            .split('$')
            .nth(1)
            .unwrap()
            .split([')', ' '])
            .next()
            .unwrap();
        assert_eq!(
            policy_marks(&p),
            vec![
                (
                    "from-lport".to_string(),
                    format!(
                        "inport == @np.default.x && (ip4.dst == ${set}) && \
                         ((tcp && (tcp.dst <= 8079 || tcp.dst >= 8081)) || \
                         (udp && (udp.dst <= 5352 || udp.dst >= 5354)) || sctp)"
                    )
                ),
                (
                    "to-lport".to_string(),
                    format!(
                        "outport == @np.default.x && !flags.loopback && (ip4.src == ${set}) && \
                         ((tcp && (tcp.src <= 8079 || tcp.src >= 8081)) || \
                         (udp && (udp.src <= 5352 || udp.src >= 5354)) || sctp)"
                    )
                ),
            ]
        );
        let acl = &p.port_groups["np.default.x"].acls;
        assert!(
            acl.values()
                .filter(|a| a.action == "allow-stateless")
                .all(|a| a.tier == CT_BYPASS_TIER && a.priority == CT_BYPASS_PRIORITY),
            "the marks decide only what nothing else decided"
        );
    }

    #[test]
    fn no_policy_bypass_with_ports_egress_isolation_or_when_off() {
        let p = plan(&with_policy(json!([{"port": 80}]), Vec::new()));
        assert!(
            policy_marks(&p).is_empty(),
            "port 80 only: replies need conntrack"
        );

        let egress = json!({"metadata": {"name": "out", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Egress"]}});
        let p = plan(&with_policy(serde_json::Value::Null, vec![egress]));
        assert!(
            policy_marks(&p).is_empty(),
            "egress isolated: replies need conntrack"
        );

        let mut d = with_policy(serde_json::Value::Null, Vec::new());
        d.ct_bypass_off = true;
        assert!(policy_marks(&plan(&d)).is_empty());
    }

    /// Evaluates the disjunction `free_ranges` produced for one port, the way OVN reads it.
    fn admits(expr: &Option<String>, field: &str, port: u16) -> bool {
        let Some(expr) = expr else {
            return true;
        };
        expr.split(" || ").any(|term| {
            let t = term.trim_matches(|c| c == '(' || c == ')');
            t.split(" && ").all(|c| {
                let c = c.trim_start_matches(&format!("{field} "));
                let (op, v) = c.split_once(' ').unwrap();
                let v: u16 = v.parse().unwrap();
                match op {
                    "==" => port == v,
                    "<=" => port <= v,
                    ">=" => port >= v,
                    _ => panic!("operator {op}"),
                }
            })
        })
    }

    proptest! {
        /// A source port is admitted (conntrack skipped) exactly when it is no target port.
        #[test]
        fn free_ranges_admit_exactly_the_other_ports(
            taken in proptest::collection::btree_set(any::<u16>(), 0..6),
            probe in proptest::collection::vec(any::<u16>(), 50),
        ) {
            let e = free_ranges("tcp.src", &taken);
            let mut probes: Vec<u16> = probe;
            probes.extend(taken.iter().copied());
            probes.extend(taken.iter().map(|p| p.wrapping_add(1)));
            probes.extend(taken.iter().map(|p| p.wrapping_sub(1)));
            probes.extend([0, 1, 65534, 65535]);
            for p in probes {
                prop_assert_eq!(admits(&e, "tcp.src", p), !taken.contains(&p), "port {} in {:?}", p, e);
            }
        }
    }

    #[test]
    fn every_port_taken_admits_none_and_none_taken_admits_all() {
        assert_eq!(free_ranges("udp.src", &BTreeSet::new()), None);
        assert_eq!(
            free_ranges("udp.src", &[9].into()).as_deref(),
            Some("udp.src <= 8 || udp.src >= 10")
        );
        assert_eq!(
            free_ranges("tcp.src", &[0, 80, 65535].into()).as_deref(),
            Some("(tcp.src >= 1 && tcp.src <= 79) || (tcp.src >= 81 && tcp.src <= 65534)")
        );
        let all: BTreeSet<u16> = (0..=u16::MAX).collect();
        assert_eq!(free_ranges("sctp.src", &all).as_deref(), Some("0"));
    }
}
