//! The `transact` method (RFC 7047 sections 4.1.3 and 5.2): operation builders that serialise
//! exactly as ovsdb-server expects, and typed parsing of the reply, with OVSDB error objects
//! turned into [`TransactError`]s that name the operation, table, column and reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use crate::datum::{Datum, DatumError, Uuid, describe};

/// A row's column values as sent in `insert`, `update` and `wait`, or read by `select`.
pub type ColumnValues = BTreeMap<String, Datum>;

/// Comparison functions of a `where` clause (RFC 7047 5.1 `<condition>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`: the column's set or map contains the value's elements.
    Includes,
    /// `excludes`: the column's set or map contains none of the value's elements.
    Excludes,
}

impl Function {
    /// The protocol spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One clause of a `where`: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The column (`_uuid` for the row id).
    pub column: String,
    /// The comparison.
    pub function: Function,
    /// The value compared with.
    pub value: Datum,
}

impl Condition {
    /// `[column, function, value]`.
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Datum>) -> Self {
        Condition {
            column: column.into(),
            function,
            value: value.into(),
        }
    }

    /// `column == value`.
    pub fn eq(column: impl Into<String>, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Eq, value)
    }

    /// `column != value`.
    pub fn ne(column: impl Into<String>, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Ne, value)
    }

    /// `column includes value`.
    pub fn includes(column: impl Into<String>, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Includes, value)
    }

    /// `column excludes value`.
    pub fn excludes(column: impl Into<String>, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Excludes, value)
    }

    /// `_uuid == uuid`: the one row with this id.
    pub fn uuid(uuid: Uuid) -> Self {
        Condition::eq("_uuid", uuid)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        Value::Array(vec![
            self.column.clone().into(),
            self.function.as_str().into(),
            self.value.to_json(),
        ])
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3))?;
        seq.serialize_element(&self.column)?;
        seq.serialize_element(self.function.as_str())?;
        seq.serialize_element(&self.value)?;
        seq.end()
    }
}

/// Mutators of a `mutate` operation (RFC 7047 5.1 `<mutation>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutator {
    /// `+=` (integers, reals; element-wise on sets)
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=` (integers)
    Mod,
    /// `insert`: add elements to a set, or pairs (for absent keys) to a map.
    Insert,
    /// `delete`: remove elements from a set; from a map, pairs (map value) or keys (set value).
    Delete,
}

impl Mutator {
    /// The protocol spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One mutation: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// The column.
    pub column: String,
    /// The mutator.
    pub mutator: Mutator,
    /// Its argument.
    pub value: Datum,
}

impl Mutation {
    /// `[column, mutator, value]`.
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Datum>) -> Self {
        Mutation {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3))?;
        seq.serialize_element(&self.column)?;
        seq.serialize_element(self.mutator.as_str())?;
        seq.serialize_element(&self.value)?;
        seq.end()
    }
}

/// The `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitUntil {
    /// Wait until the selected rows equal the given rows.
    Equal,
    /// Wait until they differ.
    NotEqual,
}

/// One operation of a transaction. Build with [`Operation::insert`], [`Operation::select`], ...
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `insert`.
    Insert {
        /// Table.
        table: String,
        /// Column values (others take their defaults).
        row: ColumnValues,
        /// `uuid-name`: lets later operations refer to the row as `["named-uuid", name]`.
        uuid_name: Option<String>,
        /// `uuid`: the row's UUID chosen by the client (OVS extension).
        uuid: Option<Uuid>,
    },
    /// `select`.
    Select {
        /// Table.
        table: String,
        /// Conditions, all of which must hold.
        conditions: Vec<Condition>,
        /// Columns to return (all when `None`).
        columns: Option<Vec<String>>,
    },
    /// `update`.
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// New values.
        row: ColumnValues,
    },
    /// `mutate`.
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Mutations.
        mutations: Vec<Mutation>,
    },
    /// `delete`.
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// `wait`.
    Wait {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// `==` or `!=`.
        until: WaitUntil,
        /// The expected rows (only `columns` of each).
        rows: Vec<ColumnValues>,
        /// Milliseconds before the server gives up with "timed out" (`None`: wait forever).
        timeout_ms: Option<u64>,
    },
    /// `commit`.
    Commit {
        /// Wait for the transaction to reach disk.
        durable: bool,
    },
    /// `abort`: always fails the transaction with "aborted".
    Abort,
    /// `comment`: text the server logs with the transaction.
    Comment(String),
    /// `assert`: fails with "not owner" unless this client holds the lock.
    Assert {
        /// The lock name.
        lock: String,
    },
}

