//! SIGTERM on the node agent's CNI socket: a request in flight when the signal arrives is
//! answered; a request that arrives after it gets a clear "shutting down" CNI error; the
//! server returns once nothing is in flight. Real unix socket, real SIGTERM to this process
//! (caught by the same tokio handler the agent installs), a stand-in handler that holds its
//! request until the test lets it go.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use ferrovn_cni::protocol::{self, Request, Response, StatusRequest};
use ferrovn_dataplane::agent::agent_code;
use ferrovn_dataplane::server::{self, Handler, Stopped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Notify, mpsc};

/// Answers OK once released; tells the test each time a request arrived.
struct Held {
    arrived: mpsc::UnboundedSender<()>,
    release: Notify,
}

impl Handler for Held {
    async fn serve_request(&self, _req: Request) -> Response {
        let _ = self.arrived.send(());
        self.release.notified().await;
        Response::ok()
    }
}

async fn call(path: &std::path::Path) -> Response {
    let mut s = UnixStream::connect(path).await.expect("connect");
    let req = Request::Status(StatusRequest {
        cni_version: "1.1.0".into(),
        network: "ferrovn".into(),
        provider: None,
        ipam_only: false,
        netconf: serde_json::json!({"type": "ferrovn-cni"}),
    });
    s.write_all(&protocol::encode_request(&req).expect("encode"))
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    protocol::decode_response(&buf).expect("a response frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("cni.sock");
    let sock = server::bind(&path).expect("bind");
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let handler = Arc::new(Held {
        arrived: arrived_tx,
        release: Notify::new(),
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let (got_term_tx, got_term) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(server::serve_until(
        handler.clone(),
        sock.listener,
        async move {
            term.recv().await;
            let _ = got_term_tx.send(());
        },
        Duration::from_secs(60),
    ));

    // one request in flight
    let p = path.clone();
    let in_flight = tokio::spawn(async move { call(&p).await });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request reached the handler");

    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    tokio::time::timeout(Duration::from_secs(10), got_term)
        .await
        .expect("the server saw SIGTERM")
        .expect("sent");

    // a new request is refused with a clear error, never reaching the handler
    match call(&path).await {
        Response::Error(e) => {
            assert_eq!(e.code, agent_code::SHUTTING_DOWN, "{e:?}");
            assert!(e.msg.contains("shutting down"), "{e:?}");
        }
        other => panic!("a request after SIGTERM must be refused: {other:?}"),
    }
    assert!(
        arrived.try_recv().is_err(),
        "the handler saw a second request"
    );
    assert!(
        !server.is_finished(),
        "the server waits for the request in flight"
    );

    // the request in flight completes, then the server stops
    handler.release.notify_one();
    let resp = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight answered")
        .expect("task");
    assert!(matches!(resp, Response::Ok { .. }), "{resp:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server returned")
        .expect("task")
        .expect("no accept error");
    assert_eq!(stopped, Stopped::Drained);
}
