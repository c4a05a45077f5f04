//! A DPDK pod on a KERNEL-profile node, end to end: node A runs the agent (`--profile kernel`)
//! and the `ferrovn-vhost` helper (`--no-state-file`: only the agent can restore its ports);
//! `dpdk-testpmd` (icmpecho, `--no-huge`, virtio-user server=1) is attached through the BUILT
//! CNI plugin with the same vhost-user NAD config a DPDK node takes, and starts from the same
//! info file/annotation; a kernel pod on node B pings it across Geneve. Then: the helper is
//! SIGKILLed (an ADD meanwhile fails fast with the helper's error code naming its socket and
//! leaves nothing behind), its veth pair is deleted, the helper restarts empty, and the agent
//! re-creates the veth and re-adds the port: ping resumes; the
//! agent restarts and repairs a port removed behind its back; a pod that vanishes without DEL
//! is garbage-collected (OVS port, helper port, veth); DEL removes helper port, veth, mount.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_dataplane::alloc::Annotations;
use ferrovn_dataplane::dpdk::helper_attach::{HELPER_IFACE_KEY, helper_code};
use ferrovn_dataplane::dpdk::vhost::{VhostUserInfo, annotation_key, info_file_name};
use ferrovn_testkit::binaries::{build_workspace_binary, cni_plugin_binary};
use ferrovn_testkit::cluster::{Cluster, POD_SUBNET, add_switch, allocate_pod};
use ferrovn_testkit::cni::FerrovnCni;
use ferrovn_testkit::dpdk::{
    DpdkRuntimeDir, PodMemory, SharedDir, Testpmd, TestpmdSpec, is_mount_point,
};
use ferrovn_testkit::error::Error;
use ferrovn_testkit::names::{seed_u32, short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::Node;
use ferrovn_testkit::process::Daemon;
use ferrovn_testkit::wait::wait_until;
use ferrovn_vhost_proto::client::ControlClient;
use ferrovn_vhost_proto::protocol::{PortInfo, Request};
use serde_json::json;

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");
const DPDK_PROVIDER: &str = "dpdk.default.ovn";

/// The helper binary of this workspace, built once (cargo serialises concurrent builds with
/// its own lock on the shared target dir).
fn vhost_helper_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-vhost", "ferrovn-vhost"))
        .clone()
        .unwrap_or_else(|e| panic!("building ferrovn-vhost: {e}"))
}

fn iface_col(node: &Node, iface: &str, col: &str) -> String {
    node.vsctl(["--if-exists", "get", "Interface", iface, col])
        .map(|s| s.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}

fn link_exists(node: &Node, ifname: &str) -> bool {
    node.netns().ip(["link", "show", "dev", ifname]).is_ok()
}

/// The running helper (a process in node A's namespace, stopped by PID).
struct Helper {
    daemon: Option<Daemon>,
    ctl: PathBuf,
    log: PathBuf,
    prefix: String,
    cpu: usize,
}

impl Helper {
    fn start(&mut self, node: &Node) {
        let args: Vec<String> = vec![
            "--cores".into(),
            self.cpu.to_string(),
            "--control-socket".into(),
            self.ctl.display().to_string(),
            "--no-state-file".into(),
            "--file-prefix".into(),
            self.prefix.clone(),
            "--idle-sleep-us".into(),
            "200".into(),
            "--mbufs".into(),
            "4095".into(),
        ];
        let mut d = Daemon::spawn_appending(
            "ferrovn-vhost",
            Some(node.netns()),
            &[("RUST_LOG".into(), "info".into())],
            &vhost_helper_binary().display().to_string(),
            &args,
            &self.log,
        )
        .expect("helper spawned");
        let up = wait_until(Duration::from_secs(30), || {
            ControlClient::connect(&self.ctl).is_ok() || !d.is_running()
        });
        assert!(
            up && d.is_running(),
            "helper did not start: {}",
            self.log_text()
        );
        self.daemon = Some(d);
    }

    fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            wait_until(Duration::from_secs(10), || !d.is_running());
        }
    }

    fn ports(&self) -> Vec<PortInfo> {
        ControlClient::connect(&self.ctl)
            .and_then(|mut c| c.call(&Request::ListPorts))
            .ok()
            .and_then(|r| r.ports)
            .unwrap_or_default()
    }

    fn port(&self, name: &str) -> Option<PortInfo> {
        self.ports().into_iter().find(|p| p.spec.name == name)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // SIGTERM (clean EAL exit), SIGKILL after the grace period
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(5));
        }
    }
}

