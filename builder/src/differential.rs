//! Differential bundles (`bundler build SPEC --base OLD`): the new release
//! without the artifacts the base release installed unchanged.
//!
//! An artifact is left out when its bytes (sha256 and size) and every use of
//! it (each step naming it, compared whole, and its image entry) are the same
//! in the base. What it put on a host is recorded in the manifest
//! ([`bundle_spec::spec::OmittedArtifact`]), so that the installer can check,
//! by sha256, that it is still there, and plan exactly as for the full
//! bundle. Kept, to stay simple and safe: artifacts no step uses, and an
//! archive that more than one `extract` step reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bundle_spec::Limits;
use bundle_spec::Sha256Digest;
use bundle_spec::names::ArtifactName;
use bundle_spec::read::BundleReader;
use bundle_spec::sign::TrustedKeys;
use bundle_spec::spec::{
    Manifest, ManifestBase, OmittedArtifact, OmittedPackage, PackageFile, Step,
};

/// Why a differential bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DifferentialError {
    /// The base bundle could not be read or does not verify.
    #[error(
        "base bundle {path}: {message}; give the bundle the hosts have installed, signed by a key of --base-key (default: the signing key)"
    )]
    Base {
        /// The base bundle.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The base is another bundle, or not older.
    #[error("base bundle {path}: {message}")]
    Mismatch {
        /// The base bundle.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An omitted artifact's outputs could not be listed.
    #[error("artifact {artifact} ({}): {message}", path.display())]
    Outputs {
        /// The artifact.
        artifact: ArtifactName,
        /// Its file in the cache.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The verified manifest of a base bundle and its release digest.
#[derive(Debug)]
pub struct Base {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its manifest (signature verified).
    pub manifest: Manifest,
    /// Its release digest ([`Manifest::release_sha256`]).
    pub release_sha256: Sha256Digest,
}

/// Reads and verifies the base bundle's manifest and signature (its
/// artifacts are not needed).
pub fn read_base(path: &Path, trusted: &TrustedKeys) -> Result<Base, DifferentialError> {
    let base_err = |message: String| DifferentialError::Base {
        path: path.to_owned(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| base_err(e.to_string()))?;
    let reader = BundleReader::open(std::io::BufReader::new(file), trusted, &Limits::default())
        .map_err(|e| base_err(e.to_string()))?;
    let manifest = reader.manifest().clone();
    let release_sha256 = manifest.release_sha256(reader.manifest_bytes());
    Ok(Base {
        path: path.to_owned(),
        manifest,
        release_sha256,
    })
}

/// Checks that `base` is an older release of the bundle `name`.
pub fn check_base(
    base: &Base,
    name: &bundle_spec::names::BundleName,
    serial: bundle_spec::spec::Serial,
) -> Result<(), DifferentialError> {
    let b = &base.manifest;
    if &b.name != name {
        return Err(DifferentialError::Mismatch {
            path: base.path.clone(),
            message: format!("it is {} {}, not a release of {name}", b.name, b.version),
        });
    }
    if b.serial >= serial {
        return Err(DifferentialError::Mismatch {
            path: base.path.clone(),
            message: format!(
                "its serial {} is not lower than the spec's {serial}: a differential bundle upgrades hosts from an older release",
                b.serial
            ),
        });
    }
    Ok(())
}

/// The steps that use `name`, in order.
fn uses<'m>(m: &'m Manifest, name: &ArtifactName) -> Vec<&'m Step> {
    m.steps
        .iter()
        .filter(|s| s.artifacts().contains(&name))
        .collect()
}

/// Whether `name` can be left out of `new` given `base`.
fn unchanged(base: &Manifest, new: &Manifest, name: &ArtifactName) -> bool {
    let (Some(old), Some(now)) = (base.artifacts.get(name), new.artifacts.get(name)) else {
        return false;
    };
    let steps = uses(new, name);
    old.sha256 == now.sha256
        && old.size == now.size
        && !steps.is_empty()
        && steps == uses(base, name)
        && base.images.get(name) == new.images.get(name)
        && steps
            .iter()
            .filter(|s| matches!(s, Step::Extract(_)))
            .count()
            <= 1
}

/// Decides what `new` leaves out and records what each omitted artifact put
/// on a host. `paths` are the artifacts' verified files, `blobs` each
/// image's blob digests.
pub fn base_for(
    base: &Base,
    new: &Manifest,
    paths: &BTreeMap<&ArtifactName, &Path>,
    blobs: &BTreeMap<ArtifactName, Vec<bundle_spec::image::OciDigest>>,
) -> Result<ManifestBase, DifferentialError> {
    let b = &base.manifest;
    check_base(base, &new.name, new.serial)?;
    let mut omitted = BTreeMap::new();
    for name in new.artifacts.keys() {
        if !unchanged(b, new, name) {
            continue;
        }
        let path = paths[name];
        let err = |message: String| DifferentialError::Outputs {
            artifact: name.clone(),
            path: path.to_owned(),
            message,
        };
        let mut out = OmittedArtifact::default();
        for step in uses(new, name) {
            match step {
                Step::Extract(s) => {
                    out.members = bundle_spec::extract::scan(path, name.as_str(), s)
                        .map_err(|e| err(e.to_string()))?;
                }
                Step::Debs(_) => {
                    let info = debpkg::deb::read_info(path).map_err(|e| err(e.to_string()))?;
                    let files = debpkg::deb::package_files(path)
                        .map_err(|e| err(e.to_string()))?
                        .into_iter()
                        .map(|f| PackageFile {
                            path: f.path,
                            sha256: Sha256Digest::from_bytes(f.sha256),
                        })
                        .collect();
                    out.package = Some(OmittedPackage {
                        name: info.package,
                        version: info.version.to_string(),
                        architecture: info.architecture,
                        files,
                    });
                }
                Step::Images(_) => {
                    out.blobs = blobs.get(name).cloned().unwrap_or_default();
                }
                _ => {}
            }
        }
        omitted.insert(name.clone(), out);
    }
    Ok(ManifestBase {
        name: b.name.clone(),
        serial: b.serial,
        manifest_sha256: base.release_sha256,
        omitted,
    })
}
