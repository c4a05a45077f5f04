//! The reconcile loop: desired state from a source (a directory of manifests in the lab) →
//! IPAM → plan → NB, with the allocations recorded for the node agent.
//!
//! One [`Controller::pass`] reads the source, allocates every interface (an owner keeps what
//! it holds), writes the allocation records, plans and applies the minimal NB changes. The
//! first pass recovers the IPAM from the records on disk and the NB's own ports, so a restart
//! moves no address.

pub mod admin_policy;
pub mod desired;
pub mod gateway_health;
pub mod netpol;
pub mod probe_source;
pub mod recover;
pub mod security_group;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ipam::{Ipam, Recovery};
use crate::manifest::{self, Manifest, ManifestError};
use crate::plan;
use crate::reconcile::{ApplyError, IncrementalSync, NbSync, SyncMode};

pub use desired::{Allocated, BuildOptions, Cluster, Interface, InterfaceKind, Rejection};
pub use state::{AllocationRecord, StateFiles};

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// NB remote: `unix:/path`, `tcp:host:port` or a Raft member list.
    pub nb: String,
    /// The manifest directory.
    pub manifests: PathBuf,
    /// Where allocation records are kept.
    pub state_dir: PathBuf,
    /// Changes per NB transaction.
    pub batch: usize,
    /// Seed of generated MACs (keep it per cluster).
    pub mac_seed: u64,
    pub build: BuildOptions,
    /// The SB remote: with it, centralized gateways fail over (see [`gateway_health`]).
    pub sb: Option<String>,
    /// A gateway node whose chassis did not answer for this long is dead.
    pub gateway_dead_after: Duration,
}

impl ControllerOptions {
    pub fn new(
        nb: impl Into<String>,
        manifests: impl Into<PathBuf>,
        state: impl Into<PathBuf>,
    ) -> Self {
        ControllerOptions {
            nb: nb.into(),
            manifests: manifests.into(),
            state_dir: state.into(),
            batch: 1000,
            mac_seed: DEFAULT_MAC_SEED,
            build: BuildOptions::default(),
            sb: None,
            gateway_dead_after: DEFAULT_GATEWAY_DEAD_AFTER,
        }
    }
}

/// How long a gateway chassis may stay silent before its subnets fail over: a few probe
/// periods, so one slow `ovn-controller` iteration on a loaded node is not a death.
pub const DEFAULT_GATEWAY_DEAD_AFTER: Duration = Duration::from_secs(6);

/// The default MAC seed (any fixed value works; it only has to stay the same).
pub const DEFAULT_MAC_SEED: u64 = 0x4665_7272_4f56_4e00;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("reading manifests: {0}")]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Nb(#[from] ApplyError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{0}")]
    Gateway(String),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    /// Interfaces with an allocation (pods' and nodes').
    pub interfaces: usize,
    pub released: usize,
    pub records_written: usize,
    pub records_removed: usize,
    pub nb_inserts: usize,
    pub nb_updates: usize,
    pub nb_removals: usize,
    pub nb_operations: usize,
    pub nb_transactions: usize,
    /// True when the NB diff covered only the NetworkPolicy rows that changed since the last
    /// pass (reconcile::scoped); false for a full diff.
    pub nb_diff_scoped: bool,
    /// Problems: rejected objects, failed allocations, plan issues, NB conflicts.
    pub issues: Vec<String>,
    /// The invalid objects this pass left out (their errors are among `issues` too).
    pub rejected: Vec<Rejection>,
    /// Recovery at the first pass: records read and conflicts found.
    pub recovered: Option<(usize, usize)>,
    pub elapsed: Duration,
}

impl PassReport {
    /// True when the pass changed nothing.
    pub fn is_noop(&self) -> bool {
        self.nb_operations == 0
            && self.records_written == 0
            && self.records_removed == 0
            && self.released == 0
    }
}

