//! Eswitch mode through devlink over generic netlink: the message codec (pure, tested against
//! kernel-shaped bytes) and a thin blocking socket shell.
//!
//! Sequence: resolve the `devlink` family id from the generic netlink controller
//! (CTRL_CMD_GETFAMILY with CTRL_ATTR_FAMILY_NAME → CTRL_ATTR_FAMILY_ID), then
//! DEVLINK_CMD_ESWITCH_GET / DEVLINK_CMD_ESWITCH_SET addressed by DEVLINK_ATTR_BUS_NAME ("pci")
//! and DEVLINK_ATTR_DEV_NAME (the PF's PCI address), what `devlink dev eswitch show/set` does.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::netlink::{
    self, GenlRequest, Malformed, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
};
use crate::pci::PciAddress;

/// linux/genetlink.h
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// linux/devlink.h
pub const DEVLINK_GENL_NAME: &str = "devlink";
pub const DEVLINK_GENL_VERSION: u8 = 1;
pub const DEVLINK_CMD_ESWITCH_GET: u8 = 29;
pub const DEVLINK_CMD_ESWITCH_SET: u8 = 30;
pub const DEVLINK_ATTR_BUS_NAME: u16 = 1;
pub const DEVLINK_ATTR_DEV_NAME: u16 = 2;
pub const DEVLINK_ATTR_ESWITCH_MODE: u16 = 25;
pub const DEVLINK_ATTR_ESWITCH_INLINE_MODE: u16 = 26;
pub const DEVLINK_ATTR_ESWITCH_ENCAP_MODE: u16 = 62;

/// DEVLINK_ESWITCH_MODE_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EswitchMode {
    Legacy,
    Switchdev,
}

impl EswitchMode {
    pub fn to_u16(self) -> u16 {
        match self {
            EswitchMode::Legacy => 0,
            EswitchMode::Switchdev => 1,
        }
    }

    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            0 => Some(EswitchMode::Legacy),
            1 => Some(EswitchMode::Switchdev),
            _ => None,
        }
    }
}

impl fmt::Display for EswitchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EswitchMode::Legacy => "legacy",
            EswitchMode::Switchdev => "switchdev",
        })
    }
}

/// DEVLINK_ESWITCH_INLINE_MODE_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineMode {
    None,
    Link,
    Network,
    Transport,
}

/// What ESWITCH_GET reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EswitchState {
    pub mode: EswitchMode,
    pub inline_mode: Option<InlineMode>,
    /// DEVLINK_ATTR_ESWITCH_ENCAP_MODE: true = basic (the NIC does tunnel encap/decap).
    pub encap_basic: Option<bool>,
}

/// A devlink device handle: `pci/0000:03:00.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevlinkDevice {
    pub bus: String,
    pub name: String,
}

impl DevlinkDevice {
    /// The devlink device of a PCI function (the PF).
    pub fn pci(address: &PciAddress) -> Self {
        DevlinkDevice {
            bus: "pci".into(),
            name: address.to_string(),
        }
    }
}

impl fmt::Display for DevlinkDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bus, self.name)
    }
}

/// Devlink failures, each saying what was asked of which device and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum DevlinkError {
    #[error(
        "the kernel has no {family:?} generic netlink family (nlctrl answered ENOENT){}",
        if family == DEVLINK_GENL_NAME { ": kernel built without CONFIG_NET_DEVLINK, or its devlink module is not loaded" } else { "" }
    )]
    FamilyNotRegistered { family: String },
    #[error("devlink {operation} {device}: no such devlink device (ENODEV): is the PF's driver loaded and is {device} the PF's PCI address?{}", ext(.message))]
    NoDevice {
        operation: &'static str,
        device: String,
        message: Option<String>,
    },
    #[error("devlink {operation} {device}: not supported (EOPNOTSUPP): the driver has no switchdev eswitch, or (mlx5) SR-IOV is not enabled yet: create VFs through sriov_numvfs first{}", ext(.message))]
    NotSupported {
        operation: &'static str,
        device: String,
        message: Option<String>,
    },
    #[error("devlink {operation} {device}: kernel error {errno} ({description}){}", ext(.message))]
    Kernel {
        operation: &'static str,
        device: String,
        errno: i32,
        description: String,
        message: Option<String>,
    },
    #[error("devlink {operation}: unexpected reply: {detail}")]
    UnexpectedReply {
        operation: &'static str,
        detail: String,
    },
    #[error("devlink {operation}: {0}", .source)]
    Malformed {
        operation: &'static str,
        source: Malformed,
    },
    #[error("generic netlink socket: {step}: {source}")]
    Socket {
        step: &'static str,
        source: io::Error,
    },
}

