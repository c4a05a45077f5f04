//! The workspace's binaries (agent, CNI plugin, controller...) built on first use with the
//! profile of the calling test, example or tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::wait::wait_until;

/// Path of the `ferrovn-cni` plugin binary of this workspace (built on first use).
pub fn cni_plugin_binary() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-cni", "ferrovn-cni"))
        .clone()
        .map_err(Error::Build)
}

/// Path of the `ferrovn-node` agent binary of this workspace (built on first use; tests of
/// this crate can use `env!("CARGO_BIN_EXE_ferrovn-node")` instead).
pub fn agent_binary() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-dataplane", "ferrovn-node"))
        .clone()
        .map_err(Error::Build)
}

/// Path of the `ferrovn-controller` binary of this workspace (built on first use, once per
/// process: parallel tests share one build).
pub fn controller_binary() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_workspace_binary("ferrovn-control", "ferrovn-controller"))
        .clone()
        .map_err(Error::Build)
}

/// Builds `bin` of `package` with the profile of the calling test/example
/// (`cargo build -p <package> --bin <bin>`), returning its path in the shared target dir.
pub fn build_workspace_binary(package: &str, bin: &str) -> std::result::Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // <target>/<profile>/deps/<test>  or  <target>/<profile>/examples/<example>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("-p")
        .arg(package)
        .arg("--bin")
        .arg(bin);
    if release {
        cmd.arg("--release");
    }
    let path = profile_dir.join(bin);
    if std::env::var_os("FERROVN_SKIP_BUILD").is_some() && path.exists() {
        return Ok(path);
    }
    // Another cargo (a running `cargo run`) may hold the target dir lock for a long time:
    // bound the wait, and fall back to an existing binary if there is one.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo: {e}"))?;
    let finished = wait_until(Duration::from_secs(300), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        if path.exists() {
            tracing::warn!(
                bin,
                "cargo build did not finish in 300 s; using the existing binary"
            );
            return Ok(path);
        }
        return Err(format!(
            "cargo build -p {package} --bin {bin} did not finish in 300 s"
        ));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cargo build output: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} --bin {bin} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} missing after the build", path.display()))
    }
}
