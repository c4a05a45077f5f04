//! Control-plane benchmarks: `cargo run --release -p ferrovn-control --example bench`.
//!
//! Each section measures one thing, prints human-readable detail lines, and adds `key=value`
//! fields to the report; the last line is `control-bench <fields...>` for scripts.
//! To add a section (e.g. NB apply, RSS), write `fn my_section(report: &mut Report) -> Result`
//! and append it to `SECTIONS`; it may be skipped with a detail line when its prerequisites
//! (ovsdb-server...) are missing, and its field then reads `n/a`.

use std::error::Error;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrovn_control::ipam::{
    AllocationRequest, ExistingAllocation, Ipam, OwnerKey, RecordSource, SubnetSpec,
};

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// The `key=value` fields of the last line, in the order they were added.
#[derive(Default)]
struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
    fn field(&mut self, key: &'static str, value: impl ToString) {
        self.fields.push((key, value.to_string()));
    }

    fn last_line(&self) -> String {
        let mut line = String::from("control-bench");
        for (k, v) in &self.fields {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }
}

type Section = fn(&mut Report) -> Result;

/// Run in order; later helpers append theirs (apply_10k_pods_per_s, rss_100k_mb).
const SECTIONS: &[(&str, Section)] = &[("ipam_ops", ipam_ops), ("ipam_recovery", ipam_recovery)];

fn main() -> Result {
    let mut report = Report::default();
    // CONTROL_BENCH_ONLY=a,b runs only those sections (for profiling one of them).
    let only = std::env::var("CONTROL_BENCH_ONLY").ok();
    for (name, section) in SECTIONS {
        if let Some(only) = &only
            && !only.split(',').any(|o| o == *name)
        {
            continue;
        }
        let started = Instant::now();
        section(&mut report).map_err(|e| format!("section {name}: {e}"))?;
        println!(
            "# section {name} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", report.last_line());
    Ok(())
}

/// Deterministic pseudo-random numbers (splitmix64), so every run does the same work.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn pod(i: usize) -> OwnerKey {
    OwnerKey::new(format!("ns-{}", i % 200), format!("pod-{i}"), "ovn")
}

fn subnet(name: &str, v4: &str, v6: Option<&str>) -> Result<SubnetSpec> {
    let mut s = SubnetSpec::new(name, Some(v4.parse()?), v6.map(str::parse).transpose()?);
    s.v4_gateway = s.v4.and_then(|n| n.hosts().next());
    s.v6_gateway = s.v6.map(|n| (u128::from(n.network()) + 1).into());
    Ok(s)
}

/// Steady-state churn: `live` pods held, then `ops` operations alternating a release of a
/// random holder and an allocation for a new pod. Returns operations per second.
fn churn(spec: SubnetSpec, live: usize, ops: usize) -> Result<f64> {
    let name = spec.name.clone();
    let mut ipam = Ipam::new(1);
    ipam.upsert_subnet(spec)?;
    let mut holders: Vec<usize> = (0..live).collect();
    for &i in &holders {
        ipam.allocate(&AllocationRequest::dynamic(pod(i), &name))?;
    }
    let mut rng = Rng(7);
    let requests: Vec<(usize, AllocationRequest)> = (live..live + ops / 2)
        .map(|i| (i, AllocationRequest::dynamic(pod(i), &name)))
        .collect();
    let owners: Vec<OwnerKey> = (0..live + ops / 2).map(pod).collect();
    let started = Instant::now();
    for (i, req) in &requests {
        let victim = rng.below(holders.len());
        black_box(ipam.release(&owners[holders[victim]]));
        black_box(ipam.allocate(req)?);
        holders[victim] = *i;
    }
    let elapsed = started.elapsed();
    // Sanity: the churn neither leaked nor double-counted an address.
    let counts = ipam.counts(&name).ok_or("subnet vanished")?;
    if counts.v4_using != live as u128 || ipam.len() != live {
        return Err(format!("churn left {} holders, expected {live}", ipam.len()).into());
    }
    Ok((requests.len() * 2) as f64 / elapsed.as_secs_f64())
}

fn ipam_ops(report: &mut Report) -> Result {
    const LIVE: usize = 100_000;
    const OPS: usize = 2_000_000;
    let v4 = churn(subnet("ovn-default", "10.0.0.0/8", None)?, LIVE, OPS)?;
    println!("ipam: IPv4 /8, {LIVE} held, {OPS} allocate+release ops: {v4:.0} ops/s");
    let dual = churn(subnet("dual", "10.0.0.0/8", Some("fd00::/64"))?, LIVE, OPS)?;
    println!("ipam: dual stack /8 + /64, {LIVE} held, {OPS} ops: {dual:.0} ops/s");
    report.field("ipam_ops_per_s", format!("{v4:.0}"));
    Ok(())
}

/// 100k pods over 50 dual-stack subnets, each found twice (IP object + pod annotation) in
/// shuffled order, as after a controller restart.
fn recovery_input(pods: usize) -> Result<(Vec<SubnetSpec>, Vec<ExistingAllocation>)> {
    const SUBNETS: usize = 50;
    let specs = (0..SUBNETS)
        .map(|s| {
            subnet(
                &format!("subnet-{s}"),
                &format!("10.{s}.0.0/16"),
                Some(&format!("fd00:{s:x}::/64")),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut live = Ipam::new(3);
    for spec in &specs {
        live.upsert_subnet(spec.clone())?;
    }
    for i in 0..pods {
        live.allocate(&AllocationRequest::dynamic(
            pod(i),
            format!("subnet-{}", i % SUBNETS),
        ))?;
    }
    let mut records = live.export(RecordSource::IpObject);
    records.extend(live.export(RecordSource::PodAnnotation));
    let mut rng = Rng(11);
    for i in (1..records.len()).rev() {
        records.swap(i, rng.below(i + 1));
    }
    Ok((specs, records))
}

fn ipam_recovery(report: &mut Report) -> Result {
    const PODS: usize = 100_000;
    let (specs, records) = recovery_input(PODS)?;
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let input = records.clone();
        let started = Instant::now();
        let r = Ipam::rebuild(3, specs.clone(), Vec::new(), input);
        times.push(started.elapsed());
        if r.ipam.len() != PODS || !r.conflicts.is_empty() {
            return Err(format!(
                "rebuild kept {} of {PODS} pods with {} conflicts",
                r.ipam.len(),
                r.conflicts.len()
            )
            .into());
        }
        // A rebuilt IPAM must go on allocating immediately.
        let mut ipam = r.ipam;
        let a = ipam.allocate(&AllocationRequest::dynamic(pod(PODS), "subnet-0"))?;
        black_box(
            a.ips()
                .first()
                .copied()
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        );
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "ipam: rebuild of {PODS} pods ({} records, 2 sources, 50 dual-stack subnets): median {:.1} ms (min {:.1}, max {:.1})",
        records.len(),
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
    report.field(
        "recover_100k_ms",
        format!("{:.0}", median.as_secs_f64() * 1e3),
    );
    Ok(())
}
