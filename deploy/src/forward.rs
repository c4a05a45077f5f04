//! The API server's (and OVN central's) ports inside a node's network namespace. The control
//! plane and OVN central listen on 127.0.0.1 of the machine only; FerrOVN's pods (host network)
//! and ovn-controller run in their node's namespace, whose loopback is its own. The lab keeps one process per node running testkit's loopback relay, which listens
//! on the same address and port inside the node's namespace and relays every connection to the
//! API server, so the agent's kubeconfig (server `https://127.0.0.1:<port>`, the serving
//! certificate's SAN) is the same as everyone's, and no address outside loopback is involved.
//! A process of its own (not a thread of `ferrovn-lab up`) because the lab outlives `up`.

use std::path::Path;

use anyhow::Context;
use ferrovn_testkit::kube::LoopbackRelay;

/// Listens on 127.0.0.1:`port` inside network namespace `netns` (a name under /var/run/netns)
/// and relays each connection to 127.0.0.1:`port` of the namespace this process started in,
/// for every port of `ports`. Runs until killed.
pub fn run(netns: &str, ports: &[u16]) -> anyhow::Result<()> {
    let node_path = Path::new("/var/run/netns").join(netns);
    let mut relays = Vec::new();
    for &port in ports {
        relays.push(
            LoopbackRelay::start(&node_path, port).with_context(|| {
                format!("relaying 127.0.0.1:{port} into {}", node_path.display())
            })?,
        );
        println!("forwarding 127.0.0.1:{port} in {netns} to 127.0.0.1:{port}");
    }
    loop {
        std::thread::park();
    }
}
