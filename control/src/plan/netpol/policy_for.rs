//! Kube-OVN's `ovn.kubernetes.io/network_policy_for` NetworkPolicy annotation: which of the
//! pods' OVN attachments a policy applies to.
//!
//! A pod can have several OVN interfaces: the primary one (provider `ovn`) and one per
//! secondary attachment through a NetworkAttachmentDefinition (provider `<nad>.<ns>.ovn`, e.g.
//! the vhost-user interface of a DPDK pod). Without the annotation a policy applies to every
//! one of them, as in Kube-OVN: each is isolated, and a selector peer stands for the
//! addresses of all of them. With `network_policy_for: "ovn,<ns>/<nad>,…"` only the listed
//! attachments count, on both sides: the policy isolates only those interfaces of the pods it
//! selects, and its selector peers stand only for the addresses of those interfaces of the
//! peer pods (ipBlocks are addresses and stay as written).
//!
//! Which attachment a [`PolicyPod`] is comes from its Logical_Switch_Port name, which the
//! planner derives from the provider (`ferrovn_api::names::lsp_name`): `<pod>.<ns>` for the
//! primary interface, `<pod>.<ns>.<provider>` for a secondary one.

use std::collections::BTreeSet;

use ferrovn_api::annotations::{OVN_PROVIDER, attachment_provider};
use ferrovn_api::names::lsp_name;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{PolicyIssue, PolicyPod};

/// The annotation on a NetworkPolicy.
pub const NETWORK_POLICY_FOR: &str = "ovn.kubernetes.io/network_policy_for";

/// The providers a policy applies to; `None`: every attachment.
pub type Providers = Option<BTreeSet<String>>;

/// Reads the annotation of `policy` (`key` = `<ns>/<name>`). An entry that is neither `ovn`
/// nor `<namespace>/<nad>` is reported and skipped. When no valid entry is left, the policy
/// is reported and applies to every attachment, as without the annotation: a policy must not
/// leave the pods it selects open because of a typo (Kube-OVN applies it to none).
pub fn parse(policy: &NetworkPolicy, key: &str, issues: &mut Vec<PolicyIssue>) -> Providers {
    let raw = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_POLICY_FOR))?
        .trim();
    if raw.is_empty() {
        return None;
    }
    let field = format!("metadata.annotations[{NETWORK_POLICY_FOR}]");
    let mut providers = BTreeSet::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.eq_ignore_ascii_case(OVN_PROVIDER) {
            providers.insert(OVN_PROVIDER.to_string());
            continue;
        }
        match entry.split_once('/') {
            Some((ns, nad)) if !ns.is_empty() && !nad.is_empty() && !nad.contains('/') => {
                providers.insert(attachment_provider(nad, ns));
            }
            _ => issues.push(PolicyIssue {
                policy: key.to_string(),
                field: field.clone(),
                reason: format!("{entry:?} is neither \"ovn\" nor <namespace>/<nad>; skipped"),
            }),
        }
    }
    if providers.is_empty() {
        issues.push(PolicyIssue {
            policy: key.to_string(),
            field,
            reason: format!(
                "{raw:?} names no attachment; the policy applies to every attachment of the \
                 pods it selects"
            ),
        });
        return None;
    }
    Some(providers)
}

/// The provider of the attachment `pod` stands for. A port name the planner did not derive
/// from the pod counts as the primary interface.
pub fn provider_of(pod: &PolicyPod) -> &str {
    if pod.port == lsp_name(&pod.name, &pod.namespace, OVN_PROVIDER) {
        return OVN_PROVIDER;
    }
    pod.port
        .strip_prefix(&pod.name)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_prefix(pod.namespace.as_str()))
        .and_then(|r| r.strip_prefix('.'))
        .filter(|p| !p.is_empty())
        .unwrap_or(OVN_PROVIDER)
}

/// Whether a policy for `providers` applies to the attachment `pod`.
pub fn applies(providers: &Providers, pod: &PolicyPod) -> bool {
    providers
        .as_ref()
        .is_none_or(|set| set.contains(provider_of(pod)))
}
