//! One DPDK node as the DPDK benchmarks and the OVN-native egress lab need it: OVN central, an
//! OVS-DPDK node (lcore cpu0, one PMD on cpu1, configured through the agent's own DPDK profile
//! code before ovs-vswitchd starts), the node's agent and ovn-controller, and pods added
//! through the real CNI plugin: vhost-user ("DPDK") pods whose socket a testpmd in the pod's
//! namespace serves, and veth (kernel) pods.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovn_dataplane::alloc::FileAllocations;
use ferrovn_dataplane::dpdk::config::{
    DpdkDevice, DpdkNodeConfig, Underlay, apply_other_config, plan_dpdk_node,
};
use ferrovn_dataplane::dpdk::vhost::{VhostUserInfo, info_file_name};
use ferrovn_dataplane::ovs::OvsClient;
use ferrovn_dataplane::profile::{HostPaths, gather_inputs, select_profile};

use crate::cluster::{Subnet, allocate_pod, wait_chassis_count};
use crate::cni::{CniCall, cni_netconf, run_cni};
use crate::dpdk::{DpdkRuntimeDir, SharedDir};
use crate::error::{Error, Result};
use crate::names::unique_tag;
use crate::netns::Netns;
use crate::ovs_node::{Node, NodeConfig, TwoNodes};
use crate::ovs_paths::vswitchd_dpdk;
use crate::ovsdb::OvnCentral;
use crate::wait::wait_until;

/// The CNI provider of vhost-user attachments (Kube-OVN's `<nad>.<ns>.ovn` form).
pub const DPDK_PROVIDER: &str = "dpdk.default.ovn";

/// How to start a [`DpdkNode`].
pub struct DpdkNodeSpec<'a> {
    /// Short prefix of every name this node makes (netns, DPDK file prefix, temp paths), so
    /// concurrent labs and leftovers are told apart (`fve`, `fvc`, ...).
    pub prefix: &'a str,
    /// Unique per run (`names::unique_tag`): the node's name and chassis are `<prefix>-<tag>`.
    pub tag: &'a str,
    /// Short random part (`names::short_rand`) of DPDK file prefixes and socket paths, which
    /// have length limits.
    pub rnd: &'a str,
    /// Where the DPDK config and allocations are written.
    pub work: &'a Path,
    pub agent: &'a Path,
    pub plugin: &'a Path,
    /// A hugetlbfs for OVS; `None`: `--no-huge`.
    pub huge_dir: Option<&'a Path>,
    /// Appended to the agent's DPDK flags (e.g. `--egress-uplink=...`).
    pub extra_agent_args: Vec<String>,
}

/// OVN central and two nodes joined by Geneve: node 0 on OVS-DPDK (one PMD on cpu1, idle
/// PMD sleeps up to 500 µs; vhost-user ports via [`Node::add_vhost_user_client`]), node 1 on
/// the plain userspace datapath, so kernel pods on both and DPDK pods on node 0 meet on the
/// same node and across nodes. Both configured for OVN with ovn-controller running (no agent:
/// the test owns the NB, e.g. through the planner).
pub struct DpdkAndKernelNodes {
    // dropped first: the nodes (and their vswitchd) go before the DPDK runtime dir
    pub lab: TwoNodes,
    _ovs_run: DpdkRuntimeDir,
}

