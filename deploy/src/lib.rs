//! FerrOVN lab: the whole fabric on one machine. Nodes are network namespaces each with its own
//! OVS (OVS-DPDK on hugepages, or the netdev datapath), OVN central runs for real, the
//! controller reads manifests instead of a kube-apiserver, and pods are network namespaces
//! created by invoking the built CNI plugin exactly as a runtime does. See docs/lab.md.

pub mod docs;
pub mod lab;
pub mod model;
pub mod plan;
pub mod sys;
