//! Leader election against the fake kube-apiserver: the exact Lease requests (paths, methods,
//! bodies, resourceVersion preconditions) and what a candidate does with a live, an expired
//! and a concurrently modified Lease. The clock is injected, so "15 s later" is exact.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Duration;

use ferrovn_control::kube::lease::{
    self, Action, Clock, Elector, LeaseConfig, LeaseLock, Observed, Outcome,
};
use ferrovn_testkit::fake_kube::{FakeApi, fixture, rbac_violations};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ferrovn-controller";
const ME: &str = "ferrovn-controller-7f9c6d5b8-k4m2n";
const OTHER: &str = "ferrovn-controller-5d8f7c9b4-q2w8x";

struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn at(s: &str) -> Self {
        ManualClock(Mutex::new(s.parse().expect("timestamp")))
    }
    fn advance(&self, secs: i64) {
        let mut t = self.0.lock().unwrap();
        *t = t.checked_add(SignedDuration::from_secs(secs)).unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn config() -> LeaseConfig {
    LeaseConfig::new(ME)
}

fn setup() -> (FakeApi, LeaseLock) {
    let fake = FakeApi::new();
    let lock = LeaseLock::new(fake.client(), "kube-system", "ferrovn-controller");
    (fake, lock)
}

fn lease_spec(fake: &FakeApi) -> Value {
    fake.get("Lease", "kube-system", "ferrovn-controller")
        .expect("lease exists")["spec"]
        .clone()
}

#[tokio::test]
async fn missing_lease_is_created_then_renewed_with_its_resource_version() {
    let (fake, lock) = setup();
    let clock = ManualClock::at("2026-11-27T10:00:00Z");
    let mut e = Elector::new(config());

    assert!(lease::step(&mut e, &lock, &clock).await, "creator leads");
    let reqs = fake.requests();
    assert_eq!(
        reqs.iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("GET", LEASE, 404), ("POST", LEASES, 201)]
    );
    let post = &reqs[1];
    assert_eq!(post.query, "fieldManager=ferrovn-controller");
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        post.body.as_ref().unwrap(),
        &json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "ferrovn-controller", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": ME,
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-11-27T10:00:00.000000Z",
                "renewTime": "2026-11-27T10:00:00.000000Z",
                "leaseTransitions": 0
            }
        })
    );
    let created_rv = fake
        .get("Lease", "kube-system", "ferrovn-controller")
        .unwrap()["metadata"]["resourceVersion"]
        .clone();

    clock.advance(2);
    assert!(lease::step(&mut e, &lock, &clock).await);
    let put = fake.writes().pop().unwrap();
    assert_eq!(
        (put.method.as_str(), put.path.as_str(), put.status),
        ("PUT", LEASE, 200)
    );
    let body = put.body.unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"], created_rv,
        "optimistic concurrency"
    );
    assert_eq!(
        body["spec"],
        json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-11-27T10:00:00.000000Z",
            "renewTime": "2026-11-27T10:00:02.000000Z",
            "leaseTransitions": 0
        })
    );
    assert_eq!(rbac_violations(&fake.requests()), Vec::<String>::new());
}

#[tokio::test]
async fn live_lease_of_another_holder_gets_no_writes() {
    let (fake, lock) = setup();
    fake.apply(fixture("lease-held.json"));
    let clock = ManualClock::at("2026-11-27T10:00:00Z");
    let mut e = Elector::new(config());

    assert!(!lease::step(&mut e, &lock, &clock).await);
    // The holder keeps renewing every 5 s; we look every 2 s for a minute.
    for i in 1..=30 {
        clock.advance(2);
        if i % 3 == 0 {
            let mut l = fake
                .get("Lease", "kube-system", "ferrovn-controller")
                .unwrap();
            l["spec"]["renewTime"] =
                Value::String(format!("2026-11-27T10:00:{:02}.000000Z", i * 2 % 60));
            fake.apply(l);
        }
        assert!(!lease::step(&mut e, &lock, &clock).await, "round {i}");
    }
    assert!(
        fake.writes().is_empty(),
        "a follower writes nothing: {:?}",
        fake.writes()
    );
    assert_eq!(lease_spec(&fake)["holderIdentity"], OTHER);
}

