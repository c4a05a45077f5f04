//! `sriov-vf`: an SR-IOV VF ([`crate::sriov`]). A kernel pod gets the VF netdev moved into its
//! netns; a DPDK pod gets the VF's PCI address (annotation + CNI result). Either way the VF's
//! representor goes onto br-int. The VF's host name is recorded, so DEL and GC give it back
//! under that name.

use std::path::{Path, PathBuf};

use ferrovn_cni::spec::{CniError, CniResult};
use ferrovn_hwoffload::{PodVf, VfAttachment, representor_bridge_port};

use super::seam::{AddRequest, Attachment, Env, Kind, base_port, cni_result};
use crate::alloc::PodRef;
use crate::annotate::PodAnnotator;
use crate::cni_error::{agent_code, err, from_ovs, plumbing};
use crate::ovs::{PodPort, PortRecord, ext};
use crate::sriov::{
    VfMoveSpec, is_vf_record, link_up, move_vf_into_pod, move_vf_to_host, pci_annotation,
    plan_for_device, reclaim_vf, vf_ext,
};
use crate::types::owner_tag;

pub struct SriovVf;

fn device_of(add: &AddRequest<'_>) -> String {
    add.req.device_id.clone().unwrap_or_default()
}

impl SriovVf {
    /// A retried ADD starts from a clean slate: gives back what an earlier attempt took.
    async fn remove_earlier(env: &Env<'_>, add: &AddRequest<'_>) -> Result<(), CniError> {
        let recs = env
            .ovs
            .find_interfaces(&[
                (ext::CONTAINER_ID, add.req.container_id.as_str()),
                (ext::IFNAME, add.req.ifname.as_str()),
            ])
            .await
            .map_err(from_ovs)?;
        for rec in recs.iter().filter(|r| is_vf_record(r)) {
            self::SriovVf.remove(env, rec).await?;
        }
        Ok(())
    }

    async fn give_back(env: &Env<'_>, add: &AddRequest<'_>, plan: &VfAttachment) {
        if let PodVf::Netdev { netdev } = &plan.pod_side {
            let _ = move_vf_to_host(
                env.cfg.host_netns.clone(),
                PathBuf::from(add.netns),
                add.req.ifname.clone(),
                netdev.clone(),
                owner_tag(&add.req.container_id, &add.req.ifname),
            )
            .await;
        }
    }
}

impl Attachment for SriovVf {
    const KIND: Kind = Kind::SriovVf;
    type Made = VfAttachment;

    async fn plumb(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
    ) -> Result<(PodPort, VfAttachment), CniError> {
        Self::remove_earlier(env, add).await?;
        let device = device_of(add);
        let plan = plan_for_device(&env.cfg.sriov, &device, &add.req.netconf)?;
        let tag = owner_tag(&add.req.container_id, &add.req.ifname);
        let mut port = base_port(env, add, Self::KIND, &plan.representor, &tag);
        let bp = representor_bridge_port(&plan, &env.cfg.node.bridge, &add.lsp);
        port.external_ids.extend(bp.external_ids);
        port.external_ids
            .insert(vf_ext::VF_PCI.into(), plan.vf_pci.to_string());
        port.external_ids
            .insert(vf_ext::VF_PF.into(), plan.pf.clone());
        let mode = match &plan.pod_side {
            PodVf::Netdev { netdev } => {
                port.external_ids
                    .insert(vf_ext::VF_NETDEV.into(), netdev.clone());
                "kernel"
            }
            PodVf::Pci { .. } => "dpdk",
        };
        port.external_ids
            .insert(vf_ext::VF_MODE.into(), mode.into());
        let host_netns = env.cfg.host_netns.clone();
        let made = async {
            if let PodVf::Netdev { netdev } = &plan.pod_side {
                move_vf_into_pod(VfMoveSpec {
                    host_netns: host_netns.clone(),
                    pod_netns: PathBuf::from(add.netns),
                    vf_netdev: netdev.clone(),
                    pod_ifname: add.req.ifname.clone(),
                    mac: add.alloc.mac,
                    mtu: add.mtu,
                    addresses: add.alloc.addresses.clone(),
                    gateways: add.alloc.gateways.clone(),
                    routes: add.alloc.routes.clone(),
                    owner_tag: tag.clone(),
                })
                .await
                .map_err(|e| plumbing(&format!("SR-IOV device {device}"), e))?;
            }
            link_up(host_netns.clone(), plan.representor.clone())
                .await
                .map_err(|e| plumbing(&format!("SR-IOV device {device}"), e))?;
            if let (PodVf::Pci { pci_address, .. }, Some(sink)) =
                (&plan.pod_side, &env.cfg.vhost.annotations)
            {
                let ann = [(pci_annotation(&add.req.ifname), pci_address.to_string())]
                    .into_iter()
                    .collect();
                sink.annotate(add.pod, &ann, &[]).await.map_err(|e| {
                    err(
                        agent_code::PLUMBING_FAILED,
                        "writing the pod's PCI address annotation failed",
                        e,
                    )
                })?;
            }
            Ok::<(), CniError>(())
        }
        .await;
        if let Err(e) = made {
            Self::give_back(env, add, &plan).await;
            return Err(e);
        }
        Ok((port, plan))
    }

    async fn undo(&self, env: &Env<'_>, add: &AddRequest<'_>, plan: &VfAttachment) {
        Self::give_back(env, add, plan).await;
    }

    fn result(&self, add: &AddRequest<'_>, port: &PodPort, plan: &VfAttachment) -> CniResult {
        let mut res = cni_result(&port.name, &add.req.ifname, add.netns, add.mtu, add.alloc);
        if let Some(i) = res.interfaces.get_mut(1) {
            i.pci_id = Some(plan.vf_pci.to_string());
        }
        res
    }

    /// Gives the VF back under its host name: out of a live pod, or, when the pod's netns is
    /// gone, from where the kernel left it (under the pod's name). Then the PCI annotation.
    async fn release(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        let device = rec.get(vf_ext::VF_PCI).unwrap_or_default().to_string();
        let fail = |e: &dyn std::fmt::Display| plumbing(&format!("SR-IOV device {device}"), e);
        if let (Some(netdev), Some(netns), Some(ifname), Some(tag)) = (
            rec.get(vf_ext::VF_NETDEV),
            rec.get(ext::POD_NETNS),
            rec.get(ext::IFNAME),
            rec.get(ext::OWNER_TAG),
        ) {
            if Path::new(netns).exists() {
                move_vf_to_host(
                    env.cfg.host_netns.clone(),
                    PathBuf::from(netns),
                    ifname.to_string(),
                    netdev.to_string(),
                    tag.to_string(),
                )
                .await
                .map_err(|e| fail(&e))?;
            } else {
                reclaim_vf(
                    env.cfg.host_netns.clone(),
                    netdev.to_string(),
                    tag.to_string(),
                )
                .await
                .map_err(|e| fail(&e))?;
            }
        }
        if rec.get(vf_ext::VF_MODE) == Some("dpdk")
            && let (Some(sink), Some(ns), Some(name), Some(ifname)) = (
                &env.cfg.vhost.annotations,
                rec.get(ext::POD_NAMESPACE),
                rec.get(ext::POD_NAME),
                rec.get(ext::IFNAME),
            )
        {
            let pod = PodRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            };
            let _ = sink
                .annotate(&pod, &Default::default(), &[pci_annotation(ifname)])
                .await;
        }
        Ok(())
    }
}
