//! SR-IOV VF attachments: a CNI request carrying a `device_id` (the VF's PCI address, as
//! Multus and the SR-IOV device plugin pass it) gets the VF instead of a veth.
//!
//! - kernel pods: the VF netdev moves into the pod's netns, renamed to the requested ifname,
//!   with the allocated MAC, MTU, addresses and routes;
//! - DPDK pods (netconf `"dpdk": true`, or the VF already bound to a userspace driver): the
//!   VF stays where it is; its PCI address goes to the pod (annotation
//!   `pci-address.ferrovn.io/<ifname>` and the CNI result's `pciID`);
//! - either way the VF's representor goes onto br-int with `external_ids:iface-id=<lsp>` and
//!   the agent's usual pod keys, and ADD returns once OVN installed the port.
//!
//! The VF's host name is kept in the port's `external_ids` (`ferrovn_vf_netdev`): once the
//! netdev is in the pod it is gone from the host's sysfs, and DEL must give it back by name.

use std::path::{Path, PathBuf};

use ferrovn_cni::spec::{CniError, code};
use ferrovn_hwoffload::{
    AttachError, DpdkDriverPolicy, OffloadSettings, PciAddress, PodDatapath, Sysfs, SysfsError,
    VfAttachment, plan_vf_attachment,
};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::{Handle, LinkUnspec};

use crate::netns::{NetnsHandle, display_netns};
use crate::ovs::PortRecord;
use crate::plumbing::{
    PlumbError, PodRoute, Removal, Step, link_alias, link_by_name, netlink_errno, off_runtime,
    route_message, with_netlink,
};
use crate::types::validate_ifname;
use ferrovn_api::MacAddr;

/// CNI error codes of VF attachments (110-114: the agent, 120-122: the vhost helper).
pub mod vf_code {
    /// The `deviceID` names no VF on this node (not a PCI address, not a VF, no such device).
    pub const VF_NOT_FOUND: u32 = 130;
    /// The VF exists but cannot be attached as asked (no representor, wrong driver, no netdev).
    pub const VF_UNUSABLE: u32 = 131;
}

/// Interface `external_ids` keys of VF attachments.
pub mod vf_ext {
    /// The VF's PCI address (also what marks the record as a VF attachment).
    pub const VF_PCI: &str = "ferrovn_vf_pci";
    /// The VF netdev's host name (kernel pods), to give it back on DEL.
    pub const VF_NETDEV: &str = "ferrovn_vf_netdev";
    /// `kernel` | `dpdk`.
    pub const VF_MODE: &str = "ferrovn_vf_mode";
    /// The PF netdev (eswitch to ask devlink about).
    pub const VF_PF: &str = "ferrovn_vf_pf";
}

/// Pod annotation with the VF's PCI address of a DPDK pod interface.
pub fn pci_annotation(ifname: &str) -> String {
    format!("pci-address.ferrovn.io/{ifname}")
}

/// Node settings for VF attachments and the `offload` node profile.
#[derive(Debug, Clone)]
pub struct SriovConfig {
    /// Where `sys/` is found (`/` on a node; a fixture tree in tests).
    pub sysfs_root: PathBuf,
    /// Drivers a DPDK pod's VF may be bound to.
    pub dpdk_drivers: DpdkDriverPolicy,
    /// The `offload` node profile: `Some` = OVS hw-offload wanted (set at agent start).
    pub offload: Option<OffloadSettings>,
    /// ovs-vswitchd's unixctl target for `ovs-appctl -t` (`None`: ovs-appctl's default).
    pub vswitchd_ctl: Option<PathBuf>,
    /// Lab: where node annotations (`offload-node-annotations.json`) are written.
    pub state_dir: Option<PathBuf>,
}

impl Default for SriovConfig {
    fn default() -> Self {
        SriovConfig {
            sysfs_root: PathBuf::from("/"),
            dpdk_drivers: DpdkDriverPolicy::default(),
            offload: None,
            vswitchd_ctl: None,
            state_dir: None,
        }
    }
}

/// Whether `rec` is a VF attachment's representor port.
pub fn is_vf_record(rec: &PortRecord) -> bool {
    rec.get(vf_ext::VF_PCI).is_some()
}

