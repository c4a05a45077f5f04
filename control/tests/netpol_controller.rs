//! NetworkPolicy through the controller (manifest mode) into a real OVN central: policies, pod
//! labels and named ports and namespace labels become port groups, address sets and ACLs; a bad
//! policy is reported naming its field while everything else is applied; a label change is a
//! small NB change, found by a scoped diff; a restarted controller changes nothing.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use ferrovn_control::controller::{Controller, ControllerOptions};
use ferrovn_testkit::ovsdb::OvnCentral;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec:
  nodeName: n1
  containers: [{name: pg, image: pg, ports: [{name: sql, containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: prom, namespace: ops, labels: {app: prometheus}}
spec: {nodeName: n1, containers: [{name: prom, image: prom}]}
"#;

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: sql}]
  - from: [{namespaceSelector: {matchLabels: {team: ops}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: ops}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Near, values: [x]}]}
  ingress: [{}]
"#;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_applies_network_policies_and_restarts_without_changes() {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    let state = tmp.path().join("state");
    fs::create_dir_all(&manifests).unwrap();
    write(&manifests, "00-cluster.yaml", CLUSTER);
    write(&manifests, "10-policies.yaml", POLICIES);
    let options = ControllerOptions::new(central.nb_remote(), &manifests, &state);

    let mut c = Controller::connect(options.clone()).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    // The bad selector is named by field; it closes its namespace instead of opening it.
    assert_eq!(
        r.issues,
        vec![
            "NetworkPolicy ops/bad: spec.podSelector.matchExpressions[0]: unknown operator \
             \"Near\" (In, NotIn, Exists, DoesNotExist) (applied to every pod of ops)"
                .to_string()
        ]
    );
    let pg = nbctl(
        &central,
        &["--bare", "--columns=name", "list", "Port_Group"],
    );
    let mut names: Vec<&str> = pg.split_whitespace().collect();
    names.sort();
    // The conntrack bypass of the pods no policy selects (web-0) is a port group too.
    assert_eq!(
        names,
        vec!["ctbypass.ovn_default", "np.ops.bad", "np.shop.db"]
    );
    let ports = nbctl(&central, &["get", "Port_Group", "np.shop.db", "ports"]);
    let db_port = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "db-0.shop", "_uuid"],
    );
    assert_eq!(
        ports.trim_matches(|c| c == '[' || c == ']' || c == '\n'),
        db_port.trim()
    );
    // The named port resolved to the pod's 5432; web's address is in the peer set.
    let acls = nbctl(
        &central,
        &["--bare", "--columns=match", "find", "ACL", "tier=2"],
    );
    assert!(acls.contains("np.port.sql.tcp.5432.ip4"), "{acls}");
    let web_ip = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "web-0.shop", "addresses"],
    );
    let web_ip = web_ip
        .trim()
        .trim_matches(|c| c == '[' || c == ']' || c == '"');
    let web_ip = web_ip.split_whitespace().nth(1).unwrap().to_string();
    let sets = nbctl(
        &central,
        &["--bare", "--columns=name,addresses", "list", "Address_Set"],
    );
    assert!(sets.contains(&web_ip), "{sets}");
    // Kubelet probes: the node's join address is allowed into isolated pods.
    assert!(sets.contains("np.nodes.ip4"), "{sets}");

    // Nothing changed: nothing written.
    let again = c.pass().await.expect("second pass");
    assert_eq!(again.nb_operations, 0, "{again:?}");

    // A restarted controller (new process state, same state directory) writes nothing.
    drop(c);
    let mut c = Controller::connect(options.clone())
        .await
        .expect("reconnect");
    let r = c.pass().await.expect("pass after restart");
    assert_eq!(r.nb_operations, 0, "{r:?}");

    // web-0 loses its label: one address set update, nothing else.
    let relabelled = CLUSTER.replace("labels: {app: web}", "labels: {app: shop}");
    write(&manifests, "00-cluster.yaml", &relabelled);
    let r = c.pass().await.expect("label change");
    assert_eq!(
        (r.nb_inserts, r.nb_updates, r.nb_removals),
        (0, 1, 0),
        "{r:?}"
    );
    assert!(
        r.nb_diff_scoped,
        "a label change diffs only the rows it touches: {r:?}"
    );
    let sets = nbctl(
        &central,
        &["--bare", "--columns=name,addresses", "list", "Address_Set"],
    );
    assert!(!sets.contains(&web_ip), "{sets}");

    // Policies removed: their rows go, pods stay.
    fs::remove_file(manifests.join("10-policies.yaml")).unwrap();
    let r = c.pass().await.expect("policies deleted");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert!(
        nbctl(
            &central,
            &["--bare", "--columns=name", "list", "Port_Group"]
        )
        .trim()
        .is_empty()
    );
    assert!(
        nbctl(
            &central,
            &["--bare", "--columns=name", "list", "Address_Set"]
        )
        .trim()
        .is_empty()
    );
    assert!(nbctl(&central, &["lsp-list", "ovn-default"]).contains("db-0.shop"));
}
