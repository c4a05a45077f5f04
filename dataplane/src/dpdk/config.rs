//! DPDK node configuration: the node config file ([`DpdkNodeConfig`]), the settings in force
//! once the profile is chosen ([`DpdkSettings`]), the pure plan of what OVSDB must hold
//! ([`plan_dpdk_node`]: `Open_vSwitch other_config`, the tunnel bridge and its physical ports),
//! and the applier writing it through OVSDB ([`apply_other_config`], [`apply_phys_bridge`]).
//!
//! `dpdk-init` and the EAL settings are read by ovs-vswitchd when DPDK initialises, i.e. they
//! must be in the database BEFORE `ovs-vswitchd-dpdk` starts (or it must be restarted):
//! [`apply_other_config`] reports whether DPDK was already initialised.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrovn_ovsdb::{Atom, Datum, Mutator, Operation, Transaction, WaitUntil};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ovs::{OVS_DB, OvsClient, OvsError, map_of};

/// Geneve overhead with an IPv4 underlay: outer IPv4 20 + UDP 8 + Geneve 8 + OVN's Geneve
/// option 8 + inner Ethernet 14 (the underlay MTU counts from the outer IP header).
pub const GENEVE_OVERHEAD_V4: u32 = 58;
/// Same with an IPv6 underlay (outer header 40 instead of 20).
pub const GENEVE_OVERHEAD_V6: u32 = 78;

/// Pod MTU under Geneve on an underlay of `underlay_mtu` (the userspace datapath never
/// fragments, so a bigger pod MTU silently drops full-size packets). `None` below 68 + overhead.
pub fn pod_mtu(underlay_mtu: u32, ipv6_underlay: bool) -> Option<u32> {
    let overhead = if ipv6_underlay {
        GENEVE_OVERHEAD_V6
    } else {
        GENEVE_OVERHEAD_V4
    };
    underlay_mtu.checked_sub(overhead).filter(|m| *m >= 68)
}

/// One physical port of OVS-DPDK (`type=dpdk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpdkDevice {
    /// OVS port name, e.g. `dpdk0`.
    pub name: String,
    /// `options:dpdk-devargs`: a PCI address on bare metal (`0000:01:00.0`), or a vdev
    /// (`net_tap0,iface=X`, `net_af_packet0,iface=eth1`) where no NIC can be given to DPDK.
    pub devargs: String,
    /// `options:n_rxq`; derived for net_tap/net_af_packet (see [`plan_dpdk_node`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_rxq: Option<u32>,
    /// `mtu_request` (the underlay MTU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The tunnel bridge for userspace tunnelling: the physical ports are its ports and the
/// node's tunnel IP sits on its internal port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    #[serde(default = "default_phys_bridge")]
    pub bridge: String,
    /// The tunnel endpoint address with its prefix, e.g. `192.168.100.2/24`.
    pub cidr: IpNet,
    #[serde(default = "default_underlay_mtu")]
    pub mtu: u32,
}

fn default_phys_bridge() -> String {
    "br-phy".into()
}
fn default_underlay_mtu() -> u32 {
    1500
}
fn default_socket_mem() -> Vec<u32> {
    vec![1024]
}
fn default_file_prefix() -> String {
    "ferrovn-ovs".into()
}
fn default_maxsleep() -> Option<u32> {
    Some(500)
}

