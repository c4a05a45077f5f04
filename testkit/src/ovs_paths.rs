//! Where the OVS/OVN programs and schemas the tests run come from: the one place to change
//! when they move (every harness and test asks these functions, none spells a path).

use std::path::PathBuf;

/// The OVN Northbound schema (Debian `ovn-common`).
pub fn nb_schema() -> PathBuf {
    PathBuf::from("/usr/share/ovn/ovn-nb.ovsschema")
}

/// The OVN Southbound schema (Debian `ovn-common`).
pub fn sb_schema() -> PathBuf {
    PathBuf::from("/usr/share/ovn/ovn-sb.ovsschema")
}

/// The Open_vSwitch schema (Debian `openvswitch-common`).
pub fn vswitch_schema() -> PathBuf {
    PathBuf::from("/usr/share/openvswitch/vswitch.ovsschema")
}

/// `ovs-vswitchd` without DPDK (Debian `openvswitch-switch`).
pub fn vswitchd_plain() -> PathBuf {
    PathBuf::from("/usr/lib/openvswitch-switch/ovs-vswitchd")
}

/// `ovs-vswitchd` built with DPDK (Debian `openvswitch-switch-dpdk`).
pub fn vswitchd_dpdk() -> PathBuf {
    PathBuf::from("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")
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
