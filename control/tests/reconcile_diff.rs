//! The pure diff: minimal changes, ownership, conflicts, convergence after partial applies.
//! An in-memory model of OVSDB (roots, child sets, garbage collection of unreferenced
//! children) plays the NB.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ferrovn_api::MacAddr;
use ferrovn_control::plan::{NbPlan, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::{
    ActualRow, Change, Conflict, NbSnapshot, Table, desired_rows, diff, to_transactions,
};
use ferrovn_ovsdb::{Atom, ColumnValues, Datum, DatumValue, Operation, Uuid};
use proptest::prelude::*;

struct Nb {
    snap: NbSnapshot,
    next: u128,
}

impl Nb {
    fn new() -> Self {
        Nb {
            snap: NbSnapshot::default(),
            next: 1 << 64,
        }
    }

    fn uuid(&mut self) -> Uuid {
        self.next += 1;
        Uuid::from_u128(self.next)
    }

    fn rows_mut(&mut self, t: Table) -> &mut Vec<ActualRow> {
        self.snap.tables.entry(t).or_default()
    }

    fn row_mut(&mut self, t: Table, u: Uuid) -> Option<&mut ActualRow> {
        self.rows_mut(t).iter_mut().find(|r| r.uuid == u)
    }

    fn set_edit(&mut self, t: Table, parent: Uuid, column: &str, child: Uuid, add: bool) {
        if let Some(p) = self.row_mut(t, parent) {
            let mut set: BTreeSet<Uuid> = p
                .columns
                .get(column)
                .and_then(Datum::as_atoms)
                .map(|a| a.iter().filter_map(Atom::as_uuid).collect())
                .unwrap_or_default();
            if add {
                set.insert(child);
            } else {
                set.remove(&child);
            }
            p.columns.insert(
                column.to_string(),
                Datum::set(set.into_iter().map(Atom::Uuid)),
            );
        }
    }

    fn gc(&mut self) {
        // Children of children (a router port's Gateway_Chassis rows) go with their parent:
        // collect until nothing more goes.
        loop {
            let mut referenced = BTreeSet::new();
            for t in Table::ALL
                .into_iter()
                .filter(|t| !t.child_columns().is_empty())
            {
                for r in self.snap.rows(t) {
                    for c in t.child_columns() {
                        if let Some(a) = r.columns.get(*c).and_then(Datum::as_atoms) {
                            referenced.extend(a.iter().filter_map(Atom::as_uuid));
                        }
                    }
                }
            }
            let before = self.snap.len();
            // Load_Balancer is a root of the schema (only weakly referenced): never collected.
            for t in Table::ALL
                .iter()
                .filter(|t| !t.is_root() && **t != Table::LoadBalancer)
            {
                self.rows_mut(*t).retain(|r| referenced.contains(&r.uuid));
            }
            if self.snap.len() == before {
                break;
            }
        }
        // Weak references to collected ports go with them (a port group's ports).
        let ports: BTreeSet<Uuid> = self
            .snap
            .rows(Table::LogicalSwitchPort)
            .iter()
            .map(|r| r.uuid)
            .collect();
        for g in self.rows_mut(Table::PortGroup).clone() {
            let held: Vec<Uuid> = g
                .columns
                .get("ports")
                .and_then(Datum::as_atoms)
                .map(|a| a.iter().filter_map(Atom::as_uuid).collect())
                .unwrap_or_default();
            for u in held.into_iter().filter(|u| !ports.contains(u)) {
                self.set_edit(Table::PortGroup, g.uuid, "ports", u, false);
            }
        }
    }

    /// Applies changes as ovsdb-server would (one transaction per call).
    fn apply(&mut self, changes: &[Change]) {
        for ch in changes {
            match ch.clone() {
                Change::Insert {
                    table,
                    uuid,
                    mut columns,
                    parent,
                    ..
                } => {
                    let u = uuid.unwrap_or_else(|| self.uuid());
                    for c in table.child_columns() {
                        columns.insert((*c).to_string(), Datum::empty_set());
                    }
                    self.rows_mut(table).push(ActualRow { uuid: u, columns });
                    if let Some(p) = parent {
                        self.set_edit(p.table, p.uuid, p.column, u, true);
                    }
                }
                Change::Update {
                    table,
                    uuid,
                    columns,
                    detach_from,
                    attach_to,
                    ..
                } => {
                    if let Some(r) = self.row_mut(table, uuid) {
                        r.columns.extend(columns);
                    }
                    for p in detach_from {
                        self.set_edit(p.table, p.uuid, p.column, uuid, false);
                    }
                    if let Some(p) = attach_to {
                        self.set_edit(p.table, p.uuid, p.column, uuid, true);
                    }
                }
                Change::Detach { uuid, parents, .. } => {
                    for p in parents {
                        self.set_edit(p.table, p.uuid, p.column, uuid, false);
                    }
                }
                Change::Delete { table, uuid, .. } => {
                    self.rows_mut(table).retain(|r| r.uuid != uuid);
                    // Weak references (a group's load balancers) go with the row.
                    for g in self.rows_mut(Table::LoadBalancerGroup).clone() {
                        self.set_edit(
                            Table::LoadBalancerGroup,
                            g.uuid,
                            "load_balancer",
                            uuid,
                            false,
                        );
                    }
                }
                Change::Link {
                    table,
                    uuid,
                    column,
                    add,
                    remove,
                    ..
                } => {
                    for u in remove {
                        self.set_edit(table, uuid, column, u, false);
                    }
                    for u in add {
                        self.set_edit(table, uuid, column, u, true);
                    }
                }
            }
        }
        self.gc();
    }

    fn diff(&mut self, p: &NbPlan) -> ferrovn_control::reconcile::Diff {
        let rows = desired_rows(p);
        let mut n = self.next + (1 << 32);
        let d = diff(&rows, &self.snap, &mut || {
            n += 1;
            Uuid::from_u128(n)
        });
        self.next = n;
        d
    }

    /// A row created by someone else (e.g. ovn-nbctl), optionally inside a parent's set.
    fn foreign(&mut self, t: Table, name: &str, parent: Option<(Table, Uuid, &str)>) -> Uuid {
        let u = self.uuid();
        let mut columns = ColumnValues::new();
        columns.insert("name".into(), name.to_string().to_datum());
        for c in t.child_columns() {
            columns.insert((*c).to_string(), Datum::empty_set());
        }
        self.rows_mut(t).push(ActualRow { uuid: u, columns });
        if let Some((pt, pu, col)) = parent {
            self.set_edit(pt, pu, col, u, true);
        }
        u
    }

    fn find(&self, t: Table, name: &str) -> Option<&ActualRow> {
        self.snap.rows(t).iter().find(|r| {
            r.columns
                .get("name")
                .and_then(Datum::as_atom)
                .and_then(Atom::as_str)
                == Some(name)
        })
    }
}

fn mac(k: usize) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, (k >> 8) as u8, k as u8])
}

