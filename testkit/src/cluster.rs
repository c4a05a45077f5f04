//! What the control plane does for pods, without it: the NB topology of a subnet (switch,
//! router, pod ports), the allocation annotations Kube-OVN's controller writes, and
//! [`Cluster`], two nodes with the node agent running on both.

use std::path::Path;
use std::time::Duration;

use ferrovn_dataplane::alloc::{Annotations, FileAllocations, PodRef};

use crate::error::{Error, Result};
use crate::names::tempdir;
use crate::ovs_node::TwoNodes;
use crate::ovsdb::OvnCentral;
use crate::wait::wait_until;

/// A Kube-OVN subnet as the tests use it: its logical switch, CIDR and gateway.
#[derive(Debug, Clone, Copy)]
pub struct Subnet<'a> {
    pub switch: &'a str,
    pub cidr: &'a str,
    pub gateway: &'a str,
}

/// The subnet most tests put their pods on.
pub const POD_SUBNET: Subnet<'static> = Subnet {
    switch: "ls1",
    cidr: "10.16.0.0/24",
    gateway: "10.16.0.1",
};

/// The /16 subnet the benchmarks spread many pods over.
pub const WIDE_POD_SUBNET: Subnet<'static> = Subnet {
    switch: "ls1",
    cidr: "10.16.0.0/16",
    gateway: "10.16.0.1",
};

/// IP and MAC of the `i`-th pod on [`WIDE_POD_SUBNET`]: hosts .2 to .251 of each /24 (the
/// first pod gets 10.16.0.4, clear of the gateway), the MAC derived from the index.
pub fn wide_pod_address(i: usize) -> (String, String) {
    let host = i + 2;
    (
        format!("10.16.{}.{}", host / 250, host % 250 + 2),
        format!("0a:58:0a:10:{:02x}:{:02x}", (host >> 8) & 0xff, host & 0xff),
    )
}

/// Pods `p0` .. `p<n-1>` (name, IP, MAC) at [`wide_pod_address`]es.
pub fn numbered_pods(n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let (ip, mac) = wide_pod_address(i);
            (format!("p{i}"), ip, mac)
        })
        .collect()
}

impl Subnet<'_> {
    /// The annotations Kube-OVN's controller writes on a pod it allocated on this subnet
    /// (`<provider>.kubernetes.io/...`; the default network's provider is `ovn`).
    pub fn annotations(&self, provider: &str, ip: &str, mac: &str) -> Annotations {
        [
            ("allocated", "true"),
            ("ip_address", ip),
            ("mac_address", mac),
            ("cidr", self.cidr),
            ("gateway", self.gateway),
            ("logical_switch", self.switch),
        ]
        .iter()
        .map(|(k, v)| (format!("{provider}.kubernetes.io/{k}"), v.to_string()))
        .collect()
    }

    /// The gateway with the subnet's prefix length (`10.16.0.1/24`), for the router port.
    fn gateway_cidr(&self) -> String {
        let prefix = self.cidr.split_once('/').map_or("32", |(_, p)| p);
        format!("{}/{prefix}", self.gateway)
    }
}

/// Kube-OVN's logical switch port name of a pod in namespace `default`: `<pod>.default` on the
/// default network (provider `ovn`), `<pod>.default.<provider>` on an attachment network.
pub fn lsp_name(pod: &str, provider: &str) -> String {
    ferrovn_api::names::lsp_name(pod, "default", provider)
}

/// `ovn-nbctl` through the central, with its error as a [`Error`].
pub fn nbctl(central: &OvnCentral, args: &[&str]) -> Result<String> {
    central.nbctl(args).map_err(|e| Error::Setup(e.to_string()))
}

/// Creates the subnet's logical switch alone (no router).
pub fn add_switch(central: &OvnCentral, subnet: &Subnet<'_>) -> Result<()> {
    nbctl(central, &["ls-add", subnet.switch]).map(drop)
}

/// Creates the subnet's logical switch and a router `lr1` whose port `lr1-<switch>` owns the
/// gateway (MAC 0a:58:0a:10:00:01), joined to the switch by the router-type port
/// `<switch>-lr1`: the gateway then answers ARP and ping as in a Kube-OVN cluster.
pub fn add_switch_with_router(central: &OvnCentral, subnet: &Subnet<'_>) -> Result<()> {
    let ls = subnet.switch;
    let lrp = format!("lr1-{ls}");
    let lsp = format!("{ls}-lr1");
    nbctl(central, &["ls-add", ls, "--", "lr-add", "lr1"])?;
    nbctl(
        central,
        &[
            "lrp-add",
            "lr1",
            &lrp,
            "0a:58:0a:10:00:01",
            &subnet.gateway_cidr(),
        ],
    )?;
    nbctl(
        central,
        &[
            "lsp-add",
            ls,
            &lsp,
            "--",
            "lsp-set-type",
            &lsp,
            "router",
            "--",
            "lsp-set-addresses",
            &lsp,
            "router",
            "--",
            "lsp-set-options",
            &lsp,
            &format!("router-port={lrp}"),
        ],
    )?;
    Ok(())
}

