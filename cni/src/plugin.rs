//! The plugin's decision core: environment + stdin in, stdout + exit code out. The node
//! agent sits behind the [`Agent`] trait so the core is tested without processes.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::invocation::{self, Command, Invocation};
use crate::netconf::{Mode, NetConf, sniff_version};
use crate::protocol::{
    AttachmentRequest, CallError, GcRequest, PodIdentity, Request, Response, StatusRequest,
};
use crate::spec::{CniError, CniResult, CniVersion, SUPPORTED_VERSIONS, code};

/// How long each request may take by default. ADD waits for OVN to install the port.
pub fn default_timeout(request: &Request) -> Duration {
    Duration::from_secs(match request {
        Request::Add(_) | Request::IpamAdd(_) => 90,
        Request::Del(_) | Request::IpamDel(_) | Request::Gc(_) => 60,
        Request::Check(_) | Request::IpamCheck(_) => 30,
        Request::Status(_) => 5,
    })
}

/// Something that answers protocol requests (the node agent over its socket, or a fake).
pub trait Agent {
    fn call(
        &mut self,
        socket: &Path,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError>;
}

/// What the process should print on stdout and exit with, plus one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
    pub log: Option<String>,
}

impl Outcome {
    fn success(stdout: Vec<u8>) -> Outcome {
        Outcome {
            stdout,
            exit_code: 0,
            log: None,
        }
    }

    fn failure(version: &str, command: Option<Command>, err: &CniError) -> Outcome {
        let mut stdout = serde_json::to_vec(&err.to_json(version)).unwrap_or_default();
        stdout.push(b'\n');
        let cmd = command.map(Command::as_str).unwrap_or("(no command)");
        Outcome {
            stdout,
            exit_code: 1,
            log: Some(format!("ferrovn-cni: {cmd} failed: {err}")),
        }
    }
}

fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Run one invocation to completion. Never panics on any input.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8], agent: &mut dyn Agent) -> Outcome {
    let version_for_errors = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
    let command = match invocation::command(env) {
        Ok(c) => c,
        Err(e) => return Outcome::failure(version_for_errors.as_str(), None, &e),
    };
    if command == Command::Version {
        return Outcome::success(version_json(stdin));
    }
    match run_command(command, env, stdin, agent) {
        Ok(stdout) => Outcome::success(stdout),
        Err(e) => Outcome::failure(version_for_errors.as_str(), Some(command), &e),
    }
}

/// VERSION: echo the requested `cniVersion` when we know it, list what we support.
fn version_json(stdin: &[u8]) -> Vec<u8> {
    let version = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
    let mut m = Map::new();
    m.insert("cniVersion".into(), Value::from(version.as_str()));
    m.insert(
        "supportedVersions".into(),
        Value::Array(
            SUPPORTED_VERSIONS
                .iter()
                .map(|v| Value::from(v.as_str()))
                .collect(),
        ),
    );
    to_line(&Value::Object(m))
}

fn run_command(
    command: Command,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    agent: &mut dyn Agent,
) -> Result<Vec<u8>, CniError> {
    let inv = Invocation::from_env(command, env)?;
    let conf = NetConf::parse(stdin)?;
    let v = conf.cni_version;
    match command {
        Command::Check if !v.has_check() => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {v} does not allow CHECK"),
                "CHECK exists since 0.4.0",
            ));
        }
        Command::Status | Command::Gc if !v.has_status_and_gc() => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {v} does not allow {}", command.as_str()),
                "STATUS and GC exist since 1.1.0",
            ));
        }
        _ => {}
    }
    match command {
        Command::Add => add(&inv, &conf, agent),
        Command::Del => del(&inv, &conf, agent),
        Command::Check => check(&inv, &conf, agent),
        Command::Status => status(&conf, agent),
        Command::Gc => gc(&conf, agent),
        Command::Version => Ok(version_json(stdin)),
    }
}

