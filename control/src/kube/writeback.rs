//! Writing allocations back to the cluster, as Kube-OVN does, and reading them back at start.
//!
//! What is sent (all JSON merge patches, RFC 7386, `Content-Type: application/merge-patch+json`,
//! the same patch type Kube-OVN's `PatchAnnotations` / `UpdateNodeAnnotations` and its subnet
//! status update use):
//! - pod: `PATCH /api/v1/namespaces/<ns>/pods/<pod>` with
//!   `{"metadata":{"annotations":{...}}}` holding, per interface, `<provider>.kubernetes.io/`
//!   `ip_address`, `mac_address`, `cidr`, `gateway`, `logical_switch`, `logical_router`,
//!   `allocated=true` and, once the NB has its port, `routed=true`;
//! - node: `PATCH /api/v1/nodes/<node>`: the join-subnet allocation plus `port_name`;
//! - subnet: `PATCH /apis/kubeovn.io/v1/subnets/<name>/status` with `{"status":{...}}`:
//!   `v4availableIPs`, `v4usingIPs`, `v6availableIPs`, `v6usingIPs` and the `Validated` /
//!   `Ready` conditions.
//!
//! Only keys whose value differs from what the watcher last saw are sent, and nothing is sent
//! when nothing differs, so a resync or our own patch echoing back never causes another write.
//! Planning is pure ([`plan_writes`]); [`Writer`] sends.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::controller::AllocationRecord;
use crate::controller::desired::node_owner;
use crate::ipam::{Counts, ExistingAllocation, OwnerKey, RecordSource};
use crate::manifest::Object;
use ferrovn_api::annotations::{
    Annotations, OVN_PROVIDER, PodKey, PodNetwork, allocated_providers, annotation_key,
};
use ferrovn_api::crd::{Condition, ConditionStatus, IpCount, Subnet, SubnetStatus, set_condition};

use super::store::{ClusterStore, Kind};

/// The field manager named in every write.
pub const FIELD_MANAGER: &str = "ferrovn-controller";

/// Writes in flight at once (client-go's default QPS is 5 with bursts of 10; the apiserver's
/// priority and fairness, not this client, is the real limit in a large cluster).
pub const WRITE_CONCURRENCY: usize = 16;

/// What a write goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Pod { namespace: String, name: String },
    Node { name: String },
    SubnetStatus { name: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pod { namespace, name } => write!(f, "Pod {namespace}/{name}"),
            Target::Node { name } => write!(f, "Node {name}"),
            Target::SubnetStatus { name } => write!(f, "Subnet {name} status"),
        }
    }
}

/// One merge patch to send.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    pub target: Target,
    pub body: Value,
}

fn empty() -> &'static Annotations {
    static EMPTY: Annotations = Annotations::new();
    &EMPTY
}

fn annotations_of(o: &Object) -> &Annotations {
    o.metadata().annotations.as_ref().unwrap_or(empty())
}

/// `{"metadata":{"annotations":{k: v}}}` with the keys of `desired` whose value differs from
/// `current`; `None` when none differs.
pub fn annotation_patch(current: &Annotations, desired: &Annotations) -> Option<Value> {
    let changed: Map<String, Value> = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if changed.is_empty() {
        return None;
    }
    Some(json!({ "metadata": { "annotations": changed } }))
}

