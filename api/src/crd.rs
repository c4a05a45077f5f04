//! The `kubeovn.io/v1` custom resources FerrOVN serves: Subnet, Vpc, IP, IPPool, Vlan and
//! ProviderNetwork, all cluster-scoped. JSON field names are Kube-OVN's, so existing manifests
//! and `kubectl get -o yaml` output parse unchanged; fields from newer Kube-OVN releases that we
//! do not model are ignored, not rejected.

// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API group of every FerrOVN/Kube-OVN custom resource.
pub const GROUP: &str = "kubeovn.io";
/// The served and stored version.
pub const VERSION: &str = "v1";
/// `apiVersion` of the custom resources.
pub const API_VERSION: &str = "kubeovn.io/v1";
/// The VPC a subnet belongs to when `spec.vpc` is empty.
pub const DEFAULT_VPC: &str = "ovn-cluster";
/// The cluster's default pod subnet.
pub const DEFAULT_SUBNET: &str = "ovn-default";
/// The node join subnet.
pub const JOIN_SUBNET: &str = "join";

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

// ---------------------------------------------------------------------------------------------
// Conditions

/// The status of a condition, as in core Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// One entry of `status.conditions`. `type` is a string (Kube-OVN uses `Ready`, `Error` and
/// `Validated`; other values from newer releases are kept as they are).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

impl Condition {
    pub const READY: &'static str = "Ready";
    pub const ERROR: &'static str = "Error";
    pub const VALIDATED: &'static str = "Validated";
}

/// Sets a condition the way Kubernetes controllers do: `lastUpdateTime` moves whenever the
/// condition changes, `lastTransitionTime` only when its status flips. Returns whether anything
/// changed, so a caller can skip a no-op status write. `now` is passed in to keep this pure.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: &Time,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status && c.reason == reason && c.message == message {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message.to_string();
        c.last_update_time = Some(now.clone());
        return true;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    });
    true
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

// ---------------------------------------------------------------------------------------------
// Address counts

/// A count of addresses in a status (`v4availableIPs`, ...). IPv6 subnets hold more than 2^64
/// addresses, so it is a u128. It is written as a bare JSON number, as Kube-OVN does; reading
/// also accepts the float form older Kube-OVN wrote (`1.8446744073709552e+19`) and a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IpCount(pub u128);

