//! AdminNetworkPolicy / BaselineAdminNetworkPolicy through the controller (manifest mode) into a
//! real OVN central: the policies become tier 1 / tier 3 port groups, ACLs and address sets next
//! to NetworkPolicy's tier 2 rows; a bad ANP is reported naming its field while the others are
//! applied; a restarted controller changes nothing; deleting the policies removes their rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use ferrovn_control::controller::{Controller, ControllerOptions};
use ferrovn_testkit::ovsdb::OvnCentral;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {node-role.kubernetes.io/control-plane: ""}}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: vault, labels: {security: restricted}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: vault-0, namespace: vault}
spec: {nodeName: n1, containers: [{name: v, image: v}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, image: web}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
"#;

const ADMIN: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: restricted}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {security: restricted}}}
  ingress:
  - {name: shop-passes, action: Pass, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}]}
  - {name: rest, action: Deny, from: [{namespaces: {}}]}
  egress:
  - {name: no-cp, action: Deny, to: [{nodes: {matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: too-low}
spec:
  priority: 1001
  subject: {namespaces: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {matchLabels: {security: restricted}}}]}
"#;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

fn names(c: &OvnCentral, table: &str) -> Vec<String> {
    let mut v: Vec<String> = nbctl(c, &["--bare", "--columns=name", "list", table])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_applies_admin_policies_in_their_tiers() {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    let state = tmp.path().join("state");
    fs::create_dir_all(&manifests).unwrap();
    write(&manifests, "00-cluster.yaml", CLUSTER);
    write(&manifests, "10-admin.yaml", ADMIN);
    let options = ControllerOptions::new(central.nb_remote(), &manifests, &state);

    let mut c = Controller::connect(options.clone()).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    assert_eq!(
        r.issues,
        vec!["AdminNetworkPolicy too-low: spec.priority: 1001 is outside 0..=1000".to_string()]
    );
    assert_eq!(
        names(&central, "Port_Group"),
        ["anp.restricted", "banp.default", "np.shop.web"]
    );
    let vault = nbctl(
        &central,
        &["get", "Logical_Switch_Port", "vault-0.vault", "_uuid"],
    );
    let members = nbctl(&central, &["get", "Port_Group", "anp.restricted", "ports"]);
    assert_eq!(
        members.trim_matches(|c| c == '[' || c == ']' || c == '\n'),
        vault.trim()
    );
    // Tier 1: pass at 30000, drop at 29999, egress drop at 30000, node allow at 32000.
    let tier1 = nbctl(
        &central,
        &[
            "--bare",
            "--columns=priority,action",
            "find",
            "ACL",
            "tier=1",
        ],
    );
    let mut tier1: Vec<&str> = tier1.split_whitespace().collect();
    tier1.sort();
    assert_eq!(
        tier1,
        [
            "29999",
            "30000",
            "30000",
            "32000",
            "allow-related",
            "drop",
            "drop",
            "pass"
        ]
    );
    let tier3 = nbctl(
        &central,
        &[
            "--bare",
            "--columns=priority,action",
            "find",
            "ACL",
            "tier=3",
        ],
    );
    let mut tier3: Vec<&str> = tier3.split_whitespace().collect();
    tier3.sort();
    assert_eq!(tier3, ["1800", "32000", "allow-related", "drop"]);
    // The control-plane node's addresses (InternalIP and join) are in the nodes set.
    let sets = nbctl(
        &central,
        &["--bare", "--columns=name,addresses", "list", "Address_Set"],
    );
    assert!(sets.contains("172.18.0.2"), "{sets}");
    assert!(sets.contains("anp.kubelet.ip4"), "{sets}");

    // Nothing changed: nothing written; a restarted controller writes nothing either.
    let again = c.pass().await.expect("second pass");
    assert_eq!(again.nb_operations, 0, "{again:?}");
    drop(c);
    let mut c = Controller::connect(options.clone())
        .await
        .expect("reconnect");
    let r = c.pass().await.expect("pass after restart");
    assert_eq!(r.nb_operations, 0, "{r:?}");

    // Admin policies removed: their rows go, NetworkPolicy's stay.
    fs::remove_file(manifests.join("10-admin.yaml")).unwrap();
    let r = c.pass().await.expect("admin policies deleted");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    // (the NetworkPolicy's pods keep their switch's conntrack bypass port group)
    assert_eq!(
        names(&central, "Port_Group"),
        ["ctbypass.ovn_default", "np.shop.web"]
    );
    assert!(
        names(&central, "Address_Set")
            .iter()
            .all(|n| !n.starts_with("anp.")),
        "{:?}",
        names(&central, "Address_Set")
    );
    assert!(
        nbctl(
            &central,
            &["--bare", "--columns=_uuid", "find", "ACL", "tier=1"]
        )
        .trim()
        .is_empty()
    );
}
