//! Taking bundles apart and putting them back together, to make hostile
//! bundles: entries reordered, renamed, retyped, enlarged, re-signed...

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_spec::Limits;
use bundle_spec::read::{ArtifactSink, ReadError, Verified};
use bundle_spec::sign::{PublicKey, SecretKey, Signature, TrustedKeys};
use bundle_spec::write::MANIFEST_SIGNATURE_COMMENT;

use crate::cli::{Output, installer, run};

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

    /// Sets the mode field (permission bits, setuid included) and fixes the checksum.
    pub fn set_mode(&mut self, mode: u32) {
        let field = format!("{mode:07o}\0");
        self.header[100..108].copy_from_slice(field.as_bytes());
        self.fix_checksum();
    }

    /// Sets the device major and minor numbers and fixes the checksum.
    pub fn set_device(&mut self, major: u32, minor: u32) {
        self.header[329..337].copy_from_slice(format!("{major:07o}\0").as_bytes());
        self.header[337..345].copy_from_slice(format!("{minor:07o}\0").as_bytes());
        self.fix_checksum();
    }

    /// Sets the header's size field (not the data) and fixes the checksum:
    /// octal when it fits in 11 digits, else GNU base-256.
    pub fn set_header_size(&mut self, size: u64) {
        if size < 1 << 33 {
            let field = format!("{size:011o}\0");
            self.header[124..136].copy_from_slice(field.as_bytes());
        } else {
            self.header[124..136].fill(0);
            self.header[124] = 0x80;
            self.header[128..136].copy_from_slice(&size.to_be_bytes());
        }
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

/// Decompresses bundle bytes (one or more frames).
pub fn decompress_bytes(bundle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bundle)
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

/// Writes to `out` the bundle `bundle` with artifact `name`'s bytes replaced
/// by `data`, the manifest's sha256 and size updated and re-signed by the
/// unencrypted secret key file `secret`: an authentic bundle that `bundler`
/// would refuse to build (it reads every archive with the installer's
/// reader), as an older bundler or another tool could make it.
pub fn replace_artifact(bundle: &Path, out: &Path, name: &str, data: &[u8], secret: &Path) {
    let mut entries = read_entries(bundle);
    let path = format!("artifacts/{name}");
    let i = entries
        .iter()
        .position(|e| e.name() == path)
        .unwrap_or_else(|| panic!("no entry {path} in {}", bundle.display()));
    let mut entry = RawEntry::file("x", data.to_vec());
    entry.set_name(&path);
    entries[i] = entry;
    edit_manifest(&mut entries, &secret_key(secret), |m| {
        m["artifacts"][name]["sha256"] = sha256_hex(data).into();
        m["artifacts"][name]["size"] = data.len().into();
    });
    write_entries(&entries, out);
}

// ---------------------------------------------------------------------------
// Hostile-suite helpers: more entry kinds, signatures, in-process verification,
// zstd frame layout, installer runs, resource measurement, mounts.
// ---------------------------------------------------------------------------

impl RawEntry {
    /// An entry of any type flag (`b'0'` file, `b'1'` hard link, `b'2'` symlink,
    /// `b'3'` char device, `b'5'` directory, `b'6'` FIFO, `b'x'` PAX header,
    /// `b'L'` GNU long name, ...) with `link` as its link name.
    pub fn special(name: &str, flag: u8, link: &str, data: Vec<u8>) -> Self {
        let mut e = Self::file("placeholder", data);
        e.set_name(name);
        e.header[156] = flag;
        e.set_link(link);
        e
    }

    /// A PAX extended header (`x`) holding `records` (`key`, `value`), which
    /// applies to the entry that follows it.
    pub fn pax(records: &[(&str, &str)]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            // "LEN key=value\n" where LEN counts the whole record, itself included.
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        Self::special("././@PaxHeader", b'x', "", data)
    }

    /// A GNU long-name entry (`L`) naming the entry that follows it `name`.
    pub fn gnu_long_name(name: &str) -> Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        Self::special("././@LongLink", b'L', "", data)
    }
}

/// The parsed signature entry (entry 1) of a bundle's entries.
pub fn signature(entries: &[RawEntry]) -> Signature {
    Signature::parse(std::str::from_utf8(&entries[1].data).expect("signature is text"))
        .expect("signature parses")
}

/// Replaces the signature entry (entry 1) with `sig`.
pub fn set_signature(entries: &mut [RawEntry], sig: &Signature) {
    entries[1] = RawEntry::file("BUNDLE.json.minisig", sig.to_file_string().into_bytes());
}

/// The manifest JSON (entry 0) of a bundle's entries.
pub fn manifest_json(entries: &[RawEntry]) -> serde_json::Value {
    serde_json::from_slice(&entries[0].data).expect("manifest JSON")
}

