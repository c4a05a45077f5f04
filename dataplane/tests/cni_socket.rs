//! The node agent's CNI socket: created 0600, never stolen from a live agent (the refusal names
//! the socket and the serving PID), a stale socket replaced, anything else at the path left
//! alone. Real unix sockets in a temp dir.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream};
use std::path::Path;
use std::process::Command;

use ferrovn_dataplane::server::{self, BindError};

/// Held while a test spawns a process and while a test closes a listener and expects it gone: a
/// fork copies every open descriptor into the child until its exec, so a listener dropped in
/// that window keeps answering for a moment (a restart test then sees its own "live" socket).
static FORK_WINDOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_window() -> std::sync::MutexGuard<'static, ()> {
    FORK_WINDOW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[tokio::test]
async fn socket_is_0600_and_a_second_agent_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run/cni.sock");
    let first = server::bind(&path).expect("first agent binds");
    assert_eq!(mode(&path), 0o600, "socket mode");
    assert!(
        first.lock.path().exists(),
        "lock file {:?}",
        first.lock.path()
    );
    let inode = std::fs::metadata(&path).expect("stat").ino();

    let err = server::bind(&path).expect_err("a second agent must not take a live socket");
    let msg = err.to_string();
    assert!(matches!(err, BindError::InUse { .. }), "{err:?}");
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(
        msg.contains(&format!("PID {}", std::process::id())),
        "names the serving agent's PID: {msg}"
    );
    // the first agent's socket is untouched and still answers
    assert_eq!(std::fs::metadata(&path).expect("stat").ino(), inode);
    UnixStream::connect(&path).expect("the first agent still answers");
    let (_conn, _) = first.listener.accept().await.expect("accept");
}

#[tokio::test]
async fn a_live_socket_without_the_lock_is_not_stolen() {
    // an agent that predates the lock file, or anything else serving there
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cni.sock");
    let other = StdListener::bind(&path).expect("bind");
    let err = server::bind(&path).expect_err("live socket");
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap())
            && msg.contains(&format!("PID {}", std::process::id())),
        "{msg}"
    );
    assert!(
        UnixStream::connect(&path).is_ok(),
        "the live socket is still there"
    );
    drop(other);
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cni.sock");
    // a crashed agent: the file stays, nobody listens
    let no_fork = fork_window();
    drop(StdListener::bind(&path).expect("bind"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert!(UnixStream::connect(&path).is_err(), "stale");
    let sock = server::bind(&path).expect("replaces a stale socket");
    drop(no_fork);
    assert_eq!(mode(&path), 0o600);
    UnixStream::connect(&path).expect("the new socket answers");
    let (_conn, _) = sock.listener.accept().await.expect("accept");

    // the agent stopped (lock released, file left behind): the next one starts
    let no_fork = fork_window();
    drop(sock);
    let again = server::bind(&path).expect("restart after a stop");
    drop(no_fork);
    assert_eq!(mode(&path), 0o600);
    drop(again);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn something_else_at_the_path_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cni.sock");
    std::fs::write(&path, "not a socket").expect("write");
    let err = server::bind(&path).expect_err("a regular file");
    assert!(matches!(err, BindError::NotSocket { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("regular file"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "not a socket"
    );
}

/// The binary refuses before it touches OVS or the API: the OVSDB given does not exist, yet the
/// error is about the socket.
#[tokio::test]
async fn ferrovn_node_refuses_to_start_on_a_live_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cni.sock");
    let first = server::bind(&path).expect("first agent");
    let forking = fork_window();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovn-node"))
        .args(["--socket", path.to_str().unwrap()])
        .args([
            "--ovs-db",
            &format!("unix:{}/no-db.sock", dir.path().display()),
        ])
        .args(["--sb-remote", "tcp:127.0.0.1:1", "--encap-ip", "127.0.0.1"])
        .args(["--profile", "kernel", "--node-name", "socket-test"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run ferrovn-node");
    drop(forking);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(path.to_str().unwrap())
            && stderr.contains(&format!("PID {}", std::process::id()))
            && stderr.contains("not replacing a live socket"),
        "{stderr}"
    );
    assert!(
        UnixStream::connect(&path).is_ok(),
        "the first agent's socket survives"
    );
    drop(first);
}
