//! Extracting members of upstream tar archives (`extract` steps).
//!
//! The artifact of an `extract` step is pinned by the signed manifest, but its
//! *content* is an upstream release tarball: nothing in it is trusted to
//! choose where bytes land. This module never calls the `tar` crate's
//! `unpack`/`unpack_in` and never touches the file system below `dest`; it
//! reads the (verified, staged) archive twice and hands the transaction
//! engine plain data:
//!
//! 1. [`scan`] (preflight/plan) walks every entry, applies `include` and
//!    `strip_components`, refuses hostile members, hashes every selected
//!    regular file and returns the selected [`Member`]s in archive order.
//! 2. [`for_each_file`] (apply) walks the archive again and hands the engine
//!    each selected regular file's bytes through a reader that checks them
//!    against the digest [`scan`] recorded.
//!
//! # What is refused
//!
//! Only regular files, directories, and symbolic links whose target stays
//! inside `dest` are extracted. Every *selected* member (one that matches
//! `include` and keeps at least one component after `strip_components`) is
//! refused when it is:
//!
//! - a hard link, character or block device, FIFO, or any other entry type;
//! - a symbolic link with an absolute target, a target that climbs out of
//!   `dest`, or a target that passes through another symbolic link of the
//!   same archive (`..` after a symlink is not lexical);
//! - a duplicate (the same path after `strip_components`);
//! - below a path that the same archive makes a symbolic link or a regular
//!   file (`lib -> /etc` then `lib/passwd`), whatever the order;
//! - setuid or setgid, unless the step says `allow_setuid`;
//! - a PAX sparse file (`GNU.sparse.*` records).
//!
//! Whatever `include` says, the walk stops at an entry whose name is not
//! UTF-8 or not a safe relative path ([`MemberPath::from_archive`]: no `..`,
//! not absolute, no control character), and at a GNU sparse entry (skipping
//! one safely would need its sparse map). PAX global headers (`git archive`
//! writes one) are skipped. PAX `path`, `linkpath` and `size` records and
//! GNU long names are honoured through the `tar` crate, so the names checked
//! are the names GNU tar would use.
//!
//! # Bounds
//!
//! [`ExtractLimits`] caps the decompressed bytes read, the number of entries,
//! and the bytes of headers (GNU long names, PAX records) that belong to one
//! entry, which the `tar` crate buffers in memory. The zstd window and the xz
//! decoder's memory are capped too ([`ZSTD_WINDOW_LOG_MAX`], [`XZ_MEMLIMIT`]).
//!
//! # Not done here
//!
//! Ownership, timestamps and extended attributes (file capabilities, ACLs)
//! of the archive are ignored. Whether a path below `dest` already exists on
//! the host, possibly as a symbolic link, is for the engine to handle when it
//! writes (open without following links).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::Sha256Digest;
use crate::archive::{
    Compression, DETECT_BYTES, TAR_BLOCK, TarBlock, describe_with_preview, tar_block,
};
use crate::names::MemberPath;
use crate::spec::ExtractStep;
use crate::validate::compile_include;
use sha2::{Digest as _, Sha256};

/// Default bound on the decompressed bytes read from one archive (16 GiB).
pub const MAX_DECOMPRESSED_BYTES: u64 = 16 << 30;
/// Default bound on the entries of one archive (100 000).
pub const MAX_MEMBERS: u64 = 100_000;
/// Default bound on the header bytes of one entry: its 512-byte header plus
/// GNU long name/link and PAX records, which are held in memory (1 MiB).
pub const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Largest zstd window accepted, as a power of two (27: 128 MiB, what
/// `zstd --long` uses).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Memory the xz decoder may use (256 MiB; `xz -9` needs 65 MiB).
pub const XZ_MEMLIMIT: u64 = 256 << 20;
/// Longest symbolic link target accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_SYMLINK_TARGET_LEN: usize = 4096;

/// Longest member name quoted in an error message.
const MAX_QUOTED_NAME: usize = 256;
/// Size of the copy buffer used to hash and drain members.
const BUF_SIZE: usize = 256 * 1024;

/// Bounds that stop decompression bombs and memory exhaustion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Decompressed bytes read from the archive, at most.
    pub max_bytes: u64,
    /// Entries in the archive (selected or not), at most.
    pub max_members: u64,
    /// Header bytes (header block, long names, PAX records) of one entry, at most.
    pub max_header_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_DECOMPRESSED_BYTES,
            max_members: MAX_MEMBERS,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// What a selected member is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum MemberKind {
    /// A regular file.
    File {
        /// Permission bits from the archive (`& 0o7777`).
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// Digest of the bytes, computed by [`scan`].
        sha256: Sha256Digest,
    },
    /// A directory.
    Dir {
        /// Permission bits from the archive (`& 0o7777`).
        mode: u32,
    },
    /// A symbolic link; its target is relative and resolves inside `dest`.
    Symlink {
        /// The target, exactly as stored.
        target: String,
    },
}

