//! The world of the NetworkPolicy truth tables (kernel pods in `netpol_traffic`, kernel and
//! DPDK pods in `netpol_traffic_dpdk`): the pods each crate names, placed on two nodes, the
//! node's join port as the last endpoint, the desired state the planner gets for a case, and
//! the model's verdict for every cell. Each crate lists its pods; the rest is this.

// Each test crate uses a part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ferrovn_control::plan::netpol::{NamedPort, PolicyNamespace, PolicyPod, Protocol};
use ferrovn_control::plan::{Desired, NbPlan, NodeIntent, PortIntent, plan};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::Node;

use crate::common::truth::{Cell, PORTS, expect, kernel_pod, objects};
use crate::netpol_model::{Endpoint, World};
use crate::subnet_acl_model::{self, SubnetAcl};

/// The node's join address (where kubelet probes come from) and its port's MAC.
pub const NODE_IP: &str = "100.64.0.2";
pub const NODE_MAC: MacAddr = MacAddr([0x0e, 0, 0, 0, 0xfe, 1]);
/// The switch of every pod.
pub const POD_SUBNET: &str = "ovn-default";

/// Pod `i`'s address and MAC.
pub fn pod_ip(i: usize) -> IpAddr {
    format!("10.16.0.{}", 10 + i).parse().unwrap()
}

pub fn pod_mac(i: usize) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, 0x10 + i as u8])
}

/// The pods of a table: their namespaces (labelled `ns=<name>`), each pod's interface and
/// where it is (provider of the attachment, node index: node `n<index + 1>`).
pub struct Layout {
    pub namespaces: &'static [&'static str],
    pub pods: Vec<PolicyPod>,
    pub placement: Vec<(&'static str, usize)>,
}

impl Layout {
    /// The endpoint index of the node; `0..node()` are the pods.
    pub fn node(&self) -> usize {
        self.pods.len()
    }

    pub fn world(&self, policies: Vec<NetworkPolicy>) -> World {
        World {
            namespaces: self
                .namespaces
                .iter()
                .map(|ns| PolicyNamespace {
                    name: ns.to_string(),
                    labels: BTreeMap::from([("ns".to_string(), ns.to_string())]),
                })
                .collect(),
            pods: self.pods.clone(),
            policies,
            node_ips: vec![NODE_IP.parse().unwrap()],
        }
    }

    /// The cluster the planner gets: the default VPC, node n1 (its join port), every pod's
    /// port on [`POD_SUBNET`], and `w`'s policies.
    pub fn desired(&self, w: &World) -> Desired {
        let mut d = crate::common::default_cluster("10.16.0.0/16", None);
        d.nodes.push(NodeIntent {
            name: "n1".into(),
            join_ips: vec![NODE_IP.parse().unwrap()],
            join_mac: Some(NODE_MAC),
            internal_ips: vec!["172.18.0.2".parse().unwrap()],
        });
        for (i, p) in w.pods.iter().enumerate() {
            let (provider, node) = self.placement[i];
            d.ports.push(PortIntent {
                pod: p.name.clone(),
                namespace: p.namespace.clone(),
                provider: provider.into(),
                subnet: POD_SUBNET.into(),
                node: format!("n{}", node + 1),
                mac: pod_mac(i),
                ips: p.ips.clone(),
                port_security: true,
            });
        }
        d.network_policy = w.input();
        d
    }

    pub fn endpoint(&self, i: usize) -> (Endpoint, IpAddr) {
        if i == self.node() {
            (Endpoint::Node, NODE_IP.parse().unwrap())
        } else {
            (Endpoint::Pod(i), pod_ip(i))
        }
    }

    /// A model's verdict for every cell.
    pub fn want(
        &self,
        verdict: impl Fn(&Endpoint, IpAddr, &Endpoint, IpAddr, Protocol, u16) -> bool,
    ) -> BTreeMap<Cell, bool> {
        expect(self.node() + 1, |s, d, proto, port| {
            let (src, sip) = self.endpoint(s);
            let (dst, dip) = self.endpoint(d);
            verdict(&src, sip, &dst, dip, proto, port)
        })
    }

    /// Node → pod is allowed whatever NetworkPolicies and admin policies say (kubelet probes).
    pub fn assert_node_reaches_pods(&self, want: &BTreeMap<Cell, bool>) {
        let node = self.node();
        for ((s, d, _), ok) in want {
            assert!(*s != node || *d == node || *ok, "model: node -> pod denied");
        }
    }

