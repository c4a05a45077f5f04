//! One control-plane component as a child process: its log file, its liveness, its end.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::KubeError;

/// How long a component gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running component. Dropping it kills it (by PID) and reaps it.
#[derive(Debug)]
pub(crate) struct Component {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Component {
    /// Starts `program args`, stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: Vec<String>,
        log: PathBuf,
    ) -> Result<Component, KubeError> {
        let mut c = Component {
            name: name.into(),
            program: program.into(),
            args,
            log,
            child: None,
        };
        c.start()?;
        Ok(c)
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
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
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
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Err` naming the component, its exit status and its log tail if it is no longer running.
    pub(crate) fn check_alive(&mut self) -> Result<(), KubeError> {
        let status = match self.child.as_mut().map(Child::try_wait) {
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
        self.kill();
    }
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
