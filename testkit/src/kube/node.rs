//! A real Kubernetes node for one test: containerd (CRI) and a kubelet, built by
//! `make kube-node-bins` and `make kube-bins`, registered with a [`ControlPlane`].
//!
//! The node lives in a network namespace the caller owns (a lab-style node namespace, e.g. the
//! one of a [`crate::ovs_node::Node`]) and in a mount namespace of its own, held by a sleeping
//! process: `/` is made rshared inside it (this machine's root mount is private; runc and the
//! kubelet's volume mounts want shared propagation), and tmpfs covers `/run/containerd` (the
//! shims' sockets) and `/var/log` (the kubelet's container log links), so nothing of the node
//! is seen outside it, and every mount goes away with its last process. containerd's root,
//! state, socket, CNI directories and the kubelet's root dir are in a private temp dir; the
//! kubelet's cgroup root is `/ferrovn-<tag>` in every cgroup v1 hierarchy.
//!
//! Every process of the node (the holder, containerd, the shims, the kubelet, the pods, and the
//! daemons a test starts with [`KubeletNode::spawn_daemon`], e.g. the node agent) sits in the
//! `pids` cgroup `/ferrovn-<tag>`: tear-down removes the pods through the CRI (so the CNI DEL
//! runs), stops the daemons, then kills what is left of that cgroup by PID and removes the
//! cgroups; the temp dir and the API relay go last.
//!
//! A kubelet writes a few machine-wide sysctls when it starts (`vm.overcommit_memory`,
//! `kernel.panic`, `kernel.panic_on_oops`, ...): the values from before are put back when the
//! process's last node is gone.
//!
//! The kubelet and the daemons reach the apiserver at the address of the control plane's
//! kubeconfigs, `https://127.0.0.1:<port>`, through a [`LoopbackRelay`] in the node namespace.
//! The apiserver cannot reach the kubelet (`kubectl exec` and `logs` do not work): tests read a
//! pod's result from its status (a termination message) instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::forward::LoopbackRelay;
use super::process::{Component, alive, log_tail, read_pid, stop_pid_file, terminate};
use super::{ControlPlane, KubeError, Output, bin_dir, binary, io_err, pinned_version, run};

/// The binaries [`KubeletNode::start`] needs from the kube cache.
pub const NODE_BINARIES: [&str; 6] = [
    "kubelet",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "crictl",
];

/// How long containerd and the kubelet may take to start, each.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The cgroup v1 hierarchies the node's cgroup root is created in (the kubelet wants it in
/// each one it uses; `unified` is cleaned up too, runc may create there on hybrid hosts).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The image names: under `ferrovn.invalid`, where nothing can be pulled from.
pub const IMAGE_PREFIX: &str = "ferrovn.invalid";

/// The sandbox image containerd pins (`<prefix>/pause:<PAUSE_VERSION>`).
pub fn pause_image() -> String {
    format!(
        "{IMAGE_PREFIX}/pause:{}",
        pinned_version("PAUSE_VERSION").unwrap_or("unknown")
    )
}

/// The busybox image (Debian's static busybox, every applet linked in /bin).
pub fn busybox_image() -> String {
    format!(
        "{IMAGE_PREFIX}/e2e-test-images/busybox:{}",
        pinned_version("BUSYBOX_TAG").unwrap_or("unknown")
    )
}

/// The agnhost image (`make kube-e2e-bins`).
pub fn agnhost_image() -> String {
    format!(
        "{IMAGE_PREFIX}/e2e-test-images/agnhost:{}",
        pinned_version("AGNHOST_TAG").unwrap_or("unknown")
    )
}

/// The OCI tar `file` (`pause.tar`, `busybox.tar`, `agnhost.tar`, `coredns.tar`) that build.sh wrote next to
/// the binaries, or an error naming the make target that writes it.
pub fn image_tar(file: &str) -> Result<PathBuf, KubeError> {
    let dir = bin_dir()
        .parent()
        .map(|d| d.join("images"))
        .unwrap_or_else(|| PathBuf::from("images"));
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        let target = match file {
            "agnhost.tar" => "kube-e2e-bins",
            "coredns.tar" => "kube-coredns",
            _ => "kube-node-bins",
        };
        Err(KubeError::MissingNodePart {
            name: format!("image {file}"),
            dir: dir.display().to_string(),
            target: target.into(),
        })
    }
}

/// The machine-wide sysctls a kubelet sets when it starts (`setupKernelTunables`; with
/// `protectKernelDefaults` it would refuse to start instead). They are not per network
/// namespace: the values from before the first node of this process are put back when its
/// last node is gone.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Live nodes of this process and the sysctl values from before the first one.
static SYSCTLS: std::sync::Mutex<(usize, Vec<(PathBuf, String)>)> =
    std::sync::Mutex::new((0, Vec::new()));

fn save_sysctls() {
    let mut g = SYSCTLS.lock().unwrap_or_else(|p| p.into_inner());
    if g.0 == 0 {
        g.1 = KUBELET_SYSCTLS
            .iter()
            .map(|k| Path::new("/proc/sys").join(k))
            .filter_map(|p| {
                let v = std::fs::read_to_string(&p).ok()?;
                Some((p, v.trim().to_string()))
            })
            .collect();
    }
    g.0 += 1;
}

fn restore_sysctls() {
    let mut g = SYSCTLS.lock().unwrap_or_else(|p| p.into_inner());
    g.0 = g.0.saturating_sub(1);
    if g.0 == 0 {
        for (path, value) in g.1.drain(..) {
            let _ = std::fs::write(&path, &value);
        }
    }
}

/// `Ok` if every binary a node runs is built, else an error naming the first missing one and
/// the make target that builds it.
pub fn check_node_binaries() -> Result<(), KubeError> {
    for name in NODE_BINARIES {
        if binary(name).is_err() {
            let target = if name == "kubelet" {
                "kube-bins"
            } else {
                "kube-node-bins"
            };
            return Err(KubeError::MissingNodePart {
                name: name.into(),
                dir: bin_dir().display().to_string(),
                target: target.into(),
            });
        }
    }
    Ok(())
}

