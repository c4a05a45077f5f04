//! One JSON-RPC session over one socket: many requests in flight, server echo answered,
//! our own inactivity probe, notifications handed to a channel.
//!
//! A [`Connection`] never reconnects; when the socket dies every request in flight fails with
//! the reason and the notification channel ends. [`crate::client::Client`] builds reconnection,
//! Raft leader following and monitor resumption on top of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::framing::{DEFAULT_MAX_FRAME, FrameDecoder};
use crate::jsonrpc::{Message, error_object, error_parts};
use crate::transport::{BoxedStream, Remote};

/// Knobs of a single connection.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Send an `echo` after this long without receiving anything, and give up on the peer when
    /// the next interval passes in silence too. `None` disables our probe (the server's echo is
    /// still answered). ovsdb-server's own default is 5 s.
    pub probe_interval: Option<Duration>,
    /// Largest JSON value accepted from the peer.
    pub max_frame: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            probe_interval: Some(Duration::from_secs(5)),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A message the server sent without expecting an answer (`update2`, `locked`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// JSON-RPC messages received.
    pub messages_received: u64,
    /// `echo` requests from the server that we answered.
    pub server_echoes_answered: u64,
    /// Inactivity probes we sent.
    pub probes_sent: u64,
}

/// Receiving end of a connection's notifications; ends when the connection closes.
pub type Notifications = mpsc::UnboundedReceiver<Notification>;

type Reply = oneshot::Sender<Result<Value>>;

struct Pending {
    calls: HashMap<u64, (String, Reply)>,
    closed: Option<Error>,
}

struct Shared {
    remote: String,
    messages_received: AtomicU64,
    server_echoes_answered: AtomicU64,
    probes_sent: AtomicU64,
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    cancel: CancellationToken,
    closed_tx: watch::Sender<Option<Error>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_with(&self, err: Error) {
        let drained: Vec<(String, Reply)> = {
            let mut p = self.lock();
            if p.closed.is_none() {
                p.closed = Some(err.clone());
            }
            p.calls.drain().map(|(_, v)| v).collect()
        };
        for (_, reply) in drained {
            let _ = reply.send(Err(err.clone()));
        }
        self.closed_tx.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(err.clone());
                true
            } else {
                false
            }
        });
        self.cancel.cancel();
    }
}

