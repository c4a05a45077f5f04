//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: only the leader writes the NB and patches pods; the others keep their caches warm.
//!
//! - No Lease: create it holding it (`leaseTransitions` 0). A 409 means another candidate was
//!   faster.
//! - A Lease held by someone else: taken over only once it has not changed for
//!   `leaseDurationSeconds` *as measured by our own clock* from when we first saw that record
//!   (never by comparing our clock with the holder's `renewTime`, so clock skew between nodes
//!   cannot cause two leaders). Takeover sets `acquireTime`, bumps `leaseTransitions`.
//! - Held by us: renewed (`renewTime`) every `retry_period`; if no renewal succeeded for
//!   `renew_deadline` we step down (stop writing) before the lease can expire for the others.
//! - Every update is a PUT carrying the `resourceVersion` we read: a concurrent writer makes it
//!   fail with 409 Conflict (optimistic concurrency), never silently overwrites.
//!
//! [`Elector`] is the pure state machine (clock injected); [`LeaseLock`] and [`run`] are the
//! thin kube shell.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Settings of an election (client-go's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Our identity in `holderIdentity` (the pod name, usually).
    pub identity: String,
    /// Namespace and name of the Lease object.
    pub namespace: String,
    pub name: String,
    /// `leaseDurationSeconds`: how long others wait after the last renewal they saw.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down. Less than `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        LeaseConfig {
            identity: identity.into(),
            namespace: "kube-system".into(),
            name: "ferrovn-controller".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The Lease's spec, as far as an election cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty when released.
    pub holder: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub lease_transitions: i32,
}

impl LeaseRecord {
    /// Reads a Lease's spec (absent fields as Kubernetes defaults them: empty / 0).
    pub fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        LeaseRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!self.holder.is_empty()).then(|| self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.lease_transitions),
            ..LeaseSpec::default()
        }
    }
}

/// What a read of the Lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Missing,
    Found {
        record: LeaseRecord,
        resource_version: String,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// POST a new Lease holding it.
    Create(LeaseRecord),
    /// PUT this record with the resourceVersion read (take over or renew).
    Update {
        record: LeaseRecord,
        resource_version: String,
    },
    /// Another candidate holds a live lease: write nothing.
    Wait { holder: String },
}

/// How the write of an [`Action`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// 409: someone else wrote (or created) the Lease first.
    Conflict,
    /// Any other failure (apiserver unreachable, 5xx, ...).
    Failed,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn elapsed_micros(since: Timestamp, now: Timestamp) -> i64 {
    now.as_microsecond().saturating_sub(since.as_microsecond())
}

/// The election's state machine. Feed it what the Lease read found ([`Elector::decide`]) and
/// how the resulting write went ([`Elector::record`]); ask [`Elector::is_leader`] before every
/// write to the cluster or the NB.
#[derive(Debug, Clone)]
pub struct Elector {
    pub config: LeaseConfig,
    /// The record last seen and when (our clock) it was first seen in that form.
    observed: Option<(LeaseRecord, Timestamp)>,
    /// The record we last tried to write.
    pending: Option<LeaseRecord>,
    /// When our last successful acquire/renew was.
    last_renew: Option<Timestamp>,
    leading: bool,
}

impl Elector {
    pub fn new(config: LeaseConfig) -> Self {
        Elector {
            config,
            observed: None,
            pending: None,
            last_renew: None,
            leading: false,
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Decides from a fresh read of the Lease.
    pub fn decide(&mut self, now: Timestamp, observed: Observed) -> Action {
        let me = self.config.identity.clone();
        match observed {
            Observed::Missing => {
                self.observed = None;
                let record = LeaseRecord {
                    holder: me,
                    lease_duration_seconds: self.lease_seconds(),
                    acquire_time: Some(now),
                    renew_time: Some(now),
                    lease_transitions: 0,
                };
                self.pending = Some(record.clone());
                Action::Create(record)
            }
            Observed::Found {
                record,
                resource_version,
            } => {
                let first_seen = match &self.observed {
                    Some((seen, at)) if *seen == record => *at,
                    _ => now,
                };
                self.observed = Some((record.clone(), first_seen));
                if !record.holder.is_empty() && record.holder != me {
                    let duration = if record.lease_duration_seconds > 0 {
                        Duration::from_secs(u64::from(record.lease_duration_seconds.unsigned_abs()))
                    } else {
                        self.config.lease_duration
                    };
                    if elapsed_micros(first_seen, now) < micros(duration) {
                        self.leading = false;
                        self.pending = None;
                        return Action::Wait {
                            holder: record.holder,
                        };
                    }
                }
                let ours = record.holder == me;
                let next = LeaseRecord {
                    holder: me,
                    lease_duration_seconds: self.lease_seconds(),
                    acquire_time: if ours { record.acquire_time } else { Some(now) },
                    renew_time: Some(now),
                    lease_transitions: if ours {
                        record.lease_transitions
                    } else {
                        record.lease_transitions.saturating_add(1)
                    },
                };
                self.pending = Some(next.clone());
                Action::Update {
                    record: next,
                    resource_version,
                }
            }
        }
    }

    /// Records how the write went (or that the read failed: [`Outcome::Failed`]). Returns
    /// whether we lead now.
    pub fn record(&mut self, now: Timestamp, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Written => {
                if let Some(r) = self.pending.take() {
                    self.observed = Some((r, now));
                }
                self.last_renew = Some(now);
                self.leading = true;
            }
            Outcome::Conflict | Outcome::Failed => {
                self.pending = None;
                if self.leading && !self.within_deadline(now) {
                    self.leading = false;
                }
            }
        }
        self.is_leader(now)
    }

    fn within_deadline(&self, now: Timestamp) -> bool {
        self.last_renew
            .is_some_and(|t| elapsed_micros(t, now) < micros(self.config.renew_deadline))
    }

    /// True while we hold the lease and renewed it within the renew deadline.
    pub fn is_leader(&self, now: Timestamp) -> bool {
        self.leading && self.within_deadline(now)
    }

    /// The record that gives the lease up (on shutdown): no holder, 1 s duration, so another
    /// candidate takes over at its next try. `None` unless we lead.
    pub fn release(&mut self, now: Timestamp) -> Option<LeaseRecord> {
        if !self.is_leader(now) {
            return None;
        }
        let (current, _) = self.observed.clone()?;
        self.leading = false;
        Some(LeaseRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: current.acquire_time,
            renew_time: Some(now),
            lease_transitions: current.lease_transitions,
        })
    }
}

