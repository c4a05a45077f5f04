//! The lab's Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler from `make kube-bins`) that outlives `ferrovn-lab up`, deploy/ installed with
//! kubectl, the two Nodes registered, and what a kubelet would write until real kubelets run on
//! the lab nodes (issue 14): the Node's status (capacity, addresses, Ready) and each pod's status
//! once its network is plumbed. The control plane itself is testkit's (`ferrovn_testkit::kube`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrovn_control::manifest::{self, Manifest};
use ferrovn_testkit::kube::{ControlPlane, Options, binary};
use serde_json::{Value, json};

use crate::model::{NodeState, Profile};

/// Every controller runs: the lab's kubelets heartbeat their Nodes.
pub const DISABLED_CONTROLLERS: [&str; 0] = [];

/// Validity of the controller's and agents' ServiceAccount tokens: a lab may stay up for weeks.
pub const TOKEN_DURATION: &str = "720h";

/// The files of deploy/ the lab installs (not ferrovn.yaml: its images are not built yet).
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

/// The Node status a kubelet posts: capacity and allocatable (the scheduler fits pods by
/// them), the node's address (its tunnel endpoint, the only address a lab node has) and Ready.
pub fn node_status(node: &NodeState, cpus: u64, memory_kib: u64, hugepages_mib: u64) -> Value {
    let mut capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{memory_kib}Ki"),
        "pods": "110",
    });
    if node.profile == Profile::Dpdk && hugepages_mib > 0 {
        capacity["hugepages-2Mi"] = json!(format!("{hugepages_mib}Mi"));
    }
    json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": node.encap_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "FerrOVNLab",
                "message": "ferrovn-lab stands in for the kubelet: the node's OVS, ovn-controller and ferrovn-node run",
            }],
        }
    })
}

/// The pod status a kubelet writes once the sandbox's network is up: Running, the primary
/// interface's address as podIP/podIPs, the node's address as hostIP, and the conditions.
/// No containerStatuses: no container runs (issue 14 brings the kubelet and containerd).
pub fn pod_status(host_ip: &str, pod_ips: &[String]) -> Value {
    let condition = |t: &str| json!({"type": t, "status": "True"});
    json!({
        "status": {
            "phase": "Running",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ips.first().cloned().unwrap_or_default(),
            "podIPs": pod_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "conditions": [
                condition("PodReadyToStartContainers"),
                condition("Initialized"),
                condition("ContainersReady"),
                condition("Ready"),
                condition("PodScheduled"),
            ],
        }
    })
}

/// How often a status write is tried again after a conflict (the controller patches the same
/// objects' annotations meanwhile).
const STATUS_ATTEMPTS: usize = 8;

