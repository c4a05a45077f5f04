//! EAL runs once per process, so this file holds exactly one test: EAL with `--no-huge` and the
//! ring and null PMDs as vdevs, packets sent and received back through the bindings'
//! static-inline wrappers, and `rte_errno` read through the shim.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::time::{Duration, Instant};

/// Removes the EAL runtime dir of our private file prefix, also when the test fails.
struct RuntimeDirGuard(std::path::PathBuf);
impl Drop for RuntimeDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn port_by_name(name: &str) -> u16 {
    let c = CString::new(name).expect("static name");
    let mut port = 0u16;
    // SAFETY: `c` is a valid C string and `port` a valid out-pointer for the call's duration.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut port) };
    assert_eq!(rc, 0, "port {name} not found: vdev not created");
    port
}

fn start_port(port: u16, pool: *mut sys::rte_mempool) {
    // SAFETY: EAL is initialised, `port` exists, `pool` is a live mbuf pool; a zeroed
    // rte_eth_conf is DPDK's documented default configuration.
    unsafe {
        let conf: sys::rte_eth_conf = std::mem::zeroed();
        assert_eq!(
            sys::rte_eth_dev_configure(port, 1, 1, &conf),
            0,
            "configure port {port}"
        );
        let socket = sys::rte_eth_dev_socket_id(port);
        let socket = if socket < 0 { 0 } else { socket as u32 };
        assert_eq!(
            sys::rte_eth_rx_queue_setup(port, 0, 512, socket, std::ptr::null(), pool),
            0
        );
        assert_eq!(
            sys::rte_eth_tx_queue_setup(port, 0, 512, socket, std::ptr::null()),
            0
        );
        assert_eq!(sys::rte_eth_dev_start(port), 0, "start port {port}");
    }
}

fn stats(port: u16) -> sys::rte_eth_stats {
    // SAFETY: a zeroed rte_eth_stats is a valid out-buffer.
    unsafe {
        let mut s: sys::rte_eth_stats = std::mem::zeroed();
        assert_eq!(sys::rte_eth_stats_get(port, &mut s), 0);
        s
    }
}

