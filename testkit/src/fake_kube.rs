//! An in-process fake of the kube-apiserver's HTTP API, wired into `kube::Client` through
//! tower-test's `mock::pair`. It speaks the real wire format: lists with
//! `metadata.resourceVersion` and `items` (core items without kind/apiVersion, as the
//! apiserver sends them), watch streams of `{"type":"ADDED","object":{...}}` lines resuming
//! from a resourceVersion, `410 Expired` in the stream for a compacted resourceVersion, Status
//! objects for 404 / 409 (shapes in `testkit/fixtures/kube/`), optimistic concurrency on PUT, DELETE,
//! JSON merge patches (RFC 7386, only with `application/merge-patch+json`), and the `/status`
//! subresource. Every request is recorded (method, path, query, content type, body) so tests
//! assert exactly what the controller or the node agent sent. Failures a test wants (a 403 from
//! RBAC, a 500 from etcd, a body that is not JSON) come from [`FakeApi::intercept`] and
//! [`FakeApi::fail_once`]. The node agent's binary reaches it over real HTTP
//! ([`FakeApi::serve_http`], or [`FakeApi::serve_http_on`] with a listener bound inside the
//! node's network namespace).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kube");

pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// A fixture file as JSON.
pub fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A resource type the fake serves.
#[derive(Debug, Clone)]
struct ResourceType {
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
    namespaced: bool,
    /// Core types' list items carry no kind/apiVersion on the wire.
    core: bool,
}

const TYPES: &[ResourceType] = &[
    ResourceType {
        prefix: "/apis/events.k8s.io/v1",
        plural: "events",
        kind: "Event",
        api_version: "events.k8s.io/v1",
        namespaced: true,
        core: false,
    },
    ResourceType {
        prefix: "/api/v1",
        plural: "namespaces",
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
        core: true,
    },
    ResourceType {
        prefix: "/api/v1",
        plural: "pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
        core: true,
    },
    ResourceType {
        prefix: "/api/v1",
        plural: "nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
        core: true,
    },
    ResourceType {
        prefix: "/api/v1",
        plural: "services",
        kind: "Service",
        api_version: "v1",
        namespaced: true,
        core: true,
    },
    ResourceType {
        prefix: "/apis/discovery.k8s.io/v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        namespaced: true,
        // Built-in types' list items carry no kind/apiVersion either.
        core: true,
    },
    ResourceType {
        prefix: "/apis/networking.k8s.io/v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        api_version: "networking.k8s.io/v1",
        namespaced: true,
        core: true,
    },
    ResourceType {
        prefix: "/apis/policy.networking.k8s.io/v1alpha1",
        plural: "adminnetworkpolicies",
        kind: "AdminNetworkPolicy",
        api_version: "policy.networking.k8s.io/v1alpha1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/policy.networking.k8s.io/v1alpha1",
        plural: "baselineadminnetworkpolicies",
        kind: "BaselineAdminNetworkPolicy",
        api_version: "policy.networking.k8s.io/v1alpha1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        api_version: "coordination.k8s.io/v1",
        namespaced: true,
        core: true,
    },
    ResourceType {
        prefix: "/apis/k8s.cni.cncf.io/v1",
        plural: "network-attachment-definitions",
        kind: "NetworkAttachmentDefinition",
        api_version: "k8s.cni.cncf.io/v1",
        namespaced: true,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "subnets",
        kind: "Subnet",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "vpcs",
        kind: "Vpc",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "ips",
        kind: "IP",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "ippools",
        kind: "IPPool",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "vlans",
        kind: "Vlan",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "provider-networks",
        kind: "ProviderNetwork",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
    ResourceType {
        prefix: "/apis/kubeovn.io/v1",
        plural: "security-groups",
        kind: "SecurityGroup",
        api_version: "kubeovn.io/v1",
        namespaced: false,
        core: false,
    },
];

fn resource_type(kind: &str) -> &'static ResourceType {
    TYPES
        .iter()
        .find(|t| t.kind == kind)
        .unwrap_or_else(|| panic!("fake apiserver does not serve kind {kind}"))
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// The HTTP status the fake answered.
    pub status: u16,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true")
    }

    /// A query parameter's value.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }
}

