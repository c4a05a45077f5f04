//! The node's OVS, configured through OVSDB (the `Open_vSwitch` database): the settings
//! ovn-controller reads, the integration bridge, pod ports with their `external_ids`, QoS, and
//! the `ovn-installed` readiness signal.
//!
//! Transactions are built by pure functions (`*_txn`) and tested as data; [`OvsClient`] runs
//! them and reconnects when ovsdb-server restarted.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrovn_ovsdb::{
    Atom, Condition, Connection, ConnectionOptions, Datum, Mutator, OpResult, Operation, Remote,
    Transaction, Uuid, WaitUntil,
};

pub const OVS_DB: &str = "Open_vSwitch";

/// `external_ids` keys FerrOVN sets on a pod's Interface row (Kube-OVN's names where they exist),
/// so a restarted agent can rebuild its state from OVSDB alone.
pub mod ext {
    pub const IFACE_ID: &str = "iface-id";
    pub const POD_NAME: &str = "pod_name";
    pub const POD_NAMESPACE: &str = "pod_namespace";
    pub const POD_NETNS: &str = "pod_netns";
    pub const IP: &str = "ip";
    pub const ATTACHED_MAC: &str = "attached-mac";
    pub const CONTAINER_ID: &str = "ferrovn_container_id";
    pub const IFNAME: &str = "ferrovn_ifname";
    pub const OWNER_TAG: &str = "ferrovn_owner";
    pub const VENDOR: &str = "vendor";
    pub const VENDOR_VALUE: &str = "ferrovn";
    pub const OVN_INSTALLED: &str = "ovn-installed";
}

#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error("OVSDB {remote}: {source}")]
    Ovsdb {
        remote: String,
        #[source]
        source: ferrovn_ovsdb::Error,
    },
    #[error("OVSDB {remote}: {what}")]
    Unexpected { remote: String, what: String },
    #[error(
        "Interface {iface}: external_ids:ovn-installed not \"true\" within {after:?} (is ovn-controller running and is the logical switch port {iface_id} in the NB?)"
    )]
    NotInstalled {
        iface: String,
        iface_id: String,
        after: Duration,
    },
}

/// What the node needs in OVSDB for ovn-controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOvsConfig {
    pub system_id: String,
    pub hostname: String,
    /// SB remote(s) for ovn-controller, e.g. `tcp:10.0.0.1:6642` or `unix:/run/ovn/ovnsb_db.sock`.
    pub ovn_remote: String,
    pub encap_type: String,
    pub encap_ip: String,
    pub bridge: String,
    /// `netdev` (userspace / DPDK) or `system` (kernel module): from the node profile.
    pub datapath_type: String,
}

impl NodeOvsConfig {
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        [
            ("system-id", self.system_id.as_str()),
            ("hostname", self.hostname.as_str()),
            ("ovn-remote", self.ovn_remote.as_str()),
            ("ovn-encap-type", self.encap_type.as_str()),
            ("ovn-encap-ip", self.encap_ip.as_str()),
            ("ovn-bridge", self.bridge.as_str()),
            ("ovn-bridge-datapath-type", self.datapath_type.as_str()),
            // ovn-controller then has every logical flow before a datapath becomes local:
            // without it, the first pod of a switch on a node is marked ovn-installed one SB
            // round trip before its switch's and router's flows arrive, and its first ARP
            // to the gateway is lost (the kernel retries after 1 s)
            ("ovn-monitor-all", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// How traffic INTO the pod is limited (OVS QoS on the port: OVS transmits into the pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressQos {
    /// `linux-htb` with `max-rate` (bit/s): a tc qdisc on a kernel device (veth host end).
    LinuxHtb { max_rate_bps: u64 },
    /// `egress-policer` with `cir` (bytes/s) and `cbs` (bytes): OVS-DPDK ports.
    EgressPolicer {
        cir_bytes_per_s: u64,
        cbs_bytes: u64,
    },
}

/// A pod's port on the integration bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    pub name: String,
    /// `Interface.type` ("" for a system device such as a veth end).
    pub iface_type: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// Traffic FROM the pod, policed as OVS receives it (`ingress_policing_rate`, kbit/s).
    pub ingress_policing_kbps: Option<u64>,
    pub egress_qos: Option<EgressQos>,
}

/// A pod Interface as found in OVSDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRecord {
    pub name: String,
    pub external_ids: BTreeMap<String, String>,
}