/// The annotations a pod (or node) should carry for `records`. `routed` marks interfaces whose
/// NB port exists (set when the pass that produced the records applied the NB).
pub fn desired_annotations(records: &[&AllocationRecord], routed: bool) -> Annotations {
    let mut out = Annotations::new();
    for r in records {
        out.extend(r.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        if r.kind == "node" {
            if !r.port_name.is_empty() {
                out.insert(
                    annotation_key(OVN_PROVIDER, "port_name"),
                    r.port_name.clone(),
                );
            }
        } else if routed && !r.port_name.is_empty() {
            out.insert(
                annotation_key(&r.provider, PodKey::Routed.name()),
                "true".into(),
            );
        }
    }
    out
}

/// The status a subnet should have: its counts (when the IPAM holds it) and the `Validated` and
/// `Ready` conditions. `problems` are the pass's issue lines naming this subnet.
pub fn desired_subnet_status(
    current: &SubnetStatus,
    counts: Option<Counts>,
    problems: &[&str],
    now: &Time,
) -> SubnetStatus {
    let mut s = current.clone();
    match counts {
        Some(c) => {
            s.v4_available_ips = IpCount(c.v4_available);
            s.v4_using_ips = IpCount(c.v4_using);
            s.v6_available_ips = IpCount(c.v6_available);
            s.v6_using_ips = IpCount(c.v6_using);
            set_condition(
                &mut s.conditions,
                Condition::VALIDATED,
                ConditionStatus::True,
                "ValidationPassed",
                "",
                now,
            );
            set_condition(
                &mut s.conditions,
                Condition::READY,
                ConditionStatus::True,
                "Reconciled",
                "",
                now,
            );
        }
        None => {
            let message = problems.join("; ");
            set_condition(
                &mut s.conditions,
                Condition::VALIDATED,
                ConditionStatus::False,
                "ValidationFailed",
                &message,
                now,
            );
            set_condition(
                &mut s.conditions,
                Condition::READY,
                ConditionStatus::False,
                "ValidationFailed",
                &message,
                now,
            );
        }
    }
    s
}

/// `{"status":{...}}` with the fields FerrOVN manages, when they differ from `current`.
pub fn subnet_status_patch(current: &SubnetStatus, desired: &SubnetStatus) -> Option<Value> {
    let managed = |s: &SubnetStatus| {
        (
            s.v4_available_ips,
            s.v4_using_ips,
            s.v6_available_ips,
            s.v6_using_ips,
            s.conditions.clone(),
        )
    };
    if managed(current) == managed(desired) {
        return None;
    }
    let conditions = serde_json::to_value(&desired.conditions).unwrap_or(Value::Null);
    Some(json!({
        "status": {
            "v4availableIPs": desired.v4_available_ips,
            "v4usingIPs": desired.v4_using_ips,
            "v6availableIPs": desired.v6_available_ips,
            "v6usingIPs": desired.v6_using_ips,
            "conditions": conditions,
        }
    }))
}

/// Does an issue line of a pass name this subnet? (Issue lines are free text; subnet errors
/// name the object as `Subnet <name>` and allocation errors as `subnet <name>`.)
fn mentions_subnet(issue: &str, name: &str) -> bool {
    [format!("Subnet {name}"), format!("subnet {name}")]
        .iter()
        .any(|needle| {
            issue.match_indices(needle.as_str()).any(|(i, _)| {
                let end = i + needle.len();
                issue[end..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '.'))
            })
        })
}

/// Every write a pass calls for: pods and nodes whose annotations differ from their
/// allocation, subnets whose status differs. `routed`: the pass applied the NB.
pub fn plan_writes(
    store: &ClusterStore,
    records: &[AllocationRecord],
    counts: impl Fn(&str) -> Option<Counts>,
    issues: &[String],
    routed: bool,
    now: &Time,
) -> Vec<PlannedWrite> {
    let mut by_target: BTreeMap<Target, Vec<&AllocationRecord>> = BTreeMap::new();
    for r in records {
        let target = if r.kind == "node" {
            Target::Node {
                name: r.name.clone(),
            }
        } else {
            Target::Pod {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            }
        };
        by_target.entry(target).or_default().push(r);
    }
    let mut out = Vec::new();
    for (target, recs) in by_target {
        let object = match &target {
            Target::Pod { namespace, name } => store.get(Kind::Pod, Some(namespace), name),
            Target::Node { name } => store.get(Kind::Node, None, name),
            Target::SubnetStatus { .. } => None,
        };
        // Gone from the cluster since the pass read it: nothing to annotate.
        let Some(object) = object else { continue };
        let desired = desired_annotations(&recs, routed);
        if let Some(body) = annotation_patch(annotations_of(object), &desired) {
            out.push(PlannedWrite { target, body });
        }
    }
    for o in store.of_kind(Kind::Subnet) {
        let Object::Subnet(subnet) = o else { continue };
        let name = o.name();
        let current = subnet.status.clone().unwrap_or_default();
        let problems: Vec<&str> = issues
            .iter()
            .map(String::as_str)
            .filter(|i| mentions_subnet(i, name))
            .collect();
        let desired = desired_subnet_status(&current, counts(name), &problems, now);
        if let Some(body) = subnet_status_patch(&current, &desired) {
            out.push(PlannedWrite {
                target: Target::SubnetStatus {
                    name: name.to_string(),
                },
                body,
            });
        }
    }
    out
}

fn allocation_of(
    owner: OwnerKey,
    net: &PodNetwork<'_>,
    source: RecordSource,
) -> Option<ExistingAllocation> {
    let subnet = net.logical_switch()?.to_string();
    let ips: Vec<IpAddr> = net.ip_address().ok()??.addrs().collect();
    if ips.is_empty() {
        return None;
    }
    let mac = net.mac_address().ok().flatten();
    Some(ExistingAllocation {
        owner,
        subnet,
        ips,
        mac,
        source,
    })
}

