//! Services → OVN load balancers, pure.
//!
//! One `Load_Balancer` per Service and protocol (`svc:<ns>/<name>:tcp`), holding every VIP of
//! that Service for that protocol: ClusterIPs (both families), externalIPs, LoadBalancer
//! ingress IPs and `<node address>:<nodePort>` for every node address. All of a VPC's Service
//! load balancers sit in one `Load_Balancer_Group` (`ferrovn-lbs-<vpc>`), referenced once by
//! each switch that serves Services (see [`super::plan`]). An endpoint change therefore
//! rewrites the `vips` of exactly one row; a new Service inserts one row and one weak
//! reference, and touches no switch.
//!
//! Semantics (kube-proxy's): backends are the ready endpoints of the Service's EndpointSlices
//! (`ready` unset counts as ready); only when none is ready, the serving-and-terminating ones.
//! Target ports are taken per EndpointSlice from its port of the same name and protocol, so a
//! named `targetPort` resolving to different numbers on different pods works. A VIP without
//! backends stays, with `options:reject=true`: OVN answers TCP RST / ICMP port unreachable
//! instead of dropping. `sessionAffinity: ClientIP` sets `options:affinity_timeout` to the
//! Service's `timeoutSeconds` (default 10800; OVN accepts at most 65535, larger values are
//! capped). UDP load balancers flush the conntrack entries of removed backends
//! (`options:ct_flush`), as kube-proxy does for UDP. Headless and ExternalName Services are not
//! load balanced. Hairpin (a pod reaching itself through its Service) is OVN's default
//! behaviour for switch load balancers: the hairpinned packet is SNATed to the VIP.
//!
//! Opt-in OVN health checks (`ovn.kubernetes.io/service_health_check: "true"`): one
//! `Load_Balancer_Health_Check` per VIP of the Service's plain row, and `ip_port_mappings` from
//! each backend (its pod's logical port, from `targetRef`) to its subnet's probe source.
//!
//! A long-running controller plans through a [`ServicePlanCache`]. It keeps each Service's own
//! plan and recomputes it only when that Service, its EndpointSlices, the default VPC or the
//! node addresses change. VIP ownership between Services is decided afresh on every pass, so
//! the output is exactly [`plan_services`]'s.
//!
//! `internalTrafficPolicy: Local` and `externalTrafficPolicy: Local` are strict: a VIP served
//! "locally" only ever gets the endpoints of one node, never a fallback to remote ones.
//! - A node port of node N (every address of N, its InternalIPs and join address) with
//!   `externalTrafficPolicy: Local` is a plain VIP whose backends are N's endpoints: whichever
//!   chassis the client is on, the node address names the node.
//! - ClusterIPs with `internalTrafficPolicy: Local`, and externalIPs / ingress IPs with
//!   `externalTrafficPolicy: Local`, mean "the endpoints of the node the client is on". That
//!   differs per chassis, so they go into a template load balancer (`options:template=true`,
//!   one per Service, protocol and family) whose VIP and backends are `Chassis_Template_Var`
//!   variables: each chassis' row holds that node's local endpoints (the node → chassis
//!   mapping is the Node annotation `ovn.kubernetes.io/chassis` the agent publishes). A chassis
//!   without local endpoints gets empty backends and rejects.
//! - No SNAT is involved on the switch load balancer path, so the backend sees the client's
//!   address.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use ferrovn_api::names::{lb_group_name, service_lb_name};

use super::{PlanIssue, StrMap, owned_ids};

mod health_node_port;
pub use health_node_port::{HEALTH_CHECK_LOCAL_OPTION, HEALTH_CHECK_NODE_PORT_OPTION};

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service with this label (any value) is served by another proxy, not by FerrOVN.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// An EndpointSlice of a headless Service (set by the EndpointSlice controller).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kube-OVN's Service annotation choosing the VPC whose load balancers hold the VIPs.
pub const VPC_ANNOTATION: &str = "ovn.kubernetes.io/vpc";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;
/// Set on the plain row of a Service whose node ports have `externalTrafficPolicy: Local`:
/// northd copies it to the Southbound, where the node agent's node-port steering
/// (`ferrovn-dataplane` `nodeport::LOCAL_OPTION`) reads it to keep the client's address.
/// OVN itself ignores options it does not know.
pub const NODE_PORT_LOCAL_OPTION: &str = "ferrovn_node_port_local";
/// Set on the plain row of a Service with externalIPs or LoadBalancer ingress IPs (and
/// `externalTrafficPolicy: Cluster`): those addresses, comma-separated, so a node that receives
/// a packet for one of them from outside OVN steers it in as it does a node port.
pub const EXTERNAL_IPS_OPTION: &str = "ferrovn_external_ips";