struct Watch {
    prefix: &'static str,
    plural: &'static str,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (kind, namespace, name) -> object (with kind/apiVersion).
    objects: BTreeMap<(String, String, String), Value>,
    /// Every change: (rv, kind, event type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a resourceVersion at or below this get 410 Expired.
    compacted: u64,
    watches: Vec<Watch>,
    requests: Vec<Recorded>,
    next_uid: u64,
    /// Plurals answered with 404 (a CRD that is not installed).
    unserved: Vec<String>,
    /// (method, path) answered once with 500 InternalError.
    fail_once: Vec<(String, String)>,
    /// Consulted before routing; the first answer wins.
    intercepts: Vec<Arc<Intercept>>,
}

/// A test's own answer for some requests: `Some((status, body))` answers (the body as sent,
/// JSON or not), `None` leaves the request to the fake.
pub type Intercept = dyn Fn(&Recorded) -> Option<(u16, String)> + Send + Sync;

/// A `Status` error body as the API server sends it (e.g. for [`FakeApi::intercept`]).
pub fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
    .to_string()
}

/// A Node as the API server returns it (trimmed status), labelled with its OVS datapath type.
pub fn node_json(name: &str, ovs_dp_type: &str, annotations: Value) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": "5b3c8f0e-2a55-4c3e-9d0c-7f1e2b9d4a10",
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

/// The fake apiserver. Clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

