//! The install flow in two halves, shared by `install`, `plan`, `stage` and
//! `apply`:
//!
//! * **prepare** — everything that verifies: the signature, policy
//!   (expiry, target, serial against the receipt), the variables, and every
//!   artifact byte, into a staging directory. From a bundle file
//!   ([`prepare_bundle`]: one streaming pass into the transient staging
//!   directory) or from a staged bundle ([`prepare_staged`]: its signature
//!   and every artifact's sha256 checked again).
//! * **plan** ([`plan`]) — preflight and the plan against the host as it is
//!   now. `plan`/`--dry-run` stop here; `stage` keeps the prepared artifacts
//!   ([`crate::staged::keep`]).
//! * **apply** ([`apply`]) — the journaled transaction and the receipt.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use bundle_spec::read::{BundleReader, ReadError};
use bundle_spec::sign::{KeyId, TrustedKeys};
use bundle_spec::spec::Manifest;
use bundle_spec::{Limits, Sha256Digest, Timestamp};
use serde_json::{Value, json};

use crate::exit::Failure;
use crate::journal::{self, Recovery, Transaction};
use crate::output::Out;
use crate::paths::Root;
use crate::plan::{self, Change, Op, Plan, Source};
use crate::policy::{self, Downgrade};
use crate::receipt::{
    self, InstalledImage, InstalledPackage, InstalledPath, RECEIPT_FORMAT, Receipt,
};
use crate::stage::{STATE_TARGET, Staging, StateDir};
use crate::staged::{self, StagedError, StagedInfo};
use crate::{apply as apply_mod, preflight, vars};

/// How to plan and apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Accept a lower serial than the installed one.
    pub allow_downgrade: bool,
    /// Install bundled .debs older than the installed ones.
    pub allow_deb_downgrade: bool,
    /// Do not start or restart services.
    pub no_start: bool,
    /// Put each changed file's before and after in the JSON document.
    pub diff: bool,
}

/// A verified bundle whose artifacts are staged: the first half's result.
#[derive(Debug)]
pub struct Prepared {
    /// The verified manifest.
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: Sha256Digest,
    /// The trusted key that signed it.
    pub key_id: KeyId,
    /// The variable values.
    pub values: BTreeMap<String, String>,
    /// The receipt of this bundle name on the root, if any.
    pub old_receipt: Option<Receipt>,
    /// Where the verified artifacts are.
    pub staging: Staging,
    /// Bytes of artifacts verified.
    pub artifact_bytes: u64,
    /// The exact signed manifest and signature (to keep them, `stage`).
    pub signed: Option<(Vec<u8>, Vec<u8>)>,
    /// The bundle's SBOM, verified against the manifest (kept beside the
    /// receipt, and with a staged bundle).
    pub sbom: Option<Vec<u8>>,
}

/// Maps a failure to take the state directory to its exit code.
pub fn state_failure(e: crate::stage::StateError) -> Failure {
    match e {
        crate::stage::StateError::Locked(_) => Failure::refused(e.to_string()),
        other => Failure::other(other.to_string()),
    }
}

/// A bundle read error: exit 4 when our side failed (storing an artifact),
/// 3 when the bundle is bad.
pub fn read_failure(bundle: &str, e: ReadError) -> Failure {
    match e {
        ReadError::Sink { .. } => Failure::refused(format!("{bundle}: {e}")),
        other => Failure::verify(format!("{bundle}: verification failed: {other}")),
    }
}

