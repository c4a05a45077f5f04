//! The client most code uses: one database, reconnecting, Raft-leader-following, with
//! replicas that survive reconnects.
//!
//! A supervisor task owns the connection. It connects to the remotes in turn, reads the
//! `_Server` database to find the cluster leader (or accepts a standalone server), checks
//! the schema version, re-establishes every replica's monitor with `monitor_cond_since` from
//! its last transaction id, re-requests locks, and then routes notifications until the
//! connection dies or the server stops being leader; then it reconnects with jittered,
//! capped exponential backoff. Because the supervisor alone reads notifications and it
//! applies a monitor's reply before reading further, updates are applied in server order.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, ConnectionOptions, Notification, Notifications};
use crate::error::{Error, Result};
use crate::ops::{OpResult, Transaction};
use crate::raft::{ServerDbRow, choose};
use crate::replica::{MonitorSpec, Replica};
use crate::schema::{DatabaseSchema, SchemaVersion};
use crate::transport::{Remote, display_list};

/// Knobs of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per-connection settings (inactivity probe, frame bound).
    pub connection: ConnectionOptions,
    /// Only use a clustered server while it is the Raft leader (default true). Standalone
    /// servers are always used.
    pub leader_only: bool,
    /// The schema version this program was built for (e.g. from the generated code). At
    /// every connect the server's version must have the same major and at least this minor.
    pub expected_schema_version: Option<SchemaVersion>,
    /// How long `connect` and each request wait for a live connection.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt (with jitter) up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connection: ConnectionOptions::default(),
            leader_only: true,
            expected_schema_version: None,
            connect_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Jittered, capped exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay: a random value in [d/2, d] where d = min(max, initial * 2^attempt).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let jitter_range = (base - half).as_micros().max(1) as u64;
        half + Duration::from_micros(random_u64() % jitter_range)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn random_u64() -> u64 {
    // RandomState is seeded per process and perturbed per instance: enough for jitter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A lock notification (`locked` after a queued `lock`, `stolen` when another client stole it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    Locked(String),
    Stolen(String),
}

/// The state of the client's connection, as published by the supervisor.
#[derive(Debug, Clone)]
enum Slot {
    Connecting { last_error: Option<Error> },
    Up(Connection),
    Shutdown,
}

enum Command {
    AddReplica(Replica),
    ChangeReplica(Replica, MonitorSpec, oneshot::Sender<Result<()>>),
}

struct Inner {
    remotes: Vec<Remote>,
    database: String,
    options: ClientOptions,
    slot: watch::Sender<Slot>,
    commands: mpsc::UnboundedSender<Command>,
    cancel: CancellationToken,
    schema: RwLock<Option<Arc<DatabaseSchema>>>,
    locks: Mutex<BTreeSet<String>>,
    lock_events: broadcast::Sender<LockEvent>,
    other_notifications: broadcast::Sender<Notification>,
    next_monitor: AtomicU64,
    connects: AtomicU64,
}

struct StopOnDrop(CancellationToken);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A cheap, cloneable handle to one database on a (possibly clustered) ovsdb-server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remotes", &display_list(&self.inner.remotes))
            .field("database", &self.inner.database)
            .finish()
    }
}

