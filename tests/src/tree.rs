//! Deterministic descriptions and hashes of whole directory trees.
//!
//! A test takes [`tree_hash`] (or [`tree_listing`]) of a directory before and after
//! an operation and compares; on mismatch [`diff_listings`] says what changed.
//!
//! Every entry below the root, and the root itself (as `.`), is described by one
//! line holding its file type, permission bits (`mode & 0o7777`, so setuid, setgid
//! and sticky bits count), owner uid and gid, and depending on the type: size and
//! SHA-256 of a regular file's content, a symlink's target (never followed), or a
//! device's major and minor numbers. Timestamps are deliberately left out, as are
//! link counts and inode numbers. Symlinks are never followed, not even the root.
//!
//! Paths are relative to the root, `/`-separated, and escaped so that each fits on
//! one line: `\` becomes `\\`, control characters become `\u{..}` and bytes that are
//! not UTF-8 become `\xNN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use walkdir::WalkDir;

/// Description used for the root when it does not exist at all.
pub const ABSENT: &str = "absent";

/// SHA-256 (lowercase hex) over the [`tree_listing`] of `root`.
///
/// Two trees hash equal exactly when their listings are equal. A missing `root`
/// hashes like a tree whose only entry is `.` described as [`ABSENT`].
///
/// # Panics
///
/// If part of the tree cannot be read (e.g. a file without read permission).
pub fn tree_hash(root: &Path) -> String {
    let mut hasher = Sha256::new();
    for (path, description) in tree_listing(root) {
        hasher.update(path.as_bytes());
        hasher.update(b"\0");
        hasher.update(description.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Every entry of the tree at `root` (the root itself as `.`), mapped from its
/// escaped relative path to a one-line description, for example:
///
/// ```text
/// .            dir mode=0755 uid=1000 gid=1000
/// bin/tool     file mode=4755 uid=0 gid=0 size=12 sha256=5891b5b5...
/// lib/libx.so  symlink mode=0777 uid=0 gid=0 -> libx.so.1
/// dev/null     char mode=0666 uid=0 gid=0 dev=1:3
/// ```
///
/// If `root` does not exist the listing is `{".": ABSENT}`.
///
/// # Panics
///
/// If part of the tree cannot be read (e.g. a file without read permission).
pub fn tree_listing(root: &Path) -> BTreeMap<String, String> {
    let mut listing = BTreeMap::new();
    match fs::symlink_metadata(root) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            listing.insert(".".to_string(), ABSENT.to_string());
            return listing;
        }
        Err(e) => panic!("tree_listing: cannot stat {}: {e}", root.display()),
    }
    let walker = WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry =
            entry.unwrap_or_else(|e| panic!("tree_listing: walking {}: {e}", root.display()));
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths below the root");
        let key = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            escape(rel.as_os_str().as_bytes())
        };
        listing.insert(key, describe(entry.path()));
    }
    listing
}

/// Human-readable differences between two listings, sorted by path:
/// `- PATH: DESC` for entries only in `a`, `+ PATH: DESC` for entries only in `b`,
/// and `~ PATH: DESC_A => DESC_B` for entries that changed. Empty if they are equal.
pub fn diff_listings(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => None,
            (Some(x), Some(y)) => Some(format!("~ {path}: {x} => {y}")),
            (Some(x), None) => Some(format!("- {path}: {x}")),
            (None, Some(y)) => Some(format!("+ {path}: {y}")),
            (None, None) => None,
        })
        .collect()
}

/// One-line description of the entry at `path` (not following symlinks).
fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("tree_listing: cannot stat {}: {e}", path.display()));
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    };
    let mut line = format!(
        "{kind} mode={:04o} uid={} gid={}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    if ft.is_file() {
        let _ = write!(line, " size={} sha256={}", meta.len(), file_sha256(path));
    } else if ft.is_symlink() {
        let target = fs::read_link(path)
            .unwrap_or_else(|e| panic!("tree_listing: cannot read link {}: {e}", path.display()));
        let _ = write!(line, " -> {}", escape(target.as_os_str().as_bytes()));
    } else if ft.is_char_device() || ft.is_block_device() {
        let (major, minor) = split_dev(meta.rdev());
        let _ = write!(line, " dev={major}:{minor}");
    }
    line
}

fn file_sha256(path: &Path) -> String {
    let mut file = File::open(path)
        .unwrap_or_else(|e| panic!("tree_listing: cannot open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)
        .unwrap_or_else(|e| panic!("tree_listing: cannot read {}: {e}", path.display()));
    hex(&hasher.finalize())
}

/// Major and minor number of a Linux `dev_t` (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev & 0x0000_0000_000f_ff00) >> 8) | ((dev & 0xffff_f000_0000_0000) >> 32);
    let minor = (dev & 0x0000_0000_0000_00ff) | ((dev & 0x0000_0fff_fff0_0000) >> 12);
    (major, minor)
}

/// Injective one-line rendering of a path: `\` doubled, control characters as
/// `\u{..}`, invalid UTF-8 as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape(b"a/b c"), "a/b c");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"a\nb\t"), "a\\u{a}b\\u{9}");
        assert_eq!(escape(b"a\xffb"), "a\\xffb");
        assert_eq!(escape("ä".as_bytes()), "ä");
    }

    #[test]
    fn devices() {
        // /dev/null is 1:3; makedev(1, 3) == 0x103.
        assert_eq!(split_dev(0x103), (1, 3));
        // makedev(259, 65536) as glibc encodes it: the high bits of both numbers
        // live above bit 32.
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xfff) << 8)
                | ((major & 0xffff_f000) << 32)
                | (minor & 0xff)
                | ((minor & 0xffff_ff00) << 12)
        }
        assert_eq!(split_dev(makedev(259, 65536)), (259, 65536));
        assert_eq!(split_dev(makedev(4096, 7)), (4096, 7));
    }
}
