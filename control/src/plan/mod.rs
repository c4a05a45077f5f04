//! The NB planner: a pure function from the desired cluster network (VPCs, subnets, nodes and
//! pod interfaces with their IPAM allocations) to the OVN Northbound rows FerrOVN owns.
//!
//! The output is plain data ([`NbPlan`]): switches with their ports and ACLs, routers with their
//! ports, static routes and policies. Every planned row carries [`OWNER_KEY`]`=`[`OWNER_VALUE`]
//! and a cluster-unique identity in [`ROW_KEY`] in its `external_ids`; the reconciler
//! ([`crate::reconcile`]) matches actual rows by that identity and never touches rows without
//! the owner mark. Names follow Kube-OVN: router `ovn-cluster`, router port `<router>-<switch>`,
//! its switch-side peer `<switch>-<router>`, pod port `<pod>.<namespace>` (plus `.<provider>`
//! for attachments), node join port `node-<node>` (all in [`ferrovn_api::names`]).

mod acl;
pub mod ctbypass;
mod direction;
pub mod gateway;
pub mod gateway_router;
pub mod netpol;
pub mod protocol;
pub mod security_group;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::ipam::MacAddr;

pub use gateway::{GatewayLiveness, GatewayNode, parse_gateway_nodes};
pub use services::{
    PlannedChassisVars, PlannedHealthCheck, PlannedLbGroup, PlannedLoadBalancer, Protocol,
    ServiceInputs, ServiceNode,
};

use ferrovn_api::names::{
    join_port_name, lb_group_name, localnet_port_name, lsp_name, router_port_mac, router_port_name,
    switch_router_port_name,
};

/// `external_ids` key marking a row as FerrOVN's.
pub const OWNER_KEY: &str = "ferrovn.io/owner";
/// Value of [`OWNER_KEY`].
pub const OWNER_VALUE: &str = "ferrovn";
/// `external_ids` key holding the row's identity (unique per table among owned rows).
pub const ROW_KEY: &str = "ferrovn.io/key";
/// The default VPC and its router.
pub const DEFAULT_ROUTER: &str = "ovn-cluster";
/// Kube-OVN's policy priority for "traffic to a node's IP goes to that node's join port".
pub const NODE_POLICY_PRIORITY: i64 = 30000;
/// Kube-OVN's policy priority of "traffic to a subnet of the default VPC stays east-west"
/// (`allow`, ahead of the gateway reroutes).
pub const SUBNET_POLICY_PRIORITY: i64 = 31000;
/// Kube-OVN's policy priority of the default VPC's gateway reroutes (distributed: a pod's
/// egress leaves through its own node's join port).
pub const GATEWAY_POLICY_PRIORITY: i64 = 29000;
/// Kube-OVN's ACL priorities of a private subnet.
pub const PRIVATE_DROP_PRIORITY: i64 = 1000;
pub const PRIVATE_ALLOW_PRIORITY: i64 = 1001;
pub const PRIVATE_NODE_ALLOW_PRIORITY: i64 = 3000;
/// OVN ACL tier of subnet ACLs (`private`, `allowSubnets`, `spec.acls`): Kube-OVN's tier 2, the
/// tier of NetworkPolicy ([`netpol::NETPOL_TIER`]), so both compete by priority in one tier
/// instead of the subnet's same-subnet allow being final in tier 0 before any policy runs.
pub const SUBNET_ACL_TIER: i64 = 2;

// ---------------------------------------------------------------------------------------------
// Input

/// Everything the planner needs, already validated and allocated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub vpcs: Vec<VpcIntent>,
    pub subnets: Vec<SubnetIntent>,
    pub nodes: Vec<NodeIntent>,
    pub ports: Vec<PortIntent>,
    /// The node join subnet (Kube-OVN `join`), part of the default VPC.
    pub join_subnet: Option<String>,
    /// Services and EndpointSlices (load balancers).
    pub services: ServiceInputs,
    /// Where the Service load balancer groups attach.
    pub lb_attach: LbAttach,
    /// Turns the conntrack bypass off (plan::ctbypass: pod↔pod traffic on switches with load
    /// balancers skips conntrack). On by default; off only to measure it or to rule it out.
    pub ct_bypass_off: bool,
    /// Which centralized gateway nodes live, and the last active ones.
    pub gateway_liveness: GatewayLiveness,
    /// NetworkPolicies with the pods, namespaces and node addresses they select from.
    pub network_policy: netpol::PolicyInput,
    /// Nodes whose pods leave through their own OVN gateway router ([`gateway_router`]).
    pub ovn_egress: gateway_router::OvnEgressIntent,
    /// AdminNetworkPolicies and the BaselineAdminNetworkPolicy with what they select from.
    pub admin_policy: netpol::admin::AdminPolicyInput,
    /// Kube-OVN SecurityGroups and the interfaces that name them.
    pub security_groups: security_group::SecurityGroupInput,
}

/// Where a VPC's Service load balancer group is referenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbAttach {
    /// Every switch of the VPC that reaches its router and has `enableLb` (pod subnets, and
    /// `join` for node → Service traffic). OVN 25.03 load balances distributed only on
    /// switches: a logical router applies load balancers only as a gateway router or with a
    /// gateway port, on the gateway chassis (ovn-northd(8), lr_in_dnat), see docs/services.md.
    #[default]
    Switches,
    /// Only the VPC router: for an OVN whose routers load balance distributed; keeps
    /// conntrack off the switches entirely.
    Router,
}

/// A VPC: one logical router.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VpcIntent {
    pub name: String,
    pub static_routes: Vec<RouteIntent>,
    pub policy_routes: Vec<PolicyIntent>,
}

/// A static route (`ip_prefix` via `nexthop`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteIntent {
    pub ip_prefix: String,
    pub nexthop: String,
    /// `dst-ip` (default) or `src-ip`.
    pub policy: RoutePolicy,
    pub route_table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum RoutePolicy {
    #[default]
    DstIp,
    SrcIp,
}

impl RoutePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutePolicy::DstIp => "dst-ip",
            RoutePolicy::SrcIp => "src-ip",
        }
    }
}

/// A logical router policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyIntent {
    pub priority: i64,
    pub match_: String,
    /// `allow`, `drop` or `reroute`.
    pub action: String,
    pub nexthops: Vec<String>,
}

