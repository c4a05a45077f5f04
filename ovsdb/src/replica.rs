//! The local replica: an in-memory copy of monitored tables kept current by monitor updates.
//!
//! [`ReplicaData`] is the pure core: it applies `update` (RFC 7047), `update2`/`update3`
//! (OVS extensions) and full snapshots, and returns the row changes each one made. [`Replica`]
//! is the shared handle the [`crate::client::Client`] feeds: readers look at the data under a
//! read lock, subscribers receive every change batch in order, and `wait_for` blocks until a
//! predicate over the data holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use crate::datum::{Datum, Uuid};
use crate::row::{Row as TypedRow, RowError};
use crate::schema::{DatabaseSchema, TableSchema};

/// One row: column name → value. Column names are shared between rows.
pub type Row = BTreeMap<Arc<str>, Datum>;

/// What to monitor in one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableMonitor {
    /// Columns to replicate; `None` means every column of the table.
    pub columns: Option<Vec<String>>,
    /// A `monitor_cond` condition (JSON array of `[column, function, value]` clauses, or
    /// `[true]`); `None` means every row.
    pub condition: Option<Value>,
}

/// The tables (and columns, conditions) a replica follows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorSpec {
    tables: BTreeMap<String, TableMonitor>,
}

impl MonitorSpec {
    /// Nothing monitored yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follow every column and row of `table`.
    pub fn table(mut self, table: &str) -> Self {
        self.tables
            .insert(table.to_owned(), TableMonitor::default());
        self
    }

    /// Follow only `columns` of `table`.
    pub fn table_columns(mut self, table: &str, columns: &[&str]) -> Self {
        self.tables.insert(
            table.to_owned(),
            TableMonitor {
                columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
                condition: None,
            },
        );
        self
    }

    /// Follow only the rows of `table` matching `condition` (a JSON array of
    /// `[column, function, value]` clauses, e.g. `json!([["name", "==", "sw0"]])`).
    pub fn table_where(mut self, table: &str, columns: Option<&[&str]>, condition: Value) -> Self {
        self.tables.insert(
            table.to_owned(),
            TableMonitor {
                columns: columns.map(|c| c.iter().map(|c| (*c).to_owned()).collect()),
                condition: Some(condition),
            },
        );
        self
    }

    /// Follow `table` with full control.
    pub fn table_with(mut self, table: &str, monitor: TableMonitor) -> Self {
        self.tables.insert(table.to_owned(), monitor);
        self
    }

    /// The monitored tables.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableMonitor)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The `monitor-cond-change-requests` object: only the conditions (`[true]` for none).
    pub fn to_change_request(&self) -> Value {
        let mut m = Map::new();
        for (table, mon) in &self.tables {
            let cond = mon.condition.clone().unwrap_or_else(|| json!([true]));
            m.insert(table.clone(), json!([{ "where": cond }]));
        }
        Value::Object(m)
    }

    /// True if `other` monitors the same tables and columns (conditions may differ).
    pub fn same_columns(&self, other: &MonitorSpec) -> bool {
        self.tables.len() == other.tables.len()
            && self
                .tables
                .iter()
                .zip(&other.tables)
                .all(|((ta, a), (tb, b))| ta == tb && a.columns == b.columns)
    }

    /// The `monitor-cond-requests` object of `monitor_cond` / `monitor_cond_since`.
    pub fn to_request(&self) -> Value {
        let mut m = Map::new();
        for (table, mon) in &self.tables {
            let mut req = Map::new();
            if let Some(cols) = &mon.columns {
                req.insert("columns".into(), json!(cols));
            }
            if let Some(cond) = &mon.condition {
                req.insert("where".into(), cond.clone());
            }
            m.insert(table.clone(), Value::Array(vec![Value::Object(req)]));
        }
        Value::Object(m)
    }

