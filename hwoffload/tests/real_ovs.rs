//! The representor → br-int path and the hw-offload setting against a real ovsdb-server and
//! ovs-vswitchd (netdev datapath) in a private run dir inside a network namespace of our own.
//! A veth stands in for the representor: the sysfs fixture names VF 0's representor after it,
//! so discovery → attachment plan → OVS port runs end to end.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use ferrovn_hwoffload::{
    DpdkDriverPolicy, NotOffloadedReason, OffloadContext, OffloadSettings, OffloadStatus,
    PodDatapath, Sysfs, TcPolicy, offload_report, parse_dump_flows, plan_offload_config,
    plan_vf_attachment, representor_bridge_port,
};
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovs_paths::vswitchd_plain;
use ferrovn_testkit::require::{Need, require};
use ferrovn_testkit::sysfs::{RepresentorSpec, SysfsFixture};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An OVS node of our own (netns, ovsdb-server, ovs-vswitchd; stopped on drop even when an
/// assertion failed) and the name of the veth standing in for the representor.
struct Lab {
    node: Node,
    netns: String,
    rep: String,
}

impl Lab {
    fn start() -> Option<Lab> {
        let needs = [
            Need::Root,
            Need::Tool("ovsdb-server"),
            Need::Tool("ovs-vsctl"),
            Need::Program(vswitchd_plain()),
        ];
        if !require("representor_goes_on_br_int", &needs) {
            return None;
        }
        let tag = unique_tag();
        let node = Node::start(
            &format!("hwo-{tag}"),
            &NodeConfig::plain(&format!("hwo-{tag}")),
        )
        .expect("OVS node");
        let netns = node.netns().name().to_string();
        let rep = format!("hwrep{}", std::process::id() % 100_000);
        Some(Lab { node, netns, rep })
    }

    fn vsctl(&self, args: &[&str]) -> String {
        self.node.vsctl(args).expect("ovs-vsctl").trim().to_string()
    }

    fn appctl(&self, args: &[&str]) -> String {
        self.node
            .appctl_vswitchd(args)
            .expect("ovs-appctl")
            .trim()
            .to_string()
    }
}

fn wait_for(what: &str, f: impl FnMut() -> Option<String>) -> String {
    ferrovn_testkit::wait::wait_for(what, Duration::from_secs(20), f)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `{a="b", hw-offload="true"}` (ovs-vsctl's map output) → map.
fn parse_smap(s: &str) -> BTreeMap<String, String> {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.trim_matches('"').to_string(),
                v.trim_matches('"').to_string(),
            )
        })
        .collect()
}

