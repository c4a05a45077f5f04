//! NetworkPolicy translation against an independent model.
//!
//! The model reads the Kubernetes NetworkPolicy semantics directly (selectors, ipBlock,
//! ports, named ports, union of policies, isolation per direction). The verdict on the OVN side
//! comes from *evaluating* the generated rows: a small parser and evaluator for the match
//! subset the planner emits, with OVN's ACL pipeline rules (tiers in ascending order, highest
//! priority match within a tier decides, `pass` or no match goes on to the next tier, no
//! verdict at all means allow). Nothing here reuses the planner's selector code.

// A test crate: its helpers outside #[test] fns assert by unwrapping and panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_control::plan::netpol::{
    NETPOL_TIER, NamedPort, PolicyNamespace, PolicyPlan, PolicyPod, Protocol, plan_network_policies,
};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

mod netpol_model;
use netpol_model::{Endpoint, World};

// =============================================================================================
// The OVN side: parse and evaluate matches.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    PortGroup(String),
    AddrSet(String),
    Op(&'static str),
}

fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'/');
    while i < b.len() {
        let c = b[i];
        if c == b' ' {
            i += 1;
            continue;
        }
        let two = if i + 1 < b.len() { &s[i..i + 2] } else { "" };
        if let Some(op) = ["==", "!=", ">=", "<=", "&&", "||"]
            .iter()
            .find(|o| **o == two)
        {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        if let Some(op) = ["!", "(", ")", "{", "}", ","]
            .iter()
            .find(|o| o.as_bytes()[0] == c)
        {
            out.push(Tok::Op(op));
            i += 1;
            continue;
        }
        if c == b'@' || c == b'$' || word(c) {
            let start = if word(c) { i } else { i + 1 };
            let mut j = start;
            while j < b.len() && word(b[j]) {
                j += 1;
            }
            let w = s[start..j].to_string();
            out.push(match c {
                b'@' => Tok::PortGroup(w),
                b'$' => Tok::AddrSet(w),
                _ => Tok::Word(w),
            });
            i = j;
            continue;
        }
        panic!("unexpected character {:?} in match {s:?}", c as char);
    }
    out
}

#[derive(Debug, Clone)]
enum Value {
    PortGroup(String),
    AddrSet(String),
    Consts(Vec<String>),
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Symbol(String),
    Cmp(String, &'static str, Value),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].clone();
        self.pos += 1;
        t
    }
    fn eat(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Tok::Op(match op {
                "||" => "||",
                "&&" => "&&",
                "!" => "!",
                "(" => "(",
                ")" => ")",
                "," => ",",
                "}" => "}",
                _ => unreachable!(),
            }))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Expr {
        let mut e = self.and();
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()));
        }
        e
    }
    fn and(&mut self) -> Expr {
        let mut e = self.unary();
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()));
        }
        e
    }
    fn unary(&mut self) -> Expr {
        if self.eat("!") {
            return Expr::Not(Box::new(self.unary()));
        }
        if self.eat("(") {
            let e = self.or();
            assert!(self.eat(")"), "missing ) at token {}", self.pos);
            return e;
        }
        let Tok::Word(field) = self.next() else {
            panic!("expected a field at token {}", self.pos - 1)
        };
        let op = match self.peek() {
            Some(Tok::Op(op @ ("==" | "!=" | ">=" | "<="))) => *op,
            _ => return Expr::Symbol(field),
        };
        self.pos += 1;
        let v = match self.next() {
            Tok::PortGroup(n) => Value::PortGroup(n),
            Tok::AddrSet(n) => Value::AddrSet(n),
            Tok::Word(w) => Value::Consts(vec![w]),
            Tok::Op("{") => {
                let mut v = Vec::new();
                loop {
                    let Tok::Word(w) = self.next() else {
                        panic!("bad set")
                    };
                    v.push(w);
                    if self.eat("}") {
                        break;
                    }
                    assert!(self.eat(","), "expected , in set");
                }
                Value::Consts(v)
            }
            t => panic!("unexpected {t:?} after {field} {op}"),
        };
        Expr::Cmp(field, op, v)
    }
}

