//! vhost-user attachments on KERNEL-profile nodes, served by the `ferrovn-vhost` helper
//! (docs/vhost-helper.md, docs/dpdk.md "DPDK pods on kernel nodes").
//!
//! The pod asks for exactly what it asks for on a DPDK node (a NAD config or pod annotation with
//! `vhost_user_socket_volume_name` / `vhost_user_socket_name`) and gets exactly the same: the
//! same short bind mount, the same socket path, the same `vhost-user.ferrovn.io/<ifname>`
//! annotation and info file ([`crate::dpdk::vhost`] plans all of that). Only the node side
//! differs: instead of a `dpdkvhostuserclient` port on OVS-DPDK the agent
//!
//! 1. creates a veth pair: end B named like the OVS-DPDK port would be ([`VhostPlan::port_name`],
//!    `vh…`) goes on br-int with the pod's `iface-id`; end A (`vk…`, [`kernel_iface_name`]) is
//!    handed to the helper; both carry the owner alias `ferrovn-vhost:<container>:<ifname>`,
//! 2. adds end B to br-int (a plain system port, external_ids as for any pod plus
//!    [`HELPER_IFACE_KEY`] / [`HELPER_SOCKET_KEY`] so a restarted agent knows the attachment),
//! 3. asks the helper (`add_port`) to relay between the pod's socket and end A (the helper is
//!    the vhost-user client, the pod's app the server, as with OVS),
//! 4. waits for `ovn-installed` like every ADD.
//!
//! DEL: OVS port, helper `remove_port`, veth. [`reconcile`] (periodic, and at agent start)
//! re-adds ports a restarted helper lost and removes helper ports and veths whose OVS record is
//! gone (pods garbage-collected while the helper was away).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovn_cni::spec::CniError;
use ferrovn_vhost_proto::client::ControlClient;
use ferrovn_vhost_proto::protocol::{KernelKind, PortInfo, PortSpec, Request, Response};
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use crate::dpdk::vhost::VhostPlan;
use crate::netns::{NetnsHandle, display_netns};
use crate::ovs::{OvsClient, PodPort, PortRecord, ext};

/// Interface external_id: the helper's end of the veth pair (end A).
pub const HELPER_IFACE_KEY: &str = "ferrovn_vhost_helper_iface";
/// Interface external_id: the host socket path the helper connects to.
pub const HELPER_SOCKET_KEY: &str = "ferrovn_vhost_helper_socket";
/// Interface external_id: the veth MTU (the pod's), for re-creating a lost pair.
pub const HELPER_MTU_KEY: &str = "ferrovn_vhost_helper_mtu";
/// Prefix of end A's name (end B uses the vhost port name, `vh…`).
pub const KERNEL_IFACE_PREFIX: &str = "vk";
/// Alias prefix of both veth ends (removal deletes only what carries our tag).
pub const ALIAS_PREFIX: &str = "ferrovn-vhost:";

/// CNI error codes of this path (the agent's range is 110..=199).
pub mod helper_code {
    /// The helper's control socket is missing, refuses connections or does not answer.
    pub const HELPER_UNAVAILABLE: u32 = 120;
    /// The helper answered but refused the port.
    pub const HELPER_REFUSED: u32 = 121;
    /// Creating or removing the veth pair failed.
    pub const VETH_FAILED: u32 = 122;
}

/// Agent settings for the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperConfig {
    /// The helper's control socket.
    pub control_socket: PathBuf,
    /// Longest wait for one helper request (connect + answer).
    pub call_timeout: Duration,
}

impl Default for HelperConfig {
    fn default() -> Self {
        HelperConfig {
            control_socket: ferrovn_vhost_proto::client::default_socket(),
            call_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "vhost helper at {socket} is not reachable: {reason} (is ferrovn-vhost running with --control-socket {socket}?)"
    )]
    Unavailable { socket: String, reason: String },
    #[error("vhost helper at {socket} refused {what}: {reason}")]
    Refused {
        socket: String,
        what: String,
        reason: String,
    },
    #[error("veth {ifname} (netns {netns}): {step}: {reason}")]
    Veth {
        ifname: String,
        netns: String,
        step: &'static str,
        reason: String,
    },
}