/// The controller of manifest mode.
#[derive(Debug)]
pub struct Controller {
    pub options: ControllerOptions,
    pub nb: NbSync,
    /// The last applied plan and the NB changes since: a pod label change diffs the rows it
    /// touches, not all of them.
    incremental: IncrementalSync,
    ipam: Option<Ipam>,
    files: StateFiles,
    /// Allocations found outside the state directory (a cluster's pod annotations), added to
    /// the first pass's recovery.
    adopted: Vec<crate::ipam::ExistingAllocation>,
    last_records: Vec<AllocationRecord>,
    /// NB changes since the last [`Controller::pass_if_changed`] (subscribed on first use).
    nb_changes: Option<ferrovn_ovsdb::ChangeStream>,
    /// The manifest directory as of the last successful pass of `pass_if_changed`.
    last_fingerprint: Option<u64>,
    /// Per-Service load balancer plans of earlier passes: an endpoint change re-plans one
    /// Service, not all of them.
    plan_cache: plan::PlanCache,
    last_full: Option<Instant>,
    /// Subnets the IPAM holds, to drop those deleted from the source.
    ipam_subnets: std::collections::BTreeSet<String>,
    /// The centralized gateways' liveness probe (with an SB to ask).
    gateway_health: Option<gateway_health::GatewayHealth>,
    /// The nodes named by centralized subnets' `gatewayNode` as of the last pass.
    gateway_nodes: std::collections::BTreeSet<String>,
    /// The last probe's answer and the last plan's active gateways.
    liveness: plan::GatewayLiveness,
    /// The nodes carrying each centralized subnet's egress, as of the last plan.
    active_gateways: std::collections::BTreeMap<String, Vec<String>>,
    planned_once: bool,
}

impl Controller {
    /// Connects to the NB. Nothing is read or written before the first [`Controller::pass`].
    pub async fn connect(options: ControllerOptions) -> Result<Controller, ControllerError> {
        let nb = NbSync::connect(&options.nb, options.batch).await?;
        let files = StateFiles::new(options.state_dir.clone());
        let gateway_health = match &options.sb {
            Some(sb) => Some(
                gateway_health::GatewayHealth::connect(
                    nb.client.clone(),
                    sb,
                    options.gateway_dead_after,
                )
                .await
                .map_err(|e| ControllerError::Gateway(e.to_string()))?,
            ),
            None => None,
        };
        let incremental = IncrementalSync::new(&nb);
        Ok(Controller {
            options,
            nb,
            incremental,
            ipam: None,
            files,
            adopted: Vec::new(),
            last_records: Vec::new(),
            nb_changes: None,
            last_fingerprint: None,
            plan_cache: plan::PlanCache::default(),
            last_full: None,
            ipam_subnets: Default::default(),
            gateway_health,
            gateway_nodes: Default::default(),
            liveness: Default::default(),
            active_gateways: Default::default(),
            planned_once: false,
        })
    }

    /// One liveness probe of the gateway nodes (a no-op without centralized subnets or without an SB in
    /// [`ControllerOptions::sb`]). True when the answer changed: a pass is due.
    pub async fn probe_gateways(&mut self) -> bool {
        let Some(h) = self.gateway_health.as_mut() else {
            return false;
        };
        if self.gateway_nodes.is_empty() {
            return false;
        }
        // blind: keep the last answer (nothing moves on a probe's own failure)
        let Some(alive) = h.probe(&self.gateway_nodes).await else {
            return false;
        };
        let alive = Some(alive);
        if alive == self.liveness.alive {
            return false;
        }
        tracing::info!(alive = ?alive, "gateway liveness changed");
        self.liveness.alive = alive;
        true
    }

    /// The active gateway of each centralized subnet as FerrOVN's rows in the NB say
    /// (`external_ids:active-gateway` of its 29000 reroute).
    fn active_gateways_in_nb(&self) -> std::collections::BTreeMap<String, String> {
        self.nb.replica.read(|r| {
            r.rows("Logical_Router_Policy")
                .filter_map(|(_, row)| {
                    let ids = row.get("external_ids")?.as_map()?;
                    let get = |k: &str| ids.get_str(k).and_then(|a| a.as_str());
                    if get(plan::OWNER_KEY) != Some(plan::OWNER_VALUE)
                        || get("gateway") != Some("centralized")
                    {
                        return None;
                    }
                    let node = get("active-gateway")?.split(',').next()?.to_string();
                    Some((get("subnet")?.to_string(), node))
                })
                .collect()
        })
    }

    /// The nodes carrying each centralized subnet's egress (`status.activateGateway`).
    pub fn active_gateways(&self) -> &std::collections::BTreeMap<String, Vec<String>> {
        &self.active_gateways
    }

