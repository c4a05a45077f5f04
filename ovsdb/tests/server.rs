//! The client against a real ovsdb-server: every transact operation, typed errors, all monitor
//! flavours, the replica, locks, pipelining, restarts, and hostile peers.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use ferrovn_ovsdb::{
    Atom, ChangeKind, Client, ClientOptions, Condition, Connection, ConnectionOptions, Datum,
    Error, LockEvent, MonitorSpec, Mutator, OpResult, Operation, OvsdbErrorKind, Remote,
    SchemaVersion, TransactError, Transaction, Uuid, WaitUntil,
};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;
use serde_json::{Value, json};

const NB: &str = "OVN_Northbound";
const T: Duration = Duration::from_secs(20);

async fn client(server: &OvsdbServer) -> Client {
    Client::connect(&server.remote(), NB, ClientOptions::default())
        .await
        .unwrap()
}

async fn raw_conn(remote: &str) -> (Connection, ferrovn_ovsdb::Notifications) {
    Connection::connect(
        &Remote::parse(remote).unwrap(),
        &ConnectionOptions::default(),
    )
    .await
    .unwrap()
}

fn ls_names_by_select(server: &OvsdbServer) -> Vec<String> {
    let r = server
        .transact(&json!([NB, {"op": "select", "table": "Logical_Switch", "where": [], "columns": ["name"]}]))
        .unwrap();
    let mut names: Vec<String> = r[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn s(v: &str) -> Datum {
    Datum::from(v)
}

#[tokio::test]
async fn every_transact_operation_against_a_real_server() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let c = client(&server).await;

    // insert with named-uuid references inside one transaction
    let txn = Transaction::new(NB)
        .with(
            Operation::insert("Logical_Switch_Port")
                .with("name", "p1")
                .named("p1"),
        )
        .with(
            Operation::insert("Logical_Switch")
                .with("name", "sw0")
                .with("ports", Datum::set([Atom::NamedUuid("p1".into())]))
                .with("other_config", Datum::map([("k", "v")]))
                .named("sw"),
        )
        .with(Operation::comment("ferrovn test"));
    let res = c.transact(&txn).await.unwrap();
    assert_eq!(res.len(), 3);
    let port = res[0].uuid().unwrap();
    let sw = res[1].uuid().unwrap();
    assert_eq!(res[2], OpResult::Empty);

    // select returns the reference
    let sel = c
        .transact(
            &Transaction::new(NB).with(
                Operation::select("Logical_Switch")
                    .where_eq("name", "sw0")
                    .columns(["_uuid", "ports", "other_config"]),
            ),
        )
        .await
        .unwrap();
    let rows = sel[0].rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["ports"].as_atom().and_then(Atom::as_uuid),
        Some(port)
    );
    assert_eq!(rows[0]["_uuid"].as_atom().and_then(Atom::as_uuid), Some(sw));

    // update + mutate + wait + commit in one transaction
    let res = c
        .transact(
            &Transaction::new(NB)
                .with(
                    Operation::wait(
                        "Logical_Switch",
                        vec!["name".into()],
                        WaitUntil::Equal,
                        vec![BTreeMap::from([("name".to_string(), s("sw0"))])],
                    )
                    .filter(Condition::uuid(sw))
                    .timeout_ms(0),
                )
                .with(
                    Operation::update("Logical_Switch")
                        .filter(Condition::uuid(sw))
                        .with("name", "sw1"),
                )
                .with(
                    Operation::mutate("Logical_Switch")
                        .filter(Condition::uuid(sw))
                        .mutation("other_config", Mutator::Insert, Datum::map([("a", "b")])),
                )
                .with(Operation::commit(true)),
        )
        .await
        .unwrap();
    assert_eq!(res[1].count(), Some(1));
    assert_eq!(res[2].count(), Some(1));
    let r = server
        .transact(&json!([NB, {"op": "select", "table": "Logical_Switch", "where": [], "columns": ["name", "other_config"]}]))
        .unwrap();
    assert_eq!(r[0]["rows"][0]["name"], "sw1");
    assert_eq!(
        r[0]["rows"][0]["other_config"],
        json!(["map", [["a", "b"], ["k", "v"]]])
    );

    // a wait that does not hold times out, typed
    let err = c
        .transact(
            &Transaction::new(NB).with(
                Operation::wait(
                    "Logical_Switch",
                    vec!["name".into()],
                    WaitUntil::Equal,
                    vec![BTreeMap::from([("name".to_string(), s("nope"))])],
                )
                .filter(Condition::uuid(sw))
                .timeout_ms(0),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(op_kind(&err), Some(OvsdbErrorKind::TimedOut), "{err}");

    // abort
    let err = c
        .transact(&Transaction::new(NB).with(Operation::abort()))
        .await
        .unwrap_err();
    assert_eq!(op_kind(&err), Some(OvsdbErrorKind::Aborted), "{err}");

    // assert without and with the lock
    let err = c
        .transact(&Transaction::new(NB).with(Operation::assert_lock("L")))
        .await
        .unwrap_err();
    assert_eq!(op_kind(&err), Some(OvsdbErrorKind::NotOwner), "{err}");
    assert!(c.lock("L").await.unwrap());
    c.transact(&Transaction::new(NB).with(Operation::assert_lock("L")))
        .await
        .unwrap();
    c.unlock("L").await.unwrap();

    // delete: a referenced port cannot go while the switch holds it (strong ref is fine
    // to delete? ports are strong refs from a root table, so the port is GC'd with the switch)
    let res = c
        .transact(
            &Transaction::new(NB)
                .with(Operation::delete("Logical_Switch").filter(Condition::uuid(sw))),
        )
        .await
        .unwrap();
    assert_eq!(res[0].count(), Some(1));
    assert!(ls_names_by_select(&server).is_empty());
    let r = server
        .transact(&json!([NB, {"op": "select", "table": "Logical_Switch_Port", "where": []}]))
        .unwrap();
    assert_eq!(
        r[0]["rows"],
        json!([]),
        "non-root port garbage-collected with its switch"
    );
}

fn op_kind(e: &Error) -> Option<OvsdbErrorKind> {
    match e {
        Error::Transact(t) => t.kind().cloned(),
        _ => None,
    }
}

#[tokio::test]
async fn constraint_violations_and_bad_requests_are_typed_errors() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let c = client(&server).await;
    // Address_Set has a unique index on name: the second insert fails at commit.
    c.transact(&Transaction::new(NB).with(Operation::insert("Address_Set").with("name", "as1")))
        .await
        .unwrap();
    let err = c
        .transact(&Transaction::new(NB).with(Operation::insert("Address_Set").with("name", "as1")))
        .await
        .unwrap_err();
    let Error::Transact(TransactError::Commit { error }) = &err else {
        panic!("expected a commit error, got {err:?}");
    };
    assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation);
    assert_eq!(error.table.as_deref(), Some("Address_Set"), "{error}");

    // An unknown column is a syntax error naming the column.
    let err = c
        .transact(
            &Transaction::new(NB).with(Operation::insert("Logical_Switch").with("bogus", 1i64)),
        )
        .await
        .unwrap_err();
    let Error::Transact(TransactError::Operation {
        index: 0, error, ..
    }) = &err
    else {
        panic!("expected an operation error, got {err:?}");
    };
    assert_eq!(error.column.as_deref(), Some("bogus"), "{error}");

    // Unknown database: a JSON-RPC level error.
    let err = c.get_schema("Nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::Rpc { error, .. } if error == "unknown database"),
        "{err:?}"
    );
    let err = c
        .transact_raw(json!(["Nope", {"op": "comment", "comment": "x"}]))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Rpc { .. }), "{err:?}");
    // The connection survives all of that.
    assert_eq!(
        c.list_dbs().await.unwrap(),
        vec!["OVN_Northbound", "_Server"]
    );
    assert_eq!(c.echo(json!(["hi", 1])).await.unwrap(), json!(["hi", 1]));
    assert_eq!(c.connection_count(), 1);
}