/// A subnet: one logical switch (unless it only serves IPAM to a non-OVN attachment).
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetIntent {
    pub name: String,
    pub vpc: String,
    pub provider: String,
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub v4_gateway: Option<Ipv4Addr>,
    pub v6_gateway: Option<Ipv6Addr>,
    /// `excludeIps` as inclusive ranges.
    pub exclude: Vec<(IpAddr, IpAddr)>,
    pub private: bool,
    pub allow_subnets: Vec<IpNet>,
    /// Extra ACLs from `spec.acls`.
    pub acls: Vec<AclIntent>,
    /// Underlay: the VLAN tag and the provider network (`localnet` port).
    pub vlan: Option<VlanIntent>,
    /// Underlay subnets reach the router only with `logicalGateway`.
    pub logical_gateway: bool,
    /// Kube-OVN's `spec.enableLb` (default true): the switch references its VPC's Service
    /// load balancers. Off, its pods pay no conntrack for load balancing but reach no VIP.
    pub enable_lb: bool,
    /// `gatewayType: centralized`: its pods' egress leaves through `gateway_node`, not through
    /// their own nodes.
    pub centralized_gateway: bool,
    /// `gatewayNode` as written (`node` or `node:ip`, comma-separated).
    pub gateway_node: String,
    /// `enableEcmp`: a centralized subnet's egress over every live gateway node instead of one.
    pub gateway_ecmp: bool,
}

impl SubnetIntent {
    /// A plain overlay subnet of `vpc` with default gateways (first address of each net).
    pub fn overlay(
        name: impl Into<String>,
        vpc: impl Into<String>,
        v4: Option<Ipv4Net>,
        v6: Option<Ipv6Net>,
    ) -> Self {
        SubnetIntent {
            name: name.into(),
            vpc: vpc.into(),
            provider: "ovn".into(),
            v4,
            v6,
            v4_gateway: v4.and_then(|n| n.hosts().next()),
            v6_gateway: v6.map(first_v6),
            exclude: Vec::new(),
            private: false,
            allow_subnets: Vec::new(),
            acls: Vec::new(),
            vlan: None,
            logical_gateway: false,
            enable_lb: true,
            centralized_gateway: false,
            gateway_node: String::new(),
            gateway_ecmp: false,
        }
    }

    /// Subnets of OVN providers (`ovn`, `<nad>.<ns>.ovn`) are logical switches; others (an
    /// IPAM-only macvlan attachment) are not in OVN at all.
    pub fn is_ovn(&self) -> bool {
        self.provider == "ovn" || self.provider.ends_with(".ovn")
    }

    fn needs_router(&self) -> bool {
        self.vlan.is_none() || self.logical_gateway
    }

    fn nets(&self) -> Vec<IpNet> {
        self.v4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.v6.map(IpNet::V6))
            .collect()
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.is_some_and(|n| n.contains(&a)),
            IpAddr::V6(a) => self.v6.is_some_and(|n| n.contains(&a)),
        }
    }
}

fn first_v6(net: Ipv6Net) -> Ipv6Addr {
    let bits = u128::from(net.network());
    Ipv6Addr::from(bits.saturating_add(1))
}

/// The VLAN of an underlay subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanIntent {
    pub tag: u16,
    pub provider_network: String,
}

/// A subnet ACL as written in `spec.acls`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclIntent {
    pub direction: String,
    pub priority: i64,
    pub match_: String,
    pub action: String,
}

/// A node: its join port allocation and its own addresses (for the node route policy).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIntent {
    pub name: String,
    /// Addresses of the node's `node-<name>` port on the join switch, IPv4 first.
    pub join_ips: Vec<IpAddr>,
    pub join_mac: Option<MacAddr>,
    /// The node's InternalIP(s).
    pub internal_ips: Vec<IpAddr>,
}

/// One pod interface with its allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct PortIntent {
    pub pod: String,
    pub namespace: String,
    /// `ovn` for the primary interface, `<nad>.<ns>.ovn` for an attachment.
    pub provider: String,
    pub subnet: String,
    /// Empty while unscheduled.
    pub node: String,
    pub mac: MacAddr,
    /// IPv4 first.
    pub ips: Vec<IpAddr>,
    pub port_security: bool,
}

impl PortIntent {
    /// The Logical_Switch_Port name.
    pub fn port_name(&self) -> String {
        lsp_name(&self.pod, &self.namespace, &self.provider)
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// String→string columns (`external_ids`, `options`, `other_config`).
pub type StrMap = BTreeMap<String, String>;

/// Every NB row FerrOVN wants, keyed by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NbPlan {
    pub switches: BTreeMap<String, PlannedSwitch>,
    pub routers: BTreeMap<String, PlannedRouter>,
    /// Load balancer groups (by name) with their load balancers.
    pub lb_groups: BTreeMap<String, PlannedLbGroup>,
    /// Chassis_Template_Var rows (by chassis) of chassis-local Service VIPs.
    pub chassis_vars: BTreeMap<String, PlannedChassisVars>,
    /// NetworkPolicy port groups (by name) with their ACLs.
    pub port_groups: BTreeMap<String, netpol::PlannedPortGroup>,
    /// NetworkPolicy address sets (by name).
    pub address_sets: BTreeMap<String, netpol::PlannedAddressSet>,
    /// Inputs the planner could not place (they are left out of the plan).
    pub issues: Vec<PlanIssue>,
    /// The nodes carrying each centralized subnet's egress (one in active-backup), in
    /// `gatewayNode` order: `status.activateGateway`, and the next plan's stickiness.
    pub active_gateways: BTreeMap<String, Vec<String>>,
}

impl NbPlan {
    /// Number of planned rows of every table.
    pub fn row_count(&self) -> usize {
        self.switches
            .values()
            .map(|s| 1 + s.ports.len() + s.acls.len())
            .sum::<usize>()
            + self
                .routers
                .values()
                .map(|r| {
                    1 + r.ports.len()
                        + r.ports
                            .values()
                            .map(|p| p.gateway_chassis.len())
                            .sum::<usize>()
                        + r.static_routes.len()
                        + r.policies.len()
                        + r.nat.len()
                })
                .sum::<usize>()
            + self
                .lb_groups
                .values()
                .map(|g| 1 + g.load_balancers.len())
                .sum::<usize>()
            + self.chassis_vars.len()
            + self
                .port_groups
                .values()
                .map(|g| 1 + g.acls.len())
                .sum::<usize>()
            + self.address_sets.len()
    }

