//! FerrOVN installed as pods: deploy/ferrovn.yaml with the lab's settings (the overlay), applied
//! with kubectl, waited for. The controller Deployment and the agent DaemonSets (one per
//! profile) run as the kubelets' pods on the lab's nodes, from the image `make ferrovn-image`
//! writes (imported into each node's containerd).
//!
//! The overlay changes only what is lab-specific, on the parsed manifest (no second copy of
//! it): OVN central's remotes and the netdev datapath in `ferrovn-config`, and for the agents
//! the paths that differ between the lab's nodes because both share one machine. The kubelet
//! root, the vhost-user bind-mount directory and the agent's state dir are given as real paths
//! under the lab's state dir (`$(FERROVN_NODE_NAME)` picks the node's), because the agent makes
//! the vhost-user bind mounts in another mount namespace (`--host-mount-ns`): on an OVS-DPDK
//! node the machine's, where ovs-vswitchd looks (and where `/var/lib/kubelet` is not the
//! node's); on a kernel-profile node the node's own, where the vhost helper's pod sees them
//! (the lab's nodes have private mount namespaces: nothing mounted on the machine reaches their
//! pods). The DPDK DaemonSet gets the lab node's DPDK config, hugetlbfs and the DPDK
//! ovs-vswitchd (the profile decision checks it is installed; here it lives in the OVS/OVN
//! rootfs) and the profile the lab decided. The vhost helper DaemonSet gets the lab's relay CPU
//! and nap, a DPDK file prefix the lab cleans up, and the state dir (the agent's bind mounts
//! under it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrovn_testkit::kube::ControlPlane;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::Profile;

/// Where the DPDK profile decision looks for the DPDK ovs-vswitchd (its default path).
pub const DPDK_VSWITCHD_IN_POD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";

/// Label selectors of FerrOVN's pods.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=ferrovn-node";
pub const CONTROLLER_SELECTOR: &str = "app.kubernetes.io/name=ferrovn-controller";
pub const HELPER_SELECTOR: &str = "app.kubernetes.io/name=ferrovn-vhost";
/// The vhost helper's DaemonSet in deploy/ferrovn.yaml.
pub const HELPER_DAEMONSET: &str = "ferrovn-vhost";

/// Where each component of the lab runs (the status table's legend; docs/lab.md says why the
/// OVS/OVN daemons are processes).
pub const COMPONENTS: [(&str, &str); 4] = [
    (
        "ferrovn-controller, ferrovn-node (+ install-cni), ferrovn-vhost (kernel nodes)",
        "pods from deploy/ferrovn.yaml (lab overlay), image ferrovn.invalid/ferrovn:dev",
    ),
    (
        "ovsdb-server, ovs-vswitchd, ovn-controller",
        "processes in each node's network namespace (OVS/OVN rootfs)",
    ),
    (
        "OVN NB/SB ovsdb-server, ovn-northd",
        "processes on the machine (NB/SB on 127.0.0.1, relayed into the nodes)",
    ),
    (
        "kubelet, containerd; etcd, kube-apiserver, kube-controller-manager, kube-scheduler",
        "processes (nodes: own mount namespace and cgroup)",
    ),
];

/// What the overlay puts into deploy/ferrovn.yaml.
#[derive(Debug, Clone)]
pub struct LabSettings {
    /// The lab's state dir: mounted into the agents at the same path.
    pub state_root: PathBuf,
    /// OVN NB and SB as the pods reach them (TCP on the node's loopback, relayed).
    pub nb: String,
    pub sb: String,
    /// The profile the lab decided for the DPDK node (kernel when it has no hugepages).
    pub dpdk_profile: Profile,
    /// The DPDK node's config file (`--dpdk-config`), its hugetlbfs mount, the DPDK vswitchd.
    pub dpdk_config: PathBuf,
    pub hugetlbfs: PathBuf,
    /// None when this machine has none (the agent then decides the kernel profile).
    pub dpdk_vswitchd: Option<PathBuf>,
    /// Where each agent DaemonSet makes its vhost-user bind mounts (`--host-mount-ns`): the
    /// mount namespace of whatever serves the sockets on its node. The DPDK node's OVS-DPDK
    /// runs in the machine's (the shipped `/proc/1/ns/mnt` cannot be opened here: the
    /// machine's init refuses it, even to root, so the lab names one of its own processes
    /// living there); a kernel-profile node's vhost helper is a pod of the node, which sees
    /// the node's own mount namespace only.
    pub dpdk_agent_mount_ns: PathBuf,
    pub kernel_agent_mount_ns: PathBuf,
    /// The vhost helper's relay CPUs (`ferrovn-config` `vhost-cores`) and idle nap.
    pub helper_cores: String,
    pub helper_idle_sleep_us: u64,
    /// The helper's DPDK file prefix: `<this>-<node name>` (the lab removes its runtime dir
    /// under /var/run/dpdk, which a killed helper leaves).
    pub helper_file_prefix: String,
}

