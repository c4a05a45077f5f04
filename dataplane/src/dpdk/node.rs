//! The agent's start-up for the node profile: read the node's facts and configuration, decide
//! ([`crate::profile::select_profile`]), publish the decision (log, node annotations, metrics
//! textfile), and on a DPDK node write the DPDK plan into OVSDB.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dpdk::config::{
    ConfigError, DpdkApplyError, DpdkNodeConfig, apply_dpdk_node, plan_dpdk_node,
};
use crate::ovs::{OvsClient, OvsError};
use crate::profile::{
    HostPaths, OVS_DP_TYPE_LABEL, ProfileDecision, ProfileError, ReadError, gather_inputs,
    profile_name, select_profile,
};
use crate::types::NodeProfile;

/// Files for the start-up decision.
#[derive(Debug, Clone, Default)]
pub struct DecideArgs {
    /// Overrides the node label (`--profile kernel|dpdk`).
    pub forced_label: Option<String>,
    /// JSON object of the node's labels.
    pub labels_file: Option<PathBuf>,
    pub dpdk_config: Option<PathBuf>,
    /// Where `node-annotations.json` and `metrics.prom` go.
    pub state_dir: Option<PathBuf>,
    /// The DPDK ovs-vswitchd whose presence makes DPDK possible; `None`: Debian's path
    /// ([`HostPaths::default`]). OVS may live elsewhere, e.g. in FerrOVN's OVS/OVN rootfs.
    pub dpdk_vswitchd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node labels file {path}: {reason}")]
    Labels { path: String, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the node's facts: {0}")]
    Read(#[from] ReadError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("writing {path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ovs(Box<OvsError>),
    #[error(transparent)]
    Apply(Box<DpdkApplyError>),
    #[error("a DPDK decision carries no DPDK settings")]
    NoSettings,
}

fn read_labels(path: &PathBuf) -> Result<BTreeMap<String, String>, NodeError> {
    let body = std::fs::read(path).map_err(|e| NodeError::Labels {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&body).map_err(|e| NodeError::Labels {
        path: path.display().to_string(),
        reason: format!("expected a JSON object of strings: {e}"),
    })
}

fn write_atomic(path: PathBuf, body: &[u8]) -> Result<(), NodeError> {
    let err = |source| NodeError::State {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Whether the node's OVS already initialised DPDK (false when unreachable).
async fn ovs_dpdk_initialized(ovs_remote: &str) -> bool {
    use ferrovn_ovsdb::{Atom, Datum, Operation, Transaction};
    let Ok(ovs) = OvsClient::connect(ovs_remote).await else {
        return false;
    };
    let t = Transaction::new(crate::ovs::OVS_DB)
        .with(Operation::select("Open_vSwitch").columns(["dpdk_initialized"]));
    ovs.transact(&t)
        .await
        .ok()
        .and_then(|r| {
            r.first()?
                .rows()?
                .first()?
                .get("dpdk_initialized")
                .and_then(Datum::as_atom)
                .and_then(Atom::as_bool)
        })
        .unwrap_or(false)
}

/// Decides the node profile and publishes it. `ovs_remote` is asked whether OVS-DPDK runs.
pub async fn decide(args: &DecideArgs, ovs_remote: &str) -> Result<ProfileDecision, NodeError> {
    let label = match (&args.forced_label, &args.labels_file) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(f)) => read_labels(f)?.remove(OVS_DP_TYPE_LABEL),
        (None, None) => None,
    };
    let dpdk = match &args.dpdk_config {
        Some(p) => {
            let body = std::fs::read(p).map_err(|e| ConfigError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            Some(DpdkNodeConfig::from_json(&p.display().to_string(), &body)?)
        }
        None => None,
    };
    let held = ovs_dpdk_initialized(ovs_remote).await;
    let mut paths = HostPaths::default();
    if let Some(p) = &args.dpdk_vswitchd {
        paths.dpdk_vswitchd = p.clone();
    }
    let inputs = gather_inputs(&paths, label, dpdk, held)?;
    let decision = select_profile(&inputs)?;
    if decision.fell_back {
        tracing::warn!(profile = profile_name(decision.profile), reason = %decision.reason,
            message = %decision.message, "DPDK was asked for but this node runs the kernel profile");
    } else {
        tracing::info!(profile = profile_name(decision.profile), reason = %decision.reason,
            message = %decision.message, "node profile");
    }
    if let Some(dir) = &args.state_dir {
        let ann = serde_json::to_vec_pretty(&decision.annotations()).unwrap_or_default();
        write_atomic(dir.join("node-annotations.json"), &ann)?;
        write_atomic(dir.join("metrics.prom"), decision.metrics_text().as_bytes())?;
    }
    Ok(decision)
}

/// Writes the DPDK plan of a DPDK decision into the node's OVSDB (`ovs_remote`).
pub async fn apply(ovs_remote: &str, decision: &ProfileDecision) -> Result<(), NodeError> {
    if decision.profile != NodeProfile::Dpdk {
        return Ok(());
    }
    let settings = decision.settings.as_ref().ok_or(NodeError::NoSettings)?;
    let plan = plan_dpdk_node(settings);
    let ovs = OvsClient::connect(ovs_remote)
        .await
        .map_err(|e| NodeError::Ovs(Box::new(e)))?;
    let outcome = apply_dpdk_node(&ovs, &plan)
        .await
        .map_err(|e| NodeError::Apply(Box::new(e)))?;
    if outcome.restart_needed {
        tracing::warn!(
            "DPDK settings changed after ovs-vswitchd initialised DPDK: restart ovs-vswitchd for them to apply"
        );
    }
    tracing::info!(other_config = ?plan.other_config, pod_mtu = ?plan.pod_mtu, "DPDK node configured");
    Ok(())
}
