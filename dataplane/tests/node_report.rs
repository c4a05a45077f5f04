//! The node agent reports its chassis: real OVN central, one node (its own OVS in a netns), the
//! real `ferrovn-node` binary and ovn-controller. The lab sink is the state dir's
//! `chassis-node-annotations.json`.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_dataplane::report::{
    CHASSIS_ANNOTATION, CHASSIS_ANNOTATIONS_FILE, CHASSIS_METRICS_FILE, ENCAP_IP_ANNOTATION,
    ENCAP_TYPE_ANNOTATION, TUNNEL_INTERFACE_ANNOTATION,
};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;

const AGENT: &str = env!("CARGO_BIN_EXE_ferrovn-node");

fn read_annotations(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The publishes the agent logged (it logs every one, with the annotations, right after the
/// sink wrote them).
fn publish_lines(node: &Node) -> Vec<String> {
    node.agent_log()
        .lines()
        .filter(|l| l.contains("published node annotations"))
        .map(str::to_string)
        .collect()
}

fn publishes(node: &Node) -> usize {
    publish_lines(node).len()
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

    // 1. OVS is configured but ovn-controller is not running: the agent looks at the SB, finds
    // no chassis and waits (its log says so once it decided); nothing is published
    assert!(
        wait_until(Duration::from_secs(20), || registered_metric(&metrics_path)
            == Some(0)
            && node
                .agent_log()
                .contains("ovn-controller has not registered it")),
        "no registered=0 metric / wait decision; agent log:\n{}",
        node.agent_log()
    );
    assert!(
        !ann_path.exists() && publishes(&node) == 0,
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
    assert!(
        wait_until(Duration::from_secs(10), || publishes(&node) >= 1),
        "{}",
        node.agent_log()
    );
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

    assert!(
        wait_until(Duration::from_secs(10), || publish_lines(&node)
            .last()
            .is_some_and(|l| l.contains("10.99.0.1"))),
        "{}",
        node.agent_log()
    );
    let before_kill = publishes(&node);

    // 3. ovn-controller dies and its chassis is deleted: noticed, nothing published meanwhile
    // (checked when the agent saw the row gone, and once the re-registration in 4. was
    // published: exactly one more publish)
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
    assert_eq!(
        publishes(&node),
        before_kill,
        "published while the chassis row was gone: {}",
        node.agent_log()
    );
    std::fs::remove_file(&ann_path).expect("remove annotations file");

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
    assert!(
        wait_until(Duration::from_secs(10), || publishes(&node) > before_kill),
        "{}",
        node.agent_log()
    );
    assert_eq!(
        publishes(&node),
        before_kill + 1,
        "published while the chassis row was gone: {}",
        node.agent_log()
    );
    for line in node.agent_log().lines().filter(|l| l.contains("chassis")) {
        println!("agent: {line}");
    }
}

/// Every publish a sink saw: when, and what.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(Instant, BTreeMap<String, String>)>>>;

/// A sink that fails its first `failures` publishes and records every call.
#[derive(Clone, Default)]
struct FlakySink {
    failures: usize,
    calls: Calls,
}

impl ferrovn_dataplane::report::NodeReportSink for FlakySink {
    async fn publish(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, ferrovn_dataplane::report::ReportError> {
        let mut calls = self.calls.lock().expect("lock");
        calls.push((Instant::now(), annotations.clone()));
        if calls.len() <= self.failures {
            return Err(ferrovn_dataplane::report::ReportError::Kube {
                op: "patching",
                node: "node-a".into(),
                reason: "HTTP 503: ServiceUnavailable".into(),
            });
        }
        Ok(annotations.keys().cloned().collect())
    }
    fn describe(&self) -> String {
        "flaky test sink".into()
    }
}

/// The reporter library against a real SB ovsdb-server whose Chassis/Encap rows the test
/// writes (as ovn-controller would): failed publishes are retried with backoff, an encap
/// change and a re-inserted row are published again.
#[tokio::test]
async fn reporter_retries_and_follows_row_changes() {
    use ferrovn_dataplane::report::{ChassisReportConfig, run_chassis_reporter};
    use ferrovn_testkit::ovs_paths::sb_schema;
    use ferrovn_testkit::ovsdb::OvsdbServer;
    use serde_json::json;

    let sb = OvsdbServer::start(sb_schema()).expect("SB ovsdb-server");
    let state = tempfile::tempdir().expect("state");
    let mut cfg = ChassisReportConfig::new(&sb.remote(), "node-a", "10.0.0.5");
    cfg.retry_every = Duration::from_millis(200);
    cfg.state_dir = Some(state.path().to_path_buf());
    let sink = FlakySink {
        failures: 2,
        ..Default::default()
    };
    let calls = sink.calls.clone();
    let reporter = tokio::spawn(run_chassis_reporter(cfg, sink));
    let metrics = state.path().join(CHASSIS_METRICS_FILE);
    let wait = |what: &'static str, f: &dyn Fn() -> bool| {
        assert!(wait_until(Duration::from_secs(10), f), "timed out: {what}");
    };
    tokio::task::spawn_blocking(move || {
        let register = |ip: &str| {
            sb.transact(&json!(["OVN_Southbound",
                {"op": "insert", "table": "Encap", "uuid-name": "e",
                 "row": {"chassis_name": "node-a", "ip": ip, "type": "geneve"}},
                {"op": "insert", "table": "Chassis",
                 "row": {"name": "node-a", "hostname": "node-a", "encaps": ["named-uuid", "e"]}}]))
                .expect("insert chassis");
        };
        wait("registered=0", &|| registered_metric(&metrics) == Some(0));
        assert!(calls.lock().expect("lock").is_empty());

        register("10.0.0.5");
        wait("third publish", &|| calls.lock().expect("lock").len() >= 3);
        {
            // (that nothing follows the publish that worked is checked at the next publish)
            let c = calls.lock().expect("lock");
            // backoff: 200 ms, then 400 ms
            assert!(c[1].0 - c[0].0 >= Duration::from_millis(200));
            assert!(c[2].0 - c[1].0 >= Duration::from_millis(400));
            assert_eq!(
                c[2].1.get(CHASSIS_ANNOTATION).map(String::as_str),
                Some("node-a")
            );
            assert_eq!(
                c[2].1.get(ENCAP_IP_ANNOTATION).map(String::as_str),
                Some("10.0.0.5")
            );
        }
        assert_eq!(registered_metric(&metrics), Some(1));

        // the encap IP changes in place
        sb.transact(&json!(["OVN_Southbound",
            {"op": "update", "table": "Encap", "where": [["chassis_name", "==", "node-a"]],
             "row": {"ip": "10.0.0.6"}}]))
            .expect("update encap");
        wait("encap change", &|| {
            calls
                .lock()
                .expect("lock")
                .last()
                .and_then(|c| c.1.get(ENCAP_IP_ANNOTATION).cloned())
                == Some("10.0.0.6".into())
        });
        // the change's publish is the fourth: no retry followed the one that worked
        assert_eq!(
            calls.lock().expect("lock").len(),
            4,
            "a publish between the one that worked and the encap change"
        );

        // deleted and registered again with the same content: published again
        let before = calls.lock().expect("lock").len();
        sb.transact(&json!(["OVN_Southbound",
            {"op": "delete", "table": "Chassis", "where": [["name", "==", "node-a"]]}]))
            .expect("delete chassis");
        wait("registered=0 again", &|| {
            registered_metric(&metrics) == Some(0)
        });
        assert_eq!(calls.lock().expect("lock").len(), before);
        register("10.0.0.6");
        wait("re-registration published", &|| {
            calls.lock().expect("lock").len() == before + 1
        });
        assert_eq!(registered_metric(&metrics), Some(1));
        drop(sb);
    })
    .await
    .expect("checks");
    reporter.abort();
}
