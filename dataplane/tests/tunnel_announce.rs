//! Tunnel endpoint announcements against real OVS userspace tunnelling: two nodes as network
//! namespaces with br-phy on a veth underlay. A node whose OVS forgot the other's tunnel
//! endpoint (`tnl/neigh/flush`, what the 15-minute aging does) learns it again from the
//! gratuitous ARP — sent by the library call, and periodically by the agent binary.
//! OVS snoops only on a datapath doing native tunnelling, so these tests run full OVN (the
//! Geneve ports exist) and wait for the agent's second announcement (the first one's
//! datapath flow must idle out first; see `tunnel_announce::MIN_INTERVAL_SECS`).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrovn_dataplane::tunnel_announce;
use ferrovn_testkit::binaries::agent_binary;
use ferrovn_testkit::ovs_node::TwoNodes;

fn neighbors(tb: &TwoNodes, node: usize) -> String {
    tb.nodes[node]
        .appctl_vswitchd(["tnl/neigh/show"])
        .expect("tnl/neigh/show")
}

fn br_phy_mac(tb: &TwoNodes, node: usize) -> String {
    let out = tb.nodes[node]
        .netns()
        .ip(["-j", "link", "show", "br-phy"])
        .expect("ip link");
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    j[0]["address"].as_str().expect("address").to_string()
}

/// OVS snoops tunnel neighbors only on a datapath that does native tunnelling, i.e. once
/// ovn-controller has created the Geneve port towards the other chassis.
fn full_ovn_with_tunnels() -> TwoNodes {
    let tb = TwoNodes::start().expect("two nodes");
    tb.wait_chassis(Duration::from_secs(30)).expect("chassis");
    for n in &tb.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        while n
            .vsctl([
                "--bare",
                "--columns=name",
                "find",
                "Interface",
                "type=geneve",
            ])
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "no Geneve port on {}", n.name());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    tb
}

fn learned_within(tb: &TwoNodes, node: usize, ip: &str, mac: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let show = neighbors(tb, node);
        if show.lines().any(|l| l.contains(ip) && l.contains(mac)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_forgotten_tunnel_endpoint_is_learned_again_from_the_announcement() {
    let tb = full_ovn_with_tunnels();
    let ip0: Ipv4Addr = tb.nodes[0].encap_ip().expect("encap").parse().expect("ip");
    let mac0 = br_phy_mac(&tb, 0);

    tb.nodes[1]
        .appctl_vswitchd(["tnl/neigh/flush"])
        .expect("flush");
    // forgotten right before the announcement: what node 2 knows afterwards came from it
    let ns = tb.nodes[0].netns_path();
    assert!(
        !neighbors(&tb, 1).contains(&ip0.to_string()),
        "{}",
        neighbors(&tb, 1)
    );
    let sent =
        ferrovn_dataplane::netns::run_in_netns(Some(&ns), move || tunnel_announce::announce(ip0))
            .expect("netns thread")
            .expect("announce");
    assert_eq!(sent, "br-phy");
    assert!(
        learned_within(&tb, 1, &ip0.to_string(), &mac0, Duration::from_secs(3)),
        "node 2 did not learn {ip0} at {mac0}: {}",
        neighbors(&tb, 1)
    );

    // an address no interface holds is a clear error
    let missing = ferrovn_dataplane::netns::run_in_netns(Some(&ns), || {
        tunnel_announce::announce(Ipv4Addr::new(192, 0, 2, 77))
    })
    .expect("netns thread")
    .expect_err("no holder");
    assert!(missing.to_string().contains("192.0.2.77"), "{missing}");
}

#[test]
fn the_agent_announces_its_tunnel_ip_periodically() {
    let mut tb = full_ovn_with_tunnels();
    let agent = agent_binary().expect("agent binary");
    let alloc = tempfile::tempdir().expect("tempdir");
    let sb = tb.central.sb_remote();
    tb.nodes[0]
        .start_agent(
            &agent,
            &sb,
            alloc.path(),
            &["--tunnel-announce-interval-secs=15", "--gc-interval-secs=0"],
        )
        .expect("agent");
    let ip0 = tb.nodes[0].encap_ip().expect("encap").to_string();
    let mac0 = br_phy_mac(&tb, 0);
    // the first announcement goes out at start; forget it, the next one (15 s later) restores it
    std::thread::sleep(Duration::from_secs(1));
    tb.nodes[1]
        .appctl_vswitchd(["tnl/neigh/flush"])
        .expect("flush");
    assert!(
        learned_within(&tb, 1, &ip0, &mac0, Duration::from_secs(20)),
        "node 2 did not learn {ip0} at {mac0} again: {}\nagent log: {}",
        neighbors(&tb, 1),
        tb.nodes[0].agent_log()
    );
}

#[test]
fn the_agent_refuses_an_announcement_interval_ovs_would_ignore() {
    let agent = agent_binary().expect("agent binary");
    let out = std::process::Command::new(agent)
        .args([
            "--sb-remote=tcp:127.0.0.1:1",
            "--encap-ip=192.0.2.1",
            "--tunnel-announce-interval-secs=5",
        ])
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tunnel-announce-interval-secs") && err.contains("too short"),
        "{err}"
    );
}
