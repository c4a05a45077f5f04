//! `natOutgoing` on the node, for the distributed gateway: pods of a `natOutgoing: true` subnet
//! reach addresses outside every cluster CIDR with the node's address as source.
//!
//! The controller reroutes a pod's egress to its own node's join port (router policy 29000);
//! the node's kernel forwards it out of its uplink. This module adds the masquerade, with
//! nftables (Kube-OVN uses iptables + ipsets): one table `inet ferrovn` that FerrOVN owns
//! alone, replaced atomically in one `nft -f` transaction whenever the subnets change and
//! deleted when the node has no natOutgoing subnet (or no join allocation) any more. It lives
//! in the agent's network namespace, the node's; nothing else is touched. `natOutgoing: false`
//! subnets are not masqueraded: their pods' addresses are routed (the outside needs a route to
//! them via the node).
//!
//! A centralized-gateway subnet (`gatewayType: centralized`) is masqueraded only on the nodes of
//! its `gatewayNode` (the controller lists it in `ferrovn.io/gateway-snat` there, not in
//! `ferrovn.io/nat-outgoing-cidrs` anywhere); the `node:ip` form becomes an `snat` to that
//! address, ahead of the masquerade.
//!
//! The node must forward IPv4 (`net.ipv4.ip_forward=1`), which Kubernetes nodes do already;
//! the agent does not turn it on.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use ferrovn_api::annotations::{Annotations, NodeNetwork};

use crate::join_port::NodeSource;

/// FerrOVN's nftables table (family `inet`).
pub const TABLE: &str = "ferrovn";

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("node annotations: {0}")]
    Annotation(#[from] ferrovn_api::annotations::AnnotationError),
    #[error("nft: {0}")]
    Nft(String),
    #[error(transparent)]
    Source(#[from] Box<crate::join_port::JoinPortError>),
}

/// What to masquerade: sources in `nat`, destinations outside `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPlan {
    pub nat: BTreeSet<IpNet>,
    /// Every CIDR of the default VPC, the join subnet included: traffic to them stays routed.
    pub cluster: BTreeSet<IpNet>,
    /// Centralized-gateway subnets with a fixed source address (`gatewayNode` `node:ip`).
    pub snat: BTreeSet<(IpNet, IpAddr)>,
}

impl NatPlan {
    pub fn is_empty(&self) -> bool {
        self.nat.is_empty() && self.snat.is_empty()
    }
}

/// The plan for a node with `annotations` (empty: no table).
pub fn plan_from_node(annotations: &Annotations) -> Result<NatPlan, NatError> {
    let labels = Annotations::new();
    let n = NodeNetwork::new(annotations, &labels);
    if !n.join().allocated()? {
        return Ok(NatPlan::default());
    }
    let mut cluster: BTreeSet<IpNet> = n.pod_cidrs()?.into_iter().map(|c| c.trunc()).collect();
    if let Some(join) = n.join().cidr()? {
        cluster.extend(join.nets().map(|c| c.trunc()));
    }
    let mut nat: BTreeSet<IpNet> = n
        .nat_outgoing_cidrs()?
        .into_iter()
        .map(|c| c.trunc())
        .collect();
    let mut snat = BTreeSet::new();
    for (cidr, ip) in n.gateway_snat()? {
        match ip {
            Some(ip) => {
                snat.insert((cidr.trunc(), ip));
            }
            None => {
                nat.insert(cidr.trunc());
            }
        }
    }
    Ok(NatPlan { nat, cluster, snat })
}

fn set(name: &str, v4: bool, nets: &BTreeSet<IpNet>) -> String {
    let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
    let elems: Vec<String> = nets
        .iter()
        .filter(|n| n.addr().is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    let elements = if elems.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elems.join(", "))
    };
    format!("  set {name} {{ type {ty}; flags interval; auto-merge;{elements} }}\n")
}

/// The `nft -f` script that replaces the table with `plan` in one transaction (the `add` makes
/// the `delete` valid when the table does not exist yet).
pub fn ruleset(plan: &NatPlan) -> String {
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    s.push_str(&format!("table inet {TABLE} {{\n"));
    s.push_str(&set("nat_outgoing4", true, &plan.nat));
    s.push_str(&set("cluster4", true, &plan.cluster));
    s.push_str(&set("nat_outgoing6", false, &plan.nat));
    s.push_str(&set("cluster6", false, &plan.cluster));
    s.push_str("  chain postrouting {\n");
    s.push_str("    type nat hook postrouting priority srcnat; policy accept;\n");
    for (cidr, ip) in &plan.snat {
        let (af, cl) = if cidr.addr().is_ipv4() {
            ("ip", "@cluster4")
        } else {
            ("ip6", "@cluster6")
        };
        s.push_str(&format!(
            "    {af} saddr {cidr} {af} daddr != {cl} snat {af} to {ip} fully-random\n"
        ));
    }
    s.push_str("    ip saddr @nat_outgoing4 ip daddr != @cluster4 masquerade fully-random\n");
    s.push_str("    ip6 saddr @nat_outgoing6 ip6 daddr != @cluster6 masquerade fully-random\n");
    s.push_str("  }\n}\n");
    s
}

