//! Write throughput of our client against `ovn-nbctl` (the C IDL), and the replica's memory
//! per row.
//!
//! `cargo run --release -p ferrovn-ovsdb --example bench`
//!
//! 1. Ours: a fresh ovsdb-server with the NB schema; 100 Logical_Switches with 100
//!    Logical_Switch_Ports each (name + addresses), one transaction per switch built from the
//!    generated typed rows, all 100 transactions in flight at once on one connection.
//! 2. ovn-nbctl, the C IDL, the same batches: one invocation per switch carrying `ls-add` and,
//!    per port, `lsp-add` + `lsp-set-addresses`, chained with `--`, each on its own fresh
//!    server:
//!    - warm (the headline baseline): through an `ovn-nbctl --detach` daemon
//!      (`OVN_NB_DAEMON`), which keeps its IDL replica between invocations, as a long-running
//!      client does; like with like with ours, which also keeps one connection and replica;
//!    - cold (kept beside it): one `ovn-nbctl` process per switch, each connecting and
//!      downloading the database before it writes (what a shell script pays).
//! 3. Memory: 100,000 ports (1,000 switches) written to a third server, then a replica of
//!    Logical_Switch_Port is started and its footprint measured two ways: the live heap bytes
//!    counted by a wrapping global allocator (exact, this process only) and the VmRSS growth;
//!    for reference, the VmRSS growth of an `ovn-nbctl --detach` daemon (the C IDL) holding
//!    the same database.
//!
//! Options: `--ports-per-switch N`, `--switches N`, `--memory-rows N` (0 skips step 3).
//! The last line is `ovsdb-bench ours_rows_per_s=N nbctl_daemon_rows_per_s=N
//! nbctl_cold_rows_per_s=N vs_nbctl_daemon=X vs_nbctl_cold=X`: `vs_nbctl_daemon` (ours / warm
//! daemon) is the headline; `vs_nbctl_cold` compares with a process per switch.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferrovn_ovsdb::nb::{self, LogicalSwitch, LogicalSwitchPort};
use ferrovn_ovsdb::{Client, ClientOptions, MonitorSpec, Operation, Row, Transaction, Uuid};
use ferrovn_testkit::ovsdb::OvsdbServer;

/// Counts live heap bytes so the replica's footprint can be measured exactly.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged (the same layout, the same
// pointer), so its guarantees hold; the counter is only an atomic side effect.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, Copy)]
struct Settings {
    switches: usize,
    ports_per_switch: usize,
    memory_rows: usize,
}

fn settings() -> anyhow::Result<Settings> {
    let mut s = Settings {
        switches: 100,
        ports_per_switch: 100,
        memory_rows: 100_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = || -> anyhow::Result<usize> {
            Ok(it
                .clone()
                .next()
                .with_context(|| format!("{flag} needs a number"))?
                .parse()?)
        };
        match flag.as_str() {
            "--switches" => s.switches = value()?,
            "--ports-per-switch" => s.ports_per_switch = value()?,
            "--memory-rows" => s.memory_rows = value()?,
            other => bail!("unknown option {other}"),
        }
        it.next();
    }
    Ok(s)
}

const NB_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/ovn-nb.ovsschema");

fn mac(switch: usize, port: usize) -> String {
    format!(
        "0a:00:00:{:02x}:{:02x}:{:02x}",
        switch >> 8 & 0xff,
        switch & 0xff,
        port & 0xff
    )
}

fn ip(switch: usize, port: usize) -> String {
    format!(
        "10.{}.{}.{}",
        switch >> 8 & 0xff,
        switch & 0xff,
        port % 250 + 2
    )
}

/// One switch and its ports as a transaction of typed rows: the ports get client-chosen
/// UUIDs so the switch can reference them in the same transaction.
fn switch_transaction(switch: usize, ports: usize, with_ids: bool) -> Transaction {
    let mut txn = Transaction::new(nb::SCHEMA_NAME);
    let mut port_ids = std::collections::BTreeSet::new();
    for p in 0..ports {
        let mut port = LogicalSwitchPort {
            uuid: Uuid::new_v4(),
            name: format!("sw{switch}-p{p}"),
            addresses: [format!("{} {}", mac(switch, p), ip(switch, p))].into(),
            ..Default::default()
        };
        if with_ids {
            port.external_ids = [
                ("pod".to_string(), format!("pod-{switch}-{p}")),
                ("namespace".to_string(), format!("ns-{switch}")),
            ]
            .into();
        }
        port_ids.insert(port.uuid);
        txn.push(port.insert_op());
    }
    let switch_row = LogicalSwitch {
        uuid: Uuid::new_v4(),
        name: format!("sw{switch}"),
        ports: port_ids,
        ..Default::default()
    };
    txn.push(switch_row.insert_op());
    txn
}

