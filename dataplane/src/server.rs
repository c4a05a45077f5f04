//! The CNI socket: one request frame, one response frame per connection
//! (`ferrovn_cni::protocol`), each connection served on its own tokio task.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrovn_cni::protocol::{self, Request, Response};
use ferrovn_cni::spec::code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::Agent;
use crate::alloc::AllocationSource;

/// Why the CNI socket could not be bound. Every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "CNI socket {path}: a node agent is serving it ({peer}); not replacing a live socket. \
         Stop that agent first, or give this one another --socket"
    )]
    InUse { path: String, peer: String },
    #[error(
        "CNI socket {path}: another node agent holds {lock} (starting up or serving); not \
         replacing its socket"
    )]
    Locked { path: String, lock: String },
    #[error("CNI socket {path} exists and is not a socket ({kind}); not replacing it")]
    NotSocket { path: String, kind: String },
    #[error("CNI socket {path}: {op}: {source}")]
    Io {
        path: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
}

/// The bound CNI socket and the lock that keeps a second agent off it; hold the lock as long
/// as the listener serves.
#[derive(Debug)]
pub struct CniSocket {
    pub listener: UnixListener,
    pub lock: SocketLock,
}

/// An exclusive `flock` of `<socket>.lock`, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SocketLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

impl SocketLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of the socket at `path`: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Who serves a live socket: the peer credentials of a connection to it.
fn describe_peer(stream: &std::os::unix::net::UnixStream) -> String {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        // 0: the server's PID namespace is not visible from ours
        Ok(cred) if cred.pid() == 0 => format!(
            "uid {}, PID not visible from this PID namespace",
            cred.uid()
        ),
        Ok(cred) => {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", cred.pid()))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            if comm.is_empty() {
                format!("PID {}", cred.pid())
            } else {
                format!("PID {} ({comm})", cred.pid())
            }
        }
        Err(e) => format!("peer unknown: SO_PEERCRED: {e}"),
    }
}

/// Whether an agent answers on `path`: `Ok(Some(peer))` when one does, `Ok(None)` when the
/// path is absent or a stale socket (nobody listening).
fn live_peer(path: &Path, shown: &str) -> Result<Option<String>, BindError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BindError::Io {
                path: shown.into(),
                op: "stat".into(),
                source: e,
            });
        }
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symlink"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(BindError::NotSocket {
            path: shown.into(),
            kind: kind.into(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        // the agent reads one frame per connection; closing at once is a no-op to it
        Ok(stream) => Ok(Some(describe_peer(&stream))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(BindError::Io {
            path: shown.into(),
            op: "probing the existing socket".into(),
            source: e,
        }),
    }
}

/// Binds the CNI socket at `path` (creating its directory), mode 0600: only root (the CNI
/// plugin runs as the kubelet, root) may connect.
///
/// A second agent never steals a live socket: under an exclusive lock of `<path>.lock`, an
/// existing socket that someone answers on is refused ([`BindError::InUse`], naming the
/// serving PID); only a stale one (a crashed agent's, nobody listening) is replaced. Anything
/// at `path` that is not a socket is left alone ([`BindError::NotSocket`]). The socket is
/// bound under a temporary name, made 0600 and renamed into place, so it is never reachable
/// with wider permissions. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<CniSocket, BindError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let io = |op: String| {
        let shown = shown.clone();
        move |source| BindError::Io {
            path: shown,
            op,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let lock_path = lock_path(path);
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    let lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(f) => SocketLock {
            _file: f,
            path: lock_path,
        },
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(match live_peer(path, &shown) {
                Ok(Some(peer)) => BindError::InUse { path: shown, peer },
                _ => BindError::Locked {
                    path: shown,
                    lock: lock_path.display().to_string(),
                },
            });
        }
        Err((_, e)) => {
            return Err(BindError::Io {
                path: shown,
                op: format!("locking {}", lock_path.display()),
                source: e.into(),
            });
        }
    };
    // An agent of a version without the lock may still serve it.
    if let Some(peer) = live_peer(path, &shown)? {
        return Err(BindError::InUse { path: shown, peer });
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {}", tmp.display()))(e)),
    }
    let listener = UnixListener::bind(&tmp).map_err(io(format!("binding {}", tmp.display())))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod 0600 {}", tmp.display())))
        .and_then(|()| {
            // replaces a stale socket atomically: a CNI plugin never sees no socket at all
            std::fs::rename(&tmp, path)
                .map_err(io(format!("renaming {} into place", tmp.display())))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(CniSocket { listener, lock })
}

/// Reads one frame (bounded by the protocol's size cap).
async fn read_frame(stream: &mut UnixStream) -> Result<Vec<u8>, protocol::ProtocolError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Err(protocol::ProtocolError::Closed);
            }
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(len) = protocol::frame_len(&buf)? {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// What answers the requests arriving on the CNI socket: the [`Agent`] (tests may stand in).
pub trait Handler: Send + Sync + 'static {
    fn serve_request(&self, req: Request) -> impl std::future::Future<Output = Response> + Send;
}

