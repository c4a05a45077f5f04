//! The allocation contract: what the controller writes onto a pod (or node) for one interface
//! once it allocated it, and what the node agent reads back before it plumbs the interface.
//! One type, both directions, side by side: [`Allocation::emit`] and [`Allocation::parse`].
//!
//! The keys are Kube-OVN's, under the interface's provider (`ovn` for the primary network,
//! `<nad>.<namespace>.ovn` for an attachment):
//!
//! | key | value |
//! |---|---|
//! | `<p>.kubernetes.io/allocated` | `true` (written last in spirit: the others are complete) |
//! | `<p>.kubernetes.io/ip_address` | `10.16.0.5` or `10.16.0.5,fd00::5` (IPv4 first) |
//! | `<p>.kubernetes.io/mac_address` | `0e:12:34:56:78:9a` |
//! | `<p>.kubernetes.io/cidr` | the subnet's block, `10.16.0.0/16[,fd00::/64]` |
//! | `<p>.kubernetes.io/gateway` | the subnet's gateway(s), one per family |
//! | `<p>.kubernetes.io/logical_switch` | the subnet |
//! | `<p>.kubernetes.io/logical_router` | the VPC (OVN interfaces only) |
//!
//! What the user asks for (`routes`, `ingress_rate`, `port_security`, ...) is not part of the
//! allocation: it is read with [`crate::annotations::PodNetwork`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::annotations::{AnnotationError, Annotations, PodKey, PodNetwork, annotation_key};
use crate::net::{CidrBlock, DualIp, IpFamily, MacAddr};

/// One interface's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// `ovn` or `<nad>.<namespace>.ovn`: the prefix of every key.
    pub provider: String,
    /// One address per family, each inside `cidr`.
    pub ip: DualIp,
    pub mac: MacAddr,
    /// The subnet's block; gives each address its prefix length.
    pub cidr: CidrBlock,
    /// The subnet's gateway(s); empty when the writer gave none.
    pub gateway: DualIp,
    pub logical_switch: String,
    /// The VPC's router; `None` for IPAM-only attachments, which have no OVN port.
    pub logical_router: Option<String>,
}

/// Why a pod's allocation annotations cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("annotation {key} is missing although {allocated_key} is \"true\"")]
    Missing { key: String, allocated_key: String },
    #[error(transparent)]
    Invalid(#[from] AnnotationError),
}

impl AllocationError {
    /// The annotation key the error is about.
    pub fn key(&self) -> &str {
        match self {
            AllocationError::Missing { key, .. } => key,
            AllocationError::Invalid(e) => &e.key,
        }
    }
}

impl Allocation {
    /// The annotations to merge into the pod (or node): every key of the table above, under
    /// this allocation's provider.
    pub fn emit(&self) -> Annotations {
        let p = self.provider.as_str();
        let mut out = BTreeMap::new();
        let mut put = |key: PodKey, value: String| {
            out.insert(annotation_key(p, key.name()), value);
        };
        put(PodKey::IpAddress, self.ip.to_string());
        put(PodKey::MacAddress, self.mac.to_string());
        put(PodKey::Cidr, self.cidr.to_string());
        if !self.gateway.is_empty() {
            put(PodKey::Gateway, self.gateway.to_string());
        }
        put(PodKey::LogicalSwitch, self.logical_switch.clone());
        if let Some(router) = &self.logical_router {
            put(PodKey::LogicalRouter, router.clone());
        }
        put(PodKey::Allocated, "true".to_string());
        out
    }

