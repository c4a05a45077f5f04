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
    Annotations, IpPoolRef, NamespaceNetwork, NodeNetwork, OVN_PROVIDER, PodNetwork,
};
use ferrovn_api::crd::{DEFAULT_VPC, RoutePolicy as CrdRoutePolicy, Subnet, SubnetSpec, Vpc};
use ferrovn_api::nad::{Attachment, NETWORKS_ANNOTATION, parse_networks};
use ferrovn_api::net::DualIp;
use ferrovn_api::validate::{
    ObjectRef, ValidatedSubnet, ValidationError, validate_ip_pool, validate_provider_network,
    validate_subnets, validate_vlan, validate_vpc,
};

/// The implicit subnets, as Kube-OVN's install creates them.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    pub default_subnet: String,
    pub default_cidr: String,
    pub join_subnet: String,
    pub join_cidr: String,
    /// The Service CIDR(s) (kube-apiserver's `--service-cluster-ip-range`), published on each
    /// Node for its join port routes; empty: none published.
    pub service_cidrs: Vec<IpNet>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            default_subnet: "ovn-default".into(),
            default_cidr: "10.16.0.0/16".into(),
            join_subnet: "join".into(),
            join_cidr: "100.64.0.0/16".into(),
            service_cidrs: Vec::new(),
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
    /// The Service CIDR(s) routed through every node's join port.
    pub service_cidrs: Vec<IpNet>,
    /// Services and EndpointSlices, validated by the planner (a bad Service is left out there).
    pub services: crate::plan::ServiceInputs,
    /// NetworkPolicies and what they select by.
    pub network_policy: super::netpol::PolicySource,
    /// Nodes whose pods leave through their OVN gateway router (from their labels and
    /// annotations, `plan::gateway_router::node_egress`).
    pub node_egress: Vec<crate::plan::gateway_router::NodeEgressIntent>,
    /// AdminNetworkPolicies, the BaselineAdminNetworkPolicy and what they select by.
    pub admin_policy: super::admin_policy::AdminPolicySource,
    /// SecurityGroups and the pods that name them.
    pub security_groups: super::security_group::SecurityGroupSource,
    /// Problems found, one line each (rejected objects' errors among them).
    pub issues: Vec<String>,
    /// Objects left out of the pass because they are invalid, with every error found.
    pub rejected: Vec<Rejection>,
}

/// An invalid object, left out of the pass so that everything else still converges: the NB
/// refuses a whole transaction for one bad row, so one bad object must never reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub object: ObjectRef,
    /// Each names the object, the field and the bad value.
    pub errors: Vec<ValidationError>,
}

impl Rejection {
    /// The errors in one line (for a condition message or an Event note).
    pub fn message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rejected and left out of this pass (everything else is applied): {}",
            self.object,
            self.message()
        )
    }
}

impl Cluster {
    /// Records invalid objects: one issue line per error, one [`Rejection`] per object.
    fn reject(&mut self, errors: Vec<ValidationError>) {
        let mut by_object: BTreeMap<ObjectRef, Vec<ValidationError>> = BTreeMap::new();
        for e in errors {
            self.issues.push(e.to_string());
            by_object.entry(e.object().clone()).or_default().push(e);
        }
        for (object, errors) in by_object {
            match self.rejected.iter_mut().find(|r| r.object == object) {
                Some(r) => r.errors.extend(errors),
                None => self.rejected.push(Rejection { object, errors }),
            }
        }
    }
}

fn meta_name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

fn annotations(m: &ObjectMeta) -> Annotations {
    m.annotations.clone().unwrap_or_default()
}

fn bare_vpc(name: &str) -> Vpc {
    let mut v = Vpc::new(name, Default::default());
    v.metadata.name = Some(name.into());
    v
}

fn implicit_subnet(name: &str, cidr: &str, nat_outgoing: bool) -> Subnet {
    let mut s = Subnet::new(
        name,
        SubnetSpec {
            cidr_block: cidr.into(),
            nat_outgoing,
            ..SubnetSpec::default()
        },
    );
    s.metadata.name = Some(name.into());
    s
}

