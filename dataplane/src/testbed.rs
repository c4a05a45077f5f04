//! Test infrastructure (feature `testbed`): network namespaces, OVN nodes as namespaces each with
//! its own ovsdb-server, ovs-vswitchd (userspace datapath) and ovn-controller, and a two-node
//! topology around an OVN central (`ferrovn_ovsdb::testkit::OvnCentral`) with Geneve over a private veth underlay.
//!
//! Every daemon runs in the FOREGROUND as our child (no `--detach`): we hold its PID, so it is
//! stopped by that PID and reaped by us (no zombies waiting for PID 1, no PID reuse). Every
//! name that is global on the machine (netns names) is unique per process and call, so tests
//! run in parallel. Drop stops everything: bridges deleted through vswitchd and `exit --cleanup`
//! (or the datapath tap outlives it), then daemons by PID, then veth ends and namespaces.
//!
//! The setup the end-to-end tests, the benches and ferrovn-perf share lives here once:
//! [`Cluster`] (two nodes with the agent, then ovn-controllers), the NB topology
//! ([`add_switch`], [`add_switch_with_router`], [`add_pod_port`]), what the controller writes
//! for a pod ([`Subnet::annotations`], [`write_pod_allocation`], [`allocate_pod`]), and CNI calls
//! ([`cni_netconf`], [`FerrovnCni`], [`run_plugin_in`] for the reference plugins).

use std::ffi::OsStr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use ferrovn_ovsdb::testkit::OvnCentral;

