//! The control plane's loopback address inside a node's network namespace: a TCP relay that
//! listens on `127.0.0.1:<port>` in the node namespace and connects to `127.0.0.1:<port>` of
//! the test's own namespace.
//!
//! The control plane listens on loopback only (nothing of it may be reachable from eth0), while
//! a kubelet and a node agent live in the node's namespace. With the relay they use the very
//! kubeconfigs [`super::ControlPlane`] writes (`https://127.0.0.1:<port>`, a name the serving
//! certificate holds), and no route, address or forwarding between namespaces is needed.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use super::KubeError;

/// The relay; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct LoopbackRelay {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl LoopbackRelay {
    /// Listens on 127.0.0.1:`port` inside the namespace at `netns` (a `/proc/<pid>/ns/net` or
    /// `/var/run/netns/<name>` path) and relays every connection to 127.0.0.1:`port` here.
    pub fn start(netns: &Path, port: u16) -> Result<LoopbackRelay, KubeError> {
        let listener = listen_in(netns, port)?;
        listener.set_nonblocking(true).map_err(|e| KubeError::Io {
            what: "relay listener".into(),
            reason: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let acceptor = std::thread::Builder::new()
            .name(format!("relay-{port}"))
            .spawn(move || accept_loop(&listener, target, &flag))
            .map_err(|e| KubeError::Io {
                what: "relay thread".into(),
                reason: e.to_string(),
            })?;
        Ok(LoopbackRelay {
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for LoopbackRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Binds the listener from a short-lived thread that entered the namespace: a socket stays in
/// the namespace it was created in, and no other thread of the test changes namespace.
fn listen_in(netns: &Path, port: u16) -> Result<TcpListener, KubeError> {
    let ns = File::open(netns).map_err(|e| KubeError::Io {
        what: format!("open {}", netns.display()),
        reason: e.to_string(),
    })?;
    let what = format!("listen on 127.0.0.1:{port} in {}", netns.display());
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| KubeError::Io {
        what: what.clone(),
        reason: "the thread panicked".into(),
    })?
    .map_err(|reason| KubeError::Io { what, reason })
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((inner, _)) => {
                // Outbound connections are made from this thread, which never left the test's
                // namespace.
                let Ok(outer) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = inner.set_nonblocking(false);
                let pipes = (
                    inner.try_clone(),
                    outer.try_clone(),
                    Ok::<_, std::io::Error>(inner),
                    Ok::<_, std::io::Error>(outer),
                );
                if let (Ok(a_read), Ok(b_read), Ok(a_write), Ok(b_write)) = pipes {
                    std::thread::spawn(move || pipe(a_read, b_write));
                    std::thread::spawn(move || pipe(b_read, a_write));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies until either side ends, then ends the other side's writing half.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
