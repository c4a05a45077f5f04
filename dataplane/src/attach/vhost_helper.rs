//! `vhost-helper`: a DPDK pod on a kernel node. The pod asks and gets exactly what it gets on
//! an OVS-DPDK node ([`super::vhost_user`]: same plan, bind mount, info, annotation); the node
//! side is a veth pair whose one end is on br-int and whose other end the `ferrovn-vhost`
//! helper relays to the pod's socket ([`crate::dpdk::helper_attach`]).

use ferrovn_cni::spec::{CniError, CniResult};

use super::seam::{AddRequest, Attachment, Env, Kind, base_port};
use super::vhost_user::{plan_for, publish, release_published, vhost_result};
use crate::dpdk::helper_attach;
use crate::dpdk::vhost::{self, VhostPlan};
use crate::ovs::{PodPort, PortRecord};

pub struct VhostHelper;

impl Attachment for VhostHelper {
    const KIND: Kind = Kind::VhostHelper;
    type Made = VhostPlan;

    async fn plumb(
        &self,
        env: &Env<'_>,
        add: &AddRequest<'_>,
    ) -> Result<(PodPort, VhostPlan), CniError> {
        let plan = plan_for(env, add)?;
        let port = helper_attach::kernel_port(
            vhost::vhost_port(base_port(env, add, Self::KIND, &plan.port_name, ""), &plan),
            &plan,
        );
        let made = async {
            publish(env, add, &plan).await?;
            helper_attach::plumb(
                env.cfg.host_netns.clone(),
                &plan,
                &add.req.container_id,
                &add.req.ifname,
            )
            .await
            .map_err(|e| e.to_cni())
        }
        .await;
        if let Err(e) = made {
            self.undo(env, add, &plan).await;
            return Err(e);
        }
        Ok((port, plan))
    }

    async fn after_port(
        &self,
        env: &Env<'_>,
        _add: &AddRequest<'_>,
        plan: &VhostPlan,
    ) -> Result<(), CniError> {
        helper_attach::attach(&env.cfg.vhost_helper, plan)
            .await
            .map_err(|e| e.to_cni())
    }

    async fn undo(&self, env: &Env<'_>, _add: &AddRequest<'_>, plan: &VhostPlan) {
        let end_a = helper_attach::kernel_iface_name(plan);
        let _ = helper_attach::detach(
            &env.cfg.vhost_helper,
            env.cfg.host_netns.clone(),
            &plan.port_name,
            &end_a,
        )
        .await;
        let _ =
            vhost::unbind_async(plan.short_dir.clone(), env.cfg.vhost.host_mount_ns.clone()).await;
    }

    async fn release(&self, env: &Env<'_>, rec: &PortRecord) -> Result<(), CniError> {
        helper_attach::release_record(&env.cfg.vhost_helper, env.cfg.host_netns.clone(), rec)
            .await?;
        release_published(env, rec).await
    }

    fn result(&self, add: &AddRequest<'_>, _port: &PodPort, plan: &VhostPlan) -> CniResult {
        vhost_result(add, plan)
    }
}