impl HelperError {
    /// The CNI error the plugin reports for this.
    pub fn to_cni(&self) -> CniError {
        let code = match self {
            HelperError::Unavailable { .. } => helper_code::HELPER_UNAVAILABLE,
            HelperError::Refused { .. } => helper_code::HELPER_REFUSED,
            HelperError::Veth { .. } => helper_code::VETH_FAILED,
        };
        let msg = match self {
            HelperError::Unavailable { .. } => "the vhost helper (ferrovn-vhost) is not running",
            HelperError::Refused { .. } => "the vhost helper refused the attachment",
            HelperError::Veth { .. } => "plumbing the vhost helper's veth pair failed",
        };
        CniError::new(code, msg, self.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parts.

/// End A (the helper's kernel interface): `vk` + the 13 hex digits of the attachment's hash.
pub fn kernel_iface_name(plan: &VhostPlan) -> String {
    let hex = plan
        .port_name
        .get(2..)
        .unwrap_or(plan.port_name.as_str())
        .to_string();
    format!("{KERNEL_IFACE_PREFIX}{hex}")
}

/// The alias both veth ends carry.
pub fn veth_alias(container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{container_id}:{ifname}")
}

/// The helper port of an attachment (its name is the OVS port name, unique per attachment).
pub fn port_spec(plan: &VhostPlan) -> PortSpec {
    PortSpec {
        name: plan.port_name.clone(),
        socket: plan.host_socket.clone(),
        kernel_iface: kernel_iface_name(plan),
        kernel: KernelKind::AfPacket,
        mac: None,
    }
}

/// Turns the OVS-DPDK port of `plan` ([`crate::dpdk::vhost::vhost_port`]) into end B: a plain
/// port (no type, no vhost options) that keeps every external_id, plus the helper keys.
pub fn kernel_port(mut vhost_port: PodPort, plan: &VhostPlan) -> PodPort {
    vhost_port.iface_type = String::new();
    vhost_port.options.remove("vhost-server-path");
    vhost_port
        .external_ids
        .insert(HELPER_IFACE_KEY.into(), kernel_iface_name(plan));
    vhost_port.external_ids.insert(
        HELPER_SOCKET_KEY.into(),
        plan.host_socket.display().to_string(),
    );
    vhost_port
        .external_ids
        .insert(HELPER_MTU_KEY.into(), plan.info.mtu.to_string());
    // the userspace datapath cannot police on ingress; the helper path has no QoS yet
    vhost_port.egress_qos = None;
    vhost_port
}

/// The helper port an OVS record stands for (`None`: not a helper attachment).
pub fn spec_of_record(rec: &PortRecord) -> Option<PortSpec> {
    let iface = rec.get(HELPER_IFACE_KEY)?;
    let socket = rec.get(HELPER_SOCKET_KEY)?;
    Some(PortSpec {
        name: rec.name.clone(),
        socket: PathBuf::from(socket),
        kernel_iface: iface.to_string(),
        kernel: KernelKind::AfPacket,
        mac: None,
    })
}

/// End B's OVS port as recorded (without the keys ovn-controller owns), to re-create it.
pub fn port_of_record(rec: &PortRecord) -> PodPort {
    let mut external_ids = rec.external_ids.clone();
    external_ids.retain(|k, _| !k.starts_with(ext::OVN_INSTALLED));
    PodPort {
        name: rec.name.clone(),
        iface_type: String::new(),
        options: BTreeMap::new(),
        external_ids,
        ingress_policing_kbps: None,
        egress_qos: None,
    }
}

/// Removes and re-adds end B's port with ovs-vswitchd having applied the removal in between
/// (within one reconfiguration a remove + add of the same name is no change at all).
async fn reopen_ovs_port(
    ovs: &OvsClient,
    bridge: &str,
    rec: &PortRecord,
) -> Result<(), crate::ovs::OvsError> {
    ovs.remove_port(&rec.name).await?;
    vswitchd_applied(ovs, Duration::from_secs(5)).await?;
    ovs.add_port(bridge, &port_of_record(rec)).await
}

/// Waits until ovs-vswitchd has applied the database as it is now (`next_cfg` bumped, then
/// `cur_cfg` catching up: what `ovs-vsctl --wait=vswitchd` does). Gives up quietly at `limit`.
async fn vswitchd_applied(ovs: &OvsClient, limit: Duration) -> Result<(), crate::ovs::OvsError> {
    use ferrovn_ovsdb::{Mutator, Operation, Transaction};
    let cfg_of = |res: &[ferrovn_ovsdb::OpResult], i: usize, col: &str| -> Option<i64> {
        res.get(i)?
            .rows()?
            .first()?
            .get(col)?
            .as_atom()?
            .as_integer()
    };
    let bump = Transaction::new(crate::ovs::OVS_DB)
        .with(Operation::mutate("Open_vSwitch").mutation("next_cfg", Mutator::Add, 1i64))
        .with(Operation::select("Open_vSwitch").columns(["next_cfg"]));
    let res = ovs.transact(&bump).await?;
    let Some(target) = cfg_of(&res, 1, "next_cfg") else {
        return Ok(());
    };
    let probe = Transaction::new(crate::ovs::OVS_DB)
        .with(Operation::select("Open_vSwitch").columns(["cur_cfg"]));
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let res = ovs.transact(&probe).await?;
        if cfg_of(&res, 0, "cur_cfg").is_some_and(|c| c >= target) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(
        "ovs-vswitchd did not apply the configuration within {limit:?}; re-adding anyway"
    );
    Ok(())
}

/// What one reconcile pass does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Desired ports the helper does not have (it restarted without its state file, or lost
    /// one): add them.
    pub add: Vec<PortSpec>,
    /// Helper ports with the same name but another spec: remove, then add.
    pub replace: Vec<PortSpec>,
    /// Helper ports no OVS record wants (the pod is gone): remove, with their veth.
    pub remove: Vec<PortInfo>,
}

/// Pure: desired specs (from OVSDB) vs the helper's ports.
pub fn reconcile_plan(desired: &[PortSpec], actual: &[PortInfo]) -> ReconcilePlan {
    let actual_by_name: BTreeMap<&str, &PortInfo> =
        actual.iter().map(|p| (p.spec.name.as_str(), p)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let mut plan = ReconcilePlan::default();
    for d in desired {
        match actual_by_name.get(d.name.as_str()) {
            None => plan.add.push(d.clone()),
            Some(a) if a.spec != *d => plan.replace.push(d.clone()),
            Some(_) => {}
        }
    }
    plan.remove = actual
        .iter()
        .filter(|a| !wanted.contains(a.spec.name.as_str()))
        .cloned()
        .collect();
    plan
}

// ---------------------------------------------------------------------------------------------
// The helper's control socket.

/// One request to the helper on a blocking thread, bounded by `cfg.call_timeout`.
pub async fn call(cfg: &HelperConfig, request: Request) -> Result<Response, HelperError> {
    let socket = cfg.control_socket.clone();
    let shown = socket.display().to_string();
    let work = tokio::task::spawn_blocking(move || -> std::io::Result<Response> {
        let mut client = ControlClient::connect(&socket)?;
        client.call(&request)
    });
    match tokio::time::timeout(cfg.call_timeout, work).await {
        Err(_) => Err(HelperError::Unavailable {
            socket: shown,
            reason: format!("no answer within {:?}", cfg.call_timeout),
        }),
        Ok(Err(join)) => Err(HelperError::Unavailable {
            socket: shown,
            reason: join.to_string(),
        }),
        Ok(Ok(Err(io))) => Err(HelperError::Unavailable {
            socket: shown,
            reason: io.to_string(),
        }),
        Ok(Ok(Ok(r))) => Ok(r),
    }
}

fn refused(cfg: &HelperConfig, what: String, r: Response) -> HelperError {
    HelperError::Refused {
        socket: cfg.control_socket.display().to_string(),
        what,
        reason: r.error.unwrap_or_else(|| "no reason given".into()),
    }
}

async fn add_port(cfg: &HelperConfig, spec: &PortSpec) -> Result<(), HelperError> {
    let what = format!("add_port {}", spec.name);
    let r = call(cfg, Request::AddPort(spec.clone())).await?;
    if r.ok {
        Ok(())
    } else {
        Err(refused(cfg, what, r))
    }
}

/// Removes helper port `name`; a port the helper does not know is success.
pub async fn remove_port(cfg: &HelperConfig, name: &str) -> Result<(), HelperError> {
    let r = call(
        cfg,
        Request::RemovePort {
            name: name.to_string(),
        },
    )
    .await?;
    let unknown = r
        .error
        .as_deref()
        .is_some_and(|e| e.contains("unknown") || e.contains("no such") || e.contains("not found"));
    if r.ok || unknown {
        Ok(())
    } else {
        Err(refused(cfg, format!("remove_port {name}"), r))
    }
}

/// The helper's ports.
pub async fn list_ports(cfg: &HelperConfig) -> Result<Vec<PortInfo>, HelperError> {
    let r = call(cfg, Request::ListPorts).await?;
    if r.ok {
        Ok(r.ports.unwrap_or_default())
    } else {
        Err(refused(cfg, "list_ports".into(), r))
    }
}

// ---------------------------------------------------------------------------------------------
// The veth pair (rtnetlink on a dedicated thread, optionally inside `host_netns`).

fn veth_err(ifname: &str, netns: Option<&Path>, step: &'static str, reason: String) -> HelperError {
    HelperError::Veth {
        ifname: ifname.to_string(),
        netns: display_netns(netns),
        step,
        reason,
    }
}

fn with_handle<R, F, Fut>(netns: Option<PathBuf>, ifname: &str, work: F) -> Result<R, HelperError>
where
    R: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, HelperError>>,
{
    let ns = netns
        .as_deref()
        .map(NetnsHandle::open)
        .transpose()
        .map_err(|e| veth_err(ifname, netns.as_deref(), "opening the netns", e.to_string()))?;
    let name = ifname.to_string();
    let shown = netns.clone();
    std::thread::Builder::new()
        .name("ferrovn-vhost-veth".into())
        .spawn(move || -> Result<R, HelperError> {
            let fail = |step, reason: String| veth_err(&name, shown.as_deref(), step, reason);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail("runtime", e.to_string()))?;
            let _guard = rt.enter();
            if let Some(h) = &ns {
                h.enter()
                    .map_err(|e| fail("entering the netns", e.to_string()))?;
            }
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| fail("netlink", e.to_string()))?;
            tokio::spawn(conn);
            rt.block_on(work(handle))
        })
        .map_err(|e| veth_err(ifname, netns.as_deref(), "thread", e.to_string()))?
        .join()
        .map_err(|_| veth_err(ifname, netns.as_deref(), "thread", "panicked".into()))?
}

async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}

