//! Typed access to the annotations Kube-OVN users and controllers put on pods, namespaces and
//! nodes. Every key is `<provider>.kubernetes.io/<name>`: the provider is `ovn` for the pod's
//! primary network (`ovn.kubernetes.io/ip_address`) and `<nad>.<namespace>.ovn` for an attachment
//! through a NetworkAttachmentDefinition (`dpdk-net.default.ovn.kubernetes.io/ip_address`).
//!
//! Readers return `Ok(None)` for an absent (or empty) annotation and an [`AnnotationError`]
//! naming the key and the bad value for a malformed one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::net::{CidrBlock, DualIp, IpRange, MacAddr, NetParseError, split_list};

/// The provider of the primary (default) network.
pub const OVN_PROVIDER: &str = "ovn";
/// The suffix shared by every provider's annotation keys.
pub const KEY_SUFFIX: &str = ".kubernetes.io/";
/// Node label selecting the datapath: `userspace` (OVS-DPDK) or `kernel`.
pub const OVS_DP_TYPE_LABEL: &str = "ovn.kubernetes.io/ovs_dp_type";

/// A string-keyed annotation or label map, as in `ObjectMeta`.
pub type Annotations = BTreeMap<String, String>;

/// The annotation key `<provider>.kubernetes.io/<name>`.
pub fn annotation_key(provider: &str, name: &str) -> String {
    format!("{provider}{KEY_SUFFIX}{name}")
}

/// The provider of an attachment through the NAD `namespace/name`: `<name>.<namespace>.ovn`.
pub fn attachment_provider(nad_name: &str, nad_namespace: &str) -> String {
    format!("{nad_name}.{nad_namespace}.{OVN_PROVIDER}")
}

/// A malformed annotation: which key, what value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: bad value {value:?}: {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl AnnotationError {
    fn new(key: &str, value: &str, reason: impl fmt::Display) -> Self {
        AnnotationError {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The per-interface pod annotations (each exists once per provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodKey {
    IpAddress,
    MacAddress,
    Allocated,
    Routed,
    LogicalSwitch,
    LogicalRouter,
    IpPool,
    Cidr,
    Gateway,
    Routes,
    IngressRate,
    EgressRate,
    VlanId,
    DefaultRoute,
    PortSecurity,
    SecurityGroups,
    Vip,
    Aaps,
    Eip,
    Snat,
    Bgp,
    Latency,
    Loss,
    Jitter,
    Limit,
    Mirror,
    PodNicType,
}

impl PodKey {
    pub const ALL: [PodKey; 27] = [
        PodKey::IpAddress,
        PodKey::MacAddress,
        PodKey::Allocated,
        PodKey::Routed,
        PodKey::LogicalSwitch,
        PodKey::LogicalRouter,
        PodKey::IpPool,
        PodKey::Cidr,
        PodKey::Gateway,
        PodKey::Routes,
        PodKey::IngressRate,
        PodKey::EgressRate,
        PodKey::VlanId,
        PodKey::DefaultRoute,
        PodKey::PortSecurity,
        PodKey::SecurityGroups,
        PodKey::Vip,
        PodKey::Aaps,
        PodKey::Eip,
        PodKey::Snat,
        PodKey::Bgp,
        PodKey::Latency,
        PodKey::Loss,
        PodKey::Jitter,
        PodKey::Limit,
        PodKey::Mirror,
        PodKey::PodNicType,
    ];

    /// The part after `.kubernetes.io/`.
    pub fn name(self) -> &'static str {
        match self {
            PodKey::IpAddress => "ip_address",
            PodKey::MacAddress => "mac_address",
            PodKey::Allocated => "allocated",
            PodKey::Routed => "routed",
            PodKey::LogicalSwitch => "logical_switch",
            PodKey::LogicalRouter => "logical_router",
            PodKey::IpPool => "ip_pool",
            PodKey::Cidr => "cidr",
            PodKey::Gateway => "gateway",
            PodKey::Routes => "routes",
            PodKey::IngressRate => "ingress_rate",
            PodKey::EgressRate => "egress_rate",
            PodKey::VlanId => "vlan_id",
            PodKey::DefaultRoute => "default_route",
            PodKey::PortSecurity => "port_security",
            PodKey::SecurityGroups => "security_groups",
            PodKey::Vip => "vip",
            PodKey::Aaps => "aaps",
            PodKey::Eip => "eip",
            PodKey::Snat => "snat",
            PodKey::Bgp => "bgp",
            PodKey::Latency => "latency",
            PodKey::Loss => "loss",
            PodKey::Jitter => "jitter",
            PodKey::Limit => "limit",
            PodKey::Mirror => "mirror",
            PodKey::PodNicType => "pod_nic_type",
        }
    }
}

/// Parses a boolean the way Kube-OVN (Go's `strconv.ParseBool`) does.
fn parse_bool(key: &str, value: &str) -> Result<bool, AnnotationError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(AnnotationError::new(key, value, "expected true or false")),
    }
}

