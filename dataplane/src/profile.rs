//! Node profile selection: does this node run OVS-DPDK (`dpdk`) or the kernel path (`kernel`)?
//!
//! The decision is a pure function ([`select_profile`]) of plain facts gathered by thin readers
//! ([`read_hugepages`], [`read_cpu_flags`], [`read_hugetlbfs_mounts`], all taking their
//! `/proc`/`/sys` paths as parameters so fixture trees test them):
//!
//! 1. The node label `ovn.kubernetes.io/ovs_dp_type` (Kube-OVN's) decides when present:
//!    `kernel` → kernel; `userspace` → DPDK **if it can run** (DPDK vswitchd installed, the CPU
//!    flags the DPDK build needs, enough free hugepages). If it cannot, the node falls back to
//!    kernel with a reason saying why (`strict: true` in the DPDK config turns this into an
//!    error instead): a mislabelled node keeps serving ordinary pods, and DPDK pods there are
//!    served by the vhost helper, rather than the whole node losing its network.
//! 2. Without the label, the node is DPDK only when it is configured for it (DPDK devices in the
//!    node config) AND everything DPDK needs is there; otherwise kernel, with the reason.
//!
//! The result is published as node annotations ([`ProfileDecision::annotations`]) and a
//! Prometheus gauge `ferrovn_node_profile{profile,reason} 1` ([`ProfileDecision::metrics_text`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dpdk::config::{DpdkMemory, DpdkNodeConfig, DpdkSettings};
use crate::types::NodeProfile;

/// Kube-OVN's node label selecting the datapath (`userspace` | `kernel`).
pub const OVS_DP_TYPE_LABEL: &str = ferrovn_api::annotations::OVS_DP_TYPE_LABEL;
/// Node annotation: `dpdk` | `kernel`.
pub const PROFILE_ANNOTATION: &str = "ferrovn.io/profile";
/// Node annotation: the machine-readable reason code (see [`ReasonCode`]).
pub const PROFILE_REASON_ANNOTATION: &str = "ferrovn.io/profile-reason";
/// Node annotation: the human-readable explanation.
pub const PROFILE_MESSAGE_ANNOTATION: &str = "ferrovn.io/profile-message";
/// Node annotation: the DPDK settings in force (JSON of [`DpdkSettings`]), DPDK nodes only.
pub const DPDK_SETTINGS_ANNOTATION: &str = "ferrovn.io/dpdk-settings";

/// CPU flags (as `/proc/cpuinfo` spells them) the Debian DPDK 22.11 build needs on x86_64: it
/// is compiled with `-march=corei7` (see `pkg-config --cflags libdpdk`), i.e. Nehalem: SSE up
/// to 4.2, POPCNT and CMPXCHG16B. EAL refuses to start on a CPU without them.
pub const X86_64_DPDK_CPU_FLAGS: &[&str] = &[
    "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16",
];

/// The CPU flags the DPDK build needs on `arch` (`std::env::consts::ARCH` spelling).
pub fn required_cpu_flags(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => X86_64_DPDK_CPU_FLAGS,
        // arm64 builds target armv8-a whose baseline (asimd) every arm64 CPU has
        _ => &[],
    }
}

/// One hugepage pool of the kernel (one page size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepagePool {
    pub page_size_kib: u64,
    pub total: u64,
    pub free: u64,
}

impl HugepagePool {
    pub fn free_mib(&self) -> u64 {
        self.free * self.page_size_kib / 1024
    }
    pub fn total_mib(&self) -> u64 {
        self.total * self.page_size_kib / 1024
    }
    /// MiB DPDK can count on: free pages, or all of them when OVS-DPDK already holds its share.
    pub fn usable_mib(&self, ovs_dpdk_initialized: bool) -> u64 {
        if ovs_dpdk_initialized {
            self.total_mib()
        } else {
            self.free_mib()
        }
    }
}

/// A mounted hugetlbfs and its page size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbfsMount {
    pub path: PathBuf,
    pub page_size_kib: u64,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileInputs {
    /// Value of the `ovn.kubernetes.io/ovs_dp_type` label, if the node has it.
    pub dp_type_label: Option<String>,
    pub hugepages: Vec<HugepagePool>,
    pub hugetlbfs_mounts: Vec<HugetlbfsMount>,
    /// The node's DPDK configuration (node config file); `None` = not configured for DPDK.
    pub dpdk: Option<DpdkNodeConfig>,
    /// CPU architecture (`std::env::consts::ARCH` spelling).
    pub arch: String,
    pub cpu_flags: BTreeSet<String>,
    /// Whether the DPDK-enabled ovs-vswitchd binary exists on the node.
    pub dpdk_vswitchd_present: bool,
    /// OVS-DPDK already runs (`Open_vSwitch dpdk_initialized`): the pages it holds are its
    /// own, so the pool's total (not its free count) is what DPDK has (agent restarts).
    pub ovs_dpdk_initialized: bool,
}