impl Client {
    /// Connects to `database` at `remotes` (`unix:/p`, `tcp:h:p`, or a comma-separated list of
    /// Raft members) and waits for the first usable connection (up to `connect_timeout`;
    /// the error then is the last connect failure, e.g. `SchemaMismatch` or `NoLeader`).
    pub async fn connect(remotes: &str, database: &str, options: ClientOptions) -> Result<Client> {
        let remotes = Remote::parse_list(remotes)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            remotes,
            database: database.to_owned(),
            options,
            slot: watch::channel(Slot::Connecting { last_error: None }).0,
            commands,
            cancel: cancel.clone(),
            schema: RwLock::new(None),
            locks: Mutex::new(BTreeSet::new()),
            lock_events: broadcast::channel(64).0,
            other_notifications: broadcast::channel(1024).0,
            next_monitor: AtomicU64::new(1),
            connects: AtomicU64::new(0),
        });
        tokio::spawn(supervise(inner.clone(), command_rx));
        let client = Client {
            inner,
            _stop: Arc::new(StopOnDrop(cancel)),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The database this client works on.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The schema the server reported at the last connect.
    pub fn schema(&self) -> Option<Arc<DatabaseSchema>> {
        self.inner
            .schema
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many connections the client has established so far (1 after `connect`).
    pub fn connection_count(&self) -> u64 {
        self.inner.connects.load(Ordering::Relaxed)
    }

    /// The live connection, waiting up to `connect_timeout` while (re)connecting.
    pub async fn connection(&self) -> Result<Connection> {
        let mut rx = self.inner.slot.subscribe();
        let wait = async {
            loop {
                let last = match &*rx.borrow_and_update() {
                    Slot::Up(c) if !c.is_closed() => return Ok(c.clone()),
                    Slot::Up(_) => None,
                    Slot::Shutdown => return Err(Error::Shutdown),
                    Slot::Connecting { last_error } => last_error.clone(),
                };
                if rx.changed().await.is_err() {
                    return Err(last.unwrap_or(Error::Shutdown));
                }
            }
        };
        let after = self.inner.options.connect_timeout;
        match tokio::time::timeout(after, wait).await {
            Ok(r) => r,
            Err(_) => Err(match &*self.inner.slot.borrow() {
                Slot::Connecting {
                    last_error: Some(e),
                } => e.clone(),
                _ => Error::Timeout {
                    method: format!("connect to {}", display_list(&self.inner.remotes)),
                    after,
                },
            }),
        }
    }

    /// Runs a transaction on the leader. Not retried on a connection failure (the outcome
    /// is unknown then): the caller decides, e.g. with an idempotent `wait` + `insert`.
    pub async fn transact(&self, txn: &Transaction) -> Result<Vec<OpResult>> {
        let conn = self.connection().await?;
        let result = conn.transact_raw(txn.params()).await;
        let result = self.check_leadership(&conn, result)?;
        Ok(txn.parse_reply(&result)?)
    }

    /// Runs raw `transact` params `[db, op, ...]`, returning the raw result array.
    pub async fn transact_raw(&self, params: Value) -> Result<Value> {
        let conn = self.connection().await?;
        let result = conn.transact_raw(params).await;
        self.check_leadership(&conn, result)
    }

    fn check_leadership(&self, conn: &Connection, result: Result<Value>) -> Result<Value> {
        // A member that lost the leadership refuses with "not leader"; re-probe the cluster.
        let not_leader = match &result {
            Err(Error::Rpc { error, .. }) => error.contains("not leader"),
            Ok(Value::Array(items)) => items.iter().any(|i| {
                i.get("error")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.contains("not leader"))
            }),
            _ => false,
        };
        if not_leader {
            conn.close();
        }
        result
    }

    /// `list_dbs` (retried once across a reconnect).
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        match self.connection().await?.list_dbs().await {
            Err(e) if e.is_connection_failure() => self.connection().await?.list_dbs().await,
            r => r,
        }
    }

    /// `get_schema` of any database on the server.
    pub async fn get_schema(&self, database: &str) -> Result<DatabaseSchema> {
        self.connection().await?.get_schema(database).await
    }

    /// `echo`.
    pub async fn echo(&self, params: Value) -> Result<Value> {
        self.connection().await?.echo(params).await
    }

    /// Requests `lock`; true if granted now, else a [`LockEvent::Locked`] follows. The lock is
    /// requested again after every reconnect until `unlock`.
    pub async fn lock(&self, lock: &str) -> Result<bool> {
        self.remember_lock(lock);
        let granted = self.connection().await?.lock(lock).await?;
        if granted {
            let _ = self
                .inner
                .lock_events
                .send(LockEvent::Locked(lock.to_owned()));
        }
        Ok(granted)
    }

    /// Steals `lock` from its holder.
    pub async fn steal(&self, lock: &str) -> Result<bool> {
        self.remember_lock(lock);
        self.connection().await?.steal(lock).await
    }

    /// Releases `lock` (and stops re-requesting it).
    pub async fn unlock(&self, lock: &str) -> Result<()> {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(lock);
        self.connection().await?.unlock(lock).await
    }

    fn remember_lock(&self, lock: &str) {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lock.to_owned());
    }

    /// `locked` / `stolen` notifications.
    pub fn lock_events(&self) -> broadcast::Receiver<LockEvent> {
        self.inner.lock_events.subscribe()
    }

    /// Notifications no replica consumed (monitors you started yourself on
    /// [`Client::connection`]).
    pub fn notifications(&self) -> broadcast::Receiver<Notification> {
        self.inner.other_notifications.subscribe()
    }

    /// Starts replicating `spec` of this client's database and waits for the first snapshot.
    /// The replica stays current across reconnects and leader changes.
    pub async fn replica(&self, spec: MonitorSpec) -> Result<Replica> {
        let schema = match self.schema() {
            Some(s) => s,
            None => {
                let conn = self.connection().await?;
                Arc::new(conn.get_schema(&self.inner.database).await?)
            }
        };
        spec.validate(&schema)?;
        let id = self.inner.next_monitor.fetch_add(1, Ordering::Relaxed);
        let replica = Replica::new(
            &self.inner.database,
            spec,
            format!("ferrovn-replica-{id}"),
            schema,
        );
        self.inner
            .commands
            .send(Command::AddReplica(replica.clone()))
            .map_err(|_| Error::Shutdown)?;
        replica
            .wait_synced(self.inner.options.connect_timeout)
            .await?;
        Ok(replica)
    }

    /// Changes the row conditions of a replica (`monitor_cond_change`). Tables and columns
    /// must stay the same. Rows that stop matching are deleted from the replica and rows
    /// that start matching are inserted, through the normal change stream.
    pub async fn set_replica_conditions(&self, replica: &Replica, spec: MonitorSpec) -> Result<()> {
        if !replica.spec().same_columns(&spec) {
            return Err(Error::InvalidRequest {
                what: "set_replica_conditions".into(),
                reason: "only conditions can change; tables and columns must stay the same".into(),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::ChangeReplica(replica.clone(), spec, tx))
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Stops the supervisor and closes the connection.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

/// Outcome of one connected period.
enum Ended {
    Shutdown,
    Reconnect,
}

async fn supervise(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut replicas: Vec<Replica> = Vec::new();
    let mut backoff = Backoff::new(inner.options.backoff_initial, inner.options.backoff_max);
    let mut start = 0usize;
    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        match connect_once(&inner, &mut start, &mut replicas, &mut commands).await {
            Ok((conn, notes)) => {
                backoff.reset();
                inner.connects.fetch_add(1, Ordering::Relaxed);
                inner.slot.send_replace(Slot::Up(conn.clone()));
                let ended = run_connected(&inner, &conn, notes, &mut replicas, &mut commands).await;
                conn.close();
                inner
                    .slot
                    .send_replace(Slot::Connecting { last_error: None });
                if matches!(ended, Ended::Shutdown) {
                    break;
                }
                // Start with the next member: the one we had may be gone.
                start = start.wrapping_add(1);
                tracing::info!(database = %inner.database, "connection lost; reconnecting");
                // Brief pause so a restarting server or a new election has a moment.
                let d = Duration::from_millis(20 + random_u64() % 80);
                tokio::select! {
                    _ = inner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(d) => {}
                }
            }
            Err(e) => {
                tracing::debug!(database = %inner.database, error = %e, "connect failed");
                inner.slot.send_replace(Slot::Connecting {
                    last_error: Some(e),
                });
                let delay = backoff.next_delay();
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = inner.cancel.cancelled() => {
                            inner.slot.send_replace(Slot::Shutdown);
                            return;
                        }
                        _ = &mut sleep => break,
                        cmd = commands.recv() => match cmd {
                            Some(Command::AddReplica(r)) => replicas.push(r),
                            Some(Command::ChangeReplica(r, spec, reply)) => {
                                change_offline(&r, spec);
                                let _ = reply.send(Ok(()));
                            }
                            None => {}
                        },
                    }
                }
            }
        }
    }
    inner.slot.send_replace(Slot::Shutdown);
}

