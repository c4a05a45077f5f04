//! The run description: one TOML file shape for quick mode (everything local, nodes as network
//! namespaces) and bare metal (each node runs the harness on its own scenarios; `merge` joins the
//! result directories). See docs/perf.md.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("config field {field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// Which scenarios a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Tiny durations, one repetition, no hugepages, no OVS (CI).
    Smoke,
    /// Everything local in namespaces on a small machine (< 5 minutes on 2 cores).
    Quick,
    /// Bare metal: real NICs, pinned cores per role, longer runs.
    Full,
}

/// A scenario family; a config may enable a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// iperf3 / UDP flood / ping over 127.0.0.1 (baseline).
    Loopback,
    /// Debian's reference `bridge` + `host-local` CNI plugins (baseline).
    BridgeCni,
    /// testpmd net_vhost <-> net_virtio_user, no switch (baseline, the ceiling).
    RawTestpmd,
    /// FerrOVN kernel pods: veth through OVS (netdev datapath) + OVN, same and cross node.
    OvsVeth,
    /// FerrOVN DPDK pods: vhost-user through OVS-DPDK + OVN.
    OvsDpdk,
    /// FerrOVN DPDK pod on a kernel node: vhost-user served by the ferrovn-vhost helper.
    VhostHelper,
    /// ADD -> ready latency and pods/s through the ferrovn-cni plugin and node agent.
    ControlPlane,
    /// The cluster-wide IPAM library, ops/s.
    Ipam,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Loopback,
        Family::BridgeCni,
        Family::RawTestpmd,
        Family::OvsVeth,
        Family::OvsDpdk,
        Family::VhostHelper,
        Family::ControlPlane,
        Family::Ipam,
    ];
}

/// CPUs per role. Every busy poller needs its own core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cores {
    /// testpmd "pods" (traffic generators / sinks).
    pub testpmd: Vec<u32>,
    /// OVS-DPDK PMD threads (pmd-cpu-mask).
    pub pmd: Vec<u32>,
    /// ferrovn-vhost relay workers.
    pub helper: Vec<u32>,
    /// kernel-path traffic sender (UDP flood, iperf3 client).
    pub sender: u32,
    /// kernel-path receiver.
    pub receiver: u32,
}

/// One node of a bare-metal run (ssh-less: the harness runs on each node itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// `dpdk` or `kernel` (the FerrOVN node profile) or `central`.
    pub role: String,
    /// NIC PCI addresses handed to DPDK (empty on kernel nodes).
    #[serde(default)]
    pub nics: Vec<String>,
    /// Scenario families this node runs when started with `--node <name>`.
    #[serde(default)]
    pub scenarios: Vec<Family>,
    /// Free text shown in the report (what else runs there).
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// Frame sizes in bytes without FCS.
    pub frame_sizes: Vec<u32>,
    /// Seconds of one measuring window.
    pub duration_secs: f64,
    /// Seconds of warm-up before each window.
    pub warmup_secs: f64,
    /// Independent runs per kernel-path measurement (DPDK: per-second windows of one run).
    pub repetitions: u32,
    /// Pings per latency measurement.
    pub ping_count: u32,
    /// Pods added one after the other (ADD -> ready latency).
    pub pods_sequential: u32,
    /// Pods added at once (pods made ready per second).
    pub pods_concurrent: u32,
    /// IPAM operations per repetition.
    pub ipam_ops: u32,
    /// 2 MiB hugepages to reserve for DPDK scenarios (0 = run DPDK with --no-huge).
    pub hugepages_2m: u64,
    pub cores: Cores,
    pub scenarios: Vec<Family>,
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_string(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: &str| {
            Err(ConfigError::Invalid {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if self.frame_sizes.is_empty() {
            return bad("frame_sizes", "empty");
        }
        if let Some(s) = self
            .frame_sizes
            .iter()
            .find(|&&s| !(64..=9000).contains(&s))
        {
            return bad("frame_sizes", &format!("{s} outside 64..=9000"));
        }
        if !(self.duration_secs > 0.0 && self.duration_secs <= 3600.0) {
            return bad("duration_secs", "must be in (0, 3600]");
        }
        if !(self.warmup_secs >= 0.0 && self.warmup_secs <= 600.0) {
            return bad("warmup_secs", "must be in [0, 600]");
        }
        if self.repetitions == 0 {
            return bad("repetitions", "must be at least 1");
        }
        if self.ping_count == 0 {
            return bad("ping_count", "must be at least 1");
        }
        if self.cores.testpmd.is_empty() {
            return bad("cores.testpmd", "needs at least one CPU");
        }
        if self.cores.pmd.is_empty() {
            return bad("cores.pmd", "needs at least one CPU");
        }
        if self.cores.helper.is_empty() {
            return bad("cores.helper", "needs at least one CPU");
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return bad("nodes.name", "duplicate node name");
        }
        for n in &self.nodes {
            if !["dpdk", "kernel", "central"].contains(&n.role.as_str()) {
                return bad(
                    &format!("nodes[{}].role", n.name),
                    "must be dpdk, kernel or central",
                );
            }
            if let Some(p) = n.nics.iter().find(|p| !is_pci_address(p)) {
                return bad(
                    &format!("nodes[{}].nics", n.name),
                    &format!("{p} is not a PCI address like 0000:3b:00.0"),
                );
            }
        }
        Ok(())
    }

    /// Enabled families, restricted to a node's list when running as `node`.
    pub fn families_for(&self, node: Option<&str>) -> Result<Vec<Family>, ConfigError> {
        let Some(name) = node else {
            return Ok(self.scenarios.clone());
        };
        let n = self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                field: "--node".into(),
                reason: format!("no node named {name} in the config"),
            })?;
        Ok(self
            .scenarios
            .iter()
            .copied()
            .filter(|f| n.scenarios.contains(f))
            .collect())
    }

    /// The built-in smoke run: seconds, no hugepages, no OVS.
    pub fn smoke() -> Self {
        Config {
            mode: Mode::Smoke,
            frame_sizes: vec![64, 1500],
            duration_secs: 0.5,
            warmup_secs: 0.2,
            repetitions: 1,
            ping_count: 10,
            pods_sequential: 2,
            pods_concurrent: 2,
            ipam_ops: 20_000,
            hugepages_2m: 0,
            cores: Cores {
                testpmd: vec![0],
                pmd: vec![1],
                helper: vec![1],
                sender: 1,
                receiver: 0,
            },
            scenarios: vec![
                Family::Loopback,
                Family::BridgeCni,
                Family::RawTestpmd,
                Family::Ipam,
            ],
            nodes: Vec::new(),
        }
    }
}

