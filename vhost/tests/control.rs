//! The control socket against a real helper: port lifecycle with a tap kernel side, the errors
//! the agent sees for bad or conflicting requests, and start-up errors naming the core.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use ferrovn_vhost::helper::StateFile;
use ferrovn_vhost::protocol::{KernelKind, PortSpec, Request};
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", name])
}

fn link_mac(name: &str) -> String {
    let out = Command::new("cat")
        .arg(format!("/sys/class/net/{name}/address"))
        .output()
        .expect("cat");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tap_port_lifecycle_and_agent_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = std::process::id() % 100_000;
    let (_, relay_cpu) = cpus();
    let prefix = format!("fvh-ctl-{id}");
    let _prefixes = DpdkPrefixes(vec![prefix.clone()]);
    let tap = format!("fvht{id}");
    let mut helper = Proc::spawn(
        helper_cmd(dir.path(), &prefix, relay_cpu, &[]),
        &dir.path().join("helper.log"),
    );
    let mut c = control(&dir.path().join("ctl.sock"), Duration::from_secs(20));

    let spec = PortSpec {
        name: "tap-pod".into(),
        socket: dir.path().join("no-pod-yet.sock"),
        kernel_iface: tap.clone(),
        kernel: KernelKind::Tap,
        mac: Some("0a:58:0a:63:00:33".into()),
    };
    let r = call(&mut c, &Request::AddPort(spec.clone()));
    assert!(r.ok, "add_port: {r:?}\n{}", helper.log_text());
    let info = &r.ports.as_ref().expect("ports")[0];
    assert!(!info.pod_connected);
    assert_eq!(info.core, relay_cpu);
    assert!(link_exists(&tap), "net_tap created {tap}");
    assert_eq!(link_mac(&tap), "0a:58:0a:63:00:33");
    let saved = StateFile::load(&dir.path().join("state.json")).expect("state file");
    assert_eq!(saved.ports, vec![spec.clone()]);

    // Conflicts and bad input: the agent gets an error naming what is wrong; nothing changes.
    let other = PortSpec {
        kernel_iface: "fvhx".into(),
        ..spec.clone()
    };
    let err = call(&mut c, &Request::AddPort(other))
        .error
        .expect("conflict");
    assert!(
        err.contains("tap-pod") && err.contains("already exists"),
        "{err}"
    );
    let same_socket = PortSpec {
        name: "second".into(),
        kernel_iface: "fvhy".into(),
        ..spec.clone()
    };
    let err = call(&mut c, &Request::AddPort(same_socket))
        .error
        .expect("shared socket");
    assert!(
        err.contains("socket") && err.contains("already used by port tap-pod"),
        "{err}"
    );
    let bad = PortSpec {
        name: "bad".into(),
        kernel_iface: "way-too-long-ifname".into(),
        socket: "/x.sock".into(),
        kernel: KernelKind::AfPacket,
        mac: None,
    };
    let err = call(&mut c, &Request::AddPort(bad))
        .error
        .expect("bad iface");
    assert!(err.contains("kernel_iface"), "{err}");
    let missing = PortSpec {
        name: "nolink".into(),
        kernel_iface: "fvh-nope".into(),
        socket: dir.path().join("n.sock"),
        kernel: KernelKind::AfPacket,
        mac: None,
    };
    let err = call(&mut c, &Request::AddPort(missing))
        .error
        .expect("af_packet on a missing interface");
    assert!(err.contains("net_af_packet"), "{err}");
    let err = call(
        &mut c,
        &Request::Stats {
            name: Some("ghost".into()),
        },
    )
    .error
    .expect("unknown");
    assert!(err.contains("ghost"), "{err}");
    let err = call(
        &mut c,
        &Request::RemovePort {
            name: "ghost".into(),
        },
    )
    .error
    .expect("unknown");
    assert!(err.contains("no such port"), "{err}");
    assert_eq!(
        call(&mut c, &Request::ListPorts).ports.map(|p| p.len()),
        Some(1),
        "failed adds left nothing behind"
    );

    // Bad JSON gets an error line and the connection keeps working.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(dir.path().join("ctl.sock")).expect("connect");
        s.write_all(b"{\"cmd\":\"format_disk\"}\n{\"cmd\":\"list_ports\"}\n")
            .expect("write");
        let mut lines = BufReader::new(s).lines();
        let first = lines.next().and_then(Result::ok).expect("first answer");
        assert!(
            first.contains("\"ok\":false") && first.contains("bad request"),
            "{first}"
        );
        let second = lines.next().and_then(Result::ok).expect("second answer");
        assert!(
            second.contains("\"ok\":true") && second.contains("tap-pod"),
            "{second}"
        );
    }

    assert!(
        call(
            &mut c,
            &Request::RemovePort {
                name: "tap-pod".into()
            }
        )
        .ok
    );
    assert!(!link_exists(&tap), "tap removed with the port");
    assert_eq!(
        StateFile::load(&dir.path().join("state.json"))
            .expect("state")
            .ports,
        vec![]
    );
    drop(c);
    let status = helper.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", helper.log_text());
}

#[test]
fn start_up_refuses_a_core_outside_the_allowed_set_and_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = ferrovn_vhost::cores::allowed_cores().expect("affinity");
    let outside = allowed.last().copied().unwrap_or(0) + 1;
    let out = helper_cmd(dir.path(), "fvh-never", outside, &[])
        .output()
        .expect("run helper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("core {outside}")) && stderr.contains("allowed CPU set"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("ctl.sock").exists(),
        "no control socket when start-up fails"
    );
}
