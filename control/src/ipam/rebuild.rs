//! Recovery after a restart: the IPAM rebuilt from the allocations found in the cluster.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::allocator::{Chains, Ipam};
use super::error::IpamError;
use super::family::to_u128;
use super::fasthash::{FastMap, FastState};
use super::mac::stable_owner_hash;
use super::types::{
    Allocation, Conflict, ExistingAllocation, Family, IpPoolSpec, MacAddr, Misplaced, OwnerKey,
    RecordSource, SubnetSpec,
};

/// The rebuilt IPAM and everything that could not be kept as found.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub ipam: Ipam,
    /// Records (or parts) dropped, each naming what was kept instead. Sorted.
    pub conflicts: Vec<Conflict>,
    /// Kept addresses the current subnet specs would not hand out. Sorted.
    pub misplaced: Vec<Misplaced>,
    /// Subnets and pools whose spec was refused (their records then count as unknown).
    pub rejected: Vec<IpamError>,
}

/// Full order of two records, used only to break ties of the processing key so that the
/// result does not depend on the order the records were listed in.
fn tie_break(a: &ExistingAllocation, b: &ExistingAllocation) -> Ordering {
    a.owner
        .cmp(&b.owner)
        .then_with(|| a.subnet.cmp(&b.subnet))
        .then_with(|| a.ips.cmp(&b.ips))
        .then_with(|| a.mac.cmp(&b.mac))
}

/// An empty record left behind when one is moved out of the input (allocates nothing).
fn vacated() -> ExistingAllocation {
    ExistingAllocation {
        owner: OwnerKey {
            namespace: String::new(),
            name: String::new(),
            provider: String::new(),
        },
        subnet: String::new(),
        ips: Vec::new(),
        mac: None,
        source: RecordSource::NbPort,
    }
}

/// Whether a later record of an owner agrees with what was kept from its earlier ones. A MAC
/// still `unset` (the earlier records had none, or lost theirs) agrees with any MAC.
fn agrees(kept: &Allocation, record: &ExistingAllocation, unset: MacAddr) -> bool {
    if kept.subnet != record.subnet {
        return false;
    }
    if let Some(m) = record.mac
        && kept.mac != unset
        && m != kept.mac
    {
        return false;
    }
    record.ips.iter().all(|&ip| match ip {
        IpAddr::V4(x) => kept.v4.is_none_or(|k| k == x),
        IpAddr::V6(x) => kept.v6.is_none_or(|k| k == x),
    })
}

/// A MAC that still has to be chosen once every record's own MAC is known.
enum MacTodo {
    Missing,
    Conflict(usize),
}

impl Ipam {
    /// Rebuilds the IPAM from subnet and pool specs and the allocations found in the cluster
    /// (pod annotations, IP objects, NB ports, in any order, duplicates welcome).
    ///
    /// Guarantees: no address is held twice in a subnet, no MAC twice in the cluster, and the
    /// outcome does not depend on the order of `records`. When records disagree, the one with
    /// the higher precedence wins and the other is reported: IP object, then pod annotation,
    /// then NB port; between records of one source, a fixed order given by a hash of the owner
    /// key (the same in every run and every process).
    pub fn rebuild(
        mac_seed: u64,
        subnets: Vec<SubnetSpec>,
        pools: Vec<IpPoolSpec>,
        mut records: Vec<ExistingAllocation>,
    ) -> Recovery {
        let mut ipam = Ipam::new(mac_seed);
        let mut rejected = Vec::new();
        for s in subnets {
            if let Err(e) = ipam.upsert_subnet(s) {
                rejected.push(e);
            }
        }
        for p in pools {
            if let Err(e) = ipam.upsert_pool(p) {
                rejected.push(e);
            }
        }

        // Processing order: source precedence, then a process-independent hash of the owner
        // (cheap to sort 100k+ records by; it keeps one owner's records together), then the
        // full record. Exact duplicates end up adjacent and merge silently below.
        // The index keys are computed in the same pass, while each record's strings are hot.
        let mut index_keys: Vec<(u64, u64)> = Vec::with_capacity(records.len());
        let mut order: Vec<(u8, u64, u32)> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            index_keys.push((
                ipam.owner_key(&r.owner),
                ipam.pod_key(&r.owner.namespace, &r.owner.name),
            ));
            order.push((r.source as u8, stable_owner_hash(0, &r.owner), i as u32));
        }
        order.sort_unstable_by(|x, y| {
            (x.0, x.1)
                .cmp(&(y.0, y.1))
                .then_with(|| tie_break(&records[x.2 as usize], &records[y.2 as usize]))
        });

        let mut conflicts: Vec<Conflict> = Vec::new();
        let mut pending: Vec<Allocation> = Vec::with_capacity(records.len());
        let mut mac_todo: Vec<(u32, MacTodo)> = Vec::new();
        let mut by_owner = Chains::default();
        let mut by_pod = Chains::default();
        let mut macs: FastMap<MacAddr, u32> =
            FastMap::with_capacity_and_hasher(records.len(), FastState::default());
        // A placeholder until the real MAC is chosen; never stored as a claim.
        let unset = MacAddr([0; 6]);

