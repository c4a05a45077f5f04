//! Service load balancer benchmark (control plane):
//! `cargo run --release -p ferrovn-control --example bench-services`.
//!
//! 10,000 ClusterIP Services × 10 ready endpoints are planned and applied into a fresh NB
//! ovsdb-server (no northd): time end to end (plan, diff against the empty replica, batched
//! transactions, replica settled) and the NB's size. Then single endpoint changes: each is one
//! full controller pass over all 10k Services (plan, diff, transaction, replica settled), and
//! p50/p99 of that latency are reported.
//!
//! With `BENCH_FLOWS=1` (root) the same Services then go into an OVN central with northd and one
//! node's ovn-controller (support/flows.rs), and endpoint changes are timed until the node's
//! flows have them (`ovn-nbctl --wait=hv`): that p99 is then `endpoint_p99_ms`.
//!
//! The last line is `services-bench apply_10k_s=… endpoint_p99_ms=… podpod_with_lbs_ratio=…
//! vip_vs_direct_ratio=… kubeproxy_sync_10k_s=…`. The two datapath keys come from the DPDK part
//! of `bench-ctcost` (run as root with `BENCH_DATAPATH=1`, else `na`). `kubeproxy_sync_10k_s` is
//! upstream kube-proxy's first full nftables sync of the same Services from a real apiserver
//! (`support/kubeproxy_anchor.rs`; root and `make kube-bins`, `BENCH_KUBEPROXY=0` skips it,
//! `BENCH_KUBEPROXY=only` runs it alone, `na` with the reason on stderr when it cannot run).

#[path = "support/ctcost.rs"]
mod ctcost;
#[path = "support/flows.rs"]
mod flows;
#[path = "support/kubeproxy_anchor.rs"]
mod kubeproxy_anchor;

use std::error::Error;
use std::time::{Duration, Instant};

use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, NodeIntent, PlanCache, PortIntent, ServiceInputs, SubnetIntent,
    VpcIntent, plan_cached,
};
use ferrovn_control::reconcile::{NbSync, Table};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;
const NODES: usize = 10;
const CHANGES: usize = 100;
const BATCH: usize = 2_000;
/// Endpoint changes timed until a node's flows have them (`BENCH_FLOWS=1`).
const FLOW_CHANGES: usize = 50;

fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 50)},
        "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?)
}

/// Endpoint `k` of service `i`; `generation` shifts the addresses for a changed slice.
fn endpoint_ip(i: usize, k: usize, generation: usize) -> String {
    let n = i * ENDPOINTS + k + generation * 7;
    format!("10.16.{}.{}", (n / 250) % 256, n % 250 + 1)
}

