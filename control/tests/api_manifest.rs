//! The lab's manifest source: realistic Kube-OVN-style manifests (tests/fixtures/lab) read into
//! typed objects, checked end to end with the annotation accessors and validation, and the
//! errors a user sees for broken manifests.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ferrovn_api::annotations::{
    NamespaceNetwork, NodeNetwork, OvsDpType, PodNetwork, attachment_provider,
};
use ferrovn_api::nad::{Attachment, NETWORKS_ANNOTATION, parse_networks};
use ferrovn_api::validate::{
    ObjectRef, ValidationError, check_static_ips, validate_pod_annotations, validate_subnets,
};
use ferrovn_control::manifest::{ManifestError, Object, load_dir, load_file, load_str};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab")
}

#[test]
fn lab_fixtures_load_into_typed_objects() {
    let m = load_dir(&fixtures()).expect("fixtures load");
    let kinds: Vec<(&str, Option<&str>, &str)> = m
        .objects
        .iter()
        .map(|o| (o.object.kind(), o.object.namespace(), o.object.name()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Namespace", None, "team-a"),
            ("Subnet", None, "team-a"),
            ("Pod", Some("team-a"), "db-0"),
            ("Namespace", None, "team-b"),
            ("Subnet", None, "team-b-private"),
            ("Vpc", None, "vpc-blue"),
            ("Namespace", None, "blue"),
            ("Subnet", None, "blue-net"),
            ("Node", None, "dpdk-node-1"),
            ("NetworkAttachmentDefinition", Some("default"), "dpdk-net"),
            ("Subnet", None, "dpdk-net"),
            ("Pod", Some("default"), "testpmd"),
        ]
    );
    // The Deployment is reported with where it was found, not rejected.
    assert_eq!(m.unknown.len(), 1);
    let u = &m.unknown[0];
    assert_eq!(
        (u.kind.as_str(), u.api_version.as_str()),
        ("Deployment", "apps/v1")
    );
    assert_eq!(u.name.as_deref(), Some("api"));
    assert!(u.location.file.ends_with("03-private.yaml"));
    assert_eq!(u.location.document, 2);
    // Objects from the List carry their item index.
    let vpc = m.objects.iter().find(|o| o.object.kind() == "Vpc").unwrap();
    assert_eq!((vpc.location.document, vpc.location.item), (0, Some(0)));
}

#[test]
fn lab_subnets_validate_and_vpcs_isolate_overlaps() {
    let m = load_dir(&fixtures()).unwrap();
    let subnets: Vec<_> = m.subnets().cloned().collect();
    let (valid, errors) = validate_subnets(&subnets);
    assert!(errors.is_empty(), "{errors:#?}");
    let by_name: HashMap<&str, _> = valid.iter().map(|v| (v.name.as_str(), v)).collect();
    // blue-net reuses team-a's addresses, in another VPC.
    assert_eq!(by_name["blue-net"].vpc, "vpc-blue");
    assert_eq!(by_name["team-a"].vpc, "ovn-cluster");
    assert!(by_name["team-b-private"].cidr.is_dual_stack());
    assert_eq!(
        by_name["team-b-private"].gateway.to_string(),
        "10.77.0.1,fd00:10:77::1"
    );
    assert_eq!(by_name["team-a"].exclude.len(), 2);

    // The same subnet moved into the default VPC would collide with team-a.
    let mut moved = subnets.clone();
    for s in &mut moved {
        if s.metadata.name.as_deref() == Some("blue-net") {
            s.spec.vpc.clear();
        }
    }
    let (_, errors) = validate_subnets(&moved);
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "Subnet blue-net: spec.cidrBlock 10.66.0.0/24 overlaps 10.66.0.0/16 of Subnet team-a in VPC ovn-cluster"
        ]
    );
}

