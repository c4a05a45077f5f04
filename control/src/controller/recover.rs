//! Recovery records read back from the NB: FerrOVN's own pod and node ports.

use std::net::IpAddr;

use ferrovn_ovsdb::{Atom, Datum};

use crate::controller::desired::node_owner;
use crate::ipam::{ExistingAllocation, MacAddr, OwnerKey, RecordSource};
use crate::reconcile::{NbSnapshot, Table};
use ferrovn_api::annotations::OVN_PROVIDER;

fn ext<'a>(ids: Option<&'a Datum>, key: &str) -> Option<&'a str> {
    ids?.as_map()?.get_str(key)?.as_str()
}

/// The allocations the NB's owned ports hold (`addresses` "MAC IP [IP6]", the owner from
/// `external_ids`).
pub fn nb_records(snap: &NbSnapshot) -> Vec<ExistingAllocation> {
    let mut out = Vec::new();
    for row in snap.rows(Table::LogicalSwitchPort) {
        if row.owned_key().is_none() {
            continue;
        }
        let ids = row.columns.get("external_ids");
        let Some(subnet) = ext(ids, "ls") else {
            continue;
        };
        let owner = if let Some(pod) = ext(ids, "pod_name") {
            OwnerKey::new(
                ext(ids, "namespace").unwrap_or_default(),
                pod,
                ext(ids, "provider").unwrap_or(OVN_PROVIDER),
            )
        } else if let Some(node) = ext(ids, "node").filter(|_| ext(ids, "pod").is_none()) {
            node_owner(node)
        } else {
            continue;
        };
        let Some(first) = row
            .columns
            .get("addresses")
            .and_then(Datum::as_atoms)
            .and_then(|a| a.first())
            .and_then(Atom::as_str)
        else {
            continue;
        };
        let mut parts = first.split_whitespace();
        let mac = parts.next().and_then(|m| m.parse::<MacAddr>().ok());
        let ips: Vec<IpAddr> = parts.filter_map(|p| p.parse().ok()).collect();
        if ips.is_empty() {
            continue;
        }
        out.push(ExistingAllocation {
            owner,
            subnet: subnet.to_string(),
            ips,
            mac,
            source: RecordSource::NbPort,
        });
    }
    out
}