fn slice(i: usize, generation: usize, count: usize) -> Result<EndpointSlice> {
    let eps: Vec<_> = (0..count)
        .map(|k| {
            json!({"addresses": [endpoint_ip(i, k, generation)],
                   "conditions": {"ready": true}, "nodeName": format!("node-{}", k % NODES)})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": format!("ns-{}", i % 50),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))?)
}

fn base() -> Result<Desired> {
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
        d.nodes.push(NodeIntent {
            name: format!("node-{n}"),
            join_ips: vec![format!("100.64.0.{}", n + 2).parse()?],
            join_mac: Some(ferrovn_api::MacAddr([0x0e, 0, 0, 0, 1, n as u8])),
            internal_ips: vec![format!("172.18.0.{}", n + 2).parse()?],
        });
    }
    Ok(d)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::var("BENCH_KUBEPROXY").is_ok_and(|v| v == "only") {
        // The anchor alone (it measures kube-proxy, so this build's profile does not matter).
        let kubeproxy = kubeproxy_sync(&rt)?;
        println!(
            "services-bench apply_10k_s=na endpoint_p99_ms=na podpod_with_lbs_ratio=na \
             vip_vs_direct_ratio=na kubeproxy_sync_10k_s={kubeproxy}"
        );
        return Ok(());
    }
    let server = OvsdbServer::start(nb_schema())?;

    let mut d = base()?;
    let mut services = Vec::with_capacity(SERVICES);
    let mut slices = Vec::with_capacity(SERVICES);
    for i in 0..SERVICES {
        services.push(service(i)?);
        slices.push(slice(i, 0, ENDPOINTS)?);
    }
    d.services = ServiceInputs {
        services,
        endpoint_slices: slices,
        ..Default::default()
    };

    // The controller keeps one plan cache for its lifetime: the first pass fills it.
    let mut cache = PlanCache::default();
    let (apply_s, rows, lbs) = rt.block_on(async {
        let sync = NbSync::connect(&server.remote(), BATCH).await?;
        let started = Instant::now();
        let p = plan_cached(&d, &mut cache);
        let planned = started.elapsed();
        if !p.issues.is_empty() {
            return Err(format!("plan issues: {:?}", &p.issues[..p.issues.len().min(3)]).into());
        }
        let (diff, report) = sync.sync(&p).await?;
        let total = started.elapsed();
        let lbs = sync.snapshot().rows(Table::LoadBalancer).len();
        println!(
            "apply: {SERVICES} services x {ENDPOINTS} endpoints: plan {:.2} s, apply {:.2} s \
             ({} inserts, {} transactions, {} operations), total {:.2} s; NB holds {lbs} \
             load balancers",
            planned.as_secs_f64(),
            report.elapsed.as_secs_f64(),
            diff.counts().0,
            report.transactions,
            report.operations,
            total.as_secs_f64()
        );
        Ok::<_, Box<dyn Error>>((total.as_secs_f64(), p.row_count(), lbs))
    })?;
    if lbs != SERVICES {
        return Err(format!("expected {SERVICES} load balancers in the NB, found {lbs}").into());
    }

    let db: u64 = server
        .db_paths()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    server.appctl(&["ovsdb-server/compact"])?;
    let compacted: u64 = server
        .db_paths()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "nb size: {rows} planned rows; db file {:.1} MB after the apply, {:.1} MB compacted",
        db as f64 / 1e6,
        compacted as f64 / 1e6
    );

    // Endpoint changes: service i's slice gets a new generation of addresses, alternately one
    // endpoint fewer and back.
    let latencies = rt.block_on(async {
        let sync = NbSync::connect(&server.remote(), BATCH).await?;
        let mut lat = Vec::with_capacity(CHANGES);
        let mut plan_lat = Vec::with_capacity(CHANGES);
        for c in 0..CHANGES {
            let i = (c * 7919) % SERVICES;
            let count = if c % 2 == 0 { ENDPOINTS - 1 } else { ENDPOINTS };
            d.services.endpoint_slices[i] = slice(i, c + 1, count)?;
            let started = Instant::now();
            let p = plan_cached(&d, &mut cache);
            plan_lat.push(started.elapsed());
            let (diff, report) = sync.sync(&p).await?;
            lat.push(started.elapsed());
            if cache.services.last_misses() != 1 {
                return Err(format!(
                    "endpoint change {c}: {} Services planned afresh (want 1)",
                    cache.services.last_misses()
                )
                .into());
            }
            if diff.changes.len() != 1 || report.operations != 1 {
                return Err(format!(
                    "endpoint change {c}: {} changes, {} operations (want 1 and 1)",
                    diff.changes.len(),
                    report.operations
                )
                .into());
            }
        }
        Ok::<_, Box<dyn Error>>((lat, plan_lat))
    })?;
    let (latencies, mut plan_sorted) = latencies;
    plan_sorted.sort();
    let mut sorted = latencies.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "endpoint change → NB updated (full pass over {SERVICES} services, one row, one \
         operation), {CHANGES} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(percentile(&sorted, 1.0))
    );
    println!(
        "of which planning (cached, one Service planned afresh): p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&plan_sorted, 0.5)),
        ms(percentile(&plan_sorted, 0.99))
    );
    let mut endpoint_p99 = ms(percentile(&sorted, 0.99));
    if std::env::var("BENCH_FLOWS").is_ok_and(|v| v == "1") {
        endpoint_p99 = until_flows(&rt, d, &mut cache)?;
    } else {
        eprintln!(
            "endpoint_p99_ms is until the NB has the change: BENCH_FLOWS=1 (root) times it until a \
             node's flows"
        );
    }
    let (podpod, vip) = datapath_ratios();
    let kubeproxy = kubeproxy_sync(&rt)?;
    println!(
        "services-bench apply_10k_s={apply_s:.2} endpoint_p99_ms={endpoint_p99:.1} podpod_with_lbs_ratio={podpod} \
         vip_vs_direct_ratio={vip} kubeproxy_sync_10k_s={kubeproxy}"
    );
    Ok(())
}

