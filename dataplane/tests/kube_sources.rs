//! Cluster-mode seams of the node agent against a fake API server (tower-test): the exact
//! requests (method, path, content type, body) for Pod and Node reads and the Node annotation
//! merge patch, with Kubernetes-shaped objects and error Status bodies.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovn_dataplane::alloc::{AllocationError, AllocationSource, PRIMARY_PROVIDER, PodRef};
use ferrovn_dataplane::kube_api::{KubeAllocations, KubeNodeSink, node_labels};
use ferrovn_dataplane::report::NodeReportSink;
use ferrovn_testkit::fake_kube::{FakeApi, node_json, pod_json, status_body};
use serde_json::{Value, json};

fn allocated_annotations() -> Value {
    json!({
        "ovn.kubernetes.io/allocated": "true",
        "ovn.kubernetes.io/cidr": "10.16.0.0/16",
        "ovn.kubernetes.io/gateway": "10.16.0.1",
        "ovn.kubernetes.io/ip_address": "10.16.0.12",
        "ovn.kubernetes.io/logical_router": "ovn-cluster",
        "ovn.kubernetes.io/logical_switch": "ovn-default",
        "ovn.kubernetes.io/mac_address": "0a:58:0a:10:00:0c",
        "ovn.kubernetes.io/pod_nic_type": "veth-pair",
        "ovn.kubernetes.io/routed": "true"
    })
}

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn web0() -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: "web-0".into(),
    }
}

#[tokio::test]
async fn node_sink_patches_only_the_differing_keys_then_nothing() {
    let fake = FakeApi::new();
    fake.apply(node_json(
        "node-a",
        "userspace",
        json!({
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            "ovn.kubernetes.io/chassis": "node-a",
            "ovn.kubernetes.io/tunnel_interface": "eth1"
        }),
    ));
    let client = fake.client();
    let sink = KubeNodeSink::new(client, "node-a");
    let desired = ann(&[
        ("ovn.kubernetes.io/chassis", "node-a"),
        ("ovn.kubernetes.io/tunnel_interface", "eth0"),
        ("ferrovn.io/encap-ip", "172.18.0.3"),
        ("ferrovn.io/encap-type", "geneve"),
    ]);
    let mut changed = sink.publish(&desired).await.expect("publish");
    changed.sort();
    assert_eq!(
        changed,
        vec![
            "ferrovn.io/encap-ip",
            "ferrovn.io/encap-type",
            "ovn.kubernetes.io/tunnel_interface"
        ]
    );
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("PATCH", "/api/v1/nodes/node-a")
    );
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body = seen[1].body.clone().expect("json body");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {
            "ferrovn.io/encap-ip": "172.18.0.3",
            "ferrovn.io/encap-type": "geneve",
            "ovn.kubernetes.io/tunnel_interface": "eth0"
        }}})
    );
    // the server applied it; other annotations are still there
    let node = fake.get("Node", "", "node-a").expect("node");
    assert_eq!(
        node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"],
        "0"
    );
    assert_eq!(
        node["metadata"]["annotations"]["ovn.kubernetes.io/tunnel_interface"],
        "eth0"
    );

    // publishing the same again: a read, no patch
    let changed = sink.publish(&desired).await.expect("publish again");
    assert!(changed.is_empty(), "{changed:?}");
    let seen = fake.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].method, "GET");
}

