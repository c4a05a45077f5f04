//! What every attachment kind shares: the [`Attachment`] trait (the seam), the [`Kind`] stored
//! in external_ids, [`Liveness`], and the steps written once ([`base_port`], [`cni_result`],
//! the trait's provided `add` and `remove`). The kinds depend on this module, never on each
//! other's internals or on the dispatch in [`crate::attach`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use ferrovn_cni::protocol::AttachmentRequest;
use ferrovn_cni::spec::{Cidr, CniError, CniResult, Interface, IpConfig, Route};

use crate::alloc::{PodAllocation, PodRef};
use crate::cni_error::from_ovs;
use crate::ovs::{EgressQos, OvsClient, PodPort, PortRecord, ext};
use crate::settings::AgentConfig;
use crate::types::NodeProfile;

/// Interface `external_ids` key naming the attachment kind ([`Kind::as_str`]).
pub const KIND_KEY: &str = "ferrovn-kind";

/// Markers of records made before [`KIND_KEY`] existed (read only, for upgrades).
pub mod legacy {
    /// `ferrovn_attachment=vhost-user` (OVS-DPDK vhost-user and helper ports alike).
    pub const ATTACHMENT_KIND: &str = "ferrovn_attachment";
    pub const ATTACHMENT_VHOST_USER: &str = "vhost-user";
}

/// The kinds of pod attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Veth,
    VhostUser,
    VhostHelper,
    SriovVf,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Veth,
        Kind::VhostUser,
        Kind::VhostHelper,
        Kind::SriovVf,
    ];

    /// The value stored under [`KIND_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::VhostUser => "vhost-user",
            Kind::VhostHelper => "vhost-helper",
            Kind::SriovVf => "sriov-vf",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind of a recorded attachment: [`KIND_KEY`], else the markers older agents wrote
    /// (a VF's PCI address, the helper's interface, `ferrovn_attachment=vhost-user`), else veth.
    pub fn of_record(rec: &PortRecord) -> Kind {
        if let Some(k) = rec.get(KIND_KEY).and_then(Kind::parse) {
            return k;
        }
        if rec.get(crate::sriov::vf_ext::VF_PCI).is_some() {
            Kind::SriovVf
        } else if rec
            .get(crate::dpdk::helper_attach::HELPER_IFACE_KEY)
            .is_some()
        {
            Kind::VhostHelper
        } else if rec.get(legacy::ATTACHMENT_KIND) == Some(legacy::ATTACHMENT_VHOST_USER) {
            Kind::VhostUser
        } else {
            Kind::Veth
        }
    }

    /// Pure: the kind an ADD asks for. A `deviceID` is a VF; a vhost-user request (NAD keys or
    /// pod annotation) is OVS-DPDK's on a DPDK node and the helper's on a kernel node.
    pub fn for_request(has_device: bool, wants_vhost_user: bool, profile: NodeProfile) -> Kind {
        match (has_device, wants_vhost_user, profile) {
            (true, _, _) => Kind::SriovVf,
            (false, true, NodeProfile::Dpdk) => Kind::VhostUser,
            (false, true, NodeProfile::Kernel) => Kind::VhostHelper,
            (false, false, _) => Kind::Veth,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a recorded attachment's pod still exists, as far as the agent can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// The agent cannot tell (e.g. the pod's netns root is not mounted into its container):
    /// garbage collection keeps the attachment.
    Unknown,
}

/// Liveness by the pod's netns path: there → alive; gone from a netns root the agent can see →
/// dead; otherwise unknown. The root (the path's directory, e.g. `/var/run/netns`) counts as
/// seen only when it exists AND holds some entry: an agent container without the host's mount
/// may still have an empty directory there (from its image), and a `/proc/<pid>` of a PID
/// namespace it cannot see is absent. An empty root on a node whose last pod just died only
/// delays that pod's GC until another pod appears (the runtime's DEL and CNI GC still remove it).
pub fn netns_liveness(netns: Option<&str>) -> Liveness {
    let Some(path) = netns.map(Path::new).filter(|p| p.is_absolute()) else {
        return Liveness::Unknown;
    };
    if path.exists() {
        return Liveness::Alive;
    }
    let root_seen = path
        .parent()
        .and_then(|root| std::fs::read_dir(root).ok())
        .is_some_and(|mut entries| entries.next().is_some());
    if root_seen {
        Liveness::Dead
    } else {
        Liveness::Unknown
    }
}