fn parse_number<T: FromStr>(key: &str, value: &str, what: &str) -> Result<T, AnnotationError> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| AnnotationError::new(key, value, format!("expected {what}")))
}

fn net_err(key: &str, value: &str, e: NetParseError) -> AnnotationError {
    AnnotationError::new(key, value, e)
}

/// A route from the `routes` annotation: `[{"dst": "192.168.0.0/24", "gw": "10.16.0.254"}]`.
/// A missing `dst` is the default route; a missing `gw` means the subnet gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Option<IpNet>,
    pub gw: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
struct RouteJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    dst: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    gw: String,
}

/// Formats routes as the `routes` annotation value.
pub fn routes_to_json(routes: &[Route]) -> String {
    let raw: Vec<RouteJson> = routes
        .iter()
        .map(|r| RouteJson {
            dst: r.dst.map(|d| d.to_string()).unwrap_or_default(),
            gw: r.gw.map(|g| g.to_string()).unwrap_or_default(),
        })
        .collect();
    serde_json::to_string(&raw).unwrap_or_else(|_| "[]".to_string())
}

/// The `ip_pool` annotation: the name of an IPPool object, or a list of candidate addresses
/// (comma-separated; `;` separates dual-stack groups, e.g. `10.16.0.5,fd00::5;10.16.0.6,fd00::6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpPoolRef {
    Named(String),
    Addresses(Vec<IpAddr>),
}

/// `pod_nic_type`: how the pod's interface is plumbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodNicType {
    VethPair,
    InternalPort,
    DpdkPort,
    OffloadPort,
}

impl PodNicType {
    pub fn as_str(self) -> &'static str {
        match self {
            PodNicType::VethPair => "veth-pair",
            PodNicType::InternalPort => "internal-port",
            PodNicType::DpdkPort => "dpdk-port",
            PodNicType::OffloadPort => "offload-port",
        }
    }
}

impl FromStr for PodNicType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "veth-pair" => Ok(PodNicType::VethPair),
            "internal-port" => Ok(PodNicType::InternalPort),
            "dpdk-port" => Ok(PodNicType::DpdkPort),
            "offload-port" => Ok(PodNicType::OffloadPort),
            _ => Err("expected veth-pair, internal-port, dpdk-port or offload-port".to_string()),
        }
    }
}

/// Read access to one interface's annotations of a pod (the primary network or one attachment).
#[derive(Debug, Clone, Copy)]
pub struct PodNetwork<'a> {
    annotations: &'a Annotations,
    provider: &'a str,
}

impl<'a> PodNetwork<'a> {
    /// The primary network (`ovn.kubernetes.io/...`).
    pub fn primary(annotations: &'a Annotations) -> Self {
        PodNetwork {
            annotations,
            provider: OVN_PROVIDER,
        }
    }

    /// Any provider, e.g. one from [`attachment_provider`] (`<nad>.<ns>.ovn.kubernetes.io/...`).
    pub fn for_provider(annotations: &'a Annotations, provider: &'a str) -> Self {
        PodNetwork {
            annotations,
            provider,
        }
    }

    pub fn provider(&self) -> &str {
        self.provider
    }

    /// The full key of `key` for this provider.
    pub fn key(&self, key: PodKey) -> String {
        annotation_key(self.provider, key.name())
    }

