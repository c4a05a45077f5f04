//! An evaluator of the OVN ACL rows a plan holds, for the property tests: a parser for the
//! match subset the planners emit and OVN's ACL pipeline rules (tiers in ascending order, the
//! highest-priority match of a tier decides, `pass` or no match goes on to the next tier, no
//! verdict at all means allow). It knows nothing of Kubernetes: it reads rows.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrovn_control::plan::netpol::{PlannedAddressSet, PlannedPgAcl, PlannedPortGroup, Protocol};
use ipnet::IpNet;

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
pub struct Expr(Node);

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
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
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Node {
        let mut e = self.and();
        while self.eat("||") {
            e = Node::Or(Box::new(e), Box::new(self.and()));
        }
        e
    }
    fn and(&mut self) -> Node {
        let mut e = self.unary();
        while self.eat("&&") {
            e = Node::And(Box::new(e), Box::new(self.unary()));
        }
        e
    }
    fn unary(&mut self) -> Node {
        if self.eat("!") {
            return Node::Not(Box::new(self.unary()));
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
            _ => return Node::Symbol(field),
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
        Node::Cmp(field, op, v)
    }
}

/// Parses one ACL match; panics on anything outside the subset.
pub fn parse(m: &str) -> Expr {
    let mut p = Parser {
        toks: lex(m),
        pos: 0,
    };
    let e = p.or();
    assert_eq!(p.pos, p.toks.len(), "trailing tokens in {m:?}");
    Expr(e)
}

/// The source port of every packet: the ephemeral port of the connection it opens.
pub const SOURCE_PORT: u16 = 40000;

/// A packet at one ACL stage (TCP, UDP or SCTP; never ARP or ICMP).
#[derive(Debug, Clone)]
pub struct Packet {
    pub inport: String,
    pub outport: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
}

fn contains(c: &str, ip: IpAddr) -> bool {
    if let Ok(n) = c.parse::<IpNet>() {
        n.contains(&ip)
    } else {
        c.parse::<IpAddr>().map(|a| a == ip).unwrap_or(false)
    }
}

/// The rows an evaluation reads: port group members and address set contents by name, and
/// every ACL parsed.
pub struct Rows {
    port_groups: BTreeMap<String, BTreeSet<String>>,
    address_sets: BTreeMap<String, BTreeSet<String>>,
    acls: Vec<(Expr, String, i64, i64, String)>,
}

impl Rows {
    pub fn new<'a>(
        pgs: impl IntoIterator<Item = &'a PlannedPortGroup>,
        sets: impl IntoIterator<Item = &'a PlannedAddressSet>,
    ) -> Rows {
        let mut rows = Rows {
            port_groups: BTreeMap::new(),
            address_sets: BTreeMap::new(),
            acls: Vec::new(),
        };
        for pg in pgs {
            assert!(
                rows.port_groups
                    .insert(pg.name.clone(), pg.ports.clone())
                    .is_none(),
                "port group {} planned twice",
                pg.name
            );
            for a in pg.acls.values() {
                rows.acls.push(acl(a));
            }
        }
        for s in sets {
            assert!(
                rows.address_sets
                    .insert(s.name.clone(), s.addresses.clone())
                    .is_none(),
                "address set {} planned twice",
                s.name
            );
        }
        rows
    }

    fn eval(&self, e: &Node, pkt: &Packet) -> bool {
        match e {
            Node::And(a, b) => self.eval(a, pkt) && self.eval(b, pkt),
            Node::Or(a, b) => self.eval(a, pkt) || self.eval(b, pkt),
            Node::Not(a) => !self.eval(a, pkt),
            Node::Symbol(s) => match s.as_str() {
                "ip" => true,
                "ip4" => pkt.src.is_ipv4(),
                "ip6" => pkt.src.is_ipv6(),
                "tcp" => pkt.proto == Protocol::Tcp,
                "udp" => pkt.proto == Protocol::Udp,
                "sctp" => pkt.proto == Protocol::Sctp,
                "arp" | "icmp4" | "icmp6" => false,
                other => panic!("unknown symbol {other}"),
            },
            Node::Cmp(field, op, v) => {
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
                        "tcp.src" => (pkt.proto == Protocol::Tcp, Some(SOURCE_PORT), None, None),
                        "udp.src" => (pkt.proto == Protocol::Udp, Some(SOURCE_PORT), None, None),
                        "sctp.src" => (pkt.proto == Protocol::Sctp, Some(SOURCE_PORT), None, None),
                        "ip.proto" => {
                            let n = match pkt.proto {
                                Protocol::Tcp => 6,
                                Protocol::Udp => 17,
                                Protocol::Sctp => 132,
                            };
                            (true, Some(n), None, None)
                        }
                        other => panic!("unknown field {other}"),
                    };
                if !pre {
                    return false;
                }
                let consts: Vec<String> = match v {
                    Value::Consts(c) => c.clone(),
                    Value::AddrSet(n) => self
                        .address_sets
                        .get(n)
                        .unwrap_or_else(|| panic!("match names missing address set {n}"))
                        .iter()
                        .cloned()
                        .collect(),
                    Value::PortGroup(n) => self
                        .port_groups
                        .get(n)
                        .unwrap_or_else(|| panic!("match names missing port group {n}"))
                        .iter()
                        .cloned()
                        .collect(),
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

    /// The verdict of one ACL stage (`to-lport`, or `from-lport` after LB), with the ACL
    /// that decided it (`None`: no ACL had a final verdict, so allowed).
    pub fn stage(&self, pkt: &Packet, dir: &str) -> (bool, Option<String>) {
        for tier in 0..=3 {
            let mut best: Option<(i64, &str, &str)> = None;
            for (e, d, prio, t, action) in &self.acls {
                if d != dir || *t != tier || !self.eval(&e.0, pkt) {
                    continue;
                }
                match best {
                    Some((p, a, _)) if p == *prio => {
                        assert_eq!(a, action.as_str(), "two ACLs of priority {p} disagree")
                    }
                    Some((p, _, _)) if p > *prio => {}
                    _ => best = Some((*prio, action.as_str(), "")),
                }
            }
            match best.map(|b| b.1) {
                None | Some("pass") => continue,
                Some("allow" | "allow-related" | "allow-stateless") => {
                    return (true, Some(format!("tier {tier}")));
                }
                Some("drop" | "reject") => return (false, Some(format!("tier {tier}"))),
                Some(a) => panic!("unknown action {a}"),
            }
        }
        (true, None)
    }
}

fn acl(a: &PlannedPgAcl) -> (Expr, String, i64, i64, String) {
    (
        parse(&a.match_),
        a.direction.clone(),
        a.priority,
        a.tier,
        a.action.clone(),
    )
}
