//! vhost-user pod attachments on DPDK-profile nodes.
//!
//! A NAD config with `vhost_user_socket_volume_name` / `vhost_user_socket_name` (Kube-OVN's
//! keys, arriving as [`ferrovn_cni::protocol::VhostUser`]) asks for a vhost-user port instead of
//! a veth. On a DPDK node the agent:
//!
//! 1. resolves the pod's volume directory on the host ([`VolumeResolver`]; kubelet layout
//!    `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>`),
//! 2. bind-mounts it to a SHORT host path `<vhost_dir>/<13 hex>` (unix socket paths are limited
//!    to 108 bytes; kubelet paths with a 36-character pod UID are not), optionally inside the
//!    host's mount namespace ([`VhostConfig::host_mount_ns`]) so ovs-vswitchd sees it,
//! 3. adds a `dpdkvhostuserclient` Interface to br-int with
//!    `options:vhost-server-path=<short>/<socket>` and `external_ids:iface-id=<lsp>` (+ the
//!    pod/container ids for GC and restart recovery): OVS is the vhost-user CLIENT, the pod's
//!    DPDK app the SERVER (`net_virtio_user0,path=...,server=1`), so OVS reconnects whenever
//!    either side restarts,
//! 4. waits for OVN's `ovn-installed` on the Interface — NOT for `link_state=up`: the DPDK app
//!    starts after CNI ADD returns, so the link cannot be up yet,
//! 5. hands the pod what its app needs ([`VhostUserInfo`]): as the pod annotation
//!    `vhost-user.ferrovn.io/<ifname>` (readable through a downward-API volume) and as a file
//!    `ferrovn-<ifname>.json` next to the socket in the pod's own volume (there at once; the
//!    downward API refreshes annotations only periodically).
//!
//! On a kernel-profile node the same request is served by the vhost helper
//! ([`crate::attach::Kind::for_request`], [`crate::attach::vhost_helper`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::alloc::{Annotations, PodAllocation};
pub use crate::alloc::{KUBEVIRT_VHOST_VOLUME, effective_volume, vhost_user_from_annotations};
pub use crate::annotate::{
    AnnotateError, AnnotateFuture, DynPodAnnotator, FileAnnotations, PodAnnotator,
};
use crate::ovs::{PodPort, ext};
use crate::plumbing::PodRoute;
use ferrovn_api::MacAddr;
use ferrovn_api::names::{attachment_id, vhost_port_name};

/// Longest unix socket path (`sun_path` is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// `external_ids` key holding the short host directory (the bind mount).
pub const VHOST_DIR_KEY: &str = "ferrovn_vhost_dir";
/// OVS Interface type: OVS connects as client to the socket the pod's app serves.
pub const VHOST_IFACE_TYPE: &str = "dpdkvhostuserclient";
/// Prefix of the pod annotation key: `vhost-user.ferrovn.io/<ifname>`.
pub const ANNOTATION_PREFIX: &str = "vhost-user.ferrovn.io/";

/// The pod annotation key for interface `ifname`.
pub fn annotation_key(ifname: &str) -> String {
    format!("{ANNOTATION_PREFIX}{ifname}")
}

