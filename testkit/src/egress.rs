//! A DPDK node with both egress paths to an "outside" namespace, for the OVN-native egress test
//! and benchmark (docs/node-connectivity.md):
//! - kernel path: pod → cluster router 29000 reroute → join port `ovn0` (an internal port of
//!   the node's OVS-DPDK, i.e. a tap in the node's kernel) → kernel forwarding + FerrOVN's
//!   natOutgoing nftables masquerade → veth `fvk` (203.0.113.1) → outside;
//! - OVN path: pod → cluster router 29500 reroute → transit switch → gateway router `gw-<node>`
//!   (SNAT to 203.0.113.101) → external switch → localnet → `br-ext` → the agent's OVS-DPDK
//!   uplink (`net_af_packet` on veth `fvd`) → outside.
//!
//! The outside namespace bridges both veths (`br-out`, 203.0.113.10/24). The node namespace has
//! a forward-hook nftables counter (table `inet fvcount`): every packet the node's kernel
//! forwards counts, so a test can show the OVN path bypasses it. The NB topology is Kube-OVN's
//! default VPC shape built with `ovn-nbctl`; the gateway router rows come from the caller (the
//! controller's planner).

use std::path::Path;
use std::time::Duration;

use ferrovn_dataplane::nat_outgoing::{NatPlan, ruleset};

use crate::cluster::{Subnet, nbctl};
pub use crate::dpdk_node::DpdkPod;
use crate::dpdk_node::{DpdkNode, DpdkNodeSpec};
use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::ovs_node::Node;
use crate::process::run_cmd;
use crate::wait::wait_until;

pub const CLUSTER_ROUTER: &str = "ovn-cluster";
pub const POD_NET: Subnet<'static> = Subnet {
    switch: "ovn-default",
    cidr: "10.16.0.0/24",
    gateway: "10.16.0.1",
};
pub const POD_GATEWAY_MAC: &str = "0a:58:0a:10:00:01";
pub const JOIN_CIDR: &str = "100.64.0.0/16";
pub const JOIN_GATEWAY: &str = "100.64.0.1";
pub const NODE_JOIN_IP: &str = "100.64.0.2";
pub const NODE_JOIN_MAC: &str = "0a:58:64:40:00:02";
/// The outside server.
pub const OUTSIDE_IP: &str = "203.0.113.10";
/// The node's kernel uplink address (the kernel path's masquerade address).
pub const KERNEL_UPLINK_IP: &str = "203.0.113.1";
/// The gateway router's external address (the OVN path's SNAT address).
pub const OVN_EXTERNAL_IP: &str = "203.0.113.101";
pub const EXTERNAL_PREFIX: u8 = 24;
/// Kernel-side names of the two uplinks in the node and their peers in the outside.
pub const KERNEL_UPLINK: &str = "fvk";
pub const DPDK_UPLINK: &str = "fvd";
pub const OUTSIDE_KERNEL_PEER: &str = "fvok";
pub const OUTSIDE_DPDK_PEER: &str = "fvod";
/// The physnet and bridge of the OVN path.
pub const PHYSNET: &str = "ext";
pub const UPLINK_BRIDGE: &str = "br-ext";
/// The agent's uplink Port name (ovn_egress).
pub const UPLINK_PORT: &str = "uplink";
/// Priorities of the cluster router's reroutes (distributed kernel path / gateway router).
pub const KERNEL_POLICY_PRIORITY: u32 = 29000;

/// The lab.
pub struct EgressLab {
    /// OVN central and the DPDK node with its agent (`--egress-uplink=af_packet:fvd`).
    pub dpdk: DpdkNode,
    pub outside: Netns,
}

fn setup(e: impl std::fmt::Display) -> Error {
    Error::Setup(e.to_string())
}

