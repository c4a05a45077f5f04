//! Egress benchmark (run as root):
//! `cargo run --release -p ferrovn-dataplane --example bench-egress`.
//!
//! One DPDK node (OVS-DPDK, 1 PMD on cpu1) with both egress paths to an outside namespace
//! (testkit::egress): the kernel path (join port ovn0 → kernel forwarding → nftables
//! masquerade → veth uplink) and the OVN path (the node's gateway router from the controller's
//! planner: SNAT in OVS-DPDK → localnet → OVS-DPDK `net_af_packet` uplink). Rows, each repeated
//! `BENCH_REPS` times (default 3), kernel and OVN windows interleaved in every repetition so
//! the machine's load hits both alike; medians printed:
//! - kernel pod → outside, kernel path: TCP (iperf3, Gbit/s) and UDP 64 B (iperf3 `-u -b 0`,
//!   Mpps counted at the outside end);
//! - DPDK pod → outside: testpmd `txonly` (64 B UDP, pod address → outside address, to the pod
//!   gateway's MAC, cpu0) for a window through the kernel path, one through the OVN gateway
//!   router with an OVS-DPDK uplink port standing in for a DPDK NIC ([`UplinkSwitch`]; what
//!   `dpdk_ovn_mpps` is) and one through the gateway router with the `net_af_packet` uplink;
//!   the same running testpmd, the path switched by the cluster router's reroute; counted as
//!   frames received at the outside end of the uplink the path uses (for the NIC stand-in:
//!   frames OVS transmitted to it);
//! - DPDK pod ↔ pod on the same node: the two pods' vhost ports in one testpmd (macswap loop,
//!   `start tx_first 8`), the rate OVS-DPDK delivers (both directions summed, as bench-dpdk's
//!   vhost loop).
//!
//! Every DPDK egress window also prints the datapath's work per egress packet: passes
//! (`pmd-stats-show`), conntrack operations (each datapath flow's packets in the window times
//! its `ct(` actions, over the packets OVS took from the pod) and PMD cycles.
//!
//! Last line: `egress-bench kernel_gbps=X dpdk_kernel_mpps=X dpdk_ovn_mpps=X
//! dpdk_pod_pod_mpps=X ovn_vs_kernel=X`. `BENCH_SECS` (default 5) sets each window;
//! `BENCH_GW_LAYOUT` rewrites the planner's gateway router for A/B runs (see [`relayout`]),
//! `BENCH_EGRESS_ONLY=1` runs only the DPDK pod's egress windows, `BENCH_UPLINKS=nic` or
//! `af_packet` only the OVN windows of that uplink.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrovn_control::plan::gateway_router::{
    GatewayRouterInputs, NodeEgress, POLICY_PRIORITY, names, nbctl_commands, plan_gateway_routers,
};
use ferrovn_testkit::binaries::{agent_binary, cni_plugin_binary};
use ferrovn_testkit::cluster::nbctl;
use ferrovn_testkit::dpdk::{HugepageLease, PodMemory, Testpmd, TestpmdSpec, last_pps};
use ferrovn_testkit::egress::{
    CLUSTER_ROUTER, DpdkPod, EXTERNAL_PREFIX, EgressLab, OUTSIDE_DPDK_PEER, OUTSIDE_IP,
    OUTSIDE_KERNEL_PEER, OVN_EXTERNAL_IP, PHYSNET, POD_GATEWAY_MAC, POD_NET, UPLINK_PORT,
};
use ferrovn_testkit::names::{short_rand, unique_tag};
use ferrovn_testkit::wait::wait_until;

