//! Temporary stub; replaced once debpkg's deb/status/check modules land.
use crate::paths::Root;
use bundle_spec::names::ArtifactName;
use std::path::Path;
/// Stub.
#[derive(Debug)]
pub struct Info {
    pub package: String,
    pub version: String,
    pub architecture: String,
}
impl Info {
    /// Stub.
    pub fn installed_size_bytes(&self) -> u64 {
        0
    }
}
/// Stub.
#[derive(Debug)]
pub struct Status;
/// Stub.
pub fn host_status(_root: &Root) -> Result<Status, String> {
    Ok(Status)
}
/// Stub.
pub fn info(_p: &Path, a: &ArtifactName) -> Result<Info, String> {
    Err(format!("{a}: stub"))
}
/// Stub.
pub fn already_installed(_i: &Info, _s: &Status) -> bool {
    false
}
/// Stub.
pub fn check(_root: &Root, _arch: &str, _debs: &[&crate::plan::DebPlan]) -> Vec<String> {
    Vec::new()
}
