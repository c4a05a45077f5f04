//! The node side of OVN-native egress (docs/node-connectivity.md, "OVN gateway router"): the
//! uplink bridge with the node's uplink as an OVS-DPDK port, and the `ovn-bridge-mappings`
//! entry that ties the gateway router's `localnet` port to it. The controller plans the
//! gateway router itself (`ferrovn_control::plan::gateway_router`).
//!
//! Why these choices:
//! - The uplink is a `type=dpdk` Interface, so the PMD thread that runs the pod's pipeline
//!   (vhost-user in, OVN router, SNAT in the userspace conntrack) also transmits on the
//!   uplink: the packet never crosses into the node's kernel stack (no ovn0, no kernel
//!   routing, no netfilter). With a DPDK NIC the device is its PCI address; on machines without
//!   one (this test bed, VMs) it is `net_af_packet` on a kernel interface (a veth towards the
//!   outside), which hands frames to the interface's driver through a shared TPACKET ring
//!   without any kernel routing or netfilter. `net_tap` also works with OVS-DPDK 3.5 but makes
//!   a tap the kernel would route, which is the kernel path again, and needs n_rxq = n_txq.
//! - The bridge is a separate `netdev` bridge (not br-int): ovn-controller owns br-int's flows
//!   and connects localnet ports to a mapped bridge through patch ports, which the userspace
//!   datapath short-cuts (no extra hop). The bridge has no internal port, so the kernel gets no
//!   interface for it, and no fail-mode, so it switches between the patch port and the uplink
//!   with the NORMAL action without a controller.

use std::collections::BTreeMap;
use std::str::FromStr;

use ferrovn_ovsdb::{Condition, Datum, Mutator, Operation, Transaction, Uuid};

use crate::ovs::{OVS_DB, OvsClient, OvsError, map_of, rows, string_of, uuid_of};

/// `Open_vSwitch.external_ids` key ovn-controller reads the physnet → bridge mappings from.
pub const BRIDGE_MAPPINGS: &str = "ovn-bridge-mappings";
/// `external_ids` mark of the rows this module creates.
pub const ROLE_KEY: &str = "ferrovn_role";
pub const ROLE_VALUE: &str = "egress-uplink";

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("--egress-uplink {0:?}: expected af_packet:<interface>, tap:<name> or pci:<address>")]
    BadDevice(String),
    #[error("{field} {value:?}: {reason}")]
    BadName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("ovn-bridge-mappings {0:?}: an entry is not <physnet>:<bridge>")]
    BadMappings(String),
    #[error("ovn-bridge-mappings: physnet {physnet} is already mapped to bridge {bridge}")]
    PhysnetTaken { physnet: String, bridge: String },
    #[error("uplink {port}: OVS reports {error}")]
    PortError { port: String, error: String },
    #[error(transparent)]
    Ovs(Box<OvsError>),
}

impl From<OvsError> for UplinkError {
    fn from(e: OvsError) -> Self {
        UplinkError::Ovs(Box::new(e))
    }
}

/// What carries the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkDevice {
    /// `net_af_packet` on a kernel interface (a veth or a NIC left to its kernel driver).
    AfPacket { iface: String },
    /// `net_tap`: DPDK creates tap `name` (the kernel sees the traffic; see module docs).
    Tap { name: String },
    /// A DPDK-bound NIC.
    Pci { address: String },
}

impl FromStr for UplinkDevice {
    type Err = UplinkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UplinkError::BadDevice(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let rest = rest.trim();
        if rest.is_empty() || rest.contains(',') || rest.contains('=') {
            return Err(bad());
        }
        match kind {
            "af_packet" => Ok(UplinkDevice::AfPacket { iface: rest.into() }),
            "tap" => Ok(UplinkDevice::Tap { name: rest.into() }),
            "pci" => Ok(UplinkDevice::Pci {
                address: rest.into(),
            }),
            _ => Err(bad()),
        }
    }
}

/// The node's uplink for OVN-native egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The uplink bridge (`br-ext`).
    pub bridge: String,
    /// The name the gateway router's localnet port uses (`network_name`).
    pub physnet: String,
    /// OVS Port/Interface name of the uplink.
    pub port: String,
    pub device: UplinkDevice,
    /// PMD threads of the node: net_af_packet / net_tap need a queue pair per OVS tx queue
    /// (OVS uses one tx queue per PMD plus one for the main thread).
    pub pmd_threads: u32,
}

