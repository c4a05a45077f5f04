//! Parsing of the address notations Kube-OVN users write: CIDR blocks (`"v4"`, `"v6"` or
//! `"v4,v6"`), IP lists, `a..b` ranges and MAC addresses. Pure functions; errors carry the bad
//! text so callers can name it next to the object and field.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The address family of an IP or CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// Why an address notation did not parse. The offending text is always included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetParseError {
    #[error("empty value")]
    Empty,
    #[error("{value:?} is not a CIDR (expected e.g. 10.16.0.0/16 or fd00:10:16::/64)")]
    BadCidr { value: String },
    #[error("{value:?} is not an IP address")]
    BadIp { value: String },
    #[error("{value:?} has more than one {family} entry")]
    DuplicateFamily { value: String, family: IpFamily },
    #[error("{value:?} has {count} entries; at most one IPv4 and one IPv6 are allowed")]
    TooManyEntries { value: String, count: usize },
    #[error("range {value:?} mixes IPv4 and IPv6")]
    RangeMixedFamily { value: String },
    #[error("range {value:?} starts after it ends")]
    RangeReversed { value: String },
    #[error("{value:?} is not a MAC address (expected six hex octets like 00:00:00:0a:0b:0c)")]
    BadMac { value: String },
    #[error("{value:?} is a multicast MAC address; an interface needs a unicast one")]
    MulticastMac { value: String },
    #[error("{value:?} is the all-zero MAC address")]
    ZeroMac { value: String },
}

fn parse_ip(text: &str) -> Result<IpAddr, NetParseError> {
    IpAddr::from_str(text).map_err(|_| NetParseError::BadIp {
        value: text.to_string(),
    })
}

/// A subnet's `cidrBlock`: one IPv4 net, one IPv6 net, or both (dual stack, written `"v4,v6"`
/// in either order). Host bits are cleared, as Kube-OVN normalises `10.16.0.1/16` to
/// `10.16.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrBlock {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
}

impl CidrBlock {
    /// Parses `"10.16.0.0/16"`, `"fd00::/64"` or `"10.16.0.0/16,fd00::/64"`.
    pub fn parse(text: &str) -> Result<Self, NetParseError> {
        let parts: Vec<&str> = split_list(text);
        if parts.is_empty() {
            return Err(NetParseError::Empty);
        }
        if parts.len() > 2 {
            return Err(NetParseError::TooManyEntries {
                value: text.to_string(),
                count: parts.len(),
            });
        }
        let mut block = CidrBlock { v4: None, v6: None };
        for part in parts {
            let net = IpNet::from_str(part).map_err(|_| NetParseError::BadCidr {
                value: part.to_string(),
            })?;
            match net.trunc() {
                IpNet::V4(n) if block.v4.is_none() => block.v4 = Some(n),
                IpNet::V6(n) if block.v6.is_none() => block.v6 = Some(n),
                other => {
                    return Err(NetParseError::DuplicateFamily {
                        value: text.to_string(),
                        family: IpFamily::of_net(&other),
                    });
                }
            }
        }
        Ok(block)
    }

    /// Builds a block from already-parsed nets (at most one per family).
    pub fn new(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> Option<Self> {
        if v4.is_none() && v6.is_none() {
            return None;
        }
        Some(CidrBlock {
            v4: v4.map(|n| n.trunc()),
            v6: v6.map(|n| n.trunc()),
        })
    }

    pub fn v4(&self) -> Option<Ipv4Net> {
        self.v4
    }

    pub fn v6(&self) -> Option<Ipv6Net> {
        self.v6
    }

    pub fn is_dual_stack(&self) -> bool {
        self.v4.is_some() && self.v6.is_some()
    }

    /// The net of one family, if the block has it.
    pub fn net(&self, family: IpFamily) -> Option<IpNet> {
        match family {
            IpFamily::V4 => self.v4.map(IpNet::V4),
            IpFamily::V6 => self.v6.map(IpNet::V6),
        }
    }

    /// The nets, IPv4 first.
    pub fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.v6.map(IpNet::V6))
    }

    /// The families present, IPv4 first.
    pub fn families(&self) -> impl Iterator<Item = IpFamily> + '_ {
        self.nets().map(|n| IpFamily::of_net(&n))
    }

    /// True when the net of `ip`'s family contains it.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.is_some_and(|n| n.contains(a)),
            IpAddr::V6(a) => self.v6.is_some_and(|n| n.contains(a)),
        }
    }

    /// The protocol this block implies (`IPv4`, `IPv6` or `Dual`).
    pub fn protocol(&self) -> crate::crd::Protocol {
        use crate::crd::Protocol;
        match (self.v4.is_some(), self.v6.is_some()) {
            (true, true) => Protocol::Dual,
            (false, true) => Protocol::IPv6,
            _ => Protocol::IPv4,
        }
    }

    /// Kube-OVN's default gateway: the first address after the network address, per family.
    pub fn default_gateway(&self) -> DualIp {
        DualIp {
            v4: self.v4.map(|n| first_host_v4(&n)),
            v6: self.v6.map(|n| first_host_v6(&n)),
        }
    }
}

