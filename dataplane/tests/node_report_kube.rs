//! `ferrovn-node --kubeconfig`: the real agent binary in cluster mode against a small HTTP
//! API server (inside the node's netns), with real OVN: the Node's labels decide the profile,
//! the profile and chassis annotations are merge-patched onto the Node (the chassis only once
//! ovn-controller registered it), and a pod's allocation comes from its Pod object (404 while it
//! does not exist, then its annotations).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrovn_cni::protocol::{AttachmentRequest, PodIdentity, Request, Response, call};
use ferrovn_dataplane::report::{CHASSIS_ANNOTATION, TUNNEL_INTERFACE_ANNOTATION};
use ferrovn_testkit::fake_kube::{FakeApi, Recorded, node_json, pod_json};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

/// Serves `api` over HTTP on 127.0.0.1 of `netns` (where the agent runs), from `rt`; returns
/// the port.
fn start_api(rt: &tokio::runtime::Runtime, netns: &Path, api: &FakeApi) -> u16 {
    let listener =
        ferrovn_dataplane::netns::run_in_netns(Some(netns), || TcpListener::bind("127.0.0.1:0"))
            .expect("enter netns")
            .expect("bind in netns");
    let _guard = rt.enter();
    api.serve_http_on(listener).port()
}

fn pod_object(node: &str) -> Value {
    pod_json(
        "default",
        "web-0",
        node,
        json!({
            "ovn.kubernetes.io/allocated": "true",
            "ovn.kubernetes.io/cidr": "10.16.0.0/24",
            "ovn.kubernetes.io/gateway": "10.16.0.1",
            "ovn.kubernetes.io/ip_address": "10.16.0.5",
            "ovn.kubernetes.io/logical_switch": "ls1",
            "ovn.kubernetes.io/mac_address": "0a:58:0a:10:00:05"
        }),
    )
}

fn node_annotation(api: &FakeApi, name: &str, key: &str) -> Option<String> {
    api.annotations("Node", "", name)[key]
        .as_str()
        .map(str::to_string)
}