/// Rolls back (or finishes the clean-up of) an interrupted run. Fails (exit
/// 6) only when an undo failed: a completed command that cannot be undone
/// (dpkg ran) is reported, and the install that follows goes on.
pub fn finish_interrupted(root: &Root, state: &StateDir, out: &Out) -> Result<Recovery, Failure> {
    let recovery = journal::recover(root, &state.dir).map_err(|e| {
        Failure::incomplete(
            format!("an interrupted install could not be rolled back: {e}"),
            Vec::new(),
        )
    })?;
    match &recovery {
        Recovery::Clean => {}
        Recovery::FinishedCommit => {
            out.line("finished cleaning up after an interrupted, completed install")
        }
        Recovery::RolledBack { bundle, report } => {
            out.line(&format!(
                "rolled back an interrupted install of {bundle} ({} changes undone)",
                report.undone
            ));
            for d in report.details().iter().skip(1) {
                out.warn(d);
            }
            if !report.failed.is_empty() {
                return Err(Failure::incomplete(
                    format!("an interrupted install of {bundle} could not be fully rolled back"),
                    report.details(),
                ));
            }
        }
    }
    Ok(recovery)
}

/// Policy (expiry, target, serial against the receipt) and the variables,
/// every problem at once (exit 4).
fn policy_and_values(
    manifest: &Manifest,
    manifest_sha256: &Sha256Digest,
    old_receipt: Option<&Receipt>,
    downgrade: bool,
    root: &Root,
    values_file: Option<&Path>,
    sets: &[String],
) -> Result<BTreeMap<String, String>, Failure> {
    let mut problems = policy::check(
        manifest,
        &manifest_sha256.to_string(),
        old_receipt,
        if downgrade {
            Downgrade::Allow
        } else {
            Downgrade::Refuse
        },
        root,
        Timestamp::now(),
    );
    let values = vars::resolve(&manifest.variables, values_file, sets);
    if let Err(v) = &values {
        problems.extend(v.iter().cloned());
    }
    if !problems.is_empty() {
        return Err(Failure::refused_all(
            format!("{} {} refused", manifest.name, manifest.version),
            problems,
        ));
    }
    Ok(values.unwrap_or_default())
}

/// Where the bundle comes from and what was said about it on the command line.
#[derive(Debug)]
pub struct BundleInput<'a> {
    /// The bundle as named on the command line (`-`: standard input).
    pub label: &'a str,
    /// `--values FILE`.
    pub values_file: Option<&'a Path>,
    /// `--set NAME=VALUE`.
    pub sets: &'a [String],
    /// Where the transient staging directory goes.
    pub staging_base: &'a Path,
}

/// The first half from a bundle file: phase 1, "verify & stage".
pub fn prepare_bundle(
    input: Box<dyn Read>,
    bundle: &BundleInput<'_>,
    opts: &Options,
    root: &Root,
    trusted: &TrustedKeys,
    state: &StateDir,
    out: &Out,
) -> Result<Prepared, Failure> {
    out.phase(1, "verify & stage");
    let reader = BundleReader::open(input, trusted, &Limits::default())
        .map_err(|e| read_failure(bundle.label, e))?;
    let manifest = reader.manifest().clone();
    // A differential bundle is recorded as the release it installs.
    let manifest_sha256 = manifest.release_sha256(reader.manifest_bytes());
    let key_id = reader.key_id();
    let signed = (
        reader.manifest_bytes().to_vec(),
        reader.signature_bytes().to_vec(),
    );
    out.line(&format!(
        "  {} {} (serial {}) signed by trusted key {key_id}",
        manifest.name, manifest.version, manifest.serial
    ));
    let old_receipt =
        receipt::read(&state.dir, manifest.name.as_str()).map_err(Failure::refused)?;
    let values = policy_and_values(
        &manifest,
        &manifest_sha256,
        old_receipt.as_ref(),
        opts.allow_downgrade,
        root,
        bundle.values_file,
        bundle.sets,
    )?;
    if let Some(problem) =
        preflight::check_staging_space(bundle.staging_base, manifest.total_artifact_bytes())
    {
        return Err(Failure::refused(problem));
    }
    let staging = Staging::create(bundle.staging_base).map_err(|e| {
        Failure::refused(format!(
            "cannot create the staging directory in {}: {e}",
            bundle.staging_base.display()
        ))
    })?;
    out.set_total(manifest.total_artifact_bytes());
    let verified = reader.read_artifacts(&mut staging.sink(), out);
    out.end_progress();
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            staging.remove();
            return Err(read_failure(bundle.label, e));
        }
    };
    out.line(&format!(
        "  {} artifacts ({} bytes) verified and staged{}",
        manifest.carried().count(),
        verified.artifact_bytes,
        manifest.left_out()
    ));
    Ok(Prepared {
        manifest,
        manifest_sha256,
        key_id,
        values,
        old_receipt,
        staging,
        artifact_bytes: verified.artifact_bytes,
        signed: Some(signed),
        sbom: verified.sbom,
    })
}

