//! Apply: carry out the plan in spec order through the journal, so that a
//! failure rolls everything back.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use bundle_spec::spec::{Manifest, Step};

use crate::extract;
use crate::journal::Transaction;
use crate::paths::Root;
use crate::plan::{Change, Decision, Op, Plan, Source};

/// Test-only: fail step N (1-based) as if it had failed, to exercise rollback.
pub const FAIL_ENV: &str = "INSTALL_BUNDLE_TEST_FAIL_AT";

/// PATH given to the programs the installer runs.
pub const RUN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the apply stopped.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({kind}): {message}")]
pub struct ApplyError {
    /// 1-based step number (0 for the final systemd actions).
    pub step: usize,
    /// Step kind.
    pub kind: &'static str,
    /// What failed.
    pub message: String,
}

/// Something the apply reports as it goes.
pub trait Log {
    /// A change was made.
    fn did(&self, line: &str);

    /// Step `number` (0: the installer's own first operations and the final
    /// systemd actions) took `seconds`.
    fn step_done(&self, _number: usize, _kind: &str, _seconds: f64) {}
}

/// The command for `argv`, run through `chroot ROOT` when given a root, with
/// a standard PATH and no terminal.
pub fn command(argv: &[String], chroot: Option<&Path>) -> Command {
    let mut cmd = match chroot {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).args(argv);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.env("PATH", RUN_PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn run(argv: &[String], chroot: Option<&Path>) -> Result<(), String> {
    let mut cmd = command(argv, chroot);
    let shown = format!(
        "{}{}",
        chroot
            .map(|r| format!("chroot {} ", r.display()))
            .unwrap_or_default(),
        argv.join(" ")
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Staged artifacts that feed exactly one file: those can be linked into place.
fn exclusive_staged(plan: &Plan) -> HashSet<std::path::PathBuf> {
    let mut uses: HashMap<&Path, usize> = HashMap::new();
    for op in plan.ops() {
        if let Op::File {
            source: Source::Staged(p),
            ..
        } = op
        {
            *uses.entry(p.as_path()).or_default() += 1;
        }
    }
    uses.into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(p, _)| p.to_owned())
        .collect()
}

fn write_op(tx: &mut Transaction, op: &Op, content: Option<&mut dyn Read>) -> io::Result<()> {
    write_op_with(tx, op, content, &HashSet::new())
}

fn write_op_with(
    tx: &mut Transaction,
    op: &Op,
    content: Option<&mut dyn Read>,
    exclusive: &HashSet<std::path::PathBuf>,
) -> io::Result<()> {
    match op {
        Op::File {
            source,
            sha256,
            mode,
            change,
            target,
            ..
        } => match change {
            Change::Unchanged => Ok(()),
            Change::Mode(_) => tx.set_mode(target, *mode, false),
            Change::Create | Change::Update => {
                let (digest, _) = match (source, content) {
                    (_, Some(r)) => tx.write_file(target, *mode, r)?,
                    (Source::Staged(p), None) => {
                        match tx.place_file(target, *mode, p, exclusive.contains(p))? {
                            Some(copied) => copied,
                            // Linked: the staged bytes were verified while staging.
                            None => (*sha256, 0),
                        }
                    }
                    (Source::Inline(bytes), None) => {
                        tx.write_file(target, *mode, &mut &bytes[..])?
                    }
                    (Source::Member, None) => {
                        return Err(io::Error::other("archive member without its archive"));
                    }
                };
                if digest != *sha256 {
                    return Err(io::Error::other(format!(
                        "{target}: wrote sha256 {digest}, expected {sha256} (staged content changed?)"
                    )));
                }
                Ok(())
            }
        },
        Op::Dir {
            target,
            mode,
            explicit,
            change,
        } => match change {
            Change::Create => {
                let created = tx.mkdir(target, *mode)?;
                // An earlier step of this run made it: a directory step's
                // mode still applies.
                if !created && *explicit {
                    tx.set_mode(target, *mode, true)?;
                }
                Ok(())
            }
            Change::Mode(_) if *explicit => tx.set_mode(target, *mode, true),
            _ => Ok(()),
        },
        Op::Link {
            target,
            to,
            change: Change::Create | Change::Update,
        } => tx.symlink(target, to),
        _ => Ok(()),
    }
}

/// Applies every step's operations, then the final systemd actions.
pub fn apply(
    root: &Root,
    manifest: &Manifest,
    staging: &crate::stage::Staging,
    plan: &Plan,
    tx: &mut Transaction,
    log: &dyn Log,
) -> Result<(), ApplyError> {
    let fail_at: Option<usize> = std::env::var(FAIL_ENV).ok().and_then(|v| v.parse().ok());
    let exclusive = exclusive_staged(plan);
    let mut dpkg_ran = false;
    if root.is_host() {
        for (unit, paths) in &plan.watch {
            tx.watch(unit, paths.clone()).map_err(|e| ApplyError {
                step: 0,
                kind: "journal",
                message: e.to_string(),
            })?;
        }
    }
    let mut started = std::time::Instant::now();
    for op in &plan.first {
        apply_op(root, tx, op, log, &exclusive).map_err(|message| ApplyError {
            step: 0,
            kind: "recovery at boot",
            message,
        })?;
    }
    log.step_done(0, "first", started.elapsed().as_secs_f64());
    started = std::time::Instant::now();
    for sp in &plan.steps {
        let result = apply_step(
            root,
            &manifest.steps[sp.number - 1],
            staging,
            tx,
            log,
            sp,
            fail_at,
            &exclusive,
            &mut dpkg_ran,
        );
        log.step_done(sp.number, sp.kind, started.elapsed().as_secs_f64());
        started = std::time::Instant::now();
        result?;
    }
    let finally_started = std::time::Instant::now();
    let result = apply_finally(root, plan, tx, log, &exclusive);
    log.step_done(0, "finally", finally_started.elapsed().as_secs_f64());
    result
}

/// The final systemd actions and unpins.
fn apply_finally(
    root: &Root,
    plan: &Plan,
    tx: &mut Transaction,
    log: &dyn Log,
    exclusive: &HashSet<std::path::PathBuf>,
) -> Result<(), ApplyError> {
    for op in &plan.finally {
        if matches!(op, Op::Image { .. }) {
            crate::images::apply_step(root, tx, &[op], log).map_err(|message| ApplyError {
                step: 0,
                kind: "images",
                message,
            })?;
            continue;
        }
        apply_op(root, tx, op, log, exclusive).map_err(|message| ApplyError {
            step: 0,
            kind: "systemd",
            message,
        })?;
    }
    Ok(())
}

/// Applies one step's operations.
#[allow(clippy::too_many_arguments)]
fn apply_step(
    root: &Root,
    step: &Step,
    staging: &crate::stage::Staging,
    tx: &mut Transaction,
    log: &dyn Log,
    sp: &crate::plan::StepPlan,
    fail_at: Option<usize>,
    exclusive: &HashSet<std::path::PathBuf>,
    dpkg_ran: &mut bool,
) -> Result<(), ApplyError> {
    let err = |message: String| ApplyError {
        step: sp.number,
        kind: sp.kind,
        message,
    };
    if fail_at == Some(sp.number) {
        return Err(err(format!("injected failure ({FAIL_ENV}={})", sp.number)));
    }
    if let Step::Images(_) = step {
        // containerd (re)started first when the bundle brings it, then
        // every image on one containerd.
        for op in sp.ops.iter().filter(|o| !matches!(o, Op::Image { .. })) {
            apply_op(root, tx, op, log, exclusive).map_err(err)?;
        }
        let images: Vec<&Op> = sp
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Image { .. }))
            .collect();
        crate::images::apply_step(root, tx, &images, log).map_err(err)?;
        return Ok(());
    }
    if let Step::Extract(s) = step {
        // Directories first, then the files streamed from the archive, then links.
        for op in sp.ops.iter().filter(|o| matches!(o, Op::Dir { .. })) {
            write_op(tx, op, None).map_err(|e| err(e.to_string()))?;
            if op.changes() {
                log.did(&op.describe());
            }
        }
        let files: HashMap<String, &Op> = sp
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::File { target, .. } => Some((target.clone(), o)),
                _ => None,
            })
            .collect();
        if files.values().any(|o| o.changes()) {
            let archive = staging.artifact(&s.artifact);
            let mut failure: Option<String> = None;
            let result = extract::for_each_file(
                &archive,
                s.artifact.as_str(),
                s,
                &sp.members,
                &mut |member, reader| {
                    let target = s
                        .dest
                        .join(member.path.as_str())
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    match files.get(&target) {
                        Some(op)
                            if matches!(
                                op,
                                Op::File {
                                    change: Change::Create | Change::Update,
                                    ..
                                }
                            ) =>
                        {
                            write_op(tx, op, Some(reader))
                                .inspect_err(|e| failure = Some(format!("{target}: {e}")))?;
                            log.did(&op.describe());
                            Ok(())
                        }
                        _ => io::copy(reader, &mut io::sink()).map(drop),
                    }
                },
            );
            if let Err(e) = result {
                return Err(err(failure.unwrap_or_else(|| e.to_string())));
            }
        }
        for op in sp.ops.iter().filter(|o| !matches!(o, Op::Dir { .. })) {
            if matches!(
                op,
                Op::File {
                    change: Change::Mode(_),
                    ..
                }
            ) || matches!(op, Op::Link { .. })
            {
                write_op(tx, op, None).map_err(|e| err(e.to_string()))?;
                if op.changes() {
                    log.did(&op.describe());
                }
            }
        }
        return Ok(());
    }
    for op in &sp.ops {
        // dpkg may have rewritten a file planned before it ran (a
        // conffile taking the package's new default): plan it again.
        let replanned;
        let op = match op {
            Op::File {
                target,
                sha256,
                size,
                mode,
                ..
            } if *dpkg_ran => {
                let change = crate::plan::file_change(root, target, sha256, *size, *mode)
                    .map_err(|e| err(e.to_string()))?;
                let mut again = op.clone();
                if let Op::File { change: c, .. } = &mut again {
                    *c = change;
                }
                replanned = again;
                &replanned
            }
            _ => op,
        };
        apply_op(root, tx, op, log, exclusive).map_err(err)?;
        *dpkg_ran |= matches!(op, Op::Dpkg { install, .. } if !install.is_empty());
    }
    Ok(())
}

fn apply_op(
    root: &Root,
    tx: &mut Transaction,
    op: &Op,
    log: &dyn Log,
    exclusive: &HashSet<std::path::PathBuf>,
) -> Result<(), String> {
    match op {
        Op::File { .. } | Op::Dir { .. } | Op::Link { .. } => {
            write_op_with(tx, op, None, exclusive).map_err(|e| e.to_string())?;
        }
        Op::Dpkg { install, .. } => crate::debs::install(root, tx, install)?,
        Op::Run {
            what,
            argv,
            chroot,
            undo,
            decision: Decision::Run(_),
        } => {
            tx.exec(&format!("{what}: {}", argv.join(" ")), undo.clone())
                .map_err(|e| e.to_string())?;
            let result = run(argv, chroot.then(|| root.path()));
            tx.done(result.is_ok()).map_err(|e| e.to_string())?;
            result?;
        }
        Op::Run { .. } => return Ok(()),
        // Logged by the images module, image by image.
        Op::Image { .. } => return crate::images::apply_step(root, tx, &[op], log),
    }
    if op.changes() {
        log.did(&op.describe());
    }
    Ok(())
}
