//! The one ethtool knob pods need: tx checksum offload off. The OVS userspace datapath drops
//! checksum-offloaded packets it has to put into a Geneve tunnel, and without userspace TSO it
//! never completes partial checksums, so TCP from a veth pod needs the kernel to checksum in
//! software. Uses the SIOCETHTOOL ioctl (ETHTOOL_GTXCSUM / ETHTOOL_STXCSUM) on a socket of the
//! calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name length",
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: req is a properly laid out ifreq whose ifr_data points at a live ethtool_value;
    // both outlive the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Whether tx checksum offload is on for `ifname` in the calling thread's netns.
pub fn tx_checksum_enabled(ifname: &str) -> io::Result<bool> {
    ethtool_value(ifname, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

/// Turns tx checksum offload (and with it TSO, which depends on it) off for `ifname`.
pub fn disable_tx_checksum(ifname: &str) -> io::Result<()> {
    ethtool_value(ifname, ETHTOOL_STXCSUM, 0)?;
    if tx_checksum_enabled(ifname)? {
        return Err(io::Error::other(
            "tx checksum offload still on after ETHTOOL_STXCSUM",
        ));
    }
    Ok(())
}
