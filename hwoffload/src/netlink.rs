//! Minimal netlink message building and parsing (linux/netlink.h, linux/genetlink.h): header
//! layout, 4-byte attribute alignment, NLMSG_ERROR with extended ack. Host byte order, which is
//! what the kernel uses on netlink.

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct genlmsghdr`: cmd u8, version u8, reserved u16.
pub const GENL_HDRLEN: usize = 4;
/// `struct nlattr`: len u16, type u16.
pub const NLA_HDRLEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
/// Error reply without the request's payload (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
/// Error reply carries extended-ack attributes.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// The nested flag bit and byte-order bit of `nla_type`, not part of the attribute number.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one generic netlink request.
#[derive(Debug, Clone)]
pub struct GenlRequest {
    buf: Vec<u8>,
}

impl GenlRequest {
    pub fn new(family: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish()
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0 = the kernel
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        GenlRequest { buf }
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute (NLA_NUL_STRING / NLA_STRING as the kernel expects).
    pub fn attr_str(self, kind: u16, value: &str) -> Self {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.attr(kind, &payload)
    }

    pub fn attr_u16(self, kind: u16, value: u16) -> Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn attr_u8(self, kind: u16, value: u8) -> Self {
        self.attr(kind, &[value])
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One message of a netlink datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Why bytes from the kernel could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink message: {0}")]
pub struct Malformed(pub String);

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into its messages.
pub fn messages(datagram: &[u8]) -> Result<Vec<Message<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < datagram.len() {
        let rest = &datagram[at..];
        let len = u32_at(rest, 0)
            .ok_or_else(|| Malformed(format!("truncated header at byte {at}")))?
            as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(Malformed(format!(
                "nlmsg_len {len} at byte {at} outside 16..={} bytes left",
                rest.len()
            )));
        }
        out.push(Message {
            kind: u16_at(rest, 4).unwrap_or_default(),
            flags: u16_at(rest, 6).unwrap_or_default(),
            seq: u32_at(rest, 8).unwrap_or_default(),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        at += align4(len);
    }
    Ok(out)
}

/// The attributes of a payload, `(type without flag bits, value)`; stops at padding.
pub fn attributes(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, Malformed> {
    let mut out = Vec::new();
    while b.len() >= NLA_HDRLEN {
        let len = u16_at(b, 0).unwrap_or_default() as usize;
        let kind = u16_at(b, 2).unwrap_or_default() & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > b.len() {
            return Err(Malformed(format!(
                "attribute type {kind} has length {len} with {} bytes left",
                b.len()
            )));
        }
        out.push((kind, &b[NLA_HDRLEN..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

pub fn attr_string(value: &[u8]) -> String {
    let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

pub fn attr_u16(value: &[u8]) -> Option<u16> {
    u16_at(value, 0)
}

pub fn attr_u8(value: &[u8]) -> Option<u8> {
    value.first().copied()
}

/// A decoded NLMSG_ERROR: `errno` 0 is a plain ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// Positive errno (the kernel sends it negated).
    pub errno: i32,
    /// NLMSGERR_ATTR_MSG of the extended ack, when the kernel gave one.
    pub message: Option<String>,
}

/// Decodes the payload of an NLMSG_ERROR message (`flags` are the error message's own).
pub fn error_reply(payload: &[u8], flags: u16) -> Result<ErrorReply, Malformed> {
    let error = u32_at(payload, 0)
        .ok_or_else(|| Malformed("NLMSG_ERROR shorter than its error code".into()))?
        as i32;
    let request_len = u32_at(payload, 4)
        .ok_or_else(|| Malformed("NLMSG_ERROR without the request header".into()))?;
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // Without NLM_F_CAPPED the whole request follows the error code, else only its header.
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(request_len as usize)
        };
        let tlvs = payload.get(4 + skip..).unwrap_or_default();
        for (kind, value) in attributes(tlvs)? {
            if kind == NLMSGERR_ATTR_MSG {
                message = Some(attr_string(value));
            }
        }
    }
    Ok(ErrorReply {
        errno: error.saturating_neg(),
        message,
    })
}
