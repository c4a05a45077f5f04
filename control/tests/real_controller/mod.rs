//! `ferrovn-controller --kube` as a child process for the real-control-plane tests
//! (kube_real.rs, kube_real_failover.rs): spawned with a ServiceAccount kubeconfig and nothing of
//! the caller's Kubernetes environment, killed and reaped on drop, its log read on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrovn_testkit::kube::ControlPlane;

/// The repository root (deploy/ lives there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("control has a parent")
        .to_path_buf()
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Applies deploy/'s CRDs (waiting until they are Established) and the controller's RBAC;
/// returns the deploy/ directory.
pub fn install_crds_and_rbac(cp: &ControlPlane) -> PathBuf {
    let deploy = repo().join("deploy");
    cp.apply_crds(&deploy.join("crds"))
        .expect("CRDs applied and Established");
    cp.kubectl(&["apply", "-f", path(&deploy.join("rbac.yaml"))])
        .expect("deploy/rbac.yaml");
    deploy
}

/// A controller process, killed and reaped on drop.
pub struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    /// Starts a replica named `identity` with its state and log under `dir`.
    pub fn spawn(
        kubeconfig: &Path,
        nb: &str,
        dir: &Path,
        identity: &str,
        lease_seconds: u64,
    ) -> Controller {
        Controller::spawn_debounced(kubeconfig, nb, dir, identity, lease_seconds, 100)
    }

    /// [`Controller::spawn`] with `--debounce-ms debounce_ms`.
    pub fn spawn_debounced(
        kubeconfig: &Path,
        nb: &str,
        dir: &Path,
        identity: &str,
        lease_seconds: u64,
        debounce_ms: u64,
    ) -> Controller {
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrovn-controller"))
            .args(["--kube", "--kubeconfig", path(kubeconfig), "--nb", nb])
            .args(["--state-dir", path(&dir.join(identity))])
            .args(["--identity", identity])
            .args(["--debounce-ms", &debounce_ms.to_string()])
            .args(["--lease-duration", &lease_seconds.to_string()])
            .env("HOME", dir)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ferrovn-controller");
        Controller { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("ferrovn-controller exited ({status}):\n{}", self.log());
        }
    }

    /// SIGTERM, then waits (at most 20 s) for the exit.
    #[allow(dead_code)] // used by kube_real.rs only
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "controller exits after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
