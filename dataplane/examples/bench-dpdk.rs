//! DPDK packet-rate benchmark (run as root):
//! `cargo run --release -p ferrovn-dataplane --example bench-dpdk`.
//!
//! In one run, 64 B and 1500 B frames, every DPDK row on the same 2 cores (1 pod core + 1
//! switch core) and counted the same way:
//! - vhost: two vhost-user attachments made by the agent on an OVS-DPDK node (OVN logical
//!   switch), both driven by ONE testpmd "pod" (cpu0) in macswap/loop with `start tx_first 8`,
//!   so the packets bounce pod port 1 -> OVS -> pod port 2 -> OVS -> pod port 1 ...; the rate is
//!   the sum of both pod ports' rx = packets the switch delivered per second, both directions
//!   together. One OVS PMD (cpu1). (Two separate pod processes would need three busy pollers on
//!   two cores, which is why this is a loop and not one-way.)
//! - raw loop, its baseline: the same pod, the same loop, the same count, with the switch
//!   replaced by a second testpmd on cpu1 forwarding (io mode, no lookup) between two `net_vhost`
//!   ports: vhost-user with nothing in between, so `vs_raw_loop` = OVS-DPDK + OVN / no switch,
//!   like with like (both loops, both summed over both directions, both 1 + 1 cores).
//! - raw one-way, for reference only (no ratio uses it): testpmd `net_virtio_user` (txonly) ->
//!   `net_vhost` (rxonly), one core each: what one direction of vhost-user carries.
//! - kernel pods, each a Rust AF_PACKET `sendmmsg` flooder in pod 1 (pinned to cpu0) sending UDP
//!   to pod 2, counted by pod 2's interface rx counter:
//!   - bridge veth, the kernel baseline: veth pods made by the reference `bridge` plugin
//!     (containernetworking-plugins, /usr/lib/cni) on a Linux bridge, the best kernel path here;
//!   - OVS veth, kept beside it: veth pods attached by the agent to OVN on a plain ovs-vswitchd
//!     (netdev datapath: the kernel-profile node's path here, the slowest one).
//!
//! Last line (64 B): `dpdk-bench vhost_loop_mpps=X raw_loop_mpps=X raw_oneway_mpps=X
//! bridge_veth_mpps=X ovs_veth_mpps=X vs_raw_loop=X vs_bridge_veth=X vs_ovs_veth=X`.
//! `BENCH_SECS` (default 5) sets the measuring window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrovn_api::net::MacAddr;
use ferrovn_dataplane::alloc::FileAllocations;
use ferrovn_testkit::binaries::{agent_binary, cni_plugin_binary};
use ferrovn_testkit::cluster::{POD_SUBNET, add_switch, allocate_pod, wait_chassis_count};
use ferrovn_testkit::cni::{CniCall, cni_netconf, run_cni, run_plugin_in};
use ferrovn_testkit::dpdk::{HugepageLease, PodMemory, Testpmd, TestpmdSpec, last_pps};
use ferrovn_testkit::dpdk_node::{DpdkNode, DpdkNodeSpec};
use ferrovn_testkit::error::Error;
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until;
use serde_json::json;

const SIZES: [usize; 2] = [64, 1500];

fn secs() -> u64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

// ---------------------------------------------------------------------------------------------
// (a) raw vhost <-> virtio-user

fn raw_run(size: usize, mem: &PodMemory, work: &Path, rnd: &str) -> Result<f64> {
    let sock = work.join("raw.sock");
    let _ = std::fs::remove_file(&sock);
    let mut v = Testpmd::start(&TestpmdSpec {
        prefix: format!("fvbv{rnd}"),
        netns: None,
        cpu: 0,
        memory: mem.clone(),
        vdevs: vec![format!("net_vhost0,iface={},queues=1", sock.display())],
        forward_mode: "rxonly".into(),
        app_args: vec![],
        log: work.join(format!("raw-vhost-{size}.log")),
        interactive: false,
    })?;
    sleep(2.0);
    let mut u = Testpmd::start(&TestpmdSpec {
        prefix: format!("fvbu{rnd}"),
        netns: None,
        cpu: 1,
        memory: mem.clone(),
        vdevs: vec![format!("net_virtio_user0,path={},queues=1", sock.display())],
        forward_mode: "txonly".into(),
        app_args: vec![format!("--txpkts={size}")],
        log: work.join(format!("raw-virtio-{size}.log")),
        interactive: false,
    })?;
    sleep(secs() as f64 + 3.0);
    let mpps = v.pps("Rx", 3) / 1e6;
    if mpps == 0.0 {
        eprintln!("raw {size}: no rx; vhost log: {}", v.log_text());
    }
    u.stop();
    v.stop();
    let _ = std::fs::remove_file(&sock);
    Ok(mpps)
}

