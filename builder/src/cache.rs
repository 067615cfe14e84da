//! Content-addressed download cache.
//!
//! Layout below the cache root:
//!
//! - `sha256/HEX`: verified objects, named by the SHA-256 of their content,
//!   read-only (mode 0444). A file only ever enters this directory through
//!   [`Cache::insert`], after its digest was computed and checked.
//! - `partial/KEY.part`: downloads in progress (or interrupted, kept so that a
//!   later run can resume them). Never read as cached content.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use bundle_spec::Sha256Digest;

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No directory was given and neither `XDG_CACHE_HOME` nor `HOME` names one.
    #[error(
        "cannot choose a cache directory: neither XDG_CACHE_HOME nor HOME is set to an absolute path; give a cache directory explicitly"
    )]
    NoCacheDir,
    /// A cache directory could not be created.
    #[error("cannot create cache directory {}: {source}", path.display())]
    Create {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A content-addressed store of verified downloads.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

const OBJECTS: &str = "sha256";
const PARTIAL: &str = "partial";

impl Cache {
    /// Opens (creating when needed) the cache at `dir`; without `dir`, at
    /// `$XDG_CACHE_HOME/bundler`, or else `$HOME/.cache/bundler`. Relative
    /// values of those variables are ignored, as the XDG specification asks.
    /// Creates `sha256/` and `partial/` below the root.
    pub fn open(dir: Option<&Path>) -> Result<Cache, CacheError> {
        let root = match dir {
            Some(dir) => dir.to_owned(),
            None => default_root().ok_or(CacheError::NoCacheDir)?,
        };
        for sub in [OBJECTS, PARTIAL] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(|source| CacheError::Create { path, source })?;
        }
        Ok(Cache { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object with digest `d` lives (`ROOT/sha256/HEX`), whether or
    /// not it is there.
    pub fn object_path(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join(OBJECTS).join(d.to_hex())
    }

    /// The object with digest `d`, when a regular file (not a symlink or
    /// anything else) is there.
    pub fn lookup(&self, d: &Sha256Digest) -> Option<PathBuf> {
        let path = self.object_path(d);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Some(path),
            _ => None,
        }
    }

    /// The partial-download file for `key` (`ROOT/partial/KEY.part`). `key`
    /// must be a plain file name (no `/`); partial files never live below
    /// `sha256/`.
    pub fn partial_path(&self, key: &str) -> PathBuf {
        debug_assert!(
            !key.is_empty() && !key.contains('/') && key != "." && key != "..",
            "partial key {key:?} is not a file name"
        );
        self.root.join(PARTIAL).join(format!("{key}.part"))
    }

    /// The directory of partial downloads and other temporary files
    /// (`ROOT/partial`), on the cache's file system.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join(PARTIAL)
    }

    /// Stores `bytes`, whose digest the caller has checked to be `d` (a
    /// manifest fetched whole), as [`Cache::insert`] stores a file.
    pub fn insert_bytes(&self, bytes: &[u8], d: &Sha256Digest) -> io::Result<PathBuf> {
        use std::io::Write as _;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{}.", d.to_hex()))
            .suffix(".bytes")
            .tempfile_in(self.partial_dir())?;
        tmp.write_all(bytes)?;
        let tmp = tmp.into_temp_path();
        let path = self.insert(&tmp, d)?;
        // Renamed into the cache: nothing left to remove.
        let _ = tmp.keep();
        Ok(path)
    }

    /// Moves the file `tmp`, whose content the caller has verified to hash to
    /// `d`, into the cache and returns its new path. The file is synced,
    /// made read-only (0444), renamed atomically into `sha256/HEX` (replacing
    /// an identical object another process may have inserted meanwhile), and
    /// the directory is synced. `tmp` should be on the cache's file system
    /// (a partial path is); otherwise it is copied first.
    pub fn insert(&self, tmp: &Path, d: &Sha256Digest) -> io::Result<PathBuf> {
        File::open(tmp)?.sync_all()?;
        set_read_only(tmp)?;
        let dest = self.object_path(d);
        match fs::rename(tmp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let mut copy = tempfile::Builder::new()
                    .prefix(&format!("{}.", d.to_hex()))
                    .suffix(".insert")
                    .tempfile_in(self.root.join(PARTIAL))?;
                io::copy(&mut File::open(tmp)?, copy.as_file_mut())?;
                copy.as_file().sync_all()?;
                set_read_only(copy.path())?;
                copy.persist(&dest).map_err(|e| e.error)?;
                fs::remove_file(tmp)?;
            }
            Err(e) => return Err(e),
        }
        File::open(self.root.join(OBJECTS))?.sync_all()?;
        Ok(dest)
    }
}

fn default_root() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return Some(xdg.join("bundler"));
    }
    absolute("HOME").map(|home| home.join(".cache").join("bundler"))
}

fn set_read_only(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    let perms = {
        use std::os::unix::fs::PermissionsExt as _;
        fs::Permissions::from_mode(0o444)
    };
    #[cfg(not(unix))]
    let perms = {
        let mut perms = fs::metadata(path)?.permissions();
        perms.set_readonly(true);
        perms
    };
    fs::set_permissions(path, perms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_makes_a_read_only_object() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(dir.path())).unwrap();
        let d = Sha256Digest::of(b"hello");
        assert_eq!(cache.lookup(&d), None);
        let tmp = cache.partial_path(&d.to_hex());
        assert!(tmp.starts_with(dir.path().join("partial")));
        fs::write(&tmp, b"hello").unwrap();
        let path = cache.insert(&tmp, &d).unwrap();
        assert_eq!(path, dir.path().join("sha256").join(d.to_hex()));
        assert_eq!(cache.lookup(&d), Some(path.clone()));
        assert!(!tmp.exists());
        assert!(fs::metadata(&path).unwrap().permissions().readonly());
        assert_eq!(fs::read(&path).unwrap(), b"hello");
    }
}