async fn connect(server: &OvsdbServer) -> anyhow::Result<Client> {
    let options = ClientOptions {
        expected_schema_version: Some(nb::SCHEMA_VERSION),
        ..Default::default()
    };
    Ok(Client::connect(&server.remote(), nb::SCHEMA_NAME, options).await?)
}

async fn count_ports(client: &Client) -> anyhow::Result<usize> {
    let txn = Transaction::new(nb::SCHEMA_NAME)
        .with(Operation::select(LogicalSwitchPort::TABLE).columns(["name"]));
    let out = client.transact(&txn).await?;
    Ok(out[0].rows().map(<[_]>::len).unwrap_or(0))
}

/// Writes `switches` transactions, all in flight at once; returns the elapsed time.
async fn write_ours(
    client: &Client,
    first_switch: usize,
    switches: usize,
    ports: usize,
    with_ids: bool,
) -> anyhow::Result<Duration> {
    // The clock includes building the typed rows and their operations.
    let start = Instant::now();
    let txns: Vec<Transaction> = (first_switch..first_switch + switches)
        .map(|s| switch_transaction(s, ports, with_ids))
        .collect();
    let replies = futures::future::join_all(txns.iter().map(|t| client.transact(t))).await;
    let elapsed = start.elapsed();
    for reply in replies {
        reply?;
    }
    Ok(elapsed)
}