/// The switch-less loop: a testpmd "switch" (io forwarding between two `net_vhost` servers,
/// cpu1) and the same testpmd pod as the vhost phase (two virtio_user ports, macswap/loop,
/// `start tx_first 8`, cpu0); the rate is the pod's rx summed over both ports.
fn raw_loop_run(size: usize, mem: &PodMemory, work: &Path, rnd: &str) -> Result<f64> {
    let socks = [work.join("loop0.sock"), work.join("loop1.sock")];
    for s in &socks {
        let _ = std::fs::remove_file(s);
    }
    let mut switch = Testpmd::start(&TestpmdSpec {
        prefix: format!("fvbs{rnd}"),
        netns: None,
        cpu: 1,
        memory: mem.clone(),
        vdevs: socks
            .iter()
            .enumerate()
            .map(|(i, s)| format!("net_vhost{i},iface={},queues=1", s.display()))
            .collect(),
        forward_mode: "io".into(),
        app_args: vec![],
        log: work.join(format!("loop-switch-{size}.log")),
        interactive: false,
    })?;
    if !wait_until(Duration::from_secs(30), || socks.iter().all(|s| s.exists())) {
        bail!("raw loop: vhost sockets missing: {}", switch.log_text());
    }
    let mut pod = Testpmd::start(&TestpmdSpec {
        prefix: format!("fvbl{rnd}"),
        netns: None,
        cpu: 0,
        memory: mem.clone(),
        vdevs: socks
            .iter()
            .enumerate()
            .map(|(i, s)| format!("net_virtio_user{i},path={},queues=1", s.display()))
            .collect(),
        forward_mode: "macswap".into(),
        app_args: vec!["--port-topology=loop".into(), format!("--txpkts={size}")],
        log: work.join(format!("loop-pod-{size}.log")),
        interactive: true,
    })?;
    // EAL start-up of the pod and its virtio_user connections (no OVS to ask for link state)
    sleep(2.0);
    let mpps = pod_loop_rate(&mut pod)?;
    if mpps <= 0.0 {
        eprintln!(
            "raw loop {size}: no rx; pod log: {}\nswitch log: {}",
            pod.log_text(),
            switch.log_text()
        );
    }
    pod.stop();
    switch.stop();
    for s in &socks {
        let _ = std::fs::remove_file(s);
    }
    Ok(mpps)
}

/// Drives an interactive loop pod: starts the bursts, reads the rate of one window (the sum of
/// both ports' Rx-pps), quits it. Mpps.
fn pod_loop_rate(t: &mut Testpmd) -> Result<f64> {
    t.command("start tx_first 8")?;
    sleep(2.0);
    t.command("show port stats all")?;
    sleep(secs() as f64);
    t.command("show port stats all")?;
    sleep(1.0);
    // testpmd's stdout is a file: fully buffered until it exits
    let _ = t.command("stop");
    let _ = t.command("quit");
    wait_until(Duration::from_secs(10), || !t.is_running());
    Ok(last_pps(&t.log_text(), "Rx", 2) / 1e6)
}

// ---------------------------------------------------------------------------------------------
// (b) veth pods: AF_PACKET sendmmsg flooder

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in h.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame of `size` bytes (without FCS).
fn udp_frame(
    size: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
) -> Vec<u8> {
    let size = size.max(60);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (size - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ip_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&9u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// Sends `frame` on `ifname` (in the calling thread's netns) for `secs`; returns frames sent.
fn flood(ifname: &str, frame: Vec<u8>, secs: f64) -> std::io::Result<u64> {
    let cpus = {
        let mut s = nix::sched::CpuSet::new();
        let _ = s.set(0);
        s
    };
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus);
    let name = std::ffi::CString::new(ifname).map_err(std::io::Error::other)?;
    // SAFETY: plain libc calls on a socket we own; pointers reference live locals
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        if libc::bind(
            fd,
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        const BATCH: usize = 64;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        while start.elapsed().as_secs_f64() < secs {
            let n = libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0);
            if n > 0 {
                sent += n as u64;
            }
        }
        libc::close(fd);
        Ok(sent)
    }
}

