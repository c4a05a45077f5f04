//! Shared helpers: a fake node agent on a unix socket (using the crate's own codec) and a way
//! to invoke the built plugin exactly as a runtime does (env vars + stdin).

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use ferrovn_cni::protocol::{self, Request, Response};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrovn-cni");

pub struct FakeAgent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Request>>>,
}

impl FakeAgent {
    /// Serve `handler` on a fresh socket in a private temp dir; every request is recorded.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake agent socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let handler: Arc<dyn Fn(Request) -> Response + Send + Sync> =
            Arc::new(move |req: Request| {
                let resp = handler(&req);
                record.lock().expect("lock").push(req);
                resp
            });
        std::thread::spawn(move || protocol::serve(listener, handler));
        FakeAgent { dir, socket, seen }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn socket_str(&self) -> String {
        self.socket.to_string_lossy().into_owned()
    }
}

pub struct Run {
    pub stdout: Value,
    pub raw_stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
}

/// Run `program` with exactly `env` (nothing inherited) and `stdin`.
pub fn exec(program: &Path, pre_args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(pre_args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn plugin");
    {
        let mut sin = child.stdin.take().expect("stdin");
        // The plugin may exit before reading everything (e.g. bad env): ignore EPIPE.
        let _ = sin.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait plugin");
    let stdout = if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    Run {
        stdout,
        raw_stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Run the built `ferrovn-cni`.
pub fn plugin(env: &[(&str, &str)], stdin: &str) -> Run {
    exec(Path::new(BIN), &[], env, stdin.as_bytes())
}

/// The environment kubelet/containerd give a plugin for one pod.
pub fn pod_env<'a>(command: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "3f2a9c0d1e"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=3f2a9c0d1e;K8S_POD_UID=6b1c-44",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// Assert the spec's error shape and return the code.
pub fn assert_cni_error(run: &Run) -> u64 {
    assert_ne!(run.code, 0, "expected failure, stdout {}", run.stdout);
    let v = &run.stdout;
    assert!(v["cniVersion"].is_string(), "cniVersion in {v}");
    assert!(v["msg"].is_string(), "msg in {v}");
    assert!(v["details"].is_string(), "details in {v}");
    v["code"].as_u64().unwrap_or_else(|| panic!("code in {v}"))
}
