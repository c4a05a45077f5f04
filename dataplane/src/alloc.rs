//! Where the agent learns a pod's allocation (addresses, MAC, gateway, routes, QoS).
//!
//! The allocation is the set of Kube-OVN pod annotations the controller writes
//! (`<provider>.kubernetes.io/ip_address`, `mac_address`, `cidr`, `gateway`, `logical_switch`,
//! `allocated`, `routes`, `ingress_rate`, `egress_rate`). In a cluster they come from the pod
//! object; in the lab the controller writes them to files ([`FileAllocations`]). Both go through
//! the same pure parser, [`allocation_from_annotations`], whose core is the contract the
//! controller emits with ([`ferrovn_api::Allocation`]).

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ferrovn_api::MacAddr;
use ferrovn_api::allocation::Allocation;
use ferrovn_api::annotations::{AnnotationError, PodNetwork};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::plumbing::PodRoute;

/// Provider of the primary network (annotation prefix `ovn.kubernetes.io/`).
pub use ferrovn_api::annotations::OVN_PROVIDER as PRIMARY_PROVIDER;

pub use ferrovn_api::annotations::Annotations;

/// One pod interface's allocation, ready for plumbing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAllocation {
    pub provider: String,
    pub logical_switch: String,
    pub mac: MacAddr,
    /// Addresses with the subnet's prefix length.
    pub addresses: Vec<IpNet>,
    /// Default gateways (one per family), unless a `routes` entry replaces the default route.
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<PodRoute>,
    /// Mbit/s into the pod (`ingress_rate`).
    pub ingress_rate_mbps: Option<u64>,
    /// Mbit/s out of the pod (`egress_rate`).
    pub egress_rate_mbps: Option<u64>,
    /// A vhost-user attachment asked for by pod annotation instead of the NAD config
    /// (`vhost_user_socket_volume_name` / `vhost_user_socket_name`, see `dpdk::vhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<ferrovn_cni::protocol::VhostUser>,
    /// `ferrovn.io/ipv6-link-local: "true"`: keep IPv6 (link-local only) on an interface that
    /// has no IPv6 address; by default the agent turns it off there (docs/node-agent.md).
    #[serde(default)]
    pub ipv6_link_local: bool,
}

/// Pod annotation that keeps IPv6 link-local on the pod's IPv4-only interfaces.
pub const IPV6_LINK_LOCAL_ANNOTATION: &str = "ferrovn.io/ipv6-link-local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("annotation {key} missing although {allocated} is \"true\"")]
    Missing { key: String, allocated: String },
    #[error("allocation source {source_name}: {reason}")]
    Source { source_name: String, reason: String },
}

impl From<ferrovn_api::AllocationError> for AllocationError {
    fn from(e: ferrovn_api::AllocationError) -> Self {
        match e {
            ferrovn_api::AllocationError::Missing { key, allocated_key } => {
                AllocationError::Missing {
                    key,
                    allocated: allocated_key,
                }
            }
            ferrovn_api::AllocationError::Invalid(e) => e.into(),
        }
    }
}

