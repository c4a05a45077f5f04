//! What a test needs from the machine (a tool, a file, root, hugepages), checked in one place.
//!
//! With `FERROVN_REQUIRE_ALL=1` (set by `.ci/run`) a missing need FAILS the test, naming what
//! is missing and how to get it; without it the test is skipped LOUDLY on stderr, so a
//! developer machine without OVS still runs the rest. Fallbacks (DPDK with `--no-huge`
//! because no hugepages are free) go through [`fallback`] and fail the same way in CI.
//!
//! ```no_run
//! use ferrovn_testkit::require::{Need, require};
//! if !require("my_test", &[Need::Tool("ovsdb-server"), Need::Root]) {
//!     return;
//! }
//! ```

use std::path::{Path, PathBuf};

use crate::process::which;

/// The environment variable that turns every skip and fallback into a failure.
pub const REQUIRE_ALL: &str = "FERROVN_REQUIRE_ALL";

/// How the tools the tests run get installed.
pub const INSTALL: &str = "`make deps` (as root) installs it";

/// One thing a test needs.
#[derive(Debug, Clone)]
pub enum Need {
    /// A program on `PATH`, or an executable at an absolute path.
    Tool(&'static str),
    /// An executable at a path computed at run time (e.g. `ovs_paths::vswitchd_dpdk()`).
    Program(PathBuf),
    /// A file installed by a package (e.g. a schema).
    File(PathBuf),
    /// Effective UID 0 (network namespaces, mounts, OVS).
    Root,
    /// `pages` free 2 MiB hugepages, or the right to add them (root and a writable
    /// `nr_hugepages`).
    Hugepages(u64),
}

impl Need {
    /// Why this need is not met on this machine, or `None` if it is.
    pub fn missing(&self) -> Option<String> {
        match self {
            Need::Tool(t) => which(t)
                .is_none()
                .then(|| format!("program `{t}` not found on PATH; {INSTALL}")),
            Need::Program(p) => which(&p.display().to_string())
                .is_none()
                .then(|| format!("program {} not installed; {INSTALL}", p.display())),
            Need::File(p) => {
                (!p.exists()).then(|| format!("file {} not installed; {INSTALL}", p.display()))
            }
            Need::Root => (!nix::unistd::geteuid().is_root())
                .then(|| "root (network namespaces, mounts, OVS): run the tests as root".into()),
            Need::Hugepages(pages) => hugepages_missing(*pages),
        }
    }
}

fn read_count(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn hugepages_missing(pages: u64) -> Option<String> {
    const DIR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
    if !Path::new(DIR).exists() {
        return Some("2 MiB hugepages: this kernel has none (CONFIG_HUGETLBFS)".into());
    }
    let free = read_count(&format!("{DIR}/free_hugepages")).unwrap_or(0);
    let can_raise = nix::unistd::geteuid().is_root();
    (free < pages && !can_raise).then(|| {
        format!(
            "{pages} free 2 MiB hugepages ({free} free, and not root to add more): \
             as root, `echo {pages} > {DIR}/nr_hugepages`"
        )
    })
}

/// What every OVS-DPDK lab test needs (root, the OVN daemons, `ovs-vswitchd-dpdk`,
/// `dpdk-testpmd` for its DPDK pods), followed by `more`.
pub fn ovs_dpdk_needs(more: &[Need]) -> Vec<Need> {
    let mut needs = vec![
        Need::Root,
        Need::Tool("ovsdb-server"),
        Need::Tool("ovn-northd"),
        Need::Tool("ovn-controller"),
        Need::Tool("dpdk-testpmd"),
        Need::Program(crate::ovs_paths::vswitchd_dpdk()),
    ];
    needs.extend_from_slice(more);
    needs
}

/// Whether `FERROVN_REQUIRE_ALL=1`: every skip and fallback is a failure.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1")
}

/// Checks `needs` for `test`: true when all are met. Otherwise, under
/// `FERROVN_REQUIRE_ALL=1`, panics (fails the test) naming each missing need and how to get
/// it; without it, prints a loud SKIPPED banner on stderr and returns false.
pub fn require(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        return true;
    }
    let list = missing.join("\n  - ");
    if require_all() {
        panic!("{test}: missing\n  - {list}\n({REQUIRE_ALL}=1: a missing need fails the test)");
    }
    loud(&format!(
        "\n!!!!!!!! SKIPPED {test}: missing\n  - {list}\n!!!!!!!! (set {REQUIRE_ALL}=1 to make this a failure)\n"
    ));
    false
}

/// A test about to fall back to a weaker mode (`what`, e.g. "DPDK with --no-huge") because
/// of `why`: fails under `FERROVN_REQUIRE_ALL=1`, otherwise says so loudly and goes on.
pub fn fallback(test: &str, what: &str, why: &str) {
    if require_all() {
        panic!("{test}: would fall back to {what}: {why} ({REQUIRE_ALL}=1: fallbacks fail)");
    }
    loud(&format!(
        "\n!!!!!!!! {test}: FALLING BACK to {what}: {why} !!!!!!!!\n"
    ));
}

/// Straight to the process's stderr: the test harness captures `eprintln!` of passing tests,
/// and a skip must be seen.
fn loud(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}