/// The DPDK section of the node config file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpdkNodeConfig {
    /// `dpdk-socket-mem`: MiB per NUMA node.
    #[serde(default = "default_socket_mem")]
    pub socket_mem_mib: Vec<u32>,
    /// `dpdk-socket-limit`; defaults to `socket_mem_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_limit_mib: Option<Vec<u32>>,
    /// Cores of OVS's non-PMD DPDK threads (`dpdk-lcore-mask`).
    #[serde(default)]
    pub lcore_cpus: Vec<u32>,
    /// Cores of the busy-polling PMD threads (`pmd-cpu-mask`): pin them, one thread per core.
    #[serde(default)]
    pub pmd_cpus: Vec<u32>,
    /// `pmd-maxsleep` (µs): an idle PMD sleeps up to this long instead of spinning.
    #[serde(default = "default_maxsleep")]
    pub pmd_maxsleep_us: Option<u32>,
    /// hugetlbfs mount to use; default: any mount of the chosen page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_dir: Option<PathBuf>,
    /// EAL `--file-prefix`, unique per DPDK process on the host.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// EAL `--no-pci`: keep DPDK away from PCI devices (mandatory on VMs whose virtio NIC it
    /// would otherwise probe; with vdev-only devices).
    #[serde(default)]
    pub no_pci: bool,
    /// EAL `--iova-mode` (`va` | `pa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iova_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_eal_args: Vec<String>,
    /// Run DPDK without hugepages when none can be had (slow; labs/CI).
    #[serde(default)]
    pub allow_no_huge: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_huge_memory_mib: Option<u32>,
    /// A `userspace`-labelled node that cannot run DPDK is an error instead of a fallback.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub devices: Vec<DpdkDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Underlay>,
}

/// How DPDK gets its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum DpdkMemory {
    Hugepages {
        huge_dir: PathBuf,
        page_size_kib: u64,
        socket_mem_mib: Vec<u32>,
        socket_limit_mib: Vec<u32>,
    },
    /// `--no-huge --legacy-mem -m N` + `per-port-memory=true`.
    NoHuge { memory_mib: u32 },
}

