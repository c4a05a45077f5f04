//! Pieces shared by the integration tests (each test file is its own crate and says `mod common;`).

pub mod fake_api;