/// Cancels the I/O tasks when the last handle goes away.
struct DropGuard(CancellationToken);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A cheap, cloneable handle to one live JSON-RPC connection.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    closed_rx: watch::Receiver<Option<Error>>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.shared.remote)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `remote` and starts the I/O tasks (needs a tokio runtime).
    pub async fn connect(
        remote: &Remote,
        options: &ConnectionOptions,
    ) -> Result<(Connection, Notifications)> {
        let stream = remote.connect().await?;
        Ok(Connection::from_stream(stream, remote.to_string(), options))
    }

    /// Runs the protocol over an already open stream (tests use in-memory pipes).
    pub fn from_stream(
        stream: BoxedStream,
        remote: String,
        options: &ConnectionOptions,
    ) -> (Connection, Notifications) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            remote,
            messages_received: AtomicU64::new(0),
            server_echoes_answered: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending {
                calls: HashMap::new(),
                closed: None,
            }),
            out: out_tx,
            cancel: cancel.clone(),
            closed_tx,
        });
        let (reader, writer) = tokio::io::split(stream);
        tokio::spawn(write_loop(writer, out_rx, shared.clone()));
        tokio::spawn(read_loop(reader, shared.clone(), note_tx, options.clone()));
        (
            Connection {
                shared,
                closed_rx,
                _guard: Arc::new(DropGuard(cancel)),
            },
            note_rx,
        )
    }

    /// The remote this connection talks to.
    pub fn remote(&self) -> &str {
        &self.shared.remote
    }

    /// Message counters.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            messages_received: self.shared.messages_received.load(Ordering::Relaxed),
            server_echoes_answered: self.shared.server_echoes_answered.load(Ordering::Relaxed),
            probes_sent: self.shared.probes_sent.load(Ordering::Relaxed),
        }
    }

    /// True once the connection is dead.
    pub fn is_closed(&self) -> bool {
        self.closed_rx.borrow().is_some()
    }

    /// Resolves with the reason once the connection is dead.
    pub async fn closed(&self) -> Error {
        let mut rx = self.closed_rx.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Error::Disconnected {
                    remote: self.shared.remote.clone(),
                };
            }
        }
    }

    /// Closes the socket; requests in flight fail with `Disconnected`.
    pub fn close(&self) {
        self.shared.close_with(Error::Disconnected {
            remote: self.shared.remote.clone(),
        });
    }

    /// Sends a request and waits for its response. Any number may be in flight at once; the
    /// request is written when the returned future is first polled.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Message::Request {
            id: Value::from(id),
            method: method.to_owned(),
            params,
        }
        .to_bytes();
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.lock();
            if let Some(err) = &p.closed {
                return Err(err.clone());
            }
            p.calls.insert(id, (method.to_owned(), tx));
        }
        // Remove the entry if the caller gives up (drops this future) before the answer.
        let cleanup = PendingCleanup {
            shared: &self.shared,
            id,
        };
        if self.shared.out.send(bytes).is_err() {
            return Err(self.closed_error());
        }
        let result = match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        };
        std::mem::forget(cleanup);
        result
    }

    /// Like [`Connection::call`] but fails with `Timeout` after `after`.
    pub async fn call_timeout(
        &self,
        method: &str,
        params: Value,
        after: Duration,
    ) -> Result<Value> {
        match tokio::time::timeout(after, self.call(method, params)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method: method.to_owned(),
                after,
            }),
        }
    }

    /// Sends a notification (no answer expected).
    pub fn notify(&self, method: &str, params: Value) -> Result<()> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let bytes = Message::Notification {
            method: method.to_owned(),
            params,
        }
        .to_bytes();
        self.shared.out.send(bytes).map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        self.shared
            .lock()
            .closed
            .clone()
            .unwrap_or_else(|| Error::Disconnected {
                remote: self.shared.remote.clone(),
            })
    }
}

struct PendingCleanup<'a> {
    shared: &'a Shared,
    id: u64,
}
impl Drop for PendingCleanup<'_> {
    fn drop(&mut self) {
        self.shared.lock().calls.remove(&self.id);
    }
}

