//! The apply journal: every change to the host is recorded (and fsynced)
//! before it is made, so a failure — or a crash, `kill -9`, a power loss —
//! can always be rolled back.
//!
//! * A file or symlink is written to a temp name in its target directory,
//!   fsynced, and renamed over the target; an existing target is first
//!   hard-linked to a backup name. At every instant the target path holds
//!   either its old or its new content, never a partial one.
//! * Created directories, mode changes and commands are journaled too; a
//!   command (dpkg, systemctl, ...) cannot be undone and is reported instead.
//! * On success a `commit` record is written, backups are deleted, and the
//!   journal is removed. A journal found at start-up without `commit` is
//!   rolled back before anything else happens.
//!
//! The journal is JSON lines at `ROOT/var/lib/install-bundle/journal`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bundle_spec::Sha256Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// Test-only: SIGKILL the installer at this journal point (a number), or at
/// `staging` (half-way through staging). Used by the crash tests.
pub const CRASH_ENV: &str = "INSTALL_BUNDLE_TEST_CRASH_AT";

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Entry {
    /// An apply started.
    Begin {
        /// Bundle name.
        name: String,
        /// Bundle version.
        version: String,
        /// Bundle serial.
        serial: u64,
    },
    /// A file or symlink is about to be written at `path` through `tmp`;
    /// `backup` holds the previous content when there was one.
    Replace {
        /// The target.
        path: PathBuf,
        /// The temp name in the same directory.
        tmp: PathBuf,
        /// The backup name, if the target existed.
        backup: Option<PathBuf>,
    },
    /// A directory is about to be created.
    Mkdir {
        /// The directory.
        path: PathBuf,
    },
    /// A mode is about to change.
    Chmod {
        /// The file or directory.
        path: PathBuf,
        /// The mode before.
        old_mode: u32,
    },
    /// A command that cannot be undone is about to run.
    Exec {
        /// What it does.
        what: String,
    },
    /// Everything applied; only clean-up remains.
    Commit,
}

/// What a rollback did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// Changes undone.
    pub undone: usize,
    /// Changes that could not be undone, and why.
    pub failed: Vec<String>,
    /// Commands that ran and cannot be undone.
    pub irreversible: Vec<String>,
}

impl RollbackReport {
    /// Whether the host is back exactly as it was.
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.irreversible.is_empty()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:x}", std::process::id())
}

fn sibling(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    // Keep the name within NAME_MAX.
    let short: String = name.to_string_lossy().chars().take(150).collect();
    Ok(dir.join(format!(".{short}.ib-{tag}-{}", unique_suffix())))
}

/// fsyncs a directory, so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Kills the process with SIGKILL when the test-only crash point is reached.
#[derive(Debug, Default)]
pub struct Crash {
    at: Option<u64>,
    reached: u64,
}

impl Crash {
    /// Reads [`CRASH_ENV`].
    pub fn from_env() -> Self {
        Self {
            at: std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok()),
            reached: 0,
        }
    }

    /// Counts one journal point; dies if it is the chosen one.
    pub fn point(&mut self) {
        self.reached += 1;
        if self.at == Some(self.reached) {
            kill_self();
        }
    }

    /// Points counted so far.
    pub fn reached(&self) -> u64 {
        self.reached
    }
}

/// Dies at once, like `kill -9` (no destructors, no flushing).
pub fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// An apply in progress.
#[derive(Debug)]
pub struct Transaction {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    crash: Crash,
}

impl Transaction {
    /// Starts a journal in `state_dir`. A journal must not exist already
    /// ([`recover`] first).
    pub fn begin(state_dir: &Path, name: &str, version: &str, serial: u64) -> io::Result<Self> {
        let path = state_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        sync_dir(state_dir)?;
        let mut tx = Self {
            path,
            file,
            entries: Vec::new(),
            crash: Crash::from_env(),
        };
        tx.append(Entry::Begin {
            name: name.to_owned(),
            version: version.to_owned(),
            serial,
        })?;
        Ok(tx)
    }