/// What makes one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The Node's name (kubelet `--hostname-override`).
    pub name: String,
    /// The network namespace the node runs in (`/var/run/netns/<name>`).
    pub netns: PathBuf,
    /// The node's InternalIP: added to the namespace's `lo` as a /32 (kubelet `--node-ip`).
    pub node_ip: String,
    /// Labels the kubelet registers the Node with (`--node-labels`).
    pub labels: Vec<(String, String)>,
    /// OCI tars imported into containerd's `k8s.io` namespace before the kubelet starts; the
    /// sandbox image is always imported.
    pub images: Vec<PathBuf>,
}

/// A running node. See the module docs.
#[derive(Debug)]
pub struct KubeletNode {
    name: String,
    kubelet: Component,
    daemons: Vec<Component>,
    containerd: Component,
    holder: Component,
    relay: Option<LoopbackRelay>,
    extra_relays: Vec<LoopbackRelay>,
    host_paths: bool,
    cgroup: String,
    netns: PathBuf,
    bin: PathBuf,
    dir: Home,
    startup: Duration,
    sysctls_saved: bool,
}

/// Where a node lives: a private temp dir (a test's node, gone with the handle) or a directory
/// of the caller's (a persistent node: detached processes with PID files, see
/// [`KubeletNode::start_persistent`]).
#[derive(Debug)]
enum Home {
    Scoped(tempfile::TempDir),
    Persistent(PathBuf),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Home::Scoped(t) => t.path(),
            Home::Persistent(p) => p,
        }
    }
    fn persistent(&self) -> bool {
        matches!(self, Home::Persistent(_))
    }
}

/// A persistent node's record in its directory: what [`KubeletNode::open`] and
/// [`KubeletNode::stop_persistent`] need besides the PID files.
const NODE_STATE_FILE: &str = "kubelet-node.json";

/// What [`KubeletNode::stop_persistent`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStopReport {
    /// Pod sandboxes removed through the CRI (their CNI DEL ran).
    pub sandboxes_removed: bool,
    /// Processes of the node's cgroup that were stopped (runtime, kubelet, daemons, pods).
    pub processes: usize,
    /// What could not be removed (a process or cgroup left), if anything.
    pub leftovers: Vec<String>,
}

/// Whether `crictl inspectp` output is of a sandbox in the node's network namespace
/// (`hostNetwork`): namespace mode NODE, as a number (2) or a name.
fn host_network(inspect: &serde_json::Value) -> bool {
    [
        &inspect["status"]["linux"]["namespaces"]["options"]["network"],
        &inspect["info"]["config"]["linux"]["security_context"]["namespace_options"]["network"],
    ]
    .iter()
    .any(|mode| mode.as_u64() == Some(2) || mode.as_str() == Some("NODE"))
}

fn node_pid_file(dir: &Path, component: &str) -> PathBuf {
    dir.join("run").join(format!("{component}.pid"))
}

/// `sh -c` that puts itself into the node's pids cgroup, then runs the rest of its arguments
/// inside the node's mount and network namespaces.
const ENTER: &str = "cg=$1; mnt=$2; net=$3; shift 3; echo $$ > \"$cg\" && \
                     exec nsenter --mount=\"$mnt\" --net=\"$net\" -- \"$@\"";

/// The holder: in the node's pids cgroup and network namespace, a new mount namespace whose
/// mounts stay inside it; `$3` marks it ready.
/// `$4` is more set-up run inside (the well-known paths of [`HostPaths`], or nothing).
/// `$5`, `$6`, `$7`: the mount points' lock and list files and the mount points the node needs
/// on the machine. The holder takes the lock shared for its life, then creates those missing
/// (each directory it created appended to the list; another node may create the same one at the
/// same moment): the last node to go ([`release_mount_points`]) gets the lock exclusively only
/// when no node holds it, and removes them.
const HOLDER: &str = "cg=$1; net=$2; ready=$3; extra=$4; lock=$5; list=$6; mps=$7; \
    echo $$ > \"$cg\" && exec 9>>\"$lock\" && flock -s 9 && \
    for p in $mps; do q=$p; m=; while [ ! -e \"$q\" ]; do m=\"$q $m\"; q=$(dirname \"$q\"); done; \
    for d in $m; do mkdir \"$d\" 2>/dev/null && echo \"$d\" >> \"$list\"; done; \
    [ -d \"$p\" ] || exit 1; done && \
    exec nsenter --net=\"$net\" -- unshare --mount --propagation private -- sh -c '\
    mount --make-rshared / && \
    mount -t tmpfs -o mode=0755 ferrovn-node /run/containerd && \
    mount -t tmpfs -o mode=0755 ferrovn-node /var/log && \
    eval \"$1\" && touch \"$0\" && exec sleep 2147483647' \"$ready\" \"$extra\"";

/// Where nodes record the mount points they created on the machine ([`HOLDER`]).
const MOUNT_POINT_LOCK: &str = "/run/lock/ferrovn-node-mount-points.lock";
const MOUNT_POINT_LIST: &str = "/run/lock/ferrovn-node-mount-points.list";

