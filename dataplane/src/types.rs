//! Plain data shared by plumbing, the agent and the testbed: interface names (the stable ones
//! come from [`ferrovn_api::names`]) and the pure checks on a pod interface request.

use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ipnet::IpNet;

/// What kind of node this is: decides the datapath and how pods are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeProfile {
    /// veth pods; OVS datapath `system` normally, `netdev` where there is no OVS kernel module.
    Kernel,
    /// OVS-DPDK (`netdev` datapath).
    Dpdk,
}

impl NodeProfile {
    pub fn default_datapath_type(self) -> &'static str {
        match self {
            NodeProfile::Kernel => "system",
            NodeProfile::Dpdk => "netdev",
        }
    }
}

/// A name that is safe as one path component (volume and socket names from pod specs).
pub fn is_plain_name(v: &str) -> bool {
    !(v.is_empty() || v == "." || v == ".." || v.contains('/') || v.contains('\0') || v.len() > 253)
}

/// Linux limits interface names to IFNAMSIZ-1 bytes.
pub const MAX_IFNAME_LEN: usize = 15;

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
    use ferrovn_api::names::{HOST_IFNAME_PREFIX, host_ifname};
    use proptest::prelude::*;

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok());
        for bad in ["", "a234567890123456", ".", "..", "et h0", "a/b", "a:b"] {
            assert!(validate_ifname(bad).is_err(), "{bad} accepted");
        }
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
        fn container_id_validation_never_panics(s in ".{0,200}") {
            let _ = validate_container_id(&s);
        }
    }
}
