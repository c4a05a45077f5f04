//! The lab's object source: ordinary Kubernetes YAML (or JSON) files, as a user would
//! `kubectl apply`, read into typed objects. Multi-document files and `kind: List` are
//! understood. Kinds FerrOVN does not act on are reported in [`Manifest::unknown`], not
//! rejected; a malformed object of a known kind is an error naming file, document, kind, object
//! and field.

// Errors carry the full context (object, field, value) by design; they are built only on the
// cold rejection path, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use std::net::IpAddr;

use ferrovn_api::annotations::{
    Annotations, NamespaceNetwork, NodeNetwork, OVN_PROVIDER, PodKey, PodNetwork,
};
use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy, POLICY_API_VERSION};
use ferrovn_api::crd::{API_VERSION, DEFAULT_VPC, Ip, IpPool, ProviderNetwork, Subnet, Vlan, Vpc};
use ferrovn_api::nad::{Attachment, NetworkAttachmentDefinition, VhostUserConsumption};
use ferrovn_api::net::MacAddr;
use ferrovn_api::resolve::{ClusterView, SubnetSource};
use ferrovn_api::security_group::SecurityGroup;
use ferrovn_api::validate::{
    ObjectRef, ValidatedSubnet, ValidationError, check_static_ips, validate_ip_pool,
    validate_pod_annotations, validate_subnets, validate_vlan, validate_vpc,
};

/// File extensions [`load_dir`] reads.
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// An object FerrOVN understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Node(Box<Node>),
    NetworkAttachmentDefinition(Box<NetworkAttachmentDefinition>),
    Subnet(Box<Subnet>),
    Vpc(Box<Vpc>),
    Ip(Box<Ip>),
    IpPool(Box<IpPool>),
    Vlan(Box<Vlan>),
    ProviderNetwork(Box<ProviderNetwork>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    NetworkPolicy(Box<NetworkPolicy>),
    AdminNetworkPolicy(Box<AdminNetworkPolicy>),
    BaselineAdminNetworkPolicy(Box<BaselineAdminNetworkPolicy>),
    SecurityGroup(Box<SecurityGroup>),
}

impl Object {
    /// The Kubernetes kind (`Subnet`, `IP`, `IPPool`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Node(_) => "Node",
            Object::NetworkAttachmentDefinition(_) => "NetworkAttachmentDefinition",
            Object::Subnet(_) => "Subnet",
            Object::Vpc(_) => "Vpc",
            Object::Ip(_) => "IP",
            Object::IpPool(_) => "IPPool",
            Object::Vlan(_) => "Vlan",
            Object::ProviderNetwork(_) => "ProviderNetwork",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::AdminNetworkPolicy(_) => "AdminNetworkPolicy",
            Object::BaselineAdminNetworkPolicy(_) => "BaselineAdminNetworkPolicy",
            Object::SecurityGroup(_) => "SecurityGroup",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::NetworkAttachmentDefinition(o) => &o.metadata,
            Object::Subnet(o) => &o.metadata,
            Object::Vpc(o) => &o.metadata,
            Object::Ip(o) => &o.metadata,
            Object::IpPool(o) => &o.metadata,
            Object::Vlan(o) => &o.metadata,
            Object::ProviderNetwork(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::AdminNetworkPolicy(o) => &o.metadata,
            Object::BaselineAdminNetworkPolicy(o) => &o.metadata,
            Object::SecurityGroup(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::NetworkAttachmentDefinition(o) => &mut o.metadata,
            Object::Subnet(o) => &mut o.metadata,
            Object::Vpc(o) => &mut o.metadata,
            Object::Ip(o) => &mut o.metadata,
            Object::IpPool(o) => &mut o.metadata,
            Object::Vlan(o) => &mut o.metadata,
            Object::ProviderNetwork(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::NetworkPolicy(o) => &mut o.metadata,
            Object::AdminNetworkPolicy(o) => &mut o.metadata,
            Object::BaselineAdminNetworkPolicy(o) => &mut o.metadata,
            Object::SecurityGroup(o) => &mut o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The namespace of a namespaced object (`None` for cluster-scoped kinds).
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// True for Pods, NADs, Services, EndpointSlices and NetworkPolicies.
    pub fn is_namespaced(&self) -> bool {
        matches!(
            self,
            Object::Pod(_)
                | Object::NetworkAttachmentDefinition(_)
                | Object::Service(_)
                | Object::EndpointSlice(_)
                | Object::NetworkPolicy(_)
        )
    }
}

/// Where an object came from: file, 0-based document index, and the index inside a `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// A typed object and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedObject {
    pub location: Location,
    pub object: Object,
}

/// An object of a kind FerrOVN does not act on (a Deployment, a ConfigMap, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownObject {
    pub location: Location,
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
}

/// Everything read from a set of manifests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub objects: Vec<LoadedObject>,
    pub unknown: Vec<UnknownObject>,
    /// (kind, namespace, name) -> index in `objects`, to find duplicates in O(1).
    seen: HashMap<(&'static str, Option<String>, String), usize>,
}

macro_rules! accessor {
    ($name:ident, $variant:ident, $ty:ty) => {
        /// Every object of this kind, in load order.
        pub fn $name(&self) -> impl Iterator<Item = &$ty> + '_ {
            self.objects.iter().filter_map(|o| match &o.object {
                Object::$variant(x) => Some(x.as_ref()),
                _ => None,
            })
        }
    };
}

