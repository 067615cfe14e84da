//! The install root and every file-system operation below it.
//!
//! Every target path of a bundle is absolute (`/usr/local/bin/runc`); under
//! `--root R` it lives at `R/usr/local/bin/runc`. **Every** component is
//! resolved inside the root, as if chrooted to it: an absolute symlink
//! (`var/run -> /run`) restarts at R, `..` never climbs above R, and nothing
//! a link says can lead a read or a write outside the root. The same code
//! path serves `/` (the host), where resolving inside the root is ordinary
//! resolution.
//!
//! Resolution is done by the kernel (`openat2(2)` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`, Linux 5.6+), which needs no `/proc` (a chroot may
//! have none mounted), and on older kernels by `pathrs`' hardened `O_PATH`
//! walker (which needs `/proc`); never by joining strings. What this module hands out is a
//! directory file descriptor ([`Dir`]) plus a final name; every operation is
//! then an `*at(2)` call on that descriptor that never follows the final
//! component (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so a symlink planted
//! where a file goes is replaced, never written through.
//!
//! Two rules for the final component:
//! * files and symlinks: never followed; installing replaces what is there;
//! * directories (`directory` steps, extract destinations): followed *inside
//!   the root*, like `mkdir -p` in a chroot, so `/var/run/kubernetes` lands in
//!   `R/run/kubernetes` on a Debian root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The mode of every directory the installer creates (parents of targets,
/// extract destinations, its state directory's parents): `0755`, whatever
/// the umask and whatever an archive says.
pub const CREATED_DIR_MODE: u32 = 0o755;

/// The directory installed into: `/` for the host, or `--root DIR`.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    handle: Arc<pathrs::Root>,
}

/// How often `openat2(2)` is retried when a concurrent rename or mount
/// anywhere on the system makes it fail with `EAGAIN` (as `pathrs` does).
const OPENAT2_RETRIES: usize = 128;

/// What kind of inode a path names (not following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// The metadata the installer looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The kind of inode.
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Device.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Self {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Self {
            kind,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
        }
    }
}

fn pathrs_error(what: &str, shown: &Path, e: pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => {
            let base = io::Error::from_raw_os_error(errno);
            io::Error::new(base.kind(), format!("{what} {}: {base}", shown.display()))
        }
        _ => io::Error::other(format!("{what} {}: {e}", shown.display())),
    }
}

fn with_path(e: impl Into<io::Error>, what: &str, shown: &Path) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{what} {}: {e}", shown.display()))
}