/// Build the attachment part of a request from env + netconf.
fn attachment(
    inv: &Invocation,
    conf: &NetConf,
    need_pod: bool,
) -> Result<AttachmentRequest, CniError> {
    let pod = match (&inv.args.pod_namespace, &inv.args.pod_name) {
        (Some(ns), Some(name)) => Some(PodIdentity {
            namespace: ns.clone(),
            name: name.clone(),
            uid: inv.args.pod_uid.clone(),
            infra_container_id: inv.args.pod_infra_container_id.clone(),
        }),
        _ if need_pod => {
            let missing: Vec<&str> = [
                ("K8S_POD_NAMESPACE", &inv.args.pod_namespace),
                ("K8S_POD_NAME", &inv.args.pod_name),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {} missing", missing.join(", ")),
                "the node agent finds the pod's allocation by namespace and name; \
                 Kubernetes runtimes pass them in CNI_ARGS",
            ));
        }
        _ => None,
    };
    Ok(AttachmentRequest {
        cni_version: conf.cni_version.as_str().to_string(),
        network: conf.name.clone(),
        container_id: inv.container_id.clone().unwrap_or_default(),
        netns: inv.netns.clone(),
        ifname: inv.ifname.clone().unwrap_or_default(),
        pod,
        provider: conf.provider.clone(),
        subnet: conf.subnet.clone(),
        device_id: conf.device_id.clone(),
        mtu: conf.mtu,
        vhost_user: conf.vhost_user.clone(),
        cni_args: inv.args.all.clone(),
        prev_result: None,
        netconf: conf.raw.clone(),
    })
}

fn parse_prev_result(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .map(|v| {
            CniResult::from_json(v, "prevResult").map_err(|e| {
                CniError::new(
                    code::INVALID_NETCONF,
                    format!("invalid network configuration: {}", e.field),
                    e.reason,
                )
            })
        })
        .transpose()
}

fn add(inv: &Invocation, conf: &NetConf, agent: &mut dyn Agent) -> Result<Vec<u8>, CniError> {
    let mut req = attachment(inv, conf, true)?;
    let prev = match conf.mode {
        Mode::Interface => parse_prev_result(conf)?,
        Mode::IpamOnly => None,
    };
    req.prev_result = prev.clone();
    let request = match conf.mode {
        Mode::Interface => Request::Add(req),
        Mode::IpamOnly => Request::IpamAdd(req),
    };
    let result = match forward(conf, &request, agent)? {
        Some(r) => r,
        None => {
            return Err(CniError::new(
                code::AGENT_BAD_REPLY,
                "node agent replied to ADD without a result",
                format!("op {}", request.op()),
            ));
        }
    };
    let bad_reply = |what: String| {
        CniError::new(
            code::AGENT_BAD_REPLY,
            "node agent returned an invalid result",
            what,
        )
    };
    result
        .validate_indexes("result")
        .map_err(|e| bad_reply(e.to_string()))?;
    match conf.mode {
        Mode::Interface => {
            if result.interfaces.is_empty() {
                return Err(bad_reply("no interfaces in the result".into()));
            }
            let full = match prev {
                Some(p) => p.chain(result),
                None => result,
            };
            Ok(to_line(&full.to_json(conf.cni_version, false)))
        }
        Mode::IpamOnly => {
            if result.ips.is_empty() {
                return Err(bad_reply("no ips in the IPAM result".into()));
            }
            Ok(to_line(&result.to_json(conf.cni_version, true)))
        }
    }
}

