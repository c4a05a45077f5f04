//! The cluster-wide allocator: subnets, their pools, every allocation and every MAC.

use std::hash::BuildHasher;
use std::net::IpAddr;

use ipnet::IpNet;

use super::error::{InputError, IpamError};
use super::family::{FamilyState, PoolSlot, to_ip, to_u128};
use super::fasthash::{FastMap, FastState};
use super::intervals::{Span, intersect, normalize};
use super::mac::candidate_mac;
use super::types::{
    AddrRange, Allocation, AllocationRequest, Counts, ExistingAllocation, Family, Forbidden,
    IpPoolSpec, MacAddr, Misplaced, OwnerKey, RecordSource, SubnetSpec,
};

/// How many MAC candidates are tried before giving up (each collides with probability
/// (known MACs) / 2^40, so this is never reached in practice).
const MAC_ATTEMPTS: u32 = 1024;

#[derive(Debug, Clone)]
pub(crate) struct SubnetState {
    pub(crate) spec: SubnetSpec,
    /// Sorted by name; pool `pools[i]` is slot `i + 1` in both families.
    pub(crate) pools: Vec<IpPoolSpec>,
    pub(crate) v4: FamilyState,
    pub(crate) v6: FamilyState,
}

impl SubnetState {
    pub(crate) fn family(&self, f: Family) -> &FamilyState {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub(crate) fn family_mut(&mut self, f: Family) -> &mut FamilyState {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn families(&self) -> impl Iterator<Item = Family> + '_ {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|&f| self.family(f).cidr.is_some())
    }

    fn pool_slot(&self, name: &str) -> Option<PoolSlot> {
        self.pools
            .iter()
            .position(|p| p.name == name)
            .map(|i| i + 1)
    }

    fn pool_name(&self, slot: PoolSlot) -> String {
        slot.checked_sub(1)
            .and_then(|i| self.pools.get(i))
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    fn pool_spans(&self, f: Family) -> Vec<Vec<Span>> {
        self.pools
            .iter()
            .map(|p| {
                normalize(
                    p.addresses
                        .iter()
                        .filter(|r| Family::of(r.first) == f)
                        .map(|r| (to_u128(r.first), to_u128(r.last)))
                        .collect(),
                )
            })
            .collect()
    }

    fn relayout_pools(&mut self) {
        for f in [Family::V4, Family::V6] {
            let spans = self.pool_spans(f);
            let fam = self.family_mut(f);
            fam.set_pools(&spans);
            fam.recompute();
        }
    }
}

/// The IPAM. Every method is plain data in, plain data out; the caller owns persistence
/// (pod annotations, IP objects) and serialises access.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub(crate) seed: u64,
    pub(crate) subnets: FastMap<String, SubnetState>,
    /// Pool name (cluster-unique, IPPool is cluster-scoped) → its subnet.
    pub(crate) pool_subnet: FastMap<String, String>,
    pub(crate) slots: Vec<Option<Allocation>>,
    pub(crate) vacant: Vec<u32>,
    /// Keys `by_owner` and `by_pod` (seeded per instance, see `fasthash`).
    pub(crate) hasher: FastState,
    /// Owner → slot, as chains per owner hash compared against `slots[id].owner`, so the
    /// owner key is stored once (in its allocation), not twice.
    pub(crate) by_owner: Chains,
    /// (namespace, pod name) → the slots of that pod's interfaces.
    pub(crate) by_pod: Chains,
    pub(crate) live: usize,
    pub(crate) macs: FastMap<MacAddr, u32>,
}

fn check_range(what: &str, r: &AddrRange) -> Result<(), IpamError> {
    let bad = |reason| {
        Err(IpamError::Input(InputError::BadRange {
            what: what.to_string(),
            range: *r,
            reason,
        }))
    };
    if Family::of(r.first) != Family::of(r.last) {
        return bad("its ends are of different address families");
    }
    if to_u128(r.first) > to_u128(r.last) {
        return bad("its first address is after its last");
    }
    Ok(())
}

/// Slots grouped by a 64-bit key: per key the first slot, then a chain through `next` (no
/// allocation per entry). Keys are hashes: entries whose hashes collide share a chain, and
/// readers compare the real key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chains {
    heads: FastMap<u64, u32>,
    next: Vec<u32>,
}

