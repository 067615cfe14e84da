//! A bundle split into parts for removable media, with Reed–Solomon parity
//! parts that survive the loss or corruption of some of them.
//!
//! `NAME.tar.zst` of `size` bytes becomes `K` data parts of `part_size`
//! bytes (the last one shorter) — `NAME.tar.zst.001` … `.00K`, the bundle's
//! bytes in order — and `P` parity parts `.00K+1` … of `stripes ×
//! block_size` bytes, plus a parts index `NAME.tar.zst.parts.json` signed
//! like the manifest (`NAME.tar.zst.parts.json.minisig`, trusted comment
//! `parts NAME SHA256`).
//!
//! Parity is computed per *stripe*: block `o` (`block_size` bytes at offset
//! `o × block_size`) of every data part, zero-padded to `block_size`, is one
//! Reed–Solomon codeword over GF(2⁸) (the `reed-solomon-erasure` crate) with
//! block `o` of every parity part. The index lists each part's size and
//! SHA-256 and the SHA-256 of each of its blocks, so a reader checks every
//! block as it reads it and rebuilds a missing or corrupt one from the other
//! parts of its stripe; any `P` lost parts (or, per stripe, any `P` bad
//! blocks) can be repaired. The bundle's own SHA-256 is checked at the end.
//!
//! Nothing here touches the network or a terminal; files are read with
//! `std::fs`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::sign::{SecretKey, Signature, TrustedKeys};

/// The index's `format`.
pub const PARTS_FORMAT: &str = "install-bundle-parts/v1";
/// The default block (stripe unit) size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// The untrusted comment of an index's signature.
pub const PARTS_SIGNATURE_COMMENT: &str = "signature of a parts index from bundler";
/// At most this many parts (data + parity), the code's limit over GF(2⁸).
pub const MAX_PARTS: usize = 256;
/// An index larger than this is refused unread (a 100 GiB bundle in 1 MiB
/// blocks needs about 7 MB).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// One part in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartEntry {
    /// Its file name (`NAME.tar.zst.001`).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
    /// The SHA-256 of each of its blocks, in order.
    pub blocks: Vec<Sha256Digest>,
}

/// The parts index, `NAME.tar.zst.parts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartsIndex {
    /// Always [`PARTS_FORMAT`].
    pub format: String,
    /// The bundle's file name.
    pub bundle: String,
    /// The bundle's size in bytes.
    pub size: u64,
    /// The bundle's SHA-256.
    pub sha256: Sha256Digest,
    /// Bytes per data part (the last one may be shorter).
    pub part_size: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// How many data parts.
    pub data_parts: usize,
    /// How many parity parts.
    pub parity_parts: usize,
    /// Data parts, then parity parts.
    pub parts: Vec<PartEntry>,
}

/// What went wrong with parts.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    /// The index is not one (or is inconsistent).
    #[error("parts index {path}: {reason}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index's signature does not verify.
    #[error("parts index {path}: {source}")]
    Signature {
        /// The index file.
        path: PathBuf,
        /// Why.
        source: crate::sign::SignatureError,
    },
    /// More parts are missing (or of the wrong size) than parity can make up.
    #[error(
        "{lost} of the {total} parts are missing or of the wrong size ({}), and {parity} parity part(s) can make up for at most {parity}; find the missing parts (another stick?) and point at their directories",
        .names.join(", ")
    )]
    TooManyLost {
        /// How many.
        lost: usize,
        /// Of how many.
        total: usize,
        /// Parity parts.
        parity: usize,
        /// Which, with why.
        names: Vec<String>,
    },
    /// A stripe has more bad blocks than parity can make up.
    #[error(
        "block {block} cannot be rebuilt: {} of its parts are missing or corrupt there ({}), more than the {parity} parity part(s) can make up for",
        .bad.len(), .bad.join(", ")
    )]
    Unrecoverable {
        /// The block number.
        block: u64,
        /// Which parts are bad there.
        bad: Vec<String>,
        /// Parity parts.
        parity: usize,
    },
    /// The joined bytes do not have the bundle's digest (cannot happen
    /// unless the index itself was made wrong).
    #[error("the joined bundle has sha256 {actual}, the signed index says {expected}")]
    Digest {
        /// From the index.
        expected: Sha256Digest,
        /// Of the bytes.
        actual: Sha256Digest,
    },
    /// I/O on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PartsError + '_ {
    move |source| PartsError::Io {
        path: path.to_owned(),
        source,
    }
}