/// Kube-OVN's Service annotation for OVN's own load balancer health checks. FerrOVN probes a
/// Service's backends only when it is `"true"` (opt-in; `"false"` or absent: no probes).
pub const HEALTH_CHECK_ANNOTATION: &str = "ovn.kubernetes.io/service_health_check";
/// Tuning of those health checks: `interval=5,timeout=20,success_count=3,failure_count=3`
/// (any subset, seconds and counts, each 1..=3600). Unset keys keep OVN's defaults above.
pub const HEALTH_CHECK_OPTIONS_ANNOTATION: &str = "ferrovn.io/health-check-options";
/// The health check options, with OVN's defaults (ovn-northd uses the same when unset).
const HEALTH_CHECK_DEFAULTS: [(&str, u32); 4] = [
    ("interval", 5),
    ("timeout", 20),
    ("success_count", 3),
    ("failure_count", 3),
];

/// The largest `options:affinity_timeout` OVN accepts (ovn-nb(5)).
pub const MAX_OVN_AFFINITY_TIMEOUT: i32 = 65535;

/// Services and their EndpointSlices, as read from the source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceInputs {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Node name → its OVN chassis name (the Node annotation `ovn.kubernetes.io/chassis`):
    /// where a `Local` traffic policy's per-node backends are installed.
    pub node_chassis: BTreeMap<String, String>,
}

/// A node as Services see it: the addresses its node ports listen on (InternalIPs and its
/// join address).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceNode {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// The Service rows of a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePlan {
    /// Load balancer groups by name.
    pub groups: BTreeMap<String, PlannedLbGroup>,
    /// `Chassis_Template_Var` rows by chassis: one for every chassis of `node_chassis`, its
    /// variables empty while no Service uses a `Local` traffic policy (see `keep_chassis_rows`).
    pub chassis_vars: BTreeMap<String, PlannedChassisVars>,
}

/// A Chassis_Template_Var row: the template variables of one chassis.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChassisVars {
    pub chassis: String,
    pub variables: StrMap,
    pub external_ids: StrMap,
}

/// Which of a Service's load balancers (per protocol) a VIP lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbSlot {
    /// The plain load balancer `svc:<ns>/<name>:<proto>`.
    Plain,
    /// The template load balancer of chassis-local IPv4 VIPs, `…:<proto>:local4`.
    Local4,
    /// The same for IPv6, `…:<proto>:local6`.
    Local6,
}

pub use super::protocol::Protocol;

/// `ip:port`, IPv6 in brackets, as OVN's `vips` keys and values are written.
pub fn ip_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A Load_Balancer row.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLoadBalancer {
    pub name: String,
    pub protocol: Protocol,
    /// `ip:port` → comma-separated `ip:port` backends (sorted), `""` when there are none.
    pub vips: StrMap,
    pub options: StrMap,
    pub external_ids: StrMap,
    /// `ip_port_mappings`: backend address → `<logical port>:<probe source>` (IPv6 in
    /// brackets), for the backends OVN health-checks.
    pub ip_port_mappings: StrMap,
    /// The `Load_Balancer_Health_Check` rows of this load balancer, by VIP key (`ip:port`).
    pub health_checks: BTreeMap<String, PlannedHealthCheck>,
}

/// A Load_Balancer_Health_Check row: OVN probes the backends of `vip` (a `vips` key) that
/// have an `ip_port_mappings` entry, and uses only those that answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedHealthCheck {
    pub vip: String,
    pub options: StrMap,
    pub external_ids: StrMap,
}

/// The probe source address of a subnet: its last usable address (IPv4: the one before the
/// broadcast address; IPv6: the last one). OVN answers ARP / ND for it with its service
/// monitor MAC, so it must be on the backends' link and never a pod's. Fixed, so it never moves
/// between passes; the IPAM hands out addresses lowest first, and the planner skips a subnet
/// where a pod or the gateway holds it anyway. `None` for nets too small to spare one (IPv4
/// /31, /32; IPv6 /127, /128).
pub fn health_check_source(net: ipnet::IpNet) -> Option<IpAddr> {
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() <= 30 => Some(IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(n.broadcast()) - 1,
        ))),
        ipnet::IpNet::V6(n) if n.prefix_len() <= 126 => Some(IpAddr::V6(n.broadcast())),
        _ => None,
    }
}

/// A Load_Balancer_Group row and the load balancers it holds (by identity).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLbGroup {
    pub name: String,
    pub load_balancers: BTreeMap<String, PlannedLoadBalancer>,
}

/// The `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One VIP of a Service port and where its backends come from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vip {
    ip: IpAddr,
    port: u16,
    /// The Service port it serves (backends are resolved through its name and protocol).
    service_port: usize,
    scope: Scope,
}

/// Which endpoints serve a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// All of them.
    Cluster,
    /// Those on this node (a node port with `externalTrafficPolicy: Local`).
    Node(String),
    /// Those on the client's node (a template VIP).
    ClientNode,
}

/// A Service after validation: what the planner needs, nothing else.
#[derive(Debug, Clone, PartialEq)]
struct ValidService {
    id: ServiceRef,
    vpc: String,
    ports: Vec<ValidPort>,
    vips: Vec<Vip>,
    affinity_timeout: Option<i32>,
    /// externalIPs and LoadBalancer ingress IPs (every port's VIPs on them are in `vips`).
    external_ips: BTreeSet<IpAddr>,
    /// `Some(options)` when the Service asked for OVN health checks.
    health: Option<StrMap>,
}

