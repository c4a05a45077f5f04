//! The node's join port `ovn0` with real traffic: the real `ferrovn-controller` (manifest mode)
//! plans the NB from Node and Pod manifests, real OVN (NB, SB, northd, two ovn-controllers,
//! userspace-datapath ovs-vswitchd in two network-namespace nodes, Geneve between them), the
//! real agent binds `node-<node>` as ovn0 from the controller's node record, and the built CNI
//! plugin plumbs kernel pods. Then: node → pod HTTP (a kubelet probe's shape) and ping, pod →
//! own node, pod → other node and its join address; an agent restart keeps ovn0 untouched; a
//! removed Node loses its ovn0. Egress: distributed (masqueraded or routed) and centralized
//! (through `gatewayNode`, SNAT with the `node:ip` address, failover when the active gateway's
//! ovn-controller and agent die, measured).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_testkit::binaries::cni_plugin_binary;
use ferrovn_testkit::cni::{CniCall, cni_netconf, run_cni};
use ferrovn_testkit::controller::ManifestController;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, TwoNodes};
use ferrovn_testkit::require::{Need, require};
use ferrovn_testkit::wait::{assert_within, wait_for};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");
/// The nodes' addresses (InternalIP): their underlay addresses on br-phy.
const NODE_IPS: [&str; 2] = ["192.168.100.1", "192.168.100.2"];

fn node_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n"
    )
}

fn pod_yaml(name: &str, node: &str) -> String {
    pod_yaml_in("default", name, node)
}

fn pod_yaml_in(ns: &str, name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n"
    )
}

fn record_annotations(path: &Path) -> Value {
    let body = std::fs::read(path).expect("record");
    let v: Value = serde_json::from_slice(&body).expect("record json");
    v["annotations"].clone()
}

/// How many times the agent reported a join port pass, and the last such line.
fn join_lines(node: &Node) -> (usize, String) {
    let log = node.agent_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("join port configured"))
        .collect();
    (
        lines.len(),
        lines.last().map(|s| s.to_string()).unwrap_or_default(),
    )
}

fn ovn0_ifindex(node: &Node) -> Option<String> {
    node.netns()
        .ip(["-o", "link", "show", "ovn0"])
        .ok()
        .and_then(|s| s.split(':').next().map(|i| i.trim().to_string()))
}

struct Pod {
    netns: Netns,
    ip: String,
}

fn add_pod(plugin: &Path, node: &Node, name: &str, tag: &str) -> Pod {
    add_pod_in(plugin, node, "default", name, tag)
}

fn add_pod_in(plugin: &Path, node: &Node, ns: &str, name: &str, tag: &str) -> Pod {
    let netns = Netns::create(&format!("fvj-{tag}-{name}")).expect("pod netns");
    let stdin = cni_netconf("1.0.0", "ovn", &node.agent_socket(), &json!({}));
    let cid = format!("ctr{}{name}", tag.replace('x', ""));
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
    let out = run_cni(
        plugin,
        &CniCall {
            command: "ADD",
            container_id: &cid,
            netns: &netns.path().display().to_string(),
            ifname: "eth0",
            args: &args,
            stdin: &stdin,
        },
    )
    .expect("plugin ran");
    assert_eq!(
        out.exit_code,
        0,
        "ADD {name}: {} {} agent log: {}",
        out.stdout,
        out.stderr,
        node.agent_log()
    );
    let ip = out.json()["ips"][0]["address"]
        .as_str()
        .expect("ip")
        .split('/')
        .next()
        .expect("addr")
        .to_string();
    Pod { netns, ip }
}

/// An HTTP server (busybox httpd) in `netns` on port 8080, answering `GET /healthz`.
struct Http {
    child: std::process::Child,
    _root: tempfile::TempDir,
}