#[test]
fn dpdk_pod_on_a_kernel_node_through_the_vhost_helper() -> Result<(), Error> {
    let t_start = Instant::now();
    let tag = unique_tag();
    let rnd = short_rand();
    let work = tempfile::Builder::new()
        .prefix("fvhe-")
        .tempdir_in("/tmp")
        .expect("work dir");
    // the short bind-mount directory, shared so mounts reach the helper's mount namespace
    let vhost_dir = SharedDir::create(Path::new(&format!("/tmp/fvhv{rnd}"))).expect("vhost dir");
    let kubelet = tempfile::Builder::new()
        .prefix("fvhk")
        .tempdir_in("/tmp")
        .expect("kubelet root");
    let allowed = ferrovn_vhost::cores::allowed_cores().expect("affinity");
    let pod_cpu = allowed.first().copied().unwrap_or(0);
    let relay_cpu = allowed.last().copied().unwrap_or(0);

    let ann_dir = work.path().join("pod-annotations");
    let helper_prefix = format!("fvhh{rnd}");
    let _helper_runtime = DpdkRuntimeDir::new(&helper_prefix);
    let ctl = work.path().join("vhost.sock");
    let host_mnt = format!("--host-mount-ns=/proc/{}/ns/mnt", std::process::id());
    let a_args = [
        "--profile=kernel".to_string(),
        format!("--vhost-dir={}", vhost_dir.path().display()),
        format!("--kubelet-root={}", kubelet.path().display()),
        host_mnt,
        format!("--pod-annotations-dir={}", ann_dir.display()),
        format!("--vhost-helper-socket={}", ctl.display()),
        "--vhost-helper-interval-secs=1".to_string(),
        "--gc-interval-secs=1".to_string(),
        "--mtu=1400".to_string(),
    ];
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_agents(Path::new(AGENT), [&a_args, &[]])?;
    cluster.start_ovn_controllers()?;
    let (tb, allocs) = (&mut cluster.tb, &cluster.allocs);
    let sb = tb.central.sb_remote();
    add_switch(&tb.central, &POD_SUBNET).expect("ls1");
    let plugin = FerrovnCni {
        binary: cni_plugin_binary()?,
        cni_version: "1.1.0",
        network: "net",
    };
    let mut helper = Helper {
        daemon: None,
        ctl: ctl.clone(),
        log: work.path().join("helper.log"),
        prefix: helper_prefix.clone(),
        cpu: relay_cpu,
    };
    helper.start(&tb.nodes[0]);
    let (a, b) = (&tb.nodes[0], &tb.nodes[1]);

    // ---- kernel pod on node B
    let kpod = Netns::create(&format!("fvt-{tag}-kp"))?;
    allocate_pod(
        &tb.central,
        allocs,
        &POD_SUBNET,
        "ovn",
        "kpod",
        "10.16.0.11",
        "0a:58:0a:10:00:0b",
    )
    .expect("lsp and alloc");
    let out = plugin
        .call(
            "ADD",
            b,
            &format!("ck{}", tag.replace('x', "")),
            &kpod.path().display().to_string(),
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=kpod",
            json!({}),
        )
        .expect("plugin ran");
    assert_eq!(out.exit_code, 0, "kpod ADD: {} {}", out.stdout, out.stderr);

    // ---- DPDK pods on node A (kernel profile), the NAD config a DPDK node takes
    let nad = json!({
        "provider": DPDK_PROVIDER,
        "vhost_user_socket_volume_name": "vhu",
        "vhost_user_socket_name": "sock0",
    });
    struct DpdkPod {
        name: String,
        cid: String,
        netns: Netns,
        volume: PathBuf,
        args: String,
    }
    let new_pod = |name: &str, ip: &str, mac: &str| -> DpdkPod {
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            seed_u32(name),
            seed_u32(&tag)
        );
        let volume = kubelet
            .path()
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~empty-dir/vhu");
        std::fs::create_dir_all(&volume).expect("pod volume");
        allocate_pod(
            &tb.central,
            allocs,
            &POD_SUBNET,
            DPDK_PROVIDER,
            name,
            ip,
            mac,
        )
        .expect("lsp and alloc");
        DpdkPod {
            name: name.to_string(),
            cid: format!("c{name}{}", tag.replace('x', "")),
            netns: Netns::create(&format!("fvt-{tag}-{name}")).expect("pod netns"),
            volume,
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID={uid}"
            ),
        }
    };
    let cni = |cmd: &str, node: &Node, p: &DpdkPod| {
        plugin
            .call(
                cmd,
                node,
                &p.cid,
                &p.netns.path().display().to_string(),
                "net1",
                &p.args,
                nad.clone(),
            )
            .expect("plugin ran")
    };

    let p1 = new_pod("dpod1", "10.16.0.21", "0a:58:0a:10:00:15");
    let t_add = Instant::now();
    let out = cni("ADD", a, &p1);
    assert_eq!(
        out.exit_code,
        0,
        "ADD dpod1: {} {} agent log: {}\nhelper log: {}",
        out.stdout,
        out.stderr,
        a.agent_log(),
        helper.log_text()
    );
    eprintln!(
        "ADD (kernel node, helper) took {} ms",
        t_add.elapsed().as_millis()
    );
    let result = out.json();
    // what the pod reads is what a DPDK node gives it: info file = annotation, server mode
    let info: VhostUserInfo = serde_json::from_slice(
        &std::fs::read(p1.volume.join(info_file_name("net1"))).expect("info file"),
    )
    .expect("info json");
    let pod_ann: Annotations = serde_json::from_slice(
        &std::fs::read(ann_dir.join("default/dpod1.json")).expect("pod annotations"),
    )
    .expect("json");
    let from_ann: VhostUserInfo =
        serde_json::from_str(&pod_ann[&annotation_key("net1")]).expect("annotation json");
    assert_eq!(from_ann, info);
    assert_eq!(info.mode, "server");
    assert_eq!(info.mac.to_string(), "0a:58:0a:10:00:15");
    assert_eq!(
        result["interfaces"][1]["socketPath"].as_str(),
        Some(info.host_socket_path.as_str()),
        "{result}"
    );
    let short = Path::new(&info.host_socket_path)
        .parent()
        .expect("short dir")
        .to_path_buf();
    assert!(is_mount_point(&short), "bind mount at {}", short.display());
    // node side: end B on br-int (plain port, iface-id, installed), end A in the helper
    let port = info.ovs_port.clone();
    assert_eq!(iface_col(a, &port, "type"), "");
    assert_eq!(
        iface_col(a, &port, "external_ids:iface-id"),
        format!("dpod1.default.{DPDK_PROVIDER}")
    );
    assert_eq!(iface_col(a, &port, "external_ids:ovn-installed"), "true");
    let end_a = iface_col(a, &port, &format!("external_ids:{HELPER_IFACE_KEY}"));
    assert!(end_a.starts_with("vk"), "{end_a}");
    let hp = helper.port(&port).expect("helper has the port");
    assert_eq!(hp.spec.socket, PathBuf::from(&info.host_socket_path));
    assert_eq!(hp.spec.kernel_iface, end_a);
    assert!(!hp.pod_connected, "no app yet");

    // ---- the DPDK app, started from the info (socket = its volume mount + socket name)
    let sock = info.socket_in(&p1.volume);
    let mut app = Testpmd::start(&TestpmdSpec {
        prefix: format!("fvhp{rnd}"),
        netns: Some(&p1.netns),
        cpu: pod_cpu as u32,
        memory: PodMemory::NoHuge { mib: 256 },
        vdevs: vec![info.virtio_user_vdev(0, &sock)],
        forward_mode: "icmpecho".into(),
        app_args: vec![],
        log: work.path().join("dpod1.log"),
        interactive: false,
    })
    .expect("testpmd");
    let connected = wait_until(Duration::from_secs(30), || {
        helper.port(&port).is_some_and(|p| p.pod_connected)
    });
    assert!(
        connected,
        "helper never saw the app; testpmd: {}\nhelper: {}",
        app.log_text(),
        helper.log_text()
    );
    // (1) kernel pod on node B -> Geneve -> br-int on A -> veth -> helper -> testpmd
    assert!(
        kpod.ping_until("10.16.0.21", Duration::from_secs(30)),
        "kernel pod cannot ping the DPDK pod; testpmd: {}\nhelper: {}\nagent: {}",
        app.log_text(),
        helper.log_text(),
        a.agent_log()
    );
    let stats = kpod.run(30, "ping", ["-c", "10", "-i", "0.1", "10.16.0.21"])?;
    assert!(
        stats.contains(" 0% packet loss"),
        "{stats}\nhelper port: {:?}\ntestpmd: {}",
        helper.port(&port),
        app.log_text()
    );
    // a steady state stays steady: the agent's reconcile never touched the live port
    assert!(
        !a.agent_log().contains("vhost helper reconciled"),
        "{}",
        a.agent_log()
    );
    let counted = helper.port(&port).expect("port");
    assert!(
        counted.counters.rx_packets >= 10 && counted.counters.tx_packets >= 10,
        "{counted:?}"
    );

    // (2) the helper dies hard: an ADD meanwhile fails fast, naming the helper's socket, and
    // leaves nothing behind; the restarted helper (no state file) gets its port from the agent
    helper.kill9();
    let p3 = new_pod("dpod3", "10.16.0.23", "0a:58:0a:10:00:17");
    let t_fail = Instant::now();
    let out = cni("ADD", a, &p3);
    let failed_in = t_fail.elapsed();
    assert_ne!(out.exit_code, 0, "ADD without a helper must fail");
    let e = out.json();
    assert_eq!(
        e["code"].as_u64(),
        Some(u64::from(helper_code::HELPER_UNAVAILABLE)),
        "{e}"
    );
    assert!(
        e.to_string().contains(&ctl.display().to_string()),
        "error names the socket: {e}"
    );
    assert!(failed_in < Duration::from_secs(10), "took {failed_in:?}");
    let p3_port = ferrovn_dataplane::dpdk::vhost::port_name(&p3.cid, "net1");
    assert_eq!(iface_col(a, &p3_port, "name"), "", "no OVS port left");
    assert!(!link_exists(a, &p3_port), "no veth left");
    // the veth pair is lost too (e.g. someone deleted it): the agent re-creates it
    a.netns().ip(["link", "del", "dev", &end_a])?;
    assert!(!link_exists(a, &port));
    let t_restart = Instant::now();
    helper.start(a);
    let back = wait_until(Duration::from_secs(30), || {
        helper.port(&port).is_some_and(|p| p.pod_connected)
    });
    assert!(back, "agent did not re-add the port: {}", a.agent_log());
    assert!(
        link_exists(a, &end_a) && link_exists(a, &port),
        "veth re-created"
    );
    assert!(
        kpod.ping_until("10.16.0.21", Duration::from_secs(30)),
        "ping did not resume after the helper restart; port {:?}; OVS: {}\nagent: {}\nhelper: {}",
        helper.port(&port),
        a.vsctl(["list", "Interface", &port]).unwrap_or_default(),
        a.agent_log(),
        helper.log_text()
    );
    eprintln!(
        "helper SIGKILL + restart: port re-added by the agent and ping back after {:.1}s",
        t_restart.elapsed().as_secs_f64()
    );
    assert!(app.is_running(), "the DPDK pod was not re-created");

    // (3) the agent restarts; a port removed behind its back is repaired from OVSDB
    tb.nodes[0].stop_agent();
    let removed = ControlClient::connect(&ctl)
        .and_then(|mut c| c.call(&Request::RemovePort { name: port.clone() }))
        .expect("remove_port");
    assert!(removed.ok, "{removed:?}");
    tb.nodes[0].start_agent(Path::new(AGENT), &sb, allocs.dir(), &a_args)?;
    let a = &tb.nodes[0];
    assert!(
        wait_until(Duration::from_secs(20), || helper
            .port(&port)
            .is_some_and(|p| p.pod_connected)),
        "restarted agent did not restore the port: {}",
        a.agent_log()
    );
    assert!(kpod.ping_until("10.16.0.21", Duration::from_secs(30)));

    // ADD again (a runtime retry) is harmless: one helper port, traffic still flows
    let again = cni("ADD", a, &p1);
    assert_eq!(again.exit_code, 0, "{} {}", again.stdout, again.stderr);
    assert_eq!(helper.ports().len(), 1);
    assert!(kpod.ping_until("10.16.0.21", Duration::from_secs(30)));

    // (4) a pod that vanishes without DEL: OVS port, helper port and veth are collected
    let p2 = new_pod("dpod2", "10.16.0.22", "0a:58:0a:10:00:16");
    let out = cni("ADD", a, &p2);
    assert_eq!(out.exit_code, 0, "ADD dpod2: {} {}", out.stdout, out.stderr);
    let p2_port = ferrovn_dataplane::dpdk::vhost::port_name(&p2.cid, "net1");
    let p2_end_a = iface_col(a, &p2_port, &format!("external_ids:{HELPER_IFACE_KEY}"));
    assert!(helper.port(&p2_port).is_some());
    assert!(link_exists(a, &p2_end_a));
    drop(p2);
    let collected = wait_until(Duration::from_secs(20), || {
        iface_col(a, &p2_port, "name").is_empty()
            && helper.port(&p2_port).is_none()
            && !link_exists(a, &p2_end_a)
            && !link_exists(a, &p2_port)
    });
    assert!(collected, "GC left {p2_port}: {}", a.agent_log());
    assert!(helper.port(&port).is_some(), "GC must keep the running pod");

    // (5) DEL: helper port, veth pair, OVS port and bind mount gone; DEL again is fine
    app.stop();
    for _ in 0..2 {
        let out = cni("DEL", a, &p1);
        assert_eq!(out.exit_code, 0, "DEL: {} {}", out.stdout, out.stderr);
    }
    assert!(helper.ports().is_empty(), "{:?}", helper.ports());
    assert_eq!(iface_col(a, &port, "name"), "");
    assert!(!link_exists(a, &end_a) && !link_exists(a, &port));
    assert!(!is_mount_point(&short));
    let _ = cni("DEL", a, &p3);
    eprintln!(
        "vhost helper e2e done in {:.1}s (pod {})",
        t_start.elapsed().as_secs_f64(),
        p1.name
    );
    Ok(())
}
