//! The default VPC's gateway rows at scale: `cargo run --release -p ferrovn-control --example
//! bench-gateway`.
//!
//! 1,000 nodes, 100 subnets (90 distributed, 10 centralized: 5 active-backup, 5 ECMP, three
//! gateway nodes each), 50,000 pods spread over every subnet and node: allocated, planned and
//! applied into a fresh NB ovsdb-server. Kube-OVN's distributed gateway needs one port group
//! and one policy per (subnet, node) pair holding pods; FerrOVN's rows grow with nodes +
//! subnets, which the run checks (exact count) and prints. Then two incremental passes: one
//! new pod (one row's match changes) and a gateway node dying (the centralized rows it carried
//! move). The last line: `gateway-bench nodes=… subnets=… pods=… gateway_rows=N apply_s=X`.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::net::IpAddr;
use std::time::Instant;

use ferrovn_control::controller::desired::node_owner;
use ferrovn_control::ipam::{AllocationRequest, Ipam, OwnerKey, SubnetSpec};
use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, GATEWAY_POLICY_PRIORITY, GatewayLiveness, NbPlan, NodeIntent,
    PortIntent, SUBNET_POLICY_PRIORITY, SubnetIntent, VpcIntent, plan,
};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

const NODES: usize = 1_000;
const SUBNETS: usize = 100;
const CENTRALIZED: usize = 10;
const PODS: usize = 50_000;
const BATCH: usize = 2_000;

fn spec(name: &str, v4: &str) -> Result<SubnetSpec> {
    let mut s = SubnetSpec::new(name, Some(v4.parse()?), None);
    s.v4_gateway = s.v4.and_then(|n| n.hosts().next());
    Ok(s)
}

/// The gateway rows of a plan: 29000 reroutes and 31000 allows of the default VPC.
fn gateway_rows(p: &NbPlan) -> (usize, usize) {
    let policies = &p.routers[DEFAULT_ROUTER].policies;
    let reroutes = policies
        .values()
        .filter(|x| x.priority == GATEWAY_POLICY_PRIORITY)
        .count();
    let allows = policies
        .values()
        .filter(|x| x.priority == SUBNET_POLICY_PRIORITY)
        .count();
    (reroutes, allows)
}

fn main() -> Result {
    let server = OvsdbServer::start(nb_schema())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&server.remote()))
}

