//! FerrOVN installed as pods, the way a user installs it: `kubectl apply` of deploy/crds,
//! rbac.yaml, node-rbac.yaml, node-admission-policy.yaml and ferrovn.yaml onto a real control
//! plane with a real node (containerd + kubelet, ferrovn-testkit's [`KubeletNode`]) that has
//! FerrOVN's image (`ferrovn.invalid/ferrovn:dev`, deploy/images/ferrovn/build.sh, written from
//! this workspace's binaries) imported. The controller Deployment and the agent DaemonSet come
//! up as pods, the agent's init container installs the CNI plugin and config on the node, and
//! the kubelet's workload pods get their network from it: an agnhost `netexec` pod passes an
//! HTTP readiness probe from the node (through the join port `ovn0`), a second pod fetches
//! from it over the pod network.
//!
//! Outside the manifests, as ferrovn.yaml says: OVN central (on TCP loopback, relayed into the
//! node) and the node's Open vSwitch and ovn-controller (testkit's `ovs_node`, its run dir at
//! the node's `/run/openvswitch`). The node has no service proxy: the optional ConfigMap
//! `ferrovn-apiserver` points the pods at the apiserver.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::{
    ControlPlane, FERROVN_IMAGE, HostPaths, KubeletNode, NodeSpec, agnhost_image, busybox_image,
    ferrovn_image_tar, image_tar,
};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::{self, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn port_of(remote: &str) -> u16 {
    remote
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {remote}"))
}

/// Everything, in drop order: the node (its pods' CNI DELs reach the agent pod while it runs)
/// before OVS, OVN central and the control plane.
struct Bench {
    node: KubeletNode,
    ovs: ovs_node::Node,
    central: OvnCentral,
    cp: ControlPlane,
}

fn get(cp: &ControlPlane, args: &[&str], expr: &str) -> String {
    let o = format!("jsonpath={expr}");
    let mut all = args.to_vec();
    all.extend(["-o", &o]);
    cp.kubectl(&all).map(|o| o.stdout).unwrap_or_default()
}

fn pod_field(cp: &ControlPlane, pod: &str, expr: &str) -> String {
    get(cp, &["-n", "default", "get", "pod", pod], expr)
}

/// What a failing wait shows: the pods and their events, every container's log tail (through
/// the CRI: the apiserver cannot reach this kubelet), the node's logs.
fn diagnose(b: &Bench) -> String {
    let mut out = String::new();
    if let Ok(o) = b.cp.kubectl(&["describe", "pods", "-A"]) {
        out.push_str(&o.stdout);
    }
    if let Ok(o) = b.node.crictl(&["ps", "-a"]) {
        out.push_str(&format!("\n--- crictl ps -a\n{}", o.stdout));
    }
    if let Ok(o) = b.node.crictl(&["ps", "-a", "-q"]) {
        for id in o.stdout.split_whitespace() {
            if let Ok(l) = b.node.crictl(&["logs", "--tail", "30", id]) {
                out.push_str(&format!("\n--- crictl logs {id}\n{}{}", l.stdout, l.stderr));
            }
        }
    }
    for log in ["kubelet", "containerd"] {
        let text = std::fs::read_to_string(b.node.log_path(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {log} (last 25 lines)\n"));
        out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
    }
    out
}

/// Polls `check` until true; fails with [`diagnose`] after `timeout`.
fn wait_for(b: &mut Bench, timeout: Duration, what: &str, mut check: impl FnMut(&Bench) -> bool) {
    let start = Instant::now();
    while !check(b) {
        if let Err(e) = b.node.check_daemons() {
            panic!("{what}: a node daemon exited: {e}\n{}", diagnose(b));
        }
        if start.elapsed() > timeout {
            panic!("not within {timeout:?}: {what}\n{}", diagnose(b));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{what}: {:?}", start.elapsed());
}

const OVN_DEFAULT: &str = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: ovn-default\n\
spec:\n  protocol: IPv4\n  cidrBlock: 10.16.0.0/16\n  gateway: 10.16.0.1\n  excludeIps: [10.16.0.1]\n  \
default: true\n  provider: ovn\n  vpc: ovn-cluster\n  gatewayType: distributed\n  natOutgoing: true\n";

/// deploy/ferrovn.yaml as a user edits it for this cluster: the ConfigMap pointed at this OVN
/// central and br-int on the netdev datapath (no openvswitch kernel module here). The CNI
/// config is the shipped one.
fn ferrovn_yaml(nb: &str, sb: &str) -> String {
    let text = std::fs::read_to_string(deploy().join("ferrovn.yaml")).expect("deploy/ferrovn.yaml");
    let edits = [
        (
            "nb: tcp:ovn-central.kube-system.svc:6641",
            format!("nb: {nb}"),
        ),
        (
            "sb: tcp:ovn-central.kube-system.svc:6642",
            format!("sb: {sb}"),
        ),
        (
            "# datapath-type: netdev",
            "datapath-type: netdev".to_string(),
        ),
    ];
    let mut out = text;
    for (from, to) in edits {
        assert!(out.contains(from), "deploy/ferrovn.yaml has no `{from}`");
        out = out.replacen(from, &to, 1);
    }
    out
}

fn install(image: &Path) -> Bench {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    cp.apply_crds(&deploy().join("crds"))
        .expect("CRDs applied and Established");
    for f in ["rbac.yaml", "node-rbac.yaml", "node-admission-policy.yaml"] {
        cp.kubectl(&["apply", "-f", path(&deploy().join(f))])
            .unwrap_or_else(|e| panic!("deploy/{f}: {e}"));
    }
    cp.kubectl_stdin(&["apply", "-f", "-"], OVN_DEFAULT)
        .expect("ovn-default Subnet");

    let central = OvnCentral::start_tcp().expect("OVN central on TCP");
    let nb = central.nb_tcp_remote().expect("NB on TCP");
    let sb = central.sb_tcp_remote().expect("SB on TCP");
    let tag = unique_tag();
    let name = format!("kp-{tag}");
    let ovs = ovs_node::Node::start(&format!("fvp-{tag}"), &NodeConfig::plain(&name))
        .expect("node namespace with OVS");
    let t0 = Instant::now();
    let mut node = KubeletNode::start_with_host_paths(
        &cp,
        &NodeSpec {
            name: name.clone(),
            netns: ovs.netns_path(),
            node_ip: "10.250.0.2".into(),
            labels: Vec::new(),
            images: vec![
                image.to_path_buf(),
                image_tar("busybox.tar").expect("busybox image (make kube-node-bins)"),
                image_tar("agnhost.tar").expect("agnhost image (make kube-e2e-bins)"),
            ],
        },
        &HostPaths {
            openvswitch: Some(ovs.dir().to_path_buf()),
            ..HostPaths::default()
        },
    )
    .expect("kubelet node (make kube-node-bins)");
    eprintln!(
        "kubelet node with the images imported, registered in {:?}",
        t0.elapsed()
    );
    // OVN central is on the test's loopback; the node's hostNetwork pods reach it at the same
    // address (as they reach the apiserver).
    node.relay_loopback_port(port_of(&nb)).expect("NB relay");
    node.relay_loopback_port(port_of(&sb)).expect("SB relay");

    // No service proxy on this node: the pods reach the apiserver at its own address.
    let api_port = port_of(cp.server()).to_string();
    cp.kubectl(&[
        "-n",
        "kube-system",
        "create",
        "configmap",
        "ferrovn-apiserver",
        "--from-literal=KUBERNETES_SERVICE_HOST=127.0.0.1",
        &format!("--from-literal=KUBERNETES_SERVICE_PORT={api_port}"),
    ])
    .expect("ConfigMap ferrovn-apiserver");
    cp.kubectl_stdin(&["apply", "-f", "-"], &ferrovn_yaml(&nb, &sb))
        .expect("kubectl apply -f deploy/ferrovn.yaml");
    Bench {
        node,
        ovs,
        central,
        cp,
    }
}

/// The Ready pods of `selector` in kube-system.
fn ready_pods(cp: &ControlPlane, selector: &str) -> usize {
    get(
        cp,
        &["-n", "kube-system", "get", "pods", "-l", selector],
        "{range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    )
    .lines()
    .filter(|l| l.trim() == "True")
    .count()
}

#[test]
fn ferrovn_as_pods_networks_the_kubelets_pods() {
    let t0 = Instant::now();
    let image = ferrovn_image_tar().expect("FerrOVN image (deploy/images/ferrovn/build.sh)");
    eprintln!("FerrOVN image {FERROVN_IMAGE} ready in {:?}", t0.elapsed());
    let mut b = install(&image);
    let node = b.node.name().to_string();
    let installed = Instant::now();

    // The agent DaemonSet (kernel profile: the node has no ovs_dp_type label) runs, its init
    // container having put the CNI plugin and config onto the node; the DPDK one wants no node.
    wait_for(
        &mut b,
        Duration::from_secs(180),
        "agent pod (DaemonSet ferrovn-node-kernel) Ready",
        |b| ready_pods(&b.cp, "app.kubernetes.io/name=ferrovn-node") == 1,
    );
    assert_eq!(
        get(
            &b.cp,
            &["-n", "kube-system", "get", "ds", "ferrovn-node-dpdk"],
            "{.status.desiredNumberScheduled}"
        ),
        "0",
        "no node is labelled userspace"
    );
    let cni_bin = b.node.dir().join("cni/bin/ferrovn-cni");
    assert!(
        cni_bin.is_file(),
        "install-cni put the plugin at the node's /opt/cni/bin"
    );
    assert!(
        b.node.dir().join("cni/net.d/10-ferrovn.conflist").is_file(),
        "install-cni put the conflist at the node's /etc/cni/net.d"
    );
    // The agent configured the node's OVS for OVN; ovn-controller (outside the manifests, like
    // OVS) then joins the chassis.
    wait_for(
        &mut b,
        Duration::from_secs(60),
        "the agent set ovn-remote in the node's OVS",
        |b| {
            b.ovs
                .vsctl(["get", "Open_vSwitch", ".", "external_ids:ovn-remote"])
                .is_ok_and(|s| s.contains("tcp:127.0.0.1:"))
        },
    );
    b.ovs.start_ovn_controller().expect("ovn-controller");
    wait_for(
        &mut b,
        Duration::from_secs(180),
        "both controller replicas (Deployment ferrovn-controller) Ready",
        |b| ready_pods(&b.cp, "app.kubernetes.io/name=ferrovn-controller") == 2,
    );
    // One of them leads.
    wait_for(&mut b, Duration::from_secs(60), "the Lease held", |b| {
        get(
            &b.cp,
            &["-n", "kube-system", "get", "lease", "ferrovn-controller"],
            "{.spec.holderIdentity}",
        )
        .starts_with("ferrovn-controller-")
    });
    b.node
        .wait_ready(&b.cp, Duration::from_secs(120))
        .expect("Node Ready (the CNI config installed by the agent pod)");
    eprintln!(
        "FerrOVN pods Running and the node Ready {:?} after kubectl apply",
        installed.elapsed()
    );

    // A web server probed over HTTP by the kubelet, from the node: node -> ovn0 -> OVN -> pod.
    let web = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  \
         nodeName: {node}\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: netexec\n    image: {image}\n    imagePullPolicy: Never\n    \
         args: [netexec, --http-port=8080, --udp-port=8081]\n    readinessProbe:\n      \
         httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n      timeoutSeconds: 2\n",
        image = agnhost_image(),
    );
    b.cp.kubectl_stdin(&["apply", "-f", "-"], &web)
        .expect("create pod web");
    wait_for(
        &mut b,
        Duration::from_secs(120),
        "pod web Ready by its HTTP probe",
        |b| {
            pod_field(
                &b.cp,
                "web",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
        },
    );
    let ip = pod_field(&b.cp, "web", "{.status.podIP}");
    assert_eq!(
        ip,
        pod_field(
            &b.cp,
            "web",
            "{.metadata.annotations.ovn\\.kubernetes\\.io/ip_address}"
        ),
        "the pod's IP is the controller pod's allocation"
    );
    assert!(ip.starts_with("10.16."), "on ovn-default: {ip}");
    assert_within(Duration::from_secs(30), "LSP web.default up", || {
        b.central
            .nbctl(&["get", "Logical_Switch_Port", "web.default", "up"])
            .is_ok_and(|s| s.trim() == "true")
    });

    // Another pod reaches it over the pod network (its answer in the termination message).
    let client = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: default\nspec:\n  \
         nodeName: {node}\n  automountServiceAccountToken: false\n  restartPolicy: Never\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    \
         imagePullPolicy: Never\n    command: [sh, -c, 'timeout 10 wget -q -O /dev/termination-log http://{ip}:8080/hostname']\n",
        image = busybox_image(),
    );
    b.cp.kubectl_stdin(&["apply", "-f", "-"], &client)
        .expect("create pod client");
    wait_for(
        &mut b,
        Duration::from_secs(120),
        "pod client finished",
        |b| {
            matches!(
                pod_field(&b.cp, "client", "{.status.phase}").as_str(),
                "Succeeded" | "Failed"
            )
        },
    );
    let phase = pod_field(&b.cp, "client", "{.status.phase}");
    let message = pod_field(
        &b.cp,
        "client",
        "{.status.containerStatuses[0].state.terminated.message}",
    );
    assert_eq!(
        (phase.as_str(), message.trim()),
        ("Succeeded", "web"),
        "client fetched web's /hostname over the pod network"
    );
    let client_ip = pod_field(&b.cp, "client", "{.status.podIP}");
    assert!(
        client_ip.starts_with("10.16.") && client_ip != ip,
        "client has its own address: {client_ip}"
    );

    // Deleting the workload while the agent pod runs: CNI DEL reaches it, the port goes.
    b.cp.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        "web",
        "client",
        "--wait=true",
        "--timeout=90s",
    ])
    .expect("delete the workload pods");
    wait_for(
        &mut b,
        Duration::from_secs(60),
        "web's OVS port removed",
        |b| {
            b.ovs
                .vsctl([
                    "--bare",
                    "--columns=name",
                    "find",
                    "Interface",
                    "external_ids:iface-id=web.default",
                ])
                .is_ok_and(|s| s.trim().is_empty())
        },
    );
}
