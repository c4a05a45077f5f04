//! SR-IOV VF attachments end to end at the hardware seam: a sysfs tree shaped like mlx5's
//! (`SysfsFixture::mlx5_dual_port`) whose VF netdev and representors are REAL veths in the
//! node's namespace, a real node (ovsdb-server, ovs-vswitchd netdev, ovn-controller), real OVN
//! central, and the agent (in process) handling CNI requests that carry a `deviceID`.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovn_cni::protocol::{AttachmentRequest, PodIdentity, Request, Response};
use ferrovn_cni::spec::{CniError, CniResult};
use ferrovn_dataplane::agent::{Agent, AgentConfig, NodeProfile};
use ferrovn_dataplane::alloc::FileAllocations;
use ferrovn_dataplane::dpdk::vhost::{FileAnnotations, VhostConfig};
use ferrovn_dataplane::offload::RESTART_REQUIRED_ANNOTATION;
use ferrovn_dataplane::ovs::NodeOvsConfig;
use ferrovn_dataplane::sriov::{SriovConfig, vf_code};
use ferrovn_hwoffload::{NotOffloadedReason, OffloadSettings, OffloadStatus};
use ferrovn_testkit::cluster::{POD_SUBNET, add_switch, allocate_pod, pod_ref};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovs_paths::vswitchd_plain;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::sysfs::{PfSpec, SysfsFixture, VfSpec};
use ferrovn_testkit::wait::wait_until;
use serde_json::json;

const VF0: &str = "0000:03:00.2";
const VF0_NETDEV: &str = "enp3s0f0v0";
const VF0_REP: &str = "enp3s0f0npf0vf0";
const VF3_DPDK: &str = "0000:03:00.5";
const VF3_REP: &str = "enp3s0f0npf0vf3";