/// New conditions while no monitor is running: the next monitor asks for a full snapshot
/// (resuming from a transaction id would miss rows that only the new conditions match).
fn change_offline(replica: &Replica, spec: MonitorSpec) {
    replica.next_monitor(spec);
    replica.with_data_mut(|d| d.forget_txn_id());
}

const SERVER_MONITOR_ID: &str = "ferrovn-server-db";

/// Finds a usable member, checks it, and (re)establishes replicas and locks on it.
async fn connect_once(
    inner: &Arc<Inner>,
    start: &mut usize,
    replicas: &mut Vec<Replica>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Result<(Connection, Notifications)> {
    let n = inner.remotes.len();
    let mut last_error = None;
    let mut found = None;
    for k in 0..n {
        let idx = (*start + k) % n;
        let remote = &inner.remotes[idx];
        match probe_member(inner, remote).await {
            Ok(c) => {
                *start = idx;
                found = Some(c);
                break;
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "member not usable");
                last_error = Some(e);
            }
        }
    }
    let Some((conn, notes, clustered)) = found else {
        return Err(match last_error {
            Some(e) if n == 1 => e,
            Some(e) => Error::NoLeader {
                database: inner.database.clone(),
                remotes: display_list(&inner.remotes),
                reason: e.to_string(),
            },
            None => Error::NoLeader {
                database: inner.database.clone(),
                remotes: display_list(&inner.remotes),
                reason: "no remote".into(),
            },
        });
    };

    let schema = conn.get_schema(&inner.database).await?;
    if let Some(expected) = inner.options.expected_schema_version
        && !schema.version.can_serve(expected)
    {
        conn.close();
        return Err(Error::SchemaMismatch {
            database: inner.database.clone(),
            server: schema.version.to_string(),
            compiled: expected.to_string(),
        });
    }
    let schema = Arc::new(schema);
    *inner.schema.write().unwrap_or_else(|p| p.into_inner()) = Some(schema.clone());

    // Leadership is followed through a monitor of our row of _Server.Database.
    if clustered {
        conn.set_db_change_aware(true).await?;
        let initial = conn
            .monitor_cond(
                "_Server",
                json!(SERVER_MONITOR_ID),
                json!({"Database": [{"columns": ["name", "leader", "connected", "model"],
                                     "where": [["name", "==", inner.database]]}]}),
            )
            .await?;
        if !still_usable(inner, &initial) {
            conn.close();
            return Err(Error::NoLeader {
                database: inner.database.clone(),
                remotes: conn.remote().to_owned(),
                reason: "lost leadership while connecting".into(),
            });
        }
    }

    while let Ok(cmd) = commands.try_recv() {
        match cmd {
            Command::AddReplica(r) => replicas.push(r),
            Command::ChangeReplica(r, spec, reply) => {
                change_offline(&r, spec);
                let _ = reply.send(Ok(()));
            }
        }
    }
    replicas.retain(|r| !r.is_orphaned());
    for r in replicas.iter() {
        establish(&conn, r, &schema).await?;
    }
    let locks: Vec<String> = inner
        .locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    for l in locks {
        if conn.lock(&l).await? {
            let _ = inner.lock_events.send(LockEvent::Locked(l));
        }
    }
    Ok((conn, notes))
}

