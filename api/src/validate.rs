//! Validation of user objects, as pure functions. Every error names the object, the field and
//! the bad value, so the message can go straight into a `Validated=False` condition or a log.

// Errors carry the full context (object, field, value) by design; they are built only on the
// cold rejection path, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::annotations::{AnnotationError, Annotations, PodNetwork};
use super::crd::{
    DEFAULT_VPC, Ip, IpPool, PolicyRouteAction, Protocol, ProviderNetwork, Subnet, Vlan, Vpc,
};
use super::nad::NadError;
use super::net::{CidrBlock, DualIp, IpFamily, IpRange, MacAddr, NetParseError, nets_overlap};

/// The object an error is about: `Subnet team-a`, `Pod default/web-0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn cluster(kind: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: None,
            name: name.to_string(),
        }
    }

    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A rejected object: which one, which field, what value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{object}: {field} is required")]
    MissingField { object: ObjectRef, field: String },
    #[error("{object}: {field} {value:?} is invalid: {reason}")]
    Syntax {
        object: ObjectRef,
        field: String,
        value: String,
        reason: NetParseError,
    },
    #[error("{object}: spec.protocol is {protocol} but spec.cidrBlock {cidr_block:?} is {actual}")]
    ProtocolMismatch {
        object: ObjectRef,
        protocol: Protocol,
        cidr_block: String,
        actual: Protocol,
    },
    #[error("{object}: spec.gateway {gateway} is outside spec.cidrBlock {cidr_block:?}")]
    GatewayOutsideCidr {
        object: ObjectRef,
        gateway: IpAddr,
        cidr_block: String,
    },
    #[error(
        "{object}: spec.gateway {gateway:?} has no {family} address but spec.cidrBlock \
         {cidr_block:?} has an {family} net"
    )]
    GatewayMissingFamily {
        object: ObjectRef,
        gateway: String,
        family: IpFamily,
        cidr_block: String,
    },
    #[error("{object}: spec.gateway {gateway} is the {what} of {cidr}")]
    GatewayReserved {
        object: ObjectRef,
        gateway: IpAddr,
        cidr: IpNet,
        what: &'static str,
    },
    #[error("{object}: {field} {value:?} is outside spec.cidrBlock {cidr_block:?}")]
    OutsideCidr {
        object: ObjectRef,
        field: String,
        value: String,
        cidr_block: String,
    },
    #[error("{object}: spec.cidrBlock {cidr} overlaps {other_cidr} of Subnet {other} in VPC {vpc}")]
    SubnetOverlap {
        object: ObjectRef,
        cidr: IpNet,
        other: String,
        other_cidr: IpNet,
        vpc: String,
    },
    #[error("{object}: {field} {ip} is outside Subnet {subnet} ({cidr_block})")]
    StaticIpOutsideSubnet {
        object: ObjectRef,
        field: String,
        ip: IpAddr,
        subnet: String,
        cidr_block: String,
    },
    #[error("{object}: {field} {ip} is the {what} of Subnet {subnet}")]
    StaticIpReserved {
        object: ObjectRef,
        field: String,
        ip: IpAddr,
        subnet: String,
        what: &'static str,
    },
    #[error("{object}: {field} {ip} is already taken by {owner}")]
    StaticIpTaken {
        object: ObjectRef,
        field: String,
        ip: IpAddr,
        owner: String,
    },
    #[error("{object}: {field} {id} is out of range 0..4095")]
    VlanIdOutOfRange {
        object: ObjectRef,
        field: String,
        id: i64,
    },
    #[error("{object}: {field} {value} is out of range {range}")]
    OutOfRange {
        object: ObjectRef,
        field: String,
        value: i64,
        range: &'static str,
    },
    #[error("{object}: {field} {value:?}: {reason}")]
    Unsupported {
        object: ObjectRef,
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("{object}: {field} {value:?} disagrees with {other_field} {other_value:?}")]
    Inconsistent {
        object: ObjectRef,
        field: String,
        value: String,
        other_field: &'static str,
        other_value: String,
    },
    #[error("{object}: {field} names {kind} {name:?}, which does not exist")]
    UnknownReference {
        object: ObjectRef,
        field: String,
        kind: &'static str,
        name: String,
    },
    #[error("{object}: {field} {mac} is already taken by {owner}")]
    StaticMacTaken {
        object: ObjectRef,
        field: String,
        mac: MacAddr,
        owner: String,
    },
    #[error(
        "{object}: attachment {nad} serves its vhost-user socket in volume {volume:?}, but the \
         pod has no such volume (add an emptyDir volume named {volume:?} and mount it where \
         the DPDK app looks for the socket)"
    )]
    VhostVolumeMissing {
        object: ObjectRef,
        nad: String,
        volume: String,
    },
    #[error("{object}: {error}")]
    Attachment { object: ObjectRef, error: NadError },
    #[error("{object}: {error}")]
    Annotation {
        object: ObjectRef,
        error: AnnotationError,
    },
}

