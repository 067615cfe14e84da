//! The apply journal: every change to the host is recorded (and fsynced)
//! before it is made, so a failure — or a crash, `kill -9`, a power loss —
//! can always be rolled back.
//!
//! * A file or symlink is written to a temp name in its target directory,
//!   fsynced, and renamed over the target; an existing target is first
//!   hard-linked to a backup name (and that link made durable). At every
//!   instant the target path holds either its old or its new content, never
//!   a partial one.
//! * Created directories and mode changes are journaled too.
//! * A command (dpkg, a `command` step, systemctl, modprobe, swapoff) is
//!   journaled before it runs and its outcome after. One with a known
//!   compensation (`start` → `stop`, `restart` → `restart` on the restored
//!   files, `daemon-reload` → `daemon-reload`, `swapoff` → `swapon -a`,
//!   `modprobe` → `modprobe -r`) is compensated after the files are back;
//!   one without (dpkg, `command` steps) is reported: when it completed, the
//!   host is not fully as it was.
//! * The units the bundle manages are journaled with the paths each one runs
//!   from (`watch`). After a rollback every running unit whose files were put
//!   back is restarted (after `daemon-reload` where a unit file changed), so
//!   services run what is on disk — also when a power cut let systemd start
//!   them from the new files before `recover` ran.
//! * On success a `commit` record is written, backups are deleted, and the
//!   journal is removed. A journal found at start-up without `commit` is
//!   rolled back before anything else happens.
//!
//! Every path in the journal is a target path (absolute, as in the bundle)
//! resolved inside the root at each use ([`crate::paths`]); temp and backup
//! files are names in the target's own directory. An operation that never
//! happened (the run failed or died before it) is a no-op on rollback, never
//! a failure: nothing is removed or renamed that the journal's own operation
//! did not create.
//!
//! The journal is JSON lines at `ROOT/var/lib/install-bundle/journal`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use bundle_spec::Sha256Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::paths::{CREATED_DIR_MODE, Dir, Kind, Root};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// The journal format this installer writes and reads (in `begin`).
pub const JOURNAL_VERSION: u32 = 2;
/// Test-only: SIGKILL the installer at this journal point (a number), or at
/// `staging` (half-way through staging). Used by the crash tests.
pub const CRASH_ENV: &str = "INSTALL_BUNDLE_TEST_CRASH_AT";
/// Test-only: with a number N, every journal point reached is listed on
/// stderr (`install-bundle: test journal point N: WHAT`), and at point N the
/// installer prints `install-bundle: test pause at journal point N` and
/// stops itself (SIGSTOP) — 0 never stops, so a run lists its points. Where
/// [`CRASH_ENV`] kills the process (the kernel still writes out what it
/// wrote), this holds a host still at a known point so that a test can cut
/// its power (the booted-machine test, `tests/tests/vm_worker.rs`, kills the
/// virtual machine): whatever was not yet on the disk is lost.
pub const PAUSE_ENV: &str = "INSTALL_BUNDLE_TEST_PAUSE_AT";

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
        /// [`JOURNAL_VERSION`]; absent in journals of older installers.
        #[serde(default)]
        journal: u32,
    },
    /// A unit the bundle manages, and the paths it runs from (its unit file,
    /// the programs and files its content names).
    Watch {
        /// The unit name.
        unit: String,
        /// Target paths.
        paths: Vec<String>,
    },
    /// A file or symlink is about to be written at `path` through `tmp`;
    /// `backup` holds the previous content when there was one.
    Replace {
        /// The target path.
        path: String,
        /// The temp name in the same directory.
        tmp: String,
        /// The backup name in the same directory, if the target existed.
        backup: Option<String>,
    },
    /// A directory is about to be created.
    Mkdir {
        /// The target path.
        path: String,
    },
    /// A mode is about to change.
    Chmod {
        /// The target path.
        path: String,
        /// The mode before.
        old_mode: u32,
        /// Whether the final component is followed inside the root (directories).
        #[serde(default)]
        follow: bool,
    },
    /// A file an external program (containerd) is about to change in place:
    /// its previous content is kept at `backup` (in the same directory)
    /// until the commit; `None`: it did not exist.
    Preserve {
        /// The target path.
        path: String,
        /// The backup name in the same directory.
        backup: Option<String>,
    },
    /// A directory tree an external program is about to create; a rollback
    /// removes it with everything in it.
    Tree {
        /// The target path.
        path: String,
    },
    /// A command is about to run.
    Exec {
        /// What it does.
        what: String,
        /// The command that compensates it after a rollback, if there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo: Option<Vec<String>>,
        /// A command run at the commit (clean-up of what `undo` would need).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_commit: Option<Vec<String>>,
    },
    /// The last `exec` finished; `ok` is whether it succeeded.
    Done {
        /// Whether it succeeded.
        ok: bool,
        /// For a failed one: what it is known to have left behind (dpkg's
        /// half-installed packages).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<String>,
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
    /// Commands that completed and cannot be undone.
    pub irreversible: Vec<String>,
    /// Commands that ran and failed: nothing of theirs is journaled, but they
    /// may have had effects of their own.
    pub failed_commands: Vec<String>,
    /// Services restarted or stopped so that they run what is on disk again.
    pub services: Vec<String>,
}