impl Manifest {
    accessor!(namespaces, Namespace, Namespace);
    accessor!(pods, Pod, Pod);
    accessor!(nodes, Node, Node);
    accessor!(
        network_attachment_definitions,
        NetworkAttachmentDefinition,
        NetworkAttachmentDefinition
    );
    accessor!(subnets, Subnet, Subnet);
    accessor!(vpcs, Vpc, Vpc);
    accessor!(ips, Ip, Ip);
    accessor!(ip_pools, IpPool, IpPool);
    accessor!(vlans, Vlan, Vlan);
    accessor!(provider_networks, ProviderNetwork, ProviderNetwork);
    accessor!(services, Service, Service);
    accessor!(endpoint_slices, EndpointSlice, EndpointSlice);
    accessor!(network_policies, NetworkPolicy, NetworkPolicy);
    accessor!(
        admin_network_policies,
        AdminNetworkPolicy,
        AdminNetworkPolicy
    );
    accessor!(
        baseline_admin_network_policies,
        BaselineAdminNetworkPolicy,
        BaselineAdminNetworkPolicy
    );
    accessor!(security_groups, SecurityGroup, SecurityGroup);

    /// Appends another manifest; the same object (kind, namespace, name) twice is an error.
    pub fn merge(&mut self, other: Manifest) -> Result<(), ManifestError> {
        for o in other.objects {
            self.push(o)?;
        }
        self.unknown.extend(other.unknown);
        Ok(())
    }

    fn push(&mut self, loaded: LoadedObject) -> Result<(), ManifestError> {
        let o = &loaded.object;
        let key = (
            o.kind(),
            o.namespace().map(str::to_string),
            o.name().to_string(),
        );
        if let Some(&first) = self.seen.get(&key) {
            return Err(ManifestError::Duplicate {
                location: loaded.location,
                first: self.objects[first].location.clone(),
                kind: key.0.to_string(),
                name: display_name(key.1.as_deref(), &key.2),
            });
        }
        self.seen.insert(key, self.objects.len());
        self.objects.push(loaded);
        Ok(())
    }
}

fn display_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: not valid YAML: {reason}")]
    Yaml { location: Location, reason: String },
    #[error("{location}: expected a Kubernetes object (a mapping), found {found}")]
    NotAnObject { location: Location, found: String },
    #[error("{location}: missing {field}")]
    MissingTypeField {
        location: Location,
        field: &'static str,
    },
    #[error("{location}: {kind} {name}: field {field}: {reason}")]
    Field {
        location: Location,
        kind: String,
        name: String,
        field: String,
        reason: String,
    },
    #[error("{location}: {kind} {name} is already defined at {first}")]
    Duplicate {
        location: Location,
        first: Location,
        kind: String,
        name: String,
    },
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Reads YAML (or JSON, a YAML subset) text holding any number of documents. `origin` names the
/// text in errors and locations (usually the file path).
pub fn load_str(text: &str, origin: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
    let file = origin.as_ref().to_path_buf();
    let mut manifest = Manifest::default();
    for (document, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let location = Location {
            file: file.clone(),
            document,
            item: None,
        };
        let value = Value::deserialize(de).map_err(|e| ManifestError::Yaml {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        load_value(value, location, &mut manifest)?;
    }
    Ok(manifest)
}

fn type_field(
    value: &Value,
    field: &'static str,
    location: &Location,
) -> Result<String, ManifestError> {
    match value.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ManifestError::MissingTypeField {
            location: location.clone(),
            field,
        }),
    }
}

