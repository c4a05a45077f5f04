//! NetworkPolicy rows through the reconciler into a real OVN 25.03 NB: port groups with their
//! ACLs and address sets are created, updated by minimal diffs and deleted; a port group can
//! name pod ports created in the same pass (even in an earlier, separate transaction batch);
//! a pod label change touches only the address sets and port groups that gain or lose the pod;
//! a bad policy is reported by field and the rest is applied; a reconnect (restart) changes
//! nothing.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ferrovn_control::plan::netpol::{PolicyInput, PolicyNamespace, PolicyPod};
use ferrovn_control::plan::{Desired, NbPlan, NodeIntent, PlanIssue, PortIntent, plan};
use ferrovn_control::reconcile::{Change, NbSync, Table};
use ferrovn_testkit::ovsdb::OvnCentral;
use k8s_openapi::api::networking::v1::NetworkPolicy;

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-frontend, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-ops, namespace: y}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: ops}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: not-a-cidr}}]
  - to: [{ipBlock: {cidr: 192.0.2.0/24}}]
"#;

/// (namespace, pod, labels, last address byte)
type PodRow = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u8,
);

const PODS: [PodRow; 5] = [
    ("x", "web-1", &[("app", "web")], 10),
    ("x", "front-1", &[("role", "frontend")], 11),
    ("x", "front-2", &[("role", "frontend")], 12),
    ("y", "db-1", &[("app", "db")], 20),
    ("z", "tool", &[], 30),
];

fn policies() -> Vec<NetworkPolicy> {
    serde_norway::Deserializer::from_str(POLICIES)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn desired(pods: &[PodRow], labels_of: &BTreeMap<&str, Vec<(&str, &str)>>) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    d.nodes.push(NodeIntent {
        name: "n1".into(),
        join_ips: vec!["100.64.0.2".parse().unwrap()],
        join_mac: Some(MacAddr([0x0e, 0, 0, 0, 1, 1])),
        internal_ips: vec!["172.18.0.2".parse().unwrap()],
    });
    let mut input = PolicyInput {
        policies: policies(),
        node_ips: vec!["100.64.0.2".parse().unwrap()],
        namespaces: vec![PolicyNamespace {
            name: "z".into(),
            labels: BTreeMap::from([("team".into(), "ops".into())]),
        }],
        ..PolicyInput::default()
    };
    for (ns, pod, labels, host) in pods {
        let ip: IpAddr = format!("10.16.0.{host}").parse().unwrap();
        d.ports.push(PortIntent {
            pod: pod.to_string(),
            namespace: ns.to_string(),
            provider: "ovn".into(),
            subnet: "ovn-default".into(),
            node: "n1".into(),
            mac: MacAddr([0x0e, 0, 0, 0, 0, *host]),
            ips: vec![ip],
            port_security: true,
        });
        let labels = labels_of
            .get(pod)
            .cloned()
            .unwrap_or_else(|| labels.to_vec());
        input.pods.push(PolicyPod {
            namespace: ns.to_string(),
            name: pod.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: format!("{pod}.{ns}"),
            ips: vec![ip],
            named_ports: Vec::new(),
        });
    }
    d.network_policy = input;
    d
}

/// Port group name → names of its ports, as the NB holds them.
fn port_groups(central: &OvnCentral) -> BTreeMap<String, BTreeSet<String>> {
    let lsp: BTreeMap<String, String> = central
        .nbctl(&[
            "--bare",
            "--columns=_uuid,name",
            "list",
            "Logical_Switch_Port",
        ])
        .unwrap()
        .split("\n\n")
        .filter_map(|b| {
            let mut l = b.lines().map(str::trim).filter(|l| !l.is_empty());
            Some((l.next()?.to_string(), l.next()?.to_string()))
        })
        .collect();
    central
        .nbctl(&["--bare", "--columns=name,ports", "list", "Port_Group"])
        .unwrap()
        .split("\n\n")
        .filter_map(|b| {
            let mut l = b.lines().map(str::trim).filter(|l| !l.is_empty());
            let name = l.next()?.to_string();
            let ports = l
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(|u| lsp.get(u).cloned().unwrap_or_else(|| format!("?{u}")))
                .collect();
            Some((name, ports))
        })
        .collect()
}

