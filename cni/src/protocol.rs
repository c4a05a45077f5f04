//! The plugin <-> node agent protocol.
//!
//! Transport: a unix stream socket (default [`crate::netconf::DEFAULT_SERVER_SOCKET`]).
//! One connection carries exactly one exchange: the plugin writes one request frame, the
//! agent writes one response frame, then either side closes.
//!
//! Framing: a frame is one compact JSON document followed by `\n`. Compact JSON never
//! contains a raw newline (they are escaped inside strings), so the newline delimits it.
//! Frames are at most [`MAX_FRAME_BYTES`]. `encode_*`/`decode_*` are pure and independent of
//! the I/O runtime, so an async agent can use them with its own reader (e.g. read until
//! `\n` with a size cap); [`read_frame`], [`call`] and [`serve`] are blocking helpers.
//!
//! Compatibility: unknown fields are ignored and new fields are optional, so either side can
//! be upgraded first; an unknown `op` is answered with an error by the agent.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{CniError, CniResult};

/// Largest frame either side accepts (the raw netconf rides along, so allow some room).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Kubernetes identity of the pod, from `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_container_id: Option<String>,
}

/// vhost-user attachment keys of the netconf (Kube-OVN names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VhostUser {
    /// `vhost_user_socket_volume_name`: the pod's emptyDir volume holding the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_volume_name: Option<String>,
    /// `vhost_user_socket_name`: the socket's file name inside that volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_name: Option<String>,
    /// `vhost_user_socket_consumption` (e.g. `kubevirt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_consumption: Option<String>,
}

/// An attachment is identified by `(container id, interface name)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

/// ADD / DEL / CHECK of one attachment, in interface or IPAM-only mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRequest {
    /// The CNI version the runtime asked for (informational: the plugin converts results).
    pub cni_version: String,
    /// The netconf `name`.
    pub network: String,
    pub container_id: String,
    /// `CNI_NETNS`; may be absent on DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub ifname: String,
    /// From `CNI_ARGS`; always present on ADD, possibly absent on DEL/CHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// IPAM-only mode: `ipam.subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// SR-IOV device (PCI address) from `runtimeConfig.deviceID` or `deviceID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<VhostUser>,
    /// Every `CNI_ARGS` pair as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cni_args: BTreeMap<String, String>,
    /// CHECK (always) and DEL (when the runtime has one): the ADD result, validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<CniResult>,
    /// The network configuration exactly as the runtime sent it.
    pub netconf: Value,
}

impl AttachmentRequest {
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// GC: release everything of `network` not in `valid_attachments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcRequest {
    pub cni_version: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// True when the plugin runs as an IPAM plugin for this network.
    #[serde(default)]
    pub ipam_only: bool,
    pub valid_attachments: Vec<AttachmentKey>,
    pub netconf: Value,
}

/// STATUS: can the agent serve ADD now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub cni_version: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default)]
    pub ipam_only: bool,
    pub netconf: Value,
}

/// One request frame: `{"op":"add", ...AttachmentRequest fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create and plumb the interface; reply with the result once traffic can flow.
    Add(AttachmentRequest),
    /// Remove what ADD made. Unknown attachments must succeed (DEL is idempotent).
    Del(AttachmentRequest),
    /// Verify the attachment against `prev_result`.
    Check(AttachmentRequest),
    /// IPAM-only: allocate addresses; reply with ips/routes/dns (no interfaces).
    IpamAdd(AttachmentRequest),
    /// IPAM-only: release the allocation. Unknown must succeed.
    IpamDel(AttachmentRequest),
    /// IPAM-only: verify the allocation still exists.
    IpamCheck(AttachmentRequest),
    Gc(GcRequest),
    Status(StatusRequest),
}

impl Request {
    /// The attachment of add/del/check and their ipam_* forms; `None` for gc/status.
    pub fn attachment(&self) -> Option<&AttachmentRequest> {
        match self {
            Request::Add(a)
            | Request::Del(a)
            | Request::Check(a)
            | Request::IpamAdd(a)
            | Request::IpamDel(a)
            | Request::IpamCheck(a) => Some(a),
            Request::Gc(_) | Request::Status(_) => None,
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            Request::Add(_) => "add",
            Request::Del(_) => "del",
            Request::Check(_) => "check",
            Request::IpamAdd(_) => "ipam_add",
            Request::IpamDel(_) => "ipam_del",
            Request::IpamCheck(_) => "ipam_check",
            Request::Gc(_) => "gc",
            Request::Status(_) => "status",
        }
    }
}

