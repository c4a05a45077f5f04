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
const SECTIONS: &[(&str, Section)] = &[
    ("ipam_ops", ipam_ops),
    ("ipam_recovery", ipam_recovery),
    ("nb_apply", nb_apply),
    ("controller_rss", controller_rss),
];

fn main() -> Result {
    // The RSS section measures a fresh child process of this program (see `controller_rss`).
    if let Ok(pods) = std::env::var(RSS_CHILD_ENV) {
        return rss_child(&pods);
    }
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
    let mut cpu: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let input = records.clone();
        let started = Instant::now();
        let cpu_before = thread_cpu_time();
        let r = Ipam::rebuild(3, specs.clone(), Vec::new(), input);
        times.push(started.elapsed());
        if let (Some(a), Some(b)) = (cpu_before, thread_cpu_time()) {
            cpu.push(b.saturating_sub(a));
        }
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
    if !cpu.is_empty() {
        cpu.sort();
        println!(
            "ipam: rebuild on-CPU time (excludes waiting for a core on a busy machine): median {:.1} ms",
            cpu[cpu.len() / 2].as_secs_f64() * 1e3
        );
    }
    report.field(
        "recover_100k_ms",
        format!("{:.0}", median.as_secs_f64() * 1e3),
    );
    Ok(())
}

/// Time this thread spent on a CPU (Linux schedstat), to tell work from waiting when other
/// jobs share the machine; None where unavailable.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

// ---------------------------------------------------------------------------------------------
// NB apply and controller memory (planner/reconciler/controller sections)