    /// A NetworkPolicy case (YAML documents without apiVersion / kind): its plan and the
    /// model's verdicts, node → pod allowed in every one.
    pub fn policy_case(&self, name: &str, yaml: &str) -> (NbPlan, BTreeMap<Cell, bool>) {
        let w = self.world(policies(yaml));
        let p = plan(&self.desired(&w));
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        let want = self.want(|s, sip, d, dip, proto, port| w.allowed(s, sip, d, dip, proto, port));
        self.assert_node_reaches_pods(&want);
        (p, want)
    }

    /// A subnet ACL case: `acls` as [`POD_SUBNET`]'s `spec.acls` next to the NetworkPolicies
    /// `np`: its plan and the verdicts of [`subnet_acl_model::allowed`].
    pub fn subnet_acl_case(
        &self,
        name: &str,
        acls: &[SubnetAcl],
        np: &str,
    ) -> (NbPlan, BTreeMap<Cell, bool>) {
        let w = self.world(policies(np));
        let mut d = self.desired(&w);
        let s = d.subnets.iter_mut().find(|s| s.name == POD_SUBNET).unwrap();
        s.acls = acls.iter().map(SubnetAcl::intent).collect();
        let p = plan(&d);
        assert!(p.issues.is_empty(), "{name}: {:?}", p.issues);
        let want = self.want(|s, sip, d, dip, proto, port| {
            subnet_acl_model::allowed(&w, acls, (s, sip), (d, dip), proto, port)
        });
        (p, want)
    }
}

pub fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    objects(yaml, "networking.k8s.io/v1", "NetworkPolicy")
}

/// The named ports every pod serves, under the upstream suite's names: `serve-<port>-<proto>`
/// for each column of [`PORTS`].
pub fn serve_ports() -> Vec<NamedPort> {
    PORTS
        .iter()
        .map(|(proto, port)| NamedPort {
            name: format!("serve-{port}-{}", proto.ovn()),
            protocol: *proto,
            port: *port,
        })
        .collect()
}

/// The named port `web` on TCP `port` (the tables give it different numbers on different pods).
pub fn web(port: u16) -> NamedPort {
    NamedPort {
        name: "web".into(),
        protocol: Protocol::Tcp,
        port,
    }
}

/// The node as a table endpoint: its join port `node-n1` (as `ovn0` on a real node) on
/// `node`'s br-int, routing to the pod network through the cluster router.
pub fn node_port(node: &Node, prefix: &str, tag: &str) -> Netns {
    kernel_pod(
        node,
        prefix,
        tag,
        "node",
        "node-n1",
        NODE_MAC,
        &format!("{NODE_IP}/16"),
        &[("10.16.0.0/16", "100.64.0.1")],
    )
}

/// The subnet ACL case both tables run for the node's untracked reply (ovn-northd(8): the
/// switch skips conntrack for packets from its router port).
pub const SERVER_REPLY_CASE: &str = "from-lport drops of what TCP 80 and UDP 81 servers send back, on a stateful switch: pods' replies pass on their conntrack entry, the node's (untracked, from the router port) do not: pod -> node TCP 80 and UDP 81 closed, node -> pod open";

/// Entries that match only a reply from a TCP 80 or UDP 81 server (never a request: its
/// source port is ephemeral), and an `allow-related` entry for what is allowed anyway, which
/// makes the switch stateful.
pub fn server_reply_drops() -> Vec<SubnetAcl> {
    vec![
        SubnetAcl::drop_from(1500).sport(Protocol::Tcp, 80),
        SubnetAcl::drop_from(1500).sport(Protocol::Udp, 81),
        SubnetAcl::allow_to(1400).dport(Protocol::Udp, 80),
    ]
}

/// The drops-only entries both tables start their subnet ACL cases with: TCP 81 dropped
/// towards `tcp81_to` (from everyone, the node too), UDP 80 dropped as it leaves
/// `udp80_from`, and everything `mute` sends (so, without a stateful ACL, nobody gets a reply
/// from it either).
pub fn subnet_drops(
    tcp81_to: &'static [&'static str],
    udp80_from: &'static [&'static str],
    mute: &'static [&'static str],
) -> Vec<SubnetAcl> {
    vec![
        SubnetAcl::drop_to(1500)
            .dst(tcp81_to)
            .dport(Protocol::Tcp, 81),
        SubnetAcl::drop_from(1500)
            .src(udp80_from)
            .dport(Protocol::Udp, 80),
        SubnetAcl::drop_to(1500).src(mute),
    ]
}

/// `acls` plus one `allow-related` entry (UDP 81 towards `udp81_to`), which makes the switch
/// stateful.
pub fn made_stateful(
    mut acls: Vec<SubnetAcl>,
    udp81_to: &'static [&'static str],
) -> Vec<SubnetAcl> {
    acls.push(
        SubnetAcl::allow_to(1400)
            .dst(udp81_to)
            .dport(Protocol::Udp, 81),
    );
    acls
}
