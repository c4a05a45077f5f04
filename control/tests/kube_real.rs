//! `ferrovn-controller --kube` against a real Kubernetes control plane (ferrovn-testkit, built by
//! `make kube-bins`) and a real OVN NB/SB/northd: it authenticates as its own ServiceAccount,
//! bound only by deploy/rbac.yaml (never cluster-admin), and the Kube-OVN manifests of
//! deploy/examples applied with kubectl end up as pod and node annotations, Logical_Switch_Ports,
//! Service load balancers, Subnet status and Kube-OVN IP objects (which a restarted controller
//! leaves untouched). Proves that the RBAC we ship is enough, by use.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod real_controller;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::ControlPlane;
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::assert_within;
use real_controller::{Controller, install_crds_and_rbac, path};

fn annotation(cp: &ControlPlane, ns: &str, pod: &str, key: &str) -> String {
    let expr = format!("{{.metadata.annotations.{}}}", key.replace('.', "\\."));
    cp.jsonpath(&["-n", ns, "get", "pod", pod], &expr)
}

/// Every IP object, by name.
fn ip_objects(cp: &ControlPlane) -> BTreeMap<String, serde_json::Value> {
    let out = cp
        .kubectl(&["get", "ips", "-o", "json"])
        .expect("get ips")
        .stdout;
    let list: serde_json::Value = serde_json::from_str(&out).expect("IP list JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o.clone(),
            )
        })
        .collect()
}

fn resource_versions(ips: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    ips.iter()
        .map(|(n, o)| {
            let rv = o["metadata"]["resourceVersion"].as_str().unwrap();
            (n.clone(), rv.to_string())
        })
        .collect()
}

/// Pods of deploy/examples 02 and 03 (kernel pods, one with a static address) and the
/// default-namespace pod of an explicit ovn-default Subnet, as (namespace, name).
const PODS: [(&str, &str); 4] = [
    ("demo", "web-1"),
    ("demo", "web-2"),
    ("default", "client"),
    ("demo", "db-0"),
];

const OVN_DEFAULT: &str = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: ovn-default\n\
spec:\n  protocol: IPv4\n  cidrBlock: 10.16.0.0/16\n  gateway: 10.16.0.1\n  excludeIps: [10.16.0.1]\n  \
default: true\n  provider: ovn\n  vpc: ovn-cluster\n  gatewayType: distributed\n  natOutgoing: true\n";