#[test]
fn cluster_mode_reads_the_api_and_patches_the_node() {
    let tag = unique_tag();
    let central = OvnCentral::start().expect("OVN central");
    let name = format!("fv-{tag}-kb");
    let mut node = Node::start(&format!("fvt-{tag}-kb"), &NodeConfig::plain(&name)).expect("node");
    let api = FakeApi::new();
    api.apply(node_json(
        &name,
        "kernel",
        json!({"node.alpha.kubernetes.io/ttl": "0"}),
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let port = start_api(&rt, &node.netns_path(), &api);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n\
             users:\n- name: t\n  user:\n    token: test-token\n"
        ),
    )
    .expect("kubeconfig");
    let kube_arg = format!("--kubeconfig={}", kubeconfig.display());
    let sb = central.sb_remote();
    let sock = node
        .start_agent(
            Path::new(AGENT),
            &sb,
            dir.path(),
            &[
                &kube_arg,
                "--gc-interval-secs=0",
                "--vhost-helper-interval-secs=0",
                "--allocation-timeout-secs=20",
            ],
        )
        .expect("agent");

    // the profile came from the Node's label and went back onto the Node
    assert!(
        wait_until(Duration::from_secs(20), || node_annotation(
            &api,
            &name,
            "ferrovn.io/profile-reason"
        )
        .as_deref()
            == Some("label-kernel")),
        "no profile annotations; agent log:\n{}",
        node.agent_log()
    );
    assert_eq!(
        node_annotation(&api, &name, "ferrovn.io/profile").as_deref(),
        Some("kernel")
    );
    // no chassis before ovn-controller registered it
    assert!(
        wait_until(Duration::from_secs(20), || node
            .agent_log()
            .contains("waiting for chassis")),
        "{}",
        node.agent_log()
    );
    assert_eq!(node_annotation(&api, &name, CHASSIS_ANNOTATION), None);

    let started = Instant::now();
    node.start_ovn_controller().expect("ovn-controller");
    assert!(
        wait_until(Duration::from_secs(30), || node_annotation(
            &api,
            &name,
            CHASSIS_ANNOTATION
        )
        .as_deref()
            == Some(name.as_str())),
        "no chassis annotation on the Node; agent log:\n{}",
        node.agent_log()
    );
    println!(
        "chassis annotation on the Node {:?} after ovn-controller started",
        started.elapsed()
    );
    assert_eq!(
        node_annotation(&api, &name, TUNNEL_INTERFACE_ANNOTATION).as_deref(),
        Some("lo")
    );
    assert_eq!(
        node_annotation(&api, &name, "node.alpha.kubernetes.io/ttl").as_deref(),
        Some("0"),
        "other annotations stay"
    );

    // every write was a merge patch of the Node; the chassis one carried only its own keys
    {
        let seen = api.requests();
        let patches: Vec<&Recorded> = seen.iter().filter(|s| s.method == "PATCH").collect();
        assert_eq!(patches.len(), 2, "{patches:?}");
        for p in &patches {
            assert_eq!(p.path, format!("/api/v1/nodes/{name}"));
            assert_eq!(
                p.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
        }
        let chassis_patch = patches[1].body.clone().expect("json");
        let keys: Vec<&String> = chassis_patch["metadata"]["annotations"]
            .as_object()
            .expect("annotations")
            .keys()
            .collect();
        assert_eq!(
            keys,
            [
                "ferrovn.io/encap-ip",
                "ferrovn.io/encap-type",
                CHASSIS_ANNOTATION,
                TUNNEL_INTERFACE_ANNOTATION
            ]
        );
    }

    // a pod: ADD while its Pod does not exist yet, the controller "creates" it a second later
    central.nbctl(&["ls-add", "ls1"]).expect("ls");
    central
        .nbctl(&[
            "lsp-add",
            "ls1",
            "web-0.default",
            "--",
            "lsp-set-addresses",
            "web-0.default",
            "0a:58:0a:10:00:05 10.16.0.5",
        ])
        .expect("lsp");
    let pod_ns = Netns::create(&format!("fvt-{tag}-kp")).expect("pod netns");
    let request = Request::Add(AttachmentRequest {
        cni_version: "1.0.0".into(),
        network: "ovn".into(),
        container_id: format!("ctr{}", tag.replace('x', "")),
        netns: Some(pod_ns.path().display().to_string()),
        ifname: "eth0".into(),
        pod: Some(PodIdentity {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: None,
            infra_container_id: None,
        }),
        provider: None,
        subnet: None,
        device_id: None,
        mtu: None,
        vhost_user: None,
        cni_args: BTreeMap::new(),
        prev_result: None,
        netconf: json!({"cniVersion": "1.0.0", "name": "ovn", "type": "ferrovn-cni"}),
    });
    let add = std::thread::spawn(move || call(&sock, &request, Duration::from_secs(40)));
    let pod_get = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|s| s.path == "/api/v1/namespaces/default/pods/web-0")
            .count()
    };
    // the agent waits for the Pod: it watches its node's Pods (or asks for this one)
    let watching = |api: &FakeApi| {
        api.requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" && r.is_watch())
    };
    assert!(
        wait_until(Duration::from_secs(10), || watching(&api)
            || pod_get(&api) >= 1),
        "the agent never asked for the Pod; log:\n{}",
        node.agent_log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let asked_at = Instant::now();
    api.apply(pod_object(&name));
    let response = add.join().expect("ADD thread").expect("ADD call");
    println!(
        "ADD answered {:?} after the Pod got its allocation",
        asked_at.elapsed()
    );
    let result = match response {
        Response::Ok { result: Some(r) } => serde_json::to_value(&r).expect("result json"),
        other => panic!("ADD failed: {other:?}; agent log:\n{}", node.agent_log()),
    };
    assert!(result.to_string().contains("10.16.0.5/24"), "{result}");
    let gets = pod_get(&api);
    // the watch delivered it, or 404s while waiting (spaced >= 250 ms) and the one that found
    // the allocation; never a tight poll
    assert!(
        (watching(&api) && gets <= 12) || (2..=12).contains(&gets),
        "{gets} GETs of the Pod"
    );
}
