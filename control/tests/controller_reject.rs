//! One bad object never stalls the cluster: every object is validated before planning, an
//! invalid one is left out with errors naming object, field and value, and everything else
//! still makes it into the plan. The pure tests read manifests into a `Cluster` and a plan; the
//! last one applies a batch with a bad Vpc and a bad Vlan to a real OVN NB.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_api::validate::ValidationError;
use ferrovn_control::controller::Rejection;
use ferrovn_control::controller::desired::{self, BuildOptions, Cluster};
use ferrovn_control::manifest::load_str;

fn cluster(yaml: &str) -> Cluster {
    let m = load_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("manifest: {e}"));
    desired::read_cluster(&m, &BuildOptions::default())
}

fn rejection<'a>(c: &'a Cluster, kind: &str, name: &str) -> &'a Rejection {
    c.rejected
        .iter()
        .find(|r| r.object.kind == kind && r.object.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} not rejected; rejected: {:#?}", c.rejected))
}

const GOOD: &str = r#"
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: team-a}
spec: {cidrBlock: 10.66.0.0/16, namespaces: [team-a]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: team-a}
spec: {nodeName: node1, containers: [{name: c, image: busybox}]}
"#;

fn with_good(bad: &str) -> String {
    format!("{GOOD}---\n{bad}")
}

/// The good part of every test: team-a and its pod are planned.
fn assert_good_survives(c: &Cluster) {
    assert!(
        c.subnets.contains_key("team-a"),
        "team-a missing: {:#?}",
        c.issues
    );
    assert!(
        c.interfaces.iter().any(|i| i.name == "web-0"),
        "web-0 missing: {:#?}",
        c.issues
    );
}

#[test]
fn vpc_policy_priority_out_of_ovn_range_is_left_out_but_its_router_stays() {
    let c = cluster(&with_good(
        r#"
apiVersion: kubeovn.io/v1
kind: Vpc
metadata: {name: blue}
spec:
  policyRoutes:
  - {priority: 40000, match: "ip4.src == 10.0.0.0/8", action: drop}
  - {priority: 100, match: "ip4.src == 10.1.0.0/16", action: allow}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: blue-net}
spec: {vpc: blue, cidrBlock: 10.77.0.0/24}
"#,
    ));
    assert_good_survives(&c);
    let r = rejection(&c, "Vpc", "blue");
    assert_eq!(
        r.message(),
        "Vpc blue: spec.policyRoutes[0].priority 40000 is out of range 0..32767"
    );
    // The router is kept bare (no policy reaches the NB) so blue-net keeps working.
    let blue = c.vpcs.get("blue").expect("blue router kept");
    assert!(blue.spec.policy_routes.is_empty());
    assert!(c.subnets.contains_key("blue-net"));
    let d = desired::desired(&c, &[]);
    let plan = ferrovn_control::plan::plan(&d);
    assert!(plan.routers.contains_key("blue"), "{:#?}", plan.issues);
    assert!(plan.routers["blue"].policies.is_empty());
}

#[test]
fn vlan_ids_outside_0_to_4095_are_rejected_and_never_become_untagged() {
    for (id, shown) in [("5000", "5000"), ("-1", "-1")] {
        let c = cluster(&with_good(&format!(
            r#"
apiVersion: kubeovn.io/v1
kind: Vlan
metadata: {{name: vlan10}}
spec: {{id: {id}, provider: physnet}}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {{name: underlay}}
spec: {{cidrBlock: 192.168.10.0/24, vlan: vlan10}}
"#
        )));
        assert_good_survives(&c);
        let r = rejection(&c, "Vlan", "vlan10");
        assert_eq!(
            r.message(),
            format!("Vlan vlan10: spec.id {shown} is out of range 0..4095")
        );
        assert!(!c.vlans.contains_key("vlan10"));
        // The underlay subnet cannot be built without its tag: rejected, not made an overlay.
        let s = rejection(&c, "Subnet", "underlay");
        assert!(
            matches!(&s.errors[0], ValidationError::UnknownReference { field, name, .. }
                if field == "spec.vlan" && name == "vlan10"),
            "{s}"
        );
        assert!(!c.subnets.contains_key("underlay"));
    }
}

