//! The representor → br-int path and the hw-offload setting against a real ovsdb-server and
//! ovs-vswitchd (netdev datapath) in a private run dir inside a network namespace of our own.
//! A veth stands in for the representor: the sysfs fixture names VF 0's representor after it,
//! so discovery → attachment plan → OVS port runs end to end.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferrovn_hwoffload::fixture::{RepresentorSpec, SysfsFixture};
use ferrovn_hwoffload::{
    DpdkDriverPolicy, NotOffloadedReason, OffloadContext, OffloadSettings, OffloadStatus,
    PodDatapath, Sysfs, TcPolicy, offload_report, parse_dump_flows, plan_offload_config,
    plan_vf_attachment, representor_bridge_port,
};

const VSWITCHD: &str = "/usr/lib/openvswitch-switch/ovs-vswitchd";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

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

/// Everything one test started; Drop tears it down even when an assertion failed.
struct Lab {
    dir: tempfile::TempDir,
    netns: String,
    rep: String,
}

impl Lab {
    fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"]
            .into_iter()
            .map(|k| (k, self.run_dir().to_path_buf()))
            .collect()
    }

    fn in_netns(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program])
            .envs(self.env());
        c
    }

    fn vsctl(&self) -> Command {
        let mut c = Command::new("ovs-vsctl");
        c.arg("--timeout=10")
            .arg(format!("--db=unix:{}/db.sock", self.run_dir().display()));
        c
    }

    fn appctl(&self, target: &str) -> Command {
        let mut c = Command::new("ovs-appctl");
        c.arg("--timeout=10")
            .arg("-t")
            .arg(self.run_dir().join(target));
        c
    }

    fn start_vswitchd(&self) {
        let d = self.run_dir().display().to_string();
        ok(self.in_netns(VSWITCHD).args([
            format!("unix:{d}/db.sock"),
            "-vconsole:off".into(),
            format!("--pidfile={d}/ovs-vswitchd.pid"),
            format!("--log-file={d}/ovs-vswitchd.log"),
            format!("--unixctl={d}/ovs-vswitchd.ctl"),
            "--detach".into(),
        ]));
    }

    /// Stops vswitchd and waits until it is gone: an exiting vswitchd unlinks its pidfile and
    /// control socket, which would take the next instance's with them.
    fn stop_vswitchd(&self) {
        let pid = read_pid(&self.run_dir().join("ovs-vswitchd.pid"));
        let _ = run(self.appctl("ovs-vswitchd.ctl").args(["exit", "--cleanup"]));
        if let Some(pid) = pid {
            stop_and_wait(pid);
        }
    }

    fn start() -> Lab {
        let tag = format!("{}", std::process::id() % 100_000);
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
            netns: format!("hwo-ovs-{tag}"),
            rep: format!("hwrep{tag}"),
        };
        ok(Command::new("ip").args(["netns", "add", &lab.netns]));
        let d = lab.run_dir().display().to_string();
        ok(Command::new("ovsdb-tool").args(["create", &format!("{d}/conf.db"), SCHEMA]));
        ok(lab.in_netns("ovsdb-server").args([
            format!("{d}/conf.db"),
            "-vconsole:off".into(),
            format!("--remote=punix:{d}/db.sock"),
            format!("--pidfile={d}/ovsdb-server.pid"),
            format!("--log-file={d}/ovsdb-server.log"),
            format!("--unixctl={d}/ovsdb-server.ctl"),
            "--detach".into(),
        ]));
        ok(lab.vsctl().args(["--no-wait", "init"]));
        lab.start_vswitchd();
        lab
    }
}

fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Running and not a zombie (our detached daemons are reaped by PID 1, seconds later).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM (then SIGKILL after 5 s) a daemon this test started, and wait for it to exit.
fn stop_and_wait(pid: i32) {
    let start = Instant::now();
    let mut signal = libc::SIGTERM;
    while alive(pid) {
        // SAFETY: kill(2) on a pid this test started (read from its own pidfile in its own dir).
        unsafe { libc::kill(pid, signal) };
        if start.elapsed() > Duration::from_secs(5) {
            signal = libc::SIGKILL;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a daemon we started, by the pid in its pidfile, if it is still there.
fn kill_pidfile(pidfile: &Path) {
    if let Some(pid) = read_pid(pidfile) {
        stop_and_wait(pid);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(self.vsctl().args(["--if-exists", "del-br", "br-int"]));
        self.stop_vswitchd();
        let _ = run(self.appctl("ovsdb-server.ctl").arg("exit"));
        kill_pidfile(&self.run_dir().join("ovsdb-server.pid"));
        let _ = run(Command::new("ip").args(["-n", &self.netns, "link", "del", &self.rep]));
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let lab = Lab::start();
    ok(lab.vsctl().args([
        "add-br",
        "br-int",
        "--",
        "set",
        "Bridge",
        "br-int",
        "datapath_type=netdev",
    ]));

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
    let mut add = lab.vsctl();
    add.args([
        "add-port",
        &port.bridge,
        &port.name,
        "--",
        "set",
        "Interface",
        &port.name,
    ]);
    for (k, v) in &port.external_ids {
        add.arg(format!("external_ids:{k}=\"{v}\""));
    }
    ok(&mut add);
    let ofport = wait_for("an ofport for the representor", || {
        let v = ok(lab.vsctl().args(["get", "Interface", &port.name, "ofport"]));
        v.parse::<i64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.to_string())
    });
    eprintln!("representor {} has ofport {ofport}", port.name);
    assert_eq!(
        ok(lab
            .vsctl()
            .args(["get", "Interface", &port.name, "external_ids:iface-id"])),
        "default.pod-vf0"
    );
    assert_eq!(
        ok(lab.vsctl().args([
            "get",
            "Interface",
            &port.name,
            "external_ids:vf-pci-address"
        ])),
        "\"0000:03:00.2\""
    );
    assert_eq!(
        ok(lab.vsctl().args(["get", "Interface", &port.name, "error"])),
        "[]"
    );

    // Offload profile: plan against the live other_config, apply, restart as the plan says.
    let desired = OffloadSettings {
        hw_offload: true,
        tc_policy: TcPolicy::None,
    };
    let current = parse_smap(&ok(lab.vsctl().args([
        "get",
        "Open_vSwitch",
        ".",
        "other_config",
    ])));
    let plan = plan_offload_config(&current, &desired);
    assert!(plan.restart_vswitchd, "fresh OVS has offload off: {plan:?}");
    for (k, v) in &plan.set {
        ok(lab
            .vsctl()
            .args(["set", "Open_vSwitch", ".", &format!("other_config:{k}={v}")]));
    }
    for k in &plan.remove {
        ok(lab
            .vsctl()
            .args(["remove", "Open_vSwitch", ".", "other_config", k]));
    }
    lab.stop_vswitchd();
    lab.start_vswitchd();
    let after = parse_smap(&ok(lab.vsctl().args([
        "get",
        "Open_vSwitch",
        ".",
        "other_config",
    ])));
    assert_eq!(after.get("hw-offload").map(String::as_str), Some("true"));
    assert!(plan_offload_config(&after, &desired).is_noop());
    let log_path = lab.run_dir().join("ovs-vswitchd.log");
    let log = wait_for("vswitchd to report the flow API", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.contains("netdev: Flow API Enabled").then_some(log)
    });
    for line in log.lines().filter(|l| l.contains("netdev_offload")) {
        eprintln!("vswitchd: {line}");
    }
    // The port survives the restart with its binding.
    wait_for("the representor back on br-int", || {
        let v = ok(lab.vsctl().args(["get", "Interface", &port.name, "ofport"]));
        v.parse::<i64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.to_string())
    });
    let dpif = ok(lab.appctl("ovs-vswitchd.ctl").args(["dpif/show"]));
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
        let d = ok(lab
            .appctl("ovs-vswitchd.ctl")
            .args(["dpctl/dump-flows", "-m"]));
        d.contains(&format!("in_port({})", port.name)).then_some(d)
    });
    let flows = parse_dump_flows(&dump).unwrap();
    let offloaded_only = parse_dump_flows(&ok(lab.appctl("ovs-vswitchd.ctl").args([
        "dpctl/dump-flows",
        "-m",
        "type=offloaded",
    ])))
    .unwrap();
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