/// The DPDK settings in force on a DPDK-profile node (published as a node annotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpdkSettings {
    pub memory: DpdkMemory,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lcore_cpus: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pmd_cpus: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmd_maxsleep_us: Option<u32>,
    pub file_prefix: String,
    pub no_pci: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iova_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_eal_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DpdkDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Underlay>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("DPDK node config {path}: {reason}")]
    File { path: String, reason: String },
    #[error("DPDK node config field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl DpdkNodeConfig {
    /// A small, valid configuration (docs, tests).
    pub fn example() -> Self {
        DpdkNodeConfig {
            socket_mem_mib: vec![512],
            socket_limit_mib: None,
            lcore_cpus: vec![0],
            pmd_cpus: vec![1],
            pmd_maxsleep_us: Some(500),
            huge_dir: None,
            file_prefix: default_file_prefix(),
            no_pci: true,
            iova_mode: Some("va".into()),
            extra_eal_args: Vec::new(),
            allow_no_huge: false,
            no_huge_memory_mib: None,
            strict: false,
            devices: Vec::new(),
            underlay: None,
        }
    }

    /// Parses and validates the JSON config file body.
    pub fn from_json(path: &str, body: &[u8]) -> Result<Self, ConfigError> {
        let c: DpdkNodeConfig = serde_json::from_slice(body).map_err(|e| ConfigError::File {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.socket_mem_mib.is_empty() || self.socket_mem_mib.iter().all(|m| *m == 0) {
            return bad("socket_mem_mib", "needs at least one non-zero entry".into());
        }
        if let Some(l) = &self.socket_limit_mib
            && l.len() != self.socket_mem_mib.len()
        {
            return bad(
                "socket_limit_mib",
                format!(
                    "{} entries but socket_mem_mib has {}",
                    l.len(),
                    self.socket_mem_mib.len()
                ),
            );
        }
        if let Some(c) = self.pmd_cpus.iter().find(|c| self.lcore_cpus.contains(c)) {
            return bad(
                "pmd_cpus",
                format!("core {c} is also in lcore_cpus: a busy-polling PMD needs its core"),
            );
        }
        if self.file_prefix.is_empty()
            || !self
                .file_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return bad(
                "file_prefix",
                format!(
                    "{:?}: use ASCII letters, digits, '-', '_'",
                    self.file_prefix
                ),
            );
        }
        if let Some(m) = &self.iova_mode
            && m != "va"
            && m != "pa"
        {
            return bad("iova_mode", format!("{m:?} is neither \"va\" nor \"pa\""));
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.devices {
            if d.name.is_empty() || d.devargs.is_empty() {
                return bad("devices", "every device needs a name and devargs".into());
            }
            if !names.insert(d.name.as_str()) {
                return bad("devices", format!("port name {} used twice", d.name));
            }
        }
        if let Some(u) = &self.underlay
            && pod_mtu(u.mtu, u.cidr.addr().is_ipv6()).is_none()
        {
            return bad(
                "underlay.mtu",
                format!("{} leaves no room for Geneve", u.mtu),
            );
        }
        Ok(())
    }

    pub fn total_socket_mem_mib(&self) -> u64 {
        self.socket_mem_mib.iter().map(|m| u64::from(*m)).sum()
    }

    /// The settings in force with `memory` decided by the profile selection.
    pub fn settings(&self, memory: DpdkMemory) -> DpdkSettings {
        DpdkSettings {
            memory,
            lcore_cpus: self.lcore_cpus.clone(),
            pmd_cpus: self.pmd_cpus.clone(),
            pmd_maxsleep_us: self.pmd_maxsleep_us,
            file_prefix: self.file_prefix.clone(),
            no_pci: self.no_pci,
            iova_mode: self.iova_mode.clone(),
            extra_eal_args: self.extra_eal_args.clone(),
            devices: self.devices.clone(),
            underlay: self.underlay.clone(),
        }
    }
}

/// A CPU list as an OVS/DPDK hex mask (`[1]` → `0x2`, `[0, 65]` → `0x20000000000000001`).
pub fn cpu_mask(cpus: &[u32]) -> Option<String> {
    let max = *cpus.iter().max()?;
    let nibbles = max as usize / 4 + 1;
    let mut n = vec![0u8; nibbles];
    for c in cpus {
        n[*c as usize / 4] |= 1 << (c % 4);
    }
    let mut s = String::from("0x");
    for v in n.iter().rev() {
        let _ = write!(s, "{v:x}");
    }
    Some(s)
}

/// The `other_config` keys FerrOVN manages (removed when no longer wanted).
pub const MANAGED_OTHER_CONFIG: &[&str] = &[
    "dpdk-init",
    "dpdk-socket-mem",
    "dpdk-socket-limit",
    "dpdk-lcore-mask",
    "pmd-cpu-mask",
    "pmd-maxsleep",
    "dpdk-extra",
    "per-port-memory",
];

/// One physical port to put on the tunnel bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysPort {
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub mtu_request: Option<u32>,
}

/// What OVSDB must hold on a DPDK node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkOvsPlan {
    pub other_config: BTreeMap<String, String>,
    /// The tunnel bridge (datapath netdev) and its ports; `None` without an underlay section.
    pub phys_bridge: Option<String>,
    pub phys_ports: Vec<PhysPort>,
    /// Tunnel endpoint address to put on the tunnel bridge's internal port.
    pub encap_cidr: Option<IpNet>,
    /// Pod MTU under Geneve on this underlay.
    pub pod_mtu: Option<u32>,
}

fn devargs_kind(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or("")
}

