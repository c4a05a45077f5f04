//! Kube-OVN SecurityGroups as OVN rows: a pure function from the groups and the interfaces
//! that name them (`ovn.kubernetes.io/security_groups`) to port groups, address sets and ACLs.
//!
//! Layout (Kube-OVN's priorities and tiers, so a group behaves as it does there):
//! - per group `g` a port group `sg.<g>` of its member interfaces, and address sets
//!   `sg.<g>.ip4` / `sg.<g>.ip6` of their addresses (what `remoteSecurityGroup: g` and
//!   `allowSameGroupTraffic` match);
//! - every interface that names any group is in [`DENY_ALL_PORT_GROUP`], which drops all IP
//!   traffic in both directions at [`SG_DROP_PRIORITY`] in both security group tiers: a member
//!   gets only what its groups allow. An interface naming a group that does not exist (yet) is
//!   isolated too (Kube-OVN leaves it open), and reported;
//! - rule `priority` `p` (1..=16384, smaller first) becomes ACL priority
//!   [`SG_RULE_TOP`]` - p` (18483..=2100), in OVN tier [`SG_TIER_BASE`]` + spec.tier`;
//!   `allow` is `allow-related`, `drop`/`deny` is `drop`, `pass` (tier 0 only) goes on to
//!   tier 3;
//! - `allowSameGroupTraffic`: `allow-related` from (ingress) / to (egress) the group's own
//!   address sets at [`SG_SAME_GROUP_PRIORITY`];
//! - per group and tier, `allow-related` at [`SG_BASE_PRIORITY`] for DHCP requests and replies
//!   and VRRP. ARP needs no row (the drops match `ip` only), nor does IPv6 ND (northd allows
//!   it ahead of every ACL).
//!
//! Tier 2 is NetworkPolicy's tier: the drop at 2003 and every rule outrank NetworkPolicy's
//! allow (2001) and drop (2000), so for a member interface its groups decide, as in Kube-OVN;
//! only NetworkPolicy's kubelet allow (3000) still competes (with rules of priority 15484 and
//! above). AdminNetworkPolicy (tier 1) comes first. Unlike Kube-OVN, egress ACLs are applied
//! after load balancing, as every FerrOVN egress ACL: an egress rule sees a Service's backend,
//! not its VIP (Kube-OVN #3998), and it competes with NetworkPolicy's egress ACLs in the same
//! stage.
//!
//! A group with an invalid field is reported in [`SecurityGroupPlan::issues`] (naming the
//! field) and applies none of its rules, so its members stay isolated (fail closed); every
//! other group is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_api::security_group::{SecurityGroup, SecurityGroupRule};
use ipnet::IpNet;

use super::direction::Dir;
use super::netpol::{PlannedAddressSet, PlannedPgAcl, PlannedPortGroup};
use super::{StrMap, owned_ids};

/// OVN ACL tier of a group with `spec.tier: 0`; `tier: 1` is the next one.
pub const SG_TIER_BASE: i64 = 2;
/// Rule `priority` `p` is ACL priority `SG_RULE_TOP - p`.
pub const SG_RULE_TOP: i64 = 18484;
/// DHCP and VRRP of every member.
pub const SG_BASE_PRIORITY: i64 = 2005;
/// `allowSameGroupTraffic`.
pub const SG_SAME_GROUP_PRIORITY: i64 = 2004;
/// Everything else of an interface with security groups.
pub const SG_DROP_PRIORITY: i64 = 2003;
/// Highest rule `priority` (the lowest precedence).
pub const MAX_RULE_PRIORITY: i64 = 16384;
/// Port group of every interface that names a security group. `_` cannot occur in a
/// Kubernetes name and no group's `sg.<name>` lacks the dot, so no group maps to it.
pub const DENY_ALL_PORT_GROUP: &str = "sg_deny_all";
/// The security group tiers (`spec.tier` 0 and 1).
const TIERS: [i64; 2] = [SG_TIER_BASE, SG_TIER_BASE + 1];

// ---------------------------------------------------------------------------------------------
// Input and output

