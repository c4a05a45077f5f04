//! What the policy kinds report back with `--kube`, beyond the controller's log: a Warning
//! Event naming the field for every invalid NetworkPolicy and SecurityGroup and every
//! AdminNetworkPolicy and BaselineAdminNetworkPolicy left out of the plan, and a `Ready`
//! condition on every AdminNetworkPolicy and BaselineAdminNetworkPolicy. The network-policy-api
//! (v1alpha1) defines `status.conditions` as `metav1.Condition`s and leaves their types to the
//! implementation; `Ready` says whether the policy is applied, and why not. Pure planning
//! from the watched objects: whether a policy is valid depends on it alone, not on pods.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::store::{ClusterStore, Kind};
use super::writeback::{PlannedWrite, Target};
use crate::manifest::Object;
use crate::plan::netpol::admin::{
    AdminPolicyInput, anp_port_group_name, banp_port_group_name, plan_admin_policies,
};
use crate::plan::netpol::{PolicyInput, PolicyNamespace, plan_network_policies};
use crate::plan::security_group::{SecurityGroupInput, plan_security_groups};
use ferrovn_api::anp::AdminPolicyStatus;
use ferrovn_api::crd::{ConditionStatus, set_condition};
use ferrovn_api::validate::ObjectRef;

/// The condition type of AdminNetworkPolicy and BaselineAdminNetworkPolicy status.
pub const READY: &str = "Ready";

