//! NetworkPolicy benchmark (control plane):
//! `cargo run --release -p ferrovn-control --example bench-policy`
//! (`BENCH_FLOWS=1`, as root: also until the flows on a node, see below).
//!
//! 5,000 pods in 100 namespaces on 10 nodes are applied into a fresh NB ovsdb-server; then
//! 1,000 NetworkPolicies (10 per namespace, four shapes: pod selector + ports, namespace
//! selector, egress ipBlock with except + DNS, default deny) are planned and applied on top:
//! time end to end (plan, diff, batched transactions, replica settled), ACL and address set
//! counts, and the same counts for Kube-OVN's layout of the same input (computed from its
//! documented rows: one address set pair per rule and family, one ACL per port and family, a
//! drop per policy and direction, two node ACLs per node).
//!
//! Then single pod label changes, each one controller pass, timed per stage: plan (and, on the
//! side, the NetworkPolicy translation alone), diff, transaction, replica. The same sequence
//! runs twice: with a full diff per pass (every planned row against every NB row), then
//! through `reconcile::IncrementalSync` as the controller runs it (the scoped diff of the rows
//! the change touches). With `BENCH_FLOWS=1` the NB is an OVN central with ovn-northd, and
//! node-0 runs OVS and ovn-controller with a few of its pods bound: each change is also timed
//! until `ovn-nbctl --wait=hv sync` returns (northd and ovn-controller have it in the node's
//! flows), and `label_p99_ms` is that end to end.
//!
//! The last line is `policy-bench apply_1k_s=… label_p99_ms=… acls=… dpdk_policy_ratio=…`
//! (label_p99_ms: the scoped passes). `dpdk_policy_ratio` is the datapath part (root,
//! hugepages, `BENCH_DATAPATH=1`, else `na`): the ferrovn-dataplane example `bench-ctcost`'s
//! `np_sym` shape, vhost-user pod↔pod with a policy selecting both pods against none.

#[path = "support/ctcost.rs"]
mod ctcost;
#[path = "support/flows.rs"]
mod flows;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrovn_control::plan::netpol::{
    PolicyInput, PolicyNamespace, PolicyPod, plan_network_policies,
};
use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, NodeIntent, PortIntent, SubnetIntent, VpcIntent, plan,
};
use ferrovn_control::reconcile::{IncrementalSync, NbSync, SyncMode, Table};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;
use flows::Flows;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

const POLICIES_PER_NS: usize = 10;
const NODES: usize = 10;
const BATCH: usize = 2_000;
const ROLES: usize = 5;

/// The benchmark's size: 100 namespaces of 50 pods and 100 label changes, or what
/// `BENCH_NAMESPACES`, `BENCH_PODS_PER_NS` and `BENCH_CHANGES` say (a quick check in a debug
/// build; the numbers of the issue are the defaults).
struct Size {
    namespaces: usize,
    pods_per_ns: usize,
    changes: usize,
}

fn size() -> &'static Size {
    static SIZE: OnceLock<Size> = OnceLock::new();
    SIZE.get_or_init(|| {
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(d)
        };
        Size {
            namespaces: env("BENCH_NAMESPACES", 100),
            pods_per_ns: env("BENCH_PODS_PER_NS", 50),
            changes: env("BENCH_CHANGES", 100),
        }
    })
}

fn pod_labels(ns: usize, i: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), format!("app-{}", i % 10)),
        ("role".to_string(), role(i % ROLES)),
        ("tier".to_string(), format!("t{}", (ns + i) % 3)),
    ])
}

fn role(r: usize) -> String {
    format!("role-{r}")
}

/// The role the first ingress peer of policy `k` (shape 0) selects.
fn peer_role(k: usize) -> usize {
    k % ROLES
}

