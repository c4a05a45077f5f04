//! `ferrovn-cni`: the CNI plugin binary. Reads the environment and stdin, forwards to the node
//! agent over its unix socket, prints the spec-shaped result or error. std only, so it starts
//! in about a millisecond.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ferrovn_cni::plugin::{self, Agent, Outcome};
use ferrovn_cni::protocol::{self, CallError, Request, Response};
use ferrovn_cni::spec::{CniError, CniVersion, code};

/// Stdin larger than this is refused rather than buffered.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

/// Extra time the watchdog gives the exchange beyond its own socket timeouts.
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// Talks to the agent on a helper thread so even a connect stuck on a full listen backlog
/// cannot hold the runtime beyond the timeout.
struct UnixAgent;

impl Agent for UnixAgent {
    fn call(
        &mut self,
        socket: &Path,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let (tx, rx) = mpsc::channel();
        let socket_owned = socket.to_path_buf();
        let request = request.clone();
        std::thread::spawn(move || {
            let _ = tx.send(protocol::call(&socket_owned, &request, timeout));
        });
        match rx.recv_timeout(timeout + WATCHDOG_GRACE) {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout {
                socket: socket.to_path_buf(),
                timeout,
            }),
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let stdin = io::stdin();
    // Nobody types a network configuration: a terminal means "no input" (e.g. VERSION by hand).
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                "failed to read the network configuration from stdin",
                e.to_string(),
            )
        })?;
    if buf.len() as u64 > MAX_STDIN_BYTES {
        return Err(CniError::new(
            code::IO_FAILURE,
            "network configuration on stdin too large",
            format!("more than {MAX_STDIN_BYTES} bytes"),
        ));
    }
    Ok(buf)
}

fn main() {
    let env = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    let outcome = match read_stdin() {
        Ok(stdin) => plugin::run(&env, &stdin, &mut UnixAgent),
        Err(e) => {
            let mut stdout =
                serde_json::to_vec(&e.to_json(CniVersion::LATEST.as_str())).unwrap_or_default();
            stdout.push(b'\n');
            Outcome {
                stdout,
                exit_code: 1,
                log: Some(format!("ferrovn-cni: {e}")),
            }
        }
    };
    if let Some(line) = &outcome.log {
        let _ = writeln!(io::stderr(), "{line}");
    }
    let mut out = io::stdout().lock();
    let _ = out.write_all(&outcome.stdout);
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}
