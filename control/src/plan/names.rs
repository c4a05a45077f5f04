//! Kube-OVN's NB naming, in one place.

use crate::ipam::Mac;

/// The Logical_Switch_Port of a pod interface: `<pod>.<namespace>` for the primary network
/// (provider `ovn`), `<pod>.<namespace>.<provider>` for an attachment.
pub fn pod_port_name(pod: &str, namespace: &str, provider: &str) -> String {
    if provider.is_empty() || provider == "ovn" {
        format!("{pod}.{namespace}")
    } else {
        format!("{pod}.{namespace}.{provider}")
    }
}

/// The router side of a switch's connection to its VPC router: `<router>-<switch>`.
pub fn router_port_name(router: &str, switch: &str) -> String {
    format!("{router}-{switch}")
}

/// The switch side of that connection: `<switch>-<router>`.
pub fn switch_router_port_name(switch: &str, router: &str) -> String {
    format!("{switch}-{router}")
}

/// A node's port on the join switch: `node-<node>`.
pub fn join_port_name(node: &str) -> String {
    format!("node-{node}")
}

/// The localnet port of an underlay subnet: `localnet.<subnet>`.
pub fn localnet_port_name(subnet: &str) -> String {
    format!("localnet.{subnet}")
}

/// The MAC of a router port: `0a:58:` and 32 bits of a hash of its name. Kube-OVN draws a
/// random one; deriving it from the name keeps planning pure and the MAC stable across
/// restarts. `0a` (locally administered, unicast) differs from the IPAM's `0e` pod MACs, so the
/// two never collide.
pub fn router_port_mac(port: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in port.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    Mac([
        0x0a,
        0x58,
        b[4] ^ b[0],
        b[5] ^ b[1],
        b[6] ^ b[2],
        b[7] ^ b[3],
    ])
}
