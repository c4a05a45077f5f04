//! The node agent's request handling: CNI ADD/DEL/CHECK/GC/STATUS (and IPAM-only) on top of
//! plumbing, OVSDB and an [`AllocationSource`]. State lives in the kernel (veths) and OVSDB
//! (Interface external_ids), never only in memory, so a restarted agent knows every pod.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrovn_cni::protocol::{AttachmentKey, AttachmentRequest, GcRequest, Request, Response};
use ferrovn_cni::spec::{Cidr, CniError, CniResult, Interface, IpConfig, Route, code};
use ipnet::IpNet;

use crate::alloc::{AllocationSource, Annotations, PRIMARY_PROVIDER, PodAllocation, PodRef};
use crate::ovs::{EgressQos, NodeOvsConfig, OvsClient, OvsError, PodPort, PortRecord, ext};
use crate::plumbing::{self, PlumbError, VethSpec};
use crate::types::owner_tag;
use ferrovn_api::names::host_ifname;

/// The agent's own CNI error codes (the spec leaves 100+ to plugins; the plugin uses 100..=109).
pub mod agent_code {
    /// The controller has not allocated the pod within the wait.
    pub const NOT_ALLOCATED: u32 = 110;
    /// The allocation exists but cannot be used (bad annotation).
    pub const BAD_ALLOCATION: u32 = 111;
    /// Creating or configuring the pod interface failed.
    pub const PLUMBING_FAILED: u32 = 112;
    /// The node's OVSDB refused or could not be reached.
    pub const OVS_FAILED: u32 = 113;
    /// ovn-controller did not mark the port installed in time.
    pub const NOT_INSTALLED: u32 = 114;
}

/// What kind of node this is: decides the datapath and how pods are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeProfile {
    /// veth pods; OVS datapath `system` normally, `netdev` where there is no OVS kernel module.
    Kernel,
    /// OVS-DPDK (`netdev` datapath).
    Dpdk,
}

