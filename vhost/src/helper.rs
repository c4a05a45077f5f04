//! The helper's control side: ports (vhost PMD + kernel PMD pairs), their workers, the state
//! file and the metrics registry. Every control request goes through [`Helper::handle`], one at
//! a time (DPDK's device hot-plug is not thread-safe).

use crate::cores::CoreError;
use crate::dpdk::{DpdkError, Eal, EthPort, Mempool};
use crate::protocol::{
    Counters, PortInfo, PortSpec, Request, Response, SpecError, kernel_devargs, vhost_devargs,
};
use crate::relay::{Pair, PairCounters, Worker};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("port {name}: already exists with a different spec ({existing}); remove it first")]
    Conflict { name: String, existing: String },
    #[error("port {name}: {what} {value:?} is already used by port {other}")]
    Shared {
        name: String,
        what: &'static str,
        value: String,
        other: String,
    },
    #[error("port {0}: no such port")]
    NoSuchPort(String),
    #[error("port {name}: relay worker on core {core} did not release the port")]
    WorkerStuck { name: String, core: usize },
    #[error("the helper is shutting down")]
    ShuttingDown,
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
}

/// What the helper keeps across its own restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub ports: Vec<PortSpec>,
}

impl StateFile {
    pub fn load(path: &Path) -> Result<StateFile, HelperError> {
        let err = |reason: String| HelperError::State {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON state: {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Atomic replace: a crash leaves either the old or the new file.
    pub fn save(&self, path: &Path) -> Result<(), HelperError> {
        let err = |reason: String| HelperError::State {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: String,
}

#[derive(Debug, Default)]
struct Metrics {
    rx_packets: Family<PortLabel, Counter>,
    rx_bytes: Family<PortLabel, Counter>,
    rx_dropped: Family<PortLabel, Counter>,
    tx_packets: Family<PortLabel, Counter>,
    tx_bytes: Family<PortLabel, Counter>,
    tx_dropped: Family<PortLabel, Counter>,
    pod_connected: Family<PortLabel, Gauge>,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("ferrovn_vhost");
        r.register(
            "rx_packets",
            "Packets received from the pod and relayed to the kernel",
            self.rx_packets.clone(),
        );
        r.register(
            "rx_bytes",
            "Bytes received from the pod",
            self.rx_bytes.clone(),
        );
        r.register(
            "rx_dropped",
            "Packets from the pod the kernel side did not take",
            self.rx_dropped.clone(),
        );
        r.register(
            "tx_packets",
            "Packets relayed from the kernel to the pod",
            self.tx_packets.clone(),
        );
        r.register(
            "tx_bytes",
            "Bytes relayed to the pod",
            self.tx_bytes.clone(),
        );
        r.register(
            "tx_dropped",
            "Packets for the pod its vhost ring did not take (pod absent or slow)",
            self.tx_dropped.clone(),
        );
        r.register(
            "pod_connected",
            "1 when the pod's app is connected to the vhost-user socket",
            self.pod_connected.clone(),
        );
        r
    }

    fn counters_for(&self, port: &str) -> PairCounters {
        let l = PortLabel {
            port: port.to_owned(),
        };
        PairCounters {
            rx_packets: self.rx_packets.get_or_create(&l).clone(),
            rx_bytes: self.rx_bytes.get_or_create(&l).clone(),
            rx_dropped: self.rx_dropped.get_or_create(&l).clone(),
            tx_packets: self.tx_packets.get_or_create(&l).clone(),
            tx_bytes: self.tx_bytes.get_or_create(&l).clone(),
            tx_dropped: self.tx_dropped.get_or_create(&l).clone(),
        }
    }

    fn forget(&self, port: &str) {
        let l = PortLabel {
            port: port.to_owned(),
        };
        self.rx_packets.remove(&l);
        self.rx_bytes.remove(&l);
        self.rx_dropped.remove(&l);
        self.tx_packets.remove(&l);
        self.tx_bytes.remove(&l);
        self.tx_dropped.remove(&l);
        self.pod_connected.remove(&l);
    }
}

/// Start-up settings of the helper.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    pub cores: Vec<usize>,
    /// Nap length of an idle worker; zero = pure busy polling.
    pub idle_sleep: Duration,
    pub mbufs: u32,
    pub descriptors: u16,
    pub state_file: Option<PathBuf>,
}

struct PortEntry {
    spec: PortSpec,
    worker: usize,
    vhost: EthPort,
    kernel: EthPort,
    counters: PairCounters,
}

pub struct Helper {
    eal: Option<Eal>,
    pool: Mempool,
    workers: Vec<Worker>,
    ports: BTreeMap<String, PortEntry>,
    next_index: u32,
    metrics: Metrics,
    state_file: Option<PathBuf>,
}

const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

impl Helper {
    /// Creates the mbuf pool and starts one pinned worker per core. EAL must be running.
    pub fn start(eal: Eal, config: &HelperConfig) -> Result<Helper, HelperError> {
        let pool = Mempool::create(&eal, "ferrovn_vhost", config.mbufs, 256)?;
        let mut workers: Vec<Worker> = Vec::new();
        for &core in &config.cores {
            // Registration gives the worker an lcore id, hence a mempool cache.
            let reg = move || match crate::dpdk::register_current_thread() {
                Some(lcore) => tracing::debug!(core, lcore, "relay worker registered with DPDK"),
                None => tracing::warn!(
                    core,
                    errno = crate::dpdk::rte_errno(),
                    "rte_thread_register failed: this worker runs without a mempool cache"
                ),
            };
            match Worker::spawn(core, config.idle_sleep, reg) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in workers {
                        w.stop();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Helper {
            eal: Some(eal),
            pool,
            workers,
            ports: BTreeMap::new(),
            next_index: 0,
            metrics: Metrics::default(),
            state_file: config.state_file.clone(),
        })
    }

    /// Re-creates the ports of the state file (when one is configured). Returns the ports that
    /// could not be re-created, with the reason; the others run.
    pub fn restore(&mut self) -> Result<Vec<(String, HelperError)>, HelperError> {
        let Some(path) = self.state_file.clone() else {
            return Ok(Vec::new());
        };
        let state = StateFile::load(&path)?;
        let mut failed = Vec::new();
        for spec in state.ports {
            let name = spec.name.clone();
            if let Err(e) = self.add_port(spec) {
                failed.push((name, e));
            }
        }
        self.persist()?;
        Ok(failed)
    }

    pub fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::AddPort(spec) => self.add_port(spec).map(|info| Response::ports(vec![info])),
            Request::RemovePort { name } => self.remove_port(&name).map(|()| Response {
                ok: true,
                ..Response::default()
            }),
            Request::ListPorts | Request::Stats { name: None } => Ok(Response::ports(self.list())),
            Request::Stats { name: Some(name) } => match self.ports.get(&name) {
                Some(p) => Ok(Response::ports(vec![self.info(p)])),
                None => Err(HelperError::NoSuchPort(name)),
            },
            Request::Metrics => Ok(Response {
                ok: true,
                metrics: Some(self.metrics_text()),
                ..Response::default()
            }),
        };
        result.unwrap_or_else(|e| Response::error(e.to_string()))
    }

    pub fn add_port(&mut self, spec: PortSpec) -> Result<PortInfo, HelperError> {
        spec.validate()?;
        if let Some(existing) = self.ports.get(&spec.name) {
            if existing.spec == spec {
                return Ok(self.info(existing)); // idempotent: the agent may re-add after a restart
            }
            return Err(HelperError::Conflict {
                name: spec.name.clone(),
                existing: describe(&existing.spec),
            });
        }
        for other in self.ports.values() {
            if other.spec.socket == spec.socket {
                return Err(HelperError::Shared {
                    name: spec.name.clone(),
                    what: "socket",
                    value: spec.socket.display().to_string(),
                    other: other.spec.name.clone(),
                });
            }
            if other.spec.kernel_iface == spec.kernel_iface {
                return Err(HelperError::Shared {
                    name: spec.name.clone(),
                    what: "kernel_iface",
                    value: spec.kernel_iface.clone(),
                    other: other.spec.name.clone(),
                });
            }
        }
        let Some(eal) = self.eal.as_ref() else {
            return Err(HelperError::ShuttingDown);
        };
        let index = self.next_index;
        self.next_index += 1;
        let vhost = EthPort::create(eal, &vhost_devargs(index, &spec), &self.pool, 1024)?;
        let kernel = match EthPort::create(eal, &kernel_devargs(index, &spec), &self.pool, 1024) {
            Ok(k) => k,
            Err(e) => {
                vhost.close();
                return Err(e.into());
            }
        };
        let worker = (0..self.workers.len())
            .min_by_key(|&i| self.workers[i].pair_count())
            .unwrap_or(0);
        let counters = self.metrics.counters_for(&spec.name);
        if let Some(w) = self.workers.get(worker) {
            w.add(Pair {
                name: spec.name.clone(),
                pod: vhost.queue(),
                kernel: kernel.queue(),
                counters: counters.clone(),
            });
        }
        tracing::info!(port = %spec.name, vhost = vhost.devargs(), kernel = kernel.devargs(), core = self.workers.get(worker).map(Worker::core), "port added");
        let name = spec.name.clone();
        self.ports.insert(
            name.clone(),
            PortEntry {
                spec,
                worker,
                vhost,
                kernel,
                counters,
            },
        );
        self.persist()?;
        let entry = self
            .ports
            .get(&name)
            .ok_or_else(|| HelperError::NoSuchPort(name.clone()))?;
        Ok(self.info(entry))
    }

    pub fn remove_port(&mut self, name: &str) -> Result<(), HelperError> {
        let entry = self
            .ports
            .remove(name)
            .ok_or_else(|| HelperError::NoSuchPort(name.to_owned()))?;
        let released = self
            .workers
            .get(entry.worker)
            .is_none_or(|w| w.remove(name, RELEASE_TIMEOUT));
        if !released {
            // Closing devices a worker still polls would be a use-after-free: keep them.
            let core = self.workers.get(entry.worker).map_or(0, Worker::core);
            std::mem::forget(entry.vhost);
            std::mem::forget(entry.kernel);
            return Err(HelperError::WorkerStuck {
                name: name.to_owned(),
                core,
            });
        }
        entry.vhost.close();
        entry.kernel.close();
        self.metrics.forget(name);
        tracing::info!(port = name, "port removed");
        self.persist()
    }

    pub fn list(&self) -> Vec<PortInfo> {
        self.ports.values().map(|p| self.info(p)).collect()
    }

    fn info(&self, p: &PortEntry) -> PortInfo {
        let c = &p.counters;
        PortInfo {
            spec: p.spec.clone(),
            core: self.workers.get(p.worker).map_or(0, Worker::core),
            pod_connected: p.vhost.link_up(),
            counters: Counters {
                rx_packets: c.rx_packets.get(),
                rx_bytes: c.rx_bytes.get(),
                rx_dropped: c.rx_dropped.get(),
                tx_packets: c.tx_packets.get(),
                tx_bytes: c.tx_bytes.get(),
                tx_dropped: c.tx_dropped.get(),
            },
        }
    }

    /// Prometheus text exposition of every port.
    pub fn metrics_text(&self) -> String {
        for p in self.ports.values() {
            self.metrics
                .pod_connected
                .get_or_create(&PortLabel {
                    port: p.spec.name.clone(),
                })
                .set(i64::from(p.vhost.link_up()));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry()).is_err() {
            out.clear();
        }
        out
    }

    pub fn mbufs_available(&self) -> u32 {
        self.pool.available()
    }

    fn persist(&self) -> Result<(), HelperError> {
        match &self.state_file {
            Some(path) => StateFile {
                ports: self.ports.values().map(|p| p.spec.clone()).collect(),
            }
            .save(path),
            None => Ok(()),
        }
    }

    /// Stops the workers, closes every port (the state file keeps them for the next start) and
    /// shuts the EAL down.
    pub fn shutdown(&mut self) {
        for w in std::mem::take(&mut self.workers) {
            w.stop();
        }
        for (_, p) in std::mem::take(&mut self.ports) {
            p.vhost.close();
            p.kernel.close();
        }
        if let Some(eal) = self.eal.take() {
            eal.cleanup();
        }
    }
}

fn describe(spec: &PortSpec) -> String {
    serde_json::to_string(spec).unwrap_or_else(|_| spec.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::KernelKind;

    #[test]
    fn state_file_round_trips_and_missing_means_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        assert_eq!(
            StateFile::load(&path).expect("missing is empty"),
            StateFile::default()
        );
        let state = StateFile {
            ports: vec![PortSpec {
                name: "p".into(),
                socket: "/s".into(),
                kernel_iface: "k".into(),
                kernel: KernelKind::Tap,
                mac: None,
            }],
        };
        state.save(&path).expect("save");
        assert_eq!(StateFile::load(&path).expect("load"), state);
        std::fs::write(&path, "{not json").expect("write");
        let err = StateFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("JSON"), "{err}");
    }
}
