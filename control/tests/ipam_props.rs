//! Property tests: random operation sequences against a brute-force model of the IPAM.
//!
//! The model enumerates every address of small subnets, so "the lowest free address", "the
//! available count" and "forbidden" are computed independently of the interval sets.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ferrovn_control::ipam::{
    AddrRange, Allocation, AllocationRequest, ExistingAllocation, Family, IpPoolSpec, Ipam,
    IpamError, OwnerKey, RecordSource, SubnetSpec,
};
use proptest::prelude::*;

const SEED: u64 = 42;

fn to_u(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u(f: Family, x: u128) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(u32::try_from(x).unwrap().into()),
        Family::V6 => IpAddr::V6(x.into()),
    }
}

/// One family of a model subnet: base address, prefix, max prefix, gateway, exclusions.
#[derive(Clone, Debug)]
struct Fam {
    family: Family,
    base: u128,
    prefix: u8,
    max: u8,
    gw: Option<u128>,
    exclude: Vec<(u128, u128)>,
}

impl Fam {
    fn size(&self) -> u128 {
        1u128 << (self.max - self.prefix)
    }
    fn last(&self) -> u128 {
        self.base + self.size() - 1
    }
    fn inside(&self, x: u128) -> bool {
        x >= self.base && x <= self.last()
    }
    /// Network / broadcast / gateway.
    fn reserved(&self, x: u128) -> bool {
        let p2p = self.prefix + 1 >= self.max;
        (!p2p && x == self.base)
            || (!p2p && self.family == Family::V4 && x == self.last())
            || self.gw == Some(x)
    }
    fn excluded(&self, x: u128) -> bool {
        self.exclude.iter().any(|&(a, b)| a <= x && x <= b)
    }
    /// Would the subnet hand `x` out dynamically?
    fn allowed(&self, x: u128) -> bool {
        self.inside(x) && !self.reserved(x) && !self.excluded(x)
    }
}

#[derive(Clone, Debug)]
struct SubnetModel {
    name: &'static str,
    fams: Vec<Fam>,
}

impl SubnetModel {
    fn fam(&self, f: Family) -> Option<&Fam> {
        self.fams.iter().find(|x| x.family == f)
    }
    fn spec(&self) -> SubnetSpec {
        let mut s = SubnetSpec::new(self.name, None, None);
        for f in &self.fams {
            let ip = from_u(f.family, f.base);
            match ip {
                IpAddr::V4(a) => {
                    s.v4 = Some(ipnet::Ipv4Net::new(a, f.prefix).unwrap());
                    s.v4_gateway = f.gw.map(|g| u32::try_from(g).unwrap().into());
                }
                IpAddr::V6(a) => {
                    s.v6 = Some(ipnet::Ipv6Net::new(a, f.prefix).unwrap());
                    s.v6_gateway = f.gw.map(Into::into);
                }
            }
            for &(a, b) in &f.exclude {
                s.exclude
                    .push(AddrRange::new(from_u(f.family, a), from_u(f.family, b)));
            }
        }
        s
    }
}

fn fam(family: Family, base: &str, prefix: u8, gw: Option<&str>) -> Fam {
    let base = to_u(base.parse().unwrap());
    Fam {
        family,
        base,
        prefix,
        max: if family == Family::V4 { 32 } else { 128 },
        gw: gw.map(|g| to_u(g.parse().unwrap())),
        exclude: Vec::new(),
    }
}

fn world() -> Vec<SubnetModel> {
    vec![
        SubnetModel {
            name: "a",
            fams: vec![fam(Family::V4, "10.0.0.0", 27, Some("10.0.0.1"))],
        },
        SubnetModel {
            name: "b",
            fams: vec![fam(Family::V6, "fd00::", 123, Some("fd00::1f"))],
        },
        SubnetModel {
            name: "c",
            fams: vec![
                fam(Family::V4, "10.1.0.0", 29, Some("10.1.0.1")),
                fam(Family::V6, "fd01::", 125, None),
            ],
        },
    ]
}

