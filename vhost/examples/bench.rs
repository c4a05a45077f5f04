//! Relay packet rate of the helper, per pinned core, against dpdk-testpmd doing the same job
//! between the same PMDs, and separately the ceiling its kernel side sets.
//! Run as root: `cargo run --release -p ferrovn-vhost --example bench`.
//!
//! Every run: a testpmd pod (virtio_user server, txonly, CPU A) sends into a vhost-user socket;
//! a relay on CPU B (one core) takes the packets out and hands them to a sink PMD. The relay is
//! either the helper (this program re-executed in helper mode: a separate process, with the
//! library's relay worker) or dpdk-testpmd in io forwarding mode between the same two PMDs.
//!
//! - Headline, like with like: the sink is `net_null` (`no-rx=1`: it frees what it is given and
//!   never receives), so nothing but the relay itself is measured; rate = what the relay takes
//!   off the pod's ring (the pod's Tx-pps; a net_null transmit never refuses, so taken =
//!   delivered). `vs_testpmd_null` = helper / testpmd, per round, median over rounds.
//! - Kernel-side ceiling, shown separately: the sink is the product's, `net_af_packet` on a veth
//!   whose far end sits in a namespace; rate = packets arriving on the far end. The af_packet
//!   transmit and the veth receive run on the relay core, so this bounds any relay of this
//!   design (helper and testpmd alike); a net_tap run of the helper follows.
//! - veth: a kernel pod path for scale, iperf3 UDP across a veth between two namespaces,
//!   sender on CPU B.
//!
//! Sizes are frame lengths without FCS (64 B and 1500 B). The last line (64 B) is
//! `vhost-bench helper_null_mpps=X testpmd_null_mpps=X vs_testpmd_null=X
//! helper_af_packet_mpps=X testpmd_af_packet_mpps=X vs_testpmd_af_packet=X veth_iperf_mpps=X`.
//! Env: BENCH_SECS (3) measuring window per run, BENCH_ROUNDS (3).

use anyhow::{Context, Result, bail};
use ferrovn_testkit::dpdk::pps_from_log;
use ferrovn_testkit::netns::rx_packets;
use ferrovn_vhost::cores::{allowed_cores, format_core_list};
use ferrovn_vhost::dpdk::{Eal, EthPort, Mempool, register_current_thread};
use ferrovn_vhost::helper::{Helper, HelperConfig};
use ferrovn_vhost::protocol::{KernelKind, PortSpec, vhost_devargs};
use ferrovn_vhost::relay::{Pair, PairCounters, Worker};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the bench created, removed on drop (also on error).
struct Lab {
    dir: PathBuf,
    netns: Vec<String>,
    links: Vec<String>,
    prefixes: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.links {
            sh("ip", &["link", "del", l]);
        }
        for n in &self.netns {
            sh("ip", &["netns", "del", n]);
        }
        for p in &self.prefixes {
            let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(p));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn spawn(&mut self, mut cmd: Command, log: &str) -> Result<u32> {
        let out = std::fs::File::create(self.dir.join(log))?;
        let err = out.try_clone()?;
        // stdin stays an open pipe: testpmd quits on EOF.
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("{cmd:?}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

/// Packets per second arriving on `dev` in `netns`, after a 1 s warm-up, over `secs`.
fn measure(netns: &str, dev: &str, secs: f64) -> Result<f64> {
    std::thread::sleep(Duration::from_secs(1));
    let ns = (!netns.is_empty()).then_some(netns);
    let a = rx_packets(ns, dev)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = rx_packets(ns, dev)?;
    Ok((b - a) as f64 / t.elapsed().as_secs_f64())
}

fn testpmd_pod(
    lab: &mut Lab,
    prefix: &str,
    sock: &Path,
    cpu: usize,
    size: usize,
    log: &str,
) -> Result<u32> {
    let _ = std::fs::remove_file(sock);
    // line-buffered stdout: the null-sink runs read its periodic stats while it runs (a file
    // is otherwise block-buffered until exit)
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "dpdk-testpmd"]);
    cmd.args([
        &format!("--file-prefix={prefix}"),
        "--no-huge",
        "-m",
        "256",
        "--iova-mode=va",
        "--no-pci",
        &format!("--lcores=0@{cpu},1@{cpu}"),
        &format!(
            "--vdev=net_virtio_user0,path={},server=1,queues=1,mac=0a:58:0a:63:08:02",
            sock.display()
        ),
        "--",
        "--nb-cores=1",
        "--total-num-mbufs=16384",
        "--forward-mode=txonly",
        &format!("--txpkts={size}"),
        // the null-sink runs read the pod's Tx-pps from here
        "--stats-period=1",
    ]);
    lab.prefixes.push(prefix.to_owned());
    lab.spawn(cmd, log)
}

const CHILD_ENV: &str = "FERROVN_VHOST_BENCH_CHILD";
/// `null`: the child relays into `net_null` instead of the spec's kernel PMD.
const SINK_ENV: &str = "FERROVN_VHOST_BENCH_SINK";

/// Where a relay puts the pod's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// `net_null,no-rx=1`: no kernel, the relay alone.
    Null,
    /// `net_af_packet` on the veth (the product's kernel side).
    AfPacket,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::Null => "null",
            Sink::AfPacket => "af_packet",
        }
    }
}

