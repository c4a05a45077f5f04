//! FerrOVN DPDK pod on a kernel node: the pod's vhost-user socket is served by the ferrovn-vhost
//! helper (its library, in this process, one worker pinned to the helper core), which relays
//! into the kernel path through net_af_packet on a veth whose far end is a kernel pod's eth0.
//! The rate is packets arriving on that eth0 per second (1 s windows).

use super::Ctx;
use super::dpdk::{Memory, Tpmd};
use crate::model::Measurement;
use anyhow::{Context, Result, bail};
use ferrovn_dataplane::testbed::{Netns, run_cmd};
use ferrovn_vhost::cores::format_core_list;
use ferrovn_vhost::dpdk::Eal;
use ferrovn_vhost::helper::{Helper, HelperConfig};
use ferrovn_vhost::protocol::{KernelKind, PortSpec};
use std::time::{Duration, Instant};

fn rx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns
        .ip(["-j", "-s", "link", "show", "dev", dev])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("stats64.rx.packets")
}

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

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let tag = ctx.tag.clone();
    let (pod_cpu, helper_cpu) = (ctx.cfg.cores.testpmd[0], ctx.cfg.cores.helper[0]);
    for &frame in &ctx.cfg.frame_sizes.clone() {
        ctx.push(
            Measurement::new("vhost-helper", "cross-node", "testpmd", Some(frame), "Mpps")
                .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
                .unavailable("needs the helper's kernel side on OVS with a Geneve peer; on 2 cores the OVS netdev thread has no core left beside the pod and the helper worker"),
        );
    }
    if pod_cpu == helper_cpu {
        bail!(
            "cores.testpmd[0] and cores.helper[0] are both cpu{pod_cpu}: the pod and the helper worker both busy-poll"
        );
    }
    ctx.progress.step(&format!(
        "vhost-helper: EAL + helper worker on cpu{helper_cpu}, kernel pod veth"
    ));
    let sink = Netns::create(&format!("fvp-{tag}-hk")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let host_if = format!("fvph{}", &tag[..tag.len().min(8)]);
    run_cmd(
        "veth",
        10,
        "ip",
        [
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            sink.name(),
        ],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _link = Link(host_if.clone());
    run_cmd("up", 10, "ip", ["link", "set", &host_if, "up"]).map_err(|e| anyhow::anyhow!("{e}"))?;
    sink.ip(["link", "set", "eth0", "up"])
        .map_err(|e| anyhow::anyhow!("{e}"))?;

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
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("pod.sock");
    helper.0.add_port(PortSpec {
        name: "perf".into(),
        socket: sock.clone(),
        kernel_iface: host_if.clone(),
        kernel: KernelKind::AfPacket,
        mac: None,
    })?;
    let logs = ctx.logs.clone();
    let mem = Memory::NoHuge;
    let mut pod = Tpmd::start(
        &format!("fvp-{tag}-hpod"),
        &mem,
        pod_cpu,
        &[format!(
            "net_virtio_user0,path={},server=1,queues=1,mac=0a:58:0a:63:08:02",
            sock.display()
        )],
        &["--forward-mode=txonly".into()],
        &logs.join("helper-pod.log"),
    )?;
    pod.wait_prompt(Duration::from_secs(20))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !helper.0.list().first().is_some_and(|p| p.pod_connected) {
        if Instant::now() > deadline {
            bail!("pod never connected to the helper");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = (ctx.cfg.duration_secs.round() as u32)
        .max(ctx.cfg.repetitions)
        .max(1);
    for &frame in &ctx.cfg.frame_sizes.clone() {
        ctx.progress.step(&format!("vhost-helper: {frame} B pod (cpu{pod_cpu}) -> helper (cpu{helper_cpu}) -> veth -> kernel pod"));
        let m = Measurement::new("vhost-helper", "same-node", "testpmd", Some(frame), "Mpps")
            .baseline_of(format!("raw-testpmd/same-node/testpmd/{frame}"))
            .cores(2)
            .note("testpmd txonly -> ferrovn-vhost relay (1 worker) -> af_packet -> veth -> kernel pod; counted at the pod's eth0; no OVS hop yet");
        let r = (|| -> Result<Vec<f64>> {
            pod.send("stop")?;
            pod.send(&format!("set txpkts {frame}"))?;
            pod.send("start")?;
            std::thread::sleep(Duration::from_secs_f64(ctx.cfg.warmup_secs + 0.5));
            let mut out = Vec::new();
            let mut a = rx_packets(&sink, "eth0")?;
            let mut t = Instant::now();
            for _ in 0..n {
                std::thread::sleep(Duration::from_secs(1));
                let b = rx_packets(&sink, "eth0")?;
                out.push((b - a) as f64 / t.elapsed().as_secs_f64() / 1e6);
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
    drop(pod);
    let _ = helper.0.remove_port("perf");
    drop(helper);
    Ok(())
}
