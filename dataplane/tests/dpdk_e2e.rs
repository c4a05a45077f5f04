//! The DPDK profile end to end on real OVS-DPDK: node A is a kernel node (plain ovs-vswitchd),
//! node B an OVS-DPDK node (`ovs-vswitchd-dpdk` on hugepages, its underlay a `type=dpdk`
//! net_af_packet port on br-phy, all configured by the agent through OVSDB). `dpdk-testpmd`
//! "pods" get vhost-user attachments through the BUILT CNI plugin and the agent (a NAD config
//! with Kube-OVN's `vhost_user_socket_*` keys), start from the info the agent handed them, and:
//! a kernel pod on node A pings the DPDK pod across Geneve; a second DPDK pod sends to the first
//! (OVS Interface counters on both vhost ports); OVS-DPDK restarts under running pods and the
//! vhost ports reconnect and ping resumes without re-creating pods; DEL removes port and mount.
//!
//! Cores (2 here): node B's PMD on cpu1 with pmd-maxsleep, every testpmd pinned to cpu0.
//! Hugepages come from a flock'ed lease; without them the test runs OVS and the pods with
//! `--no-huge` and says so loudly, and with `FERROVN_REQUIRE_ALL=1` (CI) it fails instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovn_dataplane::alloc::{Annotations, FileAllocations};
use ferrovn_dataplane::dpdk::config::{
    DpdkDevice, DpdkNodeConfig, Underlay, apply_other_config, plan_dpdk_node,
};
use ferrovn_dataplane::dpdk::vhost::{VhostUserInfo, annotation_key, info_file_name};
use ferrovn_dataplane::ovs::OvsClient;
use ferrovn_dataplane::profile::{
    HostPaths, PROFILE_ANNOTATION, PROFILE_REASON_ANNOTATION, gather_inputs, select_profile,
};
use ferrovn_testkit::binaries::cni_plugin_binary;
use ferrovn_testkit::cluster::{
    POD_SUBNET, add_pod_port, add_switch, allocate_pod, lsp_name, wait_chassis_count,
    write_pod_allocation,
};
use ferrovn_testkit::cni::FerrovnCni;
use ferrovn_testkit::dpdk::{
    DpdkRuntimeDir, SharedDir, TestMemory, Testpmd, TestpmdSpec, is_mount_point,
};
use ferrovn_testkit::error::Error;
use ferrovn_testkit::names::{seed_u32, short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig, add_underlay_veth};
use ferrovn_testkit::ovs_paths::vswitchd_dpdk;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::require::{ovs_dpdk_needs, require};
use ferrovn_testkit::wait::wait_until;
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");
const DPDK_PROVIDER: &str = "dpdk.default.ovn";
const TESTPMD_CPU: u32 = 0;

