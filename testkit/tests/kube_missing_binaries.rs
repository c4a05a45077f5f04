//! Without the built binaries, ControlPlane::start fails and says what to run: a test that
//! needs the real apiserver can never pass (or skip) silently.

use ferrovn_testkit::kube::{ControlPlane, KubeError};

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
}
