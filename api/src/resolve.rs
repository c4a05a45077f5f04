//! Which subnet serves a pod interface, and which NADs a pod attaches to: Kube-OVN's lookup
//! rules over a snapshot of the cluster's objects, as pure functions.
//!
//! Primary network, first match wins:
//! 1. the pod's `ovn.kubernetes.io/logical_switch` annotation;
//! 2. the namespace's `ovn.kubernetes.io/logical_switch` annotation (first entry);
//! 3. a subnet listing the namespace in `spec.namespaces` (by name order);
//! 4. the `defaultSubnet` of a VPC listing the namespace in `spec.namespaces`;
//! 5. the default subnet: `spec.default: true`, else the one named `ovn-default`.
//!
//! Attachment with provider `P`: the pod's `P.kubernetes.io/logical_switch`, else the subnet
//! whose `spec.provider` is `P` (by name order).

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::annotations::{Annotations, OVN_PROVIDER, PodNetwork};
use super::crd::{DEFAULT_SUBNET, Subnet, Vpc};
use super::nad::{
    Attachment, NETWORKS_ANNOTATION, NetworkAttachmentDefinition, NetworkSelection, parse_networks,
};
use super::validate::{ObjectRef, ValidationError};

/// Why a subnet was chosen (for logs and error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetSource {
    PodAnnotation,
    NamespaceAnnotation,
    SubnetNamespaces,
    VpcDefaultSubnet,
    ClusterDefault,
    Provider,
}

/// A snapshot of the objects subnet resolution looks at.
#[derive(Debug, Clone, Default)]
pub struct ClusterView<'a> {
    pub namespaces: Vec<&'a Namespace>,
    pub subnets: Vec<&'a Subnet>,
    pub vpcs: Vec<&'a Vpc>,
    pub nads: Vec<&'a NetworkAttachmentDefinition>,
}

/// One secondary interface of a pod: the Multus selection, its NAD, and what FerrOVN does.
#[derive(Debug, Clone)]
pub struct PodAttachment<'a> {
    pub selection: NetworkSelection,
    pub nad: &'a NetworkAttachmentDefinition,
    pub attachment: Attachment,
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

