//! Pods started by a real kubelet and containerd (ferrovn-testkit's [`KubeletNode`], built by
//! `make kube-node-bins`) get their network from FerrOVN: the controller (`--kube`, as its
//! ServiceAccount) allocates, containerd calls `ferrovn-cni`, the node agent (`--kube`, with a
//! node-bound token) plugs the pod into OVS, ovn-controller binds the port.
//!
//! One node: OVN central, a node namespace with OVS and ovn-controller (testkit ovs_node), and
//! in it containerd, the kubelet and `ferrovn-node`, all in the node's own mount namespace.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrovn_testkit::binaries::{cni_plugin_binary, controller_binary};
use ferrovn_testkit::kube::{ControlPlane, KubeletNode, NodeSpec, busybox_image, image_tar};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::{self, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dataplane has a parent")
        .join("deploy")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

const OVN_DEFAULT: &str = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: ovn-default\n\
spec:\n  protocol: IPv4\n  cidrBlock: 10.16.0.0/16\n  gateway: 10.16.0.1\n  excludeIps: [10.16.0.1]\n  \
default: true\n  provider: ovn\n  vpc: ovn-cluster\n  gatewayType: distributed\n  natOutgoing: true\n";

/// `ferrovn-controller --kube` as its ServiceAccount, killed on drop.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn spawn(kubeconfig: &Path, nb: &str, dir: &Path) -> Controller {
        let bin = controller_binary().expect("build ferrovn-controller");
        let log = dir.join("controller.log");
        let out = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(bin)
            .args(["--kube", "--kubeconfig", path(kubeconfig), "--nb", nb])
            .args(["--state-dir", path(&dir.join("controller"))])
            .args(["--identity", "ctrl", "--debounce-ms", "100"])
            .env("HOME", dir)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ferrovn-controller");
        Controller { child, log }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "ferrovn-controller exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jsonpath(cp: &ControlPlane, args: &[&str], expr: &str) -> String {
    let o = format!("jsonpath={expr}");
    let mut all = args.to_vec();
    all.extend(["-o", &o]);
    cp.kubectl(&all).map(|o| o.stdout).unwrap_or_default()
}

fn pod_field(cp: &ControlPlane, pod: &str, expr: &str) -> String {
    jsonpath(cp, &["-n", "default", "get", "pod", pod], expr)
}

fn annotation(cp: &ControlPlane, pod: &str, key: &str) -> String {
    pod_field(
        cp,
        pod,
        &format!("{{.metadata.annotations.{}}}", key.replace('.', "\\.")),
    )
}

/// Everything one node needs, in drop order: the kubelet node (its pods' CNI DELs still reach
/// the agent it owns) before OVS, the controller and the control plane.
struct Bench {
    node: KubeletNode,
    ovs: ovs_node::Node,
    controller: Controller,
    central: OvnCentral,
    cp: ControlPlane,
    _dir: tempfile::TempDir,
}

fn bench() -> Bench {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    let deploy = deploy();
    cp.apply_crds(&deploy.join("crds"))
        .expect("CRDs applied and Established");
    for f in ["rbac.yaml", "node-rbac.yaml", "node-admission-policy.yaml"] {
        cp.kubectl(&["apply", "-f", path(&deploy.join(f))])
            .unwrap_or_else(|e| panic!("deploy/{f}: {e}"));
    }
    cp.kubectl_stdin(&["apply", "-f", "-"], OVN_DEFAULT)
        .expect("ovn-default Subnet");

    let central = OvnCentral::start().expect("OVN central");
    let dir = tempfile::tempdir().expect("tmp");
    let sa = cp
        .service_account_kubeconfig("kube-system", "ferrovn-controller")
        .expect("controller ServiceAccount");
    let controller = Controller::spawn(&sa, &central.nb_remote(), dir.path());

    let tag = unique_tag();
    let name = format!("kl-{tag}");
    let mut ovs = ovs_node::Node::start(&format!("fvk-{tag}"), &NodeConfig::plain(&name))
        .expect("node namespace with OVS");
    let busybox = image_tar("busybox.tar").expect("busybox image (make kube-node-bins)");
    let mut node = KubeletNode::start(
        &cp,
        &NodeSpec {
            name: name.clone(),
            netns: ovs.netns_path(),
            node_ip: "10.250.0.2".into(),
            labels: Vec::new(),
            images: vec![busybox],
        },
    )
    .expect("kubelet node (make kube-node-bins)");
    eprintln!("kubelet node registered in {:?}", node.startup_time());

    // The agent as a DaemonSet pod would run it: its ServiceAccount with a token bound to
    // this node, in the node's namespaces (it opens the pods' netns files containerd mounted).
    let agent_kc = cp
        .node_bound_service_account_kubeconfig("kube-system", "ferrovn-node", &name)
        .expect("node-bound agent token");
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_ferrovn-node"));
    let sock = node.dir().join("cni.sock");
    let mut env = ovs.env();
    env.push(("RUST_LOG".into(), "info".into()));
    let args: Vec<String> = vec![
        format!("--ovs-db={}", ovs.db_remote()),
        format!("--sb-remote={}", central.sb_remote()),
        format!("--node-name={name}"),
        "--encap-ip=127.0.0.1".into(),
        "--profile=kernel".into(),
        "--datapath-type=netdev".into(),
        format!("--socket={}", sock.display()),
        format!("--kubeconfig={}", agent_kc.display()),
        format!("--kubelet-root={}", node.kubelet_root().display()),
        format!("--vhost-dir={}", node.dir().join("vhu").display()),
        format!("--state-dir={}", node.dir().join("agent-state").display()),
    ];
    node.spawn_daemon("ferrovn-node", &agent, &args, &env)
        .expect("start ferrovn-node");
    assert_within(Duration::from_secs(30), "the agent's CNI socket", || {
        node.check_daemons()
            .unwrap_or_else(|e| panic!("node daemon: {e}"));
        sock.exists()
    });
    ovs.start_ovn_controller().expect("ovn-controller");

    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "ferrovn",
        "plugins": [{"type": "ferrovn-cni", "server_socket": sock}],
    });
    let cni = cni_plugin_binary().expect("build ferrovn-cni");
    node.install_cni(
        "10-ferrovn.conflist",
        &conflist.to_string(),
        &[("ferrovn-cni", &cni)],
    )
    .expect("install the CNI config");
    node.wait_ready(&cp, Duration::from_secs(120))
        .expect("Node Ready once the CNI config is in");
    Bench {
        node,
        ovs,
        controller,
        central,
        cp,
        _dir: dir,
    }
}

