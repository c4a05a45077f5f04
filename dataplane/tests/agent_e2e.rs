//! The node agent end to end: real OVN central, two nodes (netns with their own OVS and
//! ovn-controller, Geneve underlay), `ferrovn-node` running in each node, and the BUILT
//! `ferrovn-cni` plugin invoked exactly as a container runtime invokes it.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovn_testkit::binaries::cni_plugin_binary;
use ferrovn_testkit::cluster::{
    POD_SUBNET, add_pod_port, add_switch_with_router, lsp_name, write_pod_allocation,
};
use ferrovn_testkit::cni::{CniCall, CniOutput, cni_netconf, run_cni};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::wait::wait_until;
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

struct Cluster {
    cluster: ferrovn_testkit::cluster::Cluster,
    plugin: PathBuf,
    tag: String,
}

fn start_cluster(extra_agent_args: &[&str]) -> Cluster {
    let mut cluster = ferrovn_testkit::cluster::Cluster::start_agents(
        Path::new(AGENT),
        [extra_agent_args, extra_agent_args],
    )
    .expect("two nodes with agents");
    // the agents configured OVS through OVSDB: the bridge and the OVN keys are there
    for n in &cluster.tb.nodes {
        let ids = n
            .vsctl(["get", "Open_vSwitch", ".", "external_ids"])
            .expect("ids");
        assert!(ids.contains("ovn-encap-type=geneve"), "{ids}");
        assert!(ids.contains(&format!("system-id={}", n.name())), "{ids}");
        let dp = n
            .vsctl(["get", "Bridge", "br-int", "datapath_type"])
            .expect("dp");
        assert_eq!(dp.trim(), "netdev");
        let fm = n
            .vsctl(["get", "Bridge", "br-int", "fail_mode"])
            .expect("fm");
        assert_eq!(fm.trim(), "secure");
    }
    cluster
        .start_ovn_controllers()
        .expect("ovn-controllers and chassis");
    add_switch_with_router(&cluster.tb.central, &POD_SUBNET).expect("switch and router");
    Cluster {
        cluster,
        plugin: cni_plugin_binary().expect("plugin binary"),
        tag: unique_tag(),
    }
}

impl Cluster {
    /// What the controller does: the logical switch port in the NB and the pod's annotations.
    fn allocate(&self, pod: &str, n: u8) {
        self.allocate_with(pod, n, &[]);
    }

    fn allocate_with(&self, pod: &str, n: u8, extra: &[(&str, &str)]) {
        let mac = format!("0a:58:0a:10:00:{n:02x}");
        let ip = format!("10.16.0.{n}");
        add_pod_port(
            &self.cluster.tb.central,
            "ls1",
            &lsp_name(pod, "ovn"),
            &mac,
            &ip,
        )
        .expect("lsp");
        let mut a = POD_SUBNET.annotations("ovn", &ip, &mac);
        a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        write_pod_allocation(&self.cluster.allocs, pod, &a).expect("write allocation");
    }

    fn netconf(&self, node: usize) -> Vec<u8> {
        cni_netconf(
            "1.0.0",
            "ovn",
            &self.cluster.tb.nodes[node].agent_socket(),
            &json!({}),
        )
    }

    fn cni(&self, node: usize, command: &str, cid: &str, netns: &str, pod: &str) -> CniOutput {
        self.cni_stdin(command, cid, netns, pod, self.netconf(node))
    }

    fn cni_with_prev(
        &self,
        node: usize,
        command: &str,
        cid: &str,
        netns: &str,
        pod: &str,
        prev: &Value,
    ) -> CniOutput {
        let mut conf: Value = serde_json::from_slice(&self.netconf(node)).expect("netconf");
        conf["prevResult"] = prev.clone();
        let stdin = serde_json::to_vec(&conf).expect("json");
        self.cni_stdin(command, cid, netns, pod, stdin)
    }

