//! AdminNetworkPolicy and BaselineAdminNetworkPolicy as OVN rows: a pure function from the
//! admin policies, pods, namespaces and nodes to port groups, address sets and ACLs.
//!
//! Ordering comes from OVN's ACL tiers (lowest tier first; in a tier the highest-priority
//! match decides; `pass`, or no match, goes on to the next tier):
//! - tier [`ANP_TIER`] (1): every AdminNetworkPolicy. ANPs are ranked by (`spec.priority`,
//!   name) and each gets a band of ACL priorities as wide as its longest rule list, counting
//!   down from [`ANP_TOP_PRIORITY`]: rule `i` of the ANP of rank `r` sits above every rule of
//!   rank `r + 1`. Allow is `allow-related` (final: NetworkPolicy never sees the packet), Deny
//!   is `drop`, Pass is OVN's `pass` (on to NetworkPolicy in tier 2). Ranking instead of a
//!   fixed `priority × 100` lets the whole 0..=1000 range fit OVN's 0..=32767 priorities.
//! - tier 2: NetworkPolicy ([`super::NETPOL_TIER`]); a pod an NP isolates always gets a verdict
//!   there (its allow or its default drop), so nothing of it reaches tier 3.
//! - tier [`BANP_TIER`] (3): the BaselineAdminNetworkPolicy `default`, rule `i` at
//!   [`BANP_TOP_PRIORITY`]` - i`.
//!
//! Every admin port group also accepts node → pod traffic (the kubelet's probes) with an
//! `allow-related` ACL. ANP and BANP peers cannot name a node as a source, so this changes no
//! verdict; it makes the switch stateful (OVN commits connections only on datapaths with an
//! `allow-related` ACL), so replies of connections a Deny did not stop are not dropped by an
//! egress Deny of the replying pod.
//!
//! Invalid input (which the API server rejects, but a manifest may hold) is reported in
//! [`AdminPolicyPlan::issues`] naming the field; the policy holding it is left out whole (a
//! half-applied policy would reorder its remaining rules), the other policies are applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_api::anp::{
    AdminEgressPeer, AdminIngressPeer, AdminNetworkPolicy, AdminPolicyPort, AdminPolicySubject,
    BANP_NAME, BaselineAdminNetworkPolicy, MAX_ANP_PRIORITY, NamespacedPod,
};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    Dir, Family, NAMESPACE_NAME_LABEL, PlannedAddressSet, PlannedPgAcl, PlannedPortGroup,
    PolicyNamespace, PolicyPod, Protocol, Selector, any_of, family, ident, stable_hash,
};
use crate::plan::{StrMap, owned_ids};

/// OVN ACL tier of AdminNetworkPolicy.
pub const ANP_TIER: i64 = 1;
/// OVN ACL tier of BaselineAdminNetworkPolicy.
pub const BANP_TIER: i64 = 3;
/// ACL priority of the first rule of the highest-precedence ANP.
pub const ANP_TOP_PRIORITY: i64 = 30000;
/// ACL priority of the first BANP rule (Kube-OVN's).
pub const BANP_TOP_PRIORITY: i64 = 1800;
/// Node → pod allow on every admin port group (above every rule; it changes no verdict).
pub const ADMIN_NODE_PRIORITY: i64 = 32000;
/// Rules per direction and peers / ports per rule the API allows.
const MAX_ITEMS: usize = 100;

// ---------------------------------------------------------------------------------------------
// Input and output

/// A node as an egress `nodes` peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Every address a pod reaches the node by (InternalIPs and join addresses).
    pub ips: Vec<IpAddr>,
}

/// Everything admin policy translation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminPolicyInput {
    pub anps: Vec<AdminNetworkPolicy>,
    pub banps: Vec<BaselineAdminNetworkPolicy>,
    pub pods: Vec<PolicyPod>,
    pub namespaces: Vec<PolicyNamespace>,
    pub nodes: Vec<AdminNode>,
    /// Where node → pod traffic comes from (the nodes' join addresses).
    pub kubelet_ips: Vec<IpAddr>,
}

impl AdminPolicyInput {
    /// No admin policy at all: nothing to plan.
    pub fn is_empty(&self) -> bool {
        self.anps.is_empty() && self.banps.is_empty()
    }
}

