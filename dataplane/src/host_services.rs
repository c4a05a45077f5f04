//! Host processes reaching Services where going through OVN cannot work, so the node's kernel
//! DNATs them itself, in the `output` hook of the node-port table ([`crate::nodeport`];
//! docs/services.md, "Host processes and Services").
//!
//! Two cases, both only for connections a process on the node opens:
//! - **A Service with a backend on this node's own address** (a hostNetwork endpoint here),
//!   whatever its VIP (ClusterIP, a node port of another node's join address). Through OVN the
//!   connection leaves by `ovn0` with the join address as source, is DNATed to the node's own
//!   address, and is routed back out of the same `ovn0`: the kernel receives a packet whose
//!   source is one of its own addresses and drops it as a martian. The kernel DNATs such a VIP
//!   over all its backends instead: its own address is delivered locally, every other backend
//!   is masqueraded as a node port is (a pod still sees the join address, as through OVN; a
//!   host of another node sees this node's address on that path). Template rows
//!   (`internalTrafficPolicy: Local`) are expanded with this chassis' `Chassis_Template_Var`,
//!   as ovn-controller does, so only this node's endpoints are ever picked.
//! - **A node port of another node with `externalTrafficPolicy: Local`.** Sent over the
//!   underlay, the other node would DNAT it and have to masquerade it: OVN routes the backend's
//!   reply to a node address straight to that node's `ovn0` (policy 30000), past the DNATing
//!   node's conntrack. DNATed here instead (the row's VIP on that address holds exactly that
//!   node's endpoints), the connection enters OVN through this node's `ovn0` with the client's
//!   own address, the reply comes back to this node's `ovn0` by that same policy, and this
//!   node's conntrack un-NATs it. The backend sees the client node's address, as with
//!   kube-proxy.
//!
//! Another node's address is one in the Southbound `Encap` table (the tunnel endpoints, the
//! nodes' InternalIPs). Its Cluster node ports are left to that node's own table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::nodeport::{L4, LbRow, NodeAddrs};

/// One VIP the node's kernel DNATs for its own processes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostService {
    pub vip: SocketAddr,
    pub l4: L4,
    /// Sorted, never empty (an empty VIP is left to OVN's reject).
    pub backends: Vec<SocketAddr>,
    /// The backends whose connections are masqueraded (none for another node's Local node
    /// port: its backend must see the client's address).
    pub masquerade: BTreeSet<SocketAddr>,
    /// The load balancer it came from (for logs).
    pub lb: String,
}

/// `s` with every `^NAME` replaced by this chassis' value of `NAME` (nothing when it has
/// none), as ovn-controller expands a template load balancer.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('^') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if let Some(v) = vars.get(&after[..end]) {
            out.push_str(v);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The VIPs this node's kernel DNATs for its own processes (module docs), first row by name
/// winning a VIP, as [`crate::nodeport::plan`] does.
pub fn plan(lbs: &[LbRow], addrs: &NodeAddrs, vars: &BTreeMap<String, String>) -> Vec<HostService> {
    let own = |ip: &IpAddr| addrs.local.contains(ip) && !addrs.ovn.contains(ip);
    let mut sorted: Vec<&LbRow> = lbs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut by_key: BTreeMap<(SocketAddr, L4), HostService> = BTreeMap::new();
    for lb in sorted {
        let Some(l4) = L4::parse(&lb.protocol) else {
            continue;
        };
        let template = lb.is_template();
        let local_policy = lb.is_local_policy();
        let external = lb.external_ips();
        for (vip, backends) in &lb.vips {
            let (vip, backends) = if template {
                (expand(vip, vars), expand(backends, vars))
            } else {
                (vip.clone(), backends.clone())
            };
            let Ok(vip) = vip.trim().parse::<SocketAddr>() else {
                continue;
            };
            let addr = vip.ip();
            // this node's own node ports and the externalIPs are the node-port table's already
            if addrs.local.contains(&addr) || external.contains(&addr) {
                continue;
            }
            let parsed: Option<Vec<SocketAddr>> = backends
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(|b| b.parse::<SocketAddr>().ok())
                .collect();
            let Some(mut parsed) = parsed else { continue };
            parsed.retain(|b| b.is_ipv4() == addr.is_ipv4());
            parsed.sort();
            parsed.dedup();
            if parsed.is_empty() {
                continue;
            }
            let other_node = addrs.nodes.contains(&addr);
            let masquerade = if other_node && !template && local_policy {
                BTreeSet::new()
            } else if !other_node && parsed.iter().any(|b| own(&b.ip())) {
                parsed
                    .iter()
                    .filter(|b| !addrs.local.contains(&b.ip()))
                    .copied()
                    .collect()
            } else {
                continue;
            };
            by_key.entry((vip, l4)).or_insert(HostService {
                vip,
                l4,
                backends: parsed,
                masquerade,
                lb: lb.name.clone(),
            });
        }
    }
    by_key.into_values().collect()
}

