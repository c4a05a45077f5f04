//! Cluster mode: the agent's Kubernetes API sources and sink.
//!
//! - [`KubeAllocations`]: pod allocations from the Pod's annotations
//!   (`GET /api/v1/namespaces/{ns}/pods/{name}`), the cluster twin of
//!   [`crate::alloc::FileAllocations`];
//! - [`node_labels`]: the Node's labels (`GET /api/v1/nodes/{name}`) for the profile decision;
//! - [`KubeNodeSink`]: node annotations as a JSON merge patch of only the keys that differ
//!   (`PATCH /api/v1/nodes/{name}`, `application/merge-patch+json`);
//! - [`KubePodAnnotator`]: pod annotations (vhost-user, SR-IOV PCI address, offload truth) as a
//!   JSON merge patch of the Pod (`PATCH /api/v1/namespaces/{ns}/pods/{name}`), the cluster
//!   twin of [`crate::dpdk::vhost::FileAnnotations`].
//!
//! Objects are read as raw JSON and only the fields used are checked, so a malformed object
//! gives an error naming the field (`metadata.annotations["..."]`) instead of a generic decode
//! failure, and never a panic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alloc::{AllocationError, AllocationSource, Annotations, PodAllocation, PodRef};
use crate::annotate::{AnnotateError, PodAnnotator};
use crate::report::{NodeReportSink, ReportError, annotations_patch};

/// Why a Kubernetes read failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: {reason}")]
    Api { what: String, reason: String },
    #[error("{what}: field {field}: {reason}")]
    Field {
        what: String,
        field: String,
        reason: String,
    },
    #[error("{what}: {name:?} is not a valid Kubernetes object name")]
    Name { what: String, name: String },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

/// A client from `kubeconfig` when given; otherwise the in-cluster service account, falling
/// back to `KUBECONFIG` / `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeSourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                KubeSourceError::Config(format!("kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    KubeSourceError::Config(format!("kubeconfig {}: {e}", path.display()))
                })?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::infer().await.map_err(|e| {
                KubeSourceError::Config(format!(
                    "no in-cluster service account ({in_cluster}) and no kubeconfig ({e})"
                ))
            })?,
        },
    };
    kube::Client::try_from(config).map_err(|e| KubeSourceError::Config(e.to_string()))
}

/// Kubernetes object names (DNS subdomain): what may go into a URL path unescaped.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// `GET path`; `Ok(None)` on 404.
async fn get_json(
    client: &kube::Client,
    path: &str,
    what: &str,
) -> Result<Option<Value>, KubeSourceError> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| KubeSourceError::Api {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    match client.request_text(request).await {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| KubeSourceError::Api {
                what: what.to_string(),
                reason: format!("response is not JSON: {e}"),
            }),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Api(status)) => Err(KubeSourceError::Api {
            what: what.to_string(),
            reason: format!("HTTP {}: {} {}", status.code, status.reason, status.message)
                .trim_end()
                .to_string(),
        }),
        Err(e) => Err(KubeSourceError::Api {
            what: what.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `metadata.<map>` of an object as strings (absent or null: empty). Errors name the field.
pub fn metadata_string_map(
    object: &Value,
    map: &str,
    what: &str,
) -> Result<Annotations, KubeSourceError> {
    let field_err = |field: String, reason: String| KubeSourceError::Field {
        what: what.to_string(),
        field,
        reason,
    };
    let Some(obj) = object.as_object() else {
        return Err(field_err(
            "(object)".into(),
            format!("expected an object, got {}", json_type(object)),
        ));
    };
    let metadata = match obj.get("metadata") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(field_err(
                "metadata".into(),
                format!("expected an object, got {}", json_type(other)),
            ));
        }
        None => return Err(field_err("metadata".into(), "missing".into())),
    };
    let entries = match metadata.get(map) {
        None | Some(Value::Null) => return Ok(Annotations::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(field_err(
                format!("metadata.{map}"),
                format!("expected an object of strings, got {}", json_type(other)),
            ));
        }
    };
    entries
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(field_err(
                format!("metadata.{map}[{k:?}]"),
                format!("expected a string, got {}", json_type(other)),
            )),
        })
        .collect()
}