/// A node's directory under the state dir, as the agent's args name it.
fn node_dir_arg(root: &Path, sub: &str) -> String {
    let base = format!("{}/nodes/$(FERROVN_NODE_NAME)", root.display());
    if sub.is_empty() {
        base
    } else {
        format!("{base}/{sub}")
    }
}

fn host_path(name: &str, path: &Path, kind: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path.display().to_string(), "type": kind}})
}

/// Sets the hostPath of volume `name` of a pod spec; `Err` if the manifest has no such volume.
fn set_volume_path(spec: &mut Value, name: &str, path: &Path) -> anyhow::Result<()> {
    let v = spec["volumes"]
        .as_array_mut()
        .and_then(|vs| vs.iter_mut().find(|v| v["name"] == name))
        .with_context(|| format!("deploy/ferrovn.yaml: no volume {name:?}"))?;
    v["hostPath"]["path"] = json!(path.display().to_string());
    Ok(())
}

fn push(v: &mut Value, key: &str, item: Value) {
    match v.get_mut(key).and_then(Value::as_array_mut) {
        Some(a) => a.push(item),
        None => v[key] = json!([item]),
    }
}

/// The state dir into a container at the same path, mounts made later under it included.
fn mount_state_dir(spec: &mut Value, container: &str, root: &Path) -> anyhow::Result<()> {
    let c = spec["containers"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == container))
        .with_context(|| format!("deploy/ferrovn.yaml: no container {container:?}"))?;
    push(
        c,
        "volumeMounts",
        json!({"name": "lab-state", "mountPath": root.display().to_string(),
               "mountPropagation": "HostToContainer"}),
    );
    push(spec, "volumes", host_path("lab-state", root, "Directory"));
    Ok(())
}

/// The vhost helper DaemonSet's pod spec for the lab.
fn overlay_helper(spec: &mut Value, s: &LabSettings) -> anyhow::Result<()> {
    let helper = spec["containers"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "helper"))
        .context("deploy/ferrovn.yaml: the ferrovn-vhost DaemonSet has no container `helper`")?;
    push(
        helper,
        "args",
        json!(format!(
            "--file-prefix={}-$(FERROVN_NODE_NAME)",
            s.helper_file_prefix
        )),
    );
    push(
        helper,
        "env",
        json!({"name": "FERROVN_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
    );
    // the agents' vhost-user bind mounts are under the state dir (--vhost-dir)
    mount_state_dir(spec, "helper", &s.state_root)?;
    if s.dpdk_profile == Profile::Kernel {
        // the DPDK node runs the kernel profile: its DPDK pods need a helper too
        if let Some(o) = spec.as_object_mut() {
            o.remove("affinity");
        }
    }
    Ok(())
}

/// One agent DaemonSet's pod spec with the lab's paths.
fn overlay_agent(spec: &mut Value, profile: &str, s: &LabSettings) -> anyhow::Result<()> {
    let root = &s.state_root;
    let agent = spec["containers"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "agent"))
        .context("deploy/ferrovn.yaml: an agent DaemonSet without container `agent`")?;
    let args = agent["args"]
        .as_array_mut()
        .context("deploy/ferrovn.yaml: the agent container has no args")?;
    if profile == "dpdk" {
        let forced = format!("--profile={}", s.dpdk_profile.as_str());
        let p = args
            .iter_mut()
            .find(|a| a.as_str().is_some_and(|a| a.starts_with("--profile=")))
            .context("deploy/ferrovn.yaml: the DPDK agent has no --profile")?;
        *p = json!(forced);
    }
    let ns = if profile == "dpdk" {
        &s.dpdk_agent_mount_ns
    } else {
        &s.kernel_agent_mount_ns
    };
    let mount_ns = format!("--host-mount-ns={}", ns.display());
    match args.iter_mut().find(|a| {
        a.as_str()
            .is_some_and(|a| a.starts_with("--host-mount-ns="))
    }) {
        Some(a) => *a = json!(mount_ns),
        None => args.push(json!(mount_ns)),
    }
    for (flag, sub) in [
        ("--kubelet-root", "k/kubelet"),
        ("--vhost-dir", "vhu"),
        ("--state-dir", ""),
    ] {
        args.push(json!(format!("{flag}={}", node_dir_arg(root, sub))));
    }
    mount_state_dir(spec, "agent", root)?;
    if profile == "dpdk" {
        set_volume_path(spec, "dpdk-config", &s.dpdk_config)?;
        set_volume_path(spec, "hugepages", &s.hugetlbfs)?;
    }
    if let (true, Some(vswitchd)) = (profile == "dpdk", &s.dpdk_vswitchd) {
        let agent = spec["containers"]
            .as_array_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "agent"))
            .context("agent container")?;
        push(
            agent,
            "volumeMounts",
            json!({"name": "dpdk-vswitchd", "mountPath": DPDK_VSWITCHD_IN_POD, "readOnly": true}),
        );
        push(
            spec,
            "volumes",
            host_path("dpdk-vswitchd", vswitchd, "File"),
        );
    }
    Ok(())
}