/// Removes the (empty) mount points nodes created on the machine, once no node holds the lock
/// any more (this one's holder is gone; another node's keeps it shared, and the last one to go
/// removes them). A directory someone filled is left alone.
fn release_mount_points() {
    let Ok(lock) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(MOUNT_POINT_LOCK)
    else {
        return;
    };
    // the holder's lock goes when the process is reaped, a moment after the kill
    let start = Instant::now();
    while lock.try_lock().is_err() {
        if start.elapsed() > Duration::from_secs(2) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(list) = std::fs::read_to_string(MOUNT_POINT_LIST) {
        for d in list.lines().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
    let _ = std::fs::remove_file(MOUNT_POINT_LIST);
}

/// The mount points a node needs on the machine (created by its [`HOLDER`] when missing).
fn mount_points(host_paths: Option<&HostPaths>) -> String {
    let mut mps = vec!["/run/containerd", "/var/lib/kubelet"];
    if let Some(h) = host_paths {
        mps.extend(["/etc/cni/net.d", "/opt/cni/bin"]);
        if h.keep_run {
            mps.extend(["/run/netns", "/run/ferrovn", "/run/openvswitch"]);
        }
    }
    mps.join(" ")
}

/// The well-known node paths a DaemonSet's `hostPath` volumes name, made real inside the
/// node's mount namespace ([`KubeletNode::start_with_host_paths`]), as on a real node:
///
/// | path | is |
/// |---|---|
/// | `/run` | a tmpfs of the node (so `/run/ferrovn`, `/run/netns` are the node's own) |
/// | `/run/netns` | where containerd mounts the pods' network namespaces |
/// | `/run/openvswitch` | [`HostPaths::openvswitch`] (the node's OVS run dir: `db.sock`, pid files) |
/// | `/etc/cni/net.d`, `/opt/cni/bin` | the node's CNI config and plugin dirs |
/// | `/var/lib/kubelet` | the kubelet's root dir |
///
/// Each is a bind mount of the node's temp dir (or a dir in its `/run`): nothing is written to
/// the host's paths. `/etc/cni/net.d` and `/opt/cni/bin` are created on the host as empty
/// mount points if missing, like `/run/containerd` and `/var/lib/kubelet` for every node, and
/// removed again when the last node is gone ([`HOLDER`]).
///
/// With [`HostPaths::keep_run`] the machine's `/run` stays visible in the node (a node whose
/// own directory lives under `/run`, like the lab's): only `/run/netns`, `/run/ferrovn` and
/// `/run/openvswitch` become the node's own (a tmpfs each, or the directories given), their
/// mount points created on the machine as empty directories if missing (and removed with the
/// last node).
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    /// The node's OVS run directory, bound onto `/run/openvswitch`.
    pub openvswitch: Option<PathBuf>,
    /// A directory bound onto `/run/ferrovn` (the agent's CNI socket), so processes outside
    /// the node reach what the node's pods put there; default: the node's own tmpfs.
    pub ferrovn: Option<PathBuf>,
    /// Keep the machine's `/run` (see above) instead of a tmpfs over all of it.
    pub keep_run: bool,
}

/// `'s'` for `sh`, with `'` escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl HostPaths {
    /// The holder's extra set-up for a node whose temp dir is `d`.
    fn script(&self, d: &Path) -> String {
        let q = |p: &Path| sh_quote(&p.display().to_string());
        let mut s = if self.keep_run {
            // mount points on the machine's /run (empty directories), node-own mounts on them
            let mut s = String::from("mount -t tmpfs -o mode=0755 ferrovn-node-netns /run/netns");
            if self.ferrovn.is_none() {
                s.push_str(" && mount -t tmpfs -o mode=0755 ferrovn-node-run /run/ferrovn");
            }
            if self.openvswitch.is_none() {
                s.push_str(" && mount -t tmpfs -o mode=0755 ferrovn-node-ovs /run/openvswitch");
            }
            s
        } else {
            String::from(
                "mount -t tmpfs -o mode=0755 ferrovn-node-run /run && \
                 mkdir -p /run/containerd /run/netns /run/ferrovn /run/openvswitch",
            )
        };
        if let Some(dir) = &self.ferrovn {
            let _ = write!(s, " && mount --bind {} /run/ferrovn", q(dir));
        }
        let _ = write!(
            s,
            " && mount --bind {} /etc/cni/net.d && mount --bind {} /opt/cni/bin \
             && mount --bind {} /var/lib/kubelet",
            q(&d.join("cni/net.d")),
            q(&d.join("cni/bin")),
            q(&d.join("kubelet")),
        );
        if let Some(ovs) = &self.openvswitch {
            let _ = write!(s, " && mount --bind {} /run/openvswitch", q(ovs));
        }
        s
    }
}

