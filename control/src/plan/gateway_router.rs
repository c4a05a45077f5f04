//! OVN-native egress: one OVN gateway router per node that chooses it (DPDK nodes by default),
//! so a pod's traffic to the outside is SNATed and sent out of the node's uplink by OVS itself
//! and never enters the node's kernel (no ovn0, no kernel forwarding, no nftables).
//!
//! Per such node `<n>` the planner makes (names in [`names`]):
//! - router `gw-<n>`, a distributed router whose external port is a **distributed gateway
//!   port** bound to the node's chassis (a `Gateway_Chassis` row): its SNAT runs on that
//!   chassis, where the node's pods are anyway, and with `options:ct-commit-all=true` northd
//!   makes the SNAT of a pod's packet ONE conntrack commit (two datapath passes). An l3 gateway
//!   router (`options:chassis`) would send every packet through its DNAT zone as well (a lookup
//!   plus a commit, northd does so for any router with NAT rows), and a gateway port without
//!   `ct-commit-all` gets a SNAT-zone lookup before the commit: three passes either way;
//! - its port `gw-<n>-transit` on the shared transit switch [`TRANSIT_SWITCH`] (a join-like
//!   switch between the cluster router and every gateway router; the cluster router's port on
//!   it is `ovn-cluster-transit`);
//! - its port `gw-<n>-ext` on the node's external switch `ext-<n>`, whose `localnet` port
//!   (`network_name` = the node's physnet) the node's `ovn-bridge-mappings` ties to the bridge
//!   holding the uplink, an OVS-DPDK port;
//! - NAT `snat` of each of the node's SNAT CIDRs to the node's external address, a default
//!   route to the uplink's next hop and routes back to every cluster CIDR via the cluster
//!   router's transit address;
//! - on the cluster router, ONE reroute policy per node ([`POLICY_PRIORITY`], above the
//!   distributed gateway's 29000 and below the node (30000) and east-west (31000) policies)
//!   sending the node's pods' egress to its gateway router.
//!
//! Rows grow with nodes + pods, never nodes × subnets. Pure: the caller allocates the transit
//! addresses and knows each node's chassis, uplink address and next hop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use ferrovn_api::names::router_port_mac;

pub use super::PlannedNat;
use super::{
    Desired, NbPlan, PlanIssue, PlannedGatewayChassis, PlannedPolicy, PlannedRouter,
    PlannedRouterPort, PlannedStaticRoute, PlannedSwitch, PlannedSwitchPort, ROW_KEY, StrMap,
    SubnetIntent, owned_ids,
};

/// The join-like switch between the cluster router and every gateway router.
pub const TRANSIT_SWITCH: &str = "ovn-gw-transit";
/// Options of every gateway router: `ct-commit-all` drops the SNAT-zone lookup northd puts
/// before the SNAT commit of a gateway port (OVN 25.03 `build_lrouter_out_snat_flow` /
/// `build_dgp_lrouter_commit_all`): a pod's packet to the outside costs one conntrack
/// operation. The price: a connection the outside opens to a pod of a SNATed subnet (the
/// outside routing the pod CIDR to this node, which natOutgoing setups do not do) would have
/// its answers SNATed; subnets without natOutgoing are not SNATed at all.
pub const ROUTER_OPTIONS: [(&str, &str); 1] = [("ct-commit-all", "true")];
/// Priority of a gateway router's one gateway chassis (there is no failover: the router
/// serves the pods of its own node only).
pub const GATEWAY_CHASSIS_PRIORITY: i64 = 1;
/// Priority of the per-node reroute to its gateway router: it wins over the distributed
/// gateway's reroute (29000) for the same pods and loses to traffic for nodes (30000) and for
/// cluster subnets (31000), which must not leave through the gateway.
pub const POLICY_PRIORITY: i64 = 29500;
/// The node annotation choosing a node's egress path: [`EgressMode::as_str`] values.
pub const EGRESS_ANNOTATION: &str = "ferrovn.io/egress";

/// Names of the rows of one node's gateway.
pub mod names {
    pub fn router(node: &str) -> String {
        format!("gw-{node}")
    }
    pub fn external_switch(node: &str) -> String {
        format!("ext-{node}")
    }
    pub fn localnet_port(node: &str) -> String {
        format!("ln-ext-{node}")
    }
    pub fn transit_router_port(node: &str) -> String {
        format!("gw-{node}-transit")
    }
    pub fn external_router_port(node: &str) -> String {
        format!("gw-{node}-ext")
    }
    /// The transit switch's port peering the cluster router (`router` is its name).
    pub fn cluster_transit_router_port(router: &str) -> String {
        format!("{router}-transit")
    }
    pub fn transit_switch_port(router_port: &str) -> String {
        format!("transit-{router_port}")
    }
    pub fn external_switch_port(node: &str) -> String {
        format!("ext-{node}-gw")
    }
}

/// How a node's pods reach the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EgressMode {
    /// Through the node's kernel: join port ovn0, kernel forwarding, nftables masquerade
    /// (Kube-OVN's path; `natOutgoing` in `crate`'s distributed gateway).
    Kernel,
    /// Through the node's OVN gateway router and its OVS-DPDK uplink.
    OvnGatewayRouter,
}

impl EgressMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Kernel => "kernel",
            EgressMode::OvnGatewayRouter => "ovn-gateway-router",
        }
    }
}

/// The node annotation with the node's address on its uplink network, with prefix (the SNAT
/// address of its gateway router): `203.0.113.101/24`.
pub const EXTERNAL_IP_ANNOTATION: &str = "ferrovn.io/egress-external-ip";
/// The node annotation with the uplink's next hop (on-link in the external address's network).
pub const NEXT_HOP_ANNOTATION: &str = "ferrovn.io/egress-next-hop";
/// The node annotation naming the physnet of the node's uplink bridge (the agent's
/// `--egress-physnet`); [`DEFAULT_PHYSNET`] when absent.
pub const PHYSNET_ANNOTATION: &str = "ferrovn.io/egress-physnet";
pub const DEFAULT_PHYSNET: &str = "ext";
/// The node label of Kube-OVN's DPDK nodes (`userspace`).
pub const DP_TYPE_LABEL: &str = "ovn.kubernetes.io/ovs_dp_type";
/// The transit network when none is configured. A node's transit address has the offset its
/// join address has in the join subnet, so it is stable and unique without an allocator.
pub const DEFAULT_TRANSIT: &str = "100.65.0.0/16";

