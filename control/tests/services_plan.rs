//! The Service planner: worked cases per Service type, and a property test against an
//! independent model of kube-proxy's semantics ("VIP:port → set of backends").

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use ferrovn_control::plan::services::EXTERNAL_IPS_OPTION;
use ferrovn_control::plan::{
    DEFAULT_ROUTER, Desired, LbAttach, NbPlan, NodeIntent, PlanCache, PlanIssue,
    PlannedLoadBalancer, ServiceInputs, plan, plan_cached,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::{Value, json};

fn service(v: Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn base(nodes: &[&str]) -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", Some("fd00:10:16::/64"));
    let mut dpdk = common::overlay("dpdk", "10.17.0.0/16");
    dpdk.enable_lb = false;
    d.subnets.push(dpdk);
    for (i, ip) in nodes.iter().enumerate() {
        d.nodes.push(NodeIntent {
            name: format!("node{i}"),
            join_ips: vec![format!("100.64.0.{}", i + 2).parse().unwrap()],
            join_mac: Some(ferrovn_api::MacAddr([0x0e, 0, 0, 0, 1, i as u8])),
            internal_ips: vec![ip.parse().unwrap()],
        });
        d.services
            .node_chassis
            .insert(format!("node{i}"), format!("ch{i}"));
    }
    d
}

fn with(mut d: Desired, services: Vec<Service>, slices: Vec<EndpointSlice>) -> NbPlan {
    d.services = ServiceInputs {
        services,
        endpoint_slices: slices,
        node_chassis: std::mem::take(&mut d.services.node_chassis),
    };
    plan(&d)
}

fn lb<'a>(p: &'a NbPlan, name: &str) -> &'a PlannedLoadBalancer {
    p.lb_groups
        .values()
        .flat_map(|g| g.load_balancers.values())
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no load balancer {name} in {:#?}", p.lb_groups))
}

fn vips(l: &PlannedLoadBalancer) -> Vec<(&str, &str)> {
    l.vips
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn web_slice(name: &str, family: &str, port_name: &str, port: i32, eps: Value) -> EndpointSlice {
    slice(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    }))
}

#[test]
fn cluster_ip_dual_stack_with_ready_backends_only() {
    let svc = service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"],
                 "ipFamilies": ["IPv4", "IPv6"],
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }));
    let v4 = web_slice(
        "web-v4",
        "IPv4",
        "http",
        8080,
        json!([
            {"addresses": ["10.16.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.16.0.6"]},
            {"addresses": ["10.16.0.7"], "conditions": {"ready": false}},
        ]),
    );
    let v6 = web_slice(
        "web-v6",
        "IPv6",
        "http",
        8080,
        json!([{"addresses": ["fd00:10:16::5"], "conditions": {"ready": true}}]),
    );
    let p = with(base(&["172.18.0.2"]), vec![svc], vec![v4, v6]);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let l = lb(&p, "svc:default/web:tcp");
    assert_eq!(
        vips(l),
        vec![
            ("10.96.0.10:80", "10.16.0.5:8080,10.16.0.6:8080"),
            ("[fd00:96::a]:80", "[fd00:10:16::5]:8080"),
        ]
    );
    assert_eq!(l.options.get("reject").map(String::as_str), Some("true"));
    assert_eq!(l.options.get("affinity_timeout"), None);
    assert_eq!(
        l.external_ids.get("ferrovn.io/key").map(String::as_str),
        Some("lb/default/web/tcp")
    );

    // One group per VPC, referenced by the switches that serve Services (not by `dpdk`,
    // whose Subnet says enableLb: false), never by the router.
    let group = "ferrovn-lbs-ovn-cluster";
    assert_eq!(p.lb_groups.keys().collect::<Vec<_>>(), vec![group]);
    assert!(p.switches["ovn-default"].lb_groups.contains(group));
    assert!(p.switches["join"].lb_groups.contains(group));
    assert!(p.switches["dpdk"].lb_groups.is_empty());
    assert!(p.routers[DEFAULT_ROUTER].lb_groups.is_empty());

    let mut d = base(&["172.18.0.2"]);
    d.lb_attach = LbAttach::Router;
    let p = with(d, vec![], vec![]);
    assert!(p.routers[DEFAULT_ROUTER].lb_groups.contains(group));
    assert!(p.switches.values().all(|s| s.lb_groups.is_empty()));
}

#[test]
fn node_port_on_every_node_address_for_each_protocol_plus_external_and_ingress_ips() {
    let svc = service(json!({
        "metadata": {"name": "dns", "namespace": "kube-system"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.53",
                 "externalIPs": ["192.0.2.7"],
                 "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
                    {"name": "sig", "port": 5000, "protocol": "SCTP", "nodePort": 30500}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}, {"hostname": "lb.example"}]}},
    }));
    let s = slice(json!({
        "metadata": {"name": "dns-1", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 1053, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": 1053, "protocol": "TCP"},
                  {"name": "sig", "port": 5001, "protocol": "SCTP"}],
        "endpoints": [{"addresses": ["10.16.0.9"]}],
    }));
    let p = with(base(&["172.18.0.2", "172.18.0.3"]), vec![svc], vec![s]);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let udp = lb(&p, "svc:kube-system/dns:udp");
    assert_eq!(
        vips(udp),
        vec![
            ("10.96.0.53:53", "10.16.0.9:1053"),
            // each node's join address (ovn0): other nodes reach its node port through OVN
            ("100.64.0.2:30053", "10.16.0.9:1053"),
            ("100.64.0.3:30053", "10.16.0.9:1053"),
            ("172.18.0.2:30053", "10.16.0.9:1053"),
            ("172.18.0.3:30053", "10.16.0.9:1053"),
            ("192.0.2.7:53", "10.16.0.9:1053"),
            ("198.51.100.4:53", "10.16.0.9:1053"),
        ]
    );
    assert_eq!(
        udp.options.get("ct_flush").map(String::as_str),
        Some("true")
    );
    let tcp = lb(&p, "svc:kube-system/dns:tcp");
    assert_eq!(tcp.vips.len(), 7);
    assert_eq!(tcp.options.get("ct_flush"), None);
    let sctp = lb(&p, "svc:kube-system/dns:sctp");
    assert_eq!(
        sctp.vips.get("172.18.0.3:30500").map(String::as_str),
        Some("10.16.0.9:5001")
    );
    // the nodes learn which VIPs are external addresses they must steer into OVN
    for row in [udp, tcp, sctp] {
        assert_eq!(
            row.options.get(EXTERNAL_IPS_OPTION).map(String::as_str),
            Some("192.0.2.7,198.51.100.4"),
            "{}",
            row.name
        );
    }
}

