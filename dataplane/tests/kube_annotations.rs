//! Cluster-mode annotation writes against a fake API server (tower-test): the vhost-user pod
//! annotation set and removed as JSON merge patches of the Pod (through the same
//! `VhostConfig.annotations` field the agent uses), the offload node annotations patched onto the
//! Node (only the differing keys), and API failures turned into errors naming the pod or node.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrovn_dataplane::alloc::PodRef;
use ferrovn_dataplane::annotate::AnnotateError;
use ferrovn_dataplane::dpdk::vhost::{
    PodAnnotator, VhostConfig, VhostUserInfo, annotation_key, annotations_for,
};
use ferrovn_dataplane::kube_api::{KubeNodeSink, KubePodAnnotator};
use ferrovn_dataplane::offload::{
    HW_OFFLOAD_ANNOTATION, OffloadStart, RESTART_REASONS_ANNOTATION, RESTART_REQUIRED_ANNOTATION,
};
use ferrovn_dataplane::report::NodeReportSink;
use ferrovn_dataplane::sriov::pci_annotation;
use ferrovn_hwoffload::{OffloadSettings, plan_offload_config};
use ferrovn_testkit::fake_kube::{FakeApi, node_json, pod_json, status_body};
use serde_json::{Value, json};

/// A running DPDK pod as the API server returns it, with the controller's allocation.
fn testpmd_pod(ns: &str, name: &str) -> Value {
    let mut pod = pod_json(
        ns,
        name,
        "node-a",
        json!({
            "k8s.v1.cni.cncf.io/networks": "default/dpdk-net",
            "ovn.kubernetes.io/allocated": "true",
            "ovn.kubernetes.io/ip_address": "10.16.0.12",
            "ovn.kubernetes.io/mac_address": "0a:58:0a:10:00:0c"
        }),
    );
    pod["metadata"]["labels"] = json!({"app": "testpmd"});
    pod["spec"]["containers"] = json!([{"name": "testpmd", "image": "dpdk:22.11",
        "volumeMounts": [{"name": "vhost", "mountPath": "/var/run/vhost"},
                         {"name": "podinfo", "mountPath": "/etc/podinfo"}]}]);
    pod["spec"]["volumes"] = json!([{"name": "vhost", "emptyDir": {}},
        {"name": "podinfo", "downwardAPI": {"items": [{"path": "annotations",
            "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]);
    pod
}

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// What the agent hands a vhost-user pod (as `annotations_for` serialises it).
fn vhost_info() -> VhostUserInfo {
    serde_json::from_value(json!({
        "ifname": "net1",
        "provider": "dpdk-net.default.ovn",
        "volume": "vhost",
        "socket": "sock0",
        "mode": "server",
        "mac": "0a:58:0a:10:00:0c",
        "ips": ["10.16.0.12/16"],
        "gateways": ["10.16.0.1"],
        "mtu": 1400,
        "hostSocketPath": "/run/ferrovn/vhu/3f2a9c1d0b4e7/sock0",
        "ovsPort": "vh3f2a9c1d0b4e7"
    }))
    .expect("info")
}

/// A fake API server holding one DPDK pod.
fn one_pod(ns: &str, name: &str) -> FakeApi {
    let fake = FakeApi::new();
    fake.apply(testpmd_pod(ns, name));
    fake
}

#[tokio::test]
async fn vhost_annotation_is_patched_onto_the_pod_and_removed_with_null() {
    let fake = one_pod("default", "testpmd-0");
    let client = fake.client();
    // the agent's own field: the Kubernetes sink in place of the lab's files
    let cfg = VhostConfig {
        annotations: Some(Arc::new(KubePodAnnotator::new(client))),
        ..Default::default()
    };
    let sink = cfg.annotations.as_ref().expect("sink");
    let info = vhost_info();
    let set = annotations_for(&info).expect("annotations");
    let p = pod("default", "testpmd-0");
    sink.annotate(&p, &set, &[]).await.expect("annotate");

    let seen = fake.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PATCH", "/api/v1/namespaces/default/pods/testpmd-0")
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body = seen[0].body.clone().expect("json body");
    let value = serde_json::to_string(&info).expect("info json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"vhost-user.ferrovn.io/net1": value}}})
    );
    // on the Pod now, next to the controller's annotations; the app reads it back as it was
    let on_pod = fake.annotations("Pod", "default", "testpmd-0");
    let read: VhostUserInfo = serde_json::from_str(
        on_pod[annotation_key("net1").as_str()]
            .as_str()
            .expect("a string"),
    )
    .expect("parses");
    assert_eq!(read, info);
    assert_eq!(on_pod["ovn.kubernetes.io/ip_address"], "10.16.0.12");

    // the same again (a retried ADD): nothing sent
    sink.annotate(&p, &set, &[]).await.expect("again");
    assert_eq!(fake.requests().len(), 1);

    // removal: the key as null, nothing else
    sink.annotate(&p, &Default::default(), &[annotation_key("net1")])
        .await
        .expect("remove");
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].method, "PATCH");
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body = seen[1].body.clone().expect("json body");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"vhost-user.ferrovn.io/net1": null}}})
    );
    let on_pod = fake.annotations("Pod", "default", "testpmd-0");
    assert!(
        on_pod.get("vhost-user.ferrovn.io/net1").is_none(),
        "{on_pod}"
    );
    assert_eq!(on_pod["ovn.kubernetes.io/allocated"], "true");

    // set again after the removal: patched again (the remembered value went with it)
    sink.annotate(&p, &set, &[]).await.expect("re-annotate");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_changed_value_patches_only_that_key() {
    let fake = one_pod("dpdk", "app-1");
    let client = fake.client();
    let sink = KubePodAnnotator::new(client);
    let p = pod("dpdk", "app-1");
    let first: BTreeMap<String, String> = [
        (pci_annotation("net1"), "0000:03:00.2".to_string()),
        (
            "offload.ferrovn.io/net1".to_string(),
            "{\"offloaded\":false}".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    sink.annotate(&p, &first, &[]).await.expect("first");
    let mut second = first.clone();
    second.insert(
        "offload.ferrovn.io/net1".into(),
        "{\"offloaded\":true}".into(),
    );
    sink.annotate(&p, &second, &[]).await.expect("second");
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let body = seen[1].body.clone().expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"offload.ferrovn.io/net1": "{\"offloaded\":true}"}}})
    );
    assert_eq!(
        fake.annotations("Pod", "dpdk", "app-1")["pci-address.ferrovn.io/net1"],
        "0000:03:00.2"
    );
}

