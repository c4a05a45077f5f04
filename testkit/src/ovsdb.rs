//! Real OVSDB / OVN central processes: standalone servers, Raft clusters, NB + SB + ovn-northd.
//!
//! Every helper runs its daemons as child processes (not `--detach`ed) in a private temporary
//! directory: sockets, databases, logs and control sockets all live there, nothing touches
//! `/var/run`. Dropping a helper stops its processes by PID, reaps them and deletes the
//! directory, so a failing test cleans up too. All calls are synchronous and take milliseconds;
//! they are fine to call from async tests.
//!
//! ```no_run
//! use ferrovn_testkit::ovs_paths::nb_schema;
//! use ferrovn_testkit::ovsdb::{OvnCentral, OvsdbServer};
//! let nb = OvsdbServer::start(nb_schema()).unwrap();
//! let remote = nb.remote(); // "unix:/tmp/.tmpXXXX/db.sock"
//! let central = OvnCentral::start().unwrap(); // NB + SB + ovn-northd
//! central.wait_northd_active().unwrap();
//! println!("{}", central.nbctl(&["ls-add", "sw0"]).unwrap());
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::names::free_port;
use crate::ovs_paths::{nb_schema, sb_schema};
use crate::process::{Daemon, run};
use crate::wait::wait_for;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `name` field of an `.ovsschema` file (e.g. `OVN_Northbound`).
pub fn schema_name(schema: &Path) -> Result<String> {
    let bad = |reason: String| Error::Schema {
        path: schema.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(schema).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    v.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| bad("no \"name\"".into()))
}

/// The last lines of a daemon's log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// [`wait_for`] with the tail of `log` in the timeout error.
fn wait_logged<T>(
    what: &str,
    log: &Path,
    after: Duration,
    probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    wait_for(what, after, probe).map_err(|e| match e {
        Error::Timeout { what, waited, .. } => Error::Timeout {
            what,
            waited,
            detail: format!("; log {}:\n{}", log.display(), log_tail(log)),
        },
        other => other,
    })
}

fn socket_accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Starts ovsdb-server with `args` and waits until `sock` accepts; a server that exits first
/// is an error with its log.
fn launch_server(
    what: &str,
    args: &[String],
    sock: &Path,
    log: &Path,
    out: &Path,
) -> Result<Daemon> {
    let mut daemon = Daemon::spawn(what, None, &[], "ovsdb-server", args, out)?;
    let mut died = None;
    wait_logged(&format!("{what} unix socket"), log, START_TIMEOUT, || {
        if let Some(e) = daemon.exited() {
            died = Some(e);
            return Some(());
        }
        socket_accepts(sock).then_some(())
    })?;
    if let Some(reason) = died {
        return Err(Error::Spawn {
            what: what.into(),
            program: "ovsdb-server".into(),
            reason: format!("{reason}; log:\n{}", log_tail(log)),
        });
    }
    Ok(daemon)
}

/// What to start in an [`OvsdbServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Schemas of the (standalone) databases to create and serve, e.g. [`nb_schema`].
    pub schemas: Vec<PathBuf>,
    /// Also listen on TCP 127.0.0.1 (on an ephemeral port; kept across restarts).
    pub tcp: bool,
}

/// One standalone `ovsdb-server` in a private temporary directory.
#[derive(Debug)]
pub struct OvsdbServer {
    dir: tempfile::TempDir,
    dbs: Vec<PathBuf>,
    sock: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
    tcp: bool,
    tcp_port: Option<u16>,
    daemon: Option<Daemon>,
}

impl OvsdbServer {
    /// Creates a fresh database from `schema` and serves it on a unix socket.
    pub fn start(schema: impl AsRef<Path>) -> Result<OvsdbServer> {
        OvsdbServer::start_with(ServerOptions {
            schemas: vec![schema.as_ref().to_owned()],
            tcp: false,
        })
    }

    /// Like [`OvsdbServer::start`] but also listening on TCP 127.0.0.1.
    pub fn start_tcp(schema: impl AsRef<Path>) -> Result<OvsdbServer> {
        OvsdbServer::start_with(ServerOptions {
            schemas: vec![schema.as_ref().to_owned()],
            tcp: true,
        })
    }

