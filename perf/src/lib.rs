//! ferrovn-perf: measures every FerrOVN datapath and the control plane beside baselines taken
//! in the same run, and writes JSON, Markdown and SVG reports. See docs/perf.md.

pub mod config;
pub mod env;
pub mod kernel;
pub mod model;
pub mod output;
pub mod progress;
pub mod scenarios;
pub mod stats;
pub mod svg;
