//! MAC generation: locally administered unicast `0e:xx:xx:xx:xx:xx`, the 40 low bits a hash of
//! the owner and the IPAM's seed.
//!
//! Kube-OVN draws `00:00:00:xx:xx:xx` at random (24 bits, inside a real vendor's OUI) and checks
//! collisions per subnet only. Hashing the owner gives the same MAC to a pod recreated under
//! the same name, the same result after a restart for a given seed, and 40 bits keep retries
//! rare; the caller still checks every candidate against all known MACs in the cluster.

use super::types::{Mac, OwnerKey};

/// First octet: bit 1 set (locally administered), bit 0 clear (unicast).
pub const GENERATED_MAC_PREFIX: u8 = 0x0e;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A hash of the owner key that is the same in every process (unlike std's `RandomState`).
pub(crate) fn stable_owner_hash(seed: u64, owner: &OwnerKey) -> u64 {
    stable_hash(seed, &[&owner.namespace, &owner.name, &owner.provider])
}

/// A process-independent hash of several strings (each followed by a separator, so that
/// `["ab", "c"]` and `["a", "bc"]` differ).
pub(crate) fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = fnv1a(h, &[0]);
        }
        h = fnv1a(h, part.as_bytes());
    }
    splitmix64(h)
}

/// The `attempt`-th candidate MAC for `owner` (attempt 0 first, then 1, 2... on collision).
pub fn candidate_mac(seed: u64, owner: &OwnerKey, attempt: u32) -> Mac {
    let h = stable_owner_hash(seed, owner);
    let v = splitmix64(h ^ u64::from(attempt).rotate_left(32)).to_be_bytes();
    Mac([GENERATED_MAC_PREFIX, v[3], v[4], v[5], v[6], v[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_macs_are_local_unicast_and_deterministic() {
        let owner = OwnerKey::new("ns", "pod", "ovn");
        let a = candidate_mac(7, &owner, 0);
        assert_eq!(a, candidate_mac(7, &owner, 0));
        assert_ne!(a, candidate_mac(7, &owner, 1));
        assert_ne!(a, candidate_mac(8, &owner, 0));
        assert!(a.is_unicast());
        assert_eq!(a.0[0] & 0x02, 0x02);
        // Field boundaries matter: "ab"/"c" and "a"/"bc" are different owners.
        assert_ne!(
            candidate_mac(7, &OwnerKey::new("ab", "c", "ovn"), 0),
            candidate_mac(7, &OwnerKey::new("a", "bc", "ovn"), 0)
        );
    }
}