#[allow(clippy::too_many_arguments)]
fn cni_add(
    plugin: &Path,
    node: &Node,
    pod: &str,
    cid: &str,
    netns: &Netns,
    ifname: &str,
    uid: &str,
    extra: serde_json::Value,
) -> Result<serde_json::Value> {
    let stdin = cni_netconf("1.1.0", "net", &node.agent_socket(), &extra);
    let args =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID={uid}");
    let out = run_cni(
        plugin,
        &CniCall {
            command: "ADD",
            container_id: cid,
            netns: &netns.path().display().to_string(),
            ifname,
            args: &args,
            stdin: &stdin,
        },
    )?;
    if out.exit_code != 0 {
        bail!(
            "ADD {pod}: {} {}; agent: {}",
            out.stdout,
            out.stderr,
            node.agent_log()
        );
    }
    Ok(out.json())
}

fn veth_phase(work: &Path, tag: &str) -> Result<BTreeMap<usize, f64>> {
    let central = OvnCentral::start().map_err(|e| Error::Setup(e.to_string()))?;
    let sb = central.sb_remote();
    let allocs_dir = work.join("allocs-veth");
    let allocs = FileAllocations::new(&allocs_dir);
    let mut node = Node::start(
        &format!("fvb-{tag}-k"),
        &NodeConfig::plain(&format!("fvb-{tag}-k")),
    )?;
    node.start_agent(&agent_binary()?, &sb, &allocs_dir, &[])?;
    node.start_ovn_controller()?;
    wait_chassis_count(&central, 1, Duration::from_secs(30))?;
    add_switch(&central, &POD_SUBNET)?;
    let plugin = cni_plugin_binary()?;
    let pods = [
        ("vp1", "10.16.0.31", "0a:58:0a:10:00:1f"),
        ("vp2", "10.16.0.32", "0a:58:0a:10:00:20"),
    ];
    let mut nss = Vec::new();
    for (i, (pod, ip, mac)) in pods.iter().enumerate() {
        allocate_pod(&central, &allocs, &POD_SUBNET, "ovn", pod, ip, mac)?;
        let ns = Netns::create(&format!("fvb-{tag}-{pod}"))?;
        cni_add(
            &plugin,
            &node,
            pod,
            &format!("cv{i}{}", tag.replace('x', "")),
            &ns,
            "eth0",
            "u",
            json!({"mtu": 1500}),
        )?;
        nss.push(ns);
    }
    // warm up the path (ARP is not needed: the flooder addresses pod 2's MAC directly)
    let _ = nss[0].ping_until("10.16.0.32", Duration::from_secs(10));
    flood_rates(
        &nss[0],
        &nss[1],
        ([0x0a, 0x58, 0x0a, 0x10, 0x00, 0x1f], [10, 16, 0, 31]),
        ([0x0a, 0x58, 0x0a, 0x10, 0x00, 0x20], [10, 16, 0, 32]),
        "ovs veth",
        "OVN LS, OVS netdev datapath; cores: sender 1 + OVS main thread",
    )
}

/// MAC and IPv4 address of one end of a flood.
type Endpoint = ([u8; 6], [u8; 4]);

