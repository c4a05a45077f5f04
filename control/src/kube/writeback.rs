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
//! - vpc, vlan, ippool: `PATCH /apis/kubeovn.io/v1/<plural>/<name>/status` with the
//!   `Validated` condition: `False` with the errors while the object is invalid (it is left out
//!   of the pass), back to `True` once it is fixed;
//! - an invalid object (any kind): one `events.k8s.io/v1` Event (`POST`, type `Warning`, reason
//!   `ValidationFailed`) per distinct error message, named after the object and a hash of the
//!   message so that a repeat (or a restarted controller) creates nothing new. Cluster-scoped
//!   objects' Events go to the `default` namespace, as kubectl looks for them there.
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
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use crate::controller::desired::node_owner;
use crate::controller::{AllocationRecord, Rejection};
use crate::ipam::{Counts, ExistingAllocation, OwnerKey, RecordSource};
use crate::manifest::Object;
use ferrovn_api::annotations::{
    Annotations, OVN_PROVIDER, PodKey, PodNetwork, allocated_providers, annotation_key,
};
use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use ferrovn_api::crd::{
    Condition, ConditionStatus, Ip, IpCount, IpPool, Subnet, SubnetStatus, Vlan, Vpc,
    find_condition, set_condition,
};
use ferrovn_api::security_group::SecurityGroup;
use ferrovn_api::validate::ObjectRef;
use k8s_openapi::api::events::v1::Event;

use super::store::{ClusterStore, Kind};

/// The field manager named in every write.
pub const FIELD_MANAGER: &str = "ferrovn-controller";

/// Writes in flight at once (client-go's default QPS is 5 with bursts of 10; the apiserver's
/// priority and fairness, not this client, is the real limit in a large cluster).
pub const WRITE_CONCURRENCY: usize = 16;