        for &(_, _, i) in &order {
            let record = std::mem::replace(&mut records[i as usize], vacated());
            let Some(state) = ipam.subnets.get_mut(&record.subnet) else {
                conflicts.push(Conflict::UnknownSubnet {
                    owner: record.owner,
                    subnet: record.subnet,
                });
                continue;
            };
            let (owner_key, pod_key) = index_keys[i as usize];
            let mut seen = None;
            by_owner.for_each(owner_key, |id| {
                if seen.is_none() && pending[id as usize].owner == record.owner {
                    seen = Some(id);
                }
            });
            if let Some(id) = seen {
                let kept = &pending[id as usize];
                if !agrees(kept, &record, unset) {
                    conflicts.push(Conflict::OwnerRecordsDisagree {
                        kept: kept.clone(),
                        dropped: record,
                    });
                    continue;
                }
                // A later record may bring the MAC the earlier ones lacked.
                if pending[id as usize].mac == unset
                    && let Some(m) = record.mac
                    && m.is_unicast()
                    && !m.is_zero()
                    && let Entry::Vacant(v) = macs.entry(m)
                {
                    v.insert(id);
                    pending[id as usize].mac = m;
                }
                // A later record may fill a family the first one lacked.
                for &ip in &record.ips {
                    let already = match ip {
                        IpAddr::V4(_) => pending[id as usize].v4.is_some(),
                        IpAddr::V6(_) => pending[id as usize].v6.is_some(),
                    };
                    if already {
                        continue;
                    }
                    let fam = state.family_mut(Family::of(ip));
                    match fam.used.entry(to_u128(ip)) {
                        Entry::Vacant(v) => {
                            v.insert(id);
                            let kept = &mut pending[id as usize];
                            match ip {
                                IpAddr::V4(a) => kept.v4 = Some(a),
                                IpAddr::V6(a) => kept.v6 = Some(a),
                            }
                        }
                        Entry::Occupied(o) => {
                            let holder = pending[*o.get() as usize].owner.clone();
                            conflicts.push(Conflict::IpClaimedTwice {
                                subnet: record.subnet.clone(),
                                ip,
                                kept: holder,
                                dropped: record.owner.clone(),
                                dropped_source: record.source,
                            });
                        }
                    }
                }
                continue;
            }

            let id = pending.len() as u32;
            let (mut v4, mut v6) = (None, None);
            let mut mac = unset;
            for &ip in &record.ips {
                let already = match ip {
                    IpAddr::V4(_) => v4.map(IpAddr::V4),
                    IpAddr::V6(_) => v6.map(IpAddr::V6),
                };
                if let Some(kept) = already {
                    if kept != ip {
                        conflicts.push(Conflict::TwoAddressesOfOneFamily {
                            owner: record.owner.clone(),
                            subnet: record.subnet.clone(),
                            kept,
                            dropped: ip,
                        });
                    }
                    continue;
                }
                let fam = state.family_mut(Family::of(ip));
                match fam.used.entry(to_u128(ip)) {
                    Entry::Vacant(v) => {
                        v.insert(id);
                        match ip {
                            IpAddr::V4(a) => v4 = Some(a),
                            IpAddr::V6(a) => v6 = Some(a),
                        }
                    }
                    Entry::Occupied(o) => {
                        let holder = pending[*o.get() as usize].owner.clone();
                        conflicts.push(Conflict::IpClaimedTwice {
                            subnet: record.subnet.clone(),
                            ip,
                            kept: holder,
                            dropped: record.owner.clone(),
                            dropped_source: record.source,
                        });
                    }
                }
            }
            if v4.is_none() && v6.is_none() {
                // Nothing left to hold: the controller allocates afresh for this owner.
                continue;
            }
            let todo = match record.mac {
                None => Some(MacTodo::Missing),
                Some(m) if !m.is_unicast() || m.is_zero() => {
                    conflicts.push(Conflict::BadMac {
                        owner: record.owner.clone(),
                        mac: m,
                        replacement: unset,
                    });
                    Some(MacTodo::Conflict(conflicts.len() - 1))
                }
                Some(m) => match macs.entry(m) {
                    Entry::Vacant(v) => {
                        v.insert(id);
                        mac = m;
                        None
                    }
                    Entry::Occupied(o) => {
                        conflicts.push(Conflict::MacClaimedTwice {
                            mac: m,
                            kept: pending[*o.get() as usize].owner.clone(),
                            dropped: record.owner.clone(),
                            replacement: unset,
                        });
                        Some(MacTodo::Conflict(conflicts.len() - 1))
                    }
                },
            };
            by_owner.link(owner_key, id);
            by_pod.link(pod_key, id);
            let alloc = Allocation {
                owner: record.owner,
                subnet: record.subnet,
                v4,
                v6,
                mac,
            };
            if let Some(todo) = todo {
                mac_todo.push((id, todo));
            }
            pending.push(alloc);
        }

        ipam.macs = macs;
        ipam.by_owner = by_owner;
        ipam.by_pod = by_pod;
        ipam.live = pending.len();
        for (id, todo) in mac_todo {
            // 2^40 candidates per owner: exhaustion is not a realistic outcome.
            let alloc = &pending[id as usize];
            let mac = if alloc.mac != unset {
                // Found in a later record of the same owner.
                alloc.mac
            } else {
                let mac = ipam.generate_mac(&alloc.owner).unwrap_or(unset);
                if mac != unset {
                    ipam.macs.insert(mac, id);
                }
                mac
            };
            if let MacTodo::Conflict(i) = todo {
                match &mut conflicts[i] {
                    Conflict::MacClaimedTwice { replacement, .. }
                    | Conflict::BadMac { replacement, .. } => *replacement = mac,
                    _ => {}
                }
            }
            pending[id as usize].mac = mac;
        }
        // Same layout, so this reuses the allocation instead of copying 100k entries.
        ipam.slots = pending.into_iter().map(Some).collect();
        for state in ipam.subnets.values_mut() {
            state.v4.recompute();
            state.v6.recompute();
        }
        conflicts.sort();
        conflicts.dedup();
        let misplaced = ipam.misplaced();
        Recovery {
            ipam,
            conflicts,
            misplaced,
            rejected,
        }
    }
}
