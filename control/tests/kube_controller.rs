//! The whole cluster source: the fake kube-apiserver (real wire shapes) feeding the same
//! reconcile path as the manifest mode into a REAL OVN NB (ovsdb-server + ovn-northd), with
//! the exact write-back requests asserted: one merge patch per new pod, none when nothing
//! changed, one pass per burst, recovery of allocated pods without any patch, and a follower
//! that writes nothing while another controller holds a live Lease.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferrovn_control::controller::ControllerOptions;
use ferrovn_control::kube::{KubeOptions, LeaseConfig, Stats, run};
use ferrovn_testkit::fake_kube::{FakeApi, Recorded, fixture, rbac_violations};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until_async;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const POD_PATH: &str = "/api/v1/namespaces/default/pods/web-0";
const NODE_PATH: &str = "/api/v1/nodes/kind-worker";
const SUBNET_STATUS: &str = "/apis/kubeovn.io/v1/subnets/ovn-default/status";
const MERGE: Option<&str> = Some("application/merge-patch+json");
const IPS: &str = "/apis/kubeovn.io/v1/ips";

const SUBNETS: &str = "/apis/kubeovn.io/v1/subnets";

/// The built-in join subnet's Subnet object: its create and its status.
fn is_join_write(r: &Recorded) -> bool {
    r.path == SUBNETS || r.path.starts_with(&format!("{SUBNETS}/join"))
}

/// Writes other than to IP objects and the join Subnet (annotations, statuses, Events).
fn annotation_writes(fake: &FakeApi) -> Vec<Recorded> {
    fake.writes()
        .into_iter()
        .filter(|r| !r.path.starts_with(IPS) && !is_join_write(r))
        .collect()
}

fn ip_writes(fake: &FakeApi) -> Vec<Recorded> {
    fake.writes()
        .into_iter()
        .filter(|r| r.path.starts_with(IPS))
        .collect()
}

