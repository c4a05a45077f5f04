//! `healthCheckNodePort`: kube-proxy serves, on every node, an HTTP endpoint per Service with
//! `externalTrafficPolicy: Local` that answers 200 while the node has a ready endpoint of the
//! Service and 503 otherwise, so an outside load balancer sends traffic only to nodes that
//! can serve it locally. Terminating endpoints do not count, even when they still serve
//! traffic as the fallback.
//!
//! FerrOVN's node agent serves it (ferrovn-dataplane `health_node_port`), from what the planner
//! writes on the Service's plain load balancer rows: the port, and every node address with
//! that node's count of ready local endpoints. The node agent finds its own count by its own
//! addresses, as it finds its node ports, so it needs no Service or EndpointSlice watch of its
//! own. OVN ignores options it does not know; northd copies them to the Southbound.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::{Endpoint, ServiceNode};

/// The Service's `healthCheckNodePort`.
pub const HEALTH_CHECK_NODE_PORT_OPTION: &str = "ferrovn_health_check_node_port";
/// `<node address>=<ready local endpoints>,…` for every address of every node.
pub const HEALTH_CHECK_LOCAL_OPTION: &str = "ferrovn_health_check_local";

/// The two options of a Service that has a health check node port (`externalTrafficPolicy:
/// Local` and a `healthCheckNodePort` allocated), `None` otherwise. `port_eps` are the
/// Service's endpoints per Service port; an endpoint counts once however many ports it serves.
pub(super) fn options(
    svc: &Service,
    port_eps: &[Vec<Endpoint>],
    nodes: &[ServiceNode],
) -> Option<[(String, String); 2]> {
    let spec = svc.spec.as_ref()?;
    if spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)?;
    let counts: Vec<String> = nodes
        .iter()
        .flat_map(|node| {
            let ready: BTreeSet<IpAddr> = port_eps
                .iter()
                .flatten()
                .filter(|e| e.ready && e.node.as_deref() == Some(node.name.as_str()))
                .map(|e| e.ip)
                .collect();
            node.ips
                .iter()
                .map(move |ip| format!("{ip}={}", ready.len()))
        })
        .collect();
    Some([
        (HEALTH_CHECK_NODE_PORT_OPTION.to_string(), port.to_string()),
        (HEALTH_CHECK_LOCAL_OPTION.to_string(), counts.join(",")),
    ])
}
