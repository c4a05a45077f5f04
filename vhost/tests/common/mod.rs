//! Test fixtures: processes killed by PID, network namespaces and veths deleted, DPDK runtime
//! dirs removed — on success and on failure alike (Drop guards).
#![allow(dead_code)]

use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::wait::{wait_for_value, wait_until};
use ferrovn_vhost::control::ControlClient;
use ferrovn_vhost::protocol::{Request, Response};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process we started; SIGKILLed and reaped on drop (or earlier with `kill`).
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        // stdin stays an open pipe: testpmd quits on EOF ("Press enter to exit").
        cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Proc {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Sends `sig`, waits up to `timeout` for exit, then SIGKILLs. Returns the exit status.
    pub fn stop(
        &mut self,
        sig: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        if let Some(status) = wait_for_value(timeout, || child.try_wait().ok().flatten()) {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A network namespace plus a veth pair: `host` stays in the root namespace, `inner` (eth0)
/// sits in the namespace with `addr`.
pub struct NetnsVeth {
    pub ns: Netns,
    pub netns: String,
    pub host: String,
}

impl NetnsVeth {
    pub fn new(tag: &str, addr_cidr: &str) -> NetnsVeth {
        let id = std::process::id() % 100_000;
        let host = format!("fvh{tag}{id}");
        assert!(host.len() <= 15, "interface name {host} too long");
        let ns = Netns::create(&format!("fvh-{tag}-{}", unique_tag())).expect("netns");
        let netns = ns.name().to_string();
        let guard = NetnsVeth {
            ns,
            netns: netns.clone(),
            host: host.clone(),
        };
        assert!(run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &netns
            ]
        ));
        assert!(run("ip", &["link", "set", &host, "up"]));
        guard
            .ns
            .ip(["addr", "add", addr_cidr, "dev", "eth0"])
            .expect("address");
        guard.ns.ip(["link", "set", "eth0", "up"]).expect("eth0 up");
        guard
    }

    /// One ping, 1 s timeout.
    pub fn ping_once(&self, dst: &str) -> bool {
        self.ns.ping_once(dst)
    }

    /// Pings until one answer arrives or `within` passes.
    pub fn ping_within(&self, dst: &str, within: Duration) -> bool {
        self.ns.ping_until(dst, within)
    }
}

impl Drop for NetnsVeth {
    fn drop(&mut self) {
        // Deleting a netns is asynchronous: delete the veth explicitly (the netns goes with
        // `ns`).
        run("ip", &["link", "del", &self.host]);
    }
}

/// Removes /var/run/dpdk/<prefix> of each DPDK process we started.
pub struct DpdkPrefixes(pub Vec<String>);

impl Drop for DpdkPrefixes {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(p));
        }
    }
}

/// dpdk-testpmd as a DPDK pod: virtio_user in server mode on `sock`, ICMP echo responder,
/// plain 4 KiB memory (memfd, shareable over vhost-user), pinned to `cpu`.
pub fn testpmd_pod(prefix: &str, sock: &Path, mac: &str, cpu: usize, log: &Path) -> Proc {
    let _ = std::fs::remove_file(sock); // a pod app killed hard leaves its socket behind
    let mut cmd = Command::new("dpdk-testpmd");
    cmd.args([
        &format!("--file-prefix={prefix}"),
        "--no-huge",
        "-m",
        "256",
        "--iova-mode=va",
        "--no-pci",
        &format!("--lcores=0@{cpu},1@{cpu}"),
        &format!(
            "--vdev=net_virtio_user0,path={},server=1,queues=1,mac={mac}",
            sock.display()
        ),
        "--",
        "--nb-cores=1",
        "--total-num-mbufs=8192",
        "--forward-mode=icmpecho",
    ]);
    Proc::spawn(cmd, log)
}

pub fn wait_for_path(path: &Path, within: Duration) -> bool {
    wait_until(within, || path.exists())
}

/// Connects to the helper's control socket, waiting for it to appear.
pub fn control(path: &Path, within: Duration) -> ControlClient {
    wait_for_value(within, || ControlClient::connect(path).ok()).unwrap_or_else(|| {
        panic!(
            "control socket {}: {:?}",
            path.display(),
            ControlClient::connect(path).err()
        )
    })
}

pub fn call(c: &mut ControlClient, r: &Request) -> Response {
    c.call(r)
        .unwrap_or_else(|e| panic!("control call {r:?}: {e}"))
}

/// The helper binary with test-friendly settings: one worker on `core`, napping when idle.
pub fn helper_cmd(dir: &Path, prefix: &str, core: usize, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovn-vhost"));
    cmd.args([
        "--cores",
        &core.to_string(),
        "--control-socket",
        &dir.join("ctl.sock").to_string_lossy(),
        "--state-file",
        &dir.join("state.json").to_string_lossy(),
        "--file-prefix",
        prefix,
        "--idle-sleep-us",
        "200",
        "--mbufs",
        "4095",
    ]);
    cmd.args(extra);
    cmd.env("RUST_LOG", "info");
    cmd
}

/// The last CPU this process may use (the relay's core; the pod gets the first).
pub fn cpus() -> (usize, usize) {
    let allowed = ferrovn_vhost::cores::allowed_cores().expect("affinity");
    let first = allowed.first().copied().unwrap_or(0);
    let last = allowed.last().copied().unwrap_or(0);
    (first, last)
}
