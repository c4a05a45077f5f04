//! DPDK pods as Service clients, on real OVS-DPDK + OVN. Two nodes: an OVS-DPDK node
//! (testkit `DpdkNode`, its underlay a DPDK `net_af_packet` port on br-phy) and a kernel node
//! (plain ovs-vswitchd), Geneve between them. A vhost-user pod on the DPDK node runs
//! `dpdk-testpmd` in `txonly` mode: UDP from the pod's own address to a Service VIP, sent to
//! the pod's gateway MAC like any pod's packet to an off-link address. The Service's load
//! balancer rows come from FerrOVN's planner and reconciler; its backends are kernel pods, one
//! on each node, each counting with nftables the datagrams that reach it.
//!
//! What a user would notice, checked on the wire:
//! - each UDP flow (one source port) lands on exactly one backend, and over a few flows both
//!   backends get traffic: OVN load balances inside OVS-DPDK, the packet never leaves it for a
//!   kernel hop on the DPDK node;
//! - no datagram reaches a backend still addressed to the VIP or node address (unbalanced), and
//!   the backend sees the DPDK pod's own address as the source;
//! - the NodePort on either node's address works the same from the DPDK pod;
//! - an endpoint removed while a flow runs toward it: within a deadline after the change is
//!   applied on the nodes (`--wait=hv`), the removed backend gets nothing more and the running
//!   flow continues to the remaining backend (ovn-controller's `ct_flush` alone loses a race
//!   with the datapath's cached flows; the node agent's second flush, `ct_reflush`, wins it);
//!   a new flow goes to the remaining backend too;
//! - the same for a kernel pod (veth) client next to web-a: web-b's endpoint back, a flow of
//!   a plain UDP socket running toward it, web-b removed again: the flow moves within the
//!   deadline (the agent's second flush covers every OVN zone, not only the DPDK pod's).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_control::plan::services::plan_services;
use ferrovn_control::plan::{DEFAULT_ROUTER, NbPlan, ServiceInputs, ServiceNode};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::binaries::{agent_binary, cni_plugin_binary};
use ferrovn_testkit::cluster::{POD_SUBNET, add_switch_with_router, allocate_pod, nbctl};
use ferrovn_testkit::cni::FerrovnCni;
use ferrovn_testkit::dpdk::{PodMemory, TestMemory, Testpmd, TestpmdSpec};
use ferrovn_testkit::dpdk_node::{DpdkNode, DpdkNodeSpec, DpdkPod, DpdkUnderlay};
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig, add_underlay_veth};
use ferrovn_testkit::require::{Need, ovs_dpdk_needs, require};
use ferrovn_testkit::wait::wait_until;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

const VIP: &str = "10.96.0.50";
const PORT: u16 = 9;
const NODE_PORT: u16 = 30009;
/// The pod subnet's gateway (`add_switch_with_router`): where a pod sends off-link packets.
const GATEWAY_MAC: &str = "0a:58:0a:10:00:01";
const CLIENT_IP: &str = "10.16.0.21";
/// The kernel pod client, on the DPDK node next to web-a.
const KCLIENT_IP: &str = "10.16.0.22";
/// Underlay (tunnel endpoint) addresses, also the nodes' addresses for node ports.
const KERNEL_NODE_IP: &str = "192.168.100.1";
const DPDK_NODE_IP: &str = "192.168.100.2";

struct Backend {
    name: &'static str,
    ip: &'static str,
    mac: &'static str,
}

/// `web-a` on the DPDK node (next to the client), `web-b` on the kernel node.
const BACKENDS: [Backend; 2] = [
    Backend {
        name: "web-a",
        ip: "10.16.0.11",
        mac: "0a:58:0a:10:00:0b",
    },
    Backend {
        name: "web-b",
        ip: "10.16.0.12",
        mac: "0a:58:0a:10:00:0c",
    },
];

