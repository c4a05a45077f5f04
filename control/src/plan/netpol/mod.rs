//! `networking.k8s.io/v1` NetworkPolicy as OVN rows: a pure function from policies, pods and
//! namespaces to port groups, address sets and ACLs.
//!
//! Layout (all ACLs in OVN tier [`NETPOL_TIER`]; tier 1 is left to AdminNetworkPolicy, tier 3 to
//! BaselineAdminNetworkPolicy, so a verdict of ANP comes first and BANP only sees what no
//! NetworkPolicy decided):
//! - one port group per policy, `np.<ns>.<name>`, holding the ports of the pods it selects;
//! - per isolated direction, a default drop ([`DROP_PRIORITY`]) on that port group;
//! - per rule, one `allow-related` ACL ([`ALLOW_PRIORITY`]) on that port group, so any policy's
//!   allow beats any policy's drop (the union of policies) and replies pass through conntrack;
//! - every selected pod accepts traffic from the nodes' join addresses ([`NODE_PRIORITY`]), so
//!   kubelet probes keep working. Also on egress-only policies, where it changes no verdict: it
//!   is what makes the switch stateful (OVN commits new connections to conntrack only on a
//!   datapath with an `allow-related` ACL), so the replies of connections *into* a pod whose
//!   egress is isolated pass instead of hitting its egress drop;
//! - address sets are shared: one per distinct peer selector and family
//!   (`np.peer.<hash>.ip4`), one per named container port (`np.port.<name>.<proto>.<n>.ip4`),
//!   one for the nodes (`np.nodes.ip4`). No ACL depends on a pod label, so a label change
//!   rewrites only the address sets and port groups that gain or lose the pod;
//! - a pod is one [`PolicyPod`] per OVN interface; Kube-OVN's `network_policy_for` annotation
//!   ([`policy_for`]) limits a policy to some of them, as selected pods and as peers.
//!
//! Invalid input (which the API server would reject, but a manifest may hold) is reported in
//! [`PolicyPlan::issues`] naming the field and fails closed: the bad peer or port allows nothing.

pub mod admin;
pub mod policy_for;
mod selector;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{StrMap, owned_ids};
use crate::plan::direction::Dir;

pub use selector::{Selector, SelectorError};

/// OVN ACL tier of NetworkPolicy.
pub const NETPOL_TIER: i64 = 2;
/// Default drop of an isolated direction.
pub const DROP_PRIORITY: i64 = 2000;
/// A rule's allow.
pub const ALLOW_PRIORITY: i64 = 2001;
/// Node → pod (kubelet probes) on every selected pod, as Kube-OVN's `NodeAllowPriority`.
pub const NODE_PRIORITY: i64 = 3000;
/// The label the API server puts on every Namespace; added here when a manifest lacks it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

// ---------------------------------------------------------------------------------------------
// Input

pub use super::protocol::Protocol;

/// A named container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One OVN interface of a pod as NetworkPolicy sees it: the primary one (port `<pod>.<ns>`)
/// or a secondary attachment's (`<pod>.<ns>.<provider>`, see [`policy_for`]). A pod with
/// several interfaces is one `PolicyPod` per interface, with the same labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's Logical_Switch_Port.
    pub port: String,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
}

impl PolicyPod {
    /// From a Pod object and its allocated interface (`port`, `ips`). Named ports come from
    /// the containers (init containers serve no traffic a policy could name).
    pub fn from_pod(pod: &Pod, port: String, ips: Vec<IpAddr>) -> Self {
        let named_ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        PolicyPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            port,
            ips,
            named_ports,
        }
    }
}

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNamespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Everything NetworkPolicy translation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyInput {
    pub policies: Vec<NetworkPolicy>,
    pub pods: Vec<PolicyPod>,
    /// Namespaces a pod lives in but that are missing here count as unlabelled (except for
    /// [`NAMESPACE_NAME_LABEL`]).
    pub namespaces: Vec<PolicyNamespace>,
    /// Where node → pod traffic comes from (the nodes' join addresses).
    pub node_ips: Vec<IpAddr>,
}

