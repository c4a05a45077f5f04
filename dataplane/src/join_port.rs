//! The node's join port `ovn0`: how the node itself joins the default VPC.
//!
//! The controller allocates every node an address and MAC on the `join` subnet and plans the
//! logical switch port `node-<node>` with router policies that send traffic for the node's own
//! addresses there. This module binds that port on the node, as Kube-OVN's daemon does: an OVS
//! internal port `ovn0` on the integration bridge with `external_ids:iface-id=node-<node>` (on
//! the netdev datapath a tap device), the join address and MAC on it, and routes to every
//! overlay subnet of the default VPC via the join gateway. Then node → pod (kubelet probes) and
//! pod → node work on kernel and DPDK nodes alike.
//!
//! The allocation comes from the Node's annotations (`--kube`) or from the controller's node
//! record (lab / manifest mode); [`spec_from_node`] turns them into a [`JoinPortSpec`] (pure),
//! [`route_changes`] decides the kernel route changes (pure), [`reconcile_once`] applies both.
//! Reconciling is idempotent: a restarted agent finds ovn0 as it left it and changes nothing,
//! so node ↔ pod traffic never flaps. A node without an allocation (the Node was removed, or
//! its record is gone) gets its ovn0 removed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use ferrovn_api::MacAddr;
use ferrovn_api::annotations::{AnnotationError, Annotations, NodeNetwork};
use ferrovn_ovsdb::{Atom, Datum, Mutator, Operation, Transaction};

use crate::ovs::{OVS_DB, OvsClient, OvsError, ext, map_of, rows, string_of};
use crate::plumbing::{link_by_name, netlink_errno};

/// Kube-OVN's name of the node's join interface.
pub const IFNAME: &str = "ovn0";
/// `external_ids` key marking the Interface as FerrOVN's join port (never `vendor=ferrovn`:
/// the pod garbage collector owns those).
pub const ROLE_KEY: &str = "ferrovn_role";
pub const ROLE_VALUE: &str = "join-port";

#[derive(Debug, thiserror::Error)]
pub enum JoinPortError {
    #[error("node {node}: {source}")]
    Annotation {
        node: String,
        #[source]
        source: AnnotationError,
    },
    #[error("node {node}: join allocation incomplete: {what}")]
    Incomplete { node: String, what: String },
    #[error("node source {source_name}: {reason}")]
    Source { source_name: String, reason: String },
    #[error(transparent)]
    Ovs(#[from] Box<OvsError>),
    #[error("{step} on {ifname}: {source}")]
    Netlink {
        step: String,
        ifname: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("{ifname}: {what}")]
    Kernel { ifname: String, what: String },
}

impl From<OvsError> for JoinPortError {
    fn from(e: OvsError) -> Self {
        JoinPortError::Ovs(Box::new(e))
    }
}

/// One route on the node: `dst via via dev ovn0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JoinRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
}

/// What ovn0 should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPortSpec {
    /// The logical switch port (`node-<node>`), the Interface's `iface-id`.
    pub port_name: String,
    pub mac: MacAddr,
    /// The join addresses with the join subnet's prefix length, IPv4 first.
    pub addresses: Vec<IpNet>,
    /// Every overlay subnet of the default VPC via the join gateway of its family.
    pub routes: Vec<JoinRoute>,
    pub mtu: u32,
}