#[test]
fn eal_no_huge_ring_and_null_pmds_move_packets() {
    let prefix = format!("ferrovn-sys-{}", std::process::id());
    let _guard = RuntimeDirGuard(std::path::PathBuf::from("/var/run/dpdk").join(&prefix));
    let lcores = format!("--lcores=0@({})", allowed_cpus());
    let args = [
        "ferrovn-dpdk-sys-test",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--file-prefix",
        &prefix,
        // one lcore, allowed to float on every CPU: don't pin the test harness' thread
        &lcores,
        "--log-level=lib.eal:error",
        "--vdev=net_ring0",
        "--vdev=net_null0,size=64",
    ];
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(*a).expect("no NUL"))
        .collect();
    let mut argv: Vec<*mut c_char> = cargs.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    // SAFETY: argv points to NUL-terminated strings that outlive the call; EAL may permute argv.
    let rc = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    let errno = unsafe { sys::ferrovn_rte_errno() };
    assert!(rc >= 0, "rte_eal_init failed: rte_errno {errno}");

    // rte_errno through the shim: looking up a pool that does not exist sets ENOENT.
    let missing = CString::new("no-such-pool").expect("no NUL");
    // SAFETY: valid C string; the call only reads it.
    let none = unsafe { sys::rte_mempool_lookup(missing.as_ptr()) };
    assert!(none.is_null());
    // SAFETY: plain thread-local read in C.
    assert_eq!(unsafe { sys::ferrovn_rte_errno() }, libc_enoent());

    // rte_ring's static-inline burst calls, through the wrappers: FIFO, bounded by capacity.
    let ring_name = CString::new("sys-test-ring").expect("no NUL");
    // SAFETY: EAL is initialised; the name is a valid C string.
    let r = unsafe { sys::rte_ring_create(ring_name.as_ptr(), 16, 0, 0) };
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    let errno = unsafe { sys::ferrovn_rte_errno() };
    assert!(!r.is_null(), "rte_ring_create: rte_errno {errno}");
    let mut objs: Vec<*mut std::ffi::c_void> =
        (1..=20usize).map(|i| i as *mut std::ffi::c_void).collect();
    // SAFETY: `objs` holds 20 pointer slots; the ring only stores the pointer values.
    let queued = unsafe { sys::rte_ring_enqueue_burst(r, objs.as_ptr(), 20, std::ptr::null_mut()) };
    assert_eq!(queued, 15, "a 16-slot ring holds 15 objects");
    let mut out = vec![std::ptr::null_mut::<std::ffi::c_void>(); 20];
    // SAFETY: `out` has 20 slots.
    let got = unsafe { sys::rte_ring_dequeue_burst(r, out.as_mut_ptr(), 20, std::ptr::null_mut()) };
    assert_eq!(got, 15);
    objs.truncate(15);
    assert_eq!(&out[..15], &objs[..], "first in, first out");
    // SAFETY: the ring is empty and no longer used.
    unsafe { sys::rte_ring_free(r) };

    let pool_name = CString::new("sys-test-pool").expect("no NUL");
    // SAFETY: EAL is initialised; the name is a valid C string.
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(
            pool_name.as_ptr(),
            4095,
            0,
            0,
            sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            0,
        )
    };
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    let errno = unsafe { sys::ferrovn_rte_errno() };
    assert!(!pool.is_null(), "mbuf pool: rte_errno {errno}");

    let ring = port_by_name("net_ring0");
    let null = port_by_name("net_null0");
    start_port(ring, pool);
    start_port(null, pool);

    // net_ring0 is a loopback: what is sent on its tx queue comes back on its rx queue.
    const BURSTS: usize = 10;
    const BURST: usize = 32;
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut bad_payload = 0usize;
    let mut burst = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST];
    for b in 0..BURSTS {
        // SAFETY: `burst` holds BURST slots for the allocated mbuf pointers.
        let rc = unsafe { sys::rte_pktmbuf_alloc_bulk(pool, burst.as_mut_ptr(), BURST as u32) };
        assert_eq!(rc, 0, "alloc burst {b}");
        for (i, &m) in burst.iter().enumerate() {
            // SAFETY: `m` is a freshly allocated mbuf whose buffer has room for 64 bytes.
            unsafe {
                let data = sys::rte_pktmbuf_mtod(m);
                std::ptr::write_bytes(data, 0, 64);
                *data = b as u8;
                *data.add(1) = i as u8;
                (*m).data_len = 64;
                (*m).pkt_len = 64;
            }
        }
        // SAFETY: the port is started; tx takes ownership of the first `n` mbufs.
        let n = usize::from(unsafe {
            sys::rte_eth_tx_burst(ring, 0, burst.as_mut_ptr(), BURST as u16)
        });
        if n < BURST {
            // SAFETY: the unsent mbufs are still ours.
            unsafe { sys::rte_pktmbuf_free_bulk(burst.as_mut_ptr().add(n), (BURST - n) as u32) };
        }
        sent += n;
    }
    assert_eq!(sent, BURSTS * BURST, "ring PMD accepted every packet");
    let deadline = Instant::now() + Duration::from_secs(5);
    while received < sent && Instant::now() < deadline {
        // SAFETY: the port is started and `burst` has BURST slots.
        let n = usize::from(unsafe {
            sys::rte_eth_rx_burst(ring, 0, burst.as_mut_ptr(), BURST as u16)
        });
        for &m in &burst[..n] {
            // SAFETY: rx handed us `n` valid mbufs, which we free after reading.
            unsafe {
                let data = sys::rte_pktmbuf_mtod(m);
                let (b, i) = (usize::from(*data), usize::from(*data.add(1)));
                if (*m).pkt_len != 64 || b * BURST + i != received {
                    bad_payload += 1;
                }
                sys::rte_pktmbuf_free(m);
            }
            received += 1;
        }
    }
    assert_eq!(received, sent, "every packet came back from the ring");
    assert_eq!(bad_payload, 0, "packets came back intact and in order");
    let ring_stats = stats(ring);
    assert_eq!(ring_stats.opackets as usize, sent);
    assert_eq!(ring_stats.ipackets as usize, received);

    // net_null: rx conjures 64-byte packets, tx swallows them.
    let mut from_null = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while from_null < 3 * BURST && Instant::now() < deadline {
        // SAFETY: as above.
        let n = unsafe { sys::rte_eth_rx_burst(null, 0, burst.as_mut_ptr(), BURST as u16) };
        let n = usize::from(n);
        // SAFETY: forward what we received; free what tx refused.
        let t =
            usize::from(unsafe { sys::rte_eth_tx_burst(null, 0, burst.as_mut_ptr(), n as u16) });
        if t < n {
            // SAFETY: the mbufs from index t on were not taken by tx_burst and are still ours.
            unsafe { sys::rte_pktmbuf_free_bulk(burst.as_mut_ptr().add(t), (n - t) as u32) };
        }
        from_null += n;
    }
    assert!(from_null >= 3 * BURST, "null PMD produced packets");
    let null_stats = stats(null);
    assert_eq!(null_stats.ipackets as usize, from_null);
    assert!(null_stats.opackets > 0);

    // SAFETY: no mbufs are outstanding; ports are stopped before EAL is torn down.
    unsafe {
        assert_eq!(sys::rte_eth_dev_stop(ring), 0);
        assert_eq!(sys::rte_eth_dev_stop(null), 0);
        sys::rte_eth_dev_close(ring);
        sys::rte_eth_dev_close(null);
        sys::rte_mempool_free(pool);
        let name = CStr::from_ptr(sys::rte_strerror(2));
        assert!(!name.to_bytes().is_empty());
        assert_eq!(sys::rte_eal_cleanup(), 0);
    }
}

/// `Cpus_allowed_list` of this process, e.g. `0-1`: EAL rejects CPUs we may not run on.
fn allowed_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "0".to_owned())
}

fn libc_enoent() -> c_int {
    2
}