impl Http {
    fn start(netns: &Netns) -> Http {
        let root = tempfile::tempdir().expect("httpd root");
        std::fs::write(root.path().join("healthz"), "ok\n").expect("healthz");
        let child = netns
            .command("busybox")
            .args(["httpd", "-f", "-p", "8080", "-h"])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("busybox httpd");
        Http { child, _root: root }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One probe-shaped GET from `from` (2 s limit): the status code and the total time.
fn probe(from: &Netns, ip: &str) -> Option<(u16, Duration)> {
    let out = from
        .run(
            5,
            "curl",
            [
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "2",
                "-w",
                "%{http_code} %{time_total}",
                &format!("http://{ip}:8080/healthz"),
            ],
        )
        .ok()?;
    let mut it = out.split_whitespace();
    let code: u16 = it.next()?.parse().ok()?;
    let secs: f64 = it.next()?.parse().ok()?;
    Some((code, Duration::from_secs_f64(secs)))
}

fn probe_ok(from: &Netns, ip: &str) -> bool {
    probe(from, ip).is_some_and(|(c, _)| c == 200)
}

fn start_agent(node: &mut Node, sb: &str, ctrl: &ManifestController) -> PathBuf {
    let node_file = format!("--node-file={}", ctrl.node_file(node.name()).display());
    node.start_agent(
        Path::new(AGENT),
        sb,
        &ctrl.allocations_dir(),
        &[&node_file, "--join-port-interval-secs=1"],
    )
    .expect("agent")
}

/// Two nodes, the controller with both Node manifests (InternalIP = underlay address), the
/// agents (join port from the controller's node record, 1 s passes) and ovn-controllers.
fn start_fabric() -> (TwoNodes, ManifestController, Vec<String>, String) {
    start_fabric_with(|_| Vec::new())
}

/// [`start_fabric`] with controller flags made from the SB remote.
fn start_fabric_with(
    extra: impl Fn(&str) -> Vec<String>,
) -> (TwoNodes, ManifestController, Vec<String>, String) {
    let mut tb = TwoNodes::start_ovs_only().expect("two nodes");
    let ctrl =
        ManifestController::start_with(&tb.central.nb_remote(), &extra(&tb.central.sb_remote()))
            .expect("controller");
    let names: Vec<String> = tb.nodes.iter().map(|n| n.name().to_string()).collect();
    for (name, ip) in names.iter().zip(NODE_IPS) {
        ctrl.apply(&format!("node-{name}"), &node_yaml(name, ip))
            .expect("node manifest");
    }
    for name in &names {
        ctrl.wait_record(&ctrl.node_file(name), Duration::from_secs(30))
            .expect("node record");
    }
    let sb = tb.central.sb_remote();
    for n in tb.nodes.iter_mut() {
        start_agent(n, &sb, &ctrl);
    }
    for n in tb.nodes.iter_mut() {
        n.start_ovn_controller().expect("ovn-controller");
    }
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");

    (tb, ctrl, names, sb)
}

#[test]
fn node_and_pods_reach_each_other_through_the_join_port() {
    if !require(
        "node_and_pods_reach_each_other_through_the_join_port",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Tool("ovs-vswitchd"),
            Need::Tool("curl"),
            Need::Tool("busybox"),
        ],
    ) {
        return;
    }
    let (mut tb, ctrl, names, sb) = start_fabric();
    // ovn0 on both nodes: the join address the controller allocated, the route to the pod
    // subnet via the join gateway, and OVN has bound node-<node> there
    let mut join_ips = Vec::new();
    for n in &tb.nodes {
        let ann = record_annotations(&ctrl.node_file(n.name()));
        let ip = ann["ovn.kubernetes.io/ip_address"]
            .as_str()
            .expect("join ip")
            .to_string();
        let mac = ann["ovn.kubernetes.io/mac_address"]
            .as_str()
            .expect("join mac")
            .to_string();
        assert_eq!(ann["ferrovn.io/pod-cidrs"], "10.16.0.0/16", "{ann}");
        assert_within(Duration::from_secs(30), "ovn0 configured", || {
            let addr = n.netns().ip(["addr", "show", "ovn0"]).unwrap_or_default();
            let routes = n
                .netns()
                .ip(["route", "show", "dev", "ovn0"])
                .unwrap_or_default();
            addr.contains(&format!("{ip}/16"))
                && addr.contains(&mac)
                && routes.contains("10.16.0.0/16 via 100.64.0.1")
        });
        let iface_id = n
            .vsctl(["get", "Interface", "ovn0", "external_ids:iface-id"])
            .expect("iface-id");
        assert_eq!(
            iface_id.trim().trim_matches('"'),
            format!("node-{}", n.name())
        );
        n.wait_ovn_installed("ovn0", Duration::from_secs(30))
            .expect("node port bound by OVN");
        join_ips.push(ip);
    }

    // one kernel pod per node
    let tag = ferrovn_testkit::names::unique_tag();
    ctrl.apply(
        "pods",
        &format!(
            "{}---\n{}",
            pod_yaml("pa", &names[0]),
            pod_yaml("pb", &names[1])
        ),
    )
    .expect("pods");
    for p in ["pa", "pb"] {
        ctrl.wait_record(
            &ctrl
                .allocations_dir()
                .join("default")
                .join(format!("{p}.json")),
            Duration::from_secs(30),
        )
        .expect("pod record");
    }
    let plugin = cni_plugin_binary().expect("plugin");
    let pa = add_pod(&plugin, &tb.nodes[0], "pa", &tag);
    let pb = add_pod(&plugin, &tb.nodes[1], "pb", &tag);
    let _ha = Http::start(&pa.netns);
    let _hb = Http::start(&pb.netns);

    // node -> pod: the kubelet's probe (HTTP GET) and ping, own pod and the other node's
    assert_within(Duration::from_secs(20), "node A -> pod on A (HTTP)", || {
        probe_ok(tb.nodes[0].netns(), &pa.ip)
    });
    assert!(
        tb.nodes[0]
            .netns()
            .ping_until(&pa.ip, Duration::from_secs(10)),
        "node A -> pod on A (ping)"
    );
    assert_within(Duration::from_secs(20), "node B -> pod on B (HTTP)", || {
        probe_ok(tb.nodes[1].netns(), &pb.ip)
    });
    assert_within(Duration::from_secs(20), "node A -> pod on B (HTTP)", || {
        probe_ok(tb.nodes[0].netns(), &pb.ip)
    });
    // pod -> node: its own node's address, the other node's address and join address
    assert!(
        pa.netns.ping_until(NODE_IPS[0], Duration::from_secs(10)),
        "pod on A -> node A {}",
        NODE_IPS[0]
    );
    assert!(
        pb.netns.ping_until(NODE_IPS[1], Duration::from_secs(10)),
        "pod on B -> node B {}",
        NODE_IPS[1]
    );
    assert!(
        pa.netns.ping_until(NODE_IPS[1], Duration::from_secs(10)),
        "pod on A -> node B {}",
        NODE_IPS[1]
    );
    assert!(
        pa.netns.ping_until(&join_ips[1], Duration::from_secs(10)),
        "pod on A -> node B's join address {}",
        join_ips[1]
    );

    // the numbers: 20 probes node A -> pod on A
    let mut times: Vec<Duration> = (0..20)
        .filter_map(|_| probe(tb.nodes[0].netns(), &pa.ip))
        .filter(|(c, _)| *c == 200)
        .map(|(_, t)| t)
        .collect();
    times.sort();
    assert_eq!(times.len(), 20, "every probe answered 200");
    println!(
        "node->pod HTTP probe: p50 {:.2} ms, max {:.2} ms (20 GETs, curl time_total)",
        times[10].as_secs_f64() * 1e3,
        times[19].as_secs_f64() * 1e3
    );

    // agent restart: ovn0 untouched (same device, same routes, no change made), traffic on
    let before_idx = ovn0_ifindex(&tb.nodes[0]).expect("ovn0");
    let before_routes = tb.nodes[0]
        .netns()
        .ip(["route", "show", "dev", "ovn0"])
        .expect("routes");
    let pinger = tb.nodes[0]
        .netns()
        .command("ping")
        .args(["-c", "30", "-i", "0.2", "-W", "1", &pa.ip])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    let (passes_before, _) = join_lines(&tb.nodes[0]);
    let t = Instant::now();
    start_agent(&mut tb.nodes[0], &sb, &ctrl);
    let after = wait_for(
        "a join port pass of the restarted agent",
        Duration::from_secs(20),
        || {
            let (n, last) = join_lines(&tb.nodes[0]);
            (n > passes_before).then_some(last)
        },
    )
    .expect("restarted agent's first pass");
    println!(
        "agent restarted and checked ovn0 in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        after.contains("changes=[]"),
        "restart changed ovn0: {after}"
    );
    assert_eq!(
        ovn0_ifindex(&tb.nodes[0]).as_deref(),
        Some(before_idx.as_str())
    );
    assert_eq!(
        tb.nodes[0]
            .netns()
            .ip(["route", "show", "dev", "ovn0"])
            .expect("routes"),
        before_routes
    );
    let out = pinger.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("30 packets transmitted, 30 received"),
        "node -> pod pings across the agent restart: {text}"
    );

