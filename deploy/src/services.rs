//! The status' SERVICES table: every load-balanced Service of the cluster (ClusterIP, NodePort,
//! LoadBalancer, with a selector) asked from each kind of client the fabric has: a kernel pod,
//! a DPDK pod (its kernel-side tap, when its testpmd forwards one), each node's host and the
//! outside namespace. A Service's first TCP port is asked over HTTP (`kubectl exec … wget` in a
//! pod), its first UDP port with the datagram `hostname` (agnhost netexec answers with the
//! pod's name): the host's `nc -u` inside the client's network namespace, because the pods'
//! busybox has no UDP client. ClusterIPs are asked from inside the cluster only; node ports on
//! every node's InternalIP from everyone. Each row says which backends answered, so "backends
//! on both nodes" is visible (docs/services.md).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferrovn_testkit::kube::ControlPlane;
use serde_json::Value;

use crate::model::{LabState, PodState, render_table};
use crate::sys::run_in;

/// The transport a row asks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One port of a Service as the table asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPort {
    pub proto: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// One Service as the table needs it: its first TCP and its first UDP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabService {
    pub key: String,
    pub type_: String,
    pub cluster_ip: IpAddr,
    pub ports: Vec<LabPort>,
}

/// The load-balanced Services of `kubectl get services -A -o json`, by key. Headless,
/// ExternalName and selector-less Services (the API server's own `kubernetes`) are left out.
pub fn services_from_json(v: &Value) -> Vec<LabService> {
    let mut out = Vec::new();
    for s in v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        // cluster infrastructure (kube-dns: no HTTP) is checked on its own, not by HTTP GET
        if s["metadata"]["namespace"] == "kube-system" {
            continue;
        }
        let spec = &s["spec"];
        let type_ = spec["type"].as_str().unwrap_or("ClusterIP");
        if !matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer") {
            continue;
        }
        if spec["selector"].as_object().is_none_or(|m| m.is_empty()) {
            continue;
        }
        let Some(cluster_ip) = spec["clusterIP"]
            .as_str()
            .and_then(|c| c.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let mut ports = Vec::new();
        for (proto, name) in [(Proto::Tcp, "TCP"), (Proto::Udp, "UDP")] {
            let Some(port) = spec["ports"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .find(|p| p["protocol"].as_str().unwrap_or("TCP") == name)
            else {
                continue;
            };
            let Some(number) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let node_port = (type_ != "ClusterIP")
                .then(|| {
                    port["nodePort"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                })
                .flatten();
            ports.push(LabPort {
                proto,
                port: number,
                node_port,
            });
        }
        if ports.is_empty() {
            continue;
        }
        out.push(LabService {
            key: format!(
                "{}/{}",
                s["metadata"]["namespace"].as_str().unwrap_or(""),
                s["metadata"]["name"].as_str().unwrap_or("")
            ),
            type_: type_.to_string(),
            cluster_ip,
            ports,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// A kernel pod: `kubectl exec` (busybox wget) for TCP, its network namespace (`netns`,
    /// the lab's name for it) for UDP.
    KernelPod {
        namespace: String,
        name: String,
        netns: String,
    },
    /// A DPDK pod, through its testpmd-forwarded tap `dtap0` (TCP and UDP as for a kernel
    /// pod); `client: false`: it has none (testpmd only answers pings), shown but not counted.
    DpdkPod {
        namespace: String,
        name: String,
        netns: String,
        client: bool,
    },
    /// A host process in the node's namespace.
    Node { name: String, netns: String },
    /// The outside namespace, through the nodes' uplinks.
    Outside { netns: String },
}

impl Client {
    pub fn label(&self) -> String {
        match self {
            Client::KernelPod {
                namespace, name, ..
            } => format!("pod {namespace}/{name}"),
            Client::DpdkPod {
                namespace, name, ..
            } => format!("DPDK pod {namespace}/{name}"),
            Client::Node { name, .. } => format!("node {name}"),
            Client::Outside { .. } => "outside".to_string(),
        }
    }
    fn inside_cluster(&self) -> bool {
        !matches!(self, Client::Outside { .. })
    }
    fn counted(&self) -> bool {
        !matches!(self, Client::DpdkPod { client: false, .. })
    }
}

/// One row of the table before it is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRow {
    pub service: String,
    pub client: usize,
    pub proto: Proto,
    pub target: String,
    pub path: String,
}

/// The rows: each Service's ClusterIP from every in-cluster client, and for node ports every
/// node address (`(node name, InternalIP)`) from every client.
pub fn plan_rows(
    services: &[LabService],
    clients: &[Client],
    nodes: &[(String, IpAddr)],
) -> Vec<ProbeRow> {
    let url = |ip: &IpAddr, port: u16| match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    let mut rows = Vec::new();
    for s in services {
        for p in &s.ports {
            for (i, c) in clients.iter().enumerate() {
                if c.inside_cluster() {
                    rows.push(ProbeRow {
                        service: format!("{} ({})", s.key, s.type_),
                        client: i,
                        proto: p.proto,
                        target: url(&s.cluster_ip, p.port),
                        path: "ClusterIP".into(),
                    });
                }
            }
        }
        for p in &s.ports {
            let Some(np) = p.node_port else {
                continue;
            };
            for (node, ip) in nodes {
                for (i, _) in clients.iter().enumerate() {
                    rows.push(ProbeRow {
                        service: format!("{} ({})", s.key, s.type_),
                        client: i,
                        proto: p.proto,
                        target: url(ip, np),
                        path: format!("NodePort on {node}"),
                    });
                }
            }
        }
    }
    rows
}

/// What one row's probes found: the backends that answered (their `hostname`), if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub backends: BTreeSet<String>,
    pub error: Option<String>,
}

/// The table and the count line `services rows: R/T reachable` (DPDK rows without a client
/// are shown and not counted).
pub fn render(clients: &[Client], rows: &[ProbeRow], answers: &[Answer]) -> (String, usize, usize) {
    let (mut ok, mut total) = (0, 0);
    let mut cells = Vec::new();
    for (r, a) in rows.iter().zip(answers) {
        let c = &clients[r.client];
        let result = if !c.counted() {
            "not counted: no dtap0 (testpmd only answers pings)".to_string()
        } else {
            total += 1;
            if a.backends.is_empty() {
                format!(
                    "NOT REACHED{}",
                    a.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            } else {
                ok += 1;
                format!(
                    "ok ({})",
                    a.backends.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        };
        cells.push(vec![
            r.service.clone(),
            c.label(),
            r.target.clone(),
            r.proto.name().to_string(),
            r.path.clone(),
            result,
        ]);
    }
    let mut s = render_table(
        &["service", "client", "target", "proto", "path", "result"],
        &cells,
    );
    s.push_str(&format!("services rows: {ok}/{total} reachable\n"));
    (s, ok, total)
}

/// Asks up to `tries` times: stops once two backends answered, or after three failures
/// while nothing answered. The backends seen.
fn ask(mut get: impl FnMut() -> anyhow::Result<String>, tries: usize) -> Answer {
    let mut a = Answer::default();
    let mut failures = 0;
    for _ in 0..tries {
        if a.backends.is_empty() && failures >= 3 {
            break;
        }
        match get() {
            Ok(body) => {
                let name = body.lines().next().unwrap_or("").trim().to_string();
                a.backends.insert(if name.is_empty() {
                    "answered".into()
                } else {
                    name
                });
                if a.backends.len() >= 2 {
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                a.error = Some(
                    format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect(),
                )
            }
        }
    }
    if !a.backends.is_empty() {
        a.error = None;
    }
    a
}

/// Requests per row at most: two backends behind a Service all show within 10 random picks
/// but for a 1-in-512 chance.
const TRIES: usize = 10;

/// One UDP request from `netns`: the datagram `hostname`, the answer within a second.
fn udp_get(netns: &str, target: &str) -> anyhow::Result<String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("target {target}: no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let out = run_in(
        netns,
        5,
        "sh",
        ["-c", &format!("printf hostname | nc -u -w 1 {host} {port}")],
    )?;
    if out.trim().is_empty() {
        anyhow::bail!("no UDP answer");
    }
    Ok(out)
}

fn probe(cp: Option<&ControlPlane>, c: &Client, proto: Proto, target: &str) -> Answer {
    if proto == Proto::Udp {
        return match c {
            Client::DpdkPod { client: false, .. } => Answer::default(),
            Client::KernelPod { netns, .. }
            | Client::DpdkPod { netns, .. }
            | Client::Node { netns, .. }
            | Client::Outside { netns } => ask(|| udp_get(netns, target), TRIES),
        };
    }
    let url = format!("http://{target}/");
    let exec = |ns: &str, pod: &str| -> anyhow::Result<String> {
        let cp = cp.ok_or_else(|| anyhow::anyhow!("no Kubernetes control plane"))?;
        cp.kubectl(&[
            "exec",
            "-n",
            ns,
            pod,
            "--request-timeout=20s",
            "--",
            // busybox 1.35's wget segfaults when given -T (docs/conformance.md): bound it with
            // busybox timeout instead
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &url,
        ])
        .map(|o| o.stdout)
        .map_err(|e| anyhow::anyhow!("{e}"))
    };
    match c {
        Client::KernelPod {
            namespace, name, ..
        } => ask(|| exec(namespace, name), TRIES),
        Client::DpdkPod {
            namespace,
            name,
            client: true,
            ..
        } => ask(|| exec(namespace, name), TRIES),
        Client::DpdkPod { client: false, .. } => Answer::default(),
        Client::Node { netns, .. } | Client::Outside { netns } => ask(
            || run_in(netns, 6, "curl", ["-s", "-f", "-m", "3", &url]),
            TRIES,
        ),
    }
}

/// Whether the DPDK pod's container has the tap its testpmd forwards to (`dtap0`).
fn dpdk_client(cp: Option<&ControlPlane>, pod: &PodState) -> bool {
    cp.is_some_and(|cp| {
        cp.kubectl(&[
            "exec",
            "-n",
            &pod.namespace,
            &pod.name,
            "--request-timeout=10s",
            "--",
            "ip",
            "link",
            "show",
            "dtap0",
        ])
        .is_ok()
    })
}

/// Prints the SERVICES table; returns (reachable, total) of the counted rows.
pub fn print_rows(lab: &LabState, pods: &[PodState], cp: Option<&ControlPlane>) -> (usize, usize) {
    let services = cp
        .and_then(|cp| cp.kubectl(&["get", "services", "-A", "-o", "json"]).ok())
        .and_then(|o| serde_json::from_str::<Value>(&o.stdout).ok())
        .map(|v| services_from_json(&v))
        .unwrap_or_default();
    let mut clients = Vec::new();
    // one kernel pod: `default/client` when it is there, else the first available
    let kernel: Vec<&PodState> = pods
        .iter()
        .filter(|p| !p.dpdk && p.unavailable().is_none())
        .collect();
    if let Some(p) = kernel
        .iter()
        .find(|p| p.name == "client")
        .or(kernel.first())
    {
        clients.push(Client::KernelPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            netns: p.netns.clone(),
        });
    }
    for p in pods.iter().filter(|p| p.dpdk && p.unavailable().is_none()) {
        clients.push(Client::DpdkPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            netns: p.netns.clone(),
            client: dpdk_client(cp, p),
        });
    }
    let mut nodes = Vec::new();
    for n in &lab.nodes {
        clients.push(Client::Node {
            name: n.name.clone(),
            netns: n.netns.clone(),
        });
        if let Ok(ip) = n.encap_ip.parse::<IpAddr>() {
            nodes.push((n.name.clone(), ip));
        }
    }
    let outside = crate::outside::netns_name(&lab.prefix);
    // the upstream router knows every node's InternalIP behind that node's uplink
    for (i, (_, ip)) in nodes.iter().enumerate() {
        let _ = run_in(
            &outside,
            5,
            "ip",
            [
                "route",
                "replace",
                &ip.to_string(),
                "via",
                &crate::outside::uplink_ip(i),
            ],
        );
    }
    clients.push(Client::Outside { netns: outside });
    let rows = plan_rows(&services, &clients, &nodes);
    let answers: Vec<Answer> = rows
        .iter()
        .map(|r| probe(cp, &clients[r.client], r.proto, &r.target))
        .collect();
    let (table, ok, total) = render(&clients, &rows, &answers);
    println!();
    println!(
        "SERVICES (TCP: HTTP GET, UDP: the datagram `hostname`, through the Service; a row lists the backends that answered)"
    );
    print!("{table}");
    (ok, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svcs() -> Vec<LabService> {
        let v = json!({"items": [
            {"metadata": {"namespace": "demo", "name": "web"},
             "spec": {"type": "NodePort", "clusterIP": "10.96.0.80", "selector": {"app": "web"},
                      "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                                {"port": 8081, "protocol": "UDP", "nodePort": 30081},
                                {"port": 8082, "protocol": "UDP", "nodePort": 30082}]}},
            {"metadata": {"namespace": "demo", "name": "hello"},
             "spec": {"clusterIP": "10.96.0.81", "selector": {"app": "web"},
                      "ports": [{"port": 80}]}},
            {"metadata": {"namespace": "default", "name": "kubernetes"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}},
            {"metadata": {"namespace": "demo", "name": "headless"},
             "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}},
            {"metadata": {"namespace": "demo", "name": "dns"},
             "spec": {"clusterIP": "10.96.0.10", "selector": {"k": "v"},
                      "ports": [{"port": 53, "protocol": "UDP"}]}},
            {"metadata": {"namespace": "kube-system", "name": "kube-dns"},
             "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                      "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}},
        ]});
        services_from_json(&v)
    }

    fn clients() -> Vec<Client> {
        vec![
            Client::KernelPod {
                namespace: "default".into(),
                name: "client".into(),
                netns: "x-default-client".into(),
            },
            Client::DpdkPod {
                namespace: "default".into(),
                name: "dpdk-a".into(),
                netns: "x-default-dpdk-a".into(),
                client: false,
            },
            Client::Node {
                name: "lab-dpdk".into(),
                netns: "x-lab-dpdk".into(),
            },
            Client::Outside {
                netns: "x-outside".into(),
            },
        ]
    }

    #[test]
    fn load_balanced_services_with_their_first_tcp_and_first_udp_port() {
        let s = svcs();
        assert_eq!(
            s.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["demo/dns", "demo/hello", "demo/web"]
        );
        assert_eq!(
            s[2].ports,
            [
                LabPort {
                    proto: Proto::Tcp,
                    port: 80,
                    node_port: Some(30080)
                },
                LabPort {
                    proto: Proto::Udp,
                    port: 8081,
                    node_port: Some(30081)
                }
            ]
        );
        assert_eq!(s[1].ports.len(), 1);
        assert_eq!(
            s[1].ports[0].node_port, None,
            "a ClusterIP has no node port"
        );
        assert_eq!(
            s[0].ports[0].proto,
            Proto::Udp,
            "a UDP-only Service is asked"
        );
    }

    #[test]
    fn cluster_ips_from_inside_node_ports_from_everyone_on_every_node_tcp_and_udp() {
        let nodes = vec![
            ("lab-dpdk".to_string(), "192.168.100.1".parse().unwrap()),
            ("lab-kernel".to_string(), "192.168.100.2".parse().unwrap()),
        ];
        let rows = plan_rows(&svcs(), &clients(), &nodes);
        // 3 in-cluster clients: dns 1 port, hello 1, web 2 (TCP, UDP); web's 2 node ports
        // x 2 nodes x 4 clients
        assert_eq!(rows.len(), 3 + 3 + 3 * 2 + 2 * 2 * 4);
        assert!(
            !rows
                .iter()
                .any(|r| r.client == 3 && r.target.starts_with("10.96.")),
            "the outside never asks a ClusterIP"
        );
        assert!(rows.iter().any(|r| r.client == 3
            && r.proto == Proto::Udp
            && r.target == "192.168.100.2:30081"
            && r.path == "NodePort on lab-kernel"));
        assert!(rows.iter().any(|r| r.client == 1
            && r.proto == Proto::Udp
            && r.target == "10.96.0.80:8081"
            && r.path == "ClusterIP"));
        let mut answers = vec![Answer::default(); rows.len()];
        for (r, a) in rows.iter().zip(answers.iter_mut()) {
            if r.client != 0 {
                a.backends.insert("web-1".into());
                a.backends.insert("web-2".into());
            }
        }
        let (table, ok, total) = render(&clients(), &rows, &answers);
        // DPDK rows without a client are listed, not counted (8 of 28); the kernel pod's 8
        // rows failed
        assert_eq!((ok, total), (12, 20));
        assert!(
            table.ends_with("services rows: 12/20 reachable\n"),
            "{table}"
        );
        assert!(table.contains("ok (web-1, web-2)"), "{table}");
        assert!(table.contains("not counted: no dtap0"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.contains("10.96.0.80:8081") && l.contains(" UDP ")),
            "{table}"
        );
    }

    #[test]
    fn ask_stops_at_two_backends_and_keeps_the_last_error_only_when_nothing_answered() {
        let mut n = 0;
        let a = ask(
            || {
                n += 1;
                Ok(format!("web-{}\n", n % 2))
            },
            10,
        );
        assert_eq!(n, 2);
        assert_eq!(a.backends.len(), 2);
        let mut n = 0;
        let a = ask(
            || {
                n += 1;
                Err(anyhow::anyhow!("wget: download timed out"))
            },
            10,
        );
        assert_eq!(n, 3, "gives up after three failures");
        assert!(a.backends.is_empty());
        assert_eq!(a.error.as_deref(), Some("wget: download timed out"));
    }
}