/// Writes `status` (merged into the object's, key by key) through the object's `status`
/// subresource as the user of `kubeconfig`: a GET of the object and a PUT of `<path>/status`.
/// (`kubectl patch --subresource=status` would first GET the status subresource, which the
/// Node authorizer does not grant a kubelet.)
fn put_status(
    cp: &ControlPlane,
    kubeconfig: &Path,
    get: &[&str],
    path: &str,
    status: &Value,
) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..STATUS_ATTEMPTS {
        let mut args = get.to_vec();
        args.extend(["-o", "json"]);
        let current = cp.kubectl_as(kubeconfig, &args, None)?;
        let mut object: Value =
            serde_json::from_str(&current.stdout).context("kubectl get -o json")?;
        if let (Some(have), Some(want)) = (
            object
                .as_object_mut()
                .map(|o| o.entry("status").or_insert_with(|| json!({}))),
            status.as_object(),
        ) && let Some(have) = have.as_object_mut()
        {
            for (k, v) in want {
                have.insert(k.clone(), v.clone());
            }
        }
        let body = object.to_string();
        match cp.kubectl_as(
            kubeconfig,
            &["replace", "--raw", path, "-f", "-"],
            Some(&body),
        ) {
            Ok(_) => return Ok(()),
            // stale resourceVersion: read again
            Err(e) if e.to_string().contains("Conflict") || e.to_string().contains("modified") => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
    match last {
        Some(e) => Err(anyhow::Error::new(e).context(format!("{STATUS_ATTEMPTS} conflicts"))),
        None => bail!("no attempt made"),
    }
}

/// The kubeconfig of a node's kubelet identity (`system:node:<name>` in `system:nodes`): the
/// Node authorizer and NodeRestriction let it write only its own Node and its own pods.
pub fn kubelet_kubeconfig(cp: &ControlPlane, node: &str) -> anyhow::Result<PathBuf> {
    let path = cp.dir().join(format!("user-system_node_{node}.kubeconfig"));
    if path.is_file() {
        return Ok(path);
    }
    Ok(cp.client_kubeconfig(&format!("system:node:{node}"), &["system:nodes"])?)
}

/// Registers the lab's Nodes from `nodes_yaml` (deploy/examples/00-nodes.yaml) and reports
/// each Ready with its capacity, as its kubelet would; lifts the not-ready taint the apiserver
/// put on them (the node lifecycle controller, which would, is off).
pub fn register_nodes(cp: &ControlPlane, nodes_yaml: &Path) -> anyhow::Result<()> {
    // The kubelets find them registered (labels, InternalIP) and take over their status.
    apply(cp, nodes_yaml, Duration::ZERO)?;
    Ok(())
}

/// The controller's kubeconfig (ServiceAccount kube-system/ferrovn-controller of rbac.yaml)
/// and each agent's (kube-system/ferrovn-node of node-rbac.yaml, its token bound to its Node).
pub fn component_kubeconfigs(
    cp: &ControlPlane,
    nodes: &[NodeState],
) -> anyhow::Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    let controller = cp.service_account_kubeconfig("kube-system", "ferrovn-controller")?;
    let mut agents = BTreeMap::new();
    for n in nodes {
        agents.insert(
            n.name.clone(),
            cp.node_bound_service_account_kubeconfig("kube-system", "ferrovn-node", &n.name)?,
        );
    }
    Ok((controller, agents))
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

/// Writes a pod's status as its node's kubelet.
pub fn write_pod_status(
    cp: &ControlPlane,
    node: &str,
    namespace: &str,
    name: &str,
    host_ip: &str,
    pod_ips: &[String],
) -> anyhow::Result<()> {
    let kc = kubelet_kubeconfig(cp, node)?;
    let status = pod_status(host_ip, pod_ips);
    put_status(
        cp,
        &kc,
        &["-n", namespace, "get", "pod", name],
        &format!("/api/v1/namespaces/{namespace}/pods/{name}/status"),
        &status["status"],
    )
    .with_context(|| format!("status of Pod {namespace}/{name} as system:node:{node}"))?;
    Ok(())
}

/// The kubelet's last word on a deleted pod once its sandbox is gone: the object goes
/// (grace period 0).
pub fn finish_deletion(
    cp: &ControlPlane,
    node: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let args = [
        "-n",
        namespace,
        "delete",
        "pod",
        name,
        "--grace-period=0",
        "--force",
        "--wait=false",
        "--ignore-not-found",
    ];
    match kubelet_kubeconfig(cp, node).map(|kc| cp.kubectl_as(&kc, &args, None)) {
        Ok(Ok(_)) => Ok(()),
        // a pod on no lab node has no kubelet here: the lab removes it as the admin
        _ => cp
            .kubectl(&args)
            .map(|_| ())
            .with_context(|| format!("deleting Pod {namespace}/{name}")),
    }
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

    fn node(profile: Profile) -> NodeState {
        NodeState {
            name: "lab-dpdk".into(),
            netns: "x-lab-dpdk".into(),
            profile,
            reason: String::new(),
            dir: PathBuf::from("/tmp/x"),
            encap_ip: "192.168.100.1".into(),
            cni_socket: PathBuf::from("/tmp/x/cni.sock"),
            vhost_socket: None,
            vhost_dir: PathBuf::from("/tmp/x/vhu"),
        }
    }

    #[test]
    fn node_status_is_ready_with_capacity_and_the_tunnel_address() {
        let s = node_status(&node(Profile::Dpdk), 2, 1024, 384);
        assert_eq!(s["status"]["capacity"]["cpu"], "2");
        assert_eq!(s["status"]["capacity"]["memory"], "1024Ki");
        assert_eq!(s["status"]["allocatable"]["hugepages-2Mi"], "384Mi");
        assert_eq!(s["status"]["addresses"][0]["address"], "192.168.100.1");
        assert_eq!(s["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(s["status"]["conditions"][0]["status"], "True");
        let k = node_status(&node(Profile::Kernel), 2, 1024, 384);
        assert!(k["status"]["capacity"].get("hugepages-2Mi").is_none());
    }

    #[test]
    fn pod_status_is_running_ready_with_the_primary_address() {
        let s = pod_status("192.168.100.2", &["10.66.0.20".into()]);
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["podIP"], "10.66.0.20");
        assert_eq!(s["status"]["podIPs"], json!([{"ip": "10.66.0.20"}]));
        assert_eq!(s["status"]["hostIP"], "192.168.100.2");
        let ready = s["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }

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