async fn run(remote: &str) -> Result {
    let sync = NbSync::connect(remote, BATCH).await?;
    let started = Instant::now();
    let mut ipam = Ipam::new(7);
    ipam.upsert_subnet(spec("join", "100.64.0.0/16")?)?;
    let mut d = Desired {
        vpcs: vec![VpcIntent {
            name: DEFAULT_ROUTER.into(),
            ..Default::default()
        }],
        join_subnet: Some("join".into()),
        ..Default::default()
    };
    d.subnets.push(SubnetIntent::overlay(
        "join",
        DEFAULT_ROUTER,
        Some("100.64.0.0/16".parse()?),
        None,
    ));
    for i in 0..SUBNETS {
        let name = format!("s{i}");
        let cidr = format!("10.{}.{}.0/20", 16 + i / 16, (i % 16) * 16);
        ipam.upsert_subnet(spec(&name, &cidr)?)?;
        let mut s = SubnetIntent::overlay(&name, DEFAULT_ROUTER, Some(cidr.parse()?), None);
        if i < CENTRALIZED {
            s.centralized_gateway = true;
            // three gateway nodes, the first with the node:ip form
            let g = i * 3;
            s.gateway_node = format!(
                "node-{g}:192.168.200.{}, node-{}, node-{}",
                g + 1,
                g + 1,
                g + 2
            );
            s.gateway_ecmp = i % 2 == 1;
        }
        d.subnets.push(s);
    }
    for n in 0..NODES {
        let name = format!("node-{n}");
        let a = ipam.allocate(&AllocationRequest::dynamic(node_owner(&name), "join"))?;
        d.nodes.push(NodeIntent {
            name,
            join_ips: a.ips(),
            join_mac: Some(a.mac),
            internal_ips: vec![IpAddr::from([
                192,
                168,
                (n / 250) as u8,
                (n % 250) as u8 + 2,
            ])],
        });
    }
    // pod i: subnet i % 100, node (i / 50) % 1000: every node holds 50 pods of 50 subnets, so
    // Kube-OVN's per-(subnet, node) rows number in the tens of thousands
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in 0..PODS {
        let subnet = i % SUBNETS;
        let node = (i / 50) % NODES;
        let owner = OwnerKey::new(format!("ns-{subnet}"), format!("pod-{i}"), "ovn");
        let a = ipam.allocate(&AllocationRequest::dynamic(
            owner.clone(),
            format!("s{subnet}"),
        ))?;
        if subnet >= CENTRALIZED {
            pairs.insert((subnet, node));
        }
        d.ports.push(PortIntent {
            pod: owner.name,
            namespace: owner.namespace,
            provider: "ovn".into(),
            subnet: format!("s{subnet}"),
            node: format!("node-{node}"),
            mac: a.mac,
            ips: a.ips(),
            port_security: false,
        });
    }
    let allocated = started.elapsed();
    let t = Instant::now();
    let planned = plan(&d);
    let plan_s = t.elapsed().as_secs_f64();
    if !planned.issues.is_empty() {
        return Err(format!(
            "plan issues: {:?}",
            &planned.issues[..3.min(planned.issues.len())]
        )
        .into());
    }
    let (reroutes, allows) = gateway_rows(&planned);
    let gateway_total = reroutes + allows;
    let dist_nodes: BTreeSet<usize> = pairs.iter().map(|(_, n)| *n).collect();
    // the model: one reroute per node holding distributed pods, one per centralized subnet,
    // one allow per subnet (join included)
    let expected = dist_nodes.len() + CENTRALIZED + SUBNETS + 1;
    if gateway_total != expected {
        return Err(format!("gateway rows {gateway_total}, the model says {expected}").into());
    }
    let t = Instant::now();
    let (_, applied) = sync.sync(&planned).await?;
    let apply_s = t.elapsed().as_secs_f64();
    let rows = planned.row_count();
    let policies = sync.replica.read(|r| r.len("Logical_Router_Policy"));
    println!(
        "gateway: {NODES} nodes, {SUBNETS} subnets ({CENTRALIZED} centralized), {PODS} pods: \
         {rows} NB rows, {policies} router policies in the NB"
    );
    println!(
        "gateway: rows {reroutes} reroutes (29000) + {allows} allows (31000) = {gateway_total}; \
         Kube-OVN's distributed design: {} port groups + {} policies for the same pods",
        pairs.len(),
        pairs.len()
    );
    println!(
        "gateway: IPAM {:.2} s, plan {plan_s:.2} s, apply {apply_s:.2} s ({} txns, {} ops)",
        allocated.as_secs_f64(),
        applied.transactions,
        applied.operations
    );

    // one new pod: one reroute's match grows, nothing else
    let owner = OwnerKey::new("ns-50", "pod-new", "ovn");
    let a = ipam.allocate(&AllocationRequest::dynamic(owner.clone(), "s50"))?;
    d.ports.push(PortIntent {
        pod: owner.name,
        namespace: owner.namespace,
        provider: "ovn".into(),
        subnet: "s50".into(),
        node: "node-3".into(),
        mac: a.mac,
        ips: a.ips(),
        port_security: false,
    });
    let t = Instant::now();
    let (diff, _) = sync.sync(&plan(&d)).await?;
    println!(
        "gateway: one more pod: plan+apply {:.0} ms ({:?} inserts/updates/removals)",
        t.elapsed().as_secs_f64() * 1e3,
        diff.counts()
    );

    // the first gateway node of every centralized subnet dies: active-backup ones move
    let mut alive: BTreeSet<String> = d.nodes.iter().map(|n| n.name.clone()).collect();
    for i in 0..CENTRALIZED {
        alive.remove(&format!("node-{}", i * 3));
    }
    let previous: BTreeMap<String, String> = planned
        .active_gateways
        .iter()
        .filter_map(|(s, n)| Some((s.clone(), n.first()?.clone())))
        .collect();
    d.gateway_liveness = GatewayLiveness {
        alive: Some(alive),
        previous_active: previous,
    };
    let t = Instant::now();
    let (diff, _) = sync.sync(&plan(&d)).await?;
    println!(
        "gateway: failover of {CENTRALIZED} subnets: plan+apply {:.0} ms ({:?} inserts/updates/removals)",
        t.elapsed().as_secs_f64() * 1e3,
        diff.counts()
    );
    println!(
        "gateway-bench nodes={NODES} subnets={SUBNETS} pods={PODS} gateway_rows={gateway_total} apply_s={:.2}",
        plan_s + apply_s
    );
    Ok(())
}
