//! The committed typed-row code must be what the generator makes from the committed schema
//! copies, and those copies must be the schemas of the installed OVN / OVS.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ferrovn_ovsdb::codegen::{REGENERATE_COMMAND, TARGETS, generate};
use ferrovn_ovsdb::{DatabaseSchema, Row, SchemaVersion};
use ferrovn_testkit::ovs_paths::{installed_schema, nb_schema, sb_schema, vswitch_schema};
use ferrovn_testkit::require::{Need, require};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn generated_code_is_fresh() {
    let mut stale = Vec::new();
    for target in TARGETS {
        let schema_path = crate_dir().join("schemas").join(target.schema_file);
        let text = std::fs::read_to_string(&schema_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", schema_path.display()));
        let schema: DatabaseSchema = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", schema_path.display()));
        let expected = generate(&schema, target.schema_file);
        let out_path = crate_dir().join("src/generated").join(target.output_file);
        let committed = std::fs::read_to_string(&out_path).unwrap_or_default();
        if committed != expected {
            let first_diff = committed
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .map(|i| i + 1)
                .unwrap_or(committed.lines().count().min(expected.lines().count()) + 1);
            stale.push(format!(
                "{} (first difference at line {first_diff})",
                out_path.display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "generated typed rows are stale: {}.\nRun `{REGENERATE_COMMAND}` and commit the result.",
        stale.join(", ")
    );
}

/// The installed schema each committed copy must equal (found by the copy's database name).
fn installed_for(copy: &DatabaseSchema) -> PathBuf {
    installed_schema(&copy.name)
        .unwrap_or_else(|| panic!("no installed schema known for database {}", copy.name))
}

#[test]
fn schema_copies_match_installed_schemas() {
    let mut checks = Vec::new();
    for target in TARGETS {
        let copy_path = crate_dir().join("schemas").join(target.schema_file);
        let copy = std::fs::read_to_string(&copy_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", copy_path.display()));
        let copy_schema: DatabaseSchema = copy.parse().expect("schema copy parses");
        checks.push((copy_path, copy, copy_schema));
    }
    let needs: Vec<Need> = checks
        .iter()
        .map(|(_, _, s)| Need::File(installed_for(s)))
        .collect();
    if !require("schema_copies_match_installed_schemas", &needs) {
        return;
    }
    for (copy_path, copy, copy_schema) in checks {
        let installed_path = installed_for(&copy_schema);
        let installed = std::fs::read_to_string(&installed_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", installed_path.display()));
        let installed_schema: DatabaseSchema = installed.parse().expect("installed schema parses");
        assert!(
            installed == copy,
            "{} differs from the installed {} (installed {} {}, copy {} {}).\n\
             Copy it (`cp {} {}`), then run `{REGENERATE_COMMAND}` and commit both.",
            copy_path.display(),
            installed_path.display(),
            installed_schema.name,
            installed_schema.version,
            copy_schema.name,
            copy_schema.version,
            installed_path.display(),
            copy_path.display(),
        );
    }
}

#[test]
fn parses_installed_schemas() {
    let schemas = [
        (nb_schema(), "OVN_Northbound"),
        (sb_schema(), "OVN_Southbound"),
        (vswitch_schema(), "Open_vSwitch"),
    ];
    let needs: Vec<Need> = schemas.iter().map(|(p, _)| Need::File(p.clone())).collect();
    if !require("parses_installed_schemas", &needs) {
        return;
    }
    for (path, name) in &schemas {
        let text = std::fs::read_to_string(path).expect("installed schema");
        let schema: DatabaseSchema = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(schema.name, *name);
        assert!(schema.tables.len() > 5);
    }
    let nb: DatabaseSchema = std::fs::read_to_string(nb_schema())
        .expect("NB schema")
        .parse()
        .expect("NB schema parses");
    let lsp = nb
        .table("Logical_Switch_Port")
        .expect("Logical_Switch_Port");
    assert_eq!(
        lsp.column("tag").expect("tag").ty.key.max_integer,
        Some(4095)
    );
    assert!(lsp.column("addresses").expect("addresses").ty.max.is_none());
    assert!(nb.table("Logical_Switch").expect("Logical_Switch").is_root);
}

#[test]
fn generated_consts_describe_the_schema_copies() {
    let nb: DatabaseSchema = ferrovn_ovsdb::nb::SCHEMA_JSON.parse().unwrap();
    assert_eq!(nb.name, ferrovn_ovsdb::nb::SCHEMA_NAME);
    assert_eq!(nb.version, ferrovn_ovsdb::nb::SCHEMA_VERSION);
    assert!(ferrovn_ovsdb::nb::SCHEMA_VERSION >= SchemaVersion::new(7, 0, 0));
    let sb: DatabaseSchema = ferrovn_ovsdb::sb::SCHEMA_JSON.parse().unwrap();
    assert_eq!(sb.name, ferrovn_ovsdb::sb::SCHEMA_NAME);
    let vs: DatabaseSchema = ferrovn_ovsdb::vswitch::SCHEMA_JSON.parse().unwrap();
    assert_eq!(vs.name, ferrovn_ovsdb::vswitch::SCHEMA_NAME);
    assert_eq!(nb.tables.len(), ferrovn_ovsdb::nb::TABLES.len());
    let lsp = nb
        .table(ferrovn_ovsdb::nb::LogicalSwitchPort::TABLE)
        .unwrap();
    let columns: Vec<&str> = lsp.columns.keys().map(String::as_str).collect();
    assert_eq!(columns, ferrovn_ovsdb::nb::LogicalSwitchPort::COLUMNS);
    assert_eq!(
        ferrovn_ovsdb::nb::Acl::ACTION_ALLOW_RELATED,
        "allow-related"
    );
    assert_eq!(ferrovn_ovsdb::vswitch::Interface::TABLE, "Interface");
    assert_eq!(ferrovn_ovsdb::sb::PortBinding::TABLE, "Port_Binding");
}
