//! Node ports from outside OVN: a packet from another node or from outside the cluster to
//! `<this node's address>:<nodePort>` arrives at the node's kernel, not at an OVN logical
//! switch, so OVN's load balancers never see it. This module steers it into OVN with
//! nftables, in the node's network namespace (docs/services.md, "Node ports from outside").
//!
//! The source of truth is what the controller already planned: the Southbound copy of every
//! FerrOVN `Load_Balancer` row. A VIP of such a row whose address is one of this node's own
//! addresses (not the join address on `ovn0`, which OVN serves itself) is a node port of this
//! node, and its backends are exactly the endpoints Kubernetes semantics allow there (for
//! `externalTrafficPolicy: Local` the planner already kept only this node's). So the node needs
//! no Service or EndpointSlice watch of its own, and both paths always agree. A Service's
//! externalIPs and LoadBalancer ingress IPs ([`EXTERNAL_IPS_OPTION`] on its row) are steered
//! the same way on every node, whichever one the outside routes them to.
//!
//! Per node port, one table `inet ferrovn-nodeport` (FerrOVN's alone, replaced atomically):
//! - `prerouting` / `output` (nat, dstnat): DNAT to one backend, picked at random
//!   (`numgen random`, one chain per backend). The pod addresses are routed through `ovn0`.
//! - `postrouting` (nat, srcnat): masquerade what was marked, so the backend answers the
//!   node's join address and the reply comes back through this node's `ovn0` to be un-NATed
//!   here. `externalTrafficPolicy: Local` (the planner's `options:ferrovn_node_port_local`)
//!   is not marked: the backend sees the client's address, and its reply still reaches this
//!   node, because a Local backend is on this node and its egress leaves through its own
//!   node (the distributed gateway). Clients that are cluster nodes are masqueraded even then:
//!   OVN routes traffic to a node address straight to that node's `ovn0`, which would bypass
//!   this node's un-NAT.
//! - `input` (filter): a node port without backends is refused (TCP reset, ICMP port
//!   unreachable), as OVN's `reject` does for the same VIP from pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// FerrOVN's node-port table (family `inet`); `nat_outgoing` owns `ferrovn`.
pub const TABLE: &str = "ferrovn-nodeport";
/// The `Load_Balancer` option the controller sets on a Service with
/// `externalTrafficPolicy: Local` (northd copies NB options to the SB row).
pub const LOCAL_OPTION: &str = "ferrovn_node_port_local";
/// The `Load_Balancer` option listing a Service's externalIPs and LoadBalancer ingress IPs
/// (`externalTrafficPolicy: Cluster`): VIPs on those addresses are steered on every node, like
/// node ports, whichever node the outside routes them to.
pub const EXTERNAL_IPS_OPTION: &str = "ferrovn_external_ips";
/// The packet mark bit that asks `postrouting` to masquerade (kube-proxy uses 0x4000,
/// Kube-OVN 0x4000/0x20000; this bit is neither).
pub const MASQUERADE_MARK: u32 = 0x0010_0000;

#[derive(Debug, thiserror::Error)]
pub enum NodePortError {
    #[error("nft: {0}")]
    Nft(String),
    #[error("southbound {remote}: {reason}")]
    Southbound { remote: String, reason: String },
    #[error("node addresses: {0}")]
    Addresses(String),
}

/// What the planner needs of one Southbound `Load_Balancer` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbRow {
    pub name: String,
    /// `tcp`, `udp` or `sctp`; empty means tcp (ovn-sb(5)).
    pub protocol: String,
    pub vips: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

impl LbRow {
    /// A template load balancer: its VIPs and backends name the chassis' template variables.
    pub fn is_template(&self) -> bool {
        self.option_is_true("template")
    }

    /// Served by the local node's endpoints only (a Local traffic policy).
    pub fn is_local_policy(&self) -> bool {
        self.option_is_true(LOCAL_OPTION)
    }