/// Why a profile was chosen; the string form is stable (metric label, annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Label `userspace`, and DPDK can run.
    LabelUserspace,
    /// Label `kernel`.
    LabelKernel,
    /// No label; DPDK configured and everything it needs present.
    Detected,
    /// No label and no DPDK configuration: an ordinary node.
    NotConfigured,
    /// DPDK wanted (label or config) but not enough free hugepages (and `--no-huge` not allowed).
    NoHugepages,
    /// DPDK wanted, hugepages free, but no hugetlbfs mount of that page size.
    NoHugetlbfs,
    /// DPDK wanted but the CPU lacks flags the DPDK build needs.
    CpuFlagsMissing,
    /// DPDK wanted but the DPDK ovs-vswitchd is not installed.
    NoDpdkVswitchd,
    /// DPDK wanted by the label but no DPDK configuration (cores, memory) for the node.
    NoDpdkConfig,
    /// The label has a value other than `userspace` / `kernel`.
    LabelInvalid,
    /// DPDK without hugepages (`allow_no_huge` in the config): works, slower, for labs/CI.
    NoHugeMode,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::LabelUserspace => "label-userspace",
            ReasonCode::LabelKernel => "label-kernel",
            ReasonCode::Detected => "detected",
            ReasonCode::NotConfigured => "not-configured",
            ReasonCode::NoHugepages => "no-hugepages",
            ReasonCode::NoHugetlbfs => "no-hugetlbfs",
            ReasonCode::CpuFlagsMissing => "cpu-flags-missing",
            ReasonCode::NoDpdkVswitchd => "no-dpdk-vswitchd",
            ReasonCode::NoDpdkConfig => "no-dpdk-config",
            ReasonCode::LabelInvalid => "label-invalid",
            ReasonCode::NoHugeMode => "no-huge-mode",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chosen profile, why, and (DPDK) the settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDecision {
    pub profile: NodeProfile,
    pub reason: ReasonCode,
    /// One line a human understands: what was checked and what was missing.
    pub message: String,
    /// True when DPDK was asked for (label or configuration) but the node runs kernel.
    pub fell_back: bool,
    pub settings: Option<DpdkSettings>,
}

/// `strict: true` and DPDK was asked for by the label but cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node labelled {OVS_DP_TYPE_LABEL}=userspace cannot run DPDK ({reason}): {message}")]
pub struct ProfileError {
    pub reason: ReasonCode,
    pub message: String,
}

pub fn profile_name(p: NodeProfile) -> &'static str {
    match p {
        NodeProfile::Dpdk => "dpdk",
        NodeProfile::Kernel => "kernel",
    }
}

