//! The plan: for every step, the concrete operations it needs on this host
//! and whether each changes anything (absent / different / same by sha256,
//! mode, directory exists, package version installed, unit enabled...).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bundle_spec::Sha256Digest;
use bundle_spec::names::{ArtifactName, TargetPath};
use bundle_spec::spec::{Manifest, Step};
use bundle_spec::template;
use serde::Serialize;

use crate::differential;
use crate::extract::{self, Member, MemberKind};
use crate::images;
use crate::paths::{CREATED_DIR_MODE, Kind, Root};
use crate::stage::Staging;
use crate::units;

/// What an operation does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change", content = "from")]
pub enum Change {
    /// The target does not exist yet.
    Create,
    /// The target exists with other content.
    Update,
    /// Same content, other permission bits (the old ones).
    Mode(u32),
    /// Nothing to do.
    Unchanged,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A verified artifact in the staging directory.
    Staged(PathBuf),
    /// Content from the manifest (rendered templates, generated files).
    #[serde(skip)]
    Inline(Vec<u8>),
    /// A member of the extract step's archive.
    Member,
}

/// Whether a command runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision", content = "reason")]
pub enum Decision {
    /// It runs.
    Run(String),
    /// It does not.
    Skip(String),
}

/// A .deb to install.
#[derive(Debug, Clone, Serialize)]
pub struct DebPlan {
    /// The artifact.
    pub artifact: ArtifactName,
    /// Its staged file.
    pub path: PathBuf,
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// `Installed-Size`, in bytes.
    pub installed_size: u64,
    /// The dpkg pass (0-based) it is installed in: Pre-Depends are
    /// configured in an earlier pass ([`debpkg::install_passes`]).
    pub pass: usize,
    /// The version installed now, when this replaces one (an upgrade, or a
    /// downgrade allowed by [`DebDowngrade::Allow`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// What to do with a bundled package older than the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DebDowngrade {
    /// Keep the newer installed one (the default): it may be a security update.
    #[default]
    Keep,
    /// Install the bundled, older one (`--allow-deb-downgrade`).
    Allow,
}

/// One operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Op {
    /// Write a regular file.
    File {
        /// Absolute target path.
        target: String,
        /// Where the bytes come from.
        #[serde(skip)]
        source: Source,
        /// Digest of the new content.
        sha256: Sha256Digest,
        /// Size of the new content.
        size: u64,
        /// Permission bits.
        mode: u32,
        /// What changes.
        #[serde(flatten)]
        change: Change,
    },
    /// Create a directory or set its mode.
    Dir {
        /// Absolute target path.
        target: String,
        /// Permission bits.
        mode: u32,
        /// Whether the mode is the spec's (a `directory` step), enforced on
        /// an existing directory too; otherwise (extract destinations and
        /// archive directories) an existing directory is left as it is and a
        /// created one gets [`CREATED_DIR_MODE`].
        explicit: bool,
        /// What changes.
        #[serde(flatten)]
        change: Change,
    },
    /// Create or replace a symbolic link.
    Link {
        /// Absolute target path.
        target: String,
        /// What it points to.
        to: String,
        /// What changes.
        #[serde(flatten)]
        change: Change,
    },
    /// Install .debs: one `dpkg --install` per pass.
    Dpkg {
        /// Packages to install, ordered by pass.
        install: Vec<DebPlan>,
        /// Packages already installed at the same version (`name version`).
        present: Vec<String>,
        /// Bundled packages older than the installed ones, left as they are
        /// (`name installed-version bundled-version`).
        kept: Vec<(String, String, String)>,
    },
    /// Import a container image into containerd ([`crate::images`]).
    Image {
        /// The image's name in the bundle.
        name: String,
        /// The ref it is imported under.
        reference: String,
        /// The bundled (pinned) digest.
        digest: String,
        /// The containerd namespace.
        namespace: String,
        /// Set the CRI's pinned label.
        pin: bool,
        /// Which containerd.
        daemon: crate::images::Daemon,
        /// The staged OCI layout tar.
        #[serde(skip)]
        path: PathBuf,
        /// What changes.
        #[serde(flatten)]
        change: crate::images::ImageChange,
    },
    /// Run a program.
    Run {
        /// What it is for.
        what: String,
        /// The program and arguments.
        argv: Vec<String>,
        /// Run through `chroot ROOT`.
        chroot: bool,
        /// What compensates it after a rollback (`None`: it cannot be undone).
        #[serde(skip_serializing_if = "Option::is_none")]
        undo: Option<Vec<String>>,
        /// Whether and why it runs.
        #[serde(flatten)]
        decision: Decision,
    },
}