impl ValidationError {
    /// The object the error is about.
    pub fn object(&self) -> &ObjectRef {
        match self {
            ValidationError::MissingField { object, .. }
            | ValidationError::Syntax { object, .. }
            | ValidationError::ProtocolMismatch { object, .. }
            | ValidationError::GatewayOutsideCidr { object, .. }
            | ValidationError::GatewayMissingFamily { object, .. }
            | ValidationError::GatewayReserved { object, .. }
            | ValidationError::OutsideCidr { object, .. }
            | ValidationError::SubnetOverlap { object, .. }
            | ValidationError::StaticIpOutsideSubnet { object, .. }
            | ValidationError::StaticIpReserved { object, .. }
            | ValidationError::StaticIpTaken { object, .. }
            | ValidationError::VlanIdOutOfRange { object, .. }
            | ValidationError::OutOfRange { object, .. }
            | ValidationError::Unsupported { object, .. }
            | ValidationError::Inconsistent { object, .. }
            | ValidationError::UnknownReference { object, .. }
            | ValidationError::StaticMacTaken { object, .. }
            | ValidationError::VhostVolumeMissing { object, .. }
            | ValidationError::Attachment { object, .. }
            | ValidationError::Annotation { object, .. } => object,
        }
    }
}

/// A subnet whose spec passed validation, with its notations parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSubnet {
    pub name: String,
    pub vpc: String,
    pub provider: String,
    pub cidr: CidrBlock,
    /// The gateway per family (the first address of each net when the spec leaves it empty).
    pub gateway: DualIp,
    pub exclude: Vec<IpRange>,
}

impl ValidatedSubnet {
    /// The key within which subnets must not overlap: the VPC for OVN subnets (provider `ovn` or
    /// `<nad>.<ns>.ovn`); the provider itself for subnets of IPAM-only attachments (macvlan and
    /// the like), which are in no OVN VPC.
    pub fn overlap_domain(&self) -> String {
        if self.provider == super::annotations::OVN_PROVIDER || self.provider.ends_with(".ovn") {
            self.vpc.clone()
        } else {
            format!("provider {}", self.provider)
        }
    }
}

/// The network and (IPv4) broadcast addresses of a net, which no interface may use. /31, /32,
/// /127 and /128 nets have none (point-to-point and host routes use every address).
fn reserved_address_kind(net: &IpNet, ip: &IpAddr) -> Option<&'static str> {
    let small = match net {
        IpNet::V4(n) => n.prefix_len() >= 31,
        IpNet::V6(n) => n.prefix_len() >= 127,
    };
    if small {
        return None;
    }
    if *ip == net.network() {
        return Some("network address");
    }
    if matches!(net, IpNet::V4(_)) && *ip == net.broadcast() {
        return Some("broadcast address");
    }
    None
}