impl<A: AllocationSource> Handler for Agent<A> {
    async fn serve_request(&self, req: Request) -> Response {
        self.handle(req).await
    }
}

/// The answer to every request that arrives once the agent is shutting down.
pub fn shutting_down() -> Response {
    Response::error(
        crate::cni_error::agent_code::SHUTTING_DOWN,
        "the node agent is shutting down",
        "it stopped taking requests on SIGTERM and finishes the ones in flight; the runtime \
         retries once the new agent serves the socket",
    )
}

/// Reads one request and answers it with `answer`.
async fn answer_connection<F, Fut>(mut stream: UnixStream, answer: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let response = match read_frame(&mut stream).await {
        Ok(frame) => match protocol::decode_request(&frame) {
            Ok(req) => {
                let op = req.op();
                let started = std::time::Instant::now();
                let resp = answer(req).await;
                tracing::debug!(
                    op,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    ok = matches!(resp, Response::Ok { .. }),
                    "request served"
                );
                resp
            }
            Err(e) => Response::error(
                code::DECODE_FAILURE,
                "node agent could not decode the request",
                e.to_string(),
            ),
        },
        Err(protocol::ProtocolError::Closed) => return,
        Err(e) => Response::error(
            code::IO_FAILURE,
            "reading the request failed",
            e.to_string(),
        ),
    };
    match protocol::encode_response(&response) {
        Ok(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Err(e) => tracing::warn!(error = %e, "could not encode a response"),
    }
}

/// Serves one connection.
pub async fn serve_connection<H: Handler>(agent: Arc<H>, stream: UnixStream) {
    answer_connection(stream, |req| async move { agent.serve_request(req).await }).await
}

/// Accept loop; returns only if accepting fails.
pub async fn serve<H: Handler>(agent: Arc<H>, listener: UnixListener) -> std::io::Error {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(agent.clone(), stream));
            }
            Err(e) => return e,
        }
    }
}

/// How a [`serve_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight at shutdown was answered.
    Drained,
    /// `drain_timeout` passed with this many requests still in flight.
    TimedOut { in_flight: usize },
}

/// Serves until `shutdown` completes (SIGTERM), then drains: requests in flight are answered,
/// every new one is answered with [`shutting_down`] (a clear CNI error, not a refused
/// connection), and it returns once none is left in flight or after `drain_timeout`.
pub async fn serve_until<H: Handler>(
    agent: Arc<H>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
    drain_timeout: std::time::Duration,
) -> Result<Stopped, std::io::Error> {
    let mut in_flight = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                in_flight.spawn(serve_connection(agent.clone(), stream));
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    tracing::info!(
        in_flight = in_flight.len(),
        "shutting down: no new requests; finishing the ones in flight"
    );
    let deadline = tokio::time::sleep(drain_timeout);
    tokio::pin!(deadline);
    while !in_flight.is_empty() {
        tokio::select! {
            () = &mut deadline => {
                return Ok(Stopped::TimedOut { in_flight: in_flight.len() });
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer_connection(stream, |_| async { shutting_down() }));
                }
            }
            Some(_) = in_flight.join_next() => {}
        }
    }
    Ok(Stopped::Drained)
}

/// Handles a request in-process (tests and embedding).
pub async fn handle<A: AllocationSource>(agent: &Agent<A>, req: Request) -> Response {
    agent.handle(req).await
}
