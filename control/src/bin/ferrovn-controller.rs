//! `ferrovn-controller`: FerrOVN's control plane. In manifest mode it reads Kubernetes YAML from
//! a directory (rescanned every `--interval`), allocates addresses, records them under
//! `--state-dir` for the node agents, and keeps the OVN Northbound database in line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrovn_control::controller::{
    BuildOptions, Controller, ControllerOptions, DEFAULT_MAC_SEED, PassReport,
};

#[derive(Debug, Parser)]
#[command(name = "ferrovn-controller", version, about)]
struct Args {
    /// OVN Northbound database: unix:/path, tcp:host:port, or a comma-separated Raft member list.
    #[arg(long, env = "FERROVN_NB")]
    nb: String,
    /// Directory of Kubernetes manifests (*.yaml, *.yml, *.json; subdirectories included).
    #[arg(long, env = "FERROVN_MANIFESTS", required_unless_present = "kube")]
    manifests: Option<PathBuf>,
    /// Where allocation records are written (allocations/<ns>/<pod>.json, nodes/<node>.json).
    #[arg(long, env = "FERROVN_STATE_DIR")]
    state_dir: PathBuf,
    /// Seconds between rescans of the manifest directory.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Run one pass and exit (exit status 1 if the pass failed).
    #[arg(long)]
    once: bool,
    /// NB changes per transaction.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seed for generated MAC addresses; keep it fixed for a cluster.
    #[arg(long, default_value_t = DEFAULT_MAC_SEED)]
    mac_seed: u64,
    /// CIDR of the implicit default subnet `ovn-default` (when no manifest defines it).
    #[arg(long, default_value = "10.16.0.0/16")]
    default_cidr: String,
    /// CIDR of the implicit node join subnet `join`.
    #[arg(long, default_value = "100.64.0.0/16")]
    join_cidr: String,
    /// The Service CIDR(s), comma-separated (kube-apiserver's `--service-cluster-ip-range`):
    /// published on every Node so that its agent routes them into OVN through `ovn0` and host
    /// processes reach ClusterIPs. Unset: no route. In a pod: the optional `service-cidr` key of
    /// ConfigMap ferrovn-config (deploy/ferrovn.yaml).
    #[arg(long, value_delimiter = ',', env = "FERROVN_SERVICE_CLUSTER_IP_RANGE")]
    service_cluster_ip_range: Vec<ipnet::IpNet>,
    /// OVN Southbound database: with it, centralized gateways (`gatewayType: centralized`) fail
    /// over when a gateway node's ovn-controller stops answering (docs/node-connectivity.md).
    #[arg(long, env = "FERROVN_SB")]
    sb: Option<String>,
    /// Seconds a gateway node's chassis may stay silent before its subnets fail over.
    #[arg(long, default_value_t = 6.0)]
    gateway_dead_after: f64,
    /// Cluster mode (`--kube`): watchers, write-back to pods, leader election.
    #[command(flatten)]
    kube_args: ferrovn_control::kube::cli::KubeArgs,
}

fn log_pass(r: &PassReport) {
    if let Some((records, conflicts)) = r.recovered {
        tracing::info!(records, conflicts, "IPAM recovered");
    }
    for issue in &r.issues {
        tracing::warn!("{issue}");
    }
    for rejection in &r.rejected {
        tracing::error!("{rejection}");
    }
    let level_info = !r.is_noop();
    if level_info {
        tracing::info!(
            interfaces = r.interfaces,
            released = r.released,
            records_written = r.records_written,
            records_removed = r.records_removed,
            inserts = r.nb_inserts,
            updates = r.nb_updates,
            removals = r.nb_removals,
            ops = r.nb_operations,
            txns = r.nb_transactions,
            ms = r.elapsed.as_millis() as u64,
            "pass applied"
        );
    } else {
        tracing::debug!(interfaces = r.interfaces, "pass: nothing to do");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let manifests = args.manifests.clone().unwrap_or_default();
    let mut options = ControllerOptions::new(&args.nb, &manifests, &args.state_dir);
    options.batch = args.batch.max(1);
    options.mac_seed = args.mac_seed;
    options.sb = args.sb.clone();
    options.gateway_dead_after = Duration::from_secs_f64(args.gateway_dead_after.max(0.5));
    options.build = BuildOptions {
        default_cidr: args.default_cidr.clone(),
        join_cidr: args.join_cidr.clone(),
        service_cidrs: args.service_cluster_ip_range.clone(),
        ..BuildOptions::default()
    };
    if args.kube_args.kube {
        return ferrovn_control::kube::cli::run_from_args(options, &args.kube_args)
            .await
            .context("kube mode");
    }
    let mut controller = Controller::connect(options)
        .await
        .with_context(|| format!("connecting to the NB at {}", args.nb))?;
    tracing::info!(nb = %args.nb, manifests = %manifests.display(), "connected");

    if args.once {
        let report = controller.pass().await.context("reconcile pass")?;
        log_pass(&report);
        return Ok(());
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    // `--resync` (shared with kube mode): a full pass at least this often.
    let resync = Duration::from_secs(args.kube_args.resync.max(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        match controller.pass_if_changed(resync).await {
            Ok(Some(report)) => log_pass(&report),
            Ok(None) => tracing::trace!("nothing changed"),
            // Keep going: a half-written manifest or an NB restart is fixed by a later pass.
            Err(e) => tracing::error!("pass failed: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; exiting");
                return Ok(());
            }
            _ = term.recv() => {
                tracing::info!("terminated; exiting");
                return Ok(());
            }
        }
    }
}
