//! The DPDK profile's test infrastructure: hugepages shared safely with
//! concurrent tests, a private hugetlbfs mount, a shared-propagation directory for vhost-user
//! bind mounts, and `dpdk-testpmd` "pods" stopped by PID.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::netns::Netns;
use crate::wait::wait_until;

/// The flock'ed refcount file every FerrOVN test shares to raise and restore 2 MiB hugepages.
pub const HUGEPAGE_LOCK_FILE: &str = "/run/ferrovn-test-hugepages.lock";
const NR_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
const FREE_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";

#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseState {
    /// `nr_hugepages` before the first live lease.
    orig: u64,
    /// lease id (`<pid>:<name>`) → pages
    leases: BTreeMap<String, u64>,
    /// What we last wrote to `nr_hugepages`; if the count differs at release, somebody else
    /// changed it meanwhile and we leave it alone.
    #[serde(default)]
    set_to: Option<u64>,
}

fn read_count(path: &str) -> Result<u64, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{path}: {e}"))
}

fn write_count(path: &str, n: u64) -> Result<(), String> {
    std::fs::write(path, n.to_string()).map_err(|e| format!("writing {n} to {path}: {e}"))
}

fn pid_alive(lease_id: &str) -> bool {
    lease_id
        .split(':')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Runs `f` on the lease state under an exclusive flock of [`HUGEPAGE_LOCK_FILE`].
fn with_state<R>(f: impl FnOnce(&mut LeaseState) -> Result<R, String>) -> Result<R, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(HUGEPAGE_LOCK_FILE)
        .map_err(|e| format!("{HUGEPAGE_LOCK_FILE}: {e}"))?;
    let mut locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("flock {HUGEPAGE_LOCK_FILE}: {e}"))?;
    let mut body = String::new();
    locked
        .read_to_string(&mut body)
        .map_err(|e| format!("read {HUGEPAGE_LOCK_FILE}: {e}"))?;
    let mut state: LeaseState = serde_json::from_str(&body).unwrap_or_default();
    // leases of processes that died without releasing
    state.leases.retain(|id, _| pid_alive(id));
    if state.leases.is_empty() {
        state.orig = read_count(NR_2M)?;
        state.set_to = None;
    }
    let out = f(&mut state);
    let json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    locked.set_len(0).map_err(|e| e.to_string())?;
    locked.rewind().map_err(|e| e.to_string())?;
    locked.write_all(&json).map_err(|e| e.to_string())?;
    out
}

/// The kernel raises `nr_hugepages` only as far as it finds free 2 MiB blocks; on a machine
/// that has been building for hours memory is fragmented and a DPDK test would fail for want of
/// pages that are there. Compact memory (and, if that is not enough, drop clean page cache
/// first) and ask again. Returns the free count after the retry.
fn defragment_and_retry(target: u64) -> Result<u64, String> {
    for step in [
        &["/proc/sys/vm/compact_memory"][..],
        &["/proc/sys/vm/drop_caches", "/proc/sys/vm/compact_memory"],
    ] {
        for knob in step {
            std::fs::write(knob, "1").map_err(|e| format!("write 1 to {knob}: {e}"))?;
        }
        write_count(NR_2M, target)?;
        if read_count(NR_2M)? >= target {
            break;
        }
    }
    read_count(FREE_2M)
}

/// `pages` 2 MiB hugepages reserved for this test: `nr_hugepages` is raised to the original
/// count plus all live leases, and back to the original when the last lease ends. Also
/// mounts a private hugetlbfs (pagesize=2M) at `mount`, removed on drop with any files in it.
#[derive(Debug)]
pub struct HugepageLease {
    id: String,
    mount: PathBuf,
}

impl HugepageLease {
    pub fn acquire(name: &str, pages: u64, mount: &Path) -> Result<Self, String> {
        let id = format!("{}:{name}", std::process::id());
        with_state(|st| {
            st.leases.insert(id.clone(), pages);
            let target = st.orig + st.leases.values().sum::<u64>();
            let cur = read_count(NR_2M)?;
            if cur < target {
                write_count(NR_2M, target)?;
                st.set_to = Some(target);
            }
            let mut free = read_count(FREE_2M)?;
            if free < pages && cur < target {
                free = defragment_and_retry(target)?;
            }
            if free < pages {
                st.leases.remove(&id);
                let back = st.orig + st.leases.values().sum::<u64>();
                let _ = write_count(NR_2M, back.max(cur));
                return Err(format!(
                    "only {free} free 2 MiB hugepages after raising nr_hugepages to {target} (needed {pages})"
                ));
            }
            Ok(())
        })?;
        let lease = HugepageLease {
            id,
            mount: mount.to_path_buf(),
        };
        std::fs::create_dir_all(mount).map_err(|e| format!("mkdir {}: {e}", mount.display()))?;
        nix::mount::mount(
            Some("nodev"),
            mount,
            Some("hugetlbfs"),
            nix::mount::MsFlags::empty(),
            Some("pagesize=2M"),
        )
        .map_err(|e| format!("mount hugetlbfs at {}: {e}", mount.display()))?;
        Ok(lease)
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }
}

