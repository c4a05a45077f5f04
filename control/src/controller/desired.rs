//! From Kubernetes objects to what the IPAM and the planner need. Pure: a [`Manifest`] (or
//! the same objects from a watcher) in, plain data out.
//!
//! Which subnet a pod's primary interface uses, in Kube-OVN's order: the pod's
//! `ovn.kubernetes.io/logical_switch` annotation; a subnet listing the pod's namespace in
//! `spec.namespaces`; the namespace's `ovn.kubernetes.io/logical_switch` annotation; the
//! default subnet of a VPC listing the namespace; the cluster's default subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::ipam::{self, AddrRange, Allocation, AllocationRequest, Ipam, MacAddr, OwnerKey};
use crate::manifest::Manifest;
use crate::plan::{
    self, AclIntent, Desired, NodeIntent, PolicyIntent, PortIntent, RouteIntent, SubnetIntent,
    VlanIntent, VpcIntent,
};
use ferrovn_api::annotations::{
    Annotations, IpPoolRef, NamespaceNetwork, OVN_PROVIDER, PodNetwork,
};
use ferrovn_api::crd::{DEFAULT_VPC, RoutePolicy as CrdRoutePolicy, Subnet, SubnetSpec, Vpc};
use ferrovn_api::nad::{Attachment, NETWORKS_ANNOTATION, parse_networks};
use ferrovn_api::net::DualIp;
use ferrovn_api::validate::{ValidatedSubnet, ValidationError, validate_subnets};

/// The implicit subnets, as Kube-OVN's install creates them.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    pub default_subnet: String,
    pub default_cidr: String,
    pub join_subnet: String,
    pub join_cidr: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            default_subnet: "ovn-default".into(),
            default_cidr: "10.16.0.0/16".into(),
            join_subnet: "join".into(),
            join_cidr: "100.64.0.0/16".into(),
        }
    }
}

/// Who an interface belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceKind {
    Pod,
    /// A node's port on the join subnet (owner `node-<node>` in namespace "").
    Node,
}

/// One interface that needs an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub kind: InterfaceKind,
    pub owner: OwnerKey,
    /// The pod or node name.
    pub name: String,
    pub namespace: String,
    pub provider: String,
    pub subnet: String,
    pub node: String,
    pub static_ips: Vec<IpAddr>,
    pub candidate_ips: Vec<IpAddr>,
    pub static_mac: Option<MacAddr>,
    pub pool: Option<String>,
    pub port_security: bool,
    /// False for IPAM-only attachments (no OVN port).
    pub ovn: bool,
}

/// The owner key of a node's join interface.
pub fn node_owner(node: &str) -> OwnerKey {
    OwnerKey::new("", ferrovn_api::names::join_port_name(node), OVN_PROVIDER)
}

/// A subnet with everything the planner needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSubnet {
    pub validated: ValidatedSubnet,
    pub spec: SubnetSpec,
}

/// The cluster as the controller sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    pub subnets: BTreeMap<String, ClusterSubnet>,
    pub vpcs: BTreeMap<String, Vpc>,
    pub interfaces: Vec<Interface>,
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
    pub pools: Vec<ipam::IpPoolSpec>,
    pub vlans: BTreeMap<String, (u16, String)>,
    pub join_subnet: String,
    /// Objects left out, and why (one line each).
    pub issues: Vec<String>,
}

fn meta_name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

fn annotations(m: &ObjectMeta) -> Annotations {
    m.annotations.clone().unwrap_or_default()
}

fn implicit_subnet(name: &str, cidr: &str) -> Subnet {
    let mut s = Subnet::new(
        name,
        SubnetSpec {
            cidr_block: cidr.into(),
            ..SubnetSpec::default()
        },
    );
    s.metadata.name = Some(name.into());
    s
}