/// The UDP NodePort Service `default/sink` and its EndpointSlice over `backends` (indexes into
/// [`BACKENDS`]; `nodes[i]` is backend i's node), planned into NB rows.
fn service_plan(nodes: [&str; 2], backends: &[usize]) -> NbPlan {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "sink", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": VIP, "ports": [
            {"name": "u", "port": PORT, "targetPort": PORT, "protocol": "UDP",
             "nodePort": NODE_PORT}]},
    }))
    .unwrap();
    let eps: Vec<_> = backends
        .iter()
        .map(|&i| {
            json!({"addresses": [BACKENDS[i].ip], "nodeName": nodes[i],
                   "conditions": {"ready": true}})
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "sink-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "sink"}},
        "addressType": "IPv4",
        "ports": [{"name": "u", "port": PORT, "protocol": "UDP"}],
        "endpoints": eps,
    }))
    .unwrap();
    let inputs = ServiceInputs {
        services: vec![svc],
        endpoint_slices: vec![slice],
        ..Default::default()
    };
    let service_nodes = [
        ServiceNode {
            name: nodes[0].into(),
            ips: vec![DPDK_NODE_IP.parse().unwrap()],
        },
        ServiceNode {
            name: nodes[1].into(),
            ips: vec![KERNEL_NODE_IP.parse().unwrap()],
        },
    ];
    let mut issues = Vec::new();
    let s = plan_services(&inputs, DEFAULT_ROUTER, &service_nodes, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    NbPlan {
        lb_groups: s.groups,
        chassis_vars: s.chassis_vars,
        ..Default::default()
    }
}

/// nftables counters in a backend pod, before routing: `backend` counts UDP datagrams to the
/// pod's own address and the Service's target port from a client's address (the DPDK or the
/// kernel pod; one of them sends at a time);
/// `unbalanced` counts anything still addressed to the VIP or a node address.
fn install_counters(ns: &Netns, own_ip: &str, dir: &Path) {
    let rules = format!(
        "table inet fvsvc {{\n\
         counter backend {{}}\n\
         counter unbalanced {{}}\n\
         chain pre {{\n\
         type filter hook prerouting priority -300; policy accept;\n\
         ip saddr {{ {CLIENT_IP}, {KCLIENT_IP} }} ip daddr {own_ip} udp dport {PORT} counter name backend\n\
         ip daddr {{ {VIP}, {KERNEL_NODE_IP}, {DPDK_NODE_IP} }} counter name unbalanced\n\
         }}\n\
         }}\n"
    );
    let file = dir.join(format!("{}.nft", ns.name()));
    std::fs::write(&file, rules).unwrap();
    ns.run(10, "nft", ["-f", &file.display().to_string()])
        .expect("nft counters in the backend pod");
}

fn counter(ns: &Netns, name: &str) -> u64 {
    let out = ns
        .run(10, "nft", ["list", "counter", "inet", "fvsvc", name])
        .expect("nft list counter");
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {out}"))
}

/// Datagrams received per backend, and the unbalanced ones summed over backends.
fn counts(backends: &[Netns]) -> (Vec<u64>, u64) {
    let got = backends.iter().map(|ns| counter(ns, "backend")).collect();
    let unbalanced = backends.iter().map(|ns| counter(ns, "unbalanced")).sum();
    (got, unbalanced)
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// The DPDK client: testpmd `txonly` from the pod's address and `sport` to `dst:dport`.
struct Client<'a> {
    dpdk: &'a DpdkNode,
    pod: &'a DpdkPod,
    memory: PodMemory,
    rnd: String,
    work: PathBuf,
    runs: u32,
}

impl Client<'_> {
    fn start(&mut self, dst: &str, sport: u16, dport: u16) -> Testpmd {
        self.runs += 1;
        let t = Testpmd::start(&TestpmdSpec {
            prefix: format!("fvsd{}{}", self.rnd, self.runs),
            netns: Some(&self.pod.netns),
            cpu: 0,
            memory: self.memory.clone(),
            vdevs: vec![self.pod.vdev(0)],
            forward_mode: "txonly".into(),
            app_args: vec![
                "--txpkts=64".into(),
                format!("--tx-ip={CLIENT_IP},{dst}"),
                format!("--tx-udp={sport},{dport}"),
                format!("--eth-peer=0,{GATEWAY_MAC}"),
            ],
            log: self.work.join(format!("testpmd-{}.log", self.runs)),
            interactive: false,
        })
        .expect("testpmd");
        assert!(
            self.dpdk
                .wait_vhost_up(&[self.pod], Duration::from_secs(30)),
            "the client's vhost-user port never came up: {}",
            t.log_text()
        );
        t
    }

    /// Stops testpmd and waits until OVS saw the port go down, so the next run's "up" is its.
    fn stop(&self, mut t: Testpmd) {
        t.stop();
        let port = &self.pod.info.ovs_port;
        wait_until(Duration::from_secs(15), || {
            self.dpdk
                .node
                .vsctl(["get", "Interface", port, "link_state"])
                .map(|s| s.trim() != "up")
                .unwrap_or(true)
        });
    }

    /// One flow `sport → dst:dport` until `enough` datagrams arrived at the backends: the
    /// datagrams each backend got, and the unbalanced ones.
    fn flow(
        &mut self,
        backends: &[Netns],
        dst: &str,
        sport: u16,
        dport: u16,
        enough: u64,
    ) -> (Vec<u64>, u64) {
        let (before, unb_before) = counts(backends);
        let t = self.start(dst, sport, dport);
        let arrived = wait_until(Duration::from_secs(20), || {
            delta(&counts(backends).0, &before).iter().sum::<u64>() >= enough
        });
        let log = t.log_text();
        self.stop(t);
        let (after, unb_after) = counts(backends);
        let got = delta(&after, &before);
        assert!(
            arrived,
            "flow {CLIENT_IP}:{sport} -> {dst}:{dport}: only {got:?} datagrams at the backends \
             within 20 s; testpmd: {log}"
        );
        (got, unb_after - unb_before)
    }
}