#[test]
fn named_target_port_resolves_per_slice_and_affinity_timeout_is_per_service() {
    let svc = service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }));
    // Two pod generations publish `http` on different container ports.
    let a = web_slice(
        "web-a",
        "IPv4",
        "http",
        8080,
        json!([{"addresses": ["10.16.0.5"]}]),
    );
    let b = web_slice(
        "web-b",
        "IPv4",
        "http",
        9090,
        json!([{"addresses": ["10.16.0.6"]}]),
    );
    let p = with(base(&[]), vec![svc], vec![a, b]);
    let l = lb(&p, "svc:default/web:tcp");
    assert_eq!(
        vips(l),
        vec![("10.96.0.10:80", "10.16.0.5:8080,10.16.0.6:9090")]
    );
    assert_eq!(
        l.options.get("affinity_timeout").map(String::as_str),
        Some("600")
    );
}

#[test]
fn terminating_serving_endpoints_only_when_none_is_ready_and_no_endpoints_rejects() {
    let svc = |name: &str, ip: &str| {
        service(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
        }))
    };
    let eps = json!([
        {"addresses": ["10.16.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.16.0.6"], "conditions": {"ready": false, "serving": false, "terminating": true}},
    ]);
    let only_terminating = web_slice("web-1", "IPv4", "http", 8080, eps);
    let p = with(
        base(&[]),
        vec![svc("web", "10.96.0.10"), svc("empty", "10.96.0.11")],
        vec![only_terminating.clone()],
    );
    assert_eq!(
        vips(lb(&p, "svc:default/web:tcp")),
        vec![("10.96.0.10:80", "10.16.0.5:8080")]
    );
    // No endpoints at all: the VIP stays, empty, and OVN rejects (reject=true).
    let empty = lb(&p, "svc:default/empty:tcp");
    assert_eq!(vips(empty), vec![("10.96.0.11:80", "")]);
    assert_eq!(
        empty.options.get("reject").map(String::as_str),
        Some("true")
    );

    // One ready endpoint: the terminating one is dropped.
    let ready = web_slice(
        "web-2",
        "IPv4",
        "http",
        8080,
        json!([{"addresses": ["10.16.0.7"], "conditions": {"ready": true}}]),
    );
    let p = with(
        base(&[]),
        vec![svc("web", "10.96.0.10")],
        vec![only_terminating, ready],
    );
    assert_eq!(
        vips(lb(&p, "svc:default/web:tcp")),
        vec![("10.96.0.10:80", "10.16.0.7:8080")]
    );
}

#[test]
fn headless_and_external_name_are_untouched_and_a_bad_service_is_left_out_alone() {
    let headless = service(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
    }));
    let ext = service(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.org"},
    }));
    let bad = service(json!({
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 80}, {"port": 70000}]},
    }));
    let good = service(json!({
        "metadata": {"name": "good", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.13", "ports": [{"port": 80}]},
    }));
    let p = with(base(&[]), vec![headless, ext, bad, good], vec![]);
    let names: Vec<&str> = p
        .lb_groups
        .values()
        .flat_map(|g| g.load_balancers.values())
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, vec!["svc:default/good:tcp"]);
    assert_eq!(
        p.issues,
        vec![PlanIssue::ServiceInvalid {
            service: "default/bad".into(),
            field: "spec.ports[1].port".into(),
            reason: "70000 is not in 1..65535".into(),
        }]
    );
    assert_eq!(
        p.issues[0].to_string(),
        "service default/bad: field spec.ports[1].port: 70000 is not in 1..65535 (the Service is \
         not load balanced)"
    );
}

#[test]
fn services_of_another_proxy_and_headless_slices_are_left_alone_as_kube_proxy_does() {
    let other = service(json!({
        "metadata": {"name": "other", "namespace": "default",
                     "labels": {"service.kubernetes.io/service-proxy-name": "foo-bar"}},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]},
    }));
    let web = service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    let ready = json!([{"addresses": ["10.16.0.5"], "conditions": {"ready": true}}]);
    let mut headless = web_slice("web-h", "IPv4", "", 8080, ready.clone());
    headless
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("service.kubernetes.io/headless".into(), String::new());
    let p = with(base(&[]), vec![other.clone(), web.clone()], vec![headless]);
    let names: Vec<&str> = p
        .lb_groups
        .values()
        .flat_map(|g| g.load_balancers.values())
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, vec!["svc:default/web:tcp"]);
    // the headless-labelled slice serves nothing: the VIP rejects
    assert_eq!(
        vips(lb(&p, "svc:default/web:tcp")),
        vec![("10.96.0.21:80", "")]
    );
    // the same slice without the label serves
    let p = with(
        base(&[]),
        vec![other, web],
        vec![web_slice("web-1", "IPv4", "", 8080, ready)],
    );
    assert_eq!(
        vips(lb(&p, "svc:default/web:tcp")),
        vec![("10.96.0.21:80", "10.16.0.5:8080")]
    );
}

