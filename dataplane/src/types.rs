//! Plain data shared by plumbing, the agent and the testbed: MAC addresses, interface names,
//! and the pure checks on a pod interface request.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Linux limits interface names to IFNAMSIZ-1 bytes.
pub const MAX_IFNAME_LEN: usize = 15;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex octets separated by ':'")]
pub struct MacParseError {
    pub input: String,
}

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
    /// Group (multicast/broadcast) addresses cannot be an interface's own address.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_string(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not), so a restarted
/// agent derives the same host interface name for the same container.
fn fnv1a64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // separator keeps ("ab","c") and ("a","bc") apart
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Prefix of every host-side veth FerrOVN creates; GC and humans recognise them by it.
pub const HOST_IFNAME_PREFIX: &str = "fv";

/// Host-side veth name for one pod interface: `fv` + 13 hex digits of a hash over the container
/// id and the pod interface name (a pod can have several interfaces). 15 characters exactly.
pub fn host_ifname(container_id: &str, pod_ifname: &str) -> String {
    let h = fnv1a64(&[container_id, pod_ifname]) >> 12; // 52 bits = 13 hex digits
    format!("{HOST_IFNAME_PREFIX}{h:013x}")
}

/// The tag FerrOVN stores as the host veth's alias (IFLA_IFALIAS), so that removal deletes only
/// an interface it made for this very container interface, never a namesake.
pub fn owner_tag(container_id: &str, pod_ifname: &str) -> String {
    format!("ferrovn:{container_id}:{pod_ifname}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("interface name {name:?}: {reason}")]
    IfName { name: String, reason: &'static str },
    #[error("container id {id:?}: {reason}")]
    ContainerId { id: String, reason: &'static str },
    #[error("MTU {mtu}: must be between 68 and 65535")]
    Mtu { mtu: u32 },
    #[error("MAC {mac}: a multicast/broadcast address cannot be an interface address")]
    MacNotUnicast { mac: MacAddr },
    #[error("gateway {gateway}: no address of the same IP family on the interface")]
    GatewayFamily { gateway: IpAddr },
    #[error("route to {dst} via {via}: IP families differ")]
    RouteFamily { dst: IpNet, via: IpAddr },
    #[error("netns path {path:?}: {reason}")]
    NetnsPath { path: String, reason: &'static str },
}

/// Checks a Linux interface name as the kernel's `dev_valid_name` does.
pub fn validate_ifname(name: &str) -> Result<(), SpecError> {
    let bad = |reason| {
        Err(SpecError::IfName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// Container ids end up in interface aliases and OVS external_ids; keep them printable and short.
pub fn validate_container_id(id: &str) -> Result<(), SpecError> {
    let bad = |reason| {
        Err(SpecError::ContainerId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "0a:58:0A:10:00:0b".parse().expect("valid mac");
        assert_eq!(m.to_string(), "0a:58:0a:10:00:0b");
        assert!(m.is_unicast());
        assert!(
            !"ff:ff:ff:ff:ff:ff"
                .parse::<MacAddr>()
                .expect("valid")
                .is_unicast()
        );
        for bad in [
            "",
            "0a:58:0a:10:00",
            "0a:58:0a:10:00:0b:00",
            "0a-58-0a-10-00-0b",
            "0g:00:00:00:00:00",
            "0:58:0a:10:00:0bb",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok());
        for bad in ["", "a234567890123456", ".", "..", "et h0", "a/b", "a:b"] {
            assert!(validate_ifname(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn host_names_differ_per_container_and_per_interface() {
        let a = host_ifname("c1", "eth0");
        assert_ne!(a, host_ifname("c2", "eth0"));
        assert_ne!(a, host_ifname("c1", "net1"));
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
        assert_eq!(a, host_ifname("c1", "eth0"));
    }

    proptest! {
        #[test]
        fn host_ifname_is_always_a_valid_15_char_name(cid in "[a-f0-9]{1,64}", ifn in "[a-z0-9]{1,15}") {
            let n = host_ifname(&cid, &ifn);
            prop_assert_eq!(n.len(), MAX_IFNAME_LEN);
            prop_assert!(n.starts_with(HOST_IFNAME_PREFIX));
            prop_assert!(validate_ifname(&n).is_ok());
        }

        #[test]
        fn mac_display_parse_round_trip(o in proptest::array::uniform6(any::<u8>())) {
            let m = MacAddr(o);
            prop_assert_eq!(m.to_string().parse::<MacAddr>().ok(), Some(m));
        }

        #[test]
        fn container_id_validation_never_panics(s in ".{0,200}") {
            let _ = validate_container_id(&s);
        }
    }
}
