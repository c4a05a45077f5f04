//! The datapath keys of the control-plane benches, from the DPDK part of the ferrovn-dataplane
//! example `bench-ctcost` (run as root, in the same profile as the calling bench) when
//! `BENCH_DATAPATH=1`; `na` otherwise, or when it cannot run, with the reason on stderr.

/// Runs bench-ctcost's DPDK phase over `shapes` (comma-separated, `none` first: every ratio is
/// paired against neighbouring `none` runs) and returns the value of each of `keys` from its
/// last line, `na` for a key it did not print.
pub fn ctcost_keys(shapes: &str, keys: &[&str]) -> Vec<String> {
    let na = || keys.iter().map(|_| "na".to_string()).collect::<Vec<_>>();
    if std::env::var_os("BENCH_DATAPATH").is_none() {
        eprintln!("datapath keys: set BENCH_DATAPATH=1 (root, hugepages) to measure them");
        return na();
    }
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args([
        "run",
        "-q",
        "-p",
        "ferrovn-dataplane",
        "--example",
        "bench-ctcost",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    cmd.env("BENCH_PHASES", "dpdk")
        .env("BENCH_SHAPES", shapes)
        .stderr(std::process::Stdio::inherit());
    let out = match cmd.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            eprintln!(
                "bench-ctcost failed: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            return na();
        }
        Err(e) => {
            eprintln!("bench-ctcost: {e}");
            return na();
        }
    };
    print!("{out}");
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with("ctcost-bench "))
        .unwrap_or_default();
    keys.iter()
        .map(|k| {
            last.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_else(|| "na".into())
        })
        .collect()
}
