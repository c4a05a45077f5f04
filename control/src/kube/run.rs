//! The cluster source's loop: watchers → store → (debounced, leader only) one reconcile pass
//! through the same [`Controller::pass_with`] the manifest mode uses → write-back.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use ferrovn_api::security_group::SecurityGroup;
use futures::{Stream, StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::{Controller, ControllerOptions};
use crate::manifest::Object;
use ferrovn_api::crd::{Ip, IpPool, ProviderNetwork, Subnet, Vlan, Vpc};
use ferrovn_api::nad::NetworkAttachmentDefinition;

use super::builtin::plan_builtin_subnets;
use super::ipobject::plan_ip_writes;
use super::lease::{self, LeaseConfig, LeaseLock, TokioClock};
use super::store::{Change, ClusterStore, Kind};
use super::writeback::{
    Target, Writer, existing_allocations, plan_condition_writes, plan_events, plan_object_event,
    plan_writes,
};

/// How often the centralized gateway nodes are probed (kube mode; manifest mode probes every
/// `--interval`).
const GATEWAY_PROBE_PERIOD: Duration = Duration::from_secs(1);

/// How long after a failed pass (or failed writes) the next one starts.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Settings of the cluster source.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The reconcile core's settings (NB remote, state directory, batch, MAC seed, defaults).
    pub controller: ControllerOptions,
    /// Leader election; `None`: this process always leads (a single replica).
    pub lease: Option<LeaseConfig>,
    /// A pass starts once no event came for this long ...
    pub debounce: Duration,
    /// ... or this long after the first event of a burst, whichever is first.
    pub max_delay: Duration,
    /// A full pass this often even without events (repairs NB drift).
    pub resync: Duration,
    /// The kinds watched (all by default).
    pub kinds: Vec<Kind>,
}

impl KubeOptions {
    pub fn new(controller: ControllerOptions) -> Self {
        KubeOptions {
            controller,
            lease: None,
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            kinds: Kind::ALL.to_vec(),
        }
    }
}

/// What the source has done so far (published after every step, for tests and metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub leader: bool,
    /// Every watched kind has been listed.
    pub ready: bool,
    pub events: u64,
    /// (Re)lists started, over all kinds.
    pub relists: u64,
    pub passes: u64,
    pub failed_passes: u64,
    pub pods_patched: u64,
    pub nodes_patched: u64,
    pub subnets_patched: u64,
    /// Vpc, Vlan and IPPool statuses (the `Validated` condition).
    pub statuses_patched: u64,
    /// Events about rejected objects.
    pub events_created: u64,
    /// IP objects created or patched, and deleted.
    pub ips_written: u64,
    pub ips_deleted: u64,
    /// Subnet objects created for the built-in subnets.
    pub subnets_created: u64,
    pub write_failures: u64,
    /// Writes planned by the last pass.
    pub last_pass_writes: usize,
    pub last_issues: Vec<String>,
    /// The store generation the last pass saw.
    pub last_generation: u64,
}

/// When the next pass is due. A change after a quiet spell (nothing changed, and no pass ended,
/// for longer than `quiet`) starts a pass at once: a lone policy edit reaches the NB without
/// waiting out the quiet time, which is most of its API-to-drop latency otherwise. Changes
/// that follow closely (a burst, or what queued while a pass ran) are collapsed: their pass is
/// due `quiet` after the last of them, but never later than `max_delay` after the first.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    /// The first and the last change not yet handled by a pass.
    first: Option<Instant>,
    last: Option<Instant>,
    /// The pending changes began after a quiet spell: the pass is due at `first`.
    leading: bool,
    /// The last change or pass end, whichever is later: the start of the current quiet spell.
    busy_until: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Debounce {
            quiet,
            max_delay,
            first: None,
            last: None,
            leading: false,
            busy_until: None,
        }
    }

    /// Something changed at `now` (or a pass is wanted at `now`, which may be in the future).
    pub fn touch(&mut self, now: Instant) {
        if self.first.is_none() {
            self.leading = self
                .busy_until
                .is_none_or(|t| now.saturating_duration_since(t) > self.quiet);
            self.first = Some(now);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.busy_until = Some(self.busy_until.map_or(now, |b| b.max(now)));
    }

    /// When the pass is due (`None`: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.leading {
            return Some(first);
        }
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// A pass (or the decision not to run one) ended at `now`: everything touched so far is
    /// handled, and changes within `quiet` of `now` belong to a burst again.
    pub fn clear(&mut self, now: Instant) {
        self.first = None;
        self.last = None;
        self.leading = false;
        self.busy_until = Some(self.busy_until.map_or(now, |b| b.max(now)));
    }
}