impl Serialize for IpCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match u64::try_from(self.0) {
            Ok(small) => s.serialize_u64(small),
            Err(_) => s.serialize_u128(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for IpCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IpCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative address count")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IpCount, E> {
                Ok(IpCount(v.into()))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<IpCount, E> {
                Ok(IpCount(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IpCount, E> {
                u128::try_from(v)
                    .map(IpCount)
                    .map_err(|_| E::custom(format!("negative address count {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<IpCount, E> {
                if v.is_finite() && v >= 0.0 {
                    // Saturating float-to-int cast is the intent: the float form is already rounded.
                    Ok(IpCount(v as u128))
                } else {
                    Err(E::custom(format!("invalid address count {v}")))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IpCount, E> {
                v.trim()
                    .parse::<u128>()
                    .map(IpCount)
                    .map_err(|_| E::custom(format!("invalid address count {v:?}")))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<IpCount, E> {
                Ok(IpCount(0))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for IpCount {
    fn schema_name() -> Cow<'static, str> {
        "IpCount".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number" })
    }
}

// ---------------------------------------------------------------------------------------------
// Subnet

/// `spec.protocol` of a Subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    IPv4,
    IPv6,
    Dual,
    /// Kube-OVN's MAC-only underlay subnet (addresses from an external DHCP server). Parsed so
    /// such manifests load; FerrOVN's validation rejects it as unsupported.
    Mac,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::IPv4 => "IPv4",
            Protocol::IPv6 => "IPv6",
            Protocol::Dual => "Dual",
            Protocol::Mac => "Mac",
        })
    }
}

/// `spec.gatewayType` of a Subnet. Empty means distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayType {
    Distributed,
    Centralized,
}

/// A subnet ACL, written into the subnet's logical switch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SubnetAcl {
    /// `from-lport` or `to-lport`.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^(from-lport|to-lport)$"))]
    pub direction: String,
    /// OVN's ACL priority range.
    #[serde(skip_serializing_if = "is_zero_i32")]
    #[schemars(range(min = 0, max = 32767))]
    pub priority: i32,
    #[serde(rename = "match", skip_serializing_if = "String::is_empty")]
    pub match_: String,
    /// One of OVN's ACL actions.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^(allow|allow-related|allow-stateless|drop|reject|pass)$"))]
    pub action: String,
}

/// Source/destination match of a NAT-outgoing policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct NatOutgoingPolicyMatch {
    #[serde(rename = "srcIPs", skip_serializing_if = "String::is_empty")]
    pub src_ips: String,
    #[serde(rename = "dstIPs", skip_serializing_if = "String::is_empty")]
    pub dst_ips: String,
}

/// A NAT-outgoing policy rule (`action`: `nat` or `forward`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct NatOutgoingPolicyRule {
    #[serde(rename = "match")]
    pub match_: NatOutgoingPolicyMatch,
    pub action: String,
}

/// A Subnet: a CIDR block (one logical switch) inside a VPC.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Subnet",
    plural = "subnets",
    shortname = "subnet",
    status = "SubnetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN Subnet: one CIDR block (IPv4, IPv6 or dual stack) in a VPC.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Vpc", type_ = "string", json_path = ".spec.vpc"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidrBlock"),
    printcolumn(name = "Private", type_ = "boolean", json_path = ".spec.private"),
    printcolumn(name = "NAT", type_ = "boolean", json_path = ".spec.natOutgoing"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "GatewayType",
        type_ = "string",
        json_path = ".spec.gatewayType"
    ),
    printcolumn(name = "V4Used", type_ = "number", json_path = ".status.v4usingIPs"),
    printcolumn(
        name = "V4Available",
        type_ = "number",
        json_path = ".status.v4availableIPs"
    ),
    printcolumn(name = "V6Used", type_ = "number", json_path = ".status.v6usingIPs"),
    printcolumn(
        name = "V6Available",
        type_ = "number",
        json_path = ".status.v6availableIPs"
    ),
    printcolumn(name = "ExcludeIPs", type_ = "string", json_path = ".spec.excludeIps")
)]
#[serde(default, rename_all = "camelCase")]
pub struct SubnetSpec {
    /// Whether this is the cluster's default subnet.
    #[serde(skip_serializing_if = "is_false")]
    pub default: bool,
    /// The VPC; empty means `ovn-cluster`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Namespaces whose pods get addresses from this subnet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `"10.16.0.0/16"`, `"fd00::/64"` or `"10.16.0.0/16,fd00::/64"`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cidr_block: String,
    /// Gateway address(es), one per family; empty means the first address of each net.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Addresses never handed out: single IPs or `a..b` ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// `ovn` for the default network, `<nad>.<namespace>.ovn` for an attachment network.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_type: Option<GatewayType>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway_node: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_node_selectors: Vec<LabelSelector>,
    #[serde(skip_serializing_if = "is_false")]
    pub nat_outgoing: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub external_egress_gateway: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    #[schemars(range(max = 32767))]
    pub policy_routing_priority: u32,
    #[serde(rename = "policyRoutingTableID", skip_serializing_if = "is_zero_u32")]
    pub policy_routing_table_id: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    #[schemars(range(max = 65535))]
    pub mtu: u32,
    /// Only traffic from `allowSubnets` (and within the subnet) may reach it.
    #[serde(skip_serializing_if = "is_false")]
    pub private: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_subnets: Vec<String>,
    /// Name of a Vlan object: makes this an underlay subnet.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vlan: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub logical_gateway: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_gateway_check: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_inter_connection: bool,
    #[serde(rename = "enableDHCP", skip_serializing_if = "is_false")]
    pub enable_dhcp: bool,
    #[serde(rename = "dhcpV4Options", skip_serializing_if = "String::is_empty")]
    pub dhcp_v4_options: String,
    #[serde(rename = "dhcpV6Options", skip_serializing_if = "String::is_empty")]
    pub dhcp_v6_options: String,
    #[serde(rename = "enableIPv6RA", skip_serializing_if = "is_false")]
    pub enable_ipv6_ra: bool,
    #[serde(rename = "ipv6RAConfigs", skip_serializing_if = "String::is_empty")]
    pub ipv6_ra_configs: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<SubnetAcl>,
    #[serde(rename = "allowEWTraffic", skip_serializing_if = "is_false")]
    pub allow_ew_traffic: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nat_outgoing_policy_rules: Vec<NatOutgoingPolicyRule>,
    #[serde(
        rename = "u2oInterconnectionIP",
        skip_serializing_if = "String::is_empty"
    )]
    pub u2o_interconnection_ip: String,
    #[serde(rename = "u2oInterconnection", skip_serializing_if = "is_false")]
    pub u2o_interconnection: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_lb: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_ecmp: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_multicast_snoop: bool,
    #[serde(rename = "enableExternalLBAddress", skip_serializing_if = "is_false")]
    pub enable_external_lb_address: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub route_table: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_network: String,
}