/// An OVN interface (a Logical_Switch_Port) and the groups its annotation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgPort {
    /// The Logical_Switch_Port.
    pub port: String,
    pub ips: Vec<IpAddr>,
    /// Group names as written (order and duplicates do not matter).
    pub groups: Vec<String>,
    /// Where the names come from, for reports: `Pod <ns>/<name>`.
    pub owner: String,
    /// The annotation key that names the groups.
    pub annotation: String,
}

/// Everything security group translation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityGroupInput {
    pub groups: Vec<SecurityGroup>,
    /// Interfaces naming at least one group (others may be given; they are ignored).
    pub ports: Vec<SgPort>,
}

impl SecurityGroupInput {
    /// No group and no interface naming one: nothing to plan.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.ports.iter().all(|p| p.groups.is_empty())
    }
}

/// What the security groups add to the NB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityGroupPlan {
    /// By name.
    pub port_groups: BTreeMap<String, PlannedPortGroup>,
    /// By name.
    pub address_sets: BTreeMap<String, PlannedAddressSet>,
    pub issues: Vec<SecurityGroupIssue>,
    /// Group name → whether its rules are applied (false: an invalid field, see `issues`).
    pub applied: BTreeMap<String, bool>,
}

impl SecurityGroupPlan {
    /// All ACLs, with the port group each belongs to.
    pub fn acls(&self) -> impl Iterator<Item = (&PlannedPortGroup, &PlannedPgAcl)> {
        self.port_groups
            .values()
            .flat_map(|pg| pg.acls.values().map(move |a| (pg, a)))
    }
}

/// An input field the translation could not use. `object` is `SecurityGroup <name>` or the
/// owner of an interface (`Pod <ns>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct SecurityGroupIssue {
    pub object: String,
    pub field: String,
    pub reason: String,
}

/// Kubernetes names are `[a-z0-9.-]`; OVN identifiers take `[A-Za-z0-9_.]`. `_` never occurs
/// in a Kubernetes name, so this is injective.
fn ident(s: &str) -> String {
    s.replace('-', "_")
}

/// Port group of group `name`.
pub fn port_group_name(name: &str) -> String {
    format!("sg.{}", ident(name))
}

/// Address set of the members' addresses of one family (`ip4`, `ip6`).
pub fn address_set_name(name: &str, af: &str) -> String {
    format!("sg.{}.{af}", ident(name))
}

// ---------------------------------------------------------------------------------------------
// Validated form

/// Where a direction's rules are in a SecurityGroup's spec (for errors naming the field).
fn rules_field(dir: Dir) -> &'static str {
    match dir {
        Dir::Ingress => "spec.ingressRules",
        Dir::Egress => "spec.egressRules",
    }
}

/// A rule as an ACL: priority, match (after the port group clause), action.
struct RuleAcl {
    priority: i64,
    match_: String,
    action: &'static str,
}

/// An address or CIDR of the rule's family, as OVN takes it (host bits cleared).
fn parse_addr(s: &str, af: &str) -> Result<String, String> {
    let net: IpNet = match s.parse::<IpNet>() {
        Ok(n) => n.trunc(),
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => return Err(format!("{s:?} is not an IP address or CIDR")),
        },
    };
    let family = if net.addr().is_ipv4() { "ip4" } else { "ip6" };
    if family != af {
        return Err(format!("{s} is not of ipVersion {}", ipv(af)));
    }
    Ok(if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    })
}

fn ipv(af: &str) -> &'static str {
    if af == "ip4" { "ipv4" } else { "ipv6" }
}

