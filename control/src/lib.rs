//! FerrOVN's control plane: the Kube-OVN-compatible API, cluster-wide IPAM and the NB planner.

pub mod api;
pub mod controller;
pub mod ipam;
pub mod kube;
pub mod manifest;
pub mod plan;
pub mod reconcile;