/// Pools of subnet "a": (name, first, last, namespaces).
fn pools() -> Vec<IpPoolSpec> {
    let mk = |name: &str, r: &str, ns: &[&str]| IpPoolSpec {
        name: name.into(),
        subnet: "a".into(),
        addresses: vec![r.parse().unwrap()],
        namespaces: ns.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        mk("p", "10.0.0.8..10.0.0.11", &["team"]),
        mk("q", "10.0.0.20..10.0.0.21", &[]),
    ]
}

fn pool_range(name: &str) -> Option<(u128, u128)> {
    pools()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| (to_u(p.addresses[0].first), to_u(p.addresses[0].last)))
}

/// Which pool an address of subnet "a" is in ("" for none).
fn pool_of(subnet: &str, x: u128) -> &'static str {
    if subnet != "a" {
        return "";
    }
    for name in ["p", "q"] {
        if let Some((a, b)) = pool_range(name)
            && a <= x
            && x <= b
        {
            return name;
        }
    }
    ""
}

fn owner(i: u8) -> OwnerKey {
    let ns = if i.is_multiple_of(4) {
        "team"
    } else {
        "default"
    };
    OwnerKey::new(ns, format!("pod{i}"), "ovn")
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        owner: u8,
        subnet: usize,
        static_off: Option<u8>,
        pool: Option<u8>,
        /// `ip_pool` as an address list (offsets into the subnet's first family).
        candidates: Option<Vec<u8>>,
    },
    Release {
        owner: u8,
    },
    ReleasePod {
        owner: u8,
    },
    SetExclude {
        subnet: usize,
        start: u8,
        len: u8,
    },
    Rebuild {
        shuffle: u64,
        duplicate: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0u8..16,
            0usize..3,
            prop::option::weighted(0.25, 0u8..40),
            prop::option::weighted(0.25, 0u8..3),
            prop::option::weighted(0.2, prop::collection::vec(0u8..40, 1..5)),
        )
            .prop_map(|(owner, subnet, static_off, pool, candidates)| Op::Alloc {
                owner,
                subnet,
                static_off,
                pool,
                candidates,
            }),
        2 => (0u8..16).prop_map(|owner| Op::Release { owner }),
        1 => (0u8..16).prop_map(|owner| Op::ReleasePod { owner }),
        1 => (0usize..3, 0u8..34, 0u8..6).prop_map(|(subnet, start, len)| Op::SetExclude { subnet, start, len }),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(shuffle, duplicate)| Op::Rebuild { shuffle, duplicate }),
    ]
}

/// What the model says an allocation request must produce.
#[derive(Debug, PartialEq)]
enum Expect {
    Same,
    New(Vec<IpAddr>),
    Err(&'static str),
}

fn err_kind(e: &IpamError) -> &'static str {
    match e {
        IpamError::UnknownPool { .. } => "unknown-pool",
        IpamError::PoolNotForNamespace { .. } => "pool-ns",
        IpamError::StaticIpOutsideSubnet { .. } => "outside",
        IpamError::StaticIpForbidden { .. } => "forbidden",
        IpamError::StaticIpTaken { .. } => "taken",
        IpamError::SubnetExhausted { .. } => "exhausted",
        IpamError::PoolExhausted { .. } => "pool-exhausted",
        IpamError::NoFreeCandidate { .. } => "no-candidate",
        _ => "other",
    }
}

struct Model {
    subnets: Vec<SubnetModel>,
    held: BTreeMap<OwnerKey, Allocation>,
}

impl Model {
    fn subnet(&self, name: &str) -> &SubnetModel {
        self.subnets.iter().find(|s| s.name == name).unwrap()
    }

    fn held_by_others(&self, subnet: &str, me: &OwnerKey) -> HashSet<IpAddr> {
        self.held
            .values()
            .filter(|a| a.subnet == subnet && &a.owner != me)
            .flat_map(Allocation::ips)
            .collect()
    }

