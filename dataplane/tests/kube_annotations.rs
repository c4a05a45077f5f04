//! Cluster-mode annotation writes against a fake API server (tower-test): the vhost-user pod
//! annotation set and removed as JSON merge patches of the Pod (through the same
//! `VhostConfig.annotations` field the agent uses), the offload node annotations patched onto the
//! Node (only the differing keys), and API failures turned into errors naming the pod or node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrovn_dataplane::alloc::PodRef;
use ferrovn_dataplane::dpdk::vhost::{
    PodAnnotator, VhostConfig, VhostError, VhostUserInfo, annotation_key, annotations_for,
};
use ferrovn_dataplane::kube_api::{KubeNodeSink, KubePodAnnotator};
use ferrovn_dataplane::offload::{
    HW_OFFLOAD_ANNOTATION, OffloadStart, RESTART_REASONS_ANNOTATION, RESTART_REQUIRED_ANNOTATION,
};
use ferrovn_dataplane::report::NodeReportSink;
use ferrovn_dataplane::sriov::pci_annotation;
use ferrovn_hwoffload::{OffloadSettings, plan_offload_config};
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct FakeState {
    node: Option<Value>,
    pods: BTreeMap<(String, String), Value>,
}

type Handler = dyn Fn(&Seen, &mut FakeState) -> (u16, String) + Send + Sync;

struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
    fn pod_annotations(&self, ns: &str, name: &str) -> Value {
        self.state.lock().expect("lock").pods[&(ns.to_string(), name.to_string())]["metadata"]
            ["annotations"]
            .clone()
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code})
        .to_string(),
    )
}

/// RFC 7386 on `metadata.annotations`: strings set, `null` removes.
fn merge_annotations(object: &mut Value, patch: &Value) {
    let Some(ann) = patch["metadata"]["annotations"].as_object() else {
        return;
    };
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    let target = metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("annotations object");
    for (k, v) in ann {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// An API server with one Node and some Pods: GET and merge PATCH of both.
fn default_handler(seen: &Seen, st: &mut FakeState) -> (u16, String) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    let merge = seen.content_type.as_deref() == Some("application/merge-patch+json");
    match (seen.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "v1", "nodes", name]) => match &st.node {
            Some(n) if n["metadata"]["name"] == *name => (200, n.to_string()),
            _ => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
        },
        ("PATCH", ["api", "v1", "nodes", name]) if merge => {
            let Some(node) = st.node.as_mut().filter(|n| n["metadata"]["name"] == *name) else {
                return status(404, "NotFound", &format!("nodes \"{name}\" not found"));
            };
            let patch: Value = serde_json::from_slice(&seen.body).expect("patch body is JSON");
            merge_annotations(node, &patch);
            (200, node.to_string())
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name]) if merge => {
            let Some(pod) = st.pods.get_mut(&(ns.to_string(), name.to_string())) else {
                return status(404, "NotFound", &format!("pods \"{name}\" not found"));
            };
            let patch: Value = serde_json::from_slice(&seen.body).expect("patch body is JSON");
            merge_annotations(pod, &patch);
            (200, pod.to_string())
        }
        _ => status(415, "UnsupportedMediaType", "unexpected request"),
    }
}

fn fake_with(state: FakeState, handler: Arc<Handler>) -> (kube::Client, Fake) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(Mutex::new(state));
    let fake = Fake {
        seen: seen.clone(),
        state: state.clone(),
    };
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("body").to_bytes().to_vec();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body,
            };
            let (code, text) = handler(&s, &mut state.lock().expect("lock"));
            seen.lock().expect("lock").push(s);
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(text.into_bytes()))
                .expect("response");
            respond.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), fake)
}

fn fake(state: FakeState) -> (kube::Client, Fake) {
    fake_with(state, Arc::new(default_handler))
}

