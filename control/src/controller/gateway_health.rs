//! Liveness of the centralized gateway nodes, measured through OVN itself.
//!
//! A gateway node is useful while its `ovn-controller` runs: it binds the node's join port and
//! programs the datapath that takes the rerouted egress. So the probe asks OVN's own heartbeat:
//! every probe the controller bumps `NB_Global.nb_cfg`; northd copies it to `SB_Global.nb_cfg`;
//! every live `ovn-controller` writes the value it has caught up to into its
//! `Chassis_Private.nb_cfg`. A node is alive while
//!
//! - its join port `node-<node>` is bound (`Port_Binding.chassis` set), and
//! - that chassis' `Chassis_Private.nb_cfg` advanced within `dead_after`.
//!
//! Kube-OVN follows Node `Ready` instead (minutes after a power loss) or pings from the
//! controller (ECMP only). A blind probe must not fail anything over: when `SB_Global.nb_cfg`
//! itself stops advancing (northd down, SB or NB unreachable) the answer is "unknown" and the
//! planner keeps its choice. Clocks are the controller's own monotonic clock only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrovn_ovsdb::{
    Atom, Client, ClientOptions, ColumnValues, Datum, Mutator, OpResult, Operation, Transaction,
    Uuid,
};

/// The last value seen of a counter and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    value: i64,
    changed: Instant,
}

impl Seen {
    fn update(slot: &mut Option<Seen>, value: i64, now: Instant) {
        match slot {
            Some(s) if s.value == value => {}
            _ => {
                *slot = Some(Seen {
                    value,
                    changed: now,
                })
            }
        }
    }
}

/// The pure core: what one probe read, turned into who lives.
#[derive(Debug, Clone)]
pub struct HealthCore {
    dead_after: Duration,
    sb_global: Option<Seen>,
    chassis: BTreeMap<Uuid, Option<Seen>>,
    /// When the last observation came (a long pause restarts the clocks: no bumps were sent).
    last: Option<Instant>,
}

/// One probe's reading of the SB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub sb_global_nb_cfg: i64,
    /// `Chassis_Private`: the chassis (uuid of its `Chassis` row) and its `nb_cfg`.
    pub chassis_nb_cfg: Vec<(Uuid, i64)>,
    /// Node → the chassis its join port is bound to (`None`: not bound, or no such port).
    pub bound: BTreeMap<String, Option<Uuid>>,
}

impl HealthCore {
    pub fn new(dead_after: Duration) -> Self {
        HealthCore {
            dead_after,
            sb_global: None,
            chassis: BTreeMap::new(),
            last: None,
        }
    }

    /// Feeds one reading; returns the live nodes among `reading.bound`, or `None` when the
    /// probe cannot tell (see the module doc).
    pub fn observe(&mut self, reading: &Reading, now: Instant) -> Option<BTreeSet<String>> {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) > self.dead_after * 2)
        {
            self.sb_global = None;
            self.chassis.clear();
        }
        self.last = Some(now);
        Seen::update(&mut self.sb_global, reading.sb_global_nb_cfg, now);
        let present: BTreeSet<Uuid> = reading.chassis_nb_cfg.iter().map(|(u, _)| *u).collect();
        self.chassis.retain(|u, _| present.contains(u));
        for (u, cfg) in &reading.chassis_nb_cfg {
            Seen::update(self.chassis.entry(*u).or_default(), *cfg, now);
        }
        let fresh = |s: &Option<Seen>| {
            s.is_some_and(|s| now.saturating_duration_since(s.changed) <= self.dead_after)
        };
        if !fresh(&self.sb_global) {
            return None;
        }
        Some(
            reading
                .bound
                .iter()
                .filter(|(_, c)| c.is_some_and(|c| self.chassis.get(&c).is_some_and(fresh)))
                .map(|(n, _)| n.clone())
                .collect(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("gateway probe: {0}")]
    Ovsdb(String),
}

fn err(e: impl std::fmt::Display) -> HealthError {
    HealthError::Ovsdb(e.to_string())
}

/// The probe: bumps the NB, reads the SB.
pub struct GatewayHealth {
    nb: Client,
    sb: Client,
    core: HealthCore,
}

impl std::fmt::Debug for GatewayHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHealth")
            .field("core", &self.core)
            .finish()
    }
}

fn first_uuid(d: Option<&Datum>) -> Option<Uuid> {
    d?.as_atoms()?.first()?.as_uuid()
}

fn integer(d: Option<&Datum>) -> i64 {
    d.and_then(Datum::as_atom)
        .and_then(Atom::as_integer)
        .unwrap_or(0)
}

fn rows(r: Option<&OpResult>) -> &[ColumnValues] {
    r.and_then(OpResult::rows).unwrap_or(&[])
}

