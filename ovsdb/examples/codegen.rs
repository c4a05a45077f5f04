//! Regenerates `ovsdb/src/generated/*.rs` from the schema copies in `ovsdb/schemas/`.
//!
//! `cargo run -p ferrovn-ovsdb --example codegen` (add `-- --check` to only report staleness).
//!
//! If the committed generated code stops compiling (say after a change to the `Row` trait),
//! empty the three files under `src/generated/` first: the library builds without them.

use std::path::Path;

use anyhow::{Context, bail};
use ferrovn_ovsdb::DatabaseSchema;
use ferrovn_ovsdb::codegen::{TARGETS, generate};

fn main() -> anyhow::Result<()> {
    let check_only = std::env::args().any(|a| a == "--check");
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for target in TARGETS {
        let schema_path = crate_dir.join("schemas").join(target.schema_file);
        let text = std::fs::read_to_string(&schema_path)
            .with_context(|| format!("reading {}", schema_path.display()))?;
        let schema: DatabaseSchema = text
            .parse()
            .with_context(|| format!("parsing {}", schema_path.display()))?;
        let code = generate(&schema, target.schema_file);
        let out_path = crate_dir.join("src/generated").join(target.output_file);
        let current = std::fs::read_to_string(&out_path).unwrap_or_default();
        if current == code {
            println!("{}: up to date", out_path.display());
            continue;
        }
        if check_only {
            stale.push(out_path.display().to_string());
            continue;
        }
        std::fs::write(&out_path, &code)
            .with_context(|| format!("writing {}", out_path.display()))?;
        println!(
            "{}: written ({} {}, {} tables, {} lines)",
            out_path.display(),
            schema.name,
            schema.version,
            schema.tables.len(),
            code.lines().count()
        );
    }
    if !stale.is_empty() {
        bail!("stale generated code: {}", stale.join(", "));
    }
    Ok(())
}