/// Pure: settings → desired OVSDB state.
///
/// Queue rules for the kernel-visible vdevs (found on these machines): OVS gives every port
/// `n_txq` = PMD threads + 1; `net_tap` needs `n_rxq == n_txq`, `net_af_packet` needs
/// `qpairs` ≥ that, with `n_rxq` = `qpairs`.
pub fn plan_dpdk_node(s: &DpdkSettings) -> DpdkOvsPlan {
    let mut oc = BTreeMap::new();
    oc.insert("dpdk-init".to_string(), "true".to_string());
    let mut eal: Vec<String> = Vec::new();
    match &s.memory {
        DpdkMemory::Hugepages {
            huge_dir,
            socket_mem_mib,
            socket_limit_mib,
            ..
        } => {
            let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            oc.insert("dpdk-socket-mem".into(), join(socket_mem_mib));
            oc.insert("dpdk-socket-limit".into(), join(socket_limit_mib));
            eal.push(format!("--huge-dir={}", huge_dir.display()));
        }
        DpdkMemory::NoHuge { memory_mib } => {
            // OVS adds --in-memory unless --legacy-mem is given; EAL rejects --no-huge with it.
            // The default shared mempool (262144 mbufs) does not fit: per-port pools instead.
            oc.insert("per-port-memory".into(), "true".into());
            eal.push("--no-huge".into());
            eal.push("--legacy-mem".into());
            eal.push(format!("-m {memory_mib}"));
        }
    }
    eal.push(format!("--file-prefix={}", s.file_prefix));
    if let Some(m) = &s.iova_mode {
        eal.push(format!("--iova-mode={m}"));
    }
    if s.no_pci {
        eal.push("--no-pci".into());
    }
    eal.extend(s.extra_eal_args.iter().cloned());
    oc.insert("dpdk-extra".into(), eal.join(" "));
    if let Some(m) = cpu_mask(&s.lcore_cpus) {
        oc.insert("dpdk-lcore-mask".into(), m);
    }
    if let Some(m) = cpu_mask(&s.pmd_cpus) {
        oc.insert("pmd-cpu-mask".into(), m);
    }
    if let Some(ms) = s.pmd_maxsleep_us {
        oc.insert("pmd-maxsleep".into(), ms.to_string());
    }
    let pmds = s.pmd_cpus.len().max(1) as u32;
    let phys_ports = s
        .devices
        .iter()
        .map(|d| {
            let mut devargs = d.devargs.clone();
            let mut n_rxq = d.n_rxq;
            match devargs_kind(&d.devargs) {
                k if k.starts_with("net_tap") => n_rxq = Some(pmds + 1),
                k if k.starts_with("net_af_packet") => {
                    let qpairs = d
                        .devargs
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("qpairs="))
                        .and_then(|q| q.parse::<u32>().ok());
                    let q = match qpairs {
                        Some(q) => q,
                        None => {
                            devargs.push_str(&format!(",qpairs={}", pmds + 1));
                            pmds + 1
                        }
                    };
                    n_rxq = Some(q);
                }
                _ => {}
            }
            let mut options = BTreeMap::new();
            options.insert("dpdk-devargs".to_string(), devargs);
            if let Some(q) = n_rxq {
                options.insert("n_rxq".to_string(), q.to_string());
            }
            PhysPort {
                name: d.name.clone(),
                options,
                mtu_request: d.mtu.or(s.underlay.as_ref().map(|u| u.mtu)),
            }
        })
        .collect();
    DpdkOvsPlan {
        other_config: oc,
        phys_bridge: s.underlay.as_ref().map(|u| u.bridge.clone()),
        phys_ports,
        encap_cidr: s.underlay.as_ref().map(|u| u.cidr),
        pod_mtu: s
            .underlay
            .as_ref()
            .and_then(|u| pod_mtu(u.mtu, u.cidr.addr().is_ipv6())),
    }
}