    /// Journal points reached so far (for the crash tests).
    pub fn points(&self) -> u64 {
        self.crash.reached()
    }

    fn append(&mut self, entry: Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.entries.push(entry);
        self.crash.point();
        Ok(())
    }

    /// Creates `dir` and its missing ancestors (mode 0755), journaling each.
    pub fn ensure_dir(&mut self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut d = dir;
        loop {
            match fs::symlink_metadata(d) {
                Ok(m) if m.is_dir() => break,
                Ok(m) if m.file_type().is_symlink() && d.is_dir() => break,
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "{} exists and is not a directory",
                        d.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(d.to_owned());
                    match d.parent() {
                        Some(p) => d = p,
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for m in missing.into_iter().rev() {
            self.mkdir(&m, 0o755)?;
        }
        Ok(())
    }

    /// Creates one directory with `mode` (its parent must exist). A directory
    /// that exists already (an earlier step made it) only gets its mode set.
    /// Only a directory that did not exist is journaled, so a rollback never
    /// removes a directory this run did not create.
    pub fn mkdir(&mut self, dir: &Path, mode: u32) -> io::Result<()> {
        if let Ok(m) = fs::symlink_metadata(dir) {
            if !m.is_dir() {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )));
            }
            if m.permissions().mode() & 0o7777 != mode {
                self.set_mode(dir, mode)?;
            }
            return Ok(());
        }
        self.append(Entry::Mkdir {
            path: dir.to_owned(),
        })?;
        fs::create_dir(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
        sync_dir(parent(dir))
    }

    /// Changes the mode of an existing file or directory.
    pub fn set_mode(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        let old_mode = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
        self.append(Entry::Chmod {
            path: path.to_owned(),
            old_mode,
        })?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    /// Writes `content` to `dest` with `mode`, atomically, backing up what
    /// was there. Returns the digest and size of what was written.
    pub fn write_file(
        &mut self,
        dest: &Path,
        mode: u32,
        content: &mut dyn Read,
    ) -> io::Result<(Sha256Digest, u64)> {
        let (tmp, backup) = self.prepare_replace(dest)?;
        let written = write_tmp(&tmp, mode, content)?;
        self.finish_replace(dest, &tmp, backup.as_deref())?;
        Ok(written)
    }

    /// Installs a staged (already verified) file at `dest` with `mode`,
    /// atomically. When `exclusive` (no other target uses the staged file) it
    /// is hard-linked into place instead of copied, if the filesystem allows.
    /// Returns the digest and size when the bytes were copied (and so hashed
    /// again), `None` when linked.
    pub fn place_file(
        &mut self,
        dest: &Path,
        mode: u32,
        staged: &Path,
        exclusive: bool,
    ) -> io::Result<Option<(Sha256Digest, u64)>> {
        let (tmp, backup) = self.prepare_replace(dest)?;
        let copied = if exclusive && fs::hard_link(staged, &tmp).is_ok() {
            let f = File::open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.sync_all()?;
            None
        } else {
            Some(write_tmp(&tmp, mode, &mut File::open(staged)?)?)
        };
        self.finish_replace(dest, &tmp, backup.as_deref())?;
        Ok(copied)
    }

    /// Points `dest` (a symlink) at `target`, atomically, backing up what was there.
    pub fn symlink(&mut self, dest: &Path, target: &str) -> io::Result<()> {
        let (tmp, backup) = self.prepare_replace(dest)?;
        std::os::unix::fs::symlink(target, &tmp)?;
        self.finish_replace(dest, &tmp, backup.as_deref())
    }

    fn prepare_replace(&mut self, dest: &Path) -> io::Result<(PathBuf, Option<PathBuf>)> {
        self.ensure_dir(parent(dest))?;
        let backup = match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::other(format!(
                    "{} is a directory; refusing to replace it with a file",
                    dest.display()
                )));
            }
            Ok(_) => Some(sibling(dest, "old")?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let tmp = sibling(dest, "new")?;
        self.append(Entry::Replace {
            path: dest.to_owned(),
            tmp: tmp.clone(),
            backup: backup.clone(),
        })?;
        Ok((tmp, backup))
    }

    fn finish_replace(&mut self, dest: &Path, tmp: &Path, backup: Option<&Path>) -> io::Result<()> {
        if let Some(b) = backup {
            // Keep the old content reachable while the new one takes its name.
            if fs::hard_link(dest, b).is_err() {
                copy_preserving(dest, b)?;
            }
        }
        self.crash.point();
        fs::rename(tmp, dest)?;
        sync_dir(parent(dest))
    }

    /// Records a command that cannot be undone, before running it.
    pub fn exec(&mut self, what: &str) -> io::Result<()> {
        self.append(Entry::Exec {
            what: what.to_owned(),
        })
    }

    /// Marks the apply complete, deletes backups and the journal.
    pub fn commit(mut self) -> io::Result<()> {
        self.append(Entry::Commit)?;
        cleanup(&self.entries);
        drop(self.file);
        fs::remove_file(&self.path)?;
        sync_dir(parent(&self.path))
    }

    /// Undoes everything journaled, newest first, and removes the journal.
    pub fn rollback(self) -> RollbackReport {
        let report = undo(&self.entries);
        drop(self.file);
        if report.failed.is_empty() {
            let _ = fs::remove_file(&self.path);
            let _ = sync_dir(parent(&self.path));
        }
        report
    }
}

/// Writes a new temp file with `content` and `mode`, fsynced.
fn write_tmp(tmp: &Path, mode: u32, content: &mut dyn Read) -> io::Result<(Sha256Digest, u64)> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        size += n as u64;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    Ok((Sha256Digest::from_bytes(hasher.finalize().into()), size))
}

