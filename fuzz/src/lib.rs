//! Shared code of the fuzz targets: a fixed trusted key, the checks each
//! target runs, and a lenient tar splitter to re-sign mutated manifests.
//!
//! The key is deterministic (a fixed seed) so that the committed seed
//! corpus, made by `examples/make_seeds.rs`, verifies; it is a test key and
//! trusted nowhere else.

use std::io::Write as _;

use bundle_spec::Limits;
use bundle_spec::read::{BundleReader, DiscardSink};
use bundle_spec::sign::{KeyId, SecretKey, TrustedKeys};
use bundle_spec::validate::{parse_manifest, parse_spec};

/// Key id of the fuzzing key.
pub const KEY_ID: [u8; 8] = *b"fuzzkey1";
/// Seed of the fuzzing key.
pub const KEY_SEED: [u8; 32] = [7; 32];

/// The fuzzing secret key.
pub fn key() -> SecretKey {
    SecretKey::from_seed(KeyId(KEY_ID), KEY_SEED)
}

/// Trusted keys holding only the fuzzing key.
pub fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(key().public(), "fuzz");
    t
}

/// Limits small enough that a fuzzer's input can reach them, the same
/// shape as the defaults.
pub fn limits() -> Limits {
    Limits {
        max_manifest_bytes: 256 << 10,
        max_sbom_bytes: 256 << 10,
        max_artifact_bytes: 16 << 20,
        max_total_bytes: 32 << 20,
        ..Limits::default()
    }
}

/// Reads a whole bundle (manifest, signature, every artifact, the end) and
/// checks what an accepted bundle promises.
pub fn check_bundle(bytes: &[u8], trusted: &TrustedKeys, limits: &Limits) {
    let Ok(reader) = BundleReader::open(bytes, trusted, limits) else {
        return;
    };
    let manifest = reader.manifest().clone();
    let total = manifest.total_artifact_bytes();
    if let Ok(v) = reader.read_artifacts(&mut DiscardSink, &bundle_spec::NoReporter) {
        assert_eq!(
            v.artifact_bytes, total,
            "verified bytes differ from the manifest"
        );
        assert_eq!(v.manifest, manifest);
        // An accepted manifest parses again from its canonical bytes.
        let again =
            parse_manifest(&manifest.to_bytes(), limits).expect("canonical manifest parses");
        assert_eq!(again, manifest);
    }
}

/// Parses `bytes` as a spec and as a manifest; what parses must survive a
/// round trip through its canonical JSON.
pub fn check_parsers(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(spec) = parse_spec(bytes, &limits) {
        let json = serde_json::to_vec(&spec).expect("spec serializes");
        let again = parse_spec(&json, &limits).expect("a valid spec parses again");
        assert_eq!(again, spec);
    }
    if let Ok(m) = parse_manifest(bytes, &limits) {
        let again = parse_manifest(&m.to_bytes(), &limits).expect("a valid manifest parses again");
        assert_eq!(again, m);
    }
}

/// One tar entry as split leniently: its header block and its data.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The 512-byte header.
    pub header: [u8; 512],
    /// The data (as long as the header's octal size says, cut at the end).
    pub data: Vec<u8>,
}

/// Splits tar bytes into entries, leniently (stops at the first zero block,
/// a size that is not octal, or the end of the input).
pub fn split_tar(tar: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= tar.len() && out.len() < 64 {
        let header: [u8; 512] = tar[pos..pos + 512].try_into().expect("512 bytes");
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let field = std::str::from_utf8(&header[124..136]).unwrap_or("");
        let Ok(size) = usize::from_str_radix(field.trim_matches(|c| c == '\0' || c == ' '), 8)
        else {
            break;
        };
        let start = pos + 512;
        let end = start.saturating_add(size).min(tar.len());
        out.push(Entry {
            header,
            data: tar[start..end].to_vec(),
        });
        pos = start.saturating_add(size.div_ceil(512).saturating_mul(512));
    }
    out
}

/// The tar bytes of `entries` (header, data, zero padding) and the end blocks.
pub fn join_tar(entries: &[Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        tar.extend_from_slice(&e.header);
        tar.extend_from_slice(&e.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    tar
}

/// A regular-file header for `name` of `size` bytes, checksum set.
pub fn file_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// When entry 0 of `entries` exists, replaces entry 1 with a valid
/// signature (by the fuzzing key) of entry 0's bytes, with the trusted
/// comment the manifest asks for when it names one.
pub fn resign(entries: &mut Vec<Entry>) {
    let Some(first) = entries.first() else {
        return;
    };
    let manifest = &first.data;
    let comment = serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()
        .map(|v| {
            format!(
                "{} {} {}",
                v["name"].as_str().unwrap_or("x"),
                v["version"].as_str().unwrap_or("x"),
                v["serial"].as_u64().unwrap_or(0)
            )
        })
        .unwrap_or_else(|| "x x 0".into());
    let sig = key()
        .sign(
            manifest,
            &comment,
            bundle_spec::write::MANIFEST_SIGNATURE_COMMENT,
        )
        .to_file_string()
        .into_bytes();
    let entry = Entry {
        header: file_header("BUNDLE.json.minisig", sig.len() as u64),
        data: sig,
    };
    if entries.len() > 1 {
        entries[1] = entry;
    } else {
        entries.push(entry);
    }
}

/// zstd (level 1, checksum on) of `data`.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    z.include_checksum(true).expect("checksum");
    z.write_all(data).expect("compress");
    z.finish().expect("finish")
}
