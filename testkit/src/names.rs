//! Names and ports that parallel tests never share: netns names, DPDK file prefixes, TCP ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// A name fragment unique to this process and call (for netns names, bridge-free ids...).
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// A short hex string unique enough for names that must stay short (DPDK file prefixes,
/// `/tmp` directories for vhost-user sockets, whose paths are limited to 108 bytes).
pub fn short_rand() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}",
        std::process::id() % 0xfff,
        (t.wrapping_add(n.wrapping_mul(7919))) % 0xffff
    )
}

/// A stable 32-bit hash of `seed` (FNV-1a), e.g. for pod UIDs derived from a pod name and a
/// test tag: the same inputs give the same UID, different tests different ones.
pub fn seed_u32(seed: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before (so parallel tests in one binary never get the same one).
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
        let port = l.local_addr().map_err(Error::io("local_addr"))?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Setup(
        "free_port: no fresh port after 64 tries".into(),
    ))
}

/// A private directory under `/tmp` (short paths: unix sockets live in it), deleted on drop.
pub fn tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(Error::io("create private run dir"))
}