impl Drop for HugepageLease {
    fn drop(&mut self) {
        // files left by DPDK processes hold pages
        if let Ok(entries) = std::fs::read_dir(&self.mount) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mount);
        let _ = with_state(|st| {
            st.leases.remove(&self.id);
            let target = st.orig + st.leases.values().sum::<u64>();
            let cur = read_count(NR_2M)?;
            if st.set_to == Some(cur) && cur != target {
                write_count(NR_2M, target)?;
                st.set_to = Some(target);
            }
            Ok(())
        });
    }
}

/// A directory bind-mounted onto itself with SHARED propagation, so mounts made under it in
/// this mount namespace also appear in namespaces cloned from it earlier (`ip netns exec`
/// gives each daemon a slave copy): the vhost-user bind mounts reach a running ovs-vswitchd.
#[derive(Debug)]
pub struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    pub fn create(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let d = SharedDir {
            path: path.to_path_buf(),
        };
        nix::mount::mount(
            Some(path),
            path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {}: {e}", path.display()))?;
        nix::mount::mount(
            None::<&str>,
            path,
            None::<&str>,
            nix::mount::MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(|e| format!("make-shared {}: {e}", path.display()))?;
        Ok(d)
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // lazy unmount detaches the whole tree (also bind mounts a failed test left below)
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `/var/run/dpdk/<prefix>` of a DPDK process we start (OVS creates it even with
/// `--in-memory`), removed on drop.
#[derive(Debug)]
pub struct DpdkRuntimeDir {
    path: PathBuf,
}

impl DpdkRuntimeDir {
    pub fn new(prefix: &str) -> Self {
        DpdkRuntimeDir {
            path: Path::new("/var/run/dpdk").join(prefix),
        }
    }
}

impl Drop for DpdkRuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Whether `path` is a mount point in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let want = path.display().to_string().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// The hugepages of a DPDK test (a [`HugepageLease`]), or, when they cannot be had, its loud
/// `--no-huge` fallback ([`crate::require::fallback`]: a failure under
/// `FERROVN_REQUIRE_ALL=1`).
#[derive(Debug)]
pub struct TestMemory {
    lease: Option<HugepageLease>,
}

impl TestMemory {
    /// `pages` 2 MiB pages for `test` under lease `name`, mounted at `mount`; `what` names the
    /// fallback (e.g. "OVS-DPDK and testpmd with --no-huge").
    pub fn acquire(test: &str, name: &str, pages: u64, mount: &Path, what: &str) -> Self {
        match HugepageLease::acquire(name, pages, mount) {
            Ok(lease) => TestMemory { lease: Some(lease) },
            Err(why) => {
                crate::require::fallback(test, what, &why);
                TestMemory { lease: None }
            }
        }
    }

    /// The hugetlbfs mount, `None` in the fallback.
    pub fn huge_dir(&self) -> Option<&Path> {
        self.lease.as_ref().map(HugepageLease::mount)
    }

    /// A DPDK process's memory: `mib` MiB from the hugepages, or twice that with `--no-huge`
    /// (what every DPDK test gave its pods in the fallback).
    pub fn pod(&self, mib: u32) -> PodMemory {
        match self.huge_dir() {
            Some(dir) => PodMemory::Hugepages {
                dir: dir.to_path_buf(),
                mib,
            },
            None => PodMemory::NoHuge { mib: 2 * mib },
        }
    }
}

/// Memory of a DPDK process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodMemory {
    Hugepages { dir: PathBuf, mib: u32 },
    NoHuge { mib: u32 },
}

impl PodMemory {
    fn eal(&self) -> Vec<String> {
        match self {
            PodMemory::Hugepages { dir, mib } => vec![
                format!("--huge-dir={}", dir.display()),
                "-m".into(),
                mib.to_string(),
                // vhost-user shares at most 8 memory regions
                "--single-file-segments".into(),
            ],
            PodMemory::NoHuge { mib } => vec!["--no-huge".into(), "-m".into(), mib.to_string()],
        }
    }
}

/// One `dpdk-testpmd` process (a DPDK "pod"), stopped by PID: SIGINT (testpmd in virtio-user
/// server mode ignores SIGTERM while waiting), then SIGKILL; its hugepage files and runtime
/// dir are removed. It also dies with the test process (PR_SET_PDEATHSIG).
#[derive(Debug)]
pub struct Testpmd {
    child: Child,
    prefix: String,
    memory: PodMemory,
    log: PathBuf,
}

/// How to start a testpmd.
#[derive(Debug, Clone)]
pub struct TestpmdSpec<'a> {
    /// EAL `--file-prefix` (unique on the host).
    pub prefix: String,
    pub netns: Option<&'a Netns>,
    /// The CPU both testpmd lcores (main + forwarding) are pinned to.
    pub cpu: u32,
    pub memory: PodMemory,
    pub vdevs: Vec<String>,
    pub forward_mode: String,
    pub app_args: Vec<String>,
    pub log: PathBuf,
    /// `-i`: commands come from [`Testpmd::command`] (e.g. `start tx_first`), no periodic stats.
    pub interactive: bool,
}

impl Testpmd {
    pub fn start(spec: &TestpmdSpec<'_>) -> crate::error::Result<Self> {
        let mut cmd = match spec.netns {
            Some(ns) => ns.command("dpdk-testpmd"),
            None => Command::new("dpdk-testpmd"),
        };
        cmd.arg(format!("--file-prefix={}", spec.prefix))
            .args(spec.memory.eal())
            .args(["--iova-mode=va", "--no-pci"])
            .arg(format!("--lcores=0@{c},1@{c}", c = spec.cpu));
        for v in &spec.vdevs {
            cmd.arg(format!("--vdev={v}"));
        }
        cmd.args(["--", "--nb-cores=1", "--total-num-mbufs=8192"]);
        if spec.interactive {
            cmd.arg("-i");
        } else {
            cmd.arg("--stats-period=1");
        }
        cmd.arg(format!("--forward-mode={}", spec.forward_mode))
            .args(&spec.app_args);
        let log = std::fs::File::create(&spec.log).map_err(|source| Error::Io {
            what: format!("testpmd log {}", spec.log.display()),
            source,
        })?;
        let err = log.try_clone().map_err(|source| Error::Io {
            what: "testpmd log".into(),
            source,
        })?;
        // SAFETY: only async-signal-safe work (one prctl) between fork and exec
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .stdin(if spec.interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::spawn("dpdk-testpmd", "dpdk-testpmd", &e))?;
        Ok(Testpmd {
            child,
            prefix: spec.prefix.clone(),
            memory: spec.memory.clone(),
            log: spec.log.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line to an interactive testpmd.
    pub fn command(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("testpmd is not interactive"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Average of the last `n` periodic samples of `Rx-pps`/`Tx-pps` (`which`), summed over
    /// the ports of each sample period.
    pub fn pps(&self, which: &str, n: usize) -> f64 {
        pps_from_log(&self.log_text(), which, n)
    }

    /// Stops it (SIGINT, 3 s, SIGKILL) and removes its files.
    pub fn stop(&mut self) {
        if self.is_running() {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGINT);
            if !wait_until(Duration::from_secs(3), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            }) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let PodMemory::Hugepages { dir, .. } = &self.memory
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

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sum over ports of the LAST `ports` `<which>-pps:` values in `text` (the output of one
/// `show port stats all` of an interactive testpmd: the rate since the previous `show`).
pub fn last_pps(text: &str, which: &str, ports: usize) -> f64 {
    let key = format!("{which}-pps:");
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix(&key)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .collect();
    values.iter().rev().take(ports).fold(0.0, |a, b| a + b)
}

/// Parses testpmd's periodic port statistics (`Rx-pps: N` / `Tx-pps: N`, one line per port
/// per period): the mean over the last `n` periods of the per-period sum, in packets/s.
pub fn pps_from_log(text: &str, which: &str, n: usize) -> f64 {
    // each period starts with the clear-screen escape testpmd prints before the stats
    let key = format!("{which}-pps:");
    let mut chunks: Vec<&str> = text.split("\u{1b}[2J").collect();
    // the last period may still be being printed
    if chunks.len() > 1 {
        chunks.pop();
    }
    let periods: Vec<f64> = chunks
        .iter()
        .filter(|c| c.contains(&key))
        .map(|chunk| {
            chunk
                .lines()
                .filter_map(|l| {
                    let rest = l.trim().strip_prefix(&key)?;
                    rest.split_whitespace().next()?.parse::<f64>().ok()
                })
                .sum()
        })
        .collect();
    let tail: Vec<f64> = periods.iter().rev().take(n).copied().collect();
    if tail.is_empty() {
        0.0
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pps_parser() {
        let t = "\u{1b}[2J  ######################## NIC statistics for port 0  ########################\n  Rx-pps:          100          Rx-bps:        0\n  Tx-pps:            5\n\u{1b}[2J  Rx-pps:          300\n  Tx-pps: 7\n  Rx-pps: 100\n\u{1b}[2J  Rx-pps: 1\n";
        assert_eq!(pps_from_log(t, "Rx", 2), 250.0);
        assert_eq!(pps_from_log(t, "Tx", 1), 7.0);
        assert_eq!(pps_from_log("", "Rx", 3), 0.0);
    }
}