#[test]
fn static_pod_annotations_are_typed_and_checked_against_the_subnet() {
    let m = load_dir(&fixtures()).unwrap();
    let subnets: Vec<_> = m.subnets().cloned().collect();
    let (valid, _) = validate_subnets(&subnets);
    let team_a = valid.iter().find(|s| s.name == "team-a").unwrap();

    let ns = m
        .namespaces()
        .find(|n| n.metadata.name.as_deref() == Some("team-a"))
        .unwrap();
    let ns_ann = ns.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        NamespaceNetwork::new(&ns_ann).logical_switches(),
        ["team-a"]
    );

    let pod = m
        .pods()
        .find(|p| p.metadata.name.as_deref() == Some("db-0"))
        .unwrap();
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let net = PodNetwork::primary(&ann);
    let ip = net.ip_address().unwrap().unwrap();
    assert_eq!(ip.to_string(), "10.66.0.20");
    assert_eq!(
        net.mac_address().unwrap().unwrap().to_string(),
        "00:00:00:53:6b:b6"
    );
    assert_eq!(net.ingress_rate().unwrap(), Some(100));
    assert_eq!(net.egress_rate().unwrap(), Some(50));
    let object = ObjectRef::namespaced("Pod", "team-a", "db-0");
    assert!(validate_pod_annotations(&object, &ann, "ovn").is_empty());

    let field = "metadata.annotations[ovn.kubernetes.io/ip_address]";
    let mut taken: HashMap<IpAddr, String> = HashMap::new();
    assert!(check_static_ips(&object, field, &ip, team_a, &taken).is_empty());
    taken.insert("10.66.0.20".parse().unwrap(), "Pod team-a/db-1".into());
    let errors = check_static_ips(&object, field, &ip, team_a, &taken);
    assert_eq!(
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        [
            "Pod team-a/db-0: metadata.annotations[ovn.kubernetes.io/ip_address] 10.66.0.20 is already taken by Pod team-a/db-1"
        ]
    );
    // The same address against the DPDK subnet is outside it.
    let dpdk = valid.iter().find(|s| s.name == "dpdk-net").unwrap();
    let errors = check_static_ips(&object, field, &ip, dpdk, &HashMap::new());
    assert!(matches!(
        errors[..],
        [ValidationError::StaticIpOutsideSubnet { .. }]
    ));
}

#[test]
fn dpdk_pod_resolves_its_vhost_user_attachment() {
    let m = load_dir(&fixtures()).unwrap();
    let node = m.nodes().next().unwrap();
    let (ann, labels) = (
        node.metadata.annotations.clone().unwrap_or_default(),
        node.metadata.labels.clone().unwrap_or_default(),
    );
    let node_net = NodeNetwork::new(&ann, &labels);
    assert_eq!(node_net.ovs_dp_type().unwrap(), Some(OvsDpType::Userspace));
    assert_eq!(node_net.tunnel_interface(), Some("eth1"));

    let pod = m
        .pods()
        .find(|p| p.metadata.name.as_deref() == Some("testpmd"))
        .unwrap();
    let pod_ann = pod.metadata.annotations.clone().unwrap_or_default();
    let selections = parse_networks(&pod_ann[NETWORKS_ANNOTATION]).unwrap();
    assert_eq!(selections.len(), 1);
    let sel = &selections[0];
    let nad = m
        .network_attachment_definitions()
        .find(|n| {
            n.metadata.name.as_deref() == Some(sel.name.as_str())
                && n.metadata.namespace.as_deref() == Some(sel.namespace_or("default"))
        })
        .expect("the pod's NAD is in the manifests");
    let attachment = nad.attachment().unwrap().unwrap();
    let Attachment::Ovn {
        provider,
        vhost_user: Some(vhost),
        ..
    } = &attachment
    else {
        panic!("expected a vhost-user OVN attachment, got {attachment:?}");
    };
    assert_eq!(provider, &attachment_provider("dpdk-net", "default"));
    assert_eq!(vhost.volume_name, "vhostuser-sockets");
    assert_eq!(vhost.socket_name.as_deref(), Some("sock"));
    // The pod really has that volume.
    let volumes: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|v| v.iter().map(|v| v.name.as_str()).collect())
        .unwrap_or_default();
    assert!(volumes.contains(&vhost.volume_name.as_str()));

    // The attachment's own annotations, and the subnet serving that provider.
    let attach = PodNetwork::for_provider(&pod_ann, provider);
    let ip = attach.ip_address().unwrap().unwrap();
    assert_eq!(ip.to_string(), "172.18.0.9");
    assert_eq!(PodNetwork::primary(&pod_ann).ip_address().unwrap(), None);
    let subnets: Vec<_> = m.subnets().cloned().collect();
    let (valid, _) = validate_subnets(&subnets);
    let serving: Vec<&str> = valid
        .iter()
        .filter(|s| &s.provider == provider)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(serving, ["dpdk-net"]);
    let object = ObjectRef::namespaced("Pod", "default", "testpmd");
    let dpdk = valid.iter().find(|s| s.name == "dpdk-net").unwrap();
    assert!(check_static_ips(&object, "ip_address", &ip, dpdk, &HashMap::new()).is_empty());
}