impl PartsIndex {
    /// `NAME.tar.zst.parts.json`.
    pub fn index_name(bundle: &str) -> String {
        format!("{bundle}.parts.json")
    }

    /// The file name of part `i` (0-based): `NAME.tar.zst.001`, three digits
    /// (four from 1000 on, which [`MAX_PARTS`] never reaches).
    pub fn part_name(bundle: &str, i: usize) -> String {
        format!("{bundle}.{:03}", i + 1)
    }

    /// How many blocks each part has.
    pub fn stripes(&self) -> u64 {
        self.part_size.div_ceil(self.block_size)
    }

    /// The trusted comment the index's signature carries.
    pub fn trusted_comment(&self) -> String {
        format!("parts {} {}", self.bundle, self.sha256)
    }

    /// The exact bytes written.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("index serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks an index (sizes, counts and block lists agree).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, PartsError> {
        let bad = |reason: String| PartsError::Index {
            path: path.to_owned(),
            reason,
        };
        let index: PartsIndex =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a parts index: {e}")))?;
        if index.format != PARTS_FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {PARTS_FORMAT:?}",
                index.format
            )));
        }
        if index.block_size == 0 || index.part_size == 0 || index.data_parts == 0 {
            return Err(bad(
                "block_size, part_size and data_parts must be positive".into()
            ));
        }
        let total = index.data_parts + index.parity_parts;
        if total > MAX_PARTS || index.parts.len() != total {
            return Err(bad(format!(
                "{} parts listed, {} data + {} parity expected (at most {MAX_PARTS})",
                index.parts.len(),
                index.data_parts,
                index.parity_parts
            )));
        }
        if index.size.div_ceil(index.part_size) != index.data_parts as u64 && index.size > 0 {
            return Err(bad(format!(
                "{} bytes in parts of {} make {} data parts, not {}",
                index.size,
                index.part_size,
                index.size.div_ceil(index.part_size),
                index.data_parts
            )));
        }
        let stripes = index.stripes();
        for (i, p) in index.parts.iter().enumerate() {
            let expected = index.part_length(i);
            if p.size != expected {
                return Err(bad(format!(
                    "{} is {} bytes, expected {expected}",
                    p.file, p.size
                )));
            }
            if p.blocks.len() as u64 != p.size.div_ceil(index.block_size)
                || p.blocks.len() as u64 > stripes
            {
                return Err(bad(format!("{} lists {} blocks", p.file, p.blocks.len())));
            }
            if p.file.contains('/') || p.file.is_empty() {
                return Err(bad(format!(
                    "part file name {:?} is not a plain name",
                    p.file
                )));
            }
        }
        Ok(index)
    }

    /// The length of part `i`.
    pub fn part_length(&self, i: usize) -> u64 {
        if i < self.data_parts {
            let start = i as u64 * self.part_size;
            self.size.saturating_sub(start).min(self.part_size)
        } else {
            self.stripes() * self.block_size
        }
    }

    fn codec(&self) -> Option<ReedSolomon> {
        (self.parity_parts > 0)
            .then(|| ReedSolomon::new(self.data_parts, self.parity_parts).expect("valid counts"))
    }
}