// ---------------------------------------------------------------------------------------------
// Output

/// A Port_Group with its ACLs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPortGroup {
    pub name: String,
    /// Logical_Switch_Port names.
    pub ports: BTreeSet<String>,
    /// By identity ([`super::ROW_KEY`]).
    pub acls: BTreeMap<String, PlannedPgAcl>,
    pub external_ids: StrMap,
}

/// An ACL of a port group.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPgAcl {
    pub direction: String,
    pub priority: i64,
    pub tier: i64,
    pub match_: String,
    pub action: String,
    /// `<ns>/<policy>`, shown in ACL logs (at most 63 characters, as the schema allows).
    pub name: Option<String>,
    pub options: StrMap,
    pub external_ids: StrMap,
}

/// An Address_Set.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAddressSet {
    pub name: String,
    pub addresses: BTreeSet<String>,
    pub external_ids: StrMap,
}

/// What NetworkPolicy adds to the NB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyPlan {
    /// By name.
    pub port_groups: BTreeMap<String, PlannedPortGroup>,
    /// By name.
    pub address_sets: BTreeMap<String, PlannedAddressSet>,
    pub issues: Vec<PolicyIssue>,
    /// Port group → family (`ip4`, `ip6`) → address sets of peers that every member of the
    /// group accepts on every port and protocol, for groups none of whose members is
    /// egress-isolated. Towards and from those peers a member's own conntrack zone decides
    /// nothing: both directions pass its ACLs on their own merits (plan::ctbypass).
    pub open_peers: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl PolicyPlan {
    /// All ACLs, with the port group each belongs to.
    pub fn acls(&self) -> impl Iterator<Item = (&PlannedPortGroup, &PlannedPgAcl)> {
        self.port_groups
            .values()
            .flat_map(|pg| pg.acls.values().map(move |a| (pg, a)))
    }
}

/// An input field the translation could not use; `policy` is `<ns>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("NetworkPolicy {policy}: {field}: {reason}")]
pub struct PolicyIssue {
    pub policy: String,
    pub field: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Naming

/// Kubernetes names are `[a-z0-9.-]`; OVN identifiers (`@pg`, `$as`) take `[A-Za-z0-9_.]`.
/// `_` never occurs in a Kubernetes name, so this is injective.
fn ident(s: &str) -> String {
    s.replace('-', "_")
}

/// Port group of policy `name` in `ns`. A namespace has no `.`, so the first `.` after the
/// prefix separates it from the policy name.
pub fn port_group_name(ns: &str, name: &str) -> String {
    format!("np.{}.{}", ident(ns), ident(name))
}

fn family(ip: &IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ovn(self) -> &'static str {
        match self {
            Family::V4 => "ip4",
            Family::V6 => "ip6",
        }
    }
}

/// FNV-1a: stable across Rust releases, unlike `DefaultHasher`, so names survive upgrades.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Translation