/// A running DPDK pod as the API server returns it, with the controller's allocation.
fn pod_json(ns: &str, name: &str) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "a3d0c1b2-7c1e-4f7e-8a8f-1c2d3e4f5a6b",
            "resourceVersion": "51120",
            "labels": {"app": "testpmd"},
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": "default/dpdk-net",
                "ovn.kubernetes.io/allocated": "true",
                "ovn.kubernetes.io/ip_address": "10.16.0.12",
                "ovn.kubernetes.io/mac_address": "0a:58:0a:10:00:0c"
            }
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "testpmd", "image": "dpdk:22.11",
                "volumeMounts": [{"name": "vhost", "mountPath": "/var/run/vhost"},
                                 {"name": "podinfo", "mountPath": "/etc/podinfo"}]}],
            "volumes": [{"name": "vhost", "emptyDir": {}},
                {"name": "podinfo", "downwardAPI": {"items": [{"path": "annotations",
                    "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]
        },
        "status": {"phase": "Pending"}
    })
}

fn node_json(name: &str, annotations: Value) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": "5b3c8f0e-2a55-4c3e-9d0c-7f1e2b9d4a10",
            "resourceVersion": "48213",
            "labels": {"kubernetes.io/hostname": name, "ovn.kubernetes.io/ovs_dp_type": "kernel"},
            "annotations": annotations
        },
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}]}
    })
}

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// What the agent hands a vhost-user pod (as `annotations_for` serialises it).
fn vhost_info() -> VhostUserInfo {
    serde_json::from_value(json!({
        "ifname": "net1",
        "provider": "dpdk-net.default.ovn",
        "volume": "vhost",
        "socket": "sock0",
        "mode": "server",
        "mac": "0a:58:0a:10:00:0c",
        "ips": ["10.16.0.12/16"],
        "gateways": ["10.16.0.1"],
        "mtu": 1400,
        "hostSocketPath": "/run/ferrovn/vhu/3f2a9c1d0b4e7/sock0",
        "ovsPort": "vh3f2a9c1d0b4e7"
    }))
    .expect("info")
}

fn one_pod(ns: &str, name: &str) -> FakeState {
    let mut state = FakeState::default();
    state
        .pods
        .insert((ns.into(), name.into()), pod_json(ns, name));
    state
}

#[tokio::test]
async fn vhost_annotation_is_patched_onto_the_pod_and_removed_with_null() {
    let (client, fake) = fake(one_pod("default", "testpmd-0"));
    // the agent's own field: the Kubernetes sink in place of the lab's files
    let cfg = VhostConfig {
        annotations: Some(Arc::new(KubePodAnnotator::new(client))),
        ..Default::default()
    };
    let sink = cfg.annotations.as_ref().expect("sink");
    let info = vhost_info();
    let set = annotations_for(&info).expect("annotations");
    let p = pod("default", "testpmd-0");
    sink.annotate(&p, &set, &[]).await.expect("annotate");

    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PATCH", "/api/v1/namespaces/default/pods/testpmd-0")
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_slice(&seen[0].body).expect("json body");
    let value = serde_json::to_string(&info).expect("info json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"vhost-user.ferrovn.io/net1": value}}})
    );
    // on the Pod now, next to the controller's annotations; the app reads it back as it was
    let on_pod = fake.pod_annotations("default", "testpmd-0");
    let read: VhostUserInfo = serde_json::from_str(
        on_pod[annotation_key("net1").as_str()]
            .as_str()
            .expect("a string"),
    )
    .expect("parses");
    assert_eq!(read, info);
    assert_eq!(on_pod["ovn.kubernetes.io/ip_address"], "10.16.0.12");

    // the same again (a retried ADD): nothing sent
    sink.annotate(&p, &set, &[]).await.expect("again");
    assert_eq!(fake.seen().len(), 1);

    // removal: the key as null, nothing else
    sink.annotate(&p, &Default::default(), &[annotation_key("net1")])
        .await
        .expect("remove");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].method, "PATCH");
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_slice(&seen[1].body).expect("json body");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"vhost-user.ferrovn.io/net1": null}}})
    );
    let on_pod = fake.pod_annotations("default", "testpmd-0");
    assert!(
        on_pod.get("vhost-user.ferrovn.io/net1").is_none(),
        "{on_pod}"
    );
    assert_eq!(on_pod["ovn.kubernetes.io/allocated"], "true");

    // set again after the removal: patched again (the remembered value went with it)
    sink.annotate(&p, &set, &[]).await.expect("re-annotate");
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_changed_value_patches_only_that_key() {
    let (client, fake) = fake(one_pod("dpdk", "app-1"));
    let sink = KubePodAnnotator::new(client);
    let p = pod("dpdk", "app-1");
    let first: BTreeMap<String, String> = [
        (pci_annotation("net1"), "0000:03:00.2".to_string()),
        (
            "offload.ferrovn.io/net1".to_string(),
            "{\"offloaded\":false}".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    sink.annotate(&p, &first, &[]).await.expect("first");
    let mut second = first.clone();
    second.insert(
        "offload.ferrovn.io/net1".into(),
        "{\"offloaded\":true}".into(),
    );
    sink.annotate(&p, &second, &[]).await.expect("second");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let body: Value = serde_json::from_slice(&seen[1].body).expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"offload.ferrovn.io/net1": "{\"offloaded\":true}"}}})
    );
    assert_eq!(
        fake.pod_annotations("dpdk", "app-1")["pci-address.ferrovn.io/net1"],
        "0000:03:00.2"
    );
}

