//! `bundler push` and `bundler pull`: moving a bundle and its detached
//! signature (`BUNDLE.minisig`, written by `bundler build`) through an S3
//! bucket ([`s3`]) or an OCI registry ([`oci`]).
//!
//! * `s3://BUCKET/KEY`: the bundle is the object `KEY`, its signature the
//!   object `KEY.minisig`. Credentials, region and endpoint come from the
//!   standard AWS variables and profile files ([`s3::S3Config`]).
//! * `oci://REGISTRY/REPOSITORY:TAG`: one OCI artifact (artifact type
//!   [`oci::ARTIFACT_TYPE`], an empty config, one layer for the bundle and one
//!   for the signature), as ORAS pushes files, so that any registry and its
//!   mirroring tools carry it.
//!
//! `pull` writes into a temporary file beside the output, checks the detached
//! signature against the trusted keys and the manifest's own signature
//! ([`verify_download`]), and only then renames it to the output: a tampered
//! or truncated object never appears there.

pub mod oci;
pub mod s3;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use bundle_spec::Limits;
use bundle_spec::image::ImageRef;
use bundle_spec::read::{BundleReader, inspect_unverified};
use bundle_spec::sign::{Prehasher, Signature, TrustedKeys};

/// Where a bundle is pushed to or pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://BUCKET/KEY`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key of the bundle (its signature is `KEY.minisig`).
        key: String,
    },
    /// `oci://REGISTRY/REPOSITORY:TAG`.
    Oci(ImageRef),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Oci(r) => write!(f, "oci://{r}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = TransferError;

    fn from_str(url: &str) -> Result<Location, TransferError> {
        let bad = |reason: &str| TransferError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').ok_or_else(|| {
                bad("expected s3://BUCKET/KEY (the object key of the bundle, e.g. s3://releases/worker-1.30.tar.zst)")
            })?;
            if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
                return Err(bad(
                    "expected s3://BUCKET/KEY with a bucket and an object key that does not end in /",
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("oci://") {
            let r: ImageRef = rest.parse().map_err(|e| {
                bad(&format!(
                    "expected oci://REGISTRY/REPOSITORY:TAG, e.g. oci://registry.example:5000/bundles/worker:1.30 ({e})"
                ))
            })?;
            if !rest.starts_with(r.registry()) {
                return Err(bad(
                    "name the registry: oci://REGISTRY/REPOSITORY:TAG (e.g. oci://registry.example:5000/bundles/worker:1.30)",
                ));
            }
            let last = rest.rsplit('/').next().unwrap_or(rest);
            if !last.contains(':') && !rest.contains('@') {
                return Err(bad(
                    "name a tag: oci://REGISTRY/REPOSITORY:TAG (e.g. :1.30)",
                ));
            }
            return Ok(Location::Oci(r));
        }
        Err(bad(
            "expected s3://BUCKET/KEY or oci://REGISTRY/REPOSITORY:TAG",
        ))
    }
}

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The URL is not one of ours.
    #[error("{url}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file cannot be read or written (the cause follows in the
    /// error chain).
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file to push is not a bundle, or has no detached signature.
    #[error("{}: {reason}", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// What was fetched fails verification: nothing was written.
    #[error("{url}: refused, nothing written: {reason}")]
    Verify {
        /// Where it came from.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store has no such object or tag.
    #[error("{url}: not found ({reason}); {hint}")]
    NotFound {
        /// The URL.
        url: String,
        /// What the server said.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// The store refused the credentials (or their absence).
    #[error("{url}: access denied ({reason}); {hint}")]
    Denied {
        /// The URL.
        url: String,
        /// What the server said.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// Setting up or talking to the store failed.
    #[error("{url}: {reason}")]
    Remote {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl TransferError {
    /// Whether this is a verification failure (exit code 3).
    pub fn is_verification(&self) -> bool {
        matches!(self, TransferError::Verify { .. })
    }
}

/// Tuning of a transfer.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Parts (S3) transferred at once.
    pub jobs: usize,
    /// Size of a multipart-upload part and of a ranged-download chunk (S3).
    /// `None`: [`s3::DEFAULT_PART_SIZE`], raised so that no more than
    /// 10 000 parts are needed.
    pub part_size: Option<u64>,
    /// Registry options (OCI).
    pub registry: crate::registry::RegistryOptions,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            jobs: 4,
            part_size: None,
            registry: crate::registry::RegistryOptions::default(),
        }
    }
}

/// A bundle about to be pushed: its file, its detached signature and what
/// its manifest claims (not verified: `push` needs no key).
#[derive(Debug, Clone)]
pub struct LocalBundle {
    /// The bundle file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// The detached signature's text.
    pub signature: String,
    /// The signature's file.
    pub signature_path: PathBuf,
    /// `name version serial` from the manifest.
    pub name: String,
    /// Version.
    pub version: String,
    /// Serial.
    pub serial: u64,
    /// The key id of the detached signature.
    pub key_id: String,
}

impl LocalBundle {
    /// Opens `path` and `path.minisig`, and reads the manifest (unverified).
    pub fn open(path: &Path) -> Result<LocalBundle, TransferError> {
        let io = |source| TransferError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let u = inspect_unverified(file, &Limits::default()).map_err(|e| {
            TransferError::NotABundle {
                path: path.to_owned(),
                reason: format!("not a bundle built by `bundler build`: {e}"),
            }
        })?;
        let signature_path = PathBuf::from(format!(
            "{}.{}",
            path.display(),
            bundle_spec::format::DETACHED_SIGNATURE_EXTENSION
        ));
        let signature = std::fs::read_to_string(&signature_path).map_err(|e| {
            TransferError::NotABundle {
                path: path.to_owned(),
                reason: format!(
                    "its detached signature {} cannot be read ({e}); `bundler build` writes it beside the bundle, and push carries both",
                    signature_path.display()
                ),
            }
        })?;
        let sig = Signature::parse(&signature).map_err(|e| TransferError::NotABundle {
            path: signature_path.clone(),
            reason: format!("not a minisign signature: {e}"),
        })?;
        Ok(LocalBundle {
            path: path.to_owned(),
            size,
            signature,
            signature_path,
            name: u.manifest.name.to_string(),
            version: u.manifest.version.to_string(),
            serial: u.manifest.serial.into(),
            key_id: sig.key_id.to_string(),
        })
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Where to.
    pub url: String,
    /// Bytes of the bundle.
    pub size: u64,
    /// Parts of the multipart upload (S3), 1 for a single PUT or an OCI blob.
    pub parts: usize,
    /// The manifest digest (OCI).
    pub digest: Option<String>,
}

/// What a verified pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The output file.
    pub path: PathBuf,
    /// Where from.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its serial.
    pub serial: u64,
    /// The trusted key that signed it.
    pub key_id: String,
    /// Chunks found already downloaded by an interrupted pull (S3).
    pub resumed_chunks: usize,
}

/// What [`verify_download`] found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its serial.
    pub serial: u64,
    /// The trusted key that signed it.
    pub key_id: String,
}

