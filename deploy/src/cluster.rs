//! The lab's Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler from `make kube-bins`) that outlives `ferrovn-lab up`, deploy/ installed with
//! kubectl, the two Nodes registered (their kubelets take them over), the components'
//! kubeconfigs, the pods as the API server has them. The control plane itself is testkit's
//! (`ferrovn_testkit::kube`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrovn_control::manifest::{self, Manifest};
use ferrovn_testkit::kube::{ControlPlane, Options, binary};
use serde_json::Value;

/// Every controller runs: the lab's kubelets heartbeat their Nodes.
pub const DISABLED_CONTROLLERS: [&str; 0] = [];

/// Validity of ServiceAccount tokens the control plane issues: a lab may stay up for weeks.
pub const TOKEN_DURATION: &str = "720h";

/// The files of deploy/ the lab installs first (ferrovn.yaml follows with its lab overlay once
/// the nodes run, pods.rs).
pub const INSTALL: [&str; 4] = [
    "crds",
    "rbac.yaml",
    "node-rbac.yaml",
    "node-admission-policy.yaml",
];

/// What `up` needs before it starts anything: the binaries of `make kube-bins`.
pub fn preflight() -> anyhow::Result<PathBuf> {
    let mut missing = Vec::new();
    for b in ferrovn_testkit::kube::REQUIRED_BINARIES {
        if let Err(e) = binary(b) {
            missing.push(e.to_string());
        }
    }
    if let Some(first) = missing.first() {
        bail!("{first}");
    }
    Ok(binary("kubectl")?)
}

/// Starts the persistent control plane in `dir`; its connections to the kubelets (`kubectl
/// exec`, `logs`) go through the lab's egress proxy on `egress` (egress.rs).
pub fn start(dir: &Path, egress: &Path) -> anyhow::Result<ControlPlane> {
    let options = Options {
        disabled_controllers: DISABLED_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
        token_duration: Some(TOKEN_DURATION.into()),
        cluster_egress_uds: Some(egress.to_path_buf()),
        ..Default::default()
    };
    Ok(ControlPlane::start_persistent(dir, &options)?)
}

/// `kubectl apply -f path` as the admin, again for up to `within` while it fails: objects of
/// one apply can depend on each other (a Pod in a Namespace made by the same apply is refused
/// until the controller-manager has made the namespace's `default` ServiceAccount).
pub fn apply(cp: &ControlPlane, path: &Path, within: Duration) -> anyhow::Result<String> {
    let p = path.display().to_string();
    let start = Instant::now();
    loop {
        match cp.kubectl(&["apply", "-f", &p]) {
            Ok(o) => return Ok(o.stdout),
            Err(_) if start.elapsed() < within => std::thread::sleep(Duration::from_secs(1)),
            Err(e) => return Err(e).with_context(|| format!("kubectl apply -f {p}")),
        }
    }
}

/// deploy/'s CRDs (waited for until Established), RBAC and the node admission policy.
pub fn install(cp: &ControlPlane, deploy: &Path) -> anyhow::Result<()> {
    let crds = deploy.join(INSTALL[0]);
    cp.apply_crds(&crds)
        .with_context(|| format!("CRDs in {} applied and Established", crds.display()))?;
    for f in &INSTALL[1..] {
        apply(cp, &deploy.join(f), Duration::ZERO)?;
    }
    Ok(())
}

/// Registers the lab's Nodes from `nodes_yaml` (deploy/examples/00-nodes.yaml) and reports
/// each Ready with its capacity, as its kubelet would; lifts the not-ready taint the apiserver
/// put on them (the node lifecycle controller, which would, is off).
pub fn register_nodes(cp: &ControlPlane, nodes_yaml: &Path) -> anyhow::Result<()> {
    // The kubelets find them registered (labels, InternalIP) and take over their status.
    apply(cp, nodes_yaml, Duration::ZERO)?;
    Ok(())
}

