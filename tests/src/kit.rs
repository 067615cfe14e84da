//! Taking bundles apart and putting them back together, to make hostile
//! bundles: entries reordered, renamed, retyped, enlarged, re-signed...

use std::io::{Read, Write};
use std::path::Path;

use bundle_spec::sign::SecretKey;
use bundle_spec::write::MANIFEST_SIGNATURE_COMMENT;

/// One raw tar entry: its 512-byte header and its data.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The header block.
    pub header: [u8; 512],
    /// The data (unpadded).
    pub data: Vec<u8>,
}

impl RawEntry {
    /// A regular file entry, as the builder writes them.
    pub fn file(name: &str, data: Vec<u8>) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("short name");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut header = [0u8; 512];
        header.copy_from_slice(h.as_bytes());
        Self { header, data }
    }

    /// The entry name (first 100 bytes of the header).
    pub fn name(&self) -> String {
        let end = self.header[..100]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(100);
        String::from_utf8_lossy(&self.header[..end]).into_owned()
    }

    /// Sets raw name bytes (no validation: `../x` is fine) and fixes the checksum.
    pub fn set_name(&mut self, name: &str) {
        self.header[..100].fill(0);
        self.header[..name.len()].copy_from_slice(name.as_bytes());
        self.fix_checksum();
    }

    /// Sets the type flag (`b'2'` symlink, `b'1'` hard link, ...) and fixes the checksum.
    pub fn set_type(&mut self, flag: u8) {
        self.header[156] = flag;
        self.fix_checksum();
    }

    /// Sets the link name field.
    pub fn set_link(&mut self, target: &str) {
        self.header[157..257].fill(0);
        self.header[157..157 + target.len()].copy_from_slice(target.as_bytes());
        self.fix_checksum();
    }

    /// Sets the header's size field (not the data) and fixes the checksum.
    pub fn set_header_size(&mut self, size: u64) {
        let field = format!("{size:011o}\0");
        self.header[124..136].copy_from_slice(field.as_bytes());
        self.fix_checksum();
    }

    /// Recomputes the header checksum.
    pub fn fix_checksum(&mut self) {
        self.header[148..156].fill(b' ');
        let sum: u32 = self.header.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        self.header[148..156].copy_from_slice(field.as_bytes());
    }
}

/// Decompresses a bundle (one or more frames) into its raw tar bytes.
pub fn decompress(bundle: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(bundle).expect("open bundle"))
        .expect("zstd")
        .read_to_end(&mut out)
        .expect("decompress bundle");
    out
}

/// Splits a bundle into its entries (header size taken at face value).
pub fn read_entries(bundle: &Path) -> Vec<RawEntry> {
    let tar = decompress(bundle);
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos + 512 <= tar.len() {
        let block: [u8; 512] = tar[pos..pos + 512].try_into().expect("block");
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar::Header::from_byte_slice(&block).size().expect("size") as usize;
        let data = tar[pos + 512..pos + 512 + size].to_vec();
        entries.push(RawEntry {
            header: block,
            data,
        });
        pos += 512 + size.div_ceil(512) * 512;
    }
    entries
}

/// The tar bytes of `entries` followed by the end-of-archive blocks.
pub fn tar_bytes(entries: &[RawEntry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        tar.extend_from_slice(&e.header);
        tar.extend_from_slice(&e.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

/// Compresses tar bytes as one zstd frame with a content checksum.
pub fn compress(tar: &[u8]) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    z.include_checksum(true).expect("checksum");
    z.write_all(tar).expect("compress");
    z.finish().expect("finish")
}

/// Writes `entries` as a bundle file.
pub fn write_entries(entries: &[RawEntry], out: &Path) {
    std::fs::write(out, compress(&tar_bytes(entries))).expect("write bundle");
}

/// Loads an unencrypted secret key file.
pub fn secret_key(path: &Path) -> SecretKey {
    SecretKey::from_file(path, &mut || None).expect("unencrypted secret key")
}

/// Replaces entry 0 (manifest) with `manifest` and entry 1 with a valid
/// signature of it by `key` (trusted comment taken from the manifest's
/// name/version/serial when it parses, else `x x x`).
pub fn resign(entries: &mut [RawEntry], manifest: Vec<u8>, key: &SecretKey) {
    let comment = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .map(|v| {
            format!(
                "{} {} {}",
                v["name"].as_str().unwrap_or("x"),
                v["version"].as_str().unwrap_or("x"),
                v["serial"].as_u64().unwrap_or(0)
            )
        })
        .unwrap_or_else(|| "x x x".into());
    let sig = key.sign(&manifest, &comment, MANIFEST_SIGNATURE_COMMENT);
    entries[0] = RawEntry::file("BUNDLE.json", manifest);
    entries[1] = RawEntry::file("BUNDLE.json.minisig", sig.to_file_string().into_bytes());
}

/// Edits the manifest JSON of a bundle with `edit` and re-signs it.
pub fn edit_manifest(
    entries: &mut [RawEntry],
    key: &SecretKey,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let mut v: serde_json::Value = serde_json::from_slice(&entries[0].data).expect("manifest JSON");
    edit(&mut v);
    let mut bytes = serde_json::to_vec_pretty(&v).expect("serialize");
    bytes.push(b'\n');
    resign(entries, bytes, key);
}
