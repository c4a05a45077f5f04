// Shared by build.rs (feature `regenerate`) and tests/bindings_fresh.rs: a fingerprint of the
// installed DPDK headers the committed bindings were generated from.

/// The DPDK include directories among `pkg-config --cflags libdpdk` (`-I.../dpdk...`).
pub fn dpdk_include_dirs(cflags: &[String]) -> Vec<std::path::PathBuf> {
    cflags
        .iter()
        .filter_map(|f| f.strip_prefix("-I"))
        .filter(|d| d.contains("dpdk"))
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| std::path::PathBuf::from(d)))
        .collect()
}

/// SHA-256 over (relative path, contents) of every `.h` below the DPDK include dirs, in sorted
/// order, plus the DPDK version: any header change, addition or removal changes it.
pub fn headers_fingerprint(version: &str, dirs: &[std::path::PathBuf]) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut Vec<(String, std::path::PathBuf)>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "h") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, path));
            }
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    hasher.update(version.trim().as_bytes());
    for dir in dirs {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        files.sort();
        for (rel, path) in files {
            hasher.update(rel.as_bytes());
            hasher.update([0u8]);
            hasher.update(std::fs::read(&path)?);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `pkg-config <args> libdpdk`, split on whitespace.
pub fn pkg_config(args: &[&str]) -> std::io::Result<Vec<String>> {
    let out = std::process::Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "pkg-config {args:?} libdpdk failed: {} (is libdpdk-dev installed?)",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}
