//! Typed rows generated from `ovsdb/schemas/*.ovsschema` by `src/codegen.rs`
//! (`cargo run -p ferrovn-ovsdb --example codegen`). Laid out by the generator, so rustfmt
//! must leave them alone: the staleness test compares bytes.

#[rustfmt::skip]
pub mod open_vswitch;
#[rustfmt::skip]
pub mod ovn_nb;
#[rustfmt::skip]
pub mod ovn_sb;