#[tokio::test]
async fn schema_version_is_checked_at_connect() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let c = client(&server).await;
    let v = c.schema().unwrap().version;
    let ok = ClientOptions {
        expected_schema_version: Some(v),
        ..Default::default()
    };
    Client::connect(&server.remote(), NB, ok).await.unwrap();
    let bad = ClientOptions {
        expected_schema_version: Some(SchemaVersion::new(v.major + 1, 0, 0)),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = Client::connect(&server.remote(), NB, bad)
        .await
        .unwrap_err();
    let Error::SchemaMismatch {
        database,
        server: sv,
        compiled,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (database.as_str(), sv.as_str()),
        (NB, v.to_string().as_str())
    );
    assert_eq!(compiled, &format!("{}.0.0", v.major + 1));
    assert!(err.to_string().contains("schema mismatch"));
}

#[tokio::test]
async fn thousand_requests_in_flight_on_one_connection() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let c = client(&server).await;
    let conn = c.connection().await.unwrap();
    let calls = (0..1000).map(|i| {
        let conn = conn.clone();
        async move {
            let params = json!([NB, {"op": "insert", "table": "Logical_Switch", "row": {"name": format!("ls{i}")}}]);
            (i, conn.transact_raw(params).await)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut uuids = std::collections::HashSet::new();
    for (i, r) in results {
        let r = r.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert!(uuids.insert(r[0]["uuid"][1].as_str().unwrap().to_owned()));
    }
    assert_eq!(ls_names_by_select(&server).len(), 1000);
    // Mixed methods, interleaved, each gets its own answer.
    let echoes = (0..1000).map(|i| {
        let conn = conn.clone();
        async move { conn.echo(json!([i])).await.unwrap() == json!([i]) }
    });
    assert!(
        futures::future::join_all(echoes)
            .await
            .into_iter()
            .all(|ok| ok)
    );
}

#[tokio::test]
async fn raw_monitor_flavours_see_a_second_clients_changes() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let (conn, mut notes) = raw_conn(&server.remote()).await;
    let req = json!({"Logical_Switch": {"columns": ["name", "other_config"]}});
    let initial = conn.monitor(NB, json!("m1"), req).await.unwrap();
    assert_eq!(initial, json!({}));
    let cond_req =
        json!({"Logical_Switch": [{"columns": ["name"], "where": [["name", "==", "b"]]}]});
    conn.monitor_cond(NB, json!(["m", 2]), cond_req)
        .await
        .unwrap();
    let since = conn
        .monitor_cond_since(
            NB,
            json!("m3"),
            json!({"Logical_Switch": [{"columns": ["name"]}]}),
            None,
        )
        .await
        .unwrap();
    assert!(!since.found);

    // A second, independent client (ovsdb-client) inserts two switches.
    server
        .transact(&json!([NB,
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "a"}},
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "b"}}]))
        .unwrap();
    let mut by_method = BTreeMap::new();
    while by_method.len() < 3 {
        let n = tokio::time::timeout(T, notes.recv())
            .await
            .unwrap()
            .unwrap();
        by_method.insert(n.method.clone(), n.params);
    }
    // update (RFC 7047): both rows, "new" only.
    let upd = &by_method["update"];
    assert_eq!(upd[0], "m1");
    assert_eq!(upd[1]["Logical_Switch"].as_object().unwrap().len(), 2);
    // update2 with condition: only "b".
    let upd2 = &by_method["update2"];
    assert_eq!(upd2[0], json!(["m", 2]));
    let rows: Vec<&Value> = upd2[1]["Logical_Switch"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(rows, vec![&json!({"insert": {"name": "b"}})]);
    // update3 carries a transaction id.
    let upd3 = &by_method["update3"];
    assert_eq!(upd3[0], "m3");
    assert!(upd3[1].is_string());

    // monitor_cond_change: widen m2 to "a" too; the server sends the newly matching row.
    conn.monitor_cond_change(
        json!(["m", 2]),
        json!("m2b"),
        json!({"Logical_Switch": [{"where": [["name", "==", "a"]]}]}),
    )
    .await
    .unwrap();
    let n = loop {
        let n = tokio::time::timeout(T, notes.recv())
            .await
            .unwrap()
            .unwrap();
        if n.method == "update2" {
            break n;
        }
    };
    assert_eq!(n.params[0], "m2b");
    let changes: Vec<&Value> = n.params[1]["Logical_Switch"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert!(
        changes.contains(&&json!({"insert": {"name": "a"}})),
        "{changes:?}"
    );
    assert!(
        changes.contains(&&json!({"delete": null})) || changes.len() == 2,
        "{changes:?}"
    );

    // monitor_cancel: no more updates for m1; cancelling twice is an error.
    conn.monitor_cancel(json!("m1")).await.unwrap();
    let err = conn.monitor_cancel(json!("m1")).await.unwrap_err();
    assert!(matches!(err, Error::Rpc { .. }), "{err:?}");
    conn.set_db_change_aware(true).await.unwrap();
}

#[tokio::test]
async fn replica_follows_inserts_modifies_and_deletes_of_another_client() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    server
        .transact(&json!([NB, {"op": "insert", "table": "Logical_Switch", "row": {"name": "pre", "other_config": ["map", [["a", "1"], ["b", "2"]]]}}]))
        .unwrap();
    let c = client(&server).await;
    let replica = c
        .replica(
            MonitorSpec::new()
                .table("Logical_Switch")
                .table("Logical_Switch_Port"),
        )
        .await
        .unwrap();
    assert_eq!(
        replica.read(|d| d.len("Logical_Switch")),
        1,
        "initial snapshot"
    );
    let mut changes = replica.subscribe();

    // A second client modifies the map (change, add, remove a key) and a set.
    let other = client(&server).await;
    let pre = replica.read(|d| *d.rows("Logical_Switch").next().unwrap().0);
    // Ports live only while a switch refers to them (non-root table), so add it to "pre".
    other
        .transact(
            &Transaction::new(NB)
                .with(
                    Operation::update("Logical_Switch")
                        .filter(Condition::uuid(pre))
                        .with("other_config", Datum::map([("a", "9"), ("c", "3")])),
                )
                .with(
                    Operation::insert("Logical_Switch_Port")
                        .with("name", "p")
                        .with(
                            "addresses",
                            Datum::set(["00:00:00:00:00:01 10.0.0.1", "router"]),
                        )
                        .named("p"),
                )
                .with(
                    Operation::mutate("Logical_Switch")
                        .filter(Condition::uuid(pre))
                        .mutation(
                            "ports",
                            Mutator::Insert,
                            Datum::set([Atom::NamedUuid("p".into())]),
                        ),
                ),
        )
        .await
        .unwrap();
    let batch = tokio::time::timeout(T, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.changes.len(), 2, "{batch:?}");
    assert!(batch.txn_id.is_some());
    let m = batch
        .changes
        .iter()
        .find(|c| c.kind() == ChangeKind::Modify)
        .unwrap();
    assert_eq!(
        m.new.as_ref().unwrap()["other_config"],
        Datum::map([("a", "9"), ("c", "3")])
    );
    assert_eq!(
        m.old.as_ref().unwrap()["other_config"],
        Datum::map([("a", "1"), ("b", "2")])
    );
    let port = batch
        .changes
        .iter()
        .find(|c| c.kind() == ChangeKind::Insert)
        .unwrap()
        .uuid;
    assert_eq!(
        m.new.as_ref().unwrap()["ports"],
        Datum::set([port]),
        "reference set diff applied"
    );

    // Set diff semantics: remove one address, add another.
    other
        .transact(
            &Transaction::new(NB).with(
                Operation::update("Logical_Switch_Port")
                    .where_eq("name", "p")
                    .with("addresses", Datum::set(["router", "unknown"])),
            ),
        )
        .await
        .unwrap();
    let p_name = s("p");
    let addrs = replica
        .wait_for(T, |d| {
            let (_, row) = d.find("Logical_Switch_Port", "name", &p_name).next()?;
            (row["addresses"] != Datum::set(["00:00:00:00:00:01 10.0.0.1", "router"]))
                .then(|| row["addresses"].clone())
        })
        .await
        .unwrap();
    assert_eq!(addrs, Datum::set(["router", "unknown"]));

    // Delete: detach the port from its switch; the server garbage-collects it.
    other
        .transact(
            &Transaction::new(NB).with(
                Operation::mutate("Logical_Switch")
                    .filter(Condition::uuid(pre))
                    .mutation("ports", Mutator::Delete, Datum::set([port])),
            ),
        )
        .await
        .unwrap();
    replica
        .wait_for(T, |d| (d.len("Logical_Switch_Port") == 0).then_some(()))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while let Ok(b) = changes.try_recv() {
        let mut k: Vec<_> = b
            .changes
            .iter()
            .map(|c| (c.table.to_string(), c.kind()))
            .collect();
        k.sort_by_key(|(t, _)| t.clone());
        kinds.push(k);
    }
    assert_eq!(
        kinds,
        vec![
            vec![("Logical_Switch_Port".to_string(), ChangeKind::Modify)],
            vec![
                ("Logical_Switch".to_string(), ChangeKind::Modify),
                ("Logical_Switch_Port".to_string(), ChangeKind::Delete)
            ],
        ]
    );
    assert_eq!(
        replica.read(|d| d.row("Logical_Switch", &pre).unwrap()["ports"].clone()),
        Datum::set(Vec::<Uuid>::new())
    );

    // The replica equals a fresh select.
    let selected = ls_names_by_select(&server);
    let mut cached: Vec<String> = replica.read(|d| {
        d.rows("Logical_Switch")
            .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
            .collect()
    });
    cached.sort();
    assert_eq!(cached, selected);
}