/// A wall clock for the election; tests inject their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Wall time advanced by tokio's monotonic clock from a start reading: never jumps back, and
/// follows `tokio::time::pause`/`advance` in tests.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock::starting_at(Timestamp::now())
    }

    pub fn starting_at(wall: Timestamp) -> Self {
        TokioClock {
            start_wall: wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let e = self.start.elapsed();
        self.start_wall
            .checked_add(k8s_openapi::jiff::SignedDuration::from_micros(micros(e)))
            .unwrap_or(self.start_wall)
    }
}

/// The Lease object through the API.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// GET the Lease (404 → [`Observed::Missing`]).
    pub async fn read(&self) -> Result<Observed, kube::Error> {
        match self.api.get_opt(&self.name).await? {
            None => Ok(Observed::Missing),
            Some(l) => Ok(Observed::Found {
                record: LeaseRecord::from_spec(l.spec.as_ref()),
                resource_version: l.metadata.resource_version.unwrap_or_default(),
            }),
        }
    }

    fn lease(&self, record: &LeaseRecord, resource_version: Option<String>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(record.to_spec()),
        }
    }

    /// Carries out an action: POST (create) or PUT with the resourceVersion read.
    pub async fn write(&self, action: &Action) -> Outcome {
        let pp = PostParams {
            field_manager: Some(super::writeback::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let result = match action {
            Action::Wait { .. } => return Outcome::Failed,
            Action::Create(record) => self.api.create(&pp, &self.lease(record, None)).await,
            Action::Update {
                record,
                resource_version,
            } => {
                self.api
                    .replace(
                        &self.name,
                        &pp,
                        &self.lease(record, Some(resource_version.clone())),
                    )
                    .await
            }
        };
        match result {
            Ok(_) => Outcome::Written,
            Err(kube::Error::Api(s)) if s.code == 409 => Outcome::Conflict,
            Err(e) => {
                tracing::warn!(lease = %self.name, "lease write failed: {e}");
                Outcome::Failed
            }
        }
    }
}

/// One round: read, decide, write. Returns whether we lead afterwards.
pub async fn step(elector: &mut Elector, lock: &LeaseLock, clock: &dyn Clock) -> bool {
    let observed = match lock.read().await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("reading the lease: {e}");
            return elector.record(clock.now(), Outcome::Failed);
        }
    };
    let action = elector.decide(clock.now(), observed);
    if let Action::Wait { holder } = &action {
        tracing::debug!(%holder, "lease held by another controller");
        return elector.is_leader(clock.now());
    }
    let outcome = lock.write(&action).await;
    elector.record(clock.now(), outcome)
}

