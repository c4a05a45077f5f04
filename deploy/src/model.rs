//! The lab's plain data: what it records in its state dir, which pods the manifests ask for,
//! which pod pairs must reach each other, and how the status is printed. No I/O here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Chassis / `spec.nodeName` of the node running OVS-DPDK (when hugepages allow it).
pub const NODE_DPDK: &str = "lab-dpdk";
/// Chassis / `spec.nodeName` of the kernel-profile node.
pub const NODE_KERNEL: &str = "lab-kernel";
pub const NODES: [&str; 2] = [NODE_DPDK, NODE_KERNEL];

/// Format of `lab.json` and the records file.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dpdk,
    Kernel,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dpdk => "dpdk",
            Profile::Kernel => "kernel",
        }
    }
}

/// One lab node (a network namespace with its own OVS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub profile: Profile,
    /// Why this profile (shown in the status table).
    pub reason: String,
    /// The node's run dir: OVS db, sockets, logs.
    pub dir: PathBuf,
    pub encap_ip: String,
    pub cni_socket: PathBuf,
    /// The vhost helper's control socket (kernel node), when the helper runs.
    pub vhost_socket: Option<PathBuf>,
    /// The vhost-user socket dir the agent bind-mounts pod volumes into.
    pub vhost_dir: PathBuf,
}

/// What `up` built (written once everything runs; `status`, `apply` and `delete` read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub prefix: String,
    pub bin_dir: PathBuf,
    pub nb_remote: String,
    pub sb_remote: String,
    /// TCP listeners of NB/SB on 127.0.0.1 (for the user's ovn-nbctl), if any.
    pub nb_tcp: Option<u16>,
    pub sb_tcp: Option<u16>,
    pub raft: bool,
    pub nodes: Vec<NodeState>,
    pub hugetlbfs: Option<PathBuf>,
    /// The lab's Kubernetes control plane.
    #[serde(default)]
    pub kube: Option<KubeState>,
}

/// The lab's Kubernetes control plane (persistent, in the state dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    /// Its directory: certificates, kubeconfigs, etcd data, logs, PID files.
    pub dir: PathBuf,
    /// The admin kubeconfig (`system:masters`), for the user and the lab's own kubectl.
    pub admin_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub server: String,
    /// From starting etcd to a usable cluster (the `default` ServiceAccount exists).
    pub startup_ms: u64,
}

impl LabState {
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Everything `up` creates, recorded the moment it exists so `down` (from any process, after
/// any failure) undoes exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A process we started. `marker` must appear in its command line (guards against PID
    /// reuse); `interrupt` = stop it with SIGINT (testpmd ignores SIGTERM while waiting).
    Process {
        name: String,
        pid: u32,
        marker: String,
        #[serde(default)]
        interrupt: bool,
    },
    /// An ovs-vswitchd: bridges are deleted through it and it exits with `--cleanup`.
    Vswitchd {
        db: String,
        ctl: PathBuf,
    },
    Netns {
        name: String,
    },
    /// A link in a namespace (deleting a netns is asynchronous: delete veth ends explicitly).
    Link {
        netns: String,
        name: String,
    },
    Mount {
        path: PathBuf,
    },
    /// `vm.nr_hugepages` before we raised it, and the value we set.
    Hugepages {
        original: u64,
        set_to: u64,
    },
    Cgroup {
        path: PathBuf,
    },
    /// A persistent Kubernetes control plane in `dir` (PID files there): stopped by PID, then
    /// `dir` removed.
    KubeControlPlane {
        dir: PathBuf,
    },
    /// A lab node's containerd and kubelet, persistent in `dir` (testkit's KubeletNode: PID
    /// files, its own mount namespace and cgroup): its pods removed through the CRI, its
    /// processes stopped by PID, its cgroups and `dir` removed.
    KubeletNode {
        dir: PathBuf,
    },
    /// `/var/run/dpdk/<prefix>` and hugetlbfs `<prefix>map_*` files.
    DpdkPrefix {
        prefix: String,
    },
}

/// How a pod interface is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfKind {
    /// A veth pair into OVS (kernel path).
    Veth,
    /// A `dpdkvhostuserclient` port on OVS-DPDK.
    VhostUser,
    /// A vhost-user socket served by the vhost helper on a kernel node.
    Helper,
}