#[tokio::test]
async fn replica_converges_across_server_restarts_without_losing_changes() {
    let mut server = OvsdbServer::start(nb_schema()).unwrap();
    let opts = ClientOptions {
        connection: ConnectionOptions {
            probe_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        },
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let c = Client::connect(&server.remote(), NB, opts).await.unwrap();
    let replica = c
        .replica(MonitorSpec::new().table_columns("Logical_Switch", &["name"]))
        .await
        .unwrap();
    let (snapshot, mut changes) = replica.subscribe_with(|d| d.len("Logical_Switch"));
    assert_eq!(snapshot, 0);
    let mut expected: std::collections::BTreeSet<String> = Default::default();

    for round in 0..3 {
        // Writes while connected.
        for i in 0..5 {
            let name = format!("r{round}-{i}");
            server
                .transact(&json!([NB, {"op": "insert", "table": "Logical_Switch", "row": {"name": name}}]))
                .unwrap();
            expected.insert(name);
        }
        server.kill();
        server.restart().unwrap();
        // Writes right after the restart from another client, while ours is reconnecting;
        // plus a delete of an earlier row.
        let name = format!("after-restart-{round}");
        server
            .transact(&json!([NB,
                {"op": "insert", "table": "Logical_Switch", "row": {"name": name}},
                {"op": "delete", "table": "Logical_Switch", "where": [["name", "==", format!("r{round}-0")]]}]))
            .unwrap();
        expected.insert(name);
        expected.remove(&format!("r{round}-0"));
        let want = expected.clone();
        replica
            .wait_for(T, |d| {
                let got: std::collections::BTreeSet<String> = d
                    .rows("Logical_Switch")
                    .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
                    .collect();
                (got == want).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    assert!(c.connection_count() >= 4, "reconnected after each restart");
    assert_eq!(
        ls_names_by_select(&server),
        expected.iter().cloned().collect::<Vec<_>>()
    );

    // Replaying the change stream from the empty snapshot gives exactly the final content:
    // nothing lost, nothing applied twice.
    let mut replay: BTreeMap<Uuid, String> = BTreeMap::new();
    while let Ok(batch) = changes.try_recv() {
        for ch in &batch.changes {
            match ch.kind() {
                ChangeKind::Insert => {
                    let name = ch.new.as_ref().unwrap()["name"].to_string();
                    assert!(
                        replay.insert(ch.uuid, name).is_none(),
                        "duplicate insert {ch:?}"
                    );
                }
                ChangeKind::Modify => {
                    assert!(replay.contains_key(&ch.uuid), "modify of unknown row");
                    replay.insert(ch.uuid, ch.new.as_ref().unwrap()["name"].to_string());
                }
                ChangeKind::Delete => {
                    assert!(replay.remove(&ch.uuid).is_some(), "delete of unknown row");
                }
            }
        }
    }
    let replayed: std::collections::BTreeSet<String> = replay
        .values()
        .map(|n| n.trim_matches('"').to_owned())
        .collect();
    assert_eq!(replayed, expected);
}

#[tokio::test]
async fn locks_are_granted_queued_and_stolen() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let a = client(&server).await;
    let b = client(&server).await;
    let mut a_events = a.lock_events();
    let mut b_events = b.lock_events();
    assert!(a.lock("leader").await.unwrap());
    assert_eq!(
        a_events.recv().await.unwrap(),
        LockEvent::Locked("leader".into())
    );
    assert!(!b.lock("leader").await.unwrap(), "held by a: queued");
    a.unlock("leader").await.unwrap();
    let ev = tokio::time::timeout(T, b_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, LockEvent::Locked("leader".into()));
    assert!(a.steal("leader").await.unwrap());
    let ev = tokio::time::timeout(T, b_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, LockEvent::Stolen("leader".into()));
}

#[tokio::test]
async fn tcp_remote_works_like_unix() {
    let server = OvsdbServer::start_tcp(nb_schema()).unwrap();
    let c = Client::connect(&server.tcp_remote().unwrap(), NB, ClientOptions::default())
        .await
        .unwrap();
    let r = c
        .transact(&Transaction::new(NB).with(Operation::insert("Logical_Switch").with("name", "t")))
        .await
        .unwrap();
    assert!(r[0].uuid().is_some());
}

#[tokio::test]
async fn unreachable_remote_and_unknown_database_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let remote = format!("unix:{}/nothing.sock", dir.path().display());
    let err = Client::connect(&remote, NB, opts.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let err = Client::connect(&server.remote(), "Nope", opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchDatabase { .. }), "{err:?}");
    let err = Client::connect("tcp:127.0.0.1", NB, ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRemote { .. }), "{err:?}");
}

/// A hostile "server" on a real unix socket: garbage, truncation, oversized frames and
/// error replies must surface as errors, never panics.
#[tokio::test]
async fn malformed_and_truncated_frames_from_a_peer_are_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let replies: Vec<&'static [u8]> = vec![
        b"not json at all",
        b"{\"id\":1,\"result\":",
        b"{\"id\":1,\"result\":[1,}",
        b"[\"valid json\", \"but not json-rpc\"]",
        b"{\"id\":1,\"error\":{\"error\":\"boom\",\"details\":\"bad\"},\"result\":null}",
        b"{\"id\":1,\"result\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
    ];
    let n = replies.len();
    tokio::spawn(async move {
        for reply in replies {
            let (mut sock, _) = listener.accept().await.unwrap();
            // Read the request first so the client's write never meets a closed socket.
            let mut buf = [0u8; 256];
            let _ = sock.read(&mut buf).await;
            sock.write_all(reply).await.unwrap();
            // Close our sending side but keep reading until the client hangs up.
            let _ = sock.shutdown().await;
            while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        }
    });
    let remote = Remote::parse(&format!("unix:{}", path.display())).unwrap();
    let opts = ConnectionOptions {
        max_frame: 64,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for _ in 0..n {
        let (conn, _notes) = Connection::connect(&remote, &opts).await.unwrap();
        let err = conn
            .call_timeout("list_dbs", json!([]), T)
            .await
            .unwrap_err();
        errors.push(err);
    }
    assert!(matches!(&errors[0], Error::Frame { .. }), "{:?}", errors[0]);
    assert!(matches!(&errors[1], Error::Frame { .. }), "{:?}", errors[1]);
    assert!(matches!(&errors[2], Error::Frame { .. }), "{:?}", errors[2]);
    assert!(
        matches!(&errors[3], Error::Protocol { .. }),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(&errors[4], Error::Rpc { error, details: Some(d), .. } if error == "boom" && d == "bad"),
        "{:?}",
        errors[4]
    );
    assert!(
        matches!(
            &errors[5],
            Error::Frame {
                source: ferrovn_ovsdb::framing::FrameError::TooLarge { limit: 64 },
                ..
            }
        ),
        "{:?}",
        errors[5]
    );
}

