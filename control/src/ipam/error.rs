//! IPAM errors: each names the subnet / pool / address / holder involved and the reason.
//! The requesting owner is not repeated (the caller knows it), which keeps errors small.

use std::net::IpAddr;

use ipnet::IpNet;

use super::types::{AddrRange, Family, Forbidden, MacAddr, OwnerKey};

/// Malformed input data (a spec or a value that cannot mean anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("address range {value:?} is not `a..b`, a single address or a CIDR")]
    RangeSyntax { value: String },
    #[error("subnet {subnet}: it has neither an IPv4 nor an IPv6 CIDR")]
    NoCidr { subnet: String },
    #[error("subnet {subnet}: gateway {gateway} is outside its CIDR {cidr}")]
    GatewayOutsideCidr {
        subnet: String,
        gateway: IpAddr,
        cidr: IpNet,
    },
    #[error("{what} range {range}: {reason}")]
    BadRange {
        what: String,
        range: AddrRange,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("subnet {subnet} does not exist")]
    UnknownSubnet { subnet: String },
    #[error("IPPool {pool} does not exist in subnet {subnet}")]
    UnknownPool { subnet: String, pool: String },
    #[error("subnet {subnet}: none of the {candidates} {family} addresses of ip_pool is free")]
    NoFreeCandidate {
        subnet: String,
        family: Family,
        candidates: usize,
    },
    #[error("IPPool {pool} does not exist")]
    NoSuchPool { pool: String },
    #[error("subnet {subnet} exhausted: no free {family} address")]
    SubnetExhausted { subnet: String, family: Family },
    #[error("IPPool {pool} of subnet {subnet} exhausted: no free {family} address")]
    PoolExhausted {
        subnet: String,
        pool: String,
        family: Family,
    },
    #[error("IPPool {pool} of subnet {subnet} is bound to other namespaces, not {namespace}")]
    PoolNotForNamespace {
        subnet: String,
        pool: String,
        namespace: String,
    },
    #[error("IPPool {pool}: {range} is outside subnet {subnet}")]
    PoolOutsideSubnet {
        subnet: String,
        pool: String,
        range: AddrRange,
    },
    #[error("IPPool {pool} overlaps IPPool {other} of subnet {subnet} (at {first_shared})")]
    PoolOverlap {
        subnet: String,
        pool: String,
        other: String,
        first_shared: IpAddr,
    },
    #[error("IPPool {pool} is declared for subnet {declared}, not {subnet}")]
    PoolSubnetChanged {
        pool: String,
        subnet: String,
        declared: String,
    },
    #[error("static IP {ip}: subnet {subnet} has no {family} CIDR")]
    StaticIpFamilyNotInSubnet {
        subnet: String,
        ip: IpAddr,
        family: Family,
    },
    #[error("static IPs {first} and {second} are both {family}")]
    StaticIpsSameFamily {
        first: IpAddr,
        second: IpAddr,
        family: Family,
    },
    #[error("static IP {ip} is outside subnet {subnet} ({cidr})")]
    StaticIpOutsideSubnet {
        subnet: String,
        ip: IpAddr,
        cidr: IpNet,
    },
    #[error("static IP {ip} cannot be used in subnet {subnet}: {why}")]
    StaticIpForbidden {
        subnet: String,
        ip: IpAddr,
        why: Forbidden,
    },
    #[error("static IP {ip} in subnet {subnet} is already held by {holder}")]
    StaticIpTaken {
        subnet: String,
        ip: IpAddr,
        holder: OwnerKey,
    },
    #[error("MAC {mac} is already held by {holder}")]
    MacTaken { mac: MacAddr, holder: OwnerKey },
    #[error("MAC {mac} is not a unicast address")]
    MacNotUnicast { mac: MacAddr },
    #[error("subnet {subnet} still has {using} allocated addresses")]
    SubnetInUse { subnet: String, using: usize },
    #[error("no free MAC address found")]
    MacSpaceExhausted { owner: OwnerKey },
}
