//! Property tests of the kube source's pure cores:
//! - the store against a model apiserver: with every event delivered it always equals the
//!   server; with events lost (a watch down) a relist makes it equal again;
//! - leader election: two candidates sharing one Lease with compare-and-swap writes, acting in
//!   any order at any pace, are never both leader at the same instant, and a candidate alone
//!   for long enough becomes leader.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrovn_control::kube::lease::{Action, Elector, LeaseConfig, LeaseRecord, Observed, Outcome};
use ferrovn_control::kube::{Change, ClusterStore, Kind};
use ferrovn_control::manifest::Object;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

// ------------------------------------------------------------------------------------------
// Store vs. a model apiserver

#[derive(Debug, Clone)]
enum Op {
    /// Create or update pod `name` (a new incarnation when `recreate`) with a label value.
    Put {
        name: u8,
        value: u8,
        recreate: bool,
    },
    Delete {
        name: u8,
    },
    /// The watch goes down: the events of the next `n` ops are lost.
    Drop {
        n: u8,
    },
    Relist,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, 0u8..4, any::<bool>()).prop_map(|(name, value, recreate)| Op::Put { name, value, recreate: recreate && value == 0 }),
        2 => (0u8..6).prop_map(|name| Op::Delete { name }),
        1 => (1u8..5).prop_map(|n| Op::Drop { n }),
        1 => Just(Op::Relist),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Held {
    uid: String,
    rv: u64,
    value: u8,
}

fn pod(name: &str, h: &Held) -> Object {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(h.uid.clone());
    p.metadata.resource_version = Some(h.rv.to_string());
    p.metadata.labels = Some([("v".to_string(), h.value.to_string())].into());
    Object::Pod(Box::new(p))
}