/// What the admin policies add to the NB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminPolicyPlan {
    /// By name.
    pub port_groups: BTreeMap<String, PlannedPortGroup>,
    /// By name.
    pub address_sets: BTreeMap<String, PlannedAddressSet>,
    pub issues: Vec<AdminPolicyIssue>,
}

impl AdminPolicyPlan {
    /// All ACLs, with the port group each belongs to.
    pub fn acls(&self) -> impl Iterator<Item = (&PlannedPortGroup, &PlannedPgAcl)> {
        self.port_groups
            .values()
            .flat_map(|pg| pg.acls.values().map(move |a| (pg, a)))
    }
}

/// An input field the translation could not use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{kind} {policy}: {field}: {reason}")]
pub struct AdminPolicyIssue {
    /// `AdminNetworkPolicy` or `BaselineAdminNetworkPolicy`.
    pub kind: &'static str,
    pub policy: String,
    pub field: String,
    pub reason: String,
}

/// Port group of ANP `name`.
pub fn anp_port_group_name(name: &str) -> String {
    format!("anp.{}", ident(name))
}

/// Port group of the BANP `name`.
pub fn banp_port_group_name(name: &str) -> String {
    format!("banp.{}", ident(name))
}

// ---------------------------------------------------------------------------------------------
// Validated form

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Pass,
}

impl Action {
    fn ovn(self) -> &'static str {
        match self {
            Action::Allow => "allow-related",
            Action::Deny => "drop",
            Action::Pass => "pass",
        }
    }
}

/// Pods by namespace labels and pod labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PodSet {
    namespaces: Selector,
    pods: Selector,
}

