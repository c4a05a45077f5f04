//! Two OVN nodes (network namespaces with their own OVS + ovn-controller), pods plumbed by our
//! netlink code, traffic across Geneve in the OVS userspace datapath.

use std::time::Duration;

use ferrovn_dataplane::plumbing::{VethSpec, plumb_veth_blocking};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{POD_MTU, TwoNodes};

#[test]
fn pods_plumbed_by_our_code_ping_and_talk_tcp_across_geneve() {
    let tb = TwoNodes::start().expect("two nodes");
    let nb = &tb.central;
    nb.nbctl(&["ls-add", "ls1"]).expect("ls");
    nb.nbctl(&[
        "lsp-add",
        "ls1",
        "pod1.default",
        "--",
        "lsp-set-addresses",
        "pod1.default",
        "0a:58:0a:10:00:0b 10.16.0.11",
    ])
    .expect("lsp1");
    nb.nbctl(&[
        "lsp-add",
        "ls1",
        "pod2.default",
        "--",
        "lsp-set-addresses",
        "pod2.default",
        "0a:58:0a:10:00:0c 10.16.0.12",
    ])
    .expect("lsp2");

    let tag = unique_tag();
    let mut pods = Vec::new();
    for (i, (node, lsp, mac, ip)) in [
        (
            &tb.nodes[0],
            "pod1.default",
            "0a:58:0a:10:00:0b",
            "10.16.0.11/24",
        ),
        (
            &tb.nodes[1],
            "pod2.default",
            "0a:58:0a:10:00:0c",
            "10.16.0.12/24",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let pod = Netns::create(&format!("fvt-{tag}-pod{i}")).expect("pod netns");
        let spec = VethSpec {
            container_id: format!("ctr{tag}{i}"),
            pod_netns: pod.path(),
            pod_ifname: "eth0".into(),
            host_netns: Some(node.netns_path()),
            mac: mac.parse().expect("mac"),
            mtu: POD_MTU,
            addresses: vec![ip.parse().expect("ip")],
            gateways: vec![],
            routes: vec![],
            ipv6_link_local: false,
            tx_offload: false,
        };
        let made = plumb_veth_blocking(&spec).expect("plumb");
        node.bind_port(&made.host_ifname, lsp, Duration::from_secs(30))
            .expect("add-port, ovn-installed");
        pods.push(pod);
    }
    tb.wait_chassis(Duration::from_secs(20)).expect("chassis");
    nb.nbctl(&["--wait=hv", "sync"]).expect("sync");

    assert!(
        pods[0].ping_until("10.16.0.12", Duration::from_secs(15)),
        "pod1@node1 -> pod2@node2"
    );
    assert!(
        pods[1].ping_until("10.16.0.11", Duration::from_secs(5)),
        "pod2@node2 -> pod1@node1"
    );
    // full-MTU, don't-fragment ping: 1400 - 28 bytes of IP+ICMP headers
    pods[0]
        .run(
            10,
            "ping",
            ["-c2", "-W2", "-M", "do", "-s", "1372", "10.16.0.12"],
        )
        .expect("full-MTU ping");

    // TCP across the tunnel only works with tx checksum offload off in the pod (set by plumbing)
    let mut server = pods[1]
        .command("iperf3")
        .args(["-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let out = pods[0].run(
        20,
        "iperf3",
        ["-c", "10.16.0.12", "-p", "5201", "-t", "1", "-J"],
    );
    let _ = server.kill();
    let _ = server.wait();
    let json: serde_json::Value =
        serde_json::from_str(&out.expect("iperf3 client")).expect("iperf3 json");
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bps");
    assert!(bps > 1e6, "cross-node TCP {bps} bit/s");

    // Geneve really carried it: tunnel push/pop flows in node1's userspace datapath
    let flows = tb.nodes[0]
        .appctl_vswitchd(["dpctl/dump-flows"])
        .expect("flows");
    assert!(
        flows.contains("tnl_push") || flows.contains("tnl_pop"),
        "{flows}"
    );
}