/// What a failing wait shows: the pods as the apiserver sees them, their events, and the tails
/// of the node's logs.
fn diagnose(b: &Bench) -> String {
    let mut out = String::new();
    if let Ok(o) = b.cp.kubectl(&["-n", "default", "describe", "pods"]) {
        out.push_str(&o.stdout);
    }
    // Inside each running container, through the CRI (the apiserver cannot reach the kubelet).
    if let Ok(o) = b.node.crictl(&["ps", "-q"]) {
        for id in o.stdout.split_whitespace() {
            let r = b.node.crictl(&[
                "exec",
                "-s",
                "--timeout",
                "10",
                id,
                "sh",
                "-c",
                "ip addr; ip route; ps; timeout 2 wget -O- http://127.0.0.1:8080/index.html 2>&1",
            ]);
            out.push_str(&format!("\n--- crictl exec {id}:\n{r:?}\n"));
        }
    }
    for log in ["kubelet", "containerd", "ferrovn-node"] {
        let text = std::fs::read_to_string(b.node.log_path(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {log} (last 25 lines)\n"));
        out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
    }
    out
}

/// Polls `check` until true; fails with [`diagnose`] after `timeout`.
fn wait_for(b: &mut Bench, timeout: Duration, what: &str, mut check: impl FnMut(&Bench) -> bool) {
    let start = std::time::Instant::now();
    while !check(b) {
        b.controller.assert_running();
        if let Err(e) = b.node.check_daemons() {
            panic!("{what}: a node daemon exited: {e}\n{}", diagnose(b));
        }
        if start.elapsed() > timeout {
            panic!("not within {timeout:?}: {what}\n{}", diagnose(b));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A busybox pod on `node`; `command` runs in `sh -c`.
fn busybox_pod(name: &str, node: &str, restart: &str, command: &str, probe: &str) -> String {
    let command = serde_json::to_string(command).expect("json");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         nodeName: {node}\n  automountServiceAccountToken: false\n  restartPolicy: {restart}\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    \
         imagePullPolicy: Never\n    command: [sh, -c, {command}]\n{probe}",
        image = busybox_image(),
    )
}

#[test]
fn kubelet_pod_gets_its_network_from_ferrovn_and_serves_http() {
    let mut b = bench();
    let node = b.node.name().to_string();

    // A web server whose readiness the kubelet probes over HTTP from the node: node -> the
    // join port ovn0 (the agent made it from the Node's join allocation) -> OVN -> the pod
    // (docs/node-connectivity.md). Without FerrOVN's node port the pod never goes Ready.
    let probe = "    readinessProbe:\n      httpGet: {path: /index.html, port: 8080}\n      \
                 periodSeconds: 1\n      timeoutSeconds: 2\n";
    b.cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &busybox_pod(
            "web",
            &node,
            "Always",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
            probe,
        ),
    )
    .expect("create pod web");
    wait_for(
        &mut b,
        Duration::from_secs(120),
        "pod web Ready by the kubelet's HTTP probe",
        |b| {
            pod_field(
                &b.cp,
                "web",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
        },
    );
    // The probe came from the node, through its join port.
    let ovn0 = b
        .node
        .run_in(&["ip", "-4", "-o", "addr", "show", "dev", "ovn0"])
        .expect("ovn0 on the node");
    assert!(
        ovn0.stdout.contains("100.64."),
        "ovn0 has the node's join address: {}",
        ovn0.stdout
    );

    // The address the kubelet reports is the one the controller allocated.
    let ip = pod_field(&b.cp, "web", "{.status.podIP}");
    let allocated = annotation(&b.cp, "web", "ovn.kubernetes.io/ip_address");
    assert!(!ip.is_empty(), "pod web has an IP");
    assert_eq!(ip, allocated, "pod IP is the controller's allocation");
    assert!(ip.starts_with("10.16."), "on ovn-default: {ip}");
    // The OVN port is bound and up, and OVS has the pod's interface.
    assert_within(Duration::from_secs(30), "LSP web.default up", || {
        b.central
            .nbctl(&["get", "Logical_Switch_Port", "web.default", "up"])
            .is_ok_and(|s| s.trim() == "true")
    });
    let iface = b
        .ovs
        .vsctl([
            "--bare",
            "--columns=name",
            "find",
            "Interface",
            "external_ids:iface-id=web.default",
        ])
        .expect("find the pod's OVS interface");
    let iface = iface.trim().to_string();
    assert!(!iface.is_empty(), "web.default has an OVS interface");

    // Another pod reaches the server across the logical switch; it reports what it got in its
    // termination message (the apiserver cannot reach this kubelet for `logs`).
    b.cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &busybox_pod(
            "client",
            &node,
            "Never",
            &format!("timeout 10 wget -q -O /dev/termination-log http://{ip}:8080/index.html"),
            "",
        ),
    )
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
        "client fetched web's page over the pod network"
    );
    let client_ip = pod_field(&b.cp, "client", "{.status.podIP}");
    assert_ne!(client_ip, ip, "two pods, two addresses");

    // The pod's network namespace, bind-mounted by containerd in the node's mount namespace.
    let sandbox = ready_sandbox(&b, "web");
    let netns = b
        .node
        .crictl(&[
            "inspectp",
            "-o",
            "go-template",
            "--template",
            "{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type \"network\"}}{{.path}}{{end}}{{end}}",
            &sandbox,
        ])
        .expect("crictl inspectp")
        .stdout
        .trim()
        .to_string();
    let mounted = |b: &Bench| {
        b.node
            .mountinfo()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(netns.as_str()))
    };
    assert!(
        !netns.is_empty() && mounted(&b),
        "web's netns {netns:?} is a mount of the node"
    );

    // Deleting the pod: the kubelet stops the sandbox, containerd's CNI DEL reaches the agent,
    // which removes the OVS port; the controller removes the OVN row.
    b.cp.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        "web",
        "--wait=true",
        "--timeout=90s",
    ])
    .expect("delete pod web");
    assert_within(Duration::from_secs(30), "web's OVS interface gone", || {
        b.ovs
            .vsctl([
                "--bare",
                "--columns=name",
                "find",
                "Interface",
                "external_ids:iface-id=web.default",
            ])
            .is_ok_and(|s| s.trim().is_empty())
    });
    assert_within(Duration::from_secs(30), "LSP web.default gone", || {
        b.central
            .nbctl(&[
                "--bare",
                "--columns=name",
                "find",
                "Logical_Switch_Port",
                "name=web.default",
            ])
            .is_ok_and(|s| s.trim().is_empty())
    });
    wait_for(
        &mut b,
        Duration::from_secs(30),
        "web's netns unmounted",
        |b| !mounted(b),
    );
    // The kubelet removes a stopped sandbox later (its garbage collection); stopped it is.
    let ready = b
        .node
        .crictl(&["pods", "--name", "web", "--state", "ready", "-q"])
        .expect("crictl pods");
    assert!(
        ready.stdout.trim().is_empty(),
        "web's sandbox stopped: {}",
        ready.stdout
    );
}