const NODES: usize = 200;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Plan + apply of 10k pods on 200 nodes into a fresh NB ovsdb-server, end to end: IPAM
/// allocation of every pod and node, planning, the diff against the (empty) replica, the
/// batched transactions, and waiting until the replica shows every row.
fn nb_apply(report: &mut Report) -> Result {
    use ferrovn_control::controller::desired::node_owner;
    use ferrovn_control::plan::{
        DEFAULT_ROUTER, Desired, NodeIntent, PortIntent, SubnetIntent, VpcIntent, plan,
    };
    use ferrovn_control::reconcile::NbSync;
    use ferrovn_testkit::ovs_paths::nb_schema;
    use ferrovn_testkit::ovsdb::OvsdbServer;

    const PODS: usize = 10_000;
    const BATCH: usize = 2_000;
    let server = match OvsdbServer::start(nb_schema()) {
        Ok(s) => s,
        Err(e) => {
            println!("nb_apply: skipped, no ovsdb-server: {e}");
            report.field("apply_10k_pods_per_s", "n/a");
            return Ok(());
        }
    };
    let rt = runtime()?;
    rt.block_on(async {
        let sync = NbSync::connect(&server.remote(), BATCH).await?;
        let started = Instant::now();

        let mut ipam = Ipam::new(5);
        ipam.upsert_subnet(subnet("ovn-default", "10.16.0.0/16", None)?)?;
        ipam.upsert_subnet(subnet("join", "100.64.0.0/16", None)?)?;
        let mut d = Desired {
            vpcs: vec![VpcIntent {
                name: DEFAULT_ROUTER.into(),
                ..Default::default()
            }],
            join_subnet: Some("join".into()),
            ..Default::default()
        };
        d.subnets.push(SubnetIntent::overlay(
            "ovn-default",
            DEFAULT_ROUTER,
            Some("10.16.0.0/16".parse()?),
            None,
        ));
        d.subnets.push(SubnetIntent::overlay(
            "join",
            DEFAULT_ROUTER,
            Some("100.64.0.0/16".parse()?),
            None,
        ));
        for n in 0..NODES {
            let name = format!("node-{n}");
            let a = ipam.allocate(&AllocationRequest::dynamic(node_owner(&name), "join"))?;
            d.nodes.push(NodeIntent {
                name,
                join_ips: a.ips(),
                join_mac: Some(a.mac),
                internal_ips: vec![IpAddr::from([192, 168, (n / 250) as u8, (n % 250) as u8 + 2])],
            });
        }
        for i in 0..PODS {
            let owner = pod(i);
            let a = ipam.allocate(&AllocationRequest::dynamic(owner.clone(), "ovn-default"))?;
            d.ports.push(PortIntent {
                pod: owner.name,
                namespace: owner.namespace,
                provider: "ovn".into(),
                subnet: "ovn-default".into(),
                node: format!("node-{}", i % NODES),
                mac: a.mac,
                ips: a.ips(),
                port_security: false,
            });
        }
        let allocated = started.elapsed();
        let planned = plan(&d);
        if !planned.issues.is_empty() {
            return Err(format!("plan issues: {:?}", planned.issues).into());
        }
        let plan_done = started.elapsed();
        let (diff, applied) = sync.sync(&planned).await?;
        let elapsed = started.elapsed();

        let rows = planned.row_count();
        if diff.counts().0 != rows {
            return Err(format!("expected {rows} inserts, diff has {:?}", diff.counts()).into());
        }
        let second = sync.diff(&planned);
        if !second.is_empty() {
            return Err(format!("second pass not empty: {} changes", second.changes.len()).into());
        }
        let lsps = sync.replica.read(|r| r.len("Logical_Switch_Port"));
        let rate = PODS as f64 / elapsed.as_secs_f64();
        println!(
            "nb_apply: {PODS} pods + {NODES} nodes ({rows} rows, {lsps} switch ports) into a fresh NB: \
             {:.0} ms total (IPAM {:.0} ms, plan {:.0} ms, diff+apply+settle {:.0} ms; {} txns, {} ops, batch {BATCH}): {rate:.0} pods/s",
            elapsed.as_secs_f64() * 1e3,
            allocated.as_secs_f64() * 1e3,
            (plan_done - allocated).as_secs_f64() * 1e3,
            (elapsed - plan_done).as_secs_f64() * 1e3,
            applied.transactions,
            applied.operations,
        );
        // An update pass: every pod's port security switched on (10k updates, no inserts).
        for p in &mut d.ports {
            p.port_security = true;
        }
        let updated = plan(&d);
        let t = Instant::now();
        let (diff, _) = sync.sync(&updated).await?;
        println!(
            "nb_apply: update pass ({} updates): {:.0} ms",
            diff.counts().1,
            t.elapsed().as_secs_f64() * 1e3
        );
        report.field("apply_10k_pods_per_s", format!("{rate:.0}"));
        Ok::<(), Box<dyn Error>>(())
    })?;
    drop(server);
    Ok(())
}

const RSS_CHILD_ENV: &str = "CONTROL_BENCH_RSS_CHILD";

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Manifests of `pods` pods on 200 nodes, as a user would write them.
fn write_manifests(dir: &std::path::Path, pods: usize) -> Result {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut nodes = String::new();
    for n in 0..NODES {
        write!(
            nodes,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-{n}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 192.168.{}.{}\n---\n",
            n / 250,
            n % 250 + 2
        )?;
    }
    std::fs::write(dir.join("00-nodes.yaml"), nodes)?;
    for chunk in 0..pods.div_ceil(10_000) {
        let mut text = String::new();
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(pods) {
            write!(
                text,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: ns-{}\nspec:\n  nodeName: node-{}\n  containers:\n  - name: app\n    image: docker.io/library/nginx:1.27\n---\n",
                i % 200,
                i % NODES
            )?;
        }
        std::fs::write(dir.join(format!("10-pods-{chunk:03}.yaml")), text)?;
    }
    Ok(())
}