/// Reads the objects of `manifest` into a [`Cluster`].
pub fn read_cluster(manifest: &Manifest, opts: &BuildOptions) -> Cluster {
    let mut c = Cluster {
        join_subnet: opts.join_subnet.clone(),
        ..Cluster::default()
    };

    // Subnets, with the implicit default and join subnets unless the manifests define them.
    let mut subnets: Vec<Subnet> = manifest.subnets().cloned().collect();
    for (name, cidr) in [
        (&opts.default_subnet, &opts.default_cidr),
        (&opts.join_subnet, &opts.join_cidr),
    ] {
        if !subnets
            .iter()
            .any(|s| meta_name(&s.metadata) == name.as_str())
        {
            subnets.push(implicit_subnet(name, cidr));
        }
    }
    let (valid, errors) = validate_subnets(&subnets);
    // Invalid subnets are already left out of `valid`; of two overlapping ones the later is.
    let mut rejected: BTreeSet<String> = BTreeSet::new();
    for e in &errors {
        c.issues.push(e.to_string());
        if let ValidationError::SubnetOverlap { object, .. } = e {
            rejected.insert(object.name.clone());
        }
    }
    for v in valid {
        if rejected.contains(&v.name) {
            continue;
        }
        let Some(spec) = subnets
            .iter()
            .find(|s| meta_name(&s.metadata) == v.name)
            .map(|s| s.spec.clone())
        else {
            continue;
        };
        c.subnets
            .insert(v.name.clone(), ClusterSubnet { validated: v, spec });
    }
    let default_subnet = c
        .subnets
        .values()
        .find(|s| s.spec.default)
        .map(|s| s.validated.name.clone())
        .unwrap_or_else(|| opts.default_subnet.clone());

    for vpc in manifest.vpcs() {
        c.vpcs
            .insert(meta_name(&vpc.metadata).to_string(), vpc.clone());
    }
    if !c.vpcs.contains_key(DEFAULT_VPC) {
        let mut v = Vpc::new(DEFAULT_VPC, Default::default());
        v.metadata.name = Some(DEFAULT_VPC.into());
        c.vpcs.insert(DEFAULT_VPC.into(), v);
    }
    for vlan in manifest.vlans() {
        let tag = u16::try_from(vlan.tag()).unwrap_or(0);
        c.vlans.insert(
            meta_name(&vlan.metadata).to_string(),
            (tag, vlan.provider_network().to_string()),
        );
    }
    for pool in manifest.ip_pools() {
        let mut addresses = Vec::new();
        for entry in &pool.spec.ips {
            match entry.parse::<AddrRange>() {
                Ok(r) => addresses.push(r),
                Err(e) => c.issues.push(format!(
                    "IPPool {}: ips entry {entry:?}: {e}",
                    meta_name(&pool.metadata)
                )),
            }
        }
        c.pools.push(ipam::IpPoolSpec {
            name: meta_name(&pool.metadata).to_string(),
            subnet: pool.spec.subnet.clone(),
            addresses,
            namespaces: pool.spec.namespaces.clone(),
        });
    }

    // Nodes: their join interface and InternalIPs.
    for node in manifest.nodes() {
        let name = meta_name(&node.metadata).to_string();
        let ips: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|x| x.type_ == "InternalIP")
                    .filter_map(|x| x.address.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        c.nodes.insert(name.clone(), ips);
        c.interfaces.push(Interface {
            kind: InterfaceKind::Node,
            owner: node_owner(&name),
            name: name.clone(),
            namespace: String::new(),
            provider: OVN_PROVIDER.into(),
            subnet: opts.join_subnet.clone(),
            node: name,
            static_ips: Vec::new(),
            candidate_ips: Vec::new(),
            static_mac: None,
            pool: None,
            port_security: false,
            ovn: true,
        });
    }

    // Namespaces' bindings.
    let ns_switch: BTreeMap<String, String> = manifest
        .namespaces()
        .filter_map(|ns| {
            let a = annotations(&ns.metadata);
            NamespaceNetwork::new(&a)
                .logical_switches()
                .first()
                .map(|s| (meta_name(&ns.metadata).to_string(), (*s).to_string()))
        })
        .collect();

    let nads: BTreeMap<(String, String), Result<Option<Attachment>, String>> = manifest
        .network_attachment_definitions()
        .map(|n| {
            (
                (
                    n.metadata.namespace.clone().unwrap_or_default(),
                    meta_name(&n.metadata).to_string(),
                ),
                n.attachment().map_err(|e| e.to_string()),
            )
        })
        .collect();

    for pod in manifest.pods() {
        let name = meta_name(&pod.metadata).to_string();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        let ann = annotations(&pod.metadata);
        let who = format!("Pod {ns}/{name}");

        let primary = PodNetwork::primary(&ann);
        let subnet = primary
            .logical_switch()
            .map(str::to_string)
            .or_else(|| {
                c.subnets
                    .values()
                    .find(|s| {
                        s.validated.provider == OVN_PROVIDER && s.spec.namespaces.contains(&ns)
                    })
                    .map(|s| s.validated.name.clone())
            })
            .or_else(|| ns_switch.get(&ns).cloned())
            .or_else(|| {
                let vpc = c.vpcs.values().find(|v| v.spec.namespaces.contains(&ns))?;
                let vname = meta_name(&vpc.metadata);
                if !vpc.spec.default_subnet.is_empty() {
                    return Some(vpc.spec.default_subnet.clone());
                }
                c.subnets
                    .values()
                    .find(|s| s.validated.vpc == vname)
                    .map(|s| s.validated.name.clone())
            })
            .unwrap_or_else(|| default_subnet.clone());
        if let Some(i) = pod_interface(&mut c, &who, &ann, &name, &ns, &node, OVN_PROVIDER, subnet)
        {
            c.interfaces.push(i);
        }

        // Attachments through NetworkAttachmentDefinitions.
        let Some(networks) = ann.get(NETWORKS_ANNOTATION) else {
            continue;
        };
        let selections = match parse_networks(networks) {
            Ok(s) => s,
            Err(e) => {
                c.issues.push(format!("{who}: {e}"));
                continue;
            }
        };
        for sel in selections {
            let nad_ns = sel.namespace_or(&ns).to_string();
            let attachment = match nads.get(&(nad_ns.clone(), sel.name.clone())) {
                None => {
                    c.issues.push(format!(
                        "{who}: NetworkAttachmentDefinition {nad_ns}/{} not found",
                        sel.name
                    ));
                    continue;
                }
                Some(Err(e)) => {
                    c.issues.push(format!("{who}: {e}"));
                    continue;
                }
                // Not ours (another CNI with its own IPAM).
                Some(Ok(None)) => continue,
                Some(Ok(Some(a))) => a.clone(),
            };
            let provider = attachment.provider().to_string();
            let net = PodNetwork::for_provider(&ann, &provider);
            let subnet = net.logical_switch().map(str::to_string).or_else(|| {
                c.subnets
                    .values()
                    .find(|s| s.validated.provider == provider)
                    .map(|s| s.validated.name.clone())
            });
            let Some(subnet) = subnet else {
                c.issues.push(format!(
                    "{who}: no subnet has provider {provider} (attachment {nad_ns}/{})",
                    sel.name
                ));
                continue;
            };
            if let Some(mut i) =
                pod_interface(&mut c, &who, &ann, &name, &ns, &node, &provider, subnet)
            {
                i.ovn = matches!(attachment, Attachment::Ovn { .. });
                c.interfaces.push(i);
            }
        }
    }
    c
}

