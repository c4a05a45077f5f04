//! The `offload` node profile and offload truth.
//!
//! At start the agent writes `Open_vSwitch other_config:hw-offload=true` (+ `tc-policy`) as
//! `ferrovn_hwoffload::plan_offload_config` decides. ovs-vswitchd reads these once at start,
//! and the agent does not own vswitchd's process in a cluster: a needed restart is logged and
//! published as node annotations (`offload.ferrovn.io/restart-required=true` + reasons).
//!
//! Offload truth: for every VF attachment the agent reads the datapath flows
//! (`ovs-appctl dpctl/dump-flows -m`, and `type=offloaded`), the PF's eswitch mode through
//! devlink (when the kernel has devlink), and reports per pod whether its representor's flows
//! are offloaded, with the reasons when not: metric `ferrovn_pod_flows_offloaded` and the pod
//! annotation `offload.ferrovn.io/<ifname>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferrovn_hwoffload::{
    DevlinkDevice, DevlinkError, DevlinkSocket, DpFlow, EswitchMode, OffloadContext,
    OffloadSettings, OffloadStatus, OtherConfigPlan, PodOffload, PortOffloadReport, Sysfs,
    offload_report, parse_dump_flows, plan_offload_config, render_offload_metrics,
};
use ferrovn_ovsdb::{Atom, Condition, Datum, Mutator, Operation, Transaction, Uuid};

use crate::alloc::PodRef;
use crate::annotate::{DynPodAnnotator, PodAnnotator};
use crate::ovs::{OVS_DB, OvsClient, OvsError, ext};
use crate::sriov::{SriovConfig, is_vf_record, vf_ext};

/// Node annotation: `true` when the node runs the `offload` profile.
pub const HW_OFFLOAD_ANNOTATION: &str = "offload.ferrovn.io/hw-offload";
/// Node annotation: `true` while ovs-vswitchd must be restarted for the settings to apply.
pub const RESTART_REQUIRED_ANNOTATION: &str = "offload.ferrovn.io/restart-required";
/// Node annotation: why (human-readable, `; `-joined).
pub const RESTART_REASONS_ANNOTATION: &str = "offload.ferrovn.io/restart-reasons";

/// Pod annotation with the offload truth of interface `ifname` (JSON).
pub fn pod_offload_annotation(ifname: &str) -> String {
    format!("offload.ferrovn.io/{ifname}")
}

/// What the agent did with the `offload` profile at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffloadStart {
    /// `None`: the node does not run the offload profile.
    pub settings: Option<OffloadSettings>,
    pub plan: OtherConfigPlan,
}

impl OffloadStart {
    pub fn restart_required(&self) -> bool {
        self.plan.restart_vswitchd
    }

    /// Node annotations publishing the outcome.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let Some(s) = self.settings else {
            return a;
        };
        a.insert(HW_OFFLOAD_ANNOTATION.into(), s.hw_offload.to_string());
        a.insert(
            RESTART_REQUIRED_ANNOTATION.into(),
            self.restart_required().to_string(),
        );
        // always present, empty once no restart is due: a Node merge patch only sets keys, so
        // a left-out key would keep the reasons of an earlier start
        let reasons = if self.restart_required() {
            format!("restart ovs-vswitchd: {}", self.plan.reasons.join("; "))
        } else {
            String::new()
        };
        a.insert(RESTART_REASONS_ANNOTATION.into(), reasons);
        a
    }
}

