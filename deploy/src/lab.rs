//! `up`, `apply`, `delete`, `status`, `down`: the lab's orchestration.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrovn_api::Allocation;
use ferrovn_testkit::cni::{CniCall, run_cni};
use ferrovn_testkit::kube::{ControlPlane, HostPaths, KubeletNode, NodeSpec, image_tar};
use ferrovn_testkit::ovs_paths::{
    nb_schema, sb_schema, vswitch_schema, vswitchd_dpdk, vswitchd_plain,
};
use ferrovn_testkit::process::which;
use serde_json::{Value, json};

use crate::cluster::{self, ApiPods, PodMeta};
use crate::model::{
    IfKind, IfPlan, IfState, IfStatus, KubeState, LabState, NODE_DPDK, NODE_KERNEL, NodeState,
    Outcome, PodPlan, PodState, Profile, Resource, STATE_VERSION, hugepages_target, probe_plan,
    render_matrix, render_table, sanitize, summary_line,
};
use crate::plan::plan_pods;
use crate::sys::{
    self, Place, Records, loud_warning, ovs_env, run, run_in, spawn_daemon, step, wait_socket,
    wait_until,
};

/// The DPDK pods' image (deploy/images/testpmd/build.sh, `make testpmd-image`).
pub const TESTPMD_IMAGE: &str = "ferrovn.invalid/ferrovn/dpdk-testpmd:22.11";
/// Hugepage memory the DPDK node needs: OVS-DPDK's socket memory + one testpmd pod.
pub const OVS_SOCKET_MEM_MIB: u64 = 256;
pub const POD_HUGE_MIB: u64 = 128;
pub const HUGE_NEED_MIB: u64 = OVS_SOCKET_MEM_MIB + POD_HUGE_MIB;

/// Everything `up` takes from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub prefix: String,
    pub bin_dir: PathBuf,
    /// deploy/ of this source tree: CRDs, RBAC, admission policy, examples/00-nodes.yaml.
    pub deploy_dir: PathBuf,
    pub examples: Option<PathBuf>,
    pub raft: bool,
    pub nb_port: u16,
    pub sb_port: u16,
    pub raft_port: u16,
    pub no_hugepages: bool,
    /// CPU of the OVS-DPDK PMD thread.
    pub pmd_cpu: u32,
    /// CPUs of the vhost helper's relay worker.
    pub helper_cores: String,
    /// FerrOVN's image (OCI tar of `ferrovn.invalid/ferrovn:dev`, `make ferrovn-image`),
    /// imported into each node: the controller and agent pods run it.
    pub ferrovn_image: PathBuf,
}

/// Paths inside the state dir.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn lab_json(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    pub fn central(&self) -> PathBuf {
        self.root.join("central")
    }
    pub fn node(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }
    /// The Kubernetes control plane's directory.
    pub fn kube(&self) -> PathBuf {
        self.root.join("kube")
    }
    /// A node's containerd and kubelet (testkit's persistent KubeletNode): logs, kubelet root,
    /// containerd root and state, CNI config, PID files.
    pub fn kubelet_node(&self, node: &str) -> PathBuf {
        self.node(node).join("k")
    }
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    pub fn hugetlbfs(&self) -> PathBuf {
        self.root.join("hugepages")
    }
    pub fn pod_file(&self, ns: &str, name: &str) -> PathBuf {
        self.pods().join(ns).join(format!("{name}.json"))
    }
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn read_lab(paths: &Paths) -> anyhow::Result<Option<LabState>> {
    match std::fs::read(paths.lab_json()) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{} is not a lab state file", paths.lab_json().display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", paths.lab_json().display())),
    }
}

/// The marker in every command line we start: our state dir.
fn marker(paths: &Paths) -> String {
    paths.root.display().to_string()
}