fn parse(m: &str) -> Expr {
    let mut p = Parser {
        toks: lex(m),
        pos: 0,
    };
    let e = p.or();
    assert_eq!(p.pos, p.toks.len(), "trailing tokens in {m:?}");
    e
}

/// A packet at one ACL stage.
#[derive(Debug, Clone)]
struct Packet {
    inport: String,
    outport: String,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
}

fn contains(c: &str, ip: IpAddr) -> bool {
    if let Ok(n) = c.parse::<IpNet>() {
        n.contains(&ip)
    } else {
        c.parse::<IpAddr>().map(|a| a == ip).unwrap_or(false)
    }
}

fn eval(e: &Expr, pkt: &Packet, plan: &PolicyPlan) -> bool {
    match e {
        Expr::And(a, b) => eval(a, pkt, plan) && eval(b, pkt, plan),
        Expr::Or(a, b) => eval(a, pkt, plan) || eval(b, pkt, plan),
        Expr::Not(a) => !eval(a, pkt, plan),
        Expr::Symbol(s) => match s.as_str() {
            "ip" => true,
            "ip4" => pkt.src.is_ipv4(),
            "ip6" => pkt.src.is_ipv6(),
            "tcp" => pkt.proto == Protocol::Tcp,
            "udp" => pkt.proto == Protocol::Udp,
            "sctp" => pkt.proto == Protocol::Sctp,
            other => panic!("unknown symbol {other}"),
        },
        Expr::Cmp(field, op, v) => {
            // Prerequisites hold for == and != alike (OVN adds them outside the comparison).
            let (pre, num, addr, port): (bool, Option<u16>, Option<IpAddr>, Option<&str>) =
                match field.as_str() {
                    "inport" => (true, None, None, Some(pkt.inport.as_str())),
                    "outport" => (true, None, None, Some(pkt.outport.as_str())),
                    "ip4.src" => (pkt.src.is_ipv4(), None, Some(pkt.src), None),
                    "ip4.dst" => (pkt.dst.is_ipv4(), None, Some(pkt.dst), None),
                    "ip6.src" => (pkt.src.is_ipv6(), None, Some(pkt.src), None),
                    "ip6.dst" => (pkt.dst.is_ipv6(), None, Some(pkt.dst), None),
                    "tcp.dst" => (pkt.proto == Protocol::Tcp, Some(pkt.dport), None, None),
                    "udp.dst" => (pkt.proto == Protocol::Udp, Some(pkt.dport), None, None),
                    "sctp.dst" => (pkt.proto == Protocol::Sctp, Some(pkt.dport), None, None),
                    other => panic!("unknown field {other}"),
                };
            if !pre {
                return false;
            }
            let consts: Vec<String> = match v {
                Value::Consts(c) => c.clone(),
                Value::AddrSet(n) => {
                    let set = plan
                        .address_sets
                        .get(n)
                        .unwrap_or_else(|| panic!("match names missing address set {n}"));
                    set.addresses.iter().cloned().collect()
                }
                Value::PortGroup(n) => {
                    let pg = plan
                        .port_groups
                        .get(n)
                        .unwrap_or_else(|| panic!("match names missing port group {n}"));
                    pg.ports.iter().cloned().collect()
                }
            };
            if let Some(port) = port {
                let hit = consts.iter().any(|c| c == port);
                return match *op {
                    "==" => hit,
                    "!=" => !hit,
                    _ => panic!("{op} on a port"),
                };
            }
            if let Some(a) = addr {
                let hit = consts.iter().any(|c| contains(c, a));
                return match *op {
                    "==" => hit,
                    "!=" => !hit,
                    _ => panic!("{op} on an address"),
                };
            }
            let n = num.unwrap_or(0);
            let [c] = consts.as_slice() else {
                panic!("port set")
            };
            let c: u16 = c.parse().expect("port number");
            match *op {
                "==" => n == c,
                "!=" => n != c,
                ">=" => n >= c,
                "<=" => n <= c,
                _ => unreachable!(),
            }
        }
    }
}