    /// Checks the spec against a schema: every table and column must exist.
    pub fn validate(&self, schema: &DatabaseSchema) -> Result<(), ReplicaError> {
        for (table, mon) in &self.tables {
            let ts = schema.table(table).ok_or_else(|| ReplicaError {
                table: table.clone(),
                row: None,
                column: None,
                reason: format!("no such table in schema {}", schema.name),
            })?;
            for c in mon.columns.iter().flatten() {
                if c != "_uuid" && c != "_version" && ts.column(c).is_none() {
                    return Err(ReplicaError {
                        table: table.clone(),
                        row: None,
                        column: Some(c.clone()),
                        reason: "no such column".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// An update the replica could not apply; the client answers it with a full resync.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot apply update to table {table}{}{}: {reason}",
    row.map(|r| format!(" row {r}")).unwrap_or_default(),
    column.as_deref().map(|c| format!(" column {c}")).unwrap_or_default())]
pub struct ReplicaError {
    pub table: String,
    pub row: Option<Uuid>,
    pub column: Option<String>,
    pub reason: String,
}

/// How a row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

/// One row's change: `old` is absent for an insert, `new` for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: Arc<str>,
    pub uuid: Uuid,
    pub old: Option<Arc<Row>>,
    pub new: Option<Arc<Row>>,
}

impl RowChange {
    /// True if this change is to `R`'s table.
    pub fn is<R: TypedRow>(&self) -> bool {
        &*self.table == R::TABLE
    }

    /// The row before the change, typed (`None`: insert, or another table).
    pub fn old_as<R: TypedRow>(&self) -> Option<Result<R, RowError>> {
        let old = self.old.as_ref().filter(|_| self.is::<R>())?;
        Some(R::from_columns(self.uuid, old))
    }

    /// The row after the change, typed (`None`: delete, or another table).
    pub fn new_as<R: TypedRow>(&self) -> Option<Result<R, RowError>> {
        let new = self.new.as_ref().filter(|_| self.is::<R>())?;
        Some(R::from_columns(self.uuid, new))
    }

    /// Insert, modify or delete.
    pub fn kind(&self) -> ChangeKind {
        match (&self.old, &self.new) {
            (None, _) => ChangeKind::Insert,
            (Some(_), Some(_)) => ChangeKind::Modify,
            (Some(_), None) => ChangeKind::Delete,
        }
    }
}

/// The changes of one update (one server transaction, or one resync).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangeBatch {
    pub changes: Vec<RowChange>,
    /// The server transaction id after this batch (`update3` / `monitor_cond_since`).
    pub txn_id: Option<String>,
    /// True when the batch came from a full snapshot (first sync or resync after the server
    /// could not resume); the changes are the difference to what the replica held before.
    pub resync: bool,
}

type TableRows = BTreeMap<Uuid, Arc<Row>>;

/// The replicated data: tables of rows by UUID.
#[derive(Debug, Clone)]
pub struct ReplicaData {
    schema: Arc<DatabaseSchema>,
    tables: BTreeMap<Arc<str>, TableRows>,
    names: HashMap<String, Arc<str>>,
    last_txn_id: Option<String>,
    synced: bool,
}

/// The all-zero transaction id ovsdb-server uses when it has no history (standalone dbs).
pub const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";

impl ReplicaData {
    /// An empty replica for a database of this schema.
    pub fn new(schema: Arc<DatabaseSchema>) -> Self {
        ReplicaData {
            schema,
            tables: BTreeMap::new(),
            names: HashMap::new(),
            last_txn_id: None,
            synced: false,
        }
    }

    /// The schema rows are decoded with.
    pub fn schema(&self) -> &DatabaseSchema {
        &self.schema
    }

    /// Replaces the schema (after a reconnect to a server with a newer one).
    pub fn set_schema(&mut self, schema: Arc<DatabaseSchema>) {
        self.schema = schema;
    }

    /// The last transaction id seen, if the server sends them.
    pub fn last_txn_id(&self) -> Option<&str> {
        self.last_txn_id.as_deref()
    }

    /// Forgets the transaction id so the next monitor asks for a full snapshot.
    pub fn forget_txn_id(&mut self) {
        self.last_txn_id = None;
    }

    /// True once a first full snapshot has been applied.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The rows of `table` (empty if unknown or not monitored).
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|t| t.iter().map(|(u, r)| (u, r.as_ref())))
    }

    /// Number of rows in `table`.
    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    /// True if no table holds a row.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(BTreeMap::is_empty)
    }