/// Validates one Subnet's spec: `cidrBlock` syntax, `protocol` agreement, `gateway` inside
/// the block (one per family for dual stack), and `excludeIps` entries (`a..b` or single IPs,
/// inside the block, start <= end). Returns every error found, not just the first.
pub fn validate_subnet(subnet: &Subnet) -> Result<ValidatedSubnet, Vec<ValidationError>> {
    let name = subnet.metadata.name.clone().unwrap_or_default();
    let object = ObjectRef::cluster("Subnet", &name);
    let spec = &subnet.spec;
    let mut errors = Vec::new();

    if spec.protocol == Some(Protocol::Mac) {
        errors.push(ValidationError::Unsupported {
            object,
            field: "spec.protocol".into(),
            value: "Mac".into(),
            reason: "MAC-only subnets (external DHCP) are not supported by FerrOVN",
        });
        return Err(errors);
    }
    if spec.cidr_block.trim().is_empty() {
        errors.push(ValidationError::MissingField {
            object,
            field: "spec.cidrBlock".into(),
        });
        return Err(errors);
    }
    let cidr = match CidrBlock::parse(&spec.cidr_block) {
        Ok(c) => c,
        Err(reason) => {
            errors.push(ValidationError::Syntax {
                object,
                field: "spec.cidrBlock".into(),
                value: spec.cidr_block.clone(),
                reason,
            });
            return Err(errors);
        }
    };

    if let Some(protocol) = spec.protocol
        && protocol != cidr.protocol()
    {
        errors.push(ValidationError::ProtocolMismatch {
            object: object.clone(),
            protocol,
            cidr_block: spec.cidr_block.clone(),
            actual: cidr.protocol(),
        });
    }

    let gateway = if spec.gateway.trim().is_empty() {
        cidr.default_gateway()
    } else {
        match DualIp::parse(&spec.gateway) {
            Err(reason) => {
                errors.push(ValidationError::Syntax {
                    object: object.clone(),
                    field: "spec.gateway".into(),
                    value: spec.gateway.clone(),
                    reason,
                });
                DualIp::default()
            }
            Ok(gw) => {
                for ip in gw.addrs() {
                    match cidr.net(IpFamily::of(&ip)) {
                        Some(net) if net.contains(&ip) => {
                            if let Some(what) = reserved_address_kind(&net, &ip) {
                                errors.push(ValidationError::GatewayReserved {
                                    object: object.clone(),
                                    gateway: ip,
                                    cidr: net,
                                    what,
                                });
                            }
                        }
                        _ => errors.push(ValidationError::GatewayOutsideCidr {
                            object: object.clone(),
                            gateway: ip,
                            cidr_block: spec.cidr_block.clone(),
                        }),
                    }
                }
                for family in cidr.families() {
                    if gw.get(family).is_none() {
                        errors.push(ValidationError::GatewayMissingFamily {
                            object: object.clone(),
                            gateway: spec.gateway.clone(),
                            family,
                            cidr_block: spec.cidr_block.clone(),
                        });
                    }
                }
                gw
            }
        }
    };

    let mut exclude = Vec::with_capacity(spec.exclude_ips.len());
    for (i, entry) in spec.exclude_ips.iter().enumerate() {
        let field = format!("spec.excludeIps[{i}]");
        match IpRange::parse(entry) {
            Err(reason) => errors.push(ValidationError::Syntax {
                object: object.clone(),
                field,
                value: entry.clone(),
                reason,
            }),
            Ok(range) if !(cidr.contains(&range.start) && cidr.contains(&range.end)) => errors
                .push(ValidationError::OutsideCidr {
                    object: object.clone(),
                    field,
                    value: entry.clone(),
                    cidr_block: spec.cidr_block.clone(),
                }),
            Ok(range) => exclude.push(range),
        }
    }

    errors.extend(check_acls(&object, &spec.acls));

    for (i, entry) in spec.allow_subnets.iter().enumerate() {
        if entry.trim().parse::<IpNet>().is_err() {
            errors.push(ValidationError::Syntax {
                object: object.clone(),
                field: format!("spec.allowSubnets[{i}]"),
                value: entry.clone(),
                reason: NetParseError::BadCidr {
                    value: entry.clone(),
                },
            });
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidatedSubnet {
        name,
        vpc: subnet.vpc_name().to_string(),
        provider: subnet.provider().to_string(),
        cidr,
        gateway,
        exclude,
    })
}

/// OVN's priority range of ACLs and router policies; the NB refuses a whole transaction with
/// one row outside it.
pub const OVN_PRIORITY_RANGE: std::ops::RangeInclusive<i32> = 0..=32767;
/// The ACL directions OVN knows.
pub const ACL_DIRECTIONS: [&str; 2] = ["from-lport", "to-lport"];
/// The ACL actions OVN knows.
pub const ACL_ACTIONS: [&str; 6] = [
    "allow",
    "allow-related",
    "allow-stateless",
    "drop",
    "reject",
    "pass",
];

/// A subnet's ACLs: what the NB schema would refuse (and with it every other change of the
/// same transaction).
fn check_acls(object: &ObjectRef, acls: &[super::crd::SubnetAcl]) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for (i, acl) in acls.iter().enumerate() {
        if !OVN_PRIORITY_RANGE.contains(&acl.priority) {
            errors.push(ValidationError::OutOfRange {
                object: object.clone(),
                field: format!("spec.acls[{i}].priority"),
                value: acl.priority.into(),
                range: "0..32767",
            });
        }
        for (field, value, allowed, reason) in [
            (
                "direction",
                &acl.direction,
                &ACL_DIRECTIONS[..],
                "expected from-lport or to-lport",
            ),
            (
                "action",
                &acl.action,
                &ACL_ACTIONS[..],
                "expected allow, allow-related, allow-stateless, drop, reject or pass",
            ),
        ] {
            if !allowed.contains(&value.as_str()) {
                errors.push(ValidationError::Unsupported {
                    object: object.clone(),
                    field: format!("spec.acls[{i}].{field}"),
                    value: value.clone(),
                    reason,
                });
            }
        }
    }
    errors
}

/// Finds subnets whose CIDRs overlap another subnet of the same VPC (see
/// [`ValidatedSubnet::overlap_domain`]). The error goes to the subnet later in `subnets` (pass
/// them in creation order to blame the newcomer), naming the earlier one. Every subnet that
/// overlaps any other appears in at least one error, as `object` or `other`. O(n log n).
pub fn check_subnet_overlaps(subnets: &[ValidatedSubnet]) -> Vec<ValidationError> {
    // (domain, family) -> [(net, index)]
    let mut groups: HashMap<(String, IpFamily), Vec<(IpNet, usize)>> = HashMap::new();
    for (i, s) in subnets.iter().enumerate() {
        for net in s.cidr.nets() {
            groups
                .entry((s.overlap_domain(), IpFamily::of_net(&net)))
                .or_default()
                .push((net, i));
        }
    }
    let mut found: Vec<(usize, IpNet, usize, IpNet)> = Vec::new();
    for entries in groups.values_mut() {
        entries.sort_by_key(|(net, i)| (net.network(), net.prefix_len(), *i));
        // CIDRs either nest or are disjoint: a net overlaps an earlier one exactly when the
        // earlier net reaching furthest covers its network address.
        let mut cover: Option<(IpNet, usize)> = None;
        for &(net, i) in entries.iter() {
            match cover {
                Some((c, ci)) if nets_overlap(&c, &net) => {
                    let (late, late_net, early, early_net) = if i > ci {
                        (i, net, ci, c)
                    } else {
                        (ci, c, i, net)
                    };
                    found.push((late, late_net, early, early_net));
                    if net.broadcast() > c.broadcast() {
                        cover = Some((net, i));
                    }
                }
                _ => cover = Some((net, i)),
            }
        }
    }
    found.sort_by_key(|(late, late_net, early, _)| (*late, *late_net, *early));
    found
        .into_iter()
        .map(|(late, cidr, early, other_cidr)| {
            let s = &subnets[late];
            ValidationError::SubnetOverlap {
                object: ObjectRef::cluster("Subnet", &s.name),
                cidr,
                other: subnets[early].name.clone(),
                other_cidr,
                vpc: s.overlap_domain(),
            }
        })
        .collect()
}

