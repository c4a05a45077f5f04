//! Receive buffers of ovs-vswitchd's AF_PACKET sockets (veth pods on a userspace datapath).
//!
//! In the netdev datapath every veth pod is an AF_PACKET socket that ovs-vswitchd's main thread
//! polls, one after the other, on each loop. With a hundred pods on a node a loop takes long
//! enough that a TCP sender with userspace TSO (64 KiB segments) overflows the socket's default
//! receive buffer (`net.core.rmem_default`, 208 KiB), the kernel drops, TCP backs off: measured
//! here with 121 ports, 0.29 Gbit/s and 25,914 retransmits in 5 s, against 0.92 Gbit/s and one
//! retransmit with 4 MiB buffers. OVS sets no SO_RCVBUF on these sockets and `rmem_default` is
//! global to the host (not per network namespace), so raising it would change every socket of
//! the machine. Instead the agent borrows each of ovs-vswitchd's packet sockets
//! (`pidfd_getfd(2)`, Linux ≥ 5.6, needs CAP_SYS_PTRACE over ovs-vswitchd — the agent's
//! DaemonSet runs privileged with hostPID) and raises that socket's buffer with
//! SO_RCVBUFFORCE. Only ovs-vswitchd's own packet sockets are touched, never below what they
//! have.

use std::collections::HashSet;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// Default receive buffer the agent gives each of ovs-vswitchd's packet sockets (what the kernel
/// reports back as SO_RCVBUF: it doubles the requested value for its own bookkeeping).
pub const DEFAULT_RCVBUF_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RxBufError {
    #[error("ovs-vswitchd pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ovs-vswitchd pid file {path}: {content:?} is not a process id")]
    BadPid { path: PathBuf, content: String },
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "borrowing ovs-vswitchd's (pid {pid}) socket fd {fd}: {source} (the agent needs CAP_SYS_PTRACE over ovs-vswitchd and Linux >= 5.6)"
    )]
    Borrow {
        pid: i32,
        fd: RawFd,
        source: std::io::Error,
    },
    #[error("SO_RCVBUFFORCE on ovs-vswitchd's packet socket (inode {inode}): {source}")]
    SetBuffer { inode: u64, source: nix::Error },
}

/// What one pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TuneReport {
    /// Packet sockets whose buffer was raised in this pass.
    pub raised: usize,
    /// Packet sockets ovs-vswitchd holds (raised now or earlier).
    pub sockets: usize,
}

/// Keeps ovs-vswitchd's packet sockets at (at least) a target receive buffer.
#[derive(Debug)]
pub struct RxBufferTuner {
    pidfile: PathBuf,
    target: usize,
    /// (pid, socket inode) already at target: a pass only looks at new sockets.
    done: HashSet<(i32, u64)>,
}

impl RxBufferTuner {
    /// `pidfile` is ovs-vswitchd's `--pidfile`; `target` the SO_RCVBUF the sockets should report.
    pub fn new(pidfile: impl Into<PathBuf>, target: usize) -> Self {
        RxBufferTuner {
            pidfile: pidfile.into(),
            target,
            done: HashSet::new(),
        }
    }

    /// The pid file next to an OVS database socket (`unix:<rundir>/db.sock` →
    /// `<rundir>/ovs-vswitchd.pid`), where OVS's own scripts and our node setups put it.
    pub fn pidfile_beside(ovs_db: &str) -> Option<PathBuf> {
        let sock = Path::new(ovs_db.strip_prefix("unix:")?);
        Some(sock.parent()?.join("ovs-vswitchd.pid"))
    }