/// Roles some peer selector distinguishes: role-0 (shape 1's monitoring peer) and the peer
/// role of every shape-0 policy. A pod moving between two roles outside this set changes no
/// address set, so no flow: such a move is not a label change worth timing.
fn selected_roles() -> BTreeSet<usize> {
    let mut roles = BTreeSet::from([0]);
    roles.extend((0..POLICIES_PER_NS).filter(|k| k % 4 == 0).map(peer_role));
    roles
}

/// The role a pod with role `current` moves to in change `c`: into a selected set when it is
/// in none, otherwise out of its set (to an unselected role if there is one, else to another
/// selected role). Either way some peer address set gains or loses the pod.
fn next_role(current: usize, c: usize) -> usize {
    let selected = selected_roles();
    let unselected: Vec<usize> = (0..ROLES).filter(|r| !selected.contains(r)).collect();
    if selected.contains(&current)
        && let Some(r) = unselected.get(c % unselected.len().max(1))
    {
        return *r;
    }
    let others: Vec<usize> = selected.iter().copied().filter(|r| *r != current).collect();
    others[c % others.len()]
}

fn pod_ip(ns: usize, i: usize) -> IpAddr {
    let n = ns * size().pods_per_ns + i + 10;
    IpAddr::from([10, 16, (n / 250) as u8, (n % 250 + 1) as u8])
}

/// Policy `k` of namespace `ns`: one of four shapes.
fn policy(ns: usize, k: usize) -> Result<NetworkPolicy> {
    let meta = json!({"name": format!("np-{k}"), "namespace": format!("ns-{ns}")});
    let app = format!("app-{k}");
    let v = match k % 4 {
        0 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": role(peer_role(k))}}}],
                 "ports": [{"port": 80}, {"port": 443}]},
                {"from": [{"podSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["t0", "t1"]}]}}],
                 "ports": [{"protocol": "UDP", "port": 5000, "endPort": 5100}]}]}}),
        1 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", ns % 10)}}},
                {"namespaceSelector": {"matchLabels": {"team": "monitoring"}},
                 "podSelector": {"matchLabels": {"role": "role-0"}}}],
                "ports": [{"port": 8080}]}]}}),
        2 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.16.0.0/16"]}}]},
                {"to": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "ns-0"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"podSelector": {}}]}]}}),
        _ => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"tier": format!("t{}", k % 3)}},
            "policyTypes": ["Ingress"]}}),
    };
    Ok(serde_json::from_value(v)?)
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
    for ns in 0..size().namespaces {
        for i in 0..size().pods_per_ns {
            let n = ns * size().pods_per_ns + i;
            d.ports.push(PortIntent {
                pod: format!("pod-{i}"),
                namespace: format!("ns-{ns}"),
                provider: "ovn".into(),
                subnet: "ovn-default".into(),
                node: format!("node-{}", n % NODES),
                mac: ferrovn_api::MacAddr([0x0e, 1, 0, 0, (n >> 8) as u8, n as u8]),
                ips: vec![pod_ip(ns, i)],
                port_security: true,
            });
        }
    }
    Ok(d)
}

fn policy_input(d: &Desired) -> Result<PolicyInput> {
    let mut input = PolicyInput {
        node_ips: d.nodes.iter().flat_map(|n| n.join_ips.clone()).collect(),
        ..Default::default()
    };
    for ns in 0..size().namespaces {
        let team = if ns % 10 == 9 {
            "monitoring".to_string()
        } else {
            format!("team-{}", ns % 10)
        };
        input.namespaces.push(PolicyNamespace {
            name: format!("ns-{ns}"),
            labels: BTreeMap::from([("team".to_string(), team)]),
        });
        for k in 0..POLICIES_PER_NS {
            input.policies.push(policy(ns, k)?);
        }
        for i in 0..size().pods_per_ns {
            input.pods.push(PolicyPod {
                namespace: format!("ns-{ns}"),
                name: format!("pod-{i}"),
                labels: pod_labels(ns, i),
                port: format!("pod-{i}.ns-{ns}"),
                ips: vec![pod_ip(ns, i)],
                named_ports: Vec::new(),
            });
        }
    }
    Ok(input)
}