    /// The pod port named `name`, with its switch.
    pub fn find_port(&self, name: &str) -> Option<(&PlannedSwitch, &PlannedSwitchPort)> {
        self.switches
            .values()
            .find_map(|s| s.ports.get(name).map(|p| (s, p)))
    }
}

/// A Logical_Switch.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSwitch {
    pub name: String,
    pub other_config: StrMap,
    pub external_ids: StrMap,
    /// By port name.
    pub ports: BTreeMap<String, PlannedSwitchPort>,
    /// By identity ([`ROW_KEY`]).
    pub acls: BTreeMap<String, PlannedAcl>,
    /// Names of the (FerrOVN) load balancer groups it references.
    pub lb_groups: BTreeSet<String>,
}

/// A Logical_Switch_Port.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSwitchPort {
    pub name: String,
    /// `""` (a VIF), `router`, `localnet`.
    pub type_: String,
    pub addresses: Vec<String>,
    pub port_security: Vec<String>,
    pub options: StrMap,
    pub tag: Option<i64>,
    pub external_ids: StrMap,
}

/// An ACL of a switch.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAcl {
    pub direction: String,
    pub priority: i64,
    /// OVN ACL tier (NB schema 7.11); [`SUBNET_ACL_TIER`] for every planned switch ACL.
    pub tier: i64,
    pub match_: String,
    pub action: String,
    pub log: bool,
    pub severity: Option<String>,
    pub name: Option<String>,
    pub external_ids: StrMap,
}

/// A Logical_Router.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRouter {
    pub name: String,
    /// `chassis` would make it an l3 gateway router bound to that chassis (none planned);
    /// `ct-commit-all` on the gateway routers of OVN-native egress; empty for VPC routers.
    pub options: StrMap,
    pub external_ids: StrMap,
    /// By identity ([`ROW_KEY`]).
    pub nat: BTreeMap<String, PlannedNat>,
    pub ports: BTreeMap<String, PlannedRouterPort>,
    /// By identity ([`ROW_KEY`]).
    pub static_routes: BTreeMap<String, PlannedStaticRoute>,
    /// By identity ([`ROW_KEY`]).
    pub policies: BTreeMap<String, PlannedPolicy>,
    /// Names of the (FerrOVN) load balancer groups it references.
    pub lb_groups: BTreeSet<String>,
}

/// A Logical_Router_Port.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRouterPort {
    pub name: String,
    pub mac: String,
    pub networks: Vec<String>,
    pub external_ids: StrMap,
    /// Non-empty: a distributed gateway port, its NAT and stateful work on these chassis.
    pub gateway_chassis: Vec<PlannedGatewayChassis>,
}

/// A Gateway_Chassis row of a router port (a child of the port).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGatewayChassis {
    /// Unique in the NB: `<port>-<chassis>` (what `ovn-nbctl lrp-set-gateway-chassis` uses).
    pub name: String,
    pub chassis_name: String,
    pub priority: i64,
    pub external_ids: StrMap,
}

/// A Logical_Router_Static_Route.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStaticRoute {
    pub ip_prefix: String,
    pub nexthop: String,
    pub policy: Option<String>,
    pub route_table: String,
    pub external_ids: StrMap,
}

/// A Logical_Router NAT row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedNat {
    /// `snat`.
    pub type_: String,
    pub logical_ip: String,
    pub external_ip: String,
    pub external_ids: StrMap,
}

/// A Logical_Router_Policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPolicy {
    pub priority: i64,
    pub match_: String,
    pub action: String,
    pub nexthops: Vec<String>,
    pub external_ids: StrMap,
}

