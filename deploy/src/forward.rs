//! The API server's port inside a node's network namespace. The control plane listens on
//! 127.0.0.1 of the machine only; a node agent runs in its node's namespace, whose loopback is
//! its own. A forwarder listens on the same address and port inside the node's namespace and
//! relays every connection to the API server, so the agent's kubeconfig (server
//! `https://127.0.0.1:<port>`, the serving certificate's SAN) is the same as everyone's, and
//! no address outside loopback is ever involved.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Context;
use nix::sched::{CloneFlags, setns};

/// Listens on 127.0.0.1:`port` inside network namespace `netns` (a name under /var/run/netns)
/// and relays each connection to 127.0.0.1:`port` of the namespace this process started in.
/// Runs until killed.
pub fn run(netns: &str, port: u16) -> anyhow::Result<()> {
    let own = std::fs::File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    let node_path = Path::new("/var/run/netns").join(netns);
    let node = std::fs::File::open(&node_path)
        .with_context(|| format!("opening {}", node_path.display()))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // A socket belongs to the namespace it was made in: make the listener in the node's, then
    // come back (before any other thread exists, so the whole process is back).
    setns(node.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", node_path.display()))?;
    let listener = TcpListener::bind(addr);
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET).context("returning to our own namespace")?;
    let listener = listener.with_context(|| format!("listening on {addr} in {netns}"))?;
    println!("forwarding {addr} in {netns} to {addr}");
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        std::thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(addr) {
                relay(client, server);
            }
        });
    }
    Ok(())
}

/// Copies both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(a, b2));
    pump(b, a2);
    let _ = up.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
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
