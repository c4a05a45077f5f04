//! Splits a byte stream into the JSON values it carries.
//!
//! OVSDB peers send JSON-RPC messages back to back with no delimiter: one read may hold half a
//! message or several. The decoder scans incrementally (each byte is looked at once, however the
//! stream is split), tracking string/escape state so braces inside strings do not count, and
//! refuses any value larger than a configured bound instead of buffering without limit.

use bytes::{Buf, BytesMut};
use serde_json::Value;

/// Default bound on a single JSON value (OVN southbound snapshots can be large).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// Why the decoder refused the stream. The stream cannot be resynchronised afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A value grew beyond the bound before it was complete.
    #[error("JSON value exceeds the maximum frame size of {limit} bytes")]
    TooLarge { limit: usize },
    /// Something other than `{` or `[` starts a top-level value.
    #[error(
        "unexpected byte 0x{byte:02x} at stream offset {offset}: a message must start with '{{' or '['"
    )]
    UnexpectedByte { byte: u8, offset: u64 },
    /// A `}` or `]` with nothing open.
    #[error("unbalanced '{}' at stream offset {offset}", *byte as char)]
    Unbalanced { byte: u8, offset: u64 },
    /// The delimited value is not valid JSON.
    #[error("invalid JSON in frame at stream offset {offset}: {reason}")]
    InvalidJson { offset: u64, reason: String },
    /// The stream ended inside a value.
    #[error("stream ended inside a JSON value ({pending} bytes pending)")]
    Truncated { pending: usize },
}

/// Incremental decoder of concatenated JSON objects/arrays.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    /// Bytes of `buf` already scanned for the current value.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Stream offset of `buf[0]`, for error messages.
    consumed: u64,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that refuses values longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame: max_frame.max(2),
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            consumed: 0,
            failed: None,
        }
    }

    /// Takes the next complete value out of `buf`, if there is one.
    ///
    /// Leading whitespace between values is discarded. After an error every further call
    /// returns the same error: the stream has lost its framing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Value>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.scan(buf) {
            Ok(Some(end)) => {
                let frame = buf.split_to(end);
                let offset = self.consumed;
                self.consumed += end as u64;
                self.scanned = 0;
                match serde_json::from_slice::<Value>(&frame) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => self.fail(FrameError::InvalidJson {
                        offset,
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => self.fail(e),
        }
    }

    /// Call when the stream has ended: errors if a value was cut off.
    pub fn finish(&mut self, buf: &BytesMut) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let pending = buf.iter().filter(|b| !b.is_ascii_whitespace()).count();
        if pending == 0 {
            Ok(())
        } else {
            self.fail(FrameError::Truncated { pending: buf.len() })
        }
    }

    fn fail<T>(&mut self, err: FrameError) -> Result<T, FrameError> {
        self.failed = Some(err.clone());
        Err(err)
    }

    /// Returns the end index (exclusive) of a complete value at the start of `buf`.
    fn scan(&mut self, buf: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        if self.depth == 0 && self.scanned == 0 {
            let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            buf.advance(ws);
            self.consumed += ws as u64;
            if buf.is_empty() {
                return Ok(None);
            }
        }
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        if self.depth == 0 {
                            return Err(FrameError::Unbalanced {
                                byte: b,
                                offset: self.consumed + i as u64,
                            });
                        }
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Ok(Some(i + 1));
                        }
                    }
                    _ if self.depth == 0 => {
                        return Err(FrameError::UnexpectedByte {
                            byte: b,
                            offset: self.consumed + i as u64,
                        });
                    }
                    _ => {}
                }
            }
            i += 1;
            if i > self.max_frame {
                return Err(FrameError::TooLarge {
                    limit: self.max_frame,
                });
            }
        }
        self.scanned = i;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode_all(chunks: &[&[u8]], max: usize) -> Result<Vec<Value>, FrameError> {
        let mut d = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(v) = d.decode(&mut buf)? {
                out.push(v);
            }
        }
        d.finish(&buf)?;
        Ok(out)
    }

    #[test]
    fn several_values_in_one_read() {
        let got = decode_all(&[br#"{"a":1}{"b":[2,3]} [4]"#], 1024).unwrap();
        assert_eq!(got, vec![json!({"a":1}), json!({"b":[2,3]}), json!([4])]);
    }

    #[test]
    fn braces_and_escapes_inside_strings_do_not_count() {
        let text = br#"{"s":"}{\"]\\","t":"\\"}{"u":"[["}"#;
        for split in 0..text.len() {
            let got = decode_all(&[&text[..split], &text[split..]], 1024).unwrap();
            assert_eq!(
                got,
                vec![json!({"s":"}{\"]\\","t":"\\"}), json!({"u":"[["})],
                "split at {split}"
            );
        }
    }

    #[test]
    fn byte_by_byte() {
        let text = br#"{"id":1,"method":"echo","params":["x{"]}"#;
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let got = decode_all(&chunks, 1024).unwrap();
        assert_eq!(got, vec![json!({"id":1,"method":"echo","params":["x{"]})]);
    }

    #[test]
    fn too_large_is_refused_before_the_value_completes() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&br#"{"aaaaaaaaaaaaaaaaaaaaaaa"#[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::TooLarge { limit: 16 }));
        // The decoder stays failed.
        buf.extend_from_slice(b"}");
        assert!(d.decode(&mut buf).is_err());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(matches!(
            decode_all(&[b"hello"], 64),
            Err(FrameError::UnexpectedByte {
                byte: b'h',
                offset: 0
            })
        ));
        assert!(matches!(
            decode_all(&[b"{} ]"], 64),
            Err(FrameError::Unbalanced {
                byte: b']',
                offset: 3
            })
        ));
        assert!(matches!(
            decode_all(&[b"{\"a\":1"], 64),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            decode_all(&[b"{\"a\" 1}"], 64),
            Err(FrameError::InvalidJson { offset: 0, .. })
        ));
        assert!(matches!(
            decode_all(&[b"[1,]"], 64),
            Err(FrameError::InvalidJson { .. })
        ));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~\\\\\"{}\\[\\]é\u{1F600}]{0,12}".prop_map(Value::String),
        ];
        let inner = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z{}\"]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_values(
            values in prop::collection::vec(json_value(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            pretty in any::<bool>(),
        ) {
            let mut text = Vec::new();
            for v in &values {
                if pretty {
                    text.extend(serde_json::to_vec_pretty(v).unwrap());
                    text.push(b'\n');
                } else {
                    text.extend(serde_json::to_vec(v).unwrap());
                }
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&text[last..p]);
                last = p;
            }
            chunks.push(&text[last..]);
            prop_assert_eq!(decode_all(&chunks, 1 << 20).unwrap(), values);
        }

        #[test]
        fn garbage_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let _ = decode_all(&[&bytes[..at], &bytes[at..]], 128);
        }

        #[test]
        fn truncated_values_are_reported(v in json_value(), cut in any::<prop::sample::Index>()) {
            let text = serde_json::to_vec(&v).unwrap();
            let at = cut.index(text.len());
            prop_assume!(at > 0);
            let r = decode_all(&[&text[..at]], 1 << 20);
            prop_assert!(matches!(r, Err(FrameError::Truncated { .. })), "{:?}", r);
        }
    }
}