impl PodSet {
    fn canonical(&self) -> String {
        format!(
            "namespaces={};pods={}",
            self.namespaces.canonical(),
            self.pods.canonical()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    Pods(PodSet),
    Nodes(Selector),
    Networks(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortSpec {
    Range(Protocol, u16, u16),
    Named(String),
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    peers: Vec<Peer>,
    /// `None`: every port.
    ports: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone)]
struct Policy {
    kind: &'static str,
    name: String,
    priority: i32,
    subject: PodSet,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

const ANP_KIND: &str = "AdminNetworkPolicy";
const BANP_KIND: &str = "BaselineAdminNetworkPolicy";

/// Collects the issues of one policy.
struct Checker<'a> {
    kind: &'static str,
    policy: &'a str,
    issues: Vec<AdminPolicyIssue>,
}

impl Checker<'_> {
    fn bad(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.issues.push(AdminPolicyIssue {
            kind: self.kind,
            policy: self.policy.to_string(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn selector(&mut self, sel: &LabelSelector, field: &str) -> Selector {
        match Selector::parse(sel, field) {
            Ok(s) => s,
            Err(e) => {
                self.bad(e.field, e.reason);
                Selector::default()
            }
        }
    }

    fn pods(&mut self, p: &NamespacedPod, field: &str) -> PodSet {
        PodSet {
            namespaces: self.selector(&p.namespace_selector, &format!("{field}.namespaceSelector")),
            pods: self.selector(&p.pod_selector, &format!("{field}.podSelector")),
        }
    }

    fn subject(&mut self, s: &AdminPolicySubject) -> PodSet {
        match (&s.namespaces, &s.pods) {
            (Some(ns), None) => PodSet {
                namespaces: self.selector(ns, "spec.subject.namespaces"),
                pods: Selector::default(),
            },
            (None, Some(p)) => self.pods(p, "spec.subject.pods"),
            _ => {
                self.bad("spec.subject", "needs exactly one of namespaces or pods");
                PodSet {
                    namespaces: Selector::default(),
                    pods: Selector::default(),
                }
            }
        }
    }

    fn action(&mut self, a: &str, field: &str, baseline: bool) -> Action {
        match a {
            "Allow" => Action::Allow,
            "Deny" => Action::Deny,
            "Pass" if !baseline => Action::Pass,
            other => {
                let allowed = if baseline {
                    "Allow or Deny"
                } else {
                    "Allow, Deny or Pass"
                };
                self.bad(field, format!("{other:?} is not {allowed}"));
                Action::Deny
            }
        }
    }

    fn peer(&mut self, p: &AdminEgressPeer, field: &str) -> Option<Peer> {
        let set = usize::from(p.namespaces.is_some())
            + usize::from(p.pods.is_some())
            + usize::from(p.nodes.is_some())
            + usize::from(!p.networks.is_empty());
        if set != 1 {
            self.bad(
                field,
                "needs exactly one of namespaces, pods, nodes or networks",
            );
            return None;
        }
        if let Some(ns) = &p.namespaces {
            return Some(Peer::Pods(PodSet {
                namespaces: self.selector(ns, &format!("{field}.namespaces")),
                pods: Selector::default(),
            }));
        }
        if let Some(pods) = &p.pods {
            return Some(Peer::Pods(self.pods(pods, &format!("{field}.pods"))));
        }
        if let Some(nodes) = &p.nodes {
            return Some(Peer::Nodes(self.selector(nodes, &format!("{field}.nodes"))));
        }
        if p.networks.len() > 25 {
            self.bad(format!("{field}.networks"), "at most 25 networks");
        }
        let mut nets = Vec::new();
        for (i, n) in p.networks.iter().enumerate() {
            match n.parse::<IpNet>() {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => self.bad(
                    format!("{field}.networks[{i}]"),
                    format!("{n:?} is not a CIDR"),
                ),
            }
        }
        Some(Peer::Networks(nets))
    }

    /// Unset (empty) means TCP, as upstream defaults it.
    fn protocol(&mut self, s: &str, field: String) -> Option<Protocol> {
        let p = Protocol::parse((!s.is_empty()).then_some(s));
        if p.is_none() {
            self.bad(field, format!("{s:?} is not TCP, UDP or SCTP"));
        }
        p
    }

    fn port(&mut self, p: &AdminPolicyPort, field: &str) -> Option<PortSpec> {
        let set = usize::from(p.port_number.is_some())
            + usize::from(p.named_port.is_some())
            + usize::from(p.port_range.is_some());
        if set != 1 {
            self.bad(
                field,
                "needs exactly one of portNumber, namedPort or portRange",
            );
            return None;
        }
        if let Some(n) = &p.port_number {
            let pr = self.protocol(&n.protocol, format!("{field}.portNumber.protocol"))?;
            let Some(port) = port_num(n.port) else {
                self.bad(
                    format!("{field}.portNumber.port"),
                    format!("{} is not a port (1..=65535)", n.port),
                );
                return None;
            };
            return Some(PortSpec::Range(pr, port, port));
        }
        if let Some(r) = &p.port_range {
            let pr = self.protocol(&r.protocol, format!("{field}.portRange.protocol"))?;
            let Some(start) = port_num(r.start) else {
                self.bad(
                    format!("{field}.portRange.start"),
                    format!("{} is not a port (1..=65535)", r.start),
                );
                return None;
            };
            let Some(end) = port_num(r.end).filter(|e| *e >= start) else {
                self.bad(
                    format!("{field}.portRange.end"),
                    format!("{} is not a port at or above start {start}", r.end),
                );
                return None;
            };
            return Some(PortSpec::Range(pr, start, end));
        }
        let name = p.named_port.clone().unwrap_or_default();
        // A container port name (IANA_SVC_NAME); anything else would break the match syntax.
        let valid = !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            self.bad(
                format!("{field}.namedPort"),
                format!("{name:?} is not a container port name"),
            );
            return None;
        }
        Some(PortSpec::Named(name))
    }

    /// One rule: `peers_field` is `from` or `to`.
    fn rule(
        &mut self,
        field: &str,
        action: &str,
        peers: &[AdminEgressPeer],
        peers_field: &str,
        ports: Option<&Vec<AdminPolicyPort>>,
        baseline: bool,
    ) -> Rule {
        let action = self.action(action, &format!("{field}.action"), baseline);
        if peers.is_empty() {
            self.bad(format!("{field}.{peers_field}"), "needs at least one peer");
        }
        if peers.len() > MAX_ITEMS {
            self.bad(format!("{field}.{peers_field}"), "at most 100 peers");
        }
        let peers: Vec<Peer> = peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.peer(p, &format!("{field}.{peers_field}[{i}]")))
            .collect();
        let ports = ports.map(|ports| {
            if ports.is_empty() {
                self.bad(
                    format!("{field}.ports"),
                    "when set, needs at least one port",
                );
            }
            if ports.len() > MAX_ITEMS {
                self.bad(format!("{field}.ports"), "at most 100 ports");
            }
            ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| self.port(p, &format!("{field}.ports[{i}]")))
                .collect::<Vec<_>>()
        });
        let names_nodes_or_networks = peers
            .iter()
            .any(|p| matches!(p, Peer::Nodes(_) | Peer::Networks(_)));
        if names_nodes_or_networks
            && ports
                .iter()
                .flatten()
                .any(|p| matches!(p, PortSpec::Named(_)))
        {
            self.bad(
                format!("{field}.ports"),
                "a named port cannot be used with nodes or networks peers",
            );
        }
        Rule {
            action,
            peers,
            ports,
        }
    }
}

fn port_num(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|n| *n > 0)
}

fn ingress_as_egress(p: &AdminIngressPeer) -> AdminEgressPeer {
    AdminEgressPeer {
        namespaces: p.namespaces.clone(),
        pods: p.pods.clone(),
        nodes: None,
        networks: Vec::new(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn check_anp(p: &AdminNetworkPolicy) -> Result<Policy, Vec<AdminPolicyIssue>> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let mut c = Checker {
        kind: ANP_KIND,
        policy: &name,
        issues: Vec::new(),
    };
    if !valid_name(&name) {
        c.bad("metadata.name", format!("{name:?} is not a DNS subdomain"));
    }
    let spec = &p.spec;
    if !(0..=MAX_ANP_PRIORITY).contains(&spec.priority) {
        c.bad(
            "spec.priority",
            format!("{} is outside 0..={MAX_ANP_PRIORITY}", spec.priority),
        );
    }
    let subject = c.subject(&spec.subject);
    for (dir, n) in [
        ("ingress", spec.ingress.len()),
        ("egress", spec.egress.len()),
    ] {
        if n > MAX_ITEMS {
            c.bad(format!("spec.{dir}"), format!("{n} rules, at most 100"));
        }
    }
    let ingress = spec
        .ingress
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let peers: Vec<AdminEgressPeer> = r.from.iter().map(ingress_as_egress).collect();
            let field = format!("spec.ingress[{i}]");
            c.rule(&field, &r.action, &peers, "from", r.ports.as_ref(), false)
        })
        .collect();
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("spec.egress[{i}]");
            c.rule(&field, &r.action, &r.to, "to", r.ports.as_ref(), false)
        })
        .collect();
    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    Ok(Policy {
        kind: ANP_KIND,
        name,
        priority: spec.priority,
        subject,
        ingress,
        egress,
    })
}

