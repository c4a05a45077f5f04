//! FerrOVN's test harnesses, one module per concept (docs/architecture.md, "Test infrastructure").
pub mod binaries;
pub mod cluster;
pub mod cni;
pub mod dpdk;
pub mod error;
pub mod fake_kube;
pub mod fake_kube_simple;
pub mod kube;
pub mod names;
pub mod netns;
pub mod ovs_node;
pub mod ovs_paths;
pub mod ovsdb;
pub mod process;
pub mod require;
pub mod sysfs;
pub mod wait;