/// Splits the bundle at `bundle` into `out_dir`: data parts of `part_size`
/// bytes, `parity` parity parts, and the index signed by `key`. Returns the
/// index. Files are written under temporary names and renamed at the end,
/// so a failure leaves no part behind.
pub fn split(
    bundle: &Path,
    out_dir: &Path,
    part_size: u64,
    parity: usize,
    block_size: u64,
    key: &SecretKey,
) -> Result<PartsIndex, PartsError> {
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| PartsError::Index {
            path: bundle.to_owned(),
            reason: "has no file name".into(),
        })?;
    let mut input = File::open(bundle).map_err(io_err(bundle))?;
    let size = input.metadata().map_err(io_err(bundle))?.len();
    let (sha256, _) = Sha256Digest::of_reader(&mut input).map_err(io_err(bundle))?;
    // One part holds it all: no longer than the bundle (parity parts are as
    // long as the longest data part).
    let part_size = part_size.min(size.max(1));
    let block_size = block_size.min(part_size).max(1);
    let data_parts = usize::try_from(size.div_ceil(part_size).max(1)).unwrap_or(usize::MAX);
    if data_parts + parity > MAX_PARTS {
        return Err(PartsError::Index {
            path: bundle.to_owned(),
            reason: format!(
                "{data_parts} data parts of {part_size} bytes plus {parity} parity parts are more than {MAX_PARTS}; use larger parts"
            ),
        });
    }
    let mut index = PartsIndex {
        format: PARTS_FORMAT.into(),
        bundle: name.clone(),
        size,
        sha256,
        part_size,
        block_size,
        data_parts,
        parity_parts: parity,
        parts: Vec::new(),
    };
    let total = data_parts + parity;
    let tmp = |i: usize| out_dir.join(format!(".{}.tmp", PartsIndex::part_name(&name, i)));
    let mut files = Vec::with_capacity(total);
    for i in 0..total {
        files.push(File::create(tmp(i)).map_err(io_err(&tmp(i)))?);
    }
    let cleanup = |files: Vec<File>| {
        drop(files);
        for i in 0..total {
            let _ = std::fs::remove_file(tmp(i));
        }
    };
    let result = (|| {
        let codec = index.codec();
        let bs = block_size as usize;
        let mut hashers: Vec<Sha256> = (0..total).map(|_| Sha256::new()).collect();
        let mut blocks: Vec<Vec<Sha256Digest>> = vec![Vec::new(); total];
        let mut shards: Vec<Vec<u8>> = vec![vec![0u8; bs]; total];
        for o in 0..index.stripes() {
            for (i, shard) in shards.iter_mut().enumerate().take(data_parts) {
                let len = index.part_length(i);
                let start = o * block_size;
                let n = len.saturating_sub(start).min(block_size) as usize;
                shard.fill(0);
                if n > 0 {
                    input
                        .seek(SeekFrom::Start(i as u64 * part_size + start))
                        .map_err(io_err(bundle))?;
                    input.read_exact(&mut shard[..n]).map_err(io_err(bundle))?;
                }
            }
            if let Some(c) = &codec {
                c.encode(&mut shards).expect("equal shard sizes");
            }
            for i in 0..total {
                let len = index.part_length(i);
                let start = o * block_size;
                let n = len.saturating_sub(start).min(block_size) as usize;
                if n == 0 {
                    continue;
                }
                let data = &shards[i][..n];
                files[i].write_all(data).map_err(io_err(&tmp(i)))?;
                hashers[i].update(data);
                blocks[i].push(Sha256Digest::of(data));
            }
        }
        for (i, (h, b)) in hashers.into_iter().zip(blocks).enumerate() {
            files[i].sync_all().map_err(io_err(&tmp(i)))?;
            index.parts.push(PartEntry {
                file: PartsIndex::part_name(&name, i),
                size: index.part_length(i),
                sha256: Sha256Digest::from_bytes(h.finalize().into()),
                blocks: b,
            });
        }
        Ok::<(), PartsError>(())
    })();
    if let Err(e) = result {
        cleanup(files);
        return Err(e);
    }
    drop(files);
    let index_path = out_dir.join(PartsIndex::index_name(&name));
    let bytes = index.to_bytes();
    let sig = key.sign(&bytes, &index.trusted_comment(), PARTS_SIGNATURE_COMMENT);
    let write = || -> io::Result<()> {
        for i in 0..total {
            std::fs::rename(tmp(i), out_dir.join(PartsIndex::part_name(&name, i)))?;
        }
        std::fs::write(
            out_dir.join(format!("{}.minisig", PartsIndex::index_name(&name))),
            sig.to_file_string(),
        )?;
        std::fs::write(&index_path, &bytes)
    };
    write().map_err(io_err(out_dir))?;
    Ok(index)
}

