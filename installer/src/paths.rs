//! The install root and paths below it.
//!
//! Every target path of a bundle is absolute (`/usr/local/bin/runc`); under
//! `--root R` it lives at `R/usr/local/bin/runc`. Symbolic links met in the
//! parent directories are resolved *inside* the root, as if chrooted: an
//! absolute link target restarts at R, `..` never climbs above R. So a root's
//! `/bin -> usr/bin` works, and no link can lead a write outside the root.
//! The last component is never followed: installing replaces it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use bundle_spec::names::TargetPath;

/// Symlinks followed while resolving one path, at most (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The directory installed into: `/` for the host, or `--root DIR`.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// The root at `dir` (made absolute and canonical; it must exist).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let path = std::fs::canonicalize(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("root {}: {e}", dir.display())))?;
        if !path.is_dir() {
            return Err(io::Error::other(format!(
                "root {} is not a directory",
                dir.display()
            )));
        }
        Ok(Self { path })
    }

    /// The host's own root, `/`.
    pub fn host() -> Self {
        Self {
            path: PathBuf::from("/"),
        }
    }

    /// Whether this is the running system's `/` (so services may be started).
    pub fn is_host(&self) -> bool {
        self.path == Path::new("/")
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `target` joined below the root without resolving anything.
    pub fn lexical(&self, target: &str) -> PathBuf {
        self.path.join(target.trim_start_matches('/'))
    }

    /// Where `target` is on the host: parents resolved inside the root, the
    /// last component not followed.
    pub fn resolve(&self, target: &TargetPath) -> io::Result<PathBuf> {
        self.resolve_str(target.as_str())
    }

    /// [`Root::resolve`] for an absolute path string already known to be normalized.
    pub fn resolve_str(&self, target: &str) -> io::Result<PathBuf> {
        let mut parts: VecDeque<String> = target
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let Some(last) = parts.pop_back() else {
            return Ok(self.path.clone());
        };
        let mut resolved: Vec<String> = Vec::new();
        let mut followed = 0;
        while let Some(part) = parts.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let here = self.join(&resolved).join(&part);
            match std::fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(io::Error::other(format!(
                            "too many levels of symbolic links resolving {target} below {}",
                            self.path.display()
                        )));
                    }
                    let link = std::fs::read_link(&here)?;
                    let link = link.to_string_lossy();
                    if link.starts_with('/') {
                        resolved.clear();
                    }
                    for c in link.split('/').filter(|c| !c.is_empty()).rev() {
                        parts.push_front(c.to_owned());
                    }
                }
                _ => resolved.push(part),
            }
        }
        Ok(self.join(&resolved).join(last))
    }

    fn join(&self, parts: &[String]) -> PathBuf {
        let mut p = self.path.clone();
        for c in parts {
            p.push(c);
        }
        p
    }

    /// The state directory: `ROOT/var/lib/install-bundle`.
    pub fn state_dir(&self) -> PathBuf {
        self.lexical("/var/lib/install-bundle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        symlink("usr/bin", dir.path().join("bin")).unwrap();
        symlink("/etc", dir.path().join("usr/abs")).unwrap();
        symlink("../../../../..", dir.path().join("usr/up")).unwrap();
        let r = |p: &str| root.resolve(&p.parse().unwrap()).unwrap();
        assert_eq!(r("/bin/containerd"), root.path().join("usr/bin/containerd"));
        assert_eq!(r("/usr/abs/shadow"), root.path().join("etc/shadow"));
        assert_eq!(r("/usr/up/etc/passwd"), root.path().join("etc/passwd"));
        // The last component is not followed.
        assert_eq!(r("/bin"), root.path().join("bin"));
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(root.resolve(&"/a/x".parse().unwrap()).is_err());
    }
}