/// The verdict of one ACL stage (`to-lport`, or `from-lport` after LB).
fn stage_allows(
    plan: &PolicyPlan,
    parsed: &[(Expr, &str, i64, i64, String)],
    pkt: &Packet,
    dir: &str,
) -> bool {
    for tier in 0..=3 {
        let mut best: Option<(i64, &str)> = None;
        for (e, d, prio, t, action) in parsed {
            if *d != dir || *t != tier || !eval(e, pkt, plan) {
                continue;
            }
            match best {
                Some((p, a)) if p == *prio => {
                    assert_eq!(a, action.as_str(), "two ACLs of priority {p} disagree")
                }
                Some((p, _)) if p > *prio => {}
                _ => best = Some((*prio, action.as_str())),
            }
        }
        match best.map(|b| b.1) {
            None | Some("pass") => continue,
            Some("allow" | "allow-related" | "allow-stateless") => return true,
            Some("drop" | "reject") => return false,
            Some(a) => panic!("unknown action {a}"),
        }
    }
    true
}

// =============================================================================================
// Generators

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const NODE4: &str = "100.64.0.2";
const NODE6: &str = "fd00:100:64::2";

fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(prop::sample::select(vec!["fe", "be"])),
    )
        .prop_map(|(app, tier)| {
            let mut m = BTreeMap::new();
            if let Some(a) = app {
                m.insert("app".to_string(), a.to_string());
            }
            if let Some(t) = tier {
                m.insert("tier".to_string(), t.to_string());
            }
            m
        })
}

fn ns_labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::option::of(prop::sample::select(vec!["red", "blue"])).prop_map(|t| {
        t.map(|t| BTreeMap::from([("team".to_string(), t.to_string())]))
            .unwrap_or_default()
    })
}

fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
    let req = (
        prop::sample::select(vec!["app", "tier", "team"]),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::sample::subsequence(vec!["a", "b", "fe", "red", "blue"], 1..3),
    )
        .prop_map(|(k, op, vals)| LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: matches!(op, "In" | "NotIn")
                .then(|| vals.iter().map(|v| v.to_string()).collect()),
        });
    (
        prop::option::of((
            prop::sample::select(vec!["app", "tier", "team"]),
            prop::sample::select(vec!["a", "b", "fe", "red", "blue"]),
        )),
        prop::collection::vec(req, 0..2),
    )
        .prop_map(|(ml, exprs)| LabelSelector {
            match_labels: ml.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
}

fn peer_strategy() -> impl Strategy<Value = NetworkPolicyPeer> {
    let block = prop::sample::select(vec![
        ("10.0.0.0/28", vec![]),
        ("10.0.0.0/24", vec!["10.0.0.4/30"]),
        ("0.0.0.0/0", vec!["10.0.0.0/29", "192.168.1.0/24"]),
        ("192.168.1.0/24", vec![]),
        ("fd00::/120", vec!["fd00::4/126"]),
    ]);
    prop_oneof![
        selector_strategy().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        selector_strategy().prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector_strategy(), selector_strategy()).prop_map(|(p, n)| NetworkPolicyPeer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Default::default()
        }),
        block.prop_map(|(c, e)| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: c.into(),
                except: (!e.is_empty()).then(|| e.iter().map(|x| x.to_string()).collect()),
            }),
            ..Default::default()
        }),
    ]
}

fn port_strategy() -> impl Strategy<Value = NetworkPolicyPort> {
    (
        prop::sample::select(vec![None, Some("TCP"), Some("UDP"), Some("SCTP")]),
        prop_oneof![
            Just(None),
            prop::sample::select(vec![80, 81, 8080]).prop_map(|n| Some(IntOrString::Int(n))),
            prop::sample::select(vec!["http", "dns", "nope"])
                .prop_map(|n| Some(IntOrString::String(n.into()))),
        ],
        prop::option::of(prop::sample::select(vec![81, 90])),
    )
        .prop_map(|(proto, port, end)| NetworkPolicyPort {
            protocol: proto.map(str::to_string),
            end_port: match &port {
                // The API server rejects endPort below port.
                Some(IntOrString::Int(n)) => end.filter(|e| e >= n),
                _ => None,
            },
            port,
        })
}

fn rule_parts() -> impl Strategy<
    Value = (
        Option<Vec<NetworkPolicyPeer>>,
        Option<Vec<NetworkPolicyPort>>,
    ),
