//! FerrOVN node agent library: pod plumbing into network namespaces, OVS configuration of the
//! node, and the CNI server the `ferrovn-cni` plugin talks to.

pub mod affinity_unstick;
pub mod agent;
pub mod alloc;
pub mod annotate;
pub mod attach;
pub mod cni_error;
pub mod ct_reflush;
pub mod dpdk;
pub mod ethtool;
pub mod health_node_port;
pub mod host_services;
pub mod join_port;
pub mod kube_api;
pub mod nat_outgoing;
pub mod netns;
pub mod nft;
pub mod nodeport;
pub mod offload;
pub mod ovn_egress;
pub mod ovs;
pub mod plumbing;
pub mod profile;
pub mod report;
pub mod server;
pub mod settings;
pub mod sriov;
pub mod tunnel_announce;
pub mod types;
pub mod userspace_tso;
pub mod vswitchd_rxbuf;
