//! The L4 protocols Services and NetworkPolicies name, in Kubernetes' and OVN's spellings.

/// An L4 protocol of a Service port or a NetworkPolicy port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// From Kubernetes' spelling (`TCP`); unset means TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// OVN's spelling in matches and Load_Balancer rows (`tcp`).
    pub fn ovn(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_spellings_parse_and_unset_is_tcp() {
        assert_eq!(Protocol::parse(None), Some(Protocol::Tcp));
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(Some(&p.ovn().to_uppercase())), Some(p));
        }
        assert_eq!(Protocol::parse(Some("tcp")), None);
        assert_eq!(Protocol::parse(Some("ICMP")), None);
    }
}