fn secs() -> u64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn reps() -> usize {
    std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn inputs(chassis: &str, pod_ips: &[&str]) -> Result<GatewayRouterInputs> {
    Ok(GatewayRouterInputs {
        cluster_router: CLUSTER_ROUTER.into(),
        transit: "100.65.0.0/16".parse()?,
        cluster_transit_ip: "100.65.0.1".parse()?,
        cluster_cidrs: vec![POD_NET.cidr.parse()?],
        nodes: vec![NodeEgress {
            node: chassis.into(),
            chassis: chassis.into(),
            transit_ip: "100.65.0.2".parse()?,
            external: format!("{OVN_EXTERNAL_IP}/{EXTERNAL_PREFIX}").parse()?,
            next_hop: OUTSIDE_IP.parse()?,
            physnet: PHYSNET.into(),
            snat_cidrs: vec![POD_NET.cidr.parse()?],
            pod_ips: pod_ips
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()?,
        }],
    })
}

/// Frames per second the outside receives on one uplink's peer over a window. Mpps.
fn outside_rate(lab: &EgressLab, dpdk_uplink: bool) -> Result<f64> {
    let (r0, t0) = (lab.outside_rx(dpdk_uplink)?, Instant::now());
    sleep(secs() as f64);
    let (r1, t1) = (lab.outside_rx(dpdk_uplink)?, Instant::now());
    Ok(r1.saturating_sub(r0) as f64 / (t1 - t0).as_secs_f64() / 1e6)
}

/// iperf3 from the kernel pod to the outside: TCP Gbit/s (receiver side).
fn kernel_tcp(pod: &ferrovn_testkit::netns::Netns) -> Result<f64> {
    let t = secs().to_string();
    let out = pod.run(
        (secs() + 20) as u32,
        "iperf3",
        ["-c", OUTSIDE_IP, "-t", &t, "-J"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J")?;
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9)
}

/// iperf3 UDP, 64 B payloads, unlimited: frames per second at the outside end. Mpps.
fn kernel_udp(lab: &EgressLab, pod: &ferrovn_testkit::netns::Netns) -> Result<f64> {
    let t = (secs() + 2).to_string();
    let mut c = pod
        .command("iperf3")
        .args(["-c", OUTSIDE_IP, "-u", "-b", "0", "-l", "64", "-t", &t])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    sleep(1.0);
    let r = outside_rate(lab, false);
    let _ = c.wait();
    r
}

/// `avg processing cycles per packet` of the (first) PMD in `dpif-netdev/pmd-stats-show`.
fn pmd_cycles_per_packet(stats: &str) -> f64 {
    stats
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("avg processing cycles per packet:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// `avg. datapath passes per packet` of the (first) PMD in `dpif-netdev/pmd-stats-show`.
fn pmd_passes_per_packet(stats: &str) -> f64 {
    stats
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("avg. datapath passes per packet:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The datapath flows (`dpctl/dump-flows`): match → (packets, conntrack actions, actions).
fn dp_flows(lab: &EgressLab) -> std::collections::BTreeMap<String, (u64, usize, String)> {
    let text = lab
        .dpdk
        .node
        .appctl_vswitchd(["dpctl/dump-flows"])
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(", packets:")?;
            let packets = rest.split(',').next()?.trim().parse().ok()?;
            let actions = rest.split_once("actions:").map_or("", |(_, a)| a);
            Some((
                key.trim().to_string(),
                (packets, actions.matches("ct(").count(), actions.to_string()),
            ))
        })
        .collect()
}

/// Per packet OVS took from the pod in a window: datapath flow hits (= passes) and conntrack
/// operations, from the flows' packet counters at the window's start and end; with
/// `BENCH_DEBUG` the flows that carried the window's packets.
fn flow_work(
    start: &std::collections::BTreeMap<String, (u64, usize, String)>,
    end: &std::collections::BTreeMap<String, (u64, usize, String)>,
    pod_packets: u64,
) -> (f64, f64) {
    let (mut hits, mut ct) = (0u64, 0u64);
    let debug = std::env::var("BENCH_DEBUG").is_ok();
    for (key, (p, n_ct, actions)) in end {
        let d = p.saturating_sub(start.get(key).map_or(0, |s| s.0));
        hits += d;
        ct += d * *n_ct as u64;
        if debug && d * 100 > pod_packets {
            eprintln!("  flow {d} pkts: {key} actions:{actions}");
        }
    }
    let n = pod_packets.max(1) as f64;
    (hits as f64 / n, ct as f64 / n)
}

/// `BENCH_GW_LAYOUT`: the planner's gateway router rewritten into another layout before the
/// windows, to measure what each costs per packet (the planner makes one of them):
/// - `l3gateway`: `options:chassis` (an l3 gateway router: northd sends every packet of a
///   router with NAT rows through its DNAT zone, looked up and committed, besides the SNAT);
/// - `dgp`: a distributed router whose external port is a distributed gateway port on the
///   chassis (`Gateway_Chassis`), no `ct-commit-all` (northd adds a SNAT-zone lookup before
///   the SNAT commit);
/// - `dgp-commit-all`: the same with `options:ct-commit-all=true` (the SNAT commit only);
/// - any of them with `+nosnat`: the NAT rows removed (no conntrack at all: the bound of the
///   OVN path on this uplink; the outside then sees pod addresses, which the discard sink
///   does not mind).
///
/// A comma-separated list measures each layout in every repetition (one OVN window each,
/// beside the same kernel window); the last line reports the first.
fn relayout(lab: &EgressLab, layout: &str, nat: &[Vec<String>]) -> Result<()> {
    let (base, nosnat) = match layout.strip_suffix("+nosnat") {
        Some(b) => (b, true),
        None => (layout, false),
    };
    let node = lab.chassis();
    let router = names::router(node);
    let ext = names::external_router_port(node);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut cmds = match base {
        "l3gateway" => vec![
            s(&["clear", "Logical_Router_Port", &ext, "gateway_chassis"]),
            s(&[
                "remove",
                "Logical_Router",
                &router,
                "options",
                "ct-commit-all",
            ]),
            s(&[
                "set",
                "Logical_Router",
                &router,
                &format!("options:chassis={node}"),
            ]),
        ],
        "dgp" | "dgp-commit-all" => vec![
            s(&["remove", "Logical_Router", &router, "options", "chassis"]),
            s(&["lrp-set-gateway-chassis", &ext, node, "1"]),
            if base == "dgp" {
                s(&[
                    "remove",
                    "Logical_Router",
                    &router,
                    "options",
                    "ct-commit-all",
                ])
            } else {
                s(&[
                    "set",
                    "Logical_Router",
                    &router,
                    "options:ct-commit-all=true",
                ])
            },
        ],
        other => {
            bail!("BENCH_GW_LAYOUT={other}: expected l3gateway, dgp or dgp-commit-all (+nosnat)")
        }
    };
    cmds.push(s(&["lr-nat-del", &router, "snat"]));
    if !nosnat {
        cmds.extend(nat.iter().cloned());
    }
    lab.apply_nbctl(&cmds)?;
    println!("tuning: gateway router layout {layout}");
    Ok(())
}

fn pod_loop_rate(t: &mut Testpmd) -> Result<f64> {
    t.command("start tx_first 8")?;
    sleep(2.0);
    t.command("show port stats all")?;
    sleep(secs() as f64);
    t.command("show port stats all")?;
    sleep(1.0);
    let _ = t.command("stop");
    let _ = t.command("quit");
    wait_until(Duration::from_secs(10), || !t.is_running());
    Ok(last_pps(&t.log_text(), "Rx", 2) / 1e6)
}

fn wait_vhost_up(lab: &EgressLab, pods: &[&DpdkPod]) -> bool {
    // a loaded machine takes its time to start a testpmd
    lab.dpdk.wait_vhost_up(pods, Duration::from_secs(90))
}

/// What one DPDK egress window measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    mpps: f64,
    /// datapath passes per packet (`pmd-stats-show`)
    passes: f64,
    /// conntrack actions executed per packet (datapath flow counters)
    ct: f64,
    /// PMD processing cycles per packet (`pmd-stats-show`)
    cycles: f64,
}

/// Counters along both egress paths, read at the start and the end of a window, so each hop's
/// rate shows where packets stop: what OVS takes from the pod's vhost-user queue, what it hands
/// to ovn0 (kernel path) or to the uplink (OVN path) and drops there, what the node's kernel
/// forwards, what the outside receives on each uplink's peer, and where cpu1 (the PMD's core)
/// spends its time.
struct Hops {
    at: Instant,
    pod_rx: u64,
    ovn0_tx: u64,
    ovn0_drop: u64,
    uplink_tx: u64,
    uplink_drop: u64,
    uplink_rx: u64,
    forwarded: u64,
    out_kernel: u64,
    out_dpdk: u64,
    /// utime + stime of the PMD thread (clock ticks)
    pmd_ticks: u64,
    /// cpu1's user, system, softirq, idle (clock ticks)
    cpu1: [u64; 4],
}

/// The PMD thread(s) of the node's ovs-vswitchd: (pid, tid).
fn pmd_threads(lab: &EgressLab) -> Vec<(u32, u32)> {
    let pidfile = lab.dpdk.node.dir().join("ovs-vswitchd.pid");
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return vec![];
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            comm.starts_with("pmd").then_some((pid, tid))
        })
        .collect()
}

fn thread_ticks(pid: u32, tid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
        return 0;
    };
    // fields after the parenthesised comm; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn cpu1_ticks() -> [u64; 4] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = stat.lines().find(|l| l.starts_with("cpu1 ")) else {
        return [0; 4];
    };
    let f: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    // user + nice, system, softirq, idle + iowait
    [g(0) + g(1), g(2), g(6), g(3) + g(4)]
}

