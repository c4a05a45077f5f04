//! OVSDB values (RFC 7047 section 5.1): UUIDs, atoms and datums, with their exact JSON
//! encoding, conversions from and to Rust types, and the `update2` diff application the
//! replica needs.
//!
//! A [`Datum`] keeps sets and maps as sorted vectors rather than B-trees: almost every set in
//! OVN rows has zero or one element, and a sorted `Vec` of one atom costs one small
//! allocation where a B-tree node costs hundreds of bytes. Memory per replica row matters.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Why a JSON value or a [`Datum`] could not be read as what the caller asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DatumError {
    /// The value had another shape than the one expected.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the reader wanted, e.g. `"an integer"` or `"[\"uuid\", <string>]"`.
        expected: String,
        /// A short rendering of what was there.
        found: String,
    },
    /// A string that should be a UUID is not in 8-4-4-4-12 hex form.
    #[error("invalid UUID {text:?}: {reason}")]
    InvalidUuid {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A set or map has more or fewer elements than its type allows.
    #[error("expected between {min} and {max} elements, found {found}")]
    Cardinality {
        /// Smallest allowed count.
        min: u64,
        /// Largest allowed count (`u64::MAX` for unlimited).
        max: u64,
        /// The count found.
        found: usize,
    },
    /// A map contains the same key twice.
    #[error("map has duplicate key {key}")]
    DuplicateKey {
        /// The repeated key, JSON-encoded.
        key: String,
    },
}

impl DatumError {
    fn unexpected(expected: impl Into<String>, found: &Value) -> Self {
        DatumError::Unexpected {
            expected: expected.into(),
            found: describe(found),
        }
    }
}

/// A short, bounded rendering of a JSON value for error messages.
pub(crate) fn describe(value: &Value) -> String {
    const LIMIT: usize = 80;
    let text = value.to_string();
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if text.len() <= LIMIT {
        format!("{kind} {text}")
    } else {
        let mut cut = LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{kind} {}...", &text[..cut])
    }
}

// ---------------------------------------------------------------------------------------------
// Uuid

/// A 128-bit OVSDB row identifier, written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(u128);

impl Uuid {
    /// The all-zero UUID.
    pub const NIL: Uuid = Uuid(0);

    /// The UUID with these 128 bits.
    pub const fn from_u128(bits: u128) -> Self {
        Uuid(bits)
    }

    /// The 128 bits of this UUID.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// A random (version 4, RFC 4122 variant) UUID from the operating system's generator.
    pub fn new_v4() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // The OS generator is unavailable only in exotic sandboxes; fall back to a
            // process-unique value so callers never fail on ID creation.
            bytes = fallback_random_bytes();
        }
        let bits = u128::from_be_bytes(bytes);
        let bits = (bits & !(0xF << 76)) | (0x4 << 76); // version 4
        let bits = (bits & !(0x3 << 62)) | (0x2 << 62); // variant 10
        Uuid(bits)
    }

    /// Whether `text` is a well-formed UUID.
    pub fn is_valid(text: &str) -> bool {
        text.parse::<Uuid>().is_ok()
    }
}

fn fallback_random_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, AtomicOrdering::Relaxed));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        hasher.write_u128(nanos);
        half.copy_from_slice(&hasher.finish().to_be_bytes());
    }
    out
}

impl FromStr for Uuid {
    type Err = DatumError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| DatumError::InvalidUuid {
            text: text.to_owned(),
            reason,
        };
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return Err(invalid("must be 36 characters long"));
        }
        let mut bits: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b != b'-' {
                    return Err(invalid("dashes must be at positions 8, 13, 18 and 23"));
                }
                continue;
            }
            let nibble = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(invalid("non-hexadecimal character")),
            };
            bits = (bits << 4) | u128::from(nibble);
        }
        Ok(Uuid(bits))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (b >> 96) as u32,
            (b >> 80) as u16,
            (b >> 64) as u16,
            (b >> 48) as u16,
            b & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Atom

/// The kind of an atom: the atomic types of RFC 7047 section 3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AtomType {
    /// 64-bit signed integer.
    Integer,
    /// IEEE 754 double.
    Real,
    /// true / false.
    Boolean,
    /// UTF-8 string.
    String,
    /// Row reference (or named-uuid inside a transaction).
    Uuid,
}

impl AtomType {
    /// The schema spelling: `"integer"`, `"real"`, `"boolean"`, `"string"`, `"uuid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AtomType::Integer => "integer",
            AtomType::Real => "real",
            AtomType::Boolean => "boolean",
            AtomType::String => "string",
            AtomType::Uuid => "uuid",
        }
    }

    /// Parses the schema spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "integer" => AtomType::Integer,
            "real" => AtomType::Real,
            "boolean" => AtomType::Boolean,
            "string" => AtomType::String,
            "uuid" => AtomType::Uuid,
            _ => return None,
        })
    }

    /// The value a column of this type holds when nothing was written (RFC 7047 5.1).
    pub fn default_atom(self) -> Atom {
        match self {
            AtomType::Integer => Atom::Integer(0),
            AtomType::Real => Atom::Real(0.0),
            AtomType::Boolean => Atom::Boolean(false),
            AtomType::String => Atom::String(String::new()),
            AtomType::Uuid => Atom::Uuid(Uuid::NIL),
        }
    }
}

