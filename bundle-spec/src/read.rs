//! Reading a bundle: one streaming pass that verifies before it trusts.
//!
//! The order of checks is the one written in `FORMAT.md` ("Verification");
//! each step below carries that text as its comment.

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::format::{ARTIFACT_PREFIX, MANIFEST_ENTRY, SBOM_ENTRY, SIGNATURE_ENTRY, TAR_BLOCK};
use crate::limits::Limits;
use crate::names::ArtifactName;
use crate::report::Reporter;
use crate::sign::{KeyId, Signature, SignatureError, TrustedKeys};
use crate::spec::{Manifest, ManifestArtifact, ManifestSbom};
use crate::tarfmt::{self, Block, HeaderProblem};
use crate::validate::{ValidationErrors, parse_manifest};

/// Why a bundle was refused. Every variant but [`ReadError::Sink`] means the
/// bundle itself is bad (wrong key, modified, malformed).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The zstd stream is damaged, truncated, or not zstd at all.
    #[error("not a valid bundle: the zstd stream is damaged ({context}): {source}")]
    Decompress {
        /// Where in the bundle.
        context: String,
        /// What zstd said.
        source: io::Error,
    },
    /// The bundle ends early.
    #[error("not a valid bundle: it ends early ({context})")]
    Truncated {
        /// What was being read.
        context: String,
    },
    /// A tar header's checksum does not match.
    #[error("not a valid bundle: damaged tar header at entry {index}")]
    BadHeader {
        /// Position of the entry (0 = manifest).
        index: usize,
    },
    /// An entry other than the next expected one.
    #[error("not a valid bundle: entry {index} is {actual:?}, expected {expected:?}")]
    UnexpectedEntry {
        /// Position of the entry.
        index: usize,
        /// The entry name the format requires here.
        expected: String,
        /// What was found (`"end of archive"` when it ended).
        actual: String,
    },
    /// An entry that is not a regular file.
    #[error(
        "not a valid bundle: entry {index} ({name:?}) is a {kind}, only regular files are allowed"
    )]
    EntryType {
        /// Position of the entry.
        index: usize,
        /// The entry's name.
        name: String,
        /// What kind of entry it is.
        kind: &'static str,
    },
    /// The manifest or signature entry exceeds its limit.
    #[error("not a valid bundle: {entry} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The entry.
        entry: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The signature file is not text or not minisign's format, or does not verify.
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    /// The signed trusted comment does not describe the signed manifest.
    #[error(
        "signature check failed: trusted comment {actual:?} does not match the manifest ({expected:?})"
    )]
    TrustedComment {
        /// `name version serial` of the manifest.
        expected: String,
        /// The signed comment.
        actual: String,
    },
    /// The (signed) manifest is invalid.
    #[error("invalid manifest (BUNDLE.json):\n{0}")]
    Manifest(ValidationErrors),
    /// An artifact entry's size differs from the manifest.
    #[error("artifact {name}: size mismatch: expected {expected} bytes, the bundle holds {actual}")]
    ArtifactSize {
        /// The artifact.
        name: ArtifactName,
        /// From the manifest.
        expected: u64,
        /// From the tar header.
        actual: u64,
    },
    /// An artifact's bytes do not have the manifest's digest.
    #[error("artifact {name}: sha256 mismatch: expected {expected}, got {actual}")]
    ArtifactDigest {
        /// The artifact.
        name: ArtifactName,
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the bytes read.
        actual: Sha256Digest,
    },
    /// The SBOM entry does not have the manifest's size or digest.
    #[error(
        "SBOM.cdx.json: does not match the manifest: expected {expected_size} bytes with sha256 {expected}, got {actual_size} bytes with sha256 {actual}"
    )]
    SbomDigest {
        /// From the manifest.
        expected: Sha256Digest,
        /// Of the bytes read.
        actual: Sha256Digest,
        /// From the manifest.
        expected_size: u64,
        /// Of the entry.
        actual_size: u64,
    },
    /// Non-zero bytes in the padding after an entry.
    #[error("not a valid bundle: non-zero padding after entry {index}")]
    Padding {
        /// Position of the entry.
        index: usize,
    },
    /// Data after the end of the archive, inside or after the zstd frame.
    #[error("not a valid bundle: unexpected data after the end of the archive ({0})")]
    TrailingData(&'static str),
    /// The caller's sink failed (e.g. the staging directory is full).
    #[error("artifact {name}: cannot store it: {source}")]
    Sink {
        /// The artifact.
        name: ArtifactName,
        /// The cause.
        source: io::Error,
    },
}

