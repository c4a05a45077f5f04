//! `veth`: a kernel pod on OVS. A veth pair ([`crate::plumbing`]); the pod end in the pod's
//! netns with its addresses and routes, the host end on br-int. The pair dies with the pod's
//! netns, so the host end's presence is the pod's liveness.

use std::path::PathBuf;

use ferrovn_cni::spec::{CniError, code};

use super::seam::{AddRequest, Attachment, Env, Kind, Liveness, base_port};
use crate::cni_error::{agent_code, err, from_plumb};
use crate::ovs::{PodPort, PortRecord, ext};
use crate::plumbing::{self, PlumbedVeth, VethSpec};
use crate::types::{NodeProfile, owner_tag};
use ferrovn_api::names::host_ifname;

pub struct Veth;

impl Veth {
    async fn host_end_present(env: &Env<'_>, name: &str) -> Result<bool, CniError> {
        Ok(plumbing::list_host_veths_async(env.cfg.host_netns.clone())
            .await
            .map_err(from_plumb)?
            .iter()
            .any(|(n, _)| n == name))
    }
}

impl Attachment for Veth {
    const KIND: Kind = Kind::Veth;
    type Made = PlumbedVeth;

    async fn plumb(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
    ) -> Result<(PodPort, PlumbedVeth), CniError> {
        let a = add.alloc;
        let spec = VethSpec {
            container_id: add.req.container_id.clone(),
            pod_netns: PathBuf::from(add.netns),
            pod_ifname: add.req.ifname.clone(),
            host_netns: env.cfg.host_netns.clone(),
            mac: a.mac,
            mtu: add.mtu,
            addresses: a.addresses.clone(),
            gateways: a.gateways.clone(),
            routes: a.routes.clone(),
            ipv6_link_local: a.ipv6_link_local,
            tx_offload: env.tx_offload,
        };
        spec.validate()
            .map_err(|e| err(code::INVALID_NETCONF, "invalid pod interface request", e))?;
        let made = plumbing::plumb_veth(spec).await.map_err(from_plumb)?;
        let port = base_port(env, add, Self::KIND, &made.host_ifname, &made.owner_tag);
        Ok((port, made))
    }

    async fn after_port(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
        _made: &PlumbedVeth,
    ) -> Result<(), CniError> {
        // OVS's userspace datapath reads veths through AF_PACKET and never sees the tc ingress
        // policer behind `ingress_policing_rate`: police inside the pod instead
        if let Some(mbps) = add.alloc.egress_rate_mbps
            && env.cfg.node.datapath_type == "netdev"
            && env.cfg.profile == NodeProfile::Kernel
        {
            plumbing::limit_pod_egress(PathBuf::from(add.netns), add.req.ifname.clone(), mbps)
                .await
                .map_err(from_plumb)?;
        }
        Ok(())
    }

    async fn undo(&self, env: &Env<'_>, _add: &AddRequest<'_>, made: &PlumbedVeth) {
        let _ = plumbing::unplumb_veth(
            env.cfg.host_netns.clone(),
            made.host_ifname.clone(),
            made.owner_tag.clone(),
        )
        .await;
    }

    async fn release(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        let (Some(cid), Some(ifname)) = (rec.get(ext::CONTAINER_ID), rec.get(ext::IFNAME)) else {
            return Ok(());
        };
        release_leftover(env, cid, ifname).await
    }

    async fn check(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        if Self::host_end_present(env, &rec.name).await? {
            Ok(())
        } else {
            Err(err(
                agent_code::PLUMBING_FAILED,
                "the pod's veth is gone",
                &rec.name,
            ))
        }
    }

    async fn liveness(&self, env: &Env<'_>, rec: &PortRecord) -> Result<Liveness, CniError> {
        // the host end lives in the node's netns, which the agent always sees
        Ok(if Self::host_end_present(env, &rec.name).await? {
            Liveness::Alive
        } else {
            Liveness::Dead
        })
    }
}

/// The veth of a container interface, by its derived name and owner tag: also what a DEL
/// without any OVS record removes (an ADD that died between the veth and the port).
pub async fn release_leftover(
    env: &Env<'_>,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    plumbing::unplumb_veth(
        env.cfg.host_netns.clone(),
        host_ifname(container_id, ifname),
        owner_tag(container_id, ifname),
    )
    .await
    .map_err(from_plumb)?;
    Ok(())
}
