//! `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy and BaselineAdminNetworkPolicy, the
//! cluster administrator's policies around NetworkPolicy. The JSON shape is the upstream
//! network-policy-api v1alpha1 one (with the egress `nodes` and `networks` peers), so upstream
//! manifests parse unchanged. Fields the API server validates by enum (`action`, `protocol`)
//! are strings here: a manifest that bypassed the API server is then rejected by the planner
//! field by field, one policy at a time, instead of failing the whole load.

// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::Condition;

/// The API group of both kinds.
pub const POLICY_GROUP: &str = "policy.networking.k8s.io";
/// `apiVersion` of both kinds.
pub const POLICY_API_VERSION: &str = "policy.networking.k8s.io/v1alpha1";
/// The only name a BaselineAdminNetworkPolicy may have (it is a singleton).
pub const BANP_NAME: &str = "default";
/// Highest `spec.priority` of an AdminNetworkPolicy (lowest precedence).
pub const MAX_ANP_PRIORITY: i32 = 1000;

fn tcp() -> String {
    "TCP".into()
}

/// The pods a policy applies to: exactly one of `namespaces` (every pod of the matching
/// namespaces) or `pods`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AdminPolicySubject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by namespace labels and pod labels (both must match; both required, as upstream).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// One of `portNumber`, `namedPort` (resolved on the destination pod) or `portRange`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AdminPolicyPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<AdminPortNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<AdminPortRange>,
}

/// A destination port of one protocol.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminPortNumber {
    /// TCP (the default), UDP or SCTP.
    #[serde(default = "tcp")]
    #[schemars(extend("enum" = ["TCP", "UDP", "SCTP"]))]
    pub protocol: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Destination ports `start..=end` of one protocol.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminPortRange {
    /// TCP (the default), UDP or SCTP.
    #[serde(default = "tcp")]
    #[schemars(extend("enum" = ["TCP", "UDP", "SCTP"]))]
    pub protocol: String,
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// A source of ingress traffic: exactly one of `namespaces` or `pods`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AdminIngressPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination of egress traffic: exactly one of `namespaces`, `pods`, `nodes` (the nodes'
/// addresses) or `networks` (CIDRs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AdminEgressPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 25))]
    pub networks: Vec<String>,
}

/// An ingress rule of an AdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminIngressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// Allow, Deny or Pass.
    #[schemars(extend("enum" = ["Allow", "Deny", "Pass"]))]
    pub action: String,
    #[schemars(length(min = 1, max = 100))]
    pub from: Vec<AdminIngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub ports: Option<Vec<AdminPolicyPort>>,
}

/// An egress rule of an AdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminEgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// Allow, Deny or Pass.
    #[schemars(extend("enum" = ["Allow", "Deny", "Pass"]))]
    pub action: String,
    #[schemars(length(min = 1, max = 100))]
    pub to: Vec<AdminEgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub ports: Option<Vec<AdminPolicyPort>>,
}

/// `status` of both kinds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AdminPolicyStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An AdminNetworkPolicy: rules ahead of every NetworkPolicy, ordered by `priority` (lower
/// first) and, inside a policy, by rule order.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "AdminNetworkPolicy",
    plural = "adminnetworkpolicies",
    shortname = "anp",
    status = "AdminPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A cluster administrator's network policy, evaluated before NetworkPolicy.",
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicySpec {
    /// 0..=1000; lower values take precedence. Required: a default of 0 would put a policy
    /// missing it ahead of every other.
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    pub subject: AdminPolicySubject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub ingress: Vec<AdminIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub egress: Vec<AdminEgressRule>,
}

/// An ingress rule of the BaselineAdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineIngressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// Allow or Deny.
    #[schemars(extend("enum" = ["Allow", "Deny"]))]
    pub action: String,
    #[schemars(length(min = 1, max = 100))]
    pub from: Vec<AdminIngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub ports: Option<Vec<AdminPolicyPort>>,
}

/// An egress rule of the BaselineAdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineEgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// Allow or Deny.
    #[schemars(extend("enum" = ["Allow", "Deny"]))]
    pub action: String,
    #[schemars(length(min = 1, max = 100))]
    pub to: Vec<AdminEgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub ports: Option<Vec<AdminPolicyPort>>,
}

/// The BaselineAdminNetworkPolicy (a singleton named `default`): rules after NetworkPolicy,
/// for the traffic no NetworkPolicy isolates.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "BaselineAdminNetworkPolicy",
    plural = "baselineadminnetworkpolicies",
    shortname = "banp",
    status = "AdminPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "The cluster's default network policy, evaluated after NetworkPolicy.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicySpec {
    pub subject: AdminPolicySubject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub ingress: Vec<BaselineIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub egress: Vec<BaselineEgressRule>,
}