/// deploy/ferrovn.yaml (`manifest`) with the lab's settings, as a multi-document YAML stream
/// (each document JSON) for `kubectl apply -f -`.
pub fn overlay(manifest: &str, s: &LabSettings) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for d in serde_norway::Deserializer::from_str(manifest) {
        let v = Value::deserialize(d).context("deploy/ferrovn.yaml is not YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let (mut config, mut agents, mut helper) = (false, Vec::new(), false);
    for d in docs.iter_mut() {
        let kind = d["kind"].as_str().unwrap_or("").to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        match (kind.as_str(), name.as_str()) {
            ("ConfigMap", "ferrovn-config") => {
                d["data"]["nb"] = json!(s.nb);
                d["data"]["sb"] = json!(s.sb);
                // no openvswitch kernel module in the lab: br-int on the userspace datapath
                d["data"]["datapath-type"] = json!("netdev");
                // host processes on the nodes reach ClusterIPs through ovn0 (docs/services.md)
                d["data"]["service-cidr"] = json!(ferrovn_testkit::kube::SERVICE_CIDR);
                d["data"]["vhost-cores"] = json!(s.helper_cores);
                d["data"]["vhost-idle-sleep-us"] = json!(s.helper_idle_sleep_us.to_string());
                config = true;
            }
            ("DaemonSet", HELPER_DAEMONSET) => {
                overlay_helper(&mut d["spec"]["template"]["spec"], s)
                    .with_context(|| format!("DaemonSet {name}"))?;
                helper = true;
            }
            ("DaemonSet", _) => {
                let profile = d["metadata"]["labels"]["ferrovn.io/profile"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if profile != "kernel" && profile != "dpdk" {
                    continue;
                }
                overlay_agent(&mut d["spec"]["template"]["spec"], &profile, s)
                    .with_context(|| format!("DaemonSet {name}"))?;
                agents.push(profile);
            }
            _ => {}
        }
    }
    agents.sort();
    if !config || agents != ["dpdk", "kernel"] || !helper {
        bail!(
            "deploy/ferrovn.yaml: expected ConfigMap ferrovn-config, the kernel and dpdk agent DaemonSets and DaemonSet {HELPER_DAEMONSET} (found config: {config}, agents: {agents:?}, helper: {helper})"
        );
    }
    let mut out = String::new();
    for d in &docs {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(d)?);
        out.push('\n');
    }
    Ok(out)
}

/// Creates ConfigMap `ferrovn-apiserver` (the pods reach the apiserver at `127.0.0.1:port`
/// inside their node, where the lab relays it: the nodes have no service proxy) and applies
/// the overlaid deploy/ferrovn.yaml.
pub fn install(
    cp: &ControlPlane,
    deploy: &Path,
    api_port: u16,
    s: &LabSettings,
) -> anyhow::Result<()> {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ferrovn-apiserver", "namespace": "kube-system"},
        "data": {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                 "KUBERNETES_SERVICE_PORT": api_port.to_string()},
    });
    cp.kubectl_stdin(&["apply", "-f", "-"], &cm.to_string())
        .context("ConfigMap kube-system/ferrovn-apiserver")?;
    let path = deploy.join("ferrovn.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    cp.kubectl_stdin(&["apply", "-f", "-"], &overlay(&text, s)?)
        .with_context(|| format!("kubectl apply -f {} (lab overlay)", path.display()))?;
    Ok(())
}

