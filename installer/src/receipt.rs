//! Receipts: what a bundle installed, in `ROOT/var/lib/install-bundle/NAME.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `format` of a receipt.
pub const RECEIPT_FORMAT: &str = "install-bundle-receipt/v1";

/// What one bundle installed on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Bundle serial (anti-rollback).
    pub serial: u64,
    /// SHA-256 of the installed `BUNDLE.json`.
    pub manifest_sha256: String,
    /// Key id that signed it.
    pub key_id: String,
    /// When the receipt was last written.
    pub installed_at: String,
    /// Variable values used.
    pub variables: BTreeMap<String, String>,
    /// Every path the bundle manages.
    pub paths: Vec<InstalledPath>,
    /// Debian packages the bundle installed.
    #[serde(default)]
    pub packages: Vec<InstalledPackage>,
    /// Container images the bundle imported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<InstalledImage>,
}

/// One imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledImage {
    /// The image's name in the bundle.
    pub name: String,
    /// The ref in containerd.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The digest the ref points to.
    pub digest: String,
    /// The containerd namespace.
    pub namespace: String,
    /// Whether it carries the CRI's pinned label.
    pub pinned: bool,
    /// containerd's socket on a live host; absent when imported by a private
    /// containerd (below `--root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One managed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledPath {
    /// Absolute target path.
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub kind: String,
    /// Permission bits (octal string), for files and directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Content digest, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
}

impl Receipt {
    /// Equal but for `installed_at`.
    pub fn same_content(&self, other: &Receipt) -> bool {
        let mut a = self.clone();
        a.installed_at = other.installed_at.clone();
        &a == other
    }

    /// The receipt's bytes as written.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("receipt serializes");
        v.push(b'\n');
        v
    }
}

/// Where the receipt of `name` lives.
pub fn receipt_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.json"))
}

/// Reads the receipt of `name`; `Ok(None)` when none exists.
pub fn read(state_dir: &Path, name: &str) -> Result<Option<Receipt>, String> {
    let path = receipt_path(state_dir, name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "receipt {} is damaged ({e}); inspect it, and remove it to install anyway",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read receipt {}: {e}", path.display())),
    }
}

/// Every receipt in the state directory, by name.
pub fn read_all(state_dir: &Path) -> Result<Vec<Receipt>, String> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("cannot read {}: {e}", state_dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    for n in names {
        if let Some(r) = read(state_dir, &n)? {
            out.push(r);
        }
    }
    Ok(out)
}
