//! SecurityGroups through the controller (manifest mode) into a real OVN central: groups and
//! the pods' `ovn.kubernetes.io/security_groups` annotations become port groups, address sets
//! and ACLs; a bad group is reported naming its field while every other group is applied; an
//! annotation change moves the pod between groups with a small, scoped NB change; a restarted
//! controller changes nothing; removed groups leave no rows.

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
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, annotations: {ovn.kubernetes.io/security_groups: web}}
spec: {nodeName: n1, containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: shop, annotations: {ovn.kubernetes.io/security_groups: "clients, broken"}}
spec: {nodeName: n1, containers: [{name: c, image: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop}
spec: {nodeName: n1, containers: [{name: o, image: o}]}
---
apiVersion: v1
kind: Pod
metadata: {name: bystander, namespace: shop}
spec: {nodeName: n1, containers: [{name: b, image: b}]}
"#;

const GROUPS: &str = r#"
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata: {name: web}
spec:
  ingressRules:
  - {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 80, remoteType: securityGroup, remoteSecurityGroup: clients, policy: allow, priority: 10}
---
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata: {name: clients}
spec:
  egressRules:
  - {ipVersion: ipv4, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}
---
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata: {name: broken}
spec:
  ingressRules:
  - {ipVersion: ipv4, remoteType: address, remoteAddress: 10.0.0.0/8, policy: permit, priority: 1}
"#;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

fn pod_ip(c: &OvnCentral, lsp: &str) -> String {
    let a = nbctl(c, &["get", "Logical_Switch_Port", lsp, "addresses"]);
    a.trim()
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn set(c: &OvnCentral, name: &str) -> String {
    nbctl(c, &["get", "Address_Set", name, "addresses"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_applies_security_groups_and_follows_annotations() {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    let state = tmp.path().join("state");
    fs::create_dir_all(&manifests).unwrap();
    write(&manifests, "00-cluster.yaml", CLUSTER);
    write(&manifests, "10-groups.yaml", GROUPS);
    let options = ControllerOptions::new(central.nb_remote(), &manifests, &state);

    let mut c = Controller::connect(options.clone()).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    assert_eq!(r.issues.len(), 1, "{:?}", r.issues);
    assert!(
        r.issues[0].starts_with("SecurityGroup broken: spec.ingressRules[0].policy: \"permit\""),
        "{:?}",
        r.issues
    );
    let mut names: Vec<String> = nbctl(
        &central,
        &["--bare", "--columns=name", "list", "Port_Group"],
    )
    .split_whitespace()
    .map(str::to_string)
    .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ctbypass.ovn_default",
            "sg.broken",
            "sg.clients",
            "sg.web",
            "sg_deny_all"
        ]
    );
    let web_ip = pod_ip(&central, "web-0.shop");
    let client_ip = pod_ip(&central, "client-0.shop");
    assert!(set(&central, "sg.web.ip4").contains(&web_ip));
    assert!(set(&central, "sg.clients.ip4").contains(&client_ip));
    let acls = nbctl(&central, &["acl-list", "sg.web"]);
    assert!(
        acls.contains("outport == @sg.web && ip4 && ip4.src == $sg.clients.ip4 && tcp.dst == 80"),
        "{acls}"
    );
    // The broken group applies no rule (only its DHCP / VRRP allows).
    let broken = nbctl(&central, &["acl-list", "sg.broken"]);
    assert!(!broken.contains("10.0.0.0/8"), "{broken}");
    let deny = nbctl(&central, &["get", "Port_Group", "sg_deny_all", "ports"]);
    let members = deny
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .count();
    assert_eq!(members, 2, "web-0 and client-0: {deny}");

    // Nothing changed: nothing written; a restarted controller writes nothing either.
    let again = c.pass().await.expect("second pass");
    assert_eq!(again.nb_operations, 0, "{again:?}");
    drop(c);
    let mut c = Controller::connect(options.clone())
        .await
        .expect("reconnect");
    let r = c.pass().await.expect("pass after restart");
    assert_eq!(r.nb_operations, 0, "{r:?}");

    // `other` joins clients: its port and address move into the group's rows, scoped.
    let joined = CLUSTER.replace(
        "metadata: {name: other, namespace: shop}",
        "metadata: {name: other, namespace: shop, annotations: {ovn.kubernetes.io/security_groups: clients}}",
    );
    write(&manifests, "00-cluster.yaml", &joined);
    let r = c.pass().await.expect("annotation change");
    assert_eq!(r.nb_inserts + r.nb_removals, 0, "{r:?}");
    assert!(r.nb_updates >= 2 && r.nb_updates <= 4, "{r:?}");
    assert!(r.nb_diff_scoped, "{r:?}");
    let other_ip = pod_ip(&central, "other.shop");
    assert!(set(&central, "sg.clients.ip4").contains(&other_ip));

    // client-0 leaves clients.
    let left = joined.replace("\"clients, broken\"", "broken");
    write(&manifests, "00-cluster.yaml", &left);
    let r = c.pass().await.expect("annotation change");
    assert_eq!(r.nb_inserts + r.nb_removals, 0, "{r:?}");
    assert!(!set(&central, "sg.clients.ip4").contains(&client_ip));

    // Groups and annotations removed: their rows go, pods stay.
    fs::remove_file(manifests.join("10-groups.yaml")).unwrap();
    write(
        &manifests,
        "00-cluster.yaml",
        CLUSTER
            .replace(
                ", annotations: {ovn.kubernetes.io/security_groups: web}",
                "",
            )
            .replace(
                ", annotations: {ovn.kubernetes.io/security_groups: \"clients, broken\"}",
                "",
            )
            .as_str(),
    );
    let r = c.pass().await.expect("groups deleted");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    let pgs = nbctl(
        &central,
        &["--bare", "--columns=name", "list", "Port_Group"],
    );
    assert!(!pgs.contains("sg"), "{pgs}");
    assert!(
        nbctl(
            &central,
            &["--bare", "--columns=name", "list", "Address_Set"]
        )
        .trim()
        .is_empty()
    );
    assert!(nbctl(&central, &["lsp-list", "ovn-default"]).contains("web-0.shop"));
}
