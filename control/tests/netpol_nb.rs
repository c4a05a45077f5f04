//! NetworkPolicy rows against a real OVN 25.03 central: the planned port groups, address sets
//! and tier-2 ACLs are accepted by the NB ovsdb-server (schema: tier, name length, options);
//! ovn-northd turns them into logical flows that OVN's expression parser accepts (ovn-trace
//! parses every flow and must not complain); and `ovn-trace` gives the verdicts the policy
//! means (named ports per pod, namespace selector, empty peer set, default drop, stateful
//! reply, node traffic).

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrovn_api::MacAddr;
use ferrovn_api::names::{router_port_mac, router_port_name};
use ferrovn_control::plan::netpol::{
    NamedPort, PolicyInput, PolicyNamespace, PolicyPod, Protocol, plan_network_policies,
};
use ferrovn_control::plan::{DEFAULT_ROUTER, Desired, NodeIntent, PortIntent, plan};
use ferrovn_control::reconcile::NbSync;
use ferrovn_testkit::ovsdb::OvnCentral;
use std::process::Command;

use ferrovn_testkit::process::output_of;
use k8s_openapi::api::networking::v1::NetworkPolicy;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-allow-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
  - from: [{namespaceSelector: {matchLabels: {team: ops}}}]
    ports: [{port: 9187}]
  - from: [{podSelector: {matchLabels: {app: nobody}}}]
    ports: [{port: 7777}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.16.0.0/16]}}]
    ports: [{protocol: UDP, port: 53, endPort: 54}]
"#;

/// (namespace, pod, app label, last IP byte, named pg port)
const PODS: [(&str, &str, &str, u8, Option<u16>); 4] = [
    ("shop", "web-1", "web", 5, None),
    ("shop", "db-1", "db", 6, Some(5432)),
    ("shop", "db-2", "db", 7, Some(5433)),
    ("ops", "prom", "prometheus", 9, None),
];

/// The default router's port on the join switch: where node traffic to pods goes first.
fn router_mac() -> MacAddr {
    router_port_mac(&router_port_name(DEFAULT_ROUTER, "join"))
}

fn mac(i: u8) -> MacAddr {
    MacAddr([0x0e, 0, 0, 0, 0, i])
}

fn desired() -> Desired {
    let mut d = common::default_cluster("10.16.0.0/16", None);
    d.nodes.push(NodeIntent {
        name: "n1".into(),
        join_ips: vec!["100.64.0.2".parse().unwrap()],
        join_mac: Some(mac(200)),
        internal_ips: vec!["172.18.0.2".parse().unwrap()],
    });
    for (ns, pod, _, host, _) in PODS {
        d.ports.push(PortIntent {
            pod: pod.into(),
            namespace: ns.into(),
            provider: "ovn".into(),
            subnet: "ovn-default".into(),
            node: "n1".into(),
            mac: mac(host),
            ips: vec![format!("10.16.0.{host}").parse().unwrap()],
            port_security: true,
        });
    }
    // Through the planner and the reconciler: policy-selected ports keep conntrack (no
    // ct bypass for them), as in the controller.
    d.network_policy = policy_input();
    d
}

fn policy_input() -> PolicyInput {
    PolicyInput {
        policies: vec![serde_norway::from_str::<NetworkPolicy>(POLICY).unwrap()],
        pods: PODS
            .iter()
            .map(|(ns, pod, app, host, pg)| PolicyPod {
                namespace: ns.to_string(),
                name: pod.to_string(),
                labels: BTreeMap::from([("app".to_string(), app.to_string())]),
                port: format!("{pod}.{ns}"),
                ips: vec![format!("10.16.0.{host}").parse::<IpAddr>().unwrap()],
                named_ports: pg
                    .map(|port| NamedPort {
                        name: "pg".into(),
                        protocol: Protocol::Tcp,
                        port,
                    })
                    .into_iter()
                    .collect(),
            })
            .collect(),
        namespaces: vec![PolicyNamespace {
            name: "ops".into(),
            labels: BTreeMap::from([("team".to_string(), "ops".to_string())]),
        }],
        node_ips: vec!["100.64.0.2".parse().unwrap()],
    }
}

/// `ovn-trace` of the first packet of a new connection from `src` to `dst`; true when it
/// leaves through `dst`'s port.
fn delivered(
    central: &OvnCentral,
    datapath: &str,
    src: (&str, MacAddr, &str),
    dst: (&str, MacAddr, &str),
    l4: &str,
    port: u16,
) -> bool {
    traced(central, datapath, src, dst, l4, port, "new")
}

