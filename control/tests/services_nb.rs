//! Service load balancers against a real OVN central (ovsdb-server NB/SB + ovn-northd): the
//! planned rows land, an endpoint change rewrites one row's `vips` and nothing else, a
//! restarted controller changes nothing, a bad Service is left out while the rest converge,
//! and northd turns the rows into the flows docs/services.md describes.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use ferrovn_control::controller::{Controller, ControllerOptions};
use ferrovn_control::plan::{DEFAULT_ROUTER, Desired, LbAttach, NbPlan, ServiceInputs, plan};
use ferrovn_control::reconcile::{Change, NbSync, Table};
use ferrovn_testkit::ovsdb::OvnCentral;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

fn sbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.sbctl(args)
        .unwrap_or_else(|e| panic!("ovn-sbctl {args:?}: {e}"))
}

fn svc(name: &str, ip: &str, port: i64) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": port, "targetPort": 8080}]},
    }))
    .unwrap()
}

fn slice(service: &str, hosts: &[u8]) -> EndpointSlice {
    let eps: Vec<_> = hosts
        .iter()
        .map(|h| json!({"addresses": [format!("10.16.0.{h}")], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

fn cluster(services: Vec<Service>, slices: Vec<EndpointSlice>, attach: LbAttach) -> NbPlan {
    let mut d = Desired {
        lb_attach: attach,
        services: ServiceInputs {
            services,
            endpoint_slices: slices,
            ..Default::default()
        },
        ..common::default_cluster("10.16.0.0/16", None)
    };
    let mut quiet = common::overlay("dpdk", "10.17.0.0/16");
    quiet.enable_lb = false;
    d.subnets.push(quiet);
    plan(&d)
}

fn many(n: usize, hosts: &[u8]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut s = Vec::new();
    let mut e = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        s.push(svc(
            &name,
            &format!("10.96.{}.{}", i / 250, i % 250 + 1),
            80,
        ));
        e.push(slice(&name, hosts));
    }
    (s, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_touch_one_row_and_a_restart_changes_nothing() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB");

    // 20 Services, each with 2 endpoints, plus one without endpoints and one invalid.
    let (mut services, mut slices) = many(20, &[5, 6]);
    services.push(svc("empty", "10.96.9.1", 80));
    services.push(svc("bad", "10.96.9.2", 0));
    let a = cluster(services.clone(), slices.clone(), LbAttach::Switches);
    assert_eq!(a.issues.len(), 1, "{:?}", a.issues);
    assert!(
        a.issues[0].to_string().contains("default/bad"),
        "{:?}",
        a.issues
    );
    let (d, _) = sync.sync(&a).await.expect("sync");
    assert_eq!(d.counts(), (a.row_count(), 0, 0));
    assert!(d.conflicts.is_empty(), "{:?}", d.conflicts);

    let lbs = nbctl(&central, &["--columns=name", "list", "Load_Balancer"]);
    assert_eq!(lbs.matches("svc:default/").count(), 21, "{lbs}");
    assert!(!lbs.contains("svc:default/bad"), "{lbs}");
    let vips = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:default/s3:tcp", "vips"],
    );
    assert_eq!(
        vips.trim(),
        r#"{"10.96.0.4:80"="10.16.0.5:8080,10.16.0.6:8080"}"#
    );
    let empty = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:default/empty:tcp", "vips"],
    );
    assert_eq!(empty.trim(), r#"{"10.96.9.1:80"=""}"#);
    let opts = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:default/empty:tcp", "options"],
    );
    assert!(opts.contains("reject=\"true\""), "{opts}");
    // The group holds them all; each switch serving Services references it once.
    let members = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer_Group",
            "ferrovn-lbs-ovn-cluster",
            "load_balancer",
        ],
    );
    assert_eq!(members.matches(',').count() + 1, 21, "{members}");
    let group_uuid = nbctl(
        &central,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer_Group",
            "name=ferrovn-lbs-ovn-cluster",
        ],
    );
    for (ls, want) in [("ovn-default", true), ("join", true), ("dpdk", false)] {
        let g = nbctl(
            &central,
            &["get", "Logical_Switch", ls, "load_balancer_group"],
        );
        assert_eq!(g.contains(group_uuid.trim()), want, "{ls}: {g}");
        let direct = nbctl(&central, &["get", "Logical_Switch", ls, "load_balancer"]);
        assert_eq!(direct.trim(), "[]", "{ls}: no direct LB references");
    }

    // Converged: nothing to do.
    assert!(sync.diff(&a).is_empty());

    // Scale s7 up, then down to zero: each time one update of that row's vips.
    for hosts in [&[5u8, 6, 7][..], &[]] {
        slices[7] = slice("s7", hosts);
        let b = cluster(services.clone(), slices.clone(), LbAttach::Switches);
        let (d, report) = sync.sync(&b).await.expect("endpoint change");
        assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
        match &d.changes[0] {
            Change::Update {
                table: Table::LoadBalancer,
                key,
                columns,
                ..
            } => {
                assert_eq!(key, "lb/default/s7/tcp");
                assert_eq!(columns.keys().collect::<Vec<_>>(), vec!["vips"]);
            }
            other => panic!("unexpected change {other:?}"),
        }
        assert_eq!(report.operations, 1, "one update operation");
        let want = hosts
            .iter()
            .map(|h| format!("10.16.0.{h}:8080"))
            .collect::<Vec<_>>()
            .join(",");
        let vips = nbctl(
            &central,
            &["get", "Load_Balancer", "svc:default/s7:tcp", "vips"],
        );
        assert_eq!(vips.trim(), format!(r#"{{"10.96.0.8:80"="{want}"}}"#));
    }

    // The bad Service fixed: one insert, the switches untouched.
    let mut fixed = services.clone();
    let last = fixed.len() - 1;
    fixed[last] = svc("bad", "10.96.9.2", 81);
    let c = cluster(fixed, slices.clone(), LbAttach::Switches);
    assert!(c.issues.is_empty(), "{:?}", c.issues);
    let (d, _) = sync.sync(&c).await.expect("fixed");
    assert_eq!(d.counts(), (1, 0, 0), "{:#?}", d.changes);

    // A restart: a new connection with a fresh replica finds nothing to do.
    drop(sync);
    let again = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB again");
    assert!(again.diff(&c).is_empty(), "{:#?}", again.diff(&c).changes);

    // A Service deleted: its row goes, and the group's weak reference with it.
    let (d, _) = again
        .sync(&cluster(
            services[..20].to_vec(),
            slices.clone(),
            LbAttach::Switches,
        ))
        .await
        .expect("delete");
    assert_eq!(d.counts(), (0, 0, 2), "{:#?}", d.changes);
    let members = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer_Group",
            "ferrovn-lbs-ovn-cluster",
            "load_balancer",
        ],
    );
    assert_eq!(members.matches(',').count() + 1, 20, "{members}");
    assert!(
        again
            .diff(&cluster(
                services[..20].to_vec(),
                slices,
                LbAttach::Switches
            ))
            .is_empty()
    );
}