    fn cni_stdin(
        &self,
        command: &str,
        cid: &str,
        netns: &str,
        pod: &str,
        stdin: Vec<u8>,
    ) -> CniOutput {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        run_cni(
            &self.plugin,
            &CniCall {
                command,
                container_id: cid,
                netns,
                ifname: "eth0",
                args: &args,
                stdin: &stdin,
            },
        )
        .expect("plugin ran")
    }

    /// Creates the pod netns and runs ADD; returns the netns and the result.
    fn add_pod(&self, node: usize, pod: &str) -> (Netns, String, Value) {
        let ns = Netns::create(&format!("fvt-{}-{pod}", self.tag)).expect("pod netns");
        let cid = format!("ctr{}{pod}", self.tag.replace('x', ""));
        let out = self.cni(node, "ADD", &cid, &ns.path().display().to_string(), pod);
        assert_eq!(
            out.exit_code,
            0,
            "ADD {pod}: {} {} agent log: {}",
            out.stdout,
            out.stderr,
            self.cluster.tb.nodes[node].agent_log()
        );
        (ns, cid, out.json())
    }
}

/// Pod ports on br-int (tunnel ports `ovn-*` excluded).
fn pod_ports(node: &ferrovn_testkit::ovs_node::Node) -> Vec<String> {
    node.vsctl(["list-ports", "br-int"])
        .expect("list-ports")
        .lines()
        .filter(|l| l.starts_with("fv"))
        .map(str::to_string)
        .collect()
}

fn tcp_works(client: &Netns, server: &Netns, dst: &str) -> bool {
    tcp_bps(client, server, dst).is_some_and(|bps| bps > 1e6)
}