    // the Node goes: its record, its NB port and its ovn0
    ctrl.delete(&format!("node-{}", names[1]))
        .expect("delete node");
    assert_within(
        Duration::from_secs(30),
        "ovn0 removed from the removed node",
        || {
            tb.nodes[1].netns().ip(["link", "show", "ovn0"]).is_err()
                && !tb.nodes[1]
                    .vsctl(["list-ports", "br-int"])
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == "ovn0")
        },
    );
    assert!(!ctrl.node_file(&names[1]).exists());
    // the other node keeps its own
    assert!(
        probe_ok(tb.nodes[0].netns(), &pa.ip),
        "node A -> pod on A after node B left"
    );
}

/// "The internet": a namespace behind node A's uplink `fvwn` (203.0.113.1/24), holding
/// 203.0.113.10 with agnhost's HTTP server (`/clientip` answers the source address it sees)
/// and a route to the routed (natOutgoing: false) pod subnet via node A. Nothing on eth0.
struct World {
    netns: Netns,
    server: std::process::Child,
}

const WORLD_IP: &str = "203.0.113.10";
const UPLINK_IP: &str = "203.0.113.1";

impl World {
    fn attach(node: &Node, tag: &str, routed: &str) -> World {
        let netns = Netns::create(&format!("fvw-{tag}")).expect("world netns");
        ferrovn_testkit::process::run_cmd(
            "world veth",
            10,
            "ip",
            [
                "link",
                "add",
                "fvwn",
                "netns",
                node.netns().name(),
                "type",
                "veth",
                "peer",
                "name",
                "fvww",
                "netns",
                netns.name(),
            ],
        )
        .expect("veth");
        let n = node.netns();
        n.ip(["addr", "add", &format!("{UPLINK_IP}/24"), "dev", "fvwn"])
            .expect("uplink addr");
        n.ip(["link", "set", "fvwn", "up"]).expect("uplink up");
        // a Kubernetes node forwards (kubelet and kube-proxy require it); this one is a netns
        n.run(5, "sysctl", ["-qw", "net.ipv4.ip_forward=1"])
            .expect("ip_forward in the node netns");
        netns.ip(["link", "set", "lo", "up"]).expect("lo");
        netns
            .ip(["addr", "add", &format!("{WORLD_IP}/24"), "dev", "fvww"])
            .expect("world addr");
        netns.ip(["link", "set", "fvww", "up"]).expect("world up");
        netns
            .ip(["route", "add", routed, "via", UPLINK_IP])
            .expect("route to the routed subnet");
        let server = netns
            .command(ferrovn_testkit::kube::bin_dir().join("agnhost"))
            .args(["netexec", "--http-port=8080", "--udp-port=-1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agnhost netexec");
        World { netns, server }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.netns.ip(["link", "del", "fvww"]);
    }
}

/// The source address the outside saw for a GET from `pod`.
fn seen_source(pod: &Netns) -> Option<String> {
    let out = pod
        .run(
            5,
            "curl",
            ["-s", "-m", "2", &format!("http://{WORLD_IP}:8080/clientip")],
        )
        .ok()?;
    let ip = out.trim().rsplit_once(':')?.0.to_string();
    (!ip.is_empty()).then_some(ip)
}

fn routed_subnet_yaml(nat_outgoing: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: routed\n---\napiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: routed\nspec:\n  cidrBlock: 10.17.0.0/16\n  natOutgoing: {nat_outgoing}\n  namespaces: [routed]\n"
    )
}