    /// The raw value, if present.
    pub fn raw(&self, key: PodKey) -> Option<&'a str> {
        self.annotations.get(&self.key(key)).map(String::as_str)
    }

    fn parse<T>(
        &self,
        key: PodKey,
        f: impl FnOnce(&str, &str) -> Result<T, AnnotationError>,
    ) -> Result<Option<T>, AnnotationError> {
        let full = self.key(key);
        match self.annotations.get(&full) {
            // As in Kube-OVN, an empty value means unset (templated manifests write them).
            Some(v) if !v.trim().is_empty() => f(&full, v).map(Some),
            _ => Ok(None),
        }
    }

    fn flag(&self, key: PodKey) -> Result<bool, AnnotationError> {
        Ok(self.parse(key, parse_bool)?.unwrap_or(false))
    }

    /// `ip_address`: the fixed (user-set) or allocated address(es), `"ip"` or `"v4,v6"`.
    pub fn ip_address(&self) -> Result<Option<DualIp>, AnnotationError> {
        self.parse(PodKey::IpAddress, |k, v| {
            DualIp::parse(v).map_err(|e| net_err(k, v, e))
        })
    }

    /// `mac_address`: a unicast MAC.
    pub fn mac_address(&self) -> Result<Option<MacAddr>, AnnotationError> {
        self.parse(PodKey::MacAddress, |k, v| {
            MacAddr::parse_unicast(v.trim()).map_err(|e| net_err(k, v, e))
        })
    }

    /// `allocated`: the controller has written the allocation.
    pub fn allocated(&self) -> Result<bool, AnnotationError> {
        self.flag(PodKey::Allocated)
    }

    /// `routed`: the port is bound and routes are in place.
    pub fn routed(&self) -> Result<bool, AnnotationError> {
        self.flag(PodKey::Routed)
    }

    /// `logical_switch`: the subnet the interface is (to be) attached to.
    pub fn logical_switch(&self) -> Option<&'a str> {
        self.raw(PodKey::LogicalSwitch)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// `logical_router`: the VPC router of the interface.
    pub fn logical_router(&self) -> Option<&'a str> {
        self.raw(PodKey::LogicalRouter)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// `ip_pool`: an IPPool name or a list of candidate addresses.
    pub fn ip_pool(&self) -> Result<Option<IpPoolRef>, AnnotationError> {
        self.parse(PodKey::IpPool, |k, v| {
            let items: Vec<&str> = v
                .split([',', ';'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err(AnnotationError::new(k, v, "empty pool"));
            }
            // As in Kube-OVN: one value that is not an address names an IPPool object (whose
            // name may contain dots); anything else is a list of addresses.
            if items.len() == 1 && IpAddr::from_str(items[0]).is_err() {
                return Ok(IpPoolRef::Named(items[0].to_string()));
            }
            if let Some(bad) = items.iter().find(|i| IpAddr::from_str(i).is_err()) {
                return Err(AnnotationError::new(
                    k,
                    v,
                    format!("{bad:?} is not an IP address"),
                ));
            }
            let ips = items.iter().filter_map(|i| IpAddr::from_str(i).ok());
            Ok(IpPoolRef::Addresses(ips.collect()))
        })
    }

    /// `cidr`: the subnet's CIDR block, as written back by the controller.
    pub fn cidr(&self) -> Result<Option<CidrBlock>, AnnotationError> {
        self.parse(PodKey::Cidr, |k, v| {
            CidrBlock::parse(v).map_err(|e| net_err(k, v, e))
        })
    }

    /// `gateway`: the subnet's gateway(s).
    pub fn gateway(&self) -> Result<Option<DualIp>, AnnotationError> {
        self.parse(PodKey::Gateway, |k, v| {
            DualIp::parse(v).map_err(|e| net_err(k, v, e))
        })
    }

    /// `routes`: extra routes, a JSON list of `{"dst": ..., "gw": ...}`.
    pub fn routes(&self) -> Result<Vec<Route>, AnnotationError> {
        let parsed = self.parse(PodKey::Routes, |k, v| {
            let raw: Vec<RouteJson> = serde_json::from_str(v).map_err(|e| {
                AnnotationError::new(k, v, format!("expected a JSON list of {{dst, gw}}: {e}"))
            })?;
            raw.into_iter()
                .map(|r| {
                    let dst = if r.dst.is_empty() {
                        None
                    } else {
                        Some(IpNet::from_str(&r.dst).map_err(|_| {
                            AnnotationError::new(k, v, format!("dst {:?} is not a CIDR", r.dst))
                        })?)
                    };
                    let gw = if r.gw.is_empty() {
                        None
                    } else {
                        Some(IpAddr::from_str(&r.gw).map_err(|_| {
                            AnnotationError::new(
                                k,
                                v,
                                format!("gw {:?} is not an IP address", r.gw),
                            )
                        })?)
                    };
                    if let (Some(d), Some(g)) = (dst, gw)
                        && matches!(d, IpNet::V4(_)) != g.is_ipv4()
                    {
                        return Err(AnnotationError::new(
                            k,
                            v,
                            format!("dst {d} and gw {g} are of different families"),
                        ));
                    }
                    if dst.is_none() && gw.is_none() {
                        return Err(AnnotationError::new(k, v, "a route needs dst or gw"));
                    }
                    Ok(Route { dst, gw })
                })
                .collect()
        })?;
        Ok(parsed.unwrap_or_default())
    }

    /// `ingress_rate`: the ingress limit in Mbit/s (a whole number).
    pub fn ingress_rate(&self) -> Result<Option<u64>, AnnotationError> {
        self.parse(PodKey::IngressRate, |k, v| {
            parse_number(k, v, "a whole number of Mbit/s")
        })
    }

    /// `egress_rate`: the egress limit in Mbit/s (a whole number).
    pub fn egress_rate(&self) -> Result<Option<u64>, AnnotationError> {
        self.parse(PodKey::EgressRate, |k, v| {
            parse_number(k, v, "a whole number of Mbit/s")
        })
    }

    /// `vlan_id`: 0..=4095.
    pub fn vlan_id(&self) -> Result<Option<u16>, AnnotationError> {
        self.parse(PodKey::VlanId, |k, v| {
            let id: u16 = parse_number(k, v, "a VLAN id 0..4095")?;
            if id > 4095 {
                return Err(AnnotationError::new(k, v, "VLAN id must be 0..4095"));
            }
            Ok(id)
        })
    }

    /// `default_route`: this interface carries the default route (attachments only).
    pub fn default_route(&self) -> Result<Option<bool>, AnnotationError> {
        self.parse(PodKey::DefaultRoute, parse_bool)
    }

    /// `port_security`: enforce the port's MAC/IP on traffic it sends.
    pub fn port_security(&self) -> Result<bool, AnnotationError> {
        self.flag(PodKey::PortSecurity)
    }

    /// `security_groups`: comma-separated SecurityGroup names.
    pub fn security_groups(&self) -> Vec<&'a str> {
        self.raw(PodKey::SecurityGroups)
            .map(split_list)
            .unwrap_or_default()
    }

    /// `vip`: comma-separated Vip object names.
    pub fn vips(&self) -> Vec<&'a str> {
        self.raw(PodKey::Vip).map(split_list).unwrap_or_default()
    }

    /// `aaps`: allowed address pairs (Vip names), comma-separated.
    pub fn aaps(&self) -> Vec<&'a str> {
        self.raw(PodKey::Aaps).map(split_list).unwrap_or_default()
    }

    /// `eip`: the elastic IP bound to the pod.
    pub fn eip(&self) -> Result<Option<IpAddr>, AnnotationError> {
        self.parse(PodKey::Eip, |k, v| parse_number(k, v, "an IP address"))
    }

    /// `snat`: the SNAT address of the pod.
    pub fn snat(&self) -> Result<Option<IpAddr>, AnnotationError> {
        self.parse(PodKey::Snat, |k, v| parse_number(k, v, "an IP address"))
    }

    /// `bgp`: announce the pod IP (`true`, `local` or `cluster`).
    pub fn bgp(&self) -> Option<&'a str> {
        self.raw(PodKey::Bgp).map(str::trim)
    }

    /// `latency`: netem delay in milliseconds.
    pub fn latency_ms(&self) -> Result<Option<u32>, AnnotationError> {
        self.parse(PodKey::Latency, |k, v| {
            parse_number(k, v, "a whole number of milliseconds")
        })
    }

    /// `jitter`: netem jitter in milliseconds.
    pub fn jitter_ms(&self) -> Result<Option<u32>, AnnotationError> {
        self.parse(PodKey::Jitter, |k, v| {
            parse_number(k, v, "a whole number of milliseconds")
        })
    }

    /// `loss`: netem loss in percent, 0..=100.
    pub fn loss_percent(&self) -> Result<Option<f64>, AnnotationError> {
        self.parse(PodKey::Loss, |k, v| {
            let p: f64 = parse_number(k, v, "a percentage 0..100")?;
            if !(0.0..=100.0).contains(&p) {
                return Err(AnnotationError::new(k, v, "loss must be within 0..100"));
            }
            Ok(p)
        })
    }

    /// `limit`: netem queue limit in packets.
    pub fn limit_packets(&self) -> Result<Option<u32>, AnnotationError> {
        self.parse(PodKey::Limit, |k, v| {
            parse_number(k, v, "a whole number of packets")
        })
    }

    /// `mirror`: mirror the port's traffic to the node's mirror interface.
    pub fn mirror(&self) -> Result<bool, AnnotationError> {
        self.flag(PodKey::Mirror)
    }

    /// `pod_nic_type`: `veth-pair`, `internal-port`, `dpdk-port` or `offload-port`.
    pub fn pod_nic_type(&self) -> Result<Option<PodNicType>, AnnotationError> {
        self.parse(PodKey::PodNicType, |k, v| {
            PodNicType::from_str(v).map_err(|r| AnnotationError::new(k, v, r))
        })
    }

    /// Reads every typed annotation of this provider and returns all errors found.
    pub fn check_all(&self) -> Vec<AnnotationError> {
        let mut errors = Vec::new();
        let mut note = |r: Result<(), AnnotationError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        note(self.ip_address().map(drop));
        note(self.mac_address().map(drop));
        note(self.allocated().map(drop));
        note(self.routed().map(drop));
        note(self.ip_pool().map(drop));
        note(self.cidr().map(drop));
        note(self.gateway().map(drop));
        note(self.routes().map(drop));
        note(self.ingress_rate().map(drop));
        note(self.egress_rate().map(drop));
        note(self.vlan_id().map(drop));
        note(self.default_route().map(drop));
        note(self.port_security().map(drop));
        note(self.eip().map(drop));
        note(self.snat().map(drop));
        note(self.latency_ms().map(drop));
        note(self.jitter_ms().map(drop));
        note(self.loss_percent().map(drop));
        note(self.limit_packets().map(drop));
        note(self.mirror().map(drop));
        note(self.pod_nic_type().map(drop));
        errors
    }
}

