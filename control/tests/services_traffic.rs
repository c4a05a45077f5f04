//! Real traffic through the planned Service load balancers: two OVN nodes (network namespaces
//! with their own OVS + ovn-controller, Geneve between them), kernel pods on veths, the NB
//! written by FerrOVN's planner and reconciler. A ClusterIP Service with a backend on each
//! node answers from both, a backend reaches itself through its Service (hairpin), and a
//! Service without endpoints refuses the connection at once instead of timing out.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{Desired, PortIntent, ServiceInputs, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, POD_MTU, TwoNodes};
use serde_json::json;

struct Pod {
    name: &'static str,
    ip: &'static str,
    mac: MacAddr,
    node: usize,
}

const PODS: [Pod; 3] = [
    Pod {
        name: "web-a",
        ip: "10.16.0.11",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x11]),
        node: 0,
    },
    Pod {
        name: "web-b",
        ip: "10.16.0.12",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x12]),
        node: 1,
    },
    Pod {
        name: "client",
        ip: "10.16.0.13",
        mac: MacAddr([0x0e, 0, 0, 0, 0, 0x13]),
        node: 0,
    },
];

fn desired() -> Desired {
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
    let svc = |name: &str, ip: &str| {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap()
    };
    let slice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.16.0.11"], "conditions": {"ready": true}},
                      {"addresses": ["10.16.0.12"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    d.services = ServiceInputs {
        services: vec![svc("web", "10.96.0.10"), svc("empty", "10.96.0.11")],
        endpoint_slices: vec![slice],
        ..Default::default()
    };
    d
}

/// A kernel pod: a netns with eth0 (a veth whose host end is on the node's br-int, bound to
/// the pod's logical port), its address and a default route via the subnet gateway.
fn plumb(node: &Node, pod: &Pod, tag: &str) -> Netns {
    let ns = Netns::create(&format!("fvs-{tag}-{}", pod.name)).expect("pod netns");
    let host = format!("vs{tag}{}", &pod.name[pod.name.len() - 1..]);
    let host = &host[..host.len().min(15)];
    node.netns()
        .ip([
            "link",
            "add",
            host,
            "mtu",
            &POD_MTU.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])
        .expect("veth");
    node.netns()
        .ip(["link", "set", host, "up"])
        .expect("host end up");
    let mac = pod.mac.to_string();
    ns.ip(["link", "set", "eth0", "address", &mac]).unwrap();
    ns.ip(["link", "set", "eth0", "mtu", &POD_MTU.to_string()])
        .unwrap();
    ns.ip(["addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"])
        .unwrap();
    ns.ip(["link", "set", "eth0", "up"]).unwrap();
    ns.ip(["route", "add", "default", "via", "10.16.0.1"])
        .unwrap();
    // TCP across the userspace Geneve tunnel needs checksums done in the pod.
    ns.run(10, "ethtool", ["-K", "eth0", "tx", "off"])
        .expect("ethtool");
    let lsp = format!("{}.default", pod.name);
    node.vsctl([
        "add-port",
        "br-int",
        host,
        "--",
        "set",
        "Interface",
        host,
        &format!("external_ids:iface-id={lsp}"),
    ])
    .expect("add-port");
    node.wait_ovn_installed(host, Duration::from_secs(60))
        .expect("ovn-installed");
    ns
}

/// An HTTP server on :8080 answering the pod's name.
fn serve(ns: &Netns, name: &str, dir: &std::path::Path) -> Child {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), name).unwrap();
    ns.command("python3")
        .args([
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
            "--directory",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("http server")
}

/// `curl` from `ns`: (exit code, body).
fn curl(ns: &Netns, url: &str) -> (i32, String) {
    let out = ns
        .command("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Asks `url` from `ns` until every name in `want` answered (deadline, not a count).
fn answers(ns: &Netns, url: &str, want: &[&str], within: Duration) -> BTreeSet<String> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while start.elapsed() < within {
        let (code, body) = curl(ns, url);
        if code == 0 {
            seen.insert(body);
        }
        if want.iter().all(|w| seen.contains(*w)) {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_reaches_both_backends_hairpins_and_rejects_without_endpoints() {
    let tb = TwoNodes::start().expect("two nodes");
    let sync = NbSync::connect(&tb.central.nb_remote(), 500)
        .await
        .expect("NB");
    let p = plan(&desired());
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    sync.sync(&p).await.expect("sync");

    let tag = unique_tag();
    let pods: Vec<Netns> = PODS
        .iter()
        .map(|p| plumb(&tb.nodes[p.node], p, &tag))
        .collect();
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    tb.central
        .nbctl(&["--wait=hv", "sync"])
        .expect("flows on both nodes");
    let dir = tempfile::tempdir().unwrap();
    let mut servers = vec![
        serve(&pods[0], "web-a", dir.path()),
        serve(&pods[1], "web-b", dir.path()),
    ];

    // Direct first: the pods and the servers work at all.
    let direct = answers(
        &pods[2],
        "http://10.16.0.12:8080/",
        &["web-b"],
        Duration::from_secs(30),
    );
    assert!(
        direct.contains("web-b"),
        "client -> web-b direct: {direct:?}"
    );

    let via_vip = answers(
        &pods[2],
        "http://10.96.0.10/",
        &["web-a", "web-b"],
        Duration::from_secs(60),
    );
    assert_eq!(
        via_vip,
        ["web-a".to_string(), "web-b".to_string()].into(),
        "client -> ClusterIP reaches both backends"
    );

    // Hairpin: web-a through its own Service reaches itself too.
    let hairpin = answers(
        &pods[0],
        "http://10.96.0.10/",
        &["web-a"],
        Duration::from_secs(60),
    );
    assert!(hairpin.contains("web-a"), "hairpin: {hairpin:?}");

    // No endpoints: refused (curl exit 7) at once, not a timeout (28).
    let start = Instant::now();
    let (code, _) = curl(&pods[2], "http://10.96.0.11/");
    assert_eq!(code, 7, "connection refused, not {code}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