/// `status` of a Subnet. The address counts and ranges use Kube-OVN's exact (irregular) names:
/// `v4availableIPs`, `v4availableIPrange`, `v4usingIPs`, `v4usingIPrange`, and v6 likewise.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SubnetStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(rename = "v4availableIPs")]
    pub v4_available_ips: IpCount,
    #[serde(rename = "v4availableIPrange")]
    pub v4_available_ip_range: String,
    #[serde(rename = "v4usingIPs")]
    pub v4_using_ips: IpCount,
    #[serde(rename = "v4usingIPrange")]
    pub v4_using_ip_range: String,
    #[serde(rename = "v6availableIPs")]
    pub v6_available_ips: IpCount,
    #[serde(rename = "v6availableIPrange")]
    pub v6_available_ip_range: String,
    #[serde(rename = "v6usingIPs")]
    pub v6_using_ips: IpCount,
    #[serde(rename = "v6usingIPrange")]
    pub v6_using_ip_range: String,
    #[serde(rename = "activateGateway")]
    pub activate_gateway: String,
    #[serde(rename = "dhcpV4OptionsUUID")]
    pub dhcp_v4_options_uuid: String,
    #[serde(rename = "dhcpV6OptionsUUID")]
    pub dhcp_v6_options_uuid: String,
    #[serde(rename = "u2oInterconnectionIP")]
    pub u2o_interconnection_ip: String,
    #[serde(rename = "u2oInterconnectionMAC")]
    pub u2o_interconnection_mac: String,
    #[serde(rename = "u2oInterconnectionVPC")]
    pub u2o_interconnection_vpc: String,
    #[serde(rename = "mcastQuerierIP")]
    pub mcast_querier_ip: String,
    #[serde(rename = "mcastQuerierMAC")]
    pub mcast_querier_mac: String,
}

impl Subnet {
    /// The VPC this subnet belongs to (`spec.vpc`, or `ovn-cluster` when empty).
    pub fn vpc_name(&self) -> &str {
        if self.spec.vpc.is_empty() {
            DEFAULT_VPC
        } else {
            &self.spec.vpc
        }
    }

    /// The provider (`spec.provider`, or `ovn` when empty).
    pub fn provider(&self) -> &str {
        if self.spec.provider.is_empty() {
            crate::annotations::OVN_PROVIDER
        } else {
            &self.spec.provider
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vpc

/// `policy` of a static route: match on destination (default) or source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RoutePolicy {
    #[serde(rename = "policyDst")]
    Dst,
    #[serde(rename = "policySrc")]
    Src,
}

/// A static route of a VPC's logical router.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct StaticRoute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<RoutePolicy>,
    pub cidr: String,
    #[serde(rename = "nextHopIP")]
    pub next_hop_ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ecmp_mode: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bfd_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub route_table: String,
}

/// `action` of a policy route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyRouteAction {
    Allow,
    Drop,
    Reroute,
}

/// A logical router policy of a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyRoute {
    /// OVN's Logical_Router_Policy priority range.
    #[serde(skip_serializing_if = "is_zero_i32")]
    #[schemars(range(min = 0, max = 32767))]
    pub priority: i32,
    #[serde(rename = "match", skip_serializing_if = "String::is_empty")]
    pub match_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<PolicyRouteAction>,
    #[serde(rename = "nextHopIP", skip_serializing_if = "String::is_empty")]
    pub next_hop_ip: String,
}

/// A peering of this VPC with another one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct VpcPeering {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_vpc: String,
    #[serde(rename = "localConnectIP", skip_serializing_if = "String::is_empty")]
    pub local_connect_ip: String,
}