fn ext(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": kernel says \"{m}\""),
        None => String::new(),
    }
}

/// Request for a generic netlink family's id (`devlink` for us).
pub fn encode_get_family(seq: u32, family: &str) -> Vec<u8> {
    GenlRequest::new(GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY, 1)
        .attr_str(CTRL_ATTR_FAMILY_NAME, family)
        .finish()
}

/// Request for a device's eswitch state.
pub fn encode_eswitch_get(family: u16, seq: u32, device: &DevlinkDevice) -> Vec<u8> {
    GenlRequest::new(
        family,
        NLM_F_REQUEST,
        seq,
        DEVLINK_CMD_ESWITCH_GET,
        DEVLINK_GENL_VERSION,
    )
    .attr_str(DEVLINK_ATTR_BUS_NAME, &device.bus)
    .attr_str(DEVLINK_ATTR_DEV_NAME, &device.name)
    .finish()
}

/// Request to change a device's eswitch mode (acknowledged).
pub fn encode_eswitch_set(
    family: u16,
    seq: u32,
    device: &DevlinkDevice,
    mode: EswitchMode,
) -> Vec<u8> {
    GenlRequest::new(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        DEVLINK_CMD_ESWITCH_SET,
        DEVLINK_GENL_VERSION,
    )
    .attr_str(DEVLINK_ATTR_BUS_NAME, &device.bus)
    .attr_str(DEVLINK_ATTR_DEV_NAME, &device.name)
    .attr_u16(DEVLINK_ATTR_ESWITCH_MODE, mode.to_u16())
    .finish()
}

fn errno_description(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

fn kernel_error(operation: &'static str, device: &str, reply: netlink::ErrorReply) -> DevlinkError {
    let device = device.to_string();
    match reply.errno {
        libc::ENODEV => DevlinkError::NoDevice {
            operation,
            device,
            message: reply.message,
        },
        libc::EOPNOTSUPP => DevlinkError::NotSupported {
            operation,
            device,
            message: reply.message,
        },
        errno => DevlinkError::Kernel {
            operation,
            device,
            errno,
            description: errno_description(errno),
            message: reply.message,
        },
    }
}

/// The reply to our request `seq` in a datagram: `Ok(Some(genl payload))` for a data message,
/// `Ok(None)` for an ACK, `Err` for an error reply.
fn reply_for<'a>(
    datagram: &'a [u8],
    seq: u32,
    operation: &'static str,
    device: &str,
) -> Result<Option<(u16, &'a [u8])>, DevlinkError> {
    let malformed = |source| DevlinkError::Malformed { operation, source };
    for msg in netlink::messages(datagram).map_err(malformed)? {
        if msg.seq != seq || msg.kind == NLMSG_DONE {
            continue;
        }
        if msg.kind == NLMSG_ERROR {
            let reply = netlink::error_reply(msg.payload, msg.flags).map_err(malformed)?;
            if reply.errno == 0 {
                return Ok(None);
            }
            return Err(
                if operation == "family lookup" && reply.errno == libc::ENOENT {
                    DevlinkError::FamilyNotRegistered {
                        family: device.to_string(),
                    }
                } else {
                    kernel_error(operation, device, reply)
                },
            );
        }
        return Ok(Some((msg.kind, msg.payload)));
    }
    Err(DevlinkError::UnexpectedReply {
        operation,
        detail: format!("no message with sequence number {seq}"),
    })
}

/// An attribute: its type (flag bits cleared) and value.
type Attribute<'a> = (u16, &'a [u8]);

/// Splits a generic netlink payload into its command and attributes.
fn genl_attributes<'a>(
    payload: &'a [u8],
    operation: &'static str,
) -> Result<(u8, Vec<Attribute<'a>>), DevlinkError> {
    if payload.len() < netlink::GENL_HDRLEN {
        return Err(DevlinkError::UnexpectedReply {
            operation,
            detail: format!(
                "{} bytes, shorter than the generic netlink header",
                payload.len()
            ),
        });
    }
    let attrs = netlink::attributes(&payload[netlink::GENL_HDRLEN..])
        .map_err(|source| DevlinkError::Malformed { operation, source })?;
    Ok((payload[0], attrs))
}

