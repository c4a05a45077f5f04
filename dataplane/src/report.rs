//! Reporting the node (chassis) to the control plane.
//!
//! The agent writes the OVN settings into the node's OVS (`external_ids:system-id` etc.), but
//! the chassis only exists once ovn-controller has registered it in the OVN Southbound. The
//! reporter watches the SB `Chassis` row named after the node's system-id (and its `Encap`
//! rows) and, whenever that row appears or changes, publishes node annotations through a
//! [`NodeReportSink`]:
//!
//! - `ovn.kubernetes.io/chassis` = the system-id (what Kube-OVN's daemon publishes, read from
//!   the OVS system-id; here only once ovn-controller registered it),
//! - `ovn.kubernetes.io/tunnel_interface` = the host interface holding the encap IP (when one
//!   does),
//! - `ferrovn.io/encap-ip` / `ferrovn.io/encap-type` = the encapsulation as registered.
//!
//! While the row is missing nothing is published (existing annotations stay) and the wait is
//! logged with its duration and the SB remote. The decision is the pure [`ReportState`]; the
//! SB watch, interface lookup and sinks are thin shells around it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovn_ovsdb::{Client, ClientOptions, MonitorSpec, ReplicaData, Uuid, sb};

/// Node annotations (key → value).
pub type Annotations = BTreeMap<String, String>;

/// Kube-OVN's node annotation: the node's OVN chassis name (system-id).
pub const CHASSIS_ANNOTATION: &str = ferrovn_api::annotations::NodeNetwork::CHASSIS;
/// Kube-OVN's node annotation: the interface that carries the tunnel (encap) IP.
pub const TUNNEL_INTERFACE_ANNOTATION: &str =
    ferrovn_api::annotations::NodeNetwork::TUNNEL_INTERFACE;
/// The encap IP(s) the chassis registered (comma-separated, sorted).
pub const ENCAP_IP_ANNOTATION: &str = "ferrovn.io/encap-ip";
/// The encap type(s) the chassis registered (comma-separated, sorted).
pub const ENCAP_TYPE_ANNOTATION: &str = "ferrovn.io/encap-type";

/// File the lab sink writes in the state dir. Separate from `node-annotations.json` (the
/// profile decision rewrites that file at every start) so neither writer clobbers the other.
pub const CHASSIS_ANNOTATIONS_FILE: &str = "chassis-node-annotations.json";
/// Metrics textfile with `ferrovn_node_chassis_registered`.
pub const CHASSIS_METRICS_FILE: &str = "chassis-metrics.prom";

/// One `Encap` row of the chassis.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EncapInfo {
    pub encap_type: String,
    pub ip: String,
}

/// What the SB says about our chassis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisView {
    /// `_uuid` of the Chassis row: a new uuid means the row was deleted and registered again.
    pub uuid: Uuid,
    pub encaps: Vec<EncapInfo>,
}

/// Reads our chassis (by `name`) and its encaps out of a SB replica.
pub fn chassis_view(data: &ReplicaData, system_id: &str) -> Option<ChassisView> {
    let chassis = data
        .iter::<sb::Chassis>()
        .flatten()
        .find(|c| c.name == system_id)?;
    let mut encaps: Vec<EncapInfo> = data
        .iter::<sb::Encap>()
        .flatten()
        .filter(|e| chassis.encaps.contains(&e.uuid))
        .map(|e| EncapInfo {
            encap_type: e.type_,
            ip: e.ip,
        })
        .collect();
    encaps.sort();
    encaps.dedup();
    Some(ChassisView {
        uuid: chassis.uuid,
        encaps,
    })
}

/// The annotations publishing `view` for chassis `system_id`.
pub fn chassis_annotations(
    system_id: &str,
    view: &ChassisView,
    tunnel_interface: Option<&str>,
) -> Annotations {
    let mut a = Annotations::new();
    a.insert(CHASSIS_ANNOTATION.into(), system_id.to_string());
    if let Some(ifname) = tunnel_interface.filter(|i| !i.is_empty()) {
        a.insert(TUNNEL_INTERFACE_ANNOTATION.into(), ifname.to_string());
    }
    let join = |values: BTreeSet<&str>| values.into_iter().collect::<Vec<_>>().join(",");
    let ips: BTreeSet<&str> = view.encaps.iter().map(|e| e.ip.as_str()).collect();
    let types: BTreeSet<&str> = view.encaps.iter().map(|e| e.encap_type.as_str()).collect();
    if !ips.is_empty() {
        a.insert(ENCAP_IP_ANNOTATION.into(), join(ips));
    }
    if !types.is_empty() {
        a.insert(ENCAP_TYPE_ANNOTATION.into(), join(types));
    }
    a
}