const NO_SLOT: u32 = u32::MAX;

impl Chains {
    pub(crate) fn link(&mut self, key: u64, id: u32) {
        let idx = id as usize;
        if self.next.len() <= idx {
            self.next.resize(idx + 1, NO_SLOT);
        }
        self.next[idx] = self.heads.insert(key, id).unwrap_or(NO_SLOT);
    }

    pub(crate) fn unlink(&mut self, key: u64, id: u32) {
        let Some(&head) = self.heads.get(&key) else {
            return;
        };
        let after = self.next.get(id as usize).copied().unwrap_or(NO_SLOT);
        if head == id {
            if after == NO_SLOT {
                self.heads.remove(&key);
            } else {
                self.heads.insert(key, after);
            }
            return;
        }
        let mut cur = head;
        while let Some(&n) = self.next.get(cur as usize) {
            if n == id {
                self.next[cur as usize] = after;
                return;
            }
            cur = n;
        }
    }

    pub(crate) fn for_each(&self, key: u64, mut f: impl FnMut(u32)) {
        let mut cur = self.heads.get(&key).copied().unwrap_or(NO_SLOT);
        while cur != NO_SLOT {
            f(cur);
            cur = self.next.get(cur as usize).copied().unwrap_or(NO_SLOT);
        }
    }

    #[cfg(test)]
    pub(crate) fn ids(&self, key: u64) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each(key, |id| out.push(id));
        out
    }
}

impl Ipam {
    pub(crate) fn owner_key(&self, owner: &OwnerKey) -> u64 {
        self.hasher.hash_one(owner)
    }

    pub(crate) fn pod_key(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    /// The slot holding `owner`'s allocation.
    pub(crate) fn owner_slot(&self, owner: &OwnerKey) -> Option<u32> {
        let mut found = None;
        self.by_owner.for_each(self.owner_key(owner), |id| {
            if found.is_none()
                && self
                    .slots
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|a| a.owner == *owner)
            {
                found = Some(id);
            }
        });
        found
    }
}

/// Per family: requested static address, if any.
type Statics = [Option<IpAddr>; 2];

fn fam_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn held_ip(a: &Allocation, f: Family) -> Option<IpAddr> {
    match f {
        Family::V4 => a.v4.map(IpAddr::V4),
        Family::V6 => a.v6.map(IpAddr::V6),
    }
}

fn set_held_ip(a: &mut Allocation, ip: IpAddr) {
    match ip {
        IpAddr::V4(x) => a.v4 = Some(x),
        IpAddr::V6(x) => a.v6 = Some(x),
    }
}

impl Ipam {
    /// An empty IPAM; `mac_seed` makes generated MACs deterministic (use a per-cluster value).
    pub fn new(mac_seed: u64) -> Self {
        Self {
            seed: mac_seed,
            subnets: FastMap::default(),
            pool_subnet: FastMap::default(),
            slots: Vec::new(),
            vacant: Vec::new(),
            hasher: FastState::default(),
            by_owner: Chains::default(),
            by_pod: Chains::default(),
            live: 0,
            macs: FastMap::default(),
        }
    }