/// One pod as the API server has it, beyond what [`Manifest`] keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub node: String,
    /// Deletion requested: the kubelet tears the sandbox down, then deletes the object.
    pub terminating: bool,
    pub annotations: BTreeMap<String, String>,
    pub phase: String,
    /// The PodScheduled condition's message when the scheduler could not place it.
    pub unschedulable: Option<String>,
}

/// The cluster's pods and NetworkAttachmentDefinitions.
#[derive(Debug, Default)]
pub struct ApiPods {
    pub manifest: Manifest,
    /// By `namespace/name`.
    pub meta: BTreeMap<String, PodMeta>,
}

/// Pods and NADs from `kubectl get -o json` (a List).
pub fn parse_pods(json_text: &str) -> anyhow::Result<ApiPods> {
    let v: Value = serde_json::from_str(json_text).context("kubectl get -o json")?;
    let mut meta = BTreeMap::new();
    for item in v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if item["kind"] != "Pod" {
            continue;
        }
        let m = &item["metadata"];
        let key = format!(
            "{}/{}",
            m["namespace"].as_str().unwrap_or("default"),
            m["name"].as_str().unwrap_or("")
        );
        let annotations = m["annotations"]
            .as_object()
            .map(|a| {
                a.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let unschedulable = item["status"]["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            })
            .map(|c| c["message"].as_str().unwrap_or("").to_string());
        meta.insert(
            key,
            PodMeta {
                uid: m["uid"].as_str().unwrap_or("").to_string(),
                node: item["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                terminating: m.get("deletionTimestamp").is_some_and(|t| !t.is_null()),
                annotations,
                phase: item["status"]["phase"].as_str().unwrap_or("").to_string(),
                unschedulable,
            },
        );
    }
    let manifest = manifest::load_str(json_text, "kube-apiserver")
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the cluster's pods")?;
    Ok(ApiPods { manifest, meta })
}

/// Every pod and NAD of the cluster.
pub fn list_pods(cp: &ControlPlane) -> anyhow::Result<ApiPods> {
    let out = cp
        .kubectl(&[
            "get",
            "pods,network-attachment-definitions",
            "-A",
            "-o",
            "json",
        ])
        .context("listing pods")?;
    parse_pods(&out.stdout)
}

/// `kubectl get nodes,subnets,ips` (our printer columns) and the pods, for the status.
pub fn describe(cp: &ControlPlane) -> String {
    let mut out = String::new();
    for args in [
        &["get", "nodes,subnets,ips", "-o", "wide"][..],
        &["get", "pods", "-A", "-o", "wide"][..],
    ] {
        out.push_str(&format!("$ kubectl {}\n", args.join(" ")));
        match cp.kubectl(args) {
            Ok(o) => out.push_str(&o.stdout),
            Err(e) => out.push_str(&format!("  ({e})\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pods_keeps_uid_node_deletion_and_annotations() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"demo","uid":"u-1",
            "deletionTimestamp":"2026-01-01T00:00:00Z","annotations":{"ovn.kubernetes.io/allocated":"true"}},
           "spec":{"nodeName":"lab-kernel","containers":[{"name":"c","image":"x"}]},"status":{"phase":"Pending"}},
          {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","namespace":"default","uid":"u-2"},
           "spec":{"containers":[{"name":"c","image":"x"}]},
           "status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","message":"0/2 nodes are available"}]}}
        ]}"#;
        let p = parse_pods(list).unwrap();
        assert_eq!(p.manifest.pods().count(), 2);
        let a = &p.meta["demo/a"];
        assert_eq!(a.uid, "u-1");
        assert_eq!(a.node, "lab-kernel");
        assert!(a.terminating);
        assert_eq!(a.annotations["ovn.kubernetes.io/allocated"], "true");
        let b = &p.meta["default/b"];
        assert!(!b.terminating && b.node.is_empty());
        assert_eq!(b.unschedulable.as_deref(), Some("0/2 nodes are available"));
    }
}
