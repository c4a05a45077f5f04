//! The node agent's settings: what `ferrovn-node`'s arguments (or a test) decide once at start.

use std::path::PathBuf;
use std::time::Duration;

use crate::ovs::NodeOvsConfig;
use crate::types::NodeProfile;

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