> {
    (
        prop::option::of(prop::collection::vec(peer_strategy(), 0..3)),
        prop::option::of(prop::collection::vec(port_strategy(), 0..3)),
    )
}

fn policy_strategy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::option::of(selector_strategy()),
        prop::sample::select(vec![
            None,
            Some(vec!["Ingress"]),
            Some(vec!["Egress"]),
            Some(vec!["Ingress", "Egress"]),
        ]),
        prop::option::of(prop::collection::vec(rule_parts(), 0..3)),
        prop::option::of(prop::collection::vec(rule_parts(), 0..3)),
    )
        .prop_map(|(ns, sel, types, ing, eg)| NetworkPolicy {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: sel,
                policy_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
                ingress: ing.map(|v| {
                    v.into_iter()
                        .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                        .collect()
                }),
                egress: eg.map(|v| {
                    v.into_iter()
                        .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                        .collect()
                }),
            }),
        })
}

/// Namespace index, labels, has IPv6, named ports (name index, protocol, number).
type PodSpec = (
    usize,
    BTreeMap<String, String>,
    bool,
    Vec<(usize, Protocol, u16)>,
);

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0..NAMESPACES.len(),
        labels_strategy(),
        any::<bool>(),
        prop::collection::vec(
            (
                0..2usize,
                prop::sample::select(Protocol::ALL.to_vec()),
                prop::sample::select(vec![80u16, 81, 8080, 53]),
            ),
            0..2,
        ),
    )
}

fn world_strategy() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(ns_labels_strategy(), 3),
        prop::collection::vec(pod_strategy(), 1..7),
        prop::collection::vec(policy_strategy(), 0..4),
    )
        .prop_map(|(nsl, pods, mut policies)| {
            for (i, p) in policies.iter_mut().enumerate() {
                p.metadata.name = Some(format!("pol-{i}"));
            }
            World {
                namespaces: NAMESPACES
                    .iter()
                    .zip(nsl)
                    .map(|(n, labels)| PolicyNamespace {
                        name: n.to_string(),
                        labels,
                    })
                    .collect(),
                pods: pods
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ns, labels, v6, named))| {
                        let mut ips: Vec<IpAddr> =
                            vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
                        if v6 {
                            ips.push(format!("fd00::{}", i + 1).parse().unwrap());
                        }
                        let mut named_ports: Vec<NamedPort> = Vec::new();
                        for (n, protocol, port) in named {
                            let name = ["http", "dns"][n].to_string();
                            // A container port name is unique within a pod.
                            if named_ports.iter().all(|x| x.name != name) {
                                named_ports.push(NamedPort {
                                    name,
                                    protocol,
                                    port,
                                });
                            }
                        }
                        PolicyPod {
                            namespace: NAMESPACES[ns].into(),
                            name: format!("pod{i}"),
                            labels,
                            port: format!("pod{i}.{}", NAMESPACES[ns]),
                            ips,
                            named_ports,
                        }
                    })
                    .collect(),
                policies,
                node_ips: vec![NODE4.parse().unwrap(), NODE6.parse().unwrap()],
            }
        })
}

// =============================================================================================
// Properties

fn endpoints(w: &World) -> Vec<(Endpoint, Vec<IpAddr>, String)> {
    let mut v: Vec<(Endpoint, Vec<IpAddr>, String)> = w
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (Endpoint::Pod(i), p.ips.clone(), p.port.clone()))
        .collect();
    for ext in [
        "192.168.1.7",
        "10.0.0.200",
        "8.8.8.8",
        "fd00::99",
        "2001:db8::1",
    ] {
        let ip: IpAddr = ext.parse().unwrap();
        v.push((Endpoint::External, vec![ip], "ovn-cluster-ext".into()));
    }
    for n in [NODE4, NODE6] {
        let ip: IpAddr = n.parse().unwrap();
        v.push((Endpoint::Node, vec![ip], "node-n1".into()));
    }
    v
}