    /// The Service's externalIPs and ingress IPs the controller listed on the row (unparsable
    /// entries skipped).
    pub fn external_ips(&self) -> BTreeSet<IpAddr> {
        self.options
            .get(EXTERNAL_IPS_OPTION)
            .map(|v| v.split(',').filter_map(|a| a.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn option_is_true(&self, key: &str) -> bool {
        self.options.get(key).is_some_and(|v| v == "true")
    }
}

/// The node's addresses as the planner sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Every address of the node's own interfaces.
    pub local: BTreeSet<IpAddr>,
    /// Those OVN serves itself (the join address on `ovn0`): never steered.
    pub ovn: BTreeSet<IpAddr>,
    /// Addresses of the cluster's nodes (tunnel endpoints): clients always masqueraded.
    pub nodes: BTreeSet<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    pub(crate) fn parse(s: &str) -> Option<L4> {
        match s {
            "" | "tcp" => Some(L4::Tcp),
            "udp" => Some(L4::Udp),
            "sctp" => Some(L4::Sctp),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Sctp => "sctp",
        }
    }
}

/// One node port of this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodePort {
    pub addr: IpAddr,
    pub l4: L4,
    pub port: u16,
    /// Sorted; empty: refused.
    pub backends: Vec<SocketAddr>,
    /// `externalTrafficPolicy: Local`: the client's address is kept (except for node clients).
    pub keep_source: bool,
    /// The load balancer it came from (for logs and issues).
    pub lb: String,
}

/// The node ports to steer, and the node addresses that are always masqueraded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePortPlan {
    pub ports: Vec<NodePort>,
    pub node_sources: BTreeSet<IpAddr>,
    /// VIPs the kernel DNATs for the node's own processes only ([`crate::host_services`]).
    pub host: Vec<crate::host_services::HostService>,
    /// Rows or VIPs left out, with why.
    pub issues: Vec<String>,
}

impl NodePortPlan {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.host.is_empty()
    }
}

/// Which of the load balancers' VIPs are node ports of this node, and where they go.
pub fn plan(lbs: &[LbRow], addrs: &NodeAddrs) -> NodePortPlan {
    plan_with_templates(lbs, addrs, &BTreeMap::new())
}

/// [`plan`], with this chassis' template variables: a template row's VIPs on externalIPs and
/// ingress IPs (`externalTrafficPolicy: Local`, listed in its [`EXTERNAL_IPS_OPTION`]) are
/// steered with this node's endpoints, keeping the client's address.
pub fn plan_with_templates(
    lbs: &[LbRow],
    addrs: &NodeAddrs,
    vars: &BTreeMap<String, String>,
) -> NodePortPlan {
    let mut out = NodePortPlan {
        node_sources: addrs.nodes.union(&addrs.local).copied().collect(),
        ..Default::default()
    };
    let mut by_key: BTreeMap<(IpAddr, L4, u16), NodePort> = BTreeMap::new();
    let mut sorted: Vec<&LbRow> = lbs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for lb in sorted {
        // template rows (`^VAR` VIPs) are expanded per chassis by ovn-controller; node ports
        // are never templates, Local externalIPs are (expanded here as ovn-controller does)
        let template = lb.is_template();
        if template && !lb.options.contains_key(EXTERNAL_IPS_OPTION) {
            continue;
        }
        let Some(l4) = L4::parse(&lb.protocol) else {
            out.issues.push(format!(
                "{}: protocol {:?} is not tcp, udp or sctp",
                lb.name, lb.protocol
            ));
            continue;
        };
        let keep_source = lb.is_local_policy();
        let external = lb.external_ips();
        for (vip, backends) in &lb.vips {
            let (vip, backends) = if template {
                (
                    crate::host_services::expand(vip, vars),
                    crate::host_services::expand(backends, vars),
                )
            } else {
                (vip.clone(), backends.clone())
            };
            let backends = &backends;
            let Ok(vip) = vip.parse::<SocketAddr>() else {
                // a VIP without a port balances every port: no node port is like that
                continue;
            };
            let addr = vip.ip();
            let node_port = !template && addrs.local.contains(&addr) && !addrs.ovn.contains(&addr);
            if !node_port && !external.contains(&addr) {
                continue;
            }
            // an external IP of a plain row is Cluster policy: masqueraded like any Cluster
            // node port; of a template row, Local: this node's endpoints, client kept
            let keep_source = (keep_source && node_port) || template;
            let mut parsed = Vec::new();
            let mut bad = false;
            for b in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                match b.parse::<SocketAddr>() {
                    Ok(s) if s.is_ipv4() == addr.is_ipv4() => parsed.push(s),
                    _ => bad = true,
                }
            }
            if bad {
                out.issues.push(format!(
                    "{}: VIP {vip}: backends {backends:?} are not all ip:port of its family (left out)",
                    lb.name
                ));
                continue;
            }
            parsed.sort();
            parsed.dedup();
            let key = (addr, l4, vip.port());
            if let Some(first) = by_key.get(&key) {
                out.issues.push(format!(
                    "{}: VIP {vip}/{} is already served by {} (left out)",
                    lb.name,
                    l4.as_str(),
                    first.lb
                ));
                continue;
            }
            by_key.insert(
                key,
                NodePort {
                    addr,
                    l4,
                    port: vip.port(),
                    backends: parsed,
                    keep_source,
                    lb: lb.name.clone(),
                },
            );
        }
    }
    out.ports = by_key.into_values().collect();
    out
}

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "ip" } else { "ip6" }
}

