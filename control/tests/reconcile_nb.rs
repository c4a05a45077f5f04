//! The reconciler against a real OVN central (ovsdb-server NB/SB + ovn-northd): rows land as
//! planned, a second pass does nothing, a crash between batches is repaired, rows created by
//! ovn-nbctl survive, and northd turns our rows into logical flows.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{NbPlan, PortIntent, plan};
use ferrovn_control::reconcile::{NbSync, apply, to_transactions};
use ferrovn_testkit::ovsdb::OvnCentral;

fn cluster(pods: &[(u8, u8)], private: bool) -> NbPlan {
    let mut d = common::default_vpc_with_join();
    common::add_numbered_subnets(&mut d, 2, private);
    for (k, (subnet, host)) in pods.iter().enumerate() {
        d.ports.push(PortIntent {
            pod: format!("p{k}"),
            namespace: "ns".into(),
            provider: "ovn".into(),
            subnet: format!("s{subnet}"),
            node: "n1".into(),
            mac: MacAddr([0x0e, 0, 0, 0, 0, k as u8 + 1]),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, subnet + 1, 0, *host))],
            port_security: true,
        });
    }
    plan(&d)
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_repairs_crashes_and_keeps_foreign_rows() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 4).await.expect("NB");

    // pass 1: everything inserted
    let a = cluster(&[(0, 5), (0, 6), (1, 7)], true);
    let (d, report) = sync.sync(&a).await.expect("sync A");
    assert_eq!(d.counts(), (a.row_count(), 0, 0));
    assert!(report.transactions > 1, "batched: {report:?}");

    let addr = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "p0.ns", "addresses"],
    );
    assert!(addr.contains("0e:00:00:00:00:01 10.1.0.5"), "{addr}");
    let sec = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "p0.ns", "port_security"],
    );
    assert!(sec.contains("10.1.0.5"), "{sec}");
    let ids = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "p0.ns", "external_ids"],
    );
    assert!(ids.contains("\"ferrovn.io/owner\"=ferrovn"), "{ids}");
    assert!(ids.contains("pod=\"ns/p0\""), "{ids}");
    let show = nbctl(&central, &["show"]);
    assert!(
        show.contains("router") && show.contains("ovn-cluster-s0"),
        "{show}"
    );
    let lrp = nbctl(
        &central,
        &["get", "Logical_Router_Port", "ovn-cluster-s0", "networks"],
    );
    assert!(lrp.contains("10.1.0.1/24"), "{lrp}");
    let acls = nbctl(&central, &["acl-list", "s1"]);
    assert!(acls.contains("to-lport  1000 (ip) drop log"), "{acls}");
    assert!(
        acls.contains("ip4.src == 10.2.0.0/24 && ip4.dst == 10.2.0.0/24"),
        "{acls}"
    );

    // pass 2: nothing to do
    let (d, report) = sync.sync(&a).await.expect("sync A again");
    assert!(d.is_empty(), "{:#?}", d.changes);
    assert_eq!(report.operations, 0);

    // rows made by hand, one of them inside our switch
    nbctl(&central, &["ls-add", "manual-ls"]);
    nbctl(&central, &["lsp-add", "s0", "manual-port"]);
    nbctl(
        &central,
        &[
            "lsp-set-addresses",
            "manual-port",
            "0a:00:00:00:00:99 10.1.0.99",
        ],
    );
    nbctl(&central, &["lr-add", "manual-lr"]);
    sync.replica
        .wait_for(std::time::Duration::from_secs(10), |d| {
            (d.len("Logical_Router") == 2).then_some(())
        })
        .await
        .expect("replica sees manual rows");
    assert!(sync.diff(&a).is_empty(), "foreign rows caused changes");

    // crash while applying B: pods moved, added, removed; only 2 batches land
    let b = cluster(&[(1, 5), (0, 9), (0, 10), (0, 11)], false);
    let d = sync.diff(&b);
    let txns = to_transactions(&d, "OVN_Northbound", 2);
    assert!(txns.len() > 2, "need several batches, have {}", txns.len());
    let part = apply(&sync.client, &d, &txns[..2])
        .await
        .expect("partial apply");
    sync.replica
        .wait_for(std::time::Duration::from_secs(10), |data| {
            part.created
                .iter()
                .all(|(t, u)| data.row(t.name(), u).is_some())
                .then_some(())
        })
        .await
        .expect("replica caught up");
    // the next pass repairs it and the one after is empty
    sync.sync(&b).await.expect("repair");
    let (d, _) = sync.sync(&b).await.expect("after repair");
    assert!(d.is_empty(), "{:#?}", d.changes);
    let addr = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "p0.ns", "addresses"],
    );
    assert!(addr.contains("10.2.0.5"), "p0 moved to s1: {addr}");
    assert!(nbctl(&central, &["lsp-list", "s1"]).contains("p0.ns"));
    assert!(!nbctl(&central, &["lsp-list", "s0"]).contains("p0.ns"));
    // only the conntrack bypass (plan::ctbypass, allow-stateless) may remain
    assert!(
        nbctl(&central, &["acl-list", "s1"])
            .lines()
            .all(|l| l.contains("allow-stateless")),
        "s1 is public now"
    );
    let ports = nbctl(&central, &["--columns=name", "list", "Logical_Switch_Port"]);
    assert!(!ports.contains("p2.ns") || ports.contains("p3.ns"));
    for p in ["p1.ns", "p2.ns", "p3.ns"] {
        assert!(ports.contains(p), "{p} missing: {ports}");
    }

    // foreign rows are all still there, untouched
    let show = nbctl(&central, &["show"]);
    assert!(
        show.contains("manual-ls") && show.contains("manual-lr"),
        "{show}"
    );
    let manual = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "manual-port", "addresses"],
    );
    assert!(manual.contains("10.1.0.99"));
    assert!(nbctl(&central, &["lsp-list", "s0"]).contains("manual-port"));

    // the plan disappears: our rows go; s0 still holds manual-port, so it stays (reported)
    let (d, _) = sync.sync(&NbPlan::default()).await.expect("remove all");
    assert_eq!(d.conflicts.len(), 1, "{:?}", d.conflicts);
    let show = nbctl(&central, &["show"]);
    assert!(!show.contains("ovn-cluster"), "{show}");
    assert!(
        show.contains("manual-port") && show.contains("manual-ls"),
        "{show}"
    );
    assert!(!show.contains("p1.ns"), "{show}");
}

