//! SecurityGroup translation, row by row: the worked example of docs/network-policy.md, bad
//! fields reported by name (the group fails closed, the others apply), annotations naming
//! missing groups, and the planner around it (conntrack bypass, plan issues).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod acl_eval;
mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use acl_eval::{Packet, Rows};
use ferrovn_api::MacAddr;
use ferrovn_api::security_group::SecurityGroup;
use ferrovn_control::plan::netpol::Protocol;
use ferrovn_control::plan::security_group::{
    DENY_ALL_PORT_GROUP, SecurityGroupInput, SecurityGroupPlan, SgPort, plan_security_groups,
};
use ferrovn_control::plan::{PlanIssue, PortIntent, plan};

const EXAMPLE: &str = "
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata:
  name: web
spec:
  allowSameGroupTraffic: true
  ingressRules:
  - {ipVersion: ipv4, protocol: tcp, portRangeMin: 80, portRangeMax: 80, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 10}
  - {ipVersion: ipv4, protocol: tcp, portRangeMin: 22, portRangeMax: 22, remoteType: address, remoteAddress: 0.0.0.0/0, policy: drop, priority: 5}
  - {ipVersion: ipv4, protocol: udp, portRangeMin: 5000, portRangeMax: 5100, remoteType: securityGroup, remoteSecurityGroup: clients, policy: allow, priority: 20}
  egressRules:
  - {ipVersion: ipv4, protocol: all, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}
---
apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata:
  name: clients
spec:
  egressRules:
  - {ipVersion: ipv4, remoteType: securityGroup, remoteSecurityGroup: web, policy: allow, priority: 1}
";

fn groups(yaml: &str) -> Vec<SecurityGroup> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let mut v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            v["apiVersion"] = "kubeovn.io/v1".into();
            v["kind"] = "SecurityGroup".into();
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn port(name: &str, ip: &str, groups: &str) -> SgPort {
    SgPort {
        port: format!("{name}.shop"),
        ips: vec![ip.parse().unwrap()],
        groups: groups.split(',').map(str::to_string).collect(),
        owner: format!("Pod shop/{name}"),
        annotation: "ovn.kubernetes.io/security_groups".into(),
    }
}

fn example() -> SecurityGroupInput {
    SecurityGroupInput {
        groups: groups(EXAMPLE),
        ports: vec![
            port("web-1", "10.16.0.10", "web"),
            port("client-1", "10.16.0.20", "clients"),
        ],
    }
}

fn acl<'a>(
    p: &'a SecurityGroupPlan,
    pg: &str,
    key: &str,
) -> &'a ferrovn_control::plan::netpol::PlannedPgAcl {
    p.port_groups[pg]
        .acls
        .get(key)
        .unwrap_or_else(|| panic!("{pg} has no ACL {key}: {:?}", p.port_groups[pg].acls.keys()))
}

/// Allowed both ways of the ACL pipeline (egress of `src`, ingress of `dst`)?
fn verdict(rows: &Rows, src: (&str, &str), dst: (&str, &str), proto: Protocol, port: u16) -> bool {
    let mut pkt = Packet {
        inport: src.0.into(),
        outport: String::new(),
        src: src.1.parse::<IpAddr>().unwrap(),
        dst: dst.1.parse::<IpAddr>().unwrap(),
        proto,
        dport: port,
    };
    let egress = rows.stage(&pkt, "from-lport").0;
    pkt.inport = "router".into();
    pkt.outport = dst.0.into();
    egress && rows.stage(&pkt, "to-lport").0
}

