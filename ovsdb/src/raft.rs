//! Choosing a cluster member from its `_Server.Database` row (pure decision core).
//!
//! Every ovsdb-server serves a `_Server` database whose `Database` table has one row per
//! database it serves: `model` ("standalone", "clustered", "relay"), `connected` (a clustered
//! member that is part of a working cluster), `leader` (it is the Raft leader), `cid`/`sid`
//! (cluster and server id) and `index` (its last applied log index).

use serde_json::Value;

/// The fields of a `_Server.Database` row that decide whether a member is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDbRow {
    pub name: String,
    pub model: String,
    pub connected: bool,
    pub leader: bool,
    /// Cluster id (empty for standalone databases).
    pub cid: Option<String>,
    /// Server id (empty for standalone databases).
    pub sid: Option<String>,
    /// Last applied Raft log index (absent for standalone databases).
    pub index: Option<i64>,
    /// True for `model == "clustered"`.
    pub clustered: bool,
}

fn optional_uuid(v: Option<&Value>) -> Option<String> {
    // An optional uuid column: ["uuid", "..."] or ["set", []] / ["set", [["uuid", ".."]]].
    match v? {
        Value::Array(a) if a.len() == 2 && a[0] == "uuid" => a[1].as_str().map(str::to_owned),
        Value::Array(a) if a.len() == 2 && a[0] == "set" => {
            optional_uuid(a[1].as_array().and_then(|s| s.first()))
        }
        _ => None,
    }
}

fn optional_int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::Array(a) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .and_then(|s| s.first())
            .and_then(Value::as_i64),
        _ => None,
    }
}

impl ServerDbRow {
    /// Reads a row as returned by `select` on `_Server.Database`.
    pub fn from_json(row: &Value) -> Option<ServerDbRow> {
        let model = row.get("model")?.as_str()?.to_owned();
        Some(ServerDbRow {
            name: row.get("name")?.as_str()?.to_owned(),
            clustered: model == "clustered",
            model,
            connected: row.get("connected")?.as_bool()?,
            leader: row.get("leader")?.as_bool()?,
            cid: optional_uuid(row.get("cid")),
            sid: optional_uuid(row.get("sid")),
            index: optional_int(row.get("index")),
        })
    }
}

/// Why a member cannot be used for a database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the server does not serve this database")]
    NoDatabase,
    #[error("the member is not connected to its cluster")]
    NotConnected,
    #[error("the member is not the cluster leader")]
    NotLeader,
    #[error("relay servers are not used for writes")]
    Relay,
}

/// Decides whether the member whose `_Server.Database` rows are `rows` can serve `database`.
pub fn choose<'a>(
    rows: &'a [ServerDbRow],
    database: &str,
    leader_only: bool,
) -> Result<&'a ServerDbRow, Unusable> {
    let row = rows
        .iter()
        .find(|r| r.name == database)
        .ok_or(Unusable::NoDatabase)?;
    match row.model.as_str() {
        "clustered" if !row.connected => Err(Unusable::NotConnected),
        "clustered" if leader_only && !row.leader => Err(Unusable::NotLeader),
        "relay" if leader_only => Err(Unusable::Relay),
        _ => Ok(row),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(model: &str, connected: bool, leader: bool) -> ServerDbRow {
        ServerDbRow::from_json(&json!({
            "name": "OVN_Northbound", "model": model, "connected": connected, "leader": leader,
            "cid": ["set", [["uuid", "5e2c2e1a-0000-4000-8000-000000000001"]]],
            "sid": ["uuid", "5e2c2e1a-0000-4000-8000-000000000002"],
            "index": ["set", [42]],
        }))
        .unwrap()
    }

    #[test]
    fn parses_optional_columns() {
        let r = row("clustered", true, true);
        assert_eq!(
            r.cid.as_deref(),
            Some("5e2c2e1a-0000-4000-8000-000000000001")
        );
        assert_eq!(
            r.sid.as_deref(),
            Some("5e2c2e1a-0000-4000-8000-000000000002")
        );
        assert_eq!(r.index, Some(42));
        assert!(r.clustered);
        let s = ServerDbRow::from_json(&json!({"name": "X", "model": "standalone",
            "connected": true, "leader": true, "cid": ["set", []], "index": ["set", []]}))
        .unwrap();
        assert_eq!((s.cid, s.index), (None, None));
        assert!(ServerDbRow::from_json(&json!({"name": "X"})).is_none());
    }

    #[test]
    fn decision_table() {
        let db = "OVN_Northbound";
        for (model, connected, leader, leader_only, want) in [
            ("standalone", true, true, true, Ok(())),
            ("clustered", true, true, true, Ok(())),
            ("clustered", true, false, true, Err(Unusable::NotLeader)),
            ("clustered", true, false, false, Ok(())),
            ("clustered", false, true, true, Err(Unusable::NotConnected)),
            (
                "clustered",
                false,
                false,
                false,
                Err(Unusable::NotConnected),
            ),
            ("relay", true, false, true, Err(Unusable::Relay)),
            ("relay", true, false, false, Ok(())),
        ] {
            let rows = [row(model, connected, leader)];
            assert_eq!(
                choose(&rows, db, leader_only).map(drop),
                want,
                "{model} connected={connected} leader={leader} leader_only={leader_only}"
            );
        }
        assert_eq!(
            choose(&[row("clustered", true, true)], "Other", true).map(drop),
            Err(Unusable::NoDatabase)
        );
    }
}