fn cluster(pods: &[(usize, u8)], private: bool, nodes: usize) -> NbPlan {
    let mut d = common::default_vpc_with_join();
    common::add_numbered_subnets(&mut d, 3, private);
    for (k, (subnet, host)) in pods.iter().enumerate() {
        let subnet = subnet % 3;
        d.ports.push(PortIntent {
            pod: format!("p{k}"),
            namespace: "ns".into(),
            provider: "ovn".into(),
            subnet: format!("s{subnet}"),
            node: "n1".into(),
            mac: mac(k),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, subnet as u8 + 1, 0, *host))],
            port_security: k % 2 == 0,
        });
    }
    for n in 0..nodes {
        d.nodes.push(NodeIntent {
            name: format!("node{n}"),
            join_ips: vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, n as u8 + 2))],
            join_mac: Some(MacAddr([0x0e, 9, 0, 0, 0, n as u8])),
            internal_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, n as u8 + 2))],
        });
    }
    plan(&d)
}

#[test]
fn empty_nb_gets_everything_inserted_then_nothing() {
    let p = cluster(&[(0, 5), (1, 6)], true, 1);
    let mut nb = Nb::new();
    let d = nb.diff(&p);
    let (ins, upd, rem) = d.counts();
    assert_eq!((ins, upd, rem), (p.row_count(), 0, 0));
    assert!(d.conflicts.is_empty());
    nb.apply(&d.changes);
    assert!(nb.diff(&p).is_empty(), "second pass must be empty");
    assert_eq!(nb.snap.len(), p.row_count());
}

