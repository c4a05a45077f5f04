//! The DPDK node plan applied through OVSDB to a real ovsdb-server (Open_vSwitch schema):
//! other_config before vswitchd starts, the tunnel bridge with `type=dpdk` ports, idempotence,
//! and switching memory modes removes keys that no longer apply.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_dataplane::dpdk::config::{
    DpdkDevice, DpdkMemory, DpdkNodeConfig, Underlay, apply_other_config, apply_phys_bridge,
    plan_dpdk_node,
};
use ferrovn_dataplane::ovs::OvsClient;
use ferrovn_testkit::ovsdb::OvsdbServer;

fn vsctl(server: &OvsdbServer, args: &[&str]) -> String {
    let db = format!("--db={}", server.remote());
    let mut all = vec![db.as_str(), "--no-wait", "--timeout=10"];
    all.extend_from_slice(args);
    ferrovn_testkit::process::run("ovs-vsctl", &all).expect("ovs-vsctl")
}

fn config() -> DpdkNodeConfig {
    let mut c = DpdkNodeConfig::example();
    c.file_prefix = "fvtest".into();
    c.devices = vec![DpdkDevice {
        name: "dpdk0".into(),
        devargs: "net_af_packet0,iface=fvul2".into(),
        n_rxq: None,
        mtu: None,
    }];
    c.underlay = Some(Underlay {
        bridge: "br-phy".into(),
        cidr: "192.168.100.2/24".parse().expect("cidr"),
        mtu: 1500,
    });
    c
}

#[tokio::test(flavor = "current_thread")]
async fn plan_applied_to_a_real_ovsdb_server() {
    let server =
        OvsdbServer::start(ferrovn_testkit::ovs_paths::vswitch_schema()).expect("ovsdb-server");
    vsctl(&server, &["init"]);
    // a key FerrOVN does not manage survives
    vsctl(
        &server,
        &[
            "set",
            "Open_vSwitch",
            ".",
            "other_config:vhost-iommu-support=false",
        ],
    );
    let ovs = OvsClient::connect(&server.remote()).await.expect("connect");
    let cfg = config();
    let settings = cfg.settings(DpdkMemory::Hugepages {
        huge_dir: "/tmp/fvhuge".into(),
        page_size_kib: 2048,
        socket_mem_mib: vec![256],
        socket_limit_mib: vec![256],
    });
    let plan = plan_dpdk_node(&settings);
    let out = apply_other_config(&ovs, &plan).await.expect("apply");
    assert!(out.changed && !out.restart_needed, "{out:?}");
    apply_phys_bridge(&ovs, &plan).await.expect("bridge");

    let get = |k: &str| {
        vsctl(
            &server,
            &["get", "Open_vSwitch", ".", &format!("other_config:{k}")],
        )
        .trim()
        .trim_matches('"')
        .to_string()
    };
    assert_eq!(get("dpdk-init"), "true");
    assert_eq!(get("dpdk-socket-mem"), "256");
    assert_eq!(get("pmd-cpu-mask"), "0x2");
    assert_eq!(get("pmd-maxsleep"), "500");
    assert_eq!(
        get("dpdk-extra"),
        "--huge-dir=/tmp/fvhuge --file-prefix=fvtest --iova-mode=va --no-pci"
    );
    assert_eq!(get("vhost-iommu-support"), "false");
    assert_eq!(
        vsctl(&server, &["get", "Bridge", "br-phy", "datapath_type"]).trim(),
        "netdev"
    );
    assert_eq!(
        vsctl(&server, &["get", "Interface", "dpdk0", "type"]).trim(),
        "dpdk"
    );
    let opts = vsctl(&server, &["get", "Interface", "dpdk0", "options"]);
    assert!(
        opts.contains("dpdk-devargs=\"net_af_packet0,iface=fvul2,qpairs=2\""),
        "{opts}"
    );
    assert!(opts.contains("n_rxq=\"2\""), "{opts}");
    assert_eq!(
        vsctl(&server, &["get", "Interface", "dpdk0", "mtu_request"]).trim(),
        "1500"
    );
    let ports = vsctl(&server, &["list-ports", "br-phy"]);
    assert_eq!(ports.trim(), "dpdk0");

    // idempotent: nothing changes, no duplicate rows
    let again = apply_other_config(&ovs, &plan).await.expect("apply");
    assert!(!again.changed);
    apply_phys_bridge(&ovs, &plan).await.expect("bridge again");
    assert_eq!(vsctl(&server, &["list-ports", "br-phy"]).trim(), "dpdk0");
    assert_eq!(vsctl(&server, &["list-br"]).trim(), "br-phy");

    // DPDK initialised by a running vswitchd: an EAL change needs a restart, a PMD one does not
    vsctl(
        &server,
        &["set", "Open_vSwitch", ".", "dpdk_initialized=true"],
    );
    let mut nohuge = settings.clone();
    nohuge.memory = DpdkMemory::NoHuge { memory_mib: 1024 };
    let plan2 = plan_dpdk_node(&nohuge);
    let out = apply_other_config(&ovs, &plan2).await.expect("apply");
    assert!(out.changed && out.restart_needed, "{out:?}");
    let oc = vsctl(&server, &["get", "Open_vSwitch", ".", "other_config"]);
    assert!(!oc.contains("dpdk-socket-mem"), "{oc}");
    assert!(oc.contains("per-port-memory=\"true\""), "{oc}");
    let mut pmd = nohuge.clone();
    pmd.pmd_maxsleep_us = Some(100);
    let out = apply_other_config(&ovs, &plan_dpdk_node(&pmd))
        .await
        .expect("apply");
    assert!(out.changed && !out.restart_needed, "{out:?}");
    assert_eq!(get("pmd-maxsleep"), "100");

    // a changed device is updated in place
    let mut dev = pmd.clone();
    dev.devices[0].devargs = "net_af_packet0,iface=other,qpairs=3".into();
    apply_phys_bridge(&ovs, &plan_dpdk_node(&dev))
        .await
        .expect("bridge");
    let opts = vsctl(&server, &["get", "Interface", "dpdk0", "options"]);
    assert!(
        opts.contains("iface=other,qpairs=3") && opts.contains("n_rxq=\"3\""),
        "{opts}"
    );
}