impl JoinPortSpec {
    /// `external_ids` of the Interface (Kube-OVN's `iface-id` and `ip`, plus the role mark).
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        let ips: Vec<String> = self
            .addresses
            .iter()
            .map(|a| a.addr().to_string())
            .collect();
        [
            (ext::IFACE_ID, self.port_name.clone()),
            (ext::IP, ips.join(",")),
            (ROLE_KEY, ROLE_VALUE.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The join port a node with `annotations` should have; `None` while the controller has not
/// allocated it (or no more: the node is being removed).
pub fn spec_from_node(
    node: &str,
    annotations: &Annotations,
    mtu: u32,
) -> Result<Option<JoinPortSpec>, JoinPortError> {
    let labels = Annotations::new();
    let n = NodeNetwork::new(annotations, &labels);
    let bad = |source| JoinPortError::Annotation {
        node: node.to_string(),
        source,
    };
    let join = n.join();
    if !join.allocated().map_err(bad)? {
        return Ok(None);
    }
    let incomplete = |what: &str| JoinPortError::Incomplete {
        node: node.to_string(),
        what: what.to_string(),
    };
    let ips = join
        .ip_address()
        .map_err(bad)?
        .ok_or_else(|| incomplete("no ip_address"))?;
    let mac = join
        .mac_address()
        .map_err(bad)?
        .ok_or_else(|| incomplete("no mac_address"))?;
    let cidr = join
        .cidr()
        .map_err(bad)?
        .ok_or_else(|| incomplete("no cidr"))?;
    let gateway = join
        .gateway()
        .map_err(bad)?
        .ok_or_else(|| incomplete("no gateway"))?;
    let mut addresses = Vec::new();
    for ip in ips.addrs() {
        let net = cidr
            .nets()
            .find(|n| n.addr().is_ipv4() == ip.is_ipv4())
            .ok_or_else(|| incomplete(&format!("cidr has no net of the family of {ip}")))?;
        if !net.contains(&ip) {
            return Err(incomplete(&format!("{ip} is outside the join cidr {net}")));
        }
        // the prefix length comes from a valid net, so this cannot fail
        if let Ok(a) = IpNet::new(ip, net.prefix_len()) {
            addresses.push(a);
        }
    }
    let mut routes = BTreeSet::new();
    // Pod CIDRs, and the Service CIDRs: a host process's packet to a ClusterIP enters OVN on
    // the join switch, whose load balancers DNAT it.
    let mut dsts = n.pod_cidrs().map_err(bad)?;
    dsts.extend(n.service_cidrs().map_err(bad)?);
    for dst in dsts {
        let dst = dst.trunc();
        let Some(via) = gateway
            .addrs()
            .find(|g| g.is_ipv4() == dst.addr().is_ipv4())
        else {
            continue;
        };
        // the join subnet is on the link already; a pod CIDR overlapping it would be a
        // controller bug, and routing it would hide the join gateway
        if cidr
            .nets()
            .any(|j| j.contains(&dst.addr()) || dst.contains(&j.addr()))
        {
            continue;
        }
        routes.insert(JoinRoute {
            dst,
            via: Some(via),
        });
    }
    Ok(Some(JoinPortSpec {
        port_name: n
            .port_name()
            .map(str::to_string)
            .unwrap_or_else(|| ferrovn_api::names::join_port_name(node)),
        mac,
        addresses,
        routes: routes.into_iter().collect(),
        mtu,
    }))
}

/// The kernel route changes that turn `current` (the non-kernel routes on ovn0) into
/// `desired`: (routes to add, routes to delete). ovn0 is FerrOVN's: any other route on it goes.
pub fn route_changes(
    current: &[JoinRoute],
    desired: &[JoinRoute],
) -> (Vec<JoinRoute>, Vec<JoinRoute>) {
    let cur: BTreeSet<JoinRoute> = current.iter().copied().collect();
    let want: BTreeSet<JoinRoute> = desired.iter().copied().collect();
    (
        want.difference(&cur).copied().collect(),
        cur.difference(&want).copied().collect(),
    )
}

/// Where the agent reads its Node's annotations.
pub trait NodeSource: Send + Sync + 'static {
    /// The annotations; `None` when the node does not exist (any more).
    fn annotations(
        &self,
    ) -> impl Future<Output = Result<Option<Annotations>, JoinPortError>> + Send;
    fn describe(&self) -> String;
}

/// A JSON file: the controller's node record (`<state>/nodes/<node>.json`), a Node object or a
/// flat map of strings (as [`crate::alloc::annotations_from_json`] reads them). A missing file
/// is a node without an allocation.
#[derive(Debug, Clone)]
pub struct FileNodeSource {
    pub path: PathBuf,
}

impl NodeSource for FileNodeSource {
    async fn annotations(&self) -> Result<Option<Annotations>, JoinPortError> {
        let err = |reason: String| JoinPortError::Source {
            source_name: self.path.display().to_string(),
            reason,
        };
        match tokio::fs::read(&self.path).await {
            Ok(b) => crate::alloc::annotations_from_json(&b)
                .map(Some)
                .map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The Node object (`GET /api/v1/nodes/<node>`).
#[derive(Clone)]
pub struct KubeNodeSource {
    pub client: kube::Client,
    pub node: String,
}

impl NodeSource for KubeNodeSource {
    async fn annotations(&self) -> Result<Option<Annotations>, JoinPortError> {
        crate::kube_api::node_annotations(&self.client, &self.node)
            .await
            .map_err(|e| JoinPortError::Source {
                source_name: format!("Node {}", self.node),
                reason: e.to_string(),
            })
    }
    fn describe(&self) -> String {
        format!("Node {}", self.node)
    }
}

/// One look at the node serves both of the agent's loops (join port, natOutgoing): an answer
/// younger than `max_age` is handed out again, so a cluster of N nodes costs N GETs per
/// interval, not 2N.
pub struct SharedNodeSource<S> {
    inner: S,
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<Annotations>)>>,
}

impl<S: NodeSource> SharedNodeSource<S> {
    pub fn new(inner: S, max_age: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new(SharedNodeSource {
            inner,
            max_age,
            last: tokio::sync::Mutex::new(None),
        })
    }
}

impl<S: NodeSource> NodeSource for std::sync::Arc<SharedNodeSource<S>> {
    async fn annotations(&self) -> Result<Option<Annotations>, JoinPortError> {
        let mut last = self.last.lock().await;
        if let Some((at, a)) = last.as_ref()
            && at.elapsed() < self.max_age
        {
            return Ok(a.clone());
        }
        let a = self.inner.annotations().await?;
        *last = Some((tokio::time::Instant::now(), a.clone()));
        Ok(a)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// How the agent keeps ovn0.
#[derive(Debug, Clone)]
pub struct JoinPortConfig {
    pub node: String,
    pub bridge: String,
    pub mtu: u32,
    /// Between two looks at the node's annotations.
    pub interval: Duration,
}

/// What a reconcile pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// No allocation (yet, or any more) and no ovn0.
    Absent,
    /// ovn0 removed (the node lost its allocation).
    Removed,
    /// ovn0 as specified; `changes` lists what this pass changed (empty: nothing).
    Configured { changes: Vec<String> },
}

/// One pass: reads the node, then makes OVS and the kernel match.
pub async fn reconcile_once<S: NodeSource>(
    cfg: &JoinPortConfig,
    ovs: &OvsClient,
    source: &S,
) -> Result<JoinOutcome, JoinPortError> {
    let spec = match source.annotations().await? {
        Some(a) => spec_from_node(&cfg.node, &a, cfg.mtu)?,
        None => None,
    };
    match spec {
        Some(spec) => {
            let mut changes = ensure_ovs_port(ovs, &cfg.bridge, &spec).await?;
            changes.extend(ensure_kernel(&spec).await?);
            Ok(JoinOutcome::Configured { changes })
        }
        None => {
            if remove(ovs).await? {
                Ok(JoinOutcome::Removed)
            } else {
                Ok(JoinOutcome::Absent)
            }
        }
    }
}

/// Keeps ovn0 in line with the node, every `cfg.interval`, forever. Failures are logged and
/// retried at the next tick.
pub async fn run<S: NodeSource>(cfg: JoinPortConfig, ovs: OvsClient, source: S) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_err = String::new();
    let mut waiting_logged = false;
    // the first pass is logged even when it changed nothing: a restarted agent says that it
    // found ovn0 as it left it
    let mut first = true;
    loop {
        tick.tick().await;
        match reconcile_once(&cfg, &ovs, &source).await {
            Ok(JoinOutcome::Configured { changes }) => {
                last_err.clear();
                waiting_logged = false;
                let log_it = !changes.is_empty() || first;
                first = false;
                if log_it {
                    tracing::info!(node = %cfg.node, port = IFNAME, changes = ?changes, "join port configured");
                }
            }
            Ok(JoinOutcome::Removed) => {
                tracing::info!(node = %cfg.node, from = %source.describe(), "join port removed: the node has no join allocation");
            }
            Ok(JoinOutcome::Absent) => {
                if !waiting_logged {
                    tracing::info!(node = %cfg.node, from = %source.describe(), "join port: waiting for the controller's join allocation");
                    waiting_logged = true;
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_err {
                    tracing::warn!(node = %cfg.node, error = %msg, "join port not configured; retrying");
                    last_err = msg;
                }
            }
        }
    }
}

/// The Interface row as found.
struct FoundIface {
    type_: String,
    external_ids: BTreeMap<String, String>,
    mac: Option<String>,
    on_bridge: bool,
}

async fn find_iface(ovs: &OvsClient, bridge: &str) -> Result<Option<FoundIface>, OvsError> {
    let t = Transaction::new(OVS_DB)
        .with(
            Operation::select("Interface")
                .where_eq("name", IFNAME)
                .columns(["type", "external_ids", "mac"]),
        )
        .with(
            Operation::select("Port")
                .where_eq("name", IFNAME)
                .columns(["_uuid"]),
        )
        .with(
            Operation::select("Bridge")
                .where_eq("name", bridge)
                .columns(["ports"]),
        );
    let res = ovs.transact(&t).await?;
    let Some(row) = rows(&res, 0).first() else {
        return Ok(None);
    };
    let port = rows(&res, 1)
        .first()
        .and_then(|r| crate::ovs::uuid_of(r, "_uuid").first().copied());
    let on_bridge = match port {
        Some(p) => rows(&res, 2)
            .first()
            .is_some_and(|b| crate::ovs::uuid_of(b, "ports").contains(&p)),
        None => false,
    };
    Ok(Some(FoundIface {
        type_: string_of(row, "type").unwrap_or_default(),
        external_ids: map_of(row, "external_ids"),
        mac: row
            .get("mac")
            .and_then(Datum::as_atoms)
            .and_then(|a| a.first().and_then(Atom::as_str).map(str::to_string)),
        on_bridge,
    }))
}

/// Creates ovn0 on `bridge`, or updates its `external_ids` / `mac` in place (no flap).
async fn ensure_ovs_port(
    ovs: &OvsClient,
    bridge: &str,
    spec: &JoinPortSpec,
) -> Result<Vec<String>, JoinPortError> {
    let ids = spec.external_ids();
    let mac = spec.mac.to_string();
    let ids_datum = Datum::map(ids.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match find_iface(ovs, bridge).await? {
        Some(f) if f.type_ == "internal" && f.on_bridge => {
            let mut changes = Vec::new();
            let mut up = Operation::update("Interface").where_eq("name", IFNAME);
            let mut any = false;
            // keys others (ovn-controller's ovn-installed) put there stay
            let mut merged = f.external_ids.clone();
            merged.extend(ids.clone());
            if merged != f.external_ids {
                changes.push("OVS external_ids".to_string());
                up = up.with(
                    "external_ids",
                    Datum::map(merged.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                );
                any = true;
            }
            if f.mac.as_deref() != Some(mac.as_str()) {
                changes.push(format!("OVS mac {mac}"));
                up = up.with("mac", mac.as_str());
                any = true;
            }
            if any {
                ovs.transact(&Transaction::new(OVS_DB).with(up)).await?;
            }
            Ok(changes)
        }
        found => {
            if found.is_some() {
                // a namesake of another type or outside the bridge: replaced
                ovs.remove_port(IFNAME).await?;
            }
            let mut txn = Transaction::new(OVS_DB);
            txn.push(
                Operation::insert("Interface")
                    .with("name", IFNAME)
                    .with("type", "internal")
                    .with("mac", mac.as_str())
                    .with(
                        "mtu_request",
                        Datum::from(Atom::Integer(i64::from(spec.mtu))),
                    )
                    .with("external_ids", ids_datum)
                    .named("iface"),
            );
            txn.push(
                Operation::insert("Port")
                    .with("name", IFNAME)
                    .with("interfaces", Datum::set([Atom::NamedUuid("iface".into())]))
                    .named("port"),
            );
            txn.push(
                Operation::mutate("Bridge")
                    .where_eq("name", bridge)
                    .mutation(
                        "ports",
                        Mutator::Insert,
                        Datum::set([Atom::NamedUuid("port".into())]),
                    ),
            );
            ovs.transact(&txn).await?;
            Ok(vec![format!("OVS port {IFNAME} on {bridge}")])
        }
    }
}

/// Removes ovn0 if it is FerrOVN's join port. True if it existed.
pub async fn remove(ovs: &OvsClient) -> Result<bool, JoinPortError> {
    let ours = ovs
        .find_interfaces(&[(ROLE_KEY, ROLE_VALUE)])
        .await?
        .into_iter()
        .any(|r| r.name == IFNAME);
    if !ours {
        return Ok(false);
    }
    Ok(ovs.remove_port(IFNAME).await?)
}

fn nl_err(step: &str) -> impl FnOnce(rtnetlink::Error) -> JoinPortError + '_ {
    move |source| JoinPortError::Netlink {
        step: step.to_string(),
        ifname: IFNAME.to_string(),
        source: Box::new(source),
    }
}

fn route_of(msg: &RouteMessage) -> Option<JoinRoute> {
    let mut dst: Option<IpAddr> = None;
    let mut via: Option<IpAddr> = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
            _ => {}
        }
    }
    let dst = match (dst, msg.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(dst, msg.header.destination_prefix_length)
        .ok()
        .map(|dst| JoinRoute { dst, via })
}

fn route_message(r: &JoinRoute, oif: u32) -> RouteMessage {
    let mut msg = match (r.dst, r.via) {
        (IpNet::V4(d), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .output_interface(oif);
            match via {
                Some(IpAddr::V4(g)) => b = b.gateway(g),
                _ => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
        (IpNet::V6(d), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .output_interface(oif);
            match via {
                Some(IpAddr::V6(g)) => b = b.gateway(g),
                _ => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
    };
    msg.header.protocol = RouteProtocol::Static;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg
}

/// The routes on ovn0 that are not the kernel's own (prefix routes of its addresses, IPv6
/// link-local and multicast).
async fn current_routes(h: &Handle, oif: u32) -> Result<Vec<JoinRoute>, JoinPortError> {
    let mut out = Vec::new();
    let queries = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for q in queries {
        let mut s = h.route().get(q).execute();
        while let Some(msg) = s.try_next().await.map_err(nl_err("listing routes"))? {
            let on_us = msg
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == oif));
            let main = msg.header.table == RouteHeader::RT_TABLE_MAIN;
            if !on_us || !main || msg.header.protocol == RouteProtocol::Kernel {
                continue;
            }
            if let Some(r) = route_of(&msg) {
                let local_v6 = matches!(r.dst, IpNet::V6(d) if d.addr().segments()[0] & 0xffc0 == 0xfe80 || d.addr().is_multicast());
                if !local_v6 {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

/// Waits (10 s at most) for OVS to create the ovn0 device, then sets its MAC, MTU, addresses,
/// link state and routes. Changes only what differs.
async fn ensure_kernel(spec: &JoinPortSpec) -> Result<Vec<String>, JoinPortError> {
    let (conn, h, _) = rtnetlink::new_connection().map_err(|e| JoinPortError::Kernel {
        ifname: IFNAME.into(),
        what: format!("netlink socket: {e}"),
    })?;
    let conn = tokio::spawn(conn);
    let r = ensure_kernel_with(&h, spec).await;
    conn.abort();
    r
}

async fn ensure_kernel_with(h: &Handle, spec: &JoinPortSpec) -> Result<Vec<String>, JoinPortError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let link = loop {
        if let Some(l) = link_by_name(h, IFNAME)
            .await
            .map_err(nl_err("looking up"))?
        {
            break l;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(JoinPortError::Kernel {
                ifname: IFNAME.into(),
                what: "OVS did not create the device within 10 s (is ovs-vswitchd running?)".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let idx = link.header.index;
    let mut changes = Vec::new();
    let kernel_mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => Some(b.clone()),
        _ => None,
    });
    let kernel_mtu = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    });
    let up = link.header.flags.contains(LinkFlags::Up);
    let want_mac = spec.mac.octets().to_vec();
    // OVS sets the MAC from Interface.mac; this covers the moment before it did
    if kernel_mac.as_deref() != Some(want_mac.as_slice()) {
        h.link()
            .set(LinkUnspec::new_with_index(idx).address(want_mac).build())
            .execute()
            .await
            .map_err(nl_err("setting the MAC"))?;
        changes.push(format!("MAC {}", spec.mac));
    }
    if kernel_mtu != Some(spec.mtu) {
        h.link()
            .set(LinkUnspec::new_with_index(idx).mtu(spec.mtu).build())
            .execute()
            .await
            .map_err(nl_err("setting the MTU"))?;
        changes.push(format!("MTU {}", spec.mtu));
    }
    if !up && !spec.addresses.iter().any(|a| a.addr().is_ipv6()) {
        // an IPv4-only join port puts no IPv6 link-local chatter into OVN (as for pods);
        // the agent runs in the node's network namespace, so /proc/sys/net is the node's
        crate::plumbing::disable_ipv6(IFNAME).map_err(|e| JoinPortError::Kernel {
            ifname: IFNAME.into(),
            what: format!("turning IPv6 off: {e}"),
        })?;
    }

    // addresses: exactly the join addresses (IPv6 link-local left to the kernel)
    let mut have = Vec::new();
    let mut s = h.address().get().set_link_index_filter(idx).execute();
    while let Some(msg) = s.try_next().await.map_err(nl_err("listing addresses"))? {
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = addr
            && let Ok(net) = IpNet::new(ip, msg.header.prefix_len)
        {
            have.push((net, msg));
        }
    }
    for a in &spec.addresses {
        if !have.iter().any(|(n, _)| n == a) {
            let mut req = h.address().add(idx, a.addr(), a.prefix_len());
            if a.addr().is_ipv6() {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            match req.execute().await {
                Ok(()) => {}
                Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err("adding an address")(e)),
            }
            changes.push(format!("address {a}"));
        }
    }
    for (net, msg) in have {
        let link_local = matches!(net, IpNet::V6(n) if n.addr().segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !spec.addresses.contains(&net) {
            h.address()
                .del(msg)
                .execute()
                .await
                .map_err(nl_err("removing an address"))?;
            changes.push(format!("removed address {net}"));
        }
    }
    if !up {
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl_err("setting the link up"))?;
        changes.push("link up".into());
    }

    let current = current_routes(h, idx).await?;
    let (add, del) = route_changes(&current, &spec.routes);
    for r in del {
        h.route()
            .del(route_message(&r, idx))
            .execute()
            .await
            .map_err(nl_err("removing a route"))?;
        changes.push(format!("removed route {}", r.dst));
    }
    for r in add {
        match h.route().add(route_message(&r, idx)).execute().await {
            Ok(()) => {}
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl_err("adding a route")(e)),
        }
        let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
        changes.push(format!("route {}{via}", r.dst));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn allocated(extra: &[(&str, &str)]) -> Annotations {
        let mut a = ann(&[
            ("ovn.kubernetes.io/allocated", "true"),
            ("ovn.kubernetes.io/ip_address", "100.64.0.2"),
            ("ovn.kubernetes.io/mac_address", "0a:58:64:40:00:02"),
            ("ovn.kubernetes.io/cidr", "100.64.0.0/16"),
            ("ovn.kubernetes.io/gateway", "100.64.0.1"),
            ("ovn.kubernetes.io/logical_switch", "join"),
            ("ovn.kubernetes.io/port_name", "node-a"),
        ]);
        a.extend(ann(extra));
        a
    }

    #[test]
    fn spec_from_a_kube_ovn_node() {
        let a = allocated(&[(
            NodeNetwork::POD_CIDRS,
            "10.16.0.0/16,10.66.0.0/16,fd00::/64,100.64.0.0/16",
        )]);
        let s = spec_from_node("a", &a, 1400).unwrap().unwrap();
        assert_eq!(s.port_name, "node-a");
        assert_eq!(s.mac.to_string(), "0a:58:64:40:00:02");
        assert_eq!(s.addresses, vec!["100.64.0.2/16".parse::<IpNet>().unwrap()]);
        let routes: Vec<String> = s
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.dst, r.via))
            .collect();
        // the v6 CIDR has no v6 join gateway; the join subnet itself is on the link
        assert_eq!(
            routes,
            [
                "10.16.0.0/16 via Some(100.64.0.1)",
                "10.66.0.0/16 via Some(100.64.0.1)"
            ]
        );
        assert_eq!(s.external_ids()["iface-id"], "node-a");
        assert_eq!(s.external_ids()["ip"], "100.64.0.2");
        assert_eq!(s.external_ids()[ROLE_KEY], ROLE_VALUE);
    }

    #[test]
    fn service_cidrs_are_routed_through_the_join_port_too() {
        let a = allocated(&[
            (NodeNetwork::POD_CIDRS, "10.16.0.0/16"),
            (NodeNetwork::SERVICE_CIDRS, "10.96.0.0/12"),
        ]);
        let s = spec_from_node("a", &a, 1400).unwrap().unwrap();
        let routes: Vec<String> = s
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.dst, r.via))
            .collect();
        assert_eq!(
            routes,
            [
                "10.16.0.0/16 via Some(100.64.0.1)",
                "10.96.0.0/12 via Some(100.64.0.1)"
            ]
        );
        let a = allocated(&[(NodeNetwork::SERVICE_CIDRS, "10.96.0.0/40")]);
        let e = spec_from_node("a", &a, 1400).unwrap_err().to_string();
        assert!(e.contains("ferrovn.io/service-cidrs"), "{e}");
    }

    #[test]
    fn no_allocation_is_no_port_and_bad_values_name_the_key() {
        assert_eq!(
            spec_from_node("a", &Annotations::new(), 1400).unwrap(),
            None
        );
        let mut a = allocated(&[]);
        a.remove("ovn.kubernetes.io/mac_address");
        let e = spec_from_node("a", &a, 1400).unwrap_err().to_string();
        assert!(e.contains("no mac_address"), "{e}");
        let a = allocated(&[("ovn.kubernetes.io/ip_address", "100.65.0.2")]);
        let e = spec_from_node("a", &a, 1400).unwrap_err().to_string();
        assert!(e.contains("outside the join cidr"), "{e}");
        let a = allocated(&[(NodeNetwork::POD_CIDRS, "10.16.0.0/33")]);
        let e = spec_from_node("a", &a, 1400).unwrap_err().to_string();
        assert!(e.contains("ferrovn.io/pod-cidrs"), "{e}");
    }

    #[test]
    fn node_files_of_every_shape() {
        let rec = br#"{"version":1,"kind":"node","name":"a","port_name":"node-a","annotations":{"k":"v"}}"#;
        assert_eq!(crate::alloc::annotations_from_json(rec).unwrap()["k"], "v");
        let node = br#"{"metadata":{"name":"a","annotations":{"k":"v"}}}"#;
        assert_eq!(crate::alloc::annotations_from_json(node).unwrap()["k"], "v");
        let bare = br#"{"metadata":{"name":"a"}}"#;
        assert!(
            crate::alloc::annotations_from_json(bare)
                .unwrap()
                .is_empty()
        );
    }

    struct Counting(std::sync::atomic::AtomicUsize);

    impl NodeSource for std::sync::Arc<Counting> {
        async fn annotations(&self) -> Result<Option<Annotations>, JoinPortError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Some(allocated(&[])))
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[tokio::test]
    async fn both_loops_share_one_look_at_the_node() {
        let inner = std::sync::Arc::new(Counting(Default::default()));
        let shared = SharedNodeSource::new(inner.clone(), Duration::from_secs(60));
        let a = shared.annotations().await.unwrap();
        let b = shared.annotations().await.unwrap();
        assert_eq!(a, b);
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let fresh = SharedNodeSource::new(inner.clone(), Duration::ZERO);
        fresh.annotations().await.unwrap();
        fresh.annotations().await.unwrap();
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    fn arb_route() -> impl Strategy<Value = JoinRoute> {
        (0u8..4, 8u8..=24, proptest::option::of(0u8..3)).prop_map(|(n, p, via)| JoinRoute {
            dst: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, n, 0, 0)), p)
                .unwrap()
                .trunc(),
            via: via.map(|v| IpAddr::V4(Ipv4Addr::new(100, 64, 0, v))),
        })
    }

    proptest! {
        /// Applying the changes to the current routes gives exactly the desired set, and a
        /// route both have is never touched (no flap on restart).
        #[test]
        fn route_changes_reach_desired(cur in proptest::collection::vec(arb_route(), 0..8),
                                       want in proptest::collection::vec(arb_route(), 0..8)) {
            let (add, del) = route_changes(&cur, &want);
            let mut model: BTreeSet<JoinRoute> = cur.iter().copied().collect();
            for r in &del { prop_assert!(model.remove(r)); }
            for r in &add { prop_assert!(model.insert(*r)); }
            let want_set: BTreeSet<JoinRoute> = want.iter().copied().collect();
            prop_assert_eq!(&model, &want_set);
            for r in cur.iter().filter(|r| want_set.contains(r)) {
                prop_assert!(!add.contains(r) && !del.contains(r));
            }
        }
    }
}