/// ovsdb-server probes TCP peers after 5 s of silence and drops them after two unanswered
/// probes; our read loop answers, so an idle session survives (our own probe is off here to
/// leave the server's probes as the only traffic).
#[tokio::test]
async fn idle_tcp_session_survives_by_answering_the_servers_echo() {
    let server = OvsdbServer::start_tcp(nb_schema()).unwrap();
    let opts = ConnectionOptions {
        probe_interval: None,
        ..Default::default()
    };
    let remote = Remote::parse(&server.tcp_remote().unwrap()).unwrap();
    let (conn, _notes) = Connection::connect(&remote, &opts).await.unwrap();
    conn.list_dbs().await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!conn.is_closed());
    assert!(
        conn.stats().server_echoes_answered >= 1,
        "{:?}",
        conn.stats()
    );
    assert_eq!(conn.stats().probes_sent, 0);
    assert_eq!(conn.list_dbs().await.unwrap(), vec![NB, "_Server"]);
}

#[tokio::test]
async fn replica_conditions_change_and_survive_a_restart() {
    let mut server = OvsdbServer::start(nb_schema()).unwrap();
    server
        .transact(&json!([NB,
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "a"}},
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "b"}}]))
        .unwrap();
    let c = client(&server).await;
    let only = |name: &str| {
        MonitorSpec::new().table_where(
            "Logical_Switch",
            Some(&["name"]),
            json!([["name", "==", name]]),
        )
    };
    let replica = c.replica(only("a")).await.unwrap();
    let names = |d: &ferrovn_ovsdb::ReplicaData| -> Vec<String> {
        d.rows("Logical_Switch")
            .map(|(_, r)| r["name"].as_atom().unwrap().as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(replica.read(names), vec!["a"]);
    let mut changes = replica.subscribe();

    c.set_replica_conditions(&replica, only("b")).await.unwrap();
    replica
        .wait_for(T, |d| (names(d) == ["b"]).then_some(()))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let b = tokio::time::timeout(T, changes.recv())
            .await
            .unwrap()
            .unwrap();
        kinds.extend(b.changes.iter().map(|c| c.kind()));
    }
    kinds.sort_by_key(|k| *k as u8);
    assert_eq!(kinds, vec![ChangeKind::Insert, ChangeKind::Delete]);

    // Changing tables or columns is refused.
    let err = c
        .set_replica_conditions(&replica, MonitorSpec::new().table("Logical_Switch"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");

    // The new conditions hold after a reconnect, and new matching rows still arrive.
    server.restart().unwrap();
    server
        .transact(&json!([NB,
            {"op": "delete", "table": "Logical_Switch", "where": [["name", "==", "b"]]},
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "a"}}]))
        .unwrap();
    replica
        .wait_for(T, |d| names(d).is_empty().then_some(()))
        .await
        .unwrap();
    c.set_replica_conditions(&replica, only("a")).await.unwrap();
    replica
        .wait_for(T, |d| (names(d) == ["a", "a"]).then_some(()))
        .await
        .unwrap();
}