/// Which pods a selector peer means.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// The policy's own namespace.
    Namespace(String),
    /// Namespaces whose labels match.
    Namespaces(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PodPeer {
    scope: Scope,
    pods: Selector,
    /// The attachments whose addresses count (`network_policy_for`); `None`: all.
    providers: policy_for::Providers,
}

impl PodPeer {
    fn canonical(&self) -> String {
        let base = match &self.scope {
            Scope::Namespace(ns) => format!("namespace={ns};pods={}", self.pods.canonical()),
            Scope::Namespaces(sel) => {
                format!(
                    "namespaces={};pods={}",
                    sel.canonical(),
                    self.pods.canonical()
                )
            }
        };
        // Without the annotation the name stays what it was before the annotation existed.
        match &self.providers {
            None => base,
            Some(p) => format!(
                "{base};providers={}",
                p.iter().cloned().collect::<Vec<_>>().join(",")
            ),
        }
    }

    fn set_name(&self, f: Family) -> String {
        format!(
            "np.peer.{:016x}.{}",
            stable_hash(&self.canonical()),
            f.ovn()
        )
    }
}

/// Port number → family → addresses of the pods whose port of one name has that number.
type NamedPortAddrs = BTreeMap<u16, BTreeMap<Family, BTreeSet<String>>>;

/// A rule's peers (`from` / `to`) and ports.
type Rule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

struct Ctx<'a> {
    ns_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
    /// Namespace → its pods: a selector is matched against the pods of the namespaces in its
    /// scope only (1,000 policies over 5,000 pods: 50 pods per policy, not 5,000).
    by_ns: BTreeMap<&'a str, Vec<&'a PolicyPod>>,
    /// Families any pod has: peer sets exist for these, whatever the labels.
    families: BTreeSet<Family>,
    /// Named port → (protocol, number) → family → addresses.
    named: BTreeMap<(String, Protocol), NamedPortAddrs>,
    peers: BTreeSet<PodPeer>,
    named_used: BTreeSet<(String, Protocol, u16, Family)>,
    issues: Vec<PolicyIssue>,
    /// The address sets the last selector peer clause named (what [`PolicyPlan::open_peers`]
    /// is made of).
    clause_sets: Vec<(Family, String)>,
    /// The attachments the policy being translated applies to.
    providers: policy_for::Providers,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a PolicyInput) -> Self {
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
        let mut named: BTreeMap<_, NamedPortAddrs> = BTreeMap::new();
        let mut families = BTreeSet::new();
        for p in &input.pods {
            for ip in &p.ips {
                families.insert(family(ip));
            }
            for np in &p.named_ports {
                for ip in &p.ips {
                    named
                        .entry((np.name.clone(), np.protocol))
                        .or_default()
                        .entry(np.port)
                        .or_default()
                        .entry(family(ip))
                        .or_default()
                        .insert(ip.to_string());
                }
            }
        }
        let mut by_ns: BTreeMap<&str, Vec<&PolicyPod>> = BTreeMap::new();
        for p in &input.pods {
            by_ns.entry(p.namespace.as_str()).or_default().push(p);
        }
        Ctx {
            ns_labels,
            by_ns,
            families,
            named,
            peers: BTreeSet::new(),
            named_used: BTreeSet::new(),
            issues: Vec::new(),
            clause_sets: Vec::new(),
            providers: None,
        }
    }

    fn issue(&mut self, policy: &str, field: String, reason: impl Into<String>) {
        self.issues.push(PolicyIssue {
            policy: policy.to_string(),
            field,
            reason: reason.into(),
        });
    }

    fn ns_matches(&self, sel: &Selector, ns: &str) -> bool {
        self.ns_labels.get(ns).is_some_and(|l| sel.matches(l))
    }

    /// The pods of namespace `ns`.
    fn pods_in(&self, ns: &str) -> &[&'a PolicyPod] {
        self.by_ns.get(ns).map_or(&[], Vec::as_slice)
    }

    /// The pods a peer selects: only the namespaces in scope are scanned.
    fn peer_pods(&self, peer: &PodPeer) -> Vec<&'a PolicyPod> {
        let namespaces: Vec<&str> = match &peer.scope {
            Scope::Namespace(ns) => vec![ns.as_str()],
            Scope::Namespaces(sel) => self
                .by_ns
                .keys()
                .copied()
                .filter(|ns| self.ns_matches(sel, ns))
                .collect(),
        };
        namespaces
            .into_iter()
            .flat_map(|ns| self.pods_in(ns).iter().copied())
            .filter(|p| peer.pods.matches(&p.labels))
            .filter(|p| policy_for::applies(&peer.providers, p))
            .collect()
    }

    /// `ip4.<side> == $set || ip6.<side> == $set` for a selector peer.
    fn pod_peer_clause(&mut self, peer: PodPeer, side: &str) -> Option<String> {
        let parts: Vec<String> = self
            .families
            .iter()
            .map(|f| format!("{}.{side} == ${}", f.ovn(), peer.set_name(*f)))
            .collect();
        self.clause_sets = self
            .families
            .iter()
            .map(|f| (*f, peer.set_name(*f)))
            .collect();
        self.peers.insert(peer);
        (!parts.is_empty()).then(|| parts.join(" || "))
    }

    /// One peer as a match clause on `side` (`src` for ingress, `dst` for egress); `None`
    /// when the peer can match nothing.
    fn peer_clause(
        &mut self,
        key: &str,
        ns: &str,
        peer: &NetworkPolicyPeer,
        field: &str,
        side: &str,
    ) -> Option<String> {
        if let Some(block) = &peer.ip_block {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                self.issue(
                    key,
                    field.to_string(),
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                );
                return None;
            }
            let cidr: IpNet = match block.cidr.parse() {
                Ok(c) => c,
                Err(_) => {
                    self.issue(
                        key,
                        format!("{field}.ipBlock.cidr"),
                        format!("{:?} is not a CIDR", block.cidr),
                    );
                    return None;
                }
            };
            let cidr = cidr.trunc();
            let f = match cidr {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            };
            let mut except = BTreeSet::new();
            for (i, e) in block.except.iter().flatten().enumerate() {
                match e.parse::<IpNet>() {
                    Ok(n) if family(&n.addr()) == f => {
                        except.insert(n.trunc().to_string());
                    }
                    // An except of the other family can never match an address of the block.
                    Ok(_) => {}
                    Err(_) => {
                        // Dropping a bad except would widen the block: drop the peer instead.
                        self.issue(
                            key,
                            format!("{field}.ipBlock.except[{i}]"),
                            format!("{e:?} is not a CIDR"),
                        );
                        return None;
                    }
                }
            }
            let a = format!("{}.{side}", f.ovn());
            return Some(if except.is_empty() {
                format!("{a} == {cidr}")
            } else {
                let list: Vec<String> = except.into_iter().collect();
                format!("{a} == {cidr} && {a} != {{{}}}", list.join(", "))
            });
        }
        let pods = match &peer.pod_selector {
            Some(s) => Selector::parse(s, &format!("{field}.podSelector")),
            None => Ok(Selector::default()),
        };
        let scope = match &peer.namespace_selector {
            Some(s) => {
                Selector::parse(s, &format!("{field}.namespaceSelector")).map(Scope::Namespaces)
            }
            None if peer.pod_selector.is_none() => Err(SelectorError {
                field: field.to_string(),
                reason: "a peer needs podSelector, namespaceSelector or ipBlock".into(),
            }),
            None => Ok(Scope::Namespace(ns.to_string())),
        };
        match (scope, pods) {
            (Ok(scope), Ok(pods)) => {
                let providers = self.providers.clone();
                self.pod_peer_clause(
                    PodPeer {
                        scope,
                        pods,
                        providers,
                    },
                    side,
                )
            }
            (Err(e), _) | (_, Err(e)) => {
                self.issue(key, e.field, e.reason);
                None
            }
        }
    }

    /// One port entry as a match clause; `None` when it can match nothing.
    fn port_clause(&mut self, key: &str, p: &NetworkPolicyPort, field: &str) -> Option<String> {
        let Some(proto) = Protocol::parse(p.protocol.as_deref()) else {
            self.issue(
                key,
                format!("{field}.protocol"),
                format!(
                    "{:?} is not TCP, UDP or SCTP",
                    p.protocol.as_deref().unwrap_or("")
                ),
            );
            return None;
        };
        let l4 = proto.ovn();
        let port_num = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0);
        match &p.port {
            None if p.end_port.is_some() => {
                self.issue(key, format!("{field}.endPort"), "endPort needs port");
                None
            }
            None => Some(l4.to_string()),
            Some(IntOrString::Int(n)) => {
                let Some(lo) = port_num(*n) else {
                    self.issue(key, format!("{field}.port"), format!("{n} is not a port"));
                    return None;
                };
                match p.end_port {
                    None => Some(format!("{l4}.dst == {lo}")),
                    Some(e) => match port_num(e).filter(|hi| *hi >= lo) {
                        Some(hi) if hi == lo => Some(format!("{l4}.dst == {lo}")),
                        Some(hi) => Some(format!("{l4}.dst >= {lo} && {l4}.dst <= {hi}")),
                        None => {
                            self.issue(
                                key,
                                format!("{field}.endPort"),
                                format!("{e} is not a port at or above {lo}"),
                            );
                            None
                        }
                    },
                }
            }
            Some(IntOrString::String(name)) => {
                if p.end_port.is_some() {
                    self.issue(
                        key,
                        format!("{field}.endPort"),
                        "endPort cannot be used with a named port",
                    );
                    return None;
                }
                // The name is resolved on the destination pod: allow number n only towards
                // the pods whose port of that name is n.
                let by_num = self.named.get(&(name.clone(), proto)).cloned()?;
                let mut alts = Vec::new();
                for (num, fams) in by_num {
                    let dst: Vec<String> = fams
                        .keys()
                        .map(|f| {
                            self.named_used.insert((name.clone(), proto, num, *f));
                            format!(
                                "{}.dst == ${}",
                                f.ovn(),
                                named_set_name(name, proto, num, *f)
                            )
                        })
                        .collect();
                    alts.push(format!("(({}) && {l4}.dst == {num})", dst.join(" || ")));
                }
                (!alts.is_empty()).then(|| alts.join(" || "))
            }
        }
    }
}