impl Operation {
    /// `insert` into `table`; add values with [`Operation::with`].
    pub fn insert(table: impl Into<String>) -> Self {
        Operation::Insert {
            table: table.into(),
            row: ColumnValues::new(),
            uuid_name: None,
            uuid: None,
        }
    }

    /// `insert` of a whole column map.
    pub fn insert_row(table: impl Into<String>, row: ColumnValues) -> Self {
        Operation::Insert {
            table: table.into(),
            row,
            uuid_name: None,
            uuid: None,
        }
    }

    /// `select` from `table` (add conditions with [`Operation::filter`]).
    pub fn select(table: impl Into<String>) -> Self {
        Operation::Select {
            table: table.into(),
            conditions: Vec::new(),
            columns: None,
        }
    }

    /// `update` of `table` rows matching the conditions.
    pub fn update(table: impl Into<String>) -> Self {
        Operation::Update {
            table: table.into(),
            conditions: Vec::new(),
            row: ColumnValues::new(),
        }
    }

    /// `mutate` of `table` rows matching the conditions.
    pub fn mutate(table: impl Into<String>) -> Self {
        Operation::Mutate {
            table: table.into(),
            conditions: Vec::new(),
            mutations: Vec::new(),
        }
    }

    /// `delete` from `table` of rows matching the conditions. With no condition, every row.
    pub fn delete(table: impl Into<String>) -> Self {
        Operation::Delete {
            table: table.into(),
            conditions: Vec::new(),
        }
    }

    /// `wait` until the rows of `table` matching the conditions compare to `rows` as `until`.
    pub fn wait(
        table: impl Into<String>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<ColumnValues>,
    ) -> Self {
        Operation::Wait {
            table: table.into(),
            conditions: Vec::new(),
            columns,
            until,
            rows,
            timeout_ms: None,
        }
    }

    /// `commit`.
    pub fn commit(durable: bool) -> Self {
        Operation::Commit { durable }
    }

    /// `abort`.
    pub fn abort() -> Self {
        Operation::Abort
    }

    /// `comment`.
    pub fn comment(text: impl Into<String>) -> Self {
        Operation::Comment(text.into())
    }

    /// `assert` that this client owns `lock`.
    pub fn assert_lock(lock: impl Into<String>) -> Self {
        Operation::Assert { lock: lock.into() }
    }

    /// Sets a column value of an insert, update or wait (the last expected row). Ignored by
    /// other operations.
    pub fn with(mut self, column: impl Into<String>, value: impl Into<Datum>) -> Self {
        match &mut self {
            Operation::Insert { row, .. } | Operation::Update { row, .. } => {
                row.insert(column.into(), value.into());
            }
            Operation::Wait { rows, .. } => {
                if rows.is_empty() {
                    rows.push(ColumnValues::new());
                }
                if let Some(last) = rows.last_mut() {
                    last.insert(column.into(), value.into());
                }
            }
            _ => {}
        }
        self
    }

