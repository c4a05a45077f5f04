//! Writes the CRD manifests of FerrOVN's `kubeovn.io/v1` resources into `deploy/crds/`.
//!
//! Run from anywhere in the repository: `cargo run -p ferrovn-api --example crdgen`.

use std::path::PathBuf;

use anyhow::Context;
use ferrovn_api::crdgen::{CRD_DIR, render_all};

fn main() -> anyhow::Result<()> {
    // The crate lives in <repo>/api, so the repository root is its parent.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("api crate has no parent directory")?;
    let dir = repo.join(CRD_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in render_all().context("rendering CRDs")? {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