/// The `vips` a client on `chassis` sees through a template load balancer: its keys and values
/// with that chassis' variables substituted.
fn expand(p: &NbPlan, l: &PlannedLoadBalancer, chassis: &str) -> Vec<(String, String)> {
    let vars = &p.chassis_vars[chassis].variables;
    l.vips
        .iter()
        .map(|(k, v)| {
            let (var, port) = k.trim_start_matches('^').split_once(':').unwrap();
            (
                format!("{}:{port}", vars[var]),
                vars[v.trim_start_matches('^')].clone(),
            )
        })
        .collect()
}

#[test]
fn local_traffic_policies_are_never_served_by_remote_endpoints() {
    let svc = service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.10"],
                 "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
                 "ports": [{"port": 80, "nodePort": 30080}]},
    }));
    let eps = |node1: Value| {
        let mut v = vec![json!({"addresses": ["10.16.0.5"], "nodeName": "node0"})];
        v.extend(node1.as_array().unwrap().iter().cloned());
        web_slice("web-1", "IPv4", "", 8080, Value::Array(v))
    };
    let both = eps(json!([
        {"addresses": ["10.16.0.6"], "nodeName": "node1"},
        {"addresses": ["10.16.0.7"], "nodeName": "node1",
         "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.16.0.8"]}
    ]));
    let p = with(
        base(&["172.18.0.2", "172.18.0.3"]),
        vec![svc.clone()],
        vec![both],
    );
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    // A node's node port serves that node's endpoints, from wherever the client is.
    assert_eq!(
        vips(lb(&p, "svc:default/web:tcp")),
        vec![
            ("100.64.0.2:30080", "10.16.0.5:8080"),
            ("100.64.0.3:30080", "10.16.0.6:8080"),
            ("172.18.0.2:30080", "10.16.0.5:8080"),
            ("172.18.0.3:30080", "10.16.0.6:8080"),
        ]
    );
    // external Local: a template VIP, not one the nodes steer as Cluster traffic
    assert_eq!(
        lb(&p, "svc:default/web:tcp")
            .options
            .get(EXTERNAL_IPS_OPTION),
        None
    );
    // ClusterIP (internal Local) and externalIP (external Local): the client's node's own.
    let local = lb(&p, "svc:default/web:tcp:local4");
    // ...and the nodes learn which of its template VIPs are external addresses to steer
    assert_eq!(
        local.options.get(EXTERNAL_IPS_OPTION).map(String::as_str),
        Some("192.0.2.10"),
        "{:?}",
        local.options
    );
    assert_eq!(
        local.options.get("template").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        local.options.get("address-family").map(String::as_str),
        Some("ipv4")
    );
    let on = |ch: &str, ep: &str| {
        vec![
            ("10.96.0.10:80".to_string(), ep.to_string()),
            ("192.0.2.10:80".to_string(), ep.to_string()),
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
            == expand(&p, local, ch).into_iter().collect::<BTreeSet<_>>()
    };
    assert!(
        on("ch0", "10.16.0.5:8080"),
        "{:?}",
        expand(&p, local, "ch0")
    );
    assert!(
        on("ch1", "10.16.0.6:8080"),
        "{:?}",
        expand(&p, local, "ch1")
    );

    // node1 has only a terminating endpoint left: it serves, no fallback to node0.
    let terminating = eps(json!([
        {"addresses": ["10.16.0.7"], "nodeName": "node1",
         "conditions": {"ready": false, "serving": true, "terminating": true}}
    ]));
    let p = with(
        base(&["172.18.0.2", "172.18.0.3"]),
        vec![svc.clone()],
        vec![terminating],
    );
    let local = lb(&p, "svc:default/web:tcp:local4");
    assert!(on_p(&p, local, "ch1", "10.16.0.7:8080"));
    assert_eq!(
        lb(&p, "svc:default/web:tcp").vips["172.18.0.3:30080"],
        "10.16.0.7:8080"
    );

    // node1 has none: its VIPs reject (empty backends), node0's endpoint is not borrowed.
    let p = with(
        base(&["172.18.0.2", "172.18.0.3"]),
        vec![svc],
        vec![eps(json!([]))],
    );
    let local = lb(&p, "svc:default/web:tcp:local4");
    assert!(on_p(&p, local, "ch1", ""));
    assert!(on_p(&p, local, "ch0", "10.16.0.5:8080"));
    assert_eq!(lb(&p, "svc:default/web:tcp").vips["172.18.0.3:30080"], "");
    assert_eq!(
        local.options.get("reject").map(String::as_str),
        Some("true")
    );
}

fn on_p(p: &NbPlan, l: &PlannedLoadBalancer, chassis: &str, ep: &str) -> bool {
    expand(p, l, chassis).iter().all(|(_, b)| b == ep) && !l.vips.is_empty()
}

#[test]
fn a_vip_has_one_owner() {
    let a = service(json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]},
    }));
    let b = service(json!({
        "metadata": {"name": "b", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.11", "externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]},
    }));
    let p = with(base(&[]), vec![b, a], vec![]);
    assert!(
        lb(&p, "svc:default/a:tcp")
            .vips
            .contains_key("192.0.2.1:80")
    );
    assert!(
        !lb(&p, "svc:default/b:tcp")
            .vips
            .contains_key("192.0.2.1:80")
    );
    assert!(matches!(
        &p.issues[..],
        [PlanIssue::ServiceVipTaken { service, holder, .. }] if service == "default/b" && holder == "default/a"
    ));
}

// ---------------------------------------------------------------------------------------------
// Property: the planned rows mean what kube-proxy would do.

#[derive(Debug, Clone)]
struct GenPort {
    proto: &'static str,
    affinity: Option<i32>,
}

#[derive(Debug, Clone)]
struct GenEndpoint {
    host: u8,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
    /// `nodeName`: node index (0..3, maybe beyond the nodes present) or unset.
    node: Option<usize>,
}

