//! The node agent's request handling: CNI ADD/DEL/CHECK/GC/STATUS (and IPAM-only) on top of
//! OVSDB and an [`AllocationSource`]. How a pod interface is made is the attachment kind's
//! business ([`crate::attach`]); this module resolves the request, picks the kind, serialises
//! requests per attachment, and dispatches. State lives in the kernel and OVSDB (Interface
//! external_ids, including the kind), never only in memory, so a restarted agent knows every pod.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrovn_cni::protocol::{AttachmentKey, AttachmentRequest, GcRequest, Request, Response};
use ferrovn_cni::spec::{CniError, CniResult, code};

use crate::alloc::{AllocationSource, PRIMARY_PROVIDER, PodAllocation, PodRef};
use crate::attach::{AddRequest, Attachment, Env, Kind, Liveness, with_kind};
use crate::cni_error::{err, from_ovs};
use crate::ovs::{OvsClient, OvsError, PortRecord, ext};

pub use crate::attach::{cni_result, lsp_name};
pub use crate::cni_error::agent_code;
pub use crate::settings::AgentConfig;
pub use crate::types::NodeProfile;

/// Outcome of one garbage-collection pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Ports removed (their pod was gone).
    pub removed: Vec<String>,
    pub kept: usize,
    /// Ports kept because the agent cannot see whether their pod lives (see
    /// [`crate::attach::Liveness::Unknown`]); also counted in `kept`.
    pub unknown: Vec<String>,
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

    /// Offload truth of the VF attachments now ([`crate::offload::offload_check`]).
    pub async fn offload_check(&self) -> Result<crate::offload::OffloadTruth, OvsError> {
        crate::offload::offload_check(
            &self.ovs,
            &self.cfg.node.bridge,
            &self.cfg.sriov,
            self.cfg.vhost.annotations.as_ref(),
        )
        .await
    }

    fn env(&self) -> Env<'_> {
        Env {
            cfg: &self.cfg,
            ovs: &self.ovs,
            tx_offload: self.tso.active,
        }
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
                self.remove_attachment(&r.key())
                    .await
                    .map(|()| Response::ok())
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
        match self.alloc.wait_for(pod, provider, deadline).await {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(err(
                agent_code::NOT_ALLOCATED,
                format!(
                    "pod {}/{} has no allocation for provider {provider}",
                    pod.namespace, pod.name
                ),
                format!(
                    "waited {:?} for the controller's annotations ({provider}.kubernetes.io/allocated=true)",
                    self.cfg.allocation_timeout
                ),
            )),
            Err(e) => Err(err(
                agent_code::BAD_ALLOCATION,
                format!("allocation of pod {}/{} unusable", pod.namespace, pod.name),
                e,
            )),
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
        let add = AddRequest {
            req: r,
            netns: &netns,
            pod: &pod,
            provider: &provider,
            alloc: &a,
            mtu: r.mtu.unwrap_or(self.cfg.default_mtu),
            lsp: lsp_name(&pod, &provider),
        };
        let kind = Kind::for_request(
            r.device_id.as_deref().is_some_and(|d| !d.is_empty()),
            crate::attach::vhost_user::requested(&add).is_some(),
            self.cfg.profile,
        );
        let env = self.env();
        with_kind!(kind, |k| k.add(&env, &add).await)
    }

    async fn records_for(&self, key: &AttachmentKey) -> Result<Vec<PortRecord>, CniError> {
        self.ovs
            .find_interfaces(&[
                (ext::CONTAINER_ID, key.container_id.as_str()),
                (ext::IFNAME, key.ifname.as_str()),
            ])
            .await
            .map_err(from_ovs)
    }

    /// Removes one attachment: each recorded port by its kind. Unknown attachments succeed.
    /// Without any record the kind is unknown, so the leftovers an ADD may have made before
    /// its port (a veth, a bind mount; both found by name) are swept.
    async fn remove_attachment(&self, key: &AttachmentKey) -> Result<(), CniError> {
        let env = self.env();
        let recs = self.records_for(key).await?;
        for rec in &recs {
            with_kind!(Kind::of_record(rec), |k| k.remove(&env, rec).await)?;
        }
        if recs.is_empty() {
            crate::attach::veth::release_leftover(&env, &key.container_id, &key.ifname).await?;
            crate::attach::vhost_user::unbind(&env, &key.container_id, &key.ifname).await?;
        }
        Ok(())
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
        let env = self.env();
        with_kind!(Kind::of_record(rec), |k| k.check(&env, rec).await)?;
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

    async fn our_records(&self) -> Result<Vec<PortRecord>, CniError> {
        self.ovs
            .find_interfaces(&[(ext::VENDOR, ext::VENDOR_VALUE)])
            .await
            .map_err(from_ovs)
    }

    /// CNI GC: removes every FerrOVN attachment not in `valid_attachments`.
    async fn gc_request(&self, g: &GcRequest) -> Result<GcReport, CniError> {
        let valid: BTreeSet<&AttachmentKey> = g.valid_attachments.iter().collect();
        let mut report = GcReport::default();
        for rec in self.our_records().await? {
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

    async fn liveness(&self, rec: &PortRecord) -> Result<Liveness, CniError> {
        let env = self.env();
        with_kind!(Kind::of_record(rec), |k| k.liveness(&env, rec).await)
    }

    /// Periodic GC: removes the attachments whose pod is gone, each by its kind (a veth pod:
    /// its veth died with the netns; the others: their netns path is gone). What the agent
    /// cannot see ([`Liveness::Unknown`]) is kept; ports of running pods are never touched.
    pub async fn gc_once(&self) -> Result<GcReport, CniError> {
        let mut report = GcReport::default();
        for rec in self.our_records().await? {
            match self.liveness(&rec).await? {
                Liveness::Alive => {
                    report.kept += 1;
                    continue;
                }
                Liveness::Unknown => {
                    tracing::debug!(port = %rec.name, netns = rec.get(ext::POD_NETNS).unwrap_or_default(),
                        "GC: keeping a port whose pod the agent cannot see");
                    report.kept += 1;
                    report.unknown.push(rec.name.clone());
                    continue;
                }
                Liveness::Dead => {}
            }
            let key = AttachmentKey {
                container_id: rec.get(ext::CONTAINER_ID).unwrap_or_default().to_string(),
                ifname: rec.get(ext::IFNAME).unwrap_or_default().to_string(),
            };
            let _g = self.lock_for(&key).lock_owned().await;
            // re-check under the lock: an ADD may have just re-plumbed it
            if self.liveness(&rec).await? != Liveness::Dead {
                report.kept += 1;
                continue;
            }
            let env = self.env();
            with_kind!(Kind::of_record(&rec), |k| k.remove(&env, &rec).await)?;
            tracing::info!(port = %rec.name, kind = %Kind::of_record(&rec), "GC: removed the port of a vanished pod");
            report.removed.push(rec.name.clone());
        }
        if !report.unknown.is_empty() {
            tracing::warn!(ports = ?report.unknown,
                "GC: kept ports whose pod netns root is not visible to the agent (mount the host's /var/run/netns)");
        }
        Ok(report)
    }
}

/// Runs the offload check every `every` and on SIGUSR1, for as long as the agent lives.
pub fn spawn_offload_checks<A: AllocationSource + Send + Sync + 'static>(
    agent: std::sync::Arc<Agent<A>>,
    every: std::time::Duration,
) {
    tokio::spawn(async move {
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGUSR1 handler: offload checks periodic only");
                    None
                }
            };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
            }
            match agent.offload_check().await {
                Ok(t) => {
                    for p in &t.pods {
                        tracing::info!(status = %p.status_line(), "offload truth");
                    }
                    for e in &t.dump_errors {
                        tracing::warn!(error = %e, "offload check: flow dump failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "offload check failed"),
            }
        }
    });
}

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