/// The OVS interface names of `lsp` on the node.
fn ovs_ports(b: &Bench, lsp: &str) -> Vec<String> {
    b.ovs
        .vsctl([
            "--bare",
            "--columns=name",
            "find",
            "Interface",
            &format!("external_ids:iface-id={lsp}"),
        ])
        .expect("ovs-vsctl find")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The ready sandbox of pod `name` (crictl id), if any.
fn ready_sandbox(b: &Bench, name: &str) -> String {
    b.node
        .crictl(&["pods", "--name", name, "--state", "ready", "-q"])
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default()
}

/// A client pod fetches `http://<ip>:8080/index.html` and must get `want`.
fn fetch_from_pod(b: &mut Bench, client: &str, ip: &str, want: &str) {
    let node = b.node.name().to_string();
    b.cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &busybox_pod(
            client,
            &node,
            "Never",
            &format!("timeout 10 wget -q -O /dev/termination-log http://{ip}:8080/index.html"),
            "",
        ),
    )
    .expect("create the client pod");
    wait_for(
        b,
        Duration::from_secs(120),
        &format!("pod {client} finished"),
        |b| {
            matches!(
                pod_field(&b.cp, client, "{.status.phase}").as_str(),
                "Succeeded" | "Failed"
            )
        },
    );
    let phase = pod_field(&b.cp, client, "{.status.phase}");
    let message = pod_field(
        &b.cp,
        client,
        "{.status.containerStatuses[0].state.terminated.message}",
    );
    assert_eq!(
        (phase.as_str(), message.trim()),
        ("Succeeded", want),
        "{client} fetched http://{ip}:8080/ over the pod network"
    );
}