/// Connects to one member and decides whether it may be used. Returns (conn, notes, clustered).
async fn probe_member(inner: &Inner, remote: &Remote) -> Result<(Connection, Notifications, bool)> {
    // A black-holed TCP peer would otherwise hold the whole rotation for minutes.
    let limit = inner.options.connect_timeout.min(Duration::from_secs(10));
    let (conn, notes) = match tokio::time::timeout(
        limit,
        Connection::connect(remote, &inner.options.connection),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Connect {
                remote: remote.to_string(),
                reason: format!("no connection within {limit:?}"),
            });
        }
    };
    let reply = conn
        .call_timeout(
            "transact",
            json!(["_Server", {"op": "select", "table": "Database",
                "where": [["name", "==", inner.database]],
                "columns": ["name", "model", "connected", "leader", "cid", "sid", "index"]}]),
            probe_call_limit(&inner.options),
        )
        .await?;
    let rows: Vec<ServerDbRow> = reply
        .get(0)
        .and_then(|r| r.get("rows"))
        .and_then(Value::as_array)
        .map(|rows| rows.iter().filter_map(ServerDbRow::from_json).collect())
        .unwrap_or_default();
    match choose(&rows, &inner.database, inner.options.leader_only) {
        Ok(row) => Ok((conn, notes, row.clustered)),
        Err(reason) => {
            conn.close();
            Err(match reason {
                crate::raft::Unusable::NoDatabase => Error::NoSuchDatabase {
                    remote: remote.to_string(),
                    database: inner.database.clone(),
                },
                other => Error::NoLeader {
                    database: inner.database.clone(),
                    remotes: remote.to_string(),
                    reason: other.to_string(),
                },
            })
        }
    }
}