#[test]
fn transactions_insert_children_by_named_uuid_and_mutate_parents_once() {
    let p = cluster(&[(0, 5), (0, 6), (0, 7)], false, 0);
    let mut nb = Nb::new();
    let d = nb.diff(&p);
    let txns = to_transactions(&d, "OVN_Northbound", 10_000);
    assert_eq!(txns.len(), 1);
    let ops = &txns[0].operations;
    let inserts = ops
        .iter()
        .filter(|o| matches!(o, Operation::Insert { .. }))
        .count();
    let mutates: Vec<&Operation> = ops
        .iter()
        .filter(|o| matches!(o, Operation::Mutate { .. }))
        .collect();
    assert_eq!(inserts, p.row_count());
    // one mutate per parent row (4 switches + 1 router), however many children
    assert_eq!(mutates.len(), 5);
    let json = serde_json::to_string(&txns[0]).unwrap();
    assert!(json.contains("\"uuid-name\""), "{json}");
    assert!(json.contains("named-uuid"));
    // no whole-set writes of ports: only insert mutations
    assert!(!json.contains("\"op\":\"update\""));
}

#[test]
fn batches_are_bounded_and_each_stands_alone() {
    let pods: Vec<(usize, u8)> = (0..50).map(|k| (k % 3, 10 + k as u8)).collect();
    let p = cluster(&pods, false, 3);
    let mut nb = Nb::new();
    let d = nb.diff(&p);
    let txns = to_transactions(&d, "OVN_Northbound", 7);
    assert_eq!(txns.len(), d.changes.len().div_ceil(7));
    for t in &txns {
        let json = serde_json::to_string(t).unwrap();
        // every named-uuid referenced is defined in the same transaction
        for (i, _) in json.match_indices("[\"named-uuid\",\"") {
            let rest = &json[i + 15..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                json.contains(&format!("\"uuid-name\":\"{name}\"")),
                "{name} not defined in its transaction"
            );
        }
    }
}

#[test]
fn changed_pod_updates_only_changed_columns() {
    let mut nb = Nb::new();
    let p1 = cluster(&[(0, 5)], false, 0);
    let d = nb.diff(&p1);
    nb.apply(&d.changes);
    // same pod, new address
    let p2 = cluster(&[(0, 9)], false, 0);
    let d = nb.diff(&p2);
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    match &d.changes[0] {
        Change::Update {
            table,
            columns,
            detach_from,
            attach_to,
            ..
        } => {
            assert_eq!(*table, Table::LogicalSwitchPort);
            let cols: BTreeSet<&str> = columns.keys().map(String::as_str).collect();
            assert_eq!(cols, BTreeSet::from(["addresses", "port_security"]));
            assert!(detach_from.is_empty() && attach_to.is_none());
        }
        other => panic!("expected an update, got {other:?}"),
    }
    nb.apply(&d.changes);
    assert!(nb.diff(&p2).is_empty());
}