    /// Names the inserted row so later operations can reference it as
    /// `["named-uuid", name]` (see [`crate::Atom::NamedUuid`]). Ignored by other operations.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        if let Operation::Insert { uuid_name, .. } = &mut self {
            *uuid_name = Some(name.into());
        }
        self
    }

    /// Chooses the inserted row's UUID. Ignored by other operations.
    pub fn with_uuid(mut self, id: Uuid) -> Self {
        if let Operation::Insert { uuid, .. } = &mut self {
            *uuid = Some(id);
        }
        self
    }

    /// Adds a condition (select, update, mutate, delete, wait). Ignored by other operations.
    pub fn filter(mut self, condition: Condition) -> Self {
        if let Some(conditions) = self.conditions_mut() {
            conditions.push(condition);
        }
        self
    }

    /// Adds `column == value` (see [`Operation::filter`]).
    pub fn where_eq(self, column: impl Into<String>, value: impl Into<Datum>) -> Self {
        self.filter(Condition::eq(column, value))
    }

    /// Restricts a select to these columns. Ignored by other operations.
    pub fn columns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        if let Operation::Select { columns, .. } = &mut self {
            *columns = Some(names.into_iter().map(Into::into).collect());
        }
        self
    }

    /// Adds a mutation. Ignored by other operations.
    pub fn mutation(
        mut self,
        column: impl Into<String>,
        mutator: Mutator,
        value: impl Into<Datum>,
    ) -> Self {
        if let Operation::Mutate { mutations, .. } = &mut self {
            mutations.push(Mutation::new(column, mutator, value));
        }
        self
    }

    /// Sets a wait's timeout in milliseconds. Ignored by other operations.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        if let Operation::Wait { timeout_ms, .. } = &mut self {
            *timeout_ms = Some(ms);
        }
        self
    }

    fn conditions_mut(&mut self) -> Option<&mut Vec<Condition>> {
        match self {
            Operation::Select { conditions, .. }
            | Operation::Update { conditions, .. }
            | Operation::Mutate { conditions, .. }
            | Operation::Delete { conditions, .. }
            | Operation::Wait { conditions, .. } => Some(conditions),
            _ => None,
        }
    }

    /// The protocol name: `insert`, `select`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    /// The table the operation works on, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            _ => None,
        }
    }

    /// The columns this operation names (values, conditions, mutations), for error reports.
    fn mentioned_columns(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        match self {
            Operation::Insert { row, .. } => names.extend(row.keys().map(String::as_str)),
            Operation::Update {
                row, conditions, ..
            } => {
                names.extend(row.keys().map(String::as_str));
                names.extend(conditions.iter().map(|c| c.column.as_str()));
            }
            Operation::Mutate {
                mutations,
                conditions,
                ..
            } => {
                names.extend(mutations.iter().map(|m| m.column.as_str()));
                names.extend(conditions.iter().map(|c| c.column.as_str()));
            }
            Operation::Select {
                conditions,
                columns,
                ..
            } => {
                names.extend(conditions.iter().map(|c| c.column.as_str()));
                names.extend(columns.iter().flatten().map(String::as_str));
            }
            Operation::Delete { conditions, .. } => {
                names.extend(conditions.iter().map(|c| c.column.as_str()))
            }
            Operation::Wait {
                conditions,
                columns,
                ..
            } => {
                names.extend(conditions.iter().map(|c| c.column.as_str()));
                names.extend(columns.iter().map(String::as_str));
            }
            _ => {}
        }
        names
    }

    /// The JSON object of this operation.
    pub fn to_json(&self) -> Value {
        // Serialising our own types into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

struct Row<'a>(&'a ColumnValues);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("op", self.name())?;
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
                uuid,
            } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("row", &Row(row))?;
                if let Some(name) = uuid_name {
                    map.serialize_entry("uuid-name", name)?;
                }
                if let Some(uuid) = uuid {
                    map.serialize_entry("uuid", uuid)?;
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                if let Some(columns) = columns {
                    map.serialize_entry("columns", columns)?;
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("row", &Row(row))?;
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, conditions } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("columns", columns)?;
                map.serialize_entry(
                    "until",
                    match until {
                        WaitUntil::Equal => "==",
                        WaitUntil::NotEqual => "!=",
                    },
                )?;
                let rows: Vec<Row<'_>> = rows.iter().map(Row).collect();
                map.serialize_entry("rows", &rows)?;
                if let Some(ms) = timeout_ms {
                    map.serialize_entry("timeout", ms)?;
                }
            }
            Operation::Commit { durable } => map.serialize_entry("durable", durable)?,
            Operation::Abort => {}
            Operation::Comment(text) => map.serialize_entry("comment", text)?,
            Operation::Assert { lock } => map.serialize_entry("lock", lock)?,
        }
        map.end()
    }
}

/// A transaction: the `params` of a `transact` request, `[db, op, op, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// The database name.
    pub database: String,
    /// The operations, in order.
    pub operations: Vec<Operation>,
}

impl Transaction {
    /// An empty transaction on `database`.
    pub fn new(database: impl Into<String>) -> Self {
        Transaction {
            database: database.into(),
            operations: Vec::new(),
        }
    }