async fn write_loop(
    mut writer: tokio::io::WriteHalf<BoxedStream>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            m = rx.recv() => m,
        };
        let Some(first) = first else { break };
        batch.clear();
        batch.extend_from_slice(&first);
        // Coalesce whatever else is queued into one write.
        while batch.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(m) => batch.extend_from_slice(&m),
                Err(_) => break,
            }
        }
        let res = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            r = writer.write_all(&batch) => r,
        };
        if let Err(e) = res {
            shared.close_with(Error::Io {
                remote: shared.remote.clone(),
                reason: e.to_string(),
            });
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop(
    mut reader: tokio::io::ReadHalf<BoxedStream>,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedSender<Notification>,
    options: ConnectionOptions,
) {
    let err = read_loop_inner(&mut reader, &shared, &notes, &options).await;
    tracing::debug!(remote = %shared.remote, error = %err, "connection closed");
    shared.close_with(err);
}

async fn read_loop_inner(
    reader: &mut tokio::io::ReadHalf<BoxedStream>,
    shared: &Arc<Shared>,
    notes: &mpsc::UnboundedSender<Notification>,
    options: &ConnectionOptions,
) -> Error {
    let remote = &shared.remote;
    let mut decoder = FrameDecoder::new(options.max_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut last_rx = Instant::now();
    let mut probe_sent: Option<Instant> = None;
    let far = Duration::from_secs(86400 * 365);
    loop {
        let deadline = match (options.probe_interval, probe_sent) {
            (None, _) => Instant::now() + far,
            (Some(i), Some(sent)) => sent + i,
            (Some(i), None) => last_rx + i,
        };
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            _ = shared.cancel.cancelled() => {
                return Error::Disconnected { remote: remote.clone() };
            }
            _ = tokio::time::sleep_until(deadline) => {
                let Some(interval) = options.probe_interval else { continue };
                if probe_sent.is_some() {
                    return Error::ProbeTimeout { remote: remote.clone(), interval };
                }
                probe_sent = Some(Instant::now());
                shared.probes_sent.fetch_add(1, Ordering::Relaxed);
                let probe = Message::Request {
                    id: Value::String("ferrovn-probe".into()),
                    method: "echo".into(),
                    params: Value::Array(Vec::new()),
                };
                let _ = shared.out.send(probe.to_bytes());
                continue;
            }
            r = reader.read_buf(&mut buf) => r,
        };
        match n {
            Ok(0) => {
                if let Err(e) = decoder.finish(&buf) {
                    return Error::Frame {
                        remote: remote.clone(),
                        source: e,
                    };
                }
                return Error::Disconnected {
                    remote: remote.clone(),
                };
            }
            Ok(_) => {}
            Err(e) => {
                return Error::Io {
                    remote: remote.clone(),
                    reason: e.to_string(),
                };
            }
        }
        last_rx = Instant::now();
        probe_sent = None;
        loop {
            let value = match decoder.decode(&mut buf) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => {
                    return Error::Frame {
                        remote: remote.clone(),
                        source: e,
                    };
                }
            };
            let msg = match Message::from_value(value) {
                Ok(m) => m,
                Err(reason) => {
                    return Error::Protocol {
                        remote: remote.clone(),
                        reason,
                    };
                }
            };
            dispatch(shared, notes, msg);
        }
    }
}