fn pod(name: &str, n: u32) -> Value {
    let mut p = fixture("pod-web-0.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(format!("8a3f0c5e-1b2d-4e6f-9a7b-3c4d5e6f{n:04}"));
    p["spec"]["hostname"] = json!(name);
    p
}

fn seed(fake: &FakeApi) {
    fake.apply(fixture("namespace-default.json"));
    fake.apply(fixture("node-kind-worker.json"));
    fake.apply(fixture("subnet-ovn-default.json"));
}

struct Running {
    stats: watch::Receiver<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _central: OvnCentral,
    _tmp: tempfile::TempDir,
}

impl Running {
    async fn wait(&mut self, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
        let r = tokio::time::timeout(Duration::from_secs(60), self.stats.wait_for(|s| cond(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => s,
            _ => panic!("{what}: not reached; stats {:?}", *self.stats.borrow()),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
    }
}

fn nbctl(central: &OvnCentral, args: &[&str]) -> String {
    central
        .nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"))
}

fn port_addresses(central: &OvnCentral, port: &str) -> String {
    nbctl(
        central,
        &[
            "--bare",
            "--columns=addresses",
            "find",
            "Logical_Switch_Port",
            &format!("name={port}"),
        ],
    )
    .trim()
    .to_string()
}

fn start(fake: &FakeApi, lease: Option<LeaseConfig>) -> (Running, String) {
    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let nb = central.nb_remote();
    let mut co = ControllerOptions::new(
        &nb,
        tmp.path().join("no-manifests"),
        tmp.path().join("state"),
    );
    co.batch = 100;
    let mut opts = KubeOptions::new(co);
    opts.debounce = Duration::from_millis(300);
    opts.max_delay = Duration::from_secs(3);
    opts.lease = lease;
    let (tx, rx) = watch::channel(Stats::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let client = fake.client();
    let task = tokio::spawn(async move {
        let _ = run(client, opts, tx, async {
            let _ = stop_rx.await;
        })
        .await;
    });
    (
        Running {
            stats: rx,
            stop: Some(stop_tx),
            task,
            _central: central,
            _tmp: tmp,
        },
        nb,
    )
}

/// The JSON block following `<!-- example: NAME -->` in docs/controller-kube.md.
fn doc_example(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/controller-kube.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let marker = format!("<!-- example: {name} -->");
    let after = &text[text
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} in {path}"))..];
    let start = after.find("```json\n").expect("a json block") + "```json\n".len();
    let end = after[start..].find("```").expect("block end") + start;
    serde_json::from_str(&after[start..end]).unwrap_or_else(|e| panic!("{path} {name}: {e}"))
}

fn patches(fake: &FakeApi) -> Vec<Recorded> {
    fake.writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pod_gets_one_merge_patch_and_nothing_more() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(pod("web-0", 0));
    let (mut r, _) = start(&fake, None);
    r.wait("first pass with write-back", |s| {
        s.pods_patched == 1 && s.nodes_patched == 1 && s.subnets_patched == 1 && s.ips_written == 2
    })
    .await;
    // The built-in join subnet had no object (the fixtures have only ovn-default): it is
    // created with just its CIDR, and the next pass writes its status.
    r.wait("join Subnet created, its status written", |s| {
        s.subnets_created == 1 && s.subnets_patched == 2
    })
    .await;
    let join: Vec<Recorded> = fake.writes().into_iter().filter(is_join_write).collect();
    assert_eq!(join.len(), 2, "{join:#?}");
    assert_eq!((join[0].method.as_str(), join[0].status), ("POST", 201));
    assert_eq!(
        join[0].body.as_ref().unwrap()["spec"],
        json!({"cidrBlock": "100.64.0.0/16"})
    );
    let join_status = fake.get("Subnet", "", "join").unwrap()["status"].clone();
    assert_eq!(join_status["v4usingIPs"], 1, "the node's join address");

    let writes = annotation_writes(&fake);
    assert_eq!(writes.len(), 3, "{writes:#?}");
    for w in &writes {
        assert_eq!(
            (w.method.as_str(), w.content_type.as_deref(), w.status),
            ("PATCH", MERGE, 200)
        );
        assert_eq!(w.query, "fieldManager=ferrovn-controller");
    }
    let pod_patch = writes
        .iter()
        .find(|w| w.path == POD_PATH)
        .expect("pod patched");
    let body = pod_patch.body.clone().unwrap();
    let mac = body["metadata"]["annotations"]["ovn.kubernetes.io/mac_address"]
        .as_str()
        .expect("a MAC")
        .to_string();
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {
            "ovn.kubernetes.io/allocated": "true",
            "ovn.kubernetes.io/cidr": "10.16.0.0/16",
            "ovn.kubernetes.io/gateway": "10.16.0.1",
            "ovn.kubernetes.io/ip_address": "10.16.0.2",
            "ovn.kubernetes.io/logical_router": "ovn-cluster",
            "ovn.kubernetes.io/logical_switch": "ovn-default",
            "ovn.kubernetes.io/mac_address": mac,
            "ovn.kubernetes.io/routed": "true",
        }}})
    );
    // The worked example of docs/controller-kube.md is this very request.
    assert_eq!(
        doc_example("pod-patch"),
        body,
        "docs/controller-kube.md is stale"
    );
    // What the pod says is what the NB holds.
    assert_eq!(
        port_addresses(&r._central, "web-0.default"),
        format!("{mac} 10.16.0.2")
    );

    let node_patch = writes
        .iter()
        .find(|w| w.path == NODE_PATH)
        .expect("node patched");
    let node_ann = &node_patch.body.as_ref().unwrap()["metadata"]["annotations"];
    assert_eq!(node_ann["ovn.kubernetes.io/ip_address"], "100.64.0.2");
    assert_eq!(node_ann["ovn.kubernetes.io/logical_switch"], "join");
    assert_eq!(node_ann["ovn.kubernetes.io/port_name"], "node-kind-worker");
    assert_eq!(node_ann["ovn.kubernetes.io/allocated"], "true");

    // One IP object each for the pod and the node's join address, created (POST) with what
    // the annotations say, Kube-OVN's labels and our field manager.
    let ips = ip_writes(&fake);
    assert_eq!(ips.len(), 2, "{ips:#?}");
    for w in &ips {
        assert_eq!(
            (w.method.as_str(), w.path.as_str(), w.status),
            ("POST", IPS, 201)
        );
        assert_eq!(w.query, "fieldManager=ferrovn-controller");
    }
    let ip = fake
        .get("IP", "", "web-0.default")
        .expect("IP web-0.default");
    assert_eq!(
        ip["spec"],
        json!({
            "podName": "web-0", "namespace": "default", "subnet": "ovn-default",
            "nodeName": "kind-worker", "ipAddress": "10.16.0.2", "v4IpAddress": "10.16.0.2",
            "v6IpAddress": "", "macAddress": mac, "containerID": "",
            // the fixture is a StatefulSet's pod
            "podType": "StatefulSet",
        })
    );
    assert_eq!(
        ip["metadata"]["labels"],
        json!({
            "ovn.kubernetes.io/subnet": "ovn-default", "ovn.kubernetes.io/node-name": "kind-worker",
            "ovn-default": "", "ovn.kubernetes.io/ip_reserved": "false",
            "app.kubernetes.io/managed-by": "ferrovn-controller",
        })
    );
    let node_ip = fake
        .get("IP", "", "node-kind-worker")
        .expect("IP node-kind-worker");
    assert_eq!(node_ip["spec"]["ipAddress"], "100.64.0.2");
    assert_eq!(node_ip["spec"]["subnet"], "join");

    let status_patch = writes
        .iter()
        .find(|w| w.path == SUBNET_STATUS)
        .expect("status patched");
    let status = &status_patch.body.as_ref().unwrap()["status"];
    assert_eq!(status["v4usingIPs"], 1);
    assert_eq!(status["v4availableIPs"], 65532);
    assert_eq!(status["v6usingIPs"], 0);
    let conditions: Vec<(&str, &str)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(conditions, [("Validated", "True"), ("Ready", "True")]);
    // The apiserver kept the user's annotations and the pod's spec.
    let stored = fake.get("Pod", "default", "web-0").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["ovn.kubernetes.io/ip_address"],
        "10.16.0.2"
    );
    assert_eq!(stored["spec"]["nodeName"], "kind-worker");

    // Something unrelated changes: a pass runs and sends nothing (no patch storm).
    let before = r.stats.borrow().passes;
    let mut ns = fake.get("Namespace", "", "default").unwrap();
    ns["metadata"]["labels"]["team"] = json!("a");
    fake.apply(ns);
    r.wait("a pass after the namespace change", |s| s.passes > before)
        .await;
    // passes run one after another: once a second unrelated pass has finished, anything the
    // first one would have written is on the fake
    let mut ns = fake.get("Namespace", "", "default").unwrap();
    ns["metadata"]["labels"]["team"] = json!("b");
    fake.apply(ns);
    r.wait("a second pass", |s| s.passes > before + 1).await;
    assert_eq!(
        fake.writes().len(),
        3 + 2 + 2,
        "no new write: {:#?}",
        fake.writes()
    );

    // A burst of five pods: one pass, five pod patches, one status patch.
    let before = r.stats.borrow().passes;
    for i in 1..=5 {
        fake.apply(pod(&format!("web-{i}"), i));
    }
    let s = r.wait("burst allocated", |s| s.pods_patched == 6).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = r.stats.borrow().clone();
    assert_eq!(
        after.passes,
        before + 1,
        "one pass for the burst: {after:?}"
    );
    assert_eq!(s.subnets_patched, 3);
    let ips: Vec<String> = patches(&fake)
        .iter()
        .filter(|w| {
            w.path.starts_with("/api/v1/namespaces/default/pods/web-") && w.path != POD_PATH
        })
        .map(|w| {
            w.body.as_ref().unwrap()["metadata"]["annotations"]["ovn.kubernetes.io/ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "10.16.0.3",
            "10.16.0.4",
            "10.16.0.5",
            "10.16.0.6",
            "10.16.0.7"
        ]
    );
    assert_eq!(annotation_writes(&fake).len(), 3 + 5 + 1);
    assert_eq!(ip_writes(&fake).len(), 2 + 5, "one IP object per new pod");

    // A deleted pod's port goes; its address is free again for the next pod.
    fake.delete("Pod", "default", "web-3");
    r.wait("released", |s| s.subnets_patched == 4).await;
    let status = &patches(&fake)
        .iter()
        .rfind(|w| w.path == SUBNET_STATUS)
        .unwrap()
        .body
        .clone()
        .unwrap()["status"];
    assert_eq!(status["v4usingIPs"], 5);
    assert_eq!(port_addresses(&r._central, "web-3.default"), "");
    // ... and so does its IP object.
    r.wait("IP object deleted", |s| s.ips_deleted == 1).await;
    assert_eq!(fake.get("IP", "", "web-3.default"), None);
    let deletes: Vec<String> = ip_writes(&fake)
        .iter()
        .filter(|w| w.method == "DELETE")
        .map(|w| w.path.clone())
        .collect();
    assert_eq!(deletes, [format!("{IPS}/web-3.default")]);
    assert_eq!(rbac_violations(&fake.requests()), Vec::<String>::new());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_pod_is_adopted_without_a_patch() {
    let fake = FakeApi::new();
    seed(&fake);
    // A pod the controller allocated before it restarted, and the node's join allocation.
    let mut p = pod("web-0", 0);
    p["metadata"]["annotations"] = json!({
        "ovn.kubernetes.io/allocated": "true",
        "ovn.kubernetes.io/cidr": "10.16.0.0/16",
        "ovn.kubernetes.io/gateway": "10.16.0.1",
        "ovn.kubernetes.io/ip_address": "10.16.0.2",
        "ovn.kubernetes.io/logical_router": "ovn-cluster",
        "ovn.kubernetes.io/logical_switch": "ovn-default",
        "ovn.kubernetes.io/mac_address": "00:00:00:5e:a1:07",
        "ovn.kubernetes.io/routed": "true"
    });
    fake.apply(p);
    let mut node = fixture("node-kind-worker.json");
    for (k, v) in [
        ("ovn.kubernetes.io/allocated", "true"),
        ("ovn.kubernetes.io/cidr", "100.64.0.0/16"),
        ("ovn.kubernetes.io/gateway", "100.64.0.1"),
        ("ovn.kubernetes.io/ip_address", "100.64.0.2"),
        ("ovn.kubernetes.io/logical_router", "ovn-cluster"),
        ("ovn.kubernetes.io/logical_switch", "join"),
        ("ovn.kubernetes.io/mac_address", "00:00:00:5e:a1:99"),
        ("ovn.kubernetes.io/port_name", "node-kind-worker"),
        // what FerrOVN's controller adds for the node's join port routes and natOutgoing
        ("ferrovn.io/pod-cidrs", "10.16.0.0/16"),
        ("ferrovn.io/nat-outgoing-cidrs", "10.16.0.0/16"),
        // no centralized gateway duty (always written, so a duty that ends is cleared)
        ("ferrovn.io/gateway-snat", ""),
    ] {
        node["metadata"]["annotations"][k] = json!(v);
    }
    fake.apply(node);
    fake.apply(pod("web-1", 1));

    let (mut r, _) = start(&fake, None);
    r.wait("first pass", |s| {
        s.pods_patched == 1 && s.subnets_patched == 1
    })
    .await;
    let mut paths: Vec<String> = patches(&fake).iter().map(|w| w.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/api/v1/namespaces/default/pods/web-1", SUBNET_STATUS],
        "the adopted pod and node are not patched"
    );
    assert_eq!(
        port_addresses(&r._central, "web-0.default"),
        "00:00:00:5e:a1:07 10.16.0.2",
        "the adopted pod keeps its address and MAC in the NB"
    );
    let web1 = patches(&fake)
        .into_iter()
        .find(|w| w.path == "/api/v1/namespaces/default/pods/web-1")
        .unwrap()
        .body
        .unwrap()["metadata"]["annotations"]
        .clone();
    assert_eq!(web1["ovn.kubernetes.io/ip_address"], "10.16.0.3");
    assert_eq!(
        port_addresses(&r._central, "node-kind-worker"),
        "00:00:00:5e:a1:99 100.64.0.2"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_writes_nothing_until_the_live_lease_expires() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(pod("web-0", 0));
    let mut lease = fixture("lease-held.json");
    lease["spec"]["leaseDurationSeconds"] = json!(2);
    fake.apply(lease);

    // The other controller renews every 300 ms until told to stop.
    let (stop_renew, mut renew_stopped) = oneshot::channel::<()>();
    let renewals = Arc::new(AtomicU32::new(0));
    let renewer = {
        let fake = fake.clone();
        let renewals = Arc::clone(&renewals);
        tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = &mut renew_stopped => return,
                }
                n += 1;
                renewals.store(n, Ordering::SeqCst);
                let mut l = fake
                    .get("Lease", "kube-system", "ferrovn-controller")
                    .unwrap();
                l["spec"]["renewTime"] = json!(format!("2026-11-27T10:00:{:02}.000000Z", n % 60));
                fake.apply(l);
            }
        })
    };
    let mut cfg = LeaseConfig::new("ferrovn-controller-7f9c6d5b8-k4m2n");
    cfg.lease_duration = Duration::from_secs(2);
    cfg.renew_deadline = Duration::from_millis(1500);
    cfg.retry_period = Duration::from_millis(100);
    let (mut r, _) = start(&fake, Some(cfg));
    r.wait("caches filled", |s| s.ready).await;
    // The positive events: the other controller renewed past 1.5 lease durations, and the
    // follower kept asking for the lease after that (and found it held).
    let lease_gets = |fake: &FakeApi| {
        fake.requests()
            .iter()
            .filter(|q| q.method == "GET" && q.path.ends_with("/leases/ferrovn-controller"))
            .count()
    };
    let gets_before = lease_gets(&fake);
    assert!(
        wait_until_async(Duration::from_secs(20), || renewals.load(Ordering::SeqCst)
            >= 10
            && lease_gets(&fake) >= gets_before + 10)
        .await,
        "renewals {} / follower lease reads {}",
        renewals.load(Ordering::SeqCst),
        lease_gets(&fake) - gets_before
    );
    let s = r.stats.borrow().clone();
    assert!(!s.leader && s.passes == 0, "{s:?}");
    assert!(
        fake.writes().is_empty(),
        "a follower writes nothing: {:#?}",
        fake.writes()
    );
    assert_eq!(
        port_addresses(&r._central, "web-0.default"),
        "",
        "nor to the NB"
    );

    // The leader dies (stops renewing): 2 s later the follower takes over and catches up.
    stop_renew.send(()).unwrap();
    renewer.await.unwrap();
    r.wait("took over and allocated", |s| {
        s.leader && s.pods_patched == 1
    })
    .await;
    let lease_put = fake
        .writes()
        .into_iter()
        .find(|w| w.method == "PUT")
        .expect("lease taken over");
    assert_eq!(
        lease_put.path,
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ferrovn-controller"
    );
    let spec = &lease_put.body.as_ref().unwrap()["spec"];
    assert_eq!(spec["holderIdentity"], "ferrovn-controller-7f9c6d5b8-k4m2n");
    assert_eq!(spec["leaseTransitions"], 5);
    assert!(port_addresses(&r._central, "web-0.default").contains("10.16.0.2"));
    r.stop().await;

    // Every request of this run (lists, watches, lease reads and takeover, pod / node / subnet
    // status patches, the release at shutdown) is allowed by deploy/rbac.yaml.
    assert_eq!(rbac_violations(&fake.requests()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_gets_its_own_provider_keys() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(fixture("nad-dpdk-net.json"));
    fake.apply(fixture("subnet-dpdk-net.json"));
    let mut p = pod("web-0", 0);
    p["metadata"]["annotations"] = json!({
        "k8s.v1.cni.cncf.io/networks": "[{\"name\": \"dpdk-net\", \"interface\": \"net1\"}]"
    });
    p["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vhostuser-sockets", "emptyDir": {}}));
    fake.apply(p);

    let (mut r, _) = start(&fake, None);
    r.wait("allocated", |s| {
        s.pods_patched == 1 && s.subnets_patched == 2
    })
    .await;
    let pod_patch = patches(&fake)
        .into_iter()
        .find(|w| w.path == POD_PATH)
        .expect("pod patched");
    let ann = pod_patch.body.unwrap()["metadata"]["annotations"].clone();
    let p = "dpdk-net.default.ovn.kubernetes.io";
    let mac = ann[format!("{p}/mac_address")]
        .as_str()
        .expect("attachment MAC")
        .to_string();
    for (key, value) in [
        ("ip_address", "172.18.0.5"),
        ("cidr", "172.18.0.0/24"),
        ("gateway", "172.18.0.1"),
        ("logical_switch", "dpdk-net"),
        ("logical_router", "ovn-cluster"),
        ("allocated", "true"),
        ("routed", "true"),
    ] {
        assert_eq!(ann[format!("{p}/{key}")], value, "{p}/{key} in {ann:#}");
    }
    assert_eq!(
        ann["ovn.kubernetes.io/ip_address"], "10.16.0.2",
        "primary too"
    );
    assert_ne!(ann["ovn.kubernetes.io/mac_address"], mac.as_str());
    assert_eq!(
        port_addresses(&r._central, "web-0.default.dpdk-net.default.ovn"),
        format!("{mac} 172.18.0.5")
    );
    let status = patches(&fake)
        .into_iter()
        .find(|w| w.path == "/apis/kubeovn.io/v1/subnets/dpdk-net/status")
        .expect("attachment subnet status")
        .body
        .unwrap();
    // 256 - network - broadcast - gateway .1 - excluded .2..=.4 - one in use.
    assert_eq!(status["status"]["v4availableIPs"], 249);
    assert_eq!(status["status"]["v4usingIPs"], 1);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_pods_at_once_are_allocated_in_few_passes_without_duplicates() {
    const N: u32 = 2000;
    let fake = FakeApi::new();
    seed(&fake);
    let (mut r, _) = start(&fake, None);
    r.wait("ready", |s| s.ready && s.passes >= 1).await;
    let passes_before = r.stats.borrow().passes;
    let started = std::time::Instant::now();
    for i in 0..N {
        fake.apply(pod(&format!("burst-{i}"), 10_000 + i));
    }
    let s = r
        .wait("all allocated", |s| s.pods_patched == u64::from(N))
        .await;
    let elapsed = started.elapsed();
    let passes = s.passes - passes_before;
    println!(
        "kube-burst pods={N} passes={passes} watch_to_last_patch_ms={} pods_per_s={:.0}",
        elapsed.as_millis(),
        f64::from(N) / elapsed.as_secs_f64()
    );
    // Debounced (at most 3 s late): a handful of passes, not one per pod.
    assert!(passes <= 10, "{passes} passes for one burst");
    let mut ips: Vec<String> = patches(&fake)
        .iter()
        .filter(|w| w.path.contains("/pods/burst-"))
        .map(|w| {
            w.body.as_ref().unwrap()["metadata"]["annotations"]["ovn.kubernetes.io/ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ips.len(), N as usize, "one patch per pod");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N as usize, "no address twice");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_patch_is_retried_without_waiting_for_an_event() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(pod("web-0", 0));
    fake.fail_once("PATCH", POD_PATH);
    let (mut r, _) = start(&fake, None);
    let s = r
        .wait("patched after a retry", |s| s.pods_patched == 1)
        .await;
    assert_eq!(s.write_failures, 1);
    let tries: Vec<u16> = fake
        .writes()
        .iter()
        .filter(|w| w.path == POD_PATH)
        .map(|w| w.status)
        .collect();
    assert_eq!(tries, [500, 200]);
    let stored = fake.get("Pod", "default", "web-0").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["ovn.kubernetes.io/allocated"],
        "true"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_vpc_gets_a_false_condition_and_one_event_while_the_rest_converges() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(pod("web-0", 0));
    fake.apply(json!({
        "apiVersion": "kubeovn.io/v1",
        "kind": "Vpc",
        "metadata": {"name": "blue", "uid": "0d5c6a4e-0000-4000-8000-00000000b1e0"},
        "spec": {"policyRoutes": [
            {"priority": 40000, "match": "ip4.src == 10.0.0.0/8", "action": "drop"}
        ]},
    }));
    let (mut r, nb) = start(&fake, None);
    let s = r
        .wait("write-back with the Vpc's status and Event", |s| {
            s.pods_patched == 1 && s.statuses_patched == 1 && s.events_created == 1
        })
        .await;
    // the pod converged in the same pass (and no pass failed on the NB)
    assert_eq!(s.failed_passes, 0, "{s:?}");
    let central_port = std::process::Command::new("ovn-nbctl")
        .args([
            "--db",
            &nb,
            "--bare",
            "--columns=name",
            "list",
            "Logical_Switch_Port",
        ])
        .output()
        .expect("ovn-nbctl");
    assert!(String::from_utf8_lossy(&central_port.stdout).contains("web-0.default"));

    let vpc = fake.get("Vpc", "", "blue").expect("blue");
    let c = &vpc["status"]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("Validated"), Some("False"))
    );
    assert_eq!(
        c["message"],
        "Vpc blue: spec.policyRoutes[0].priority 40000 is out of range 0..32767"
    );

    let events: Vec<Recorded> = fake
        .writes()
        .into_iter()
        .filter(|w| w.path == "/apis/events.k8s.io/v1/namespaces/default/events")
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = events[0].body.clone().unwrap_or_default();
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "ValidationFailed");
    assert_eq!(e["regarding"]["kind"], "Vpc");
    assert_eq!(e["regarding"]["name"], "blue");

    // A resync changes nothing: no second Event, no status write, no failed pass.
    fake.apply(pod("web-1", 1));
    let s = r.wait("the next pass", |s| s.pods_patched == 2).await;
    assert_eq!((s.statuses_patched, s.events_created), (1, 1), "{s:?}");
    assert_eq!(rbac_violations(&fake.requests()), Vec::<String>::new());
    r.stop().await;
}