/// The chains of `services` for the node-port table: `host_services` (jumped to from
/// `output` only) dispatching each VIP to `hs<i>`, which picks a backend chain at random.
pub fn chains(services: &[HostService], mark: u32) -> String {
    let mut dispatch = String::from("  chain host_services {\n");
    let mut chains = String::new();
    for (i, hs) in services.iter().enumerate() {
        let af = if hs.vip.is_ipv4() { "ip" } else { "ip6" };
        let l4 = hs.l4.as_str();
        dispatch.push_str(&format!(
            "    {af} daddr {} {l4} dport {} goto hs{i}\n",
            hs.vip.ip(),
            hs.vip.port()
        ));
        chains.push_str(&format!("  chain hs{i} {{\n"));
        crate::nodeport::pick_backend(&mut chains, &format!("hs{i}"), hs.backends.len());
        chains.push_str("  }\n");
        for (j, b) in hs.backends.iter().enumerate() {
            let to = crate::nodeport::dnat_target(b);
            let set_mark = if hs.masquerade.contains(b) {
                format!("    meta mark set meta mark | 0x{mark:08x}\n")
            } else {
                String::new()
            };
            chains.push_str(&format!(
                "  chain hs{i}b{j} {{\n{set_mark}    meta l4proto {l4} dnat {af} to {to}\n  }}\n"
            ));
        }
    }
    dispatch.push_str("  }\n");
    dispatch.push_str(&chains);
    dispatch
}

