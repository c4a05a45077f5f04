//! Plain data going into and coming out of the IPAM.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{InputError, IpamError};

pub use ferrovn_api::MacAddr;

/// Who holds an allocation: one interface of one pod (or of a VM, a VIP, a node port...).
///
/// `provider` tells the interfaces of one pod apart, as Kube-OVN does: `ovn` for the primary
/// interface, `<nad>.<namespace>[.ovn]` for an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerKey {
    pub namespace: String,
    pub name: String,
    pub provider: String,
}

impl OwnerKey {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        provider: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            provider: provider.into(),
        }
    }
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.provider)
    }
}

/// An inclusive range of addresses of one family (`first..last` in Kube-OVN syntax); a single
/// address has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddrRange {
    pub fn new(first: IpAddr, last: IpAddr) -> Self {
        Self { first, last }
    }

    pub fn single(ip: IpAddr) -> Self {
        Self {
            first: ip,
            last: ip,
        }
    }
}

impl From<IpNet> for AddrRange {
    fn from(net: IpNet) -> Self {
        Self {
            first: net.network(),
            last: net.broadcast(),
        }
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

/// Serialized in Kube-OVN's syntax (`a..b` or a single address).
impl Serialize for AddrRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddrRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for AddrRange {
    type Err = IpamError;

    /// Kube-OVN's `excludeIps` / IPPool `ips` syntax: `a..b`, a single address, or a CIDR.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            IpamError::Input(InputError::RangeSyntax {
                value: s.to_string(),
            })
        };
        let s = s.trim();
        if let Some((a, b)) = s.split_once("..") {
            let first: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let last: IpAddr = b.trim().parse().map_err(|_| bad())?;
            return Ok(Self::new(first, last));
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| bad())?;
            return Ok(net.trunc().into());
        }
        s.parse::<IpAddr>().map(Self::single).map_err(|_| bad())
    }
}

/// What the IPAM needs to know about one Subnet. `v4` and/or `v6` must be set (dual stack is
/// both). Addresses are already parsed; cross-object validation belongs to the API layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub name: String,
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub v4_gateway: Option<Ipv4Addr>,
    pub v6_gateway: Option<Ipv6Addr>,
    /// `excludeIps`: never handed out dynamically. Parts outside the CIDRs are ignored.
    pub exclude: Vec<AddrRange>,
    /// Kube-OVN lets a pod ask for an excluded address as its static IP (that is how users
    /// reserve addresses for fixed-IP workloads); set false to refuse that instead.
    pub allow_static_in_excluded: bool,
}

impl SubnetSpec {
    /// A subnet with the usual Kube-OVN defaults: no exclusions, static IPs allowed in them.
    pub fn new(name: impl Into<String>, v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> Self {
        Self {
            name: name.into(),
            v4,
            v6,
            v4_gateway: None,
            v6_gateway: None,
            exclude: Vec::new(),
            allow_static_in_excluded: true,
        }
    }
}

/// An IPPool: a named subset of one subnet's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPoolSpec {
    pub name: String,
    pub subnet: String,
    pub addresses: Vec<AddrRange>,
    /// Pods of these namespaces draw from this pool by default, and only they may use it.
    /// Empty: any namespace may ask for it by name.
    pub namespaces: Vec<String>,
}

/// IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A request for addresses for one owner in one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRequest {
    pub owner: OwnerKey,
    pub subnet: String,
    /// Static addresses (`ip_address` annotation / IP object): at most one per family. A family
    /// of the subnet without one here gets a dynamic address.
    pub static_ips: Vec<IpAddr>,
    /// `ip_pool` given as a list of addresses (Kube-OVN's way of giving the pods of a
    /// workload a fixed set): per family without a static IP, the first listed address that is
    /// free is taken; an owner holding one of them keeps it.
    pub candidate_ips: Vec<IpAddr>,
    /// Static MAC (`mac_address` annotation); otherwise one is generated.
    pub static_mac: Option<MacAddr>,
    /// IPPool to draw dynamic addresses from (`ip_pool` annotation). None: the pool bound to
    /// the owner's namespace, if any, else the subnet's addresses outside every pool.
    pub pool: Option<String>,
}

impl AllocationRequest {
    /// A dynamic request: any free address of each family of the subnet, a generated MAC.
    pub fn dynamic(owner: OwnerKey, subnet: impl Into<String>) -> Self {
        Self {
            owner,
            subnet: subnet.into(),
            static_ips: Vec::new(),
            candidate_ips: Vec::new(),
            static_mac: None,
            pool: None,
        }
    }
}

/// What an owner holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Allocation {
    pub owner: OwnerKey,
    pub subnet: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub mac: MacAddr,
}