impl RollbackReport {
    /// Whether the host is back as it was (every change undone, no completed
    /// irreversible command).
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.irreversible.is_empty()
    }

    /// One line per fact, for the failure's details.
    pub fn details(&self) -> Vec<String> {
        let mut d = vec![format!("{} changes rolled back", self.undone)];
        d.extend(
            self.services
                .iter()
                .map(|s| format!("to run the restored files: {s}")),
        );
        d.extend(self.failed_commands.iter().map(|c| {
            format!("ran and failed (it may have had effects of its own, outside the journal): {c}")
        }));
        d.extend(
            self.irreversible
                .iter()
                .map(|i| format!("not undone (cannot be): {i}")),
        );
        d.extend(
            self.failed
                .iter()
                .map(|f| format!("not undone (failed): {f}")),
        );
        d
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

/// A hidden name beside `name` in the same directory.
fn sibling(name: &OsStr, tag: &str) -> String {
    // Keep the name within NAME_MAX.
    let short: String = name.to_string_lossy().chars().take(150).collect();
    format!(".{short}.ib-{tag}-{}", unique_suffix())
}

/// fsyncs a directory given by path (the state directory), so renames and
/// removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The test-only hooks at journal points: SIGKILL ([`CRASH_ENV`]), or list
/// the points and stop at one ([`PAUSE_ENV`]).
#[derive(Debug, Default)]
pub struct Crash {
    at: Option<u64>,
    pause: Option<u64>,
    reached: u64,
}

impl Crash {
    /// Reads [`CRASH_ENV`] and [`PAUSE_ENV`].
    pub fn from_env() -> Self {
        let number = |var| std::env::var(var).ok().and_then(|v| v.parse().ok());
        Self {
            at: number(CRASH_ENV),
            pause: number(PAUSE_ENV),
            reached: 0,
        }
    }

    /// Counts one journal point (`what` describes it); dies, or stops, if
    /// it is the chosen one.
    pub fn point(&mut self, what: &dyn Fn() -> String) {
        self.reached += 1;
        if self.at == Some(self.reached) {
            kill_self();
        }
        if let Some(pause) = self.pause {
            let n = self.reached;
            eprintln!("install-bundle: test journal point {n}: {}", what());
            if pause == n {
                eprintln!("install-bundle: test pause at journal point {n}");
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::STOP,
                );
            }
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

/// Whether files are better created in their target directory than
/// hard-linked from staging: on an SELinux host a hard link keeps the
/// staging directory's label (`var_lib_t` on a binary systemd must exec),
/// while a file created in the target directory gets the label the policy
/// gives that directory's new files.
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// An apply in progress.
#[derive(Debug)]
pub struct Transaction {
    root: Root,
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    crash: Crash,
    link_staged: bool,
}

impl Transaction {
    /// Starts a journal in `state_dir` (a real path) for changes below
    /// `root`. A journal must not exist already ([`recover`] first).
    pub fn begin(
        root: &Root,
        state_dir: &Path,
        name: &str,
        version: &str,
        serial: u64,
    ) -> io::Result<Self> {
        let path = state_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        sync_dir(state_dir)?;
        let mut tx = Self {
            root: root.clone(),
            path,
            file,
            entries: Vec::new(),
            crash: Crash::from_env(),
            link_staged: !(root.is_host() && selinux_enabled()),
        };
        let begun = tx.append(Entry::Begin {
            name: name.to_owned(),
            version: version.to_owned(),
            serial,
            journal: JOURNAL_VERSION,
        });
        if let Err(e) = begun {
            // Nothing was changed: leave no journal behind.
            drop(tx.file);
            let _ = std::fs::remove_file(&tx.path);
            return Err(e);
        }
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
        self.crash
            .point(&|| String::from_utf8_lossy(line.trim_ascii_end()).into_owned());
        Ok(())
    }

    /// Records a unit and the paths it runs from (see the module docs).
    pub fn watch(&mut self, unit: &str, paths: Vec<String>) -> io::Result<()> {
        self.append(Entry::Watch {
            unit: unit.to_owned(),
            paths,
        })
    }

    /// Creates the parent directories of `target` that are missing (mode
    /// [`CREATED_DIR_MODE`]), journaling each, and returns the parent.
    pub fn ensure_parent(&mut self, target: &str) -> io::Result<(Dir, OsString)> {
        match self.root.parent(target) {
            Ok(p) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let components: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        let mut prefix = String::new();
        for c in &components[..components.len().saturating_sub(1)] {
            prefix.push('/');
            prefix.push_str(c);
            match self.root.stat(&prefix)? {
                Some(m) if m.kind == Kind::Dir => {}
                Some(_) => {
                    return Err(io::Error::other(format!(
                        "{} exists and is not a directory",
                        self.root.display(&prefix).display()
                    )));
                }
                None => {
                    self.mkdir(&prefix, CREATED_DIR_MODE)?;
                }
            }
        }
        self.root.parent(target)
    }

    /// Creates the directory `target` with exactly `mode` (its missing
    /// parents with [`CREATED_DIR_MODE`]). Returns `false`, changing
    /// nothing, when a directory is there already (an earlier step made it;
    /// a symlink to a directory inside the root counts). Only a directory
    /// that did not exist is journaled, so a rollback never removes a
    /// directory this run did not create.
    pub fn mkdir(&mut self, target: &str, mode: u32) -> io::Result<bool> {
        let (dir, name) = self.ensure_parent(target)?;
        match self.root.stat(target)? {
            Some(m) if m.kind == Kind::Dir => return Ok(false),
            Some(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    self.root.display(target).display()
                )));
            }
            None => {}
        }
        if let Some(m) = dir.stat_at(&name)? {
            // A symlink whose target does not exist inside the root.
            return Err(io::Error::other(format!(
                "{} exists ({:?}) and does not lead to a directory inside the root",
                dir.shown_child(&name).display(),
                m.kind
            )));
        }
        self.append(Entry::Mkdir {
            path: target.to_owned(),
        })?;
        dir.mkdir(&name, mode)?;
        dir.sync()?;
        Ok(true)
    }

    /// Changes the mode of the existing file `target` (not followed) or, with
    /// `follow`, of the directory `target` (followed inside the root).
    pub fn set_mode(&mut self, target: &str, mode: u32, follow: bool) -> io::Result<()> {
        let old_mode = if follow {
            self.root.open_dir(target)?.meta()?.mode
        } else {
            self.root
                .lstat(target)?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", self.root.display(target).display()),
                    )
                })?
                .mode
        };
        self.append(Entry::Chmod {
            path: target.to_owned(),
            old_mode,
            follow,
        })?;
        chmod(&self.root, target, mode, follow)
    }

    /// Writes `content` to `target` with `mode`, atomically, backing up what
    /// was there. Returns the digest and size of what was written.
    pub fn write_file(
        &mut self,
        target: &str,
        mode: u32,
        content: &mut dyn Read,
    ) -> io::Result<(Sha256Digest, u64)> {
        let (dir, name, tmp, backup) = self.prepare_replace(target)?;
        let written = write_tmp(&dir, &tmp, mode, content)?;
        self.finish_replace(&dir, &name, &tmp, backup.as_deref())?;
        Ok(written)
    }

    /// Installs a staged (already verified) file at `target` with `mode`,
    /// atomically. When `exclusive` (no other target uses the staged file) it
    /// is hard-linked into place instead of copied, if the filesystem allows
    /// and SELinux is not enabled ([`selinux_enabled`]). Returns the digest
    /// and size when the bytes were copied (and so hashed again), `None`
    /// when linked.
    pub fn place_file(
        &mut self,
        target: &str,
        mode: u32,
        staged: &Path,
        exclusive: bool,
    ) -> io::Result<Option<(Sha256Digest, u64)>> {
        let (dir, name, tmp, backup) = self.prepare_replace(target)?;
        let tmp_os = OsString::from(&tmp);
        let copied = if exclusive && self.link_staged && dir.link_from(staged, &tmp_os).is_ok() {
            let f = dir.open_file(&tmp_os)?;
            rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(mode))?;
            f.sync_all()?;
            None
        } else {
            Some(write_tmp(&dir, &tmp, mode, &mut File::open(staged)?)?)
        };
        self.finish_replace(&dir, &name, &tmp, backup.as_deref())?;
        Ok(copied)
    }

    /// Points `target` (a symlink) at `to`, atomically, backing up what was there.
    pub fn symlink(&mut self, target: &str, to: &str) -> io::Result<()> {
        let (dir, name, tmp, backup) = self.prepare_replace(target)?;
        dir.symlink(to, OsStr::new(&tmp))?;
        self.finish_replace(&dir, &name, &tmp, backup.as_deref())
    }

    #[allow(clippy::type_complexity)]
    fn prepare_replace(
        &mut self,
        target: &str,
    ) -> io::Result<(Dir, OsString, String, Option<String>)> {
        let (dir, name) = self.ensure_parent(target)?;
        let backup = match dir.stat_at(&name)? {
            Some(m) if m.kind == Kind::Dir => {
                return Err(io::Error::other(format!(
                    "{} is a directory; refusing to replace it with a file",
                    dir.shown_child(&name).display()
                )));
            }
            Some(_) => Some(sibling(&name, "old")),
            None => None,
        };
        let tmp = sibling(&name, "new");
        self.append(Entry::Replace {
            path: target.to_owned(),
            tmp: tmp.clone(),
            backup: backup.clone(),
        })?;
        Ok((dir, name, tmp, backup))
    }

    fn finish_replace(
        &mut self,
        dir: &Dir,
        name: &OsStr,
        tmp: &str,
        backup: Option<&str>,
    ) -> io::Result<()> {
        if let Some(b) = backup {
            // Keep the old content reachable while the new one takes its
            // name, durably: a power cut must not lose both.
            let b = OsStr::new(b);
            if dir.link(name, b).is_err() {
                copy_preserving(dir, name, b)?;
            }
            dir.sync()?;
        }
        self.crash.point(&|| {
            format!(
                "about to rename {tmp} to {}",
                dir.shown_child(name).display()
            )
        });
        dir.rename(OsStr::new(tmp), name)?;
        dir.sync()
    }

    /// Records a command before running it; `undo` compensates it after a
    /// rollback (`None`: it cannot be undone). Call [`Transaction::done`]
    /// when it finished.
    pub fn exec(&mut self, what: &str, undo: Option<Vec<String>>) -> io::Result<()> {
        self.exec_with_cleanup(what, undo, None)
    }

    /// [`Transaction::exec`], with a command run at the commit.
    pub fn exec_with_cleanup(
        &mut self,
        what: &str,
        undo: Option<Vec<String>>,
        on_commit: Option<Vec<String>>,
    ) -> io::Result<()> {
        self.append(Entry::Exec {
            what: what.to_owned(),
            undo,
            on_commit,
        })
    }

    /// Keeps the current content of `target` (a regular file, or nothing)
    /// before an external program changes it in place.
    pub fn preserve(&mut self, target: &str) -> io::Result<()> {
        let (dir, name) = self.ensure_parent(target)?;
        let backup = match dir.stat_at(&name)? {
            Some(m) if m.kind == Kind::File => Some(sibling(&name, "old")),
            Some(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a regular file",
                    dir.shown_child(&name).display()
                )));
            }
            None => None,
        };
        self.append(Entry::Preserve {
            path: target.to_owned(),
            backup: backup.clone(),
        })?;
        if let Some(b) = &backup {
            // Complete or absent, never partial: copied to a temp name first.
            let tmp = sibling(&name, "new");
            let mut src = dir.open_file(&name)?;
            let meta = dir.stat_at(&name)?.map_or(0o600, |m| m.mode);
            let mut dst = dir.create_new(OsStr::new(&tmp), meta)?;
            io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            dir.rename(OsStr::new(&tmp), OsStr::new(b))?;
            dir.sync()?;
        }
        Ok(())
    }

    /// Records that an external program is about to create the directory
    /// tree `target` (which must not exist): a rollback removes it whole.
    pub fn tree(&mut self, target: &str) -> io::Result<()> {
        self.ensure_parent(target)?;
        if self.root.lstat(target)?.is_some() {
            return Err(io::Error::other(format!(
                "{} exists already",
                self.root.display(target).display()
            )));
        }
        self.append(Entry::Tree {
            path: target.to_owned(),
        })
    }

    /// Records the outcome of the last [`Transaction::exec`].
    pub fn done(&mut self, ok: bool) -> io::Result<()> {
        self.append(Entry::Done { ok, left: None })
    }

    /// Records that the last [`Transaction::exec`] failed and left `left`
    /// behind: a change that remains after the rollback.
    pub fn failed_leaving(&mut self, left: &str) -> io::Result<()> {
        self.append(Entry::Done {
            ok: false,
            left: Some(left.to_owned()),
        })
    }

    /// Marks the apply complete, then deletes backups and the journal.
    /// When the commit record cannot be written (a full disk), the apply is
    /// not committed: the transaction comes back with the error, to be
    /// rolled back. Once it is written, a failing clean-up is only reported
    /// (`Ok(Some(..))`): the next run finishes it.
    #[allow(clippy::result_large_err)]
    pub fn commit(mut self) -> Result<Option<io::Error>, (Transaction, io::Error)> {
        if let Err(e) = self.append(Entry::Commit) {
            return Err((self, e));
        }
        cleanup(&self.root, &self.entries);
        drop(self.file);
        let removed = std::fs::remove_file(&self.path)
            .and_then(|()| sync_dir(self.path.parent().unwrap_or(Path::new("/"))));
        Ok(removed.err())
    }

    /// Undoes everything journaled, newest first, and removes the journal
    /// when nothing failed.
    pub fn rollback(self) -> RollbackReport {
        let report = undo(&self.root, &self.entries);
        drop(self.file);
        if report.failed.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            let _ = sync_dir(self.path.parent().unwrap_or(Path::new("/")));
        }
        report
    }
}

