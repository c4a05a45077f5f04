//! `sessionAffinity: ClientIP` on the userspace datapath, with real traffic: the first
//! connection of every affinity window completes quickly, the client sticks to one backend
//! within `timeoutSeconds`, and a fresh choice follows after it.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::service_pods::{self, Pod, serve};

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{Desired, PortIntent, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, TwoNodes};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

const PODS: [Pod; 3] = [
    Pod {
        name: "web-a",
        ip: "10.16.0.31",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x31]),
        node: 0,
    },
    Pod {
        name: "web-b",
        ip: "10.16.0.32",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x32]),
        node: 1,
    },
    Pod {
        name: "client",
        ip: "10.16.0.33",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x33]),
        node: 0,
    },
];

const VIP: &str = "10.96.0.12";

/// `timeoutSeconds` of the Service: short, so the test sees several windows, and long enough
/// that a loaded machine's gaps between requests stay inside one.
const TIMEOUT_S: i32 = 5;

fn desired(timeout: i32) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/24", None);
    for p in &PODS {
        d.ports.push(PortIntent {
            pod: p.name.into(),
            namespace: "default".into(),
            provider: "ovn".into(),
            subnet: "ovn-default".into(),
            node: format!("n{}", p.node),
            mac: p.mac,
            ips: vec![p.ip.parse().unwrap()],
            port_security: true,
        });
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "sticky", "namespace": "default"},
        "spec": {"clusterIP": VIP, "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                           {"name": "dns", "port": 81, "targetPort": 8081, "protocol": "UDP"}]},
    }))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "sticky-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "sticky"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "dns", "port": 8081, "protocol": "UDP"}],
        "endpoints": [{"addresses": [PODS[0].ip], "nodeName": "n0", "conditions": {"ready": true}},
                      {"addresses": [PODS[1].ip], "nodeName": "n1", "conditions": {"ready": true}}],
    }))
    .unwrap();
    d.services.services = vec![svc];
    d.services.endpoint_slices = vec![slice];
    d
}

fn plumb(node: &Node, pod: &Pod, tag: &str) -> Netns {
    service_pods::plumb(node, pod, "va", tag)
}

/// A new UDP socket to the VIP sends a datagram every 0.3 s until one is answered or 4 s
/// passed: prints the answer, or `timeout`.
const UDP_CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
s.connect((sys.argv[1], int(sys.argv[2])))
t0 = time.time()
while time.time() - t0 < 4:
    s.send(b"hi")
    try:
        print(s.recv(2048).decode())
        break
    except socket.timeout:
        pass
else:
    print("timeout")
"#;

/// One UDP exchange (see [`UDP_CLIENT`]): the backend's name and how long it took.
fn udp(ns: &Netns) -> (Option<String>, Duration) {
    let start = Instant::now();
    let out = ns
        .command("python3")
        .args(["-c", UDP_CLIENT, VIP, "81"])
        .output()
        .expect("udp client");
    let answer = String::from_utf8_lossy(&out.stdout);
    // a backend answers "<name> <client address>"
    let name = answer.split_whitespace().next().unwrap_or_default();
    (
        name.starts_with("web-").then(|| name.to_string()),
        start.elapsed(),
    )
}

/// One HTTP GET with a `max` deadline: the backend's name and how long it took.
fn get(ns: &Netns, url: &str, max: u64) -> (Option<String>, Duration) {
    let start = Instant::now();
    let out = ns
        .command("curl")
        .args(["-s", "--max-time", &max.to_string(), url])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let name = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    (out.status.success().then_some(name), start.elapsed())
}

