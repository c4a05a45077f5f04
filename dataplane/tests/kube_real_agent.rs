//! The node agent's Kubernetes calls against a real control plane (ferrovn-testkit, built by
//! `make kube-bins`), made as the agent's own ServiceAccount `kube-system/ferrovn-node`, bound
//! only by deploy/node-rbac.yaml (never cluster-admin).
//!
//! The calls are those `ferrovn-node --kube` makes, through the same library functions
//! (dataplane/src/kube_api.rs): read the Node's `ovn.kubernetes.io/ovs_dp_type` label and pick
//! the profile, publish node annotations, read a pod's allocation, patch and clear pod
//! annotations. The binary itself is not started: it needs a node's OVS and an OVN Southbound
//! before it talks to Kubernetes, and every Kubernetes request it sends is one of these.
//!
//! Then deploy/node-admission-policy.yaml: with a token bound to node A the agent may patch
//! Node A and the pods scheduled to A, and nothing else; a token bound to no node writes nothing.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ferrovn_dataplane::alloc::{AllocationSource, Annotations, PodRef};
use ferrovn_dataplane::dpdk::vhost::PodAnnotator;
use ferrovn_dataplane::kube_api::{self, KubeAllocations, KubeNodeSink, KubePodAnnotator};
use ferrovn_dataplane::profile::{self, ProfileInputs};
use ferrovn_dataplane::report::NodeReportSink;
use ferrovn_testkit::kube::ControlPlane;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dataplane has a parent")
        .join("deploy")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn annotation_expr(key: &str) -> String {
    format!("{{.metadata.annotations.{}}}", key.replace('.', "\\."))
}

fn pod_annotation(cp: &ControlPlane, ns: &str, pod: &str, key: &str) -> String {
    cp.jsonpath(&["-n", ns, "get", "pod", pod], &annotation_expr(key))
}

fn node_annotation(cp: &ControlPlane, node: &str, key: &str) -> String {
    cp.jsonpath(&["get", "node", node], &annotation_expr(key))
}