/// The pod datapath asked for: netconf `"dpdk": true` (or `"vf_mode": "dpdk"`), else DPDK when
/// the VF is already bound to one of the DPDK drivers, else kernel.
pub fn pod_datapath(
    netconf: &serde_json::Value,
    vf_driver: Option<&str>,
    policy: &DpdkDriverPolicy,
) -> PodDatapath {
    let asked = netconf.get("dpdk").and_then(serde_json::Value::as_bool);
    let mode = netconf.get("vf_mode").and_then(serde_json::Value::as_str);
    match (asked, mode) {
        (Some(true), _) | (_, Some("dpdk")) => PodDatapath::Dpdk,
        (Some(false), _) | (_, Some("kernel")) => PodDatapath::Kernel,
        _ if vf_driver.is_some_and(|d| policy.allowed.iter().any(|a| a == d)) => PodDatapath::Dpdk,
        _ => PodDatapath::Kernel,
    }
}

fn vf_not_found(device: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        vf_code::VF_NOT_FOUND,
        format!("SR-IOV device {device} not found on this node"),
        e.to_string(),
    )
}

fn vf_unusable(device: &str, e: &AttachError) -> CniError {
    CniError::new(
        vf_code::VF_UNUSABLE,
        format!("SR-IOV device {device} cannot be attached"),
        e.to_string(),
    )
}

/// Finds the VF of `device` and decides the attachment (pure apart from reading sysfs).
pub fn plan_for_device(
    cfg: &SriovConfig,
    device: &str,
    netconf: &serde_json::Value,
) -> Result<VfAttachment, CniError> {
    let pci: PciAddress = device.trim().parse().map_err(|e| {
        CniError::new(
            code::INVALID_NETCONF,
            format!("deviceID {device:?} is not a PCI address"),
            format!("{e}"),
        )
    })?;
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let location = sysfs
        .find_vf(&pci)
        .map_err(|e: SysfsError| vf_not_found(device, e))?;
    let datapath = pod_datapath(netconf, location.vf.driver.as_deref(), &cfg.dpdk_drivers);
    plan_vf_attachment(&location, datapath, &cfg.dpdk_drivers).map_err(|e| vf_unusable(device, &e))
}

/// What moving a VF netdev into a pod needs.
#[derive(Debug, Clone)]
pub struct VfMoveSpec {
    pub host_netns: Option<PathBuf>,
    pub pod_netns: PathBuf,
    /// The VF netdev's name in the host namespace.
    pub vf_netdev: String,
    pub pod_ifname: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    pub gateways: Vec<std::net::IpAddr>,
    pub routes: Vec<PodRoute>,
    /// Alias set on the VF while it is in the pod (proves it is ours on DEL).
    pub owner_tag: String,
}

/// The step of moving a VF netdev that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfStep {
    MoveIntoPod,
    RenameInPod,
    RenameForHost,
    MoveToHost,
}

impl std::fmt::Display for VfStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VfStep::MoveIntoPod => "moving the VF netdev into the pod's netns",
            VfStep::RenameInPod => "renaming the VF netdev to the pod's interface name",
            VfStep::RenameForHost => "renaming the VF netdev back to its host name",
            VfStep::MoveToHost => "moving the VF netdev back to the host netns",
        })
    }
}