/// Kube-OVN's rows for the same input (its documented NetworkPolicy rows): per policy one
/// port group; per direction with rules, per rule and family an `allow` and an `except`
/// address set; a drop per isolated direction; per rule and family one allow ACL per port
/// (at least one) for selector peers and another per port for ipBlock peers; two node ACLs per
/// node. Address entries: every selector rule's own copy of its peers' addresses.
fn kube_ovn_layout(input: &PolicyInput, families: usize) -> (usize, usize, usize) {
    let (mut acls, mut sets, mut entries) = (0, 0, 0);
    let ns_labels: BTreeMap<&str, &BTreeMap<String, String>> = input
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), &n.labels))
        .collect();
    let matches = |sel: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
                   labels: &BTreeMap<String, String>| {
        let Some(sel) = sel else { return true };
        let ml = sel
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let me = sel.match_expressions.iter().flatten().all(|e| {
            let vals = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                _ => !labels.contains_key(&e.key),
            }
        });
        ml && me
    };
    for p in &input.policies {
        let spec = p.spec.clone().unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let types = spec
            .policy_types
            .clone()
            .unwrap_or_else(|| vec!["Ingress".into()]);
        let mut rules: Vec<(bool, Vec<_>, usize)> = Vec::new();
        for r in spec.ingress.iter().flatten() {
            rules.push((
                true,
                r.from.clone().unwrap_or_default(),
                r.ports.as_ref().map_or(0, Vec::len),
            ));
        }
        for r in spec.egress.iter().flatten() {
            rules.push((
                false,
                r.to.clone().unwrap_or_default(),
                r.ports.as_ref().map_or(0, Vec::len),
            ));
        }
        acls += types.len();
        for (ingress, peers, ports) in &rules {
            let _ = ingress;
            sets += 2 * families;
            let selector_peers: Vec<_> = peers.iter().filter(|x| x.ip_block.is_none()).collect();
            let block_peers = peers.len() - selector_peers.len();
            if !selector_peers.is_empty() || peers.is_empty() {
                acls += families * (*ports).max(1);
            }
            if block_peers > 0 {
                acls += families * (*ports).max(1);
            }
            for peer in selector_peers {
                entries += input
                    .pods
                    .iter()
                    .filter(|pod| {
                        let ns_ok = match &peer.namespace_selector {
                            None => pod.namespace == ns,
                            Some(_) => ns_labels
                                .get(pod.namespace.as_str())
                                .is_some_and(|l| matches(&peer.namespace_selector, l)),
                        };
                        ns_ok && matches(&peer.pod_selector, &pod.labels)
                    })
                    .count();
            }
        }
    }
    acls += 2 * input.node_ips.len();
    (acls, sets, entries)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Pods of node-0 bound to its OVS (so the switch is local there and ovn-controller installs
/// its flows).
const BOUND: usize = 5;

/// Durations of one stage over all changes.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn p(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        percentile(&v, q)
    }
    fn line(&self, what: &str) -> String {
        if self.0.is_empty() {
            return format!("{what} -");
        }
        format!("{what} {:.1}/{:.1}", ms(self.p(0.5)), ms(self.p(0.99)))
    }
}

/// Per-stage times of the label changes of one mode.
#[derive(Default)]
struct Stages {
    total: Samples,
    plan: Samples,
    netpol: Samples,
    diff: Samples,
    apply: Samples,
    settle: Samples,
    nb: Samples,
    flows: Samples,
    ops: Vec<usize>,
    scoped: usize,
}