/// `lo..=hi` of a port range field pair; `None` (with the errors) when out of range.
fn port_range(
    lo: i64,
    hi: i64,
    lo_field: &str,
    hi_field: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<(u16, u16)> {
    let ok = |n: i64| (1..=65535).contains(&n);
    let mut good = true;
    for (n, f) in [(lo, lo_field), (hi, hi_field)] {
        if !ok(n) {
            errors.push((f.to_string(), format!("{n} is outside 1..=65535")));
            good = false;
        }
    }
    if good && lo > hi {
        errors.push((
            lo_field.to_string(),
            format!("{lo} is above {hi_field} {hi}"),
        ));
        good = false;
    }
    let lo = u16::try_from(lo).ok()?;
    let hi = u16::try_from(hi).ok()?;
    good.then_some((lo, hi))
}

/// `tcp.dst == 80` or `tcp.dst >= 80 && tcp.dst <= 90`.
fn range_match(field: &str, (lo, hi): (u16, u16)) -> String {
    if lo == hi {
        format!("{field} == {lo}")
    } else {
        format!("{field} >= {lo} && {field} <= {hi}")
    }
}

/// One rule as an ACL, or the errors of its fields (path relative to the group).
fn rule_acl(
    r: &SecurityGroupRule,
    dir: Dir,
    field: &str,
    tier: i64,
    groups: &BTreeSet<&str>,
) -> Result<RuleAcl, Vec<(String, String)>> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let f = |name: &str| format!("{field}.{name}");
    let af = match r.ip_version.as_str() {
        "ipv4" => "ip4",
        "ipv6" => "ip6",
        other => {
            errors.push((f("ipVersion"), format!("{other:?} is not ipv4 or ipv6")));
            // Go on with ipv4 to find the other fields' errors too.
            "ip4"
        }
    };
    if !(1..=MAX_RULE_PRIORITY).contains(&r.priority) {
        errors.push((
            f("priority"),
            format!("{} is outside 1..={MAX_RULE_PRIORITY}", r.priority),
        ));
    }
    let action = match r.policy.as_str() {
        "allow" => "allow-related",
        "drop" | "deny" => "drop",
        "pass" if tier == SG_TIER_BASE => "pass",
        "pass" => {
            errors.push((
                f("policy"),
                "pass is only valid in tier 0 (spec.tier is 1, the last security group tier)"
                    .into(),
            ));
            "drop"
        }
        other => {
            errors.push((
                f("policy"),
                format!("{other:?} is not allow, drop, deny or pass"),
            ));
            "drop"
        }
    };
    let side = dir.peer_side();
    let mut m = format!("{af} && ");
    match r.remote_type.as_str() {
        "address" => match parse_addr(&r.remote_address, af) {
            Ok(a) => m.push_str(&format!("{af}.{side} == {a}")),
            Err(e) => errors.push((f("remoteAddress"), e)),
        },
        "securityGroup" => {
            if groups.contains(r.remote_security_group.as_str()) {
                m.push_str(&format!(
                    "{af}.{side} == ${}",
                    address_set_name(&r.remote_security_group, af)
                ));
            } else {
                errors.push((
                    f("remoteSecurityGroup"),
                    format!(
                        "security group {:?} does not exist",
                        r.remote_security_group
                    ),
                ));
            }
        }
        other => errors.push((
            f("remoteType"),
            format!("{other:?} is not address or securityGroup"),
        )),
    }
    if !r.local_address.is_empty() {
        match parse_addr(&r.local_address, af) {
            Ok(a) => m.push_str(&format!(" && {af}.{} == {a}", dir.own_side())),
            Err(e) => errors.push((f("localAddress"), e)),
        }
    }
    match r.protocol.as_str() {
        "" | "all" => {}
        "icmp" => m.push_str(if af == "ip4" {
            " && icmp4"
        } else {
            " && icmp6"
        }),
        l4 @ ("tcp" | "udp") => {
            if let Some(range) = port_range(
                r.port_range_min,
                r.port_range_max,
                &f("portRangeMin"),
                &f("portRangeMax"),
                &mut errors,
            ) {
                m.push_str(&format!(" && {}", range_match(&format!("{l4}.dst"), range)));
            }
            if (r.source_port_range_min != 0 || r.source_port_range_max != 0)
                && let Some(range) = port_range(
                    r.source_port_range_min,
                    r.source_port_range_max,
                    &f("sourcePortRangeMin"),
                    &f("sourcePortRangeMax"),
                    &mut errors,
                )
            {
                m.push_str(&format!(" && {}", range_match(&format!("{l4}.src"), range)));
            }
        }
        other => errors.push((
            f("protocol"),
            format!("{other:?} is not all, icmp, tcp or udp"),
        )),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RuleAcl {
        priority: SG_RULE_TOP - r.priority,
        match_: m,
        action,
    })
}

// ---------------------------------------------------------------------------------------------
// Translation