/// The transaction replacing FerrOVN's `other_config` keys with `desired`.
pub fn other_config_txn(desired: &BTreeMap<String, String>) -> Transaction {
    let mut txn = Transaction::new(OVS_DB);
    txn.push(
        Operation::mutate("Open_vSwitch")
            .mutation(
                "other_config",
                Mutator::Delete,
                Datum::set(MANAGED_OTHER_CONFIG.iter().copied()),
            )
            .mutation(
                "other_config",
                Mutator::Insert,
                Datum::map(desired.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
    );
    txn
}

/// What [`apply_other_config`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherConfigOutcome {
    /// The managed keys changed.
    pub changed: bool,
    /// DPDK was already initialised: changed EAL settings need an ovs-vswitchd restart.
    pub restart_needed: bool,
}

/// Writes the DPDK `other_config` (idempotent).
pub async fn apply_other_config(
    ovs: &OvsClient,
    plan: &DpdkOvsPlan,
) -> Result<OtherConfigOutcome, OvsError> {
    let probe = Transaction::new(OVS_DB)
        .with(Operation::select("Open_vSwitch").columns(["other_config", "dpdk_initialized"]));
    let res = ovs.transact(&probe).await?;
    let row = res
        .first()
        .and_then(|r| r.rows())
        .and_then(|r| r.first())
        .ok_or_else(|| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: "no Open_vSwitch row".into(),
        })?;
    let current: BTreeMap<String, String> = map_of(row, "other_config")
        .into_iter()
        .filter(|(k, _)| MANAGED_OTHER_CONFIG.contains(&k.as_str()))
        .collect();
    let initialized = row
        .get("dpdk_initialized")
        .and_then(Datum::as_atom)
        .and_then(Atom::as_bool)
        .unwrap_or(false);
    if current == plan.other_config {
        return Ok(OtherConfigOutcome {
            changed: false,
            restart_needed: false,
        });
    }
    ovs.transact(&other_config_txn(&plan.other_config)).await?;
    // pmd-cpu-mask and pmd-maxsleep apply at runtime; the EAL settings do not
    let eal_changed = [
        "dpdk-init",
        "dpdk-socket-mem",
        "dpdk-socket-limit",
        "dpdk-lcore-mask",
        "dpdk-extra",
        "per-port-memory",
    ]
    .iter()
    .any(|k| current.get(*k) != plan.other_config.get(*k));
    Ok(OtherConfigOutcome {
        changed: true,
        restart_needed: initialized && eal_changed,
    })
}

