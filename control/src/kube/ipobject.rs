//! Kube-OVN's `IP` objects (ips.kubeovn.io, cluster-scoped): one per allocated pod interface
//! (`<pod>.<namespace>[.<provider>]`) and per node's join address (`node-<node>`), with the
//! spec and labels Kube-OVN's controller gives them, so `kubectl get ips` and tools that select
//! IPs by subnet or node work as with Kube-OVN.
//!
//! The controller does not read IP objects back as allocations: pod and node annotations (and
//! the NB) are what a restart recovers from, and the IP objects are rebuilt from that. So an IP
//! object is only a mirror, and FerrOVN touches only its own mirrors: the ones carrying
//! [`MANAGED_BY_LABEL`]` = `[`FIELD_MANAGER`]. An IP object somebody else made (a user's, or one
//! left by Kube-OVN) is never patched or deleted, nor one labelled
//! `ovn.kubernetes.io/ip_reserved=true` (Kube-OVN's "keep this address" mark).
//!
//! Planning is pure ([`plan_ip_writes`]): a create for a missing object, a merge patch of the
//! differing fields of ours, a delete of ours whose allocation is gone; nothing when the cluster
//! already matches, so a restart or a resync writes nothing.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::controller::AllocationRecord;
use crate::manifest::Object;
use ferrovn_api::annotations::{PodKey, annotation_key};
use ferrovn_api::crd::Ip;

use super::store::{ClusterStore, Kind};
use super::writeback::{FIELD_MANAGER, PlannedWrite, Target};

/// Kube-OVN's label naming the IP's subnet.
pub const SUBNET_LABEL: &str = "ovn.kubernetes.io/subnet";
/// Kube-OVN's label naming the IP's node.
pub const NODE_LABEL: &str = "ovn.kubernetes.io/node-name";
/// Kube-OVN's "reserved" mark: `true` keeps the object (and, in Kube-OVN, the address) after
/// the pod goes.
pub const RESERVED_LABEL: &str = "ovn.kubernetes.io/ip_reserved";
/// Marks the IP objects FerrOVN made (and may patch and delete).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Longest label value / name part of a label key.
const LABEL_MAX: usize = 63;

fn ann(r: &AllocationRecord, key: PodKey) -> &str {
    r.annotations
        .get(&annotation_key(&r.provider, key.name()))
        .map(String::as_str)
        .unwrap_or_default()
}

/// The IP object's name for a record: the interface's port name (`<pod>.<namespace>[.<provider>]`
/// or `node-<node>`), as Kube-OVN names it.
pub fn ip_name(r: &AllocationRecord) -> String {
    if r.kind == "node" {
        if r.port_name.is_empty() {
            format!("node-{}", r.name)
        } else {
            r.port_name.clone()
        }
    } else {
        Ip::object_name(&r.name, &r.namespace, &r.provider)
    }
}

/// Kube-OVN's `podType`: `StatefulSet` for a StatefulSet's pod, empty otherwise.
fn pod_type(store: &ClusterStore, r: &AllocationRecord) -> &'static str {
    let Some(pod) = store.get(Kind::Pod, Some(&r.namespace), &r.name) else {
        return "";
    };
    let owned_by_sts = pod
        .metadata()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "StatefulSet");
    if owned_by_sts { "StatefulSet" } else { "" }
}

/// The labels and spec an interface's IP object carries (the fields FerrOVN manages).
pub fn desired_ip(store: &ClusterStore, r: &AllocationRecord) -> (Map<String, Value>, Value) {
    let subnet = ann(r, PodKey::LogicalSwitch);
    let ip = ann(r, PodKey::IpAddress);
    let (mut v4, mut v6) = ("", "");
    for a in ip.split(',').map(str::trim) {
        if a.contains(':') {
            v6 = a;
        } else if !a.is_empty() {
            v4 = a;
        }
    }
    let node = if r.kind == "node" { &r.name } else { &r.node };
    let mut labels = Map::new();
    labels.insert(SUBNET_LABEL.into(), subnet.into());
    if node.len() <= LABEL_MAX {
        labels.insert(NODE_LABEL.into(), node.as_str().into());
    }
    // Kube-OVN also labels with the bare subnet name (`kubectl get ips -l <subnet>`).
    if !subnet.is_empty() && subnet.len() <= LABEL_MAX {
        labels.insert(subnet.into(), "".into());
    }
    labels.insert(RESERVED_LABEL.into(), "false".into());
    labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    let mut spec = json!({
        "podName": r.name,
        "namespace": r.namespace,
        "subnet": subnet,
        "nodeName": node,
        "ipAddress": ip,
        "v4IpAddress": v4,
        "v6IpAddress": v6,
        "macAddress": ann(r, PodKey::MacAddress),
    });
    let pt = if r.kind == "node" {
        ""
    } else {
        pod_type(store, r)
    };
    if !pt.is_empty() {
        spec["podType"] = pt.into();
    }
    (labels, spec)
}

