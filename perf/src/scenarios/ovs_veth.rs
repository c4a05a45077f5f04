//! FerrOVN kernel pods: two kernel-profile nodes (network namespaces with their own OVS netdev
//! datapath, ovn-controller and ferrovn-node agent, Geneve over a veth underlay) from the
//! dataplane testbed; pods made by the ferrovn-cni plugin as a runtime would. Measures the
//! veth path same node and cross node, and (control-plane family) ADD -> ready and pods/s.

use super::Ctx;
use super::bridge::{batch, ping_ready};
use super::kpath::{KPath, measure};
use crate::config::Family;
use crate::kernel;
use crate::model::Measurement;
use anyhow::{Context, Result, bail};
use ferrovn_testkit::cluster::{
    Cluster, WIDE_POD_SUBNET, add_switch_with_router, numbered_pods, wide_pod_address,
};
use ferrovn_testkit::cni::{CniCall, cni_netconf, run_cni};
use ferrovn_testkit::netns::Netns;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A workspace binary next to this one (same profile). An existing one is used as is (build
/// them together: `cargo build --release -p ferrovn-perf -p ferrovn-dataplane -p ferrovn-cni`);
/// a missing one is built, and FERROVN_PERF_REBUILD=1 rebuilds it first.
pub fn sibling_binary(package: &str, bin: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("exe dir")?.to_path_buf();
    // tests run from <target>/<profile>/deps
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(bin);
    if std::env::var_os("FERROVN_PERF_REBUILD").is_none() && path.exists() {
        return Ok(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        package,
        "--bin",
        bin,
        "--manifest-path",
    ])
    .arg(&manifest);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let built = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if path.exists() {
        Ok(path)
    } else if built {
        bail!("{} missing after cargo build", path.display())
    } else {
        bail!(
            "cargo build -p {package} --bin {bin} failed and {} does not exist",
            path.display()
        )
    }
}

pub struct Pod {
    pub ns: Netns,
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let cp = ctx.enabled(Family::ControlPlane);
    let (seq_n, conc_n) = if cp {
        (
            ctx.cfg.pods_sequential.max(2) as usize,
            ctx.cfg.pods_concurrent as usize,
        )
    } else {
        (2, 0)
    };
    ctx.progress
        .step("ovs-veth: locating (or building) ferrovn-node and ferrovn-cni");
    let agent = sibling_binary("ferrovn-dataplane", "ferrovn-node")?;
    let plugin = sibling_binary("ferrovn-cni", "ferrovn-cni")?;
    ctx.progress
        .step("ovs-veth: OVN central + two kernel nodes (netns, OVS netdev, Geneve)");
    let cluster = Cluster::start(&agent, [&["--gc-interval-secs=0"]; 2])?;
    add_switch_with_router(&cluster.tb.central, &WIDE_POD_SUBNET)?;
    // the controller's part, done before the runtime's ADD: ports and allocations exist
    let total = seq_n + conc_n + 1;
    cluster.allocate_pods(&WIDE_POD_SUBNET, &numbered_pods(total))?;
    let tb = &cluster.tb;

    let tag = ctx.tag.clone();
    let sockets = [tb.nodes[0].agent_socket(), tb.nodes[1].agent_socket()];
    let add = |node: usize, i: usize| -> Result<(Pod, f64)> {
        let name = format!("p{i}");
        let ns = Netns::create(&format!("fvp-{tag}-o{i}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let conf = cni_netconf("1.0.0", "ovn", &sockets[node], &json!({}));
        let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
        let netns = ns.path().display().to_string();
        let cid = format!("perf{tag}{i}");
        let t = Instant::now();
        let out = run_cni(
            &plugin,
            &CniCall {
                command: "ADD",
                container_id: &cid,
                netns: &netns,
                ifname: "eth0",
                args: &args,
                stdin: &conf,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if out.exit_code != 0 {
            bail!("ADD {name}: {} {}", out.stdout, out.stderr);
        }
        ping_ready(&ns, "10.16.0.1")?;
        Ok((Pod { ns }, t.elapsed().as_secs_f64() * 1e3))
    };
    if cp {
        ctx.progress.step(&format!(
            "ovs-veth: {seq_n} sequential + {conc_n} concurrent ADDs via ferrovn-cni"
        ));
    }
    let (mut pods, seq_ms, _) = batch(seq_n, 0, false, &|i| add(0, i))?;
    if cp {
        ctx.push(
            Measurement::new("ovs-veth", "same-node", "add-ready", None, "ms")
                .baseline_of("bridge-cni/same-node/add-ready")
                .cores(0)
                .note("ferrovn-cni -> ferrovn-node -> OVS port -> ovn-installed, until the first answered ping to the gateway")
                .with_samples(seq_ms),
        );
        if conc_n > 0 {
            let (more, _, wall) = batch(conc_n, seq_n, true, &|i| add(0, i))?;
            pods.extend(more);
            ctx.push(
                Measurement::new("ovs-veth", "same-node", "pods-per-s", None, "pods/s")
                    .baseline_of("bridge-cni/same-node/pods-per-s")
                    .note(format!("{conc_n} ADDs at once, all ready"))
                    .with_samples(vec![conc_n as f64 / wall]),
            );
        }
    }
    let (remote, _) = add(1, seq_n + conc_n)?;
    let (ip1, _) = wide_pod_address(1);
    let (ip_remote, _) = wide_pod_address(seq_n + conc_n);
    let mtu = kernel::mtu(&pods[1].ns, "eth0").unwrap_or(1400);
    measure(
        ctx,
        &KPath {
            path: "ovs-veth",
            placement: "same-node",
            client: &pods[0].ns,
            server: &pods[1].ns,
            dst: &ip1,
            mtu,
            baseline: Some(("bridge-cni", "same-node")),
            is_baseline: false,
            note: "OVN logical switch, OVS netdev datapath",
        },
    );
    // the first packet through a new tunnel can be lost while OVS resolves the remote MAC
    let _ = pods[0].ns.ping_until(&ip_remote, Duration::from_secs(5));
    measure(
        ctx,
        &KPath {
            path: "ovs-veth",
            placement: "cross-node",
            client: &pods[0].ns,
            server: &remote.ns,
            dst: &ip_remote,
            mtu,
            baseline: Some(("bridge-cni", "same-node")),
            is_baseline: false,
            note: "Geneve in the userspace datapath over a veth underlay; baseline is the same-host bridge",
        },
    );
    drop(remote);
    drop(pods);
    Ok(())
}
