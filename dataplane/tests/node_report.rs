//! The node agent reports its chassis: real OVN central, one node (its own OVS in a netns), the
//! real `ferrovn-node` binary and ovn-controller. The lab sink is the state dir's
//! `chassis-node-annotations.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_dataplane::report::{
    CHASSIS_ANNOTATION, CHASSIS_ANNOTATIONS_FILE, CHASSIS_METRICS_FILE, ENCAP_IP_ANNOTATION,
    ENCAP_TYPE_ANNOTATION, TUNNEL_INTERFACE_ANNOTATION,
};
use ferrovn_dataplane::testbed::{Node, NodeConfig, unique_tag, wait_until};
use ferrovn_ovsdb::testkit::OvnCentral;

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

fn read_annotations(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn registered_metric(path: &Path) -> Option<u8> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("ferrovn_node_chassis_registered{"))?;
    line.rsplit(' ').next()?.trim().parse().ok()
}

/// SIGKILLs the node's ovn-controller by the PID in its pidfile (it leaves its Chassis row).
fn kill_ovn_controller(node: &Node) {
    let pidfile = node.dir().join("ovn-controller.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("ovn-controller pidfile")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill ovn-controller");
    assert!(
        wait_until(Duration::from_secs(10), || !PathBuf::from(format!(
            "/proc/{pid}"
        ))
        .join("exe")
        .exists()),
        "ovn-controller {pid} did not die"
    );
}

#[test]
fn chassis_annotations_follow_the_southbound_registration() {
    let tag = unique_tag();
    let central = OvnCentral::start().expect("OVN central");
    let chassis = format!("fv-{tag}-rp");
    let mut node =
        Node::start(&format!("fvt-{tag}-rp"), &NodeConfig::plain(&chassis)).expect("node");
    let state = tempfile::tempdir().expect("state dir");
    let alloc = tempfile::tempdir().expect("alloc dir");
    let sb = central.sb_remote();
    let state_arg = format!("--state-dir={}", state.path().display());
    node.start_agent(
        Path::new(AGENT),
        &sb,
        alloc.path(),
        &[
            &state_arg,
            "--gc-interval-secs=0",
            "--vhost-helper-interval-secs=0",
        ],
    )
    .expect("agent");
    let ann_path = state.path().join(CHASSIS_ANNOTATIONS_FILE);
    let metrics_path = state.path().join(CHASSIS_METRICS_FILE);

    // 1. OVS is configured but ovn-controller is not running: the agent waits, publishes nothing
    assert!(
        wait_until(Duration::from_secs(20), || registered_metric(&metrics_path)
            == Some(0)),
        "no registered=0 metric; agent log:\n{}",
        node.agent_log()
    );
    assert!(
        node.agent_log().contains("waiting for chassis"),
        "{}",
        node.agent_log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !ann_path.exists(),
        "published before ovn-controller registered the chassis: {:?}",
        read_annotations(&ann_path)
    );

    // 2. ovn-controller registers the chassis: the annotations appear
    let started = Instant::now();
    node.start_ovn_controller().expect("ovn-controller");
    let ok = wait_until(Duration::from_secs(30), || {
        read_annotations(&ann_path).get(CHASSIS_ANNOTATION) == Some(&chassis)
    });
    assert!(
        ok,
        "no chassis annotation; agent log:\n{}",
        node.agent_log()
    );
    println!(
        "chassis annotation published {:?} after ovn-controller started",
        started.elapsed()
    );
    let names = central
        .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
        .expect("sbctl");
    assert!(names.lines().any(|l| l.trim() == chassis), "SB: {names}");
    let a = read_annotations(&ann_path);
    // the agent runs in the node's netns with --encap-ip=127.0.0.1, which lives on lo there
    assert_eq!(
        a.get(TUNNEL_INTERFACE_ANNOTATION).map(String::as_str),
        Some("lo"),
        "{a:?}"
    );
    assert_eq!(
        a.get(ENCAP_IP_ANNOTATION).map(String::as_str),
        Some("127.0.0.1"),
        "{a:?}"
    );
    assert_eq!(
        a.get(ENCAP_TYPE_ANNOTATION).map(String::as_str),
        Some("geneve"),
        "{a:?}"
    );
    assert_eq!(registered_metric(&metrics_path), Some(1));
    // the profile decision's file is not touched by the chassis report
    let profile = read_annotations(&state.path().join("node-annotations.json"));
    assert!(profile.contains_key("ferrovn.io/profile"), "{profile:?}");
    assert!(!profile.contains_key(CHASSIS_ANNOTATION), "{profile:?}");

    // the encap IP moves to another interface: ovn-controller re-registers the encap, the
    // annotations follow (encap IP and the interface now holding it)
    node.netns()
        .ip([
            "link", "add", "fvrpdum", "type", "veth", "peer", "name", "fvrppeer",
        ])
        .expect("veth (no dummy module here)");
    node.netns()
        .ip(["addr", "add", "10.99.0.1/32", "dev", "fvrpdum"])
        .expect("addr");
    node.netns()
        .ip(["link", "set", "fvrpdum", "up"])
        .expect("up");
    node.vsctl([
        "set",
        "Open_vSwitch",
        ".",
        "external_ids:ovn-encap-ip=10.99.0.1",
    ])
    .expect("move encap ip");
    let ok = wait_until(Duration::from_secs(30), || {
        let a = read_annotations(&ann_path);
        a.get(ENCAP_IP_ANNOTATION).map(String::as_str) == Some("10.99.0.1")
            && a.get(TUNNEL_INTERFACE_ANNOTATION).map(String::as_str) == Some("fvrpdum")
    });
    assert!(
        ok,
        "encap change not published: {:?}; agent log:\n{}",
        read_annotations(&ann_path),
        node.agent_log()
    );

    // 3. ovn-controller dies and its chassis is deleted: noticed, nothing published meanwhile
    kill_ovn_controller(&node);
    central
        .sbctl(&["chassis-del", &chassis])
        .expect("chassis-del");
    assert!(
        wait_until(Duration::from_secs(20), || registered_metric(&metrics_path)
            == Some(0)),
        "chassis deletion not noticed; agent log:\n{}",
        node.agent_log()
    );
    std::fs::remove_file(&ann_path).expect("remove annotations file");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ann_path.exists(),
        "published while the chassis row was gone"
    );

    // 4. ovn-controller comes back and registers again: published again
    let restarted = Instant::now();
    node.start_ovn_controller().expect("ovn-controller again");
    let ok = wait_until(Duration::from_secs(30), || {
        read_annotations(&ann_path).get(CHASSIS_ANNOTATION) == Some(&chassis)
    });
    assert!(
        ok,
        "not published after re-registration; agent log:\n{}",
        node.agent_log()
    );
    println!(
        "chassis annotation re-published {:?} after ovn-controller restarted",
        restarted.elapsed()
    );
    assert_eq!(registered_metric(&metrics_path), Some(1));
    for line in node.agent_log().lines().filter(|l| l.contains("chassis")) {
        println!("agent: {line}");
    }
}