/// Per frame size, the rate pod `to` receives on its eth0 while a flooder in pod `from` sends
/// to it as fast as it can (sender pinned to cpu0). Mpps.
fn flood_rates(
    from: &Netns,
    to: &Netns,
    src: Endpoint,
    dst: Endpoint,
    label: &str,
    what: &str,
) -> Result<BTreeMap<usize, f64>> {
    let mut out = BTreeMap::new();
    for size in SIZES {
        let frame = udp_frame(size, src.0, dst.0, src.1, dst.1);
        let total = secs() as f64 + 2.0;
        let path = from.path();
        let sender = std::thread::spawn(move || {
            ferrovn_dataplane::netns::run_in_netns(Some(&path), move || flood("eth0", frame, total))
        });
        sleep(1.0);
        let (r0, t0) = (to.rx_packets("eth0")?, Instant::now());
        sleep(secs() as f64);
        let (r1, t1) = (to.rx_packets("eth0")?, Instant::now());
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("flooder panicked"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
        let mpps = (r1 - r0) as f64 / (t1 - t0).as_secs_f64() / 1e6;
        println!(
            "{label:<12} {size:>5} B  {mpps:>7.3} Mpps received (sender offered {:.3} Mpps; {what})",
            sent as f64 / total / 1e6
        );
        out.insert(size, mpps);
    }
    Ok(out)
}

/// The kernel baseline: two veth pods made by the reference `bridge` plugin (with `host-local`)
/// on a Linux bridge in a private "host" namespace, flooded like the OVS veth pods.
fn bridge_phase(tag: &str) -> Result<BTreeMap<usize, f64>> {
    const PLUGINS: &str = "/usr/lib/cni";
    let dir = Path::new(PLUGINS);
    for p in ["bridge", "host-local"] {
        if !dir.join(p).exists() {
            bail!(
                "{}/{p} missing: apt-get install containernetworking-plugins",
                dir.display()
            );
        }
    }
    let host = Netns::create(&format!("fvb-{tag}-bh"))?;
    let data = tempfile::tempdir()?;
    // no gateway: the pods share the bridge, and forwarding stays off even in the private host
    let conf = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": "fvbbr0",
        "isGateway": false, "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": "10.98.0.0/24", "dataDir": data.path()},
    }))?;
    let bridge = dir.join("bridge");
    let mut pods: Vec<(Netns, String, Endpoint)> = Vec::new();
    for i in 0..2 {
        let ns = Netns::create(&format!("fvb-{tag}-bp{i}"))?;
        let cid = format!("fvbbr{}{i}", tag.replace('x', ""));
        let out = run_plugin_in(
            &host,
            &bridge,
            "ADD",
            &cid,
            &ns.path().display().to_string(),
            &conf,
        )?;
        if out.exit_code != 0 {
            bail!("bridge ADD: {} {}", out.stdout, out.stderr);
        }
        let link: serde_json::Value =
            serde_json::from_str(&ns.ip(["-j", "addr", "show", "eth0"])?)?;
        let mac: MacAddr = link[0]["address"]
            .as_str()
            .context("bridge pod eth0 without a MAC")?
            .parse()?;
        let ip: std::net::Ipv4Addr = link[0]["addr_info"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["family"] == "inet"))
            .and_then(|x| x["local"].as_str())
            .context("bridge pod eth0 without IPv4")?
            .parse()?;
        pods.push((ns, cid, (mac.0, ip.octets())));
    }
    // the bridge learns both MACs
    let dst_ip = std::net::Ipv4Addr::from(pods[1].2.1).to_string();
    if !pods[0].0.ping_until(&dst_ip, Duration::from_secs(10)) {
        bail!("bridge pods cannot ping each other");
    }
    let rates = flood_rates(
        &pods[0].0,
        &pods[1].0,
        pods[0].2,
        pods[1].2,
        "bridge veth",
        "reference bridge plugin, Linux bridge; cores: sender 1",
    );
    for (ns, cid, _) in &pods {
        let _ = run_plugin_in(
            &host,
            &bridge,
            "DEL",
            cid,
            &ns.path().display().to_string(),
            &conf,
        );
    }
    rates
}

// ---------------------------------------------------------------------------------------------
// (c) vhost-user pods on OVS-DPDK through OVN

