//! The API server's way into the lab's nodes: an HTTP CONNECT proxy on a unix socket, named in
//! the apiserver's egress selector configuration as its `cluster` egress. The control plane
//! listens on the machine's loopback only; every kubelet listens on 127.0.0.1 of its own node
//! namespace. `kubectl exec`, `logs` and `port-forward` make the apiserver dial the Node by
//! its Hostname address (the Node's name, which no resolver here knows) or its InternalIP (the
//! node's underlay address, which exists only inside the lab): the proxy finds the node of that
//! name or address and connects to the same port on 127.0.0.1 inside the node's namespace. Any other address (a pod's, for the apiserver's pod proxy) is dialled from inside
//! the first node's namespace, which routes to every pod through its join port.
//! A process of its own (`ferrovn-lab egress-proxy`, hidden) because the lab outlives `up`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sched::{CloneFlags, setns};

/// Where a CONNECT target is dialled from: (network namespace name, address to dial there).
/// `map`: a node's name or address → its namespace.
fn route(map: &BTreeMap<String, String>, host: &str, port: u16) -> Option<(String, SocketAddr)> {
    if let Some(ns) = map.get(host) {
        return Some((ns.clone(), SocketAddr::from(([127, 0, 0, 1], port))));
    }
    let ip: IpAddr = host.parse().ok()?;
    map.values()
        .next()
        .map(|ns| (ns.clone(), SocketAddr::new(ip, port)))
}

/// `CONNECT host:port HTTP/1.1` → (host, port).
fn parse_connect(line: &str) -> Option<(String, u16)> {
    let mut w = line.split_whitespace();
    if w.next()? != "CONNECT" {
        return None;
    }
    let (host, port) = w.next()?.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// Connects to `addr` from inside network namespace `netns`: a short-lived thread enters it (a
/// socket stays in the namespace it was made in; no other thread changes namespace).
fn connect_in(netns: &str, addr: SocketAddr) -> Result<TcpStream, String> {
    let ns = File::open(Path::new("/var/run/netns").join(netns))
        .map_err(|e| format!("open netns {netns}: {e}"))?;
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the connecting thread panicked".to_string())?
}

fn serve(conn: UnixStream, map: &BTreeMap<String, String>) -> Result<(), String> {
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    // the request's headers end with an empty line
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| e.to_string())? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut out = conn.try_clone().map_err(|e| e.to_string())?;
    let Some((ip, port)) = parse_connect(line.trim()) else {
        let _ = out.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        return Err(format!("not a CONNECT to host:port: {:?}", line.trim()));
    };
    let Some((netns, addr)) = route(map, &ip, port) else {
        let _ = out.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return Err(format!("{ip}: not a lab node's name or an address"));
    };
    let tcp = match connect_in(&netns, addr) {
        Ok(t) => t,
        Err(e) => {
            let _ = out.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            return Err(format!("{ip}:{port} via {netns} {addr}: {e}"));
        }
    };
    out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // bytes the reader buffered past the headers belong to the tunnel
    let buffered = reader.buffer().to_vec();
    let mut tcp_w = tcp.try_clone().map_err(|e| e.to_string())?;
    if !buffered.is_empty() {
        tcp_w.write_all(&buffered).map_err(|e| e.to_string())?;
    }
    let tcp_r = tcp;
    let conn_r = reader.into_inner();
    std::thread::spawn(move || {
        pipe(conn_r, &mut tcp_w);
        let _ = tcp_w.shutdown(Shutdown::Write);
    });
    let mut tcp_r = tcp_r;
    pipe(&mut tcp_r, &mut out);
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

fn pipe(mut from: impl Read, to: &mut impl Write) {
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
}

/// Listens on `socket` and serves CONNECTs; `map` is `NAME=NETNS` and `IP=NETNS` per node.
/// Runs until killed.
pub fn run(socket: &Path, map: &[String]) -> anyhow::Result<()> {
    let mut m = BTreeMap::new();
    for e in map {
        let (key, ns) = e
            .split_once('=')
            .with_context(|| format!("--map {e}: want NAME=NETNS or IP=NETNS"))?;
        m.insert(key.to_string(), ns.to_string());
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    println!(
        "egress proxy on {} for {}",
        socket.display(),
        map.join(", ")
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let m = m.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &m) {
                eprintln!("egress: {e}");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_and_routes() {
        assert_eq!(
            parse_connect("CONNECT 192.168.100.1:10250 HTTP/1.1"),
            Some(("192.168.100.1".into(), 10250))
        );
        assert_eq!(
            parse_connect("CONNECT lab-dpdk:10250 HTTP/1.1"),
            Some(("lab-dpdk".into(), 10250))
        );
        assert_eq!(parse_connect("GET / HTTP/1.1"), None);
        assert_eq!(parse_connect("CONNECT :80 HTTP/1.1"), None);
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("lab-dpdk", "a-lab-dpdk"),
            ("192.168.100.1", "a-lab-dpdk"),
            ("lab-kernel", "a-lab-kernel"),
            ("192.168.100.2", "a-lab-kernel"),
        ] {
            m.insert(k.to_string(), v.to_string());
        }
        // a node, by name or address: its kubelet on the namespace's loopback
        for host in ["lab-kernel", "192.168.100.2"] {
            assert_eq!(
                route(&m, host, 10250),
                Some(("a-lab-kernel".into(), "127.0.0.1:10250".parse().unwrap()))
            );
        }
        // a pod: dialled as is from a node namespace
        assert_eq!(
            route(&m, "10.16.0.5", 8080),
            Some(("a-lab-dpdk".into(), "10.16.0.5:8080".parse().unwrap()))
        );
        // an unknown name is not resolved (no DNS lookup leaves the machine)
        assert_eq!(route(&m, "example", 80), None);
        assert_eq!(route(&BTreeMap::new(), "10.16.0.5", 1), None);
    }
}