    /// Starts a server with the given options.
    pub fn start_with(options: ServerOptions) -> Result<OvsdbServer> {
        let dir = tempfile::Builder::new()
            .prefix("ovsdb-")
            .tempdir()
            .map_err(Error::io("create temp dir"))?;
        let mut dbs = Vec::new();
        for (i, schema) in options.schemas.iter().enumerate() {
            let db = dir.path().join(format!("db{i}.db"));
            run(
                "ovsdb-tool",
                &["create", &db.to_string_lossy(), &schema.to_string_lossy()],
            )?;
            dbs.push(db);
        }
        let mut server = OvsdbServer {
            sock: dir.path().join("db.sock"),
            ctl: dir.path().join("db.ctl"),
            log: dir.path().join("ovsdb-server.log"),
            dir,
            dbs,
            tcp: options.tcp,
            tcp_port: None,
            daemon: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.sock);
        let mut args = vec![
            format!("--remote=punix:{}", self.sock.display()),
            format!("--unixctl={}", self.ctl.display()),
            format!("--log-file={}", self.log.display()),
            "--no-chdir".into(),
            "-vconsole:off".into(),
            "-vfile:info".into(),
        ];
        if self.tcp {
            let port = self.tcp_port.unwrap_or(0);
            args.push(format!("--remote=ptcp:{port}:127.0.0.1"));
        }
        args.extend(self.dbs.iter().map(|d| d.display().to_string()));
        let log_len = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = self.dir.path().join("ovsdb-server.out");
        let daemon = launch_server("ovsdb-server", &args, &self.sock, &self.log, &out)?;
        if self.tcp && self.tcp_port.is_none() {
            let log = self.log.clone();
            let port = wait_logged(
                "ovsdb-server tcp port in log",
                &self.log,
                START_TIMEOUT,
                || {
                    let text = std::fs::read_to_string(&log).ok()?;
                    let fresh = text.get(log_len as usize..)?;
                    fresh.lines().find_map(|l| {
                        let (_, rest) = l.split_once("listening on port ")?;
                        rest.trim().parse::<u16>().ok()
                    })
                },
            )?;
            self.tcp_port = Some(port);
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// `unix:<socket>`: the remote to give the client.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// `tcp:127.0.0.1:<port>` if started with TCP.
    pub fn tcp_remote(&self) -> Option<String> {
        self.tcp_port.map(|p| format!("tcp:127.0.0.1:{p}"))
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.sock
    }

    /// The private directory holding everything of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The database files (one per schema).
    pub fn db_paths(&self) -> &[PathBuf] {
        &self.dbs
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The unixctl socket, for `ovs-appctl -t <ctl>`.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl
    }

    /// The PID of the running server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// Kills the server (SIGKILL); the database files stay.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Stops the server process (SIGSTOP): it keeps its sockets but answers nothing, like a
    /// hung or partitioned peer.
    pub fn freeze(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Setup(format!("{sig}: server not running")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::Setup(format!("{sig} to ovsdb-server {pid}: {e}")))
    }

    /// Kills (if running) and starts again on the same database, socket and TCP port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    /// Runs `ovs-appctl -t <ctl> <args...>` against this server (e.g. `memory/show`).
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let ctl = self.ctl.to_string_lossy().into_owned();
        let mut all = vec!["--timeout=10", "-t", ctl.as_str()];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// Runs `ovsdb-client <command> unix:<socket> <args...>` and returns its stdout.
    pub fn client(&self, command: &str, args: &[&str]) -> Result<String> {
        let remote = self.remote();
        let mut all = vec!["--timeout=20", command, remote.as_str()];
        all.extend_from_slice(args);
        run("ovsdb-client", &all)
    }

    /// Runs one `transact` with `ovsdb-client` (a second, independent client in tests).
    pub fn transact(&self, request: &serde_json::Value) -> Result<serde_json::Value> {
        let out = self.client("transact", &[&request.to_string()])?;
        serde_json::from_str(&out)
            .map_err(|e| Error::Setup(format!("parse ovsdb-client transact output: {e}")))
    }
}

impl Drop for OvsdbServer {
    // SIGKILL: a frozen (SIGSTOPped) server would sit out SIGTERM's grace period
    fn drop(&mut self) {
        self.kill();
    }
}

/// One member of a [`RaftCluster`].
#[derive(Debug)]
pub struct RaftMember {
    db: PathBuf,
    sock: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
    raft_port: u16,
    daemon: Option<Daemon>,
}

impl RaftMember {
    /// `unix:<socket>` of this member.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
    /// The member's Raft address `tcp:127.0.0.1:<port>`.
    pub fn raft_address(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.raft_port)
    }
    /// The member's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Its PID, if running.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }
    /// True if the process runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    fn launch(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.sock);
        let args = vec![
            format!("--remote=punix:{}", self.sock.display()),
            format!("--unixctl={}", self.ctl.display()),
            format!("--log-file={}", self.log.display()),
            "--no-chdir".into(),
            "-vconsole:off".into(),
            "-vfile:info".into(),
            self.db.display().to_string(),
        ];
        let out = self.log.with_extension("out");
        let daemon = launch_server("raft member", &args, &self.sock, &self.log, &out)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// `ovs-appctl cluster/status` of this member, if it answers.
    pub fn cluster_status(&self, db_name: &str) -> Option<String> {
        self.daemon.as_ref()?;
        run(
            "ovs-appctl",
            &[
                "--timeout=5",
                "-t",
                &self.ctl.to_string_lossy(),
                "cluster/status",
                db_name,
            ],
        )
        .ok()
    }
}

/// A clustered (Raft) database served by `n` ovsdb-server processes on 127.0.0.1.
///
/// Clients reach the members over unix sockets ([`RaftCluster::remotes`] gives the
/// comma-separated list); the members talk Raft over TCP on free ports.
#[derive(Debug)]
pub struct RaftCluster {
    dir: tempfile::TempDir,
    db_name: String,
    members: Vec<RaftMember>,
}

impl RaftCluster {
    /// Creates the cluster (`ovsdb-tool create-cluster` + `join-cluster`), starts every member
    /// and waits until all are cluster members and one is leader.
    pub fn start(schema: impl AsRef<Path>, n: usize) -> Result<RaftCluster> {
        let schema = schema.as_ref();
        let db_name = schema_name(schema)?;
        let dir = tempfile::Builder::new()
            .prefix("raft-")
            .tempdir()
            .map_err(Error::io("create temp dir"))?;
        let n = n.max(1);
        let mut members = Vec::new();
        for i in 0..n {
            members.push(RaftMember {
                db: dir.path().join(format!("s{i}.db")),
                sock: dir.path().join(format!("s{i}.sock")),
                ctl: dir.path().join(format!("s{i}.ctl")),
                log: dir.path().join(format!("s{i}.log")),
                raft_port: free_port()?,
                daemon: None,
            });
        }
        let first = members[0].raft_address();
        run(
            "ovsdb-tool",
            &[
                "create-cluster",
                &members[0].db.to_string_lossy(),
                &schema.to_string_lossy(),
                &first,
            ],
        )?;
        for m in &members[1..] {
            run(
                "ovsdb-tool",
                &[
                    "join-cluster",
                    &m.db.to_string_lossy(),
                    &db_name,
                    &m.raft_address(),
                    &first,
                ],
            )?;
        }
        let mut cluster = RaftCluster {
            dir,
            db_name,
            members,
        };
        for m in &mut cluster.members {
            m.launch()?;
        }
        cluster.wait_all_joined()?;
        cluster.wait_leader(START_TIMEOUT)?;
        Ok(cluster)
    }

