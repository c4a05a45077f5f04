//! Cluster-mode seams of the node agent against a fake API server (tower-test): the exact
//! requests (method, path, content type, body) for Pod and Node reads and the Node annotation
//! merge patch, with Kubernetes-shaped objects and error Status bodies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrovn_dataplane::alloc::{AllocationError, AllocationSource, PRIMARY_PROVIDER, PodRef};
use ferrovn_dataplane::kube_api::{KubeAllocations, KubeNodeSink, node_labels};
use ferrovn_dataplane::report::NodeReportSink;
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

/// What the fake answers: status and body for a request.
type Handler = dyn Fn(&Seen, &mut FakeState) -> (u16, String) + Send + Sync;

#[derive(Default)]
struct FakeState {
    node: Option<Value>,
    pods: BTreeMap<(String, String), Value>,
}

struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn not_found(kind: &str, name: &str) -> (u16, String) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound",
            "details": {"name": name, "kind": kind}, "code": 404})
        .to_string(),
    )
}

/// An API server serving one Node (`/api/v1/nodes/<name>`, GET + merge PATCH) and Pods.
fn default_handler(seen: &Seen, st: &mut FakeState) -> (u16, String) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    match (seen.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "v1", "nodes", name]) => match &st.node {
            Some(n) if n["metadata"]["name"] == *name => (200, n.to_string()),
            _ => not_found("nodes", name),
        },
        ("PATCH", ["api", "v1", "nodes", name]) => {
            let Some(node) = st.node.as_mut().filter(|n| n["metadata"]["name"] == *name) else {
                return not_found("nodes", name);
            };
            let patch: Value = serde_json::from_slice(&seen.body).expect("patch body is JSON");
            if let Some(ann) = patch["metadata"]["annotations"].as_object() {
                let target = node["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .entry("annotations")
                    .or_insert_with(|| json!({}));
                for (k, v) in ann {
                    target[k] = v.clone();
                }
            }
            (200, node.to_string())
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match st.pods.get(&(ns.to_string(), name.to_string())) {
                Some(p) => (200, p.to_string()),
                None => not_found("pods", name),
            }
        }
        _ => (
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "unexpected request", "code": 500})
            .to_string(),
        ),
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

/// A Node as the API server returns it (trimmed status).
fn node_json(name: &str, annotations: Value) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": "5b3c8f0e-2a55-4c3e-9d0c-7f1e2b9d4a10",
            "resourceVersion": "48213",
            "creationTimestamp": "2026-11-20T09:12:44Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "ovn.kubernetes.io/ovs_dp_type": "userspace"
            },
            "annotations": annotations
        },
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.3"},
                {"type": "Hostname", "address": name}
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://2.0.5",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64",
                "kernelVersion": "6.1.0-28-amd64", "operatingSystem": "linux",
                "machineID": "0f1e", "systemUUID": "0f1e", "bootID": "0f1e",
                "kubeProxyVersion": ""}
        }
    })
}

/// A Pod with the allocation Kube-OVN's controller writes.
fn pod_json(ns: &str, name: &str, annotations: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "a3d0c1b2-7c1e-4f7e-8a8f-1c2d3e4f5a6b",
            "resourceVersion": "51120",
            "labels": {"app": "web"},
            "annotations": annotations
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "web", "image": "nginx:1.27"}]
        },
        "status": {"phase": "Pending"}
    })
}

fn allocated_annotations() -> Value {
    json!({
        "ovn.kubernetes.io/allocated": "true",
        "ovn.kubernetes.io/cidr": "10.16.0.0/16",
        "ovn.kubernetes.io/gateway": "10.16.0.1",
        "ovn.kubernetes.io/ip_address": "10.16.0.12",
        "ovn.kubernetes.io/logical_router": "ovn-cluster",
        "ovn.kubernetes.io/logical_switch": "ovn-default",
        "ovn.kubernetes.io/mac_address": "0a:58:0a:10:00:0c",
        "ovn.kubernetes.io/pod_nic_type": "veth-pair",
        "ovn.kubernetes.io/routed": "true"
    })
}

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn web0() -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: "web-0".into(),
    }
}