use crate::alloc::{Annotations, FileAllocations, PodRef};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
pub const VSWITCHD_PLAIN: &str = "/usr/lib/openvswitch-switch/ovs-vswitchd";
pub const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// Pod MTU over a 1500-byte underlay with Geneve; the userspace datapath never fragments.
pub const POD_MTU: u32 = 1400;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{what}: spawning {program}: {source}")]
    Spawn {
        what: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{what}: `{command}` failed ({status}): {stderr}")]
    Command {
        what: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: not ready after {waited:?}{detail}")]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("OVN central: {0}")]
    Central(String),
    #[error("building the CNI plugin: {0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A name fragment unique to this process and call (for netns names, bridge-free ids...).
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion with a wall-clock limit (`timeout(1)`), returning stdout.
pub fn run_cmd<I, S>(
    what: &str,
    limit_s: u32,
    program: &str,
    args: I,
) -> Result<String, TestbedError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("timeout");
    cmd.arg("-k").arg("2").arg(limit_s.to_string()).arg(program);
    cmd.args(args);
    let out = output_of(what, &mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn output_of(what: &str, cmd: &mut Command) -> Result<Output, TestbedError> {
    let rendered = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            what: what.to_string(),
            program: rendered.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            what: what.to_string(),
            command: rendered,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A network namespace created by us (`/var/run/netns/<name>`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its `lo` up.
    pub fn create(name: &str) -> Result<Self, TestbedError> {
        run_cmd("create netns", 10, "ip", ["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        run_cmd("lo up", 10, "ip", ["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(program);
        c
    }
    /// Runs `program args` inside the namespace with a time limit; returns stdout.
    pub fn run<I, S>(&self, limit_s: u32, program: &str, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("timeout");
        cmd.arg("-k")
            .arg("2")
            .arg(limit_s.to_string())
            .arg("ip")
            .arg("netns")
            .arg("exec")
            .arg(&self.name)
            .arg(program)
            .args(args);
        let out = output_of(&format!("in netns {}", self.name), &mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
    /// `ip -n <ns> ...`
    pub fn ip<I, S>(&self, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        let out = output_of(&format!("ip -n {}", self.name), &mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
    /// One ping, true if answered within a second.
    pub fn ping_once(&self, dst: &str) -> bool {
        self.run(3, "ping", ["-c1", "-W1", dst]).is_ok()
    }
    /// Pings until one answer arrives or `timeout` passes (the first packet through a new
    /// tunnel can be lost while OVS resolves the remote MAC).
    pub fn ping_until(&self, dst: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.ping_once(dst))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_cmd("delete netns", 10, "ip", ["netns", "del", &self.name]);
    }
}

/// A daemon we started in the foreground; stopped by PID on drop.
#[derive(Debug)]
pub struct Daemon {
    what: String,
    child: Child,
}

impl Daemon {
    /// Spawns `program args` (inside `netns` if given) with `env`, output to `log`.
    pub fn spawn(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Self, TestbedError> {
        Self::spawn_inner(what, netns, env, program, args, log, false)
    }

    fn spawn_inner(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
        append: bool,
    ) -> Result<Self, TestbedError> {
        let mut cmd = match netns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .map_err(|source| TestbedError::Io {
                what: format!("{what}: create log {}", log.display()),
                source,
            })?;
        let errf = logf.try_clone().map_err(|source| TestbedError::Io {
            what: format!("{what}: log"),
            source,
        })?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(errf)
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                what: what.to_string(),
                program: program.to_string(),
                source,
            })?;
        Ok(Daemon {
            what: what.to_string(),
            child,
        })
    }

    /// Like [`Daemon::spawn`] but appends to `log` instead of truncating it.
    pub fn spawn_appending(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Self, TestbedError> {
        Self::spawn_inner(what, netns, env, program, args, log, true)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited, not a zombie: we reap it here).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let exited = wait_until(grace, || !self.is_running());
        if !exited {
            tracing::warn!(what = %self.what, "ignored SIGTERM; SIGKILL");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir, TestbedError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(|source| TestbedError::Io {
            what: "create private run dir".into(),
            source,
        })
}

/// Environment that makes OVS/OVN daemons and tools use `dir` for sockets, logs and dbs.
pub fn ovs_env(dir: &Path) -> Vec<(String, String)> {
    let d = dir.display().to_string();
    [
        "OVS_RUNDIR",
        "OVS_LOGDIR",
        "OVS_DBDIR",
        "OVS_SYSCONFDIR",
        "OVN_RUNDIR",
        "OVN_LOGDIR",
        "OVN_DBDIR",
    ]
    .iter()
    .map(|k| (k.to_string(), d.clone()))
    .collect()
}

fn wait_for_socket(
    what: &str,
    sock: &Path,
    daemon: &mut Daemon,
    log: &Path,
) -> Result<(), TestbedError> {
    let timeout = Duration::from_secs(20);
    let ok = wait_until(timeout, || {
        UnixStream::connect(sock).is_ok() || !daemon.is_running()
    });
    if !ok || !daemon.is_running() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(TestbedError::Timeout {
            what: what.to_string(),
            waited: timeout,
            detail: format!(" (socket {}; log: {tail})", sock.display()),
        });
    }
    Ok(())
}

fn start_ovsdb_server(
    what: &str,
    netns: Option<&Netns>,
    dir: &Path,
    db_file: &str,
    schema: &str,
    sock_name: &str,
) -> Result<Daemon, TestbedError> {
    let db = dir.join(db_file);
    run_cmd(
        what,
        10,
        "ovsdb-tool",
        [OsStr::new("create"), db.as_os_str(), OsStr::new(schema)],
    )?;
    let sock = dir.join(sock_name);
    let stem = db_file.trim_end_matches(".db");
    let log = dir.join(format!("{stem}.log"));
    let args = vec![
        db.display().to_string(),
        "-vconsole:off".into(),
        "-vfile:info".into(),
        format!("--remote=punix:{}", sock.display()),
        format!("--log-file={}", log.display()),
        format!("--unixctl={}", dir.join(format!("{stem}.ctl")).display()),
        format!("--pidfile={}", dir.join(format!("{stem}.pid")).display()),
    ];
    let mut d = Daemon::spawn(
        what,
        netns,
        &ovs_env(dir),
        "ovsdb-server",
        &args,
        &dir.join(format!("{stem}.out")),
    )?;
    wait_for_socket(what, &sock, &mut d, &log)?;
    Ok(d)
}

/// How to start a node's OVS.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// OVN chassis name (system-id) and hostname.
    pub name: String,
    /// ovs-vswitchd binary: [`VSWITCHD_PLAIN`] or [`VSWITCHD_DPDK`].
    pub vswitchd: PathBuf,
    /// `Open_vSwitch other_config` set before vswitchd starts (dpdk-init etc.).
    pub other_config: Vec<(String, String)>,
}

impl NodeConfig {
    pub fn plain(name: &str) -> Self {
        NodeConfig {
            name: name.to_string(),
            vswitchd: PathBuf::from(VSWITCHD_PLAIN),
            other_config: Vec::new(),
        }
    }
}

/// One OVN node: a network namespace with its own ovsdb-server (Open_vSwitch), ovs-vswitchd
/// and, once started, ovn-controller, all using a private run dir.
#[derive(Debug)]
pub struct Node {
    name: String,
    encap_ip: Option<String>,
    underlay_if: Option<String>,
    agent: Option<Daemon>,
    controller: Option<Daemon>,
    vswitchd: Option<Daemon>,
    ovsdb: Option<Daemon>,
    netns: Netns,
    dir: tempfile::TempDir,
}

impl Node {
    /// Creates the namespace `netns_name` and starts ovsdb-server + ovs-vswitchd in it.
    pub fn start(netns_name: &str, cfg: &NodeConfig) -> Result<Self, TestbedError> {
        Self::start_with(netns_name, cfg, |_| Ok(()))
    }

    /// Like [`Node::start`], running `before_vswitchd` once the database is up and before
    /// ovs-vswitchd starts (DPDK settings must be in the database by then).
    pub fn start_with(
        netns_name: &str,
        cfg: &NodeConfig,
        before_vswitchd: impl FnOnce(&Node) -> Result<(), TestbedError>,
    ) -> Result<Self, TestbedError> {
        let netns = Netns::create(netns_name)?;
        let dir = tempdir("fv-node-")?;
        let mut node = Node {
            name: cfg.name.clone(),
            encap_ip: None,
            underlay_if: None,
            agent: None,
            controller: None,
            vswitchd: None,
            ovsdb: None,
            netns,
            dir,
        };
        let p = node.dir.path().to_path_buf();
        node.ovsdb = Some(start_ovsdb_server(
            "node ovsdb-server",
            Some(&node.netns),
            &p,
            "conf.db",
            OVS_SCHEMA,
            "db.sock",
        )?);
        node.vsctl_no_wait(["init"])?;
        for (k, v) in &cfg.other_config {
            node.vsctl_no_wait([
                "set",
                "Open_vSwitch",
                ".",
                &format!("other_config:{k}=\"{v}\""),
            ])?;
        }
        before_vswitchd(&node)?;
        node.start_vswitchd(&cfg.vswitchd)?;
        Ok(node)
    }

    /// Records an underlay set up by other means (e.g. the agent's DPDK tunnel bridge):
    /// `underlay_if` is deleted on drop, `encap_ip` goes to the agent.
    pub fn adopt_underlay(&mut self, underlay_if: &str, encap_ip: &str) {
        self.underlay_if = Some(underlay_if.to_string());
        self.encap_ip = Some(encap_ip.to_string());
    }

    fn start_vswitchd(&mut self, bin: &Path) -> Result<(), TestbedError> {
        let p = self.dir.path().to_path_buf();
        let ctl = p.join("ovs-vswitchd.ctl");
        let log = p.join("ovs-vswitchd.log");
        let args = vec![
            format!("unix:{}", p.join("db.sock").display()),
            "-vconsole:off".into(),
            "-vfile:info".into(),
            format!("--log-file={}", log.display()),
            format!("--unixctl={}", ctl.display()),
            format!("--pidfile={}", p.join("ovs-vswitchd.pid").display()),
        ];
        let mut d = Daemon::spawn(
            "ovs-vswitchd",
            Some(&self.netns),
            &ovs_env(&p),
            &bin.display().to_string(),
            &args,
            &p.join("ovs-vswitchd.out"),
        )?;
        wait_for_socket("ovs-vswitchd", &ctl, &mut d, &log)?;
        self.vswitchd = Some(d);
        Ok(())
    }

    /// Stops ovs-vswitchd (by PID) and starts it again with `bin`.
    pub fn restart_vswitchd(&mut self, bin: &Path) -> Result<(), TestbedError> {
        if let Some(mut d) = self.vswitchd.take() {
            d.stop(Duration::from_secs(5));
        }
        self.start_vswitchd(bin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    pub fn netns_path(&self) -> PathBuf {
        self.netns.path()
    }
    /// The node's private run dir (OVS_RUNDIR/OVN_RUNDIR).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn db_sock(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }
    pub fn db_remote(&self) -> String {
        format!("unix:{}", self.db_sock().display())
    }
    pub fn env(&self) -> Vec<(String, String)> {
        ovs_env(self.dir.path())
    }
    /// Tunnel endpoint IP (on br-phy), once the underlay is set up.
    pub fn encap_ip(&self) -> Option<&str> {
        self.encap_ip.as_deref()
    }

    /// `ovs-vsctl --db=<node db> --timeout=10 args...` (waits for vswitchd to apply changes).
    pub fn vsctl<I, S>(&self, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            format!("--db={}", self.db_remote()).into(),
            "--timeout=10".into(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cmd("ovs-vsctl", 15, "ovs-vsctl", all)
    }

    fn vsctl_no_wait<I, S>(&self, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            format!("--db={}", self.db_remote()).into(),
            "--timeout=10".into(),
            "--no-wait".into(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cmd("ovs-vsctl", 15, "ovs-vsctl", all)
    }

    /// `ovs-appctl -t <vswitchd ctl> args...`
    pub fn appctl_vswitchd<I, S>(&self, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            "-t".into(),
            self.dir.path().join("ovs-vswitchd.ctl").into_os_string(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cmd("ovs-appctl", 15, "ovs-appctl", all)
    }

    /// Userspace tunnelling: `underlay_if` (already in this namespace) becomes a port of the
    /// netdev bridge br-phy, and `cidr` (e.g. `192.168.100.1/24`) sits on br-phy's internal port.
    pub fn setup_underlay(&mut self, underlay_if: &str, cidr: &str) -> Result<(), TestbedError> {
        // a port of br-phy, not an interface of the node's kernel: no second ARP answer for the
        // tunnel IP with the veth's MAC (OVS's tunnel neighbor cache could learn that one)
        self.netns.ip(["link", "set", underlay_if, "arp", "off"])?;
        self.netns.run(
            5,
            "sysctl",
            [
                "-qw",
                &format!("net.ipv6.conf.{underlay_if}.disable_ipv6=1"),
            ],
        )?;
        self.netns.ip(["link", "set", underlay_if, "up"])?;
        self.vsctl([
            "--",
            "--may-exist",
            "add-br",
            "br-phy",
            "--",
            "set",
            "Bridge",
            "br-phy",
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            "br-phy",
            underlay_if,
        ])?;
        let ok = wait_until(Duration::from_secs(10), || {
            self.netns.ip(["link", "show", "br-phy"]).is_ok()
        });
        if !ok {
            return Err(TestbedError::Timeout {
                what: format!("br-phy tap in netns {}", self.netns.name()),
                waited: Duration::from_secs(10),
                detail: String::new(),
            });
        }
        self.netns.ip(["addr", "add", cidr, "dev", "br-phy"])?;
        self.netns.ip(["link", "set", "br-phy", "up"])?;
        self.encap_ip = Some(cidr.split('/').next().unwrap_or(cidr).to_string());
        self.underlay_if = Some(underlay_if.to_string());
        Ok(())
    }

    /// Writes the OVN settings with ovs-vsctl (what the agent does through OVSDB in production):
    /// br-int netdev/secure and the Open_vSwitch external_ids ovn-controller reads.
    pub fn configure_ovn_with_vsctl(&self, sb_remote: &str) -> Result<(), TestbedError> {
        let encap = self.encap_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        self.vsctl([
            "--",
            "--may-exist",
            "add-br",
            "br-int",
            "--",
            "set",
            "Bridge",
            "br-int",
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
        ])?;
        self.vsctl([
            "set".to_string(),
            "Open_vSwitch".into(),
            ".".into(),
            format!("external_ids:system-id={}", self.name),
            format!("external_ids:hostname={}", self.name),
            format!("external_ids:ovn-remote=\"{sb_remote}\""),
            "external_ids:ovn-encap-type=geneve".into(),
            format!("external_ids:ovn-encap-ip={encap}"),
            "external_ids:ovn-bridge=br-int".into(),
            "external_ids:ovn-bridge-datapath-type=netdev".into(),
        ])?;
        Ok(())
    }

    /// Starts ovn-controller in the node namespace against this node's OVS database.
    pub fn start_ovn_controller(&mut self) -> Result<(), TestbedError> {
        let p = self.dir.path().to_path_buf();
        let args = vec![
            self.db_remote(),
            "-vconsole:off".into(),
            "-vfile:info".into(),
            format!("--log-file={}", p.join("ovn-controller.log").display()),
            format!("--pidfile={}", p.join("ovn-controller.pid").display()),
        ];
        let d = Daemon::spawn(
            "ovn-controller",
            Some(&self.netns),
            &ovs_env(&p),
            "ovn-controller",
            &args,
            &p.join("ovn-controller.out"),
        )?;
        self.controller = Some(d);
        Ok(())
    }

    /// The CNI socket of this node's agent (in the node's run dir).
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("cni.sock")
    }

    /// Starts the node agent `binary` (ferrovn-node) inside the node namespace against this
    /// node's OVS, with `--encap-ip` from the underlay and `--datapath-type netdev`; waits for its
    /// CNI socket. `extra_args` are appended (e.g. `--gc-interval-secs 1`).
    pub fn start_agent(
        &mut self,
        binary: &Path,
        sb_remote: &str,
        allocations_dir: &Path,
        extra_args: &[&str],
    ) -> Result<PathBuf, TestbedError> {
        self.stop_agent();
        let sock = self.agent_socket();
        let _ = std::fs::remove_file(&sock);
        let encap = self.encap_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        let mut args = vec![
            format!("--ovs-db={}", self.db_remote()),
            format!("--sb-remote={sb_remote}"),
            format!("--node-name={}", self.name),
            format!("--encap-ip={encap}"),
            "--datapath-type=netdev".into(),
            format!("--socket={}", sock.display()),
            format!("--allocations-dir={}", allocations_dir.display()),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut env = self.env();
        env.push((
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ));
        let log = self.dir.path().join("ferrovn-node.log");
        // append: a restarted agent keeps the earlier log
        let mut d = Daemon::spawn_appending(
            "ferrovn-node",
            Some(&self.netns),
            &env,
            &binary.display().to_string(),
            &args,
            &log,
        )?;
        wait_for_socket("ferrovn-node", &sock, &mut d, &log)?;
        self.agent = Some(d);
        Ok(sock)
    }

    /// Stops the agent (SIGTERM by PID); pods stay as they are.
    pub fn stop_agent(&mut self) {
        if let Some(mut d) = self.agent.take() {
            d.stop(Duration::from_secs(5));
        }
    }

    /// PID of the running agent.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Daemon::pid)
    }

    /// The agent's log so far (for failure messages).
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ferrovn-node.log")).unwrap_or_default()
    }

    /// Waits until Interface `iface` has `external_ids:ovn-installed="true"`.
    pub fn wait_ovn_installed(&self, iface: &str, timeout: Duration) -> Result<(), TestbedError> {
        let ok = wait_until(timeout, || {
            self.vsctl([
                "--if-exists",
                "get",
                "Interface",
                iface,
                "external_ids:ovn-installed",
            ])
            .map(|s| s.trim() == "\"true\"")
            .unwrap_or(false)
        });
        if ok {
            Ok(())
        } else {
            Err(TestbedError::Timeout {
                what: format!("ovn-installed on {iface} at node {}", self.name),
                waited: timeout,
                detail: String::new(),
            })
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut d) = self.agent.take() {
            d.stop(Duration::from_secs(5));
        }
        // ovn-controller first: it would recreate br-int
        if let Some(mut d) = self.controller.take() {
            d.stop(Duration::from_secs(5));
        }
        let vswitchd_alive = self.vswitchd.as_mut().is_some_and(Daemon::is_running);
        if vswitchd_alive {
            let _ = self.vsctl([
                "--",
                "--if-exists",
                "del-br",
                "br-int",
                "--",
                "--if-exists",
                "del-br",
                "br-phy",
            ]);
            let _ = self.appctl_vswitchd(["exit", "--cleanup"]);
        }
        if let Some(mut d) = self.vswitchd.take() {
            d.stop(Duration::from_secs(5));
        }
        if let Some(mut d) = self.ovsdb.take() {
            d.stop(Duration::from_secs(5));
        }
        // netns deletion is asynchronous: delete our veth end explicitly
        if let Some(ul) = &self.underlay_if {
            let _ = self.netns.ip(["link", "del", ul]);
        }
    }
}

/// The underlay cable between two nodes: veth `fvul1` in `a`'s namespace, `fvul2` in `b`'s
/// (down, unaddressed: [`Node::setup_underlay`] or the agent takes them from there).
pub fn add_underlay_veth(a: &Node, b: &Node) -> Result<(), TestbedError> {
    run_cmd(
        "underlay veth",
        10,
        "ip",
        [
            "link",
            "add",
            "fvul1",
            "netns",
            a.netns.name(),
            "type",
            "veth",
            "peer",
            "name",
            "fvul2",
            "netns",
            b.netns.name(),
        ],
    )
    .map(drop)
}

/// OVN central + two nodes joined by a veth underlay (192.168.100.1/.2, only inside the two
/// namespaces), Geneve between them in the userspace datapath.
#[derive(Debug)]
pub struct TwoNodes {
    pub nodes: [Node; 2],
    pub central: OvnCentral,
}

impl TwoNodes {
    /// Starts OVS on both nodes and the underlay, but no OVN configuration and no
    /// ovn-controller (for tests where the agent configures OVS).
    pub fn start_ovs_only() -> Result<Self, TestbedError> {
        let tag = unique_tag();
        let central = OvnCentral::start().map_err(|e| TestbedError::Central(e.to_string()))?;
        let n1 = Node::start(
            &format!("fvt-{tag}-n1"),
            &NodeConfig::plain(&format!("fv-{tag}-n1")),
        )?;
        let n2 = Node::start(
            &format!("fvt-{tag}-n2"),
            &NodeConfig::plain(&format!("fv-{tag}-n2")),
        )?;
        let mut nodes = [n1, n2];
        add_underlay_veth(&nodes[0], &nodes[1])?;
        nodes[0].setup_underlay("fvul1", "192.168.100.1/24")?;
        nodes[1].setup_underlay("fvul2", "192.168.100.2/24")?;
        // OVS's userspace tunnelling learns the remote endpoint's MAC by snooping ARP on br-phy;
        // a miss drops the packet behind a drop datapath flow that stays while it is hit (OVS
        // 3.1). One kernel ping each way fills both caches before any pod traffic.
        for (a, b) in [(0, 1), (1, 0)] {
            let dst = nodes[b].encap_ip.clone().unwrap_or_default();
            let _ = nodes[a].netns.run(5, "ping", ["-c1", "-W2", &dst]);
        }
        Ok(TwoNodes { nodes, central })
    }

    /// Full OVN: also configures both nodes with ovs-vsctl and starts their ovn-controllers.
    pub fn start() -> Result<Self, TestbedError> {
        let mut t = Self::start_ovs_only()?;
        let sb = t.central.sb_remote();
        for n in t.nodes.iter_mut() {
            n.configure_ovn_with_vsctl(&sb)?;
            n.start_ovn_controller()?;
        }
        Ok(t)
    }

    /// Waits until both chassis are registered in the SB.
    pub fn wait_chassis(&self, timeout: Duration) -> Result<(), TestbedError> {
        wait_chassis_count(&self.central, 2, timeout)
    }
}

/// Output of one CNI plugin invocation.
#[derive(Debug, Clone)]
pub struct CniOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    /// stdout as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// One CNI invocation as a container runtime makes it: `CNI_*` environment + netconf on stdin.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
    pub args: &'a str,
    pub stdin: &'a [u8],
}

/// Runs the plugin `binary` like a runtime does (60 s limit).
pub fn run_cni(binary: &Path, call: &CniCall<'_>) -> Result<CniOutput, TestbedError> {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("-k")
        .arg("2")
        .arg("60")
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", binary.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            what: "CNI plugin".into(),
            program: binary.display().to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // a plugin may exit before reading everything (bad env): ignore EPIPE
        let _ = stdin.write_all(call.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|source| TestbedError::Io {
            what: "CNI plugin output".into(),
            source,
        })?;
    Ok(CniOutput {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Path of the `ferrovn-cni` plugin binary of this workspace (built on first use).
pub fn cni_plugin_binary() -> Result<PathBuf, TestbedError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-cni", "ferrovn-cni"))
        .clone()
        .map_err(TestbedError::Build)
}

/// Path of the `ferrovn-node` agent binary of this workspace (built on first use; tests of
/// this crate can use `env!("CARGO_BIN_EXE_ferrovn-node")` instead).
pub fn agent_binary() -> Result<PathBuf, TestbedError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-dataplane", "ferrovn-node"))
        .clone()
        .map_err(TestbedError::Build)
}

/// Builds `bin` of `package` with the profile of the calling test/example
/// (`cargo build -p <package> --bin <bin>`), returning its path in the shared target dir.
pub fn build_workspace_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // <target>/<profile>/deps/<test>  or  <target>/<profile>/examples/<example>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("-p")
        .arg(package)
        .arg("--bin")
        .arg(bin);
    if release {
        cmd.arg("--release");
    }
    let path = profile_dir.join(bin);
    if std::env::var_os("FERROVN_SKIP_BUILD").is_some() && path.exists() {
        return Ok(path);
    }
    // Another cargo (a running `cargo run`) may hold the target dir lock for a long time:
    // bound the wait, and fall back to an existing binary if there is one.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo: {e}"))?;
    let finished = wait_until(Duration::from_secs(300), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        if path.exists() {
            tracing::warn!(
                bin,
                "cargo build did not finish in 300 s; using the existing binary"
            );
            return Ok(path);
        }
        return Err(format!(
            "cargo build -p {package} --bin {bin} did not finish in 300 s"
        ));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cargo build output: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} --bin {bin} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} missing after the build", path.display()))
    }
}

/// A short hex string unique enough for names that must stay short (DPDK file prefixes,
/// `/tmp` directories for vhost-user sockets, whose paths are limited to 108 bytes).
pub fn short_rand() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() % 0xfff, t % 0xffff)
}

/// A Kube-OVN subnet as the tests use it: its logical switch, CIDR and gateway.
#[derive(Debug, Clone, Copy)]
pub struct Subnet<'a> {
    pub switch: &'a str,
    pub cidr: &'a str,
    pub gateway: &'a str,
}

/// The subnet most tests put their pods on.
pub const POD_SUBNET: Subnet<'static> = Subnet {
    switch: "ls1",
    cidr: "10.16.0.0/24",
    gateway: "10.16.0.1",
};

/// The /16 subnet the benchmarks spread many pods over.
pub const WIDE_POD_SUBNET: Subnet<'static> = Subnet {
    switch: "ls1",
    cidr: "10.16.0.0/16",
    gateway: "10.16.0.1",
};

/// IP and MAC of the `i`-th pod on [`WIDE_POD_SUBNET`]: hosts .2 to .251 of each /24 (the
/// first pod gets 10.16.0.4, clear of the gateway), the MAC derived from the index.
pub fn wide_pod_address(i: usize) -> (String, String) {
    let host = i + 2;
    (
        format!("10.16.{}.{}", host / 250, host % 250 + 2),
        format!("0a:58:0a:10:{:02x}:{:02x}", (host >> 8) & 0xff, host & 0xff),
    )
}

/// Pods `p0` .. `p<n-1>` (name, IP, MAC) at [`wide_pod_address`]es.
pub fn numbered_pods(n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let (ip, mac) = wide_pod_address(i);
            (format!("p{i}"), ip, mac)
        })
        .collect()
}

impl Subnet<'_> {
    /// The annotations Kube-OVN's controller writes on a pod it allocated on this subnet
    /// (`<provider>.kubernetes.io/...`; the default network's provider is `ovn`).
    pub fn annotations(&self, provider: &str, ip: &str, mac: &str) -> Annotations {
        [
            ("allocated", "true"),
            ("ip_address", ip),
            ("mac_address", mac),
            ("cidr", self.cidr),
            ("gateway", self.gateway),
            ("logical_switch", self.switch),
        ]
        .iter()
        .map(|(k, v)| (format!("{provider}.kubernetes.io/{k}"), v.to_string()))
        .collect()
    }

    /// The gateway with the subnet's prefix length (`10.16.0.1/24`), for the router port.
    fn gateway_cidr(&self) -> String {
        let prefix = self.cidr.split_once('/').map_or("32", |(_, p)| p);
        format!("{}/{prefix}", self.gateway)
    }
}

