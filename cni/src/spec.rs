//! CNI specification types: versions, error codes, the error object and the ADD result.
//!
//! The result type is kept in one canonical shape (spec 1.1.0) and rendered on demand for the
//! version the runtime asked for, because the shapes differ: 0.3.x/0.4.0 carry `version` on
//! every IP, 1.1.0 added interface `mtu`/`socketPath`/`pciID` and route
//! `mtu`/`advmss`/`priority`/`table`/`scope`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Versions of the CNI spec this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

/// A CNI spec version we support. Ordered by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Whether the CHECK command exists in this version (introduced in 0.4.0).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// Whether STATUS and GC exist in this version (introduced in 1.1.0).
    pub fn has_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Results of 0.3.x and 0.4.0 carry `"version": "4"|"6"` on each IP; 1.0.0 dropped it.
    fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// Fields added to interfaces and routes in 1.1.0.
    fn has_extended_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        SUPPORTED_VERSIONS
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or(())
    }
}

/// Well-known CNI error codes (spec section 5, "Error") and ours (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETCONF: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available and existing containers may have limited connectivity.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// The agent failed the request without a more specific code.
    pub const AGENT_FAILED: u32 = 100;
    /// The agent's reply could not be decoded or broke the protocol.
    pub const AGENT_BAD_REPLY: u32 = 101;
    /// The agent did not answer within the configured timeout.
    pub const AGENT_TIMEOUT: u32 = 102;
    // 110..=199 are left to the node agent for its own conditions.
}

/// The spec's error object, printed on stdout with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error as the JSON document a runtime expects.
    pub fn to_json(&self, version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version));
        m.insert("code".into(), Value::from(self.code));
        m.insert("msg".into(), Value::from(self.msg.clone()));
        m.insert("details".into(), Value::from(self.details.clone()));
        Value::Object(m)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// An interface address or route destination in CIDR notation ("10.16.0.5/16").