/// Helper mode: EAL + one relay worker + the port from the environment; prints `ready`, then
/// `connected` once the pod is attached; on stdin EOF prints the counters and exits cleanly.
fn child_main(spec_json: &str) -> Result<()> {
    use std::io::{BufRead, Write};
    let spec: PortSpec = serde_json::from_str(spec_json).context("child spec")?;
    let prefix = std::env::var("FERROVN_VHOST_BENCH_PREFIX").context("prefix")?;
    let cpu: usize = std::env::var("FERROVN_VHOST_BENCH_CPU")
        .context("cpu")?
        .parse()?;
    let allowed = allowed_cores()?;
    let eal = Eal::init(&ferrovn_vhost::eal_args(
        &prefix,
        512,
        &format_core_list(&allowed),
        &["--log-level=lib.vhost.config:error".into()],
    ))?;
    if std::env::var(SINK_ENV).is_ok_and(|v| v == "null") {
        return null_child_main(eal, &spec, &prefix, cpu);
    }
    let mut helper = Helper::start(
        eal,
        &HelperConfig {
            cores: vec![cpu],
            idle_sleep: Duration::ZERO,
            mbufs: 16383,
            descriptors: 1024,
            state_file: None,
        },
    )?;
    helper.add_port(spec.clone())?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !helper.list().first().is_some_and(|p| p.pod_connected) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    writeln!(out, "connected")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        line?;
    }
    let c = helper
        .list()
        .first()
        .map(|p| p.counters)
        .unwrap_or_default();
    helper.remove_port(&spec.name)?;
    let free = helper.mbufs_available();
    writeln!(
        out,
        "counters rx={} rx_dropped={} mbufs_free_after={free}/16383",
        c.rx_packets, c.rx_dropped
    )?;
    out.flush()?;
    helper.shutdown();
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&prefix));
    Ok(())
}

/// Helper mode with a `net_null` sink: the library's relay worker and PMDs wired the way
/// `Helper::add_port` wires them (one pinned worker registered with DPDK, one mbuf pool, the
/// same vhost devargs), with `net_null` where the product puts the kernel PMD.
fn null_child_main(eal: Eal, spec: &PortSpec, prefix: &str, cpu: usize) -> Result<()> {
    use std::io::{BufRead, Write};
    let pool = Mempool::create(&eal, "ferrovn_vhost", 16383, 256)?;
    let worker = Worker::spawn(cpu, Duration::ZERO, || {
        let _ = register_current_thread();
    })?;
    let vhost = EthPort::create(&eal, &vhost_devargs(0, spec), &pool, 1024)?;
    let null = EthPort::create(&eal, "net_null0,no-rx=1", &pool, 1024)?;
    let counters = PairCounters::default();
    worker.add(Pair {
        name: spec.name.clone(),
        pod: vhost.queue(),
        kernel: null.queue(),
        counters: counters.clone(),
    });
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !vhost.link_up() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    writeln!(out, "connected")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        line?;
    }
    worker.stop();
    vhost.close();
    null.close();
    let free = pool.available();
    writeln!(
        out,
        "counters rx={} rx_dropped={} mbufs_free_after={free}/16383",
        counters.rx_packets.get(),
        counters.rx_dropped.get()
    )?;
    out.flush()?;
    eal.cleanup();
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
    Ok(())
}