/// Validates every subnet and then their overlaps. Subnets with errors are left out of the
/// overlap check (their CIDRs are not trustworthy).
pub fn validate_subnets(subnets: &[Subnet]) -> (Vec<ValidatedSubnet>, Vec<ValidationError>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for s in subnets {
        match validate_subnet(s) {
            Ok(v) => ok.push(v),
            Err(mut e) => errors.append(&mut e),
        }
    }
    errors.extend(check_subnet_overlaps(&ok));
    (ok, errors)
}

/// Checks a static (user-chosen) address against its subnet: inside the CIDR, not the
/// network/broadcast address nor the gateway, and not held by another owner in `taken`
/// (address -> owner, e.g. `"Pod default/web-1"`). An address in `excludeIps` is allowed: as in
/// Kube-OVN, excluded addresses are kept away from automatic allocation but may be fixed.
pub fn check_static_ip(
    object: &ObjectRef,
    field: &str,
    ip: IpAddr,
    subnet: &ValidatedSubnet,
    taken: &HashMap<IpAddr, String>,
) -> Result<(), ValidationError> {
    let Some(net) = subnet
        .cidr
        .net(IpFamily::of(&ip))
        .filter(|n| n.contains(&ip))
    else {
        return Err(ValidationError::StaticIpOutsideSubnet {
            object: object.clone(),
            field: field.to_string(),
            ip,
            subnet: subnet.name.clone(),
            cidr_block: subnet.cidr.to_string(),
        });
    };
    let reserved = reserved_address_kind(&net, &ip)
        .or_else(|| (subnet.gateway.get(IpFamily::of(&ip)) == Some(ip)).then_some("gateway"));
    if let Some(what) = reserved {
        return Err(ValidationError::StaticIpReserved {
            object: object.clone(),
            field: field.to_string(),
            ip,
            subnet: subnet.name.clone(),
            what,
        });
    }
    let me = object.to_string();
    if let Some(owner) = taken.get(&ip)
        && *owner != me
    {
        return Err(ValidationError::StaticIpTaken {
            object: object.clone(),
            field: field.to_string(),
            ip,
            owner: owner.clone(),
        });
    }
    Ok(())
}

/// [`check_static_ip`] for every address of a `"v4,v6"` value, collecting all errors.
pub fn check_static_ips(
    object: &ObjectRef,
    field: &str,
    ips: &DualIp,
    subnet: &ValidatedSubnet,
    taken: &HashMap<IpAddr, String>,
) -> Vec<ValidationError> {
    ips.addrs()
        .filter_map(|ip| check_static_ip(object, field, ip, subnet, taken).err())
        .collect()
}

/// Parses a MAC an interface may use (unicast, not all-zero).
pub fn validate_mac(
    object: &ObjectRef,
    field: &str,
    value: &str,
) -> Result<MacAddr, ValidationError> {
    MacAddr::parse_unicast(value.trim()).map_err(|reason| ValidationError::Syntax {
        object: object.clone(),
        field: field.to_string(),
        value: value.to_string(),
        reason,
    })
}

/// Validates a Vlan: the tag within 0..=4095 and a provider network named.
pub fn validate_vlan(vlan: &Vlan) -> Vec<ValidationError> {
    let object = ObjectRef::cluster("Vlan", vlan.metadata.name.as_deref().unwrap_or(""));
    let mut errors = Vec::new();
    let (field, id) = if vlan.spec.id == 0 && vlan.spec.vlan_id != 0 {
        ("spec.vlanId", vlan.spec.vlan_id)
    } else {
        ("spec.id", vlan.spec.id)
    };
    if !(0..=4095).contains(&id) {
        errors.push(ValidationError::VlanIdOutOfRange {
            object: object.clone(),
            field: field.to_string(),
            id: id.into(),
        });
    }
    if vlan.provider_network().is_empty() {
        errors.push(ValidationError::MissingField {
            object,
            field: "spec.provider".into(),
        });
    }
    errors
}

