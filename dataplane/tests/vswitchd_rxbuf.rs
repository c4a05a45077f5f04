//! ovs-vswitchd's AF_PACKET sockets (one per veth pod on a userspace datapath) get the agent's
//! receive buffer, checked with `ss` against a real ovs-vswitchd, including after it restarts.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ferrovn_dataplane::vswitchd_rxbuf::{DEFAULT_RCVBUF_BYTES, RxBufferTuner};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovs_paths::vswitchd_plain;

/// `rb` of every packet socket ovs-vswitchd holds in the node's namespace, from `ss -0 -m -p`.
fn vswitchd_packet_rcvbufs(node: &Node) -> Vec<usize> {
    let out = node
        .netns()
        .run(10, "ss", ["-0", "-n", "-m", "-p"])
        .expect("ss -0 (iproute2)");
    let mut bufs = Vec::new();
    let mut owned_by_vswitchd = false;
    for line in out.lines() {
        if line.contains("users:(") {
            owned_by_vswitchd = line.contains("\"ovs-vswitchd\"");
        }
        if let Some(rb) = line
            .split("skmem:(")
            .nth(1)
            .and_then(|m| m.split(',').find_map(|f| f.strip_prefix("rb")))
            .and_then(|v| v.trim_end_matches(')').parse().ok())
            && owned_by_vswitchd
        {
            bufs.push(rb);
        }
    }
    bufs
}

fn wait_sockets(node: &Node, n: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bufs = vswitchd_packet_rcvbufs(node);
        if bufs.len() >= n {
            return bufs;
        }
        assert!(
            Instant::now() < deadline,
            "ovs-vswitchd opened {} packet sockets, expected {n}",
            bufs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn veth_ports_get_the_agents_receive_buffer_and_keep_it_across_a_vswitchd_restart() {
    let tag = unique_tag();
    let mut node =
        Node::start(&format!("fvt-{tag}-rb"), &NodeConfig::plain("rxbuf")).expect("node");
    node.vsctl([
        "add-br",
        "br-rx",
        "--",
        "set",
        "bridge",
        "br-rx",
        "datapath_type=netdev",
    ])
    .expect("bridge");
    for i in 0..2 {
        let (a, b) = (format!("rxa{i}"), format!("rxb{i}"));
        node.netns()
            .ip(["link", "add", &a, "type", "veth", "peer", "name", &b])
            .expect("veth");
        node.netns().ip(["link", "set", &a, "up"]).expect("up");
        node.netns().ip(["link", "set", &b, "up"]).expect("up");
        node.vsctl(["add-port", "br-rx", &a]).expect("add-port");
    }
    let before = wait_sockets(&node, 2);
    assert!(
        before.iter().all(|b| *b < DEFAULT_RCVBUF_BYTES),
        "kernel default expected before tuning: {before:?}"
    );

    let mut tuner = RxBufferTuner::new(node.dir().join("ovs-vswitchd.pid"), DEFAULT_RCVBUF_BYTES);
    let first = tuner.tune_once().expect("tune");
    assert_eq!(first.raised, before.len(), "{first:?}");
    let after = vswitchd_packet_rcvbufs(&node);
    assert!(
        !after.is_empty() && after.iter().all(|b| *b == DEFAULT_RCVBUF_BYTES),
        "every ovs-vswitchd packet socket at {DEFAULT_RCVBUF_BYTES}: {after:?}"
    );
    let again = tuner.tune_once().expect("tune");
    assert_eq!(again.raised, 0, "nothing left to raise: {again:?}");

    // a restarted ovs-vswitchd opens new sockets at the kernel default: the next pass finds them
    node.restart_vswitchd(&vswitchd_plain()).expect("restart");
    let reopened = wait_sockets(&node, 2);
    assert!(
        reopened.iter().all(|b| *b < DEFAULT_RCVBUF_BYTES),
        "{reopened:?}"
    );
    let after_restart = tuner.tune_once().expect("tune");
    assert_eq!(after_restart.raised, reopened.len(), "{after_restart:?}");
    let tuned = vswitchd_packet_rcvbufs(&node);
    assert!(
        tuned.iter().all(|b| *b == DEFAULT_RCVBUF_BYTES),
        "{tuned:?}"
    );
}

#[test]
fn a_missing_vswitchd_pidfile_is_a_clear_error() {
    let dir = ferrovn_testkit::names::tempdir("fv-rxbuf-").expect("tmp");
    let pidfile = dir.path().join("ovs-vswitchd.pid");
    let e = RxBufferTuner::new(&pidfile, DEFAULT_RCVBUF_BYTES)
        .tune_once()
        .unwrap_err();
    assert!(
        e.to_string().contains(&pidfile.display().to_string()),
        "{e}"
    );
}