#[derive(Debug, Clone)]
struct GenSlice {
    v6: bool,
    /// Per service port: the target port this slice publishes (None: the port is missing).
    targets: Vec<Option<u16>>,
    endpoints: Vec<GenEndpoint>,
}

#[derive(Debug, Clone)]
struct GenService {
    kind: &'static str,
    dual: bool,
    external: bool,
    ports: Vec<GenPort>,
    slices: Vec<GenSlice>,
    internal_local: bool,
    external_local: bool,
}

fn gen_endpoint() -> impl Strategy<Value = GenEndpoint> {
    let b = || prop_oneof![Just(None), Just(Some(true)), Just(Some(false))];
    (1u8..6, b(), b(), b(), prop::option::of(0usize..3)).prop_map(
        |(host, ready, serving, terminating, node)| GenEndpoint {
            host,
            ready,
            serving,
            terminating,
            node,
        },
    )
}

fn gen_service() -> impl Strategy<Value = GenService> {
    let port = (
        prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")],
        prop::option::of(1i32..100_000),
    )
        .prop_map(|(proto, affinity)| GenPort { proto, affinity });
    (
        prop_oneof![
            Just("ClusterIP"),
            Just("NodePort"),
            Just("LoadBalancer"),
            Just("Headless")
        ],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(port, 1..4),
        prop::collection::vec(
            (
                any::<bool>(),
                prop::collection::vec(prop::option::of(1000u16..1003), 3),
                prop::collection::vec(gen_endpoint(), 0..5),
            ),
            0..4,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, dual, external, ports, slices, internal_local, external_local)| GenService {
                kind,
                dual,
                external,
                internal_local,
                external_local,
                ports,
                slices: slices
                    .into_iter()
                    .map(|(v6, targets, endpoints)| GenSlice {
                        v6,
                        targets,
                        endpoints,
                    })
                    .collect(),
            },
        )
}

fn v4(i: usize, host: u8) -> String {
    format!("10.{}.0.{host}", 16 + i)
}

fn v6(i: usize, host: u8) -> String {
    format!("fd00:{:x}::{host:x}", 16 + i)
}

/// The k8s objects of generated service `i`.
fn objects(i: usize, g: &GenService) -> (Service, Vec<EndpointSlice>) {
    let ports: Vec<Value> = g
        .ports
        .iter()
        .enumerate()
        .map(|(j, p)| {
            json!({"name": format!("p{j}"), "port": 80 + j, "protocol": p.proto,
                   "nodePort": 30000 + i * 10 + j})
        })
        .collect();
    let cluster_ips: Vec<String> = if g.kind == "Headless" {
        vec!["None".into()]
    } else if g.dual {
        vec![
            format!("10.96.0.{}", i + 1),
            format!("fd00:96::{:x}", i + 1),
        ]
    } else {
        vec![format!("10.96.0.{}", i + 1)]
    };
    let kind = if g.kind == "Headless" {
        "ClusterIP"
    } else {
        g.kind
    };
    let mut spec = json!({"type": kind, "clusterIP": cluster_ips[0], "clusterIPs": cluster_ips,
                          "ports": ports});
    if g.external {
        spec["externalIPs"] = json!([format!("192.0.2.{}", i + 1)]);
    }
    if g.internal_local {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    if g.external_local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    // Affinity is per Service: the first port's draw decides.
    if let Some(t) = g.ports[0].affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t.min(86400)}});
    }
    let svc = service(json!({
        "metadata": {"name": format!("s{i}"), "namespace": "ns"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": format!("198.51.100.{}", i + 1)}]}},
    }));
    let slices = g
        .slices
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let ports: Vec<Value> = s
                .targets
                .iter()
                .take(g.ports.len())
                .enumerate()
                .filter_map(|(j, t)| {
                    t.map(|t| json!({"name": format!("p{j}"), "port": t, "protocol": g.ports[j].proto}))
                })
                .collect();
            let eps: Vec<Value> = s
                .endpoints
                .iter()
                .map(|e| {
                    let addr = if s.v6 { v6(i, e.host) } else { v4(i, e.host) };
                    let mut c = serde_json::Map::new();
                    for (name, v) in [
                        ("ready", e.ready),
                        ("serving", e.serving),
                        ("terminating", e.terminating),
                    ] {
                        if let Some(v) = v {
                            c.insert(name.into(), json!(v));
                        }
                    }
                    let mut ep = json!({"addresses": [addr], "conditions": c});
                    if let Some(n) = e.node {
                        ep["nodeName"] = json!(format!("node{n}"));
                    }
                    ep
                })
                .collect();
            slice(json!({
                "metadata": {"name": format!("s{i}-{k}"), "namespace": "ns",
                             "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": if s.v6 { "IPv6" } else { "IPv4" },
                "ports": ports,
                "endpoints": eps,
            }))
        })
        .collect();
    (svc, slices)
}

/// (client's chassis, protocol, VIP) → backends.
type Model = BTreeMap<(String, String, String), BTreeSet<String>>;

/// Which endpoints serve a VIP in the model: all, or those of one node index.
fn model_backends(
    g: &GenService,
    i: usize,
    j: usize,
    want_v6: bool,
    node: Option<usize>,
) -> BTreeSet<String> {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for s in g.slices.iter().filter(|s| s.v6 == want_v6) {
        let Some(Some(target)) = s.targets.get(j) else {
            continue;
        };
        for e in &s.endpoints {
            if node.is_some() && e.node != node {
                continue;
            }
            let addr = if s.v6 {
                format!("[{}]:{target}", v6(i, e.host))
            } else {
                format!("{}:{target}", v4(i, e.host))
            };
            let is_ready = e.ready != Some(false);
            let serving = e.serving.unwrap_or(is_ready);
            if is_ready {
                ready.insert(addr);
            } else if serving && e.terminating == Some(true) {
                fallback.insert(addr);
            }
        }
    }
    if ready.is_empty() { fallback } else { ready }
}

