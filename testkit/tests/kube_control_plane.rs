//! The control plane itself: the pinned version runs, RBAC is enforced for a ServiceAccount,
//! the apiserver can be stopped and started again with its data, and dropping the control plane
//! leaves no process and no directory behind.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::{ControlPlane, pinned_version};

fn alive(pid: u32) -> bool {
    // A zombie has no cmdline; a live process (of ours) does.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[test]
fn control_plane_serves_enforces_rbac_restarts_and_cleans_up() {
    let mut cp = ControlPlane::start().expect("control plane (make kube-bins)");
    eprintln!("control plane up in {:?}", cp.startup_time());
    let version = cp
        .kubectl(&["version", "-o", "json"])
        .expect("kubectl version")
        .stdout;
    let pinned = pinned_version("K8S_VERSION").expect("pinned version");
    assert_eq!(
        version
            .matches(&format!("\"gitVersion\": \"{pinned}\""))
            .count(),
        2,
        "client and server are {pinned}: {version}"
    );

    // A fresh ServiceAccount may do nothing; the admin may grant it exactly one thing.
    let sa = cp
        .service_account_kubeconfig("default", "nobody")
        .expect("sa");
    let denied = cp
        .kubectl_as(&sa, &["get", "pods"], None)
        .expect_err("RBAC refuses");
    assert!(denied.to_string().contains("forbidden"), "{denied}");
    cp.kubectl(&[
        "create",
        "role",
        "pod-reader",
        "--verb=list",
        "--resource=pods",
    ])
    .expect("role");
    cp.kubectl(&[
        "create",
        "rolebinding",
        "nobody-reads",
        "--role=pod-reader",
        "--serviceaccount=default:nobody",
    ])
    .expect("rolebinding");
    let start = Instant::now();
    while cp.kubectl_as(&sa, &["get", "pods"], None).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "binding takes effect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The apiserver goes away and comes back with the same data.
    cp.kubectl(&["create", "configmap", "kept", "--from-literal=k=v"])
        .expect("configmap");
    cp.stop_apiserver();
    let down = cp.kubectl(&["get", "configmap", "kept"]);
    assert!(down.is_err(), "apiserver stopped: {down:?}");
    cp.start_apiserver().expect("apiserver again");
    let kept = cp
        .kubectl(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"])
        .expect("configmap after restart");
    assert_eq!(kept.stdout, "v");

    let pids = cp.pids();
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|(_, p)| alive(*p)), "{pids:?}");
    let dir = cp.dir().to_path_buf();
    drop(cp);
    for (name, pid) in pids {
        assert!(!alive(pid), "{name} (pid {pid}) still running after drop");
    }
    assert!(!Path::new(&dir).exists(), "{} removed", dir.display());
}

/// The lab's mode: the control plane outlives the handle (and the process) that started it,
/// another handle attaches to it, and stopping it by its PID files leaves nothing.
#[test]
fn persistent_control_plane_outlives_its_handle_and_stops_by_pid() {
    let parent = tempfile::tempdir().expect("tmp");
    let dir = parent.path().join("kube");
    let options = ferrovn_testkit::kube::Options {
        disabled_controllers: vec!["node-lifecycle-controller".into()],
        token_duration: Some("720h".into()),
        ..Default::default()
    };
    let pids = {
        let cp = ControlPlane::start_persistent(&dir, &options).expect("persistent control plane");
        eprintln!("persistent control plane up in {:?}", cp.startup_time());
        cp.kubectl(&["create", "configmap", "kept", "--from-literal=k=v"])
            .expect("configmap");
        cp.pids()
    };
    // the handle is gone; the components are not
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|(_, p)| alive(*p)), "{pids:?}");
    let again = ControlPlane::start_persistent(&dir, &options)
        .expect_err("a second control plane in the same dir is refused");
    assert!(again.to_string().contains("still runs"), "{again}");

    let cp = ControlPlane::open(&dir).expect("attach");
    assert_eq!(cp.pids(), pids);
    let kept = cp
        .kubectl(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"])
        .expect("configmap through the attached handle");
    assert_eq!(kept.stdout, "v");
    // tokens as long as asked for
    let sa = cp
        .service_account_kubeconfig("default", "long")
        .expect("token");
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
        .expect("whoami");
    assert_eq!(who.stdout, "system:serviceaccount:default:long");
    drop(cp);
    assert!(pids.iter().all(|(_, p)| alive(*p)), "{pids:?}");

    let report = ControlPlane::stop_persistent(&dir).expect("stop");
    assert_eq!(
        report.stopped,
        [
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd"
        ]
    );
    assert!(report.removed_dir && !dir.exists());
    let left: Vec<_> = pids.iter().filter(|(_, p)| alive(*p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(ControlPlane::open(&dir).is_err(), "nothing to attach to");
    assert_eq!(
        ControlPlane::stop_persistent(&dir).expect("again"),
        Default::default(),
        "stopping twice is harmless"
    );
}