fn check_banp(p: &BaselineAdminNetworkPolicy) -> Result<Policy, Vec<AdminPolicyIssue>> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let mut c = Checker {
        kind: BANP_KIND,
        policy: &name,
        issues: Vec::new(),
    };
    if name != BANP_NAME {
        c.bad(
            "metadata.name",
            format!("{name:?}: the only BaselineAdminNetworkPolicy is named {BANP_NAME:?}"),
        );
    }
    let spec = &p.spec;
    let subject = c.subject(&spec.subject);
    for (dir, n) in [
        ("ingress", spec.ingress.len()),
        ("egress", spec.egress.len()),
    ] {
        if n > MAX_ITEMS {
            c.bad(format!("spec.{dir}"), format!("{n} rules, at most 100"));
        }
    }
    let ingress = spec
        .ingress
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let peers: Vec<AdminEgressPeer> = r.from.iter().map(ingress_as_egress).collect();
            let field = format!("spec.ingress[{i}]");
            c.rule(&field, &r.action, &peers, "from", r.ports.as_ref(), true)
        })
        .collect();
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("spec.egress[{i}]");
            c.rule(&field, &r.action, &r.to, "to", r.ports.as_ref(), true)
        })
        .collect();
    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    Ok(Policy {
        kind: BANP_KIND,
        name,
        priority: 0,
        subject,
        ingress,
        egress,
    })
}

// ---------------------------------------------------------------------------------------------
// Translation

/// (protocol, number) → family → addresses of the pods whose port of one name is that.
type NamedPortAddrs = BTreeMap<(Protocol, u16), BTreeMap<Family, BTreeSet<String>>>;

