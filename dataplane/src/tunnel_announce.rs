//! Keeps every other node's OVS tunnel neighbor cache fresh for this node's tunnel IP.
//!
//! OVS's userspace tunnelling (the netdev datapath: DPDK nodes and, here, kernel-profile nodes
//! without the OVS kernel module) does not use the kernel's ARP table for the remote tunnel
//! endpoint. It learns the endpoint's MAC by snooping ARP replies and gratuitous ARPs on the
//! underlay bridge and forgets an entry 15 minutes after it was last snooped. On a miss it
//! drops the packet, sends an ARP request from the upcall only, and installs a drop datapath
//! flow that stays while the flow keeps being hit: a busy pod-to-pod flow to that node is then
//! black-holed until it pauses. Nothing on the node refreshes the entry by itself (the tunnel
//! traffic comes from OVS, so the kernel never ARPs for the remote endpoint).
//!
//! The agent therefore announces its own tunnel IP with a gratuitous ARP on the interface that
//! holds it, at start and then periodically, well inside those 15 minutes.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Shortest useful interval: a remote OVS snoops an announcement in its slow path only; repeats
/// less than its datapath flow idle time (`max-idle`, 10 s by default) apart match the flow the
/// first one left and are never looked at.
pub const MIN_INTERVAL_SECS: u64 = 15;

/// Ethernet + ARP, no padding (the NIC or the kernel pads to 60 bytes).
pub const GARP_FRAME_LEN: usize = 42;

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("no interface of this node holds the tunnel IP {ip}")]
    NoInterface { ip: Ipv4Addr },
    #[error("gratuitous ARP for {ip} on {ifname}: {step}: {source}")]
    Io {
        ip: Ipv4Addr,
        ifname: String,
        step: &'static str,
        source: io::Error,
    },
}

/// A gratuitous ARP request announcing `ip` at `mac` (sender = target = `ip`, broadcast): the
/// form OVS's tunnel neighbor snooping accepts besides ARP replies.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0u8; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was returned by socket() and is closed once, here.
        unsafe { libc::close(self.0) };
    }
}

/// Sends one gratuitous ARP for `ip` out of `ifname`, from the calling thread's network
/// namespace. Needs CAP_NET_RAW.
pub fn send_garp(ifname: &str, ip: Ipv4Addr) -> Result<(), AnnounceError> {
    let err = |step: &'static str| {
        let source = io::Error::last_os_error();
        let ifname = ifname.to_string();
        move || AnnounceError::Io {
            ip,
            ifname,
            step,
            source,
        }
    };
    let name = std::ffi::CString::new(ifname)
        .ok()
        .filter(|n| n.as_bytes().len() < libc::IFNAMSIZ)
        .ok_or_else(|| AnnounceError::Io {
            ip,
            ifname: ifname.to_string(),
            step: "interface name",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as libc::c_int) };
    if fd < 0 {
        return Err(err("socket(AF_PACKET)")());
    }
    let fd = Fd(fd);

    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_ifru.ifru_hwaddr of the ifreq we own.
    if unsafe { libc::ioctl(fd.0, libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(err("reading the MAC address")());
    }
    // SAFETY: the union member written by SIOCGIFHWADDR.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = *src as u8;
    }
    // SAFETY: SIOCGIFINDEX fills ifr_ifru.ifru_ifindex of the ifreq we own.
    if unsafe { libc::ioctl(fd.0, libc::SIOCGIFINDEX, &mut req) } < 0 {
        return Err(err("looking up the interface")());
    }
    // SAFETY: the union member written by SIOCGIFINDEX.
    let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };

    let frame = garp_frame(mac, ip);
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = proto;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: frame and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.0,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(err("sending")());
    }
    Ok(())
}

/// Finds the interface holding `ip` in this namespace and announces `ip` on it; returns the
/// interface name.
pub fn announce(ip: Ipv4Addr) -> Result<String, AnnounceError> {
    let addrs = crate::report::host_addresses();
    let ifname = crate::report::tunnel_interface(&addrs, &[IpAddr::V4(ip)])
        .ok_or(AnnounceError::NoInterface { ip })?;
    send_garp(&ifname, ip)?;
    Ok(ifname)
}

/// Announces `ip` now and every `every` (the agent's `--tunnel-announce-interval-secs`).
/// Failures are logged when they start and when they end, not at every tick.
pub async fn run(ip: Ipv4Addr, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let outcome = tokio::task::spawn_blocking(move || announce(ip)).await;
        match outcome {
            Ok(Ok(ifname)) => {
                if last_error.take().is_some() {
                    tracing::info!(%ip, ifname, "tunnel IP announced again");
                } else {
                    tracing::debug!(%ip, ifname, "tunnel IP announced (gratuitous ARP)");
                }
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "cannot announce the tunnel IP; remote nodes may drop traffic to this node after their OVS forgets it");
                }
                last_error = Some(msg);
            }
            Err(e) => tracing::warn!(error = %e, "tunnel announce task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let mac = [0x02, 0xd8, 0x51, 0x21, 0x6a, 0x42];
        let f = garp_frame(mac, Ipv4Addr::new(192, 168, 100, 1));
        let expected: [u8; GARP_FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0xd8, 0x51, 0x21, 0x6a, 0x42, // source MAC
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet / IPv4
            0x00, 0x01, // request
            0x02, 0xd8, 0x51, 0x21, 0x6a, 0x42, 192, 168, 100, 1, // sender
            0, 0, 0, 0, 0, 0, 192, 168, 100, 1, // target = sender IP
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn bad_interface_names_are_errors_not_panics() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        for name in ["", "a\0b", "a-name-longer-than-ifnamsiz"] {
            let e = send_garp(name, ip).expect_err(name);
            assert!(e.to_string().contains("10.0.0.1"), "{e}");
        }
    }
}
