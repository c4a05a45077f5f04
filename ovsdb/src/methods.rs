//! The OVSDB methods (RFC 7047 section 4.1 and the OVS extensions) on one [`Connection`].

use serde_json::{Value, json};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::ops::{OpResult, Transaction};
use crate::schema::DatabaseSchema;

fn unexpected(method: &str, reason: impl Into<String>) -> Error {
    Error::UnexpectedReply {
        method: method.to_owned(),
        reason: reason.into(),
    }
}

/// The reply of `monitor_cond_since`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSinceReply {
    /// True if the server could resume from the transaction id we gave: `updates` then holds
    /// only what changed since. False: `updates` is a full snapshot.
    pub found: bool,
    /// The server's latest transaction id (all zeros for databases without history).
    pub last_txn_id: String,
    /// A `table-updates2` object.
    pub updates: Value,
}

impl Connection {
    /// `list_dbs`: the databases this server serves.
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let v = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(v).map_err(|e| unexpected("list_dbs", e.to_string()))
    }

    /// `get_schema`, raw JSON.
    pub async fn get_schema_json(&self, database: &str) -> Result<Value> {
        self.call("get_schema", json!([database])).await
    }

    /// `get_schema`, parsed.
    pub async fn get_schema(&self, database: &str) -> Result<DatabaseSchema> {
        let v = self.get_schema_json(database).await?;
        DatabaseSchema::from_json(&v).map_err(|e| unexpected("get_schema", e.to_string()))
    }

    /// `transact` with raw params `[db, op, ...]`; returns the raw result array (operation
    /// errors are inside it, see [`Connection::transact`] for the checked form).
    pub async fn transact_raw(&self, params: Value) -> Result<Value> {
        self.call("transact", params).await
    }

    /// `transact`: runs the transaction and returns one result per operation, or the typed
    /// error naming the failing operation, table, column and reason.
    pub async fn transact(&self, txn: &Transaction) -> Result<Vec<OpResult>> {
        let result = self.transact_raw(txn.params()).await?;
        Ok(txn.parse_reply(&result)?)
    }

    /// `monitor` (RFC 7047): returns the initial `table-updates`; changes arrive as `update`
    /// notifications `[monitor_id, table-updates]`.
    pub async fn monitor(
        &self,
        database: &str,
        monitor_id: Value,
        requests: Value,
    ) -> Result<Value> {
        self.call("monitor", json!([database, monitor_id, requests]))
            .await
    }

    /// `monitor_cond`: like `monitor` with conditions; replies and notifies with `update2`.
    pub async fn monitor_cond(
        &self,
        database: &str,
        monitor_id: Value,
        requests: Value,
    ) -> Result<Value> {
        self.call("monitor_cond", json!([database, monitor_id, requests]))
            .await
    }

    /// `monitor_cond_since`: resumes from `last_txn_id` when the server can; notifies with
    /// `update3` `[monitor_id, txn_id, table-updates2]`.
    pub async fn monitor_cond_since(
        &self,
        database: &str,
        monitor_id: Value,
        requests: Value,
        last_txn_id: Option<&str>,
    ) -> Result<MonitorSinceReply> {
        const M: &str = "monitor_cond_since";
        let last = last_txn_id.unwrap_or(crate::replica::ZERO_TXN_ID);
        let v = self
            .call(M, json!([database, monitor_id, requests, last]))
            .await?;
        let Value::Array(mut parts) = v else {
            return Err(unexpected(M, "result is not an array"));
        };
        if parts.len() != 3 {
            return Err(unexpected(M, "result is not [found, last-txn-id, updates]"));
        }
        let updates = parts.pop().unwrap_or(Value::Null);
        let last_txn_id = parts
            .pop()
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| unexpected(M, "last-txn-id is not a string"))?;
        let found = parts
            .pop()
            .and_then(|v| v.as_bool())
            .ok_or_else(|| unexpected(M, "found is not a boolean"))?;
        Ok(MonitorSinceReply {
            found,
            last_txn_id,
            updates,
        })
    }

    /// `monitor_cond_change`: replaces the conditions of monitor `monitor_id`, renaming it to
    /// `new_monitor_id`; the resulting row changes arrive as update2/update3 notifications.
    pub async fn monitor_cond_change(
        &self,
        monitor_id: Value,
        new_monitor_id: Value,
        requests: Value,
    ) -> Result<()> {
        self.call(
            "monitor_cond_change",
            json!([monitor_id, new_monitor_id, requests]),
        )
        .await
        .map(drop)
    }

    /// `monitor_cancel`.
    pub async fn monitor_cancel(&self, monitor_id: Value) -> Result<()> {
        self.call("monitor_cancel", json!([monitor_id]))
            .await
            .map(drop)
    }

    /// `lock`: true if granted now; otherwise a `locked` notification follows when it is.
    pub async fn lock(&self, lock: &str) -> Result<bool> {
        self.lock_like("lock", lock).await
    }

    /// `steal`: takes the lock from its holder (who gets a `stolen` notification).
    pub async fn steal(&self, lock: &str) -> Result<bool> {
        self.lock_like("steal", lock).await
    }

    /// `unlock`.
    pub async fn unlock(&self, lock: &str) -> Result<()> {
        self.call("unlock", json!([lock])).await.map(drop)
    }

    async fn lock_like(&self, method: &str, lock: &str) -> Result<bool> {
        let v = self.call(method, json!([lock])).await?;
        v.get("locked")
            .and_then(Value::as_bool)
            .ok_or_else(|| unexpected(method, format!("no \"locked\" boolean in {v}")))
    }

    /// `set_db_change_aware`: the server then notifies schema changes instead of
    /// disconnecting us.
    pub async fn set_db_change_aware(&self, aware: bool) -> Result<()> {
        self.call("set_db_change_aware", json!([aware]))
            .await
            .map(drop)
    }

    /// `echo`: returns the params the server sent back.
    pub async fn echo(&self, params: Value) -> Result<Value> {
        self.call("echo", params).await
    }
}