fn named_set_name(name: &str, proto: Protocol, num: u16, f: Family) -> String {
    format!("np.port.{}.{}.{num}.{}", ident(name), proto.ovn(), f.ovn())
}

/// `(a) || (b)` with each alternative parenthesised.
fn any_of(parts: &[String]) -> String {
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" || ")
    }
}

fn pg_acl(
    key: &str,
    pg: &str,
    dir: Dir,
    priority: i64,
    match_: String,
    action: &str,
    what: &str,
) -> (String, PlannedPgAcl) {
    let row_key = format!("npacl/{key}/{}/{what}", dir.as_str());
    let mut options = StrMap::new();
    if dir == Dir::Egress {
        // Egress after load balancing: a Service VIP is already its backend's address here,
        // so peers by pod selector cover traffic to Services too.
        options.insert("apply-after-lb".into(), "true".into());
    }
    let mut name = format!("np:{key}");
    if name.len() > 63 {
        // Kubernetes names are ASCII, so any byte index is a char boundary.
        name.truncate(63);
    }
    let acl = PlannedPgAcl {
        direction: dir.ovn_direction().into(),
        priority,
        tier: NETPOL_TIER,
        match_,
        action: action.into(),
        name: Some(name),
        options,
        external_ids: owned_ids(
            &row_key,
            &[("np", key), ("direction", dir.as_str()), ("pg", pg)],
        ),
    };
    (row_key, acl)
}

