//! FerrOVN's CNI plugin library.
//!
//! - [`protocol`]: the plugin <-> node agent protocol (types, newline-framed JSON codec,
//!   blocking client and server helpers). The node agent depends on this module.
//! - [`spec`]: CNI 1.1 spec types (versions, error codes, results and their per-version shapes).
//! - [`invocation`], [`netconf`]: the runtime's environment and stdin, validated.
//! - [`plugin`]: the decision core of the `ferrovn-cni` binary, pure apart from the [`plugin::Agent`].

pub mod invocation;
pub mod netconf;
pub mod plugin;
pub mod protocol;
pub mod spec;
