//! The centralized gateway's liveness probe against a real OVN central (NB, SB, ovn-northd):
//! two gateway nodes' chassis stand in the SB (made with ovn-sbctl, bound to the nodes' join
//! ports); a chassis "lives" while the test copies `SB_Global.nb_cfg` into its
//! `Chassis_Private.nb_cfg`, as ovn-controller does. The controller (library, manifest mode,
//! `sb` set) fails the subnet over when the active one goes silent, and a restarted controller
//! keeps the active gateway the NB has instead of failing back.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrovn_control::controller::{Controller, ControllerOptions};
use ferrovn_testkit::ovsdb::OvnCentral;

const MANIFEST: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: gw-a\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 192.168.50.1\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: gw-b\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 192.168.50.2\n---\napiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: central\nspec:\n  cidrBlock: 10.18.0.0/16\n  natOutgoing: true\n  gatewayType: centralized\n  gatewayNode: \"gw-a, gw-b:192.168.50.22\"\n";

fn sbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.sbctl(args)
        .unwrap_or_else(|e| panic!("ovn-sbctl {args:?}: {e}"))
}

/// A chassis `name` with its Chassis_Private, the join port of `node` bound to it.
fn fake_chassis(c: &OvnCentral, name: &str, node: &str, encap: &str) {
    sbctl(c, &["chassis-add", name, "geneve", encap]);
    let uuid = sbctl(
        c,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Chassis",
            &format!("name={name}"),
        ],
    );
    sbctl(
        c,
        &[
            "create",
            "Chassis_Private",
            &format!("name={name}"),
            &format!("chassis={}", uuid.trim()),
        ],
    );
    sbctl(c, &["lsp-bind", &format!("node-{node}"), name]);
}

/// What a live ovn-controller does: catch up with `SB_Global.nb_cfg`.
fn answer(c: &OvnCentral, name: &str) {
    let cfg = sbctl(c, &["get", "SB_Global", ".", "nb_cfg"]);
    sbctl(
        c,
        &[
            "set",
            "Chassis_Private",
            name,
            &format!("nb_cfg={}", cfg.trim()),
        ],
    );
}

/// The active gateway in the NB row of `central`.
fn nb_active(c: &OvnCentral) -> String {
    let ids = c
        .nbctl(&[
            "--bare",
            "--columns=external_ids",
            "find",
            "Logical_Router_Policy",
            "priority=29000",
        ])
        .unwrap_or_default();
    ids.split_whitespace()
        .find_map(|kv| kv.strip_prefix("active-gateway="))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_gateway_chassis_fails_over_and_a_restart_keeps_the_choice() {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("gw.yaml"), MANIFEST).unwrap();
    let mut o = ControllerOptions::new(central.nb_remote(), &manifests, tmp.path().join("state"));
    o.sb = Some(central.sb_remote());
    o.gateway_dead_after = Duration::from_secs(2);

    let mut c = Controller::connect(o.clone()).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(c.active_gateways()["central"], ["gw-a"]);
    assert_eq!(nb_active(&central), "gw-a");
    central.sync_sb().expect("northd caught up");
    fake_chassis(&central, "ch-a", "gw-a", "127.0.0.11");
    fake_chassis(&central, "ch-b", "gw-b", "127.0.0.12");

    // both answer for a while: nothing moves
    let resync = Duration::from_secs(3600);
    let t = Instant::now();
    let mut last_answer = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        last_answer = Instant::now();
        answer(&central, "ch-a");
        answer(&central, "ch-b");
        c.pass_if_changed(resync).await.expect("pass");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(nb_active(&central), "gw-a");

    // gw-a goes silent: after the deadline (counted from its last answer) the subnet is on gw-b
    let silent = last_answer;
    loop {
        answer(&central, "ch-b");
        c.pass_if_changed(resync).await.expect("pass");
        if nb_active(&central) == "gw-b" {
            break;
        }
        assert!(
            silent.elapsed() < Duration::from_secs(20),
            "no failover after {:?}",
            silent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let took = silent.elapsed();
    println!("failover after the last answer of gw-a: {took:?} (dead-after 2 s)");
    assert!(
        took >= Duration::from_secs(2),
        "not before the deadline: {took:?}"
    );
    assert_eq!(c.active_gateways()["central"], ["gw-b"]);
    let hops = central
        .nbctl(&[
            "--bare",
            "--columns=nexthops",
            "find",
            "Logical_Router_Policy",
            "priority=29000",
        ])
        .unwrap();
    let b_join = std::fs::read_to_string(tmp.path().join("state/nodes/gw-b.json")).unwrap();
    assert!(
        b_join.contains(hops.trim()),
        "next hop {hops} is gw-b's join address"
    );
    // the standby and the active gateway nodes carry the subnet's NAT duty, nobody else does
    assert!(b_join.contains("10.18.0.0/16=192.168.50.22"), "{b_join}");

    // gw-a answers again: no fail-back; and a restarted controller keeps gw-b too
    drop(c);
    let mut c = Controller::connect(o).await.expect("reconnect");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        answer(&central, "ch-a");
        answer(&central, "ch-b");
        c.pass_if_changed(resync).await.expect("pass");
        assert_eq!(nb_active(&central), "gw-b", "stays on gw-b");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
