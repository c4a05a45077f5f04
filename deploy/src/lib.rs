//! FerrOVN lab: the whole fabric on one machine. A real Kubernetes control plane runs on
//! loopback, nodes are network namespaces each with its own OVS (OVS-DPDK on hugepages, or the
//! netdev datapath), OVN central runs for real, the controller and agents run in cluster mode as
//! their own ServiceAccounts, and pods are taken from the API server and made network
//! namespaces by invoking the built CNI plugin exactly as a runtime does. See docs/lab.md.

pub mod cluster;
pub mod dns;
pub mod docs;
pub mod egress;
pub mod forward;
pub mod lab;
pub mod model;
pub mod outside;
pub mod plan;
pub mod services;
pub mod sys;