fn other_config_of(row: &BTreeMap<String, Datum>) -> BTreeMap<String, String> {
    row.get("other_config")
        .and_then(Datum::as_map)
        .map(|m| {
            m.as_slice()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `Open_vSwitch` (root uuid, other_config) and the datapath_type of `bridge`.
pub async fn read_ovs_state(
    ovs: &OvsClient,
    bridge: &str,
) -> Result<(Uuid, BTreeMap<String, String>, String), OvsError> {
    let t = Transaction::new(OVS_DB)
        .with(Operation::select("Open_vSwitch").columns(["_uuid", "other_config"]))
        .with(
            Operation::select("Bridge")
                .where_eq("name", bridge)
                .columns(["datapath_type"]),
        );
    let res = ovs.transact(&t).await?;
    let root_row = res
        .first()
        .and_then(|r| r.rows())
        .and_then(|r| r.first())
        .ok_or_else(|| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: "no Open_vSwitch row".into(),
        })?;
    let uuid = root_row
        .get("_uuid")
        .and_then(Datum::as_atom)
        .and_then(Atom::as_uuid)
        .ok_or_else(|| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: "Open_vSwitch row without _uuid".into(),
        })?;
    let dp = res
        .get(1)
        .and_then(|r| r.rows())
        .and_then(|r| r.first())
        .and_then(|r| r.get("datapath_type"))
        .and_then(Datum::as_atom)
        .and_then(Atom::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((uuid, other_config_of(root_row), dp))
}

/// The `Open_vSwitch` mutation carrying out `plan` (keys set are deleted first: a map insert
/// never overwrites).
pub fn offload_config_txn(root: Uuid, plan: &OtherConfigPlan) -> Transaction {
    let mut keys: Vec<&str> = plan.set.keys().map(String::as_str).collect();
    keys.extend(plan.remove.iter().map(String::as_str));
    Transaction::new(OVS_DB).with(
        Operation::mutate("Open_vSwitch")
            .filter(Condition::uuid(root))
            .mutation("other_config", Mutator::Delete, Datum::set(keys))
            .mutation(
                "other_config",
                Mutator::Insert,
                Datum::map(plan.set.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
    )
}

/// Applies the `offload` profile (no-op when `cfg.offload` is `None`), logs and, in the lab,
/// writes the node annotations to `<state_dir>/offload-node-annotations.json` (with
/// `--kube`, `ferrovn-node` also merge-patches [`OffloadStart::annotations`] onto the Node).
pub async fn apply_offload_profile(
    ovs: &OvsClient,
    bridge: &str,
    cfg: &SriovConfig,
) -> Result<OffloadStart, OvsError> {
    let Some(settings) = cfg.offload else {
        return Ok(OffloadStart::default());
    };
    let (root, current, _) = read_ovs_state(ovs, bridge).await?;
    let plan = plan_offload_config(&current, &settings);
    if !plan.set.is_empty() || !plan.remove.is_empty() {
        ovs.transact(&offload_config_txn(root, &plan)).await?;
    }
    let start = OffloadStart {
        settings: Some(settings),
        plan,
    };
    if start.restart_required() {
        tracing::warn!(
            reasons = %start.plan.reasons.join("; "),
            "offload profile: OVS hw-offload settings written; ovs-vswitchd must be restarted for them to take effect (node annotation {RESTART_REQUIRED_ANNOTATION}=true)"
        );
    } else {
        tracing::info!(hw_offload = settings.hw_offload, tc_policy = %settings.tc_policy,
            "offload profile: OVS settings already in force");
    }
    if let Some(dir) = &cfg.state_dir {
        let path = dir.join("offload-node-annotations.json");
        if let Ok(body) = serde_json::to_vec_pretty(&start.annotations()) {
            let _ = std::fs::create_dir_all(dir);
            if let Err(e) = std::fs::write(&path, body) {
                tracing::warn!(path = %path.display(), error = %e, "writing node annotations");
            }
        }
    }
    Ok(start)
}

/// Runs `ovs-appctl [-t ctl] dpctl/dump-flows -m [extra]`.
pub fn dump_flows(ctl: Option<&Path>, extra: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("ovs-appctl");
    cmd.arg("--timeout=5");
    if let Some(ctl) = ctl {
        cmd.arg("-t").arg(ctl);
    }
    cmd.args(["dpctl/dump-flows", "-m", "--names"]);
    if let Some(e) = extra {
        cmd.arg(e);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running ovs-appctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ovs-appctl dpctl/dump-flows{}: {}",
            extra.map(|e| format!(" {e}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The flows of both dumps (all, then `type=offloaded`), without duplicates by ufid.
pub fn merge_dumps(all: &str, offloaded: Option<&str>) -> Result<Vec<DpFlow>, String> {
    let mut flows = parse_dump_flows(all).map_err(|e| e.to_string())?;
    if let Some(o) = offloaded {
        for f in parse_dump_flows(o).map_err(|e| e.to_string())? {
            let dup = f.ufid.is_some() && flows.iter().any(|g| g.ufid == f.ufid);
            if !dup {
                flows.push(f);
            }
        }
    }
    Ok(flows)
}

/// The eswitch mode of PF `pf_netdev`, or why it is unknown.
pub fn eswitch_mode(sysfs_root: &Path, pf_netdev: &str) -> Result<EswitchMode, String> {
    let pf = Sysfs::new(sysfs_root)
        .physical_function(pf_netdev)
        .map_err(|e| format!("PF {pf_netdev}: {e}"))?;
    let mut sock = DevlinkSocket::connect().map_err(|e| match e {
        DevlinkError::FamilyNotRegistered { .. } => format!("devlink unavailable: {e}"),
        other => format!("devlink: {other}"),
    })?;
    sock.eswitch(&DevlinkDevice::pci(&pf.pci_address))
        .map(|s| s.mode)
        .map_err(|e| e.to_string())
}

/// Offload truth of one pod interface.
#[derive(Debug, Clone, PartialEq)]
pub struct PodOffloadTruth {
    pub pod: PodRef,
    pub ifname: String,
    pub representor: String,
    pub vf_pci: String,
    pub report: PortOffloadReport,
    /// Why the eswitch mode is unknown (e.g. "devlink unavailable: ..."), if it is.
    pub eswitch_note: Option<String>,
}

impl PodOffloadTruth {
    /// The pod annotation value: `{"status":..,"flows":..,"offloaded_flows":..,"reasons":[..]}`.
    pub fn annotation_value(&self) -> String {
        let status = match self.report.status {
            OffloadStatus::Offloaded => "offloaded",
            OffloadStatus::Partial => "partial",
            OffloadStatus::NotOffloaded => "not_offloaded",
        };
        let mut reasons: Vec<String> = self.report.reasons.iter().map(|r| r.to_string()).collect();
        if let Some(n) = &self.eswitch_note {
            reasons.push(n.clone());
        }
        serde_json::json!({
            "status": status,
            "representor": self.representor,
            "vf": self.vf_pci,
            "flows": self.report.flows,
            "offloaded_flows": self.report.offloaded_flows,
            "reasons": reasons,
        })
        .to_string()
    }

    /// One line for the agent's status output.
    pub fn status_line(&self) -> String {
        let reasons: Vec<String> = self.report.reasons.iter().map(|r| r.to_string()).collect();
        format!(
            "{}/{} {} vf={} rep={} {:?} flows={} offloaded={}{}",
            self.pod.namespace,
            self.pod.name,
            self.ifname,
            self.vf_pci,
            self.representor,
            self.report.status,
            self.report.flows,
            self.report.offloaded_flows,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" reasons: {}", reasons.join("; "))
            }
        )
    }
}

/// One offload check over every VF attachment of the node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OffloadTruth {
    pub pods: Vec<PodOffloadTruth>,
    /// Dump failures (the report then has no flows).
    pub dump_errors: Vec<String>,
}

impl OffloadTruth {
    /// `ferrovn_pod_flows_offloaded` / `ferrovn_pod_flows` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let names: Vec<String> = self
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.pod.namespace, p.pod.name))
            .collect();
        let pods: Vec<PodOffload<'_>> = self
            .pods
            .iter()
            .zip(&names)
            .map(|(p, n)| PodOffload {
                pod: n,
                report: &p.report,
            })
            .collect();
        render_offload_metrics(&pods).unwrap_or_default()
    }
}

/// Checks offload truth now: flows, eswitch mode, OVS settings per VF attachment; updates
/// the pods' `offload.ferrovn.io/<ifname>` annotations and, in the lab, writes
/// `<state_dir>/offload-metrics.prom` and `offload-status.txt`.
pub async fn offload_check(
    ovs: &OvsClient,
    bridge: &str,
    sriov: &SriovConfig,
    annotations: Option<&std::sync::Arc<dyn DynPodAnnotator>>,
) -> Result<OffloadTruth, OvsError> {
    {
        let recs: Vec<_> = ovs
            .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
            .await?
            .into_iter()
            .filter(is_vf_record)
            .collect();
        let (_, other_config, dp) = read_ovs_state(ovs, bridge).await?;
        let mut truth = OffloadTruth::default();
        if recs.is_empty() {
            return Ok(truth);
        }
        let ctl = sriov.vswitchd_ctl.clone();
        let (all, off) = tokio::task::spawn_blocking(move || {
            (
                dump_flows(ctl.as_deref(), None),
                dump_flows(ctl.as_deref(), Some("type=offloaded")),
            )
        })
        .await
        .map_err(|e| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: format!("dump-flows task: {e}"),
        })?;
        let all = all.unwrap_or_else(|e| {
            truth.dump_errors.push(e);
            String::new()
        });
        // `type=offloaded` is refused by datapaths without offload: the full dump suffices then
        let off = off.map_err(|e| truth.dump_errors.push(e)).ok();
        let flows = merge_dumps(&all, off.as_deref()).unwrap_or_else(|e| {
            truth.dump_errors.push(e);
            Vec::new()
        });
        let mut modes: BTreeMap<String, Result<EswitchMode, String>> = BTreeMap::new();
        for rec in &recs {
            let pf = rec.get(vf_ext::VF_PF).unwrap_or_default().to_string();
            let mode = modes
                .entry(pf.clone())
                .or_insert_with(|| eswitch_mode(&sriov.sysfs_root, &pf))
                .clone();
            let ctx = OffloadContext::new(mode.as_ref().ok().copied(), &other_config, &dp);
            let Some(report) = offload_report(&flows, &[rec.name.as_str()], &ctx)
                .into_iter()
                .next()
            else {
                continue;
            };
            truth.pods.push(PodOffloadTruth {
                pod: PodRef {
                    namespace: rec.get(ext::POD_NAMESPACE).unwrap_or_default().into(),
                    name: rec.get(ext::POD_NAME).unwrap_or_default().into(),
                },
                ifname: rec.get(ext::IFNAME).unwrap_or_default().into(),
                representor: rec.name.clone(),
                vf_pci: rec.get(vf_ext::VF_PCI).unwrap_or_default().into(),
                report,
                eswitch_note: mode.err(),
            });
        }
        if let Some(sink) = annotations {
            for p in &truth.pods {
                let ann = [(pod_offload_annotation(&p.ifname), p.annotation_value())]
                    .into_iter()
                    .collect();
                if let Err(e) = sink.annotate(&p.pod, &ann, &[]).await {
                    tracing::warn!(error = %e, "writing the offload annotation");
                }
            }
        }
        if let Some(dir) = &sriov.state_dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join("offload-metrics.prom"), truth.metrics_text());
            let lines: Vec<String> = truth.pods.iter().map(|p| p.status_line()).collect();
            let _ = std::fs::write(dir.join("offload-status.txt"), lines.join("\n") + "\n");
        }
        for p in &truth.pods {
            tracing::debug!(status = %p.status_line(), "offload truth");
        }
        Ok(truth)
    }
}