/// Host bits may be set: CNI results carry the interface address, not the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// IP address family, derived from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("prefix length {prefix_len} exceeds {max}"));
        }
        Ok(Cidr { addr, prefix_len })
    }

    pub fn family(&self) -> IpFamily {
        if self.addr.is_ipv4() {
            IpFamily::Ipv4
        } else {
            IpFamily::Ipv6
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        Cidr::new(addr, len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One interface of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container, `None` for host interfaces.
    pub sandbox: Option<String>,
    /// vhost-user and similar: the socket that stands for this interface (1.1.0).
    pub socket_path: Option<String>,
    /// SR-IOV: the PCI address of the device (1.1.0).
    pub pci_id: Option<String>,
}

/// One IP configuration of an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
}

impl IpConfig {
    pub fn family(&self) -> IpFamily {
        self.address.family()
    }
}

/// One route of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub dst: Option<Cidr>,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

/// DNS settings of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The result of ADD (or of an IPAM plugin), version-independent.
///
/// On the plugin<->agent wire it is serialized in the 1.1.0 shape (without `cniVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A field of a JSON document that failed validation, named by its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl CniResult {
    /// Render for the runtime in the shape of `version`. `ipam_only` drops `interfaces` and
    /// the per-IP `interface` index, as the spec asks of delegated IPAM plugins.
    pub fn to_json(&self, version: CniVersion, ipam_only: bool) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version.as_str()));
        let mut body = self.body_json(version, ipam_only);
        m.append(&mut body);
        Value::Object(m)
    }

    fn body_json(&self, version: CniVersion, ipam_only: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if !ipam_only {
            let ifaces = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = Map::new();
                    o.insert("name".into(), Value::from(i.name.clone()));
                    put_opt_str(&mut o, "mac", &i.mac);
                    put_opt_str(&mut o, "sandbox", &i.sandbox);
                    if version.has_extended_fields() {
                        put_opt_u32(&mut o, "mtu", i.mtu);
                        put_opt_str(&mut o, "socketPath", &i.socket_path);
                        put_opt_str(&mut o, "pciID", &i.pci_id);
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("interfaces".into(), Value::Array(ifaces));
        }
        let ips = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_carry_version() {
                    let v = match ip.family() {
                        IpFamily::Ipv4 => "4",
                        IpFamily::Ipv6 => "6",
                    };
                    o.insert("version".into(), Value::from(v));
                }
                o.insert("address".into(), Value::from(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), Value::from(gw.to_string()));
                }
                if !ipam_only && let Some(idx) = ip.interface {
                    o.insert("interface".into(), Value::from(idx));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("ips".into(), Value::Array(ips));
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                if let Some(dst) = r.dst {
                    o.insert("dst".into(), Value::from(dst.to_string()));
                }
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), Value::from(gw.to_string()));
                }
                if version.has_extended_fields() {
                    put_opt_u32(&mut o, "mtu", r.mtu);
                    put_opt_u32(&mut o, "advmss", r.advmss);
                    put_opt_u32(&mut o, "priority", r.priority);
                    put_opt_u32(&mut o, "table", r.table);
                    put_opt_u32(&mut o, "scope", r.scope);
                }
                Value::Object(o)
            })
            .collect();
        m.insert("routes".into(), Value::Array(routes));
        let mut dns = Map::new();
        if !self.dns.nameservers.is_empty() {
            dns.insert("nameservers".into(), str_array(&self.dns.nameservers));
        }
        put_opt_str(&mut dns, "domain", &self.dns.domain);
        if !self.dns.search.is_empty() {
            dns.insert("search".into(), str_array(&self.dns.search));
        }
        if !self.dns.options.is_empty() {
            dns.insert("options".into(), str_array(&self.dns.options));
        }
        m.insert("dns".into(), Value::Object(dns));
        m
    }

    /// Parse a result of any supported version (`prevResult`, or the agent's reply).
    /// Errors name the offending field below `path`.
    pub fn from_json(value: &Value, path: &str) -> Result<CniResult, FieldError> {
        let obj = value
            .as_object()
            .ok_or_else(|| FieldError::new(path, "expected a JSON object"))?;
        let mut result = CniResult::default();
        for (i, v) in opt_array(obj, "interfaces", path)?.iter().enumerate() {
            let p = format!("{path}.interfaces[{i}]");
            let o = v
                .as_object()
                .ok_or_else(|| FieldError::new(&p, "expected a JSON object"))?;
            result.interfaces.push(Interface {
                name: req_str(o, "name", &p)?,
                mac: opt_str(o, "mac", &p)?,
                mtu: opt_u32(o, "mtu", &p)?,
                sandbox: opt_str(o, "sandbox", &p)?,
                socket_path: opt_str(o, "socketPath", &p)?,
                pci_id: opt_str(o, "pciID", &p)?,
            });
        }
        for (i, v) in opt_array(obj, "ips", path)?.iter().enumerate() {
            let p = format!("{path}.ips[{i}]");
            let o = v
                .as_object()
                .ok_or_else(|| FieldError::new(&p, "expected a JSON object"))?;
            let address: Cidr = req_str(o, "address", &p)?
                .parse()
                .map_err(|e| FieldError::new(format!("{p}.address"), e))?;
            let gateway = opt_ip(o, "gateway", &p)?;
            if let Some(gw) = gateway
                && gw.is_ipv4() != address.addr.is_ipv4()
            {
                return Err(FieldError::new(
                    format!("{p}.gateway"),
                    format!("{gw} is not of the same family as address {address}"),
                ));
            }
            if let Some(v) = opt_str(o, "version", &p)? {
                let expected = if address.addr.is_ipv4() { "4" } else { "6" };
                if v != expected {
                    return Err(FieldError::new(
                        format!("{p}.version"),
                        format!("{v:?} does not match address {address}"),
                    ));
                }
            }
            let interface = match opt_u32(o, "interface", &p)? {
                None => None,
                Some(idx) => {
                    let idx = idx as usize;
                    if idx >= result.interfaces.len() {
                        return Err(FieldError::new(
                            format!("{p}.interface"),
                            format!(
                                "index {idx} is out of range ({} interfaces)",
                                result.interfaces.len()
                            ),
                        ));
                    }
                    Some(idx)
                }
            };
            result.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for (i, v) in opt_array(obj, "routes", path)?.iter().enumerate() {
            let p = format!("{path}.routes[{i}]");
            let o = v
                .as_object()
                .ok_or_else(|| FieldError::new(&p, "expected a JSON object"))?;
            let dst = match opt_str(o, "dst", &p)? {
                None => None,
                Some(s) => Some(
                    s.parse::<Cidr>()
                        .map_err(|e| FieldError::new(format!("{p}.dst"), e))?,
                ),
            };
            result.routes.push(Route {
                dst,
                gw: opt_ip(o, "gw", &p)?,
                mtu: opt_u32(o, "mtu", &p)?,
                advmss: opt_u32(o, "advmss", &p)?,
                priority: opt_u32(o, "priority", &p)?,
                table: opt_u32(o, "table", &p)?,
                scope: opt_u32(o, "scope", &p)?,
            });
        }
        match obj.get("dns") {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => {
                let p = format!("{path}.dns");
                result.dns = Dns {
                    nameservers: opt_str_array(o, "nameservers", &p)?,
                    domain: opt_str(o, "domain", &p)?,
                    search: opt_str_array(o, "search", &p)?,
                    options: opt_str_array(o, "options", &p)?,
                };
            }
            Some(_) => {
                return Err(FieldError::new(
                    format!("{path}.dns"),
                    "expected a JSON object",
                ));
            }
        }
        Ok(result)
    }

    /// Append `other` (this plugin's own attachment) after `self` (a `prevResult`),
    /// shifting `other`'s interface indexes so they stay valid.
    pub fn chain(mut self, other: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(other.routes);
        if !other.dns.is_empty() {
            self.dns = other.dns;
        }
        self
    }

    /// Check that every `interface` index points into `interfaces`.
    pub fn validate_indexes(&self, path: &str) -> Result<(), FieldError> {
        for (i, ip) in self.ips.iter().enumerate() {
            if let Some(idx) = ip.interface
                && idx >= self.interfaces.len()
            {
                return Err(FieldError::new(
                    format!("{path}.ips[{i}].interface"),
                    format!(
                        "index {idx} is out of range ({} interfaces)",
                        self.interfaces.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Serialize for CniResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Value::Object(self.body_json(CniVersion::LATEST, false)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for CniResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        CniResult::from_json(&v, "result").map_err(serde::de::Error::custom)
    }
}

fn put_opt_str(o: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        o.insert(key.into(), Value::from(s.clone()));
    }
}

fn put_opt_u32(o: &mut Map<String, Value>, key: &str, v: Option<u32>) {
    if let Some(n) = v {
        o.insert(key.into(), Value::from(n));
    }
}

fn str_array(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::from).collect())
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A required string member.
pub(crate) fn req_str(o: &Map<String, Value>, key: &str, path: &str) -> Result<String, FieldError> {
    opt_str(o, key, path)?.ok_or_else(|| FieldError::new(field(path, key), "missing"))
}

/// An optional string member; `null` counts as absent.
pub(crate) fn opt_str(
    o: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(FieldError::new(
            field(path, key),
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

pub(crate) fn opt_u32(
    o: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u32>, FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                FieldError::new(
                    field(path, key),
                    format!("{n} is not an unsigned 32-bit integer"),
                )
            }),
        Some(other) => Err(FieldError::new(
            field(path, key),
            format!("expected an unsigned integer, got {}", describe(other)),
        )),
    }
}

fn opt_ip(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, FieldError> {
    match opt_str(o, key, path)? {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| FieldError::new(field(path, key), format!("{s:?} is not an IP address"))),
    }
}

fn opt_array<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a [Value], FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(FieldError::new(
            field(path, key),
            format!("expected an array, got {}", describe(other)),
        )),
    }
}

fn opt_str_array(o: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<String>, FieldError> {
    opt_array(o, key, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(FieldError::new(
                format!("{}[{i}]", field(path, key)),
                format!("expected a string, got {}", describe(other)),
            )),
        })
        .collect()
}

/// A short description of a JSON value for error messages (never the whole value).
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 64 => format!("string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:00:00:10:00:05".into()),
                mtu: Some(1400),
                sandbox: Some("/run/netns/p1".into()),
                socket_path: Some("/var/run/vhost/sock".into()),
                pci_id: None,
            }],
            ips: vec![
                IpConfig {
                    address: "10.16.0.5/16".parse().unwrap(),
                    gateway: Some("10.16.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00:10:16::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                dst: Some("0.0.0.0/0".parse().unwrap()),
                gw: Some("10.16.0.1".parse().unwrap()),
                mtu: Some(1400),
                ..Route::default()
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                search: vec!["svc.cluster.local".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn renders_1_1_0_with_extended_fields() {
        let v = sample().to_json(CniVersion::V1_1_0, false);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][0]["mtu"], 1400);
        assert_eq!(v["interfaces"][0]["socketPath"], "/var/run/vhost/sock");
        assert_eq!(v["ips"][0]["address"], "10.16.0.5/16");
        assert_eq!(v["ips"][0]["interface"], 0);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["mtu"], 1400);
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn renders_1_0_0_without_1_1_fields() {
        let v = sample().to_json(CniVersion::V1_0_0, false);
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["interfaces"][0].get("socketPath").is_none());
        assert!(v["routes"][0].get("mtu").is_none());
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn renders_0_4_0_and_0_3_x_with_ip_version() {
        for ver in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let v = sample().to_json(ver, false);
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert!(v["interfaces"][0].get("socketPath").is_none());
        }
    }

    #[test]
    fn ipam_rendering_omits_interfaces_and_indexes() {
        let v = sample().to_json(CniVersion::V1_0_0, true);
        assert!(v.get("interfaces").is_none());
        assert!(v["ips"][0].get("interface").is_none());
        assert_eq!(v["ips"][0]["gateway"], "10.16.0.1");
    }

    #[test]
    fn every_version_parses_back_to_the_same_core() {
        for ver in SUPPORTED_VERSIONS {
            let v = sample().to_json(ver, false);
            let back = CniResult::from_json(&v, "prevResult").unwrap();
            assert_eq!(back.ips, sample().ips, "{ver}");
            assert_eq!(back.interfaces[0].mac, sample().interfaces[0].mac);
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        let bad =
            json!({"interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.5","interface":0}]});
        let e = CniResult::from_json(&bad, "prevResult").unwrap_err();
        assert_eq!(e.field, "prevResult.ips[0].address");
        let bad = json!({"interfaces":[],"ips":[{"address":"10.0.0.5/24","interface":3}]});
        let e = CniResult::from_json(&bad, "prevResult").unwrap_err();
        assert_eq!(e.field, "prevResult.ips[0].interface");
        let bad = json!({"ips":[{"version":"6","address":"10.0.0.5/24"}]});
        let e = CniResult::from_json(&bad, "prevResult").unwrap_err();
        assert_eq!(e.field, "prevResult.ips[0].version");
        let bad = json!({"ips":[{"address":"10.0.0.5/33"}]});
        assert!(CniResult::from_json(&bad, "p").is_err());
        let bad = json!({"ips":[{"address":"10.0.0.5/24","gateway":"fd00::1"}]});
        assert_eq!(
            CniResult::from_json(&bad, "p").unwrap_err().field,
            "p.ips[0].gateway"
        );
    }

    #[test]
    fn chain_shifts_interface_indexes() {
        let prev = sample();
        let ours = sample();
        let all = prev.chain(ours);
        assert_eq!(all.interfaces.len(), 2);
        assert_eq!(all.ips[2].interface, Some(1));
        all.validate_indexes("r").unwrap();
    }

    #[test]
    fn cidr_round_trip_and_rejects() {
        let c: Cidr = "fd00::5/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::5/64");
        assert_eq!(c.family(), IpFamily::Ipv6);
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/x",
            "x/24",
            "fd00::1/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!("0.4.0".parse::<CniVersion>(), Ok(CniVersion::V0_4_0));
        assert!("0.2.0".parse::<CniVersion>().is_err());
        assert!("1.2.0".parse::<CniVersion>().is_err());
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(!CniVersion::V1_0_0.has_status_and_gc());
    }
}