impl DpdkAndKernelNodes {
    /// `prefix` (short) and `rnd` (`names::short_rand`) make the DPDK file prefix unique;
    /// `huge_dir`: a hugetlbfs for OVS-DPDK (e.g. a [`crate::dpdk::HugepageLease`]'s), `None`:
    /// `--no-huge`.
    pub fn start(prefix: &str, rnd: &str, huge_dir: Option<&Path>) -> Result<Self> {
        let file_prefix = format!("{prefix}ovs{rnd}");
        let ovs_run = DpdkRuntimeDir::new(&file_prefix);
        let mut dcfg = DpdkNodeConfig::example();
        dcfg.socket_mem_mib = vec![256];
        dcfg.lcore_cpus = vec![0];
        dcfg.pmd_cpus = vec![1];
        dcfg.file_prefix = file_prefix;
        match huge_dir {
            Some(h) => dcfg.huge_dir = Some(h.to_path_buf()),
            None => {
                dcfg.allow_no_huge = true;
                dcfg.huge_dir = Some(PathBuf::from("/nonexistent-hugetlbfs"));
            }
        }
        let central = OvnCentral::start()?;
        let tag = unique_tag();
        let dpdk = start_ovs_dpdk(
            &format!("{prefix}-{tag}-dpdk"),
            &format!("{prefix}-{tag}-dpdk"),
            &dcfg,
        )?;
        let kernel = Node::start(
            &format!("{prefix}-{tag}-kern"),
            &NodeConfig::plain(&format!("{prefix}-{tag}-kern")),
        )?;
        let mut lab = TwoNodes::join(central, [dpdk, kernel])?;
        let sb = lab.central.sb_remote();
        for n in lab.nodes.iter_mut() {
            n.configure_ovn_with_vsctl(&sb)?;
            n.start_ovn_controller()?;
        }
        wait_chassis_count(&lab.central, 2, Duration::from_secs(30))?;
        Ok(DpdkAndKernelNodes {
            lab,
            _ovs_run: ovs_run,
        })
    }
}

/// A tunnel underlay for a [`DpdkNode`] that has peer nodes: the agent puts `iface` (a veth
/// end in the node's namespace by the time `before_agent` returns) into br-phy as a DPDK
/// `net_af_packet` port and gives br-phy `cidr`, the node's tunnel endpoint (the shape
/// dataplane/tests/dpdk_e2e.rs proves).
#[derive(Debug, Clone, Copy)]
pub struct DpdkUnderlay<'a> {
    pub iface: &'a str,
    /// e.g. `192.168.100.2/24`.
    pub cidr: &'a str,
}

/// The running node.
pub struct DpdkNode {
    // dropped in this order: the node's daemons stop before OVN central does
    pub node: Node,
    pub central: OvnCentral,
    pub allocs: FileAllocations,
    kubelet: tempfile::TempDir,
    _vhost_dir: SharedDir,
    _ovs_run: DpdkRuntimeDir,
    plugin: PathBuf,
    tag: String,
    prefix: String,
}

/// A DPDK (vhost-user) pod: its attachment and where its socket is.
pub struct DpdkPod {
    pub info: VhostUserInfo,
    pub volume: PathBuf,
    pub netns: Netns,
    pub ip: String,
}

impl DpdkPod {
    /// The testpmd `--vdev` serving this pod's socket as DPDK port `index`.
    pub fn vdev(&self, index: u32) -> String {
        self.info
            .virtio_user_vdev(index, &self.info.socket_in(&self.volume))
    }
}

fn setup(e: impl std::fmt::Display) -> Error {
    Error::Setup(e.to_string())
}

/// Starts OVS-DPDK (`ovs-vswitchd-dpdk`) in a new namespace `netns_name` for the OVN node
/// `name`: the DPDK settings of `dcfg` go through the agent's own profile code into the
/// database before ovs-vswitchd starts (lcores, PMD cores, memory, file prefix); returns once
/// DPDK is initialised. No bridge, no agent, no ovn-controller yet.
pub fn start_ovs_dpdk(netns_name: &str, name: &str, dcfg: &DpdkNodeConfig) -> Result<Node> {
    let pre = dcfg.clone();
    let node = Node::start_with(
        netns_name,
        &NodeConfig {
            name: name.to_string(),
            vswitchd: vswitchd_dpdk(),
            other_config: vec![],
        },
        move |n| {
            let i = gather_inputs(
                &HostPaths {
                    // the DPDK vswitchd of the OVS/OVN rootfs, not Debian's path on the host
                    dpdk_vswitchd: vswitchd_dpdk(),
                    ..HostPaths::default()
                },
                Some("userspace".into()),
                Some(pre),
                false,
            )
            .map_err(setup)?;
            let d = select_profile(&i).map_err(setup)?;
            let s = d.settings.ok_or_else(|| setup(d.message.clone()))?;
            let plan = plan_dpdk_node(&s);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(setup)?;
            rt.block_on(async {
                let ovs = OvsClient::connect(&n.db_remote()).await?;
                apply_other_config(&ovs, &plan).await
            })
            .map_err(setup)?;
            Ok(())
        },
    )?;
    if !wait_until(Duration::from_secs(60), || {
        node.vsctl(["get", "Open_vSwitch", ".", "dpdk_initialized"])
            .map(|s| s.trim() == "true")
            .unwrap_or(false)
    }) {
        return Err(setup("OVS-DPDK did not initialise"));
    }
    Ok(node)
}