#[tokio::test]
async fn node_sink_on_a_node_without_annotations_and_errors() {
    // a fresh Node may have no annotations map at all
    let mut bare = node_json("node-b", "userspace", json!({}));
    bare["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let fake = FakeApi::new();
    fake.apply(bare);
    let client = fake.client();
    let desired = ann(&[("ovn.kubernetes.io/chassis", "node-b")]);
    let changed = KubeNodeSink::new(client.clone(), "node-b")
        .publish(&desired)
        .await
        .expect("publish");
    assert_eq!(changed, vec!["ovn.kubernetes.io/chassis"]);
    let body = fake.requests()[1].body.clone().expect("json");
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {"ovn.kubernetes.io/chassis": "node-b"}}})
    );

    // no such Node: an error naming it, no PATCH
    let e = KubeNodeSink::new(client, "node-x")
        .publish(&desired)
        .await
        .expect_err("missing node");
    assert!(e.to_string().contains("Node node-x"), "{e}");
    assert!(e.to_string().contains("not found"), "{e}");
    assert_eq!(fake.requests().len(), 3);

    // the API server refuses the patch (RBAC): the status is in the error
    let forbidden = FakeApi::new();
    forbidden.apply(node_json("node-a", "userspace", json!({})));
    forbidden.intercept(|r| {
        (r.method == "PATCH").then(|| {
            (
                403,
                status_body(
                    403,
                    "Forbidden",
                    "nodes \"node-a\" is forbidden: User \"system:serviceaccount:kube-system:ferrovn-node\" cannot patch resource \"nodes\"",
                ),
            )
        })
    });
    let client = forbidden.client();
    let e = KubeNodeSink::new(client, "node-a")
        .publish(&desired)
        .await
        .expect_err("forbidden");
    let msg = e.to_string();
    assert!(
        msg.contains("patching Node node-a") && msg.contains("403") && msg.contains("forbidden"),
        "{msg}"
    );
}

#[tokio::test]
async fn node_sink_refuses_a_malformed_node_naming_the_field() {
    let fake = FakeApi::new();
    fake.apply(node_json(
        "node-a",
        "userspace",
        json!({"ovn.kubernetes.io/chassis": {"nested": true}}),
    ));
    let client = fake.client();
    let e = KubeNodeSink::new(client, "node-a")
        .publish(&ann(&[("ovn.kubernetes.io/chassis", "node-a")]))
        .await
        .expect_err("malformed");
    let msg = e.to_string();
    assert!(
        msg.contains("metadata.annotations[\"ovn.kubernetes.io/chassis\"]"),
        "{msg}"
    );
    // nothing written on a Node we could not read
    assert!(fake.requests().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn node_labels_come_from_the_node() {
    let fake = FakeApi::new();
    fake.apply(node_json("node-a", "userspace", json!({})));
    let client = fake.client();
    let labels = node_labels(&client, "node-a").await.expect("labels");
    assert_eq!(
        labels
            .get("ovn.kubernetes.io/ovs_dp_type")
            .map(String::as_str),
        Some("userspace")
    );
    let seen = fake.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/nodes/node-a")
    );
    let e = node_labels(&client, "node-z").await.expect_err("no node");
    assert!(e.to_string().contains("Node node-z"), "{e}");
}

#[tokio::test]
async fn pod_allocation_from_the_pod_object() {
    let fake = FakeApi::new();
    fake.apply(pod_json(
        "default",
        "web-0",
        "node-a",
        allocated_annotations(),
    ));
    let client = fake.client();
    let src = KubeAllocations::new(client).with_min_interval(Duration::ZERO);
    let a = src
        .lookup(&web0(), PRIMARY_PROVIDER)
        .await
        .expect("ok")
        .expect("allocated");
    assert_eq!(a.logical_switch, "ovn-default");
    assert_eq!(a.mac.to_string(), "0a:58:0a:10:00:0c");
    assert_eq!(a.addresses, vec!["10.16.0.12/16".parse().expect("net")]);
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/api/v1/namespaces/default/pods/web-0")
    );

    // another provider on the same pod: not allocated
    assert_eq!(src.lookup(&web0(), "net1.default.ovn").await, Ok(None));
}