    /// One pass: every packet socket ovs-vswitchd holds that is not yet at the target.
    pub fn tune_once(&mut self) -> Result<TuneReport, RxBufError> {
        let pid = read_pid(&self.pidfile)?;
        let inodes = packet_socket_inodes(pid)?;
        // a restarted ovs-vswitchd has a new pid: forget the old one's sockets
        self.done.retain(|(p, _)| *p == pid);
        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let entries = std::fs::read_dir(&fd_dir).map_err(|source| RxBufError::Proc {
            path: fd_dir.clone(),
            source,
        })?;
        let mut report = TuneReport::default();
        let mut pidfd: Option<OwnedFd> = None;
        for entry in entries.flatten() {
            let Some(inode) = std::fs::read_link(entry.path())
                .ok()
                .and_then(|l| socket_inode(&l.to_string_lossy()))
                .filter(|i| inodes.contains(i))
            else {
                continue;
            };
            report.sockets += 1;
            if self.done.contains(&(pid, inode)) {
                continue;
            }
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if pidfd.is_none() {
                pidfd = Some(pidfd_open(pid).map_err(|source| RxBufError::Borrow {
                    pid,
                    fd,
                    source,
                })?);
            }
            let Some(owner) = pidfd.as_ref() else {
                continue;
            };
            let sock = match pidfd_getfd(owner, fd) {
                Ok(s) => s,
                // closed between the listing and now (a port just removed)
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue,
                Err(source) => return Err(RxBufError::Borrow { pid, fd, source }),
            };
            let current = getsockopt(&sock.as_fd(), sockopt::RcvBuf).unwrap_or(0);
            if current < self.target {
                // the kernel doubles what it is given
                setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &(self.target / 2))
                    .map_err(|source| RxBufError::SetBuffer { inode, source })?;
                report.raised += 1;
            }
            self.done.insert((pid, inode));
        }
        Ok(report)
    }
}

fn read_pid(path: &Path) -> Result<i32, RxBufError> {
    let content = std::fs::read_to_string(path).map_err(|source| RxBufError::PidFile {
        path: path.to_path_buf(),
        source,
    })?;
    content
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| RxBufError::BadPid {
            path: path.to_path_buf(),
            content: content.trim().to_string(),
        })
}

/// Inodes of the packet sockets in ovs-vswitchd's network namespace (`/proc/<pid>/net/packet`).
fn packet_socket_inodes(pid: i32) -> Result<HashSet<u64>, RxBufError> {
    let path = PathBuf::from(format!("/proc/{pid}/net/packet"));
    let text = std::fs::read_to_string(&path).map_err(|source| RxBufError::Proc {
        path: path.clone(),
        source,
    })?;
    Ok(parse_packet_table(&text))
}

/// `/proc/net/packet`: a header line, then `sk RefCnt Type Proto Iface R Rmem User Inode` rows.
fn parse_packet_table(text: &str) -> HashSet<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(8)?.parse().ok())
        .collect()
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: rc is a fresh file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes two fds and flags by value and returns a new fd or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: rc is a fresh duplicate in our fd table that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_table_rows_give_their_inode() {
        let text = "sk       RefCnt Type Proto  Iface R Rmem   User   Inode\n\
                    ffff8c1e0a7d2000 3      3    0003   7     1 0      0      442117\n\
                    ffff8c1e0a7d4800 3      3    0003   9     1 4352   0      442121\n";
        let inodes = parse_packet_table(text);
        assert_eq!(inodes, HashSet::from([442117, 442121]));
    }

    #[test]
    fn only_socket_links_have_an_inode() {
        assert_eq!(socket_inode("socket:[442117]"), Some(442117));
        assert_eq!(socket_inode("pipe:[442117]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn pidfile_sits_beside_the_database_socket() {
        assert_eq!(
            RxBufferTuner::pidfile_beside("unix:/var/run/openvswitch/db.sock"),
            Some(PathBuf::from("/var/run/openvswitch/ovs-vswitchd.pid"))
        );
        assert_eq!(RxBufferTuner::pidfile_beside("tcp:127.0.0.1:6640"), None);
    }

    #[test]
    fn a_garbled_pidfile_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("rxbuf-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ovs-vswitchd.pid");
        std::fs::write(&p, "not-a-pid\n").unwrap();
        let e = RxBufferTuner::new(&p, DEFAULT_RCVBUF_BYTES)
            .tune_once()
            .unwrap_err();
        assert!(e.to_string().contains("not-a-pid"), "{e}");
        assert!(e.to_string().contains("ovs-vswitchd.pid"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