fn server_monitors(server: &OvsdbServer) -> usize {
    let out = server.appctl(&["memory/show"]).unwrap();
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix("monitors:"))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn dropping_a_replica_cancels_its_monitor() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let c = client(&server).await;
    let kept = c
        .replica(MonitorSpec::new().table("Logical_Switch"))
        .await
        .unwrap();
    // Another table: ovsdb-server counts (and shares) monitors by what they watch.
    let dropped = c
        .replica(MonitorSpec::new().table("Logical_Switch_Port"))
        .await
        .unwrap();
    assert_eq!(server_monitors(&server), 2);
    drop(dropped);
    // Any notification lets the client notice.
    c.transact(&Transaction::new(NB).with(Operation::insert("Logical_Switch").with("name", "x")))
        .await
        .unwrap();
    kept.wait_for(T, |d| (d.len("Logical_Switch") == 1).then_some(()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while server_monitors(&server) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "monitor not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hung server (SIGSTOP) is detected by our inactivity probe; once it resumes the client
/// reconnects on its own and the replica catches up.
#[tokio::test]
async fn hung_server_is_declared_dead_and_recovered_from() {
    let server = OvsdbServer::start(nb_schema()).unwrap();
    let opts = ClientOptions {
        connection: ConnectionOptions {
            probe_interval: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let c = Client::connect(&server.remote(), NB, opts).await.unwrap();
    let replica = c
        .replica(MonitorSpec::new().table_columns("Logical_Switch", &["name"]))
        .await
        .unwrap();
    let conn = c.connection().await.unwrap();
    server.freeze().unwrap();
    let err = tokio::time::timeout(T, conn.closed()).await.unwrap();
    server.thaw().unwrap();
    assert!(matches!(err, Error::ProbeTimeout { .. }), "{err:?}");
    assert!(conn.stats().probes_sent >= 1);
    c.transact(
        &Transaction::new(NB).with(Operation::insert("Logical_Switch").with("name", "back")),
    )
    .await
    .unwrap();
    replica
        .wait_for(T, |d| (d.len("Logical_Switch") == 1).then_some(()))
        .await
        .unwrap();
    assert!(c.connection_count() >= 2);
}
