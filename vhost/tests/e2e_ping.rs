//! End to end, as a user sees it: a DPDK pod (dpdk-testpmd, virtio_user server, ICMP echo) is
//! served by the helper, which relays it onto a veth whose other end sits in a network
//! namespace; that namespace pings the pod. The pod restarts, the helper is killed and
//! restarted (ports come back from its state file), and the agent re-adds a port to a helper
//! started without state: each time, ping works again.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use ferrovn_vhost::protocol::{KernelKind, PortSpec, Request};
use nix::sys::signal::Signal;
use std::time::Duration;

const POD_MAC: &str = "0a:58:0a:63:00:02";
const POD_IP: &str = "10.99.7.2";

#[test]
fn pod_behind_helper_answers_ping_across_pod_and_helper_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = std::process::id();
    let (pod_cpu, relay_cpu) = cpus();
    let pod_prefix = format!("fvh-pod-{id}");
    let helper_prefix = format!("fvh-helper-{id}");
    let _prefixes = DpdkPrefixes(vec![pod_prefix.clone(), helper_prefix.clone()]);
    let net = NetnsVeth::new("e", "10.99.7.1/24");
    let sock = dir.path().join("vhu.sock");
    let ctl = dir.path().join("ctl.sock");

    // The helper first: the pod is not there yet, so its vhost client keeps retrying.
    let mut helper = Proc::spawn(
        helper_cmd(
            dir.path(),
            &helper_prefix,
            relay_cpu,
            &["--metrics-listen", "127.0.0.1:0"],
        ),
        &dir.path().join("helper1.log"),
    );
    let mut c = control(&ctl, Duration::from_secs(20));
    let spec = PortSpec {
        name: "pod1".into(),
        socket: sock.clone(),
        kernel_iface: net.host.clone(),
        kernel: KernelKind::AfPacket,
        mac: None,
    };
    let r = call(&mut c, &Request::AddPort(spec.clone()));
    assert!(r.ok, "add_port: {r:?}\n{}", helper.log_text());
    let port = &r.ports.as_ref().expect("ports")[0];
    assert_eq!(port.core, relay_cpu);
    assert!(!port.pod_connected, "no pod app yet");

    let mut pod = testpmd_pod(
        &pod_prefix,
        &sock,
        POD_MAC,
        pod_cpu,
        &dir.path().join("pod1.log"),
    );
    assert!(
        net.ping_within(POD_IP, Duration::from_secs(20)),
        "ping through the helper\nhelper:\n{}\npod:\n{}",
        helper.log_text(),
        pod.log_text()
    );

    let r = call(
        &mut c,
        &Request::Stats {
            name: Some("pod1".into()),
        },
    );
    let stats = &r.ports.as_ref().expect("ports")[0];
    assert!(stats.pod_connected);
    assert!(
        stats.counters.rx_packets >= 1 && stats.counters.tx_packets >= 1,
        "{stats:?}"
    );
    assert!(
        stats.counters.rx_bytes >= 60 * stats.counters.rx_packets,
        "{stats:?}"
    );
    let metrics = call(&mut c, &Request::Metrics)
        .metrics
        .expect("metrics text");
    assert!(
        metrics.contains("ferrovn_vhost_rx_packets_total{port=\"pod1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrovn_vhost_pod_connected{port=\"pod1\"} 1"),
        "{metrics}"
    );
    // The same over HTTP.
    let addr = helper
        .log_text()
        .lines()
        .find_map(|l| {
            l.split("http://")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .map(str::to_owned)
        })
        .expect("metrics address in the log");
    let body = http_get(&addr, "/metrics");
    assert!(
        body.contains("200 OK") && body.contains("ferrovn_vhost_tx_packets_total{port=\"pod1\"}"),
        "{body}"
    );

    // The pod's app restarts: the helper's vhost client reconnects by itself.
    pod.stop(Signal::SIGKILL, Duration::from_secs(5));
    let mut pod = testpmd_pod(
        &pod_prefix,
        &sock,
        POD_MAC,
        pod_cpu,
        &dir.path().join("pod2.log"),
    );
    assert!(
        net.ping_within(POD_IP, Duration::from_secs(20)),
        "ping after the pod restarted\n{}",
        helper.log_text()
    );

    // The helper crashes and starts again: it re-creates the port from its state file.
    drop(c);
    helper.stop(Signal::SIGKILL, Duration::from_secs(5));
    let mut helper = Proc::spawn(
        helper_cmd(dir.path(), &helper_prefix, relay_cpu, &[]),
        &dir.path().join("helper2.log"),
    );
    let mut c = control(&ctl, Duration::from_secs(20));
    let r = call(&mut c, &Request::ListPorts);
    assert_eq!(
        r.ports
            .as_ref()
            .map(|p| p.iter().map(|p| p.spec.clone()).collect::<Vec<_>>()),
        Some(vec![spec.clone()]),
        "restored from state"
    );
    assert!(
        net.ping_within(POD_IP, Duration::from_secs(20)),
        "ping after the helper restarted\n{}",
        helper.log_text()
    );
    // The agent re-adding the same port is harmless.
    assert!(call(&mut c, &Request::AddPort(spec.clone())).ok);

    // A clean stop (SIGTERM) closes everything; without a state file the agent re-adds.
    drop(c);
    let status = helper.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit on SIGTERM\n{}",
        helper.log_text()
    );
    assert!(!ctl.exists(), "control socket removed on exit");
    let helper = Proc::spawn(
        helper_cmd(dir.path(), &helper_prefix, relay_cpu, &["--no-state-file"]),
        &dir.path().join("helper3.log"),
    );
    let mut c = control(&ctl, Duration::from_secs(20));
    assert_eq!(
        call(&mut c, &Request::ListPorts).ports.map(|p| p.len()),
        Some(0)
    );
    assert!(call(&mut c, &Request::AddPort(spec)).ok);
    assert!(
        net.ping_within(POD_IP, Duration::from_secs(20)),
        "ping after the agent re-added the port\n{}",
        helper.log_text()
    );

    // Removing the port stops the relay.
    assert!(
        call(
            &mut c,
            &Request::RemovePort {
                name: "pod1".into()
            }
        )
        .ok
    );
    assert!(!net.ping_once(POD_IP), "no relay after remove_port");
    assert_eq!(
        call(&mut c, &Request::ListPorts).ports.map(|p| p.len()),
        Some(0)
    );
    pod.stop(Signal::SIGKILL, Duration::from_secs(5));
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