struct Ctx<'a> {
    ns_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
    pods: &'a [PolicyPod],
    nodes: &'a [AdminNode],
    pod_families: BTreeSet<Family>,
    /// Named port → (protocol, number) → family → addresses.
    named: BTreeMap<String, NamedPortAddrs>,
    address_sets: BTreeMap<String, PlannedAddressSet>,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a AdminPolicyInput) -> Self {
        let mut ns_labels: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for ns in &input.namespaces {
            ns_labels.insert(ns.name.as_str(), ns.labels.clone());
        }
        for p in &input.pods {
            ns_labels.entry(p.namespace.as_str()).or_default();
        }
        for (name, labels) in &mut ns_labels {
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.to_string());
        }
        let mut named: BTreeMap<String, NamedPortAddrs> = BTreeMap::new();
        let mut pod_families = BTreeSet::new();
        for p in &input.pods {
            for ip in &p.ips {
                pod_families.insert(family(ip));
                for np in &p.named_ports {
                    named
                        .entry(np.name.clone())
                        .or_default()
                        .entry((np.protocol, np.port))
                        .or_default()
                        .entry(family(ip))
                        .or_default()
                        .insert(ip.to_string());
                }
            }
        }
        Ctx {
            ns_labels,
            pods: &input.pods,
            nodes: &input.nodes,
            pod_families,
            named,
            address_sets: BTreeMap::new(),
        }
    }

    fn selects(&self, set: &PodSet, pod: &PolicyPod) -> bool {
        self.ns_labels
            .get(pod.namespace.as_str())
            .is_some_and(|l| set.namespaces.matches(l))
            && set.pods.matches(&pod.labels)
    }

    fn add_set(&mut self, name: String, addresses: BTreeSet<String>, what: (&str, &str)) {
        self.address_sets
            .entry(name.clone())
            .or_insert_with(|| PlannedAddressSet {
                external_ids: owned_ids(&format!("as/{name}"), &[what]),
                name,
                addresses,
            });
    }

    /// `ip4.<side> == $set || ip6.<side> == $set` over the pods of `set`; `None` when no pod
    /// has an address (the peer matches nothing).
    fn pods_clause(&mut self, set: &PodSet, side: &str) -> Option<String> {
        let canonical = set.canonical();
        let hash = stable_hash(&canonical);
        let mut parts = Vec::new();
        for f in self.pod_families.clone() {
            let addresses: BTreeSet<String> = self
                .pods
                .iter()
                .filter(|p| self.selects(set, p))
                .flat_map(|p| p.ips.iter())
                .filter(|ip| family(ip) == f)
                .map(IpAddr::to_string)
                .collect();
            let name = format!("anp.pods.{hash:016x}.{}", f.ovn());
            parts.push(format!("{}.{side} == ${name}", f.ovn()));
            self.add_set(name, addresses, ("anp-peer", canonical.as_str()));
        }
        (!parts.is_empty()).then(|| parts.join(" || "))
    }

    fn nodes_clause(&mut self, sel: &Selector) -> Option<String> {
        let canonical = sel.canonical();
        let hash = stable_hash(&canonical);
        let families: BTreeSet<Family> = self
            .nodes
            .iter()
            .flat_map(|n| n.ips.iter())
            .map(family)
            .collect();
        let mut parts = Vec::new();
        for f in families {
            let addresses: BTreeSet<String> = self
                .nodes
                .iter()
                .filter(|n| sel.matches(&n.labels))
                .flat_map(|n| n.ips.iter())
                .filter(|ip| family(ip) == f)
                .map(IpAddr::to_string)
                .collect();
            let name = format!("anp.nodes.{hash:016x}.{}", f.ovn());
            parts.push(format!("{}.dst == ${name}", f.ovn()));
            self.add_set(name, addresses, ("anp-nodes", canonical.as_str()));
        }
        (!parts.is_empty()).then(|| parts.join(" || "))
    }

    fn peer_clause(&mut self, peer: &Peer, side: &str) -> Option<String> {
        match peer {
            Peer::Pods(set) => self.pods_clause(set, side),
            Peer::Nodes(sel) => self.nodes_clause(sel),
            Peer::Networks(nets) => {
                let mut parts = Vec::new();
                for f in [Family::V4, Family::V6] {
                    let of_family: Vec<String> = nets
                        .iter()
                        .filter(|n| family(&n.addr()) == f)
                        .map(ToString::to_string)
                        .collect();
                    if !of_family.is_empty() {
                        parts.push(format!(
                            "{}.{side} == {{{}}}",
                            f.ovn(),
                            of_family.join(", ")
                        ));
                    }
                }
                (!parts.is_empty()).then(|| parts.join(" || "))
            }
        }
    }

    fn port_clause(&mut self, port: &PortSpec) -> Option<String> {
        match port {
            PortSpec::Range(proto, lo, hi) => {
                let l4 = proto.ovn();
                Some(if lo == hi {
                    format!("{l4}.dst == {lo}")
                } else {
                    format!("{l4}.dst >= {lo} && {l4}.dst <= {hi}")
                })
            }
            // Resolved on the destination pod: number n (of protocol p) only towards the pods
            // whose port of that name is n/p.
            PortSpec::Named(name) => {
                let by_num = self.named.get(name).cloned()?;
                let mut alts = Vec::new();
                for ((proto, num), fams) in by_num {
                    let l4 = proto.ovn();
                    let mut dst = Vec::new();
                    for (f, addresses) in fams {
                        let set = format!("anp.port.{}.{l4}.{num}.{}", ident(name), f.ovn());
                        dst.push(format!("{}.dst == ${set}", f.ovn()));
                        let what = format!("{name}/{l4}/{num}");
                        self.add_set(set, addresses, ("anp-named-port", what.as_str()));
                    }
                    alts.push(format!("(({}) && {l4}.dst == {num})", dst.join(" || ")));
                }
                (!alts.is_empty()).then(|| alts.join(" || "))
            }
        }
    }

    /// The match of one rule on port group `pg`, `None` when it can match nothing.
    fn rule_match(&mut self, pg: &str, dir: Dir, rule: &Rule) -> Option<String> {
        let peers: Vec<String> = rule
            .peers
            .iter()
            .filter_map(|p| self.peer_clause(p, dir.peer_side()))
            .collect();
        if peers.is_empty() {
            return None;
        }
        let mut m = format!("{} == @{pg} && ip && ({})", dir.port(), any_of(&peers));
        if let Some(ports) = &rule.ports {
            let ports: Vec<String> = ports.iter().filter_map(|p| self.port_clause(p)).collect();
            if ports.is_empty() {
                return None;
            }
            m.push_str(&format!(" && ({})", any_of(&ports)));
        }
        Some(m)
    }
}

