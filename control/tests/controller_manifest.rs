//! The controller in manifest mode against a real OVN central: Kube-OVN-style manifests become
//! NB rows and logical flows, allocations are recorded for the node agent, a restart changes
//! nothing and moves no address, and a removed pod loses its port and record.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferrovn_control::controller::{AllocationRecord, Controller, ControllerOptions};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/controller");

fn copy_fixtures(to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(FIXTURES).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn nbctl(c: &OvnCentral, args: &[&str]) -> String {
    c.nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

fn record(state: &Path, rel: &str) -> AllocationRecord {
    let p = state.join(rel);
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every record file's content, by path.
fn all_records(state: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![state.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

struct Env {
    central: OvnCentral,
    _tmp: tempfile::TempDir,
    manifests: PathBuf,
    state: PathBuf,
}

fn env() -> Env {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    let state = tmp.path().join("state");
    copy_fixtures(&manifests);
    Env {
        central,
        _tmp: tmp,
        manifests,
        state,
    }
}

fn options(e: &Env) -> ControllerOptions {
    let mut o = ControllerOptions::new(e.central.nb_remote(), &e.manifests, &e.state);
    o.batch = 10;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_become_nb_rows_flows_and_records() {
    let e = env();
    let mut c = Controller::connect(options(&e)).await.expect("connect");
    let r = c.pass().await.expect("first pass");
    assert!(r.issues.is_empty(), "issues: {:#?}", r.issues);
    // 8 pod interfaces (testpmd has two) + 2 nodes; the host-network pod has none
    assert_eq!(r.interfaces, 10, "{r:?}");
    assert!(r.nb_transactions > 1, "batched");

    let nb = &e.central;
    // routers and switches with Kube-OVN names
    let show = nbctl(nb, &["show"]);
    for name in [
        "ovn-cluster",
        "vpc-blue",
        "ovn-default",
        "join",
        "team-a",
        "team-b-private",
        "blue-net",
        "dpdk-net",
        "ovn-cluster-team-a",
        "vpc-blue-blue-net",
        "node-node1",
        "node-node2",
    ] {
        assert!(
            show.contains(name),
            "{name} missing from ovn-nbctl show:\n{show}"
        );
    }
    assert!(!show.contains("kube-proxy"), "host-network pod got a port");

    // the static pod: its address and MAC (lower-cased as OVN writes it), port security
    let addr = nbctl(
        nb,
        &["get", "Logical_Switch_Port", "db-0.team-a", "addresses"],
    );
    assert!(addr.contains("00:00:00:53:6b:b6 10.66.0.20"), "{addr}");
    let sec = nbctl(
        nb,
        &["get", "Logical_Switch_Port", "db-0.team-a", "port_security"],
    );
    assert!(sec.contains("10.66.0.20"), "{sec}");
    assert!(nbctl(nb, &["lsp-list", "team-a"]).contains("db-0.team-a"));

    // the namespace-bound subnet: exclude_ips as Kube-OVN writes them, dynamic pods outside it
    let oc = nbctl(nb, &["get", "Logical_Switch", "team-a", "other_config"]);
    assert!(
        oc.contains("exclude_ips=\"10.66.0.1..10.66.0.10 10.66.255.254\""),
        "{oc}"
    );
    assert!(oc.contains("subnet=\"10.66.0.0/16\""), "{oc}");
    let app = record(&e.state, "allocations/team-a/app-0.json");
    let app_ip: std::net::Ipv4Addr = app.annotations["ovn.kubernetes.io/ip_address"]
        .parse()
        .unwrap();
    assert!(
        app_ip.octets()[2] > 0 || app_ip.octets()[3] > 10,
        "{app_ip} is excluded"
    );
    assert_eq!(
        app.annotations["ovn.kubernetes.io/logical_switch"],
        "team-a"
    );
    assert_eq!(app.annotations["ovn.kubernetes.io/cidr"], "10.66.0.0/16");
    assert_eq!(app.annotations["ovn.kubernetes.io/gateway"], "10.66.0.1");
    assert_eq!(app.annotations["ovn.kubernetes.io/allocated"], "true");
    assert_eq!(app.port_name, "app-0.team-a");
    assert_eq!(app.node, "node2");

    // default subnet
    let web = record(&e.state, "allocations/default/web-0.json");
    assert!(web.annotations["ovn.kubernetes.io/ip_address"].starts_with("10.16."));
    assert_eq!(
        web.annotations["ovn.kubernetes.io/logical_router"],
        "ovn-cluster"
    );
    let web_addr = nbctl(
        nb,
        &["get", "Logical_Switch_Port", "web-0.default", "addresses"],
    );
    assert!(web_addr.contains(&web.annotations["ovn.kubernetes.io/ip_address"]));

    // private dual-stack subnet: both families, isolation ACLs
    let api = record(&e.state, "allocations/team-b/api-0.json");
    let ips = &api.annotations["ovn.kubernetes.io/ip_address"];
    assert!(
        ips.starts_with("10.77.") && ips.contains(",fd00:10:77::"),
        "{ips}"
    );
    let acls = nbctl(nb, &["acl-list", "team-b-private"]);
    assert!(acls.contains("1000 (ip) drop"), "{acls}");
    assert!(
        acls.contains("ip4.src == 10.66.0.0/16 && ip4.dst == 10.77.0.0/16"),
        "{acls}"
    );
    assert!(acls.contains("ip4.src == 100.64.0.0/16"), "{acls}");

    // second VPC: own router and route, its subnet off the default router
    let routes = nbctl(nb, &["lr-route-list", "vpc-blue"]);
    assert!(routes.contains("10.66.0.254"), "{routes}");
    let blue = record(&e.state, "allocations/blue/blue-0.json");
    assert_eq!(
        blue.annotations["ovn.kubernetes.io/logical_router"],
        "vpc-blue"
    );
    assert!(blue.annotations["ovn.kubernetes.io/ip_address"].starts_with("10.66.0."));

    // DPDK attachment: its own port and record named by provider
    let dpdk = record(
        &e.state,
        "allocations/default/testpmd@dpdk-net.default.ovn.json",
    );
    assert_eq!(
        dpdk.annotations["dpdk-net.default.ovn.kubernetes.io/ip_address"],
        "172.18.0.9"
    );
    assert_eq!(dpdk.port_name, "testpmd.default.dpdk-net.default.ovn");
    assert!(nbctl(nb, &["lsp-list", "dpdk-net"]).contains("testpmd.default.dpdk-net.default.ovn"));

    // nodes: join port and route policy for the node's IP
    let n1 = record(&e.state, "nodes/node1.json");
    let n1_ip = n1.annotations["ovn.kubernetes.io/ip_address"].clone();
    assert!(n1_ip.starts_with("100.64."), "{n1_ip}");
    let policies = nbctl(nb, &["lr-policy-list", "ovn-cluster"]);
    assert!(
        policies.contains("ip4.dst == 192.168.50.11") && policies.contains(&n1_ip),
        "{policies}"
    );

    // northd turned it into logical flows carrying the pods' addresses
    nb.sync_sb().expect("northd");
    let flows = nb.sbctl(&["lflow-list"]).expect("lflow-list");
    for ip in [
        "10.66.0.20",
        "172.18.0.9",
        web.annotations["ovn.kubernetes.io/ip_address"].as_str(),
    ] {
        assert!(flows.contains(ip), "no logical flow mentions {ip}");
    }

    // a second pass changes nothing
    let r = c.pass().await.expect("second pass");
    assert!(r.is_noop(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_moves_nothing_and_removed_pods_go_away() {
    let e = env();
    let mut c = Controller::connect(options(&e)).await.expect("connect");
    c.pass().await.expect("first pass");
    let records = all_records(&e.state);
    let lsps = nbctl(
        &e.central,
        &["--columns=name,addresses", "list", "Logical_Switch_Port"],
    );
    drop(c);

    // restart with the records: no NB operation, every record byte-identical
    let mut c = Controller::connect(options(&e)).await.expect("reconnect");
    let r = c.pass().await.expect("pass after restart");
    assert_eq!(r.nb_operations, 0, "{r:?}");
    assert_eq!(r.records_written, 0);
    assert!(
        r.recovered
            .is_some_and(|(n, conflicts)| n > 0 && conflicts == 0),
        "{r:?}"
    );
    assert_eq!(all_records(&e.state), records);
    drop(c);

    // restart with the records lost: the NB's own ports give every address back
    fs::remove_dir_all(&e.state).unwrap();
    let mut c = Controller::connect(options(&e)).await.expect("reconnect 2");
    let r = c.pass().await.expect("pass after losing records");
    assert_eq!(r.nb_operations, 0, "{r:?}");
    assert_eq!(all_records(&e.state), records, "addresses moved");
    assert_eq!(
        nbctl(
            &e.central,
            &["--columns=name,addresses", "list", "Logical_Switch_Port"]
        ),
        lsps
    );

    // a new pod appears while running, another disappears
    let path = e.manifests.join("02-default.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let without_web1 = text.replace("name: web-1", "name: web-2");
    fs::write(&path, without_web1).unwrap();
    let r = c.pass().await.expect("pass after edit");
    assert_eq!(r.released, 1, "{r:?}");
    assert_eq!(r.records_removed, 1);
    assert_eq!(r.records_written, 1);
    let names = nbctl(
        &e.central,
        &["--columns=name", "list", "Logical_Switch_Port"],
    );
    assert!(!names.contains("web-1.default"), "{names}");
    assert!(names.contains("web-2.default"), "{names}");
    assert!(!e.state.join("allocations/default/web-1.json").exists());
    assert!(e.state.join("allocations/default/web-2.json").exists());
    // the others kept their addresses
    let after = all_records(&e.state);
    for (p, content) in &records {
        if !p.ends_with("web-1.json") {
            assert_eq!(after.get(p), Some(content), "{} changed", p.display());
        }
    }
}

#[test]
fn binary_once_applies_and_exits() {
    let e = env();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
        .arg("--nb")
        .arg(e.central.nb_remote())
        .arg("--manifests")
        .arg(&e.manifests)
        .arg("--state-dir")
        .arg(&e.state)
        .arg("--once")
        .output()
        .expect("run ferrovn-controller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pass applied"), "{stderr}");
    assert!(e.state.join("allocations/team-a/db-0.json").exists());
    let names = nbctl(
        &e.central,
        &["--columns=name", "list", "Logical_Switch_Port"],
    );
    assert!(names.contains("db-0.team-a"), "{names}");

    // a broken manifest: a clear error and a failing exit status, nothing applied
    fs::write(
        e.manifests.join("99-bad.yaml"),
        "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: bad}\nspec: {cidrBlock: [1]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
        .args(["--nb", &e.central.nb_remote(), "--once"])
        .arg("--manifests")
        .arg(&e.manifests)
        .arg("--state-dir")
        .arg(&e.state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("99-bad.yaml") && stderr.contains("spec.cidrBlock"),
        "{stderr}"
    );
}

#[test]
fn running_binary_follows_edits_repairs_drift_and_stops_on_sigterm() {
    let e = env();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
        .arg("--nb")
        .arg(e.central.nb_remote())
        .arg("--manifests")
        .arg(&e.manifests)
        .arg("--state-dir")
        .arg(&e.state)
        .args(["--interval", "0.1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ferrovn-controller");
    let lsps = |c: &OvnCentral| nbctl(c, &["--columns=name", "list", "Logical_Switch_Port"]);
    assert_within(WAIT, "first pass", || {
        lsps(&e.central).contains("web-1.default")
    });

    // a pod removed from the manifests: port and record go
    let path = e.manifests.join("02-default.yaml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("name: web-1\n", "name: web-9\n")).unwrap();
    assert_within(WAIT, "web-1 removed", || {
        let l = lsps(&e.central);
        !l.contains("web-1.default") && l.contains("web-9.default")
    });
    assert_within(WAIT, "record removed", || {
        !e.state.join("allocations/default/web-1.json").exists()
    });

    // drift: someone deletes our port by hand; the controller puts it back, same address
    let before = nbctl(
        &e.central,
        &["get", "Logical_Switch_Port", "db-0.team-a", "addresses"],
    );
    nbctl(&e.central, &["lsp-del", "db-0.team-a"]);
    assert_within(WAIT, "db-0 restored", || {
        lsps(&e.central).contains("db-0.team-a")
    });
    let after = nbctl(
        &e.central,
        &["get", "Logical_Switch_Port", "db-0.team-a", "addresses"],
    );
    assert_eq!(before, after);

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vpc_and_its_subnet_removes_their_rows() {
    let e = env();
    let mut c = Controller::connect(options(&e)).await.expect("connect");
    c.pass().await.expect("first pass");
    assert!(nbctl(&e.central, &["show"]).contains("vpc-blue"));

    fs::remove_file(e.manifests.join("04-vpc-blue.yaml")).unwrap();
    let r = c.pass().await.expect("pass after delete");
    assert!(r.issues.is_empty(), "{:#?}", r.issues);
    assert_eq!(r.released, 1, "blue-0 released: {r:?}");
    let show = nbctl(&e.central, &["show"]);
    for gone in ["vpc-blue", "blue-net", "blue-0.blue"] {
        assert!(!show.contains(gone), "{gone} still in:\n{show}");
    }
    assert!(show.contains("ovn-cluster") && show.contains("team-a"));
    assert!(!e.state.join("allocations/blue/blue-0.json").exists());
    assert!(c.ipam().unwrap().subnet_spec("blue-net").is_none());
    let r = c.pass().await.expect("third pass");
    assert!(r.is_noop(), "{r:?}");
}