/// How long the leader probe may take: a frozen server accepts connections but never answers.
fn probe_call_limit(options: &ClientOptions) -> Duration {
    let probe = options
        .connection
        .probe_interval
        .map_or(Duration::from_secs(10), |p| p * 2);
    probe
        .max(Duration::from_secs(1))
        .min(Duration::from_secs(10))
}

/// Looks at `_Server.Database` update2 rows for ours: false once it is no longer usable.
fn still_usable(inner: &Inner, updates: &Value) -> bool {
    let Some(rows) = updates.get("Database").and_then(Value::as_object) else {
        return true;
    };
    for change in rows.values() {
        let Some(body) = change
            .get("initial")
            .or_else(|| change.get("insert"))
            .or_else(|| change.get("modify"))
        else {
            continue;
        };
        if body.get("connected").and_then(Value::as_bool) == Some(false) {
            return false;
        }
        if inner.options.leader_only && body.get("leader").and_then(Value::as_bool) == Some(false) {
            return false;
        }
    }
    true
}

/// Sends `monitor_cond_since` for a replica and applies the reply (resume or resync).
async fn establish(
    conn: &Connection,
    replica: &Replica,
    schema: &Arc<DatabaseSchema>,
) -> Result<()> {
    replica.with_data_mut(|d| d.set_schema(schema.clone()));
    let last = replica.read(|d| d.last_txn_id().map(str::to_owned));
    let monitor = replica.monitor();
    let reply = conn
        .monitor_cond_since(
            replica.database(),
            json!(monitor.id),
            monitor.spec.to_request(),
            last.as_deref(),
        )
        .await?;
    let tables: Vec<String> = monitor.spec.tables().map(|(t, _)| t.to_owned()).collect();
    let applied = if reply.found {
        replica.update(|d| d.apply_update2(&reply.updates, Some(&reply.last_txn_id)))
    } else {
        replica.update(|d| {
            d.replace_all(
                &reply.updates,
                tables.iter().map(String::as_str),
                Some(&reply.last_txn_id),
            )
        })
    };
    if let Err(e) = applied {
        // Start from a full snapshot next time.
        replica.with_data_mut(|d| d.forget_txn_id());
        return Err(e.into());
    }
    replica.count_establish(reply.found);
    tracing::debug!(
        monitor = monitor.id,
        resumed = reply.found,
        "monitor established"
    );
    Ok(())
}