/// The Node's labels (`GET /api/v1/nodes/{node}`); a missing Node is an error.
pub async fn node_labels(
    client: &kube::Client,
    node: &str,
) -> Result<Annotations, KubeSourceError> {
    let what = format!("Node {node}");
    if !valid_name(node) {
        return Err(KubeSourceError::Name {
            what,
            name: node.to_string(),
        });
    }
    let object = get_json(client, &format!("/api/v1/nodes/{node}"), &what)
        .await?
        .ok_or_else(|| KubeSourceError::NotFound { what: what.clone() })?;
    metadata_string_map(&object, "labels", &what)
}

/// The Node's annotations (`GET /api/v1/nodes/{node}`); `None` when the Node does not exist.
pub async fn node_annotations(
    client: &kube::Client,
    node: &str,
) -> Result<Option<Annotations>, KubeSourceError> {
    let what = format!("Node {node}");
    if !valid_name(node) {
        return Err(KubeSourceError::Name {
            what,
            name: node.to_string(),
        });
    }
    match get_json(client, &format!("/api/v1/nodes/{node}"), &what).await? {
        Some(object) => metadata_string_map(&object, "annotations", &what).map(Some),
        None => Ok(None),
    }
}

/// Pod allocations from the Pod object. With [`KubeAllocations::watching`] (what `ferrovn-node
/// --kube` uses) they come from a watch of the node's Pods and an ADD waits for the Pod's next
/// event. Without it each lookup is one GET, and GETs of the same pod are spaced by
/// `min_interval`, so a waiting pod costs at most a few GETs per second.
pub struct KubeAllocations {
    client: kube::Client,
    min_interval: Duration,
    last_get: Mutex<HashMap<PodRef, Instant>>,
    watch: Option<PodWatch>,
}

/// The Pods scheduled to this node, kept current by one watch (`fieldSelector=spec.nodeName=
/// <node>`): an ADD waiting for the controller's allocation wakes on the Pod's next event
/// instead of polling the API server.
pub struct PodWatch {
    store: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
    /// Bumped on every watch event; waiters subscribe before they look, so none is missed.
    generation: tokio::sync::watch::Sender<u64>,
    /// The watch has listed once (the store holds every Pod of the node).
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Starts watching the Pods of `node` (inside a tokio runtime). The watch re-lists with
    /// backoff after errors (410, dropped connections) on its own.
    pub fn start(client: kube::Client, node: &str) -> PodWatch {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
        let (store, writer) = reflector::store();
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let stream = reflector(writer, watcher(api, config)).default_backoff();
        let (gen_tx, ready_flag) = (generation.clone(), ready.clone());
        let node = node.to_string();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        ready_flag.store(true, std::sync::atomic::Ordering::Release);
                        tracing::debug!(node, "pod watch listed");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(node, error = %e, "pod watch failed; re-listing");
                        continue;
                    }
                }
                gen_tx.send_modify(|g| *g = g.wrapping_add(1));
            }
        });
        PodWatch {
            store,
            generation,
            ready,
            task,
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pod's annotations from the watch (`None`: not a Pod of this node, yet).
    fn annotations(&self, pod: &PodRef) -> Option<Annotations> {
        let key = kube::runtime::reflector::ObjectRef::new(&pod.name).within(&pod.namespace);
        let object = self.store.get(&key)?;
        Some(object.metadata.annotations.clone().unwrap_or_default())
    }
}

impl KubeAllocations {
    pub fn new(client: kube::Client) -> Self {
        KubeAllocations {
            client,
            min_interval: Duration::from_millis(250),
            last_get: Mutex::new(HashMap::new()),
            watch: None,
        }
    }

    /// Whether the Pod watch has listed once (lookups then come from it, not from GETs).
    pub fn watch_ready(&self) -> bool {
        self.watch.as_ref().is_some_and(PodWatch::is_ready)
    }

    /// Reads this node's Pods from a watch ([`PodWatch`]) instead of one GET per look; until the
    /// watch has listed once, lookups GET as without it.
    pub fn watching(mut self, node: &str) -> Self {
        self.watch = Some(PodWatch::start(self.client.clone(), node));
        self
    }

    /// Changes the spacing of GETs of one pod.
    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// How long to wait before GETting `pod` again; records the GET.
    fn reserve(&self, pod: &PodRef) -> Duration {
        let mut last = self.last_get.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // forget pods not asked for in a while: the map stays as small as the pods in flight
        last.retain(|_, t| now.duration_since(*t) < self.min_interval * 40);
        let wait = last
            .get(pod)
            .map(|t| (*t + self.min_interval).saturating_duration_since(now))
            .unwrap_or_default();
        last.insert(pod.clone(), now + wait);
        wait
    }