fn dispatch(shared: &Shared, notes: &mpsc::UnboundedSender<Notification>, msg: Message) {
    shared.messages_received.fetch_add(1, Ordering::Relaxed);
    match msg {
        Message::Response { id, result, error } => {
            let Some(id) = id.as_u64() else {
                // Our probe's answer, or an id we never sent: nothing waits for it.
                return;
            };
            let entry = shared.lock().calls.remove(&id);
            let Some((method, reply)) = entry else {
                tracing::debug!(remote = %shared.remote, id, "response to unknown request");
                return;
            };
            let outcome = if error.is_null() {
                Ok(result)
            } else {
                let (kind, details) = error_parts(&error);
                Err(Error::Rpc {
                    method,
                    error: kind,
                    details,
                    raw: error,
                })
            };
            let _ = reply.send(outcome);
        }
        Message::Request { id, method, params } => {
            let reply = if method == "echo" {
                shared
                    .server_echoes_answered
                    .fetch_add(1, Ordering::Relaxed);
                Message::Response {
                    id,
                    result: params,
                    error: Value::Null,
                }
            } else {
                Message::Response {
                    id,
                    result: Value::Null,
                    error: error_object("unknown method", Some(&method)),
                }
            };
            let _ = shared.out.send(reply.to_bytes());
        }
        Message::Notification { method, params } => {
            let _ = notes.send(Notification { method, params });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pair(opts: ConnectionOptions) -> (Connection, Notifications, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (c, n) = Connection::from_stream(Box::pin(a), "test".into(), &opts);
        (c, n, b)
    }

    async fn read_value(
        peer: &mut DuplexStream,
        dec: &mut FrameDecoder,
        buf: &mut BytesMut,
    ) -> Value {
        loop {
            if let Some(v) = dec.decode(buf).unwrap() {
                return v;
            }
            let n = peer.read_buf(buf).await.unwrap();
            assert!(n > 0, "peer closed");
        }
    }

    #[tokio::test]
    async fn answers_server_echo_and_routes_notifications_and_errors() {
        let (conn, mut notes, mut peer) = pair(ConnectionOptions::default());
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        // Server echo with a string id, a notification and the start of a response, split oddly.
        peer.write_all(br#"{"id":"echo","method":"echo","params":["x"]}{"id":null,"met"#)
            .await
            .unwrap();
        peer.write_all(br#"hod":"update2","params":["m",{}]}"#)
            .await
            .unwrap();
        let echo = read_value(&mut peer, &mut dec, &mut buf).await;
        assert_eq!(echo, json!({"id":"echo","result":["x"],"error":null}));
        let n = notes.recv().await.unwrap();
        assert_eq!(n.method, "update2");

        let c2 = conn.clone();
        let call = tokio::spawn(async move { c2.call("get_schema", json!(["nope"])).await });
        let req = read_value(&mut peer, &mut dec, &mut buf).await;
        let id = req["id"].clone();
        assert_eq!(req["method"], "get_schema");
        let resp = json!({"id": id, "result": null, "error": {"error": "unknown database", "details": "nope"}});
        peer.write_all(resp.to_string().as_bytes()).await.unwrap();
        let got = call.await.unwrap();
        assert!(
            matches!(&got, Err(Error::Rpc { error, details: Some(d), .. }) if error == "unknown database" && d == "nope"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn garbage_fails_requests_in_flight_without_panicking() {
        let (conn, mut notes, mut peer) = pair(ConnectionOptions::default());
        let c2 = conn.clone();
        let call = tokio::spawn(async move { c2.call("list_dbs", json!([])).await });
        tokio::task::yield_now().await;
        peer.write_all(b"{\"id\":1,\"result\":[]}}").await.unwrap();
        let r = call.await.unwrap();
        // Either the response arrived first (then the stray brace kills the connection) or not.
        let err = conn.closed().await;
        assert!(matches!(err, Error::Frame { .. }), "{err:?}");
        assert!(r.is_ok() || matches!(r, Err(Error::Frame { .. })));
        assert!(notes.recv().await.is_none());
        assert!(matches!(
            conn.call("echo", json!([])).await,
            Err(Error::Frame { .. })
        ));
    }

    #[tokio::test]
    async fn non_rpc_json_is_a_protocol_error() {
        let (conn, _notes, mut peer) = pair(ConnectionOptions::default());
        peer.write_all(b"[1,2,3]").await.unwrap();
        assert!(matches!(conn.closed().await, Error::Protocol { .. }));
    }

    #[tokio::test]
    async fn truncated_stream_is_reported() {
        let (conn, _notes, mut peer) = pair(ConnectionOptions::default());
        peer.write_all(b"{\"id\":1,\"res").await.unwrap();
        drop(peer);
        let err = conn.closed().await;
        assert!(
            matches!(
                err,
                Error::Frame {
                    source: crate::framing::FrameError::Truncated { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_is_declared_dead_after_unanswered_probe() {
        let opts = ConnectionOptions {
            probe_interval: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let (conn, _notes, mut peer) = pair(opts);
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let probe = read_value(&mut peer, &mut dec, &mut buf).await;
        assert_eq!(probe["method"], "echo");
        assert!(!conn.is_closed());
        let err = conn.closed().await;
        assert!(matches!(err, Error::ProbeTimeout { .. }), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn answered_probe_keeps_connection_alive() {
        let opts = ConnectionOptions {
            probe_interval: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let (conn, _notes, mut peer) = pair(opts);
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for _ in 0..5 {
            let probe = read_value(&mut peer, &mut dec, &mut buf).await;
            let resp = json!({"id": probe["id"], "result": [], "error": null});
            peer.write_all(resp.to_string().as_bytes()).await.unwrap();
        }
        assert!(!conn.is_closed());
    }
}