fn del(inv: &Invocation, conf: &NetConf, agent: &mut dyn Agent) -> Result<Vec<u8>, CniError> {
    let mut req = attachment(inv, conf, false)?;
    // DEL is best effort: a prevResult we cannot read must not block the cleanup.
    req.prev_result = parse_prev_result(conf).ok().flatten();
    let request = match conf.mode {
        Mode::Interface => Request::Del(req),
        Mode::IpamOnly => Request::IpamDel(req),
    };
    match forward(conf, &request, agent) {
        Ok(_) => Ok(Vec::new()),
        // Already gone is success: DEL must be idempotent.
        Err(e) if e.code == code::UNKNOWN_CONTAINER => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn check(inv: &Invocation, conf: &NetConf, agent: &mut dyn Agent) -> Result<Vec<u8>, CniError> {
    let mut req = attachment(inv, conf, false)?;
    let prev = parse_prev_result(conf)?.ok_or_else(|| {
        CniError::new(
            code::INVALID_NETCONF,
            "invalid network configuration: prevResult missing",
            "CHECK needs prevResult, the result of the preceding ADD",
        )
    })?;
    if conf.mode == Mode::Interface {
        let ifname = req.ifname.as_str();
        let sandbox_iface = prev
            .interfaces
            .iter()
            .any(|i| i.name == ifname && i.sandbox.is_some());
        if !sandbox_iface {
            return Err(CniError::new(
                code::INVALID_NETCONF,
                "invalid network configuration: prevResult.interfaces",
                format!("no interface {ifname:?} with a sandbox in prevResult"),
            ));
        }
    }
    req.prev_result = Some(prev);
    let request = match conf.mode {
        Mode::Interface => Request::Check(req),
        Mode::IpamOnly => Request::IpamCheck(req),
    };
    forward(conf, &request, agent).map(|_| Vec::new())
}

fn status(conf: &NetConf, agent: &mut dyn Agent) -> Result<Vec<u8>, CniError> {
    let request = Request::Status(StatusRequest {
        cni_version: conf.cni_version.as_str().to_string(),
        network: conf.name.clone(),
        provider: conf.provider.clone(),
        ipam_only: conf.mode == Mode::IpamOnly,
        netconf: conf.raw.clone(),
    });
    match forward(conf, &request, agent) {
        Ok(_) => Ok(Vec::new()),
        // STATUS has its own vocabulary: anything that is not the agent's own 50/51 verdict
        // (unreachable, timed out, broken reply) means "cannot service ADD".
        Err(e) if e.code == code::NOT_AVAILABLE || e.code == code::NOT_AVAILABLE_DEGRADED => Err(e),
        Err(e) => Err(CniError::new(
            code::NOT_AVAILABLE,
            "plugin not available: node agent cannot service ADD",
            format!("{}: {}", e.msg, e.details),
        )),
    }
}

fn gc(conf: &NetConf, agent: &mut dyn Agent) -> Result<Vec<u8>, CniError> {
    // Without the list every attachment would look stale: refuse rather than wipe the node.
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_NETCONF,
            "invalid network configuration: cni.dev/valid-attachments missing",
            "GC needs the list of still-valid attachments",
        )
    })?;
    let request = Request::Gc(GcRequest {
        cni_version: conf.cni_version.as_str().to_string(),
        network: conf.name.clone(),
        provider: conf.provider.clone(),
        ipam_only: conf.mode == Mode::IpamOnly,
        valid_attachments: valid,
        netconf: conf.raw.clone(),
    });
    forward(conf, &request, agent).map(|_| Vec::new())
}

/// Send `request`, map every transport failure and agent error onto a CNI error.
fn forward(
    conf: &NetConf,
    request: &Request,
    agent: &mut dyn Agent,
) -> Result<Option<CniResult>, CniError> {
    let timeout = conf.timeout.unwrap_or_else(|| default_timeout(request));
    match agent.call(&conf.server_socket, request, timeout) {
        Ok(Response::Ok { result }) => Ok(result),
        Ok(Response::Error(mut e)) => {
            if e.code == 0 {
                e.code = code::AGENT_FAILED;
            }
            Err(e)
        }
        Err(e) => Err(call_error(e)),
    }
}