#[test]
fn pod_egress_through_its_own_node_masqueraded_or_routed() {
    let agnhost = ferrovn_testkit::kube::bin_dir().join("agnhost");
    if !require(
        "pod_egress_through_its_own_node_masqueraded_or_routed",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Tool("ovs-vswitchd"),
            Need::Tool("curl"),
            Need::Tool("nft"),
            Need::Program(agnhost),
        ],
    ) {
        return;
    }
    let (tb, ctrl, names, _sb) = start_fabric();
    let tag = ferrovn_testkit::names::unique_tag();
    let world = World::attach(&tb.nodes[0], &tag, "10.17.0.0/16");
    ctrl.apply("routed", &routed_subnet_yaml(false))
        .expect("routed subnet");
    ctrl.apply(
        "pods",
        &format!(
            "{}---\n{}",
            pod_yaml("pa", &names[0]),
            pod_yaml_in("routed", "pr", &names[0])
        ),
    )
    .expect("pods");
    for (ns, p) in [("default", "pa"), ("routed", "pr")] {
        ctrl.wait_record(
            &ctrl.allocations_dir().join(ns).join(format!("{p}.json")),
            Duration::from_secs(30),
        )
        .expect("pod record");
    }
    let plugin = cni_plugin_binary().expect("plugin");
    let pa = add_pod(&plugin, &tb.nodes[0], "pa", &tag);
    let pr = add_pod_in(&plugin, &tb.nodes[0], "routed", "pr", &tag);
    assert!(pr.ip.starts_with("10.17."), "{}", pr.ip);

    // natOutgoing: true (ovn-default): the outside sees node A's uplink address
    let seen = wait_for("pa reaches the outside", Duration::from_secs(30), || {
        seen_source(&pa.netns)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; NB policies: {}; node A nft: {:?}; agent log: {}",
            tb.central
                .nbctl(&["lr-policy-list", "ovn-cluster"])
                .unwrap_or_default(),
            tb.nodes[0].netns().run(5, "nft", ["list", "ruleset"]),
            tb.nodes[0].agent_log()
        )
    });
    assert_eq!(seen, UPLINK_IP, "a natOutgoing pod's egress is masqueraded");
    assert!(
        pa.netns.ping_until(WORLD_IP, Duration::from_secs(10)),
        "pa pings the outside"
    );
    // natOutgoing: false: the pod's own address, routed
    let seen = wait_for("pr reaches the outside", Duration::from_secs(30), || {
        seen_source(&pr.netns)
    })
    .expect("routed egress");
    assert_eq!(
        seen, pr.ip,
        "a natOutgoing: false pod's egress keeps its address"
    );

    // the rules are FerrOVN's table in the node's namespace, none in the machine's own
    let table = tb.nodes[0]
        .netns()
        .run(5, "nft", ["list", "table", "inet", "ferrovn"])
        .expect("ferrovn table on node A");
    assert!(table.contains("masquerade"), "{table}");
    assert!(
        ferrovn_testkit::process::run_cmd(
            "root nft",
            5,
            "nft",
            ["list", "table", "inet", "ferrovn"]
        )
        .is_err(),
        "no FerrOVN table in the root network namespace"
    );

    // the subnet switches to natOutgoing: true, the pod keeps running: masqueraded from now on
    ctrl.apply("routed", &routed_subnet_yaml(true))
        .expect("routed subnet, natOutgoing");
    assert_within(
        Duration::from_secs(30),
        "pr masqueraded after the switch",
        || seen_source(&pr.netns).as_deref() == Some(UPLINK_IP),
    );
    // and back to routed, still without a pod restart
    ctrl.apply("routed", &routed_subnet_yaml(false))
        .expect("routed subnet");
    assert_within(Duration::from_secs(30), "pr routed again", || {
        seen_source(&pr.netns).as_deref() == Some(pr.ip.as_str())
    });
    drop(world);
}

/// "The internet" behind BOTH nodes' uplinks: a bridge in the outside namespace holding
/// 203.0.113.10 and agnhost, node A's uplink 203.0.113.1 (+ 203.0.113.11, its `node:ip` SNAT
/// address), node B's 203.0.113.2. Nothing on eth0.
struct World2 {
    netns: Netns,
    server: std::process::Child,
}

const UPLINK_B: &str = "203.0.113.2";
const SNAT_A: &str = "203.0.113.11";