fn check_name(field: &'static str, v: &str) -> Result<(), UplinkError> {
    let bad = |reason| UplinkError::BadName {
        field,
        value: v.to_string(),
        reason,
    };
    if v.is_empty() {
        return Err(bad("empty"));
    }
    if v.len() > 15 {
        return Err(bad("longer than 15 characters (an interface name)"));
    }
    if v.contains([',', ':', '=', ' ', '/']) {
        return Err(bad("contains one of , : = / or a space"));
    }
    Ok(())
}

impl UplinkSpec {
    pub fn validate(&self) -> Result<(), UplinkError> {
        check_name("bridge", &self.bridge)?;
        check_name("physnet", &self.physnet)?;
        check_name("port", &self.port)
    }

    /// The uplink Interface's `options`.
    pub fn interface_options(&self) -> BTreeMap<String, String> {
        let queues = self.pmd_threads.max(1) + 1;
        let mut o = BTreeMap::new();
        // a vdev's name must start with its driver's and be unique in the process: the port's
        // name makes it so
        let devargs = match &self.device {
            UplinkDevice::AfPacket { iface } => {
                o.insert("n_rxq".into(), queues.to_string());
                format!("net_af_packet_{},iface={iface},qpairs={queues}", self.port)
            }
            UplinkDevice::Tap { name } => {
                o.insert("n_rxq".into(), queues.to_string());
                format!("net_tap_{},iface={name}", self.port)
            }
            UplinkDevice::Pci { address } => address.clone(),
        };
        o.insert("dpdk-devargs".into(), devargs);
        o
    }
}