/// Kube-OVN's logical switch port name of a pod in namespace `default`: `<pod>.default` on the
/// default network (provider `ovn`), `<pod>.default.<provider>` on an attachment network.
pub fn lsp_name(pod: &str, provider: &str) -> String {
    ferrovn_api::names::lsp_name(pod, "default", provider)
}

/// `ovn-nbctl` through the central, with its error as a [`TestbedError`].
pub fn nbctl(central: &OvnCentral, args: &[&str]) -> Result<String, TestbedError> {
    central
        .nbctl(args)
        .map_err(|e| TestbedError::Central(e.to_string()))
}

/// Creates the subnet's logical switch alone (no router).
pub fn add_switch(central: &OvnCentral, subnet: &Subnet<'_>) -> Result<(), TestbedError> {
    nbctl(central, &["ls-add", subnet.switch]).map(drop)
}

/// Creates the subnet's logical switch and a router `lr1` whose port `lr1-<switch>` owns the
/// gateway (MAC 0a:58:0a:10:00:01), joined to the switch by the router-type port
/// `<switch>-lr1`: the gateway then answers ARP and ping as in a Kube-OVN cluster.
pub fn add_switch_with_router(
    central: &OvnCentral,
    subnet: &Subnet<'_>,
) -> Result<(), TestbedError> {
    let ls = subnet.switch;
    let lrp = format!("lr1-{ls}");
    let lsp = format!("{ls}-lr1");
    nbctl(central, &["ls-add", ls, "--", "lr-add", "lr1"])?;
    nbctl(
        central,
        &[
            "lrp-add",
            "lr1",
            &lrp,
            "0a:58:0a:10:00:01",
            &subnet.gateway_cidr(),
        ],
    )?;
    nbctl(
        central,
        &[
            "lsp-add",
            ls,
            &lsp,
            "--",
            "lsp-set-type",
            &lsp,
            "router",
            "--",
            "lsp-set-addresses",
            &lsp,
            "router",
            "--",
            "lsp-set-options",
            &lsp,
            &format!("router-port={lrp}"),
        ],
    )?;
    Ok(())
}