#[test]
fn pod_moving_subnet_moves_its_port() {
    let mut nb = Nb::new();
    let d = nb.diff(&cluster(&[(0, 5)], false, 0));
    nb.apply(&d.changes);
    let p2 = cluster(&[(1, 5)], false, 0);
    let d = nb.diff(&p2);
    assert!(
        d.changes.iter().any(|c| matches!(c, Change::Update { detach_from, attach_to: Some(_), .. } if detach_from.len() == 1)),
        "{:#?}",
        d.changes
    );
    nb.apply(&d.changes);
    assert!(nb.diff(&p2).is_empty());
    let s0 = nb.find(Table::LogicalSwitch, "s0").unwrap();
    let s1 = nb.find(Table::LogicalSwitch, "s1").unwrap();
    let port = nb.find(Table::LogicalSwitchPort, "p0.ns").unwrap().uuid;
    let has = |r: &ActualRow| {
        r.columns["ports"]
            .as_atoms()
            .unwrap()
            .iter()
            .any(|a| a.as_uuid() == Some(port))
    };
    assert!(!has(s0) && has(s1));
}

/// `p` plus an egress gateway router whose external port is a gateway port on `chassis`.
fn with_gateway_port(mut p: NbPlan, chassis: &str) -> NbPlan {
    use ferrovn_control::plan::{
        PlannedGatewayChassis, PlannedRouter, PlannedRouterPort, owned_ids,
    };
    let port = PlannedRouterPort {
        name: "gw-x-ext".into(),
        mac: "0e:00:00:00:00:99".into(),
        networks: vec!["203.0.113.101/24".into()],
        external_ids: owned_ids("lrp/gw-x-ext", &[]),
        gateway_chassis: vec![PlannedGatewayChassis {
            name: format!("gw-x-ext-{chassis}"),
            chassis_name: chassis.into(),
            priority: 1,
            external_ids: owned_ids("gwc/gw-x-ext", &[]),
        }],
    };
    p.routers.insert(
        "gw-x".into(),
        PlannedRouter {
            name: "gw-x".into(),
            options: [("ct-commit-all".to_string(), "true".to_string())].into(),
            external_ids: owned_ids("lr/gw-x", &[]),
            nat: Default::default(),
            ports: [("gw-x-ext".to_string(), port)].into(),
            static_routes: Default::default(),
            policies: Default::default(),
            lb_groups: Default::default(),
        },
    );
    p
}

#[test]
fn gateway_chassis_rows_come_and_go_with_their_router_port() {
    let base = cluster(&[(0, 5)], false, 0);
    let p = with_gateway_port(base.clone(), "ch-a");
    // in one transaction or one change per transaction: the port before its gateway chassis
    for batch in [10_000, 1] {
        let mut nb = Nb::new();
        let d = nb.diff(&p);
        assert_eq!(d.counts(), (p.row_count(), 0, 0));
        let at = |t: Table| d.changes.iter().position(|c| c.table() == t).unwrap();
        assert!(at(Table::LogicalRouterPort) < at(Table::GatewayChassis));
        // the new port's UUID is chosen here, so its child can name it in any batch
        let port_uuid = d.changes.iter().find_map(|c| match c {
            Change::Insert {
                table: Table::LogicalRouterPort,
                key,
                uuid,
                ..
            } if key == "lrp/gw-x-ext" => *uuid,
            _ => None,
        });
        let gwc_parent = d.changes.iter().find_map(|c| match c {
            Change::Insert {
                table: Table::GatewayChassis,
                parent,
                ..
            } => *parent,
            _ => None,
        });
        assert_eq!(
            gwc_parent.map(|p| (p.table, p.uuid, p.column)),
            port_uuid.map(|u| (Table::LogicalRouterPort, u, "gateway_chassis"))
        );
        assert!(!to_transactions(&d, "OVN_Northbound", batch).is_empty());
        nb.apply(&d.changes);
        assert_eq!(nb.snap.rows(Table::GatewayChassis).len(), 1);
        assert!(nb.diff(&p).is_empty(), "converged");
    }

    let mut nb = Nb::new();
    let d = nb.diff(&p);
    nb.apply(&d.changes);
    let gwc = nb.snap.rows(Table::GatewayChassis)[0].uuid;
    // another chassis: the row is updated in place
    let moved = with_gateway_port(base.clone(), "ch-b");
    let d = nb.diff(&moved);
    assert_eq!(d.changes.len(), 1, "{:?}", d.changes);
    assert!(
        matches!(&d.changes[0], Change::Update { table: Table::GatewayChassis, uuid, .. } if *uuid == gwc)
    );
    nb.apply(&d.changes);
    assert!(nb.diff(&moved).is_empty());
    // the router goes: its port is detached and the gateway chassis goes with the port (no
    // mutation of a port the same pass removes)
    let d = nb.diff(&base);
    assert!(
        d.changes.iter().all(|c| c.table() != Table::GatewayChassis),
        "{:?}",
        d.changes
    );
    nb.apply(&d.changes);
    assert!(nb.snap.rows(Table::GatewayChassis).is_empty());
    assert!(nb.snap.rows(Table::LogicalRouterPort).iter().all(|r| {
        r.columns
            .get("name")
            .and_then(Datum::as_atom)
            .and_then(Atom::as_str)
            != Some("gw-x-ext")
    }));
    assert!(nb.diff(&base).is_empty());
}