/// Bad input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayRouterError {
    #[error(
        "node {node}: annotation {EGRESS_ANNOTATION}={value:?}: expected \"kernel\" or \"ovn-gateway-router\""
    )]
    BadEgressAnnotation { node: String, value: String },
    #[error("node {node}: annotation {annotation}={value:?}: {reason}")]
    BadAnnotation {
        node: String,
        annotation: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("node {node}: {EGRESS_ANNOTATION}=ovn-gateway-router needs annotation {annotation}")]
    MissingAnnotation {
        node: String,
        annotation: &'static str,
    },
}

/// One node's choice of the OVN gateway router, as read from its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEgressIntent {
    pub node: String,
    /// Its OVN chassis name (Kube-OVN's `ovn.kubernetes.io/chassis`, else the node name).
    pub chassis: String,
    pub external: Ipv4Net,
    pub next_hop: Ipv4Addr,
    pub physnet: String,
}

/// The planner's input for OVN-native egress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OvnEgressIntent {
    /// The transit network; `None`: [`DEFAULT_TRANSIT`].
    pub transit: Option<Ipv4Net>,
    pub nodes: Vec<NodeEgressIntent>,
    /// Subnets with `natOutgoing: true`: their CIDRs are SNATed by the gateway routers, the
    /// others leave routed.
    pub nat_outgoing_subnets: BTreeSet<String>,
}

/// A Node's egress choice from its labels and annotations: `Ok(None)` for the kernel path.
/// A DPDK node (label [`DP_TYPE_LABEL`]`=userspace`) defaults to the gateway router when it
/// says where its uplink is ([`EXTERNAL_IP_ANNOTATION`], [`NEXT_HOP_ANNOTATION`]) and stays on
/// the kernel path otherwise; a node that asks for it explicitly must say so.
pub fn node_egress(
    node: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    chassis: Option<&str>,
) -> Result<Option<NodeEgressIntent>, GatewayRouterError> {
    let dpdk = labels.get(DP_TYPE_LABEL).is_some_and(|v| v == "userspace");
    let asked = annotations.get(EGRESS_ANNOTATION).map(String::as_str);
    let explicit = asked.is_some_and(|a| !a.trim().is_empty());
    if egress_mode(node, dpdk, asked)? == EgressMode::Kernel {
        return Ok(None);
    }
    let get = |a: &'static str| {
        annotations
            .get(a)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let (Some(ext), Some(hop)) = (get(EXTERNAL_IP_ANNOTATION), get(NEXT_HOP_ANNOTATION)) else {
        if !explicit {
            return Ok(None);
        }
        let annotation = if get(EXTERNAL_IP_ANNOTATION).is_none() {
            EXTERNAL_IP_ANNOTATION
        } else {
            NEXT_HOP_ANNOTATION
        };
        return Err(GatewayRouterError::MissingAnnotation {
            node: node.into(),
            annotation,
        });
    };
    let bad = |annotation: &'static str, value: &str, reason: &'static str| {
        GatewayRouterError::BadAnnotation {
            node: node.into(),
            annotation,
            value: value.into(),
            reason,
        }
    };
    let external: Ipv4Net = ext.parse().map_err(|_| {
        bad(
            EXTERNAL_IP_ANNOTATION,
            ext,
            "expected an IPv4 address with prefix, e.g. 203.0.113.101/24",
        )
    })?;
    let next_hop: Ipv4Addr = hop
        .parse()
        .map_err(|_| bad(NEXT_HOP_ANNOTATION, hop, "expected an IPv4 address"))?;
    let physnet = get(PHYSNET_ANNOTATION).unwrap_or(DEFAULT_PHYSNET);
    if physnet.contains([',', ':', ' ']) {
        return Err(bad(
            PHYSNET_ANNOTATION,
            physnet,
            "contains one of , : or a space",
        ));
    }
    Ok(Some(NodeEgressIntent {
        node: node.into(),
        chassis: chassis
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(node)
            .into(),
        external,
        next_hop,
        physnet: physnet.into(),
    }))
}

/// The egress path of a node: its annotation when set, else OVN-native on DPDK nodes (their
/// pods' packets would otherwise leave OVS-DPDK for the kernel) and the kernel elsewhere.
pub fn egress_mode(
    node: &str,
    dpdk_profile: bool,
    annotation: Option<&str>,
) -> Result<EgressMode, GatewayRouterError> {
    match annotation.map(str::trim) {
        None | Some("") => Ok(if dpdk_profile {
            EgressMode::OvnGatewayRouter
        } else {
            EgressMode::Kernel
        }),
        Some("kernel") => Ok(EgressMode::Kernel),
        Some("ovn-gateway-router") | Some("ovn") => Ok(EgressMode::OvnGatewayRouter),
        Some(other) => Err(GatewayRouterError::BadEgressAnnotation {
            node: node.to_string(),
            value: other.to_string(),
        }),
    }
}

/// What the planner needs for every gateway router of one VPC router.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRouterInputs {
    /// The cluster (VPC) router, `ovn-cluster`.
    pub cluster_router: String,
    /// The transit switch's network.
    pub transit: Ipv4Net,
    /// The cluster router's address on it.
    pub cluster_transit_ip: Ipv4Addr,
    /// Every CIDR of the VPC: the gateway routers route them back to the cluster router.
    pub cluster_cidrs: Vec<Ipv4Net>,
    /// The nodes whose egress mode is [`EgressMode::OvnGatewayRouter`].
    pub nodes: Vec<NodeEgress>,
}

/// One node's gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEgress {
    pub node: String,
    /// The node's OVN chassis name (`external_ids:system-id`).
    pub chassis: String,
    /// Its gateway router's address on the transit switch.
    pub transit_ip: Ipv4Addr,
    /// The node's external address on the uplink, with its prefix (the SNAT address).
    pub external: Ipv4Net,
    /// The uplink's next hop (on-link in `external`).
    pub next_hop: Ipv4Addr,
    /// The bridge-mapping name of the node's uplink bridge.
    pub physnet: String,
    /// Sources SNATed to `external` (the node's natOutgoing pod CIDRs); others leave routed.
    pub snat_cidrs: Vec<Ipv4Net>,
    /// Addresses of the node's pods whose egress takes this gateway.
    pub pod_ips: Vec<Ipv4Addr>,
}

/// One node's gateway router and its external switch.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRouter {
    pub name: String,
    pub node: String,
    /// [`ROUTER_OPTIONS`]; the binding to the chassis is the external port's gateway chassis.
    pub options: StrMap,
    pub external_ids: StrMap,
    pub ports: BTreeMap<String, PlannedRouterPort>,
    pub nat: Vec<PlannedNat>,
    pub static_routes: Vec<PlannedStaticRoute>,
    /// `ext-<node>` with its localnet and router ports.
    pub external_switch: PlannedSwitch,
}

