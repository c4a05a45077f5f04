//! FerrOVN lab: the whole fabric on one machine. A real Kubernetes control plane runs on
//! loopback, nodes are network namespaces each with its own OVS (OVS-DPDK on hugepages, or the
//! netdev datapath), OVN central runs for real, each node runs containerd and a kubelet, the
//! controller and agents run as those kubelets' pods from deploy/ferrovn.yaml (pods.rs), and the
//! example pods are real containers networked by the built CNI plugin. See docs/lab.md.

pub mod cluster;
pub mod dns;
pub mod docs;
pub mod egress;
pub mod forward;
pub mod lab;
pub mod model;
pub mod outside;
pub mod plan;
pub mod pods;
pub mod services;
pub mod sys;