impl fmt::Display for AtomType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OVSDB scalar value.
///
/// Atoms are totally ordered (reals by `f64::total_cmp`, and across kinds by kind) so they can
/// sit in sorted sets and map keys.
#[derive(Debug, Clone)]
pub enum Atom {
    /// `integer`.
    Integer(i64),
    /// `real`.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `string`.
    String(String),
    /// `["uuid", "<uuid>"]`.
    Uuid(Uuid),
    /// `["named-uuid", "<name>"]`: a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    /// The atomic type of this atom (a named-uuid is a `uuid`).
    pub fn atom_type(&self) -> AtomType {
        match self {
            Atom::Integer(_) => AtomType::Integer,
            Atom::Real(_) => AtomType::Real,
            Atom::Boolean(_) => AtomType::Boolean,
            Atom::String(_) => AtomType::String,
            Atom::Uuid(_) | Atom::NamedUuid(_) => AtomType::Uuid,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The real, if this is one (integers are widened, as in the protocol).
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The UUID, if this is one.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    /// Decodes an atom of unknown type: JSON integers become [`Atom::Integer`], other
    /// numbers [`Atom::Real`].
    pub fn from_json(value: &Value) -> Result<Atom, DatumError> {
        match value {
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if let Some(r) = n.as_f64() {
                    Ok(Atom::Real(r))
                } else {
                    Err(DatumError::unexpected("an integer or real", value))
                }
            }
            Value::Array(items) => Self::tagged_from_json(items, value),
            _ => Err(DatumError::unexpected(
                "an atom (number, boolean, string, [\"uuid\",..] or [\"named-uuid\",..])",
                value,
            )),
        }
    }

    fn tagged_from_json(items: &[Value], whole: &Value) -> Result<Atom, DatumError> {
        match items {
            [Value::String(tag), Value::String(text)] if tag == "uuid" => {
                Ok(Atom::Uuid(text.parse()?))
            }
            [Value::String(tag), Value::String(name)] if tag == "named-uuid" => {
                Ok(Atom::NamedUuid(name.clone()))
            }
            _ => Err(DatumError::unexpected(
                "[\"uuid\", <uuid>] or [\"named-uuid\", <name>]",
                whole,
            )),
        }
    }

    /// Decodes an atom that must be of type `ty`. A JSON integer is accepted for a real.
    pub fn from_json_typed(value: &Value, ty: AtomType) -> Result<Atom, DatumError> {
        match ty {
            AtomType::Integer => value
                .as_i64()
                .map(Atom::Integer)
                .ok_or_else(|| DatumError::unexpected("an integer", value)),
            AtomType::Real => value
                .as_f64()
                .map(Atom::Real)
                .ok_or_else(|| DatumError::unexpected("a real", value)),
            AtomType::Boolean => value
                .as_bool()
                .map(Atom::Boolean)
                .ok_or_else(|| DatumError::unexpected("a boolean", value)),
            AtomType::String => value
                .as_str()
                .map(|s| Atom::String(s.to_owned()))
                .ok_or_else(|| DatumError::unexpected("a string", value)),
            AtomType::Uuid => match value {
                Value::Array(items) => Self::tagged_from_json(items, value),
                _ => Err(DatumError::unexpected(
                    "[\"uuid\", <uuid>] or [\"named-uuid\", <name>]",
                    value,
                )),
            },
        }
    }

    /// The RFC 7047 JSON encoding.
    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => Value::from(*i),
            Atom::Real(r) => serde_json::Number::from_f64(*r)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Atom::Boolean(b) => Value::Bool(*b),
            Atom::String(s) => Value::String(s.clone()),
            Atom::Uuid(u) => Value::Array(vec!["uuid".into(), u.to_string().into()]),
            Atom::NamedUuid(n) => Value::Array(vec!["named-uuid".into(), n.clone().into()]),
        }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for Atom {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) | Atom::NamedUuid(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => write!(f, "@{n}"),
        }
    }
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => serializer.serialize_i64(*i),
            Atom::Real(r) => serializer.serialize_f64(*r),
            Atom::Boolean(b) => serializer.serialize_bool(*b),
            Atom::String(s) => serializer.serialize_str(s),
            Atom::Uuid(u) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("uuid")?;
                seq.serialize_element(u)?;
                seq.end()
            }
            Atom::NamedUuid(n) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("named-uuid")?;
                seq.serialize_element(n)?;
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Atom::from_json(&value).map_err(serde::de::Error::custom)
    }
}

