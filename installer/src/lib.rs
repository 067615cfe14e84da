//! The `install-bundle` library: read → verify → stage → preflight → plan → apply.
//!
//! The binary (`main.rs`) strings these together; each module has one job.
pub mod apply;
pub mod debs;
pub mod differential;
pub mod exit;
pub mod extract;
pub mod flow;
pub mod images;
pub mod journal;
pub mod output;
pub mod parallel;
pub mod paths;
pub mod plan;
pub mod policy;
pub mod preflight;
pub mod receipt;
pub mod stage;
pub mod staged;
pub mod status;
pub mod trust;
pub mod units;
pub mod vars;
pub mod volatile;