/// `dddd:bb:dd.f` (domain, bus, device, function in hex).
pub fn is_pci_address(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '.']).collect();
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 4)
        && hex(parts[1], 2)
        && hex(parts[2], 2)
        && parts[3].len() == 1
        && parts[3].chars().all(|c| ('0'..='7').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = include_str!("../configs/quick.toml");
    const BAREMETAL: &str = include_str!("../configs/baremetal-example.toml");
    const DPDK_AB: &str = include_str!("../configs/dpdk-ab.toml");

    #[test]
    fn shipped_configs_parse() {
        let q = Config::parse(QUICK, "quick.toml").expect("quick.toml");
        assert_eq!(q.mode, Mode::Quick);
        assert_eq!(q.frame_sizes, vec![64, 512, 1500]);
        let b = Config::parse(BAREMETAL, "baremetal").expect("baremetal");
        assert_eq!(b.mode, Mode::Full);
        assert!(b.nodes.iter().any(|n| !n.nics.is_empty()));
        let fams = b.families_for(Some("dpdk-1")).expect("node");
        assert!(fams.contains(&Family::OvsDpdk));
        assert!(b.families_for(Some("nope")).is_err());
        // The A/B config runs only the raw vhost baseline and the OVS-DPDK rows.
        let ab = Config::parse(DPDK_AB, "dpdk-ab.toml").expect("dpdk-ab.toml");
        assert_eq!(ab.mode, Mode::Quick);
        let fams = ab.families_for(None).expect("all nodes");
        assert!(fams.contains(&Family::OvsDpdk));
        assert!(!fams.contains(&Family::OvsVeth));
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = QUICK.replace("repetitions = ", "repetitions = 0 #");
        match Config::parse(&bad, "x") {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "repetitions"),
            other => panic!("{other:?}"),
        }
        let bad = QUICK.replace("frame_sizes = [", "frame_sizes = [10, ");
        assert!(matches!(
            Config::parse(&bad, "x"),
            Err(ConfigError::Invalid { field, .. }) if field == "frame_sizes"
        ));
        assert!(matches!(
            Config::parse("mode = 1", "x"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(is_pci_address("0000:af:1f.7"));
        assert!(!is_pci_address("3b:00.0"));
        assert!(!is_pci_address("0000:3b:00.8"));
        assert!(!is_pci_address("0000:3g:00.0"));
    }
}