impl Op {
    /// Whether applying this operation changes the host.
    pub fn changes(&self) -> bool {
        match self {
            Op::File { change, .. } | Op::Dir { change, .. } | Op::Link { change, .. } => {
                *change != Change::Unchanged
            }
            Op::Dpkg { install, .. } => !install.is_empty(),
            Op::Image { change, .. } => *change != crate::images::ImageChange::Unchanged,
            Op::Run { decision, .. } => matches!(decision, Decision::Run(_)),
        }
    }

    /// One line for the plan.
    pub fn describe(&self) -> String {
        fn change_word(c: &Change) -> String {
            match c {
                Change::Create => "create".into(),
                Change::Update => "update".into(),
                Change::Mode(old) => format!("mode {old:04o} ->"),
                Change::Unchanged => "unchanged".into(),
            }
        }
        match self {
            Op::File {
                target,
                size,
                mode,
                change,
                ..
            } => format!(
                "{} file {target} ({mode:04o}, {size} bytes)",
                change_word(change)
            ),
            Op::Dir {
                target,
                mode,
                change,
                ..
            } => format!("{} directory {target} ({mode:04o})", change_word(change)),
            Op::Link {
                target, to, change, ..
            } => format!("{} symlink {target} -> {to}", change_word(change)),
            Op::Dpkg {
                install,
                present,
                kept,
            } => {
                let mut parts = Vec::new();
                let passes = install.last().map_or(0, |d| d.pass + 1);
                for pass in 0..passes {
                    let names = install
                        .iter()
                        .filter(|d| d.pass == pass)
                        .map(|d| match &d.replaces {
                            Some(old) => format!("{} {old} -> {}", d.package, d.version),
                            None => format!("{} {}", d.package, d.version),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    parts.push(if passes > 1 {
                        format!("install (pass {} of {passes}) {names}", pass + 1)
                    } else {
                        format!("install {names}")
                    });
                }
                for (name, installed, bundled) in kept {
                    parts.push(format!(
                        "keep {name} {installed} (newer than bundled {bundled})"
                    ));
                }
                if !present.is_empty() {
                    parts.push(format!("already installed: {}", present.join(", ")));
                }
                format!("dpkg: {}", parts.join("; "))
            }
            Op::Image {
                reference,
                digest,
                namespace,
                pin,
                change,
                daemon,
                ..
            } => {
                use crate::images::{Daemon, ImageChange};
                let word = match change {
                    ImageChange::Create => "import".to_owned(),
                    ImageChange::Update(old) => format!("update (from {old})"),
                    ImageChange::Pin => "pin".to_owned(),
                    ImageChange::Unchanged => "unchanged".to_owned(),
                    ImageChange::Check => "import unless present".to_owned(),
                    ImageChange::Unpin => "unpin".to_owned(),
                };
                let place = match daemon {
                    Daemon::Live(a) => format!("containerd at {a}"),
                    Daemon::Private => "a private containerd on the root's data".to_owned(),
                };
                format!(
                    "{word} image {reference} ({digest}{}) in namespace {namespace}, {place}",
                    if *pin { ", pinned" } else { "" }
                )
            }
            Op::Run {
                argv,
                chroot,
                decision,
                ..
            } => {
                let cmd = format!(
                    "{}{}",
                    if *chroot { "chroot ROOT " } else { "" },
                    argv.join(" ")
                );
                match decision {
                    Decision::Run(why) => format!("run {cmd} ({why})"),
                    Decision::Skip(why) => format!("skip {cmd} ({why})"),
                }
            }
        }
    }
}

/// The plan of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    /// 1-based step number.
    pub number: usize,
    /// The step's kind.
    pub kind: &'static str,
    /// Its operations, in order.
    pub ops: Vec<Op>,
    /// For extract steps: the scanned archive members (aligned with the
    /// `Source::Member` file operations).
    #[serde(skip)]
    pub members: Vec<Member>,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Per step.
    pub steps: Vec<StepPlan>,
    /// Applied before every step: the installer's own recovery at boot
    /// ([`crate::units::recovery_ops`]). Not part of the bundle's receipt.
    pub first: Vec<Op>,
    /// systemd actions done once every step is applied (daemon-reload,
    /// start/restart).
    pub finally: Vec<Op>,
    /// The units the bundle manages and the paths each runs from (its unit
    /// file first): after a rollback, running units whose files were put
    /// back are restarted.
    #[serde(skip)]
    pub watch: Vec<(String, Vec<String>)>,
}

impl Plan {
    /// Every operation, in order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.first
            .iter()
            .chain(self.steps.iter().flat_map(|s| s.ops.iter()))
            .chain(self.finally.iter())
    }