fn set(name: &str, v4: bool, addrs: &BTreeSet<IpAddr>) -> String {
    let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
    let elems: Vec<String> = addrs
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    let elements = if elems.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elems.join(", "))
    };
    format!("  set {name} {{ type {ty};{elements} }}\n")
}

/// The `nft -f` script that replaces the table with `plan` in one transaction.
pub fn ruleset(plan: &NodePortPlan) -> String {
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    s.push_str(&format!("table inet {TABLE} {{\n"));
    s.push_str(&set("node_sources4", true, &plan.node_sources));
    s.push_str(&set("node_sources6", false, &plan.node_sources));
    let mut dispatch = String::new();
    let mut reject = String::new();
    let mut chains = String::new();
    for (i, np) in plan.ports.iter().enumerate() {
        let af = family(&np.addr);
        let l4 = np.l4.as_str();
        let m = format!("{af} daddr {} {l4} dport {}", np.addr, np.port);
        if np.backends.is_empty() {
            let verdict = match np.l4 {
                L4::Tcp => "reject with tcp reset",
                _ => "reject with icmpx type port-unreachable",
            };
            reject.push_str(&format!("    {m} {verdict}\n"));
            continue;
        }
        dispatch.push_str(&format!("    {m} goto np{i}\n"));
        chains.push_str(&format!("  chain np{i} {{\n"));
        let mark = format!("meta mark set meta mark | 0x{MASQUERADE_MARK:08x}");
        if np.keep_source {
            let set = if np.addr.is_ipv4() {
                "@node_sources4"
            } else {
                "@node_sources6"
            };
            chains.push_str(&format!("    {af} saddr {set} {mark}\n"));
        } else {
            chains.push_str(&format!("    {mark}\n"));
        }
        pick_backend(&mut chains, &format!("np{i}"), np.backends.len());
        chains.push_str("  }\n");
        for (j, b) in np.backends.iter().enumerate() {
            let to = dnat_target(b);
            chains.push_str(&format!(
                "  chain np{i}b{j} {{\n    meta l4proto {l4} dnat {af} to {to}\n  }}\n"
            ));
        }
    }
    s.push_str("  chain node_ports {\n");
    s.push_str(&dispatch);
    s.push_str("  }\n");
    s.push_str(&chains);
    s.push_str(&crate::host_services::chains(&plan.host, MASQUERADE_MARK));
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump node_ports\n  }\n");
    // nft 1.0.6 knows the name `dstnat` only at prerouting: -100 is its value
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    jump host_services\n    jump node_ports\n  }\n");
    s.push_str(&format!(
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & 0x{MASQUERADE_MARK:08x} == 0x{MASQUERADE_MARK:08x} masquerade fully-random\n  }}\n"
    ));
    s.push_str("  chain input {\n    type filter hook input priority filter; policy accept;\n");
    s.push_str(&reject);
    s.push_str("  }\n}\n");
    s
}