fn load_value(
    value: Value,
    location: Location,
    manifest: &mut Manifest,
) -> Result<(), ManifestError> {
    if !value.is_object() {
        return Err(ManifestError::NotAnObject {
            location,
            found: describe(&value),
        });
    }
    let api_version = type_field(&value, "apiVersion", &location)?;
    let kind = type_field(&value, "kind", &location)?;

    if location.item.is_none()
        && kind.ends_with("List")
        && let Some(Value::Array(items)) = value.get("items")
    {
        for (i, item) in items.iter().enumerate() {
            let item_location = Location {
                item: Some(i),
                ..location.clone()
            };
            load_value(item.clone(), item_location, manifest)?;
        }
        return Ok(());
    }

    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => decode(value, &location, &kind, &name).map(Object::Namespace)?,
        ("v1", "Pod") => decode(value, &location, &kind, &name).map(Object::Pod)?,
        ("v1", "Node") => decode(value, &location, &kind, &name).map(Object::Node)?,
        ("v1", "Service") => decode(value, &location, &kind, &name).map(Object::Service)?,
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            decode(value, &location, &kind, &name).map(Object::EndpointSlice)?
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            decode(value, &location, &kind, &name).map(Object::NetworkPolicy)?
        }
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => {
            decode(value, &location, &kind, &name).map(Object::NetworkAttachmentDefinition)?
        }
        (POLICY_API_VERSION, "AdminNetworkPolicy") => {
            decode(value, &location, &kind, &name).map(Object::AdminNetworkPolicy)?
        }
        (POLICY_API_VERSION, "BaselineAdminNetworkPolicy") => {
            decode(value, &location, &kind, &name).map(Object::BaselineAdminNetworkPolicy)?
        }
        (API_VERSION, "Subnet") => decode(value, &location, &kind, &name).map(Object::Subnet)?,
        (API_VERSION, "Vpc") => decode(value, &location, &kind, &name).map(Object::Vpc)?,
        (API_VERSION, "IP") => decode(value, &location, &kind, &name).map(Object::Ip)?,
        (API_VERSION, "IPPool") => decode(value, &location, &kind, &name).map(Object::IpPool)?,
        (API_VERSION, "Vlan") => decode(value, &location, &kind, &name).map(Object::Vlan)?,
        (API_VERSION, "SecurityGroup") => {
            decode(value, &location, &kind, &name).map(Object::SecurityGroup)?
        }
        (API_VERSION, "ProviderNetwork") => {
            decode(value, &location, &kind, &name).map(Object::ProviderNetwork)?
        }
        _ => {
            manifest.unknown.push(UnknownObject {
                location,
                api_version,
                kind,
                name: Some(name).filter(|n| !n.is_empty()),
            });
            return Ok(());
        }
    };
    let mut object = object;
    if object.name().is_empty() {
        return Err(ManifestError::Field {
            location,
            kind,
            name: "<unnamed>".into(),
            field: "metadata.name".into(),
            reason: "required".into(),
        });
    }
    // `kubectl apply` puts namespaced objects without a namespace into `default`; cluster-scoped
    // kinds have none.
    let meta = object.metadata_mut();
    if object_is_namespaced(&kind) {
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".into());
        }
    } else {
        meta.namespace = None;
    }
    manifest.push(LoadedObject { location, object })
}

fn object_is_namespaced(kind: &str) -> bool {
    matches!(
        kind,
        "Pod" | "NetworkAttachmentDefinition" | "Service" | "EndpointSlice" | "NetworkPolicy"
    )
}