/// `dpctl/show -s`: (port, `rx_packets` | `rx_dropped` | `tx_packets` | `tx_dropped`) → count.
fn port_counters(text: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut port = String::new();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("port ") {
            // "port 3: uplink (dpdk: ...)"
            port = rest
                .split_once(':')
                .map(|(_, r)| r.split_whitespace().next().unwrap_or("").to_string())
                .unwrap_or_default();
            continue;
        }
        let dir = if l.starts_with("RX packets:") {
            "rx"
        } else if l.starts_with("TX packets:") {
            "tx"
        } else {
            continue;
        };
        for kv in l[3..].split_whitespace() {
            let Some((k, v)) = kv.split_once(':') else {
                continue;
            };
            if let (Ok(n), "packets" | "dropped") = (v.parse::<u64>(), k) {
                out.insert((port.clone(), format!("{dir}_{k}")), n);
            }
        }
    }
    out
}

impl Hops {
    fn read(lab: &EgressLab, pod: &DpdkPod, pmds: &[(u32, u32)]) -> Self {
        // the datapath's live port counters (OVSDB's Interface statistics lag up to 5 s)
        let ports = port_counters(
            &lab.dpdk
                .node
                .appctl_vswitchd(["dpctl/show", "-s"])
                .unwrap_or_default(),
        );
        let st = |iface: &str, key: &str| {
            ports
                .get(&(iface.to_string(), key.to_string()))
                .copied()
                .unwrap_or(0)
        };
        Hops {
            at: Instant::now(),
            pod_rx: st(&pod.info.ovs_port, "rx_packets"),
            ovn0_tx: st("ovn0", "tx_packets"),
            ovn0_drop: st("ovn0", "tx_dropped"),
            uplink_tx: st(UPLINK_PORT, "tx_packets"),
            uplink_drop: st(UPLINK_PORT, "tx_dropped"),
            uplink_rx: st(UPLINK_PORT, "rx_packets"),
            forwarded: lab.kernel_forwarded().unwrap_or(0),
            out_kernel: lab.outside_rx(false).unwrap_or(0),
            out_dpdk: lab.outside_rx(true).unwrap_or(0),
            pmd_ticks: pmds.iter().map(|(p, t)| thread_ticks(*p, *t)).sum(),
            cpu1: cpu1_ticks(),
        }
    }