    /// How many operations change the host.
    pub fn changes(&self) -> usize {
        self.ops().filter(|o| o.changes()).count()
    }
}

/// What the planner needs to know.
#[derive(Debug)]
pub struct Context<'a> {
    /// The root.
    pub root: &'a Root,
    /// The verified manifest.
    pub manifest: &'a Manifest,
    /// Verified artifacts.
    pub staging: &'a Staging,
    /// Variable values.
    pub vars: &'a BTreeMap<String, String>,
    /// `--no-start`.
    pub no_start: bool,
    /// No receipt of this bundle exists.
    pub first_install: bool,
    /// Bundled packages older than installed ones.
    pub deb_downgrade: DebDowngrade,
    /// The images the installed receipt of this bundle lists.
    pub previous_images: &'a [crate::receipt::InstalledImage],
}

/// The state of a would-be file at `target` (its final component not followed).
pub fn file_change(
    root: &Root,
    target: &str,
    sha256: &Sha256Digest,
    size: u64,
    mode: u32,
) -> io::Result<Change> {
    let Some((dir, name)) = root.parent_if_exists(target)? else {
        root.check_creatable(target)?;
        return Ok(Change::Create);
    };
    match dir.stat_at(&name)? {
        None => Ok(Change::Create),
        Some(m) if m.kind == Kind::Dir => Err(io::Error::other(format!(
            "{} is a directory; a file cannot replace it",
            dir.shown_child(&name).display()
        ))),
        Some(m) if m.kind != Kind::File => Ok(Change::Update),
        Some(m) => {
            if m.size != size {
                return Ok(Change::Update);
            }
            let (digest, _) = Sha256Digest::of_reader(dir.open_file(&name)?)?;
            if digest != *sha256 {
                return Ok(Change::Update);
            }
            Ok(if m.mode == mode {
                Change::Unchanged
            } else {
                Change::Mode(m.mode)
            })
        }
    }
}

