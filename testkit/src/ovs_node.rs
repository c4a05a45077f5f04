//! OVN nodes as network namespaces, each with its own ovsdb-server, ovs-vswitchd (userspace
//! datapath) and, once started, ovn-controller and the node agent; and two of them joined by a
//! private veth underlay with Geneve between them ([`TwoNodes`]).
//!
//! Every name that is global on the machine (netns names) is unique per process and call, so
//! tests run in parallel. Drop stops everything: bridges deleted through vswitchd and `exit
//! --cleanup` (or the datapath tap outlives it), then daemons by PID, then veth ends and
//! namespaces.

use std::ffi::OsStr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::wait_chassis_count;
use crate::error::{Error, Result};
use crate::names::{tempdir, unique_tag};
use crate::netns::Netns;
use crate::ovs_paths::{vswitch_schema, vswitchd_plain};
use crate::ovsdb::OvnCentral;
use crate::process::{Daemon, run_cmd};
use crate::wait::wait_until;

/// Pod MTU over a 1500-byte underlay with Geneve; the userspace datapath never fragments.
pub const POD_MTU: u32 = 1400;

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

/// How many times the agent logging to `log` said it is ready (the log survives restarts).
fn agent_ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches("ferrovn-node ready").count())
        .unwrap_or(0)
}