impl KubeletNode {
    /// Starts containerd (importing the images) and the kubelet of `spec` against `cp`; returns
    /// once the kubelet has registered the Node. The Node is NotReady until a CNI config is
    /// installed ([`KubeletNode::install_cni`]).
    pub fn start(cp: &ControlPlane, spec: &NodeSpec) -> Result<KubeletNode, KubeError> {
        let dir = tempfile::Builder::new()
            .prefix("ferrovn-kubelet-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        Self::start_in(cp, spec, Home::Scoped(dir), None)
    }

    /// Like [`KubeletNode::start`], with the well-known node paths of [`HostPaths`] in the
    /// node's mount namespace, so DaemonSet pods with `hostPath` volumes (FerrOVN's agent and
    /// install-cni, deploy/ferrovn.yaml) see the node as on a real one; containerd mounts pod
    /// network namespaces under `/run/netns`.
    pub fn start_with_host_paths(
        cp: &ControlPlane,
        spec: &NodeSpec,
        paths: &HostPaths,
    ) -> Result<KubeletNode, KubeError> {
        let dir = tempfile::Builder::new()
            .prefix("ferrovn-kubelet-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        Self::start_in(cp, spec, Home::Scoped(dir), Some(paths))
    }

    /// Like [`KubeletNode::start`], persistent in `dir` (created; must hold no running node):
    /// every process of the node (the mount-namespace holder, containerd, the kubelet, the
    /// daemons of [`KubeletNode::spawn_daemon`]) is detached with a PID file under `dir/run`,
    /// outlives this process and the handle, and is stopped by
    /// [`KubeletNode::stop_persistent`]; [`KubeletNode::open`] attaches from another process.
    /// No API relay is started (it would die with this process): the caller keeps the
    /// apiserver's `127.0.0.1:<port>` reachable inside the node's namespace. On failure what was
    /// started is stopped again.
    pub fn start_persistent(
        cp: &ControlPlane,
        spec: &NodeSpec,
        dir: &Path,
    ) -> Result<KubeletNode, KubeError> {
        Self::start_persistent_in(cp, spec, dir, None)
    }

    /// [`KubeletNode::start_persistent`] with the well-known node paths of [`HostPaths`]
    /// ([`KubeletNode::start_with_host_paths`]): a persistent node that runs DaemonSet pods
    /// with `hostPath` volumes (the lab's FerrOVN pods).
    pub fn start_persistent_with_host_paths(
        cp: &ControlPlane,
        spec: &NodeSpec,
        dir: &Path,
        paths: &HostPaths,
    ) -> Result<KubeletNode, KubeError> {
        Self::start_persistent_in(cp, spec, dir, Some(paths))
    }

    fn start_persistent_in(
        cp: &ControlPlane,
        spec: &NodeSpec,
        dir: &Path,
        host_paths: Option<&HostPaths>,
    ) -> Result<KubeletNode, KubeError> {
        if let Some(pid) = ["kubelet", "containerd", "holder"]
            .iter()
            .filter_map(|c| read_pid(&node_pid_file(dir, c)))
            .find(|p| alive(*p))
        {
            return Err(KubeError::Io {
                what: format!("start a kubelet node in {}", dir.display()),
                reason: format!(
                    "PID {pid} of an earlier one still runs there (stop it with KubeletNode::stop_persistent)"
                ),
            });
        }
        std::fs::create_dir_all(dir.join("run"))
            .map_err(io_err(format!("mkdir {}", dir.join("run").display())))?;
        let started = Self::start_in(cp, spec, Home::Persistent(dir.to_path_buf()), host_paths);
        if started.is_err() {
            let _ = Self::stop_persistent(dir);
        }
        started
    }

    fn start_in(
        cp: &ControlPlane,
        spec: &NodeSpec,
        dir: Home,
        host_paths: Option<&HostPaths>,
    ) -> Result<KubeletNode, KubeError> {
        let t0 = Instant::now();
        check_node_binaries()?;
        let bin = bin_dir();
        let pause = image_tar("pause.tar")?;
        let d = dir.path().to_path_buf();
        for sub in [
            "logs",
            "cni/bin",
            "cni/net.d",
            "kubelet",
            "pod-logs",
            "containerd",
        ] {
            std::fs::create_dir_all(d.join(sub)).map_err(io_err(format!("mkdir {sub}")))?;
        }
        let tag = crate::names::unique_tag();
        let cgroup = format!("ferrovn-{tag}");
        if dir.persistent() {
            // written first: a stop after a failed start finds the cgroup
            write_node_state(&d, &spec.name, &spec.netns, &cgroup, &[], Duration::ZERO)?;
        }
        create_cgroups(&cgroup)?;
        let procs = Path::new(CGROUP_ROOT)
            .join("pids")
            .join(&cgroup)
            .join("cgroup.procs");
        let s = |p: &Path| p.display().to_string();

        // From here on, a failure drops what was started so far (the holder first of all).
        let ready = d.join("holder.ready");
        let holder_args = vec![
            "-c".into(),
            HOLDER.into(),
            "sh".into(),
            s(&procs),
            s(&spec.netns),
            s(&ready),
            host_paths.map_or_else(
                // the kubelet writes some paths under /var/lib/kubelet whatever its --root-dir
                // (device-plugins/kubelet.sock): the node's own, as with HostPaths
                || {
                    format!(
                        "mount --bind {} /var/lib/kubelet",
                        sh_quote(&s(&d.join("kubelet")))
                    )
                },
                |h| h.script(&d),
            ),
            MOUNT_POINT_LOCK.into(),
            MOUNT_POINT_LIST.into(),
            mount_points(host_paths),
        ];
        let holder_log = d.join("logs/holder.log");
        let holder = if dir.persistent() {
            Component::spawn_detached_with_env(
                "mount-namespace holder",
                Path::new("/bin/sh"),
                holder_args,
                &[],
                holder_log,
                node_pid_file(&d, "holder"),
            )
        } else {
            Component::spawn_with_env(
                "mount-namespace holder",
                Path::new("/bin/sh"),
                holder_args,
                &[],
                holder_log,
            )
        };
        let holder = match holder {
            Ok(h) => h,
            Err(e) => {
                remove_cgroups(&cgroup);
                return Err(e);
            }
        };
        let mut node = KubeletNode {
            name: spec.name.clone(),
            kubelet: Component::idle("kubelet"),
            daemons: Vec::new(),
            containerd: Component::idle("containerd"),
            holder,
            relay: None,
            extra_relays: Vec::new(),
            host_paths: host_paths.is_some(),
            cgroup,
            netns: spec.netns.clone(),
            bin,
            dir,
            startup: Duration::ZERO,
            sysctls_saved: false,
        };
        node.wait("the node's mount namespace", START_TIMEOUT, |n| {
            ready.exists() || n.holder.check_alive().is_err()
        })?;
        node.holder.check_alive()?;

        // A node IP the namespace has already (e.g. a lab node's underlay address) stays where
        // it is.
        let has_ip = node
            .run_in(&["ip", "-o", "addr", "show"])
            .is_ok_and(|o| o.stdout.contains(&format!("inet {}/", spec.node_ip)));
        if !has_ip {
            node.run_in(&[
                "ip",
                "addr",
                "add",
                &format!("{}/32", spec.node_ip),
                "dev",
                "lo",
            ])?;
        }
        if !node.dir.persistent() {
            let port = server_port(cp.server())?;
            node.relay = Some(LoopbackRelay::start(&spec.netns, port)?);
        }

        node.start_containerd()?;
        for image in std::iter::once(&pause).chain(&spec.images) {
            node.ctr(&["images", "import", &s(image)])?;
        }

        let kubeconfig =
            cp.client_kubeconfig(&format!("system:node:{}", spec.name), &["system:nodes"])?;
        if node.dir.persistent() {
            // this node's kubelet changes them: its stop puts back what was there before it
            write_node_state(
                &d,
                &spec.name,
                &spec.netns,
                &node.cgroup,
                &read_sysctls(),
                Duration::ZERO,
            )?;
        } else {
            save_sysctls();
            node.sysctls_saved = true;
        }
        node.start_kubelet(cp, spec, &kubeconfig)?;
        node.wait_for_node(cp, "registered", |_| true)?;
        node.startup = t0.elapsed();
        if node.dir.persistent() {
            let saved = read_node_state(&d)?;
            write_node_state(
                &d,
                &spec.name,
                &spec.netns,
                &node.cgroup,
                &saved.sysctls,
                node.startup,
            )?;
        }
        Ok(node)
    }

    /// Attaches to the persistent node in `dir` (started by [`KubeletNode::start_persistent`],
    /// maybe by another process). Dropping the handle leaves it running. `Err` if `dir` holds
    /// none or its mount-namespace holder is gone.
    pub fn open(dir: &Path) -> Result<KubeletNode, KubeError> {
        let st = read_node_state(dir)?;
        let logs = dir.join("logs");
        let adopt = |c: &str, log: &str| {
            Component::adopt(c, node_pid_file(dir, c), logs.join(format!("{log}.log")))
        };
        let mut node = KubeletNode {
            name: st.name,
            kubelet: adopt("kubelet", "kubelet"),
            daemons: Vec::new(),
            containerd: adopt("containerd", "containerd"),
            holder: adopt("holder", "holder"),
            relay: None,
            extra_relays: Vec::new(),
            host_paths: false,
            cgroup: st.cgroup,
            netns: st.netns,
            bin: bin_dir(),
            dir: Home::Persistent(dir.to_path_buf()),
            startup: st.startup,
            sysctls_saved: false,
        };
        node.holder.check_alive()?;
        Ok(node)
    }

    /// Stops the persistent node in `dir`: the kubelet (it would recreate what goes next), every
    /// pod sandbox through the CRI while containerd and the node's daemons (the CNI's agent)
    /// still run, the daemons, containerd, then whatever is left in the node's cgroup by PID
    /// (shims, container processes, the mount-namespace holder: every mount of the node goes
    /// with it); removes the cgroups, puts the sysctls its kubelet changed back and removes
    /// `dir`. Nothing there: nothing to do.
    pub fn stop_persistent(dir: &Path) -> Result<NodeStopReport, KubeError> {
        let mut rep = NodeStopReport::default();
        let Ok(st) = read_node_state(dir) else {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(io_err(format!("remove {}", dir.display())))?;
            }
            return Ok(rep);
        };
        let marker = dir.display().to_string();
        let stop = |c: &str| stop_pid_file(&node_pid_file(dir, c), &marker).unwrap_or(false);
        if stop("kubelet") {
            rep.processes += 1;
        }
        let containerd_up = read_pid(&node_pid_file(dir, "containerd")).is_some_and(alive);
        let holder_up = read_pid(&node_pid_file(dir, "holder")).is_some_and(alive);
        if containerd_up
            && holder_up
            && let Ok(node) = Self::open(dir)
        {
            rep.sandboxes_removed = node.remove_sandboxes();
        }
        // daemons, newest first, then containerd
        let mut daemons: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir.join("run"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e
                            .file_name()
                            .to_string_lossy()
                            .strip_suffix(".pid")?
                            .to_string();
                        let t = e.metadata().and_then(|m| m.modified()).ok()?;
                        (!["kubelet", "containerd", "holder"].contains(&name.as_str()))
                            .then_some((t, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        daemons.sort();
        for (_, d) in daemons.iter().rev() {
            if stop(d) {
                rep.processes += 1;
            }
        }
        if stop("containerd") {
            rep.processes += 1;
        }
        // Whatever is left, by PID, from the node's own cgroup; the holder last.
        let pids_dir = Path::new(CGROUP_ROOT).join("pids").join(&st.cgroup);
        let holder = read_pid(&node_pid_file(dir, "holder"));
        let start = Instant::now();
        loop {
            let others: Vec<u32> = cgroup_pids(&pids_dir)
                .into_iter()
                .filter(|p| Some(*p) != holder)
                .collect();
            if others.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break;
            }
            for pid in others {
                rep.processes += 1;
                terminate(pid, Duration::ZERO);
            }
        }
        if let Some(h) = holder
            && cgroup_pids(&pids_dir).contains(&h)
        {
            terminate(h, Duration::ZERO);
            rep.processes += 1;
        }
        remove_cgroups(&st.cgroup);
        release_mount_points();
        for h in hierarchies() {
            if h.join(&st.cgroup).exists() {
                rep.leftovers
                    .push(format!("cgroup {}", h.join(&st.cgroup).display()));
            }
        }
        let left = cgroup_pids(&pids_dir);
        if !left.is_empty() {
            rep.leftovers.push(format!("processes {left:?}"));
        }
        for (path, value) in &st.sysctls {
            let _ = std::fs::write(path, value);
        }
        if rep.leftovers.is_empty() {
            std::fs::remove_dir_all(dir).map_err(io_err(format!("remove {}", dir.display())))?;
        }
        Ok(rep)
    }

    /// Every pod sandbox through the CRI, those on the pod network first: their CNI DEL goes
    /// to the node's agent, which may itself be a pod (on the host network), removed last.
    fn remove_sandboxes(&self) -> bool {
        let Ok(ids) = self.crictl(&["pods", "-q"]) else {
            return false;
        };
        let pod_network: Vec<&str> = ids
            .stdout
            .split_whitespace()
            .filter(|id| {
                self.crictl(&["inspectp", *id])
                    .ok()
                    .and_then(|o| serde_json::from_str::<serde_json::Value>(&o.stdout).ok())
                    .is_some_and(|v| !host_network(&v))
            })
            .collect();
        if !pod_network.is_empty() {
            let mut args = vec!["rmp", "--force"];
            args.extend(&pod_network);
            let _ = self.crictl(&args);
        }
        self.crictl(&["rmp", "--force", "--all"]).is_ok()
    }

    /// How long [`KubeletNode::start`] took, to the Node's registration.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private temp dir (logs in `logs/`, the kubelet's root dir in `kubelet/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The containerd socket (`crictl`, `ctr`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The kubelet's root dir (pod volumes under `pods/<uid>/volumes`).
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// The node's mount namespace (`/proc/<holder>/ns/mnt`).
    pub fn mount_ns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.pid().unwrap_or(0)))
    }