impl DpdkNode {
    /// Starts everything up to a registered chassis; `before_agent` runs once OVS-DPDK is up
    /// and before the agent starts (e.g. to create the interfaces its flags name).
    pub fn start(
        spec: &DpdkNodeSpec<'_>,
        before_agent: impl FnOnce(&Node) -> Result<()>,
    ) -> Result<Self> {
        Self::start_inner(spec, None, before_agent)
    }

    /// [`DpdkNode::start`] with a tunnel underlay, so that other nodes' chassis reach this
    /// one over Geneve. `before_agent` must leave `underlay.iface` in the node's namespace.
    pub fn start_with_underlay(
        spec: &DpdkNodeSpec<'_>,
        underlay: &DpdkUnderlay<'_>,
        before_agent: impl FnOnce(&Node) -> Result<()>,
    ) -> Result<Self> {
        Self::start_inner(spec, Some(underlay), before_agent)
    }

    fn start_inner(
        spec: &DpdkNodeSpec<'_>,
        underlay: Option<&DpdkUnderlay<'_>>,
        before_agent: impl FnOnce(&Node) -> Result<()>,
    ) -> Result<Self> {
        let p = spec.prefix;
        let ovs_run = DpdkRuntimeDir::new(&format!("{p}ovs{}", spec.rnd));
        let vhost_dir =
            SharedDir::create(Path::new(&format!("/tmp/{p}v{}", spec.rnd))).map_err(setup)?;
        let kubelet = tempfile::Builder::new()
            .prefix(&format!("{p}k"))
            .tempdir_in("/tmp")
            .map_err(setup)?;
        let central = OvnCentral::start()?;
        let sb = central.sb_remote();
        let mut dcfg = DpdkNodeConfig::example();
        dcfg.socket_mem_mib = vec![256];
        dcfg.lcore_cpus = vec![0];
        dcfg.pmd_cpus = vec![1];
        dcfg.file_prefix = format!("{p}ovs{}", spec.rnd);
        match spec.huge_dir {
            Some(h) => dcfg.huge_dir = Some(h.to_path_buf()),
            None => {
                dcfg.allow_no_huge = true;
                dcfg.huge_dir = Some(PathBuf::from("/nonexistent-hugetlbfs"));
            }
        }
        if let Some(u) = underlay {
            dcfg.no_pci = true;
            dcfg.iova_mode = Some("va".into());
            dcfg.devices = vec![DpdkDevice {
                name: "dpdk0".into(),
                devargs: format!("net_af_packet0,iface={}", u.iface),
                n_rxq: None,
                mtu: None,
            }];
            dcfg.underlay = Some(Underlay {
                bridge: "br-phy".into(),
                cidr: u.cidr.parse().map_err(setup)?,
                mtu: 1500,
            });
        }
        let cfg_path = spec.work.join("dpdk.json");
        std::fs::write(&cfg_path, serde_json::to_vec(&dcfg).map_err(setup)?).map_err(setup)?;
        let labels = spec.work.join("labels.json");
        std::fs::write(&labels, r#"{"ovn.kubernetes.io/ovs_dp_type":"userspace"}"#)
            .map_err(setup)?;
        let name = format!("{p}-{}", spec.tag);
        let mut node = start_ovs_dpdk(&name, &name, &dcfg)?;
        before_agent(&node)?;
        if let Some(u) = underlay {
            let ip = u.cidr.split('/').next().unwrap_or(u.cidr);
            node.netns().ip(["link", "set", u.iface, "up"])?;
            node.adopt_underlay(u.iface, ip);
        }
        let allocs_dir = spec.work.join("allocs");
        let allocs = FileAllocations::new(&allocs_dir);
        let mut args = vec![
            format!("--node-labels-file={}", labels.display()),
            format!("--dpdk-config={}", cfg_path.display()),
            format!("--vhost-dir={}", vhost_dir.path().display()),
            format!("--kubelet-root={}", kubelet.path().display()),
            format!("--host-mount-ns=/proc/{}/ns/mnt", std::process::id()),
        ];
        args.extend(spec.extra_agent_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.start_agent(spec.agent, &sb, &allocs_dir, &args)?;
        node.start_ovn_controller()?;
        wait_chassis_count(&central, 1, Duration::from_secs(30))?;
        Ok(DpdkNode {
            central,
            node,
            allocs,
            kubelet,
            _vhost_dir: vhost_dir,
            _ovs_run: ovs_run,
            plugin: spec.plugin.to_path_buf(),
            tag: spec.tag.to_string(),
            prefix: p.to_string(),
        })
    }

    /// The node's name, which is also its OVN chassis name.
    pub fn name(&self) -> &str {
        self.node.name()
    }

    fn cni_add(
        &self,
        pod: &str,
        netns: &Netns,
        ifname: &str,
        uid: &str,
        extra: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let stdin = cni_netconf("1.1.0", "net", &self.node.agent_socket(), &extra);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID={uid}"
        );
        let cid = format!("c{}{pod}", self.tag.replace('x', ""));
        let out = run_cni(
            &self.plugin,
            &CniCall {
                command: "ADD",
                container_id: &cid,
                netns: &netns.path().display().to_string(),
                ifname,
                args: &args,
                stdin: &stdin,
            },
        )?;
        if out.exit_code != 0 {
            return Err(setup(format!(
                "ADD {pod}: {} {}; agent: {}",
                out.stdout,
                out.stderr,
                self.node.agent_log()
            )));
        }
        Ok(out.json())
    }

    /// A kernel (veth) pod on `subnet` (its switch must exist), MTU 1400.
    pub fn add_kernel_pod(
        &self,
        subnet: &Subnet<'_>,
        pod: &str,
        ip: &str,
        mac: &str,
    ) -> Result<Netns> {
        allocate_pod(&self.central, &self.allocs, subnet, "ovn", pod, ip, mac)?;
        let ns = Netns::create(&format!("{}-{}-{pod}", self.prefix, self.tag))?;
        self.cni_add(pod, &ns, "eth0", "u", serde_json::json!({"mtu": 1400}))?;
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A DPDK pod on `subnet`: a vhost-user attachment (`net1`) whose socket a testpmd in
    /// the returned namespace serves. `n` numbers the pod (its kubelet pod UID).
    pub fn add_dpdk_pod(
        &self,
        subnet: &Subnet<'_>,
        pod: &str,
        ip: &str,
        mac: &str,
        n: u32,
    ) -> Result<DpdkPod> {
        allocate_pod(
            &self.central,
            &self.allocs,
            subnet,
            DPDK_PROVIDER,
            pod,
            ip,
            mac,
        )?;
        let uid = format!("{n:08x}-0000-4000-8000-000000000000");
        let vol = self
            .kubelet
            .path()
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~empty-dir/vhu");
        std::fs::create_dir_all(&vol).map_err(setup)?;
        let ns = Netns::create(&format!("{}-{}-{pod}", self.prefix, self.tag))?;
        self.cni_add(
            pod,
            &ns,
            "net1",
            &uid,
            serde_json::json!({"provider": DPDK_PROVIDER, "vhost_user_socket_volume_name": "vhu", "vhost_user_socket_name": "sock"}),
        )?;
        let info: VhostUserInfo = serde_json::from_slice(
            &std::fs::read(vol.join(info_file_name("net1"))).map_err(setup)?,
        )
        .map_err(setup)?;
        Ok(DpdkPod {
            info,
            volume: vol,
            netns: ns,
            ip: ip.to_string(),
        })
    }

    /// Waits until OVS sees every pod's vhost-user port up (its testpmd connected).
    pub fn wait_vhost_up(&self, pods: &[&DpdkPod], timeout: Duration) -> bool {
        wait_until(timeout, || {
            pods.iter().all(|p| {
                self.node
                    .vsctl(["get", "Interface", &p.info.ovs_port, "link_state"])
                    .map(|s| s.trim() == "up")
                    .unwrap_or(false)
            })
        })
    }
}
