//! `ferrovn-vhost`: a pinned-core DPDK helper that serves DPDK pods' vhost-user sockets on
//! kernel-profile nodes and relays their packets to a kernel interface the node agent puts on
//! br-int. See docs/vhost-helper.md.

pub mod control;
pub mod cores;
pub mod dpdk;
pub mod helper;
/// The control protocol lives in `ferrovn-vhost-proto` (the agent uses it without DPDK).
pub use ferrovn_vhost_proto::protocol;
pub mod relay;

/// EAL arguments for the helper: no hugepages (vhost needs no shareable memory of its own: it
/// maps the pod's), no PCI (never touch the node's NICs), no shared config files, a private
/// file prefix, and the main lcore floating on every allowed CPU (workers pin themselves).
pub fn eal_args(
    file_prefix: &str,
    memory_mb: u32,
    allowed_cpus: &str,
    extra: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "ferrovn-vhost",
        "--no-huge",
        "-m",
        &memory_mb.to_string(),
        "--no-pci",
        "--no-shconf",
        "--iova-mode=va",
        "--file-prefix",
        file_prefix,
        &format!("--lcores=0@({allowed_cpus})"),
        "--log-level=lib.eal:warning",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    #[test]
    fn eal_args_keep_dpdk_off_the_nics_and_private() {
        let a = super::eal_args(
            "ferrovn-vhost-x",
            256,
            "0-1",
            &["--log-level=pmd.net.vhost:debug".into()],
        );
        assert!(a.contains(&"--no-pci".to_owned()));
        assert!(
            !a.contains(&"--in-memory".to_owned()),
            "--in-memory cannot combine with --no-huge in 22.11"
        );
        assert!(
            a.windows(2)
                .any(|w| w == ["--file-prefix", "ferrovn-vhost-x"])
        );
        assert!(a.contains(&"--lcores=0@(0-1)".to_owned()));
        assert_eq!(
            a.last().map(String::as_str),
            Some("--log-level=pmd.net.vhost:debug")
        );
    }
}