impl<'a> ClusterView<'a> {
    /// The subnet with this name.
    pub fn subnet(&self, name: &str) -> Option<&'a Subnet> {
        self.subnets
            .iter()
            .copied()
            .find(|s| name_of(&s.metadata) == name)
    }

    fn by_name_order<I: Iterator<Item = &'a Subnet>>(iter: I) -> Option<&'a Subnet> {
        iter.min_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)))
    }

    /// The subnet name serving the interface of `provider` of a pod in `namespace` with these
    /// annotations, and why. The name may refer to a subnet that does not exist (the caller
    /// reports that); `None` when no rule applies.
    pub fn subnet_name_for(
        &self,
        namespace: &str,
        pod_annotations: &Annotations,
        provider: &str,
    ) -> Option<(String, SubnetSource)> {
        let net = PodNetwork::for_provider(pod_annotations, provider);
        if let Some(ls) = net.logical_switch() {
            return Some((ls.to_string(), SubnetSource::PodAnnotation));
        }
        if provider != OVN_PROVIDER {
            return Self::by_name_order(
                self.subnets
                    .iter()
                    .copied()
                    .filter(|s| s.provider() == provider),
            )
            .map(|s| (name_of(&s.metadata).to_string(), SubnetSource::Provider));
        }
        if let Some(ns) = self
            .namespaces
            .iter()
            .find(|n| name_of(&n.metadata) == namespace)
            && let Some(ann) = &ns.metadata.annotations
            && let Some(first) = super::annotations::NamespaceNetwork::new(ann)
                .logical_switches()
                .first()
        {
            return Some((first.to_string(), SubnetSource::NamespaceAnnotation));
        }
        if let Some(s) = Self::by_name_order(self.subnets.iter().copied().filter(|s| {
            s.provider() == OVN_PROVIDER && s.spec.namespaces.iter().any(|n| n == namespace)
        })) {
            return Some((
                name_of(&s.metadata).to_string(),
                SubnetSource::SubnetNamespaces,
            ));
        }
        if let Some(vpc) = self
            .vpcs
            .iter()
            .find(|v| v.spec.namespaces.iter().any(|n| n == namespace))
            && !vpc.spec.default_subnet.is_empty()
        {
            return Some((
                vpc.spec.default_subnet.clone(),
                SubnetSource::VpcDefaultSubnet,
            ));
        }
        let default = self
            .subnets
            .iter()
            .find(|s| s.spec.default)
            .map(|s| name_of(&s.metadata).to_string())
            .unwrap_or_else(|| DEFAULT_SUBNET.to_string());
        Some((default, SubnetSource::ClusterDefault))
    }

    /// The NAD `namespace/name`.
    pub fn nad(&self, namespace: &str, name: &str) -> Option<&'a NetworkAttachmentDefinition> {
        self.nads.iter().copied().find(|n| {
            name_of(&n.metadata) == name && n.metadata.namespace.as_deref() == Some(namespace)
        })
    }

    /// The pod's secondary interfaces from `k8s.v1.cni.cncf.io/networks`, each resolved to its
    /// NAD. NADs that are not FerrOVN's are skipped; errors name the pod and the field.
    pub fn attachments(&self, pod: &Pod) -> Result<Vec<PodAttachment<'a>>, Vec<ValidationError>> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let object = ObjectRef::namespaced("Pod", namespace, name_of(&pod.metadata));
        let Some(value) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NETWORKS_ANNOTATION))
        else {
            return Ok(Vec::new());
        };
        let selections = parse_networks(value).map_err(|error| {
            vec![ValidationError::Annotation {
                object: object.clone(),
                error,
            }]
        })?;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for selection in selections {
            let nad_ns = selection.namespace_or(namespace).to_string();
            let Some(nad) = self.nad(&nad_ns, &selection.name) else {
                errors.push(ValidationError::UnknownReference {
                    object: object.clone(),
                    field: format!("metadata.annotations[{NETWORKS_ANNOTATION}]"),
                    kind: "NetworkAttachmentDefinition",
                    name: format!("{nad_ns}/{}", selection.name),
                });
                continue;
            };
            match nad.attachment() {
                Ok(Some(attachment)) => out.push(PodAttachment {
                    selection,
                    nad,
                    attachment,
                }),
                Ok(None) => {}
                Err(error) => errors.push(ValidationError::Attachment {
                    object: object.clone(),
                    error,
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SubnetSpec, VpcSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn subnet(name: &str, spec: SubnetSpec) -> Subnet {
        Subnet {
            metadata: meta(name, &[]),
            spec,
            status: None,
        }
    }

    #[test]
    fn rules_apply_in_kube_ovn_order() {
        let subnets = [
            subnet(
                "zz-ns",
                SubnetSpec {
                    namespaces: vec!["team".into()],
                    ..SubnetSpec::default()
                },
            ),
            subnet(
                "aa-ns",
                SubnetSpec {
                    namespaces: vec!["team".into()],
                    ..SubnetSpec::default()
                },
            ),
            subnet(
                "main",
                SubnetSpec {
                    default: true,
                    ..SubnetSpec::default()
                },
            ),
            subnet(
                "dpdk",
                SubnetSpec {
                    provider: "dpdk-net.default.ovn".into(),
                    ..SubnetSpec::default()
                },
            ),
        ];
        let namespaces = [Namespace {
            metadata: meta(
                "annotated",
                &[("ovn.kubernetes.io/logical_switch", "ns-pick,other")],
            ),
            ..Namespace::default()
        }];
        let vpcs = [Vpc {
            metadata: meta("blue", &[]),
            spec: VpcSpec {
                namespaces: vec!["blue".into()],
                default_subnet: "blue-net".into(),
                ..VpcSpec::default()
            },
            status: None,
        }];
        let view = ClusterView {
            namespaces: namespaces.iter().collect(),
            subnets: subnets.iter().collect(),
            vpcs: vpcs.iter().collect(),
            nads: Vec::new(),
        };
        let none = Annotations::new();
        let pinned: Annotations = [(
            "ovn.kubernetes.io/logical_switch".to_string(),
            "pinned".to_string(),
        )]
        .into_iter()
        .collect();
        let pick =
            |ns: &str, ann: &Annotations, provider: &str| view.subnet_name_for(ns, ann, provider);
        assert_eq!(
            pick("team", &pinned, "ovn"),
            Some(("pinned".into(), SubnetSource::PodAnnotation))
        );
        assert_eq!(
            pick("annotated", &none, "ovn"),
            Some(("ns-pick".into(), SubnetSource::NamespaceAnnotation))
        );
        assert_eq!(
            pick("team", &none, "ovn"),
            Some(("aa-ns".into(), SubnetSource::SubnetNamespaces))
        );
        assert_eq!(
            pick("blue", &none, "ovn"),
            Some(("blue-net".into(), SubnetSource::VpcDefaultSubnet))
        );
        assert_eq!(
            pick("other", &none, "ovn"),
            Some(("main".into(), SubnetSource::ClusterDefault))
        );
        assert_eq!(
            pick("other", &none, "dpdk-net.default.ovn"),
            Some(("dpdk".into(), SubnetSource::Provider))
        );
        assert_eq!(pick("other", &none, "nothing.default.ovn"), None);
        let empty = ClusterView::default();
        assert_eq!(
            empty.subnet_name_for("x", &none, "ovn"),
            Some(("ovn-default".into(), SubnetSource::ClusterDefault))
        );
    }
}