struct Route {
    ty: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix_len, rest) = match *segs.first()? {
        "api" => (2, segs.get(2..)?),
        "apis" => (3, segs.get(3..)?),
        _ => return None,
    };
    let prefix = format!("/{}", segs[..prefix_len].join("/"));
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = *rest.first()?;
    let ty = TYPES
        .iter()
        .find(|t| t.prefix == prefix && t.plural == plural)?;
    Some(Route {
        ty,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn once(bytes: Vec<u8>) -> FakeBody {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn json_response(status: StatusCode, v: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(once(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(once(Vec::new())))
}

/// A Status object shaped like the fixture `file`, for `name` of `ty`.
fn status(file: &str, ty: &ResourceType, name: &str, message: String) -> Value {
    let mut s = fixture(file);
    s["message"] = Value::String(message);
    s["details"]["name"] = Value::String(name.to_string());
    s["details"]["kind"] = Value::String(ty.plural.to_string());
    match ty.api_version.split_once('/') {
        Some((group, _)) => s["details"]["group"] = Value::String(group.to_string()),
        None => {
            if let Some(d) = s["details"].as_object_mut() {
                d.remove("group");
            }
        }
    }
    s
}

fn qualified(ty: &ResourceType) -> String {
    match ty.api_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", ty.plural),
        None => ty.plural.to_string(),
    }
}

fn not_found(ty: &ResourceType, name: &str) -> Response<FakeBody> {
    let msg = format!("{} \"{name}\" not found", qualified(ty));
    json_response(
        StatusCode::NOT_FOUND,
        &status("status-404.json", ty, name, msg),
    )
}

/// RFC 7386.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn object_namespace(o: &Value) -> String {
    o["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores an object (create or overwrite), logs and streams the event.
    fn put(&mut self, mut object: Value, event: &'static str) -> Value {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let ty = resource_type(&kind);
        let rv = self.bump();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        if object["metadata"]["uid"].is_null() {
            self.next_uid += 1;
            object["metadata"]["uid"] =
                Value::String(format!("00000000-0000-4000-8000-{:012}", self.next_uid));
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = Value::String("2026-11-27T10:00:00Z".into());
        }
        let ns = if ty.namespaced {
            object_namespace(&object)
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.objects
            .insert((kind.clone(), ns, name), object.clone());
        self.emit(rv, &kind, event, &object);
        object
    }

    fn emit(&mut self, rv: u64, kind: &str, event: &'static str, object: &Value) {
        self.log.push((rv, kind.to_string(), event, object.clone()));
        let ty = resource_type(kind);
        let ns = object_namespace(object);
        self.watches.retain(|w| {
            if w.prefix != ty.prefix || w.plural != ty.plural {
                return !w.tx.is_closed();
            }
            if w.namespace.as_ref().is_some_and(|n| *n != ns) {
                return !w.tx.is_closed();
            }
            w.tx.send(event_line(event, object)).is_ok()
        });
    }

    fn remove(&mut self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let mut object =
            self.objects
                .remove(&(kind.to_string(), ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.emit(rv, kind, "DELETED", &object);
        Some(object)
    }
}

impl FakeApi {
    pub fn new() -> Self {
        let fake = FakeApi::default();
        fake.lock().rv = 100;
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client talking to this fake (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<FakeBody>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = fake.serve(request).await;
                respond.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// Creates or replaces an object directly (as another client would), with events.
    pub fn apply(&self, object: Value) -> Value {
        let mut st = self.lock();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let ty = resource_type(&kind);
        let ns = if ty.namespaced {
            object_namespace(&object)
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let exists = st.objects.contains_key(&(kind, ns, name));
        st.put(object, if exists { "MODIFIED" } else { "ADDED" })
    }

    /// Deletes an object directly.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock().remove(kind, namespace, name)
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests that change something (not GET).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Ends every open watch stream (as an apiserver restart or a dropped connection does).
    pub fn break_watches(&self) {
        self.lock().watches.clear();
    }

    /// Forgets history: a watch resuming at or below the current resourceVersion gets
    /// `410 Expired`.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.rv;
        st.log.clear();
    }

    /// Answers the next `method path` request with 500 InternalError (as an apiserver with a
    /// failing etcd does).
    pub fn fail_once(&self, method: &str, path: &str) {
        self.lock()
            .fail_once
            .push((method.to_string(), path.to_string()));
    }

    /// Answers the requests `f` picks with its own status and body (before anything else).
    pub fn intercept(
        &self,
        f: impl Fn(&Recorded) -> Option<(u16, String)> + Send + Sync + 'static,
    ) {
        self.lock().intercepts.push(Arc::new(f));
    }

    /// `metadata.annotations` of an object (`Null` when it or its annotations do not exist).
    pub fn annotations(&self, kind: &str, namespace: &str, name: &str) -> Value {
        self.get(kind, namespace, name)
            .map(|o| o["metadata"]["annotations"].clone())
            .unwrap_or(Value::Null)
    }

    /// Serves `plural` no more: every request gets 404, as for a CRD that is not installed.
    pub fn unserve(&self, plural: &str) {
        self.lock().unserved.push(plural.to_string());
    }

    pub fn open_watches(&self) -> usize {
        let mut st = self.lock();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.len()
    }

    async fn serve(&self, request: Request<Body>) -> Response<FakeBody> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        self.respond(parts, bytes)
    }

    /// Serves the same API over real HTTP/1.1 on 127.0.0.1 (for the binary, through a
    /// kubeconfig). Returns the address; the server runs until the runtime ends.
    pub async fn serve_http(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        self.serve_listener(listener)
    }

    /// Serves over real HTTP/1.1 on a listener the caller bound (e.g. inside a network
    /// namespace, where the listening socket stays). Call inside a Tokio runtime; the server
    /// runs until the runtime ends.
    pub fn serve_http_on(&self, listener: std::net::TcpListener) -> std::net::SocketAddr {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        self.serve_listener(listener)
    }

    fn serve_listener(&self, listener: tokio::net::TcpListener) -> std::net::SocketAddr {
        let addr = listener.local_addr().expect("local addr");
        let fake = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let fake = fake.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(fake.respond(parts, bytes))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn respond(&self, parts: http::request::Parts, bytes: Bytes) -> Response<FakeBody> {
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path = parts.uri.path().to_string();
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .trim_start_matches('&')
            .to_string();
        let mut record = Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query,
            content_type: content_type.clone(),
            body: body.clone(),
            status: 0,
        };
        let response = self.route(&record, body);
        record.status = response.status().as_u16();
        self.lock().requests.push(record);
        response
    }

    fn route(&self, r: &Recorded, body: Option<Value>) -> Response<FakeBody> {
        let intercepts = self.lock().intercepts.clone();
        if let Some((code, text)) = intercepts.iter().find_map(|f| f(r)) {
            return Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(once(text.into_bytes()))
                .unwrap_or_else(|_| Response::new(once(Vec::new())));
        }
        {
            let mut st = self.lock();
            if let Some(i) = st
                .fail_once
                .iter()
                .position(|(m, p)| *m == r.method && *p == r.path)
            {
                st.fail_once.remove(i);
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"etcdserver: request timed out","reason":"InternalError","details":{"causes":[{"message":"etcdserver: request timed out"}]},"code":500}),
                );
            }
        }
        let unserved = |rt: &Route| self.lock().unserved.iter().any(|p| p == rt.ty.plural);
        let Some(rt) = route(&r.path).filter(|rt| !unserved(rt)) else {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}),
            );
        };
        let ty = rt.ty;
        let ns = rt.namespace.clone().unwrap_or_default();
        let mut st = self.lock();
        match (r.method.as_str(), rt.name.as_deref()) {
            ("GET", None) if r.is_watch() => {
                let from: u64 = r
                    .param("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(st.rv);
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                if from < st.compacted {
                    let mut line = fixture("watch-error-410.json");
                    line["object"]["message"] = Value::String(format!(
                        "too old resource version: {from} ({})",
                        st.compacted
                    ));
                    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                    bytes.push(b'\n');
                    let _ = tx.send(Bytes::from(bytes));
                    drop(tx);
                } else {
                    for (rv, kind, event, object) in st.log.iter() {
                        if *rv > from
                            && kind == ty.kind
                            && (rt.namespace.is_none() || object_namespace(object) == ns)
                        {
                            let _ = tx.send(event_line(event, object));
                        }
                    }
                    st.watches.push(Watch {
                        prefix: ty.prefix,
                        plural: ty.plural,
                        namespace: rt.namespace.clone(),
                        tx,
                    });
                }
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    let b = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap_or_else(|_| Response::new(once(Vec::new())))
            }
            ("GET", None) => {
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((k, n, _), _)| k == ty.kind && (rt.namespace.is_none() || *n == ns))
                    .map(|(_, o)| {
                        let mut o = o.clone();
                        if ty.core
                            && let Some(m) = o.as_object_mut()
                        {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        o
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", ty.kind),
                        "apiVersion": ty.api_version,
                        "metadata": {"resourceVersion": st.rv.to_string()},
                        "items": items,
                    }),
                )
            }
            ("GET", Some(name)) => {
                match st
                    .objects
                    .get(&(ty.kind.to_string(), ns.clone(), name.to_string()))
                {
                    Some(o) => json_response(StatusCode::OK, o),
                    None => not_found(ty, name),
                }
            }
            ("POST", None) => {
                let Some(mut object) = body else {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"kind":"Status","code":400}),
                    );
                };
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if st
                    .objects
                    .contains_key(&(ty.kind.to_string(), ns.clone(), name.clone()))
                {
                    let msg = format!("{} \"{name}\" already exists", qualified(ty));
                    return json_response(
                        StatusCode::CONFLICT,
                        &status("status-409-exists.json", ty, &name, msg),
                    );
                }
                if ty.namespaced {
                    object["metadata"]["namespace"] = Value::String(ns.clone());
                }
                object["kind"] = Value::String(ty.kind.into());
                object["apiVersion"] = Value::String(ty.api_version.into());
                let stored = st.put(object, "ADDED");
                json_response(StatusCode::CREATED, &stored)
            }
            ("PUT", Some(name)) => {
                let key = (ty.kind.to_string(), ns.clone(), name.to_string());
                let Some(held) = st.objects.get(&key).cloned() else {
                    return not_found(ty, name);
                };
                let Some(mut object) = body else {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"kind":"Status","code":400}),
                    );
                };
                let sent_rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if sent_rv != held["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                    let msg = format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        qualified(ty)
                    );
                    return json_response(
                        StatusCode::CONFLICT,
                        &status("status-409-conflict.json", ty, name, msg),
                    );
                }
                object["metadata"]["uid"] = held["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] =
                    held["metadata"]["creationTimestamp"].clone();
                object["kind"] = Value::String(ty.kind.into());
                object["apiVersion"] = Value::String(ty.api_version.into());
                let stored = st.put(object, "MODIFIED");
                json_response(StatusCode::OK, &stored)
            }
            ("PATCH", Some(name)) => {
                if r.content_type.as_deref() != Some("application/merge-patch+json") {
                    return json_response(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the fake only accepts application/merge-patch+json","reason":"UnsupportedMediaType","code":415}),
                    );
                }
                let key = (ty.kind.to_string(), ns.clone(), name.to_string());
                let Some(mut object) = st.objects.get(&key).cloned() else {
                    return not_found(ty, name);
                };
                let patch = body.unwrap_or(Value::Null);
                match rt.subresource.as_deref() {
                    // The status subresource changes only status.
                    Some("status") => merge_patch(&mut object["status"], &patch["status"]),
                    // The main resource ignores status changes.
                    _ => {
                        let status = object.get("status").cloned();
                        merge_patch(&mut object, &patch);
                        if let (Some(s), Some(m)) = (status, object.as_object_mut()) {
                            m.insert("status".into(), s);
                        }
                    }
                }
                let stored = st.put(object, "MODIFIED");
                json_response(StatusCode::OK, &stored)
            }
            ("DELETE", Some(name)) => match st.remove(ty.kind, &ns, name) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found(ty, name),
            },
            _ => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"MethodNotAllowed","code":405}),
            ),
        }
    }
}