/// File the agent writes into the pod's volume next to the socket.
pub fn info_file_name(ifname: &str) -> String {
    format!("ferrovn-{ifname}.json")
}

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("vhost-user request: {field}: {reason}")]
    Request { field: &'static str, reason: String },
    #[error("pod volume {volume}: {reason}")]
    Volume { volume: String, reason: String },
    #[error("socket path {path} is {len} bytes; unix sockets allow {MAX_SOCKET_PATH}")]
    PathTooLong { path: String, len: usize },
    #[error("bind mount {src} -> {dst}: {reason}")]
    Mount {
        src: String,
        dst: String,
        reason: String,
    },
    #[error("unmount {dst}: {reason}")]
    Unmount { dst: String, reason: String },
    #[error("writing {what} {path}: {reason}")]
    Write {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Annotate(#[from] AnnotateError),
}

/// The pod identity a volume is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolumeRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

/// Finds a pod volume's directory on the host.
pub trait VolumeResolver: Send + Sync + std::fmt::Debug {
    fn volume_dir(&self, pod: &PodVolumeRef<'_>, volume: &str) -> Result<PathBuf, VhostError>;
}

/// The kubelet layout: `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>`
/// (root `/var/lib/kubelet` in a cluster; a temporary directory in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletVolumes {
    pub root: PathBuf,
}

fn plain_name(field: &'static str, v: &str) -> Result<(), VhostError> {
    if !crate::types::is_plain_name(v) {
        return Err(VhostError::Request {
            field,
            reason: format!("{v:?} must be a plain, non-empty name"),
        });
    }
    Ok(())
}

impl VolumeResolver for KubeletVolumes {
    fn volume_dir(&self, pod: &PodVolumeRef<'_>, volume: &str) -> Result<PathBuf, VhostError> {
        plain_name("vhost_user_socket_volume_name", volume)?;
        let uid = pod.uid.ok_or_else(|| VhostError::Volume {
            volume: volume.to_string(),
            reason: format!(
                "pod {}/{}: K8S_POD_UID missing from CNI_ARGS (needed to find the kubelet volume)",
                pod.namespace, pod.name
            ),
        })?;
        plain_name("K8S_POD_UID", uid)?;
        Ok(self
            .root
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~empty-dir")
            .join(volume))
    }
}

/// Agent settings for vhost-user attachments.
#[derive(Debug, Clone)]
pub struct VhostConfig {
    /// Short host directory for the bind mounts (`/run/ferrovn/vhu`).
    pub dir: PathBuf,
    pub volumes: Arc<dyn VolumeResolver>,
    /// Mount namespace to make the bind mounts in (e.g. `/proc/1/ns/mnt`); `None` = the
    /// agent's own (a DaemonSet with a Bidirectional hostPath mount of `dir`).
    pub host_mount_ns: Option<PathBuf>,
    /// Where pod annotations go: [`FileAnnotations`] in the lab (`<dir>/<ns>/<pod>.json`),
    /// [`crate::kube_api::KubePodAnnotator`] in a cluster (a merge patch of the Pod); `None`:
    /// nowhere (the info file in the pod's volume still carries the attachment).
    pub annotations: Option<Arc<dyn DynPodAnnotator>>,
}

impl Default for VhostConfig {
    fn default() -> Self {
        VhostConfig {
            dir: PathBuf::from("/run/ferrovn/vhu"),
            volumes: Arc::new(KubeletVolumes {
                root: PathBuf::from("/var/lib/kubelet"),
            }),
            host_mount_ns: None,
            annotations: None,
        }
    }
}

/// OVS port name of a vhost-user attachment: `vh` + 13 hex digits (same hash as veth names).
pub fn port_name(container_id: &str, ifname: &str) -> String {
    vhost_port_name(container_id, ifname)
}

/// The short host directory of an attachment: its 13-hex-digit attachment id.
pub fn short_dir(base: &Path, container_id: &str, ifname: &str) -> PathBuf {
    base.join(attachment_id(container_id, ifname))
}

/// What the pod's DPDK app needs, as JSON (annotation value and info file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VhostUserInfo {
    /// The pod interface (CNI_IFNAME) this stands for.
    pub ifname: String,
    pub provider: String,
    /// The pod volume holding the socket, and the socket's file name in it.
    pub volume: String,
    pub socket: String,
    /// `server`: the app creates and serves the socket (`virtio_user ... server=1`); OVS
    /// connects and reconnects.
    pub mode: String,
    pub mac: MacAddr,
    pub ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<PodRoute>,
    pub mtu: u32,
    /// The socket as OVS sees it on the host (for debugging; the app uses its own mount).
    pub host_socket_path: String,
    pub ovs_port: String,
}

impl VhostUserInfo {
    /// The socket path inside the pod, given where the pod mounts the volume.
    pub fn socket_in(&self, volume_mount_path: &Path) -> PathBuf {
        volume_mount_path.join(&self.socket)
    }

    /// The DPDK `--vdev` for a virtio-user port `index` on this attachment
    /// (`net_virtio_user<i>,path=<sock>,server=1,queues=1,mac=<mac>`).
    pub fn virtio_user_vdev(&self, index: u32, socket_in_pod: &Path) -> String {
        format!(
            "net_virtio_user{index},path={},server=1,queues=1,mac={}",
            socket_in_pod.display(),
            self.mac
        )
    }
}

/// Everything the plan of one attachment needs.
#[derive(Debug, Clone)]
pub struct VhostRequest<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub pod: PodVolumeRef<'a>,
    pub provider: &'a str,
    pub volume: Option<&'a str>,
    pub socket: Option<&'a str>,
    pub mtu: u32,
}