/// Reads and verifies a parts index at `path` (and its `.minisig`) against
/// `trusted`: the signature first, then the index.
pub fn read_index(path: &Path, trusted: &TrustedKeys) -> Result<PartsIndex, PartsError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(PartsError::Index {
            path: path.to_owned(),
            reason: format!("larger than {MAX_INDEX_BYTES} bytes"),
        });
    }
    let sig_path = PathBuf::from(format!("{}.minisig", path.display()));
    let sig_text = std::fs::read_to_string(&sig_path).map_err(|e| PartsError::Index {
        path: path.to_owned(),
        reason: format!(
            "its signature {} cannot be read ({e}); the index travels with its signature",
            sig_path.display()
        ),
    })?;
    let sig = Signature::parse(&sig_text).map_err(|source| PartsError::Signature {
        path: sig_path.clone(),
        source,
    })?;
    trusted
        .verify(&bytes, &sig)
        .map_err(|source| PartsError::Signature {
            path: path.to_owned(),
            source,
        })?;
    let index = PartsIndex::parse(&bytes, path)?;
    if sig.trusted_comment != index.trusted_comment() {
        return Err(PartsError::Index {
            path: path.to_owned(),
            reason: format!(
                "the signature's trusted comment is {:?}, expected {:?}",
                sig.trusted_comment,
                index.trusted_comment()
            ),
        });
    }
    Ok(index)
}

/// Where the parts of an index are: the first directory holding each file.
pub fn locate(index: &PartsIndex, dirs: &[PathBuf]) -> Vec<Option<PathBuf>> {
    index
        .parts
        .iter()
        .map(|p| dirs.iter().map(|d| d.join(&p.file)).find(|f| f.is_file()))
        .collect()
}

/// What a [`PartsReader`] repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Parts missing or of the wrong size, with the reason.
    pub lost: Vec<String>,
    /// Blocks rebuilt from parity, per part file.
    pub rebuilt: std::collections::BTreeMap<String, u64>,
}