    /// Adds a subnet, or applies a changed spec (resize, new gateway, new excludeIps) to an
    /// existing one. Existing allocations always stay; the ones the new spec would not hand
    /// out are returned so the controller can report them.
    pub fn upsert_subnet(&mut self, spec: SubnetSpec) -> Result<Vec<Misplaced>, IpamError> {
        if spec.v4.is_none() && spec.v6.is_none() {
            return Err(InputError::NoCidr {
                subnet: spec.name.clone(),
            }
            .into());
        }
        let gateways = [
            (spec.v4.map(IpNet::V4), spec.v4_gateway.map(IpAddr::V4)),
            (spec.v6.map(IpNet::V6), spec.v6_gateway.map(IpAddr::V6)),
        ];
        for (cidr, gw) in gateways {
            if let (Some(cidr), Some(gw)) = (cidr, gw)
                && !cidr.trunc().contains(&gw)
            {
                return Err(InputError::GatewayOutsideCidr {
                    subnet: spec.name.clone(),
                    gateway: gw,
                    cidr,
                }
                .into());
            }
        }
        let what = format!("subnet {} excludeIps", spec.name);
        for r in &spec.exclude {
            check_range(&what, r)?;
        }
        let excluded = |f: Family| -> Vec<Span> {
            spec.exclude
                .iter()
                .filter(|r| Family::of(r.first) == f)
                .map(|r| (to_u128(r.first), to_u128(r.last)))
                .collect()
        };
        let name = spec.name.clone();
        let previous = self.subnets.remove(&name);
        let pools = previous
            .as_ref()
            .map(|p| p.pools.clone())
            .unwrap_or_default();
        let mut state = SubnetState {
            v4: FamilyState::new(
                Family::V4,
                spec.v4.map(|n| IpNet::V4(n.trunc())),
                spec.v4_gateway.map(IpAddr::V4),
                excluded(Family::V4),
                &[],
            ),
            v6: FamilyState::new(
                Family::V6,
                spec.v6.map(|n| IpNet::V6(n.trunc())),
                spec.v6_gateway.map(IpAddr::V6),
                excluded(Family::V6),
                &[],
            ),
            spec,
            pools,
        };
        if let Some(prev) = previous {
            state.v4.used = prev.v4.used;
            state.v6.used = prev.v6.used;
        }
        state.relayout_pools();
        self.subnets.insert(name.clone(), state);
        Ok(self.misplaced_in(&name))
    }

    /// Removes a subnet and its pools; refused while any address of it is allocated.
    pub fn remove_subnet(&mut self, name: &str) -> Result<(), IpamError> {
        let Some(state) = self.subnets.get(name) else {
            return Err(IpamError::UnknownSubnet {
                subnet: name.to_string(),
            });
        };
        let using = state.v4.used.len() + state.v6.used.len();
        if using > 0 {
            return Err(IpamError::SubnetInUse {
                subnet: name.to_string(),
                using,
            });
        }
        self.subnets.remove(name);
        self.pool_subnet.retain(|_, s| s != name);
        Ok(())
    }

    /// Adds or changes an IPPool. Its addresses must lie inside its subnet and not overlap
    /// another pool. Held addresses stay with their holders.
    pub fn upsert_pool(&mut self, pool: IpPoolSpec) -> Result<(), IpamError> {
        if let Some(declared) = self.pool_subnet.get(&pool.name)
            && *declared != pool.subnet
        {
            return Err(IpamError::PoolSubnetChanged {
                pool: pool.name.clone(),
                subnet: pool.subnet.clone(),
                declared: declared.clone(),
            });
        }
        let Some(state) = self.subnets.get_mut(&pool.subnet) else {
            return Err(IpamError::UnknownSubnet {
                subnet: pool.subnet.clone(),
            });
        };
        let what = format!("IPPool {}", pool.name);
        for r in &pool.addresses {
            check_range(&what, r)?;
            let fam = state.family(Family::of(r.first));
            let inside = fam
                .cidr
                .is_some_and(|c| c.contains(&r.first) && c.contains(&r.last));
            if !inside {
                return Err(IpamError::PoolOutsideSubnet {
                    subnet: pool.subnet.clone(),
                    pool: pool.name.clone(),
                    range: *r,
                });
            }
        }
        for other in state.pools.iter().filter(|p| p.name != pool.name) {
            for f in [Family::V4, Family::V6] {
                let spans = |p: &IpPoolSpec| -> Vec<Span> {
                    normalize(
                        p.addresses
                            .iter()
                            .filter(|r| Family::of(r.first) == f)
                            .map(|r| (to_u128(r.first), to_u128(r.last)))
                            .collect(),
                    )
                };
                if let Some(&(first, _)) = intersect(&spans(&pool), &spans(other)).first() {
                    return Err(IpamError::PoolOverlap {
                        subnet: pool.subnet.clone(),
                        pool: pool.name.clone(),
                        other: other.name.clone(),
                        first_shared: to_ip(f, first),
                    });
                }
            }
        }
        self.pool_subnet
            .insert(pool.name.clone(), pool.subnet.clone());
        state.pools.retain(|p| p.name != pool.name);
        state.pools.push(pool);
        state.pools.sort_by(|a, b| a.name.cmp(&b.name));
        state.relayout_pools();
        Ok(())
    }