impl NodeProfile {
    pub fn default_datapath_type(self) -> &'static str {
        match self {
            NodeProfile::Kernel => "system",
            NodeProfile::Dpdk => "netdev",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: NodeOvsConfig,
    /// The node's Open_vSwitch database, e.g. `unix:/var/run/openvswitch/db.sock`.
    pub ovs_remote: String,
    pub profile: NodeProfile,
    /// Namespace of the host veth ends; `None` = the agent's own.
    pub host_netns: Option<PathBuf>,
    /// Pod MTU when neither the netconf nor the allocation says (1400 under Geneve on 1500).
    pub default_mtu: u32,
    /// How long ADD waits for the controller's allocation.
    pub allocation_timeout: Duration,
    /// How long ADD waits for `ovn-installed`.
    pub install_timeout: Duration,
    /// vhost-user attachments (DPDK profile): see [`crate::dpdk::vhost`].
    pub vhost: crate::dpdk::vhost::VhostConfig,
    /// SR-IOV VF attachments and the `offload` profile: see [`crate::sriov`].
    pub sriov: crate::sriov::SriovConfig,
    /// The vhost helper serving vhost-user attachments on kernel-profile nodes: see
    /// [`crate::dpdk::helper_attach`].
    pub vhost_helper: crate::dpdk::helper_attach::HelperConfig,
}

/// Kube-OVN's logical switch port name of a pod interface ([`ferrovn_api::names::lsp_name`]).
pub fn lsp_name(pod: &PodRef, provider: &str) -> String {
    ferrovn_api::names::lsp_name(&pod.name, &pod.namespace, provider)
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

fn err(code: u32, msg: impl Into<String>, details: impl ToString) -> CniError {
    CniError::new(code, msg, details.to_string())
}

fn ovs_err(e: OvsError) -> CniError {
    match e {
        OvsError::NotInstalled { .. } => err(
            agent_code::NOT_INSTALLED,
            "OVN did not install the pod's port in time",
            e,
        ),
        other => err(agent_code::OVS_FAILED, "node OVS database failed", other),
    }
}

fn plumb_like(e: crate::dpdk::vhost::VhostError) -> CniError {
    err(
        agent_code::PLUMBING_FAILED,
        "plumbing the vhost-user attachment failed",
        e,
    )
}

fn plumb_err(e: PlumbError) -> CniError {
    err(
        agent_code::PLUMBING_FAILED,
        "plumbing the pod interface failed",
        e,
    )
}

/// Outcome of one garbage-collection pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Ports removed (their pod namespace and veth were gone).
    pub removed: Vec<String>,
    pub kept: usize,
}

pub struct Agent<A> {
    cfg: AgentConfig,
    ovs: OvsClient,
    alloc: A,
    locks: Mutex<HashMap<AttachmentKey, Arc<tokio::sync::Mutex<()>>>>,
    offload_start: crate::offload::OffloadStart,
    tso: crate::userspace_tso::TsoStart,
}

impl<A: AllocationSource> Agent<A> {
    /// Connects to the node's OVSDB and writes the node configuration (idempotent).
    pub async fn start(cfg: AgentConfig, alloc: A) -> Result<Arc<Self>, OvsError> {
        let ovs = OvsClient::connect(&cfg.ovs_remote).await?;
        ovs.ensure_node_config(&cfg.node).await?;
        let offload_start =
            crate::offload::apply_offload_profile(&ovs, &cfg.node.bridge, &cfg.sriov).await?;
        // veth pods on a userspace-datapath bridge (kernel and DPDK profile alike)
        let tso = if cfg.node.datapath_type == "netdev" {
            crate::userspace_tso::ensure(&ovs).await?
        } else {
            crate::userspace_tso::TsoStart::default()
        };
        Ok(Arc::new(Agent {
            cfg,
            ovs,
            alloc,
            locks: Mutex::new(HashMap::new()),
            offload_start,
            tso,
        }))
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    pub fn ovs(&self) -> &OvsClient {
        &self.ovs
    }

    /// What the `offload` profile did at start (whether ovs-vswitchd must restart).
    pub fn offload_start(&self) -> &crate::offload::OffloadStart {
        &self.offload_start
    }

    /// Whether veth pods keep tx offloads (userspace TSO) and whether ovs-vswitchd must restart.
    pub fn userspace_tso(&self) -> crate::userspace_tso::TsoStart {
        self.tso
    }

    fn lock_for(&self, key: &AttachmentKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // forget locks nobody holds any more
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Answers one plugin request.
    pub async fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Add(r) => {
                let _g = self.lock_for(&r.key()).lock_owned().await;
                self.add(&r).await.map(Response::with_result)
            }
            Request::Del(r) => {
                let _g = self.lock_for(&r.key()).lock_owned().await;
                self.del(&r).await.map(|()| Response::ok())
            }
            Request::Check(r) => self.check(&r).await.map(|()| Response::ok()),
            Request::IpamAdd(r) => self.ipam_add(&r).await.map(Response::with_result),
            // the allocation belongs to the controller; nothing to release on the node
            Request::IpamDel(_) => Ok(Response::ok()),
            Request::IpamCheck(r) => self.ipam_add(&r).await.map(|_| Response::ok()),
            Request::Gc(g) => self.gc_request(&g).await.map(|_| Response::ok()),
            Request::Status(_) => self.status().await.map(|()| Response::ok()),
        };
        result.unwrap_or_else(Response::Error)
    }

    fn pod_of(r: &AttachmentRequest) -> Result<PodRef, CniError> {
        let pod = r.pod.as_ref().ok_or_else(|| {
            err(
                code::INVALID_ENV,
                "pod identity missing",
                "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME",
            )
        })?;
        Ok(PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        })
    }