/// The state of a would-be directory at `target` (followed inside the root,
/// as `mkdir -p` in a chroot would). With `explicit`, a different mode is a
/// change; otherwise an existing directory is always left as it is.
fn dir_change(root: &Root, target: &str, mode: u32, explicit: bool) -> io::Result<Change> {
    match root.stat(target)? {
        None => {
            if let Some(m) = root.lstat(target)? {
                let to = root
                    .parent(target)
                    .and_then(|(d, n)| d.read_link(&n))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{} is a {} to {to}, which does not exist inside the root {}; a directory cannot be created through it",
                    target,
                    if m.kind == Kind::Symlink {
                        "symbolic link"
                    } else {
                        "special file"
                    },
                    root.path().display()
                )));
            }
            root.check_creatable(target)?;
            Ok(Change::Create)
        }
        Some(m) if m.kind != Kind::Dir => Err(io::Error::other(format!(
            "{} exists and is not a directory",
            root.display(target).display()
        ))),
        Some(m) => Ok(if !explicit || m.mode == mode {
            Change::Unchanged
        } else {
            Change::Mode(m.mode)
        }),
    }
}

pub fn link_change(root: &Root, target: &str, to: &str) -> io::Result<Change> {
    let Some((dir, name)) = root.parent_if_exists(target)? else {
        root.check_creatable(target)?;
        return Ok(Change::Create);
    };
    match dir.stat_at(&name)? {
        None => Ok(Change::Create),
        Some(m) if m.kind == Kind::Dir => Err(io::Error::other(format!(
            "{} is a directory; a symlink cannot replace it",
            dir.shown_child(&name).display()
        ))),
        Some(m) if m.kind == Kind::Symlink && dir.read_link(&name)?.as_os_str() == to => {
            Ok(Change::Unchanged)
        }
        Some(_) => Ok(Change::Update),
    }
}

/// Whether `argv` exits 0 (used for `unless` and systemctl queries).
fn succeeds(argv: &[String], chroot: Option<&Path>) -> bool {
    crate::apply::command(argv, chroot)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A file with content from the manifest.
pub fn inline_file(root: &Root, target: &str, content: Vec<u8>, mode: u32) -> io::Result<Op> {
    let sha256 = Sha256Digest::of(&content);
    let size = content.len() as u64;
    let change = file_change(root, target, &sha256, size, mode)?;
    Ok(Op::File {
        target: target.to_owned(),
        source: Source::Inline(content),
        sha256,
        size,
        mode,
        change,
    })
}

/// Comments out active swap lines of an fstab.
pub fn comment_swap_lines(fstab: &str) -> String {
    let mut out = String::with_capacity(fstab.len() + 16);
    for line in fstab.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_swap =
            !trimmed.starts_with('#') && trimmed.split_whitespace().nth(2) == Some("swap");
        if is_swap {
            out.push_str("# ");
        }
        out.push_str(line);
    }
    out
}