/// The child: a controller (the library path `ferrovn-controller` runs) doing its first pass
/// over `pods` pods from manifest files into its own fresh NB; prints its RSS afterwards.
fn rss_child(pods: &str) -> Result {
    use ferrovn_control::controller::{Controller, ControllerOptions};
    use ferrovn_testkit::ovs_paths::nb_schema;
    use ferrovn_testkit::ovsdb::OvsdbServer;

    let pods: usize = pods.parse()?;
    let base = std::env::temp_dir();
    // Records go to tmpfs when there is one: this measures memory, not the disk.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = tempfile::Builder::new()
        .prefix("ferrovn-rss-")
        .tempdir_in(if shm.is_dir() { shm } else { &base })?;
    write_manifests(&tmp.path().join("manifests"), pods)?;
    let server = OvsdbServer::start(nb_schema())?;
    let baseline = status_kb("VmRSS:");
    let rt = runtime()?;
    let (pass_ms, ops) = rt.block_on(async {
        let mut o = ControllerOptions::new(
            server.remote(),
            tmp.path().join("manifests"),
            tmp.path().join("state"),
        );
        o.batch = 5_000;
        o.build.default_cidr = "10.0.0.0/12".into();
        let mut c = Controller::connect(o).await?;
        let t = Instant::now();
        let r = c.pass().await?;
        if r.interfaces != pods + NODES || !r.issues.is_empty() {
            return Err(format!(
                "pass: {} interfaces, issues {:?}",
                r.interfaces,
                &r.issues[..r.issues.len().min(3)]
            )
            .into());
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // Steady state: a second pass (rescan) with everything held.
        let r2 = c.pass().await?;
        if !r2.is_noop() {
            return Err("second pass was not a no-op".into());
        }
        let out = (ms, r.nb_operations);
        // Measure while the controller (IPAM, replica, last plan) is alive.
        println!(
            "rss_child pods={pods} rss_kb={} hwm_kb={} baseline_kb={baseline} pass_ms={:.0} ops={}",
            status_kb("VmRSS:"),
            status_kb("VmHWM:"),
            out.0,
            out.1
        );
        drop(c);
        Ok::<_, Box<dyn Error>>(out)
    })?;
    let _ = (pass_ms, ops);
    drop(server);
    Ok(())
}

/// The controller's resident memory after its first pass over 10k and 100k pods (200 nodes),
/// each measured in a fresh child process of this program: manifests parsed, IPAM, allocation
/// records, plan, and the NB replica all held, as in the running binary.
fn controller_rss(report: &mut Report) -> Result {
    if ferrovn_testkit::process::run("ovsdb-server", &["--version"]).is_err() {
        println!("controller_rss: skipped, no ovsdb-server");
        report.field("rss_100k_mb", "n/a");
        return Ok(());
    }
    // Only the 100k figure goes on the last line (its fixed format); 10k is a detail line.
    for (pods, field) in [(10_000usize, None), (100_000, Some("rss_100k_mb"))] {
        // current_exe() names a deleted file when the example was rebuilt while running.
        let out = match std::process::Command::new(std::env::current_exe()?)
            .env(RSS_CHILD_ENV, pods.to_string())
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                println!("controller_rss: skipped, cannot start a child of this program: {e}");
                if let Some(field) = field {
                    report.field(field, "n/a");
                }
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "RSS child ({pods} pods) failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let line = stdout
            .lines()
            .find(|l| l.starts_with("rss_child "))
            .ok_or("RSS child printed no result")?;
        let get = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let rss_mb = get("rss_kb") as f64 / 1024.0;
        println!(
            "controller_rss: {pods} pods + {NODES} nodes: RSS {rss_mb:.0} MB after the first pass (peak {:.0} MB, {:.0} MB before loading; first pass {} ms, {} NB ops)",
            get("hwm_kb") as f64 / 1024.0,
            get("baseline_kb") as f64 / 1024.0,
            get("pass_ms"),
            get("ops"),
        );
        if let Some(field) = field {
            report.field(field, format!("{rss_mb:.0}"));
        }
    }
    Ok(())
}
