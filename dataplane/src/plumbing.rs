//! Pod plumbing for the kernel profile: a veth pair whose pod end lives in the pod's network
//! namespace with the allocated MAC, MTU, addresses and routes, and whose host end stays in the
//! node's namespace (for OVS). All netlink work runs on a dedicated thread that holds one
//! netlink socket opened in each namespace; tokio workers never change namespace.
//!
//! What ADD creates is exactly one veth pair; everything inside the pod (addresses, routes)
//! hangs off it, so removing the host end removes all of it. The host end's alias carries an
//! owner tag (`ferrovn:<container>:<ifname>`) so removal never deletes a namesake.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::ethtool;
use crate::netns::{NetnsError, NetnsHandle, display_netns};
use ferrovn_api::MacAddr;
use ferrovn_api::names::host_ifname;

use crate::types::{SpecError, owner_tag, validate_container_id, validate_ifname};

/// An extra route inside the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRoute {
    pub dst: IpNet,
    /// Next hop; `None` means directly on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
}

/// Everything needed to plumb one pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethSpec {
    pub container_id: String,
    /// The pod's network namespace, e.g. `/var/run/netns/X` or `/proc/<pid>/ns/net`.
    pub pod_netns: PathBuf,
    /// Interface name inside the pod (CNI_IFNAME), e.g. `eth0`.
    pub pod_ifname: String,
    /// Namespace of the host end; `None` = the calling process's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<PathBuf>,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Addresses with their prefix length, e.g. `10.16.0.11/24`.
    pub addresses: Vec<IpNet>,
    /// Default-route gateways, at most one per IP family.
    #[serde(default)]
    pub gateways: Vec<IpAddr>,
    #[serde(default)]
    pub routes: Vec<PodRoute>,
    /// Keep IPv6 link-local on the pod end even without an IPv6 address (off by default:
    /// its DAD/MLD/router solicitations would be flooded by OVN to every port of the switch).
    #[serde(default)]
    pub ipv6_link_local: bool,
    /// Keep the pod end's tx checksum offload (and TSO) on: only when the node's ovs-vswitchd
    /// runs with userspace TSO ([`crate::userspace_tso`]); without it OVS drops such packets on
    /// their way into a Geneve tunnel, so the default is off.
    #[serde(default)]
    pub tx_offload: bool,
}

impl VethSpec {
    /// Host-side veth name this spec yields.
    pub fn host_ifname(&self) -> String {
        host_ifname(&self.container_id, &self.pod_ifname)
    }
    pub fn owner_tag(&self) -> String {
        owner_tag(&self.container_id, &self.pod_ifname)
    }

    /// Pure checks, done before anything is created.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_container_id(&self.container_id)?;
        validate_ifname(&self.pod_ifname)?;
        if !(68..=65535).contains(&self.mtu) {
            return Err(SpecError::Mtu { mtu: self.mtu });
        }
        if !self.mac.is_unicast() {
            return Err(SpecError::MacNotUnicast { mac: self.mac });
        }
        let same_family = |a: IpAddr, b: IpAddr| a.is_ipv4() == b.is_ipv4();
        for gw in &self.gateways {
            if !self.addresses.iter().any(|a| same_family(a.addr(), *gw)) {
                return Err(SpecError::GatewayFamily { gateway: *gw });
            }
        }
        for r in &self.routes {
            if let Some(via) = r.via
                && !same_family(r.dst.addr(), via)
            {
                return Err(SpecError::RouteFamily { dst: r.dst, via });
            }
        }
        for p in [Some(&self.pod_netns), self.host_netns.as_ref()]
            .into_iter()
            .flatten()
        {
            if !p.is_absolute() {
                return Err(SpecError::NetnsPath {
                    path: p.display().to_string(),
                    reason: "must be absolute",
                });
            }
        }
        Ok(())
    }
}

/// What [`plumb_veth`] made; enough to remove it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlumbedVeth {
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub pod_ifname: String,
    pub pod_netns: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<PathBuf>,
    pub owner_tag: String,
}

