//! FerrOVN's OVSDB client: RFC 7047 plus the OVS extensions OVN relies on.

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