    /// One line: each hop's rate over the window (Mpps) and cpu1's split.
    fn line(&self, end: &Hops) -> String {
        let dt = (end.at - self.at).as_secs_f64().max(1e-9);
        let r = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt / 1e6;
        let hz = 100.0;
        let cpu: Vec<f64> = (0..4)
            .map(|i| end.cpu1[i].saturating_sub(self.cpu1[i]) as f64 / hz / dt * 100.0)
            .collect();
        format!(
            "OVS rx from pod {:.3} | ovn0 tx {:.3} drop {:.3} | kernel forwarded {:.3} | uplink tx {:.3} drop {:.3} rx {:.3} | outside rx kernel-uplink {:.3} dpdk-uplink {:.3} (Mpps); PMD thread ran {:.0}% of the window; cpu1 user {:.0}% sys {:.0}% softirq {:.0}% idle {:.0}%",
            r(self.pod_rx, end.pod_rx),
            r(self.ovn0_tx, end.ovn0_tx),
            r(self.ovn0_drop, end.ovn0_drop),
            r(self.forwarded, end.forwarded),
            r(self.uplink_tx, end.uplink_tx),
            r(self.uplink_drop, end.uplink_drop),
            r(self.uplink_rx, end.uplink_rx),
            r(self.out_kernel, end.out_kernel),
            r(self.out_dpdk, end.out_dpdk),
            end.pmd_ticks.saturating_sub(self.pmd_ticks) as f64 / hz / dt * 100.0,
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[3],
        )
    }
}

/// The windows of one repetition.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// ovn0 → the node's kernel (forwarding, nftables masquerade) → veth uplink.
    Kernel,
    /// The gateway router, out through an OVS-DPDK uplink port that transmits like a DPDK NIC.
    OvnNic,
    /// The gateway router, out through the `net_af_packet` uplink (a kernel veth).
    OvnAfPacket,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Kernel => "kernel",
            Path::OvnNic => "OVN (DPDK uplink)",
            Path::OvnAfPacket => "OVN (af_packet uplink)",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Uplink {
    Nic,
    AfPacket,
}

/// Which device the OVS-DPDK uplink port is. This machine has no DPDK NIC: the stand-in is
/// DPDK's `net_null` (its transmit frees the frames, as a NIC's does once they are on the wire;
/// `no-rx=1`: it receives nothing), so the OVN path is measured the way a DPDK node with a NIC
/// runs it, without the kernel transmit an `af_packet` socket adds; the `af_packet` uplink
/// (what the functional tests use, frames reach the outside namespace) is measured beside it.
struct UplinkSwitch {
    af_packet: String,
    nic: String,
    now: Uplink,
}

