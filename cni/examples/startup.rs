//! Startup and round-trip cost of the plugin binary, as a runtime pays it (fork+exec+stdin).
//!
//! `cargo build --release -p ferrovn-cni && cargo run --release -p ferrovn-cni --example startup [path/to/ferrovn-cni] [runs]`
//! Last line: `cni-startup version_p50_us=X version_p99_us=X add_p50_us=X add_p99_us=X size_bytes=X`

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovn_cni::protocol::{self, Request, Response};
use ferrovn_cni::spec::{CniResult, Interface, IpConfig};

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_micros()
}

type Error = Box<dyn std::error::Error>;

/// An error naming what failed.
fn ctx<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| format!("{what}: {e}").into()
}

fn time_runs(
    bin: &str,
    runs: usize,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<Vec<Duration>, Error> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ctx("spawning the plugin"))?;
        child
            .stdin
            .take()
            .ok_or("the plugin's stdin is not piped")?
            .write_all(stdin)
            .map_err(ctx("writing the plugin's stdin"))?;
        let out = child
            .wait_with_output()
            .map_err(ctx("waiting for the plugin"))?;
        if !out.status.success() {
            return Err(format!(
                "the plugin failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/ferrovn-cni".into());
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);

    let dir = tempfile::tempdir().map_err(ctx("temp dir"))?;
    let sock = dir.path().join("cni.sock");
    let listener = UnixListener::bind(&sock).map_err(ctx("binding the agent socket"))?;
    let result = CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: Some("0a:58:0a:10:00:05".into()),
            mtu: Some(1400),
            sandbox: Some("/var/run/netns/x".into()),
            ..Interface::default()
        }],
        ips: vec![IpConfig {
            address: "10.16.0.5/16".parse().map_err(ctx("address"))?,
            gateway: Some("10.16.0.1".parse().map_err(ctx("gateway"))?),
            interface: Some(0),
        }],
        ..CniResult::default()
    };
    let handler = Arc::new(move |_req: Request| Response::with_result(result.clone()));
    std::thread::spawn(move || protocol::serve(listener, handler));

    let version = time_runs(
        &bin,
        runs,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.1.0"}"#,
    )?;
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"ovn","type":"ferrovn-cni","server_socket":"{}"}}"#,
        sock.display()
    );
    let add_env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
    ];
    let add = time_runs(&bin, runs, &add_env, conf.as_bytes())?;
    println!(
        "binary {bin}: {size} bytes; {runs} runs each (fork+exec+stdin+exit, as a runtime pays it)"
    );
    println!(
        "VERSION: p50 {} us, p99 {} us; ADD via agent socket: p50 {} us, p99 {} us",
        percentile(&version, 0.5),
        percentile(&version, 0.99),
        percentile(&add, 0.5),
        percentile(&add, 0.99)
    );
    println!(
        "cni-startup version_p50_us={} version_p99_us={} add_p50_us={} add_p99_us={} size_bytes={size}",
        percentile(&version, 0.5),
        percentile(&version, 0.99),
        percentile(&add, 0.5),
        percentile(&add, 0.99)
    );
    Ok(())
}