/// `existing` `ovn-bridge-mappings` with `physnet` mapped to `bridge` (other entries kept, in
/// their order). A physnet mapped to another bridge is an error: two owners would fight.
pub fn merge_bridge_mappings(
    existing: Option<&str>,
    physnet: &str,
    bridge: &str,
) -> Result<String, UplinkError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for e in existing.unwrap_or("").split(',').map(str::trim) {
        if e.is_empty() {
            continue;
        }
        let (p, b) = e
            .split_once(':')
            .filter(|(p, b)| !p.is_empty() && !b.is_empty())
            .ok_or_else(|| UplinkError::BadMappings(existing.unwrap_or("").to_string()))?;
        if p == physnet && b != bridge {
            return Err(UplinkError::PhysnetTaken {
                physnet: physnet.into(),
                bridge: b.into(),
            });
        }
        entries.push((p.into(), b.into()));
    }
    if !entries.iter().any(|(p, _)| p == physnet) {
        entries.push((physnet.into(), bridge.into()));
    }
    Ok(entries
        .iter()
        .map(|(p, b)| format!("{p}:{b}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// What OVSDB holds now for the uplink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkState {
    pub mappings: Option<String>,
    pub bridge_exists: bool,
    /// The uplink Interface's options, when it exists.
    pub port_options: Option<BTreeMap<String, String>>,
}

/// The transaction that makes OVSDB match `spec` from `state` (`root`: the Open_vSwitch row),
/// and what it changes; `None` when nothing is to change.
pub fn uplink_txn(
    spec: &UplinkSpec,
    root: Uuid,
    state: &UplinkState,
) -> Result<Option<(Transaction, Vec<String>)>, UplinkError> {
    spec.validate()?;
    let mut txn = Transaction::new(OVS_DB);
    let mut changes = Vec::new();
    let mappings = merge_bridge_mappings(state.mappings.as_deref(), &spec.physnet, &spec.bridge)?;
    if state.mappings.as_deref() != Some(mappings.as_str()) {
        txn.push(
            Operation::mutate("Open_vSwitch")
                .filter(Condition::uuid(root))
                .mutation(
                    "external_ids",
                    Mutator::Delete,
                    Datum::set([BRIDGE_MAPPINGS]),
                )
                .mutation(
                    "external_ids",
                    Mutator::Insert,
                    Datum::map([(BRIDGE_MAPPINGS, mappings.as_str())]),
                ),
        );
        changes.push(format!("{BRIDGE_MAPPINGS}={mappings}"));
    }
    let role = Datum::map([(ROLE_KEY, ROLE_VALUE)]);
    if !state.bridge_exists {
        txn.push(
            Operation::insert("Bridge")
                .with("name", spec.bridge.as_str())
                .with("datapath_type", "netdev")
                .with("external_ids", role.clone())
                .named("bridge"),
        );
        txn.push(
            Operation::mutate("Open_vSwitch")
                .filter(Condition::uuid(root))
                .mutation(
                    "bridges",
                    Mutator::Insert,
                    Datum::set([ferrovn_ovsdb::Atom::NamedUuid("bridge".into())]),
                ),
        );
        changes.push(format!("bridge {} created", spec.bridge));
    }
    let options = spec.interface_options();
    match &state.port_options {
        Some(o) if *o == options => {}
        Some(_) => {
            txn.push(
                Operation::update("Interface")
                    .where_eq("name", spec.port.as_str())
                    .with(
                        "options",
                        Datum::map(options.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                    ),
            );
            changes.push(format!("uplink {} options updated", spec.port));
        }
        None => {
            txn.push(
                Operation::insert("Interface")
                    .with("name", spec.port.as_str())
                    .with("type", "dpdk")
                    .with(
                        "options",
                        Datum::map(options.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                    )
                    .with("external_ids", role.clone())
                    .named("iface"),
            );
            txn.push(
                Operation::insert("Port")
                    .with("name", spec.port.as_str())
                    .with(
                        "interfaces",
                        Datum::set([ferrovn_ovsdb::Atom::NamedUuid("iface".into())]),
                    )
                    .with("external_ids", role)
                    .named("port"),
            );
            let port = Datum::set([ferrovn_ovsdb::Atom::NamedUuid("port".into())]);
            // by name: also finds the bridge inserted above in this transaction
            txn.push(
                Operation::mutate("Bridge")
                    .where_eq("name", spec.bridge.as_str())
                    .mutation("ports", Mutator::Insert, port),
            );
            changes.push(format!(
                "uplink {} ({}) added to {}",
                spec.port,
                options.get("dpdk-devargs").map_or("", String::as_str),
                spec.bridge
            ));
        }
    }
    Ok((!changes.is_empty()).then_some((txn, changes)))
}

async fn read_state(
    ovs: &OvsClient,
    spec: &UplinkSpec,
) -> Result<(Uuid, UplinkState), UplinkError> {
    let probe = Transaction::new(OVS_DB)
        .with(Operation::select("Open_vSwitch").columns(["_uuid", "external_ids"]))
        .with(
            Operation::select("Bridge")
                .where_eq("name", spec.bridge.as_str())
                .columns(["_uuid"]),
        )
        .with(
            Operation::select("Interface")
                .where_eq("name", spec.port.as_str())
                .columns(["options"]),
        );
    let res = ovs.transact(&probe).await?;
    let root_row = rows(&res, 0).first().cloned().unwrap_or_default();
    let root = uuid_of(&root_row, "_uuid")
        .first()
        .copied()
        .ok_or_else(|| {
            UplinkError::from(OvsError::Unexpected {
                remote: ovs.remote().to_string(),
                what: "no Open_vSwitch row".into(),
            })
        })?;
    let state = UplinkState {
        mappings: map_of(&root_row, "external_ids").remove(BRIDGE_MAPPINGS),
        bridge_exists: !rows(&res, 1).is_empty(),
        port_options: rows(&res, 2).first().map(|r| map_of(r, "options")),
    };
    Ok((root, state))
}

/// Makes the uplink bridge, port and mapping match `spec`; returns what changed. Fails with
/// the Interface's `error` column when OVS-DPDK refused the device (wrong devargs, missing
/// interface).
pub async fn ensure_uplink(ovs: &OvsClient, spec: &UplinkSpec) -> Result<Vec<String>, UplinkError> {
    let (root, state) = read_state(ovs, spec).await?;
    let Some((txn, changes)) = uplink_txn(spec, root, &state)? else {
        return Ok(Vec::new());
    };
    ovs.transact(&txn).await?;
    Ok(changes)
}

/// The uplink Interface's `error` column (OVS-DPDK's complaint about the device), if any.
pub async fn uplink_error(ovs: &OvsClient, port: &str) -> Result<Option<String>, UplinkError> {
    let t = Transaction::new(OVS_DB).with(
        Operation::select("Interface")
            .where_eq("name", port)
            .columns(["error"]),
    );
    let res = ovs.transact(&t).await?;
    Ok(rows(&res, 0)
        .first()
        .and_then(|r| string_of(r, "error"))
        .filter(|e| !e.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(device: UplinkDevice) -> UplinkSpec {
        UplinkSpec {
            bridge: "br-ext".into(),
            physnet: "ext".into(),
            port: "uplink".into(),
            device,
            pmd_threads: 1,
        }
    }

    #[test]
    fn device_flag_parses_and_rejects_with_the_flag_named() {
        assert_eq!(
            "af_packet:eth1".parse::<UplinkDevice>().unwrap(),
            UplinkDevice::AfPacket {
                iface: "eth1".into()
            }
        );
        assert_eq!(
            "pci:0000:00:08.0".parse::<UplinkDevice>().unwrap(),
            UplinkDevice::Pci {
                address: "0000:00:08.0".into()
            }
        );
        for bad in ["eth1", "af_packet:", "vfio:x", "af_packet:a,qpairs=9"] {
            let e = bad.parse::<UplinkDevice>().unwrap_err().to_string();
            assert!(e.contains("--egress-uplink"), "{bad}: {e}");
        }
    }

    #[test]
    fn af_packet_gets_a_queue_pair_per_ovs_tx_queue() {
        let o = spec(UplinkDevice::AfPacket {
            iface: "veth1".into(),
        })
        .interface_options();
        assert_eq!(
            o["dpdk-devargs"],
            "net_af_packet_uplink,iface=veth1,qpairs=2"
        );
        assert_eq!(o["n_rxq"], "2");
        let o = spec(UplinkDevice::Pci {
            address: "0000:00:08.0".into(),
        })
        .interface_options();
        assert_eq!(o["dpdk-devargs"], "0000:00:08.0");
        assert!(!o.contains_key("n_rxq"));
    }

    #[test]
    fn mappings_merge_keeps_others_and_refuses_a_second_owner() {
        assert_eq!(
            merge_bridge_mappings(None, "ext", "br-ext").unwrap(),
            "ext:br-ext"
        );
        assert_eq!(
            merge_bridge_mappings(Some("prov1:br-prov1"), "ext", "br-ext").unwrap(),
            "prov1:br-prov1,ext:br-ext"
        );
        assert_eq!(
            merge_bridge_mappings(Some("ext:br-ext,a:b"), "ext", "br-ext").unwrap(),
            "ext:br-ext,a:b"
        );
        assert!(matches!(
            merge_bridge_mappings(Some("ext:br-other"), "ext", "br-ext"),
            Err(UplinkError::PhysnetTaken { .. })
        ));
        assert!(matches!(
            merge_bridge_mappings(Some("junk"), "ext", "br-ext"),
            Err(UplinkError::BadMappings(_))
        ));
    }

    #[test]
    fn txn_is_empty_when_everything_matches_and_creates_what_is_missing() {
        let s = spec(UplinkDevice::AfPacket {
            iface: "veth1".into(),
        });
        let root = Uuid::NIL;
        let done = UplinkState {
            mappings: Some("ext:br-ext".into()),
            bridge_exists: true,
            port_options: Some(s.interface_options()),
        };
        assert!(uplink_txn(&s, root, &done).unwrap().is_none());
        let (_, changes) = uplink_txn(&s, root, &UplinkState::default())
            .unwrap()
            .unwrap();
        assert_eq!(changes.len(), 3, "{changes:?}");
        let mut stale = done.clone();
        stale.port_options = Some(BTreeMap::new());
        let (_, changes) = uplink_txn(&s, root, &stale).unwrap().unwrap();
        assert_eq!(changes, vec!["uplink uplink options updated"]);
        let mut bad = s.clone();
        bad.physnet = "a:b".into();
        let e = uplink_txn(&bad, root, &done).unwrap_err().to_string();
        assert!(e.contains("physnet"), "{e}");
    }
}
