//! The I/O shell of the reconciler: a replica of the owned tables, and applying transactions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrovn_ovsdb::{
    Client, ClientOptions, ColumnValues, MonitorSpec, OpResult, Replica, ReplicaData, Transaction,
    Uuid,
};

use super::{
    ActualRow, Change, Diff, NbSnapshot, SyncTimes, Table, desired_rows, diff, to_transactions,
};
use crate::plan::NbPlan;

/// The NB database name.
pub const NB_DATABASE: &str = "OVN_Northbound";

/// What the replica must follow for [`snapshot`]: the FerrOVN tables, only the columns the
/// diff reads.
pub fn monitor_spec() -> MonitorSpec {
    let mut spec = MonitorSpec::new();
    for t in Table::ALL {
        spec = spec.table_columns(t.name(), &t.monitored_columns());
    }
    spec
}

/// Reads the replica into a snapshot (only the monitored columns).
pub fn snapshot(data: &ReplicaData) -> NbSnapshot {
    let mut out = NbSnapshot::default();
    for t in Table::ALL {
        let rows = data
            .rows(t.name())
            .map(|(uuid, row)| actual_row(t, uuid, row))
            .collect();
        out.tables.insert(t, rows);
    }
    out
}

/// One replica row of `table` as the diff reads it (only the monitored columns).
pub(super) fn actual_row(
    table: Table,
    uuid: &Uuid,
    row: &std::collections::BTreeMap<std::sync::Arc<str>, ferrovn_ovsdb::Datum>,
) -> ActualRow {
    ActualRow {
        uuid: *uuid,
        columns: table
            .monitored_columns()
            .iter()
            .filter_map(|c| row.get(*c).map(|d| ((*c).to_string(), d.clone())))
            .collect::<ColumnValues>(),
    }
}

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("NB transaction {index} of {total} failed: {source}")]
    Transact {
        index: usize,
        total: usize,
        #[source]
        source: ferrovn_ovsdb::Error,
    },
    #[error("connecting to the NB at {remote}: {source}")]
    Connect {
        remote: String,
        #[source]
        source: ferrovn_ovsdb::Error,
    },
    #[error("the NB replica did not show the applied changes within {after:?}")]
    ReplicaLag { after: Duration },
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    pub transactions: usize,
    pub operations: usize,
    pub inserts: usize,
    pub updates: usize,
    pub removals: usize,
    /// Rows that must now exist (table, uuid).
    pub created: Vec<(Table, Uuid)>,
    /// Rows that must now be gone.
    pub removed: Vec<(Table, Uuid)>,
    pub elapsed: Duration,
}

