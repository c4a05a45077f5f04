//! Names and addresses FerrOVN derives from other names. They end up in the NB, in OVS and on
//! host interfaces, and a new release must find what an old one made: every function here is a
//! stable format, pinned by golden values in `tests/golden_names.rs`. Change one and an upgrade
//! orphans ports, renames veths under running pods or moves router MACs.
//!
//! The hashes are our own FNV-1a/splitmix64 (std's hasher is randomised per process).

use crate::annotations::OVN_PROVIDER;
use crate::net::MacAddr;

// ---------------------------------------------------------------------------------------------
// NB names (Kube-OVN's)

/// The Logical_Switch_Port of a pod interface, which is also the name of its IP object:
/// `<pod>.<namespace>` on the primary network (provider `ovn`, or empty), and
/// `<pod>.<namespace>.<provider>` on an attachment (`web-0.default.net1.default.ovn`).
pub fn lsp_name(pod: &str, namespace: &str, provider: &str) -> String {
    if provider.is_empty() || provider == OVN_PROVIDER {
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

/// Prefix of every Load_Balancer_Group FerrOVN owns. The table has no `external_ids`, so the
/// name is the ownership mark: groups without it are never touched.
pub const LB_GROUP_PREFIX: &str = "ferrovn-lbs-";

/// The Load_Balancer_Group holding the Service load balancers of a VPC: `ferrovn-lbs-<vpc>`.
pub fn lb_group_name(vpc: &str) -> String {
    format!("{LB_GROUP_PREFIX}{vpc}")
}

/// The Load_Balancer of one Service and protocol (`tcp`, `udp`, `sctp`):
/// `svc:<namespace>/<name>:<protocol>`, what `ovn-nbctl lb-list` shows.
pub fn service_lb_name(namespace: &str, name: &str, protocol: &str) -> String {
    format!("svc:{namespace}/{name}:{protocol}")
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The MAC of a router port: `0a:58:` and 32 bits of a hash of its name. Kube-OVN draws a
/// random one; deriving it from the name keeps planning pure and the MAC stable across
/// restarts. `0a` (locally administered, unicast) differs from the IPAM's `0e` pod MACs
/// ([`GENERATED_MAC_PREFIX`]), so the two never collide.
pub fn router_port_mac(port: &str) -> MacAddr {
    let b = fnv1a(FNV_OFFSET, port.as_bytes()).to_be_bytes();
    MacAddr([
        0x0a,
        0x58,
        b[4] ^ b[0],
        b[5] ^ b[1],
        b[6] ^ b[2],
        b[7] ^ b[3],
    ])
}

// ---------------------------------------------------------------------------------------------
// Generated pod MACs

/// First octet of an IPAM-generated MAC: bit 1 set (locally administered), bit 0 clear
/// (unicast).
pub const GENERATED_MAC_PREFIX: u8 = 0x0e;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A process-independent hash of several strings, each after a separator so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h = FNV_OFFSET ^ seed;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = fnv1a(h, &[0]);
        }
        h = fnv1a(h, part.as_bytes());
    }
    splitmix64(h)
}

/// The `attempt`-th candidate MAC of the interface owned by `namespace`/`name` on `provider`
/// (attempt 0 first, then 1, 2... on collision): `0e` and 40 bits of a hash of the owner and
/// the cluster's seed.
///
/// Kube-OVN draws `00:00:00:xx:xx:xx` at random (24 bits, inside a real vendor's OUI).
/// Hashing the owner gives the same MAC to a pod recreated under the same name and the same
/// result after a restart; the IPAM still checks every candidate against all known MACs.
pub fn candidate_mac(
    seed: u64,
    namespace: &str,
    name: &str,
    provider: &str,
    attempt: u32,
) -> MacAddr {
    let h = stable_hash(seed, &[namespace, name, provider]);
    let v = splitmix64(h ^ u64::from(attempt).rotate_left(32)).to_be_bytes();
    MacAddr([GENERATED_MAC_PREFIX, v[3], v[4], v[5], v[6], v[7]])
}

// ---------------------------------------------------------------------------------------------
// Node-side names

/// Prefix of every host-side veth FerrOVN creates; GC and humans recognise them by it.
pub const HOST_IFNAME_PREFIX: &str = "fv";
/// Prefix of the OVS port of a vhost-user attachment.
pub const VHOST_PORT_PREFIX: &str = "vh";

/// 13 hex digits (52 bits) of FNV-1a over the container id and the pod interface name (a pod
/// can have several interfaces): the part every node-side name of one attachment shares.
pub fn attachment_id(container_id: &str, pod_ifname: &str) -> String {
    let mut h = fnv1a(FNV_OFFSET, container_id.as_bytes());
    // the separator keeps ("ab","c") and ("a","bc") apart
    h = fnv1a(h, &[0xff]);
    h = fnv1a(h, pod_ifname.as_bytes());
    format!("{:013x}", h >> 12)
}

/// The host-side veth of a pod interface: `fv` + [`attachment_id`], 15 characters exactly
/// (Linux's limit).
pub fn host_ifname(container_id: &str, pod_ifname: &str) -> String {
    format!(
        "{HOST_IFNAME_PREFIX}{}",
        attachment_id(container_id, pod_ifname)
    )
}

/// The OVS port of a vhost-user attachment: `vh` + [`attachment_id`].
pub fn vhost_port_name(container_id: &str, pod_ifname: &str) -> String {
    format!(
        "{VHOST_PORT_PREFIX}{}",
        attachment_id(container_id, pod_ifname)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
        assert_ne!(
            candidate_mac(7, "ab", "c", "ovn", 0),
            candidate_mac(7, "a", "bc", "ovn", 0)
        );
    }

    #[test]
    fn generated_macs_are_local_unicast_and_deterministic() {
        let a = candidate_mac(7, "ns", "pod", "ovn", 0);
        assert_eq!(a, candidate_mac(7, "ns", "pod", "ovn", 0));
        assert_ne!(a, candidate_mac(7, "ns", "pod", "ovn", 1));
        assert_ne!(a, candidate_mac(8, "ns", "pod", "ovn", 0));
        assert!(!a.is_multicast());
        assert!(a.is_locally_administered());
        let r = router_port_mac("ovn-cluster-ovn-default");
        assert!(!r.is_multicast() && r.is_locally_administered());
        assert_ne!(r.0[0], GENERATED_MAC_PREFIX);
    }
}