#[allow(clippy::too_many_arguments)]
fn pod_interface(
    c: &mut Cluster,
    who: &str,
    ann: &Annotations,
    name: &str,
    ns: &str,
    node: &str,
    provider: &str,
    subnet: String,
) -> Option<Interface> {
    let net = PodNetwork::for_provider(ann, provider);
    let mut issue = |e: &dyn std::fmt::Display| c.issues.push(format!("{who}: {e}"));
    if !c.subnets.contains_key(&subnet) {
        issue(&format!(
            "subnet {subnet} does not exist (provider {provider})"
        ));
        return None;
    }
    let static_ips = match net.ip_address() {
        Ok(ip) => ip.map(|d| d.addrs().collect()).unwrap_or_default(),
        Err(e) => {
            issue(&e);
            return None;
        }
    };
    let static_mac = match net.mac_address() {
        Ok(m) => m,
        Err(e) => {
            issue(&e);
            return None;
        }
    };
    let (pool, candidate_ips) = match net.ip_pool() {
        Ok(Some(IpPoolRef::Named(p))) => (Some(p), Vec::new()),
        Ok(Some(IpPoolRef::Addresses(a))) => (None, a),
        Ok(None) => (None, Vec::new()),
        Err(e) => {
            issue(&e);
            return None;
        }
    };
    let port_security = net.port_security().unwrap_or(false);
    Some(Interface {
        kind: InterfaceKind::Pod,
        owner: OwnerKey::new(ns, name, provider),
        name: name.into(),
        namespace: ns.into(),
        provider: provider.into(),
        subnet,
        node: node.into(),
        static_ips,
        candidate_ips,
        static_mac,
        pool,
        port_security,
        ovn: true,
    })
}