fn alias_of(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.clone()),
        _ => None,
    })
}

/// Creates (or keeps, if ours already) the veth pair `end_a` <-> `end_b`, both up, tagged.
/// True if it had to be created.
pub fn ensure_veth_blocking(
    netns: Option<PathBuf>,
    end_a: &str,
    end_b: &str,
    alias: &str,
    mtu: u32,
) -> Result<bool, HelperError> {
    let (a, b, tag) = (end_a.to_string(), end_b.to_string(), alias.to_string());
    let shown = netns.clone();
    with_handle(netns, end_a, move |h| async move {
        let fail = |name: &str, step, e: String| veth_err(name, shown.as_deref(), step, e);
        let both = (
            link(&h, &a)
                .await
                .map_err(|e| fail(&a, "lookup", e.to_string()))?,
            link(&h, &b)
                .await
                .map_err(|e| fail(&b, "lookup", e.to_string()))?,
        );
        let ours = |l: &Option<LinkMessage>| l.as_ref().and_then(alias_of).as_deref() == Some(&tag);
        let mut created = true;
        match &both {
            (Some(_), Some(_)) if ours(&both.0) && ours(&both.1) => created = false,
            (None, None) => {
                h.link()
                    .add(LinkVeth::new(&a, &b).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(|e| fail(&a, "creating the veth pair", e.to_string()))?;
            }
            _ => {
                // a half pair or a namesake: replace only what carries our tag
                for (name, l) in [(&a, &both.0), (&b, &both.1)] {
                    if let Some(l) = l {
                        if !ours(&Some(l.clone())) {
                            return Err(fail(
                                name,
                                "name taken",
                                format!("exists but is not ours (alias {:?})", alias_of(l)),
                            ));
                        }
                        let _ = h.link().del(l.header.index).execute().await;
                    }
                }
                h.link()
                    .add(LinkVeth::new(&a, &b).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(|e| fail(&a, "creating the veth pair", e.to_string()))?;
            }
        }
        for name in [&a, &b] {
            let l = link(&h, name)
                .await
                .map_err(|e| fail(name, "lookup", e.to_string()))?
                .ok_or_else(|| fail(name, "lookup", "vanished after creation".into()))?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(l.header.index)
                        .alias(tag.clone())
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| fail(name, "setting alias and up", e.to_string()))?;
        }
        // End B is what the node's datapath writes the pod's traffic into. A veth keeps a
        // partial checksum (and a TSO super-packet) as the sender left it, and the helper's
        // AF_PACKET socket on end A gets the packet that way: DPDK's af_packet PMD drops the
        // "checksum not ready" flag, so the pod received TCP from same-node pods with the
        // pseudo-header sum only and dropped it (TcpInCsumErrors; the lab's dpdk-b never
        // reached same-node Service backends). Without tx checksum offload on end B the kernel
        // completes checksums (and segments) before the veth, only where a sender left them
        // unfinished. Also on an existing pair: a pair made by an older agent gets it too.
        crate::ethtool::disable_tx_checksum(&b)
            .map_err(|e| fail(&b, "tx checksum offload off", e.to_string()))?;
        Ok(created)
    })
}

/// Deletes the veth pair whose end A is `end_a`, only if it carries our alias prefix.
/// Idempotent.
pub fn delete_veth_blocking(netns: Option<PathBuf>, end_a: &str) -> Result<(), HelperError> {
    let a = end_a.to_string();
    let shown = netns.clone();
    with_handle(netns, end_a, move |h| async move {
        let Some(l) = link(&h, &a)
            .await
            .map_err(|e| veth_err(&a, shown.as_deref(), "lookup", e.to_string()))?
        else {
            return Ok(());
        };
        if !alias_of(&l).is_some_and(|s| s.starts_with(ALIAS_PREFIX)) {
            return Err(veth_err(
                &a,
                shown.as_deref(),
                "delete",
                format!("not ours (alias {:?})", alias_of(&l)),
            ));
        }
        match h.link().del(l.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => Ok(()),
            Err(e) => Err(veth_err(&a, shown.as_deref(), "delete", e.to_string())),
        }
    })
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, HelperError> + Send + 'static,
) -> Result<R, HelperError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HelperError::Veth {
            ifname: String::new(),
            netns: String::new(),
            step: "worker",
            reason: e.to_string(),
        })?
}