/// One ACL of an admin port group.
fn admin_acl(
    policy: &Policy,
    pg: &str,
    dir: Dir,
    priority: i64,
    match_: String,
    action: &str,
    what: &str,
) -> (String, PlannedPgAcl) {
    let (short, tier) = if policy.kind == ANP_KIND {
        ("anp", ANP_TIER)
    } else {
        ("banp", BANP_TIER)
    };
    let row_key = format!("{short}acl/{}/{}/{what}", policy.name, dir.as_str());
    let mut options = StrMap::new();
    if dir == Dir::Egress {
        // As NetworkPolicy: after load balancing, a Service VIP is its backend pod already.
        options.insert("apply-after-lb".into(), "true".into());
    }
    let mut name = format!("{short}:{}", policy.name);
    // Kubernetes names are ASCII (checked), so any byte index is a char boundary.
    name.truncate(63);
    let acl = PlannedPgAcl {
        direction: dir.ovn_direction().into(),
        priority,
        tier,
        match_,
        action: action.into(),
        name: Some(name),
        options,
        external_ids: owned_ids(
            &row_key,
            &[
                (short, policy.name.as_str()),
                ("direction", dir.as_str()),
                ("pg", pg),
            ],
        ),
    };
    (row_key, acl)
}

/// The port group of one policy with its ACLs; rule `i` of a direction at `top - i`.
fn plan_policy(
    cx: &mut Ctx<'_>,
    input: &AdminPolicyInput,
    policy: &Policy,
    top: i64,
) -> PlannedPortGroup {
    let (pg, short) = if policy.kind == ANP_KIND {
        (anp_port_group_name(&policy.name), "anp")
    } else {
        (banp_port_group_name(&policy.name), "banp")
    };
    let ports: BTreeSet<String> = input
        .pods
        .iter()
        .filter(|p| cx.selects(&policy.subject, p))
        .map(|p| p.port.clone())
        .collect();
    let mut acls = BTreeMap::new();
    for (dir, rules) in [
        (Dir::Ingress, &policy.ingress),
        (Dir::Egress, &policy.egress),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            let Some(m) = cx.rule_match(&pg, dir, rule) else {
                continue;
            };
            let priority = top - i64::try_from(i).unwrap_or(i64::MAX / 2);
            let (k, a) = admin_acl(
                policy,
                &pg,
                dir,
                priority,
                m,
                rule.action.ovn(),
                &i.to_string(),
            );
            acls.insert(k, a);
        }
    }
    let kubelet: Vec<String> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| input.kubelet_ips.iter().any(|ip| family(ip) == *f))
        .map(|f| format!("{}.src == $anp.kubelet.{}", f.ovn(), f.ovn()))
        .collect();
    if !kubelet.is_empty() {
        let (k, a) = admin_acl(
            policy,
            &pg,
            Dir::Ingress,
            ADMIN_NODE_PRIORITY,
            format!("outport == @{pg} && ({})", kubelet.join(" || ")),
            "allow-related",
            "node",
        );
        acls.insert(k, a);
    }
    PlannedPortGroup {
        external_ids: owned_ids(&format!("pg/{pg}"), &[(short, policy.name.as_str())]),
        name: pg,
        ports,
        acls,
    }
}