/// The step of plumbing or removal that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Runtime,
    LookupHostLink,
    DeleteStaleVeth,
    CreateVeth,
    ConfigureHostEnd,
    LookupPodLink,
    LoopbackUp,
    AddAddress(IpNet),
    PodLinkUp,
    AddRoute(String),
    DisableTxChecksum,
    DisableIpv6,
    DeleteVeth,
    LimitEgress(u64),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Runtime => write!(f, "starting the netlink worker"),
            Step::LookupHostLink => write!(f, "looking up the host veth end"),
            Step::DeleteStaleVeth => write!(f, "deleting a stale veth of the same container"),
            Step::CreateVeth => write!(f, "creating the veth pair"),
            Step::ConfigureHostEnd => write!(f, "setting the host end's alias and bringing it up"),
            Step::LookupPodLink => write!(f, "looking up the pod interface"),
            Step::LoopbackUp => write!(f, "bringing lo up"),
            Step::AddAddress(a) => write!(f, "adding address {a}"),
            Step::PodLinkUp => write!(f, "bringing the pod interface up"),
            Step::AddRoute(r) => write!(f, "adding route {r}"),
            Step::DisableTxChecksum => write!(f, "turning tx checksum offload off"),
            Step::DisableIpv6 => write!(f, "turning IPv6 off (net.ipv6.conf.<if>.disable_ipv6)"),
            Step::DeleteVeth => write!(f, "deleting the veth pair"),
            Step::LimitEgress(m) => write!(f, "limiting pod egress to {m} Mbit/s (tc tbf)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error("invalid pod interface request: {0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{step} (interface {ifname}, netns {netns}): {source}")]
    Netlink {
        step: Step,
        ifname: String,
        netns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("{step} (interface {ifname}, netns {netns}): {source}")]
    Io {
        step: Step,
        ifname: String,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "host interface {ifname} in netns {netns} exists but is not ours (alias {found:?}, expected {expected:?})"
    )]
    NotOurs {
        ifname: String,
        netns: String,
        found: Option<String>,
        expected: String,
    },
    #[error("interface {ifname} already exists in pod netns {netns}")]
    PodInterfaceExists { ifname: String, netns: String },
}