impl From<AnnotationError> for AllocationError {
    fn from(e: AnnotationError) -> Self {
        AllocationError::Annotation {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// Parses the allocation of `provider` from pod annotations: the controller's part through the
/// shared contract ([`Allocation::parse`]), the user's (`routes`, rates, vhost-user, IPv6
/// link-local) next to it. `Ok(None)` while the controller has not allocated yet.
pub fn allocation_from_annotations(
    annotations: &Annotations,
    provider: &str,
) -> Result<Option<PodAllocation>, AllocationError> {
    let Some(contract) = Allocation::parse(annotations, provider)? else {
        return Ok(None);
    };
    let net = PodNetwork::for_provider(annotations, provider);
    let addresses = contract.addresses();
    let mut gateways: Vec<IpAddr> = contract.gateway.addrs().collect();

    let mut routes = Vec::new();
    for r in net.routes()? {
        let dst = r.dst.unwrap_or_else(|| {
            // a missing dst is the default route of the gateway's family
            match r.gw.or_else(|| addresses.first().map(IpNet::addr)) {
                Some(IpAddr::V6(_)) => IpNet::V6(ipnet::Ipv6Net::default()),
                _ => IpNet::V4(ipnet::Ipv4Net::default()),
            }
        });
        // a missing gw means the subnet gateway of that family
        let via = r.gw.or_else(|| {
            gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == dst.addr().is_ipv4())
        });
        if dst.prefix_len() == 0 {
            // an explicit default route replaces the gateway's of that family
            gateways.retain(|g| g.is_ipv4() != dst.addr().is_ipv4());
        }
        routes.push(PodRoute { dst, via });
    }

    let ipv6_link_local = match annotations
        .get(IPV6_LINK_LOCAL_ANNOTATION)
        .map(|v| v.trim())
    {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(AllocationError::Annotation {
                key: IPV6_LINK_LOCAL_ANNOTATION.to_string(),
                value: v.to_string(),
                reason: "expected \"true\" or \"false\"".to_string(),
            });
        }
    };

    Ok(Some(PodAllocation {
        provider: provider.to_string(),
        logical_switch: contract.logical_switch,
        mac: contract.mac,
        addresses,
        gateways,
        routes,
        // 0 is Kube-OVN's "no limit"
        ingress_rate_mbps: net.ingress_rate()?.filter(|r| *r > 0),
        egress_rate_mbps: net.egress_rate()?.filter(|r| *r > 0),
        vhost_user: vhost_user_from_annotations(annotations, provider)?,
        ipv6_link_local,
    }))
}

/// The volume `vhost_user_socket_consumption: kubevirt` implies (Kube-OVN's).
pub const KUBEVIRT_VHOST_VOLUME: &str = "vhostuser-sockets";

/// The pod-annotation form of a vhost-user attachment:
/// `<provider>.kubernetes.io/vhost_user_socket_volume_name`, `..._socket_name`,
/// `..._socket_consumption` (same meaning as the NAD config keys). `Ok(None)` when absent.
pub fn vhost_user_from_annotations(
    annotations: &Annotations,
    provider: &str,
) -> Result<Option<ferrovn_cni::protocol::VhostUser>, AllocationError> {
    let get = |name: &str| -> Result<Option<String>, AllocationError> {
        let key = format!("{provider}.kubernetes.io/{name}");
        match annotations.get(&key).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => {
                if name != "vhost_user_socket_consumption" && !crate::types::is_plain_name(v) {
                    return Err(AllocationError::Annotation {
                        key: key.clone(),
                        value: v.to_string(),
                        reason: "must be a plain name (no '/', not '.' or '..')".into(),
                    });
                }
                Ok(Some(v.to_string()))
            }
        }
    };
    let consumption = get("vhost_user_socket_consumption")?;
    let mut volume = get("vhost_user_socket_volume_name")?;
    let socket = get("vhost_user_socket_name")?;
    if consumption.as_deref() == Some("kubevirt") {
        volume = Some(KUBEVIRT_VHOST_VOLUME.to_string());
    }
    if volume.is_none() && socket.is_none() {
        return Ok(None);
    }
    Ok(Some(ferrovn_cni::protocol::VhostUser {
        socket_volume_name: volume,
        socket_name: socket,
        socket_consumption: consumption,
    }))
}

/// The volume holding the socket: `kubevirt` consumption forces Kube-OVN's fixed volume.
pub fn effective_volume(vu: &ferrovn_cni::protocol::VhostUser) -> Option<&str> {
    if vu.socket_consumption.as_deref() == Some("kubevirt") {
        Some(KUBEVIRT_VHOST_VOLUME)
    } else {
        vu.socket_volume_name.as_deref()
    }
}

/// Identity of the pod an allocation is looked up for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Where allocations come from. `Ok(None)` = not allocated (yet); the agent waits a bounded
/// time for it.
pub trait AllocationSource: Send + Sync + 'static {
    fn lookup(
        &self,
        pod: &PodRef,
        provider: &str,
    ) -> impl Future<Output = Result<Option<PodAllocation>, AllocationError>> + Send;

    /// Waits until `pod` has an allocation for `provider` (`Ok(Some)`) or `deadline` passes
    /// (`Ok(None)`). By default it looks every [`POLL_INTERVAL`]; a source that learns of
    /// changes (the Kubernetes watch) answers as soon as the allocation arrives.
    fn wait_for(
        &self,
        pod: &PodRef,
        provider: &str,
        deadline: std::time::Instant,
    ) -> impl Future<Output = Result<Option<PodAllocation>, AllocationError>> + Send {
        poll_until(self, pod, provider, deadline, POLL_INTERVAL)
    }
}