/// Command-line settings of VF attachments and the `offload` profile (flattened into
/// `ferrovn-node`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct OffloadArgs {
    /// Node profile `offload`: set OVS other_config:hw-offload=true (+ tc-policy) at start.
    #[arg(long, env = "FERROVN_OFFLOAD")]
    pub offload: bool,
    /// OVS tc-policy with --offload: none | skip_sw | skip_hw.
    #[arg(long, default_value = "none")]
    pub tc_policy: String,
    /// Root under which `sys/` is read for SR-IOV discovery.
    #[arg(long, env = "FERROVN_SYSFS_ROOT", default_value = "/")]
    pub sysfs_root: PathBuf,
    /// Drivers a DPDK pod's VF may be bound to (comma-separated).
    #[arg(long, default_value = "vfio-pci", value_delimiter = ',')]
    pub dpdk_vf_drivers: Vec<String>,
    /// ovs-vswitchd's unixctl socket for `ovs-appctl -t` (default: ovs-appctl's own).
    #[arg(long)]
    pub vswitchd_ctl: Option<PathBuf>,
    /// Seconds between offload truth checks (0: off); SIGUSR1 runs one at once.
    #[arg(long, default_value_t = 60)]
    pub offload_check_secs: u64,
}

impl OffloadArgs {
    pub fn sriov_config(&self, state_dir: Option<PathBuf>) -> anyhow::Result<SriovConfig> {
        let tc_policy = self
            .tc_policy
            .parse()
            .map_err(|e| anyhow::anyhow!("--tc-policy: {e}"))?;
        Ok(SriovConfig {
            sysfs_root: self.sysfs_root.clone(),
            dpdk_drivers: ferrovn_hwoffload::DpdkDriverPolicy {
                allowed: self.dpdk_vf_drivers.clone(),
            },
            offload: self.offload.then_some(OffloadSettings {
                hw_offload: true,
                tc_policy,
            }),
            vswitchd_ctl: self.vswitchd_ctl.clone(),
            state_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_say_restart() {
        let mut current = BTreeMap::new();
        current.insert("hw-offload".to_string(), "false".to_string());
        let settings = OffloadSettings {
            hw_offload: true,
            tc_policy: Default::default(),
        };
        let start = OffloadStart {
            settings: Some(settings),
            plan: plan_offload_config(&current, &settings),
        };
        let a = start.annotations();
        assert_eq!(a[RESTART_REQUIRED_ANNOTATION], "true");
        assert!(
            a[RESTART_REASONS_ANNOTATION].contains("hw-offload"),
            "{a:?}"
        );
        assert!(OffloadStart::default().annotations().is_empty());
        // settings already in force: no restart, and the reasons key cleared (not left out)
        let done = OffloadStart {
            settings: Some(settings),
            plan: plan_offload_config(&plan_offload_config(&current, &settings).set, &settings),
        };
        let a = done.annotations();
        assert_eq!(a[RESTART_REQUIRED_ANNOTATION], "false", "{a:?}");
        assert_eq!(a[RESTART_REASONS_ANNOTATION], "", "{a:?}");
    }

    #[test]
    fn txn_deletes_then_inserts() {
        let mut plan = OtherConfigPlan::default();
        plan.set.insert("hw-offload".into(), "true".into());
        plan.remove.push("tc-policy".into());
        let t = offload_config_txn(Uuid::new_v4(), &plan);
        let j = serde_json::to_string(&t).expect("json");
        assert!(j.contains("\"delete\"") && j.contains("\"insert\""), "{j}");
        assert!(j.contains("tc-policy") && j.contains("hw-offload"), "{j}");
    }

    #[test]
    fn merged_dumps_dedup_by_ufid() {
        let a = "ufid:11111111-2222-3333-4444-555555555555, recirc_id(0),in_port(rep0),eth_type(0x0800), packets:3, bytes:294, used:0.5s, actions:2\n";
        let f = merge_dumps(a, Some(a)).expect("parse");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].in_port.as_deref(), Some("rep0"));
    }
}