/// The helper child seen from the bench.
struct HelperChild {
    child: Option<Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl HelperChild {
    fn start(
        dir: &Path,
        spec: &PortSpec,
        null_sink: bool,
        prefix: &str,
        cpu: usize,
    ) -> Result<HelperChild> {
        use std::io::BufRead;
        let err = std::fs::File::create(dir.join(format!("helper-{}.log", spec.name)))?;
        let mut command = Command::new(std::env::current_exe()?);
        if null_sink {
            command.env(SINK_ENV, "null");
        }
        let mut child = command
            .env(CHILD_ENV, serde_json::to_string(spec)?)
            .env("FERROVN_VHOST_BENCH_PREFIX", prefix)
            .env("FERROVN_VHOST_BENCH_CPU", cpu.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("re-executing the bench as the helper")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut h = HelperChild {
            child: Some(child),
            lines,
        };
        h.wait_for("ready", Duration::from_secs(30))?;
        Ok(h)
    }

    /// Waits for a line starting with `word`; returns it.
    fn wait_for(&mut self, word: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(word) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("helper child: no {word:?} within {timeout:?}"),
            }
        }
    }

    /// Closes stdin (the child then reports and exits); returns the counters line.
    fn finish(&mut self) -> Result<String> {
        if let Some(c) = self.child.as_mut() {
            drop(c.stdin.take());
        }
        let counters = self.wait_for("counters", Duration::from_secs(15))?;
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(counters)
    }
}

