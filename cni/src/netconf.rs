//! The network configuration the runtime streams on stdin.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::protocol::{AttachmentKey, VhostUser};
use crate::spec::{CniError, CniVersion, SUPPORTED_VERSIONS, code, describe, opt_str, opt_u32};

/// Where the node agent listens unless the netconf says otherwise.
pub const DEFAULT_SERVER_SOCKET: &str = "/run/ferrovn/cni.sock";

/// `type` names that mean "this plugin": our own, the short name used as an IPAM type, and
/// Kube-OVN's, so Kube-OVN NetworkAttachmentDefinitions work unchanged.
pub const OUR_TYPES: [&str; 3] = ["ferrovn-cni", "ferrovn", "kube-ovn"];

/// Upper bound for `agent_timeout_seconds`.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// How we were invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We are the interface plugin: the agent creates and plumbs the pod interface.
    Interface,
    /// Another plugin (macvlan, bridge, ...) delegated IPAM to us: addresses only.
    IpamOnly,
}

/// The parts of the network configuration the plugin understands; the rest travels raw.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub plugin_type: String,
    pub mode: Mode,
    pub server_socket: PathBuf,
    pub provider: Option<String>,
    /// IPAM-only mode: the FerrOVN subnet to allocate from (`ipam.subnet`).
    pub subnet: Option<String>,
    pub mtu: Option<u32>,
    /// SR-IOV: `runtimeConfig.deviceID`, else top-level `deviceID` (as Multus passes it).
    pub device_id: Option<String>,
    pub vhost_user: Option<VhostUser>,
    /// `agent_timeout_seconds`: overrides every per-command default.
    pub timeout: Option<Duration>,
    /// `prevResult`, unparsed: each command decides how strict to be.
    pub prev_result: Option<Value>,
    /// GC: `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<AttachmentKey>>,
    /// The whole document as received.
    pub raw: Value,
}

fn invalid(field: &str, reason: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_NETCONF,
        format!("invalid network configuration: {field}"),
        reason.into(),
    )
}

/// Best-effort read of `cniVersion`, for answering VERSION and for the version stamped on
/// errors. Never fails.
pub fn sniff_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str()?.parse().ok()
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        if stdin.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(CniError::new(
                code::DECODE_FAILURE,
                "network configuration missing on stdin",
                "the runtime must stream the JSON network configuration on stdin",
            ));
        }
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "network configuration on stdin is not valid JSON",
                e.to_string(),
            )
        })?;
        let obj = raw.as_object().ok_or_else(|| {
            CniError::new(
                code::DECODE_FAILURE,
                "network configuration on stdin is not a JSON object",
                format!("got {}", describe(&raw)),
            )
        })?;
        let cni_version = parse_version(obj)?;
        let name = opt_str(obj, "name", "")
            .map_err(|e| invalid("name", e.reason))?
            .ok_or_else(|| invalid("name", "missing"))?;
        let plugin_type = opt_str(obj, "type", "")
            .map_err(|e| invalid("type", e.reason))?
            .ok_or_else(|| invalid("type", "missing"))?;

        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                return Err(invalid(
                    "ipam",
                    format!("expected an object, got {}", describe(other)),
                ));
            }
        };
        let ipam_type = match ipam {
            Some(o) => opt_str(o, "type", "ipam").map_err(|e| invalid("ipam.type", e.reason))?,
            None => None,
        };
        let ours = |t: &str| OUR_TYPES.contains(&t);
        let mode = match &ipam_type {
            Some(t) if ours(t) && !ours(&plugin_type) => Mode::IpamOnly,
            _ => Mode::Interface,
        };

        // In IPAM-only mode the `ipam` section is ours and wins; the top level belongs to
        // the delegating plugin but may still carry our keys.
        let lookup_str = |key: &str| -> Result<Option<String>, CniError> {
            if mode == Mode::IpamOnly
                && let Some(o) = ipam
                && let Some(v) = opt_str(o, key, "ipam").map_err(|e| invalid(&e.field, e.reason))?
            {
                return Ok(Some(v));
            }
            opt_str(obj, key, "").map_err(|e| invalid(&e.field, e.reason))
        };

        let server_socket = match lookup_str("server_socket")? {
            None => PathBuf::from(DEFAULT_SERVER_SOCKET),
            Some(s) if s.is_empty() => PathBuf::from(DEFAULT_SERVER_SOCKET),
            Some(s) => {
                let p = PathBuf::from(&s);
                if !p.is_absolute() {
                    return Err(invalid(
                        "server_socket",
                        format!("{s:?} is not an absolute path"),
                    ));
                }
                if s.len() >= 108 {
                    return Err(invalid(
                        "server_socket",
                        format!(
                            "{s:?} is {} bytes; unix socket paths must be under 108",
                            s.len()
                        ),
                    ));
                }
                p
            }
        };
        let provider = lookup_str("provider")?.filter(|s| !s.is_empty());
        let subnet = match (mode, ipam) {
            (Mode::IpamOnly, Some(o)) => opt_str(o, "subnet", "ipam")
                .map_err(|e| invalid(&e.field, e.reason))?
                .filter(|s| !s.is_empty()),
            _ => None,
        };

        let mtu = opt_u32(obj, "mtu", "").map_err(|e| invalid("mtu", e.reason))?;
        if let Some(m) = mtu
            && !(68..=65535).contains(&m)
        {
            return Err(invalid("mtu", format!("{m} is outside 68..=65535")));
        }

        let runtime_config = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                return Err(invalid(
                    "runtimeConfig",
                    format!("expected an object, got {}", describe(other)),
                ));
            }
        };
        let device_id = match runtime_config
            .map(|rc| opt_str(rc, "deviceID", "runtimeConfig"))
            .transpose()
            .map_err(|e| invalid(&e.field, e.reason))?
            .flatten()
        {
            Some(d) => Some(d),
            None => opt_str(obj, "deviceID", "").map_err(|e| invalid("deviceID", e.reason))?,
        }
        .filter(|s| !s.is_empty());

        let vhost_user = parse_vhost_user(obj)?;
        let timeout = parse_timeout(obj)?;
        let prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();
        let valid_attachments = parse_valid_attachments(obj)?;

        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            mode,
            server_socket,
            provider,
            subnet,
            mtu,
            device_id,
            vhost_user,
            timeout,
            prev_result,
            valid_attachments,
            raw,
        })
    }
}