/// Everything the OVN-native egress adds to the NB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayRouterPlan {
    /// The transit switch with one router-type port per gateway router and one for the cluster
    /// router; `None` without any gateway router.
    pub transit: Option<PlannedSwitch>,
    /// The cluster router's port on the transit switch.
    pub cluster_port: Option<PlannedRouterPort>,
    pub routers: BTreeMap<String, GatewayRouter>,
    /// Reroutes on the cluster router, one per node with pods.
    pub cluster_policies: Vec<PlannedPolicy>,
    pub issues: Vec<GatewayRouterIssue>,
}

impl GatewayRouterPlan {
    /// Planned rows of every table.
    pub fn row_count(&self) -> usize {
        let switch = |s: &PlannedSwitch| 1 + s.ports.len();
        self.transit.as_ref().map_or(0, switch)
            + usize::from(self.cluster_port.is_some())
            + self
                .routers
                .values()
                .map(|r| {
                    1 + r.ports.len()
                        + r.ports
                            .values()
                            .map(|p| p.gateway_chassis.len())
                            .sum::<usize>()
                        + r.nat.len()
                        + r.static_routes.len()
                        + switch(&r.external_switch)
                })
                .sum::<usize>()
            + self.cluster_policies.len()
    }
}

/// A node left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum GatewayRouterIssue {
    #[error("node {node}: field chassis is empty (the node has no OVN chassis yet)")]
    NoChassis { node: String },
    #[error("node {node}: field transit_ip {ip} is outside the transit network {transit}")]
    TransitOutside {
        node: String,
        ip: Ipv4Addr,
        transit: Ipv4Net,
    },
    #[error("node {node}: field transit_ip {ip} is already used by {holder}")]
    TransitTaken {
        node: String,
        ip: Ipv4Addr,
        holder: String,
    },
    #[error("node {node}: field next_hop {next_hop} is not on-link in {external}")]
    NextHopOffLink {
        node: String,
        next_hop: Ipv4Addr,
        external: Ipv4Net,
    },
    #[error("node {node}: field physnet is empty")]
    NoPhysnet { node: String },
    #[error("node {node} is listed twice")]
    DuplicateNode { node: String },
    #[error("cluster_transit_ip {ip} is outside the transit network {transit}")]
    ClusterTransitOutside { ip: Ipv4Addr, transit: Ipv4Net },
}

fn router_type_port(
    name: &str,
    router_port: &str,
    key: &str,
    extra: &[(&str, &str)],
) -> PlannedSwitchPort {
    let mut options = StrMap::new();
    options.insert("router-port".into(), router_port.into());
    PlannedSwitchPort {
        name: name.into(),
        type_: "router".into(),
        addresses: vec!["router".into()],
        port_security: Vec::new(),
        options,
        tag: None,
        external_ids: owned_ids(key, extra),
    }
}

fn router_port(name: &str, net: Ipv4Net, extra: &[(&str, &str)]) -> PlannedRouterPort {
    PlannedRouterPort {
        name: name.into(),
        mac: router_port_mac(name).to_string(),
        networks: vec![net.to_string()],
        external_ids: owned_ids(&format!("lrp/{name}"), extra),
        gateway_chassis: Vec::new(),
    }
}

fn empty_switch(name: &str, extra: &[(&str, &str)]) -> PlannedSwitch {
    PlannedSwitch {
        name: name.into(),
        other_config: StrMap::new(),
        external_ids: owned_ids(&format!("ls/{name}"), extra),
        ports: BTreeMap::new(),
        acls: BTreeMap::new(),
        lb_groups: BTreeSet::new(),
    }
}

fn route(router: &str, prefix: &str, nexthop: Ipv4Addr, node: &str) -> PlannedStaticRoute {
    PlannedStaticRoute {
        ip_prefix: prefix.into(),
        nexthop: nexthop.to_string(),
        policy: None,
        route_table: String::new(),
        external_ids: owned_ids(
            &format!("lrsr/{router}//dst-ip/{prefix}/{nexthop}"),
            &[("node", node), ("gateway", "ovn-gateway-router")],
        ),
    }
}