#[test]
fn worked_example_rows() {
    let p = plan_security_groups(&example());
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    assert_eq!(
        p.port_groups.keys().collect::<Vec<_>>(),
        ["sg.clients", "sg.web", DENY_ALL_PORT_GROUP]
    );
    assert_eq!(
        p.port_groups["sg.web"].ports,
        BTreeSet::from(["web-1.shop".to_string()])
    );
    assert_eq!(
        p.port_groups[DENY_ALL_PORT_GROUP].ports,
        BTreeSet::from(["client-1.shop".to_string(), "web-1.shop".to_string()])
    );
    assert_eq!(
        p.address_sets.keys().collect::<Vec<_>>(),
        [
            "sg.clients.ip4",
            "sg.clients.ip6",
            "sg.web.ip4",
            "sg.web.ip6"
        ]
    );
    assert_eq!(
        p.address_sets["sg.clients.ip4"].addresses,
        BTreeSet::from(["10.16.0.20".to_string()])
    );

    let a = acl(&p, "sg.web", "sgacl/web/ingress/rule/0");
    assert_eq!(
        (
            a.direction.as_str(),
            a.priority,
            a.tier,
            a.action.as_str(),
            a.match_.as_str()
        ),
        (
            "to-lport",
            18474,
            2,
            "allow-related",
            "outport == @sg.web && ip4 && ip4.src == 0.0.0.0/0 && tcp.dst == 80"
        )
    );
    let a = acl(&p, "sg.web", "sgacl/web/ingress/rule/1");
    assert_eq!(
        (a.priority, a.action.as_str(), a.match_.as_str()),
        (
            18479,
            "drop",
            "outport == @sg.web && ip4 && ip4.src == 0.0.0.0/0 && tcp.dst == 22"
        )
    );
    let a = acl(&p, "sg.web", "sgacl/web/ingress/rule/2");
    assert_eq!(
        (a.priority, a.match_.as_str()),
        (
            18464,
            "outport == @sg.web && ip4 && ip4.src == $sg.clients.ip4 && udp.dst >= 5000 && udp.dst <= 5100"
        )
    );
    let a = acl(&p, "sg.web", "sgacl/web/ingress/same/ip4");
    assert_eq!(
        (a.priority, a.action.as_str(), a.match_.as_str()),
        (
            2004,
            "allow-related",
            "outport == @sg.web && ip4 && ip4.src == $sg.web.ip4"
        )
    );
    let a = acl(&p, "sg.web", "sgacl/web/egress/rule/0");
    assert_eq!(
        (a.direction.as_str(), a.priority, a.match_.as_str()),
        (
            "from-lport",
            18483,
            "inport == @sg.web && ip4 && ip4.dst == 0.0.0.0/0"
        )
    );
    assert_eq!(
        a.options.get("apply-after-lb").map(String::as_str),
        Some("true")
    );
    assert_eq!(a.name.as_deref(), Some("sg:web"));
    // Base allows in both tiers, isolation in both tiers.
    let a = acl(&p, "sg.web", "sgacl/web/egress/base/dhcp4/3");
    assert_eq!(
        (a.priority, a.tier, a.match_.as_str()),
        (
            2005,
            3,
            "inport == @sg.web && udp.src == 68 && udp.dst == 67 && ip4"
        )
    );
    // 4 rules, same-group traffic per direction and family, 3 base allows per direction and tier.
    assert_eq!(p.port_groups["sg.web"].acls.len(), 4 + 4 + 12);
    let deny = &p.port_groups[DENY_ALL_PORT_GROUP];
    let mut d: Vec<(String, i64, i64, String, String)> = deny
        .acls
        .values()
        .map(|a| {
            (
                a.direction.clone(),
                a.priority,
                a.tier,
                a.action.clone(),
                a.match_.clone(),
            )
        })
        .collect();
    d.sort();
    assert_eq!(
        d,
        [
            (
                "from-lport".into(),
                2003,
                2,
                "drop".into(),
                "inport == @sg_deny_all && ip".into()
            ),
            (
                "from-lport".into(),
                2003,
                3,
                "drop".into(),
                "inport == @sg_deny_all && ip".into()
            ),
            (
                "to-lport".into(),
                2003,
                2,
                "drop".into(),
                "outport == @sg_deny_all && ip".into()
            ),
            (
                "to-lport".into(),
                2003,
                3,
                "drop".into(),
                "outport == @sg_deny_all && ip".into()
            ),
        ]
    );

    // What it means, by evaluating the rows.
    let rows = Rows::new(p.port_groups.values(), p.address_sets.values());
    let web = ("web-1.shop", "10.16.0.10");
    let client = ("client-1.shop", "10.16.0.20");
    let other = ("other.shop", "10.16.0.30");
    assert!(verdict(&rows, client, web, Protocol::Udp, 5000));
    assert!(verdict(&rows, client, web, Protocol::Tcp, 80));
    assert!(verdict(&rows, other, web, Protocol::Tcp, 80));
    assert!(!verdict(&rows, other, web, Protocol::Tcp, 22));
    assert!(!verdict(&rows, client, web, Protocol::Tcp, 22));
    assert!(!verdict(&rows, other, web, Protocol::Udp, 5000));
    assert!(!verdict(&rows, other, web, Protocol::Tcp, 443));
    // clients accept nothing new; they may only send to web.
    assert!(!verdict(&rows, web, client, Protocol::Tcp, 80));
    assert!(!verdict(&rows, client, other, Protocol::Tcp, 80));
    // A pod without groups is untouched.
    assert!(verdict(&rows, web, other, Protocol::Tcp, 8080));
}