impl PortRecord {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.external_ids.get(key).map(String::as_str)
    }
}

fn string_map(pairs: &BTreeMap<String, String>) -> Datum {
    Datum::map(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn named(name: &str) -> Datum {
    Datum::set([Atom::NamedUuid(name.to_string())])
}

/// Sets the OVN keys of `Open_vSwitch.external_ids` (replacing their old values, leaving other
/// keys alone) and creates or updates the integration bridge. `root` is the Open_vSwitch row;
/// `bridge_exists` says whether a Bridge row of that name exists.
pub fn node_config_txn(cfg: &NodeOvsConfig, root: Uuid, bridge_exists: bool) -> Transaction {
    let ids = cfg.external_ids();
    let keys: Vec<&str> = ids.keys().map(String::as_str).collect();
    let mut txn = Transaction::new(OVS_DB);
    txn.push(
        Operation::mutate("Open_vSwitch")
            .filter(Condition::uuid(root))
            .mutation("external_ids", Mutator::Delete, Datum::set(keys))
            .mutation("external_ids", Mutator::Insert, string_map(&ids)),
    );
    let other_config = Datum::map([("disable-in-band", "true")]);
    if bridge_exists {
        txn.push(
            Operation::update("Bridge")
                .where_eq("name", cfg.bridge.as_str())
                .with("datapath_type", cfg.datapath_type.as_str())
                .with("fail_mode", "secure"),
        );
        txn.push(
            Operation::mutate("Bridge")
                .where_eq("name", cfg.bridge.as_str())
                .mutation(
                    "other_config",
                    Mutator::Delete,
                    Datum::set(["disable-in-band"]),
                )
                .mutation("other_config", Mutator::Insert, other_config),
        );
    } else {
        // guard: nobody created it since we looked (else the transaction fails and we retry)
        txn.push(
            Operation::wait("Bridge", vec!["name".into()], WaitUntil::Equal, vec![])
                .filter(Condition::eq("name", cfg.bridge.as_str()))
                .timeout_ms(0),
        );
        txn.push(
            Operation::insert("Interface")
                .with("name", cfg.bridge.as_str())
                .with("type", "internal")
                .named("iface"),
        );
        txn.push(
            Operation::insert("Port")
                .with("name", cfg.bridge.as_str())
                .with("interfaces", named("iface"))
                .named("port"),
        );
        txn.push(
            Operation::insert("Bridge")
                .with("name", cfg.bridge.as_str())
                .with("ports", named("port"))
                .with("datapath_type", cfg.datapath_type.as_str())
                .with("fail_mode", "secure")
                .with("other_config", other_config)
                .named("bridge"),
        );
        txn.push(
            Operation::mutate("Open_vSwitch")
                .filter(Condition::uuid(root))
                .mutation("bridges", Mutator::Insert, named("bridge")),
        );
    }
    txn
}

/// Adds `port` to `bridge` (Interface + Port rows, QoS when asked for).
pub fn add_port_txn(bridge: &str, port: &PodPort) -> Transaction {
    let mut txn = Transaction::new(OVS_DB);
    let mut iface = Operation::insert("Interface")
        .with("name", port.name.as_str())
        .with("type", port.iface_type.as_str())
        .with("external_ids", string_map(&port.external_ids))
        .named("iface");
    if !port.options.is_empty() {
        iface = iface.with("options", string_map(&port.options));
    }
    if let Some(kbps) = port.ingress_policing_kbps {
        // burst: a tenth of a second's worth, at least what one jumbo frame needs
        let burst = (kbps / 10).max(100);
        iface = iface
            .with(
                "ingress_policing_rate",
                Datum::from(Atom::Integer(kbps as i64)),
            )
            .with(
                "ingress_policing_burst",
                Datum::from(Atom::Integer(burst as i64)),
            );
    }
    txn.push(iface);
    let mut p = Operation::insert("Port")
        .with("name", port.name.as_str())
        .with("interfaces", named("iface"))
        .with("external_ids", string_map(&port.external_ids));
    if let Some(q) = port.egress_qos {
        let (ty, cfg): (&str, Vec<(String, String)>) = match q {
            EgressQos::LinuxHtb { max_rate_bps } => (
                "linux-htb",
                vec![("max-rate".into(), max_rate_bps.to_string())],
            ),
            EgressQos::EgressPolicer {
                cir_bytes_per_s,
                cbs_bytes,
            } => (
                "egress-policer",
                vec![
                    ("cir".into(), cir_bytes_per_s.to_string()),
                    ("cbs".into(), cbs_bytes.to_string()),
                ],
            ),
        };
        txn.push(
            Operation::insert("QoS")
                .with("type", ty)
                .with("other_config", Datum::map(cfg))
                .with(
                    "external_ids",
                    Datum::map([("ferrovn_port", port.name.as_str())]),
                )
                .named("qos"),
        );
        p = p.with("qos", named("qos"));
    }
    txn.push(p.named("port"));
    txn.push(
        Operation::mutate("Bridge")
            .where_eq("name", bridge)
            .mutation("ports", Mutator::Insert, named("port")),
    );
    txn
}

pub(crate) fn uuid_of(row: &BTreeMap<String, Datum>, col: &str) -> Vec<Uuid> {
    row.get(col)
        .and_then(Datum::as_atoms)
        .map(|atoms| atoms.iter().filter_map(Atom::as_uuid).collect())
        .unwrap_or_default()
}

pub(crate) fn string_of(row: &BTreeMap<String, Datum>, col: &str) -> Option<String> {
    row.get(col)?.as_atom()?.as_str().map(str::to_string)
}

/// A string-to-string map column of `row` (empty when absent).
pub(crate) fn map_of(row: &BTreeMap<String, Datum>, col: &str) -> BTreeMap<String, String> {
    row.get(col)
        .and_then(Datum::as_map)
        .map(|m| {
            m.as_slice()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn rows(results: &[OpResult], i: usize) -> &[BTreeMap<String, Datum>] {
    results.get(i).and_then(OpResult::rows).unwrap_or(&[])
}

/// A reconnecting OVSDB client for the node's Open_vSwitch database.
#[derive(Debug)]
pub struct OvsClient {
    remote: Remote,
    remote_text: String,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl OvsClient {
    pub async fn connect(remote: &str) -> Result<Self, OvsError> {
        let parsed = Remote::parse(remote).map_err(|source| OvsError::Ovsdb {
            remote: remote.to_string(),
            source,
        })?;
        let c = OvsClient {
            remote: parsed,
            remote_text: remote.to_string(),
            conn: tokio::sync::Mutex::new(None),
        };
        c.conn().await?;
        Ok(c)
    }

    pub fn remote(&self) -> &str {
        &self.remote_text
    }

    fn err(&self, source: ferrovn_ovsdb::Error) -> OvsError {
        OvsError::Ovsdb {
            remote: self.remote_text.clone(),
            source,
        }
    }

    async fn conn(&self) -> Result<Connection, OvsError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (c, _notes) = Connection::connect(&self.remote, &ConnectionOptions::default())
            .await
            .map_err(|e| self.err(e))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `txn`; a connection failure is retried once on a fresh connection.
    pub async fn transact(&self, txn: &Transaction) -> Result<Vec<OpResult>, OvsError> {
        let c = self.conn().await?;
        match c.transact(txn).await {
            Err(e) if e.is_connection_failure() => {
                let c = self.conn().await?;
                c.transact(txn).await.map_err(|e| self.err(e))
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// Idempotently writes the node's OVN settings and integration bridge.
    pub async fn ensure_node_config(&self, cfg: &NodeOvsConfig) -> Result<(), OvsError> {
        let mut last = None;
        for _ in 0..3 {
            let probe = Transaction::new(OVS_DB)
                .with(Operation::select("Open_vSwitch").columns(["_uuid"]))
                .with(
                    Operation::select("Bridge")
                        .where_eq("name", cfg.bridge.as_str())
                        .columns(["_uuid"]),
                );
            let res = self.transact(&probe).await?;
            let root = rows(&res, 0)
                .first()
                .and_then(|r| uuid_of(r, "_uuid").first().copied())
                .ok_or_else(|| OvsError::Unexpected {
                    remote: self.remote_text.clone(),
                    what: "no Open_vSwitch row (run `ovs-vsctl init` / start ovsdb-server with a created db)".into(),
                })?;
            let exists = !rows(&res, 1).is_empty();
            match self.transact(&node_config_txn(cfg, root, exists)).await {
                Ok(_) => return Ok(()),
                // lost a race creating the bridge: look again
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| OvsError::Unexpected {
            remote: self.remote_text.clone(),
            what: "node configuration did not apply".into(),
        }))
    }

    /// Whether a Bridge called `name` exists.
    pub async fn bridge_exists(&self, name: &str) -> Result<bool, OvsError> {
        let t = Transaction::new(OVS_DB).with(
            Operation::select("Bridge")
                .where_eq("name", name)
                .columns(["_uuid"]),
        );
        Ok(!rows(&self.transact(&t).await?, 0).is_empty())
    }

    /// Adds a pod port (after removing a leftover of the same name, if any).
    pub async fn add_port(&self, bridge: &str, port: &PodPort) -> Result<(), OvsError> {
        self.remove_port(&port.name).await?;
        self.transact(&add_port_txn(bridge, port)).await?;
        Ok(())
    }

    /// Removes the port named `name` from every bridge and its QoS. True if it existed.
    pub async fn remove_port(&self, name: &str) -> Result<bool, OvsError> {
        let probe = Transaction::new(OVS_DB).with(
            Operation::select("Port")
                .where_eq("name", name)
                .columns(["_uuid", "qos"]),
        );
        let res = self.transact(&probe).await?;
        let found = rows(&res, 0);
        if found.is_empty() {
            return Ok(false);
        }
        let mut txn = Transaction::new(OVS_DB);
        for r in found {
            for port in uuid_of(r, "_uuid") {
                // Interface is not a root table: once its Port is gone, so is it
                txn.push(
                    Operation::mutate("Bridge")
                        .filter(Condition::includes("ports", Datum::set([port])))
                        .mutation("ports", Mutator::Delete, Datum::set([port])),
                );
                // deleted explicitly (not left to garbage collection) so that its QoS, a root
                // row it references, can go in the same transaction
                txn.push(Operation::delete("Port").filter(Condition::uuid(port)));
            }
            for qos in uuid_of(r, "qos") {
                txn.push(Operation::delete("QoS").filter(Condition::uuid(qos)));
            }
        }
        self.transact(&txn).await?;
        Ok(true)
    }

    /// Interfaces whose external_ids include all of `filter` (e.g. vendor=ferrovn).
    pub async fn find_interfaces(
        &self,
        filter: &[(&str, &str)],
    ) -> Result<Vec<PortRecord>, OvsError> {
        let t = Transaction::new(OVS_DB).with(
            Operation::select("Interface")
                .filter(Condition::includes(
                    "external_ids",
                    Datum::map(filter.iter().copied()),
                ))
                .columns(["name", "external_ids"]),
        );
        let res = self.transact(&t).await?;
        Ok(rows(&res, 0)
            .iter()
            .filter_map(|r| {
                Some(PortRecord {
                    name: string_of(r, "name")?,
                    external_ids: map_of(r, "external_ids"),
                })
            })
            .collect())
    }

    /// Waits (server side: an OVSDB `wait` operation with a timeout, no polling) until
    /// ovn-controller marks Interface `name` with `external_ids:ovn-installed="true"`.
    pub async fn wait_ovn_installed(
        &self,
        name: &str,
        iface_id: &str,
        timeout: Duration,
    ) -> Result<(), OvsError> {
        let mut expected = BTreeMap::new();
        expected.insert("name".to_string(), Datum::from(name));
        let t = Transaction::new(OVS_DB).with(
            Operation::wait(
                "Interface",
                vec!["name".into()],
                WaitUntil::Equal,
                vec![expected],
            )
            .filter(Condition::eq("name", name))
            .filter(Condition::includes(
                "external_ids",
                Datum::map([(ext::OVN_INSTALLED, "true")]),
            ))
            .timeout_ms(timeout.as_millis() as u64),
        );
        let c = self.conn().await?;
        // the server answers at the latest when its timeout passes; allow for scheduling
        let call = tokio::time::timeout(timeout + Duration::from_secs(5), c.transact(&t)).await;
        match call {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ferrovn_ovsdb::Error::Transact(te)))
                if te
                    .ovsdb_error()
                    .is_some_and(|e| e.to_string().contains("timed out")) =>
            {
                Err(OvsError::NotInstalled {
                    iface: name.to_string(),
                    iface_id: iface_id.to_string(),
                    after: timeout,
                })
            }
            Ok(Err(e)) => Err(self.err(e)),
            Err(_) => Err(OvsError::NotInstalled {
                iface: name.to_string(),
                iface_id: iface_id.to_string(),
                after: timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> NodeOvsConfig {
        NodeOvsConfig {
            system_id: "node1".into(),
            hostname: "node1".into(),
            ovn_remote: "tcp:192.168.100.1:6642".into(),
            encap_type: "geneve".into(),
            encap_ip: "192.168.100.1".into(),
            bridge: "br-int".into(),
            datapath_type: "netdev".into(),
        }
    }

    #[test]
    fn new_bridge_transaction_shape() {
        let root = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
        let t = node_config_txn(&cfg(), root, false);
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v[0], "Open_vSwitch");
        assert_eq!(v[1]["op"], "mutate");
        assert_eq!(v[1]["mutations"][0][1], "delete");
        assert_eq!(v[1]["mutations"][1][1], "insert");
        let ins = &v[1]["mutations"][1][2];
        assert!(ins.to_string().contains("ovn-encap-ip"), "{ins}");
        assert_eq!(v[2]["op"], "wait");
        assert_eq!(v[5]["op"], "insert");
        assert_eq!(v[5]["table"], "Bridge");
        assert_eq!(v[5]["row"]["fail_mode"], "secure");
        assert_eq!(v[5]["row"]["datapath_type"], "netdev");
        assert_eq!(v[6]["mutations"][0][2], json!(["named-uuid", "bridge"]));
    }

    #[test]
    fn existing_bridge_is_updated_not_recreated() {
        let t = node_config_txn(&cfg(), Uuid::NIL, true);
        let v = serde_json::to_value(&t).expect("json");
        assert!(
            v.as_array()
                .expect("arr")
                .iter()
                .all(|op| op["op"] != "insert")
        );
        assert_eq!(v[2]["op"], "update");
    }

    #[test]
    fn port_with_qos() {
        let port = PodPort {
            name: "fv0123456789abc".into(),
            iface_type: String::new(),
            options: BTreeMap::new(),
            external_ids: [("iface-id".to_string(), "p.ns".to_string())].into(),
            ingress_policing_kbps: Some(10_000),
            egress_qos: Some(EgressQos::LinuxHtb {
                max_rate_bps: 20_000_000,
            }),
        };
        let v = serde_json::to_value(add_port_txn("br-int", &port)).expect("json");
        assert_eq!(v[1]["row"]["ingress_policing_rate"], 10_000);
        assert_eq!(v[2]["table"], "QoS");
        assert_eq!(v[2]["row"]["type"], "linux-htb");
        assert_eq!(v[3]["table"], "Port");
        assert_eq!(v[3]["row"]["qos"], json!(["named-uuid", "qos"]));
        assert_eq!(v[4]["op"], "mutate");
    }
}
