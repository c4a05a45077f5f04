//! Recovery after a restart: the IPAM rebuilt from the allocations found in the cluster.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::allocator::Ipam;
use super::error::IpamError;
use super::family::to_u128;
use super::types::{
    Allocation, Conflict, ExistingAllocation, Family, IpPoolSpec, Mac, Misplaced, SubnetSpec,
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

/// Processing order: source precedence first, then the record itself, so the result does not
/// depend on the order the records were listed in.
fn precedence(a: &ExistingAllocation, b: &ExistingAllocation) -> Ordering {
    a.source
        .cmp(&b.source)
        .then_with(|| a.owner.cmp(&b.owner))
        .then_with(|| a.subnet.cmp(&b.subnet))
        .then_with(|| a.ips.cmp(&b.ips))
        .then_with(|| a.mac.cmp(&b.mac))
}

fn agrees(kept: &Allocation, record: &ExistingAllocation) -> bool {
    if kept.subnet != record.subnet {
        return false;
    }
    if let Some(m) = record.mac
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
    /// the higher precedence (source, then owner) wins and the other is reported.
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

        records.sort_unstable_by(precedence);
        records.dedup();

        let mut conflicts: Vec<Conflict> = Vec::new();
        let mut pending: Vec<(Allocation, Option<MacTodo>)> = Vec::with_capacity(records.len());
        let mut by_owner: HashMap<_, u32> = HashMap::with_capacity(records.len());
        let mut macs: HashMap<Mac, u32> = HashMap::with_capacity(records.len());
        // A placeholder until the real MAC is chosen; never stored as a claim.
        let unset = Mac([0; 6]);

        for record in records {
            let Some(state) = ipam.subnets.get_mut(&record.subnet) else {
                conflicts.push(Conflict::UnknownSubnet {
                    owner: record.owner,
                    subnet: record.subnet,
                });
                continue;
            };
            if let Some(&id) = by_owner.get(&record.owner) {
                let kept = &pending[id as usize].0;
                if !agrees(kept, &record) {
                    conflicts.push(Conflict::OwnerRecordsDisagree {
                        kept: kept.clone(),
                        dropped: record,
                    });
                    continue;
                }
                // A later record may fill a family the first one lacked.
                for &ip in &record.ips {
                    let already = match ip {
                        IpAddr::V4(_) => pending[id as usize].0.v4.is_some(),
                        IpAddr::V6(_) => pending[id as usize].0.v6.is_some(),
                    };
                    if already {
                        continue;
                    }
                    let fam = state.family_mut(Family::of(ip));
                    match fam.used.entry(to_u128(ip)) {
                        Entry::Vacant(v) => {
                            v.insert(id);
                            let kept = &mut pending[id as usize].0;
                            match ip {
                                IpAddr::V4(a) => kept.v4 = Some(a),
                                IpAddr::V6(a) => kept.v6 = Some(a),
                            }
                        }
                        Entry::Occupied(o) => {
                            let holder = pending[*o.get() as usize].0.owner.clone();
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
            let mut alloc = Allocation {
                owner: record.owner.clone(),
                subnet: record.subnet.clone(),
                v4: None,
                v6: None,
                mac: unset,
            };
            for &ip in &record.ips {
                let already = match ip {
                    IpAddr::V4(_) => alloc.v4.map(IpAddr::V4),
                    IpAddr::V6(_) => alloc.v6.map(IpAddr::V6),
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
                            IpAddr::V4(a) => alloc.v4 = Some(a),
                            IpAddr::V6(a) => alloc.v6 = Some(a),
                        }
                    }
                    Entry::Occupied(o) => {
                        let holder = pending[*o.get() as usize].0.owner.clone();
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
            if alloc.v4.is_none() && alloc.v6.is_none() {
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
                        alloc.mac = m;
                        None
                    }
                    Entry::Occupied(o) => {
                        conflicts.push(Conflict::MacClaimedTwice {
                            mac: m,
                            kept: pending[*o.get() as usize].0.owner.clone(),
                            dropped: record.owner.clone(),
                            replacement: unset,
                        });
                        Some(MacTodo::Conflict(conflicts.len() - 1))
                    }
                },
            };
            by_owner.insert(record.owner, id);
            pending.push((alloc, todo));
        }

        ipam.macs = macs;
        ipam.by_owner = by_owner;
        let mut slots = Vec::with_capacity(pending.len());
        for (id, (mut alloc, todo)) in pending.into_iter().enumerate() {
            if let Some(todo) = todo {
                // 2^40 candidates per owner; exhaustion is not a realistic outcome, and the
                // fallback (the last candidate) is still checked below.
                let mac = ipam.generate_mac(&alloc.owner).unwrap_or(unset);
                if let MacTodo::Conflict(i) = todo {
                    match &mut conflicts[i] {
                        Conflict::MacClaimedTwice { replacement, .. }
                        | Conflict::BadMac { replacement, .. } => *replacement = mac,
                        _ => {}
                    }
                }
                alloc.mac = mac;
                if mac != unset {
                    ipam.macs.insert(mac, id as u32);
                }
            }
            slots.push(Some(alloc));
        }
        ipam.slots = slots;
        for state in ipam.subnets.values_mut() {
            state.v4.recompute();
            state.v6.recompute();
        }
        conflicts.sort();
        let misplaced = ipam.misplaced();
        Recovery {
            ipam,
            conflicts,
            misplaced,
            rejected,
        }
    }
}
