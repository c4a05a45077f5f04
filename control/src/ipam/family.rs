//! One address family of one subnet: what may be handed out, what is free, who holds what.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::fasthash::FastMap;
use super::intervals::{
    IntervalSet, Span, intersect, normalize, spans_contain, spans_of_sorted_points, subtract,
};
use super::types::{Family, Forbidden};

/// Slot 0 is the subnet's own pool (every address outside the named IPPools); slot `i > 0` is
/// the subnet's `i-1`-th IPPool.
pub(crate) type PoolSlot = usize;

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn to_ip(family: Family, x: u128) -> IpAddr {
    match family {
        // Only ever called with values that came from an IPv4 address of this family.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(x).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(x)),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FamilyState {
    pub(crate) family: Family,
    pub(crate) cidr: Option<IpNet>,
    /// Network address to broadcast address, when the family has a CIDR.
    full: Option<Span>,
    /// Network / broadcast / gateway, sorted.
    reserved: Vec<(u128, Forbidden)>,
    excluded: Vec<Span>,
    /// Sorted, disjoint spans of every named pool, each tagged with its slot.
    pool_spans: Vec<(u128, u128, PoolSlot)>,
    pool_count: usize,
    free: Vec<IntervalSet>,
    using_per_slot: Vec<u128>,
    /// Held address → index of the allocation holding it.
    pub(crate) used: FastMap<u128, u32>,
}

impl FamilyState {
    /// `pools[i]` are the spans of slot `i + 1` (normalized, clipped by the caller).
    pub(crate) fn new(
        family: Family,
        cidr: Option<IpNet>,
        gateway: Option<IpAddr>,
        excluded: Vec<Span>,
        pools: &[Vec<Span>],
    ) -> Self {
        let full = cidr.map(|c| (to_u128(c.network()), to_u128(c.broadcast())));
        let mut reserved = Vec::new();
        if let Some(c) = cidr {
            let (net, bcast) = (to_u128(c.network()), to_u128(c.broadcast()));
            // RFC 3021 (/31) and RFC 6164 (/127): point-to-point links use both addresses.
            let max = c.max_prefix_len();
            if c.prefix_len() + 1 < max {
                reserved.push((net, Forbidden::NetworkAddress));
                if family == Family::V4 {
                    reserved.push((bcast, Forbidden::Broadcast));
                }
            }
            if let Some(gw) = gateway {
                let g = to_u128(gw);
                if !reserved.iter().any(|&(x, _)| x == g) {
                    reserved.push((g, Forbidden::Gateway));
                }
            }
        }
        reserved.sort_unstable();
        let excluded = match full {
            Some(f) => intersect(&normalize(excluded), &[f]),
            None => Vec::new(),
        };
        let mut state = Self {
            family,
            cidr,
            full,
            reserved,
            excluded,
            pool_spans: Vec::new(),
            pool_count: 0,
            free: Vec::new(),
            using_per_slot: Vec::new(),
            used: FastMap::default(),
        };
        state.set_pools(pools);
        state
    }

    /// Replaces the pool layout; call [`Self::recompute`] afterwards.
    pub(crate) fn set_pools(&mut self, pools: &[Vec<Span>]) {
        let mut spans: Vec<(u128, u128, PoolSlot)> = Vec::new();
        if let Some(full) = self.full {
            for (i, p) in pools.iter().enumerate() {
                for (f, l) in intersect(p, &[full]) {
                    spans.push((f, l, i + 1));
                }
            }
        }
        spans.sort_unstable();
        self.pool_spans = spans;
        self.pool_count = pools.len();
    }

    /// Keeps the holders, rebuilds the free sets and per-pool counters from them in bulk.
    pub(crate) fn recompute(&mut self) {
        let slots = self.pool_count + 1;
        self.free = vec![IntervalSet::default(); slots];
        self.using_per_slot = vec![0; slots];
        let Some(full) = self.full else {
            return;
        };
        let mut held: Vec<u128> = self.used.keys().copied().collect();
        held.sort_unstable();
        for &x in &held {
            if let Some(slot) = self.slot_of(x) {
                self.using_per_slot[slot] += 1;
            }
        }
        let mut blocked: Vec<Span> = self.reserved.iter().map(|&(x, _)| (x, x)).collect();
        blocked.extend(self.excluded.iter().copied());
        blocked.extend(spans_of_sorted_points(&held));
        let open = subtract(&[full], &normalize(blocked));
        let mut per_slot: Vec<Vec<Span>> = vec![Vec::new(); slots];
        for (f, l, slot) in &self.pool_spans {
            per_slot[*slot].push((*f, *l));
        }
        let all_pools = normalize(self.pool_spans.iter().map(|&(f, l, _)| (f, l)).collect());
        self.free[0] = IntervalSet::from_spans(subtract(&open, &all_pools));
        for (slot, spans) in per_slot.into_iter().enumerate().skip(1) {
            self.free[slot] = IntervalSet::from_spans(intersect(&open, &normalize(spans)));
        }
    }

    /// The pool an address of the CIDR belongs to; None outside the CIDR.
    pub(crate) fn slot_of(&self, x: u128) -> Option<PoolSlot> {
        let (first, last) = self.full?;
        if x < first || x > last {
            return None;
        }
        let idx = self.pool_spans.partition_point(|&(f, _, _)| f <= x);
        if idx > 0 && self.pool_spans[idx - 1].1 >= x {
            Some(self.pool_spans[idx - 1].2)
        } else {
            Some(0)
        }
    }

    /// Why the subnet would not hand out `x`, if it would not.
    pub(crate) fn forbidden(&self, x: u128) -> Option<Forbidden> {
        let Some((first, last)) = self.full else {
            return Some(Forbidden::FamilyNotInSubnet);
        };
        if x < first || x > last {
            return Some(Forbidden::OutsideCidr);
        }
        if let Some(&(_, why)) = self.reserved.iter().find(|&&(r, _)| r == x) {
            return Some(why);
        }
        if spans_contain(&self.excluded, x) {
            return Some(Forbidden::Excluded);
        }
        None
    }

    /// Takes the lowest free address of a pool for `holder`.
    pub(crate) fn take_first(&mut self, slot: PoolSlot, holder: u32) -> Option<u128> {
        let x = self.free.get_mut(slot)?.pop_first()?;
        self.used.insert(x, holder);
        self.using_per_slot[slot] += 1;
        Some(x)
    }

    /// Records `x` as held by `holder` (a static or recovered address); the caller has checked
    /// that nobody else holds it.
    pub(crate) fn take(&mut self, x: u128, holder: u32) {
        if self.used.insert(x, holder).is_some() {
            return;
        }
        if let Some(slot) = self.slot_of(x) {
            self.free[slot].remove(x);
            self.using_per_slot[slot] += 1;
        }
    }

    /// Releases `x`; it becomes free again only if the subnet may still hand it out.
    pub(crate) fn give_back(&mut self, x: u128) {
        if self.used.remove(&x).is_none() {
            return;
        }
        if let Some(slot) = self.slot_of(x) {
            self.using_per_slot[slot] = self.using_per_slot[slot].saturating_sub(1);
            if self.forbidden(x).is_none() {
                self.free[slot].insert(x);
            }
        }
    }

    pub(crate) fn available(&self) -> u128 {
        self.free
            .iter()
            .fold(0u128, |acc, s| acc.saturating_add(s.len()))
    }

    pub(crate) fn using(&self) -> u128 {
        self.used.len() as u128
    }

    pub(crate) fn slot_available(&self, slot: PoolSlot) -> u128 {
        self.free.get(slot).map_or(0, IntervalSet::len)
    }

    pub(crate) fn slot_using(&self, slot: PoolSlot) -> u128 {
        self.using_per_slot.get(slot).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn free_spans(&self, slot: PoolSlot) -> Vec<Span> {
        self.free
            .get(slot)
            .map(|s| s.spans().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        to_u128(s.parse().unwrap())
    }

    #[test]
    fn slash30_reserves_network_broadcast_and_gateway() {
        let mut f = FamilyState::new(
            Family::V4,
            Some("10.0.0.0/30".parse().unwrap()),
            Some("10.0.0.1".parse().unwrap()),
            vec![],
            &[],
        );
        f.recompute();
        assert_eq!(f.free_spans(0), vec![(v4("10.0.0.2"), v4("10.0.0.2"))]);
        assert_eq!(f.forbidden(v4("10.0.0.3")), Some(Forbidden::Broadcast));
        assert_eq!(f.forbidden(v4("10.0.0.0")), Some(Forbidden::NetworkAddress));
        assert_eq!(f.forbidden(v4("10.0.0.1")), Some(Forbidden::Gateway));
        assert_eq!(f.forbidden(v4("10.0.0.4")), Some(Forbidden::OutsideCidr));
    }

    #[test]
    fn pools_split_the_free_space() {
        let mut f = FamilyState::new(
            Family::V4,
            Some("10.0.0.0/28".parse().unwrap()),
            Some("10.0.0.1".parse().unwrap()),
            vec![(v4("10.0.0.5"), v4("10.0.0.5"))],
            &[vec![(v4("10.0.0.4"), v4("10.0.0.7"))]],
        );
        f.recompute();
        assert_eq!(
            f.free_spans(1),
            vec![
                (v4("10.0.0.4"), v4("10.0.0.4")),
                (v4("10.0.0.6"), v4("10.0.0.7"))
            ]
        );
        assert_eq!(
            f.free_spans(0),
            vec![
                (v4("10.0.0.2"), v4("10.0.0.3")),
                (v4("10.0.0.8"), v4("10.0.0.14"))
            ]
        );
        assert_eq!(f.slot_of(v4("10.0.0.6")), Some(1));
        assert_eq!(f.slot_of(v4("10.0.0.8")), Some(0));
    }
}