impl UplinkSwitch {
    /// `BENCH_DEVARGS=<k=v,...>` is appended to the `af_packet` devargs (`framesz`, `framecnt`,
    /// `blocksz`, `qdisc_bypass`, `qpairs`); `BENCH_NIC_DEVARGS` replaces the stand-in's.
    fn new(lab: &EgressLab) -> Result<Self> {
        let cur = lab
            .dpdk
            .node
            .vsctl(["get", "Interface", UPLINK_PORT, "options:dpdk-devargs"])?;
        let mut af_packet = cur.trim().trim_matches('"').to_string();
        if let Ok(extra) = std::env::var("BENCH_DEVARGS") {
            af_packet = format!("{af_packet},{extra}");
        }
        let nic =
            std::env::var("BENCH_NIC_DEVARGS").unwrap_or_else(|_| "net_null_uplink,no-rx=1".into());
        let mut me = UplinkSwitch {
            af_packet,
            nic,
            now: Uplink::Nic,
        };
        me.set(lab, Uplink::AfPacket)?;
        println!(
            "uplinks: DPDK NIC stand-in {}; af_packet {}",
            me.nic, me.af_packet
        );
        Ok(me)
    }

    fn set(&mut self, lab: &EgressLab, to: Uplink) -> Result<()> {
        if self.now == to {
            return Ok(());
        }
        let devargs = match to {
            Uplink::Nic => &self.nic,
            Uplink::AfPacket => &self.af_packet,
        };
        lab.dpdk.node.vsctl([
            "set",
            "Interface",
            UPLINK_PORT,
            &format!("options:dpdk-devargs=\"{devargs}\""),
        ])?;
        if !wait_until(Duration::from_secs(30), || {
            lab.dpdk
                .node
                .vsctl(["get", "Interface", UPLINK_PORT, "link_state"])
                .is_ok_and(|s| s.trim() == "up")
        }) {
            bail!(
                "uplink with {devargs} not up: {}",
                lab.dpdk
                    .node
                    .vsctl(["get", "Interface", UPLINK_PORT, "error"])
                    .unwrap_or_default()
            );
        }
        self.now = to;
        Ok(())
    }
}

/// The outside's MAC as a static binding on the gateway router's external port: the NIC
/// stand-in carries no ARP reply back (with a real NIC the next hop answers).
fn pin_next_hop_mac(lab: &EgressLab) -> Result<()> {
    let mac = lab.outside.run(
        10,
        "cat",
        [format!("/sys/class/net/{OUTSIDE_DPDK_PEER}/address")],
    )?;
    let lrps = nbctl(
        &lab.dpdk.central,
        &["--bare", "--columns=name", "list", "Logical_Router_Port"],
    )?;
    let lrp = lrps
        .split_whitespace()
        .find(|n| n.starts_with("gw-") && n.ends_with("-ext"))
        .with_context(|| format!("no gateway router external port among {lrps}"))?
        .to_string();
    lab.apply_nbctl(&[vec![
        "static-mac-binding-add".into(),
        lrp,
        OUTSIDE_IP.into(),
        mac.trim().into(),
    ]])?;
    Ok(())
}