impl fmt::Display for Repairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lost.is_empty() && self.rebuilt.is_empty() {
            return write!(f, "every part intact");
        }
        let mut parts = Vec::new();
        if !self.lost.is_empty() {
            parts.push(format!("lost: {}", self.lost.join(", ")));
        }
        for (file, n) in &self.rebuilt {
            parts.push(format!("{file}: {n} block(s) rebuilt from parity"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// The bundle's bytes, read across its parts in order, each block checked
/// against the index and rebuilt from its stripe when missing or corrupt.
/// At the end the bundle's SHA-256 is checked; an error then (or an
/// unrecoverable stripe) is an `io::Error` wrapping a [`PartsError`].
#[derive(Debug)]
pub struct PartsReader {
    index: PartsIndex,
    files: Vec<Option<(PathBuf, File)>>,
    codec: Option<ReedSolomon>,
    part: usize,
    block: u64,
    buf: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    done: bool,
    repairs: Repairs,
}

impl PartsReader {
    /// Opens the parts at `paths` (from [`locate`]); refuses at once when
    /// more parts are missing or of the wrong size than parity makes up.
    pub fn open(index: PartsIndex, paths: Vec<Option<PathBuf>>) -> Result<Self, PartsError> {
        let mut files = Vec::new();
        let mut repairs = Repairs::default();
        for (p, path) in index.parts.iter().zip(paths) {
            let opened = match path {
                None => {
                    repairs.lost.push(format!("{} (not found)", p.file));
                    None
                }
                Some(path) => match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
                    Ok((len, f)) if len == p.size => Some((path, f)),
                    Ok((len, _)) => {
                        repairs.lost.push(format!(
                            "{} ({len} bytes, {} expected)",
                            path.display(),
                            p.size
                        ));
                        None
                    }
                    Err(e) => {
                        repairs.lost.push(format!("{} ({e})", path.display()));
                        None
                    }
                },
            };
            files.push(opened);
        }
        if repairs.lost.len() > index.parity_parts {
            return Err(PartsError::TooManyLost {
                lost: repairs.lost.len(),
                total: index.parts.len(),
                parity: index.parity_parts,
                names: repairs.lost,
            });
        }
        Ok(Self {
            codec: index.codec(),
            index,
            files,
            part: 0,
            block: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: Sha256::new(),
            done: false,
            repairs,
        })
    }

    /// What was repaired so far.
    pub fn repairs(&self) -> &Repairs {
        &self.repairs
    }

    /// The index.
    pub fn index(&self) -> &PartsIndex {
        &self.index
    }

    /// Block `o` of part `i`, if it can be read and matches the index.
    fn good_block(&mut self, i: usize, o: u64) -> Option<Vec<u8>> {
        let entry = &self.index.parts[i];
        let expected = *entry.blocks.get(o as usize)?;
        let len = entry
            .size
            .saturating_sub(o * self.index.block_size)
            .min(self.index.block_size);
        let (_, f) = self.files[i].as_mut()?;
        let mut data = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(o * self.index.block_size)).ok()?;
        f.read_exact(&mut data).ok()?;
        (Sha256Digest::of(&data) == expected).then_some(data)
    }

    /// The data block (`i`, `o`), rebuilt when needed.
    fn data_block(&mut self, i: usize, o: u64) -> Result<Vec<u8>, PartsError> {
        if let Some(b) = self.good_block(i, o) {
            return Ok(b);
        }
        let total = self.index.parts.len();
        let bs = self.index.block_size as usize;
        let mut shards: Vec<Option<Vec<u8>>> = Vec::with_capacity(total);
        let mut bad = Vec::new();
        for j in 0..total {
            let present = if j == i { None } else { self.good_block(j, o) };
            match present {
                Some(mut b) => {
                    b.resize(bs, 0);
                    shards.push(Some(b));
                }
                None if j < self.index.data_parts
                    && self.index.part_length(j) <= o * self.index.block_size =>
                {
                    // The data part is shorter: its block here is all zeros.
                    shards.push(Some(vec![0u8; bs]));
                }
                None => {
                    bad.push(self.index.parts[j].file.clone());
                    shards.push(None);
                }
            }
        }
        let rebuilt = match &self.codec {
            Some(c) if bad.len() <= self.index.parity_parts => c
                .reconstruct_data(&mut shards)
                .ok()
                .and_then(|()| shards[i].take()),
            _ => None,
        };
        let Some(mut block) = rebuilt else {
            return Err(PartsError::Unrecoverable {
                block: o,
                bad,
                parity: self.index.parity_parts,
            });
        };
        let len = self.index.parts[i]
            .size
            .saturating_sub(o * self.index.block_size)
            .min(self.index.block_size);
        block.truncate(len as usize);
        if Sha256Digest::of(&block) != self.index.parts[i].blocks[o as usize] {
            return Err(PartsError::Unrecoverable {
                block: o,
                bad,
                parity: self.index.parity_parts,
            });
        }
        *self
            .repairs
            .rebuilt
            .entry(self.index.parts[i].file.clone())
            .or_default() += 1;
        Ok(block)
    }

    fn fill(&mut self) -> Result<bool, PartsError> {
        while self.part < self.index.data_parts {
            let blocks = self.index.parts[self.part].blocks.len() as u64;
            if self.block < blocks {
                let b = self.data_block(self.part, self.block)?;
                self.block += 1;
                self.hasher.update(&b);
                self.buf = b;
                self.pos = 0;
                return Ok(true);
            }
            self.part += 1;
            self.block = 0;
        }
        if !self.done {
            self.done = true;
            let actual =
                Sha256Digest::from_bytes(std::mem::take(&mut self.hasher).finalize().into());
            if actual != self.index.sha256 {
                return Err(PartsError::Digest {
                    expected: self.index.sha256,
                    actual,
                });
            }
        }
        Ok(false)
    }
}

impl Read for PartsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() && !self.fill().map_err(io::Error::other)? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::KeyId;

    fn key() -> SecretKey {
        SecretKey::from_seed(KeyId(*b"partstst"), [3u8; 32])
    }

    fn trusted() -> TrustedKeys {
        let mut t = TrustedKeys::new();
        t.add(key().public(), "test");
        t
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn setup(n: usize, part: u64, parity: usize, block: u64) -> (tempfile::TempDir, PartsIndex) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.tar.zst"), data(n)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let index = split(
            &dir.path().join("b.tar.zst"),
            &out,
            part,
            parity,
            block,
            &key(),
        )
        .unwrap();
        (dir, index)
    }

    fn join(dir: &Path) -> Result<(Vec<u8>, Repairs), String> {
        let out = dir.join("out");
        let index =
            read_index(&out.join("b.tar.zst.parts.json"), &trusted()).map_err(|e| e.to_string())?;
        let paths = locate(&index, &[out]);
        let mut r = PartsReader::open(index, paths).map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        r.read_to_end(&mut v).map_err(|e| e.to_string())?;
        Ok((v, r.repairs().clone()))
    }

    #[test]
    fn intact_parts_join_to_the_bundle() {
        let (dir, index) = setup(10_000, 3_000, 2, 1_024);
        assert_eq!(index.data_parts, 4);
        assert_eq!(index.parts[3].size, 1_000);
        let (v, r) = join(dir.path()).unwrap();
        assert_eq!(v, data(10_000));
        assert_eq!(r, Repairs::default());
    }

    #[test]
    fn up_to_parity_lost_or_corrupt_parts_are_rebuilt() {
        for (lose, corrupt) in [
            (vec![0usize, 5], vec![]),
            (vec![3], vec![1]),
            (vec![], vec![2, 4]),
        ] {
            let (dir, _) = setup(10_000, 3_000, 2, 1_024);
            let out = dir.path().join("out");
            for i in &lose {
                std::fs::remove_file(out.join(PartsIndex::part_name("b.tar.zst", *i))).unwrap();
            }
            for i in &corrupt {
                let p = out.join(PartsIndex::part_name("b.tar.zst", *i));
                let mut b = std::fs::read(&p).unwrap();
                b[100] ^= 1;
                std::fs::write(&p, b).unwrap();
            }
            let (v, r) = join(dir.path()).unwrap();
            assert_eq!(v, data(10_000), "lose {lose:?} corrupt {corrupt:?}");
            assert_eq!(r.lost.len(), lose.len());
        }
    }

    #[test]
    fn one_part_more_than_parity_is_refused_naming_the_parts() {
        let (dir, _) = setup(10_000, 3_000, 1, 1_024);
        let out = dir.path().join("out");
        for i in [0, 2] {
            std::fs::remove_file(out.join(PartsIndex::part_name("b.tar.zst", i))).unwrap();
        }
        let e = join(dir.path()).unwrap_err();
        assert!(
            e.contains("b.tar.zst.001 (not found)") && e.contains("b.tar.zst.003"),
            "{e}"
        );
        // Corruption beyond parity in one stripe.
        let (dir, _) = setup(10_000, 3_000, 1, 1_024);
        let out = dir.path().join("out");
        for i in [0, 1] {
            let p = out.join(PartsIndex::part_name("b.tar.zst", i));
            let mut b = std::fs::read(&p).unwrap();
            b[10] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
        let e = join(dir.path()).unwrap_err();
        assert!(e.contains("block 0 cannot be rebuilt"), "{e}");
    }

    #[test]
    fn a_tampered_index_is_refused() {
        let (dir, _) = setup(5_000, 3_000, 1, 1_024);
        let p = dir.path().join("out/b.tar.zst.parts.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"size\": 5000", "\"size\": 5001");
        std::fs::write(&p, text).unwrap();
        assert!(join(dir.path()).is_err());
    }
}