fn first_host_v4(net: &Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        return net.network();
    }
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

fn first_host_v6(net: &Ipv6Net) -> Ipv6Addr {
    if net.prefix_len() >= 127 {
        return net.network();
    }
    Ipv6Addr::from(u128::from(net.network()).saturating_add(1))
}

impl fmt::Display for CidrBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.nets().map(|n| n.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for CidrBlock {
    type Err = NetParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Up to one address per family, written `"10.16.0.5"`, `"fd00::5"` or `"10.16.0.5,fd00::5"`
/// (the form of the `ip_address` and `gateway` annotations and of a subnet's `gateway`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DualIp {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl DualIp {
    pub fn parse(text: &str) -> Result<Self, NetParseError> {
        let parts = split_list(text);
        if parts.is_empty() {
            return Err(NetParseError::Empty);
        }
        if parts.len() > 2 {
            return Err(NetParseError::TooManyEntries {
                value: text.to_string(),
                count: parts.len(),
            });
        }
        let mut out = DualIp::default();
        for part in parts {
            match parse_ip(part)? {
                IpAddr::V4(a) if out.v4.is_none() => out.v4 = Some(a),
                IpAddr::V6(a) if out.v6.is_none() => out.v6 = Some(a),
                other => {
                    return Err(NetParseError::DuplicateFamily {
                        value: text.to_string(),
                        family: IpFamily::of(&other),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The addresses, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }

    pub fn get(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.v4.map(IpAddr::V4),
            IpFamily::V6 => self.v6.map(IpAddr::V6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

impl fmt::Display for DualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.addrs().map(|a| a.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// One `excludeIps` entry: a single address (`start == end`) or an inclusive `a..b` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<Self, NetParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(NetParseError::Empty);
        }
        let (start, end) = match text.split_once("..") {
            Some((a, b)) => (parse_ip(a.trim())?, parse_ip(b.trim())?),
            None => {
                let ip = parse_ip(text)?;
                (ip, ip)
            }
        };
        if IpFamily::of(&start) != IpFamily::of(&end) {
            return Err(NetParseError::RangeMixedFamily {
                value: text.to_string(),
            });
        }
        if start > end {
            return Err(NetParseError::RangeReversed {
                value: text.to_string(),
            });
        }
        Ok(IpRange { start, end })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.start)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self.family() && *ip >= self.start && *ip <= self.end
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..{}", self.start, self.end)
        }
    }
}

/// A 48-bit Ethernet address. Parses `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff` (any case),
/// prints lower-case with colons, as OVN writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses any 6-octet MAC, including multicast ones.
    pub fn parse(text: &str) -> Result<Self, NetParseError> {
        let bad = || NetParseError::BadMac {
            value: text.to_string(),
        };
        let sep = if text.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut count = 0;
        for part in text.split(sep) {
            if count == 6 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            octets[count] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            count += 1;
        }
        if count != 6 {
            return Err(bad());
        }
        Ok(MacAddr(octets))
    }

    /// Parses a MAC that can be given to a pod interface: unicast and not all-zero.
    pub fn parse_unicast(text: &str) -> Result<Self, NetParseError> {
        let mac = Self::parse(text)?;
        if mac.is_multicast() {
            return Err(NetParseError::MulticastMac {
                value: text.to_string(),
            });
        }
        if mac.0 == [0; 6] {
            return Err(NetParseError::ZeroMac {
                value: text.to_string(),
            });
        }
        Ok(mac)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Only a unicast address can be an interface's own.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = NetParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for MacAddr {
    type Error = NetParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// Splits a comma-separated list, trimming blanks and dropping empty items.
pub(crate) fn split_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// True when two nets share at least one address.
pub fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_block_single_and_dual() {
        let v4 = CidrBlock::parse("10.16.0.0/16").unwrap();
        assert_eq!(v4.to_string(), "10.16.0.0/16");
        assert!(!v4.is_dual_stack());
        let dual = CidrBlock::parse("fd00:10:16::/64, 10.16.0.0/16").unwrap();
        assert!(dual.is_dual_stack());
        assert_eq!(dual.to_string(), "10.16.0.0/16,fd00:10:16::/64");
        assert_eq!(dual.protocol(), crate::crd::Protocol::Dual);
    }

    #[test]
    fn cidr_block_normalises_host_bits() {
        let b = CidrBlock::parse("10.16.3.7/16").unwrap();
        assert_eq!(b.to_string(), "10.16.0.0/16");
    }

    #[test]
    fn cidr_block_rejects_bad_input() {
        assert_eq!(CidrBlock::parse(" , "), Err(NetParseError::Empty));
        assert!(matches!(
            CidrBlock::parse("10.16.0.0/33"),
            Err(NetParseError::BadCidr { value }) if value == "10.16.0.0/33"
        ));
        assert!(matches!(
            CidrBlock::parse("10.16.0.0"),
            Err(NetParseError::BadCidr { .. })
        ));
        assert!(matches!(
            CidrBlock::parse("10.16.0.0/16,10.17.0.0/16"),
            Err(NetParseError::DuplicateFamily {
                family: IpFamily::V4,
                ..
            })
        ));
        assert!(matches!(
            CidrBlock::parse("10.16.0.0/16,fd00::/64,10.1.0.0/16"),
            Err(NetParseError::TooManyEntries { count: 3, .. })
        ));
    }

    #[test]
    fn default_gateway_is_first_host() {
        let b = CidrBlock::parse("10.16.0.0/16,fd00::/120").unwrap();
        assert_eq!(b.default_gateway().to_string(), "10.16.0.1,fd00::1");
    }

    #[test]
    fn ranges() {
        let r = IpRange::parse("10.16.0.1..10.16.0.10").unwrap();
        assert!(r.contains(&"10.16.0.5".parse().unwrap()));
        assert!(!r.contains(&"10.16.0.11".parse().unwrap()));
        assert_eq!(r.to_string(), "10.16.0.1..10.16.0.10");
        assert_eq!(
            IpRange::parse("10.16.0.9").unwrap().to_string(),
            "10.16.0.9"
        );
        assert!(matches!(
            IpRange::parse("10.16.0.10..10.16.0.1"),
            Err(NetParseError::RangeReversed { .. })
        ));
        assert!(matches!(
            IpRange::parse("10.16.0.1..fd00::1"),
            Err(NetParseError::RangeMixedFamily { .. })
        ));
        assert!(matches!(
            IpRange::parse("10.16.0.1..x"),
            Err(NetParseError::BadIp { value }) if value == "x"
        ));
    }

    #[test]
    fn macs() {
        let m = MacAddr::parse("00:00:00:0A:0B:0C").unwrap();
        assert_eq!(m.to_string(), "00:00:00:0a:0b:0c");
        assert_eq!(MacAddr::parse("00-00-00-0a-0b-0c").unwrap(), m);
        for bad in [
            "",
            "00:00:00:0a:0b",
            "00:00:00:0a:0b:0c:0d",
            "0:00:00:0a:0b:0c",
            "zz:00:00:0a:0b:0c",
            "00:00:00-0a:0b:0c",
            "+0:00:00:0a:0b:0c",
        ] {
            assert!(
                matches!(MacAddr::parse(bad), Err(NetParseError::BadMac { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            MacAddr::parse_unicast("01:00:5e:00:00:01"),
            Err(NetParseError::MulticastMac { .. })
        ));
        assert!(matches!(
            MacAddr::parse_unicast("00:00:00:00:00:00"),
            Err(NetParseError::ZeroMac { .. })
        ));
    }

    #[test]
    fn dual_ip() {
        let d = DualIp::parse("fd00::5,10.16.0.5").unwrap();
        assert_eq!(d.to_string(), "10.16.0.5,fd00::5");
        assert!(matches!(
            DualIp::parse("10.16.0.5,10.16.0.6"),
            Err(NetParseError::DuplicateFamily { .. })
        ));
        assert!(matches!(
            DualIp::parse("10.16.0.5/16"),
            Err(NetParseError::BadIp { .. })
        ));
    }
}
