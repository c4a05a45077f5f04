//! OVN-native egress with real traffic: a DPDK node (OVS-DPDK, the real agent plumbing its
//! uplink as an OVS-DPDK `net_af_packet` port with `--egress-uplink`, real ovn-controller and
//! northd), the gateway router rows from the controller's planner, a kernel pod and a DPDK
//! (vhost-user, testpmd) pod on the node and an outside namespace (testkit::egress). Both pods'
//! egress leaves through the gateway router, SNATed to its external address as the outside sees
//! it, and the node's kernel forwards none of it; with the gateway router's reroute gone, the
//! same pods leave through the kernel path (masqueraded to the kernel uplink address, the
//! forward counter moves), which shows the checks can fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrovn_control::plan::gateway_router::{
    GatewayRouterInputs, NodeEgress, POLICY_PRIORITY, nbctl_commands, plan_gateway_routers,
};
use ferrovn_testkit::binaries::cni_plugin_binary;
use ferrovn_testkit::dpdk::{HugepageLease, PodMemory, Testpmd, TestpmdSpec};
use ferrovn_testkit::egress::{
    CLUSTER_ROUTER, EXTERNAL_PREFIX, EgressLab, KERNEL_UPLINK_IP, OUTSIDE_IP, OVN_EXTERNAL_IP,
    PHYSNET, POD_GATEWAY_MAC, POD_NET, UPLINK_BRIDGE, UPLINK_PORT,
};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_paths::vswitchd_dpdk;
use ferrovn_testkit::require::{Need, require};
use ferrovn_testkit::wait::{assert_within, wait_for, wait_until};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

/// The source address the outside (agnhost `/clientip`) saw for a GET from `pod`.
fn seen_source(pod: &Netns) -> Option<String> {
    let out = pod
        .run(
            5,
            "curl",
            [
                "-s",
                "-m",
                "2",
                &format!("http://{OUTSIDE_IP}:8080/clientip"),
            ],
        )
        .ok()?;
    let ip = out.trim().rsplit_once(':')?.0.to_string();
    (!ip.is_empty()).then_some(ip)
}

/// The planner's input for the lab's one node.
pub fn gateway_inputs(chassis: &str, pod_ips: &[&str]) -> GatewayRouterInputs {
    GatewayRouterInputs {
        cluster_router: CLUSTER_ROUTER.into(),
        transit: "100.65.0.0/16".parse().unwrap(),
        cluster_transit_ip: "100.65.0.1".parse().unwrap(),
        cluster_cidrs: vec![POD_NET.cidr.parse().unwrap()],
        nodes: vec![NodeEgress {
            node: chassis.into(),
            chassis: chassis.into(),
            transit_ip: "100.65.0.2".parse().unwrap(),
            external: format!("{OVN_EXTERNAL_IP}/{EXTERNAL_PREFIX}")
                .parse()
                .unwrap(),
            next_hop: OUTSIDE_IP.parse().unwrap(),
            physnet: PHYSNET.into(),
            snat_cidrs: vec![POD_NET.cidr.parse().unwrap()],
            pod_ips: pod_ips.iter().map(|p| p.parse().unwrap()).collect(),
        }],
    }
}

