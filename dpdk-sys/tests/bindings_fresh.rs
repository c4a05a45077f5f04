//! The committed bindings (src/generated/) must match the DPDK headers installed here: when
//! libdpdk-dev changes, this fails and says how to regenerate.

#[allow(dead_code)]
#[path = "../headers_hash.rs"]
mod headers_hash;

#[test]
fn committed_bindings_match_installed_dpdk_headers() {
    let cflags = headers_hash::pkg_config(&["--cflags"]).expect("pkg-config --cflags libdpdk");
    let version =
        headers_hash::pkg_config(&["--modversion"]).expect("pkg-config --modversion libdpdk");
    let dirs = headers_hash::dpdk_include_dirs(&cflags);
    assert!(!dirs.is_empty(), "no DPDK include dir in {cflags:?}");
    let now =
        headers_hash::headers_fingerprint(&version.join(" "), &dirs).expect("hash DPDK headers");
    let committed = include_str!("../src/generated/headers.sha256").trim();
    assert_eq!(
        now,
        committed,
        "installed DPDK headers ({}) differ from those src/generated/ was made from: run \
         `cargo build -p ferrovn-dpdk-sys --features regenerate` and commit src/generated/",
        version.join(" ")
    );
}
