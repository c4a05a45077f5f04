//! A 3-member Raft cluster whose leader is killed during a stream of writes.

use std::collections::BTreeSet;
use std::time::Duration;

use ferrovn_ovsdb::{
    Client, ClientOptions, ConnectionOptions, Error, MonitorSpec, Operation, Transaction,
};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::RaftCluster;

const NB: &str = "OVN_Northbound";

fn names(d: &ferrovn_ovsdb::ReplicaData) -> BTreeSet<String> {
    d.rows("Logical_Switch")
        .filter_map(|(_, r)| r.get("name")?.as_atom()?.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_leader_and_every_acknowledged_write_survives() {
    let mut cluster = RaftCluster::start(nb_schema(), 3).unwrap();
    let first_leader = cluster.leader().unwrap();
    let opts = ClientOptions {
        connection: ConnectionOptions {
            probe_interval: Some(Duration::from_secs(2)),
            ..Default::default()
        },
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..Default::default()
    };
    let client = Client::connect(&cluster.remotes(), NB, opts).await.unwrap();
    let conn = client.connection().await.unwrap();
    assert_eq!(
        conn.remote(),
        cluster.members()[first_leader].remote(),
        "writes go to the leader"
    );
    let replica = client
        .replica(MonitorSpec::new().table_columns("Logical_Switch", &["name"]))
        .await
        .unwrap();

    let (initial, mut changes) = replica.subscribe_with(names);
    assert!(initial.is_empty());

    // Four writers, no pauses: some transactions are in flight when the leader dies.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acked = BTreeSet::new();
                let mut failures = 0;
                for i in 0..40 {
                    let name = format!("w{w}-{i}");
                    loop {
                        let txn = Transaction::new(NB)
                            .with(Operation::insert("Logical_Switch").with("name", name.as_str()));
                        match client.transact(&txn).await {
                            Ok(_) => {
                                acked.insert(name.clone());
                                break;
                            }
                            Err(e) => {
                                // Outcome unknown (connection lost mid-request) or no leader
                                // yet: try again (a duplicate is harmless here).
                                assert!(
                                    e.is_connection_failure()
                                        || matches!(e, Error::Timeout { .. } | Error::Transact(_)),
                                    "{e}"
                                );
                                failures += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
                (acked, failures)
            })
        })
        .collect();
    // Kill the leader once the stream is under way.
    replica
        .wait_for(Duration::from_secs(20), |d| {
            (d.len("Logical_Switch") >= 40).then_some(())
        })
        .await
        .unwrap();
    cluster.kill(first_leader);
    let mut acked = BTreeSet::new();
    let mut failures = 0;
    for w in writers {
        let (a, f) = w.await.unwrap();
        acked.extend(a);
        failures += f;
    }
    assert_eq!(acked.len(), 160);
    eprintln!("transactions retried after the leader kill: {failures}");

    let new_leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    assert_ne!(new_leader, first_leader);
    let conn = client.connection().await.unwrap();
    assert_eq!(conn.remote(), cluster.members()[new_leader].remote());
    assert!(client.connection_count() >= 2);

    // Every acknowledged write is in the database (fresh select on the new leader) and in
    // the replica, which resumed from its transaction id instead of a full resync.
    let rows = client
        .transact(&Transaction::new(NB).with(Operation::select("Logical_Switch").columns(["name"])))
        .await
        .unwrap();
    let selected: BTreeSet<String> = rows[0]
        .rows()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("name")?.as_atom()?.as_str().map(str::to_owned))
        .collect();
    assert!(
        acked.is_subset(&selected),
        "lost: {:?}",
        acked.difference(&selected).collect::<Vec<_>>()
    );
    let sel = selected.clone();
    replica
        .wait_for(Duration::from_secs(20), |d| (names(d) == sel).then_some(()))
        .await
        .unwrap();
    // The change stream, replayed from the empty start, gives exactly the final rows.
    let mut replay: std::collections::BTreeMap<ferrovn_ovsdb::Uuid, String> = Default::default();
    while let Ok(batch) = changes.try_recv() {
        for ch in &batch.changes {
            match (&ch.old, &ch.new) {
                (None, Some(new)) => {
                    let n = new["name"].as_atom().unwrap().as_str().unwrap().to_owned();
                    assert!(replay.insert(ch.uuid, n).is_none(), "duplicate insert");
                }
                (Some(_), None) => assert!(replay.remove(&ch.uuid).is_some(), "unknown delete"),
                _ => {}
            }
        }
    }
    assert_eq!(replay.into_values().collect::<BTreeSet<_>>(), selected);
    let stats = replica.stats();
    assert_eq!(stats.snapshots, 1, "{stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfer_moves_the_client_to_the_new_leader() {
    let cluster = RaftCluster::start(nb_schema(), 3).unwrap();
    let client = Client::connect(&cluster.remotes(), NB, ClientOptions::default())
        .await
        .unwrap();
    let replica = client
        .replica(MonitorSpec::new().table_columns("Logical_Switch", &["name"]))
        .await
        .unwrap();
    let insert = |name: &str| {
        Transaction::new(NB).with(Operation::insert("Logical_Switch").with("name", name))
    };
    client.transact(&insert("before")).await.unwrap();
    let leader = cluster.leader().unwrap();
    assert_eq!(
        client.connection().await.unwrap().remote(),
        cluster.members()[leader].remote()
    );
    let old = cluster.transfer_leadership().unwrap();
    assert_eq!(old, leader);
    // No process died: the client notices through its _Server monitor and moves over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let conn = client.connection().await.unwrap();
        if conn.remote() != cluster.members()[old].remote() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "client stayed on the old leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        client.connection().await.unwrap().remote(),
        cluster.members()[new].remote()
    );
    client.transact(&insert("after")).await.unwrap();
    let want: BTreeSet<String> = ["before", "after"].map(String::from).into();
    replica
        .wait_for(Duration::from_secs(20), |d| {
            (names(d) == want).then_some(())
        })
        .await
        .unwrap();
    assert_eq!(replica.stats().snapshots, 1);
    assert!(replica.stats().resumes >= 1);
}