/// Checks a downloaded bundle at `path`: the detached signature `signature`
/// over the whole file against `trusted`, then the manifest's own signature,
/// and that the detached signature names this manifest.
pub fn verify_download(
    url: &str,
    path: &Path,
    signature: &str,
    trusted: &TrustedKeys,
) -> Result<Verified, TransferError> {
    let refuse = |reason: String| TransferError::Verify {
        url: url.to_owned(),
        reason,
    };
    let sig = Signature::parse(signature).map_err(|e| {
        refuse(format!(
            "the detached signature is not minisign's format: {e}"
        ))
    })?;
    let io = |source| TransferError::Io {
        path: path.to_owned(),
        source,
    };
    let digest = Prehasher::of_reader(File::open(path).map_err(io)?).map_err(io)?;
    trusted.verify_digest(&digest, &sig).map_err(|e| {
        refuse(format!(
            "the detached signature does not verify over the bundle's bytes: {e}"
        ))
    })?;
    let reader = BundleReader::open(File::open(path).map_err(io)?, trusted, &Limits::default())
        .map_err(|e| refuse(format!("the bundle's manifest: {e}")))?;
    let m = reader.manifest();
    let expected = m.trusted_comment();
    if sig.trusted_comment != expected && !sig.trusted_comment.starts_with(&format!("{expected} "))
    {
        return Err(refuse(format!(
            "the detached signature is for {:?}, the manifest says {expected:?}",
            sig.trusted_comment
        )));
    }
    Ok(Verified {
        name: m.name.to_string(),
        version: m.version.to_string(),
        serial: m.serial.into(),
        key_id: reader.key_id().to_string(),
    })
}