/// The agent's structured error; the plugin prints it 1:1 as the CNI error.
/// Use the well-known CNI codes where they fit (3 unknown container, 7 invalid config,
/// 11 try again later, 50/51 for STATUS) and 110..=199 for the agent's own conditions.
pub type AgentError = CniError;

/// One response frame: `{"ok":{"result":{...}}}` or `{"error":{"code":..,"msg":..,"details":..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok {
        /// ADD and IPAM_ADD: the attachment in CNI 1.1.0 result shape (without cniVersion).
        /// Interfaces carry their MAC and MTU; `ips[].interface` indexes `interfaces`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<CniResult>,
    },
    Error(AgentError),
}

impl Response {
    pub fn ok() -> Response {
        Response::Ok { result: None }
    }
    pub fn with_result(result: CniResult) -> Response {
        Response::Ok {
            result: Some(result),
        }
    }
    pub fn error(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Response {
        Response::Error(CniError::new(code, msg, details))
    }
}

/// Codec and transport failures.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame exceeds {MAX_FRAME_BYTES} bytes")]
    FrameTooLarge,
    #[error("connection closed before a complete frame")]
    Closed,
    #[error("frame is not a valid {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = serde_json::to_vec(v).map_err(|source| ProtocolError::Encode { what, source })?;
    if buf.len() >= MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge);
    }
    buf.push(b'\n');
    Ok(buf)
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    frame: &[u8],
) -> Result<T, ProtocolError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge);
    }
    let body = frame.strip_suffix(b"\n").unwrap_or(frame);
    serde_json::from_slice(body).map_err(|source| ProtocolError::Decode { what, source })
}

/// Encode a request as one frame (JSON + `\n`).
pub fn encode_request(req: &Request) -> Result<Vec<u8>, ProtocolError> {
    encode("request", req)
}

/// Decode one request frame (the trailing `\n` is optional).
pub fn decode_request(frame: &[u8]) -> Result<Request, ProtocolError> {
    decode("request", frame)
}

/// Encode a response as one frame (JSON + `\n`).
pub fn encode_response(resp: &Response) -> Result<Vec<u8>, ProtocolError> {
    encode("response", resp)
}

/// Decode one response frame (the trailing `\n` is optional).
pub fn decode_response(frame: &[u8]) -> Result<Response, ProtocolError> {
    decode("response", frame)
}

/// For incremental readers: the length of the first complete frame in `buf` (including its
/// `\n`), `Ok(None)` if more bytes are needed, or an error once `buf` exceeds the cap
/// without a frame end.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_FRAME_BYTES => Ok(Some(i + 1)),
        Some(_) => Err(ProtocolError::FrameTooLarge),
        None if buf.len() >= MAX_FRAME_BYTES => Err(ProtocolError::FrameTooLarge),
        None => Ok(None),
    }
}

/// The answer an agent gives to a frame that does not decode as a [`Request`] (code 6), so
/// every agent implementation reports it the same way.
pub fn undecodable_request_response(err: &ProtocolError) -> Response {
    Response::error(
        crate::spec::code::DECODE_FAILURE,
        "node agent could not decode the request",
        err.to_string(),
    )
}

/// Blocking: read one frame. A frame cut short by EOF is accepted if non-empty.
pub fn read_frame<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_FRAME_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(ProtocolError::Closed);
    }
    if buf.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge);
    }
    Ok(buf)
}

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nobody listens: the socket is missing or refuses connections (agent down/restarting).
    #[error("node agent not reachable at {socket}: {source}")]
    Unavailable {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The agent accepted the request but closed without answering (crash / restart).
    #[error("node agent at {socket} closed the connection without answering")]
    Hangup { socket: PathBuf },
    #[error("node agent at {socket} did not answer within {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("i/o with node agent at {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("node agent at {socket} broke the protocol: {source}")]
    Protocol {
        socket: PathBuf,
        #[source]
        source: ProtocolError,
    },
}