    fn wait_all_joined(&self) -> Result<()> {
        for m in &self.members {
            wait_logged("member to join the cluster", &m.log, START_TIMEOUT, || {
                let s = m.cluster_status(&self.db_name)?;
                s.contains("Status: cluster member").then_some(())
            })?;
        }
        Ok(())
    }

    /// The database name (e.g. `OVN_Northbound`).
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// All members' remotes, comma-separated: what a client connects to.
    pub fn remotes(&self) -> String {
        self.members
            .iter()
            .map(RaftMember::remote)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The members, in creation order.
    pub fn members(&self) -> &[RaftMember] {
        &self.members
    }

    /// The private directory of the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Index of the member that currently says `Role: leader`, if any.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.cluster_status(&self.db_name)
                .is_some_and(|s| s.lines().any(|l| l.trim() == "Role: leader"))
        })
    }

    /// Waits until some running member is leader.
    pub fn wait_leader(&self, after: Duration) -> Result<usize> {
        wait_logged("a Raft leader", &self.members[0].log, after, || {
            self.leader()
        })
    }

    /// Makes the current leader hand its leadership to another member (OVS's
    /// `cluster/failure-test transfer-leadership`) without any process dying; returns the
    /// index of the member that was leader.
    pub fn transfer_leadership(&self) -> Result<usize> {
        let leader = self.wait_leader(START_TIMEOUT)?;
        let ctl = self.members[leader].ctl.to_string_lossy().into_owned();
        run(
            "ovs-appctl",
            &[
                "--timeout=5",
                "-t",
                &ctl,
                "cluster/failure-test",
                "transfer-leadership",
            ],
        )?;
        Ok(leader)
    }

    /// Kills member `i` (SIGKILL); its database file stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(m) = self.members.get_mut(i)
            && let Some(mut d) = m.daemon.take()
        {
            d.kill();
        }
    }

    /// Restarts member `i` on its database file.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        match self.members.get_mut(i) {
            Some(m) => m.launch(),
            None => Err(Error::Setup(format!("restart member {i}: no such member"))),
        }
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// OVN central: a Northbound and a Southbound ovsdb-server plus `ovn-northd` between them.
#[derive(Debug)]
pub struct OvnCentral {
    nb: OvsdbServer,
    sb: OvsdbServer,
    northd_ctl: PathBuf,
    northd_log: PathBuf,
    northd: Option<Daemon>,
}