/// Why an input was left out of the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum PlanIssue {
    #[error("subnet {subnet}: VPC {vpc} is not defined")]
    UnknownVpc { subnet: String, vpc: String },
    #[error("subnet {subnet} is defined twice")]
    DuplicateSubnet { subnet: String },
    #[error("subnet {subnet}: no CIDR")]
    SubnetWithoutCidr { subnet: String },
    #[error("port {port}: subnet {subnet} is not a logical switch of the plan")]
    UnknownSubnet { port: String, subnet: String },
    #[error("port {port}: address {ip} is outside subnet {subnet}")]
    AddressOutsideSubnet {
        port: String,
        subnet: String,
        ip: IpAddr,
    },
    #[error("port {port}: address {ip} in subnet {subnet} is already used by port {holder}")]
    AddressTaken {
        port: String,
        subnet: String,
        ip: IpAddr,
        holder: String,
    },
    #[error("port {port}: MAC {mac} is already used by port {holder}")]
    MacTaken {
        port: String,
        mac: String,
        holder: String,
    },
    #[error("port {port} is defined twice")]
    DuplicatePort { port: String },
    #[error("port {port}: no address")]
    PortWithoutAddress { port: String },
    #[error("node {node}: no join address (join subnet missing or full)")]
    NodeWithoutJoinAddress { node: String },
    #[error("service {service}: field {field}: {reason} (the Service is not load balanced)")]
    ServiceInvalid {
        service: String,
        field: String,
        reason: String,
    },
    #[error("service {service}: VIP {vip} is already served by service {holder}")]
    ServiceVipTaken {
        service: String,
        vip: String,
        holder: String,
    },
    #[error("service {service}: not supported yet: {what}")]
    ServiceUnsupported { service: String, what: String },
    #[error("service {service}: EndpointSlice {slice}: {address:?} is not an IP address")]
    EndpointAddressInvalid {
        service: String,
        slice: String,
        address: String,
    },
    #[error("service {service}: VPC {vpc} is not defined")]
    ServiceUnknownVpc { service: String, vpc: String },
    #[error("subnet {subnet}: {error} (its pods have no egress)")]
    GatewayNodeInvalid { subnet: String, error: String },
    #[error(
        "subnet {subnet}: gatewayType centralized: no node of gatewayNode {listed:?} has a join port (its pods have no egress)"
    )]
    NoGatewayNode { subnet: String, listed: String },
    #[error("subnet {subnet}: no live gateway node among {listed:?}; egress stays on {kept:?}")]
    NoLiveGateway {
        subnet: String,
        listed: String,
        kept: Vec<String>,
    },
    /// A NetworkPolicy field that could not be used (the rest of the policy, and every other
    /// policy, is applied; the bad part fails closed).
    #[error(transparent)]
    NetworkPolicy(#[from] netpol::PolicyIssue),
    #[error("OVN gateway router egress: {0}")]
    GatewayRouter(#[from] gateway_router::GatewayRouterIssue),
    /// An AdminNetworkPolicy or BaselineAdminNetworkPolicy field that could not be used (that
    /// policy is left out, every other is applied).
    #[error(transparent)]
    AdminNetworkPolicy(#[from] netpol::admin::AdminPolicyIssue),
    /// A SecurityGroup field or a security group annotation that could not be used (that
    /// group applies no rules, its members stay isolated; every other group is applied).
    #[error(transparent)]
    SecurityGroup(#[from] security_group::SecurityGroupIssue),
}

// ---------------------------------------------------------------------------------------------
// Planning

/// `external_ids` of an owned row: the mark, its identity and extra pairs.
pub fn owned_ids(key: &str, extra: &[(&str, &str)]) -> StrMap {
    let mut ids = StrMap::new();
    ids.insert(OWNER_KEY.into(), OWNER_VALUE.into());
    ids.insert(ROW_KEY.into(), key.into());
    for (k, v) in extra {
        if !v.is_empty() {
            ids.insert((*k).into(), (*v).into());
        }
    }
    ids
}

/// Plans the NB rows for `desired`. Pure and deterministic: the result depends only on the
/// content of `desired`, not on the order of its lists.
pub fn plan(desired: &Desired) -> NbPlan {
    plan_with(desired, None)
}

/// What a long-running planner keeps between passes so a small input change costs work
/// proportional to what it touches (today: every Service's own load balancer plan).
#[derive(Debug, Clone, Default)]
pub struct PlanCache {
    pub services: services::ServicePlanCache,
}

/// [`plan`] through `cache`: the same result (the cache only saves work).
pub fn plan_cached(desired: &Desired, cache: &mut PlanCache) -> NbPlan {
    plan_with(desired, Some(cache))
}

fn plan_with(desired: &Desired, cache: Option<&mut PlanCache>) -> NbPlan {
    let mut out = NbPlan::default();

    // Routers, one per VPC.
    let mut vpcs: Vec<&VpcIntent> = desired.vpcs.iter().collect();
    vpcs.sort_by(|a, b| a.name.cmp(&b.name));
    for vpc in vpcs {
        if out.routers.contains_key(&vpc.name) {
            continue;
        }
        let mut router = PlannedRouter {
            name: vpc.name.clone(),
            options: StrMap::new(),
            external_ids: owned_ids(&format!("lr/{}", vpc.name), &[("vpc", &vpc.name)]),
            nat: BTreeMap::new(),
            ports: BTreeMap::new(),
            static_routes: BTreeMap::new(),
            policies: BTreeMap::new(),
            lb_groups: BTreeSet::new(),
        };
        for r in &vpc.static_routes {
            add_route(&mut router, r, &[]);
        }
        for p in &vpc.policy_routes {
            add_policy(&mut router, p, &[]);
        }
        out.routers.insert(vpc.name.clone(), router);
    }

    // Switches, one per OVN subnet, with their router ports.
    let mut subnets: Vec<&SubnetIntent> = desired.subnets.iter().collect();
    subnets.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    let mut by_name: BTreeMap<&str, &SubnetIntent> = BTreeMap::new();
    for s in subnets {
        if !seen.insert(s.name.as_str()) {
            out.issues.push(PlanIssue::DuplicateSubnet {
                subnet: s.name.clone(),
            });
            continue;
        }
        if !s.is_ovn() {
            continue;
        }
        if s.v4.is_none() && s.v6.is_none() {
            out.issues.push(PlanIssue::SubnetWithoutCidr {
                subnet: s.name.clone(),
            });
            continue;
        }
        if s.needs_router() && !out.routers.contains_key(&s.vpc) {
            out.issues.push(PlanIssue::UnknownVpc {
                subnet: s.name.clone(),
                vpc: s.vpc.clone(),
            });
            continue;
        }
        by_name.insert(s.name.as_str(), s);
        let switch = plan_switch(s, desired, &mut out.routers);
        out.switches.insert(s.name.clone(), switch);
    }

    // Default route of the default VPC towards the join gateway, as Kube-OVN installs it.
    if let Some(join) = desired.join_subnet.as_deref().and_then(|j| by_name.get(j))
        && let Some(router) = out.routers.get_mut(&join.vpc)
    {
        if let Some(gw) = join.v4_gateway {
            let r = RouteIntent {
                ip_prefix: "0.0.0.0/0".into(),
                nexthop: gw.to_string(),
                policy: RoutePolicy::DstIp,
                route_table: String::new(),
            };
            add_route(router, &r, &[]);
        }
        if let Some(gw) = join.v6_gateway {
            let r = RouteIntent {
                ip_prefix: "::/0".into(),
                nexthop: gw.to_string(),
                policy: RoutePolicy::DstIp,
                route_table: String::new(),
            };
            add_route(router, &r, &[]);
        }
    }

    plan_nodes(desired, &by_name, &mut out);
    plan_pod_ports(desired, &by_name, &mut out);
    plan_load_balancers(desired, &by_name, &mut out, cache);
    // After every planner that adds ACLs or port-group members: the bypass must not cover a
    // port any policy selects (NetworkPolicy ports go into `excluded` when they are planned).
    let mut open_peers: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    if !desired.network_policy.policies.is_empty() {
        let np = netpol::plan_network_policies(&desired.network_policy);
        out.port_groups = np.port_groups;
        out.address_sets = np.address_sets;
        open_peers = np.open_peers;
        out.issues
            .extend(np.issues.into_iter().map(PlanIssue::NetworkPolicy));
    }
    if !desired.admin_policy.is_empty() {
        plan_admin_policies(&desired.admin_policy, &mut out);
    }
    if !desired.security_groups.is_empty() {
        let sg = security_group::plan_security_groups(&desired.security_groups);
        out.port_groups.extend(sg.port_groups);
        out.address_sets.extend(sg.address_sets);
        out.issues
            .extend(sg.issues.into_iter().map(PlanIssue::SecurityGroup));
    }
    // The policy bypass assumes NetworkPolicy alone decides for the pods it marks: pods in
    // any other kind's port group (AdminNetworkPolicy / BaselineAdminNetworkPolicy subjects,
    // security group members) keep conntrack.
    let admin_ports: BTreeSet<&String> = out
        .port_groups
        .iter()
        .filter(|(n, _)| !n.starts_with("np."))
        .flat_map(|(_, g)| g.ports.iter())
        .collect();
    open_peers.retain(|pg: &String, _| {
        out.port_groups
            .get(pg)
            .is_some_and(|g| g.ports.iter().all(|p| !admin_ports.contains(p)))
    });
    drop(admin_ports);
    if !desired.ct_bypass_off {
        let excluded: BTreeSet<String> = out
            .port_groups
            .values()
            .flat_map(|g| g.ports.iter().cloned())
            .collect();
        ctbypass::plan_ct_bypass(&mut out, &by_name, &excluded);
        ctbypass::plan_policy_bypass(&mut out, &open_peers);
    }
    plan_gateways(desired, &by_name, &mut out);
    gateway_router::plan_ovn_egress(desired, &by_name, &mut out);
    out.issues.sort();
    out.issues.dedup();
    out
}

/// Every VPC gets its (possibly empty) load balancer group, referenced once by each switch
/// (or the router) that serves Services: the first Service of a VPC then inserts one row and
/// touches no switch, and a switch without any VIP pays no conntrack.
fn plan_load_balancers(
    desired: &Desired,
    subnets: &BTreeMap<&str, &SubnetIntent>,
    out: &mut NbPlan,
    cache: Option<&mut PlanCache>,
) {
    // A node port listens on the node's InternalIPs and on its join address (ovn0), the
    // address other nodes reach it by through OVN.
    let nodes: Vec<ServiceNode> = desired
        .nodes
        .iter()
        .map(|n| ServiceNode {
            name: n.name.clone(),
            ips: n
                .internal_ips
                .iter()
                .chain(n.join_ips.iter())
                .copied()
                .collect(),
        })
        .collect();
    let sources = health_check_sources(desired);
    let planned = match cache {
        Some(c) => services::plan_services_cached_probed(
            &mut c.services,
            &desired.services,
            DEFAULT_ROUTER,
            &nodes,
            &sources,
            &mut out.issues,
        ),
        None => services::plan_services_probed(
            &desired.services,
            DEFAULT_ROUTER,
            &nodes,
            &sources,
            &mut out.issues,
        ),
    };
    out.chassis_vars = planned.chassis_vars;
    let mut groups = planned.groups;
    for (name, group) in std::mem::take(&mut groups) {
        let vpc = group
            .load_balancers
            .values()
            .find_map(|lb| lb.external_ids.get("vpc").cloned())
            .unwrap_or_default();
        if !out.routers.contains_key(&vpc) {
            for lb in group.load_balancers.values() {
                out.issues.push(PlanIssue::ServiceUnknownVpc {
                    service: lb.external_ids.get("service").cloned().unwrap_or_default(),
                    vpc: vpc.clone(),
                });
            }
            continue;
        }
        groups.insert(name, group);
    }
    for (vpc, router) in out.routers.iter_mut() {
        let name = lb_group_name(vpc);
        groups
            .entry(name.clone())
            .or_insert_with(|| PlannedLbGroup {
                name: name.clone(),
                load_balancers: BTreeMap::new(),
            });
        match desired.lb_attach {
            LbAttach::Router => {
                router.lb_groups.insert(name);
            }
            LbAttach::Switches => {
                for sw in out.switches.values_mut() {
                    if let Some(s) = subnets.get(sw.name.as_str())
                        && s.vpc == *vpc
                        && s.needs_router()
                        && s.enable_lb
                    {
                        sw.lb_groups.insert(name.clone());
                    }
                }
            }
        }
    }
    out.lb_groups = groups;
}

/// The health-check probe source of every pod subnet (not `join`: no Service backend is a
/// node port), sorted by net. A subnet whose source address a pod or the gateway holds is
/// left out: its backends are not probed rather than answered for by OVN's ARP responder.
fn health_check_sources(desired: &Desired) -> Vec<(IpNet, IpAddr)> {
    let held: BTreeSet<IpAddr> = desired
        .ports
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    let mut out: Vec<(IpNet, IpAddr)> = desired
        .subnets
        .iter()
        .filter(|s| desired.join_subnet.as_deref() != Some(s.name.as_str()))
        .flat_map(|s| {
            let gateways = [s.v4_gateway.map(IpAddr::V4), s.v6_gateway.map(IpAddr::V6)];
            [s.v4.map(IpNet::V4), s.v6.map(IpNet::V6)]
                .into_iter()
                .flatten()
                .filter_map(move |net| {
                    let src = services::health_check_source(net)?;
                    (!gateways.contains(&Some(src))).then_some((net, src))
                })
        })
        .filter(|(_, src)| !held.contains(src))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn add_route(router: &mut PlannedRouter, r: &RouteIntent, extra: &[(&str, &str)]) {
    let key = format!(
        "lrsr/{}/{}/{}/{}/{}",
        router.name,
        r.route_table,
        r.policy.as_str(),
        r.ip_prefix,
        r.nexthop
    );
    let route = PlannedStaticRoute {
        ip_prefix: r.ip_prefix.clone(),
        nexthop: r.nexthop.clone(),
        // OVN's default is dst-ip; leaving it empty keeps `ovn-nbctl lr-route-list` output
        // identical to Kube-OVN's for the common case.
        policy: match r.policy {
            RoutePolicy::DstIp => None,
            RoutePolicy::SrcIp => Some("src-ip".into()),
        },
        route_table: r.route_table.clone(),
        external_ids: owned_ids(&key, extra),
    };
    router.static_routes.insert(key, route);
}

fn add_policy(router: &mut PlannedRouter, p: &PolicyIntent, extra: &[(&str, &str)]) {
    let key = format!("lrp-policy/{}/{}/{}", router.name, p.priority, p.match_);
    insert_policy(router, key, p, extra);
}

/// A policy under a key of the caller's choosing: a row whose match changes (the address set of
/// a gateway reroute) is then updated in place, not deleted and inserted.
fn insert_policy(
    router: &mut PlannedRouter,
    key: String,
    p: &PolicyIntent,
    extra: &[(&str, &str)],
) {
    let mut nexthops = p.nexthops.clone();
    nexthops.sort();
    nexthops.dedup();
    let policy = PlannedPolicy {
        priority: p.priority,
        match_: p.match_.clone(),
        action: p.action.clone(),
        nexthops,
        external_ids: owned_ids(&key, extra),
    };
    router.policies.insert(key, policy);
}

fn plan_switch(
    s: &SubnetIntent,
    desired: &Desired,
    routers: &mut BTreeMap<String, PlannedRouter>,
) -> PlannedSwitch {
    let mut other_config = StrMap::new();
    // Kube-OVN's switch other_config: the IPv4 subnet, its gateway and excludeIps (IPv4 ranges
    // only, space separated, as northd parses them); ipv6_prefix only for a /64 (northd's rule).
    if let Some(v4) = s.v4 {
        other_config.insert("subnet".into(), v4.trunc().to_string());
        if let Some(gw) = s.v4_gateway {
            other_config.insert("gateway".into(), gw.to_string());
        }
        let exclude: Vec<String> = s
            .exclude
            .iter()
            .filter(|(a, b)| a.is_ipv4() && b.is_ipv4())
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}..{b}")
                }
            })
            .collect();
        if !exclude.is_empty() {
            other_config.insert("exclude_ips".into(), exclude.join(" "));
        }
    }
    if let Some(v6) = s.v6
        && v6.prefix_len() == 64
    {
        other_config.insert("ipv6_prefix".into(), v6.network().to_string());
    }

    let mut switch = PlannedSwitch {
        name: s.name.clone(),
        other_config,
        external_ids: owned_ids(
            &format!("ls/{}", s.name),
            &[
                ("vpc", &s.vpc),
                ("subnet", &s.name),
                ("provider", &s.provider),
            ],
        ),
        ports: BTreeMap::new(),
        acls: BTreeMap::new(),
        lb_groups: BTreeSet::new(),
    };

    if s.needs_router()
        && let Some(router) = routers.get_mut(&s.vpc)
    {
        let lrp_name = router_port_name(&router.name, &s.name);
        let lsp_name = switch_router_port_name(&s.name, &router.name);
        let mut networks: Vec<String> = Vec::new();
        if let (Some(net), Some(gw)) = (s.v4, s.v4_gateway) {
            networks.push(format!("{gw}/{}", net.prefix_len()));
        }
        if let (Some(net), Some(gw)) = (s.v6, s.v6_gateway) {
            networks.push(format!("{gw}/{}", net.prefix_len()));
        }
        networks.sort();
        router.ports.insert(
            lrp_name.clone(),
            PlannedRouterPort {
                name: lrp_name.clone(),
                mac: router_port_mac(&lrp_name).to_string(),
                networks,
                external_ids: owned_ids(
                    &format!("lrp/{lrp_name}"),
                    &[("subnet", &s.name), ("vpc", &s.vpc)],
                ),
                gateway_chassis: Vec::new(),
            },
        );
        let mut options = StrMap::new();
        options.insert("router-port".into(), lrp_name);
        switch.ports.insert(
            lsp_name.clone(),
            PlannedSwitchPort {
                name: lsp_name.clone(),
                type_: "router".into(),
                addresses: vec!["router".into()],
                port_security: Vec::new(),
                options,
                tag: None,
                external_ids: owned_ids(
                    &format!("lsp/{lsp_name}"),
                    &[("ls", &s.name), ("vpc", &s.vpc)],
                ),
            },
        );
    }

    if let Some(vlan) = &s.vlan {
        let name = localnet_port_name(&s.name);
        let mut options = StrMap::new();
        options.insert("network_name".into(), vlan.provider_network.clone());
        switch.ports.insert(
            name.clone(),
            PlannedSwitchPort {
                name: name.clone(),
                type_: "localnet".into(),
                addresses: vec!["unknown".into()],
                port_security: Vec::new(),
                options,
                tag: (vlan.tag > 0).then_some(i64::from(vlan.tag)),
                external_ids: owned_ids(&format!("lsp/{name}"), &[("ls", &s.name)]),
            },
        );
    }

    let join = desired
        .join_subnet
        .as_deref()
        .and_then(|j| desired.subnets.iter().find(|x| x.name == j));
    for a in acl::subnet_acls(s, join) {
        switch
            .acls
            .insert(a.external_ids.get(ROW_KEY).cloned().unwrap_or_default(), a);
    }
    switch
}