fn view(store: &ClusterStore) -> BTreeMap<String, (String, u8)> {
    store
        .of_kind(Kind::Pod)
        .map(|o| {
            let m = o.metadata();
            let v = m
                .labels
                .as_ref()
                .and_then(|l| l.get("v"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(255);
            (o.name().to_string(), (m.uid.clone().unwrap_or_default(), v))
        })
        .collect()
}

fn server_view(server: &BTreeMap<String, Held>) -> BTreeMap<String, (String, u8)> {
    server
        .iter()
        .map(|(n, h)| (n.clone(), (h.uid.clone(), h.value)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_follows_the_server_and_relists_repair_lost_events(ops in proptest::collection::vec(op(), 1..80)) {
        let mut server: BTreeMap<String, Held> = BTreeMap::new();
        let mut store = ClusterStore::new();
        let mut rv = 100u64;
        let mut uids = 0u32;
        let mut lost = 0u8;
        let mut in_sync = true;
        store.apply(Change::Init(Kind::Pod));
        store.apply(Change::InitDone(Kind::Pod));
        for op in ops {
            let mut event = None;
            match op {
                Op::Put { name, value, recreate } => {
                    let name = format!("p{name}");
                    rv += 1;
                    if recreate && let Some(old) = server.remove(&name) {
                        // Delete then create: two events.
                        let deleted = Held { rv, ..old };
                        if lost == 0 {
                            store.apply(Change::Deleted(pod(&name, &deleted)));
                        }
                        rv += 1;
                    }
                    let uid = match server.get(&name) {
                        Some(h) => h.uid.clone(),
                        None => { uids += 1; format!("uid-{uids}") }
                    };
                    let h = Held { uid, rv, value };
                    event = Some(Change::Applied(pod(&name, &h)));
                    server.insert(name, h);
                }
                Op::Delete { name } => {
                    let name = format!("p{name}");
                    if let Some(old) = server.remove(&name) {
                        rv += 1;
                        event = Some(Change::Deleted(pod(&name, &Held { rv, ..old })));
                    }
                }
                Op::Drop { n } => {
                    lost = lost.max(n);
                    in_sync = false;
                }
                Op::Relist => {
                    store.apply(Change::Init(Kind::Pod));
                    for (name, h) in &server {
                        store.apply(Change::InitApplied(pod(name, h)));
                    }
                    store.apply(Change::InitDone(Kind::Pod));
                    lost = 0;
                    in_sync = true;
                    prop_assert_eq!(view(&store), server_view(&server), "a relist repairs");
                }
            }
            if let Some(e) = event {
                if lost > 0 {
                    lost -= 1;
                } else {
                    store.apply(e);
                }
            }
            if in_sync {
                prop_assert_eq!(view(&store), server_view(&server));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Election: mutual exclusion and liveness

struct Server {
    lease: Option<(LeaseRecord, u64)>,
    rv: u64,
}

impl Server {
    fn read(&self) -> Observed {
        match &self.lease {
            None => Observed::Missing,
            Some((r, rv)) => Observed::Found {
                record: r.clone(),
                resource_version: rv.to_string(),
            },
        }
    }

    /// Compare-and-swap, as the apiserver does for create and for PUT with resourceVersion.
    fn write(&mut self, action: &Action) -> Outcome {
        match action {
            Action::Wait { .. } => Outcome::Failed,
            Action::Create(r) => {
                if self.lease.is_some() {
                    return Outcome::Conflict;
                }
                self.rv += 1;
                self.lease = Some((r.clone(), self.rv));
                Outcome::Written
            }
            Action::Update {
                record,
                resource_version,
            } => match &self.lease {
                Some((_, rv)) if rv.to_string() == *resource_version => {
                    self.rv += 1;
                    self.lease = Some((record.clone(), self.rv));
                    Outcome::Written
                }
                Some(_) => Outcome::Conflict,
                None => Outcome::Failed,
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Candidate `who` runs one round; `stale`: its write arrives after the other acted.
    Round { who: usize, interleave: bool },
    /// Time passes (ms).
    Wait(u32),
    /// Candidate `who` fails to reach the apiserver this round.
    Unreachable(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..2, any::<bool>()).prop_map(|(who, interleave)| Step::Round { who, interleave }),
        3 => (0u32..6000).prop_map(Step::Wait),
        1 => (0usize..2).prop_map(Step::Unreachable),
    ]
}

fn config(id: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new(id);
    c.lease_duration = Duration::from_secs(15);
    c.renew_deadline = Duration::from_secs(10);
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn two_candidates_are_never_both_leader(steps in proptest::collection::vec(step(), 1..200)) {
        let mut now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut server = Server { lease: None, rv: 0 };
        let mut c = [Elector::new(config("a")), Elector::new(config("b"))];
        for s in steps {
            match s {
                Step::Wait(ms) => now = now.checked_add(SignedDuration::from_millis(ms.into())).unwrap(),
                Step::Unreachable(who) => {
                    c[who].record(now, Outcome::Failed);
                }
                Step::Round { who, interleave } => {
                    let action = c[who].decide(now, server.read());
                    if interleave {
                        // The other candidate completes a whole round between our read and write.
                        let other = 1 - who;
                        let a = c[other].decide(now, server.read());
                        if !matches!(a, Action::Wait { .. }) {
                            let o = server.write(&a);
                            c[other].record(now, o);
                        }
                    }
                    if !matches!(action, Action::Wait { .. }) {
                        let o = server.write(&action);
                        c[who].record(now, o);
                    }
                }
            }
            prop_assert!(
                !(c[0].is_leader(now) && c[1].is_leader(now)),
                "both lead at {now}: lease {:?}", server.lease
            );
        }
        // Liveness: b alone, rounds every 2 s, leads within 15 s + a round.
        let mut led = false;
        for _ in 0..10 {
            now = now.checked_add(SignedDuration::from_secs(2)).unwrap();
            let a = c[1].decide(now, server.read());
            if !matches!(a, Action::Wait { .. }) {
                let o = server.write(&a);
                c[1].record(now, o);
            }
            led |= c[1].is_leader(now);
        }
        prop_assert!(led, "a lone candidate takes over: lease {:?}", server.lease);
    }
}