fn copy_preserving(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else {
        let mut src = File::open(from)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        io::copy(&mut src, &mut dst)?;
        dst.set_permissions(meta.permissions())?;
        dst.sync_all()
    }
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn cleanup(entries: &[Entry]) {
    for e in entries {
        if let Entry::Replace { tmp, backup, .. } = e {
            let _ = remove_if_present(tmp);
            if let Some(b) = backup {
                let _ = remove_if_present(b);
            }
        }
    }
}

fn undo(entries: &[Entry]) -> RollbackReport {
    let mut report = RollbackReport::default();
    for e in entries.iter().rev() {
        let result = match e {
            Entry::Begin { .. } | Entry::Commit => continue,
            Entry::Exec { what } => {
                report.irreversible.push(what.clone());
                continue;
            }
            Entry::Replace { path, tmp, backup } => (|| {
                remove_if_present(tmp)?;
                match backup {
                    // The crash came between the backup link and the rename:
                    // both names are the same (old) file, and rename() between
                    // two links of one inode does nothing. Drop the backup name.
                    Some(b) if same_inode(b, path) => fs::remove_file(b)?,
                    Some(b) if fs::symlink_metadata(b).is_ok() => fs::rename(b, path)?,
                    // The crash came before the backup was made: the target
                    // still holds its old content.
                    Some(_) => {}
                    None => {
                        if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
                            fs::remove_file(path)?;
                        }
                    }
                }
                sync_dir(parent(path))
            })()
            .map_err(|err| format!("{}: {err}", path.display())),
            Entry::Mkdir { path } => match fs::remove_dir(path) {
                Ok(()) => {
                    sync_dir(parent(path)).map_err(|err| format!("{}: {err}", path.display()))
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(format!(
                    "directory {} could not be removed: {err}",
                    path.display()
                )),
            },
            Entry::Chmod { path, old_mode } => {
                fs::set_permissions(path, fs::Permissions::from_mode(*old_mode))
                    .or_else(|err| {
                        if err.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(err)
                        }
                    })
                    .map_err(|err| format!("mode of {}: {err}", path.display()))
            }
        };
        match result {
            Ok(()) => report.undone += 1,
            Err(msg) => report.failed.push(msg),
        }
    }
    report
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No journal: nothing to do.
    Clean,
    /// A committed apply was interrupted during clean-up; clean-up finished.
    FinishedCommit,
    /// An interrupted apply was rolled back.
    RolledBack {
        /// The bundle that was being applied (`name version`).
        bundle: String,
        /// What the rollback did.
        report: RollbackReport,
    },
}

