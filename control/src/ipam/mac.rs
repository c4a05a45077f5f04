//! Generated MACs, keyed by the IPAM's owners. The hash itself is part of the API contract
//! ([`ferrovn_api::names::candidate_mac`]), pinned there so an upgrade keeps every pod's MAC.

use ferrovn_api::names;

use super::types::{MacAddr, OwnerKey};

pub use ferrovn_api::names::GENERATED_MAC_PREFIX;

/// A hash of the owner key that is the same in every process (unlike std's `RandomState`).
pub(crate) fn stable_owner_hash(seed: u64, owner: &OwnerKey) -> u64 {
    names::stable_hash(seed, &[&owner.namespace, &owner.name, &owner.provider])
}

/// The `attempt`-th candidate MAC for `owner` (attempt 0 first, then 1, 2... on collision).
pub fn candidate_mac(seed: u64, owner: &OwnerKey, attempt: u32) -> MacAddr {
    names::candidate_mac(
        seed,
        &owner.namespace,
        &owner.name,
        &owner.provider,
        attempt,
    )
}