/// iperf3 client -> server throughput in bit/s (1 s run).
fn tcp_bps(client: &Netns, server: &Netns, dst: &str) -> Option<f64> {
    let Ok(mut srv) = server
        .command("iperf3")
        .args(["-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return None;
    };
    std::thread::sleep(Duration::from_millis(400));
    let out = client.run(20, "iperf3", ["-c", dst, "-p", "5201", "-t", "1", "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    out.ok()
        .and_then(|o| serde_json::from_str::<Value>(&o).ok())
        .and_then(|j| j["end"]["sum_received"]["bits_per_second"].as_f64())
}

#[test]
fn pods_via_plugin_and_agent_talk_same_node_cross_node_and_survive_agent_restart() {
    let mut c = start_cluster(&["--gc-interval-secs=1", "--allocation-timeout-secs=3"]);
    c.allocate("pod1", 11);
    c.allocate("pod2", 12);
    c.allocate("pod3", 13);
    let (p1, cid1, r1) = c.add_pod(0, "pod1");
    // ADD returned = the gateway answers the pod's FIRST ARP request, even for the first pod of
    // the switch on the node: the pod's kernel may send one request only (a lost one would
    // cost a real pod the kernel's 1 s retransmit), and gets 3 s for the answer
    p1.run(
        5,
        "sysctl",
        [
            "-w",
            "net.ipv4.neigh.eth0.mcast_solicit=1",
            "net.ipv4.neigh.eth0.retrans_time_ms=3000",
        ],
    )
    .expect("pod ARP sysctls");
    let first = p1.run(6, "ping", ["-c1", "-W4", "10.16.0.1"]);
    assert!(
        first.is_ok(),
        "the first pod's first ARP request to its gateway went unanswered: {first:?}"
    );
    let (p2, _cid2, _) = c.add_pod(1, "pod2");
    let (p3, cid3, r3) = c.add_pod(0, "pod3");

    // spec-shaped result: the pod interface with its MAC and sandbox, the IP pointing at it
    assert_eq!(r1["cniVersion"], "1.0.0");
    let ifs = r1["interfaces"].as_array().expect("interfaces");
    let pod_if = ifs
        .iter()
        .position(|i| i["name"] == "eth0")
        .expect("eth0 in result");
    assert_eq!(ifs[pod_if]["mac"], "0a:58:0a:10:00:0b");
    assert_eq!(ifs[pod_if]["sandbox"], p1.path().display().to_string());
    assert_eq!(r1["ips"][0]["address"], "10.16.0.11/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.16.0.1");
    assert_eq!(r1["ips"][0]["interface"], pod_if);

    // ADD returned = traffic flows (allow one lost first packet while a tunnel resolves)
    assert!(
        p1.ping_until("10.16.0.13", Duration::from_secs(3)),
        "same-node ping"
    );
    assert!(
        p1.ping_until("10.16.0.12", Duration::from_secs(5)),
        "cross-node ping"
    );
    assert!(
        p2.ping_until("10.16.0.11", Duration::from_secs(3)),
        "cross-node ping back"
    );
    assert!(
        p1.ping_until("10.16.0.1", Duration::from_secs(3)),
        "gateway (router port)"
    );
    assert!(tcp_works(&p1, &p3, "10.16.0.13"), "same-node TCP");
    assert!(tcp_works(&p1, &p2, "10.16.0.12"), "cross-node TCP");

    // CHECK (with the ADD result as prevResult, as runtimes pass it) of a healthy pod succeeds
    let chk = c.cni_with_prev(
        0,
        "CHECK",
        &cid1,
        &p1.path().display().to_string(),
        "pod1",
        &r1,
    );
    assert_eq!(chk.exit_code, 0, "{} {}", chk.stdout, chk.stderr);

    // rate annotations become OVS QoS: egress_rate polices what OVS receives from the pod,
    // ingress_rate shapes what OVS sends into it
    c.allocate_with(
        "pod4",
        14,
        &[
            ("ovn.kubernetes.io/egress_rate", "20"),
            ("ovn.kubernetes.io/ingress_rate", "30"),
        ],
    );
    let (p4, cid4, r4) = c.add_pod(0, "pod4");
    let ifs4 = r4["interfaces"].as_array().expect("interfaces");
    let host4 = ifs4.iter().find(|i| i["name"] != "eth0").expect("host if")["name"]
        .as_str()
        .expect("name")
        .to_string();
    let node0 = &c.cluster.tb.nodes[0];
    let rate = node0
        .vsctl(["get", "Interface", &host4, "ingress_policing_rate"])
        .expect("rate");
    assert_eq!(rate.trim(), "20000");
    let qos = node0.vsctl(["get", "Port", &host4, "qos"]).expect("qos");
    let qos_type = node0
        .vsctl(["get", "QoS", qos.trim(), "type"])
        .expect("qos type");
    assert_eq!(qos_type.trim(), "linux-htb");
    let max = node0
        .vsctl(["get", "QoS", qos.trim(), "other_config:max-rate"])
        .expect("max-rate");
    assert_eq!(max.trim(), "\"30000000\"");
    let up = tcp_bps(&p4, &p3, "10.16.0.13").expect("pod4 -> pod3 TCP");
    let down = tcp_bps(&p3, &p4, "10.16.0.14").expect("pod3 -> pod4 TCP");
    eprintln!(
        "QoS: pod4 egress {:.1} Mbit/s (limit 20), ingress {:.1} Mbit/s (limit 30)",
        up / 1e6,
        down / 1e6
    );
    assert!(up < 30e6, "egress policing: {up} bit/s");
    assert!(down < 45e6, "ingress shaping: {down} bit/s");
    let del4 = c.cni(0, "DEL", &cid4, &p4.path().display().to_string(), "pod4");
    assert_eq!(del4.exit_code, 0, "{}", del4.stdout);
    // (ovn-controller keeps QoS rows of its own; ours are tagged with the port name)
    let qos_rows = node0
        .vsctl([
            "--bare",
            "--columns=_uuid",
            "find",
            "QoS",
            &format!("external_ids:ferrovn_port={host4}"),
        ])
        .expect("qos rows");
    assert!(
        qos_rows.trim().is_empty(),
        "QoS row removed with the port: {qos_rows}"
    );
    drop(p4);

    // the OVS port carries the pod's identity (the agent's state after a restart)
    let node0 = &c.cluster.tb.nodes[0];
    let host_if = ifs[1 - pod_if]["name"]
        .as_str()
        .expect("host if")
        .to_string();
    let ids = node0
        .vsctl(["get", "Interface", &host_if, "external_ids"])
        .expect("ids");
    assert!(ids.contains("iface-id=pod1.default"), "{ids}");
    assert!(ids.contains(&cid1), "{ids}");

    // a pod that vanishes while the agent is down (netns gone, no DEL): the restarted agent's
    // GC removing its port shows that a GC pass ran, after which the live pods must be intact
    c.allocate("pod5", 15);
    let (p5, _cid5, r5) = c.add_pod(0, "pod5");
    let host5 = r5["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] != "eth0")
        .expect("host if")["name"]
        .as_str()
        .expect("name")
        .to_string();
    let node0 = &c.cluster.tb.nodes[0];
    assert!(pod_ports(node0).contains(&host5), "pod5's port");

    // agent restart with pods running: traffic never depends on it, state comes from OVSDB
    let pid_before = node0.agent_pid();
    let sb = c.cluster.tb.central.sb_remote();
    let alloc_dir = c.cluster.allocations_dir().to_path_buf();
    c.cluster.tb.nodes[0].stop_agent();
    assert!(
        p1.ping_until("10.16.0.12", Duration::from_secs(3)),
        "traffic while the agent is down"
    );
    drop(p5);
    c.cluster.tb.nodes[0]
        .start_agent(
            Path::new(AGENT),
            &sb,
            &alloc_dir,
            &["--gc-interval-secs=1", "--allocation-timeout-secs=3"],
        )
        .expect("agent restart");
    assert_ne!(c.cluster.tb.nodes[0].agent_pid(), pid_before);
    assert!(
        wait_until(Duration::from_secs(20), || !pod_ports(
            &c.cluster.tb.nodes[0]
        )
        .contains(&host5)),
        "no GC pass removed the vanished pod's port {host5}; agent log: {}",
        c.cluster.tb.nodes[0].agent_log()
    );
    assert!(
        p1.ping_once("10.16.0.13") || p1.ping_until("10.16.0.13", Duration::from_secs(2)),
        "pods untouched by restart"
    );
    let ofport = c.cluster.tb.nodes[0]
        .vsctl(["get", "Interface", &host_if, "ofport"])
        .expect("port kept");
    assert!(
        ofport.trim().parse::<i64>().is_ok_and(|p| p > 0),
        "{ofport}"
    );

    // DEL after the restart removes exactly what ADD made; DEL again succeeds
    let del = c.cni(0, "DEL", &cid3, &p3.path().display().to_string(), "pod3");
    assert_eq!(del.exit_code, 0, "{} {}", del.stdout, del.stderr);
    assert_eq!(
        p3.ip(["-o", "link", "show"])
            .expect("links")
            .lines()
            .count(),
        1,
        "only lo left in pod3"
    );
    let ports = pod_ports(&c.cluster.tb.nodes[0]);
    assert_eq!(ports, vec![host_if.clone()], "only pod1's port left");
    let again = c.cni(0, "DEL", &cid3, &p3.path().display().to_string(), "pod3");
    assert_eq!(again.exit_code, 0, "{}", again.stdout);
    assert!(!p1.ping_once("10.16.0.13"), "pod3 gone");
    let chk = c.cni_with_prev(
        0,
        "CHECK",
        &cid3,
        &p3.path().display().to_string(),
        "pod3",
        &r3,
    );
    assert_eq!(
        chk.json()["code"],
        3,
        "CHECK of a deleted attachment: {}",
        chk.stdout
    );

    // ADD again (a new sandbox of the same pod) works
    let cid3b = format!("{cid3}b");
    let out = c.cni(0, "ADD", &cid3b, &p3.path().display().to_string(), "pod3");
    assert_eq!(out.exit_code, 0, "{} {}", out.stdout, out.stderr);
    assert!(
        p1.ping_until("10.16.0.13", Duration::from_secs(3)),
        "pod3 back"
    );

    // periodic GC: the pod's netns disappears without DEL -> its port goes
    let gone_if = pod_ports(&c.cluster.tb.nodes[1])
        .first()
        .cloned()
        .expect("pod2 port");
    drop(p2);
    let collected = wait_until(Duration::from_secs(10), || {
        pod_ports(&c.cluster.tb.nodes[1]).is_empty()
    });
    assert!(
        collected,
        "GC removed {gone_if}: {}",
        c.cluster.tb.nodes[1].agent_log()
    );
}

#[test]
fn plugin_errors_are_spec_shaped() {
    let c = start_cluster(&["--allocation-timeout-secs=1"]);
    let ns = Netns::create(&format!("fvt-{}-err", c.tag)).expect("netns");
    let netns = ns.path().display().to_string();

    // unknown pod: no allocation -> an agent error code, nothing left behind
    let out = c.cni(0, "ADD", "ctrunknown1", &netns, "ghost");
    assert_ne!(out.exit_code, 0);
    let e = out.json();
    assert_eq!(e["code"], 110, "{}", out.stdout);
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|m| m.contains("default/ghost")),
        "{e}"
    );
    assert_eq!(
        ns.ip(["-o", "link", "show"])
            .expect("links")
            .lines()
            .count(),
        1
    );

    // DEL of something unknown succeeds
    let out = c.cni(0, "DEL", "ctrunknown2", &netns, "ghost");
    assert_eq!(out.exit_code, 0, "{}", out.stdout);

    // malformed stdin -> decode error in the spec's shape
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=x";
    let out = run_cni(
        &c.plugin,
        &CniCall {
            command: "ADD",
            container_id: "ctrbad",
            netns: &netns,
            ifname: "eth0",
            args,
            stdin: b"{not json",
        },
    )
    .expect("ran");
    assert_ne!(out.exit_code, 0);
    let e = out.json();
    assert!(
        e["code"].as_u64().is_some_and(|c| c == 6 || c == 7),
        "{}",
        out.stdout
    );
    assert!(e["msg"].is_string() && e["cniVersion"].is_string(), "{e}");

    // an allocated pod whose OVN port does not exist -> bounded wait, clear error, rolled back
    let mut a = POD_SUBNET.annotations("ovn", "10.16.0.50", "0a:58:0a:10:00:32");
    a.remove("ovn.kubernetes.io/gateway");
    write_pod_allocation(&c.cluster.allocs, "nolsp", &a).expect("alloc");
    let mut c2 = c;
    let sb = c2.cluster.tb.central.sb_remote();
    let dir = c2.cluster.allocations_dir().to_path_buf();
    c2.cluster.tb.nodes[0]
        .start_agent(Path::new(AGENT), &sb, &dir, &["--install-timeout-secs=2"])
        .expect("agent with short install timeout");
    let out = c2.cni(0, "ADD", "ctrnolsp", &netns, "nolsp");
    assert_ne!(out.exit_code, 0);
    let e = out.json();
    assert_eq!(e["code"], 114, "{}", out.stdout);
    assert!(
        e["details"]
            .as_str()
            .is_some_and(|d| d.contains("nolsp.default")),
        "{e}"
    );
    assert_eq!(
        ns.ip(["-o", "link", "show"])
            .expect("links")
            .lines()
            .count(),
        1,
        "rolled back in the pod"
    );
    let ports = pod_ports(&c2.cluster.tb.nodes[0]);
    assert!(ports.is_empty(), "rolled back in OVS: {ports:?}");
}