/// One `ovn-nbctl` invocation creating switch `switch` and its ports; `db` is `--db=...`
/// or, for the daemon, `None` with `daemon` set to its control socket.
fn nbctl_batch(
    db: Option<&str>,
    daemon: Option<&str>,
    switch: usize,
    ports: usize,
) -> anyhow::Result<()> {
    let mut args = vec!["--timeout=120".to_string()];
    if let Some(db) = db {
        args.push(format!("--db={db}"));
    }
    args.extend(["ls-add".to_string(), format!("sw{switch}")]);
    for p in 0..ports {
        let name = format!("sw{switch}-p{p}");
        args.extend([
            "--".to_string(),
            "lsp-add".to_string(),
            format!("sw{switch}"),
            name.clone(),
            "--".to_string(),
            "lsp-set-addresses".to_string(),
            name,
            format!("{} {}", mac(switch, p), ip(switch, p)),
        ]);
    }
    let mut command = Command::new("ovn-nbctl");
    command.args(&args);
    if let Some(ctl) = daemon {
        command.env("OVN_NB_DAEMON", ctl);
    }
    let out = command.output().context("running ovn-nbctl")?;
    ensure!(
        out.status.success(),
        "ovn-nbctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs the batches through `ovn-nbctl` (one process per batch, or a detached daemon).
fn run_nbctl(server: &OvsdbServer, s: Settings, use_daemon: bool) -> anyhow::Result<Duration> {
    let db = server.remote();
    let ctl = server.dir().join("nbctl.ctl");
    let ctl_text = ctl.display().to_string();
    let mut daemon_guard = None;
    if use_daemon {
        let out = Command::new("ovn-nbctl")
            .arg(format!("--db={db}"))
            .arg(format!(
                "--pidfile={}",
                server.dir().join("nbctl.pid").display()
            ))
            .arg(format!("--unixctl={ctl_text}"))
            .arg(format!(
                "--log-file={}",
                server.dir().join("nbctl.log").display()
            ))
            .arg("--detach")
            .output()
            .context("starting ovn-nbctl --detach")?;
        ensure!(
            out.status.success(),
            "ovn-nbctl --detach failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        daemon_guard = Some(NbctlDaemon(ctl_text.clone()));
    }
    let start = Instant::now();
    for sw in 0..s.switches {
        if use_daemon {
            nbctl_batch(None, Some(&ctl_text), sw, s.ports_per_switch)?;
        } else {
            nbctl_batch(Some(&db), None, sw, s.ports_per_switch)?;
        }
    }
    let elapsed = start.elapsed();
    drop(daemon_guard);
    Ok(elapsed)
}

/// Stops the `ovn-nbctl` daemon through its control socket.
struct NbctlDaemon(String);

impl Drop for NbctlDaemon {
    fn drop(&mut self) {
        let _ = Command::new("ovs-appctl")
            .args(["--timeout=10", "-t", &self.0, "exit"])
            .output();
    }
}

async fn nbctl_phase(s: Settings, use_daemon: bool) -> anyhow::Result<f64> {
    let rows = s.switches * s.ports_per_switch;
    let server = OvsdbServer::start(NB_COPY)?;
    let (server, elapsed) = tokio::task::spawn_blocking(move || {
        let elapsed = run_nbctl(&server, s, use_daemon);
        (server, elapsed)
    })
    .await?;
    let elapsed = elapsed?;
    let checker = connect(&server).await?;
    let n = count_ports(&checker).await?;
    ensure!(n == rows, "nbctl: expected {rows} ports, found {n}");
    checker.shutdown();
    let rate = rows as f64 / elapsed.as_secs_f64();
    println!(
        "{}: {rows} ports in {:.3} s = {rate:.0} rows/s ({} invocations of {} commands)",
        if use_daemon {
            "nbctl warm (--detach daemon, the baseline)"
        } else {
            "nbctl cold (one process per switch)"
        },
        elapsed.as_secs_f64(),
        s.switches,
        1 + 2 * s.ports_per_switch
    );
    Ok(rate)
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn memory_per_row(rows: usize) -> anyhow::Result<()> {
    const PORTS: usize = 100;
    let switches = rows.div_ceil(PORTS);
    let server = OvsdbServer::start(NB_COPY)?;
    {
        let writer = connect(&server).await?;
        // In chunks so the server's queue (and our memory) stays bounded.
        for chunk in (0..switches).collect::<Vec<_>>().chunks(100) {
            write_ours(&writer, chunk[0], chunk.len(), PORTS, true).await?;
        }
        let n = count_ports(&writer).await?;
        ensure!(
            n == switches * PORTS,
            "expected {} ports, found {n}",
            switches * PORTS
        );
        writer.shutdown();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = connect(&server).await?;
    // Hand freed heap back to the OS first, so both RSS readings start from live memory.
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe { libc::malloc_trim(0) };
    let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
    let rss_before = rss_bytes();
    let start = Instant::now();
    let replica = client
        .replica(MonitorSpec::new().table(LogicalSwitchPort::TABLE))
        .await?;
    let sync_time = start.elapsed();
    // Let the connection's read buffers drain back to their idle size.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heap_after = LIVE_BYTES.load(Ordering::Relaxed);
    let rss_after = rss_bytes();
    let replicated = replica.read(|data| data.len(LogicalSwitchPort::TABLE));
    ensure!(
        replicated == switches * PORTS,
        "replica holds {replicated} rows"
    );
    // One typed conversion, to show the replica rows are what the generated types read.
    let sample = replica.read(|data| {
        data.rows(LogicalSwitchPort::TABLE)
            .next()
            .map(|(uuid, row)| LogicalSwitchPort::from_columns(*uuid, row))
    });
    if let Some(Err(e)) = sample {
        bail!("replica row does not read as LogicalSwitchPort: {e}");
    }
    let heap_per_row = heap_after.saturating_sub(heap_before) as f64 / replicated as f64;
    println!(
        "replica: {replicated} Logical_Switch_Port rows (name, addresses, 2 external_ids, \
         all 16 columns monitored) synced in {:.2} s",
        sync_time.as_secs_f64()
    );
    println!(
        "replica memory: {heap_per_row:.0} bytes/row live heap (counting global allocator, \
         after sync minus before)"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "replica memory: {:.0} bytes/row VmRSS growth ({} MiB -> {} MiB; includes heap \
             freed after parsing the initial snapshot but kept by malloc)",
            after.saturating_sub(before) as f64 / replicated as f64,
            before >> 20,
            after >> 20
        );
    }
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    if let (Some(before), Some(trimmed)) = (rss_before, rss_bytes()) {
        println!(
            "replica memory: {:.0} bytes/row VmRSS growth after malloc_trim ({} MiB)",
            trimmed.saturating_sub(before) as f64 / replicated as f64,
            trimmed >> 20
        );
    }
    client.shutdown();
    drop(replica);

    // Reference: the C IDL holding the same database, as an `ovn-nbctl --detach` daemon
    // (it monitors every table), against the same daemon on an empty database.
    let empty = OvsdbServer::start(NB_COPY)?;
    let (full_rss, empty_rss) = tokio::task::spawn_blocking(move || {
        (
            nbctl_daemon_rss(&server, switches),
            nbctl_daemon_rss(&empty, 0),
        )
    })
    .await?;
    let (full_rss, empty_rss) = (full_rss?, empty_rss?);
    println!(
        "C IDL (ovn-nbctl --detach, whole NB): {:.0} bytes/row VmRSS growth ({} MiB with the \
         rows, {} MiB on an empty database)",
        full_rss.saturating_sub(empty_rss) as f64 / replicated as f64,
        full_rss >> 20,
        empty_rss >> 20
    );
    Ok(())
}

/// VmRSS of an `ovn-nbctl` daemon once it has loaded `server`'s database (checked by asking
/// it to list the `switches` switches).
fn nbctl_daemon_rss(server: &OvsdbServer, switches: usize) -> anyhow::Result<usize> {
    let ctl = server.dir().join("nbctl-mem.ctl").display().to_string();
    let pidfile = server.dir().join("nbctl-mem.pid");
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", server.remote()))
        .arg(format!("--pidfile={}", pidfile.display()))
        .arg(format!("--unixctl={ctl}"))
        .arg("--detach")
        .output()
        .context("starting ovn-nbctl --detach")?;
    ensure!(out.status.success(), "ovn-nbctl --detach failed");
    let _guard = NbctlDaemon(ctl.clone());
    let out = Command::new("ovn-nbctl")
        .env("OVN_NB_DAEMON", &ctl)
        .args(["--timeout=120", "ls-list"])
        .output()
        .context("ovn-nbctl ls-list")?;
    ensure!(out.status.success(), "ovn-nbctl ls-list failed");
    let listed = String::from_utf8_lossy(&out.stdout).lines().count();
    ensure!(
        listed == switches,
        "nbctl daemon lists {listed} switches, expected {switches}"
    );
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: usize = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS of the nbctl daemon")?;
    Ok(kb * 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = settings()?;
    let rows = s.switches * s.ports_per_switch;
    println!(
        "ovsdb-bench: {} Logical_Switches x {} Logical_Switch_Ports = {rows} ports (name + addresses)",
        s.switches, s.ports_per_switch
    );

    // Ours.
    let server = OvsdbServer::start(NB_COPY)?;
    let client = connect(&server).await?;
    let ours = write_ours(&client, 0, s.switches, s.ports_per_switch, false).await?;
    let n = count_ports(&client).await?;
    ensure!(n == rows, "ours: expected {rows} ports, found {n}");
    client.shutdown();
    drop(server);
    let ours_rate = rows as f64 / ours.as_secs_f64();
    println!(
        "ours:  {rows} ports in {:.3} s = {ours_rate:.0} rows/s ({} transactions pipelined on one connection)",
        ours.as_secs_f64(),
        s.switches
    );

    // ovn-nbctl: the warm daemon (the headline baseline), then one cold process per batch.
    let daemon_rate = nbctl_phase(s, true).await?;
    let cold_rate = nbctl_phase(s, false).await?;

    if s.memory_rows > 0 {
        memory_per_row(s.memory_rows).await?;
    }

    println!(
        "ovsdb-bench ours_rows_per_s={:.0} nbctl_daemon_rows_per_s={:.0} nbctl_cold_rows_per_s={:.0} vs_nbctl_daemon={:.2} vs_nbctl_cold={:.2}",
        ours_rate,
        daemon_rate,
        cold_rate,
        ours_rate / daemon_rate,
        ours_rate / cold_rate
    );
    Ok(())
}
