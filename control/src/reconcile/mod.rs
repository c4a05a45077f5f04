//! The reconciler: planned rows ([`crate::plan::NbPlan`]) against the rows the NB holds
//! ([`NbSnapshot`], read from a `ferrovn-ovsdb` replica), giving the minimal changes
//! ([`diff`]) and the batched OVSDB transactions that make them ([`to_transactions`]).
//!
//! Rules:
//! - a row is FerrOVN's only if its `external_ids` carry [`OWNER_KEY`]`=`[`OWNER_VALUE`]; it is
//!   matched to a planned row by [`ROW_KEY`]. Other rows are never updated or deleted, and
//!   parent sets (`ports`, `acls`, ...) are only ever changed by `insert`/`delete` mutations
//!   naming our own children, so foreign children of our switches survive;
//! - an insert of a child is an `insert` with a named UUID plus a `mutate` of its parent's set,
//!   in one transaction; new roots get a UUID chosen here so later batches can refer to them;
//! - an update sends only the columns that differ;
//! - a planned row whose name a foreign row already uses is not created (OVN indexes port
//!   names; a second switch of one name confuses every tool): it is reported as a conflict.
//!
//! Every transaction leaves the NB consistent, so a crash between batches is repaired by the
//! next pass: the diff of a converged NB is empty.

mod apply;
mod scoped;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferrovn_ovsdb::{
    Atom, ColumnValues, Condition, Datum, DatumValue, Mutator, Operation, Transaction, Uuid,
};

use crate::plan::{NbPlan, OWNER_KEY, OWNER_VALUE, ROW_KEY, StrMap};

pub use apply::{ApplyError, ApplyReport, NbSync, apply, monitor_spec, snapshot};
pub use scoped::{
    FULL_DIFF_EVERY, IncrementalSync, PolicyScope, SyncMode, SyncTimes, policy_scope, scoped_diff,
};

/// The NB tables FerrOVN writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    LogicalSwitch,
    LogicalSwitchPort,
    Acl,
    LogicalRouter,
    LogicalRouterPort,
    StaticRoute,
    Policy,
    LoadBalancerGroup,
    LoadBalancer,
    LoadBalancerHealthCheck,
    ChassisTemplateVar,
    PortGroup,
    AddressSet,
    Nat,
    GatewayChassis,
}

impl Table {
    pub const ALL: [Table; 15] = [
        Table::LogicalSwitch,
        Table::LogicalSwitchPort,
        Table::Acl,
        Table::LogicalRouter,
        Table::LogicalRouterPort,
        Table::StaticRoute,
        Table::Policy,
        Table::LoadBalancerGroup,
        Table::LoadBalancer,
        Table::LoadBalancerHealthCheck,
        Table::ChassisTemplateVar,
        Table::PortGroup,
        Table::AddressSet,
        Table::Nat,
        Table::GatewayChassis,
    ];