    /// Appends an operation and returns its index (the index of its result in the reply).
    pub fn push(&mut self, op: Operation) -> usize {
        self.operations.push(op);
        self.operations.len() - 1
    }

    /// Appends an operation (builder style).
    pub fn with(mut self, op: Operation) -> Self {
        self.operations.push(op);
        self
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The `transact` params as JSON.
    pub fn params(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Interprets the `result` of the `transact` reply to this transaction.
    pub fn parse_reply(&self, result: &Value) -> Result<Vec<OpResult>, TransactError> {
        parse_transact_result(&self.operations, result)
    }
}

impl Serialize for Transaction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.operations.len() + 1))?;
        seq.serialize_element(&self.database)?;
        for op in &self.operations {
            seq.serialize_element(op)?;
        }
        seq.end()
    }
}

/// The successful result of one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// `insert`: the new row's UUID.
    Inserted(Uuid),
    /// `select`: the rows (columns decoded without schema; see [`Datum::from_json`]).
    Rows(Vec<ColumnValues>),
    /// `update`, `mutate`, `delete`: how many rows matched.
    Count(u64),
    /// `wait`, `commit`, `comment`, `assert`: nothing to report.
    Empty,
}

impl OpResult {
    /// The inserted UUID, for an insert result.
    pub fn uuid(&self) -> Option<Uuid> {
        match self {
            OpResult::Inserted(u) => Some(*u),
            _ => None,
        }
    }

    /// The row count, for update / mutate / delete.
    pub fn count(&self) -> Option<u64> {
        match self {
            OpResult::Count(n) => Some(*n),
            _ => None,
        }
    }

    /// The rows, for select.
    pub fn rows(&self) -> Option<&[ColumnValues]> {
        match self {
            OpResult::Rows(rows) => Some(rows),
            _ => None,
        }
    }
}

/// The `error` strings of RFC 7047 and ovsdb-server, as a type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OvsdbErrorKind {
    /// "constraint violation": a value outside its type, a duplicate index value, a
    /// `maxRows` overflow, or a missing reference target at commit.
    ConstraintViolation,
    /// "referential integrity violation": a deleted row is still referenced (or a reference
    /// to a row that does not exist).
    ReferentialIntegrityViolation,
    /// "resources exhausted".
    ResourcesExhausted,
    /// "timed out": a `wait` did not see its condition in time.
    TimedOut,
    /// "not owner": `assert` on a lock this client does not hold.
    NotOwner,
    /// "aborted": the transaction contained `abort`.
    Aborted,
    /// "domain error": arithmetic of a mutation out of range / division by zero.
    DomainError,
    /// "range error": a mutation produced a value outside the column's range.
    RangeError,
    /// "not supported".
    NotSupported,
    /// "duplicate uuid-name".
    DuplicateUuidName,
    /// "unknown database".
    UnknownDatabase,
    /// "syntax error" or "unknown table"/"unknown column" (the request was malformed).
    SyntaxError,
    /// "I/O error": the server failed to commit to disk.
    IoError,
    /// "permission error" (RBAC).
    PermissionError,
    /// Any other error string.
    Other(String),
}

impl OvsdbErrorKind {
    /// The kind for an `error` string.
    pub fn parse(error: &str) -> Self {
        match error {
            "constraint violation" => OvsdbErrorKind::ConstraintViolation,
            "referential integrity violation" => OvsdbErrorKind::ReferentialIntegrityViolation,
            "resources exhausted" => OvsdbErrorKind::ResourcesExhausted,
            "timed out" => OvsdbErrorKind::TimedOut,
            "not owner" => OvsdbErrorKind::NotOwner,
            "aborted" => OvsdbErrorKind::Aborted,
            "domain error" => OvsdbErrorKind::DomainError,
            "range error" => OvsdbErrorKind::RangeError,
            "not supported" => OvsdbErrorKind::NotSupported,
            "duplicate uuid-name" => OvsdbErrorKind::DuplicateUuidName,
            "unknown database" => OvsdbErrorKind::UnknownDatabase,
            "syntax error" | "unknown table" | "unknown column" => OvsdbErrorKind::SyntaxError,
            "I/O error" => OvsdbErrorKind::IoError,
            "permission error" => OvsdbErrorKind::PermissionError,
            other => OvsdbErrorKind::Other(other.to_owned()),
        }
    }
}