fn pod_error(e: AnnotateError) -> String {
    match e {
        AnnotateError::PodAnnotations { .. } => e.to_string(),
        other => panic!("expected a pod annotation error, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_patch_failures_name_the_pod() {
    let fake = one_pod("default", "flaky");
    fake.apply(testpmd_pod("default", "locked"));
    fake.intercept(|r| {
        r.path.ends_with("/pods/locked").then(|| {
            (
                403,
                status_body(
                    403,
                    "Forbidden",
                    "pods \"locked\" is forbidden: User \"system:serviceaccount:kube-system:ferrovn-node\" cannot patch resource \"pods\" in API group \"\" in the namespace \"default\"",
                ),
            )
        })
    });
    // answered with 500 InternalError ("etcdserver: request timed out") once
    fake.fail_once("PATCH", "/api/v1/namespaces/default/pods/flaky");
    let client = fake.client();
    let sink = KubePodAnnotator::new(client);
    let set = annotations_for(&vhost_info()).expect("annotations");

    let msg = pod_error(
        sink.annotate(&pod("default", "locked"), &set, &[])
            .await
            .expect_err("forbidden"),
    );
    assert!(
        msg.contains("pod default/locked") && msg.contains("403") && msg.contains("cannot patch"),
        "{msg}"
    );

    // the Pod was deleted before its ADD finished: setting fails, naming it
    let msg = pod_error(
        sink.annotate(&pod("default", "gone"), &set, &[])
            .await
            .expect_err("gone"),
    );
    assert!(
        msg.contains("pod default/gone") && msg.contains("not found"),
        "{msg}"
    );
    // ... while removing from a deleted Pod is done: its annotations went with it
    sink.annotate(
        &pod("default", "gone"),
        &Default::default(),
        &[annotation_key("net1")],
    )
    .await
    .expect("removal from a deleted pod");

    // a server error, then the retry goes out again (nothing remembered from the failure)
    let msg = pod_error(
        sink.annotate(&pod("default", "flaky"), &set, &[])
            .await
            .expect_err("500"),
    );
    assert!(
        msg.contains("pod default/flaky") && msg.contains("500") && msg.contains("timed out"),
        "{msg}"
    );
    sink.annotate(&pod("default", "flaky"), &set, &[])
        .await
        .expect("retry");
    let flaky: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|s| s.path.ends_with("/pods/flaky"))
        .collect();
    assert_eq!(flaky.len(), 2, "{flaky:?}");
    assert_eq!(flaky[0].body, flaky[1].body);
    assert!(
        fake.annotations("Pod", "default", "flaky")
            .get("vhost-user.ferrovn.io/net1")
            .is_some()
    );
}

#[tokio::test]
async fn names_that_are_not_kubernetes_names_never_reach_the_server() {
    let fake = one_pod("default", "web-0");
    let client = fake.client();
    let sink = KubePodAnnotator::new(client);
    let set = annotations_for(&vhost_info()).expect("annotations");
    for (ns, name) in [
        ("default", "../../nodes/node-a"),
        ("Default", "web-0"),
        ("default", ""),
        ("default", "web-0?dryRun=All"),
        ("kube system", "web-0"),
    ] {
        let msg = pod_error(
            sink.annotate(&pod(ns, name), &set, &[])
                .await
                .expect_err("bad name"),
        );
        assert!(
            msg.contains("not a valid Kubernetes object name"),
            "{ns}/{name}: {msg}"
        );
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

/// The offload outcome of a start where OVS already had the settings (after the restart the
/// previous start asked for).
fn offload_in_force() -> OffloadStart {
    let settings = OffloadSettings {
        hw_offload: true,
        tc_policy: Default::default(),
    };
    let first = plan_offload_config(&BTreeMap::new(), &settings);
    OffloadStart {
        settings: Some(settings),
        plan: plan_offload_config(&first.set, &settings),
    }
}

#[tokio::test]
async fn offload_node_annotations_patch_only_the_differing_keys() {
    // the Node as the previous start left it: restart required, with reasons
    let fake = FakeApi::new();
    fake.apply(node_json(
        "node-a",
        "kernel",
        json!({
            "node.alpha.kubernetes.io/ttl": "0",
            "ovn.kubernetes.io/chassis": "node-a",
            HW_OFFLOAD_ANNOTATION: "true",
            RESTART_REQUIRED_ANNOTATION: "true",
            RESTART_REASONS_ANNOTATION: "restart ovs-vswitchd: hw-offload false -> true"
        }),
    ));
    let client = fake.client();
    let start = offload_in_force();
    assert!(!start.restart_required());
    let sink = KubeNodeSink::new(client, "node-a");
    let mut changed = sink.publish(&start.annotations()).await.expect("publish");
    changed.sort();
    assert_eq!(
        changed,
        vec![RESTART_REASONS_ANNOTATION, RESTART_REQUIRED_ANNOTATION]
    );
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("PATCH", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body = seen[1].body.clone().expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {
            RESTART_REQUIRED_ANNOTATION: "false",
            RESTART_REASONS_ANNOTATION: ""
        }}})
    );
    let node = fake.get("Node", "", "node-a").expect("node");
    assert_eq!(
        node["metadata"]["annotations"]["ovn.kubernetes.io/chassis"],
        "node-a"
    );
    assert_eq!(
        node["metadata"]["annotations"][HW_OFFLOAD_ANNOTATION],
        "true"
    );

    // the next start with the same outcome: a read, no patch
    assert!(
        sink.publish(&start.annotations())
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn offload_node_annotation_failures_name_the_node() {
    let fake = FakeApi::new();
    fake.apply(node_json("node-a", "kernel", json!({})));
    fake.intercept(|r| {
        (r.method == "PATCH").then(|| {
            (
                500,
                status_body(500, "InternalError", "etcdserver: leader changed"),
            )
        })
    });
    let client = fake.client();
    let annotations = offload_in_force().annotations();
    let e = KubeNodeSink::new(client.clone(), "node-a")
        .publish(&annotations)
        .await
        .expect_err("500");
    let msg = e.to_string();
    assert!(
        msg.contains("patching Node node-a") && msg.contains("500") && msg.contains("leader"),
        "{msg}"
    );
    let e = KubeNodeSink::new(client, "node-b")
        .publish(&annotations)
        .await
        .expect_err("no node");
    assert!(
        e.to_string().contains("Node node-b") && e.to_string().contains("not found"),
        "{e}"
    );
}