    /// The OVSDB table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::LogicalSwitch => "Logical_Switch",
            Table::LogicalSwitchPort => "Logical_Switch_Port",
            Table::Acl => "ACL",
            Table::LogicalRouter => "Logical_Router",
            Table::LogicalRouterPort => "Logical_Router_Port",
            Table::StaticRoute => "Logical_Router_Static_Route",
            Table::Policy => "Logical_Router_Policy",
            Table::LoadBalancerGroup => "Load_Balancer_Group",
            Table::LoadBalancer => "Load_Balancer",
            Table::LoadBalancerHealthCheck => "Load_Balancer_Health_Check",
            Table::ChassisTemplateVar => "Chassis_Template_Var",
            Table::PortGroup => "Port_Group",
            Table::AddressSet => "Address_Set",
            Table::Nat => "NAT",
            Table::GatewayChassis => "Gateway_Chassis",
        }
    }

    /// Tables planned as roots (inserted first, with a UUID chosen here, deleted last).
    pub fn is_root(self) -> bool {
        matches!(
            self,
            Table::LogicalSwitch
                | Table::LogicalRouter
                | Table::LoadBalancerGroup
                | Table::ChassisTemplateVar
                | Table::PortGroup
                | Table::AddressSet
        )
    }

    /// Children that OVSDB does not collect when their parent lets go (a root table of the
    /// schema, referenced weakly): removed with an explicit delete instead of a detach.
    /// Load balancers: a group's `load_balancer` set holds weak references, so the delete
    /// also drops the reference.
    fn deleted_explicitly(self) -> bool {
        matches!(self, Table::LoadBalancer)
    }

    /// Reference sets of a root that point at other FerrOVN roots: (column, target table).
    /// Only FerrOVN's own targets are inserted or deleted in them; foreign ones stay.
    pub fn link_columns(self) -> &'static [(&'static str, Table)] {
        match self {
            Table::LogicalSwitch | Table::LogicalRouter => {
                &[("load_balancer_group", Table::LoadBalancerGroup)]
            }
            // Weak references to (FerrOVN's) pod ports.
            Table::PortGroup => &[("ports", Table::LogicalSwitchPort)],
            _ => &[],
        }
    }

    /// The columns FerrOVN sets (and compares). Others (northd's `up`, `dynamic_addresses`,
    /// a user's extra options on a foreign row) are never touched.
    pub fn managed_columns(self) -> &'static [&'static str] {
        match self {
            Table::LogicalSwitch => &["name", "other_config", "external_ids"],
            Table::LogicalSwitchPort => &[
                "name",
                "type",
                "addresses",
                "port_security",
                "options",
                "tag",
                "external_ids",
            ],
            Table::Acl => &[
                "direction",
                "priority",
                "tier",
                "match",
                "action",
                "log",
                "severity",
                "name",
                "options",
                "external_ids",
            ],
            // `options`: `ct-commit-all` of the egress gateway routers; VPC routers have none
            Table::LogicalRouter => &["name", "options", "external_ids"],
            Table::LogicalRouterPort => &["name", "mac", "networks", "external_ids"],
            Table::StaticRoute => &[
                "ip_prefix",
                "nexthop",
                "policy",
                "route_table",
                "external_ids",
            ],
            Table::Policy => &["priority", "match", "action", "nexthops", "external_ids"],
            Table::LoadBalancerGroup => &["name"],
            Table::LoadBalancer => &[
                "name",
                "vips",
                "protocol",
                "options",
                "ip_port_mappings",
                "external_ids",
            ],
            Table::LoadBalancerHealthCheck => &["vip", "options", "external_ids"],
            Table::ChassisTemplateVar => &["chassis", "variables", "external_ids"],
            Table::PortGroup => &["name", "external_ids"],
            Table::AddressSet => &["name", "addresses", "external_ids"],
            Table::Nat => &["type", "logical_ip", "external_ip", "external_ids"],
            Table::GatewayChassis => &["name", "chassis_name", "priority", "external_ids"],
        }
    }

    /// The parent relations of a child table: (parent table, column of the parent). An ACL
    /// belongs to a switch (subnet ACLs) or to a port group (NetworkPolicy).
    pub fn parents(self) -> &'static [(Table, &'static str)] {
        match self {
            Table::LogicalSwitchPort => &[(Table::LogicalSwitch, "ports")],
            Table::Acl => &[(Table::LogicalSwitch, "acls"), (Table::PortGroup, "acls")],
            Table::LogicalRouterPort => &[(Table::LogicalRouter, "ports")],
            Table::StaticRoute => &[(Table::LogicalRouter, "static_routes")],
            Table::Policy => &[(Table::LogicalRouter, "policies")],
            Table::Nat => &[(Table::LogicalRouter, "nat")],
            Table::GatewayChassis => &[(Table::LogicalRouterPort, "gateway_chassis")],
            Table::LoadBalancer => &[(Table::LoadBalancerGroup, "load_balancer")],
            // A grandchild: the load balancer is itself a child of its group.
            Table::LoadBalancerHealthCheck => &[(Table::LoadBalancer, "health_check")],
            _ => &[],
        }
    }

    /// The column of `parent` that holds rows of this table.
    pub fn parent_column(self, parent: Table) -> Option<&'static str> {
        self.parents()
            .iter()
            .find(|(t, _)| *t == parent)
            .map(|(_, c)| *c)
    }

    /// Child set columns of a root table, and of the child tables with children of their own
    /// (a router port's Gateway_Chassis rows, a load balancer's health checks).
    pub fn child_columns(self) -> &'static [&'static str] {
        match self {
            Table::LogicalSwitch => &["ports", "acls"],
            Table::LogicalRouter => &["ports", "static_routes", "policies", "nat"],
            Table::LogicalRouterPort => &["gateway_chassis"],
            Table::LoadBalancerGroup => &["load_balancer"],
            Table::LoadBalancer => &["health_check"],
            Table::PortGroup => &["acls"],
            _ => &[],
        }
    }

    /// Tables whose `name` must not collide with a foreign row's.
    fn named(self) -> bool {
        matches!(
            self,
            Table::LogicalSwitch
                | Table::LogicalSwitchPort
                | Table::LogicalRouter
                | Table::LogicalRouterPort
                | Table::LoadBalancerGroup
                | Table::PortGroup
                | Table::AddressSet
                | Table::GatewayChassis
        )
    }

    /// Every column a replica must follow for the diff.
    pub fn monitored_columns(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.managed_columns().to_vec();
        v.extend_from_slice(self.child_columns());
        v.extend(self.link_columns().iter().map(|(c, _)| *c));
        if !v.contains(&"name") && self.named() {
            v.push("name");
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Desired rows

/// One planned row, flattened: its table, identity, column values and parent identity.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRow {
    pub table: Table,
    pub key: String,
    pub name: Option<String>,
    pub columns: ColumnValues,
    pub parent: Option<String>,
    /// The table of `parent` (one of [`Table::parents`]).
    pub parent_table: Option<Table>,
    /// For roots: the FerrOVN rows its link columns must reference (column, target key).
    pub links: Vec<(&'static str, String)>,
}

fn s(v: &str) -> Datum {
    v.to_string().to_datum()
}

fn set<'a>(v: impl IntoIterator<Item = &'a String>) -> Datum {
    Datum::set(v.into_iter().map(String::as_str))
}

fn map(m: &StrMap) -> Datum {
    Datum::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn key_of(ids: &StrMap) -> String {
    ids.get(ROW_KEY).cloned().unwrap_or_default()
}

/// Flattens a plan into rows in a stable order: link targets (load balancer groups) before the
/// roots that reference them, parents before children.
pub fn desired_rows(plan: &NbPlan) -> Vec<DesiredRow> {
    let mut out = Vec::with_capacity(plan.row_count());
    for v in plan.chassis_vars.values() {
        let mut c = ColumnValues::new();
        c.insert("chassis".into(), s(&v.chassis));
        c.insert("variables".into(), map(&v.variables));
        c.insert("external_ids".into(), map(&v.external_ids));
        out.push(DesiredRow {
            table: Table::ChassisTemplateVar,
            key: key_of(&v.external_ids),
            name: None,
            columns: c,
            parent: None,
            parent_table: None,
            links: Vec::new(),
        });
    }
    // Port name → row identity, for port groups' links.
    let port_keys: HashMap<&str, &str> = plan
        .switches
        .values()
        .flat_map(|s| s.ports.values())
        .filter_map(|p| Some((p.name.as_str(), p.external_ids.get(ROW_KEY)?.as_str())))
        .collect();
    for g in plan.lb_groups.values() {
        let mut c = ColumnValues::new();
        c.insert("name".into(), s(&g.name));
        out.push(DesiredRow {
            table: Table::LoadBalancerGroup,
            key: g.name.clone(),
            name: Some(g.name.clone()),
            columns: c,
            parent: None,
            parent_table: None,
            links: Vec::new(),
        });
        for lb in g.load_balancers.values() {
            let mut c = ColumnValues::new();
            c.insert("name".into(), s(&lb.name));
            c.insert("vips".into(), map(&lb.vips));
            c.insert("protocol".into(), Datum::set(Some(lb.protocol.ovn())));
            c.insert("options".into(), map(&lb.options));
            c.insert("ip_port_mappings".into(), map(&lb.ip_port_mappings));
            c.insert("external_ids".into(), map(&lb.external_ids));
            let lb_key = key_of(&lb.external_ids);
            out.push(DesiredRow {
                table: Table::LoadBalancer,
                key: lb_key.clone(),
                name: None,
                columns: c,
                parent: Some(g.name.clone()),
                parent_table: Some(Table::LoadBalancerGroup),
                links: Vec::new(),
            });
            for hc in lb.health_checks.values() {
                let mut c = ColumnValues::new();
                c.insert("vip".into(), s(&hc.vip));
                c.insert("options".into(), map(&hc.options));
                c.insert("external_ids".into(), map(&hc.external_ids));
                out.push(DesiredRow {
                    table: Table::LoadBalancerHealthCheck,
                    key: key_of(&hc.external_ids),
                    name: None,
                    columns: c,
                    parent: Some(lb_key.clone()),
                    parent_table: Some(Table::LoadBalancer),
                    links: Vec::new(),
                });
            }
        }
    }
    for sw in plan.switches.values() {
        let key = key_of(&sw.external_ids);
        let mut c = ColumnValues::new();
        c.insert("name".into(), s(&sw.name));
        c.insert("other_config".into(), map(&sw.other_config));
        c.insert("external_ids".into(), map(&sw.external_ids));
        out.push(DesiredRow {
            table: Table::LogicalSwitch,
            key: key.clone(),
            name: Some(sw.name.clone()),
            columns: c,
            parent: None,
            parent_table: None,
            links: sw
                .lb_groups
                .iter()
                .map(|g| ("load_balancer_group", g.clone()))
                .collect(),
        });
        for p in sw.ports.values() {
            let mut c = ColumnValues::new();
            c.insert("name".into(), s(&p.name));
            c.insert("type".into(), s(&p.type_));
            c.insert("addresses".into(), set(&p.addresses));
            c.insert("port_security".into(), set(&p.port_security));
            c.insert("options".into(), map(&p.options));
            c.insert("tag".into(), Datum::set(p.tag));
            c.insert("external_ids".into(), map(&p.external_ids));
            out.push(DesiredRow {
                table: Table::LogicalSwitchPort,
                key: key_of(&p.external_ids),
                name: Some(p.name.clone()),
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalSwitch),
                links: Vec::new(),
            });
        }
        for a in sw.acls.values() {
            let mut c = ColumnValues::new();
            c.insert("direction".into(), s(&a.direction));
            c.insert("priority".into(), a.priority.to_datum());
            c.insert("tier".into(), a.tier.to_datum());
            c.insert("match".into(), s(&a.match_));
            c.insert("action".into(), s(&a.action));
            c.insert("log".into(), a.log.to_datum());
            c.insert("severity".into(), set(&a.severity));
            c.insert("name".into(), set(&a.name));
            c.insert("options".into(), Datum::empty_map());
            c.insert("external_ids".into(), map(&a.external_ids));
            out.push(DesiredRow {
                table: Table::Acl,
                key: key_of(&a.external_ids),
                name: None,
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalSwitch),
                links: Vec::new(),
            });
        }
    }
    for r in plan.routers.values() {
        let key = key_of(&r.external_ids);
        let mut c = ColumnValues::new();
        c.insert("name".into(), s(&r.name));
        c.insert("options".into(), map(&r.options));
        c.insert("external_ids".into(), map(&r.external_ids));
        out.push(DesiredRow {
            table: Table::LogicalRouter,
            key: key.clone(),
            name: Some(r.name.clone()),
            columns: c,
            parent: None,
            parent_table: None,
            links: r
                .lb_groups
                .iter()
                .map(|g| ("load_balancer_group", g.clone()))
                .collect(),
        });
        for p in r.ports.values() {
            let mut c = ColumnValues::new();
            c.insert("name".into(), s(&p.name));
            c.insert("mac".into(), s(&p.mac));
            c.insert("networks".into(), set(&p.networks));
            c.insert("external_ids".into(), map(&p.external_ids));
            let port_key = key_of(&p.external_ids);
            out.push(DesiredRow {
                table: Table::LogicalRouterPort,
                key: port_key.clone(),
                name: Some(p.name.clone()),
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalRouter),
                links: Vec::new(),
            });
            for g in &p.gateway_chassis {
                let mut c = ColumnValues::new();
                c.insert("name".into(), s(&g.name));
                c.insert("chassis_name".into(), s(&g.chassis_name));
                c.insert("priority".into(), g.priority.to_datum());
                c.insert("external_ids".into(), map(&g.external_ids));
                out.push(DesiredRow {
                    table: Table::GatewayChassis,
                    key: key_of(&g.external_ids),
                    name: Some(g.name.clone()),
                    columns: c,
                    parent: Some(port_key.clone()),
                    parent_table: Some(Table::LogicalRouterPort),
                    links: Vec::new(),
                });
            }
        }
        for rt in r.static_routes.values() {
            let mut c = ColumnValues::new();
            c.insert("ip_prefix".into(), s(&rt.ip_prefix));
            c.insert("nexthop".into(), s(&rt.nexthop));
            c.insert("policy".into(), set(&rt.policy));
            c.insert("route_table".into(), s(&rt.route_table));
            c.insert("external_ids".into(), map(&rt.external_ids));
            out.push(DesiredRow {
                table: Table::StaticRoute,
                key: key_of(&rt.external_ids),
                name: None,
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalRouter),
                links: Vec::new(),
            });
        }
        for n in r.nat.values() {
            let mut c = ColumnValues::new();
            c.insert("type".into(), s(&n.type_));
            c.insert("logical_ip".into(), s(&n.logical_ip));
            c.insert("external_ip".into(), s(&n.external_ip));
            c.insert("external_ids".into(), map(&n.external_ids));
            out.push(DesiredRow {
                table: Table::Nat,
                key: key_of(&n.external_ids),
                name: None,
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalRouter),
                links: Vec::new(),
            });
        }
        for p in r.policies.values() {
            let mut c = ColumnValues::new();
            c.insert("priority".into(), p.priority.to_datum());
            c.insert("match".into(), s(&p.match_));
            c.insert("action".into(), s(&p.action));
            c.insert("nexthops".into(), set(&p.nexthops));
            c.insert("external_ids".into(), map(&p.external_ids));
            out.push(DesiredRow {
                table: Table::Policy,
                key: key_of(&p.external_ids),
                name: None,
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::LogicalRouter),
                links: Vec::new(),
            });
        }
    }
    // NetworkPolicy: address sets (referenced by name from ACL matches only), then port groups
    // (their `ports` link to pod ports, set once those exist) with their ACLs.
    for a in plan.address_sets.values() {
        let mut c = ColumnValues::new();
        c.insert("name".into(), s(&a.name));
        c.insert("addresses".into(), set(&a.addresses));
        c.insert("external_ids".into(), map(&a.external_ids));
        out.push(DesiredRow {
            table: Table::AddressSet,
            key: key_of(&a.external_ids),
            name: Some(a.name.clone()),
            columns: c,
            parent: None,
            parent_table: None,
            links: Vec::new(),
        });
    }
    for pg in plan.port_groups.values() {
        let key = key_of(&pg.external_ids);
        let mut c = ColumnValues::new();
        c.insert("name".into(), s(&pg.name));
        c.insert("external_ids".into(), map(&pg.external_ids));
        out.push(DesiredRow {
            table: Table::PortGroup,
            key: key.clone(),
            name: Some(pg.name.clone()),
            columns: c,
            parent: None,
            parent_table: None,
            links: pg
                .ports
                .iter()
                .filter_map(|p| port_keys.get(p.as_str()))
                .map(|k| ("ports", (*k).to_string()))
                .collect(),
        });
        for a in pg.acls.values() {
            let mut c = ColumnValues::new();
            c.insert("direction".into(), s(&a.direction));
            c.insert("priority".into(), a.priority.to_datum());
            c.insert("tier".into(), a.tier.to_datum());
            c.insert("match".into(), s(&a.match_));
            c.insert("action".into(), s(&a.action));
            c.insert("log".into(), false.to_datum());
            c.insert("severity".into(), Datum::empty_set());
            c.insert("name".into(), set(&a.name));
            c.insert("options".into(), map(&a.options));
            c.insert("external_ids".into(), map(&a.external_ids));
            out.push(DesiredRow {
                table: Table::Acl,
                key: key_of(&a.external_ids),
                name: None,
                columns: c,
                parent: Some(key.clone()),
                parent_table: Some(Table::PortGroup),
                links: Vec::new(),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Actual rows

/// A row as the NB holds it (only the monitored columns).
#[derive(Debug, Clone, PartialEq)]
pub struct ActualRow {
    pub uuid: Uuid,
    pub columns: ColumnValues,
}

impl ActualRow {
    fn external_id(&self, key: &str) -> Option<&str> {
        self.columns
            .get("external_ids")?
            .as_map()?
            .get_str(key)?
            .as_str()
    }

    /// The row's identity if FerrOVN owns it.
    pub fn owned_key(&self) -> Option<&str> {
        (self.external_id(OWNER_KEY) == Some(OWNER_VALUE))
            .then(|| self.external_id(ROW_KEY))
            .flatten()
    }

    /// The row's identity in `table` if FerrOVN owns it. Load_Balancer_Group has no
    /// `external_ids`: there the reserved name prefix is the mark and the name the identity.
    pub fn owned_key_in(&self, table: Table) -> Option<&str> {
        if table == Table::LoadBalancerGroup {
            return self
                .name()
                .filter(|n| n.starts_with(ferrovn_api::names::LB_GROUP_PREFIX));
        }
        self.owned_key()
    }

    fn name(&self) -> Option<&str> {
        self.columns.get("name")?.as_atom()?.as_str()
    }

    fn uuids(&self, column: &str) -> Vec<Uuid> {
        self.columns
            .get(column)
            .and_then(Datum::as_atoms)
            .map(|a| a.iter().filter_map(Atom::as_uuid).collect())
            .unwrap_or_default()
    }
}

/// The NB rows of the tables FerrOVN writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NbSnapshot {
    pub tables: BTreeMap<Table, Vec<ActualRow>>,
}

impl NbSnapshot {
    pub fn rows(&self, table: Table) -> &[ActualRow] {
        self.tables.get(&table).map_or(&[], Vec::as_slice)
    }

    /// Total rows.
    pub fn len(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Diff

/// A reference from a parent row's set column to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParentRef {
    pub table: Table,
    pub uuid: Uuid,
    pub column: &'static str,
}

/// One change to the NB.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new row. Roots carry the UUID chosen for them; children the parent set to join, and
    /// a chosen UUID too when a root links to them (a pod port in a port group).
    Insert {
        table: Table,
        key: String,
        uuid: Option<Uuid>,
        columns: ColumnValues,
        parent: Option<ParentRef>,
    },
    /// Changed columns of an owned row, and/or a move to another parent.
    Update {
        table: Table,
        key: String,
        uuid: Uuid,
        columns: ColumnValues,
        detach_from: Vec<ParentRef>,
        attach_to: Option<ParentRef>,
    },
    /// An owned child no longer planned: removed from its parents' sets (OVSDB then deletes
    /// it, as nothing references it any more).
    Detach {
        table: Table,
        key: String,
        uuid: Uuid,
        parents: Vec<ParentRef>,
    },
    /// An owned root no longer planned.
    Delete {
        table: Table,
        key: String,
        uuid: Uuid,
    },
    /// References of a root's link column to FerrOVN rows added and removed (a switch's
    /// `load_balancer_group`); references to foreign rows are left alone.
    Link {
        table: Table,
        key: String,
        uuid: Uuid,
        column: &'static str,
        add: Vec<Uuid>,
        remove: Vec<Uuid>,
    },
}

impl Change {
    pub fn table(&self) -> Table {
        match self {
            Change::Insert { table, .. }
            | Change::Update { table, .. }
            | Change::Detach { table, .. }
            | Change::Delete { table, .. }
            | Change::Link { table, .. } => *table,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Change::Insert { key, .. }
            | Change::Update { key, .. }
            | Change::Detach { key, .. }
            | Change::Delete { key, .. }
            | Change::Link { key, .. } => key,
        }
    }

    fn phase(&self) -> u8 {
        match self {
            Change::Insert { parent: None, .. } => 0,
            Change::Insert { .. } => 1,
            Change::Update { .. } | Change::Link { .. } => 2,
            Change::Detach { .. } => 3,
            Change::Delete { .. } => 4,
        }
    }
}

/// A planned row the reconciler left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Conflict {
    #[error(
        "{table}: cannot create {name:?} (key {key}): a row not owned by FerrOVN has that name"
    )]
    NameTaken {
        table: &'static str,
        name: String,
        key: String,
    },
    #[error("{table} {key}: not deleted: it still holds rows FerrOVN does not own")]
    HoldsForeignRows { table: &'static str, key: String },
    #[error("{table} {key}: not deleted: rows FerrOVN does not own still reference it")]
    ReferencedByForeignRows { table: &'static str, key: String },
}

/// The changes that take the NB from `actual` to `desired`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// In apply order: root inserts, child inserts, updates, detaches, root deletes.
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Number of changes of each kind: (inserts, updates, detaches + deletes).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in &self.changes {
            match ch {
                Change::Insert { .. } => c.0 += 1,
                Change::Update { .. } | Change::Link { .. } => c.1 += 1,
                _ => c.2 += 1,
            }
        }
        c
    }
}

