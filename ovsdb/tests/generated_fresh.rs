//! The committed typed-row code must be what the generator makes from the committed schema
//! copies, and those copies must be the schemas of the installed OVN / OVS.

use std::path::Path;

use ferrovn_ovsdb::codegen::{REGENERATE_COMMAND, TARGETS, generate};
use ferrovn_ovsdb::{DatabaseSchema, Row, SchemaVersion};

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

#[test]
fn schema_copies_match_installed_schemas() {
    let mut missing = Vec::new();
    for target in TARGETS {
        let installed_path = Path::new(target.installed_path);
        let Ok(installed) = std::fs::read_to_string(installed_path) else {
            missing.push(target.installed_path);
            continue;
        };
        let copy_path = crate_dir().join("schemas").join(target.schema_file);
        let copy = std::fs::read_to_string(&copy_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", copy_path.display()));
        let installed_schema: DatabaseSchema = installed.parse().expect("installed schema parses");
        let copy_schema: DatabaseSchema = copy.parse().expect("schema copy parses");
        assert!(
            installed == copy,
            "{} differs from the installed {} (installed {} {}, copy {} {}).\n\
             Copy it (`cp {} {}`), then run `{REGENERATE_COMMAND}` and commit both.",
            copy_path.display(),
            target.installed_path,
            installed_schema.name,
            installed_schema.version,
            copy_schema.name,
            copy_schema.version,
            target.installed_path,
            copy_path.display(),
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "\n*** WARNING: SKIPPED comparing schema copies with the installed schemas: {} not \
             installed (install ovn-central and openvswitch-switch to check) ***\n",
            missing.join(", ")
        );
    }
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
