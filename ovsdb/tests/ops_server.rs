//! Every operation builder and the typed reply parsing against a real ovsdb-server (the
//! OVN Northbound schema): what we serialise is what the server accepts, and its errors
//! become typed errors naming operation, table and column.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrovn_ovsdb::{
    Atom, Condition, Datum, Function, Mutator, OpResult, Operation, OvsdbErrorKind, TransactError,
    Transaction, Uuid, WaitUntil,
};
use ferrovn_testkit::ovs_paths::nb_schema;
use ferrovn_testkit::ovsdb::OvsdbServer;
use ferrovn_testkit::require::{Need, require};

struct Server(OvsdbServer);

/// A fresh NB server, or `None` (a loud skip; a failure under FERROVN_REQUIRE_ALL=1) when
/// OVS/OVN are not installed.
fn start(test: &str) -> Option<Server> {
    let needs = [
        Need::Tool("ovsdb-server"),
        Need::Tool("ovsdb-tool"),
        Need::Tool("ovsdb-client"),
        Need::File(nb_schema()),
    ];
    if !require(test, &needs) {
        return None;
    }
    Some(Server(
        OvsdbServer::start(nb_schema()).expect("ovsdb-server starts"),
    ))
}

impl Server {
    fn transact(&self, txn: &Transaction) -> Result<Vec<OpResult>, TransactError> {
        let reply = self
            .0
            .transact(&txn.params())
            .expect("ovsdb-client transact");
        txn.parse_reply(&reply)
    }
}

fn nb() -> Transaction {
    Transaction::new("OVN_Northbound")
}

#[test]
fn every_operation_against_ovsdb_server() {
    let Some(server) = start("every_operation_against_ovsdb_server") else {
        return;
    };
    // insert with named-uuid references, a map, a set and an optional integer.
    let txn = nb()
        .with(
            Operation::insert("Logical_Switch_Port")
                .named("p1")
                .with("name", "p1")
                .with("addresses", Datum::set(["00:00:00:00:00:01 10.0.0.1"]))
                .with("external_ids", Datum::map([("pod", "a"), ("ns", "b")]))
                .with("tag_request", Some(7i64)),
        )
        .with(
            Operation::insert("Logical_Switch")
                .named("sw")
                .with("name", "sw0")
                .with("ports", Datum::set([Atom::NamedUuid("p1".into())])),
        )
        .with(Operation::comment("ferrovn ops test"))
        .with(Operation::commit(false));
    let out = server.transact(&txn).unwrap();
    let port = out[0].uuid().unwrap();
    let switch = out[1].uuid().unwrap();
    assert_ne!(port, switch);
    assert_eq!(out[2], OpResult::Empty);

    // insert with a client-chosen UUID.
    let chosen = Uuid::new_v4();
    let out = server
        .transact(
            &nb().with(
                Operation::insert("Address_Set")
                    .with_uuid(chosen)
                    .with("name", "as1")
                    .with("addresses", Datum::set(["10.0.0.1", "10.0.0.2"])),
            ),
        )
        .unwrap();
    assert_eq!(out[0].uuid(), Some(chosen));

    // select sees what was written, decoded.
    let out = server
        .transact(
            &nb().with(
                Operation::select("Logical_Switch_Port")
                    .filter(Condition::uuid(port))
                    .columns(["name", "external_ids", "tag_request", "_uuid"]),
            ),
        )
        .unwrap();
    let rows = out[0].rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], Datum::from("p1"));
    assert_eq!(
        rows[0]["external_ids"],
        Datum::map([("ns", "b"), ("pod", "a")])
    );
    assert_eq!(rows[0]["tag_request"], Datum::from(Some(7i64)));
    assert_eq!(rows[0]["_uuid"], Datum::from(port));

    // update and every mutator.
    let out = server
        .transact(
            &nb()
                .with(
                    Operation::update("Logical_Switch_Port")
                        .where_eq("name", "p1")
                        .with("enabled", Some(true)),
                )
                .with(
                    Operation::mutate("Logical_Switch_Port")
                        .where_eq("name", "p1")
                        .mutation("tag_request", Mutator::Add, 10i64)
                        .mutation("tag_request", Mutator::Mul, 3i64)
                        .mutation("tag_request", Mutator::Sub, 1i64)
                        .mutation("tag_request", Mutator::Div, 2i64)
                        .mutation("tag_request", Mutator::Mod, 20i64)
                        .mutation("external_ids", Mutator::Delete, Datum::set(["ns"]))
                        .mutation("external_ids", Mutator::Insert, Datum::map([("k", "v")])),
                )
                .with(
                    Operation::select("Logical_Switch_Port")
                        .filter(Condition::includes(
                            "external_ids",
                            Datum::map([("k", "v")]),
                        ))
                        .filter(Condition::excludes("addresses", Datum::set(["nope"])))
                        .filter(Condition::new("tag_request", Function::Le, 100i64))
                        .columns(["tag_request", "external_ids", "enabled"]),
                ),
        )
        .unwrap();
    assert_eq!(out[0].count(), Some(1));
    assert_eq!(out[1].count(), Some(1));
    let row = &out[2].rows().unwrap()[0];
    // ((7 + 10) * 3 - 1) / 2 % 20 = 25 % 20 = 5
    assert_eq!(row["tag_request"], Datum::from(Some(5i64)));
    assert_eq!(row["external_ids"], Datum::map([("k", "v"), ("pod", "a")]));
    assert_eq!(row["enabled"], Datum::from(Some(true)));

    // wait that holds, wait that times out.
    let wait = |until, name: &str| {
        Operation::wait("Logical_Switch", vec!["name".into()], until, vec![])
            .filter(Condition::uuid(switch))
            .with("name", name)
            .timeout_ms(0)
    };
    let out = server
        .transact(&nb().with(wait(WaitUntil::Equal, "sw0")))
        .unwrap();
    assert_eq!(out[0], OpResult::Empty);
    let err = server
        .transact(&nb().with(wait(WaitUntil::NotEqual, "sw0")))
        .unwrap_err();
    assert_eq!(err.kind(), Some(&OvsdbErrorKind::TimedOut), "{err}");
    assert!(matches!(
        err,
        TransactError::Operation {
            index: 0,
            op: "wait",
            ..
        }
    ));

    // abort, assert on a lock not held.
    let err = server
        .transact(&nb().with(Operation::comment("c")).with(Operation::abort()))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TransactError::Operation { index: 1, op: "abort", error } if error.kind == OvsdbErrorKind::Aborted
        ),
        "{err}"
    );
    let err = server
        .transact(&nb().with(Operation::assert_lock("nobody")))
        .unwrap_err();
    assert_eq!(err.kind(), Some(&OvsdbErrorKind::NotOwner), "{err}");

    // delete: count, then gone.
    let out = server
        .transact(
            &nb()
                .with(Operation::delete("Address_Set").filter(Condition::uuid(chosen)))
                .with(Operation::select("Address_Set")),
        )
        .unwrap();
    assert_eq!(out[0].count(), Some(1));
    assert_eq!(out[1].rows().unwrap().len(), 0);
}

