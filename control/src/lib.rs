//! FerrOVN's control plane: cluster-wide IPAM, the NB planner and the reconcile loop over the
//! Kube-OVN-compatible API of `ferrovn-api`.

pub mod controller;
pub mod ipam;
pub mod kube;
pub mod manifest;
pub mod plan;
pub mod reconcile;