fn vsctl(db: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec![format!("--db={db}"), "--timeout=10".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run(15, "ovs-vsctl", all)
}

fn processes_by_name(records: &Records) -> BTreeMap<String, (u32, String)> {
    let mut m = BTreeMap::new();
    for r in records.all().0 {
        if let Resource::Process {
            name, pid, marker, ..
        } = r
        {
            m.insert(name, (pid, marker));
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// up

/// Refuses to start when something is wrong, with the reason and the fix.
/// The OVS and OVN versions the lab runs, as the programs themselves report them.
fn datapath_versions() -> String {
    let first_line = |program: &str| {
        run(10, program, ["--version"])
            .ok()
            .and_then(|o| o.lines().next().map(str::to_string))
            .unwrap_or_else(|| format!("{program}: version unknown"))
    };
    let dpdk = run(10, &vswitchd_dpdk().display().to_string(), ["--version"])
        .ok()
        .and_then(|o| {
            o.lines()
                .find(|l| l.starts_with("DPDK"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "DPDK: version unknown".into());
    format!(
        "lab: datapath {} / {} / {dpdk}",
        first_line("ovs-vswitchd"),
        first_line("ovn-northd")
    )
}

fn preflight(opts: &Options, paths: &Paths) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "ferrovn-lab must run as root (it creates network namespaces, mounts hugetlbfs and starts OVS): try `sudo make lab`"
        );
    }
    let mut missing = Vec::new();
    for tool in [
        "ovsdb-server",
        "ovsdb-tool",
        "ovs-vsctl",
        "ovs-appctl",
        "ovn-northd",
        "ovn-controller",
        "ovn-nbctl",
        "ovn-sbctl",
        "ip",
        "ping",
        "timeout",
    ] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if which(&vswitchd_plain().display().to_string()).is_none() {
        missing.push(vswitchd_plain().display().to_string());
    }
    for f in [vswitch_schema(), nb_schema(), sb_schema()] {
        if !f.exists() {
            missing.push(f.display().to_string());
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing system tools: {} — run `make deps ovs-ovn` (OVS/OVN come from the Debian 13 rootfs in FERROVN_OVS_DIR, docs/ovs-ovn.md; dpdk-dev, iproute2, iputils-ping from Debian)",
            missing.join(", ")
        );
    }
    cluster::preflight()?;
    println!("{}", datapath_versions());
    let mut bins = Vec::new();
    for b in ["ferrovn-controller", "ferrovn-node", "ferrovn-cni"] {
        if !opts.bin_dir.join(b).is_file() {
            bins.push(b);
        }
    }
    if !bins.is_empty() {
        bail!(
            "FerrOVN binaries missing in {}: {} — run `make build` (or `make lab`, which builds them), or pass --bin-dir",
            opts.bin_dir.display(),
            bins.join(", ")
        );
    }
    if !opts.ferrovn_image.is_file() {
        bail!(
            "FerrOVN's image {} missing (the controller and agents run as pods from it): run `make ferrovn-image` (or `make lab`, which builds it), or pass --ferrovn-image",
            opts.ferrovn_image.display()
        );
    }
    let mut busy = Vec::new();
    if !opts.raft {
        for (what, p) in [("--nb-port", opts.nb_port), ("--sb-port", opts.sb_port)] {
            if p != 0 && !sys::port_free(p) {
                busy.push(format!("127.0.0.1:{p} ({what})"));
            }
        }
    } else {
        for i in 0..6 {
            let p = opts.raft_port.saturating_add(i);
            if !sys::port_free(p) {
                busy.push(format!("127.0.0.1:{p} (--raft-port range)"));
            }
        }
    }
    if !busy.is_empty() {
        bail!(
            "TCP ports busy: {} — another OVN (system ovn-central?) or lab uses them; pass other ports, or --nb-port 0 --sb-port 0 for free ones",
            busy.join(", ")
        );
    }
    let taken: Vec<String> = sys::netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", opts.prefix)))
        .collect();
    if !taken.is_empty() {
        bail!(
            "network namespaces with the lab's prefix {:?} exist already ({}) but {} has no lab: another lab with this prefix runs elsewhere? Use --prefix, or delete them",
            opts.prefix,
            taken.join(", "),
            paths.root.display()
        );
    }
    Ok(())
}

/// What the DPDK node can have: hugepages (raised if needed, recorded) and OVS-DPDK.
fn hugepages(
    opts: &Options,
    paths: &Paths,
    records: &Records,
) -> anyhow::Result<(Profile, String)> {
    if opts.no_hugepages {
        return Ok((Profile::Kernel, "fallback: --no-hugepages given".into()));
    }
    if !vswitchd_dpdk().exists() {
        return Ok((
            Profile::Kernel,
            format!(
                "fallback: {} missing (package openvswitch-switch-dpdk)",
                vswitchd_dpdk().display()
            ),
        ));
    }
    ensure_free_hugepages(records, HUGE_NEED_MIB)?;
    let (total2, free2) = sys::hugepages_now();
    // OVS-DPDK's own memory is the must; a DPDK pod without hugepages runs on plain memory
    if free2 * 2 < OVS_SOCKET_MEM_MIB {
        return Ok((
            Profile::Kernel,
            format!(
                "fallback: only {free2} free 2 MiB hugepages of {total2} (OVS-DPDK needs {}; memory too fragmented or limited)",
                OVS_SOCKET_MEM_MIB / 2
            ),
        ));
    }
    let mnt = paths.hugetlbfs();
    std::fs::create_dir_all(&mnt)?;
    run(
        10,
        "mount",
        [
            "-t",
            "hugetlbfs",
            "-o",
            "pagesize=2M",
            "nodev",
            &mnt.display().to_string(),
        ],
    )?;
    records.add(&Resource::Mount { path: mnt })?;
    Ok((
        Profile::Dpdk,
        format!("hugepages: {free2} x 2 MiB free, private hugetlbfs"),
    ))
}

/// Raises `vm.nr_hugepages` by what is missing for `need_mib` free (recorded for `down`).
/// True if that much is free afterwards.
fn ensure_free_hugepages(records: &Records, need_mib: u64) -> anyhow::Result<bool> {
    for attempt in 0..2 {
        let (total, free) = sys::hugepages_now();
        let Some(target) = hugepages_target(total, free, need_mib) else {
            break;
        };
        if attempt == 1 {
            // the kernel found too few free 2 MiB blocks: compact memory, then ask again
            let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
        }
        let original = sys::read_u64("/proc/sys/vm/nr_hugepages")?;
        if std::fs::write("/proc/sys/vm/nr_hugepages", target.to_string()).is_ok() {
            let set_to = sys::read_u64("/proc/sys/vm/nr_hugepages").unwrap_or(target);
            if set_to != original {
                records.add(&Resource::Hugepages { original, set_to })?;
            }
        }
    }
    Ok(sys::hugepages_now().1 * 2 >= need_mib)
}

struct DbCluster {
    remote: String,
    /// The TCP port asked for (`--nb-port`, `--sb-port`), for the user's ovn-nbctl.
    tcp: Option<u16>,
    /// What FerrOVN's pods connect to: TCP on 127.0.0.1 (relayed into each node's namespace;
    /// a unix socket of the machine is not theirs to open), one port per member.
    pod_ports: Vec<u16>,
}

impl DbCluster {
    fn pod_remote(&self) -> String {
        self.pod_ports
            .iter()
            .map(|p| format!("tcp:127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A TCP port on 127.0.0.1 nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(l.local_addr()?.port())
}

/// One OVSDB database of OVN central.
struct DbSpec<'a> {
    stem: &'a str,
    schema: &'a str,
    db_name: &'a str,
    raft_base: u16,
    tcp_port: u16,
}

/// One OVSDB database (NB or SB), standalone or a 3-member Raft cluster.
fn start_db(
    opts: &Options,
    paths: &Paths,
    records: &Records,
    spec: &DbSpec<'_>,
) -> anyhow::Result<DbCluster> {
    let DbSpec {
        stem,
        schema,
        db_name,
        raft_base,
        tcp_port,
    } = *spec;
    let dir = paths.central();
    let members = if opts.raft { 3 } else { 1 };
    let mut socks = Vec::new();
    let mut pod_ports = Vec::new();
    for i in 0..members {
        let member = if opts.raft {
            format!("{stem}{}", i + 1)
        } else {
            stem.to_string()
        };
        let db = dir.join(format!("{member}.db"));
        let dbs = db.display().to_string();
        if opts.raft {
            let me = format!("tcp:127.0.0.1:{}", raft_base + i as u16);
            if i == 0 {
                run(10, "ovsdb-tool", ["create-cluster", &dbs, schema, &me])?;
            } else {
                let leader = format!("tcp:127.0.0.1:{raft_base}");
                run(
                    10,
                    "ovsdb-tool",
                    ["join-cluster", &dbs, db_name, &me, &leader],
                )?;
            }
        } else {
            run(10, "ovsdb-tool", ["create", &dbs, schema])?;
        }
        let sock = dir.join(format!("{member}.sock"));
        let log = dir.join(format!("{member}.log"));
        let mut args = vec![
            dbs.clone(),
            "-vconsole:off".into(),
            "-vfile:info".into(),
            format!("--remote=punix:{}", sock.display()),
            format!("--log-file={}", log.display()),
            format!("--unixctl={}", dir.join(format!("{member}.ctl")).display()),
            format!("--pidfile={}", dir.join(format!("{member}.pid")).display()),
        ];
        let port = if !opts.raft && tcp_port != 0 {
            tcp_port
        } else {
            free_port()?
        };
        args.push(format!("--remote=ptcp:{port}:127.0.0.1"));
        pod_ports.push(port);
        let pid = spawn_daemon(
            records,
            &format!("ovsdb-server {member}"),
            Place::Root,
            &ovs_env(&dir),
            "ovsdb-server",
            &args,
            &dir.join(format!("{member}.out")),
            &marker(paths),
            false,
        )?;
        wait_socket(
            &format!("ovsdb-server {member}"),
            &sock,
            pid,
            &log,
            Duration::from_secs(20),
        )?;
        socks.push(format!("unix:{}", sock.display()));
    }
    Ok(DbCluster {
        remote: socks.join(","),
        tcp: (!opts.raft && tcp_port != 0).then_some(tcp_port),
        pod_ports,
    })
}

fn start_central(
    opts: &Options,
    paths: &Paths,
    records: &Records,
) -> anyhow::Result<(DbCluster, DbCluster)> {
    std::fs::create_dir_all(paths.central())?;
    let (nb_schema, sb_schema) = (
        nb_schema().display().to_string(),
        sb_schema().display().to_string(),
    );
    let nb = start_db(
        opts,
        paths,
        records,
        &DbSpec {
            stem: "ovnnb_db",
            schema: &nb_schema,
            db_name: "OVN_Northbound",
            raft_base: opts.raft_port,
            tcp_port: opts.nb_port,
        },
    )?;
    let sb = start_db(
        opts,
        paths,
        records,
        &DbSpec {
            stem: "ovnsb_db",
            schema: &sb_schema,
            db_name: "OVN_Southbound",
            raft_base: opts.raft_port + 3,
            tcp_port: opts.sb_port,
        },
    )?;
    let dir = paths.central();
    let log = dir.join("ovn-northd.log");
    let args = vec![
        "-vconsole:off".into(),
        "-vfile:info".into(),
        format!("--ovnnb-db={}", nb.remote),
        format!("--ovnsb-db={}", sb.remote),
        format!("--log-file={}", log.display()),
        format!("--unixctl={}", dir.join("ovn-northd.ctl").display()),
        format!("--pidfile={}", dir.join("ovn-northd.pid").display()),
    ];
    let pid = spawn_daemon(
        records,
        "ovn-northd",
        Place::Root,
        &ovs_env(&dir),
        "ovn-northd",
        &args,
        &dir.join("ovn-northd.out"),
        &marker(paths),
        false,
    )?;
    wait_socket(
        "ovn-northd",
        &dir.join("ovn-northd.ctl"),
        pid,
        &log,
        Duration::from_secs(20),
    )?;
    Ok((nb, sb))
}

fn start_vswitchd(
    paths: &Paths,
    records: &Records,
    node: &NodeState,
    bin: &str,
) -> anyhow::Result<u32> {
    let d = &node.dir;
    let ctl = d.join("ovs-vswitchd.ctl");
    let log = d.join("ovs-vswitchd.log");
    let args = vec![
        format!("unix:{}", d.join("db.sock").display()),
        "-vconsole:off".into(),
        "-vfile:info".into(),
        format!("--log-file={}", log.display()),
        format!("--unixctl={}", ctl.display()),
        format!("--pidfile={}", d.join("ovs-vswitchd.pid").display()),
    ];
    let pid = spawn_daemon(
        records,
        &format!("ovs-vswitchd@{}", node.name),
        Place::Netns(&node.netns),
        &ovs_env(d),
        bin,
        &args,
        &d.join("ovs-vswitchd.out"),
        &marker(paths),
        false,
    )?;
    records.add(&Resource::Vswitchd {
        db: format!("unix:{}", d.join("db.sock").display()),
        ctl: ctl.clone(),
    })?;
    wait_socket(
        &format!("ovs-vswitchd on {}", node.name),
        &ctl,
        pid,
        &log,
        Duration::from_secs(30),
    )?;
    Ok(pid)
}

/// A node: netns, ovsdb-server, ovs-vswitchd (DPDK or plain). Falls back to the kernel profile
/// when DPDK does not initialise.
fn start_node_ovs(
    opts: &Options,
    paths: &Paths,
    records: &Records,
    node: &mut NodeState,
) -> anyhow::Result<()> {
    let d = node.dir.clone();
    std::fs::create_dir_all(&d)?;
    // the node's /run/ferrovn (HostPaths::ferrovn): the CNI and vhost helper sockets
    if let Some(run_dir) = node.cni_socket.parent() {
        std::fs::create_dir_all(run_dir)?;
    }
    run(10, "ip", ["netns", "add", &node.netns])?;
    records.add(&Resource::Netns {
        name: node.netns.clone(),
    })?;
    run(10, "ip", ["-n", &node.netns, "link", "set", "lo", "up"])?;
    let db = d.join("conf.db");
    run(
        10,
        "ovsdb-tool",
        [
            "create",
            &db.display().to_string(),
            &vswitch_schema().display().to_string(),
        ],
    )?;
    let sock = d.join("db.sock");
    let log = d.join("ovsdb-server.log");
    let args = vec![
        db.display().to_string(),
        "-vconsole:off".into(),
        "-vfile:info".into(),
        format!("--remote=punix:{}", sock.display()),
        "--remote=db:Open_vSwitch,Open_vSwitch,manager_options".into(),
        format!("--log-file={}", log.display()),
        format!("--unixctl={}", d.join("ovsdb-server.ctl").display()),
        format!("--pidfile={}", d.join("ovsdb-server.pid").display()),
    ];
    let pid = spawn_daemon(
        records,
        &format!("ovsdb-server@{}", node.name),
        Place::Netns(&node.netns),
        &ovs_env(&d),
        "ovsdb-server",
        &args,
        &d.join("ovsdb-server.out"),
        &marker(paths),
        false,
    )?;
    wait_socket(
        &format!("ovsdb-server on {}", node.name),
        &sock,
        pid,
        &log,
        Duration::from_secs(20),
    )?;
    let dbr = format!("unix:{}", sock.display());
    vsctl(&dbr, &["--no-wait", "init"])?;
    // node setup plans userspace TSO before ovs-vswitchd starts (it reads it only then): the
    // agent finds it on and veth pods keep their tx offloads (docs/ovs-ovn.md)
    vsctl(
        &dbr,
        &[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ],
    )?;
    if node.profile == Profile::Dpdk {
        let hp = paths.hugetlbfs().display().to_string();
        let extra = format!(
            "--huge-dir={hp} --file-prefix={}-ovs --iova-mode=va --no-pci",
            opts.prefix
        );
        records.add(&Resource::DpdkPrefix {
            prefix: format!("{}-ovs", opts.prefix),
        })?;
        let mask = format!("0x{:x}", 1u64 << opts.pmd_cpu);
        for (k, v) in [
            ("dpdk-init", "true".to_string()),
            ("dpdk-socket-mem", OVS_SOCKET_MEM_MIB.to_string()),
            ("dpdk-socket-limit", OVS_SOCKET_MEM_MIB.to_string()),
            ("pmd-cpu-mask", mask),
            ("pmd-maxsleep", "500".to_string()),
            ("dpdk-extra", extra),
        ] {
            vsctl(
                &dbr,
                &[
                    "--no-wait",
                    "set",
                    "Open_vSwitch",
                    ".",
                    &format!("other_config:{k}=\"{v}\""),
                ],
            )?;
        }
        let vs_pid = start_vswitchd(paths, records, node, &vswitchd_dpdk().display().to_string())?;
        let ok = wait_until(Duration::from_secs(20), || {
            vsctl(&dbr, &["get", "Open_vSwitch", ".", "dpdk_initialized"])
                .is_ok_and(|s| s.trim() == "true")
        });
        if !ok {
            let tail = sys::log_tail(&d.join("ovs-vswitchd.log"), 5);
            sys::stop_process(vs_pid, &marker(paths), false, Duration::from_secs(5));
            vsctl(
                &dbr,
                &[
                    "--no-wait",
                    "remove",
                    "Open_vSwitch",
                    ".",
                    "other_config",
                    "dpdk-init",
                ],
            )?;
            node.profile = Profile::Kernel;
            node.reason = "fallback: OVS-DPDK did not initialise (see ovs-vswitchd.log)".into();
            loud_warning(&[
                format!(
                    "{}: OVS-DPDK did not initialise; this node falls back to the KERNEL profile",
                    node.name
                ),
                tail.lines().last().unwrap_or("").trim().to_string(),
            ]);
            start_vswitchd(
                paths,
                records,
                node,
                &vswitchd_plain().display().to_string(),
            )?;
        }
    } else {
        start_vswitchd(
            paths,
            records,
            node,
            &vswitchd_plain().display().to_string(),
        )?;
    }
    Ok(())
}

fn setup_underlay(node: &NodeState) -> anyhow::Result<()> {
    let dbr = format!("unix:{}", node.dir.join("db.sock").display());
    vsctl(
        &dbr,
        &[
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
            &underlay_if(node),
        ],
    )?;
    let ok = wait_until(Duration::from_secs(10), || {
        run(5, "ip", ["-n", &node.netns, "link", "show", "br-phy"]).is_ok()
    });
    if !ok {
        bail!("br-phy did not appear in {}", node.netns);
    }
    run(
        10,
        "ip",
        [
            "-n",
            &node.netns,
            "addr",
            "add",
            &format!("{}/24", node.encap_ip),
            "dev",
            "br-phy",
        ],
    )?;
    run(10, "ip", ["-n", &node.netns, "link", "set", "br-phy", "up"])?;
    Ok(())
}

fn underlay_if(node: &NodeState) -> String {
    // <prefix>u1 / <prefix>u2: the prefix is at most 8 characters
    let n = if node.name == NODE_DPDK { 1 } else { 2 };
    format!("{}u{n}", node.netns.split('-').next().unwrap_or("fv"))
}

/// The DPDK node's config file for the agent: exactly the settings OVS-DPDK was started with.
fn write_dpdk_config(opts: &Options, paths: &Paths, node: &NodeState) -> anyhow::Result<PathBuf> {
    let path = node.dir.join("dpdk-config.json");
    let body = json!({
        "socket_mem_mib": [OVS_SOCKET_MEM_MIB],
        "socket_limit_mib": [OVS_SOCKET_MEM_MIB],
        "pmd_cpus": [opts.pmd_cpu],
        "pmd_maxsleep_us": 500,
        "huge_dir": paths.hugetlbfs(),
        "file_prefix": format!("{}-ovs", opts.prefix),
        "no_pci": true,
        "iova_mode": "va",
    });
    write_json(&path, &body)?;
    Ok(path)
}

/// The API server's and OVN central's ports inside the node's namespace, where FerrOVN's
/// pods (host network) and ovn-controller run (forward.rs).
fn start_forwarder(
    paths: &Paths,
    records: &Records,
    node: &NodeState,
    ports: &[u16],
) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("finding ferrovn-lab itself")?;
    let log = node.dir.join("apiserver-forward.log");
    let mut args = vec![
        format!("--state-dir={}", paths.root.display()),
        "forward".into(),
        format!("--netns={}", node.netns),
    ];
    args.extend(ports.iter().map(|p| format!("--port={p}")));
    let pid = spawn_daemon(
        records,
        &format!("apiserver-forward@{}", node.name),
        Place::Root,
        &[],
        &exe.display().to_string(),
        &args,
        &log,
        &marker(paths),
        false,
    )?;
    let ok = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.matches("forwarding").count() == ports.len())
            || !sys::alive(pid)
    });
    if !ok || !sys::alive(pid) {
        bail!(
            "the API server forwarder into {} did not start; {}:\n{}",
            node.netns,
            log.display(),
            sys::log_tail(&log, 5)
        );
    }
    Ok(pid)
}

fn start_ovn_controller(paths: &Paths, records: &Records, node: &NodeState) -> anyhow::Result<()> {
    let d = &node.dir;
    let args = vec![
        format!("unix:{}", d.join("db.sock").display()),
        "-vconsole:off".into(),
        "-vfile:info".into(),
        format!("--log-file={}", d.join("ovn-controller.log").display()),
        format!("--pidfile={}", d.join("ovn-controller.pid").display()),
    ];
    spawn_daemon(
        records,
        &format!("ovn-controller@{}", node.name),
        Place::Netns(&node.netns),
        &ovs_env(d),
        "ovn-controller",
        &args,
        &d.join("ovn-controller.out"),
        &marker(paths),
        false,
    )?;
    Ok(())
}

fn sbctl(sb: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec![format!("--db={sb}"), "--timeout=5".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run(10, "ovn-sbctl", all)
}

fn chassis(sb: &str) -> Vec<String> {
    sbctl(sb, &["--bare", "--columns=name", "list", "Chassis"])
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the vhost helper DaemonSet's pod Ready on every kernel-profile node and for its
/// control socket in the node's `/run/ferrovn`; DPDK pods there are served by it. A helper that
/// does not come up is a loud warning (those DPDK pods are reported unavailable), not the end.
fn wait_helpers(cp: &ControlPlane, opts: &Options, nodes: &mut [NodeState]) {
    for node in nodes.iter_mut().filter(|n| n.profile == Profile::Kernel) {
        let label = format!(
            "vhost helper pod (DaemonSet {}) Ready on {} (relay worker on cpu {}), its control socket",
            crate::pods::HELPER_DAEMONSET,
            node.name,
            opts.helper_cores
        );
        let s = sys::Step::begin(&label);
        let Some(sock) = node.cni_socket.parent().map(|d| d.join("vhost.sock")) else {
            s.fail();
            continue;
        };
        let name = node.name.clone();
        let ready = crate::pods::wait(
            cp,
            &format!("a vhost helper pod Ready on {name}"),
            AGENT_POD_WAIT,
            |pods| crate::pods::helper_ready(pods, &name),
        )
        .and_then(|()| {
            if wait_until(Duration::from_secs(30), || sock.exists()) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "no control socket {} (kubectl -n kube-system logs -l {})",
                    sock.display(),
                    crate::pods::HELPER_SELECTOR
                ))
            }
        });
        match ready {
            Ok(()) => {
                node.vhost_socket = Some(sock);
                s.done("");
            }
            Err(e) => {
                s.fail();
                loud_warning(&[
                    format!(
                        "WARNING: the vhost helper pod is not Ready on {}: DPDK pods there are not available",
                        node.name
                    ),
                    format!("{e:#}").lines().next().unwrap_or("").to_string(),
                ]);
            }
        }
    }
}

/// The apiserver's `cluster` egress proxy socket (next to the control plane's directory).
fn egress_socket(kube_dir: &Path) -> PathBuf {
    kube_dir.with_file_name("egress.sock")
}

/// The egress proxy (egress.rs): the apiserver reaches each node's kubelet at its
/// InternalIP through it.
fn start_egress_proxy(paths: &Paths, records: &Records, nodes: &[NodeState]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding ferrovn-lab itself")?;
    let sock = egress_socket(&paths.kube());
    let log = paths.root.join("egress-proxy.log");
    let mut args = vec![
        format!("--state-dir={}", paths.root.display()),
        "egress-proxy".into(),
        format!("--socket={}", sock.display()),
    ];
    for n in nodes {
        args.push(format!("--map={}={}", n.name, n.netns));
        args.push(format!("--map={}={}", n.encap_ip, n.netns));
    }
    let pid = spawn_daemon(
        records,
        "egress-proxy",
        Place::Root,
        &[],
        &exe.display().to_string(),
        &args,
        &log,
        &marker(paths),
        false,
    )?;
    wait_socket(
        "the egress proxy",
        &sock,
        pid,
        &log,
        Duration::from_secs(10),
    )
}

/// How long FerrOVN's pods may take to start (image already imported: seconds, but the machine
/// is shared).
const AGENT_POD_WAIT: Duration = Duration::from_secs(180);

/// The taint a new Node carries until it is Ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready:NoSchedule-";

/// The images every lab node's containerd gets: busybox and agnhost (`make kube-node-bins
/// kube-e2e-bins`) and the DPDK pods' testpmd image (`make testpmd-image`), when built.
fn node_images() -> (Vec<PathBuf>, Vec<String>) {
    let mut images = Vec::new();
    let mut missing = Vec::new();
    for f in ["busybox.tar", "agnhost.tar"] {
        match image_tar(f) {
            Ok(p) => images.push(p),
            Err(e) => missing.push(e.to_string()),
        }
    }
    let testpmd = testpmd_tar();
    if testpmd.is_file() {
        images.push(testpmd);
    } else {
        missing.push(format!(
            "{} missing (make testpmd-image): DPDK pods cannot start",
            testpmd.display()
        ));
    }
    (images, missing)
}

/// The testpmd image tar deploy/images/testpmd/build.sh writes.
pub fn testpmd_tar() -> PathBuf {
    PathBuf::from(std::env::var("FERROVN_CACHE").unwrap_or_else(|_| "/var/cache/ferrovn".into()))
        .join("testpmd/testpmd.tar")
}

/// containerd and a kubelet on every node, persistent in `<node dir>/k`, both nodes at once.
fn start_kubelets(
    opts: &Options,
    paths: &Paths,
    records: &Records,
    cp: &ControlPlane,
    nodes: &[NodeState],
) -> anyhow::Result<Vec<KubeletNode>> {
    let (mut images, missing) = node_images();
    images.push(opts.ferrovn_image.clone());
    for m in &missing {
        println!("    warning: {m}");
    }
    for n in nodes {
        records.add(&Resource::KubeletNode {
            dir: paths.kubelet_node(&n.name),
        })?;
    }
    let started: Vec<anyhow::Result<KubeletNode>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let spec = NodeSpec {
                    name: n.name.clone(),
                    netns: PathBuf::from("/var/run/netns").join(&n.netns),
                    // the underlay address the namespace has: the Node's InternalIP
                    node_ip: n.encap_ip.clone(),
                    labels: Vec::new(),
                    images: images.clone(),
                };
                let dir = paths.kubelet_node(&n.name);
                // the paths deploy/ferrovn.yaml's hostPath volumes name, the node's own; the
                // machine's /run stays visible (the lab's state dir may live there)
                let host = HostPaths {
                    openvswitch: Some(n.dir.clone()),
                    ferrovn: n.cni_socket.parent().map(Path::to_path_buf),
                    keep_run: true,
                };
                s.spawn(move || {
                    KubeletNode::start_persistent_with_host_paths(cp, &spec, &dir, &host)
                        .with_context(|| format!("kubelet node {}", spec.name))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("kubelet start panicked")))
            })
            .collect()
    });
    started.into_iter().collect()
}