/// Map a transport failure onto a CNI error code.
pub fn call_error(e: CallError) -> CniError {
    let details = e.to_string();
    match e {
        CallError::Unavailable { .. } | CallError::Hangup { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            "try again later: node agent not available",
            details,
        ),
        CallError::Timeout { .. } => CniError::new(
            code::AGENT_TIMEOUT,
            "node agent timed out",
            format!(
                "{details}; raise agent_timeout_seconds in the network configuration if OVN is slow"
            ),
        ),
        CallError::Io { .. } => CniError::new(
            code::IO_FAILURE,
            "I/O failure talking to the node agent",
            details,
        ),
        CallError::Protocol { .. } => CniError::new(
            code::AGENT_BAD_REPLY,
            "node agent reply not understood",
            details,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Interface, IpConfig};
    use serde_json::json;
    use std::collections::HashMap;
    use std::io;

    type Reply = Box<dyn FnMut(&Request) -> Result<Response, CallError>>;

    struct Fake {
        seen: Vec<(std::path::PathBuf, Request, Duration)>,
        reply: Reply,
    }

    impl Agent for Fake {
        fn call(
            &mut self,
            socket: &Path,
            request: &Request,
            timeout: Duration,
        ) -> Result<Response, CallError> {
            self.seen
                .push((socket.to_path_buf(), request.clone(), timeout));
            (self.reply)(request)
        }
    }

    fn fake(reply: impl FnMut(&Request) -> Result<Response, CallError> + 'static) -> Fake {
        Fake {
            seen: Vec::new(),
            reply: Box::new(reply),
        }
    }

    fn pod_result() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:00:00:10:00:05".into()),
                mtu: Some(1400),
                sandbox: Some("/run/netns/p1".into()),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                address: "10.16.0.5/16".parse().unwrap(),
                gateway: Some("10.16.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            ..CniResult::default()
        }
    }

    fn env(cmd: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/p1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn go(env: &HashMap<String, String>, stdin: &Value, agent: &mut Fake) -> (Value, i32) {
        let lookup = |k: &str| env.get(k).cloned();
        let out = run(&lookup, stdin.to_string().as_bytes(), agent);
        let v = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap()
        };
        (v, out.exit_code)
    }

    fn conf(version: &str) -> Value {
        json!({"cniVersion": version, "name": "ovn", "type": "ferrovn-cni", "server_socket": "/tmp/s.sock"})
    }

    #[test]
    fn add_forwards_and_renders_requested_version() {
        let mut a = fake(|_| Ok(Response::with_result(pod_result())));
        let (v, rc) = go(&env("ADD"), &conf("0.4.0"), &mut a);
        assert_eq!(rc, 0, "{v}");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        let (sock, req, timeout) = &a.seen[0];
        assert_eq!(sock, Path::new("/tmp/s.sock"));
        assert_eq!(*timeout, Duration::from_secs(90));
        let Request::Add(r) = req else {
            panic!("{req:?}")
        };
        assert_eq!(r.pod.as_ref().unwrap().name, "web-0");
        assert_eq!(r.netns.as_deref(), Some("/run/netns/p1"));
    }

    #[test]
    fn add_without_pod_identity_is_env_error_and_agent_untouched() {
        let mut a = fake(|_| Ok(Response::ok()));
        let mut e = env("ADD");
        e.insert("CNI_ARGS".into(), "K8S_POD_NAMESPACE=default".into());
        let (v, rc) = go(&e, &conf("1.1.0"), &mut a);
        assert_ne!(rc, 0);
        assert_eq!(v["code"], code::INVALID_ENV);
        assert!(v["msg"].as_str().unwrap().contains("K8S_POD_NAME"));
        assert!(a.seen.is_empty());
    }

    #[test]
    fn agent_errors_pass_through_and_transport_maps() {
        let mut a = fake(|_| Ok(Response::error(113, "port not installed", "waited 60s")));
        let (v, _) = go(&env("ADD"), &conf("1.1.0"), &mut a);
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","code":113,"msg":"port not installed","details":"waited 60s"})
        );
        let mut a = fake(|_| {
            Err(CallError::Unavailable {
                socket: "/x".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            })
        });
        let (v, _) = go(&env("ADD"), &conf("1.1.0"), &mut a);
        assert_eq!(v["code"], code::TRY_AGAIN_LATER);
        let (v, rc) = go(&env("STATUS"), &conf("1.1.0"), &mut a);
        assert_eq!(
            (v["code"].as_u64(), rc),
            (Some(code::NOT_AVAILABLE as u64), 1)
        );
        let mut a = fake(|_| {
            Err(CallError::Timeout {
                socket: "/x".into(),
                timeout: Duration::from_secs(1),
            })
        });
        let (v, _) = go(&env("ADD"), &conf("1.1.0"), &mut a);
        assert_eq!(v["code"], code::AGENT_TIMEOUT);
    }

    #[test]
    fn del_of_unknown_succeeds() {
        let mut a = fake(|_| {
            Ok(Response::error(
                code::UNKNOWN_CONTAINER,
                "no such attachment",
                "",
            ))
        });
        let mut e = env("DEL");
        e.remove("CNI_NETNS");
        e.remove("CNI_ARGS");
        let (v, rc) = go(&e, &conf("1.1.0"), &mut a);
        assert_eq!((v, rc), (Value::Null, 0));
    }

    #[test]
    fn check_needs_prev_result_and_version() {
        let mut a = fake(|_| Ok(Response::ok()));
        let (v, _) = go(&env("CHECK"), &conf("1.1.0"), &mut a);
        assert_eq!(v["code"], code::INVALID_NETCONF);
        assert!(v["msg"].as_str().unwrap().contains("prevResult"));
        let (v, _) = go(&env("CHECK"), &conf("0.3.1"), &mut a);
        assert_eq!(v["code"], code::INCOMPATIBLE_VERSION);
        let mut c = conf("1.0.0");
        c["prevResult"] = pod_result().to_json(CniVersion::V1_0_0, false);
        let (v, rc) = go(&env("CHECK"), &c, &mut a);
        assert_eq!((v, rc), (Value::Null, 0));
        let Request::Check(r) = &a.seen[0].1 else {
            panic!()
        };
        assert_eq!(r.prev_result.as_ref().unwrap().ips, pod_result().ips);
    }

    #[test]
    fn gc_requires_the_attachment_list_and_forwards_it() {
        let mut a = fake(|_| Ok(Response::ok()));
        let e: HashMap<String, String> = [("CNI_COMMAND".to_string(), "GC".to_string())].into();
        let (v, _) = go(&e, &conf("1.1.0"), &mut a);
        assert_eq!(v["code"], code::INVALID_NETCONF);
        let mut c = conf("1.1.0");
        c["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let (_, rc) = go(&e, &c, &mut a);
        assert_eq!(rc, 0);
        let Request::Gc(g) = &a.seen[0].1 else {
            panic!()
        };
        assert_eq!(g.valid_attachments[0].container_id, "c1");
        let (v, _) = go(&e, &conf("1.0.0"), &mut a);
        assert_eq!(v["code"], code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn ipam_mode_returns_abbreviated_result() {
        let mut a = fake(|_| {
            let mut r = pod_result();
            r.interfaces.clear();
            r.ips[0].interface = None;
            Ok(Response::with_result(r))
        });
        let c = json!({"cniVersion": "1.0.0", "name": "mac", "type": "macvlan",
                       "ipam": {"type": "ferrovn", "subnet": "net1", "provider": "mac.default"}});
        let (v, rc) = go(&env("ADD"), &c, &mut a);
        assert_eq!(rc, 0, "{v}");
        assert!(v.get("interfaces").is_none());
        assert_eq!(v["ips"][0]["address"], "10.16.0.5/16");
        let Request::IpamAdd(r) = &a.seen[0].1 else {
            panic!()
        };
        assert_eq!(r.subnet.as_deref(), Some("net1"));
    }

    #[test]
    fn add_rejects_bad_agent_results() {
        let mut a = fake(|_| {
            let mut r = pod_result();
            r.interfaces.clear();
            Ok(Response::with_result(r))
        });
        let (v, _) = go(&env("ADD"), &conf("1.1.0"), &mut a);
        assert_eq!(v["code"], code::AGENT_BAD_REPLY);
    }

    #[test]
    fn version_echoes_requested_version() {
        let mut a = fake(|_| Ok(Response::ok()));
        let e: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
        let (v, rc) = go(&e, &json!({"cniVersion": "0.4.0"}), &mut a);
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }

    proptest::proptest! {
        #[test]
        fn random_stdin_never_panics_and_errors_are_well_formed(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            cmd in proptest::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC", "BOGUS"]),
        ) {
            let mut a = fake(|_| Ok(Response::ok()));
            let e = env(cmd);
            let lookup = |k: &str| e.get(k).cloned();
            let out = run(&lookup, &bytes, &mut a);
            proptest::prop_assert_ne!(out.exit_code, 0);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            proptest::prop_assert!(v["code"].as_u64().is_some());
            proptest::prop_assert!(v["msg"].as_str().is_some());
            proptest::prop_assert!(v["details"].as_str().is_some());
            proptest::prop_assert!(v["cniVersion"].as_str().is_some());
        }

        #[test]
        fn random_cni_args_never_panic(args in ".{0,80}") {
            let mut a = fake(|_| Ok(Response::with_result(pod_result())));
            let mut e = env("ADD");
            e.insert("CNI_ARGS".into(), args);
            let lookup = |k: &str| e.get(k).cloned();
            let out = run(&lookup, conf("1.1.0").to_string().as_bytes(), &mut a);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if out.exit_code != 0 {
                proptest::prop_assert!(v["code"].as_u64().is_some());
            }
        }
    }
}