    fn predict(&self, req: &AllocationRequest) -> Expect {
        let sub = self.subnet(&req.subnet);
        let ns = req.owner.namespace.as_str();
        let mut req = req.clone();
        if !req.candidate_ips.is_empty() && req.static_ips.is_empty() {
            // Candidates are all of the subnet's first family here.
            let f = &sub.fams[0];
            let others = self.held_by_others(&req.subnet, &req.owner);
            let held = self
                .held
                .get(&req.owner)
                .filter(|a| a.subnet == req.subnet)
                .and_then(|a| a.ips().into_iter().find(|ip| Family::of(*ip) == f.family));
            let pick = match held {
                Some(h) if req.candidate_ips.contains(&h) => Some(h),
                _ => req.candidate_ips.iter().copied().find(|ip| {
                    let x = to_u(*ip);
                    f.inside(x) && !f.reserved(x) && !others.contains(ip)
                }),
            };
            match pick {
                Some(ip) => req.static_ips = vec![ip],
                None => return Expect::Err("no-candidate"),
            }
        }
        let req = &req;
        let pool: &str = match req.pool.as_deref() {
            Some(name) => {
                if req.subnet != "a" || pool_range(name).is_none() {
                    return Expect::Err("unknown-pool");
                }
                if name == "p" && ns != "team" {
                    return Expect::Err("pool-ns");
                }
                if name == "p" { "p" } else { "q" }
            }
            None if req.subnet == "a" && ns == "team" => "p",
            None => "",
        };
        let static_for = |f: Family| {
            req.static_ips
                .iter()
                .copied()
                .find(|ip| Family::of(*ip) == f)
        };
        if let Some(held) = self.held.get(&req.owner)
            && held.subnet == req.subnet
        {
            let same = held
                .ips()
                .iter()
                .all(|&ip| match static_for(Family::of(ip)) {
                    Some(w) => w == ip,
                    None => req.pool.is_none() || pool_of(&req.subnet, to_u(ip)) == pool,
                });
            if same {
                return Expect::Same;
            }
        }
        let others = self.held_by_others(&req.subnet, &req.owner);
        for f in &sub.fams {
            if let Some(ip) = static_for(f.family) {
                let x = to_u(ip);
                if !f.inside(x) {
                    return Expect::Err("outside");
                }
                if f.reserved(x) {
                    return Expect::Err("forbidden");
                }
                if others.contains(&ip) {
                    return Expect::Err("taken");
                }
            }
        }
        let mut out = Vec::new();
        for f in &sub.fams {
            if let Some(ip) = static_for(f.family) {
                out.push(ip);
                continue;
            }
            let pick = (f.base..=f.last()).find(|&x| {
                f.allowed(x)
                    && pool_of(&req.subnet, x) == pool
                    && !others.contains(&from_u(f.family, x))
            });
            match pick {
                Some(x) => out.push(from_u(f.family, x)),
                None if pool.is_empty() => return Expect::Err("exhausted"),
                None => return Expect::Err("pool-exhausted"),
            }
        }
        Expect::New(out)
    }

    fn misplaced(&self, subnet: Option<&str>) -> BTreeSet<(OwnerKey, IpAddr)> {
        let mut out = BTreeSet::new();
        for a in self.held.values() {
            if subnet.is_some_and(|s| s != a.subnet) {
                continue;
            }
            let sub = self.subnet(&a.subnet);
            for ip in a.ips() {
                if !sub.fam(Family::of(ip)).is_some_and(|f| f.allowed(to_u(ip))) {
                    out.insert((a.owner.clone(), ip));
                }
            }
        }
        out
    }