/// Translates every admin policy of `input`. The same input in any order gives the same plan.
pub fn plan_admin_policies(input: &AdminPolicyInput) -> AdminPolicyPlan {
    let mut out = AdminPolicyPlan::default();
    let mut anps = Vec::new();
    for p in &input.anps {
        match check_anp(p) {
            Ok(p) => anps.push(p),
            Err(issues) => out.issues.extend(issues),
        }
    }
    anps.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    let mut banps = Vec::new();
    for p in &input.banps {
        match check_banp(p) {
            Ok(p) => banps.push(p),
            Err(issues) => out.issues.extend(issues),
        }
    }
    banps.sort_by(|a, b| a.name.cmp(&b.name));

    let mut cx = Ctx::new(input);
    let mut top = ANP_TOP_PRIORITY;
    let mut previous: Option<&Policy> = None;
    let mut seen = BTreeSet::new();
    for p in &anps {
        if !seen.insert(p.name.as_str()) {
            out.issues.push(AdminPolicyIssue {
                kind: ANP_KIND,
                policy: p.name.clone(),
                field: "metadata.name".into(),
                reason: "defined twice (the second is left out)".into(),
            });
            continue;
        }
        if let Some(prev) = previous.filter(|prev| prev.priority == p.priority) {
            // Upstream leaves the order of equal priorities undefined; ours is by name, and
            // the user hears about it.
            out.issues.push(AdminPolicyIssue {
                kind: ANP_KIND,
                policy: p.name.clone(),
                field: "spec.priority".into(),
                reason: format!(
                    "{} is also the priority of {:?}; applied after it (by name)",
                    p.priority, prev.name
                ),
            });
        }
        let width = i64::try_from(p.ingress.len().max(p.egress.len()).max(1)).unwrap_or(1);
        // OVN priorities end at 0.
        if top - width < 0 {
            out.issues.push(AdminPolicyIssue {
                kind: ANP_KIND,
                policy: p.name.clone(),
                field: "spec".into(),
                reason: format!(
                    "no OVN ACL priorities left for its rules (the ANPs ahead of it use {})",
                    ANP_TOP_PRIORITY - top
                ),
            });
            previous = Some(p);
            continue;
        }
        let pg = plan_policy(&mut cx, input, p, top);
        out.port_groups.insert(pg.name.clone(), pg);
        top -= width;
        previous = Some(p);
    }
    if let Some(b) = banps.first() {
        let pg = plan_policy(&mut cx, input, b, BANP_TOP_PRIORITY);
        out.port_groups.insert(pg.name.clone(), pg);
    }
    if !out.port_groups.is_empty() {
        for f in [Family::V4, Family::V6] {
            let addresses: BTreeSet<String> = input
                .kubelet_ips
                .iter()
                .filter(|ip| family(ip) == f)
                .map(IpAddr::to_string)
                .collect();
            if !addresses.is_empty() {
                cx.add_set(
                    format!("anp.kubelet.{}", f.ovn()),
                    addresses,
                    ("anp-nodes", "join"),
                );
            }
        }
    }
    out.address_sets = cx.address_sets;
    out.issues.sort();
    out.issues.dedup();
    out
}