fn active_swap() -> bool {
    fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// Builds the plan. Problems (a directory where a file must go, a broken
/// archive member, an unrenderable template) are all returned at once.
pub fn build(ctx: &Context<'_>) -> Result<Plan, Vec<String>> {
    let mut problems = Vec::new();
    let mut problems_of_omitted = Vec::new();
    let mut steps = Vec::new();
    let mut changed_targets: BTreeSet<String> = BTreeSet::new();
    let mut reload_needed = false;
    let bundle_units = units::rendered_units(ctx.manifest, ctx.vars);
    let mut planned_dirs: BTreeMap<String, u32> = BTreeMap::new();
    let mut units: Vec<units::PlannedUnit> = Vec::new();
    let root = ctx.root;
    let host = root.is_host();

    // Directories below /run come back at every boot (crate::volatile).
    let mut tmpfiles = crate::volatile::tmpfiles_op(root, ctx.manifest).unwrap_or_else(|e| {
        problems.push(format!("directories below /run: {e}"));
        None
    });
    // Every archive is read (decompressed, each member hashed) before the
    // steps are planned: on several threads, one archive each.
    let staging = &ctx.staging;
    let manifest = ctx.manifest;
    let mut scans = crate::parallel::map(&manifest.steps, |step| match step {
        Step::Extract(s) if differential::omitted(manifest, &s.artifact).is_none() => Some(
            extract::scan(&staging.artifact(&s.artifact), s.artifact.as_str(), s),
        ),
        _ => None,
    });
    for (i, step) in ctx.manifest.steps.iter().enumerate() {
        let number = i + 1;
        let mut ops = Vec::new();
        let mut members = Vec::new();
        let mut problem =
            |p: String| problems.push(format!("step {number} ({}): {p}", step.kind()));
        match step {
            Step::Debs(s) => match plan_debs(ctx, &s.artifacts, &mut problems_of_omitted) {
                Ok(op) => ops.push(op),
                Err(e) => problem(e),
            },
            Step::SwapOff(_) => {
                match root.lstat("/etc/fstab") {
                    Ok(Some(m)) => match root
                        .open_nofollow("/etc/fstab")
                        .and_then(io::read_to_string)
                    {
                        Ok(text) => {
                            let new = comment_swap_lines(&text);
                            if new != text {
                                match inline_file(root, "/etc/fstab", new.into_bytes(), m.mode) {
                                    Ok(op) => ops.push(op),
                                    Err(e) => problem(e.to_string()),
                                }
                            }
                        }
                        Err(e) => problem(format!("cannot read /etc/fstab: {e}")),
                    },
                    Ok(None) => {}
                    Err(e) => problem(e.to_string()),
                }
                if host {
                    ops.push(Op::Run {
                        what: "turn swap off".into(),
                        argv: vec!["swapoff".into(), "-a".into()],
                        chroot: false,
                        undo: Some(vec!["swapon".into(), "-a".into()]),
                        decision: if !units::booted() {
                            Decision::Skip(
                                "systemd is not running here (chroot or image): swap stays off at boot by fstab".into(),
                            )
                        } else if active_swap() {
                            Decision::Run("swap is active".into())
                        } else {
                            Decision::Skip("no active swap".into())
                        },
                    });
                }
            }
            Step::KernelModule(s) => {
                let target = format!("/etc/modules-load.d/{}.conf", s.name);
                match inline_file(root, &target, format!("{}\n", s.name).into_bytes(), 0o644) {
                    Ok(op) => ops.push(op),
                    Err(e) => problem(e.to_string()),
                }
                if host {
                    let loaded = Path::new("/sys/module").join(s.name.as_str()).exists();
                    ops.push(Op::Run {
                        what: format!("load kernel module {}", s.name),
                        argv: vec!["modprobe".into(), s.name.to_string()],
                        chroot: false,
                        undo: Some(vec!["modprobe".into(), "-r".into(), s.name.to_string()]),
                        decision: if !units::booted() {
                            Decision::Skip(
                                "systemd is not running here (chroot or image): the module loads at boot from modules-load.d".into(),
                            )
                        } else if loaded {
                            Decision::Skip("already loaded".into())
                        } else {
                            Decision::Run("not loaded".into())
                        },
                    });
                }
            }
            Step::Binary(s) => {
                let a = &ctx.manifest.artifacts[&s.artifact];
                match file_change(root, s.dest.as_str(), &a.sha256, a.size, s.mode.bits()) {
                    Ok(change) => ops.push(Op::File {
                        target: s.dest.to_string(),
                        source: Source::Staged(ctx.staging.artifact(&s.artifact)),
                        sha256: a.sha256,
                        size: a.size,
                        mode: s.mode.bits(),
                        change,
                    }),
                    Err(e) => problem(e.to_string()),
                }
            }
            Step::Extract(s) => {
                let scanned = match differential::omitted(ctx.manifest, &s.artifact) {
                    Some(o) => Ok(o.members.clone()),
                    None => scans[i].take().expect("every extract step was scanned"),
                };
                match scanned {
                    Ok(scanned) => {
                        // The destination is created (0755) when missing; an existing
                        // one is left as it is. Either way the receipt records it.
                        match dir_change(root, s.dest.as_str(), CREATED_DIR_MODE, false) {
                            Ok(change) => {
                                let mode = match root.stat(s.dest.as_str()) {
                                    Ok(Some(m)) => m.mode,
                                    _ => CREATED_DIR_MODE,
                                };
                                ops.push(Op::Dir {
                                    target: s.dest.to_string(),
                                    mode,
                                    explicit: false,
                                    change,
                                });
                            }
                            Err(e) => problem(e.to_string()),
                        }
                        // Comparing with the host hashes every file there:
                        // on several threads.
                        let member_ops =
                            crate::parallel::map(&scanned, |m| member_op(root, &s.dest, m));
                        for (m, op) in scanned.iter().zip(member_ops) {
                            match op {
                                Ok(op) => ops.push(op),
                                Err(e) => problem(format!("member {}: {e}", m.stored)),
                            }
                        }
                        members = scanned;
                    }
                    Err(e) => problem(e.to_string()),
                }
            }
            Step::Directory(s) => {
                for p in &s.paths {
                    match dir_change(root, p.as_str(), s.mode.bits(), true) {
                        Ok(change) => ops.push(Op::Dir {
                            target: p.to_string(),
                            mode: s.mode.bits(),
                            explicit: true,
                            change,
                        }),
                        Err(e) => problem(e.to_string()),
                    }
                }
                if let Some((_, op)) = tmpfiles.take_if(|(at, _)| *at == i) {
                    ops.push(op);
                }
            }
            Step::File(s) => {
                let content = if s.template {
                    template::render(&s.content, ctx.vars).map_err(|e| e.to_string())
                } else {
                    Ok(s.content.clone())
                };
                match content {
                    Ok(c) => {
                        match inline_file(root, s.dest.as_str(), c.into_bytes(), s.mode.bits()) {
                            Ok(op) => ops.push(op),
                            Err(e) => problem(e.to_string()),
                        }
                    }
                    Err(e) => problem(e),
                }
            }
            Step::SystemdUnit(s) => match units::plan_step(root, s, ctx.vars, &bundle_units) {
                Ok((unit_ops, unit)) => {
                    reload_needed |= units::any_change(&unit_ops);
                    ops.extend(unit_ops);
                    units.push(unit);
                }
                Err(e) => problem(e),
            },
            Step::Images(s) => {
                // A containerd the bundle installs is (re)started right before.
                let starts_containerd = units
                    .iter()
                    .position(|u| u.start && units::runs_containerd(u));
                if host
                    && let Some(i) = starts_containerd
                    && !ctx.no_start
                {
                    if reload_needed {
                        ops.push(units::reload_op());
                    }
                    ops.extend(units::start_ops(&units[i], &changed_targets, ctx.no_start));
                    units[i].started_early = true;
                }
                let daemon =
                    images::daemon_for(root, s, starts_containerd.is_some() && !ctx.no_start);
                match images::plan_step(root, ctx.manifest, ctx.staging, s, &daemon) {
                    Ok(image_ops) => ops.extend(image_ops),
                    Err(e) => problem(e),
                }
            }
            Step::Command(s) => {
                let under_root = !host;
                let decision = if under_root && !s.in_root {
                    Decision::Skip(
                        "not run under --root; set \"in_root\": true to run it through chroot"
                            .into(),
                    )
                } else if host && !s.in_root && !units::booted() {
                    // A chroot or an image build: the command would act on
                    // the build machine's kernel (sysctl, modprobe...).
                    Decision::Skip(
                        "systemd is not running here (chroot or image): not run; set \"in_root\": true to run it anyway".into(),
                    )
                } else if let Some(unless) = &s.unless {
                    if succeeds(unless, under_root.then(|| root.path())) {
                        Decision::Skip(format!("`{}` succeeded", unless.join(" ")))
                    } else {
                        Decision::Run(format!("`{}` failed", unless.join(" ")))
                    }
                } else if ctx.first_install {
                    Decision::Run("first install".into())
                } else if !changed_targets.is_empty()
                    || steps
                        .iter()
                        .any(|st: &StepPlan| st.ops.iter().any(Op::changes))
                {
                    Decision::Run("earlier steps changed the host".into())
                } else {
                    Decision::Skip("nothing changed before it".into())
                };
                ops.push(Op::Run {
                    what: "command".into(),
                    argv: s.argv.clone(),
                    chroot: under_root && s.in_root,
                    undo: None,
                    decision,
                });
            }
        }
        // A differential bundle's omitted artifacts change nothing.
        if let Step::Images(s) = step {
            for op in &ops {
                if let Op::Image { name, .. } = op
                    && let Ok(artifact) = name.parse::<ArtifactName>()
                    && differential::omitted(ctx.manifest, &artifact).is_some()
                {
                    problems_of_omitted.extend(differential::finding(ctx.manifest, &artifact, op));
                }
            }
            let content = format!(
                "{}/io.containerd.content.v1.content",
                images::data_root(root).trim_end_matches('/')
            );
            for name in &s.images {
                if let Some(o) = differential::omitted(ctx.manifest, name) {
                    problems_of_omitted.extend(differential::check_blobs(
                        root,
                        ctx.manifest,
                        name,
                        &content,
                        &o.blobs,
                    ));
                }
            }
        } else if let [artifact] = step.artifacts()[..]
            && differential::omitted(ctx.manifest, artifact).is_some()
        {
            problems_of_omitted.extend(
                ops.iter()
                    .filter_map(|op| differential::finding(ctx.manifest, artifact, op)),
            );
        }
        // A directory an earlier step creates is not created twice (an
        // extract into a directory a directory step made, for instance).
        for op in &mut ops {
            if let Op::Dir {
                target,
                change,
                mode,
                ..
            } = op
                && *change == Change::Create
                && planned_dirs.insert(target.clone(), *mode) == Some(*mode)
            {
                *change = Change::Unchanged;
            }
        }
        for op in &ops {
            if op.changes()
                && let Op::File { target, .. } | Op::Link { target, .. } | Op::Dir { target, .. } =
                    op
            {
                changed_targets.insert(target.clone());
            }
        }
        steps.push(StepPlan {
            number,
            kind: step.kind(),
            ops,
            members,
        });
    }

    // On the host only: below --root (an image) the first install on the
    // booted machine puts it there.
    let first = if units.is_empty() || !host {
        Vec::new()
    } else {
        match units::recovery_ops(root) {
            Ok(ops) => {
                reload_needed |= units::any_change(&ops);
                ops
            }
            Err(e) => {
                problems.push(format!("recovery at boot: {e}"));
                Vec::new()
            }
        }
    };
    let mut finally = units::finally(root, &units, reload_needed, &changed_targets, ctx.no_start);
    // Images the previous release pinned and this one no longer carries.
    let carried: BTreeSet<(String, String)> = steps
        .iter()
        .flat_map(|s| s.ops.iter())
        .filter_map(|o| match o {
            Op::Image {
                reference,
                namespace,
                ..
            } => Some((reference.clone(), namespace.clone())),
            _ => None,
        })
        .collect();
    for old in ctx.previous_images {
        if !old.pinned || carried.contains(&(old.reference.clone(), old.namespace.clone())) {
            continue;
        }
        let daemon = match (&old.address, host) {
            (Some(a), true) => images::Daemon::Live(a.clone()),
            _ => images::Daemon::Private,
        };
        finally.push(Op::Image {
            name: old.name.clone(),
            reference: old.reference.clone(),
            digest: old.digest.clone(),
            namespace: old.namespace.clone(),
            pin: false,
            daemon,
            path: PathBuf::new(),
            change: images::ImageChange::Unpin,
        });
    }
    let watch = units
        .iter()
        .flat_map(|u| u.names.iter().map(|n| (n.clone(), u.paths.clone())))
        .collect();
    problems.extend(problems_of_omitted);
    if problems.is_empty() {
        Ok(Plan {
            first,
            steps,
            finally,
            watch,
        })
    } else {
        Err(problems)
    }
}

/// Permission bits an extracted file gets: the archive's, without group and
/// other write (as umask 022 would), without setuid/setgid unless the step
/// allows them (the scan refuses them otherwise) and without the sticky bit.
pub fn member_file_mode(archive_mode: u32) -> u32 {
    archive_mode & 0o6755
}

fn member_op(root: &Root, dest: &TargetPath, m: &Member) -> io::Result<Op> {
    let target = dest
        .join(m.path.as_str())
        .ok_or_else(|| io::Error::other("not a valid path below the destination"))?;
    let target = target.as_str();
    Ok(match &m.kind {
        MemberKind::File { mode, size, sha256 } => {
            let mode = member_file_mode(*mode);
            Op::File {
                change: file_change(root, target, sha256, *size, mode)?,
                target: target.to_owned(),
                source: Source::Member,
                sha256: *sha256,
                size: *size,
                mode,
            }
        }
        // Archive metadata never changes an existing directory; a created
        // one gets the fixed mode.
        MemberKind::Dir { .. } => {
            let change = dir_change(root, target, CREATED_DIR_MODE, false)?;
            let mode = match root.stat(target) {
                Ok(Some(m)) => m.mode,
                _ => CREATED_DIR_MODE,
            };
            Op::Dir {
                change,
                target: target.to_owned(),
                mode,
                explicit: false,
            }
        }
        MemberKind::Symlink { target: to } => Op::Link {
            change: link_change(root, target, to)?,
            target: target.to_owned(),
            to: to.clone(),
        },
    })
}

fn plan_debs(
    ctx: &Context<'_>,
    artifacts: &[ArtifactName],
    problems_of_omitted: &mut Vec<String>,
) -> Result<Op, String> {
    let status = crate::debs::host_status(ctx.root)?;
    let mut install = Vec::new();
    let mut infos = Vec::new();
    let mut present = Vec::new();
    let mut kept = Vec::new();
    for a in artifacts {
        if let Some(package) =
            differential::omitted(ctx.manifest, a).and_then(|o| o.package.as_ref())
        {
            let installed = status
                .get_arch(&package.name, &package.architecture)
                .map(|p| p.version.to_string());
            problems_of_omitted.extend(differential::check_package(
                ctx.root,
                ctx.manifest,
                a,
                package,
                installed.as_deref(),
            ));
            present.push(format!("{} {}", package.name, package.version));
            continue;
        }
        let path = ctx.staging.artifact(a);
        let info = crate::debs::info(&path, a)?;
        if crate::debs::already_installed(&info, &status) {
            present.push(format!("{} {}", info.package, info.version));
            continue;
        }
        let installed = status
            .get_arch(&info.package, &info.architecture)
            .map(|p| p.version.clone());
        if let Some(v) = &installed
            && *v > info.version
            && ctx.deb_downgrade == DebDowngrade::Keep
        {
            kept.push((
                info.package.clone(),
                v.to_string(),
                info.version.to_string(),
            ));
            continue;
        }
        install.push(DebPlan {
            artifact: a.clone(),
            path,
            package: info.package.clone(),
            version: info.version.to_string(),
            architecture: info.architecture.clone(),
            installed_size: crate::debs::installed_size(&info),
            pass: 0,
            replaces: installed.map(|v| v.to_string()),
        });
        infos.push(info);
    }
    let passes = debpkg::install_passes(&infos, &status, ctx.manifest.target.arch.as_str())
        .map_err(|e| format!("{e}; dpkg cannot install these packages in any order"))?;
    let mut ordered = Vec::with_capacity(install.len());
    for (pass, members) in passes.iter().enumerate() {
        for &i in members {
            let mut d = install[i].clone();
            d.pass = pass;
            ordered.push(d);
        }
    }
    Ok(Op::Dpkg {
        install: ordered,
        present,
        kept,
    })
}