/// The IPAM's view of the cluster's subnets.
pub fn ipam_subnets(c: &Cluster) -> Vec<ipam::SubnetSpec> {
    c.subnets
        .values()
        .map(|s| {
            let v = &s.validated;
            let mut spec = ipam::SubnetSpec::new(v.name.clone(), v.cidr.v4(), v.cidr.v6());
            spec.v4_gateway = v.gateway.v4;
            spec.v6_gateway = v.gateway.v6;
            spec.exclude = v
                .exclude
                .iter()
                .map(|r| AddrRange::new(r.start, r.end))
                .collect();
            spec
        })
        .collect()
}

/// An interface and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocated {
    pub interface: Interface,
    pub allocation: Allocation,
}

/// Allocates every interface of `c` (keeping what owners already hold) and releases owners
/// that are gone. Returns the allocations, the released ones and one line per failure.
pub fn allocate(c: &Cluster, ipam: &mut Ipam) -> (Vec<Allocated>, Vec<Allocation>, Vec<String>) {
    let wanted: BTreeSet<&OwnerKey> = c.interfaces.iter().map(|i| &i.owner).collect();
    let mut gone: Vec<OwnerKey> = ipam
        .allocations()
        .map(|a| a.owner.clone())
        .filter(|o| !wanted.contains(o))
        .collect();
    gone.sort();
    let released: Vec<Allocation> = gone.iter().filter_map(|o| ipam.release(o)).collect();

    let mut out = Vec::with_capacity(c.interfaces.len());
    let mut issues = Vec::new();
    // Static requests first, so a dynamic one never takes a fixed address first.
    let mut order: Vec<&Interface> = c.interfaces.iter().collect();
    order.sort_by_key(|i| (i.static_ips.is_empty(), i.owner.clone()));
    for i in order {
        let req = AllocationRequest {
            static_ips: i.static_ips.clone(),
            candidate_ips: i.candidate_ips.clone(),
            static_mac: i.static_mac,
            pool: i.pool.clone(),
            ..AllocationRequest::dynamic(i.owner.clone(), i.subnet.clone())
        };
        match ipam.allocate(&req) {
            Ok(a) => out.push(Allocated {
                interface: i.clone(),
                allocation: a,
            }),
            Err(e) => issues.push(format!("{}: {e}", i.owner)),
        }
    }
    (out, released, issues)
}

fn parse_routes(vpc: &Vpc) -> (Vec<RouteIntent>, Vec<PolicyIntent>) {
    let routes = vpc
        .spec
        .static_routes
        .iter()
        .map(|r| RouteIntent {
            ip_prefix: r.cidr.clone(),
            nexthop: r.next_hop_ip.clone(),
            policy: match r.policy {
                Some(CrdRoutePolicy::Src) => plan::RoutePolicy::SrcIp,
                _ => plan::RoutePolicy::DstIp,
            },
            route_table: r.route_table.clone(),
        })
        .collect();
    let policies = vpc
        .spec
        .policy_routes
        .iter()
        .map(|p| PolicyIntent {
            priority: i64::from(p.priority),
            match_: p.match_.clone(),
            action: match p.action {
                Some(ferrovn_api::crd::PolicyRouteAction::Drop) => "drop".into(),
                Some(ferrovn_api::crd::PolicyRouteAction::Reroute) => "reroute".into(),
                _ => "allow".into(),
            },
            nexthops: if p.next_hop_ip.is_empty() {
                Vec::new()
            } else {
                p.next_hop_ip
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            },
        })
        .collect();
    (routes, policies)
}