    /// Removes an IPPool; its free addresses return to the subnet.
    pub fn remove_pool(&mut self, name: &str) -> Result<(), IpamError> {
        let Some(subnet) = self.pool_subnet.remove(name) else {
            return Err(IpamError::NoSuchPool {
                pool: name.to_string(),
            });
        };
        if let Some(state) = self.subnets.get_mut(&subnet) {
            state.pools.retain(|p| p.name != name);
            state.relayout_pools();
        }
        Ok(())
    }

    /// Allocates addresses and a MAC for `req.owner` in `req.subnet`.
    ///
    /// If the owner already holds an allocation that satisfies the request, that same
    /// allocation is returned (completed with any family the subnet gained). If it holds one
    /// that does not (other subnet, other static IP or MAC, other pool), the new allocation
    /// replaces it atomically: on error the old one is left untouched.
    pub fn allocate(&mut self, req: &AllocationRequest) -> Result<Allocation, IpamError> {
        let Some(state) = self.subnets.get(&req.subnet) else {
            return Err(IpamError::UnknownSubnet {
                subnet: req.subnet.clone(),
            });
        };
        let mut statics = Self::statics(state, req)?;
        self.choose_candidates(state, req, &mut statics)?;
        let slot = Self::resolve_pool(state, req)?;
        if let Some(mac) = req.static_mac
            && (!mac.is_unicast() || mac.is_zero())
        {
            return Err(IpamError::MacNotUnicast { mac });
        }

        if let Some(id) = self.owner_slot(&req.owner)
            && let Some(held) = self.slots.get(id as usize).cloned().flatten()
        {
            if self.satisfies(state, &held, &statics, slot, req) {
                return self.complete(id, held, &statics, slot);
            }
            // Move: free the old allocation, try the new one, restore on failure.
            self.release(&req.owner);
            return match self.fresh(req, &statics, slot) {
                Ok(a) => Ok(a),
                Err(e) => {
                    self.restore(held);
                    Err(e)
                }
            };
        }
        self.fresh(req, &statics, slot)
    }

    /// Releases everything `owner` holds; returns what it held.
    pub fn release(&mut self, owner: &OwnerKey) -> Option<Allocation> {
        let id = self.owner_slot(owner)?;
        let alloc = self.slots.get_mut(id as usize)?.take()?;
        self.vacant.push(id);
        self.live -= 1;
        self.by_owner.unlink(self.owner_key(owner), id);
        self.by_pod
            .unlink(self.pod_key(&owner.namespace, &owner.name), id);
        if self.macs.get(&alloc.mac) == Some(&id) {
            self.macs.remove(&alloc.mac);
        }
        if let Some(state) = self.subnets.get_mut(&alloc.subnet) {
            for ip in alloc.ips() {
                let fam = state.family_mut(Family::of(ip));
                if fam.used.get(&to_u128(ip)) == Some(&id) {
                    fam.give_back(to_u128(ip));
                }
            }
        }
        Some(alloc)
    }