/// The default and join subnets as the controller serves them when no Subnet object of that
/// name exists. Kube-OVN's install creates `ovn-default` with `natOutgoing: true`.
pub fn implicit_subnets(opts: &BuildOptions) -> [Subnet; 2] {
    [
        implicit_subnet(&opts.default_subnet, &opts.default_cidr, true),
        implicit_subnet(&opts.join_subnet, &opts.join_cidr, false),
    ]
}

/// Reads the objects of `manifest` into a [`Cluster`].
pub fn read_cluster(manifest: &Manifest, opts: &BuildOptions) -> Cluster {
    let mut c = Cluster {
        join_subnet: opts.join_subnet.clone(),
        service_cidrs: opts.service_cidrs.clone(),
        services: crate::plan::ServiceInputs {
            services: manifest.services().cloned().collect(),
            endpoint_slices: manifest.endpoint_slices().cloned().collect(),
            node_chassis: BTreeMap::new(),
        },
        network_policy: super::netpol::read(manifest),
        admin_policy: super::admin_policy::read(manifest),
        security_groups: super::security_group::read(manifest),
        ..Cluster::default()
    };

    // Subnets, with the implicit default and join subnets unless the manifests define them.
    let mut subnets: Vec<Subnet> = manifest.subnets().cloned().collect();
    for implicit in implicit_subnets(opts) {
        let name = meta_name(&implicit.metadata);
        if !subnets.iter().any(|s| meta_name(&s.metadata) == name) {
            subnets.push(implicit);
        }
    }
    // Vlans first: an underlay subnet needs its (valid) Vlan.
    for vlan in manifest.vlans() {
        let errors = validate_vlan(vlan);
        if !errors.is_empty() {
            c.reject(errors);
            continue;
        }
        // validate_vlan checked 0..=4095
        let Ok(tag) = u16::try_from(vlan.tag()) else {
            continue;
        };
        c.vlans.insert(
            meta_name(&vlan.metadata).to_string(),
            (tag, vlan.provider_network().to_string()),
        );
    }
    for pn in manifest.provider_networks() {
        // Nothing is planned from a ProviderNetwork yet; an invalid one still gets its error.
        c.reject(validate_provider_network(pn));
    }

    let (valid, errors) = validate_subnets(&subnets);
    // Invalid subnets are already left out of `valid`; of two overlapping ones the later is.
    let mut rejected: BTreeSet<String> = errors
        .iter()
        .filter(|e| matches!(e, ValidationError::SubnetOverlap { .. }))
        .map(|e| e.object().name.clone())
        .collect();
    c.reject(errors);
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
        if !spec.vlan.is_empty() && !c.vlans.contains_key(&spec.vlan) {
            // Without its tag an underlay subnet would silently become an overlay one.
            c.reject(vec![ValidationError::UnknownReference {
                object: ObjectRef::cluster("Subnet", &v.name),
                field: "spec.vlan".into(),
                kind: "valid Vlan",
                name: spec.vlan.clone(),
            }]);
            rejected.insert(v.name.clone());
            continue;
        }
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
        let name = meta_name(&vpc.metadata).to_string();
        let errors = validate_vpc(vpc);
        if errors.is_empty() {
            c.vpcs.insert(name, vpc.clone());
        } else {
            // Its spec (routes, policies) is left out; the router stays, bare, so the VPC's
            // subnets keep working.
            c.reject(errors);
            c.vpcs.insert(name.clone(), bare_vpc(&name));
        }
    }
    if !c.vpcs.contains_key(DEFAULT_VPC) {
        c.vpcs.insert(DEFAULT_VPC.into(), bare_vpc(DEFAULT_VPC));
    }
    for pool in manifest.ip_pools() {
        let name = meta_name(&pool.metadata).to_string();
        let object = ObjectRef::cluster("IPPool", &name);
        let errors = match c.subnets.get(&pool.spec.subnet) {
            None => vec![ValidationError::UnknownReference {
                object,
                field: "spec.subnet".into(),
                kind: "valid Subnet",
                name: pool.spec.subnet.clone(),
            }],
            Some(s) => validate_ip_pool(pool, &s.validated),
        };
        if !errors.is_empty() {
            c.reject(errors);
            continue;
        }
        let mut addresses = Vec::new();
        for entry in &pool.spec.ips {
            match entry.parse::<AddrRange>() {
                Ok(r) => addresses.push(r),
                Err(e) => c
                    .issues
                    .push(format!("IPPool {name}: ips entry {entry:?}: {e}")),
            }
        }
        c.pools.push(ipam::IpPoolSpec {
            name,
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
        let labels: BTreeMap<String, String> = node
            .metadata
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let annotations: BTreeMap<String, String> = node
            .metadata
            .annotations
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        match crate::plan::gateway_router::node_egress(
            &name,
            &labels,
            &annotations,
            annotations.get(NodeNetwork::CHASSIS).map(String::as_str),
        ) {
            Ok(Some(e)) => c.node_egress.push(e),
            Ok(None) => {}
            // the node keeps the kernel path; the pass says why
            Err(e) => c.issues.push(e.to_string()),
        }
        // The agent publishes its chassis (Kube-OVN's annotation): Services with a `Local`
        // traffic policy install each node's endpoints on that chassis.
        if let Some(chassis) = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NodeNetwork::CHASSIS))
            .filter(|c| !c.is_empty())
        {
            c.services
                .node_chassis
                .insert(name.clone(), chassis.clone());
        }
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
    let object = ObjectRef::namespaced("Pod", ns, name);
    if !c.subnets.contains_key(&subnet) {
        c.issues.push(format!(
            "{who}: subnet {subnet} does not exist (provider {provider})"
        ));
        return None;
    }
    // Every annotation the controller acts on; a malformed one leaves the interface out
    // rather than guessing (a bad port_security must not turn port security off).
    let static_ips = net.ip_address();
    let static_mac = net.mac_address();
    let pool = net.ip_pool();
    let port_security = net.port_security();
    let errors: Vec<ValidationError> = [
        static_ips.as_ref().err(),
        static_mac.as_ref().err(),
        pool.as_ref().err(),
        port_security.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .map(|error| ValidationError::Annotation {
        object: object.clone(),
        error: error.clone(),
    })
    .collect();
    let (Ok(static_ips), Ok(static_mac), Ok(pool), Ok(port_security)) =
        (static_ips, static_mac, pool, port_security)
    else {
        c.reject(errors);
        return None;
    };
    let (pool, candidate_ips) = match pool {
        Some(IpPoolRef::Named(p)) => (Some(p), Vec::new()),
        Some(IpPoolRef::Addresses(a)) => (None, a),
        None => (None, Vec::new()),
    };
    Some(Interface {
        kind: InterfaceKind::Pod,
        owner: OwnerKey::new(ns, name, provider),
        name: name.into(),
        namespace: ns.into(),
        provider: provider.into(),
        subnet,
        node: node.into(),
        static_ips: static_ips.map(|d| d.addrs().collect()).unwrap_or_default(),
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
    let probes = super::probe_source::needed(&c.services, &ipam_subnets(c), &c.join_subnet);
    let probe_owners: Vec<OwnerKey> = probes
        .keys()
        .map(|s| super::probe_source::owner(s))
        .collect();
    let wanted: BTreeSet<&OwnerKey> = c
        .interfaces
        .iter()
        .map(|i| &i.owner)
        .chain(&probe_owners)
        .collect();
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
    let first_dynamic = order
        .iter()
        .position(|i| i.static_ips.is_empty())
        .unwrap_or(order.len());
    for (n, i) in order.into_iter().enumerate() {
        if n == first_dynamic {
            // Health-check probe sources after static pods (a pod that asked for one keeps
            // it, and that subnet is not probed) and before dynamic ones (never handed out).
            hold_probe_sources(ipam, &probes, &mut issues);
        }
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
    if first_dynamic == c.interfaces.len() {
        hold_probe_sources(ipam, &probes, &mut issues);
    }
    (out, released, issues)
}

/// Allocates each subnet's probe sources to its probe-source owner (kept when already held).
fn hold_probe_sources(
    ipam: &mut Ipam,
    probes: &BTreeMap<String, Vec<IpAddr>>,
    issues: &mut Vec<String>,
) {
    for (subnet, ips) in probes {
        let req = AllocationRequest {
            static_ips: ips.clone(),
            ..AllocationRequest::dynamic(super::probe_source::owner(subnet), subnet.clone())
        };
        if let Err(e) = ipam.allocate(&req) {
            issues.push(format!(
                "subnet {subnet}: health-check probe source {ips:?} not held ({e}); its backends are not probed"
            ));
        }
    }
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
        services: c.services.clone(),
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
            enable_lb: s.spec.enable_lb.unwrap_or(true),
            centralized_gateway: is_centralized(s),
            gateway_node: s.spec.gateway_node.clone(),
            gateway_ecmp: s.spec.enable_ecmp,
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
    d.network_policy = super::netpol::input(&c.network_policy, &d.ports, &d.nodes);
    d.ovn_egress = crate::plan::gateway_router::OvnEgressIntent {
        transit: None,
        nodes: c.node_egress.clone(),
        nat_outgoing_subnets: c
            .subnets
            .values()
            .filter(|s| s.spec.nat_outgoing)
            .map(|s| s.validated.name.clone())
            .collect(),
    };
    d.admin_policy = super::admin_policy::input(&c.admin_policy, &d.ports, &d.nodes);
    d.security_groups = super::security_group::input(&c.security_groups, &d.ports);
    d
}

fn is_centralized(s: &ClusterSubnet) -> bool {
    s.spec.gateway_type == Some(ferrovn_api::crd::GatewayType::Centralized)
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
/// What a node needs to know about the default VPC besides its own join allocation: the CIDRs
/// its join port routes to ([`NodeNetwork::POD_CIDRS`]: every overlay subnet of the default VPC
/// that reaches its router, the join subnet itself excepted, as Kube-OVN's daemon routes them),
/// those of them with `natOutgoing` ([`NodeNetwork::NAT_OUTGOING_CIDRS`]), distributed ones
/// only, and the Service CIDR(s) when configured ([`NodeNetwork::SERVICE_CIDRS`]). A
/// centralized subnet's egress never reaches a node outside its `gatewayNode`; the nodes named
/// there get it in [`NodeNetwork::GATEWAY_SNAT`] (with the `node:ip` address), the standby ones
/// too, so a failover is one NB change and waits for no node agent.
pub fn node_network_annotations(c: &Cluster, node: &str) -> Annotations {
    let mut pod = Vec::new();
    let mut nat = Vec::new();
    let mut snat = Vec::new();
    for (name, s) in &c.subnets {
        let routed = s.validated.vpc == DEFAULT_VPC
            && s.validated.overlap_domain() == DEFAULT_VPC
            && (s.spec.vlan.is_empty() || s.spec.logical_gateway);
        if !routed || *name == c.join_subnet {
            continue;
        }
        let centralized = is_centralized(s);
        let gateway = if centralized && s.spec.nat_outgoing {
            gateway_entry(&s.spec.gateway_node, node)
        } else {
            None
        };
        for net in s.validated.cidr.nets() {
            pod.push(net.to_string());
            if s.spec.nat_outgoing && !centralized {
                nat.push(net.to_string());
            }
            match gateway {
                Some(Some(ip)) if ip.is_ipv4() == net.addr().is_ipv4() => {
                    snat.push(format!("{net}={ip}"))
                }
                Some(_) => snat.push(net.to_string()),
                None => {}
            }
        }
    }
    let mut out: Annotations = [
        (NodeNetwork::POD_CIDRS.to_string(), pod.join(",")),
        (NodeNetwork::NAT_OUTGOING_CIDRS.to_string(), nat.join(",")),
        (NodeNetwork::GATEWAY_SNAT.to_string(), snat.join(",")),
    ]
    .into();
    // Only when configured: existing Nodes keep exactly their annotations otherwise.
    if !c.service_cidrs.is_empty() {
        let svc: Vec<String> = c
            .service_cidrs
            .iter()
            .map(|n| n.trunc().to_string())
            .collect();
        out.insert(NodeNetwork::SERVICE_CIDRS.to_string(), svc.join(","));
    }
    out
}

/// `node`'s entry in `gatewayNode`: `Some(snat address)` when listed. An unreadable
/// `gatewayNode` lists nobody (the planner reports it).
fn gateway_entry(gateway_node: &str, node: &str) -> Option<Option<std::net::IpAddr>> {
    crate::plan::parse_gateway_nodes(gateway_node)
        .ok()?
        .into_iter()
        .find(|g| g.node == node)
        .map(|g| g.snat)
}

pub fn allocation_annotations(c: &Cluster, a: &Allocated) -> Annotations {
    allocation_of(c, a)
        .map(|alloc| alloc.emit())
        .unwrap_or_default()
}