impl MemberKind {
    fn describe(&self) -> &'static str {
        match self {
            MemberKind::File { .. } => "regular file",
            MemberKind::Dir { .. } => "directory",
            MemberKind::Symlink { .. } => "symbolic link",
        }
    }
}

/// One selected member of an archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Where it goes, relative to `dest` (after `strip_components`).
    pub path: MemberPath,
    /// Its name as stored in the archive (for messages).
    pub stored: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: MemberKind,
}

/// Why an archive could not be scanned or streamed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Reading the archive failed, or it is damaged or truncated.
    #[error("artifact {artifact} ({}): {source}", path.display())]
    Io {
        /// The artifact.
        artifact: String,
        /// The staged archive file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is none of tar, tar.gz, tar.xz, tar.zst.
    #[error(
        "artifact {artifact} ({}) is not a tar, tar.gz, tar.xz or tar.zst archive: it is {found}",
        path.display()
    )]
    NotAnArchive {
        /// The artifact.
        artifact: String,
        /// The staged archive file.
        path: PathBuf,
        /// What it looks like instead ([`crate::archive::describe`]), with
        /// its first bytes.
        found: String,
    },
    /// A bound of [`ExtractLimits`] was exceeded.
    #[error("artifact {artifact} ({}): {reason}; refusing a possible decompression bomb", path.display())]
    TooLarge {
        /// The artifact.
        artifact: String,
        /// The staged archive file.
        path: PathBuf,
        /// Which bound.
        reason: String,
    },
    /// A member is hostile or unsupported.
    #[error("artifact {artifact}: member {member:?} refused: {reason}")]
    Refused {
        /// The artifact.
        artifact: String,
        /// The member's name as stored in the archive.
        member: String,
        /// Why.
        reason: String,
    },
    /// The step's `include` globs do not compile.
    #[error("artifact {artifact}: invalid include globs: {reason}")]
    InvalidInclude {
        /// The artifact.
        artifact: String,
        /// Why.
        reason: String,
    },
    /// No member matched the step's `include` globs (a typo, usually).
    #[error("include globs {globs:?} matched no member of {artifact}")]
    IncludeMatchedNothing {
        /// The artifact.
        artifact: String,
        /// The globs.
        globs: Vec<String>,
    },
    /// Nothing is left to extract.
    #[error(
        "artifact {artifact}: no member is left to extract (the archive is empty, or \
         strip_components {strip_components} removes every path)"
    )]
    NothingToExtract {
        /// The artifact.
        artifact: String,
        /// The step's `strip_components`.
        strip_components: u32,
    },
    /// The second pass saw different content than [`scan`].
    #[error("artifact {artifact}: member {member:?} changed since it was scanned: {reason}")]
    Changed {
        /// The artifact.
        artifact: String,
        /// The member's name as stored in the archive.
        member: String,
        /// What differs.
        reason: String,
    },
    /// The callback of [`for_each_file`] failed.
    #[error("artifact {artifact}: writing member {member:?}: {source}")]
    Write {
        /// The artifact.
        artifact: String,
        /// The member's name as stored in the archive.
        member: String,
        /// The callback's error.
        source: io::Error,
    },
}

/// Pass 1: walks every entry of `archive`, applies the step's `include` and
/// `strip_components`, refuses hostile members, hashes every selected regular
/// file, and returns the selected members in archive order, with the default
/// [`ExtractLimits`].
///
/// Parent directories of selected members are not returned unless the
/// archive holds them and they are selected themselves; the engine creates
/// missing parents.
pub fn scan(
    archive: &Path,
    artifact: &str,
    step: &ExtractStep,
) -> Result<Vec<Member>, ExtractError> {
    scan_with_limits(archive, artifact, step, &ExtractLimits::default())
}

/// [`scan`] with explicit bounds.
pub fn scan_with_limits(
    archive: &Path,
    artifact: &str,
    step: &ExtractStep,
    limits: &ExtractLimits,
) -> Result<Vec<Member>, ExtractError> {
    let ctx = Ctx {
        artifact,
        path: archive,
    };
    let mut selector = Selector::new(&ctx, step)?;
    let mut members: Vec<Member> = Vec::new();
    let mut index: HashMap<MemberPath, usize> = HashMap::new();
    let mut buf = vec![0u8; BUF_SIZE];

    walk(&ctx, limits, &mut |entry| {
        let Some((stored, path)) = selector.select(entry)? else {
            return Ok(Flow::Continue);
        };
        let kind = member_kind(&ctx, step, entry, &stored, &mut buf)?;
        if let Some(&earlier) = index.get(&path) {
            let earlier = &members[earlier];
            return Err(ctx
                .refuse(
                    &stored,
                    format!(
                        "duplicate member: {path} was already given by {:?}",
                        earlier.stored
                    ),
                )
                .into());
        }
        index.insert(path.clone(), members.len());
        members.push(Member { path, stored, kind });
        Ok(Flow::Continue)
    })?;

    if let Some(globs) = &step.include
        && !selector.matched_any
    {
        return Err(ExtractError::IncludeMatchedNothing {
            artifact: artifact.to_owned(),
            globs: globs.clone(),
        });
    }
    if members.is_empty() {
        return Err(ExtractError::NothingToExtract {
            artifact: artifact.to_owned(),
            strip_components: step.strip_components,
        });
    }
    check_tree(&ctx, step, &members)?;
    Ok(members)
}