/// What stands in the way of DPDK on this node, if anything; on success the settings.
fn dpdk_feasibility(
    inputs: &ProfileInputs,
    cfg: &DpdkNodeConfig,
) -> Result<(DpdkSettings, ReasonCode, String), (ReasonCode, String)> {
    if !inputs.dpdk_vswitchd_present {
        return Err((
            ReasonCode::NoDpdkVswitchd,
            "the DPDK ovs-vswitchd is not installed (package openvswitch-switch-dpdk)".into(),
        ));
    }
    let missing: Vec<&str> = required_cpu_flags(&inputs.arch)
        .iter()
        .copied()
        .filter(|f| !inputs.cpu_flags.contains(*f))
        .collect();
    if !missing.is_empty() {
        return Err((
            ReasonCode::CpuFlagsMissing,
            format!(
                "CPU lacks {} needed by the DPDK build (-march=corei7)",
                missing.join(",")
            ),
        ));
    }
    let need_mib = cfg.total_socket_mem_mib();
    // prefer the largest page size that can hold the whole socket memory
    let mut pools: Vec<&HugepagePool> = inputs.hugepages.iter().collect();
    pools.sort_by_key(|p| std::cmp::Reverse(p.page_size_kib));
    let held = inputs.ovs_dpdk_initialized;
    let fitting = pools
        .iter()
        .find(|p| p.usable_mib(held) >= need_mib && p.usable_mib(held) > 0);
    let free_desc = || {
        if pools.is_empty() {
            "no hugepage pools".to_string()
        } else {
            pools
                .iter()
                .map(|p| format!("{}x{}kB free", p.free, p.page_size_kib))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match fitting {
        Some(pool) => {
            let mount = match &cfg.huge_dir {
                Some(dir) => inputs
                    .hugetlbfs_mounts
                    .iter()
                    .find(|m| &m.path == dir && m.page_size_kib == pool.page_size_kib),
                None => inputs
                    .hugetlbfs_mounts
                    .iter()
                    .find(|m| m.page_size_kib == pool.page_size_kib),
            };
            let Some(mount) = mount else {
                if cfg.allow_no_huge {
                    return Ok((
                        cfg.settings(DpdkMemory::NoHuge {
                            memory_mib: cfg.no_huge_memory_mib.unwrap_or(1024),
                        }),
                        ReasonCode::NoHugeMode,
                        format!(
                            "no hugetlbfs mount of {}kB pages: running DPDK WITHOUT hugepages (allow_no_huge), slower",
                            pool.page_size_kib
                        ),
                    ));
                }
                return Err((
                    ReasonCode::NoHugetlbfs,
                    format!(
                        "{} MiB of {}kB hugepages free but no hugetlbfs mount with pagesize={}kB{}",
                        pool.usable_mib(held),
                        pool.page_size_kib,
                        pool.page_size_kib,
                        cfg.huge_dir
                            .as_ref()
                            .map(|d| format!(" at {}", d.display()))
                            .unwrap_or_default()
                    ),
                ));
            };
            let memory = DpdkMemory::Hugepages {
                huge_dir: mount.path.clone(),
                page_size_kib: pool.page_size_kib,
                socket_mem_mib: cfg.socket_mem_mib.clone(),
                socket_limit_mib: cfg
                    .socket_limit_mib
                    .clone()
                    .unwrap_or_else(|| cfg.socket_mem_mib.clone()),
            };
            let msg = format!(
                "{need_mib} MiB socket memory on {}kB hugepages at {} ({} MiB {})",
                pool.page_size_kib,
                mount.path.display(),
                pool.usable_mib(held),
                if held {
                    "in the pool, OVS-DPDK running"
                } else {
                    "free"
                }
            );
            Ok((cfg.settings(memory), ReasonCode::Detected, msg))
        }
        None if cfg.allow_no_huge => Ok((
            cfg.settings(DpdkMemory::NoHuge {
                memory_mib: cfg.no_huge_memory_mib.unwrap_or(1024),
            }),
            ReasonCode::NoHugeMode,
            format!(
                "only {} for {need_mib} MiB: running DPDK WITHOUT hugepages (allow_no_huge), slower",
                free_desc()
            ),
        )),
        None => Err((
            ReasonCode::NoHugepages,
            format!("{need_mib} MiB of hugepages needed, {}", free_desc()),
        )),
    }
}

/// Chooses the node profile. Pure: same inputs, same answer.
pub fn select_profile(inputs: &ProfileInputs) -> Result<ProfileDecision, ProfileError> {
    let strict = inputs.dpdk.as_ref().is_some_and(|c| c.strict);
    let kernel = |reason: ReasonCode, message: String, fell_back: bool| ProfileDecision {
        profile: NodeProfile::Kernel,
        reason,
        message,
        fell_back,
        settings: None,
    };
    let label = inputs.dp_type_label.as_deref().map(str::trim);
    match label {
        Some("kernel") => Ok(kernel(
            ReasonCode::LabelKernel,
            format!("{OVS_DP_TYPE_LABEL}=kernel"),
            false,
        )),
        Some("userspace") => {
            let Some(cfg) = &inputs.dpdk else {
                let message = format!(
                    "{OVS_DP_TYPE_LABEL}=userspace but the node config has no DPDK section (cores, memory)"
                );
                return Err(ProfileError {
                    reason: ReasonCode::NoDpdkConfig,
                    message,
                })
                .or_else(|e| {
                    if strict {
                        Err(e)
                    } else {
                        Ok(kernel(e.reason, e.message, true))
                    }
                });
            };
            match dpdk_feasibility(inputs, cfg) {
                Ok((settings, code, msg)) => Ok(ProfileDecision {
                    profile: NodeProfile::Dpdk,
                    reason: if code == ReasonCode::NoHugeMode {
                        code
                    } else {
                        ReasonCode::LabelUserspace
                    },
                    message: format!("{OVS_DP_TYPE_LABEL}=userspace; {msg}"),
                    fell_back: false,
                    settings: Some(settings),
                }),
                Err((code, msg)) if strict => Err(ProfileError {
                    reason: code,
                    message: msg,
                }),
                Err((code, msg)) => Ok(kernel(
                    code,
                    format!(
                        "{OVS_DP_TYPE_LABEL}=userspace but {msg}; running the kernel profile (DPDK pods are served by the vhost helper)"
                    ),
                    true,
                )),
            }
        }
        Some(other) => Ok(kernel(
            ReasonCode::LabelInvalid,
            format!(
                "{OVS_DP_TYPE_LABEL}={other:?} is neither \"userspace\" nor \"kernel\"; running the kernel profile"
            ),
            inputs.dpdk.is_some(),
        )),
        None => {
            let Some(cfg) = inputs.dpdk.as_ref().filter(|c| !c.devices.is_empty()) else {
                return Ok(kernel(
                    ReasonCode::NotConfigured,
                    "no label and no DPDK devices in the node config".into(),
                    false,
                ));
            };
            match dpdk_feasibility(inputs, cfg) {
                Ok((settings, code, msg)) => Ok(ProfileDecision {
                    profile: NodeProfile::Dpdk,
                    reason: code,
                    message: format!("{} DPDK device(s) configured; {msg}", cfg.devices.len()),
                    fell_back: false,
                    settings: Some(settings),
                }),
                Err((code, msg)) => Ok(kernel(
                    code,
                    format!("DPDK devices configured but {msg}; running the kernel profile"),
                    true,
                )),
            }
        }
    }
}

impl ProfileDecision {
    /// The node annotations publishing the decision (the controller writes them to the Node;
    /// the lab writes them to the node's state file).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(
            PROFILE_ANNOTATION.to_string(),
            profile_name(self.profile).to_string(),
        );
        a.insert(
            PROFILE_REASON_ANNOTATION.to_string(),
            self.reason.as_str().to_string(),
        );
        a.insert(PROFILE_MESSAGE_ANNOTATION.to_string(), self.message.clone());
        if let Some(s) = &self.settings
            && let Ok(json) = serde_json::to_string(s)
        {
            a.insert(DPDK_SETTINGS_ANNOTATION.to_string(), json);
        }
        a
    }

    /// Registers `ferrovn_node_profile{profile,reason} 1` in `registry`.
    pub fn register_metric(&self, registry: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        family
            .get_or_create(&vec![
                (
                    "profile".to_string(),
                    profile_name(self.profile).to_string(),
                ),
                ("reason".to_string(), self.reason.as_str().to_string()),
            ])
            .set(1);
        registry.register(
            "ferrovn_node_profile",
            "The node's profile (dpdk|kernel) and why it was chosen",
            family,
        );
    }

    /// The gauge in Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.register_metric(&mut registry);
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Readers: thin, paths as parameters.

/// Errors reading the node's facts.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_u64(path: &Path) -> Result<u64, ReadError> {
    let t = read_text(path)?;
    t.trim().parse().map_err(|e| ReadError::Parse {
        path: path.to_path_buf(),
        reason: format!("{:?} is not a count: {e}", t.trim()),
    })
}