/// kube-proxy's view from a client on each node, written from the generator's terms (not
/// from the k8s objects). Node `k` has InternalIP `node_ips[k]`, join address 100.64.0.(k+2)
/// and chassis `ch<k>`.
fn model(services: &[GenService], node_ips: &[&str]) -> Model {
    let mut m = Model::new();
    for (client, _) in node_ips.iter().enumerate() {
        let chassis = format!("ch{client}");
        for (i, g) in services.iter().enumerate() {
            if g.kind == "Headless" {
                continue;
            }
            for (j, p) in g.ports.iter().enumerate() {
                let proto = p.proto.to_lowercase();
                let port = 80 + j;
                let internal = g.internal_local.then_some(client);
                let external = g.external_local.then_some(client);
                // (vip, v6, the node whose endpoints serve it, or all)
                let mut vips: Vec<(String, bool, Option<usize>)> =
                    vec![(format!("10.96.0.{}:{port}", i + 1), false, internal)];
                if g.dual {
                    vips.push((format!("[fd00:96::{:x}]:{port}", i + 1), true, internal));
                }
                if g.external {
                    vips.push((format!("192.0.2.{}:{port}", i + 1), false, external));
                }
                if g.kind == "LoadBalancer" {
                    vips.push((format!("198.51.100.{}:{port}", i + 1), false, external));
                }
                if g.kind != "ClusterIP" {
                    for (k, n) in node_ips.iter().enumerate() {
                        let owner = g.external_local.then_some(k);
                        let np = 30000 + i * 10 + j;
                        vips.push((format!("{n}:{np}"), false, owner));
                        vips.push((format!("100.64.0.{}:{np}", k + 2), false, owner));
                    }
                }
                for (vip, want_v6, node) in vips {
                    m.insert(
                        (chassis.clone(), proto.clone(), vip),
                        model_backends(g, i, j, want_v6, node),
                    );
                }
            }
        }
    }
    m
}

/// What the planned rows mean to a client on each chassis: plain load balancers alike
/// everywhere, template ones through that chassis' variables.
fn implied(p: &NbPlan, chassis: &[String]) -> Model {
    let mut m = Model::new();
    for l in p.lb_groups.values().flat_map(|g| g.load_balancers.values()) {
        let template = l.options.get("template").map(String::as_str) == Some("true");
        for c in chassis {
            let entries: Vec<(String, String)> = if template {
                expand(p, l, c)
            } else {
                l.vips.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            for (vip, backends) in entries {
                let set: BTreeSet<String> = backends
                    .split(',')
                    .filter(|b| !b.is_empty())
                    .map(str::to_string)
                    .collect();
                let old = m.insert((c.clone(), l.protocol.ovn().to_string(), vip.clone()), set);
                assert!(old.is_none(), "VIP {vip} in two load balancers");
            }
        }
    }
    m
}

fn chassis_names(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("ch{k}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn planned_rows_imply_the_model(
        services in prop::collection::vec(gen_service(), 0..6),
        n_nodes in 1usize..4,
        shuffle in any::<u64>(),
    ) {
        let node_ips = ["172.18.0.2", "172.18.0.3", "172.18.0.4"];
        let node_ips = &node_ips[..n_nodes];
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for (i, g) in services.iter().enumerate() {
            let (s, sl) = objects(i, g);
            svcs.push(s);
            slices.extend(sl);
        }
        // Input order must not matter.
        if shuffle % 2 == 1 {
            svcs.reverse();
            slices.reverse();
        }
        let p = with(base(node_ips), svcs, slices);
        prop_assert!(p.issues.is_empty(), "{:?}", p.issues);
        prop_assert_eq!(implied(&p, &chassis_names(n_nodes)), model(&services, node_ips));
        // One load balancer per Service and protocol, with the Service's affinity.
        for l in p.lb_groups.values().flat_map(|g| g.load_balancers.values()) {
            let i: usize = l.name.trim_start_matches("svc:ns/s").split(':').next().unwrap().parse().unwrap();
            let want = services[i].ports[0].affinity.map(|t| t.min(86400).min(65535).to_string());
            prop_assert_eq!(l.options.get("affinity_timeout").cloned(), want);
            prop_assert_eq!(l.options.get("reject").map(String::as_str), Some("true"));
        }
    }
}

#[test]
fn the_model_is_not_trivial() {
    // A sanity anchor for the property: a mixed service gives non-empty and empty VIPs.
    let g = GenService {
        kind: "NodePort",
        dual: true,
        external: false,
        internal_local: false,
        external_local: false,
        ports: vec![GenPort {
            proto: "TCP",
            affinity: None,
        }],
        slices: vec![GenSlice {
            v6: false,
            targets: vec![Some(1000), None, None],
            endpoints: vec![GenEndpoint {
                host: 3,
                ready: None,
                serving: None,
                terminating: None,
                node: None,
            }],
        }],
    };
    let m = model(std::slice::from_ref(&g), &["172.18.0.2"]);
    let want: BTreeSet<String> = ["10.16.0.3:1000".to_string()].into();
    let at = |vip: &str| m[&("ch0".to_string(), "tcp".to_string(), vip.to_string())].clone();
    assert_eq!(at("10.96.0.1:80"), want);
    assert!(at("[fd00:96::1]:80").is_empty());
    assert_eq!(at("172.18.0.2:30000"), want);
    assert_eq!(at("100.64.0.2:30000"), want);
    let (s, sl) = objects(0, &g);
    let p = with(base(&["172.18.0.2"]), vec![s], sl);
    assert_eq!(implied(&p, &chassis_names(1)), m);
}

/// One step of a change sequence for the cache property.
#[derive(Debug, Clone)]
enum Step {
    /// Nothing changes: the cached pass must plan no Service afresh.
    Nothing,
    /// Service `i` (modulo the count) is replaced.
    Replace(usize, GenService),
    /// Only the EndpointSlices of service `i` change.
    Endpoints(usize, GenService),
    Remove(usize),
    Add(GenService),
    /// A second Service with the name and addresses of service `i`, other content.
    Twin(usize, GenService),
    /// A Service of another name claiming service `i`'s addresses.
    Clash(usize, GenService),
    Nodes(usize),
}

fn gen_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Nothing),
        3 => (any::<usize>(), gen_service()).prop_map(|(i, g)| Step::Replace(i, g)),
        4 => (any::<usize>(), gen_service()).prop_map(|(i, g)| Step::Endpoints(i, g)),
        1 => any::<usize>().prop_map(Step::Remove),
        2 => gen_service().prop_map(Step::Add),
        1 => (any::<usize>(), gen_service()).prop_map(|(i, g)| Step::Twin(i, g)),
        1 => (any::<usize>(), gen_service()).prop_map(|(i, g)| Step::Clash(i, g)),
        1 => (0usize..4).prop_map(Step::Nodes),
    ]
}

