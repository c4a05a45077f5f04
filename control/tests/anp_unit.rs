//! AdminNetworkPolicy / BaselineAdminNetworkPolicy translation: the worked example of
//! docs/network-policy.md row by row, the ACL priority bands, and bad input reported by field
//! without stopping the other policies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use ferrovn_api::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use ferrovn_control::manifest::load_str;
use ferrovn_control::plan::netpol::admin::{
    ADMIN_NODE_PRIORITY, ANP_TIER, ANP_TOP_PRIORITY, AdminNode, AdminPolicyInput, AdminPolicyPlan,
    BANP_TIER, BANP_TOP_PRIORITY, plan_admin_policies,
};
use ferrovn_control::plan::netpol::{PlannedPgAcl, PolicyNamespace, PolicyPod};

/// The worked example of docs/network-policy.md.
const EXAMPLE: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: restricted
spec:
  priority: 10
  subject:
    namespaces:
      matchLabels:
        security: restricted
  ingress:
  - name: monitoring-may-scrape
    action: Allow
    from:
    - namespaces:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
  - name: same-tenant-decides-itself
    action: Pass
    from:
    - pods:
        namespaceSelector:
          matchLabels:
            tenant: blue
        podSelector: {}
  - name: nobody-else
    action: Deny
    from:
    - namespaces: {}
  egress:
  - name: no-apiserver
    action: Deny
    to:
    - nodes:
        matchExpressions:
        - key: node-role.kubernetes.io/control-plane
          operator: Exists
    ports:
    - portNumber:
        protocol: TCP
        port: 6443
  - name: dns
    action: Allow
    to:
    - networks: [10.96.0.10/32]
    ports:
    - portNumber:
        protocol: UDP
        port: 53
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
spec:
  subject:
    namespaces:
      matchLabels:
        tenant: blue
  ingress:
  - name: default-deny-other-tenants
    action: Deny
    from:
    - namespaces:
        matchExpressions:
        - key: tenant
          operator: NotIn
          values: [blue]
"#;

fn ns(name: &str, labels: &[(&str, &str)]) -> PolicyNamespace {
    PolicyNamespace {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn pod(ns: &str, name: &str, ip: &str) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::new(),
        port: format!("{name}.{ns}"),
        ips: vec![ip.parse().unwrap()],
        named_ports: Vec::new(),
    }
}

fn input(
    anps: Vec<AdminNetworkPolicy>,
    banps: Vec<BaselineAdminNetworkPolicy>,
) -> AdminPolicyInput {
    AdminPolicyInput {
        anps,
        banps,
        pods: vec![
            pod("vault", "vault-0", "10.16.0.10"),
            pod("monitoring", "prom", "10.16.0.20"),
            pod("blue-web", "web", "10.16.0.30"),
            pod("red-web", "web", "10.16.0.40"),
        ],
        namespaces: vec![
            ns("vault", &[("security", "restricted"), ("tenant", "blue")]),
            ns("monitoring", &[]),
            ns("blue-web", &[("tenant", "blue")]),
            ns("red-web", &[("tenant", "red")]),
        ],
        nodes: vec![
            AdminNode {
                name: "cp".into(),
                labels: BTreeMap::from([(
                    "node-role.kubernetes.io/control-plane".to_string(),
                    String::new(),
                )]),
                ips: vec!["172.18.0.2".parse().unwrap(), "100.64.0.2".parse().unwrap()],
            },
            AdminNode {
                name: "worker".into(),
                labels: BTreeMap::new(),
                ips: vec!["172.18.0.3".parse().unwrap(), "100.64.0.3".parse().unwrap()],
            },
        ],
        kubelet_ips: vec!["100.64.0.2".parse().unwrap(), "100.64.0.3".parse().unwrap()],
    }
}

fn example() -> (Vec<AdminNetworkPolicy>, Vec<BaselineAdminNetworkPolicy>) {
    let m = load_str(EXAMPLE, "example.yaml").unwrap();
    (
        m.admin_network_policies().cloned().collect(),
        m.baseline_admin_network_policies().cloned().collect(),
    )
}

/// The ACL of `pg` with row key `…/<dir>/<what>`.
fn acl<'a>(plan: &'a AdminPolicyPlan, pg: &str, dir: &str, what: &str) -> &'a PlannedPgAcl {
    let g = &plan.port_groups[pg];
    g.acls
        .iter()
        .find(|(k, _)| k.ends_with(&format!("/{dir}/{what}")))
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no {dir}/{what} ACL on {pg}: {:?}", g.acls.keys()))
}