/// An OVSDB error object `{"error": ..., "details": ...}` with what could be learnt from it.
#[derive(Debug, Clone, PartialEq)]
pub struct OvsdbError {
    /// The classified `error` string.
    pub kind: OvsdbErrorKind,
    /// The `error` string as sent.
    pub error: String,
    /// The `details` string, when present.
    pub details: Option<String>,
    /// The table concerned: named by the details, else the failing operation's.
    pub table: Option<String>,
    /// The column concerned, when the details name one.
    pub column: Option<String>,
    /// The whole error object.
    pub raw: Value,
}

impl fmt::Display for OvsdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        match (&self.table, &self.column) {
            (Some(t), Some(c)) => write!(f, " (table {t}, column {c})")?,
            (Some(t), None) => write!(f, " (table {t})")?,
            (None, Some(c)) => write!(f, " (column {c})")?,
            (None, None) => {}
        }
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

impl OvsdbError {
    /// Reads an error object; `op` is the operation it answers (for table/column context).
    pub fn from_json(raw: &Value, op: Option<&Operation>) -> Option<Self> {
        let obj = raw.as_object()?;
        let error = obj.get("error")?.as_str()?.to_owned();
        let details = obj
            .get("details")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let text = details.as_deref().unwrap_or("");
        let table =
            table_in_details(text).or_else(|| op.and_then(|o| o.table().map(str::to_owned)));
        let column = column_in_details(text).or_else(|| {
            // The details often quote a value, not the column: if exactly one of the columns
            // the operation touched is named in the text, that is the column at fault.
            let op = op?;
            if let Some(column) = column_by_quoted_value(text, op) {
                return Some(column);
            }
            let mentioned = op.mentioned_columns();
            let mut hits = mentioned
                .iter()
                .filter(|c| !c.starts_with('_') && mentions_word(text, c));
            let first = hits.next()?;
            hits.next().is_none().then(|| (*first).to_owned())
        });
        Some(OvsdbError {
            kind: OvsdbErrorKind::parse(&error),
            error,
            details,
            table,
            column,
            raw: raw.clone(),
        })
    }
}

/// Constraint violations often start by quoting the offending value (`5000 is not in the
/// valid range`): the column is the one the operation set to that value, if only one was.
fn column_by_quoted_value(text: &str, op: &Operation) -> Option<String> {
    let (Operation::Insert { row, .. } | Operation::Update { row, .. }) = op else {
        return None;
    };
    let leading = text.split_whitespace().next()?;
    let mut hits = row.iter().filter(|(_, datum)| {
        let atoms: Vec<&crate::datum::Atom> = match datum {
            Datum::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
            other => other.as_atoms().unwrap_or_default().iter().collect(),
        };
        atoms.iter().any(|a| {
            serde_json::to_string(a).is_ok_and(|json| json == leading)
                || a.as_str().is_some_and(|s| s == leading)
        })
    });
    let (first, _) = hits.next()?;
    hits.next().is_none().then(|| first.clone())
}

fn strip_token(token: &str) -> &str {
    token.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
}

/// The word after "column" (as in `column "name"` / `column name`), or before "column".
fn column_in_details(text: &str) -> Option<String> {
    word_after(text, "column").or_else(|| word_after(text, "No column"))
}

/// `table "T"`, `in table T`, `"T" table`.
fn table_in_details(text: &str) -> Option<String> {
    if let Some(t) = word_after(text, "table") {
        return Some(t);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| strip_token(w[1]) == "table" && w[0].starts_with('"'))
        .map(|w| strip_token(w[0]).to_owned())
        .filter(|t| !t.is_empty())
}

fn word_after(text: &str, marker: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let marker_words: Vec<&str> = marker.split_whitespace().collect();
    let n = marker_words.len();
    words
        .windows(n + 1)
        .find(|w| {
            w[..n]
                .iter()
                .zip(&marker_words)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
        })
        .map(|w| strip_token(w[n]).to_owned())
        .filter(|t| {
            !t.is_empty()
                && !matches!(
                    t.as_str(),
                    "in" | "of" | "to" | "with" | "for" | "the" | "a" | "an" | "is" | "that"
                )
        })
}

fn mentions_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .any(|w| w == word)
}