/// Plans the gateway routers. Pure and deterministic (independent of the order of
/// `inputs.nodes` and of each node's lists).
pub fn plan_gateway_routers(inputs: &GatewayRouterInputs) -> GatewayRouterPlan {
    let mut out = GatewayRouterPlan::default();
    if !inputs.transit.contains(&inputs.cluster_transit_ip) {
        out.issues.push(GatewayRouterIssue::ClusterTransitOutside {
            ip: inputs.cluster_transit_ip,
            transit: inputs.transit,
        });
        return out;
    }
    let mut nodes: Vec<&NodeEgress> = inputs.nodes.iter().collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut transit_taken: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    transit_taken.insert(inputs.cluster_transit_ip, inputs.cluster_router.clone());
    let prefix = inputs.transit.prefix_len();
    let mut transit = empty_switch(TRANSIT_SWITCH, &[("gateway", "ovn-gateway-router")]);
    let mut cluster_cidrs: Vec<Ipv4Net> = inputs.cluster_cidrs.iter().map(|c| c.trunc()).collect();
    cluster_cidrs.sort();
    cluster_cidrs.dedup();

    for n in nodes {
        let node = n.node.as_str();
        if !seen.insert(node) {
            out.issues
                .push(GatewayRouterIssue::DuplicateNode { node: node.into() });
            continue;
        }
        if n.chassis.trim().is_empty() {
            out.issues
                .push(GatewayRouterIssue::NoChassis { node: node.into() });
            continue;
        }
        if n.physnet.trim().is_empty() {
            out.issues
                .push(GatewayRouterIssue::NoPhysnet { node: node.into() });
            continue;
        }
        if !inputs.transit.contains(&n.transit_ip)
            || n.transit_ip == inputs.transit.network()
            || n.transit_ip == inputs.transit.broadcast()
        {
            out.issues.push(GatewayRouterIssue::TransitOutside {
                node: node.into(),
                ip: n.transit_ip,
                transit: inputs.transit,
            });
            continue;
        }
        if let Some(holder) = transit_taken.get(&n.transit_ip) {
            out.issues.push(GatewayRouterIssue::TransitTaken {
                node: node.into(),
                ip: n.transit_ip,
                holder: holder.clone(),
            });
            continue;
        }
        if !n.external.contains(&n.next_hop) || n.next_hop == n.external.addr() {
            out.issues.push(GatewayRouterIssue::NextHopOffLink {
                node: node.into(),
                next_hop: n.next_hop,
                external: n.external,
            });
            continue;
        }
        transit_taken.insert(n.transit_ip, names::router(node));

        let name = names::router(node);
        let tag: [(&str, &str); 2] = [("node", node), ("gateway", "ovn-gateway-router")];
        let options: StrMap = ROUTER_OPTIONS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut ports = BTreeMap::new();
        let lrp_transit = names::transit_router_port(node);
        let lrp_ext = names::external_router_port(node);
        let transit_net = Ipv4Net::new(n.transit_ip, prefix).unwrap_or(inputs.transit);
        ports.insert(
            lrp_transit.clone(),
            router_port(&lrp_transit, transit_net, &tag),
        );
        let mut ext_port = router_port(&lrp_ext, n.external, &tag);
        ext_port.gateway_chassis.push(PlannedGatewayChassis {
            name: format!("{lrp_ext}-{}", n.chassis),
            chassis_name: n.chassis.clone(),
            priority: GATEWAY_CHASSIS_PRIORITY,
            // keyed by port: a new chassis updates the row in place
            external_ids: owned_ids(&format!("gwc/{lrp_ext}"), &tag),
        });
        ports.insert(lrp_ext.clone(), ext_port);

        let mut snat: Vec<Ipv4Net> = n.snat_cidrs.iter().map(|c| c.trunc()).collect();
        snat.sort();
        snat.dedup();
        let nat = snat
            .iter()
            .map(|c| PlannedNat {
                type_: "snat".into(),
                logical_ip: c.to_string(),
                external_ip: n.external.addr().to_string(),
                external_ids: owned_ids(&format!("nat/{name}/snat/{c}"), &tag),
            })
            .collect();
        let mut static_routes = vec![route(&name, "0.0.0.0/0", n.next_hop, node)];
        for c in &cluster_cidrs {
            static_routes.push(route(
                &name,
                &c.to_string(),
                inputs.cluster_transit_ip,
                node,
            ));
        }

        let ext_name = names::external_switch(node);
        let mut ext = empty_switch(&ext_name, &tag);
        let ln = names::localnet_port(node);
        let mut ln_options = StrMap::new();
        ln_options.insert("network_name".into(), n.physnet.clone());
        ext.ports.insert(
            ln.clone(),
            PlannedSwitchPort {
                name: ln.clone(),
                type_: "localnet".into(),
                addresses: vec!["unknown".into()],
                port_security: Vec::new(),
                options: ln_options,
                tag: None,
                external_ids: owned_ids(&format!("lsp/{ln}"), &tag),
            },
        );
        let ext_lsp = names::external_switch_port(node);
        ext.ports.insert(
            ext_lsp.clone(),
            router_type_port(&ext_lsp, &lrp_ext, &format!("lsp/{ext_lsp}"), &tag),
        );
        let t_lsp = names::transit_switch_port(&lrp_transit);
        transit.ports.insert(
            t_lsp.clone(),
            router_type_port(&t_lsp, &lrp_transit, &format!("lsp/{t_lsp}"), &tag),
        );

        let mut pods: Vec<Ipv4Addr> = n.pod_ips.clone();
        pods.sort();
        pods.dedup();
        if !pods.is_empty() {
            let set: Vec<String> = pods.iter().map(ToString::to_string).collect();
            out.cluster_policies.push(PlannedPolicy {
                priority: POLICY_PRIORITY,
                match_: format!("ip4.src == {{{}}}", set.join(", ")),
                action: "reroute".into(),
                nexthops: vec![IpAddr::V4(n.transit_ip).to_string()],
                // keyed by node, not match: a new pod updates the row in place
                external_ids: owned_ids(
                    &format!(
                        "lrp-policy/{}/{POLICY_PRIORITY}/gateway/{node}/ip4",
                        inputs.cluster_router
                    ),
                    &tag,
                ),
            });
        }
        out.routers.insert(
            name.clone(),
            GatewayRouter {
                name: name.clone(),
                node: node.into(),
                options,
                external_ids: owned_ids(&format!("lr/{name}"), &tag),
                ports,
                nat,
                static_routes,
                external_switch: ext,
            },
        );
    }
    if !out.routers.is_empty() {
        let lrp = names::cluster_transit_router_port(&inputs.cluster_router);
        let net = Ipv4Net::new(inputs.cluster_transit_ip, prefix).unwrap_or(inputs.transit);
        out.cluster_port = Some(router_port(&lrp, net, &[("gateway", "ovn-gateway-router")]));
        let t_lsp = names::transit_switch_port(&lrp);
        transit.ports.insert(
            t_lsp.clone(),
            router_type_port(
                &t_lsp,
                &lrp,
                &format!("lsp/{t_lsp}"),
                &[("gateway", "ovn-gateway-router")],
            ),
        );
        out.transit = Some(transit);
    }
    out.issues.sort();
    out
}

fn default_transit() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 65, 0, 0), 16).unwrap_or_default()
}

/// `ip`'s offset in `from`, at the same offset in `to`; `None` when it does not fit.
fn shift(ip: Ipv4Addr, from: Ipv4Net, to: Ipv4Net) -> Option<Ipv4Addr> {
    let off = u32::from(ip).checked_sub(u32::from(from.network()))?;
    let addr = Ipv4Addr::from(u32::from(to.network()).checked_add(off)?);
    to.contains(&addr).then_some(addr)
}

