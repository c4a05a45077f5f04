//! The scoped diff: when two consecutive plans differ only in NetworkPolicy's address sets and
//! port groups (a pod label change, a policy edit), only those rows are diffed against the NB.
//!
//! Why: a full diff flattens every planned row and copies every replica row (5,000 pods, 1,000
//! policies: ~15,000 rows) to find the one `Address_Set` a label change touches; that was most
//! of a label change's latency in `bench-policy` (docs/network-policy.md, "Label change
//! latency"). The scoped diff reads only the rows in scope, so it costs what the change
//! touches.
//!
//! It is exact, not a heuristic: given the previous plan the NB was brought to, its result is
//! the full [`super::diff`] restricted to the rows the new plan changes, and everything outside
//! that scope has a full diff of nothing (test `netpol_incremental` compares both on a real NB).
//! The rows in scope are:
//! - the address sets and port groups that were added, removed or changed between the plans
//!   (by name, owned or not: a foreign row of a planned name is a conflict, as in the full
//!   diff), with the ACLs the NB's port groups hold;
//! - the pod ports those port groups name in the plan or reference in the NB, as link targets
//!   only (their rows are planned but their switch is out of scope, so the diff leaves them be).
//!
//! Anything else that changed (a switch, a port, a load balancer...) gives no scope: the
//! caller diffs in full. [`IncrementalSync`] also diffs in full when the NB changed behind
//! FerrOVN's back, when the last diff left conflicts, and periodically.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use ferrovn_ovsdb::{ChangeStream, ReplicaData, Uuid};

use super::apply::{ApplyError, ApplyReport, NbSync, actual_row};
use super::{ActualRow, Change, DesiredRow, Diff, NbSnapshot, Table, desired_rows, diff};
use crate::plan::{NbPlan, PlannedSwitch};

/// The NetworkPolicy rows two plans disagree on, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyScope {
    pub address_sets: BTreeSet<String>,
    pub port_groups: BTreeSet<String>,
}

impl PolicyScope {
    pub fn is_empty(&self) -> bool {
        self.address_sets.is_empty() && self.port_groups.is_empty()
    }
}

/// The scope of going from `prev` to `next`, or `None` when anything outside NetworkPolicy's
/// rows differs.
pub fn policy_scope(prev: &NbPlan, next: &NbPlan) -> Option<PolicyScope> {
    // Exhaustive on purpose: a new kind of planned row must be placed in or out of the scope
    // here before this compiles.
    let NbPlan {
        switches,
        routers,
        lb_groups,
        chassis_vars,
        port_groups,
        address_sets,
        issues: _,
        active_gateways: _,
    } = prev;
    if *switches != next.switches
        || *routers != next.routers
        || *lb_groups != next.lb_groups
        || *chassis_vars != next.chassis_vars
    {
        return None;
    }
    fn changed<V: PartialEq>(
        a: &std::collections::BTreeMap<String, V>,
        b: &std::collections::BTreeMap<String, V>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
        out
    }
    Some(PolicyScope {
        address_sets: changed(address_sets, &next.address_sets),
        port_groups: changed(port_groups, &next.port_groups),
    })
}

fn name_of(row: &ActualRow) -> Option<&str> {
    row.name()
}

/// The NB rows in `scope` (see the module doc).
fn scoped_snapshot(data: &ReplicaData, scope: &PolicyScope, next: &NbPlan) -> NbSnapshot {
    let mut out = NbSnapshot::default();
    let row_name = |row: &std::collections::BTreeMap<std::sync::Arc<str>, ferrovn_ovsdb::Datum>| {
        row.get("name")
            .and_then(|d| d.as_atom())
            .and_then(|a| a.as_str())
            .map(str::to_owned)
    };
    // Only the rows in scope are copied: the name is read in place.
    let rows_named = |table: Table, names: &BTreeSet<String>| -> Vec<ActualRow> {
        data.rows(table.name())
            .filter(|(_, row)| row_name(row).is_some_and(|n| names.contains(&n)))
            .map(|(uuid, row)| actual_row(table, uuid, row))
            .collect()
    };
    let sets = rows_named(Table::AddressSet, &scope.address_sets);
    let groups = rows_named(Table::PortGroup, &scope.port_groups);
    let mut acls = Vec::new();
    let mut port_uuids = BTreeSet::new();
    for g in &groups {
        for u in g.uuids("acls") {
            if let Some(row) = data.row(Table::Acl.name(), &u) {
                acls.push(actual_row(Table::Acl, &u, row));
            }
        }
        port_uuids.extend(g.uuids("ports"));
    }
    let planned_ports: HashSet<&str> = scope
        .port_groups
        .iter()
        .filter_map(|n| next.port_groups.get(n))
        .flat_map(|g| g.ports.iter().map(String::as_str))
        .collect();
    let ports: Vec<ActualRow> = data
        .rows(Table::LogicalSwitchPort.name())
        .filter(|(uuid, row)| {
            port_uuids.contains(*uuid)
                || row_name(row).is_some_and(|n| planned_ports.contains(n.as_str()))
        })
        .map(|(uuid, row)| actual_row(Table::LogicalSwitchPort, uuid, row))
        .collect();
    out.tables.insert(Table::AddressSet, sets);
    out.tables.insert(Table::PortGroup, groups);
    out.tables.insert(Table::Acl, acls);
    out.tables.insert(Table::LogicalSwitchPort, ports);
    out
}

