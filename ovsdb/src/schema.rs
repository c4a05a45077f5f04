//! OVSDB database schemas (RFC 7047 section 3.2, plus the OVS extensions `version`, `cksum`,
//! `indexes`, `isRoot`): parsing `.ovsschema` files and `get_schema` replies, column types that
//! decode and validate datums, and schema versions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::datum::{Atom, AtomSet, AtomType, Datum, DatumError, DatumKind, describe};

/// Why a schema could not be read. Every variant names where in the schema the problem is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The text is not JSON.
    #[error("schema is not valid JSON: {0}")]
    Json(String),
    /// A problem at database level (name, version, tables member).
    #[error("database schema: {reason}")]
    Database {
        /// What is wrong.
        reason: String,
    },
    /// A problem with a table's own members.
    #[error("table {table}: {reason}")]
    Table {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A problem with one column.
    #[error("table {table}, column {column}: {reason}")]
    Column {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A version string that is not `major.minor.patch`.
    #[error("invalid schema version {text:?}: expected <major>.<minor>.<patch>")]
    Version {
        /// The text.
        text: String,
    },
}

/// A schema version `major.minor.patch`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SchemaVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions (new tables, columns).
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

impl SchemaVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SchemaVersion {
            major,
            minor,
            patch,
        }
    }

    /// Whether a server running this version can serve a client built against `built_for`:
    /// same major version, and at least as new (so every column the client knows exists).
    pub fn can_serve(self, built_for: SchemaVersion) -> bool {
        self.major == built_for.major && self >= built_for
    }
}

impl FromStr for SchemaVersion {
    type Err = SchemaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || SchemaError::Version {
            text: text.to_owned(),
        };
        let mut parts = text.split('.');
        let mut next = || -> Result<u32, SchemaError> {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let version = SchemaVersion::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(version)
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Strong references keep the referenced row alive; weak ones are dropped when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefType {
    /// `"strong"` (the default).
    #[default]
    Strong,
    /// `"weak"`.
    Weak,
}

/// The type of a column's keys or values, with its constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    /// The atomic type.
    pub atom_type: AtomType,
    /// The allowed values, when restricted.
    pub enum_values: Option<AtomSet>,
    /// `minInteger`.
    pub min_integer: Option<i64>,
    /// `maxInteger`.
    pub max_integer: Option<i64>,
    /// `minReal`.
    pub min_real: Option<f64>,
    /// `maxReal`.
    pub max_real: Option<f64>,
    /// `minLength` of strings.
    pub min_length: Option<u64>,
    /// `maxLength` of strings.
    pub max_length: Option<u64>,
    /// `refTable`: the table a UUID refers to.
    pub ref_table: Option<String>,
    /// `refType` (meaningful only with `ref_table`).
    pub ref_type: RefType,
}

impl BaseType {
    /// An unconstrained base type.
    pub fn plain(atom_type: AtomType) -> Self {
        BaseType {
            atom_type,
            enum_values: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    fn parse(json: &Value) -> Result<Self, String> {
        let obj = match json {
            Value::String(name) => {
                return AtomType::parse(name)
                    .map(BaseType::plain)
                    .ok_or_else(|| format!("unknown atomic type {name:?}"));
            }
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "expected an atomic type name or a base type object, found {}",
                    describe(other)
                ));
            }
        };
        let type_name = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or("base type object needs a \"type\" string")?;
        let atom_type = AtomType::parse(type_name)
            .ok_or_else(|| format!("unknown atomic type {type_name:?}"))?;
        let mut base = BaseType::plain(atom_type);
        for (member, value) in obj {
            match member.as_str() {
                "type" => {}
                "enum" => {
                    let datum = Datum::from_json_typed(value, DatumKind::Set, atom_type, None)
                        .map_err(|e| format!("enum: {e}"))?;
                    base.enum_values = match datum {
                        Datum::Set(set) => Some(set),
                        Datum::Scalar(atom) => Some(std::iter::once(atom).collect()),
                        Datum::Map(_) => return Err("enum must be a set".into()),
                    };
                }
                "minInteger" => base.min_integer = Some(int_member(member, value)?),
                "maxInteger" => base.max_integer = Some(int_member(member, value)?),
                "minReal" => base.min_real = Some(real_member(member, value)?),
                "maxReal" => base.max_real = Some(real_member(member, value)?),
                "minLength" => base.min_length = Some(count_member(member, value)?),
                "maxLength" => base.max_length = Some(count_member(member, value)?),
                "refTable" => {
                    base.ref_table = Some(
                        value
                            .as_str()
                            .ok_or_else(|| {
                                format!("refTable must be a string, found {}", describe(value))
                            })?
                            .to_owned(),
                    )
                }
                "refType" => {
                    base.ref_type = match value.as_str() {
                        Some("strong") => RefType::Strong,
                        Some("weak") => RefType::Weak,
                        _ => {
                            return Err(format!(
                                "refType must be \"strong\" or \"weak\", found {}",
                                describe(value)
                            ));
                        }
                    }
                }
                other => return Err(format!("unknown base type member {other:?}")),
            }
        }
        if base.ref_table.is_some() && atom_type != AtomType::Uuid {
            return Err(format!("refTable is only allowed on uuid, not {atom_type}"));
        }
        Ok(base)
    }

