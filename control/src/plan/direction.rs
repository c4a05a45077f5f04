//! The two directions of a port-group ACL (NetworkPolicy, AdminNetworkPolicy, security
//! groups): which OVN direction, which port and which address side each one matches.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }

    pub(crate) fn ovn_direction(self) -> &'static str {
        match self {
            Dir::Ingress => "to-lport",
            Dir::Egress => "from-lport",
        }
    }

    /// The port-group side of the match: the pod receives on `outport`, sends on `inport`.
    pub(crate) fn port(self) -> &'static str {
        match self {
            Dir::Ingress => "outport",
            Dir::Egress => "inport",
        }
    }

    /// The peer's side of the addresses.
    pub(crate) fn peer_side(self) -> &'static str {
        match self {
            Dir::Ingress => "src",
            Dir::Egress => "dst",
        }
    }

    /// The selected pod's own side of the addresses.
    pub(crate) fn own_side(self) -> &'static str {
        match self {
            Dir::Ingress => "dst",
            Dir::Egress => "src",
        }
    }
}