/// The default VPC's gateway routers for the nodes of `desired.ovn_egress`, merged into `out`.
/// Runs after the distributed gateway: it reads the planned join ports and pod ports. Each
/// node's transit address is its join address moved into the transit network (the cluster
/// router's is the join gateway's), so addresses never move when nodes come and go.
pub(super) fn plan_ovn_egress(
    desired: &Desired,
    subnets: &BTreeMap<&str, &SubnetIntent>,
    out: &mut NbPlan,
) {
    let eg = &desired.ovn_egress;
    if eg.nodes.is_empty() {
        return;
    }
    let Some(join) = desired
        .join_subnet
        .as_deref()
        .and_then(|j| subnets.get(j).copied())
    else {
        return;
    };
    let (Some(join_net), Some(join_gw)) = (join.v4, join.v4_gateway) else {
        return;
    };
    let transit = eg.transit.unwrap_or_else(default_transit);
    let Some(cluster_transit_ip) = shift(join_gw, join_net, transit) else {
        out.issues.push(PlanIssue::GatewayRouter(
            GatewayRouterIssue::ClusterTransitOutside {
                ip: join_gw,
                transit,
            },
        ));
        return;
    };
    let in_vpc: Vec<&SubnetIntent> = subnets
        .values()
        .copied()
        .filter(|s| s.vpc == join.vpc && s.is_ovn() && s.needs_router())
        .filter(|s| out.switches.contains_key(&s.name))
        .collect();
    let join_ports = out.switches.get(&join.name).map(|sw| &sw.ports);
    let mut node_join: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    for n in &desired.nodes {
        let planned = join_ports
            .is_some_and(|p| p.contains_key(&ferrovn_api::names::join_port_name(&n.name)));
        let v4 = n.join_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        });
        if let (true, Some(a)) = (planned, v4) {
            node_join.insert(n.name.as_str(), a);
        }
    }
    let mut pods: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
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
            if let IpAddr::V4(a) = ip {
                pods.entry(p.node.as_str()).or_default().push(*a);
            }
        }
    }
    let snat: Vec<Ipv4Net> = in_vpc
        .iter()
        .filter(|s| s.name != join.name && !s.centralized_gateway)
        .filter(|s| eg.nat_outgoing_subnets.contains(&s.name))
        .filter_map(|s| s.v4)
        .collect();
    let mut nodes = Vec::new();
    for n in &eg.nodes {
        // a node without a join port yet gets its gateway router with its join port
        let Some(join_ip) = node_join.get(n.node.as_str()) else {
            continue;
        };
        let Some(transit_ip) = shift(*join_ip, join_net, transit) else {
            out.issues.push(PlanIssue::GatewayRouter(
                GatewayRouterIssue::TransitOutside {
                    node: n.node.clone(),
                    ip: *join_ip,
                    transit,
                },
            ));
            continue;
        };
        nodes.push(NodeEgress {
            node: n.node.clone(),
            chassis: n.chassis.clone(),
            transit_ip,
            external: n.external,
            next_hop: n.next_hop,
            physnet: n.physnet.clone(),
            snat_cidrs: snat.clone(),
            pod_ips: pods.get(n.node.as_str()).cloned().unwrap_or_default(),
        });
    }
    let inputs = GatewayRouterInputs {
        cluster_router: join.vpc.clone(),
        transit,
        cluster_transit_ip,
        cluster_cidrs: in_vpc.iter().filter_map(|s| s.v4).collect(),
        nodes,
    };
    merge(plan_gateway_routers(&inputs), &inputs.cluster_router, out);
}

fn row_key(ids: &StrMap) -> String {
    ids.get(ROW_KEY).cloned().unwrap_or_default()
}

/// Adds the gateway rows to the rest of the plan (a name the plan already uses keeps its row).
fn merge(plan: GatewayRouterPlan, cluster_router: &str, out: &mut NbPlan) {
    out.issues
        .extend(plan.issues.into_iter().map(PlanIssue::GatewayRouter));
    let Some(cluster) = out.routers.get_mut(cluster_router) else {
        return;
    };
    if let Some(p) = plan.cluster_port {
        cluster.ports.entry(p.name.clone()).or_insert(p);
    }
    for p in plan.cluster_policies {
        cluster.policies.insert(row_key(&p.external_ids), p);
    }
    if let Some(t) = plan.transit {
        out.switches.entry(t.name.clone()).or_insert(t);
    }
    for (name, r) in plan.routers {
        out.switches
            .entry(r.external_switch.name.clone())
            .or_insert(r.external_switch);
        out.routers.entry(name.clone()).or_insert(PlannedRouter {
            name,
            options: r.options,
            external_ids: r.external_ids,
            nat: r
                .nat
                .into_iter()
                .map(|n| (row_key(&n.external_ids), n))
                .collect(),
            ports: r.ports,
            static_routes: r
                .static_routes
                .into_iter()
                .map(|x| (row_key(&x.external_ids), x))
                .collect(),
            policies: BTreeMap::new(),
            lb_groups: BTreeSet::new(),
        });
    }
}