fn chmod(root: &Root, target: &str, mode: u32, follow: bool) -> io::Result<()> {
    if follow {
        root.open_dir(target)?.chmod_self(mode)
    } else {
        let (dir, name) = root.parent(target)?;
        dir.chmod(&name, mode)
    }
}

/// Writes a new temp file `tmp` in `dir` with `content` and `mode`, fsynced.
fn write_tmp(
    dir: &Dir,
    tmp: &str,
    mode: u32,
    content: &mut dyn Read,
) -> io::Result<(Sha256Digest, u64)> {
    let mut f = dir.create_new(OsStr::new(tmp), 0o600)?;
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
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(mode))?;
    f.sync_all()?;
    Ok((Sha256Digest::from_bytes(hasher.finalize().into()), size))
}

fn copy_preserving(dir: &Dir, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let meta = dir
        .stat_at(from)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "vanished"))?;
    if meta.kind == Kind::Symlink {
        let link = dir.read_link(from)?;
        dir.symlink(&link.to_string_lossy(), to)
    } else {
        let mut src = dir.open_file(from)?;
        let mut dst = dir.create_new(to, meta.mode)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()
    }
}

/// Removes `name` from `dir` if it is there (a no-op otherwise, also on a
/// read-only file system).
fn remove_if_present(dir: &Dir, name: &OsStr) -> io::Result<bool> {
    if dir.stat_at(name)?.is_none() {
        return Ok(false);
    }
    match dir.unlink(name) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn cleanup(root: &Root, entries: &[Entry]) {
    for e in entries {
        match e {
            Entry::Replace { path, tmp, backup } => {
                if let Ok(Some((dir, _))) = root.parent_if_exists(path) {
                    let _ = remove_if_present(&dir, OsStr::new(tmp));
                    if let Some(b) = backup {
                        let _ = remove_if_present(&dir, OsStr::new(b));
                    }
                }
            }
            Entry::Preserve {
                path,
                backup: Some(b),
            } => {
                if let Ok(Some((dir, _))) = root.parent_if_exists(path) {
                    let _ = remove_if_present(&dir, OsStr::new(b));
                }
            }
            Entry::Exec {
                on_commit: Some(argv),
                ..
            } if root.is_host() => {
                let _ = run_quiet(argv);
            }
            _ => {}
        }
    }
}

/// Undoes one `preserve`. `Ok(true)` when the file was put back.
fn undo_preserve(root: &Root, path: &str, backup: Option<&str>) -> io::Result<bool> {
    let Some((dir, name)) = root.parent_if_exists(path)? else {
        return Ok(false);
    };
    match backup {
        Some(b) => {
            let b = OsStr::new(b);
            if dir.stat_at(b)?.is_none() {
                // Died before the copy was complete: the file is untouched.
                return Ok(false);
            }
            dir.rename(b, &name)?;
        }
        None => {
            if !remove_if_present(&dir, &name)? {
                return Ok(false);
            }
        }
    }
    dir.sync()?;
    Ok(true)
}

/// Undoes one `replace`. `Ok(true)` when the target was changed back.
fn undo_replace(root: &Root, path: &str, tmp: &str, backup: Option<&str>) -> io::Result<bool> {
    // The parent is gone (or never was): nothing of this operation is left.
    let Some((dir, name)) = root.parent_if_exists(path)? else {
        return Ok(false);
    };
    let mut changed = remove_if_present(&dir, OsStr::new(tmp))?;
    match backup {
        Some(b) => {
            let b = OsStr::new(b);
            match (dir.stat_at(b)?, dir.stat_at(&name)?) {
                // The crash came between the backup link and the rename:
                // both names are the same (old) file, and rename() between
                // two links of one inode does nothing. Drop the backup name.
                (Some(bm), Some(tm)) if bm.dev == tm.dev && bm.ino == tm.ino => {
                    dir.unlink(b)?;
                }
                (Some(_), _) => {
                    dir.rename(b, &name)?;
                    changed = true;
                }
                // The crash came before the backup was made: the target
                // still holds its old content.
                (None, _) => {}
            }
        }
        None => {
            if dir.stat_at(&name)?.is_some_and(|m| m.kind != Kind::Dir) {
                dir.unlink(&name)?;
                changed = true;
            }
        }
    }
    if changed {
        dir.sync()?;
    }
    Ok(changed)
}

/// Undoes one `mkdir`. `Ok(true)` when the directory was removed.
fn undo_mkdir(root: &Root, path: &str) -> io::Result<bool> {
    let Some((dir, name)) = root.parent_if_exists(path)? else {
        return Ok(false);
    };
    match dir.stat_at(&name)? {
        Some(m) if m.kind == Kind::Dir => {
            dir.rmdir(&name)?;
            dir.sync()?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Undoes one `chmod`. `Ok(true)` when the mode was changed back.
fn undo_chmod(root: &Root, path: &str, old_mode: u32, follow: bool) -> io::Result<bool> {
    let now = if follow {
        root.stat(path)?
    } else {
        root.lstat(path)?
    };
    match now {
        Some(m) if m.mode != old_mode && m.kind != Kind::Symlink => {
            chmod(root, path, old_mode, follow)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether a systemd manager runs here (`sd_booted(3)`).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let argv: Vec<String> = std::iter::once("systemctl")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    run_quiet(&argv)
}

fn run_quiet(argv: &[String]) -> Result<(), String> {
    let out = crate::apply::command(argv, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn undo(root: &Root, entries: &[Entry]) -> RollbackReport {
    let mut report = RollbackReport::default();
    let mut restored: BTreeSet<&str> = BTreeSet::new();
    let mut compensations: Vec<(&str, &[String])> = Vec::new();
    // Outcome of each exec: the `done` record that follows it, if any.
    let mut outcome: Vec<Option<(bool, Option<&str>)>> = vec![None; entries.len()];
    let mut last_exec = None;
    for (i, e) in entries.iter().enumerate() {
        match e {
            Entry::Exec { .. } => last_exec = Some(i),
            Entry::Done { ok, left } => {
                if let Some(j) = last_exec.take() {
                    outcome[j] = Some((*ok, left.as_deref()));
                }
            }
            _ => {}
        }
    }
    for (i, e) in entries.iter().enumerate().rev() {
        let result = match e {
            Entry::Begin { .. } | Entry::Commit | Entry::Watch { .. } | Entry::Done { .. } => {
                continue;
            }
            Entry::Exec { what, undo, .. } => {
                match (undo, outcome[i]) {
                    (Some(u), _) => compensations.push((what, u)),
                    (None, Some((false, Some(left)))) => report
                        .irreversible
                        .push(format!("{what} failed and left: {left}")),
                    (None, Some((false, None))) => report.failed_commands.push(what.clone()),
                    (None, Some((true, _))) => report.irreversible.push(what.clone()),
                    // Interrupted while it ran: it may have completed.
                    (None, None) => report
                        .irreversible
                        .push(format!("{what} (interrupted while it ran)")),
                }
                continue;
            }
            Entry::Replace { path, tmp, backup } => {
                undo_replace(root, path, tmp, backup.as_deref()).inspect(|&changed| {
                    if changed {
                        restored.insert(path);
                    }
                })
            }
            Entry::Mkdir { path } => undo_mkdir(root, path),
            Entry::Preserve { path, backup } => undo_preserve(root, path, backup.as_deref()),
            Entry::Tree { path } => match root.lstat(path) {
                Ok(Some(_)) => root.remove_tree(path).map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            },
            Entry::Chmod {
                path,
                old_mode,
                follow,
            } => undo_chmod(root, path, *old_mode, *follow).inspect(|&changed| {
                if changed {
                    restored.insert(path);
                }
            }),
        };
        match result {
            Ok(true) => report.undone += 1,
            Ok(false) => {}
            Err(err) => report.failed.push(err.to_string()),
        }
    }
    // Compensations ran on this host; below a --root nothing ran.
    if !root.is_host() {
        report
            .irreversible
            .extend(compensations.iter().map(|(what, _)| (*what).to_owned()));
        return report;
    }
    let booted = systemd_booted();
    let mut reload = false;
    let mut restart: Vec<String> = Vec::new();
    for e in entries {
        if let Entry::Watch { unit, paths } = e
            && booted
            && paths.iter().any(|p| restored.contains(p.as_str()))
        {
            reload |= paths
                .first()
                .is_some_and(|unit_file| restored.contains(unit_file.as_str()));
            if !restart.contains(unit) {
                restart.push(unit.clone());
            }
        }
    }
    let mut others = Vec::new();
    for (what, argv) in compensations {
        match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["systemctl", "daemon-reload"] => reload = true,
            ["systemctl", "restart", unit] => {
                if !restart.iter().any(|u| u == unit) {
                    restart.push(unit.to_owned());
                }
            }
            _ => others.push((what, argv)),
        }
    }
    if reload {
        match systemctl(&["daemon-reload"]) {
            Ok(()) => report.services.push("systemctl daemon-reload".into()),
            Err(e) => report.failed.push(e),
        }
    }
    for (what, argv) in others {
        match run_quiet(argv) {
            Ok(()) => {
                report.undone += 1;
                report.services.push(argv.join(" "));
            }
            Err(e) => report.failed.push(format!("{what}: {e}")),
        }
    }
    for unit in restart {
        // Only what runs: a stopped unit picks the restored files up when it starts.
        if systemctl(&["is-active", "--quiet", &unit]).is_err() {
            continue;
        }
        match systemctl(&["restart", &unit]) {
            Ok(()) => report.services.push(format!("systemctl restart {unit}")),
            Err(e) => report.failed.push(e),
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

/// Finishes whatever an interrupted run left in `state_dir` (a real path)
/// for changes below `root`: completes a committed apply's clean-up, or
/// rolls an uncommitted one back.
pub fn recover(root: &Root, state_dir: &Path) -> io::Result<Recovery> {
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
    let (bundle, version) = entries
        .iter()
        .find_map(|e| match e {
            Entry::Begin {
                name,
                version,
                journal,
                ..
            } => Some((format!("{name} {version}"), *journal)),
            _ => None,
        })
        .unwrap_or_else(|| ("unknown bundle".to_owned(), JOURNAL_VERSION));
    if version != JOURNAL_VERSION {
        return Err(io::Error::other(format!(
            "the journal {} was written by another version of install-bundle (journal format {version}, this one reads {JOURNAL_VERSION}); run `install-bundle recover` with the installer that was interrupted",
            path.display()
        )));
    }
    if entries.contains(&Entry::Commit) {
        cleanup(root, &entries);
        std::fs::remove_file(&path)?;
        sync_dir(state_dir)?;
        return Ok(Recovery::FinishedCommit);
    }
    let report = undo(root, &entries);
    if report.failed.is_empty() {
        std::fs::remove_file(&path)?;
        sync_dir(state_dir)?;
    }
    Ok(Recovery::RolledBack { bundle, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

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

    fn setup() -> (tempfile::TempDir, Root, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let state = root.path().join("state");
        fs::create_dir(&state).unwrap();
        (dir, root, state)
    }

    #[test]
    fn rollback_restores_every_change_byte_for_byte() {
        let (_d, root, state) = setup();
        let r = root.path().to_owned();
        fs::create_dir(r.join("etc")).unwrap();
        fs::write(r.join("etc/old"), b"old content").unwrap();
        fs::write(r.join("etc/mode"), b"m").unwrap();
        let before = tree(&r);
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        tx.write_file("/etc/old", 0o600, &mut &b"new"[..]).unwrap();
        tx.write_file("/a/b/c/new", 0o755, &mut &b"x"[..]).unwrap();
        tx.symlink("/etc/link", "old").unwrap();
        tx.set_mode("/etc/mode", 0o700, false).unwrap();
        tx.mkdir("/etc/d", 0o750).unwrap();
        tx.exec("dpkg -i x.deb", None).unwrap();
        tx.done(true).unwrap();
        tx.exec("false", None).unwrap();
        tx.done(false).unwrap();
        assert_ne!(tree(&r), before);
        let report = tx.rollback();
        assert_eq!(report.irreversible, vec!["dpkg -i x.deb".to_owned()]);
        assert_eq!(report.failed_commands, vec!["false".to_owned()]);
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(tree(&r), before);
        assert!(!state.join(JOURNAL_FILE).exists());
    }

    #[test]
    fn a_failed_command_alone_leaves_the_rollback_complete() {
        let (_d, root, state) = setup();
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        tx.write_file("/f", 0o644, &mut &b"new"[..]).unwrap();
        tx.exec("command: false", None).unwrap();
        tx.done(false).unwrap();
        let report = tx.rollback();
        assert!(report.complete(), "{report:?}");
        assert_eq!(report.undone, 1);
    }

    #[test]
    fn writes_through_a_planted_symlink_never_leave_the_root() {
        let (_d, root, state) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), b"host").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root.path().join("file-link"))
            .unwrap();
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        // /etc -> (absolute host path) leads nowhere inside the root: refused.
        let e = tx
            .write_file("/etc/x", 0o644, &mut &b"new"[..])
            .unwrap_err();
        assert!(e.to_string().contains("inside the root"), "{e}");
        // Once the path exists inside the root, it is used.
        let inside = root.path().join(outside.path().strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        tx.write_file("/etc/x", 0o644, &mut &b"new"[..]).unwrap();
        // A symlink where a file goes is replaced, not written through.
        tx.write_file("/file-link", 0o644, &mut &b"new"[..])
            .unwrap();
        tx.commit().map_err(|(_, e)| e).unwrap();
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"host");
        assert!(!outside.path().join("x").exists());
        assert_eq!(fs::read(inside.join("x")).unwrap(), b"new");
        assert_eq!(fs::read(root.path().join("file-link")).unwrap(), b"new");
    }

    #[test]
    fn commit_removes_backups_and_journal() {
        let (_d, root, state) = setup();
        fs::write(root.path().join("f"), b"old").unwrap();
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        tx.write_file("/f", 0o644, &mut &b"new"[..]).unwrap();
        tx.commit().map_err(|(_, e)| e).unwrap();
        assert_eq!(fs::read(root.path().join("f")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(recover(&root, &state).unwrap(), Recovery::Clean);
    }

    #[test]
    fn recover_rolls_back_an_interrupted_journal() {
        let (_d, root, state) = setup();
        fs::write(root.path().join("f"), b"old").unwrap();
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        tx.write_file("/f", 0o644, &mut &b"new"[..]).unwrap();
        tx.write_file("/g", 0o644, &mut &b"new"[..]).unwrap();
        std::mem::forget(tx); // as if killed
        // A torn last line is ignored.
        let mut j = OpenOptions::new()
            .append(true)
            .open(state.join(JOURNAL_FILE))
            .unwrap();
        j.write_all(b"{\"op\":\"mkd").unwrap();
        match recover(&root, &state).unwrap() {
            Recovery::RolledBack { bundle, report } => {
                assert_eq!(bundle, "b 1");
                assert!(report.complete(), "{report:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(root.path().join("f")).unwrap(), b"old");
        assert!(!root.path().join("g").exists());
        let names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn rolling_back_operations_that_never_happened_is_a_no_op() {
        let (_d, root, state) = setup();
        let mut tx = Transaction::begin(&root, &state, "b", "1", 1).unwrap();
        // Journaled, then died before acting: nothing on disk to undo.
        tx.append(Entry::Replace {
            path: "/nope/x".into(),
            tmp: ".x.ib-new-1".into(),
            backup: None,
        })
        .unwrap();
        tx.append(Entry::Mkdir {
            path: "/never".into(),
        })
        .unwrap();
        tx.append(Entry::Chmod {
            path: "/gone".into(),
            old_mode: 0o755,
            follow: true,
        })
        .unwrap();
        let report = tx.rollback();
        assert!(report.complete(), "{report:?}");
        assert_eq!(report.undone, 0);
    }

    #[test]
    fn journals_of_another_format_are_not_guessed_at() {
        let (_d, root, state) = setup();
        fs::write(
            state.join(JOURNAL_FILE),
            "{\"op\":\"begin\",\"name\":\"b\",\"version\":\"1\",\"serial\":1}\n{\"op\":\"mkdir\",\"path\":\"/tmp/x\"}\n",
        )
        .unwrap();
        let e = recover(&root, &state).unwrap_err();
        assert!(e.to_string().contains("another version"), "{e}");
    }
}
