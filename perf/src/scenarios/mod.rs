//! The scenario families. Each pushes its measurements into the context as it goes; a family
//! that cannot run records why instead of a number.

pub mod bridge;
pub mod dpdk;
pub mod helper;
pub mod ipam;
pub mod kpath;
pub mod loopback;
pub mod ovs_veth;

use crate::config::{Config, Family};
use crate::model::Measurement;
use crate::progress::Progress;

pub struct Ctx {
    pub cfg: Config,
    pub progress: Progress,
    pub out: Vec<Measurement>,
    /// Short unique tag for names of namespaces, links, DPDK prefixes.
    pub tag: String,
    /// Where logs of daemons and testpmds go (inside the output directory).
    pub logs: std::path::PathBuf,
}

impl Ctx {
    pub fn push(&mut self, m: Measurement) {
        self.out.push(m);
    }

    /// `(sender, receiver)` cores of kernel-path traffic.
    pub fn kcores(&self) -> (u32, u32) {
        (self.cfg.cores.sender, self.cfg.cores.receiver)
    }

    pub fn enabled(&self, f: Family) -> bool {
        self.cfg.scenarios.contains(&f)
    }
}

/// Rough seconds a family takes with this config (for the ETA).
pub fn estimate(cfg: &Config, f: Family) -> f64 {
    let win = cfg.warmup_secs + cfg.duration_secs + 0.05;
    let reps = f64::from(cfg.repetitions);
    let sizes = cfg.frame_sizes.len() as f64;
    let kpath = reps * (2.0 * (cfg.duration_secs.ceil() + 0.4) + sizes * win)
        + f64::from(cfg.ping_count) * 0.012
        + 1.0;
    let dpdk_win = 2.0 + cfg.warmup_secs + reps.max(cfg.duration_secs);
    let pods = f64::from(cfg.pods_sequential + cfg.pods_concurrent);
    match f {
        Family::Loopback => kpath,
        Family::BridgeCni => kpath + pods * 0.1 + 1.0,
        Family::RawTestpmd => 4.0 + sizes * dpdk_win,
        Family::OvsVeth => 2.0 * kpath + pods * 0.4 + 10.0,
        Family::OvsDpdk => 8.0 + sizes * (dpdk_win + 3.0),
        Family::VhostHelper => 8.0 + 2.0 * sizes * (dpdk_win + 0.5),
        Family::ControlPlane => 0.0,
        Family::Ipam => reps * f64::from(cfg.ipam_ops) / 2e6 + 0.5,
    }
}

/// Runs every enabled family in a fixed order (baselines first, so a scenario's baseline
/// exists even if the scenario fails).
pub fn run_all(ctx: &mut Ctx) {
    let order = [
        Family::Loopback,
        Family::BridgeCni,
        Family::RawTestpmd,
        Family::OvsVeth,
        Family::OvsDpdk,
        Family::VhostHelper,
        Family::Ipam,
    ];
    for f in order {
        if !ctx.enabled(f) {
            continue;
        }
        let est = estimate(&ctx.cfg, f);
        let r = match f {
            Family::Loopback => loopback::run(ctx),
            Family::BridgeCni => bridge::run(ctx),
            Family::RawTestpmd => dpdk::run_raw(ctx),
            Family::OvsVeth => ovs_veth::run(ctx),
            Family::OvsDpdk => dpdk::run_ovs(ctx),
            Family::VhostHelper => helper::run(ctx),
            Family::Ipam => ipam::run(ctx),
            Family::ControlPlane => Ok(()),
        };
        if let Err(e) = r {
            let name = serde_json::to_value(f)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            eprintln!("!! {name}: {e:#}");
            ctx.push(Measurement::new(&name, "setup", "setup", None, "-").failed(e));
        }
        ctx.progress.family_done(est);
    }
}
