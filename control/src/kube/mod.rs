//! The controller's cluster source: kube-rs watchers feed the same reconcile path as the lab's
//! manifest source ([`crate::controller::Controller::pass_with`]), allocations are written back
//! to pods, nodes and subnet statuses as Kube-OVN does, and a Lease elects the one controller
//! that writes. See `docs/controller-kube.md`.
//!
//! - [`store`]: watcher events → the desired-state snapshot (a [`crate::manifest::Manifest`]);
//!   relists replace, deletes are never lost;
//! - [`writeback`]: the merge patches a pass calls for (pure) and the writer; recovery of
//!   existing allocations from `allocated=true` annotations;
//! - [`builtin`]: Subnet objects for the built-in `ovn-default` and `join` subnets;
//! - [`ipobject`]: Kube-OVN's IP objects, one per allocated interface (pure planning);
//! - [`sg_status`]: SecurityGroup statuses (pure planning);
//! - [`policy_report`]: Events for invalid NetworkPolicies and SecurityGroups, the `Ready`
//!   condition of AdminNetworkPolicies (pure planning);
//! - [`lease`]: leader election, a pure state machine with an injected clock plus the shell;
//! - [`run`]: the loop (watch → debounce → pass → write back) and its options;
//! - [`cli`]: the `--kube` flags of `ferrovn-controller` and its entry point.

pub mod builtin;
pub mod cli;
pub mod ipobject;
pub mod lease;
pub mod policy_report;
pub mod run;
pub mod sg_status;
pub mod store;
pub mod writeback;

pub use lease::{Clock, Elector, LeaseConfig, LeaseLock, LeaseRecord, TokioClock};
pub use run::{Debounce, KubeError, KubeOptions, Stats, run, watch_all};
pub use store::{Change, ClusterStore, Kind};
pub use writeback::{PlannedWrite, Target, Writer, existing_allocations, plan_writes};

/// A client from the environment: in-cluster service account, or `KUBECONFIG` /
/// `~/.kube/config`.
pub async fn client_from_env() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}

/// Why no client could be made from a kubeconfig file.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {path}: {source}")]
    Client { path: String, source: kube::Error },
}

/// A client from one kubeconfig file (its current context), e.g. a ServiceAccount's.
pub async fn client_from_kubeconfig(
    path: &std::path::Path,
) -> Result<kube::Client, ClientConfigError> {
    let shown = path.display().to_string();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
        ClientConfigError::Kubeconfig {
            path: shown.clone(),
            source,
        }
    })?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|source| ClientConfigError::Kubeconfig {
        path: shown.clone(),
        source,
    })?;
    kube::Client::try_from(config).map_err(|source| ClientConfigError::Client {
        path: shown,
        source,
    })
}