/// A transaction that did not go through, or a reply that could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransactError {
    /// Operation `index` failed; the whole transaction was rolled back.
    #[error("transaction operation {index} ({op}) failed: {error}")]
    Operation {
        /// Index of the failing operation in the transaction.
        index: usize,
        /// Its name (`insert`, `update`, ...).
        op: &'static str,
        /// What the server said.
        error: Box<OvsdbError>,
    },
    /// Every operation succeeded but the commit failed (e.g. a referential integrity or
    /// index uniqueness check): the extra error element after the operation results.
    #[error("transaction failed at commit: {error}")]
    Commit {
        /// What the server said.
        error: Box<OvsdbError>,
    },
    /// The reply was not shaped like a transact result.
    #[error("malformed transact reply: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

impl TransactError {
    /// The server's error, when there is one.
    pub fn ovsdb_error(&self) -> Option<&OvsdbError> {
        match self {
            TransactError::Operation { error, .. } | TransactError::Commit { error } => Some(error),
            TransactError::Malformed { .. } => None,
        }
    }

    /// The error kind, when the server sent one.
    pub fn kind(&self) -> Option<&OvsdbErrorKind> {
        self.ovsdb_error().map(|e| &e.kind)
    }
}

impl From<DatumError> for TransactError {
    fn from(e: DatumError) -> Self {
        TransactError::Malformed {
            reason: e.to_string(),
        }
    }
}

/// Interprets a `transact` `result` for `ops`: one result per operation, or the first error.
pub fn parse_transact_result(
    ops: &[Operation],
    result: &Value,
) -> Result<Vec<OpResult>, TransactError> {
    let malformed = |reason: String| TransactError::Malformed { reason };
    let items = result
        .as_array()
        .ok_or_else(|| malformed(format!("expected an array, found {}", describe(result))))?;
    // Errors first: an operation's error explains everything after it, and the extra element
    // after the last operation carries commit-time failures.
    for (index, item) in items.iter().enumerate() {
        if item.get("error").is_some() {
            let op = ops.get(index);
            let error = OvsdbError::from_json(item, op)
                .map(Box::new)
                .ok_or_else(|| {
                    malformed(format!("bad error object at {index}: {}", describe(item)))
                })?;
            return Err(match op {
                Some(op) => TransactError::Operation {
                    index,
                    op: op.name(),
                    error,
                },
                None => TransactError::Commit { error },
            });
        }
    }
    if items.len() < ops.len() {
        return Err(malformed(format!(
            "{} results for {} operations",
            items.len(),
            ops.len()
        )));
    }
    ops.iter()
        .zip(items)
        .enumerate()
        .map(|(index, (op, item))| {
            parse_op_result(op, item)
                .map_err(|reason| malformed(format!("result {index} ({}): {reason}", op.name())))
        })
        .collect()
}