impl Stages {
    fn print(&self, mode: SyncMode, policies: usize) {
        let mut ops = self.ops.clone();
        ops.sort();
        println!(
            "label change ({} diff, {} policies, {} changes, {} scoped), ms p50/p99: \
             {}; {} ({}); {}; {}; {}; {}; {}; NB operations per change: median {}, max {}",
            match mode {
                SyncMode::Full => "full",
                SyncMode::Scoped => "scoped",
            },
            policies,
            self.total.0.len(),
            self.scoped,
            self.total.line("total"),
            self.plan.line("plan"),
            self.netpol.line("of which NetworkPolicy"),
            self.diff.line("diff"),
            self.apply.line("transact"),
            self.settle.line("replica"),
            self.nb.line("= NB"),
            self.flows.line("then flows on node-0"),
            ops.get(ops.len() / 2).copied().unwrap_or(0),
            ops.last().copied().unwrap_or(0),
        );
    }
}

fn main() -> Result {
    let mut d = base()?;
    let flows = match std::env::var("BENCH_FLOWS").as_deref() {
        Ok("1") => Some(Flows::start(&d.ports, "node-0", BOUND)?),
        _ => None,
    };
    let server = match &flows {
        Some(_) => None,
        None => Some(OvsdbServer::start(nb_schema())?),
    };
    let remote = match (&flows, &server) {
        (Some(f), _) => f.remote(),
        (None, Some(s)) => s.remote(),
        (None, None) => return Err("no NB".into()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let input = policy_input(&d)?;
    let sync = rt.block_on(NbSync::connect(&remote, BATCH))?;

    // The pods first (what a cluster has before anyone writes a policy).
    let started = Instant::now();
    rt.block_on(sync.sync(&plan(&d)))?;
    println!(
        "pods: {} pods in {} namespaces on {NODES} nodes applied in {:.2} s",
        d.ports.len(),
        size().namespaces,
        started.elapsed().as_secs_f64()
    );

    d.network_policy = input;
    let started = Instant::now();
    let p = plan(&d);
    let planned = started.elapsed();
    if !p.issues.is_empty() {
        return Err(format!("plan issues: {:?}", &p.issues[..p.issues.len().min(3)]).into());
    }
    let (diff, report) = rt.block_on(sync.sync(&p))?;
    let apply_s = started.elapsed().as_secs_f64();
    let snap = sync.snapshot();
    let acls = snap.rows(Table::Acl).len();
    let sets = snap.rows(Table::AddressSet).len();
    // The policies' port groups (the conntrack bypass of the unselected pods has one more).
    let pgs = p
        .port_groups
        .keys()
        .filter(|n| n.starts_with("np."))
        .count();
    let entries: usize = p.address_sets.values().map(|s| s.addresses.len()).sum();
    println!(
        "apply: {} policies: plan {:.2} s, apply {:.2} s ({} inserts, {} transactions, {} \
         operations), total {apply_s:.2} s",
        d.network_policy.policies.len(),
        planned.as_secs_f64(),
        report.elapsed.as_secs_f64(),
        diff.counts().0,
        report.transactions,
        report.operations,
    );
    let (k_acls, k_sets, k_entries) = kube_ovn_layout(&d.network_policy, 1);
    println!(
        "NB rows: ferrovn {pgs} port groups, {acls} ACLs, {sets} address sets holding {entries} \
         addresses; Kube-OVN's layout of the same input: {pgs} port groups, {k_acls} ACLs, \
         {k_sets} address sets holding {k_entries} addresses"
    );
    if pgs != d.network_policy.policies.len() {
        return Err(format!("expected one port group per policy, found {pgs}").into());
    }

    let central_flows = match &flows {
        Some(f) => {
            let t = Instant::now();
            f.wait_hv()?;
            Some(t.elapsed())
        }
        None => None,
    };
    if let Some(t) = central_flows {
        println!(
            "flows: northd and ovn-controller (node-0, {BOUND} bound pods) caught up with the \
             1,000 policies in {:.2} s",
            t.as_secs_f64()
        );
    }

    // Label changes: pod i of namespace ns moves into or out of a role some peer selects
    // (next_role), so every timed change must rewrite at least one address set. The same
    // kind of sequence twice: first every pass diffs in full (the reconciler before the scoped
    // diff), then through IncrementalSync as the controller runs it.
    let mut inc = IncrementalSync::new(&sync);
    let mut results = Vec::new();
    for mode in [SyncMode::Full, SyncMode::Scoped] {
        let mut st = Stages::default();
        if mode == SyncMode::Scoped {
            // The controller's pass before: a full diff (of nothing) that leaves the plan.
            rt.block_on(inc.sync(&sync, plan(&d)))?;
        }
        for c in 0..size().changes {
            let ns = (c * 37) % size().namespaces;
            let i = (c * 13) % size().pods_per_ns;
            let idx = ns * size().pods_per_ns + i;
            let labels = &mut d.network_policy.pods[idx].labels;
            let current = labels
                .get("role")
                .and_then(|r| r.strip_prefix("role-"))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            labels.insert("role".into(), role(next_role(current, c)));
            let started = Instant::now();
            let p = plan(&d);
            st.plan.push(started.elapsed());
            let (diff, report, times) = match mode {
                SyncMode::Full => rt.block_on(sync.sync_timed(&p))?,
                SyncMode::Scoped => rt.block_on(inc.sync(&sync, p))?,
            };
            st.nb.push(started.elapsed());
            if let Some(f) = &flows {
                let t = Instant::now();
                f.wait_hv()?;
                st.flows.push(t.elapsed());
            }
            st.total.push(started.elapsed());
            st.diff.push(times.diff);
            st.apply.push(times.apply);
            st.settle.push(times.settle);
            st.ops.push(report.operations);
            if report.operations == 0 {
                return Err(format!("label change {c} ({mode:?}) wrote nothing").into());
            }
            if times.mode == SyncMode::Scoped {
                st.scoped += 1;
            }
            if diff
                .changes
                .iter()
                .any(|ch| !matches!(ch.table(), Table::AddressSet | Table::PortGroup))
            {
                return Err(format!("label change {c} touched more than sets and groups").into());
            }
            // The NetworkPolicy translation alone, on the same input (not part of the pass
            // time above: the pass planned it already).
            let t = Instant::now();
            let _ = plan_network_policies(&d.network_policy);
            st.netpol.push(t.elapsed());
        }
        if mode == SyncMode::Scoped {
            // Whatever the scoped passes did, a full diff now must find nothing left.
            let left = sync.diff(&plan(&d));
            if !left.is_empty() {
                return Err(format!(
                    "after the scoped passes a full diff still finds {} changes",
                    left.changes.len()
                )
                .into());
            }
        }
        st.print(mode, d.network_policy.policies.len());
        results.push(st);
    }
    let before = &results[0];
    let after = &results[1];
    let label_p99 = after.total.p(0.99);
    println!(
        "label change p99: {:.1} ms with full diffs, {:.1} ms with scoped diffs ({})",
        ms(before.total.p(0.99)),
        ms(label_p99),
        if flows.is_some() {
            "until ovn-controller on node-0 caught up (ovn-nbctl --wait=hv)"
        } else {
            "until the NB replica showed the change; BENCH_FLOWS=1 (root) adds the flows"
        }
    );
    // vhost-user pod↔pod with a NetworkPolicy selecting both pods (as planned, with the policy
    // bypass) against no policy: bench-ctcost's `np_sym` shape
    let policy_ratio = ctcost::ctcost_keys("none,np_sym", &["dpdk_policy_ratio"])
        .pop()
        .unwrap_or_else(|| "na".into());
    println!(
        "policy-bench apply_1k_s={apply_s:.2} label_p99_ms={:.1} acls={acls} \
         dpdk_policy_ratio={policy_ratio}",
        ms(label_p99)
    );
    Ok(())
}