/// Every invalid NetworkPolicy and SecurityGroup, and every AdminNetworkPolicy and
/// BaselineAdminNetworkPolicy left out of the plan, with its problems in one line (`field:
/// reason; …`), for its Event. An admin policy applied with a warning (a shared priority)
/// gets none: its `Ready` condition carries the warning.
pub fn policy_problems(store: &ClusterStore) -> Vec<(ObjectRef, String)> {
    let mut by_object: BTreeMap<(&'static str, Option<String>, String), Vec<String>> =
        BTreeMap::new();
    let admin = admin_input(store);
    if !(admin.anps.is_empty() && admin.banps.is_empty()) {
        let plan = plan_admin_policies(&admin);
        for i in &plan.issues {
            let (kind, pg) = if i.kind == Kind::AdminNetworkPolicy.name() {
                ("AdminNetworkPolicy", anp_port_group_name(&i.policy))
            } else {
                (
                    "BaselineAdminNetworkPolicy",
                    banp_port_group_name(&i.policy),
                )
            };
            if !plan.port_groups.contains_key(&pg) {
                by_object
                    .entry((kind, None, i.policy.clone()))
                    .or_default()
                    .push(format!("{}: {}", i.field, i.reason));
            }
        }
    }
    let policies: Vec<_> = store
        .of_kind(Kind::NetworkPolicy)
        .filter_map(|o| match o {
            Object::NetworkPolicy(p) => Some((**p).clone()),
            _ => None,
        })
        .collect();
    if !policies.is_empty() {
        let namespaces = store
            .of_kind(Kind::Namespace)
            .filter_map(|o| match o {
                Object::Namespace(n) => Some(PolicyNamespace {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        let plan = plan_network_policies(&PolicyInput {
            policies,
            namespaces,
            ..PolicyInput::default()
        });
        for i in &plan.issues {
            let (ns, name) = i.policy.split_once('/').unwrap_or(("", i.policy.as_str()));
            by_object
                .entry(("NetworkPolicy", Some(ns.to_string()), name.to_string()))
                .or_default()
                .push(format!("{}: {}", i.field, i.reason));
        }
    }
    let groups: Vec<_> = store
        .of_kind(Kind::SecurityGroup)
        .filter_map(|o| match o {
            Object::SecurityGroup(g) => Some((**g).clone()),
            _ => None,
        })
        .collect();
    if !groups.is_empty() {
        let plan = plan_security_groups(&SecurityGroupInput {
            groups,
            ports: Vec::new(),
        });
        for i in &plan.issues {
            if let Some(name) = i.object.strip_prefix("SecurityGroup ") {
                by_object
                    .entry(("SecurityGroup", None, name.to_string()))
                    .or_default()
                    .push(format!("{}: {}", i.field, i.reason));
            }
        }
    }
    by_object
        .into_iter()
        .map(|((kind, namespace, name), problems)| {
            let object = ObjectRef {
                kind: kind.to_string(),
                namespace,
                name,
            };
            let message = format!("{object}: {}", problems.join("; "));
            (object, message)
        })
        .collect()
}

/// The watched AdminNetworkPolicies and BaselineAdminNetworkPolicies, as the planner takes them.
fn admin_input(store: &ClusterStore) -> AdminPolicyInput {
    let mut input = AdminPolicyInput::default();
    for o in store
        .of_kind(Kind::AdminNetworkPolicy)
        .chain(store.of_kind(Kind::BaselineAdminNetworkPolicy))
    {
        match o {
            Object::AdminNetworkPolicy(p) => input.anps.push((**p).clone()),
            Object::BaselineAdminNetworkPolicy(p) => input.banps.push((**p).clone()),
            _ => {}
        }
    }
    input
}

/// The `Ready` condition of every AdminNetworkPolicy and BaselineAdminNetworkPolicy whose
/// status does not say it yet: `True` (reason `Applied`) when the policy is in the plan, with
/// any warning about it (e.g. a shared priority) as the message; `False` (reason
/// `ValidationFailed`) naming the fields when it was left out.
pub fn plan_admin_policy_status_writes(store: &ClusterStore, now: &Time) -> Vec<PlannedWrite> {
    let mut input = AdminPolicyInput::default();
    let mut statuses = Vec::new();
    for o in store
        .of_kind(Kind::AdminNetworkPolicy)
        .chain(store.of_kind(Kind::BaselineAdminNetworkPolicy))
    {
        match o {
            Object::AdminNetworkPolicy(p) => {
                input.anps.push((**p).clone());
                statuses.push((
                    Kind::AdminNetworkPolicy,
                    p.metadata.name.clone(),
                    p.status.clone(),
                ));
            }
            Object::BaselineAdminNetworkPolicy(p) => {
                input.banps.push((**p).clone());
                statuses.push((
                    Kind::BaselineAdminNetworkPolicy,
                    p.metadata.name.clone(),
                    p.status.clone(),
                ));
            }
            _ => {}
        }
    }
    if statuses.is_empty() {
        return Vec::new();
    }
    let plan = plan_admin_policies(&input);
    let mut out = Vec::new();
    for (kind, name, status) in statuses {
        let Some(name) = name else { continue };
        let kind_name = kind.name();
        let problems: Vec<String> = plan
            .issues
            .iter()
            .filter(|i| i.kind == kind_name && i.policy == name)
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect();
        let pg = match kind {
            Kind::AdminNetworkPolicy => anp_port_group_name(&name),
            _ => banp_port_group_name(&name),
        };
        let (state, reason, message) = if plan.port_groups.contains_key(&pg) {
            let message = if problems.is_empty() {
                format!("applied as the OVN ACLs of port group {pg}")
            } else {
                format!(
                    "applied as the OVN ACLs of port group {pg}; {}",
                    problems.join("; ")
                )
            };
            (ConditionStatus::True, "Applied", message)
        } else {
            let message = if problems.is_empty() {
                "not applied".to_string()
            } else {
                format!("not applied: {}", problems.join("; "))
            };
            (ConditionStatus::False, "ValidationFailed", message)
        };
        let mut desired: AdminPolicyStatus = status.unwrap_or_default();
        if set_condition(&mut desired.conditions, READY, state, reason, &message, now) {
            // These conditions are metav1.Conditions (type, status, reason, message,
            // lastTransitionTime, observedGeneration): no Kube-OVN style lastUpdateTime.
            for c in &mut desired.conditions {
                c.last_update_time = None;
            }
            out.push(PlannedWrite {
                target: Target::Status { kind, name },
                body: json!({ "status": desired }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::store::Change;
    use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
    use ferrovn_api::security_group::SecurityGroup;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::jiff::Timestamp;

    fn store(objects: Vec<Object>) -> ClusterStore {
        let mut s = ClusterStore::default();
        for o in objects {
            s.apply(Change::Applied(o));
        }
        s
    }

    fn anp(name: &str, priority: i64) -> Object {
        let v = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "AdminNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"priority": priority, "subject": {"namespaces": {}}, "ingress": []},
        });
        Object::AdminNetworkPolicy(Box::new(
            serde_json::from_value::<AdminNetworkPolicy>(v).unwrap(),
        ))
    }

    fn banp(name: &str) -> Object {
        let v = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"subject": {"namespaces": {}}, "ingress": []},
        });
        Object::BaselineAdminNetworkPolicy(Box::new(
            serde_json::from_value::<BaselineAdminNetworkPolicy>(v).unwrap(),
        ))
    }

    fn condition(w: &PlannedWrite) -> (String, String, String) {
        let c = &w.body["status"]["conditions"][0];
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("type"), s("status"), s("reason"))
    }

    #[test]
    fn admin_policies_get_ready_true_or_false_naming_the_field_then_nothing() {
        let now = Time(Timestamp::now());
        let objects = vec![anp("good", 10), anp("tie", 10), banp("other")];
        let writes = plan_admin_policy_status_writes(&store(objects.clone()), &now);
        let by = |kind: Kind, name: &str| {
            writes
                .iter()
                .find(|w| {
                    w.target
                        == Target::Status {
                            kind,
                            name: name.into(),
                        }
                })
                .cloned()
                .unwrap()
        };
        let good = by(Kind::AdminNetworkPolicy, "good");
        assert_eq!(
            condition(&good),
            ("Ready".into(), "True".into(), "Applied".into())
        );
        // A shared priority is applied (after `good`, by name) and says so.
        let tie = by(Kind::AdminNetworkPolicy, "tie");
        assert_eq!(condition(&tie).1, "True");
        let msg = tie.body["status"]["conditions"][0]["message"].to_string();
        assert!(msg.contains("spec.priority"), "{msg}");
        let other = by(Kind::BaselineAdminNetworkPolicy, "other");
        assert_eq!(
            condition(&other),
            ("Ready".into(), "False".into(), "ValidationFailed".into())
        );
        let msg = other.body["status"]["conditions"][0]["message"].to_string();
        assert!(msg.contains("metadata.name"), "{msg}");
        assert!(
            other.body["status"]["conditions"][0]["lastTransitionTime"].is_string(),
            "metav1.Condition requires lastTransitionTime: {}",
            other.body
        );
        for w in &writes {
            let c = w.body["status"]["conditions"][0].as_object().unwrap();
            let mut keys: Vec<&str> = c.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                ["lastTransitionTime", "message", "reason", "status", "type"],
                "metav1.Condition fields only: {}",
                w.body
            );
        }

        // Once the statuses say so, nothing more to write.
        let written: Vec<Object> = objects
            .into_iter()
            .map(|mut o| {
                let kind = Kind::of(&o);
                let w = by(kind, o.name());
                let status = serde_json::from_value(w.body["status"].clone()).ok();
                match &mut o {
                    Object::AdminNetworkPolicy(p) => p.status = status,
                    Object::BaselineAdminNetworkPolicy(p) => p.status = status,
                    _ => {}
                }
                o
            })
            .collect();
        assert!(plan_admin_policy_status_writes(&store(written), &now).is_empty());
    }

    #[test]
    fn invalid_network_policy_and_security_group_are_named_with_their_fields() {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "typo", "namespace": "shop",
                "annotations": {"ovn.kubernetes.io/network_policy_for": "eth1"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }))
        .unwrap();
        let ok: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "fine", "namespace": "shop"},
            "spec": {"podSelector": {}},
        }))
        .unwrap();
        let sg: SecurityGroup = serde_json::from_value(json!({
            "apiVersion": "kubeovn.io/v1", "kind": "SecurityGroup",
            "metadata": {"name": "broken"},
            "spec": {"ingressRules": [{"ipVersion": "ipv4", "remoteType": "address",
                "remoteAddress": "10.0.0.0/8", "policy": "permit", "priority": 1}]},
        }))
        .unwrap();
        let s = store(vec![
            Object::NetworkPolicy(Box::new(np)),
            Object::NetworkPolicy(Box::new(ok)),
            Object::SecurityGroup(Box::new(sg)),
        ]);
        let problems = policy_problems(&s);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let (o, m) = &problems[0];
        assert_eq!(o, &ObjectRef::namespaced("NetworkPolicy", "shop", "typo"));
        assert!(
            m.starts_with(
                "NetworkPolicy shop/typo: metadata.annotations[ovn.kubernetes.io/network_policy_for]"
            ),
            "{m}"
        );
        let (o, m) = &problems[1];
        assert_eq!(o, &ObjectRef::cluster("SecurityGroup", "broken"));
        assert!(
            m.starts_with("SecurityGroup broken: spec.ingressRules[0].policy"),
            "{m}"
        );
    }

    #[test]
    fn admin_policies_left_out_get_an_event_and_warned_ones_do_not() {
        // `other` is not the one BANP name the API allows; `good` and `tie` share a priority,
        // so both are applied, with a warning in their condition.
        let s = store(vec![anp("good", 10), anp("tie", 10), banp("other")]);
        let problems = policy_problems(&s);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let (o, m) = &problems[0];
        assert_eq!(
            o,
            &ObjectRef::cluster("BaselineAdminNetworkPolicy", "other")
        );
        assert!(m.contains("metadata.name"), "{m}");
        assert!(policy_problems(&store(vec![anp("good", 10), banp("default")])).is_empty());
    }
}