/// What a write goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Pod {
        namespace: String,
        name: String,
    },
    Node {
        name: String,
    },
    SubnetStatus {
        name: String,
    },
    /// The status of a Vpc, Vlan, IPPool, SecurityGroup, AdminNetworkPolicy or
    /// BaselineAdminNetworkPolicy.
    Status {
        kind: Kind,
        name: String,
    },
    Event {
        namespace: String,
        name: String,
    },
    /// A new IP object (`POST`, the body is the object).
    IpCreate {
        name: String,
    },
    /// A merge patch of one of our IP objects.
    Ip {
        name: String,
    },
    /// One of our IP objects whose allocation was released.
    IpDelete {
        name: String,
    },
    /// A built-in subnet's missing Subnet object (`POST`, the body is the object).
    SubnetCreate {
        name: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pod { namespace, name } => write!(f, "Pod {namespace}/{name}"),
            Target::Node { name } => write!(f, "Node {name}"),
            Target::SubnetStatus { name } => write!(f, "Subnet {name} status"),
            Target::Status { kind, name } => write!(f, "{} {name} status", kind.name()),
            Target::Event { namespace, name } => write!(f, "Event {namespace}/{name}"),
            Target::IpCreate { name } | Target::Ip { name } => write!(f, "IP {name}"),
            Target::IpDelete { name } => write!(f, "IP {name} (delete)"),
            Target::SubnetCreate { name } => write!(f, "Subnet {name} (create)"),
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
            s.activate_gateway.clone(),
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
            "activateGateway": desired.activate_gateway,
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
/// `active_gateways`: the nodes carrying each centralized subnet's egress
/// (`status.activateGateway`, comma-separated in ECMP mode).
pub fn plan_writes(
    store: &ClusterStore,
    records: &[AllocationRecord],
    active_gateways: &BTreeMap<String, Vec<String>>,
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
            _ => None,
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
        let mut desired = desired_subnet_status(&current, counts(name), &problems, now);
        desired.activate_gateway = active_gateways
            .get(name)
            .map(|n| n.join(","))
            .unwrap_or_default();
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

/// The kinds whose `Validated` condition FerrOVN writes besides Subnet's.
const CONDITION_KINDS: [Kind; 3] = [Kind::Vpc, Kind::Vlan, Kind::IpPool];

fn conditions_of(o: &Object) -> Option<&[Condition]> {
    Some(match o {
        Object::Vpc(v) => &v.status.as_ref()?.conditions,
        Object::Vlan(v) => &v.status.as_ref()?.conditions,
        Object::IpPool(p) => &p.status.as_ref()?.conditions,
        _ => return None,
    })
}

/// The `Validated` condition of every Vpc, Vlan and IPPool whose validity differs from what
/// its status says: `False` with the errors for a rejected object, `True` again for one that
/// was rejected before. A valid object that never was rejected gets no write at all.
pub fn plan_condition_writes(
    store: &ClusterStore,
    rejected: &[Rejection],
    now: &Time,
) -> Vec<PlannedWrite> {
    let mut out = Vec::new();
    for kind in CONDITION_KINDS {
        for o in store.of_kind(kind) {
            let current = conditions_of(o).unwrap_or_default();
            let rejection = rejected
                .iter()
                .find(|r| r.object.kind == kind.name() && r.object.name == o.name());
            let mut desired = current.to_vec();
            let changed = match rejection {
                Some(r) => set_condition(
                    &mut desired,
                    Condition::VALIDATED,
                    ConditionStatus::False,
                    "ValidationFailed",
                    &r.message(),
                    now,
                ),
                None if find_condition(current, Condition::VALIDATED)
                    .is_some_and(|c| c.status == ConditionStatus::False) =>
                {
                    set_condition(
                        &mut desired,
                        Condition::VALIDATED,
                        ConditionStatus::True,
                        "ValidationPassed",
                        "",
                        now,
                    )
                }
                None => false,
            };
            if changed {
                out.push(PlannedWrite {
                    target: Target::Status {
                        kind,
                        name: o.name().to_string(),
                    },
                    body: json!({ "status": { "conditions": desired } }),
                });
            }
        }
    }
    out
}

/// Where an Event about `object` lives: its namespace, or `default` for cluster-scoped ones.
fn event_namespace(object: &ObjectRef) -> String {
    object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

/// The Event's name: the object's name (cut to leave room) and a hash of kind and message, so
/// the same rejection always maps to the same Event.
pub fn event_name(rejection: &Rejection) -> String {
    object_event_name(&rejection.object, &rejection.message())
}

/// [`event_name`] for an object and its message.
fn object_event_name(object: &ObjectRef, message: &str) -> String {
    let hash = ferrovn_api::names::stable_hash(0, &[&object.kind, &object.name, message]);
    let base: String = object.name.chars().take(200).collect();
    format!("{base}.{hash:016x}")
}

/// Longest Event note the API server accepts.
const EVENT_NOTE_MAX: usize = 1024;

/// One `events.k8s.io/v1` Event per rejection (type `Warning`, reason `ValidationFailed`).
pub fn plan_events(rejected: &[Rejection], now: &Time) -> Vec<PlannedWrite> {
    rejected
        .iter()
        .map(|r| plan_object_event(&r.object, r.message(), now))
        .collect()
}

/// The `ValidationFailed` Warning Event about `object`, `message` as its note (cut to what the
/// API server accepts).
pub fn plan_object_event(object: &ObjectRef, message: String, now: &Time) -> PlannedWrite {
    let name = object_event_name(object, &message);
    let mut note = message;
    if note.len() > EVENT_NOTE_MAX {
        let mut cut = EVENT_NOTE_MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let (api_version, namespace) = match object.kind.as_str() {
        "Pod" | "Node" | "Namespace" => ("v1", object.namespace.clone()),
        "NetworkAttachmentDefinition" => ("k8s.cni.cncf.io/v1", object.namespace.clone()),
        "NetworkPolicy" => ("networking.k8s.io/v1", object.namespace.clone()),
        "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
            ("policy.networking.k8s.io/v1alpha1", None)
        }
        _ => (ferrovn_api::crd::API_VERSION, None),
    };
    let namespace_of_event = event_namespace(object);
    let mut regarding = json!({
        "apiVersion": api_version,
        "kind": object.kind,
        "name": object.name,
    });
    if let Some(ns) = namespace {
        regarding["namespace"] = Value::String(ns);
    }
    PlannedWrite {
        target: Target::Event {
            namespace: namespace_of_event.clone(),
            name: name.clone(),
        },
        body: json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": { "name": name, "namespace": namespace_of_event },
            "eventTime": now.0.to_string(),
            "reportingController": EVENT_REPORTER,
            "reportingInstance": FIELD_MANAGER,
            "action": "Validate",
            "reason": "ValidationFailed",
            "type": "Warning",
            "note": note,
            "regarding": regarding,
        }),
    }
}

/// `reportingController` of FerrOVN's Events.
pub const EVENT_REPORTER: &str = "ferrovn.io/controller";

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
    /// Vpc, Vlan and IPPool statuses.
    pub statuses_patched: usize,
    pub events_created: usize,
    /// IP objects created or patched.
    pub ips_written: usize,
    pub ips_deleted: usize,
    /// Built-in subnets' Subnet objects created.
    pub subnets_created: usize,
    /// The objects as the apiserver returned them (fresher than the watch may be yet).
    pub updated: Vec<Object>,
    /// One line per failed write (retried at the next pass).
    pub failures: Vec<String>,
    /// One line per Event the API server refused (not retried before the next pass).
    pub event_failures: Vec<String>,
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

    /// The object as the API server returned it (`None` for a created Event).
    async fn send_one(&self, w: &PlannedWrite) -> Result<Option<Object>, kube::Error> {
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
                    .map(|p| Some(Object::Pod(Box::new(p))))
            }
            Target::Node { name } => Api::<Node>::all(self.client.clone())
                .patch(name, &params, &patch)
                .await
                .map(|n| Some(Object::Node(Box::new(n)))),
            Target::SubnetStatus { name } => Api::<Subnet>::all(self.client.clone())
                .patch_status(name, &params, &patch)
                .await
                .map(|s| Some(Object::Subnet(Box::new(s)))),
            Target::Status { kind, name } => {
                let c = self.client.clone();
                match kind {
                    Kind::Vpc => Api::<Vpc>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::Vpc(Box::new(o)))),
                    Kind::Vlan => Api::<Vlan>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::Vlan(Box::new(o)))),
                    Kind::SecurityGroup => Api::<SecurityGroup>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::SecurityGroup(Box::new(o)))),
                    Kind::AdminNetworkPolicy => Api::<AdminNetworkPolicy>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::AdminNetworkPolicy(Box::new(o)))),
                    Kind::BaselineAdminNetworkPolicy => Api::<BaselineAdminNetworkPolicy>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::BaselineAdminNetworkPolicy(Box::new(o)))),
                    _ => Api::<IpPool>::all(c)
                        .patch_status(name, &params, &patch)
                        .await
                        .map(|o| Some(Object::IpPool(Box::new(o)))),
                }
            }
            Target::IpCreate { .. } => {
                let ip: Ip =
                    serde_json::from_value(w.body.clone()).map_err(kube::Error::SerdeError)?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                Api::<Ip>::all(self.client.clone())
                    .create(&params, &ip)
                    .await
                    .map(|o| Some(Object::Ip(Box::new(o))))
            }
            Target::SubnetCreate { .. } => {
                let subnet: Subnet =
                    serde_json::from_value(w.body.clone()).map_err(kube::Error::SerdeError)?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                Api::<Subnet>::all(self.client.clone())
                    .create(&params, &subnet)
                    .await
                    .map(|o| Some(Object::Subnet(Box::new(o))))
            }
            Target::Ip { name } => Api::<Ip>::all(self.client.clone())
                .patch(name, &params, &patch)
                .await
                .map(|o| Some(Object::Ip(Box::new(o)))),
            Target::IpDelete { name } => Api::<Ip>::all(self.client.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| None),
            Target::Event { namespace, .. } => {
                let event: Event =
                    serde_json::from_value(w.body.clone()).map_err(kube::Error::SerdeError)?;
                Api::<Event>::namespaced(self.client.clone(), namespace)
                    .create(&PostParams::default(), &event)
                    .await
                    .map(|_| None)
            }
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
            let is_event = matches!(w.target, Target::Event { .. });
            match result {
                Ok(o) => {
                    match &w.target {
                        Target::Pod { .. } => report.pods_patched += 1,
                        Target::Node { .. } => report.nodes_patched += 1,
                        Target::SubnetStatus { .. } => report.subnets_patched += 1,
                        Target::Status { .. } => report.statuses_patched += 1,
                        Target::Event { .. } => report.events_created += 1,
                        Target::IpCreate { .. } | Target::Ip { .. } => report.ips_written += 1,
                        Target::IpDelete { .. } => report.ips_deleted += 1,
                        Target::SubnetCreate { .. } => report.subnets_created += 1,
                    }
                    report.updated.extend(o);
                }
                // The same rejection was announced before (by us or a previous leader).
                Err(kube::Error::Api(s)) if is_event && s.code == 409 => {
                    report.events_created += 1;
                }
                Err(kube::Error::Api(s)) if s.code == 404 && !is_event => {
                    tracing::debug!("{}: gone before write-back", w.target);
                }
                // An Event is a courtesy: its failure must not make the pass retry forever
                // (e.g. an RBAC without the events rule).
                Err(e) if is_event => report.event_failures.push(format!("{}: {e}", w.target)),
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

    fn bad_vpc() -> Rejection {
        Rejection {
            object: ObjectRef::cluster("Vpc", "blue"),
            errors: vec![ferrovn_api::validate::ValidationError::OutOfRange {
                object: ObjectRef::cluster("Vpc", "blue"),
                field: "spec.policyRoutes[0].priority".into(),
                value: 40000,
                range: "0..32767",
            }],
        }
    }

    #[test]
    fn rejected_vpc_gets_a_false_validated_condition_and_back_to_true_once_fixed() {
        let now =
            Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default());
        let mut store = ClusterStore::new();
        let mut vpc = Vpc::new("blue", Default::default());
        vpc.metadata.name = Some("blue".into());
        store.apply(super::super::store::Change::Applied(Object::Vpc(Box::new(
            vpc.clone(),
        ))));
        // valid and never rejected: no write at all
        assert!(plan_condition_writes(&store, &[], &now).is_empty());

        let writes = plan_condition_writes(&store, &[bad_vpc()], &now);
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes[0].target,
            Target::Status {
                kind: Kind::Vpc,
                name: "blue".into()
            }
        );
        let c = &writes[0].body["status"]["conditions"][0];
        assert_eq!(c["type"], "Validated");
        assert_eq!(c["status"], "False");
        assert_eq!(
            c["message"],
            "Vpc blue: spec.policyRoutes[0].priority 40000 is out of range 0..32767"
        );

        // the status now says so: nothing more to write while it stays rejected ...
        let conditions: Vec<Condition> =
            serde_json::from_value(writes[0].body["status"]["conditions"].clone())
                .unwrap_or_default();
        vpc.status = Some(ferrovn_api::crd::VpcStatus {
            conditions,
            ..Default::default()
        });
        store.apply(super::super::store::Change::Applied(Object::Vpc(Box::new(
            vpc,
        ))));
        assert!(plan_condition_writes(&store, &[bad_vpc()], &now).is_empty());
        // ... and once fixed it goes back to True
        let writes = plan_condition_writes(&store, &[], &now);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].body["status"]["conditions"][0]["status"], "True");
    }

    #[test]
    fn events_name_the_object_and_are_stable_per_message() {
        let now =
            Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default());
        let events = plan_events(&[bad_vpc()], &now);
        assert_eq!(events.len(), 1);
        let Target::Event { namespace, name } = &events[0].target else {
            panic!("not an event: {:?}", events[0].target)
        };
        // cluster-scoped objects' events live in `default`
        assert_eq!(namespace, "default");
        assert!(name.starts_with("blue."), "{name}");
        let e: Event = serde_json::from_value(events[0].body.clone()).unwrap_or_default();
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("ValidationFailed"));
        assert_eq!(
            e.note.as_deref(),
            Some("Vpc blue: spec.policyRoutes[0].priority 40000 is out of range 0..32767")
        );
        let regarding = e.regarding.unwrap_or_default();
        assert_eq!(regarding.kind.as_deref(), Some("Vpc"));
        assert_eq!(regarding.api_version.as_deref(), Some("kubeovn.io/v1"));
        assert_eq!(regarding.name.as_deref(), Some("blue"));
        // same rejection, same Event; another message, another Event
        assert_eq!(plan_events(&[bad_vpc()], &now)[0].target, events[0].target);
        let mut other = bad_vpc();
        if let ferrovn_api::validate::ValidationError::OutOfRange { value, .. } =
            &mut other.errors[0]
        {
            *value = 50000;
        }
        assert_ne!(plan_events(&[other], &now)[0].target, events[0].target);
    }
}