impl OvnCentral {
    /// Starts NB, SB and ovn-northd; returns once northd is connected and active.
    pub fn start() -> Result<OvnCentral> {
        OvnCentral::start_with(false)
    }

    /// Like [`OvnCentral::start`], with NB and SB also on TCP 127.0.0.1 ([`OvnCentral::nb_tcp_remote`]):
    /// for clients in another mount namespace (a pod), reached through a loopback relay.
    pub fn start_tcp() -> Result<OvnCentral> {
        OvnCentral::start_with(true)
    }

    fn start_with(tcp: bool) -> Result<OvnCentral> {
        let nb = OvsdbServer::start_with(ServerOptions {
            schemas: vec![nb_schema()],
            tcp,
        })?;
        let sb = OvsdbServer::start_with(ServerOptions {
            schemas: vec![sb_schema()],
            tcp,
        })?;
        let northd_ctl = nb.dir().join("northd.ctl");
        let northd_log = nb.dir().join("northd.log");
        let args = vec![
            format!("--ovnnb-db={}", nb.remote()),
            format!("--ovnsb-db={}", sb.remote()),
            format!("--unixctl={}", northd_ctl.display()),
            format!("--log-file={}", northd_log.display()),
            "--no-chdir".into(),
            "-vconsole:off".into(),
        ];
        let northd_out = nb.dir().join("northd.out");
        let northd = Daemon::spawn("ovn-northd", None, &[], "ovn-northd", &args, &northd_out)?;
        let central = OvnCentral {
            nb,
            sb,
            northd_ctl,
            northd_log,
            northd: Some(northd),
        };
        central.wait_northd_active()?;
        Ok(central)
    }

    /// The Northbound server.
    pub fn nb(&self) -> &OvsdbServer {
        &self.nb
    }
    /// The Southbound server.
    pub fn sb(&self) -> &OvsdbServer {
        &self.sb
    }
    /// `unix:` remote of the Northbound database.
    pub fn nb_remote(&self) -> String {
        self.nb.remote()
    }
    /// `unix:` remote of the Southbound database.
    pub fn sb_remote(&self) -> String {
        self.sb.remote()
    }
    /// `tcp:127.0.0.1:<port>` of the Northbound database ([`OvnCentral::start_tcp`] only).
    pub fn nb_tcp_remote(&self) -> Option<String> {
        self.nb.tcp_remote()
    }
    /// `tcp:127.0.0.1:<port>` of the Southbound database ([`OvnCentral::start_tcp`] only).
    pub fn sb_tcp_remote(&self) -> Option<String> {
        self.sb.tcp_remote()
    }
    /// ovn-northd's log file.
    pub fn northd_log_path(&self) -> &Path {
        &self.northd_log
    }
    /// ovn-northd's PID.
    pub fn northd_pid(&self) -> Option<u32> {
        self.northd.as_ref().map(Daemon::pid)
    }

    /// Waits until `ovn-appctl status` says northd is active.
    pub fn wait_northd_active(&self) -> Result<()> {
        let ctl = self.northd_ctl.to_string_lossy().into_owned();
        wait_logged(
            "ovn-northd to become active",
            &self.northd_log,
            START_TIMEOUT,
            || {
                let s = run("ovn-appctl", &["--timeout=5", "-t", &ctl, "status"]).ok()?;
                s.contains("active").then_some(())
            },
        )
    }

    /// Runs `ovn-nbctl --db=<nb> <args>` and returns stdout.
    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db={}", self.nb.remote());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    /// Runs `ovn-sbctl --db=<sb> <args>` and returns stdout.
    pub fn sbctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db={}", self.sb.remote());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovn-sbctl", &all)
    }

    /// Waits until northd has processed every NB change made so far into the SB
    /// (`ovn-nbctl --wait=sb sync`).
    pub fn sync_sb(&self) -> Result<()> {
        self.nbctl(&["--wait=sb", "sync"]).map(drop)
    }
}
