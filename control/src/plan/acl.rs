//! Subnet ACLs: Kube-OVN's `private` / `allowSubnets` isolation and `spec.acls`.

use ipnet::IpNet;

use super::{
    PRIVATE_ALLOW_PRIORITY, PRIVATE_DROP_PRIORITY, PRIVATE_NODE_ALLOW_PRIORITY, PlannedAcl,
    SUBNET_ACL_TIER, SubnetIntent, owned_ids,
};

fn af(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "ip4",
        IpNet::V6(_) => "ip6",
    }
}

fn acl(
    switch: &str,
    direction: &str,
    priority: i64,
    match_: String,
    action: &str,
    log: bool,
) -> PlannedAcl {
    let key = format!("acl/{switch}/{direction}/{priority}/{match_}");
    PlannedAcl {
        direction: direction.into(),
        priority,
        tier: SUBNET_ACL_TIER,
        action: action.into(),
        log,
        severity: log.then(|| "warning".to_string()),
        name: log.then(|| switch.to_string()),
        external_ids: owned_ids(&key, &[("subnet", switch)]),
        match_,
    }
}

/// The ACLs of `subnet`'s switch. A private subnet drops all IP traffic towards its ports
/// except from itself, from the node join subnet (so kubelet probes work) and from
/// `allowSubnets`, as Kube-OVN does (priorities 1000 / 1001 / 3000, stateful allows, all in
/// tier [`SUBNET_ACL_TIER`]).
pub(super) fn subnet_acls(subnet: &SubnetIntent, join: Option<&SubnetIntent>) -> Vec<PlannedAcl> {
    let name = subnet.name.as_str();
    let mut out = Vec::new();
    if subnet.private {
        out.push(acl(
            name,
            "to-lport",
            PRIVATE_DROP_PRIORITY,
            "ip".into(),
            "drop",
            true,
        ));
        let join_nets = join.map(SubnetIntent::nets).unwrap_or_default();
        for cidr in subnet.nets() {
            let f = af(&cidr);
            let cidr = cidr.trunc();
            out.push(acl(
                name,
                "to-lport",
                PRIVATE_ALLOW_PRIORITY,
                format!("{f}.src == {cidr} && {f}.dst == {cidr}"),
                "allow-related",
                false,
            ));
            for j in join_nets.iter().filter(|j| af(j) == f) {
                out.push(acl(
                    name,
                    "to-lport",
                    PRIVATE_NODE_ALLOW_PRIORITY,
                    format!("{f}.src == {}", j.trunc()),
                    "allow-related",
                    false,
                ));
            }
            for allow in subnet.allow_subnets.iter().filter(|a| af(a) == f) {
                let allow = allow.trunc();
                out.push(acl(
                    name,
                    "to-lport",
                    PRIVATE_ALLOW_PRIORITY,
                    format!(
                        "({f}.src == {cidr} && {f}.dst == {allow}) || ({f}.src == {allow} && {f}.dst == {cidr})"
                    ),
                    "allow-related",
                    false,
                ));
            }
        }
    }
    for a in &subnet.acls {
        out.push(acl(
            name,
            &a.direction,
            a.priority,
            a.match_.clone(),
            &a.action,
            false,
        ));
    }
    out
}
