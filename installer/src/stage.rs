//! The state directory (`ROOT/var/lib/install-bundle`), its lock, and the
//! private staging directory verified artifacts are streamed into.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use bundle_spec::names::ArtifactName;
use bundle_spec::read::ArtifactSink;
use bundle_spec::spec::ManifestArtifact;

use crate::journal::{CRASH_ENV, kill_self};
use crate::paths::Root;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

/// How often [`StateDir::open`] starts over when a concurrent run removes
/// the lock file or the state directory under it.
const OPEN_ATTEMPTS: usize = 100;

/// The state directory, locked for this run. Directories it had to create
/// are removed again by [`StateDir::release`] when the run leaves nothing
/// behind (a refused bundle leaves no trace on the root).
#[derive(Debug)]
pub struct StateDir {
    /// The directory.
    pub dir: PathBuf,
    created: Vec<PathBuf>,
    lock: Option<File>,
}

/// Why the state directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another installer holds the lock.
    #[error(
        "another install-bundle is running on this root (lock {0} is held); wait for it to finish"
    )]
    Locked(PathBuf),
    /// I/O.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The state directory's target path (resolved inside the root like every other path).
pub const STATE_TARGET: &str = "/var/lib/install-bundle";

impl StateDir {
    /// Creates (if needed) and locks `ROOT/var/lib/install-bundle`, resolved
    /// inside the root. Fails at once if another installer holds the lock.
    ///
    /// Safe against a concurrent run: a directory another run creates first
    /// is simply used, and when another run's [`StateDir::release`] removes
    /// the lock file or the directory between our steps, we start over (a
    /// bounded number of times).
    pub fn open(root: &Root) -> Result<Self, StateError> {
        let mut state = Self {
            dir: root.display(STATE_TARGET),
            created: Vec::new(),
            lock: None,
        };
        for _ in 0..OPEN_ATTEMPTS {
            state.create_missing(root)?;
            // The real path of the directory resolved inside the root: every
            // later use of the state directory goes through it.
            match root.open_dir(STATE_TARGET).and_then(|d| d.real_path()) {
                Ok(real) => state.dir = real,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    state.remove_created();
                    return Err(StateError::Io {
                        path: state.dir.clone(),
                        source: e,
                    });
                }
            }
            let lock_path = state.dir.join(LOCK_FILE);
            let lock = match OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc_o_nofollow())
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(lock) => lock,
                // Removed by a concurrent `release`: again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // E.g. no space left: leave no trace of this run.
                    state.remove_created();
                    return Err(StateError::Io {
                        path: lock_path,
                        source: e,
                    });
                }
            };
            match lock.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    // Not ours: leave the lock file and the directories to the holder.
                    state.created.clear();
                    return Err(StateError::Locked(lock_path));
                }
                Err(fs::TryLockError::Error(e)) => {
                    state.remove_created();
                    return Err(StateError::Io {
                        path: lock_path,
                        source: e,
                    });
                }
            }
            // The lock file may have been deleted by a run that leaves
            // nothing behind (see `release`) between our open and our lock:
            // only if the path still names the file we locked is it ours.
            let same = match (lock.metadata(), fs::symlink_metadata(&lock_path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                state.lock = Some(lock);
                return Ok(state);
            }
        }
        state.remove_created();
        Err(StateError::Io {
            path: state.dir.join(LOCK_FILE),
            source: io::Error::other(format!(
                "removed by another install-bundle each of {OPEN_ATTEMPTS} times it was locked; try again"
            )),
        })
    }

    /// Creates the state directory and its missing parents (mode 0755, inside
    /// the root), remembering the ones this run created by their real path.
    /// One that appears meanwhile (a concurrent run) is fine.
    fn create_missing(&mut self, root: &Root) -> Result<(), StateError> {
        let mut prefix = String::new();
        for c in STATE_TARGET.split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(c);
            let io_err = |source| StateError::Io {
                path: root.display(&prefix),
                source,
            };
            if root.stat(&prefix).map_err(io_err)?.is_some() {
                continue;
            }
            let (parent, name) = match root.parent(&prefix) {
                Ok(p) => p,
                Err(e) => {
                    self.remove_created();
                    return Err(io_err(e));
                }
            };
            match parent.mkdir(&name, crate::paths::CREATED_DIR_MODE) {
                Ok(()) => {
                    let real = parent.real_path().map(|p| p.join(&name)).map_err(io_err)?;
                    if !self.created.contains(&real) {
                        self.created.push(real);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    self.remove_created();
                    return Err(io_err(e));
                }
            }
        }
        Ok(())
    }

    /// Removes the (empty) directories `open` created, newest first.
    fn remove_created(&mut self) {
        for d in self.created.drain(..).rev() {
            if fs::remove_dir(&d).is_err() {
                break;
            }
        }
    }

    /// Unlocks. When nothing but the lock file remains in the state
    /// directory (no receipt, journal or staging), removes the lock file, the
    /// state directory and the parents this run created, so that a refused
    /// bundle or a rolled-back crash leaves no trace. The lock file is removed
    /// while still locked; `open` copes with that.
    pub fn release(mut self) {
        if self.lock.is_none() {
            return;
        }
        let only_lock = fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .all(|e| e.file_name() == LOCK_FILE)
            })
            .unwrap_or(false);
        if only_lock {
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            if fs::remove_dir(&self.dir).is_ok() {
                for d in self.created.iter().rev().filter(|d| **d != self.dir) {
                    if fs::remove_dir(d).is_err() {
                        break;
                    }
                }
            }
        }
        self.lock.take();
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// A private directory (mode 0700) holding the verified artifacts of one run.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Creates the staging directory `base/staging` (removing a leftover one first).
    pub fn create(base: &Path) -> io::Result<Self> {
        let dir = base.join("staging");
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir)?;
        }
        if fs::symlink_metadata(base).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(base)?;
            fs::set_permissions(base, fs::Permissions::from_mode(0o700))?;
        }
        for d in [dir.clone(), dir.join("artifacts")] {
            fs::DirBuilder::new().mode(0o700).create(&d)?;
            // Exactly 0700, whatever the umask.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self { dir })
    }

    /// A staging directory that already exists and holds verified
    /// artifacts (a staged bundle, [`crate::staged`]).
    pub fn existing(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a verified artifact is kept.
    pub fn artifact(&self, name: &ArtifactName) -> PathBuf {
        self.dir.join("artifacts").join(name.as_str())
    }

    /// Removes the staging directory.
    pub fn remove(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The sink the bundle reader streams into.
    pub fn sink(&self) -> StagingSink<'_> {
        StagingSink {
            staging: self,
            crash: std::env::var(CRASH_ENV).is_ok_and(|v| v == "staging"),
        }
    }
}

/// Writes each artifact to a temp file in the staging directory, renamed to
/// its name only after the reader verified it.
#[derive(Debug)]
pub struct StagingSink<'a> {
    staging: &'a Staging,
    crash: bool,
}

impl ArtifactSink for StagingSink<'_> {
    type Writer = BufWriter<tempfile::NamedTempFile>;

    fn create(&mut self, _: &ArtifactName, _: &ManifestArtifact) -> io::Result<Self::Writer> {
        let tmp = tempfile::Builder::new()
            .prefix(".partial.")
            .tempfile_in(self.staging.dir.join("artifacts"))?;
        Ok(BufWriter::with_capacity(1 << 20, tmp))
    }

    fn commit(&mut self, name: &ArtifactName, mut writer: Self::Writer) -> io::Result<()> {
        writer.flush()?;
        let tmp = writer.into_inner().map_err(|e| e.into_error())?;
        tmp.persist(self.staging.artifact(name))
            .map_err(|e| e.error)?;
        if self.crash {
            kill_self();
        }
        Ok(())
    }
}
