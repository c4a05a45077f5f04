//! Where the OVS/OVN programs and schemas the tests run come from: the one place to change
//! when they move (every harness and test asks these functions, none spells a path).
//!
//! They come from FerrOVN's OVS 3.5 / OVN 25.03 root filesystem (`make ovs-ovn`,
//! docs/ovs-ovn.md): `$FERROVN_OVS_DIR` (default `/var/cache/ferrovn/ovs-ovn/current`) holds
//! `share/` (the rootfs' /usr/share, with the schemas) and `bin/` (one launcher per program, which
//! the Makefile also puts first on PATH for the programs tests run by name).

use std::path::PathBuf;

/// The default of `FERROVN_OVS_DIR`, where `make ovs-ovn` links the newest rootfs.
pub const DEFAULT_OVS_DIR: &str = "/var/cache/ferrovn/ovs-ovn/current";

/// The OVS/OVN directory: `$FERROVN_OVS_DIR`, else [`DEFAULT_OVS_DIR`].
pub fn ovs_dir() -> PathBuf {
    std::env::var_os("FERROVN_OVS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OVS_DIR))
}

/// The launchers of the rootfs' programs (`ovsdb-server`, `ovs-vsctl`, `ovn-northd`, ...).
pub fn bin_dir() -> PathBuf {
    ovs_dir().join("bin")
}

/// The OVN Northbound schema (Debian 13 `ovn-common`).
pub fn nb_schema() -> PathBuf {
    ovs_dir().join("share/ovn/ovn-nb.ovsschema")
}

/// The OVN Southbound schema (Debian 13 `ovn-common`).
pub fn sb_schema() -> PathBuf {
    ovs_dir().join("share/ovn/ovn-sb.ovsschema")
}

/// The Open_vSwitch schema (Debian 13 `openvswitch-common`).
pub fn vswitch_schema() -> PathBuf {
    ovs_dir().join("share/openvswitch/vswitch.ovsschema")
}

/// `ovs-vswitchd` without DPDK (Debian 13 `openvswitch-switch`), through its launcher.
pub fn vswitchd_plain() -> PathBuf {
    bin_dir().join("ovs-vswitchd")
}

/// `ovs-vswitchd` built with DPDK 24.11 (Debian 13 `openvswitch-switch-dpdk`), through its
/// launcher.
pub fn vswitchd_dpdk() -> PathBuf {
    bin_dir().join("ovs-vswitchd-dpdk")
}

/// The installed schema of database `name` (`OVN_Northbound`, `OVN_Southbound`,
/// `Open_vSwitch`), for tests that compare committed copies against it.
pub fn installed_schema(name: &str) -> Option<PathBuf> {
    match name {
        "OVN_Northbound" => Some(nb_schema()),
        "OVN_Southbound" => Some(sb_schema()),
        "Open_vSwitch" => Some(vswitch_schema()),
        _ => None,
    }
}