/// The planner's input.
pub fn desired(c: &Cluster, allocated: &[Allocated]) -> Desired {
    let mut d = Desired {
        join_subnet: Some(c.join_subnet.clone()),
        ..Desired::default()
    };
    for (name, vpc) in &c.vpcs {
        let (static_routes, policy_routes) = parse_routes(vpc);
        d.vpcs.push(VpcIntent {
            name: name.clone(),
            static_routes,
            policy_routes,
        });
    }
    for s in c.subnets.values() {
        let v = &s.validated;
        let vlan = (!s.spec.vlan.is_empty())
            .then(|| c.vlans.get(&s.spec.vlan))
            .flatten()
            .map(|(tag, pn)| VlanIntent {
                tag: *tag,
                provider_network: pn.clone(),
            });
        d.subnets.push(SubnetIntent {
            name: v.name.clone(),
            vpc: v.vpc.clone(),
            provider: v.provider.clone(),
            v4: v.cidr.v4(),
            v6: v.cidr.v6(),
            v4_gateway: v.gateway.v4,
            v6_gateway: v.gateway.v6,
            exclude: v.exclude.iter().map(|r| (r.start, r.end)).collect(),
            private: s.spec.private,
            allow_subnets: s
                .spec
                .allow_subnets
                .iter()
                .filter_map(|a| a.trim().parse::<IpNet>().ok())
                .collect(),
            acls: s
                .spec
                .acls
                .iter()
                .map(|a| AclIntent {
                    direction: a.direction.clone(),
                    priority: i64::from(a.priority),
                    match_: a.match_.clone(),
                    action: a.action.clone(),
                })
                .collect(),
            vlan,
            logical_gateway: s.spec.logical_gateway,
        });
    }
    for a in allocated {
        let i = &a.interface;
        match i.kind {
            InterfaceKind::Node => d.nodes.push(NodeIntent {
                name: i.name.clone(),
                join_ips: a.allocation.ips(),
                join_mac: Some(a.allocation.mac),
                internal_ips: c.nodes.get(&i.name).cloned().unwrap_or_default(),
            }),
            InterfaceKind::Pod if i.ovn => d.ports.push(PortIntent {
                pod: i.name.clone(),
                namespace: i.namespace.clone(),
                provider: i.provider.clone(),
                subnet: a.allocation.subnet.clone(),
                node: i.node.clone(),
                mac: a.allocation.mac,
                ips: a.allocation.ips(),
                port_security: i.port_security,
            }),
            InterfaceKind::Pod => {}
        }
    }
    d
}

/// The allocation contract of one allocated interface: what the controller writes onto the pod
/// (or node) and the node agent reads back. `None` when its subnet is no longer in the cluster
/// (the allocation then goes with the next pass).
pub fn allocation_of(c: &Cluster, a: &Allocated) -> Option<ferrovn_api::Allocation> {
    let s = c.subnets.get(&a.allocation.subnet)?;
    Some(ferrovn_api::Allocation {
        provider: a.interface.provider.clone(),
        ip: DualIp {
            v4: a.allocation.v4,
            v6: a.allocation.v6,
        },
        mac: a.allocation.mac,
        cidr: s.validated.cidr,
        gateway: s.validated.gateway,
        logical_switch: a.allocation.subnet.clone(),
        logical_router: a.interface.ovn.then(|| s.validated.vpc.clone()),
    })
}

/// The Kube-OVN annotations describing one allocation (`<provider>.kubernetes.io/...`).
pub fn allocation_annotations(c: &Cluster, a: &Allocated) -> Annotations {
    allocation_of(c, a)
        .map(|alloc| alloc.emit())
        .unwrap_or_default()
}