/// Objects of generated service `addr` (its addresses) under the name `s<name>`.
fn objects_named(addr: usize, name: usize, g: &GenService) -> (Service, Vec<EndpointSlice>) {
    let (mut svc, mut slices) = objects(addr, g);
    svc.metadata.name = Some(format!("s{name}"));
    for (k, sl) in slices.iter_mut().enumerate() {
        sl.metadata.name = Some(format!("s{name}-{addr}-{k}"));
        sl.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/service-name".into(), format!("s{name}"));
    }
    (svc, slices)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The plan cache is only an optimisation: along any sequence of Service, endpoint and
    /// node changes, the cached planner's output equals the uncached planner's, and a pass
    /// with no change plans nothing afresh.
    #[test]
    fn cached_plans_equal_uncached_plans_along_change_sequences(
        initial in prop::collection::vec(gen_service(), 0..5),
        steps in prop::collection::vec(gen_step(), 1..12),
    ) {
        let node_ips = ["172.18.0.2", "172.18.0.3", "172.18.0.4"];
        // (address index, name index, generator)
        let mut svcs: Vec<(usize, usize, GenService)> =
            initial.into_iter().enumerate().map(|(i, g)| (i, i, g)).collect();
        let mut next = svcs.len();
        let mut nodes = 2;
        let mut cache = PlanCache::default();
        for (n, step) in std::iter::once(Step::Nothing).chain(steps).enumerate() {
            let unchanged = n > 0 && matches!(step, Step::Nothing);
            let len = svcs.len().max(1);
            match step {
                Step::Nothing => {}
                Step::Replace(i, g) => {
                    if let Some(s) = svcs.get_mut(i % len) {
                        s.2 = g;
                    }
                }
                Step::Endpoints(i, g) => {
                    if let Some(s) = svcs.get_mut(i % len) {
                        s.2.slices = g.slices;
                    }
                }
                Step::Remove(i) => {
                    if !svcs.is_empty() {
                        svcs.remove(i % len);
                    }
                }
                Step::Add(g) => {
                    svcs.push((next, next, g));
                    next += 1;
                }
                Step::Twin(i, g) => {
                    if let Some(&(a, nm, _)) = svcs.get(i % len) {
                        svcs.push((a, nm, g));
                    }
                }
                Step::Clash(i, g) => {
                    if let Some(&(a, _, _)) = svcs.get(i % len) {
                        svcs.push((a, next, g));
                        next += 1;
                    }
                }
                Step::Nodes(k) => nodes = k,
            }
            let mut d = base(&node_ips[..nodes]);
            for (a, nm, g) in &svcs {
                let (s, sl) = objects_named(*a, *nm, g);
                d.services.services.push(s);
                d.services.endpoint_slices.extend(sl);
            }
            let cached = plan_cached(&d, &mut cache);
            prop_assert_eq!(&cached, &plan(&d), "after step {}", n);
            if unchanged {
                prop_assert_eq!(cache.services.last_misses(), 0, "step {} changed nothing", n);
            }
        }
    }
}

#[test]
fn an_endpoint_change_replans_one_service() {
    let services: Vec<GenService> = (0..4)
        .map(|i| GenService {
            kind: if i % 2 == 0 { "ClusterIP" } else { "NodePort" },
            dual: false,
            external: false,
            internal_local: false,
            external_local: false,
            ports: vec![GenPort {
                proto: "TCP",
                affinity: None,
            }],
            slices: vec![GenSlice {
                v6: false,
                targets: vec![Some(1000), None, None],
                endpoints: vec![GenEndpoint {
                    host: 1,
                    ready: None,
                    serving: None,
                    terminating: None,
                    node: None,
                }],
            }],
        })
        .collect();
    let build = |services: &[GenService], nodes: &[&str]| {
        let mut d = base(nodes);
        for (i, g) in services.iter().enumerate() {
            let (s, sl) = objects(i, g);
            d.services.services.push(s);
            d.services.endpoint_slices.extend(sl);
        }
        d
    };
    let mut cache = PlanCache::default();
    let first = plan_cached(&build(&services, &["172.18.0.2"]), &mut cache);
    assert_eq!(cache.services.last_misses(), 4);
    assert_eq!(first, plan(&build(&services, &["172.18.0.2"])));

    let mut changed = services.clone();
    changed[2].slices[0].endpoints[0].host = 2;
    let d = build(&changed, &["172.18.0.2"]);
    let second = plan_cached(&d, &mut cache);
    assert_eq!(
        cache.services.last_misses(),
        1,
        "only the changed Service is planned"
    );
    assert_eq!(second, plan(&d));
    assert_ne!(second, first);

    // Node addresses feed every NodePort: all are planned afresh.
    let d = build(&changed, &["172.18.0.2", "172.18.0.3"]);
    assert_eq!(plan_cached(&d, &mut cache), plan(&d));
    assert_eq!(cache.services.last_misses(), 4);
}