impl World2 {
    fn attach(nodes: &[Node], tag: &str) -> World2 {
        let netns = Netns::create(&format!("fvw2-{tag}")).expect("world netns");
        netns.ip(["link", "set", "lo", "up"]).expect("lo");
        netns
            .ip(["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        netns.ip(["link", "set", "br0", "up"]).expect("bridge up");
        netns
            .ip(["addr", "add", &format!("{WORLD_IP}/24"), "dev", "br0"])
            .expect("world addr");
        for (i, (node, addrs)) in nodes
            .iter()
            .zip([vec![UPLINK_IP, SNAT_A], vec![UPLINK_B]])
            .enumerate()
        {
            let peer = format!("fvww{i}");
            ferrovn_testkit::process::run_cmd(
                "world veth",
                10,
                "ip",
                [
                    "link",
                    "add",
                    "fvwn",
                    "netns",
                    node.netns().name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &peer,
                    "netns",
                    netns.name(),
                ],
            )
            .expect("veth");
            netns
                .ip(["link", "set", &peer, "master", "br0"])
                .expect("enslave");
            netns.ip(["link", "set", &peer, "up"]).expect("peer up");
            let n = node.netns();
            for a in addrs {
                n.ip(["addr", "add", &format!("{a}/24"), "dev", "fvwn"])
                    .expect("uplink addr");
            }
            n.ip(["link", "set", "fvwn", "up"]).expect("uplink up");
            n.run(5, "sysctl", ["-qw", "net.ipv4.ip_forward=1"])
                .expect("ip_forward in the node netns");
        }
        let server = netns
            .command(ferrovn_testkit::kube::bin_dir().join("agnhost"))
            .args(["netexec", "--http-port=8080", "--udp-port=-1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agnhost netexec");
        World2 { netns, server }
    }
}

impl Drop for World2 {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.netns.ip(["link", "del", "br0"]);
        for i in 0..2 {
            let _ = self.netns.ip(["link", "del", &format!("fvww{i}")]);
        }
    }
}

fn central_subnet_yaml(gateway: Option<(&str, bool)>) -> String {
    let gw = match gateway {
        None => "  gatewayType: distributed\n".to_string(),
        Some((nodes, ecmp)) => format!(
            "  gatewayType: centralized\n  gatewayNode: \"{nodes}\"\n  enableEcmp: {ecmp}\n"
        ),
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: central\n---\napiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: central\nspec:\n  cidrBlock: 10.18.0.0/16\n  natOutgoing: true\n  namespaces: [central]\n{gw}"
    )
}

/// The 29000 policies of ovn-cluster (for failure messages and row checks).
fn gateway_policies(tb: &TwoNodes) -> String {
    tb.central
        .nbctl(&["lr-policy-list", "ovn-cluster"])
        .unwrap_or_default()
}

#[test]
fn centralized_gateway_egress_snat_and_failover() {
    let agnhost = ferrovn_testkit::kube::bin_dir().join("agnhost");
    if !require(
        "centralized_gateway_egress_snat_and_failover",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Tool("ovs-vswitchd"),
            Need::Tool("curl"),
            Need::Tool("nft"),
            Need::Program(agnhost),
        ],
    ) {
        return;
    }
    // the controller probes the gateway chassis through the SB; 3 s of silence is a death
    let (mut tb, ctrl, names, sb) =
        start_fabric_with(|sb| vec![format!("--sb={sb}"), "--gateway-dead-after=3".to_string()]);
    let (a, b) = (names[0].clone(), names[1].clone());
    let tag = ferrovn_testkit::names::unique_tag();
    let world = World2::attach(&tb.nodes, &tag);
    ctrl.apply("central", &central_subnet_yaml(None))
        .expect("subnet");
    ctrl.apply("pods", &pod_yaml_in("central", "pc", &a))
        .expect("pod");
    ctrl.wait_record(
        &ctrl.allocations_dir().join("central").join("pc.json"),
        Duration::from_secs(30),
    )
    .expect("pod record");
    let plugin = cni_plugin_binary().expect("plugin");
    let pc = add_pod_in(&plugin, &tb.nodes[0], "central", "pc", &tag);
    assert!(pc.ip.starts_with("10.18."), "{}", pc.ip);

    // distributed: the pod's own node A masquerades to its uplink address
    let seen = wait_for("pc reaches the outside", Duration::from_secs(30), || {
        seen_source(&pc.netns)
    })
    .unwrap_or_else(|e| panic!("{e}; NB: {}", gateway_policies(&tb)));
    assert_eq!(seen, UPLINK_IP, "distributed egress leaves through node A");

    // centralized, B first (active-backup), A with the node:ip form: the pod on A leaves
    // through B, masqueraded to B's address, without a restart
    let gw = format!("{b}, {a}:{SNAT_A}");
    ctrl.apply("central", &central_subnet_yaml(Some((&gw, false))))
        .expect("centralized");
    let switched = Instant::now();
    assert_within(
        Duration::from_secs(30),
        "pc leaves through gateway node B",
        || seen_source(&pc.netns).as_deref() == Some(UPLINK_B),
    );
    println!(
        "distributed -> centralized: egress through B after {:?}",
        switched.elapsed()
    );
    let policies = gateway_policies(&tb);
    assert!(
        policies.contains("ip4.src == 10.18.0.0/16"),
        "one CIDR reroute for the centralized subnet: {policies}"
    );
    // both gateway nodes hold the subnet's NAT (the standby too: failover needs no agent);
    // A's with its own SNAT address
    assert_within(Duration::from_secs(20), "A's SNAT rule", || {
        tb.nodes[0]
            .netns()
            .run(5, "nft", ["list", "table", "inet", "ferrovn"])
            .is_ok_and(|t| {
                t.contains(&format!(
                    "ip saddr 10.18.0.0/16 ip daddr != @cluster4 snat ip to {SNAT_A}"
                ))
            })
    });

    // ECMP: both gateway nodes carry connections (each GET is a new 5-tuple)
    ctrl.apply("central", &central_subnet_yaml(Some((&gw, true))))
        .expect("ecmp");
    let mut sources = std::collections::BTreeSet::new();
    assert_within(Duration::from_secs(60), "ECMP over both gateways", || {
        if let Some(s) = seen_source(&pc.netns) {
            sources.insert(s);
        }
        sources.contains(UPLINK_B) && sources.contains(SNAT_A)
    });
    println!("ecmp: sources seen {sources:?}");
    // back to active-backup: B again
    ctrl.apply("central", &central_subnet_yaml(Some((&gw, false))))
        .expect("active-backup");
    assert_within(Duration::from_secs(30), "back on B", || {
        (0..5).all(|_| seen_source(&pc.netns).as_deref() == Some(UPLINK_B))
    });

    // failover: node B's agents die (ovn-controller SIGKILL, as a crash leaves it, and the
    // FerrOVN agent). The controller sees B's chassis stop answering and moves the subnet to
    // A, which SNATs to its node:ip address.
    let killed = Instant::now();
    tb.nodes[1].kill_ovn_controller();
    tb.nodes[1].stop_agent();
    let took = wait_for("failover to A", Duration::from_secs(60), || {
        (seen_source(&pc.netns).as_deref() == Some(SNAT_A)).then(|| killed.elapsed())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; NB: {}; controller log: {}",
            gateway_policies(&tb),
            ctrl.log()
        )
    });
    println!("centralized gateway failover (active-backup, dead-after 3 s): {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "failover within 30 s, took {took:?}"
    );
    assert!(
        ctrl.log().contains("gateway liveness changed"),
        "the controller logged why"
    );

    // back to distributed, still the same pod: A's own masquerade, and the centralized row
    // and A's SNAT rule are gone
    ctrl.apply("central", &central_subnet_yaml(None))
        .expect("distributed again");
    assert_within(Duration::from_secs(30), "distributed again", || {
        seen_source(&pc.netns).as_deref() == Some(UPLINK_IP)
    });
    assert_within(Duration::from_secs(20), "rows and rules cleaned", || {
        !gateway_policies(&tb).contains("ip4.src == 10.18.0.0/16")
            && tb.nodes[0]
                .netns()
                .run(5, "nft", ["list", "table", "inet", "ferrovn"])
                .is_ok_and(|t| !t.contains("snat"))
    });
    drop(world);
    let _ = sb;
}

/// Answers `"<name> <client address>"` over HTTP on :8080 (the backend and the source it saw).
const WHO: &str = r#"
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

struct Who(std::process::Child);