fn sg_acl(
    owner: &str,
    pg: &str,
    dir: Dir,
    what: &str,
    (priority, tier): (i64, i64),
    match_: String,
    action: &str,
) -> (String, PlannedPgAcl) {
    let row_key = format!("sgacl/{owner}/{}/{what}", dir.as_str());
    let mut options = StrMap::new();
    if dir == Dir::Egress {
        // As every FerrOVN egress ACL: a Service VIP is already its backend here, and the
        // ACL competes with NetworkPolicy's egress ACLs in the same (after-LB) stage.
        options.insert("apply-after-lb".into(), "true".into());
    }
    // At most 63 bytes, as the schema allows (cut on a character boundary: a manifest that
    // bypassed the API server may hold any name).
    let mut name = format!("sg:{owner}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    let acl = PlannedPgAcl {
        direction: dir.ovn_direction().into(),
        priority,
        tier,
        match_: format!("{} == @{pg} && {match_}", dir.port()),
        action: action.into(),
        name: Some(name),
        options,
        external_ids: owned_ids(
            &row_key,
            &[("sg", owner), ("direction", dir.as_str()), ("pg", pg)],
        ),
    };
    (row_key, acl)
}

/// DHCP (requests out, replies in) and VRRP: what a member needs beyond its rules.
fn base_matches(dir: Dir) -> [(&'static str, &'static str); 3] {
    match dir {
        Dir::Ingress => [
            ("dhcp4", "udp.src == 67 && udp.dst == 68 && ip4"),
            ("dhcp6", "udp.src == 547 && udp.dst == 546 && ip6"),
            ("vrrp", "ip.proto == 112"),
        ],
        Dir::Egress => [
            ("dhcp4", "udp.src == 68 && udp.dst == 67 && ip4"),
            ("dhcp6", "udp.src == 546 && udp.dst == 547 && ip6"),
            ("vrrp", "ip.proto == 112"),
        ],
    }
}

