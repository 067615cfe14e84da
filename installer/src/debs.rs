//! The installer's view of .deb packages, over the `debpkg` crate: what a
//! staged .deb is, what the root's dpkg database holds, and whether every
//! dependency is met before dpkg runs (never `--force-depends`).

use std::path::Path;

use bundle_spec::names::ArtifactName;
use debpkg::{DebInfo, Status};

use crate::paths::Root;
use crate::plan::DebPlan;

/// The dpkg status database below the root.
pub const STATUS_FILE: &str = "/var/lib/dpkg/status";

/// Reads the root's dpkg status (empty when the root has none).
pub fn host_status(root: &Root) -> Result<Status, String> {
    let path = root.resolve_str(STATUS_FILE).map_err(|e| e.to_string())?;
    Status::read(&path).map_err(|e| e.to_string())
}

/// Reads the control data of a staged .deb.
pub fn info(path: &Path, artifact: &ArtifactName) -> Result<DebInfo, String> {
    debpkg::deb::read_info(path).map_err(|e| format!("artifact {artifact}: {e}"))
}

/// Whether the same package, version and architecture is already installed.
pub fn already_installed(info: &DebInfo, status: &Status) -> bool {
    debpkg::check::already_installed(info, status)
}

/// Bytes a package takes once installed (`Installed-Size` is in KiB).
pub fn installed_size(info: &DebInfo) -> u64 {
    info.installed_size_kib.unwrap_or(0).saturating_mul(1024)
}

/// Dependency and architecture problems of the .debs about to be installed.
pub fn check(root: &Root, arch: &str, debs: &[&DebPlan]) -> Vec<String> {
    let mut problems = Vec::new();
    let status = match host_status(root) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot read the dpkg database: {e}")],
    };
    let mut infos = Vec::new();
    for d in debs {
        match info(&d.path, &d.artifact) {
            Ok(i) => {
                if i.architecture != arch && i.architecture != "all" {
                    problems.push(format!(
                        "artifact {}: {} is built for {}, the bundle targets {arch}",
                        d.artifact, i.package, i.architecture
                    ));
                }
                infos.push(i);
            }
            Err(e) => problems.push(e),
        }
    }
    for unmet in debpkg::check::check_dependencies(&infos, &status, arch) {
        problems.push(format!("unmet .deb dependency: {unmet}"));
    }
    problems
}