fn parse_version(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
    let supported = || {
        SUPPORTED_VERSIONS
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match obj.get("cniVersion") {
        None | Some(Value::Null) => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version: cniVersion missing",
            format!(
                "a missing cniVersion means 0.1.0; supported: {}",
                supported()
            ),
        )),
        Some(Value::String(s)) => s.parse().map_err(|()| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("incompatible CNI version: cniVersion {s:?}"),
                format!("supported: {}", supported()),
            )
        }),
        Some(other) => Err(CniError::new(
            code::DECODE_FAILURE,
            "cniVersion is not a string",
            format!("got {}", describe(other)),
        )),
    }
}

fn parse_vhost_user(obj: &Map<String, Value>) -> Result<Option<VhostUser>, CniError> {
    let get = |k: &str| {
        opt_str(obj, k, "")
            .map_err(|e| invalid(k, e.reason))
            .map(|v| v.filter(|s| !s.is_empty()))
    };
    let volume = get("vhost_user_socket_volume_name")?;
    let socket = get("vhost_user_socket_name")?;
    let consumption = get("vhost_user_socket_consumption")?;
    if volume.is_none() && socket.is_none() && consumption.is_none() {
        return Ok(None);
    }
    // The socket name becomes a file name inside the pod's volume on the host.
    for (field, value) in [
        ("vhost_user_socket_volume_name", &volume),
        ("vhost_user_socket_name", &socket),
    ] {
        if let Some(v) = value
            && (v.contains('/') || v == "." || v == ".." || v.contains('\0'))
        {
            return Err(invalid(
                field,
                format!("{v:?} must be a plain name (no '/', not '.' or '..')"),
            ));
        }
    }
    Ok(Some(VhostUser {
        socket_volume_name: volume,
        socket_name: socket,
        socket_consumption: consumption,
    }))
}

fn parse_timeout(obj: &Map<String, Value>) -> Result<Option<Duration>, CniError> {
    match obj.get("agent_timeout_seconds") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s > 0.0 && s <= MAX_TIMEOUT_SECONDS as f64 => {
                Ok(Some(Duration::from_secs_f64(s)))
            }
            _ => Err(invalid(
                "agent_timeout_seconds",
                format!("{n} is outside (0, {MAX_TIMEOUT_SECONDS}]"),
            )),
        },
        Some(other) => Err(invalid(
            "agent_timeout_seconds",
            format!("expected a number of seconds, got {}", describe(other)),
        )),
    }
}