/// `(uuid, tier)` of every ACL, sorted by uuid.
fn acl_tiers(c: &OvnCentral) -> Vec<(String, String)> {
    let out = nbctl(
        c,
        &[
            "--bare",
            "--columns=_uuid,tier",
            "--format=csv",
            "list",
            "ACL",
        ],
    );
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(u, t)| (u.to_string(), t.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_zero_acls_of_an_older_controller_move_to_tier_two_in_place() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 100)
        .await
        .expect("NB");

    // what a controller without the tier column left behind: the same ACLs in tier 0
    let now = cluster(&[(1, 5)], true);
    let mut old = now.clone();
    for sw in old.switches.values_mut() {
        for a in sw.acls.values_mut() {
            a.tier = 0;
        }
    }
    sync.sync(&old).await.expect("old controller");
    let before = acl_tiers(&central);
    // private s1: the drop, the same-subnet allow and the join allow
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|(_, t)| t == "0"), "{before:?}");

    // the upgraded controller's first pass: only updates, one per ACL
    let (d, _) = sync.sync(&now).await.expect("upgraded controller");
    assert_eq!(d.counts(), (0, before.len(), 0), "{:#?}", d.changes);
    let after = acl_tiers(&central);
    assert_eq!(
        after.iter().map(|(u, _)| u).collect::<Vec<_>>(),
        before.iter().map(|(u, _)| u).collect::<Vec<_>>(),
        "same rows, updated in place"
    );
    assert!(after.iter().all(|(_, t)| t == "2"), "{after:?}");

    // a second restart changes nothing
    let (d, report) = sync.sync(&now).await.expect("second restart");
    assert!(d.is_empty(), "{:#?}", d.changes);
    assert_eq!(report.operations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn northd_builds_flows_from_planned_rows() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 100)
        .await
        .expect("NB");
    let a = cluster(&[(0, 5), (1, 7)], true);
    sync.sync(&a).await.expect("sync");
    central.sync_sb().expect("northd caught up");
    let flows = central.sbctl(&["lflow-list"]).expect("lflow-list");
    // port security and ARP responder flows carry the pod's address; the router its gateway
    assert!(flows.contains("10.1.0.5"), "no flow for p0's address");
    assert!(flows.contains("10.2.0.7"), "no flow for p1's address");
    assert!(flows.contains("10.1.0.1"), "no flow for the s0 gateway");
    let bindings = central
        .sbctl(&["--columns=logical_port", "list", "Port_Binding"])
        .expect("port bindings");
    assert!(bindings.contains("p0.ns") && bindings.contains("ovn-cluster-s1"));
}