#[test]
fn kubectl_output_of_a_newer_kube_ovn_parses() {
    // Shaped like `kubectl get subnet ovn-default -o yaml` on Kube-OVN 1.14+: status written by
    // its controller (counts as bare numbers, the v6 count in float form), and spec/status
    // fields FerrOVN does not model.
    let text = r#"
apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: ovn-default
  uid: 6b1f3b44-0a5e-4b0e-9d0b-0f0a3c7e2a11
  resourceVersion: "1234"
  generation: 2
  creationTimestamp: "2025-01-02T03:04:05Z"
  finalizers: [kube-ovn-controller]
spec:
  cidrBlock: 10.16.0.0/16,fd00:10:16::/64
  default: true
  enableLb: true
  excludeIps: [10.16.0.1, "fd00:10:16::1"]
  gateway: 10.16.0.1,fd00:10:16::1
  gatewayNode: ""
  gatewayType: distributed
  natOutgoing: true
  private: false
  protocol: Dual
  provider: ovn
  vpc: ovn-cluster
  u2oFeatures: {overlayOnlyRouting: true}
  someFieldFromTheFuture: [1, 2, 3]
status:
  activateGateway: ""
  conditions:
  - type: Validated
    status: "True"
    reason: ValidatedSubnet
    lastUpdateTime: "2025-01-02T03:04:06Z"
    lastTransitionTime: "2025-01-02T03:04:06Z"
  - type: Ready
    status: "True"
    reason: SetPrivateLogicalSwitchSuccess
    message: ""
    lastUpdateTime: "2025-01-02T03:04:07Z"
    lastTransitionTime: "2025-01-02T03:04:07Z"
    observedGeneration: 2
  v4availableIPs: 65527
  v4availableIPrange: 10.16.0.2-10.16.255.254
  v4usingIPs: 6
  v4usingIPrange: 10.16.0.3-10.16.0.8
  v6availableIPs: 1.8446744073709552e+19
  v6usingIPs: 6
  natOutgoingPolicyRules: []
"#;
    let m = load_str(text, "kubectl-get.yaml").expect("parses");
    let s = m.subnets().next().unwrap();
    assert!(s.spec.default);
    assert_eq!(s.spec.enable_lb, Some(true));
    let status = s.status.as_ref().unwrap();
    assert_eq!(status.v4_available_ips.0, 65527);
    assert_eq!(status.v6_available_ips.0, 18446744073709551616);
    assert!(ferrovn_api::crd::is_condition_true(
        &status.conditions,
        "Ready"
    ));
    let (valid, errors) = validate_subnets(std::slice::from_ref(s));
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(valid[0].exclude.len(), 2);
}

fn err(text: &str) -> ManifestError {
    load_str(text, "bad.yaml").expect_err("must be rejected")
}