/// Splits an absolute target into its parent and final name (`None` for `/`).
fn split(target: &str) -> Option<(&str, &str)> {
    let t = target.trim_end_matches('/');
    let (parent, name) = t.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

impl Root {
    /// The root at `dir` (made absolute and canonical; it must be a directory).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let path = std::fs::canonicalize(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("root {}: {e}", dir.display())))?;
        if !path.is_dir() {
            return Err(io::Error::other(format!(
                "root {} is not a directory",
                dir.display()
            )));
        }
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e, "opening root", &path))?;
        let handle = pathrs::Root::from_fd(
            rustix::io::fcntl_dupfd_cloexec(&fd, 0).map_err(|e| with_path(e, "root", &path))?,
        );
        Ok(Self {
            path,
            fd: Arc::new(fd),
            handle: Arc::new(handle),
        })
    }

    /// The host's own root, `/`.
    pub fn host() -> io::Result<Self> {
        Self::new(Path::new("/"))
    }

    /// Whether this is the running system's `/` (so services may be started).
    pub fn is_host(&self) -> bool {
        self.path == Path::new("/")
    }

    /// The root directory (for `dpkg --root`, `chroot` and messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `target` joined below the root, for messages only: nothing is resolved.
    pub fn display(&self, target: &str) -> PathBuf {
        self.path.join(target.trim_start_matches('/'))
    }

    /// Opens `target` with every component resolved inside the root (the
    /// last one too unless `flags` has `NOFOLLOW`).
    fn open_in_root(&self, target: &str, flags: OFlags, what: &str) -> io::Result<OwnedFd> {
        let shown = self.display(target);
        let flags = flags | OFlags::CLOEXEC;
        for _ in 0..OPENAT2_RETRIES {
            match rustix::fs::openat2(
                &*self.fd,
                target,
                flags,
                Mode::empty(),
                rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::NOSYS) => {
                    return self.open_in_root_pathrs(target, flags, what);
                }
                Err(e) => return Err(with_path(e, what, &shown)),
                Ok(fd) => return Ok(fd),
            }
        }
        Err(io::Error::other(format!(
            "{what} {}: the kernel kept reporting a concurrent rename ({OPENAT2_RETRIES} attempts)",
            shown.display()
        )))
    }

    /// [`Root::open_in_root`] before Linux 5.6: pathrs' userspace resolver.
    fn open_in_root_pathrs(&self, target: &str, flags: OFlags, what: &str) -> io::Result<OwnedFd> {
        let shown = self.display(target);
        let handle = if flags.contains(OFlags::NOFOLLOW) {
            self.handle.resolve_nofollow(target)
        } else {
            self.handle.resolve(target)
        }
        .map_err(|e| pathrs_error(what, &shown, e))?;
        if flags.contains(OFlags::PATH) {
            return Ok(OwnedFd::from(handle));
        }
        handle
            .reopen(pathrs::flags::OpenFlags::from_bits_retain(u64::from(
                (flags - OFlags::NOFOLLOW).bits(),
            )))
            .map(OwnedFd::from)
            .map_err(|e| pathrs_error(what, &shown, e))
    }

    /// The directory `target`, every component (the last one too) resolved
    /// inside the root. `NotFound` when it or a parent does not exist.
    pub fn open_dir(&self, target: &str) -> io::Result<Dir> {
        let shown = self.display(target);
        let fd = self.open_in_root(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY,
            "opening directory",
        )?;
        Ok(Dir { fd, shown })
    }

    /// The parent directory of `target` (resolved inside the root) and the
    /// final component's name, which is not resolved.
    pub fn parent(&self, target: &str) -> io::Result<(Dir, OsString)> {
        let (parent, name) = split(target).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{target} has no parent directory"),
            )
        })?;
        Ok((self.open_dir(parent)?, OsString::from(name)))
    }

    /// The parent of `target`, or `None` when it (or one of its parents) does not exist.
    pub fn parent_if_exists(&self, target: &str) -> io::Result<Option<(Dir, OsString)>> {
        match self.parent(target) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Metadata of `target` without following its final component; `None`
    /// when it does not exist.
    pub fn lstat(&self, target: &str) -> io::Result<Option<Meta>> {
        match self.parent_if_exists(target)? {
            Some((dir, name)) => dir.stat_at(&name),
            None => Ok(None),
        }
    }

    /// Metadata of `target`, a final symlink followed inside the root;
    /// `None` when it does not exist (a dangling symlink included).
    pub fn stat(&self, target: &str) -> io::Result<Option<Meta>> {
        let shown = self.display(target);
        match self.open_in_root(target, OFlags::PATH, "resolving") {
            Ok(fd) => rustix::fs::fstat(&fd)
                .map(|st| Some(Meta::of(&st)))
                .map_err(|e| with_path(e, "stat", &shown)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the regular file `target` for reading, every symlink (the last
    /// one too) followed inside the root. For configuration the installer
    /// reads (`/etc/os-release`, the dpkg database, trusted keys). One
    /// `openat2(2)`; no `/proc` needed (a chroot may have none mounted).
    pub fn open_following(&self, target: &str) -> io::Result<File> {
        let shown = self.display(target);
        let file = File::from(self.open_in_root(
            target,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            "opening",
        )?);
        let meta = rustix::fs::fstat(&file).map_err(|e| with_path(e, "stat", &shown))?;
        if Meta::of(&meta).kind != Kind::File {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                shown.display()
            )));
        }
        Ok(file)
    }

    /// Opens the regular file `target` for reading without following its
    /// final component.
    pub fn open_nofollow(&self, target: &str) -> io::Result<File> {
        let (dir, name) = self.parent(target)?;
        dir.open_file(&name)
    }

    /// Removes the tree at `target` (not following a final symlink, nor
    /// any symlink inside it), inside the root. A missing tree is not an error.
    pub fn remove_tree(&self, target: &str) -> io::Result<()> {
        match self.parent_if_exists(target)? {
            Some((dir, name)) => dir.remove_tree(&name),
            None => Ok(()),
        }
    }

    /// Checks that the missing parents of `target` can be created: walking
    /// down from `/`, every existing component must lead to a directory
    /// inside the root. A dangling symlink (one whose target does not exist
    /// inside the root) or a file in the way is an error naming it.
    pub fn check_creatable(&self, target: &str) -> io::Result<()> {
        let Some((parent, _)) = split(target) else {
            return Ok(());
        };
        let mut prefix = String::new();
        for c in parent.split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(c);
            match self.stat(&prefix)? {
                Some(m) if m.kind == Kind::Dir => continue,
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!(
                            "{} exists and is not a directory",
                            self.display(&prefix).display()
                        ),
                    ));
                }
                None => {}
            }
            return match self.lstat(&prefix)? {
                // Truly absent: it and everything below it will be created.
                None => Ok(()),
                Some(_) => {
                    let to = self
                        .parent(&prefix)
                        .and_then(|(d, n)| d.read_link(&n))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "{prefix} is a symbolic link to {to}, which does not exist inside the root {}; nothing can be created through it",
                            self.path.display()
                        ),
                    ))
                }
            };
        }
        Ok(())
    }

    /// The nearest existing directory at or above `target` (for free-space
    /// and read-only checks before anything is created).
    pub fn nearest_existing_dir(&self, target: &str) -> io::Result<Dir> {
        let mut t = target.trim_end_matches('/').to_owned();
        loop {
            if t.is_empty() {
                t.push('/');
            }
            match self.open_dir(&t) {
                Ok(d) => return Ok(d),
                Err(e)
                    if t != "/"
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        ) => {}
                Err(e) => return Err(e),
            }
            match split(&t) {
                Some((p, _)) => t = p.to_owned(),
                None => t = "/".to_owned(),
            }
        }
    }
}