    /// Checks an atom against this type's constraints (not referential integrity).
    pub fn check(&self, atom: &Atom) -> Result<(), String> {
        if atom.atom_type() != self.atom_type {
            return Err(format!(
                "expected {} value, found {} {atom}",
                self.atom_type,
                atom.atom_type()
            ));
        }
        if let Some(allowed) = &self.enum_values
            && !allowed.contains(atom)
        {
            let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            return Err(format!("{atom} is not one of {}", names.join(", ")));
        }
        let out_of_range = match atom {
            Atom::Integer(i) => {
                self.min_integer.is_some_and(|m| *i < m) || self.max_integer.is_some_and(|m| *i > m)
            }
            Atom::Real(r) => {
                self.min_real.is_some_and(|m| *r < m) || self.max_real.is_some_and(|m| *r > m)
            }
            _ => false,
        };
        if out_of_range {
            return Err(format!("{atom} is outside the allowed range"));
        }
        if let Atom::String(s) = atom {
            let len = s.chars().count() as u64;
            if self.min_length.is_some_and(|m| len < m) || self.max_length.is_some_and(|m| len > m)
            {
                return Err(format!(
                    "string of length {len} is outside the allowed lengths"
                ));
            }
        }
        Ok(())
    }
}

fn int_member(member: &str, value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("{member} must be an integer, found {}", describe(value)))
}

fn real_member(member: &str, value: &Value) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("{member} must be a number, found {}", describe(value)))
}

fn count_member(member: &str, value: &Value) -> Result<u64, String> {
    value.as_u64().ok_or_else(|| {
        format!(
            "{member} must be a non-negative integer, found {}",
            describe(value)
        )
    })
}

/// A column's type: key type, optional value type (a map), and how many elements.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    /// Type of the atoms (or of the map keys).
    pub key: BaseType,
    /// Type of the map values, for a map.
    pub value: Option<BaseType>,
    /// Fewest elements (0 or 1).
    pub min: u64,
    /// Most elements; `None` for `"unlimited"`.
    pub max: Option<u64>,
}

impl ColumnType {
    /// A column of exactly one atom of this type.
    pub fn scalar(atom_type: AtomType) -> Self {
        ColumnType {
            key: BaseType::plain(atom_type),
            value: None,
            min: 1,
            max: Some(1),
        }
    }

