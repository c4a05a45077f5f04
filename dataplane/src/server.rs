//! The CNI socket: one request frame, one response frame per connection
//! (`ferrovn_cni::protocol`), each connection served on its own tokio task.

use std::path::Path;
use std::sync::Arc;

use ferrovn_cni::protocol::{self, Request, Response};
use ferrovn_cni::spec::code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::Agent;
use crate::alloc::AllocationSource;

/// Binds the socket at `path` (creating its directory, replacing a stale socket file).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
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

/// Serves one connection.
pub async fn serve_connection<A: AllocationSource>(agent: Arc<Agent<A>>, mut stream: UnixStream) {
    let response = match read_frame(&mut stream).await {
        Ok(frame) => match protocol::decode_request(&frame) {
            Ok(req) => {
                let op = req.op();
                let started = std::time::Instant::now();
                let resp = agent.handle(req).await;
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

/// Accept loop; returns only if accepting fails.
pub async fn serve<A: AllocationSource>(
    agent: Arc<Agent<A>>,
    listener: UnixListener,
) -> std::io::Error {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(agent.clone(), stream));
            }
            Err(e) => return e,
        }
    }
}

/// Handles a request in-process (tests and embedding).
pub async fn handle<A: AllocationSource>(agent: &Agent<A>, req: Request) -> Response {
    agent.handle(req).await
}
