//! `install-bundle`: verifies a signed bundle completely, then installs it
//! transactionally. read → verify → stage → preflight → plan → apply.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use bundle_spec::read::{BundleReader, DiscardSink, ReadError};
use bundle_spec::{Limits, Timestamp};
use clap::{Args, Parser, Subcommand};
use install_bundle::exit::Failure;
use install_bundle::journal::{self, Recovery, Transaction};
use install_bundle::output::{Out, Verbosity};
use install_bundle::paths::Root;
use install_bundle::policy::{self, Downgrade};
use install_bundle::receipt::{
    self, InstalledImage, InstalledPackage, InstalledPath, RECEIPT_FORMAT, Receipt,
};
use install_bundle::stage::{STATE_TARGET, Staging, StateDir};
use install_bundle::{apply, plan, preflight, trust, vars};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "install-bundle",
    version,
    about = "Verify a signed install bundle, then install it transactionally",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Exit codes: 0 installed or nothing to do, 1 other error, 2 usage, 3 verification failed (host untouched), \
4 refused by policy or preflight (host untouched), 5 apply failed and rolled back, 6 apply failed and could not fully roll back."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    install: InstallArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a bundle completely (signature, manifest, every byte); change nothing.
    Verify(VerifyArgs),
    /// Show what is installed, from receipts; with NAME, also check its files.
    Status(StatusArgs),
    /// Print what installing would change (same as --dry-run).
    Plan(InstallArgs),
    /// Roll back an interrupted install (every install does this first) and stop.
    Recover(RecoverArgs),
    /// Install a bundle (the default command).
    Install(InstallArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Install into this root directory instead of / (paths prefixed, debs via dpkg --root, nothing started).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Trust this public key too (repeatable).
    #[arg(long = "trusted-key", value_name = "FILE")]
    trusted_keys: Vec<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct InstallArgs {
    /// The bundle file, - for standard input, or a split bundle's parts
    /// index (NAME.tar.zst.parts.json) or first part (NAME.tar.zst.001).
    #[arg(required = true, value_name = "BUNDLE")]
    bundle: Option<String>,
    /// Set a variable (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// Read variables from a JSON object of strings.
    #[arg(long, value_name = "FILE.json")]
    values: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Accept a lower serial than the installed one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Install bundled .debs older than the installed packages (by default
    /// the newer installed one is kept, and a bundled package that needs the
    /// older version is refused).
    #[arg(long)]
    allow_deb_downgrade: bool,
    /// Do not start or restart services.
    #[arg(long)]
    no_start: bool,
    /// Where to stage verified artifacts [default: ROOT/var/lib/install-bundle].
    #[arg(long, value_name = "DIR")]
    staging_dir: Option<PathBuf>,
    /// Further directories holding parts of a split bundle (repeatable).
    #[arg(long = "parts-dir", value_name = "DIR")]
    parts_dirs: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct VerifyArgs {
    /// The bundle file, - for standard input, or a split bundle's parts
    /// index (NAME.tar.zst.parts.json) or first part (NAME.tar.zst.001).
    bundle: String,
    /// Further directories holding parts of a split bundle (repeatable).
    #[arg(long = "parts-dir", value_name = "DIR")]
    parts_dirs: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct RecoverArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct StatusArgs {
    /// A bundle name: show its receipt and check every file it installed.
    name: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn verbosity(c: &Common) -> Verbosity {
    if c.json {
        Verbosity::Json
    } else if c.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, out) = match cli.command {
        Some(Command::Verify(a)) => {
            let out = Out::new(verbosity(&a.common));
            (verify(&a, &out), out)
        }
        Some(Command::Status(a)) => {
            let out = Out::new(verbosity(&a.common));
            (status(&a, &out), out)
        }
        Some(Command::Recover(a)) => {
            let out = Out::new(verbosity(&a.common));
            (recover(&a, &out), out)
        }
        Some(Command::Plan(mut a)) => {
            a.dry_run = true;
            let out = Out::new(verbosity(&a.common));
            (install(&a, &out), out)
        }
        Some(Command::Install(a)) => {
            let out = Out::new(verbosity(&a.common));
            (install(&a, &out), out)
        }
        None => {
            let out = Out::new(verbosity(&cli.install.common));
            (install(&cli.install, &out), out)
        }
    };
    match result {
        Ok(doc) => {
            if out.verbosity == Verbosity::Json {
                out.print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if out.verbosity == Verbosity::Json {
                let doc = f.json.as_deref().cloned().unwrap_or_else(|| {
                    json!({
                        "result": f.kind.word(), "exit_code": f.kind.code(), "error": f.message, "details": f.details,
                    })
                });
                out.print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            eprintln!("error: {}", f.message);
            for d in &f.details {
                eprintln!("  {d}");
            }
            if let Some(hint) = &f.hint {
                eprintln!("{hint}");
            }
            ExitCode::from(f.kind.code())
        }
    }
}

fn root_of(c: &Common) -> Result<Root, Failure> {
    match &c.root {
        Some(dir) => Root::new(dir).map_err(|e| Failure::usage(e.to_string())),
        None => Root::host().map_err(|e| Failure::other(e.to_string())),
    }
}

/// The bundle's bytes: the file, standard input (`-`), or, for a parts
/// index (`NAME.tar.zst.parts.json`) or a first part (`NAME.tar.zst.001`),
/// the parts read in order with every block checked and rebuilt from parity
/// where needed (`bundle_spec::parts`), after the index's signature verified
/// against the trusted keys. Parts are looked for beside the index and in
/// `parts_dirs` (several sticks).
fn open_bundle(
    bundle: &str,
    trusted: &bundle_spec::sign::TrustedKeys,
    parts_dirs: &[PathBuf],
    out: &Out,
) -> Result<Box<dyn Read>, Failure> {
    use bundle_spec::parts;
    let index_path = match (bundle.strip_suffix(".001"), bundle.ends_with(".parts.json")) {
        (Some(base), _) => PathBuf::from(format!("{base}.parts.json")),
        (None, true) => PathBuf::from(bundle),
        (None, false) => return open_input(bundle),
    };
    let index = parts::read_index(&index_path, trusted)
        .map_err(|e| Failure::verify(format!("{bundle}: verification failed: {e}")))?;
    let mut dirs = vec![
        index_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), std::path::Path::to_owned),
    ];
    dirs.extend(parts_dirs.iter().cloned());
    let paths = parts::locate(&index, &dirs);
    let (data, parity) = (index.data_parts, index.parity_parts);
    let reader = parts::PartsReader::open(index, paths)
        .map_err(|e| Failure::verify(format!("{bundle}: {e}")))?;
    out.line(&format!(
        "  reading {data} data part(s) with {parity} parity part(s){}",
        if reader.repairs().lost.is_empty() {
            String::new()
        } else {
            format!("; rebuilding {}", reader.repairs().lost.join(", "))
        }
    ));
    Ok(Box::new(reader))
}

fn open_input(bundle: &str) -> Result<Box<dyn Read>, Failure> {
    if bundle == "-" {
        Ok(Box::new(std::io::stdin().lock()))
    } else {
        File::open(bundle)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|e| Failure::other(format!("cannot open bundle {bundle}: {e}")))
    }
}

fn read_failure(bundle: &str, e: ReadError) -> Failure {
    match e {
        ReadError::Sink { .. } => Failure::refused(format!("{bundle}: {e}")),
        other => Failure::verify(format!("{bundle}: verification failed: {other}")),
    }
}

fn verify(a: &VerifyArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    let trusted = trust::trusted_keys(&root, &a.common.trusted_keys).map_err(Failure::key)?;
    let reader = BundleReader::open(
        open_bundle(&a.bundle, &trusted, &a.parts_dirs, out)?,
        &trusted,
        &Limits::default(),
    )
    .map_err(|e| read_failure(&a.bundle, e))?;
    out.set_total(reader.manifest().total_artifact_bytes());
    let v = reader
        .read_artifacts(&mut DiscardSink, out)
        .map_err(|e| read_failure(&a.bundle, e));
    out.end_progress();
    let v = v?;
    let m = &v.manifest;
    out.line(&format!(
        "OK {}: {} {} (serial {}), signed by trusted key {}, {} artifacts ({} bytes) verified",
        a.bundle,
        m.name,
        m.version,
        m.serial,
        v.key_id,
        m.artifacts.len(),
        v.artifact_bytes
    ));
    let now = Timestamp::now();
    let expired = bundle_spec::time::is_expired(m.expires, now);
    out.line(&format!("  created {}", m.created));
    out.line(&format!(
        "  {}",
        bundle_spec::time::describe_expiry(m.expires, now)
    ));
    if let Some(e) = m.expires.filter(|_| expired) {
        out.warn(&format!(
            "the bundle expired at {e}; installing it will be refused"
        ));
    }
    Ok(
        json!({"result": "verified", "name": m.name, "version": m.version, "serial": m.serial,
              "key_id": v.key_id.to_string(), "manifest_sha256": v.manifest_sha256, "artifact_bytes": v.artifact_bytes,
              "created": m.created, "expires": m.expires, "now": now, "expired": expired}),
    )
}

fn status(a: &StatusArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    // Read only: a missing state directory means nothing is installed.
    let state = root
        .open_dir(STATE_TARGET)
        .and_then(|d| d.real_path())
        .unwrap_or_else(|_| root.display(STATE_TARGET));
    let receipts = match &a.name {
        Some(n) => match receipt::read(&state, n).map_err(Failure::other)? {
            Some(r) => vec![r],
            None => {
                return Err(Failure::other(format!(
                    "{n} is not installed under {}",
                    root.path().display()
                )));
            }
        },
        None => receipt::read_all(&state).map_err(Failure::other)?,
    };
    if receipts.is_empty() {
        out.line(&format!(
            "no bundle is installed under {}",
            root.path().display()
        ));
    }
    let mut docs = Vec::new();
    for r in &receipts {
        out.line(&format!(
            "{} {} (serial {}), installed {}, signed by key {}, {} paths, {} packages",
            r.name,
            r.version,
            r.serial,
            r.installed_at,
            r.key_id,
            r.paths.len(),
            r.packages.len()
        ));
        let mut drift = Vec::new();
        if a.name.is_some() {
            for (k, v) in &r.variables {
                out.line(&format!("  variable {k}={v}"));
            }
            for p in &r.paths {
                let problem = install_bundle::status::check_path(&root, p);
                out.line(&format!(
                    "  {:<10} {} {}",
                    p.kind,
                    p.path,
                    problem.as_deref().unwrap_or("ok")
                ));
                if let Some(problem) = problem {
                    drift.push(json!({"path": p.path, "problem": problem}));
                }
            }
            for p in &r.packages {
                out.line(&format!("  package    {} {}", p.name, p.version));
            }
            for (img, problem) in check_images(&root, &r.images) {
                out.line(&format!(
                    "  image      {} {} {}",
                    img.reference,
                    img.digest,
                    problem
                        .as_deref()
                        .unwrap_or(if img.pinned { "ok (pinned)" } else { "ok" })
                ));
                if let Some(problem) = problem {
                    drift.push(json!({"image": img.reference, "problem": problem}));
                }
            }
        }
        docs.push(json!({"receipt": r, "drift": drift}));
    }
    let drifted: Vec<String> = docs
        .iter()
        .flat_map(|d| d["drift"].as_array().cloned().unwrap_or_default())
        .map(|d| {
            format!(
                "{}: {}",
                d.get("path")
                    .or(d.get("image"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?"),
                d["problem"].as_str().unwrap_or("")
            )
        })
        .collect();
    if !drifted.is_empty() {
        let mut f = Failure::drift(
            format!("{} item(s) differ from what was installed", drifted.len()),
            drifted,
        );
        f.json = Some(Box::new(
            json!({"result": "drift", "exit_code": f.kind.code(), "bundles": docs}),
        ));
        return Err(f);
    }
    Ok(json!({"result": "status", "bundles": docs}))
}

/// Each installed image and what is wrong with it now (`None`: as
/// installed), asking the containerd that imported it (a private one on the
/// root's data when it was imported below `--root`).
fn check_images<'a>(
    root: &Root,
    images: &'a [InstalledImage],
) -> Vec<(&'a InstalledImage, Option<String>)> {
    use install_bundle::images;
    if images.is_empty() {
        return Vec::new();
    }
    let mut private: Option<Result<images::PrivateContainerd, String>> = None;
    images
        .iter()
        .map(|img| {
            let problem = match (&img.address, root.is_host()) {
                (Some(address), true) => match images::ctr_binary(root) {
                    Some(ctr) => images::check_image(
                        &images::Ctr::new(ctr, address),
                        &img.namespace,
                        &img.reference,
                        &img.digest,
                        img.pinned,
                    ),
                    None => Some("cannot check: no ctr on this machine".into()),
                },
                _ => {
                    let daemon = private.get_or_insert_with(|| {
                        let data = images::data_root(root);
                        let real = root
                            .open_dir(&data)
                            .and_then(|d| d.real_path())
                            .map_err(|e| format!("containerd's data {data}: {e}"))?;
                        let (containerd, ctr) = images::private_binaries(root)?;
                        images::PrivateContainerd::start(&containerd, &ctr, &real)
                    });
                    match daemon {
                        Ok(d) => images::check_image(
                            &d.ctr,
                            &img.namespace,
                            &img.reference,
                            &img.digest,
                            img.pinned,
                        ),
                        Err(e) => Some(format!("cannot check: {e}")),
                    }
                }
            };
            (img, problem)
        })
        .collect()
}

/// Rolls back (or finishes the clean-up of) an interrupted run. Fails (exit
/// 6) only when an undo failed: a completed command that cannot be undone
/// (dpkg ran) is reported, and the install that follows goes on.
fn finish_interrupted(root: &Root, state: &StateDir, out: &Out) -> Result<Recovery, Failure> {
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

/// `recover`: the same rules and exit codes as a failed install: 0 when there
/// was nothing to do (or only a committed run's clean-up), 5 when an
/// interrupted install was rolled back completely, 6 when the host is not
/// fully as it was.
fn recover(a: &RecoverArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    let state = StateDir::open(&root).map_err(|e| match e {
        install_bundle::stage::StateError::Locked(_) => Failure::refused(e.to_string()),
        other => Failure::other(other.to_string()),
    })?;
    let result = finish_interrupted(&root, &state, out);
    // A leftover staging directory belongs to the interrupted run.
    let _ = std::fs::remove_dir_all(state.dir.join("staging"));
    state.release();
    match result? {
        Recovery::Clean => {
            out.line("nothing to recover");
            Ok(json!({"result": "clean"}))
        }
        Recovery::FinishedCommit => Ok(json!({"result": "finished-commit"})),
        Recovery::RolledBack { bundle, report } if report.complete() => Err(Failure::rolled_back(
            format!("an interrupted install of {bundle} was rolled back"),
            report.details(),
        )),
        Recovery::RolledBack { bundle, report } => Err(Failure::incomplete(
            format!("an interrupted install of {bundle} could not be fully rolled back"),
            report.details(),
        )),
    }
}

fn install(a: &InstallArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let bundle = a
        .bundle
        .as_deref()
        .ok_or_else(|| Failure::usage("a BUNDLE is required".into()))?;
    let root = root_of(&a.common)?;
    let trusted = trust::trusted_keys(&root, &a.common.trusted_keys).map_err(Failure::key)?;
    let state = StateDir::open(&root).map_err(|e| match e {
        install_bundle::stage::StateError::Locked(_) => Failure::refused(e.to_string()),
        other => Failure::other(other.to_string()),
    })?;
    let result = install_locked(a, out, bundle, &root, &trusted, &state);
    state.release();
    result
}

fn install_locked(
    a: &InstallArgs,
    out: &Out,
    bundle: &str,
    root: &Root,
    trusted: &bundle_spec::sign::TrustedKeys,
    state: &StateDir,
) -> Result<serde_json::Value, Failure> {
    // An interrupted earlier run is finished (rolled back) before anything else.
    if a.dry_run {
        if state.dir.join(journal::JOURNAL_FILE).exists() {
            out.warn(
                "an interrupted install left a journal; the next real run rolls it back first",
            );
        }
    } else {
        finish_interrupted(root, state, out)?;
    }

    // 1. Verify & stage.
    out.phase(1, "verify & stage");
    let limits = Limits::default();
    let reader = BundleReader::open(
        open_bundle(bundle, trusted, &a.parts_dirs, out)?,
        trusted,
        &limits,
    )
    .map_err(|e| read_failure(bundle, e))?;
    let manifest = reader.manifest().clone();
    let manifest_sha256 = reader.manifest_sha256();
    let key_id = reader.key_id();
    out.line(&format!(
        "  {} {} (serial {}) signed by trusted key {key_id}",
        manifest.name, manifest.version, manifest.serial
    ));
    let old_receipt =
        receipt::read(&state.dir, manifest.name.as_str()).map_err(Failure::refused)?;
    let mut problems = policy::check(
        &manifest,
        &manifest_sha256.to_string(),
        old_receipt.as_ref(),
        if a.allow_downgrade {
            Downgrade::Allow
        } else {
            Downgrade::Refuse
        },
        root,
        Timestamp::now(),
    );
    let values = vars::resolve(&manifest.variables, a.values.as_deref(), &a.sets);
    if let Err(v) = &values {
        problems.extend(v.iter().cloned());
    }
    if !problems.is_empty() {
        return Err(Failure::refused_all(
            format!("{} {} refused", manifest.name, manifest.version),
            problems,
        ));
    }
    let values = values.unwrap_or_default();
    let staging_base = a.staging_dir.clone().unwrap_or_else(|| state.dir.clone());
    if let Some(problem) =
        preflight::check_staging_space(&staging_base, manifest.total_artifact_bytes())
    {
        return Err(Failure::refused(problem));
    }
    let staging = Staging::create(&staging_base).map_err(|e| {
        Failure::refused(format!(
            "cannot create the staging directory in {}: {e}",
            staging_base.display()
        ))
    })?;
    let result = install_staged(
        a,
        out,
        reader,
        root,
        state,
        &staging,
        &manifest,
        manifest_sha256,
        key_id,
        &values,
        old_receipt,
    );
    staging.remove();
    result
}

#[allow(clippy::too_many_arguments)]
fn install_staged<R: Read>(
    a: &InstallArgs,
    out: &Out,
    reader: BundleReader<R>,
    root: &Root,
    state: &StateDir,
    staging: &Staging,
    manifest: &bundle_spec::spec::Manifest,
    manifest_sha256: bundle_spec::Sha256Digest,
    key_id: bundle_spec::sign::KeyId,
    values: &std::collections::BTreeMap<String, String>,
    old_receipt: Option<Receipt>,
) -> Result<serde_json::Value, Failure> {
    let bundle = a.bundle.as_deref().unwrap_or("-");
    out.set_total(manifest.total_artifact_bytes());
    let staged = reader.read_artifacts(&mut staging.sink(), out);
    out.end_progress();
    let verified = staged.map_err(|e| read_failure(bundle, e))?;
    out.line(&format!(
        "  {} artifacts ({} bytes) verified and staged",
        manifest.artifacts.len(),
        verified.artifact_bytes
    ));

    // 2. Preflight and 3. plan.
    out.phase(2, "preflight");
    let ctx = plan::Context {
        root,
        manifest,
        staging,
        vars: values,
        no_start: a.no_start,
        first_install: old_receipt.is_none(),
        deb_downgrade: if a.allow_deb_downgrade {
            plan::DebDowngrade::Allow
        } else {
            plan::DebDowngrade::Keep
        },
        previous_images: old_receipt.as_ref().map_or(&[], |r| r.images.as_slice()),
    };
    let the_plan =
        plan::build(&ctx).map_err(|p| Failure::refused_all("preflight failed".into(), p))?;
    let problems = preflight::check(root, manifest, &the_plan);
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
        manifest,
        &manifest_sha256.to_string(),
        &key_id.to_string(),
        values,
        &the_plan,
    );
    let receipt_changed = old_receipt
        .as_ref()
        .is_none_or(|r| !r.same_content(&new_receipt));
    let changes = the_plan.changes();
    let plan_json = serde_json::to_value(&the_plan).unwrap_or_default();
    let doc = |result: &str, changed: usize| {
        let steps: Vec<serde_json::Value> = out
            .step_timings()
            .into_iter()
            .map(
                |(number, kind, seconds)| json!({"step": number, "kind": kind, "seconds": seconds}),
            )
            .collect();
        json!({"result": result, "name": manifest.name, "version": manifest.version, "serial": manifest.serial,
               "key_id": key_id.to_string(), "manifest_sha256": manifest_sha256, "changed": changed, "plan": plan_json,
               "timings": {"apply_steps": steps}})
    };
    if a.dry_run {
        out.line(&format!("dry run: {changes} changes planned, nothing done"));
        return Ok(doc("planned", changes));
    }

    // 4. Apply.
    out.phase(4, "apply");
    if changes == 0 && !receipt_changed {
        out.line("  nothing to do");
        out.phase(5, "receipt");
        out.line(&format!(
            "  unchanged; 0 changed: {} {} is installed",
            manifest.name, manifest.version
        ));
        return Ok(doc("unchanged", 0));
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
    let applied =
        apply::apply(root, manifest, staging, &the_plan, &mut tx, out).map_err(|e| e.to_string());
    // 5. Receipt.
    let committed = applied.and_then(|()| {
        out.phase(5, "receipt");
        if receipt_changed {
            let target = format!("{STATE_TARGET}/{}.json", manifest.name);
            tx.write_file(&target, 0o644, &mut &new_receipt.to_bytes()[..])
                .map_err(|e| format!("writing the receipt {target}: {e}"))?;
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
                    "  {changes} changed: {} {} (serial {}) installed",
                    manifest.name, manifest.version, manifest.serial
                ));
                return Ok(doc("installed", changes));
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

fn make_receipt(
    manifest: &bundle_spec::spec::Manifest,
    manifest_sha256: &str,
    key_id: &str,
    values: &std::collections::BTreeMap<String, String>,
    plan: &plan::Plan,
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
            plan::Op::File {
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
            plan::Op::Dir { target, mode, .. } => paths.push(InstalledPath {
                path: target.clone(),
                kind: "directory".into(),
                mode: Some(format!("{mode:04o}")),
                sha256: None,
                target: None,
            }),
            plan::Op::Link { target, to, .. } => paths.push(InstalledPath {
                path: target.clone(),
                kind: "symlink".into(),
                mode: None,
                sha256: None,
                target: Some(to.clone()),
            }),
            plan::Op::Dpkg {
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
            plan::Op::Image {
                name,
                reference,
                digest,
                namespace,
                pin,
                daemon,
                change,
                ..
            } => {
                if *change != install_bundle::images::ImageChange::Unpin {
                    images.push(InstalledImage {
                        name: name.clone(),
                        reference: reference.clone(),
                        digest: digest.clone(),
                        namespace: namespace.clone(),
                        pinned: *pin,
                        address: match daemon {
                            install_bundle::images::Daemon::Live(a) => Some(a.clone()),
                            install_bundle::images::Daemon::Private => None,
                        },
                    });
                }
            }
            plan::Op::Run { .. } => {}
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