/// Hugepage pools from sysfs (`<sys>/kernel/mm/hugepages/hugepages-<N>kB/{nr,free}_hugepages`).
/// Falls back to `meminfo` (default page size only) when that directory is missing.
pub fn read_hugepages(sys_root: &Path, meminfo: &Path) -> Result<Vec<HugepagePool>, ReadError> {
    let dir = sys_root.join("kernel/mm/hugepages");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return parse_meminfo_hugepages(&read_text(meminfo)?).map_err(|reason| {
                ReadError::Parse {
                    path: meminfo.to_path_buf(),
                    reason,
                }
            });
        }
        Err(source) => return Err(ReadError::Io { path: dir, source }),
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReadError::Io {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(size) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        pools.push(HugepagePool {
            page_size_kib: size,
            total: read_u64(&entry.path().join("nr_hugepages"))?,
            free: read_u64(&entry.path().join("free_hugepages"))?,
        });
    }
    pools.sort_by_key(|p| p.page_size_kib);
    Ok(pools)
}

/// `HugePages_Total`, `HugePages_Free`, `Hugepagesize` from `/proc/meminfo` text.
pub fn parse_meminfo_hugepages(text: &str) -> Result<Vec<HugepagePool>, String> {
    let mut total = None;
    let mut free = None;
    let mut size = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let parsed = || {
            val.parse::<u64>()
                .map_err(|e| format!("{key} {val:?}: {e}"))
        };
        match key {
            "HugePages_Total:" => total = Some(parsed()?),
            "HugePages_Free:" => free = Some(parsed()?),
            "Hugepagesize:" => size = Some(parsed()?),
            _ => {}
        }
    }
    match (total, free, size) {
        (Some(total), Some(free), Some(page_size_kib)) => Ok(vec![HugepagePool {
            page_size_kib,
            total,
            free,
        }]),
        (None, None, None) => Ok(Vec::new()),
        _ => Err("incomplete HugePages_Total/HugePages_Free/Hugepagesize".into()),
    }
}

/// The `flags` of the first processor in `/proc/cpuinfo` text (x86 `flags`, arm `Features`).
pub fn parse_cpu_flags(text: &str) -> BTreeSet<String> {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "flags" | "Features").then_some(v)
        })
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

pub fn read_cpu_flags(cpuinfo: &Path) -> Result<BTreeSet<String>, ReadError> {
    Ok(parse_cpu_flags(&read_text(cpuinfo)?))
}

fn parse_size_kib(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1),
        'M' | 'm' => (&s[..s.len() - 1], 1024),
        'G' | 'g' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 0),
    };
    let n: u64 = num.parse().ok()?;
    if mult == 0 {
        // bytes
        Some(n / 1024)
    } else {
        n.checked_mul(mult)
    }
}

/// hugetlbfs mounts from `/proc/mounts` text (`pagesize=` option; absent = `default_kib`).
pub fn parse_hugetlbfs_mounts(text: &str, default_kib: u64) -> Vec<HugetlbfsMount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[2] != "hugetlbfs" {
                return None;
            }
            let size = f[3]
                .split(',')
                .find_map(|o| o.strip_prefix("pagesize="))
                .and_then(parse_size_kib)
                .unwrap_or(default_kib);
            // /proc/mounts escapes spaces as \040
            Some(HugetlbfsMount {
                path: PathBuf::from(f[1].replace("\\040", " ")),
                page_size_kib: size,
            })
        })
        .collect()
}