fn string_map(m: &BTreeMap<String, String>) -> Datum {
    Datum::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn named(n: &str) -> Datum {
    Datum::set([Atom::NamedUuid(n.to_string())])
}

/// Creates/updates the tunnel bridge (datapath netdev) and its physical ports; existing
/// ports are updated in place (re-adding a DPDK port would re-initialise the device).
pub async fn apply_phys_bridge(ovs: &OvsClient, plan: &DpdkOvsPlan) -> Result<(), OvsError> {
    let Some(bridge) = &plan.phys_bridge else {
        return Ok(());
    };
    let mut probe = Transaction::new(OVS_DB).with(
        Operation::select("Bridge")
            .where_eq("name", bridge.as_str())
            .columns(["_uuid"]),
    );
    for p in &plan.phys_ports {
        probe.push(
            Operation::select("Interface")
                .where_eq("name", p.name.as_str())
                .columns(["_uuid"]),
        );
    }
    let res = ovs.transact(&probe).await?;
    let exists = |i: usize| {
        res.get(i)
            .and_then(|r| r.rows())
            .is_some_and(|r| !r.is_empty())
    };
    let mut txn = Transaction::new(OVS_DB);
    if exists(0) {
        txn.push(
            Operation::update("Bridge")
                .where_eq("name", bridge.as_str())
                .with("datapath_type", "netdev"),
        );
    } else {
        txn.push(
            Operation::wait("Bridge", vec!["name".into()], WaitUntil::Equal, vec![])
                .where_eq("name", bridge.as_str())
                .timeout_ms(0),
        );
        txn.push(
            Operation::insert("Interface")
                .with("name", bridge.as_str())
                .with("type", "internal")
                .named("brif"),
        );
        txn.push(
            Operation::insert("Port")
                .with("name", bridge.as_str())
                .with("interfaces", named("brif"))
                .named("brport"),
        );
        txn.push(
            Operation::insert("Bridge")
                .with("name", bridge.as_str())
                .with("ports", named("brport"))
                .with("datapath_type", "netdev")
                .named("br"),
        );
        txn.push(Operation::mutate("Open_vSwitch").mutation(
            "bridges",
            Mutator::Insert,
            named("br"),
        ));
    }
    for (i, p) in plan.phys_ports.iter().enumerate() {
        let mtu = p
            .mtu_request
            .map(|m| Datum::from(Atom::Integer(i64::from(m))))
            .unwrap_or_else(|| Datum::set(Vec::<Atom>::new()));
        if exists(i + 1) {
            txn.push(
                Operation::update("Interface")
                    .where_eq("name", p.name.as_str())
                    .with("type", "dpdk")
                    .with("options", string_map(&p.options))
                    .with("mtu_request", mtu),
            );
        } else {
            let ifn = format!("if{i}");
            let portn = format!("port{i}");
            txn.push(
                Operation::insert("Interface")
                    .with("name", p.name.as_str())
                    .with("type", "dpdk")
                    .with("options", string_map(&p.options))
                    .with("mtu_request", mtu)
                    .named(&ifn),
            );
            txn.push(
                Operation::insert("Port")
                    .with("name", p.name.as_str())
                    .with("interfaces", named(&ifn))
                    .named(&portn),
            );
            txn.push(
                Operation::mutate("Bridge")
                    .where_eq("name", bridge.as_str())
                    .mutation("ports", Mutator::Insert, named(&portn)),
            );
        }
    }
    ovs.transact(&txn).await?;
    Ok(())
}

/// Errors putting the tunnel address on the bridge's internal port.
#[derive(Debug, thiserror::Error)]
pub enum EncapError {
    #[error("tunnel bridge port {name}: {reason}")]
    Link { name: String, reason: String },
}

/// Puts `cidr` on the internal port `bridge` (the tap vswitchd creates) and sets it up, in the
/// calling process's network namespace. Waits up to `wait` for the port to appear.
pub async fn ensure_encap_address(
    bridge: &str,
    cidr: IpNet,
    wait: Duration,
) -> Result<(), EncapError> {
    use futures::TryStreamExt;
    let err = |reason: String| EncapError::Link {
        name: bridge.to_string(),
        reason,
    };
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let deadline = tokio::time::Instant::now() + wait;
    let link = loop {
        let found = handle
            .link()
            .get()
            .match_name(bridge.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(Some(l)) => break l,
            _ if tokio::time::Instant::now() >= deadline => {
                conn_task.abort();
                return Err(err(format!("did not appear within {wait:?}")));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let idx = link.header.index;
    let have: Vec<IpAddr> = handle
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| err(e.to_string()))?
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(|a| match a {
                netlink_packet_route::address::AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
        .collect();
    if !have.contains(&cidr.addr()) {
        handle
            .address()
            .add(idx, cidr.addr(), cidr.prefix_len())
            .execute()
            .await
            .map_err(|e| err(format!("adding {cidr}: {e}")))?;
    }
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| err(format!("setting up: {e}")))?;
    conn_task.abort();
    Ok(())
}

/// Everything for a DPDK node in order: other_config, tunnel bridge + ports, tunnel address.
pub async fn apply_dpdk_node(
    ovs: &OvsClient,
    plan: &DpdkOvsPlan,
) -> Result<OtherConfigOutcome, DpdkApplyError> {
    let outcome = apply_other_config(ovs, plan).await?;
    apply_phys_bridge(ovs, plan).await?;
    if let (Some(br), Some(cidr)) = (&plan.phys_bridge, plan.encap_cidr) {
        ensure_encap_address(br, cidr, Duration::from_secs(10)).await?;
    }
    Ok(outcome)
}

#[derive(Debug, thiserror::Error)]
pub enum DpdkApplyError {
    #[error(transparent)]
    Ovs(#[from] OvsError),
    #[error(transparent)]
    Encap(#[from] EncapError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hp_settings() -> DpdkSettings {
        let mut c = DpdkNodeConfig::example();
        c.file_prefix = "fv-ovs2".into();
        c.devices = vec![
            DpdkDevice {
                name: "dpdk0".into(),
                devargs: "net_af_packet0,iface=fvul2".into(),
                n_rxq: None,
                mtu: None,
            },
            DpdkDevice {
                name: "dtap0".into(),
                devargs: "net_tap0,iface=x".into(),
                n_rxq: Some(7),
                mtu: Some(9000),
            },
            DpdkDevice {
                name: "nic0".into(),
                devargs: "0000:01:00.0".into(),
                n_rxq: Some(4),
                mtu: None,
            },
        ];
        c.underlay = Some(Underlay {
            bridge: "br-phy".into(),
            cidr: "192.168.100.2/24".parse().expect("cidr"),
            mtu: 1500,
        });
        c.settings(DpdkMemory::Hugepages {
            huge_dir: "/tmp/huge".into(),
            page_size_kib: 2048,
            socket_mem_mib: vec![256],
            socket_limit_mib: vec![256],
        })
    }

    #[test]
    fn mtu_accounting() {
        assert_eq!(pod_mtu(1500, false), Some(1442));
        assert_eq!(pod_mtu(1500, true), Some(1422));
        assert_eq!(pod_mtu(9000, false), Some(8942));
        assert_eq!(pod_mtu(100, false), None);
        assert_eq!(pod_mtu(0, true), None);
    }

    #[test]
    fn masks() {
        assert_eq!(cpu_mask(&[]), None);
        assert_eq!(cpu_mask(&[0]).as_deref(), Some("0x1"));
        assert_eq!(cpu_mask(&[1]).as_deref(), Some("0x2"));
        assert_eq!(cpu_mask(&[0, 1, 4]).as_deref(), Some("0x13"));
        assert_eq!(cpu_mask(&[0, 65]).as_deref(), Some("0x20000000000000001"));
    }

    #[test]
    fn hugepage_plan() {
        let p = plan_dpdk_node(&hp_settings());
        let oc = &p.other_config;
        assert_eq!(oc["dpdk-init"], "true");
        assert_eq!(oc["dpdk-socket-mem"], "256");
        assert_eq!(oc["dpdk-socket-limit"], "256");
        assert_eq!(oc["pmd-cpu-mask"], "0x2");
        assert_eq!(oc["dpdk-lcore-mask"], "0x1");
        assert_eq!(oc["pmd-maxsleep"], "500");
        assert_eq!(
            oc["dpdk-extra"],
            "--huge-dir=/tmp/huge --file-prefix=fv-ovs2 --iova-mode=va --no-pci"
        );
        assert!(!oc.contains_key("per-port-memory"));
        assert!(
            oc.keys()
                .all(|k| MANAGED_OTHER_CONFIG.contains(&k.as_str()))
        );
        // af_packet: qpairs = PMDs + 1, n_rxq = qpairs
        assert_eq!(
            p.phys_ports[0].options["dpdk-devargs"],
            "net_af_packet0,iface=fvul2,qpairs=2"
        );
        assert_eq!(p.phys_ports[0].options["n_rxq"], "2");
        assert_eq!(p.phys_ports[0].mtu_request, Some(1500));
        // tap: n_rxq forced to n_txq
        assert_eq!(p.phys_ports[1].options["n_rxq"], "2");
        assert_eq!(p.phys_ports[1].mtu_request, Some(9000));
        // PCI: as configured
        assert_eq!(p.phys_ports[2].options["n_rxq"], "4");
        assert_eq!(p.phys_bridge.as_deref(), Some("br-phy"));
        assert_eq!(p.pod_mtu, Some(1442));
    }

    #[test]
    fn no_huge_plan() {
        let mut s = hp_settings();
        s.memory = DpdkMemory::NoHuge { memory_mib: 1024 };
        s.underlay = None;
        let p = plan_dpdk_node(&s);
        assert_eq!(p.other_config["per-port-memory"], "true");
        assert!(!p.other_config.contains_key("dpdk-socket-mem"));
        assert!(
            p.other_config["dpdk-extra"]
                .starts_with("--no-huge --legacy-mem -m 1024 --file-prefix=fv-ovs2")
        );
        assert_eq!(p.phys_bridge, None);
        assert_eq!(p.phys_ports[0].mtu_request, None);
    }

    #[test]
    fn config_validation() {
        let ok = br#"{"socket_mem_mib":[512],"pmd_cpus":[1],"lcore_cpus":[0],"no_pci":true,
            "devices":[{"name":"dpdk0","devargs":"0000:01:00.0"}],
            "underlay":{"cidr":"10.0.0.5/24"}}"#;
        let c = DpdkNodeConfig::from_json("x.json", ok).expect("valid");
        assert_eq!(
            c.underlay.as_ref().map(|u| u.bridge.as_str()),
            Some("br-phy")
        );
        assert_eq!(c.pmd_maxsleep_us, Some(500));
        for (body, field) in [
            (&br#"{"socket_mem_mib":[]}"#[..], "socket_mem_mib"),
            (br#"{"pmd_cpus":[1],"lcore_cpus":[1]}"#, "pmd_cpus"),
            (br#"{"file_prefix":"a b"}"#, "file_prefix"),
            (br#"{"iova_mode":"xx"}"#, "iova_mode"),
            (br#"{"socket_limit_mib":[1,2]}"#, "socket_limit_mib"),
            (
                br#"{"devices":[{"name":"a","devargs":"x"},{"name":"a","devargs":"y"}]}"#,
                "devices",
            ),
            (
                br#"{"underlay":{"cidr":"10.0.0.5/24","mtu":100}}"#,
                "underlay.mtu",
            ),
        ] {
            let e = DpdkNodeConfig::from_json("x.json", body).expect_err("invalid");
            assert!(e.to_string().contains(field), "{e}");
        }
        let e = DpdkNodeConfig::from_json("x.json", b"{").expect_err("json");
        assert!(e.to_string().contains("x.json"), "{e}");
    }

    proptest! {
        #[test]
        fn mask_bits_round_trip(cpus in prop::collection::btree_set(0u32..256, 1..20)) {
            let v: Vec<u32> = cpus.iter().copied().collect();
            let m = cpu_mask(&v).expect("mask");
            let hex = m.trim_start_matches("0x");
            let mut got = Vec::new();
            for (i, ch) in hex.chars().rev().enumerate() {
                let d = ch.to_digit(16).expect("hex");
                for b in 0..4 { if d & (1 << b) != 0 { got.push(i as u32 * 4 + b); } }
            }
            prop_assert_eq!(got, v);
        }

        #[test]
        fn plan_is_total_and_consistent(pmds in prop::collection::btree_set(0u32..8, 0..4),
                                        mem in 1u32..4096, qp in prop::option::of(1u32..8),
                                        mtu in 100u32..9200) {
            let mut s = hp_settings();
            s.pmd_cpus = pmds.iter().copied().collect();
            s.memory = DpdkMemory::Hugepages { huge_dir: "/h".into(), page_size_kib: 2048,
                socket_mem_mib: vec![mem], socket_limit_mib: vec![mem] };
            if let Some(q) = qp { s.devices[0].devargs = format!("net_af_packet0,iface=v,qpairs={q}"); }
            if let Some(u) = s.underlay.as_mut() { u.mtu = mtu; }
            let p = plan_dpdk_node(&s);
            let n_txq = s.pmd_cpus.len().max(1) as u32 + 1;
            prop_assert_eq!(p.phys_ports[1].options["n_rxq"].clone(), n_txq.to_string());
            let want_q = qp.unwrap_or(n_txq);
            prop_assert_eq!(p.phys_ports[0].options["n_rxq"].clone(), want_q.to_string());
            prop_assert_eq!(p.other_config["dpdk-socket-mem"].clone(), mem.to_string());
            prop_assert_eq!(p.pod_mtu, mtu.checked_sub(58).filter(|m| *m >= 68));
        }
    }
}
