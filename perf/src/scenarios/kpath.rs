//! One kernel pod path (client namespace -> server address): TCP and UDP (iperf3), UDP packet
//! rate per frame size (sendmmsg flood), ping RTTs.

use super::Ctx;
use crate::kernel;
use crate::model::Measurement;
use ferrovn_testkit::netns::Netns;

pub struct KPath<'a> {
    pub path: &'a str,
    pub placement: &'a str,
    pub client: &'a Netns,
    pub server: &'a Netns,
    pub dst: &'a str,
    /// MTU of the pod interface (frames are clamped to it).
    pub mtu: u32,
    /// `(path, placement)` of the baseline rows.
    pub baseline: Option<(&'a str, &'a str)>,
    pub is_baseline: bool,
    pub note: &'a str,
}

impl KPath<'_> {
    fn row(&self, test: &str, frame: Option<u32>, unit: &str) -> Measurement {
        let mut m = Measurement::new(self.path, self.placement, test, frame, unit)
            .cores(2)
            .note(self.note);
        if let Some((p, pl)) = self.baseline {
            let id = match frame {
                Some(f) => format!("{p}/{pl}/{test}/{f}"),
                None => format!("{p}/{pl}/{test}"),
            };
            m = m.baseline_of(id);
        }
        if self.is_baseline {
            m = m.as_baseline();
        }
        m
    }
}

fn collect(
    reps: u32,
    mut one: impl FnMut() -> anyhow::Result<f64>,
) -> Result<Vec<f64>, anyhow::Error> {
    let mut v = Vec::new();
    let mut last_err = None;
    for _ in 0..reps {
        match one() {
            Ok(x) => v.push(x),
            Err(e) => last_err = Some(e),
        }
    }
    match (v.is_empty(), last_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(v),
    }
}

pub fn measure(ctx: &mut Ctx, k: &KPath<'_>) {
    let cfg = ctx.cfg.clone();
    let cores = ctx.kcores();
    let label = format!("{} {}", k.path, k.placement);

    ctx.progress.step(&format!(
        "{label}: TCP (iperf3, {} x {} s)",
        cfg.repetitions, cfg.duration_secs
    ));
    let r = collect(cfg.repetitions, || {
        kernel::iperf_tcp(k.client, k.server, k.dst, cfg.duration_secs, cores)
    });
    let m = k.row("tcp", None, "Gbit/s");
    ctx.push(match r {
        Ok(s) => m.with_samples(s),
        Err(e) => m.failed(e),
    });

    let big = kernel::fit_frame(1500, k.mtu);
    ctx.progress
        .step(&format!("{label}: UDP (iperf3, {big} B frames)"));
    let r = collect(cfg.repetitions, || {
        kernel::iperf_udp(
            k.client,
            k.server,
            k.dst,
            cfg.duration_secs,
            kernel::udp_payload(big),
            cores,
        )
    });
    let m = k.row("udp", None, "Gbit/s").note(
        format!("{}; {big} B frames, unlimited offered load", k.note).trim_start_matches("; "),
    );
    ctx.push(match r {
        Ok(s) => m.with_samples(s),
        Err(e) => m.failed(e),
    });

    for &frame in &cfg.frame_sizes {
        let sent = kernel::fit_frame(frame, k.mtu);
        ctx.progress.step(&format!("{label}: UDP flood {frame} B"));
        let mut offered = Vec::new();
        let r = collect(cfg.repetitions, || {
            let f = kernel::udp_flood(
                k.client,
                k.server,
                k.dst,
                kernel::udp_payload(sent),
                cfg.warmup_secs,
                cfg.duration_secs,
                cores,
            )?;
            offered.push(f.tx_mpps);
            Ok(f.rx_mpps)
        });
        let mut note = k.note.to_string();
        if sent != frame {
            note = format!("{note} sent as {sent} B frames (pod MTU {})", k.mtu);
        }
        if let Some(s) = crate::stats::summarize(&offered) {
            note = format!("{note}; sender offered {:.3} Mpps (median)", s.median);
        }
        let m = k
            .row("udp-flood", Some(frame), "Mpps")
            .note(note.trim_start_matches("; ").trim_start());
        ctx.push(match r {
            Ok(s) => m.with_samples(s),
            Err(e) => m.failed(e),
        });
    }

    ctx.progress
        .step(&format!("{label}: ping x{}", cfg.ping_count));
    let m = k.row("ping", None, "ms").cores(1);
    ctx.push(match kernel::ping_rtts(k.client, k.dst, cfg.ping_count) {
        Ok(s) => m.with_samples(s),
        Err(e) => m.failed(e),
    });
}
