//! The `install-bundle` library: read → verify → stage → preflight → plan → apply.
pub mod extract;
