//! Cluster-wide IPAM: a pure allocator over subnets, pools and static addresses.
//!
//! Plain data in, plain data out: no I/O and no Kubernetes types, so the controller, the lab
//! and the node agent's IPAM-only mode share it. See `docs/ipam.md` for the behaviour.
//!
//! - [`Ipam::upsert_subnet`] / [`Ipam::upsert_pool`] describe the address space;
//! - [`Ipam::allocate`] / [`Ipam::release`] hand addresses and MACs out and take them back;
//! - [`Ipam::rebuild`] recovers the state from the allocations found after a restart.

mod allocator;
mod error;
mod family;
mod fasthash;
mod intervals;
mod mac;
mod rebuild;
mod types;

pub use allocator::Ipam;
pub use error::{InputError, IpamError};
pub use mac::{GENERATED_MAC_PREFIX, candidate_mac};
pub use rebuild::Recovery;
pub use types::{
    AddrRange, Allocation, AllocationRequest, Conflict, Counts, ExistingAllocation, Family,
    Forbidden, IpPoolSpec, MacAddr, Misplaced, OwnerKey, RecordSource, SubnetSpec,
};
