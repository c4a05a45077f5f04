//! The control protocol (JSON lines on a unix socket) and the pure checks and devargs that turn a
//! port request into DPDK devices.
//!
//! One request per line, one response per line:
//! `{"cmd":"add_port","name":"pod1","socket":"/run/pod1/vhu.sock","kernel_iface":"vh-pod1"}`
//! → `{"ok":true,"ports":[{...}]}` or `{"ok":false,"error":"..."}`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the helper reaches the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelKind {
    /// `net_af_packet` on an existing interface (the helper's end of a veth pair the agent made;
    /// the other end goes on br-int). The interface outlives the helper.
    #[default]
    AfPacket,
    /// `net_tap`: the PMD creates a tap named `kernel_iface` (gone when the helper exits).
    Tap,
}

/// One pod attachment: the pod's vhost-user socket and the kernel interface it is relayed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Unique port name (the agent uses the OVN logical port or `<pod>-<iface>`).
    pub name: String,
    /// The vhost-user socket; the pod's DPDK app is the server, the helper connects (client mode)
    /// and reconnects whenever the app restarts.
    pub socket: PathBuf,
    /// The kernel interface: for `af_packet` an existing interface, for `tap` the tap to create.
    pub kernel_iface: String,
    #[serde(default)]
    pub kernel: KernelKind,
    /// MAC of the tap (`tap` only; default: random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    AddPort(PortSpec),
    RemovePort {
        name: String,
    },
    ListPorts,
    Stats {
        #[serde(default)]
        name: Option<String>,
    },
    /// Prometheus text exposition of every port's counters.
    Metrics,
}

/// A port as reported by list_ports and stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    #[serde(flatten)]
    pub spec: PortSpec,
    /// CPU of the worker relaying this port.
    pub core: usize,
    /// The pod's app is connected (vhost link up).
    pub pod_connected: bool,
    #[serde(flatten)]
    pub counters: Counters,
}