/// Host processes reach ClusterIPs through `ovn0` only if the agent routes the Service CIDR
/// there: the controller publishes it on every Node when configured, and not otherwise (so
/// existing Nodes keep exactly their annotations).
#[test]
fn the_service_cidr_is_published_on_nodes_only_when_configured() {
    use ferrovn_control::controller::Cluster;
    use ferrovn_control::controller::desired::node_network_annotations;
    let key = ferrovn_api::annotations::NodeNetwork::SERVICE_CIDRS;
    let none = node_network_annotations(&Cluster::default(), "node-a");
    assert!(!none.contains_key(key), "{none:?}");
    let c = Cluster {
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:96::/108".parse().unwrap(),
        ],
        ..Cluster::default()
    };
    let a = node_network_annotations(&c, "node-a");
    assert_eq!(a[key], "10.96.0.0/12,fd00:96::/108");
}

/// The node agent's node-port steering keeps the client's address only for Services whose
/// row carries `options:ferrovn_node_port_local=true`: exactly those with
/// `externalTrafficPolicy: Local` and node ports (dataplane/src/nodeport.rs).
#[test]
fn external_local_node_ports_are_marked_for_the_node_agent() {
    let mk = |name: &str, etp: &str, ty: &str| {
        service(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": ty, "clusterIP": format!("10.96.0.{}", name.len()),
                     "externalTrafficPolicy": etp,
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": (30000 + name.len() as i32)}]},
        }))
    };
    let p = with(
        base(&["172.18.0.2"]),
        vec![
            mk("local", "Local", "NodePort"),
            mk("cluster", "Cluster", "NodePort"),
            mk("lb", "Local", "LoadBalancer"),
        ],
        vec![],
    );
    let marked = |n: &str| {
        lb(&p, &format!("svc:default/{n}:tcp"))
            .options
            .get(ferrovn_control::plan::services::NODE_PORT_LOCAL_OPTION)
            .map(String::as_str)
    };
    assert_eq!(marked("local"), Some("true"));
    assert_eq!(marked("lb"), Some("true"));
    assert_eq!(marked("cluster"), None);
}