    /// One row.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid).map(Arc::as_ref)
    }

    /// The rows of `table` whose `column` equals `value` (linear scan).
    pub fn find<'a>(
        &'a self,
        table: &str,
        column: &'a str,
        value: &'a Datum,
    ) -> impl Iterator<Item = (&'a Uuid, &'a Row)> + 'a {
        self.rows(table)
            .filter(move |(_, r)| r.get(column).is_some_and(|d| d == value))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Typed rows of `R`'s table (rows that do not decode are reported as errors).
    pub fn iter<R: TypedRow>(&self) -> impl Iterator<Item = Result<R, RowError>> + '_ {
        self.rows(R::TABLE).map(|(u, r)| R::from_columns(*u, r))
    }

    /// All typed rows of `R`'s table, or the first decoding error.
    pub fn all<R: TypedRow>(&self) -> Result<Vec<R>, RowError> {
        self.iter::<R>().collect()
    }

    /// One typed row.
    pub fn get<R: TypedRow>(&self, uuid: &Uuid) -> Option<Result<R, RowError>> {
        self.row(R::TABLE, uuid).map(|r| R::from_columns(*uuid, r))
    }

    /// The typed rows for which `pred` holds.
    pub fn filter<R: TypedRow>(
        &self,
        mut pred: impl FnMut(&R) -> bool,
    ) -> Result<Vec<R>, RowError> {
        let mut out = Vec::new();
        for r in self.iter::<R>() {
            let r = r?;
            if pred(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(name.to_owned(), n.clone());
        n
    }

    fn table_schema_in<'s>(
        schema: &'s DatabaseSchema,
        table: &str,
    ) -> Result<&'s TableSchema, ReplicaError> {
        schema.table(table).ok_or_else(|| ReplicaError {
            table: table.to_owned(),
            row: None,
            column: None,
            reason: "table not in schema".into(),
        })
    }

    /// Decodes a full row (`initial`, `insert`, or `new` of update v1).
    fn decode_row(&mut self, table: &str, uuid: Uuid, json: &Value) -> Result<Row, ReplicaError> {
        let err = |column: Option<&str>, reason: String| ReplicaError {
            table: table.to_owned(),
            row: Some(uuid),
            column: column.map(str::to_owned),
            reason,
        };
        let Value::Object(cols) = json else {
            return Err(err(None, format!("row is not an object: {json}")));
        };
        let schema = self.schema.clone();
        let ts = Self::table_schema_in(&schema, table)?;
        let mut row = Row::new();
        for (name, v) in cols {
            let Some(cs) = ts.column(name) else {
                // `_version` and columns of a newer schema are not ours to keep.
                continue;
            };
            let d = cs
                .ty
                .decode(v)
                .map_err(|e| err(Some(name), e.to_string()))?;
            row.insert(self.intern(name), d);
        }
        Ok(row)
    }

    /// Applies an `update2` diff to `old`.
    fn apply_modify(
        &mut self,
        table: &str,
        uuid: Uuid,
        old: &Row,
        diff: &Value,
    ) -> Result<Row, ReplicaError> {
        let err = |column: Option<&str>, reason: String| ReplicaError {
            table: table.to_owned(),
            row: Some(uuid),
            column: column.map(str::to_owned),
            reason,
        };
        let Value::Object(cols) = diff else {
            return Err(err(None, format!("modify is not an object: {diff}")));
        };
        let mut row = old.clone();
        let mut changed = Vec::with_capacity(cols.len());
        {
            let ts = Self::table_schema_in(&self.schema, table)?;
            for (name, v) in cols {
                let Some(cs) = ts.column(name) else { continue };
                let d = cs
                    .ty
                    .decode_diff(v)
                    .map_err(|e| err(Some(name), e.to_string()))?;
                let mut cur = old
                    .get(name.as_str())
                    .cloned()
                    .unwrap_or_else(|| cs.ty.default_datum());
                cur.apply_diff(&d, cs.ty.kind())
                    .map_err(|e| err(Some(name), e.to_string()))?;
                changed.push((name.clone(), cur));
            }
        }
        for (name, d) in changed {
            let key = self.intern(&name);
            row.insert(key, d);
        }
        Ok(row)
    }

    fn set_row(&mut self, table: &str, uuid: Uuid, new: Option<Row>) -> Option<RowChange> {
        let key = self.intern(table);
        let rows = self.tables.entry(key.clone()).or_default();
        let new = new.map(Arc::new);
        let old = match &new {
            Some(r) => rows.insert(uuid, r.clone()),
            None => rows.remove(&uuid),
        };
        match (&old, &new) {
            (None, None) => return None,
            (Some(o), Some(n)) if o == n => return None,
            _ => {}
        }
        Some(RowChange {
            table: key,
            uuid,
            old,
            new,
        })
    }

    fn parse_uuid(table: &str, text: &str) -> Result<Uuid, ReplicaError> {
        text.parse().map_err(|_| ReplicaError {
            table: table.to_owned(),
            row: None,
            column: None,
            reason: format!("row key {text:?} is not a UUID"),
        })
    }

    fn each_row(updates: &Value) -> Result<Vec<(&str, &str, &Value)>, ReplicaError> {
        let Value::Object(tables) = updates else {
            return Err(ReplicaError {
                table: String::new(),
                row: None,
                column: None,
                reason: format!("table-updates is not an object: {updates}"),
            });
        };
        let mut out = Vec::new();
        for (table, rows) in tables {
            let Value::Object(rows) = rows else {
                return Err(ReplicaError {
                    table: table.clone(),
                    row: None,
                    column: None,
                    reason: "table-update is not an object".into(),
                });
            };
            for (uuid, update) in rows {
                out.push((table.as_str(), uuid.as_str(), update));
            }
        }
        Ok(out)
    }

    /// Applies an `update2` / `update3` `table-updates2` object.
    pub fn apply_update2(
        &mut self,
        updates: &Value,
        txn_id: Option<&str>,
    ) -> Result<ChangeBatch, ReplicaError> {
        let mut changes = Vec::new();
        for (table, uuid_text, update) in Self::each_row(updates)? {
            let uuid = Self::parse_uuid(table, uuid_text)?;
            let Value::Object(kinds) = update else {
                return Err(ReplicaError {
                    table: table.to_owned(),
                    row: Some(uuid),
                    column: None,
                    reason: "row-update2 is not an object".into(),
                });
            };
            for (kind, body) in kinds {
                let new = match kind.as_str() {
                    "initial" | "insert" => Some(self.decode_row(table, uuid, body)?),
                    "modify" => {
                        let old = self
                            .tables
                            .get(table)
                            .and_then(|t| t.get(&uuid))
                            .cloned()
                            .ok_or_else(|| ReplicaError {
                                table: table.to_owned(),
                                row: Some(uuid),
                                column: None,
                                reason: "modify of a row the replica does not have".into(),
                            })?;
                        Some(self.apply_modify(table, uuid, &old, body)?)
                    }
                    "delete" => None,
                    other => {
                        return Err(ReplicaError {
                            table: table.to_owned(),
                            row: Some(uuid),
                            column: None,
                            reason: format!("unknown row-update2 kind {other:?}"),
                        });
                    }
                };
                changes.extend(self.set_row(table, uuid, new));
            }
        }
        if let Some(t) = txn_id {
            self.last_txn_id = Some(t.to_owned());
        }
        Ok(ChangeBatch {
            changes,
            txn_id: txn_id.map(str::to_owned),
            resync: false,
        })
    }

    /// Applies an RFC 7047 `update` (`table-updates` with `old`/`new`).
    pub fn apply_update(&mut self, updates: &Value) -> Result<ChangeBatch, ReplicaError> {
        let mut changes = Vec::new();
        for (table, uuid_text, update) in Self::each_row(updates)? {
            let uuid = Self::parse_uuid(table, uuid_text)?;
            let new = match update.get("new") {
                Some(new) if !new.is_null() => {
                    // "new" holds every monitored column, so it replaces the row.
                    Some(self.decode_row(table, uuid, new)?)
                }
                _ => None,
            };
            changes.extend(self.set_row(table, uuid, new));
        }
        Ok(ChangeBatch {
            changes,
            txn_id: None,
            resync: false,
        })
    }

    /// Replaces the whole content with a snapshot (`initial` rows of a monitor reply) and
    /// returns the difference to the previous content as the change batch. `tables` are the
    /// monitored tables: those missing from the snapshot are empty.
    pub fn replace_all<'a>(
        &mut self,
        snapshot: &Value,
        tables: impl IntoIterator<Item = &'a str>,
        txn_id: Option<&str>,
    ) -> Result<ChangeBatch, ReplicaError> {
        let mut fresh: BTreeMap<Arc<str>, BTreeMap<Uuid, Row>> = BTreeMap::new();
        for t in tables {
            let key = self.intern(t);
            fresh.entry(key).or_default();
        }
        for (table, uuid_text, update) in Self::each_row(snapshot)? {
            let uuid = Self::parse_uuid(table, uuid_text)?;
            let body = update
                .get("initial")
                .or_else(|| update.get("insert"))
                .or_else(|| update.get("new"));
            let Some(body) = body.filter(|b| !b.is_null()) else {
                continue;
            };
            let row = self.decode_row(table, uuid, body)?;
            let key = self.intern(table);
            fresh.entry(key).or_default().insert(uuid, row);
        }
        let mut changes = Vec::new();
        let old_tables: Vec<Arc<str>> = self.tables.keys().cloned().collect();
        for t in old_tables {
            fresh.entry(t).or_default();
        }
        for (table, rows) in fresh {
            let gone: Vec<Uuid> = self
                .tables
                .get(&table)
                .map(|old| {
                    old.keys()
                        .filter(|u| !rows.contains_key(*u))
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for u in gone {
                changes.extend(self.set_row(&table, u, None));
            }
            for (u, row) in rows {
                changes.extend(self.set_row(&table, u, Some(row)));
            }
        }
        self.last_txn_id = txn_id.map(str::to_owned);
        self.synced = true;
        Ok(ChangeBatch {
            changes,
            txn_id: txn_id.map(str::to_owned),
            resync: true,
        })
    }
}

struct ReplicaState {
    data: RwLock<ReplicaData>,
    monitor: Mutex<MonitorRequest>,
    snapshots: std::sync::atomic::AtomicU64,
    resumes: std::sync::atomic::AtomicU64,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<ChangeBatch>>>>,
    version: watch::Sender<u64>,
}

/// A cheap, cloneable handle to a replica kept current by a [`crate::client::Client`].
#[derive(Clone)]
pub struct Replica {
    database: Arc<str>,
    /// Prefix of every monitor id this replica uses (ids change with the conditions).
    monitor_base: Arc<str>,
    state: Arc<ReplicaState>,
}

/// The current monitor of a replica: what it asks for, and under which id.
#[derive(Debug, Clone)]
pub(crate) struct MonitorRequest {
    pub spec: Arc<MonitorSpec>,
    pub id: String,
    generation: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("database", &self.database)
            .field("monitor", &self.monitor_base)
            .finish()
    }
}