/// The pure plan of a vhost-user attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostPlan {
    pub volume_dir: PathBuf,
    pub short_dir: PathBuf,
    pub host_socket: PathBuf,
    pub port_name: String,
    pub info: VhostUserInfo,
}

/// Pure: request + allocation → plan. Fails on bad names and too-long socket paths.
pub fn plan(
    cfg: &VhostConfig,
    req: &VhostRequest<'_>,
    alloc: &PodAllocation,
) -> Result<VhostPlan, VhostError> {
    let volume = req.volume.ok_or_else(|| VhostError::Request {
        field: "vhost_user_socket_volume_name",
        reason: "missing (the pod's emptyDir volume that holds the socket)".into(),
    })?;
    let socket = req.socket.ok_or_else(|| VhostError::Request {
        field: "vhost_user_socket_name",
        reason: "missing (the socket's file name in the volume)".into(),
    })?;
    plain_name("vhost_user_socket_name", socket)?;
    let volume_dir = cfg.volumes.volume_dir(&req.pod, volume)?;
    let short = short_dir(&cfg.dir, req.container_id, req.ifname);
    let host_socket = short.join(socket);
    let len = host_socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(VhostError::PathTooLong {
            path: host_socket.display().to_string(),
            len,
        });
    }
    let port = port_name(req.container_id, req.ifname);
    Ok(VhostPlan {
        info: VhostUserInfo {
            ifname: req.ifname.to_string(),
            provider: req.provider.to_string(),
            volume: volume.to_string(),
            socket: socket.to_string(),
            mode: "server".into(),
            mac: alloc.mac,
            ips: alloc.addresses.clone(),
            gateways: alloc.gateways.clone(),
            routes: alloc.routes.clone(),
            mtu: req.mtu,
            host_socket_path: host_socket.display().to_string(),
            ovs_port: port.clone(),
        },
        volume_dir,
        short_dir: short,
        host_socket,
        port_name: port,
    })
}

/// Turns the agent's veth-style port into the vhost-user port of `plan`.
pub fn vhost_port(mut base: PodPort, plan: &VhostPlan) -> PodPort {
    base.name = plan.port_name.clone();
    base.iface_type = VHOST_IFACE_TYPE.to_string();
    base.options.insert(
        "vhost-server-path".into(),
        plan.host_socket.display().to_string(),
    );
    base.external_ids
        .insert(VHOST_DIR_KEY.into(), plan.short_dir.display().to_string());
    // the owner tag names a veth alias; a vhost port has none
    base.external_ids.remove(ext::OWNER_TAG);
    base
}

// ---------------------------------------------------------------------------------------------
// Mounts: a dedicated thread (optionally) enters the host mount namespace.

fn in_mount_ns<R: Send + 'static>(
    mount_ns: Option<&Path>,
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    let ns = mount_ns.map(Path::to_path_buf);
    std::thread::Builder::new()
        .name("ferrovn-mountns".into())
        .spawn(move || {
            if let Some(ns) = ns {
                // a thread sharing its fs attributes with others cannot change mount namespace
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
                let file = std::fs::File::open(&ns)
                    .map_err(|e| format!("open mount namespace {}: {e}", ns.display()))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(|e| format!("setns({}): {e}", ns.display()))?;
            }
            f()
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "mount worker panicked".to_string())?
}

fn is_mount_point(dst: &Path) -> bool {
    // this thread's view (it may be in another mount namespace than the process)
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        return false;
    };
    let want = dst.display().to_string().replace(' ', "\\040");
    text.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
}