/// Experiment knobs, each printed when set:
/// - `BENCH_RPS=<hex mask>`: RPS on both uplink peers in the outside, so the outside's receive
///   work runs on those CPUs instead of the sending one (veth receives on the sender's CPU);
/// - `BENCH_DEVARGS`, `BENCH_NIC_DEVARGS`: the uplinks' devargs ([`UplinkSwitch`]);
/// - `BENCH_TX_FLUSH=<us>`: OVS `other_config:tx-flush-interval`;
/// - `BENCH_DEBUG`: `pmd-perf-metrics=true` and the PMD's perf stats and datapath flows after
///   every window.
fn tune(lab: &EgressLab) -> Result<()> {
    // A throughput benchmark polls: the agent's default pmd-maxsleep (500 us, an idle PMD
    // sleeps instead of spinning) lets a PMD on a contended core sleep most iterations (85 %
    // measured here) and wait for the scheduler after each sleep, which measures the sleep
    // policy, not the datapath. `BENCH_PMD_MAXSLEEP` sets another value.
    let maxsleep = std::env::var("BENCH_PMD_MAXSLEEP").unwrap_or_else(|_| "0".into());
    lab.dpdk.node.vsctl([
        "set",
        "Open_vSwitch",
        ".",
        &format!("other_config:pmd-maxsleep={maxsleep}"),
    ])?;
    println!("tuning: pmd-maxsleep {maxsleep} us");
    if let Ok(mask) = std::env::var("BENCH_RPS") {
        for dev in [OUTSIDE_KERNEL_PEER, OUTSIDE_DPDK_PEER] {
            lab.outside.run(
                5,
                "sh",
                [
                    "-c",
                    &format!("echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                ],
            )?;
        }
        println!("tuning: RPS mask {mask} on the outside's uplink peers");
    }
    if let Ok(us) = std::env::var("BENCH_TX_FLUSH") {
        lab.dpdk.node.vsctl([
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:tx-flush-interval={us}"),
        ])?;
        println!("tuning: tx-flush-interval {us} us");
    }
    if std::env::var("BENCH_DEBUG").is_ok() {
        lab.dpdk.node.vsctl([
            "set",
            "Open_vSwitch",
            ".",
            "other_config:pmd-perf-metrics=true",
        ])?;
    }
    Ok(())
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root (hugepages, namespaces, OVS)");
    }
    for tool in ["iperf3", "nft", "ethtool", "dpdk-testpmd"] {
        if ferrovn_testkit::process::which(tool).is_none() {
            bail!("{tool} missing (apt-get install iperf3 nftables ethtool dpdk-dev)");
        }
    }
    let load_start = loadavg();
    let tag = unique_tag();
    let rnd = short_rand();
    let work = tempfile::Builder::new()
        .prefix("fvbe-")
        .tempdir_in("/tmp")?;
    let huge_dir = PathBuf::from(format!("/tmp/fvbeh{rnd}"));
    let lease = HugepageLease::acquire(&format!("bench-egress-{tag}"), 512, &huge_dir)
        .map_err(anyhow::Error::msg)?;
    let mem = PodMemory::Hugepages {
        dir: huge_dir.clone(),
        mib: 256,
    };
    let lab = EgressLab::start(
        &tag,
        &rnd,
        work.path(),
        &agent_binary()?,
        &cni_plugin_binary()?,
        Some(lease.mount()),
    )?;
    println!(
        "egress-bench: {}s windows, {} repetitions, 64 B frames, cores: pod cpu0 + OVS PMD cpu1; load average at start {load_start}",
        secs(),
        reps()
    );

    let kp = lab.add_kernel_pod("kp", "10.16.0.11", "0a:58:0a:10:00:0b")?;
    let dp1 = lab.add_dpdk_pod("dp1", "10.16.0.21", "0a:58:0a:10:00:15", 1)?;
    let dp2 = lab.add_dpdk_pod("dp2", "10.16.0.22", "0a:58:0a:10:00:16", 2)?;
    // kernel path for every pod; the gateway router's reroute (29500) for dp1, toggled
    lab.set_kernel_reroute(&["10.16.0.11", "10.16.0.21"])?;
    let plan = plan_gateway_routers(&inputs(lab.chassis(), &["10.16.0.21"])?);
    if !plan.issues.is_empty() {
        bail!("gateway plan: {:?}", plan.issues);
    }
    let cmds = nbctl_commands(&plan, CLUSTER_ROUTER);
    let (policy, rest): (Vec<Vec<String>>, Vec<Vec<String>>) = cmds
        .into_iter()
        .partition(|c| c.first().is_some_and(|w| w == "lr-policy-add"));
    lab.apply_nbctl(&rest)?;
    let nat: Vec<Vec<String>> = rest
        .iter()
        .filter(|c| c.iter().any(|w| w == "lr-nat-add"))
        .cloned()
        .collect();
    // None: the layout as planned
    let layouts: Vec<Option<String>> = match std::env::var("BENCH_GW_LAYOUT") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|l| Some(l.trim().to_string())).collect(),
        _ => vec![None],
    };
    let label = |l: Option<usize>| match l.and_then(|i| layouts[i].clone()) {
        Some(name) => format!("layout {name}"),
        None => "layout as planned".to_string(),
    };
    let uplinks: Vec<Path> = match std::env::var("BENCH_UPLINKS").as_deref() {
        Ok("nic") => vec![Path::OvnNic],
        Ok("af_packet") => vec![Path::OvnAfPacket],
        _ => vec![Path::OvnNic, Path::OvnAfPacket],
    };
    let ovn_path = |on: bool| -> Result<()> {
        lab.del_policies(POLICY_PRIORITY)?;
        if on {
            lab.apply_nbctl(&policy)?;
        }
        sleep(1.0);
        Ok(())
    };
    ovn_path(false)?;
    tune(&lab)?;
    pin_next_hop_mac(&lab)?;
    let mut uplink = UplinkSwitch::new(&lab)?;
    let pmds = pmd_threads(&lab);

    let mut server = lab
        .outside
        .command("iperf3")
        .args(["-s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    lab.discard_udp(9)?;
    if !kp.ping_until(OUTSIDE_IP, Duration::from_secs(20)) {
        bail!("kernel pod cannot reach the outside");
    }
    sleep(1.0);

    let (mut tcp, mut udp, mut dk, mut dovn, mut pp) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut kcyc, mut ocyc, mut daf) = (Vec::new(), Vec::new(), Vec::new());
    // `BENCH_EGRESS_ONLY`: only the DPDK pod's egress windows (quick layout A/B runs; the
    // kernel pod's and the pod <-> pod rows print 0)
    let egress_only = std::env::var("BENCH_EGRESS_ONLY").is_ok();
    // the windows of a repetition: the kernel path, and each uplink with each layout
    let mut windows: Vec<(Path, Option<usize>)> = vec![(Path::Kernel, None)];
    for i in 0..layouts.len() {
        windows.extend(uplinks.iter().map(|p| (*p, Some(i))));
    }
    let mut per_window: Vec<Vec<Window>> = vec![Vec::new(); windows.len()];
    let mut applied: Option<usize> = None;
    for rep in 0..reps() {
        if !egress_only {
            let g = kernel_tcp(&kp)?;
            let u = kernel_udp(&lab, &kp)?;
            println!(
                "rep {rep}: kernel pod -> outside, kernel path: TCP {g:.2} Gbit/s, UDP 64 B {u:.3} Mpps"
            );
            tcp.push(g);
            udp.push(u);
        }

        // one txonly testpmd in dp1, the path switched under it
        let mut t = Testpmd::start(&TestpmdSpec {
            prefix: format!("fvbe{rnd}"),
            netns: Some(&dp1.netns),
            cpu: 0,
            memory: mem.clone(),
            vdevs: vec![dp1.vdev(0)],
            forward_mode: "txonly".into(),
            app_args: vec![
                "--txpkts=64".into(),
                format!("--eth-peer=0,{POD_GATEWAY_MAC}"),
                format!("--tx-ip={},{OUTSIDE_IP}", dp1.ip),
            ],
            log: work.path().join(format!("txonly-{rep}.log")),
            interactive: false,
        })?;
        if !wait_vhost_up(&lab, &[&dp1]) {
            bail!("dp1 vhost port not up: {}", t.log_text());
        }
        sleep(2.0);
        // the order rotates: no path always runs first
        let (mut k, mut o, mut a, mut kc, mut oc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..windows.len() {
            let slot = (i + rep) % windows.len();
            let (path, layout) = windows[slot];
            if let Some(l) = layout
                && applied != Some(l)
            {
                if let Some(name) = &layouts[l] {
                    relayout(&lab, name, &nat)?;
                }
                applied = Some(l);
            }
            match path {
                Path::OvnNic => uplink.set(&lab, Uplink::Nic)?,
                Path::OvnAfPacket => uplink.set(&lab, Uplink::AfPacket)?,
                Path::Kernel => {}
            }
            ovn_path(path != Path::Kernel)?;
            let _ = lab
                .dpdk
                .node
                .appctl_vswitchd(["dpif-netdev/pmd-stats-clear"]);
            let f0 = dp_flows(&lab);
            let h0 = Hops::read(&lab, &dp1, &pmds);
            let mut r = outside_rate(&lab, path == Path::OvnAfPacket)?;
            let h1 = Hops::read(&lab, &dp1, &pmds);
            let f1 = dp_flows(&lab);
            if path == Path::OvnNic {
                // the discarding port has no far end: what OVS handed to it
                r = h1.uplink_tx.saturating_sub(h0.uplink_tx) as f64
                    / (h1.at - h0.at).as_secs_f64()
                    / 1e6;
            }
            let name = match layout {
                Some(_) => format!("{} {}", path.name(), label(layout)),
                None => path.name().to_string(),
            };
            println!("rep {rep}: {name} window: {}", h0.line(&h1));
            let stats = lab
                .dpdk
                .node
                .appctl_vswitchd(["dpif-netdev/pmd-stats-show"])
                .unwrap_or_default();
            let (hits, ct) = flow_work(&f0, &f1, h1.pod_rx.saturating_sub(h0.pod_rx));
            let passes = pmd_passes_per_packet(&stats);
            let c = pmd_cycles_per_packet(&stats);
            println!(
                "rep {rep}: {name} work per packet: datapath passes {passes:.2} (pmd-stats), flow hits {hits:.2}, conntrack ops {ct:.2}, PMD processing cycles {c:.0}; {r:.3} Mpps"
            );
            per_window[slot].push(Window {
                mpps: r,
                passes,
                ct,
                cycles: c,
            });
            if std::env::var("BENCH_DEBUG").is_ok() {
                eprintln!(
                    "{name}: {stats}\n{}\n{}",
                    lab.dpdk
                        .node
                        .appctl_vswitchd(["dpif-netdev/pmd-perf-show"])
                        .unwrap_or_default(),
                    lab.dpdk
                        .node
                        .appctl_vswitchd(["dpctl/dump-flows", "-m"])
                        .unwrap_or_default()
                );
            }
            // the final line: the first layout
            match (path, layout) {
                (Path::Kernel, _) => (k, kc) = (r, c),
                (Path::OvnNic, Some(0)) => (o, oc) = (r, c),
                (Path::OvnAfPacket, Some(0)) => a = r,
                _ => {}
            }
        }
        let offered = t.pps("Tx", 3) / 1e6;
        t.stop();
        println!(
            "rep {rep}: DPDK pod -> outside: kernel path {k:.3} Mpps, OVN gateway router {o:.3} Mpps with a DPDK uplink (x{:.1}), {a:.3} Mpps with the af_packet uplink (x{:.1}); testpmd offered {offered:.3} Mpps; PMD cycles/packet kernel {kc:.0}, OVN {oc:.0}",
            o / k.max(1e-9),
            a / k.max(1e-9)
        );
        kcyc.push(kc);
        ocyc.push(oc);
        dk.push(k);
        dovn.push(o);
        daf.push(a);

        if egress_only {
            continue;
        }
        let mut t = Testpmd::start(&TestpmdSpec {
            prefix: format!("fvbl{rnd}"),
            netns: Some(&dp1.netns),
            cpu: 0,
            memory: mem.clone(),
            vdevs: vec![dp1.vdev(0), dp2.vdev(1)],
            forward_mode: "macswap".into(),
            app_args: vec![
                "--port-topology=loop".into(),
                "--txpkts=64".into(),
                format!("--eth-peer=0,{}", dp2.info.mac),
                format!("--eth-peer=1,{}", dp1.info.mac),
            ],
            log: work.path().join(format!("loop-{rep}.log")),
            interactive: true,
        })?;
        if !wait_vhost_up(&lab, &[&dp1, &dp2]) {
            bail!("vhost ports not up: {}", t.log_text());
        }
        let m = pod_loop_rate(&mut t)?;
        t.stop();
        println!("rep {rep}: DPDK pod <-> pod, same node: {m:.3} Mpps delivered");
        pp.push(m);
    }
    let _ = server.kill();
    let _ = server.wait();

    let (g, u, k, o, p) = (
        median(&tcp),
        median(&udp),
        median(&dk),
        median(&dovn),
        median(&pp),
    );
    let ratios: Vec<String> = dk
        .iter()
        .zip(&dovn)
        .map(|(k, o)| format!("{:.1}", o / k.max(1e-9)))
        .collect();
    println!();
    println!("medians of {} repetitions ({}s windows):", reps(), secs());
    println!("  kernel pod -> outside, kernel path   TCP {g:.2} Gbit/s   UDP 64 B {u:.3} Mpps");
    println!("  DPDK pod -> outside, kernel path     {k:.3} Mpps");
    println!(
        "  DPDK pod -> outside, OVN gw router   {o:.3} Mpps   (DPDK uplink; per repetition x{})",
        ratios.join(", x")
    );
    println!(
        "  DPDK pod -> outside, OVN gw router   {:.3} Mpps   (af_packet uplink, counted at the outside: x{:.2})",
        median(&daf),
        median(&daf) / k.max(1e-9)
    );
    println!("  DPDK pod <-> pod, same node          {p:.3} Mpps");
    println!(
        "  OVS PMD cycles per egress packet (TSC, includes time the PMD lost to other load): kernel path {:.0}, OVN gateway router {:.0}",
        median(&kcyc),
        median(&ocyc)
    );
    println!("  per egress packet, every window (medians):");
    for ((path, layout), w) in windows.iter().zip(&per_window) {
        let m = |f: fn(&Window) -> f64| median(&w.iter().map(f).collect::<Vec<f64>>());
        let name = match layout {
            Some(_) => format!("{} {}", path.name(), label(*layout)),
            None => path.name().to_string(),
        };
        println!(
            "    {name}: {:.3} Mpps, datapath passes {:.2}, conntrack ops {:.2}, PMD cycles {:.0}",
            m(|w| w.mpps),
            m(|w| w.passes),
            m(|w| w.ct),
            m(|w| w.cycles),
        );
    }
    println!("load average: start {load_start}, end {}", loadavg());
    drop(dp1);
    drop(dp2);
    drop(kp);
    drop(lab);
    drop(lease);
    println!(
        "egress-bench kernel_gbps={g:.2} dpdk_kernel_mpps={k:.3} dpdk_ovn_mpps={o:.3} dpdk_pod_pod_mpps={p:.3} ovn_vs_kernel={:.2}",
        o / k.max(1e-9)
    );
    Ok(())
}
