//! The centralized gateway of the default VPC (`gatewayType: centralized`): which of a subnet's
//! `gatewayNode`s carry its egress.
//!
//! Kube-OVN's semantics: `gatewayNode` is a comma list of `node` or `node:ip` (the address the
//! node SNATs the subnet's egress to). Active-backup (the default) sends everything to ONE node
//! and keeps it while it lives (no fail-back that would break connections a second time);
//! `enableEcmp: true` spreads the egress over every live gateway node. Liveness is an input
//! (the controller measures it, see `crate::controller::gateway_health`), so this stays pure.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// One entry of `gatewayNode`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayNode {
    pub node: String,
    /// The `node:ip` form: SNAT to this address instead of masquerading.
    pub snat: Option<IpAddr>,
}

/// Why `gatewayNode` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field gatewayNode: entry {entry:?}: {reason}")]
pub struct GatewayNodeError {
    pub entry: String,
    pub reason: String,
}

/// Parses `gatewayNode` (`"a, b:203.0.113.7"`). A node name never holds `:`, so everything
/// after the first one is the address (IPv6 included). Duplicates keep their first position.
pub fn parse_gateway_nodes(text: &str) -> Result<Vec<GatewayNode>, GatewayNodeError> {
    let mut out: Vec<GatewayNode> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| GatewayNodeError {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (node, snat) = match entry.split_once(':') {
            Some((n, ip)) => {
                let ip = ip
                    .trim()
                    .parse::<IpAddr>()
                    .map_err(|_| bad("the part after ':' is not an IP address"))?;
                (n.trim(), Some(ip))
            }
            None => (entry, None),
        };
        if node.is_empty() {
            return Err(bad("no node name"));
        }
        if out.iter().any(|g| g.node == node) {
            continue;
        }
        out.push(GatewayNode {
            node: node.to_string(),
            snat,
        });
    }
    Ok(out)
}

/// What the controller knows about the gateway nodes' health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayLiveness {
    /// The nodes whose chassis answers; `None`: unknown (no probe, or the probe itself is
    /// blind), every node counts as alive and nothing fails over.
    pub alive: Option<BTreeSet<String>>,
    /// The active gateway of each active-backup subnet as of the last plan (stickiness).
    pub previous_active: std::collections::BTreeMap<String, String>,
}

impl GatewayLiveness {
    pub fn is_alive(&self, node: &str) -> bool {
        self.alive.as_ref().is_none_or(|a| a.contains(node))
    }
}