/// Pushes `bundle` (and its detached signature) to `location`.
pub fn push(
    bundle: &LocalBundle,
    location: &Location,
    opts: &TransferOptions,
) -> Result<Pushed, TransferError> {
    match location {
        Location::S3 { bucket, key } => s3::push(bundle, bucket, key, opts),
        Location::Oci(r) => oci::push(bundle, r, opts),
    }
}

/// Pulls the bundle at `location` to `out`, verified against `trusted`.
pub fn pull(
    location: &Location,
    out: &Path,
    trusted: &TrustedKeys,
    opts: &TransferOptions,
) -> Result<Pulled, TransferError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let url = location.to_string();
    let (tmp, signature, resumed_chunks) = match location {
        Location::S3 { bucket, key } => s3::download(bucket, key, out, &dir, opts)?,
        Location::Oci(r) => {
            let (tmp, sig) = oci::download(r, &dir, opts)?;
            (tmp, sig, 0)
        }
    };
    let verified = match verify_download(&url, tmp.path(), &signature, trusted) {
        Ok(v) => v,
        Err(e) => {
            tmp.discard();
            return Err(e);
        }
    };
    let size = std::fs::metadata(tmp.path()).map(|m| m.len()).unwrap_or(0);
    tmp.persist(out)?;
    Ok(Pulled {
        path: out.to_owned(),
        url,
        size,
        name: verified.name,
        version: verified.version,
        serial: verified.serial,
        key_id: verified.key_id,
        resumed_chunks,
    })
}

/// A downloaded file not yet at its output path.
#[derive(Debug)]
pub struct Download {
    path: PathBuf,
    /// Files removed with it (resume state).
    companions: Vec<PathBuf>,
}

impl Download {
    fn path(&self) -> &Path {
        &self.path
    }

    fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
        for c in &self.companions {
            let _ = std::fs::remove_file(c);
        }
    }

    fn persist(self, out: &Path) -> Result<(), TransferError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |source| TransferError::Io {
            path: out.to_owned(),
            source,
        };
        let f = File::open(&self.path).map_err(io)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&self.path, out).map_err(io)?;
        for c in &self.companions {
            let _ = std::fs::remove_file(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_key_or_a_registry_repository_and_tag() {
        assert_eq!(
            "s3://releases/k8s/worker.tar.zst"
                .parse::<Location>()
                .unwrap(),
            Location::S3 {
                bucket: "releases".into(),
                key: "k8s/worker.tar.zst".into()
            }
        );
        let oci = "oci://127.0.0.1:5000/bundles/worker:1.30"
            .parse::<Location>()
            .unwrap();
        assert_eq!(oci.to_string(), "oci://127.0.0.1:5000/bundles/worker:1.30");
        for bad in [
            "s3://releases",
            "s3://releases/",
            "s3:///key",
            "s3://b/dir/",
            "oci://127.0.0.1:5000/bundles/worker",
            "oci://bundles/worker:1",
            "https://example.com/x.tar.zst",
            "worker.tar.zst",
        ] {
            let e = bad.parse::<Location>().unwrap_err().to_string();
            assert!(e.starts_with(bad), "{bad}: {e}");
            assert!(e.contains("expected") || e.contains("name "), "{bad}: {e}");
        }
    }
}
