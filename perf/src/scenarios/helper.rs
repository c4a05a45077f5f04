//! FerrOVN DPDK pod on a kernel node: the pod's vhost-user socket is served by the ferrovn-vhost
//! helper (its library, in this process, one worker pinned to the helper core), which relays
//! into the kernel path through net_af_packet on a veth.
//!
//! - `same-node`: the veth's other end is the pod's port on a kernel node's br-int (testbed node:
//!   own netns, ovsdb-server, ovs-vswitchd netdev, ovn-controller; OVN logical switch), and the
//!   packets go to a kernel pod on the same switch: the whole FerrOVN path.
//! - `relay-only`: the veth's other end is a kernel pod's eth0 directly (no OVS): what the
//!   relay alone delivers.
//!
//! The rate is packets arriving on the kernel pod's eth0 per second (1 s windows).

use super::Ctx;
use super::dpdk::{Memory, Tpmd};
use crate::model::Measurement;
use anyhow::{Result, bail};
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::process::run_cmd;
use ferrovn_vhost::cores::format_core_list;
use ferrovn_vhost::dpdk::Eal;
use ferrovn_vhost::helper::{Helper, HelperConfig};
use ferrovn_vhost::protocol::{KernelKind, PortSpec};
use std::time::{Duration, Instant};

const POD_MAC: &str = "0a:58:0a:12:00:0a";
const POD_IP: &str = "10.18.0.10";
const KPOD_MAC: &str = "0a:58:0a:12:00:0b";
const KPOD_IP: &str = "10.18.0.11";

/// Link deleted on drop.
struct Link(String);
impl Drop for Link {
    fn drop(&mut self) {
        let _ = run_cmd("del link", 10, "ip", ["link", "del", &self.0]);
    }
}

/// Helper shut down and its runtime dir removed on drop.
struct HelperGuard(Helper, String);
impl Drop for HelperGuard {
    fn drop(&mut self) {
        self.0.shutdown();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.1));
    }
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd("ip", 10, "ip", args).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// A veth `host_if` (this namespace) <-> `peer` (in `peer_ns`), both up.
fn veth(host_if: &str, peer: &str, peer_ns: &Netns) -> Result<Link> {
    ip(&[
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        peer_ns.name(),
    ])?;
    let l = Link(host_if.into());
    ip(&["link", "set", host_if, "up"])?;
    peer_ns
        .ip(["link", "set", peer, "up"])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(l)
}

struct Phase<'a> {
    placement: &'a str,
    kernel_iface: &'a str,
    sink: &'a Netns,
    note: &'a str,
    /// Ping the DPDK pod (testpmd in icmpecho mode) from the sink pod afterwards.
    ping: bool,
}