/// The allocations the cluster already carries: every pod interface and node annotated
/// `<provider>.kubernetes.io/allocated=true` with its address, MAC and subnet. Fed to the IPAM's
/// recovery at start, so a restarted controller (or a new leader) moves no address.
/// Malformed annotations are skipped (the pod is then allocated afresh).
pub fn existing_allocations(store: &ClusterStore) -> Vec<ExistingAllocation> {
    let mut out = Vec::new();
    for o in store.of_kind(Kind::Pod) {
        let ann = annotations_of(o);
        let ns = o.namespace().unwrap_or_default();
        for provider in allocated_providers(ann) {
            let net = PodNetwork::for_provider(ann, provider);
            if net.allocated() != Ok(true) {
                continue;
            }
            if let Some(a) = allocation_of(
                OwnerKey::new(ns, o.name(), provider),
                &net,
                RecordSource::PodAnnotation,
            ) {
                out.push(a);
            }
        }
    }
    for o in store.of_kind(Kind::Node) {
        let net = PodNetwork::primary(annotations_of(o));
        if net.allocated() != Ok(true) {
            continue;
        }
        if let Some(a) = allocation_of(node_owner(o.name()), &net, RecordSource::PodAnnotation) {
            out.push(a);
        }
    }
    out
}

/// What sending the writes did.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub pods_patched: usize,
    pub nodes_patched: usize,
    pub subnets_patched: usize,
    /// The objects as the apiserver returned them (fresher than the watch may be yet).
    pub updated: Vec<Object>,
    /// One line per failed write (retried at the next pass).
    pub failures: Vec<String>,
}

/// Sends planned writes.
#[derive(Clone)]
pub struct Writer {
    client: Client,
}

impl Writer {
    pub fn new(client: Client) -> Self {
        Writer { client }
    }

    async fn send_one(&self, w: &PlannedWrite) -> Result<Object, kube::Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&w.body);
        match &w.target {
            Target::Pod { namespace, name } => {
                Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .patch(name, &params, &patch)
                    .await
                    .map(|p| Object::Pod(Box::new(p)))
            }
            Target::Node { name } => Api::<Node>::all(self.client.clone())
                .patch(name, &params, &patch)
                .await
                .map(|n| Object::Node(Box::new(n))),
            Target::SubnetStatus { name } => Api::<Subnet>::all(self.client.clone())
                .patch_status(name, &params, &patch)
                .await
                .map(|s| Object::Subnet(Box::new(s))),
        }
    }

    /// Sends every write, [`WRITE_CONCURRENCY`] at a time (thousands of new pods are not
    /// annotated one round trip after the other); a failure is reported and does not stop
    /// the others. A 404 (the object went away meanwhile) is not a failure.
    pub async fn send(&self, writes: &[PlannedWrite]) -> WriteReport {
        let mut report = WriteReport::default();
        // Owned futures: borrowed ones make the caller's future not provably Send.
        let sends: Vec<_> = writes
            .iter()
            .map(|w| {
                let (writer, w) = (self.clone(), w.clone());
                async move {
                    let result = writer.send_one(&w).await;
                    (w, result)
                }
            })
            .collect();
        let mut results = futures::stream::iter(sends).buffer_unordered(WRITE_CONCURRENCY);
        while let Some((w, result)) = results.next().await {
            match result {
                Ok(o) => {
                    match &w.target {
                        Target::Pod { .. } => report.pods_patched += 1,
                        Target::Node { .. } => report.nodes_patched += 1,
                        Target::SubnetStatus { .. } => report.subnets_patched += 1,
                    }
                    report.updated.push(o);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    tracing::debug!("{}: gone before write-back", w.target);
                }
                Err(e) => report.failures.push(format!("{}: {e}", w.target)),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> Annotations {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn patch_holds_only_differing_keys() {
        let current = ann(&[("ovn.kubernetes.io/ip_address", "10.16.0.2"), ("user", "x")]);
        let desired = ann(&[
            ("ovn.kubernetes.io/ip_address", "10.16.0.2"),
            ("ovn.kubernetes.io/allocated", "true"),
        ]);
        assert_eq!(
            annotation_patch(&current, &desired),
            Some(json!({"metadata":{"annotations":{"ovn.kubernetes.io/allocated":"true"}}}))
        );
        assert_eq!(annotation_patch(&desired, &desired), None);
    }

    #[test]
    fn subnet_names_are_matched_whole() {
        assert!(mentions_subnet("Subnet net1: cidrBlock bad", "net1"));
        assert!(mentions_subnet("a/b (ovn): subnet net1 is full", "net1"));
        assert!(!mentions_subnet("Subnet net10: bad", "net1"));
        assert!(!mentions_subnet("Subnet net1-b: bad", "net1"));
    }

    #[test]
    fn status_is_patched_once_then_stable() {
        let now =
            Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default());
        let counts = Counts {
            v4_available: 65530,
            v4_using: 3,
            v6_available: 0,
            v6_using: 0,
        };
        let current = SubnetStatus::default();
        let desired = desired_subnet_status(&current, Some(counts), &[], &now);
        let body = subnet_status_patch(&current, &desired);
        assert!(body.is_some());
        let again = desired_subnet_status(&desired, Some(counts), &[], &now);
        assert_eq!(subnet_status_patch(&desired, &again), None);
    }
}
