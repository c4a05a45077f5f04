//! IPAM ops/s: the ferrovn-control IPAM library called directly (allocate then release
//! dynamic addresses for pods in one large subnet).

use super::Ctx;
use crate::model::Measurement;
use ferrovn_control::ipam::{AllocationRequest, Ipam, OwnerKey, SubnetSpec};
use std::time::Instant;

/// One repetition: `ops / 2` allocations then as many releases; returns operations per second.
pub fn churn(ops: u32) -> anyhow::Result<f64> {
    let half = (ops / 2).max(1) as usize;
    let mut ipam = Ipam::new(1);
    let mut spec = SubnetSpec::new("perf", Some("10.128.0.0/10".parse()?), None);
    spec.v4_gateway = spec.v4.and_then(|n| n.hosts().next());
    ipam.upsert_subnet(spec)?;
    let owners: Vec<OwnerKey> = (0..half)
        .map(|i| OwnerKey::new(format!("ns-{}", i % 100), format!("pod-{i}"), "ovn"))
        .collect();
    let reqs: Vec<AllocationRequest> = owners
        .iter()
        .map(|o| AllocationRequest::dynamic(o.clone(), "perf"))
        .collect();
    let t = Instant::now();
    for r in &reqs {
        ipam.allocate(r)?;
    }
    for o in &owners {
        if ipam.release(o).is_none() {
            anyhow::bail!("release of {o} found nothing");
        }
    }
    Ok((2 * half) as f64 / t.elapsed().as_secs_f64())
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let reps = ctx.cfg.repetitions;
    let ops = ctx.cfg.ipam_ops;
    ctx.progress
        .step(&format!("ipam: {reps} x {ops} allocate/release"));
    let mut samples = Vec::new();
    for _ in 0..reps {
        samples.push(churn(ops)?);
    }
    ctx.push(
        Measurement::new("ipam", "local", "ops", None, "ops/s")
            .cores(1)
            .note(format!(
                "{ops} ops per sample, one /10 subnet, half allocate half release"
            ))
            .with_samples(samples),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn churn_counts_operations() {
        let r = super::churn(1000).expect("churn");
        assert!(r.is_finite() && r > 0.0);
    }
}