/// The first half from the staged bundle `name` (`apply`): its signature
/// against the trusted keys and every artifact's sha256 (exit 3), then
/// policy and the staged variable values against the host as it is now
/// (exit 4). The staged copy itself is never changed here.
pub fn prepare_staged(
    name: &str,
    root: &Root,
    trusted: &TrustedKeys,
    state: &StateDir,
    out: &Out,
) -> Result<(Prepared, StagedInfo), Failure> {
    out.phase(1, "verify staged bundle");
    let loaded = staged::load(&state.dir, name, trusted, &Limits::default()).map_err(|e| {
        match &e {
            StagedError::NotStaged { .. } => Failure::other(e.to_string()),
            StagedError::Verify { .. } | StagedError::Damaged { .. } => {
                let mut f = Failure::verify(e.to_string());
                f.hint = Some(format!(
                    "nothing was changed: the staged copy does not verify; run install-bundle unstage {name} and stage the bundle again"
                ));
                f
            }
            StagedError::Io { .. } => Failure::other(e.to_string()),
        }
    })?;
    let manifest = loaded.manifest;
    out.line(&format!(
        "  {} {} (serial {}) staged {} from {}, signed by trusted key {}",
        manifest.name,
        manifest.version,
        manifest.serial,
        loaded.info.staged_at,
        loaded.info.bundle,
        loaded.key_id
    ));
    out.line(&format!(
        "  {} artifacts ({} bytes) verified again{}",
        manifest.carried().count(),
        loaded.artifact_bytes,
        manifest.left_out()
    ));
    let old_receipt =
        receipt::read(&state.dir, manifest.name.as_str()).map_err(Failure::refused)?;
    let values = policy_and_values(
        &manifest,
        &loaded.manifest_sha256,
        old_receipt.as_ref(),
        loaded.info.allow_downgrade,
        root,
        Some(&loaded.values_file),
        &[],
    )?;
    Ok((
        Prepared {
            manifest,
            manifest_sha256: loaded.manifest_sha256,
            key_id: loaded.key_id,
            values,
            old_receipt,
            staging: loaded.staging,
            artifact_bytes: loaded.artifact_bytes,
            signed: None,
            sbom: loaded.sbom,
        },
        loaded.info,
    ))
}

/// The plan and what it means for the receipt.
#[derive(Debug)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The receipt the install writes.
    pub receipt: Receipt,
    /// Whether it differs from the installed one (but for its time).
    pub receipt_changed: bool,
    /// Operations that change the host.
    pub changes: usize,
}

impl Planned {
    /// Nothing to do: no operation changes the host and the receipt is the same.
    pub fn up_to_date(&self) -> bool {
        self.changes == 0 && !self.receipt_changed
    }
}