fn ann(pairs: &[(&str, &str)]) -> Annotations {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Two nodes (a: DPDK-labelled, b: kernel), a pod on each with a controller allocation, and
/// annotations not the agent's (they must survive its patches).
const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {ovn.kubernetes.io/ovs_dp_type: kernel}
  annotations: {example.com/owner: ops}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {ovn.kubernetes.io/ovs_dp_type: userspace}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-a
  namespace: demo
  annotations:
    example.com/team: web
    ovn.kubernetes.io/allocated: "true"
    ovn.kubernetes.io/ip_address: 10.16.0.5
    ovn.kubernetes.io/cidr: 10.16.0.0/16
    ovn.kubernetes.io/gateway: 10.16.0.1
    ovn.kubernetes.io/mac_address: "00:00:00:aa:00:05"
    ovn.kubernetes.io/logical_switch: ovn-default
spec:
  nodeName: node-a
  containers: [{name: c, image: pause}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-b
  namespace: demo
spec:
  nodeName: node-b
  containers: [{name: c, image: pause}]
"#;

#[test]
fn node_agent_kube_calls_as_its_service_account() {
    let cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    cp.kubectl(&["apply", "-f", path(&deploy().join("node-rbac.yaml"))])
        .expect("apply deploy/node-rbac.yaml");
    cp.kubectl_stdin(&["apply", "-f", "-"], OBJECTS)
        .expect("apply nodes and pods");
    let agent_a = cp
        .node_bound_service_account_kubeconfig("kube-system", "ferrovn-node", "node-a")
        .expect("node-bound token for node-a");

    // Least privilege: get + patch of nodes, get + list + watch + patch of pods.
    for (verb, resource, allowed) in [
        ("get", "nodes", true),
        ("patch", "nodes", true),
        ("get", "pods", true),
        ("patch", "pods", true),
        ("list", "pods", true),
        ("watch", "pods", true),
        ("list", "nodes", false),
        ("delete", "pods", false),
        ("create", "pods", false),
        ("update", "nodes", false),
        ("patch", "pods --subresource=status", false),
        ("patch", "nodes --subresource=status", false),
        ("get", "secrets", false),
    ] {
        let mut args = vec!["auth", "can-i", verb, "-A"];
        args.extend(resource.split(' '));
        let out = cp.kubectl_as(&agent_a, &args, None);
        let answer = match &out {
            Ok(o) => o.stdout.trim().to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            out.is_ok(),
            allowed,
            "ferrovn-node can-i {verb} {resource}: {answer}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = kube_api::client(Some(&agent_a))
            .await
            .expect("client from the ServiceAccount kubeconfig");

        // The profile from the Node's label, as `--profile auto` does.
        let labels = kube_api::node_labels(&client, "node-a")
            .await
            .expect("read Node node-a's labels");
        let label = labels.get(profile::OVS_DP_TYPE_LABEL).cloned();
        assert_eq!(label.as_deref(), Some("kernel"), "{labels:?}");
        let decision = profile::select_profile(&ProfileInputs {
            dp_type_label: label,
            ..Default::default()
        })
        .expect("profile decision");
        let err = kube_api::node_labels(&client, "node-x")
            .await
            .expect_err("a missing Node is an error");
        assert!(err.to_string().contains("Node node-x"), "{err}");

        // Node annotations: merge patch of the differing keys only; others stay.
        let sink = KubeNodeSink::new(client.clone(), "node-a");
        let mut published = decision.annotations();
        published.insert("ovn.kubernetes.io/chassis".into(), "node-a".into());
        let changed = sink.publish(&published).await.expect("patch Node node-a");
        assert_eq!(changed.len(), published.len(), "{changed:?}");
        assert_eq!(
            sink.publish(&published).await.expect("publish again"),
            Vec::<String>::new(),
            "nothing differs: nothing patched"
        );
        for (key, value) in &published {
            assert_eq!(&node_annotation(&cp, "node-a", key), value, "{key}");
        }
        assert_eq!(
            node_annotation(&cp, "node-a", profile::PROFILE_ANNOTATION),
            "kernel"
        );
        assert_eq!(node_annotation(&cp, "node-a", "example.com/owner"), "ops");

        // The pod's allocation, as the CNI ADD waits for it.
        let allocations =
            KubeAllocations::new(client.clone()).with_min_interval(std::time::Duration::ZERO);
        let alloc = allocations
            .lookup(&pod("demo", "web-a"), "ovn")
            .await
            .expect("read Pod demo/web-a")
            .expect("web-a is allocated");
        assert_eq!(alloc.logical_switch, "ovn-default");
        assert_eq!(
            alloc
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            ["10.16.0.5/16"]
        );
        assert_eq!(
            allocations
                .lookup(&pod("demo", "web-b"), "ovn")
                .await
                .expect("read Pod demo/web-b"),
            None,
            "not allocated yet"
        );
        assert_eq!(
            allocations
                .lookup(&pod("demo", "gone"), "ovn")
                .await
                .expect("a missing pod is not an error"),
            None
        );

        // As `ferrovn-node --kube` reads them: from a watch of node-a's Pods.
        let watching = KubeAllocations::new(client.clone()).watching("node-a");
        assert!(
            ferrovn_testkit::wait::wait_until_async(std::time::Duration::from_secs(30), || {
                watching.watch_ready()
            })
            .await,
            "the watch of node-a's pods lists as ferrovn-node"
        );
        let alloc = watching
            .lookup(&pod("demo", "web-a"), "ovn")
            .await
            .expect("web-a from the watch")
            .expect("web-a is allocated");
        assert_eq!(alloc.logical_switch, "ovn-default");

        // Pod annotations: set, then removed; other annotations stay.
        let annotator = KubePodAnnotator::new(client.clone());
        let key = "vhost-user.ferrovn.io/net1";
        annotator
            .annotate(
                &pod("demo", "web-a"),
                &ann(&[(key, "{\"ifname\":\"net1\"}")]),
                &[],
            )
            .await
            .expect("patch Pod demo/web-a");
        assert_eq!(
            pod_annotation(&cp, "demo", "web-a", key),
            "{\"ifname\":\"net1\"}"
        );
        annotator
            .annotate(&pod("demo", "web-a"), &ann(&[]), &[key.to_string()])
            .await
            .expect("remove the annotation");
        assert_eq!(pod_annotation(&cp, "demo", "web-a", key), "");
        assert_eq!(
            pod_annotation(&cp, "demo", "web-a", "example.com/team"),
            "web"
        );
        assert_eq!(
            pod_annotation(&cp, "demo", "web-a", "ovn.kubernetes.io/ip_address"),
            "10.16.0.5"
        );
    });

    only_its_own_node(&cp, &rt, &agent_a);
}

/// The policy's name: every refusal names it.
const POLICY: &str = "ferrovn-node-own-node";

fn assert_refused(result: Result<(), String>, what: &str, why: &str) {
    let err = result.expect_err(what);
    assert!(
        err.contains(&format!("ValidatingAdmissionPolicy '{POLICY}'")) && err.contains(why),
        "{what}: {err}"
    );
}

fn only_its_own_node(cp: &ControlPlane, rt: &tokio::runtime::Runtime, agent_a: &Path) {
    cp.kubectl(&[
        "apply",
        "-f",
        path(&deploy().join("node-admission-policy.yaml")),
    ])
    .expect("apply deploy/node-admission-policy.yaml");
    let agent_b = cp
        .node_bound_service_account_kubeconfig("kube-system", "ferrovn-node", "node-b")
        .expect("node-bound token for node-b");
    let unbound = cp
        .service_account_kubeconfig("kube-system", "ferrovn-node")
        .expect("a token bound to no node");
    rt.block_on(async {
        let a = kube_api::client(Some(agent_a)).await.expect("client a");
        let b = kube_api::client(Some(&agent_b)).await.expect("client b");
        let nobody = kube_api::client(Some(&unbound)).await.expect("client");

        // The policy is in force once the apiserver's policy cache has it: patch Node B as
        // agent A until that is refused.
        let start = std::time::Instant::now();
        let a_on_node_b = KubeNodeSink::new(a.clone(), "node-b");
        let refusal = loop {
            let probe = ann(&[("ferrovn.io/probe", &format!("{:?}", start.elapsed()))]);
            match a_on_node_b.publish(&probe).await {
                Err(e) if e.to_string().contains(POLICY) => break e.to_string(),
                Ok(_) => {}
                Err(e) => panic!("patch Node node-b as agent a: {e}"),
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "the policy never refused agent a patching Node node-b"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        eprintln!(
            "policy in force after {:?}; agent a patching Node node-b: {refusal}",
            start.elapsed()
        );
        assert!(
            refusal.contains("may patch only its own Node, not Node node-b"),
            "{refusal}"
        );
        let agent_key = "ovn.kubernetes.io/chassis";
        let stolen = ann(&[(agent_key, "node-a")]);
        assert_refused(
            a_on_node_b
                .publish(&stolen)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "agent a patching Node node-b",
            "on node node-a may patch only its own Node",
        );
        assert_eq!(node_annotation(cp, "node-b", agent_key), "");

        // Its own Node: allowed.
        KubeNodeSink::new(a.clone(), "node-a")
            .publish(&ann(&[("ferrovn.io/hw-offload", "false")]))
            .await
            .expect("agent a patches Node node-a");
        assert_eq!(
            node_annotation(cp, "node-a", "ferrovn.io/hw-offload"),
            "false"
        );

        // Pods: only those scheduled to its node.
        let key = "vhost-user.ferrovn.io/net1";
        let value = ann(&[(key, "{\"ifname\":\"net1\"}")]);
        let err = KubePodAnnotator::new(a.clone())
            .annotate(&pod("demo", "web-b"), &value, &[])
            .await
            .map_err(|e| e.to_string());
        eprintln!("agent a patching pod demo/web-b: {:?}", err.as_ref().err());
        assert_refused(
            err,
            "agent a patching pod demo/web-b (on node-b)",
            "may patch only Pods scheduled to it, not Pod demo/web-b (on node node-b)",
        );
        assert_eq!(pod_annotation(cp, "demo", "web-b", key), "");
        KubePodAnnotator::new(a.clone())
            .annotate(&pod("demo", "web-a"), &value, &[])
            .await
            .expect("agent a patches its own pod demo/web-a");
        assert_eq!(
            pod_annotation(cp, "demo", "web-a", key),
            "{\"ifname\":\"net1\"}"
        );
        KubePodAnnotator::new(b.clone())
            .annotate(&pod("demo", "web-b"), &value, &[])
            .await
            .expect("agent b patches its own pod demo/web-b");
        assert_eq!(
            pod_annotation(cp, "demo", "web-b", key),
            "{\"ifname\":\"net1\"}"
        );
        // removals are writes too
        assert_refused(
            KubePodAnnotator::new(b.clone())
                .annotate(&pod("demo", "web-a"), &ann(&[]), &[key.to_string()])
                .await
                .map_err(|e| e.to_string()),
            "agent b removing an annotation of pod demo/web-a",
            "not Pod demo/web-a (on node node-a)",
        );
        assert_eq!(
            pod_annotation(cp, "demo", "web-a", key),
            "{\"ifname\":\"net1\"}"
        );

        // A token bound to no node: no write at all, reads still work.
        let why = "writes only with a token bound to its node";
        assert_refused(
            KubeNodeSink::new(nobody.clone(), "node-a")
                .publish(&ann(&[("ferrovn.io/hw-offload", "true")]))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "unbound token patching Node node-a",
            why,
        );
        assert_refused(
            KubePodAnnotator::new(nobody.clone())
                .annotate(&pod("demo", "web-a"), &ann(&[(key, "x")]), &[])
                .await
                .map_err(|e| e.to_string()),
            "unbound token patching pod demo/web-a",
            why,
        );
        assert_eq!(
            node_annotation(cp, "node-a", "ferrovn.io/hw-offload"),
            "false"
        );
        kube_api::node_labels(&nobody, "node-a")
            .await
            .expect("reads are not admission-controlled");
    });

    // The token a DaemonSet pod on node-a really gets is bound to the pod, not the Node: the
    // apiserver derives the node from the pod, and the policy treats it the same.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ferrovn-node-a, namespace: kube-system}\n\
         spec:\n  serviceAccountName: ferrovn-node\n  nodeName: node-a\n  \
         containers: [{name: agent, image: pause}]\n",
    )
    .expect("an agent pod on node-a");
    let pod_token = cp
        .pod_bound_service_account_kubeconfig("kube-system", "ferrovn-node", "ferrovn-node-a")
        .expect("pod-bound token");
    cp.kubectl_as(
        &pod_token,
        &[
            "-n",
            "demo",
            "annotate",
            "pod",
            "web-a",
            "vhost-user.ferrovn.io/net3={}",
        ],
        None,
    )
    .expect("the agent pod's token patches a pod on its node");
    let err = cp
        .kubectl_as(
            &pod_token,
            &[
                "-n",
                "demo",
                "annotate",
                "pod",
                "web-b",
                "vhost-user.ferrovn.io/net3={}",
            ],
            None,
        )
        .expect_err("the agent pod's token patching a pod on node-b")
        .to_string();
    assert!(
        err.contains(POLICY) && err.contains("ferrovn-node on node node-a"),
        "{err}"
    );

    // kubectl as agent a (what an attacker holding its token would try): the same answers.
    cp.kubectl_as(
        agent_a,
        &[
            "-n",
            "demo",
            "annotate",
            "pod",
            "web-a",
            "vhost-user.ferrovn.io/net2={}",
        ],
        None,
    )
    .expect("kubectl annotate of its own pod as agent a");
    assert_eq!(
        pod_annotation(cp, "demo", "web-a", "vhost-user.ferrovn.io/net2"),
        "{}"
    );
    let err = cp
        .kubectl_as(
            agent_a,
            &[
                "-n",
                "demo",
                "annotate",
                "pod",
                "web-b",
                "ovn.kubernetes.io/ip_address=10.16.0.99",
                "--overwrite",
            ],
            None,
        )
        .expect_err("kubectl annotate of a pod on node-b as agent a")
        .to_string();
    assert!(err.contains(POLICY), "{err}");
    assert_eq!(
        pod_annotation(cp, "demo", "web-b", "ovn.kubernetes.io/ip_address"),
        ""
    );
}
