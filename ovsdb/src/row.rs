//! Typed rows: the [`Row`] trait that the generated table structs (`crate::nb`, `crate::sb`,
//! `crate::vswitch`) implement, and the helpers their generated code calls.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use crate::datum::{Datum, DatumError, DatumValue, Uuid};
use crate::ops::{ColumnValues, Condition, Operation};

/// A column of a replica or select row could not be read as the typed field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("table {table}, column {column}: {source}")]
pub struct RowError {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// Why the value did not fit.
    #[source]
    pub source: DatumError,
}

/// A typed row of one table, generated from the database schema.
///
/// Rows carry their `_uuid`. A row built in code for insertion can be given a fresh id with
/// [`Uuid::new_v4`]: [`Row::insert_op`] then sends it as the insert's `uuid`, so other
/// operations of the same transaction can reference the row by that id, no named-uuid needed.
pub trait Row: Sized {
    /// The table name, e.g. `"Logical_Switch_Port"`.
    const TABLE: &'static str;
    /// Every column of the table (without `_uuid`), in schema order.
    const COLUMNS: &'static [&'static str];
    /// Columns that cannot change after insert; [`Row::update_all_op`] leaves them out.
    const IMMUTABLE_COLUMNS: &'static [&'static str] = &[];

    /// The row's `_uuid` ([`Uuid::NIL`] for a row not yet given one).
    fn uuid(&self) -> Uuid;

    /// Reads a row from its column map (a replica row keyed by `Arc<str>`, a select result
    /// keyed by `String`). Missing columns take their default value, as in `update2`
    /// "initial"/"insert" rows which omit them.
    fn from_columns<K: Borrow<str> + Ord>(
        uuid: Uuid,
        columns: &BTreeMap<K, Datum>,
    ) -> Result<Self, RowError>;

    /// The value of one column by name (`_uuid` included); `None` for an unknown name.
    fn column(&self, name: &str) -> Option<Datum>;

    /// The columns whose value differs from the column default: what an insert must send.
    fn to_columns(&self) -> ColumnValues;

    /// Just the named columns (unknown names are skipped).
    fn columns_named(&self, names: &[&str]) -> ColumnValues {
        names
            .iter()
            .filter_map(|name| self.column(name).map(|d| ((*name).to_owned(), d)))
            .collect()
    }

    /// Every column, defaults included.
    fn all_columns(&self) -> ColumnValues {
        self.columns_named(Self::COLUMNS)
    }

    /// `insert` of this row's non-default columns, with its `uuid` when it has one.
    fn insert_op(&self) -> Operation {
        let op = Operation::insert_row(Self::TABLE, self.to_columns());
        if self.uuid() == Uuid::NIL {
            op
        } else {
            op.with_uuid(self.uuid())
        }
    }

    /// `update` of the named columns of this row (by `_uuid`).
    fn update_op(&self, columns: &[&str]) -> Operation {
        let mut op = Operation::update(Self::TABLE).filter(Condition::uuid(self.uuid()));
        for (name, value) in self.columns_named(columns) {
            op = op.with(name, value);
        }
        op
    }

    /// `update` of every mutable column of this row (by `_uuid`): the row as it is here.
    fn update_all_op(&self) -> Operation {
        let names: Vec<&str> = Self::COLUMNS
            .iter()
            .copied()
            .filter(|c| !Self::IMMUTABLE_COLUMNS.contains(c))
            .collect();
        self.update_op(&names)
    }

    /// `delete` of this row (by `_uuid`).
    fn delete_op(&self) -> Operation {
        Operation::delete(Self::TABLE).filter(Condition::uuid(self.uuid()))
    }
}

/// Reads column `column` of `table` from `columns`, defaulting when absent. Called by
/// generated code.
pub fn read_column<T: DatumValue, K: Borrow<str> + Ord>(
    table: &'static str,
    column: &'static str,
    columns: &BTreeMap<K, Datum>,
) -> Result<T, RowError> {
    match columns.get(column) {
        None => Ok(T::default_value()),
        Some(datum) => T::from_datum(datum).map_err(|source| RowError {
            table,
            column,
            source,
        }),
    }
}