/// The `ovn-nbctl` arguments that add a pod's logical switch port with its MAC and IP
/// (several can be joined with `--` into one call).
pub fn pod_port_args(switch: &str, lsp: &str, mac: &str, ip: &str) -> Vec<String> {
    vec![
        "lsp-add".into(),
        switch.into(),
        lsp.into(),
        "--".into(),
        "lsp-set-addresses".into(),
        lsp.into(),
        format!("{mac} {ip}"),
    ]
}

/// Adds a pod's logical switch port with its MAC and IP.
pub fn add_pod_port(
    central: &OvnCentral,
    switch: &str,
    lsp: &str,
    mac: &str,
    ip: &str,
) -> Result<()> {
    let args = pod_port_args(switch, lsp, mac, ip);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nbctl(central, &args).map(drop)
}

/// The pod `name` in namespace `default`.
pub fn pod_ref(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Writes the allocation annotations of pod `default/<pod>` where the agent reads them.
pub fn write_pod_allocation(
    allocs: &FileAllocations,
    pod: &str,
    annotations: &Annotations,
) -> Result<()> {
    allocs
        .write(&pod_ref(pod), annotations)
        .map_err(|source| Error::Io {
            what: format!("writing the allocation of default/{pod}"),
            source,
        })
}

/// What Kube-OVN's controller does for a pod before the runtime's ADD: its logical switch
/// port ([`lsp_name`]) with MAC and IP, and its allocation annotations on `subnet`.
pub fn allocate_pod(
    central: &OvnCentral,
    allocs: &FileAllocations,
    subnet: &Subnet<'_>,
    provider: &str,
    pod: &str,
    ip: &str,
    mac: &str,
) -> Result<()> {
    add_pod_port(central, subnet.switch, &lsp_name(pod, provider), mac, ip)?;
    write_pod_allocation(allocs, pod, &subnet.annotations(provider, ip, mac))
}

/// Waits until `n` chassis are registered in the SB.
pub fn wait_chassis_count(central: &OvnCentral, n: usize, timeout: Duration) -> Result<()> {
    let ok = wait_until(timeout, || {
        central
            .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() == n)
            .unwrap_or(false)
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Timeout {
            what: format!("{n} chassis in the SB"),
            waited: timeout,
            detail: String::new(),
        })
    }
}

/// [`TwoNodes`] with the node agent running on both nodes, and the allocation files (what
/// the controller would annotate) in a private directory both agents read.
#[derive(Debug)]
pub struct Cluster {
    pub tb: TwoNodes,
    pub allocs: FileAllocations,
    _alloc_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts OVN central, both nodes' OVS and the agent `binary` on each node (node `i` with
    /// `agent_args[i]`); the agents configure OVS themselves. No ovn-controller yet.
    pub fn start_agents(binary: &Path, agent_args: [&[&str]; 2]) -> Result<Self> {
        let mut tb = TwoNodes::start_ovs_only()?;
        let alloc_dir = tempdir("fv-allocs-")?;
        let sb = tb.central.sb_remote();
        for (n, args) in tb.nodes.iter_mut().zip(agent_args) {
            n.start_agent(binary, &sb, alloc_dir.path(), args)?;
        }
        Ok(Cluster {
            tb,
            allocs: FileAllocations::new(alloc_dir.path()),
            _alloc_dir: alloc_dir,
        })
    }

    /// Starts ovn-controller on both nodes and waits (30 s at most) for both chassis.
    pub fn start_ovn_controllers(&mut self) -> Result<()> {
        for n in self.tb.nodes.iter_mut() {
            n.start_ovn_controller()?;
        }
        self.tb.wait_chassis(Duration::from_secs(30))
    }

    /// [`Cluster::start_agents`] then [`Cluster::start_ovn_controllers`].
    pub fn start(binary: &Path, agent_args: [&[&str]; 2]) -> Result<Self> {
        let mut c = Self::start_agents(binary, agent_args)?;
        c.start_ovn_controllers()?;
        Ok(c)
    }

    /// The directory the agents read allocations from.
    pub fn allocations_dir(&self) -> &Path {
        self.allocs.dir()
    }

    /// What the controller does for `pods` (name, IP, MAC) on the default network before
    /// the runtime's ADDs: their allocations, and their ports, 40 per `ovn-nbctl` call; then
    /// `--wait=hv sync`, so every chassis has the ports.
    pub fn allocate_pods(
        &self,
        subnet: &Subnet<'_>,
        pods: &[(String, String, String)],
    ) -> Result<()> {
        for chunk in pods.chunks(40) {
            let mut args: Vec<String> = Vec::new();
            for (name, ip, mac) in chunk {
                if !args.is_empty() {
                    args.push("--".into());
                }
                args.extend(pod_port_args(
                    subnet.switch,
                    &lsp_name(name, "ovn"),
                    mac,
                    ip,
                ));
                write_pod_allocation(&self.allocs, name, &subnet.annotations("ovn", ip, mac))?;
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            nbctl(&self.tb.central, &refs)?;
        }
        nbctl(&self.tb.central, &["--wait=hv", "sync"]).map(drop)
    }
}
