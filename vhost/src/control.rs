//! The control socket (unix, JSON lines) and the optional Prometheus HTTP listener.

use crate::helper::Helper;
use crate::protocol::{Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another helper is already listening there")]
    InUse { path: String },
    #[error("control socket {path}: {reason}")]
    Bind { path: String, reason: String },
    #[error("metrics listener {addr}: {reason}")]
    Metrics { addr: String, reason: String },
}

/// Answers one request line. Bad JSON gets an error response; the connection stays usable.
pub fn answer(helper: &Mutex<Helper>, line: &str) -> Response {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    match helper.lock() {
        Ok(mut h) => h.handle(request),
        Err(poisoned) => poisoned.into_inner().handle(request),
    }
}

/// Binds `path`, replacing a stale socket left by a crashed helper but never a live one.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let shown = path.display().to_string();
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse { path: shown });
        }
        std::fs::remove_file(path).map_err(|e| ControlError::Bind {
            path: shown.clone(),
            reason: format!("removing stale socket: {e}"),
        })?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::Bind {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    }
    UnixListener::bind(path).map_err(|e| ControlError::Bind {
        path: shown,
        reason: e.to_string(),
    })
}

/// Serves the control socket on background threads (one per connection).
pub fn serve(listener: UnixListener, helper: Arc<Mutex<Helper>>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let helper = Arc::clone(&helper);
            std::thread::spawn(move || serve_connection(conn, &helper));
        }
    });
}

fn serve_connection(conn: UnixStream, helper: &Mutex<Helper>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let response = answer(helper, &line);
        let mut text = serde_json::to_string(&response)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"response encoding"}"#.to_owned());
        text.push('\n');
        if writer.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Serves `GET /metrics` (Prometheus text) on `addr`, e.g. 127.0.0.1:9477.
pub fn serve_metrics(
    addr: &str,
    helper: Arc<Mutex<Helper>>,
) -> Result<std::net::SocketAddr, ControlError> {
    let err = |reason: String| ControlError::Metrics {
        addr: addr.to_owned(),
        reason,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| err(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| err(e.to_string()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            // Read the request head (up to the blank line); only its first line matters.
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&head);
            let (status, body) = if request.starts_with("GET /metrics") {
                let text = match helper.lock() {
                    Ok(h) => h.metrics_text(),
                    Err(p) => p.into_inner().metrics_text(),
                };
                ("200 OK", text)
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(local)
}

pub use ferrovn_vhost_proto::client::{ControlClient, default_socket};
