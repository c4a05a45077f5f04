//! What the vhost helper reads from its veth is what a DPDK pod on a kernel node receives: the
//! helper's AF_PACKET socket on end A gets every packet the node's datapath writes into end B,
//! and DPDK's af_packet PMD passes it on byte for byte (it drops the kernel's "checksum not
//! ready" flag). A same-node sender with checksum offload leaves only the pseudo-header sum in
//! the L4 header; the pod's stack then drops the packet (the lab's dpdk-b never reached a
//! Service backend on its own node: TcpInCsumErrors). The agent's veth pair must make the
//! kernel finish checksums before end B: here a UDP datagram sent out of end B arrives on an
//! AF_PACKET socket on end A with a checksum that verifies.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ferrovn_dataplane::dpdk::helper_attach::ensure_veth_blocking;
use ferrovn_testkit::names::unique_tag;
use ferrovn_testkit::netns::Netns;

const SRC: [u8; 4] = [10, 98, 0, 1];
const DST: [u8; 4] = [10, 98, 0, 2];
const PAYLOAD: &[u8] = b"ferrovn: a payload whose sum is not zero";

/// One's-complement sum of `data`, folded to 16 bits.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Whether the UDP checksum of the IPv4 frame `frame` (Ethernet header first) verifies.
fn udp_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
    let udp = &ip[ihl..ihl + udp_len];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    sum16(sum16(0, &pseudo), udp) == 0xffff
}

/// Sends one UDP datagram out of `end_b` (an address on it, a static neighbour behind it) and
/// returns the frame an AF_PACKET socket on `end_a` received. Runs on a thread inside `ns`.
fn send_and_capture(ns: &Netns, end_a: &str, end_b: &str) -> Vec<u8> {
    ns.ip(["addr", "add", "10.98.0.1/24", "dev", end_b])
        .unwrap();
    ns.ip([
        "neigh",
        "replace",
        "10.98.0.2",
        "lladdr",
        "0a:58:0a:62:00:02",
        "dev",
        end_b,
    ])
    .unwrap();
    let path = ns.path();
    let (a, b) = (end_a.to_string(), end_b.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let ifindex = nix::net::if_::if_nametoindex(a.as_str()).unwrap();
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); checked before it is wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set below make it a bind address.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a live sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind to {a}: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: tv is a live timeval of the given size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let udp = std::net::UdpSocket::bind((std::net::Ipv4Addr::from(SRC), 0)).unwrap();
        udp.send_to(PAYLOAD, (std::net::Ipv4Addr::from(DST), 9))
            .unwrap_or_else(|e| panic!("send out of {b}: {e}"));
        let mut buf = vec![0u8; 2048];
        loop {
            // SAFETY: buf is a live buffer of the given length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(
                n > 0,
                "no datagram on {a}: {}",
                std::io::Error::last_os_error()
            );
            let frame = &buf[..n as usize];
            // our datagram: IPv4 UDP to DST
            if frame.len() > 34 && frame[23] == 17 && frame[30..34] == DST {
                return frame.to_vec();
            }
        }
    })
    .join()
    .unwrap()
}

#[test]
fn a_helper_veth_hands_finished_checksums_to_the_helper() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and veths (root)"
    );
    let tag = unique_tag();
    let ns = Netns::create(&format!("fvck{tag}")).unwrap();
    let (end_a, end_b) = (format!("vk{tag}"), format!("vh{tag}"));
    // the agent's pair: created in the node's netns, up, tagged
    let created = ensure_veth_blocking(
        Some(ns.path()),
        &end_a,
        &end_b,
        "ferrovn-vhost:test:net1",
        1400,
    )
    .unwrap();
    assert!(created);
    let frame = send_and_capture(&ns, &end_a, &end_b);
    assert!(
        udp_checksum_ok(&frame),
        "the helper would hand the pod a UDP datagram whose checksum does not verify \
         (a partial checksum left by offload): {:02x?}",
        &frame[..frame.len().min(64)]
    );
}