impl EgressLab {
    /// Starts OVN central, the DPDK node (OVS-DPDK with 1 PMD on cpu1, its agent with
    /// `--egress-uplink=af_packet:fvd`, ovn-controller), the NB default VPC with its join port,
    /// the outside namespace, ovn0 and the node's masquerade. `huge_dir`: a hugetlbfs for OVS
    /// (None: `--no-huge`).
    pub fn start(
        tag: &str,
        rnd: &str,
        work: &Path,
        agent: &Path,
        plugin: &Path,
        huge_dir: Option<&Path>,
    ) -> Result<Self> {
        let outside = Netns::create(&format!("fvo-{tag}"))?;
        let spec = DpdkNodeSpec {
            prefix: "fve",
            tag,
            rnd,
            work,
            agent,
            plugin,
            huge_dir,
            extra_agent_args: vec![
                format!("--egress-uplink=af_packet:{DPDK_UPLINK}"),
                format!("--egress-bridge={UPLINK_BRIDGE}"),
                format!("--egress-physnet={PHYSNET}"),
            ],
        };
        // the outside and both uplinks before the agent: its uplink port needs fvd
        let dpdk = DpdkNode::start(&spec, |node| uplinks(node, &outside))?;
        let lab = EgressLab { dpdk, outside };
        lab.build_vpc()?;
        lab.kernel_path()?;
        Ok(lab)
    }

    pub fn chassis(&self) -> &str {
        self.dpdk.name()
    }

    fn nb(&self, args: &[&str]) -> Result<String> {
        nbctl(&self.dpdk.central, args)
    }

    /// Kube-OVN's default VPC: router, pod switch, join switch with the node's port, the
    /// east-west allows and the default route.
    fn build_vpc(&self) -> Result<()> {
        let r = CLUSTER_ROUTER;
        let node_port = format!("node-{}", self.chassis());
        let join_lrp_net = format!("{JOIN_GATEWAY}/16");
        let node_addr = format!("{NODE_JOIN_MAC} {NODE_JOIN_IP}");
        let pod_gw = "10.16.0.1/24".to_string();
        let cmds: Vec<Vec<&str>> = vec![
            vec!["lr-add", r],
            vec!["ls-add", POD_NET.switch],
            vec![
                "lrp-add",
                r,
                "ovn-cluster-ovn-default",
                POD_GATEWAY_MAC,
                &pod_gw,
            ],
            vec![
                "lsp-add",
                POD_NET.switch,
                "ovn-default-ovn-cluster",
                "--",
                "lsp-set-type",
                "ovn-default-ovn-cluster",
                "router",
                "--",
                "lsp-set-addresses",
                "ovn-default-ovn-cluster",
                "router",
                "--",
                "lsp-set-options",
                "ovn-default-ovn-cluster",
                "router-port=ovn-cluster-ovn-default",
            ],
            vec!["ls-add", "join"],
            vec![
                "lrp-add",
                r,
                "ovn-cluster-join",
                "0a:58:64:40:00:01",
                &join_lrp_net,
            ],
            vec![
                "lsp-add",
                "join",
                "join-ovn-cluster",
                "--",
                "lsp-set-type",
                "join-ovn-cluster",
                "router",
                "--",
                "lsp-set-addresses",
                "join-ovn-cluster",
                "router",
                "--",
                "lsp-set-options",
                "join-ovn-cluster",
                "router-port=ovn-cluster-join",
            ],
            vec![
                "lsp-add",
                "join",
                &node_port,
                "--",
                "lsp-set-addresses",
                &node_port,
                &node_addr,
            ],
            vec![
                "lr-policy-add",
                r,
                "31000",
                "ip4.dst == 10.16.0.0/24",
                "allow",
            ],
            vec![
                "lr-policy-add",
                r,
                "31000",
                "ip4.dst == 100.64.0.0/16",
                "allow",
            ],
            vec!["lr-route-add", r, "0.0.0.0/0", JOIN_GATEWAY],
        ];
        for c in cmds {
            self.nb(&c)?;
        }
        Ok(())
    }

