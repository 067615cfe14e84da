//! The installer's view of .deb packages, over the `debpkg` crate: what a
//! staged .deb is, what the root's dpkg database holds, whether every
//! dependency is met before dpkg runs (never `--force-depends`), and running
//! dpkg the way apt would:
//!
//! * **Order.** Packages are installed in passes, one `dpkg --install` each
//!   ([`debpkg::install_passes`]): a package whose `Pre-Depends` is another
//!   bundled package comes in a later pass than it, so that dpkg finds the
//!   pre-dependency configured; a `Pre-Depends` cycle is refused at
//!   preflight.
//! * **Conffiles.** dpkg runs with `--force-confdef --force-confold`: a
//!   conffile the host has not modified takes the package's new version; one
//!   it has modified (by hand, or by this bundle's own `file` step) is kept,
//!   the package's version left beside it as `NAME.dpkg-dist`. dpkg never
//!   asks.
//! * **Downgrades.** A bundled package older than the installed one (epochs
//!   included) is not installed: the plan says `keep NAME 1.0-2 (newer than
//!   bundled 1.0-1)`. A bundled package that needs the older version is then
//!   unmet and refused at preflight, unless `--allow-deb-downgrade`.
//! * **Services.** Below `--root`, or where no systemd runs (a chroot), a
//!   `policy-rc.d` answering 101 ("action forbidden") is in place while dpkg
//!   runs, so maintainer scripts do not start daemons in an image; it is
//!   removed afterwards (one the root had already is left alone).

use std::path::Path;

use bundle_spec::names::ArtifactName;
use debpkg::{DebInfo, Status};

use crate::journal::{Transaction, systemd_booted};
use crate::paths::Root;
use crate::plan::DebPlan;

/// The options dpkg always runs with (see the module docs).
pub const DPKG_OPTIONS: &[&str] = &["--force-confdef", "--force-confold"];

/// Where `invoke-rc.d` looks for the local policy (Debian policy, 9.3.3).
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

const POLICY_RC_D_SCRIPT: &[u8] =
    b"#!/bin/sh\n# Written by install-bundle while dpkg runs: no service starts in an image.\nexit 101\n";

fn dpkg(root: &Root, args: &[String]) -> Result<String, String> {
    let mut argv = vec!["dpkg".to_owned()];
    if !root.is_host() {
        argv.push(format!("--root={}", root.path().display()));
    }
    argv.extend_from_slice(args);
    let out = crate::apply::command(&argv, None)
        .output()
        .map_err(|e| format!("cannot run dpkg: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} failed ({}):\n{text}",
            argv.join(" "),
            out.status
        ))
    }
}

/// Installs `install` (ordered by pass) with one journaled `dpkg --install`
/// per pass. A failed pass that leaves dpkg's database unclean (`dpkg
/// --audit`) is journaled as such: the rollback cannot undo it.
pub fn install(root: &Root, tx: &mut Transaction, install: &[DebPlan]) -> Result<(), String> {
    if install.is_empty() {
        return Ok(());
    }
    let hold_services = !root.is_host() || !systemd_booted();
    let policy = hold_services && root.lstat(POLICY_RC_D).ok().flatten().is_none();
    // Parents of policy-rc.d missing now are removed again afterwards.
    let missing: Vec<&str> = ["/usr", "/usr/sbin"]
        .into_iter()
        .filter(|d| root.lstat(d).ok().flatten().is_none())
        .collect();
    if policy {
        tx.write_file(POLICY_RC_D, 0o755, &mut &POLICY_RC_D_SCRIPT[..])
            .map_err(|e| format!("writing {POLICY_RC_D} to hold off service starts: {e}"))?;
    }
    let result = install_passes(root, tx, install);
    if policy {
        // It leaves no trace: the file, and the directories made for it if
        // dpkg put nothing else there.
        if let Ok((dir, name)) = root.parent(POLICY_RC_D) {
            let _ = dir.unlink(&name).and_then(|()| dir.sync());
        }
        for d in missing.iter().rev() {
            if let Ok((dir, name)) = root.parent(d) {
                let _ = dir.rmdir(&name).and_then(|()| dir.sync());
            }
        }
    }
    result
}

fn install_passes(root: &Root, tx: &mut Transaction, install: &[DebPlan]) -> Result<(), String> {
    let passes = install.last().map_or(0, |d| d.pass + 1);
    for pass in 0..passes {
        let debs: Vec<&DebPlan> = install.iter().filter(|d| d.pass == pass).collect();
        let names: Vec<String> = debs
            .iter()
            .map(|d| format!("{} {}", d.package, d.version))
            .collect();
        tx.exec(&format!("dpkg installed {}", names.join(", ")), None)
            .map_err(|e| e.to_string())?;
        let mut args: Vec<String> = DPKG_OPTIONS.iter().map(|s| (*s).to_owned()).collect();
        args.push("--install".to_owned());
        args.extend(debs.iter().map(|d| d.path.display().to_string()));
        match dpkg(root, &args) {
            Ok(_) => tx.done(true).map_err(|e| e.to_string())?,
            Err(e) => {
                let audit = dpkg(root, &["--audit".to_owned()]).unwrap_or_else(|a| a);
                if audit.trim().is_empty() {
                    tx.done(false).map_err(|e| e.to_string())?;
                } else {
                    tx.failed_leaving(&format!(
                        "packages dpkg left half-installed (dpkg --audit):\n{}",
                        audit.trim_end()
                    ))
                    .map_err(|e| e.to_string())?;
                }
                return Err(e);
            }
        }
        let audit = dpkg(root, &["--audit".to_owned()])?;
        if !audit.trim().is_empty() {
            return Err(format!(
                "dpkg --audit is not clean after installing:\n{audit}"
            ));
        }
    }
    Ok(())
}

/// The dpkg status database below the root.
pub const STATUS_FILE: &str = "/var/lib/dpkg/status";

/// Reads the root's dpkg status (empty when the root has none).
pub fn host_status(root: &Root) -> Result<Status, String> {
    let shown = root.display(STATUS_FILE).display().to_string();
    match root.open_following(STATUS_FILE) {
        Ok(f) => {
            Status::from_reader_named(std::io::BufReader::new(f), &shown).map_err(|e| e.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Status::new()),
        Err(e) => Err(e.to_string()),
    }
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