#[test]
fn a_valid_vlan_makes_a_tagged_underlay_subnet() {
    let c = cluster(&with_good(
        r#"
apiVersion: kubeovn.io/v1
kind: Vlan
metadata: {name: vlan10}
spec: {id: 10, provider: physnet}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: underlay}
spec: {cidrBlock: 192.168.10.0/24, vlan: vlan10}
"#,
    ));
    assert!(c.rejected.is_empty(), "{:#?}", c.rejected);
    assert_eq!(c.vlans.get("vlan10"), Some(&(10, "physnet".to_string())));
    let d = desired::desired(&c, &[]);
    let s = d
        .subnets
        .iter()
        .find(|s| s.name == "underlay")
        .expect("underlay");
    assert_eq!(s.vlan.as_ref().map(|v| v.tag), Some(10));
}

#[test]
fn malformed_port_security_leaves_the_interface_out_instead_of_turning_it_off() {
    let c = cluster(&with_good(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: locked
  namespace: team-a
  annotations: {ovn.kubernetes.io/port_security: "yes please"}
spec: {nodeName: node1, containers: [{name: c, image: busybox}]}
"#,
    ));
    assert_good_survives(&c);
    let r = rejection(&c, "Pod", "locked");
    assert_eq!(r.object.namespace.as_deref(), Some("team-a"));
    assert!(
        r.message().contains("ovn.kubernetes.io/port_security")
            && r.message().contains("\"yes please\""),
        "{}",
        r.message()
    );
    assert!(!c.interfaces.iter().any(|i| i.name == "locked"));

    // and a well-formed one is honoured
    let c = cluster(&with_good(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: locked
  namespace: team-a
  annotations: {ovn.kubernetes.io/port_security: "true"}
spec: {nodeName: node1, containers: [{name: c, image: busybox}]}
"#,
    ));
    let i = c
        .interfaces
        .iter()
        .find(|i| i.name == "locked")
        .expect("locked");
    assert!(i.port_security);
}

#[test]
fn subnet_acls_outside_what_ovn_accepts_reject_the_subnet() {
    let c = cluster(&with_good(
        r#"
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: acl-net}
spec:
  cidrBlock: 10.88.0.0/24
  acls:
  - {direction: to-lport, priority: 40000, match: "ip4", action: drop}
  - {direction: sideways, priority: 10, match: "ip4", action: forward}
"#,
    ));
    assert_good_survives(&c);
    let r = rejection(&c, "Subnet", "acl-net");
    let fields: Vec<String> = r
        .errors
        .iter()
        .map(|e| match e {
            ValidationError::OutOfRange { field, .. }
            | ValidationError::Unsupported { field, .. } => field.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "spec.acls[0].priority",
            "spec.acls[1].direction",
            "spec.acls[1].action"
        ]
    );
    assert!(!c.subnets.contains_key("acl-net"));
}

#[test]
fn ip_pools_outside_their_subnet_or_without_one_are_rejected() {
    let c = cluster(&with_good(
        r#"
apiVersion: kubeovn.io/v1
kind: IPPool
metadata: {name: outside}
spec: {subnet: team-a, ips: ["10.99.0.1..10.99.0.9"]}
---
apiVersion: kubeovn.io/v1
kind: IPPool
metadata: {name: orphan}
spec: {subnet: nope, ips: ["10.66.0.5"]}
---
apiVersion: kubeovn.io/v1
kind: IPPool
metadata: {name: fine}
spec: {subnet: team-a, ips: ["10.66.0.10..10.66.0.20"]}
"#,
    ));
    assert_good_survives(&c);
    assert!(
        rejection(&c, "IPPool", "outside")
            .message()
            .contains("10.99.0.1..10.99.0.9")
    );
    assert!(rejection(&c, "IPPool", "orphan").message().contains("nope"));
    let pools: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools, ["fine"]);
}