/// Serializes a manifest the way the builder does (pretty, trailing newline).
pub fn manifest_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("serialize");
    bytes.push(b'\n');
    bytes
}

/// Trusted keys holding the public key file `public`.
pub fn trusted_keys(public: &Path) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(PublicKey::from_file(public).expect("public key"), "test");
    t
}

/// An [`ArtifactSink`] that keeps committed artifacts in memory.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Committed artifacts by name.
    pub artifacts: BTreeMap<String, Vec<u8>>,
}

impl ArtifactSink for MemorySink {
    type Writer = Vec<u8>;
    fn create(
        &mut self,
        _: &bundle_spec::names::ArtifactName,
        _: &bundle_spec::spec::ManifestArtifact,
    ) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(
        &mut self,
        name: &bundle_spec::names::ArtifactName,
        writer: Vec<u8>,
    ) -> std::io::Result<()> {
        self.artifacts.insert(name.to_string(), writer);
        Ok(())
    }
}

/// What an accepted bundle authenticated: the manifest's sha256 and every
/// artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: String,
    /// Every artifact's bytes, by name.
    pub artifacts: BTreeMap<String, Vec<u8>>,
}

/// Runs the bundle reader in-process over `bytes` (open + read_artifacts, the
/// default limits), keeping the artifacts in memory.
pub fn read_in_process(bytes: &[u8], trusted: &TrustedKeys) -> Result<Accepted, ReadError> {
    let reader = bundle_spec::read::BundleReader::open(bytes, trusted, &Limits::default())?;
    let mut sink = MemorySink::default();
    let v: Verified = reader.read_artifacts(&mut sink, &bundle_spec::NoReporter)?;
    Ok(Accepted {
        manifest_sha256: v.manifest_sha256.to_string(),
        artifacts: sink.artifacts,
    })
}

/// `bytes` with bit `bit` (counted from the first byte's lowest bit) flipped.
pub fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[bit / 8] ^= 1 << (bit % 8);
    v
}

/// Where the parts of a single zstd frame are, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZstdLayout {
    /// The frame header (magic number, descriptor, window, dictionary id,
    /// content size).
    pub header: std::ops::Range<usize>,
    /// Every block: its 3-byte header, then its content.
    pub blocks: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The 4-byte content checksum, when present.
    pub checksum: Option<std::ops::Range<usize>>,
}