impl PlumbError {
    /// The errno behind a netlink/io failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            PlumbError::Netlink { source, .. } => netlink_errno(source),
            PlumbError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Outcome of a removal (both are success: removal is idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    AlreadyGone,
}

pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// `net.ipv6.conf.<ifname>.disable_ipv6=1` in the calling thread's network namespace.
/// A kernel booted with `ipv6.disable=1` has no such file: nothing to turn off then.
pub(crate) fn disable_ipv6(ifname: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The namespaces a plumbing thread moves between: `/proc/sys/net` and other per-netns files
/// resolve against the thread's CURRENT namespace, so writing a host-side sysctl from a
/// thread that sits in the pod netns means stepping out and back in.
struct Sides {
    host: NetnsHandle,
    pod: NetnsHandle,
}

thread_local! {
    static SIDES: std::cell::RefCell<Option<Sides>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` in the host-side namespace of the current plumbing thread, then returns to the
/// pod namespace. Only valid on a [`with_netlink`] thread that has a pod namespace.
fn on_host_side<R>(f: impl FnOnce() -> R) -> Result<R, NetnsError> {
    SIDES.with(|s| {
        let sides = s.borrow();
        let Some(sides) = sides.as_ref() else {
            return Err(NetnsError::Thread(
                "not a plumbing thread with a pod netns".into(),
            ));
        };
        sides.host.enter()?;
        let r = f();
        sides.pod.enter()?;
        Ok(r)
    })
}

/// Runs `work` on a dedicated thread holding a current-thread runtime and netlink sockets opened
/// in `host` (None: the process's namespace) and, if given, `pod`. The thread ends afterwards.
pub(crate) fn with_netlink<R, F, Fut>(
    host: Option<PathBuf>,
    pod: Option<PathBuf>,
    work: F,
) -> Result<R, PlumbError>
where
    R: Send + 'static,
    F: FnOnce(Handle, Option<(Handle, NetnsHandle)>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, PlumbError>>,
{
    // Open both before switching anything so that relative lookups cannot be affected.
    let host_ns = host.as_deref().map(NetnsHandle::open).transpose()?;
    let pod_ns = pod.as_deref().map(NetnsHandle::open).transpose()?;
    let host_disp = display_netns(host.as_deref());
    let thread = std::thread::Builder::new()
        .name("ferrovn-plumb".into())
        .spawn(move || -> Result<R, PlumbError> {
            let runtime_err = |source: std::io::Error| PlumbError::Io {
                step: Step::Runtime,
                ifname: String::new(),
                netns: host_disp.clone(),
                source,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(runtime_err)?;
            let _guard = rt.enter();
            if let Some(h) = &host_ns {
                h.enter()?;
            }
            let (conn, host_handle, _) = rtnetlink::new_connection().map_err(runtime_err)?;
            tokio::spawn(conn);
            let pod = match pod_ns {
                Some(ns) => {
                    // remembered so that /proc/sys of the host side stays reachable
                    let sides = Sides {
                        host: NetnsHandle::open(Path::new("/proc/thread-self/ns/net"))?,
                        pod: NetnsHandle::open(ns.path())?,
                    };
                    SIDES.with(|s| *s.borrow_mut() = Some(sides));
                    ns.enter()?;
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(runtime_err)?;
                    tokio::spawn(conn);
                    Some((handle, ns))
                }
                None => None,
            };
            rt.block_on(work(host_handle, pod))
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?;
    thread
        .join()
        .map_err(|_| PlumbError::Netns(NetnsError::Thread("plumbing worker panicked".into())))?
}

/// Runs a blocking plumbing call on its own thread and awaits it without blocking the runtime.
pub(crate) async fn off_runtime<R, F>(f: F) -> Result<R, PlumbError>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R, PlumbError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ferrovn-plumb-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?;
    rx.await
        .map_err(|_| PlumbError::Netns(NetnsError::Thread("plumbing worker vanished".into())))?
}

pub(crate) async fn link_by_name(
    h: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn link_alias(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.clone()),
        _ => None,
    })
}

/// Creates the veth pair and configures the pod end. Blocking; see [`plumb_veth`] for async.
/// On failure nothing is left behind.
pub fn plumb_veth_blocking(spec: &VethSpec) -> Result<PlumbedVeth, PlumbError> {
    spec.validate()?;
    let spec = spec.clone();
    with_netlink(
        spec.host_netns.clone(),
        Some(spec.pod_netns.clone()),
        move |host, pod| async move {
            let Some((pod, pod_ns)) = pod else {
                return Err(NetnsError::Thread("pod netns handle missing".into()).into());
            };
            plumb_inner(&spec, &host, &pod, &pod_ns).await
        },
    )
}

/// Async form of [`plumb_veth_blocking`]; the work runs on a dedicated thread.
pub async fn plumb_veth(spec: VethSpec) -> Result<PlumbedVeth, PlumbError> {
    off_runtime(move || plumb_veth_blocking(&spec)).await
}

async fn plumb_inner(
    spec: &VethSpec,
    host: &Handle,
    pod: &Handle,
    pod_ns: &NetnsHandle,
) -> Result<PlumbedVeth, PlumbError> {
    let host_if = spec.host_ifname();
    let tag = spec.owner_tag();
    let host_disp = display_netns(spec.host_netns.as_deref());
    let pod_disp = spec.pod_netns.display().to_string();
    let host_err = |step: Step| {
        let ifname = host_if.clone();
        let netns = host_disp.clone();
        move |source| PlumbError::Netlink {
            step,
            ifname,
            netns,
            source: Box::new(source),
        }
    };

    // A leftover of an earlier attempt for this very container interface is replaced;
    // a namesake that is not ours is never touched.
    if let Some(old) = link_by_name(host, &host_if)
        .await
        .map_err(host_err(Step::LookupHostLink))?
    {
        let found = link_alias(&old);
        if found.as_deref() != Some(tag.as_str()) {
            return Err(PlumbError::NotOurs {
                ifname: host_if,
                netns: host_disp,
                found,
                expected: tag,
            });
        }
        host.link()
            .del(old.header.index)
            .execute()
            .await
            .map_err(host_err(Step::DeleteStaleVeth))?;
    }

    // One netlink request creates both ends, the pod end directly inside the pod netns with
    // its final name, MAC and MTU: there is no moment where a half-configured pod end exists
    // under a temporary name.
    let peer = LinkUnspec::new_with_name(&spec.pod_ifname)
        .setns_by_fd(pod_ns.file().as_raw_fd())
        .address(spec.mac.octets().to_vec())
        .mtu(spec.mtu)
        .build();
    let msg = LinkVeth::new(&host_if, &spec.pod_ifname)
        .mtu(spec.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    if let Err(e) = host.link().add(msg).execute().await {
        if netlink_errno(&e) == Some(libc::EEXIST) {
            // the host name was free a moment ago, so the pod side is taken
            return Err(PlumbError::PodInterfaceExists {
                ifname: spec.pod_ifname.clone(),
                netns: pod_disp,
            });
        }
        return Err(host_err(Step::CreateVeth)(e));
    }

    let result = configure(spec, host, pod, &host_if, &tag, &host_disp, &pod_disp).await;
    match result {
        Ok(host_ifindex) => Ok(PlumbedVeth {
            host_ifname: host_if,
            host_ifindex,
            pod_ifname: spec.pod_ifname.clone(),
            pod_netns: spec.pod_netns.clone(),
            host_netns: spec.host_netns.clone(),
            owner_tag: tag,
        }),
        Err(e) => {
            // never leave a half-plumbed pod: deleting the host end takes the pod end with it
            if let Ok(Some(link)) = link_by_name(host, &host_if).await {
                let _ = host.link().del(link.header.index).execute().await;
            }
            Err(e)
        }
    }
}

async fn configure(
    spec: &VethSpec,
    host: &Handle,
    pod: &Handle,
    host_if: &str,
    tag: &str,
    host_disp: &str,
    pod_disp: &str,
) -> Result<u32, PlumbError> {
    let host_err = |step: Step| {
        let ifname = host_if.to_string();
        let netns = host_disp.to_string();
        move |source| PlumbError::Netlink {
            step,
            ifname,
            netns,
            source: Box::new(source),
        }
    };
    let pod_err = |step: Step, ifname: &str| {
        let ifname = ifname.to_string();
        let netns = pod_disp.to_string();
        move |source| PlumbError::Netlink {
            step,
            ifname,
            netns,
            source: Box::new(source),
        }
    };
    let missing = |step: Step, ifname: &str, netns: &str| PlumbError::Io {
        step,
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    };

    let host_link = link_by_name(host, host_if)
        .await
        .map_err(host_err(Step::LookupHostLink))?
        .ok_or_else(|| missing(Step::LookupHostLink, host_if, host_disp))?;
    let host_ifindex = host_link.header.index;
    // The host end is a bare L2 port of the bridge: with IPv6 on, the host kernel would give
    // it a link-local address, routes and MLD state, and every such change wakes up the
    // OVS userspace datapath (route table reloads, revalidation) once per pod. Before link up.
    on_host_side(|| disable_ipv6(host_if))
        .map_err(PlumbError::from)?
        .map_err(|source| PlumbError::Io {
            step: Step::DisableIpv6,
            ifname: host_if.to_string(),
            netns: host_disp.to_string(),
            source,
        })?;
    host.link()
        .set(
            LinkUnspec::new_with_index(host_ifindex)
                .alias(tag)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(host_err(Step::ConfigureHostEnd))?;

    let lo = link_by_name(pod, "lo")
        .await
        .map_err(pod_err(Step::LoopbackUp, "lo"))?
        .ok_or_else(|| missing(Step::LoopbackUp, "lo", pod_disp))?;
    pod.link()
        .set(LinkUnspec::new_with_index(lo.header.index).up().build())
        .execute()
        .await
        .map_err(pod_err(Step::LoopbackUp, "lo"))?;

    let ifname = spec.pod_ifname.as_str();
    let pod_link = link_by_name(pod, ifname)
        .await
        .map_err(pod_err(Step::LookupPodLink, ifname))?
        .ok_or_else(|| missing(Step::LookupPodLink, ifname, pod_disp))?;
    let idx = pod_link.header.index;

    for addr in &spec.addresses {
        let mut req = pod.address().add(idx, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            // the address is allocated cluster-wide: duplicate detection would only delay
            // readiness by a second or more
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(pod_err(Step::AddAddress(*addr), ifname))?;
    }

    if !spec.ipv6_link_local && !spec.addresses.iter().any(|a| a.addr().is_ipv6()) {
        // An IPv4-only attachment: without this the pod's kernel sends IPv6 link-local
        // chatter (DAD, MLD reports, router solicitations) that OVN floods to every port of
        // the logical switch on every node. Before link up, so not one packet leaves.
        // This thread is inside the pod netns: /proc/sys/net is the pod's.
        disable_ipv6(ifname).map_err(|source| PlumbError::Io {
            step: Step::DisableIpv6,
            ifname: ifname.to_string(),
            netns: pod_disp.to_string(),
            source,
        })?;
    }
    pod.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(pod_err(Step::PodLinkUp, ifname))?;

    let mut routes: Vec<PodRoute> = spec
        .gateways
        .iter()
        .map(|gw| PodRoute {
            dst: match gw {
                IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
                IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
            },
            via: Some(*gw),
        })
        .collect();
    routes.extend(spec.routes.iter().cloned());
    for r in &routes {
        let desc = match r.via {
            Some(via) => format!("{} via {via}", r.dst),
            None => format!("{} dev {ifname}", r.dst),
        };
        let msg = route_message(r, idx);
        pod.route()
            .add(msg)
            .execute()
            .await
            .map_err(pod_err(Step::AddRoute(desc), ifname))?;
    }

    // this thread is inside the pod netns (the pod socket was opened there last)
    if !spec.tx_offload {
        ethtool::disable_tx_checksum(ifname).map_err(|source| PlumbError::Io {
            step: Step::DisableTxChecksum,
            ifname: ifname.to_string(),
            netns: pod_disp.to_string(),
            source,
        })?;
    }
    Ok(host_ifindex)
}

pub(crate) fn route_message(r: &PodRoute, oif: u32) -> netlink_packet_route::route::RouteMessage {
    use netlink_packet_route::route::RouteScope;
    match (r.dst, r.via) {
        (IpNet::V4(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len())
                .output_interface(oif);
            match via {
                Some(IpAddr::V4(gw)) => b = b.gateway(gw),
                Some(IpAddr::V6(gw)) => b = b.via(gw),
                None => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
        (IpNet::V6(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len())
                .output_interface(oif);
            match via {
                Some(IpAddr::V6(gw)) => b = b.gateway(gw),
                // validated away; a v4 next hop for a v6 route is not expressible
                Some(IpAddr::V4(_)) | None => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
    }
}

/// Removes the veth whose host end is `host_ifname` in `host_netns`, only if its alias is `tag`.
/// Idempotent: an interface that is already gone is success.
pub fn unplumb_veth_blocking(
    host_netns: Option<&Path>,
    host_ifname: &str,
    tag: &str,
) -> Result<Removal, PlumbError> {
    let host_if = host_ifname.to_string();
    let tag = tag.to_string();
    let host_disp = display_netns(host_netns);
    with_netlink(
        host_netns.map(Path::to_path_buf),
        None,
        move |host, _| async move {
            let err = |step: Step| {
                let ifname = host_if.clone();
                let netns = host_disp.clone();
                move |source| PlumbError::Netlink {
                    step,
                    ifname,
                    netns,
                    source: Box::new(source),
                }
            };
            let Some(link) = link_by_name(&host, &host_if)
                .await
                .map_err(err(Step::LookupHostLink))?
            else {
                return Ok(Removal::AlreadyGone);
            };
            let found = link_alias(&link);
            if found.as_deref() != Some(tag.as_str()) {
                return Err(PlumbError::NotOurs {
                    ifname: host_if.clone(),
                    netns: host_disp.clone(),
                    found,
                    expected: tag.clone(),
                });
            }
            match host.link().del(link.header.index).execute().await {
                Ok(()) => Ok(Removal::Deleted),
                // raced with the pod netns going away (which takes the pair with it)
                Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(Removal::AlreadyGone),
                Err(e) => Err(err(Step::DeleteVeth)(e)),
            }
        },
    )
}

/// Async form of [`unplumb_veth_blocking`].
pub async fn unplumb_veth(
    host_netns: Option<PathBuf>,
    host_ifname: String,
    tag: String,
) -> Result<Removal, PlumbError> {
    off_runtime(move || unplumb_veth_blocking(host_netns.as_deref(), &host_ifname, &tag)).await
}

/// Host-side veths FerrOVN made (name prefix + owner-tag alias) in `host_netns`, as
/// (ifname, owner tag). Used by garbage collection.
pub fn list_host_veths(host_netns: Option<&Path>) -> Result<Vec<(String, String)>, PlumbError> {
    let host_disp = display_netns(host_netns);
    with_netlink(
        host_netns.map(Path::to_path_buf),
        None,
        move |host, _| async move {
            let links: Vec<LinkMessage> =
                host.link()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|source| PlumbError::Netlink {
                        step: Step::LookupHostLink,
                        ifname: "*".into(),
                        netns: host_disp.clone(),
                        source: Box::new(source),
                    })?;
            Ok(links
                .iter()
                .filter_map(|l| {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    let alias = link_alias(l)?;
                    (name.starts_with(ferrovn_api::names::HOST_IFNAME_PREFIX)
                        && alias.starts_with("ferrovn:"))
                    .then_some((name, alias))
                })
                .collect())
        },
    )
}

/// Async form of [`list_host_veths`].
pub async fn list_host_veths_async(
    host_netns: Option<PathBuf>,
) -> Result<Vec<(String, String)>, PlumbError> {
    off_runtime(move || list_host_veths(host_netns.as_deref())).await
}

/// Limits what the pod SENDS on `ifname` to `mbps` Mbit/s with a tbf qdisc inside the pod's
/// namespace. Needed on the OVS userspace datapath, where OVS reads veth ports through
/// AF_PACKET and so never sees the tc ingress policer behind `ingress_policing_rate`. Uses the
/// `tc` tool (iproute2), run from a thread inside the pod netns.
pub async fn limit_pod_egress(
    pod_netns: PathBuf,
    ifname: String,
    mbps: u64,
) -> Result<(), PlumbError> {
    let netns = pod_netns.display().to_string();
    let step_err = {
        let ifname = ifname.clone();
        let netns = netns.clone();
        move |source: std::io::Error| PlumbError::Io {
            step: Step::LimitEgress(mbps),
            ifname: ifname.clone(),
            netns: netns.clone(),
            source,
        }
    };
    let err2 = step_err.clone();
    off_runtime(move || {
        let rate = format!("{mbps}mbit");
        // ~10 ms worth of bytes, at least 32 KiB so one TSO-sized burst fits
        let burst = (mbps * 1_000_000 / 8 / 100).max(32 * 1024).to_string();
        let ifn = ifname.clone();
        let out = crate::netns::run_in_netns(Some(&pod_netns), move || {
            std::process::Command::new("tc")
                .args([
                    "qdisc", "replace", "dev", &ifn, "root", "tbf", "rate", &rate,
                ])
                .args(["burst", &burst, "latency", "50ms"])
                .stdin(std::process::Stdio::null())
                .output()
        })?
        .map_err(&step_err)?;
        if !out.status.success() {
            return Err(step_err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )));
        }
        Ok(())
    })
    .await
    .map_err(|e| match e {
        PlumbError::Netns(n) => err2(std::io::Error::other(n.to_string())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VethSpec {
        VethSpec {
            container_id: "abc123".into(),
            pod_netns: "/var/run/netns/x".into(),
            pod_ifname: "eth0".into(),
            host_netns: None,
            mac: "0a:58:0a:10:00:0b".parse().expect("mac"),
            mtu: 1400,
            addresses: vec!["10.16.0.11/24".parse().expect("net")],
            gateways: vec!["10.16.0.1".parse().expect("ip")],
            routes: vec![],
            ipv6_link_local: false,
            tx_offload: false,
        }
    }

    #[test]
    fn valid_spec_passes() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn spec_errors_name_the_field() {
        let mut s = spec();
        s.mtu = 20;
        assert!(matches!(s.validate(), Err(SpecError::Mtu { mtu: 20 })));
        let mut s = spec();
        s.gateways = vec!["fd00::1".parse().expect("ip")];
        assert!(matches!(s.validate(), Err(SpecError::GatewayFamily { .. })));
        let mut s = spec();
        s.pod_ifname = "this-name-is-too-long".into();
        assert!(matches!(s.validate(), Err(SpecError::IfName { .. })));
        let mut s = spec();
        s.mac = "01:00:5e:00:00:01".parse().expect("mac");
        assert!(matches!(s.validate(), Err(SpecError::MacNotUnicast { .. })));
        let mut s = spec();
        s.routes = vec![PodRoute {
            dst: "fd00::/64".parse().expect("net"),
            via: Some("10.0.0.1".parse().expect("ip")),
        }];
        assert!(matches!(s.validate(), Err(SpecError::RouteFamily { .. })));
        let mut s = spec();
        s.pod_netns = "relative/ns".into();
        assert!(matches!(s.validate(), Err(SpecError::NetnsPath { .. })));
        let mut s = spec();
        s.container_id = "bad id".into();
        assert!(matches!(s.validate(), Err(SpecError::ContainerId { .. })));
    }

    #[test]
    fn spec_json_round_trip() {
        let s = spec();
        let j = serde_json::to_string(&s).expect("serialize");
        let back: VethSpec = serde_json::from_str(&j).expect("deserialize");
        assert_eq!(back, s);
    }
}
