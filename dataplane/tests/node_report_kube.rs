//! `ferrovn-node --kubeconfig`: the real agent binary in cluster mode against a small HTTP
//! API server (inside the node's netns), with real OVN: the Node's labels decide the profile,
//! the profile and chassis annotations are merge-patched onto the Node (the chassis only once
//! ovn-controller registered it), and a pod's allocation comes from its Pod object (404 while it
//! does not exist, then its annotations).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovn_cni::protocol::{AttachmentRequest, PodIdentity, Request, Response, call};
use ferrovn_dataplane::report::{CHASSIS_ANNOTATION, TUNNEL_INTERFACE_ANNOTATION};
use ferrovn_testkit::fake_kube_simple::{
    Fake, FakeState, Seen, default_handler, node_json, pod_json,
};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim(), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// HTTP/1.1 with keep-alive, one thread per connection.
fn serve_connection(stream: TcpStream, api: Fake) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            read_chunked(&mut reader)?
        } else {
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut b = vec![0; len];
            reader.read_exact(&mut b)?;
            b
        };
        let seen = Seen {
            method,
            path,
            content_type: headers.get("content-type").cloned(),
            body,
        };
        let (code, text) = api.answer(seen);
        write!(
            writer,
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}

/// Listens on 127.0.0.1 of `netns` (where the agent runs); returns the port.
fn start_api(netns: &Path, api: Fake) -> u16 {
    let listener =
        ferrovn_dataplane::netns::run_in_netns(Some(netns), || TcpListener::bind("127.0.0.1:0"))
            .expect("enter netns")
            .expect("bind in netns");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let api = api.clone();
            std::thread::spawn(move || {
                let _ = serve_connection(stream, api);
            });
        }
    });
    port
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

fn node_annotation(api: &Fake, key: &str) -> Option<String> {
    api.node()["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

#[test]
fn cluster_mode_reads_the_api_and_patches_the_node() {
    let tag = unique_tag();
    let central = OvnCentral::start().expect("OVN central");
    let name = format!("fv-{tag}-kb");
    let mut node = Node::start(&format!("fvt-{tag}-kb"), &NodeConfig::plain(&name)).expect("node");
    let api = Fake::new(
        FakeState::with_node(node_json(
            &name,
            "kernel",
            json!({"node.alpha.kubernetes.io/ttl": "0"}),
        )),
        Arc::new(default_handler),
    );
    let port = start_api(&node.netns_path(), api.clone());
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
            "ferrovn.io/profile-reason"
        )
        .as_deref()
            == Some("label-kernel")),
        "no profile annotations; agent log:\n{}",
        node.agent_log()
    );
    assert_eq!(
        node_annotation(&api, "ferrovn.io/profile").as_deref(),
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
    assert_eq!(node_annotation(&api, CHASSIS_ANNOTATION), None);

    let started = Instant::now();
    node.start_ovn_controller().expect("ovn-controller");
    assert!(
        wait_until(Duration::from_secs(30), || node_annotation(
            &api,
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
        node_annotation(&api, TUNNEL_INTERFACE_ANNOTATION).as_deref(),
        Some("lo")
    );
    assert_eq!(
        node_annotation(&api, "node.alpha.kubernetes.io/ttl").as_deref(),
        Some("0"),
        "other annotations stay"
    );

    // every write was a merge patch of the Node; the chassis one carried only its own keys
    {
        let seen = api.seen();
        let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == "PATCH").collect();
        assert_eq!(patches.len(), 2, "{patches:?}");
        for p in &patches {
            assert_eq!(p.path, format!("/api/v1/nodes/{name}"));
            assert_eq!(
                p.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
        }
        let chassis_patch: Value = serde_json::from_slice(&patches[1].body).expect("json");
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
    let pod_get = |api: &Fake| {
        api.seen()
            .iter()
            .filter(|s| s.path == "/api/v1/namespaces/default/pods/web-0")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || pod_get(&api) >= 1),
        "the agent never asked for the Pod; log:\n{}",
        node.agent_log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let asked_at = Instant::now();
    api.state
        .lock()
        .expect("lock")
        .insert_pod(pod_object(&name));
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
    // 404s while waiting (spaced >= 250 ms) and the one that found the allocation
    assert!((2..=12).contains(&gets), "{gets} GETs of the Pod");
}