    /// Releases every interface of a pod (all providers of `namespace/name`).
    pub fn release_pod(&mut self, namespace: &str, name: &str) -> Vec<Allocation> {
        let mut ids = Vec::new();
        self.by_pod
            .for_each(self.pod_key(namespace, name), |id| ids.push(id));
        let mut owners: Vec<OwnerKey> = ids
            .iter()
            .filter_map(|&id| self.slots.get(id as usize)?.as_ref())
            .map(|a| a.owner.clone())
            .filter(|o| o.namespace == namespace && o.name == name)
            .collect();
        owners.sort();
        owners.iter().filter_map(|o| self.release(o)).collect()
    }

    /// What `owner` holds.
    pub fn allocation(&self, owner: &OwnerKey) -> Option<&Allocation> {
        let id = self.owner_slot(owner)?;
        self.slots.get(id as usize)?.as_ref()
    }

    /// Who holds `ip` in `subnet`.
    pub fn holder(&self, subnet: &str, ip: IpAddr) -> Option<&OwnerKey> {
        let state = self.subnets.get(subnet)?;
        let id = *state.family(Family::of(ip)).used.get(&to_u128(ip))?;
        self.slots.get(id as usize)?.as_ref().map(|a| &a.owner)
    }

    /// Who holds `mac`.
    pub fn mac_holder(&self, mac: MacAddr) -> Option<&OwnerKey> {
        let id = *self.macs.get(&mac)?;
        self.slots.get(id as usize)?.as_ref().map(|a| &a.owner)
    }

    /// Every allocation, in no particular order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> + '_ {
        self.slots.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every allocation as a recovery record, sorted (what [`Ipam::rebuild`] takes back).
    pub fn export(&self, source: RecordSource) -> Vec<ExistingAllocation> {
        let mut out: Vec<ExistingAllocation> =
            self.allocations().map(|a| a.to_record(source)).collect();
        out.sort();
        out
    }

    /// Subnet status counts.
    pub fn counts(&self, subnet: &str) -> Option<Counts> {
        let s = self.subnets.get(subnet)?;
        Some(Counts {
            v4_available: s.v4.available(),
            v4_using: s.v4.using(),
            v6_available: s.v6.available(),
            v6_using: s.v6.using(),
        })
    }

    /// IPPool status counts (addresses of the pool free / held).
    pub fn pool_counts(&self, pool: &str) -> Option<Counts> {
        let s = self.subnets.get(self.pool_subnet.get(pool)?)?;
        let slot = s.pool_slot(pool)?;
        Some(Counts {
            v4_available: s.v4.slot_available(slot),
            v4_using: s.v4.slot_using(slot),
            v6_available: s.v6.slot_available(slot),
            v6_using: s.v6.slot_using(slot),
        })
    }

    pub fn subnet_spec(&self, subnet: &str) -> Option<&SubnetSpec> {
        self.subnets.get(subnet).map(|s| &s.spec)
    }