    fn check(&self, ipam: &Ipam) {
        assert_eq!(ipam.len(), self.held.len());
        for (o, a) in &self.held {
            assert_eq!(ipam.allocation(o), Some(a), "allocation of {o}");
        }
        let macs: HashSet<_> = self.held.values().map(|a| a.mac).collect();
        assert_eq!(macs.len(), self.held.len(), "duplicate MAC");
        assert!(self.held.values().all(|a| a.mac.is_unicast()));
        for sub in &self.subnets {
            let addrs: Vec<IpAddr> = self
                .held
                .values()
                .filter(|a| a.subnet == sub.name)
                .flat_map(Allocation::ips)
                .collect();
            let unique: HashSet<_> = addrs.iter().collect();
            assert_eq!(unique.len(), addrs.len(), "duplicate IP in {}", sub.name);
            let c = ipam.counts(sub.name).unwrap();
            for f in &sub.fams {
                let using = addrs
                    .iter()
                    .filter(|ip| Family::of(**ip) == f.family)
                    .count() as u128;
                let available = (f.base..=f.last())
                    .filter(|&x| f.allowed(x) && !unique.contains(&from_u(f.family, x)))
                    .count() as u128;
                let (got_avail, got_using) = match f.family {
                    Family::V4 => (c.v4_available, c.v4_using),
                    Family::V6 => (c.v6_available, c.v6_using),
                };
                assert_eq!(
                    (got_avail, got_using),
                    (available, using),
                    "counts of {} {:?}",
                    sub.name,
                    f.family
                );
            }
        }
        let a = self.subnet("a").fam(Family::V4).unwrap().clone();
        let held_a: HashSet<u128> = self
            .held
            .values()
            .filter(|x| x.subnet == "a")
            .flat_map(Allocation::ips)
            .map(to_u)
            .collect();
        for name in ["p", "q"] {
            let (lo, hi) = pool_range(name).unwrap();
            let c = ipam.pool_counts(name).unwrap();
            let using = (lo..=hi).filter(|x| held_a.contains(x)).count() as u128;
            let available = (lo..=hi)
                .filter(|&x| a.allowed(x) && !held_a.contains(&x))
                .count() as u128;
            assert_eq!(
                (c.v4_available, c.v4_using),
                (available, using),
                "pool {name}"
            );
        }
        let got: BTreeSet<_> = ipam
            .misplaced()
            .into_iter()
            .map(|m| (m.owner, m.ip))
            .collect();
        assert_eq!(got, self.misplaced(None));
    }
}

/// Deterministic shuffle (Fisher-Yates with a splitmix64 stream).
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

