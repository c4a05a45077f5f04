//! The lab end to end, for real (as root): `up` (a real Kubernetes control plane, OVN,
//! OVS-DPDK + kernel nodes each with containerd and a kubelet, controller and agents in cluster
//! mode, vhost helper, the example pods run as containers by the kubelets, their networks from
//! the built CNI plugin, DPDK pods' testpmd in a container) → every expected pod pair reachable,
//! `kubectl get nodes,subnets,ips` in the output with our columns, each pod Running and Ready
//! with its allocated address as the kubelet reports it → `up` again is harmless → `apply -f` of a
//! pod the scheduler places / `delete -f` → `down` → nothing left behind (processes, namespaces,
//! mounts, the kubelets' cgroups). A private state dir and name prefix keep it apart from other
//! tests and from a user's running lab.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferrovn_testkit::binaries::build_workspace_binary;
use ferrovn_testkit::kube::{agnhost_image, binary, ferrovn_image_tar};

struct Lab {
    state: tempfile::TempDir,
    prefix: String,
}

impl Lab {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferrovn-lab"))
            .arg(format!("--state-dir={}", self.state.path().display()))
            .args(args)
            .output()
            .expect("running ferrovn-lab")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // also on failure: never leave the machine dirty
        let out = self.cmd(&["down"]);
        if !out.status.success() {
            eprintln!("down in drop: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

/// `kubectl` as the lab's admin; stdout, or the error.
fn kubectl(state: &Path, args: &[&str]) -> Result<String, String> {
    let kubectl = binary("kubectl").expect("kubectl (make kube-bins)");
    let out = Command::new(kubectl)
        .arg(format!(
            "--kubeconfig={}",
            state.join("kube/admin.kubeconfig").display()
        ))
        .args(args)
        .output()
        .expect("running kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// (phase, status.podIP, hostIP, the controller's ovn.kubernetes.io/ip_address, node, the
/// container's ready flag) of a pod.
fn pod_view(state: &Path, ns: &str, pod: &str) -> Vec<String> {
    let out = kubectl(
        state,
        &[
            "-n",
            ns,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase}|{.status.podIP}|{.status.hostIP}|{.metadata.annotations.ovn\\.kubernetes\\.io/ip_address}|{.spec.nodeName}|{.status.containerStatuses[0].ready}",
        ],
    )
    .unwrap_or_else(|e| panic!("kubectl get pod {ns}/{pod}: {e}"));
    out.split('|').map(str::to_string).collect()
}

fn nr_hugepages() -> String {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// (reachable, total) from `lab: R/T pod pairs reachable`.
fn summary(line: &str) -> Option<(usize, usize)> {
    let rest = line
        .strip_prefix("lab: ")?
        .strip_suffix(" pod pairs reachable")?;
    let (r, t) = rest.split_once('/')?;
    Some((r.parse().ok()?, t.parse().ok()?))
}

fn processes_mentioning(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(s) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            if !zombie {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

fn bin_dir() -> PathBuf {
    let mut dir = None;
    for (pkg, bin) in [
        ("ferrovn-control", "ferrovn-controller"),
        ("ferrovn-dataplane", "ferrovn-node"),
        ("ferrovn-cni", "ferrovn-cni"),
        ("ferrovn-vhost", "ferrovn-vhost"),
    ] {
        match build_workspace_binary(pkg, bin) {
            Ok(p) => dir = p.parent().map(Path::to_path_buf),
            // the lab reports a missing vhost helper itself (DPDK pods on the kernel node)
            Err(e) if bin == "ferrovn-vhost" => eprintln!("building {bin}: {e}"),
            Err(e) => panic!("building {bin}: {e}"),
        }
    }
    dir.expect("binary dir")
}

const EXTRA_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: extra
  namespace: demo
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: ferrovn.invalid/e2e-test-images/busybox:1.37.0-2
    imagePullPolicy: Never
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

/// The vhost helper's ports on lab-kernel, as it answers on its control socket (the node's
/// `/run/ferrovn`, the lab's `nodes/lab-kernel/run`): `list_ports` of docs/vhost-helper.md.
fn helper_ports(state: &Path) -> Result<Vec<serde_json::Value>, String> {
    use std::io::{BufRead, Write};
    let sock = state.join("nodes/lab-kernel/run/vhost.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(|e| format!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"{\"cmd\":\"list_ports\"}\n")
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
    if v["ok"] != true {
        return Err(line);
    }
    Ok(v["ports"].as_array().cloned().unwrap_or_default())
}

/// The helper pod on lab-kernel: (name, ready), from the API server.
fn helper_pod(state: &Path) -> Option<(String, bool)> {
    let out = kubectl(
        state,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=ferrovn-vhost",
            "--field-selector",
            "spec.nodeName=lab-kernel",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[0].name} {.metadata.deletionTimestamp} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
        ],
    )
    .ok()?;
    // a terminating pod (deletionTimestamp set: four words) is not the node's helper
    out.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() == 3 && w[1] == "ferrovn-vhost").then(|| (w[0].to_string(), w[2] == "true"))
    })
}

/// Waits until lab-kernel's helper serves a port with testpmd attached (dpdk-b's net1).
fn wait_helper_serves_dpdk_b(state: &Path, within: std::time::Duration) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let ports = helper_ports(state);
        if let Ok(p) = &ports
            && p.len() == 1
            && p[0]["pod_connected"] == true
        {
            return p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the helper on lab-kernel does not serve dpdk-b within {within:?}: {ports:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The kubelet nodes' cgroups (testkit KubeletNode records them in the node's directory).
fn kubelet_cgroups(state: &Path) -> Vec<String> {
    ["lab-dpdk", "lab-kernel"]
        .iter()
        .filter_map(|n| {
            let f = state.join("nodes").join(n).join("k/kubelet-node.json");
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok()?;
            Some(v["cgroup"].as_str()?.to_string())
        })
        .collect()
}

/// A Service of the web pods (labelled by the test, so the EndpointSlice controller fills it
/// in), on a port other than theirs: reaching it proves the VIP's DNAT, not a direct hit. And a
/// client on each node from the agnhost image: busybox's static wget cannot resolve names (it
/// crashes in glibc's static resolver), agnhost's curl resolves through the pod's resolv.conf.
const DNS_WEB_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dns-web, namespace: demo}
spec:
  selector: {dnstest: web}
  ports: [{name: http, port: 8080, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: dnsc-dpdk, namespace: default}
spec:
  nodeName: lab-dpdk
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: "@AGNHOST@", imagePullPolicy: Never, args: [pause]}]
---
apiVersion: v1
kind: Pod
metadata: {name: dnsc-kernel, namespace: default}
spec:
  nodeName: lab-kernel
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: "@AGNHOST@", imagePullPolicy: Never, args: [pause]}]
"#;

