//! FerrOVN's test harnesses, one module per concept (docs/architecture.md, "Test infrastructure").

// Test infrastructure: a harness that cannot do its job fails the test that asked for it, so
// panicking helpers are its way of reporting (the workspace denies them in production crates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod binaries;
pub mod cluster;
pub mod cni;
pub mod controller;
pub mod dpdk;
pub mod dpdk_node;
pub mod egress;
pub mod error;
pub mod fake_kube;
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
