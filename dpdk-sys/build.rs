//! Builds the C side of the bindings: bindgen's wrappers for DPDK's static-inline functions
//! (`src/generated/extern.c`) and the `rte_errno` shim, both compiled with the FULL
//! `pkg-config --cflags libdpdk` (it force-includes rte_config.h and sets -march), and links
//! the DPDK libraries. With feature `regenerate` it first re-runs bindgen into `src/generated/`.

#[allow(dead_code)]
mod headers_hash {
    include!("headers_hash.rs");
}

use std::path::PathBuf;

/// A build failure, printed by cargo as it is (a `String`'s Debug would escape it).
struct BuildError(String);

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::fmt::Display> From<E> for BuildError {
    fn from(e: E) -> Self {
        BuildError(e.to_string())
    }
}

fn main() -> Result<(), BuildError> {
    let manifest = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .map_err(|e| BuildError(format!("CARGO_MANIFEST_DIR: {e}")))?,
    );
    let cflags = headers_hash::pkg_config(&["--cflags"])?;
    let libs = headers_hash::pkg_config(&["--libs"])?;

    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/generated/extern.c");
    println!("cargo:rerun-if-changed=headers_hash.rs");

    #[cfg(feature = "regenerate")]
    regenerate(&manifest, &cflags)?;

    let mut build = cc::Build::new();
    build
        .file(manifest.join("src/generated/extern.c"))
        .file(manifest.join("src/shim.c"))
        .include(&manifest)
        .warnings(false);
    let mut flags = cflags.iter();
    while let Some(flag) = flags.next() {
        if flag == "-include" {
            if let Some(header) = flags.next() {
                build.flag("-include").flag(header);
            }
        } else {
            build.flag(flag);
        }
    }
    build.try_compile("ferrovn_dpdk_wrappers")?;

    for flag in &libs {
        if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
        // -Wl,--as-needed is dropped: every listed library stays NEEDED, which is what we want
        // for the EAL's constructors (bus/mempool driver registration).
    }
    // Drivers FerrOVN calls directly (rte_vdev_init lives in the vdev bus driver). The EAL also
    // dlopen()s every driver in its plugin directory (RTE_EAL_PMD_PATH, Debian:
    // /usr/lib/<triplet>/dpdk/pmds-23.0) at rte_eal_init; glibc matches the already-linked copy
    // by inode, so nothing is loaded twice.
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");
    Ok(())
}

#[cfg(feature = "regenerate")]
fn regenerate(manifest: &std::path::Path, cflags: &[String]) -> Result<(), BuildError> {
    let generated = manifest.join("src/generated");
    let out_c = generated.join("extern.c");
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_args(cflags)
        .allowlist_function("rte_.*")
        .allowlist_function("ferrovn_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .blocklist_function("rte_.*_(dump|list_dump)")
        .blocklist_type("max_align_t")
        .opaque_type("rte_mbuf_ext_shared_info")
        .no_debug("rte_flow_item_gtp_psc")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .wrap_unsafe_ops(true)
        .wrap_static_fns(true)
        .wrap_static_fns_path(out_c.with_extension(""))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .map_err(|e| BuildError(format!("bindgen failed on wrapper.h: {e}")))?;
    bindings
        .write_to_file(generated.join("bindings.rs"))
        .map_err(|e| BuildError(format!("writing src/generated/bindings.rs: {e}")))?;
    // bindgen writes the absolute path of wrapper.h; the committed file must build from any checkout.
    let c = std::fs::read_to_string(&out_c)
        .map_err(|e| BuildError(format!("reading {}: {e}", out_c.display())))?;
    let wrapper = manifest.join("wrapper.h");
    let c = c.replace(
        &format!("#include \"{}\"", wrapper.display()),
        "#include \"wrapper.h\"",
    );
    std::fs::write(&out_c, c)
        .map_err(|e| BuildError(format!("writing {}: {e}", out_c.display())))?;
    let version = headers_hash::pkg_config(&["--modversion"])?;
    let fp = headers_hash::headers_fingerprint(
        &version.join(" "),
        &headers_hash::dpdk_include_dirs(cflags),
    )
    .map_err(|e| BuildError(format!("hashing DPDK headers: {e}")))?;
    std::fs::write(generated.join("headers.sha256"), format!("{fp}\n"))
        .map_err(|e| BuildError(format!("writing src/generated/headers.sha256: {e}")))?;
    Ok(())
}