fn parse_op_result(op: &Operation, item: &Value) -> Result<OpResult, String> {
    let obj = item
        .as_object()
        .ok_or_else(|| format!("expected an object, found {}", describe(item)))?;
    match op {
        Operation::Insert { .. } => {
            let uuid = obj.get("uuid").ok_or("missing \"uuid\"")?;
            match crate::datum::Atom::from_json(uuid).map_err(|e| e.to_string())? {
                crate::datum::Atom::Uuid(u) => Ok(OpResult::Inserted(u)),
                other => Err(format!("expected a uuid, found {other}")),
            }
        }
        Operation::Select { .. } => {
            let rows = obj
                .get("rows")
                .and_then(Value::as_array)
                .ok_or("missing \"rows\" array")?;
            rows.iter()
                .map(|row| {
                    let cols = row
                        .as_object()
                        .ok_or_else(|| format!("row is not an object: {}", describe(row)))?;
                    cols.iter()
                        .map(|(name, v)| {
                            Datum::from_json(v)
                                .map(|d| (name.clone(), d))
                                .map_err(|e| format!("column {name}: {e}"))
                        })
                        .collect::<Result<ColumnValues, String>>()
                })
                .collect::<Result<Vec<_>, String>>()
                .map(OpResult::Rows)
        }
        Operation::Update { .. } | Operation::Mutate { .. } | Operation::Delete { .. } => obj
            .get("count")
            .and_then(Value::as_u64)
            .map(OpResult::Count)
            .ok_or_else(|| "missing \"count\"".to_owned()),
        _ => Ok(OpResult::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Atom;
    use serde_json::json;

    const U1: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn operations_serialise_exactly() {
        let u: Uuid = U1.parse().unwrap();
        let cases = vec![
            (
                Operation::insert("Logical_Switch")
                    .with("name", "sw0")
                    .named("sw0row"),
                json!({"op": "insert", "table": "Logical_Switch", "row": {"name": "sw0"}, "uuid-name": "sw0row"}),
            ),
            (
                Operation::insert("T").with_uuid(u),
                json!({"op": "insert", "table": "T", "row": {}, "uuid": U1}),
            ),
            (
                Operation::select("T")
                    .where_eq("name", "a")
                    .columns(["name", "_uuid"]),
                json!({"op": "select", "table": "T", "where": [["name", "==", "a"]], "columns": ["name", "_uuid"]}),
            ),
            (
                Operation::update("T")
                    .filter(Condition::uuid(u))
                    .with("tag", Some(5i64)),
                json!({"op": "update", "table": "T", "where": [["_uuid", "==", ["uuid", U1]]], "row": {"tag": 5}}),
            ),
            (
                Operation::mutate("Logical_Switch")
                    .where_eq("name", "sw0")
                    .mutation(
                        "ports",
                        Mutator::Insert,
                        Datum::set([Atom::NamedUuid("p".into())]),
                    )
                    .mutation("n", Mutator::Add, 1i64)
                    .mutation("n", Mutator::Sub, 1i64)
                    .mutation("n", Mutator::Mul, 2i64)
                    .mutation("n", Mutator::Div, 2i64)
                    .mutation("n", Mutator::Mod, 7i64)
                    .mutation("ids", Mutator::Delete, Datum::set(["k"])),
                json!({"op": "mutate", "table": "Logical_Switch", "where": [["name", "==", "sw0"]], "mutations": [
                    ["ports", "insert", ["named-uuid", "p"]],
                    ["n", "+=", 1], ["n", "-=", 1], ["n", "*=", 2], ["n", "/=", 2], ["n", "%=", 7],
                    ["ids", "delete", "k"]]}),
            ),
            (
                Operation::delete("T").filter(Condition::new("n", Function::Ge, 3i64)),
                json!({"op": "delete", "table": "T", "where": [["n", ">=", 3]]}),
            ),
            (
                Operation::wait("T", vec!["name".into()], WaitUntil::NotEqual, vec![])
                    .where_eq("name", "a")
                    .with("name", "a")
                    .timeout_ms(0),
                json!({"op": "wait", "table": "T", "where": [["name", "==", "a"]], "columns": ["name"], "until": "!=", "rows": [{"name": "a"}], "timeout": 0}),
            ),
            (
                Operation::commit(true),
                json!({"op": "commit", "durable": true}),
            ),
            (Operation::abort(), json!({"op": "abort"})),
            (
                Operation::comment("hi"),
                json!({"op": "comment", "comment": "hi"}),
            ),
            (
                Operation::assert_lock("l"),
                json!({"op": "assert", "lock": "l"}),
            ),
        ];
        for (op, expected) in cases {
            assert_eq!(op.to_json(), expected, "{}", op.name());
        }
        for (f, s) in [
            (Function::Lt, "<"),
            (Function::Le, "<="),
            (Function::Ne, "!="),
            (Function::Gt, ">"),
            (Function::Includes, "includes"),
            (Function::Excludes, "excludes"),
        ] {
            assert_eq!(Condition::new("c", f, 1i64).to_json(), json!(["c", s, 1]));
        }
        let txn = Transaction::new("OVN_Northbound").with(Operation::abort());
        assert_eq!(txn.params(), json!(["OVN_Northbound", {"op": "abort"}]));
    }

    #[test]
    fn parses_successful_results() {
        let ops = vec![
            Operation::insert("T"),
            Operation::select("T"),
            Operation::update("T"),
            Operation::comment("x"),
        ];
        let result = json!([
            {"uuid": ["uuid", U1]},
            {"rows": [{"name": "a", "tags": ["set", [1, 2]], "_uuid": ["uuid", U1]}]},
            {"count": 3},
            {}
        ]);
        let out = parse_transact_result(&ops, &result).unwrap();
        assert_eq!(out[0].uuid(), Some(U1.parse().unwrap()));
        let rows = out[1].rows().unwrap();
        assert_eq!(rows[0]["tags"], Datum::set([1i64, 2]));
        assert_eq!(out[2].count(), Some(3));
        assert_eq!(out[3], OpResult::Empty);
        let err = parse_transact_result(&ops, &json!([{"uuid": ["uuid", U1]}])).unwrap_err();
        assert!(matches!(err, TransactError::Malformed { .. }), "{err}");
        let err = parse_transact_result(&ops[..1], &json!([{"uuid": "x"}])).unwrap_err();
        assert!(err.to_string().contains("result 0 (insert)"), "{err}");
    }

    #[test]
    fn errors_name_op_table_and_column() {
        let ops = vec![
            Operation::insert("Logical_Switch_Port")
                .with("name", "p")
                .with("type", "bogus"),
        ];
        let result = json!([
            {"error": "constraint violation", "details": "\"bogus\" is not one of the allowed values (\"\", \"router\") for column type"},
            null
        ]);
        let err = parse_transact_result(&ops, &result).unwrap_err();
        let TransactError::Operation { index, op, error } = &err else {
            panic!("{err}")
        };
        assert_eq!((*index, *op), (0, "insert"));
        assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation);
        assert_eq!(error.table.as_deref(), Some("Logical_Switch_Port"));
        assert_eq!(error.column.as_deref(), Some("type"));
        assert!(err.to_string().contains("operation 0 (insert)"), "{err}");

        // Commit-time failure: the extra element after the per-op results.
        let ops = vec![Operation::delete("Logical_Switch_Port")];
        let result = json!([
            {"count": 1},
            {"error": "referential integrity violation",
             "details": "cannot delete Logical_Switch_Port row 1 because of 1 remaining reference(s)"}
        ]);
        let err = parse_transact_result(&ops, &result).unwrap_err();
        assert!(matches!(&err, TransactError::Commit { .. }), "{err}");
        assert_eq!(
            err.kind(),
            Some(&OvsdbErrorKind::ReferentialIntegrityViolation)
        );
        for (text, kind) in [
            ("resources exhausted", OvsdbErrorKind::ResourcesExhausted),
            ("timed out", OvsdbErrorKind::TimedOut),
            ("not owner", OvsdbErrorKind::NotOwner),
            ("aborted", OvsdbErrorKind::Aborted),
            ("weird", OvsdbErrorKind::Other("weird".into())),
        ] {
            assert_eq!(OvsdbErrorKind::parse(text), kind);
        }
    }

    fn json_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z \"_.]{0,12}".prop_map(Value::String),
            Just(json!("error")),
            Just(json!("uuid")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("error".to_string()),
                        Just("details".to_string()),
                        Just("uuid".to_string()),
                        Just("rows".to_string()),
                        Just("count".to_string()),
                        "[a-z]{1,4}".prop_map(|s| s),
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_replies_never_panic(reply in json_strategy()) {
            let ops = vec![
                Operation::insert("T").with("a", 1i64),
                Operation::select("T"),
                Operation::update("T").with("b", "x"),
                Operation::comment("c"),
            ];
            let _ = parse_transact_result(&ops, &reply);
            let _ = OvsdbError::from_json(&reply, ops.first());
        }

        #[test]
        fn arbitrary_details_never_panic(details in "\\PC{0,60}") {
            let op = Operation::update("T").with("col", "value").where_eq("other", 1i64);
            let raw = json!({"error": "constraint violation", "details": details});
            let error = OvsdbError::from_json(&raw, Some(&op));
            proptest::prop_assert!(error.is_some());
        }
    }

    #[test]
    fn details_parsing_finds_table_and_column() {
        assert_eq!(
            table_in_details(
                "Transaction causes multiple rows in \"Logical_Switch\" table to have identical values"
            ),
            Some("Logical_Switch".into())
        );
        assert_eq!(
            column_in_details("for index on column \"name\".  First row"),
            Some("name".into())
        );
        assert_eq!(
            column_in_details("No column foo in table Bar."),
            Some("foo".into())
        );
        assert_eq!(
            table_in_details("No column foo in table Bar."),
            Some("Bar".into())
        );
        assert_eq!(column_in_details("nothing here"), None);
    }
}