/// The nodes that carry a centralized subnet's egress, in `candidates` order (the nodes of
/// `gatewayNode` that can be a next hop at all). Active-backup: the previous active node while
/// it lives, else the first live one; ECMP: every live one. When none lives the choice stays
/// (the previous node, else every candidate in ECMP, else the first): there is nowhere better
/// to send the traffic, and a blind probe must not move it. Empty only without candidates.
pub fn choose(
    candidates: &[String],
    ecmp: bool,
    previous: Option<&str>,
    liveness: &GatewayLiveness,
) -> Vec<String> {
    let alive: Vec<&String> = candidates.iter().filter(|c| liveness.is_alive(c)).collect();
    if ecmp {
        let pick: Vec<&String> = if alive.is_empty() {
            candidates.iter().collect()
        } else {
            alive
        };
        return pick.into_iter().cloned().collect();
    }
    let previous = previous.filter(|p| candidates.iter().any(|c| c == p));
    if let Some(p) = previous
        && liveness.is_alive(p)
    {
        return vec![p.to_string()];
    }
    if let Some(first) = alive.first() {
        return vec![(*first).clone()];
    }
    match previous {
        Some(p) => vec![p.to_string()],
        None => candidates.first().cloned().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(nodes: &[&str]) -> GatewayLiveness {
        GatewayLiveness {
            alive: Some(nodes.iter().map(|n| n.to_string()).collect()),
            previous_active: Default::default(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gateway_node_list_and_node_ip_form() {
        let g = parse_gateway_nodes(" a, b:203.0.113.7 ,c:fd00::7, a,").unwrap();
        assert_eq!(
            g,
            [
                GatewayNode {
                    node: "a".into(),
                    snat: None
                },
                GatewayNode {
                    node: "b".into(),
                    snat: Some("203.0.113.7".parse().unwrap())
                },
                GatewayNode {
                    node: "c".into(),
                    snat: Some("fd00::7".parse().unwrap())
                },
            ]
        );
        let e = parse_gateway_nodes("a, b:nope").unwrap_err();
        assert_eq!(e.entry, "b:nope");
        assert!(e.to_string().contains("gatewayNode"), "{e}");
        assert!(parse_gateway_nodes(":1.2.3.4").is_err());
        assert!(parse_gateway_nodes("").unwrap().is_empty());
    }

    #[test]
    fn active_backup_is_sticky_and_fails_over_in_list_order() {
        let c = names(&["a", "b", "c"]);
        assert_eq!(choose(&c, false, None, &live(&["a", "b", "c"])), ["a"]);
        // b took over earlier: it stays while it lives, even with a back
        assert_eq!(choose(&c, false, Some("b"), &live(&["a", "b"])), ["b"]);
        assert_eq!(choose(&c, false, Some("b"), &live(&["a", "c"])), ["a"]);
        assert_eq!(choose(&c, false, Some("a"), &live(&["c"])), ["c"]);
        // nobody lives: keep the last choice
        assert_eq!(choose(&c, false, Some("b"), &live(&[])), ["b"]);
        // unknown liveness: nothing moves
        assert_eq!(
            choose(&c, false, Some("c"), &GatewayLiveness::default()),
            ["c"]
        );
        // a previous node no longer listed is dropped
        assert_eq!(choose(&c, false, Some("z"), &live(&["b", "c"])), ["b"]);
        assert!(choose(&[], false, Some("a"), &live(&["a"])).is_empty());
    }

    #[test]
    fn ecmp_uses_every_live_gateway() {
        let c = names(&["a", "b", "c"]);
        assert_eq!(choose(&c, true, None, &live(&["c", "a"])), ["a", "c"]);
        assert_eq!(choose(&c, true, None, &live(&[])), ["a", "b", "c"]);
    }

    proptest! {
        /// Against a model: the choice is a subset of the candidates; active-backup picks one
        /// node, a live one whenever any lives, and the previous one whenever it lives; ECMP
        /// picks exactly the live candidates (all of them when none lives).
        #[test]
        fn choice_matches_the_model(
            n in 0usize..6,
            alive_bits in 0u8..64,
            prev in proptest::option::of(0usize..8),
            ecmp in any::<bool>(),
        ) {
            let cands: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let alive: BTreeSet<String> =
                (0..8).filter(|i| alive_bits & (1 << i) != 0).map(|i| format!("n{i}")).collect();
            let lv = GatewayLiveness { alive: Some(alive.clone()), previous_active: Default::default() };
            let prev_s = prev.map(|i| format!("n{i}"));
            let got = choose(&cands, ecmp, prev_s.as_deref(), &lv);
            prop_assert!(got.iter().all(|g| cands.contains(g)));
            let live_cands: Vec<String> = cands.iter().filter(|c| alive.contains(*c)).cloned().collect();
            if cands.is_empty() {
                prop_assert!(got.is_empty());
            } else if ecmp {
                let want = if live_cands.is_empty() { cands.clone() } else { live_cands };
                prop_assert_eq!(got, want);
            } else {
                prop_assert_eq!(got.len(), 1);
                let prev_listed = prev_s.clone().filter(|p| cands.contains(p));
                match (&prev_listed, live_cands.first()) {
                    (Some(p), _) if alive.contains(p) => prop_assert_eq!(&got[0], p),
                    (_, Some(first)) => prop_assert_eq!(&got[0], first),
                    (Some(p), None) => prop_assert_eq!(&got[0], p),
                    (None, None) => prop_assert_eq!(&got[0], &cands[0]),
                }
            }
        }
    }
}