fn web_ready(b: &Bench) -> bool {
    pod_field(
        &b.cp,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    ) == "True"
}

#[test]
fn killed_sandbox_is_recreated_and_a_kubelet_restart_disturbs_nothing() {
    let mut b = bench();
    let node = b.node.name().to_string();
    b.cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &busybox_pod(
            "web",
            &node,
            "Always",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
            "",
        ),
    )
    .expect("create pod web");
    wait_for(&mut b, Duration::from_secs(120), "pod web Ready", web_ready);
    let ip = pod_field(&b.cp, "web", "{.status.podIP}");
    assert_eq!(ip, annotation(&b.cp, "web", "ovn.kubernetes.io/ip_address"));
    let old_ports = ovs_ports(&b, "web.default");
    assert_eq!(old_ports.len(), 1, "one OVS port for web: {old_ports:?}");
    let old_sandbox = ready_sandbox(&b, "web");
    assert!(!old_sandbox.is_empty(), "web has a ready sandbox");

    // The sandbox's pause process dies: the kubelet tears the sandbox down (CNI DEL) and
    // makes a new one (CNI ADD) with the same allocation.
    let inspect = b
        .node
        .crictl(&[
            "inspectp",
            "-o",
            "go-template",
            "--template",
            "{{.info.pid}}",
            &old_sandbox,
        ])
        .expect("crictl inspectp");
    let pause_pid: i32 = inspect.stdout.trim().parse().expect("sandbox pid");
    assert!(
        b.node.pids().contains(&(pause_pid as u32)),
        "the pause process {pause_pid} is the node's"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pause process");
    wait_for(
        &mut b,
        Duration::from_secs(120),
        "a new sandbox for web, Ready",
        |b| {
            let s = ready_sandbox(b, "web");
            !s.is_empty() && s != old_sandbox && web_ready(b)
        },
    );
    assert_eq!(
        pod_field(&b.cp, "web", "{.status.podIP}"),
        ip,
        "the recreated sandbox keeps the pod's allocated address"
    );
    wait_for(
        &mut b,
        Duration::from_secs(30),
        "the old OVS port gone, one new",
        |b| {
            let now = ovs_ports(b, "web.default");
            now.len() == 1 && now != old_ports
        },
    );
    assert_within(Duration::from_secs(30), "LSP web.default up again", || {
        b.central
            .nbctl(&["get", "Logical_Switch_Port", "web.default", "up"])
            .is_ok_and(|s| s.trim() == "true")
    });
    fetch_from_pod(&mut b, "client-1", &ip, "web");

    // The kubelet restarts with pods running: same sandbox, same container, same port.
    let sandbox = ready_sandbox(&b, "web");
    let ports = ovs_ports(&b, "web.default");
    let restarts = pod_field(&b.cp, "web", "{.status.containerStatuses[0].restartCount}");
    let old_kubelet = b.node.kubelet_pid();
    b.node.restart_kubelet().expect("restart the kubelet");
    assert_ne!(b.node.kubelet_pid(), old_kubelet, "a new kubelet process");
    // The Node may still show the old kubelet's Ready; the new one proves itself by running
    // the next client pod.
    b.node
        .wait_ready(&b.cp, Duration::from_secs(120))
        .expect("Node Ready after the kubelet restart");
    fetch_from_pod(&mut b, "client-2", &ip, "web");
    assert_eq!(ready_sandbox(&b, "web"), sandbox, "web's sandbox untouched");
    assert_eq!(
        ovs_ports(&b, "web.default"),
        ports,
        "web's OVS port untouched"
    );
    assert_eq!(
        pod_field(&b.cp, "web", "{.status.containerStatuses[0].restartCount}"),
        restarts,
        "web's container not restarted"
    );
    assert!(web_ready(&b), "web still Ready");
}
