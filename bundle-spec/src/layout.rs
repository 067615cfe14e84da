//! The artifact of an image: a tar of an OCI image layout, written the same
//! way for the same image (see [`crate::image`] for what it holds and
//! FORMAT.md, "Images", for the rules).
//!
//! Entries, in this order, and nothing else:
//!
//! | entry | type, mode | content |
//! |---|---|---|
//! | `oci-layout` | file, 0644 | [`OCI_LAYOUT`] |
//! | `index.json` | file, 0644 | [`index_json`]: one descriptor, the pinned digest, with the image's name |
//! | `blobs/` | directory, 0755 | |
//! | `blobs/sha256/` | directory, 0755 | |
//! | `blobs/sha256/HEX` | file, 0644 | each blob once, sorted by HEX |
//!
//! Every header is a POSIX ustar header with uid/gid 0, empty user and
//! group names and the same mtime (the builder passes `SOURCE_DATE_EPOCH`,
//! or 0); the archive ends with two zero blocks. Names are short (at most 77
//! bytes), so no extension headers exist.

use std::io::{self, Read, Write};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::format::TAR_END_BYTES;
use crate::image::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ImageRef, OciDigest};
use crate::tarfmt;

/// The exact content of the `oci-layout` file.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// Mode of the layout's file entries.
pub const FILE_MODE: u32 = 0o644;
/// Mode of the layout's directory entries.
pub const DIR_MODE: u32 = 0o755;
/// The directory of the blobs in a layout.
pub const BLOBS_DIR: &str = "blobs/sha256/";

/// What `index.json` points at: the content the registry serves for the
/// pinned digest (an index or a manifest), and the name it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRoot {
    /// The normalized reference (`registry.k8s.io/pause:3.9`): the value of
    /// [`ANNOTATION_IMAGE_NAME`]; its tag, when it has one, is the value of
    /// [`ANNOTATION_REF_NAME`].
    pub reference: ImageRef,
    /// Media type of the root (an index or a manifest).
    pub media_type: String,
    /// The pinned digest.
    pub digest: OciDigest,
    /// Size of the root's bytes.
    pub size: u64,
}

/// One blob of a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayoutBlob {
    /// Its digest (and file name).
    pub digest: OciDigest,
    /// Its size in bytes.
    pub size: u64,
}

/// Why a layout could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Reading a blob or writing the output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A blob's bytes are not what its descriptor says.
    #[error(
        "blob {digest}: expected {expected_size} bytes with sha256 {digest}, got {actual_size} bytes with sha256 {actual}"
    )]
    Blob {
        /// The descriptor's digest.
        digest: OciDigest,
        /// The descriptor's size.
        expected_size: u64,
        /// The digest of the bytes read.
        actual: OciDigest,
        /// The number of bytes read.
        actual_size: u64,
    },
    /// The root is not among the blobs.
    #[error("the root {0} is not among the layout's blobs")]
    MissingRoot(OciDigest),
}

/// What [`write_layout`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutWritten {
    /// SHA-256 of the whole tar.
    pub sha256: Sha256Digest,
    /// Size of the whole tar in bytes.
    pub size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: [Descriptor<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    // A BTreeMap, not the HashMap of other OCI crates: keys in a fixed order.
    annotations: std::collections::BTreeMap<&'static str, String>,
}

/// The exact bytes of `index.json` for `root`: compact JSON, keys in a fixed
/// order, no trailing newline.
///
/// ```
/// use bundle_spec::layout::{LayoutRoot, index_json};
/// let root = LayoutRoot {
///     reference: "registry.k8s.io/pause:3.9".parse().unwrap(),
///     media_type: "application/vnd.oci.image.index.v1+json".into(),
///     digest: format!("sha256:{}", "7".repeat(64)).parse().unwrap(),
///     size: 2405,
/// };
/// assert_eq!(String::from_utf8(index_json(&root)).unwrap(), format!(
///     concat!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","#,
///             r#""manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{}","size":2405,"#,
///             r#""annotations":{{"io.containerd.image.name":"registry.k8s.io/pause:3.9","#,
///             r#""org.opencontainers.image.ref.name":"3.9"}}}}]}}"#),
///     "7".repeat(64)));
/// ```
pub fn index_json(root: &LayoutRoot) -> Vec<u8> {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(ANNOTATION_IMAGE_NAME, root.reference.to_string());
    if let Some(tag) = root.reference.tag() {
        annotations.insert(ANNOTATION_REF_NAME, tag.to_owned());
    }
    let index = Index {
        schema_version: 2,
        media_type: crate::image::MEDIA_TYPE_OCI_INDEX,
        manifests: [Descriptor {
            media_type: &root.media_type,
            digest: root.digest.to_string(),
            size: root.size,
            annotations,
        }],
    };
    serde_json::to_vec(&index).expect("index.json serializes")
}

/// Hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
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

fn entry_header(name: &str, size: u64, mtime: u64, dir: bool) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(if dir { DIR_MODE } else { FILE_MODE });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    Ok(h)
}

/// Opens a blob's bytes for [`write_layout`].
pub type OpenBlob<'a> = dyn FnMut(&OciDigest) -> io::Result<Box<dyn Read>> + 'a;

/// Writes the layout tar of an image to `out`: `root` names the pinned
/// content, `blobs` are every blob the layout holds (the root among them;
/// duplicates are written once), `mtime` is every entry's modification time.
/// Each blob is read through `open` and checked, while it is copied, to have
/// its descriptor's size and digest. Returns the tar's SHA-256 and size.
pub fn write_layout<W: Write>(
    out: W,
    root: &LayoutRoot,
    blobs: &[LayoutBlob],
    mtime: u64,
    open: &mut OpenBlob<'_>,
) -> Result<LayoutWritten, LayoutError> {
    let mut blobs = blobs.to_vec();
    blobs.sort();
    blobs.dedup();
    if !blobs.iter().any(|b| b.digest == root.digest) {
        return Err(LayoutError::MissingRoot(root.digest));
    }
    let io_err = |context: String| move |source| LayoutError::Io { context, source };
    let mut w = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    };
    let index = index_json(root);
    for (name, bytes) in [
        ("oci-layout", OCI_LAYOUT.as_bytes()),
        ("index.json", &index[..]),
    ] {
        (|| {
            w.write_all(entry_header(name, bytes.len() as u64, mtime, false)?.as_bytes())?;
            w.write_all(bytes)?;
            tarfmt::write_padding(&mut w, bytes.len() as u64)
        })()
        .map_err(io_err(format!("writing {name}")))?;
    }
    for dir in ["blobs/", BLOBS_DIR] {
        entry_header(dir, 0, mtime, true)
            .and_then(|h| w.write_all(h.as_bytes()))
            .map_err(io_err(format!("writing {dir}")))?;
    }
    let mut buf = vec![0u8; 1 << 20];
    for blob in &blobs {
        let name = format!("{BLOBS_DIR}{}", blob.digest.hex());
        entry_header(&name, blob.size, mtime, false)
            .and_then(|h| w.write_all(h.as_bytes()))
            .map_err(io_err(format!("writing {name}")))?;
        let mut reader =
            open(&blob.digest).map_err(io_err(format!("opening blob {}", blob.digest)))?;
        let mut hasher = Sha256::new();
        let mut copied = 0u64;
        loop {
            // One byte more than declared proves a longer blob.
            let want = usize::try_from((blob.size - copied).saturating_add(1))
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(format!("reading blob {}", blob.digest))(e)),
            };
            hasher.update(&buf[..n]);
            copied += n as u64;
            if copied > blob.size {
                break;
            }
            w.write_all(&buf[..n])
                .map_err(io_err(format!("writing {name}")))?;
        }
        let actual = OciDigest::from_sha256(Sha256Digest::from_bytes(hasher.finalize().into()));
        if copied != blob.size || actual != blob.digest {
            return Err(LayoutError::Blob {
                digest: blob.digest,
                expected_size: blob.size,
                actual,
                actual_size: copied,
            });
        }
        tarfmt::write_padding(&mut w, blob.size).map_err(io_err(format!("writing {name}")))?;
    }
    w.write_all(&[0u8; TAR_END_BYTES as usize])
        .and_then(|()| w.flush())
        .map_err(io_err("writing the end of the archive".into()))?;
    Ok(LayoutWritten {
        sha256: Sha256Digest::from_bytes(w.hasher.finalize().into()),
        size: w.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(data: &[u8]) -> (LayoutBlob, Vec<u8>) {
        (
            LayoutBlob {
                digest: OciDigest::from_sha256(Sha256Digest::of(data)),
                size: data.len() as u64,
            },
            data.to_vec(),
        )
    }

    fn layout(
        blobs: &[(LayoutBlob, Vec<u8>)],
        root: LayoutBlob,
        mtime: u64,
    ) -> Result<(Vec<u8>, LayoutWritten), LayoutError> {
        let root = LayoutRoot {
            reference: "127.0.0.1:5000/team/app:1.2".parse().unwrap(),
            media_type: crate::image::MEDIA_TYPE_OCI_MANIFEST.into(),
            digest: root.digest,
            size: root.size,
        };
        let list: Vec<LayoutBlob> = blobs.iter().map(|(b, _)| *b).collect();
        let mut out = Vec::new();
        let written = write_layout(&mut out, &root, &list, mtime, &mut |d| {
            let data = blobs
                .iter()
                .find(|(b, _)| b.digest == *d)
                .unwrap()
                .1
                .clone();
            Ok(Box::new(io::Cursor::new(data)) as Box<dyn Read>)
        })?;
        Ok((out, written))
    }

    #[test]
    fn a_layout_has_fixed_entries_in_a_fixed_order_with_fixed_metadata() {
        let manifest = blob(b"{\"schemaVersion\":2}");
        let layer = blob(&[7u8; 1500]);
        let config = blob(b"{}");
        let all = [
            layer.clone(),
            manifest.clone(),
            config.clone(),
            layer.clone(),
        ];
        let (bytes, written) = layout(&all, manifest.0, 1_700_000_000).unwrap();
        assert_eq!(written.size, bytes.len() as u64);
        assert_eq!(written.sha256, Sha256Digest::of(&bytes));

        let mut hexes: Vec<String> = [&manifest, &layer, &config]
            .iter()
            .map(|b| b.0.digest.hex())
            .collect();
        hexes.sort();
        let mut expected = vec![
            "oci-layout".to_owned(),
            "index.json".into(),
            "blobs/".into(),
            "blobs/sha256/".into(),
        ];
        expected.extend(hexes.iter().map(|h| format!("blobs/sha256/{h}")));

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            assert!(h.as_ustar().is_some(), "{name}: not ustar");
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!(h.username().unwrap(), Some(""));
            if name.ends_with('/') {
                assert_eq!(h.entry_type(), tar::EntryType::Directory);
                assert_eq!(h.mode().unwrap(), 0o755);
            } else {
                assert_eq!(h.entry_type(), tar::EntryType::Regular);
                assert_eq!(h.mode().unwrap(), 0o644);
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(Sha256Digest::of(&data).to_hex(), hex);
            }
            if name == "oci-layout" {
                assert_eq!(data, OCI_LAYOUT.as_bytes());
            }
            if name == "index.json" {
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(v["manifests"][0]["digest"], manifest.0.digest.to_string());
                assert_eq!(
                    v["manifests"][0]["annotations"][ANNOTATION_IMAGE_NAME],
                    "127.0.0.1:5000/team/app:1.2"
                );
                assert_eq!(v["manifests"][0]["annotations"][ANNOTATION_REF_NAME], "1.2");
            }
            names.push(name);
        }
        assert_eq!(names, expected);
        // Same input, same bytes.
        assert_eq!(layout(&all, manifest.0, 1_700_000_000).unwrap().0, bytes);
    }

    #[test]
    fn a_blob_whose_bytes_differ_from_its_descriptor_is_refused_naming_both_digests() {
        let manifest = blob(b"{}");
        let mut bad = blob(b"layer bytes");
        let good_digest = bad.0.digest;
        bad.1[0] ^= 1;
        match layout(&[manifest.clone(), bad.clone()], manifest.0, 0) {
            Err(LayoutError::Blob {
                digest,
                actual,
                expected_size,
                actual_size,
            }) => {
                assert_eq!(digest, good_digest);
                assert_eq!(actual, OciDigest::from_sha256(Sha256Digest::of(&bad.1)));
                assert_eq!((expected_size, actual_size), (11, 11));
            }
            other => panic!("{other:?}"),
        }
        let mut long = blob(b"layer");
        long.1.push(b'!');
        assert!(matches!(
            layout(&[manifest.clone(), long], manifest.0, 0),
            Err(LayoutError::Blob {
                actual_size: 6,
                expected_size: 5,
                ..
            })
        ));
    }

    #[test]
    fn the_root_must_be_a_blob_of_the_layout() {
        let manifest = blob(b"{}");
        let other = blob(b"x");
        assert!(matches!(
            layout(&[other], manifest.0, 0),
            Err(LayoutError::MissingRoot(d)) if d == manifest.0.digest
        ));
    }
}