async fn run_connected(
    inner: &Arc<Inner>,
    conn: &Connection,
    mut notes: Notifications,
    replicas: &mut Vec<Replica>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Ended {
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return Ended::Shutdown,
            cmd = commands.recv() => match cmd {
                Some(Command::AddReplica(r)) => {
                    let schema = inner.schema.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let Some(schema) = schema else { return Ended::Reconnect };
                    let res = establish(conn, &r, &schema).await;
                    replicas.push(r);
                    if let Err(e) = res {
                        tracing::warn!(error = %e, "monitor failed; reconnecting");
                        return Ended::Reconnect;
                    }
                }
                Some(Command::ChangeReplica(r, spec, reply)) => {
                    let old = r.monitor();
                    let new = r.next_monitor(spec);
                    let res = conn
                        .monitor_cond_change(
                            json!(old.id),
                            json!(new.id),
                            new.spec.to_change_request(),
                        )
                        .await;
                    let failed = res.as_ref().is_err_and(Error::is_connection_failure);
                    if res.is_err() {
                        // The server kept the old conditions (or we do not know): resync
                        // under the new ones.
                        r.with_data_mut(|d| d.forget_txn_id());
                    }
                    let _ = reply.send(res);
                    if failed {
                        return Ended::Reconnect;
                    }
                }
                None => return Ended::Shutdown,
            },
            note = notes.recv() => {
                let Some(note) = note else { return Ended::Reconnect };
                if !handle_notification(inner, replicas, note) {
                    return Ended::Reconnect;
                }
                drop_orphans(conn, replicas);
            }
        }
    }
}

/// Cancels the monitors of replicas nobody holds any more.
fn drop_orphans(conn: &Connection, replicas: &mut Vec<Replica>) {
    replicas.retain(|r| {
        if !r.is_orphaned() {
            return true;
        }
        let conn = conn.clone();
        let id = r.monitor().id;
        tokio::spawn(async move {
            let _ = conn.monitor_cancel(json!(id)).await;
        });
        false
    });
}

/// Routes one notification; false means the connection must be dropped and re-established.
fn handle_notification(inner: &Inner, replicas: &[Replica], note: Notification) -> bool {
    let params = note.params.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let monitor = params.first().and_then(Value::as_str).unwrap_or_default();
    match note.method.as_str() {
        "update2" | "update3" | "update" if monitor == SERVER_MONITOR_ID => {
            let updates = params.get(1).unwrap_or(&Value::Null);
            if !still_usable(inner, updates) {
                tracing::info!(database = %inner.database, "server no longer leader; re-probing");
                return false;
            }
            true
        }
        "update2" | "update3" | "update" => {
            let Some(replica) = replicas.iter().find(|r| r.owns_monitor_id(monitor)) else {
                let _ = inner.other_notifications.send(note);
                return true;
            };
            let result = match (note.method.as_str(), params) {
                ("update3", [_, txn, updates]) => {
                    replica.update(|d| d.apply_update2(updates, txn.as_str()))
                }
                ("update2", [_, updates]) => replica.update(|d| d.apply_update2(updates, None)),
                ("update", [_, updates]) => replica.update(|d| d.apply_update(updates)),
                _ => Err(crate::replica::ReplicaError {
                    table: String::new(),
                    row: None,
                    column: None,
                    reason: format!("malformed {} params", note.method),
                }),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "replica out of step; resyncing");
                replica.with_data_mut(|d| d.forget_txn_id());
                return false;
            }
            true
        }
        "locked" => {
            if let Some(l) = params.first().and_then(Value::as_str) {
                let _ = inner.lock_events.send(LockEvent::Locked(l.to_owned()));
            }
            true
        }
        "stolen" => {
            if let Some(l) = params.first().and_then(Value::as_str) {
                let _ = inner.lock_events.send(LockEvent::Stolen(l.to_owned()));
            }
            true
        }
        _ => {
            let _ = inner.other_notifications.send(note);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[5..] {
            assert!(
                *x >= Duration::from_secs(1) && *x <= Duration::from_secs(2),
                "{x:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
