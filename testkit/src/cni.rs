//! CNI invocations as a container runtime makes them: `CNI_*` environment and a netconf on
//! stdin, against `ferrovn-cni` (and so a node's agent) or a reference plugin.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::ovs_node::Node;

/// Output of one CNI plugin invocation.
#[derive(Debug, Clone)]
pub struct CniOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    /// stdout as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// One CNI invocation as a container runtime makes it: `CNI_*` environment + netconf on stdin.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
    pub args: &'a str,
    pub stdin: &'a [u8],
}

/// Runs the plugin `binary` like a runtime does (60 s limit).
pub fn run_cni(binary: &Path, call: &CniCall<'_>) -> Result<CniOutput> {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("-k")
        .arg("2")
        .arg("60")
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", binary.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::spawn("CNI plugin", &binary.display().to_string(), &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // a plugin may exit before reading everything (bad env): ignore EPIPE
        let _ = stdin.write_all(call.stdin);
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        what: "CNI plugin output".into(),
        source,
    })?;
    Ok(CniOutput {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The netconf a runtime hands `ferrovn-cni` for a network: `cniVersion`, `name`,
/// `type: ferrovn-cni`, the agent's `server_socket`, and the keys of `extra` (a JSON object;
/// anything else adds nothing).
pub fn cni_netconf(
    cni_version: &str,
    network: &str,
    server_socket: &Path,
    extra: &serde_json::Value,
) -> Vec<u8> {
    let mut conf = serde_json::json!({
        "cniVersion": cni_version,
        "name": network,
        "type": "ferrovn-cni",
        "server_socket": server_socket,
    });
    if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    conf.to_string().into_bytes()
}

/// The `ferrovn-cni` plugin binary with one network's `cniVersion` and name, called against
/// a node's agent the way a runtime calls it.
#[derive(Debug, Clone)]
pub struct FerrovnCni {
    pub binary: PathBuf,
    pub cni_version: &'static str,
    pub network: &'static str,
}

impl FerrovnCni {
    /// Runs `command` with this network's netconf (plus `extra`) pointing at `node`'s agent.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        command: &str,
        node: &Node,
        container_id: &str,
        netns: &str,
        ifname: &str,
        args: &str,
        extra: serde_json::Value,
    ) -> Result<CniOutput> {
        let stdin = cni_netconf(self.cni_version, self.network, &node.agent_socket(), &extra);
        run_cni(
            &self.binary,
            &CniCall {
                command,
                container_id,
                netns,
                ifname,
                args,
                stdin: &stdin,
            },
        )
    }
}

/// Runs a reference CNI plugin (e.g. Debian's `/usr/lib/cni/bridge`) inside `host` as a
/// runtime does for interface `eth0`, without a time limit (its latency is measured) and
/// without `CNI_ARGS`; `CNI_PATH` is the binary's directory.
pub fn run_plugin_in(
    host: &Netns,
    binary: &Path,
    command: &str,
    container_id: &str,
    netns: &str,
    netconf: &[u8],
) -> Result<CniOutput> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.name()])
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", binary.parent().unwrap_or(Path::new("/")));
    let io_err = |what: &str| {
        let what = format!("{what} {}", binary.display());
        move |source| Error::Io { what, source }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("spawning"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(netconf).map_err(io_err("netconf to"))?;
    }
    let out = child.wait_with_output().map_err(io_err("output of"))?;
    Ok(CniOutput {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
