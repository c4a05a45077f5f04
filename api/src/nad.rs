//! Secondary networks: the Multus NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`,
//! namespaced) with its CNI config parsed, and the pod annotation
//! `k8s.v1.cni.cncf.io/networks` that attaches a pod to NADs.
//!
//! A NAD whose config has `"type": "kube-ovn"` (or `"ferrovn"`) is an OVN attachment served by
//! FerrOVN; with `vhost_user_socket_volume_name` it is a DPDK vhost-user attachment. A NAD whose
//! main plugin is something else but whose `ipam.type` is ours gets only addresses from FerrOVN.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::annotations::{AnnotationError, OVN_PROVIDER};

/// The pod annotation listing a pod's secondary networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The CNI `type` Kube-OVN users write.
pub const CNI_TYPE_KUBE_OVN: &str = "kube-ovn";
/// Our own CNI `type`, accepted as a synonym.
pub const CNI_TYPE_FERROVN: &str = "ferrovn";
/// The volume name `vhost_user_socket_consumption: kubevirt` implies.
pub const KUBEVIRT_VHOST_VOLUME: &str = "vhostuser-sockets";

/// A Multus NetworkAttachmentDefinition. `spec.config` is a CNI config (or conflist) as JSON text.
#[derive(
    CustomResource, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(default)]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config: String,
}

/// The `ipam` section of a CNI config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IpamConfig {
    #[serde(rename = "type")]
    pub type_: String,
    pub provider: String,
    pub server_socket: String,
}

/// One CNI plugin config, with the keys Kube-OVN defines (unknown keys are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CniPluginConfig {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub provider: String,
    pub server_socket: String,
    pub vhost_user_socket_volume_name: String,
    pub vhost_user_socket_name: String,
    pub vhost_user_socket_consumption: String,
    pub ipam: Option<IpamConfig>,
}

impl CniPluginConfig {
    fn is_ours(type_: &str) -> bool {
        type_ == CNI_TYPE_KUBE_OVN || type_ == CNI_TYPE_FERROVN
    }
}

#[derive(Deserialize)]
struct ConfList {
    #[serde(default, rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    name: String,
    plugins: Vec<CniPluginConfig>,
}

/// How a DPDK app consumes the vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VhostUserConsumption {
    /// The pod mounts the socket volume itself.
    Pod,
    /// KubeVirt: the volume is always `vhostuser-sockets`.
    Kubevirt,
}

/// The vhost-user part of an OVN attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUser {
    /// The pod's (emptyDir) volume holding the socket.
    pub volume_name: String,
    /// The socket file name inside the volume; `None` lets the node agent choose.
    pub socket_name: Option<String>,
    pub consumption: VhostUserConsumption,
}

/// What FerrOVN does for a NAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// An OVN port on the subnet whose `spec.provider` equals `provider` (veth, or vhost-user
    /// when `vhost_user` is set).
    Ovn {
        provider: String,
        server_socket: Option<String>,
        vhost_user: Option<VhostUser>,
    },
    /// Another CNI plugin builds the interface; FerrOVN only allocates its addresses on the
    /// subnet whose `spec.provider` equals `provider`.
    IpamOnly {
        plugin_type: String,
        provider: String,
    },
}

impl Attachment {
    pub fn provider(&self) -> &str {
        match self {
            Attachment::Ovn { provider, .. } | Attachment::IpamOnly { provider, .. } => provider,
        }
    }
}

