//! The `--kube` mode of `ferrovn-controller`: its flags and its entry point.

use std::time::Duration;

use tokio::sync::watch;

use crate::controller::ControllerOptions;

use super::lease::LeaseConfig;
use super::run::{KubeError, KubeOptions, Stats, run};

/// Flags of the cluster mode (flattened into the binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Read the desired state from the Kubernetes API (in-cluster service account, else
    /// KUBECONFIG / ~/.kube/config) instead of --manifests, and write allocations back to pods.
    #[arg(long, conflicts_with = "manifests")]
    pub kube: bool,
    /// Kubeconfig file to use instead of the in-cluster service account / KUBECONFIG
    /// (e.g. a ServiceAccount token kubeconfig outside the cluster).
    #[arg(long, requires = "kube")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// This replica's holderIdentity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferrovn-controller")]
    pub lease_name: String,
    /// Seconds a Lease stays valid without renewal (leaseDurationSeconds).
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Act as leader without a Lease. Only for a single replica.
    #[arg(long)]
    pub no_leader_election: bool,
    /// Milliseconds without events before a pass starts (a burst gives one pass).
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
    /// Seconds between full passes without events (repairs NB drift).
    #[arg(long, default_value_t = 300)]
    pub resync: u64,
}

/// Why kube mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum KubeModeError {
    #[error("no usable Kubernetes client configuration (in-cluster service account or KUBECONFIG)")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Kubeconfig(#[from] super::ClientConfigError),
    #[error(transparent)]
    Run(#[from] KubeError),
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("ferrovn-controller-{}", std::process::id()))
}

impl KubeArgs {
    /// The source's options from the flags.
    pub fn options(&self, controller: ControllerOptions) -> KubeOptions {
        let mut opts = KubeOptions::new(controller);
        opts.debounce = Duration::from_millis(self.debounce_ms.max(1));
        opts.max_delay = opts.max_delay.max(opts.debounce);
        opts.resync = Duration::from_secs(self.resync.max(1));
        if !self.no_leader_election {
            let identity = self
                .identity
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(host_name);
            let mut lease = LeaseConfig::new(identity);
            lease.namespace = self.lease_namespace.clone();
            lease.name = self.lease_name.clone();
            lease.lease_duration = Duration::from_secs(self.lease_duration.max(2));
            // client-go's proportions: renew deadline 2/3, retry period 2/15 of the duration.
            lease.renew_deadline = lease.lease_duration * 2 / 3;
            lease.retry_period = lease.lease_duration * 2 / 15;
            opts.lease = Some(lease);
        }
        opts
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs kube mode until SIGTERM / Ctrl-C.
pub async fn run_from_args(
    controller: ControllerOptions,
    args: &KubeArgs,
) -> Result<(), KubeModeError> {
    let client = match &args.kubeconfig {
        Some(path) => super::client_from_kubeconfig(path).await?,
        None => super::client_from_env().await?,
    };
    let opts = args.options(controller);
    match &opts.lease {
        Some(l) => tracing::info!(
            identity = %l.identity,
            lease = %format!("{}/{}", l.namespace, l.name),
            "kube mode with leader election"
        ),
        None => tracing::warn!("kube mode WITHOUT leader election: run one replica only"),
    }
    let (tx, _rx) = watch::channel(Stats::default());
    run(client, opts, tx, terminated()).await?;
    tracing::info!("stopped");
    Ok(())
}