/// Bind-mounts `src` onto `dst` (created), replacing an earlier mount there. Blocking.
pub fn bind_mount(src: &Path, dst: &Path, mount_ns: Option<&Path>) -> Result<(), VhostError> {
    let (s, d) = (src.to_path_buf(), dst.to_path_buf());
    let err = |reason: String| VhostError::Mount {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        reason,
    };
    in_mount_ns(mount_ns, move || {
        if !s.is_dir() {
            return Err(format!("{} is not a directory", s.display()));
        }
        std::fs::create_dir_all(&d).map_err(|e| format!("mkdir: {e}"))?;
        while is_mount_point(&d) {
            nix::mount::umount2(&d, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| format!("removing the earlier mount: {e}"))?;
        }
        nix::mount::mount(
            Some(&s),
            &d,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("mount --bind: {e}"))
    })
    .map_err(err)
}

/// Removes the bind mount at `dst` (all stacked mounts) and the directory. Idempotent.
pub fn unbind(dst: &Path, mount_ns: Option<&Path>) -> Result<(), VhostError> {
    let d = dst.to_path_buf();
    in_mount_ns(mount_ns, move || {
        while is_mount_point(&d) {
            nix::mount::umount2(&d, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| format!("umount: {e}"))?;
        }
        match std::fs::remove_dir(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("rmdir: {e}")),
        }
    })
    .map_err(|reason| VhostError::Unmount {
        dst: dst.display().to_string(),
        reason,
    })
}

/// Async wrapper: the mount work runs on its own thread.
pub async fn bind_mount_async(
    src: PathBuf,
    dst: PathBuf,
    mount_ns: Option<PathBuf>,
) -> Result<(), VhostError> {
    tokio::task::spawn_blocking(move || bind_mount(&src, &dst, mount_ns.as_deref()))
        .await
        .map_err(|e| VhostError::Mount {
            src: String::new(),
            dst: String::new(),
            reason: e.to_string(),
        })?
}

pub async fn unbind_async(dst: PathBuf, mount_ns: Option<PathBuf>) -> Result<(), VhostError> {
    tokio::task::spawn_blocking(move || unbind(&dst, mount_ns.as_deref()))
        .await
        .map_err(|e| VhostError::Unmount {
            dst: String::new(),
            reason: e.to_string(),
        })?
}

// ---------------------------------------------------------------------------------------------
// Handing the info to the pod.

/// Writes `info` as `ferrovn-<ifname>.json` into the pod's volume (atomically).
pub fn write_info_file(volume_dir: &Path, info: &VhostUserInfo) -> Result<PathBuf, VhostError> {
    let path = volume_dir.join(info_file_name(&info.ifname));
    let err = |reason: String| VhostError::Write {
        what: "vhost-user info file",
        path: path.display().to_string(),
        reason,
    };
    let body = serde_json::to_vec_pretty(info).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    Ok(path)
}