/// Counters of how a replica's monitor was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStats {
    /// Full snapshots received (the first sync, and resyncs when the server could not
    /// resume from our transaction id).
    pub snapshots: u64,
    /// Reconnects that resumed with `monitor_cond_since` from the last transaction id.
    pub resumes: u64,
}

/// Stream of change batches of one subscriber, in the order they were applied.
pub type ChangeStream = mpsc::UnboundedReceiver<Arc<ChangeBatch>>;

/// `wait_for` ran out of time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("condition on replica of {database} not met within {after:?}")]
pub struct WaitTimeout {
    pub database: String,
    pub after: Duration,
}

impl Replica {
    pub(crate) fn new(
        database: &str,
        spec: MonitorSpec,
        monitor_id: String,
        schema: Arc<DatabaseSchema>,
    ) -> Replica {
        Replica {
            database: Arc::from(database),
            monitor_base: Arc::from(monitor_id.as_str()),
            state: Arc::new(ReplicaState {
                monitor: Mutex::new(MonitorRequest {
                    spec: Arc::new(spec),
                    id: format!("{monitor_id}/0"),
                    generation: 0,
                }),
                data: RwLock::new(ReplicaData::new(schema)),
                snapshots: Default::default(),
                resumes: Default::default(),
                subscribers: Mutex::new(Vec::new()),
                version: watch::channel(0).0,
            }),
        }
    }