impl GatewayHealth {
    /// `nb`: the controller's NB client (for the bump); `sb`: the SB remote.
    pub async fn connect(nb: Client, sb: &str, dead_after: Duration) -> Result<Self, HealthError> {
        let sb = Client::connect(sb, "OVN_Southbound", ClientOptions::default())
            .await
            .map_err(err)?;
        Ok(GatewayHealth {
            nb,
            sb,
            core: HealthCore::new(dead_after),
        })
    }

    /// One probe for the gateway `nodes`: the live ones, or `None` when unknown.
    pub async fn probe(&mut self, nodes: &BTreeSet<String>) -> Option<BTreeSet<String>> {
        match self.read(nodes).await {
            Ok(r) => self.core.observe(&r, Instant::now()),
            Err(e) => {
                tracing::warn!("{e}; gateway liveness unknown");
                None
            }
        }
    }

    async fn read(&self, nodes: &BTreeSet<String>) -> Result<Reading, HealthError> {
        let bump = Transaction::new("OVN_Northbound")
            .with(Operation::mutate("NB_Global").mutation("nb_cfg", Mutator::Add, 1i64));
        self.nb.transact(&bump).await.map_err(err)?;
        let mut t = Transaction::new("OVN_Southbound");
        t.push(Operation::select("SB_Global").columns(["nb_cfg"]));
        t.push(Operation::select("Chassis_Private").columns(["_uuid", "chassis", "nb_cfg"]));
        for n in nodes {
            t.push(
                Operation::select("Port_Binding")
                    .where_eq(
                        "logical_port",
                        ferrovn_api::names::join_port_name(n).as_str(),
                    )
                    .columns(["chassis"]),
            );
        }
        let res = self.sb.transact(&t).await.map_err(err)?;
        let mut reading = Reading {
            sb_global_nb_cfg: rows(res.first())
                .first()
                .map_or(0, |r| integer(r.get("nb_cfg"))),
            ..Reading::default()
        };
        for r in rows(res.get(1)) {
            if let Some(c) = first_uuid(r.get("chassis")) {
                reading.chassis_nb_cfg.push((c, integer(r.get("nb_cfg"))));
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let bound = rows(res.get(2 + i))
                .first()
                .and_then(|r| first_uuid(r.get("chassis")));
            reading.bound.insert(n.clone(), bound);
        }
        Ok(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(i: u128) -> Uuid {
        Uuid::from_u128(i)
    }

    fn reading(global: i64, chassis: &[(u128, i64)], bound: &[(&str, Option<u128>)]) -> Reading {
        Reading {
            sb_global_nb_cfg: global,
            chassis_nb_cfg: chassis.iter().map(|(c, v)| (u(*c), *v)).collect(),
            bound: bound
                .iter()
                .map(|(n, c)| (n.to_string(), c.map(u)))
                .collect(),
        }
    }

    fn set(v: &[&str]) -> Option<BTreeSet<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_chassis_that_stops_answering_dies_after_the_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = HealthCore::new(Duration::from_secs(3));
        let b = [("a", Some(1)), ("b", Some(2)), ("c", None)];
        assert_eq!(
            h.observe(&reading(1, &[(1, 1), (2, 1)], &b), t0),
            set(&["a", "b"])
        );
        // a stops at 2
        for i in 2..=4 {
            let r = reading(i, &[(1, 2), (2, i)], &b);
            assert_eq!(
                h.observe(&r, t0 + s * (i as u32 - 1)),
                set(&["a", "b"]),
                "{i}"
            );
        }
        let r = reading(6, &[(1, 2), (2, 6)], &b);
        assert_eq!(h.observe(&r, t0 + s * 5), set(&["b"]));
        // a's chassis answers again
        let r = reading(7, &[(1, 7), (2, 7)], &b);
        assert_eq!(h.observe(&r, t0 + s * 6), set(&["a", "b"]));
        // unbound or its Chassis_Private gone: dead at once
        let r = reading(8, &[(2, 8)], &[("a", Some(1)), ("b", None)]);
        assert_eq!(h.observe(&r, t0 + s * 7), set(&[]));
    }

    #[test]
    fn a_stuck_probe_is_blind_not_a_failover() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = HealthCore::new(Duration::from_secs(3));
        let b = [("a", Some(1))];
        assert!(h.observe(&reading(5, &[(1, 5)], &b), t0).is_some());
        // northd stopped: SB_Global and every chassis freeze
        assert!(h.observe(&reading(5, &[(1, 5)], &b), t0 + s * 2).is_some());
        assert_eq!(h.observe(&reading(5, &[(1, 5)], &b), t0 + s * 4), None);
        // after a long pause (no probes sent) the clocks restart instead of declaring deaths
        let r = reading(5, &[(1, 5)], &b);
        assert_eq!(h.observe(&r, t0 + s * 60), set(&["a"]));
    }
}