/// One RBAC rule of `deploy/rbac.yaml`; `namespace` is the Role's (None: ClusterRole).
#[derive(Debug, Clone)]
pub struct Rule {
    pub namespace: Option<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules of the ClusterRole and Role in `deploy/rbac.yaml`.
pub fn rbac_rules() -> Vec<Rule> {
    use serde::Deserialize;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
        let namespace = match v["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
            ),
            _ => continue,
        };
        for r in v["rules"].as_array().into_iter().flatten() {
            out.push(Rule {
                namespace: namespace.clone(),
                api_groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                resource_names: strings(&r["resourceNames"]),
            });
        }
    }
    out
}

/// Requests `deploy/rbac.yaml` would forbid, as "VERB group/resource ns/name" lines.
pub fn rbac_violations(requests: &[Recorded]) -> Vec<String> {
    let rules = rbac_rules();
    let mut out = Vec::new();
    for r in requests {
        let Some(rt) = route(&r.path) else {
            out.push(format!("{} {}: not an API path", r.method, r.path));
            continue;
        };
        let group = rt
            .ty
            .prefix
            .strip_prefix("/apis/")
            .and_then(|g| g.split('/').next())
            .unwrap_or("");
        let resource = match &rt.subresource {
            Some(s) => format!("{}/{s}", rt.ty.plural),
            None => rt.ty.plural.to_string(),
        };
        let verb = match (r.method.as_str(), &rt.name) {
            ("GET", None) if r.is_watch() => "watch",
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => "unknown",
        };
        let allowed = rules.iter().any(|rule| {
            (rule.namespace.is_none() || rule.namespace == rt.namespace)
                && rule.api_groups.iter().any(|g| g == group)
                && rule.resources.contains(&resource)
                && rule.verbs.iter().any(|v| v == verb)
                && (rule.resource_names.is_empty()
                    || rt
                        .name
                        .as_ref()
                        .is_some_and(|n| rule.resource_names.contains(n)))
        });
        if !allowed {
            out.push(format!(
                "{verb} {group}/{resource} {}/{}",
                rt.namespace.as_deref().unwrap_or(""),
                rt.name.as_deref().unwrap_or("")
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}