    /// The pod's annotations; `Ok(None)` when the Pod does not exist (yet).
    pub async fn pod_annotations(
        &self,
        pod: &PodRef,
    ) -> Result<Option<Annotations>, KubeSourceError> {
        let what = format!("pod {}/{}", pod.namespace, pod.name);
        for name in [&pod.namespace, &pod.name] {
            if !valid_name(name) {
                return Err(KubeSourceError::Name {
                    what,
                    name: name.clone(),
                });
            }
        }
        let wait = self.reserve(pod);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
        match get_json(&self.client, &path, &what).await? {
            None => Ok(None),
            Some(object) => metadata_string_map(&object, "annotations", &what).map(Some),
        }
    }
}

impl AllocationSource for KubeAllocations {
    async fn lookup(
        &self,
        pod: &PodRef,
        provider: &str,
    ) -> Result<Option<PodAllocation>, AllocationError> {
        if let Some(w) = self.watch.as_ref().filter(|w| w.is_ready()) {
            return match w.annotations(pod) {
                Some(a) => crate::alloc::allocation_from_annotations(&a, provider),
                None => Ok(None),
            };
        }
        let annotations = match self.pod_annotations(pod).await {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(AllocationError::Source {
                    source_name: format!("Kubernetes API, pod {}/{}", pod.namespace, pod.name),
                    reason: e.to_string(),
                });
            }
        };
        crate::alloc::allocation_from_annotations(&annotations, provider)
    }

    async fn wait_for(
        &self,
        pod: &PodRef,
        provider: &str,
        deadline: std::time::Instant,
    ) -> Result<Option<PodAllocation>, AllocationError> {
        let Some(w) = &self.watch else {
            // GETs of one pod are spaced by `min_interval` anyway
            return crate::alloc::poll_until(self, pod, provider, deadline, Duration::ZERO).await;
        };
        let mut changed = w.generation.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(a) = self.lookup(pod, provider).await? {
                return Ok(Some(a));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // before the first list the lookup GETs: look again now and then meanwhile
            let nap = if w.is_ready() {
                deadline - now
            } else {
                self.min_interval.max(crate::alloc::POLL_INTERVAL)
            };
            tokio::select! {
                r = changed.changed() => {
                    if r.is_err() {
                        // the watch task ended (never, short of a runtime shutdown): poll
                        return crate::alloc::poll_until(self, pod, provider, deadline, self.min_interval.max(crate::alloc::POLL_INTERVAL)).await;
                    }
                }
                () = tokio::time::sleep(nap.min(deadline - now)) => {}
            }
        }
    }
}

/// Node annotations on the Node object: GET, then a merge patch of only the differing keys
/// (none: no PATCH). Other annotations are never touched.
#[derive(Clone)]
pub struct KubeNodeSink {
    client: kube::Client,
    node: String,
}

impl KubeNodeSink {
    pub fn new(client: kube::Client, node: &str) -> Self {
        KubeNodeSink {
            client,
            node: node.to_string(),
        }
    }

    fn err(&self, op: &'static str, reason: impl ToString) -> ReportError {
        ReportError::Kube {
            op,
            node: self.node.clone(),
            reason: reason.to_string(),
        }
    }
}

impl NodeReportSink for KubeNodeSink {
    async fn publish(&self, annotations: &Annotations) -> Result<Vec<String>, ReportError> {
        let what = format!("Node {}", self.node);
        if !valid_name(&self.node) {
            return Err(self.err("reading", "not a valid Kubernetes object name"));
        }
        let path = format!("/api/v1/nodes/{}", self.node);
        let object = get_json(&self.client, &path, &what)
            .await
            .map_err(|e| self.err("reading", e))?
            .ok_or_else(|| self.err("reading", "not found"))?;
        let current = metadata_string_map(&object, "annotations", &what)
            .map_err(|e| self.err("reading", e))?;
        let patch = annotations_patch(&current, annotations);
        if patch.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::to_vec(&serde_json::json!({"metadata": {"annotations": patch}}))
            .map_err(|e| self.err("patching", e))?;
        let request = http::Request::patch(&path)
            .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .map_err(|e| self.err("patching", e))?;
        match self.client.request_text(request).await {
            Ok(_) => Ok(patch.into_keys().collect()),
            Err(kube::Error::Api(status)) => Err(self.err(
                "patching",
                format!("HTTP {}: {} {}", status.code, status.reason, status.message).trim_end(),
            )),
            Err(e) => Err(self.err("patching", e)),
        }
    }
    fn describe(&self) -> String {
        format!("Node {}", self.node)
    }
}