/// A kernel pod's UDP flow: a thread inside `ns` sends from `KCLIENT_IP:sport` to `dst:dport`
/// as fast as it can until `stop`.
fn kernel_flow(
    ns: &Netns,
    dst: &str,
    sport: u16,
    dport: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let path = ns.path();
    let dst: std::net::SocketAddr = format!("{dst}:{dport}").parse().unwrap();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: a valid netns fd; setns changes only this thread's namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let sock = std::net::UdpSocket::bind((KCLIENT_IP, sport)).unwrap();
        let mut sent = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if sock.send_to(b"ferrovn-kernel-flow", dst).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// Waits until the backends' counts stand still for 300 ms: a socket sending flat out leaves
/// a backlog in the datapath's queues that would otherwise count for the next flow.
fn settle(backends: &[Netns]) {
    let mut last = counts(backends).0;
    wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = counts(backends).0;
        let still = now == last;
        last = now;
        still
    });
}

/// One kernel-pod flow until `enough` datagrams arrived: the datagrams each backend got.
fn kernel_flow_once(ns: &Netns, backends: &[Netns], sport: u16, enough: u64) -> Vec<u64> {
    settle(backends);
    let (before, _) = counts(backends);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = kernel_flow(ns, VIP, sport, PORT, stop.clone());
    let arrived = wait_until(Duration::from_secs(20), || {
        delta(&counts(backends).0, &before).iter().sum::<u64>() >= enough
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t.join().unwrap();
    settle(backends);
    let got = delta(&counts(backends).0, &before);
    assert!(
        arrived,
        "kernel flow :{sport} -> {VIP}:{PORT}: only {got:?} at the backends within 20 s"
    );
    got
}

/// The one backend a flow's datagrams went to (panics if they were split or went nowhere).
fn only_backend(got: &[u64], what: &str) -> usize {
    let hit: Vec<usize> = (0..got.len()).filter(|&i| got[i] > 0).collect();
    assert_eq!(
        hit.len(),
        1,
        "{what}: one flow must land on exactly one backend, got {got:?}"
    );
    hit[0]
}

// A plain test with its own runtime for the NB: `DpdkNode::start` runs one of its own, which
// cannot nest inside a tokio test's.
#[test]
fn dpdk_pod_reaches_a_udp_service_on_both_nodes_and_follows_endpoint_removal() {
    const TEST: &str = "dpdk_pod_reaches_a_udp_service_on_both_nodes_and_follows_endpoint_removal";
    if !require(TEST, &ovs_dpdk_needs(&[Need::Tool("nft")])) {
        return;
    }
    let t0 = Instant::now();
    let tag = unique_tag();
    let rnd = short_rand();
    let work = tempfile::Builder::new()
        .prefix("fvsd-")
        .tempdir_in("/tmp")
        .unwrap();
    let huge_dir = PathBuf::from(format!("/tmp/fvsdh{rnd}"));
    let hugepages = TestMemory::acquire(
        TEST,
        &format!("svc-dpdk-{tag}"),
        384,
        &huge_dir,
        "OVS-DPDK and the DPDK pod with --no-huge",
    );
    let memory = hugepages.pod(128);

    // The kernel node first: the DPDK node's underlay is a veth to it.
    let mut kernel = Node::start(
        &format!("fvsd-{tag}-k"),
        &NodeConfig::plain(&format!("fvsd-{tag}-k")),
    )
    .expect("kernel node");
    let agent = agent_binary().expect("agent binary");
    let plugin = cni_plugin_binary().expect("CNI plugin binary");
    let dpdk = DpdkNode::start_with_underlay(
        &DpdkNodeSpec {
            prefix: "fvsd",
            tag: &tag,
            rnd: &rnd,
            work: work.path(),
            agent: &agent,
            plugin: &plugin,
            huge_dir: hugepages.huge_dir(),
            extra_agent_args: vec![],
        },
        &DpdkUnderlay {
            iface: "fvul2",
            cidr: &format!("{DPDK_NODE_IP}/24"),
        },
        |n| add_underlay_veth(&kernel, n),
    )
    .expect("DPDK node");
    kernel
        .setup_underlay("fvul1", &format!("{KERNEL_NODE_IP}/24"))
        .expect("kernel node underlay");
    let sb = dpdk.central.sb_remote();
    kernel
        .start_agent(&agent, &sb, dpdk.allocs.dir(), &[])
        .expect("kernel node agent");
    kernel.start_ovn_controller().expect("ovn-controller");
    // Userspace tunnelling learns the peer's MAC from ARP on br-phy: one ping each way. The
    // agent brings br-phy up; once, under load average 15, that took more than 60 s.
    let underlay_up = wait_until(Duration::from_secs(150), || {
        kernel.netns().ping_once(DPDK_NODE_IP) && dpdk.node.netns().ping_once(KERNEL_NODE_IP)
    });
    assert!(
        underlay_up,
        "underlay: {}",
        dpdk.node
            .agent_log()
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    ferrovn_testkit::cluster::wait_chassis_count(&dpdk.central, 2, Duration::from_secs(30))
        .expect("two chassis");
    let nodes = [dpdk.name().to_string(), kernel.name().to_string()];
    let nodes = [nodes[0].as_str(), nodes[1].as_str()];

    // Pods: the switch and router as Kube-OVN's default VPC has them, a kernel backend on
    // each node, the DPDK client next to web-a.
    add_switch_with_router(&dpdk.central, &POD_SUBNET).expect("switch and router");
    let web_a = dpdk
        .add_kernel_pod(
            &POD_SUBNET,
            BACKENDS[0].name,
            BACKENDS[0].ip,
            BACKENDS[0].mac,
        )
        .expect("web-a");
    allocate_pod(
        &dpdk.central,
        &dpdk.allocs,
        &POD_SUBNET,
        "ovn",
        BACKENDS[1].name,
        BACKENDS[1].ip,
        BACKENDS[1].mac,
    )
    .expect("web-b port");
    let web_b = Netns::create(&format!("fvsd-{tag}-web-b")).expect("web-b netns");
    let cni = FerrovnCni {
        binary: plugin.clone(),
        cni_version: "1.1.0",
        network: "net",
    };
    let out = cni
        .call(
            "ADD",
            &kernel,
            &format!("cwb{}", tag.replace('x', "")),
            &web_b.path().display().to_string(),
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-b",
            json!({"mtu": 1400}),
        )
        .expect("CNI plugin ran");
    assert_eq!(
        out.exit_code,
        0,
        "ADD web-b: {} {}; agent: {}",
        out.stdout,
        out.stderr,
        kernel.agent_log()
    );
    web_b.ip(["link", "set", "lo", "up"]).unwrap();
    let client_pod = dpdk
        .add_dpdk_pod(&POD_SUBNET, "dclient", CLIENT_IP, "0a:58:0a:10:00:15", 1)
        .expect("DPDK client pod");
    let backends = [web_a, web_b];
    for (ns, b) in backends.iter().zip(&BACKENDS) {
        install_counters(ns, b.ip, work.path());
    }

    // The Service, planned and reconciled by FerrOVN, its group on the pod switch.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sync = rt
        .block_on(NbSync::connect(&dpdk.central.nb_remote(), 500))
        .expect("NB");
    rt.block_on(sync.sync(&service_plan(nodes, &[0, 1])))
        .expect("Service rows");
    let group = nbctl(
        &dpdk.central,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer_Group",
            "name=ferrovn-lbs-ovn-cluster",
        ],
    )
    .expect("group");
    nbctl(
        &dpdk.central,
        &[
            "add",
            "Logical_Switch",
            POD_SUBNET.switch,
            "load_balancer_group",
            group.trim(),
        ],
    )
    .expect("attach the group");
    nbctl(&dpdk.central, &["--wait=hv", "sync"]).expect("flows on both nodes");
    let setup = t0.elapsed();

    let mut client = Client {
        dpdk: &dpdk,
        pod: &client_pod,
        memory,
        rnd: rnd.clone(),
        work: work.path().to_path_buf(),
        runs: 0,
    };

    // ClusterIP: one flow per source port, each on one backend, until both backends served.
    let mut flows: BTreeMap<u16, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sport = 40000;
    while flows
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 2
        && flows.len() < 12
        && Instant::now() < deadline
    {
        let (got, unbalanced) = client.flow(&backends, VIP, sport, PORT, 200);
        assert_eq!(unbalanced, 0, "datagrams reached a backend un-DNATed");
        flows.insert(
            sport,
            only_backend(&got, &format!("{VIP}:{PORT} from :{sport}")),
        );
        sport += 1;
    }
    eprintln!("ClusterIP flows (source port -> backend): {flows:?}");
    let remote_flow = flows
        .iter()
        .find(|(_, b)| **b == 1)
        .map(|(s, _)| *s)
        .unwrap_or_else(|| panic!("web-b (other node) never served the VIP: {flows:?}"));
    assert!(
        flows.values().any(|b| *b == 0),
        "web-a (same node) never served the VIP: {flows:?}"
    );

    // NodePort on either node's address, from the DPDK pod.
    for ip in [KERNEL_NODE_IP, DPDK_NODE_IP] {
        let (got, unbalanced) = client.flow(&backends, ip, 41000, NODE_PORT, 200);
        assert_eq!(
            unbalanced, 0,
            "{ip}:{NODE_PORT}: datagrams reached a backend un-DNATed"
        );
        let b = only_backend(&got, &format!("{ip}:{NODE_PORT}"));
        eprintln!("NodePort {ip}:{NODE_PORT} -> {}", BACKENDS[b].name);
    }

    // A flow runs toward web-b; web-b's endpoint goes. ovn-controller flushes the conntrack
    // entries of the removed backend (the UDP load balancer's `ct_flush`) in the same batch as
    // the new group, before the datapath flows are revalidated, so the running flow re-creates
    // its entry to web-b at once; the node agent flushes again once the flows no longer pick
    // web-b (`ct_reflush`). What a user sees: web-b stops getting the flow within a deadline,
    // and the flow continues on web-a.
    let (before, _) = counts(&backends);
    let running = client.start(VIP, remote_flow, PORT);
    let flowing = wait_until(Duration::from_secs(20), || {
        counts(&backends).0[1] >= before[1] + 200
    });
    assert!(
        flowing,
        "the flow to web-b did not resume: {}",
        running.log_text()
    );
    let (d, _) = rt
        .block_on(sync.sync(&service_plan(nodes, &[0])))
        .expect("remove web-b's endpoint");
    assert_eq!(d.changes.len(), 1, "one row changes: {:#?}", d.changes);
    nbctl(&dpdk.central, &["--wait=hv", "sync"]).expect("applied on both nodes");
    let applied = Instant::now();
    // Moved: web-b's count stands still for a whole second while web-a's grows.
    let mut last = counts(&backends).0;
    let mut still_since = Instant::now();
    let moved = wait_until(Duration::from_secs(30), || {
        let now = counts(&backends).0;
        if now[1] != last[1] || now[0] == last[0] {
            still_since = Instant::now();
            last = now;
            return false;
        }
        still_since.elapsed() >= Duration::from_secs(1)
    });
    let moved_after = applied.elapsed();
    let (mid, unb_mid) = counts(&backends);
    std::thread::sleep(Duration::from_secs(2));
    let (end, unb_end) = counts(&backends);
    let log = running.log_text();
    client.stop(running);
    let after = delta(&end, &mid);
    let agent_log = dpdk.node.agent_log();
    eprintln!(
        "running flow: off web-b {:.1} s after the removal was applied (the agent's pass is \
         3 s); in the next 2 s web-a {}, web-b {} datagrams; agent: {:?}",
        moved_after.as_secs_f64(),
        after[0],
        after[1],
        agent_log
            .lines()
            .filter(|l| l.contains("flushed again") || l.contains("not flushed"))
            .collect::<Vec<_>>()
    );
    assert!(
        moved,
        "the running flow stayed on web-b for 30 s after web-b's removal was applied \
         (counts {last:?}); testpmd: {log}"
    );
    assert_eq!(
        after[1], 0,
        "web-b still got {after:?} datagrams after its endpoint was removed"
    );
    assert!(
        after[0] > 0,
        "the running flow did not continue on web-a after web-b's removal ({after:?})"
    );
    assert_eq!(
        unb_end - unb_mid,
        0,
        "un-DNATed datagrams after the removal"
    );
    // And a new flow goes to web-a.
    let (got, _) = client.flow(&backends, VIP, 42000, PORT, 200);
    assert_eq!(only_backend(&got, "a new flow after the removal"), 0);

    // The same from a kernel pod next to web-a: web-b back, a running flow toward it, web-b
    // removed again.
    let kclient = dpdk
        .add_kernel_pod(&POD_SUBNET, "kclient", KCLIENT_IP, "0a:58:0a:10:00:16")
        .expect("kernel client pod");
    rt.block_on(sync.sync(&service_plan(nodes, &[0, 1])))
        .expect("web-b's endpoint back");
    nbctl(&dpdk.central, &["--wait=hv", "sync"]).expect("applied on both nodes");
    let mut kflows: BTreeMap<u16, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut ksport = 43000;
    while !kflows.values().any(|b| *b == 1) && kflows.len() < 12 && Instant::now() < deadline {
        let got = kernel_flow_once(&kclient, &backends, ksport, 200);
        kflows.insert(
            ksport,
            only_backend(&got, &format!("kernel {VIP}:{PORT} from :{ksport}")),
        );
        ksport += 1;
    }
    eprintln!("kernel pod flows (source port -> backend): {kflows:?}");
    let kremote = kflows
        .iter()
        .find(|(_, b)| **b == 1)
        .map(|(s, _)| *s)
        .unwrap_or_else(|| panic!("web-b never served the kernel pod: {kflows:?}"));
    let (before, _) = counts(&backends);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = kernel_flow(&kclient, VIP, kremote, PORT, stop.clone());
    let flowing = wait_until(Duration::from_secs(20), || {
        counts(&backends).0[1] >= before[1] + 200
    });
    assert!(flowing, "the kernel pod's flow to web-b did not resume");
    let (d, _) = rt
        .block_on(sync.sync(&service_plan(nodes, &[0])))
        .expect("remove web-b's endpoint again");
    assert_eq!(d.changes.len(), 1, "one row changes: {:#?}", d.changes);
    nbctl(&dpdk.central, &["--wait=hv", "sync"]).expect("applied on both nodes");
    let applied = Instant::now();
    let mut last = counts(&backends).0;
    let mut still_since = Instant::now();
    let moved = wait_until(Duration::from_secs(30), || {
        let now = counts(&backends).0;
        if now[1] != last[1] || now[0] == last[0] {
            still_since = Instant::now();
            last = now;
            return false;
        }
        still_since.elapsed() >= Duration::from_secs(1)
    });
    let moved_after = applied.elapsed();
    let (mid, _) = counts(&backends);
    std::thread::sleep(Duration::from_secs(2));
    let (end, _) = counts(&backends);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let after = delta(&end, &mid);
    eprintln!(
        "kernel pod's running flow: off web-b {:.1} s after the removal was applied; in the \
         next 2 s web-a {}, web-b {} datagrams ({sent} sent in all)",
        moved_after.as_secs_f64(),
        after[0],
        after[1],
    );
    assert!(
        moved,
        "the kernel pod's running flow stayed on web-b for 30 s after web-b's removal was \
         applied (counts {last:?})"
    );
    assert_eq!(
        after[1], 0,
        "web-b still got {after:?} datagrams of the kernel pod's flow after its removal"
    );
    assert!(
        after[0] > 0,
        "the kernel pod's flow did not continue on web-a ({after:?})"
    );
    drop(kclient);

    eprintln!(
        "setup {:.1} s, total {:.1} s, testpmd runs {}",
        setup.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        client.runs
    );
    drop(client);
    drop(client_pod);
    drop(backends);
    drop(kernel);
}