fn address_set(central: &OvnCentral, name: &str) -> BTreeSet<String> {
    let out = central
        .nbctl(&[
            "--bare",
            "--columns=addresses",
            "find",
            "Address_Set",
            &format!("name={name}"),
        ])
        .unwrap();
    out.split_whitespace()
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

/// The name of the address set of the peer `role=frontend` in `x`.
fn frontend_set(p: &NbPlan) -> String {
    p.address_sets
        .values()
        .find(|s| {
            s.external_ids
                .get("np-peer")
                .is_some_and(|c| c.contains("role in (frontend)"))
        })
        .unwrap()
        .name
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_rows_reconciled_minimal_and_idempotent() {
    let central = OvnCentral::start().expect("OVN central");
    // One change per transaction: a port group's ports then name pod ports that were inserted
    // by earlier, separate transactions of the same pass.
    let sync = NbSync::connect(&central.nb_remote(), 1).await.expect("NB");
    let none = BTreeMap::new();
    let p1 = plan(&desired(&PODS, &none));

    // The bad policy is reported by field; its good rule and every other policy are planned.
    let bad: Vec<String> = p1
        .issues
        .iter()
        .filter_map(|i| match i {
            PlanIssue::NetworkPolicy(e) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        bad,
        vec![
            r#"NetworkPolicy y/broken: spec.egress[0].to[0].ipBlock.cidr: "not-a-cidr" is not a CIDR"#
        ]
    );

    let (d, _) = sync.sync(&p1).await.expect("first sync");
    assert!(d.conflicts.is_empty(), "{:?}", d.conflicts);
    let pgs = port_groups(&central);
    assert_eq!(
        pgs.get("np.x.web_from_frontend"),
        Some(&BTreeSet::from(["web-1.x".to_string()])),
        "{pgs:?}"
    );
    assert_eq!(
        pgs.get("np.y.db_from_ops"),
        Some(&BTreeSet::from(["db-1.y".to_string()]))
    );
    assert_eq!(
        pgs.get("np.y.broken"),
        Some(&BTreeSet::from(["db-1.y".to_string()]))
    );
    let front = frontend_set(&p1);
    assert_eq!(
        address_set(&central, &front),
        BTreeSet::from(["10.16.0.11".to_string(), "10.16.0.12".to_string()])
    );
    // ACLs hang off the port groups, in tier 2; the broken rule is left out, the good one is in.
    let acls = central
        .nbctl(&["--bare", "--columns=match", "find", "ACL", "tier=2"])
        .unwrap();
    assert!(
        acls.contains("inport == @np.y.broken && ip && (ip4.dst == 192.0.2.0/24)"),
        "{acls}"
    );
    assert!(!acls.contains("not-a-cidr"));
    let pg_acls = central
        .nbctl(&[
            "--bare",
            "--columns=acls",
            "find",
            "Port_Group",
            "name=np.y.broken",
        ])
        .unwrap();
    assert_eq!(
        pg_acls.split_whitespace().count(),
        3,
        "drop + one allow + the node allow (stateful replies)"
    );

    // Converged, and a new connection (a restarted controller) finds nothing to do.
    assert!(sync.diff(&p1).is_empty(), "{:?}", sync.diff(&p1).changes);
    let restarted = NbSync::connect(&central.nb_remote(), 1000)
        .await
        .expect("NB");
    assert!(restarted.diff(&p1).is_empty());

    // A label change: front-2 stops being a frontend. Only the frontend peer's set changes: no
    // ACL, no port group, no other set.
    let relabel = BTreeMap::from([("front-2", vec![("role", "backend")])]);
    let p2 = plan(&desired(&PODS, &relabel));
    let d2 = restarted.diff(&p2);
    let touched: Vec<(Table, String)> = d2
        .changes
        .iter()
        .map(|c| (c.table(), c.key().to_string()))
        .collect();
    assert_eq!(
        touched,
        vec![(Table::AddressSet, format!("as/{front}"))],
        "{:?}",
        d2.changes
    );
    restarted.sync(&p2).await.expect("label change");
    assert_eq!(
        address_set(&central, &front),
        BTreeSet::from(["10.16.0.11".to_string()])
    );

    // A label change that moves a pod into a policy's selection: only port group members
    // move: the pod joins that policy's port group and leaves the conntrack bypass's
    // (plan::ctbypass), two Link changes and nothing else.
    let relabel = BTreeMap::from([
        ("front-2", vec![("role", "backend")]),
        ("front-1", vec![("role", "frontend"), ("app", "web")]),
    ]);
    let p3 = plan(&desired(&PODS, &relabel));
    let d3 = restarted.diff(&p3);
    let links: Vec<(Table, &str, usize, usize)> = d3
        .changes
        .iter()
        .map(|c| match c {
            Change::Link {
                table,
                key,
                add,
                remove,
                ..
            } => (*table, key.as_str(), add.len(), remove.len()),
            other => panic!("expected port group link changes only, got {other:?}"),
        })
        .collect();
    assert_eq!(
        links,
        vec![
            (Table::PortGroup, "pg/ctbypass.ovn_default", 0, 1),
            (Table::PortGroup, "pg/np.x.web_from_frontend", 1, 0),
        ],
        "{:?}",
        d3.changes
    );
    restarted.sync(&p3).await.expect("pod joins a port group");
    assert_eq!(
        port_groups(&central).get("np.x.web_from_frontend"),
        Some(&BTreeSet::from([
            "web-1.x".to_string(),
            "front-1.x".to_string()
        ]))
    );

    // A new pod and the policy selecting it in the same pass.
    let mut more = PODS.to_vec();
    more.push(("x", "web-2", &[("app", "web")], 13));
    let p4 = plan(&desired(&more, &relabel));
    sync.sync(&p4).await.expect("new pod");
    assert!(
        port_groups(&central)["np.x.web_from_frontend"].contains("web-2.x"),
        "the port group names the port created in the same pass"
    );

    // A deleted pod leaves its port groups; deleted policies take their port groups, ACLs and
    // the sets no other policy uses.
    let mut d5 = desired(&PODS[..4], &relabel);
    d5.network_policy
        .policies
        .retain(|p| p.metadata.name.as_deref() == Some("broken"));
    let p5 = plan(&d5);
    sync.sync(&p5).await.expect("policies deleted");
    let pgs = port_groups(&central);
    assert_eq!(
        pgs.keys().collect::<Vec<_>>(),
        vec!["ctbypass.ovn_default", "np.y.broken"],
        "the policy's group, and the conntrack bypass's of the pods it does not select"
    );
    let acl_count = central
        .nbctl(&["--bare", "--columns=_uuid", "find", "ACL", "tier=2"])
        .unwrap()
        .split_whitespace()
        .count();
    assert_eq!(acl_count, 3);
    assert!(address_set(&central, &front).is_empty());
    assert!(
        !central
            .nbctl(&["--bare", "--columns=name", "list", "Address_Set"])
            .unwrap()
            .contains(&front),
        "the frontend set is gone with its last policy"
    );

    // The NB accepted all of it and northd compiled it.
    central.sync_sb().expect("northd caught up");
    assert!(sync.diff(&p5).is_empty());
}
