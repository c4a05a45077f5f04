//! The real `ferrovn-controller` in manifest mode as a test daemon: a private manifests
//! directory the test writes Kubernetes YAML into, a private state directory where the
//! controller writes its allocation records (pods: `allocations/<ns>/<pod>.json`, which the
//! node agent reads with `--allocations-dir`; nodes: `nodes/<node>.json`, `--node-file`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::controller_binary;
use crate::error::{Error, Result};
use crate::names::tempdir;
use crate::process::Daemon;
use crate::wait::wait_until;

/// `ferrovn-controller --manifests DIR --state-dir DIR --interval 1` against an NB.
#[derive(Debug)]
pub struct ManifestController {
    daemon: Option<Daemon>,
    manifests: tempfile::TempDir,
    state: tempfile::TempDir,
    log: PathBuf,
}

impl ManifestController {
    /// Builds (on first use) and starts the controller against `nb_remote`.
    pub fn start(nb_remote: &str) -> Result<Self> {
        Self::start_with(nb_remote, &[])
    }

    /// [`ManifestController::start`] with `extra_args` appended (e.g. `--sb=...`).
    pub fn start_with(nb_remote: &str, extra_args: &[String]) -> Result<Self> {
        let bin = controller_binary()?;
        let manifests = tempdir("fv-manifests-")?;
        let state = tempdir("fv-ctrl-state-")?;
        let log = state.path().join("ferrovn-controller.log");
        let args = vec![
            format!("--nb={nb_remote}"),
            format!("--manifests={}", manifests.path().display()),
            format!("--state-dir={}", state.path().display()),
            "--interval=1".into(),
        ];
        let mut args = args;
        args.extend(extra_args.iter().cloned());
        let env = vec![(
            "RUST_LOG".to_string(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )];
        let daemon = Daemon::spawn(
            "ferrovn-controller",
            None,
            &env,
            &bin.display().to_string(),
            &args,
            &log,
        )?;
        Ok(ManifestController {
            daemon: Some(daemon),
            manifests,
            state,
            log,
        })
    }

    /// Writes (or replaces) the manifest file `<name>.yaml`.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let path = self.manifests.path().join(format!("{name}.yaml"));
        let tmp = self.manifests.path().join(format!(".{name}.yaml.tmp"));
        let io = |source| Error::Io {
            what: format!("writing manifest {}", path.display()),
            source,
        };
        std::fs::write(&tmp, yaml).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes the manifest file `<name>.yaml` (its objects are deleted at the next pass).
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.manifests.path().join(format!("{name}.yaml"));
        std::fs::remove_file(&path).map_err(|source| Error::Io {
            what: format!("removing manifest {}", path.display()),
            source,
        })
    }

    /// Where the agents read pod allocations (`--allocations-dir`).
    pub fn allocations_dir(&self) -> PathBuf {
        self.state.path().join("allocations")
    }

    /// The controller's record of node `node` (`--node-file`).
    pub fn node_file(&self, node: &str) -> PathBuf {
        self.state.path().join("nodes").join(format!("{node}.json"))
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `path` (a record under the state dir) exists.
    pub fn wait_record(&self, path: &Path, timeout: Duration) -> Result<()> {
        if wait_until(timeout, || path.exists()) {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: format!("controller record {}", path.display()),
                waited: timeout,
                detail: format!(" (log: {})", self.log()),
            })
        }
    }
}

impl Drop for ManifestController {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(5));
        }
    }
}