fn vhost_phase(
    work: &Path,
    tag: &str,
    rnd: &str,
    mem: &PodMemory,
    huge: Option<&Path>,
) -> Result<BTreeMap<usize, f64>> {
    let dir = work.join("dpdk");
    std::fs::create_dir_all(&dir)?;
    let lab = DpdkNode::start(
        &DpdkNodeSpec {
            prefix: "fvb",
            tag,
            rnd,
            work: &dir,
            agent: &agent_binary()?,
            plugin: &cni_plugin_binary()?,
            huge_dir: huge,
            extra_agent_args: vec![],
        },
        |_| Ok(()),
    )?;
    add_switch(&lab.central, &POD_SUBNET)?;
    let pods = [
        ("dp1", "10.16.0.21", "0a:58:0a:10:00:15"),
        ("dp2", "10.16.0.22", "0a:58:0a:10:00:16"),
    ];
    let mut infos = Vec::new();
    for (i, (pod, ip, mac)) in pods.iter().enumerate() {
        infos.push(lab.add_dpdk_pod(&POD_SUBNET, pod, ip, mac, i as u32)?);
    }
    let mut out = BTreeMap::new();
    for size in SIZES {
        let vdevs = infos
            .iter()
            .enumerate()
            .map(|(i, p)| p.vdev(i as u32))
            .collect();
        let mut t = Testpmd::start(&TestpmdSpec {
            prefix: format!("fvbp{rnd}"),
            netns: Some(&infos[0].netns),
            cpu: 0,
            memory: mem.clone(),
            vdevs,
            forward_mode: "macswap".into(),
            app_args: vec![
                "--port-topology=loop".into(),
                format!("--txpkts={size}"),
                format!("--eth-peer=0,{}", infos[1].info.mac),
                format!("--eth-peer=1,{}", infos[0].info.mac),
            ],
            log: work.join(format!("vhost-{size}.log")),
            interactive: true,
        })?;
        let up = lab.wait_vhost_up(&infos.iter().collect::<Vec<_>>(), Duration::from_secs(30));
        if !up {
            bail!("vhost ports not up: {}", t.log_text());
        }
        let mpps = pod_loop_rate(&mut t)?;
        if mpps <= 0.0 {
            eprintln!("vhost {size}: no rx; testpmd log: {}", t.log_text());
        }
        t.stop();
        println!(
            "vhost loop  {size:>5} B  {mpps:>7.3} Mpps delivered by OVS-DPDK (pod<->pod via OVN LS, both directions; cores: 1 pod + 1 PMD)"
        );
        out.insert(size, mpps);
    }
    drop(infos);
    drop(lab);
    Ok(out)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root (hugepages, namespaces, OVS)");
    }
    let tag = unique_tag();
    let rnd = short_rand();
    let work = tempfile::Builder::new().prefix("fvb-").tempdir_in("/tmp")?;
    let huge_dir = PathBuf::from(format!("/tmp/fvbh{rnd}"));
    let lease = match HugepageLease::acquire(&format!("bench-dpdk-{tag}"), 640, &huge_dir) {
        Ok(l) => Some(l),
        Err(why) => {
            eprintln!(
                "\n!!!!!!!! NO HUGEPAGES ({why}): everything runs with --no-huge (slower) !!!!!!!!\n"
            );
            None
        }
    };
    let mem = match &lease {
        Some(_) => PodMemory::Hugepages {
            dir: huge_dir.clone(),
            mib: 256,
        },
        None => PodMemory::NoHuge { mib: 256 },
    };
    println!(
        "dpdk-bench: {}s windows, frames {SIZES:?}, hugepages: {}",
        secs(),
        lease.is_some()
    );
    let mut raw = BTreeMap::new();
    let mut raw_loop = BTreeMap::new();
    for size in SIZES {
        let m = raw_run(size, &mem, work.path(), &rnd)?;
        println!(
            "raw one-way {size:>5} B  {m:>7.3} Mpps (testpmd virtio_user txonly -> vhost rxonly, no switch; cores: 2; reference only)"
        );
        raw.insert(size, m);
        let m = raw_loop_run(size, &mem, work.path(), &rnd)?;
        println!(
            "raw loop    {size:>5} B  {m:>7.3} Mpps delivered by testpmd io-fwd between two vhost ports (pod<->pod, both directions; cores: 1 pod + 1 switch)"
        );
        raw_loop.insert(size, m);
    }
    let bridge = bridge_phase(&tag)?;
    let veth = veth_phase(work.path(), &tag)?;
    let vhost = vhost_phase(
        work.path(),
        &tag,
        &rnd,
        &mem,
        lease.as_ref().map(|l| l.mount()),
    )?;
    println!();
    println!(
        "{:>6}  {:>10} {:>10} {:>10} {:>11} {:>10}  {:>11} {:>14} {:>11}",
        "size",
        "vhost_loop",
        "raw_loop",
        "raw_1way",
        "bridge_veth",
        "ovs_veth",
        "vs_raw_loop",
        "vs_bridge_veth",
        "vs_ovs_veth"
    );
    for size in SIZES {
        let (v, rl, r, b, k) = (
            vhost[&size],
            raw_loop[&size],
            raw[&size],
            bridge[&size],
            veth[&size],
        );
        println!(
            "{size:>5}B  {v:>10.3} {rl:>10.3} {r:>10.3} {b:>11.3} {k:>10.3}  {:>11.2} {:>14.1} {:>11.1}",
            v / rl.max(1e-9),
            v / b.max(1e-9),
            v / k.max(1e-9)
        );
    }
    let (v, rl, r, b, k) = (vhost[&64], raw_loop[&64], raw[&64], bridge[&64], veth[&64]);
    println!(
        "dpdk-bench vhost_loop_mpps={v:.3} raw_loop_mpps={rl:.3} raw_oneway_mpps={r:.3} bridge_veth_mpps={b:.3} ovs_veth_mpps={k:.3} vs_raw_loop={:.2} vs_bridge_veth={:.2} vs_ovs_veth={:.2}",
        v / rl.max(1e-9),
        v / b.max(1e-9),
        v / k.max(1e-9)
    );
    Ok(())
}