/// One FerrOVN pod as the API server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FerrovnPod {
    pub name: String,
    pub node: String,
    pub phase: String,
    pub ready: bool,
    pub restarts: u64,
}

/// Parses `kubectl get pods -o json` of kube-system into FerrOVN's pods.
pub fn parse_pods(json_text: &str) -> Vec<FerrovnPod> {
    let v: Value = serde_json::from_str(json_text).unwrap_or(Value::Null);
    let items = v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    items
        .iter()
        .filter(|p| {
            matches!(
                p["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
                Some("ferrovn-node" | "ferrovn-controller" | "ferrovn-vhost")
            ) && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| FerrovnPod {
            name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            node: p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            phase: p["status"]["phase"].as_str().unwrap_or("").to_string(),
            ready: p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }),
            restarts: p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
                .unwrap_or(0),
        })
        .collect()
}

/// FerrOVN's pods now (empty when the API server does not answer).
pub fn list(cp: &ControlPlane) -> Vec<FerrovnPod> {
    cp.kubectl(&["-n", "kube-system", "get", "pods", "-o", "json"])
        .map(|o| parse_pods(&o.stdout))
        .unwrap_or_default()
}

/// Whether `node` has a Ready agent pod.
pub fn agent_ready(pods: &[FerrovnPod], node: &str) -> bool {
    pods.iter()
        .any(|p| p.name.starts_with("ferrovn-node-") && p.node == node && p.ready)
}

/// Whether `node` has a Ready vhost helper pod.
pub fn helper_ready(pods: &[FerrovnPod], node: &str) -> bool {
    pods.iter()
        .any(|p| p.name.starts_with("ferrovn-vhost-") && p.node == node && p.ready)
}

