//! The environment of a run: CPU, memory, hugepages, kernel, DPDK/OVS/OVN versions, commit.

use crate::model::Environment;
use std::process::Command;

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Parses `/proc/cpuinfo`'s first `model name`.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The last whitespace-separated word of a version line (`ovs-vswitchd (Open vSwitch) 3.1.0`).
fn version_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or("unknown")
        .to_string()
}

pub fn collect(node: &str) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    Environment {
        hostname: first_line("hostname", &[]),
        cpu_model: cpu_model(&cpuinfo),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_mib: meminfo_kib(&meminfo, "MemTotal:") / 1024,
        hugepages_total_2m: meminfo_kib(&meminfo, "HugePages_Total:"),
        hugepages_free_2m: meminfo_kib(&meminfo, "HugePages_Free:"),
        kernel: first_line("uname", &["-r"]),
        dpdk: first_line("pkg-config", &["--modversion", "libdpdk"]),
        ovs: version_word(&first_line("ovs-vsctl", &["--version"])),
        ovn: version_word(&first_line("ovn-nbctl", &["--version"])),
        iperf3: first_line("iperf3", &["--version"]),
        git_commit: first_line("git", &["-C", repo, "rev-parse", "--short=12", "HEAD"]),
        started_utc: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        node: node.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags: x\n"),
            "AMD EPYC 7B13"
        );
        assert_eq!(cpu_model(""), "unknown");
        assert_eq!(
            meminfo_kib(
                "MemTotal:  2048 kB\nHugePages_Total:   192\n",
                "HugePages_Total:"
            ),
            192
        );
        assert_eq!(version_word("ovs-vsctl (Open vSwitch) 3.1.0"), "3.1.0");
    }
}