fn run(ops: Vec<Op>) {
    let mut model = Model {
        subnets: world(),
        held: BTreeMap::new(),
    };
    let mut ipam = Ipam::new(SEED);
    for s in &model.subnets {
        ipam.upsert_subnet(s.spec()).unwrap();
    }
    for p in pools() {
        ipam.upsert_pool(p).unwrap();
    }
    model.check(&ipam);
    for op in ops {
        match op {
            Op::Alloc {
                owner: o,
                subnet,
                static_off,
                pool,
                candidates,
            } => {
                let sub = &model.subnets[subnet];
                let mut req = AllocationRequest::dynamic(owner(o), sub.name);
                let f = &sub.fams[0];
                req.candidate_ips = candidates
                    .unwrap_or_default()
                    .into_iter()
                    .map(|off| from_u(f.family, f.base + u128::from(off)))
                    .collect();
                if let Some(off) = static_off {
                    let f = &sub.fams[0];
                    req.static_ips = vec![from_u(f.family, f.base + u128::from(off))];
                }
                req.pool = pool.map(|p| ["p", "q", "nope"][usize::from(p)].to_string());
                let expect = model.predict(&req);
                let before = model.held.get(&req.owner).cloned();
                let got = ipam.allocate(&req);
                match (&expect, &got) {
                    (Expect::Same, Ok(a)) => {
                        assert_eq!(Some(a), before.as_ref(), "same owner keeps its allocation")
                    }
                    (Expect::New(ips), Ok(a)) => {
                        assert_eq!(&a.ips(), ips, "{req:?}");
                        model.held.insert(req.owner.clone(), a.clone());
                    }
                    (Expect::Err(kind), Err(e)) => assert_eq!(*kind, err_kind(e), "{e}"),
                    _ => panic!("{req:?}: expected {expect:?}, got {got:?}"),
                }
            }
            Op::Release { owner: o } => {
                let got = ipam.release(&owner(o));
                assert_eq!(got, model.held.remove(&owner(o)));
            }
            Op::ReleasePod { owner: o } => {
                let key = owner(o);
                let got = ipam.release_pod(&key.namespace, &key.name);
                let expected: Vec<Allocation> = model.held.remove(&key).into_iter().collect();
                assert_eq!(got, expected);
            }
            Op::SetExclude { subnet, start, len } => {
                let sub = &mut model.subnets[subnet];
                let f = &mut sub.fams[0];
                f.exclude = if len == 0 {
                    Vec::new()
                } else {
                    let a = f.base + u128::from(start);
                    vec![(a, a + u128::from(len) - 1)]
                };
                let spec = sub.spec();
                let name = sub.name;
                let report = ipam.upsert_subnet(spec).unwrap();
                let got: BTreeSet<_> = report.into_iter().map(|m| (m.owner, m.ip)).collect();
                assert_eq!(got, model.misplaced(Some(name)));
            }
            Op::Rebuild {
                shuffle: seed,
                duplicate,
            } => {
                let mut records: Vec<ExistingAllocation> = ipam.export(RecordSource::PodAnnotation);
                if duplicate {
                    records.extend(ipam.export(RecordSource::IpObject));
                    records.extend(ipam.allocations().map(|a| ExistingAllocation {
                        mac: None,
                        ..a.to_record(RecordSource::NbPort)
                    }));
                }
                shuffle(&mut records, seed);
                let specs = model.subnets.iter().map(SubnetModel::spec).collect();
                let r = Ipam::rebuild(SEED, specs, pools(), records);
                assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
                assert!(r.rejected.is_empty(), "{:?}", r.rejected);
                assert_eq!(r.misplaced, ipam.misplaced());
                assert_eq!(
                    r.ipam.export(RecordSource::IpObject),
                    ipam.export(RecordSource::IpObject)
                );
                for s in &model.subnets {
                    assert_eq!(r.ipam.counts(s.name), ipam.counts(s.name));
                }
                ipam = r.ipam;
            }
        }
        model.check(&ipam);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}

/// Rebuild from conflicting records: whatever the input, the result holds no address or MAC
/// twice and is independent of the record order.
fn record() -> impl Strategy<Value = ExistingAllocation> {
    (0u8..12, 0u8..3, 0u8..12, prop::option::of(0u8..6), 0u8..3).prop_map(
        |(o, subnet, off, mac, source)| {
            let world = world();
            let sub = &world[usize::from(subnet)];
            let ips = sub
                .fams
                .iter()
                .map(|f| from_u(f.family, f.base + u128::from(off)))
                .collect();
            ExistingAllocation {
                owner: owner(o),
                subnet: sub.name.to_string(),
                ips,
                mac: mac.map(|m| ferrovn_api::MacAddr([0x0e, 0, 0, 0, 0, m])),
                source: [
                    RecordSource::IpObject,
                    RecordSource::PodAnnotation,
                    RecordSource::NbPort,
                ][usize::from(source)],
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rebuild_from_conflicting_records_is_consistent(
        records in prop::collection::vec(record(), 0..40),
        seed in any::<u64>(),
    ) {
        let specs: Vec<SubnetSpec> = world().iter().map(SubnetModel::spec).collect();
        let r1 = Ipam::rebuild(SEED, specs.clone(), pools(), records.clone());
        let mut shuffled = records.clone();
        shuffle(&mut shuffled, seed);
        let r2 = Ipam::rebuild(SEED, specs.clone(), pools(), shuffled);
        prop_assert_eq!(&r1.conflicts, &r2.conflicts);
        prop_assert_eq!(r1.ipam.export(RecordSource::IpObject), r2.ipam.export(RecordSource::IpObject));

        let all: Vec<&Allocation> = r1.ipam.allocations().collect();
        let macs: HashSet<_> = all.iter().map(|a| a.mac).collect();
        prop_assert_eq!(macs.len(), all.len());
        let mut seen = HashSet::new();
        for a in &all {
            for ip in a.ips() {
                prop_assert!(seen.insert((a.subnet.clone(), ip)), "{} held twice", ip);
            }
        }
        // Every owner with a record either holds something or lost every address to a conflict.
        let owners: HashSet<&OwnerKey> = records.iter().map(|r| &r.owner).collect();
        prop_assert!(all.iter().all(|a| owners.contains(&a.owner)));
        // Rebuilding the rebuilt state is a fixed point.
        let again = Ipam::rebuild(SEED, specs, pools(), r1.ipam.export(RecordSource::PodAnnotation));
        prop_assert!(again.conflicts.is_empty());
        prop_assert_eq!(again.ipam.export(RecordSource::IpObject), r1.ipam.export(RecordSource::IpObject));
    }
}