fn iface_stat(node: &Node, iface: &str, key: &str) -> u64 {
    node.vsctl([
        "--if-exists",
        "get",
        "Interface",
        iface,
        &format!("statistics:{key}"),
    ])
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn iface_col(node: &Node, iface: &str, col: &str) -> String {
    node.vsctl(["--if-exists", "get", "Interface", iface, col])
        .map(|s| s.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}

fn wait_dpdk_initialized(node: &Node) -> bool {
    wait_until(Duration::from_secs(60), || {
        node.vsctl(["get", "Open_vSwitch", ".", "dpdk_initialized"])
            .map(|s| s.trim() == "true")
            .unwrap_or(false)
    })
}

#[test]
fn dpdk_pods_on_an_ovs_dpdk_node_next_to_a_kernel_node() -> Result<(), Error> {
    const TEST: &str = "dpdk_pods_on_an_ovs_dpdk_node_next_to_a_kernel_node";
    if !require(TEST, &ovs_dpdk_needs(&[])) {
        return Ok(());
    }
    let tag = unique_tag();
    let rnd = short_rand();
    let work = tempfile::Builder::new()
        .prefix("fvd-")
        .tempdir_in("/tmp")
        .expect("work dir");

    // ---- hugepages (shared safely with concurrent tests) or a LOUD --no-huge fallback
    let huge_dir = PathBuf::from(format!("/tmp/fvh{rnd}"));
    let memory = TestMemory::acquire(
        TEST,
        &format!("dpdk-e2e-{tag}"),
        384,
        &huge_dir,
        "OVS-DPDK and DPDK pods with --no-huge",
    );
    let pod_memory = memory.pod(128);

    let _ovs_runtime = DpdkRuntimeDir::new(&format!("fvovs{rnd}"));
    // ---- the short directory for vhost-user bind mounts, shared into vswitchd's namespace
    let vhost_dir = SharedDir::create(Path::new(&format!("/tmp/fvv{rnd}"))).expect("vhost dir");
    let kubelet = tempfile::Builder::new()
        .prefix("fvk")
        .tempdir_in("/tmp")
        .expect("kubelet root");

    let central = OvnCentral::start().map_err(|e| Error::Setup(e.to_string()))?;
    let sb = central.sb_remote();

    // ---- node B's DPDK configuration (what an operator writes), decided + applied BEFORE
    // ovs-vswitchd-dpdk starts
    let mut dcfg = DpdkNodeConfig::example();
    dcfg.socket_mem_mib = vec![256];
    dcfg.lcore_cpus = vec![0];
    dcfg.pmd_cpus = vec![1];
    dcfg.pmd_maxsleep_us = Some(500);
    dcfg.file_prefix = format!("fvovs{rnd}");
    dcfg.no_pci = true;
    dcfg.iova_mode = Some("va".into());
    if memory.huge_dir().is_some() {
        dcfg.huge_dir = Some(huge_dir.clone());
    } else {
        dcfg.allow_no_huge = true;
        dcfg.huge_dir = Some(PathBuf::from("/nonexistent-hugetlbfs"));
    }
    dcfg.devices = vec![DpdkDevice {
        name: "dpdk0".into(),
        devargs: "net_af_packet0,iface=fvul2".into(),
        n_rxq: None,
        mtu: None,
    }];
    dcfg.underlay = Some(Underlay {
        bridge: "br-phy".into(),
        cidr: "192.168.100.2/24".parse().expect("cidr"),
        mtu: 1500,
    });
    let dcfg_path = work.path().join("dpdk.json");
    std::fs::write(&dcfg_path, serde_json::to_vec(&dcfg).expect("json")).expect("write cfg");
    let labels_path = work.path().join("labels.json");
    std::fs::write(
        &labels_path,
        r#"{"ovn.kubernetes.io/ovs_dp_type":"userspace","kubernetes.io/os":"linux"}"#,
    )
    .expect("labels");

    let mut a = Node::start(
        &format!("fvt-{tag}-a"),
        &NodeConfig::plain(&format!("fv-{tag}-a")),
    )?;
    let b_cfg = NodeConfig {
        name: format!("fv-{tag}-b"),
        vswitchd: vswitchd_dpdk(),
        other_config: Vec::new(),
    };
    let pre_cfg = dcfg.clone();
    let mut b = Node::start_with(&format!("fvt-{tag}-b"), &b_cfg, move |node| {
        let inputs = gather_inputs(
            &HostPaths {
                // the DPDK vswitchd of the OVS/OVN rootfs, not Debian's path on the host
                dpdk_vswitchd: vswitchd_dpdk(),
                ..HostPaths::default()
            },
            Some("userspace".into()),
            Some(pre_cfg),
            false,
        )
        .map_err(|e| Error::Setup(e.to_string()))?;
        let decision = select_profile(&inputs).map_err(|e| Error::Setup(e.to_string()))?;
        let settings = decision
            .settings
            .ok_or_else(|| Error::Setup(format!("node B is not DPDK: {}", decision.message)))?;
        let plan = plan_dpdk_node(&settings);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "runtime".into(),
                source,
            })?;
        rt.block_on(async {
            let ovs = OvsClient::connect(&node.db_remote()).await?;
            apply_other_config(&ovs, &plan).await
        })
        .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(())
    })?;
    assert!(
        wait_dpdk_initialized(&b),
        "DPDK did not initialise: {}",
        std::fs::read_to_string(b.dir().join("ovs-vswitchd.log")).unwrap_or_default()
    );

    // ---- underlay: veth between the node namespaces; A plain, B through OVS-DPDK (agent)
    add_underlay_veth(&a, &b)?;
    a.setup_underlay("fvul1", "192.168.100.1/24")?;
    b.netns().ip(["link", "set", "fvul2", "up"])?;
    b.adopt_underlay("fvul2", "192.168.100.2");

    // ---- agents
    let allocs_dir = tempfile::tempdir().expect("allocs");
    let allocs = FileAllocations::new(allocs_dir.path());
    let ann_dir = work.path().join("pod-annotations");
    let state_dir = work.path().join("state-b");
    a.start_agent(Path::new(AGENT), &sb, allocs_dir.path(), &[])?;
    let host_mnt = format!("--host-mount-ns=/proc/{}/ns/mnt", std::process::id());
    let b_args = [
        format!("--node-labels-file={}", labels_path.display()),
        format!("--dpdk-config={}", dcfg_path.display()),
        format!("--state-dir={}", state_dir.display()),
        format!("--vhost-dir={}", vhost_dir.path().display()),
        format!("--kubelet-root={}", kubelet.path().display()),
        host_mnt,
        format!("--pod-annotations-dir={}", ann_dir.display()),
        "--mtu=1442".to_string(),
        "--gc-interval-secs=1".to_string(),
    ];
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    b.start_agent(Path::new(AGENT), &sb, allocs_dir.path(), &b_args)?;

    // the profile is published: node annotations + metric
    let node_ann: Annotations = serde_json::from_slice(
        &std::fs::read(state_dir.join("node-annotations.json")).expect("node annotations"),
    )
    .expect("json");
    assert_eq!(node_ann[PROFILE_ANNOTATION], "dpdk", "{node_ann:?}");
    let want_reason = if memory.huge_dir().is_some() {
        "label-userspace"
    } else {
        "no-huge-mode"
    };
    assert_eq!(
        node_ann[PROFILE_REASON_ANNOTATION], want_reason,
        "{node_ann:?}"
    );
    let metrics = std::fs::read_to_string(state_dir.join("metrics.prom")).expect("metrics");
    assert!(
        metrics.contains(&format!(
            "ferrovn_node_profile{{profile=\"dpdk\",reason=\"{want_reason}\"}} 1"
        )),
        "{metrics}"
    );
    // the agent built the tunnel bridge: a DPDK port and the tunnel IP on br-phy
    assert_eq!(iface_col(&b, "dpdk0", "type"), "dpdk");
    assert!(
        wait_until(Duration::from_secs(60), || iface_col(
            &b,
            "dpdk0",
            "link_state"
        ) == "up"),
        "dpdk0 error: {}",
        iface_col(&b, "dpdk0", "error")
    );
    let addrs = b.netns().ip(["-br", "addr", "show", "br-phy"])?;
    assert!(addrs.contains("192.168.100.2/24"), "{addrs}");

    for n in [&mut a, &mut b] {
        n.start_ovn_controller()?;
    }
    let two = wait_chassis_count(&central, 2, Duration::from_secs(30)).is_ok();
    assert!(two, "two chassis");
    add_switch(&central, &POD_SUBNET).expect("ls1");

    let plugin = FerrovnCni {
        binary: cni_plugin_binary()?,
        // 1.1.0: the result carries the interface's socketPath and MTU
        cni_version: "1.1.0",
        network: "net",
    };

    // ---- kernel pod on node A
    let kpod = Netns::create(&format!("fvt-{tag}-kp"))?;
    allocate_pod(
        &central,
        &allocs,
        &POD_SUBNET,
        "ovn",
        "kpod",
        "10.16.0.11",
        "0a:58:0a:10:00:0b",
    )
    .expect("lsp and alloc");
    let kcid = format!("ck{}", tag.replace('x', ""));
    let out = plugin
        .call(
            "ADD",
            &a,
            &kcid,
            &kpod.path().display().to_string(),
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=kpod",
            json!({}),
        )
        .expect("plugin ran");
    assert_eq!(out.exit_code, 0, "kpod ADD: {} {}", out.stdout, out.stderr);

    // ---- DPDK pods on node B, attached through the plugin with a vhost-user NAD config
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
        info: VhostUserInfo,
        result: Value,
    }
    // `by_annotation`: the pod annotation form instead of the NAD config keys
    let add_dpdk_pod = |name: &str, ip: &str, mac: &str, by_annotation: bool| -> DpdkPod {
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
        let netns = Netns::create(&format!("fvt-{tag}-{name}")).expect("pod netns");
        add_pod_port(&central, "ls1", &lsp_name(name, DPDK_PROVIDER), mac, ip).expect("lsp");
        let mut a = POD_SUBNET.annotations(DPDK_PROVIDER, ip, mac);
        if by_annotation {
            for (k, v) in [
                ("vhost_user_socket_volume_name", "vhu"),
                ("vhost_user_socket_name", "sock0"),
            ] {
                a.insert(format!("{DPDK_PROVIDER}.kubernetes.io/{k}"), v.into());
            }
        }
        write_pod_allocation(&allocs, name, &a).expect("alloc");
        let cid = format!("c{name}{}", tag.replace('x', ""));
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID={uid}"
        );
        let out = plugin
            .call(
                "ADD",
                &b,
                &cid,
                &netns.path().display().to_string(),
                "net1",
                &args,
                if by_annotation {
                    json!({ "provider": DPDK_PROVIDER })
                } else {
                    nad.clone()
                },
            )
            .expect("plugin ran");
        assert_eq!(
            out.exit_code,
            0,
            "ADD {name}: {} {} agent log: {}",
            out.stdout,
            out.stderr,
            b.agent_log()
        );
        // what the pod's app reads: the info file in its own volume (and the annotation)
        let info: VhostUserInfo = serde_json::from_slice(
            &std::fs::read(volume.join(info_file_name("net1"))).expect("info file"),
        )
        .expect("info json");
        DpdkPod {
            name: name.to_string(),
            cid,
            netns,
            volume,
            args,
            info,
            result: out.json(),
        }
    };
    let p1 = add_dpdk_pod("dpod1", "10.16.0.21", "0a:58:0a:10:00:15", false);
    // ADD returned before any app connected: the port exists, OVN installed it, link is down
    assert_eq!(
        iface_col(&b, &p1.info.ovs_port, "type"),
        "dpdkvhostuserclient"
    );
    assert_eq!(
        iface_col(&b, &p1.info.ovs_port, "external_ids:ovn-installed"),
        "true"
    );
    assert_ne!(iface_col(&b, &p1.info.ovs_port, "link_state"), "up");
    assert_eq!(p1.info.mode, "server");
    assert_eq!(p1.info.mac.to_string(), "0a:58:0a:10:00:15");
    assert_eq!(p1.info.mtu, 1442);
    assert_eq!(
        p1.result["interfaces"][1]["socketPath"].as_str(),
        Some(p1.info.host_socket_path.as_str()),
        "{}",
        p1.result
    );
    assert!(
        p1.info
            .host_socket_path
            .starts_with(&vhost_dir.path().display().to_string())
    );
    let short = Path::new(&p1.info.host_socket_path)
        .parent()
        .expect("short dir")
        .to_path_buf();
    assert!(is_mount_point(&short), "bind mount at {}", short.display());
    let pod_ann: Annotations = serde_json::from_slice(
        &std::fs::read(ann_dir.join("default/dpod1.json")).expect("pod annotations"),
    )
    .expect("json");
    let from_ann: VhostUserInfo =
        serde_json::from_str(&pod_ann[&annotation_key("net1")]).expect("annotation json");
    assert_eq!(from_ann, p1.info);

    // the DPDK app, started from the info (its socket path = volume mount + socket name)
    let start_pod = |p: &DpdkPod, mode: &str, app_args: Vec<String>| -> Testpmd {
        let sock = p.info.socket_in(&p.volume);
        Testpmd::start(&TestpmdSpec {
            prefix: format!("fv{}{rnd}", p.name),
            netns: Some(&p.netns),
            cpu: TESTPMD_CPU,
            memory: pod_memory.clone(),
            vdevs: vec![p.info.virtio_user_vdev(0, &sock)],
            forward_mode: mode.into(),
            app_args,
            log: work.path().join(format!("{}.log", p.name)),
            interactive: false,
        })
        .expect("testpmd")
    };
    let mut app1 = start_pod(&p1, "icmpecho", vec![]);
    let up = wait_until(Duration::from_secs(30), || {
        iface_col(&b, &p1.info.ovs_port, "link_state") == "up"
    });
    assert!(up, "vhost port never came up; testpmd: {}", app1.log_text());

    // (1) kernel pod on node A -> Geneve -> OVS-DPDK -> vhost-user -> testpmd icmpecho
    assert!(
        kpod.ping_until("10.16.0.21", Duration::from_secs(30)),
        "kernel pod cannot ping the DPDK pod; testpmd: {}",
        app1.log_text()
    );
    let stats = kpod.run(20, "ping", ["-c", "10", "-i", "0.1", "10.16.0.21"])?;
    assert!(stats.contains(" 0% packet loss"), "{stats}");

    // (2) a second DPDK pod on node B sends to the first through OVS-DPDK
    let p2 = add_dpdk_pod("dpod2", "10.16.0.22", "0a:58:0a:10:00:16", true);
    let rx2_before = iface_stat(&b, &p2.info.ovs_port, "rx_packets");
    let tx1_before = iface_stat(&b, &p1.info.ovs_port, "tx_packets");
    let mut app2 = start_pod(
        &p2,
        "txonly",
        vec![
            format!("--eth-peer=0,{}", p1.info.mac),
            "--tx-ip=10.16.0.22,10.16.0.21".into(),
        ],
    );
    let sent = wait_until(Duration::from_secs(30), || {
        iface_stat(&b, &p1.info.ovs_port, "tx_packets") > tx1_before + 1_000
    });
    app2.stop();
    let rx2 = iface_stat(&b, &p2.info.ovs_port, "rx_packets") - rx2_before;
    let tx1 = iface_stat(&b, &p1.info.ovs_port, "tx_packets") - tx1_before;
    eprintln!("dpod2 -> dpod1: OVS received {rx2} from dpod2, delivered {tx1} to dpod1");
    assert!(
        sent && rx2 > 1_000 && tx1 > 1_000,
        "rx2={rx2} tx1={tx1}; {}",
        app2.log_text()
    );

    // (3) OVS-DPDK restarts under running pods: vhost ports reconnect, ping resumes
    let pid1 = app1.pid();
    let t0 = std::time::Instant::now();
    b.restart_vswitchd(&vswitchd_dpdk())?;
    assert!(wait_dpdk_initialized(&b), "DPDK after restart");
    let back = wait_until(Duration::from_secs(60), || {
        iface_col(&b, &p1.info.ovs_port, "link_state") == "up"
    });
    assert!(back, "vhost port did not reconnect after the restart");
    assert!(
        kpod.ping_until("10.16.0.21", Duration::from_secs(60)),
        "ping did not resume after the OVS-DPDK restart"
    );
    eprintln!(
        "OVS-DPDK restart: vhost port up and ping back after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        app1.is_running() && app1.pid() == pid1,
        "the DPDK pod was not re-created"
    );

    // (4) the pod vanishes without DEL (its netns is gone): the agent's periodic GC removes
    // the vhost port and the bind mount; the ports of running pods stay
    let p2_port = p2.info.ovs_port.clone();
    let p2_dir = Path::new(&p2.info.host_socket_path)
        .parent()
        .expect("dir")
        .to_path_buf();
    drop(p2);
    // GC unmounts, then removes the directory: wait for all three, not just the unmount
    let collected = wait_until(Duration::from_secs(60), || {
        iface_col(&b, &p2_port, "name").is_empty() && !is_mount_point(&p2_dir) && !p2_dir.exists()
    });
    assert!(
        collected,
        "GC left {p2_port} or {} (exists: {}); agent log: {}",
        p2_dir.display(),
        p2_dir.exists(),
        b.agent_log()
    );
    assert_eq!(
        iface_col(&b, &p1.info.ovs_port, "type"),
        "dpdkvhostuserclient"
    );

    // (5) DEL: port and bind mount gone; DEL again is fine
    app1.stop();
    for p in [&p1] {
        for _ in 0..2 {
            let out = plugin
                .call(
                    "DEL",
                    &b,
                    &p.cid,
                    &p.netns.path().display().to_string(),
                    "net1",
                    &p.args,
                    nad.clone(),
                )
                .expect("plugin ran");
            assert_eq!(
                out.exit_code, 0,
                "DEL {}: {} {}",
                p.name, out.stdout, out.stderr
            );
        }
        assert_eq!(iface_col(&b, &p.info.ovs_port, "name"), "");
        let dir = Path::new(&p.info.host_socket_path)
            .parent()
            .expect("dir")
            .to_path_buf();
        assert!(!is_mount_point(&dir), "{} still mounted", dir.display());
        assert!(!dir.exists());
        // the socket description goes with the port
        let left: Annotations = serde_json::from_slice(
            &std::fs::read(ann_dir.join(format!("default/{}.json", p.name)))
                .expect("pod annotations"),
        )
        .expect("json");
        assert!(
            !left.contains_key(&annotation_key("net1")),
            "DEL left the vhost-user annotation: {left:?}"
        );
    }
    drop(app2);
    drop(app1);
    Ok(())
}
