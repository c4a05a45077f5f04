//! The runtime's environment variables: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`. Pure: reads through a lookup function.

use std::collections::BTreeMap;

use crate::spec::{CniError, code};

/// The CNI operation requested by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Variables the spec requires for this command (beyond `CNI_COMMAND`). `CNI_PATH` is
    /// listed as required for GC/STATUS by the spec, but this plugin never execs another
    /// plugin in those commands, so it does not insist.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }
}

/// Pod identity and other keys from `CNI_ARGS` ("K=V;K2=V2").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Every pair as given (including unknown ones the runtime allowed with IgnoreUnknown).
    pub all: BTreeMap<String, String>,
}

const KNOWN_ARGS: [&str; 5] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

impl CniArgs {
    /// Parse `CNI_ARGS`. Every `;`-separated part must be exactly `KEY=VALUE`; keys we do not
    /// know are an error unless `IgnoreUnknown` is `1`/`true` (as the reference library does).
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut args = CniArgs::default();
        if raw.is_empty() {
            return Ok(args);
        }
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in raw.split(';') {
            let mut parts = pair.split('=');
            let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_ARGS: invalid pair",
                    format!("{pair:?} is not KEY=VALUE (CNI_ARGS is \"K1=V1;K2=V2\")"),
                ));
            };
            if key.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_ARGS: empty key",
                    format!("in pair {pair:?}"),
                ));
            }
            match key {
                "IgnoreUnknown" => {
                    ignore_unknown = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(CniError::new(
                                code::INVALID_ENV,
                                "CNI_ARGS: IgnoreUnknown is not a boolean",
                                format!("value {value:?}; expected 1, 0, true or false"),
                            ));
                        }
                    }
                }
                "K8S_POD_NAMESPACE" => args.pod_namespace = non_empty(value),
                "K8S_POD_NAME" => args.pod_name = non_empty(value),
                "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = non_empty(value),
                "K8S_POD_UID" => args.pod_uid = non_empty(value),
                _ => unknown.push(key.to_string()),
            }
            args.all.insert(key.to_string(), value.to_string());
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: unknown keys {}", unknown.join(", ")),
                format!(
                    "known keys are {}; add IgnoreUnknown=1 to pass others",
                    KNOWN_ARGS.join(", ")
                ),
            ));
        }
        Ok(args)
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: CniArgs,
    pub path: Option<String>,
}

/// Read `CNI_COMMAND` alone (so VERSION can be answered before anything else is checked).
pub fn command(env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match env("CNI_COMMAND") {
        None => Err(CniError::new(
            code::INVALID_ENV,
            "required environment variables missing: CNI_COMMAND",
            "CNI_COMMAND must be one of ADD, DEL, CHECK, STATUS, GC, VERSION",
        )),
        Some(s) if s.is_empty() => Err(CniError::new(
            code::INVALID_ENV,
            "required environment variables missing: CNI_COMMAND",
            "CNI_COMMAND is empty",
        )),
        Some(s) => Command::parse(&s).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND: unknown command",
                format!(
                    "{:?}; expected one of ADD, DEL, CHECK, STATUS, GC, VERSION",
                    truncate(&s)
                ),
            )
        }),
    }
}

impl Invocation {
    /// Read and validate the environment for `command`.
    pub fn from_env(
        command: Command,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Invocation, CniError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let missing: Vec<&str> = command
            .required()
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
                format!("CNI_COMMAND={} needs them", command.as_str()),
            ));
        }
        let container_id = get("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        let ifname = get("CNI_IFNAME");
        if let Some(name) = &ifname {
            validate_ifname(name)?;
        }
        let args = CniArgs::parse(&env("CNI_ARGS").unwrap_or_default())?;
        Ok(Invocation {
            command,
            container_id,
            netns: get("CNI_NETNS"),
            ifname,
            args,
            path: get("CNI_PATH"),
        })
    }
}

/// Spec: starts with an alphanumeric, then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            "CNI_CONTAINERID: invalid characters",
            format!(
                "{:?}; it must start with a letter or digit followed by letters, digits, '_', '.' or '-'",
                truncate(id)
            ),
        ))
    }
}

/// Spec: a Linux interface name: 1..=15 bytes, not "." or "..", no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let reason = if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not interface names")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => Err(CniError::new(
            code::INVALID_ENV,
            "CNI_IFNAME: invalid interface name",
            format!("{:?}: {r}", truncate(name)),
        )),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn kubelet_style_args_parse() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        let e = CniArgs::parse("FOO=bar;K8S_POD_NAME=x").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("FOO"), "{e}");
        let a = CniArgs::parse("FOO=bar;IgnoreUnknown=true").unwrap();
        assert_eq!(a.all.get("FOO").map(String::as_str), Some("bar"));
    }

    #[test]
    fn malformed_args_are_env_errors() {
        for bad in ["FOO", "A=B=C", "=x", "A=B;", "IgnoreUnknown=maybe"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{bad}");
            assert!(e.msg.starts_with("CNI_ARGS"), "{bad}: {e}");
        }
    }

    #[test]
    fn add_requires_netns_ifname_container() {
        let e = Invocation::from_env(Command::Add, &env_of(&[("CNI_COMMAND", "ADD")])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        for v in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            assert!(e.msg.contains(v), "{e}");
        }
        let e = Invocation::from_env(
            Command::Del,
            &env_of(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]),
        );
        assert!(e.is_ok(), "DEL does not need CNI_NETNS");
    }

    #[test]
    fn container_id_and_ifname_validation() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        for bad in ["", "-abc", "a b", "a/b"] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["a23456789012345x", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_parsing() {
        assert_eq!(command(&env_of(&[("CNI_COMMAND", "GC")])), Ok(Command::Gc));
        assert_eq!(command(&env_of(&[])).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(
            command(&env_of(&[("CNI_COMMAND", "add")]))
                .unwrap_err()
                .code,
            code::INVALID_ENV
        );
    }
}