#[derive(Debug, Clone, PartialEq)]
struct ValidPort {
    name: String,
    protocol: Protocol,
}

fn invalid(id: &ServiceRef, field: impl Into<String>, reason: impl Into<String>) -> PlanIssue {
    PlanIssue::ServiceInvalid {
        service: id.to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Checks a Service and collects its VIPs. `None` (with issues) for a Service left out;
/// `Some` with no VIPs for one that needs no load balancer (headless, ExternalName).
fn validate(
    svc: &Service,
    default_vpc: &str,
    nodes: &[ServiceNode],
    issues: &mut Vec<PlanIssue>,
) -> Option<ValidService> {
    let id = service_ref(svc);
    let spec = svc.spec.as_ref()?;
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        type_,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        issues.push(invalid(&id, "spec.type", format!("unknown type {type_:?}")));
        return None;
    }
    let vpc = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VPC_ANNOTATION))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| default_vpc.to_string());
    let mut out = ValidService {
        id: id.clone(),
        vpc,
        ports: Vec::new(),
        vips: Vec::new(),
        affinity_timeout: None,
        external_ips: BTreeSet::new(),
        health: None,
    };
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => v.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    let headless = cluster_ips.contains(&"None");
    if type_ == "ExternalName" || headless {
        return Some(out);
    }

    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let mut seen_ports = BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            issues.push(invalid(
                &id,
                format!("spec.ports[{i}].protocol"),
                format!(
                    "{:?} is not TCP, UDP or SCTP",
                    p.protocol.as_deref().unwrap_or("")
                ),
            ));
            return None;
        };
        let Ok(port) = u16::try_from(p.port)
            .map_err(drop)
            .and_then(|v| if v == 0 { Err(()) } else { Ok(v) })
        else {
            issues.push(invalid(
                &id,
                format!("spec.ports[{i}].port"),
                format!("{} is not in 1..65535", p.port),
            ));
            return None;
        };
        if !seen_ports.insert((port, protocol)) {
            issues.push(invalid(
                &id,
                format!("spec.ports[{i}]"),
                format!("port {port}/{} is listed twice", protocol.ovn()),
            ));
            return None;
        }
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => match u16::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    issues.push(invalid(
                        &id,
                        format!("spec.ports[{i}].nodePort"),
                        format!("{n} is not in 1..65535"),
                    ));
                    return None;
                }
            },
        };
        out.ports.push(ValidPort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
        });
        let mut push = |ip: IpAddr, port: u16, scope: Scope| {
            out.vips.push(Vip {
                ip,
                port,
                service_port: i,
                scope,
            })
        };
        for (k, ip) in cluster_ips.iter().enumerate() {
            if ip.is_empty() {
                continue;
            }
            let Some(ip) = parse_ip(ip) else {
                issues.push(invalid(
                    &id,
                    format!("spec.clusterIPs[{k}]"),
                    format!("{ip:?} is not an IP address"),
                ));
                return None;
            };
            push(
                ip,
                port,
                if internal_local {
                    Scope::ClientNode
                } else {
                    Scope::Cluster
                },
            );
        }
        let mut external = Vec::new();
        for (k, ip) in spec.external_ips.iter().flatten().enumerate() {
            let Some(ip) = parse_ip(ip) else {
                issues.push(invalid(
                    &id,
                    format!("spec.externalIPs[{k}]"),
                    format!("{ip:?} is not an IP address"),
                ));
                return None;
            };
            external.push(ip);
        }
        if type_ == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref());
            for (k, ing) in ingress.into_iter().flatten().enumerate() {
                let Some(text) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
                    continue; // a hostname ingress: nothing for OVN to match
                };
                let Some(ip) = parse_ip(text) else {
                    issues.push(invalid(
                        &id,
                        format!("status.loadBalancer.ingress[{k}].ip"),
                        format!("{text:?} is not an IP address"),
                    ));
                    return None;
                };
                external.push(ip);
            }
        }
        out.external_ips.extend(external.iter().copied());
        for ip in external {
            push(
                ip,
                port,
                if external_local {
                    Scope::ClientNode
                } else {
                    Scope::Cluster
                },
            );
        }
        if matches!(type_, "NodePort" | "LoadBalancer")
            && let Some(np) = node_port
        {
            for node in nodes {
                for ip in &node.ips {
                    let scope = if external_local {
                        Scope::Node(node.name.clone())
                    } else {
                        Scope::Cluster
                    };
                    push(*ip, np, scope);
                }
            }
        }
    }

    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
        if !(1..=86400).contains(&t) {
            issues.push(invalid(
                &id,
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{t} is not in 1..86400"),
            ));
            return None;
        }
        out.affinity_timeout = Some(t.min(MAX_OVN_AFFINITY_TIMEOUT));
    }
    out.health = health_options(svc, &id, issues).ok()?;
    Some(out)
}