/// What every attachment operation has: the agent's settings and the node's OVSDB.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub cfg: &'a AgentConfig,
    pub ovs: &'a OvsClient,
    /// Whether veth pods keep tx offloads (userspace TSO active).
    pub tx_offload: bool,
}

/// One ADD, resolved: the request, the pod, its allocation.
pub struct AddRequest<'a> {
    pub req: &'a AttachmentRequest,
    pub netns: &'a str,
    pub pod: &'a PodRef,
    pub provider: &'a str,
    pub alloc: &'a PodAllocation,
    pub mtu: u32,
    /// The logical switch port ([`lsp_name`]).
    pub lsp: String,
}

impl AddRequest<'_> {
    pub fn pod_display(&self) -> String {
        format!("{}/{}", self.pod.namespace, self.pod.name)
    }
}

/// Kube-OVN's logical switch port name of a pod interface ([`ferrovn_api::names::lsp_name`]).
pub fn lsp_name(pod: &PodRef, provider: &str) -> String {
    ferrovn_api::names::lsp_name(&pod.name, &pod.namespace, provider)
}

/// The OVS port every kind starts from: named `host_if`, with the pod's external_ids (OVN's
/// `iface-id`, pod identity for DEL/GC/restart, the kind) and its QoS.
pub fn base_port(
    env: &Env<'_>,
    add: &AddRequest<'_>,
    kind: Kind,
    host_if: &str,
    tag: &str,
) -> PodPort {
    let a = add.alloc;
    let ips: Vec<String> = a.addresses.iter().map(|n| n.addr().to_string()).collect();
    let mut external_ids: std::collections::BTreeMap<String, String> = [
        (ext::IFACE_ID, add.lsp.clone()),
        (ext::POD_NAME, add.pod.name.clone()),
        (ext::POD_NAMESPACE, add.pod.namespace.clone()),
        (ext::POD_NETNS, add.netns.to_string()),
        (ext::IP, ips.join(",")),
        (ext::ATTACHED_MAC, a.mac.to_string()),
        (ext::CONTAINER_ID, add.req.container_id.clone()),
        (ext::IFNAME, add.req.ifname.clone()),
        (ext::VENDOR, ext::VENDOR_VALUE.to_string()),
        (KIND_KEY, kind.as_str().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !tag.is_empty() {
        external_ids.insert(ext::OWNER_TAG.to_string(), tag.to_string());
    }
    let egress_qos = a.ingress_rate_mbps.map(|mbps| match env.cfg.profile {
        NodeProfile::Kernel => EgressQos::LinuxHtb {
            max_rate_bps: mbps * 1_000_000,
        },
        NodeProfile::Dpdk => EgressQos::EgressPolicer {
            cir_bytes_per_s: mbps * 1_000_000 / 8,
            cbs_bytes: (mbps * 1_000_000 / 8 / 10).max(64 * 1024),
        },
    });
    PodPort {
        name: host_if.to_string(),
        iface_type: String::new(),
        options: Default::default(),
        external_ids,
        ingress_policing_kbps: a.egress_rate_mbps.map(|m| m * 1000),
        egress_qos,
    }
}

/// The CNI result of an attachment: host end, pod end, addresses, routes.
pub fn cni_result(
    host_if: &str,
    req_ifname: &str,
    netns: &str,
    mtu: u32,
    a: &PodAllocation,
) -> CniResult {
    let interfaces = vec![
        Interface {
            name: host_if.to_string(),
            ..Interface::default()
        },
        Interface {
            name: req_ifname.to_string(),
            mac: Some(a.mac.to_string()),
            mtu: Some(mtu),
            sandbox: Some(netns.to_string()),
            ..Interface::default()
        },
    ];
    let ips = a
        .addresses
        .iter()
        .filter_map(|n| {
            let address = Cidr::new(n.addr(), n.prefix_len()).ok()?;
            let gateway = a
                .gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == n.addr().is_ipv4());
            Some(IpConfig {
                address,
                gateway,
                interface: Some(1),
            })
        })
        .collect();
    let mut routes: Vec<Route> = a
        .gateways
        .iter()
        .filter_map(|gw| {
            let dst = match gw {
                IpAddr::V4(_) => Cidr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
                IpAddr::V6(_) => Cidr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
            }
            .ok()?;
            Some(Route {
                dst: Some(dst),
                gw: Some(*gw),
                ..Route::default()
            })
        })
        .collect();
    routes.extend(a.routes.iter().filter_map(|r| {
        Some(Route {
            dst: Some(Cidr::new(r.dst.addr(), r.dst.prefix_len()).ok()?),
            gw: r.via,
            ..Route::default()
        })
    }));
    CniResult {
        interfaces,
        ips,
        routes,
        ..CniResult::default()
    }
}

/// One kind of pod attachment (rust-vmm's `VhostUserBackend` is the model: the seam is a trait
/// whose provided methods carry everything the kinds share).
///
/// Dispatch is static ([`crate::attach::with_kind!`]), so the `async fn`s need no `Send` bound in the trait:
/// every caller sees the concrete type and its `Send` futures.
#[allow(async_fn_in_trait)]
pub trait Attachment: Sync {
    const KIND: Kind;
    /// What [`Attachment::plumb`] made that the later steps need.
    type Made: Send + Sync;

    /// The node and pod side, before the OVS port exists: returns the port to add (start from
    /// [`base_port`]). On failure nothing is left behind.
    async fn plumb(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
    ) -> Result<(PodPort, Self::Made), CniError>;

    /// Undoes [`Attachment::plumb`] after a later step failed (best effort: the error that
    /// made ADD fail is the one reported). The OVS port is already gone.
    async fn undo(&self, env: &Env<'_>, add: &AddRequest<'_>, made: &Self::Made);

    /// DEL and GC of a recorded attachment: everything but its OVS port (removed by the
    /// caller). Idempotent.
    async fn release(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError>;

    /// After the OVS port exists, before waiting for OVN.
    async fn after_port(
        &self,
        _env: &Env<'_>,
        _add: &AddRequest<'_>,
        _made: &Self::Made,
    ) -> Result<(), CniError> {
        Ok(())
    }

    /// The CNI result; by default the host end is the OVS port.
    fn result(&self, add: &AddRequest<'_>, port: &PodPort, _made: &Self::Made) -> CniResult {
        cni_result(&port.name, &add.req.ifname, add.netns, add.mtu, add.alloc)
    }

    /// CHECK: the node side of `rec` is still there (OVN's part is checked by the caller).
    async fn check(&self, _env: &Env<'_>, _rec: &PortRecord) -> Result<(), CniError> {
        Ok(())
    }

    /// GC: whether the pod of `rec` still exists. By default its netns path decides.
    async fn liveness(&self, _env: &Env<'_>, rec: &PortRecord) -> Result<Liveness, CniError> {
        Ok(netns_liveness(rec.get(ext::POD_NETNS)))
    }

    /// ADD: plumb, add the OVS port, the after-port step, wait for `ovn-installed`; any
    /// failure removes the port and undoes the plumbing, so a pod is never half attached.
    async fn add(&self, env: &Env<'_>, add: &AddRequest<'_>) -> Result<CniResult, CniError> {
        let t_plumb = Instant::now();
        let (port, made) = self.plumb(env, add).await?;
        let plumb_ms = t_plumb.elapsed().as_millis() as u64;
        let t_port = Instant::now();
        let mut port_ms = 0;
        let attached = async {
            env.ovs
                .add_port(&env.cfg.node.bridge, &port)
                .await
                .map_err(from_ovs)?;
            port_ms = t_port.elapsed().as_millis() as u64;
            self.after_port(env, add, &made).await?;
            env.ovs
                .wait_ovn_installed(&port.name, &add.lsp, env.cfg.install_timeout)
                .await
                .map_err(from_ovs)
        }
        .await;
        if let Err(e) = attached {
            let _ = env.ovs.remove_port(&port.name).await;
            self.undo(env, add, &made).await;
            return Err(e);
        }
        tracing::info!(
            pod = %add.pod_display(),
            lsp = %add.lsp,
            kind = %Self::KIND,
            port = %port.name,
            plumb_ms,
            port_ms,
            installed_ms = (t_port.elapsed().as_millis() as u64).saturating_sub(port_ms),
            "pod attached"
        );
        Ok(self.result(add, &port, &made))
    }

    /// DEL of a recorded attachment: its OVS port, then [`Attachment::release`].
    async fn remove(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        env.ovs.remove_port(&rec.name).await.map_err(from_ovs)?;
        self.release(env, rec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rec(pairs: &[(&str, &str)]) -> PortRecord {
        PortRecord {
            name: "p".into(),
            external_ids: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn kind_round_trips_and_old_markers_still_read() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(Kind::of_record(&rec(&[(KIND_KEY, k.as_str())])), k);
        }
        assert_eq!(Kind::of_record(&rec(&[])), Kind::Veth);
        // an older agent's records
        assert_eq!(
            Kind::of_record(&rec(&[("ferrovn_vf_pci", "0000:03:00.2")])),
            Kind::SriovVf
        );
        assert_eq!(
            Kind::of_record(&rec(&[
                ("ferrovn_attachment", "vhost-user"),
                ("ferrovn_vhost_helper_iface", "vk0123456789abc"),
            ])),
            Kind::VhostHelper
        );
        assert_eq!(
            Kind::of_record(&rec(&[("ferrovn_attachment", "vhost-user")])),
            Kind::VhostUser
        );
        // the explicit key wins over markers
        assert_eq!(
            Kind::of_record(&rec(&[
                (KIND_KEY, "veth"),
                ("ferrovn_attachment", "vhost-user")
            ])),
            Kind::Veth
        );
    }

    #[test]
    fn request_kind() {
        use NodeProfile::*;
        assert_eq!(Kind::for_request(true, true, Dpdk), Kind::SriovVf);
        assert_eq!(Kind::for_request(false, true, Dpdk), Kind::VhostUser);
        assert_eq!(Kind::for_request(false, true, Kernel), Kind::VhostHelper);
        assert_eq!(Kind::for_request(false, false, Dpdk), Kind::Veth);
        assert_eq!(Kind::for_request(false, false, Kernel), Kind::Veth);
    }

    #[test]
    fn liveness_is_unknown_when_the_netns_root_is_not_visible() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path().join("netns");
        let ns = root.join("cni-1234");
        let ns_s = ns.display().to_string();
        // the agent's container does not mount the netns root: it cannot tell
        assert_eq!(netns_liveness(Some(&ns_s)), Liveness::Unknown);
        std::fs::create_dir(&root).expect("root");
        // an empty directory proves nothing (an image's own /var/run/netns, no host mount)
        assert_eq!(netns_liveness(Some(&ns_s)), Liveness::Unknown);
        // the root shows other pods' namespaces and not this one: the pod is gone
        std::fs::write(root.join("cni-other"), b"").expect("other pod");
        assert_eq!(netns_liveness(Some(&ns_s)), Liveness::Dead);
        std::fs::write(&ns, b"").expect("ns");
        assert_eq!(netns_liveness(Some(&ns_s)), Liveness::Alive);
        assert_eq!(netns_liveness(None), Liveness::Unknown);
        assert_eq!(netns_liveness(Some("")), Liveness::Unknown);
        assert_eq!(netns_liveness(Some("relative/ns")), Liveness::Unknown);
        // another PID namespace's process: /proc/<pid> not visible
        assert_eq!(
            netns_liveness(Some("/proc/2147483646/ns/net")),
            Liveness::Unknown
        );
    }
}