/// Relay counters, seen from the pod: rx = from the pod, tx = to the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Received from the pod but refused by the kernel side.
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// From the kernel for the pod but refused by the vhost ring (pod absent or too slow).
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Response {
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }
    pub fn ports(ports: Vec<PortInfo>) -> Response {
        Response {
            ok: true,
            ports: Some(ports),
            ..Response::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("port name {0:?}: must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    Name(String),
    #[error("port {port}: socket {socket:?}: {reason}")]
    Socket {
        port: String,
        socket: String,
        reason: &'static str,
    },
    #[error("port {port}: kernel_iface {iface:?}: {reason}")]
    Iface {
        port: String,
        iface: String,
        reason: &'static str,
    },
    #[error("port {port}: mac {mac:?}: {reason}")]
    Mac {
        port: String,
        mac: String,
        reason: &'static str,
    },
}

/// sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;
/// IFNAMSIZ - 1.
const MAX_IFACE: usize = 15;

impl PortSpec {
    /// Everything DPDK would choke on, or that could smuggle extra devargs, is refused here.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(SpecError::Name(self.name.clone()));
        }
        let port = || self.name.clone();
        let socket = self.socket.to_string_lossy().into_owned();
        let sock_err = |reason| SpecError::Socket {
            port: port(),
            socket: socket.clone(),
            reason,
        };
        if !self.socket.is_absolute() {
            return Err(sock_err("must be an absolute path"));
        }
        if self.socket.to_str().is_none() {
            return Err(sock_err("must be valid UTF-8"));
        }
        if socket.len() > MAX_SOCKET_PATH {
            return Err(sock_err(
                "longer than the 107 bytes a unix socket path may have",
            ));
        }
        if socket.contains([',', '=', '[', ']', '\0', '\n']) {
            return Err(sock_err(
                "must not contain , = [ ] (DPDK devargs syntax), NUL or newline",
            ));
        }
        let iface = &self.kernel_iface;
        let if_err = |reason| SpecError::Iface {
            port: port(),
            iface: iface.clone(),
            reason,
        };
        if iface.is_empty() || iface.len() > MAX_IFACE {
            return Err(if_err("must be 1-15 characters (Linux IFNAMSIZ)"));
        }
        if iface == "."
            || iface == ".."
            || !iface
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ',' | '=' | ':'))
        {
            return Err(if_err("must be printable ASCII without / , = : or spaces"));
        }
        if let Some(mac) = &self.mac {
            let mac_err = |reason| SpecError::Mac {
                port: port(),
                mac: mac.clone(),
                reason,
            };
            if self.kernel != KernelKind::Tap {
                return Err(mac_err("only a tap port takes a mac"));
            }
            let bytes = parse_mac(mac)
                .ok_or_else(|| mac_err("must be six hex octets like 0a:58:0a:10:00:15"))?;
            if bytes[0] & 1 == 1 {
                return Err(mac_err("must be a unicast address"));
            }
        }
        Ok(())
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The vhost PMD in client mode (the pod's app is the server) on the pod's socket.
/// `index` makes the vdev name unique within the process.
pub fn vhost_devargs(index: u32, spec: &PortSpec) -> String {
    format!(
        "net_vhost{index},iface={},client=1,queues=1",
        spec.socket.to_string_lossy()
    )
}

/// The kernel-side PMD for `spec`.
pub fn kernel_devargs(index: u32, spec: &PortSpec) -> String {
    match spec.kernel {
        KernelKind::AfPacket => {
            format!("net_af_packet{index},iface={},qpairs=1", spec.kernel_iface)
        }
        KernelKind::Tap => match &spec.mac {
            Some(mac) => format!("net_tap{index},iface={},mac={mac}", spec.kernel_iface),
            None => format!("net_tap{index},iface={}", spec.kernel_iface),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> PortSpec {
        PortSpec {
            name: "pod1".into(),
            socket: "/run/ferrovn/pod1/vhu.sock".into(),
            kernel_iface: "vh-pod1".into(),
            kernel: KernelKind::AfPacket,
            mac: None,
        }
    }

    #[test]
    fn parses_the_documented_requests() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"add_port","name":"pod1","socket":"/run/ferrovn/pod1/vhu.sock","kernel_iface":"vh-pod1"}"#)
                .expect("add_port");
        assert_eq!(r, Request::AddPort(spec()));
        let r: Request = serde_json::from_str(
            r#"{"cmd":"add_port","name":"p","socket":"/s","kernel_iface":"t0","kernel":"tap","mac":"0a:58:0a:10:00:15"}"#,
        )
        .expect("tap");
        assert!(matches!(
            r,
            Request::AddPort(PortSpec {
                kernel: KernelKind::Tap,
                ..
            })
        ));
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"remove_port","name":"p"}"#).ok(),
            Some(Request::RemovePort { name: "p".into() })
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"list_ports"}"#).ok(),
            Some(Request::ListPorts)
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"stats"}"#).ok(),
            Some(Request::Stats { name: None })
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"metrics"}"#).ok(),
            Some(Request::Metrics)
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(
                r#"{"cmd":"add_port","name":"p","socket":"/s","kernel_iface":"t","extra":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn devargs_for_each_kind() {
        assert_eq!(
            vhost_devargs(3, &spec()),
            "net_vhost3,iface=/run/ferrovn/pod1/vhu.sock,client=1,queues=1"
        );
        assert_eq!(
            kernel_devargs(3, &spec()),
            "net_af_packet3,iface=vh-pod1,qpairs=1"
        );
        let tap = PortSpec {
            kernel: KernelKind::Tap,
            mac: Some("0a:58:0a:10:00:15".into()),
            ..spec()
        };
        assert_eq!(
            kernel_devargs(4, &tap),
            "net_tap4,iface=vh-pod1,mac=0a:58:0a:10:00:15"
        );
    }

    #[test]
    fn refuses_specs_dpdk_or_linux_would_not_take() {
        assert_eq!(spec().validate(), Ok(()));
        let bad = |f: fn(&mut PortSpec)| {
            let mut s = spec();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|s| s.name = String::new()),
            SpecError::Name(_)
        ));
        assert!(matches!(bad(|s| s.name = "a b".into()), SpecError::Name(_)));
        assert!(matches!(
            bad(|s| s.socket = "rel/vhu.sock".into()),
            SpecError::Socket { .. }
        ));
        assert!(matches!(
            bad(|s| s.socket = "/a,queues=8".into()),
            SpecError::Socket { .. }
        ));
        assert!(matches!(
            bad(|s| s.socket = "/a=b".into()),
            SpecError::Socket { .. }
        ));
        assert!(matches!(
            bad(|s| s.socket = format!("/{}", "x".repeat(120)).into()),
            SpecError::Socket { .. }
        ));
        assert!(matches!(
            bad(|s| s.kernel_iface = "sixteen-chars-xx".into()),
            SpecError::Iface { .. }
        ));
        assert!(matches!(
            bad(|s| s.kernel_iface = "a,b".into()),
            SpecError::Iface { .. }
        ));
        assert!(matches!(
            bad(|s| s.mac = Some("0a:58:0a:10:00:15".into())),
            SpecError::Mac { .. }
        ));
        assert!(matches!(
            bad(|s| {
                s.kernel = KernelKind::Tap;
                s.mac = Some("01:00:5e:00:00:01".into())
            }),
            SpecError::Mac { .. }
        ));
        assert!(matches!(
            bad(|s| {
                s.kernel = KernelKind::Tap;
                s.mac = Some("zz:00:5e:00:00:01".into())
            }),
            SpecError::Mac { .. }
        ));
        let msg = bad(|s| s.kernel_iface = String::new()).to_string();
        assert!(
            msg.contains("pod1") && msg.contains("kernel_iface"),
            "{msg}"
        );
    }

    proptest! {
        /// Whatever a valid spec holds, its devargs have exactly the keys we put there.
        #[test]
        fn valid_specs_cannot_inject_devargs(
            name in "[a-z0-9._-]{1,20}",
            sock in "/[ -~]{1,60}",
            iface in "[ -~]{1,15}",
            tap in any::<bool>(),
        ) {
            let s = PortSpec {
                name, socket: sock.into(), kernel_iface: iface,
                kernel: if tap { KernelKind::Tap } else { KernelKind::AfPacket }, mac: None,
            };
            if s.validate().is_ok() {
                let v = vhost_devargs(1, &s);
                prop_assert_eq!(v.matches(',').count(), 3);
                prop_assert_eq!(v.matches('=').count(), 3);
                prop_assert_eq!(kernel_devargs(1, &s).matches(',').count(), if tap { 1 } else { 2 });
            }
        }

        #[test]
        fn request_parsing_never_panics(s in ".{0,80}") {
            let _ = serde_json::from_str::<Request>(&s);
        }

        #[test]
        fn mac_round_trips(b in any::<[u8; 6]>()) {
            let s = b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
            prop_assert_eq!(parse_mac(&s), Some(b));
        }
    }
}