/// The body of a Pod annotation merge patch: `set` as strings, `remove` as `null` (a key in
/// both is set, as the file sink does). Keys of `set` whose value `written` already holds are
/// left out; removals are always sent (the agent may have restarted since it wrote them).
/// `None`: nothing to send.
pub fn pod_annotations_patch(
    written: Option<&Annotations>,
    set: &Annotations,
    remove: &[String],
) -> Option<Value> {
    let mut patch = serde_json::Map::new();
    for key in remove {
        if !set.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in set {
        if written.and_then(|w| w.get(key)) != Some(value) {
            patch.insert(key.clone(), Value::String(value.clone()));
        }
    }
    if patch.is_empty() {
        None
    } else {
        Some(serde_json::json!({"metadata": {"annotations": patch}}))
    }
}

/// Pod annotations on the Pod object: one merge patch per change, no read first (the ADD path
/// waits for it). What was last written per pod is remembered, so the periodic offload check
/// re-annotating unchanged values costs no request; entries not touched for
/// [`KubePodAnnotator::FORGET_AFTER`] are dropped (pods deleted without a DEL removing the keys).
///
/// A 404 on a patch that only removes keys is success (the Pod and its annotations are gone);
/// on a patch that sets keys it is an error naming the pod.
pub struct KubePodAnnotator {
    client: kube::Client,
    written: Mutex<HashMap<PodRef, (Instant, Annotations)>>,
}

impl std::fmt::Debug for KubePodAnnotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePodAnnotator").finish_non_exhaustive()
    }
}

impl KubePodAnnotator {
    pub const FORGET_AFTER: Duration = Duration::from_secs(600);