impl From<i64> for Atom {
    fn from(v: i64) -> Self {
        Atom::Integer(v)
    }
}
impl From<f64> for Atom {
    fn from(v: f64) -> Self {
        Atom::Real(v)
    }
}
impl From<bool> for Atom {
    fn from(v: bool) -> Self {
        Atom::Boolean(v)
    }
}
impl From<String> for Atom {
    fn from(v: String) -> Self {
        Atom::String(v)
    }
}
impl From<&str> for Atom {
    fn from(v: &str) -> Self {
        Atom::String(v.to_owned())
    }
}
impl From<Uuid> for Atom {
    fn from(v: Uuid) -> Self {
        Atom::Uuid(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Datum

/// An OVSDB column value: a single atom, a set of atoms, or a map from atoms to atoms.
///
/// A set of exactly one element and a scalar of the same atom are the same OVSDB value and
/// compare equal. Sets are kept sorted and free of duplicates; maps sorted by key with unique
/// keys. Build them with [`Datum::set`] / [`Datum::map`] (or `collect()`), which normalise.
#[derive(Debug, Clone)]
pub enum Datum {
    /// A column of exactly one atom (`min` = `max` = 1, no value type).
    Scalar(Atom),
    /// A set of atoms (also optional columns: `min` 0, `max` 1).
    Set(AtomSet),
    /// A map of atom to atom.
    Map(AtomMap),
}

/// A sorted, duplicate-free set of atoms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AtomSet(Vec<Atom>);

/// A map of atoms to atoms, sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AtomMap(Vec<(Atom, Atom)>);

impl AtomSet {
    /// The empty set.
    pub const fn new() -> Self {
        AtomSet(Vec::new())
    }

    /// The elements in ascending order.
    pub fn as_slice(&self) -> &[Atom] {
        &self.0
    }

    /// The elements in ascending order.
    pub fn iter(&self) -> std::slice::Iter<'_, Atom> {
        self.0.iter()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no element.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `atom` is an element.
    pub fn contains(&self, atom: &Atom) -> bool {
        self.0.binary_search(atom).is_ok()
    }

    /// Adds `atom`; returns whether it was new.
    pub fn insert(&mut self, atom: Atom) -> bool {
        match self.0.binary_search(&atom) {
            Ok(_) => false,
            Err(pos) => {
                self.0.insert(pos, atom);
                true
            }
        }
    }

    /// Removes `atom`; returns whether it was there.
    pub fn remove(&mut self, atom: &Atom) -> bool {
        match self.0.binary_search(atom) {
            Ok(pos) => {
                self.0.remove(pos);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the elements out.
    pub fn into_vec(self) -> Vec<Atom> {
        self.0
    }

    /// Symmetric difference with `diff`, in place: the OVSDB `update2` rule for sets.
    pub fn toggle_all(&mut self, diff: &AtomSet) {
        for atom in diff.iter() {
            if !self.remove(atom) {
                self.insert(atom.clone());
            }
        }
    }
}

impl FromIterator<Atom> for AtomSet {
    fn from_iter<I: IntoIterator<Item = Atom>>(iter: I) -> Self {
        let mut atoms: Vec<Atom> = iter.into_iter().collect();
        atoms.sort();
        atoms.dedup();
        AtomSet(atoms)
    }
}

impl<'a> IntoIterator for &'a AtomSet {
    type Item = &'a Atom;
    type IntoIter = std::slice::Iter<'a, Atom>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl AtomMap {
    /// The empty map.
    pub const fn new() -> Self {
        AtomMap(Vec::new())
    }

    /// The pairs in ascending key order.
    pub fn as_slice(&self) -> &[(Atom, Atom)] {
        &self.0
    }

    /// The pairs in ascending key order.
    pub fn iter(&self) -> std::slice::Iter<'_, (Atom, Atom)> {
        self.0.iter()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &Atom) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The value for `key`.
    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// The value for a string key (the common case of `external_ids` / `options`).
    pub fn get_str(&self, key: &str) -> Option<&Atom> {
        self.0
            .binary_search_by(|(k, _)| match k {
                Atom::String(s) => s.as_str().cmp(key),
                other => other.rank().cmp(&Atom::String(String::new()).rank()),
            })
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(&mut self, key: Atom, value: Atom) -> Option<Atom> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &Atom) -> Option<Atom> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Takes the pairs out.
    pub fn into_vec(self) -> Vec<(Atom, Atom)> {
        self.0
    }

    /// Applies an `update2` map diff in place: a key absent here is added; a key present
    /// with the same value is removed; a key present with another value takes the new one.
    pub fn apply_diff(&mut self, diff: &AtomMap) {
        for (key, value) in diff.iter() {
            match self.position(key) {
                Ok(i) if self.0[i].1 == *value => {
                    self.0.remove(i);
                }
                Ok(i) => self.0[i].1 = value.clone(),
                Err(i) => self.0.insert(i, (key.clone(), value.clone())),
            }
        }
    }

    /// Builds a map, rejecting duplicate keys (the protocol forbids them).
    pub fn try_from_pairs<I: IntoIterator<Item = (Atom, Atom)>>(
        pairs: I,
    ) -> Result<Self, DatumError> {
        let mut pairs: Vec<(Atom, Atom)> = pairs.into_iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(DatumError::DuplicateKey {
                key: w[0].0.to_json().to_string(),
            });
        }
        Ok(AtomMap(pairs))
    }
}

/// Later pairs win over earlier ones with the same key.
impl FromIterator<(Atom, Atom)> for AtomMap {
    fn from_iter<I: IntoIterator<Item = (Atom, Atom)>>(iter: I) -> Self {
        let mut map = AtomMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<'a> IntoIterator for &'a AtomMap {
    type Item = &'a (Atom, Atom);
    type IntoIter = std::slice::Iter<'a, (Atom, Atom)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// How a column's values are shaped, which decides JSON decoding and diff application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatumKind {
    /// Exactly one atom: an `update2` diff is the new value.
    Scalar,
    /// A set (including optional 0..1 columns): a diff toggles its elements.
    Set,
    /// A map: a diff adds, removes or replaces keys.
    Map,
}

impl Datum {
    /// The empty set.
    pub const fn empty_set() -> Self {
        Datum::Set(AtomSet::new())
    }

    /// The empty map.
    pub const fn empty_map() -> Self {
        Datum::Map(AtomMap::new())
    }

    /// A normalised set of these atoms.
    pub fn set<I: IntoIterator<Item = A>, A: Into<Atom>>(atoms: I) -> Self {
        Datum::Set(atoms.into_iter().map(Into::into).collect())
    }

    /// A normalised map of these pairs (a later duplicate key wins).
    pub fn map<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Datum::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The atoms of a scalar or set (a scalar is a one-element set); `None` for a map.
    pub fn as_atoms(&self) -> Option<&[Atom]> {
        match self {
            Datum::Scalar(a) => Some(std::slice::from_ref(a)),
            Datum::Set(s) => Some(s.as_slice()),
            Datum::Map(_) => None,
        }
    }

    /// The single atom of a scalar or one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self.as_atoms() {
            Some([a]) => Some(a),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&AtomMap> {
        match self {
            Datum::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Number of atoms (scalar, set) or pairs (map).
    pub fn len(&self) -> usize {
        match self {
            Datum::Scalar(_) => 1,
            Datum::Set(s) => s.len(),
            Datum::Map(m) => m.len(),
        }
    }

    /// Whether this is an empty set or map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes a datum without knowing its column type: a bare atom becomes a
    /// [`Datum::Scalar`].
    pub fn from_json(value: &Value) -> Result<Datum, DatumError> {
        if let Value::Array(items) = value {
            match items.as_slice() {
                [Value::String(tag), Value::Array(elems)] if tag == "set" => {
                    return elems
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<AtomSet, _>>()
                        .map(Datum::Set);
                }
                [Value::String(tag), Value::Array(pairs)] if tag == "map" => {
                    return decode_pairs(pairs, Atom::from_json, Atom::from_json).map(Datum::Map);
                }
                [Value::String(tag), _] if tag == "set" || tag == "map" => {
                    return Err(DatumError::unexpected(
                        format!("[\"{tag}\", <array>]"),
                        value,
                    ));
                }
                _ => {}
            }
        }
        Atom::from_json(value).map(Datum::Scalar)
    }

    /// Decodes a datum whose atoms must be of `key` (and for a map `value`) type, shaped as
    /// `kind`. Cardinality is not checked here (see `schema::ColumnType::decode`).
    pub fn from_json_typed(
        value: &Value,
        kind: DatumKind,
        key: AtomType,
        value_type: Option<AtomType>,
    ) -> Result<Datum, DatumError> {
        match kind {
            DatumKind::Scalar => Atom::from_json_typed(value, key).map(Datum::Scalar),
            DatumKind::Set => {
                if let Value::Array(items) = value
                    && let [Value::String(tag), rest] = items.as_slice()
                    && tag == "set"
                {
                    let Value::Array(elems) = rest else {
                        return Err(DatumError::unexpected("[\"set\", <array>]", value));
                    };
                    return elems
                        .iter()
                        .map(|e| Atom::from_json_typed(e, key))
                        .collect::<Result<AtomSet, _>>()
                        .map(Datum::Set);
                }
                let atom = Atom::from_json_typed(value, key).map_err(|e| match e {
                    DatumError::Unexpected { expected, found } => DatumError::Unexpected {
                        expected: format!("{expected} or [\"set\", [...]]"),
                        found,
                    },
                    other => other,
                })?;
                Ok(Datum::Set(AtomSet(vec![atom])))
            }
            DatumKind::Map => {
                let value_type = value_type.unwrap_or(key);
                match value {
                    Value::Array(items) => match items.as_slice() {
                        [Value::String(tag), Value::Array(pairs)] if tag == "map" => decode_pairs(
                            pairs,
                            |k| Atom::from_json_typed(k, key),
                            |v| Atom::from_json_typed(v, value_type),
                        )
                        .map(Datum::Map),
                        _ => Err(DatumError::unexpected(
                            "[\"map\", [[key, value], ...]]",
                            value,
                        )),
                    },
                    _ => Err(DatumError::unexpected(
                        "[\"map\", [[key, value], ...]]",
                        value,
                    )),
                }
            }
        }
    }

    /// The RFC 7047 JSON encoding: a one-element set is written as its bare atom.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Scalar(a) => a.to_json(),
            Datum::Set(s) if s.len() == 1 => s.0[0].to_json(),
            Datum::Set(s) => Value::Array(vec![
                "set".into(),
                Value::Array(s.iter().map(Atom::to_json).collect()),
            ]),
            Datum::Map(m) => Value::Array(vec![
                "map".into(),
                Value::Array(
                    m.iter()
                        .map(|(k, v)| Value::Array(vec![k.to_json(), v.to_json()]))
                        .collect(),
                ),
            ]),
        }
    }

    /// Applies an `update2` "modify" diff for a column of shape `kind` (ovsdb-server(7),
    /// section 4.1.14): a scalar takes the new value; a set toggles each element of the
    /// diff (symmetric difference); a map adds absent keys, removes keys whose value equals
    /// the diff's, and replaces the others.
    pub fn apply_diff(&mut self, diff: &Datum, kind: DatumKind) -> Result<(), DatumError> {
        match kind {
            DatumKind::Scalar => {
                *self = diff.clone();
                Ok(())
            }
            DatumKind::Set => {
                let diff_atoms = diff.as_atoms().ok_or_else(|| DatumError::Unexpected {
                    expected: "a set diff".into(),
                    found: "a map".into(),
                })?;
                let mut current = match std::mem::replace(self, Datum::empty_set()) {
                    Datum::Scalar(a) => AtomSet(vec![a]),
                    Datum::Set(s) => s,
                    Datum::Map(m) => {
                        *self = Datum::Map(m);
                        return Err(DatumError::Unexpected {
                            expected: "a set to apply a set diff to".into(),
                            found: "a map".into(),
                        });
                    }
                };
                for atom in diff_atoms {
                    if !current.remove(atom) {
                        current.insert(atom.clone());
                    }
                }
                *self = Datum::Set(current);
                Ok(())
            }
            DatumKind::Map => match (self, diff) {
                (Datum::Map(current), Datum::Map(d)) => {
                    current.apply_diff(d);
                    Ok(())
                }
                (Datum::Map(_), _) => Err(DatumError::Unexpected {
                    expected: "a map diff".into(),
                    found: "a scalar or set".into(),
                }),
                _ => Err(DatumError::Unexpected {
                    expected: "a map to apply a map diff to".into(),
                    found: "a scalar or set".into(),
                }),
            },
        }
    }
}

fn decode_pairs(
    pairs: &[Value],
    key: impl Fn(&Value) -> Result<Atom, DatumError>,
    value: impl Fn(&Value) -> Result<Atom, DatumError>,
) -> Result<AtomMap, DatumError> {
    let decoded = pairs
        .iter()
        .map(|pair| match pair {
            Value::Array(kv) if kv.len() == 2 => Ok((key(&kv[0])?, value(&kv[1])?)),
            other => Err(DatumError::unexpected("a [key, value] pair", other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    AtomMap::try_from_pairs(decoded)
}

impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Datum::Map(a), Datum::Map(b)) => a == b,
            (Datum::Map(a), other) | (other, Datum::Map(a)) => {
                // An empty map and an empty set are both "no value".
                a.is_empty() && other.is_empty()
            }
            _ => self.as_atoms() == other.as_atoms(),
        }
    }
}

impl Eq for Datum {}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Pair<'a>(&'a Atom, &'a Atom);
        impl Serialize for Pair<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element(self.0)?;
                seq.serialize_element(self.1)?;
                seq.end()
            }
        }
        struct Atoms<'a>(&'a [Atom]);
        impl Serialize for Atoms<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0)
            }
        }
        struct Pairs<'a>(&'a [(Atom, Atom)]);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|(k, v)| Pair(k, v)))
            }
        }
        match self {
            Datum::Scalar(a) => a.serialize(serializer),
            Datum::Set(s) if s.len() == 1 => s.0[0].serialize(serializer),
            Datum::Set(s) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("set")?;
                seq.serialize_element(&Atoms(s.as_slice()))?;
                seq.end()
            }
            Datum::Map(m) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("map")?;
                seq.serialize_element(&Pairs(m.as_slice()))?;
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Datum::from_json(&value).map_err(serde::de::Error::custom)
    }
}