    fn parse(json: &Value) -> Result<Self, String> {
        let obj = match json {
            Value::String(_) => {
                return BaseType::parse(json).map(|key| ColumnType {
                    key,
                    value: None,
                    min: 1,
                    max: Some(1),
                });
            }
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "type must be an atomic type name or an object, found {}",
                    describe(other)
                ));
            }
        };
        let key = BaseType::parse(obj.get("key").ok_or("type object needs a \"key\"")?)
            .map_err(|e| format!("key: {e}"))?;
        let value = obj
            .get("value")
            .map(BaseType::parse)
            .transpose()
            .map_err(|e| format!("value: {e}"))?;
        let min = match obj.get("min") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(n @ (0 | 1)) => n,
                _ => return Err(format!("min must be 0 or 1, found {}", describe(v))),
            },
        };
        let max = match obj.get("max") {
            None => Some(1),
            Some(Value::String(s)) if s == "unlimited" => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Some(n),
                _ => {
                    return Err(format!(
                        "max must be a positive integer or \"unlimited\", found {}",
                        describe(v)
                    ));
                }
            },
        };
        if max.is_some_and(|m| m < min) {
            return Err("max is smaller than min".into());
        }
        if let Some(unknown) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "key" | "value" | "min" | "max"))
        {
            return Err(format!("unknown type member {unknown:?}"));
        }
        Ok(ColumnType {
            key,
            value,
            min,
            max,
        })
    }

    /// Scalar, set (including optional) or map.
    pub fn kind(&self) -> DatumKind {
        if self.value.is_some() {
            DatumKind::Map
        } else if self.min == 1 && self.max == Some(1) {
            DatumKind::Scalar
        } else {
            DatumKind::Set
        }
    }

    /// Whether the column holds zero or one atom (an optional value).
    pub fn is_optional(&self) -> bool {
        self.value.is_none() && self.min == 0 && self.max == Some(1)
    }

    /// The value of a column that was never written: the key type's default for a scalar,
    /// otherwise the empty set or map.
    pub fn default_datum(&self) -> Datum {
        match self.kind() {
            DatumKind::Scalar => Datum::Scalar(self.key.atom_type.default_atom()),
            DatumKind::Set => Datum::empty_set(),
            DatumKind::Map => Datum::empty_map(),
        }
    }

    /// Decodes a column value sent by the server, checking atom types and the element count.
    pub fn decode(&self, json: &Value) -> Result<Datum, DatumError> {
        let datum = Datum::from_json_typed(
            json,
            self.kind(),
            self.key.atom_type,
            self.value.as_ref().map(|v| v.atom_type),
        )?;
        self.check_count(&datum)?;
        Ok(datum)
    }

    /// Decodes an `update2` "modify" diff for this column: like [`decode`](Self::decode) but
    /// without the count check (a diff of an optional column may hold two elements).
    pub fn decode_diff(&self, json: &Value) -> Result<Datum, DatumError> {
        Datum::from_json_typed(
            json,
            self.kind(),
            self.key.atom_type,
            self.value.as_ref().map(|v| v.atom_type),
        )
    }

    /// Checks the element count against `min` and `max`.
    pub fn check_count(&self, datum: &Datum) -> Result<(), DatumError> {
        let n = datum.len();
        if (n as u64) < self.min || self.max.is_some_and(|m| n as u64 > m) {
            return Err(DatumError::Cardinality {
                min: self.min,
                max: self.max.unwrap_or(u64::MAX),
                found: n,
            });
        }
        Ok(())
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    /// The column name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Not persisted by the server.
    pub ephemeral: bool,
    /// Can be changed after insert (default true).
    pub mutable: bool,
}

/// One table of a database.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// The table name.
    pub name: String,
    /// Its columns by name (not including `_uuid` and `_version`).
    pub columns: BTreeMap<String, ColumnSchema>,
    /// `maxRows`.
    pub max_rows: Option<u64>,
    /// Rows are kept without being referenced (default false).
    pub is_root: bool,
    /// Sets of columns whose values must be unique across rows.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.get(name)
    }
}

/// A whole database schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    /// The database name, e.g. `OVN_Northbound`.
    pub name: String,
    /// The schema version.
    pub version: SchemaVersion,
    /// The `cksum` member, when present.
    pub cksum: Option<String>,
    /// Tables by name.
    pub tables: BTreeMap<String, TableSchema>,
}

impl FromStr for DatabaseSchema {
    type Err = SchemaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        DatabaseSchema::from_json(&json)
    }
}

impl DatabaseSchema {
    /// Reads a schema from its JSON (a `.ovsschema` file or a `get_schema` reply).
    pub fn from_json(json: &Value) -> Result<Self, SchemaError> {
        let db_err = |reason: String| SchemaError::Database { reason };
        let obj = json
            .as_object()
            .ok_or_else(|| db_err(format!("expected an object, found {}", describe(json))))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| db_err("missing \"name\" string".into()))?
            .to_owned();
        let version = match obj.get("version") {
            Some(Value::String(v)) => v.parse()?,
            Some(other) => {
                return Err(db_err(format!(
                    "version must be a string, found {}",
                    describe(other)
                )));
            }
            // RFC 7047 leaves version optional; OVS always writes it.
            None => SchemaVersion::default(),
        };
        let cksum = obj.get("cksum").and_then(Value::as_str).map(str::to_owned);
        let tables_json = obj
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| db_err("missing \"tables\" object".into()))?;
        let mut tables = BTreeMap::new();
        for (table_name, table_json) in tables_json {
            tables.insert(table_name.clone(), parse_table(table_name, table_json)?);
        }
        check_references(&tables)?;
        Ok(DatabaseSchema {
            name,
            version,
            cksum,
            tables,
        })
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(name)
    }
}

