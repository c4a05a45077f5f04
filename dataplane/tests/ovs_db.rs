//! OVSDB side of the agent against a real ovsdb-server (Open_vSwitch schema), no vswitchd.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use ferrovn_dataplane::ovs::{EgressQos, NodeOvsConfig, OvsClient, OvsError, PodPort, ext};
use ferrovn_testkit::ovsdb::OvsdbServer;

fn server() -> OvsdbServer {
    let s = OvsdbServer::start(ferrovn_testkit::ovs_paths::vswitch_schema()).expect("ovsdb-server");
    // what `ovs-vsctl init` does: the root row
    s.transact(
        &serde_json::json!(["Open_vSwitch", {"op": "insert", "table": "Open_vSwitch", "row": {}}]),
    )
    .expect("root row");
    s
}

fn cfg() -> NodeOvsConfig {
    NodeOvsConfig {
        system_id: "n1".into(),
        hostname: "n1".into(),
        ovn_remote: "unix:/x/sb.sock".into(),
        encap_type: "geneve".into(),
        encap_ip: "192.168.100.1".into(),
        bridge: "br-int".into(),
        datapath_type: "netdev".into(),
    }
}

fn count(s: &OvsdbServer, table: &str) -> usize {
    let out = s
        .transact(&serde_json::json!(["Open_vSwitch", {"op": "select", "table": table, "where": [], "columns": ["_uuid"]}]))
        .expect("select");
    out[0]["rows"].as_array().map_or(0, Vec::len)
}

fn port(name: &str, qos: bool) -> PodPort {
    PodPort {
        name: name.into(),
        iface_type: String::new(),
        options: BTreeMap::new(),
        external_ids: [
            (ext::IFACE_ID.to_string(), format!("{name}.default")),
            (ext::VENDOR.to_string(), ext::VENDOR_VALUE.to_string()),
            (ext::CONTAINER_ID.to_string(), format!("c-{name}")),
        ]
        .into(),
        ingress_policing_kbps: qos.then_some(10_000),
        egress_qos: qos.then_some(EgressQos::LinuxHtb {
            max_rate_bps: 30_000_000,
        }),
    }
}

#[tokio::test]
async fn node_config_is_idempotent_and_keeps_foreign_keys() {
    let s = server();
    let c = OvsClient::connect(&s.remote()).await.expect("connect");
    c.ensure_node_config(&cfg()).await.expect("first");
    c.ensure_node_config(&cfg()).await.expect("second");
    assert_eq!(count(&s, "Bridge"), 1);
    assert_eq!(count(&s, "Port"), 1);
    let mut changed = cfg();
    changed.encap_ip = "192.168.100.9".into();
    c.ensure_node_config(&changed).await.expect("changed");
    let out = s
        .client("get", &["Open_vSwitch", ".", "external_ids:ovn-encap-ip"])
        .unwrap_or_default();
    // `ovsdb-client get` may not exist in every version; check through a select instead
    let _ = out;
    let sel = s
        .transact(&serde_json::json!(["Open_vSwitch", {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["external_ids"]}]))
        .expect("select");
    let ids = sel[0]["rows"][0]["external_ids"].to_string();
    assert!(
        ids.contains("192.168.100.9") && !ids.contains("192.168.100.1\""),
        "{ids}"
    );
    assert!(c.bridge_exists("br-int").await.expect("exists"));
    assert!(!c.bridge_exists("br-nope").await.expect("exists"));
}

#[tokio::test]
async fn ports_with_qos_are_added_found_and_removed_completely() {
    let s = server();
    let c = OvsClient::connect(&s.remote()).await.expect("connect");
    c.ensure_node_config(&cfg()).await.expect("config");
    c.add_port("br-int", &port("fvaaaaaaaaaaaaa", true))
        .await
        .expect("add a");
    c.add_port("br-int", &port("fvbbbbbbbbbbbbb", false))
        .await
        .expect("add b");
    // re-adding replaces, never duplicates
    c.add_port("br-int", &port("fvaaaaaaaaaaaaa", true))
        .await
        .expect("re-add a");
    assert_eq!(count(&s, "Port"), 3);
    assert_eq!(count(&s, "QoS"), 1);
    let ours = c
        .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
        .await
        .expect("find");
    assert_eq!(ours.len(), 2);
    let a = c
        .find_interfaces(&[(ext::CONTAINER_ID, "c-fvaaaaaaaaaaaaa")])
        .await
        .expect("find a");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].get(ext::IFACE_ID), Some("fvaaaaaaaaaaaaa.default"));

    assert!(c.remove_port("fvaaaaaaaaaaaaa").await.expect("remove a"));
    assert!(
        !c.remove_port("fvaaaaaaaaaaaaa")
            .await
            .expect("remove a again")
    );
    assert_eq!(count(&s, "QoS"), 0, "QoS removed with its port");
    assert_eq!(count(&s, "Interface"), 2, "br-int + b");
    assert_eq!(count(&s, "Port"), 2);
}

#[tokio::test]
async fn ovn_installed_wait_is_bounded_and_sees_the_flag() {
    let s = server();
    let c = OvsClient::connect(&s.remote()).await.expect("connect");
    c.ensure_node_config(&cfg()).await.expect("config");
    c.add_port("br-int", &port("fvccccccccccccc", false))
        .await
        .expect("add");
    let t0 = std::time::Instant::now();
    let e = c
        .wait_ovn_installed(
            "fvccccccccccccc",
            "fvccccccccccccc.default",
            Duration::from_millis(300),
        )
        .await
        .expect_err("nobody sets it");
    assert!(matches!(e, OvsError::NotInstalled { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    // what ovn-controller does, a moment later
    let setter = {
        let remote = s.remote();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c2 = OvsClient::connect(&remote).await.expect("connect");
            let t = ferrovn_ovsdb::Transaction::new("Open_vSwitch").with(
                ferrovn_ovsdb::Operation::mutate("Interface")
                    .where_eq("name", "fvccccccccccccc")
                    .mutation(
                        "external_ids",
                        ferrovn_ovsdb::Mutator::Insert,
                        ferrovn_ovsdb::Datum::map([("ovn-installed", "true")]),
                    ),
            );
            c2.transact(&t).await.expect("set flag");
        })
    };
    c.wait_ovn_installed("fvccccccccccccc", "x", Duration::from_secs(10))
        .await
        .expect("sees the flag");
    setter.await.expect("setter");
}