/// The Service's health check options: `Ok(None)` without the opt-in, `Err` (issue reported)
/// for an annotation that does not parse.
fn health_options(
    svc: &Service,
    id: &ServiceRef,
    issues: &mut Vec<PlanIssue>,
) -> Result<Option<StrMap>, ()> {
    let annotations = svc.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    match get(HEALTH_CHECK_ANNOTATION) {
        None | Some("false") => return Ok(None),
        Some("true") => {}
        Some(other) => {
            issues.push(invalid(
                id,
                format!("metadata.annotations[{HEALTH_CHECK_ANNOTATION:?}]"),
                format!("{other:?} is not \"true\" or \"false\""),
            ));
            return Err(());
        }
    }
    let mut options: StrMap = HEALTH_CHECK_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.to_string()))
        .collect();
    let field = format!("metadata.annotations[{HEALTH_CHECK_OPTIONS_ANNOTATION:?}]");
    for item in get(HEALTH_CHECK_OPTIONS_ANNOTATION)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let parsed = item.split_once('=').and_then(|(k, v)| {
            let k = k.trim();
            let known = HEALTH_CHECK_DEFAULTS.iter().any(|(d, _)| *d == k);
            let v: u32 = v.trim().parse().ok().filter(|v| (1..=3600).contains(v))?;
            known.then(|| (k.to_string(), v.to_string()))
        });
        let Some((k, v)) = parsed else {
            issues.push(invalid(
                id,
                field.clone(),
                format!("{item:?} is not <interval|timeout|success_count|failure_count>=<1..3600>"),
            ));
            return Err(());
        };
        options.insert(k, v);
    }
    Ok(Some(options))
}

/// `(ip, target port)` backends.
type Backends = BTreeSet<(IpAddr, u16)>;

/// One endpoint address of one Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: IpAddr,
    port: u16,
    node: Option<String>,
    /// The logical switch port of the endpoint's pod (`targetRef`), for health checks.
    lsp: Option<String>,
    /// Ready (`true`), or serving and terminating (`false`); others are never collected.
    ready: bool,
}

/// The endpoints of one Service port from the Service's EndpointSlices.
fn endpoints(
    svc: &ValidService,
    port: &ValidPort,
    slices: &[&EndpointSlice],
    issues: &mut Vec<PlanIssue>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices carry no addresses OVN can use
        }
        let slice_port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port.name
                && Protocol::parse(p.protocol.as_deref()) == Some(port.protocol)
        });
        let Some(target) = slice_port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            if !(is_ready || (is_serving && is_terminating)) {
                continue;
            }
            for a in &ep.addresses {
                let Some(ip) = parse_ip(a) else {
                    issues.push(PlanIssue::EndpointAddressInvalid {
                        service: svc.id.to_string(),
                        slice: slice.metadata.name.clone().unwrap_or_default(),
                        address: a.clone(),
                    });
                    continue;
                };
                if ip.is_ipv4() != (slice.address_type == "IPv4") {
                    continue;
                }
                out.push(Endpoint {
                    ip,
                    port: target,
                    node: ep.node_name.clone().filter(|n| !n.is_empty()),
                    lsp: ep
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                        .and_then(|r| {
                            let name = r.name.as_deref().filter(|n| !n.is_empty())?;
                            let ns = r.namespace.as_deref().unwrap_or(&svc.id.namespace);
                            Some(ferrovn_api::names::lsp_name(name, ns, ""))
                        }),
                    ready: is_ready,
                });
            }
        }
    }
    out
}

/// kube-proxy's choice among `eps` of one family: the ready ones, or when there are none, the
/// serving-and-terminating ones. `on_node` restricts both to one node's endpoints first, so a
/// `Local` policy never falls back to a remote endpoint.
fn pick(eps: &[Endpoint], v4: bool, on_node: Option<&str>) -> Backends {
    let candidates = || {
        eps.iter()
            .filter(move |e| e.ip.is_ipv4() == v4)
            .filter(move |e| on_node.is_none_or(|n| e.node.as_deref() == Some(n)))
    };
    let ready: Backends = candidates()
        .filter(|e| e.ready)
        .map(|e| (e.ip, e.port))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates().map(|e| (e.ip, e.port)).collect()
}

fn backends_value(b: &Backends) -> String {
    b.iter()
        .map(|(ip, p)| ip_port(*ip, *p))
        .collect::<Vec<_>>()
        .join(",")
}

/// What one Service plans to on its own, before VIPs are claimed against other Services.
/// Depends only on the Service, its EndpointSlices, the default VPC and the nodes, which is
/// what makes it cacheable ([`ServicePlanCache`]).
#[derive(Debug, Clone, PartialEq)]
struct SoloPlan {
    /// `None`: the Service is left out (`validate_issues` say why).
    service: Option<SoloService>,
    validate_issues: Vec<PlanIssue>,
}

