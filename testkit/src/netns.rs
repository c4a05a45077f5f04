//! Network namespaces created by a test (`/var/run/netns/<name>`), deleted on drop.
//!
//! Names are global on the machine: build them with [`crate::names::unique_tag`] so tests
//! running in parallel never collide.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{output_of, run_cmd};
use crate::wait::wait_until;

/// A network namespace created by us, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its `lo` up.
    pub fn create(name: &str) -> Result<Self> {
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
    pub fn run<I, S>(&self, limit_s: u32, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            "netns".into(),
            "exec".into(),
            self.name.clone().into(),
            program.into(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cmd(&format!("in netns {}", self.name), limit_s, "ip", all)
    }

    /// `ip -n <ns> ...`
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        let out = output_of(&format!("ip -n {}", self.name), &mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Packets `dev` in this namespace has received (its `stats64` rx counter).
    pub fn rx_packets(&self, dev: &str) -> Result<u64> {
        rx_packets(Some(&self.name), dev)
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

/// Packets `dev` has received (its `stats64` rx counter), in the namespace named `netns` or in
/// the caller's own (`None`).
pub fn rx_packets(netns: Option<&str>, dev: &str) -> Result<u64> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-j", "-s", "link", "show", "dev", dev]);
    let what = format!("rx counter of {dev} (netns {netns:?})");
    let out = output_of(&what, &mut cmd)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Setup(format!("{what}: ip -j: {e}")))?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .ok_or_else(|| Error::Setup(format!("{what}: no stats64.rx.packets")))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_cmd("delete netns", 10, "ip", ["netns", "del", &self.name]);
    }
}