#[test]
fn provider_network_without_interface_is_reported() {
    let c = cluster(&with_good(
        r#"
apiVersion: kubeovn.io/v1
kind: ProviderNetwork
metadata: {name: physnet}
spec: {}
"#,
    ));
    assert_good_survives(&c);
    assert_eq!(
        rejection(&c, "ProviderNetwork", "physnet").message(),
        "ProviderNetwork physnet: spec.defaultInterface is required"
    );
}

// ---------------------------------------------------------------------------------------------
// Against a real OVN NB

const BATCH: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node1}
status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}
---
apiVersion: kubeovn.io/v1
kind: Vpc
metadata: {name: blue}
spec:
  policyRoutes:
  - {priority: 40000, match: "ip4.src == 10.77.0.0/24", action: drop}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: blue-net}
spec: {vpc: blue, cidrBlock: 10.77.0.0/24}
---
apiVersion: kubeovn.io/v1
kind: Vlan
metadata: {name: vlan-bad}
spec: {id: 5000, provider: physnet}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: underlay-bad}
spec: {cidrBlock: 192.168.10.0/24, vlan: vlan-bad}
---
apiVersion: kubeovn.io/v1
kind: Vlan
metadata: {name: vlan-good}
spec: {id: 20, provider: physnet}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: underlay-good}
spec: {cidrBlock: 192.168.20.0/24, vlan: vlan-good}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_vpc_and_a_bad_vlan_still_converges_in_the_nb() {
    use ferrovn_control::controller::{Controller, ControllerOptions};
    use ferrovn_testkit::ovsdb::OvnCentral;

    let central = OvnCentral::start().expect("OVN central (make ovs-ovn)");
    let nbctl = |args: &[&str]| {
        central
            .nbctl(args)
            .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
    };
    // The premise: the NB refuses such a policy, and with it the whole transaction.
    nbctl(&["lr-add", "probe"]);
    assert!(
        central
            .nbctl(&["lr-policy-add", "probe", "40000", "ip4", "drop"])
            .is_err(),
        "the NB accepted a policy priority of 40000"
    );
    nbctl(&["lr-del", "probe"]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("mkdir");
    std::fs::write(manifests.join("good.yaml"), GOOD).expect("write");
    std::fs::write(manifests.join("batch.yaml"), BATCH).expect("write");
    let mut opts =
        ControllerOptions::new(central.nb_remote(), &manifests, tmp.path().join("state"));
    opts.batch = 10;
    let mut ctl = Controller::connect(opts).await.expect("connect");

    let r = ctl
        .pass()
        .await
        .expect("the pass applies despite the bad objects");
    let mut rejected: Vec<String> = r.rejected.iter().map(|r| r.object.to_string()).collect();
    rejected.sort();
    assert_eq!(
        rejected,
        ["Subnet underlay-bad", "Vlan vlan-bad", "Vpc blue"],
        "{:#?}",
        r.rejected
    );

    // everything else is in the NB
    let switches = nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"]);
    for s in ["team-a", "blue-net", "underlay-good", "ovn-default", "join"] {
        assert!(switches.lines().any(|l| l == s), "{s} missing: {switches}");
    }
    assert!(!switches.lines().any(|l| l == "underlay-bad"), "{switches}");
    assert!(nbctl(&["lsp-list", "team-a"]).contains("web-0.team-a"));
    let tag = nbctl(&[
        "get",
        "Logical_Switch_Port",
        "localnet.underlay-good",
        "tag",
    ]);
    assert_eq!(tag.trim(), "20");
    // the bad VPC's router is there (blue-net hangs off it), without the refused policy
    assert!(nbctl(&["lsp-list", "blue-net"]).contains("blue-net-blue"));
    assert_eq!(nbctl(&["lr-policy-list", "blue"]).trim(), "");

    // and the next pass has nothing to do: no retry loop
    let again = ctl.pass().await.expect("second pass");
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(again.rejected.len(), 3);
}