impl IfKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IfKind::Veth => "veth",
            IfKind::VhostUser => "vhost-user",
            IfKind::Helper => "helper",
        }
    }
}

/// The vhost-user part of an attachment request (from the NAD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostSpec {
    pub volume: String,
    pub socket: String,
}

/// One interface a pod manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfPlan {
    pub ifname: String,
    /// `ovn` or `<nad>.<ns>.ovn`.
    pub provider: String,
    /// The CNI netconf as the runtime (Multus) hands it to the plugin, minus `server_socket`.
    pub netconf: serde_json::Value,
    pub vhost: Option<VhostSpec>,
}

/// One pod of the manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub interfaces: Vec<IfPlan>,
    /// Why the lab cannot run this pod (no node, unknown NAD, ...), if so.
    pub problem: Option<String>,
}

impl PodPlan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// A DPDK pod: one of its interfaces is vhost-user.
    pub fn is_dpdk(&self) -> bool {
        self.interfaces.iter().any(|i| i.vhost.is_some())
    }
}

/// Where an interface stands after `up`/`apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum IfStatus {
    Ready,
    /// Not available (yet): the part that serves it is missing or failed; `reason` says which.
    Unavailable {
        reason: String,
    },
}

/// One interface of a created pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfState {
    pub ifname: String,
    pub provider: String,
    pub kind: IfKind,
    pub ip: Option<IpAddr>,
    pub mac: Option<String>,
    pub status: IfStatus,
}

/// A pod on a lab node as the lab sees it: the sandbox its kubelet made (named in /var/run/netns
/// for the probes), its interfaces and their addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    /// The pod sandbox's id (containerd's, as the kubelet's CNI ADD had it).
    pub container_id: String,
    /// The sandbox's network namespace as containerd named it (inside its node's mount
    /// namespace): the CNI_NETNS of the lab's attachment ADD/DEL.
    #[serde(default)]
    pub sandbox_netns: String,
    pub uid: String,
    pub dpdk: bool,
    pub interfaces: Vec<IfState>,
    /// The pod's DPDK app (testpmd), if running.
    pub app_pid: Option<u32>,
    pub app_marker: Option<String>,
    /// Why the whole pod is not available, if so.
    pub problem: Option<String>,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The interface probes go to: a DPDK pod's vhost-user interface, else eth0.
    pub fn probe_interface(&self) -> Option<&IfState> {
        if self.dpdk {
            self.interfaces
                .iter()
                .find(|i| matches!(i.kind, IfKind::VhostUser | IfKind::Helper))
        } else {
            self.interfaces.iter().find(|i| i.ifname == "eth0")
        }
    }

    /// Why probes to/from this pod cannot run, if so.
    pub fn unavailable(&self) -> Option<String> {
        if let Some(p) = &self.problem {
            return Some(p.clone());
        }
        match self.probe_interface() {
            None => Some("no probe interface".into()),
            Some(i) => match &i.status {
                IfStatus::Unavailable { reason } => Some(format!("{}: {reason}", i.ifname)),
                IfStatus::Ready if i.ip.is_none() => Some(format!("{}: no address", i.ifname)),
                IfStatus::Ready => None,
            },
        }
    }
}

/// One probe to make: `from` pings `to_ip` (indices into the pod list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub from: usize,
    pub to: usize,
    pub to_ip: IpAddr,
}

/// The expected reachability: every kernel pod pings every other pod (DPDK pods are targets
/// only: their app answers ARP and ICMP echo, it does not originate pings). Pods that are not
/// available are left out and listed with their reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbePlan {
    pub pairs: Vec<Pair>,
    /// (pod key, reason) of pods left out.
    pub unavailable: Vec<(String, String)>,
    /// Pairs that would exist if every pod were available.
    pub left_out_pairs: usize,
}

