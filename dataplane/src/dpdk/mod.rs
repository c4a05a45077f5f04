//! The DPDK profile of the node agent: OVS-DPDK node configuration ([`config`]) and vhost-user
//! pod attachments ([`vhost`]).

pub mod config;
pub mod helper_attach;
pub mod node;
pub mod vhost;