/// Translates every policy of `input`. The same input in any order gives the same plan.
pub fn plan_network_policies(input: &PolicyInput) -> PolicyPlan {
    let mut cx = Ctx::new(input);
    let mut out = PolicyPlan::default();

    let mut policies: Vec<&NetworkPolicy> = input.policies.iter().collect();
    policies.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    // Ports of egress-isolated pods: their groups get no open peers.
    let mut egress_isolated: BTreeSet<String> = BTreeSet::new();

    for pol in policies {
        let (Some(ns), Some(name)) = (&pol.metadata.namespace, &pol.metadata.name) else {
            cx.issue(
                "?",
                "metadata".into(),
                "a NetworkPolicy needs metadata.namespace and metadata.name",
            );
            continue;
        };
        let key = format!("{ns}/{name}");
        let pg_name = port_group_name(ns, name);
        if out.port_groups.contains_key(&pg_name) {
            cx.issue(&key, "metadata.name".into(), "defined twice");
            continue;
        }
        let spec = pol.spec.clone().unwrap_or_default();
        let selected = match spec
            .pod_selector
            .as_ref()
            .map(|s| Selector::parse(s, "spec.podSelector"))
            .unwrap_or_else(|| Ok(Selector::default()))
        {
            Ok(s) => s,
            Err(e) => {
                // Selecting nothing would leave the pods open; selecting all of the
                // namespace is the closed side of a broken selector.
                cx.issue(
                    &key,
                    e.field,
                    format!("{} (applied to every pod of {ns})", e.reason),
                );
                Selector::default()
            }
        };
        cx.providers = policy_for::parse(pol, &key, &mut cx.issues);
        let ports: BTreeSet<String> = cx
            .pods_in(ns)
            .iter()
            .filter(|p| selected.matches(&p.labels))
            .filter(|p| policy_for::applies(&cx.providers, p))
            .map(|p| p.port.clone())
            .collect();

        // The API server's defaulting: Ingress always, Egress when there are egress rules.
        let types: Vec<String> = match &spec.policy_types {
            Some(t) if !t.is_empty() => t.clone(),
            _ => {
                let mut t = vec!["Ingress".to_string()];
                if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push("Egress".into());
                }
                t
            }
        };
        let mut dirs = Vec::new();
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "Ingress" => dirs.push(Dir::Ingress),
                "Egress" => dirs.push(Dir::Egress),
                other => cx.issue(
                    &key,
                    format!("spec.policyTypes[{i}]"),
                    format!("{other:?} is not Ingress or Egress"),
                ),
            }
        }

        if dirs.contains(&Dir::Egress) {
            egress_isolated.extend(ports.iter().cloned());
        }
        let mut open: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut acls = BTreeMap::new();
        for dir in [Dir::Ingress, Dir::Egress] {
            if !dirs.contains(&dir) {
                continue;
            }
            let port = dir.port();
            let (k, a) = pg_acl(
                &key,
                &pg_name,
                dir,
                DROP_PRIORITY,
                format!("{port} == @{pg_name} && ip"),
                "drop",
                "drop",
            );
            acls.insert(k, a);
            if dir == Dir::Ingress || !dirs.contains(&Dir::Ingress) {
                let dir = Dir::Ingress;
                let port = dir.port();
                let parts: Vec<String> = [Family::V4, Family::V6]
                    .iter()
                    .filter(|f| input.node_ips.iter().any(|ip| family(ip) == **f))
                    .map(|f| format!("{}.src == $np.nodes.{}", f.ovn(), f.ovn()))
                    .collect();
                if !parts.is_empty() {
                    let (k, a) = pg_acl(
                        &key,
                        &pg_name,
                        dir,
                        NODE_PRIORITY,
                        format!("{port} == @{pg_name} && ({})", parts.join(" || ")),
                        "allow-related",
                        "node",
                    );
                    acls.insert(k, a);
                }
            }
            // (peers, ports) of each rule.
            let rules: Vec<Rule> = match dir {
                Dir::Ingress => spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.clone(), r.ports.clone()))
                    .collect(),
                Dir::Egress => spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.clone(), r.ports.clone()))
                    .collect(),
            };
            let peers_field = match dir {
                Dir::Ingress => "from",
                Dir::Egress => "to",
            };
            for (i, (peers, rule_ports)) in rules.iter().enumerate() {
                let rule_field = format!("spec.{}[{i}]", dir.as_str());
                let peers = peers.as_deref().unwrap_or_default();
                let mut peer_parts = Vec::new();
                let mut peer_sets = Vec::new();
                for (j, p) in peers.iter().enumerate() {
                    let field = format!("{rule_field}.{peers_field}[{j}]");
                    cx.clause_sets.clear();
                    if let Some(c) = cx.peer_clause(&key, ns, p, &field, dir.peer_side()) {
                        peer_parts.push(c);
                        peer_sets.append(&mut cx.clause_sets);
                    }
                }
                if !peers.is_empty() && peer_parts.is_empty() {
                    continue;
                }
                let rule_ports = rule_ports.as_deref().unwrap_or_default();
                let mut port_parts = Vec::new();
                for (j, p) in rule_ports.iter().enumerate() {
                    let field = format!("{rule_field}.ports[{j}]");
                    if let Some(c) = cx.port_clause(&key, p, &field) {
                        port_parts.push(c);
                    }
                }
                if !rule_ports.is_empty() && port_parts.is_empty() {
                    continue;
                }
                if dir == Dir::Ingress && rule_ports.is_empty() {
                    // Every port and protocol from these pods: open in both directions as long
                    // as the members' egress is not isolated (checked after every policy).
                    for (f, set) in peer_sets {
                        open.entry(f.ovn().to_string()).or_default().insert(set);
                    }
                }
                let mut m = format!("{port} == @{pg_name} && ip");
                if !peer_parts.is_empty() {
                    m.push_str(&format!(" && ({})", any_of(&peer_parts)));
                }
                if !port_parts.is_empty() {
                    m.push_str(&format!(" && ({})", any_of(&port_parts)));
                }
                let (k, a) = pg_acl(
                    &key,
                    &pg_name,
                    dir,
                    ALLOW_PRIORITY,
                    m,
                    "allow-related",
                    &i.to_string(),
                );
                acls.insert(k, a);
            }
        }
        if !open.is_empty() {
            out.open_peers.insert(pg_name.clone(), open);
        }
        out.port_groups.insert(
            pg_name.clone(),
            PlannedPortGroup {
                name: pg_name.clone(),
                ports,
                acls,
                external_ids: owned_ids(&format!("pg/{pg_name}"), &[("np", &key)]),
            },
        );
    }

    out.open_peers.retain(|pg, _| {
        out.port_groups
            .get(pg)
            .is_some_and(|g| g.ports.iter().all(|p| !egress_isolated.contains(p)))
    });

    // Address sets, each with the addresses of its current members.
    let peers = std::mem::take(&mut cx.peers);
    for peer in &peers {
        let canonical = peer.canonical();
        let mut by_family: BTreeMap<Family, BTreeSet<String>> = BTreeMap::new();
        for p in cx.peer_pods(peer) {
            for ip in &p.ips {
                by_family
                    .entry(family(ip))
                    .or_default()
                    .insert(ip.to_string());
            }
        }
        for f in &cx.families {
            let name = peer.set_name(*f);
            out.address_sets.insert(
                name.clone(),
                PlannedAddressSet {
                    addresses: by_family.remove(f).unwrap_or_default(),
                    external_ids: owned_ids(&format!("as/{name}"), &[("np-peer", &canonical)]),
                    name,
                },
            );
        }
    }
    for (pname, proto, num, f) in std::mem::take(&mut cx.named_used) {
        let name = named_set_name(&pname, proto, num, f);
        let addresses = cx
            .named
            .get(&(pname.clone(), proto))
            .and_then(|m| m.get(&num))
            .and_then(|m| m.get(&f))
            .cloned()
            .unwrap_or_default();
        let what = format!("{pname}/{}/{num}", proto.ovn());
        out.address_sets.insert(
            name.clone(),
            PlannedAddressSet {
                addresses,
                external_ids: owned_ids(&format!("as/{name}"), &[("np-named-port", &what)]),
                name,
            },
        );
    }
    let has_ingress_acl = out
        .acls()
        .any(|(_, a)| a.priority == NODE_PRIORITY && a.direction == "to-lport");
    if has_ingress_acl {
        for f in [Family::V4, Family::V6] {
            let addresses: BTreeSet<String> = input
                .node_ips
                .iter()
                .filter(|ip| family(ip) == f)
                .map(IpAddr::to_string)
                .collect();
            if addresses.is_empty() {
                continue;
            }
            let name = format!("np.nodes.{}", f.ovn());
            out.address_sets.insert(
                name.clone(),
                PlannedAddressSet {
                    addresses,
                    external_ids: owned_ids(&format!("as/{name}"), &[("np-nodes", "join")]),
                    name,
                },
            );
        }
    }
    cx.issues.sort();
    cx.issues.dedup();
    out.issues = cx.issues;
    out
}