/// Runs the election until `shutdown` resolves, publishing leadership on `leader` (true while
/// we lead). Releases the lease on shutdown if we hold it.
pub async fn run(
    lock: LeaseLock,
    config: LeaseConfig,
    clock: impl Clock,
    leader: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut elector = Elector::new(config);
    tokio::pin!(shutdown);
    loop {
        let leading = step(&mut elector, &lock, &clock).await;
        if *leader.borrow() != leading {
            if leading {
                tracing::info!(identity = %elector.config.identity, "became leader");
            } else {
                tracing::warn!(identity = %elector.config.identity, "not leader (lost or not acquired)");
            }
            let _ = leader.send(leading);
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.config.retry_period) => {}
            _ = &mut shutdown => break,
        }
    }
    let _ = leader.send(false);
    if let Some(record) = elector.release(clock.now())
        && let Ok(Observed::Found {
            resource_version, ..
        }) = lock.read().await
    {
        let _ = lock
            .write(&Action::Update {
                record,
                resource_version,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap_or_default()
    }

    fn cfg(id: &str) -> LeaseConfig {
        LeaseConfig::new(id)
    }

    fn found(holder: &str, renew: i64, transitions: i32, rv: &str) -> Observed {
        Observed::Found {
            record: LeaseRecord {
                holder: holder.into(),
                lease_duration_seconds: 15,
                acquire_time: Some(t(0)),
                renew_time: Some(t(renew)),
                lease_transitions: transitions,
            },
            resource_version: rv.into(),
        }
    }

    #[test]
    fn creates_missing_lease_and_leads() {
        let mut e = Elector::new(cfg("a"));
        let Action::Create(r) = e.decide(t(0), Observed::Missing) else {
            panic!("expected create");
        };
        assert_eq!((r.holder.as_str(), r.lease_transitions), ("a", 0));
        assert_eq!(r.acquire_time, Some(t(0)));
        assert!(!e.is_leader(t(0)), "not before the write succeeded");
        assert!(e.record(t(0), Outcome::Written));
    }

    #[test]
    fn live_foreign_lease_is_left_alone_until_it_stops_changing_for_its_duration() {
        let mut e = Elector::new(cfg("b"));
        // Its renewTime is ancient by our clock: irrelevant (skew). What counts is that the
        // record does not change for 15 s of our time.
        assert_eq!(
            e.decide(t(100), found("a", 0, 3, "7")),
            Action::Wait { holder: "a".into() }
        );
        assert!(matches!(
            e.decide(t(110), found("a", 0, 3, "7")),
            Action::Wait { .. }
        ));
        // The holder renews at our t=112: the wait starts over.
        assert!(matches!(
            e.decide(t(112), found("a", 12, 3, "8")),
            Action::Wait { .. }
        ));
        assert!(matches!(
            e.decide(t(126), found("a", 12, 3, "8")),
            Action::Wait { .. }
        ));
        let Action::Update {
            record,
            resource_version,
        } = e.decide(t(127), found("a", 12, 3, "8"))
        else {
            panic!("expected takeover");
        };
        assert_eq!(resource_version, "8");
        assert_eq!(record.holder, "b");
        assert_eq!(record.lease_transitions, 4);
        assert_eq!(record.acquire_time, Some(t(127)));
        assert!(e.record(t(127), Outcome::Written));
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let mut e = Elector::new(cfg("a"));
        let Action::Update { record, .. } = e.decide(t(50), found("a", 40, 2, "9")) else {
            panic!("expected renew");
        };
        assert_eq!(record.acquire_time, Some(t(0)));
        assert_eq!(record.lease_transitions, 2);
        assert_eq!(record.renew_time, Some(t(50)));
    }

    #[test]
    fn leader_steps_down_when_renewals_fail_past_the_deadline() {
        let mut e = Elector::new(cfg("a"));
        e.decide(t(0), Observed::Missing);
        assert!(e.record(t(0), Outcome::Written));
        e.decide(t(2), found("a", 0, 0, "2"));
        assert!(
            e.record(t(2), Outcome::Failed),
            "one failure within the deadline"
        );
        assert!(e.record(t(9), Outcome::Failed));
        assert!(!e.record(t(12), Outcome::Failed), "10 s without renewal");
        // Without an explicit failure, time alone ends leadership too.
        let mut e = Elector::new(cfg("a"));
        e.decide(t(0), Observed::Missing);
        e.record(t(0), Outcome::Written);
        assert!(e.is_leader(t(9)));
        assert!(!e.is_leader(t(10)));
    }

    #[test]
    fn conflict_on_takeover_means_not_leader() {
        let mut e = Elector::new(cfg("b"));
        e.decide(t(0), found("", 0, 1, "3"));
        assert!(!e.record(t(0), Outcome::Conflict));
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let mut e = Elector::new(cfg("b"));
        assert!(matches!(
            e.decide(t(0), found("", 0, 5, "3")),
            Action::Update { .. }
        ));
        let mut a = Elector::new(cfg("a"));
        a.decide(t(0), Observed::Missing);
        a.record(t(0), Outcome::Written);
        let released = a.release(t(1));
        assert_eq!(released.as_ref().map(|r| r.holder.as_str()), Some(""));
        assert!(!a.is_leader(t(1)));
    }

    #[test]
    fn spec_round_trip() {
        let r = LeaseRecord {
            holder: "x".into(),
            lease_duration_seconds: 15,
            acquire_time: Some(t(1)),
            renew_time: Some(t(2)),
            lease_transitions: 3,
        };
        assert_eq!(LeaseRecord::from_spec(Some(&r.to_spec())), r);
    }
}