/// The keys of `desired` whose value differs from (or is missing in) `current`: the body of a
/// merge patch. Keys only in `current` are left alone (other writers own them).
pub fn annotations_patch(current: &Annotations, desired: &Annotations) -> Annotations {
    desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The interface carrying one of `encap_ips`, from the host's `(interface, address)` list.
/// The first encap IP with a holder wins; among several holders a non-loopback interface is
/// preferred, then the smallest name (deterministic across restarts).
pub fn tunnel_interface(addrs: &[(String, IpAddr)], encap_ips: &[IpAddr]) -> Option<String> {
    encap_ips.iter().find_map(|ip| {
        addrs
            .iter()
            .filter(|(_, a)| a == ip)
            .map(|(name, _)| name)
            .min_by_key(|name| (name.as_str() == "lo", name.as_str()))
            .cloned()
    })
}

/// The host's interface addresses (of the agent's network namespace).
pub fn host_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let sa = ifa.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some((ifa.interface_name, ip))
        })
        .collect()
}

/// What the reporter should do after looking at the SB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Row missing: keep waiting (nothing is withdrawn).
    Wait,
    /// Publish these annotations.
    Publish(Annotations),
    /// Already published for this row and content.
    Nothing,
}

/// The reporter's memory: what was last published successfully, for which row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportState {
    published: Option<(Uuid, Annotations)>,
}

impl ReportState {
    /// Decides for the current SB view. `desired` is the annotation set for `view` (None when
    /// the row is missing).
    pub fn step(&self, view: Option<&ChassisView>, desired: Option<Annotations>) -> Step {
        match (view, desired) {
            (Some(v), Some(d)) => match &self.published {
                Some((uuid, ann)) if *uuid == v.uuid && *ann == d => Step::Nothing,
                _ => Step::Publish(d),
            },
            _ => Step::Wait,
        }
    }
    /// Records a successful publish.
    pub fn published(&mut self, uuid: Uuid, annotations: Annotations) {
        self.published = Some((uuid, annotations));
    }
    /// Forgets the last publish (the row went away: its return must be published again).
    pub fn row_gone(&mut self) {
        self.published = None;
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing node annotations to {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("node annotations file {path}: {reason}")]
    FileContent { path: String, reason: String },
    #[error("{op} Node {node}: {reason}")]
    Kube {
        op: &'static str,
        node: String,
        reason: String,
    },
}

/// Where node annotations go: a file in the lab, the Node object in a cluster.
pub trait NodeReportSink: Send + Sync + 'static {
    /// Makes the node carry `annotations` (other annotations stay). Returns the keys that
    /// changed.
    fn publish(
        &self,
        annotations: &Annotations,
    ) -> impl Future<Output = Result<Vec<String>, ReportError>> + Send;
    /// Where the annotations go (for logs).
    fn describe(&self) -> String;
}

/// Lab sink: keeps `<state_dir>/chassis-node-annotations.json` (a JSON object of strings) up
/// to date. Read-modify-write with a rename, so readers never see half a file and keys other
/// writers put in this file stay.
#[derive(Debug, Clone)]
pub struct FileReportSink {
    path: PathBuf,
}

