//! NetworkPolicy translation: the worked example of docs/network-policy.md row by row, and
//! bad input reported by field.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use ferrovn_control::plan::netpol::{
    NamedPort, PolicyInput, PolicyNamespace, PolicyPlan, PolicyPod, Protocol, plan_network_policies,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-allow-web
  namespace: shop
spec:
  podSelector:
    matchLabels:
      app: db
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: web
    ports:
    - port: pg
  - from:
    - namespaceSelector:
        matchLabels:
          team: ops
    ports:
    - port: 9187
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/8
        except: [10.16.0.0/16]
    ports:
    - protocol: UDP
      port: 53
      endPort: 54
"#;

fn pod(ns: &str, name: &str, app: &str, ip: &str, named: &[(&str, u16)]) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        port: format!("{name}.{ns}"),
        ips: vec![ip.parse().unwrap()],
        named_ports: named
            .iter()
            .map(|(n, p)| NamedPort {
                name: n.to_string(),
                protocol: Protocol::Tcp,
                port: *p,
            })
            .collect(),
    }
}

fn example() -> PolicyInput {
    let policy: NetworkPolicy = serde_norway::from_str(POLICY).unwrap();
    PolicyInput {
        policies: vec![policy],
        pods: vec![
            pod("shop", "web-1", "web", "10.16.0.5", &[("http", 8080)]),
            pod("shop", "db-1", "db", "10.16.0.6", &[("pg", 5432)]),
            pod("shop", "db-2", "db", "10.16.0.7", &[("pg", 5433)]),
            pod("ops", "prom", "prometheus", "10.16.0.9", &[]),
        ],
        namespaces: vec![
            PolicyNamespace {
                name: "ops".into(),
                labels: BTreeMap::from([("team".to_string(), "ops".to_string())]),
            },
            PolicyNamespace {
                name: "shop".into(),
                labels: BTreeMap::new(),
            },
        ],
        node_ips: vec!["100.64.0.2".parse().unwrap(), "100.64.0.3".parse().unwrap()],
    }
}

/// `ovn-nbctl`-like listing of a plan, as docs/network-policy.md shows it.
fn listing(plan: &PolicyPlan) -> String {
    let mut out = String::new();
    for pg in plan.port_groups.values() {
        let ports: Vec<&str> = pg.ports.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "Port_Group {} ports=[{}]\n",
            pg.name,
            ports.join(", ")
        ));
    }
    for s in plan.address_sets.values() {
        let a: Vec<&str> = s.addresses.iter().map(String::as_str).collect();
        out.push_str(&format!("Address_Set {} [{}]\n", s.name, a.join(", ")));
    }
    for (pg, a) in plan.acls() {
        let opts: Vec<String> = a.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "ACL {} {} tier={} prio={} {} [{}] {}\n",
            pg.name,
            a.direction,
            a.tier,
            a.priority,
            a.action,
            opts.join(","),
            a.match_
        ));
    }
    out
}

#[test]
fn worked_example_rows() {
    let plan = plan_network_policies(&example());
    assert!(plan.issues.is_empty(), "{:?}", plan.issues);
    let got = listing(&plan);
    println!("{got}");
    let want = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/netpol_example.txt"
    ))
    .unwrap();
    assert_eq!(got, want);
}

/// Input the API server would refuse (a manifest may still hold it) is reported by field and
/// fails closed: the broken peer or port allows nothing, the rest of the policy still applies.
#[test]
fn bad_input_is_reported_by_field_and_fails_closed() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: Is, values: [db]}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - {protocol: ICMP, port: 1}
    - {port: 80, endPort: 79}
    - {port: 443}
"#;
    let mut input = example();
    input.policies = vec![serde_norway::from_str(yaml).unwrap()];
    let plan = plan_network_policies(&input);
    let fields: Vec<&str> = plan.issues.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[1].ports[0].protocol",
            "spec.ingress[1].ports[1].endPort",
            "spec.podSelector.matchExpressions[0]",
        ],
        "{:?}",
        plan.issues
    );
    assert!(
        plan.issues[3]
            .to_string()
            .starts_with("NetworkPolicy shop/bad: spec.podSelector"),
        "{}",
        plan.issues[3]
    );
    // The broken pod selector selects the whole namespace (closed), not nothing (open).
    let pg = &plan.port_groups["np.shop.bad"];
    assert_eq!(pg.ports.len(), 3, "{:?}", pg.ports);
    // Rule 0 allows nothing; rule 1 keeps only its valid port.
    let allows: Vec<&str> = pg
        .acls
        .values()
        .filter(|a| a.priority == 2001)
        .map(|a| a.match_.as_str())
        .collect();
    assert_eq!(allows.len(), 1, "{allows:?}");
    assert!(allows[0].ends_with("&& (tcp.dst == 443)"), "{}", allows[0]);
}

/// An ingress-only policy isolates egress of nobody; `ingress: []` isolates with no allow;
/// a policy without policyTypes but with egress rules isolates both directions (API defaults).
#[test]
fn policy_types_follow_api_defaults() {
    let yaml = r#"
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-all-in, namespace: shop}
  spec: {podSelector: {}, ingress: []}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: dns-out, namespace: ops}
  spec:
    podSelector: {}
    egress:
    - ports: [{protocol: UDP, port: 53}]
"#;
    let mut input = example();
    input.policies = serde_norway::from_str(yaml).unwrap();
    let plan = plan_network_policies(&input);
    assert!(plan.issues.is_empty(), "{:?}", plan.issues);
    let dirs = |pg: &str| -> Vec<(String, i64)> {
        plan.port_groups[pg]
            .acls
            .values()
            .map(|a| (a.direction.clone(), a.priority))
            .collect()
    };
    assert_eq!(
        dirs("np.shop.deny_all_in"),
        [
            ("to-lport".to_string(), 2000),
            ("to-lport".to_string(), 3000)
        ]
    );
    assert_eq!(
        dirs("np.ops.dns_out"),
        [
            ("from-lport".to_string(), 2001),
            ("from-lport".to_string(), 2000),
            ("to-lport".to_string(), 2000),
            ("to-lport".to_string(), 3000),
        ]
    );
    assert_eq!(
        plan.port_groups["np.shop.deny_all_in"].ports.len(),
        3,
        "every pod of shop"
    );
}
