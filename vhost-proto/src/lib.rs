//! The control protocol of `ferrovn-vhost` (the pinned-core DPDK helper, `vhost/`) and a
//! blocking client for it: one JSON request per line on a unix socket, one response per line.
//!
//! Its own crate so the node agent can talk to the helper without linking DPDK: the helper
//! (`ferrovn-vhost`) and the agent (`ferrovn-dataplane`) both depend on this, and only the
//! helper on `ferrovn-dpdk-sys`.

pub mod client;
pub mod protocol;