#[tokio::test]
async fn node_sink_patches_only_the_differing_keys_then_nothing() {
    let state = FakeState {
        node: Some(node_json(
            "node-a",
            json!({
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "ovn.kubernetes.io/chassis": "node-a",
                "ovn.kubernetes.io/tunnel_interface": "eth1"
            }),
        )),
        ..Default::default()
    };
    let (client, fake) = fake(state);
    let sink = KubeNodeSink::new(client, "node-a");
    let desired = ann(&[
        ("ovn.kubernetes.io/chassis", "node-a"),
        ("ovn.kubernetes.io/tunnel_interface", "eth0"),
        ("ferrovn.io/encap-ip", "172.18.0.3"),
        ("ferrovn.io/encap-type", "geneve"),
    ]);
    let mut changed = sink.publish(&desired).await.expect("publish");
    changed.sort();
    assert_eq!(
        changed,
        vec![
            "ferrovn.io/encap-ip",
            "ferrovn.io/encap-type",
            "ovn.kubernetes.io/tunnel_interface"
        ]
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("PATCH", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_slice(&seen[1].body).expect("json body");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {
            "ferrovn.io/encap-ip": "172.18.0.3",
            "ferrovn.io/encap-type": "geneve",
            "ovn.kubernetes.io/tunnel_interface": "eth0"
        }}})
    );
    // the server applied it; other annotations are still there
    let node = fake.state.lock().expect("lock").node.clone().expect("node");
    assert_eq!(
        node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"],
        "0"
    );
    assert_eq!(
        node["metadata"]["annotations"]["ovn.kubernetes.io/tunnel_interface"],
        "eth0"
    );

    // publishing the same again: a read, no patch
    let changed = sink.publish(&desired).await.expect("publish again");
    assert!(changed.is_empty(), "{changed:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].method, "GET");
}

#[tokio::test]
async fn node_sink_on_a_node_without_annotations_and_errors() {
    // a fresh Node may have no annotations map at all
    let mut bare = node_json("node-b", json!({}));
    bare["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let (client, fake) = fake(FakeState {
        node: Some(bare),
        ..Default::default()
    });
    let desired = ann(&[("ovn.kubernetes.io/chassis", "node-b")]);
    let changed = KubeNodeSink::new(client.clone(), "node-b")
        .publish(&desired)
        .await
        .expect("publish");
    assert_eq!(changed, vec!["ovn.kubernetes.io/chassis"]);
    let body: Value = serde_json::from_slice(&fake.seen()[1].body).expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"ovn.kubernetes.io/chassis": "node-b"}}})
    );

    // no such Node: an error naming it, no PATCH
    let e = KubeNodeSink::new(client, "node-x")
        .publish(&desired)
        .await
        .expect_err("missing node");
    assert!(e.to_string().contains("Node node-x"), "{e}");
    assert!(e.to_string().contains("not found"), "{e}");
    assert_eq!(fake.seen().len(), 3);

    // the API server refuses the patch (RBAC): the status is in the error
    let forbidden: Arc<Handler> = Arc::new(|s: &Seen, st: &mut FakeState| {
        if s.method == "PATCH" {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "nodes \"node-a\" is forbidden: User \"system:serviceaccount:kube-system:ferrovn-node\" cannot patch resource \"nodes\"",
                    "reason": "Forbidden", "code": 403})
                .to_string(),
            )
        } else {
            default_handler(s, st)
        }
    });
    let (client, _fake) = fake_with(
        FakeState {
            node: Some(node_json("node-a", json!({}))),
            ..Default::default()
        },
        forbidden,
    );
    let e = KubeNodeSink::new(client, "node-a")
        .publish(&desired)
        .await
        .expect_err("forbidden");
    let msg = e.to_string();
    assert!(
        msg.contains("patching Node node-a") && msg.contains("403") && msg.contains("forbidden"),
        "{msg}"
    );
}