fn parse_table(table: &str, json: &Value) -> Result<TableSchema, SchemaError> {
    let table_err = |reason: String| SchemaError::Table {
        table: table.to_owned(),
        reason,
    };
    let obj: &Map<String, Value> = json
        .as_object()
        .ok_or_else(|| table_err(format!("expected an object, found {}", describe(json))))?;
    let columns_json = obj
        .get("columns")
        .and_then(Value::as_object)
        .ok_or_else(|| table_err("missing \"columns\" object".into()))?;
    let mut columns = BTreeMap::new();
    for (column, column_json) in columns_json {
        let column_err = |reason: String| SchemaError::Column {
            table: table.to_owned(),
            column: column.clone(),
            reason,
        };
        if column.starts_with('_') {
            return Err(column_err("names starting with '_' are reserved".into()));
        }
        let cobj = column_json.as_object().ok_or_else(|| {
            column_err(format!(
                "expected an object, found {}",
                describe(column_json)
            ))
        })?;
        let ty = ColumnType::parse(
            cobj.get("type")
                .ok_or_else(|| column_err("missing \"type\"".into()))?,
        )
        .map_err(column_err)?;
        let flag = |member: &str, default: bool| match cobj.get(member) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(column_err(format!(
                "{member} must be a boolean, found {}",
                describe(other)
            ))),
        };
        let ephemeral = flag("ephemeral", false)?;
        let mutable = flag("mutable", true)?;
        columns.insert(
            column.clone(),
            ColumnSchema {
                name: column.clone(),
                ty,
                ephemeral,
                mutable,
            },
        );
    }
    let max_rows = match obj.get("maxRows") {
        None => None,
        Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            table_err(format!(
                "maxRows must be a positive integer, found {}",
                describe(v)
            ))
        })?),
    };
    let is_root = match obj.get("isRoot") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(table_err(format!(
                "isRoot must be a boolean, found {}",
                describe(other)
            )));
        }
    };
    let mut indexes = Vec::new();
    if let Some(index_json) = obj.get("indexes") {
        let list = index_json
            .as_array()
            .ok_or_else(|| table_err("indexes must be an array of column-name arrays".into()))?;
        for index in list {
            let names = index.as_array().ok_or_else(|| {
                table_err(format!("index must be an array, found {}", describe(index)))
            })?;
            let mut cols = Vec::with_capacity(names.len());
            for name in names {
                let name = name.as_str().ok_or_else(|| {
                    table_err(format!(
                        "index column must be a string, found {}",
                        describe(name)
                    ))
                })?;
                if name != "_uuid" && !columns.contains_key(name) {
                    return Err(table_err(format!("index names unknown column {name:?}")));
                }
                cols.push(name.to_owned());
            }
            indexes.push(cols);
        }
    }
    Ok(TableSchema {
        name: table.to_owned(),
        columns,
        max_rows,
        is_root,
        indexes,
    })
}