#[test]
fn health_checks_are_opt_in_and_map_backends_to_pod_ports_and_probe_sources() {
    let svc = |name: &str, ann: Value, ports: Value| {
        let n = if name == "web" { 10 } else { 11 };
        service(json!({
            "metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": {"type": "NodePort",
                     "clusterIPs": [format!("10.96.0.{n}"), format!("fd00:96::{n:x}")],
                     "ipFamilies": ["IPv4", "IPv6"], "ports": ports},
        }))
    };
    let eps = |svc: &str, family: &str, proto: &str, eps: Value| {
        slice(json!({
            "metadata": {"name": format!("{svc}-{family}-{proto}"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family,
            "ports": [{"name": "p", "port": 8080, "protocol": proto}],
            "endpoints": eps,
        }))
    };
    let pod = |name: &str| json!({"kind": "Pod", "name": name, "namespace": "default"});
    let ports = json!([{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30080}]);
    let on = json!({"ovn.kubernetes.io/service_health_check": "true",
                    "ferrovn.io/health-check-options": "interval=2, failure_count=4"});
    let slices = |s: &str| {
        vec![
            eps(
                s,
                "IPv4",
                "TCP",
                json!([
                    {"addresses": ["10.16.0.5"], "targetRef": pod("a")},
                    // no targetRef: OVN cannot name its port, so it is not probed
                    {"addresses": ["10.16.0.6"]},
                    // outside every pod subnet (a host-network endpoint): not probed
                    {"addresses": ["172.18.0.9"], "targetRef": pod("h")},
                ]),
            ),
            eps(
                s,
                "IPv6",
                "TCP",
                json!([{"addresses": ["fd00:10:16::5"], "targetRef": pod("a")}]),
            ),
        ]
    };
    let mut all_slices = slices("web");
    all_slices.extend(slices("plain"));
    let p = with(
        base(&["172.18.0.2"]),
        vec![
            svc("web", on.clone(), ports.clone()),
            svc(
                "plain",
                json!({}),
                json!([{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30081}]),
            ),
        ],
        all_slices,
    );
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let l = lb(&p, "svc:default/web:tcp");
    // Every VIP key of the Service (ClusterIPs of both families, node ports) gets a check.
    assert_eq!(
        l.health_checks
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec![
            "10.96.0.10:80",
            "100.64.0.2:30080",
            "172.18.0.2:30080",
            "[fd00:96::a]:80"
        ]
    );
    let hc = &l.health_checks["10.96.0.10:80"];
    assert_eq!(hc.vip, "10.96.0.10:80");
    assert_eq!(
        hc.options,
        [
            ("failure_count", "4"),
            ("interval", "2"),
            ("success_count", "3"),
            ("timeout", "20")
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    assert_eq!(
        hc.external_ids.get("ferrovn.io/key").map(String::as_str),
        Some("hc/default/web/tcp/10.96.0.10:80")
    );
    // The probe source is the subnet's last usable address: 10.16.255.254 in 10.16.0.0/16,
    // the last address of fd00:10:16::/64.
    assert_eq!(
        l.ip_port_mappings,
        [
            ("10.16.0.5", "a.default:10.16.255.254"),
            (
                "[fd00:10:16::5]",
                "a.default:[fd00:10:16:0:ffff:ffff:ffff:ffff]"
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    // Without the opt-in: nothing.
    let plain = lb(&p, "svc:default/plain:tcp");
    assert!(plain.health_checks.is_empty() && plain.ip_port_mappings.is_empty());

    // SCTP has no OVN health checks; a bad annotation names its field and leaves the Service
    // out, as every bad Service field does.
    let sctp = json!([{"name": "p", "port": 80, "targetPort": 8080, "protocol": "SCTP"}]);
    let bad = json!({"ovn.kubernetes.io/service_health_check": "true",
                     "ferrovn.io/health-check-options": "interval=0"});
    let p = with(
        base(&["172.18.0.2"]),
        vec![svc("web", on, sctp), svc("plain", bad, ports)],
        vec![],
    );
    let l = lb(&p, "svc:default/web:sctp");
    assert!(l.health_checks.is_empty(), "{l:#?}");
    assert_eq!(p.issues.len(), 1, "{:?}", p.issues);
    assert!(
        p.issues[0]
            .to_string()
            .contains("field metadata.annotations[\"ferrovn.io/health-check-options\"]"),
        "{}",
        p.issues[0]
    );
    assert!(
        p.lb_groups
            .values()
            .flat_map(|g| g.load_balancers.values())
            .all(|l| l.name != "svc:default/plain:tcp")
    );

    // A pod holding the probe source takes its subnet out of probing.
    let mut d = base(&["172.18.0.2"]);
    d.ports.push(ferrovn_control::plan::PortIntent {
        pod: "squatter".into(),
        namespace: "default".into(),
        provider: "ovn".into(),
        subnet: "ovn-default".into(),
        node: "node0".into(),
        mac: ferrovn_api::MacAddr([0x0e, 0, 0, 0, 9, 9]),
        ips: vec!["10.16.255.254".parse().unwrap()],
        port_security: true,
    });
    let on = json!({"ovn.kubernetes.io/service_health_check": "true"});
    let p = with(
        d,
        vec![svc(
            "web",
            on,
            json!([{"name": "p", "port": 80, "targetPort": 8080}]),
        )],
        slices("web"),
    );
    let l = lb(&p, "svc:default/web:tcp");
    assert_eq!(
        l.ip_port_mappings
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["[fd00:10:16::5]"],
        "only the IPv6 backend keeps a probe source"
    );
}

/// `healthCheckNodePort` (kube-proxy's per-node health endpoint of an `externalTrafficPolicy:
/// Local` Service): the plain row carries the port and, for every node address, that node's
/// ready local endpoints. A terminating endpoint still serves as the fallback backend, but the
/// health check of its node reports 0 (the upstream e2e "should fail health check node port if
/// there are only terminating endpoints"). Cluster policy: no health check node port.
#[test]
fn health_check_node_port_counts_ready_local_endpoints_per_node_address() {
    use ferrovn_control::plan::services::{
        HEALTH_CHECK_LOCAL_OPTION, HEALTH_CHECK_NODE_PORT_OPTION,
    };
    let mk = |name: &str, etp: &str| {
        service(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": format!("10.96.0.{}", name.len()),
                     "externalTrafficPolicy": etp, "healthCheckNodePort": 32100,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "nodePort": 30000 + name.len() as i32}]},
        }))
    };
    let eps = |svc: &str| {
        slice(json!({
            "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.16.0.5"], "nodeName": "node0",
                 "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.16.0.6"], "nodeName": "node0",
                 "conditions": {"ready": true}},
                {"addresses": ["10.16.0.7"], "nodeName": "node1",
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
            ],
        }))
    };
    let p = with(
        base(&["172.18.0.2", "172.18.0.3"]),
        vec![mk("local", "Local"), mk("cluster", "Cluster")],
        vec![eps("local"), eps("cluster")],
    );
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    let l = lb(&p, "svc:default/local:tcp");
    assert_eq!(
        l.options
            .get(HEALTH_CHECK_NODE_PORT_OPTION)
            .map(String::as_str),
        Some("32100")
    );
    let counts: BTreeMap<&str, &str> = l.options[HEALTH_CHECK_LOCAL_OPTION]
        .split(',')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    // every address of a node (InternalIP and join address) says the same
    assert_eq!(
        counts,
        BTreeMap::from([
            ("172.18.0.2", "2"),
            ("100.64.0.2", "2"),
            ("172.18.0.3", "0"),
            ("100.64.0.3", "0"),
        ])
    );
    // node1's node port still serves through its terminating endpoint (the fallback)
    assert_eq!(
        l.vips.get("172.18.0.3:30005").map(String::as_str),
        Some("10.16.0.7:8080")
    );
    let c = lb(&p, "svc:default/cluster:tcp");
    assert_eq!(c.options.get(HEALTH_CHECK_NODE_PORT_OPTION), None);
    assert_eq!(c.options.get(HEALTH_CHECK_LOCAL_OPTION), None);
}

/// Every chassis keeps its Chassis_Template_Var row, variables empty, while no Service uses a
/// `Local` policy: ovn-controller asserts (and exits) when a chassis' row is deleted and a new
/// one inserted later, which the last `Local` Service going and the next one coming did.
#[test]
fn every_chassis_keeps_its_template_row_without_local_services() {
    let cluster = service(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    let p = with(base(&["172.18.0.2", "172.18.0.3"]), vec![cluster], vec![]);
    assert_eq!(
        p.chassis_vars
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["ch0", "ch1"]
    );
    assert!(p.chassis_vars.values().all(|v| v.variables.is_empty()));
    // the same row identity as when a Local Service fills it (an update, not delete + insert)
    let local = service(json!({
        "metadata": {"name": "local", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.22", "internalTrafficPolicy": "Local",
                 "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    let q = with(base(&["172.18.0.2", "172.18.0.3"]), vec![local], vec![]);
    for (c, v) in &q.chassis_vars {
        assert!(!v.variables.is_empty(), "{c}");
        assert_eq!(v.external_ids, p.chassis_vars[c].external_ids);
    }
}