/// Where verified artifacts go: a staging directory, or nowhere (`verify`).
///
/// [`ArtifactSink::create`] is called before an artifact's bytes are read;
/// [`ArtifactSink::commit`] only after they all matched the manifest. A writer
/// that is dropped without `commit` belongs to a refused artifact and must
/// leave nothing behind.
pub trait ArtifactSink {
    /// Receives one artifact's bytes.
    type Writer: Write + Send;
    /// Starts receiving `name`.
    fn create(
        &mut self,
        name: &ArtifactName,
        artifact: &ManifestArtifact,
    ) -> io::Result<Self::Writer>;
    /// `name` was received completely and matched its size and digest.
    fn commit(&mut self, name: &ArtifactName, writer: Self::Writer) -> io::Result<()>;
}

/// An [`ArtifactSink`] that keeps nothing (verification only).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardSink;

impl ArtifactSink for DiscardSink {
    type Writer = io::Sink;
    fn create(&mut self, _: &ArtifactName, _: &ManifestArtifact) -> io::Result<io::Sink> {
        Ok(io::sink())
    }
    fn commit(&mut self, _: &ArtifactName, _: io::Sink) -> io::Result<()> {
        Ok(())
    }
}

/// What a fully verified bundle was.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of the exact `BUNDLE.json` bytes.
    pub manifest_sha256: Sha256Digest,
    /// The key that signed it.
    pub key_id: KeyId,
    /// Bytes of artifact data verified.
    pub artifact_bytes: u64,
    /// The SBOM's bytes (verified against the manifest), when it has one.
    pub sbom: Option<Vec<u8>>,
}

type Decoder<R> = zstd::stream::read::Decoder<'static, BufReader<R>>;

/// A bundle whose manifest and signature have been verified; its artifacts
/// are verified by [`BundleReader::read_artifacts`].
pub struct BundleReader<R: Read> {
    z: Decoder<R>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    manifest_sha256: Sha256Digest,
    signature: Signature,
    signature_bytes: Vec<u8>,
    key_id: KeyId,
    sbom: Option<Vec<u8>>,
}

impl<R: Read> std::fmt::Debug for BundleReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReader")
            .field("name", &self.manifest.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn decompress_err(context: &str) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Decompress {
        context: context.to_owned(),
        source,
    }
}

fn open_decoder<R: Read>(input: R, limits: &Limits) -> Result<Decoder<R>, ReadError> {
    let mut z = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, input))
        .map_err(decompress_err("opening"))?
        .single_frame();
    z.window_log_max(limits.zstd_window_log_max)
        .map_err(decompress_err("setting the window limit"))?;
    Ok(z)
}

/// Reads the next header, which must be a regular file named `expected`.
fn expect_header(
    z: &mut impl Read,
    index: usize,
    expected: &str,
) -> Result<tar::Header, ReadError> {
    let block = tarfmt::read_block(z).map_err(decompress_err(expected))?;
    let header = match block {
        Err(HeaderProblem::Truncated) => {
            return Err(ReadError::Truncated {
                context: format!("header of {expected}"),
            });
        }
        Err(HeaderProblem::Checksum) => return Err(ReadError::BadHeader { index }),
        Ok(Block::Zero) => {
            return Err(ReadError::UnexpectedEntry {
                index,
                expected: expected.to_owned(),
                actual: "end of archive".to_owned(),
            });
        }
        Ok(Block::Header(h)) => *h,
    };
    let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
    let kind = header.entry_type();
    if !matches!(kind, tar::EntryType::Regular) {
        return Err(ReadError::EntryType {
            index,
            name,
            kind: crate::archive::describe_entry_type(kind),
        });
    }
    if name != expected {
        return Err(ReadError::UnexpectedEntry {
            index,
            expected: expected.to_owned(),
            actual: name,
        });
    }
    Ok(header)
}

fn entry_size(header: &tar::Header, index: usize) -> Result<u64, ReadError> {
    header.size().map_err(|_| ReadError::BadHeader { index })
}

/// Checks the zero padding after an entry of `size` bytes.
fn skip_padding(z: &mut impl Read, size: u64, index: usize, what: &str) -> Result<(), ReadError> {
    let pad = tarfmt::padding(size) as usize;
    let mut buf = [0u8; TAR_BLOCK as usize];
    let n = tarfmt::read_full(z, &mut buf[..pad]).map_err(decompress_err(what))?;
    if n < pad {
        return Err(ReadError::Truncated {
            context: format!("padding of {what}"),
        });
    }
    if buf[..pad].iter().any(|&b| b != 0) {
        return Err(ReadError::Padding { index });
    }
    Ok(())
}

