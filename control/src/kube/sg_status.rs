//! SecurityGroup `status` as Kube-OVN writes it (`portGroup`, `allowSameGroupTraffic`, the
//! per-direction sync flags) plus `error`, FerrOVN's: why the group applies none of its rules.
//! Pure planning from the watched groups; a group whose status already says it gets no write.

use serde_json::json;

use super::store::{ClusterStore, Kind};
use super::writeback::{PlannedWrite, Target};
use crate::manifest::Object;
use crate::plan::security_group::{SecurityGroupInput, plan_security_groups, port_group_name};
use ferrovn_api::security_group::SecurityGroupStatus;

/// The status of every SecurityGroup that differs from what it should say.
pub fn plan_security_group_status_writes(store: &ClusterStore) -> Vec<PlannedWrite> {
    let groups: Vec<_> = store
        .of_kind(Kind::SecurityGroup)
        .filter_map(|o| match o {
            Object::SecurityGroup(g) => Some((**g).clone()),
            _ => None,
        })
        .collect();
    if groups.is_empty() {
        return Vec::new();
    }
    // Validity does not depend on membership: the groups alone are enough.
    let plan = plan_security_groups(&SecurityGroupInput {
        groups: groups.clone(),
        ports: Vec::new(),
    });
    let mut out = Vec::new();
    for g in &groups {
        let Some(name) = g.metadata.name.as_deref() else {
            continue;
        };
        let applied = plan.applied.get(name).copied().unwrap_or(false);
        let object = format!("SecurityGroup {name}");
        let error: Vec<String> = plan
            .issues
            .iter()
            .filter(|i| i.object == object)
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect();
        let current = g.status.clone().unwrap_or_default();
        let desired = SecurityGroupStatus {
            port_group: port_group_name(name),
            allow_same_group_traffic: g.spec.allow_same_group_traffic,
            ingress_last_sync_success: applied,
            egress_last_sync_success: applied,
            error: error.join("; "),
            ..current.clone()
        };
        if desired != current {
            out.push(PlannedWrite {
                target: Target::Status {
                    kind: Kind::SecurityGroup,
                    name: name.to_string(),
                },
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
    use ferrovn_api::security_group::{SecurityGroup, SecurityGroupRule, SecurityGroupSpec};

    fn group(name: &str, policy: &str) -> SecurityGroup {
        let mut g = SecurityGroup::new(
            name,
            SecurityGroupSpec {
                ingress_rules: vec![SecurityGroupRule {
                    ip_version: "ipv4".into(),
                    priority: 1,
                    remote_type: "address".into(),
                    remote_address: "10.0.0.0/8".into(),
                    policy: policy.into(),
                    ..Default::default()
                }],
                allow_same_group_traffic: true,
                ..Default::default()
            },
        );
        g.metadata.name = Some(name.into());
        g
    }

    fn store(groups: Vec<SecurityGroup>) -> ClusterStore {
        let mut s = ClusterStore::default();
        for g in groups {
            s.apply(Change::Applied(Object::SecurityGroup(Box::new(g))));
        }
        s
    }

    #[test]
    fn status_names_the_port_group_and_the_bad_field_then_stays_quiet() {
        let s = store(vec![group("web", "allow"), group("bad", "permit")]);
        let writes = plan_security_group_status_writes(&s);
        assert_eq!(writes.len(), 2);
        let by_name = |n: &str| {
            writes
                .iter()
                .find(|w| {
                    w.target
                        == Target::Status {
                            kind: Kind::SecurityGroup,
                            name: n.into(),
                        }
                })
                .map(|w| w.body["status"].clone())
                .unwrap_or_default()
        };
        let web = by_name("web");
        assert_eq!(web["portGroup"], "sg.web");
        assert_eq!(web["allowSameGroupTraffic"], true);
        assert_eq!(web["ingressLastSyncSuccess"], true);
        assert!(web.get("error").is_none(), "{web}");
        let bad = by_name("bad");
        assert_eq!(bad["ingressLastSyncSuccess"], false);
        let err = bad["error"].as_str().unwrap_or_default();
        assert!(
            err.starts_with("spec.ingressRules[0].policy: \"permit\""),
            "{err}"
        );

        // Once the statuses say so, nothing more to write.
        let mut written = Vec::new();
        for (n, p) in [("web", "allow"), ("bad", "permit")] {
            let mut g = group(n, p);
            g.status = serde_json::from_value(by_name(n)).ok();
            written.push(g);
        }
        assert!(plan_security_group_status_writes(&store(written)).is_empty());
    }
}