impl Drop for HelperChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_main(&spec);
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the bench needs root (network namespaces, DPDK)");
    }
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let allowed = allowed_cores()?;
    let (pod_cpu, relay_cpu) = match (allowed.first(), allowed.last()) {
        (Some(&a), Some(&b)) if a != b => (a, b),
        _ => bail!(
            "need two CPUs (pod generator + relay), have {}",
            format_core_list(&allowed)
        ),
    };
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("ferrovn-vhost-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let mut lab = Lab {
        dir: dir.clone(),
        netns: vec![],
        links: vec![],
        prefixes: vec![],
        children: vec![],
    };

    // kernel side of the relay: veth, far end in a namespace
    let sink_ns = format!("fvb-sink-{id}");
    let host = format!("fvbk{id}");
    lab.netns.push(sink_ns.clone());
    lab.links.push(host.clone());
    for args in [
        vec!["netns", "add", &sink_ns],
        vec![
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &sink_ns,
        ],
        vec!["link", "set", &host, "up"],
        vec!["-n", &sink_ns, "link", "set", "eth0", "up"],
    ] {
        if !sh("ip", &args) {
            bail!("ip {args:?} failed");
        }
    }

    let sizes = [64usize, 1500];
    let sinks = [Sink::Null, Sink::AfPacket];
    // per sink, per size, one sample per round
    let mut helper_runs: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); sizes.len()]; sinks.len()];
    let mut testpmd_runs: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); sizes.len()]; sinks.len()];
    let mut veth_mpps = vec![0.0; sizes.len()];

    // Helper and testpmd interleaved over BENCH_ROUNDS rounds: the machine is shared and
    // noisy; alternating the order and taking medians keeps a load burst from deciding the result.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // The helper runs as a child process (this program re-executed in helper mode: the library
    // code the binary runs, minus the control socket), like testpmd does: separate processes on
    // both sides.
    let helper_prefix = format!("fvb-helper-{id}");
    let sock = dir.join("pod.sock");
    let spec = PortSpec {
        name: "bench".into(),
        socket: sock.clone(),
        kernel_iface: host.clone(),
        kernel: KernelKind::AfPacket,
        mac: None,
    };
    for round in 1..=rounds {
        for (k, &sink) in sinks.iter().enumerate() {
            for (i, &size) in sizes.iter().enumerate() {
                // odd rounds measure the helper first, even rounds testpmd first
                for helper_turn in if round % 2 == 1 {
                    [true, false]
                } else {
                    [false, true]
                } {
                    let pod_log = format!(
                        "pod-{}-{}-{size}-{round}.log",
                        if helper_turn { "helper" } else { "testpmd" },
                        sink.name()
                    );
                    let mpps = if helper_turn {
                        lab.prefixes.push(helper_prefix.clone());
                        let mut child = HelperChild::start(
                            &dir,
                            &spec,
                            sink == Sink::Null,
                            &helper_prefix,
                            relay_cpu,
                        )?;
                        let pod = testpmd_pod(
                            &mut lab,
                            &format!("fvb-pod-{id}"),
                            &sock,
                            pod_cpu,
                            size,
                            &pod_log,
                        )?;
                        child
                            .wait_for("connected", Duration::from_secs(15))
                            .with_context(|| lab.log(&pod_log))?;
                        let mpps = measure_sink(&lab, sink, &sink_ns, &pod_log, secs)? / 1e6;
                        lab.stop(pod);
                        let counters = child.finish()?;
                        println!(
                            "round {round} helper  {:>9} {size:>4} B: {mpps:6.3} Mpps (1 relay core, cpu{relay_cpu}); {counters}",
                            sink.name()
                        );
                        mpps
                    } else {
                        // testpmd forwarding between the same two PMDs (vhost client + sink), io mode
                        let relay_prefix = format!("fvb-relay-{id}");
                        lab.prefixes.push(relay_prefix.clone());
                        let pod = testpmd_pod(
                            &mut lab,
                            &format!("fvb-pod-{id}"),
                            &sock,
                            pod_cpu,
                            size,
                            &pod_log,
                        )?;
                        let sink_vdev = match sink {
                            Sink::Null => "--vdev=net_null0,no-rx=1".to_string(),
                            Sink::AfPacket => {
                                format!("--vdev=net_af_packet0,iface={host},qpairs=1")
                            }
                        };
                        let mut cmd = Command::new("dpdk-testpmd");
                        cmd.args([
                            &format!("--file-prefix={relay_prefix}"),
                            "--no-huge",
                            "-m",
                            "512",
                            "--no-pci",
                            &format!("--lcores=0@{pod_cpu},1@{relay_cpu}"),
                            &format!(
                                "--vdev=net_vhost0,iface={},client=1,queues=1",
                                sock.display()
                            ),
                            &sink_vdev,
                            "--",
                            "--nb-cores=1",
                            "--forward-mode=io",
                            "--total-num-mbufs=16384",
                        ]);
                        let relay =
                            lab.spawn(cmd, &format!("relay-testpmd-{}-{size}.log", sink.name()))?;
                        std::thread::sleep(Duration::from_secs(2));
                        let mpps = measure_sink(&lab, sink, &sink_ns, &pod_log, secs)? / 1e6;
                        lab.stop(relay);
                        lab.stop(pod);
                        println!(
                            "round {round} testpmd {:>9} {size:>4} B: {mpps:6.3} Mpps (io forwarding, 1 core, cpu{relay_cpu})",
                            sink.name()
                        );
                        mpps
                    };
                    if helper_turn {
                        helper_runs[k][i].push(mpps);
                    } else {
                        testpmd_runs[k][i].push(mpps);
                    }
                }
            }
        }
    }
    // The other kernel side: net_tap (the PMD's tap receives into the kernel stack).
    let tap = format!("fvbt{id}");
    let mut tap_mpps = vec![0.0; sizes.len()];
    let tap_spec = PortSpec {
        name: "bench-tap".into(),
        kernel_iface: tap.clone(),
        kernel: KernelKind::Tap,
        ..spec.clone()
    };
    for (i, &size) in sizes.iter().enumerate() {
        let mut child = HelperChild::start(&dir, &tap_spec, false, &helper_prefix, relay_cpu)?;
        let log = format!("pod-tap-{size}.log");
        let pod = testpmd_pod(
            &mut lab,
            &format!("fvb-pod-{id}"),
            &sock,
            pod_cpu,
            size,
            &log,
        )?;
        child
            .wait_for("connected", Duration::from_secs(15))
            .with_context(|| lab.log(&log))?;
        tap_mpps[i] = measure("", &tap, secs)? / 1e6;
        lab.stop(pod);
        let counters = child.finish()?;
        println!(
            "        helper-tap {size:>4} B: {:6.3} Mpps delivered (net_tap instead of net_af_packet); {counters}",
            tap_mpps[i]
        );
    }

    // 3) plain veth pod path: iperf3 UDP between two namespaces
    let (na, nb) = (format!("fvb-a-{id}"), format!("fvb-b-{id}"));
    lab.netns.push(na.clone());
    lab.netns.push(nb.clone());
    for args in [
        vec!["netns", "add", &na],
        vec!["netns", "add", &nb],
        vec![
            "-n", &na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &nb,
        ],
        vec!["-n", &na, "addr", "add", "10.99.8.1/24", "dev", "eth0"],
        vec!["-n", &nb, "addr", "add", "10.99.8.2/24", "dev", "eth0"],
        vec!["-n", &na, "link", "set", "eth0", "up"],
        vec!["-n", &nb, "link", "set", "eth0", "up"],
    ] {
        if !sh("ip", &args) {
            bail!("ip {args:?} failed");
        }
    }
    let server = lab.spawn(
        {
            let mut c = Command::new("ip");
            c.args([
                "netns",
                "exec",
                &nb,
                "taskset",
                "-c",
                &pod_cpu.to_string(),
                "iperf3",
                "-s",
                "-p",
                "5201",
            ]);
            c
        },
        "iperf3-server.log",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    for (i, &size) in sizes.iter().enumerate() {
        // payload = frame - 14 (Ethernet) - 20 (IPv4) - 8 (UDP)
        let payload = (size - 42).to_string();
        let mut c = Command::new("ip");
        let t = format!("{}", secs.ceil() as u64 + 2);
        c.args([
            "netns",
            "exec",
            &na,
            "taskset",
            "-c",
            &relay_cpu.to_string(),
            "iperf3",
            "-c",
            "10.99.8.2",
            "-p",
            "5201",
            "-u",
            "-b",
            "0",
            "-l",
            &payload,
            "-t",
            &t,
        ]);
        let client = lab.spawn(c, &format!("iperf3-{size}.log"))?;
        veth_mpps[i] = measure(&nb, "eth0", secs)? / 1e6;
        println!(
            "        veth    {size:>4} B: {:6.3} Mpps delivered (iperf3 UDP sender on cpu{relay_cpu}, kernel veth pod path)",
            veth_mpps[i]
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while lab
            .children
            .iter_mut()
            .any(|ch| ch.id() == client && ch.try_wait().ok().flatten().is_none())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        lab.stop(client);
    }
    lab.stop(server);

    let helper_mpps: Vec<Vec<f64>> = helper_runs
        .iter()
        .map(|per_size| per_size.iter().map(|r| median(r)).collect())
        .collect();
    let testpmd_mpps: Vec<Vec<f64>> = testpmd_runs
        .iter()
        .map(|per_size| per_size.iter().map(|r| median(r)).collect())
        .collect();
    // ratio: median over rounds of helper/testpmd measured back to back in the same round
    let ratios: Vec<Vec<f64>> = helper_runs
        .iter()
        .zip(&testpmd_runs)
        .map(|(hs, ts)| {
            hs.iter()
                .zip(ts)
                .map(|(h, t)| {
                    median(
                        &h.iter()
                            .zip(t)
                            .filter(|(_, t)| **t > 0.0)
                            .map(|(h, t)| h / t)
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()
        })
        .collect();
    let (null, af) = (0, 1);
    for (i, &size) in sizes.iter().enumerate() {
        println!(
            "size {size:>4} B (medians of {rounds} rounds): relay alone (net_null sink): helper {:.3} Mpps, testpmd {:.3} Mpps, helper/testpmd {:.2}",
            helper_mpps[null][i], testpmd_mpps[null][i], ratios[null][i]
        );
        println!(
            "size {size:>4} B (medians of {rounds} rounds): kernel-side ceiling (af_packet -> veth): helper {:.3} Mpps (tap {:.3}), testpmd {:.3} Mpps, helper/testpmd {:.2}; veth iperf3 {:.3} Mpps",
            helper_mpps[af][i], tap_mpps[i], testpmd_mpps[af][i], ratios[af][i], veth_mpps[i]
        );
    }
    println!(
        "vhost-bench helper_null_mpps={:.3} testpmd_null_mpps={:.3} vs_testpmd_null={:.2} helper_af_packet_mpps={:.3} testpmd_af_packet_mpps={:.3} vs_testpmd_af_packet={:.2} veth_iperf_mpps={:.3}",
        helper_mpps[null][0],
        testpmd_mpps[null][0],
        ratios[null][0],
        helper_mpps[af][0],
        testpmd_mpps[af][0],
        ratios[af][0],
        veth_mpps[0]
    );
    Ok(())
}

/// The rate of one run, measured while it runs: with the null sink what the relay takes off
/// the pod's ring (the pod's Tx-pps over the last `secs` complete periods), otherwise what
/// arrives on the veth's far end.
fn measure_sink(lab: &Lab, sink: Sink, sink_ns: &str, pod_log: &str, secs: f64) -> Result<f64> {
    match sink {
        Sink::AfPacket => measure(sink_ns, "eth0", secs),
        Sink::Null => {
            // periods are counted, not seconds: the pod may still be starting. One period of
            // warm-up, `secs` measured ones, and the one being printed (left out).
            let periods = secs.round().max(1.0) as usize;
            let printed = || lab.log(pod_log).matches("Tx-pps:").count();
            let first = printed();
            let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
            while printed() < first + periods + 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let log = lab.log(pod_log);
            let pps = pps_from_log(&log, "Tx", periods);
            if pps <= 0.0 {
                let tail: Vec<char> = log.chars().rev().take(2000).collect();
                let tail: String = tail.into_iter().rev().collect();
                eprintln!("{pod_log}: no Tx-pps; its log ends with:\n{tail}");
            }
            Ok(pps)
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
