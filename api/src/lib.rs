//! FerrOVN's API contract, shared by the controller and the node agent: the Kube-OVN-compatible
//! types (`kubeovn.io/v1`), the annotations FerrOVN reads and writes, and the names both sides
//! must derive alike.
//!
//! - [`allocation`]: the pod allocation, written by the controller ([`Allocation::emit`]) and
//!   read by the node agent ([`Allocation::parse`]);
//! - [`names`]: port names, router MACs, generated pod MACs and host interface names, all
//!   stable across upgrades;
//! - [`anp`]: AdminNetworkPolicy and BaselineAdminNetworkPolicy (`policy.networking.k8s.io`);
//! - [`crd`]: the custom resources (Subnet, Vpc, IP, IPPool, Vlan, ProviderNetwork);
//! - [`annotations`]: typed accessors for pod, namespace and node annotations;
//! - [`nad`]: NetworkAttachmentDefinition and the Multus `k8s.v1.cni.cncf.io/networks` list;
//! - [`net`]: parsing of CIDR blocks, IP lists, `a..b` ranges and MACs;
//! - [`validate`]: pure validation with errors naming object, field and bad value;
//! - [`resolve`]: which subnet serves a pod interface, which NADs a pod attaches to;
//! - [`security_group`]: Kube-OVN's SecurityGroup (`kubeovn.io/v1`);
//! - [`crdgen`]: the generated CRD manifests under `deploy/crds/`.

pub mod allocation;
pub mod annotations;
pub mod anp;
pub mod crd;
pub mod crdgen;
pub mod nad;
pub mod names;
pub mod net;
pub mod resolve;
pub mod security_group;
pub mod validate;

pub use allocation::{Allocation, AllocationError};
pub use crd::{
    Condition, ConditionStatus, Ip, IpCount, IpPool, IpPoolSpec, IpPoolStatus, IpSpec,
    ProviderNetwork, ProviderNetworkSpec, ProviderNetworkStatus, Subnet, SubnetSpec, SubnetStatus,
    Vlan, VlanSpec, VlanStatus, Vpc, VpcSpec, VpcStatus,
};
pub use nad::NetworkAttachmentDefinition;
pub use net::{CidrBlock, DualIp, IpFamily, IpRange, MacAddr};
