//! Staged bundles: what `install-bundle stage` keeps and `install-bundle
//! apply` installs, in `STATE/staged/NAME/` (STATE is the state directory,
//! `ROOT/var/lib/install-bundle`):
//!
//! ```text
//! STATE/staged/NAME/
//!   BUNDLE.json          the signed manifest, byte for byte
//!   BUNDLE.json.minisig  its signature
//!   values.json          the variable values (a JSON object of strings, as --values reads)
//!   staged.json          what was staged, when, from which file ([`StagedInfo`])
//!   artifacts/ARTIFACT   every verified artifact
//! ```
//!
//! Nothing in it is trusted when it is applied: the manifest's signature is
//! verified again against the trusted keys, and every artifact's size and
//! sha256 against the manifest, before anything changes
//! ([`load`]). `staged.json` only carries what the stage run decided
//! (`--allow-downgrade`, `--allow-deb-downgrade`) and what `status` shows.
//!
//! A staged copy is complete or absent: it is written in the transient
//! staging directory, fsynced, and renamed into place; one it replaces is
//! first renamed aside (`staged/.replaced-NAME`) and removed afterwards, one
//! that is dropped is renamed to `staged/.removed-NAME` first. A leftover of
//! either (a crash) is removed by the next `stage` or `unstage`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use bundle_spec::format::{MANIFEST_ENTRY, SBOM_ENTRY, SIGNATURE_ENTRY};
use bundle_spec::read::{ReadError, check_sbom, parse_signature, verify_manifest};
use bundle_spec::sign::{KeyId, TrustedKeys};
use bundle_spec::spec::Manifest;
use bundle_spec::{Limits, Sha256Digest};
use serde::{Deserialize, Serialize};

use crate::journal::sync_dir;
use crate::stage::Staging;

/// The directory of staged bundles, in the state directory.
pub const STAGED_DIR: &str = "staged";
/// The `format` of `staged.json`.
pub const STAGED_FORMAT: &str = "install-bundle-staged/v1";
/// What was staged.
pub const INFO_FILE: &str = "staged.json";
/// The variable values.
pub const VALUES_FILE: &str = "values.json";
/// The staged artifacts.
pub const ARTIFACTS_DIR: &str = "artifacts";

const REPLACED_PREFIX: &str = ".replaced-";
const REMOVED_PREFIX: &str = ".removed-";

/// What a staged bundle is (`staged.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedInfo {
    /// Always [`STAGED_FORMAT`].
    pub format: String,
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Bundle serial.
    pub serial: u64,
    /// SHA-256 of the staged `BUNDLE.json`.
    pub manifest_sha256: String,
    /// The trusted key that signed it (when it was staged).
    pub key_id: String,
    /// When it was staged (RFC 3339, UTC).
    pub staged_at: String,
    /// The bundle file it was staged from, as given (`-` for standard input).
    pub bundle: String,
    /// The variable values (also in `values.json`).
    pub variables: BTreeMap<String, String>,
    /// Bytes of artifacts kept.
    pub artifact_bytes: u64,
    /// Operations the plan made at staging time would change (the host may
    /// have changed since: `apply` plans again).
    pub planned_changes: usize,
    /// `--allow-downgrade` was given to `stage`: `apply` accepts the same.
    pub allow_downgrade: bool,
    /// `--allow-deb-downgrade` was given to `stage`: `apply` does the same.
    pub allow_deb_downgrade: bool,
}

/// Why a staged bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StagedError {
    /// Nothing is staged under that name.
    #[error(
        "nothing is staged for {name} in {}; stage a bundle first: install-bundle stage BUNDLE",
        dir.display()
    )]
    NotStaged {
        /// The bundle name.
        name: String,
        /// The staged directory looked in.
        dir: PathBuf,
    },
    /// The staged manifest or signature does not verify.
    #[error("staged bundle {}: verification failed: {source}", dir.display())]
    Verify {
        /// The staged bundle's directory.
        dir: PathBuf,
        /// What failed.
        source: ReadError,
    },
    /// A staged file is missing, modified, or extra.
    #[error("staged bundle {}: {problem}", dir.display())]
    Damaged {
        /// The staged bundle's directory.
        dir: PathBuf,
        /// What is wrong (names the file).
        problem: String,
    },
    /// I/O.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StagedError + '_ {
    move |source| StagedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `STATE/staged`.
pub fn staged_root(state_dir: &Path) -> PathBuf {
    state_dir.join(STAGED_DIR)
}

