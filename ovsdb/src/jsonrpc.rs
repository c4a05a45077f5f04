//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 section 4).
//!
//! Ids may be any JSON value: we send numbers, but the server's own requests (`echo`) and
//! other peers' ids are echoed back verbatim.

use serde_json::{Map, Value, json};

/// One JSON-RPC 1.0 message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a response with the same id.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A call without an id (`"id": null`): `update`, `update2`, `update3`, `locked`, `stolen`.
    Notification { method: String, params: Value },
    /// The answer to a request: exactly one of `result` / `error` is non-null.
    Response {
        id: Value,
        result: Value,
        error: Value,
    },
}

impl Message {
    /// Classifies a decoded JSON value; `Err` carries the reason it is not a message.
    pub fn from_value(value: Value) -> Result<Message, String> {
        let Value::Object(mut obj) = value else {
            return Err("message is not a JSON object".into());
        };
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err("\"method\" is not a string".into());
            };
            let params = obj.remove("params").unwrap_or(Value::Array(Vec::new()));
            return match obj.remove("id") {
                None | Some(Value::Null) => Ok(Message::Notification { method, params }),
                Some(id) => Ok(Message::Request { id, method, params }),
            };
        }
        if !obj.contains_key("result") && !obj.contains_key("error") {
            return Err("object has neither \"method\" nor \"result\"/\"error\"".into());
        }
        let Some(id) = obj.remove("id") else {
            return Err("response without \"id\"".into());
        };
        Ok(Message::Response {
            id,
            result: obj.remove("result").unwrap_or(Value::Null),
            error: obj.remove("error").unwrap_or(Value::Null),
        })
    }

    /// The wire form.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                json!({"id": id, "method": method, "params": params})
            }
            Message::Notification { method, params } => {
                json!({"id": null, "method": method, "params": params})
            }
            Message::Response { id, result, error } => {
                json!({"id": id, "result": result, "error": error})
            }
        }
    }

    /// Serialises to bytes ready for the socket.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a `Value` cannot fail (all keys are strings).
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

/// Splits an OVSDB error object into (`error`, `details`).
pub fn error_parts(error: &Value) -> (String, Option<String>) {
    match error {
        Value::String(s) => (s.clone(), None),
        Value::Object(m) => {
            let kind = m
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| Value::Object(m.clone()).to_string());
            let details = m.get("details").and_then(Value::as_str).map(str::to_owned);
            (kind, details)
        }
        other => (other.to_string(), None),
    }
}

/// Builds `{"error": .., "details": ..}` as ovsdb-server does.
pub fn error_object(error: &str, details: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), Value::String(error.into()));
    if let Some(d) = details {
        m.insert("details".into(), Value::String(d.into()));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert_eq!(
            Message::from_value(json!({"id": "x", "method": "echo", "params": []})),
            Ok(Message::Request {
                id: json!("x"),
                method: "echo".into(),
                params: json!([])
            })
        );
        assert_eq!(
            Message::from_value(json!({"id": null, "method": "update2", "params": [1, {}]})),
            Ok(Message::Notification {
                method: "update2".into(),
                params: json!([1, {}])
            })
        );
        assert_eq!(
            Message::from_value(json!({"id": [1, "a"], "result": null, "error": {"error": "e"}})),
            Ok(Message::Response {
                id: json!([1, "a"]),
                result: Value::Null,
                error: json!({"error": "e"})
            })
        );
        assert!(Message::from_value(json!([1])).is_err());
        assert!(Message::from_value(json!({"method": 5})).is_err());
        assert!(Message::from_value(json!({"result": 1})).is_err());
        assert!(Message::from_value(json!({"foo": 1})).is_err());
    }

    #[test]
    fn round_trips() {
        for m in [
            Message::Request {
                id: json!(7),
                method: "transact".into(),
                params: json!(["db", {"op": "comment", "comment": "x"}]),
            },
            Message::Notification {
                method: "locked".into(),
                params: json!(["l"]),
            },
            Message::Response {
                id: json!({"k": 1}),
                result: json!([]),
                error: Value::Null,
            },
        ] {
            let back: Value = serde_json::from_slice(&m.to_bytes()).unwrap();
            assert_eq!(Message::from_value(back), Ok(m));
        }
    }

    #[test]
    fn error_parts_reads_ovsdb_errors() {
        assert_eq!(
            error_parts(&json!({"error": "unknown database", "details": "no db X"})),
            ("unknown database".into(), Some("no db X".into()))
        );
        assert_eq!(
            error_parts(&json!("not leader")),
            ("not leader".into(), None)
        );
    }
}