    /// The IPAM (after the first pass).
    pub fn ipam(&self) -> Option<&Ipam> {
        self.ipam.as_ref()
    }

    /// Adds allocations found elsewhere (pods annotated `allocated=true` in a cluster) to the
    /// recovery of the first pass. No effect after the first pass.
    pub fn adopt(&mut self, existing: Vec<crate::ipam::ExistingAllocation>) {
        self.adopted.extend(existing);
    }

    /// The allocation records of the last pass (what a cluster source writes back to pods).
    pub fn last_records(&self) -> &[AllocationRecord] {
        &self.last_records
    }

    /// A pass when something may have changed: the manifest directory (file names, sizes,
    /// modification times), the NB (any change to FerrOVN's tables, e.g. a port deleted by
    /// hand), or `resync` elapsed since the last pass. `None` when skipped. A rescan of a
    /// large, unchanged directory then costs a directory walk, not a parse.
    pub async fn pass_if_changed(
        &mut self,
        resync: Duration,
    ) -> Result<Option<PassReport>, ControllerError> {
        let replica = &self.nb.replica;
        let changes = self.nb_changes.get_or_insert_with(|| replica.subscribe());
        let mut nb_changed = false;
        while changes.try_recv().is_ok() {
            nb_changed = true;
        }
        let fp = manifest_fingerprint(&self.options.manifests);
        let due = self.last_full.is_none_or(|t| t.elapsed() >= resync);
        let gateways_moved = self.probe_gateways().await;
        if !nb_changed && !due && !gateways_moved && self.last_fingerprint == Some(fp) {
            return Ok(None);
        }
        if due {
            // The resync is what repairs what no notification told about: diff everything.
            self.incremental.invalidate();
        }
        let report = self.pass().await?;
        self.last_fingerprint = Some(fp);
        self.last_full = Some(Instant::now());
        Ok(Some(report))
    }

    /// One pass over the manifest directory.
    pub async fn pass(&mut self) -> Result<PassReport, ControllerError> {
        let started = Instant::now();
        // The parsed objects are the biggest transient of a pass: drop them before anything
        // long-lived is allocated, so they do not pin memory (fragmentation) afterwards.
        let cluster = {
            let manifest = manifest::load_dir(&self.options.manifests)?;
            desired::read_cluster(&manifest, &self.options.build)
        };
        self.pass_cluster(cluster, started).await
    }

    /// One pass over already-loaded objects (the same path a kube watcher feeds).
    pub async fn pass_with(&mut self, manifest: &Manifest) -> Result<PassReport, ControllerError> {
        let started = Instant::now();
        let cluster = desired::read_cluster(manifest, &self.options.build);
        self.pass_cluster(cluster, started).await
    }

