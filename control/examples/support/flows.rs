//! northd plus one node's ovn-controller for the control benchmarks (`BENCH_FLOWS=1`, root):
//! how long until a change the controller wrote into the NB is in a node's flows.

use std::error::Error;
use std::time::Duration;

use ferrovn_control::plan::PortIntent;
use ferrovn_testkit::cluster::wait_chassis_count;
use ferrovn_testkit::names::short_rand;
use ferrovn_testkit::ovs_node::{Node, NodeConfig};
use ferrovn_testkit::ovsdb::OvnCentral;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

pub struct Flows {
    central: OvnCentral,
    _node: Node,
}

impl Flows {
    /// OVN central with northd, and node `node` with OVS and ovn-controller, where the first
    /// `bound` of `ports` planned on that node are bound (internal ports), so their switch is
    /// local there and ovn-controller installs its flows.
    pub fn start(ports: &[PortIntent], node_name: &str, bound: usize) -> Result<Flows> {
        let central = OvnCentral::start()?;
        let mut node = Node::start(
            &format!("fvbp{}", short_rand()),
            &NodeConfig::plain(node_name),
        )?;
        node.configure_ovn_with_vsctl(&central.sb_remote())?;
        node.start_ovn_controller()?;
        wait_chassis_count(&central, 1, Duration::from_secs(60))?;
        for (k, p) in ports
            .iter()
            .filter(|p| p.node == node_name)
            .take(bound)
            .enumerate()
        {
            let iface = format!("bp{k}");
            node.vsctl([
                "add-port".to_string(),
                "br-int".into(),
                iface.clone(),
                "--".into(),
                "set".into(),
                "Interface".into(),
                iface,
                "type=internal".into(),
                format!("external_ids:iface-id={}", p.port_name()),
            ])?;
        }
        Ok(Flows {
            central,
            _node: node,
        })
    }

    pub fn remote(&self) -> String {
        self.central.nb_remote()
    }

    /// `ovn-nbctl --wait=hv sync`: returns once every chassis has the NB's current state in
    /// its flows.
    pub fn wait_hv(&self) -> Result {
        let out = std::process::Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.central.nb_remote()))
            .args(["--timeout=900", "--wait=hv", "sync"])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "ovn-nbctl --wait=hv sync: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }
}