/// Applies `txns` in order (each its own OVSDB transaction), stopping at the first failure.
pub async fn apply(
    client: &Client,
    diff: &Diff,
    txns: &[Transaction],
) -> Result<ApplyReport, ApplyError> {
    let started = Instant::now();
    let mut report = ApplyReport::default();
    let (i, u, r) = diff.counts();
    report.inserts = i;
    report.updates = u;
    report.removals = r;
    for (index, txn) in txns.iter().enumerate() {
        let results = client
            .transact(txn)
            .await
            .map_err(|source| ApplyError::Transact {
                index,
                total: txns.len(),
                source,
            })?;
        for (op, res) in txn.operations.iter().zip(&results) {
            if let (ferrovn_ovsdb::Operation::Insert { table, .. }, OpResult::Inserted(uuid)) =
                (op, res)
                && let Some(t) = Table::ALL.iter().find(|t| t.name() == table)
            {
                report.created.push((*t, *uuid));
            }
        }
        report.transactions += 1;
        report.operations += txn.operations.len();
    }
    for ch in &diff.changes {
        match ch {
            Change::Detach { table, uuid, .. } | Change::Delete { table, uuid, .. } => {
                report.removed.push((*table, *uuid))
            }
            _ => {}
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A connection to the NB with a replica of FerrOVN's tables: plan in, minimal transactions
/// out.
#[derive(Debug, Clone)]
pub struct NbSync {
    pub client: Client,
    pub replica: Replica,
    /// Changes per transaction.
    pub batch: usize,
    /// How long to wait for the replica to show an apply's result.
    pub settle_timeout: Duration,
}

impl NbSync {
    /// Connects to `remote` (`unix:/path`, `tcp:host:port`, or a Raft member list) and
    /// replicates the owned tables.
    pub async fn connect(remote: &str, batch: usize) -> Result<NbSync, ApplyError> {
        let err = |source| ApplyError::Connect {
            remote: remote.to_string(),
            source,
        };
        let client = Client::connect(remote, NB_DATABASE, ClientOptions::default())
            .await
            .map_err(err)?;
        let replica = client.replica(monitor_spec()).await.map_err(err)?;
        Ok(NbSync {
            client,
            replica,
            batch: batch.max(1),
            settle_timeout: Duration::from_secs(30),
        })
    }

    /// The current NB rows.
    pub fn snapshot(&self) -> NbSnapshot {
        self.replica.read(snapshot)
    }

    /// The diff of `plan` against the current replica.
    pub fn diff(&self, plan: &NbPlan) -> Diff {
        let rows = desired_rows(plan);
        self.replica
            .read(|d| diff(&rows, &snapshot(d), &mut Uuid::new_v4))
    }

    /// Makes the NB match `plan` and waits until the replica shows it, so the next diff
    /// starts from the truth.
    pub async fn sync(&self, plan: &NbPlan) -> Result<(Diff, ApplyReport), ApplyError> {
        self.sync_timed(plan).await.map(|(d, r, _)| (d, r))
    }

    /// [`NbSync::sync`] (always a full diff), with where the time went.
    pub async fn sync_timed(
        &self,
        plan: &NbPlan,
    ) -> Result<(Diff, ApplyReport, SyncTimes), ApplyError> {
        let started = Instant::now();
        let d = self.diff(plan);
        let mut times = SyncTimes {
            diff: started.elapsed(),
            ..Default::default()
        };
        let report = self.apply_diff(&d, &mut times).await?;
        Ok((d, report, times))
    }

    /// Applies `d` and waits until the replica shows it; records the time of both in `times`.
    pub async fn apply_diff(
        &self,
        d: &Diff,
        times: &mut SyncTimes,
    ) -> Result<ApplyReport, ApplyError> {
        if d.is_empty() {
            return Ok(ApplyReport::default());
        }
        let txns = to_transactions(d, NB_DATABASE, self.batch);
        let report = apply(&self.client, d, &txns).await?;
        times.apply = report.elapsed;
        let settling = Instant::now();
        self.settle(&report, d).await?;
        times.settle = settling.elapsed();
        Ok(report)
    }

    /// Waits until the replica holds every row `report` created, none it removed, and the new
    /// values of every column `d` updated: the next diff must start from what was written, or
    /// it writes an update again (an update-only transaction creates and removes nothing, and
    /// the replica's copy of it can arrive after the transaction's reply).
    pub async fn settle(&self, report: &ApplyReport, d: &Diff) -> Result<(), ApplyError> {
        let created: Vec<(Table, Uuid)> = report.created.clone();
        let removed: BTreeSet<(Table, Uuid)> = report.removed.iter().copied().collect();
        let updated: Vec<(Table, Uuid, &ColumnValues)> = d
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Update {
                    table,
                    uuid,
                    columns,
                    ..
                } if !columns.is_empty() => Some((*table, *uuid, columns)),
                _ => None,
            })
            .collect();
        self.replica
            .wait_for(self.settle_timeout, |r| {
                let all_there = created.iter().all(|(t, u)| r.row(t.name(), u).is_some());
                let all_gone = removed.iter().all(|(t, u)| r.row(t.name(), u).is_none());
                let all_new = updated.iter().all(|(t, u, columns)| {
                    r.row(t.name(), u).is_some_and(|row| {
                        columns
                            .iter()
                            .all(|(c, want)| super::same(want, row.get(c.as_str())))
                    })
                });
                (all_there && all_gone && all_new).then_some(())
            })
            .await
            .map_err(|_| ApplyError::ReplicaLag {
                after: self.settle_timeout,
            })
    }
}