/// Blocking client: one request, one response, bounded by `timeout` for the whole exchange
/// after connecting. (Connecting to a unix socket either succeeds or fails at once unless
/// the listen backlog is full; callers wanting a hard bound on that too run this on a
/// thread, as the plugin binary does.)
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let started = Instant::now();
    let frame = encode_request(request).map_err(|source| CallError::Protocol {
        socket: socket.to_path_buf(),
        source,
    })?;
    let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CallError::Unavailable {
            socket: socket.to_path_buf(),
            source,
        },
        _ => CallError::Io {
            socket: socket.to_path_buf(),
            source,
        },
    })?;
    let timed_out = || CallError::Timeout {
        socket: socket.to_path_buf(),
        timeout,
    };
    let remaining = || {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    };
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => CallError::Hangup {
            socket: socket.to_path_buf(),
        },
        _ => CallError::Io {
            socket: socket.to_path_buf(),
            source,
        },
    };
    stream
        .set_write_timeout(Some(remaining().ok_or_else(timed_out)?))
        .map_err(io_err)?;
    (&stream).write_all(&frame).map_err(io_err)?;

    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining().ok_or_else(timed_out)?))
            .map_err(io_err)?;
        let n = match (&stream).read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            if buf.is_empty() {
                return Err(CallError::Hangup {
                    socket: socket.to_path_buf(),
                });
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        match frame_len(&buf) {
            Ok(Some(len)) => {
                buf.truncate(len);
                break;
            }
            Ok(None) => {}
            Err(source) => {
                return Err(CallError::Protocol {
                    socket: socket.to_path_buf(),
                    source,
                });
            }
        }
    }
    decode_response(&buf).map_err(|source| CallError::Protocol {
        socket: socket.to_path_buf(),
        source,
    })
}

/// Blocking server side of one connection: read a request, answer with `handler`'s response.
/// A request that does not decode is answered with a decode error (code 6).
pub fn serve_connection(
    stream: UnixStream,
    handler: impl FnOnce(Request) -> Response,
) -> Result<(), ProtocolError> {
    let mut reader = BufReader::new(&stream);
    let frame = read_frame(&mut reader)?;
    let response = match decode_request(&frame) {
        Ok(req) => handler(req),
        Err(e) => undecodable_request_response(&e),
    };
    (&stream).write_all(&encode_response(&response)?)?;
    Ok(())
}