fn address_field(mac: &str, ips: &[IpAddr]) -> String {
    let mut v = vec![mac.to_string()];
    v.extend(ips.iter().map(IpAddr::to_string));
    v.join(" ")
}

/// Orders addresses IPv4 first, as Kube-OVN writes `addresses`.
fn sorted_ips(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = ips.to_vec();
    v.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    v.dedup();
    v
}

/// Claims addresses and MACs for ports, reporting duplicates. The first claimant (in the
/// planner's sorted order) keeps an address.
#[derive(Default)]
struct Claims {
    ips: BTreeMap<(String, IpAddr), String>,
    macs: BTreeMap<MacAddr, String>,
}

impl Claims {
    /// Checks `ips` and `mac` of `port` in `switch` and claims them if all are free.
    fn claim(
        &mut self,
        port: &str,
        switch: &str,
        mac: Option<MacAddr>,
        ips: &[IpAddr],
        issues: &mut Vec<PlanIssue>,
    ) -> bool {
        for ip in ips {
            if let Some(holder) = self.ips.get(&(switch.to_string(), *ip)) {
                issues.push(PlanIssue::AddressTaken {
                    port: port.into(),
                    subnet: switch.into(),
                    ip: *ip,
                    holder: holder.clone(),
                });
                return false;
            }
        }
        if let Some(mac) = mac
            && let Some(holder) = self.macs.get(&mac)
        {
            issues.push(PlanIssue::MacTaken {
                port: port.into(),
                mac: mac.to_string(),
                holder: holder.clone(),
            });
            return false;
        }
        for ip in ips {
            self.ips.insert((switch.to_string(), *ip), port.to_string());
        }
        if let Some(mac) = mac {
            self.macs.insert(mac, port.to_string());
        }
        true
    }
}