/// The Kubernetes side of `up`.
struct Kube {
    state: KubeState,
}

/// The control plane (persistent, in `dir`), deploy/'s CRDs, RBAC and admission policy
/// installed, the Nodes registered.
fn start_kube(dir: &Path, deploy: &Path, examples: Option<&Path>) -> anyhow::Result<Kube> {
    let cp = cluster::start(dir, &egress_socket(dir))?;
    cluster::install(&cp, deploy)?;
    // the examples' Nodes when the lab applies examples, else deploy/'s
    let nodes_yaml = examples
        .map(|e| e.join("00-nodes.yaml"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| deploy.join("examples").join("00-nodes.yaml"));
    cluster::register_nodes(&cp, &nodes_yaml)?;
    Ok(Kube {
        state: KubeState {
            dir: dir.to_path_buf(),
            admin_kubeconfig: cp.admin_kubeconfig().to_path_buf(),
            kubectl: cp.kubectl_path().to_path_buf(),
            server: cp.server().to_string(),
            startup_ms: cp.startup_time().as_millis() as u64,
        },
    })
}

/// `up`: everything, then the example manifests. Returns false when the lab was already up.
pub fn up(opts: &Options) -> anyhow::Result<bool> {
    let paths = Paths {
        root: opts.state_dir.clone(),
    };
    let records = Records::new(&paths.root);
    if let Some(lab) = read_lab(&paths)? {
        let procs = processes_by_name(&records);
        let dead: Vec<&String> = procs
            .iter()
            .filter(|(n, (pid, m))| !n.starts_with("testpmd") && !sys::ours(*pid, m))
            .map(|(n, _)| n)
            .collect();
        let kube_down = lab
            .kube
            .as_ref()
            .and_then(|k| ControlPlane::open(&k.dir).err())
            .map(|e| format!("Kubernetes control plane ({e})"));
        let mut dead: Vec<&String> = dead;
        if let Some(k) = &kube_down {
            dead.push(k);
        }
        if dead.is_empty() {
            println!(
                "lab already up in {} (prefix {}); `ferrovn-lab status` shows it, `ferrovn-lab down` removes it",
                paths.root.display(),
                lab.prefix
            );
            return Ok(false);
        }
        bail!(
            "a lab in {} is partly down (not running: {}); run `ferrovn-lab down` first",
            paths.root.display(),
            dead.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if records.exists() {
        bail!(
            "an earlier `ferrovn-lab up` in {} did not finish; run `ferrovn-lab down` first",
            paths.root.display()
        );
    }
    preflight(opts, &paths)?;
    let t0 = Instant::now();
    std::fs::create_dir_all(&paths.root)
        .with_context(|| format!("creating state dir {}", paths.root.display()))?;
    std::fs::create_dir_all(paths.pods())?;
    println!(
        "ferrovn-lab up: state {} prefix {}",
        paths.root.display(),
        opts.prefix
    );
    // The state dir becomes a shared mount: the agents' vhost-user bind mounts (made later,
    // under it) then reach ovs-vswitchd and the helper, which run in mount namespaces of
    // their own (`ip netns exec` makes one).
    let root_s = paths.root.display().to_string();
    run(10, "mount", ["--bind", &root_s, &root_s])?;
    records.add(&Resource::Mount {
        path: paths.root.clone(),
    })?;
    run(10, "mount", ["--make-shared", &root_s])?;

    let (dpdk_profile, dpdk_reason) = step("hugepages for the DPDK node", || {
        let r = hugepages(opts, &paths, &records)?;
        let note = r.1.clone();
        Ok((r, note))
    })?;
    if dpdk_profile == Profile::Kernel {
        loud_warning(&[
            format!("WARNING: node {NODE_DPDK} runs the KERNEL profile, not DPDK"),
            dpdk_reason.clone(),
            "DPDK pods there are served by the vhost helper instead of OVS-DPDK.".into(),
        ]);
    }

    let mut nodes = Vec::new();
    for (i, name) in [NODE_DPDK, NODE_KERNEL].iter().enumerate() {
        let dir = paths.node(name);
        let (profile, reason) = if *name == NODE_DPDK {
            (dpdk_profile, dpdk_reason.clone())
        } else {
            (
                Profile::Kernel,
                "label: no DPDK requested (netdev datapath, veth)".into(),
            )
        };
        nodes.push(NodeState {
            name: name.to_string(),
            netns: format!("{}-{}", opts.prefix, name),
            profile,
            reason,
            // the node's /run/ferrovn (HostPaths::ferrovn), where the agent pod listens
            cni_socket: dir.join("run").join("cni.sock"),
            vhost_socket: None,
            vhost_dir: dir.join("vhu"),
            dir,
            encap_ip: format!("192.168.100.{}", i + 1),
        });
    }

    // The control plane starts in the background (most of its start is waiting for etcd and
    // the apiserver) while OVN and the nodes' OVS come up; the controller and agents need it.
    records.add(&Resource::KubeControlPlane { dir: paths.kube() })?;
    let kube_thread = {
        let (kube_dir, deploy) = (paths.kube(), opts.deploy_dir.clone());
        let examples = opts.examples.clone();

        std::thread::spawn(move || start_kube(&kube_dir, &deploy, examples.as_deref()))
    };

    let (nb, sb) = step(
        if opts.raft {
            "OVN central: NB + SB as 3-member Raft clusters, ovn-northd"
        } else {
            "OVN central: NB + SB ovsdb-server, ovn-northd"
        },
        || {
            let r = start_central(opts, &paths, &records)?;
            let note = match (r.0.tcp, r.1.tcp) {
                (Some(a), Some(b)) => format!("NB tcp:127.0.0.1:{a}, SB tcp:127.0.0.1:{b}"),
                _ => String::new(),
            };
            Ok((r, note))
        },
    )?;

    for node in nodes.iter_mut() {
        let label = format!(
            "node {}: netns {}, ovsdb-server, {}",
            node.name,
            node.netns,
            if node.profile == Profile::Dpdk {
                "ovs-vswitchd-dpdk (hugepages, PMD on cpu".to_string()
                    + &opts.pmd_cpu.to_string()
                    + ")"
            } else {
                "ovs-vswitchd (netdev)".to_string()
            }
        );
        step(&label, || {
            start_node_ovs(opts, &paths, &records, node)?;
            Ok(((), String::new()))
        })?;
    }
    step("underlay veth + Geneve endpoints on br-phy", || {
        let (a, b) = (underlay_if(&nodes[0]), underlay_if(&nodes[1]));
        run(
            10,
            "ip",
            [
                "link",
                "add",
                &a,
                "netns",
                &nodes[0].netns,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &nodes[1].netns,
            ],
        )?;
        records.add(&Resource::Link {
            netns: nodes[0].netns.clone(),
            name: a.clone(),
        })?;
        for n in &nodes {
            let dev = underlay_if(n);
            // The veth is a port of br-phy, not an interface of the node's kernel: with ARP on,
            // the kernel would answer for the tunnel IP with the veth's MAC as well as through
            // br-phy, and OVS's tunnel neighbor cache could learn either.
            run(
                10,
                "ip",
                ["-n", &n.netns, "link", "set", &dev, "arp", "off"],
            )?;
            run(
                10,
                "ip",
                [
                    "netns",
                    "exec",
                    &n.netns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
                ],
            )?;
            run(10, "ip", ["-n", &n.netns, "link", "set", &dev, "up"])?;
            setup_underlay(n)?;
        }
        Ok((
            (),
            format!("{} <-> {}", nodes[0].encap_ip, nodes[1].encap_ip),
        ))
    })?;

    step("outside world: a netns behind both nodes' uplinks", || {
        let note = crate::outside::start(&opts.prefix, &records, &nodes, &paths.root)?;
        Ok(((), note))
    })?;

    let s = sys::Step::begin(format!(
        "Kubernetes {} control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler; deploy/ installed, Nodes registered",
        ferrovn_testkit::kube::pinned_version("K8S_VERSION").unwrap_or("?")
    ));
    let kube = match kube_thread.join() {
        Ok(Ok(k)) => {
            s.done(&format!(
                "{} (control plane up in {:.1}s)",
                k.state.server,
                k.state.startup_ms as f64 / 1000.0
            ));
            k
        }
        Ok(Err(e)) => {
            s.fail();
            return Err(e.context(format!(
                "the Kubernetes control plane; logs in {}",
                paths.kube().join("logs").display()
            )));
        }
        Err(_) => {
            s.fail();
            bail!("the Kubernetes control plane's start panicked");
        }
    };

    let api_port: u16 = kube
        .state
        .server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in {}", kube.state.server))?;
    // the API server, NB and SB on the nodes' loopback: FerrOVN's pods and ovn-controller
    // run in the nodes' namespaces
    let mut ports = vec![api_port];
    ports.extend(&nb.pod_ports);
    ports.extend(&sb.pod_ports);
    let port_list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for node in &nodes {
        step(
            &format!(
                "API server, NB, SB ports (127.0.0.1: {port_list}) inside {} (forwarder)",
                node.netns
            ),
            || {
                start_forwarder(&paths, &records, node, &ports)?;
                Ok(((), String::new()))
            },
        )?;
    }
    step(
        "egress proxy: the API server reaches the kubelets (exec, logs) in their namespaces",
        || {
            start_egress_proxy(&paths, &records, &nodes)?;
            Ok(((), String::new()))
        },
    )?;
    let cp = ControlPlane::open(&kube.state.dir)?;
    let mut kubelets = step(
        "containerd + kubelet on each node (own mount namespace and cgroup; images imported; Nodes registered)",
        || {
            let k = start_kubelets(opts, &paths, &records, &cp, &nodes)?;
            let note = k
                .iter()
                .map(|n| format!("{} {:.1}s", n.name(), n.startup_time().as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ");
            Ok((k, note))
        },
    )?;
    let dpdk_node = nodes
        .iter()
        .find(|n| n.name == NODE_DPDK)
        .ok_or_else(|| anyhow::anyhow!("no node {NODE_DPDK}"))?;
    let node_mount_ns = |name: &str| {
        kubelets
            .iter()
            .find(|k| k.name() == name)
            .map(KubeletNode::mount_ns)
            .with_context(|| format!("no kubelet node {name}"))
    };
    // the machine's: the egress proxy lives as long as the lab, in that mount namespace
    let machine_mount_ns = processes_by_name(&records)
        .get("egress-proxy")
        .map(|(pid, _)| PathBuf::from(format!("/proc/{pid}/ns/mnt")))
        .context("the lab's egress proxy is not running: no mount namespace for the agents")?;
    let helper_file_prefix = format!("{}-vhost", opts.prefix);
    // a helper pod killed with its node leaves EAL's runtime dir (the node's /var/run/dpdk is
    // the machine's): `down` removes it
    for node in nodes.iter().filter(|n| n.profile == Profile::Kernel) {
        records.add(&Resource::DpdkPrefix {
            prefix: format!("{helper_file_prefix}-{}", node.name),
        })?;
    }
    let settings = crate::pods::LabSettings {
        state_root: paths.root.clone(),
        nb: nb.pod_remote(),
        sb: sb.pod_remote(),
        dpdk_profile: dpdk_node.profile,
        dpdk_config: write_dpdk_config(opts, &paths, dpdk_node)?,
        hugetlbfs: paths.hugetlbfs(),
        dpdk_vswitchd: Some(vswitchd_dpdk()).filter(|p| p.is_file()),
        // OVS-DPDK (a process of the machine) or, on the kernel profile, the helper's pod
        dpdk_agent_mount_ns: if dpdk_node.profile == Profile::Dpdk {
            machine_mount_ns
        } else {
            node_mount_ns(NODE_DPDK)?
        },
        kernel_agent_mount_ns: node_mount_ns(NODE_KERNEL)?,
        helper_cores: opts.helper_cores.clone(),
        // an idle relay worker naps instead of spinning: the lab shares 2 cores
        helper_idle_sleep_us: 200,
        helper_file_prefix,
    };
    // the DaemonSet's hostPath volume must exist also when the node runs the kernel profile
    std::fs::create_dir_all(&settings.hugetlbfs)?;
    step(
        "FerrOVN as pods: kubectl apply -f deploy/ferrovn.yaml (lab overlay): controller Deployment, agent DaemonSets ferrovn-node-kernel / ferrovn-node-dpdk, vhost helper DaemonSet ferrovn-vhost",
        || {
            crate::pods::install(&cp, &opts.deploy_dir, api_port, &settings)?;
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            crate::pods::wait(
                &cp,
                "an agent pod Ready on every node",
                AGENT_POD_WAIT,
                |pods| names.iter().all(|n| crate::pods::agent_ready(pods, n)),
            )?;
            for node in &nodes {
                let ok = wait_until(AGENT_POD_WAIT, || node.cni_socket.exists());
                if !ok {
                    bail!(
                        "the agent pod on {} did not open its CNI socket {} (kubectl -n kube-system logs -l {})",
                        node.name,
                        node.cni_socket.display(),
                        crate::pods::AGENT_SELECTOR
                    );
                }
            }
            let kubelets_note = kubelets
                .iter()
                .map(|k| k.name().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Ok(((), format!("agents Running on {kubelets_note}")))
        },
    )?;
    // the vhost helper pod on every kernel-profile node, before any DPDK pod there
    wait_helpers(&cp, opts, &mut nodes);
    step("ovn-controller on both nodes, chassis registered", || {
        for node in &nodes {
            start_ovn_controller(&paths, &records, node)?;
        }
        let ok = wait_until(Duration::from_secs(30), || chassis(&sb.remote).len() == 2);
        if !ok {
            bail!(
                "chassis registered: {:?} (expected 2); see {}/ovn-controller.log",
                chassis(&sb.remote),
                nodes[1].dir.display()
            );
        }
        Ok(((), String::new()))
    })?;
    step(
        "CNI config installed on each node by the agent pod's install-cni, Nodes Ready; a controller replica holds the Lease",
        || {
            for kn in kubelets.iter_mut() {
                kn.wait_ready(&cp, Duration::from_secs(120))?;
                // the node lifecycle controller lifts it too; scheduling need not wait for it
                let _ = cp.kubectl(&["taint", "node", kn.name(), NOT_READY_TAINT]);
            }
            let start = Instant::now();
            let holder = loop {
                let h = cp
                    .kubectl(&[
                        "-n",
                        "kube-system",
                        "get",
                        "lease",
                        "ferrovn-controller",
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ])
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                if h.starts_with("ferrovn-controller-") {
                    break h;
                }
                if start.elapsed() > AGENT_POD_WAIT {
                    bail!(
                        "no ferrovn-controller pod holds the Lease kube-system/ferrovn-controller within {}s (kubectl -n kube-system logs -l {})",
                        AGENT_POD_WAIT.as_secs(),
                        crate::pods::CONTROLLER_SELECTOR
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            Ok(((), format!("leader {holder}")))
        },
    )?;
    crate::dns::up_step(&cp, &kubelets, api_port);

    let lab = LabState {
        version: STATE_VERSION,
        prefix: opts.prefix.clone(),
        bin_dir: opts.bin_dir.clone(),
        nb_remote: nb.remote.clone(),
        sb_remote: sb.remote.clone(),
        nb_tcp: nb.tcp,
        sb_tcp: sb.tcp,
        raft: opts.raft,
        nodes,
        hugetlbfs: (dpdk_profile == Profile::Dpdk).then(|| paths.hugetlbfs()),
        kube: Some(kube.state.clone()),
    };
    write_json(&paths.lab_json(), &lab)?;
    println!("  fabric up in {:.1}s", t0.elapsed().as_secs_f64());
    println!(
        "  kubectl: export KUBECONFIG={} PATH={}:$PATH",
        kube.state.admin_kubeconfig.display(),
        kube.state
            .kubectl
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );

    if let Some(ex) = &opts.examples {
        apply(&paths.root, ex)?;
    }
    println!("  lab up in {:.1}s", t0.elapsed().as_secs_f64());
    // `make lab` passes its start time: the wall time of build + up (status follows)
    if let Some(t) = std::env::var("FERROVN_LAB_T0")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        && let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
    {
        println!(
            "  make lab wall time to here (build + up): {}s",
            now.as_secs().saturating_sub(t)
        );
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// pods

fn load_pod_states(paths: &Paths) -> Vec<PodState> {
    let mut out = Vec::new();
    let Ok(nss) = std::fs::read_dir(paths.pods()) else {
        return out;
    };
    for ns in nss.flatten() {
        let Ok(files) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().extension().is_some_and(|e| e == "json")
                && let Ok(b) = std::fs::read(f.path())
                && let Ok(p) = serde_json::from_slice::<PodState>(&b)
            {
                out.push(p);
            }
        }
    }
    out.sort_by_key(PodState::key);
    out
}

fn cni_error(out: &ferrovn_testkit::cni::CniOutput) -> String {
    let j = out.json();
    match j.get("msg").and_then(Value::as_str) {
        Some(m) => {
            let d = j.get("details").and_then(Value::as_str).unwrap_or("");
            if d.is_empty() {
                format!(
                    "CNI error {}: {m}",
                    j.get("code").cloned().unwrap_or(Value::Null)
                )
            } else {
                format!(
                    "CNI error {}: {m}: {d}",
                    j.get("code").cloned().unwrap_or(Value::Null)
                )
            }
        }
        None => format!(
            "plugin exit {}: {}",
            out.exit_code,
            format!("{} {}", out.stdout.trim(), out.stderr.trim()).trim()
        ),
    }
}

fn cni_args(pod: &PodState) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.container_id, pod.uid
    )
}

fn netconf_for(plan: &IfPlan, node: &NodeState) -> Value {
    let mut c = plan.netconf.clone();
    if let Some(o) = c.as_object_mut() {
        // the NAD names the cluster's agent socket; in the lab each node has its own
        o.insert(
            "server_socket".into(),
            json!(node.cni_socket.display().to_string()),
        );
    }
    c
}

fn cni_call(
    lab: &LabState,
    pod: &PodState,
    command: &str,
    ifname: &str,
    conf: &Value,
) -> anyhow::Result<ferrovn_testkit::cni::CniOutput> {
    let plugin = lab.bin_dir.join("ferrovn-cni");
    let stdin = serde_json::to_vec(conf)?;
    // the path the agent sees: it runs in the node's mount namespace, as containerd does
    let netns = pod.sandbox_netns.clone();
    let args = cni_args(pod);
    run_cni(
        &plugin,
        &CniCall {
            command,
            container_id: &pod.container_id,
            netns: &netns,
            ifname,
            args: &args,
            stdin: &stdin,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// How long the kubelet may take to make a new pod's sandbox (CNI ADD of eth0 included).
const SANDBOX_WAIT: Duration = Duration::from_secs(120);

/// The ready sandbox the node's kubelet made for `ns/name`: (id, its netns path as containerd
/// named it, the PID of its pause process).
fn sandbox(kn: &KubeletNode, ns: &str, name: &str) -> Option<(String, String, u32)> {
    let ids = kn
        .crictl(&[
            "pods",
            "--namespace",
            ns,
            "--name",
            name,
            "--state",
            "ready",
            "-q",
        ])
        .ok()?;
    // --name is a regular expression: the exact name is checked below
    for id in ids.stdout.split_whitespace() {
        let Ok(o) = kn.crictl(&["inspectp", id]) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&o.stdout) else {
            continue;
        };
        if v["status"]["metadata"]["name"].as_str() != Some(name) {
            continue;
        }
        let pid = v["info"]["pid"].as_u64()? as u32;
        let netns = v["info"]["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["type"].as_str() == Some("network"))?["path"]
            .as_str()?
            .to_string();
        return Some((id.to_string(), netns, pid));
    }
    None
}

/// Takes a pod the node's kubelet runs into the lab's view: waits for its sandbox (the
/// kubelet's CNI ADD plumbed eth0), names its network namespace `<prefix>-<ns>-<pod>` for the
/// probes, and does Multus's part for its attachments (`k8s.v1.cni.cncf.io/networks`): CNI ADD
/// of each (`net1`, ...) into the sandbox with its NAD's config, as the kubelet's own ADD would
/// through a meta plugin.
fn adopt_pod(
    lab: &LabState,
    paths: &Paths,
    records: &Records,
    plan: &PodPlan,
    meta: &PodMeta,
) -> anyhow::Result<PodState> {
    let mut pod = PodState {
        namespace: plan.namespace.clone(),
        name: plan.name.clone(),
        node: plan.node.clone(),
        netns: format!(
            "{}-{}-{}",
            lab.prefix,
            sanitize(&plan.namespace),
            sanitize(&plan.name)
        ),
        container_id: String::new(),
        sandbox_netns: String::new(),
        uid: meta.uid.clone(),
        dpdk: plan.is_dpdk(),
        interfaces: Vec::new(),
        app_pid: None,
        app_marker: None,
        problem: plan.problem.clone(),
    };
    let Some(node) = lab.node(&plan.node).cloned() else {
        pod.problem
            .get_or_insert_with(|| format!("node {:?} is not a lab node", plan.node));
        write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;
        return Ok(pod);
    };
    if pod.problem.is_some() {
        write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;
        return Ok(pod);
    }
    let kn = KubeletNode::open(&paths.kubelet_node(&node.name))
        .with_context(|| format!("the kubelet node of {}", node.name))?;
    let start = Instant::now();
    let found = loop {
        if let Some(s) = sandbox(&kn, &plan.namespace, &plan.name) {
            break Some(s);
        }
        if start.elapsed() > SANDBOX_WAIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let Some((id, sandbox_netns, pid)) = found else {
        pod.problem = Some(format!(
            "the kubelet made no sandbox within {}s (kubectl describe pod -n {} {}; {})",
            SANDBOX_WAIT.as_secs(),
            plan.namespace,
            plan.name,
            kn.log_path("kubelet").display()
        ));
        write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;
        return Ok(pod);
    };
    pod.container_id = id;
    pod.sandbox_netns = sandbox_netns;
    run(10, "ip", ["netns", "attach", &pod.netns, &pid.to_string()])?;
    records.add(&Resource::Netns {
        name: pod.netns.clone(),
    })?;
    write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;

    for ifp in &plan.interfaces {
        let kind = match (&ifp.vhost, node.profile) {
            (None, _) => IfKind::Veth,
            (Some(_), Profile::Dpdk) => IfKind::VhostUser,
            (Some(_), Profile::Kernel) => IfKind::Helper,
        };
        let alloc = Allocation::parse(&meta.annotations, &ifp.provider)
            .ok()
            .flatten();
        let mut st = IfState {
            ifname: ifp.ifname.clone(),
            provider: ifp.provider.clone(),
            kind,
            ip: alloc.as_ref().and_then(|a| a.ip.addrs().next()),
            mac: alloc.as_ref().map(|a| a.mac.to_string()),
            status: IfStatus::Ready,
        };
        if ifp.ifname == "eth0" {
            // plumbed by the kubelet's own CNI ADD
            pod.interfaces.push(st);
            continue;
        }
        if kind == IfKind::Helper && node.vhost_socket.is_none() {
            st.status = IfStatus::Unavailable {
                reason: "not available yet: the vhost helper is not running on this node".into(),
            };
            pod.interfaces.push(st);
            continue;
        }
        let conf = netconf_for(ifp, &node);
        let out = cni_call(lab, &pod, "ADD", &ifp.ifname, &conf)?;
        if out.exit_code != 0 {
            let what = match kind {
                IfKind::Veth => "",
                IfKind::VhostUser => " (vhost-user on OVS-DPDK)",
                IfKind::Helper => " (vhost-user through the vhost helper)",
            };
            st.status = IfStatus::Unavailable {
                reason: format!("not available yet{what}: {}", cni_error(&out)),
            };
        } else if let Some(ip) = out.json()["ips"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|i| i["address"].as_str())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
        {
            st.ip = Some(ip);
        }
        pod.interfaces.push(st);
        write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;
    }
    write_json(&paths.pod_file(&pod.namespace, &pod.name), &pod)?;
    Ok(pod)
}

/// The lab's part of a pod's end: CNI DEL of its attachments (the kubelet's DEL covers eth0),
/// the probe name of its network namespace.
fn delete_pod(lab: &LabState, paths: &Paths, pod: &PodState, plan: Option<&PodPlan>) {
    if let Some(node) = lab.node(&pod.node)
        && !pod.sandbox_netns.is_empty()
    {
        for st in pod.interfaces.iter().rev().filter(|i| i.ifname != "eth0") {
            let conf = plan
                .and_then(|p| p.interfaces.iter().find(|i| i.ifname == st.ifname))
                .map(|i| netconf_for(i, node))
                .unwrap_or_else(|| {
                    let mut c = crate::plan::primary_netconf();
                    c["provider"] = json!(st.provider);
                    c["server_socket"] = json!(node.cni_socket.display().to_string());
                    c
                });
            let _ = cni_call(lab, pod, "DEL", &st.ifname, &conf);
        }
    }
    if sys::netns_list().contains(&pod.netns) {
        let _ = run(10, "ip", ["netns", "del", &pod.netns]);
    }
    let _ = std::fs::remove_file(paths.pod_file(&pod.namespace, &pod.name));
}

/// Waits until every pod in `keys` is Ready (its containers run; the kubelet says so), up to
/// `within`; returns those that are not.
fn wait_pods_ready(cp: &ControlPlane, keys: &[String], within: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let ready = pods_ready(cp);
        let waiting: Vec<String> = keys
            .iter()
            .filter(|k| !ready.get(*k).copied().unwrap_or(false))
            .cloned()
            .collect();
        if waiting.is_empty() || start.elapsed() > within {
            return waiting;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every pod's Ready condition, by `namespace/name`.
fn pods_ready(cp: &ControlPlane) -> BTreeMap<String, bool> {
    let Ok(o) = cp.kubectl(&["get", "pods", "-A", "-o", "json"]) else {
        return BTreeMap::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&o.stdout) else {
        return BTreeMap::new();
    };
    v["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|p| {
            let key = format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or(""),
                p["metadata"]["name"].as_str().unwrap_or("")
            );
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"].as_str() == Some("Ready") && c["status"].as_str() == Some("True")
                })
            });
            (key, ready)
        })
        .collect()
}

/// How long a new pod may wait for the scheduler, and for the controller's allocation.
const SCHEDULE_WAIT: Duration = Duration::from_secs(30);
const ALLOCATION_WAIT: Duration = Duration::from_secs(60);

/// Every pod interface's allocation is in the pod's annotations (the controller wrote them).
fn allocated(plan: &PodPlan, meta: Option<&PodMeta>) -> bool {
    meta.is_some_and(|m| {
        plan.interfaces.iter().all(|i| {
            Allocation::parse(&m.annotations, &i.provider)
                .ok()
                .flatten()
                .is_some()
        })
    })
}

/// The pods as the API server has them, planned: a pod the scheduler could not place says why.
fn planned(api: &ApiPods) -> Vec<PodPlan> {
    let mut plans = plan_pods(&api.manifest);
    for p in &mut plans {
        if let Some(m) = api.meta.get(&p.key())
            && let Some(why) = &m.unschedulable
        {
            p.problem = Some(format!("not scheduled: {why}"));
        }
    }
    plans
}

/// Does what the nodes' kubelets would: every pod bound to a lab node gets a sandbox (CNI ADD
/// once the controller has allocated it) and its status; a deleted pod's sandbox goes (CNI
/// DEL) and then its object.
fn reconcile_pods(lab: &LabState, paths: &Paths, cp: &ControlPlane) -> anyhow::Result<()> {
    let records = Records::new(&paths.root);
    // pods without a node wait for the scheduler
    let mut api = cluster::list_pods(cp)?;
    let start = Instant::now();
    while start.elapsed() < SCHEDULE_WAIT
        && api
            .meta
            .values()
            .any(|m| m.node.is_empty() && !m.terminating && m.unschedulable.is_none())
    {
        std::thread::sleep(Duration::from_millis(500));
        api = cluster::list_pods(cp)?;
    }
    // sandboxes of pods that are gone, deleted, or re-created under the same name
    for st in load_pod_states(paths) {
        let meta = api.meta.get(&st.key());
        let keep = meta.is_some_and(|m| !m.terminating && m.uid == st.uid && st.problem.is_none());
        if keep {
            continue;
        }
        if st.problem.is_some() {
            // never had a sandbox: planned again below
            let _ = std::fs::remove_file(paths.pod_file(&st.namespace, &st.name));
            continue;
        }
        let s = sys::Step::begin(format!("pod {}: CNI DEL, sandbox removed", st.key()));
        delete_pod(lab, paths, &st, None);
        s.done("");
    }
    let existing = load_pod_states(paths);
    let new: Vec<PodPlan> = planned(&api)
        .into_iter()
        .filter(|p| {
            api.meta.get(&p.key()).is_some_and(|m| !m.terminating)
                && !existing.iter().any(|e| e.key() == p.key())
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let s = sys::Step::begin(format!(
        "controller: addresses for {} new pod(s) in their annotations, OVN ports",
        new.len()
    ));
    let waiting = |api: &ApiPods| -> Vec<String> {
        new.iter()
            .filter(|p| p.problem.is_none() && !allocated(p, api.meta.get(&p.key())))
            .map(PodPlan::key)
            .collect()
    };
    let start = Instant::now();
    while !waiting(&api).is_empty() && start.elapsed() < ALLOCATION_WAIT {
        std::thread::sleep(Duration::from_millis(500));
        api = cluster::list_pods(cp)?;
    }
    let missing = waiting(&api);
    if missing.is_empty() {
        s.done("");
    } else {
        s.fail();
        println!(
            "  no allocation for {} after {}s; the controller says:\n{}",
            missing.join(", "),
            ALLOCATION_WAIT.as_secs(),
            cp.kubectl(&[
                "-n",
                "kube-system",
                "logs",
                "-l",
                crate::pods::CONTROLLER_SELECTOR,
                "--tail=6",
            ])
            .map(|o| o.stdout)
            .unwrap_or_else(|e| format!("(kubectl logs: {e})"))
        );
    }
    for plan in &new {
        let s = sys::Step::begin(format!(
            "pod {} on {}",
            plan.key(),
            if plan.node.is_empty() {
                "?"
            } else {
                &plan.node
            }
        ));
        let meta = api.meta.get(&plan.key()).cloned().unwrap_or_default();
        match adopt_pod(lab, paths, &records, plan, &meta) {
            Ok(pod) => {
                let mut notes = Vec::new();
                for i in &pod.interfaces {
                    let ip = i.ip.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                    match &i.status {
                        IfStatus::Ready => {
                            notes.push(format!("{} {} {}", i.ifname, ip, i.kind.as_str()))
                        }
                        IfStatus::Unavailable { .. } => notes.push(format!(
                            "{} {} {} NOT AVAILABLE",
                            i.ifname,
                            ip,
                            i.kind.as_str()
                        )),
                    }
                }
                if let Some(p) = &pod.problem {
                    s.fail();
                    println!("    NOT AVAILABLE: {p}");
                } else if pod.interfaces.iter().any(|i| i.status != IfStatus::Ready) {
                    s.done(&notes.join(", "));
                    for i in &pod.interfaces {
                        if let IfStatus::Unavailable { reason } = &i.status {
                            println!("    {} NOT AVAILABLE: {reason}", i.ifname);
                        }
                    }
                } else {
                    s.done(&format!("{}; sandbox by the kubelet", notes.join(", ")));
                }
            }
            Err(e) => {
                s.fail();
                println!("    {e:#}");
            }
        }
    }
    let keys: Vec<String> = load_pod_states(paths)
        .iter()
        .filter(|p| p.problem.is_none() && new.iter().any(|n| n.key() == p.key()))
        .map(PodState::key)
        .collect();
    if !keys.is_empty() {
        let s = sys::Step::begin(format!("kubelets: {} pod(s) Ready", keys.len()));
        let waiting = wait_pods_ready(cp, &keys, POD_READY_WAIT);
        if waiting.is_empty() {
            s.done("");
        } else {
            s.fail();
            println!(
                "    not Ready within {}s: {} (kubectl describe pod)",
                POD_READY_WAIT.as_secs(),
                waiting.join(", ")
            );
        }
    }
    Ok(())
}

/// How long new pods' containers may take to become Ready once their sandboxes exist.
const POD_READY_WAIT: Duration = Duration::from_secs(120);

fn require_lab(state_dir: &Path) -> anyhow::Result<(Paths, LabState)> {
    let paths = Paths {
        root: state_dir.to_path_buf(),
    };
    match read_lab(&paths)? {
        Some(l) => Ok((paths, l)),
        None => bail!(
            "no lab is up in {} — run `ferrovn-lab up` (or `make lab`) first",
            state_dir.display()
        ),
    }
}

fn open_cluster(lab: &LabState) -> anyhow::Result<ControlPlane> {
    let Some(k) = &lab.kube else {
        bail!(
            "this lab has no Kubernetes control plane (made by an older ferrovn-lab): `ferrovn-lab down`, then `up`"
        );
    };
    ControlPlane::open(&k.dir).with_context(|| {
        format!(
            "the lab's Kubernetes control plane in {} (`ferrovn-lab down`, then `up`)",
            k.dir.display()
        )
    })
}

fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `apply -f FILE|DIR`: `kubectl apply` (the controller allocates from its watch), then the
/// new pods' sandboxes.
pub fn apply(state_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let (paths, lab) = require_lab(state_dir)?;
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let cp = open_cluster(&lab)?;
    let out = cluster::apply(&cp, path, Duration::from_secs(30))?;
    println!("kubectl apply -f {}", path.display());
    print!("{}", indented(&out));
    reconcile_pods(&lab, &paths, &cp)
}

/// `delete -f FILE|DIR`: `kubectl delete` (pods are marked for deletion), then, as the kubelet
/// does, CNI DEL of their sandboxes and the objects' final removal.
pub fn delete(state_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let (paths, lab) = require_lab(state_dir)?;
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let cp = open_cluster(&lab)?;
    let p = path.display().to_string();
    let out = cp
        .kubectl(&["delete", "-f", &p, "--wait=false", "--ignore-not-found"])
        .with_context(|| format!("kubectl delete -f {p}"))?;
    println!("kubectl delete -f {p}");
    print!("{}", indented(&out.stdout));
    reconcile_pods(&lab, &paths, &cp)?;
    // the kubelets stop the containers, CNI DEL eth0 and remove the objects
    cp.kubectl(&[
        "delete",
        "-f",
        &p,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ])
    .with_context(|| format!("waiting for the objects of {p} to go"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// status

/// One kernel ping between every pair of tunnel endpoints. OVS's userspace tunnelling learns
/// the remote endpoint's MAC by snooping ARP on br-phy; on a miss it drops the packet, sends
/// its own ARP request and installs a drop datapath flow that, in OVS 3.1, stays while the
/// flow keeps being hit — a pod pinging a remote pod every second would never get through.
/// The kernel's ARP exchange for these pings fills both nodes' caches first.
fn warm_tunnel_neighbors(nodes: &[NodeState]) {
    for a in nodes {
        for b in nodes.iter().filter(|b| b.name != a.name) {
            let _ = run_in(&a.netns, 4, "ping", ["-c1", "-W1", &b.encap_ip]);
        }
    }
}

/// A ping from inside the pod's container, as `kubectl exec` runs it (through the apiserver,
/// the egress proxy and the pod's kubelet).
fn probe(cp: &ControlPlane, pod: &PodState, ip: IpAddr, attempts: u32) -> Outcome {
    for _ in 0..attempts {
        let ok = cp
            .kubectl(&[
                "exec",
                "-n",
                &pod.namespace,
                &pod.name,
                "--request-timeout=20s",
                "--",
                "ping",
                "-c1",
                "-W1",
                &ip.to_string(),
            ])
            .is_ok();
        if ok {
            return Outcome::Reachable;
        }
    }
    Outcome::Unreachable
}

/// Prints the status tables and the connectivity matrix; returns (reachable, total).
pub fn status(state_dir: &Path) -> anyhow::Result<(usize, usize)> {
    let (paths, lab) = require_lab(state_dir)?;
    let records = Records::new(&paths.root);
    let procs = processes_by_name(&records);
    let running = |name: &str| procs.get(name).is_some_and(|(pid, m)| sys::ours(*pid, m));
    let ch = chassis(&lab.sb_remote);
    let cp = open_cluster(&lab);
    let ferrovn_pods = cp.as_ref().map(crate::pods::list).unwrap_or_default();
    // the agents' own profile decisions, as they annotated their Nodes
    let node_annotations: BTreeMap<String, BTreeMap<String, String>> = cp
        .as_ref()
        .ok()
        .and_then(|cp| cp.kubectl(&["get", "nodes", "-o", "json"]).ok())
        .and_then(|o| serde_json::from_str::<Value>(&o.stdout).ok())
        .map(|v| {
            v["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|n| {
                    let ann = n["metadata"]["annotations"]
                        .as_object()
                        .map(|a| {
                            a.iter()
                                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        ann,
                    )
                })
                .collect()
        })
        .unwrap_or_default();

    println!();
    println!("NODES");
    let rows: Vec<Vec<String>> = lab
        .nodes
        .iter()
        .map(|n| {
            let daemons = ["ovsdb-server", "ovs-vswitchd", "ovn-controller"];
            let mut down: Vec<&str> = daemons
                .iter()
                .filter(|d| !running(&format!("{d}@{}", n.name)))
                .copied()
                .collect();
            if !crate::pods::agent_ready(&ferrovn_pods, &n.name) {
                down.push("ferrovn-node pod");
            }
            let mut extra = String::new();
            if n.profile == Profile::Kernel {
                extra = if crate::pods::helper_ready(&ferrovn_pods, &n.name) {
                    ", vhost helper".into()
                } else {
                    ", vhost helper DOWN".into()
                };
            }
            // the agent's own decision (node-annotations.json), when this agent publishes it
            let agent = node_annotations.get(&n.name).cloned().unwrap_or_default();
            let (profile, reason) = match agent.get(ferrovn_dataplane::profile::PROFILE_ANNOTATION)
            {
                Some(p) if p != n.profile.as_str() => (
                    format!("{p} (agent)"),
                    format!(
                        "agent: {}; lab: {}",
                        agent
                            .get(ferrovn_dataplane::profile::PROFILE_MESSAGE_ANNOTATION)
                            .cloned()
                            .unwrap_or_default(),
                        n.reason
                    ),
                ),
                Some(_) => (
                    n.profile.as_str().to_string(),
                    format!(
                        "{} [agent: {}]",
                        n.reason,
                        agent
                            .get(ferrovn_dataplane::profile::PROFILE_REASON_ANNOTATION)
                            .cloned()
                            .unwrap_or_default()
                    ),
                ),
                None => (n.profile.as_str().to_string(), n.reason.clone()),
            };
            vec![
                n.name.clone(),
                profile,
                reason,
                n.encap_ip.clone(),
                if ch.contains(&n.name) {
                    "yes".into()
                } else {
                    "NO".into()
                },
                if down.is_empty() {
                    format!("all up{extra}")
                } else {
                    format!("DOWN: {}{extra}", down.join(", "))
                },
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(
            &[
                "node",
                "profile",
                "reason",
                "geneve ip",
                "chassis",
                "daemons"
            ],
            &rows
        )
    );
    let controllers = ferrovn_pods
        .iter()
        .filter(|p| p.name.starts_with("ferrovn-controller-") && p.ready)
        .count();
    println!(
        "central: NB {}{}, ovn-northd {}, controller pods Ready: {controllers}",
        lab.nb_remote,
        lab.nb_tcp
            .map(|p| format!(" (tcp:127.0.0.1:{p})"))
            .unwrap_or_default(),
        if running("ovn-northd") { "up" } else { "DOWN" },
    );

    // where each component runs: FerrOVN's own as the kubelets' pods, OVS/OVN as processes
    println!();
    println!("FERROVN PODS (kubectl -n kube-system get pods)");
    let rows: Vec<Vec<String>> = ferrovn_pods
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.node.clone(),
                p.phase.clone(),
                if p.ready { "yes" } else { "NO" }.into(),
                p.restarts.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["pod", "node", "phase", "ready", "restarts"], &rows)
    );
    println!(
        "{}",
        crate::pods::COMPONENTS
            .iter()
            .map(|(c, w)| format!("  {c}: {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // the cluster as kubectl shows it: Nodes, Subnets (our printer columns, the controller's
    // address counts) and IPs, and the pods with the status the lab wrote as their kubelet
    println!();
    println!("CLUSTER");
    match &cp {
        Ok(cp) => print!("{}", cluster::describe(cp)),
        Err(e) => println!("  Kubernetes control plane DOWN: {e:#}"),
    }

    // pods
    let pods = load_pod_states(&paths);
    println!();
    println!("PODS");
    // Ready as the pods' kubelets report it
    let ready = cp.as_ref().map(pods_ready).unwrap_or_default();
    let mut rows = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let pod_ready = ready.get(&p.key()).copied().unwrap_or(false);
        if p.interfaces.is_empty() {
            rows.push(vec![
                format!("{}", i + 1),
                p.key(),
                p.node.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("NOT AVAILABLE: {}", p.problem.clone().unwrap_or_default()),
            ]);
        }
        for (j, f) in p.interfaces.iter().enumerate() {
            let state = match &f.status {
                IfStatus::Ready => {
                    if !pod_ready {
                        "pod not Ready (kubectl describe pod)".to_string()
                    } else if f.kind != IfKind::Veth {
                        "ready (testpmd io, dtap0)".to_string()
                    } else {
                        "ready".to_string()
                    }
                }
                IfStatus::Unavailable { reason } => {
                    // the full reason is printed under the matrix
                    let short: String = reason.chars().take(60).collect();
                    if short.len() < reason.len() {
                        format!("NOT AVAILABLE: {short}...")
                    } else {
                        format!("NOT AVAILABLE: {short}")
                    }
                }
            };
            rows.push(vec![
                if j == 0 {
                    format!("{}", i + 1)
                } else {
                    String::new()
                },
                if j == 0 { p.key() } else { String::new() },
                if j == 0 {
                    p.node.clone()
                } else {
                    String::new()
                },
                f.ifname.clone(),
                f.ip.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                f.kind.as_str().to_string(),
                state,
            ]);
        }
    }
    print!(
        "{}",
        render_table(&["#", "pod", "node", "if", "ip", "kind", "state"], &rows)
    );

    // connectivity
    // A pod's ADD returns once its own node installed its port; the other node learns the
    // new port from the SB a little later (seconds, when the DPDK node's PMD and testpmd share
    // the two cores with ovn-controller). Probe the steady state: every chassis caught up.
    if let Err(e) = run(
        20,
        "ovn-nbctl",
        [
            &format!("--db={}", lab.nb_remote),
            "--wait=hv",
            "--timeout=15",
            "sync",
        ],
    ) {
        println!("(not every chassis caught up with OVN within 15 s: {e})");
    }
    warm_tunnel_neighbors(&lab.nodes);
    let plan = probe_plan(&pods);
    let mut results = BTreeMap::new();
    for pair in &plan.pairs {
        let src = &pods[pair.from];
        let outcome = match &cp {
            Ok(cp) => probe(cp, src, pair.to_ip, 3),
            Err(_) => Outcome::Unreachable,
        };
        results.insert((pair.from, pair.to), outcome);
    }
    println!();
    println!(
        "CONNECTIVITY (kubectl exec ... ping from kernel pods; DPDK pods answer from dtap0 through testpmd)"
    );
    print!("{}", render_matrix(&pods, &plan, &results));
    let reachable = results
        .values()
        .filter(|o| **o == Outcome::Reachable)
        .count();
    let total = plan.pairs.len();
    for (key, reason) in &plan.unavailable {
        println!("not available: {key}: {reason}");
    }
    if plan.left_out_pairs > 0 {
        println!(
            "{} pod pair(s) not counted: their pods are not available (above)",
            plan.left_out_pairs
        );
    }
    // the node and outside rows are their own table; the pod pairs' summary stays the last line
    crate::outside::print_rows(&lab, &pods, &node_annotations);
    crate::services::print_rows(&lab, &pods, cp.as_ref().ok());
    println!("{}", summary_line(reachable, total));
    Ok((reachable, total))
}

// ---------------------------------------------------------------------------------------------
// down

/// What `down` removed, and anything it could not.
#[derive(Debug, Default)]
pub struct DownReport {
    pub processes: usize,
    pub netns: usize,
    pub mounts: usize,
    pub hugepages: Option<String>,
    pub leftovers: Vec<String>,
}

pub fn down(state_dir: &Path, keep_state: bool) -> anyhow::Result<DownReport> {
    let paths = Paths {
        root: state_dir.to_path_buf(),
    };
    let mut rep = DownReport::default();
    if !paths.root.exists() {
        println!("no lab in {}: nothing to do", paths.root.display());
        return Ok(rep);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("ferrovn-lab down must run as root");
    }
    let records = Records::new(&paths.root);
    let (all, bad) = records.all();
    for b in bad {
        println!("  warning: unreadable record {b}");
    }
    let lab = read_lab(&paths).ok().flatten();

    // 1. pods: the attachments' CNI DEL while the agents still run (ports, bind mounts)
    if let Some(lab) = &lab {
        let pods = load_pod_states(&paths);
        if !pods.is_empty() {
            let s = sys::Step::begin(format!("{} pod(s): attachments' CNI DEL", pods.len()));
            for p in &pods {
                delete_pod(lab, &paths, p, None);
            }
            s.done("");
        }
    }
    // 2. the kubelets, every sandbox through the CRI (the kubelets' CNI DEL reaches the agents,
    // which are the nodes' daemons and stop next), containerd, what is left in the nodes'
    // cgroups; their mounts go with their mount namespaces
    for r in all.iter().rev() {
        if let Resource::KubeletNode { dir } = r {
            let s = sys::Step::begin(format!("kubelet node {}", dir.display()));
            match KubeletNode::stop_persistent(dir) {
                Ok(k) => {
                    rep.processes += k.processes;
                    rep.leftovers.extend(k.leftovers.iter().cloned());
                    s.done(&format!(
                        "{} processes{}",
                        k.processes,
                        if k.sandboxes_removed {
                            ", sandboxes removed"
                        } else {
                            ""
                        }
                    ));
                }
                Err(e) => {
                    s.fail();
                    rep.leftovers
                        .push(format!("kubelet node in {}: {e}", dir.display()));
                }
            }
        }
    }
    let s = sys::Step::begin("daemons");
    let procs: Vec<(String, u32, String, bool)> = all
        .iter()
        .filter_map(|r| match r {
            Resource::Process {
                name,
                pid,
                marker,
                interrupt,
            } => Some((name.clone(), *pid, marker.clone(), *interrupt)),
            _ => None,
        })
        .collect();
    let is_ovs = |n: &str| n.starts_with("ovsdb-server") || n.starts_with("ovs-vswitchd");
    // 2. everything but OVS itself (ovn-controller would re-create br-int)
    for (name, pid, m, int) in procs.iter().rev() {
        if !is_ovs(name) && sys::stop_process(*pid, m, *int, Duration::from_secs(5)) {
            rep.processes += 1;
        }
    }
    // the Kubernetes control plane, once nothing talks to it any more: by its PID files
    for r in all.iter().rev() {
        if let Resource::KubeControlPlane { dir } = r {
            match ControlPlane::stop_persistent(dir) {
                Ok(k) => rep.processes += k.stopped.len(),
                Err(e) => rep.leftovers.push(format!(
                    "Kubernetes control plane in {}: {e}",
                    dir.display()
                )),
            }
        }
    }
    // 3. bridges through vswitchd, which then exits removing its datapath taps
    for r in all.iter().rev() {
        if let Resource::Vswitchd { db, ctl } = r
            && ctl.exists()
        {
            let _ = run(
                10,
                "ovs-vsctl",
                [
                    &format!("--db={db}"),
                    "--timeout=5",
                    "--",
                    "--if-exists",
                    "del-br",
                    "br-int",
                    "--",
                    "--if-exists",
                    "del-br",
                    "br-phy",
                ],
            );
            let _ = run(
                10,
                "ovs-appctl",
                ["-t", &ctl.display().to_string(), "exit", "--cleanup"],
            );
        }
    }
    for (name, pid, m, int) in procs.iter().rev() {
        if is_ovs(name) && sys::stop_process(*pid, m, *int, Duration::from_secs(5)) {
            rep.processes += 1;
        }
    }
    s.done(&format!("{} stopped", rep.processes));

    let s = sys::Step::begin("namespaces, links, mounts, hugepages");
    for r in all.iter().rev() {
        if let Resource::Link { netns, name } = r {
            let _ = run(10, "ip", ["-n", netns, "link", "del", name]);
        }
    }
    for r in all.iter().rev() {
        if let Resource::Netns { name } = r
            && sys::netns_list().contains(name)
        {
            if run(10, "ip", ["netns", "del", name]).is_ok() {
                rep.netns += 1;
            } else {
                rep.leftovers.push(format!("netns {name}"));
            }
        }
    }
    // DPDK runtime dirs and hugepage files of our prefixes
    for r in &all {
        if let Resource::DpdkPrefix { prefix } = r {
            let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
        }
    }
    let mut mounts: Vec<PathBuf> = sys::mounts_under(&paths.root);
    for r in &all {
        if let Resource::Mount { path } = r
            && !mounts.contains(path)
            && sys::mounts_under(path).contains(path)
        {
            mounts.push(path.clone());
        }
    }
    for m in mounts {
        let ms = m.display().to_string();
        if run(10, "umount", [&ms]).is_ok() || run(10, "umount", ["-l", &ms]).is_ok() {
            rep.mounts += 1;
        } else {
            rep.leftovers.push(format!("mount {ms}"));
        }
    }
    // newest first: the raises are undone like a stack
    for r in all.iter().rev() {
        if let Resource::Hugepages { original, set_to } = r {
            let now = sys::read_u64("/proc/sys/vm/nr_hugepages").unwrap_or(0);
            if now == *set_to {
                match std::fs::write("/proc/sys/vm/nr_hugepages", original.to_string()) {
                    Ok(()) => rep.hugepages = Some(format!("nr_hugepages {set_to} -> {original}")),
                    Err(e) => rep
                        .leftovers
                        .push(format!("nr_hugepages not restored to {original}: {e}")),
                }
            } else {
                rep.hugepages = Some(format!(
                    "nr_hugepages left at {now}: changed by someone else since the lab set {set_to} (was {original})"
                ));
            }
        }
        if let Resource::Cgroup { path } = r {
            // its processes are gone; a cgroup dir is removed with rmdir
            let _ = wait_until(Duration::from_secs(3), || {
                std::fs::remove_dir(path).is_ok() || !path.exists()
            });
            if path.exists() {
                rep.leftovers.push(format!("cgroup {}", path.display()));
            }
        }
    }
    s.done(&format!(
        "{} namespaces, {} mounts{}",
        rep.netns,
        rep.mounts,
        rep.hugepages
            .as_ref()
            .map(|h| format!(", {h}"))
            .unwrap_or_default()
    ));
    // anything still alive?
    for (name, pid, m, _) in &procs {
        if sys::ours(*pid, m) {
            rep.leftovers.push(format!("process {name} (pid {pid})"));
        }
    }
    if rep.leftovers.is_empty() && !keep_state {
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("removing {}", paths.root.display()))?;
    } else if !rep.leftovers.is_empty() {
        println!("  could not remove: {}", rep.leftovers.join("; "));
        println!("  (state kept in {}; run down again)", paths.root.display());
    }
    Ok(rep)
}