    /// ovn0 bound to the node's join port, its route to the pods, FerrOVN's natOutgoing
    /// masquerade and the forward counter in the node's namespace.
    fn kernel_path(&self) -> Result<()> {
        let iface_id = format!("external_ids:iface-id=node-{}", self.chassis());
        let mac = format!("mac=\"{NODE_JOIN_MAC}\"");
        self.dpdk.node.vsctl([
            "add-port",
            "br-int",
            "ovn0",
            "--",
            "set",
            "Interface",
            "ovn0",
            "type=internal",
            &iface_id,
            &mac,
        ])?;
        let n = self.dpdk.node.netns();
        if !wait_until(Duration::from_secs(20), || {
            n.ip(["link", "show", "ovn0"]).is_ok()
        }) {
            return Err(setup("ovn0 did not appear"));
        }
        n.ip(["link", "set", "ovn0", "address", NODE_JOIN_MAC])?;
        n.ip(["addr", "add", &format!("{NODE_JOIN_IP}/16"), "dev", "ovn0"])?;
        n.ip(["link", "set", "ovn0", "up"])?;
        n.ip(["route", "add", POD_NET.cidr, "via", JOIN_GATEWAY])?;
        let plan = NatPlan {
            nat: [POD_NET.cidr.parse().map_err(setup)?].into(),
            cluster: [
                POD_NET.cidr.parse().map_err(setup)?,
                JOIN_CIDR.parse().map_err(setup)?,
            ]
            .into(),
            snat: Default::default(),
        };
        let mut script = ruleset(&plan);
        script.push_str(
            "table inet fvcount {\n  chain forwarded {\n    type filter hook forward priority 0; policy accept;\n    counter\n  }\n}\n",
        );
        nft_in(n, &script)
    }

    /// Packets the node's kernel forwarded so far.
    pub fn kernel_forwarded(&self) -> Result<u64> {
        let out = self.dpdk.node.netns().run(
            5,
            "nft",
            ["list", "chain", "inet", "fvcount", "forwarded"],
        )?;
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| setup(format!("no counter in {out}")))
    }

    /// Sends the egress of `pod_ips` to the node's join port (the kernel path), replacing the
    /// previous kernel reroute; an empty list removes it.
    pub fn set_kernel_reroute(&self, pod_ips: &[&str]) -> Result<()> {
        let p = KERNEL_POLICY_PRIORITY.to_string();
        self.nb(&["lr-policy-del", CLUSTER_ROUTER, &p])?;
        if !pod_ips.is_empty() {
            let m = format!("ip4.src == {{{}}}", pod_ips.join(", "));
            self.nb(&[
                "lr-policy-add",
                CLUSTER_ROUTER,
                &p,
                &m,
                "reroute",
                NODE_JOIN_IP,
            ])?;
        }
        self.sync()
    }

    /// Runs `ovn-nbctl` invocations (the gateway router planner's output) and waits until the
    /// node has them.
    pub fn apply_nbctl(&self, cmds: &[Vec<String>]) -> Result<()> {
        for c in cmds {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            self.nb(&args)?;
        }
        self.sync()
    }

    /// Removes the cluster router's reroutes at `priority`.
    pub fn del_policies(&self, priority: i64) -> Result<()> {
        self.nb(&["lr-policy-del", CLUSTER_ROUTER, &priority.to_string()])?;
        self.sync()
    }

    pub fn sync(&self) -> Result<()> {
        self.nb(&["--wait=hv", "--timeout=30", "sync"]).map(drop)
    }

    /// A kernel (veth) pod of the pod subnet on the DPDK node.
    pub fn add_kernel_pod(&self, pod: &str, ip: &str, mac: &str) -> Result<Netns> {
        self.dpdk.add_kernel_pod(&POD_NET, pod, ip, mac)
    }

    /// A DPDK pod of the pod subnet: a vhost-user attachment whose socket a testpmd in its
    /// namespace serves.
    pub fn add_dpdk_pod(&self, pod: &str, ip: &str, mac: &str, n: u32) -> Result<DpdkPod> {
        self.dpdk.add_dpdk_pod(&POD_NET, pod, ip, mac, n)
    }

    /// Makes the outside a cheap sink for UDP to `port` (the discard port, 9: testpmd's
    /// default): dropped at the ingress of both uplink peers, after their rx counters. The
    /// outside's receive work runs on the sending CPU (veth), which here is the node's; a real
    /// outside is another machine, so a benchmark must not charge its IP stack to the node.
    pub fn discard_udp(&self, port: u16) -> Result<()> {
        let mut script = String::from("table netdev fvsink {\n");
        for (chain, dev) in [("k", OUTSIDE_KERNEL_PEER), ("d", OUTSIDE_DPDK_PEER)] {
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    udp dport {port} drop\n  }}\n"
            ));
        }
        script.push_str("}\n");
        nft_in(&self.outside, &script)
    }

    /// Counts UDP to `port` by source address at the ingress of both uplink peers (before
    /// [`EgressLab::discard_udp`]'s drop): what [`EgressLab::udp_from`] reads.
    pub fn count_udp_sources(&self, port: u16) -> Result<()> {
        let mut script = String::from("table netdev fvsrc {\n");
        for (chain, dev, src) in [
            ("k", OUTSIDE_KERNEL_PEER, KERNEL_UPLINK_IP),
            ("d", OUTSIDE_DPDK_PEER, OVN_EXTERNAL_IP),
        ] {
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook ingress device \"{dev}\" priority -1; policy accept;\n    ip saddr {src} udp dport {port} counter\n  }}\n"
            ));
        }
        script.push_str("}\n");
        nft_in(&self.outside, &script)
    }

    /// UDP packets the outside received from the kernel uplink's address on the kernel uplink
    /// (`dpdk_uplink` false) or from the gateway router's address on the DPDK uplink (true),
    /// counted since [`EgressLab::count_udp_sources`].
    pub fn udp_from(&self, dpdk_uplink: bool) -> Result<u64> {
        let chain = if dpdk_uplink { "d" } else { "k" };
        let out = self
            .outside
            .run(5, "nft", ["list", "chain", "netdev", "fvsrc", chain])?;
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| setup(format!("no counter in {out}")))
    }

    /// An OVS Interface statistic (e.g. `tx_packets` of the uplink).
    pub fn iface_stat(&self, iface: &str, key: &str) -> Result<u64> {
        let col = format!("statistics:{key}");
        let v = self.dpdk.node.vsctl(["get", "Interface", iface, &col])?;
        v.trim()
            .trim_matches('"')
            .parse()
            .map_err(|_| setup(format!("{iface} {key}: {v}")))
    }

    /// Packets the outside received on the peer of the kernel uplink / the DPDK uplink.
    pub fn outside_rx(&self, dpdk_uplink: bool) -> Result<u64> {
        let dev = if dpdk_uplink {
            OUTSIDE_DPDK_PEER
        } else {
            OUTSIDE_KERNEL_PEER
        };
        // the bridge port's rx: frames the node sent on that uplink
        self.outside.rx_packets(dev)
    }
}

