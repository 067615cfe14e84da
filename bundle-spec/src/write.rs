//! Writing a bundle: manifest, signature and artifacts into one zstd-compressed tar.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::format::{
    ARTIFACT_PREFIX, DEFAULT_ZSTD_LEVEL, MANIFEST_ENTRY, SBOM_ENTRY, SIGNATURE_ENTRY, TAR_END_BYTES,
};
use crate::names::ArtifactName;
use crate::report::Reporter;
use crate::sign::{Prehasher, SecretKey, Signature};
use crate::spec::{Manifest, ManifestArtifact};
use crate::tarfmt;

/// The untrusted comment of a manifest signature.
pub const MANIFEST_SIGNATURE_COMMENT: &str =
    "signature of BUNDLE.json by an install-bundle release key";

/// How to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// zstd level, 1 to [`crate::format::MAX_ZSTD_LEVEL`].
    pub level: i32,
    /// zstd worker threads (at least 1; the output does not depend on it).
    pub workers: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            level: DEFAULT_ZSTD_LEVEL,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
        }
    }
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing the output or reading an artifact failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// An artifact's bytes do not have the manifest's digest.
    #[error("artifact {name}: sha256 mismatch while packing: expected {expected}, got {actual}")]
    Digest {
        /// The artifact.
        name: ArtifactName,
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the bytes read.
        actual: Sha256Digest,
    },
}

/// What [`write_bundle`] produced.
#[derive(Debug)]
pub struct Written<W> {
    /// The output writer, flushed.
    pub output: W,
    /// The exact bytes of `BUNDLE.json`.
    pub manifest_bytes: Vec<u8>,
    /// The manifest's signature.
    pub signature: Signature,
    /// BLAKE2b-512 of the whole bundle file, for a detached signature.
    pub file_prehash: [u8; 64],
    /// Size of the bundle file.
    pub file_size: u64,
}

/// Counts and pre-hashes everything written, for the detached signature.
struct TeeWriter<W> {
    inner: W,
    hasher: Prehasher,
    written: u64,
}

impl<W: Write> Write for TeeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens an artifact's bytes for packing.
pub type OpenArtifact<'a> =
    dyn FnMut(&ArtifactName, &ManifestArtifact) -> io::Result<Box<dyn Read>> + 'a;

/// Writes a bundle for `manifest`, signing it with `key`. `open` yields each
/// artifact's bytes; they are hashed while packed and must match the
/// manifest's size and digest, or the write fails (the caller discards the
/// partial output). `sbom` is the SBOM entry's bytes: required exactly when
/// the manifest has an `sbom` field, and then of its size and digest.
pub fn write_bundle<W: Write>(
    output: W,
    manifest: &Manifest,
    sbom: Option<&[u8]>,
    key: &SecretKey,
    open: &mut OpenArtifact<'_>,
    options: WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Written<W>, WriteError> {
    let io_err = |context: String| move |source| WriteError::Io { context, source };
    let sbom_entry = match (&manifest.sbom, sbom) {
        (None, None) => None,
        (Some(m), Some(bytes))
            if m.size == bytes.len() as u64 && m.sha256 == Sha256Digest::of(bytes) =>
        {
            Some((SBOM_ENTRY, bytes.to_vec()))
        }
        (m, bytes) => {
            return Err(WriteError::Io {
                context: format!("writing {SBOM_ENTRY}"),
                source: io::Error::other(format!(
                    "the manifest {} an SBOM and {} given{}",
                    if m.is_some() { "names" } else { "names no" },
                    if bytes.is_some() {
                        "one was"
                    } else {
                        "none was"
                    },
                    if m.is_some() && bytes.is_some() {
                        " with other bytes"
                    } else {
                        ""
                    }
                )),
            });
        }
    };
    let manifest_bytes = manifest.to_bytes();
    let signature = key.sign(
        &manifest_bytes,
        &manifest.trusted_comment(),
        MANIFEST_SIGNATURE_COMMENT,
    );
    let signature_bytes = signature.to_file_string().into_bytes();
    let mtime = u64::try_from(manifest.created.unix()).unwrap_or(0);

    let tee = TeeWriter {
        inner: output,
        hasher: Prehasher::new(),
        written: 0,
    };
    let mut z = zstd::stream::write::Encoder::new(tee, options.level)
        .map_err(io_err("starting zstd".into()))?;
    let setup = (|| {
        z.include_checksum(true)?;
        z.multithread(options.workers.max(1))?;
        z.include_contentsize(false)
    })();
    setup.map_err(io_err("configuring zstd".into()))?;

    for (name, bytes) in [
        (MANIFEST_ENTRY, manifest_bytes.clone()),
        (SIGNATURE_ENTRY, signature_bytes),
    ]
    .into_iter()
    .chain(sbom_entry)
    {
        let h = tarfmt::header(name, bytes.len() as u64, mtime)
            .map_err(io_err(format!("writing {name}")))?;
        (|| {
            z.write_all(h.as_bytes())?;
            z.write_all(&bytes)?;
            tarfmt::write_padding(&mut z, bytes.len() as u64)
        })()
        .map_err(io_err(format!("writing {name}")))?;
    }

    reporter.on_phase("pack");
    let mut buf = vec![0u8; 1 << 20];
    for (name, artifact) in manifest.carried() {
        let entry = format!("{ARTIFACT_PREFIX}{name}");
        let h = tarfmt::header(&entry, artifact.size, mtime)
            .map_err(io_err(format!("writing {entry}")))?;
        z.write_all(h.as_bytes())
            .map_err(io_err(format!("writing {entry}")))?;
        let mut reader =
            open(name, artifact).map_err(io_err(format!("opening artifact {name}")))?;
        let id = reporter.on_start(name.as_str(), Some(artifact.size));
        let mut hasher = Sha256::new();
        let mut remaining = artifact.size;
        while remaining > 0 {
            let want = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(WriteError::Io {
                        context: format!("reading artifact {name}"),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "ended after {} of {} bytes",
                                artifact.size - remaining,
                                artifact.size
                            ),
                        ),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(format!("reading artifact {name}"))(e)),
            };
            hasher.update(&buf[..n]);
            z.write_all(&buf[..n])
                .map_err(io_err(format!("writing {entry}")))?;
            remaining -= n as u64;
            reporter.on_progress(id, n as u64);
        }
        // The source must end exactly at the declared size.
        let mut probe = [0u8; 1];
        if tarfmt::read_full(&mut reader, &mut probe)
            .map_err(io_err(format!("reading artifact {name}")))?
            != 0
        {
            return Err(WriteError::Io {
                context: format!("reading artifact {name}"),
                source: io::Error::other(format!(
                    "longer than the expected {} bytes",
                    artifact.size
                )),
            });
        }
        reporter.on_finish(id);
        let actual = Sha256Digest::from_bytes(hasher.finalize().into());
        if actual != artifact.sha256 {
            return Err(WriteError::Digest {
                name: name.clone(),
                expected: artifact.sha256,
                actual,
            });
        }
        tarfmt::write_padding(&mut z, artifact.size).map_err(io_err(format!("writing {entry}")))?;
    }
    z.write_all(&[0u8; TAR_END_BYTES as usize])
        .map_err(io_err("writing the end of the archive".into()))?;
    let mut tee = z.finish().map_err(io_err("finishing zstd".into()))?;
    tee.flush().map_err(io_err("flushing the output".into()))?;
    Ok(Written {
        output: tee.inner,
        manifest_bytes,
        signature,
        file_prehash: tee.hasher.finish(),
        file_size: tee.written,
    })
}