#[test]
fn server_errors_become_typed_errors() {
    let Some(server) = start("server_errors_become_typed_errors") else {
        return;
    };
    // A value outside the column's range: names op, table and column.
    let err = server
        .transact(
            &nb().with(Operation::comment("first")).with(
                Operation::insert("Logical_Switch_Port")
                    .with("name", "p")
                    .with("tag", Some(5000i64)),
            ),
        )
        .unwrap_err();
    let TransactError::Operation { index, op, error } = &err else {
        panic!("{err}")
    };
    assert_eq!((*index, *op), (1, "insert"));
    assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation);
    assert_eq!(error.table.as_deref(), Some("Logical_Switch_Port"));
    assert_eq!(error.column.as_deref(), Some("tag"), "{err}");

    // A value outside an enum.
    let err = server
        .transact(
            &nb().with(
                Operation::insert("ACL")
                    .with("action", "explode")
                    .with("direction", "from-lport"),
            ),
        )
        .unwrap_err();
    let error = err.ovsdb_error().unwrap();
    assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation, "{err}");
    assert_eq!(error.table.as_deref(), Some("ACL"));
    assert_eq!(error.column.as_deref(), Some("action"), "{err}");

    // A dangling reference: a commit-time error, the extra element after the ops.
    let err = server
        .transact(
            &nb().with(
                Operation::insert("Logical_Switch")
                    .with("name", "s")
                    .with("ports", Datum::set([Uuid::new_v4()])),
            ),
        )
        .unwrap_err();
    let TransactError::Commit { error } = &err else {
        panic!("{err}")
    };
    assert_eq!(error.kind, OvsdbErrorKind::ReferentialIntegrityViolation);
    assert_eq!(error.table.as_deref(), Some("Logical_Switch"));
    assert_eq!(error.column.as_deref(), Some("ports"));

    // A duplicate index value: also found at commit.
    let insert = || Operation::insert("Address_Set").with("name", "dup");
    let err = server
        .transact(&nb().with(insert()).with(insert()))
        .unwrap_err();
    let TransactError::Commit { error } = &err else {
        panic!("{err}")
    };
    assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation);
    assert_eq!(error.table.as_deref(), Some("Address_Set"), "{err}");
    assert_eq!(error.column.as_deref(), Some("name"), "{err}");

    // An unknown column.
    let err = server
        .transact(&nb().with(Operation::insert("Logical_Switch").with("nmae", "x")))
        .unwrap_err();
    let error = err.ovsdb_error().unwrap();
    assert_eq!(error.kind, OvsdbErrorKind::SyntaxError);
    assert_eq!(error.column.as_deref(), Some("nmae"));
    assert_eq!(error.table.as_deref(), Some("Logical_Switch"));
}