/// A NAD whose config FerrOVN cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NadError {
    #[error("NetworkAttachmentDefinition {nad}: spec.config is empty")]
    MissingConfig { nad: String },
    #[error("NetworkAttachmentDefinition {nad}: spec.config is not a CNI config: {reason}")]
    BadConfig { nad: String, reason: String },
    #[error("NetworkAttachmentDefinition {nad}: spec.config {field} = {value:?}: {reason}")]
    BadField {
        nad: String,
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl NetworkAttachmentDefinition {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// The plugin configs of `spec.config` (one for a plain config, several for a conflist).
    pub fn plugins(&self) -> Result<Vec<CniPluginConfig>, NadError> {
        let nad = self.key();
        let text = self.spec.config.trim();
        if text.is_empty() {
            return Err(NadError::MissingConfig { nad });
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| NadError::BadConfig {
                nad: nad.clone(),
                reason: e.to_string(),
            })?;
        if value.get("plugins").is_some() {
            let list: ConfList =
                serde_json::from_value(value).map_err(|e| NadError::BadConfig {
                    nad: nad.clone(),
                    reason: e.to_string(),
                })?;
            return Ok(list
                .plugins
                .into_iter()
                .map(|mut p| {
                    if p.cni_version.is_empty() {
                        p.cni_version.clone_from(&list.cni_version);
                    }
                    if p.name.is_empty() {
                        p.name.clone_from(&list.name);
                    }
                    p
                })
                .collect());
        }
        let plugin: CniPluginConfig =
            serde_json::from_value(value).map_err(|e| NadError::BadConfig {
                nad,
                reason: e.to_string(),
            })?;
        Ok(vec![plugin])
    }

    /// The attachment FerrOVN serves for this NAD, or `None` when the NAD belongs to another
    /// plugin entirely.
    pub fn attachment(&self) -> Result<Option<Attachment>, NadError> {
        let name = self.metadata.name.as_deref().unwrap_or("");
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let plugins = self.plugins()?;
        if let Some(p) = plugins.iter().find(|p| CniPluginConfig::is_ours(&p.type_)) {
            let provider = if p.provider.is_empty() {
                format!("{name}.{namespace}.{OVN_PROVIDER}")
            } else {
                p.provider.clone()
            };
            let consumption = match p.vhost_user_socket_consumption.as_str() {
                "" => VhostUserConsumption::Pod,
                "kubevirt" => VhostUserConsumption::Kubevirt,
                other => {
                    return Err(NadError::BadField {
                        nad: self.key(),
                        field: "vhost_user_socket_consumption",
                        value: other.to_string(),
                        reason: "expected empty or \"kubevirt\"".to_string(),
                    });
                }
            };
            let volume_name = match consumption {
                VhostUserConsumption::Kubevirt => KUBEVIRT_VHOST_VOLUME.to_string(),
                VhostUserConsumption::Pod => p.vhost_user_socket_volume_name.clone(),
            };
            let socket_name = Some(p.vhost_user_socket_name.clone()).filter(|s| !s.is_empty());
            if let Some(s) = &socket_name
                && (s.contains('/') || s == "." || s == "..")
            {
                return Err(NadError::BadField {
                    nad: self.key(),
                    field: "vhost_user_socket_name",
                    value: s.clone(),
                    reason: "must be a file name, not a path".to_string(),
                });
            }
            let vhost_user = if volume_name.is_empty() {
                if socket_name.is_some() {
                    return Err(NadError::BadField {
                        nad: self.key(),
                        field: "vhost_user_socket_volume_name",
                        value: String::new(),
                        reason: "vhost_user_socket_name is set but the volume holding the \
                                 socket is not"
                            .to_string(),
                    });
                }
                None
            } else {
                Some(VhostUser {
                    volume_name,
                    socket_name,
                    consumption,
                })
            };
            return Ok(Some(Attachment::Ovn {
                provider,
                server_socket: Some(p.server_socket.clone()).filter(|s| !s.is_empty()),
                vhost_user,
            }));
        }
        for p in &plugins {
            if let Some(ipam) = &p.ipam
                && CniPluginConfig::is_ours(&ipam.type_)
            {
                let provider = if ipam.provider.is_empty() {
                    format!("{name}.{namespace}")
                } else {
                    ipam.provider.clone()
                };
                return Ok(Some(Attachment::IpamOnly {
                    plugin_type: p.type_.clone(),
                    provider,
                }));
            }
        }
        Ok(None)
    }
}

/// One entry of `k8s.v1.cni.cncf.io/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkSelection {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(rename = "default-route", skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<String>,
}

impl NetworkSelection {
    /// The NAD's namespace: the one given, else the pod's.
    pub fn namespace_or<'a>(&'a self, pod_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(pod_namespace)
    }

    /// The attachment provider this selection uses when its NAD is of type kube-ovn with no
    /// explicit provider: `<name>.<namespace>.ovn`.
    pub fn default_provider(&self, pod_namespace: &str) -> String {
        format!(
            "{}.{}.{OVN_PROVIDER}",
            self.name,
            self.namespace_or(pod_namespace)
        )
    }
}