/// Parses the layout of the zstd frame at the start of `b` (RFC 8878 §3.1.1).
pub fn zstd_layout(b: &[u8]) -> ZstdLayout {
    assert_eq!(&b[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    let fhd = b[4];
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    let has_checksum = fhd & 0x04 != 0;
    let did = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = match fcs_flag {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let header_len = 5 + usize::from(!single_segment) + did + fcs;
    let mut blocks = Vec::new();
    let mut pos = header_len;
    loop {
        let h = u32::from(b[pos]) | (u32::from(b[pos + 1]) << 8) | (u32::from(b[pos + 2]) << 16);
        let last = h & 1 != 0;
        let kind = (h >> 1) & 3;
        let size = (h >> 3) as usize;
        let content = if kind == 1 { 1 } else { size };
        blocks.push((pos..pos + 3, pos + 3..pos + 3 + content));
        pos += 3 + content;
        if last {
            break;
        }
    }
    let checksum = has_checksum.then(|| pos..pos + 4);
    ZstdLayout {
        header: 0..header_len,
        blocks,
        checksum,
    }
}

/// Byte offsets of every entry's header and data in a tar made by
/// [`tar_bytes`] of `entries`, and of the end-of-archive blocks.
#[derive(Debug, Clone)]
pub struct TarLayout {
    /// For each entry: (header offset, data range, padding range).
    pub entries: Vec<(usize, std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The two zero blocks at the end.
    pub end: std::ops::Range<usize>,
}

/// The [`TarLayout`] of [`tar_bytes`]`(entries)`.
pub fn tar_layout(entries: &[RawEntry]) -> TarLayout {
    let mut pos = 0;
    let mut out = Vec::new();
    for e in entries {
        let data = pos + 512..pos + 512 + e.data.len();
        let padded = (e.data.len()).div_ceil(512) * 512;
        let pad = data.end..pos + 512 + padded;
        out.push((pos, data, pad));
        pos += 512 + padded;
    }
    TarLayout {
        entries: out,
        end: pos..pos + 1024,
    }
}

/// Installs `bundle` into `root` with `install-bundle --root ROOT
/// --trusted-key KEY EXTRA...` (and extra environment).
pub fn install(
    root: &Path,
    bundle: &Path,
    key: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    run(&installer(), install_args(root, bundle, key, extra), env)
}

/// The arguments of [`install`].
pub fn install_args(root: &Path, bundle: &Path, key: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        bundle.into(),
        "--root".into(),
        root.into(),
        "--trusted-key".into(),
        key.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Runs `bin` under `/usr/bin/time -v` and returns its output and its peak
/// resident set size in KiB; `None` when GNU time is not installed.
pub fn run_measured<I, S>(bin: &Path, args: I, env: &[(&str, &str)]) -> Option<(Output, u64)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let mut all: Vec<OsString> = vec!["-v".into(), bin.into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    let out = run(time, all, env);
    let kib = out
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())?;
    Some((out, kib))
}

/// A tmpfs mounted for a test, unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs with `options` (e.g. `size=1m,nr_inodes=64`) at `dir`
    /// (created if missing). `Err` says why when this host cannot mount
    /// (not root, no CAP_SYS_ADMIN, a restricted container).
    pub fn tmpfs(dir: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self {
                dir: dir.to_owned(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Free inodes and free bytes on the mounted filesystem.
    pub fn free(&self) -> (u64, u64) {
        let out = Command::new("stat")
            .args(["-f", "-c", "%d %a %S"])
            .arg(&self.dir)
            .output()
            .expect("stat -f");
        let s = String::from_utf8_lossy(&out.stdout);
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse().expect("number"))
            .collect();
        (v[0], v[1] * v[2])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// SHA-256 (hex) of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts that every file in `cache/sha256/` is named by the SHA-256 of its
/// content (the builder's cache only ever holds verified objects), and
/// returns how many there are.
#[track_caller]
pub fn assert_cache_verified(cache: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(cache.join("sha256"))
        .into_iter()
        .flatten()
    {
        let e = e.expect("cache entry");
        let data = std::fs::read(e.path()).expect("read cache object");
        assert_eq!(
            e.file_name().to_string_lossy(),
            sha256_hex(&data),
            "cache object {} does not hold what its name says",
            e.path().display()
        );
        n += 1;
    }
    n
}

/// Writes `spec` (JSON) as `NAME` in the fixture's directory and pins it
/// with `bundler pin` (artifact URLs are `file:files/...` of the fixture).
pub fn write_pinned_spec(
    f: &crate::fixture::Fixture,
    name: &str,
    spec: &serde_json::Value,
) -> PathBuf {
    let path = f.path(name);
    std::fs::write(&path, serde_json::to_vec_pretty(spec).expect("json")).expect("write spec");
    run(
        &crate::cli::bundler(),
        [
            "pin".as_ref(),
            path.as_os_str(),
            "--cache".as_ref(),
            f.path("cache").as_os_str(),
        ],
        &[],
    )
    .code(0);
    path
}

/// The fixture's spec without the steps that run programs (`debs`,
/// `command`) or touch the host outside files (`swap-off`): only file
/// writes, so every change is undoable. `first` steps go before the others;
/// `artifacts` are added to the fixture's.
pub fn files_only_spec(
    first: &[serde_json::Value],
    artifacts: &[(&str, &str)],
) -> serde_json::Value {
    let mut steps: Vec<serde_json::Value> = first.to_vec();
    steps.extend([
        serde_json::json!({"kind": "kernel-module", "name": "overlay"}),
        serde_json::json!({"kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc", "mode": "0755"}),
        serde_json::json!({"kind": "extract", "artifact": "crictl", "dest": "/usr/local/bin", "include": ["crictl"]}),
        serde_json::json!({"kind": "extract", "artifact": "containerd", "dest": "/bin", "strip_components": 1}),
        serde_json::json!({"kind": "directory", "paths": ["/var/lib/kubelet", "/etc/cni/net.d"], "mode": "0755"}),
        serde_json::json!({"kind": "file", "dest": "/etc/cni/net.d/10-bridge.conf", "mode": "0644", "template": true,
            "content": "{ \"subnet\": \"${POD_CIDR}\" }\n"}),
        serde_json::json!({"kind": "systemd-unit", "name": "containerd.service",
            "content": "[Unit]\nDescription=containerd\n[Service]\nExecStart=/bin/containerd\n[Install]\nWantedBy=multi-user.target\n",
            "enable": true, "start": true}),
    ]);
    let mut arts = serde_json::json!({
        "runc": {"url": "file:files/runc.amd64"},
        "crictl": {"url": "file:files/crictl.tar.zst"},
        "containerd": {"url": "file:files/containerd.tar.zst"},
    });
    for (name, url) in artifacts {
        arts[*name] = serde_json::json!({ "url": url });
    }
    serde_json::json!({
        "apiVersion": "bundle/v1", "name": "files-only", "version": "1.0-1", "serial": 1,
        "target": {"os": "linux", "arch": "amd64"},
        "variables": {"POD_CIDR": {"required": true}},
        "artifacts": arts,
        "steps": steps,
    })
}