/// What docs/services.md says about conntrack, checked on northd's output: a switch
/// referencing load balancers sends *all* IP traffic of its ports through conntrack
/// (`ls_in_pre_lb`/`ls_out_pre_lb` `ip` → `reg0[2] = 1`), a switch without any (enableLb:
/// false) does not; a distributed router without a gateway port gets no load balancing
/// flows for the VIPs at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn northd_sends_only_lb_switches_through_conntrack_and_router_lbs_lack_undnat() {
    let central = OvnCentral::start().expect("OVN central");
    central.wait_northd_active().expect("northd");
    let sync = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB");
    let (services, slices) = many(2, &[5, 6]);
    sync.sync(&cluster(
        services.clone(),
        slices.clone(),
        LbAttach::Switches,
    ))
    .await
    .expect("sync");
    central.sync_sb().expect("northd caught up");

    let flows = sbctl(&central, &["lflow-list", "ovn-default"]);
    let pre_lb_ct = |flows: &str| {
        flows.lines().any(|l| {
            l.contains("ls_in_pre_lb")
                && l.contains("priority=100")
                && l.contains("match=(ip)")
                && l.contains("reg0[2] = 1")
        })
    };
    assert!(
        pre_lb_ct(&flows),
        "ovn-default: every IP packet to conntrack"
    );
    assert!(
        flows.contains("ct_lb_mark(backends=10.16.0.5:8080,10.16.0.6:8080)"),
        "the VIP is load balanced on the switch"
    );
    let quiet = sbctl(&central, &["lflow-list", "dpdk"]);
    assert!(
        !pre_lb_ct(&quiet),
        "dpdk (enableLb: false) keeps conntrack off"
    );
    assert!(!quiet.contains("ct_lb_mark(backends="));

    // The same group on the distributed router only (no gateway port): northd does DNAT the
    // VIPs there, sending only VIP-addressed packets to conntrack (lr_in_defrag), but plans
    // no un-DNAT of the replies (lr_out_undnat holds only its default flow): a reply from a
    // backend would reach the client with the backend's address. Hence switches on 25.03.
    sync.sync(&cluster(services, slices, LbAttach::Router))
        .await
        .expect("router attach");
    central.sync_sb().expect("northd caught up");
    let lr = sbctl(&central, &["lflow-list", DEFAULT_ROUTER]);
    let stage = |name: &str| -> Vec<&str> { lr.lines().filter(|l| l.contains(name)).collect() };
    assert!(
        lr.contains("ct_lb_mark(backends=10.16.0.5:8080,10.16.0.6:8080)"),
        "router DNATs the VIP"
    );
    let defrag = stage("lr_in_defrag");
    assert!(
        defrag
            .iter()
            .all(|l| l.contains("priority=0") || l.contains("ip4.dst == 10.96.0.")),
        "only VIP traffic meets conntrack on the router: {defrag:#?}"
    );
    let undnat = stage("lr_out_undnat");
    assert!(
        undnat.iter().all(|l| l.contains("priority=0")),
        "no un-DNAT for replies on a router without gateway port: {undnat:#?}"
    );
    let ls = sbctl(&central, &["lflow-list", "ovn-default"]);
    assert!(
        !pre_lb_ct(&ls),
        "no switch LB left: no conntrack on ovn-default"
    );
}