#[tokio::test]
async fn missing_pending_and_failing_pods() {
    let fake = FakeApi::new();
    // created, not yet allocated by the controller
    fake.apply(pod_json(
        "default",
        "web-1",
        "node-a",
        json!({"kubernetes.io/psp": "restricted"}),
    ));
    // annotations of the wrong JSON type
    fake.apply(pod_json(
        "default",
        "web-2",
        "node-a",
        json!({"ovn.kubernetes.io/allocated": true}),
    ));
    fake.intercept(|r| {
        if r.path.ends_with("/pods/web-3") {
            Some((200, "{\"kind\":\"Pod\",\"metadata\":".into()))
        } else if r.path.ends_with("/pods/web-4") {
            Some((
                500,
                status_body(500, "InternalError", "etcdserver: request timed out"),
            ))
        } else {
            None
        }
    });
    let client = fake.client();
    let src = KubeAllocations::new(client).with_min_interval(Duration::ZERO);
    let pod = |name: &str| PodRef {
        namespace: "default".into(),
        name: name.into(),
    };

    // 404: not there (yet)
    assert_eq!(src.lookup(&web0(), PRIMARY_PROVIDER).await, Ok(None));
    // no allocation annotations yet
    assert_eq!(src.lookup(&pod("web-1"), PRIMARY_PROVIDER).await, Ok(None));

    let source_error = |r: Result<_, AllocationError>| match r {
        Err(AllocationError::Source {
            source_name,
            reason,
        }) => format!("{source_name}: {reason}"),
        other => panic!("expected a source error, got {other:?}"),
    };
    let msg = source_error(src.lookup(&pod("web-2"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-2")
            && msg.contains("metadata.annotations[\"ovn.kubernetes.io/allocated\"]")
            && msg.contains("expected a string"),
        "{msg}"
    );
    let msg = source_error(src.lookup(&pod("web-3"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-3") && msg.contains("not JSON"),
        "{msg}"
    );
    let msg = source_error(src.lookup(&pod("web-4"), PRIMARY_PROVIDER).await);
    assert!(
        msg.contains("default/web-4") && msg.contains("500") && msg.contains("timed out"),
        "{msg}"
    );
    // a name that cannot be a Pod's never reaches the API server
    let before = fake.requests().len();
    let msg = source_error(src.lookup(&pod("../nodes/x"), PRIMARY_PROVIDER).await);
    assert!(msg.contains("not a valid Kubernetes object name"), "{msg}");
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn lookups_of_one_waiting_pod_are_spaced() {
    let fake = FakeApi::new();
    let client = fake.client();
    let interval = Duration::from_millis(400);
    let src = KubeAllocations::new(client).with_min_interval(interval);
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(src.lookup(&web0(), PRIMARY_PROVIDER).await, Ok(None));
    }
    // three GETs, at least two intervals apart in total
    assert_eq!(fake.requests().len(), 3);
    assert!(started.elapsed() >= interval * 2, "{:?}", started.elapsed());
    // another pod is not held back by this one
    let other = PodRef {
        namespace: "default".into(),
        name: "web-9".into(),
    };
    let t = Instant::now();
    assert_eq!(src.lookup(&other, PRIMARY_PROVIDER).await, Ok(None));
    assert!(t.elapsed() < interval, "{:?}", t.elapsed());
}

/// `ferrovn-node --kube`: one watch of the node's Pods (`fieldSelector=spec.nodeName=<node>`)
/// instead of GETs every few hundred ms; an ADD waiting for the controller wakes on the
/// Pod's event, and the waiting costs no request at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_source_wakes_on_the_pods_event_without_polling() {
    let api = FakeApi::new();
    let mut pod = pod_json("default", "web-0", "node-a", json!({}));
    api.apply(pod.clone());
    let src = Arc::new(KubeAllocations::new(api.client()).watching("node-a"));
    assert!(
        ferrovn_testkit::wait::wait_until_async(Duration::from_secs(10), || api.open_watches() > 0)
            .await,
        "the agent opens a watch"
    );
    let waiting = {
        let src = src.clone();
        tokio::spawn(async move {
            src.wait_for(
                &web0(),
                PRIMARY_PROVIDER,
                Instant::now() + Duration::from_secs(30),
            )
            .await
        })
    };
    // the controller allocates while the ADD waits (had the ADD not started waiting yet, it
    // would find the allocation at once: this pause cannot make the test pass wrongly)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = api.requests().len();
    pod["metadata"]["annotations"] = allocated_annotations();
    let t = Instant::now();
    api.apply(pod);
    let a = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the event")
        .expect("task")
        .expect("ok")
        .expect("allocated");
    assert_eq!(a.mac.to_string(), "0a:58:0a:10:00:0c");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let requests = api.requests();
    // while it waited nothing was asked: the watch brought the change
    assert_eq!(requests.len(), before, "{:?}", &requests[before..]);
    let pods_watch = requests
        .iter()
        .find(|r| r.is_watch() && r.path == "/api/v1/pods")
        .expect("a watch of all namespaces' pods");
    assert_eq!(
        pods_watch.param("fieldSelector").as_deref(),
        Some("spec.nodeName%3Dnode-a"),
        "{pods_watch:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/default/pods/web-0"),
        "no GET of the pod: {requests:?}"
    );
}
