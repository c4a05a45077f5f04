//! The `ferrovn-controller --kube` binary end to end: a kubeconfig pointing at the fake
//! apiserver served over real HTTP/1.1 (so the kubeconfig loading, the HTTP client stack and
//! chunked watch streams are the real ones), a real OVN NB, SIGTERM at the end.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrovn_testkit::fake_kube::{FakeApi, fixture, rbac_violations};
use ferrovn_testkit::ovsdb::OvnCentral;
use ferrovn_testkit::wait::wait_until_async;
use serde_json::json;

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_in_kube_mode_allocates_and_releases_its_lease_on_sigterm() {
    let fake = FakeApi::new();
    fake.apply(fixture("namespace-default.json"));
    fake.apply(fixture("node-kind-worker.json"));
    fake.apply(fixture("subnet-ovn-default.json"));
    fake.apply(fixture("pod-web-0.json"));
    let addr = fake.serve_http().await;

    let central = OvnCentral::start().expect("OVN central");
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
        .args(["--kube", "--nb", &central.nb_remote(), "--state-dir"])
        .arg(tmp.path().join("state"))
        .args([
            "--identity",
            "ferrovn-controller-bin-test",
            "--debounce-ms",
            "100",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", tmp.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferrovn-controller");
    let mut child = Killer(child);

    let pod_patched = || {
        fake.get("Pod", "default", "web-0").is_some_and(|p| {
            p["metadata"]["annotations"]["ovn.kubernetes.io/allocated"] == json!("true")
        })
    };
    assert!(
        wait_until_async(Duration::from_secs(60), pod_patched).await,
        "pod allocated: not within 60 s"
    );
    let pod = fake.get("Pod", "default", "web-0").unwrap();
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["ovn.kubernetes.io/ip_address"], "10.16.0.2");
    assert_eq!(ann["ovn.kubernetes.io/logical_switch"], "ovn-default");
    let mac = ann["ovn.kubernetes.io/mac_address"].as_str().unwrap();
    let lsp = central
        .nbctl(&[
            "--bare",
            "--columns=addresses",
            "find",
            "Logical_Switch_Port",
            "name=web-0.default",
        ])
        .unwrap();
    assert_eq!(lsp.trim(), format!("{mac} 10.16.0.2"));
    let lease = fake
        .get("Lease", "kube-system", "ferrovn-controller")
        .expect("lease created");
    assert_eq!(
        lease["spec"]["holderIdentity"],
        "ferrovn-controller-bin-test"
    );

    // SIGTERM: clean exit, lease released for the next replica.
    let pid = child.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "exits after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let lease = fake
        .get("Lease", "kube-system", "ferrovn-controller")
        .unwrap();
    assert_eq!(
        lease["spec"].get("holderIdentity"),
        None,
        "released: {lease}"
    );

    let patch = fake
        .writes()
        .into_iter()
        .find(|w| w.path == "/api/v1/namespaces/default/pods/web-0")
        .expect("pod PATCH over HTTP");
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(rbac_violations(&fake.requests()), Vec::<String>::new());
}

#[test]
fn a_missing_kubeconfig_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such.kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
        .args(["--kube", "--nb", "unix:/nonexistent.sock", "--state-dir"])
        .arg(tmp.path().join("state"))
        .arg("--kubeconfig")
        .arg(&missing)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run ferrovn-controller");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&missing.display().to_string()),
        "error names the file: {stderr}"
    );
}
