//! FerrOVN's OVSDB client: RFC 7047 plus the OVS extensions OVN relies on.

pub mod client;
pub mod connection;
pub mod error;
pub mod framing;
pub mod jsonrpc;
pub mod methods;
pub mod raft;
pub mod replica;
pub mod transport;

pub use client::{Client, ClientOptions, LockEvent};
pub use connection::{Connection, ConnectionOptions, ConnectionStats, Notification, Notifications};
pub use error::{Error, Result};
pub use methods::MonitorSinceReply;
pub use replica::{
    ChangeBatch, ChangeKind, ChangeStream, MonitorSpec, Replica, ReplicaData, ReplicaStats,
    RowChange, TableMonitor,
};
pub use transport::Remote;
pub mod datum;
pub use datum::{
    Atom, AtomMap, AtomSet, AtomType, AtomValue, Datum, DatumError, DatumKind, DatumValue, Real,
    Uuid,
};
pub mod schema;
pub use schema::{
    BaseType, ColumnSchema, ColumnType, DatabaseSchema, RefType, SchemaError, SchemaVersion,
    TableSchema,
};
pub mod ops;
pub use ops::{
    ColumnValues, Condition, Function, Mutation, Mutator, OpResult, Operation, OvsdbError,
    OvsdbErrorKind, TransactError, Transaction, WaitUntil,
};
pub mod codegen;
pub mod generated;
pub mod row;
pub use generated::{open_vswitch as vswitch, ovn_nb as nb, ovn_sb as sb};
pub use row::{Row, RowError};

/// The examples of docs/ovsdb.md, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/ovsdb.md")]
pub struct OvsdbGuide;