/// The `ovn-nbctl` arguments that add a pod's logical switch port with its MAC and IP
/// (several can be joined with `--` into one call).
pub fn pod_port_args(switch: &str, lsp: &str, mac: &str, ip: &str) -> Vec<String> {
    vec![
        "lsp-add".into(),
        switch.into(),
        lsp.into(),
        "--".into(),
        "lsp-set-addresses".into(),
        lsp.into(),
        format!("{mac} {ip}"),
    ]
}

/// Adds a pod's logical switch port with its MAC and IP.
pub fn add_pod_port(
    central: &OvnCentral,
    switch: &str,
    lsp: &str,
    mac: &str,
    ip: &str,
) -> Result<(), TestbedError> {
    let args = pod_port_args(switch, lsp, mac, ip);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nbctl(central, &args).map(drop)
}

/// The pod `name` in namespace `default`.
pub fn pod_ref(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Writes the allocation annotations of pod `default/<pod>` where the agent reads them.
pub fn write_pod_allocation(
    allocs: &FileAllocations,
    pod: &str,
    annotations: &Annotations,
) -> Result<(), TestbedError> {
    allocs
        .write(&pod_ref(pod), annotations)
        .map_err(|source| TestbedError::Io {
            what: format!("writing the allocation of default/{pod}"),
            source,
        })
}

/// What Kube-OVN's controller does for a pod before the runtime's ADD: its logical switch
/// port ([`lsp_name`]) with MAC and IP, and its allocation annotations on `subnet`.
pub fn allocate_pod(
    central: &OvnCentral,
    allocs: &FileAllocations,
    subnet: &Subnet<'_>,
    provider: &str,
    pod: &str,
    ip: &str,
    mac: &str,
) -> Result<(), TestbedError> {
    add_pod_port(central, subnet.switch, &lsp_name(pod, provider), mac, ip)?;
    write_pod_allocation(allocs, pod, &subnet.annotations(provider, ip, mac))
}

/// Waits until `n` chassis are registered in the SB.
pub fn wait_chassis_count(
    central: &OvnCentral,
    n: usize,
    timeout: Duration,
) -> Result<(), TestbedError> {
    let ok = wait_until(timeout, || {
        central
            .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() == n)
            .unwrap_or(false)
    });
    if ok {
        Ok(())
    } else {
        Err(TestbedError::Timeout {
            what: format!("{n} chassis in the SB"),
            waited: timeout,
            detail: String::new(),
        })
    }
}

