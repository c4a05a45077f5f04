//! `vhost-user`: a DPDK pod on an OVS-DPDK node ([`crate::dpdk::vhost`] has the plan and the
//! mounts). The pod's socket directory is bind-mounted to a short host path, described to the
//! pod (info file + annotation), and OVS connects to it as a `dpdkvhostuserclient`.
//!
//! The steps before and after the OVS port are shared with [`super::vhost_helper`], which
//! serves the same socket on kernel nodes.

use ferrovn_cni::protocol::VhostUser as VhostUserRequest;
use ferrovn_cni::spec::{CniError, CniResult, code};

use super::seam::{AddRequest, Attachment, Env, Kind, base_port, cni_result};
use crate::alloc::{Annotations, PodRef};
use crate::annotate::PodAnnotator;
use crate::cni_error::{err, plumbing};
use crate::dpdk::vhost::{self, VhostError, VhostPlan};
use crate::ovs::{PodPort, PortRecord, ext};

pub struct VhostUser;

fn vhost_err(e: VhostError) -> CniError {
    plumbing("the vhost-user attachment", e)
}

/// The vhost-user request of an ADD: the NAD config's keys, else the pod annotation's.
pub fn requested<'a>(add: &'a AddRequest<'_>) -> Option<&'a VhostUserRequest> {
    add.req
        .vhost_user
        .as_ref()
        .or(add.alloc.vhost_user.as_ref())
}

/// Pure: the plan of the attachment (names, paths, the info the pod gets).
pub fn plan_for(env: &Env<'_>, add: &AddRequest<'_>) -> Result<VhostPlan, CniError> {
    let vu = requested(add).ok_or_else(|| {
        err(
            code::INVALID_NETCONF,
            "invalid vhost-user attachment",
            "no vhost_user_socket_* keys in the netconf or the pod annotations",
        )
    })?;
    let req = vhost::VhostRequest {
        container_id: &add.req.container_id,
        ifname: &add.req.ifname,
        netns: add.netns,
        pod: vhost::PodVolumeRef {
            namespace: &add.pod.namespace,
            name: &add.pod.name,
            uid: add.req.pod.as_ref().and_then(|p| p.uid.as_deref()),
        },
        provider: add.provider,
        volume: vhost::effective_volume(vu),
        socket: vu.socket_name.as_deref(),
        mtu: add.mtu,
    };
    vhost::plan(&env.cfg.vhost, &req, add.alloc)
        .map_err(|e| err(code::INVALID_NETCONF, "invalid vhost-user attachment", e))
}

/// Makes the socket directory reachable at its short path and tells the pod about it (info
/// file in its volume, `vhost-user.ferrovn.io/<ifname>` annotation).
pub async fn publish(
    env: &Env<'_>,
    add: &AddRequest<'_>,
    plan: &VhostPlan,
) -> Result<(), CniError> {
    let vcfg = &env.cfg.vhost;
    vhost::bind_mount_async(
        plan.volume_dir.clone(),
        plan.short_dir.clone(),
        vcfg.host_mount_ns.clone(),
    )
    .await
    .map_err(vhost_err)?;
    vhost::write_info_file(&plan.volume_dir, &plan.info).map_err(vhost_err)?;
    if let Some(sink) = &vcfg.annotations {
        let ann = vhost::annotations_for(&plan.info).map_err(vhost_err)?;
        sink.annotate(add.pod, &ann, &[])
            .await
            .map_err(|e| vhost_err(e.into()))?;
    }
    Ok(())
}

/// Removes the short-path bind mount of a container interface (idempotent: nothing there is
/// success); also what a DEL without any OVS record sweeps.
pub async fn unbind(env: &Env<'_>, container_id: &str, ifname: &str) -> Result<(), CniError> {
    vhost::unbind_async(
        vhost::short_dir(&env.cfg.vhost.dir, container_id, ifname),
        env.cfg.vhost.host_mount_ns.clone(),
    )
    .await
    .map_err(vhost_err)
}

/// Removes `vhost-user.ferrovn.io/<ifname>` from the pod, so a stale socket description never
/// outlives its port. Best effort: the port is already gone, and a DEL that failed on an
/// annotation would only make the runtime retry it (a deleted Pod counts as done).
async fn forget_annotation(env: &Env<'_>, rec: &PortRecord) {
    let Some(sink) = &env.cfg.vhost.annotations else {
        return;
    };
    let (Some(namespace), Some(name), Some(ifname)) = (
        rec.get(ext::POD_NAMESPACE),
        rec.get(ext::POD_NAME),
        rec.get(ext::IFNAME),
    ) else {
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

/// The shared release of both vhost kinds: the annotation, then the bind mount.
pub async fn release_published(env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
    forget_annotation(env, rec).await;
    let (Some(cid), Some(ifname)) = (rec.get(ext::CONTAINER_ID), rec.get(ext::IFNAME)) else {
        return Ok(());
    };
    unbind(env, cid, ifname).await
}

/// The CNI result of both vhost kinds: the socket path on the pod's interface.
pub fn vhost_result(add: &AddRequest<'_>, plan: &VhostPlan) -> CniResult {
    let mut res = cni_result(
        &plan.port_name,
        &add.req.ifname,
        add.netns,
        add.mtu,
        add.alloc,
    );
    if let Some(i) = res.interfaces.get_mut(1) {
        i.socket_path = Some(plan.host_socket.display().to_string());
    }
    res
}

impl Attachment for VhostUser {
    const KIND: Kind = Kind::VhostUser;
    type Made = VhostPlan;

    async fn plumb(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
    ) -> Result<(PodPort, VhostPlan), CniError> {
        let plan = plan_for(env, add)?;
        let port = vhost::vhost_port(base_port(env, add, Self::KIND, &plan.port_name, ""), &plan);
        if let Err(e) = publish(env, add, &plan).await {
            self.undo(env, add, &plan).await;
            return Err(e);
        }
        Ok((port, plan))
    }

    async fn undo(&self, env: &Env<'_>, _add: &AddRequest<'_>, plan: &VhostPlan) {
        let _ =
            vhost::unbind_async(plan.short_dir.clone(), env.cfg.vhost.host_mount_ns.clone()).await;
    }

    async fn release(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        release_published(env, rec).await
    }

    fn result(&self, add: &AddRequest<'_>, _port: &PodPort, plan: &VhostPlan) -> CniResult {
        vhost_result(add, plan)
    }
}