/// `kubectl exec ns/pod -- cmd` until `ok(stdout)` holds or `within` is over; the last output.
fn exec_until(
    state: &Path,
    ns: &str,
    pod: &str,
    cmd: &[&str],
    within: std::time::Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let mut args = vec!["-n", ns, "exec", pod, "--"];
        args.extend_from_slice(cmd);
        let r = kubectl(state, &args);
        match &r {
            Ok(o) if ok(o) => return r,
            _ if std::time::Instant::now() >= deadline => {
                return Err(format!("{cmd:?} in {ns}/{pod}: {r:?}"));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// The lab's cluster DNS (deploy/kube/coredns.yaml): a pod on each node resolves the
/// apiserver's Service and a Service of the test by name, and a name that does not exist is
/// NXDOMAIN (no forward); a client on each node reaches that Service by `<name>.<namespace>`
/// through its resolv.conf's search path, both backends.
fn cluster_dns_resolves_and_reaches_a_service_by_name(state: &Path, up_out: &str) {
    let within = std::time::Duration::from_secs(60);
    assert!(
        up_out
            .lines()
            .any(|l| l.contains("cluster DNS") && l.contains("kube-dns 10.96.0.10")),
        "no cluster DNS step with its endpoints in `up`:\n{up_out}"
    );
    kubectl(
        state,
        &[
            "-n",
            "demo",
            "label",
            "pod",
            "web-1",
            "web-2",
            "dnstest=web",
        ],
    )
    .unwrap();
    let f = state.join("dns-web.yaml");
    std::fs::write(&f, DNS_WEB_SERVICE.replace("@AGNHOST@", &agnhost_image())).unwrap();
    kubectl(state, &["apply", "-f", &f.display().to_string()]).unwrap();
    let vip = kubectl(
        state,
        &[
            "-n",
            "demo",
            "get",
            "svc",
            "dns-web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )
    .unwrap();
    assert!(vip.starts_with("10.96."), "dns-web clusterIP {vip:?}");
    // client runs on lab-dpdk, db-0 on lab-kernel
    for (ns, pod) in [("default", "client"), ("demo", "db-0")] {
        exec_until(
            state,
            ns,
            pod,
            &["nslookup", "kubernetes.default.svc.cluster.local"],
            within,
            // the answer, not the server line (10.96.0.10)
            |o| o.lines().any(|l| l.trim() == "Address: 10.96.0.1"),
        )
        .unwrap();
        exec_until(
            state,
            ns,
            pod,
            &["nslookup", "dns-web.demo.svc.cluster.local"],
            within,
            |o| o.lines().any(|l| l.trim() == format!("Address: {vip}")),
        )
        .unwrap();
        // busybox's nslookup exits 1 on NXDOMAIN, its message on stdout
        let missing = exec_until(
            state,
            ns,
            pod,
            &[
                "sh",
                "-c",
                "nslookup no-such-svc.demo.svc.cluster.local; true",
            ],
            within,
            |o| o.contains("NXDOMAIN"),
        );
        assert!(
            missing.is_ok(),
            "{ns}/{pod}: a name that does not exist: {missing:?}"
        );
    }
    kubectl(
        state,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/dnsc-dpdk",
            "pod/dnsc-kernel",
            "--timeout=120s",
        ],
    )
    .unwrap();
    for pod in ["dnsc-dpdk", "dnsc-kernel"] {
        // by its short name through the search path (`<name>.<ns>` + svc.cluster.local);
        // several requests: the Service has two backends and kube-dns two endpoints
        let mut served = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + within;
        while served.len() < 2 && std::time::Instant::now() < deadline {
            if let Ok(o) = exec_until(
                state,
                "default",
                pod,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "5",
                    "http://dns-web.demo:8080/index.html",
                ],
                within,
                |o| o.starts_with("web-"),
            ) {
                served.insert(o.trim().to_string());
            }
        }
        assert_eq!(
            served.into_iter().collect::<Vec<_>>(),
            ["web-1", "web-2"],
            "default/{pod}: http://dns-web.demo:8080 by name did not reach both backends"
        );
    }
    kubectl(state, &["delete", "-f", &f.display().to_string()]).unwrap();
}

#[test]
fn lab_up_all_reachable_apply_delete_down_leaves_nothing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the lab test runs as root (network namespaces, hugepages, OVS)"
    );
    let bins = bin_dir();
    let state = tempfile::Builder::new()
        .prefix("fvl")
        .tempdir_in("/tmp")
        .unwrap();
    let prefix = format!("fvl{:04x}", std::process::id() & 0xffff);
    let lab = Lab { state, prefix };
    let state_s = lab.state.path().display().to_string();
    let hugepages_before = nr_hugepages();
    // the DPDK pods' image (a no-op when built)
    let image = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/testpmd/build.sh"))
        .output()
        .expect("running deploy/images/testpmd/build.sh");
    assert!(image.status.success(), "testpmd image: {}", text(&image));
    // FerrOVN's own image, from this test's binaries: the controller and agents run from it
    let ferrovn_image =
        ferrovn_image_tar().expect("FerrOVN image (deploy/images/ferrovn/build.sh)");

    let up = lab.cmd(&[
        "up",
        &format!("--prefix={}", lab.prefix),
        &format!("--bin-dir={}", bins.display()),
        "--nb-port=0",
        "--sb-port=0",
        &format!("--ferrovn-image={}", ferrovn_image.display()),
    ]);
    let out = text(&up);
    println!("{out}");
    // the lab says which OVS / OVN / DPDK it runs: the rootfs' (docs/ovs-ovn.md)
    assert!(
        out.lines().any(
            |l| l.starts_with("lab: datapath ovs-vswitchd (Open vSwitch) 3.5")
                && l.contains("ovn-northd 25.03")
                && l.contains("DPDK 24.11")
        ),
        "no datapath version line:\n{out}"
    );
    // node -> every pod, every kernel pod -> its own node, the other node and the outside
    // (docs/node-connectivity.md): all reachable
    let node_rows = out
        .lines()
        .find_map(|l| l.strip_prefix("node/outside rows: "))
        .and_then(|r| r.strip_suffix(" reachable"))
        .and_then(|r| r.split_once('/'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap_or_else(|| panic!("no node/outside rows:\n{out}"));
    assert!(node_rows.1 >= 8, "too few node/outside rows:\n{out}");
    assert_eq!(
        node_rows.0, node_rows.1,
        "node/outside rows unreachable:\n{out}"
    );
    // SERVICES (docs/services.md): demo/web (NodePort) and demo/hello (ClusterIP) with a
    // backend on each node, TCP and UDP, and demo/db, asked from a kernel pod, both DPDK pods,
    // both nodes and the outside (node ports on both InternalIPs): every counted row reached
    let svc_rows = out
        .lines()
        .find_map(|l| l.strip_prefix("services rows: "))
        .and_then(|r| r.strip_suffix(" reachable"))
        .and_then(|r| r.split_once('/'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap_or_else(|| panic!("no services rows:\n{out}"));
    // db 5 + hello 2 x 5 + web 2 x 5 ClusterIP rows + web 2 x 2 x 6 node-port rows
    assert!(svc_rows.1 >= 49, "too few services rows:\n{out}");
    assert_eq!(svc_rows.0, svc_rows.1, "services rows not reached:\n{out}");
    for (client, target) in [
        ("outside", "192.168.100.1:30080"),
        ("outside", "192.168.100.2:30080"),
        ("node lab-dpdk", "192.168.100.2:30080"),
        ("node lab-kernel", "10.96.0.81:80"),
        ("pod default/client", "10.96.0.81:80"),
        // dpdk-b on lab-kernel (vhost helper): wget and nc -u on its dtap0, through testpmd
        // and net1; web-1 is on its own node (replies whose checksums the kernel finishes
        // before the helper's veth)
        ("DPDK pod default/dpdk-b", "10.96.0.81:80"),
        ("DPDK pod default/dpdk-b", "192.168.100.1:30080"),
        ("DPDK pod default/dpdk-b", "192.168.100.2:30080"),
        ("DPDK pod default/dpdk-b", "10.96.0.81:8081"),
        ("DPDK pod default/dpdk-b", "10.96.0.80:8081"),
        ("DPDK pod default/dpdk-b", "192.168.100.1:30081"),
        ("DPDK pod default/dpdk-b", "192.168.100.2:30081"),
        // UDP from the other clients
        ("pod default/client", "10.96.0.81:8081"),
        ("node lab-kernel", "192.168.100.1:30081"),
        ("outside", "192.168.100.2:30081"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(client)
                && l.contains(target)
                && l.contains("ok (web-1, web-2)")),
            "{client} -> {target}: not answered by both backends:\n{out}"
        );
    }
    // db-0 is on dpdk-b's own node too
    assert!(
        out.lines().any(|l| l.contains("DPDK pod default/dpdk-b")
            && l.contains("10.96.0.20:5432")
            && l.contains("ok (db-0)")),
        "DPDK pod default/dpdk-b -> demo/db: not answered:\n{out}"
    );
    // every DPDK pod is a counted Service client (its testpmd forwards dtap0)
    assert!(
        !out.contains("not counted:"),
        "a DPDK pod's Service rows were not counted:\n{out}"
    );
    let (r, t) = summary(&last_line(&up)).unwrap_or_else(|| panic!("no summary line:\n{out}"));
    // 4 kernel pods reach each other at least (12 pairs), and every counted pair must work
    assert!(t >= 12, "too few pairs counted ({t}):\n{out}");
    assert_eq!(r, t, "unreachable pairs:\n{out}");
    assert!(up.status.success(), "{out}");
    // each node's row in the status table: chassis registered and every daemon up (the
    // node names alone are in every `up` output, in its step lines)
    for node in ["lab-dpdk", "lab-kernel"] {
        assert!(
            out.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&node)
                    && words.contains(&"yes")
                    && l.contains(" all up")
                    && !l.contains("DOWN")
            }),
            "node {node}: no status row with its chassis registered and all daemons up:\n{out}"
        );
    }
    assert!(
        out.contains("demo/db-0") && out.contains("10.66.0.20"),
        "static IP pod:\n{out}"
    );
    // with hugepages the DPDK node runs OVS-DPDK and its DPDK pod (testpmd on vhost-user) is
    // a reachable target; without, the lab must have said so loudly
    let dpdk_node = out
        .lines()
        .any(|l| l.split_whitespace().take(2).eq(["lab-dpdk", "dpdk"]));
    // the DPDK pod on the kernel node is served by the vhost helper
    assert!(
        out.lines()
            .any(|l| l.contains(" helper ") && l.contains("ready (testpmd io, dtap0)")),
        "DPDK pod through the vhost helper not ready:\n{out}"
    );
    // every pod available: 4 kernel pods probe the 5 others
    assert_eq!(t, 20, "pairs counted:\n{out}");

    // The status reads the cluster: both Nodes registered and Ready (their kubelets, on
    // containerd), the Subnets with our printer columns and the controller's counts.
    for node in ["node/lab-dpdk", "node/lab-kernel"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([node, "Ready"])),
            "{node} not registered and Ready in `kubectl get nodes`:\n{out}"
        );
        let runtime = kubectl(
            lab.state.path(),
            &[
                "get",
                node,
                "-o",
                "jsonpath={.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}",
            ],
        );
        assert!(
            runtime
                .as_ref()
                .is_ok_and(|r| r.starts_with("v1.37") && r.contains("containerd://")),
            "{node}: not a kubelet on containerd: {runtime:?}"
        );
    }
    assert!(
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"NAME")
                && ["PROVIDER", "PROTOCOL", "CIDR", "V4USED", "V4AVAILABLE"]
                    .iter()
                    .all(|c| w.contains(c))
        }),
        "no `kubectl get subnets` header with our printer columns:\n{out}"
    );
    // demo: web-1, web-2 and db-0 hold addresses
    assert!(
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"subnet.kubeovn.io/demo")
                && w.contains(&"10.66.0.0/24")
                && w.contains(&"3")
        }),
        "no demo Subnet row with 3 addresses used:\n{out}"
    );
    // The controller's IP objects: one per pod interface, with the pod's address; the
    // built-in join subnet as an object too.
    assert!(
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"ip.kubeovn.io/db-0.demo") && w.contains(&"10.66.0.20")
        }),
        "no IP object db-0.demo with its static address:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("subnet.kubeovn.io/join ") && l.contains("100.64.0.0/16")),
        "no join Subnet row:\n{out}"
    );
    // FerrOVN runs as the kubelets' pods, from deploy/ferrovn.yaml: the agent DaemonSet of each
    // profile on its node, the controller Deployment's replicas; the status table lists them.
    for (ds, node) in [
        ("ferrovn-node-kernel", "lab-kernel"),
        ("ferrovn-node-dpdk", "lab-dpdk"),
    ] {
        let pods = kubectl(
            lab.state.path(),
            &[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=ferrovn-node",
                "-o",
                "jsonpath={range .items[*]}{.metadata.ownerReferences[0].name} {.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
            ],
        )
        .unwrap();
        assert!(
            pods.lines().any(|l| l == format!("{ds} {node} Running")),
            "no Running pod of DaemonSet {ds} on {node}: {pods}\n{out}"
        );
        assert!(
            out.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first().is_some_and(|p| p.starts_with(&format!("{ds}-")))
                    && w.get(1) == Some(&node)
                    && w.get(2) == Some(&"Running")
                    && w.get(3) == Some(&"yes")
            }),
            "no status row of the {ds} pod on {node}:\n{out}"
        );
    }
    let ready_controllers = kubectl(
        lab.state.path(),
        &[
            "-n",
            "kube-system",
            "get",
            "deployment",
            "ferrovn-controller",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    );
    assert_eq!(ready_controllers.as_deref(), Ok("2"), "{out}");
    // The controller runs in cluster mode, one replica holds the leader-election Lease.
    let holder = kubectl(
        lab.state.path(),
        &[
            "-n",
            "kube-system",
            "get",
            "lease",
            "ferrovn-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert!(
        holder
            .as_ref()
            .is_ok_and(|h| h.starts_with("ferrovn-controller-")),
        "Lease holder {holder:?}\n{out}"
    );
    // Every pod's status as its node's kubelet reports it: Running, its container ready, on
    // its node's address, with the address the controller allocated (the pod's annotation).
    for (ns, pod) in [
        ("demo", "web-1"),
        ("demo", "web-2"),
        ("demo", "db-0"),
        ("default", "client"),
        ("default", "dpdk-a"),
        ("default", "dpdk-b"),
    ] {
        let v = pod_view(lab.state.path(), ns, pod);
        assert_eq!(v[0], "Running", "{ns}/{pod} phase: {v:?}");
        assert_eq!(v[5], "true", "{ns}/{pod} container not ready: {v:?}");
        assert!(!v[1].is_empty(), "{ns}/{pod} has no status.podIP: {v:?}");
        assert_eq!(v[1], v[3], "{ns}/{pod}: status.podIP vs annotation: {v:?}");
        let host = if v[4] == "lab-dpdk" {
            "192.168.100.1"
        } else {
            "192.168.100.2"
        };
        assert_eq!(v[2], host, "{ns}/{pod} hostIP: {v:?}");
    }
    assert_eq!(pod_view(lab.state.path(), "demo", "db-0")[1], "10.66.0.20");
    if dpdk_node {
        assert!(
            out.lines()
                .any(|l| l.contains("vhost-user") && l.contains("ready (testpmd io, dtap0)")),
            "DPDK pod on OVS-DPDK not ready:\n{out}"
        );
        // dpdk-a's wget goes through testpmd and OVS-DPDK: the pod switch's load balancer
        // answers it from both nodes' backends, ClusterIP and node port
        for target in [
            "10.96.0.81:80",
            "192.168.100.2:30080",
            "10.96.0.81:8081",
            "192.168.100.1:30081",
        ] {
            assert!(
                out.lines().any(|l| l.contains("DPDK pod default/dpdk-a")
                    && l.contains(target)
                    && l.contains("ok (web-1, web-2)")),
                "DPDK pod default/dpdk-a -> {target}: not answered by both backends:\n{out}"
            );
        }
        // the agent agrees, for the reason the manifest gives (the Node's ovs_dp_type label)
        assert!(
            out.lines()
                .any(|l| l.starts_with("lab-dpdk") && l.contains("[agent: label-userspace]")),
            "the agent on lab-dpdk did not choose DPDK for its label:\n{out}"
        );
    } else {
        assert!(
            out.contains("runs the KERNEL profile"),
            "silent fallback:\n{out}"
        );
    }

    // The agent pod on lab-kernel deleted: its DaemonSet starts another; the running pods'
    // connectivity is OVS's and OVN's and stays while the agent restarts (the status right after
    // the delete probes every pair again).
    let agent_on = |node: &str| {
        kubectl(
            lab.state.path(),
            &[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=ferrovn-node",
                "--field-selector",
                &format!("spec.nodeName={node}"),
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
            ],
        )
        .unwrap_or_default()
    };
    let before = agent_on("lab-kernel");
    let old_agent = before.split_whitespace().next().unwrap().to_string();
    kubectl(
        lab.state.path(),
        &[
            "-n",
            "kube-system",
            "delete",
            "pod",
            &old_agent,
            "--wait=true",
            "--timeout=60s",
        ],
    )
    .unwrap_or_else(|e| panic!("kubectl delete pod {old_agent}: {e}"));
    let during = lab.cmd(&["status"]);
    let (rd, td) = summary(&last_line(&during)).unwrap_or_else(|| panic!("{}", text(&during)));
    assert_eq!(
        (rd, td),
        (t, t),
        "pairs while the agent restarts:\n{}",
        text(&during)
    );
    let start = std::time::Instant::now();
    loop {
        let now = agent_on("lab-kernel");
        if now
            .lines()
            .any(|l| !l.starts_with(&old_agent) && l.ends_with(" true"))
        {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no new agent pod Ready on lab-kernel after deleting {old_agent}: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // The vhost helper is the DaemonSet's pod on lab-kernel, not a process of the lab: its
    // process sits in lab-kernel's kubelet cgroup, and its control socket lists dpdk-b's port
    // with testpmd attached and the status pings counted.
    let (old_helper, ready) = helper_pod(lab.state.path())
        .unwrap_or_else(|| panic!("no pod of DaemonSet ferrovn-vhost on lab-kernel\n{out}"));
    assert!(ready, "helper pod {old_helper} not ready");
    assert!(
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&old_helper.as_str())
                && w.get(1) == Some(&"lab-kernel")
                && w.get(2) == Some(&"Running")
                && w.get(3) == Some(&"yes")
        }),
        "no status row of the helper pod {old_helper}:\n{out}"
    );
    let kernel_cgroup = kubelet_cgroups(lab.state.path())
        .get(1)
        .cloned()
        .expect("lab-kernel's kubelet node record");
    let helper_procs =
        processes_mentioning(&format!("--file-prefix={}-vhost-lab-kernel", lab.prefix));
    assert_eq!(helper_procs.len(), 1, "{helper_procs:?}");
    let pid = helper_procs[0].split(':').next().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert!(
        cg.lines()
            .any(|l| l.contains(":pids:") && l.contains(&format!("/{kernel_cgroup}/"))),
        "the helper (PID {pid}) is not a pod of lab-kernel's kubelet: {cg}"
    );
    let ports = wait_helper_serves_dpdk_b(lab.state.path(), std::time::Duration::from_secs(30));
    assert!(
        ports[0]["tx_packets"].as_u64().unwrap_or(0) > 0
            && ports[0]["rx_packets"].as_u64().unwrap_or(0) > 0,
        "the status pings did not pass the helper: {ports:?}"
    );

    // The helper pod deleted: the DaemonSet makes another; it starts empty (--no-state-file),
    // the agent re-adds dpdk-b's port (its reconcile), testpmd's virtio-user is attached again
    // and dpdk-b answers every pod again.
    kubectl(
        lab.state.path(),
        &[
            "-n",
            "kube-system",
            "delete",
            "pod",
            &old_helper,
            "--wait=true",
            "--timeout=60s",
        ],
    )
    .unwrap_or_else(|e| panic!("kubectl delete pod {old_helper}: {e}"));
    let start = std::time::Instant::now();
    let new_helper = loop {
        match helper_pod(lab.state.path()) {
            Some((name, true)) if name != old_helper => break name,
            now => assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "no new helper pod Ready on lab-kernel after deleting {old_helper}: {now:?}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let ports = wait_helper_serves_dpdk_b(lab.state.path(), std::time::Duration::from_secs(60));
    println!(
        "helper pod {old_helper} deleted -> {new_helper} Ready, dpdk-b's port back after {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        ports[0]
    );
    let start = std::time::Instant::now();
    loop {
        let st = lab.cmd(&["status"]);
        let (r, t2) = summary(&last_line(&st)).unwrap_or_else(|| panic!("{}", text(&st)));
        if (r, t2) == (t, t) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "pairs after the helper pod was replaced: {r}/{t2}, want {t}/{t}:\n{}",
            text(&st)
        );
    }

    cluster_dns_resolves_and_reaches_a_service_by_name(lab.state.path(), &out);

    // up twice: harmless, says so
    let again = lab.cmd(&["up", &format!("--prefix={}", lab.prefix), "--no-status"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already up"), "{}", text(&again));

    // apply one more pod, then delete it
    let f = lab.state.path().join("extra-pod.yaml");
    std::fs::write(&f, EXTRA_POD).unwrap();
    let ap = lab.cmd(&["apply", "-f", &f.display().to_string()]);
    assert!(ap.status.success(), "{}", text(&ap));
    let pod_ns = format!("{}-demo-extra", lab.prefix);
    // no spec.nodeName: the scheduler placed it, that node's kubelet made its sandbox
    let v = pod_view(lab.state.path(), "demo", "extra");
    assert!(
        ["lab-dpdk", "lab-kernel"].contains(&v[4].as_str()),
        "extra not scheduled: {v:?}\n{}",
        text(&ap)
    );
    assert_eq!(v[0], "Running", "{v:?}");
    assert_eq!(v[1], v[3], "{v:?}");
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&pod_ns),
        "{}",
        text(&ap)
    );
    let st = lab.cmd(&["status"]);
    let (r2, t2) = summary(&last_line(&st)).unwrap_or_else(|| panic!("{}", text(&st)));
    assert!(
        t2 > t,
        "the extra pod adds pairs: {t2} vs {t}\n{}",
        text(&st)
    );
    assert_eq!(r2, t2, "{}", text(&st));
    let del = lab.cmd(&["delete", "-f", &f.display().to_string()]);
    assert!(del.status.success(), "{}", text(&del));
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&pod_ns),
        "{}",
        text(&del)
    );
    // the kubelet removed the sandbox, then the object
    let gone = kubectl(lab.state.path(), &["-n", "demo", "get", "pod", "extra"]);
    assert!(
        gone.as_ref().is_err_and(|e| e.contains("NotFound")),
        "pod demo/extra still in the API: {gone:?}\n{}",
        text(&del)
    );

    // down: nothing left
    let cgroups = kubelet_cgroups(lab.state.path());
    assert_eq!(cgroups.len(), 2, "the kubelet nodes' records");
    // whether the lab raised vm.nr_hugepages (its own record says so): the pool is
    // machine-wide, and other tests on this machine may change it meanwhile
    let raised = std::fs::read_to_string(lab.state.path().join("resources.jsonl"))
        .unwrap_or_default()
        .contains(r#""kind":"hugepages""#);
    let down = lab.cmd(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("nothing left behind"),
        "{}",
        text(&down)
    );
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !netns
            .lines()
            .any(|l| l.starts_with(&format!("{}-", lab.prefix))),
        "netns left: {netns}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&state_s), "mounts left under {state_s}");
    let left = processes_mentioning(&state_s);
    assert!(left.is_empty(), "processes left: {left:?}");
    for cg in &cgroups {
        assert!(
            !Path::new("/sys/fs/cgroup/pids").join(cg).exists(),
            "the kubelet node's cgroup {cg} is left"
        );
    }
    assert!(!lab.state.path().join("lab.json").exists());
    let dpdk_dirs: Vec<String> = std::fs::read_dir("/var/run/dpdk")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{}-", lab.prefix)))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        dpdk_dirs.is_empty(),
        "DPDK runtime dirs left: {dpdk_dirs:?}"
    );
    // the hugepages the lab raised are given back (unless someone else changed them since)
    let hp = nr_hugepages();
    assert!(
        !raised || hp == hugepages_before || text(&down).contains("changed by someone else"),
        "nr_hugepages {hugepages_before} before up, {hp} after down:\n{}",
        text(&down)
    );
    assert!(
        !lab.state.path().join("kube").exists(),
        "the control plane's directory is removed"
    );
}