fn plan_nodes(desired: &Desired, subnets: &BTreeMap<&str, &SubnetIntent>, out: &mut NbPlan) {
    let Some(join) = desired
        .join_subnet
        .as_deref()
        .and_then(|j| subnets.get(j).copied())
    else {
        return;
    };
    let mut nodes: Vec<&NodeIntent> = desired.nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.dedup_by(|a, b| a.name == b.name);
    let mut claims = Claims::default();
    for node in nodes {
        let port = join_port_name(&node.name);
        let ips: Vec<IpAddr> = sorted_ips(&node.join_ips)
            .into_iter()
            .filter(|ip| join.contains(*ip))
            .collect();
        let Some(mac) = node.join_mac.filter(|_| !ips.is_empty()) else {
            out.issues.push(PlanIssue::NodeWithoutJoinAddress {
                node: node.name.clone(),
            });
            continue;
        };
        if !claims.claim(&port, &join.name, Some(mac), &ips, &mut out.issues) {
            continue;
        }
        let mac_s = mac.to_string();
        if let Some(switch) = out.switches.get_mut(&join.name) {
            switch.ports.insert(
                port.clone(),
                PlannedSwitchPort {
                    name: port.clone(),
                    type_: String::new(),
                    addresses: vec![address_field(&mac_s, &ips)],
                    port_security: Vec::new(),
                    options: StrMap::new(),
                    tag: None,
                    external_ids: owned_ids(
                        &format!("lsp/{port}"),
                        &[("node", &node.name), ("ls", &join.name)],
                    ),
                },
            );
        }
        // Traffic for the node's own address leaves the VPC through its join port.
        if let Some(router) = out.routers.get_mut(&join.vpc) {
            for internal in sorted_ips(&node.internal_ips) {
                let nexthop = ips
                    .iter()
                    .find(|j| j.is_ipv4() == internal.is_ipv4())
                    .copied();
                let Some(nexthop) = nexthop else { continue };
                let af = if internal.is_ipv4() { "ip4" } else { "ip6" };
                let p = PolicyIntent {
                    priority: NODE_POLICY_PRIORITY,
                    match_: format!("{af}.dst == {internal}"),
                    action: "reroute".into(),
                    nexthops: vec![nexthop.to_string()],
                };
                add_policy(router, &p, &[("node", &node.name)]);
            }
        }
    }
}