/// `ovn-trace` of one TCP/UDP packet whose conntrack state is `ct` (`new`, `est,rpl`).
fn traced(
    central: &OvnCentral,
    datapath: &str,
    (src_port, src_mac, src_ip): (&str, MacAddr, &str),
    (dst_port, dst_mac, dst_ip): (&str, MacAddr, &str),
    l4: &str,
    port: u16,
    ct: &str,
) -> bool {
    let flow = format!(
        "inport == \"{src_port}\" && eth.src == {src_mac} && eth.dst == {dst_mac} && \
         ip4.src == {src_ip} && ip4.dst == {dst_ip} && ip.ttl == 64 && {l4}.dst == {port} && \
         {l4}.src == 40000"
    );
    let db = format!("--db={}", central.sb_remote());
    let ct = format!("--ct={ct}");
    // One --ct per ct_next: the switch's ingress and egress pipelines each do one.
    let out = output_of(
        "ovn-trace",
        Command::new("ovn-trace").args([&db, "--minimal", &ct, &ct, datapath, &flow]),
    )
    .unwrap_or_else(|e| panic!("ovn-trace {flow}: {e}"));
    // ovn-trace parses every logical flow of the SB first: a match OVN cannot parse (a typo,
    // a missing address set or port group) is reported here.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "ovn-trace complained: {err}");
    let out = String::from_utf8_lossy(&out.stdout);
    out.contains(&format!("output(\"{dst_port}\")"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_rows_accepted_compiled_and_traced() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 100)
        .await
        .expect("NB");
    sync.sync(&plan(&desired())).await.expect("sync cluster");

    let np = plan_network_policies(&policy_input());
    assert!(np.issues.is_empty(), "{:?}", np.issues);
    central.sync_sb().expect("northd caught up");

    let flows = central
        .sbctl(&["lflow-list", "ovn-default"])
        .expect("lflow-list");
    assert!(
        flows.contains("outport == @np.shop.db_allow_web && ip"),
        "no flow for the policy's drop"
    );

    // The drops match `ip`; neighbour discovery still works because northd lets it through
    // every ACL stage above any ACL (docs/network-policy.md relies on this).
    let nd_pass = flows
        .lines()
        .filter(|l| l.contains("acl_eval") && l.contains("priority=65532"))
        .filter(|l| l.contains("match=(nd || nd_ra || nd_rs"))
        .count();
    assert!(nd_pass >= 2, "no ND bypass in the ACL stages");
    let web = ("web-1.shop", mac(5), "10.16.0.5");
    let prom = ("prom.ops", mac(9), "10.16.0.9");
    let db1 = ("db-1.shop", mac(6), "10.16.0.6");
    let db2 = ("db-2.shop", mac(7), "10.16.0.7");
    let ls = "ovn-default";
    // named port "pg" resolved per pod: 5432 on db-1, 5433 on db-2
    assert!(
        delivered(&central, ls, web, db1, "tcp", 5432),
        "web → db-1:5432"
    );
    assert!(
        !delivered(&central, ls, web, db1, "tcp", 5433),
        "web → db-1:5433"
    );
    assert!(
        delivered(&central, ls, web, db2, "tcp", 5433),
        "web → db-2:5433"
    );
    assert!(
        !delivered(&central, ls, web, db2, "tcp", 5432),
        "web → db-2:5432"
    );
    // namespaceSelector team=ops, numeric port
    assert!(
        delivered(&central, ls, prom, db1, "tcp", 9187),
        "prom → db-1:9187"
    );
    assert!(
        !delivered(&central, ls, web, db1, "tcp", 9187),
        "web → db-1:9187"
    );
    // a peer that matches no pod: an empty address set, which allows nothing
    assert!(
        np.address_sets.values().any(|s| s.addresses.is_empty()),
        "the test needs an empty set"
    );
    assert!(
        !delivered(&central, ls, web, db1, "tcp", 7777),
        "web → db-1:7777"
    );
    // egress isolation of db: nothing inside the cluster is allowed (except 10.16/16)
    assert!(
        !delivered(&central, ls, db1, web, "tcp", 80),
        "db-1 → web:80"
    );
    assert!(
        !delivered(&central, ls, db1, web, "udp", 53),
        "db-1 → web:53/udp"
    );
    // stateful: the reply of web → db-1:5432 goes back although db-1's egress is isolated
    assert!(
        traced(&central, ls, db1, web, "tcp", 40000, "est,rpl,trk"),
        "reply db-1 → web"
    );
    // kubelet probes: the node's join address reaches the isolated db-1
    let node = ("node-n1", mac(200), "100.64.0.2");
    let gw = (db1.0, router_mac(), db1.2);
    assert!(
        delivered(&central, "join", node, gw, "tcp", 8080),
        "node → db-1:8080 (probe)"
    );
    // pods no policy selects are open
    assert!(
        delivered(&central, ls, prom, web, "tcp", 80),
        "prom → web:80"
    );
}