    /// The mount table of the node's mount namespace (`/proc/<holder>/mountinfo`).
    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!(
            "/proc/{}/mountinfo",
            self.holder.pid().unwrap_or(0)
        ))
        .unwrap_or_default()
    }

    /// Log of `kubelet`, `containerd`, or a daemon started with [`KubeletNode::spawn_daemon`].
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir
            .path()
            .join("logs")
            .join(format!("{component}.log"))
    }

    /// Installs the CNI config `conflist` (file `name`, e.g. `10-ferrovn.conflist`) and the
    /// plugin binaries (`(name in bin_dir, source path)`): containerd then reports the network
    /// ready and the kubelet makes the Node Ready.
    pub fn install_cni(
        &self,
        name: &str,
        conflist: &str,
        plugins: &[(&str, &Path)],
    ) -> Result<(), KubeError> {
        let d = self.dir.path().join("cni");
        for (bin_name, source) in plugins {
            let dest = d.join("bin").join(bin_name);
            std::fs::copy(source, &dest).map_err(io_err(format!(
                "copy {} to {}",
                source.display(),
                dest.display()
            )))?;
        }
        // Written in place, in one write: containerd reloads its CNI config on a Write event in
        // the directory and ignores Create, so a file renamed into place would go unnoticed
        // until its restart (an install-cni init container writes it the same way).
        let path = d.join("net.d").join(name);
        std::fs::write(&path, conflist).map_err(io_err(format!("write {}", path.display())))
    }

    /// Waits until the Node's Ready condition is True.
    pub fn wait_ready(&mut self, cp: &ControlPlane, timeout: Duration) -> Result<(), KubeError> {
        let name = self.name.clone();
        let waited = self.wait("the Node to be Ready", timeout, |n| {
            n.kubelet.check_alive().is_err()
                || cp
                    .kubectl(&[
                        "get",
                        "node",
                        &name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .is_ok_and(|o| o.stdout.trim() == "True")
        });
        if let Err(KubeError::Timeout {
            what,
            after,
            log,
            log_tail: kubelet_tail,
        }) = waited
        {
            // NotReady is mostly the runtime's network: containerd says why.
            let containerd = self.log_path("containerd");
            let cni: Vec<String> = std::fs::read_to_string(&containerd)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("cni") || l.contains("CNI"))
                .map(String::from)
                .collect();
            let cni = cni[cni.len().saturating_sub(10)..].join("\n");
            return Err(KubeError::Timeout {
                what,
                after,
                log,
                log_tail: format!(
                    "{kubelet_tail}\n--- {} (CNI lines):\n{cni}",
                    containerd.display()
                ),
            });
        }
        waited?;
        self.kubelet.check_alive()
    }

    /// Starts `program args` (with `env`) inside the node's namespaces and pids cgroup, log in
    /// `logs/<name>.log`; it is stopped on tear-down after the pods are gone (a node agent must
    /// outlive them: their CNI DELs go to it).
    pub fn spawn_daemon(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<u32, KubeError> {
        let mut all = self.enter_args();
        all.push(program.display().to_string());
        all.extend(args.iter().cloned());
        let c = if self.dir.persistent() {
            Component::spawn_detached_with_env(
                name,
                Path::new("/bin/sh"),
                all,
                env,
                self.log_path(name),
                node_pid_file(self.dir.path(), name),
            )?
        } else {
            Component::spawn_with_env(name, Path::new("/bin/sh"), all, env, self.log_path(name))?
        };
        let pid = c.pid().unwrap_or(0);
        self.daemons.push(c);
        Ok(pid)
    }

    /// `Err` with its log if a daemon of [`KubeletNode::spawn_daemon`] exited.
    pub fn check_daemons(&mut self) -> Result<(), KubeError> {
        for d in &mut self.daemons {
            d.check_alive()?;
        }
        self.kubelet.check_alive()?;
        self.containerd.check_alive()
    }

    /// `crictl args` against this node's containerd.
    pub fn crictl(&self, args: &[&str]) -> Result<Output, KubeError> {
        let ep = format!("unix://{}", self.containerd_socket().display());
        let mut all = vec!["--runtime-endpoint", ep.as_str(), "--timeout", "30s"];
        all.extend_from_slice(args);
        self.run_in_with(&self.bin.join("crictl"), &all)
    }

    /// `ctr -n k8s.io args` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<Output, KubeError> {
        let sock = self.containerd_socket().display().to_string();
        let mut all = vec!["--address", sock.as_str(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        self.run_in_with(&self.bin.join("ctr"), &all)
    }

    /// Runs `args[0] args[1..]` inside the node's mount and network namespaces.
    pub fn run_in(&self, args: &[&str]) -> Result<Output, KubeError> {
        let Some((program, rest)) = args.split_first() else {
            return Err(KubeError::Io {
                what: "run_in".into(),
                reason: "no program".into(),
            });
        };
        self.run_in_with(Path::new(program), rest)
    }

    fn run_in_with(&self, program: &Path, args: &[&str]) -> Result<Output, KubeError> {
        let mnt = format!("--mount={}", self.mount_ns().display());
        let net = format!("--net={}", self.netns.display());
        let prog = program.display().to_string();
        let mut all = vec!["-k", "5", "120", "nsenter", &mnt, &net, "--", &prog];
        all.extend_from_slice(args);
        run(Path::new("timeout"), &all, None)
    }

    /// Makes `127.0.0.1:port` of the test's namespace (e.g. OVN NB/SB on TCP) reachable at the
    /// same address inside the node, for the node's pods with `hostNetwork` (until drop).
    pub fn relay_loopback_port(&mut self, port: u16) -> Result<(), KubeError> {
        self.extra_relays
            .push(LoopbackRelay::start(&self.netns, port)?);
        Ok(())
    }

    /// Kills the kubelet (SIGKILL) and starts it again with the same flags; returns at once.
    pub fn restart_kubelet(&mut self) -> Result<(), KubeError> {
        self.kubelet.kill();
        self.kubelet.restart()
    }

    /// PID of the kubelet.
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.pid()
    }

    /// PIDs of every process in the node's pids cgroup (runtime, kubelet, daemons, pods).
    pub fn pids(&self) -> Vec<u32> {
        cgroup_pids(&Path::new(CGROUP_ROOT).join("pids").join(&self.cgroup))
    }

    /// The node's cgroup root (`/ferrovn-<tag>`).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.cgroup)
    }

    fn enter_args(&self) -> Vec<String> {
        let procs = Path::new(CGROUP_ROOT)
            .join("pids")
            .join(&self.cgroup)
            .join("cgroup.procs");
        vec![
            "-c".into(),
            ENTER.into(),
            "sh".into(),
            procs.display().to_string(),
            self.mount_ns().display().to_string(),
            self.netns.display().to_string(),
        ]
    }

    /// containerd or the kubelet: `sh -c ENTER` with the kube binaries first on PATH; detached
    /// with a PID file on a persistent node.
    fn spawn_component(&self, name: &str, args: Vec<String>) -> Result<Component, KubeError> {
        let env = [("PATH".to_string(), path_with(&self.bin))];
        if self.dir.persistent() {
            Component::spawn_detached_with_env(
                name,
                Path::new("/bin/sh"),
                args,
                &env,
                self.log_path(name),
                node_pid_file(self.dir.path(), name),
            )
        } else {
            Component::spawn_with_env(name, Path::new("/bin/sh"), args, &env, self.log_path(name))
        }
    }

    fn start_containerd(&mut self) -> Result<(), KubeError> {
        let d = self.dir.path().to_path_buf();
        let config = d.join("containerd.toml");
        std::fs::write(&config, containerd_config(&d, &self.bin, !self.host_paths))
            .map_err(io_err(format!("write {}", config.display())))?;
        let mut args = self.enter_args();
        args.extend([
            self.bin.join("containerd").display().to_string(),
            format!("--config={}", config.display()),
        ]);
        self.containerd = self.spawn_component("containerd", args)?;
        self.wait("containerd's CRI", START_TIMEOUT, |n| {
            n.containerd.check_alive().is_err() || n.crictl(&["info"]).is_ok()
        })?;
        self.containerd.check_alive()
    }

    fn start_kubelet(
        &mut self,
        cp: &ControlPlane,
        spec: &NodeSpec,
        kubeconfig: &Path,
    ) -> Result<(), KubeError> {
        let d = self.dir.path().to_path_buf();
        let resolv = d.join("resolv.conf");
        // Cluster DNS only: a pod never gets the host's (uplink) resolver.
        std::fs::write(&resolv, "nameserver 10.96.0.10\n").map_err(io_err("write resolv.conf"))?;
        let config = d.join("kubelet.yaml");
        std::fs::write(
            &config,
            kubelet_config(&d, cp.ca_cert(), &self.cgroup, &resolv),
        )
        .map_err(io_err(format!("write {}", config.display())))?;
        let mut args = self.enter_args();
        args.extend([
            self.bin.join("kubelet").display().to_string(),
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", d.join("kubelet").display()),
            format!("--hostname-override={}", spec.name),
            format!("--node-ip={}", spec.node_ip),
            "--v=2".into(),
        ]);
        if !spec.labels.is_empty() {
            let labels: Vec<String> = spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            args.push(format!("--node-labels={}", labels.join(",")));
        }
        self.kubelet = self.spawn_component("kubelet", args)?;
        Ok(())
    }

    fn wait_for_node(
        &mut self,
        cp: &ControlPlane,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<(), KubeError> {
        let name = self.name.clone();
        self.wait(&format!("Node {name} {what}"), START_TIMEOUT, |n| {
            n.kubelet.check_alive().is_err()
                || cp
                    .kubectl(&["get", "node", &name, "-o", "name"])
                    .is_ok_and(|o| check(o.stdout.trim()))
        })?;
        self.kubelet.check_alive()
    }

    /// Polls `done` until true; a timeout carries the kubelet's (or containerd's) log tail.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&mut KubeletNode) -> bool,
    ) -> Result<(), KubeError> {
        let start = Instant::now();
        loop {
            if done(self) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let log = if self.kubelet.pid().is_some() {
                    self.log_path("kubelet")
                } else {
                    self.log_path("containerd")
                };
                return Err(KubeError::Timeout {
                    what: what.into(),
                    after: timeout,
                    log: log.display().to_string(),
                    log_tail: log_tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        // A persistent node outlives its handle: KubeletNode::stop_persistent ends it.
        if self.dir.persistent() {
            return;
        }
        // The kubelet first: it would recreate what is removed next.
        self.kubelet.stop();
        // Pods through the CRI while containerd and the node agent run: each sandbox's CNI DEL
        // reaches the agent, which removes its port.
        if self.containerd.check_alive().is_ok() {
            let _ = self.crictl(&["rmp", "--force", "--all"]);
        }
        for d in self.daemons.iter_mut().rev() {
            d.stop();
        }
        self.containerd.stop();
        // Whatever is left (shims, container processes) by PID, from our own cgroup.
        let pids_dir = Path::new(CGROUP_ROOT).join("pids").join(&self.cgroup);
        let start = Instant::now();
        loop {
            let pids = cgroup_pids(&pids_dir);
            let holder = self.holder.pid();
            let others: Vec<u32> = pids.into_iter().filter(|p| Some(*p) != holder).collect();
            if others.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break;
            }
            for pid in others {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: plain syscall; the PID was read from this node's own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The mount namespace (and every mount in it) goes with its last process.
        self.holder.kill();
        remove_cgroups(&self.cgroup);
        release_mount_points();
        if self.sysctls_saved {
            restore_sysctls();
        }
        self.relay = None;
        self.extra_relays.clear();
    }
}

/// The port of `https://127.0.0.1:<port>`.
fn server_port(server: &str) -> Result<u16, KubeError> {
    server
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| KubeError::Io {
            what: format!("apiserver URL {server}"),
            reason: "no port".into(),
        })
}

fn path_with(bin: &Path) -> String {
    let mut p = bin.display().to_string();
    if let Some(rest) = std::env::var_os("PATH") {
        let _ = write!(p, ":{}", rest.to_string_lossy());
    }
    p
}

/// containerd 2.x (config version 3) with this machine's workarounds:
/// `restrict_oom_score_adj` (no CAP_SYS_RESOURCE: the sandbox's -998 would be refused),
/// no AppArmor, no hugetlb controller (it is on the v2 mount only), netns mounts under the
/// state dir (the node agent, in the same mount namespace, opens them), the loopback
/// interface brought up by containerd itself (no `loopback` plugin binary needed).
fn containerd_config(d: &Path, bin: &Path, netns_under_state: bool) -> String {
    let p = |s: &str| d.join(s).display().to_string();
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  netns_mounts_under_state_dir = {netns_under_state}
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    use_internal_loopback = true

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# NRI's default socket is the machine's /var/run/nri/nri.sock: two nodes' containerd would
# fight over it (the second dies with "address already in use")
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "{nri}"
"#,
        root = p("containerd/root"),
        state = p("containerd/state"),
        sock = p("containerd.sock"),
        pause = pause_image(),
        runc = bin.join("runc").display(),
        cni_bin = p("cni/bin"),
        cni_conf = p("cni/net.d"),
        nri = p("nri.sock"),
    )
}

/// The kubelet with this machine's workarounds: cgroup v1 allowed (`failCgroupV1: false`),
/// swap tolerated, cgroupfs driver under a cgroup root of its own, low eviction thresholds
/// and no image GC (the images cannot be pulled back), webhook authn/authz against the
/// apiserver.
fn kubelet_config(d: &Path, ca: &Path, cgroup: &str, resolv: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://{sock}
imageServiceEndpoint: unix://{sock}
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failCgroupV1: false
failSwapOn: false
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: {resolv}
podLogsDir: {logs}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
runtimeRequestTimeout: 2m
"#,
        sock = d.join("containerd.sock").display(),
        ca = ca.display(),
        resolv = resolv.display(),
        logs = d.join("pod-logs").display(),
    )
}

/// The cgroup v1 hierarchies mounted under [`CGROUP_ROOT`].
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    v.sort();
    v
}

