//! DPDK pods (dpdk-testpmd, interactive, driven over stdin): the raw vhost <-> virtio baseline
//! with no switch, and vhost-user pods through OVS-DPDK + OVN on one node.
//!
//! Rates are read from testpmd's own `show port stats all` (Rx-pps), once per second: each
//! 1 s window is a sample.

use super::Ctx;
use crate::model::Measurement;
use anyhow::{Context, Result, bail};
use ferrovn_testkit::dpdk::{DpdkRuntimeDir, HugepageLease};
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovs_paths::vswitchd_dpdk;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// Memory of the DPDK processes of a run: a private hugetlbfs (leased pages) or `--no-huge`.
pub enum Memory {
    Huge(HugepageLease),
    NoHuge,
}

impl Memory {
    /// Leases `pages` 2 MiB pages (0 = `--no-huge`); falls back to `--no-huge` with a note.
    pub fn acquire(name: &str, pages: u64, dir: &Path) -> (Memory, Option<String>) {
        if pages == 0 {
            return (Memory::NoHuge, None);
        }
        match HugepageLease::acquire(name, pages, dir) {
            Ok(l) => (Memory::Huge(l), None),
            Err(e) => (
                Memory::NoHuge,
                Some(format!("no hugepages ({e}); --no-huge")),
            ),
        }
    }

    fn eal(&self, mib: u32) -> Vec<String> {
        match self {
            Memory::Huge(l) => vec![
                format!("--huge-dir={}", l.mount().display()),
                "-m".into(),
                mib.to_string(),
                // vhost-user shares at most 8 memory regions
                "--single-file-segments".into(),
            ],
            Memory::NoHuge => vec!["--no-huge".into(), "-m".into(), mib.to_string()],
        }
    }

    fn huge_dir(&self) -> Option<&Path> {
        match self {
            Memory::Huge(l) => Some(l.mount()),
            Memory::NoHuge => None,
        }
    }
}

/// One interactive testpmd, stopped by PID on drop (SIGINT, 3 s, SIGKILL) with its hugepage
/// map files and /var/run/dpdk/<prefix> removed.
pub struct Tpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    prefix: String,
    huge_dir: Option<PathBuf>,
    log: PathBuf,
}