/// This chassis' template variables from the Southbound (none when it has no row).
pub async fn read_template_vars(
    client: &ferrovn_ovsdb::Client,
    chassis: &str,
) -> Result<BTreeMap<String, String>, ferrovn_ovsdb::Error> {
    use ferrovn_ovsdb::{Operation, Transaction};
    let mut txn = Transaction::new("OVN_Southbound");
    txn.push(
        Operation::select("Chassis_Template_Var")
            .where_eq("chassis", chassis)
            .columns(["variables"]),
    );
    let results = client.transact(&txn).await?;
    let mut vars = BTreeMap::new();
    if let Some(ferrovn_ovsdb::OpResult::Rows(rows)) = results.first() {
        for row in rows {
            let Some(m) = row.get("variables").and_then(|d| d.as_map()) else {
                continue;
            };
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodeport::LOCAL_OPTION;

    fn row(name: &str, vips: &[(&str, &str)], options: &[(&str, &str)]) -> LbRow {
        LbRow {
            name: name.into(),
            protocol: "tcp".into(),
            vips: vips
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn addrs() -> NodeAddrs {
        NodeAddrs {
            local: ["192.168.100.1", "100.64.0.2"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            ovn: ["100.64.0.2".parse().unwrap()].into(),
            nodes: ["192.168.100.1", "192.168.100.2"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn templates_expand_with_this_chassis_variables() {
        let vars = BTreeMap::from([
            ("fvnA".to_string(), "10.96.0.20".to_string()),
            ("fvn_B".to_string(), "192.168.100.1:8080".to_string()),
        ]);
        assert_eq!(expand("^fvnA:80", &vars), "10.96.0.20:80");
        assert_eq!(expand("^fvn_B", &vars), "192.168.100.1:8080");
        assert_eq!(expand("^missing:80", &vars), ":80");
        assert_eq!(expand("10.0.0.1:80", &vars), "10.0.0.1:80");
    }

    #[test]
    fn own_host_endpoints_and_other_nodes_local_node_ports_are_dnated_by_the_kernel() {
        let vars = BTreeMap::from([
            ("fvnA".to_string(), "10.96.0.20".to_string()),
            ("fvnB".to_string(), "192.168.100.1:8080".to_string()),
            ("fvnC".to_string(), "10.96.0.23".to_string()),
            ("fvnD".to_string(), String::new()),
        ]);
        let lbs = [
            // internalTrafficPolicy: Local, this node's endpoint is its own host
            row(
                "svc:d/hl:tcp:local4",
                &[("^fvnA:80", "^fvnB"), ("^fvnC:80", "^fvnD")],
                &[("template", "true")],
            ),
            // Cluster, one backend on this host and a pod: both, the pod masqueraded
            row(
                "svc:d/hc:tcp",
                &[
                    ("10.96.0.21:80", "192.168.100.1:8080,10.16.0.5:8080"),
                    // this node's own node port: the node-port table's
                    ("192.168.100.1:30100", "192.168.100.1:8080,10.16.0.5:8080"),
                    // another node's Cluster node port: left to that node
                    ("192.168.100.2:30100", "192.168.100.1:8080,10.16.0.5:8080"),
                ],
                &[],
            ),
            // no backend here: OVN serves it as before
            row(
                "svc:d/pods:tcp",
                &[("10.96.0.22:80", "10.16.0.5:8080")],
                &[],
            ),
            // externalTrafficPolicy: Local, endpoints of node B on B's address
            row(
                "svc:d/local:tcp",
                &[
                    ("10.96.0.13:80", "10.16.0.6:8080,10.16.0.7:8080"),
                    ("192.168.100.1:30090", "10.16.0.7:8080"),
                    ("192.168.100.2:30090", "10.16.0.6:8080"),
                    ("192.168.100.2:30091", ""),
                ],
                &[(LOCAL_OPTION, "true")],
            ),
        ];
        let got = plan(&lbs, &addrs(), &vars);
        let vips: Vec<String> = got.iter().map(|h| h.vip.to_string()).collect();
        assert_eq!(
            vips,
            ["10.96.0.20:80", "10.96.0.21:80", "192.168.100.2:30090"],
            "{got:?}"
        );
        assert_eq!(got[0].backends, [sa("192.168.100.1:8080")]);
        assert!(got[0].masquerade.is_empty());
        assert_eq!(
            got[1].backends,
            [sa("10.16.0.5:8080"), sa("192.168.100.1:8080")]
        );
        assert_eq!(got[1].masquerade, BTreeSet::from([sa("10.16.0.5:8080")]));
        // another node's Local node port: that node's endpoint, the client's address kept
        // (its VIP without endpoints stays with that node, which refuses it)
        assert_eq!(got[2].backends, [sa("10.16.0.6:8080")]);
        assert!(got[2].masquerade.is_empty(), "the client's address is kept");

        let s = chains(&got, 0x0010_0000);
        assert!(
            s.contains("ip daddr 10.96.0.20 tcp dport 80 goto hs0"),
            "{s}"
        );
        assert!(
            s.contains("numgen random mod 2 vmap { 0 : goto hs1b0, 1 : goto hs1b1 }"),
            "{s}"
        );
        assert!(
            s.contains(
                "chain hs1b0 {\n    meta mark set meta mark | 0x00100000\n    meta l4proto tcp dnat ip to 10.16.0.5:8080\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("chain hs1b1 {\n    meta l4proto tcp dnat ip to 192.168.100.1:8080\n"),
            "{s}"
        );
        assert!(
            s.contains("chain hs2b0 {\n    meta l4proto tcp dnat ip to 10.16.0.6:8080\n"),
            "{s}"
        );
    }
}