pub fn probe_plan(pods: &[PodState]) -> ProbePlan {
    let mut plan = ProbePlan::default();
    let ok: Vec<Option<IpAddr>> = pods
        .iter()
        .map(|p| match p.unavailable() {
            None => p.probe_interface().and_then(|i| i.ip),
            Some(_) => None,
        })
        .collect();
    for (i, p) in pods.iter().enumerate() {
        if let Some(reason) = p.unavailable() {
            plan.unavailable.push((p.key(), reason));
        }
        let _ = i;
    }
    for (from, src) in pods.iter().enumerate() {
        if src.dpdk {
            continue;
        }
        for (to, _) in pods.iter().enumerate() {
            if to == from {
                continue;
            }
            match (ok[from], ok[to]) {
                (Some(_), Some(to_ip)) => plan.pairs.push(Pair { from, to, to_ip }),
                _ => plan.left_out_pairs += 1,
            }
        }
    }
    plan
}

/// The last line of `make lab`.
pub fn summary_line(reachable: usize, total: usize) -> String {
    format!("lab: {reachable}/{total} pod pairs reachable")
}

/// A plain text table: a header row, a rule, then rows; columns padded to the widest cell.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            } else {
                widths.push(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).copied().unwrap_or("");
            s.push_str(c);
            if i + 1 < widths.len() {
                s.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Probe outcome of one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reachable,
    Unreachable,
}

/// The connectivity matrix: rows are probe sources (kernel pods), columns every pod, by number.
/// Cells: `ok`, `FAIL`, `n/a` (a pod not available), `-` (itself, or a DPDK pod as source).
pub fn render_matrix(
    pods: &[PodState],
    plan: &ProbePlan,
    results: &BTreeMap<(usize, usize), Outcome>,
) -> String {
    let mut headers: Vec<String> = vec!["from \\ to".into()];
    headers.extend((1..=pods.len()).map(|i| format!("{i}")));
    let mut rows = Vec::new();
    for (from, src) in pods.iter().enumerate() {
        if src.dpdk {
            continue;
        }
        let mut row = vec![format!("{} {}", from + 1, src.key())];
        for to in 0..pods.len() {
            let cell = if to == from {
                "-"
            } else if !plan.pairs.iter().any(|p| p.from == from && p.to == to) {
                "n/a"
            } else {
                match results.get(&(from, to)) {
                    Some(Outcome::Reachable) => "ok",
                    Some(Outcome::Unreachable) => "FAIL",
                    None => "?",
                }
            };
            row.push(cell.to_string());
        }
        rows.push(row);
    }
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    render_table(&h, &rows)
}

/// Checks a name prefix: it ends up in netns and interface names (<= 15 bytes with suffixes).
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 8 {
        return Err(format!(
            "prefix {prefix:?}: 1 to 8 characters (it is part of interface names, max 15 bytes)"
        ));
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || prefix.starts_with('-')
    {
        return Err(format!(
            "prefix {prefix:?}: only a-z, 0-9 and '-' (not first)"
        ));
    }
    Ok(())
}