/// Translates every security group of `input`. The same input in any order gives the same
/// plan.
pub fn plan_security_groups(input: &SecurityGroupInput) -> SecurityGroupPlan {
    let mut out = SecurityGroupPlan::default();
    let mut issues: Vec<SecurityGroupIssue> = Vec::new();
    let mut issue = |object: String, field: String, reason: String| {
        issues.push(SecurityGroupIssue {
            object,
            field,
            reason,
        })
    };

    let mut groups: BTreeMap<&str, &SecurityGroup> = BTreeMap::new();
    let mut sorted: Vec<&SecurityGroup> = input.groups.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for g in sorted {
        let name = g.metadata.name.as_deref().unwrap_or("");
        if name.is_empty() {
            issue(
                "SecurityGroup ?".into(),
                "metadata.name".into(),
                "a SecurityGroup needs a name".into(),
            );
            continue;
        }
        if groups.contains_key(name) {
            issue(
                format!("SecurityGroup {name}"),
                "metadata.name".into(),
                "defined twice (the first is used)".into(),
            );
            continue;
        }
        groups.insert(name, g);
    }
    let names: BTreeSet<&str> = groups.keys().copied().collect();

    // Members (ports and addresses per family) of each group; every interface naming a group
    // is isolated.
    let mut members: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut addrs: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    let mut deny_all = BTreeSet::new();
    let mut ports: Vec<&SgPort> = input.ports.iter().collect();
    ports.sort_by(|a, b| a.port.cmp(&b.port));
    for p in ports {
        let named: BTreeSet<&str> = p
            .groups
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty())
            .collect();
        if named.is_empty() {
            continue;
        }
        deny_all.insert(p.port.clone());
        for g in named {
            let Some((&key, _)) = groups.get_key_value(g) else {
                issue(
                    p.owner.clone(),
                    format!("metadata.annotations[{}]", p.annotation),
                    format!(
                        "security group {g:?} does not exist; interface {} is isolated until \
                         it does",
                        p.port
                    ),
                );
                continue;
            };
            members.entry(key).or_default().insert(p.port.clone());
            for ip in &p.ips {
                let af = if ip.is_ipv4() { "ip4" } else { "ip6" };
                addrs.entry((key, af)).or_default().insert(ip.to_string());
            }
        }
    }

    for (&name, g) in &groups {
        let pg = port_group_name(name);
        let object = format!("SecurityGroup {name}");
        let mut acls = BTreeMap::new();
        for tier in TIERS {
            for dir in [Dir::Ingress, Dir::Egress] {
                for (what, m) in base_matches(dir) {
                    let (k, a) = sg_acl(
                        name,
                        &pg,
                        dir,
                        &format!("base/{what}/{tier}"),
                        (SG_BASE_PRIORITY, tier),
                        m.to_string(),
                        "allow-related",
                    );
                    acls.insert(k, a);
                }
            }
        }
        let mut errors: Vec<(String, String)> = Vec::new();
        let tier = match g.spec.tier {
            0 => SG_TIER_BASE,
            1 => SG_TIER_BASE + 1,
            t => {
                errors.push(("spec.tier".into(), format!("{t} is not 0 or 1")));
                SG_TIER_BASE
            }
        };
        let mut rules = BTreeMap::new();
        for dir in [Dir::Ingress, Dir::Egress] {
            let list = match dir {
                Dir::Ingress => &g.spec.ingress_rules,
                Dir::Egress => &g.spec.egress_rules,
            };
            for (i, r) in list.iter().enumerate() {
                let field = format!("{}[{i}]", rules_field(dir));
                match rule_acl(r, dir, &field, tier, &names) {
                    Ok(ra) => {
                        let (k, a) = sg_acl(
                            name,
                            &pg,
                            dir,
                            &format!("rule/{i}"),
                            (ra.priority, tier),
                            ra.match_,
                            ra.action,
                        );
                        rules.insert(k, a);
                    }
                    Err(e) => errors.extend(e),
                }
            }
            if g.spec.allow_same_group_traffic {
                for af in ["ip4", "ip6"] {
                    let (k, a) = sg_acl(
                        name,
                        &pg,
                        dir,
                        &format!("same/{af}"),
                        (SG_SAME_GROUP_PRIORITY, tier),
                        format!(
                            "{af} && {af}.{} == ${}",
                            dir.peer_side(),
                            address_set_name(name, af)
                        ),
                        "allow-related",
                    );
                    rules.insert(k, a);
                }
            }
        }
        let applied = errors.is_empty();
        if applied {
            acls.extend(rules);
        }
        for (field, reason) in errors {
            issue(
                object.clone(),
                field,
                format!(
                    "{reason} (the group applies none of its rules; its members stay isolated)"
                ),
            );
        }
        out.applied.insert(name.to_string(), applied);
        out.port_groups.insert(
            pg.clone(),
            PlannedPortGroup {
                name: pg.clone(),
                ports: members.remove(name).unwrap_or_default(),
                acls,
                external_ids: owned_ids(&format!("pg/{pg}"), &[("sg", name)]),
            },
        );
        for af in ["ip4", "ip6"] {
            let set = address_set_name(name, af);
            out.address_sets.insert(
                set.clone(),
                PlannedAddressSet {
                    addresses: addrs.remove(&(name, af)).unwrap_or_default(),
                    external_ids: owned_ids(&format!("as/{set}"), &[("sg", name)]),
                    name: set,
                },
            );
        }
    }

    if !deny_all.is_empty() {
        let mut acls = BTreeMap::new();
        for tier in TIERS {
            for dir in [Dir::Ingress, Dir::Egress] {
                let (k, a) = sg_acl(
                    "deny_all",
                    DENY_ALL_PORT_GROUP,
                    dir,
                    &format!("drop/{tier}"),
                    (SG_DROP_PRIORITY, tier),
                    "ip".into(),
                    "drop",
                );
                acls.insert(k, a);
            }
        }
        out.port_groups.insert(
            DENY_ALL_PORT_GROUP.into(),
            PlannedPortGroup {
                name: DENY_ALL_PORT_GROUP.into(),
                ports: deny_all,
                acls,
                external_ids: owned_ids(
                    &format!("pg/{DENY_ALL_PORT_GROUP}"),
                    &[("sg", "deny_all")],
                ),
            },
        );
    }
    issues.sort();
    issues.dedup();
    out.issues = issues;
    out
}