/// The script that removes the table (and nothing else); harmless when it is absent.
pub fn delete_script() -> String {
    format!("add table inet {TABLE}\ndelete table inet {TABLE}\n")
}

async fn nft(script: String) -> Result<(), NatError> {
    crate::nft::apply(&script).await.map_err(NatError::Nft)
}

/// Whether FerrOVN's table exists (a read; any failure counts as "no").
async fn table_exists() -> bool {
    tokio::process::Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Keeps the table in line with the node, every `interval`, forever: the first pass writes it
/// (a restarted agent does not know what is there; the atomic replacement keeps every NAT
/// mapping in conntrack), later passes only on change. A node without natOutgoing subnets
/// never gets a table, not even an empty one.
pub async fn run<S: NodeSource>(node: String, interval: Duration, source: S) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<NatPlan> = None;
    let mut last_err = String::new();
    loop {
        tick.tick().await;
        let plan = match source.annotations().await {
            Ok(Some(a)) => plan_from_node(&a),
            Ok(None) => Ok(NatPlan::default()),
            Err(e) => Err(NatError::Source(Box::new(e))),
        };
        let result = match plan {
            Ok(plan) if applied.as_ref() == Some(&plan) => Ok(()),
            // a node that never had natOutgoing: nothing is written, only a stale table (the
            // agent was down when the last subnet lost natOutgoing) is removed
            Ok(plan) if plan.is_empty() && applied.is_none() && !table_exists().await => {
                applied = Some(plan);
                Ok(())
            }
            Ok(plan) => {
                let script = if plan.is_empty() {
                    delete_script()
                } else {
                    ruleset(&plan)
                };
                let r = nft(script).await;
                if r.is_ok() {
                    let nat: Vec<String> = plan.nat.iter().map(ToString::to_string).collect();
                    tracing::info!(node = %node, table = TABLE, nat_outgoing = ?nat,
                        "natOutgoing masquerade {}", if plan.is_empty() { "off (table removed)" } else { "in place" });
                    applied = Some(plan);
                }
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => last_err.clear(),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_err {
                    tracing::warn!(node = %node, error = %msg, "natOutgoing not applied; retrying");
                    last_err = msg;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn node(nat: &str) -> Annotations {
        ann(&[
            ("ovn.kubernetes.io/allocated", "true"),
            ("ovn.kubernetes.io/ip_address", "100.64.0.2"),
            ("ovn.kubernetes.io/mac_address", "0a:58:64:40:00:02"),
            ("ovn.kubernetes.io/cidr", "100.64.0.0/16"),
            ("ovn.kubernetes.io/gateway", "100.64.0.1"),
            (NodeNetwork::POD_CIDRS, "10.16.0.0/16,10.17.0.0/16"),
            (NodeNetwork::NAT_OUTGOING_CIDRS, nat),
        ])
    }

    #[test]
    fn masquerades_nat_subnets_to_outside_the_cluster_only() {
        let p = plan_from_node(&node("10.16.0.0/16")).unwrap();
        let s = ruleset(&p);
        assert!(
            s.starts_with("add table inet ferrovn\ndelete table inet ferrovn\n"),
            "{s}"
        );
        assert!(s.contains("set nat_outgoing4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.16.0.0/16 }; }"), "{s}");
        assert!(
            s.contains("elements = { 10.16.0.0/16, 10.17.0.0/16, 100.64.0.0/16 }"),
            "{s}"
        );
        // an empty set has no elements clause (nft refuses `{ }`)
        assert!(
            s.contains("set nat_outgoing6 { type ipv6_addr; flags interval; auto-merge; }"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr @nat_outgoing4 ip daddr != @cluster4 masquerade"),
            "{s}"
        );
    }

    #[test]
    fn gateway_subnets_snat_to_their_address_before_the_masquerade() {
        let mut a = node("10.16.0.0/16");
        a.insert(
            NodeNetwork::GATEWAY_SNAT.into(),
            "10.18.0.0/16,10.19.0.0/16=203.0.113.7".into(),
        );
        let p = plan_from_node(&a).unwrap();
        assert!(p.nat.contains(&"10.18.0.0/16".parse().unwrap()));
        let s = ruleset(&p);
        let snat = s
            .find("ip saddr 10.19.0.0/16 ip daddr != @cluster4 snat ip to 203.0.113.7")
            .expect(&s);
        let masq = s.find("masquerade").expect(&s);
        assert!(snat < masq, "{s}");
        // a gateway-only node (no distributed natOutgoing subnet) still gets its table
        let mut only = node("");
        only.insert(
            NodeNetwork::GATEWAY_SNAT.into(),
            "10.19.0.0/16=203.0.113.7".into(),
        );
        assert!(!plan_from_node(&only).unwrap().is_empty());
    }

    #[test]
    fn no_nat_subnet_or_no_allocation_means_no_table() {
        assert!(plan_from_node(&node("")).unwrap().is_empty());
        assert!(plan_from_node(&Annotations::new()).unwrap().is_empty());
        assert_eq!(
            delete_script(),
            "add table inet ferrovn\ndelete table inet ferrovn\n"
        );
        let e = plan_from_node(&node("10.16.0.0/99"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ferrovn.io/nat-outgoing-cidrs"), "{e}");
    }
}