/// The optional BFD logical router port of a VPC.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct BfdPort {
    pub enabled: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// A VPC: one logical router and its subnets, isolated from other VPCs.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Vpc",
    plural = "vpcs",
    shortname = "vpc",
    status = "VpcStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN VPC: an isolated routing domain with its own logical router.",
    printcolumn(
        name = "EnableExternal",
        type_ = "boolean",
        json_path = ".status.enableExternal"
    ),
    printcolumn(name = "Standby", type_ = "boolean", json_path = ".status.standby"),
    printcolumn(name = "Subnets", type_ = "string", json_path = ".status.subnets"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(
        name = "DefaultSubnet",
        type_ = "string",
        json_path = ".status.defaultLogicalSwitch"
    )
)]
#[serde(default, rename_all = "camelCase")]
pub struct VpcSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_subnet: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_routes: Vec<PolicyRoute>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vpc_peerings: Vec<VpcPeering>,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_external: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_external_subnets: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_bfd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd_port: Option<BfdPort>,
}

/// `status` of a Vpc.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct VpcStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    pub standby: bool,
    pub default: bool,
    pub default_logical_switch: String,
    pub router: String,
    #[serde(rename = "tcpLoadBalancer")]
    pub tcp_load_balancer: String,
    #[serde(rename = "udpLoadBalancer")]
    pub udp_load_balancer: String,
    pub sctp_load_balancer: String,
    #[serde(rename = "tcpSessionLoadBalancer")]
    pub tcp_session_load_balancer: String,
    #[serde(rename = "udpSessionLoadBalancer")]
    pub udp_session_load_balancer: String,
    pub sctp_session_load_balancer: String,
    pub subnets: Vec<String>,
    pub vpc_peerings: Vec<String>,
    pub enable_external: bool,
    pub extra_external_subnets: Vec<String>,
    pub enable_bfd: bool,
}

// ---------------------------------------------------------------------------------------------
// IP

/// An IP object: the record of one pod interface's allocation (named
/// `<pod>.<namespace>` for the primary network, `<pod>.<namespace>.<provider>` for others).
/// Kube-OVN's IP has no status.
#[derive(
    CustomResource, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IP",
    root = "Ip",
    plural = "ips",
    shortname = "ip",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN IP: the allocation of one pod interface.",
    printcolumn(name = "V4IP", type_ = "string", json_path = ".spec.v4IpAddress"),
    printcolumn(name = "V6IP", type_ = "string", json_path = ".spec.v6IpAddress"),
    printcolumn(name = "Mac", type_ = "string", json_path = ".spec.macAddress"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet")
)]
#[serde(default, rename_all = "camelCase")]
pub struct IpSpec {
    pub pod_name: String,
    pub namespace: String,
    pub subnet: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attach_subnets: Vec<String>,
    pub node_name: String,
    /// Comma-separated, IPv4 first for dual stack.
    pub ip_address: String,
    pub v4_ip_address: String,
    pub v6_ip_address: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attach_ips: Vec<String>,
    #[schemars(regex(pattern = r"^$|^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$"))]
    pub mac_address: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attach_macs: Vec<String>,
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_type: String,
}

impl Ip {
    /// Kube-OVN's IP object name for a pod interface: `<pod>.<namespace>` on the primary
    /// network, `<pod>.<namespace>.<provider>` on an attachment.
    /// The same name as the interface's logical switch port.
    pub fn object_name(pod: &str, namespace: &str, provider: &str) -> String {
        crate::names::lsp_name(pod, namespace, provider)
    }
}

// ---------------------------------------------------------------------------------------------
// IPPool

/// An IPPool: a slice of a subnet reserved for some namespaces (or named by pods through the
/// `ip_pool` annotation). `ips` entries are IPs, CIDRs or `a..b` ranges.
#[derive(
    CustomResource, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IPPool",
    root = "IpPool",
    plural = "ippools",
    shortname = "ippool",
    status = "IpPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN IPPool: a part of a subnet reserved for namespaces or workloads.",
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IPs", type_ = "string", json_path = ".spec.ips")
)]
#[serde(default, rename_all = "camelCase")]
pub struct IpPoolSpec {
    pub subnet: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_address_set: bool,
}