/// Why a VF netdev could not be moved or configured.
#[derive(Debug, thiserror::Error)]
pub enum VfError {
    #[error(transparent)]
    Plumb(#[from] PlumbError),
    #[error("{step} (netdev {netdev}, netns {netns}): {source}")]
    Netlink {
        step: VfStep,
        netdev: String,
        netns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl From<crate::netns::NetnsError> for VfError {
    fn from(e: crate::netns::NetnsError) -> Self {
        VfError::Plumb(e.into())
    }
}

fn vf_err(step: VfStep, netdev: &str, netns: &str) -> impl FnOnce(rtnetlink::Error) -> VfError {
    let netdev = netdev.to_string();
    let netns = netns.to_string();
    move |source| VfError::Netlink {
        step,
        netdev,
        netns,
        source: Box::new(source),
    }
}

fn host_ns_path(host: Option<&Path>) -> PathBuf {
    // the agent never moves its main thread, so /proc/self is the agent's namespace
    host.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"))
}

fn nl_err(step: Step, ifname: &str, netns: &str) -> impl FnOnce(rtnetlink::Error) -> PlumbError {
    let ifname = ifname.to_string();
    let netns = netns.to_string();
    move |source| PlumbError::Netlink {
        step,
        ifname,
        netns,
        source: Box::new(source),
    }
}

fn missing(step: Step, ifname: &str, netns: &str) -> PlumbError {
    PlumbError::Io {
        step,
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    }
}

/// Moves the VF netdev into the pod and configures it. Idempotent: a VF already in the pod
/// under our owner tag is reconfigured. On failure the VF goes back to the host.
pub async fn move_vf_into_pod(spec: VfMoveSpec) -> Result<(), VfError> {
    validate_ifname(&spec.pod_ifname).map_err(PlumbError::from)?;
    off_runtime(move || {
        let host_fd = NetnsHandle::open(&host_ns_path(spec.host_netns.as_deref()))?;
        with_netlink(
            spec.host_netns.clone(),
            Some(spec.pod_netns.clone()),
            move |host, pod| async move {
                let Some((pod, pod_ns)) = pod else {
                    return Err(crate::netns::NetnsError::Thread("pod netns missing".into()).into());
                };
                let res = move_and_configure(&spec, &host, &pod, &pod_ns).await;
                if res.is_err() {
                    let _ = give_back(&spec, &pod, &host_fd).await;
                }
                Ok(res)
            },
        )
    })
    .await?
}

async fn move_and_configure(
    spec: &VfMoveSpec,
    host: &Handle,
    pod: &Handle,
    pod_ns: &NetnsHandle,
) -> Result<(), VfError> {
    use std::os::fd::AsRawFd;
    let host_disp = display_netns(spec.host_netns.as_deref());
    let pod_disp = spec.pod_netns.display().to_string();
    let ifname = spec.pod_ifname.as_str();
    let in_pod =
        link_by_name(pod, ifname)
            .await
            .map_err(nl_err(Step::LookupPodLink, ifname, &pod_disp))?;
    match in_pod {
        Some(l) if link_alias(&l).as_deref() == Some(spec.owner_tag.as_str()) => {}
        Some(_) => {
            return Err(PlumbError::PodInterfaceExists {
                ifname: ifname.to_string(),
                netns: pod_disp,
            }
            .into());
        }
        None => {
            let vf = link_by_name(host, &spec.vf_netdev)
                .await
                .map_err(nl_err(Step::LookupHostLink, &spec.vf_netdev, &host_disp))?
                .ok_or_else(|| missing(Step::LookupHostLink, &spec.vf_netdev, &host_disp))?;
            host.link()
                .set(
                    LinkUnspec::new_with_index(vf.header.index)
                        .down()
                        .setns_by_fd(pod_ns.file().as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .map_err(vf_err(VfStep::MoveIntoPod, &spec.vf_netdev, &host_disp))?;
            let moved = link_by_name(pod, &spec.vf_netdev)
                .await
                .map_err(nl_err(Step::LookupPodLink, &spec.vf_netdev, &pod_disp))?
                .ok_or_else(|| missing(Step::LookupPodLink, &spec.vf_netdev, &pod_disp))?;
            pod.link()
                .set(
                    LinkUnspec::new_with_index(moved.header.index)
                        .name(ifname)
                        .alias(spec.owner_tag.as_str())
                        .build(),
                )
                .execute()
                .await
                .map_err(vf_err(VfStep::RenameInPod, &spec.vf_netdev, &pod_disp))?;
        }
    }
    let link = link_by_name(pod, ifname)
        .await
        .map_err(nl_err(Step::LookupPodLink, ifname, &pod_disp))?
        .ok_or_else(|| missing(Step::LookupPodLink, ifname, &pod_disp))?;
    let idx = link.header.index;
    pod.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .address(spec.mac.octets().to_vec())
                .mtu(spec.mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(nl_err(Step::PodLinkUp, ifname, &pod_disp))?;
    if let Some(lo) =
        link_by_name(pod, "lo")
            .await
            .map_err(nl_err(Step::LoopbackUp, "lo", &pod_disp))?
    {
        pod.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(nl_err(Step::LoopbackUp, "lo", &pod_disp))?;
    }
    for addr in &spec.addresses {
        let mut req = pod.address().add(idx, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if let Err(e) = req.execute().await
            && netlink_errno(&e) != Some(libc::EEXIST)
        {
            return Err(nl_err(Step::AddAddress(*addr), ifname, &pod_disp)(e).into());
        }
    }
    pod.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl_err(Step::PodLinkUp, ifname, &pod_disp))?;
    let mut routes: Vec<PodRoute> = spec
        .gateways
        .iter()
        .map(|gw| PodRoute {
            dst: match gw {
                std::net::IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
                std::net::IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
            },
            via: Some(*gw),
        })
        .collect();
    routes.extend(spec.routes.iter().cloned());
    for r in &routes {
        if let Err(e) = pod.route().add(route_message(r, idx)).execute().await
            && netlink_errno(&e) != Some(libc::EEXIST)
        {
            let desc = format!("{} via {:?}", r.dst, r.via);
            return Err(nl_err(Step::AddRoute(desc), ifname, &pod_disp)(e).into());
        }
    }
    Ok(())
}

/// Renames the pod's VF back to its host name and moves it to the host namespace.
async fn give_back(
    spec: &VfMoveSpec,
    pod: &Handle,
    host_fd: &NetnsHandle,
) -> Result<Removal, VfError> {
    use std::os::fd::AsRawFd;
    let pod_disp = spec.pod_netns.display().to_string();
    let host_disp = display_netns(spec.host_netns.as_deref());
    // under the pod name (configured) or still under the host name (failed before the rename)
    for name in [spec.pod_ifname.as_str(), spec.vf_netdev.as_str()] {
        let Some(l) =
            link_by_name(pod, name)
                .await
                .map_err(nl_err(Step::LookupPodLink, name, &pod_disp))?
        else {
            continue;
        };
        let alias = link_alias(&l);
        if name == spec.pod_ifname && alias.as_deref() != Some(spec.owner_tag.as_str()) {
            return Err(PlumbError::NotOurs {
                ifname: name.to_string(),
                netns: pod_disp,
                found: alias,
                expected: spec.owner_tag.clone(),
            }
            .into());
        }
        pod.link()
            .set(
                LinkUnspec::new_with_index(l.header.index)
                    .down()
                    .name(spec.vf_netdev.as_str())
                    .alias("")
                    .build(),
            )
            .execute()
            .await
            .map_err(vf_err(VfStep::RenameForHost, name, &pod_disp))?;
        pod.link()
            .set(
                LinkUnspec::new_with_index(l.header.index)
                    .setns_by_fd(host_fd.file().as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(vf_err(VfStep::MoveToHost, &spec.vf_netdev, &host_disp))?;
        return Ok(Removal::Deleted);
    }
    Ok(Removal::AlreadyGone)
}

/// Gives the VF back to the host under its original name. Idempotent: a VF not in the pod (or
/// a pod netns that is gone: the kernel returns physical VFs to the initial namespace) is
/// success.
pub async fn move_vf_to_host(
    host_netns: Option<PathBuf>,
    pod_netns: PathBuf,
    pod_ifname: String,
    vf_netdev: String,
    owner_tag: String,
) -> Result<Removal, VfError> {
    if !pod_netns.exists() {
        return Ok(Removal::AlreadyGone);
    }
    off_runtime(move || {
        let host_fd = NetnsHandle::open(&host_ns_path(host_netns.as_deref()))?;
        let spec = VfMoveSpec {
            host_netns: host_netns.clone(),
            pod_netns: pod_netns.clone(),
            vf_netdev,
            pod_ifname,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            addresses: vec![],
            gateways: vec![],
            routes: vec![],
            owner_tag,
        };
        with_netlink(host_netns, Some(pod_netns), move |_host, pod| async move {
            let Some((pod, _)) = pod else {
                return Err(crate::netns::NetnsError::Thread("pod netns missing".into()).into());
            };
            Ok(give_back(&spec, &pod, &host_fd).await)
        })
    })
    .await?
}

/// Gives back a VF whose pod's netns is gone. The kernel returns a physical netdev to the
/// initial namespace when its namespace dies, but under the POD's name (`eth0`, `net1`, or
/// `dev<N>` on a clash) with our alias still on it: find it by that alias and rename it to its
/// host name, so the next pod that gets this VF finds it. A VF already under its host name (or
/// not back) is success.
pub async fn reclaim_vf(
    host_netns: Option<PathBuf>,
    vf_netdev: String,
    owner_tag: String,
) -> Result<Removal, PlumbError> {
    off_runtime(move || {
        let disp = display_netns(host_netns.as_deref());
        with_netlink(host_netns, None, move |host, _| async move {
            use futures::TryStreamExt;
            if link_by_name(&host, &vf_netdev)
                .await
                .map_err(nl_err(Step::LookupHostLink, &vf_netdev, &disp))?
                .is_some()
            {
                return Ok(Removal::AlreadyGone);
            }
            let links: Vec<netlink_packet_route::link::LinkMessage> = host
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl_err(Step::LookupHostLink, "*", &disp))?;
            let Some(vf) = links
                .iter()
                .find(|l| link_alias(l).as_deref() == Some(owner_tag.as_str()))
            else {
                return Ok(Removal::AlreadyGone);
            };
            host.link()
                .set(
                    LinkUnspec::new_with_index(vf.header.index)
                        .down()
                        .name(vf_netdev.as_str())
                        .alias("")
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err(Step::ConfigureHostEnd, &vf_netdev, &disp))?;
            Ok(Removal::Deleted)
        })
    })
    .await
}

/// Brings a host netdev (the representor) up.
pub async fn link_up(host_netns: Option<PathBuf>, name: String) -> Result<(), PlumbError> {
    off_runtime(move || {
        let disp = display_netns(host_netns.as_deref());
        with_netlink(host_netns, None, move |host, _| async move {
            let l = link_by_name(&host, &name)
                .await
                .map_err(nl_err(Step::LookupHostLink, &name, &disp))?
                .ok_or_else(|| missing(Step::LookupHostLink, &name, &disp))?;
            host.link()
                .set(LinkUnspec::new_with_index(l.header.index).up().build())
                .execute()
                .await
                .map_err(nl_err(Step::ConfigureHostEnd, &name, &disp))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datapath_from_netconf_then_driver() {
        let p = DpdkDriverPolicy::default();
        assert_eq!(
            pod_datapath(&json!({"dpdk": true}), Some("mlx5_core"), &p),
            PodDatapath::Dpdk
        );
        assert_eq!(
            pod_datapath(&json!({"vf_mode": "kernel"}), Some("vfio-pci"), &p),
            PodDatapath::Kernel
        );
        assert_eq!(
            pod_datapath(&json!({}), Some("vfio-pci"), &p),
            PodDatapath::Dpdk
        );
        assert_eq!(
            pod_datapath(&json!({}), Some("mlx5_core"), &p),
            PodDatapath::Kernel
        );
        assert_eq!(pod_datapath(&json!({}), None, &p), PodDatapath::Kernel);
    }

    proptest::proptest! {
        /// An explicit netconf choice always wins; without one, DPDK exactly when the VF's
        /// driver is an allowed DPDK driver.
        #[test]
        fn datapath_rule(
            dpdk in proptest::option::of(proptest::bool::ANY),
            mode in proptest::option::of(proptest::sample::select(vec!["dpdk", "kernel", "other"])),
            driver in proptest::option::of(proptest::sample::select(vec!["vfio-pci", "mlx5_core", "igb_uio"])),
        ) {
            let policy = DpdkDriverPolicy::default();
            let mut conf = serde_json::Map::new();
            if let Some(d) = dpdk { conf.insert("dpdk".into(), d.into()); }
            if let Some(m) = mode { conf.insert("vf_mode".into(), m.into()); }
            let got = pod_datapath(&serde_json::Value::Object(conf), driver, &policy);
            let want = match (dpdk, mode) {
                (Some(true), _) | (_, Some("dpdk")) => PodDatapath::Dpdk,
                (Some(false), _) | (_, Some("kernel")) => PodDatapath::Kernel,
                _ if driver == Some("vfio-pci") => PodDatapath::Dpdk,
                _ => PodDatapath::Kernel,
            };
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn bad_device_id_is_invalid_netconf() {
        let e =
            plan_for_device(&SriovConfig::default(), "not-a-pci", &json!({})).expect_err("bad id");
        assert_eq!(e.code, code::INVALID_NETCONF);
        assert!(e.msg.contains("not-a-pci"), "{}", e.msg);
    }
}