/// An open directory below the root: every operation is relative to its
/// descriptor and never follows the final name.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    shown: PathBuf,
}

fn name_path(name: &OsStr) -> &Path {
    Path::new(name)
}

impl Dir {
    /// Where this directory is, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `name` in this directory, for messages.
    pub fn shown_child(&self, name: &OsStr) -> PathBuf {
        self.shown.join(name)
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Metadata of the directory itself.
    pub fn meta(&self) -> io::Result<Meta> {
        rustix::fs::fstat(&self.fd)
            .map(|st| Meta::of(&st))
            .map_err(|e| with_path(e, "stat", &self.shown))
    }

    /// Metadata of `name` (not followed); `None` when absent.
    pub fn stat_at(&self, name: &OsStr) -> io::Result<Option<Meta>> {
        match rustix::fs::statat(&self.fd, name_path(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(with_path(e, "stat", &self.shown_child(name))),
        }
    }

    /// Opens the regular file `name` for reading (`O_NOFOLLOW`; a FIFO or
    /// device is refused without blocking).
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let shown = self.shown_child(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name_path(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e, "opening", &shown))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| with_path(e, "stat", &shown))?;
        if Meta::of(&st).kind != Kind::File {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                shown.display()
            )));
        }
        Ok(File::from(fd))
    }

    /// Creates the new file `name` (`O_EXCL`, never through a symlink) with
    /// exactly `mode` (umask ignored).
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let shown = self.shown_child(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name_path(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| with_path(e, "creating", &shown))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| with_path(e, "chmod", &shown))?;
        Ok(File::from(fd))
    }

    /// Opens the subdirectory `name` (not followed).
    pub fn open_subdir(&self, name: &OsStr) -> io::Result<Dir> {
        let shown = self.shown_child(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name_path(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e, "opening directory", &shown))?;
        Ok(Dir { fd, shown })
    }

    /// Creates the directory `name` with exactly `mode` (umask ignored).
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let shown = self.shown_child(name);
        rustix::fs::mkdirat(&self.fd, name_path(name), Mode::from_raw_mode(0o700))
            .map_err(|e| with_path(e, "creating directory", &shown))?;
        let sub = self.open_subdir(name)?;
        rustix::fs::fchmod(&sub.fd, Mode::from_raw_mode(mode))
            .map_err(|e| with_path(e, "chmod", &shown))
    }

    /// Sets the permission bits of `name` without following it (a symlink is refused).
    pub fn chmod(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let shown = self.shown_child(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name_path(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e, "opening", &shown))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| with_path(e, "chmod", &shown))
    }

    /// Sets this directory's own permission bits.
    pub fn chmod_self(&self, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| with_path(e, "chmod", &self.shown))
    }

    /// Renames `from` to `to`, both in this directory (replacing `to`).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, name_path(from), &self.fd, name_path(to))
            .map_err(|e| with_path(e, "renaming to", &self.shown_child(to)))
    }

    /// Makes `to` a second name of `from` (a symlink is linked, not followed).
    pub fn link(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(
            &self.fd,
            name_path(from),
            &self.fd,
            name_path(to),
            AtFlags::empty(),
        )
        .map_err(|e| with_path(e, "linking", &self.shown_child(to)))
    }

    /// Hard-links the file at `source` (an absolute path outside the root,
    /// the staging directory) as `name` here.
    pub fn link_from(&self, source: &Path, name: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(
            rustix::fs::CWD,
            source,
            &self.fd,
            name_path(name),
            AtFlags::empty(),
        )
        .map_err(|e| with_path(e, "linking", &self.shown_child(name)))
    }

    /// Creates the symlink `name` pointing to `to`.
    pub fn symlink(&self, to: &str, name: &OsStr) -> io::Result<()> {
        rustix::fs::symlinkat(to, &self.fd, name_path(name))
            .map_err(|e| with_path(e, "creating symlink", &self.shown_child(name)))
    }

    /// Where the symlink `name` points.
    pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        rustix::fs::readlinkat(&self.fd, name_path(name), Vec::new())
            .map(|c| PathBuf::from(OsStr::from_bytes(c.as_bytes())))
            .map_err(|e| with_path(e, "reading symlink", &self.shown_child(name)))
    }

    /// Removes the non-directory `name`.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name_path(name), AtFlags::empty())
            .map_err(|e| with_path(e, "removing", &self.shown_child(name)))
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name_path(name), AtFlags::REMOVEDIR)
            .map_err(|e| with_path(e, "removing directory", &self.shown_child(name)))
    }

    /// Removes `name` and, if it is a directory, everything in it (no
    /// symlink is followed). Absent: nothing to do.
    pub fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
        match self.stat_at(name)? {
            None => Ok(()),
            Some(m) if m.kind == Kind::Dir => {
                let sub = self.open_subdir(name)?;
                let names: Vec<OsString> = {
                    let d = rustix::fs::Dir::read_from(&sub.fd)
                        .map_err(|e| with_path(e, "reading", &sub.shown))?;
                    let mut v = Vec::new();
                    for entry in d {
                        let entry = entry.map_err(|e| with_path(e, "reading", &sub.shown))?;
                        let n = entry.file_name().to_bytes();
                        if n != b"." && n != b".." {
                            v.push(OsStr::from_bytes(n).to_owned());
                        }
                    }
                    v
                };
                for n in &names {
                    sub.remove_tree(n)?;
                }
                self.rmdir(name)
            }
            Some(_) => self.unlink(name),
        }
    }

    /// Flushes the directory (its entries) to disk.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| with_path(e, "fsync", &self.shown))
    }

    /// Whether the file system holding this directory is mounted read-only.
    pub fn read_only(&self) -> io::Result<bool> {
        rustix::fs::fstatvfs(&self.fd)
            .map(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
            .map_err(|e| with_path(e, "statvfs", &self.shown))
    }

    /// Bytes available to unprivileged users on this directory's file system.
    pub fn available_bytes(&self) -> io::Result<u64> {
        rustix::fs::fstatvfs(&self.fd)
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
            .map_err(|e| with_path(e, "statvfs", &self.shown))
    }

    /// The directory's real path on this machine, for code that needs a
    /// path (the state directory, programs run on files below the root):
    /// from `/proc/self/fd`, or where no `/proc` is mounted (a chroot) by
    /// `getcwd(3)` after `fchdir(2)` to it (the working directory is put
    /// back).
    pub fn real_path(&self) -> io::Result<PathBuf> {
        use std::os::fd::AsRawFd as _;
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) {
            return Ok(p);
        }
        let here = rustix::fs::open(
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e, "opening the working directory to find", &self.shown))?;
        rustix::process::fchdir(&self.fd)
            .map_err(|e| with_path(e, "finding the real path of", &self.shown))?;
        let found = std::env::current_dir();
        rustix::process::fchdir(&here)
            .map_err(|e| with_path(e, "returning to the working directory after", &self.shown))?;
        found.map_err(|e| with_path(e, "finding the real path of", &self.shown))
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
        let r = root.path().to_owned();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/etc", r.join("usr/abs")).unwrap();
        symlink("../../../../..", r.join("usr/up")).unwrap();
        let real = |t: &str| root.open_dir(t).unwrap().real_path().unwrap();
        assert_eq!(real("/bin"), r.join("usr/bin"));
        assert_eq!(real("/usr/abs"), r.join("etc"));
        assert_eq!(real("/usr/up/etc"), r.join("etc"));
        let (d, name) = root.parent("/bin/containerd").unwrap();
        assert_eq!(d.real_path().unwrap(), r.join("usr/bin"));
        assert_eq!(name, "containerd");
        // The last component is not followed by lstat.
        assert_eq!(root.lstat("/bin").unwrap().unwrap().kind, Kind::Symlink);
        assert_eq!(root.stat("/bin").unwrap().unwrap().kind, Kind::Dir);
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(root.parent("/a/x").is_err());
    }
}