/// How often [`AllocationSource::wait_for`] looks by default.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// [`AllocationSource::lookup`] every `every` until found or `deadline`.
pub async fn poll_until<S: AllocationSource + ?Sized>(
    source: &S,
    pod: &PodRef,
    provider: &str,
    deadline: std::time::Instant,
    every: std::time::Duration,
) -> Result<Option<PodAllocation>, AllocationError> {
    loop {
        if let Some(a) = source.lookup(pod, provider).await? {
            return Ok(Some(a));
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// Lab allocation source: `<dir>/<namespace>/<pod>.json` holds the pod's annotations, either as
/// a flat JSON object of strings or Pod-shaped (`{"metadata":{"annotations":{...}}}`).
/// Writers should write to a temporary name and rename, so readers never see half a file.
#[derive(Debug, Clone)]
pub struct FileAllocations {
    dir: PathBuf,
}

impl FileAllocations {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileAllocations { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The file for one pod.
    pub fn path_for(&self, pod: &PodRef) -> PathBuf {
        self.dir
            .join(&pod.namespace)
            .join(format!("{}.json", pod.name))
    }
    /// Writes `annotations` for `pod` atomically (used by the lab controller and by tests).
    pub fn write(&self, pod: &PodRef, annotations: &Annotations) -> std::io::Result<()> {
        let path = self.path_for(pod);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(annotations).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }
}

/// Parses the file body: flat annotations map, Pod-shaped object, or the controller's
/// allocation record (`annotations` beside `kind` and `port_name`, docs/controller.md).
pub fn annotations_from_json(body: &[u8]) -> Result<Annotations, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let record = v.get("kind").is_some() && v.get("port_name").is_some();
    let obj = match (v.get("metadata"), v.get("annotations")) {
        (Some(meta), _) => meta
            .get("annotations")
            .cloned()
            .unwrap_or(serde_json::Value::Object(Default::default())),
        (None, Some(a)) if record => a.clone(),
        (None, _) => v,
    };
    serde_json::from_value(obj).map_err(|e| format!("annotations must be strings: {e}"))
}

impl AllocationSource for FileAllocations {
    async fn lookup(
        &self,
        pod: &PodRef,
        provider: &str,
    ) -> Result<Option<PodAllocation>, AllocationError> {
        let path = self.path_for(pod);
        let body = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AllocationError::Source {
                    source_name: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let annotations =
            annotations_from_json(&body).map_err(|reason| AllocationError::Source {
                source_name: path.display().to_string(),
                reason,
            })?;
        allocation_from_annotations(&annotations, provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Annotations {
        ann(&[
            ("ovn.kubernetes.io/allocated", "true"),
            ("ovn.kubernetes.io/ip_address", "10.16.0.5,fd00:10:16::5"),
            ("ovn.kubernetes.io/mac_address", "0a:58:0a:10:00:05"),
            ("ovn.kubernetes.io/cidr", "10.16.0.0/16,fd00:10:16::/64"),
            ("ovn.kubernetes.io/gateway", "10.16.0.1,fd00:10:16::1"),
            ("ovn.kubernetes.io/logical_switch", "ovn-default"),
        ])
    }

    #[test]
    fn dual_stack_allocation() {
        let a = allocation_from_annotations(&base(), PRIMARY_PROVIDER)
            .expect("ok")
            .expect("allocated");
        assert_eq!(
            a.addresses,
            vec![
                "10.16.0.5/16".parse::<IpNet>().expect("net"),
                "fd00:10:16::5/64".parse().expect("net")
            ]
        );
        assert_eq!(a.gateways.len(), 2);
        assert_eq!(a.logical_switch, "ovn-default");
        assert_eq!(a.mac.to_string(), "0a:58:0a:10:00:05");
        assert!(a.routes.is_empty());
        assert_eq!(a.ingress_rate_mbps, None);
    }

    #[test]
    fn not_allocated_yet_is_none() {
        let mut a = base();
        a.remove("ovn.kubernetes.io/allocated");
        assert_eq!(allocation_from_annotations(&a, PRIMARY_PROVIDER), Ok(None));
        // another provider's allocation is not ours
        assert_eq!(
            allocation_from_annotations(&base(), "net1.default.ovn"),
            Ok(None)
        );
    }

    #[test]
    fn routes_rates_and_errors() {
        let mut a = base();
        a.insert(
            "ovn.kubernetes.io/routes".into(),
            r#"[{"dst":"192.168.0.0/24","gw":"10.16.0.254"},{"dst":"172.16.0.0/16"},{"gw":"10.16.0.253"}]"#.into(),
        );
        a.insert("ovn.kubernetes.io/ingress_rate".into(), "10".into());
        a.insert("ovn.kubernetes.io/egress_rate".into(), "5".into());
        let got = allocation_from_annotations(&a, PRIMARY_PROVIDER)
            .expect("ok")
            .expect("allocated");
        assert_eq!(got.routes.len(), 3);
        assert_eq!(got.routes[1].via, Some("10.16.0.1".parse().expect("ip")));
        // the explicit default route replaced the v4 gateway, the v6 one stays
        assert_eq!(
            got.gateways,
            vec!["fd00:10:16::1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(got.ingress_rate_mbps, Some(10));
        assert_eq!(got.egress_rate_mbps, Some(5));

        let mut b = base();
        b.insert("ovn.kubernetes.io/ingress_rate".into(), "fast".into());
        let e = allocation_from_annotations(&b, PRIMARY_PROVIDER).expect_err("bad rate");
        assert!(
            e.to_string().contains("ovn.kubernetes.io/ingress_rate"),
            "{e}"
        );

        let mut c = base();
        c.insert("ovn.kubernetes.io/ip_address".into(), "10.17.0.5".into());
        let e = allocation_from_annotations(&c, PRIMARY_PROVIDER).expect_err("outside");
        assert!(e.to_string().contains("outside"), "{e}");

        let mut ll = base();
        assert!(
            !allocation_from_annotations(&ll, PRIMARY_PROVIDER)
                .expect("ok")
                .expect("allocated")
                .ipv6_link_local
        );
        ll.insert(IPV6_LINK_LOCAL_ANNOTATION.into(), "true".into());
        assert!(
            allocation_from_annotations(&ll, PRIMARY_PROVIDER)
                .expect("ok")
                .expect("allocated")
                .ipv6_link_local
        );
        ll.insert(IPV6_LINK_LOCAL_ANNOTATION.into(), "yes".into());
        let e = allocation_from_annotations(&ll, PRIMARY_PROVIDER).expect_err("bad bool");
        assert!(e.to_string().contains("ferrovn.io/ipv6-link-local"), "{e}");

        let mut d = base();
        d.remove("ovn.kubernetes.io/mac_address");
        assert!(matches!(
            allocation_from_annotations(&d, PRIMARY_PROVIDER),
            Err(AllocationError::Missing { .. })
        ));
    }

    #[test]
    fn file_body_shapes() {
        let flat = br#"{"ovn.kubernetes.io/allocated":"true"}"#;
        assert_eq!(annotations_from_json(flat).expect("flat").len(), 1);
        let pod = br#"{"metadata":{"name":"p","annotations":{"a":"b"}}}"#;
        assert_eq!(
            annotations_from_json(pod)
                .expect("pod")
                .get("a")
                .map(String::as_str),
            Some("b")
        );
        let record = br#"{"version":1,"kind":"pod","port_name":"p.ns","annotations":{"a":"b"}}"#;
        assert_eq!(annotations_from_json(record).expect("record")["a"], "b");
        assert!(annotations_from_json(br#"{"a":1}"#).is_err());
        assert!(annotations_from_json(b"nope").is_err());
    }

    #[tokio::test]
    async fn file_source_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let src = FileAllocations::new(dir.path());
        let pod = PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
        };
        assert_eq!(src.lookup(&pod, PRIMARY_PROVIDER).await, Ok(None));
        src.write(&pod, &base()).expect("write");
        let got = src
            .lookup(&pod, PRIMARY_PROVIDER)
            .await
            .expect("ok")
            .expect("some");
        assert_eq!(got.logical_switch, "ovn-default");
    }

    proptest! {
        #[test]
        fn parser_never_panics(values in proptest::collection::vec(".{0,40}", 6)) {
            let keys = ["allocated", "ip_address", "mac_address", "cidr", "gateway", "routes"];
            let mut a: Annotations = keys.iter().zip(values.iter())
                .map(|(k, v)| (format!("ovn.kubernetes.io/{k}"), v.clone()))
                .collect();
            a.insert("ovn.kubernetes.io/allocated".into(), "true".into());
            let _ = allocation_from_annotations(&a, PRIMARY_PROVIDER);
        }
    }
}