/// The planned rows in `scope`: its address sets and port groups (with their ACLs), and the
/// planned rows of the pod ports named `ports` (link targets).
fn scoped_rows(next: &NbPlan, scope: &PolicyScope, ports: &HashSet<&str>) -> Vec<DesiredRow> {
    let mut mini = NbPlan::default();
    for n in &scope.address_sets {
        if let Some(a) = next.address_sets.get(n) {
            mini.address_sets.insert(n.clone(), a.clone());
        }
    }
    for n in &scope.port_groups {
        if let Some(g) = next.port_groups.get(n) {
            mini.port_groups.insert(n.clone(), g.clone());
        }
    }
    for sw in next.switches.values() {
        let picked: std::collections::BTreeMap<_, _> = sw
            .ports
            .iter()
            .filter(|(n, _)| ports.contains(n.as_str()))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        if picked.is_empty() {
            continue;
        }
        mini.switches.insert(
            sw.name.clone(),
            PlannedSwitch {
                name: sw.name.clone(),
                other_config: sw.other_config.clone(),
                external_ids: sw.external_ids.clone(),
                ports: picked,
                acls: Default::default(),
                lb_groups: Default::default(),
            },
        );
    }
    let mut rows = desired_rows(&mini);
    // The switches only carried the ports there: out of scope.
    rows.retain(|r| r.table != Table::LogicalSwitch);
    rows
}

/// The diff of `next` against the NB in `data`, restricted to what changed since `prev` (the
/// plan the NB was last brought to). `None` when the change is not NetworkPolicy's alone, or
/// the NB holds a pod port in scope that `next` does not plan (then only a full diff knows
/// what to do with it).
pub fn scoped_diff(
    prev: &NbPlan,
    next: &NbPlan,
    data: &ReplicaData,
    new_uuid: &mut dyn FnMut() -> Uuid,
) -> Option<Diff> {
    let scope = policy_scope(prev, next)?;
    if scope.is_empty() {
        return Some(Diff::default());
    }
    let actual = scoped_snapshot(data, &scope, next);
    let mut port_names: HashSet<&str> = scope
        .port_groups
        .iter()
        .filter_map(|n| next.port_groups.get(n))
        .flat_map(|g| g.ports.iter().map(String::as_str))
        .collect();
    port_names.extend(
        actual
            .rows(Table::LogicalSwitchPort)
            .iter()
            .filter_map(name_of),
    );
    let rows = scoped_rows(next, &scope, &port_names);
    // Every owned pod port in scope must be planned, or the diff would detach it.
    let planned: HashSet<&str> = rows
        .iter()
        .filter(|r| r.table == Table::LogicalSwitchPort)
        .map(|r| r.key.as_str())
        .collect();
    if actual
        .rows(Table::LogicalSwitchPort)
        .iter()
        .filter_map(ActualRow::owned_key)
        .any(|k| !planned.contains(k))
    {
        return None;
    }
    Some(diff(&rows, &actual, new_uuid))
}

/// How a sync went about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every planned row against every NB row.
    #[default]
    Full,
    /// Only NetworkPolicy's rows that changed ([`scoped_diff`]).
    Scoped,
}

/// Where the time of one sync went.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SyncTimes {
    pub mode: SyncMode,
    /// Flattening the plan, reading the replica, diffing.
    pub diff: Duration,
    /// The transactions (sent until the last reply).
    pub apply: Duration,
    /// Until the replica showed the result.
    pub settle: Duration,
}

