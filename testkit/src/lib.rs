//! Real external systems for FerrOVN's tests, each started in a private temp dir and torn down on drop.
pub mod kube;