/// `status` of an IPPool (note the capital `A`/`U`, unlike Subnet's status).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct IpPoolStatus {
    #[serde(rename = "v4AvailableIPs")]
    pub v4_available_ips: IpCount,
    #[serde(rename = "v4AvailableIPRange")]
    pub v4_available_ip_range: String,
    #[serde(rename = "v4UsingIPs")]
    pub v4_using_ips: IpCount,
    #[serde(rename = "v4UsingIPRange")]
    pub v4_using_ip_range: String,
    #[serde(rename = "v6AvailableIPs")]
    pub v6_available_ips: IpCount,
    #[serde(rename = "v6AvailableIPRange")]
    pub v6_available_ip_range: String,
    #[serde(rename = "v6UsingIPs")]
    pub v6_using_ips: IpCount,
    #[serde(rename = "v6UsingIPRange")]
    pub v6_using_ip_range: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------
// Vlan

/// A Vlan: an 802.1Q tag on a provider network, referenced by underlay subnets.
#[derive(
    CustomResource, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Vlan",
    plural = "vlans",
    shortname = "vlan",
    status = "VlanStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN Vlan: a VLAN tag on a provider network.",
    printcolumn(name = "ID", type_ = "integer", json_path = ".spec.id"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider")
)]
#[serde(default, rename_all = "camelCase")]
pub struct VlanSpec {
    /// The VLAN tag, 0..=4095 (0: untagged).
    #[schemars(range(min = 0, max = 4095))]
    pub id: i32,
    /// The ProviderNetwork name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Deprecated by Kube-OVN in favour of `id`; read for old manifests.
    #[serde(skip_serializing_if = "is_zero_i32")]
    #[schemars(range(min = 0, max = 4095))]
    pub vlan_id: i32,
    /// Deprecated by Kube-OVN in favour of `provider`; read for old manifests.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider_interface_name: String,
}

/// `status` of a Vlan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct VlanStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Vlan {
    /// The effective tag: `id`, or the deprecated `vlanId` when `id` is 0.
    pub fn tag(&self) -> i32 {
        if self.spec.id == 0 {
            self.spec.vlan_id
        } else {
            self.spec.id
        }
    }

    /// The effective provider network: `provider`, or the deprecated `providerInterfaceName`.
    pub fn provider_network(&self) -> &str {
        if self.spec.provider.is_empty() {
            &self.spec.provider_interface_name
        } else {
            &self.spec.provider
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ProviderNetwork

/// A node-specific interface of a provider network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct CustomInterface {
    pub interface: String,
    pub nodes: Vec<String>,
}

/// A ProviderNetwork: which host NIC carries underlay (VLAN) traffic on which nodes.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "ProviderNetwork",
    plural = "provider-networks",
    singular = "provider-network",
    status = "ProviderNetworkStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kube-OVN ProviderNetwork: the host interface that carries underlay traffic.",
    printcolumn(
        name = "DefaultInterface",
        type_ = "string",
        json_path = ".spec.defaultInterface"
    ),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready")
)]
#[serde(default, rename_all = "camelCase")]
pub struct ProviderNetworkSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_interface: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_interfaces: Vec<CustomInterface>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_nodes: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub exchange_link_name: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub preserve_vlan_interfaces: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlan_interfaces: Vec<String>,
}

/// A per-node condition of a ProviderNetwork.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderNetworkCondition {
    pub node: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// `status` of a ProviderNetwork.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ProviderNetworkStatus {
    pub ready: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ready_nodes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ready_nodes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ProviderNetworkCondition>,
}

impl ProviderNetwork {
    /// The interface this provider network uses on `node`: a custom interface naming the node,
    /// else the default interface. `None` when the node is excluded or no interface applies.
    pub fn interface_for_node(&self, node: &str) -> Option<&str> {
        if self.spec.exclude_nodes.iter().any(|n| n == node) {
            return None;
        }
        self.spec
            .custom_interfaces
            .iter()
            .find(|c| c.nodes.iter().any(|n| n == node))
            .map(|c| c.interface.as_str())
            .or_else(|| {
                (!self.spec.default_interface.is_empty())
                    .then_some(self.spec.default_interface.as_str())
            })
    }
}
