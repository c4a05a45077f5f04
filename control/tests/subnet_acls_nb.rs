//! Subnet `spec.acls` against a real OVN central: each entry is one owned ACL on the subnet's
//! switch in tier 2 (NetworkPolicy's tier, as in Kube-OVN); a second pass writes nothing; an
//! edited entry replaces its row, a removed entry's row goes; an ACL someone added by hand to
//! the same switch is never touched; northd turns the rows into logical flows of their tier.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use ferrovn_control::plan::{AclIntent, NbPlan, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::ovsdb::OvnCentral;

fn cluster(acls: &[(&str, i64, &str, &str)]) -> NbPlan {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    let s = d
        .subnets
        .iter_mut()
        .find(|s| s.name == "ovn-default")
        .unwrap();
    s.acls = acls
        .iter()
        .map(|(direction, priority, m, action)| AclIntent {
            direction: direction.to_string(),
            priority: *priority,
            match_: m.to_string(),
            action: action.to_string(),
        })
        .collect();
    plan(&d)
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

/// (direction, priority, tier, action, match, owned) of every ACL of the switch, sorted.
fn acls(c: &OvnCentral) -> Vec<(String, i64, i64, String, String, bool)> {
    let uuids = nbctl(c, &["get", "Logical_Switch", "ovn-default", "acls"]);
    let mut out: Vec<_> = uuids
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|u| !u.is_empty())
        .map(|u| {
            let get = |col: &str| nbctl(c, &["get", "ACL", u, col]).trim().to_string();
            (
                get("direction"),
                get("priority").parse().unwrap(),
                get("tier").parse().unwrap(),
                get("action"),
                get("match").trim_matches('"').replace("\\\"", "\""),
                get("external_ids").contains("\"ferrovn.io/owner\"=ferrovn"),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_acls_are_owned_rows_in_tier_2() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 100)
        .await
        .expect("NB");

    let a = cluster(&[
        ("to-lport", 1005, "ip4.src == 10.16.0.2", "drop"),
        ("from-lport", 2500, "ip4.dst == 8.8.8.8", "allow-related"),
    ]);
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    sync.sync(&a).await.expect("sync");
    let row = |d: &str, p: i64, action: &str, m: &str, owned: bool| {
        (
            d.to_string(),
            p,
            2,
            action.to_string(),
            m.to_string(),
            owned,
        )
    };
    assert_eq!(
        acls(&central),
        [
            row(
                "from-lport",
                2500,
                "allow-related",
                "ip4.dst == 8.8.8.8",
                true
            ),
            row("to-lport", 1005, "drop", "ip4.src == 10.16.0.2", true),
        ]
    );
    let (d, report) = sync.sync(&a).await.expect("sync again");
    assert!(d.is_empty(), "{:#?}", d.changes);
    assert_eq!(report.operations, 0);

    // Someone's own ACL on the same switch.
    nbctl(
        &central,
        &[
            "acl-add",
            "ovn-default",
            "to-lport",
            "1200",
            "ip4.src == 10.16.0.9",
            "drop",
        ],
    );

    // One entry edited (new priority), the other removed.
    let b = cluster(&[("to-lport", 1006, "ip4.src == 10.16.0.2", "drop")]);
    sync.sync(&b).await.expect("sync edited");
    assert_eq!(
        acls(&central),
        [
            row("to-lport", 1006, "drop", "ip4.src == 10.16.0.2", true),
            (
                "to-lport".into(),
                1200,
                0,
                "drop".into(),
                "ip4.src == 10.16.0.9".into(),
                false
            ),
        ]
    );

    // northd: the owned entry is a logical flow of tier 2 in the switch's egress ACL stage.
    central.sync_sb().expect("northd caught up");
    let flows = central
        .sbctl(&["lflow-list", "ovn-default"])
        .expect("lflow-list");
    assert!(
        flows.contains("ip4.src == 10.16.0.2"),
        "no logical flow of the subnet ACL:\n{flows}"
    );

    // All entries removed: only the hand-made ACL stays.
    sync.sync(&cluster(&[])).await.expect("sync removed");
    assert_eq!(
        acls(&central),
        [(
            "to-lport".into(),
            1200,
            0,
            "drop".into(),
            "ip4.src == 10.16.0.9".into(),
            false
        )]
    );
}
