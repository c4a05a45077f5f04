//! Without the built binaries, ControlPlane::start fails and says what to run: a test that
//! needs the real apiserver can never pass (or skip) silently. The same for a kubelet node's
//! binaries and images.

use ferrovn_testkit::kube::{ControlPlane, KubeError, check_node_binaries, image_tar};

#[test]
fn start_without_binaries_names_the_binary_and_make_kube_bins() {
    let empty = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe { std::env::set_var("FERROVN_KUBE_BIN", empty.path()) };
    let err = ControlPlane::start().expect_err("no binaries");
    assert!(
        matches!(err, KubeError::MissingBinary { ref name, .. } if name == "etcd"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("etcd"), "{msg}");
    assert!(msg.contains("make kube-bins"), "{msg}");
    assert!(msg.contains(&empty.path().display().to_string()), "{msg}");

    // A node's runtime and images: named with the target that builds them.
    let err = check_node_binaries().expect_err("no node binaries");
    let msg = err.to_string();
    assert!(msg.starts_with("kubelet not found"), "{msg}");
    assert!(msg.contains("make kube-bins"), "{msg}");
    std::fs::write(empty.path().join("kubelet"), "").unwrap();
    let msg = check_node_binaries()
        .expect_err("no containerd")
        .to_string();
    assert!(msg.starts_with("containerd not found"), "{msg}");
    assert!(msg.contains("make kube-node-bins"), "{msg}");
    let msg = image_tar("busybox.tar").expect_err("no images").to_string();
    assert!(msg.contains("image busybox.tar"), "{msg}");
    assert!(msg.contains("make kube-node-bins"), "{msg}");
}