fn phase(ctx: &mut Ctx, helper: &mut Helper, p: &Phase<'_>) -> Result<()> {
    let tag = ctx.tag.clone();
    let (pod_cpu, helper_cpu) = (ctx.cfg.cores.testpmd[0], ctx.cfg.cores.helper[0]);
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("pod.sock");
    helper.add_port(PortSpec {
        name: "perf".into(),
        socket: sock.clone(),
        kernel_iface: p.kernel_iface.into(),
        kernel: KernelKind::AfPacket,
        mac: None,
    })?;
    let logs = ctx.logs.clone();
    let r = (|| -> Result<()> {
        let mut pod = Tpmd::start(
            &format!("fvp-{tag}-hpod"),
            &Memory::NoHuge,
            pod_cpu,
            &[format!(
                "net_virtio_user0,path={},server=1,queues=1,mac={POD_MAC}",
                sock.display()
            )],
            &[
                "--forward-mode=txonly".into(),
                format!("--eth-peer=0,{KPOD_MAC}"),
                format!("--tx-ip={POD_IP},{KPOD_IP}"),
            ],
            &logs.join(format!("helper-pod-{}.log", p.placement)),
        )?;
        pod.wait_prompt(Duration::from_secs(20))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !helper.list().first().is_some_and(|x| x.pod_connected) {
            if Instant::now() > deadline {
                bail!("pod never connected to the helper");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let n = (ctx.cfg.duration_secs.round() as u32)
            .max(ctx.cfg.repetitions)
            .max(1);
        for &frame in &ctx.cfg.frame_sizes.clone() {
            ctx.progress.step(&format!(
                "vhost-helper {}: {frame} B pod (cpu{pod_cpu}) -> helper (cpu{helper_cpu}) -> kernel pod",
                p.placement
            ));
            let m = Measurement::new("vhost-helper", p.placement, "testpmd", Some(frame), "Mpps")
                .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
                .cores(2)
                .note(p.note);
            let r = (|| -> Result<Vec<f64>> {
                pod.send("stop")?;
                pod.send(&format!("set txpkts {frame}"))?;
                pod.send("start")?;
                std::thread::sleep(Duration::from_secs_f64(ctx.cfg.warmup_secs + 0.5));
                let mut out = Vec::new();
                let mut a = p.sink.rx_packets("eth0")?;
                let mut t = Instant::now();
                for _ in 0..n {
                    std::thread::sleep(Duration::from_secs(1));
                    let b = p.sink.rx_packets("eth0")?;
                    out.push(b.saturating_sub(a) as f64 / t.elapsed().as_secs_f64() / 1e6);
                    a = b;
                    t = Instant::now();
                }
                Ok(out)
            })();
            ctx.push(match r {
                Ok(s) => m.with_samples(s),
                Err(e) => m.failed(e),
            });
        }
        if p.ping {
            ctx.progress.step(&format!(
                "vhost-helper {}: ping kernel pod -> DPDK pod (testpmd icmpecho) x{}",
                p.placement, ctx.cfg.ping_count
            ));
            pod.send("stop")?;
            pod.send("set fwd icmpecho")?;
            pod.send("start")?;
            std::thread::sleep(Duration::from_millis(300));
            let m = Measurement::new("vhost-helper", p.placement, "ping", None, "ms")
                .baseline_of("bridge-cni/same-node/ping")
                .cores(2)
                .note("kernel pod -> OVS netdev + OVN -> veth -> ferrovn-vhost -> vhost-user -> testpmd icmpecho and back");
            ctx.push(
                match crate::kernel::ping_rtts(p.sink, POD_IP, ctx.cfg.ping_count) {
                    Ok(s) => m.with_samples(s),
                    Err(e) => m.failed(e),
                },
            );
        }
        Ok(())
    })();
    let _ = helper.remove_port("perf");
    r
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let tag = ctx.tag.clone();
    let (pod_cpu, helper_cpu) = (ctx.cfg.cores.testpmd[0], ctx.cfg.cores.helper[0]);
    for &frame in &ctx.cfg.frame_sizes.clone() {
        ctx.push(
            Measurement::new("vhost-helper", "cross-node", "testpmd", Some(frame), "Mpps")
                .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
                .unavailable("Geneve to a second kernel node adds its vswitchd and the receiver; on 2 cores the pod and the helper worker already take both"),
        );
    }
    if pod_cpu == helper_cpu {
        bail!(
            "cores.testpmd[0] and cores.helper[0] are both cpu{pod_cpu}: the pod and the helper worker both busy-poll"
        );
    }
    ctx.progress.step(&format!(
        "vhost-helper: kernel node (OVS netdev + OVN), EAL + helper worker on cpu{helper_cpu}"
    ));
    let short = &tag[..tag.len().min(6)];
    // kernel node with OVN, a kernel pod on it, and the veth the helper relays into
    let central = OvnCentral::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut node = Node::start(
        &format!("fvp-{tag}-hn"),
        &NodeConfig::plain(&format!("fvp-{tag}-hnode")),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    node.configure_ovn_with_vsctl(&central.sb_remote())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    node.start_ovn_controller()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let nb = |a: &[&str]| central.nbctl(a).map_err(|e| anyhow::anyhow!("{e}"));
    nb(&[
        "ls-add",
        "lsh",
        "--",
        "lsp-add",
        "lsh",
        "dpod",
        "--",
        "lsp-set-addresses",
        "dpod",
        &format!("{POD_MAC} {POD_IP}"),
        "--",
        "lsp-add",
        "lsh",
        "kpod",
        "--",
        "lsp-set-addresses",
        "kpod",
        &format!("{KPOD_MAC} {KPOD_IP}"),
    ])?;
    let kpod = Netns::create(&format!("fvp-{tag}-hkp")).map_err(|e| anyhow::anyhow!("{e}"))?;
    // kernel pod: eth0 in its namespace, its peer on br-int
    let kport = format!("fvpk{short}");
    ip(&[
        "-n",
        node.netns().name(),
        "link",
        "add",
        &kport,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        kpod.name(),
    ])?;
    ip(&["-n", node.netns().name(), "link", "set", &kport, "up"])?;
    for a in [
        vec!["link", "set", "eth0", "address", KPOD_MAC],
        vec!["addr", "add", &format!("{KPOD_IP}/24"), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
    ] {
        kpod.ip(a).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // the DPDK pod's kernel side: helper end here, OVS end on br-int
    let helper_if = format!("fvph{short}");
    let ovs_if = format!("fvpo{short}");
    let _hlink = veth(&helper_if, &ovs_if, node.netns())?;
    node.vsctl([
        "add-port".to_string(),
        "br-int".into(),
        kport.clone(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        kport.clone(),
        "external_ids:iface-id=kpod".into(),
        "--".into(),
        "add-port".into(),
        "br-int".into(),
        ovs_if.clone(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        ovs_if.clone(),
        "external_ids:iface-id=dpod".into(),
    ])
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    nb(&["--wait=hv", "--timeout=60", "sync"])?;
    node.wait_ovn_installed(&ovs_if, Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // relay-only sink: a veth straight into a namespace
    let sink = Netns::create(&format!("fvp-{tag}-hk")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let relay_if = format!("fvpr{short}");
    let _rlink = veth(&relay_if, "eth0", &sink)?;

    let prefix = format!("fvp-{tag}-helper");
    let eal = Eal::init(&ferrovn_vhost::eal_args(
        &prefix,
        512,
        &format_core_list(&[pod_cpu as usize, helper_cpu as usize]),
        &["--log-level=lib.vhost.config:error".into()],
    ))?;
    let helper = Helper::start(
        eal,
        &HelperConfig {
            cores: vec![helper_cpu as usize],
            idle_sleep: Duration::ZERO,
            mbufs: 16383,
            descriptors: 1024,
            state_file: None,
        },
    )?;
    let mut helper = HelperGuard(helper, prefix);
    let r1 = phase(
        ctx,
        &mut helper.0,
        &Phase {
            placement: "same-node",
            kernel_iface: &helper_if,
            sink: &kpod,
            note: "testpmd txonly -> ferrovn-vhost (1 worker) -> af_packet -> veth -> OVS netdev br-int + OVN switch -> kernel pod eth0 (OVS shares the cores)",
            ping: true,
        },
    );
    let r2 = phase(
        ctx,
        &mut helper.0,
        &Phase {
            placement: "relay-only",
            kernel_iface: &relay_if,
            sink: &sink,
            note: "testpmd txonly -> ferrovn-vhost (1 worker) -> af_packet -> veth -> kernel pod eth0, no OVS: the relay alone",
            ping: false,
        },
    );
    drop(helper);
    let _ = node.vsctl([
        "--if-exists",
        "del-port",
        "br-int",
        &ovs_if,
        "--",
        "--if-exists",
        "del-port",
        "br-int",
        &kport,
    ]);
    drop(node);
    drop(central);
    r1.and(r2)
}