/// The script that removes the table (and nothing else); harmless when it is absent.
pub fn delete_script() -> String {
    format!("add table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Runs `nft -f -` with `script` in this process' network namespace.
pub async fn nft(script: &str) -> Result<(), NodePortError> {
    crate::nft::apply(script).await.map_err(NodePortError::Nft)
}

/// FerrOVN's load balancers and the cluster's tunnel endpoints, read from the Southbound in
/// one transaction.
pub async fn read_southbound(
    client: &ferrovn_ovsdb::Client,
) -> Result<(Vec<LbRow>, BTreeSet<IpAddr>), NodePortError> {
    use ferrovn_ovsdb::{Operation, Transaction};
    let err = |reason: String| NodePortError::Southbound {
        remote: "OVN_Southbound".to_string(),
        reason,
    };
    let mut txn = Transaction::new("OVN_Southbound");
    txn.push(Operation::select("Load_Balancer"));
    txn.push(Operation::select("Encap"));
    let results = client
        .transact(&txn)
        .await
        .map_err(|e| err(e.to_string()))?;
    let rows = |i: usize| -> Vec<ferrovn_ovsdb::ColumnValues> {
        match results.get(i) {
            Some(ferrovn_ovsdb::OpResult::Rows(r)) => r.clone(),
            _ => Vec::new(),
        }
    };
    let map = |row: &ferrovn_ovsdb::ColumnValues, col: &str| -> BTreeMap<String, String> {
        row.get(col)
            .and_then(|d| d.as_map())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |row: &ferrovn_ovsdb::ColumnValues, col: &str| -> String {
        row.get(col)
            .and_then(|d| {
                d.as_atom()
                    .or_else(|| d.as_atoms().and_then(|a| a.first()))
                    .and_then(|a| a.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let lbs = rows(0)
        .iter()
        .map(|r| LbRow {
            name: string(r, "name"),
            protocol: string(r, "protocol"),
            vips: map(r, "vips"),
            options: map(r, "options"),
        })
        .filter(|lb| lb.name.starts_with("svc:"))
        .collect();
    let encaps = rows(1)
        .iter()
        .filter_map(|r| string(r, "ip").parse().ok())
        .collect();
    Ok((lbs, encaps))
}

/// This namespace's interface addresses: (all, those on `ovn_if`).
pub async fn local_addresses(
    ovn_if: &str,
) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), NodePortError> {
    let out = tokio::process::Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .await
        .map_err(|e| NodePortError::Addresses(format!("running ip: {e}")))?;
    if !out.status.success() {
        return Err(NodePortError::Addresses(format!(
            "ip -j addr show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ip_addr_json(&out.stdout, ovn_if)
}

/// `ip -j addr show` → (all addresses, those on `ovn_if`); link-local and loopback left out.
pub fn parse_ip_addr_json(
    json: &[u8],
    ovn_if: &str,
) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), NodePortError> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| NodePortError::Addresses(format!("ip -j addr show: {e}")))?;
    let (mut all, mut ovn) = (BTreeSet::new(), BTreeSet::new());
    for link in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let ifname = link["ifname"].as_str().unwrap_or("");
        for a in link["addr_info"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            let link_local = match ip {
                IpAddr::V4(v) => v.is_link_local(),
                IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
            };
            if ip.is_loopback() || link_local {
                continue;
            }
            all.insert(ip);
            if ifname == ovn_if {
                ovn.insert(ip);
            }
        }
    }
    Ok((all, ovn))
}

/// Keeps the table in line with the Southbound, every `interval`, until `stop` resolves; then
/// removes it. A node without node ports never gets a table; the first pass removes a stale
/// one (the agent was killed). Each read of the load balancers is also fed to `reflush`
/// (removed backends' conntrack, [`crate::ct_reflush`]).
pub async fn run(
    sb_remote: String,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut reflush: Option<crate::ct_reflush::Reflusher>,
    chassis: Option<String>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<NodePortPlan> = None;
    let mut client: Option<ferrovn_ovsdb::Client> = None;
    // health check node ports come from the same rows (crate::health_node_port)
    let mut health =
        crate::health_node_port::HealthServer::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mut last_err = String::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let result = pass(
            &sb_remote,
            &mut client,
            &mut applied,
            reflush.as_mut(),
            &mut health,
            chassis.as_deref(),
        )
        .await;
        match result {
            Ok(()) => last_err.clear(),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_err {
                    tracing::warn!(error = %msg, "node ports not applied; retrying");
                    last_err = msg;
                }
            }
        }
    }
    if applied.is_some_and(|p| !p.is_empty()) {
        match nft(&delete_script()).await {
            Ok(()) => tracing::info!(table = TABLE, "node ports removed (agent stopping)"),
            Err(e) => tracing::warn!(error = %e, "node-port table not removed"),
        }
    }
}

async fn pass(
    sb_remote: &str,
    client: &mut Option<ferrovn_ovsdb::Client>,
    applied: &mut Option<NodePortPlan>,
    reflush: Option<&mut crate::ct_reflush::Reflusher>,
    health: &mut crate::health_node_port::HealthServer,
    chassis: Option<&str>,
) -> Result<(), NodePortError> {
    if client.is_none() {
        let options = ferrovn_ovsdb::ClientOptions {
            connect_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let c = ferrovn_ovsdb::Client::connect(sb_remote, "OVN_Southbound", options)
            .await
            .map_err(|e| NodePortError::Southbound {
                remote: sb_remote.to_string(),
                reason: e.to_string(),
            })?;
        *client = Some(c);
    }
    let Some(c) = client.as_ref() else {
        return Ok(());
    };
    let read = read_southbound(c).await;
    let (lbs, encaps) = match read {
        Ok(r) => r,
        Err(e) => {
            *client = None;
            return Err(e);
        }
    };
    if let Some(r) = reflush {
        r.observe(&lbs);
    }
    let (local, ovn) = local_addresses(crate::join_port::IFNAME).await?;
    for (port, why) in health
        .apply(crate::health_node_port::plan(&lbs, &local))
        .await
    {
        tracing::warn!(port, error = %why, "health check node port not served; retrying");
    }
    // template rows (internalTrafficPolicy: Local) mean this chassis' variables
    let vars = match chassis {
        Some(ch) => match crate::host_services::read_template_vars(c, ch).await {
            Ok(v) => v,
            Err(e) => {
                *client = None;
                return Err(NodePortError::Southbound {
                    remote: sb_remote.to_string(),
                    reason: e.to_string(),
                });
            }
        },
        None => BTreeMap::new(),
    };
    let addrs = NodeAddrs {
        local,
        ovn,
        nodes: encaps,
    };
    let mut plan = plan_with_templates(&lbs, &addrs, &vars);
    plan.host = crate::host_services::plan(&lbs, &addrs, &vars);
    if applied.as_ref() == Some(&plan) {
        return Ok(());
    }
    if plan.is_empty() && applied.is_none() {
        // nothing to steer: remove a stale table only (harmless when absent); tried once,
        // so a node without nft is not asked again every pass
        let r = nft(&delete_script()).await;
        *applied = Some(plan);
        return r;
    }
    let script = if plan.is_empty() {
        delete_script()
    } else {
        ruleset(&plan)
    };
    nft(&script).await?;
    for i in &plan.issues {
        tracing::warn!(issue = %i, "node port left out");
    }
    tracing::info!(
        table = TABLE,
        node_ports = plan.ports.len(),
        host_services = plan.host.len(),
        "node ports steered into OVN"
    );
    *applied = Some(plan);
    Ok(())
}

/// The rule that sends a connection to one of `n` backend chains `<chain>b<j>` at random
/// (nft's `numgen`, picked per connection: the DNAT is then remembered by conntrack).
pub(crate) fn pick_backend(chains: &mut String, chain: &str, n: usize) {
    if n == 1 {
        chains.push_str(&format!("    goto {chain}b0\n"));
    } else {
        let arms: Vec<String> = (0..n).map(|j| format!("{j} : goto {chain}b{j}")).collect();
        chains.push_str(&format!(
            "    numgen random mod {n} vmap {{ {} }}\n",
            arms.join(", ")
        ));
    }
}

/// A backend as nft's `dnat to` takes it (IPv6 in brackets, so the port is not read as part of
/// the address).
pub(crate) fn dnat_target(b: &SocketAddr) -> String {
    match b {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lb(name: &str, proto: &str, vips: &[(&str, &str)], local: bool) -> LbRow {
        let mut options = BTreeMap::from([("reject".to_string(), "true".to_string())]);
        if local {
            options.insert(LOCAL_OPTION.into(), "true".into());
        }
        LbRow {
            name: name.into(),
            protocol: proto.into(),
            vips: vips
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options,
        }
    }

    fn addrs() -> NodeAddrs {
        NodeAddrs {
            local: ["192.168.100.1", "100.64.0.2", "203.0.113.1"]
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

    #[test]
    fn only_this_nodes_own_addresses_become_node_ports() {
        let lbs = [lb(
            "svc:demo/web:tcp",
            "tcp",
            &[
                ("10.96.0.80:80", "10.16.0.5:80,10.16.0.6:80"),
                ("192.168.100.1:30080", "10.16.0.6:80,10.16.0.5:80"),
                ("192.168.100.2:30080", "10.16.0.5:80,10.16.0.6:80"),
                ("100.64.0.2:30080", "10.16.0.5:80,10.16.0.6:80"),
            ],
            false,
        )];
        let p = plan(&lbs, &addrs());
        assert_eq!(p.ports.len(), 1, "{p:?}");
        let np = &p.ports[0];
        assert_eq!(np.addr.to_string(), "192.168.100.1");
        assert_eq!((np.l4, np.port, np.keep_source), (L4::Tcp, 30080, false));
        assert_eq!(
            np.backends,
            vec![
                "10.16.0.5:80".parse().unwrap(),
                "10.16.0.6:80".parse().unwrap()
            ]
        );
        let s = ruleset(&p);
        assert!(
            s.starts_with("add table inet ferrovn-nodeport\ndelete table inet ferrovn-nodeport\n"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 192.168.100.1 tcp dport 30080 goto np0"),
            "{s}"
        );
        assert!(
            s.contains("numgen random mod 2 vmap { 0 : goto np0b0, 1 : goto np0b1 }"),
            "{s}"
        );
        assert!(
            s.contains("meta l4proto tcp dnat ip to 10.16.0.6:80"),
            "{s}"
        );
        assert!(
            s.contains("    meta mark set meta mark | 0x00100000\n"),
            "{s}"
        );
        assert!(
            s.contains("meta mark & 0x00100000 == 0x00100000 masquerade"),
            "{s}"
        );
    }

    #[test]
    fn local_policy_keeps_the_source_except_for_nodes_and_no_backend_is_refused() {
        let lbs = [
            lb(
                "svc:default/local:udp",
                "udp",
                &[("192.168.100.1:30090", "10.16.0.21:8080")],
                true,
            ),
            lb(
                "svc:default/empty:tcp",
                "tcp",
                &[("192.168.100.1:30091", "")],
                false,
            ),
            lb(
                "svc:default/empty:udp",
                "udp",
                &[("192.168.100.1:30091", "")],
                false,
            ),
        ];
        let p = plan(&lbs, &addrs());
        assert_eq!(p.ports.len(), 3);
        let s = ruleset(&p);
        assert!(
            s.contains("ip saddr @node_sources4 meta mark set meta mark | 0x00100000"),
            "{s}"
        );
        assert!(s.contains("    goto np"), "{s}");
        assert!(
            s.contains("meta l4proto udp dnat ip to 10.16.0.21:8080"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 192.168.100.1 tcp dport 30091 reject with tcp reset"),
            "{s}"
        );
        assert!(
            s.contains(
                "ip daddr 192.168.100.1 udp dport 30091 reject with icmpx type port-unreachable"
            ),
            "{s}"
        );
        // the node's own addresses count as node sources too (host → own node port)
        assert!(
            s.contains("elements = { 100.64.0.2, 192.168.100.1, 192.168.100.2, 203.0.113.1 }"),
            "{s}"
        );
    }

    #[test]
    fn templates_bad_rows_and_duplicates_are_left_out_with_a_reason() {
        let mut tpl = lb(
            "svc:default/local:tcp:local4",
            "tcp",
            &[("^fvnA:80", "^fvnB")],
            false,
        );
        tpl.options.insert("template".into(), "true".into());
        let lbs = [
            tpl,
            lb(
                "svc:a/x:tcp",
                "tcp",
                &[("192.168.100.1:30000", "10.16.0.1:80")],
                false,
            ),
            lb(
                "svc:b/y:tcp",
                "tcp",
                &[("192.168.100.1:30000", "10.16.0.2:80")],
                false,
            ),
            lb(
                "svc:c/z:tcp",
                "tcp",
                &[("192.168.100.1:30001", "[fd00::1]:80")],
                false,
            ),
            lb(
                "svc:d/w:icmp",
                "icmp",
                &[("192.168.100.1:30002", "10.16.0.2:80")],
                false,
            ),
        ];
        let p = plan(&lbs, &addrs());
        assert_eq!(p.ports.len(), 1, "{p:?}");
        assert_eq!(p.ports[0].lb, "svc:a/x:tcp");
        assert_eq!(p.issues.len(), 3, "{:?}", p.issues);
        assert!(
            p.issues
                .iter()
                .any(|i| i.contains("already served by svc:a/x:tcp"))
        );
        assert!(
            p.issues
                .iter()
                .any(|i| i.contains("not all ip:port of its family"))
        );
        assert!(p.issues.iter().any(|i| i.contains("\"icmp\"")));
    }

    #[test]
    fn local_external_ips_are_expanded_with_this_chassis_variables() {
        let mut tpl = lb(
            "svc:default/ext:tcp:local4",
            "tcp",
            &[("^fvnA:80", "^fvnB"), ("^fvnC:80", "^fvnD")],
            false,
        );
        tpl.options.insert("template".into(), "true".into());
        tpl.options
            .insert(EXTERNAL_IPS_OPTION.into(), "198.51.100.80".into());
        let vars = BTreeMap::from([
            ("fvnA".to_string(), "198.51.100.80".to_string()),
            ("fvnB".to_string(), "10.16.0.21:8080".to_string()),
            // the ClusterIP of the same template row: not an external address
            ("fvnC".to_string(), "10.96.0.15".to_string()),
            ("fvnD".to_string(), "10.16.0.21:8080".to_string()),
        ]);
        let p = plan_with_templates(std::slice::from_ref(&tpl), &addrs(), &vars);
        assert_eq!(p.ports.len(), 1, "{p:?}");
        let np = &p.ports[0];
        assert_eq!(np.addr.to_string(), "198.51.100.80");
        assert!(np.keep_source, "Local: the client's address is kept");
        assert_eq!(np.backends, vec!["10.16.0.21:8080".parse().unwrap()]);
        // without endpoints on this node: refused here
        let empty = BTreeMap::from([("fvnA".to_string(), "198.51.100.80".to_string())]);
        let p = plan_with_templates(&[tpl.clone()], &addrs(), &empty);
        assert_eq!(p.ports.len(), 1);
        assert!(p.ports[0].backends.is_empty());
        // without the chassis' variables (no chassis known): nothing
        assert!(plan(&[tpl], &addrs()).ports.is_empty());
    }

    #[test]
    fn ipv6_node_ports_use_ip6_and_brackets() {
        let mut a = addrs();
        a.local.insert("fd00:100::1".parse().unwrap());
        let lbs = [lb(
            "svc:default/v6:tcp",
            "tcp",
            &[("[fd00:100::1]:30080", "[fd00:10:16::5]:8080")],
            false,
        )];
        let s = ruleset(&plan(&lbs, &a));
        assert!(
            s.contains("ip6 daddr fd00:100::1 tcp dport 30080 goto np0"),
            "{s}"
        );
        assert!(
            s.contains("meta l4proto tcp dnat ip6 to [fd00:10:16::5]:8080"),
            "{s}"
        );
    }

    #[test]
    fn the_local_option_is_the_one_the_controller_sets() {
        assert_eq!(
            LOCAL_OPTION,
            ferrovn_control::plan::services::NODE_PORT_LOCAL_OPTION
        );
    }

    #[test]
    fn ip_json_addresses_without_loopback_and_link_local() {
        let json = br#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1"},{"local":"::1"}]},
            {"ifname":"br-phy","addr_info":[{"local":"192.168.100.1"},{"local":"fe80::1"}]},
            {"ifname":"ovn0","addr_info":[{"local":"100.64.0.2"}]}]"#;
        let (all, ovn) = parse_ip_addr_json(json, "ovn0").unwrap();
        assert_eq!(
            all.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["100.64.0.2", "192.168.100.1"]
        );
        assert_eq!(ovn.len(), 1);
        assert!(parse_ip_addr_json(b"nope", "ovn0").is_err());
    }

    /// An independent model: for every (address, protocol, port) of this node that is no OVN
    /// address, the first load balancer by name with that VIP decides; its backends, or refusal.
    fn model(
        lbs: &[LbRow],
        a: &NodeAddrs,
    ) -> BTreeMap<(IpAddr, L4, u16), (BTreeSet<SocketAddr>, bool)> {
        let mut out = BTreeMap::new();
        let mut names: Vec<&LbRow> = lbs.iter().collect();
        names.sort_by_key(|l| l.name.clone());
        for lb in names {
            let l4 = match lb.protocol.as_str() {
                "tcp" => L4::Tcp,
                "udp" => L4::Udp,
                _ => L4::Sctp,
            };
            let external: Vec<&str> = lb
                .options
                .get(EXTERNAL_IPS_OPTION)
                .map(|v| v.split(',').collect())
                .unwrap_or_default();
            for (k, v) in &lb.vips {
                let (ip, port) = k.rsplit_once(':').unwrap();
                let own = a.local.iter().any(|l| l.to_string() == ip)
                    && !a.ovn.iter().any(|o| o.to_string() == ip);
                if !own && !external.contains(&ip) {
                    continue;
                }
                let b: BTreeSet<SocketAddr> = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                out.entry((ip.parse().unwrap(), l4, port.parse().unwrap()))
                    .or_insert((b, own && lb.options.contains_key(LOCAL_OPTION)));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn planned_node_ports_match_the_model(
            rows in proptest::collection::vec(
                (0usize..3, proptest::collection::btree_map(
                    (0u8..5, 30000u16..30004),
                    proptest::collection::btree_set(1u8..6, 0..4),
                    0..6,
                ), any::<bool>(), proptest::collection::btree_set(3usize..5, 0..3)),
                0..6,
            ),
        ) {
            let protos = ["tcp", "udp", "sctp"];
            let lbs: Vec<LbRow> = rows
                .iter()
                .enumerate()
                .map(|(i, (p, vips, local, external))| {
                    let pool = ["192.168.100.1", "192.168.100.2", "100.64.0.2", "10.96.0.1", "198.51.100.7"];
                    let vips: Vec<(String, String)> = vips
                        .iter()
                        .map(|((h, port), bs)| {
                            let addr = pool[*h as usize];
                            let b: Vec<String> = bs.iter().map(|b| format!("10.16.0.{b}:8080")).collect();
                            (format!("{addr}:{port}"), b.join(","))
                        })
                        .collect();
                    let v: Vec<(&str, &str)> = vips.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                    let mut row = lb(&format!("svc:ns/s{i}:{}", protos[*p]), protos[*p], &v, *local);
                    // externalIPs the controller listed: a ClusterIP-looking and an outside one
                    if !external.is_empty() {
                        let e: Vec<&str> = external.iter().map(|k| pool[*k]).collect();
                        row.options.insert(EXTERNAL_IPS_OPTION.into(), e.join(","));
                    }
                    row
                })
                .collect();
            let a = addrs();
            let p = plan(&lbs, &a);
            let got: BTreeMap<_, _> = p
                .ports
                .iter()
                .map(|n| ((n.addr, n.l4, n.port), (n.backends.iter().copied().collect::<BTreeSet<_>>(), n.keep_source)))
                .collect();
            prop_assert_eq!(got, model(&lbs, &a));
            // every node port appears once in the ruleset, as a dispatch or a refusal
            let s = ruleset(&p);
            for n in &p.ports {
                let m = format!("ip daddr {} {} dport {} ", n.addr, n.l4.as_str(), n.port);
                prop_assert_eq!(s.matches(&m).count(), 1, "{}", s);
            }
        }
    }
}