/// One VIP as planned: what it claims, and what it writes where.
#[derive(Debug, Clone, PartialEq)]
struct SoloVip {
    protocol: Protocol,
    /// `ip:port`: one owner per VPC, protocol and claim.
    claim: String,
    slot: LbSlot,
    /// The `vips` key and value (template variables for a chassis-local VIP).
    key: String,
    value: String,
    /// Chassis → (variable, value) for a chassis-local VIP.
    vars: Vec<(String, String, String)>,
    /// The health check of this VIP (its options), when the Service asked for one.
    health: Option<StrMap>,
    /// `ip_port_mappings` entries of its probed backends.
    mappings: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct SoloService {
    id: ServiceRef,
    vpc: String,
    /// In the Service's order.
    vips: Vec<SoloVip>,
    backend_issues: Vec<PlanIssue>,
    /// The load balancer of each protocol and slot with VIPs, its `vips` still empty.
    lbs: BTreeMap<(Protocol, LbSlot), PlannedLoadBalancer>,
}

/// A template variable name for `what` of Service `id`: stable across passes (the NB diff of an
/// unchanged Service stays empty) and a valid OVN lexer identifier.
fn var_name(id: &ServiceRef, what: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.to_string().bytes().chain([0]).chain(what.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fvn{h:016x}")
}

/// `ip_port_mappings` entries for `backends`: those with a pod port and a subnet probe
/// source (the first of `sources` whose net holds the address).
fn probe_mappings(
    backends: &Backends,
    eps: &[Endpoint],
    sources: &[(ipnet::IpNet, IpAddr)],
) -> Vec<(String, String)> {
    let bracket = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let mut out: Vec<(String, String)> = backends
        .iter()
        .filter_map(|(ip, _)| {
            let lsp = eps.iter().find(|e| e.ip == *ip)?.lsp.as_ref()?;
            let (_, src) = sources.iter().find(|(n, _)| n.contains(ip))?;
            Some((bracket(*ip), format!("{lsp}:{}", bracket(*src))))
        })
        .collect();
    out.dedup();
    out
}

fn plan_one(
    svc: &Service,
    own_slices: &[&EndpointSlice],
    default_vpc: &str,
    nodes: &[ServiceNode],
    node_chassis: &BTreeMap<String, String>,
    sources: &[(ipnet::IpNet, IpAddr)],
) -> SoloPlan {
    let mut validate_issues = Vec::new();
    let Some(v) = validate(svc, default_vpc, nodes, &mut validate_issues) else {
        return SoloPlan {
            service: None,
            validate_issues,
        };
    };
    let mut backend_issues = Vec::new();
    let mut vips = Vec::with_capacity(v.vips.len());
    let mut lbs = BTreeMap::new();
    if !v.vips.is_empty() {
        let port_eps: Vec<Vec<Endpoint>> = v
            .ports
            .iter()
            .map(|p| endpoints(&v, p, own_slices, &mut backend_issues))
            .collect();
        // Every chassis gets every variable (a chassis without the variable would read it
        // as a literal and lose the VIP); its own nodes' endpoints are its local ones.
        let mut chassis_nodes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (node, chassis) in node_chassis {
            chassis_nodes
                .entry(chassis.as_str())
                .or_default()
                .push(node.as_str());
        }
        for vip in &v.vips {
            let protocol = v.ports[vip.service_port].protocol;
            let eps = &port_eps[vip.service_port];
            let v4 = vip.ip.is_ipv4();
            let claim = ip_port(vip.ip, vip.port);
            let solo = match &vip.scope {
                Scope::Cluster | Scope::Node(_) => {
                    let node = match &vip.scope {
                        Scope::Node(n) => Some(n.as_str()),
                        _ => None,
                    };
                    let backends = pick(eps, v4, node);
                    // OVN has no SCTP health checks (ovn-northd skips them).
                    let health = v.health.clone().filter(|_| protocol != Protocol::Sctp);
                    let mappings = if health.is_some() {
                        probe_mappings(&backends, eps, sources)
                    } else {
                        Vec::new()
                    };
                    SoloVip {
                        protocol,
                        claim: claim.clone(),
                        slot: LbSlot::Plain,
                        key: claim,
                        value: backends_value(&backends),
                        vars: Vec::new(),
                        health,
                        mappings,
                    }
                }
                Scope::ClientNode => {
                    let vip_var = var_name(&v.id, &format!("vip/{}", vip.ip));
                    let ep_var = var_name(&v.id, &format!("ep/{}/{claim}", protocol.ovn()));
                    let vip_text = match vip.ip {
                        IpAddr::V4(a) => a.to_string(),
                        IpAddr::V6(a) => format!("[{a}]"),
                    };
                    let mut vars = Vec::new();
                    for (chassis, its_nodes) in &chassis_nodes {
                        let mut local = Backends::new();
                        for n in its_nodes {
                            local.extend(pick(eps, v4, Some(n)));
                        }
                        vars.push((chassis.to_string(), vip_var.clone(), vip_text.clone()));
                        vars.push((chassis.to_string(), ep_var.clone(), backends_value(&local)));
                    }
                    SoloVip {
                        protocol,
                        claim,
                        slot: if v4 { LbSlot::Local4 } else { LbSlot::Local6 },
                        key: format!("^{vip_var}:{}", vip.port),
                        value: format!("^{ep_var}"),
                        vars,
                        // Template VIPs name no backend OVN could map to a port.
                        health: None,
                        mappings: Vec::new(),
                    }
                }
            };
            lbs.entry((protocol, solo.slot))
                .or_insert_with(|| new_lb(&v, protocol, solo.slot));
            vips.push(solo);
        }
        if let Some(options) = health_node_port::options(svc, &port_eps, nodes) {
            for ((_, slot), lb) in &mut lbs {
                if *slot == LbSlot::Plain {
                    lb.options.extend(options.iter().cloned());
                }
            }
        }
    }
    SoloPlan {
        service: Some(SoloService {
            id: v.id,
            vpc: v.vpc,
            vips,
            backend_issues,
            lbs,
        }),
        validate_issues,
    }
}

/// The identity of a Service as the planner sees it.
fn service_ref(svc: &Service) -> ServiceRef {
    ServiceRef {
        namespace: svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: svc.metadata.name.clone().unwrap_or_default(),
    }
}

/// Services in planning order and each one's EndpointSlices, without what kube-proxy leaves
/// alone: a Service labelled [`SERVICE_PROXY_NAME_LABEL`] (another proxy serves it) and
/// EndpointSlices labelled [`HEADLESS_LABEL`] (the EndpointSlice controller's mark of a headless
/// Service's slices; the upstream conformance suite turns a Service headless and expects it
/// gone).
fn sorted_inputs(inputs: &ServiceInputs) -> Vec<(&Service, Vec<&EndpointSlice>)> {
    let has = |labels: &Option<BTreeMap<String, String>>, key: &str| {
        labels.as_ref().is_some_and(|l| l.contains_key(key))
    };
    let mut services: Vec<&Service> = inputs
        .services
        .iter()
        .filter(|s| !has(&s.metadata.labels, SERVICE_PROXY_NAME_LABEL))
        .collect();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in &inputs.endpoint_slices {
        if has(&s.metadata.labels, HEADLESS_LABEL) {
            continue;
        }
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
    for v in slices.values_mut() {
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    services
        .into_iter()
        .map(|svc| {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let own = slices.get(&(ns, name)).cloned().unwrap_or_default();
            (svc, own)
        })
        .collect()
}

fn sorted_nodes(nodes: &[ServiceNode]) -> Vec<ServiceNode> {
    let mut nodes: Vec<ServiceNode> = nodes
        .iter()
        .map(|n| {
            let mut ips = n.ips.clone();
            ips.sort();
            ips.dedup();
            ServiceNode {
                name: n.name.clone(),
                ips,
            }
        })
        .collect();
    nodes.sort();
    // An address listed by two nodes serves the first one's node ports only.
    let mut seen = HashSet::new();
    for n in &mut nodes {
        n.ips.retain(|ip| seen.insert(*ip));
    }
    nodes
}

/// The Service load balancers, grouped per VPC, and the template variables of chassis-local
/// VIPs. `default_vpc` holds Services without a `ovn.kubernetes.io/vpc` annotation; `nodes`
/// carry the addresses a NodePort listens on. Pure: the same inputs in any order give the
/// same rows.
pub fn plan_services(
    inputs: &ServiceInputs,
    default_vpc: &str,
    nodes: &[ServiceNode],
    issues: &mut Vec<PlanIssue>,
) -> ServicePlan {
    plan_services_probed(inputs, default_vpc, nodes, &[], issues)
}

/// [`plan_services`] with the health-check probe source of each subnet (`(net, source)`,
/// see [`health_check_source`]): Services that opted in get `Load_Balancer_Health_Check`
/// rows and `ip_port_mappings` for their backends inside those nets.
pub fn plan_services_probed(
    inputs: &ServiceInputs,
    default_vpc: &str,
    nodes: &[ServiceNode],
    sources: &[(ipnet::IpNet, IpAddr)],
    issues: &mut Vec<PlanIssue>,
) -> ServicePlan {
    let nodes = sorted_nodes(nodes);
    let solos: Vec<SoloPlan> = sorted_inputs(inputs)
        .iter()
        .map(|(svc, own)| plan_one(svc, own, default_vpc, &nodes, &inputs.node_chassis, sources))
        .collect();
    let mut out = merge(solos.iter(), issues);
    keep_chassis_rows(&mut out, &inputs.node_chassis);
    out
}

/// Every chassis keeps its `Chassis_Template_Var` row, with no variables while no Service
/// needs one: the row is only ever updated, never deleted and inserted again. ovn-controller
/// (OVN 25.03 `template_vars_update`) keeps its chassis' variables after the row is deleted and
/// asserts when a new row for the chassis appears later (`smap_count(local_templates) == 0`):
/// the last `Local` Service going and the next one coming killed ovn-controller on every node
/// in the upstream e2e run (docs/conformance.md).
fn keep_chassis_rows(plan: &mut ServicePlan, node_chassis: &BTreeMap<String, String>) {
    for chassis in node_chassis.values() {
        plan.chassis_vars
            .entry(chassis.clone())
            .or_insert_with(|| PlannedChassisVars {
                chassis: chassis.clone(),
                variables: StrMap::new(),
                external_ids: owned_ids(&format!("ctv/{chassis}"), &[]),
            });
    }
}

/// Every Service's own plan, kept between passes: a pass re-plans only the Services whose
/// inputs (the Service, its EndpointSlices, the default VPC, the nodes and their chassis)
/// changed, so an endpoint change costs one Service's planning instead of all of them. The
/// output is exactly [`plan_services`]'s; the cache is only an optimisation.
#[derive(Debug, Clone, Default)]
pub struct ServicePlanCache {
    /// The default VPC, nodes and chassis the entries were planned with.
    context: Option<CacheContext>,
    /// By identity and occurrence (a Service defined twice has two entries).
    entries: HashMap<(ServiceRef, usize), CacheEntry>,
    /// Services planned afresh by the last pass (for tests and benchmarks).
    last_misses: usize,
}

type CacheContext = (
    String,
    Vec<ServiceNode>,
    BTreeMap<String, String>,
    Vec<(ipnet::IpNet, IpAddr)>,
);

#[derive(Debug, Clone)]
struct CacheEntry {
    service: Service,
    slices: Vec<EndpointSlice>,
    plan: SoloPlan,
}

impl ServicePlanCache {
    pub fn new() -> ServicePlanCache {
        ServicePlanCache::default()
    }

    /// How many Services the last pass planned afresh.
    pub fn last_misses(&self) -> usize {
        self.last_misses
    }

    /// Services held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// [`plan_services`] through `cache`: the same result, with unchanged Services taken from the
/// cache.
pub fn plan_services_cached(
    cache: &mut ServicePlanCache,
    inputs: &ServiceInputs,
    default_vpc: &str,
    nodes: &[ServiceNode],
    issues: &mut Vec<PlanIssue>,
) -> ServicePlan {
    plan_services_cached_probed(cache, inputs, default_vpc, nodes, &[], issues)
}

/// [`plan_services_probed`] through `cache`.
pub fn plan_services_cached_probed(
    cache: &mut ServicePlanCache,
    inputs: &ServiceInputs,
    default_vpc: &str,
    nodes: &[ServiceNode],
    sources: &[(ipnet::IpNet, IpAddr)],
    issues: &mut Vec<PlanIssue>,
) -> ServicePlan {
    let nodes = sorted_nodes(nodes);
    // NodePort VIPs, Local backends, probe sources and unannotated Services depend on these:
    // a change re-plans everything (nodes change rarely; endpoints change all the time).
    let context_same = cache.context.as_ref().is_some_and(|(vpc, n, ch, src)| {
        vpc == default_vpc && *n == nodes && *ch == inputs.node_chassis && src == sources
    });
    if !context_same {
        cache.entries.clear();
        cache.context = Some((
            default_vpc.to_string(),
            nodes.clone(),
            inputs.node_chassis.clone(),
            sources.to_vec(),
        ));
    }
    let sorted = sorted_inputs(inputs);
    let mut occurrences: HashMap<ServiceRef, usize> = HashMap::new();
    let mut keys = Vec::with_capacity(sorted.len());
    let mut misses = 0;
    for (svc, own) in &sorted {
        let id = service_ref(svc);
        let n = occurrences.entry(id.clone()).or_insert(0);
        let key = (id, *n);
        *n += 1;
        let fresh = cache.entries.get(&key).is_some_and(|e| {
            e.service == **svc
                && e.slices.len() == own.len()
                && e.slices.iter().zip(own).all(|(a, b)| a == *b)
        });
        if !fresh {
            misses += 1;
            cache.entries.insert(
                key.clone(),
                CacheEntry {
                    service: (*svc).clone(),
                    slices: own.iter().map(|s| (*s).clone()).collect(),
                    plan: plan_one(svc, own, default_vpc, &nodes, &inputs.node_chassis, sources),
                },
            );
        }
        keys.push(key);
    }
    // Deleted Services leave the cache.
    if cache.entries.len() > keys.len() {
        let live: HashSet<&(ServiceRef, usize)> = keys.iter().collect();
        cache.entries.retain(|k, _| live.contains(k));
    }
    cache.last_misses = misses;
    let entries = &cache.entries;
    let mut out = merge(
        keys.iter().filter_map(|k| entries.get(k).map(|e| &e.plan)),
        issues,
    );
    keep_chassis_rows(&mut out, &inputs.node_chassis);
    out
}

/// Claims VIPs (one VIP, one owner: the first Service in planning order), groups the load
/// balancers per VPC and gathers the template variables per chassis.
fn merge<'a>(
    solos: impl Iterator<Item = &'a SoloPlan>,
    issues: &mut Vec<PlanIssue>,
) -> ServicePlan {
    let mut groups: BTreeMap<String, PlannedLbGroup> = BTreeMap::new();
    let mut chassis_vars: BTreeMap<String, StrMap> = BTreeMap::new();
    // (vpc, protocol, vip) → the Service holding it.
    let mut claimed: HashMap<(&str, Protocol, &str), &ServiceRef> = HashMap::new();
    let mut seen = HashSet::new();
    for solo in solos {
        issues.extend(solo.validate_issues.iter().cloned());
        let Some(v) = &solo.service else {
            continue;
        };
        if !seen.insert(&v.id) {
            issues.push(PlanIssue::ServiceInvalid {
                service: v.id.to_string(),
                field: "metadata.name".into(),
                reason: "defined twice".into(),
            });
            continue;
        }
        if v.vips.is_empty() {
            continue;
        }
        issues.extend(v.backend_issues.iter().cloned());
        let mut lbs: BTreeMap<(Protocol, LbSlot), PlannedLoadBalancer> = BTreeMap::new();
        for vip in &v.vips {
            let claim = (v.vpc.as_str(), vip.protocol, vip.claim.as_str());
            if let Some(holder) = claimed.get(&claim) {
                if **holder != v.id {
                    issues.push(PlanIssue::ServiceVipTaken {
                        service: v.id.to_string(),
                        vip: format!("{}/{}", vip.claim, vip.protocol.ovn()),
                        holder: holder.to_string(),
                    });
                }
                continue;
            }
            claimed.insert(claim, &v.id);
            let Some(template) = v.lbs.get(&(vip.protocol, vip.slot)) else {
                continue;
            };
            let lb = lbs
                .entry((vip.protocol, vip.slot))
                .or_insert_with(|| template.clone());
            lb.vips.insert(vip.key.clone(), vip.value.clone());
            if let Some(options) = &vip.health {
                let lb_key = lb
                    .external_ids
                    .get(super::ROW_KEY)
                    .cloned()
                    .unwrap_or_default();
                let key = format!("hc/{}/{}", lb_key.trim_start_matches("lb/"), vip.key);
                lb.health_checks.insert(
                    vip.key.clone(),
                    PlannedHealthCheck {
                        vip: vip.key.clone(),
                        options: options.clone(),
                        external_ids: owned_ids(&key, &[("service", &v.id.to_string())]),
                    },
                );
            }
            for (ip, mapping) in &vip.mappings {
                lb.ip_port_mappings.insert(ip.clone(), mapping.clone());
            }
            for (chassis, var, value) in &vip.vars {
                chassis_vars
                    .entry(chassis.clone())
                    .or_default()
                    .insert(var.clone(), value.clone());
            }
        }
        let group = groups
            .entry(lb_group_name(&v.vpc))
            .or_insert_with(|| PlannedLbGroup {
                name: lb_group_name(&v.vpc),
                load_balancers: BTreeMap::new(),
            });
        for lb in lbs.into_values() {
            let key = lb
                .external_ids
                .get(super::ROW_KEY)
                .cloned()
                .unwrap_or_default();
            group.load_balancers.insert(key, lb);
        }
    }
    ServicePlan {
        groups,
        chassis_vars: chassis_vars
            .into_iter()
            .map(|(chassis, variables)| {
                let row = PlannedChassisVars {
                    external_ids: owned_ids(&format!("ctv/{chassis}"), &[]),
                    chassis: chassis.clone(),
                    variables,
                };
                (chassis, row)
            })
            .collect(),
    }
}

fn new_lb(v: &ValidService, protocol: Protocol, slot: LbSlot) -> PlannedLoadBalancer {
    let mut options = StrMap::new();
    options.insert("reject".into(), "true".into());
    if let Some(t) = v.affinity_timeout {
        options.insert("affinity_timeout".into(), t.to_string());
    }
    if protocol == Protocol::Udp {
        options.insert("ct_flush".into(), "true".into());
    }
    if slot == LbSlot::Plain && v.vips.iter().any(|vip| matches!(vip.scope, Scope::Node(_))) {
        options.insert(NODE_PORT_LOCAL_OPTION.into(), "true".into());
    }
    // the nodes steer these into OVN when they arrive from outside or from the host
    // (dataplane nodeport); with externalTrafficPolicy: Local they are template VIPs, listed
    // on the template row, which each node expands with its own chassis' variables
    let external: Vec<String> = v
        .external_ips
        .iter()
        .filter(|ip| {
            let (scope, family_ok) = match slot {
                LbSlot::Plain => (Scope::Cluster, true),
                LbSlot::Local4 => (Scope::ClientNode, ip.is_ipv4()),
                LbSlot::Local6 => (Scope::ClientNode, ip.is_ipv6()),
            };
            family_ok
                && v.vips
                    .iter()
                    .any(|vip| vip.ip == **ip && vip.scope == scope)
        })
        .map(ToString::to_string)
        .collect();
    if !external.is_empty() {
        options.insert(EXTERNAL_IPS_OPTION.into(), external.join(","));
    }
    let suffix = match slot {
        LbSlot::Plain => "",
        LbSlot::Local4 => ":local4",
        LbSlot::Local6 => ":local6",
    };
    if slot != LbSlot::Plain {
        options.insert("template".into(), "true".into());
        let family = if slot == LbSlot::Local4 {
            "ipv4"
        } else {
            "ipv6"
        };
        options.insert("address-family".into(), family.into());
    }
    let service = v.id.to_string();
    PlannedLoadBalancer {
        name: format!(
            "{}{suffix}",
            service_lb_name(&v.id.namespace, &v.id.name, protocol.ovn())
        ),
        protocol,
        vips: StrMap::new(),
        options,
        ip_port_mappings: StrMap::new(),
        health_checks: BTreeMap::new(),
        external_ids: owned_ids(
            &format!(
                "lb/{service}/{}{}",
                protocol.ovn(),
                suffix.replace(':', "/")
            ),
            &[
                ("service", &service),
                ("protocol", protocol.ovn()),
                ("vpc", &v.vpc),
            ],
        ),
    }
}