#[test]
fn kernel_pod_on_a_dpdk_node_leaves_through_its_ovn_gateway_router() {
    let agnhost = ferrovn_testkit::kube::bin_dir().join("agnhost");
    if !require(
        "kernel_pod_on_a_dpdk_node_leaves_through_its_ovn_gateway_router",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Program(vswitchd_dpdk()),
            Need::Tool("nft"),
            Need::Tool("curl"),
            Need::Tool("ethtool"),
            Need::Tool("dpdk-testpmd"),
            Need::Program(agnhost.clone()),
            Need::Hugepages(160),
        ],
    ) {
        return;
    }
    let tag = ferrovn_testkit::names::unique_tag();
    let rnd = ferrovn_testkit::names::short_rand();
    let work = tempfile::Builder::new()
        .prefix("fve-")
        .tempdir_in("/tmp")
        .unwrap();
    let huge = std::path::PathBuf::from(format!("/tmp/fveh{rnd}"));
    let lease = HugepageLease::acquire(&format!("ovn-egress-{tag}"), 160, &huge).unwrap();
    let plugin = cni_plugin_binary().unwrap();
    let lab = EgressLab::start(
        &tag,
        &rnd,
        work.path(),
        std::path::Path::new(AGENT),
        &plugin,
        Some(lease.mount()),
    )
    .unwrap();

    // the agent plumbed the uplink as an OVS-DPDK port and mapped the physnet to its bridge
    assert_within(Duration::from_secs(30), "uplink port plumbed", || {
        lab.dpdk
            .node
            .vsctl(["get", "Interface", UPLINK_PORT, "type"])
            .is_ok_and(|t| t.trim() == "dpdk")
    });
    let err = lab
        .dpdk
        .node
        .vsctl(["get", "Interface", UPLINK_PORT, "error"])
        .unwrap_or_default();
    assert!(
        err.trim().is_empty() || err.trim() == "[]",
        "OVS-DPDK refused the uplink: {err}; agent: {}",
        lab.dpdk.node.agent_log()
    );
    let mappings = lab
        .dpdk
        .node
        .vsctl([
            "get",
            "Open_vSwitch",
            ".",
            "external_ids:ovn-bridge-mappings",
        ])
        .unwrap();
    assert_eq!(
        mappings.trim().trim_matches('"'),
        format!("{PHYSNET}:{UPLINK_BRIDGE}")
    );
    let dp = lab
        .dpdk
        .node
        .vsctl(["get", "Bridge", UPLINK_BRIDGE, "datapath_type"])
        .unwrap();
    assert_eq!(dp.trim(), "netdev");

    let mut server = lab
        .outside
        .command(&agnhost)
        .args(["netexec", "--http-port=8080", "--udp-port=-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let pod_ip = "10.16.0.11";
    let kp = lab
        .add_kernel_pod("kp", pod_ip, "0a:58:0a:10:00:0b")
        .unwrap();
    let dp_ip = "10.16.0.21";
    let dp = lab
        .add_dpdk_pod("dp", dp_ip, "0a:58:0a:10:00:15", 1)
        .unwrap();
    // both reroutes in place, as the controller would have them for a DPDK node: the gateway
    // router's (29500) wins over the distributed one (29000)
    lab.set_kernel_reroute(&[pod_ip, dp_ip]).unwrap();
    let plan = plan_gateway_routers(&gateway_inputs(lab.chassis(), &[pod_ip, dp_ip]));
    assert!(plan.issues.is_empty(), "{:?}", plan.issues);
    lab.apply_nbctl(&nbctl_commands(&plan, CLUSTER_ROUTER))
        .unwrap();

    let fwd0 = lab.kernel_forwarded().unwrap();
    let up0 = lab.iface_stat(UPLINK_PORT, "tx_packets").unwrap_or(0);
    let rx0 = lab.outside_rx(true).unwrap();
    let seen = wait_for("kp reaches the outside", Duration::from_secs(60), || {
        seen_source(&kp)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; NB: {}; policies: {}; uplink: {:?}; agent: {}",
            lab.dpdk.central.nbctl(&["show"]).unwrap_or_default(),
            lab.dpdk
                .central
                .nbctl(&["lr-policy-list", CLUSTER_ROUTER])
                .unwrap_or_default(),
            lab.dpdk.node.vsctl(["list", "Interface", UPLINK_PORT]),
            lab.dpdk.node.agent_log()
        )
    });
    assert_eq!(
        seen, OVN_EXTERNAL_IP,
        "SNAT on the gateway router: the outside sees its external address"
    );
    assert!(
        kp.ping_until(OUTSIDE_IP, Duration::from_secs(10)),
        "kp pings the outside"
    );
    assert_eq!(
        lab.kernel_forwarded().unwrap(),
        fwd0,
        "the node's kernel forwarded none of the pod's egress"
    );
    assert!(
        lab.outside_rx(true).unwrap() > rx0,
        "the outside received on the DPDK uplink"
    );
    // OVS refreshes Interface statistics every 5 s
    assert_within(
        Duration::from_secs(20),
        "OVS-DPDK transmitted on its uplink port",
        || lab.iface_stat(UPLINK_PORT, "tx_packets").unwrap_or(0) > up0,
    );

    // the DPDK pod's egress (testpmd txonly, UDP to the outside's discard port) takes the same
    // gateway router: the outside receives it from the router's address on the DPDK uplink,
    // nothing on the kernel uplink, and the node's kernel forwards none of it
    lab.count_udp_sources(9).unwrap();
    lab.discard_udp(9).unwrap();
    let fwd1 = lab.kernel_forwarded().unwrap();
    let dpdk_egress = |name: &str| {
        Testpmd::start(&TestpmdSpec {
            prefix: format!("fvet{}", ferrovn_testkit::names::short_rand()),
            netns: Some(&dp.netns),
            cpu: 0,
            memory: PodMemory::NoHuge { mib: 256 },
            vdevs: vec![dp.vdev(0)],
            forward_mode: "txonly".into(),
            app_args: vec![
                "--txpkts=64".into(),
                format!("--eth-peer=0,{POD_GATEWAY_MAC}"),
                format!("--tx-ip={dp_ip},{OUTSIDE_IP}"),
            ],
            log: work.path().join(format!("{name}.log")),
            interactive: false,
        })
        .unwrap()
    };
    let mut generator = dpdk_egress("dp-ovn");
    assert_within(
        Duration::from_secs(30),
        "the outside receives the DPDK pod's UDP from the gateway router's address",
        || lab.udp_from(true).unwrap_or(0) >= 1000,
    );
    generator.stop();
    assert_eq!(
        lab.udp_from(false).unwrap(),
        0,
        "none left by the kernel path"
    );
    assert_eq!(
        lab.kernel_forwarded().unwrap(),
        fwd1,
        "the node's kernel forwarded none of the DPDK pod's egress"
    );

    // the node switched to the kernel path (annotation ferrovn.io/egress=kernel): the gateway
    // router's reroute goes, the pods keep running and leave through ovn0 + nftables
    lab.del_policies(POLICY_PRIORITY).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || seen_source(&kp).as_deref()
            == Some(KERNEL_UPLINK_IP)),
        "kp masqueraded by the kernel path; policies: {}",
        lab.dpdk
            .central
            .nbctl(&["lr-policy-list", CLUSTER_ROUTER])
            .unwrap_or_default()
    );
    assert!(
        lab.kernel_forwarded().unwrap() > fwd0,
        "the kernel path counts in the node's forward hook"
    );
    // the DPDK pod too: masqueraded by the node's kernel onto the kernel uplink
    let from_ovn = lab.udp_from(true).unwrap();
    let mut generator = dpdk_egress("dp-kernel");
    assert_within(
        Duration::from_secs(30),
        "the outside receives the DPDK pod's UDP from the kernel uplink's address",
        || lab.udp_from(false).unwrap_or(0) >= 1000,
    );
    generator.stop();
    assert_eq!(
        lab.udp_from(true).unwrap(),
        from_ovn,
        "none by the gateway router"
    );

    let _ = server.kill();
    let _ = server.wait();
    drop(kp);
    drop(dp);
    drop(lab);
    drop(lease);
}