#[test]
fn controller_as_its_service_account_allocates_writes_back_and_fills_the_nb() {
    let mut cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    let deploy = install_crds_and_rbac(&cp);
    let sa = cp
        .service_account_kubeconfig("kube-system", "ferrovn-controller")
        .expect("ServiceAccount kubeconfig");
    // The controller's identity is the ServiceAccount and nothing more.
    let who = cp
        .kubectl_as(
            &sa,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .expect("auth whoami");
    assert_eq!(
        who.stdout,
        "system:serviceaccount:kube-system:ferrovn-controller"
    );
    let may_delete = cp.kubectl_as(&sa, &["auth", "can-i", "delete", "pods", "-A"], None);
    assert!(may_delete.is_err(), "not cluster-admin: {may_delete:?}");

    for f in [
        "00-nodes.yaml",
        "01-namespace-subnet.yaml",
        "02-kernel-pods.yaml",
        "03-static-ip-pod.yaml",
        "05-services.yaml",
    ] {
        cp.kubectl(&["apply", "-f", path(&deploy.join("examples").join(f))])
            .unwrap_or_else(|e| panic!("deploy/examples/{f}: {e}"));
    }
    cp.kubectl_stdin(&["apply", "-f", "-"], OVN_DEFAULT)
        .expect("ovn-default Subnet");

    let central = OvnCentral::start().expect("OVN central (make deps)");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut controller = Controller::spawn(&sa, &central.nb_remote(), tmp.path(), "ctrl-a", 6);

    assert_within(Duration::from_secs(90), "every pod allocated", || {
        controller.assert_running();
        PODS.iter()
            .all(|(ns, pod)| annotation(&cp, ns, pod, "ovn.kubernetes.io/allocated") == "true")
    });

    let mut addresses = BTreeSet::new();
    for (ns, pod) in PODS {
        let ip = annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address");
        let mac = annotation(&cp, ns, pod, "ovn.kubernetes.io/mac_address");
        let ls = annotation(&cp, ns, pod, "ovn.kubernetes.io/logical_switch");
        let (want_ls, prefix) = if ns == "demo" {
            ("demo", "10.66.0.")
        } else {
            ("ovn-default", "10.16.")
        };
        assert_eq!(ls, want_ls, "{ns}/{pod} logical_switch");
        assert!(ip.starts_with(prefix), "{ns}/{pod} ip_address {ip}");
        assert!(
            addresses.insert(ip.clone()),
            "{ns}/{pod}: {ip} handed out twice"
        );
        if pod == "db-0" {
            assert_eq!(ip, "10.66.0.20", "the static address is kept");
            assert_eq!(mac, "00:00:00:53:6b:b6", "the static MAC is kept");
        }
        let lsp = format!("name={pod}.{ns}");
        assert_within(
            Duration::from_secs(30),
            &format!("NB port {pod}.{ns}"),
            || {
                central
                    .nbctl(&[
                        "--bare",
                        "--columns=addresses",
                        "find",
                        "Logical_Switch_Port",
                        &lsp,
                    ])
                    .is_ok_and(|a| a.trim() == format!("{mac} {ip}"))
            },
        );
    }
    // The demo pods sit on the demo switch.
    let ports = central
        .nbctl(&[
            "--bare",
            "--columns=ports",
            "list",
            "Logical_Switch",
            "demo",
        ])
        .expect("demo switch");
    for (ns, pod) in PODS.iter().filter(|(ns, _)| *ns == "demo") {
        let uuid = central
            .nbctl(&[
                "--bare",
                "--columns=_uuid",
                "find",
                "Logical_Switch_Port",
                &format!("name={pod}.{ns}"),
            ])
            .expect("port uuid");
        assert!(
            ports.split_whitespace().any(|p| p == uuid.trim()),
            "{pod}.{ns} ({}) not on switch demo: {ports}",
            uuid.trim()
        );
    }

    // Services applied with kubectl become load balancers (docs/services.md): the
    // endpoint of db's own EndpointSlice, and the endpoint-less web with reject.
    assert_within(Duration::from_secs(30), "Service load balancers", || {
        let db = central.nbctl(&[
            "--bare",
            "--columns=vips",
            "find",
            "Load_Balancer",
            "name=\"svc:demo/db:tcp\"",
        ]);
        let web = central.nbctl(&[
            "--bare",
            "--columns=vips",
            "find",
            "Load_Balancer",
            "name=\"svc:demo/web:tcp\"",
        ]);
        db.is_ok_and(|v| v.contains("10.96.0.20:5432") && v.contains("10.66.0.20:5432"))
            && web.is_ok_and(|v| v.contains("10.96.0.80:80"))
    });

    // The nodes get their join-subnet address.
    for node in ["lab-dpdk", "lab-kernel"] {
        let ip = cp.jsonpath(
            &["get", "node", node],
            "{.metadata.annotations.ovn\\.kubernetes\\.io/ip_address}",
        );
        assert!(ip.starts_with("100.64."), "node {node} join address {ip:?}");
    }

    // Subnet status: 3 addresses in use in demo; the printer column shows it.
    assert_within(
        Duration::from_secs(30),
        "demo status v4usingIPs = 3",
        || cp.jsonpath(&["get", "subnet", "demo"], "{.status.v4usingIPs}") == "3",
    );
    let ready = cp.jsonpath(
        &["get", "subnet", "demo"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True");
    let table = cp
        .kubectl(&["get", "subnet", "demo"])
        .expect("get subnet")
        .stdout;
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().any(|c| c == "3")),
        "V4USED column: {table}"
    );

    // The built-in join subnet had no object: the controller made one, and `kubectl get
    // subnets` counts the two nodes' join addresses. The user's ovn-default is left as it was.
    assert_within(
        Duration::from_secs(30),
        "join status v4usingIPs = 2",
        || cp.jsonpath(&["get", "subnet", "join"], "{.status.v4usingIPs}") == "2",
    );
    assert_eq!(
        cp.jsonpath(&["get", "subnet", "join"], "{.spec.cidrBlock}"),
        "100.64.0.0/16"
    );
    assert_eq!(
        cp.jsonpath(&["get", "subnet", "ovn-default"], "{.spec.natOutgoing}"),
        "true"
    );

    // It led through the Lease, and never hit a permission error.
    let holder = cp.jsonpath(
        &["-n", "kube-system", "get", "lease", "ferrovn-controller"],
        "{.spec.holderIdentity}",
    );
    assert_eq!(holder, "ctrl-a");
    let log = controller.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refused a request:\n{log}"
    );
    assert!(!log.contains("write-back: "), "a write failed:\n{log}");

    // One IP object per pod interface and per node's join address, saying what the pod
    // annotations say, labelled as Kube-OVN labels them.
    let mut ips = BTreeMap::new();
    assert_within(
        Duration::from_secs(30),
        "an IP object per pod and node",
        || {
            ips = ip_objects(&cp);
            PODS.iter()
                .map(|(ns, pod)| format!("{pod}.{ns}"))
                .chain(["node-lab-dpdk".into(), "node-lab-kernel".into()])
                .all(|n| ips.contains_key(&n))
        },
    );
    for (ns, pod) in PODS {
        let ip = &ips[&format!("{pod}.{ns}")];
        let address = annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address");
        let subnet = annotation(&cp, ns, pod, "ovn.kubernetes.io/logical_switch");
        let node = cp.jsonpath(&["-n", ns, "get", "pod", pod], "{.spec.nodeName}");
        let spec = &ip["spec"];
        assert_eq!(spec["podName"], pod);
        assert_eq!(spec["namespace"], ns);
        assert_eq!(spec["ipAddress"], address.as_str(), "{pod}.{ns}");
        assert_eq!(spec["v4IpAddress"], address.as_str(), "{pod}.{ns}");
        assert_eq!(
            spec["macAddress"],
            annotation(&cp, ns, pod, "ovn.kubernetes.io/mac_address").as_str()
        );
        assert_eq!(spec["subnet"], subnet.as_str());
        assert_eq!(spec["nodeName"], node.as_str());
        let labels = &ip["metadata"]["labels"];
        assert_eq!(labels["ovn.kubernetes.io/subnet"], subnet.as_str());
        assert_eq!(labels["ovn.kubernetes.io/node-name"], node.as_str());
        assert_eq!(labels[subnet.as_str()], "");
    }
    for node in ["lab-dpdk", "lab-kernel"] {
        let spec = &ips[&format!("node-{node}")]["spec"];
        let address = cp.jsonpath(
            &["get", "node", node],
            "{.metadata.annotations.ovn\\.kubernetes\\.io/ip_address}",
        );
        assert_eq!(spec["ipAddress"], address.as_str(), "node {node}");
        assert_eq!(spec["subnet"], "join");
    }
    // Selecting by subnet works as with Kube-OVN; the printer columns show the addresses.
    let demo = cp
        .kubectl(&[
            "get",
            "ips",
            "-l",
            "ovn.kubernetes.io/subnet=demo",
            "-o",
            "name",
        ])
        .expect("get ips -l")
        .stdout;
    assert_eq!(demo.lines().count(), 3, "{demo}");
    let table = cp.kubectl(&["get", "ips"]).expect("get ips").stdout;
    let web1 = annotation(&cp, "demo", "web-1", "ovn.kubernetes.io/ip_address");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web-1.demo ") && l.split_whitespace().any(|c| c == web1)),
        "V4IP column: {table}"
    );

    // A pod's IP object goes with the pod.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: brief\n  namespace: demo\nspec:\n  \
         nodeName: lab-kernel\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n",
    )
    .expect("pod brief");
    assert_within(Duration::from_secs(30), "IP object brief.demo", || {
        ip_objects(&cp).contains_key("brief.demo")
    });
    cp.kubectl(&[
        "-n",
        "demo",
        "delete",
        "pod",
        "brief",
        "--grace-period=0",
        "--force",
    ])
    .expect("delete pod brief");
    assert_within(Duration::from_secs(30), "IP object brief.demo gone", || {
        !ip_objects(&cp).contains_key("brief.demo")
    });

    // A restarted controller (empty state directory: all it knows is the cluster) changes
    // nothing: no IP object is written (resourceVersions unchanged), no address moves.
    let ips_before = resource_versions(&ip_objects(&cp));
    let addresses_before: Vec<String> = PODS
        .iter()
        .map(|(ns, pod)| annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address"))
        .collect();
    let status = controller.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let tmp2 = tempfile::tempdir().expect("tmp");
    controller = Controller::spawn(&sa, &central.nb_remote(), tmp2.path(), "ctrl-a", 6);
    // A pod made after the restart is allocated in the first pass of the new controller (or
    // a later one): once it has its IP object, the restart's write-back is done.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fresh\n  namespace: demo\nspec:\n  \
         nodeName: lab-dpdk\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n",
    )
    .expect("pod fresh");
    assert_within(Duration::from_secs(60), "IP object fresh.demo", || {
        controller.assert_running();
        ip_objects(&cp).contains_key("fresh.demo")
    });
    let mut ips_after = resource_versions(&ip_objects(&cp));
    ips_after.remove("fresh.demo");
    assert_eq!(ips_after, ips_before, "the restart rewrote IP objects");
    let addresses_after: Vec<String> = PODS
        .iter()
        .map(|(ns, pod)| annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address"))
        .collect();
    assert_eq!(addresses_after, addresses_before, "an address moved");
    let fresh = annotation(&cp, "demo", "fresh", "ovn.kubernetes.io/ip_address");
    assert!(!addresses.contains(&fresh), "{fresh} handed out twice");
    addresses.insert(fresh);
    let log = controller.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refused a request:\n{log}"
    );
    // Not even a refused create of an object that exists.
    assert!(!log.contains("write-back: "), "a write failed:\n{log}");

    // The apiserver dies (SIGKILL) for longer than the renew deadline: watches are cut and the
    // Lease cannot be renewed. Once it is back the controller resyncs and leads again; the old
    // pods keep their addresses and a new pod gets a fresh one.
    let before: Vec<String> = PODS
        .iter()
        .map(|(ns, pod)| annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address"))
        .collect();
    let t = Instant::now();
    cp.kill_apiserver();
    eprintln!("apiserver killed in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(6));
    controller.assert_running();
    let t = Instant::now();
    cp.start_apiserver().expect("apiserver back");
    eprintln!("apiserver ready again in {:?}", t.elapsed());
    let t = Instant::now();
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: late\n  namespace: demo\nspec:\n  \
         nodeName: lab-kernel\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n",
    )
    .expect("pod after the restart");
    // Right after a restart the apiserver answers 403 until its RBAC caches fill, and the
    // watchers back off (kube-rs default backoff): seen 8-31 s here.
    assert_within(Duration::from_secs(90), "pod late allocated", || {
        controller.assert_running();
        annotation(&cp, "demo", "late", "ovn.kubernetes.io/allocated") == "true"
    });
    eprintln!("new pod allocated {:?} after the restart", t.elapsed());
    let late = annotation(&cp, "demo", "late", "ovn.kubernetes.io/ip_address");
    assert!(late.starts_with("10.66.0."), "late: {late}");
    assert!(!addresses.contains(&late), "{late} handed out twice");
    let after: Vec<String> = PODS
        .iter()
        .map(|(ns, pod)| annotation(&cp, ns, pod, "ovn.kubernetes.io/ip_address"))
        .collect();
    assert_eq!(
        after, before,
        "no allocation moved or got lost over the restart"
    );
    assert_within(Duration::from_secs(30), "ctrl-a leads again", || {
        cp.jsonpath(
            &["-n", "kube-system", "get", "lease", "ferrovn-controller"],
            "{.spec.holderIdentity}",
        ) == "ctrl-a"
    });

    let status = controller.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}