impl From<Atom> for Datum {
    fn from(atom: Atom) -> Self {
        Datum::Scalar(atom)
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions between Rust types and datums

/// A Rust type that is one OVSDB atom.
pub trait AtomValue: Sized + Ord + Clone {
    /// Its OVSDB atomic type.
    const ATOM_TYPE: AtomType;
    /// The atom.
    fn to_atom(&self) -> Atom;
    /// Reads the atom, or says what it expected.
    fn from_atom(atom: &Atom) -> Result<Self, DatumError>;
}

fn atom_mismatch(expected: AtomType, atom: &Atom) -> DatumError {
    DatumError::Unexpected {
        expected: format!("an atom of type {expected}"),
        found: format!("{} {atom}", atom.atom_type()),
    }
}

impl AtomValue for i64 {
    const ATOM_TYPE: AtomType = AtomType::Integer;
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
    fn from_atom(atom: &Atom) -> Result<Self, DatumError> {
        atom.as_integer()
            .ok_or_else(|| atom_mismatch(Self::ATOM_TYPE, atom))
    }
}

impl AtomValue for bool {
    const ATOM_TYPE: AtomType = AtomType::Boolean;
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
    fn from_atom(atom: &Atom) -> Result<Self, DatumError> {
        atom.as_bool()
            .ok_or_else(|| atom_mismatch(Self::ATOM_TYPE, atom))
    }
}

impl AtomValue for String {
    const ATOM_TYPE: AtomType = AtomType::String;
    fn to_atom(&self) -> Atom {
        Atom::String(self.clone())
    }
    fn from_atom(atom: &Atom) -> Result<Self, DatumError> {
        atom.as_str()
            .map(str::to_owned)
            .ok_or_else(|| atom_mismatch(Self::ATOM_TYPE, atom))
    }
}

impl AtomValue for Uuid {
    const ATOM_TYPE: AtomType = AtomType::Uuid;
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
    fn from_atom(atom: &Atom) -> Result<Self, DatumError> {
        atom.as_uuid()
            .ok_or_else(|| atom_mismatch(Self::ATOM_TYPE, atom))
    }
}

/// A real as a totally ordered value, so reals can be set elements and map keys in Rust.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real(pub f64);

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Real {}
impl PartialOrd for Real {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Real {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl AtomValue for Real {
    const ATOM_TYPE: AtomType = AtomType::Real;
    fn to_atom(&self) -> Atom {
        Atom::Real(self.0)
    }
    fn from_atom(atom: &Atom) -> Result<Self, DatumError> {
        atom.as_real()
            .map(Real)
            .ok_or_else(|| atom_mismatch(Self::ATOM_TYPE, atom))
    }
}

/// A Rust type that holds one whole column value.
pub trait DatumValue: Sized {
    /// The datum for this value.
    fn to_datum(&self) -> Datum;
    /// Reads the datum, or says what it expected.
    fn from_datum(datum: &Datum) -> Result<Self, DatumError>;
    /// The value of a column never written (so rows can omit it).
    fn default_value() -> Self;
}

fn exactly_one(datum: &Datum) -> Result<&Atom, DatumError> {
    match datum.as_atoms() {
        Some([a]) => Ok(a),
        Some(atoms) => Err(DatumError::Cardinality {
            min: 1,
            max: 1,
            found: atoms.len(),
        }),
        None => Err(DatumError::Unexpected {
            expected: "a single atom".into(),
            found: format!("map {datum}"),
        }),
    }
}

fn atoms_of(datum: &Datum) -> Result<&[Atom], DatumError> {
    datum.as_atoms().ok_or_else(|| DatumError::Unexpected {
        expected: "a set".into(),
        found: format!("map {datum}"),
    })
}

macro_rules! scalar_datum_value {
    ($($t:ty => $default:expr),* $(,)?) => {$(
        impl DatumValue for $t {
            fn to_datum(&self) -> Datum {
                Datum::Scalar(self.to_atom())
            }
            fn from_datum(datum: &Datum) -> Result<Self, DatumError> {
                <$t as AtomValue>::from_atom(exactly_one(datum)?)
            }
            fn default_value() -> Self {
                $default
            }
        }
        impl From<$t> for Datum {
            fn from(v: $t) -> Datum {
                v.to_datum()
            }
        }
    )*};
}

scalar_datum_value!(i64 => 0, bool => false, String => String::new(), Uuid => Uuid::NIL, Real => Real(0.0));

impl DatumValue for f64 {
    fn to_datum(&self) -> Datum {
        Datum::Scalar(Atom::Real(*self))
    }
    fn from_datum(datum: &Datum) -> Result<Self, DatumError> {
        Real::from_atom(exactly_one(datum)?).map(|r| r.0)
    }
    fn default_value() -> Self {
        0.0
    }
}

impl From<f64> for Datum {
    fn from(v: f64) -> Datum {
        v.to_datum()
    }
}

impl From<&str> for Datum {
    fn from(v: &str) -> Datum {
        Datum::Scalar(Atom::String(v.to_owned()))
    }
}

impl<T: AtomValue> DatumValue for Option<T> {
    fn to_datum(&self) -> Datum {
        Datum::Set(AtomSet(self.iter().map(AtomValue::to_atom).collect()))
    }
    fn from_datum(datum: &Datum) -> Result<Self, DatumError> {
        match atoms_of(datum)? {
            [] => Ok(None),
            [a] => T::from_atom(a).map(Some),
            more => Err(DatumError::Cardinality {
                min: 0,
                max: 1,
                found: more.len(),
            }),
        }
    }
    fn default_value() -> Self {
        None
    }
}

impl<T: AtomValue> From<Option<T>> for Datum {
    fn from(v: Option<T>) -> Datum {
        v.to_datum()
    }
}

impl<T: AtomValue> DatumValue for BTreeSet<T> {
    fn to_datum(&self) -> Datum {
        // BTreeSet iterates in T's order, which need not be Atom's order: normalise.
        Datum::Set(self.iter().map(AtomValue::to_atom).collect())
    }
    fn from_datum(datum: &Datum) -> Result<Self, DatumError> {
        atoms_of(datum)?.iter().map(T::from_atom).collect()
    }
    fn default_value() -> Self {
        BTreeSet::new()
    }
}

impl<T: AtomValue> From<BTreeSet<T>> for Datum {
    fn from(v: BTreeSet<T>) -> Datum {
        v.to_datum()
    }
}

impl<K: AtomValue, V: AtomValue> DatumValue for BTreeMap<K, V> {
    fn to_datum(&self) -> Datum {
        Datum::Map(AtomMap(
            self.iter()
                .map(|(k, v)| (k.to_atom(), v.to_atom()))
                .collect(),
        ))
    }
    fn from_datum(datum: &Datum) -> Result<Self, DatumError> {
        match datum {
            Datum::Map(m) => m
                .iter()
                .map(|(k, v)| Ok((K::from_atom(k)?, V::from_atom(v)?)))
                .collect(),
            // A never-written map column may be reported as an empty set by generic code.
            other if other.is_empty() => Ok(BTreeMap::new()),
            other => Err(DatumError::Unexpected {
                expected: "a map".into(),
                found: format!("{other}"),
            }),
        }
    }
    fn default_value() -> Self {
        BTreeMap::new()
    }
}

impl<K: AtomValue, V: AtomValue> From<BTreeMap<K, V>> for Datum {
    fn from(v: BTreeMap<K, V>) -> Datum {
        v.to_datum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const U1: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn uuid_round_trips_and_rejects_garbage() {
        let u: Uuid = U1.parse().unwrap();
        assert_eq!(u.to_string(), U1);
        assert_eq!(
            "550E8400-E29B-41D4-A716-446655440000"
                .parse::<Uuid>()
                .unwrap(),
            u
        );
        for bad in [
            "",
            "550e8400e29b41d4a716446655440000",
            "550e8400-e29b-41d4-a716-44665544000g",
            "550e8400-e29b-41d4-a716_446655440000",
            "550e8400-e29b-41d4-a716-4466554400000",
        ] {
            assert!(bad.parse::<Uuid>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn random_uuids_are_version_4_and_distinct() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
    }

    #[test]
    fn atoms_encode_exactly() {
        let u: Uuid = U1.parse().unwrap();
        assert_eq!(Atom::Uuid(u).to_json(), json!(["uuid", U1]));
        assert_eq!(
            Atom::NamedUuid("row1".into()).to_json(),
            json!(["named-uuid", "row1"])
        );
        assert_eq!(
            serde_json::to_value(Atom::Uuid(u)).unwrap(),
            json!(["uuid", U1])
        );
        assert_eq!(
            serde_json::to_string(&Atom::NamedUuid("x".into())).unwrap(),
            r#"["named-uuid","x"]"#
        );
        assert_eq!(serde_json::to_string(&Atom::Real(1.0)).unwrap(), "1.0");
        assert_eq!(Atom::from_json(&json!(5)).unwrap(), Atom::Integer(5));
        assert_eq!(Atom::from_json(&json!(5.5)).unwrap(), Atom::Real(5.5));
    }

    #[test]
    fn datum_encodings_follow_rfc7047() {
        assert_eq!(Datum::set(["a"]).to_json(), json!("a"));
        assert_eq!(Datum::set(["b", "a"]).to_json(), json!(["set", ["a", "b"]]));
        assert_eq!(Datum::empty_set().to_json(), json!(["set", []]));
        assert_eq!(Datum::empty_map().to_json(), json!(["map", []]));
        assert_eq!(
            Datum::map([("k", "v")]).to_json(),
            json!(["map", [["k", "v"]]])
        );
        let d = Datum::map([("k", 1i64), ("a", 2i64)]);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!(["map", [["a", 2], ["k", 1]]])
        );
    }

    #[test]
    fn decoding_errors_say_expected_and_found() {
        let err = Datum::from_json(&json!(["set", 3])).unwrap_err();
        assert!(err.to_string().contains("[\"set\", <array>]"), "{err}");
        assert!(err.to_string().contains("found array"), "{err}");
        let err = Atom::from_json_typed(&json!("x"), AtomType::Integer).unwrap_err();
        assert_eq!(err.to_string(), "expected an integer, found string \"x\"");
        let err = Datum::from_json(&json!(["uuid", "nope"])).unwrap_err();
        assert!(matches!(err, DatumError::InvalidUuid { .. }), "{err}");
        let err = Datum::from_json(&json!(["map", [["a", 1], ["a", 2]]])).unwrap_err();
        assert!(matches!(err, DatumError::DuplicateKey { .. }), "{err}");
        let err = Datum::from_json(&json!({"a": 1})).unwrap_err();
        assert!(err.to_string().contains("found object"), "{err}");
        let err = Datum::from_json_typed(&json!("x"), DatumKind::Map, AtomType::String, None)
            .unwrap_err();
        assert!(err.to_string().starts_with("expected [\"map\""), "{err}");
    }

    #[test]
    fn typed_decoding_respects_shape() {
        let d =
            Datum::from_json_typed(&json!("a"), DatumKind::Set, AtomType::String, None).unwrap();
        assert!(matches!(&d, Datum::Set(s) if s.len() == 1));
        let d = Datum::from_json_typed(&json!(3), DatumKind::Scalar, AtomType::Real, None).unwrap();
        assert_eq!(d, Datum::Scalar(Atom::Real(3.0)));
        assert!(Datum::from_json_typed(&json!("a"), DatumKind::Set, AtomType::Uuid, None).is_err());
        assert_eq!(Datum::Scalar("a".into()), Datum::set(["a"]));
        assert_eq!(Datum::empty_map(), Datum::empty_set());
    }

    #[test]
    fn rust_conversions() {
        let u: Uuid = U1.parse().unwrap();
        assert_eq!(String::from_datum(&"x".into()).unwrap(), "x");
        assert_eq!(i64::from_datum(&Datum::from(7i64)).unwrap(), 7);
        assert!(bool::from_datum(&Datum::from(true)).unwrap());
        assert_eq!(f64::from_datum(&Datum::from(1.5)).unwrap(), 1.5);
        assert_eq!(Uuid::from_datum(&Datum::from(u)).unwrap(), u);
        assert_eq!(
            Option::<i64>::from_datum(&Datum::empty_set()).unwrap(),
            None
        );
        assert_eq!(
            Option::<Uuid>::from_datum(&Datum::from(Some(u))).unwrap(),
            Some(u)
        );
        let set: BTreeSet<String> = ["b".to_string(), "a".to_string()].into();
        assert_eq!(
            BTreeSet::<String>::from_datum(&set.to_datum()).unwrap(),
            set
        );
        let map: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        assert_eq!(
            BTreeMap::<String, String>::from_datum(&map.to_datum()).unwrap(),
            map
        );
        let err = i64::from_datum(&"x".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected an atom of type integer, found string \"x\""
        );
        let err = Option::<String>::from_datum(&Datum::set(["a", "b"])).unwrap_err();
        assert!(matches!(
            err,
            DatumError::Cardinality {
                max: 1,
                found: 2,
                ..
            }
        ));
    }

    #[test]
    fn set_diff_is_symmetric_difference() {
        let mut d = Datum::set(["a", "b"]);
        d.apply_diff(&Datum::set(["b", "c"]), DatumKind::Set)
            .unwrap();
        assert_eq!(d, Datum::set(["a", "c"]));
        // Optional column: old "a", new "b" arrives as the set {a, b}.
        let mut opt = Datum::set(["a"]);
        opt.apply_diff(&Datum::set(["a", "b"]), DatumKind::Set)
            .unwrap();
        assert_eq!(opt, Datum::set(["b"]));
        // A bare-atom diff decoded untyped (Scalar) still toggles.
        let mut d = Datum::set(["a"]);
        d.apply_diff(&Datum::Scalar("a".into()), DatumKind::Set)
            .unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn map_diff_adds_removes_replaces() {
        let mut d = Datum::map([("keep", "1"), ("drop", "2"), ("change", "3")]);
        let diff = Datum::map([("drop", "2"), ("change", "30"), ("new", "4")]);
        d.apply_diff(&diff, DatumKind::Map).unwrap();
        assert_eq!(
            d,
            Datum::map([("keep", "1"), ("change", "30"), ("new", "4")])
        );
        let mut scalar = Datum::from(1i64);
        scalar
            .apply_diff(&Datum::from(2i64), DatumKind::Scalar)
            .unwrap();
        assert_eq!(scalar, Datum::from(2i64));
        assert!(d.apply_diff(&Datum::set(["x"]), DatumKind::Map).is_err());
    }

    fn atom_strategy() -> impl Strategy<Value = Atom> {
        prop_oneof![
            any::<i64>().prop_map(Atom::Integer),
            (-1e6f64..1e6).prop_map(Atom::Real),
            any::<bool>().prop_map(Atom::Boolean),
            "[a-z0-9 ]{0,8}".prop_map(Atom::String),
            any::<u128>().prop_map(|b| Atom::Uuid(Uuid::from_u128(b))),
            "[a-z][a-z0-9_]{0,6}".prop_map(Atom::NamedUuid),
        ]
    }

    proptest! {
        #[test]
        fn datum_json_round_trips(
            atoms in proptest::collection::vec(atom_strategy(), 0..6),
            pairs in proptest::collection::vec((atom_strategy(), atom_strategy()), 0..6),
        ) {
            let set: AtomSet = atoms.into_iter().collect();
            let set = Datum::Set(set);
            prop_assert_eq!(&Datum::from_json(&set.to_json()).unwrap(), &set);
            let via_serde: Value = serde_json::to_value(&set).unwrap();
            prop_assert_eq!(via_serde, set.to_json());
            let map = Datum::Map(pairs.into_iter().collect());
            prop_assert_eq!(&Datum::from_json(&map.to_json()).unwrap(), &map);
            let via_serde: Value = serde_json::to_value(&map).unwrap();
            prop_assert_eq!(via_serde, map.to_json());
        }

        #[test]
        fn set_diff_reaches_new_value(
            old in proptest::collection::btree_set(0i64..20, 0..10),
            new in proptest::collection::btree_set(0i64..20, 0..10),
        ) {
            let diff: BTreeSet<i64> = old.symmetric_difference(&new).copied().collect();
            let mut d = old.to_datum();
            d.apply_diff(&diff.to_datum(), DatumKind::Set).unwrap();
            prop_assert_eq!(d, new.to_datum());
        }

        #[test]
        fn map_diff_reaches_new_value(
            old in proptest::collection::btree_map(0i64..12, 0i64..3, 0..8),
            new in proptest::collection::btree_map(0i64..12, 0i64..3, 0..8),
        ) {
            // The server's diff: keys in only one map, plus changed keys with the new value.
            let mut diff = BTreeMap::new();
            for (k, v) in &old {
                match new.get(k) {
                    None => { diff.insert(*k, *v); }
                    Some(nv) if nv != v => { diff.insert(*k, *nv); }
                    Some(_) => {}
                }
            }
            for (k, v) in &new {
                if !old.contains_key(k) { diff.insert(*k, *v); }
            }
            let mut d = old.to_datum();
            d.apply_diff(&diff.to_datum(), DatumKind::Map).unwrap();
            prop_assert_eq!(d, new.to_datum());
        }

        #[test]
        fn arbitrary_json_never_panics(text in "[\\[\\]\"a-z0-9,:{} -]{0,40}") {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let _ = Datum::from_json(&value);
            }
        }
    }
}
