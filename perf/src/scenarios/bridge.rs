//! Baseline: Debian's reference `bridge` + `host-local` CNI plugins (/usr/lib/cni), veth pods
//! on a Linux bridge in a private "host" namespace. Measures the kernel path and, when the
//! control-plane family is on, ADD -> ready latency and pods/s of the plugin.

use super::Ctx;
use super::kpath::{KPath, measure};
use crate::config::Family;
use crate::kernel;
use crate::model::Measurement;
use anyhow::{Context, Result, bail};
use ferrovn_testkit::cni::run_plugin_in;
use ferrovn_testkit::netns::Netns;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// Runs ADDs of `n` pods, sequentially or all at once on threads; returns pods and their
/// ADD -> ready milliseconds, and the wall time of the whole batch in seconds.
pub fn batch<P: Send, F>(
    n: usize,
    first: usize,
    concurrent: bool,
    add: &F,
) -> Result<(Vec<P>, Vec<f64>, f64)>
where
    F: Fn(usize) -> Result<(P, f64)> + Sync,
{
    let t = Instant::now();
    let results: Vec<Result<(P, f64)>> = if concurrent {
        std::thread::scope(|s| {
            let hs: Vec<_> = (first..first + n)
                .map(|i| s.spawn(move || add(i)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("ADD worker panicked")))
                })
                .collect()
        })
    } else {
        (first..first + n).map(add).collect()
    };
    let wall = t.elapsed().as_secs_f64();
    let mut pods = Vec::new();
    let mut ms = Vec::new();
    for r in results {
        let (p, l) = r?;
        pods.push(p);
        ms.push(l);
    }
    Ok((pods, ms, wall))
}

/// First answered ping (one ping process sending every 20 ms).
pub fn ping_ready(ns: &Netns, dst: &str) -> Result<()> {
    let ok = ns
        .command("ping")
        .args(["-c1", "-w10", "-i0.02", "-q", dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("{}: no answer from {dst} within 10 s", ns.name());
    }
    Ok(())
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let dir = Path::new(PLUGIN_DIR);
    for p in ["bridge", "host-local"] {
        if !dir.join(p).exists() {
            ctx.push(
                Measurement::new("bridge-cni", "same-node", "tcp", None, "Gbit/s").unavailable(
                    format!("{PLUGIN_DIR}/{p} missing (containernetworking-plugins)"),
                ),
            );
            return Ok(());
        }
    }
    ctx.progress
        .step("bridge-cni: host namespace + pods via /usr/lib/cni/bridge");
    let tag = ctx.tag.clone();
    let host = Netns::create(&format!("fvp-{tag}-brh")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = tempfile::tempdir()?;
    let conf = serde_json::to_vec(&serde_json::json!({
        "cniVersion": "1.0.0", "name": "perfbr", "type": "bridge", "bridge": "fvpbr0",
        "isGateway": true, "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "gateway": "10.99.0.1",
                 "dataDir": data.path()},
    }))?;
    let bridge = dir.join("bridge");
    let call = |cmd: &str, cid: &str, netns: &str| -> Result<()> {
        let out = run_plugin_in(&host, &bridge, cmd, cid, netns, &conf)?;
        if out.exit_code != 0 {
            bail!("bridge {cmd}: {}", out.stdout);
        }
        Ok(())
    };
    let add = |i: usize| -> Result<(Netns, f64)> {
        let ns = Netns::create(&format!("fvp-{tag}-b{i}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        call(
            "ADD",
            &format!("perfbr{tag}{i}"),
            &ns.path().display().to_string(),
        )?;
        ping_ready(&ns, "10.99.0.1")?;
        Ok((ns, t.elapsed().as_secs_f64() * 1e3))
    };
    let cp = ctx.enabled(Family::ControlPlane);
    let (seq_n, conc_n) = if cp {
        (
            ctx.cfg.pods_sequential.max(2) as usize,
            ctx.cfg.pods_concurrent as usize,
        )
    } else {
        (2, 0)
    };
    if cp {
        ctx.progress.step(&format!(
            "bridge-cni: {seq_n} sequential + {conc_n} concurrent ADDs"
        ));
    }
    let (mut pods, seq_ms, _) = batch(seq_n, 0, false, &add)?;
    if cp {
        ctx.push(
            Measurement::new("bridge-cni", "same-node", "add-ready", None, "ms")
                .as_baseline()
                .cores(0)
                .note("plugin exec until the pod's first answered ping to its gateway")
                .with_samples(seq_ms),
        );
        if conc_n > 0 {
            let (more, _, wall) = batch(conc_n, seq_n, true, &add)?;
            pods.extend(more);
            ctx.push(
                Measurement::new("bridge-cni", "same-node", "pods-per-s", None, "pods/s")
                    .as_baseline()
                    .note(format!("{conc_n} ADDs at once, all ready"))
                    .with_samples(vec![conc_n as f64 / wall]),
            );
        }
    }
    let dst = kernel::ipv4(&pods[1], "eth0")?;
    let mtu = kernel::mtu(&pods[1], "eth0").context("pod MTU")?;
    measure(
        ctx,
        &KPath {
            path: "bridge-cni",
            placement: "same-node",
            client: &pods[0],
            server: &pods[1],
            dst: &dst,
            mtu,
            baseline: Some(("loopback", "host")),
            is_baseline: true,
            note: "",
        },
    );
    for (i, p) in pods.iter().enumerate() {
        let _ = call(
            "DEL",
            &format!("perfbr{tag}{i}"),
            &p.path().display().to_string(),
        );
    }
    let _ = host.ip(["link", "del", "fvpbr0"]);
    Ok(())
}