fn is_ours(ip: &Ip) -> bool {
    label(ip, MANAGED_BY_LABEL) == Some(FIELD_MANAGER)
}

fn label<'a>(ip: &'a Ip, key: &str) -> Option<&'a str> {
    ip.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn is_reserved(ip: &Ip) -> bool {
    label(ip, RESERVED_LABEL) == Some("true")
}

/// The entries of `desired` whose value `current` does not have.
fn differing(current: &Value, desired: &Map<String, Value>) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(k, v)| current.get(k.as_str()) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The IP object writes the allocation `records` (every allocated interface and node of the
/// last pass) call for, given the IP objects in `store`.
pub fn plan_ip_writes(store: &ClusterStore, records: &[AllocationRecord]) -> Vec<PlannedWrite> {
    let mut out = Vec::new();
    let mut wanted = BTreeSet::new();
    for r in records {
        if ann(r, PodKey::IpAddress).is_empty() {
            continue;
        }
        let name = ip_name(r);
        wanted.insert(name.clone());
        let (labels, spec) = desired_ip(store, r);
        match store.get(Kind::Ip, None, &name) {
            None => out.push(PlannedWrite {
                target: Target::IpCreate { name: name.clone() },
                body: json!({
                    "apiVersion": ferrovn_api::crd::API_VERSION,
                    "kind": "IP",
                    "metadata": { "name": name, "labels": labels },
                    "spec": spec,
                }),
            }),
            Some(Object::Ip(held)) if is_ours(held) && !is_reserved(held) => {
                let current_labels =
                    serde_json::to_value(&held.metadata.labels).unwrap_or(Value::Null);
                let current_spec = serde_json::to_value(&held.spec).unwrap_or(Value::Null);
                let labels = differing(&current_labels, &labels);
                let spec = match spec {
                    Value::Object(m) => differing(&current_spec, &m),
                    _ => Map::new(),
                };
                if labels.is_empty() && spec.is_empty() {
                    continue;
                }
                let mut body = Map::new();
                if !labels.is_empty() {
                    body.insert("metadata".into(), json!({ "labels": labels }));
                }
                if !spec.is_empty() {
                    body.insert("spec".into(), Value::Object(spec));
                }
                out.push(PlannedWrite {
                    target: Target::Ip { name },
                    body: Value::Object(body),
                });
            }
            // Somebody else's (or reserved): hands off.
            Some(_) => tracing::debug!(ip = %name, "IP object not FerrOVN's: left alone"),
        }
    }
    for o in store.of_kind(Kind::Ip) {
        let Object::Ip(ip) = o else { continue };
        if is_ours(ip) && !is_reserved(ip) && !wanted.contains(o.name()) {
            out.push(PlannedWrite {
                target: Target::IpDelete {
                    name: o.name().to_string(),
                },
                body: Value::Null,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::store::Change;
    use ferrovn_api::annotations::Annotations;

    fn record(ns: &str, pod: &str, provider: &str, ip: &str, subnet: &str) -> AllocationRecord {
        let mut a = Annotations::new();
        for (k, v) in [
            (PodKey::IpAddress, ip),
            (PodKey::MacAddress, "00:00:00:aa:bb:cc"),
            (PodKey::LogicalSwitch, subnet),
            (PodKey::Allocated, "true"),
        ] {
            a.insert(annotation_key(provider, k.name()), v.to_string());
        }
        AllocationRecord {
            version: 1,
            kind: "pod".into(),
            namespace: ns.into(),
            name: pod.into(),
            provider: provider.into(),
            node: "n1".into(),
            port_name: Ip::object_name(pod, ns, provider),
            annotations: a,
        }
    }

    /// The store after the apiserver stored what `writes` created or patched.
    fn applied(store: &mut ClusterStore, writes: &[PlannedWrite]) {
        for w in writes {
            match &w.target {
                Target::IpCreate { .. } => {
                    let ip: Ip = serde_json::from_value(w.body.clone()).unwrap();
                    store.apply(Change::Applied(Object::Ip(Box::new(ip))));
                }
                Target::Ip { name } => {
                    let Some(Object::Ip(held)) = store.get(Kind::Ip, None, name) else {
                        panic!("patch of missing {name}")
                    };
                    let mut v = serde_json::to_value(held.as_ref()).unwrap();
                    json_patch_merge(&mut v, &w.body);
                    let ip: Ip = serde_json::from_value(v).unwrap();
                    store.apply(Change::Applied(Object::Ip(Box::new(ip))));
                }
                Target::IpDelete { name } => {
                    let held = store.get(Kind::Ip, None, name).cloned().unwrap();
                    store.apply(Change::Deleted(held));
                }
                t => panic!("unexpected {t}"),
            }
        }
    }

    fn json_patch_merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    json_patch_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    #[test]
    fn created_once_then_stable_then_deleted_when_released() {
        let mut store = ClusterStore::new();
        let recs = vec![
            record("demo", "web-1", "ovn", "10.66.0.2,fd00::2", "demo"),
            record("demo", "web-1", "net1.demo.ovn", "10.99.0.2", "net1"),
        ];
        let writes = plan_ip_writes(&store, &recs);
        assert_eq!(writes.len(), 2);
        let first = &writes[0];
        assert_eq!(
            first.target,
            Target::IpCreate {
                name: "web-1.demo".into()
            }
        );
        assert_eq!(first.body["spec"]["v4IpAddress"], "10.66.0.2");
        assert_eq!(first.body["spec"]["v6IpAddress"], "fd00::2");
        assert_eq!(first.body["spec"]["ipAddress"], "10.66.0.2,fd00::2");
        assert_eq!(first.body["spec"]["nodeName"], "n1");
        assert_eq!(first.body["metadata"]["labels"][SUBNET_LABEL], "demo");
        assert_eq!(first.body["metadata"]["labels"]["demo"], "");
        assert_eq!(
            writes[1].target,
            Target::IpCreate {
                name: "web-1.demo.net1.demo.ovn".into()
            }
        );
        applied(&mut store, &writes);
        // What the cluster holds matches: nothing to write (a restart or resync is silent).
        assert_eq!(plan_ip_writes(&store, &recs), []);

        // The pod moved node: one patch of just that field and label.
        let mut moved = recs.clone();
        moved[0].node = "n2".into();
        let writes = plan_ip_writes(&store, &moved);
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes[0].body,
            json!({"metadata": {"labels": {NODE_LABEL: "n2"}}, "spec": {"nodeName": "n2"}})
        );
        applied(&mut store, &writes);
        assert_eq!(plan_ip_writes(&store, &moved), []);

        // The attachment is released: its object goes, the primary stays.
        let writes = plan_ip_writes(&store, &moved[..1]);
        assert_eq!(
            writes.iter().map(|w| &w.target).collect::<Vec<_>>(),
            [&Target::IpDelete {
                name: "web-1.demo.net1.demo.ovn".into()
            }]
        );
    }

    #[test]
    fn foreign_and_reserved_objects_are_left_alone() {
        let mut store = ClusterStore::new();
        // A user's IP object for the pod's own name, and a reserved one of ours whose pod went.
        let mut user = Ip::new("db-0.demo", Default::default());
        user.spec.ip_address = "10.66.0.20".into();
        store.apply(Change::Applied(Object::Ip(Box::new(user))));
        let mut reserved = Ip::new("old.demo", Default::default());
        reserved.metadata.labels = Some(
            [
                (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                (RESERVED_LABEL.to_string(), "true".to_string()),
            ]
            .into(),
        );
        store.apply(Change::Applied(Object::Ip(Box::new(reserved))));
        let recs = vec![record("demo", "db-0", "ovn", "10.66.0.20", "demo")];
        assert_eq!(plan_ip_writes(&store, &recs), []);
        assert_eq!(plan_ip_writes(&store, &[]), []);
    }

    #[test]
    fn node_join_address_gets_a_node_ip_object() {
        let store = ClusterStore::new();
        let mut r = record("", "kind-worker", "ovn", "100.64.0.2", "join");
        r.kind = "node".into();
        r.node = String::new();
        r.port_name = "node-kind-worker".into();
        let writes = plan_ip_writes(&store, &[r]);
        assert_eq!(
            writes[0].target,
            Target::IpCreate {
                name: "node-kind-worker".into()
            }
        );
        assert_eq!(writes[0].body["spec"]["nodeName"], "kind-worker");
        assert_eq!(writes[0].body["spec"]["podName"], "kind-worker");
    }
}