#[test]
fn errors_name_file_document_kind_object_and_field() {
    let e = err(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n\
                 apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: s1}\n\
                 spec: {cidrBlock: 10.1.0.0/16, natOutgoing: \"yes\"}\n",
    );
    assert_eq!(
        e.to_string(),
        "bad.yaml, document 1: Subnet s1: field spec.natOutgoing: invalid type: string \"yes\", expected a boolean"
    );

    let e = err(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    ovn.kubernetes.io/vlan_id: 10\n\
                 spec: {containers: [{name: c}]}\n",
    );
    let ManifestError::Field {
        field, kind, name, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((kind.as_str(), name.as_str()), ("Pod", "p"));
    assert!(field.starts_with("metadata.annotations"), "{e}");
    assert!(e.to_string().contains("ovn.kubernetes.io/vlan_id"), "{e}");

    let e = err(
        "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: s}\nspec: {protocol: IPv5}\n",
    );
    assert!(
        e.to_string()
            .contains("field spec.protocol: unknown variant `IPv5`"),
        "{e}"
    );

    let e = err(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: kubeovn.io/v1\n  kind: Vlan\n  metadata: {name: v}\n  spec: {id: ten}\n",
    );
    assert_eq!(
        e.to_string(),
        "bad.yaml, document 0, items[0]: Vlan v: field spec.id: invalid type: string \"ten\", expected i32"
    );
}

#[test]
fn structural_errors() {
    let e = err("kind: Subnet\nmetadata: {name: x}\n");
    assert_eq!(e.to_string(), "bad.yaml, document 0: missing apiVersion");
    let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- just\n- a list\n");
    assert_eq!(
        e.to_string(),
        "bad.yaml, document 1: expected a Kubernetes object (a mapping), found a list"
    );
    let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: a\n");
    assert!(matches!(e, ManifestError::Yaml { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("bad.yaml, document 0: not valid YAML"),
        "{e}"
    );
    let e = err("apiVersion: kubeovn.io/v1\nkind: Vpc\nmetadata: {}\nspec: {}\n");
    assert_eq!(
        e.to_string(),
        "bad.yaml, document 0: Vpc <unnamed>: field metadata.name: required"
    );
    let e = err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: []}\n",
    );
    assert_eq!(
        e.to_string(),
        "bad.yaml, document 1: Pod default/p is already defined at bad.yaml, document 0"
    );
}

#[test]
fn empty_documents_json_and_namespace_defaults() {
    let m = load_str("---\n---\n", "empty.yaml").unwrap();
    assert!(m.objects.is_empty() && m.unknown.is_empty());
    let m = load_str(
        r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
            "metadata":{"name":"n"},"spec":{"config":"{\"type\":\"kube-ovn\"}"}}"#,
        "nad.json",
    )
    .unwrap();
    let nad = m.network_attachment_definitions().next().unwrap();
    assert_eq!(nad.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        nad.attachment().unwrap().unwrap().provider(),
        "n.default.ovn"
    );
    // A namespace on a cluster-scoped object is dropped, as the API server does.
    let m = load_str("apiVersion: kubeovn.io/v1\nkind: Vlan\nmetadata: {name: v, namespace: x}\nspec: {id: 7, provider: net1}\n", "v.yaml").unwrap();
    let Object::Vlan(v) = &m.objects[0].object else {
        panic!()
    };
    assert_eq!(v.metadata.namespace, None);
    assert_eq!(v.tag(), 7);
}

#[test]
fn load_dir_reports_io_errors_with_the_path_and_skips_hidden_files() {
    let e = load_dir(Path::new("/nonexistent/ferrovn-manifests")).unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/ferrovn-manifests:"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/ns.yml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: deep}\n",
    )
    .unwrap();
    let m = load_dir(dir.path()).unwrap();
    assert_eq!(m.namespaces().count(), 1);
    let e = load_file(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(matches!(e, ManifestError::Io { .. }));
}

#[test]
fn lab_fixtures_validate_clean() {
    let m = load_dir(&fixtures()).unwrap();
    let errors = ferrovn_control::manifest::validate(&m);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn cross_object_validation_finds_every_mistake() {
    let text = r#"
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: red-net}
spec: {vpc: vpc-red, cidrBlock: 10.9.0.0/24}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: apps}
spec: {cidrBlock: 10.20.0.0/24, namespaces: [apps]}
---
apiVersion: kubeovn.io/v1
kind: IPPool
metadata: {name: pool}
spec: {subnet: nosuch, ips: [10.20.0.50]}
---
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {ovn.kubernetes.io/ovs_dp_type: netdev}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: dpdk-net, namespace: apps}
spec:
  config: '{"type": "kube-ovn", "vhost_user_socket_volume_name": "vhost", "vhost_user_socket_name": "s"}'
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: apps
  annotations:
    ovn.kubernetes.io/ip_address: 10.20.0.7
    ovn.kubernetes.io/mac_address: 0a:00:00:00:00:07
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: apps
  annotations:
    ovn.kubernetes.io/ip_address: 10.20.0.7
    ovn.kubernetes.io/mac_address: 0a:00:00:00:00:07
    ovn.kubernetes.io/egress_rate: fast
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: dpdk
  namespace: apps
  annotations:
    k8s.v1.cni.cncf.io/networks: dpdk-net, missing-net
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: lost
  namespace: apps
  annotations:
    ovn.kubernetes.io/logical_switch: nowhere
