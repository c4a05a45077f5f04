//! Kernel pods of the Services traffic tests (services_traffic, services_affinity): a pod's
//! place on the two-node fabric, its plumbing, and the server every backend runs.

use std::process::{Child, Stdio};

use ferrovn_api::MacAddr;
use ferrovn_testkit::netns::Netns;
use ferrovn_testkit::ovs_node::Node;

pub struct Pod {
    pub name: &'static str,
    pub ip: &'static str,
    pub mac: MacAddr,
    /// Index of the node in `TwoNodes`.
    pub node: usize,
}

/// The pod's namespace and veth on `node`, bound to its logical port `<name>.default` in
/// 10.16.0.0/24 (gateway .1); `veth` keeps the host-side names of two test crates apart.
pub fn plumb(node: &Node, pod: &Pod, veth: &str, tag: &str) -> Netns {
    super::truth::kernel_pod(
        node,
        veth,
        tag,
        &pod.name[pod.name.len() - 1..],
        &format!("{}.default", pod.name),
        pod.mac,
        &format!("{}/24", pod.ip),
        &[("default", "10.16.0.1")],
    )
}

/// Answers `<name> <client address it saw>` over HTTP on :8080 and over UDP on :8081.
const SERVER: &str = r#"
import socket, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 8081))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(f"{name} {a[0]}".encode(), a)
threading.Thread(target=udp, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

/// Starts [`SERVER`] in `ns` as backend `name`.
pub fn serve(ns: &Netns, name: &str) -> Child {
    ns.command("python3")
        .args(["-c", SERVER, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server")
}