#[tokio::test]
async fn node_sink_refuses_a_malformed_node_naming_the_field() {
    let (client, fake) = fake(FakeState {
        node: Some(node_json(
            "node-a",
            json!({"ovn.kubernetes.io/chassis": {"nested": true}}),
        )),
        ..Default::default()
    });
    let e = KubeNodeSink::new(client, "node-a")
        .publish(&ann(&[("ovn.kubernetes.io/chassis", "node-a")]))
        .await
        .expect_err("malformed");
    let msg = e.to_string();
    assert!(
        msg.contains("metadata.annotations[\"ovn.kubernetes.io/chassis\"]"),
        "{msg}"
    );
    // nothing written on a Node we could not read
    assert!(fake.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn node_labels_come_from_the_node() {
    let (client, fake) = fake(FakeState {
        node: Some(node_json("node-a", json!({}))),
        ..Default::default()
    });
    let labels = node_labels(&client, "node-a").await.expect("labels");
    assert_eq!(
        labels
            .get("ovn.kubernetes.io/ovs_dp_type")
            .map(String::as_str),
        Some("userspace")
    );
    let seen = fake.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/nodes/node-a")
    );
    let e = node_labels(&client, "node-z").await.expect_err("no node");
    assert!(e.to_string().contains("Node node-z"), "{e}");
}

#[tokio::test]
async fn pod_allocation_from_the_pod_object() {
    let mut state = FakeState::default();
    state.pods.insert(
        ("default".into(), "web-0".into()),
        pod_json("default", "web-0", allocated_annotations()),
    );
    let (client, fake) = fake(state);
    let src = KubeAllocations::new(client).with_min_interval(Duration::ZERO);
    let a = src
        .lookup(&web0(), PRIMARY_PROVIDER)
        .await
        .expect("ok")
        .expect("allocated");
    assert_eq!(a.logical_switch, "ovn-default");
    assert_eq!(a.mac.to_string(), "0a:58:0a:10:00:0c");
    assert_eq!(a.addresses, vec!["10.16.0.12/16".parse().expect("net")]);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/namespaces/default/pods/web-0")
    );

    // another provider on the same pod: not allocated
    assert_eq!(src.lookup(&web0(), "net1.default.ovn").await, Ok(None));
}

#[tokio::test]
async fn missing_pending_and_failing_pods() {
    let mut state = FakeState::default();
    // created, not yet allocated by the controller
    state.pods.insert(
        ("default".into(), "web-1".into()),
        pod_json(
            "default",
            "web-1",
            json!({"kubernetes.io/psp": "restricted"}),
        ),
    );
    // annotations of the wrong JSON type
    state.pods.insert(
        ("default".into(), "web-2".into()),
        pod_json(
            "default",
            "web-2",
            json!({"ovn.kubernetes.io/allocated": true}),
        ),
    );
    let broken: Arc<Handler> = Arc::new(|s: &Seen, st: &mut FakeState| {
        if s.path.ends_with("/pods/web-3") {
            (200, "{\"kind\":\"Pod\",\"metadata\":".into())
        } else if s.path.ends_with("/pods/web-4") {
            (
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
                .to_string(),
            )
        } else {
            default_handler(s, st)
        }
    });
    let (client, fake) = fake_with(state, broken);
    let src = KubeAllocations::new(client).with_min_interval(Duration::ZERO);
    let pod = |name: &str| PodRef {
        namespace: "default".into(),
        name: name.into(),
    };

    // 404: not there (yet)
    assert_eq!(src.lookup(&web0(), PRIMARY_PROVIDER).await, Ok(None));
    // no allocation annotations yet
    assert_eq!(src.lookup(&pod("web-1"), PRIMARY_PROVIDER).await, Ok(None));

    let source_error = |r: Result<_, AllocationError>| match r {
        Err(AllocationError::Source {
            source_name,
            reason,
        }) => format!("{source_name}: {reason}"),
        other => panic!("expected a source error, got {other:?}"),
    };
    let msg = source_error(src.lookup(&pod("web-2"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-2")
            && msg.contains("metadata.annotations[\"ovn.kubernetes.io/allocated\"]")
            && msg.contains("expected a string"),
        "{msg}"
    );
    let msg = source_error(src.lookup(&pod("web-3"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-3") && msg.contains("not JSON"),
        "{msg}"
    );
    let msg = source_error(src.lookup(&pod("web-4"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-4") && msg.contains("500") && msg.contains("timed out"),
        "{msg}"
    );
    // a name that cannot be a Pod's never reaches the API server
    let before = fake.seen().len();
    let msg = source_error(src.lookup(&pod("../nodes/x"), PRIMARY_PROVIDER).await);
    assert!(msg.contains("not a valid Kubernetes object name"), "{msg}");
    assert_eq!(fake.seen().len(), before);
}

#[tokio::test]
async fn lookups_of_one_waiting_pod_are_spaced() {
    let (client, fake) = fake(FakeState::default());
    let interval = Duration::from_millis(400);
    let src = KubeAllocations::new(client).with_min_interval(interval);
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(src.lookup(&web0(), PRIMARY_PROVIDER).await, Ok(None));
    }
    // three GETs, at least two intervals apart in total
    assert_eq!(fake.seen().len(), 3);
    assert!(started.elapsed() >= interval * 2, "{:?}", started.elapsed());
    // another pod is not held back by this one
    let other = PodRef {
        namespace: "default".into(),
        name: "web-9".into(),
    };
    let t = Instant::now();
    assert_eq!(src.lookup(&other, PRIMARY_PROVIDER).await, Ok(None));
    assert!(t.elapsed() < interval, "{:?}", t.elapsed());
}