    pub fn new(client: kube::Client) -> Self {
        KubePodAnnotator {
            client,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<PodRef, (Instant, Annotations)>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn patch(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> Result<(), AnnotateError> {
        let who = format!("{}/{}", pod.namespace, pod.name);
        let err = |op: &'static str, reason: String| AnnotateError::PodAnnotations {
            op,
            pod: who.clone(),
            reason,
        };
        for name in [&pod.namespace, &pod.name] {
            if !valid_name(name) {
                return Err(err(
                    "patching",
                    format!("{name:?} is not a valid Kubernetes object name"),
                ));
            }
        }
        let body = {
            let mut written = self.written();
            let now = Instant::now();
            written.retain(|_, (t, _)| now.duration_since(*t) < Self::FORGET_AFTER);
            match pod_annotations_patch(written.get(pod).map(|(_, a)| a), set, remove) {
                Some(body) => body,
                None => {
                    if let Some(entry) = written.get_mut(pod) {
                        entry.0 = now;
                    }
                    return Ok(());
                }
            }
        };
        let body = serde_json::to_vec(&body).map_err(|e| err("patching", e.to_string()))?;
        let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
        let request = http::Request::patch(&path)
            .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .map_err(|e| err("patching", e.to_string()))?;
        let result = match self.client.request_text(request).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 && set.is_empty() => {
                self.written().remove(pod);
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(err("patching", "not found (the Pod is gone)".into()))
            }
            Err(kube::Error::Api(status)) => Err(err(
                "patching",
                format!("HTTP {}: {} {}", status.code, status.reason, status.message)
                    .trim_end()
                    .to_string(),
            )),
            Err(e) => Err(err("patching", e.to_string())),
        };
        let mut written = self.written();
        match result {
            Ok(()) => {
                let entry = written
                    .entry(pod.clone())
                    .or_insert_with(|| (Instant::now(), Annotations::new()));
                entry.0 = Instant::now();
                for key in remove {
                    entry.1.remove(key);
                }
                entry
                    .1
                    .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                if entry.1.is_empty() {
                    written.remove(pod);
                }
                Ok(())
            }
            Err(e) => {
                // unknown state on the server: the next call patches everything again
                written.remove(pod);
                Err(e)
            }
        }
    }
}

impl PodAnnotator for KubePodAnnotator {
    async fn annotate(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> Result<(), AnnotateError> {
        self.patch(pod, set, remove).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_that_go_into_paths() {
        assert!(valid_name("web-0"));
        assert!(valid_name("node-1.example.com"));
        for bad in ["", "a/b", "A", "x?y", "../etc", "a b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn string_maps_name_the_bad_field() {
        let ok = json!({"metadata": {"name": "n", "labels": {"a": "b"}}});
        assert_eq!(
            metadata_string_map(&ok, "labels", "Node n")
                .expect("ok")
                .get("a")
                .map(String::as_str),
            Some("b")
        );
        assert!(
            metadata_string_map(&ok, "annotations", "Node n")
                .expect("absent is empty")
                .is_empty()
        );
        let cases = [
            (
                json!({"metadata": {"annotations": {"k": 5}}}),
                "metadata.annotations[\"k\"]",
            ),
            (
                json!({"metadata": {"annotations": ["k"]}}),
                "metadata.annotations",
            ),
            (json!({"metadata": 3}), "metadata"),
            (json!({"kind": "Pod"}), "metadata"),
            (json!([1]), "(object)"),
        ];
        for (v, field) in cases {
            let e = metadata_string_map(&v, "annotations", "pod d/p").expect_err("bad");
            let msg = e.to_string();
            assert!(msg.contains(field) && msg.contains("pod d/p"), "{msg}");
        }
    }

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_patch_sets_strings_and_removes_with_null() {
        let set = ann(&[("vhost-user.ferrovn.io/net1", "{\"ifname\":\"net1\"}")]);
        assert_eq!(
            pod_annotations_patch(None, &set, &["sriov.ferrovn.io/net2".into()]),
            Some(json!({"metadata": {"annotations": {
                "vhost-user.ferrovn.io/net1": "{\"ifname\":\"net1\"}",
                "sriov.ferrovn.io/net2": null
            }}}))
        );
        // nothing asked: nothing sent
        assert_eq!(pod_annotations_patch(None, &ann(&[]), &[]), None);
    }

    #[test]
    fn pod_patch_leaves_out_what_was_written_but_always_removes() {
        let written = ann(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            pod_annotations_patch(Some(&written), &ann(&[("a", "1"), ("b", "2")]), &[]),
            None
        );
        assert_eq!(
            pod_annotations_patch(Some(&written), &ann(&[("a", "1"), ("b", "3")]), &[]),
            Some(json!({"metadata": {"annotations": {"b": "3"}}}))
        );
        // a removal is sent even when this agent never wrote the key (it may have restarted)
        assert_eq!(
            pod_annotations_patch(Some(&written), &ann(&[]), &["c".into()]),
            Some(json!({"metadata": {"annotations": {"c": null}}}))
        );
        // set and removed at once: set wins, as in the file sink
        assert_eq!(
            pod_annotations_patch(None, &ann(&[("a", "1")]), &["a".into()]),
            Some(json!({"metadata": {"annotations": {"a": "1"}}}))
        );
        // ... and when that value is already written there is nothing to send
        assert_eq!(
            pod_annotations_patch(
                Some(&ann(&[("c", "xy")])),
                &ann(&[("c", "xy")]),
                &["c".into()]
            ),
            None
        );
    }

    proptest::proptest! {
        /// Applied to any Pod whose annotations include what this agent wrote, the patch gives
        /// what the file sink gives: `set` in force, `remove` gone, everything else untouched.
        #[test]
        fn pod_patch_applied_matches_the_file_sink(
            others in proptest::collection::btree_map("[a-d]{1,2}", "[xy]{0,2}", 0..6),
            written in proptest::collection::btree_map("[a-d]{1,2}", "[xy]{0,2}", 0..4),
            set in proptest::collection::btree_map("[a-d]{1,2}", "[xy]{0,2}", 0..4),
            remove in proptest::collection::vec("[a-d]{1,2}", 0..3),
        ) {
            let mut on_pod = others.clone();
            on_pod.extend(written.clone());
            let mut expected = on_pod.clone();
            for k in &remove {
                expected.remove(k);
            }
            expected.extend(set.clone());
            let mut applied = on_pod.clone();
            if let Some(patch) = pod_annotations_patch(Some(&written), &set, &remove) {
                let entries = patch["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
                proptest::prop_assert!(!entries.is_empty());
                for (k, v) in entries {
                    match v {
                        Value::String(v) => { applied.insert(k, v); }
                        Value::Null => { applied.remove(&k); }
                        other => proptest::prop_assert!(false, "{other}"),
                    }
                }
            } else {
                // nothing to send: every removal is overridden by a value already written
                proptest::prop_assert!(remove.iter().all(|k| set.contains_key(k)), "{remove:?}");
            }
            proptest::prop_assert_eq!(applied, expected);
        }
    }
}
