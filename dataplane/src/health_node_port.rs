//! Health check node ports: for every Service with `externalTrafficPolicy: Local` and a
//! `healthCheckNodePort`, an HTTP server on that port of the node answering 200 while the node
//! has a ready endpoint of the Service and 503 otherwise (kube-proxy's contract, which outside
//! load balancers and the upstream e2e suite rely on). Any path is answered, as kube-proxy does;
//! the body is kube-proxy's JSON.
//!
//! The source is the controller's plan on the Service's Southbound load balancer rows
//! (ferrovn-control `plan::services::HEALTH_CHECK_*`): the port, and per node address the ready
//! local endpoints of that node. This node's count is the one listed for its own addresses,
//! the same way [`crate::nodeport`] recognises its node ports, so the agent needs no Service or
//! EndpointSlice watch of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::nodeport::LbRow;

/// The Service's `healthCheckNodePort` on its plain load balancer rows.
pub const PORT_OPTION: &str = "ferrovn_health_check_node_port";
/// `<node address>=<ready local endpoints>,…`.
pub const LOCAL_OPTION: &str = "ferrovn_health_check_local";

/// What one health check node port answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPort {
    /// `namespace/name` of the Service.
    pub service: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: u32,
}

/// The health check node ports of this node (`local`: its addresses), by port. A Service
/// whose rows do not list any of this node's addresses has 0 local endpoints here.
pub fn plan(lbs: &[LbRow], local: &BTreeSet<IpAddr>) -> BTreeMap<u16, HealthPort> {
    let mut out = BTreeMap::new();
    let mut sorted: Vec<&LbRow> = lbs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for lb in sorted {
        let Some(port) = lb
            .options
            .get(PORT_OPTION)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let local_endpoints = lb
            .options
            .get(LOCAL_OPTION)
            .map(|v| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(ip, _)| {
                        ip.trim()
                            .parse::<IpAddr>()
                            .is_ok_and(|ip| local.contains(&ip))
                    })
                    .filter_map(|(_, n)| n.trim().parse::<u32>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        // `svc:<namespace>/<name>:<protocol>`; a Service's rows of each protocol say the same
        let service = lb
            .name
            .trim_start_matches("svc:")
            .rsplit_once(':')
            .map_or(lb.name.as_str(), |(s, _)| s)
            .to_string();
        out.entry(port).or_insert(HealthPort {
            service,
            local_endpoints,
        });
    }
    out
}

/// The status line and body a request to `h` gets.
pub fn response(h: &HealthPort) -> (u16, String) {
    let (namespace, name) = h.service.split_once('/').unwrap_or(("", &h.service));
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": h.local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let code = if h.local_endpoints > 0 { 200 } else { 503 };
    (code, body)
}

type Shared = Arc<RwLock<BTreeMap<u16, HealthPort>>>;

/// The listeners of the health check node ports, kept in line with a plan by [`Self::apply`].
/// Dropping it stops them.
pub struct HealthServer {
    bind: IpAddr,
    state: Shared,
    listeners: BTreeMap<u16, JoinHandle<()>>,
    /// Ports that could not be bound, with why (reported once per change).
    failed: BTreeMap<u16, String>,
}

impl HealthServer {
    /// Listens on `bind` (the node's unspecified address in the agent, loopback in tests).
    pub fn new(bind: IpAddr) -> Self {
        HealthServer {
            bind,
            state: Arc::default(),
            listeners: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Serves exactly `plan`: answers change at once, new ports are bound, gone ones closed.
    /// Returns the ports whose binding newly failed (retried on the next call).
    pub async fn apply(&mut self, plan: BTreeMap<u16, HealthPort>) -> Vec<(u16, String)> {
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|p| !plan.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(task) = self.listeners.remove(&port) {
                task.abort();
            }
        }
        self.failed.retain(|p, _| plan.contains_key(p));
        let wanted: Vec<u16> = plan.keys().copied().collect();
        match self.state.write() {
            Ok(mut s) => *s = plan,
            Err(poisoned) => *poisoned.into_inner() = plan,
        }
        let mut newly_failed = Vec::new();
        for port in wanted {
            if self.listeners.contains_key(&port) {
                continue;
            }
            match TcpListener::bind(SocketAddr::new(self.bind, port)).await {
                Ok(l) => {
                    self.failed.remove(&port);
                    let state = self.state.clone();
                    self.listeners
                        .insert(port, tokio::spawn(accept_loop(l, port, state)));
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failed.get(&port) != Some(&why) {
                        newly_failed.push((port, why.clone()));
                    }
                    self.failed.insert(port, why);
                }
            }
        }
        newly_failed
    }

    /// The ports listened on.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, port: u16, state: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // a transient accept error (out of descriptors): do not spin
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, port, state)).await;
        });
    }
}

/// Reads the request head (whatever it asks) and answers with this port's current state.
async fn answer(mut stream: TcpStream, port: u16, state: Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let current = match state.read() {
        Ok(s) => s.get(&port).cloned(),
        Err(poisoned) => poisoned.into_inner().get(&port).cloned(),
    };
    let (code, body) = match &current {
        Some(h) => response(h),
        None => (503, String::new()),
    };
    let reason = if code == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