    /// Whether the subnet would hand out `ip` dynamically (Ok(None): yes; Ok(Some): why not),
    /// whether or not it is held right now.
    pub fn forbidden(&self, subnet: &str, ip: IpAddr) -> Result<Option<Forbidden>, IpamError> {
        let Some(s) = self.subnets.get(subnet) else {
            return Err(IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            });
        };
        Ok(s.family(Family::of(ip)).forbidden(to_u128(ip)))
    }

    /// Held addresses the current specs would not hand out, sorted.
    pub fn misplaced(&self) -> Vec<Misplaced> {
        let mut names: Vec<&String> = self.subnets.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|n| self.misplaced_in(n))
            .collect()
    }

    fn misplaced_in(&self, subnet: &str) -> Vec<Misplaced> {
        let Some(state) = self.subnets.get(subnet) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for fam in [&state.v4, &state.v6] {
            for (&x, &id) in &fam.used {
                if let Some(why) = fam.forbidden(x)
                    && let Some(Some(a)) = self.slots.get(id as usize)
                {
                    out.push(Misplaced {
                        owner: a.owner.clone(),
                        subnet: subnet.to_string(),
                        ip: to_ip(fam.family, x),
                        why,
                    });
                }
            }
        }
        out.sort();
        out
    }

    fn statics(state: &SubnetState, req: &AllocationRequest) -> Result<Statics, IpamError> {
        let mut statics: Statics = [None, None];
        for &ip in &req.static_ips {
            let f = Family::of(ip);
            if state.family(f).cidr.is_none() {
                return Err(IpamError::StaticIpFamilyNotInSubnet {
                    subnet: req.subnet.clone(),
                    ip,
                    family: f,
                });
            }
            if let Some(first) = statics[fam_index(f)] {
                return Err(IpamError::StaticIpsSameFamily {
                    first,
                    second: ip,
                    family: f,
                });
            }
            statics[fam_index(f)] = Some(ip);
        }
        Ok(statics)
    }

    /// Turns `candidate_ips` into one static address per family: the one the owner already
    /// holds if it is a candidate, else the first candidate nobody else holds and the subnet
    /// accepts as a static address.
    fn choose_candidates(
        &self,
        state: &SubnetState,
        req: &AllocationRequest,
        statics: &mut Statics,
    ) -> Result<(), IpamError> {
        if req.candidate_ips.is_empty() {
            return Ok(());
        }
        let me = self.owner_slot(&req.owner);
        let held = me
            .and_then(|id| self.slots.get(id as usize))
            .and_then(Option::as_ref)
            .filter(|a| a.subnet == req.subnet);
        for f in [Family::V4, Family::V6] {
            let mut of_family = req
                .candidate_ips
                .iter()
                .copied()
                .filter(|ip| Family::of(*ip) == f)
                .peekable();
            let Some(&first) = of_family.peek() else {
                continue;
            };
            let fam = state.family(f);
            if fam.cidr.is_none() {
                return Err(IpamError::StaticIpFamilyNotInSubnet {
                    subnet: req.subnet.clone(),
                    ip: first,
                    family: f,
                });
            }
            if statics[fam_index(f)].is_some() {
                continue;
            }
            let candidates: Vec<IpAddr> = of_family.collect();
            if let Some(h) = held.and_then(|a| held_ip(a, f))
                && candidates.contains(&h)
            {
                statics[fam_index(f)] = Some(h);
                continue;
            }
            let usable = |ip: &IpAddr| {
                let x = to_u128(*ip);
                let allowed = match fam.forbidden(x) {
                    None => true,
                    Some(Forbidden::Excluded) => state.spec.allow_static_in_excluded,
                    Some(_) => false,
                };
                allowed && fam.used.get(&x).is_none_or(|&holder| Some(holder) == me)
            };
            match candidates.iter().find(|ip| usable(ip)) {
                Some(&ip) => statics[fam_index(f)] = Some(ip),
                None => {
                    return Err(IpamError::NoFreeCandidate {
                        subnet: req.subnet.clone(),
                        family: f,
                        candidates: candidates.len(),
                    });
                }
            }
        }
        Ok(())
    }

    fn resolve_pool(state: &SubnetState, req: &AllocationRequest) -> Result<PoolSlot, IpamError> {
        let ns = &req.owner.namespace;
        match &req.pool {
            Some(name) => {
                let Some(slot) = state.pool_slot(name) else {
                    return Err(IpamError::UnknownPool {
                        subnet: req.subnet.clone(),
                        pool: name.clone(),
                    });
                };
                let pool = &state.pools[slot - 1];
                if !pool.namespaces.is_empty() && !pool.namespaces.contains(ns) {
                    return Err(IpamError::PoolNotForNamespace {
                        subnet: req.subnet.clone(),
                        pool: name.clone(),
                        namespace: ns.clone(),
                    });
                }
                Ok(slot)
            }
            None => Ok(state
                .pools
                .iter()
                .position(|p| p.namespaces.contains(ns))
                .map_or(0, |i| i + 1)),
        }
    }

    /// Whether what `held` has already answers the request (missing families aside).
    fn satisfies(
        &self,
        state: &SubnetState,
        held: &Allocation,
        statics: &Statics,
        slot: PoolSlot,
        req: &AllocationRequest,
    ) -> bool {
        if held.subnet != req.subnet || req.static_mac.is_some_and(|m| m != held.mac) {
            return false;
        }
        for f in [Family::V4, Family::V6] {
            let Some(ip) = held_ip(held, f) else { continue };
            match statics[fam_index(f)] {
                Some(wanted) if wanted != ip => return false,
                Some(_) => {}
                // A held address stays unless the request names a pool it is not in. A pool
                // bound to the namespace does not move pods that got addresses before it.
                None if req.pool.is_some()
                    && state.family(f).slot_of(to_u128(ip)) != Some(slot) =>
                {
                    return false;
                }
                None => {}
            }
        }
        true
    }

    /// Adds the families the owner lacks (the subnet became dual stack) to its allocation.
    fn complete(
        &mut self,
        id: u32,
        mut held: Allocation,
        statics: &Statics,
        slot: PoolSlot,
    ) -> Result<Allocation, IpamError> {
        let Some(state) = self.subnets.get(&held.subnet) else {
            return Ok(held);
        };
        let missing: Vec<Family> = state
            .families()
            .filter(|&f| held_ip(&held, f).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(held);
        }
        let mut partial = statics.to_owned();
        for f in [Family::V4, Family::V6] {
            if !missing.contains(&f) {
                partial[fam_index(f)] = None;
            }
        }
        let ips = self.take_addresses(&held.subnet, &partial, slot, id, &missing)?;
        for ip in ips {
            set_held_ip(&mut held, ip);
        }
        self.slots[id as usize] = Some(held.clone());
        Ok(held)
    }

    fn fresh(
        &mut self,
        req: &AllocationRequest,
        statics: &Statics,
        slot: PoolSlot,
    ) -> Result<Allocation, IpamError> {
        if let Some(mac) = req.static_mac
            && let Some(holder) = self.mac_holder(mac)
        {
            return Err(IpamError::MacTaken {
                mac,
                holder: holder.clone(),
            });
        }
        let id = self
            .vacant
            .last()
            .copied()
            .unwrap_or(self.slots.len() as u32);
        let families: Vec<Family> = match self.subnets.get(&req.subnet) {
            Some(s) => s.families().collect(),
            None => Vec::new(),
        };
        let ips = self.take_addresses(&req.subnet, statics, slot, id, &families)?;
        let mac = match req.static_mac {
            Some(m) => m,
            None => match self.generate_mac(&req.owner) {
                Ok(m) => m,
                Err(e) => {
                    self.give_back_all(&req.subnet, &ips);
                    return Err(e);
                }
            },
        };
        let mut alloc = Allocation {
            owner: req.owner.clone(),
            subnet: req.subnet.clone(),
            v4: None,
            v6: None,
            mac,
        };
        for ip in ips {
            set_held_ip(&mut alloc, ip);
        }
        self.store(id, alloc.clone());
        Ok(alloc)
    }

    /// Places `alloc` in slab slot `id` (the next vacant one, or one past the end).
    fn store(&mut self, id: u32, alloc: Allocation) {
        if self.vacant.last() == Some(&id) {
            self.vacant.pop();
        }
        let idx = id as usize;
        if idx == self.slots.len() {
            self.slots.push(None);
        }
        self.macs.insert(alloc.mac, id);
        self.by_owner.link(self.owner_key(&alloc.owner), id);
        self.by_pod
            .link(self.pod_key(&alloc.owner.namespace, &alloc.owner.name), id);
        self.live += 1;
        self.slots[idx] = Some(alloc);
    }

    /// Puts back an allocation that was just released (nothing else changed in between).
    fn restore(&mut self, alloc: Allocation) {
        let id = self
            .vacant
            .last()
            .copied()
            .unwrap_or(self.slots.len() as u32);
        if let Some(state) = self.subnets.get_mut(&alloc.subnet) {
            for ip in alloc.ips() {
                state.family_mut(Family::of(ip)).take(to_u128(ip), id);
            }
        }
        self.store(id, alloc);
    }

    fn give_back_all(&mut self, subnet: &str, ips: &[IpAddr]) {
        if let Some(state) = self.subnets.get_mut(subnet) {
            for &ip in ips {
                state.family_mut(Family::of(ip)).give_back(to_u128(ip));
            }
        }
    }

    /// Checks every static address first, then takes them and the dynamic ones; on
    /// exhaustion of a later family the earlier ones are given back.
    fn take_addresses(
        &mut self,
        subnet: &str,
        statics: &Statics,
        slot: PoolSlot,
        id: u32,
        families: &[Family],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let Some(state) = self.subnets.get(subnet) else {
            return Err(IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            });
        };
        for &f in families {
            let Some(ip) = statics[fam_index(f)] else {
                continue;
            };
            let fam = state.family(f);
            let x = to_u128(ip);
            match fam.forbidden(x) {
                None => {}
                Some(Forbidden::OutsideCidr) => {
                    return Err(IpamError::StaticIpOutsideSubnet {
                        subnet: subnet.to_string(),
                        ip,
                        cidr: fam.cidr.unwrap_or(IpNet::from(ip)),
                    });
                }
                Some(Forbidden::Excluded) if state.spec.allow_static_in_excluded => {}
                Some(why) => {
                    return Err(IpamError::StaticIpForbidden {
                        subnet: subnet.to_string(),
                        ip,
                        why,
                    });
                }
            }
            if let Some(&holder) = fam.used.get(&x)
                && let Some(Some(a)) = self.slots.get(holder as usize)
            {
                return Err(IpamError::StaticIpTaken {
                    subnet: subnet.to_string(),
                    ip,
                    holder: a.owner.clone(),
                });
            }
        }
        let pool_name = state.pool_name(slot);
        let Some(state) = self.subnets.get_mut(subnet) else {
            return Ok(Vec::new());
        };
        let mut taken: Vec<IpAddr> = Vec::with_capacity(2);
        for &f in families {
            let fam = state.family_mut(f);
            let got = match statics[fam_index(f)] {
                Some(ip) => {
                    fam.take(to_u128(ip), id);
                    Some(ip)
                }
                None => fam.take_first(slot, id).map(|x| to_ip(f, x)),
            };
            match got {
                Some(ip) => taken.push(ip),
                None => {
                    for &ip in &taken {
                        state.family_mut(Family::of(ip)).give_back(to_u128(ip));
                    }
                    return Err(if slot == 0 {
                        IpamError::SubnetExhausted {
                            subnet: subnet.to_string(),
                            family: f,
                        }
                    } else {
                        IpamError::PoolExhausted {
                            subnet: subnet.to_string(),
                            pool: pool_name,
                            family: f,
                        }
                    });
                }
            }
        }
        Ok(taken)
    }

    pub(crate) fn generate_mac(&self, owner: &OwnerKey) -> Result<MacAddr, IpamError> {
        (0..MAC_ATTEMPTS)
            .map(|attempt| candidate_mac(self.seed, owner, attempt))
            .find(|m| !self.macs.contains_key(m))
            .ok_or_else(|| IpamError::MacSpaceExhausted {
                owner: owner.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_index_chains_and_unlinks_anywhere() {
        let mut idx = Chains::default();
        for id in [1, 2, 3] {
            idx.link(7, id);
        }
        idx.link(8, 0);
        assert_eq!(idx.ids(7), vec![3, 2, 1]);
        idx.unlink(7, 2);
        assert_eq!(idx.ids(7), vec![3, 1]);
        idx.unlink(7, 3);
        assert_eq!(idx.ids(7), vec![1]);
        idx.unlink(7, 1);
        assert!(idx.ids(7).is_empty());
        idx.unlink(7, 1);
        assert_eq!(idx.ids(8), vec![0]);
        // A reused slot starts a fresh chain entry.
        idx.link(7, 2);
        assert_eq!(idx.ids(7), vec![2]);
    }
}