spec: {containers: [{name: c}]}
"#;
    let m = load_str(text, "broken.yaml").unwrap();
    let msgs: Vec<String> = ferrovn_control::manifest::validate(&m)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        msgs,
        [
            "Subnet red-net: spec.vpc names Vpc \"vpc-red\", which does not exist",
            "IPPool pool: spec.subnet names Subnet \"nosuch\", which does not exist",
            "Node n1: annotation ovn.kubernetes.io/ovs_dp_type: bad value \"netdev\": expected userspace or kernel",
            "Pod apps/b: annotation ovn.kubernetes.io/egress_rate: bad value \"fast\": expected a whole number of Mbit/s",
            "Pod apps/dpdk: metadata.annotations[k8s.v1.cni.cncf.io/networks] names NetworkAttachmentDefinition \"apps/missing-net\", which does not exist",
            "Pod apps/lost: metadata.annotations[ovn.kubernetes.io/logical_switch] names Subnet \"nowhere\", which does not exist",
        ]
    );

    // With pod b's annotation fixed, its contested address and MAC are reported, and the DPDK
    // pod (now that missing-net is gone) is told about the volume it lacks.
    let fixed = text
        .replace("    ovn.kubernetes.io/egress_rate: fast\n", "")
        .replace("dpdk-net, missing-net", "dpdk-net");
    let m = load_str(&fixed, "broken.yaml").unwrap();
    let msgs: Vec<String> = ferrovn_control::manifest::validate(&m)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        msgs[3..],
        [
            "Pod apps/b: metadata.annotations[ovn.kubernetes.io/ip_address] 10.20.0.7 is already taken by Pod apps/a",
            "Pod apps/b: metadata.annotations[ovn.kubernetes.io/mac_address] 0a:00:00:00:00:07 is already taken by Pod apps/a",
            "Pod apps/dpdk: attachment apps/dpdk-net serves its vhost-user socket in volume \"vhost\", but the pod has no such volume (add an emptyDir volume named \"vhost\" and mount it where the DPDK app looks for the socket)",
            "Pod apps/lost: metadata.annotations[ovn.kubernetes.io/logical_switch] names Subnet \"nowhere\", which does not exist",
        ]
    );
}

#[test]
fn the_same_fixed_address_in_two_vpcs_is_fine() {
    let text = r#"
apiVersion: kubeovn.io/v1
kind: Vpc
metadata: {name: blue}
spec: {namespaces: [blue], defaultSubnet: blue-net}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: blue-net}
spec: {vpc: blue, cidrBlock: 10.20.0.0/24}
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: apps}
spec: {cidrBlock: 10.20.0.0/24, namespaces: [apps]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: apps, annotations: {ovn.kubernetes.io/ip_address: 10.20.0.7}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: blue, annotations: {ovn.kubernetes.io/ip_address: 10.20.0.7}}
spec: {containers: [{name: c}]}
"#;
    let m = load_str(text, "vpcs.yaml").unwrap();
    let view = m.view();
    let blue_pod = m
        .pods()
        .find(|p| p.metadata.namespace.as_deref() == Some("blue"))
        .unwrap();
    let ann = blue_pod.metadata.annotations.clone().unwrap();
    assert_eq!(
        view.subnet_name_for("blue", &ann, "ovn").map(|(n, _)| n),
        Some("blue-net".to_string())
    );
    let errors = ferrovn_control::manifest::validate(&m);
    assert!(errors.is_empty(), "{errors:#?}");
}
