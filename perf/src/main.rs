//! `ferrovn-perf`: see docs/perf.md.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ferrovn_perf::config::{Config, Mode};
use ferrovn_perf::model::{Report, Status};
use ferrovn_perf::progress::Progress;
use ferrovn_perf::scenarios::{Ctx, estimate, run_all};
use ferrovn_perf::{env, output};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ferrovn-perf",
    about = "FerrOVN datapath and control-plane performance, beside same-run baselines"
)]
struct Cli {
    /// Quick mode with the shipped perf/configs/quick.toml (< 5 minutes on 2 cores).
    #[arg(long, conflicts_with_all = ["smoke", "config"])]
    quick: bool,
    /// Smoke mode: seconds, one repetition, no hugepages, no OVS (CI).
    #[arg(long, conflicts_with = "config")]
    smoke: bool,
    /// A config file (TOML), e.g. perf/configs/baremetal-example.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bare metal: run only this node's scenarios (its `scenarios` list in the config).
    #[arg(long)]
    node: Option<String>,
    /// Output directory (results.json, summary.md, *.svg, logs/).
    #[arg(long, global = true, default_value = "perf-results")]
    out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Join result directories of several nodes into one report in --out.
    Merge { dirs: Vec<PathBuf> },
}

const QUICK: &str = include_str!("../configs/quick.toml");

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Merge { dirs }) = &cli.cmd {
        let report = output::merge(dirs)?;
        for f in output::write(&report, &cli.out)? {
            println!("{}", f.display());
        }
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("run as root (network namespaces, OVS, DPDK)");
    }
    let mut cfg = if cli.smoke {
        Config::smoke()
    } else if let Some(p) = &cli.config {
        Config::from_file(p)?
    } else if cli.quick {
        Config::parse(QUICK, "perf/configs/quick.toml")?
    } else {
        bail!("choose --smoke, --quick or --config <file>");
    };
    cfg.scenarios = cfg.families_for(cli.node.as_deref())?;
    let mode = match cfg.mode {
        Mode::Smoke => "smoke",
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    let logs = cli.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let total: f64 = cfg.scenarios.iter().map(|f| estimate(&cfg, *f)).sum();
    eprintln!(
        "ferrovn-perf {mode}: {} scenario families, estimated {total:.0} s; output in {}",
        cfg.scenarios.len(),
        cli.out.display()
    );
    let environment = env::collect(cli.node.as_deref().unwrap_or("local"));
    let tag = format!("{:x}", std::process::id() % 0x10000);
    let mut ctx = Ctx {
        cfg: cfg.clone(),
        progress: Progress::new(total, cli.quiet),
        out: Vec::new(),
        tag,
        logs,
    };
    run_all(&mut ctx);
    let report = Report {
        mode: mode.into(),
        environments: vec![environment],
        config: serde_json::to_value(&cfg)?,
        duration_secs: ctx.progress.elapsed(),
        measurements: ctx.out,
    };
    for f in output::write(&report, &cli.out)? {
        println!("{}", f.display());
    }
    let failed = report
        .measurements
        .iter()
        .filter(|m| matches!(m.status, Status::Failed { .. }))
        .count();
    eprintln!(
        "done in {:.0} s: {} rows, {failed} failed",
        report.duration_secs,
        report.measurements.len()
    );
    Ok(())
}