/// The plan as `ovn-nbctl` invocations (argument vectors, in order), for an NB that has the
/// cluster router but none of these rows: what the lab tests and the benchmark, which run no
/// controller, and a by-hand setup use. The controller applies the same rows through its
/// reconciler ([`plan_ovn_egress`]).
pub fn nbctl_commands(plan: &GatewayRouterPlan, cluster_router: &str) -> Vec<Vec<String>> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let add_switch = |cmds: &mut Vec<Vec<String>>, sw: &PlannedSwitch| {
        cmds.push(s(&["--may-exist", "ls-add", &sw.name]));
        for p in sw.ports.values() {
            let mut c = s(&["--may-exist", "lsp-add", &sw.name, &p.name]);
            c.extend(s(&["--", "lsp-set-type", &p.name, &p.type_]));
            c.push("--".into());
            c.push("lsp-set-addresses".into());
            c.push(p.name.clone());
            c.extend(p.addresses.iter().cloned());
            if !p.options.is_empty() {
                c.push("--".into());
                c.push("lsp-set-options".into());
                c.push(p.name.clone());
                c.extend(p.options.iter().map(|(k, v)| format!("{k}={v}")));
            }
            cmds.push(c);
        }
    };
    let add_lrp = |cmds: &mut Vec<Vec<String>>, router: &str, p: &PlannedRouterPort| {
        let mut c = s(&["--may-exist", "lrp-add", router, &p.name, &p.mac]);
        c.extend(p.networks.iter().cloned());
        cmds.push(c);
    };
    if let Some(p) = &plan.cluster_port {
        add_lrp(&mut cmds, cluster_router, p);
    }
    for r in plan.routers.values() {
        cmds.push(s(&["--may-exist", "lr-add", &r.name]));
        if !r.options.is_empty() {
            let mut c = s(&["set", "Logical_Router", &r.name]);
            c.extend(r.options.iter().map(|(k, v)| format!("options:{k}={v}")));
            cmds.push(c);
        }
        for p in r.ports.values() {
            add_lrp(&mut cmds, &r.name, p);
            for g in &p.gateway_chassis {
                cmds.push(s(&[
                    "lrp-set-gateway-chassis",
                    &p.name,
                    &g.chassis_name,
                    &g.priority.to_string(),
                ]));
            }
        }
        for n in &r.nat {
            cmds.push(s(&[
                "--may-exist",
                "lr-nat-add",
                &r.name,
                &n.type_,
                &n.external_ip,
                &n.logical_ip,
            ]));
        }
        for rt in &r.static_routes {
            cmds.push(s(&[
                "--may-exist",
                "lr-route-add",
                &r.name,
                &rt.ip_prefix,
                &rt.nexthop,
            ]));
        }
        add_switch(&mut cmds, &r.external_switch);
    }
    if let Some(t) = &plan.transit {
        add_switch(&mut cmds, t);
    }
    for p in &plan.cluster_policies {
        let mut c = s(&[
            "lr-policy-add",
            cluster_router,
            &p.priority.to_string(),
            &p.match_,
            &p.action,
        ]);
        c.extend(p.nexthops.iter().cloned());
        cmds.push(c);
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn node(name: &str, i: u8) -> NodeEgress {
        NodeEgress {
            node: name.into(),
            chassis: format!("chassis-{name}"),
            transit_ip: Ipv4Addr::new(100, 65, 0, 2 + i),
            external: Ipv4Net::new(Ipv4Addr::new(203, 0, 113, 101 + i), 24).unwrap(),
            next_hop: ip("203.0.113.254"),
            physnet: "ext".into(),
            snat_cidrs: vec![net("10.16.0.0/16")],
            pod_ips: vec![Ipv4Addr::new(10, 16, i, 5), Ipv4Addr::new(10, 16, i, 4)],
        }
    }

    fn inputs(nodes: Vec<NodeEgress>) -> GatewayRouterInputs {
        GatewayRouterInputs {
            cluster_router: "ovn-cluster".into(),
            transit: net("100.65.0.0/16"),
            cluster_transit_ip: ip("100.65.0.1"),
            cluster_cidrs: vec![net("10.16.0.0/16"), net("100.64.0.0/16")],
            nodes,
        }
    }

    #[test]
    fn dpdk_nodes_default_to_the_gateway_router_and_the_annotation_overrides() {
        assert_eq!(
            egress_mode("a", true, None),
            Ok(EgressMode::OvnGatewayRouter)
        );
        assert_eq!(egress_mode("a", false, None), Ok(EgressMode::Kernel));
        assert_eq!(
            egress_mode("a", true, Some("kernel")),
            Ok(EgressMode::Kernel)
        );
        assert_eq!(
            egress_mode("a", false, Some(" ovn-gateway-router ")),
            Ok(EgressMode::OvnGatewayRouter)
        );
        let e = egress_mode("a", true, Some("fast")).unwrap_err();
        assert!(e.to_string().contains(EGRESS_ANNOTATION), "{e}");
        assert!(e.to_string().contains("node a"), "{e}");
    }

    #[test]
    fn one_node_gets_a_bound_router_with_snat_routes_ports_and_a_reroute() {
        let p = plan_gateway_routers(&inputs(vec![node("n1", 0)]));
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        let r = &p.routers["gw-n1"];
        // a distributed router: bound through its external port's gateway chassis, with the
        // option that makes its SNAT one conntrack commit
        assert!(!r.options.contains_key("chassis"), "{:?}", r.options);
        assert_eq!(r.options["ct-commit-all"], "true");
        let gwc = &r.ports["gw-n1-ext"].gateway_chassis;
        assert_eq!(gwc.len(), 1);
        assert_eq!(
            (
                gwc[0].name.as_str(),
                gwc[0].chassis_name.as_str(),
                gwc[0].priority
            ),
            ("gw-n1-ext-chassis-n1", "chassis-n1", 1)
        );
        assert!(r.ports["gw-n1-transit"].gateway_chassis.is_empty());
        assert_eq!(r.ports["gw-n1-transit"].networks, vec!["100.65.0.2/16"]);
        assert_eq!(r.ports["gw-n1-ext"].networks, vec!["203.0.113.101/24"]);
        assert_eq!(
            r.nat,
            vec![PlannedNat {
                type_: "snat".into(),
                logical_ip: "10.16.0.0/16".into(),
                external_ip: "203.0.113.101".into(),
                external_ids: r.nat[0].external_ids.clone(),
            }]
        );
        let routes: Vec<(&str, &str)> = r
            .static_routes
            .iter()
            .map(|x| (x.ip_prefix.as_str(), x.nexthop.as_str()))
            .collect();
        assert_eq!(
            routes,
            vec![
                ("0.0.0.0/0", "203.0.113.254"),
                ("10.16.0.0/16", "100.65.0.1"),
                ("100.64.0.0/16", "100.65.0.1"),
            ]
        );
        let ln = &r.external_switch.ports["ln-ext-n1"];
        assert_eq!(ln.type_, "localnet");
        assert_eq!(ln.options["network_name"], "ext");
        assert_eq!(
            r.external_switch.ports["ext-n1-gw"].options["router-port"],
            "gw-n1-ext"
        );
        let t = p.transit.as_ref().unwrap();
        assert_eq!(
            t.ports["transit-gw-n1-transit"].options["router-port"],
            "gw-n1-transit"
        );
        assert_eq!(
            t.ports["transit-ovn-cluster-transit"].options["router-port"],
            "ovn-cluster-transit"
        );
        assert_eq!(
            p.cluster_port.as_ref().unwrap().networks,
            vec!["100.65.0.1/16"]
        );
        assert_eq!(p.cluster_policies.len(), 1);
        let pol = &p.cluster_policies[0];
        assert_eq!(pol.priority, POLICY_PRIORITY);
        assert_eq!(pol.match_, "ip4.src == {10.16.0.4, 10.16.0.5}");
        assert_eq!(pol.nexthops, vec!["100.65.0.2"]);
        let owned = |ids: &StrMap| ids.get(super::super::OWNER_KEY).is_some();
        assert!(owned(&r.external_ids) && owned(&pol.external_ids));
    }

    #[test]
    fn bad_nodes_are_left_out_with_an_issue_naming_the_field() {
        let mut no_chassis = node("a", 0);
        no_chassis.chassis.clear();
        let mut outside = node("b", 1);
        outside.transit_ip = ip("100.66.0.9");
        let mut taken = node("c", 2);
        taken.transit_ip = ip("100.65.0.1");
        let mut off_link = node("d", 3);
        off_link.next_hop = ip("198.51.100.1");
        let mut no_phys = node("e", 4);
        no_phys.physnet.clear();
        let good = node("f", 5);
        let dup = node("f", 6);
        let p = plan_gateway_routers(&inputs(vec![
            no_chassis, outside, taken, off_link, no_phys, good, dup,
        ]));
        assert_eq!(p.routers.keys().collect::<Vec<_>>(), vec!["gw-f"]);
        let text: Vec<String> = p.issues.iter().map(ToString::to_string).collect();
        for field in [
            "chassis",
            "transit_ip",
            "already used by ovn-cluster",
            "next_hop",
            "physnet",
            "twice",
        ] {
            assert!(text.iter().any(|t| t.contains(field)), "{field}: {text:?}");
        }
        assert_eq!(p.issues.len(), 6);
    }

    #[test]
    fn no_gateway_router_means_no_transit_rows() {
        let p = plan_gateway_routers(&inputs(vec![]));
        assert_eq!(p, GatewayRouterPlan::default());
        let mut i = inputs(vec![node("n", 0)]);
        i.cluster_transit_ip = ip("1.2.3.4");
        let p = plan_gateway_routers(&i);
        assert!(p.routers.is_empty());
        assert!(p.issues[0].to_string().contains("cluster_transit_ip"));
    }

    #[test]
    fn a_node_without_pods_has_its_router_but_no_reroute() {
        let mut n = node("n", 0);
        n.pod_ips.clear();
        let p = plan_gateway_routers(&inputs(vec![n]));
        assert!(p.routers.contains_key("gw-n"));
        assert!(p.cluster_policies.is_empty());
    }

    #[test]
    fn nbctl_commands_bind_the_router_and_add_nat_and_the_policy() {
        let p = plan_gateway_routers(&inputs(vec![node("n1", 0)]));
        let cmds: Vec<String> = nbctl_commands(&p, "ovn-cluster")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        let has = |s: &str| cmds.iter().any(|c| c.contains(s));
        assert!(
            has("set Logical_Router gw-n1 options:ct-commit-all=true"),
            "{cmds:#?}"
        );
        assert!(!has("options:chassis"), "{cmds:#?}");
        assert!(has("lrp-set-gateway-chassis gw-n1-ext chassis-n1 1"));
        // the port exists before its gateway chassis
        let lrp = cmds
            .iter()
            .position(|c| c.contains("lrp-add gw-n1 gw-n1-ext"));
        let gwc = cmds
            .iter()
            .position(|c| c.contains("lrp-set-gateway-chassis"));
        assert!(lrp.unwrap() < gwc.unwrap());
        assert!(has("lr-nat-add gw-n1 snat 203.0.113.101 10.16.0.0/16"));
        assert!(has("lr-route-add gw-n1 0.0.0.0/0 203.0.113.254"));
        assert!(has("lsp-set-options ln-ext-n1 network_name=ext"));
        assert!(has(
            "lr-policy-add ovn-cluster 29500 ip4.src == {10.16.0.4, 10.16.0.5} reroute 100.65.0.2"
        ));
        // the cluster router's transit port comes before anything peers with it
        let lrp = cmds
            .iter()
            .position(|c| c.contains("lrp-add ovn-cluster ovn-cluster-transit"));
        let lsp = cmds
            .iter()
            .position(|c| c.contains("router-port=ovn-cluster-transit"));
        assert!(lrp.unwrap() < lsp.unwrap());
    }

    // Independent model: which gateway (by transit address) a packet from `src` to an address
    // outside the cluster takes, read off the plan the way OVN evaluates policies (highest
    // priority first), versus the intent (the node owning `src`).
    fn gateway_of(plan: &GatewayRouterPlan, src: Ipv4Addr) -> Option<String> {
        let mut pols: Vec<&PlannedPolicy> = plan.cluster_policies.iter().collect();
        pols.sort_by_key(|p| std::cmp::Reverse(p.priority));
        pols.into_iter()
            .find(|p| {
                let inner = p
                    .match_
                    .trim_start_matches("ip4.src == {")
                    .trim_end_matches('}');
                inner.split(", ").any(|a| a == src.to_string())
            })
            .map(|p| p.nexthops[0].clone())
    }

    proptest! {
        #[test]
        fn every_pod_leaves_through_its_own_nodes_router_in_any_order(
            pods in proptest::collection::vec((0u8..5, 0u8..200), 0..40),
            rot in 0usize..5,
        ) {
            let mut nodes: Vec<NodeEgress> = (0..5u8)
                .map(|i| {
                    let mut n = node(&format!("n{i}"), i);
                    n.pod_ips = pods
                        .iter()
                        .filter(|(k, _)| *k == i)
                        .map(|(_, h)| Ipv4Addr::new(10, 16, i, *h))
                        .collect();
                    n
                })
                .collect();
            let a = plan_gateway_routers(&inputs(nodes.clone()));
            nodes.rotate_left(rot);
            for n in &mut nodes {
                n.pod_ips.reverse();
            }
            let b = plan_gateway_routers(&inputs(nodes));
            prop_assert_eq!(&a, &b);
            prop_assert!(a.issues.is_empty());
            for (k, h) in &pods {
                let src = Ipv4Addr::new(10, 16, *k, *h);
                let want = Ipv4Addr::new(100, 65, 0, 2 + k).to_string();
                prop_assert_eq!(gateway_of(&a, src), Some(want));
            }
            // rows: fixed per node, one policy per node with pods, never per pod
            let with_pods: BTreeSet<u8> = pods.iter().map(|(k, _)| *k).collect();
            prop_assert_eq!(a.cluster_policies.len(), with_pods.len());
            // per router: itself, 2 ports, 1 gateway chassis, 1 NAT, 3 routes, its switch + 2
            // ports; once: the transit switch + 6 ports and the cluster router's port
            prop_assert_eq!(a.row_count(), 1 + 6 + 1 + 5 * (1 + 2 + 1 + 1 + 3 + 3) + with_pods.len());
        }
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DPDK: (&str, &str) = (DP_TYPE_LABEL, "userspace");
    const EXT: (&str, &str) = (EXTERNAL_IP_ANNOTATION, "203.0.113.101/24");
    const HOP: (&str, &str) = (NEXT_HOP_ANNOTATION, "203.0.113.10");

    #[test]
    fn node_settings_choose_the_gateway_router_only_with_an_uplink() {
        // a DPDK node naming its uplink: the gateway router, chassis = node name, physnet ext
        let e = node_egress("d", &map(&[DPDK]), &map(&[EXT, HOP]), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.chassis.as_str(), e.physnet.as_str()),
            ("d", DEFAULT_PHYSNET)
        );
        assert_eq!(e.external, net("203.0.113.101/24"));
        assert_eq!(e.next_hop, ip("203.0.113.10"));
        // the published chassis and physnet are used
        let e = node_egress(
            "d",
            &map(&[DPDK]),
            &map(&[EXT, HOP, (PHYSNET_ANNOTATION, "up0")]),
            Some("ch-1"),
        )
        .unwrap()
        .unwrap();
        assert_eq!((e.chassis.as_str(), e.physnet.as_str()), ("ch-1", "up0"));
        // a DPDK node without its uplink, a kernel node with one, a DPDK node opted out: kernel
        assert_eq!(
            node_egress("d", &map(&[DPDK]), &map(&[EXT]), None),
            Ok(None)
        );
        assert_eq!(
            node_egress("k", &map(&[]), &map(&[EXT, HOP]), None),
            Ok(None)
        );
        let out = map(&[EXT, HOP, (EGRESS_ANNOTATION, "kernel")]);
        assert_eq!(node_egress("d", &map(&[DPDK]), &out, None), Ok(None));
        // a kernel node asking for it gets it
        let ask = map(&[EXT, HOP, (EGRESS_ANNOTATION, "ovn-gateway-router")]);
        assert!(node_egress("k", &map(&[]), &ask, None).unwrap().is_some());
    }

    #[test]
    fn bad_node_settings_name_the_node_and_the_annotation() {
        let ask = (EGRESS_ANNOTATION, "ovn-gateway-router");
        let e = node_egress("k", &map(&[]), &map(&[ask, EXT]), None).unwrap_err();
        assert!(
            e.to_string().contains("node k") && e.to_string().contains(NEXT_HOP_ANNOTATION),
            "{e}"
        );
        let bad_ext = (EXTERNAL_IP_ANNOTATION, "203.0.113.101");
        let e = node_egress("d", &map(&[DPDK]), &map(&[bad_ext, HOP]), None).unwrap_err();
        assert!(
            e.to_string().contains("node d")
                && e.to_string().contains(EXTERNAL_IP_ANNOTATION)
                && e.to_string().contains("203.0.113.101"),
            "{e}"
        );
        let bad_hop = (NEXT_HOP_ANNOTATION, "gw");
        let e = node_egress("d", &map(&[DPDK]), &map(&[EXT, bad_hop]), None).unwrap_err();
        assert!(e.to_string().contains(NEXT_HOP_ANNOTATION), "{e}");
        let bad_pn = (PHYSNET_ANNOTATION, "a:b");
        let e = node_egress("d", &map(&[DPDK]), &map(&[EXT, HOP, bad_pn]), None).unwrap_err();
        assert!(e.to_string().contains(PHYSNET_ANNOTATION), "{e}");
    }

    fn cluster_with_pods() -> Desired {
        use crate::ipam::MacAddr;
        use crate::plan::{NodeIntent, PortIntent, VpcIntent};
        let mut d = Desired {
            vpcs: vec![VpcIntent {
                name: "ovn-cluster".into(),
                ..Default::default()
            }],
            subnets: vec![
                SubnetIntent::overlay("join", "ovn-cluster", Some(net("100.64.0.0/16")), None),
                SubnetIntent::overlay(
                    "ovn-default",
                    "ovn-cluster",
                    Some(net("10.16.0.0/16")),
                    None,
                ),
                SubnetIntent::overlay("routed", "ovn-cluster", Some(net("10.17.0.0/16")), None),
            ],
            join_subnet: Some("join".into()),
            ..Default::default()
        };
        for (i, n) in ["n1", "n2"].iter().enumerate() {
            d.nodes.push(NodeIntent {
                name: (*n).into(),
                join_ips: vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, 7 + i as u8))],
                join_mac: Some(MacAddr([0x0a, 0x58, 0x64, 0x40, 0, 7 + i as u8])),
                internal_ips: vec![],
            });
        }
        for (pod, node, subnet, addr, m) in [
            ("a", "n1", "ovn-default", "10.16.0.5", 5),
            ("b", "n2", "ovn-default", "10.16.0.6", 6),
            ("c", "n1", "routed", "10.17.0.5", 7),
        ] {
            d.ports.push(PortIntent {
                pod: pod.into(),
                namespace: "default".into(),
                provider: "ovn".into(),
                subnet: subnet.into(),
                node: node.into(),
                mac: MacAddr([0x0a, 0x58, 0, 0, 0, m]),
                ips: vec![IpAddr::V4(ip(addr))],
                port_security: false,
            });
        }
        d
    }

    #[test]
    fn the_controller_plan_holds_the_gateway_router_of_each_chosen_node() {
        let mut d = cluster_with_pods();
        let before = crate::plan::plan(&d);
        assert!(!before.routers.contains_key("gw-n1"));
        d.ovn_egress = OvnEgressIntent {
            transit: None,
            nodes: vec![NodeEgressIntent {
                node: "n1".into(),
                chassis: "ch-n1".into(),
                external: net("203.0.113.101/24"),
                next_hop: ip("203.0.113.10"),
                physnet: "ext".into(),
            }],
            nat_outgoing_subnets: ["ovn-default".to_string()].into(),
        };
        let p = crate::plan::plan(&d);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        let gw = &p.routers["gw-n1"];
        assert_eq!(
            gw.ports["gw-n1-ext"].gateway_chassis[0].chassis_name,
            "ch-n1"
        );
        // natOutgoing subnets are SNATed, `routed` leaves with its pod addresses
        let nat: Vec<(&str, &str)> = gw
            .nat
            .values()
            .map(|n| (n.logical_ip.as_str(), n.external_ip.as_str()))
            .collect();
        assert_eq!(nat, vec![("10.16.0.0/16", "203.0.113.101")]);
        // transit address = join address at the same offset; the cluster router's = join gw's
        assert_eq!(
            gw.ports["gw-n1-transit"].networks,
            vec!["100.65.0.7/16".to_string()]
        );
        let cluster = &p.routers["ovn-cluster"];
        assert_eq!(
            cluster.ports["ovn-cluster-transit"].networks,
            vec!["100.65.0.1/16".to_string()]
        );
        let pol: Vec<&PlannedPolicy> = cluster
            .policies
            .values()
            .filter(|p| p.priority == POLICY_PRIORITY)
            .collect();
        assert_eq!(pol.len(), 1);
        assert_eq!(pol[0].match_, "ip4.src == {10.16.0.5, 10.17.0.5}");
        assert_eq!(pol[0].nexthops, vec!["100.65.0.7".to_string()]);
        assert!(p.switches.contains_key("ext-n1") && p.switches.contains_key(TRANSIT_SWITCH));
        // n2 is not chosen: no router for it; every added row is FerrOVN's and counted
        assert!(!p.routers.contains_key("gw-n2"));
        assert!(p.row_count() > before.row_count());
        // and the rest of the plan is what it was
        assert_eq!(p.switches["ovn-default"], before.switches["ovn-default"]);
    }
}