/// The annotation map of one attachment.
pub fn annotations_for(info: &VhostUserInfo) -> Result<Annotations, VhostError> {
    let json = serde_json::to_string(info).map_err(|e| VhostError::Write {
        what: "annotation",
        path: annotation_key(&info.ifname),
        reason: e.to_string(),
    })?;
    Ok(BTreeMap::from([(annotation_key(&info.ifname), json)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alloc() -> PodAllocation {
        PodAllocation {
            provider: "dpdk.default.ovn".into(),
            logical_switch: "ls1".into(),
            mac: "0a:58:0a:10:00:15".parse().expect("mac"),
            addresses: vec!["10.16.0.21/24".parse().expect("ip")],
            gateways: vec!["10.16.0.1".parse().expect("gw")],
            routes: vec![],
            ingress_rate_mbps: None,
            egress_rate_mbps: None,
            vhost_user: None,
            ipv6_link_local: false,
        }
    }

    #[test]
    fn vhost_user_by_pod_annotation() {
        let p = "dpdk.default.ovn";
        let ann = |pairs: &[(&str, &str)]| -> Annotations {
            pairs
                .iter()
                .map(|(k, v)| (format!("{p}.kubernetes.io/{k}"), v.to_string()))
                .collect()
        };
        assert_eq!(vhost_user_from_annotations(&ann(&[]), p), Ok(None));
        let v = vhost_user_from_annotations(
            &ann(&[
                ("vhost_user_socket_volume_name", "vhu"),
                ("vhost_user_socket_name", "sock0"),
            ]),
            p,
        )
        .expect("ok")
        .expect("some");
        assert_eq!(v.socket_volume_name.as_deref(), Some("vhu"));
        assert_eq!(v.socket_name.as_deref(), Some("sock0"));
        // another provider's keys are not this attachment's
        assert_eq!(
            vhost_user_from_annotations(&ann(&[("vhost_user_socket_name", "s")]), "ovn"),
            Ok(None)
        );
        // kubevirt consumption implies the volume name
        let k = vhost_user_from_annotations(
            &ann(&[
                ("vhost_user_socket_consumption", "kubevirt"),
                ("vhost_user_socket_name", "s"),
            ]),
            p,
        )
        .expect("ok")
        .expect("some");
        assert_eq!(k.socket_volume_name.as_deref(), Some(KUBEVIRT_VHOST_VOLUME));
        let nad_kubevirt = ferrovn_cni::protocol::VhostUser {
            socket_volume_name: None,
            socket_name: Some("s".into()),
            socket_consumption: Some("kubevirt".into()),
        };
        assert_eq!(effective_volume(&nad_kubevirt), Some(KUBEVIRT_VHOST_VOLUME));
        let e = vhost_user_from_annotations(&ann(&[("vhost_user_socket_name", "../x")]), p)
            .expect_err("bad");
        assert!(e.to_string().contains("vhost_user_socket_name"), "{e}");
        // through the whole allocation parser
        let mut full: Annotations = [
            ("allocated", "true"),
            ("ip_address", "10.16.0.21"),
            ("mac_address", "0a:58:0a:10:00:15"),
            ("cidr", "10.16.0.0/24"),
            ("logical_switch", "ls1"),
            ("vhost_user_socket_volume_name", "vhu"),
            ("vhost_user_socket_name", "sock0"),
        ]
        .iter()
        .map(|(k, v)| (format!("{p}.kubernetes.io/{k}"), v.to_string()))
        .collect();
        let a = crate::alloc::allocation_from_annotations(&full, p)
            .expect("ok")
            .expect("allocated");
        assert_eq!(a.vhost_user, Some(v));
        full.insert(
            format!("{p}.kubernetes.io/vhost_user_socket_name"),
            "a/b".into(),
        );
        assert!(crate::alloc::allocation_from_annotations(&full, p).is_err());
    }

    fn cfg(root: &str) -> VhostConfig {
        VhostConfig {
            dir: "/run/ferrovn/vhu".into(),
            volumes: Arc::new(KubeletVolumes { root: root.into() }),
            host_mount_ns: None,
            annotations: None,
        }
    }

    fn req<'a>(
        uid: Option<&'a str>,
        vol: Option<&'a str>,
        sock: Option<&'a str>,
    ) -> VhostRequest<'a> {
        VhostRequest {
            container_id: "c0ffee",
            ifname: "net1",
            netns: "/var/run/netns/p",
            pod: PodVolumeRef {
                namespace: "default",
                name: "dpdk-0",
                uid,
            },
            provider: "dpdk.default.ovn",
            volume: vol,
            socket: sock,
            mtu: 1442,
        }
    }

    const UID: &str = "8d5e7c9a-1b2c-4d3e-9f80-112233445566";

    #[test]
    fn plan_uses_the_kubelet_volume_and_a_short_path() {
        let c = cfg("/var/lib/kubelet");
        let p = plan(
            &c,
            &req(Some(UID), Some("vhostuser-sockets"), Some("sock0")),
            &alloc(),
        )
        .expect("plan");
        assert_eq!(
            p.volume_dir,
            PathBuf::from(format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/vhostuser-sockets"
            ))
        );
        // the kubelet path to the socket would be too long for a unix socket
        assert!(p.volume_dir.join("sock0").as_os_str().len() > MAX_SOCKET_PATH);
        assert!(
            p.host_socket.as_os_str().len() <= 40,
            "{}",
            p.host_socket.display()
        );
        assert!(p.host_socket.starts_with("/run/ferrovn/vhu"));
        assert_eq!(p.port_name.len(), 15);
        assert!(p.port_name.starts_with("vh"));
        assert_eq!(p.info.mode, "server");
        assert_eq!(p.info.mtu, 1442);
        let vdev = p
            .info
            .virtio_user_vdev(0, &p.info.socket_in(Path::new("/var/run/vhost")));
        assert_eq!(
            vdev,
            "net_virtio_user0,path=/var/run/vhost/sock0,server=1,queues=1,mac=0a:58:0a:10:00:15"
        );
    }

    #[test]
    fn plan_rejects_what_cannot_work() {
        let c = cfg("/var/lib/kubelet");
        for (r, field) in [
            (
                req(Some(UID), None, Some("s")),
                "vhost_user_socket_volume_name",
            ),
            (req(Some(UID), Some("v"), None), "vhost_user_socket_name"),
            (
                req(Some(UID), Some("v"), Some("../x")),
                "vhost_user_socket_name",
            ),
            (
                req(Some(UID), Some(".."), Some("s")),
                "vhost_user_socket_volume_name",
            ),
            (req(Some("a/b"), Some("v"), Some("s")), "K8S_POD_UID"),
            (req(None, Some("v"), Some("s")), "K8S_POD_UID"),
        ] {
            let e = plan(&c, &r, &alloc()).expect_err("invalid");
            assert!(e.to_string().contains(field), "{e}");
        }
        let mut long = cfg("/k");
        long.dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        let e = plan(&long, &req(Some(UID), Some("v"), Some("sock")), &alloc()).expect_err("long");
        assert!(matches!(e, VhostError::PathTooLong { .. }), "{e}");
    }

    #[test]
    fn port_and_records() {
        let c = cfg("/k");
        let p = plan(&c, &req(Some(UID), Some("v"), Some("s")), &alloc()).expect("plan");
        let base = PodPort {
            name: "fvxxxxxxxxxxxxx".into(),
            iface_type: String::new(),
            options: BTreeMap::new(),
            external_ids: [
                (ext::IFACE_ID.to_string(), "dpdk-0.default".to_string()),
                (ext::OWNER_TAG.to_string(), "ferrovn:c:net1".to_string()),
            ]
            .into(),
            ingress_policing_kbps: None,
            egress_qos: None,
        };
        let port = vhost_port(base, &p);
        assert_eq!(port.iface_type, "dpdkvhostuserclient");
        assert_eq!(port.name, p.port_name);
        assert_eq!(
            port.options["vhost-server-path"],
            p.host_socket.display().to_string()
        );
        assert_eq!(port.external_ids[ext::IFACE_ID], "dpdk-0.default");
        assert!(!port.external_ids.contains_key(ext::OWNER_TAG));
    }

    #[test]
    fn info_round_trips_and_annotation_key() {
        let p = plan(&cfg("/k"), &req(Some(UID), Some("v"), Some("s")), &alloc()).expect("plan");
        let a = annotations_for(&p.info).expect("ann");
        let v = &a["vhost-user.ferrovn.io/net1"];
        let back: VhostUserInfo = serde_json::from_str(v).expect("json");
        assert_eq!(back, p.info);
        let j: serde_json::Value = serde_json::from_str(v).expect("json");
        assert_eq!(j["mode"], "server");
        assert_eq!(j["mac"], "0a:58:0a:10:00:15");
        assert_eq!(j["ips"][0], "10.16.0.21/24");
        assert_eq!(j["hostSocketPath"], p.host_socket.display().to_string());
    }

    proptest! {
        #[test]
        fn plan_never_panics_and_paths_fit(cid in "[a-f0-9]{1,64}", ifn in "[a-z0-9]{1,15}",
                                            vol in ".{0,40}", sock in ".{0,60}") {
            let c = cfg("/var/lib/kubelet");
            let mut r = req(Some(UID), Some(&vol), Some(&sock));
            r.container_id = &cid;
            r.ifname = &ifn;
            if let Ok(p) = plan(&c, &r, &alloc()) {
                prop_assert!(p.host_socket.as_os_str().len() <= MAX_SOCKET_PATH);
                prop_assert!(!p.info.socket.contains('/'));
                prop_assert_eq!(p.host_socket.parent(), Some(p.short_dir.as_path()));
            }
        }
    }
}
