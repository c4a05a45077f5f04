//! `kubeovn.io/v1` SecurityGroup: OpenStack-style allow/drop rules attached to pod interfaces
//! by the `ovn.kubernetes.io/security_groups` annotation (`<provider>.kubernetes.io/...` for an
//! attachment). The JSON shape is Kube-OVN's, field for field, including its loose typing: the
//! CRD constrains nothing, so every field is a plain string or integer here and the planner
//! (`ferrovn_control::plan::security_group`) reports a bad value by field, one group at a time,
//! instead of a manifest failing to load.

// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A SecurityGroup: the rules every member interface gets, per direction.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "SecurityGroup",
    plural = "security-groups",
    singular = "security-group",
    shortname = "sg",
    derive = "PartialEq",
    status = "SecurityGroupStatus",
    printcolumn(name = "PortGroup", type_ = "string", json_path = ".status.portGroup"),
    printcolumn(
        name = "AllowSameGroupTraffic",
        type_ = "boolean",
        json_path = ".spec.allowSameGroupTraffic"
    )
)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityGroupSpec {
    /// Rules for traffic towards the members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_rules: Vec<SecurityGroupRule>,
    /// Rules for traffic the members send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    /// Members accept everything from each other (and send everything to each other).
    #[serde(skip_serializing_if = "is_false")]
    pub allow_same_group_traffic: bool,
    /// 0 (default): the rules are evaluated with NetworkPolicy (OVN ACL tier 2); 1: after it,
    /// with the BaselineAdminNetworkPolicy (tier 3), reached through a `pass` rule of tier 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub tier: i64,
}

/// One rule. Kube-OVN's field names and values: `ipVersion` `ipv4`/`ipv6`; `protocol` `all`
/// (or empty), `icmp`, `tcp`, `udp`; `priority` 1..=16384, smaller first; `remoteType`
/// `address` (`remoteAddress`: an address or CIDR) or `securityGroup`
/// (`remoteSecurityGroup`: its members' addresses); `portRangeMin..=portRangeMax` for tcp/udp;
/// `policy` `allow`, `drop` (or `deny`), `pass` (tier 0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityGroupRule {
    pub ip_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i64,
    pub remote_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_address: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_security_group: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub port_range_min: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub port_range_max: i64,
    /// The member's own address (or CIDR) the rule is limited to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub source_port_range_min: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub source_port_range_max: i64,
    pub policy: String,
}

/// `status` of a SecurityGroup: Kube-OVN's fields (`portGroup`, `allowSameGroupTraffic`, the
/// per-direction sync flags) plus, FerrOVN's addition, `error`: why the group is not applied
/// (empty when it is).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityGroupStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub port_group: String,
    pub allow_same_group_traffic: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ingress_md5: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub egress_md5: String,
    pub ingress_last_sync_success: bool,
    pub egress_last_sync_success: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}
