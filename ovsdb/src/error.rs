//! Errors of the transport, RPC and session layers.
//!
//! Every variant is `Clone` because one failure (a dropped connection) has to be delivered to
//! every request that was in flight on it.

use std::time::Duration;

use serde_json::Value;

/// Everything that can go wrong talking to an ovsdb-server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A remote string (`unix:/path`, `tcp:host:port`) could not be understood.
    #[error("invalid remote {remote:?}: {reason}")]
    InvalidRemote { remote: String, reason: String },
    /// The transport could not be opened.
    #[error("cannot connect to {remote}: {reason}")]
    Connect { remote: String, reason: String },
    /// Reading or writing the socket failed.
    #[error("i/o error on {remote}: {reason}")]
    Io { remote: String, reason: String },
    /// The framing layer refused the byte stream.
    #[error("framing error on {remote}: {source}")]
    Frame {
        remote: String,
        #[source]
        source: crate::framing::FrameError,
    },
    /// A well-formed JSON value that is not a JSON-RPC 1.0 message.
    #[error("invalid JSON-RPC message from {remote}: {reason}")]
    Protocol { remote: String, reason: String },
    /// The connection was closed (by the peer, by us, or after a failure reported earlier).
    #[error("connection to {remote} closed")]
    Disconnected { remote: String },
    /// The peer stayed silent for a whole inactivity-probe interval after our probe.
    #[error("{remote} did not answer the inactivity probe within {interval:?}")]
    ProbeTimeout { remote: String, interval: Duration },
    /// A request got no answer in the time the caller allowed.
    #[error("{method} request timed out after {after:?}")]
    Timeout { method: String, after: Duration },
    /// The server answered a JSON-RPC request with an error object.
    #[error("server rejected {method}: {error}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rpc {
        method: String,
        error: String,
        details: Option<String>,
        /// The whole error object, for callers that need more fields.
        raw: Value,
    },
    /// The server answered, but with a result of an unexpected shape.
    #[error("unexpected reply to {method}: {reason}")]
    UnexpectedReply { method: String, reason: String },
    /// The database on the server has a schema version we cannot work with.
    #[error(
        "schema mismatch for database {database}: server has version {server}, this build was generated for {compiled} (need the same major version and at least the compiled minor)"
    )]
    SchemaMismatch {
        database: String,
        server: String,
        compiled: String,
    },
    /// The server does not serve the requested database.
    #[error("server {remote} has no database {database}")]
    NoSuchDatabase { remote: String, database: String },
    /// None of the remotes of a cluster is a connected leader right now.
    #[error("no cluster leader for {database} among {remotes}: {reason}")]
    NoLeader {
        database: String,
        remotes: String,
        reason: String,
    },
    /// A transaction reached the server and was refused (names operation, table, column).
    #[error(transparent)]
    Transact(#[from] crate::ops::TransactError),
    /// The local replica could not apply an update (the client resyncs).
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    /// A replica condition was not met in time.
    #[error(transparent)]
    WaitTimeout(#[from] crate::replica::WaitTimeout),
    /// The caller asked for something this API cannot do.
    #[error("invalid request {what}: {reason}")]
    InvalidRequest { what: String, reason: String },
    /// The client handle was shut down.
    #[error("client is shut down")]
    Shutdown,
}

impl Error {
    /// True for failures that a reconnect may cure (as opposed to a refused request).
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Io { .. }
                | Error::Frame { .. }
                | Error::Protocol { .. }
                | Error::Disconnected { .. }
                | Error::ProbeTimeout { .. }
                | Error::NoLeader { .. }
        )
    }
}

/// Result alias of this layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
