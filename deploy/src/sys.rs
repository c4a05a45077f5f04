//! The lab's contact with the machine: commands with time limits, detached daemons recorded
//! in the state dir, stopping them by PID, and the records file `down` replays.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::model::Resource;

pub use ferrovn_testkit::ovs_node::ovs_env;
pub use ferrovn_testkit::wait::wait_until;

/// Runs `program args` with a wall-clock limit; returns stdout, errors carry stderr.
pub fn run<I, S>(limit_s: u32, program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ferrovn_testkit::process::run_cmd(program, limit_s, program, args)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs a command inside network namespace `netns`.
pub fn run_in<I, S>(netns: &str, limit_s: u32, program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> =
        vec!["netns".into(), "exec".into(), netns.into(), program.into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    run(limit_s, "ip", all)
}

/// The records file: one JSON [`Resource`] per line, appended (and flushed) as things exist.
#[derive(Debug, Clone)]
pub struct Records {
    path: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Self {
        Records {
            path: state_dir.join("resources.jsonl"),
        }
    }

    pub fn add(&self, r: &Resource) -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("recording into {}", self.path.display()))?;
        let line = serde_json::to_string(r)?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", self.path.display()))?;
        f.sync_data().ok();
        Ok(())
    }

    /// Every record, in creation order. Unreadable lines are reported, not fatal.
    pub fn all(&self) -> (Vec<Resource>, Vec<String>) {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(l) {
                Ok(r) => out.push(r),
                Err(e) => bad.push(format!("{}:{}: {e}", self.path.display(), i + 1)),
            }
        }
        (out, bad)
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }
}

/// Where a daemon runs.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// The root namespaces.
    Root,
    /// `ip netns exec`: the network namespace, plus a private mount namespace (with its own
    /// /sys); mounts made later under a shared mount still propagate into it.
    Netns(&'a str),
    /// Only the network namespace (`nsenter --net`): bind mounts it makes are visible to
    /// everyone (the node agent's vhost-user bind mounts must reach ovs-vswitchd).
    NetOnly(&'a str),
}

/// Starts a daemon in its own process group, detached from us (it outlives `ferrovn-lab up`),
/// with output to `log`; records it and returns its PID. `ip netns exec` and `nsenter` exec
/// the program (the PID stays the daemon's).
#[allow(clippy::too_many_arguments)]
pub fn spawn_daemon(
    records: &Records,
    name: &str,
    place: Place<'_>,
    env: &[(String, String)],
    program: &str,
    args: &[String],
    log: &Path,
    marker: &str,
    interrupt: bool,
) -> anyhow::Result<u32> {
    let mut cmd = match place {
        Place::Netns(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        Place::NetOnly(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        Place::Root => Command::new(program),
    };
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("{name}: opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("{name}: starting {program}"))?;
    let pid = child.id();
    // Not waited for: when we exit, init adopts and reaps it; `down` stops it by PID.
    std::mem::forget(child);
    records.add(&Resource::Process {
        name: name.to_string(),
        pid,
        marker: marker.to_string(),
        interrupt,
    })?;
    Ok(pid)
}

/// Running and not a zombie.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // state is the field after the parenthesised comm
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// True if process `pid` runs and its command line contains `marker` (our state dir or a
/// unique prefix): never signal a process that merely reuses a recorded PID.
pub fn ours(pid: u32, marker: &str) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    cmdline.contains(marker)
}

/// Stops a recorded process: SIGTERM (or SIGINT), up to `grace`, then SIGKILL.
/// Returns false if it was not running (or not ours).
pub fn stop_process(pid: u32, marker: &str, interrupt: bool, grace: Duration) -> bool {
    if !ours(pid, marker) {
        return false;
    }
    let p = Pid::from_raw(pid as i32);
    let sig = if interrupt {
        Signal::SIGINT
    } else {
        Signal::SIGTERM
    };
    let _ = kill(p, sig);
    if !wait_until(grace, || !alive(pid)) {
        let _ = kill(p, Signal::SIGKILL);
        wait_until(Duration::from_secs(3), || !alive(pid));
    }
    true
}

/// Waits until `sock` accepts connections; fails early when `pid` dies, showing its log.
pub fn wait_socket(
    what: &str,
    sock: &Path,
    pid: u32,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let ok = wait_until(timeout, || UnixStream::connect(sock).is_ok() || !alive(pid));
    if ok && alive(pid) {
        return Ok(());
    }
    bail!(
        "{what} did not come up ({}; socket {}); last log lines of {}:\n{}",
        if alive(pid) { "timeout" } else { "it exited" },
        sock.display(),
        log.display(),
        log_tail(log, 8)
    )
}

/// The last `n` lines of a log file (indented), for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// True if a TCP port on 127.0.0.1 can be bound now.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Existing network namespaces (names).
pub fn netns_list() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points at or below `dir` (deepest first), from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Reads a small integer file (/proc/sys/...).
pub fn read_u64(path: &str) -> anyhow::Result<u64> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    t.trim()
        .parse()
        .with_context(|| format!("{path}: not a number: {t:?}"))
}

/// `HugePages_Total` and `HugePages_Free` of the default (2 MiB) pool.
pub fn hugepages_now() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("HugePages_Total:"), get("HugePages_Free:"))
}

/// Progress display: one line per step with its duration.
pub struct Step {
    label: String,
    start: Instant,
}

impl Step {
    pub fn begin(label: impl Into<String>) -> Step {
        let label = label.into();
        print!("  {label} ... ");
        let _ = std::io::stdout().flush();
        Step {
            label,
            start: Instant::now(),
        }
    }
    pub fn done(self, note: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        if note.is_empty() {
            println!("ok ({secs:.1}s)");
        } else {
            println!("ok ({secs:.1}s) {note}");
        }
        let _ = self.label;
    }
    pub fn fail(self) {
        println!("FAILED ({:.1}s)", self.start.elapsed().as_secs_f64());
    }
}

/// Runs `f` as a step: prints the label, then ok/FAILED with the time taken.
pub fn step<T>(label: &str, f: impl FnOnce() -> anyhow::Result<(T, String)>) -> anyhow::Result<T> {
    let s = Step::begin(label);
    match f() {
        Ok((v, note)) => {
            s.done(&note);
            Ok(v)
        }
        Err(e) => {
            s.fail();
            Err(e.context(label.to_string()))
        }
    }
}

/// A loud, boxed warning (stdout, so `make lab` shows it in place).
pub fn loud_warning(lines: &[String]) {
    let text = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let bar = "!".repeat(text + 6);
    println!("{bar}");
    for l in lines {
        println!("!! {l}{} !!", " ".repeat(text - l.chars().count()));
    }
    println!("{bar}");
}