#[test]
fn removed_pod_is_detached_and_collected() {
    let mut nb = Nb::new();
    let d = nb.diff(&cluster(&[(0, 5), (0, 6)], false, 0));
    nb.apply(&d.changes);
    let p2 = cluster(&[(0, 5)], false, 0);
    let d = nb.diff(&p2);
    assert_eq!(d.changes.len(), 1);
    assert!(matches!(&d.changes[0], Change::Detach { key, .. } if key == "lsp/p1.ns"));
    nb.apply(&d.changes);
    assert!(nb.find(Table::LogicalSwitchPort, "p1.ns").is_none());
    assert!(nb.diff(&p2).is_empty());
}

#[test]
fn foreign_rows_survive_and_are_never_changed() {
    let mut nb = Nb::new();
    let p = cluster(&[(0, 5)], true, 0);
    let d = nb.diff(&p);
    nb.apply(&d.changes);
    let s0 = nb.find(Table::LogicalSwitch, "s0").unwrap().uuid;
    // a port someone added to our switch, and a switch of their own
    let fport = nb.foreign(
        Table::LogicalSwitchPort,
        "manual-port",
        Some((Table::LogicalSwitch, s0, "ports")),
    );
    let fls = nb.foreign(Table::LogicalSwitch, "manual-ls", None);
    assert!(
        nb.diff(&p).is_empty(),
        "foreign rows must not cause changes"
    );
    // the whole plan goes away: our rows are removed, theirs stay, and s0 (holding a foreign
    // port) is kept and reported
    let d = nb.diff(&NbPlan::default());
    assert!(
        d.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::HoldsForeignRows { key, .. } if key == "ls/s0"))
    );
    for ch in &d.changes {
        let uuid = match ch {
            Change::Update { uuid, .. }
            | Change::Detach { uuid, .. }
            | Change::Delete { uuid, .. }
            | Change::Link { uuid, .. } => *uuid,
            Change::Insert { .. } => panic!("insert while deleting"),
        };
        assert!(uuid != fport && uuid != fls);
    }
    nb.apply(&d.changes);
    assert!(nb.find(Table::LogicalSwitchPort, "manual-port").is_some());
    assert!(nb.find(Table::LogicalSwitch, "manual-ls").is_some());
    assert!(nb.find(Table::LogicalSwitch, "s2").is_none());
    assert!(nb.find(Table::LogicalRouter, "ovn-cluster").is_none());
    assert!(nb.find(Table::LogicalSwitchPort, "p0.ns").is_none());
}

