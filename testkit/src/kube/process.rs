//! One control-plane component as a process: its log file, its liveness, its end.
//!
//! A test's components are children that die with the test (parent-death signal, killed on
//! drop). A persistent control plane's (the lab's) are detached: their own process group, no
//! parent-death signal, a PID file; they outlive the process that started them and are stopped
//! by PID ([`stop_pid_file`]).

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::KubeError;

/// How long a component gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running component. Dropping it kills it (by PID) and reaps it, unless it is detached.
#[derive(Debug)]
pub(crate) struct Component {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Detached: the PID file it is recorded in; never killed on drop.
    pid_file: Option<PathBuf>,
    /// A detached component started by another process (found through its PID file).
    adopted: Option<u32>,
}

impl Component {
    /// Starts `program args`, stdout and stderr appended to `log`. With `pid_file` the process
    /// is detached and its PID written there.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: Vec<String>,
        log: PathBuf,
        pid_file: Option<PathBuf>,
    ) -> Result<Component, KubeError> {
        let mut c = Component {
            name: name.into(),
            program: program.into(),
            args,
            env: Vec::new(),
            log,
            child: None,
            pid_file,
            adopted: None,
        };
        c.start()?;
        Ok(c)
    }

    /// Like [`Component::spawn`] (a child of the test, not detached), with `env` added to the
    /// inherited environment.
    pub(crate) fn spawn_with_env(
        name: &str,
        program: &Path,
        args: Vec<String>,
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Component, KubeError> {
        let mut c = Component {
            name: name.into(),
            program: program.into(),
            args,
            env: env.to_vec(),
            log,
            child: None,
            pid_file: None,
            adopted: None,
        };
        c.start()?;
        Ok(c)
    }

    /// Like [`Component::spawn_with_env`], detached (see [`Component::spawn`] with a PID file):
    /// it outlives this process and is stopped by PID.
    pub(crate) fn spawn_detached_with_env(
        name: &str,
        program: &Path,
        args: Vec<String>,
        env: &[(String, String)],
        log: PathBuf,
        pid_file: PathBuf,
    ) -> Result<Component, KubeError> {
        let mut c = Component {
            name: name.into(),
            program: program.into(),
            args,
            env: env.to_vec(),
            log,
            child: None,
            pid_file: Some(pid_file),
            adopted: None,
        };
        c.start()?;
        Ok(c)
    }

    /// A component not started yet (its place in a struct until it is).
    pub(crate) fn idle(name: &str) -> Component {
        Component {
            name: name.into(),
            program: PathBuf::new(),
            args: Vec::new(),
            env: Vec::new(),
            log: PathBuf::new(),
            child: None,
            pid_file: None,
            adopted: None,
        }
    }

    /// A detached component another process started: its PID from `pid_file` (`None` if the
    /// file is missing or the process is gone). It can be checked and stopped, not restarted.
    pub(crate) fn adopt(name: &str, pid_file: PathBuf, log: PathBuf) -> Component {
        let adopted = read_pid(&pid_file).filter(|p| alive(*p));
        Component {
            name: name.into(),
            program: PathBuf::new(),
            args: Vec::new(),
            env: Vec::new(),
            log,
            child: None,
            pid_file: Some(pid_file),
            adopted,
        }
    }

    fn start(&mut self) -> Result<(), KubeError> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| KubeError::Io {
                    what: format!("log file {}", self.log.display()),
                    reason: e.to_string(),
                })
        };
        let (out, err) = (open()?, open()?);
        if self.program.as_os_str().is_empty() {
            return Err(KubeError::Io {
                what: format!("restart {}", self.name),
                reason: "started by another process: its command line is not known here".into(),
            });
        }
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(pid_file) = &self.pid_file {
            // Its own process group: a Ctrl-C meant for the starting command does not reach it.
            cmd.process_group(0);
            let child = cmd.spawn().map_err(|e| KubeError::Spawn {
                program: self.program.display().to_string(),
                reason: e.to_string(),
            })?;
            std::fs::write(pid_file, format!("{}\n", child.id())).map_err(|e| KubeError::Io {
                what: format!("PID file {}", pid_file.display()),
                reason: e.to_string(),
            })?;
            self.child = Some(child);
            self.adopted = None;
            return Ok(());
        }
        // A test binary killed outright (SIGKILL, timeout) never runs Drop: the kernel then ends
        // the components, so no etcd or apiserver outlives its test process.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| KubeError::Spawn {
            program: self.program.display().to_string(),
            reason: e.to_string(),
        })?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id).or(self.adopted)
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Err` naming the component, its exit status and its log tail if it is no longer running.
    pub(crate) fn check_alive(&mut self) -> Result<(), KubeError> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            None if self.adopted.is_some_and(alive) => return Ok(()),
            None => "not running (stopped)".to_string(),
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => e.to_string(),
        };
        Err(KubeError::Exited {
            component: self.name.clone(),
            status,
            log: self.log.display().to_string(),
            log_tail: log_tail(&self.log),
        })
    }

    /// SIGTERM, then SIGKILL after a grace period; reaps the process.
    pub(crate) fn stop(&mut self) {
        if let Some(pid) = self.adopted.take() {
            terminate(pid, STOP_GRACE);
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: plain syscall on the PID of our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL and reap: a crash, as far as the rest of the cluster can tell.
    pub(crate) fn kill(&mut self) {
        if let Some(pid) = self.adopted.take() {
            terminate(pid, Duration::ZERO);
            return;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again (after [`Component::stop`] or [`Component::kill`]).
    pub(crate) fn restart(&mut self) -> Result<(), KubeError> {
        self.stop();
        self.start()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        // A detached component outlives this handle (and this process): stopped by PID.
        if self.pid_file.is_none() {
            self.kill();
        }
    }
}

pub(crate) fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Running, not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // the state is the first field after the parenthesised command name
    stat.rfind(')').is_some_and(|i| {
        !matches!(
            stat[i + 1..].trim_start().chars().next(),
            Some('Z' | 'X') | None
        )
    })
}

fn cmdline_contains(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .contains(marker)
    })
}

/// SIGTERM (none when `grace` is zero), SIGKILL after `grace`; waits until the process is gone
/// (it may be another process's child: then its parent, or init, reaps it).
pub(crate) fn terminate(pid: u32, grace: Duration) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    let signal = |sig| {
        // SAFETY: plain syscall; the caller checked that `pid` is the component's.
        unsafe {
            libc::kill(p, sig);
        }
    };
    if !grace.is_zero() {
        signal(libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace && alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if alive(pid) {
        signal(libc::SIGKILL);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) && alive(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops the process of a PID file when it is still running and its command line contains
/// `marker` (a recorded PID a new process reused is left alone); removes the file. True if a
/// process was stopped; `Err` (naming the PID) if it is still alive afterwards.
pub(crate) fn stop_pid_file(pid_file: &Path, marker: &str) -> Result<bool, KubeError> {
    let Some(pid) = read_pid(pid_file) else {
        return Ok(false);
    };
    let ours = alive(pid) && cmdline_contains(pid, marker);
    if ours {
        terminate(pid, STOP_GRACE);
        if alive(pid) {
            return Err(KubeError::Io {
                what: format!("stop PID {pid} of {}", pid_file.display()),
                reason: "still running after SIGKILL".into(),
            });
        }
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(ours)
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