/// The providers that have any `<provider>.kubernetes.io/allocated` key on a pod, sorted, so a
/// recovering controller finds every interface it allocated.
pub fn allocated_providers(annotations: &Annotations) -> Vec<&str> {
    let suffix = format!("{KEY_SUFFIX}{}", PodKey::Allocated.name());
    annotations
        .keys()
        .filter_map(|k| k.strip_suffix(&suffix))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Namespace annotations: `ovn.kubernetes.io/logical_switch`, `cidr`, `exclude_ips`. Several
/// subnets bound to one namespace are listed comma-separated (`logical_switch`) or
/// `;`-separated (`cidr`, `exclude_ips`), as Kube-OVN writes them.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceNetwork<'a> {
    annotations: &'a Annotations,
}

impl<'a> NamespaceNetwork<'a> {
    pub const LOGICAL_SWITCH: &'static str = "ovn.kubernetes.io/logical_switch";
    pub const CIDR: &'static str = "ovn.kubernetes.io/cidr";
    pub const EXCLUDE_IPS: &'static str = "ovn.kubernetes.io/exclude_ips";

    pub fn new(annotations: &'a Annotations) -> Self {
        NamespaceNetwork { annotations }
    }

    /// The subnet names bound to the namespace.
    pub fn logical_switches(&self) -> Vec<&'a str> {
        self.annotations
            .get(Self::LOGICAL_SWITCH)
            .map(|v| split_list(v))
            .unwrap_or_default()
    }

    /// The CIDR block of each bound subnet.
    pub fn cidrs(&self) -> Result<Vec<CidrBlock>, AnnotationError> {
        let Some(v) = self.annotations.get(Self::CIDR) else {
            return Ok(Vec::new());
        };
        v.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|c| CidrBlock::parse(c).map_err(|e| net_err(Self::CIDR, v, e)))
            .collect()
    }

    /// The excluded addresses of the bound subnets.
    pub fn exclude_ips(&self) -> Result<Vec<IpRange>, AnnotationError> {
        let Some(v) = self.annotations.get(Self::EXCLUDE_IPS) else {
            return Ok(Vec::new());
        };
        v.split([',', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|r| IpRange::parse(r).map_err(|e| net_err(Self::EXCLUDE_IPS, v, e)))
            .collect()
    }
}