#[test]
fn bad_fields_are_reported_by_name_and_fail_closed() {
    let yaml = "
metadata: {name: broken}
spec:
  tier: 1
  ingressRules:
  - {ipVersion: ipv4, protocol: tcp, portRangeMin: 90, portRangeMax: 80, remoteType: address, remoteAddress: 0.0.0.0/0, policy: allow, priority: 1}
  - {ipVersion: IPv4, remoteType: securityGroup, remoteSecurityGroup: nowhere, policy: pass, priority: 0}
  egressRules:
  - {ipVersion: ipv6, remoteType: address, remoteAddress: 10.0.0.0/8, policy: permit, priority: 2, protocol: sctp}
---
metadata: {name: fine}
spec:
  ingressRules:
  - {ipVersion: ipv4, remoteType: address, remoteAddress: 10.16.0.20, policy: allow, priority: 1}
";
    let input = SecurityGroupInput {
        groups: groups(yaml),
        ports: vec![
            port("a", "10.16.0.10", "broken"),
            port("b", "10.16.0.11", "fine,typo"),
        ],
    };
    let p = plan_security_groups(&input);
    let got: Vec<(String, String)> = p
        .issues
        .iter()
        .map(|i| (i.object.clone(), i.field.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        (
            "Pod shop/b",
            "metadata.annotations[ovn.kubernetes.io/security_groups]",
        ),
        ("SecurityGroup broken", "spec.egressRules[0].policy"),
        ("SecurityGroup broken", "spec.egressRules[0].protocol"),
        ("SecurityGroup broken", "spec.egressRules[0].remoteAddress"),
        ("SecurityGroup broken", "spec.ingressRules[0].portRangeMin"),
        ("SecurityGroup broken", "spec.ingressRules[1].ipVersion"),
        ("SecurityGroup broken", "spec.ingressRules[1].policy"),
        ("SecurityGroup broken", "spec.ingressRules[1].priority"),
        (
            "SecurityGroup broken",
            "spec.ingressRules[1].remoteSecurityGroup",
        ),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{:#?}", p.issues);
    for i in &p.issues {
        let text = i.to_string();
        assert!(
            text.starts_with(&i.object) && text.contains(&i.field),
            "{text}"
        );
    }
    assert!(
        p.issues[0].reason.contains("\"typo\" does not exist"),
        "{}",
        p.issues[0]
    );
    assert!(!p.applied["broken"]);
    assert!(p.applied["fine"]);
    // The broken group keeps only its base allows; both pods stay isolated.
    assert!(
        p.port_groups["sg.broken"]
            .acls
            .keys()
            .all(|k| k.contains("/base/")),
        "{:?}",
        p.port_groups["sg.broken"].acls.keys()
    );
    assert_eq!(p.port_groups[DENY_ALL_PORT_GROUP].ports.len(), 2);
    let rows = Rows::new(p.port_groups.values(), p.address_sets.values());
    let a = ("a.shop", "10.16.0.10");
    let b = ("b.shop", "10.16.0.11");
    let c = ("c.shop", "10.16.0.20");
    assert!(!verdict(&rows, c, a, Protocol::Tcp, 85));
    assert!(verdict(&rows, c, b, Protocol::Tcp, 85));
    assert!(!verdict(&rows, a, b, Protocol::Tcp, 85));
}

#[test]
fn plan_puts_members_out_of_the_conntrack_bypass_and_reports_issues() {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    for (i, name) in ["web-1", "client-1", "other"].iter().enumerate() {
        d.ports.push(PortIntent {
            pod: name.to_string(),
            namespace: "shop".into(),
            provider: "ovn".into(),
            subnet: "ovn-default".into(),
            node: "n1".into(),
            mac: MacAddr([0x0e, 0, 0, 0, 1, i as u8]),
            ips: vec![format!("10.16.0.{}", 10 + 10 * i).parse().unwrap()],
            port_security: true,
        });
    }
    d.security_groups = example();
    let p = plan(&d);
    assert!(p.issues.is_empty(), "{:?}", p.issues);
    assert!(p.port_groups.contains_key("sg.web"));
    for (name, pg) in &p.port_groups {
        if name.starts_with("ctbypass.") {
            assert_eq!(
                pg.ports,
                BTreeSet::from(["other.shop".to_string()]),
                "{name}"
            );
        }
    }
    for sw in p.switches.values() {
        for a in sw.acls.values() {
            assert!(
                a.action != "allow-stateless" || !a.match_.contains("10.16.0.10"),
                "a bypass mark covers a member: {}",
                a.match_
            );
        }
    }
    d.security_groups
        .ports
        .push(port("other", "10.16.0.30", "nope"));
    let p = plan(&d);
    assert!(
        matches!(p.issues.as_slice(), [PlanIssue::SecurityGroup(i)] if i.object == "Pod shop/other"),
        "{:?}",
        p.issues
    );
}