impl Tpmd {
    pub fn start(
        prefix: &str,
        mem: &Memory,
        cpu: u32,
        vdevs: &[String],
        app: &[String],
        log: &Path,
    ) -> Result<Self> {
        // line-buffered stdout: the stats are read from the log while it runs
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd"])
            .arg(format!("--file-prefix={prefix}"))
            .args(mem.eal(256))
            .args(["--iova-mode=va", "--no-pci", "--log-level=lib.eal:error"])
            .arg(format!("--lcores=0@{cpu},1@{cpu}"));
        for v in vdevs {
            cmd.arg(format!("--vdev={v}"));
        }
        cmd.args(["--", "-i", "--nb-cores=1", "--total-num-mbufs=16384"])
            .args(app);
        let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        // SAFETY: only async-signal-safe work (one prctl) between fork and exec
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting dpdk-testpmd")?;
        let stdin = child.stdin.take();
        Ok(Tpmd {
            child,
            stdin,
            prefix: prefix.into(),
            huge_dir: mem.huge_dir().map(Path::to_path_buf),
            log: log.to_path_buf(),
        })
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        let s = self.stdin.as_mut().context("testpmd stdin closed")?;
        writeln!(s, "{line}").context("writing to testpmd")?;
        s.flush()?;
        Ok(())
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the prompt appeared (ports started) or the process died.
    pub fn wait_prompt(&mut self, timeout: Duration) -> Result<()> {
        let ok = wait_until(timeout, || {
            self.log_text().contains("testpmd>") || !matches!(self.child.try_wait(), Ok(None))
        });
        if !matches!(self.child.try_wait(), Ok(None)) {
            bail!("testpmd {} exited: {}", self.prefix, tail(&self.log_text()));
        }
        if !ok {
            bail!(
                "testpmd {} not ready in {timeout:?}: {}",
                self.prefix,
                tail(&self.log_text())
            );
        }
        Ok(())
    }

    /// `n` one-second windows of the summed `Rx-pps` of all ports, in Mpps (a throwaway
    /// `show port stats all` first: its rate covers the time since the previous one).
    pub fn rx_windows(&mut self, n: u32) -> Result<Vec<f64>> {
        self.send("show port stats all")?;
        for _ in 0..n {
            std::thread::sleep(Duration::from_secs(1));
            self.send("show port stats all")?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let all = rx_pps_per_show(&self.log_text());
        let k = all.len().min(n as usize);
        Ok(all[all.len() - k..].iter().map(|p| p / 1e6).collect())
    }

    pub fn stop(&mut self) {
        let _ = self.send("stop");
        let _ = self.send("quit");
        drop(self.stdin.take());
        let exited = wait_until(Duration::from_secs(2), || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if !exited {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            if !wait_until(Duration::from_secs(3), || {
                !matches!(self.child.try_wait(), Ok(None))
            }) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let Some(dir) = &self.huge_dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let start = format!("{}map_", self.prefix);
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&start) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

impl Drop for Tpmd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" / ")
}

/// Per `show port stats all` output: the sum of `Rx-pps` over its ports. Each output starts
/// with port 0's block.
pub fn rx_pps_per_show(text: &str) -> Vec<f64> {
    text.split("NIC statistics for port 0 ")
        .skip(1)
        .filter_map(|chunk| {
            let v: Vec<f64> = chunk
                .lines()
                .filter_map(|l| {
                    let rest = l.trim().strip_prefix("Rx-pps:")?;
                    rest.split_whitespace().next()?.parse().ok()
                })
                .collect();
            (!v.is_empty()).then(|| v.iter().sum())
        })
        .collect()
}

fn windows(ctx: &Ctx) -> u32 {
    (ctx.cfg.duration_secs.round() as u32)
        .max(ctx.cfg.repetitions)
        .max(1)
}

/// Baseline: testpmd net_vhost (rxonly) <- testpmd net_virtio_user (txonly), no switch, one
/// core each.
pub fn run_raw(ctx: &mut Ctx) -> Result<()> {
    let tag = ctx.tag.clone();
    let (rx_cpu, tx_cpu) = (ctx.cfg.cores.testpmd[0], ctx.cfg.cores.pmd[0]);
    ctx.progress.step(&format!(
        "raw-testpmd: vhost rxonly (cpu{rx_cpu}) <- virtio_user txonly (cpu{tx_cpu})"
    ));
    let (mem, mem_note) = Memory::acquire(
        &format!("perf-raw-{tag}"),
        ctx.cfg.hugepages_2m.min(256),
        &std::env::temp_dir().join(format!("fvp-{tag}-huge-raw")),
    );
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("raw.sock");
    let logs = ctx.logs.clone();
    let mut vhost = Tpmd::start(
        &format!("fvp-{tag}-rawv"),
        &mem,
        rx_cpu,
        &[format!("net_vhost0,iface={},queues=1", sock.display())],
        &["--forward-mode=rxonly".into()],
        &logs.join("raw-vhost.log"),
    )?;
    vhost.wait_prompt(Duration::from_secs(20))?;
    vhost.send("start")?;
    let mut virtio = Tpmd::start(
        &format!("fvp-{tag}-rawu"),
        &mem,
        tx_cpu,
        &[format!("net_virtio_user0,path={},queues=1", sock.display())],
        &["--forward-mode=txonly".into()],
        &logs.join("raw-virtio.log"),
    )?;
    virtio.wait_prompt(Duration::from_secs(20))?;
    let note = mem_note.unwrap_or_else(|| {
        if matches!(mem, Memory::Huge(_)) {
            "hugepages".into()
        } else {
            "--no-huge".into()
        }
    });
    let frames = ctx.cfg.frame_sizes.clone();
    for frame in frames {
        ctx.progress.step(&format!("raw-testpmd: {frame} B"));
        let m = Measurement::new("raw-testpmd", "same-node", "testpmd", Some(frame), "Mpps")
            .as_baseline()
            .cores(2)
            .note(format!("no switch: the machine's ceiling; {note}"));
        let r = (|| -> Result<Vec<f64>> {
            virtio.send("stop")?;
            virtio.send(&format!("set txpkts {frame}"))?;
            virtio.send("start")?;
            std::thread::sleep(Duration::from_secs_f64(ctx.cfg.warmup_secs + 0.5));
            vhost.rx_windows(windows(ctx))
        })();
        ctx.push(match r {
            Ok(s) => m.with_samples(s),
            Err(e) => m.failed(e),
        });
    }
    drop(virtio);
    drop(vhost);
    drop(mem);
    Ok(())
}

const MAC1: &str = "0a:58:0a:11:00:15";
const MAC2: &str = "0a:58:0a:11:00:16";

/// FerrOVN DPDK pods: one OVS-DPDK node (testbed: own netns, ovsdb-server,
/// ovs-vswitchd-dpdk, ovn-controller) with two vhost-user ports on an OVN logical switch; one
/// testpmd with both virtio_user ports (5tswap, loop topology) keeps a few bursts circulating
/// pod -> OVS -> pod; the rate is packets crossing OVS per second.
pub fn run_ovs(ctx: &mut Ctx) -> Result<()> {
    let tag = ctx.tag.clone();
    let (pod_cpu, pmd_cpu) = (ctx.cfg.cores.testpmd[0], ctx.cfg.cores.pmd[0]);
    let cross_reason = if ctx.cfg.cores.pmd.len() < 2 || ctx.cfg.cores.testpmd.len() < 2 {
        "two OVS-DPDK nodes need a PMD core each plus testpmd cores (>= 3 busy pollers); this config budgets one PMD and one testpmd core"
    } else {
        "cross-node DPDK needs the NIC underlay of a deployed fabric; not automated in this harness yet"
    };
    for &frame in &ctx.cfg.frame_sizes.clone() {
        ctx.push(
            Measurement::new("ovs-dpdk", "cross-node", "testpmd", Some(frame), "Mpps")
                .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
                .unavailable(cross_reason),
        );
    }
    ctx.push(
        Measurement::new("ovs-dpdk", "same-node", "latency", None, "us").unavailable(
            "testpmd 22.11 gives no per-packet latency samples in these forwarding modes (--latencystats keeps only a running average); not collected yet",
        ),
    );
    if !vswitchd_dpdk().exists() {
        for &frame in &ctx.cfg.frame_sizes.clone() {
            ctx.push(
                Measurement::new("ovs-dpdk", "same-node", "testpmd", Some(frame), "Mpps")
                    .unavailable(format!(
                        "{} missing (openvswitch-switch-dpdk)",
                        vswitchd_dpdk().display()
                    )),
            );
        }
        return Ok(());
    }
    ctx.progress.step(&format!(
        "ovs-dpdk: OVN central + OVS-DPDK node (PMD cpu{pmd_cpu})"
    ));
    let huge = std::env::temp_dir().join(format!("fvp-{tag}-huge-ovs"));
    let (mem, mem_note) = Memory::acquire(&format!("perf-ovs-{tag}"), ctx.cfg.hugepages_2m, &huge);
    let ovs_prefix = format!("fvp-{tag}-ovs");
    let _rt = DpdkRuntimeDir::new(&ovs_prefix);
    let mut oc: Vec<(String, String)> = vec![
        ("dpdk-init".into(), "true".into()),
        ("pmd-cpu-mask".into(), format!("0x{:x}", 1u64 << pmd_cpu)),
    ];
    // The node agent turns userspace TSO on for every userspace-datapath node (kernel pods on a
    // DPDK node need it); FERROVN_PERF_USERSPACE_TSO=false measures the vhost-user path without
    // it, as OVS 3.1 nodes ran (their Geneve path broke with it), for before/after comparisons.
    if let Ok(v) = std::env::var("FERROVN_PERF_USERSPACE_TSO") {
        oc.push(("userspace-tso-enable".into(), v));
    }
    match &mem {
        Memory::Huge(l) => {
            oc.push(("dpdk-socket-mem".into(), "512".into()));
            oc.push(("dpdk-socket-limit".into(), "512".into()));
            oc.push((
                "dpdk-extra".into(),
                format!(
                    "--huge-dir={} --file-prefix={ovs_prefix} --iova-mode=va --no-pci",
                    l.mount().display()
                ),
            ));
        }
        Memory::NoHuge => {
            oc.push(("per-port-memory".into(), "true".into()));
            oc.push((
                "dpdk-extra".into(),
                format!("--no-huge --legacy-mem -m 1024 --file-prefix={ovs_prefix} --iova-mode=va --no-pci"),
            ));
        }
    }
    let central = OvnCentral::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = NodeConfig {
        name: format!("fvp-{tag}-dpdk"),
        vswitchd: vswitchd_dpdk(),
        other_config: oc,
    };
    let mut node =
        Node::start(&format!("fvp-{tag}-dn"), &cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inited = wait_until(Duration::from_secs(30), || {
        node.vsctl(["get", "Open_vSwitch", ".", "dpdk_initialized"])
            .map(|s| s.trim() == "true")
            .unwrap_or(false)
    });
    if !inited {
        bail!("ovs-vswitchd-dpdk did not initialize DPDK in 30 s");
    }
    node.configure_ovn_with_vsctl(&central.sb_remote())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    node.start_ovn_controller()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let nb = |a: &[&str]| central.nbctl(a).map_err(|e| anyhow::anyhow!("{e}"));
    nb(&[
        "ls-add",
        "lsd",
        "--",
        "lsp-add",
        "lsd",
        "pod1",
        "--",
        "lsp-set-addresses",
        "pod1",
        &format!("{MAC1} 10.17.0.21"),
        "--",
        "lsp-add",
        "lsd",
        "pod2",
        "--",
        "lsp-set-addresses",
        "pod2",
        &format!("{MAC2} 10.17.0.22"),
    ])?;
    let dir = tempfile::tempdir()?;
    let (s1, s2) = (dir.path().join("vhu1.sock"), dir.path().join("vhu2.sock"));
    node.vsctl([
        "add-port".to_string(),
        "br-int".into(),
        "vhu1".into(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        "vhu1".into(),
        "type=dpdkvhostuserclient".into(),
        format!("options:vhost-server-path={}", s1.display()),
        "external_ids:iface-id=pod1".into(),
        "--".into(),
        "add-port".into(),
        "br-int".into(),
        "vhu2".into(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        "vhu2".into(),
        "type=dpdkvhostuserclient".into(),
        format!("options:vhost-server-path={}", s2.display()),
        "external_ids:iface-id=pod2".into(),
    ])
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    nb(&["--wait=hv", "--timeout=60", "sync"])?;
    let note = mem_note.unwrap_or_else(|| {
        if matches!(mem, Memory::Huge(_)) {
            "hugepages".into()
        } else {
            "--no-huge".into()
        }
    });
    let logs = ctx.logs.clone();
    for &frame in &ctx.cfg.frame_sizes.clone() {
        ctx.progress.step(&format!(
            "ovs-dpdk: {frame} B pod -> OVS-DPDK -> pod (testpmd cpu{pod_cpu}, PMD cpu{pmd_cpu})"
        ));
        let m = Measurement::new("ovs-dpdk", "same-node", "testpmd", Some(frame), "Mpps")
            .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
            .cores(2)
            .note(format!(
                "OVN logical switch; rate = packets crossing OVS (both directions); {note}"
            ));
        let r = (|| -> Result<Vec<f64>> {
            let mut pod = Tpmd::start(
                &format!("fvp-{tag}-pvp"),
                &mem,
                pod_cpu,
                &[
                    format!(
                        "net_virtio_user0,path={},server=1,queues=1,mac={MAC1}",
                        s1.display()
                    ),
                    format!(
                        "net_virtio_user1,path={},server=1,queues=1,mac={MAC2}",
                        s2.display()
                    ),
                ],
                &[
                    "--forward-mode=5tswap".into(),
                    "--port-topology=loop".into(),
                    format!("--eth-peer=0,{MAC2}"),
                    format!("--eth-peer=1,{MAC1}"),
                    "--tx-ip=10.17.0.21,10.17.0.22".into(),
                    format!("--txpkts={frame}"),
                ],
                &logs.join(format!("ovs-dpdk-{frame}.log")),
            )?;
            pod.wait_prompt(Duration::from_secs(30))?;
            let up = wait_until(Duration::from_secs(15), || {
                ["vhu1", "vhu2"].iter().all(|i| {
                    node.vsctl(["get", "Interface", i, "link_state"])
                        .map(|s| s.trim() == "up")
                        .unwrap_or(false)
                })
            });
            if !up {
                bail!("vhost-user ports did not come up");
            }
            std::thread::sleep(Duration::from_millis(500));
            pod.send("start tx_first 8")?;
            std::thread::sleep(Duration::from_secs_f64(ctx.cfg.warmup_secs + 0.5));
            pod.rx_windows(windows(ctx))
        })();
        ctx.push(match r {
            Ok(s) => m.with_samples(s),
            Err(e) => m.failed(e),
        });
    }
    let _ = node.vsctl([
        "--if-exists",
        "del-port",
        "br-int",
        "vhu1",
        "--",
        "--if-exists",
        "del-port",
        "br-int",
        "vhu2",
    ]);
    drop(node);
    drop(central);
    drop(mem);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rx_pps_per_show;

    #[test]
    fn rx_pps_sums_ports_per_show() {
        let t = "testpmd> \n  ######################## NIC statistics for port 0  ########################\n  RX-packets: 5\n  Throughput (since last show)\n  Rx-pps:       100          Rx-bps: 0\n  Tx-pps:       7\n  ######################## NIC statistics for port 1  ########################\n  Rx-pps:       50\ntestpmd> \n  ######################## NIC statistics for port 0  ########################\n  Rx-pps:  3\n";
        assert_eq!(rx_pps_per_show(t), vec![150.0, 3.0]);
        assert!(rx_pps_per_show("nothing").is_empty());
    }
}