#[test]
fn name_taken_by_a_foreign_row_is_a_conflict_not_a_duplicate() {
    let mut nb = Nb::new();
    nb.foreign(Table::LogicalSwitch, "s1", None);
    nb.foreign(Table::LogicalSwitchPort, "p0.ns", None);
    let p = cluster(&[(0, 5), (1, 6)], false, 0);
    let d = nb.diff(&p);
    let conflicts: Vec<String> = d.conflicts.iter().map(ToString::to_string).collect();
    assert_eq!(d.conflicts.len(), 2, "{conflicts:?}");
    // nothing of switch s1 is created (its ports would have no parent), nor p0.ns; the
    // router keeps its own port towards s1
    for ch in &d.changes {
        assert!(
            ch.key().starts_with("lrp/") || !ch.key().contains("s1"),
            "{}",
            ch.key()
        );
        assert_ne!(ch.key(), "lsp/p0.ns");
    }
}

#[test]
fn duplicate_owned_rows_are_reduced_to_one() {
    let mut nb = Nb::new();
    let p = cluster(&[], false, 0);
    let d = nb.diff(&p);
    nb.apply(&d.changes);
    // a second copy of our router (e.g. two controllers raced)
    let copy = nb
        .find(Table::LogicalRouter, "ovn-cluster")
        .unwrap()
        .clone();
    let mut copy2 = copy.clone();
    copy2.uuid = Uuid::from_u128(copy.uuid.as_u128() + 1);
    for c in Table::LogicalRouter.child_columns() {
        copy2.columns.insert((*c).to_string(), Datum::empty_set());
    }
    nb.rows_mut(Table::LogicalRouter).push(copy2);
    let d = nb.diff(&p);
    assert_eq!(d.changes.len(), 1);
    assert!(matches!(
        &d.changes[0],
        Change::Delete {
            table: Table::LogicalRouter,
            ..
        }
    ));
    nb.apply(&d.changes);
    assert!(nb.diff(&p).is_empty());
}

fn pods_strategy() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((0usize..3, 2u8..250), 0..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// From any state (A applied, maybe only partly), planning B converges in one pass and
    /// the pass after is empty; foreign rows stay.
    #[test]
    fn converges_from_any_partial_state(
        a in pods_strategy(), b in pods_strategy(),
        pa in any::<bool>(), pb in any::<bool>(),
        na in 0usize..3, nb_nodes in 0usize..3,
        cut in 0usize..400, batch in 1usize..20,
    ) {
        let plan_a = cluster(&a, pa, na);
        let plan_b = cluster(&b, pb, nb_nodes);
        let mut nb = Nb::new();
        let d = nb.diff(&plan_a);
        nb.apply(&d.changes);
        let s0 = nb.find(Table::LogicalSwitch, "s0").map(|r| r.uuid);
        let foreign = s0.map(|s| nb.foreign(Table::LogicalSwitchPort, "manual", Some((Table::LogicalSwitch, s, "ports"))));

        // crash in the middle of applying B: only some whole batches made it
        let d = nb.diff(&plan_b);
        let batches: Vec<&[Change]> = d.changes.chunks(batch).collect();
        for chunk in batches.iter().take(cut % (batches.len() + 1)) {
            nb.apply(chunk);
        }
        let d = nb.diff(&plan_b);
        nb.apply(&d.changes);
        let again = nb.diff(&plan_b);
        prop_assert!(again.is_empty(), "not converged: {:#?}", again.changes);
        if let Some(f) = foreign {
            prop_assert!(nb.snap.rows(Table::LogicalSwitchPort).iter().any(|r| r.uuid == f));
        }
        // owned rows == planned rows
        let owned = Table::ALL.iter().flat_map(|t| nb.snap.rows(*t).iter().map(move |r| (*t, r))).filter(|(t, r)| r.owned_key_in(*t).is_some()).count();
        prop_assert_eq!(owned, plan_b.row_count());
    }
}