/// Waits until `check` holds, polling every half second; on timeout `Err` with what the pods
/// say (`kubectl describe`, the agents' logs).
pub fn wait(
    cp: &ControlPlane,
    what: &str,
    within: Duration,
    mut check: impl FnMut(&[FerrovnPod]) -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if check(&list(cp)) {
            return Ok(());
        }
        if start.elapsed() > within {
            let describe = cp
                .kubectl(&["-n", "kube-system", "describe", "pods"])
                .map(|o| o.stdout)
                .unwrap_or_default();
            let tail: Vec<&str> = describe.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{what}: not within {}s; kubectl -n kube-system describe pods (end):\n{}",
                within.as_secs(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(profile: Profile) -> LabSettings {
        LabSettings {
            state_root: "/run/ferrovn-lab".into(),
            nb: "tcp:127.0.0.1:6641".into(),
            sb: "tcp:127.0.0.1:6642".into(),
            dpdk_profile: profile,
            dpdk_config: "/run/ferrovn-lab/nodes/lab-dpdk/dpdk-config.json".into(),
            hugetlbfs: "/run/ferrovn-lab/hugepages".into(),
            dpdk_vswitchd: Some("/cache/bin/ovs-vswitchd-dpdk".into()),
            dpdk_agent_mount_ns: "/proc/4242/ns/mnt".into(),
            kernel_agent_mount_ns: "/proc/4343/ns/mnt".into(),
            helper_cores: "1".into(),
            helper_idle_sleep_us: 200,
            helper_file_prefix: "fvl1-vhost".into(),
        }
    }

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ferrovn.yaml")).unwrap()
    }

    fn docs(text: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn agent(ds: &Value) -> &Value {
        &ds["spec"]["template"]["spec"]["containers"][0]
    }

    fn args(ds: &Value) -> Vec<String> {
        agent(ds)["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_overlay_changes_only_the_lab_settings_of_the_shipped_manifest() {
        let before = docs(&shipped());
        let after = docs(&overlay(&shipped(), &settings(Profile::Dpdk)).unwrap());
        assert_eq!(before.len(), after.len(), "no object added or dropped");
        let cfg = find(&after, "ConfigMap", "ferrovn-config");
        assert_eq!(cfg["data"]["nb"], "tcp:127.0.0.1:6641");
        assert_eq!(cfg["data"]["sb"], "tcp:127.0.0.1:6642");
        assert_eq!(cfg["data"]["datapath-type"], "netdev");
        assert_eq!(
            cfg["data"]["service-cidr"],
            ferrovn_testkit::kube::SERVICE_CIDR
        );
        assert_eq!(cfg["data"]["vhost-cores"], "1");
        assert_eq!(cfg["data"]["vhost-idle-sleep-us"], "200");
        // the controller, the CNI config and every other object: as shipped
        for (kind, name) in [
            ("Deployment", "ferrovn-controller"),
            ("ConfigMap", "ferrovn-cni"),
        ] {
            assert_eq!(
                find(&before, kind, name),
                find(&after, kind, name),
                "{kind} {name}"
            );
        }
        for name in ["ferrovn-node-kernel", "ferrovn-node-dpdk"] {
            let (b, a) = (
                find(&before, "DaemonSet", name),
                find(&after, "DaemonSet", name),
            );
            // the shipped args stay (but the DPDK profile), the lab's paths are added
            let (ba, aa) = (args(b), args(a));
            assert_eq!(aa.len(), ba.len() + 3, "{name}: {aa:?}");
            assert!(aa.contains(
                &"--kubelet-root=/run/ferrovn-lab/nodes/$(FERROVN_NODE_NAME)/k/kubelet".to_string()
            ));
            assert!(aa.contains(
                &"--vhost-dir=/run/ferrovn-lab/nodes/$(FERROVN_NODE_NAME)/vhu".to_string()
            ));
            assert!(
                aa.contains(&"--state-dir=/run/ferrovn-lab/nodes/$(FERROVN_NODE_NAME)".to_string())
            );
            // the arg expands: the env var is the container's
            assert!(
                agent(a)["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "FERROVN_NODE_NAME")
            );
            assert!(
                agent(a)["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| {
                        m["name"] == "lab-state"
                            && m["mountPath"] == "/run/ferrovn-lab"
                            && m["mountPropagation"] == "HostToContainer"
                    })
            );
            // node selection, image, security: as shipped
            for key in [
                "affinity",
                "hostNetwork",
                "hostPID",
                "initContainers",
                "tolerations",
            ] {
                assert_eq!(
                    b["spec"]["template"]["spec"][key], a["spec"]["template"]["spec"][key],
                    "{name}: {key}"
                );
            }
        }
        let dpdk = find(&after, "DaemonSet", "ferrovn-node-dpdk");
        assert!(args(dpdk).contains(&"--profile=dpdk".to_string()));
        assert!(args(dpdk).contains(&"--host-mount-ns=/proc/4242/ns/mnt".to_string()));
        assert!(
            !args(dpdk)
                .iter()
                .any(|a| a == "--host-mount-ns=/proc/1/ns/mnt")
        );
        let vols = dpdk["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        let path_of = |n: &str| {
            vols.iter().find(|v| v["name"] == n).unwrap()["hostPath"]["path"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            path_of("dpdk-config"),
            "/run/ferrovn-lab/nodes/lab-dpdk/dpdk-config.json"
        );
        assert_eq!(path_of("hugepages"), "/run/ferrovn-lab/hugepages");
        assert_eq!(path_of("dpdk-vswitchd"), "/cache/bin/ovs-vswitchd-dpdk");
        let kernel = find(&after, "DaemonSet", "ferrovn-node-kernel");
        assert!(!args(kernel).iter().any(|a| a.starts_with("--profile=dpdk")));
        // the kernel node's agent mounts where the helper pod looks: the node's namespace
        assert!(args(kernel).contains(&"--host-mount-ns=/proc/4343/ns/mnt".to_string()));

        // the vhost helper: the shipped DaemonSet, its node selection kept, plus the lab's
        // file prefix, node name and state dir
        let (b, a) = (
            find(&before, "DaemonSet", "ferrovn-vhost"),
            find(&after, "DaemonSet", "ferrovn-vhost"),
        );
        for key in ["affinity", "hostNetwork", "tolerations"] {
            assert_eq!(
                b["spec"]["template"]["spec"][key], a["spec"]["template"]["spec"][key],
                "ferrovn-vhost: {key}"
            );
        }
        assert_eq!(
            a["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"],
            "NotIn"
        );
        let (ba, aa) = (args(b), args(a));
        assert_eq!(aa[..ba.len()], ba[..], "shipped args kept");
        assert_eq!(
            aa[ba.len()..],
            ["--file-prefix=fvl1-vhost-$(FERROVN_NODE_NAME)".to_string()]
        );
        assert!(ba.contains(&"--control-socket=/run/ferrovn/vhost.sock".to_string()));
        let helper = agent(a);
        assert!(
            helper["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "FERROVN_NODE_NAME")
        );
        assert!(
            helper["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/run/ferrovn-lab"
                    && m["mountPropagation"] == "HostToContainer")
        );
    }

    #[test]
    fn the_shipped_helper_daemonset_runs_on_kernel_nodes_from_the_config() {
        let d = docs(&shipped());
        let ds = find(&d, "DaemonSet", "ferrovn-vhost");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(agent(ds)["securityContext"]["privileged"], true);
        // the same nodes as the kernel agent
        assert_eq!(
            spec["affinity"],
            find(&d, "DaemonSet", "ferrovn-node-kernel")["spec"]["template"]["spec"]["affinity"]
        );
        // its relay CPUs come from ferrovn-config, which ships the key
        let env = agent(ds)["env"].as_array().unwrap();
        let cores = env
            .iter()
            .find(|e| e["name"] == "FERROVN_VHOST_CORES")
            .unwrap();
        let key = cores["valueFrom"]["configMapKeyRef"]["key"]
            .as_str()
            .unwrap();
        assert!(
            find(&d, "ConfigMap", "ferrovn-config")["data"][key].is_string(),
            "ferrovn-config has no {key}"
        );
        // the agent's later bind mounts under /run/ferrovn reach the helper
        assert!(
            agent(ds)["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/run/ferrovn"
                    && m["mountPropagation"] == "HostToContainer")
        );
    }

    #[test]
    fn a_dpdk_node_without_hugepages_gets_the_kernel_profile_and_a_helper() {
        let after = docs(&overlay(&shipped(), &settings(Profile::Kernel)).unwrap());
        let dpdk = find(&after, "DaemonSet", "ferrovn-node-dpdk");
        assert!(args(dpdk).contains(&"--profile=kernel".to_string()));
        // every node is a kernel node now: the helper on each
        let helper = find(&after, "DaemonSet", "ferrovn-vhost");
        assert!(helper["spec"]["template"]["spec"]["affinity"].is_null());
    }

    #[test]
    fn a_manifest_without_the_agents_is_refused_by_name() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ferrovn-config}\ndata: {}\n";
        let e = overlay(text, &settings(Profile::Dpdk))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent DaemonSets"), "{e}");
        // the agents without the helper: refused, the helper named
        let no_helper: String = shipped()
            .split("\n---\n")
            .filter(|d| !d.contains("name: ferrovn-vhost\n"))
            .collect::<Vec<_>>()
            .join("\n---\n");
        let e = overlay(&no_helper, &settings(Profile::Dpdk))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DaemonSet ferrovn-vhost"), "{e}");
    }

    #[test]
    fn pods_are_read_from_the_api_servers_list() {
        let text = r#"{"items": [
          {"metadata": {"name": "ferrovn-node-kernel-abcde", "labels": {"app.kubernetes.io/name": "ferrovn-node"}},
           "spec": {"nodeName": "lab-kernel"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"restartCount": 2}]}},
          {"metadata": {"name": "ferrovn-node-dpdk-xyz", "labels": {"app.kubernetes.io/name": "ferrovn-node"},
                        "deletionTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"nodeName": "lab-dpdk"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
          {"metadata": {"name": "coredns-1", "labels": {"app.kubernetes.io/name": "coredns"}},
           "spec": {"nodeName": "lab-dpdk"}, "status": {"phase": "Running"}}
        ]}"#;
        let pods = parse_pods(text);
        assert_eq!(
            pods,
            vec![FerrovnPod {
                name: "ferrovn-node-kernel-abcde".into(),
                node: "lab-kernel".into(),
                phase: "Running".into(),
                ready: true,
                restarts: 2,
            }]
        );
        assert!(agent_ready(&pods, "lab-kernel"));
        // a terminating pod is not the node's agent
        assert!(!agent_ready(&pods, "lab-dpdk"));
    }
}
