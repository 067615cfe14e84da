//! Differential bundles: what an omitted artifact put on the host must still
//! be there, by sha256, before anything changes.
//!
//! A differential bundle (`bundler build --base OLD`) leaves out artifacts
//! whose bytes and uses are unchanged since its base; the policy check
//! ([`crate::policy::check`]) lets it in only where the installed receipt is
//! that base (or the release it installs). The planner then plans exactly as
//! for the full bundle, from what the manifest records of each omitted
//! artifact, and every operation of an omitted artifact must find its target
//! as the base left it: an omitted artifact cannot put anything back. Each
//! finding is a preflight problem (exit 4) that says to use the full bundle.

use std::io::Read as _;

use bundle_spec::Sha256Digest;
use bundle_spec::names::ArtifactName;
use bundle_spec::spec::{Manifest, OmittedArtifact, OmittedPackage};

use crate::paths::Root;
use crate::plan::{Change, Op};

/// The advice every finding ends with.
pub fn use_full(manifest: &Manifest) -> String {
    format!(
        "this differential bundle does not carry it: install the full bundle of {} {}",
        manifest.name, manifest.version
    )
}

/// What an omitted artifact recorded, when `name` is one.
pub fn omitted<'m>(manifest: &'m Manifest, name: &ArtifactName) -> Option<&'m OmittedArtifact> {
    manifest.base.as_ref()?.omitted.get(name)
}

/// The finding for one planned operation of an omitted artifact: `None` when
/// it changes nothing.
pub fn finding(manifest: &Manifest, artifact: &ArtifactName, op: &Op) -> Option<String> {
    let what = match op {
        Op::File {
            target,
            sha256,
            mode,
            change,
            ..
        } => match change {
            Change::Unchanged => return None,
            Change::Create => format!("{target} is missing (expected sha256 {sha256})"),
            Change::Update => {
                format!("{target} is not the installed file (expected sha256 {sha256})")
            }
            Change::Mode(old) => format!("{target} has mode {old:o}, expected {mode:o}"),
        },
        Op::Dir {
            target,
            change: Change::Create,
            ..
        } => format!("directory {target} is missing"),
        Op::Link {
            target, to, change, ..
        } => match change {
            Change::Unchanged => return None,
            _ => format!("{target} is not a symbolic link to {to}"),
        },
        Op::Image {
            reference,
            digest,
            change,
            ..
        } => match change {
            crate::images::ImageChange::Unchanged => return None,
            crate::images::ImageChange::Check => format!(
                "image {reference}: containerd cannot be asked whether it holds {digest} (start containerd, then run this again)"
            ),
            _ => format!("image {reference} is not in containerd as {digest}, pinned"),
        },
        _ => return None,
    };
    Some(format!(
        "artifact {artifact} (omitted, installed by serial {}): {what}; {}",
        manifest.base.as_ref().map_or(0, |b| b.serial.get()),
        use_full(manifest)
    ))
}

/// Checks an omitted `.deb`: its version is installed and its files but
/// conffiles are byte-identical (sha256).
pub fn check_package(
    root: &Root,
    manifest: &Manifest,
    artifact: &ArtifactName,
    package: &OmittedPackage,
    installed_version: Option<&str>,
) -> Vec<String> {
    let base = manifest.base.as_ref().map_or(0, |b| b.serial.get());
    let say = |what: String| {
        format!(
            "artifact {artifact} (omitted, installed by serial {base}): {what}; {}",
            use_full(manifest)
        )
    };
    if installed_version != Some(package.version.as_str()) {
        return vec![say(format!(
            "package {}:{} {} is not installed (dpkg has {})",
            package.name,
            package.architecture,
            package.version,
            installed_version.unwrap_or("none")
        ))];
    }
    package
        .files
        .iter()
        .filter_map(|f| match file_sha256(root, &f.path) {
            Ok(Some(d)) if d == f.sha256 => None,
            Ok(Some(d)) => Some(say(format!(
                "{} of package {} has sha256 {d}, expected {}",
                f.path, package.name, f.sha256
            ))),
            Ok(None) => Some(say(format!(
                "{} of package {} is missing",
                f.path, package.name
            ))),
            Err(e) => Some(say(format!("{}: {e}", f.path))),
        })
        .collect()
}

/// Checks an omitted image's blobs in containerd's content store below
/// `content` (`…/io.containerd.content.v1.content`).
pub fn check_blobs(
    root: &Root,
    manifest: &Manifest,
    artifact: &ArtifactName,
    content: &str,
    blobs: &[bundle_spec::image::OciDigest],
) -> Vec<String> {
    let base = manifest.base.as_ref().map_or(0, |b| b.serial.get());
    blobs
        .iter()
        .filter_map(|b| {
            let text = b.to_string();
            let hex = text.strip_prefix("sha256:")?;
            let path = format!("{content}/blobs/sha256/{hex}");
            let what = match file_sha256(root, &path) {
                Ok(Some(d)) if d.to_string() == hex => return None,
                Ok(Some(d)) => format!("blob {text} in containerd's content store has sha256 {d}"),
                Ok(None) => {
                    format!("blob {text} is missing from containerd's content store ({path})")
                }
                Err(e) => format!("{path}: {e}"),
            };
            Some(format!(
                "artifact {artifact} (omitted, installed by serial {base}): {what}; {}",
                use_full(manifest)
            ))
        })
        .collect()
}

/// The sha256 of the regular file at `path` below the root; `None` when
/// there is none.
fn file_sha256(root: &Root, path: &str) -> std::io::Result<Option<Sha256Digest>> {
    match root.lstat(path)? {
        None => Ok(None),
        Some(m) if m.kind != crate::paths::Kind::File => Ok(None),
        Some(_) => {
            let f = root.open_nofollow(path)?;
            let (d, _) = Sha256Digest::of_reader(f.take(u64::MAX))?;
            Ok(Some(d))
        }
    }
}