/// Blocking accept loop, one thread per connection. Returns when `accept` fails.
/// Meant for tests and simple agents; an async agent uses the codec directly.
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Fn(Request) -> Response + Send + Sync>,
) -> io::Error {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || {
                    // A client that disconnects early is its own problem; nothing to report.
                    let _ = serve_connection(stream, |req| handler(req));
                });
            }
            Err(e) => return e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CniResult, Interface, IpConfig};
    use serde_json::json;

    fn add_request() -> Request {
        Request::Add(AttachmentRequest {
            cni_version: "1.1.0".into(),
            network: "ovn".into(),
            container_id: "c1".into(),
            netns: Some("/run/netns/p1".into()),
            ifname: "eth0".into(),
            pod: Some(PodIdentity {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: None,
                infra_container_id: Some("c1".into()),
            }),
            provider: None,
            subnet: None,
            device_id: None,
            mtu: Some(1400),
            vhost_user: None,
            cni_args: BTreeMap::new(),
            prev_result: None,
            netconf: json!({"cniVersion": "1.1.0", "note": "line\nbreak"}),
        })
    }

    #[test]
    fn request_frame_is_one_line_and_round_trips() {
        let req = add_request();
        let frame = encode_request(&req).unwrap();
        assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(frame.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["op"], "add");
        assert_eq!(v["pod"]["name"], "web-0");
        assert_eq!(decode_request(&frame).unwrap(), req);
    }

    #[test]
    fn response_shapes() {
        let r = Response::with_result(CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:00:00:00:00:01".into()),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                address: "10.16.0.5/16".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..CniResult::default()
        });
        let frame = encode_response(&r).unwrap();
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["ok"]["result"]["ips"][0]["address"], "10.16.0.5/16");
        assert_eq!(decode_response(&frame).unwrap(), r);
        let e = Response::error(3, "unknown", "");
        let v: Value = serde_json::from_slice(&encode_response(&e).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": 3, "msg": "unknown", "details": ""}})
        );
        assert_eq!(decode_response(b"{\"ok\":{}}").unwrap(), Response::ok());
    }

    #[test]
    fn decoding_rejects_garbage_and_bad_results() {
        assert!(decode_response(b"not json").is_err());
        assert!(decode_response(b"{\"ok\":{\"result\":{\"ips\":[{\"address\":\"x\"}]}}}").is_err());
        assert!(decode_request(b"{\"op\":\"explode\"}").is_err());
    }

    #[test]
    fn the_documented_examples_decode() {
        // Kept in sync with docs/cni.md.
        let status = br#"{"op":"status","cni_version":"1.1.0","network":"ferrovn","netconf":{}}"#;
        assert!(matches!(
            decode_request(status).unwrap(),
            Request::Status(_)
        ));
        let add =
            br#"{"op":"add","cni_version":"1.1.0","network":"ferrovn","container_id":"3f2a9c0d1e",
 "netns":"/var/run/netns/cni-3f2a9c0d1e","ifname":"eth0",
 "pod":{"namespace":"default","name":"web-0","uid":"6b1c-44","infra_container_id":"3f2a9c0d1e"},
 "provider":"ovn","mtu":1400,
 "vhost_user":{"socket_volume_name":"vhostuser-sockets","socket_name":"sock0"},
 "device_id":"0000:04:00.5",
 "cni_args":{"IgnoreUnknown":"1","K8S_POD_NAME":"web-0","K8S_POD_NAMESPACE":"default"},
 "netconf":{"cniVersion":"1.1.0","name":"ferrovn","type":"ferrovn-cni","provider":"ovn"}}"#;
        let Request::Add(r) = decode_request(add).unwrap() else {
            panic!("not an add")
        };
        assert_eq!(r.device_id.as_deref(), Some("0000:04:00.5"));
        let ok = br#"{"ok":{"result":{
  "interfaces":[{"name":"3f2a9c0d_h","mac":"ee:ee:ee:00:00:01"},
                {"name":"eth0","mac":"0a:58:0a:10:00:05","mtu":1400,"sandbox":"/var/run/netns/cni-3f2a9c0d1e"}],
  "ips":[{"address":"10.16.0.5/16","gateway":"10.16.0.1","interface":1}],
  "routes":[{"dst":"0.0.0.0/0","gw":"10.16.0.1"}],
  "dns":{"nameservers":["10.96.0.10"]}}}}"#;
        let Response::Ok { result: Some(res) } = decode_response(ok).unwrap() else {
            panic!("not ok with result")
        };
        assert_eq!(res.ips[0].interface, Some(1));
        let err = br#"{"error":{"code":113,"msg":"port not installed by OVN","details":"..."}}"#;
        assert!(matches!(decode_response(err).unwrap(), Response::Error(e) if e.code == 113));
    }

    #[test]
    fn frame_len_finds_frames_and_caps_size() {
        assert_eq!(frame_len(b"{}").unwrap(), None);
        assert_eq!(frame_len(b"{}\n{}").unwrap(), Some(3));
        let big = vec![b'x'; MAX_FRAME_BYTES];
        assert!(matches!(frame_len(&big), Err(ProtocolError::FrameTooLarge)));
    }

    #[test]
    fn blocking_client_and_server_talk() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("a.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            serve(
                listener,
                Arc::new(|req: Request| Response::error(110, req.op(), "seen")),
            )
        });
        let resp = call(&sock, &add_request(), Duration::from_secs(5)).unwrap();
        assert_eq!(resp, Response::error(110, "add", "seen"));
    }

    #[test]
    fn server_answers_garbage_with_decode_error() {
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("g.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || serve(listener, Arc::new(|_req: Request| Response::ok())));
        let s = UnixStream::connect(&sock).unwrap();
        (&s).write_all(b"{\"op\":\"explode\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let resp = decode_response(line.as_bytes()).unwrap();
        assert!(matches!(resp, Response::Error(e) if e.code == 6), "{line}");
    }

    #[test]
    fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = call(
            &dir.path().join("none.sock"),
            &add_request(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, CallError::Unavailable { .. }), "{err}");
    }
}