fn wait_for_socket(what: &str, sock: &Path, daemon: &mut Daemon, log: &Path) -> Result<()> {
    let timeout = Duration::from_secs(20);
    let ok = wait_until(timeout, || {
        UnixStream::connect(sock).is_ok() || !daemon.is_running()
    });
    if !ok || !daemon.is_running() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(Error::Timeout {
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
    schema: &Path,
    sock_name: &str,
) -> Result<Daemon> {
    let db = dir.join(db_file);
    run_cmd(
        what,
        10,
        "ovsdb-tool",
        [OsStr::new("create"), db.as_os_str(), schema.as_os_str()],
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
    /// ovs-vswitchd binary: [`vswitchd_plain`] or `ovs_paths::vswitchd_dpdk()`.
    pub vswitchd: PathBuf,
    /// `Open_vSwitch other_config` set before vswitchd starts (dpdk-init etc.;
    /// `userspace-tso-enable` is `true` unless given here).
    pub other_config: Vec<(String, String)>,
}

impl NodeConfig {
    pub fn plain(name: &str) -> Self {
        NodeConfig {
            name: name.to_string(),
            vswitchd: vswitchd_plain(),
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
    pub fn start(netns_name: &str, cfg: &NodeConfig) -> Result<Self> {
        Self::start_with(netns_name, cfg, |_| Ok(()))
    }

    /// Like [`Node::start`], running `before_vswitchd` once the database is up and before
    /// ovs-vswitchd starts (DPDK settings must be in the database by then).
    pub fn start_with(
        netns_name: &str,
        cfg: &NodeConfig,
        before_vswitchd: impl FnOnce(&Node) -> Result<()>,
    ) -> Result<Self> {
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
            &vswitch_schema(),
            "db.sock",
        )?);
        node.vsctl_no_wait(["init"])?;
        // node setup plans userspace TSO before ovs-vswitchd starts, as the lab and a real
        // node do (docs/ovs-ovn.md); a config may say otherwise
        if !cfg
            .other_config
            .iter()
            .any(|(k, _)| k == "userspace-tso-enable")
        {
            node.vsctl_no_wait([
                "set",
                "Open_vSwitch",
                ".",
                "other_config:userspace-tso-enable=true",
            ])?;
        }
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

    fn start_vswitchd(&mut self, bin: &Path) -> Result<()> {
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
    pub fn restart_vswitchd(&mut self, bin: &Path) -> Result<()> {
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
    pub fn vsctl<I, S>(&self, args: I) -> Result<String>
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

    fn vsctl_no_wait<I, S>(&self, args: I) -> Result<String>
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
    pub fn appctl_vswitchd<I, S>(&self, args: I) -> Result<String>
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
    pub fn setup_underlay(&mut self, underlay_if: &str, cidr: &str) -> Result<()> {
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
            return Err(Error::Timeout {
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
    pub fn configure_ovn_with_vsctl(&self, sb_remote: &str) -> Result<()> {
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
    pub fn start_ovn_controller(&mut self) -> Result<()> {
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

    /// Kills this node's ovn-controller at once (SIGKILL by PID, as a crash or a power loss
    /// leaves it: no chassis cleanup, the flows it installed stay in OVS).
    pub fn kill_ovn_controller(&mut self) {
        if let Some(mut d) = self.controller.take() {
            d.kill();
        }
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
    ) -> Result<PathBuf> {
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
        env.push((
            "FERROVN_DPDK_VSWITCHD".into(),
            crate::ovs_paths::vswitchd_dpdk().display().to_string(),
        ));
        let log = self.dir.path().join("ferrovn-node.log");
        let ready_before = agent_ready_lines(&log);
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
        // the agent binds its socket before it configures OVS (requests wait meanwhile); a test
        // reading what the start wrote (node annotations, state files) needs it done
        let timeout = Duration::from_secs(20);
        let ready = wait_until(timeout, || {
            agent_ready_lines(&log) > ready_before || !d.is_running()
        });
        if !ready || !d.is_running() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(Error::Timeout {
                what: "ferrovn-node ready".to_string(),
                waited: timeout,
                detail: format!(" (log: {tail})"),
            });
        }
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

    /// Adds a vhost-user port `port` to br-int, bound to logical port `iface_id`, with OVS as
    /// the vhost-user client of `socket` (a DPDK app's virtio-user PMD in server mode creates
    /// it, as in a DPDK pod); OVS-DPDK only.
    pub fn add_vhost_user_client(&self, port: &str, socket: &Path, iface_id: &str) -> Result<()> {
        self.vsctl([
            "add-port".to_string(),
            "br-int".into(),
            port.into(),
            "--".into(),
            "set".into(),
            "Interface".into(),
            port.into(),
            "type=dpdkvhostuserclient".into(),
            format!("options:vhost-server-path={}", socket.display()),
            format!("external_ids:iface-id={iface_id}"),
        ])
        .map(drop)
    }

    /// Adds the existing interface `port` to br-int bound to logical port `iface_id` (what the
    /// node agent does for a pod's veth) and waits until ovn-controller has installed it.
    pub fn bind_port(&self, port: &str, iface_id: &str, timeout: Duration) -> Result<()> {
        self.vsctl([
            "add-port".to_string(),
            "br-int".into(),
            port.into(),
            "--".into(),
            "set".into(),
            "Interface".into(),
            port.into(),
            format!("external_ids:iface-id={iface_id}"),
        ])?;
        self.wait_ovn_installed(port, timeout)
    }

    /// Waits until Interface `iface` has `external_ids:ovn-installed="true"`.
    pub fn wait_ovn_installed(&self, iface: &str, timeout: Duration) -> Result<()> {
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
            Err(Error::Timeout {
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
pub fn add_underlay_veth(a: &Node, b: &Node) -> Result<()> {
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
    pub fn start_ovs_only() -> Result<Self> {
        let tag = unique_tag();
        let central = OvnCentral::start().map_err(|e| Error::Setup(e.to_string()))?;
        let n1 = Node::start(
            &format!("fvt-{tag}-n1"),
            &NodeConfig::plain(&format!("fv-{tag}-n1")),
        )?;
        let n2 = Node::start(
            &format!("fvt-{tag}-n2"),
            &NodeConfig::plain(&format!("fv-{tag}-n2")),
        )?;
        Self::join(central, [n1, n2])
    }

    /// Joins two started nodes (OVS running, nothing configured) with the underlay of
    /// [`TwoNodes::start_ovs_only`]; e.g. an OVS-DPDK node and a plain one.
    pub fn join(central: OvnCentral, nodes: [Node; 2]) -> Result<Self> {
        let mut nodes = nodes;
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
    pub fn start() -> Result<Self> {
        let mut t = Self::start_ovs_only()?;
        let sb = t.central.sb_remote();
        for n in t.nodes.iter_mut() {
            n.configure_ovn_with_vsctl(&sb)?;
            n.start_ovn_controller()?;
        }
        Ok(t)
    }

    /// Waits until both chassis are registered in the SB.
    pub fn wait_chassis(&self, timeout: Duration) -> Result<()> {
        wait_chassis_count(&self.central, 2, timeout)
    }
}