/// Adds `column` to `out` unless `value` is the column default. Called by generated code.
pub fn put_non_default<T: DatumValue + PartialEq>(
    out: &mut ColumnValues,
    column: &'static str,
    value: &T,
) {
    if *value != T::default_value() {
        out.insert(column.to_owned(), value.to_datum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A hand-written row, shaped like generated ones, to test the trait's provided methods.
    #[derive(Debug, Clone, PartialEq, Default)]
    struct Port {
        uuid: Uuid,
        name: String,
        tag: Option<i64>,
        addresses: BTreeSet<String>,
    }

    impl Row for Port {
        const TABLE: &'static str = "Port";
        const COLUMNS: &'static [&'static str] = &["name", "tag", "addresses"];
        const IMMUTABLE_COLUMNS: &'static [&'static str] = &["name"];
        fn uuid(&self) -> Uuid {
            self.uuid
        }
        fn from_columns<K: Borrow<str> + Ord>(
            uuid: Uuid,
            c: &BTreeMap<K, Datum>,
        ) -> Result<Self, RowError> {
            Ok(Port {
                uuid,
                name: read_column(Self::TABLE, "name", c)?,
                tag: read_column(Self::TABLE, "tag", c)?,
                addresses: read_column(Self::TABLE, "addresses", c)?,
            })
        }
        fn column(&self, name: &str) -> Option<Datum> {
            Some(match name {
                "_uuid" => self.uuid.to_datum(),
                "name" => self.name.to_datum(),
                "tag" => self.tag.to_datum(),
                "addresses" => self.addresses.to_datum(),
                _ => return None,
            })
        }
        fn to_columns(&self) -> ColumnValues {
            let mut out = ColumnValues::new();
            put_non_default(&mut out, "name", &self.name);
            put_non_default(&mut out, "tag", &self.tag);
            put_non_default(&mut out, "addresses", &self.addresses);
            out
        }
    }

    #[test]
    fn provided_methods_build_the_right_operations() {
        let id = Uuid::new_v4();
        let port = Port {
            uuid: id,
            name: "p".into(),
            tag: None,
            addresses: ["a".to_string()].into(),
        };
        let insert = port.insert_op().to_json();
        assert_eq!(
            insert,
            serde_json::json!({"op": "insert", "table": "Port", "row": {"name": "p", "addresses": "a"}, "uuid": id.to_string()})
        );
        let update = port.update_all_op().to_json();
        assert_eq!(
            update,
            serde_json::json!({"op": "update", "table": "Port",
                "where": [["_uuid", "==", ["uuid", id.to_string()]]],
                "row": {"tag": ["set", []], "addresses": "a"}})
        );
        assert_eq!(
            port.columns_named(&["tag", "bogus"])
                .keys()
                .collect::<Vec<_>>(),
            ["tag"]
        );
        let back = Port::from_columns(id, &port.all_columns()).unwrap();
        assert_eq!(back, port);
        let interned: BTreeMap<std::sync::Arc<str>, Datum> = port
            .all_columns()
            .into_iter()
            .map(|(k, v)| (std::sync::Arc::from(k.as_str()), v))
            .collect();
        assert_eq!(Port::from_columns(id, &interned).unwrap(), port);
        let fresh = Port::default().insert_op().to_json();
        assert!(fresh.get("uuid").is_none());
        assert_eq!(port.delete_op().to_json()["op"], "delete");
    }

    #[test]
    fn missing_columns_default_and_bad_ones_name_the_column() {
        let row = Port::from_columns(Uuid::NIL, &BTreeMap::<String, Datum>::new()).unwrap();
        assert_eq!(row, Port::default());
        let bad: BTreeMap<String, Datum> = [("tag".to_string(), Datum::from("x"))].into();
        let err = Port::from_columns(Uuid::NIL, &bad).unwrap_err();
        assert_eq!(err.column, "tag");
        assert!(
            err.to_string()
                .starts_with("table Port, column tag: expected an atom of type integer"),
            "{err}"
        );
    }
}

/// Typed rows written to and read back from a real ovsdb-server.
#[cfg(test)]
#[cfg(feature = "testkit")]
mod real_server {
    use super::*;
    use crate::nb::{LogicalSwitch, LogicalSwitchPort};
    use crate::ops::{OpResult, Operation, Transaction};
    use crate::testkit::OvsdbServer;

    const NB_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/ovn-nb.ovsschema");

    fn run(server: &OvsdbServer, txn: &Transaction) -> Vec<OpResult> {
        let reply = server
            .transact(&txn.params())
            .expect("ovsdb-client transact");
        txn.parse_reply(&reply).expect("transaction succeeds")
    }