impl Who {
    fn start(netns: &Netns, name: &str) -> Who {
        Who(netns
            .command("python3")
            .args(["-c", WHO, name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 server"))
    }
}

impl Drop for Who {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One GET from `from`: `(exit code, (backend, source it saw))`.
fn who(from: &Netns, url: &str) -> (i32, Option<(String, String)>) {
    let out = from
        .command("curl")
        .args(["-s", "-m", "3", url])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let parsed = body
        .split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()));
    (out.status.code().unwrap_or(-1), parsed)
}

/// The backends seen from `from` at `url` within `within` (stops early once `want` all seen).
fn backends(from: &Netns, url: &str, want: &[&str], within: Duration) -> Vec<(String, String)> {
    let start = Instant::now();
    let mut seen: Vec<(String, String)> = Vec::new();
    while start.elapsed() < within {
        if let (0, Some(r)) = who(from, url)
            && !seen.contains(&r)
        {
            seen.push(r);
        }
        if want.iter().all(|w| seen.iter().any(|(b, _)| b == w)) {
            break;
        }
    }
    seen.sort();
    seen
}

/// NodePort Services: `web` (externalTrafficPolicy: Cluster, backends on both nodes),
/// `local` (Local, the same two backends) and `empty` (no endpoints).
/// A Service's externalIP: outside every cluster network; the outside routes it to node A.
const EXTERNAL_IP: &str = "198.51.100.80";
/// A Local Service's two externalIPs; the outside routes the first to node A, the second to B.
const EXTERNAL_LOCAL_A: &str = "198.51.100.81";
const EXTERNAL_LOCAL_B: &str = "198.51.100.82";

fn node_port_services_yaml(pa: (&str, &str), pb: (&str, &str)) -> String {
    let svc = |name: &str, ip: &str, node_port: u16, etp: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: NodePort\n  clusterIP: {ip}\n  externalTrafficPolicy: {etp}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: {node_port}\n"
        )
    };
    let slice = |name: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {}\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {}\n",
            pa.0, pa.1, pb.0, pb.1
        )
    };
    let external = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: default\nspec:\n  clusterIP: 10.96.0.14\n  externalIPs: [\"{EXTERNAL_IP}\"]\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    );
    let external_local = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: extlocal\n  namespace: default\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.15\n  externalIPs: [\"{EXTERNAL_LOCAL_A}\", \"{EXTERNAL_LOCAL_B}\"]\n  externalTrafficPolicy: Local\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: 30092\n"
    );
    [
        external_local,
        slice("extlocal"),
        svc("web", "10.96.0.10", 30080, "Cluster"),
        slice("web"),
        svc("local", "10.96.0.13", 30090, "Local"),
        slice("local"),
        svc("empty", "10.96.0.11", 30091, "Cluster"),
        external,
        slice("ext"),
    ]
    .join("---\n")
}

