//! The scoped diff against a real NB (ovsdb-server, OVN 25.03 schema): over a seeded random
//! sequence of pod label changes, namespace label changes, policies added and removed, pods
//! added, removed and readdressed, and rows edited behind FerrOVN's back,
//! - whenever a scoped diff exists it equals the full diff of the same NB (same UUID source),
//!   change for change: incremental result == full replan;
//! - it exists for every pure label / policy change (the point: those never diff the whole NB);
//! - a change outside NetworkPolicy's rows (a pod added, removed or readdressed) gives no scope;
//! - after a foreign edit `IncrementalSync` diffs in full and repairs it;
//! - after every sync the NB has converged: a full diff finds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::netpol::{PolicyInput, PolicyNamespace, PolicyPod};
use ferrovn_control::plan::{Desired, NbPlan, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::{
    IncrementalSync, NbSync, SyncMode, desired_rows, diff, policy_scope, scoped_diff, snapshot,
};
use ferrovn_ovsdb::Uuid;
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const APPS: [&str; 3] = ["web", "db", "cache"];
const ROLES: [&str; 3] = ["r0", "r1", "r2"];
const TEAMS: [&str; 2] = ["red", "blue"];
const STEPS: usize = 80;

/// A small deterministic generator (the sequence must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Policy `k` (of 8) in namespace `ns`: selectors by app, peers by role, by namespace team, and
/// both; one egress policy, one default deny.
fn policy(ns: &str, k: usize) -> NetworkPolicy {
    let meta = json!({"name": format!("p{k}"), "namespace": ns});
    let v = match k % 4 {
        0 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"app": APPS[k % 3]}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": ROLES[k % 3]}}}],
                         "ports": [{"port": 80}]}]}}),
        1 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"app": APPS[k % 3]}},
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"team": TEAMS[k % 2]}}},
                {"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                    {"key": "role", "operator": "In", "values": ["r1", "r2"]}]}}]}]}}),
        2 => json!({"metadata": meta, "spec": {
            "podSelector": {"matchLabels": {"role": ROLES[k % 3]}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}}),
        _ => json!({"metadata": meta, "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn",
                                                  "values": [APPS[k % 3]]}]},
            "policyTypes": ["Ingress"]}}),
    };
    serde_json::from_value(v).unwrap()
}

/// The cluster: pods as (namespace, name, app, role, address byte), namespaces' teams, and the
/// policies switched on.
#[derive(Clone)]
struct World {
    pods: Vec<(String, String, usize, usize, u8)>,
    teams: BTreeMap<String, usize>,
    policies: BTreeMap<(String, usize), bool>,
}

impl World {
    fn new() -> Self {
        let mut pods = Vec::new();
        for (n, ns) in NAMESPACES.iter().enumerate() {
            for i in 0..8 {
                pods.push((
                    ns.to_string(),
                    format!("pod{i}"),
                    i % 3,
                    (i + n) % 3,
                    (n * 20 + i + 10) as u8,
                ));
            }
        }
        let teams = NAMESPACES
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.to_string(), i % 2))
            .collect();
        let policies = NAMESPACES
            .iter()
            .flat_map(|ns| (0..8).map(move |k| ((ns.to_string(), k), k < 5)))
            .collect();
        World {
            pods,
            teams,
            policies,
        }
    }

    fn desired(&self) -> Desired {
        let mut d = common::default_cluster("10.16.0.0/16", None);
        d.nodes.push(NodeIntent {
            name: "n1".into(),
            join_ips: vec!["100.64.0.2".parse().unwrap()],
            join_mac: Some(MacAddr([0x0e, 0, 0, 0, 1, 1])),
            internal_ips: vec!["172.18.0.2".parse().unwrap()],
        });
        let mut input = PolicyInput {
            node_ips: vec!["100.64.0.2".parse().unwrap()],
            ..Default::default()
        };
        for (ns, team) in &self.teams {
            input.namespaces.push(PolicyNamespace {
                name: ns.clone(),
                labels: BTreeMap::from([("team".into(), TEAMS[*team].into())]),
            });
        }
        for ((ns, k), on) in &self.policies {
            if *on {
                input.policies.push(policy(ns, *k));
            }
        }
        for (ns, name, app, role, host) in &self.pods {
            let ip: IpAddr = format!("10.16.0.{host}").parse().unwrap();
            d.ports.push(PortIntent {
                pod: name.clone(),
                namespace: ns.clone(),
                provider: "ovn".into(),
                subnet: "ovn-default".into(),
                node: "n1".into(),
                mac: MacAddr([0x0e, 0, 0, 0, 0, *host]),
                ips: vec![ip],
                port_security: true,
            });
            input.pods.push(PolicyPod {
                namespace: ns.clone(),
                name: name.clone(),
                labels: BTreeMap::from([
                    ("app".into(), APPS[*app].into()),
                    ("role".into(), ROLES[*role].into()),
                ]),
                port: d.ports.last().unwrap().port_name(),
                ips: vec![ip],
                named_ports: Vec::new(),
            });
        }
        d.network_policy = input;
        d
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    PodLabels,
    NamespaceLabels,
    TogglePolicy,
    Readdress,
    AddOrRemovePod,
    ForeignEdit,
}

