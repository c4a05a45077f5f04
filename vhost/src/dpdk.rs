//! A thin safe layer over `ferrovn-dpdk-sys`: EAL start-up, one mbuf pool, ethdev ports created
//! from devargs (hot-plugged vdevs), bursts and counters. All `unsafe` of the crate lives here.

use ferrovn_dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

/// Largest burst the relay moves at once.
pub const BURST: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL argument {arg:?} contains a NUL byte")]
    NulInArgument { arg: String },
    #[error("rte_eal_init failed: {reason} (rte_errno {errno}); EAL args: {args:?}")]
    EalInit {
        errno: i32,
        reason: String,
        args: Vec<String>,
    },
    #[error("EAL is already initialised in this process (it can be started only once)")]
    EalAlreadyInitialised,
    #[error("mbuf pool {name:?} ({mbufs} mbufs): {reason} (rte_errno {errno})")]
    Mempool {
        name: String,
        mbufs: u32,
        errno: i32,
        reason: String,
    },
    #[error("device {devargs:?}: {op} failed: {reason} (code {code})")]
    Device {
        devargs: String,
        op: &'static str,
        code: i32,
        reason: String,
    },
    #[error("port {port}: {op} failed: {reason} (code {code})")]
    Port {
        port: u16,
        op: &'static str,
        code: i32,
        reason: String,
    },
}

/// DPDK's message for an errno value (`rte_strerror` also knows DPDK's own codes).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno.abs())) }
        .to_string_lossy()
        .into_owned()
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through the C shim.
    unsafe { sys::ferrovn_rte_errno() }
}

/// Registers the calling (non-EAL) thread with DPDK so it gets an lcore id, hence mempool
/// caches; returns that id. Failing is not fatal: the thread then works without a cache.
/// Only meaningful once EAL runs (before, it fails and returns `None`).
pub fn register_current_thread() -> Option<u32> {
    if !EAL_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    // SAFETY: EAL is initialised (checked above); registration concerns only this thread.
    unsafe { (sys::rte_thread_register() == 0).then(|| sys::rte_lcore_id()) }
}

static EAL_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Proof that the EAL runs in this process. Dropping it does not tear the EAL down: call
/// [`Eal::cleanup`] once every port is closed.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// `rte_eal_init` with `args` (args[0] is the program name). Once per process.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_STARTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        let cargs = args
            .iter()
            .map(|a| {
                CString::new(a.as_str()).map_err(|_| DpdkError::NulInArgument { arg: a.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv: Vec<*mut c_char> = cargs.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds pointers to NUL-terminated strings kept alive by `cargs` for the
        // whole call; EAL may reorder the pointer array (it is ours and mutable) but does not
        // write through the strings.
        let rc = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            let errno = rte_errno();
            return Err(DpdkError::EalInit {
                errno,
                reason: strerror(errno),
                args: args.to_vec(),
            });
        }
        Ok(Eal { _private: () })
    }

    /// `rte_eal_cleanup`: releases EAL resources. No DPDK call may follow.
    pub fn cleanup(self) {
        // SAFETY: consuming `self` prevents further use through this handle; callers close
        // their ports and stop their threads first.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// An mbuf pool, shared by every port of the process.
#[derive(Debug)]
pub struct Mempool {
    ptr: *mut sys::rte_mempool,
}

// SAFETY: rte_mempool is designed for concurrent use from many threads (its ring is MP/MC).
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn create(_eal: &Eal, name: &str, mbufs: u32, cache: u32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            arg: name.to_owned(),
        })?;
        // SAFETY: EAL is running (`_eal`), `cname` is a valid C string for the call.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                mbufs,
                cache,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                -1,
            )
        };
        if ptr.is_null() {
            let errno = rte_errno();
            return Err(DpdkError::Mempool {
                name: name.to_owned(),
                mbufs,
                errno,
                reason: strerror(errno),
            });
        }
        Ok(Mempool { ptr })
    }

    /// Mbufs currently free in the pool (cache + ring): a leak shows as a steady decrease.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive as long as `self`.
        unsafe { sys::rte_mempool_avail_count(self.ptr) }
    }
}