/// Finishes whatever an interrupted run left in `state_dir`: completes a
/// committed apply's clean-up, or rolls an uncommitted one back.
pub fn recover(state_dir: &Path) -> io::Result<Recovery> {
    let path = state_dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovery::Clean),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A torn last line was never acted on: its change had not started.
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => entries.push(e),
            Err(_) => break,
        }
    }
    let bundle = entries
        .iter()
        .find_map(|e| match e {
            Entry::Begin { name, version, .. } => Some(format!("{name} {version}")),
            _ => None,
        })
        .unwrap_or_else(|| "unknown bundle".to_owned());
    if entries.contains(&Entry::Commit) {
        cleanup(&entries);
        fs::remove_file(&path)?;
        sync_dir(state_dir)?;
        return Ok(Recovery::FinishedCommit);
    }
    let report = undo(&entries);
    if report.failed.is_empty() {
        fs::remove_file(&path)?;
        sync_dir(state_dir)?;
    }
    Ok(Recovery::RolledBack { bundle, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
        let mut out = Vec::new();
        for e in walk(dir) {
            let m = fs::symlink_metadata(&e).unwrap();
            let data = if m.is_file() {
                fs::read(&e).unwrap()
            } else {
                Vec::new()
            };
            out.push((
                e.strip_prefix(dir).unwrap().display().to_string(),
                data,
                m.permissions().mode(),
            ));
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() == "state" {
                continue;
            }
            out.push(p.clone());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                out.extend(walk(&p));
            }
        }
        out
    }

    #[test]
    fn rollback_restores_every_change_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let state = root.join("state");
        fs::create_dir(&state).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/old"), b"old content").unwrap();
        fs::write(root.join("etc/mode"), b"m").unwrap();
        let before = tree(root);
        let mut tx = Transaction::begin(&state, "b", "1", 1).unwrap();
        tx.write_file(&root.join("etc/old"), 0o600, &mut &b"new"[..])
            .unwrap();
        tx.write_file(&root.join("a/b/c/new"), 0o755, &mut &b"x"[..])
            .unwrap();
        tx.symlink(&root.join("etc/link"), "old").unwrap();
        tx.set_mode(&root.join("etc/mode"), 0o700).unwrap();
        tx.mkdir(&root.join("etc/d"), 0o750).unwrap();
        tx.exec("dpkg -i x.deb").unwrap();
        assert_ne!(tree(root), before);
        let report = tx.rollback();
        assert_eq!(report.irreversible, vec!["dpkg -i x.deb".to_owned()]);
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(tree(root), before);
        assert!(!state.join(JOURNAL_FILE).exists());
    }

    #[test]
    fn commit_removes_backups_and_journal() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let mut tx = Transaction::begin(&state, "b", "1", 1).unwrap();
        tx.write_file(&dir.path().join("f"), 0o644, &mut &b"new"[..])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(recover(&state).unwrap(), Recovery::Clean);
    }

    #[test]
    fn recover_rolls_back_an_interrupted_journal() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let mut tx = Transaction::begin(&state, "b", "1", 1).unwrap();
        tx.write_file(&dir.path().join("f"), 0o644, &mut &b"new"[..])
            .unwrap();
        tx.write_file(&dir.path().join("g"), 0o644, &mut &b"new"[..])
            .unwrap();
        std::mem::forget(tx); // as if killed
        // A torn last line is ignored.
        let mut j = OpenOptions::new()
            .append(true)
            .open(state.join(JOURNAL_FILE))
            .unwrap();
        j.write_all(b"{\"op\":\"mkd").unwrap();
        match recover(&state).unwrap() {
            Recovery::RolledBack { bundle, report } => {
                assert_eq!(bundle, "b 1");
                assert!(report.complete(), "{report:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
        assert!(!dir.path().join("g").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
