//! `ferrovn-lab`: up | apply -f | delete -f | status | down. See docs/lab.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrovn_lab::lab::{self, Options};
use ferrovn_lab::model::validate_prefix;

#[derive(Debug, Parser)]
#[command(
    name = "ferrovn-lab",
    version,
    about = "The whole FerrOVN fabric on one machine"
)]
struct Cli {
    /// Where the lab records everything it creates (down works from any process with it).
    #[arg(
        long,
        global = true,
        env = "FERROVN_LAB_STATE",
        default_value = "/run/ferrovn-lab"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a Kubernetes control plane, OVN, two nodes, the controller, agents and vhost
    /// helper; `kubectl apply` the examples.
    Up {
        /// Name prefix of namespaces, interfaces and DPDK file prefixes (1-8 of a-z0-9-).
        #[arg(long, env = "FERROVN_LAB_PREFIX", default_value = "fvlab")]
        prefix: String,
        /// Directory of the built binaries (ferrovn-controller, ferrovn-node, ferrovn-cni,
        /// ferrovn-vhost); default: next to ferrovn-lab.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Manifests applied once the fabric is up (default: deploy/examples of this source tree).
        #[arg(long)]
        examples: Option<PathBuf>,
        /// deploy/ of the source tree (CRDs, RBAC, admission policy); default: this build's.
        #[arg(long)]
        deploy_dir: Option<PathBuf>,
        /// Do not apply any manifests.
        #[arg(long)]
        no_examples: bool,
        /// NB and SB as 3-member Raft clusters.
        #[arg(long)]
        raft: bool,
        /// NB TCP port on 127.0.0.1 for your ovn-nbctl (0: a free one; FerrOVN's pods use it).
        #[arg(long, default_value_t = 6641)]
        nb_port: u16,
        /// SB TCP port on 127.0.0.1 (0: a free one).
        #[arg(long, default_value_t = 6642)]
        sb_port: u16,
        /// First of the six Raft ports (with --raft).
        #[arg(long, default_value_t = 6643)]
        raft_port: u16,
        /// Run the DPDK node on the kernel profile (no hugepages, no OVS-DPDK).
        #[arg(long)]
        no_hugepages: bool,
        /// CPU of OVS-DPDK's PMD thread.
        #[arg(long, default_value_t = 1)]
        pmd_cpu: u32,
        /// CPUs of the vhost helper's relay worker.
        #[arg(long, default_value = "1")]
        helper_cores: String,
        /// FerrOVN's image, an OCI tar (`make ferrovn-image`): the controller and agent pods
        /// run it; default: the one `make ferrovn-image` writes.
        #[arg(long)]
        ferrovn_image: Option<PathBuf>,
        /// Skip the status table after up.
        #[arg(long)]
        no_status: bool,
    },
    /// `kubectl apply` manifests (a file or a directory), then sandboxes for the new pods.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// `kubectl delete` the objects of manifests; deleted pods' sandboxes go (CNI DEL).
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// (internal) Relay 127.0.0.1:PORT (each --port) inside a node's network namespace to the
    /// same port of the machine (the API server, OVN NB and SB).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        netns: String,
        #[arg(long, required = true)]
        port: Vec<u16>,
    },
    /// (internal) The API server's `cluster` egress: an HTTP CONNECT proxy on a unix socket
    /// into the nodes' namespaces (IP=NETNS per node).
    #[command(hide = true)]
    EgressProxy {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        map: Vec<String>,
    },
    /// Nodes, the cluster (kubectl get nodes,subnets,ips; pods), a connectivity matrix.
    Status,
    /// Remove every process (the control plane's too), namespace, mount and hugepage setting
    /// the lab made.
    Down {
        /// Keep the state dir (logs) after a clean teardown.
        #[arg(long)]
        keep_state: bool,
    },
}

/// Where `make ferrovn-image` (deploy/images/ferrovn/build.sh) writes the image.
fn default_ferrovn_image() -> PathBuf {
    std::env::var_os("FERROVN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferrovn"))
        .join("images/ferrovn.tar")
}

fn default_examples() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    p.is_dir().then_some(p)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up {
            prefix,
            bin_dir,
            examples,
            deploy_dir,
            no_examples,
            raft,
            nb_port,
            sb_port,
            raft_port,
            no_hugepages,
            pmd_cpu,
            helper_cores,
            ferrovn_image,
            no_status,
        } => {
            validate_prefix(&prefix).map_err(anyhow::Error::msg)?;
            let bin_dir = match bin_dir {
                Some(b) => b,
                None => std::env::current_exe()?
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_default(),
            };
            let examples = if no_examples {
                None
            } else {
                match examples.or_else(default_examples) {
                    Some(e) => Some(e),
                    None => anyhow::bail!("no examples dir: pass --examples DIR or --no-examples"),
                }
            };
            let deploy_dir =
                deploy_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
            if !deploy_dir.join("crds").is_dir() {
                anyhow::bail!(
                    "{} has no crds/: pass --deploy-dir (the repository's deploy/)",
                    deploy_dir.display()
                );
            }
            let opts = Options {
                state_dir: cli.state_dir.clone(),
                prefix,
                bin_dir,
                deploy_dir,
                examples,
                raft,
                nb_port,
                sb_port,
                raft_port,
                no_hugepages,
                pmd_cpu,
                helper_cores,
                ferrovn_image: ferrovn_image.unwrap_or_else(default_ferrovn_image),
            };
            lab::up(&opts).map_err(|e| {
                if cli.state_dir.join("resources.jsonl").exists() {
                    e.context(format!(
                        "lab up failed; logs are in {}; `ferrovn-lab down` removes what was started",
                        cli.state_dir.display()
                    ))
                } else {
                    e
                }
            })?;
            if no_status {
                return Ok(ExitCode::SUCCESS);
            }
            let (r, t) = lab::status(&cli.state_dir)?;
            Ok(if r == t {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Apply { file } => {
            lab::apply(&cli.state_dir, &file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { file } => {
            lab::delete(&cli.state_dir, &file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Forward { netns, port } => {
            ferrovn_lab::forward::run(&netns, &port)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::EgressProxy { socket, map } => {
            ferrovn_lab::egress::run(&socket, &map)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let (r, t) = lab::status(&cli.state_dir)?;
            Ok(if r == t {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Down { keep_state } => {
            let rep = lab::down(&cli.state_dir, keep_state)?;
            if rep.leftovers.is_empty() {
                println!("lab down: nothing left behind");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(2))
            }
        }
    }
}

fn main() -> ExitCode {
    // `ferrovn-lab status | head` must end quietly, not panic on a closed pipe
    // SAFETY: setting a signal disposition to SIG_DFL at start, before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrovn-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