    async fn pass_cluster(
        &mut self,
        cluster: Cluster,
        started: Instant,
    ) -> Result<PassReport, ControllerError> {
        let mut report = PassReport::default();
        report.issues.extend(cluster.issues.iter().cloned());
        report.rejected = cluster.rejected.clone();

        let subnets = desired::ipam_subnets(&cluster);
        let ipam = match self.ipam.take() {
            Some(mut ipam) => {
                for s in subnets {
                    if let Err(e) = ipam.upsert_subnet(s) {
                        report.issues.push(e.to_string());
                    }
                }
                for p in &cluster.pools {
                    if let Err(e) = ipam.upsert_pool(p.clone()) {
                        report.issues.push(e.to_string());
                    }
                }
                ipam
            }
            None => {
                let (records, bad) = self.files.read_all();
                report.issues.extend(bad);
                let mut existing: Vec<_> = records.iter().filter_map(|r| r.to_existing()).collect();
                existing.extend(recover::nb_records(&self.nb.snapshot()));
                existing.append(&mut self.adopted);
                let n = existing.len();
                let Recovery {
                    ipam,
                    conflicts,
                    misplaced,
                    rejected,
                } = Ipam::rebuild(
                    self.options.mac_seed,
                    subnets,
                    cluster.pools.clone(),
                    existing,
                );
                for c in &conflicts {
                    tracing::warn!("recovery: {c}");
                    report.issues.push(format!("recovery: {c}"));
                }
                for m in &misplaced {
                    tracing::warn!(owner = %m.owner, ip = %m.ip, "recovered address the subnet would not hand out now: {}", m.why);
                }
                report.issues.extend(rejected.iter().map(|e| e.to_string()));
                report.recovered = Some((n, conflicts.len()));
                ipam
            }
        };
        let mut ipam = ipam;
        let (allocated, released, issues) = desired::allocate(&cluster, &mut ipam);
        // Subnets deleted from the source: their pods moved or went above, so they are empty
        // now (one still in use stays until its last holder is gone).
        let current: std::collections::BTreeSet<String> = cluster.subnets.keys().cloned().collect();
        for gone in self.ipam_subnets.difference(&current) {
            if let Err(e) = ipam.remove_subnet(gone) {
                report.issues.push(format!("deleted subnet {gone}: {e}"));
            }
        }
        self.ipam_subnets = current;
        self.ipam = Some(ipam);
        report.issues.extend(issues);
        report.interfaces = allocated.len();
        report.released = released.len();

        // Records first: after a crash here the next start recovers from them.
        let records: Vec<AllocationRecord> =
            allocated.iter().map(|a| record_of(&cluster, a)).collect();
        let st = self.files.sync(&records)?;
        report.records_written = st.written;
        report.records_removed = st.removed;
        self.last_records = records;

        let mut desired = desired::desired(&cluster, &allocated);
        self.gateway_nodes = desired
            .subnets
            .iter()
            .filter(|s| s.centralized_gateway)
            .filter_map(|s| plan::parse_gateway_nodes(&s.gateway_node).ok())
            .flatten()
            .map(|g| g.node)
            .collect();
        if !self.planned_once {
            // a restarted controller (or a new leader) keeps the active gateways the NB has
            self.liveness.previous_active = self.active_gateways_in_nb();
            self.planned_once = true;
        }
        desired.gateway_liveness = self.liveness.clone();
        let planned = plan::plan_cached(&desired, &mut self.plan_cache);
        // active-backup keeps its node while it lives: the next plan starts from this one
        self.liveness.previous_active = planned
            .active_gateways
            .iter()
            .filter_map(|(s, nodes)| Some((s.clone(), nodes.first()?.clone())))
            .collect();
        self.active_gateways = planned.active_gateways.clone();
        report
            .issues
            .extend(planned.issues.iter().map(ToString::to_string));
        // The plan stays with `incremental` for the next pass's scoped diff.
        let (diff, applied, times) = self.incremental.sync(&self.nb, planned).await?;
        report
            .issues
            .extend(diff.conflicts.iter().map(ToString::to_string));
        report.nb_inserts = applied.inserts;
        report.nb_updates = applied.updates;
        report.nb_removals = applied.removals;
        report.nb_operations = applied.operations;
        report.nb_transactions = applied.transactions;
        report.nb_diff_scoped = times.mode == SyncMode::Scoped;
        drop(diff);
        release_free_memory();
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// The record of one allocated interface.
pub fn record_of(cluster: &Cluster, a: &Allocated) -> AllocationRecord {
    let i = &a.interface;
    AllocationRecord {
        version: state::FORMAT_VERSION,
        kind: match i.kind {
            InterfaceKind::Pod => "pod".into(),
            InterfaceKind::Node => "node".into(),
        },
        namespace: i.namespace.clone(),
        name: i.name.clone(),
        provider: i.provider.clone(),
        node: i.node.clone(),
        port_name: match i.kind {
            InterfaceKind::Node => ferrovn_api::names::join_port_name(&i.name),
            InterfaceKind::Pod if i.ovn => {
                ferrovn_api::names::lsp_name(&i.name, &i.namespace, &i.provider)
            }
            InterfaceKind::Pod => String::new(),
        },
        annotations: match i.kind {
            InterfaceKind::Node => {
                let mut ann = desired::allocation_annotations(cluster, a);
                ann.extend(desired::node_network_annotations(cluster, &i.name));
                ann
            }
            InterfaceKind::Pod => desired::allocation_annotations(cluster, a),
        },
    }
}

/// Hands memory freed by a pass back to the OS. A pass allocates a lot transiently (parsed
/// manifests, the plan, the diff); without this glibc keeps the peak resident forever.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A hash of the manifest files' names, sizes and modification times (the files
/// [`manifest::load_dir`] reads).
pub fn manifest_fingerprint(dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, u64, u128)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| manifest::EXTENSIONS.contains(&x))
            {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                out.push((path, meta.len(), mtime));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}