/// The default VPC's distributed gateway, in rows that grow with nodes + subnets (Kube-OVN's
/// grow with nodes × subnets): per subnet of the VPC a 31000 `allow` for traffic to it; per node
/// and family ONE 29000 reroute of its pods' addresses (every distributed subnet at once) to the
/// node's join address. Pod egress then leaves OVN through its own node's ovn0.
fn plan_gateways(desired: &Desired, subnets: &BTreeMap<&str, &SubnetIntent>, out: &mut NbPlan) {
    let Some(join) = desired
        .join_subnet
        .as_deref()
        .and_then(|j| subnets.get(j).copied())
    else {
        return;
    };
    let in_vpc: Vec<&SubnetIntent> = subnets
        .values()
        .copied()
        .filter(|s| s.vpc == join.vpc && s.is_ovn() && s.needs_router())
        .filter(|s| out.switches.contains_key(&s.name))
        .collect();
    // the planned node ports: node -> join addresses
    let mut node_join: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    if let Some(sw) = out.switches.get(&join.name) {
        for n in &desired.nodes {
            if sw.ports.contains_key(&join_port_name(&n.name)) {
                node_join.insert(n.name.as_str(), sorted_ips(&n.join_ips));
            }
        }
    }
    let mut sources: BTreeMap<(&str, bool), BTreeSet<IpAddr>> = BTreeMap::new();
    for p in &desired.ports {
        let Some(s) = in_vpc.iter().find(|s| s.name == p.subnet) else {
            continue;
        };
        let planned = out
            .switches
            .get(&s.name)
            .is_some_and(|sw| sw.ports.contains_key(&p.port_name()));
        if s.name == join.name || s.centralized_gateway || p.node.is_empty() || !planned {
            continue;
        }
        for ip in &p.ips {
            sources
                .entry((p.node.as_str(), ip.is_ipv4()))
                .or_default()
                .insert(*ip);
        }
    }
    let Some(router) = out.routers.get_mut(&join.vpc) else {
        return;
    };
    for s in &in_vpc {
        for net in s.nets() {
            let af = if net.addr().is_ipv4() { "ip4" } else { "ip6" };
            let p = PolicyIntent {
                priority: SUBNET_POLICY_PRIORITY,
                match_: format!("{af}.dst == {}", net.trunc()),
                action: "allow".into(),
                nexthops: Vec::new(),
            };
            add_policy(router, &p, &[("subnet", &s.name)]);
        }
    }
    plan_centralized(
        desired,
        &in_vpc,
        join,
        &node_join,
        router,
        &mut out.issues,
        &mut out.active_gateways,
    );
    for ((node, v4), ips) in sources {
        let Some(nexthop) = node_join
            .get(node)
            .and_then(|j| j.iter().find(|j| j.is_ipv4() == v4))
        else {
            continue;
        };
        let af = if v4 { "ip4" } else { "ip6" };
        let set: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let p = PolicyIntent {
            priority: GATEWAY_POLICY_PRIORITY,
            match_: format!("{af}.src == {{{}}}", set.join(", ")),
            action: "reroute".into(),
            nexthops: vec![nexthop.to_string()],
        };
        let key = format!(
            "lrp-policy/{}/{GATEWAY_POLICY_PRIORITY}/gateway/{node}/{af}",
            router.name
        );
        insert_policy(
            router,
            key,
            &p,
            &[("node", node), ("gateway", "distributed")],
        );
    }
}