/// `STATE/staged/NAME`.
pub fn dir_of(state_dir: &Path, name: &str) -> PathBuf {
    staged_root(state_dir).join(name)
}

/// Checks that `name` is a bundle name (so that it names one directory
/// below `STATE/staged`); the message says what a name may be.
pub fn check_name(name: &str) -> Result<(), String> {
    name.parse::<bundle_spec::names::BundleName>()
        .map(|_| ())
        .map_err(|e| format!("invalid bundle name {name:?}: {e}"))
}

/// Reads `staged.json` of `name`; `Ok(None)` when nothing is staged.
pub fn read_info(state_dir: &Path, name: &str) -> Result<Option<StagedInfo>, String> {
    let path = dir_of(state_dir, name).join(INFO_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{} is damaged ({e}); run install-bundle unstage {name} and stage the bundle again",
                path.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Every staged bundle, by name.
pub fn list(state_dir: &Path) -> Result<Vec<StagedInfo>, String> {
    let root = staged_root(state_dir);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", root.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(info) = read_info(state_dir, &n)? {
            out.push(info);
        }
    }
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// Removes the leftovers of an interrupted replacement or removal.
fn remove_leftovers(root: &Path) {
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.filter_map(Result::ok) {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(REPLACED_PREFIX) || n.starts_with(REMOVED_PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Keeps the verified artifacts of `staging` as the staged bundle
/// `info.name`, with the signed manifest, its signature and the variable
/// values: everything is written and fsynced in the staging directory, which
/// is then renamed to `STATE/staged/NAME` (replacing what was staged under
/// that name). `staging` must be in the state directory (same file system).
pub fn keep(
    state_dir: &Path,
    staging: Staging,
    manifest_bytes: &[u8],
    signature_bytes: &[u8],
    sbom: Option<&[u8]>,
    info: &StagedInfo,
) -> io::Result<()> {
    let dir = staging.dir().to_owned();
    write_synced(&dir.join(MANIFEST_ENTRY), manifest_bytes, 0o600)?;
    write_synced(&dir.join(SIGNATURE_ENTRY), signature_bytes, 0o600)?;
    if let Some(sbom) = sbom {
        write_synced(&dir.join(SBOM_ENTRY), sbom, 0o600)?;
    }
    let mut values = serde_json::to_vec_pretty(&info.variables).map_err(io::Error::other)?;
    values.push(b'\n');
    write_synced(&dir.join(VALUES_FILE), &values, 0o600)?;
    let mut meta = serde_json::to_vec_pretty(info).map_err(io::Error::other)?;
    meta.push(b'\n');
    write_synced(&dir.join(INFO_FILE), &meta, 0o600)?;
    // The artifacts were written by the staging sink without fsync: a staged
    // bundle must survive a power cut.
    let artifacts = dir.join(ARTIFACTS_DIR);
    for e in fs::read_dir(&artifacts)? {
        File::open(e?.path())?.sync_all()?;
    }
    sync_dir(&artifacts)?;
    sync_dir(&dir)?;

    let root = staged_root(state_dir);
    if fs::symlink_metadata(&root).is_err() {
        fs::DirBuilder::new().mode(0o700).create(&root)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        sync_dir(state_dir)?;
    }
    remove_leftovers(&root);
    let target = root.join(&info.name);
    let aside = root.join(format!("{REPLACED_PREFIX}{}", info.name));
    let replacing = fs::symlink_metadata(&target).is_ok();
    if replacing {
        fs::rename(&target, &aside)?;
    }
    fs::rename(&dir, &target)?;
    sync_dir(&root)?;
    sync_dir(state_dir)?;
    if replacing {
        let _ = fs::remove_dir_all(&aside);
    }
    Ok(())
}

/// Drops the staged bundle `name`: `Ok(false)` when nothing was staged.
pub fn remove(state_dir: &Path, name: &str) -> io::Result<bool> {
    let root = staged_root(state_dir);
    remove_leftovers(&root);
    let target = root.join(name);
    if fs::symlink_metadata(&target).is_err() {
        return Ok(false);
    }
    let aside = root.join(format!("{REMOVED_PREFIX}{name}"));
    fs::rename(&target, &aside)?;
    sync_dir(&root)?;
    fs::remove_dir_all(&aside)?;
    // An empty staged/ goes too, so that a state directory left with only
    // its lock is removed as before.
    if fs::remove_dir(&root).is_ok() {
        sync_dir(state_dir)?;
    }
    Ok(true)
}

/// A staged bundle whose signature and every artifact verified again.
#[derive(Debug)]
pub struct Loaded {
    /// The verified manifest.
    pub manifest: Manifest,
    /// SHA-256 of its bytes.
    pub manifest_sha256: Sha256Digest,
    /// The trusted key that signed it.
    pub key_id: KeyId,
    /// `staged.json`.
    pub info: StagedInfo,
    /// The staged directory, as the planner reads artifacts from it.
    pub staging: Staging,
    /// `values.json`.
    pub values_file: PathBuf,
    /// Bytes of artifacts verified.
    pub artifact_bytes: u64,
    /// The SBOM, verified against the manifest (when it names one).
    pub sbom: Option<Vec<u8>>,
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, StagedError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io_at(path))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_at(path))?;
    Ok(bytes)
}

/// Verifies the staged bundle `name` as `install-bundle` verifies a bundle
/// file: the manifest's signature against `trusted` (with the trusted
/// comment), the manifest strictly, then every artifact: a regular file of
/// the manifest's size and sha256, and nothing else in `artifacts/`.
pub fn load(
    state_dir: &Path,
    name: &str,
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<Loaded, StagedError> {
    let dir = dir_of(state_dir, name);
    let info = match read_info(state_dir, name) {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Err(StagedError::NotStaged {
                name: name.to_owned(),
                dir: staged_root(state_dir),
            });
        }
        Err(problem) => return Err(StagedError::Damaged { dir, problem }),
    };
    let damaged = |problem: String| StagedError::Damaged {
        dir: dir.clone(),
        problem,
    };
    let manifest_bytes = read_bounded(&dir.join(MANIFEST_ENTRY), limits.max_manifest_bytes)?;
    let signature_bytes = read_bounded(&dir.join(SIGNATURE_ENTRY), limits.max_signature_bytes)?;
    let verify_err = |source| StagedError::Verify {
        dir: dir.clone(),
        source,
    };
    let signature = parse_signature(&signature_bytes).map_err(verify_err)?;
    let (manifest, key_id) =
        verify_manifest(&manifest_bytes, &signature, trusted, limits).map_err(verify_err)?;
    let manifest_sha256 = manifest.release_sha256(&manifest_bytes);
    if manifest.name.as_str() != name {
        return Err(damaged(format!(
            "{MANIFEST_ENTRY} is bundle {}, not {name}",
            manifest.name
        )));
    }
    let sbom = match &manifest.sbom {
        None => None,
        Some(expected) => {
            let bytes = read_bounded(&dir.join(SBOM_ENTRY), limits.max_sbom_bytes)?;
            check_sbom(expected, &bytes).map_err(verify_err)?;
            Some(bytes)
        }
    };
    let artifacts = dir.join(ARTIFACTS_DIR);
    let mut total = 0u64;
    for (aname, a) in manifest.carried() {
        let path = artifacts.join(aname.as_str());
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| damaged(format!("artifact {aname} ({}): {e}", path.display())))?;
        let meta = f.metadata().map_err(io_at(&path))?;
        if !meta.is_file() {
            return Err(damaged(format!(
                "artifact {aname} ({}) is not a regular file",
                path.display()
            )));
        }
        if meta.len() != a.size {
            return Err(damaged(format!(
                "artifact {aname}: size mismatch: expected {} bytes, the staged file has {}",
                a.size,
                meta.len()
            )));
        }
        let (digest, _) = Sha256Digest::of_reader(f.take(a.size)).map_err(io_at(&path))?;
        if digest != a.sha256 {
            return Err(damaged(format!(
                "artifact {aname}: sha256 mismatch: expected {}, the staged file has {digest}",
                a.sha256
            )));
        }
        total += a.size;
    }
    for e in fs::read_dir(&artifacts).map_err(io_at(&artifacts))? {
        let e = e.map_err(io_at(&artifacts))?;
        let n = e.file_name();
        let known = n
            .to_str()
            .is_some_and(|n| manifest.carried().any(|(k, _)| k.as_str() == n));
        if !known {
            return Err(damaged(format!(
                "unexpected file {} (not an artifact of the manifest)",
                e.path().display()
            )));
        }
    }
    Ok(Loaded {
        manifest,
        manifest_sha256,
        key_id,
        info,
        staging: Staging::existing(dir.clone()),
        values_file: dir.join(VALUES_FILE),
        artifact_bytes: total,
        sbom,
    })
}