#[test]
fn node_ports_answer_other_nodes_and_the_outside() {
    let agnhost = ferrovn_testkit::kube::bin_dir().join("agnhost");
    if !require(
        "node_ports_answer_other_nodes_and_the_outside",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Tool("ovs-vswitchd"),
            Need::Tool("curl"),
            Need::Tool("nft"),
            Need::Tool("python3"),
            Need::Program(agnhost),
        ],
    ) {
        return;
    }
    let (mut tb, ctrl, names, _sb) = start_fabric();
    let tag = ferrovn_testkit::names::unique_tag();
    annotate_chassis(&ctrl, &names);
    let world = World2::attach(&tb.nodes, &tag);
    // the upstream router: each node's InternalIP through that node's uplink
    for (ip, via) in NODE_IPS.into_iter().zip([UPLINK_IP, UPLINK_B]) {
        world
            .netns
            .ip(["route", "add", ip, "via", via])
            .expect("route to a node address");
    }
    ctrl.apply(
        "pods",
        &format!(
            "{}---\n{}---\n{}",
            pod_yaml("pa", &names[0]),
            pod_yaml("pb", &names[1]),
            pod_yaml("pc", &names[1])
        ),
    )
    .expect("pods");
    for p in ["pa", "pb", "pc"] {
        ctrl.wait_record(
            &ctrl
                .allocations_dir()
                .join("default")
                .join(format!("{p}.json")),
            Duration::from_secs(30),
        )
        .expect("pod record");
    }
    let plugin = cni_plugin_binary().expect("plugin");
    let pa = add_pod(&plugin, &tb.nodes[0], "pa", &tag);
    let pb = add_pod(&plugin, &tb.nodes[1], "pb", &tag);
    let pc = add_pod(&plugin, &tb.nodes[1], "pc", &tag);
    let _wa = Who::start(&pa.netns, "pa");
    let _wb = Who::start(&pb.netns, "pb");
    ctrl.apply(
        "services",
        &node_port_services_yaml(
            (pa.ip.as_str(), names[0].as_str()),
            (pb.ip.as_str(), names[1].as_str()),
        ),
    )
    .expect("services");
    let (node_a, node_b) = (tb.nodes[0].netns(), tb.nodes[1].netns());
    let join_a = record_annotations(&ctrl.node_file(&names[0]))["ovn.kubernetes.io/ip_address"]
        .as_str()
        .expect("join ip")
        .to_string();
    let t = Duration::from_secs(60);
    let both = ["pa", "pb"];
    let names_of = |v: &[(String, String)]| -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|(b, _)| b.clone()).collect();
        n.dedup();
        n
    };

    // the table lands in node A's namespace: one dispatch per node port of A's own address
    wait_for("node A's node-port table", t, || {
        node_a
            .run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
            .ok()
            .filter(|s| {
                s.contains("ip daddr 192.168.100.1 tcp dport 30080")
                    && s.contains("ip daddr 192.168.100.1 tcp dport 30091 reject")
            })
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; nft: {:?}; SB load balancers: {:?}; agent log: {}; controller log: {}",
            node_a.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"]),
            std::process::Command::new("ovn-sbctl")
                .arg(format!("--db={_sb}"))
                .args(["list", "Load_Balancer"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string()),
            tb.nodes[0]
                .agent_log()
                .lines()
                .filter(|l| l.contains("node port") || l.contains("nodeport"))
                .collect::<Vec<_>>()
                .join("\n"),
            ctrl.log()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });

    // Cluster policy from the outside, through node A: both backends, masqueraded to A's join
    // address (the backend on B answers A, and A un-NATs)
    let url_a = format!("http://{}:30080/", NODE_IPS[0]);
    let seen = backends(&world.netns, &url_a, &both, t);
    assert_eq!(
        names_of(&seen),
        both,
        "outside -> A:30080; {seen:?}; node A nft: {:?}; agent log: {}",
        node_a.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"]),
        tb.nodes[0].agent_log()
    );
    assert!(
        seen.iter().all(|(_, src)| *src == join_a),
        "Cluster: the backend sees node A's join address {join_a}: {seen:?}"
    );
    // ...through node B as well, and from node B to A, and from A's own host to A
    let url_b = format!("http://{}:30080/", NODE_IPS[1]);
    assert_eq!(
        names_of(&backends(&world.netns, &url_b, &both, t)),
        both,
        "outside -> B:30080"
    );
    assert_eq!(
        names_of(&backends(node_b, &url_a, &both, t)),
        both,
        "node B -> A:30080"
    );
    assert_eq!(
        names_of(&backends(node_a, &url_a, &both, t)),
        both,
        "node A -> its own A:30080"
    );
    // pods reach node ports in OVN already (their switch's load balancer): still so
    assert_eq!(
        names_of(&backends(&pc.netns, &url_a, &both, t)),
        both,
        "pod -> A:30080"
    );

    // an externalIP the outside routes to node A: steered like a node port (Cluster policy,
    // masqueraded), on every node; from A's own host too
    world
        .netns
        .ip(["route", "add", EXTERNAL_IP, "via", UPLINK_IP])
        .expect("route to the external IP");
    let ext_rule = format!("ip daddr {EXTERNAL_IP} tcp dport 80");
    for (n, node) in [node_a, node_b].into_iter().enumerate() {
        assert_within(
            t,
            &format!("node {n}'s table steers the external IP"),
            || {
                node.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
                    .is_ok_and(|s| s.contains(&ext_rule))
            },
        );
    }
    let url_ext = format!("http://{EXTERNAL_IP}/");
    let seen = backends(&world.netns, &url_ext, &both, t);
    assert_eq!(
        names_of(&seen),
        both,
        "outside -> externalIP via A: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, src)| *src == join_a),
        "externalIP, Cluster: the backend sees node A's join address {join_a}: {seen:?}"
    );
    assert_eq!(
        names_of(&backends(&pc.netns, &url_ext, &both, t)),
        both,
        "pod -> externalIP (OVN's load balancer)"
    );

    // Local policy: only the node's own endpoint, and the outside client's address is kept
    for (ip, want) in [(NODE_IPS[0], "pa"), (NODE_IPS[1], "pb")] {
        for _ in 0..5 {
            let (code, r) = who(&world.netns, &format!("http://{ip}:30090/"));
            assert_eq!(code, 0, "outside -> {ip}:30090");
            assert_eq!(
                r,
                Some((want.to_string(), WORLD_IP.to_string())),
                "Local via {ip}: own endpoint, client address kept"
            );
        }
    }
    // a client that is another node keeps its address too: its own agent DNATs the other
    // node's Local node port (host_services), so the reply, which OVN routes to the client
    // node's ovn0, meets the conntrack entry that DNATed it
    for (from, ip, want, src) in [
        (node_b, NODE_IPS[0], "pa", NODE_IPS[1]),
        (node_a, NODE_IPS[1], "pb", NODE_IPS[0]),
    ] {
        assert_within(
            t,
            &format!("{src} -> {ip}:30090 in the client node's table"),
            || {
                let node = if src == NODE_IPS[1] { node_b } else { node_a };
                node.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
                    .is_ok_and(|s| s.contains(&format!("ip daddr {ip} tcp dport 30090 goto hs")))
            },
        );
        for _ in 0..5 {
            let (code, r) = who(from, &format!("http://{ip}:30090/"));
            assert_eq!(
                (code, r),
                (0, Some((want.to_string(), src.to_string()))),
                "node {src} -> {ip}:30090 (Local): the other node's endpoint sees the client node's address"
            );
        }
    }
    // ...while Cluster node ports of another node still go over the underlay to that node
    // (masqueraded there): the client node's table has no rule for them
    assert!(
        node_b
            .run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
            .is_ok_and(|s| !s.contains(&format!("ip daddr {} tcp dport 30080", NODE_IPS[0]))),
        "node B does not DNAT A's Cluster node port"
    );
    let seen = backends(node_b, &url_a, &both, t);
    assert_eq!(
        names_of(&seen),
        both,
        "node B -> A:30080 (Cluster) after Local"
    );
    assert!(
        seen.iter().all(|(_, src)| *src == join_a),
        "Cluster from node B: masqueraded by A to its join address {join_a}: {seen:?}"
    );

    // externalIPs with externalTrafficPolicy: Local (template VIPs, each node expands them
    // with its own chassis' variables): the node the outside routes the address to serves its
    // own endpoint, which sees the outside client; that node's host gets the same endpoint
    for (ip, via, want, node) in [
        (EXTERNAL_LOCAL_A, UPLINK_IP, "pa", node_a),
        (EXTERNAL_LOCAL_B, UPLINK_B, "pb", node_b),
    ] {
        world
            .netns
            .ip(["route", "add", ip, "via", via])
            .expect("route to a Local external IP");
        assert_within(t, &format!("the table of {via}'s node steers {ip}"), || {
            node.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
                .is_ok_and(|s| s.contains(&format!("ip daddr {ip} tcp dport 80 goto np")))
        });
        for _ in 0..5 {
            let (code, r) = who(&world.netns, &format!("http://{ip}/"));
            assert_eq!(
                (code, r),
                (0, Some((want.to_string(), WORLD_IP.to_string()))),
                "outside -> {ip} (Local) via {via}: own endpoint, client address kept"
            );
        }
        // the node's own route to the address: towards the upstream router
        node.ip(["route", "add", ip, "via", WORLD_IP])
            .expect("the node's route to the external IP");
        let (code, r) = who(node, &format!("http://{ip}/"));
        assert_eq!(
            (code, r.map(|(b, _)| b)),
            (0, Some(want.to_string())),
            "the host of {via}'s node -> {ip} (Local)"
        );
    }

    // no endpoints: refused at once, not timed out
    let start = Instant::now();
    let (code, _) = who(&world.netns, &format!("http://{}:30091/", NODE_IPS[0]));
    assert_eq!(code, 7, "outside -> A:30091 refused (curl exit 7)");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // an endpoint goes: the node port follows
    ctrl.apply(
        "services",
        &node_port_services_yaml(
            (pa.ip.as_str(), names[0].as_str()),
            (pc.ip.as_str(), names[1].as_str()),
        ),
    )
    .expect("services, pb replaced by pc (no server)");
    assert_within(t, "A's table follows the endpoint change", || {
        node_a
            .run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
            .is_ok_and(|s| s.contains(&pc.ip) && !s.contains(&pb.ip))
    });

    // the agent stops: its table goes with it
    tb.nodes[0].stop_agent();
    assert!(
        tb.nodes[0]
            .netns()
            .run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
            .is_err(),
        "the node-port table is removed when the agent stops"
    );
    drop(world);
}