/// [`TwoNodes`] with the node agent running on both nodes, and the allocation files (what
/// the controller would annotate) in a private directory both agents read.
#[derive(Debug)]
pub struct Cluster {
    pub tb: TwoNodes,
    pub allocs: FileAllocations,
    _alloc_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts OVN central, both nodes' OVS and the agent `binary` on each node (node `i` with
    /// `agent_args[i]`); the agents configure OVS themselves. No ovn-controller yet.
    pub fn start_agents(binary: &Path, agent_args: [&[&str]; 2]) -> Result<Self, TestbedError> {
        let mut tb = TwoNodes::start_ovs_only()?;
        let alloc_dir = tempdir("fv-allocs-")?;
        let sb = tb.central.sb_remote();
        for (n, args) in tb.nodes.iter_mut().zip(agent_args) {
            n.start_agent(binary, &sb, alloc_dir.path(), args)?;
        }
        Ok(Cluster {
            tb,
            allocs: FileAllocations::new(alloc_dir.path()),
            _alloc_dir: alloc_dir,
        })
    }

    /// Starts ovn-controller on both nodes and waits (30 s at most) for both chassis.
    pub fn start_ovn_controllers(&mut self) -> Result<(), TestbedError> {
        for n in self.tb.nodes.iter_mut() {
            n.start_ovn_controller()?;
        }
        self.tb.wait_chassis(Duration::from_secs(30))
    }