    fn select_all<R: Row>(server: &OvsdbServer) -> Vec<R> {
        let txn = Transaction::new(crate::nb::SCHEMA_NAME).with(Operation::select(R::TABLE));
        let out = run(server, &txn);
        out[0]
            .rows()
            .expect("select rows")
            .iter()
            .map(|row| {
                let uuid = row
                    .get("_uuid")
                    .and_then(|d| d.as_atom())
                    .and_then(|a| a.as_uuid())
                    .expect("_uuid");
                R::from_columns(uuid, row).expect("typed row")
            })
            .collect()
    }

    #[test]
    fn typed_rows_round_trip_through_ovsdb_server() {
        let server = OvsdbServer::start(NB_COPY).expect("ovsdb-server starts");
        let port = LogicalSwitchPort {
            uuid: Uuid::new_v4(),
            name: "pod-a".into(),
            addresses: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
            port_security: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
            external_ids: [("pod".to_string(), "default/a".to_string())].into(),
            tag_request: Some(0),
            enabled: Some(true),
            ..Default::default()
        };
        let switch = LogicalSwitch {
            uuid: Uuid::new_v4(),
            name: "subnet-1".into(),
            ports: [port.uuid].into(),
            other_config: [("subnet".to_string(), "10.0.0.0/24".to_string())].into(),
            ..Default::default()
        };
        // The switch references the port by the UUID chosen here, inside one transaction.
        let txn = Transaction::new(crate::nb::SCHEMA_NAME)
            .with(port.insert_op())
            .with(switch.insert_op());
        let out = run(&server, &txn);
        assert_eq!(out[0].uuid(), Some(port.uuid));
        assert_eq!(out[1].uuid(), Some(switch.uuid));

        assert_eq!(select_all::<LogicalSwitchPort>(&server), vec![port.clone()]);
        assert_eq!(select_all::<LogicalSwitch>(&server), vec![switch.clone()]);

        let mut changed = port.clone();
        changed.tag_request = None;
        changed.external_ids.insert("node".into(), "n1".into());
        let txn = Transaction::new(crate::nb::SCHEMA_NAME)
            .with(changed.update_op(&["tag_request", "external_ids"]));
        assert_eq!(run(&server, &txn)[0].count(), Some(1));
        assert_eq!(select_all::<LogicalSwitchPort>(&server), vec![changed]);

        let txn = Transaction::new(crate::nb::SCHEMA_NAME).with(switch.delete_op());
        assert_eq!(run(&server, &txn)[0].count(), Some(1));
        // The port was only kept alive by the switch's reference (non-root table).
        assert!(select_all::<LogicalSwitchPort>(&server).is_empty());
    }

    /// The worked example of docs/ovsdb-codegen.md, through the client and a replica.
    #[tokio::test]
    async fn typed_rows_through_client_and_replica() {
        use crate::{Client, ClientOptions, MonitorSpec};
        let server = OvsdbServer::start(NB_COPY).expect("ovsdb-server starts");
        let client = Client::connect(
            &server.remote(),
            crate::nb::SCHEMA_NAME,
            ClientOptions {
                expected_schema_version: Some(crate::nb::SCHEMA_VERSION),
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        let port = LogicalSwitchPort {
            uuid: Uuid::new_v4(),
            name: "pod-a".into(),
            addresses: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
            external_ids: [("pod".to_string(), "default/a".to_string())].into(),
            ..Default::default()
        };
        let switch = LogicalSwitch {
            uuid: Uuid::new_v4(),
            name: "subnet-1".into(),
            ports: [port.uuid].into(),
            ..Default::default()
        };
        let results = client
            .transact(
                &Transaction::new(crate::nb::SCHEMA_NAME)
                    .with(port.insert_op())
                    .with(switch.insert_op()),
            )
            .await
            .expect("insert");
        assert_eq!(results[0].uuid(), Some(port.uuid));

        let mut changed = port.clone();
        changed.external_ids.insert("node".into(), "n1".into());
        client
            .transact(
                &Transaction::new(crate::nb::SCHEMA_NAME)
                    .with(changed.update_op(&["external_ids"])),
            )
            .await
            .expect("update");

        let replica = client
            .replica(MonitorSpec::new().table(LogicalSwitchPort::TABLE))
            .await
            .expect("replica");
        let ports: Vec<LogicalSwitchPort> = replica
            .read(|data| {
                data.rows(LogicalSwitchPort::TABLE)
                    .map(|(uuid, row)| LogicalSwitchPort::from_columns(*uuid, row))
                    .collect::<Result<_, _>>()
            })
            .expect("typed rows");
        assert_eq!(ports, vec![changed]);
        client.shutdown();
    }
}