/// Reads a small entry (manifest or signature) whole, refusing it from its
/// header when it is larger than `limit`.
fn read_small_entry(
    z: &mut impl Read,
    index: usize,
    entry: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ReadError> {
    let header = expect_header(z, index, entry)?;
    let size = entry_size(&header, index)?;
    if size > limit {
        return Err(ReadError::TooLarge { entry, size, limit });
    }
    let mut bytes = vec![0u8; size as usize];
    if tarfmt::read_full(z, &mut bytes).map_err(decompress_err(entry))? < bytes.len() {
        return Err(ReadError::Truncated {
            context: entry.to_owned(),
        });
    }
    skip_padding(z, size, index, entry)?;
    Ok(bytes)
}

/// The manifest and signature of a bundle, read WITHOUT verifying the
/// signature: for showing what a bundle claims to be (`bundler inspect`).
/// Never act on it; use [`BundleReader::open`].
#[derive(Debug, Clone)]
pub struct Unverified {
    /// The claimed manifest (parsed and validated, not authenticated).
    pub manifest: Manifest,
    /// The signature entry.
    pub signature: Signature,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: Sha256Digest,
}

/// Reads the manifest and signature without checking who signed them.
pub fn inspect_unverified<R: Read>(input: R, limits: &Limits) -> Result<Unverified, ReadError> {
    let mut z = open_decoder(input, limits)?;
    let manifest_bytes = read_small_entry(&mut z, 0, MANIFEST_ENTRY, limits.max_manifest_bytes)?;
    let signature = parse_signature(&read_small_entry(
        &mut z,
        1,
        SIGNATURE_ENTRY,
        limits.max_signature_bytes,
    )?)?;
    let manifest = parse_manifest(&manifest_bytes, limits).map_err(ReadError::Manifest)?;
    Ok(Unverified {
        manifest,
        signature,
        manifest_sha256: Sha256Digest::of(&manifest_bytes),
    })
}

/// Parses the bytes of `BUNDLE.json.minisig` (UTF-8 text in minisign's
/// format); nothing is verified yet.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, ReadError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SignatureError::Malformed("BUNDLE.json.minisig is not UTF-8 text".into()))?;
    Ok(Signature::parse(text)?)
}

/// Bytes per chunk handed from decompression to hashing and writing.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads (bounds memory at ~6 MiB).
const IN_FLIGHT: usize = 4;

enum StreamError {
    Read(ReadError),
    Sink(io::Error),
}

/// Streams exactly `size` bytes of the current entry into `writer`, returning
/// the writer and the SHA-256 of the bytes. Decompression runs on this thread
/// while a second thread hashes and writes the previous chunks, so the two
/// overlap; never more than `size` bytes are read.
fn stream_entry<R: Read, W: Write + Send>(
    z: &mut R,
    size: u64,
    mut writer: W,
    entry: &str,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<(W, Sha256Digest), StreamError> {
    let read_chunk = |z: &mut R, buf: &mut [u8]| -> Result<(), StreamError> {
        let n =
            tarfmt::read_full(z, buf).map_err(|e| StreamError::Read(decompress_err(entry)(e)))?;
        if n < buf.len() {
            return Err(StreamError::Read(ReadError::Truncated {
                context: entry.to_owned(),
            }));
        }
        Ok(())
    };
    // Small entries: no thread.
    if size <= CHUNK as u64 {
        let mut buf = vec![0u8; size as usize];
        read_chunk(z, &mut buf)?;
        writer.write_all(&buf).map_err(StreamError::Sink)?;
        reporter.on_progress(id, size);
        return Ok((
            writer,
            Sha256Digest::from_bytes(Sha256::digest(&buf).into()),
        ));
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..=IN_FLIGHT {
        empty_tx.send(vec![0u8; CHUNK]).expect("receiver alive");
    }
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || -> io::Result<(W, Sha256Digest)> {
            let mut hasher = Sha256::new();
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                writer.write_all(&buf[..n])?;
                // The reader may have stopped already; the buffer is then dropped.
                let _ = empty_tx.send(buf);
            }
            Ok((writer, Sha256Digest::from_bytes(hasher.finalize().into())))
        });
        let mut remaining = size;
        let mut read_result = Ok(());
        while remaining > 0 {
            // An empty pool means the writer thread stopped on an error.
            let Ok(mut buf) = empty_rx.recv() else { break };
            let n = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            if let Err(e) = read_chunk(z, &mut buf[..n]) {
                read_result = Err(e);
                break;
            }
            if full_tx.send((buf, n)).is_err() {
                break;
            }
            remaining -= n as u64;
            reporter.on_progress(id, n as u64);
        }
        drop(full_tx);
        let written = worker.join().expect("hashing thread does not panic");
        read_result?;
        written.map_err(StreamError::Sink)
    })
}