    fn provider_of(r: &AttachmentRequest) -> String {
        r.provider
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| PRIMARY_PROVIDER.to_string())
    }

    async fn wait_allocation(
        &self,
        pod: &PodRef,
        provider: &str,
    ) -> Result<PodAllocation, CniError> {
        let deadline = Instant::now() + self.cfg.allocation_timeout;
        loop {
            match self.alloc.lookup(pod, provider).await {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => {}
                Err(e) => {
                    return Err(err(
                        agent_code::BAD_ALLOCATION,
                        format!("allocation of pod {}/{} unusable", pod.namespace, pod.name),
                        e,
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(err(
                    agent_code::NOT_ALLOCATED,
                    format!(
                        "pod {}/{} has no allocation for provider {provider}",
                        pod.namespace, pod.name
                    ),
                    format!(
                        "waited {:?} for the controller's annotations ({provider}.kubernetes.io/allocated=true)",
                        self.cfg.allocation_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn add(&self, r: &AttachmentRequest) -> Result<CniResult, CniError> {
        let netns = r
            .netns
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(code::INVALID_ENV, "CNI_NETNS is required for ADD", ""))?;
        let pod = Self::pod_of(r)?;
        let provider = Self::provider_of(r);
        let a = self.wait_allocation(&pod, &provider).await?;
        let mtu = r.mtu.unwrap_or(self.cfg.default_mtu);
        if let Some(dev) = r.device_id.as_deref().filter(|d| !d.is_empty()) {
            return self.add_vf(r, dev, &netns, &pod, &provider, &a, mtu).await;
        }
        // the NAD config's keys, else the pod annotation's
        if let Some(vu) = r.vhost_user.as_ref().or(a.vhost_user.as_ref()) {
            return self
                .add_vhost_user(r, vu, &netns, &pod, &provider, &a, mtu)
                .await;
        }
        let spec = VethSpec {
            container_id: r.container_id.clone(),
            pod_netns: PathBuf::from(&netns),
            pod_ifname: r.ifname.clone(),
            host_netns: self.cfg.host_netns.clone(),
            mac: a.mac,
            mtu,
            addresses: a.addresses.clone(),
            gateways: a.gateways.clone(),
            routes: a.routes.clone(),
            ipv6_link_local: a.ipv6_link_local,
            tx_offload: self.tso.active,
        };
        spec.validate()
            .map_err(|e| err(code::INVALID_NETCONF, "invalid pod interface request", e))?;
        let t_plumb = Instant::now();
        let made = plumbing::plumb_veth(spec).await.map_err(plumb_err)?;
        let plumb_ms = t_plumb.elapsed().as_millis() as u64;
        let t_port = Instant::now();
        let mut port_ms = 0;
        let lsp = lsp_name(&pod, &provider);
        let port = self.pod_port(
            r,
            &pod,
            &netns,
            &lsp,
            &a,
            &made.host_ifname,
            &made.owner_tag,
        );
        let attached = async {
            if let Some(mbps) = a.egress_rate_mbps
                && self.cfg.node.datapath_type == "netdev"
                && self.cfg.profile == NodeProfile::Kernel
            {
                plumbing::limit_pod_egress(PathBuf::from(&netns), r.ifname.clone(), mbps)
                    .await
                    .map_err(plumb_err)?;
            }
            self.ovs
                .add_port(&self.cfg.node.bridge, &port)
                .await
                .map_err(ovs_err)?;
            port_ms = t_port.elapsed().as_millis() as u64;
            self.ovs
                .wait_ovn_installed(&made.host_ifname, &lsp, self.cfg.install_timeout)
                .await
                .map_err(ovs_err)
        }
        .await;
        if let Err(e) = attached {
            // never leave a half-plumbed pod
            let _ = self.ovs.remove_port(&made.host_ifname).await;
            let _ = plumbing::unplumb_veth(
                self.cfg.host_netns.clone(),
                made.host_ifname.clone(),
                made.owner_tag.clone(),
            )
            .await;
            return Err(e);
        }
        tracing::info!(
            pod = %format!("{}/{}", pod.namespace, pod.name),
            lsp,
            port = %made.host_ifname,
            plumb_ms,
            port_ms,
            installed_ms = (t_port.elapsed().as_millis() as u64).saturating_sub(port_ms),
            "pod attached"
        );
        Ok(cni_result(&made.host_ifname, &r.ifname, &netns, mtu, &a))
    }

    /// vhost-user ADD (see [`crate::dpdk::vhost`]): a `dpdkvhostuserclient` port on OVS-DPDK,
    /// ready when OVN installed it (not when the pod's app connects: it starts after ADD).
    #[allow(clippy::too_many_arguments)]
    async fn add_vhost_user(
        &self,
        r: &AttachmentRequest,
        vu: &ferrovn_cni::protocol::VhostUser,
        netns: &str,
        pod: &PodRef,
        provider: &str,
        a: &PodAllocation,
        mtu: u32,
    ) -> Result<CniResult, CniError> {
        use crate::dpdk::helper_attach;
        use crate::dpdk::vhost;
        // kernel node: the same plan, served by the vhost helper through a veth on br-int
        let via_helper = vhost::route(self.cfg.profile) == vhost::VhostRoute::Helper;
        let req = vhost::VhostRequest {
            container_id: &r.container_id,
            ifname: &r.ifname,
            netns,
            pod: vhost::PodVolumeRef {
                namespace: &pod.namespace,
                name: &pod.name,
                uid: r.pod.as_ref().and_then(|p| p.uid.as_deref()),
            },
            provider,
            volume: vhost::effective_volume(vu),
            socket: vu.socket_name.as_deref(),
            mtu,
        };
        let vcfg = &self.cfg.vhost;
        let plan = vhost::plan(vcfg, &req, a)
            .map_err(|e| err(code::INVALID_NETCONF, "invalid vhost-user attachment", e))?;
        let lsp = lsp_name(pod, provider);
        let port = vhost::vhost_port(
            self.pod_port(r, pod, netns, &lsp, a, &plan.port_name, ""),
            &plan,
        );
        let port = if via_helper {
            helper_attach::kernel_port(port, &plan)
        } else {
            port
        };
        let attached = async {
            vhost::bind_mount_async(
                plan.volume_dir.clone(),
                plan.short_dir.clone(),
                vcfg.host_mount_ns.clone(),
            )
            .await
            .map_err(plumb_like)?;
            vhost::write_info_file(&plan.volume_dir, &plan.info).map_err(plumb_like)?;
            if let Some(sink) = &vcfg.annotations {
                use vhost::PodAnnotator;
                let ann = vhost::annotations_for(&plan.info).map_err(plumb_like)?;
                sink.annotate(pod, &ann, &[]).await.map_err(plumb_like)?;
            }
            if via_helper {
                helper_attach::plumb(
                    self.cfg.host_netns.clone(),
                    &plan,
                    &r.container_id,
                    &r.ifname,
                )
                .await
                .map_err(|e| e.to_cni())?;
            }
            self.ovs
                .add_port(&self.cfg.node.bridge, &port)
                .await
                .map_err(ovs_err)?;
            if via_helper {
                helper_attach::attach(&self.cfg.vhost_helper, &plan)
                    .await
                    .map_err(|e| e.to_cni())?;
            }
            self.ovs
                .wait_ovn_installed(&plan.port_name, &lsp, self.cfg.install_timeout)
                .await
                .map_err(ovs_err)
        }
        .await;
        if let Err(e) = attached {
            let _ = self.ovs.remove_port(&plan.port_name).await;
            if via_helper {
                let end_a = helper_attach::kernel_iface_name(&plan);
                let _ = helper_attach::detach(
                    &self.cfg.vhost_helper,
                    self.cfg.host_netns.clone(),
                    &plan.port_name,
                    &end_a,
                )
                .await;
            }
            let _ = vhost::unbind_async(plan.short_dir.clone(), vcfg.host_mount_ns.clone()).await;
            return Err(e);
        }
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), lsp, port = %plan.port_name,
            socket = %plan.host_socket.display(), "vhost-user pod attached");
        let mut res = cni_result(&plan.port_name, &r.ifname, netns, mtu, a);
        if let Some(i) = res.interfaces.get_mut(1) {
            i.socket_path = Some(plan.host_socket.display().to_string());
        }
        Ok(res)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pod_port(
        &self,
        r: &AttachmentRequest,
        pod: &PodRef,
        netns: &str,
        lsp: &str,
        a: &PodAllocation,
        host_if: &str,
        tag: &str,
    ) -> PodPort {
        let ips: Vec<String> = a.addresses.iter().map(|n| n.addr().to_string()).collect();
        let external_ids = [
            (ext::IFACE_ID, lsp.to_string()),
            (ext::POD_NAME, pod.name.clone()),
            (ext::POD_NAMESPACE, pod.namespace.clone()),
            (ext::POD_NETNS, netns.to_string()),
            (ext::IP, ips.join(",")),
            (ext::ATTACHED_MAC, a.mac.to_string()),
            (ext::CONTAINER_ID, r.container_id.clone()),
            (ext::IFNAME, r.ifname.clone()),
            (ext::OWNER_TAG, tag.to_string()),
            (ext::VENDOR, ext::VENDOR_VALUE.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let egress_qos = a.ingress_rate_mbps.map(|mbps| match self.cfg.profile {
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

    async fn records_for(&self, key: &AttachmentKey) -> Result<Vec<PortRecord>, CniError> {
        self.ovs
            .find_interfaces(&[
                (ext::CONTAINER_ID, key.container_id.as_str()),
                (ext::IFNAME, key.ifname.as_str()),
            ])
            .await
            .map_err(ovs_err)
    }

    /// Removes one attachment: its OVS port(s) and its veth. Unknown attachments succeed.
    async fn remove_attachment(&self, key: &AttachmentKey) -> Result<(), CniError> {
        self.remove_vf_attachment(&key.container_id, &key.ifname)
            .await?;
        for rec in self.records_for(key).await? {
            self.ovs.remove_port(&rec.name).await.map_err(ovs_err)?;
            self.forget_vhost_annotation(&rec, &key.ifname).await;
            // kernel-node vhost-user: the helper's port and the veth pair
            crate::dpdk::helper_attach::release_record(
                &self.cfg.vhost_helper,
                self.cfg.host_netns.clone(),
                &rec,
            )
            .await?;
        }
        // vhost-user: the bind mount (idempotent; nothing there for veth attachments)
        crate::dpdk::vhost::unbind_async(
            crate::dpdk::vhost::short_dir(&self.cfg.vhost.dir, &key.container_id, &key.ifname),
            self.cfg.vhost.host_mount_ns.clone(),
        )
        .await
        .map_err(plumb_like)?;
        plumbing::unplumb_veth(
            self.cfg.host_netns.clone(),
            host_ifname(&key.container_id, &key.ifname),
            owner_tag(&key.container_id, &key.ifname),
        )
        .await
        .map_err(plumb_err)?;
        Ok(())
    }

    /// Removes `vhost-user.ferrovn.io/<ifname>` from the pod, so a stale socket description
    /// never outlives its port. Best effort: the port is already gone, and a DEL that failed
    /// on an annotation would only make the runtime retry it (a deleted Pod counts as done).
    async fn forget_vhost_annotation(&self, rec: &PortRecord, ifname: &str) {
        use crate::dpdk::vhost::{self, PodAnnotator};
        let Some(sink) = &self.cfg.vhost.annotations else {
            return;
        };
        if !vhost::is_vhost_record(rec) {
            return;
        }
        let (Some(namespace), Some(name)) = (rec.get(ext::POD_NAMESPACE), rec.get(ext::POD_NAME))
        else {
            return;
        };
        let pod = PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let remove = [vhost::annotation_key(ifname)];
        if let Err(e) = sink.annotate(&pod, &Annotations::new(), &remove).await {
            tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), error = %e,
                "could not remove the vhost-user annotation");
        }
    }

    async fn del(&self, r: &AttachmentRequest) -> Result<(), CniError> {
        self.remove_attachment(&r.key()).await
    }

    async fn check(&self, r: &AttachmentRequest) -> Result<(), CniError> {
        let key = r.key();
        let recs = self.records_for(&key).await?;
        let Some(rec) = recs.first() else {
            return Err(err(
                code::UNKNOWN_CONTAINER,
                "no such attachment on this node",
                format!("container {} interface {}", key.container_id, key.ifname),
            ));
        };
        let present = plumbing::list_host_veths_async(self.cfg.host_netns.clone())
            .await
            .map_err(plumb_err)?;
        if !crate::dpdk::vhost::is_vhost_record(rec)
            && !crate::sriov::is_vf_record(rec)
            && !present.iter().any(|(n, _)| n == &rec.name)
        {
            return Err(err(
                agent_code::PLUMBING_FAILED,
                "the pod's veth is gone",
                &rec.name,
            ));
        }
        if rec.get(ext::OVN_INSTALLED) != Some("true") {
            return Err(err(
                agent_code::NOT_INSTALLED,
                "the pod's port is not installed by OVN",
                &rec.name,
            ));
        }
        Ok(())
    }

    async fn ipam_add(&self, r: &AttachmentRequest) -> Result<CniResult, CniError> {
        let pod = Self::pod_of(r)?;
        let provider = Self::provider_of(r);
        let a = self.wait_allocation(&pod, &provider).await?;
        let mut res = cni_result("", &r.ifname, "", 0, &a);
        res.interfaces.clear();
        for ip in &mut res.ips {
            ip.interface = None;
        }
        Ok(res)
    }

    async fn status(&self) -> Result<(), CniError> {
        match self.ovs.bridge_exists(&self.cfg.node.bridge).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(err(
                code::NOT_AVAILABLE,
                format!("integration bridge {} missing", self.cfg.node.bridge),
                "",
            )),
            Err(e) => Err(err(code::NOT_AVAILABLE, "node OVS database unreachable", e)),
        }
    }

    /// CNI GC: removes every FerrOVN attachment not in `valid_attachments`.
    async fn gc_request(&self, g: &GcRequest) -> Result<GcReport, CniError> {
        let valid: BTreeSet<&AttachmentKey> = g.valid_attachments.iter().collect();
        let recs = self
            .ovs
            .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
            .await
            .map_err(ovs_err)?;
        let mut report = GcReport::default();
        for rec in recs {
            let (Some(cid), Some(ifname)) = (rec.get(ext::CONTAINER_ID), rec.get(ext::IFNAME))
            else {
                continue;
            };
            let key = AttachmentKey {
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
            };
            if valid.contains(&key) {
                report.kept += 1;
                continue;
            }
            let _g = self.lock_for(&key).lock_owned().await;
            self.remove_attachment(&key).await?;
            report.removed.push(rec.name.clone());
        }
        Ok(report)
    }

    /// Periodic GC: removes ports whose veth is gone (the pod's netns was deleted, which takes
    /// the veth pair with it). Ports of running pods are never touched.
    pub async fn gc_once(&self) -> Result<GcReport, CniError> {
        let recs = self
            .ovs
            .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
            .await
            .map_err(ovs_err)?;
        let present: BTreeSet<String> =
            plumbing::list_host_veths_async(self.cfg.host_netns.clone())
                .await
                .map_err(plumb_err)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        let mut report = GcReport::default();
        for rec in recs {
            if present.contains(&rec.name)
                || crate::dpdk::vhost::is_live_vhost_record(&rec)
                || crate::sriov::is_live_vf_record(&rec)
            {
                report.kept += 1;
                continue;
            }
            let key = AttachmentKey {
                container_id: rec.get(ext::CONTAINER_ID).unwrap_or_default().to_string(),
                ifname: rec.get(ext::IFNAME).unwrap_or_default().to_string(),
            };
            let _g = self.lock_for(&key).lock_owned().await;
            // re-check under the lock: an ADD may have just re-plumbed it
            let still_gone = !plumbing::list_host_veths_async(self.cfg.host_netns.clone())
                .await
                .map_err(plumb_err)?
                .iter()
                .any(|(n, _)| n == &rec.name);
            if still_gone {
                self.ovs.remove_port(&rec.name).await.map_err(ovs_err)?;
                crate::dpdk::helper_attach::release_record(
                    &self.cfg.vhost_helper,
                    self.cfg.host_netns.clone(),
                    &rec,
                )
                .await?;
                if crate::dpdk::vhost::is_vhost_record(&rec) {
                    let dir = crate::dpdk::vhost::short_dir(
                        &self.cfg.vhost.dir,
                        &key.container_id,
                        &key.ifname,
                    );
                    crate::dpdk::vhost::unbind_async(dir, self.cfg.vhost.host_mount_ns.clone())
                        .await
                        .map_err(plumb_like)?;
                }
                tracing::info!(port = %rec.name, "GC: removed port of a vanished pod");
                report.removed.push(rec.name.clone());
            }
        }
        Ok(report)
    }
}

/// Unused-import guard for IpNet in docs of this module's public API.
#[doc(hidden)]
pub type AddressWithPrefix = IpNet;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::PodRoute;

    #[test]
    fn lsp_names_follow_kube_ovn() {
        let p = PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
        };
        assert_eq!(lsp_name(&p, "ovn"), "web-0.default");
        assert_eq!(lsp_name(&p, "net1.ns1.ovn"), "web-0.default.net1.ns1.ovn");
    }

    #[test]
    fn result_points_ips_at_the_pod_interface() {
        let a = PodAllocation {
            provider: "ovn".into(),
            logical_switch: "ls".into(),
            mac: "0a:58:0a:10:00:05".parse().expect("mac"),
            addresses: vec![
                "10.16.0.5/16".parse().expect("n"),
                "fd00::5/64".parse().expect("n"),
            ],
            gateways: vec!["10.16.0.1".parse().expect("gw")],
            routes: vec![PodRoute {
                dst: "10.96.0.0/12".parse().expect("dst"),
                via: Some("10.16.0.254".parse().expect("via")),
            }],
            ingress_rate_mbps: None,
            egress_rate_mbps: None,
            vhost_user: None,
            ipv6_link_local: false,
        };
        let r = cni_result("fvabc", "eth0", "/var/run/netns/p", 1400, &a);
        assert_eq!(r.interfaces.len(), 2);
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/var/run/netns/p"));
        assert_eq!(r.ips.len(), 2);
        assert!(r.ips.iter().all(|i| i.interface == Some(1)));
        assert_eq!(r.ips[0].gateway, Some("10.16.0.1".parse().expect("gw")));
        assert_eq!(r.ips[1].gateway, None);
        assert_eq!(r.routes.len(), 2);
    }
}