/// The outside's bridge with both uplink veths, and the node's kernel uplink address.
fn uplinks(node: &Node, outside: &Netns) -> Result<()> {
    for (mine, peer) in [
        (KERNEL_UPLINK, OUTSIDE_KERNEL_PEER),
        (DPDK_UPLINK, OUTSIDE_DPDK_PEER),
    ] {
        run_cmd(
            "uplink veth",
            10,
            "ip",
            [
                "link",
                "add",
                mine,
                "netns",
                node.netns().name(),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                outside.name(),
            ],
        )?;
        node.netns().ip(["link", "set", mine, "up"])?;
    }
    outside.ip(["link", "set", "lo", "up"])?;
    outside.ip(["link", "add", "br-out", "type", "bridge"])?;
    for p in [OUTSIDE_KERNEL_PEER, OUTSIDE_DPDK_PEER] {
        outside.ip(["link", "set", p, "master", "br-out", "up"])?;
    }
    outside.ip(["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "br-out"])?;
    outside.ip(["link", "set", "br-out", "up"])?;
    // the outside's own answers leave with full checksums: a veth would leave them to
    // "hardware", which a DPDK port reading the peer with af_packet never fills in (a real
    // upstream network sends complete frames)
    for dev in ["br-out", OUTSIDE_DPDK_PEER] {
        outside.run(5, "ethtool", ["-K", dev, "tx", "off"])?;
    }
    // the kernel uplink: the node's address, forwarding on in the node's namespace only
    let n = node.netns();
    n.ip([
        "addr",
        "add",
        &format!("{KERNEL_UPLINK_IP}/24"),
        "dev",
        KERNEL_UPLINK,
    ])?;
    n.run(5, "sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
    // veth checksum offload would leave partial checksums on frames OVS-DPDK reads with
    // af_packet; the outside answers with full ones
    let _ = n.run(5, "ethtool", ["-K", DPDK_UPLINK, "tx", "off", "rx", "off"]);
    Ok(())
}

fn nft_in(netns: &Netns, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = netns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(setup)?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(script.as_bytes()).map_err(setup)?;
    }
    let out = child.wait_with_output().map_err(setup)?;
    if !out.status.success() {
        return Err(setup(format!(
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}