fn create_cgroups(cgroup: &str) -> Result<(), KubeError> {
    for h in hierarchies() {
        let dir = h.join(cgroup);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
        // A new cpuset has no CPUs and no memory nodes: nothing could run in it.
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.join(f)).unwrap_or_default();
                std::fs::write(dir.join(f), v.trim())
                    .map_err(io_err(format!("write {}", dir.join(f).display())))?;
            }
        }
    }
    Ok(())
}

/// Every PID in `dir` and below.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    pids
}

/// Removes `cgroup` and everything below it in every hierarchy, deepest first (a cgroup with
/// a process left is kept: rmdir fails, nothing is forced).
fn remove_cgroups(cgroup: &str) {
    for h in hierarchies() {
        let root = h.join(cgroup);
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A persistent node's record ([`NODE_STATE_FILE`]).
#[derive(Debug)]
struct NodeState {
    name: String,
    netns: PathBuf,
    cgroup: String,
    /// The machine-wide sysctls before this node's kubelet started.
    sysctls: Vec<(PathBuf, String)>,
    startup: Duration,
}

fn write_node_state(
    dir: &Path,
    name: &str,
    netns: &Path,
    cgroup: &str,
    sysctls: &[(PathBuf, String)],
    startup: Duration,
) -> Result<(), KubeError> {
    let body = serde_json::json!({
        "name": name,
        "netns": netns,
        "cgroup": cgroup,
        "sysctls": sysctls.iter().map(|(p, v)| serde_json::json!([p, v])).collect::<Vec<_>>(),
        "startup_ms": startup.as_millis() as u64,
    });
    let path = dir.join(NODE_STATE_FILE);
    std::fs::write(&path, body.to_string()).map_err(io_err(format!("write {}", path.display())))
}

fn read_node_state(dir: &Path) -> Result<NodeState, KubeError> {
    let path = dir.join(NODE_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(format!(
        "read {} (no kubelet node was started there)",
        path.display()
    )))?;
    let bad = |reason: &str| KubeError::Io {
        what: format!("parse {}", path.display()),
        reason: reason.into(),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("no {k}")))
    };
    let sysctls = v
        .get("sysctls")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        PathBuf::from(e.get(0)?.as_str()?),
                        e.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(NodeState {
        name: field("name")?,
        netns: PathBuf::from(field("netns")?),
        cgroup: field("cgroup")?,
        sysctls,
        startup: Duration::from_millis(
            v.get("startup_ms")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        ),
    })
}

/// The current values of [`KUBELET_SYSCTLS`].
fn read_sysctls() -> Vec<(PathBuf, String)> {
    KUBELET_SYSCTLS
        .iter()
        .map(|k| Path::new("/proc/sys").join(k))
        .filter_map(|p| {
            let v = std::fs::read_to_string(&p).ok()?;
            Some((p, v.trim().to_string()))
        })
        .collect()
}