/// Validates a Vpc: static route CIDRs and next hops, policy route priorities (0..=32767) and
/// the next hop a `reroute` needs.
pub fn validate_vpc(vpc: &Vpc) -> Vec<ValidationError> {
    let object = ObjectRef::cluster("Vpc", vpc.metadata.name.as_deref().unwrap_or(""));
    let mut errors = Vec::new();
    let mut syntax = |field: String, value: &str, reason: NetParseError| {
        errors.push(ValidationError::Syntax {
            object: object.clone(),
            field,
            value: value.to_string(),
            reason,
        })
    };
    for (i, r) in vpc.spec.static_routes.iter().enumerate() {
        if r.cidr.trim().parse::<IpNet>().is_err() {
            syntax(
                format!("spec.staticRoutes[{i}].cidr"),
                &r.cidr,
                NetParseError::BadCidr {
                    value: r.cidr.clone(),
                },
            );
        }
        if r.next_hop_ip.trim().parse::<IpAddr>().is_err() {
            syntax(
                format!("spec.staticRoutes[{i}].nextHopIP"),
                &r.next_hop_ip,
                NetParseError::BadIp {
                    value: r.next_hop_ip.clone(),
                },
            );
        }
    }
    for (i, r) in vpc.spec.policy_routes.iter().enumerate() {
        if !OVN_PRIORITY_RANGE.contains(&r.priority) {
            errors.push(ValidationError::OutOfRange {
                object: object.clone(),
                field: format!("spec.policyRoutes[{i}].priority"),
                value: r.priority.into(),
                range: "0..32767",
            });
        }
        let needs_hop = r.action == Some(PolicyRouteAction::Reroute);
        if needs_hop && r.next_hop_ip.trim().is_empty() {
            errors.push(ValidationError::MissingField {
                object: object.clone(),
                field: format!("spec.policyRoutes[{i}].nextHopIP (action reroute)"),
            });
        } else if !r.next_hop_ip.trim().is_empty() {
            for hop in r.next_hop_ip.split(',').map(str::trim) {
                if hop.parse::<IpAddr>().is_err() {
                    errors.push(ValidationError::Syntax {
                        object: object.clone(),
                        field: format!("spec.policyRoutes[{i}].nextHopIP"),
                        value: r.next_hop_ip.clone(),
                        reason: NetParseError::BadIp {
                            value: hop.to_string(),
                        },
                    });
                }
            }
        }
    }
    errors
}

/// Validates a ProviderNetwork: some interface to use (the default or a per-node one), and
/// interface names Linux accepts.
pub fn validate_provider_network(pn: &ProviderNetwork) -> Vec<ValidationError> {
    let object = ObjectRef::cluster("ProviderNetwork", pn.metadata.name.as_deref().unwrap_or(""));
    let mut errors = Vec::new();
    let spec = &pn.spec;
    if spec.default_interface.trim().is_empty() && spec.custom_interfaces.is_empty() {
        errors.push(ValidationError::MissingField {
            object: object.clone(),
            field: "spec.defaultInterface".into(),
        });
    }
    let names = std::iter::once(("spec.defaultInterface".to_string(), &spec.default_interface))
        .filter(|(_, n)| !n.is_empty())
        .chain(spec.custom_interfaces.iter().enumerate().map(|(i, c)| {
            (
                format!("spec.customInterfaces[{i}].interface"),
                &c.interface,
            )
        }));
    for (field, name) in names {
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if bad {
            errors.push(ValidationError::Unsupported {
                object: object.clone(),
                field,
                value: name.clone(),
                reason: "not a Linux interface name (1..15 bytes, no '/', ':' or blanks)",
            });
        }
    }
    errors
}

/// Validates an IPPool's `ips` (IPs, CIDRs or `a..b` ranges) against its subnet.
pub fn validate_ip_pool(pool: &IpPool, subnet: &ValidatedSubnet) -> Vec<ValidationError> {
    let object = ObjectRef::cluster("IPPool", pool.metadata.name.as_deref().unwrap_or(""));
    let mut errors = Vec::new();
    for (i, entry) in pool.spec.ips.iter().enumerate() {
        let field = format!("spec.ips[{i}]");
        let range = if entry.contains('/') {
            entry
                .trim()
                .parse::<IpNet>()
                .map(|n| IpRange {
                    start: n.network(),
                    end: n.broadcast(),
                })
                .map_err(|_| NetParseError::BadCidr {
                    value: entry.clone(),
                })
        } else {
            IpRange::parse(entry)
        };
        match range {
            Err(reason) => errors.push(ValidationError::Syntax {
                object: object.clone(),
                field,
                value: entry.clone(),
                reason,
            }),
            Ok(r) if !(subnet.cidr.contains(&r.start) && subnet.cidr.contains(&r.end)) => errors
                .push(ValidationError::OutsideCidr {
                    object: object.clone(),
                    field,
                    value: entry.clone(),
                    cidr_block: subnet.cidr.to_string(),
                }),
            Ok(_) => {}
        }
    }
    errors
}

/// An IP object's allocation, parsed: what IPAM recovery needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRecord {
    pub name: String,
    pub pod_name: String,
    pub namespace: String,
    pub subnet: String,
    pub node_name: String,
    pub ip: DualIp,
    pub mac: Option<MacAddr>,
}