/// The addresses of the one address set a match names.
fn set_of(plan: &AdminPolicyPlan, m: &str) -> BTreeSet<String> {
    let names: Vec<&str> = m
        .split('$')
        .skip(1)
        .map(|s| s.split([' ', ')']).next().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{m}");
    plan.address_sets[names[0]].addresses.clone()
}

fn strs(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn worked_example_rows() {
    let (anps, banps) = example();
    let plan = plan_admin_policies(&input(anps, banps));
    assert!(plan.issues.is_empty(), "{:?}", plan.issues);
    assert_eq!(
        plan.port_groups.keys().collect::<Vec<_>>(),
        ["anp.restricted", "banp.default"]
    );
    // Subjects: the restricted namespace's pods; the BANP's: every blue tenant's pods.
    assert_eq!(
        plan.port_groups["anp.restricted"].ports,
        strs(&["vault-0.vault"])
    );
    assert_eq!(
        plan.port_groups["banp.default"].ports,
        strs(&["vault-0.vault", "web.blue-web"])
    );

    let allow = acl(&plan, "anp.restricted", "ingress", "0");
    assert_eq!(
        (
            allow.tier,
            allow.priority,
            allow.action.as_str(),
            allow.direction.as_str()
        ),
        (ANP_TIER, ANP_TOP_PRIORITY, "allow-related", "to-lport")
    );
    assert!(
        allow
            .match_
            .starts_with("outport == @anp.restricted && ip && (ip4.src == $anp.pods.")
    );
    assert_eq!(set_of(&plan, &allow.match_), strs(&["10.16.0.20"]));

    let pass = acl(&plan, "anp.restricted", "ingress", "1");
    assert_eq!(
        (pass.priority, pass.action.as_str()),
        (ANP_TOP_PRIORITY - 1, "pass")
    );
    assert_eq!(
        set_of(&plan, &pass.match_),
        strs(&["10.16.0.10", "10.16.0.30"])
    );

    let deny = acl(&plan, "anp.restricted", "ingress", "2");
    assert_eq!(
        (deny.priority, deny.action.as_str()),
        (ANP_TOP_PRIORITY - 2, "drop")
    );
    assert_eq!(
        set_of(&plan, &deny.match_),
        strs(&["10.16.0.10", "10.16.0.20", "10.16.0.30", "10.16.0.40"])
    );

    // Egress to the control-plane node's addresses (InternalIP and join) on 6443.
    let api = acl(&plan, "anp.restricted", "egress", "0");
    assert_eq!(
        (api.priority, api.action.as_str(), api.direction.as_str()),
        (ANP_TOP_PRIORITY, "drop", "from-lport")
    );
    assert_eq!(
        api.options.get("apply-after-lb").map(String::as_str),
        Some("true")
    );
    assert!(
        api.match_
            .starts_with("inport == @anp.restricted && ip && (ip4.dst == $anp.nodes.")
    );
    assert!(
        api.match_.ends_with(" && (tcp.dst == 6443)"),
        "{}",
        api.match_
    );
    assert_eq!(
        set_of(&plan, &api.match_),
        strs(&["100.64.0.2", "172.18.0.2"])
    );

    let dns = acl(&plan, "anp.restricted", "egress", "1");
    assert_eq!(
        dns.match_,
        "inport == @anp.restricted && ip && (ip4.dst == {10.96.0.10/32}) && (udp.dst == 53)"
    );
    assert_eq!(
        (dns.priority, dns.action.as_str()),
        (ANP_TOP_PRIORITY - 1, "allow-related")
    );

    // Node → pod stays allowed, and makes the switch stateful.
    let node = acl(&plan, "anp.restricted", "ingress", "node");
    assert_eq!(
        (node.priority, node.action.as_str()),
        (ADMIN_NODE_PRIORITY, "allow-related")
    );
    assert_eq!(
        node.match_,
        "outport == @anp.restricted && (ip4.src == $anp.kubelet.ip4)"
    );
    assert_eq!(
        plan.address_sets["anp.kubelet.ip4"].addresses,
        strs(&["100.64.0.2", "100.64.0.3"])
    );

    let base = acl(&plan, "banp.default", "ingress", "0");
    assert_eq!(
        (base.tier, base.priority, base.action.as_str()),
        (BANP_TIER, BANP_TOP_PRIORITY, "drop")
    );
    assert_eq!(
        set_of(&plan, &base.match_),
        strs(&["10.16.0.20", "10.16.0.40"])
    );
}

fn anp(yaml: &str) -> AdminNetworkPolicy {
    let text =
        format!("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n{yaml}");
    load_str(&text, "t.yaml")
        .unwrap()
        .admin_network_policies()
        .next()
        .unwrap()
        .clone()
}

/// An ANP with `n` ingress rules denying everything.
fn anp_rules(name: &str, priority: i32, n: usize) -> AdminNetworkPolicy {
    let rules: String = (0..n)
        .map(|_| "  - {action: Deny, from: [{namespaces: {}}]}\n".to_string())
        .collect();
    anp(&format!(
        "metadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  subject: {{namespaces: {{}}}}\n  ingress:\n{rules}"
    ))
}

#[test]
fn bands_follow_priority_then_name_whatever_the_numbers() {
    // 1000 and 0 at both ends of the range, one ANP between them with three rules.
    let plan = plan_admin_policies(&input(
        vec![
            anp_rules("last", 1000, 1),
            anp_rules("first", 0, 2),
            anp_rules("middle", 500, 3),
        ],
        Vec::new(),
    ));
    assert!(plan.issues.is_empty(), "{:?}", plan.issues);
    let prio = |pg: &str, i: &str| acl(&plan, pg, "ingress", i).priority;
    assert_eq!(prio("anp.first", "0"), ANP_TOP_PRIORITY);
    assert_eq!(prio("anp.first", "1"), ANP_TOP_PRIORITY - 1);
    assert_eq!(prio("anp.middle", "0"), ANP_TOP_PRIORITY - 2);
    assert_eq!(prio("anp.middle", "2"), ANP_TOP_PRIORITY - 4);
    assert_eq!(prio("anp.last", "0"), ANP_TOP_PRIORITY - 5);
}

#[test]
fn equal_priorities_are_ordered_by_name_and_reported() {
    let plan = plan_admin_policies(&input(
        vec![anp_rules("b", 5, 1), anp_rules("a", 5, 1)],
        Vec::new(),
    ));
    let prio = |pg: &str| acl(&plan, pg, "ingress", "0").priority;
    assert!(prio("anp.a") > prio("anp.b"));
    assert_eq!(plan.issues.len(), 1, "{:?}", plan.issues);
    assert_eq!(plan.issues[0].policy, "b");
    assert_eq!(plan.issues[0].field, "spec.priority");
}

#[test]
fn bad_fields_are_named_and_leave_the_other_policies_applied() {
    let bad = [
        (
            "metadata: {name: too-low}\nspec: {priority: 1001, subject: {namespaces: {}}}",
            "spec.priority",
        ),
        (
            "metadata: {name: reject}\nspec: {priority: 1, subject: {namespaces: {}}, ingress: [{action: Reject, from: [{namespaces: {}}]}]}",
            "spec.ingress[0].action",
        ),
        (
            "metadata: {name: two-subjects}\nspec: {priority: 2, subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}}",
            "spec.subject",
        ),
        (
            "metadata: {name: bad-cidr}\nspec: {priority: 3, subject: {namespaces: {}}, egress: [{action: Deny, to: [{networks: [10.0.0.300/8]}]}]}",
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            "metadata: {name: no-peer}\nspec: {priority: 4, subject: {namespaces: {}}, ingress: [{action: Deny, from: []}]}",
            "spec.ingress[0].from",
        ),
        (
            "metadata: {name: bad-range}\nspec: {priority: 6, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portRange: {start: 90, end: 80}}]}]}",
            "spec.ingress[0].ports[0].portRange.end",
        ),
        (
            "metadata: {name: bad-proto}\nspec: {priority: 7, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portNumber: {protocol: ICMP, port: 1}}]}]}",
            "spec.ingress[0].ports[0].portNumber.protocol",
        ),
        (
            "metadata: {name: named-to-node}\nspec: {priority: 8, subject: {namespaces: {}}, egress: [{action: Deny, to: [{nodes: {}}], ports: [{namedPort: http}]}]}",
            "spec.egress[0].ports",
        ),
        (
            "metadata: {name: bad-selector}\nspec: {priority: 9, subject: {namespaces: {matchExpressions: [{key: a, operator: Near}]}}}",
            "spec.subject.namespaces.matchExpressions[0]",
        ),
    ];
    let mut anps: Vec<AdminNetworkPolicy> = bad.iter().map(|(y, _)| anp(y)).collect();
    anps.push(anp_rules("good", 500, 1));
    let banp: BaselineAdminNetworkPolicy = load_str(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: other}\nspec: {subject: {namespaces: {}}}",
        "b.yaml",
    )
    .unwrap()
    .baseline_admin_network_policies()
    .next()
    .unwrap()
    .clone();
    let plan = plan_admin_policies(&input(anps, vec![banp]));
    for (yaml, field) in bad {
        let name = yaml
            .trim_start_matches("metadata: {name: ")
            .split('}')
            .next()
            .unwrap();
        assert!(
            plan.issues
                .iter()
                .any(|i| i.kind == "AdminNetworkPolicy" && i.policy == name && i.field == field),
            "{name}: no issue on {field}: {:?}",
            plan.issues
        );
        assert!(
            !plan
                .port_groups
                .contains_key(&format!("anp.{}", name.replace('-', "_")))
        );
    }
    assert!(
        plan.issues
            .iter()
            .any(|i| i.kind == "BaselineAdminNetworkPolicy" && i.field == "metadata.name"),
        "{:?}",
        plan.issues
    );
    assert!(!plan.port_groups.contains_key("banp.other"));
    // The good one is applied, and the messages read as a sentence naming kind and field.
    assert_eq!(plan.port_groups.keys().collect::<Vec<_>>(), ["anp.good"]);
    let text = plan
        .issues
        .iter()
        .find(|i| i.policy == "too-low")
        .unwrap()
        .to_string();
    assert_eq!(
        text,
        "AdminNetworkPolicy too-low: spec.priority: 1001 is outside 0..=1000"
    );
}

#[test]
fn a_manifest_without_priority_is_refused_naming_the_field() {
    let err = load_str(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: p}\nspec: {subject: {namespaces: {}}}",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("priority"), "{err}");
}