/// A family id from the controller's reply to `encode_get_family(seq, family)`.
pub fn decode_family_reply(datagram: &[u8], seq: u32, family: &str) -> Result<u16, DevlinkError> {
    const OP: &str = "family lookup";
    let Some((kind, payload)) = reply_for(datagram, seq, OP, family)? else {
        return Err(DevlinkError::UnexpectedReply {
            operation: OP,
            detail: "an ACK instead of the family description".into(),
        });
    };
    let (cmd, attrs) = genl_attributes(payload, OP)?;
    if kind != GENL_ID_CTRL || cmd != CTRL_CMD_NEWFAMILY {
        return Err(DevlinkError::UnexpectedReply {
            operation: OP,
            detail: format!(
                "message type {kind} command {cmd}, expected nlctrl ({GENL_ID_CTRL}) NEWFAMILY ({CTRL_CMD_NEWFAMILY})"
            ),
        });
    }
    let name = attrs
        .iter()
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_NAME)
        .map(|(_, v)| netlink::attr_string(v));
    if name.as_deref() != Some(family) {
        return Err(DevlinkError::UnexpectedReply {
            operation: OP,
            detail: format!("family name {name:?}, expected {family:?}"),
        });
    }
    attrs
        .iter()
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| netlink::attr_u16(v))
        .ok_or_else(|| DevlinkError::UnexpectedReply {
            operation: OP,
            detail: "no CTRL_ATTR_FAMILY_ID".into(),
        })
}

/// The eswitch state from an ESWITCH_GET reply.
pub fn decode_eswitch_reply(
    datagram: &[u8],
    seq: u32,
    family: u16,
    device: &DevlinkDevice,
) -> Result<EswitchState, DevlinkError> {
    const OP: &str = "eswitch show";
    let dev = device.to_string();
    let Some((kind, payload)) = reply_for(datagram, seq, OP, &dev)? else {
        return Err(DevlinkError::UnexpectedReply {
            operation: OP,
            detail: "an ACK instead of the eswitch state".into(),
        });
    };
    let (cmd, attrs) = genl_attributes(payload, OP)?;
    if kind != family || cmd != DEVLINK_CMD_ESWITCH_GET {
        return Err(DevlinkError::UnexpectedReply {
            operation: OP,
            detail: format!(
                "message type {kind} command {cmd}, expected devlink ({family}) ESWITCH_GET"
            ),
        });
    }
    let get = |k: u16| attrs.iter().find(|(kind, _)| *kind == k).map(|(_, v)| *v);
    let mode_raw = get(DEVLINK_ATTR_ESWITCH_MODE)
        .and_then(netlink::attr_u16)
        .ok_or_else(|| DevlinkError::UnexpectedReply {
            operation: OP,
            detail: format!("no DEVLINK_ATTR_ESWITCH_MODE for {dev}"),
        })?;
    let mode = EswitchMode::from_u16(mode_raw).ok_or_else(|| DevlinkError::UnexpectedReply {
        operation: OP,
        detail: format!("unknown eswitch mode {mode_raw} for {dev}"),
    })?;
    let inline_mode = get(DEVLINK_ATTR_ESWITCH_INLINE_MODE)
        .and_then(netlink::attr_u8)
        .and_then(|v| match v {
            0 => Some(InlineMode::None),
            1 => Some(InlineMode::Link),
            2 => Some(InlineMode::Network),
            3 => Some(InlineMode::Transport),
            _ => None,
        });
    let encap_basic = get(DEVLINK_ATTR_ESWITCH_ENCAP_MODE)
        .and_then(netlink::attr_u8)
        .map(|v| v != 0);
    Ok(EswitchState {
        mode,
        inline_mode,
        encap_basic,
    })
}

/// The outcome of an acknowledged request (ESWITCH_SET).
pub fn decode_ack(
    datagram: &[u8],
    seq: u32,
    operation: &'static str,
    device: &DevlinkDevice,
) -> Result<(), DevlinkError> {
    match reply_for(datagram, seq, operation, &device.to_string())? {
        None => Ok(()),
        Some((kind, _)) => Err(DevlinkError::UnexpectedReply {
            operation,
            detail: format!("message type {kind} instead of an ACK"),
        }),
    }
}