/// Phases 2 and 3: preflight and the plan, printed.
pub fn plan(p: &Prepared, opts: &Options, root: &Root, out: &Out) -> Result<Planned, Failure> {
    out.phase(2, "preflight");
    let ctx = plan::Context {
        root,
        manifest: &p.manifest,
        staging: &p.staging,
        vars: &p.values,
        no_start: opts.no_start,
        first_install: p.old_receipt.is_none(),
        deb_downgrade: if opts.allow_deb_downgrade {
            plan::DebDowngrade::Allow
        } else {
            plan::DebDowngrade::Keep
        },
        previous_images: p.old_receipt.as_ref().map_or(&[], |r| r.images.as_slice()),
    };
    let the_plan =
        plan::build(&ctx).map_err(|e| Failure::refused_all("preflight failed".into(), e))?;
    let problems = preflight::check(root, &p.manifest, &the_plan);
    if !problems.is_empty() {
        return Err(Failure::refused_all("preflight failed".into(), problems));
    }
    out.line("  ok");
    out.phase(3, "plan");
    for op in &the_plan.first {
        out.line(&format!("  first: {}", op.describe()));
    }
    for sp in &the_plan.steps {
        for op in &sp.ops {
            out.line(&format!(
                "  step {} {}: {}",
                sp.number,
                sp.kind,
                op.describe()
            ));
        }
        if sp.ops.is_empty() {
            out.line(&format!(
                "  step {} {}: nothing to do here",
                sp.number, sp.kind
            ));
        }
    }
    for op in &the_plan.finally {
        out.line(&format!("  finally: {}", op.describe()));
    }
    let new_receipt = make_receipt(
        &p.manifest,
        &p.manifest_sha256.to_string(),
        &p.key_id.to_string(),
        &p.values,
        &the_plan,
    );
    let receipt_changed = p
        .old_receipt
        .as_ref()
        .is_none_or(|r| !r.same_content(&new_receipt));
    let changes = the_plan.changes();
    Ok(Planned {
        plan: the_plan,
        receipt: new_receipt,
        receipt_changed,
        changes,
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Changes were made (or only the receipt was rewritten).
    Installed,
    /// Nothing to do.
    Unchanged,
}

impl Outcome {
    /// The `result` of the JSON document.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Phases 4 and 5: the journaled apply and the receipt; rolled back (exit
/// 5, or 6 when that is incomplete) on any failure.
pub fn apply(
    p: &Prepared,
    planned: &Planned,
    root: &Root,
    state: &StateDir,
    out: &Out,
) -> Result<Outcome, Failure> {
    let manifest = &p.manifest;
    out.phase(4, "apply");
    if planned.up_to_date() {
        out.line("  nothing to do");
        out.phase(5, "receipt");
        out.line(&format!(
            "  unchanged; 0 changed: {} {} is installed",
            manifest.name, manifest.version
        ));
        return Ok(Outcome::Unchanged);
    }
    let mut tx = Transaction::begin(
        root,
        &state.dir,
        manifest.name.as_str(),
        manifest.version.as_str(),
        manifest.serial.get(),
    )
    .map_err(|e| {
        Failure::rolled_back(
            format!(
                "apply failed before changing anything: cannot start the journal in {}: {e}",
                state.dir.display()
            ),
            vec!["0 changes rolled back".into()],
        )
    })?;
    let applied = apply_mod::apply(root, manifest, &p.staging, &planned.plan, &mut tx, out)
        .map_err(|e| e.to_string());
    let committed = applied.and_then(|()| {
        out.phase(5, "receipt");
        if planned.receipt_changed {
            let target = format!("{STATE_TARGET}/{}.json", manifest.name);
            tx.write_file(&target, 0o644, &mut &planned.receipt.to_bytes()[..])
                .map_err(|e| format!("writing the receipt {target}: {e}"))?;
            // The bundle's SBOM (verified with it) is kept beside the receipt.
            if let Some(sbom) = &p.sbom {
                let target = format!("{STATE_TARGET}/sbom/{}.cdx.json", manifest.name);
                tx.write_file(&target, 0o644, &mut &sbom[..])
                    .map_err(|e| format!("writing the SBOM {target}: {e}"))?;
            }
        }
        Ok(())
    });
    let message = match committed {
        Ok(()) => match tx.commit() {
            Ok(cleanup) => {
                if let Some(e) = cleanup {
                    out.warn(&format!(
                        "installed, but the journal's clean-up failed ({e}); the next run finishes it"
                    ));
                }
                out.line(&format!(
                    "  {} changed: {} {} (serial {}) installed",
                    planned.changes, manifest.name, manifest.version, manifest.serial
                ));
                return Ok(Outcome::Installed);
            }
            // Not committed (a full disk): roll back like any failure.
            Err((uncommitted, e)) => {
                tx = uncommitted;
                format!("writing the journal's commit record: {e}")
            }
        },
        Err(message) => message,
    };
    let report = tx.rollback();
    let details = report.details();
    if report.complete() {
        Err(Failure::rolled_back(
            format!("apply failed and was rolled back: {message}"),
            details,
        ))
    } else {
        Err(Failure::incomplete(
            format!("apply failed and could not be fully rolled back: {message}"),
            details,
        ))
    }
}

/// The JSON document of `install`, `plan`, `apply` and `stage`: what the
/// bundle is, how many operations change the host, the whole plan, the
/// apply's time per step, and with `--diff` each changed file's before and
/// after.
pub fn document(
    result: &str,
    p: &Prepared,
    planned: &Planned,
    opts: &Options,
    root: &Root,
    out: &Out,
) -> Value {
    let steps: Vec<Value> = out
        .step_timings()
        .into_iter()
        .map(|(number, kind, seconds)| json!({"step": number, "kind": kind, "seconds": seconds}))
        .collect();
    let mut doc = json!({
        "result": result, "name": p.manifest.name, "version": p.manifest.version,
        "serial": p.manifest.serial, "key_id": p.key_id.to_string(),
        "manifest_sha256": p.manifest_sha256, "changed": planned.changes,
        "receipt_changed": planned.receipt_changed,
        "plan": serde_json::to_value(&planned.plan).unwrap_or_default(),
        "timings": {"apply_steps": steps},
    });
    if opts.diff {
        doc["diff"] = Value::Array(diff(root, &planned.plan));
    }
    doc
}

/// Text shown in a diff: files up to this size that are UTF-8.
pub const DIFF_TEXT_LIMIT: u64 = 64 * 1024;

fn text_of(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(t) if bytes.len() as u64 <= DIFF_TEXT_LIMIT && !t.contains('\0') => json!(t),
        _ => Value::Null,
    }
}

/// The current state of `target` for a diff: `null` when absent.
fn before_of(root: &Root, target: &str) -> Value {
    let meta = match root.lstat(target) {
        Ok(Some(m)) => m,
        _ => return Value::Null,
    };
    let mode = format!("{:04o}", meta.mode);
    if meta.kind != crate::paths::Kind::File {
        let kind = match meta.kind {
            crate::paths::Kind::Dir => "directory",
            crate::paths::Kind::Symlink => "symlink",
            _ => "other",
        };
        return json!({"kind": kind, "mode": mode});
    }
    let mut bytes = Vec::new();
    let read = root
        .open_nofollow(target)
        .and_then(|f| f.take(DIFF_TEXT_LIMIT + 1).read_to_end(&mut bytes));
    let text = if read.is_ok() {
        text_of(&bytes)
    } else {
        Value::Null
    };
    let sha256 = root
        .open_nofollow(target)
        .and_then(Sha256Digest::of_reader)
        .map(|(d, n)| (d.to_string(), n));
    match sha256 {
        Ok((d, n)) => {
            json!({"kind": "file", "mode": mode, "size": n, "sha256": d, "text": text})
        }
        Err(_) => json!({"kind": "file", "mode": mode, "text": text}),
    }
}

/// Each file, directory and symlink the plan changes, with its state now
/// (`before`, `null` when absent) and after the install; `text` is the
/// content when it is UTF-8 and at most [`DIFF_TEXT_LIMIT`] bytes (else
/// `null`: binaries, archive members, large files).
pub fn diff(root: &Root, plan: &Plan) -> Vec<Value> {
    let mut out = Vec::new();
    for op in plan.ops() {
        match op {
            Op::File {
                target,
                source,
                sha256,
                size,
                mode,
                change,
            } if *change != Change::Unchanged => {
                let text = match source {
                    Source::Inline(bytes) => text_of(bytes),
                    Source::Staged(path) if *size <= DIFF_TEXT_LIMIT => std::fs::read(path)
                        .map(|b| text_of(&b))
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                out.push(json!({
                    "path": target, "kind": "file", "change": change_word(change),
                    "before": before_of(root, target),
                    "after": {"kind": "file", "mode": format!("{mode:04o}"), "size": size,
                              "sha256": sha256, "text": text},
                }));
            }
            Op::Dir {
                target,
                mode,
                change,
                ..
            } if *change != Change::Unchanged => out.push(json!({
                "path": target, "kind": "directory", "change": change_word(change),
                "before": before_of(root, target),
                "after": {"kind": "directory", "mode": format!("{mode:04o}")},
            })),
            Op::Link { target, to, change } if *change != Change::Unchanged => {
                let before = match root.parent(target).and_then(|(d, n)| d.read_link(&n)) {
                    Ok(t) => json!({"kind": "symlink", "to": t.to_string_lossy()}),
                    Err(_) => before_of(root, target),
                };
                out.push(json!({
                    "path": target, "kind": "symlink", "change": change_word(change),
                    "before": before,
                    "after": {"kind": "symlink", "to": to},
                }));
            }
            _ => {}
        }
    }
    out
}

fn change_word(c: &Change) -> &'static str {
    match c {
        Change::Create => "create",
        Change::Update => "update",
        Change::Mode(_) => "mode",
        Change::Unchanged => "unchanged",
    }
}

/// The receipt an install of `plan` writes.
pub fn make_receipt(
    manifest: &Manifest,
    manifest_sha256: &str,
    key_id: &str,
    values: &BTreeMap<String, String>,
    plan: &Plan,
) -> Receipt {
    let mut paths = Vec::new();
    let mut packages = Vec::new();
    let mut images = Vec::new();
    // swap-off edits /etc/fstab but does not own it: it is not a managed path.
    let owned = plan
        .steps
        .iter()
        .filter(|s| s.kind != "swap-off")
        .flat_map(|s| s.ops.iter())
        .chain(plan.finally.iter());
    for op in owned {
        match op {
            Op::File {
                target,
                sha256,
                mode,
                ..
            } => paths.push(InstalledPath {
                path: target.clone(),
                kind: "file".into(),
                mode: Some(format!("{mode:04o}")),
                sha256: Some(sha256.to_string()),
                target: None,
            }),
            Op::Dir { target, mode, .. } => paths.push(InstalledPath {
                path: target.clone(),
                kind: "directory".into(),
                mode: Some(format!("{mode:04o}")),
                sha256: None,
                target: None,
            }),
            Op::Link { target, to, .. } => paths.push(InstalledPath {
                path: target.clone(),
                kind: "symlink".into(),
                mode: None,
                sha256: None,
                target: Some(to.clone()),
            }),
            Op::Dpkg {
                install,
                present,
                kept,
            } => {
                packages.extend(kept.iter().map(|(name, installed, _)| InstalledPackage {
                    name: name.clone(),
                    version: installed.clone(),
                }));
                packages.extend(install.iter().map(|d| InstalledPackage {
                    name: d.package.clone(),
                    version: d.version.clone(),
                }));
                packages.extend(present.iter().filter_map(|p| {
                    p.split_once(' ').map(|(n, v)| InstalledPackage {
                        name: n.to_owned(),
                        version: v.to_owned(),
                    })
                }));
            }
            Op::Image {
                name,
                reference,
                digest,
                namespace,
                pin,
                daemon,
                change,
                ..
            } => {
                if *change != crate::images::ImageChange::Unpin {
                    images.push(InstalledImage {
                        name: name.clone(),
                        reference: reference.clone(),
                        digest: digest.clone(),
                        namespace: namespace.clone(),
                        pinned: *pin,
                        address: match daemon {
                            crate::images::Daemon::Live(a) => Some(a.clone()),
                            crate::images::Daemon::Private => None,
                        },
                    });
                }
            }
            Op::Run { .. } => {}
        }
    }
    Receipt {
        format: RECEIPT_FORMAT.into(),
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        serial: manifest.serial.get(),
        manifest_sha256: manifest_sha256.to_owned(),
        key_id: key_id.to_owned(),
        installed_at: Timestamp::now().to_string(),
        variables: values.clone(),
        paths,
        packages,
        images,
    }
}