impl Allocation {
    /// The addresses, IPv4 first (the order of Kube-OVN's `ip_address` annotation).
    pub fn ips(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }

    /// As a recovery record (what the controller reads back from a pod / IP object / NB port).
    pub fn to_record(&self, source: RecordSource) -> ExistingAllocation {
        ExistingAllocation {
            owner: self.owner.clone(),
            subnet: self.subnet.clone(),
            ips: self.ips(),
            mac: Some(self.mac),
            source,
        }
    }
}

/// Where a recovery record came from. The order is the precedence when records disagree:
/// IP objects are the allocation log, annotations the pod's copy, NB ports what was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordSource {
    IpObject,
    PodAnnotation,
    NbPort,
}

/// An allocation found in the cluster after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExistingAllocation {
    pub owner: OwnerKey,
    pub subnet: String,
    pub ips: Vec<IpAddr>,
    pub mac: Option<MacAddr>,
    pub source: RecordSource,
}

/// Address counts of a subnet or pool, as in Kube-OVN's Subnet status.
/// `available`: addresses that can still be handed out dynamically. `using`: addresses held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counts {
    pub v4_available: u128,
    pub v4_using: u128,
    pub v6_available: u128,
    pub v6_using: u128,
}

/// Why an address is not one the subnet would hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Forbidden {
    NetworkAddress,
    Broadcast,
    Gateway,
    Excluded,
    OutsideCidr,
    FamilyNotInSubnet,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::NetworkAddress => "it is the network address",
            Forbidden::Broadcast => "it is the broadcast address",
            Forbidden::Gateway => "it is the gateway",
            Forbidden::Excluded => "it is in excludeIps",
            Forbidden::OutsideCidr => "it is outside the subnet's CIDR",
            Forbidden::FamilyNotInSubnet => "the subnet has no CIDR of its family",
        })
    }
}

/// A held address that the subnet's current spec would not hand out (after a resize or an
/// excludeIps change). It stays allocated; the controller reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Misplaced {
    pub owner: OwnerKey,
    pub subnet: String,
    pub ip: IpAddr,
    pub why: Forbidden,
}

/// A recovery record (or part of one) that could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Conflict {
    /// Two owners claim one address in one subnet; `kept` keeps it.
    IpClaimedTwice {
        subnet: String,
        ip: IpAddr,
        kept: OwnerKey,
        dropped: OwnerKey,
        dropped_source: RecordSource,
    },
    /// Two owners claim one MAC; `dropped` gets `replacement` instead.
    MacClaimedTwice {
        mac: MacAddr,
        kept: OwnerKey,
        dropped: OwnerKey,
        replacement: MacAddr,
    },
    /// One owner's records disagree (other subnet, other address, other MAC); the record with
    /// the higher precedence was kept, this one dropped.
    OwnerRecordsDisagree {
        kept: Allocation,
        dropped: ExistingAllocation,
    },
    /// The record names a subnet the IPAM does not know.
    UnknownSubnet { owner: OwnerKey, subnet: String },
    /// The record has two addresses of one family; the first was kept.
    TwoAddressesOfOneFamily {
        owner: OwnerKey,
        subnet: String,
        kept: IpAddr,
        dropped: IpAddr,
    },
    /// The record's MAC is not a unicast address; a new one was generated.
    BadMac {
        owner: OwnerKey,
        mac: MacAddr,
        replacement: MacAddr,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::IpClaimedTwice {
                subnet,
                ip,
                kept,
                dropped,
                dropped_source,
            } => write!(
                f,
                "{ip} in subnet {subnet} is claimed by {kept} and by {dropped} ({dropped_source:?}); kept {kept}"
            ),
            Conflict::MacClaimedTwice {
                mac,
                kept,
                dropped,
                replacement,
            } => write!(
                f,
                "MAC {mac} is claimed by {kept} and by {dropped}; {dropped} gets {replacement}"
            ),
            Conflict::OwnerRecordsDisagree { kept, dropped } => write!(
                f,
                "records of {} disagree: kept {:?} in {}, dropped {:?} in {} ({:?})",
                kept.owner,
                kept.ips(),
                kept.subnet,
                dropped.ips,
                dropped.subnet,
                dropped.source
            ),
            Conflict::UnknownSubnet { owner, subnet } => {
                write!(f, "{owner} claims addresses in unknown subnet {subnet}")
            }
            Conflict::TwoAddressesOfOneFamily {
                owner,
                subnet,
                kept,
                dropped,
            } => write!(
                f,
                "{owner} claims two addresses of one family in {subnet}: kept {kept}, dropped {dropped}"
            ),
            Conflict::BadMac {
                owner,
                mac,
                replacement,
            } => write!(
                f,
                "{owner} has non-unicast MAC {mac}; it gets {replacement}"
            ),
        }
    }
}