#[test]
fn representor_goes_on_br_int_and_hw_offload_is_reported_by_ovs() {
    let Some(mut lab) = Lab::start() else {
        return;
    };
    lab.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "Bridge",
        "br-int",
        "datapath_type=netdev",
    ]);

    // The veth standing in for the representor, its peer standing in for the VF in the pod.
    let vf_end = format!("{}v", lab.rep);
    ok(Command::new("ip").args([
        "-n", &lab.netns, "link", "add", &lab.rep, "type", "veth", "peer", "name", &vf_end,
    ]));
    for dev in [&lab.rep, &vf_end] {
        ok(Command::new("ip").args(["-n", &lab.netns, "link", "set", dev, "up"]));
    }
    ok(Command::new("ip").args([
        "-n",
        &lab.netns,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        &vf_end,
    ]));

    // Discovery on a fixture whose VF 0 representor carries the veth's name.
    let sys = tempfile::tempdir().unwrap();
    let fx = SysfsFixture::new(sys.path()).unwrap();
    let mut pf = SysfsFixture::mlx5_port0();
    pf.vfs[0].representor = Some(RepresentorSpec {
        netdev: lab.rep.clone(),
        port_name: "pf0vf0".into(),
    });
    fx.add_pf(&pf).unwrap();
    let location = Sysfs::new(fx.root())
        .find_vf(&"0000:03:00.2".parse().unwrap())
        .unwrap();
    let attachment =
        plan_vf_attachment(&location, PodDatapath::Kernel, &DpdkDriverPolicy::default()).unwrap();
    let port = representor_bridge_port(&attachment, "br-int", "default.pod-vf0");
    assert_eq!(port.name, lab.rep);

    // What the agent will do through OVSDB, done with ovs-vsctl.
    let mut add: Vec<String> = [
        "add-port",
        &port.bridge,
        &port.name,
        "--",
        "set",
        "Interface",
        &port.name,
    ]
    .map(str::to_string)
    .to_vec();
    for (k, v) in &port.external_ids {
        add.push(format!("external_ids:{k}=\"{v}\""));
    }
    lab.vsctl(&add.iter().map(String::as_str).collect::<Vec<_>>());
    let ofport = wait_for("an ofport for the representor", || {
        let v = lab.vsctl(&["get", "Interface", &port.name, "ofport"]);
        v.parse::<i64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.to_string())
    });
    eprintln!("representor {} has ofport {ofport}", port.name);
    assert_eq!(
        lab.vsctl(&["get", "Interface", &port.name, "external_ids:iface-id"]),
        "default.pod-vf0"
    );
    assert_eq!(
        lab.vsctl(&[
            "get",
            "Interface",
            &port.name,
            "external_ids:vf-pci-address"
        ]),
        "\"0000:03:00.2\""
    );
    assert_eq!(lab.vsctl(&["get", "Interface", &port.name, "error"]), "[]");

    // Offload profile: plan against the live other_config, apply, restart as the plan says.
    let desired = OffloadSettings {
        hw_offload: true,
        tc_policy: TcPolicy::None,
    };
    let current = parse_smap(&lab.vsctl(&["get", "Open_vSwitch", ".", "other_config"]));
    let plan = plan_offload_config(&current, &desired);
    assert!(plan.restart_vswitchd, "fresh OVS has offload off: {plan:?}");
    for (k, v) in &plan.set {
        lab.vsctl(&["set", "Open_vSwitch", ".", &format!("other_config:{k}={v}")]);
    }
    for k in &plan.remove {
        lab.vsctl(&["remove", "Open_vSwitch", ".", "other_config", k]);
    }
    lab.node
        .restart_vswitchd(&vswitchd_plain())
        .expect("restart ovs-vswitchd");
    let after = parse_smap(&lab.vsctl(&["get", "Open_vSwitch", ".", "other_config"]));
    assert_eq!(after.get("hw-offload").map(String::as_str), Some("true"));
    assert!(plan_offload_config(&after, &desired).is_noop());
    let log_path = lab.node.dir().join("ovs-vswitchd.log");
    let log = wait_for("vswitchd to report the flow API", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.contains("netdev: Flow API Enabled").then_some(log)
    });
    for line in log.lines().filter(|l| l.contains("netdev_offload")) {
        eprintln!("vswitchd: {line}");
    }
    // The port survives the restart with its binding.
    wait_for("the representor back on br-int", || {
        let v = lab.vsctl(&["get", "Interface", &port.name, "ofport"]);
        v.parse::<i64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.to_string())
    });
    let dpif = lab.appctl(&["dpif/show"]);
    assert!(dpif.contains(&port.name), "{dpif}");

    // Traffic from the "VF" side creates datapath flows; OVS's own dump tells the truth.
    let _ = run(Command::new("ip").args([
        "netns",
        "exec",
        &lab.netns,
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "10.99.0.2",
    ]));
    let dump = wait_for("datapath flows from the representor", || {
        let d = lab.appctl(&["dpctl/dump-flows", "-m"]);
        d.contains(&format!("in_port({})", port.name)).then_some(d)
    });
    let flows = parse_dump_flows(&dump).unwrap();
    let offloaded_only =
        parse_dump_flows(&lab.appctl(&["dpctl/dump-flows", "-m", "type=offloaded"])).unwrap();
    assert!(
        offloaded_only.is_empty(),
        "nothing can be offloaded on a veth: {offloaded_only:?}"
    );
    let ctx = OffloadContext {
        eswitch_mode: None,
        hw_offload_enabled: true,
        datapath_type: "netdev".into(),
    };
    let report = offload_report(&flows, &[port.name.as_str()], &ctx);
    eprintln!("{report:#?}");
    assert_eq!(report[0].status, OffloadStatus::NotOffloaded);
    assert!(report[0].flows > 0);
    assert!(
        report[0]
            .reasons
            .contains(&NotOffloadedReason::UserspaceDatapath {
                datapath_type: "netdev".into()
            })
    );
    assert!(
        report[0]
            .reasons
            .iter()
            .any(|r| matches!(r, NotOffloadedReason::FlowsInSoftware { .. }))
    );
    assert!(
        !report[0]
            .reasons
            .contains(&NotOffloadedReason::HwOffloadDisabled)
    );
}