impl FileReportSink {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileReportSink { path: path.into() }
    }
    /// The sink for a state dir.
    pub fn in_state_dir(dir: &Path) -> Self {
        Self::new(dir.join(CHASSIS_ANNOTATIONS_FILE))
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn read_current(&self) -> Result<Annotations, ReportError> {
        match std::fs::read(&self.path) {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| ReportError::FileContent {
                path: self.path.display().to_string(),
                reason: format!("expected a JSON object of strings: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Annotations::new()),
            Err(source) => Err(ReportError::File {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }
}

/// Writes `body` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

impl NodeReportSink for FileReportSink {
    async fn publish(&self, annotations: &Annotations) -> Result<Vec<String>, ReportError> {
        // an unreadable file is replaced rather than blocking the report forever
        let mut current = self.read_current().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "replacing the node annotations file");
            Annotations::new()
        });
        let patch = annotations_patch(&current, annotations);
        let changed: Vec<String> = patch.keys().cloned().collect();
        current.extend(patch);
        let body = serde_json::to_vec_pretty(&current).map_err(|e| ReportError::FileContent {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        // rewritten even when unchanged: a re-registered chassis is visible by the file's mtime
        write_atomic(&self.path, &body).map_err(|source| ReportError::File {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok(changed)
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Sink that only logs (no state dir, no cluster).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogReportSink;

impl NodeReportSink for LogReportSink {
    async fn publish(&self, annotations: &Annotations) -> Result<Vec<String>, ReportError> {
        Ok(annotations.keys().cloned().collect())
    }
    fn describe(&self) -> String {
        "the log".into()
    }
}

/// The metrics textfile line for the registration state.
pub fn chassis_metrics_text(system_id: &str, registered: bool) -> String {
    format!(
        "# HELP ferrovn_node_chassis_registered Whether ovn-controller registered this node's chassis in the OVN Southbound.\n\
         # TYPE ferrovn_node_chassis_registered gauge\n\
         ferrovn_node_chassis_registered{{chassis=\"{}\"}} {}\n",
        system_id.replace('\\', "\\\\").replace('"', "\\\""),
        u8::from(registered)
    )
}

/// Longest wait between publish retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How the reporter runs.
#[derive(Debug, Clone)]
pub struct ChassisReportConfig {
    /// OVN Southbound remote(s).
    pub sb_remote: String,
    /// The chassis name (`external_ids:system-id`).
    pub system_id: String,
    /// The encap IP the agent configured; used for the tunnel interface until the SB says.
    pub configured_encap_ip: String,
    /// Where `chassis-metrics.prom` goes (lab).
    pub state_dir: Option<PathBuf>,
    /// How often a continuing wait is logged.
    pub wait_log_every: Duration,
    /// Delay before retrying a failed publish or SB connection.
    pub retry_every: Duration,
}

impl ChassisReportConfig {
    pub fn new(sb_remote: &str, system_id: &str, configured_encap_ip: &str) -> Self {
        ChassisReportConfig {
            sb_remote: sb_remote.to_string(),
            system_id: system_id.to_string(),
            configured_encap_ip: configured_encap_ip.to_string(),
            state_dir: None,
            wait_log_every: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

fn monitor_spec(system_id: &str) -> MonitorSpec {
    MonitorSpec::new()
        .table_where(
            "Chassis",
            Some(&["name", "encaps"]),
            serde_json::json!([["name", "==", system_id]]),
        )
        .table_where(
            "Encap",
            Some(&["chassis_name", "ip", "type"]),
            serde_json::json!([["chassis_name", "==", system_id]]),
        )
}

/// Desired annotations for a view: the tunnel interface from the registered encap IPs (the
/// configured one when the SB has none).
fn desired_for(cfg: &ChassisReportConfig, view: &ChassisView) -> Annotations {
    let mut ips: Vec<IpAddr> = view
        .encaps
        .iter()
        .filter_map(|e| e.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Ok(ip) = cfg.configured_encap_ip.parse()
    {
        ips.push(ip);
    }
    let ifname = tunnel_interface(&host_addresses(), &ips);
    chassis_annotations(&cfg.system_id, view, ifname.as_deref())
}

struct Reporter<'a, S> {
    cfg: &'a ChassisReportConfig,
    sink: &'a S,
    state: ReportState,
    registered: Option<bool>,
    waiting_since: Instant,
    last_wait_log: Option<Instant>,
    publish_pending: bool,
    last_attempt: Option<Instant>,
    /// Delay before the next publish retry: `retry_every`, doubling per failure up to 30 s.
    retry_delay: Duration,
    /// How long the pending retry waits after `last_attempt`.
    retry_wait: Duration,
}

impl<S: NodeReportSink> Reporter<'_, S> {
    fn set_registered(&mut self, registered: bool) {
        if self.registered == Some(registered) {
            return;
        }
        self.registered = Some(registered);
        if !registered {
            self.waiting_since = Instant::now();
            self.last_wait_log = None;
        }
        if let Some(dir) = &self.cfg.state_dir {
            let path = dir.join(CHASSIS_METRICS_FILE);
            let text = chassis_metrics_text(&self.cfg.system_id, registered);
            if let Err(e) = write_atomic(&path, text.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "writing chassis metrics");
            }
        }
    }

    fn log_wait(&mut self, why: &str) {
        let due = self
            .last_wait_log
            .is_none_or(|t| t.elapsed() >= self.cfg.wait_log_every);
        if due {
            self.last_wait_log = Some(Instant::now());
            tracing::info!(
                chassis = %self.cfg.system_id,
                sb = %self.cfg.sb_remote,
                waited_secs = self.waiting_since.elapsed().as_secs(),
                "waiting for chassis {} in the OVN Southbound: {why}",
                self.cfg.system_id
            );
        }
    }

    /// Looks at the current view and publishes if needed.
    async fn evaluate(&mut self, view: Option<ChassisView>) {
        let desired = view.as_ref().map(|v| desired_for(self.cfg, v));
        match self.state.step(view.as_ref(), desired) {
            Step::Wait => {
                if self.registered == Some(true) {
                    tracing::warn!(chassis = %self.cfg.system_id, sb = %self.cfg.sb_remote,
                        "chassis row gone from the OVN Southbound (ovn-controller stopped or chassis deleted); annotations kept");
                }
                self.state.row_gone();
                self.publish_pending = false;
                self.set_registered(false);
                self.log_wait("ovn-controller has not registered it (yet)");
            }
            Step::Nothing => {
                self.publish_pending = false;
                self.set_registered(true);
            }
            Step::Publish(annotations) => {
                self.set_registered(true);
                let Some(v) = view else { return };
                self.last_attempt = Some(Instant::now());
                match self.sink.publish(&annotations).await {
                    Ok(changed) => {
                        tracing::info!(chassis = %self.cfg.system_id, to = %self.sink.describe(),
                            changed = ?changed, annotations = ?annotations,
                            "published node annotations for the registered chassis");
                        self.state.published(v.uuid, annotations);
                        self.publish_pending = false;
                        self.retry_delay = self.cfg.retry_every;
                    }
                    Err(e) => {
                        tracing::warn!(chassis = %self.cfg.system_id, to = %self.sink.describe(),
                            error = %e, retry_in_secs = self.retry_delay.as_secs(),
                            "publishing node annotations failed; retrying");
                        self.publish_pending = true;
                        self.retry_wait = self.retry_delay;
                        self.retry_delay = self.retry_delay.saturating_mul(2).min(MAX_RETRY_DELAY);
                    }
                }
            }
        }
    }
}

/// Watches the SB for our chassis and publishes through `sink`; runs until the task is
/// dropped. SB outages are retried (the client reconnects; a failed first connect is retried
/// every `retry_every`).
pub async fn run_chassis_reporter<S: NodeReportSink>(cfg: ChassisReportConfig, sink: S) {
    let mut r = Reporter {
        cfg: &cfg,
        sink: &sink,
        state: ReportState::default(),
        registered: None,
        waiting_since: Instant::now(),
        last_wait_log: None,
        publish_pending: false,
        last_attempt: None,
        retry_delay: cfg.retry_every,
        retry_wait: cfg.retry_every,
    };
    loop {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let client = match Client::connect(&cfg.sb_remote, "OVN_Southbound", options).await {
            Ok(c) => c,
            Err(e) => {
                if r.registered.is_none() {
                    r.set_registered(false);
                }
                r.log_wait(&format!("cannot reach the Southbound: {e}"));
                tokio::time::sleep(cfg.retry_every).await;
                continue;
            }
        };
        let replica = match client.replica(monitor_spec(&cfg.system_id)).await {
            Ok(rep) => rep,
            Err(e) => {
                tracing::warn!(sb = %cfg.sb_remote, error = %e, "monitoring the SB Chassis table failed; retrying");
                tokio::time::sleep(cfg.retry_every).await;
                continue;
            }
        };
        let (view, mut changes) = replica.subscribe_with(|d| chassis_view(d, &cfg.system_id));
        r.evaluate(view).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = changes.recv() => {
                    if batch.is_none() {
                        break;
                    }
                    // drain what queued up: one evaluation for a burst
                    while changes.try_recv().is_ok() {}
                    let view = replica.read(|d| chassis_view(d, &cfg.system_id));
                    r.evaluate(view).await;
                }
                _ = tick.tick() => {
                    let retry_due = r.publish_pending
                        && r.last_attempt.is_none_or(|t| t.elapsed() >= r.retry_wait);
                    if retry_due {
                        let view = replica.read(|d| chassis_view(d, &cfg.system_id));
                        r.evaluate(view).await;
                    } else if r.registered == Some(false) {
                        r.log_wait("ovn-controller has not registered it (yet)");
                    }
                }
            }
        }
        tracing::warn!(sb = %cfg.sb_remote, "SB monitor ended; reconnecting");
        tokio::time::sleep(cfg.retry_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn view(uuid: u128, encaps: &[(&str, &str)]) -> ChassisView {
        ChassisView {
            uuid: Uuid::from_u128(uuid),
            encaps: encaps
                .iter()
                .map(|(t, ip)| EncapInfo {
                    encap_type: t.to_string(),
                    ip: ip.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn patch_holds_only_differing_keys() {
        let current = ann(&[
            ("ovn.kubernetes.io/chassis", "node-a"),
            ("ovn.kubernetes.io/tunnel_interface", "eth1"),
            ("other.io/x", "keep"),
        ]);
        let desired = ann(&[
            ("ovn.kubernetes.io/chassis", "node-a"),
            ("ovn.kubernetes.io/tunnel_interface", "eth0"),
            ("ferrovn.io/encap-ip", "10.0.0.5"),
        ]);
        assert_eq!(
            annotations_patch(&current, &desired),
            ann(&[
                ("ovn.kubernetes.io/tunnel_interface", "eth0"),
                ("ferrovn.io/encap-ip", "10.0.0.5"),
            ])
        );
        assert!(annotations_patch(&desired, &desired).is_empty());
        assert_eq!(annotations_patch(&Annotations::new(), &desired), desired);
    }

    #[test]
    fn tunnel_interface_prefers_the_encap_holder_and_non_loopback() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let addrs = vec![
            ("lo".to_string(), ip("127.0.0.1")),
            ("eth0".to_string(), ip("10.0.0.5")),
            ("eth1".to_string(), ip("192.168.1.5")),
            ("lo".to_string(), ip("10.0.0.9")),
            ("dummy0".to_string(), ip("10.0.0.9")),
        ];
        assert_eq!(
            tunnel_interface(&addrs, &[ip("192.168.1.5")]).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            tunnel_interface(&addrs, &[ip("10.0.0.9")]).as_deref(),
            Some("dummy0")
        );
        assert_eq!(
            tunnel_interface(&addrs, &[ip("127.0.0.1")]).as_deref(),
            Some("lo")
        );
        // the first encap IP with a holder wins
        assert_eq!(
            tunnel_interface(&addrs, &[ip("172.16.0.1"), ip("10.0.0.5")]).as_deref(),
            Some("eth0")
        );
        assert_eq!(tunnel_interface(&addrs, &[ip("172.16.0.1")]), None);
        assert_eq!(tunnel_interface(&[], &[ip("10.0.0.5")]), None);
    }

    #[test]
    fn annotations_from_the_registered_chassis() {
        let v = view(1, &[("vxlan", "10.0.0.5"), ("geneve", "10.0.0.5")]);
        assert_eq!(
            chassis_annotations("node-a", &v, Some("eth0")),
            ann(&[
                ("ovn.kubernetes.io/chassis", "node-a"),
                ("ovn.kubernetes.io/tunnel_interface", "eth0"),
                ("ferrovn.io/encap-ip", "10.0.0.5"),
                ("ferrovn.io/encap-type", "geneve,vxlan"),
            ])
        );
        // no interface found, no encaps: just the chassis
        assert_eq!(
            chassis_annotations("node-a", &view(1, &[]), None),
            ann(&[("ovn.kubernetes.io/chassis", "node-a")])
        );
    }

    #[test]
    fn state_publishes_once_per_row_and_again_after_it_returns() {
        let mut s = ReportState::default();
        let d = ann(&[("ovn.kubernetes.io/chassis", "node-a")]);
        assert_eq!(s.step(None, None), Step::Wait);
        let v1 = view(1, &[("geneve", "10.0.0.5")]);
        assert_eq!(s.step(Some(&v1), Some(d.clone())), Step::Publish(d.clone()));
        s.published(v1.uuid, d.clone());
        assert_eq!(s.step(Some(&v1), Some(d.clone())), Step::Nothing);
        // encap changed: new content
        let d2 = ann(&[
            ("ovn.kubernetes.io/chassis", "node-a"),
            ("ferrovn.io/encap-ip", "10.0.0.6"),
        ]);
        assert_eq!(
            s.step(Some(&v1), Some(d2.clone())),
            Step::Publish(d2.clone())
        );
        // deleted, then registered again with the same content: published again
        s.row_gone();
        let v2 = view(2, &[("geneve", "10.0.0.5")]);
        assert_eq!(s.step(Some(&v2), Some(d.clone())), Step::Publish(d.clone()));
        // a new row uuid alone is a new registration
        s.published(v1.uuid, d.clone());
        assert_eq!(s.step(Some(&v2), Some(d.clone())), Step::Publish(d));
    }

    #[tokio::test]
    async fn file_sink_merges_and_keeps_other_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = FileReportSink::in_state_dir(dir.path());
        std::fs::write(
            sink.path(),
            br#"{"other.io/x":"keep","ovn.kubernetes.io/chassis":"old"}"#,
        )
        .expect("seed");
        let changed = sink
            .publish(&ann(&[("ovn.kubernetes.io/chassis", "node-a")]))
            .await
            .expect("publish");
        assert_eq!(changed, vec!["ovn.kubernetes.io/chassis".to_string()]);
        let body: Annotations =
            serde_json::from_slice(&std::fs::read(sink.path()).expect("read")).expect("json");
        assert_eq!(
            body,
            ann(&[
                ("other.io/x", "keep"),
                ("ovn.kubernetes.io/chassis", "node-a")
            ])
        );
        // a garbled file is replaced, not a permanent failure
        std::fs::write(sink.path(), b"{garbage").expect("garble");
        sink.publish(&ann(&[("ovn.kubernetes.io/chassis", "node-a")]))
            .await
            .expect("publish over garbage");
        let body: Annotations =
            serde_json::from_slice(&std::fs::read(sink.path()).expect("read")).expect("json");
        assert_eq!(body, ann(&[("ovn.kubernetes.io/chassis", "node-a")]));
    }

    proptest::proptest! {
        #[test]
        fn patch_applied_gives_desired_and_keeps_the_rest(
            current in proptest::collection::btree_map("[a-c]{1,2}", "[xy]{0,2}", 0..6),
            desired in proptest::collection::btree_map("[a-c]{1,2}", "[xy]{0,2}", 0..6),
        ) {
            let patch = annotations_patch(&current, &desired);
            let mut merged = current.clone();
            merged.extend(patch.clone());
            for (k, v) in &desired {
                proptest::prop_assert_eq!(merged.get(k), Some(v));
            }
            for (k, v) in &current {
                if !desired.contains_key(k) {
                    proptest::prop_assert_eq!(merged.get(k), Some(v));
                }
            }
            // minimal: nothing in the patch is already there
            for (k, v) in &patch {
                proptest::prop_assert_ne!(current.get(k), Some(v));
            }
            proptest::prop_assert!(annotations_patch(&merged, &desired).is_empty());
            proptest::prop_assert_eq!(patch.is_empty(), merged == current);
        }

        #[test]
        fn tunnel_interface_holds_an_encap_ip(
            addrs in proptest::collection::vec(("(lo|eth[0-2])", 0u8..4), 0..8),
            encaps in proptest::collection::vec(0u8..4, 0..3),
        ) {
            let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
            let addrs: Vec<(String, IpAddr)> = addrs.into_iter().map(|(n, a)| (n, ip(a))).collect();
            let encaps: Vec<IpAddr> = encaps.into_iter().map(ip).collect();
            match tunnel_interface(&addrs, &encaps) {
                Some(name) => proptest::prop_assert!(addrs.iter().any(|(n, a)| *n == name && encaps.contains(a))),
                None => proptest::prop_assert!(!addrs.iter().any(|(_, a)| encaps.contains(a))),
            }
        }
    }

    #[test]
    fn metrics_line() {
        let t = chassis_metrics_text("node-a", true);
        assert!(
            t.contains("ferrovn_node_chassis_registered{chassis=\"node-a\"} 1\n"),
            "{t}"
        );
        let t = chassis_metrics_text("node-a", false);
        assert!(t.contains("} 0\n"), "{t}");
    }
}