#[tokio::test]
async fn expired_lease_is_taken_over_with_transitions_plus_one() {
    let (fake, lock) = setup();
    let held = fake.apply(fixture("lease-held.json"));
    let clock = ManualClock::at("2026-11-27T10:00:00Z");
    let mut e = Elector::new(config());

    // First sight: the renewTime (09:41:10) is long past by our wall clock, but clocks of
    // other nodes may be off; only an unchanged record for a full lease duration counts.
    assert!(!lease::step(&mut e, &lock, &clock).await);
    clock.advance(14);
    assert!(!lease::step(&mut e, &lock, &clock).await);
    assert!(fake.writes().is_empty());

    clock.advance(2);
    assert!(
        lease::step(&mut e, &lock, &clock).await,
        "taken over after 16 s unchanged"
    );
    let put = fake.writes().pop().unwrap();
    assert_eq!(
        (put.method.as_str(), put.path.as_str(), put.status),
        ("PUT", LEASE, 200)
    );
    let body = put.body.unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"],
        held["metadata"]["resourceVersion"]
    );
    assert_eq!(
        body["spec"],
        json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-11-27T10:00:16.000000Z",
            "renewTime": "2026-11-27T10:00:16.000000Z",
            "leaseTransitions": 5
        })
    );
    assert_eq!(lease_spec(&fake)["leaseTransitions"], 5);
}

#[tokio::test]
async fn concurrent_update_gets_409_and_no_leadership() {
    let (fake, lock) = setup();
    fake.apply(fixture("lease-held.json"));
    let clock = ManualClock::at("2026-11-27T10:00:00Z");
    let mut e = Elector::new(config());
    e.decide(clock.now(), lock.read().await.unwrap());
    clock.advance(16);
    let action = e.decide(clock.now(), lock.read().await.unwrap());
    assert!(matches!(action, Action::Update { .. }));

    // The old holder renews between our read and our write.
    let mut l = fake
        .get("Lease", "kube-system", "ferrovn-controller")
        .unwrap();
    l["spec"]["renewTime"] = json!("2026-11-27T10:00:16.100000Z");
    fake.apply(l);

    assert_eq!(lock.write(&action).await, Outcome::Conflict);
    assert!(!e.record(clock.now(), Outcome::Conflict));
    let put = fake.writes().pop().unwrap();
    assert_eq!((put.method.as_str(), put.status), ("PUT", 409));
    assert_eq!(
        lease_spec(&fake)["holderIdentity"],
        OTHER,
        "nothing overwritten"
    );
}

#[tokio::test]
async fn create_race_gets_409_already_exists() {
    let (fake, lock) = setup();
    let clock = ManualClock::at("2026-11-27T10:00:00Z");
    let mut e = Elector::new(config());
    let action = e.decide(clock.now(), lock.read().await.unwrap());
    assert!(matches!(action, Action::Create(_)));
    fake.apply(fixture("lease-held.json"));
    assert_eq!(lock.write(&action).await, Outcome::Conflict);
    assert!(!e.record(clock.now(), Outcome::Conflict));
    assert_eq!(lease_spec(&fake)["holderIdentity"], OTHER);
    // The next round sees the other holder's live lease.
    assert_eq!(
        e.decide(clock.now(), lock.read().await.unwrap()),
        Action::Wait {
            holder: OTHER.into()
        }
    );
}

#[tokio::test]
async fn run_publishes_leadership_and_releases_on_shutdown() {
    let (fake, lock) = setup();
    let mut cfg = config();
    cfg.retry_period = Duration::from_millis(50);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lease::run(lock, cfg, lease::TokioClock::new(), tx, async {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| *l))
        .await
        .expect("leads within 10 s")
        .unwrap();
    assert_eq!(lease_spec(&fake)["holderIdentity"], ME);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    assert!(!*rx.borrow());
    let spec = lease_spec(&fake);
    assert_eq!(spec.get("holderIdentity"), None, "released: {spec}");
    assert_eq!(spec["leaseDurationSeconds"], 1);
    // A released lease is free at once for the next candidate.
    let mut other = Elector::new(LeaseConfig::new(OTHER));
    let observed = LeaseLock::new(fake.client(), "kube-system", "ferrovn-controller")
        .read()
        .await
        .unwrap();
    assert!(matches!(observed, Observed::Found { .. }));
    assert!(matches!(
        other.decide(Timestamp::now(), observed),
        Action::Update { .. }
    ));
}