fn check_references(tables: &BTreeMap<String, TableSchema>) -> Result<(), SchemaError> {
    for table in tables.values() {
        for column in table.columns.values() {
            for base in std::iter::once(&column.ty.key).chain(column.ty.value.as_ref()) {
                if let Some(target) = &base.ref_table
                    && !tables.contains_key(target)
                {
                    return Err(SchemaError::Column {
                        table: table.name.clone(),
                        column: column.name.clone(),
                        reason: format!("refTable names unknown table {target:?}"),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_parse_and_compare() {
        let v: SchemaVersion = "7.0.0".parse().unwrap();
        assert_eq!(v, SchemaVersion::new(7, 0, 0));
        assert!("7.10.0".parse::<SchemaVersion>().unwrap() > "7.9.3".parse().unwrap());
        assert_eq!(v.to_string(), "7.0.0");
        for bad in [
            "7", "7.0", "7.0.0.0", "7.a.0", "", "7..0", "-1.0.0", "+1.0.0",
        ] {
            assert!(bad.parse::<SchemaVersion>().is_err(), "{bad:?} accepted");
        }
        assert!(SchemaVersion::new(7, 1, 0).can_serve(SchemaVersion::new(7, 0, 0)));
        assert!(!SchemaVersion::new(6, 9, 0).can_serve(SchemaVersion::new(7, 0, 0)));
        assert!(!SchemaVersion::new(8, 0, 0).can_serve(SchemaVersion::new(7, 0, 0)));
    }

    #[test]
    fn parses_column_types() {
        let schema: DatabaseSchema = json!({
            "name": "T", "version": "1.2.3", "cksum": "1 2",
            "tables": {
                "A": {
                    "columns": {
                        "name": {"type": "string"},
                        "tag": {"type": {"key": {"type": "integer", "minInteger": 1, "maxInteger": 4095}, "min": 0, "max": 1}},
                        "kind": {"type": {"key": {"type": "string", "enum": ["set", ["x", "y"]]}}},
                        "peer": {"type": {"key": {"type": "uuid", "refTable": "A", "refType": "weak"}, "min": 0, "max": "unlimited"}},
                        "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}, "ephemeral": true},
                        "created": {"type": "integer", "mutable": false}
                    },
                    "isRoot": true, "maxRows": 5, "indexes": [["name"]]
                }
            }
        })
        .to_string()
        .parse()
        .unwrap();
        assert_eq!(schema.version, SchemaVersion::new(1, 2, 3));
        let a = schema.table("A").unwrap();
        assert!(a.is_root);
        assert_eq!(a.max_rows, Some(5));
        assert_eq!(a.indexes, vec![vec!["name".to_string()]]);
        assert_eq!(a.column("name").unwrap().ty.kind(), DatumKind::Scalar);
        let tag = &a.column("tag").unwrap().ty;
        assert!(tag.is_optional());
        assert_eq!(tag.key.max_integer, Some(4095));
        let kind = &a.column("kind").unwrap().ty;
        assert_eq!(kind.key.enum_values.as_ref().unwrap().len(), 2);
        assert!(kind.key.check(&"z".into()).is_err());
        assert!(kind.key.check(&"x".into()).is_ok());
        let peer = &a.column("peer").unwrap().ty;
        assert_eq!(peer.key.ref_type, RefType::Weak);
        assert_eq!(peer.max, None);
        let ids = a.column("ids").unwrap();
        assert!(ids.ephemeral);
        assert_eq!(ids.ty.kind(), DatumKind::Map);
        assert!(!a.column("created").unwrap().mutable);
        assert_eq!(tag.decode(&json!(["set", []])).unwrap(), Datum::empty_set());
        assert!(matches!(
            tag.decode(&json!(["set", [1, 2]])),
            Err(DatumError::Cardinality { found: 2, .. })
        ));
        assert!(tag.decode_diff(&json!(["set", [1, 2]])).is_ok());
        assert_eq!(ids.ty.default_datum(), Datum::empty_map());
    }

    #[test]
    fn errors_name_table_and_column() {
        let bad = json!({"name": "T", "version": "1.0.0", "tables": {
            "Port": {"columns": {"tag": {"type": {"key": "integr"}}}}}});
        let err = DatabaseSchema::from_json(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "table Port, column tag: key: unknown atomic type \"integr\""
        );
        let bad = json!({"name": "T", "version": "1.0.0", "tables": {
            "Port": {"columns": {"peer": {"type": {"key": {"type": "uuid", "refTable": "Nope"}}}}}}});
        let err = DatabaseSchema::from_json(&bad).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Column { table, column, .. } if table == "Port" && column == "peer"),
            "{err}"
        );
        let bad = json!({"name": "T", "version": "1.0.0", "tables": {
            "Port": {"columns": {}, "isRoot": "yes"}}});
        assert!(matches!(
            DatabaseSchema::from_json(&bad).unwrap_err(),
            SchemaError::Table { .. }
        ));
        let bad = json!({"name": "T", "version": "1.0.0", "tables": {
            "Port": {"columns": {"n": {"type": {"key": "integer", "min": 2}}}}}});
        assert!(
            DatabaseSchema::from_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("min must be 0 or 1")
        );
        assert!(matches!(
            "{".parse::<DatabaseSchema>(),
            Err(SchemaError::Json(_))
        ));
        let bad = json!({"name": "T", "version": "1.0", "tables": {}});
        assert!(matches!(
            DatabaseSchema::from_json(&bad),
            Err(SchemaError::Version { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_column_types_never_panic(
            min in proptest::option::of(0i64..4),
            max in proptest::option::of(prop_oneof_max()),
            key in "(integer|real|string|uuid|boolean|bogus)",
            with_value in proptest::bool::ANY,
        ) {
            let mut ty = serde_json::Map::new();
            ty.insert("key".into(), json!({"type": key, "enum": ["set", [1, "a"]], "minInteger": 3}));
            if with_value { ty.insert("value".into(), json!("string")); }
            if let Some(min) = min { ty.insert("min".into(), json!(min)); }
            if let Some(max) = max { ty.insert("max".into(), max); }
            let schema = json!({"name": "T", "version": "1.0.0", "tables": {
                "A": {"columns": {"c": {"type": Value::Object(ty)}}}}});
            if let Err(e) = DatabaseSchema::from_json(&schema) {
                let text = e.to_string();
                proptest::prop_assert!(text.starts_with("table A, column c:"), "{}", text);
            }
        }
    }

    fn prop_oneof_max() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            (0i64..5).prop_map(Value::from),
            Just(json!("unlimited")),
            Just(json!("lots")),
        ]
    }
}