pub fn read_hugetlbfs_mounts(
    mounts: &Path,
    default_kib: u64,
) -> Result<Vec<HugetlbfsMount>, ReadError> {
    Ok(parse_hugetlbfs_mounts(&read_text(mounts)?, default_kib))
}

/// Where the readers look (all overridable for tests and containers with a host /proc at
/// another path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    pub sys: PathBuf,
    pub meminfo: PathBuf,
    pub cpuinfo: PathBuf,
    pub mounts: PathBuf,
    pub dpdk_vswitchd: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sys: "/sys".into(),
            meminfo: "/proc/meminfo".into(),
            cpuinfo: "/proc/cpuinfo".into(),
            mounts: "/proc/mounts".into(),
            dpdk_vswitchd: "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk".into(),
        }
    }
}

/// Gathers [`ProfileInputs`] from the host.
pub fn gather_inputs(
    paths: &HostPaths,
    dp_type_label: Option<String>,
    dpdk: Option<DpdkNodeConfig>,
    ovs_dpdk_initialized: bool,
) -> Result<ProfileInputs, ReadError> {
    let hugepages = read_hugepages(&paths.sys, &paths.meminfo)?;
    let default_kib = parse_meminfo_hugepages(&read_text(&paths.meminfo)?)
        .ok()
        .and_then(|p| p.first().map(|p| p.page_size_kib))
        .unwrap_or(2048);
    Ok(ProfileInputs {
        dp_type_label,
        hugepages,
        hugetlbfs_mounts: read_hugetlbfs_mounts(&paths.mounts, default_kib)?,
        dpdk,
        arch: std::env::consts::ARCH.to_string(),
        cpu_flags: read_cpu_flags(&paths.cpuinfo)?,
        dpdk_vswitchd_present: paths.dpdk_vswitchd.is_file(),
        ovs_dpdk_initialized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpdk::config::DpdkDevice;
    use proptest::prelude::*;

    fn flags() -> BTreeSet<String> {
        X86_64_DPDK_CPU_FLAGS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn cfg(devices: usize) -> DpdkNodeConfig {
        let mut c = DpdkNodeConfig::example();
        c.devices = (0..devices)
            .map(|i| DpdkDevice {
                name: format!("dpdk{i}"),
                devargs: format!("0000:0{i}:00.0"),
                n_rxq: None,
                mtu: None,
            })
            .collect();
        c
    }

    fn ok_inputs() -> ProfileInputs {
        ProfileInputs {
            dp_type_label: None,
            hugepages: vec![
                HugepagePool {
                    page_size_kib: 2048,
                    total: 1024,
                    free: 1024,
                },
                HugepagePool {
                    page_size_kib: 1048576,
                    total: 0,
                    free: 0,
                },
            ],
            hugetlbfs_mounts: vec![HugetlbfsMount {
                path: "/dev/hugepages".into(),
                page_size_kib: 2048,
            }],
            dpdk: Some(cfg(1)),
            arch: "x86_64".into(),
            cpu_flags: flags(),
            dpdk_vswitchd_present: true,
            ovs_dpdk_initialized: false,
        }
    }

    #[test]
    fn running_ovs_dpdk_keeps_its_pages() {
        // OVS-DPDK took the pages: an agent restart must not fall back to kernel
        let mut i = ok_inputs();
        i.hugepages[0].free = 0;
        assert_eq!(
            select_profile(&i).expect("d").reason,
            ReasonCode::NoHugepages
        );
        i.ovs_dpdk_initialized = true;
        let d = select_profile(&i).expect("d");
        assert_eq!(d.profile, NodeProfile::Dpdk, "{}", d.message);
        assert!(d.message.contains("OVS-DPDK running"), "{}", d.message);
    }

    #[test]
    fn detected_when_configured_and_possible() {
        let d = select_profile(&ok_inputs()).expect("decision");
        assert_eq!(d.profile, NodeProfile::Dpdk);
        assert_eq!(d.reason, ReasonCode::Detected);
        let s = d.settings.expect("settings");
        match s.memory {
            DpdkMemory::Hugepages {
                huge_dir,
                page_size_kib,
                ..
            } => {
                assert_eq!(huge_dir, PathBuf::from("/dev/hugepages"));
                assert_eq!(page_size_kib, 2048);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn label_wins_both_ways() {
        let mut i = ok_inputs();
        i.dp_type_label = Some("kernel".into());
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Kernel, ReasonCode::LabelKernel)
        );
        assert!(!d.fell_back);
        // userspace with no devices configured: the label is enough
        let mut i = ok_inputs();
        i.dp_type_label = Some("userspace".into());
        i.dpdk = Some(cfg(0));
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Dpdk, ReasonCode::LabelUserspace)
        );
    }

    #[test]
    fn no_label_no_devices_is_an_ordinary_node() {
        let mut i = ok_inputs();
        i.dpdk = Some(cfg(0));
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Kernel, ReasonCode::NotConfigured)
        );
        i.dpdk = None;
        assert_eq!(
            select_profile(&i).expect("d").reason,
            ReasonCode::NotConfigured
        );
    }

    #[test]
    fn each_missing_prerequisite_names_itself() {
        type Mutation = Box<dyn Fn(&mut ProfileInputs)>;
        let cases: Vec<(Mutation, ReasonCode)> = vec![
            (
                Box::new(|i| i.dpdk_vswitchd_present = false),
                ReasonCode::NoDpdkVswitchd,
            ),
            (
                Box::new(|i| {
                    i.cpu_flags.remove("sse4_2");
                }),
                ReasonCode::CpuFlagsMissing,
            ),
            (Box::new(|i| i.hugepages.clear()), ReasonCode::NoHugepages),
            (
                Box::new(|i| i.hugepages[0].free = 10),
                ReasonCode::NoHugepages,
            ),
            (
                Box::new(|i| i.hugetlbfs_mounts.clear()),
                ReasonCode::NoHugetlbfs,
            ),
        ];
        for (mutate, want) in cases {
            // detection: falls back
            let mut i = ok_inputs();
            mutate(&mut i);
            let d = select_profile(&i).expect("decision");
            assert_eq!(
                (d.profile, d.reason),
                (NodeProfile::Kernel, want),
                "{}",
                d.message
            );
            assert!(d.fell_back);
            assert!(d.settings.is_none());
            // label: falls back too, saying the label asked for DPDK
            i.dp_type_label = Some("userspace".into());
            let d = select_profile(&i).expect("decision");
            assert_eq!((d.profile, d.reason), (NodeProfile::Kernel, want));
            assert!(d.message.contains("userspace"), "{}", d.message);
            // strict: an error instead
            if let Some(c) = i.dpdk.as_mut() {
                c.strict = true;
            }
            let e = select_profile(&i).expect_err("strict");
            assert_eq!(e.reason, want);
        }
    }

    #[test]
    fn cpu_flags_message_lists_what_is_missing() {
        let mut i = ok_inputs();
        i.cpu_flags.remove("popcnt");
        i.cpu_flags.remove("cx16");
        let d = select_profile(&i).expect("decision");
        assert!(d.message.contains("popcnt,cx16"), "{}", d.message);
        // other architectures need no x86 flags
        i.arch = "aarch64".into();
        assert_eq!(select_profile(&i).expect("d").profile, NodeProfile::Dpdk);
    }

    #[test]
    fn userspace_label_without_dpdk_config() {
        let mut i = ok_inputs();
        i.dp_type_label = Some("userspace".into());
        i.dpdk = None;
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Kernel, ReasonCode::NoDpdkConfig)
        );
    }

    #[test]
    fn invalid_label_is_kernel_and_says_so() {
        let mut i = ok_inputs();
        i.dp_type_label = Some("dpdk".into());
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Kernel, ReasonCode::LabelInvalid)
        );
        assert!(d.message.contains("\"dpdk\""));
    }

    #[test]
    fn no_huge_mode_when_allowed() {
        let mut i = ok_inputs();
        i.hugepages.clear();
        if let Some(c) = i.dpdk.as_mut() {
            c.allow_no_huge = true;
        }
        let d = select_profile(&i).expect("decision");
        assert_eq!(
            (d.profile, d.reason),
            (NodeProfile::Dpdk, ReasonCode::NoHugeMode)
        );
        assert!(matches!(
            d.settings.expect("s").memory,
            DpdkMemory::NoHuge { memory_mib: 1024 }
        ));
        i.dp_type_label = Some("userspace".into());
        assert_eq!(
            select_profile(&i).expect("d").reason,
            ReasonCode::NoHugeMode
        );
    }

    #[test]
    fn one_gig_pages_preferred_when_they_fit() {
        let mut i = ok_inputs();
        i.hugepages[1].total = 2;
        i.hugepages[1].free = 2;
        i.hugetlbfs_mounts.push(HugetlbfsMount {
            path: "/dev/hugepages1G".into(),
            page_size_kib: 1048576,
        });
        let d = select_profile(&i).expect("decision");
        match d.settings.expect("s").memory {
            DpdkMemory::Hugepages { huge_dir, .. } => {
                assert_eq!(huge_dir, PathBuf::from("/dev/hugepages1G"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn annotations_and_metric() {
        let d = select_profile(&ok_inputs()).expect("decision");
        let a = d.annotations();
        assert_eq!(a[PROFILE_ANNOTATION], "dpdk");
        assert_eq!(a[PROFILE_REASON_ANNOTATION], "detected");
        let s: DpdkSettings =
            serde_json::from_str(&a[DPDK_SETTINGS_ANNOTATION]).expect("settings json");
        assert_eq!(Some(s), d.settings);
        let text = d.metrics_text();
        assert!(
            text.contains(r#"ferrovn_node_profile{profile="dpdk",reason="detected"} 1"#),
            "{text}"
        );
        let mut i = ok_inputs();
        i.dpdk = None;
        let k = select_profile(&i).expect("decision");
        assert!(!k.annotations().contains_key(DPDK_SETTINGS_ANNOTATION));
        assert!(
            k.metrics_text()
                .contains(r#"profile="kernel",reason="not-configured""#)
        );
    }

    #[test]
    fn meminfo_cpuinfo_mounts_parsers() {
        let mi = "MemTotal: 1 kB\nHugePages_Total:     512\nHugePages_Free:      500\nHugePages_Rsvd: 0\nHugepagesize:       2048 kB\n";
        assert_eq!(
            parse_meminfo_hugepages(mi),
            Ok(vec![HugepagePool {
                page_size_kib: 2048,
                total: 512,
                free: 500
            }])
        );
        assert_eq!(parse_meminfo_hugepages("MemTotal: 1 kB\n"), Ok(vec![]));
        assert!(parse_meminfo_hugepages("HugePages_Total: x\n").is_err());
        assert!(parse_meminfo_hugepages("HugePages_Total: 1\n").is_err());
        let ci =
            "processor\t: 0\nflags\t\t: fpu sse sse2 sse4_2\n\nprocessor\t: 1\nflags\t\t: other\n";
        let f = parse_cpu_flags(ci);
        assert!(f.contains("sse4_2") && !f.contains("other"));
        let m = "sysfs /sys sysfs rw 0 0\nnodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
                 hugetlbfs /mnt/h\\040g hugetlbfs rw,pagesize=1024M 0 0\nnone /h hugetlbfs rw 0 0\n";
        assert_eq!(
            parse_hugetlbfs_mounts(m, 2048),
            vec![
                HugetlbfsMount {
                    path: "/dev/hugepages".into(),
                    page_size_kib: 2048
                },
                HugetlbfsMount {
                    path: "/mnt/h g".into(),
                    page_size_kib: 1048576
                },
                HugetlbfsMount {
                    path: "/h".into(),
                    page_size_kib: 2048
                },
            ]
        );
    }

    /// A sysfs/proc tree shaped like the kernel's.
    fn fixture(dir: &Path, pools: &[(u64, u64, u64)], with_sysfs: bool) -> HostPaths {
        let sys = dir.join("sys");
        if with_sysfs {
            for (size, total, free) in pools {
                let p = sys.join(format!("kernel/mm/hugepages/hugepages-{size}kB"));
                std::fs::create_dir_all(&p).expect("mkdir");
                std::fs::write(p.join("nr_hugepages"), format!("{total}\n")).expect("w");
                std::fs::write(p.join("free_hugepages"), format!("{free}\n")).expect("w");
                std::fs::write(p.join("surplus_hugepages"), "0\n").expect("w");
            }
        }
        let (t, f) = pools.first().map(|p| (p.1, p.2)).unwrap_or((0, 0));
        std::fs::write(
            dir.join("meminfo"),
            format!("MemTotal: 24000000 kB\nHugePages_Total: {t}\nHugePages_Free: {f}\nHugepagesize: 2048 kB\n"),
        )
        .expect("w");
        std::fs::write(
            dir.join("cpuinfo"),
            format!(
                "processor\t: 0\nflags\t\t: fpu {}\n",
                X86_64_DPDK_CPU_FLAGS.join(" ")
            ),
        )
        .expect("w");
        std::fs::write(
            dir.join("mounts"),
            "/dev/vda / ext4 rw 0 0\nnodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
        )
        .expect("w");
        let vs = dir.join("ovs-vswitchd-dpdk");
        std::fs::write(&vs, "").expect("w");
        HostPaths {
            sys,
            meminfo: dir.join("meminfo"),
            cpuinfo: dir.join("cpuinfo"),
            mounts: dir.join("mounts"),
            dpdk_vswitchd: vs,
        }
    }

    #[test]
    fn gather_from_fixture_trees() {
        let d = tempfile::tempdir().expect("tmp");
        let paths = fixture(d.path(), &[(2048, 512, 400), (1048576, 0, 0)], true);
        let i = gather_inputs(&paths, None, Some(cfg(1)), false).expect("inputs");
        assert_eq!(i.hugepages.len(), 2);
        assert_eq!(i.hugepages[0].free, 400);
        assert_eq!(i.hugetlbfs_mounts.len(), 1);
        assert!(i.dpdk_vswitchd_present);
        if std::env::consts::ARCH == "x86_64" {
            assert!(i.cpu_flags.contains("sse4_2"));
        }
        assert_eq!(select_profile(&i).expect("d").profile, NodeProfile::Dpdk);
        // no sysfs tree: meminfo fallback
        let d2 = tempfile::tempdir().expect("tmp");
        let paths2 = fixture(d2.path(), &[(2048, 8, 8)], false);
        let i2 = gather_inputs(&paths2, None, Some(cfg(1)), false).expect("inputs");
        assert_eq!(
            i2.hugepages,
            vec![HugepagePool {
                page_size_kib: 2048,
                total: 8,
                free: 8
            }]
        );
        let dec = select_profile(&i2).expect("d");
        assert_eq!(dec.reason, ReasonCode::NoHugepages, "{}", dec.message);
        // a garbage count is an error naming the file
        std::fs::write(
            paths
                .sys
                .join("kernel/mm/hugepages/hugepages-2048kB/free_hugepages"),
            "lots\n",
        )
        .expect("w");
        let e = gather_inputs(&paths, None, None, false).expect_err("bad count");
        assert!(e.to_string().contains("free_hugepages"), "{e}");
    }

    #[test]
    fn this_machine_reads_without_error() {
        let i = gather_inputs(&HostPaths::default(), None, None, false).expect("host facts");
        if std::env::consts::ARCH == "x86_64" {
            assert!(i.cpu_flags.contains("sse2"));
        }
        assert_eq!(
            select_profile(&i).expect("d").reason,
            ReasonCode::NotConfigured
        );
    }

    fn arb_inputs() -> impl Strategy<Value = ProfileInputs> {
        (
            prop::option::of(prop_oneof![
                Just("userspace".to_string()),
                Just("kernel".to_string()),
                "[a-z]{0,8}"
            ]),
            prop::collection::vec(
                (
                    prop_oneof![Just(2048u64), Just(1048576)],
                    0u64..2000,
                    0u64..2000,
                ),
                0..3,
            ),
            any::<bool>(),
            prop::option::of((0usize..3, any::<bool>(), any::<bool>(), 1u32..4096)),
            prop::collection::btree_set(prop::sample::select(X86_64_DPDK_CPU_FLAGS.to_vec()), 0..9),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(label, pools, mounted, dpdk, flags, vswitchd, held)| {
                ProfileInputs {
                    ovs_dpdk_initialized: held,
                    dp_type_label: label,
                    hugetlbfs_mounts: if mounted {
                        pools
                            .iter()
                            .map(|p| HugetlbfsMount {
                                path: format!("/hp{}", p.0).into(),
                                page_size_kib: p.0,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    hugepages: pools
                        .into_iter()
                        .map(|(s, t, f)| HugepagePool {
                            page_size_kib: s,
                            total: t.max(f),
                            free: f,
                        })
                        .collect(),
                    dpdk: dpdk.map(|(n, strict, nohuge, mem)| {
                        let mut c = cfg(n);
                        c.strict = strict;
                        c.allow_no_huge = nohuge;
                        c.socket_mem_mib = vec![mem];
                        c
                    }),
                    arch: "x86_64".into(),
                    cpu_flags: flags.into_iter().map(str::to_string).collect(),
                    dpdk_vswitchd_present: vswitchd,
                }
            })
    }

    proptest! {
        #[test]
        fn decision_invariants(i in arb_inputs()) {
            let label = i.dp_type_label.clone();
            match select_profile(&i) {
                Ok(d) => {
                    // settings exactly when DPDK
                    prop_assert_eq!(d.settings.is_some(), d.profile == NodeProfile::Dpdk);
                    // the kernel label always wins
                    if label.as_deref() == Some("kernel") {
                        prop_assert_eq!(d.reason, ReasonCode::LabelKernel);
                    }
                    // DPDK only with every prerequisite met
                    if d.profile == NodeProfile::Dpdk {
                        prop_assert!(i.dpdk_vswitchd_present);
                        prop_assert!(X86_64_DPDK_CPU_FLAGS.iter().all(|f| i.cpu_flags.contains(*f)));
                        let c = i.dpdk.as_ref().expect("dpdk config");
                        if let Some(DpdkSettings { memory: DpdkMemory::Hugepages { page_size_kib, .. }, .. }) = &d.settings {
                            let pool = i.hugepages.iter().find(|p| p.page_size_kib == *page_size_kib).expect("pool");
                            prop_assert!(pool.usable_mib(i.ovs_dpdk_initialized) >= c.total_socket_mem_mib());
                        } else {
                            prop_assert!(c.allow_no_huge);
                        }
                        prop_assert!(label.as_deref() == Some("userspace") || !c.devices.is_empty());
                    }
                    // falling back implies DPDK was asked for
                    if d.fell_back {
                        prop_assert!(label.as_deref() == Some("userspace") || i.dpdk.is_some());
                    }
                    // deterministic
                    prop_assert_eq!(select_profile(&i).ok(), Some(d.clone()));
                    let a = d.annotations();
                    prop_assert_eq!(a[PROFILE_REASON_ANNOTATION].as_str(), d.reason.as_str());
                }
                Err(e) => {
                    prop_assert_eq!(label.as_deref(), Some("userspace"));
                    prop_assert!(i.dpdk.as_ref().is_some_and(|c| c.strict));
                    prop_assert!(e.reason != ReasonCode::LabelUserspace);
                }
            }
        }

        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = parse_meminfo_hugepages(&s);
            let _ = parse_cpu_flags(&s);
            let _ = parse_hugetlbfs_mounts(&s, 2048);
        }
    }
}
