//! `Local` traffic policies use template load balancers whose variables live in one
//! Chassis_Template_Var row per chassis. ovn-controller 25.03 keeps its chassis' variables after
//! that row is deleted and asserts (exits) when a new row for the chassis appears later. In the
//! upstream e2e run the last `internalTrafficPolicy: Local` Service going and the next one
//! coming killed ovn-controller on both lab nodes (docs/conformance.md). Against two real
//! ovn-controllers: a Local Service created, deleted and created again leaves both running and
//! caught up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use ferrovn_control::plan::{Desired, ServiceInputs, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::ovs_node::{Node, TwoNodes};
use serde_json::json;

fn desired(chassis: [&str; 2], local_service: bool) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/24", None);
    let mut inputs = ServiceInputs {
        node_chassis: [("n0", chassis[0]), ("n1", chassis[1])]
            .into_iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect(),
        ..Default::default()
    };
    if local_service {
        inputs.services.push(
            serde_json::from_value(json!({
                "metadata": {"name": "local", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.13", "internalTrafficPolicy": "Local",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }))
            .unwrap(),
        );
        inputs.endpoint_slices.push(
            serde_json::from_value(json!({
                "metadata": {"name": "local-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "local"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.16.0.11"], "nodeName": "n0"},
                    {"addresses": ["10.16.0.12"], "nodeName": "n1"},
                ],
            }))
            .unwrap(),
        );
    }
    d.services = inputs;
    d
}

/// ovn-controller of `node` still runs, and its log has no assertion.
fn alive(node: &Node) -> Result<(), String> {
    let dir = node.dir();
    let log = std::fs::read_to_string(dir.join("ovn-controller.log")).unwrap_or_default();
    if let Some(l) = log.lines().find(|l| l.contains("assertion")) {
        return Err(format!("{}: {l}", node.name()));
    }
    let pid = std::fs::read_to_string(dir.join("ovn-controller.pid")).unwrap_or_default();
    let pid = pid.trim();
    if pid.is_empty() || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!(
            "{}: ovn-controller (pid {pid:?}) is gone",
            node.name()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_service_deleted_and_created_again_keeps_ovn_controller_running() {
    let tb = TwoNodes::start().expect("two nodes");
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    let chassis = [tb.nodes[0].name(), tb.nodes[1].name()];
    let sync = NbSync::connect(&tb.central.nb_remote(), 500)
        .await
        .expect("NB");
    for (step, local) in [
        ("created", true),
        ("deleted", false),
        ("created again", true),
    ] {
        let p = plan(&desired(chassis, local));
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        sync.sync(&p).await.expect("sync");
        // every chassis processed the change (a dead ovn-controller never catches up)
        let caught_up = tb.central.nbctl(&["--wait=hv", "sync"]);
        for n in &tb.nodes {
            alive(n).unwrap_or_else(|e| panic!("Local Service {step}: {e}"));
        }
        caught_up.unwrap_or_else(|e| panic!("Local Service {step}: chassis not caught up: {e}"));
    }
    // and the variables are back on both chassis
    let sb = tb
        .central
        .sbctl(&[
            "--columns=chassis,variables",
            "list",
            "Chassis_Template_Var",
        ])
        .expect("SB");
    assert!(
        sb.contains("10.16.0.11:8080") && sb.contains("10.16.0.12:8080"),
        "{sb}"
    );
}