/// Services whose only endpoint is node A's own host (a hostNetwork pod: the endpoint address
/// is A's InternalIP): `hostlocal` (ClusterIP, internalTrafficPolicy: Local), `hostcluster`
/// (ClusterIP, Cluster) and `hostnp` (NodePort 30100, Cluster).
fn host_endpoint_services_yaml(node_a: &str) -> String {
    let svc = |name: &str, ip: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  clusterIP: {ip}\n{extra}  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n{}",
            if name == "hostnp" {
                "    nodePort: 30100\n"
            } else {
                ""
            }
        )
    };
    let slice = |name: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {node_a}\n",
            NODE_IPS[0]
        )
    };
    [
        svc(
            "hostlocal",
            "10.96.0.20",
            "  internalTrafficPolicy: Local\n",
        ),
        slice("hostlocal"),
        svc("hostcluster", "10.96.0.21", ""),
        slice("hostcluster"),
        svc("hostnp", "10.96.0.22", "  type: NodePort\n"),
        slice("hostnp"),
    ]
    .join("---\n")
}

/// The chassis annotation the agent publishes in a cluster, on both Node manifests: template
/// load balancers (the Local policies' client-node VIPs) get a Chassis_Template_Var row per
/// chassis from it.
fn annotate_chassis(ctrl: &ManifestController, names: &[String]) {
    for (name, ip) in names.iter().zip(NODE_IPS) {
        let yaml = node_yaml(name, ip).replace(
            &format!("  name: {name}\n"),
            &format!("  name: {name}\n  annotations:\n    ovn.kubernetes.io/chassis: {name}\n"),
        );
        ctrl.apply(&format!("node-{name}"), &yaml)
            .expect("node manifest with its chassis");
    }
}

/// What node A's kernel did with a GET to `url` from its own host: a capture on `ovn0`
/// and the kernel's drop counters, for a failure message.
fn trace_host_get(node: &Netns, url: &str) -> String {
    let dump = node
        .command("timeout")
        .args(["4", "tcpdump", "-nn", "-l", "-c", "8", "-i", "ovn0", "tcp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    let get = who(node, url);
    let dump = dump.wait_with_output().expect("tcpdump output");
    let nstat = node
        .run(5, "nstat", ["-az", "IpExtInNoRoutes", "TcpExtTCPTimeouts"])
        .unwrap_or_default();
    let martians = node
        .run(5, "sh", ["-c", "cat /proc/net/stat/rt_cache | head -3"])
        .unwrap_or_default();
    format!(
        "GET {url}: {get:?}\novn0 capture:\n{}\nnstat: {nstat}\nrt_cache: {martians}\nnft: {:?}",
        String::from_utf8_lossy(&dump.stdout),
        node.run(5, "nft", ["list", "table", "inet", "ferrovn-nodeport"])
    )
}

#[test]
fn host_reaches_services_whose_endpoint_is_its_own_host_network() {
    if !require(
        "host_reaches_services_whose_endpoint_is_its_own_host_network",
        &[
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovn-northd"),
            Need::Tool("ovn-controller"),
            Need::Tool("ovs-vswitchd"),
            Need::Tool("curl"),
            Need::Tool("nft"),
            Need::Tool("python3"),
            Need::Tool("tcpdump"),
            Need::Tool("nstat"),
        ],
    ) {
        return;
    }
    let (mut tb, ctrl, names, _sb) =
        start_fabric_with(|_| vec!["--service-cluster-ip-range=10.96.0.0/12".to_string()]);
    let tag = ferrovn_testkit::names::unique_tag();
    annotate_chassis(&ctrl, &names);
    ctrl.apply("pods", &pod_yaml("pa", &names[0]))
        .expect("pods");
    ctrl.wait_record(
        &ctrl.allocations_dir().join("default").join("pa.json"),
        Duration::from_secs(30),
    )
    .expect("pod record");
    let plugin = cni_plugin_binary().expect("plugin");
    let pa = add_pod(&plugin, &tb.nodes[0], "pa", &tag);
    let (node_a, node_b) = (tb.nodes[0].netns(), tb.nodes[1].netns());
    // the hostNetwork endpoint: a server in node A's own namespace
    let _host = Who::start(node_a, "host-a");
    ctrl.apply("services", &host_endpoint_services_yaml(&names[0]))
        .expect("services");
    let t = Duration::from_secs(60);
    let ok = |from: &Netns, url: &str| {
        let (code, r) = who(from, url);
        code == 0 && r.is_some_and(|(b, _)| b == "host-a")
    };
    // pods reach it through OVN already: the Services are in place
    for vip in ["10.96.0.20", "10.96.0.21"] {
        assert_within(t, &format!("pod on A -> {vip}"), || {
            ok(&pa.netns, &format!("http://{vip}/"))
        });
    }
    // the host of the endpoint's own node, through the ClusterIPs and its own node port
    for url in [
        "http://10.96.0.20/",
        "http://10.96.0.21/",
        &format!("http://{}:30100/", NODE_IPS[0]),
    ] {
        if wait_for(&format!("node A -> {url}"), t, || {
            ok(node_a, url).then_some(())
        })
        .is_err()
        {
            panic!(
                "node A's host does not reach its own host-network endpoint through {url}\n{}\nagent log: {}",
                trace_host_get(node_a, url),
                tb.nodes[0]
                    .agent_log()
                    .lines()
                    .filter(|l| l.contains("node port"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    // another node: the Cluster ClusterIP reaches A's host, the Local one has no endpoint there
    assert_within(t, "node B -> 10.96.0.21 (Cluster)", || {
        ok(node_b, "http://10.96.0.21/")
    });
    let (code, _) = who(node_b, "http://10.96.0.20/");
    assert_ne!(code, 0, "node B -> 10.96.0.20 (Local, no endpoint on B)");
    tb.nodes[0].stop_agent();
}