    /// Reads the allocation of `provider` back. `Ok(None)` while there is none yet
    /// (`allocated` absent or false); an error names the key and the bad value. Besides each
    /// value's syntax it checks what a consumer relies on: every address and gateway lies in
    /// the block's net of its family, and the MAC is one an interface may have.
    pub fn parse(
        annotations: &Annotations,
        provider: &str,
    ) -> Result<Option<Self>, AllocationError> {
        let net = PodNetwork::for_provider(annotations, provider);
        if !net.allocated()? {
            return Ok(None);
        }
        let missing = |key: PodKey| AllocationError::Missing {
            key: net.key(key),
            allocated_key: net.key(PodKey::Allocated),
        };
        let bad = |key: PodKey, reason: String| {
            let k = net.key(key);
            let value = annotations.get(&k).cloned().unwrap_or_default();
            AllocationError::Invalid(AnnotationError {
                key: k,
                value,
                reason,
            })
        };
        let ip = net
            .ip_address()?
            .ok_or_else(|| missing(PodKey::IpAddress))?;
        let mac = net
            .mac_address()?
            .ok_or_else(|| missing(PodKey::MacAddress))?;
        let cidr = net.cidr()?.ok_or_else(|| missing(PodKey::Cidr))?;
        let logical_switch = net
            .logical_switch()
            .ok_or_else(|| missing(PodKey::LogicalSwitch))?
            .to_string();
        let gateway = net.gateway()?.unwrap_or_default();
        let outside = |addr: IpAddr| !cidr.contains(&addr);
        if let Some(addr) = ip.addrs().find(|a| outside(*a)) {
            return Err(bad(
                PodKey::IpAddress,
                format!("{addr} is outside {} {cidr}", net.key(PodKey::Cidr)),
            ));
        }
        if let Some(addr) = gateway.addrs().find(|a| outside(*a)) {
            return Err(bad(
                PodKey::Gateway,
                format!("{addr} is outside {} {cidr}", net.key(PodKey::Cidr)),
            ));
        }
        Ok(Some(Allocation {
            provider: provider.to_string(),
            ip,
            mac,
            cidr,
            gateway,
            logical_switch,
            logical_router: net.logical_router().map(str::to_string),
        }))
    }

    /// The addresses with their subnet's prefix length (`10.16.0.5/16`), IPv4 first.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ip
            .addrs()
            .filter_map(|a| {
                let net = self.cidr.net(IpFamily::of(&a))?;
                IpNet::new(a, net.prefix_len()).ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Allocation {
        Allocation {
            provider: "ovn".into(),
            ip: DualIp::parse("10.16.0.7,fd00::7").unwrap(),
            mac: MacAddr::parse("0e:00:00:00:00:07").unwrap(),
            cidr: CidrBlock::parse("10.16.0.0/16,fd00::/64").unwrap(),
            gateway: DualIp::parse("10.16.0.1,fd00::1").unwrap(),
            logical_switch: "ovn-default".into(),
            logical_router: Some("ovn-cluster".into()),
        }
    }

    #[test]
    fn emits_kube_ovn_keys() {
        let a = sample().emit();
        let get = |k: &str| a.get(k).map(String::as_str);
        assert_eq!(
            get("ovn.kubernetes.io/ip_address"),
            Some("10.16.0.7,fd00::7")
        );
        assert_eq!(
            get("ovn.kubernetes.io/mac_address"),
            Some("0e:00:00:00:00:07")
        );
        assert_eq!(
            get("ovn.kubernetes.io/cidr"),
            Some("10.16.0.0/16,fd00::/64")
        );
        assert_eq!(get("ovn.kubernetes.io/gateway"), Some("10.16.0.1,fd00::1"));
        assert_eq!(get("ovn.kubernetes.io/logical_switch"), Some("ovn-default"));
        assert_eq!(get("ovn.kubernetes.io/logical_router"), Some("ovn-cluster"));
        assert_eq!(get("ovn.kubernetes.io/allocated"), Some("true"));
        assert_eq!(a.len(), 7);
        assert_eq!(Allocation::parse(&a, "ovn"), Ok(Some(sample())));
    }

    #[test]
    fn addresses_carry_the_prefix() {
        let nets: Vec<String> = sample().addresses().iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.16.0.7/16", "fd00::7/64"]);
    }

    #[test]
    fn errors_name_key_and_value() {
        let mut a = sample().emit();
        a.insert("ovn.kubernetes.io/ip_address".into(), "10.17.0.5".into());
        let e = Allocation::parse(&a, "ovn").unwrap_err();
        assert_eq!(e.key(), "ovn.kubernetes.io/ip_address");
        assert!(e.to_string().contains("\"10.17.0.5\""), "{e}");
        assert!(e.to_string().contains("outside"), "{e}");

        let mut a = sample().emit();
        a.remove("ovn.kubernetes.io/mac_address");
        assert!(matches!(
            Allocation::parse(&a, "ovn"),
            Err(AllocationError::Missing { key, .. }) if key == "ovn.kubernetes.io/mac_address"
        ));

        let mut a = sample().emit();
        a.insert("ovn.kubernetes.io/allocated".into(), "yes".into());
        assert_eq!(
            Allocation::parse(&a, "ovn").unwrap_err().key(),
            "ovn.kubernetes.io/allocated"
        );
        // not allocated yet, or another provider's
        a.insert("ovn.kubernetes.io/allocated".into(), "false".into());
        assert_eq!(Allocation::parse(&a, "ovn"), Ok(None));
        assert_eq!(
            Allocation::parse(&sample().emit(), "net1.default.ovn"),
            Ok(None)
        );
    }
}