// ---------------------------------------------------------------------------------------------
// The agent's steps.

/// ADD, node side before the OVS port: the veth pair. Returns end A's name.
pub async fn plumb(
    host_netns: Option<PathBuf>,
    plan: &VhostPlan,
    container_id: &str,
    ifname: &str,
) -> Result<String, HelperError> {
    let end_a = kernel_iface_name(plan);
    let (a, b) = (end_a.clone(), plan.port_name.clone());
    let alias = veth_alias(container_id, ifname);
    let mtu = plan.info.mtu;
    blocking(move || ensure_veth_blocking(host_netns, &a, &b, &alias, mtu)).await?;
    Ok(end_a)
}

/// ADD, after the OVS port exists: the helper relays the pod's socket to end A.
pub async fn attach(cfg: &HelperConfig, plan: &VhostPlan) -> Result<(), HelperError> {
    let spec = port_spec(plan);
    match add_port(cfg, &spec).await {
        Ok(()) => Ok(()),
        Err(HelperError::Refused { reason, .. }) if reason.contains("differ") => {
            // a stale port of an earlier attempt under the same name: replace it
            remove_port(cfg, &spec.name).await?;
            add_port(cfg, &spec).await
        }
        Err(e) => Err(e),
    }
}

/// Undoes [`plumb`] + [`attach`] (rollback and DEL). The helper being away does not stop the
/// veth from going: [`reconcile`] removes the helper's port once it is back.
pub async fn detach(
    cfg: &HelperConfig,
    host_netns: Option<PathBuf>,
    port_name: &str,
    end_a: &str,
) -> Result<(), HelperError> {
    let helper = remove_port(cfg, port_name).await;
    if let Err(e) = &helper {
        tracing::warn!(port = port_name, error = %e, "vhost helper: remove_port failed; removing the veth anyway");
    }
    let a = end_a.to_string();
    blocking(move || delete_veth_blocking(host_netns, &a)).await?;
    match helper {
        Err(HelperError::Refused { .. }) => helper,
        _ => Ok(()),
    }
}