impl<R: Read> BundleReader<R> {
    /// Reads and verifies the manifest and its signature (steps 1 to 6 of
    /// FORMAT.md's verification). Nothing of the manifest is trusted or even
    /// parsed before the signature verified against `trusted`.
    pub fn open(input: R, trusted: &TrustedKeys, limits: &Limits) -> Result<Self, ReadError> {
        // 1. Open the file as exactly one zstd frame, with the window size capped.
        let mut z = open_decoder(input, limits)?;
        // 2. Entry 0 must be a regular file named BUNDLE.json, no larger than
        //    the manifest limit (checked from its header, before reading it).
        let manifest_bytes =
            read_small_entry(&mut z, 0, MANIFEST_ENTRY, limits.max_manifest_bytes)?;
        // 3. Entry 1 must be a regular file named BUNDLE.json.minisig, no larger
        //    than the signature limit, in minisign's format with algorithm ED.
        let signature_bytes =
            read_small_entry(&mut z, 1, SIGNATURE_ENTRY, limits.max_signature_bytes)?;
        let signature = parse_signature(&signature_bytes)?;
        // 4. and 5.
        let (manifest, key_id) = verify_manifest(&manifest_bytes, &signature, trusted, limits)?;
        // 6. When the manifest names an SBOM, entry 2 must be a regular file
        //    named SBOM.cdx.json with exactly the manifest's size and digest.
        let sbom = match &manifest.sbom {
            None => None,
            Some(expected) => {
                let bytes = read_small_entry(&mut z, 2, SBOM_ENTRY, limits.max_sbom_bytes)?;
                check_sbom(expected, &bytes)?;
                Some(bytes)
            }
        };
        Ok(Self {
            z,
            manifest_sha256: Sha256Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
            signature,
            signature_bytes,
            key_id,
            sbom,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the exact manifest bytes.
    pub fn manifest_sha256(&self) -> Sha256Digest {
        self.manifest_sha256
    }

    /// The id of the trusted key that signed the manifest.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The manifest's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The SBOM's bytes (CycloneDX 1.5 JSON), verified against the manifest;
    /// `None` for bundles built without one.
    pub fn sbom(&self) -> Option<&[u8]> {
        self.sbom.as_deref()
    }

    /// The exact bytes of `BUNDLE.json`, as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The exact bytes of `BUNDLE.json.minisig`.
    pub fn signature_bytes(&self) -> &[u8] {
        &self.signature_bytes
    }

    /// Streams every artifact into `sink`, verifying each, then checks that
    /// nothing follows (steps 7 to 9 of FORMAT.md's verification).
    pub fn read_artifacts<S: ArtifactSink>(
        mut self,
        sink: &mut S,
        reporter: &dyn Reporter,
    ) -> Result<Verified, ReadError> {
        let mut total = 0u64;
        let artifacts: Vec<(ArtifactName, ManifestArtifact)> = self
            .manifest
            .carried()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        let first = 2 + usize::from(self.sbom.is_some());
        for (i, (name, artifact)) in artifacts.iter().enumerate() {
            let index = i + first;
            // 7. Each following entry must be the next artifact of the manifest
            //    in name order: a regular file named artifacts/NAME whose size
            //    is the manifest's. Its bytes are streamed to the sink while
            //    hashed, never reading past the declared size, and the sink
            //    keeps them only if the SHA-256 matches.
            let expected_name = format!("{ARTIFACT_PREFIX}{name}");
            let header = expect_header(&mut self.z, index, &expected_name)?;
            let size = entry_size(&header, index)?;
            if size != artifact.size {
                return Err(ReadError::ArtifactSize {
                    name: name.clone(),
                    expected: artifact.size,
                    actual: size,
                });
            }
            let sink_err = |source| ReadError::Sink {
                name: name.clone(),
                source,
            };
            let writer = sink.create(name, artifact).map_err(sink_err)?;
            let id = reporter.on_start(name.as_str(), Some(size));
            let (writer, actual) =
                stream_entry(&mut self.z, size, writer, &expected_name, reporter, id).map_err(
                    |e| match e {
                        StreamError::Read(e) => e,
                        StreamError::Sink(source) => ReadError::Sink {
                            name: name.clone(),
                            source,
                        },
                    },
                )?;
            reporter.on_finish(id);
            if actual != artifact.sha256 {
                return Err(ReadError::ArtifactDigest {
                    name: name.clone(),
                    expected: artifact.sha256,
                    actual,
                });
            }
            skip_padding(&mut self.z, size, index, &expected_name)?;
            sink.commit(name, writer).map_err(sink_err)?;
            total += size;
        }
        // 8. After the last artifact come exactly two zero blocks; any further
        //    entry (an extra, duplicate or unlisted one) is refused.
        let index = artifacts.len() + first;
        for _ in 0..2 {
            match tarfmt::read_block(&mut self.z).map_err(decompress_err("end of archive"))? {
                Ok(Block::Zero) => {}
                Ok(Block::Header(h)) => {
                    return Err(ReadError::UnexpectedEntry {
                        index,
                        expected: "end of archive".into(),
                        actual: String::from_utf8_lossy(&h.path_bytes()).into_owned(),
                    });
                }
                Err(HeaderProblem::Checksum) => return Err(ReadError::BadHeader { index }),
                Err(HeaderProblem::Truncated) => {
                    return Err(ReadError::Truncated {
                        context: "end of archive".into(),
                    });
                }
            }
        }
        // 9. The zstd frame must end right there (its content checksum is
        //    checked as it ends), and the file must end with the frame: no
        //    trailing bytes, no second frame.
        let mut probe = [0u8; 1];
        if tarfmt::read_full(&mut self.z, &mut probe).map_err(decompress_err("end of frame"))? != 0
        {
            return Err(ReadError::TrailingData("inside the zstd frame"));
        }
        let mut rest = self.z.finish();
        if tarfmt::read_full(&mut rest, &mut probe).map_err(decompress_err("after the frame"))? != 0
        {
            return Err(ReadError::TrailingData("after the zstd frame"));
        }
        Ok(Verified {
            manifest: self.manifest,
            manifest_sha256: self.manifest_sha256,
            key_id: self.key_id,
            artifact_bytes: total,
            sbom: self.sbom,
        })
    }
}

/// Step 6 of FORMAT.md's verification, for SBOM bytes read from a bundle or
/// kept since (`install-bundle stage`): exactly the manifest's size and
/// SHA-256, else [`ReadError::SbomDigest`].
pub fn check_sbom(expected: &ManifestSbom, bytes: &[u8]) -> Result<(), ReadError> {
    let actual = Sha256Digest::of(bytes);
    if actual != expected.sha256 || bytes.len() as u64 != expected.size {
        return Err(ReadError::SbomDigest {
            expected: expected.sha256,
            actual,
            expected_size: expected.size,
            actual_size: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Steps 4 and 5 of FORMAT.md's verification, for a manifest and its
/// signature read from a bundle or kept since (`install-bundle stage`):
/// the signature must verify against a trusted key before the manifest is
/// parsed (strictly), and its trusted comment must be exactly `name version
/// serial` of that manifest.
pub fn verify_manifest(
    manifest_bytes: &[u8],
    signature: &Signature,
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<(Manifest, KeyId), ReadError> {
    if manifest_bytes.len() as u64 > limits.max_manifest_bytes {
        return Err(ReadError::TooLarge {
            entry: MANIFEST_ENTRY,
            size: manifest_bytes.len() as u64,
            limit: limits.max_manifest_bytes,
        });
    }
    // 4. The signature's key id must be a trusted key; the signature of the
    //    BLAKE2b-512 digest of the manifest bytes and the global signature
    //    over signature ‖ trusted comment must both verify (verify_strict).
    let key_id = trusted.verify(manifest_bytes, signature)?.id;
    // 5. Only now parse the manifest (strictly: unknown fields, bad names,
    //    paths or sizes are refused) and check that the trusted comment is
    //    exactly "name version serial" of that manifest.
    let manifest = parse_manifest(manifest_bytes, limits).map_err(ReadError::Manifest)?;
    let expected = manifest.trusted_comment();
    if signature.trusted_comment != expected {
        return Err(ReadError::TrustedComment {
            expected,
            actual: signature.trusted_comment.clone(),
        });
    }
    Ok((manifest, key_id))
}

/// Verifies a whole bundle without keeping its artifacts.
pub fn verify<R: Read>(
    input: R,
    trusted: &TrustedKeys,
    limits: &Limits,
    reporter: &dyn Reporter,
) -> Result<Verified, ReadError> {
    BundleReader::open(input, trusted, limits)?.read_artifacts(&mut DiscardSink, reporter)
}