/// Per centralized subnet and family ONE 29000 reroute of the whole CIDR to the join address(es)
/// of the chosen gateway node(s) (Kube-OVN's row; ECMP: several next hops).
fn plan_centralized(
    desired: &Desired,
    in_vpc: &[&SubnetIntent],
    join: &SubnetIntent,
    node_join: &BTreeMap<&str, Vec<IpAddr>>,
    router: &mut PlannedRouter,
    issues: &mut Vec<PlanIssue>,
    active: &mut BTreeMap<String, Vec<String>>,
) {
    for s in in_vpc
        .iter()
        .filter(|s| s.centralized_gateway && s.name != join.name)
    {
        let listed = match parse_gateway_nodes(&s.gateway_node) {
            Ok(l) => l,
            Err(e) => {
                issues.push(PlanIssue::GatewayNodeInvalid {
                    subnet: s.name.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let nets = s.nets();
        // a candidate needs a join address of every family the subnet has
        let candidates: Vec<String> = listed
            .iter()
            .filter(|g| {
                node_join.get(g.node.as_str()).is_some_and(|j| {
                    nets.iter()
                        .all(|n| j.iter().any(|ip| ip.is_ipv4() == n.addr().is_ipv4()))
                })
            })
            .map(|g| g.node.clone())
            .collect();
        if candidates.is_empty() {
            issues.push(PlanIssue::NoGatewayNode {
                subnet: s.name.clone(),
                listed: s.gateway_node.clone(),
            });
            continue;
        }
        let lv = &desired.gateway_liveness;
        let previous = lv.previous_active.get(&s.name).map(String::as_str);
        let chosen = gateway::choose(&candidates, s.gateway_ecmp, previous, lv);
        if !candidates.iter().any(|c| lv.is_alive(c)) {
            issues.push(PlanIssue::NoLiveGateway {
                subnet: s.name.clone(),
                listed: s.gateway_node.clone(),
                kept: chosen.clone(),
            });
        }
        for net in &nets {
            let v4 = net.addr().is_ipv4();
            let nexthops: Vec<String> = chosen
                .iter()
                .filter_map(|n| node_join.get(n.as_str()))
                .filter_map(|j| j.iter().find(|ip| ip.is_ipv4() == v4))
                .map(ToString::to_string)
                .collect();
            let af = if v4 { "ip4" } else { "ip6" };
            let p = PolicyIntent {
                priority: GATEWAY_POLICY_PRIORITY,
                match_: format!("{af}.src == {}", net.trunc()),
                action: "reroute".into(),
                nexthops,
            };
            let key = format!(
                "lrp-policy/{}/{GATEWAY_POLICY_PRIORITY}/centralized/{}/{af}",
                router.name, s.name
            );
            let gateways = chosen.join(",");
            insert_policy(
                router,
                key,
                &p,
                &[
                    ("subnet", &s.name),
                    ("gateway", "centralized"),
                    ("active-gateway", &gateways),
                ],
            );
        }
        active.insert(s.name.clone(), chosen);
    }
}

fn plan_pod_ports(desired: &Desired, subnets: &BTreeMap<&str, &SubnetIntent>, out: &mut NbPlan) {
    let mut ports: Vec<&PortIntent> = desired.ports.iter().collect();
    // Name first, then content: the same input in any order plans the same rows, and among
    // duplicates the same one wins.
    ports.sort_by(|a, b| {
        (a.port_name(), &a.subnet, &a.ips, a.mac).cmp(&(b.port_name(), &b.subnet, &b.ips, b.mac))
    });
    let mut claims = Claims::default();
    // Router and node ports hold addresses too.
    for s in out.switches.values() {
        for p in s.ports.values() {
            for a in &p.addresses {
                let mut parts = a.split_whitespace();
                let mac = parts.next().and_then(|m| m.parse::<MacAddr>().ok());
                let ips: Vec<IpAddr> = parts.filter_map(|x| x.parse().ok()).collect();
                claims.claim(&p.name, &s.name, mac, &ips, &mut Vec::new());
            }
        }
    }
    let mut names = BTreeSet::new();
    for p in ports {
        let name = p.port_name();
        if !names.insert(name.clone()) {
            out.issues.push(PlanIssue::DuplicatePort { port: name });
            continue;
        }
        let Some(subnet) = subnets.get(p.subnet.as_str()).copied() else {
            out.issues.push(PlanIssue::UnknownSubnet {
                port: name,
                subnet: p.subnet.clone(),
            });
            continue;
        };
        let ips = sorted_ips(&p.ips);
        if ips.is_empty() {
            out.issues
                .push(PlanIssue::PortWithoutAddress { port: name });
            continue;
        }
        if let Some(ip) = ips.iter().find(|ip| !subnet.contains(**ip)) {
            out.issues.push(PlanIssue::AddressOutsideSubnet {
                port: name,
                subnet: subnet.name.clone(),
                ip: *ip,
            });
            continue;
        }
        let gateways: Vec<IpAddr> = subnet
            .v4_gateway
            .map(IpAddr::V4)
            .into_iter()
            .chain(subnet.v6_gateway.map(IpAddr::V6))
            .collect();
        if let Some(ip) = ips.iter().find(|ip| gateways.contains(ip)) {
            out.issues.push(PlanIssue::AddressTaken {
                port: name,
                subnet: subnet.name.clone(),
                ip: *ip,
                holder: "the subnet gateway".into(),
            });
            continue;
        }
        if !claims.claim(&name, &subnet.name, Some(p.mac), &ips, &mut out.issues) {
            continue;
        }
        let Some(switch) = out.switches.get_mut(&subnet.name) else {
            continue;
        };
        let addresses = address_field(&p.mac.to_string(), &ips);
        let pod_ref = format!("{}/{}", p.namespace, p.pod);
        switch.ports.insert(
            name.clone(),
            PlannedSwitchPort {
                name: name.clone(),
                type_: String::new(),
                port_security: if p.port_security {
                    vec![addresses.clone()]
                } else {
                    Vec::new()
                },
                addresses: vec![addresses],
                options: StrMap::new(),
                tag: None,
                external_ids: owned_ids(
                    &format!("lsp/{name}"),
                    &[
                        ("pod", &pod_ref),
                        ("namespace", &p.namespace),
                        ("pod_name", &p.pod),
                        ("provider", &p.provider),
                        ("node", &p.node),
                        ("ls", &subnet.name),
                    ],
                ),
            },
        );
    }
}

/// AdminNetworkPolicy (tier 1) and BaselineAdminNetworkPolicy (tier 3) rows next to
/// NetworkPolicy's: the names (`anp.*`, `banp.*`) never collide with `np.*`.
fn plan_admin_policies(input: &netpol::admin::AdminPolicyInput, out: &mut NbPlan) {
    let admin = netpol::admin::plan_admin_policies(input);
    out.port_groups.extend(admin.port_groups);
    out.address_sets.extend(admin.address_sets);
    out.issues
        .extend(admin.issues.into_iter().map(PlanIssue::AdminNetworkPolicy));
}