/// DEL / GC of one OVS record: nothing for records that are not helper attachments.
pub async fn release_record(
    cfg: &HelperConfig,
    host_netns: Option<PathBuf>,
    rec: &PortRecord,
) -> Result<(), CniError> {
    let Some(spec) = spec_of_record(rec) else {
        return Ok(());
    };
    detach(cfg, host_netns, &spec.name, &spec.kernel_iface)
        .await
        .map_err(|e| e.to_cni())
}

/// What a reconcile pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub kept: usize,
}

/// One pass: OVSDB (the agent's truth) against the helper's list. Re-adds what a restarted
/// helper lost (re-creating a missing veth first), removes helper ports and veths whose OVS
/// record is gone.
pub async fn reconcile(
    cfg: &HelperConfig,
    ovs: &OvsClient,
    bridge: &str,
    host_netns: Option<PathBuf>,
) -> Result<ReconcileReport, HelperError> {
    let recs = ovs
        .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
        .await
        .map_err(|e| HelperError::Refused {
            socket: cfg.control_socket.display().to_string(),
            what: "reconcile".into(),
            reason: format!("reading OVSDB: {e}"),
        })?;
    let desired: Vec<(PortSpec, &PortRecord, String, u32)> = recs
        .iter()
        .filter_map(|r| {
            let spec = spec_of_record(r)?;
            let alias = veth_alias(r.get(ext::CONTAINER_ID)?, r.get(ext::IFNAME)?);
            let mtu = r
                .get(HELPER_MTU_KEY)
                .and_then(|m| m.parse().ok())
                .unwrap_or(1500);
            Some((spec, r, alias, mtu))
        })
        .collect();
    let specs: Vec<PortSpec> = desired.iter().map(|(s, _, _, _)| s.clone()).collect();
    let actual = list_ports(cfg).await?;
    let plan = reconcile_plan(&specs, &actual);
    let mut report = ReconcileReport {
        kept: specs.len() - plan.add.len() - plan.replace.len(),
        ..ReconcileReport::default()
    };
    for stale in &plan.remove {
        remove_port(cfg, &stale.spec.name).await?;
        if stale.spec.kernel_iface.starts_with(KERNEL_IFACE_PREFIX) {
            let (ns, a) = (host_netns.clone(), stale.spec.kernel_iface.clone());
            if let Err(e) = blocking(move || delete_veth_blocking(ns, &a)).await {
                tracing::warn!(error = %e, "vhost helper reconcile: veth removal");
            }
        }
        tracing::info!(port = %stale.spec.name, "vhost helper: removed the port of a vanished pod");
        report.removed.push(stale.spec.name.clone());
    }
    for spec in plan.replace.iter().chain(&plan.add) {
        if plan.replace.contains(spec) {
            remove_port(cfg, &spec.name).await?;
        }
        if let Some((_, rec, alias, mtu)) = desired.iter().find(|(s, _, _, _)| s.name == spec.name)
        {
            let (ns, a, b, t, mtu) = (
                host_netns.clone(),
                spec.kernel_iface.clone(),
                rec.name.clone(),
                alias.clone(),
                *mtu,
            );
            match blocking(move || ensure_veth_blocking(ns, &a, &b, &t, mtu)).await {
                Ok(false) => {}
                Ok(true) => {
                    // ovs-vswitchd keeps a vanished device's socket when it comes back under the
                    // same name: take the port off the bridge, let vswitchd act on it, re-add
                    if let Err(e) = reopen_ovs_port(ovs, bridge, rec).await {
                        tracing::warn!(port = %spec.name, error = %e, "vhost helper: re-adding the OVS port failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(port = %spec.name, error = %e, "vhost helper: re-creating the veth failed");
                    continue;
                }
            }
        }
        match add_port(cfg, spec).await {
            Ok(()) => {
                tracing::info!(port = %spec.name, "vhost helper: port re-added");
                report.added.push(spec.name.clone());
            }
            // one bad port (e.g. its socket directory vanished) must not block the others
            Err(e) => {
                tracing::warn!(port = %spec.name, error = %e, "vhost helper: re-adding failed")
            }
        }
    }
    Ok(report)
}

/// Runs [`reconcile`] now and then every `every`, forever (spawn it). A helper that is down is
/// logged once per outage, and its ports come back on the first pass after it returns.
pub async fn reconcile_loop(
    cfg: HelperConfig,
    ovs: OvsClient,
    bridge: String,
    host_netns: Option<PathBuf>,
    every: Duration,
) {
    let mut down = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match reconcile(&cfg, &ovs, &bridge, host_netns.clone()).await {
            Ok(r) => {
                if down {
                    tracing::info!(socket = %cfg.control_socket.display(), "vhost helper is back");
                }
                down = false;
                if !r.added.is_empty() || !r.removed.is_empty() {
                    tracing::info!(added = ?r.added, removed = ?r.removed, kept = r.kept, "vhost helper reconciled");
                }
            }
            Err(e @ HelperError::Unavailable { .. }) => {
                if !down {
                    tracing::warn!(error = %e, "vhost helper unavailable; vhost-user pods on this node are cut off until it returns");
                }
                down = true;
            }
            Err(e) => tracing::warn!(error = %e, "vhost helper reconcile failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::PodAllocation;
    use crate::dpdk::vhost::{KubeletVolumes, PodVolumeRef, VhostConfig, VhostRequest, plan};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn a_plan(cid: &str, ifname: &str) -> VhostPlan {
        let cfg = VhostConfig {
            dir: "/run/ferrovn/vhu".into(),
            volumes: Arc::new(KubeletVolumes {
                root: "/var/lib/kubelet".into(),
            }),
            host_mount_ns: None,
            annotations: None,
        };
        let alloc = PodAllocation {
            provider: "dpdk.default.ovn".into(),
            logical_switch: "ls1".into(),
            mac: "0a:58:0a:10:00:15".parse().expect("mac"),
            addresses: vec!["10.16.0.21/24".parse().expect("ip")],
            gateways: vec![],
            routes: vec![],
            ingress_rate_mbps: None,
            egress_rate_mbps: None,
            vhost_user: None,
            ipv6_link_local: false,
        };
        let req = VhostRequest {
            container_id: cid,
            ifname,
            netns: "/var/run/netns/p",
            pod: PodVolumeRef {
                namespace: "default",
                name: "dpdk-0",
                uid: Some("8d5e7c9a-1b2c-4d3e-9f80-112233445566"),
            },
            provider: "dpdk.default.ovn",
            volume: Some("vhu"),
            socket: Some("sock0"),
            mtu: 1400,
        };
        plan(&cfg, &req, &alloc).expect("plan")
    }

    fn info(spec: PortSpec) -> PortInfo {
        PortInfo {
            spec,
            core: 1,
            pod_connected: false,
            counters: Default::default(),
        }
    }

    #[test]
    fn spec_is_valid_for_the_helper_and_round_trips_through_ovsdb() {
        let p = a_plan("c0ffee", "net1");
        let spec = port_spec(&p);
        spec.validate().expect("helper accepts it");
        assert_eq!(spec.socket, p.host_socket);
        assert_eq!(spec.kernel_iface.len(), 15);
        assert!(spec.kernel_iface.starts_with("vk"));
        assert_ne!(spec.kernel_iface, p.port_name);
        let base = PodPort {
            name: p.port_name.clone(),
            iface_type: "dpdkvhostuserclient".into(),
            options: [("vhost-server-path".to_string(), "/x".to_string())].into(),
            external_ids: [(ext::IFACE_ID.to_string(), "dpdk-0.default".to_string())].into(),
            ingress_policing_kbps: None,
            egress_qos: None,
        };
        let port = kernel_port(base, &p);
        assert_eq!(port.iface_type, "");
        assert!(port.options.is_empty());
        assert_eq!(port.external_ids[ext::IFACE_ID], "dpdk-0.default");
        let rec = PortRecord {
            name: port.name.clone(),
            external_ids: port.external_ids.clone(),
        };
        assert_eq!(spec_of_record(&rec), Some(spec));
        let mut installed = rec.clone();
        installed
            .external_ids
            .insert(ext::OVN_INSTALLED.into(), "true".into());
        let again = port_of_record(&installed);
        assert_eq!(again.external_ids, port.external_ids);
        assert_eq!(again.iface_type, "");
        let plain = PortRecord {
            name: "fv0".into(),
            external_ids: BTreeMap::new(),
        };
        assert_eq!(spec_of_record(&plain), None);
    }

    #[test]
    fn reconcile_adds_lost_removes_orphans_replaces_changed() {
        let s = |n: &str, sock: &str| PortSpec {
            name: n.into(),
            socket: sock.into(),
            kernel_iface: format!("vk{n}"),
            kernel: KernelKind::AfPacket,
            mac: None,
        };
        let desired = vec![s("a", "/s/a"), s("b", "/s/b"), s("c", "/s/c")];
        let actual = vec![
            info(s("a", "/s/a")),
            info(s("b", "/s/other")),
            info(s("z", "/s/z")),
        ];
        let p = reconcile_plan(&desired, &actual);
        assert_eq!(p.add, vec![s("c", "/s/c")]);
        assert_eq!(p.replace, vec![s("b", "/s/b")]);
        assert_eq!(p.remove.len(), 1);
        assert_eq!(p.remove[0].spec.name, "z");
        assert_eq!(reconcile_plan(&desired, &[]).add.len(), 3);
        assert!(reconcile_plan(&[], &[]).remove.is_empty());
    }

    #[test]
    fn errors_are_cni_errors_in_the_agent_range_naming_the_socket() {
        let e = HelperError::Unavailable {
            socket: "/run/ferrovn/vhost.sock".into(),
            reason: "No such file or directory".into(),
        };
        let c = e.to_cni();
        assert_eq!(c.code, helper_code::HELPER_UNAVAILABLE);
        assert!((110..=199).contains(&c.code));
        assert!(
            c.details.contains("/run/ferrovn/vhost.sock"),
            "{}",
            c.details
        );
    }

    #[tokio::test]
    async fn a_missing_helper_fails_fast_naming_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = HelperConfig {
            control_socket: dir.path().join("vhost.sock"),
            call_timeout: Duration::from_secs(5),
        };
        let t = std::time::Instant::now();
        let e = list_ports(&cfg).await.expect_err("no helper");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, HelperError::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("vhost.sock"), "{e}");
        // a socket nobody answers on: bounded by the timeout, not a hang
        let silent = dir.path().join("silent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
        let cfg = HelperConfig {
            control_socket: silent,
            call_timeout: Duration::from_millis(300),
        };
        let e = list_ports(&cfg).await.expect_err("silent");
        assert!(e.to_string().contains("no answer"), "{e}");
    }

    proptest! {
        #[test]
        fn every_attachment_gets_a_valid_distinct_spec(cid in "[a-f0-9]{1,64}", ifn in "[a-z0-9]{1,15}") {
            let p = a_plan(&cid, &ifn);
            let spec = port_spec(&p);
            prop_assert!(spec.validate().is_ok());
            prop_assert!(crate::types::validate_ifname(&spec.kernel_iface).is_ok());
            prop_assert_ne!(&spec.kernel_iface, &p.port_name);
        }
    }
}
