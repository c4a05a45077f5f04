//! FerrOVN's own image, `ferrovn.invalid/ferrovn:dev` (deploy/images/ferrovn/build.sh, the
//! image deploy/ferrovn.yaml names), written from this workspace's binaries of the calling
//! test's profile, so a test installs exactly the code it was built from.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{KubeError, run};
use crate::binaries::build_workspace_binary;

/// The image reference every container of deploy/ferrovn.yaml names.
pub const FERROVN_IMAGE: &str = "ferrovn.invalid/ferrovn:dev";

/// `(package, binary)` of what the image carries.
const BINARIES: [(&str, &str); 4] = [
    ("ferrovn-control", "ferrovn-controller"),
    ("ferrovn-dataplane", "ferrovn-node"),
    ("ferrovn-cni", "ferrovn-cni"),
    ("ferrovn-vhost", "ferrovn-vhost"),
];

/// Builds the four binaries (profile of the caller) and the image's OCI tar from them; returns
/// the tar. The tar lives in `${FERROVN_CACHE}/images/`, one per target directory, with the
/// build script's stamp: unchanged binaries give a no-op (a second or so to hash them).
pub fn ferrovn_image_tar() -> Result<PathBuf, KubeError> {
    let mut dir = None;
    for (package, bin) in BINARIES {
        let path = build_workspace_binary(package, bin).map_err(|reason| KubeError::Io {
            what: format!("building {bin} for the FerrOVN image"),
            reason,
        })?;
        dir = path.parent().map(Path::to_path_buf);
    }
    let dir = dir.ok_or_else(|| KubeError::Io {
        what: "the FerrOVN image's binaries".into(),
        reason: "no target directory".into(),
    })?;
    let cache = std::env::var_os("FERROVN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferrovn"));
    // One tar per target dir: two checkouts testing at once never import each other's build.
    let mut h = DefaultHasher::new();
    dir.hash(&mut h);
    let tar = cache
        .join("images")
        .join(format!("ferrovn-test-{:016x}.tar", h.finish()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/images/ferrovn/build.sh");
    let dir_s = dir.display().to_string();
    let tar_s = tar.display().to_string();
    let script_s = script.display().to_string();
    run(
        Path::new("env"),
        &[
            &format!("FERROVN_IMAGE_BINS_DIR={dir_s}"),
            &format!("FERROVN_IMAGE_TAR={tar_s}"),
            "bash",
            &script_s,
        ],
        None,
    )?;
    Ok(tar)
}