fn parse_valid_attachments(
    obj: &Map<String, Value>,
) -> Result<Option<Vec<AttachmentKey>>, CniError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let list = match obj.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(invalid(
                KEY,
                format!("expected an array, got {}", describe(other)),
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("{KEY}[{i}]");
        let o = item
            .as_object()
            .ok_or_else(|| invalid(&path, format!("expected an object, got {}", describe(item))))?;
        let container_id = opt_str(o, "containerID", &path)
            .map_err(|e| invalid(&e.field, e.reason))?
            .ok_or_else(|| invalid(&format!("{path}.containerID"), "missing"))?;
        let ifname = opt_str(o, "ifname", &path)
            .map_err(|e| invalid(&e.field, e.reason))?
            .ok_or_else(|| invalid(&format!("{path}.ifname"), "missing"))?;
        out.push(AttachmentKey {
            container_id,
            ifname,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn interface_mode_with_our_keys() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "ovn", "type": "ferrovn-cni",
            "server_socket": "/tmp/x.sock", "provider": "ovn", "mtu": 1400,
            "vhost_user_socket_volume_name": "vhu", "vhost_user_socket_name": "sock0",
            "runtimeConfig": {"deviceID": "0000:04:00.5"}, "deviceID": "ignored",
            "agent_timeout_seconds": 2.5,
            "ipam": {"type": "ferrovn"}
        }))
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Interface,
            "our own type with our IPAM stays interface mode"
        );
        assert_eq!(c.server_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.device_id.as_deref(), Some("0000:04:00.5"));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        let vu = c.vhost_user.unwrap();
        assert_eq!(vu.socket_volume_name.as_deref(), Some("vhu"));
        assert_eq!(vu.socket_name.as_deref(), Some("sock0"));
    }

    #[test]
    fn ipam_mode_reads_the_ipam_section() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "macnet", "type": "macvlan", "master": "eth1",
            "provider": "top-level-loses",
            "ipam": {"type": "ferrovn", "subnet": "net1", "provider": "macnet.default",
                     "server_socket": "/tmp/agent.sock"}
        }))
        .unwrap();
        assert_eq!(c.mode, Mode::IpamOnly);
        assert_eq!(c.subnet.as_deref(), Some("net1"));
        assert_eq!(c.provider.as_deref(), Some("macnet.default"));
        assert_eq!(c.server_socket, PathBuf::from("/tmp/agent.sock"));
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                             "ipam": {"type": "kube-ovn"}}))
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::IpamOnly,
            "Kube-OVN's IPAM type name is honoured"
        );
        assert_eq!(c.server_socket, PathBuf::from(DEFAULT_SERVER_SOCKET));
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                             "ipam": {"type": "host-local"}}))
        .unwrap();
        assert_eq!(c.mode, Mode::Interface);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"name": "n", "type": "t"}),
                code::INCOMPATIBLE_VERSION,
                "cniVersion",
            ),
            (
                json!({"cniVersion": "0.2.0", "name": "n", "type": "t"}),
                code::INCOMPATIBLE_VERSION,
                "0.2.0",
            ),
            (
                json!({"cniVersion": 1, "name": "n", "type": "t"}),
                code::DECODE_FAILURE,
                "cniVersion",
            ),
            (
                json!({"cniVersion": "1.1.0", "type": "t"}),
                code::INVALID_NETCONF,
                "name",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n"}),
                code::INVALID_NETCONF,
                "type",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "mtu": "1400"}),
                code::INVALID_NETCONF,
                "mtu",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "mtu": 20}),
                code::INVALID_NETCONF,
                "mtu",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "server_socket": "rel.sock"}),
                code::INVALID_NETCONF,
                "server_socket",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "vhost_user_socket_name": "../x"}),
                code::INVALID_NETCONF,
                "vhost_user_socket_name",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "agent_timeout_seconds": 0}),
                code::INVALID_NETCONF,
                "agent_timeout_seconds",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "ipam": []}),
                code::INVALID_NETCONF,
                "ipam",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
                code::INVALID_NETCONF,
                "cni.dev/valid-attachments[0].containerID",
            ),
            (json!([1, 2]), code::DECODE_FAILURE, "not a JSON object"),
        ];
        for (doc, want_code, needle) in cases {
            let e = parse(doc.clone()).unwrap_err();
            assert_eq!(e.code, want_code, "{doc}: {e}");
            assert!(
                e.msg.contains(needle) || e.details.contains(needle),
                "{doc}: {e} should mention {needle}"
            );
        }
        assert_eq!(NetConf::parse(b"").unwrap_err().code, code::DECODE_FAILURE);
        assert_eq!(
            NetConf::parse(b"{\"cniV").unwrap_err().code,
            code::DECODE_FAILURE
        );
    }

    #[test]
    fn sniff_version_never_fails() {
        assert_eq!(
            sniff_version(b"{\"cniVersion\":\"0.4.0\"}"),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(sniff_version(b"garbage"), None);
        assert_eq!(sniff_version(b""), None);
    }
}
