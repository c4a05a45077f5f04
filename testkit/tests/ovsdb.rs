//! The test fixtures themselves: real ovsdb-server, Raft cluster, OVN central.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_ovsdb::{Connection, ConnectionOptions, Remote};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::{OvnCentral, OvsdbServer, RaftCluster};
use serde_json::json;

async fn list_dbs(remote: &str) -> Vec<String> {
    let remote = Remote::parse(remote).unwrap();
    let (conn, _n) = Connection::connect(&remote, &ConnectionOptions::default())
        .await
        .unwrap();
    let v = conn.call("list_dbs", json!([])).await.unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn server_serves_unix_and_tcp_and_survives_restart_with_its_data() {
    let mut server = OvsdbServer::start_tcp(nb_schema()).unwrap();
    let dbs = list_dbs(&server.remote()).await;
    assert!(dbs.contains(&"OVN_Northbound".to_string()), "{dbs:?}");
    let tcp = server.tcp_remote().unwrap();
    assert!(list_dbs(&tcp).await.contains(&"OVN_Northbound".to_string()));

    server
        .transact(&json!(["OVN_Northbound", {"op": "insert", "table": "Logical_Switch", "row": {"name": "kept"}}]))
        .unwrap();
    let pid = server.pid().unwrap();
    server.restart().unwrap();
    assert_ne!(server.pid().unwrap(), pid);
    assert_eq!(
        server.tcp_remote().unwrap(),
        tcp,
        "tcp port kept across restart"
    );
    let rows = server
        .transact(&json!(["OVN_Northbound", {"op": "select", "table": "Logical_Switch", "where": [], "columns": ["name"]}]))
        .unwrap();
    assert_eq!(rows[0]["rows"], json!([{"name": "kept"}]));

    let dir = server.dir().to_owned();
    let pid = server.pid().unwrap();
    drop(server);
    assert!(!dir.exists(), "temp dir removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server process reaped"
    );
}

#[tokio::test]
async fn raft_cluster_elects_a_leader_and_re_elects_after_a_kill() {
    let mut cluster = RaftCluster::start(nb_schema(), 3).unwrap();
    assert_eq!(cluster.db_name(), "OVN_Northbound");
    assert_eq!(cluster.remotes().split(',').count(), 3);
    let leader = cluster.leader().unwrap();
    for m in cluster.members() {
        assert!(
            list_dbs(&m.remote())
                .await
                .contains(&"OVN_Northbound".to_string())
        );
    }
    cluster.kill(leader);
    let new_leader = cluster
        .wait_leader(std::time::Duration::from_secs(20))
        .unwrap();
    assert_ne!(new_leader, leader);
}

#[tokio::test]
async fn ovn_central_translates_nb_into_sb() {
    let central = OvnCentral::start().unwrap();
    central.nbctl(&["ls-add", "sw0"]).unwrap();
    central.sync_sb().unwrap();
    let out = central
        .sbctl(&["--columns=external_ids", "list", "Datapath_Binding"])
        .unwrap();
    assert!(
        out.contains("sw0"),
        "northd did not create the datapath: {out}"
    );
}