fn kind_stream<K>(
    client: &Client,
    kind: Kind,
    to_object: fn(K) -> Object,
) -> BoxStream<'static, Change>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |r| async move {
            match r {
                Ok(ev) => Some(Change::from_event(kind, ev, to_object)),
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                    tracing::warn!(
                        kind = kind.name(),
                        "not served by the apiserver (CRD not installed?): treated as empty"
                    );
                    Some(Change::Absent(kind))
                }
                Err(e) => {
                    // The watcher recovers by itself (re-watch, or relist after 410 Gone).
                    tracing::warn!(kind = kind.name(), "watch: {e}");
                    None
                }
            }
        })
        .boxed()
}

/// One merged stream of every watched kind's changes.
pub fn watch_all(client: &Client, kinds: &[Kind]) -> impl Stream<Item = Change> + Send + 'static {
    let streams: Vec<BoxStream<'static, Change>> = kinds
        .iter()
        .map(|&kind| match kind {
            Kind::Namespace => {
                kind_stream::<Namespace>(client, kind, |o| Object::Namespace(Box::new(o)))
            }
            Kind::Pod => kind_stream::<Pod>(client, kind, |o| Object::Pod(Box::new(o))),
            Kind::Node => kind_stream::<Node>(client, kind, |o| Object::Node(Box::new(o))),
            Kind::NetworkAttachmentDefinition => {
                kind_stream::<NetworkAttachmentDefinition>(client, kind, |o| {
                    Object::NetworkAttachmentDefinition(Box::new(o))
                })
            }
            Kind::Subnet => kind_stream::<Subnet>(client, kind, |o| Object::Subnet(Box::new(o))),
            Kind::Vpc => kind_stream::<Vpc>(client, kind, |o| Object::Vpc(Box::new(o))),
            Kind::Ip => kind_stream::<Ip>(client, kind, |o| Object::Ip(Box::new(o))),
            Kind::IpPool => kind_stream::<IpPool>(client, kind, |o| Object::IpPool(Box::new(o))),
            Kind::Vlan => kind_stream::<Vlan>(client, kind, |o| Object::Vlan(Box::new(o))),
            Kind::ProviderNetwork => kind_stream::<ProviderNetwork>(client, kind, |o| {
                Object::ProviderNetwork(Box::new(o))
            }),
            Kind::Service => kind_stream::<Service>(client, kind, |o| Object::Service(Box::new(o))),
            Kind::EndpointSlice => {
                kind_stream::<EndpointSlice>(client, kind, |o| Object::EndpointSlice(Box::new(o)))
            }
            Kind::NetworkPolicy => {
                kind_stream::<NetworkPolicy>(client, kind, |o| Object::NetworkPolicy(Box::new(o)))
            }
            Kind::AdminNetworkPolicy => kind_stream::<AdminNetworkPolicy>(client, kind, |o| {
                Object::AdminNetworkPolicy(Box::new(o))
            }),
            Kind::BaselineAdminNetworkPolicy => {
                kind_stream::<BaselineAdminNetworkPolicy>(client, kind, |o| {
                    Object::BaselineAdminNetworkPolicy(Box::new(o))
                })
            }
            Kind::SecurityGroup => {
                kind_stream::<SecurityGroup>(client, kind, |o| Object::SecurityGroup(Box::new(o)))
            }
        })
        .collect();
    futures::stream::select_all(streams)
}

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("every watch stream ended")]
    WatchesEnded,
}