    /// The database replicated.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// What is monitored.
    pub fn spec(&self) -> Arc<MonitorSpec> {
        self.monitor().spec
    }

    pub(crate) fn monitor(&self) -> MonitorRequest {
        self.state
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True if `id` is one of this replica's monitor ids (any generation).
    pub(crate) fn owns_monitor_id(&self, id: &str) -> bool {
        id.strip_prefix(&*self.monitor_base)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Switches to `spec` under a fresh monitor id and returns the new request.
    pub(crate) fn next_monitor(&self, spec: MonitorSpec) -> MonitorRequest {
        let mut m = self.state.monitor.lock().unwrap_or_else(|p| p.into_inner());
        m.generation += 1;
        m.id = format!("{}/{}", self.monitor_base, m.generation);
        m.spec = Arc::new(spec);
        m.clone()
    }

    /// True when only the client's own list still holds this replica.
    pub(crate) fn is_orphaned(&self) -> bool {
        Arc::strong_count(&self.state) == 1
    }

    /// Reads the current data (do not block inside `f`: updates wait for it).
    pub fn read<R>(&self, f: impl FnOnce(&ReplicaData) -> R) -> R {
        let guard = self.state.data.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// A stream of every change batch applied from now on.
    pub fn subscribe(&self) -> ChangeStream {
        self.subscribe_with(|_| ()).1
    }

    /// Reads the data and subscribes atomically: the stream carries exactly the changes made
    /// after what `f` saw (nothing lost, nothing twice).
    pub fn subscribe_with<R>(&self, f: impl FnOnce(&ReplicaData) -> R) -> (R, ChangeStream) {
        let guard = self.state.data.read().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = mpsc::unbounded_channel();
        self.state
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        (f(&guard), rx)
    }

    /// Waits until `f` returns `Some` for the current data, re-checking after each change.
    pub async fn wait_for<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&ReplicaData) -> Option<R>,
    ) -> Result<R, WaitTimeout> {
        let mut rx = self.state.version.subscribe();
        let check = async {
            loop {
                rx.borrow_and_update();
                if let Some(r) = self.read(&mut f) {
                    return r;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, check)
            .await
            .map_err(|_| WaitTimeout {
                database: self.database.to_string(),
                after: timeout,
            })
    }

    /// How the monitor was (re)established so far.
    pub fn stats(&self) -> ReplicaStats {
        use std::sync::atomic::Ordering::Relaxed;
        ReplicaStats {
            snapshots: self.state.snapshots.load(Relaxed),
            resumes: self.state.resumes.load(Relaxed),
        }
    }

    pub(crate) fn count_establish(&self, resumed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if resumed {
            self.state.resumes.fetch_add(1, Relaxed);
        } else {
            self.state.snapshots.fetch_add(1, Relaxed);
        }
    }

    /// Waits for the first full snapshot.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), WaitTimeout> {
        self.wait_for(timeout, |d| d.is_synced().then_some(()))
            .await
    }

    /// Applies `f` under the write lock and publishes its batch to subscribers.
    pub(crate) fn update(
        &self,
        f: impl FnOnce(&mut ReplicaData) -> Result<ChangeBatch, ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let mut guard = self.state.data.write().unwrap_or_else(|p| p.into_inner());
        let batch = f(&mut guard)?;
        // Publishing while still holding the write lock keeps `subscribe_with` exact.
        let publish = !batch.changes.is_empty() || batch.resync;
        if publish {
            let batch = Arc::new(batch);
            let mut subs = self
                .state
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            subs.retain(|s| s.send(batch.clone()).is_ok());
        }
        drop(guard);
        self.state.version.send_modify(|v| *v += 1);
        Ok(())
    }

    pub(crate) fn with_data_mut<R>(&self, f: impl FnOnce(&mut ReplicaData) -> R) -> R {
        let mut guard = self.state.data.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::ovn_nb;
    use proptest::prelude::*;

    fn nb_schema() -> Arc<DatabaseSchema> {
        let v: Value = serde_json::from_str(ovn_nb::SCHEMA_JSON).unwrap();
        Arc::new(DatabaseSchema::from_json(&v).unwrap())
    }

    const U1: &str = "11111111-1111-4111-8111-111111111111";
    const U2: &str = "22222222-2222-4222-8222-222222222222";

    fn uuid(s: &str) -> Uuid {
        s.parse().unwrap()
    }

    #[test]
    fn update2_modify_applies_set_map_and_scalar_diffs() {
        let mut d = ReplicaData::new(nb_schema());
        let b = d
            .replace_all(
                &json!({"Logical_Switch_Port": {U1: {"initial": {
                    "name": "p", "addresses": ["set", ["a", "b"]],
                    "options": ["map", [["k1", "v1"], ["k2", "v2"]]], "enabled": true}}}}),
                ["Logical_Switch_Port"],
                Some("t1"),
            )
            .unwrap();
        assert!(b.resync);
        assert_eq!(b.changes.len(), 1);
        let b = d
            .apply_update2(
                &json!({"Logical_Switch_Port": {U1: {"modify": {
                    // set: toggle b out, c in; map: k1 changed, k2 removed (same value), k3 added;
                    // optional bool: [true] -> [false] is sent as the set of both.
                    "addresses": ["set", ["b", "c"]],
                    "options": ["map", [["k1", "x"], ["k2", "v2"], ["k3", "v3"]]],
                    "enabled": ["set", [true, false]],
                    "name": "q"}}}}),
                Some("t2"),
            )
            .unwrap();
        assert_eq!(b.changes.len(), 1);
        assert_eq!(b.changes[0].kind(), ChangeKind::Modify);
        let row = d.row("Logical_Switch_Port", &uuid(U1)).unwrap();
        assert_eq!(row["addresses"], Datum::set(["a", "c"]));
        assert_eq!(row["options"], Datum::map([("k1", "x"), ("k3", "v3")]));
        assert_eq!(row["enabled"], Datum::set([false]));
        assert_eq!(row["name"], Datum::from("q"));
        assert_eq!(d.last_txn_id(), Some("t2"));

        let lsp: ovn_nb::LogicalSwitchPort = d.get(&uuid(U1)).unwrap().unwrap();
        assert_eq!(lsp.name, "q");
        assert_eq!(lsp.enabled, Some(false));
        assert_eq!(
            b.changes[0]
                .new_as::<ovn_nb::LogicalSwitchPort>()
                .unwrap()
                .unwrap()
                .name,
            "q"
        );
        assert!(b.changes[0].new_as::<ovn_nb::LogicalSwitch>().is_none());

        let b = d
            .apply_update2(
                &json!({"Logical_Switch_Port": {U1: {"delete": null}}}),
                Some("t3"),
            )
            .unwrap();
        assert_eq!(b.changes[0].kind(), ChangeKind::Delete);
        assert!(d.is_empty());
    }

    #[test]
    fn bad_updates_are_errors_naming_table_row_and_column() {
        let mut d = ReplicaData::new(nb_schema());
        let e = d
            .apply_update2(
                &json!({"Logical_Switch": {U1: {"modify": {"name": "x"}}}}),
                None,
            )
            .unwrap_err();
        assert_eq!(
            (e.table.as_str(), e.row),
            ("Logical_Switch", Some(uuid(U1)))
        );
        let e = d
            .apply_update2(
                &json!({"Logical_Switch": {U1: {"insert": {"name": 5}}}}),
                None,
            )
            .unwrap_err();
        assert_eq!(e.column.as_deref(), Some("name"));
        assert!(
            d.apply_update2(&json!({"Nope": {U1: {"insert": {}}}}), None)
                .is_err()
        );
        assert!(
            d.apply_update2(
                &json!({"Logical_Switch": {"not-a-uuid": {"insert": {}}}}),
                None
            )
            .is_err()
        );
        assert!(d.apply_update2(&json!([1]), None).is_err());
        assert!(
            d.apply_update2(&json!({"Logical_Switch": {U1: {"upsert": {}}}}), None)
                .is_err()
        );
    }

    #[test]
    fn rfc7047_update_replaces_rows() {
        let mut d = ReplicaData::new(nb_schema());
        d.apply_update(
            &json!({"Logical_Switch": {U1: {"new": {"name": "a"}}, U2: {"new": {"name": "b"}}}}),
        )
        .unwrap();
        let b = d
            .apply_update(&json!({"Logical_Switch": {U1: {"old": {"name": "a"}, "new": {"name": "c"}}, U2: {"old": {"name": "b"}}}}))
            .unwrap();
        let kinds: Vec<_> = b.changes.iter().map(RowChange::kind).collect();
        assert_eq!(kinds, vec![ChangeKind::Modify, ChangeKind::Delete]);
        assert_eq!(d.all::<ovn_nb::LogicalSwitch>().unwrap()[0].name, "c");
    }

    fn snapshot(rows: &BTreeMap<u8, String>) -> Value {
        let mut m = Map::new();
        for (k, name) in rows {
            m.insert(
                format!("00000000-0000-4000-8000-0000000000{k:02x}"),
                json!({"initial": {"name": name}}),
            );
        }
        json!({ "Logical_Switch": m })
    }

    /// The `update2` diff ovsdb-server sends for a set column: the symmetric difference.
    fn set_diff(
        old: &std::collections::BTreeSet<String>,
        new: &std::collections::BTreeSet<String>,
    ) -> Value {
        json!(["set", old.symmetric_difference(new).collect::<Vec<_>>()])
    }

    /// ... and for a map column: removed keys with their old value, added and changed keys
    /// with their new value.
    fn map_diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Value {
        let mut pairs = Vec::new();
        for (k, v) in old {
            match new.get(k) {
                None => pairs.push(json!([k, v])),
                Some(n) if n != v => pairs.push(json!([k, n])),
                Some(_) => {}
            }
        }
        for (k, v) in new {
            if !old.contains_key(k) {
                pairs.push(json!([k, v]));
            }
        }
        json!(["map", pairs])
    }

    proptest! {
        /// Applying the server's diffs step by step always yields the new full value.
        #[test]
        fn modify_diffs_reproduce_the_new_values(
            steps in prop::collection::vec((
                prop::collection::btree_set("[a-d]", 0..4),
                prop::collection::btree_map("[a-d]", "[x-z]", 0..4),
                prop::option::of(any::<bool>()),
            ), 1..8),
        ) {
            let mut d = ReplicaData::new(nb_schema());
            let mut old = (Default::default(), BTreeMap::new(), None::<bool>);
            d.replace_all(
                &json!({"Logical_Switch_Port": {U1: {"initial": {"name": "p"}}}}),
                ["Logical_Switch_Port"],
                None,
            ).unwrap();
            for (addresses, options, enabled) in steps {
                let mut diff = Map::new();
                if addresses != old.0 {
                    diff.insert("addresses".into(), set_diff(&old.0, &addresses));
                }
                if options != old.1 {
                    diff.insert("options".into(), map_diff(&old.1, &options));
                }
                if enabled != old.2 {
                    let toggled: Vec<bool> = old.2.into_iter().chain(enabled).collect();
                    diff.insert("enabled".into(), json!(["set", toggled]));
                }
                d.apply_update2(&json!({"Logical_Switch_Port": {U1: {"modify": diff}}}), None).unwrap();
                let lsp: ovn_nb::LogicalSwitchPort = d.get(&uuid(U1)).unwrap().unwrap();
                prop_assert_eq!(&lsp.addresses, &addresses);
                prop_assert_eq!(&lsp.options, &options);
                prop_assert_eq!(lsp.enabled, enabled);
                old = (addresses, options, enabled);
            }
        }
    }

    proptest! {
        /// Whatever the replica held, a resync to a new snapshot emits exactly the changes
        /// that turn the old content into the new one: replaying them on the old content
        /// gives the new content, and unchanged rows produce no change.
        #[test]
        fn resync_diff_replays_to_the_snapshot(
            before in prop::collection::btree_map(0u8..16, "[a-c]{1,2}", 0..10),
            after in prop::collection::btree_map(0u8..16, "[a-c]{1,2}", 0..10),
        ) {
            let mut d = ReplicaData::new(nb_schema());
            d.replace_all(&snapshot(&before), ["Logical_Switch"], None).unwrap();
            let mut replay: BTreeMap<Uuid, Arc<Row>> = d
                .rows("Logical_Switch")
                .map(|(u, r)| (*u, Arc::new(r.clone())))
                .collect();
            let batch = d.replace_all(&snapshot(&after), ["Logical_Switch"], Some("x")).unwrap();
            for ch in &batch.changes {
                match (&ch.old, &ch.new) {
                    (None, Some(n)) => prop_assert!(replay.insert(ch.uuid, n.clone()).is_none()),
                    (Some(o), Some(n)) => {
                        prop_assert_ne!(o, n);
                        let prev = replay.insert(ch.uuid, n.clone());
                        prop_assert_eq!(prev.as_ref(), Some(o));
                    }
                    (Some(o), None) => {
                        let prev = replay.remove(&ch.uuid);
                        prop_assert_eq!(prev.as_ref(), Some(o));
                    }
                    (None, None) => prop_assert!(false, "empty change"),
                }
            }
            let now: BTreeMap<Uuid, Arc<Row>> = d
                .rows("Logical_Switch")
                .map(|(u, r)| (*u, Arc::new(r.clone())))
                .collect();
            prop_assert_eq!(&replay, &now);
            let deletes = before.keys().filter(|k| !after.contains_key(k)).count();
            let inserts = after.keys().filter(|k| !before.contains_key(k)).count();
            let modifies = before
                .iter()
                .filter(|(k, v)| after.get(k).is_some_and(|a| a != *v))
                .count();
            prop_assert_eq!(batch.changes.len(), deletes + inserts + modifies);
        }
    }
}