fn counter() -> impl FnMut() -> Uuid {
    let mut n: u128 = 1;
    move || {
        n += 1;
        Uuid::from_u128(n)
    }
}

/// Waits until a full diff of `p` is empty (the replica shows every applied change).
async fn converged(sync: &NbSync, p: &NbPlan, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = sync.diff(p);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the NB did not converge: {:?}",
            &left.changes[..left.changes.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_diff_equals_full_diff_and_converges() {
    let server = OvsdbServer::start(nb_schema()).expect("NB ovsdb-server");
    let sync = NbSync::connect(&server.remote(), 1000).await.expect("NB");
    let mut inc = IncrementalSync::new(&sync);
    let mut world = World::new();
    let mut prev = plan(&world.desired());
    let (_, _, t) = inc.sync(&sync, prev.clone()).await.unwrap();
    assert_eq!(
        t.mode,
        SyncMode::Full,
        "the first sync has nothing to scope by"
    );
    converged(&sync, &prev, "first sync").await;

    let mut rng = Lcg(0x5eed_0016);
    let mut removed: Vec<(String, String, usize, usize, u8)> = Vec::new();
    let mut scoped_label_steps = 0;
    let mut label_steps = 0;
    for step_no in 0..STEPS {
        let step = match rng.next(10) {
            0..=3 => Step::PodLabels,
            4 => Step::NamespaceLabels,
            5 | 6 => Step::TogglePolicy,
            7 => Step::Readdress,
            8 => Step::AddOrRemovePod,
            _ => Step::ForeignEdit,
        };
        let mut foreign = false;
        match step {
            Step::PodLabels => {
                let i = rng.next(world.pods.len());
                world.pods[i].2 = rng.next(APPS.len());
                world.pods[i].3 = rng.next(ROLES.len());
            }
            Step::NamespaceLabels => {
                let ns = NAMESPACES[rng.next(NAMESPACES.len())];
                *world.teams.get_mut(ns).unwrap() ^= 1;
            }
            Step::TogglePolicy => {
                let key = (NAMESPACES[rng.next(3)].to_string(), rng.next(8));
                let on = world.policies.get_mut(&key).unwrap();
                *on = !*on;
            }
            Step::Readdress => {
                let i = rng.next(world.pods.len());
                world.pods[i].4 = world.pods[i].4.wrapping_add(100);
            }
            Step::AddOrRemovePod => match removed.pop() {
                Some(p) => world.pods.push(p),
                None => removed.push(world.pods.remove(rng.next(world.pods.len()))),
            },
            Step::ForeignEdit => {
                // Someone empties one of FerrOVN's address sets by hand.
                let name = prev
                    .address_sets
                    .values()
                    .find(|a| !a.addresses.is_empty())
                    .map(|a| a.name.clone());
                if let Some(name) = name {
                    server
                        .transact(&json!(["OVN_Northbound", {"op": "update",
                            "table": "Address_Set", "where": [["name", "==", name]],
                            "row": {"addresses": ["set", []]}}]))
                        .unwrap();
                    // The replica must have seen it before the next sync looks.
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while sync.diff(&prev).is_empty() {
                        assert!(Instant::now() < deadline, "the foreign edit never arrived");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    foreign = true;
                }
            }
        }
        let next = plan(&world.desired());
        let what = format!("step {step_no} ({step:?})");

        let scope = policy_scope(&prev, &next);
        let full = sync
            .replica
            .read(|d| diff(&desired_rows(&next), &snapshot(d), &mut counter()));
        let scoped = sync
            .replica
            .read(|d| scoped_diff(&prev, &next, d, &mut counter()));
        match step {
            Step::PodLabels | Step::NamespaceLabels | Step::TogglePolicy => {
                assert!(scope.is_some(), "{what}: a policy-only change has a scope");
                let scoped = scoped.as_ref().expect("a scoped diff");
                assert_eq!(scoped, &full, "{what}: scoped diff != full diff");
                label_steps += 1;
            }
            Step::Readdress | Step::AddOrRemovePod => {
                assert!(scope.is_none(), "{what}: a port change has no scope");
                assert!(scoped.is_none());
            }
            Step::ForeignEdit => {
                // The plan is unchanged: nothing in scope, while the full diff repairs.
                if foreign {
                    assert!(scoped.as_ref().is_some_and(|d| d.is_empty()), "{what}");
                    assert!(!full.is_empty(), "{what}: the full diff sees the edit");
                }
            }
        }

        let (_, _, t) = inc.sync(&sync, next.clone()).await.unwrap();
        if foreign {
            assert_eq!(
                t.mode,
                SyncMode::Full,
                "{what}: a foreign edit forces a full diff"
            );
        }
        if matches!(
            step,
            Step::PodLabels | Step::NamespaceLabels | Step::TogglePolicy
        ) && t.mode == SyncMode::Scoped
        {
            scoped_label_steps += 1;
        }
        converged(&sync, &next, &what).await;
        prev = next;
    }
    // A policy-only step follows a port change (whose weak-reference cleanup the NB does on
    // its own, so it reads as foreign) or a foreign edit now and then; all others are scoped.
    assert!(
        scoped_label_steps * 2 > label_steps,
        "only {scoped_label_steps} of {label_steps} policy-only steps were scoped"
    );
}
