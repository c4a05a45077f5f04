//! `ferrovn-vhost`: serves DPDK pods' vhost-user sockets on a kernel-profile node and relays
//! them to kernel interfaces. Controlled by the node agent over a unix socket (JSON lines).

use anyhow::{Context, Result};
use clap::Parser;
use ferrovn_vhost::control::{self, default_socket};
use ferrovn_vhost::cores::{allowed_cores, check_cores, format_core_list, parse_core_list};
use ferrovn_vhost::dpdk::Eal;
use ferrovn_vhost::helper::{Helper, HelperConfig};
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "ferrovn-vhost", version, about)]
struct Args {
    /// CPUs for the relay workers, one busy-polling thread per CPU (e.g. "1" or "2-3").
    #[arg(long, env = "FERROVN_VHOST_CORES")]
    cores: String,
    /// Control socket (JSON lines) for the node agent.
    #[arg(long, default_value_os_t = default_socket())]
    control_socket: PathBuf,
    /// Ports are saved here and re-created when the helper starts again.
    #[arg(long, default_value = "/run/ferrovn/vhost-ports.json")]
    state_file: PathBuf,
    /// Do not keep a state file (the agent re-adds every port after a restart).
    #[arg(long)]
    no_state_file: bool,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9477).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// DPDK --file-prefix (unique per DPDK process on the node).
    #[arg(long, default_value = "ferrovn-vhost")]
    file_prefix: String,
    /// Memory for DPDK in MiB (plain 4 KiB pages; no hugepages needed).
    #[arg(long, default_value_t = 256)]
    memory_mb: u32,
    /// Mbufs in the shared pool.
    #[arg(long, default_value_t = 16383)]
    mbufs: u32,
    /// An idle worker naps this long between polls (0 = busy-poll always; lowest latency).
    #[arg(long, env = "FERROVN_VHOST_IDLE_SLEEP_US", default_value_t = 0)]
    idle_sleep_us: u64,
    /// Extra EAL argument (repeatable), e.g. --eal-arg=--log-level=pmd.net.vhost:debug.
    #[arg(long = "eal-arg", allow_hyphen_values = true)]
    eal_args: Vec<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    // Block the stop signals before any thread exists (EAL's included): main waits for them.
    let mut stop_signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop_signals.add(s);
    }
    stop_signals
        .thread_block()
        .context("blocking stop signals")?;

    let cores = parse_core_list(&args.cores)?;
    let allowed = allowed_cores()?;
    check_cores(&cores, &allowed)?;
    if cores.len() >= allowed.len() {
        tracing::warn!(cores = %format_core_list(&cores), allowed = %format_core_list(&allowed),
            "relay workers take every allowed CPU: busy pollers will starve everything else");
    }

    let eal = Eal::init(&ferrovn_vhost::eal_args(
        &args.file_prefix,
        args.memory_mb,
        &format_core_list(&allowed),
        &args.eal_args,
    ))?;
    let config = HelperConfig {
        cores: cores.clone(),
        idle_sleep: Duration::from_micros(args.idle_sleep_us),
        mbufs: args.mbufs,
        descriptors: 1024,
        state_file: (!args.no_state_file).then(|| args.state_file.clone()),
    };
    let mut helper = Helper::start(eal, &config)?;
    for (port, err) in helper.restore()? {
        tracing::error!(%port, %err, "could not re-create port from the state file");
    }
    let restored = helper.list().len();
    let helper = Arc::new(Mutex::new(helper));

    let listener = control::bind(&args.control_socket)?;
    control::serve(listener, Arc::clone(&helper));
    if let Some(addr) = &args.metrics_listen {
        let local = control::serve_metrics(addr, Arc::clone(&helper))?;
        tracing::info!(%local, "metrics on http://{local}/metrics");
    }
    tracing::info!(control = %args.control_socket.display(), cores = %format_core_list(&cores), restored, "ferrovn-vhost ready");

    let signal = stop_signals.wait().context("waiting for a stop signal")?;
    tracing::info!(?signal, "stopping");
    let _ = std::fs::remove_file(&args.control_socket);
    // Control threads may still hold the helper: stop it in place; later requests get
    // "shutting down".
    helper.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
    let _ = std::fs::remove_dir_all(PathBuf::from("/var/run/dpdk").join(&args.file_prefix));
    Ok(())
}