    /// [`Cluster::start_agents`] then [`Cluster::start_ovn_controllers`].
    pub fn start(binary: &Path, agent_args: [&[&str]; 2]) -> Result<Self, TestbedError> {
        let mut c = Self::start_agents(binary, agent_args)?;
        c.start_ovn_controllers()?;
        Ok(c)
    }

    /// The directory the agents read allocations from.
    pub fn allocations_dir(&self) -> &Path {
        self.allocs.dir()
    }

    /// What the controller does for `pods` (name, IP, MAC) on the default network before
    /// the runtime's ADDs: their allocations, and their ports, 40 per `ovn-nbctl` call; then
    /// `--wait=hv sync`, so every chassis has the ports.
    pub fn allocate_pods(
        &self,
        subnet: &Subnet<'_>,
        pods: &[(String, String, String)],
    ) -> Result<(), TestbedError> {
        for chunk in pods.chunks(40) {
            let mut args: Vec<String> = Vec::new();
            for (name, ip, mac) in chunk {
                if !args.is_empty() {
                    args.push("--".into());
                }
                args.extend(pod_port_args(
                    subnet.switch,
                    &lsp_name(name, "ovn"),
                    mac,
                    ip,
                ));
                write_pod_allocation(&self.allocs, name, &subnet.annotations("ovn", ip, mac))?;
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            nbctl(&self.tb.central, &refs)?;
        }
        nbctl(&self.tb.central, &["--wait=hv", "sync"]).map(drop)
    }
}

/// The netconf a runtime hands `ferrovn-cni` for a network: `cniVersion`, `name`,
/// `type: ferrovn-cni`, the agent's `server_socket`, and the keys of `extra` (a JSON object;
/// anything else adds nothing).
pub fn cni_netconf(
    cni_version: &str,
    network: &str,
    server_socket: &Path,
    extra: &serde_json::Value,
) -> Vec<u8> {
    let mut conf = serde_json::json!({
        "cniVersion": cni_version,
        "name": network,
        "type": "ferrovn-cni",
        "server_socket": server_socket,
    });
    if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    conf.to_string().into_bytes()
}

/// The `ferrovn-cni` plugin binary with one network's `cniVersion` and name, called against
/// a node's agent the way a runtime calls it.
#[derive(Debug, Clone)]
pub struct FerrovnCni {
    pub binary: PathBuf,
    pub cni_version: &'static str,
    pub network: &'static str,
}

impl FerrovnCni {
    /// Runs `command` with this network's netconf (plus `extra`) pointing at `node`'s agent.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        command: &str,
        node: &Node,
        container_id: &str,
        netns: &str,
        ifname: &str,
        args: &str,
        extra: serde_json::Value,
    ) -> Result<CniOutput, TestbedError> {
        let stdin = cni_netconf(self.cni_version, self.network, &node.agent_socket(), &extra);
        run_cni(
            &self.binary,
            &CniCall {
                command,
                container_id,
                netns,
                ifname,
                args,
                stdin: &stdin,
            },
        )
    }
}

/// Runs a reference CNI plugin (e.g. Debian's `/usr/lib/cni/bridge`) inside `host` as a
/// runtime does for interface `eth0`, without a time limit (its latency is measured) and
/// without `CNI_ARGS`; `CNI_PATH` is the binary's directory.
pub fn run_plugin_in(
    host: &Netns,
    binary: &Path,
    command: &str,
    container_id: &str,
    netns: &str,
    netconf: &[u8],
) -> Result<CniOutput, TestbedError> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.name()])
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", binary.parent().unwrap_or(Path::new("/")));
    let io_err = |what: &str| {
        let what = format!("{what} {}", binary.display());
        move |source| TestbedError::Io { what, source }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("spawning"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(netconf).map_err(io_err("netconf to"))?;
    }
    let out = child.wait_with_output().map_err(io_err("output of"))?;
    Ok(CniOutput {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