/// The datapath a node runs, from the `ovn.kubernetes.io/ovs_dp_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OvsDpType {
    /// OVS-DPDK (`netdev` datapath): pods get vhost-user ports.
    Userspace,
    /// The kernel datapath: pods get veth ports.
    Kernel,
}

/// Node annotations and labels: `ovn.kubernetes.io/chassis`, `tunnel_interface`, `port_name`,
/// the join-subnet allocation (`ip_address`, `mac_address`, `cidr`, `gateway`, `allocated`) and
/// the `ovn.kubernetes.io/ovs_dp_type` label.
#[derive(Debug, Clone, Copy)]
pub struct NodeNetwork<'a> {
    annotations: &'a Annotations,
    labels: &'a Annotations,
}

impl<'a> NodeNetwork<'a> {
    pub const CHASSIS: &'static str = "ovn.kubernetes.io/chassis";
    pub const TUNNEL_INTERFACE: &'static str = "ovn.kubernetes.io/tunnel_interface";
    pub const PORT_NAME: &'static str = "ovn.kubernetes.io/port_name";
    /// FerrOVN: the CIDRs of the default VPC's overlay subnets, which the node routes through
    /// its join port (comma-separated, the controller's view; Kube-OVN's daemon watches the
    /// Subnets itself).
    pub const POD_CIDRS: &'static str = "ferrovn.io/pod-cidrs";
    /// FerrOVN: the CIDRs of the default VPC's `natOutgoing: true` subnets (comma-separated).
    pub const NAT_OUTGOING_CIDRS: &'static str = "ferrovn.io/nat-outgoing-cidrs";
    /// FerrOVN: the Service CIDR(s) (comma-separated), which the node also routes through its
    /// join port so that host processes reach ClusterIPs through OVN's load balancers.
    pub const SERVICE_CIDRS: &'static str = "ferrovn.io/service-cidrs";
    /// FerrOVN: the centralized-gateway subnets this node may carry egress for, with
    /// `natOutgoing: true` (comma-separated `<cidr>` = masquerade to the node's address, or
    /// `<cidr>=<ip>` = SNAT to `<ip>`, `gatewayNode`'s `node:ip` form). Only on the nodes named
    /// in the subnet's `gatewayNode`; those subnets are not in [`Self::NAT_OUTGOING_CIDRS`].
    pub const GATEWAY_SNAT: &'static str = "ferrovn.io/gateway-snat";

