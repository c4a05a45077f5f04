//! Typed rows (the generated `nb` module) written to and read back from a real ovsdb-server
//! serving the committed schema copy.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_ovsdb::nb::{self, LogicalSwitch, LogicalSwitchPort};
use ferrovn_ovsdb::{OpResult, Operation, Row, Transaction, Uuid};
use ferrovn_testkit::ovsdb::OvsdbServer;
use ferrovn_testkit::require::{Need, require};

const NB_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/ovn-nb.ovsschema");

fn server(test: &str) -> Option<OvsdbServer> {
    let needs = [
        Need::Tool("ovsdb-server"),
        Need::Tool("ovsdb-tool"),
        Need::Tool("ovsdb-client"),
    ];
    require(test, &needs).then(|| OvsdbServer::start(NB_COPY).expect("ovsdb-server starts"))
}

fn run(server: &OvsdbServer, txn: &Transaction) -> Vec<OpResult> {
    let reply = server
        .transact(&txn.params())
        .expect("ovsdb-client transact");
    txn.parse_reply(&reply).expect("transaction succeeds")
}

fn select_all<R: Row>(server: &OvsdbServer) -> Vec<R> {
    let txn = Transaction::new(nb::SCHEMA_NAME).with(Operation::select(R::TABLE));
    let out = run(server, &txn);
    out[0]
        .rows()
        .expect("select rows")
        .iter()
        .map(|row| {
            let uuid = row
                .get("_uuid")
                .and_then(|d| d.as_atom())
                .and_then(|a| a.as_uuid())
                .expect("_uuid");
            R::from_columns(uuid, row).expect("typed row")
        })
        .collect()
}

#[test]
fn typed_rows_round_trip_through_ovsdb_server() {
    let Some(server) = server("typed_rows_round_trip_through_ovsdb_server") else {
        return;
    };
    let port = LogicalSwitchPort {
        uuid: Uuid::new_v4(),
        name: "pod-a".into(),
        addresses: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
        port_security: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
        external_ids: [("pod".to_string(), "default/a".to_string())].into(),
        tag_request: Some(0),
        enabled: Some(true),
        ..Default::default()
    };
    let switch = LogicalSwitch {
        uuid: Uuid::new_v4(),
        name: "subnet-1".into(),
        ports: [port.uuid].into(),
        other_config: [("subnet".to_string(), "10.0.0.0/24".to_string())].into(),
        ..Default::default()
    };
    // The switch references the port by the UUID chosen here, inside one transaction.
    let txn = Transaction::new(nb::SCHEMA_NAME)
        .with(port.insert_op())
        .with(switch.insert_op());
    let out = run(&server, &txn);
    assert_eq!(out[0].uuid(), Some(port.uuid));
    assert_eq!(out[1].uuid(), Some(switch.uuid));

    assert_eq!(select_all::<LogicalSwitchPort>(&server), vec![port.clone()]);
    assert_eq!(select_all::<LogicalSwitch>(&server), vec![switch.clone()]);

    let mut changed = port.clone();
    changed.tag_request = None;
    changed.external_ids.insert("node".into(), "n1".into());
    let txn =
        Transaction::new(nb::SCHEMA_NAME).with(changed.update_op(&["tag_request", "external_ids"]));
    assert_eq!(run(&server, &txn)[0].count(), Some(1));
    assert_eq!(select_all::<LogicalSwitchPort>(&server), vec![changed]);

    let txn = Transaction::new(nb::SCHEMA_NAME).with(switch.delete_op());
    assert_eq!(run(&server, &txn)[0].count(), Some(1));
    // The port was only kept alive by the switch's reference (non-root table).
    assert!(select_all::<LogicalSwitchPort>(&server).is_empty());
}

/// The worked example of docs/ovsdb-codegen.md, through the client and a replica.
#[tokio::test]
async fn typed_rows_through_client_and_replica() {
    use ferrovn_ovsdb::{Client, ClientOptions, MonitorSpec};
    let Some(server) = server("typed_rows_through_client_and_replica") else {
        return;
    };
    let client = Client::connect(
        &server.remote(),
        nb::SCHEMA_NAME,
        ClientOptions {
            expected_schema_version: Some(nb::SCHEMA_VERSION),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let port = LogicalSwitchPort {
        uuid: Uuid::new_v4(),
        name: "pod-a".into(),
        addresses: ["0a:00:00:00:00:01 10.0.0.5".to_string()].into(),
        external_ids: [("pod".to_string(), "default/a".to_string())].into(),
        ..Default::default()
    };
    let switch = LogicalSwitch {
        uuid: Uuid::new_v4(),
        name: "subnet-1".into(),
        ports: [port.uuid].into(),
        ..Default::default()
    };
    let results = client
        .transact(
            &Transaction::new(nb::SCHEMA_NAME)
                .with(port.insert_op())
                .with(switch.insert_op()),
        )
        .await
        .expect("insert");
    assert_eq!(results[0].uuid(), Some(port.uuid));

    let mut changed = port.clone();
    changed.external_ids.insert("node".into(), "n1".into());
    client
        .transact(&Transaction::new(nb::SCHEMA_NAME).with(changed.update_op(&["external_ids"])))
        .await
        .expect("update");

    let replica = client
        .replica(MonitorSpec::new().table(LogicalSwitchPort::TABLE))
        .await
        .expect("replica");
    let ports: Vec<LogicalSwitchPort> = replica
        .read(|data| {
            data.rows(LogicalSwitchPort::TABLE)
                .map(|(uuid, row)| LogicalSwitchPort::from_columns(*uuid, row))
                .collect::<Result<_, _>>()
        })
        .expect("typed rows");
    assert_eq!(ports, vec![changed]);
    client.shutdown();
}