struct Source {
    opts: KubeOptions,
    store: ClusterStore,
    writer: Writer,
    controller: Option<Controller>,
    stats: Stats,
    /// Events created for the current rejections (not sent again while they last).
    announced: BTreeSet<Target>,
}

impl Source {
    /// One pass (we lead and the store is complete): allocate/plan/apply, then write back.
    /// Returns false when something failed and a retry is due (NB unreachable, a write
    /// refused): the next pass repeats what is missing.
    async fn pass(&mut self, leader: &watch::Receiver<bool>) -> bool {
        if self.controller.is_none() {
            match Controller::connect(self.opts.controller.clone()).await {
                Ok(mut c) => {
                    // A new leader (or a restart) starts from what the cluster carries.
                    c.adopt(existing_allocations(&self.store));
                    self.controller = Some(c);
                }
                Err(e) => {
                    tracing::error!("connecting to the NB: {e}");
                    self.stats.failed_passes += 1;
                    return false;
                }
            }
        }
        let Some(ctl) = self.controller.as_mut() else {
            return false;
        };
        let generation = self.store.generation();
        let manifest = self.store.to_manifest();
        let report = match ctl.pass_with(&manifest).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("pass failed: {e}");
                self.stats.failed_passes += 1;
                // The NB connection may be broken: reconnect next time.
                self.controller = None;
                return false;
            }
        };
        self.stats.passes += 1;
        self.stats.last_generation = generation;
        if report.is_noop() {
            tracing::debug!(interfaces = report.interfaces, "pass: nothing to do");
        } else {
            tracing::info!(
                interfaces = report.interfaces,
                released = report.released,
                nb_ops = report.nb_operations,
                nb_txns = report.nb_transactions,
                ms = report.elapsed.as_millis() as u64,
                "pass applied"
            );
        }
        for issue in &report.issues {
            tracing::warn!("{issue}");
        }
        for rejection in &report.rejected {
            tracing::error!("{rejection}");
        }
        if !*leader.borrow() {
            // Lost the lease during the pass: the new leader writes back.
            return true;
        }
        let now = Time(Timestamp::now());
        let mut writes = plan_writes(
            &self.store,
            ctl.last_records(),
            ctl.active_gateways(),
            |s| ctl.ipam().and_then(|i| i.counts(s)),
            &report.issues,
            true,
            &now,
        );
        writes.extend(plan_condition_writes(&self.store, &report.rejected, &now));
        writes.extend(super::sg_status::plan_security_group_status_writes(
            &self.store,
        ));
        writes.extend(super::policy_report::plan_admin_policy_status_writes(
            &self.store,
            &now,
        ));
        writes.extend(plan_ip_writes(&self.store, ctl.last_records()));
        writes.extend(plan_builtin_subnets(
            &self.store,
            &self.opts.controller.build,
        ));
        // One Event per distinct rejection while it lasts; a fixed and re-broken object gets
        // a new one.
        let mut events = plan_events(&report.rejected, &now);
        events.extend(
            super::policy_report::policy_problems(&self.store)
                .into_iter()
                .map(|(object, message)| plan_object_event(&object, message, &now)),
        );
        let current: BTreeSet<Target> = events.iter().map(|w| w.target.clone()).collect();
        self.announced.retain(|t| current.contains(t));
        writes.extend(
            events
                .into_iter()
                .filter(|w| !self.announced.contains(&w.target)),
        );
        self.stats.last_pass_writes = writes.len();
        self.stats.last_issues = report.issues.clone();
        if writes.is_empty() {
            return true;
        }
        let sent = self.writer.send(&writes).await;
        self.stats.pods_patched += sent.pods_patched as u64;
        self.stats.nodes_patched += sent.nodes_patched as u64;
        self.stats.subnets_patched += sent.subnets_patched as u64;
        self.stats.statuses_patched += sent.statuses_patched as u64;
        self.stats.events_created += sent.events_created as u64;
        self.stats.ips_written += sent.ips_written as u64;
        self.stats.ips_deleted += sent.ips_deleted as u64;
        self.stats.subnets_created += sent.subnets_created as u64;
        self.stats.write_failures += sent.failures.len() as u64;
        for f in sent.failures.iter().chain(&sent.event_failures) {
            tracing::warn!("write-back: {f}");
        }
        let failed: BTreeSet<&str> = sent.event_failures.iter().map(String::as_str).collect();
        for w in writes
            .iter()
            .filter(|w| matches!(w.target, Target::Event { .. }))
        {
            let line_prefix = format!("{}: ", w.target);
            if !failed.iter().any(|f| f.starts_with(&line_prefix)) {
                self.announced.insert(w.target.clone());
            }
        }
        tracing::info!(
            pods = sent.pods_patched,
            nodes = sent.nodes_patched,
            subnets = sent.subnets_patched,
            ips = sent.ips_written + sent.ips_deleted,
            failed = sent.failures.len(),
            "write-back"
        );
        // The answers are newer than what the watch delivered so far; their echo is then a
        // no-op instead of another pass.
        let ok = sent.failures.is_empty();
        for o in sent.updated {
            self.store.apply(Change::Applied(o));
        }
        // A Subnet object just created gets its status in the next pass, which its watch echo
        // (no change) would not start.
        ok && sent.subnets_created == 0
    }
}