/// Per-port counters as the PMD reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub tx_errors: u64,
}

/// An ethdev port created from devargs (a vdev), configured with one rx and one tx queue and
/// started. Closing and removing the device happen in [`EthPort::close`].
#[derive(Debug)]
pub struct EthPort {
    id: u16,
    devargs: String,
    name: String,
}

fn device_err(devargs: &str, op: &'static str, code: i32) -> DpdkError {
    DpdkError::Device {
        devargs: devargs.to_owned(),
        op,
        code,
        reason: strerror(code),
    }
}

fn port_err(port: u16, op: &'static str, code: i32) -> DpdkError {
    DpdkError::Port {
        port,
        op,
        code,
        reason: strerror(code),
    }
}

impl EthPort {
    /// Hot-plugs the vdev described by `devargs` (`"<driver><n>,key=value,..."`), configures it
    /// with one queue pair of `descriptors` entries each and starts it.
    pub fn create(
        _eal: &Eal,
        devargs: &str,
        pool: &Mempool,
        descriptors: u16,
    ) -> Result<EthPort, DpdkError> {
        let name = devargs.split(',').next().unwrap_or(devargs).to_owned();
        let cdevargs = CString::new(devargs).map_err(|_| DpdkError::NulInArgument {
            arg: devargs.to_owned(),
        })?;
        let cname = CString::new(name.as_str())
            .map_err(|_| DpdkError::NulInArgument { arg: name.clone() })?;
        // SAFETY: EAL runs; the string is valid for the call. Control-path calls are serialised
        // by the caller (the helper's control lock).
        let rc = unsafe { sys::rte_dev_probe(cdevargs.as_ptr()) };
        if rc < 0 {
            return Err(device_err(devargs, "rte_dev_probe", rc));
        }
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc < 0 {
            remove_device(&name);
            return Err(device_err(devargs, "rte_eth_dev_get_port_by_name", rc));
        }
        let port = EthPort {
            id,
            devargs: devargs.to_owned(),
            name,
        };
        if let Err(e) = port.configure_and_start(pool, descriptors) {
            port.close();
            return Err(e);
        }
        Ok(port)
    }

    fn configure_and_start(&self, pool: &Mempool, descriptors: u16) -> Result<(), DpdkError> {
        let id = self.id;
        // SAFETY: the port exists; a zeroed rte_eth_conf is DPDK's default configuration; the
        // pool outlives the port (the helper closes ports before dropping the pool).
        unsafe {
            let conf: sys::rte_eth_conf = std::mem::zeroed();
            let rc = sys::rte_eth_dev_configure(id, 1, 1, &conf);
            if rc < 0 {
                return Err(port_err(id, "rte_eth_dev_configure", rc));
            }
            let socket = sys::rte_eth_dev_socket_id(id).max(0) as u32;
            let rc =
                sys::rte_eth_rx_queue_setup(id, 0, descriptors, socket, std::ptr::null(), pool.ptr);
            if rc < 0 {
                return Err(port_err(id, "rte_eth_rx_queue_setup", rc));
            }
            let rc = sys::rte_eth_tx_queue_setup(id, 0, descriptors, socket, std::ptr::null());
            if rc < 0 {
                return Err(port_err(id, "rte_eth_tx_queue_setup", rc));
            }
            let rc = sys::rte_eth_dev_start(id);
            if rc < 0 {
                return Err(port_err(id, "rte_eth_dev_start", rc));
            }
            // Promiscuous: the kernel side carries traffic for the pod's MAC, not the PMD's.
            // Not every PMD supports it (vhost answers -ENOTSUP); that is fine.
            sys::rte_eth_promiscuous_enable(id);
        }
        Ok(())
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn devargs(&self) -> &str {
        &self.devargs
    }

    /// Whether the PMD reports link up (for vhost: the pod's app is connected and ready).
    pub fn link_up(&self) -> bool {
        // SAFETY: zeroed rte_eth_link is a valid out-buffer; the port exists.
        unsafe {
            let mut link: sys::rte_eth_link = std::mem::zeroed();
            sys::rte_eth_link_get_nowait(self.id, &mut link) == 0 && link.link_status() != 0
        }
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        // SAFETY: zeroed rte_eth_stats is a valid out-buffer; the port exists.
        let s = unsafe {
            let mut s: sys::rte_eth_stats = std::mem::zeroed();
            let rc = sys::rte_eth_stats_get(self.id, &mut s);
            if rc < 0 {
                return Err(port_err(self.id, "rte_eth_stats_get", rc));
            }
            s
        };
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            tx_errors: s.oerrors,
        })
    }

    /// A handle for the data path. Only one thread may use a port's queue at a time: the
    /// relay gives each port to exactly one worker.
    pub fn queue(&self) -> Queue {
        Queue { port: self.id }
    }

    /// Stops, closes and removes the device. Workers must no longer use its queue.
    pub fn close(self) {
        // SAFETY: the port exists; after this no handle refers to it (Queue copies are
        // retired by the relay before close is called).
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
        remove_device(&self.name);
    }
}