/// Parses an IP object. The address comes from `ipAddress` (`"v4"`, `"v6"` or `"v4,v6"`), or
/// from `v4IpAddress`/`v6IpAddress` when `ipAddress` is empty; when both are given they must
/// agree. `subnet` and an address are required.
pub fn parse_ip_object(ip: &Ip) -> Result<IpRecord, Vec<ValidationError>> {
    let name = ip.metadata.name.clone().unwrap_or_default();
    let object = ObjectRef::cluster("IP", &name);
    let spec = &ip.spec;
    let mut errors = Vec::new();
    let syntax =
        |errors: &mut Vec<ValidationError>, field: &str, value: &str, reason: NetParseError| {
            errors.push(ValidationError::Syntax {
                object: object.clone(),
                field: field.to_string(),
                value: value.to_string(),
                reason,
            })
        };
    let mut addr = DualIp::default();
    if !spec.ip_address.trim().is_empty() {
        match DualIp::parse(&spec.ip_address) {
            Ok(a) => addr = a,
            Err(e) => syntax(&mut errors, "spec.ipAddress", &spec.ip_address, e),
        }
    }
    for (field, value, family) in [
        ("spec.v4IpAddress", &spec.v4_ip_address, IpFamily::V4),
        ("spec.v6IpAddress", &spec.v6_ip_address, IpFamily::V6),
    ] {
        if value.trim().is_empty() {
            continue;
        }
        match value.trim().parse::<IpAddr>() {
            Ok(a) if IpFamily::of(&a) != family => syntax(
                &mut errors,
                field,
                value,
                NetParseError::BadIp {
                    value: value.clone(),
                },
            ),
            Ok(a) => match (addr.get(family), a) {
                (None, IpAddr::V4(v4)) => addr.v4 = Some(v4),
                (None, IpAddr::V6(v6)) => addr.v6 = Some(v6),
                (Some(existing), _) if existing == a => {}
                (Some(existing), _) => errors.push(ValidationError::Inconsistent {
                    object: object.clone(),
                    field: field.to_string(),
                    value: value.clone(),
                    other_field: "spec.ipAddress",
                    other_value: existing.to_string(),
                }),
            },
            Err(_) => syntax(
                &mut errors,
                field,
                value,
                NetParseError::BadIp {
                    value: value.clone(),
                },
            ),
        }
    }
    let mac = if spec.mac_address.trim().is_empty() {
        None
    } else {
        match MacAddr::parse_unicast(spec.mac_address.trim()) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(ValidationError::Syntax {
                    object: object.clone(),
                    field: "spec.macAddress".into(),
                    value: spec.mac_address.clone(),
                    reason: e,
                });
                None
            }
        }
    };
    if errors.is_empty() && addr.is_empty() {
        errors.push(ValidationError::MissingField {
            object: object.clone(),
            field: "spec.ipAddress".into(),
        });
    }
    if spec.subnet.trim().is_empty() {
        errors.push(ValidationError::MissingField {
            object,
            field: "spec.subnet".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(IpRecord {
        name,
        pod_name: spec.pod_name.clone(),
        namespace: spec.namespace.clone(),
        subnet: spec.subnet.clone(),
        node_name: spec.node_name.clone(),
        ip: addr,
        mac,
    })
}

/// Reads every typed annotation of one provider on a pod (addresses, MAC, rates, VLAN id,
/// routes, ...) and reports the malformed ones.
pub fn validate_pod_annotations(
    object: &ObjectRef,
    annotations: &Annotations,
    provider: &str,
) -> Vec<ValidationError> {
    PodNetwork::for_provider(annotations, provider)
        .check_all()
        .into_iter()
        .map(|error| ValidationError::Annotation {
            object: object.clone(),
            error,
        })
        .collect()
}

/// The VPC name a subnet with an empty `spec.vpc` belongs to.
pub fn default_vpc() -> &'static str {
    DEFAULT_VPC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SubnetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn subnet(name: &str, cidr: &str) -> Subnet {
        Subnet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: SubnetSpec {
                cidr_block: cidr.into(),
                ..SubnetSpec::default()
            },
            status: None,
        }
    }

    fn errs(s: &Subnet) -> Vec<String> {
        validate_subnet(s)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn good_subnet_gets_default_gateway() {
        let v = validate_subnet(&subnet("a", "10.66.0.0/16")).unwrap();
        assert_eq!(v.gateway.to_string(), "10.66.0.1");
        assert_eq!(v.vpc, "ovn-cluster");
        assert_eq!(v.provider, "ovn");
    }

    #[test]
    fn cidr_errors() {
        assert_eq!(
            errs(&subnet("a", "")),
            ["Subnet a: spec.cidrBlock is required"]
        );
        assert_eq!(
            errs(&subnet("a", "10.66.0.0/33")),
            [
                "Subnet a: spec.cidrBlock \"10.66.0.0/33\" is invalid: \"10.66.0.0/33\" is not a CIDR (expected e.g. 10.16.0.0/16 or fd00:10:16::/64)"
            ]
        );
    }

    #[test]
    fn protocol_mismatch() {
        let mut s = subnet("a", "10.66.0.0/16");
        s.spec.protocol = Some(Protocol::Dual);
        assert_eq!(
            errs(&s),
            ["Subnet a: spec.protocol is Dual but spec.cidrBlock \"10.66.0.0/16\" is IPv4"]
        );
    }

    #[test]
    fn mac_only_subnets_are_refused_clearly() {
        let mut s = subnet("m", "");
        s.spec.protocol = Some(Protocol::Mac);
        assert_eq!(
            errs(&s),
            [
                "Subnet m: spec.protocol \"Mac\": MAC-only subnets (external DHCP) are not supported by FerrOVN"
            ]
        );
    }

    #[test]
    fn gateway_checks() {
        let mut s = subnet("a", "10.66.0.0/16");
        s.spec.gateway = "10.67.0.1".into();
        assert_eq!(
            errs(&s),
            ["Subnet a: spec.gateway 10.67.0.1 is outside spec.cidrBlock \"10.66.0.0/16\""]
        );
        s.spec.gateway = "10.66.255.255".into();
        assert_eq!(
            errs(&s),
            ["Subnet a: spec.gateway 10.66.255.255 is the broadcast address of 10.66.0.0/16"]
        );
        let mut d = subnet("d", "10.66.0.0/16,fd00:66::/64");
        d.spec.gateway = "10.66.0.1".into();
        assert_eq!(
            errs(&d),
            [
                "Subnet d: spec.gateway \"10.66.0.1\" has no IPv6 address but spec.cidrBlock \"10.66.0.0/16,fd00:66::/64\" has an IPv6 net"
            ]
        );
        d.spec.gateway = "10.66.0.1,fd00:67::1".into();
        assert_eq!(
            errs(&d),
            [
                "Subnet d: spec.gateway fd00:67::1 is outside spec.cidrBlock \"10.66.0.0/16,fd00:66::/64\""
            ]
        );
        d.spec.gateway = "fd00:66::1,10.66.0.1".into();
        assert!(errs(&d).is_empty());
    }

    #[test]
    fn exclude_ips_checks() {
        let mut s = subnet("a", "10.66.0.0/16");
        s.spec.exclude_ips = vec![
            "10.66.0.1..10.66.0.10".into(),
            "10.66.0.20".into(),
            "10.66.0.30..10.66.0.25".into(),
            "10.66.0.1..10.67.0.1".into(),
            "10.66.0.x".into(),
        ];
        assert_eq!(
            errs(&s),
            [
                "Subnet a: spec.excludeIps[2] \"10.66.0.30..10.66.0.25\" is invalid: range \"10.66.0.30..10.66.0.25\" starts after it ends",
                "Subnet a: spec.excludeIps[3] \"10.66.0.1..10.67.0.1\" is outside spec.cidrBlock \"10.66.0.0/16\"",
                "Subnet a: spec.excludeIps[4] \"10.66.0.x\" is invalid: \"10.66.0.x\" is not an IP address",
            ]
        );
    }

    #[test]
    fn overlap_only_within_a_vpc() {
        let a = subnet("a", "10.66.0.0/16");
        let b = subnet("b", "10.66.4.0/24");
        let mut c = subnet("c", "10.66.0.0/16");
        c.spec.vpc = "blue".into();
        let (_, errors) = validate_subnets(&[a, b, c]);
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "Subnet b: spec.cidrBlock 10.66.4.0/24 overlaps 10.66.0.0/16 of Subnet a in VPC ovn-cluster"
            ]
        );
    }

    #[test]
    fn static_ip_checks() {
        let mut s = subnet("a", "10.66.0.0/16");
        s.spec.exclude_ips = vec!["10.66.0.2..10.66.0.9".into()];
        let v = validate_subnet(&s).unwrap();
        let pod = ObjectRef::namespaced("Pod", "team-a", "web");
        let field = "metadata.annotations[ovn.kubernetes.io/ip_address]";
        let mut taken = HashMap::new();
        taken.insert("10.66.0.20".parse().unwrap(), "Pod team-a/db".to_string());
        taken.insert("10.66.0.21".parse().unwrap(), "Pod team-a/web".to_string());
        let check = |ip: &str| {
            check_static_ip(&pod, field, ip.parse().unwrap(), &v, &taken).map_err(|e| e.to_string())
        };
        assert_eq!(check("10.66.0.30"), Ok(()));
        assert_eq!(
            check("10.66.0.5"),
            Ok(()),
            "excluded addresses may be fixed"
        );
        assert_eq!(check("10.66.0.21"), Ok(()), "the pod's own address");
        assert_eq!(
            check("10.67.0.5").unwrap_err(),
            "Pod team-a/web: metadata.annotations[ovn.kubernetes.io/ip_address] 10.67.0.5 is outside Subnet a (10.66.0.0/16)"
        );
        assert_eq!(
            check("10.66.0.20").unwrap_err(),
            "Pod team-a/web: metadata.annotations[ovn.kubernetes.io/ip_address] 10.66.0.20 is already taken by Pod team-a/db"
        );
        assert!(
            check("10.66.0.1")
                .unwrap_err()
                .ends_with("is the gateway of Subnet a")
        );
        assert!(check("10.66.0.0").unwrap_err().contains("network address"));
        assert!(check("fd00::1").unwrap_err().contains("outside"));
    }

    #[test]
    fn vlan_and_mac() {
        let mut vlan = Vlan::new("v1", Default::default());
        vlan.spec.id = 4096;
        let msgs: Vec<String> = validate_vlan(&vlan).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "Vlan v1: spec.id 4096 is out of range 0..4095",
                "Vlan v1: spec.provider is required"
            ]
        );
        vlan.spec.id = 100;
        vlan.spec.provider = "net1".into();
        assert!(validate_vlan(&vlan).is_empty());
        let pod = ObjectRef::namespaced("Pod", "default", "p");
        let e = validate_mac(&pod, "mac_address", "01:02:03:04:05:06").unwrap_err();
        assert!(e.to_string().contains("multicast"), "{e}");
        assert!(validate_mac(&pod, "mac_address", "02:02:03:04:05:06").is_ok());
    }

    #[test]
    fn allow_subnets_must_be_cidrs() {
        let mut s = subnet("p", "10.77.0.0/16");
        s.spec.private = true;
        s.spec.allow_subnets = vec!["10.66.0.0/16".into(), "team-a".into()];
        assert_eq!(
            errs(&s),
            [
                "Subnet p: spec.allowSubnets[1] \"team-a\" is invalid: \"team-a\" is not a CIDR (expected e.g. 10.16.0.0/16 or fd00:10:16::/64)"
            ]
        );
    }

    #[test]
    fn vpc_routes() {
        use crate::crd::{PolicyRoute, StaticRoute};
        let mut vpc = Vpc::new("blue", Default::default());
        vpc.spec.static_routes = vec![
            StaticRoute {
                cidr: "0.0.0.0/0".into(),
                next_hop_ip: "10.0.1.254".into(),
                ..StaticRoute::default()
            },
            StaticRoute {
                cidr: "10.0.0.0".into(),
                next_hop_ip: "gw".into(),
                ..StaticRoute::default()
            },
        ];
        vpc.spec.policy_routes = vec![
            PolicyRoute {
                priority: 40000,
                match_: "ip4.src == 10.0.0.0/24".into(),
                action: Some(PolicyRouteAction::Reroute),
                next_hop_ip: String::new(),
            },
            PolicyRoute {
                priority: 100,
                match_: "ip4".into(),
                action: Some(PolicyRouteAction::Allow),
                next_hop_ip: String::new(),
            },
        ];
        let msgs: Vec<String> = validate_vpc(&vpc).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "Vpc blue: spec.staticRoutes[1].cidr \"10.0.0.0\" is invalid: \"10.0.0.0\" is not a CIDR (expected e.g. 10.16.0.0/16 or fd00:10:16::/64)",
                "Vpc blue: spec.staticRoutes[1].nextHopIP \"gw\" is invalid: \"gw\" is not an IP address",
                "Vpc blue: spec.policyRoutes[0].priority 40000 is out of range 0..32767",
                "Vpc blue: spec.policyRoutes[0].nextHopIP (action reroute) is required",
            ]
        );
    }

    #[test]
    fn ip_objects() {
        let mut ip = Ip::new(
            &Ip::object_name("db-0", "team-a", "ovn"),
            Default::default(),
        );
        assert_eq!(ip.metadata.name.as_deref(), Some("db-0.team-a"));
        ip.spec.subnet = "team-a".into();
        ip.spec.ip_address = "10.66.0.20,fd00:66::20".into();
        ip.spec.v4_ip_address = "10.66.0.20".into();
        ip.spec.mac_address = "00:00:00:53:6B:B6".into();
        let r = parse_ip_object(&ip).unwrap();
        assert_eq!(r.ip.to_string(), "10.66.0.20,fd00:66::20");
        assert_eq!(
            r.mac.map(|m| m.to_string()).as_deref(),
            Some("00:00:00:53:6b:b6")
        );

        // Only the per-family fields, as some Kube-OVN versions write.
        ip.spec.ip_address.clear();
        ip.spec.v6_ip_address = "fd00:66::20".into();
        assert_eq!(
            parse_ip_object(&ip).unwrap().ip.to_string(),
            "10.66.0.20,fd00:66::20"
        );

        ip.spec.ip_address = "10.66.0.21".into();
        ip.spec.v6_ip_address = "10.66.0.22".into();
        ip.spec.subnet.clear();
        let msgs: Vec<String> = parse_ip_object(&ip)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            msgs,
            [
                "IP db-0.team-a: spec.v4IpAddress \"10.66.0.20\" disagrees with spec.ipAddress \"10.66.0.21\"",
                "IP db-0.team-a: spec.v6IpAddress \"10.66.0.22\" is invalid: \"10.66.0.22\" is not an IP address",
                "IP db-0.team-a: spec.subnet is required",
            ]
        );
        assert_eq!(
            Ip::object_name("testpmd", "default", "dpdk-net.default.ovn"),
            "testpmd.default.dpdk-net.default.ovn"
        );
    }

    #[test]
    fn ip_pool_entries() {
        let v = validate_subnet(&subnet("a", "10.66.0.0/16")).unwrap();
        let mut pool = IpPool::new("p", Default::default());
        pool.spec.ips = vec![
            "10.66.1.0/24".into(),
            "10.66.2.1..10.66.2.9".into(),
            "10.66.3.3".into(),
            "10.67.0.0/24".into(),
            "10.66.0.0/40".into(),
        ];
        let msgs: Vec<String> = validate_ip_pool(&pool, &v)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("spec.ips[3]"));
        assert!(msgs[1].contains("spec.ips[4]"));
    }
}