fn decode<T: DeserializeOwned>(
    value: Value,
    location: &Location,
    kind: &str,
    name: &str,
) -> Result<Box<T>, ManifestError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(Box::new)
        .map_err(|e| ManifestError::Field {
            location: location.clone(),
            kind: kind.to_string(),
            name: if name.is_empty() {
                "<unnamed>".into()
            } else {
                name.to_string()
            },
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
}

/// Reads one file.
pub fn load_file(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file under `dir` (recursively, in path order, so
/// `00-namespaces.yaml` comes before `10-pods.yaml`). Hidden files and directories are skipped.
pub fn load_dir(dir: &Path) -> Result<Manifest, ManifestError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut manifest = Manifest::default();
    for f in files {
        manifest.merge(load_file(&f)?)?;
    }
    Ok(manifest)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Objects indexed by (kind, namespace, name), for callers that look objects up by reference.
pub fn index(manifest: &Manifest) -> HashMap<(&'static str, Option<&str>, &str), &Object> {
    manifest
        .objects
        .iter()
        .map(|o| {
            (
                (o.object.kind(), o.object.namespace(), o.object.name()),
                &o.object,
            )
        })
        .collect()
}

impl Manifest {
    /// The objects subnet and attachment resolution look at.
    pub fn view(&self) -> ClusterView<'_> {
        ClusterView {
            namespaces: self.namespaces().collect(),
            subnets: self.subnets().collect(),
            vpcs: self.vpcs().collect(),
            nads: self.network_attachment_definitions().collect(),
        }
    }
}

fn meta_name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// Validates a whole set of manifests as the controller would before acting on it: every
/// object's own rules (see [`ferrovn_api::validate`]), references between objects (a subnet's
/// VPC and Vlan, a pool's subnet, a pod's NADs and subnets), pod annotations of every
/// interface, fixed addresses and MACs against their subnet and against each other (the first
/// pod in load order keeps a contested address), and the vhost-user volume of DPDK pods.
///
/// A default subnet that is not in the manifests (`ovn-default`, which the controller creates
/// itself) is not an error; fixed addresses on it are then checked against other pods only.
pub fn validate(manifest: &Manifest) -> Vec<ValidationError> {
    let view = manifest.view();
    let subnets: Vec<Subnet> = manifest.subnets().cloned().collect();
    let (valid, mut errors) = validate_subnets(&subnets);
    let valid_by_name: HashMap<&str, &ValidatedSubnet> =
        valid.iter().map(|v| (v.name.as_str(), v)).collect();
    let cluster_objects: HashSet<(&str, &str)> = manifest
        .objects
        .iter()
        .filter(|o| !o.object.is_namespaced())
        .map(|o| (o.object.kind(), o.object.name()))
        .collect();
    let exists = |kind: &str, name: &str| cluster_objects.contains(&(kind, name));
    let reference = |errors: &mut Vec<ValidationError>,
                     object: &ObjectRef,
                     field: &str,
                     kind: &'static str,
                     name: &str| {
        if !exists(kind, name) {
            errors.push(ValidationError::UnknownReference {
                object: object.clone(),
                field: field.to_string(),
                kind,
                name: name.to_string(),
            });
        }
    };

    for s in manifest.subnets() {
        let object = ObjectRef::cluster("Subnet", meta_name(&s.metadata));
        if s.vpc_name() != DEFAULT_VPC {
            reference(&mut errors, &object, "spec.vpc", "Vpc", s.vpc_name());
        }
        if !s.spec.vlan.is_empty() {
            reference(&mut errors, &object, "spec.vlan", "Vlan", &s.spec.vlan);
        }
    }
    for v in manifest.vpcs() {
        errors.extend(validate_vpc(v));
        if !v.spec.default_subnet.is_empty() {
            let object = ObjectRef::cluster("Vpc", meta_name(&v.metadata));
            reference(
                &mut errors,
                &object,
                "spec.defaultSubnet",
                "Subnet",
                &v.spec.default_subnet,
            );
        }
    }
    for v in manifest.vlans() {
        errors.extend(validate_vlan(v));
        if !v.provider_network().is_empty() {
            let object = ObjectRef::cluster("Vlan", meta_name(&v.metadata));
            reference(
                &mut errors,
                &object,
                "spec.provider",
                "ProviderNetwork",
                v.provider_network(),
            );
        }
    }
    for p in manifest.ip_pools() {
        let object = ObjectRef::cluster("IPPool", meta_name(&p.metadata));
        match valid_by_name.get(p.spec.subnet.as_str()) {
            Some(subnet) => errors.extend(validate_ip_pool(p, subnet)),
            None => reference(
                &mut errors,
                &object,
                "spec.subnet",
                "Subnet",
                &p.spec.subnet,
            ),
        }
    }
    for n in manifest.network_attachment_definitions() {
        if let Err(error) = n.attachment() {
            let ns = n.metadata.namespace.as_deref().unwrap_or("default");
            errors.push(ValidationError::Attachment {
                object: ObjectRef::namespaced(
                    "NetworkAttachmentDefinition",
                    ns,
                    meta_name(&n.metadata),
                ),
                error,
            });
        }
    }
    for ns in manifest.namespaces() {
        let object = ObjectRef::cluster("Namespace", meta_name(&ns.metadata));
        if let Some(ann) = &ns.metadata.annotations {
            let net = NamespaceNetwork::new(ann);
            for e in [net.cidrs().err(), net.exclude_ips().err()]
                .into_iter()
                .flatten()
            {
                errors.push(ValidationError::Annotation {
                    object: object.clone(),
                    error: e,
                });
            }
        }
    }
    let empty = Annotations::new();
    for node in manifest.nodes() {
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
        if let Err(error) = NodeNetwork::new(ann, labels).ovs_dp_type() {
            errors.push(ValidationError::Annotation {
                object: ObjectRef::cluster("Node", meta_name(&node.metadata)),
                error,
            });
        }
    }

    // Fixed addresses and MACs, per subnet: first come, first served.
    let mut taken_ips: HashMap<String, HashMap<IpAddr, String>> = HashMap::new();
    let mut taken_macs: HashMap<String, HashMap<MacAddr, String>> = HashMap::new();
    for pod in manifest.pods() {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let object = ObjectRef::namespaced("Pod", namespace, meta_name(&pod.metadata));
        let ann = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let mut providers = vec![OVN_PROVIDER.to_string()];
        match view.attachments(pod) {
            Ok(list) => {
                for a in list {
                    if let Attachment::Ovn {
                        vhost_user: Some(vhost),
                        ..
                    } = &a.attachment
                        && vhost.consumption == VhostUserConsumption::Pod
                        && !pod_has_volume(pod, &vhost.volume_name)
                    {
                        errors.push(ValidationError::VhostVolumeMissing {
                            object: object.clone(),
                            nad: format!(
                                "{}/{}",
                                a.nad.metadata.namespace.as_deref().unwrap_or("default"),
                                meta_name(&a.nad.metadata)
                            ),
                            volume: vhost.volume_name.clone(),
                        });
                    }
                    providers.push(a.attachment.provider().to_string());
                }
            }
            // A broken NAD is reported once, on the NAD itself.
            Err(list) => errors.extend(
                list.into_iter()
                    .filter(|e| !matches!(e, ValidationError::Attachment { .. })),
            ),
        }
        for provider in &providers {
            let annotation_errors = validate_pod_annotations(&object, ann, provider);
            let malformed = !annotation_errors.is_empty();
            errors.extend(annotation_errors);
            let Some((subnet_name, source)) = view.subnet_name_for(namespace, ann, provider) else {
                continue;
            };
            let net = PodNetwork::for_provider(ann, provider);
            if !exists("Subnet", &subnet_name) {
                let field = match source {
                    SubnetSource::PodAnnotation => Some(format!(
                        "metadata.annotations[{}]",
                        net.key(PodKey::LogicalSwitch)
                    )),
                    SubnetSource::NamespaceAnnotation => Some(format!(
                        "Namespace {namespace} metadata.annotations[{}]",
                        NamespaceNetwork::LOGICAL_SWITCH
                    )),
                    SubnetSource::VpcDefaultSubnet => Some("Vpc spec.defaultSubnet".to_string()),
                    _ => None,
                };
                if let Some(field) = field {
                    errors.push(ValidationError::UnknownReference {
                        object: object.clone(),
                        field,
                        kind: "Subnet",
                        name: subnet_name.clone(),
                    });
                }
            }
            if malformed {
                continue;
            }
            let ip_field = format!("metadata.annotations[{}]", net.key(PodKey::IpAddress));
            if let Ok(Some(ips)) = net.ip_address() {
                let taken = taken_ips.entry(subnet_name.clone()).or_default();
                let found = match valid_by_name.get(subnet_name.as_str()) {
                    Some(subnet) => check_static_ips(&object, &ip_field, &ips, subnet, taken),
                    None => ips
                        .addrs()
                        .filter_map(|ip| {
                            taken.get(&ip).map(|owner| ValidationError::StaticIpTaken {
                                object: object.clone(),
                                field: ip_field.clone(),
                                ip,
                                owner: owner.clone(),
                            })
                        })
                        .collect(),
                };
                if found.is_empty() {
                    for ip in ips.addrs() {
                        taken.insert(ip, object.to_string());
                    }
                }
                errors.extend(found);
            }
            if let Ok(Some(mac)) = net.mac_address() {
                let taken = taken_macs.entry(subnet_name.clone()).or_default();
                match taken.get(&mac) {
                    Some(owner) => errors.push(ValidationError::StaticMacTaken {
                        object: object.clone(),
                        field: format!("metadata.annotations[{}]", net.key(PodKey::MacAddress)),
                        mac,
                        owner: owner.clone(),
                    }),
                    None => {
                        taken.insert(mac, object.to_string());
                    }
                }
            }
        }
    }
    errors
}

fn pod_has_volume(pod: &Pod, volume: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == volume))
}