/// The controller in manifest mode with deploy/examples (Services included): the Service
/// rows land, and a second controller process over the same NB and state changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_over_services_changes_nothing() {
    let central = OvnCentral::start().expect("OVN central");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    fs::create_dir_all(&manifests).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for e in fs::read_dir(&examples).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, manifests.join(p.file_name().unwrap())).unwrap();
    }
    let state = dir.path().join("state");
    let opts = ControllerOptions::new(central.nb_remote(), &manifests, &state);
    let mut c = Controller::connect(opts.clone()).await.expect("controller");
    let r = c.pass().await.expect("pass");
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    let vips = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:demo/db:tcp", "vips"],
    );
    assert_eq!(vips.trim(), r#"{"10.96.0.20:5432"="10.66.0.20:5432"}"#);
    let opts_db = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:demo/db:tcp", "options"],
    );
    assert!(opts_db.contains("affinity_timeout=\"600\""), "{opts_db}");
    let web = nbctl(
        &central,
        &["get", "Load_Balancer", "svc:demo/web:tcp", "vips"],
    );
    assert!(web.contains(r#""10.96.0.80:80"="""#), "{web}");
    drop(c);

    let mut c = Controller::connect(opts).await.expect("controller again");
    let r = c.pass().await.expect("pass after restart");
    assert_eq!(r.nb_operations, 0, "{r:?}");
    assert!(r.is_noop(), "{r:?}");
}

/// `internalTrafficPolicy: Local` against a real NB + northd: the template load balancer and
/// one Chassis_Template_Var row per chassis land, northd turns the template into flows and
/// copies the variables to the SB, an endpoint moving on one node rewrites exactly that
/// chassis' row, and a restarted controller changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policy_is_a_template_and_an_endpoint_change_is_one_chassis_row() {
    let central = OvnCentral::start().expect("OVN central");
    central.wait_northd_active().expect("northd");
    let sync = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB");
    let local: Service = serde_json::from_value(json!({
        "metadata": {"name": "local", "namespace": "default"},
        "spec": {"clusterIP": "10.96.7.1", "internalTrafficPolicy": "Local",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let local_slice = |node1: &[u8]| -> EndpointSlice {
        let mut eps = vec![json!({"addresses": ["10.16.0.5"], "nodeName": "n0"})];
        eps.extend(
            node1
                .iter()
                .map(|h| json!({"addresses": [format!("10.16.0.{h}")], "nodeName": "n1"})),
        );
        serde_json::from_value(json!({
            "metadata": {"name": "local-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "local"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps,
        }))
        .unwrap()
    };
    let build = |node1: Option<&[u8]>| {
        let (mut services, mut slices) = many(3, &[5, 6]);
        if let Some(node1) = node1 {
            services.push(local.clone());
            slices.push(local_slice(node1));
        }
        let mut d = Desired {
            services: ServiceInputs {
                services,
                endpoint_slices: slices,
                node_chassis: [("n0", "chassis-0"), ("n1", "chassis-1")]
                    .into_iter()
                    .map(|(n, c)| (n.to_string(), c.to_string()))
                    .collect(),
            },
            ..common::default_cluster("10.16.0.0/16", None)
        };
        d.lb_attach = LbAttach::Switches;
        plan(&d)
    };
    let with = |node1: &[u8]| build(Some(node1));
    let a = with(&[6]);
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    let (d, _) = sync.sync(&a).await.expect("sync");
    assert_eq!(d.counts(), (a.row_count(), 0, 0));
    let opts = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer",
            "svc:default/local:tcp:local4",
            "options",
        ],
    );
    assert!(
        opts.contains("template=\"true\"") && opts.contains("address-family=ipv4"),
        "{opts}"
    );
    let vars = |c: &str| {
        nbctl(
            &central,
            &[
                "--bare",
                "--columns=variables",
                "find",
                "Chassis_Template_Var",
                &format!("chassis={c}"),
            ],
        )
    };
    assert!(
        vars("chassis-0").contains("=10.16.0.5:8080"),
        "{}",
        vars("chassis-0")
    );
    assert!(
        vars("chassis-1").contains("=10.16.0.6:8080"),
        "{}",
        vars("chassis-1")
    );
    assert!(
        vars("chassis-0").contains("=10.96.7.1"),
        "{}",
        vars("chassis-0")
    );

    // northd: the template is a switch load balancer whose backends are the variable, and the
    // variables reach the SB for ovn-controller to expand.
    central.sync_sb().expect("northd caught up");
    let flows = sbctl(&central, &["lflow-list", "ovn-default"]);
    assert!(
        flows
            .lines()
            .any(|l| l.contains("ls_in_lb") && l.contains("ct_lb_mark(backends=^fvn")),
        "template LB flows on the switch"
    );
    let sb_vars = sbctl(
        &central,
        &[
            "--columns=chassis,variables",
            "list",
            "Chassis_Template_Var",
        ],
    );
    assert!(
        sb_vars.contains("chassis-1") && sb_vars.contains("10.16.0.6:8080"),
        "{sb_vars}"
    );

    // A second endpoint on n1: one update, of chassis-1's variables only.
    let b = with(&[6, 7]);
    let (d, report) = sync.sync(&b).await.expect("endpoint change");
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    match &d.changes[0] {
        Change::Update {
            table: Table::ChassisTemplateVar,
            key,
            columns,
            ..
        } => {
            assert_eq!(key, "ctv/chassis-1");
            assert_eq!(columns.keys().collect::<Vec<_>>(), vec!["variables"]);
        }
        other => panic!("unexpected change {other:?}"),
    }
    assert_eq!(report.operations, 1);
    assert!(
        vars("chassis-1").contains("=10.16.0.6:8080,10.16.0.7:8080"),
        "{}",
        vars("chassis-1")
    );

    // Restart: nothing to do. The Service gone: its load balancer goes, the variables with
    // it, but each chassis keeps its (now empty) row: ovn-controller asserts when a chassis'
    // row is deleted and a new one inserted later (plan/services.rs `keep_chassis_rows`).
    drop(sync);
    let again = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB again");
    assert!(again.diff(&b).is_empty(), "{:#?}", again.diff(&b).changes);
    let (d, _) = again.sync(&build(None)).await.expect("delete");
    assert_eq!(d.counts(), (0, 2, 1), "{:#?}", d.changes);
    let left = nbctl(
        &central,
        &[
            "--bare",
            "--columns=chassis,variables",
            "list",
            "Chassis_Template_Var",
        ],
    );
    let mut left: Vec<&str> = left.split_whitespace().collect();
    left.sort_unstable(); // rows in UUID order
    assert_eq!(
        left,
        vec!["chassis-0", "chassis-1"],
        "rows kept, variables empty"
    );
    // The next Local Service updates those rows: no row of a chassis is ever inserted again.
    let (d, _) = again.sync(&with(&[6])).await.expect("again");
    assert!(
        d.changes.iter().all(|c| !matches!(
            c,
            Change::Insert {
                table: Table::ChassisTemplateVar,
                ..
            }
        )),
        "{:#?}",
        d.changes
    );
    assert!(vars("chassis-1").contains("=10.16.0.6:8080"));
}

/// `web` (10.96.0.10:80 → :8080) opted in to OVN health checks with `options`, its endpoints
/// `10.16.0.<h>` naming their pods `p<h>`.
fn health_checked(options: Option<&str>, hosts: &[u8]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut s = svc("web", "10.96.0.10", 80);
    if let Some(o) = options {
        s.metadata.annotations = Some(
            [
                ("ovn.kubernetes.io/service_health_check", "true"),
                ("ferrovn.io/health-check-options", o),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
    }
    let mut e = slice("web", hosts);
    for (ep, h) in e.endpoints.iter_mut().zip(hosts) {
        ep.target_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Pod".into()),
            name: Some(format!("p{h}")),
            namespace: Some("default".into()),
            ..Default::default()
        });
    }
    (vec![s], vec![e])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_owned_children_of_their_load_balancer() {
    let central = OvnCentral::start().expect("OVN central");
    let sync = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB");
    let hc_rows = || {
        nbctl(
            &central,
            &[
                "--bare",
                "--columns=vip,options",
                "list",
                "Load_Balancer_Health_Check",
            ],
        )
    };

    // Opted in: the health check row lands with the load balancer, referenced by it, and the
    // backends are mapped to their pod ports with the subnet's probe source.
    let (s, e) = health_checked(Some("interval=2"), &[5, 6]);
    let a = cluster(s, e, LbAttach::Switches);
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    sync.sync(&a).await.expect("sync");
    let rows = hc_rows();
    assert!(
        rows.contains("10.96.0.10:80") && rows.contains("interval=2"),
        "{rows}"
    );
    let referenced = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer",
            "svc:default/web:tcp",
            "health_check",
        ],
    );
    let uuid = nbctl(
        &central,
        &[
            "--bare",
            "--columns=_uuid",
            "list",
            "Load_Balancer_Health_Check",
        ],
    );
    assert_eq!(referenced.trim(), format!("[{}]", uuid.trim()));
    let mappings = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer",
            "svc:default/web:tcp",
            "ip_port_mappings",
        ],
    );
    assert_eq!(
        mappings.trim(),
        r#"{"10.16.0.5"="p5.default:10.16.255.254", "10.16.0.6"="p6.default:10.16.255.254"}"#
    );
    // A restarted controller finds nothing to do.
    let restarted = NbSync::connect(&central.nb_remote(), 500)
        .await
        .expect("NB");
    assert!(restarted.diff(&a).is_empty(), "{:#?}", restarted.diff(&a));

    // Tuning changes one row: the health check's options.
    let (s, e) = health_checked(Some("interval=3"), &[5, 6]);
    let (d, _) = sync
        .sync(&cluster(s, e, LbAttach::Switches))
        .await
        .expect("retune");
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    assert!(
        matches!(&d.changes[0], Change::Update { table: Table::LoadBalancerHealthCheck, columns, .. }
            if columns.keys().collect::<Vec<_>>() == vec!["options"]),
        "{:#?}",
        d.changes
    );
    // An endpoint more: one update of the load balancer (vips and the new mapping).
    let (s, e) = health_checked(Some("interval=3"), &[5, 6, 7]);
    let (d, report) = sync
        .sync(&cluster(s, e, LbAttach::Switches))
        .await
        .expect("scale up");
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    assert_eq!(report.operations, 1);

    // Opted out: the mappings go and the health check row with them (OVSDB collects the
    // unreferenced row).
    let (s, e) = health_checked(None, &[5, 6, 7]);
    sync.sync(&cluster(s, e, LbAttach::Switches))
        .await
        .expect("opt out");
    assert_eq!(hc_rows().trim(), "");
    let mappings = nbctl(
        &central,
        &[
            "get",
            "Load_Balancer",
            "svc:default/web:tcp",
            "ip_port_mappings",
        ],
    );
    assert_eq!(mappings.trim(), "{}");

    // Opted in again, then the Service deleted: load balancer and health check both go.
    let (s, e) = health_checked(Some("interval=3"), &[5]);
    sync.sync(&cluster(s, e, LbAttach::Switches))
        .await
        .expect("opt in");
    assert!(hc_rows().contains("10.96.0.10:80"));
    sync.sync(&cluster(vec![], vec![], LbAttach::Switches))
        .await
        .expect("delete");
    assert_eq!(hc_rows().trim(), "");
    assert_eq!(
        nbctl(
            &central,
            &["--bare", "--columns=name", "list", "Load_Balancer"]
        )
        .trim(),
        ""
    );
}
