//! Traffic tools for kernel pods (network namespaces): iperf3 TCP/UDP, ping RTTs, and a UDP
//! packet-rate flood (sendmmsg sender, recvmmsg receiver counting what arrives), each side a
//! thread that entered the pod's namespace and is pinned to its core.

use anyhow::{Context, Result, bail};
use ferrovn_testkit::netns::Netns;
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// UDP payload for a frame of `frame` bytes (no FCS): Ethernet 14 + IPv4 20 + UDP 8.
pub fn udp_payload(frame: u32) -> usize {
    frame.saturating_sub(42).max(1) as usize
}

/// The frame that fits an interface MTU: `min(frame, mtu + 14)`.
pub fn fit_frame(frame: u32, mtu: u32) -> u32 {
    frame.min(mtu + 14)
}

/// Kills an iperf3 server on drop.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_server(ns: &Netns, cpu: u32) -> Result<Server> {
    let child = ns
        .command("taskset")
        .args(["-c", &cpu.to_string(), "iperf3", "-s", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Server(child))
}

fn iperf_client(
    ns: &Netns,
    cpu: u32,
    dst: &str,
    secs: f64,
    extra: &[&str],
) -> Result<serde_json::Value> {
    let t = format!("{}", secs.ceil().max(1.0) as u64);
    let limit = secs.ceil() as u32 + 15;
    let mut args = vec!["-c", &cpu.to_string()]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(["iperf3", "-c", dst, "-p", "5201", "-J", "-t", &t].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = ns
        .run(limit, "taskset", &args)
        .map_err(|e| anyhow::anyhow!("iperf3 -c {dst}: {e}"))?;
    serde_json::from_str(&out).context("iperf3 JSON")
}

/// TCP goodput in Gbit/s (receiver side), one run of `secs` seconds.
pub fn iperf_tcp(
    client: &Netns,
    server: &Netns,
    dst: &str,
    secs: f64,
    cpus: (u32, u32),
) -> Result<f64> {
    let _srv = iperf_server(server, cpus.1)?;
    let j = iperf_client(client, cpus.0, dst, secs, &[])?;
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON without end.sum_received")
}

/// UDP rate received in Gbit/s with `payload`-byte datagrams, unlimited offered load.
pub fn iperf_udp(
    client: &Netns,
    server: &Netns,
    dst: &str,
    secs: f64,
    payload: usize,
    cpus: (u32, u32),
) -> Result<f64> {
    let _srv = iperf_server(server, cpus.1)?;
    let len = payload.to_string();
    let j = iperf_client(client, cpus.0, dst, secs, &["-u", "-b", "0", "-l", &len])?;
    let sum = &j["end"]["sum"];
    let bps = sum["bits_per_second"]
        .as_f64()
        .context("iperf3 UDP end.sum")?;
    let lost = sum["lost_percent"].as_f64().unwrap_or(0.0);
    Ok(bps * (1.0 - lost / 100.0) / 1e9)
}

/// Parses the `time=X ms` of each reply of `ping` output.
pub fn parse_ping_rtts(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("time=").nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .collect()
}

/// `count` pings 10 ms apart; the RTT of every reply in ms.
pub fn ping_rtts(client: &Netns, dst: &str, count: u32) -> Result<Vec<f64>> {
    let c = count.to_string();
    let limit = count / 50 + 10;
    let out = client
        .command("ping")
        .args([
            "-c",
            &c,
            "-i",
            "0.01",
            "-W",
            "1",
            "-w",
            &limit.to_string(),
            dst,
        ])
        .stderr(Stdio::null())
        .output()
        .context("running ping")?;
    let rtts = parse_ping_rtts(&String::from_utf8_lossy(&out.stdout));
    if rtts.is_empty() {
        bail!("no ping replies from {dst}");
    }
    Ok(rtts)
}

/// Enters the network namespace at `ns_path` and pins the calling thread to `cpu`.
fn enter(ns_path: &std::path::Path, cpu: u32) -> Result<()> {
    let f = std::fs::File::open(ns_path).with_context(|| format!("open {}", ns_path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize).context("cpu set")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context("sched_setaffinity")?;
    Ok(())
}

const BATCH: usize = 64;
const FLOOD_PORT: u16 = 9000;

fn sender(
    sent_count: Arc<AtomicU64>,
    ns: std::path::PathBuf,
    cpu: u32,
    dst: std::net::Ipv4Addr,
    payload: usize,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    enter(&ns, cpu)?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect((dst, FLOOD_PORT))?;
    let buf = vec![0x5au8; payload];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v as *mut libc::iovec;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point into iov/buf, alive for the call; connected socket, no address
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
            sent_count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(sent)
}

fn receiver(
    ns: std::path::PathBuf,
    cpu: u32,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
) -> Result<()> {
    enter(&ns, cpu)?;
    let sock = std::net::UdpSocket::bind(("0.0.0.0", FLOOD_PORT))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a valid int option value
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    ready.store(true, Ordering::SeqCst);
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: plain data
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v as *mut libc::iovec;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point into bufs, alive for the call; the read timeout bounds the wait
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// One flood window: received and offered (sent) packet rates in Mpps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodRate {
    pub rx_mpps: f64,
    pub tx_mpps: f64,
}

/// Packets per second a receiver socket in `server` gets from a sendmmsg flood in `client` to
/// `dst`, `payload`-byte datagrams, over `secs` after `warmup`; and what the sender offered.
pub fn udp_flood(
    client: &Netns,
    server: &Netns,
    dst: &str,
    payload: usize,
    warmup: f64,
    secs: f64,
    cpus: (u32, u32),
) -> Result<FloodRate> {
    let dst: std::net::Ipv4Addr = dst.parse().context("flood destination")?;
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let rx = {
        let (ns, stop, count, ready) = (server.path(), stop.clone(), count.clone(), ready.clone());
        std::thread::spawn(move || receiver(ns, cpus.1, count, stop, ready))
    };
    let started = Instant::now();
    while !ready.load(Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(3)
        && !rx.is_finished()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent_count = Arc::new(AtomicU64::new(0));
    let tx = {
        let (ns, stop, sc) = (client.path(), stop.clone(), sent_count.clone());
        std::thread::spawn(move || sender(sc, ns, cpus.0, dst, payload, stop))
    };
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let a = count.load(Ordering::Relaxed);
    let sa = sent_count.load(Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = count.load(Ordering::Relaxed);
    let sb = sent_count.load(Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let sent = tx
        .join()
        .map_err(|_| anyhow::anyhow!("flood sender panicked"))??;
    rx.join()
        .map_err(|_| anyhow::anyhow!("flood receiver panicked"))??;
    if sent == 0 {
        bail!("the flood sender could not send (route to {dst}?)");
    }
    Ok(FloodRate {
        rx_mpps: (b - a) as f64 / elapsed / 1e6,
        tx_mpps: (sb - sa) as f64 / elapsed / 1e6,
    })
}

/// MTU of `dev` in `ns`.
pub fn mtu(ns: &Netns, dev: &str) -> Result<u32> {
    let out = ns
        .ip(["-j", "link", "show", "dev", dev])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["mtu"].as_u64().map(|m| m as u32).context("mtu")
}

/// First IPv4 address of `dev` in `ns`.
pub fn ipv4(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns
        .ip(["-j", "-4", "addr", "show", "dev", dev])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["addr_info"][0]["local"]
        .as_str()
        .map(str::to_string)
        .context("no IPv4 address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_math() {
        assert_eq!(udp_payload(64), 22);
        assert_eq!(udp_payload(1500), 1458);
        assert_eq!(udp_payload(10), 1);
        assert_eq!(fit_frame(1500, 1400), 1414);
        assert_eq!(fit_frame(64, 1400), 64);
    }

    #[test]
    fn ping_lines() {
        let t = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.045 ms\n64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=1.2 ms\n\n--- 10.0.0.2 ping statistics ---\nrtt min/avg/max/mdev = 0.045/0.6/1.2/0.5 ms\n";
        assert_eq!(parse_ping_rtts(t), vec![0.045, 1.2]);
    }
}