/// A diff every this often is full even when nothing asks for it, so anything a scoped diff
/// cannot see is repaired within this time (the kube mode's default resync; the manifest
/// mode's resync asks for a full diff itself).
pub const FULL_DIFF_EVERY: Duration = Duration::from_secs(300);

/// [`NbSync::sync`] that diffs only what changed since the last sync when it safely can: the
/// last sync succeeded without conflicts, the NB changed since only by FerrOVN's own
/// transactions, and the last full diff is younger than [`FULL_DIFF_EVERY`].
#[derive(Debug)]
pub struct IncrementalSync {
    last: Option<NbPlan>,
    last_full: Option<Instant>,
    /// Rows the last sync's transactions wrote: a change to any other row is someone else's.
    ours: HashSet<Uuid>,
    /// Update batches the last sync's transactions are still to produce (one per
    /// transaction): a further batch, even on our rows, is someone else's.
    expected: usize,
    changes: ChangeStream,
    pub full_every: Duration,
}

impl IncrementalSync {
    /// Follows `nb`'s replica from now on.
    pub fn new(nb: &NbSync) -> Self {
        IncrementalSync {
            last: None,
            last_full: None,
            ours: HashSet::new(),
            expected: 0,
            changes: nb.replica.subscribe(),
            full_every: FULL_DIFF_EVERY,
        }
    }

    /// Forgets the last plan: the next sync diffs in full.
    pub fn invalidate(&mut self) {
        self.last = None;
    }

    /// True when someone other than the last sync changed the NB since: a batch that is not
    /// one of the last sync's own (one per transaction, on the rows it wrote).
    fn foreign_changes(&mut self) -> bool {
        let mut foreign = false;
        while let Ok(batch) = self.changes.try_recv() {
            let ours = !batch.resync
                && self.expected > 0
                && batch.changes.iter().all(|c| self.ours.contains(&c.uuid));
            if ours {
                self.expected -= 1;
            } else {
                foreign = true;
            }
        }
        foreign
    }

    /// Makes the NB match `plan` (kept for the next sync) and waits for the replica.
    pub async fn sync(
        &mut self,
        nb: &NbSync,
        plan: NbPlan,
    ) -> Result<(Diff, ApplyReport, SyncTimes), ApplyError> {
        let started = Instant::now();
        let foreign = self.foreign_changes();
        let fresh = self
            .last_full
            .is_some_and(|t| t.elapsed() < self.full_every);
        let scoped = match self.last.take() {
            Some(prev) if fresh && !foreign => nb
                .replica
                .read(|d| scoped_diff(&prev, &plan, d, &mut Uuid::new_v4)),
            _ => None,
        };
        let mut times = SyncTimes::default();
        let d = match scoped {
            Some(d) => {
                times.mode = SyncMode::Scoped;
                d
            }
            None => nb.diff(&plan),
        };
        times.diff = started.elapsed();
        let report = nb.apply_diff(&d, &mut times).await?;
        self.ours = touched(&d, &report);
        self.expected = report.transactions;
        if times.mode == SyncMode::Full {
            self.last_full = Some(Instant::now());
        }
        if d.conflicts.is_empty() {
            self.last = Some(plan);
        }
        Ok((d, report, times))
    }
}

/// Every row `d` writes, parents whose sets it mutates included.
fn touched(d: &Diff, report: &ApplyReport) -> HashSet<Uuid> {
    let mut out: HashSet<Uuid> = report.created.iter().map(|(_, u)| *u).collect();
    out.extend(report.removed.iter().map(|(_, u)| *u));
    for ch in &d.changes {
        match ch {
            Change::Insert { uuid, parent, .. } => {
                out.extend(*uuid);
                out.extend(parent.map(|p| p.uuid));
            }
            Change::Update {
                uuid,
                detach_from,
                attach_to,
                ..
            } => {
                out.insert(*uuid);
                out.extend(detach_from.iter().map(|p| p.uuid));
                out.extend(attach_to.map(|p| p.uuid));
            }
            Change::Detach { uuid, parents, .. } => {
                out.insert(*uuid);
                out.extend(parents.iter().map(|p| p.uuid));
            }
            Change::Delete { uuid, .. } => {
                out.insert(*uuid);
            }
            // A weak reference does not change the row it points at.
            Change::Link { uuid, .. } => {
                out.insert(*uuid);
            }
        }
    }
    out
}