struct Setup {
    central: OvnCentral,
    node: Node,
    agent: Arc<Agent<FileAllocations>>,
    allocs: FileAllocations,
    annotations: Arc<FileAnnotations>,
    state_dir: PathBuf,
    tag: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Setup {
    fn allocate(&self, name: &str, n: u8) {
        let mac = format!("0a:58:0a:10:00:{n:02x}");
        let ip = format!("10.16.0.{n}");
        allocate_pod(
            &self.central,
            &self.allocs,
            &POD_SUBNET,
            "ovn",
            name,
            &ip,
            &mac,
        )
        .expect("lsp and allocation");
    }

    fn request(
        &self,
        name: &str,
        netns: Option<&Netns>,
        device: Option<&str>,
        netconf: serde_json::Value,
    ) -> AttachmentRequest {
        AttachmentRequest {
            cni_version: "1.0.0".into(),
            network: "sriov".into(),
            container_id: format!("ctr{}{name}", self.tag),
            netns: netns.map(|n| n.path().display().to_string()),
            ifname: "eth0".into(),
            pod: Some(PodIdentity {
                namespace: "default".into(),
                name: name.into(),
                uid: None,
                infra_container_id: None,
            }),
            provider: None,
            subnet: None,
            device_id: device.map(str::to_string),
            mtu: None,
            vhost_user: None,
            cni_args: Default::default(),
            prev_result: None,
            netconf,
        }
    }

    async fn add(&self, r: &AttachmentRequest) -> Result<CniResult, CniError> {
        match self.agent.handle(Request::Add(r.clone())).await {
            Response::Ok { result } => Ok(result.expect("ADD result")),
            Response::Error(e) => Err(e),
        }
    }

    async fn simple(&self, req: Request) -> Result<(), CniError> {
        match self.agent.handle(req).await {
            Response::Ok { .. } => Ok(()),
            Response::Error(e) => Err(e),
        }
    }

    fn iface_ids(&self, iface: &str) -> String {
        self.node
            .vsctl(["get", "Interface", iface, "external_ids"])
            .unwrap_or_default()
    }
}

/// The fixture: mlx5 dual port plus a PF whose VF has no representor (legacy eswitch).
fn fixture(root: &Path) {
    let f = SysfsFixture::mlx5_dual_port(root).expect("mlx5 fixture");
    f.add_pf(&PfSpec {
        netdev: "enp4s0f0".into(),
        pci: "0000:04:00.0".into(),
        driver: "mlx5_core".into(),
        total_vfs: 4,
        switch_id: None,
        port_name: None,
        vfs: vec![VfSpec {
            pci: "0000:04:00.2".into(),
            driver: Some("mlx5_core".into()),
            netdev: Some("enp4s0f0v0".into()),
            representor: None,
        }],
    })
    .expect("legacy PF");
}

async fn setup() -> Setup {
    let tag = unique_tag();
    let central = OvnCentral::start().expect("OVN central");
    add_switch(&central, &POD_SUBNET).expect("ls");
    let mut node = Node::start(
        &format!("fvt-{tag}-sr"),
        &NodeConfig::plain(&format!("fv-{tag}-sr")),
    )
    .expect("node");
    // the "VF" and its "representor" (a veth pair: what enters one leaves the other, as
    // between a VF and its representor on a switchdev eswitch), and VF 3's representor
    node.netns()
        .ip([
            "link", "add", VF0_NETDEV, "type", "veth", "peer", "name", VF0_REP,
        ])
        .expect("vf veth");
    node.netns()
        .ip([
            "link",
            "add",
            VF3_REP,
            "type",
            "veth",
            "peer",
            "name",
            "fvvf3peer",
        ])
        .expect("vf3 rep veth");
    let sys = tempfile::tempdir().expect("sysfs dir");
    fixture(sys.path());
    let alloc_dir = tempfile::tempdir().expect("alloc dir");
    let ann_dir = tempfile::tempdir().expect("annotations dir");
    let state = tempfile::tempdir().expect("state dir");
    let annotations = Arc::new(FileAnnotations::new(ann_dir.path()));
    let cfg = AgentConfig {
        node: NodeOvsConfig {
            system_id: node.name().to_string(),
            hostname: node.name().to_string(),
            ovn_remote: central.sb_remote(),
            encap_type: "geneve".into(),
            encap_ip: "127.0.0.1".into(),
            bridge: "br-int".into(),
            datapath_type: "netdev".into(),
        },
        ovs_remote: node.db_remote(),
        profile: NodeProfile::Kernel,
        host_netns: Some(node.netns_path()),
        default_mtu: 1400,
        allocation_timeout: Duration::from_secs(10),
        install_timeout: Duration::from_secs(30),
        vhost: VhostConfig {
            annotations: Some(annotations.clone()),
            ..VhostConfig::default()
        },
        vhost_helper: Default::default(),
        sriov: SriovConfig {
            sysfs_root: sys.path().to_path_buf(),
            offload: Some(OffloadSettings {
                hw_offload: true,
                tc_policy: Default::default(),
            }),
            vswitchd_ctl: Some(node.dir().join("ovs-vswitchd.ctl")),
            state_dir: Some(state.path().to_path_buf()),
            ..SriovConfig::default()
        },
    };
    let agent = Agent::start(cfg, FileAllocations::new(alloc_dir.path()))
        .await
        .expect("agent start");
    // offload profile: written through OVSDB, restart reported (and done here, the testbed
    // owns vswitchd)
    assert!(agent.offload_start().restart_required());
    let node_ann: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join("offload-node-annotations.json")).expect("node ann"),
    )
    .expect("json");
    assert_eq!(node_ann[RESTART_REQUIRED_ANNOTATION], "true", "{node_ann}");
    let oc = node
        .vsctl(["get", "Open_vSwitch", ".", "other_config:hw-offload"])
        .expect("hw-offload");
    assert_eq!(oc.trim().trim_matches('"'), "true");
    node.restart_vswitchd(&vswitchd_plain())
        .expect("restart vswitchd");
    node.start_ovn_controller().expect("ovn-controller");
    let chassis = node.name().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || central
            .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
            .map(|s| s.contains(&chassis))
            .unwrap_or(false)),
        "chassis registered"
    );
    let allocs = FileAllocations::new(alloc_dir.path());
    Setup {
        central,
        node,
        agent,
        allocs,
        annotations,
        state_dir: state.path().to_path_buf(),
        tag,
        _dirs: vec![sys, alloc_dir, ann_dir, state],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vf_pod_attached_pings_veth_pod_and_returns_vf_on_del() {
    let s = setup().await;
    let started = Instant::now();
    s.allocate("vfpod", 5);
    s.allocate("vethpod", 6);
    let vf_ns = Netns::create(&format!("fvt-{}-vf", s.tag)).expect("vf pod netns");
    let veth_ns = Netns::create(&format!("fvt-{}-ve", s.tag)).expect("veth pod netns");

    // ADD with the VF's PCI address as deviceID
    let req = s.request(
        "vfpod",
        Some(&vf_ns),
        Some(VF0),
        json!({"type": "ferrovn-cni"}),
    );
    let res = s.add(&req).await.expect("VF ADD");
    assert_eq!(res.interfaces[0].name, VF0_REP);
    assert_eq!(res.interfaces[1].pci_id.as_deref(), Some(VF0));
    // the VF netdev is in the pod, renamed, with MAC, IP and MTU; gone from the host
    let link = vf_ns
        .ip(["-o", "link", "show", "eth0"])
        .expect("eth0 in pod");
    assert!(
        link.contains("0a:58:0a:10:00:05") && link.contains("mtu 1400"),
        "{link}"
    );
    let addr = vf_ns.ip(["-o", "addr", "show", "eth0"]).expect("addr");
    assert!(addr.contains("10.16.0.5/24"), "{addr}");
    let route = vf_ns.ip(["route", "show", "default"]).expect("route");
    assert!(route.contains("via 10.16.0.1"), "{route}");
    assert!(s.node.netns().ip(["link", "show", VF0_NETDEV]).is_err());
    // the representor is on br-int, bound by OVN, with the original VF name kept
    let ids = s.iface_ids(VF0_REP);
    for want in [
        "iface-id=vfpod.default",
        "ovn-installed=\"true\"",
        "ferrovn_vf_netdev=enp3s0f0v0",
        "ferrovn_vf_pci=\"0000:03:00.2\"",
        "pod_name=vfpod",
    ] {
        assert!(ids.contains(want), "{want} missing in {ids}");
    }
    // CHECK of the VF attachment passes; periodic GC keeps it (its pod is alive, though the
    // representor is no veth of ours)
    s.simple(Request::Check(req.clone())).await.expect("CHECK");
    let gc = s.agent.gc_once().await.expect("gc");
    assert!(gc.removed.is_empty(), "{gc:?}");
    assert!(s.iface_ids(VF0_REP).contains("iface-id=vfpod.default"));

    // a veth pod on the same node reaches the VF pod through OVN
    let vreq = s.request(
        "vethpod",
        Some(&veth_ns),
        None,
        json!({"type": "ferrovn-cni"}),
    );
    s.add(&vreq).await.expect("veth ADD");
    assert!(
        veth_ns.ping_until("10.16.0.5", Duration::from_secs(15)),
        "veth pod -> VF pod ping"
    );
    assert!(vf_ns.ping_once("10.16.0.6"), "VF pod -> veth pod ping");

    // offload truth: the userspace datapath cannot offload, and the kernel has no devlink
    let truth = s.agent.offload_check().await.expect("offload check");
    assert_eq!(truth.pods.len(), 1, "{truth:?}");
    let p = &truth.pods[0];
    assert_eq!(p.representor, VF0_REP);
    assert_eq!(p.report.status, OffloadStatus::NotOffloaded);
    assert!(
        p.report
            .reasons
            .iter()
            .any(|r| matches!(r, NotOffloadedReason::UserspaceDatapath { .. })),
        "{p:?}"
    );
    assert!(
        !p.report
            .reasons
            .contains(&NotOffloadedReason::HwOffloadDisabled),
        "the offload profile turned hw-offload on: {p:?}"
    );
    assert!(p.report.flows > 0, "the pings left datapath flows: {p:?}");
    let note = p.eswitch_note.clone().unwrap_or_default();
    assert!(note.contains("devlink"), "{note}");
    let metrics = truth.metrics_text();
    assert!(
        metrics.contains("ferrovn_pod_flows_offloaded{")
            && metrics.contains("pod=\"default/vfpod\"")
            && metrics.contains("interface=\"enp3s0f0npf0vf0\"")
            && metrics.contains("reason=\"eswitch_not_switchdev\"} 0"),
        "{metrics}"
    );
    let ann = s.annotations.read(&pod_ref("vfpod"));
    let truth_ann = ann
        .get("offload.ferrovn.io/eth0")
        .expect("offload annotation");
    assert!(
        truth_ann.contains("not_offloaded") && truth_ann.contains("userspace"),
        "{truth_ann}"
    );
    let status = std::fs::read_to_string(s.state_dir.join("offload-status.txt")).expect("status");
    assert!(status.contains("default/vfpod eth0"), "{status}");

    // DEL gives the VF back under its own name and removes the representor port; twice is fine
    s.simple(Request::Del(req.clone())).await.expect("DEL");
    s.node
        .netns()
        .ip(["link", "show", VF0_NETDEV])
        .expect("VF back in the host under its original name");
    assert!(vf_ns.ip(["link", "show", "eth0"]).is_err());
    assert!(s.node.vsctl(["get", "Interface", VF0_REP, "name"]).is_err());
    s.simple(Request::Del(req.clone()))
        .await
        .expect("second DEL");
    // and the VF can be attached again; a retried ADD is fine too
    s.add(&req).await.expect("re-ADD");
    s.add(&req).await.expect("retried ADD");
    assert!(vf_ns.ip(["link", "show", "eth0"]).is_ok());
    s.simple(Request::Del(vreq)).await.expect("veth DEL");
    // the pod's netns vanishes without a DEL: periodic GC removes the representor port
    drop(vf_ns);
    let gc = s.agent.gc_once().await.expect("gc");
    assert_eq!(gc.removed, vec![VF0_REP.to_string()], "{gc:?}");
    eprintln!("VF e2e took {:?} after setup", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpdk_vf_pod_gets_pci_address_and_bad_devices_are_named() {
    let s = setup().await;
    s.allocate("dpdkpod", 7);
    s.allocate("bad", 8);
    let ns = Netns::create(&format!("fvt-{}-dp", s.tag)).expect("pod netns");

    // VF 3 is bound to vfio-pci: a DPDK pod gets its PCI address, no netdev moves
    let req = s.request("dpdkpod", Some(&ns), Some(VF3_DPDK), json!({"dpdk": true}));
    let res = s.add(&req).await.expect("DPDK VF ADD");
    assert_eq!(res.interfaces[1].pci_id.as_deref(), Some(VF3_DPDK));
    assert!(ns.ip(["link", "show", "eth0"]).is_err(), "no netdev moved");
    let ann = s.annotations.read(&pod_ref("dpdkpod"));
    assert_eq!(
        ann.get("pci-address.ferrovn.io/eth0").map(String::as_str),
        Some(VF3_DPDK)
    );
    let ids = s.iface_ids(VF3_REP);
    assert!(
        ids.contains("iface-id=dpdkpod.default") && ids.contains("ferrovn_vf_mode=dpdk"),
        "{ids}"
    );
    s.simple(Request::Del(req)).await.expect("DEL");
    assert!(s.node.vsctl(["get", "Interface", VF3_REP, "name"]).is_err());
    assert!(
        !s.annotations
            .read(&pod_ref("dpdkpod"))
            .contains_key("pci-address.ferrovn.io/eth0")
    );

    // errors: spec-shaped, naming the device
    let cases: [(&str, serde_json::Value, u32, &str); 3] = [
        ("0000:03:00.7", json!({}), vf_code::VF_NOT_FOUND, ""),
        (
            "0000:04:00.2",
            json!({}),
            vf_code::VF_UNUSABLE,
            "representor",
        ),
        (
            "0000:03:00.3",
            json!({"dpdk": true}),
            vf_code::VF_UNUSABLE,
            "vfio-pci",
        ),
    ];
    for (device, netconf, code, detail) in cases {
        let r = s.request("bad", Some(&ns), Some(device), netconf);
        let e = s.add(&r).await.expect_err(device);
        assert_eq!(e.code, code, "{device}: {e:?}");
        assert!(e.msg.contains(device), "{device}: {e:?}");
        assert!(e.details.contains(detail), "{device}: {e:?}");
    }
    // nothing was left behind by the failures
    let ports = s.node.vsctl(["list-ports", "br-int"]).expect("ports");
    assert!(ports.trim().is_empty(), "{ports}");
}

/// The built `ferrovn-node` (flags `--offload --sysfs-root ...`) and the built `ferrovn-cni`
/// plugin invoked as a runtime does, with `deviceID` in the netconf as Multus passes it.
#[test]
fn built_agent_and_plugin_attach_a_vf_and_export_offload_truth() {
    use ferrovn_testkit::binaries::cni_plugin_binary;
    use ferrovn_testkit::cni::{CniCall, cni_netconf, run_cni};
    let tag = unique_tag();
    let central = OvnCentral::start().expect("OVN central");
    add_switch(&central, &POD_SUBNET).expect("ls");
    let mut node = Node::start(
        &format!("fvt-{tag}-sb"),
        &NodeConfig::plain(&format!("fv-{tag}-sb")),
    )
    .expect("node");
    node.netns()
        .ip([
            "link", "add", VF0_NETDEV, "type", "veth", "peer", "name", VF0_REP,
        ])
        .expect("vf veth");
    let sys = tempfile::tempdir().expect("sysfs");
    fixture(sys.path());
    let allocs_dir = tempfile::tempdir().expect("allocs");
    let state = tempfile::tempdir().expect("state");
    let ann = tempfile::tempdir().expect("ann");
    let ctl = node.dir().join("ovs-vswitchd.ctl");
    let sb = central.sb_remote();
    let args = [
        "--offload".to_string(),
        format!("--sysfs-root={}", sys.path().display()),
        format!("--vswitchd-ctl={}", ctl.display()),
        format!("--state-dir={}", state.path().display()),
        format!("--pod-annotations-dir={}", ann.path().display()),
        "--offload-check-secs=1".to_string(),
    ];
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_ferrovn-node"));
    node.start_agent(agent_bin, &sb, allocs_dir.path(), &arg_refs)
        .expect("agent");
    let node_ann = std::fs::read_to_string(state.path().join("offload-node-annotations.json"))
        .expect("node annotations");
    assert!(
        node_ann.contains("\"offload.ferrovn.io/restart-required\": \"true\""),
        "{node_ann}"
    );
    node.restart_vswitchd(&vswitchd_plain())
        .expect("restart vswitchd");
    node.start_ovn_controller().expect("ovn-controller");

    let allocs = FileAllocations::new(allocs_dir.path());
    allocate_pod(
        &central,
        &allocs,
        &POD_SUBNET,
        "ovn",
        "vfpod",
        "10.16.0.9",
        "0a:58:0a:10:00:09",
    )
    .expect("lsp and allocation");
    let pod_ns = Netns::create(&format!("fvt-{tag}-bp")).expect("pod netns");
    // 1.1.0: the version whose result has `pciID` (the plugin converts results down)
    let netconf = cni_netconf(
        "1.1.0",
        "sriov-offload",
        &node.agent_socket(),
        &json!({ "deviceID": VF0 }),
    );
    let plugin = cni_plugin_binary().expect("plugin");
    let cni = |command: &str| {
        run_cni(
            &plugin,
            &CniCall {
                command,
                container_id: &format!("ctrb{tag}"),
                netns: &pod_ns.path().display().to_string(),
                ifname: "eth0",
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=vfpod",
                stdin: &netconf,
            },
        )
        .expect("plugin ran")
    };
    let out = cni("ADD");
    assert_eq!(
        out.exit_code,
        0,
        "{} {} {}",
        out.stdout,
        out.stderr,
        node.agent_log()
    );
    let res = out.json();
    assert_eq!(res["interfaces"][1]["pciID"], VF0, "{res}");
    let addr = pod_ns.ip(["-o", "addr", "show", "eth0"]).expect("eth0");
    assert!(addr.contains("10.16.0.9/24"), "{addr}");
    // the periodic check exports the pod's offload truth
    let metrics = state.path().join("offload-metrics.prom");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read_to_string(
            &metrics
        )
        .is_ok_and(
            |m| m.contains("ferrovn_pod_flows_offloaded{pod=\"default/vfpod\"")
        )),
        "metrics: {:?} log: {}",
        std::fs::read_to_string(&metrics),
        node.agent_log()
    );
    let out = cni("DEL");
    assert_eq!(out.exit_code, 0, "{} {}", out.stdout, out.stderr);
    node.netns()
        .ip(["link", "show", VF0_NETDEV])
        .expect("VF back in the host");
}

/// Periodic GC and VFs: a pod whose netns the agent cannot see is kept (its liveness is
/// unknown, not dead), and a pod that died without a DEL gives its VF back under the VF's
/// host name, not under the pod's interface name the kernel left it with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_it_cannot_see_and_gives_a_dead_pods_vf_back() {
    let s = setup().await;
    s.allocate("gcpod", 7);
    let vf_ns = Netns::create(&format!("fvt-{}-gc", s.tag)).expect("pod netns");
    let req = s.request(
        "gcpod",
        Some(&vf_ns),
        Some(VF0),
        json!({"type": "ferrovn-cni"}),
    );
    s.add(&req).await.expect("VF ADD");
    assert!(s.iface_ids(VF0_REP).contains("ferrovn-kind=sriov-vf"));

    // the agent's view has no netns root where the record points (as an agent container
    // without the host's /var/run/netns mounted): the port and the VF stay
    let hidden = format!("external_ids:pod_netns=/nonexistent-{}/netns/pod", s.tag);
    s.node
        .vsctl(["set", "Interface", VF0_REP, hidden.as_str()])
        .expect("hide netns");
    let gc = s.agent.gc_once().await.expect("gc");
    assert!(gc.removed.is_empty(), "{gc:?}");
    assert_eq!(gc.unknown, vec![VF0_REP.to_string()], "{gc:?}");
    assert!(s.iface_ids(VF0_REP).contains("iface-id=gcpod.default"));
    vf_ns
        .ip(["link", "show", "eth0"])
        .expect("VF still in the pod");
    let visible = format!("external_ids:pod_netns=\"{}\"", vf_ns.path().display());
    s.node
        .vsctl(["set", "Interface", VF0_REP, visible.as_str()])
        .expect("restore netns");

    // the pod dies without a DEL. A physical VF outlives its netns: the kernel moves it back
    // to the host under the name it had in the pod (dev<N> when that clashes), alias intact.
    // A veth stand-in would die with the netns, so move it the way the kernel does.
    vf_ns
        .ip(["link", "set", "eth0", "down", "name", "dev7"])
        .expect("rename as the kernel does on a clash");
    vf_ns
        .ip(["link", "set", "dev7", "netns", s.node.netns().name()])
        .expect("back to the host");
    drop(vf_ns);
    s.node
        .netns()
        .ip(["link", "show", "dev7"])
        .expect("the returned VF, under the pod's name");
    let gc = s.agent.gc_once().await.expect("gc");
    assert_eq!(gc.removed, vec![VF0_REP.to_string()], "{gc:?}");
    let back = s
        .node
        .netns()
        .ip(["-o", "link", "show", VF0_NETDEV])
        .expect("VF back under its host name");
    assert!(!back.contains("alias"), "owner alias cleared: {back}");
    assert!(s.node.netns().ip(["link", "show", "dev7"]).is_err());
    assert!(s.node.vsctl(["get", "Interface", VF0_REP, "name"]).is_err());

    // and the next pod gets it
    s.allocate("gcpod2", 8);
    let ns2 = Netns::create(&format!("fvt-{}-g2", s.tag)).expect("pod netns");
    let req2 = s.request(
        "gcpod2",
        Some(&ns2),
        Some(VF0),
        json!({"type": "ferrovn-cni"}),
    );
    s.add(&req2).await.expect("the VF attaches to the next pod");
    s.simple(Request::Del(req2)).await.expect("DEL");
}