/// A name usable in a netns name: lowercase, `[a-z0-9-]`, other characters become `-`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Hugepages to ask the kernel for: enough free 2 MiB pages for `need_mib`, given the pool now.
/// Returns the new `nr_hugepages` (or `None` if nothing needs to change).
pub fn hugepages_target(total_pages: u64, free_pages: u64, need_mib: u64) -> Option<u64> {
    let need_pages = need_mib.div_ceil(2);
    if free_pages >= need_pages {
        None
    } else {
        Some(total_pages + (need_pages - free_pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, dpdk: bool, ip: Option<&str>, status: IfStatus) -> PodState {
        let kind = if dpdk {
            IfKind::VhostUser
        } else {
            IfKind::Veth
        };
        let ifname = if dpdk { "net1" } else { "eth0" };
        PodState {
            namespace: "ns".into(),
            name: name.into(),
            node: NODE_KERNEL.into(),
            netns: format!("x-{name}"),
            container_id: "c".into(),
            sandbox_netns: String::new(),
            uid: "u".into(),
            dpdk,
            interfaces: vec![IfState {
                ifname: ifname.into(),
                provider: "ovn".into(),
                kind,
                ip: ip.map(|s| s.parse().unwrap()),
                mac: None,
                status,
            }],
            app_pid: None,
            app_marker: None,
            problem: None,
        }
    }

    #[test]
    fn kernel_pods_probe_everyone_dpdk_pods_are_targets_only() {
        let pods = vec![
            pod("a", false, Some("10.0.0.2"), IfStatus::Ready),
            pod("b", false, Some("10.0.0.3"), IfStatus::Ready),
            pod("d", true, Some("10.0.0.4"), IfStatus::Ready),
        ];
        let plan = probe_plan(&pods);
        // a->b, a->d, b->a, b->d
        assert_eq!(plan.pairs.len(), 4);
        assert!(plan.pairs.iter().all(|p| p.from != 2));
        assert!(plan.pairs.iter().any(|p| p.from == 0 && p.to == 2));
        assert_eq!(plan.left_out_pairs, 0);
        assert!(plan.unavailable.is_empty());
    }

    #[test]
    fn unavailable_pods_are_listed_and_their_pairs_left_out() {
        let pods = vec![
            pod("a", false, Some("10.0.0.2"), IfStatus::Ready),
            pod(
                "d",
                true,
                None,
                IfStatus::Unavailable {
                    reason: "vhost helper not integrated".into(),
                },
            ),
        ];
        let plan = probe_plan(&pods);
        assert!(plan.pairs.is_empty());
        assert_eq!(plan.left_out_pairs, 1);
        assert_eq!(plan.unavailable.len(), 1);
        assert!(plan.unavailable[0].1.contains("vhost helper"));
    }

    #[test]
    fn summary_line_is_the_documented_one() {
        assert_eq!(summary_line(3, 4), "lab: 3/4 pod pairs reachable");
    }

    #[test]
    fn table_columns_align() {
        let t = render_table(
            &["a", "long header"],
            &[
                vec!["xxxxx".into(), "y".into()],
                vec!["z".into(), "w".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a      long header");
        assert_eq!(lines[1], "-----  -----------");
        assert_eq!(lines[2], "xxxxx  y");
        assert_eq!(lines[3], "z      w");
    }

    #[test]
    fn matrix_marks_self_and_missing() {
        let pods = vec![
            pod("a", false, Some("10.0.0.2"), IfStatus::Ready),
            pod("b", false, Some("10.0.0.3"), IfStatus::Ready),
        ];
        let plan = probe_plan(&pods);
        let mut res = BTreeMap::new();
        res.insert((0, 1), Outcome::Reachable);
        res.insert((1, 0), Outcome::Unreachable);
        let m = render_matrix(&pods, &plan, &res);
        let rows: Vec<Vec<&str>> = m
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], vec!["1", "ns/a", "-", "ok"], "{m}");
        assert_eq!(rows[1], vec!["2", "ns/b", "FAIL", "-"], "{m}");
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("fvlab").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("waytoolongprefix").is_err());
        assert!(validate_prefix("Bad").is_err());
        assert!(validate_prefix("-x").is_err());
    }

    #[test]
    fn hugepages_only_raised_by_the_deficit() {
        assert_eq!(hugepages_target(0, 0, 512), Some(256));
        assert_eq!(hugepages_target(100, 100, 512), Some(256));
        assert_eq!(hugepages_target(1024, 900, 512), None);
        assert_eq!(hugepages_target(300, 10, 512), Some(546));
    }

    #[test]
    fn sanitize_names() {
        assert_eq!(sanitize("Team_A.x"), "team-a-x");
    }

    proptest::proptest! {
        #[test]
        fn pairs_never_start_at_dpdk_pods_nor_loop(flags in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 0..8)) {
            let pods: Vec<PodState> = flags.iter().enumerate().map(|(i, (dpdk, up))| {
                let st = if *up { IfStatus::Ready } else { IfStatus::Unavailable { reason: "x".into() } };
                pod(&format!("p{i}"), *dpdk, Some(&format!("10.0.0.{}", i + 2)), st)
            }).collect();
            let plan = probe_plan(&pods);
            let kernel_up = flags.iter().filter(|(d, u)| !d && *u).count();
            let up = flags.iter().filter(|(_, u)| *u).count();
            let kernel = flags.iter().filter(|(d, _)| !d).count();
            proptest::prop_assert_eq!(plan.pairs.len(), kernel_up * up.saturating_sub(1));
            proptest::prop_assert_eq!(plan.pairs.len() + plan.left_out_pairs, kernel * pods.len().saturating_sub(1));
            for p in &plan.pairs {
                proptest::prop_assert!(p.from != p.to);
                proptest::prop_assert!(!pods[p.from].dpdk);
            }
            proptest::prop_assert_eq!(plan.unavailable.len(), pods.len() - up);
        }
    }
}
