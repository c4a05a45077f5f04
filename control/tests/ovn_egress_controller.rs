//! OVN-native egress driven by the controller (docs/node-connectivity.md, "OVN gateway router
//! egress"): a DPDK Node that names its uplink address and next hop gets its gateway router,
//! NAT row, router options, external switch and the 29500 reroute of its pods in a real NB,
//! through the reconciler, and ovn-northd turns its external port into a distributed gateway
//! port (a chassis-redirect port) bound to the node's chassis; switching the Node to `ferrovn.io/egress: kernel` removes every one of those rows,
//! and a bad annotation is reported naming the node and the annotation. Real OVN central (NB,
//! SB, ovn-northd), the controller as a library in manifest mode.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrovn_control::controller::{Controller, ControllerOptions};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;

/// `dp-a`: a DPDK node with its uplink; `k-b`: a kernel node; one pod on each.
fn manifest(dp_a_annotations: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: dp-a
  labels: {{ovn.kubernetes.io/ovs_dp_type: userspace}}
  annotations: {{{dp_a_annotations}}}
status:
  addresses: [{{type: InternalIP, address: 192.168.60.1}}]
---
apiVersion: v1
kind: Node
metadata:
  name: k-b
  annotations: {{"ferrovn.io/egress-external-ip": "203.0.113.102/24", "ferrovn.io/egress-next-hop": "203.0.113.10"}}
status:
  addresses: [{{type: InternalIP, address: 192.168.60.2}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: pa, namespace: default}}
spec: {{nodeName: dp-a, containers: [{{name: c, image: busybox}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: pb, namespace: default}}
spec: {{nodeName: k-b, containers: [{{name: c, image: busybox}}]}}
"#
    )
}

const UPLINK: &str = r#""ferrovn.io/egress-external-ip": "203.0.113.101/24", "ferrovn.io/egress-next-hop": "203.0.113.10""#;

fn nb(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
        .trim()
        .to_string()
}

fn rows(c: &OvnCentral, table: &str, column: &str) -> Vec<String> {
    nb(
        c,
        &["--bare", &format!("--columns={column}"), "list", table],
    )
    .lines()
    .map(|l| l.trim().to_string())
    .filter(|l| !l.is_empty())
    .collect()
}

/// `lrp-get-gateway-chassis` of dp-a's external port, one `<name> <priority>` per row.
fn gateway_chassis(c: &OvnCentral) -> Vec<String> {
    nb(c, &["lrp-get-gateway-chassis", "gw-dp-a-ext"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The pod's address from its allocation record in the controller's state.
fn pod_ip(state: &std::path::Path, pod: &str) -> String {
    let path = state.join(format!("allocations/default/{pod}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let a = v["annotations"]["ovn.kubernetes.io/ip_address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!a.is_empty(), "no address in {text}");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpdk_node_with_an_uplink_gets_its_gateway_router_and_loses_it_with_the_setting() {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let state = tmp.path().join("state");
    std::fs::write(manifests.join("c.yaml"), manifest(UPLINK)).unwrap();
    let o = ControllerOptions::new(central.nb_remote(), &manifests, state.clone());
    let mut c = Controller::connect(o).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    assert!(r.issues.is_empty(), "{:?}", r.issues);

    // the DPDK node's gateway router: its external port is a gateway port on the node's
    // chassis (no chassis annotation: the node's name); a distributed router (no
    // options:chassis) whose SNAT is one conntrack commit (ct-commit-all)
    assert_eq!(
        gateway_chassis(&central),
        vec!["gw-dp-a-ext-dp-a 1".to_string()]
    );
    let options = nb(&central, &["get", "Logical_Router", "gw-dp-a", "options"]);
    assert!(
        options.contains("ct-commit-all=\"true\"") && !options.contains("chassis"),
        "{options}"
    );
    // the kernel node has none: its annotations alone do not choose the gateway router
    assert!(
        !rows(&central, "Logical_Router", "name").contains(&"gw-k-b".to_string()),
        "{:?}",
        rows(&central, "Logical_Router", "name")
    );
    let nat = nb(&central, &["lr-nat-list", "gw-dp-a"]);
    assert!(
        nat.contains("snat") && nat.contains("203.0.113.101") && nat.contains("10.16.0.0/16"),
        "{nat}"
    );
    let routes = nb(&central, &["lr-route-list", "gw-dp-a"]);
    assert!(
        routes.contains("0.0.0.0/0") && routes.contains("203.0.113.10"),
        "{routes}"
    );
    // back to the cluster router's transit address: the join gateway's offset (.1) there
    assert!(
        routes.contains("10.16.0.0/16") && routes.contains("100.65.0.1"),
        "{routes}"
    );
    assert_eq!(
        nb(
            &central,
            &[
                "get",
                "Logical_Switch_Port",
                "ln-ext-dp-a",
                "options:network_name"
            ]
        )
        .trim_matches('"'),
        "ext"
    );
    // the node's transit address is its join address moved into the transit network
    let join = std::fs::read_to_string(state.join("nodes/dp-a.json")).unwrap();
    let join: serde_json::Value = serde_json::from_str(&join).unwrap();
    let join_ip = join["annotations"]["ovn.kubernetes.io/ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let transit_ip = join_ip.replacen("100.64.", "100.65.", 1);
    let lrp = nb(
        &central,
        &["get", "Logical_Router_Port", "gw-dp-a-transit", "networks"],
    );
    assert!(
        lrp.contains(&format!("{transit_ip}/16")),
        "{lrp} vs join {join_ip}"
    );
    // the reroute of dp-a's pod (not k-b's) to that address
    let pa = pod_ip(&state, "pa");
    let pb = pod_ip(&state, "pb");
    let pol = nb(
        &central,
        &[
            "--bare",
            "--columns=match,nexthops",
            "find",
            "Logical_Router_Policy",
            "priority=29500",
        ],
    );
    assert!(
        pol.contains(&pa) && !pol.contains(&pb) && pol.contains(&transit_ip),
        "{pol}"
    );

    // northd made a chassis-redirect port of it whose HA group holds dp-a's chassis
    central
        .sbctl(&["chassis-add", "dp-a", "geneve", "127.0.0.1"])
        .unwrap();
    central.sync_sb().expect("northd caught up");
    let sb = |args: &[&str]| central.sbctl(args).unwrap().trim().to_string();
    assert_eq!(
        sb(&[
            "--bare",
            "--columns=type",
            "find",
            "Port_Binding",
            "logical_port=cr-gw-dp-a-ext",
        ]),
        "chassisredirect"
    );
    let dp_a = sb(&["--bare", "--columns=_uuid", "find", "Chassis", "name=dp-a"]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            sb(&["--bare", "--columns=chassis", "list", "HA_Chassis"]).contains(&dp_a)
        }),
        "HA_Chassis of dp-a: {}",
        sb(&["list", "HA_Chassis_Group"])
    );

    // a user's own NAT row on FerrOVN's cluster router is not FerrOVN's: kept as it is; and a
    // converged NB: the next pass changes nothing
    nb(
        &central,
        &[
            "lr-nat-add",
            "ovn-cluster",
            "snat",
            "198.51.100.1",
            "10.99.0.0/16",
        ],
    );
    let r = c.pass().await.expect("second pass");
    assert_eq!(
        (r.nb_inserts, r.nb_updates, r.nb_removals),
        (0, 0, 0),
        "{r:?}"
    );

    // the chassis moves (the node's agent publishes another system-id): updated in place
    let gwc_uuid = nb(
        &central,
        &["--bare", "--columns=_uuid", "list", "Gateway_Chassis"],
    );
    let uuid = nb(
        &central,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Logical_Router",
            "name=gw-dp-a",
        ],
    );
    std::fs::write(
        manifests.join("c.yaml"),
        manifest(&format!(
            r#"{UPLINK}, "ovn.kubernetes.io/chassis": "ch-dp-a""#
        )),
    )
    .unwrap();
    let r = c.pass().await.expect("chassis pass");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(
        gateway_chassis(&central),
        vec!["gw-dp-a-ext-ch-dp-a 1".to_string()]
    );
    assert_eq!(
        nb(
            &central,
            &["--bare", "--columns=_uuid", "list", "Gateway_Chassis"]
        ),
        gwc_uuid
    );
    assert_eq!(
        nb(
            &central,
            &[
                "--bare",
                "--columns=_uuid",
                "find",
                "Logical_Router",
                "name=gw-dp-a"
            ]
        ),
        uuid
    );

    // a bad annotation: reported with the node and the annotation; the node keeps nothing
    std::fs::write(
        manifests.join("c.yaml"),
        manifest(r#""ferrovn.io/egress": "ovn-gateway-router", "ferrovn.io/egress-external-ip": "203.0.113.101", "ferrovn.io/egress-next-hop": "203.0.113.10""#),
    )
    .unwrap();
    let r = c.pass().await.expect("bad pass");
    assert!(
        r.issues
            .iter()
            .any(|i| i.contains("dp-a") && i.contains("ferrovn.io/egress-external-ip")),
        "{:?}",
        r.issues
    );

    // switched to the kernel path: every gateway row is gone, the rest stays
    std::fs::write(
        manifests.join("c.yaml"),
        manifest(&format!(r#"{UPLINK}, "ferrovn.io/egress": "kernel""#)),
    )
    .unwrap();
    let r = c.pass().await.expect("kernel pass");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    let routers = rows(&central, "Logical_Router", "name");
    assert_eq!(routers, vec!["ovn-cluster".to_string()], "{routers:?}");
    assert!(rows(&central, "Gateway_Chassis", "name").is_empty());
    assert_eq!(
        rows(&central, "NAT", "external_ip"),
        vec!["198.51.100.1".to_string()],
        "only the user's NAT row is left"
    );
    let switches = rows(&central, "Logical_Switch", "name");
    assert!(
        !switches
            .iter()
            .any(|s| s.starts_with("ext-") || s == "ovn-gw-transit"),
        "{switches:?}"
    );
    assert!(
        nb(
            &central,
            &[
                "--bare",
                "--columns=_uuid",
                "find",
                "Logical_Router_Policy",
                "priority=29500"
            ]
        )
        .is_empty()
    );
    assert!(
        !nb(
            &central,
            &["--bare", "--columns=name", "list", "Logical_Router_Port"]
        )
        .contains("transit")
    );
    // the pods' distributed (kernel path) reroute is still there
    assert!(
        !nb(
            &central,
            &[
                "--bare",
                "--columns=_uuid",
                "find",
                "Logical_Router_Policy",
                "priority=29000"
            ]
        )
        .is_empty()
    );
}
