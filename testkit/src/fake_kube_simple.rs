//! A small fake Kubernetes API server for the node agent's cluster-mode tests: one Node and some Pods, served with
//! GET and JSON merge PATCH, Status bodies for errors, and every request recorded. The same
//! state and handler answer through a tower-test mock (`fake_with`, for a `kube::Client` in the
//! test) or through whatever transport a test runs itself (`Fake::answer`, e.g. real HTTP for
//! the agent binary).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the API server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What the API server holds: at most one Node, and Pods by (namespace, name).
#[derive(Default)]
pub struct FakeState {
    pub node: Option<Value>,
    pub pods: BTreeMap<(String, String), Value>,
}

impl FakeState {
    pub fn with_node(node: Value) -> Self {
        FakeState {
            node: Some(node),
            ..Default::default()
        }
    }

    /// Stores a Pod object under its own `metadata.namespace` / `metadata.name`.
    pub fn insert_pod(&mut self, pod: Value) {
        let key = (
            pod["metadata"]["namespace"]
                .as_str()
                .expect("pod namespace")
                .to_string(),
            pod["metadata"]["name"]
                .as_str()
                .expect("pod name")
                .to_string(),
        );
        self.pods.insert(key, pod);
    }
}

/// What the fake answers: status and body for a request.
pub type Handler = dyn Fn(&Seen, &mut FakeState) -> (u16, String) + Send + Sync;

/// The server's state, its handler and the requests it answered (cheap to clone: all shared).
#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<FakeState>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Arc<Handler>,
}

impl Fake {
    pub fn new(state: FakeState, handler: Arc<Handler>) -> Self {
        Fake {
            state: Arc::new(Mutex::new(state)),
            seen: Arc::new(Mutex::new(Vec::new())),
            handler,
        }
    }

    /// Answers one request and records it.
    pub fn answer(&self, seen: Seen) -> (u16, String) {
        let out = (self.handler)(&seen, &mut self.state.lock().expect("lock"));
        self.seen.lock().expect("lock").push(seen);
        out
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// `metadata.annotations` of the Pod `ns/name`.
    pub fn pod_annotations(&self, ns: &str, name: &str) -> Value {
        self.state.lock().expect("lock").pods[&(ns.to_string(), name.to_string())]["metadata"]
            ["annotations"]
            .clone()
    }

    pub fn node(&self) -> Value {
        self.state.lock().expect("lock").node.clone().expect("node")
    }
}

/// A `Status` error body as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code})
        .to_string(),
    )
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

/// Applies a merge patch body to `object`, or the 400 the API server gives for a bad body.
fn merge_patch(object: &mut Value, body: &[u8]) -> (u16, String) {
    match serde_json::from_slice::<Value>(body) {
        Ok(patch) => {
            merge_annotations(object, &patch);
            (200, object.to_string())
        }
        Err(e) => status(400, "BadRequest", &e.to_string()),
    }
}

/// An API server with one Node and some Pods: GET and merge PATCH of both.
pub fn default_handler(seen: &Seen, st: &mut FakeState) -> (u16, String) {
    let path = seen.path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let merge = seen.content_type.as_deref() == Some("application/merge-patch+json");
    match (seen.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "v1", "nodes", name]) => match &st.node {
            Some(n) if n["metadata"]["name"] == *name => (200, n.to_string()),
            _ => not_found("nodes", name),
        },
        ("PATCH", ["api", "v1", "nodes", name]) if merge => {
            match st.node.as_mut().filter(|n| n["metadata"]["name"] == *name) {
                Some(node) => merge_patch(node, &seen.body),
                None => not_found("nodes", name),
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match st.pods.get(&(ns.to_string(), name.to_string())) {
                Some(p) => (200, p.to_string()),
                None => not_found("pods", name),
            }
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name]) if merge => {
            match st.pods.get_mut(&(ns.to_string(), name.to_string())) {
                Some(pod) => merge_patch(pod, &seen.body),
                None => not_found("pods", name),
            }
        }
        ("PATCH", _) => status(
            415,
            "UnsupportedMediaType",
            "only merge patches are served by this fake",
        ),
        _ => status(405, "MethodNotAllowed", "unexpected request"),
    }
}

/// A `kube::Client` talking to a fake answering with `handler` (through a tower-test mock).
pub fn fake_with(state: FakeState, handler: Arc<Handler>) -> (kube::Client, Fake) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = Fake::new(state, handler);
    let server = fake.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("body").to_bytes().to_vec();
            let (code, text) = server.answer(Seen {
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
            });
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

/// A `kube::Client` talking to a fake answering with `default_handler`.
pub fn fake(state: FakeState) -> (kube::Client, Fake) {
    fake_with(state, Arc::new(default_handler))
}

/// A Node as the API server returns it (trimmed status), labelled with its OVS datapath type.
pub fn node_json(name: &str, ovs_dp_type: &str, annotations: Value) -> Value {
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
                "ovn.kubernetes.io/ovs_dp_type": ovs_dp_type
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

/// A pending web Pod on `node`, with the annotations given (e.g. the controller's allocation).
pub fn pod_json(ns: &str, name: &str, node: &str, annotations: Value) -> Value {
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
            "nodeName": node,
            "containers": [{"name": "web", "image": "nginx:1.27"}]
        },
        "status": {"phase": "Pending"}
    })
}