fn check_world(w: &World) -> Result<(), TestCaseError> {
    let plan = plan_network_policies(&w.input());
    prop_assert!(plan.issues.is_empty(), "issues: {:?}", plan.issues);
    let parsed: Vec<(Expr, &str, i64, i64, String)> = plan
        .acls()
        .map(|(_, a)| {
            (
                parse(&a.match_),
                a.direction.as_str(),
                a.priority,
                a.tier,
                a.action.clone(),
            )
        })
        .collect();
    for (_, a) in plan.acls() {
        prop_assert_eq!(a.tier, NETPOL_TIER);
        // Every allow is stateful, so replies pass on conntrack whatever the other side's policy.
        prop_assert!(
            a.action == "drop" || a.action == "allow-related",
            "{}",
            a.action
        );
        if a.direction == "from-lport" {
            prop_assert_eq!(
                a.options.get("apply-after-lb").map(String::as_str),
                Some("true")
            );
        }
    }
    let eps = endpoints(w);
    for (src, sips, sport) in &eps {
        for (dst, dips, dport_name) in &eps {
            if !matches!(src, Endpoint::Pod(_)) && !matches!(dst, Endpoint::Pod(_)) {
                continue;
            }
            for sip in sips {
                for dip in dips.iter().filter(|d| d.is_ipv4() == sip.is_ipv4()) {
                    for proto in Protocol::ALL {
                        for port in [53u16, 80, 81, 85, 90, 8080] {
                            let want = w.allowed(src, *sip, dst, *dip, proto, port);
                            let mut pkt = Packet {
                                inport: sport.clone(),
                                outport: String::new(),
                                src: *sip,
                                dst: *dip,
                                proto,
                                dport: port,
                            };
                            let egress = stage_allows(&plan, &parsed, &pkt, "from-lport");
                            pkt.inport = "router".into();
                            pkt.outport = dport_name.clone();
                            let ingress = stage_allows(&plan, &parsed, &pkt, "to-lport");
                            prop_assert_eq!(
                                egress && ingress,
                                want,
                                "{:?} {} -> {:?} {} {:?}/{}",
                                src,
                                sip,
                                dst,
                                dip,
                                proto,
                                port
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// For every (src, dst, protocol, port) among pods, external addresses and nodes, the
    /// evaluated ACLs agree with the Kubernetes model.
    #[test]
    fn acls_implement_kubernetes_semantics(w in world_strategy()) {
        check_world(&w)?;
    }

    /// A pod's label change rewrites only the address sets and port groups that gain or lose
    /// that pod; no ACL and no other row changes, none appears or disappears.
    #[test]
    fn label_change_touches_only_affected_sets(
        w in world_strategy(),
        which in any::<prop::sample::Index>(),
        labels in labels_strategy(),
    ) {
        let before = plan_network_policies(&w.input());
        let i = which.index(w.pods.len());
        let mut input = w.input();
        input.pods[i].labels = labels;
        let after = plan_network_policies(&input);
        let pod = &w.pods[i];
        let ips: BTreeSet<String> = pod.ips.iter().map(IpAddr::to_string).collect();
        prop_assert_eq!(
            before.port_groups.keys().collect::<Vec<_>>(),
            after.port_groups.keys().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            before.address_sets.keys().collect::<Vec<_>>(),
            after.address_sets.keys().collect::<Vec<_>>()
        );
        for (name, b) in &before.port_groups {
            let a = &after.port_groups[name];
            prop_assert_eq!(&a.acls, &b.acls, "ACLs of {} changed", name);
            prop_assert_eq!(&a.external_ids, &b.external_ids);
            let diff: BTreeSet<&String> = a.ports.symmetric_difference(&b.ports).collect();
            prop_assert!(diff.iter().all(|p| **p == pod.port), "{} changed by {:?}", name, diff);
        }
        for (name, b) in &before.address_sets {
            let a = &after.address_sets[name];
            prop_assert_eq!(&a.external_ids, &b.external_ids);
            let diff: BTreeSet<&String> = a.addresses.symmetric_difference(&b.addresses).collect();
            prop_assert!(diff.iter().all(|x| ips.contains(*x)), "{} changed by {:?}", name, diff);
        }
    }

    /// The plan does not depend on the order of its input.
    #[test]
    fn plan_ignores_input_order(w in world_strategy()) {
        let a = plan_network_policies(&w.input());
        let mut input = w.input();
        input.pods.reverse();
        input.policies.reverse();
        input.namespaces.reverse();
        prop_assert_eq!(a, plan_network_policies(&input));
    }
}
