//! Commands run to completion with a time limit, and daemons we start in the foreground.
//!
//! Every daemon runs as our child (no `--detach`): we hold its PID, so it is stopped by that
//! PID and reaped by us (no zombies waiting for PID 1, no PID reuse).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::wait::wait_until;

/// Runs a command to completion with a wall-clock limit (`timeout(1)`), returning stdout;
/// a non-zero exit is an error carrying stderr.
pub fn run_cmd<I, S>(what: &str, limit_s: u32, program: &str, args: I) -> Result<String>
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

/// [`run_cmd`] with a two-minute limit, the program as `what`.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_cmd(program, 120, program, args)
}

/// Runs `cmd`, failing on a non-zero exit.
pub fn output_of(what: &str, cmd: &mut Command) -> Result<Output> {
    let rendered = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::spawn(what, &rendered, &e))?;
    if !out.status.success() {
        if out.status.code() == Some(127) {
            // timeout(1) or `ip netns exec` could not find the program
            return Err(Error::spawn(
                what,
                &rendered,
                &std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        return Err(Error::Command {
            what: what.to_string(),
            command: rendered,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A daemon we started in the foreground; stopped by PID on drop.
#[derive(Debug)]
pub struct Daemon {
    what: String,
    child: Option<Child>,
}

impl Daemon {
    /// Spawns `program args` (inside `netns` if given) with `env`, stdout and stderr to `log`.
    pub fn spawn(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        Self::spawn_inner(what, netns, env, program, args, log, false)
    }

    /// Like [`Daemon::spawn`] but appends to `log` instead of truncating it.
    pub fn spawn_appending(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        Self::spawn_inner(what, netns, env, program, args, log, true)
    }

    fn spawn_inner(
        what: &str,
        netns: Option<&Netns>,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &Path,
        append: bool,
    ) -> Result<Self> {
        if netns.is_some() && !Path::new(program).is_absolute() && which(program).is_none() {
            // `ip netns exec` would start and then fail: say what is missing instead
            return Err(Error::spawn(
                what,
                program,
                &std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
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
            .map_err(Error::io(format!("{what}: create log {}", log.display())))?;
        let errf = logf
            .try_clone()
            .map_err(Error::io(format!("{what}: log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(errf)
            .spawn()
            .map_err(|e| Error::spawn(what, program, &e))?;
        Ok(Daemon {
            what: what.to_string(),
            child: Some(child),
        })
    }

    /// Its PID (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Still running (not exited, not a zombie: we reap it here).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// `Some("<what> exited: <status>")` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(format!("{} exited: {status}", self.what)),
            _ => None,
        }
    }

    /// SIGKILL and reap, as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
            return;
        }
        let pid = Pid::from_raw(self.pid() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let exited = wait_until(grace, || !self.is_running());
        if !exited {
            tracing::warn!(what = %self.what, "ignored SIGTERM; SIGKILL");
        }
        self.kill();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The path of `program` on `PATH` (or `program` itself if it is a path to an executable).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}