/// The same Services in an OVN central with northd and one node's ovn-controller, a pod of
/// `ovn-default` bound there (so the switch and its load balancer group are local): the first
/// apply until the node has the flows, then [`FLOW_CHANGES`] endpoint changes, each timed from
/// the controller pass until `ovn-nbctl --wait=hv` returns. Returns their p99, ms.
fn until_flows(rt: &tokio::runtime::Runtime, mut d: Desired, cache: &mut PlanCache) -> Result<f64> {
    d.ports.push(PortIntent {
        pod: "flows".into(),
        namespace: "default".into(),
        provider: "ovn".into(),
        subnet: "ovn-default".into(),
        node: "node-0".into(),
        mac: ferrovn_api::MacAddr([0x0e, 0, 0, 0, 2, 1]),
        ips: vec!["10.16.255.250".parse()?],
        port_security: true,
    });
    let flows = flows::Flows::start(&d.ports, "node-0", 1)?;
    let started = Instant::now();
    rt.block_on(async {
        let sync = NbSync::connect(&flows.remote(), BATCH).await?;
        let p = plan_cached(&d, cache);
        sync.sync(&p).await?;
        Ok::<_, Box<dyn Error>>(())
    })?;
    flows.wait_hv()?;
    println!(
        "flows: northd and ovn-controller (node-0, one bound pod of ovn-default) caught up with \
         {SERVICES} services in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut lat = rt.block_on(async {
        let sync = NbSync::connect(&flows.remote(), BATCH).await?;
        let mut lat = Vec::with_capacity(FLOW_CHANGES);
        for c in 0..FLOW_CHANGES {
            let i = (c * 104_729) % SERVICES;
            let count = if c % 2 == 0 { ENDPOINTS - 1 } else { ENDPOINTS };
            d.services.endpoint_slices[i] = slice(i, CHANGES + c + 1, count)?;
            let started = Instant::now();
            let p = plan_cached(&d, cache);
            let (diff, _) = sync.sync(&p).await?;
            if diff.changes.len() != 1 {
                return Err(format!(
                    "endpoint change {c} (flows): {} changes (want 1)",
                    diff.changes.len()
                )
                .into());
            }
            flows.wait_hv()?;
            lat.push(started.elapsed());
        }
        Ok::<_, Box<dyn Error>>(lat)
    })?;
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "endpoint change → flows on node-0 (controller pass + northd + ovn-controller, \
         ovn-nbctl --wait=hv), {FLOW_CHANGES} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0))
    );
    Ok(ms(percentile(&lat, 0.99)))
}

/// kube-proxy's first full sync of the same Services × endpoints (the generation-0 slices), or
/// `na` with the reason on stderr.
fn kubeproxy_sync(rt: &tokio::runtime::Runtime) -> Result<String> {
    if std::env::var("BENCH_KUBEPROXY").is_ok_and(|v| v == "0") {
        eprintln!("kubeproxy_sync_10k_s: skipped (BENCH_KUBEPROXY=0)");
        return Ok("na".into());
    }
    let slices = (0..SERVICES)
        .map(|i| slice(i, 0, ENDPOINTS))
        .collect::<Result<Vec<_>>>()?;
    match kubeproxy_anchor::measure(rt, slices) {
        Ok(a) => {
            println!(
                "kube-proxy {} nftables: first full sync of {SERVICES} services x {ENDPOINTS} \
                 endpoints {:.2} s (its kubeproxy_sync_full_proxy_rules_duration_seconds); \
                 ruleset complete {:.2} s after its start ({} Service IPs, {} endpoint DNAT targets); \
                 objects created in {:.1} s",
                a.version, a.sync_s, a.ready_s, a.cluster_ips, a.endpoint_chains, a.create_s
            );
            Ok(format!("{:.2}", a.sync_s))
        }
        Err(e) => {
            eprintln!("kubeproxy_sync_10k_s: na: {e}");
            Ok("na".into())
        }
    }
}

/// The datapath keys (`BENCH_DATAPATH=1`): vhost-user pod↔pod Mpps with 1,000 Services (and
/// the conntrack bypass the planner adds) against none, and pod → VIP against pod → pod IP,
/// both as medians of ratios paired against neighbouring runs.
fn datapath_ratios() -> (String, String) {
    let mut keys = ctcost::ctcost_keys(
        "none,group1k,group1k_bypass,vip1k_bypass",
        &["podpod_with_lbs_ratio", "vip_vs_direct_ratio"],
    )
    .into_iter();
    let mut next = || keys.next().unwrap_or_else(|| "na".into());
    (next(), next())
}