fn pod_error(e: VhostError) -> String {
    match e {
        VhostError::PodAnnotations { .. } => e.to_string(),
        other => panic!("expected a pod annotation error, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_patch_failures_name_the_pod() {
    let fail_once = Arc::new(AtomicUsize::new(0));
    let fails = fail_once.clone();
    let handler: Arc<Handler> = Arc::new(move |s: &Seen, st: &mut FakeState| {
        if s.path.ends_with("/pods/locked") {
            status(
                403,
                "Forbidden",
                "pods \"locked\" is forbidden: User \"system:serviceaccount:kube-system:ferrovn-node\" cannot patch resource \"pods\" in API group \"\" in the namespace \"default\"",
            )
        } else if s.path.ends_with("/pods/flaky") && fails.fetch_add(1, Ordering::SeqCst) == 0 {
            status(500, "InternalError", "etcdserver: request timed out")
        } else {
            default_handler(s, st)
        }
    });
    let mut state = one_pod("default", "flaky");
    state.pods.insert(
        ("default".into(), "locked".into()),
        pod_json("default", "locked"),
    );
    let (client, fake) = fake_with(state, handler);
    let sink = KubePodAnnotator::new(client);
    let set = annotations_for(&vhost_info()).expect("annotations");

    let msg = pod_error(
        sink.annotate(&pod("default", "locked"), &set, &[])
            .await
            .expect_err("forbidden"),
    );
    assert!(
        msg.contains("pod default/locked") && msg.contains("403") && msg.contains("cannot patch"),
        "{msg}"
    );

    // the Pod was deleted before its ADD finished: setting fails, naming it
    let msg = pod_error(
        sink.annotate(&pod("default", "gone"), &set, &[])
            .await
            .expect_err("gone"),
    );
    assert!(
        msg.contains("pod default/gone") && msg.contains("not found"),
        "{msg}"
    );
    // ... while removing from a deleted Pod is done: its annotations went with it
    sink.annotate(
        &pod("default", "gone"),
        &Default::default(),
        &[annotation_key("net1")],
    )
    .await
    .expect("removal from a deleted pod");

    // a server error, then the retry goes out again (nothing remembered from the failure)
    let msg = pod_error(
        sink.annotate(&pod("default", "flaky"), &set, &[])
            .await
            .expect_err("500"),
    );
    assert!(
        msg.contains("pod default/flaky") && msg.contains("500") && msg.contains("timed out"),
        "{msg}"
    );
    sink.annotate(&pod("default", "flaky"), &set, &[])
        .await
        .expect("retry");
    let flaky: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/pods/flaky"))
        .collect();
    assert_eq!(flaky.len(), 2, "{flaky:?}");
    assert_eq!(flaky[0].body, flaky[1].body);
    assert!(
        fake.pod_annotations("default", "flaky")
            .get("vhost-user.ferrovn.io/net1")
            .is_some()
    );
}

#[tokio::test]
async fn names_that_are_not_kubernetes_names_never_reach_the_server() {
    let (client, fake) = fake(one_pod("default", "web-0"));
    let sink = KubePodAnnotator::new(client);
    let set = annotations_for(&vhost_info()).expect("annotations");
    for (ns, name) in [
        ("default", "../../nodes/node-a"),
        ("Default", "web-0"),
        ("default", ""),
        ("default", "web-0?dryRun=All"),
        ("kube system", "web-0"),
    ] {
        let msg = pod_error(
            sink.annotate(&pod(ns, name), &set, &[])
                .await
                .expect_err("bad name"),
        );
        assert!(
            msg.contains("not a valid Kubernetes object name"),
            "{ns}/{name}: {msg}"
        );
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

/// The offload outcome of a start where OVS already had the settings (after the restart the
/// previous start asked for).
fn offload_in_force() -> OffloadStart {
    let settings = OffloadSettings {
        hw_offload: true,
        tc_policy: Default::default(),
    };
    let first = plan_offload_config(&BTreeMap::new(), &settings);
    OffloadStart {
        settings: Some(settings),
        plan: plan_offload_config(&first.set, &settings),
    }
}

#[tokio::test]
async fn offload_node_annotations_patch_only_the_differing_keys() {
    // the Node as the previous start left it: restart required, with reasons
    let (client, fake) = fake(FakeState {
        node: Some(node_json(
            "node-a",
            json!({
                "node.alpha.kubernetes.io/ttl": "0",
                "ovn.kubernetes.io/chassis": "node-a",
                HW_OFFLOAD_ANNOTATION: "true",
                RESTART_REQUIRED_ANNOTATION: "true",
                RESTART_REASONS_ANNOTATION: "restart ovs-vswitchd: hw-offload false -> true"
            }),
        )),
        ..Default::default()
    });
    let start = offload_in_force();
    assert!(!start.restart_required());
    let sink = KubeNodeSink::new(client, "node-a");
    let mut changed = sink.publish(&start.annotations()).await.expect("publish");
    changed.sort();
    assert_eq!(
        changed,
        vec![RESTART_REASONS_ANNOTATION, RESTART_REQUIRED_ANNOTATION]
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("PATCH", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_slice(&seen[1].body).expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {
            RESTART_REQUIRED_ANNOTATION: "false",
            RESTART_REASONS_ANNOTATION: ""
        }}})
    );
    let node = fake.state.lock().expect("lock").node.clone().expect("node");
    assert_eq!(
        node["metadata"]["annotations"]["ovn.kubernetes.io/chassis"],
        "node-a"
    );
    assert_eq!(
        node["metadata"]["annotations"][HW_OFFLOAD_ANNOTATION],
        "true"
    );

    // the next start with the same outcome: a read, no patch
    assert!(
        sink.publish(&start.annotations())
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn offload_node_annotation_failures_name_the_node() {
    let handler: Arc<Handler> = Arc::new(|s: &Seen, st: &mut FakeState| {
        if s.method == "PATCH" {
            status(500, "InternalError", "etcdserver: leader changed")
        } else {
            default_handler(s, st)
        }
    });
    let (client, _fake) = fake_with(
        FakeState {
            node: Some(node_json("node-a", json!({}))),
            ..Default::default()
        },
        handler,
    );
    let annotations = offload_in_force().annotations();
    let e = KubeNodeSink::new(client.clone(), "node-a")
        .publish(&annotations)
        .await
        .expect_err("500");
    let msg = e.to_string();
    assert!(
        msg.contains("patching Node node-a") && msg.contains("500") && msg.contains("leader"),
        "{msg}"
    );
    let e = KubeNodeSink::new(client, "node-b")
        .publish(&annotations)
        .await
        .expect_err("no node");
    assert!(
        e.to_string().contains("Node node-b") && e.to_string().contains("not found"),
        "{e}"
    );
}