    pub fn new(annotations: &'a Annotations, labels: &'a Annotations) -> Self {
        NodeNetwork {
            annotations,
            labels,
        }
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.annotations
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// The OVN chassis name (system-id) of the node.
    pub fn chassis(&self) -> Option<&'a str> {
        self.text(Self::CHASSIS)
    }

    /// The interface carrying Geneve traffic.
    pub fn tunnel_interface(&self) -> Option<&'a str> {
        self.text(Self::TUNNEL_INTERFACE)
    }

    /// The node's logical switch port on the join subnet.
    pub fn port_name(&self) -> Option<&'a str> {
        self.text(Self::PORT_NAME)
    }

    /// [`Self::POD_CIDRS`]; empty when absent.
    pub fn pod_cidrs(&self) -> Result<Vec<IpNet>, AnnotationError> {
        self.cidr_list(Self::POD_CIDRS)
    }

    /// [`Self::NAT_OUTGOING_CIDRS`]; empty when absent.
    pub fn nat_outgoing_cidrs(&self) -> Result<Vec<IpNet>, AnnotationError> {
        self.cidr_list(Self::NAT_OUTGOING_CIDRS)
    }

    /// [`Self::SERVICE_CIDRS`]; empty when absent.
    pub fn service_cidrs(&self) -> Result<Vec<IpNet>, AnnotationError> {
        self.cidr_list(Self::SERVICE_CIDRS)
    }

    /// [`Self::GATEWAY_SNAT`]: each CIDR with its SNAT address (`None`: masquerade); empty when
    /// absent.
    pub fn gateway_snat(&self) -> Result<Vec<(IpNet, Option<IpAddr>)>, AnnotationError> {
        let key = Self::GATEWAY_SNAT;
        let Some(v) = self.text(key) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let bad = |e: String| AnnotationError::new(key, v, format!("{entry:?}: {e}"));
                let (cidr, ip) = match entry.split_once('=') {
                    Some((c, ip)) => (c.trim(), Some(ip.trim())),
                    None => (entry, None),
                };
                let cidr = cidr.parse::<IpNet>().map_err(|e| bad(e.to_string()))?;
                let ip = ip
                    .map(|ip| ip.parse::<IpAddr>().map_err(|e| bad(e.to_string())))
                    .transpose()?;
                if ip.is_some_and(|ip| ip.is_ipv4() != cidr.addr().is_ipv4()) {
                    return Err(bad("SNAT address and CIDR of different families".into()));
                }
                Ok((cidr, ip))
            })
            .collect()
    }

    fn cidr_list(&self, key: &str) -> Result<Vec<IpNet>, AnnotationError> {
        let Some(v) = self.text(key) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|e| AnnotationError::new(key, v, format!("{c:?}: {e}")))
            })
            .collect()
    }

    /// The node's allocation on the join subnet (same keys as a pod's primary network).
    pub fn join(&self) -> PodNetwork<'a> {
        PodNetwork::primary(self.annotations)
    }

    /// The datapath label; `None` when the label is absent.
    pub fn ovs_dp_type(&self) -> Result<Option<OvsDpType>, AnnotationError> {
        match self.labels.get(OVS_DP_TYPE_LABEL).map(|s| s.trim()) {
            None => Ok(None),
            Some("userspace") => Ok(Some(OvsDpType::Userspace)),
            Some("kernel") => Ok(Some(OvsDpType::Kernel)),
            Some(other) => Err(AnnotationError::new(
                OVS_DP_TYPE_LABEL,
                other,
                "expected userspace or kernel",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn primary_static_address_and_mac() {
        let a = ann(&[
            ("ovn.kubernetes.io/ip_address", "10.16.0.15"),
            ("ovn.kubernetes.io/mac_address", "00:00:00:53:6B:B6"),
        ]);
        let p = PodNetwork::primary(&a);
        assert_eq!(p.ip_address().unwrap().unwrap().to_string(), "10.16.0.15");
        assert_eq!(
            p.mac_address().unwrap().unwrap().to_string(),
            "00:00:00:53:6b:b6"
        );
        assert!(!p.allocated().unwrap());
        assert!(p.check_all().is_empty());
    }

    #[test]
    fn node_cidr_lists_parse_and_name_the_bad_entry() {
        let labels = Annotations::new();
        let a = ann(&[
            (NodeNetwork::POD_CIDRS, "10.16.0.0/16, fd00:10:16::/64,"),
            (NodeNetwork::NAT_OUTGOING_CIDRS, "10.16.0.0/16,10.99.0.0"),
        ]);
        let n = NodeNetwork::new(&a, &labels);
        let got: Vec<String> = n
            .pod_cidrs()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(got, ["10.16.0.0/16", "fd00:10:16::/64"]);
        let e = n.nat_outgoing_cidrs().unwrap_err();
        assert_eq!(e.key, NodeNetwork::NAT_OUTGOING_CIDRS);
        assert!(e.reason.contains("10.99.0.0"), "{e}");
        let empty = Annotations::new();
        assert!(
            NodeNetwork::new(&empty, &labels)
                .pod_cidrs()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn gateway_snat_entries_masquerade_or_snat_and_name_the_bad_entry() {
        let labels = Annotations::new();
        let a = ann(&[(
            NodeNetwork::GATEWAY_SNAT,
            "10.18.0.0/16, 10.19.0.0/16=203.0.113.7,",
        )]);
        let got = NodeNetwork::new(&a, &labels).gateway_snat().unwrap();
        assert_eq!(
            got,
            [
                ("10.18.0.0/16".parse().unwrap(), None),
                (
                    "10.19.0.0/16".parse().unwrap(),
                    Some("203.0.113.7".parse().unwrap())
                )
            ]
        );
        for bad in ["10.18.0.0/16=fd00::1", "10.18.0.0/16=nope", "10.18/99"] {
            let a = ann(&[(NodeNetwork::GATEWAY_SNAT, bad)]);
            let e = NodeNetwork::new(&a, &labels).gateway_snat().unwrap_err();
            assert_eq!(e.key, NodeNetwork::GATEWAY_SNAT, "{bad}");
        }
    }

    #[test]
    fn attachment_keys_use_the_nad_provider() {
        let provider = attachment_provider("dpdk-net", "default");
        assert_eq!(provider, "dpdk-net.default.ovn");
        let a = ann(&[
            (
                "dpdk-net.default.ovn.kubernetes.io/ip_address",
                "172.18.0.9",
            ),
            ("ovn.kubernetes.io/ip_address", "10.16.0.9"),
        ]);
        let p = PodNetwork::for_provider(&a, &provider);
        assert_eq!(
            p.key(PodKey::IpAddress),
            "dpdk-net.default.ovn.kubernetes.io/ip_address"
        );
        assert_eq!(p.ip_address().unwrap().unwrap().to_string(), "172.18.0.9");
    }

    #[test]
    fn errors_name_key_and_value() {
        let a = ann(&[
            ("ovn.kubernetes.io/ip_address", "10.16.0.300"),
            ("ovn.kubernetes.io/ingress_rate", "10M"),
            ("ovn.kubernetes.io/vlan_id", "4096"),
            ("ovn.kubernetes.io/mac_address", "01:00:5e:00:00:01"),
            (
                "ovn.kubernetes.io/routes",
                "[{\"dst\":\"10.0.0.0/8\",\"gw\":\"fd00::1\"}]",
            ),
            ("ovn.kubernetes.io/pod_nic_type", "tap"),
            ("ovn.kubernetes.io/allocated", "yes"),
        ]);
        let errors = PodNetwork::primary(&a).check_all();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ovn.kubernetes.io/ip_address",
                "ovn.kubernetes.io/mac_address",
                "ovn.kubernetes.io/allocated",
                "ovn.kubernetes.io/routes",
                "ovn.kubernetes.io/ingress_rate",
                "ovn.kubernetes.io/vlan_id",
                "ovn.kubernetes.io/pod_nic_type",
            ]
        );
        let rate = &errors[4];
        assert_eq!(rate.value, "10M");
        assert_eq!(
            rate.to_string(),
            "annotation ovn.kubernetes.io/ingress_rate: bad value \"10M\": expected a whole number of Mbit/s"
        );
    }

    #[test]
    fn routes_round_trip() {
        let a = ann(&[(
            "ovn.kubernetes.io/routes",
            r#"[{"dst":"192.168.0.0/24","gw":"10.16.0.254"},{"gw":"10.16.0.1"}]"#,
        )]);
        let routes = PodNetwork::primary(&a).routes().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].dst, None);
        let json = routes_to_json(&routes);
        let again = ann(&[("ovn.kubernetes.io/routes", json.as_str())]);
        assert_eq!(PodNetwork::primary(&again).routes().unwrap(), routes);
    }

    #[test]
    fn ip_pool_forms() {
        let named = ann(&[("ovn.kubernetes.io/ip_pool", "pool-1")]);
        assert_eq!(
            PodNetwork::primary(&named).ip_pool().unwrap(),
            Some(IpPoolRef::Named("pool-1".into()))
        );
        let list = ann(&[(
            "ovn.kubernetes.io/ip_pool",
            "10.16.0.5,fd00::5;10.16.0.6,fd00::6",
        )]);
        match PodNetwork::primary(&list).ip_pool().unwrap() {
            Some(IpPoolRef::Addresses(v)) => assert_eq!(v.len(), 4),
            other => panic!("unexpected {other:?}"),
        }
        let dotted = ann(&[("ovn.kubernetes.io/ip_pool", "pool.v2")]);
        assert_eq!(
            PodNetwork::primary(&dotted).ip_pool().unwrap(),
            Some(IpPoolRef::Named("pool.v2".into()))
        );
        let bad = ann(&[("ovn.kubernetes.io/ip_pool", "10.16.0.5,10.16.0.x")]);
        let e = PodNetwork::primary(&bad).ip_pool().unwrap_err();
        assert!(e.reason.contains("10.16.0.x"), "{e}");
    }

    #[test]
    fn namespace_and_node() {
        let ns = ann(&[
            ("ovn.kubernetes.io/logical_switch", "team-a,team-a-extra"),
            ("ovn.kubernetes.io/cidr", "10.66.0.0/16;10.67.0.0/16"),
            (
                "ovn.kubernetes.io/exclude_ips",
                "10.66.0.1..10.66.0.10;10.67.0.1",
            ),
        ]);
        let n = NamespaceNetwork::new(&ns);
        assert_eq!(n.logical_switches(), ["team-a", "team-a-extra"]);
        assert_eq!(n.cidrs().unwrap().len(), 2);
        assert_eq!(n.exclude_ips().unwrap().len(), 2);

        let annotations = ann(&[("ovn.kubernetes.io/chassis", "c0ffee")]);
        let labels = ann(&[(OVS_DP_TYPE_LABEL, "userspace")]);
        let node = NodeNetwork::new(&annotations, &labels);
        assert_eq!(node.chassis(), Some("c0ffee"));
        assert_eq!(node.ovs_dp_type().unwrap(), Some(OvsDpType::Userspace));
        let bad = ann(&[(OVS_DP_TYPE_LABEL, "netdev")]);
        let e = NodeNetwork::new(&annotations, &bad)
            .ovs_dp_type()
            .unwrap_err();
        assert_eq!(e.key, OVS_DP_TYPE_LABEL);
        assert_eq!(e.value, "netdev");
    }
}