fn remove_device(name: &str) {
    let (Ok(bus), Ok(dev)) = (CString::new("vdev"), CString::new(name)) else {
        return;
    };
    // SAFETY: valid C strings; hot-unplugging a vdev that is already gone returns an error,
    // which we ignore (the goal, "device gone", holds either way).
    unsafe {
        sys::rte_eal_hotplug_remove(bus.as_ptr(), dev.as_ptr());
    }
}

/// Queue 0 of a started port, for bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    port: u16,
}

/// A burst of mbuf pointers on the stack: the relay's only packet buffer, reused forever.
pub struct Burst {
    mbufs: [*mut sys::rte_mbuf; BURST],
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            mbufs: [std::ptr::null_mut(); BURST],
        }
    }
}

/// What one relay step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub received: u16,
    pub sent: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl Moved {
    pub fn dropped(&self) -> u16 {
        self.received - self.sent
    }
}

/// Receives up to [`BURST`] packets from `from`, sends them to `to`, frees what `to` refused.
/// No allocation: mbufs go from one PMD to the other.
pub fn relay_burst(from: Queue, to: Queue, burst: &mut Burst) -> Moved {
    // SAFETY: both ports are started and each queue is used by this thread only (the relay's
    // ownership rule); `burst` has BURST slots; ownership of the received mbufs passes to tx,
    // and the ones tx refused are ours to free.
    unsafe {
        let received = sys::rte_eth_rx_burst(from.port, 0, burst.mbufs.as_mut_ptr(), BURST as u16);
        if received == 0 {
            return Moved::default();
        }
        // Lengths are read before tx: afterwards the sent mbufs belong to the other PMD.
        let mut lengths = [0u32; BURST];
        for (len, &m) in lengths
            .iter_mut()
            .zip(&burst.mbufs[..usize::from(received)])
        {
            *len = (*m).pkt_len;
        }
        let sent = sys::rte_eth_tx_burst(to.port, 0, burst.mbufs.as_mut_ptr(), received);
        if sent < received {
            sys::rte_pktmbuf_free_bulk(
                burst.mbufs.as_mut_ptr().add(usize::from(sent)),
                u32::from(received - sent),
            );
        }
        let sum = |l: &[u32]| l.iter().map(|&x| u64::from(x)).sum::<u64>();
        Moved {
            received,
            sent,
            bytes_received: sum(&lengths[..usize::from(received)]),
            bytes_sent: sum(&lengths[..usize::from(sent)]),
        }
    }
}