/// Parses `k8s.v1.cni.cncf.io/networks` in either of Multus's forms: a comma list of
/// `[namespace/]name[@interface]`, or a JSON list of objects
/// (`[{"name": "dpdk-net", "namespace": "default", "interface": "net1"}]`).
pub fn parse_networks(value: &str) -> Result<Vec<NetworkSelection>, AnnotationError> {
    let err = |reason: String| AnnotationError {
        key: NETWORKS_ANNOTATION.to_string(),
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        let list: Vec<NetworkSelection> = serde_json::from_str(trimmed)
            .map_err(|e| err(format!("not a JSON list of network selections: {e}")))?;
        for (i, s) in list.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(err(format!("entry {i} has no name")));
            }
        }
        return Ok(list);
    }
    let mut out = Vec::new();
    for item in trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (rest, interface) = match item.split_once('@') {
            Some((r, i)) if !i.is_empty() => (r, Some(i.to_string())),
            Some(_) => return Err(err(format!("{item:?} has an empty interface after @"))),
            None => (item, None),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, n)) if !ns.is_empty() && !n.is_empty() => (Some(ns.to_string()), n),
            Some(_) => return Err(err(format!("{item:?} is not namespace/name"))),
            None => (None, rest),
        };
        if name.is_empty() || name.contains(['/', '@', ' ']) {
            return Err(err(format!("{item:?} has no valid network name")));
        }
        out.push(NetworkSelection {
            name: name.to_string(),
            namespace,
            interface,
            ..NetworkSelection::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn nad(name: &str, ns: &str, config: &str) -> NetworkAttachmentDefinition {
        NetworkAttachmentDefinition {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: NetworkAttachmentDefinitionSpec {
                config: config.into(),
            },
        }
    }

    #[test]
    fn vhost_user_attachment() {
        let n = nad(
            "dpdk-net",
            "default",
            r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock",
               "provider":"dpdk-net.default.ovn","vhost_user_socket_volume_name":"vhostuser-sockets",
               "vhost_user_socket_name":"sock0","some_future_key":1}"#,
        );
        let a = n.attachment().unwrap().unwrap();
        assert_eq!(a.provider(), "dpdk-net.default.ovn");
        match a {
            Attachment::Ovn { vhost_user, .. } => {
                let v = vhost_user.unwrap();
                assert_eq!(v.volume_name, "vhostuser-sockets");
                assert_eq!(v.socket_name.as_deref(), Some("sock0"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn default_provider_and_kubevirt() {
        let n = nad(
            "vm-net",
            "vms",
            r#"{"type":"ferrovn","vhost_user_socket_consumption":"kubevirt"}"#,
        );
        match n.attachment().unwrap().unwrap() {
            Attachment::Ovn {
                provider,
                vhost_user: Some(v),
                ..
            } => {
                assert_eq!(provider, "vm-net.vms.ovn");
                assert_eq!(v.volume_name, KUBEVIRT_VHOST_VOLUME);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ipam_only_in_a_conflist() {
        let n = nad(
            "macvlan",
            "default",
            r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"macvlan","master":"eth0",
               "ipam":{"type":"kube-ovn","server_socket":"/run/x.sock","provider":"macvlan.default"}}]}"#,
        );
        assert_eq!(
            n.attachment().unwrap(),
            Some(Attachment::IpamOnly {
                plugin_type: "macvlan".into(),
                provider: "macvlan.default".into()
            })
        );
        let other = nad("b", "default", r#"{"type":"bridge"}"#);
        assert_eq!(other.attachment().unwrap(), None);
    }

    #[test]
    fn bad_configs_name_the_nad() {
        let e = nad("x", "ns1", "").attachment().unwrap_err();
        assert_eq!(
            e.to_string(),
            "NetworkAttachmentDefinition ns1/x: spec.config is empty"
        );
        let e = nad("x", "ns1", "{not json").attachment().unwrap_err();
        assert!(matches!(e, NadError::BadConfig { .. }), "{e}");
        let e = nad(
            "x",
            "ns1",
            r#"{"type":"kube-ovn","vhost_user_socket_name":"../s"}"#,
        )
        .attachment()
        .unwrap_err();
        assert!(e.to_string().contains("vhost_user_socket_name"), "{e}");
    }

    #[test]
    fn networks_comma_form() {
        let v = parse_networks("dpdk-net, other/sriov@net2 ,plain@eth9").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].name, "dpdk-net");
        assert_eq!(v[0].namespace_or("app"), "app");
        assert_eq!(v[1].namespace.as_deref(), Some("other"));
        assert_eq!(v[1].interface.as_deref(), Some("net2"));
        assert_eq!(v[2].default_provider("app"), "plain.app.ovn");
        assert!(parse_networks("a/@x").is_err());
        assert!(parse_networks("/a").is_err());
        assert!(parse_networks("a@").is_err());
    }

    #[test]
    fn networks_json_form() {
        let v = parse_networks(
            r#"[{"name":"dpdk-net","namespace":"default","interface":"net1","ips":["172.18.0.9"],
                 "mac":"0a:00:00:00:00:09","default-route":["172.18.0.1"],"cni-args":{"x":1}}]"#,
        )
        .unwrap();
        assert_eq!(v[0].interface.as_deref(), Some("net1"));
        assert_eq!(v[0].default_route, ["172.18.0.1"]);
        let e = parse_networks(r#"[{"namespace":"x"}]"#).unwrap_err();
        assert_eq!(e.key, NETWORKS_ANNOTATION);
        assert!(e.reason.contains("no name"), "{e}");
    }
}