/// The learnt affinity flows (OpenFlow table 78) on `node`'s br-int: one per open window.
fn learnt(node: &Node) -> usize {
    let out = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow15", "dump-flows"])
        .arg(format!("unix:{}/br-int.mgmt", node.dir().display()))
        .arg("table=78")
        .output()
        .expect("ovs-ofctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("table=78"))
        .count()
}

/// The learnt affinity flows and the conntrack entries to the VIP on `node`, for a failure.
fn datapath_state(node: &Node) -> String {
    let flows = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow15", "dump-flows"])
        .arg(format!("unix:{}/br-int.mgmt", node.dir().display()))
        .arg("table=78")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ct = node
        .appctl_vswitchd(["dpctl/dump-conntrack", "-m"])
        .unwrap_or_default();
    let ct: Vec<_> = ct.lines().filter(|l| l.contains(VIP)).collect();
    format!("table 78:\n{flows}conntrack to {VIP}:\n{}", ct.join("\n"))
}

/// Waits until no affinity window is open on `node` (the client's last one expired).
fn wait_expired(node: &Node) {
    let start = Instant::now();
    while learnt(node) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a learnt affinity flow never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn first_connection_of_each_affinity_window_completes_and_affinity_expires() {
    let tb = TwoNodes::start().expect("two nodes");
    let chassis = [tb.nodes[0].name(), tb.nodes[1].name()];
    let sync = NbSync::connect(&tb.central.nb_remote(), 500)
        .await
        .expect("NB");
    let mut d = desired(TIMEOUT_S);
    for (i, c) in chassis.iter().enumerate() {
        d.services
            .node_chassis
            .insert(format!("n{i}"), c.to_string());
    }
    let p = plan(&d);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    sync.sync(&p).await.expect("sync");
    let tag = unique_tag();
    let pods: Vec<Netns> = PODS
        .iter()
        .map(|p| plumb(&tb.nodes[p.node], p, &tag))
        .collect();
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    tb.central.nbctl(&["--wait=hv", "sync"]).expect("flows");
    let mut servers = vec![serve(&pods[0], "web-a"), serve(&pods[1], "web-b")];
    let client = &pods[2];
    let url = format!("http://{VIP}/");

    // Pods and servers work at all: the backends answer directly.
    let start = Instant::now();
    while get(client, &format!("http://{}:8080/", PODS[1].ip), 3)
        .0
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(60), "web-b direct");
    }

    // Without the agent: OVN drops the window's opening SYN and every retransmission (the
    // defect the agent works around; if this ever answers, OVN fixed it).
    let (first, took) = get(client, &url, 4);
    assert_eq!(
        first, None,
        "the first connection of a window answered without the agent ({took:?}): OVN fixed commit_lb_aff"
    );
    // The same for a UDP flow: every datagram of it is dropped while its entry lives.
    let (first, took) = udp(client);
    assert_eq!(
        first, None,
        "the first UDP flow of a window answered without the agent ({took:?})"
    );
    wait_expired(&tb.nodes[0]);

    // The agent's watcher on each node, as ferrovn-node runs it.
    let watchers: Vec<_> = tb
        .nodes
        .iter()
        .map(|n| {
            tokio::spawn(ferrovn_dataplane::affinity_unstick::run(
                ferrovn_dataplane::ct_reflush::OvsTarget {
                    pidfile: n.dir().join("ovs-vswitchd.pid"),
                    bridge: "br-int".into(),
                },
            ))
        })
        .collect();

    // Each window: the first connection answers within 4 s, the following ones (inside
    // timeoutSeconds) go to the same backend, and after it expired a fresh choice is made:
    // within a deadline both backends have opened a window.
    let mut chosen = (BTreeSet::new(), BTreeSet::new());
    let mut firsts = Vec::new();
    let start = Instant::now();
    while chosen.0.len() < 2 || chosen.1.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "affinity never moved to another backend: {chosen:?}, first exchanges {firsts:?}"
        );
        // Usually one SYN retransmission (1 s); two (3 s) when the agent's round came after
        // the first one on a loaded machine.
        let (first, took) = get(client, &url, 4);
        let first = first.unwrap_or_else(|| {
            panic!(
                "first TCP connection of a window failed after {took:?}; earlier: {firsts:?}\n{}",
                datapath_state(&tb.nodes[0])
            )
        });
        let (first_udp, took_udp) = udp(client);
        let first_udp = first_udp.unwrap_or_else(|| {
            panic!(
                "first UDP flow of a window failed after {took_udp:?}; earlier: {firsts:?}\n{}",
                datapath_state(&tb.nodes[0])
            )
        });
        firsts.push((took, took_udp));
        for _ in 0..5 {
            let (b, _) = get(client, &url, 3);
            assert_eq!(
                b.as_deref(),
                Some(first.as_str()),
                "TCP sticky within the window"
            );
            let (b, _) = udp(client);
            assert_eq!(
                b.as_deref(),
                Some(first_udp.as_str()),
                "UDP sticky within the window"
            );
        }
        chosen.0.insert(first);
        chosen.1.insert(first_udp);
        wait_expired(&tb.nodes[0]);
    }
    eprintln!(
        "affinity windows: {}, first (TCP, UDP) exchanges took {firsts:?}",
        firsts.len()
    );

    for w in watchers {
        w.abort();
    }
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
