//! Userspace TSO on nodes whose integration bridge uses the userspace (`netdev`) datapath.
//!
//! Without it, ovs-vswitchd's userspace datapath cannot take checksum-offloaded or TSO packets
//! from a veth and put them into a Geneve tunnel, so every veth pod has to run with tx offloads
//! off and TCP crawls at ~1 Gbit/s. OVS >= 3.3 segments and checksums in software on the way into
//! a tunnel when `other_config:userspace-tso-enable=true`; with it a pod keeps its offloads and
//! same-node TCP is ~9x faster (docs/node-agent.md, "Userspace TSO").
//!
//! The key must be in the database BEFORE ovs-vswitchd starts. Written under a running
//! ovs-vswitchd it is worse than useless: the daemon turns TSO on at its next reconfiguration,
//! but its AF_PACKET sockets were opened without `PACKET_VNET_HDR`, so every packet it then sends
//! to a veth or the underlay carries a 10-byte virtio-net header in front of its Ethernet header
//! (measured: 42-byte ARP replies leave as 52-byte garbage; pods lose their gateway, tunnel
//! endpoints their neighbours). So the agent:
//! - finds the key set: TSO is on (node setup wrote it before starting ovs-vswitchd);
//! - finds it unset and ovs-vswitchd has never run against this database (`iface_types`, which
//!   the daemon fills at start, is empty): writes it, and the daemon starts with TSO;
//! - finds it unset under a daemon that has run: leaves it alone and reports that the node needs
//!   the key written and ovs-vswitchd restarted. Its pods keep tx offloads off, which is correct
//!   without TSO.

use ferrovn_ovsdb::{Atom, Condition, Datum, Mutator, Operation, Transaction, Uuid};

use crate::ovs::{OVS_DB, OvsClient, OvsError, map_of};

/// The `Open_vSwitch.other_config` key.
pub const KEY: &str = "userspace-tso-enable";

/// What the agent found and did about userspace TSO at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsoStart {
    /// The running (or next starting) ovs-vswitchd segments in software: pods keep offloads.
    pub active: bool,
    /// ovs-vswitchd runs without TSO: write the key and restart it to get TSO.
    pub restart_required: bool,
}

/// What the database says before the agent writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsoFacts {
    /// The current value of the key, if any.
    pub value: Option<String>,
    /// ovs-vswitchd has run against this database (it fills `Open_vSwitch.iface_types`).
    pub vswitchd_has_run: bool,
}

/// Whether to write the key, and the outcome once written. Pure.
pub fn plan(facts: &TsoFacts) -> (bool, TsoStart) {
    if facts.value.as_deref() == Some("true") {
        return (
            false,
            TsoStart {
                active: true,
                restart_required: false,
            },
        );
    }
    if facts.vswitchd_has_run {
        return (
            false,
            TsoStart {
                active: false,
                restart_required: true,
            },
        );
    }
    (
        true,
        TsoStart {
            active: true,
            restart_required: false,
        },
    )
}

/// The transaction setting the key to `true` on the root row.
pub fn enable_txn(root: Uuid) -> Transaction {
    Transaction::new(OVS_DB).with(
        Operation::mutate("Open_vSwitch")
            .filter(Condition::uuid(root))
            .mutation("other_config", Mutator::Delete, Datum::set([KEY]))
            .mutation("other_config", Mutator::Insert, Datum::map([(KEY, "true")])),
    )
}

/// Reads the facts, writes the key when needed, and says whether pods may keep tx offloads.
pub async fn ensure(ovs: &OvsClient) -> Result<TsoStart, OvsError> {
    let probe = Transaction::new(OVS_DB).with(Operation::select("Open_vSwitch").columns([
        "_uuid",
        "other_config",
        "iface_types",
    ]));
    let res = ovs.transact(&probe).await?;
    let row = res
        .first()
        .and_then(|r| r.rows())
        .and_then(|r| r.first())
        .ok_or_else(|| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: "no Open_vSwitch row".into(),
        })?;
    let root = row
        .get("_uuid")
        .and_then(Datum::as_atom)
        .and_then(Atom::as_uuid)
        .ok_or_else(|| OvsError::Unexpected {
            remote: ovs.remote().to_string(),
            what: "Open_vSwitch row without _uuid".into(),
        })?;
    let facts = TsoFacts {
        value: map_of(row, "other_config").remove(KEY),
        vswitchd_has_run: row
            .get("iface_types")
            .and_then(Datum::as_atoms)
            .is_some_and(|t| !t.is_empty()),
    };
    let (write, start) = plan(&facts);
    if write {
        ovs.transact(&enable_txn(root)).await?;
    }
    if start.restart_required {
        tracing::warn!(
            key = KEY,
            "ovs-vswitchd runs without userspace TSO: set other_config:userspace-tso-enable=true and restart it (writing it under the running daemon would corrupt its traffic); until then pods run with tx offloads off"
        );
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(value: Option<&str>, vswitchd_has_run: bool) -> TsoFacts {
        TsoFacts {
            value: value.map(str::to_string),
            vswitchd_has_run,
        }
    }

    #[test]
    fn already_enabled_before_start_is_active_and_untouched() {
        let (write, s) = plan(&facts(Some("true"), true));
        assert!(!write);
        assert!(s.active && !s.restart_required);
    }

    #[test]
    fn written_before_vswitchd_ever_ran_is_active_without_restart() {
        let (write, s) = plan(&facts(None, false));
        assert!(write);
        assert!(s.active && !s.restart_required);
    }

    #[test]
    fn never_written_under_a_running_vswitchd_which_needs_a_restart() {
        for v in [None, Some("false"), Some("yes")] {
            let (write, s) = plan(&facts(v, true));
            assert!(!write, "{v:?}");
            assert!(!s.active && s.restart_required, "{v:?}");
        }
    }

    #[test]
    fn enable_txn_replaces_only_the_key() {
        let t = serde_json::to_value(enable_txn(Uuid::NIL)).expect("json");
        let m = &t[1]["mutations"];
        assert_eq!(m[0][1], "delete");
        assert_eq!(m[0][2].to_string(), serde_json::json!(KEY).to_string());
        assert_eq!(m[1][1], "insert");
        assert_eq!(m[1][2], serde_json::json!(["map", [[KEY, "true"]]]));
    }
}