/// Pass 2: walks `archive` again and calls `f` once for each regular file of
/// `members` (what [`scan`] returned for the same archive and step, or a
/// subset of it), in archive order, with a reader over exactly that member's
/// bytes. Uses the default [`ExtractLimits`].
///
/// The reader checks the bytes against the size and digest [`scan`]
/// recorded: when they differ, the read that reaches the end fails (so an
/// `io::copy` in `f` fails) and this returns [`ExtractError::Changed`]. Bytes
/// `f` leaves unread are drained and checked all the same. `f` must write to
/// a staging location, since a mismatch is only known at the end of a member.
/// A member of `members` that the second walk does not find, or finds with a
/// different type, mode or size, is also [`ExtractError::Changed`].
pub fn for_each_file(
    archive: &Path,
    artifact: &str,
    step: &ExtractStep,
    members: &[Member],
    f: &mut dyn FnMut(&Member, &mut dyn Read) -> io::Result<()>,
) -> Result<(), ExtractError> {
    for_each_file_with_limits(
        archive,
        artifact,
        step,
        members,
        &ExtractLimits::default(),
        f,
    )
}

/// [`for_each_file`] with explicit bounds (use the ones given to
/// [`scan_with_limits`]).
pub fn for_each_file_with_limits(
    archive: &Path,
    artifact: &str,
    step: &ExtractStep,
    members: &[Member],
    limits: &ExtractLimits,
    f: &mut dyn FnMut(&Member, &mut dyn Read) -> io::Result<()>,
) -> Result<(), ExtractError> {
    let ctx = Ctx {
        artifact,
        path: archive,
    };
    let mut selector = Selector::new(&ctx, step)?;
    let wanted: HashMap<&MemberPath, &Member> = members
        .iter()
        .filter(|m| matches!(m.kind, MemberKind::File { .. }))
        .map(|m| (&m.path, m))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut done: HashSet<&MemberPath> = HashSet::new();

    walk(&ctx, limits, &mut |entry| {
        let Some((stored, path)) = selector.select(entry)? else {
            return Ok(Flow::Continue);
        };
        let Some(&member) = wanted.get(&path) else {
            return Ok(Flow::Continue);
        };
        let MemberKind::File { mode, size, sha256 } = member.kind else {
            unreachable!("only regular files are wanted");
        };
        let changed = |reason: String| ExtractError::Changed {
            artifact: artifact.to_owned(),
            member: quote(&member.stored),
            reason,
        };
        if done.contains(&path) {
            return Err(changed("it appears twice".into()).into());
        }
        if stored != member.stored {
            return Err(changed(format!("its path is now given by {:?}", quote(&stored))).into());
        }
        let etype = entry.header().entry_type();
        if !(etype.is_file() || etype == tar::EntryType::Continuous) {
            return Err(changed(format!(
                "it is now a {}",
                crate::archive::describe_entry_type(etype)
            ))
            .into());
        }
        let now_mode = entry.header().mode().map(|m| m & 0o7777).ok();
        if now_mode != Some(mode) {
            return Err(changed(format!(
                "its mode is now {}, was {mode:04o}",
                now_mode.map_or_else(|| "unreadable".to_owned(), |m| format!("{m:04o}"))
            ))
            .into());
        }
        if entry.size() != size {
            return Err(changed(format!("it is now {} bytes, was {size}", entry.size())).into());
        }

        let mut reader = VerifyingReader {
            inner: entry,
            hasher: Sha256::new(),
            read: 0,
            size,
            sha256,
            failure: None,
            verified: false,
        };
        let result = f(member, &mut reader);
        if result.is_ok() && reader.failure.is_none() && !reader.verified {
            // Check what `f` left unread; a failure is recorded in `reader`.
            let _ = io::copy(&mut reader, &mut io::sink());
        }
        match reader.failure.take() {
            Some(Failure::Read(e)) => return Err(Fail::Io(e)),
            Some(Failure::Short(read)) => {
                return Err(changed(format!("it ends after {read} of {size} bytes")).into());
            }
            Some(Failure::Digest(actual)) => {
                return Err(changed(format!("its sha256 is {actual}, was {sha256}")).into());
            }
            None => {}
        }
        if let Err(source) = result {
            return Err(ExtractError::Write {
                artifact: artifact.to_owned(),
                member: quote(&member.stored),
                source,
            }
            .into());
        }
        debug_assert!(reader.verified);
        done.insert(&member.path);
        Ok(if done.len() == wanted.len() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;

    if let Some(missing) = members
        .iter()
        .find(|m| matches!(m.kind, MemberKind::File { .. }) && !done.contains(&m.path))
    {
        return Err(ExtractError::Changed {
            artifact: artifact.to_owned(),
            member: quote(&missing.stored),
            reason: "it is no longer in the archive".into(),
        });
    }
    Ok(())
}

/// Names the artifact and archive in errors.
struct Ctx<'a> {
    artifact: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn refuse(&self, stored: &str, reason: impl Into<String>) -> ExtractError {
        ExtractError::Refused {
            artifact: self.artifact.to_owned(),
            member: quote(stored),
            reason: reason.into(),
        }
    }

    fn io(&self, source: io::Error) -> ExtractError {
        ExtractError::Io {
            artifact: self.artifact.to_owned(),
            path: self.path.to_owned(),
            source,
        }
    }

    fn too_large(&self, reason: String) -> ExtractError {
        ExtractError::TooLarge {
            artifact: self.artifact.to_owned(),
            path: self.path.to_owned(),
            reason,
        }
    }
}

/// A member name cut to a length fit for a message.
fn quote(name: &str) -> String {
    if name.len() <= MAX_QUOTED_NAME {
        return name.to_owned();
    }
    let mut end = MAX_QUOTED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

/// Decides which entries are selected, and where they go.
struct Selector<'a> {
    ctx: &'a Ctx<'a>,
    include: Option<globset::GlobSet>,
    strip: usize,
    /// Whether any entry matched `include`.
    matched_any: bool,
}

impl<'a> Selector<'a> {
    fn new(ctx: &'a Ctx<'a>, step: &ExtractStep) -> Result<Self, ExtractError> {
        let include = match &step.include {
            Some(globs) => {
                Some(
                    compile_include(globs).map_err(|reason| ExtractError::InvalidInclude {
                        artifact: ctx.artifact.to_owned(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            ctx,
            include,
            strip: step.strip_components as usize,
            matched_any: false,
        })
    }

    /// The entry's name as stored and its path below `dest`, or `None` when
    /// it is not selected. Refuses names that cannot be parsed, and GNU
    /// sparse entries, whether selected or not.
    fn select<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<Option<(String, MemberPath)>, ExtractError> {
        let raw = entry.path_bytes();
        let Ok(stored) = std::str::from_utf8(&raw) else {
            return Err(self.ctx.refuse(
                &String::from_utf8_lossy(&raw),
                "its name is not valid UTF-8",
            ));
        };
        let parsed = match MemberPath::from_archive(stored) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(self
                    .ctx
                    .refuse(stored, format!("unsafe name: {}", e.reason)));
            }
        };
        if entry.header().entry_type().is_gnu_sparse() {
            return Err(self
                .ctx
                .refuse(stored, "it is a GNU sparse file, which is not supported"));
        }
        if let Some(set) = &self.include {
            let listed = stored.strip_suffix('/').unwrap_or(stored);
            if !(set.is_match(parsed.as_str()) || set.is_match(listed)) {
                return Ok(None);
            }
            self.matched_any = true;
        }
        let Some(rest) = strip_components(stored, self.strip) else {
            return Ok(None);
        };
        match MemberPath::from_archive(rest) {
            Ok(Some(path)) => Ok(Some((stored.to_owned(), path))),
            Ok(None) => Ok(None),
            // The whole name was checked above; what is left of it is as safe.
            Err(e) => Err(self
                .ctx
                .refuse(stored, format!("unsafe name: {}", e.reason))),
        }
    }
}

/// What is left of the stored member name `name` after its first `n`
/// components, counted as GNU tar's `--strip-components` counts them: every
/// `/` (a run of them counting once) ends a component, so a leading `.` is a
/// component like any other (`./dist/pkg/spf` without 1 is `dist/pkg/spf`),
/// and the `./` of an archive's root entry is one. `None` when the name has
/// no more than `n` components (GNU tar skips such members); the remainder
/// may be empty (a directory `dist/` without 1), which the caller skips too.
pub fn strip_components(name: &str, n: usize) -> Option<&str> {
    let mut rest = name.trim_start_matches('/');
    for _ in 0..n {
        let slash = rest.find('/')?;
        rest = rest[slash..].trim_start_matches('/');
    }
    Some(rest)
}

/// Checks a selected entry's type and mode; hashes a regular file.
fn member_kind<R: Read>(
    ctx: &Ctx<'_>,
    step: &ExtractStep,
    entry: &mut tar::Entry<'_, R>,
    stored: &str,
    buf: &mut [u8],
) -> Result<MemberKind, Fail> {
    use tar::EntryType as T;
    let etype = entry.header().entry_type();
    let mode = || -> Result<u32, ExtractError> {
        let mode = entry
            .header()
            .mode()
            .map_err(|_| ctx.refuse(stored, "its mode field is not a number"))?
            & 0o7777;
        if mode & 0o6000 != 0 && !step.allow_setuid {
            return Err(ctx.refuse(
                stored,
                format!(
                    "mode {mode:04o} sets setuid/setgid bits; add \"allow_setuid\": true to the \
                     step to permit"
                ),
            ));
        }
        Ok(mode)
    };
    match etype {
        // A regular file's type with a name ending in `/` is a directory: how
        // V7 and old BSD tars store directories, and how GNU tar reads them.
        T::Regular | T::Continuous if stored.ends_with('/') => {
            Ok(MemberKind::Dir { mode: mode()? })
        }
        T::Regular | T::Continuous => {
            let mode = mode()?;
            if let Some(pax) = entry.pax_extensions()? {
                let sparse = pax
                    .filter_map(Result::ok)
                    .any(|ext| ext.key_bytes().starts_with(b"GNU.sparse."));
                if sparse {
                    return Err(ctx
                        .refuse(stored, "it is a PAX sparse file, which is not supported")
                        .into());
                }
            }
            let size = entry.size();
            let mut hasher = Sha256::new();
            loop {
                let n = match entry.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                hasher.update(&buf[..n]);
            }
            // A short read means a truncated archive; `walk` reports it.
            Ok(MemberKind::File {
                mode,
                size,
                sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
            })
        }
        T::Directory => Ok(MemberKind::Dir { mode: mode()? }),
        T::Symlink => {
            let target = symlink_target(ctx, step, entry, stored)?;
            Ok(MemberKind::Symlink { target })
        }
        T::Link => {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            Err(ctx
                .refuse(
                    stored,
                    format!(
                        "it is a hard link (to {:?}); hard links are not extracted",
                        quote(&target)
                    ),
                )
                .into())
        }
        T::Char | T::Block | T::Fifo => Err(ctx
            .refuse(
                stored,
                format!(
                    "it is a {}; only regular files, directories and symbolic links are extracted",
                    crate::archive::describe_entry_type(etype)
                ),
            )
            .into()),
        other => Err(ctx
            .refuse(
                stored,
                format!(
                    "it has unsupported entry type {:?} ({}); only regular files, directories and \
                     symbolic links are extracted",
                    char::from(other.as_byte()),
                    crate::archive::describe_entry_type(other)
                ),
            )
            .into()),
    }
}

/// A symbolic link's target, checked on its own (its resolution against the
/// other members is checked by [`check_tree`]).
fn symlink_target<R: Read>(
    ctx: &Ctx<'_>,
    step: &ExtractStep,
    entry: &tar::Entry<'_, R>,
    stored: &str,
) -> Result<String, ExtractError> {
    let Some(raw) = entry.link_name_bytes() else {
        return Err(ctx.refuse(stored, "it is a symbolic link without a target"));
    };
    let Ok(target) = std::str::from_utf8(&raw) else {
        return Err(ctx.refuse(stored, "its symbolic link target is not valid UTF-8"));
    };
    if target.is_empty() {
        return Err(ctx.refuse(stored, "it is a symbolic link with an empty target"));
    }
    if target.len() > MAX_SYMLINK_TARGET_LEN {
        return Err(ctx.refuse(
            stored,
            format!("its symbolic link target is longer than {MAX_SYMLINK_TARGET_LEN} bytes"),
        ));
    }
    if target.chars().any(char::is_control) {
        return Err(ctx.refuse(
            stored,
            format!(
                "its symbolic link target {:?} contains a control character",
                quote(target)
            ),
        ));
    }
    if target.starts_with('/') {
        return Err(ctx.refuse(
            stored,
            format!(
                "it is a symbolic link to the absolute path {:?}; only relative targets inside \
                 {} are allowed",
                quote(target),
                step.dest
            ),
        ));
    }
    Ok(target.to_owned())
}

/// Checks that need every member: nothing is written below a symbolic link
/// or regular file of the same archive, and every symbolic link resolves
/// inside `dest` without passing through another one.
fn check_tree(ctx: &Ctx<'_>, step: &ExtractStep, members: &[Member]) -> Result<(), ExtractError> {
    let kinds: HashMap<&str, &MemberKind> =
        members.iter().map(|m| (m.path.as_str(), &m.kind)).collect();
    for m in members {
        let p = m.path.as_str();
        for (slash, _) in p.match_indices('/') {
            let parent = &p[..slash];
            match kinds.get(parent) {
                Some(MemberKind::Symlink { target }) => {
                    return Err(ctx.refuse(
                        &m.stored,
                        format!(
                            "its parent {parent:?} is a symbolic link (to {:?}) in the same \
                             archive; nothing is written through a symbolic link",
                            quote(target)
                        ),
                    ));
                }
                Some(kind @ MemberKind::File { .. }) => {
                    return Err(ctx.refuse(
                        &m.stored,
                        format!(
                            "its parent {parent:?} is a {} in the same archive",
                            kind.describe()
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    for m in members {
        if let MemberKind::Symlink { target } = &m.kind {
            let is_symlink = |p: &str| matches!(kinds.get(p), Some(MemberKind::Symlink { .. }));
            let why = match resolve_symlink(&m.path, target, is_symlink) {
                Ok(()) => continue,
                Err(Escape::Outside) => format!("points outside {}", step.dest),
                Err(Escape::Through(prefix)) => format!(
                    "resolves through {prefix:?}, itself a symbolic link in the same archive"
                ),
            };
            return Err(ctx.refuse(
                &m.stored,
                format!("it is a symbolic link to {:?}, which {why}", quote(target)),
            ));
        }
    }
    Ok(())
}

/// Why a symbolic link's target is refused.
#[derive(Debug, PartialEq, Eq)]
enum Escape {
    /// It climbs above `dest`.
    Outside,
    /// It continues below this symbolic link of the same archive.
    Through(String),
}

/// Resolves a relative symlink `target` lexically against the directory of
/// `link` (both relative to `dest`). Fails when the resolution climbs above
/// `dest`, or continues below a path for which `is_symlink` is true (after a
/// symlink, `..` is no longer lexical). The resolved path may be `dest`
/// itself, or a symlink (whose own target is checked in turn).
fn resolve_symlink(
    link: &MemberPath,
    target: &str,
    is_symlink: impl Fn(&str) -> bool,
) -> Result<(), Escape> {
    let mut stack: Vec<&str> = link.components().collect();
    stack.pop();
    let comps: Vec<&str> = target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for (i, c) in comps.iter().enumerate() {
        if *c == ".." {
            if stack.pop().is_none() {
                return Err(Escape::Outside);
            }
        } else {
            stack.push(c);
        }
        if i + 1 < comps.len() && !stack.is_empty() {
            let prefix = stack.join("/");
            if is_symlink(&prefix) {
                return Err(Escape::Through(prefix));
            }
        }
    }
    Ok(())
}

/// Whether [`walk`] goes on after an entry.
enum Flow {
    Continue,
    Stop,
}

/// An error inside [`walk`]: I/O errors are mapped by [`walk`], which knows
/// whether a bound was hit.
enum Fail {
    Io(io::Error),
    Extract(ExtractError),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl From<ExtractError> for Fail {
    fn from(e: ExtractError) -> Self {
        Fail::Extract(e)
    }
}

/// Which bound a [`MeteredReader`] hit.
#[derive(Debug, Clone, Copy)]
enum Hit {
    Bytes,
    Header,
}

/// Counts the decompressed bytes read, and the header bytes of the entry
/// being parsed.
#[derive(Debug)]
struct Meter {
    total: Cell<u64>,
    max_total: u64,
    /// Bytes the `tar` crate may still read before it returns the next entry;
    /// `None` while an entry's data is read.
    header_budget: Cell<Option<u64>>,
    hit: Cell<Option<Hit>>,
}

/// The decompressed stream, metered.
struct MeteredReader {
    inner: Box<dyn Read>,
    meter: Rc<Meter>,
}

impl Read for MeteredReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let m = &self.meter;
        if let Some(hit) = m.hit.get() {
            return Err(limit_error(hit));
        }
        // Ask for at most one byte past a bound, so that going past it is seen
        // without reading (and buffering) much more.
        let mut allow = m.max_total.saturating_sub(m.total.get()).saturating_add(1);
        if let Some(budget) = m.header_budget.get() {
            allow = allow.min(budget.saturating_add(1));
        }
        let len = buf.len().min(usize::try_from(allow).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        let total = m.total.get() + n as u64;
        m.total.set(total);
        if total > m.max_total {
            m.hit.set(Some(Hit::Bytes));
            return Err(limit_error(Hit::Bytes));
        }
        if let Some(budget) = m.header_budget.get() {
            match budget.checked_sub(n as u64) {
                Some(left) => m.header_budget.set(Some(left)),
                None => {
                    m.hit.set(Some(Hit::Header));
                    return Err(limit_error(Hit::Header));
                }
            }
        }
        Ok(n)
    }
}

fn limit_error(hit: Hit) -> io::Error {
    io::Error::other(match hit {
        Hit::Bytes => "decompressed size limit exceeded",
        Hit::Header => "header size limit exceeded",
    })
}

/// Opens `path`, recognizes the compression by content, and returns the
/// decompressed tar stream with its compression. The stream is recognized
/// by reading it: its first (decompressed) block must be a tar header with a
/// right checksum (any tar format; V7 headers carry no magic) or the zero
/// block of an empty archive. Anything else is [`ExtractError::NotAnArchive`],
/// which says what the content looks like (an HTML page, JSON, text...).
fn open_archive(ctx: &Ctx<'_>) -> Result<(Box<dyn Read>, Option<Compression>), ExtractError> {
    let file = File::open(ctx.path).map_err(|e| ctx.io(e))?;
    let mut buffered = BufReader::with_capacity(BUF_SIZE, file);
    let head = fill(&mut buffered, DETECT_BYTES).map_err(|e| ctx.io(e))?;
    let not_an_archive = |found: String| ExtractError::NotAnArchive {
        artifact: ctx.artifact.to_owned(),
        path: ctx.path.to_owned(),
        found,
    };
    let Some(compression) = Compression::detect(&head) else {
        let reader = io::Cursor::new(head).chain(buffered);
        let (first, reader) = peek_block(reader).map_err(|e| ctx.io(e))?;
        return match tar_block(&first) {
            TarBlock::Header | TarBlock::Zero => Ok((Box::new(reader), None)),
            _ => Err(not_an_archive(describe_with_preview(&first))),
        };
    };
    let reader = io::Cursor::new(head).chain(buffered);
    let decoder: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(GzipMembers::new(BufReader::new(reader))),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMLIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| ctx.io(io::Error::other(e)))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(
                BufReader::new(reader),
                stream,
            ))
        }
        Compression::Zstd => {
            let mut z = zstd::stream::read::Decoder::with_buffer(BufReader::new(reader))
                .map_err(|e| ctx.io(e))?;
            z.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| ctx.io(e))?;
            Box::new(z)
        }
    };
    let (first, reader) = peek_block(decoder).map_err(|e| {
        not_an_archive(format!(
            "{compression}-compressed data that cannot be decompressed ({e})"
        ))
    })?;
    match tar_block(&first) {
        TarBlock::Header | TarBlock::Zero => Ok((Box::new(reader), Some(compression))),
        _ if first.is_empty() => Err(not_an_archive(format!(
            "{compression}-compressed data that decompresses to nothing (0 bytes)"
        ))),
        _ => Err(not_an_archive(format!(
            "{compression}-compressed data holding {}",
            describe_with_preview(&first)
        ))),
    }
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
fn fill(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    r.by_ref().take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// A reader that yields bytes already read, then the rest.
type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The first tar block of `r`, and a reader that yields it again.
fn peek_block<R: Read>(mut r: R) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let first = fill(&mut r, TAR_BLOCK)?;
    Ok((first.clone(), io::Cursor::new(first).chain(r)))
}

/// Decompresses every member of a gzip file, as `gzip -d` does: members
/// follow one another; after the last one only zero bytes may follow (tar
/// pads with them); anything else is an error, as it is for `gzip -d` (which
/// exits 2, "trailing garbage ignored", and so makes `tar -xzf` fail).
struct GzipMembers<R: BufRead> {
    member: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(r: R) -> Self {
        Self {
            member: Some(flate2::bufread::GzDecoder::new(r)),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(member) = self.member.as_mut() else {
                return Ok(0);
            };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member ended (its CRC and length checked): what follows?
            let mut inner = self.member.take().expect("a member").into_inner();
            let next = inner.fill_buf()?;
            match next.first() {
                None => return Ok(0),
                Some(0x1f) => self.member = Some(flate2::bufread::GzDecoder::new(inner)),
                Some(0) => loop {
                    let rest = inner.fill_buf()?;
                    if rest.is_empty() {
                        return Ok(0);
                    }
                    if rest.iter().any(|&b| b != 0) {
                        return Err(trailing_garbage());
                    }
                    let len = rest.len();
                    inner.consume(len);
                },
                Some(_) => return Err(trailing_garbage()),
            }
        }
    }
}

fn trailing_garbage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the gzip data is followed by bytes that are neither another gzip member nor zero \
         padding (gzip -d reports \"trailing garbage\" and fails)",
    )
}

/// Walks the entries of the archive at `ctx.path` under `limits`, calling
/// `visit` for each (PAX global headers excepted), then reading whatever
/// `visit` left of the entry's data, so that only headers are read while the
/// `tar` crate looks for the next entry.
fn walk(
    ctx: &Ctx<'_>,
    limits: &ExtractLimits,
    visit: &mut dyn FnMut(&mut tar::Entry<'_, MeteredReader>) -> Result<Flow, Fail>,
) -> Result<(), ExtractError> {
    let meter = Rc::new(Meter {
        total: Cell::new(0),
        max_total: limits.max_bytes,
        header_budget: Cell::new(None),
        hit: Cell::new(None),
    });
    let (inner, compression) = open_archive(ctx)?;
    let reader = MeteredReader {
        inner,
        meter: Rc::clone(&meter),
    };
    let map = |fail: Fail| -> ExtractError {
        match fail {
            Fail::Extract(e) => e,
            Fail::Io(e) => match meter.hit.get() {
                Some(Hit::Bytes) => ctx.too_large(format!(
                    "it decompresses to more than {} bytes",
                    limits.max_bytes
                )),
                Some(Hit::Header) => ctx.too_large(format!(
                    "an entry's headers (long name or PAX records) exceed {} bytes",
                    limits.max_header_bytes
                )),
                None => ctx.io(e),
            },
        }
    };

    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(|e| map(e.into()))?;
    let mut count: u64 = 0;
    let mut sink_buf = vec![0u8; 64 * 1024];
    loop {
        meter.header_budget.set(Some(limits.max_header_bytes));
        let next = entries.next();
        meter.header_budget.set(None);
        let mut entry = match next {
            None => break,
            Some(Err(e)) => return Err(map(e.into())),
            Some(Ok(entry)) => entry,
        };
        count += 1;
        if count > limits.max_members {
            return Err(ctx.too_large(format!("it has more than {} entries", limits.max_members)));
        }
        if entry.header().entry_type() != tar::EntryType::XGlobalHeader {
            match visit(&mut entry) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Ok(()),
                Err(fail) => return Err(map(fail)),
            }
        }
        // Drain the rest of the data (GNU sparse entries never get here).
        loop {
            match entry.read(&mut sink_buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(map(e.into())),
            }
        }
        let end = entry.raw_file_position().saturating_add(entry.size());
        if meter.total.get() < end {
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            return Err(ctx.io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the archive is truncated: it ends inside member {:?}",
                    quote(&name)
                ),
            )));
        }
    }
    // The end of the tar archive. A compressed stream is read to its end, as
    // `tar -x` through `gzip -d`, `xz -d` or `zstd -d` does: the compressor's
    // own checks (CRC, xz check, zstd checksum) of the last bytes run, and
    // data after the last member, stream or frame is refused as those tools
    // refuse it (zero padding after gzip and xz is fine). After a plain tar,
    // GNU tar ignores whatever follows the end-of-archive blocks; so does this.
    if let Some(compression) = compression {
        let mut reader = archive.into_inner();
        loop {
            match reader.read(&mut sink_buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if meter.hit.get().is_some() => return Err(map(e.into())),
                Err(e) => {
                    return Err(ctx.io(io::Error::new(
                        e.kind(),
                        format!(
                            "the {compression} data after the end of the tar archive cannot be \
                             read: {e}"
                        ),
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Why a [`VerifyingReader`] failed.
enum Failure {
    /// Reading the archive failed.
    Read(io::Error),
    /// The member ended after this many bytes.
    Short(u64),
    /// The member's digest differs from the first pass.
    Digest(Sha256Digest),
}

/// Yields a member's bytes, and fails at the end when they are not the ones
/// [`scan`] hashed.
struct VerifyingReader<'e, R: Read> {
    inner: &'e mut R,
    hasher: Sha256,
    read: u64,
    size: u64,
    sha256: Sha256Digest,
    failure: Option<Failure>,
    verified: bool,
}

impl<R: Read> Read for VerifyingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the member failed verification",
            ));
        }
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failure = Some(Failure::Read(e));
                }
                return Err(copy);
            }
        };
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.read += n as u64;
            return Ok(n);
        }
        if self.read != self.size {
            self.failure = Some(Failure::Short(self.read));
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("member ends after {} of {} bytes", self.read, self.size),
            ));
        }
        let actual = Sha256Digest::from_bytes(std::mem::take(&mut self.hasher).finalize().into());
        if actual != self.sha256 {
            self.failure = Some(Failure::Digest(actual));
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("member sha256 is {actual}, expected {}", self.sha256),
            ));
        }
        self.verified = true;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    fn p(s: &str) -> MemberPath {
        MemberPath::from_str(s).unwrap()
    }

    #[test]
    fn strip_components_counts_like_gnu_tar() {
        assert_eq!(strip_components("bin/ctr", 1), Some("ctr"));
        assert_eq!(strip_components("a/b/c", 2), Some("c"));
        assert_eq!(strip_components("bin", 1), None);
        assert_eq!(strip_components("a/b", 2), None);
        assert_eq!(strip_components("a/b", 0), Some("a/b"));
        // A leading "." is a component, as in GNU tar.
        assert_eq!(strip_components("./dist/pkg/spf", 1), Some("dist/pkg/spf"));
        assert_eq!(strip_components("./bridge", 1), Some("bridge"));
        assert_eq!(strip_components("./", 1), Some(""));
        assert_eq!(strip_components("./", 2), None);
        assert_eq!(strip_components(".", 1), None);
        assert_eq!(strip_components("dist/", 1), Some(""));
        assert_eq!(strip_components("././x", 1), Some("./x"));
        assert_eq!(strip_components("a//b/c", 1), Some("b/c"));
    }

    #[test]
    fn symlink_resolution_is_lexical_and_bounded() {
        let none = |_: &str| false;
        assert!(resolve_symlink(&p("a/link"), "../b", none).is_ok());
        assert!(resolve_symlink(&p("a/link"), "..", none).is_ok());
        assert_eq!(
            resolve_symlink(&p("a/link"), "../..", none),
            Err(Escape::Outside)
        );
        assert!(resolve_symlink(&p("link"), "x/../../y", none).is_err());
        assert!(resolve_symlink(&p("link"), "./x//y/.", none).is_ok());
        let b_is_link = |s: &str| s == "b";
        assert_eq!(
            resolve_symlink(&p("link"), "b/../x", b_is_link),
            Err(Escape::Through("b".into()))
        );
        assert!(resolve_symlink(&p("link"), "b", b_is_link).is_ok());
    }
}