/// Runs the cluster source until `shutdown` resolves: watches every kind, elects a leader (if
/// configured), and while leading reconciles after every burst of changes (and every
/// `resync`), writing allocations back to pods, nodes and subnet statuses. `stats` is updated
/// after every step.
pub async fn run(
    client: Client,
    opts: KubeOptions,
    stats: watch::Sender<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KubeError> {
    let (leader_tx, mut leader) = watch::channel(opts.lease.is_none());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    // Without an election the sender stays here, so leadership never changes.
    let mut always_leader = None;
    let election = match opts.lease.clone() {
        Some(cfg) => {
            let lock = LeaseLock::new(client.clone(), &cfg.namespace, &cfg.name);
            Some(tokio::spawn(lease::run(
                lock,
                cfg,
                TokioClock::new(),
                leader_tx,
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            )))
        }
        None => {
            always_leader = Some(leader_tx);
            None
        }
    };

    let mut changes = Box::pin(watch_all(&client, &opts.kinds));
    let mut debounce = Debounce::new(opts.debounce, opts.max_delay);
    let mut resync = tokio::time::interval_at(Instant::now() + opts.resync, opts.resync);
    let kinds = opts.kinds.clone();
    let mut src = Source {
        writer: Writer::new(client),
        store: ClusterStore::new(),
        controller: None,
        announced: BTreeSet::new(),
        stats: Stats {
            leader: *leader.borrow(),
            ..Stats::default()
        },
        opts,
    };
    // the centralized gateways' liveness probe (a no-op without them or without an SB)
    let mut gateway_probe = tokio::time::interval(GATEWAY_PROBE_PERIOD);
    gateway_probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        let deadline = debounce.deadline();
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break Err(KubeError::WatchesEnded) };
                src.stats.events += 1;
                if matches!(change, Change::Init(_)) {
                    src.stats.relists += 1;
                }
                let was_ready = src.store.ready(&kinds);
                let changed = src.store.apply(change);
                src.stats.ready = src.store.ready(&kinds);
                if changed || (src.stats.ready && !was_ready) {
                    debounce.touch(Instant::now());
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                let ok = !(src.stats.ready && *leader.borrow()) || src.pass(&leader).await;
                // Cleared after the pass, so that what queued while it ran is a burst (one
                // trailing pass), not a fresh change that starts another pass at once.
                debounce.clear(Instant::now());
                if !ok {
                    // Retry soon rather than at the next event or resync.
                    debounce.touch(Instant::now() + RETRY_AFTER);
                }
            }
            r = leader.changed() => {
                if r.is_err() {
                    // The election task ended; without it we must not write.
                    src.stats.leader = false;
                    src.controller = None;
                    let _ = stats.send(src.stats.clone());
                    break Ok(());
                }
                let leading = *leader.borrow_and_update();
                src.stats.leader = leading;
                if leading {
                    debounce.touch(Instant::now());
                } else {
                    // Lost the lease: forget the IPAM; the next term rebuilds it from the
                    // cluster, which the other leader may have changed meanwhile.
                    src.controller = None;
                }
            }
            _ = resync.tick() => debounce.touch(Instant::now()),
            _ = gateway_probe.tick() => {
                if *leader.borrow()
                    && let Some(c) = src.controller.as_mut()
                    && c.probe_gateways().await
                {
                    debounce.touch(Instant::now());
                }
            }
            _ = &mut shutdown => break Ok(()),
        }
        stats.send_replace(src.stats.clone());
    };
    let _ = stop_tx.send(true);
    drop(always_leader);
    if let Some(task) = election {
        let _ = task.await;
    }
    stats.send_replace(src.stats.clone());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn debounce_starts_at_once_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(200), ms(1000));
        assert_eq!(d.deadline(), None);
        // The very first change: nothing happened before, so the pass is due at once.
        d.touch(t0);
        assert_eq!(d.deadline(), Some(t0));
        // Changes before that pass runs join it; they do not postpone it.
        d.touch(t0 + ms(5));
        assert_eq!(d.deadline(), Some(t0));
        d.clear(t0 + ms(50));
        assert_eq!(d.deadline(), None);
        // A lone edit a second later (quiet since the pass ended at 50 ms): at once again.
        d.touch(t0 + ms(1050));
        assert_eq!(d.deadline(), Some(t0 + ms(1050)));
        d.clear(t0 + ms(1060));
        // Exactly `quiet` after the pass ended is not longer than `quiet`: trailing.
        d.touch(t0 + ms(1260));
        assert_eq!(d.deadline(), Some(t0 + ms(1460)));
    }

    #[test]
    fn debounce_collapses_a_long_burst_into_few_passes() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(200), ms(1000));
        // A burst: one change every 10 ms for 3 s. Count the passes it triggers, running
        // each pass when due and taking 30 ms.
        let mut passes = Vec::new();
        let mut t = t0;
        let end = t0 + ms(3000);
        while t <= end + ms(2000) {
            if t <= end && (t - t0).as_millis().is_multiple_of(10) {
                d.touch(t);
            }
            if d.deadline().is_some_and(|due| due <= t) {
                passes.push(t - t0);
                t += ms(30);
                d.clear(t);
            } else {
                t += ms(1);
            }
        }
        // The first change starts a pass at once. The rest of the burst never idles for
        // `quiet`, so each later pass covers what came from the end of the one before (the
        // change queued as it ended included) and waits max_delay for it: 4 passes for 301
        // changes, the last 90 ms after the burst.
        assert_eq!(passes, [ms(0), ms(1030), ms(2060), ms(3090)]);
    }

    #[test]
    fn debounce_waits_for_quiet_within_a_burst_but_not_forever() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(200), ms(1000));
        d.touch(t0);
        d.clear(t0 + ms(10));
        // Within `quiet` of the last pass: trailing, `quiet` after the last change.
        d.touch(t0 + ms(100));
        assert_eq!(d.deadline(), Some(t0 + ms(300)));
        d.touch(t0 + ms(250));
        assert_eq!(d.deadline(), Some(t0 + ms(450)));
        // A steady trickle of changes cannot postpone the pass past max_delay.
        for i in 0..20 {
            d.touch(t0 + ms(100 + 100 * i));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(1100)));
        d.clear(t0 + ms(1200));
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn debounce_retry_in_the_future_is_due_then() {
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(200), ms(1000));
        d.touch(t0);
        d.clear(t0 + ms(10));
        // A failed pass asks for another RETRY_AFTER later: due exactly then, not later.
        d.touch(t0 + ms(10) + RETRY_AFTER);
        assert_eq!(d.deadline(), Some(t0 + ms(10) + RETRY_AFTER));
        // A change meanwhile joins the retry rather than starting a pass at once.
        d.touch(t0 + ms(500));
        assert_eq!(d.deadline(), Some(t0 + ms(10) + RETRY_AFTER));
    }
}