/// A generic netlink socket talking to devlink (blocking, with a receive timeout).
#[derive(Debug)]
pub struct DevlinkSocket {
    fd: OwnedFd,
    family: u16,
    seq: u32,
}

const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

fn last_os_error(step: &'static str) -> DevlinkError {
    DevlinkError::Socket {
        step,
        source: io::Error::last_os_error(),
    }
}

/// Resolves any generic netlink family's id on this kernel (`nlctrl` is always 0x10).
pub fn resolve_family(family: &str) -> Result<u16, DevlinkError> {
    let mut socket = DevlinkSocket::open()?;
    socket.lookup(family)
}

impl DevlinkSocket {
    /// Opens a generic netlink socket and resolves the devlink family.
    pub fn connect() -> Result<Self, DevlinkError> {
        let mut socket = DevlinkSocket::open()?;
        socket.family = socket.lookup(DEVLINK_GENL_NAME)?;
        Ok(socket)
    }

    fn lookup(&mut self, family: &str) -> Result<u16, DevlinkError> {
        let seq = self.next_seq();
        let reply = self.round_trip(&encode_get_family(seq, family))?;
        decode_family_reply(&reply, seq, family)
    }

    fn open() -> Result<Self, DevlinkError> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            return Err(last_os_error("socket(AF_NETLINK, NETLINK_GENERIC)"));
        }
        // SAFETY: raw is a fresh valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        for (opt, step) in [
            (NETLINK_EXT_ACK, "setsockopt NETLINK_EXT_ACK"),
            (NETLINK_CAP_ACK, "setsockopt NETLINK_CAP_ACK"),
        ] {
            // SAFETY: valid fd, pointer to a c_int of the given size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(last_os_error(step));
            }
        }
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: valid fd, pointer to a timeval of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_error("setsockopt SO_RCVTIMEO"));
        }
        Ok(DevlinkSocket {
            fd,
            family: 0,
            seq: 1,
        })
    }

    /// The devlink family id this kernel assigned.
    pub fn family(&self) -> u16 {
        self.family
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` and returns the first datagram holding a message with its sequence
    /// number (stale replies to earlier, timed-out requests are skipped).
    fn round_trip(&self, request: &[u8]) -> Result<Vec<u8>, DevlinkError> {
        let seq = netlink::messages(request)
            .ok()
            .and_then(|m| m.first().map(|m| m.seq))
            .unwrap_or_default();
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid fd, buffer and address with their lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(last_os_error("sendto"));
        }
        for _ in 0..16 {
            let mut buf = vec![0u8; 64 * 1024];
            // SAFETY: valid fd, writable buffer of buf.len() bytes. MSG_TRUNC makes recv return
            // the datagram's real length, so a reply larger than the buffer is detected.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                return Err(last_os_error("recv (5 s timeout)"));
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(DevlinkError::UnexpectedReply {
                    operation: "receive",
                    detail: format!("{n}-byte datagram exceeds the {}-byte buffer", buf.len()),
                });
            }
            buf.truncate(n);
            let ours = netlink::messages(&buf)
                .map(|ms| ms.iter().any(|m| m.seq == seq))
                .unwrap_or(true);
            if ours {
                return Ok(buf);
            }
        }
        Err(DevlinkError::UnexpectedReply {
            operation: "receive",
            detail: format!("no reply with sequence number {seq} among 16 datagrams"),
        })
    }

    /// `devlink dev eswitch show <device>`.
    pub fn eswitch(&mut self, device: &DevlinkDevice) -> Result<EswitchState, DevlinkError> {
        let seq = self.next_seq();
        let reply = self.round_trip(&encode_eswitch_get(self.family, seq, device))?;
        decode_eswitch_reply(&reply, seq, self.family, device)
    }

    /// `devlink dev eswitch set <device> mode <mode>`.
    pub fn set_eswitch_mode(
        &mut self,
        device: &DevlinkDevice,
        mode: EswitchMode,
    ) -> Result<(), DevlinkError> {
        let seq = self.next_seq();
        let reply = self.round_trip(&encode_eswitch_set(self.family, seq, device, mode))?;
        decode_ack(&reply, seq, "eswitch set", device)
    }
}
