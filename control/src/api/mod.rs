//! Kube-OVN-compatible API types (`kubeovn.io/v1`) and the annotations FerrOVN reads and writes.