/// Whether a column value equals the column's default (what a missing column means).
fn is_default(d: &Datum) -> bool {
    match d {
        Datum::Scalar(a) => match a {
            Atom::String(s) => s.is_empty(),
            Atom::Integer(i) => *i == 0,
            Atom::Boolean(b) => !*b,
            Atom::Real(r) => *r == 0.0,
            _ => false,
        },
        _ => d.is_empty(),
    }
}

fn same(want: &Datum, have: Option<&Datum>) -> bool {
    match have {
        Some(h) => h == want,
        None => is_default(want),
    }
}

/// Computes the minimal changes. `new_uuid` gives the UUID of each new root (pass
/// [`Uuid::new_v4`]; tests pass a counter).
pub fn diff(
    desired: &[DesiredRow],
    actual: &NbSnapshot,
    new_uuid: &mut dyn FnMut() -> Uuid,
) -> Diff {
    let mut out = Diff::default();

    // Owned rows by (table, key); duplicates beyond the lowest UUID are surplus.
    let mut owned: HashMap<(Table, &str), &ActualRow> = HashMap::new();
    let mut surplus: Vec<(Table, &ActualRow)> = Vec::new();
    // Foreign names, for conflict detection.
    let mut foreign_names: HashSet<(Table, &str)> = HashSet::new();
    for table in Table::ALL {
        let mut rows: Vec<&ActualRow> = actual.rows(table).iter().collect();
        rows.sort_by_key(|r| r.uuid);
        for r in rows {
            match r.owned_key_in(table) {
                Some(k) => match owned.entry((table, k)) {
                    std::collections::hash_map::Entry::Occupied(_) => surplus.push((table, r)),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(r);
                    }
                },
                None => {
                    if table.named()
                        && let Some(n) = r.name()
                    {
                        foreign_names.insert((table, n));
                    }
                }
            }
        }
    }

    // Child UUID → the parents (of the relation it belongs to) that reference it.
    let mut parents_of: HashMap<Uuid, Vec<ParentRef>> = HashMap::new();
    for table in Table::ALL
        .into_iter()
        .filter(|t| !t.child_columns().is_empty())
    {
        for r in actual.rows(table) {
            for column in table.child_columns() {
                for child in r.uuids(column) {
                    parents_of.entry(child).or_default().push(ParentRef {
                        table,
                        uuid: r.uuid,
                        column,
                    });
                }
            }
        }
    }
    // Which child UUIDs exist in which child table (a parent's `ports` column holds both
    // LSPs and, for routers, LRPs: the relation is decided by the child's table).
    let relation_parents = |table: Table, uuid: Uuid| -> Vec<ParentRef> {
        let relations = table.parents();
        let mut v: Vec<ParentRef> = parents_of
            .get(&uuid)
            .map(|v| {
                v.iter()
                    .filter(|p| relations.contains(&(p.table, p.column)))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    // Roots first: their UUIDs (existing or new) are what children attach to.
    let mut root_uuid: HashMap<(Table, &str), Uuid> = HashMap::new();
    let mut wanted: BTreeSet<(Table, &str)> = BTreeSet::new();
    for row in desired {
        wanted.insert((row.table, row.key.as_str()));
    }
    for row in desired.iter().filter(|r| r.parent.is_none()) {
        match owned.get(&(row.table, row.key.as_str())) {
            Some(have) => {
                root_uuid.insert((row.table, row.key.as_str()), have.uuid);
                let columns = changed_columns(row, have);
                if !columns.is_empty() {
                    out.changes.push(Change::Update {
                        table: row.table,
                        key: row.key.clone(),
                        uuid: have.uuid,
                        columns,
                        detach_from: Vec::new(),
                        attach_to: None,
                    });
                }
            }
            None => {
                if let Some(name) = &row.name
                    && foreign_names.contains(&(row.table, name.as_str()))
                {
                    out.conflicts.push(Conflict::NameTaken {
                        table: row.table.name(),
                        name: name.clone(),
                        key: row.key.clone(),
                    });
                    continue;
                }
                let uuid = new_uuid();
                root_uuid.insert((row.table, row.key.as_str()), uuid);
                // A new root carries its links to other roots in the insert (link targets are
                // planned, and inserted, before the rows that reference them). Links to
                // children (a port group's ports) follow as a [`Change::Link`] after the
                // children's inserts: a weak reference to a row not yet there is dropped.
                let mut columns = non_default(&row.columns);
                for (column, target) in row.table.link_columns().iter().filter(|(_, t)| t.is_root())
                {
                    let targets: BTreeSet<Uuid> = row
                        .links
                        .iter()
                        .filter(|(c, _)| c == column)
                        .filter_map(|(_, k)| root_uuid.get(&(*target, k.as_str())).copied())
                        .collect();
                    if !targets.is_empty() {
                        columns.insert(
                            (*column).to_string(),
                            Datum::set(targets.into_iter().map(Atom::Uuid)),
                        );
                    }
                }
                out.changes.push(Change::Insert {
                    table: row.table,
                    key: row.key.clone(),
                    uuid: Some(uuid),
                    columns,
                    parent: None,
                });
            }
        }
    }

    // Children that roots link to (pod ports in port groups) get their UUID here, chosen for
    // new ones, so a link can name a port inserted in the same pass.
    // Children that are parents themselves (router ports of Gateway_Chassis rows) too: a new
    // port and its new children travel with the port's UUID chosen here.
    let child_targets: BTreeSet<Table> = Table::ALL
        .iter()
        .flat_map(|t| t.link_columns().iter().map(|(_, target)| *target))
        .chain(
            Table::ALL
                .iter()
                .filter(|t| !t.is_root() && !t.child_columns().is_empty())
                .copied(),
        )
        .filter(|t| !t.is_root())
        .collect();
    // Children that are parents themselves (a load balancer with health checks) too: their
    // own children attach to that UUID in the same pass.
    let child_parents: HashSet<(Table, &str)> = desired
        .iter()
        .filter_map(|r| Some((r.parent_table?, r.parent.as_deref()?)))
        .filter(|(t, _)| !t.is_root())
        .collect();
    let mut child_uuid: HashMap<(Table, &str), Uuid> = HashMap::new();
    for row in desired.iter().filter(|r| {
        r.parent.is_some()
            && (child_targets.contains(&r.table)
                || child_parents.contains(&(r.table, r.key.as_str())))
    }) {
        let uuid = match owned.get(&(row.table, row.key.as_str())) {
            Some(have) => have.uuid,
            None => new_uuid(),
        };
        child_uuid.insert((row.table, row.key.as_str()), uuid);
    }
    let target_uuid = |target: Table, key: &str| -> Option<Uuid> {
        if target.is_root() {
            root_uuid.get(&(target, key)).copied()
        } else {
            child_uuid.get(&(target, key)).copied()
        }
    };

    // Link columns of roots: only FerrOVN's own targets are added or removed.
    let owned_target: HashSet<(Table, Uuid)> =
        owned.iter().map(|((t, _), r)| (*t, r.uuid)).collect();
    for row in desired.iter().filter(|r| r.parent.is_none()) {
        let Some(&uuid) = root_uuid.get(&(row.table, row.key.as_str())) else {
            continue;
        };
        let have = owned.get(&(row.table, row.key.as_str()));
        for (column, target) in row.table.link_columns() {
            // New roots got their links to roots with the insert.
            if have.is_none() && target.is_root() {
                continue;
            }
            let current: BTreeSet<Uuid> = have
                .map(|h| h.uuids(column))
                .unwrap_or_default()
                .into_iter()
                .filter(|u| owned_target.contains(&(*target, *u)))
                .collect();
            let want: BTreeSet<Uuid> = row
                .links
                .iter()
                .filter(|(c, _)| c == column)
                .filter_map(|(_, k)| target_uuid(*target, k))
                .collect();
            let add: Vec<Uuid> = want.difference(&current).copied().collect();
            let remove: Vec<Uuid> = current.difference(&want).copied().collect();
            if !add.is_empty() || !remove.is_empty() {
                out.changes.push(Change::Link {
                    table: row.table,
                    key: row.key.clone(),
                    uuid,
                    column,
                    add,
                    remove,
                });
            }
        }
    }

    // Children not created (a name conflict, or their own parent was not): their children
    // are not either.
    let mut not_created: HashSet<(Table, &str)> = HashSet::new();
    for row in desired.iter() {
        let (Some(parent_key), Some(parent_table)) = (&row.parent, row.parent_table) else {
            continue;
        };
        let Some(column) = row.table.parent_column(parent_table) else {
            continue;
        };
        // A parent that could not be created takes its children with it (already reported).
        let parent_uuid = if parent_table.is_root() {
            root_uuid.get(&(parent_table, parent_key.as_str())).copied()
        } else if not_created.contains(&(parent_table, parent_key.as_str())) {
            None
        } else {
            child_uuid
                .get(&(parent_table, parent_key.as_str()))
                .copied()
        };
        let Some(parent_uuid) = parent_uuid else {
            not_created.insert((row.table, row.key.as_str()));
            continue;
        };
        let want_parent = ParentRef {
            table: parent_table,
            uuid: parent_uuid,
            column,
        };
        match owned.get(&(row.table, row.key.as_str())) {
            Some(have) => {
                let columns = changed_columns(row, have);
                let current = relation_parents(row.table, have.uuid);
                let detach_from: Vec<ParentRef> = current
                    .iter()
                    .filter(|p| **p != want_parent)
                    .copied()
                    .collect();
                let attach_to = (!current.contains(&want_parent)).then_some(want_parent);
                if !columns.is_empty() || !detach_from.is_empty() || attach_to.is_some() {
                    out.changes.push(Change::Update {
                        table: row.table,
                        key: row.key.clone(),
                        uuid: have.uuid,
                        columns,
                        detach_from,
                        attach_to,
                    });
                }
            }
            None => {
                if let Some(name) = &row.name
                    && foreign_names.contains(&(row.table, name.as_str()))
                {
                    out.conflicts.push(Conflict::NameTaken {
                        table: row.table.name(),
                        name: name.clone(),
                        key: row.key.clone(),
                    });
                    not_created.insert((row.table, row.key.as_str()));
                    continue;
                }
                out.changes.push(Change::Insert {
                    table: row.table,
                    key: row.key.clone(),
                    uuid: child_uuid.get(&(row.table, row.key.as_str())).copied(),
                    columns: non_default(&row.columns),
                    parent: Some(want_parent),
                });
            }
        }
    }

    // Owned rows nobody plans any more, and surplus duplicates.
    let mut unwanted: Vec<(Table, &ActualRow)> = owned
        .iter()
        .filter(|((t, k), _)| !wanted.contains(&(*t, *k)))
        .map(|((t, _), r)| (*t, *r))
        .collect();
    unwanted.extend(surplus);
    unwanted.sort_by_key(|a| (a.0, a.1.uuid));
    // A child whose parent is itself a child on its way out (a router port's Gateway_Chassis)
    // goes with it: no mutation of a row the same pass removes.
    let going: HashSet<Uuid> = unwanted
        .iter()
        .filter(|(t, _)| !t.is_root())
        .map(|(_, r)| r.uuid)
        .collect();
    let owned_uuids: BTreeSet<Uuid> = owned.values().map(|r| r.uuid).collect();
    for (table, row) in unwanted {
        let key = row.owned_key_in(table).unwrap_or_default().to_string();
        if table.is_root() {
            // Deleting a root deletes its children: only when all of them are ours.
            let foreign_child = table
                .child_columns()
                .iter()
                .flat_map(|c| row.uuids(c))
                .any(|u| !owned_uuids.contains(&u) && !is_surplus_child(actual, u));
            if foreign_child {
                // The row stays; our link targets it references may be going away.
                for (column, target) in table.link_columns() {
                    let remove: Vec<Uuid> = row
                        .uuids(column)
                        .into_iter()
                        .filter(|u| owned_target.contains(&(*target, *u)))
                        .collect();
                    if !remove.is_empty() {
                        out.changes.push(Change::Link {
                            table,
                            key: key.clone(),
                            uuid: row.uuid,
                            column,
                            add: Vec::new(),
                            remove,
                        });
                    }
                }
                out.conflicts.push(Conflict::HoldsForeignRows {
                    table: table.name(),
                    key,
                });
                continue;
            }
            // A link target still referenced by a row that is not ours cannot go (the
            // reference is strong) and is not ours to cut.
            let foreign_referrer = Table::ALL
                .iter()
                .filter(|t| t.link_columns().iter().any(|(_, tt)| *tt == table))
                .flat_map(|t| actual.rows(*t).iter().map(move |r| (*t, r)))
                .any(|(t, r)| {
                    r.owned_key_in(t).is_none()
                        && t.link_columns()
                            .iter()
                            .any(|(c, tt)| *tt == table && r.uuids(c).contains(&row.uuid))
                });
            if foreign_referrer {
                out.conflicts.push(Conflict::ReferencedByForeignRows {
                    table: table.name(),
                    key,
                });
                continue;
            }
            out.changes.push(Change::Delete {
                table,
                key,
                uuid: row.uuid,
            });
        } else if table.deleted_explicitly() {
            out.changes.push(Change::Delete {
                table,
                key,
                uuid: row.uuid,
            });
        } else {
            let mut parents = relation_parents(table, row.uuid);
            parents.retain(|p| p.table.is_root() || !going.contains(&p.uuid));
            if parents.is_empty() {
                // Unreferenced: OVSDB already collects these; nothing to do.
                continue;
            }
            out.changes.push(Change::Detach {
                table,
                key,
                uuid: row.uuid,
                parents,
            });
        }
    }

    out.changes.sort_by_key(Change::phase);
    out.conflicts.sort();
    out.conflicts.dedup();
    out
}

/// An owned duplicate child counts as ours too.
fn is_surplus_child(actual: &NbSnapshot, uuid: Uuid) -> bool {
    Table::ALL
        .iter()
        .filter(|t| !t.is_root())
        .flat_map(|t| actual.rows(*t))
        .any(|r| r.uuid == uuid && r.owned_key().is_some())
}

fn changed_columns(row: &DesiredRow, have: &ActualRow) -> ColumnValues {
    row.columns
        .iter()
        .filter(|(c, want)| !same(want, have.columns.get(c.as_str())))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect()
}

fn non_default(columns: &ColumnValues) -> ColumnValues {
    columns
        .iter()
        .filter(|(_, v)| !is_default(v))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// Groups changes into transactions of at most `batch` changes each (at least 1). Each
/// transaction is self-contained: a child insert and its parent's mutation travel together,
/// and the mutations of one parent set are merged into one `mutate`.
pub fn to_transactions(diff: &Diff, database: &str, batch: usize) -> Vec<Transaction> {
    let batch = batch.max(1);
    diff.changes
        .chunks(batch)
        .map(|chunk| transaction(chunk, database))
        .collect()
}

type SetMutations = BTreeMap<ParentRef, (Vec<Atom>, Vec<Atom>)>;

fn transaction(changes: &[Change], database: &str) -> Transaction {
    let mut txn = Transaction::new(database);
    let mut sets: SetMutations = BTreeMap::new();
    let mut deletes = Vec::new();
    for (i, ch) in changes.iter().enumerate() {
        match ch {
            Change::Insert {
                table,
                uuid,
                columns,
                parent,
                ..
            } => {
                let op = Operation::insert_row(table.name(), columns.clone());
                match (uuid, parent) {
                    (Some(u), Some(p)) => {
                        txn.push(op.with_uuid(*u));
                        sets.entry(*p).or_default().0.push(Atom::Uuid(*u));
                    }
                    (Some(u), None) => {
                        txn.push(op.with_uuid(*u));
                    }
                    (None, Some(p)) => {
                        let name = format!("row{i}");
                        txn.push(op.named(name.clone()));
                        sets.entry(*p).or_default().0.push(Atom::NamedUuid(name));
                    }
                    (None, None) => {
                        txn.push(op);
                    }
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
                if !columns.is_empty() {
                    let mut op = Operation::update(table.name()).filter(Condition::uuid(*uuid));
                    for (c, v) in columns {
                        op = op.with(c.clone(), v.clone());
                    }
                    txn.push(op);
                }
                for p in detach_from {
                    sets.entry(*p).or_default().1.push(Atom::Uuid(*uuid));
                }
                if let Some(p) = attach_to {
                    sets.entry(*p).or_default().0.push(Atom::Uuid(*uuid));
                }
            }
            Change::Detach { uuid, parents, .. } => {
                for p in parents {
                    sets.entry(*p).or_default().1.push(Atom::Uuid(*uuid));
                }
            }
            Change::Delete { table, uuid, .. } => {
                deletes.push(Operation::delete(table.name()).filter(Condition::uuid(*uuid)));
            }
            Change::Link {
                table,
                uuid,
                column,
                add,
                remove,
                ..
            } => {
                let entry = sets
                    .entry(ParentRef {
                        table: *table,
                        uuid: *uuid,
                        column,
                    })
                    .or_default();
                entry.0.extend(add.iter().map(|u| Atom::Uuid(*u)));
                entry.1.extend(remove.iter().map(|u| Atom::Uuid(*u)));
            }
        }
    }
    // Merge per parent row: one mutate carrying all of its set changes.
    let mut per_row: BTreeMap<(Table, Uuid), Operation> = BTreeMap::new();
    for (p, (add, remove)) in sets {
        let op = per_row
            .entry((p.table, p.uuid))
            .or_insert_with(|| Operation::mutate(p.table.name()).filter(Condition::uuid(p.uuid)));
        let mut taken = std::mem::replace(op, Operation::abort());
        if !remove.is_empty() {
            taken = taken.mutation(p.column, Mutator::Delete, Datum::set(remove));
        }
        if !add.is_empty() {
            taken = taken.mutation(p.column, Mutator::Insert, Datum::set(add));
        }
        *op = taken;
    }
    for (_, op) in per_row {
        txn.push(op);
    }
    for op in deletes {
        txn.push(op);
    }
    txn
}

/// Number of OVSDB operations in these transactions.
pub fn operation_count(txns: &[Transaction]) -> usize {
    txns.iter().map(|t| t.operations.len()).sum()
}
