//! FerrOVN's control plane: the Kube-OVN-compatible API, cluster-wide IPAM and the NB planner.

pub mod api;
pub mod ipam;
pub mod manifest;
pub mod plan;
pub mod reconcile;
pub mod controller;
