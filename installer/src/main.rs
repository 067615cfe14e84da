//! `install-bundle`: verifies a signed bundle completely, then installs it
//! transactionally. read → verify → stage → preflight → plan → apply.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use bundle_spec::read::{BundleReader, DiscardSink};
use bundle_spec::{Limits, Timestamp};
use clap::{Args, Parser, Subcommand};
use install_bundle::exit::Failure;
use install_bundle::flow::{self, read_failure};
use install_bundle::journal::{self, Recovery};
use install_bundle::output::{Out, Verbosity};
use install_bundle::paths::Root;
use install_bundle::receipt::{self, InstalledImage, Receipt};
use install_bundle::stage::{STATE_TARGET, StateDir};
use install_bundle::staged::{self, StagedInfo};
use install_bundle::trust;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "install-bundle",
    version,
    about = "Verify a signed install bundle, then install it transactionally",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Exit codes: 0 installed or nothing to do, 1 other error, 2 usage, 3 verification failed (host untouched), \
4 refused by policy or preflight (host untouched), 5 apply failed and rolled back, 6 apply failed and could not fully roll back, \
7 status found drift."
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
    #[command(
        after_help = "Examples:\n  install-bundle verify /media/usb/k8s-worker.tar.zst\n  install-bundle verify worker.tar.zst --trusted-key /etc/install-bundle/trusted.d/release.pub --json"
    )]
    Verify(VerifyArgs),
    /// Show what is installed, from receipts; with NAME, also check its files.
    #[command(
        after_help = "Examples:\n  install-bundle status\n  install-bundle status k8s-worker\n  install-bundle status k8s-worker --json --root /srv/images/worker"
    )]
    Status(StatusArgs),
    /// Print what installing would change (same as --dry-run).
    #[command(
        after_help = "Examples:\n  install-bundle plan worker.tar.zst --set POD_CIDR=10.200.1.0/24\n  install-bundle plan worker.tar.zst --values node.json --json --diff"
    )]
    Plan(InstallArgs),
    /// Roll back an interrupted install (every install does this first) and stop.
    #[command(
        after_help = "Examples:\n  install-bundle recover\n  install-bundle recover --root /srv/images/worker --json"
    )]
    Recover(RecoverArgs),
    /// Install a bundle (the default command).
    #[command(
        after_help = "Examples:\n  install-bundle install /media/usb/k8s-worker.tar.zst --set POD_CIDR=10.200.1.0/24\n  aws s3 cp s3://bundles/worker.tar.zst - | install-bundle install - --values node.json\n  install-bundle install worker.tar.zst --root /srv/images/worker --set POD_CIDR=10.200.1.0/24"
    )]
    Install(InstallArgs),
    /// Verify a bundle, run preflight and the plan, and keep it staged for
    /// `apply`; nothing else changes.
    #[command(
        after_help = "Examples:\n  install-bundle stage /media/usb/k8s-worker.tar.zst --set POD_CIDR=10.200.1.0/24\n  install-bundle stage worker.tar.zst --values node.json --json --diff"
    )]
    Stage(StageArgs),
    /// Install the staged bundle NAME (verified again first); success drops
    /// the staged copy.
    #[command(
        after_help = "Examples:\n  install-bundle apply k8s-worker\n  install-bundle apply k8s-worker --dry-run"
    )]
    Apply(ApplyArgs),
    /// Drop the staged bundle NAME.
    #[command(after_help = "Examples:\n  install-bundle unstage k8s-worker")]
    Unstage(UnstageArgs),
    /// Print shell completions for bash, zsh or fish on stdout.
    #[command(
        after_help = "Examples:\n  install-bundle completions bash > /usr/share/bash-completion/completions/install-bundle\n  install-bundle completions zsh > /usr/local/share/zsh/site-functions/_install-bundle\n  install-bundle completions fish > ~/.config/fish/completions/install-bundle.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (install-bundle.1 and one per subcommand) into a
    /// directory; only in builds with the `man` feature (`make man`).
    #[cfg(feature = "man")]
    #[command(hide = true)]
    Man {
        /// The directory.
        #[arg(long)]
        out: PathBuf,
    },
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
    /// With --json: each changed file's content before and after (text up to 64 KiB).
    #[arg(long)]
    diff: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct StageArgs {
    /// The bundle file, or - for standard input.
    #[arg(value_name = "BUNDLE")]
    bundle: String,
    /// Set a variable (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// Read variables from a JSON object of strings.
    #[arg(long, value_name = "FILE.json")]
    values: Option<PathBuf>,
    /// Further directories holding parts of a split bundle (repeatable).
    #[arg(long = "parts-dir", value_name = "DIR")]
    parts_dirs: Vec<PathBuf>,
    /// Verify and plan, say what staging would do, keep nothing.
    #[arg(long)]
    dry_run: bool,
    /// Accept a lower serial than the installed (or staged) one; `apply` does too.
    #[arg(long)]
    allow_downgrade: bool,
    /// Install bundled .debs older than the installed packages when applied.
    #[arg(long)]
    allow_deb_downgrade: bool,
    /// With --json: each changed file's content before and after (text up to 64 KiB).
    #[arg(long)]
    diff: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct ApplyArgs {
    /// The name of the staged bundle.
    #[arg(value_name = "NAME")]
    name: String,
    /// Do not start or restart services.
    #[arg(long)]
    no_start: bool,
    /// Verify the staged bundle and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --json: each changed file's content before and after (text up to 64 KiB).
    #[arg(long)]
    diff: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct UnstageArgs {
    /// The name of the staged bundle.
    #[arg(value_name = "NAME")]
    name: String,
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

/// Writes `install-bundle.1` and `install-bundle-SUB.1` for each visible
/// subcommand into `dir` (clap_mangen, from the same definitions as `--help`).
#[cfg(feature = "man")]
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_owned();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("{name}-{}", sub.get_name());
        pages.push((
            full.clone(),
            sub.clone()
                .name(full.clone())
                .bin_name(format!("{name} {}", sub.get_name())),
        ));
    }
    for (file, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(file.to_uppercase())
            .render(&mut out)?;
        std::fs::write(dir.join(format!("{file}.1")), out)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, out) = match cli.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "install-bundle", &mut script);
            let _ = std::io::stdout().write_all(&script);
            return ExitCode::SUCCESS;
        }
        #[cfg(feature = "man")]
        Some(Command::Man { out }) => {
            return match write_man_pages(&out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write man pages into {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            };
        }
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
        Some(Command::Stage(a)) => {
            let out = Out::new(verbosity(&a.common));
            (stage(&a, &out), out)
        }
        Some(Command::Apply(a)) => {
            let out = Out::new(verbosity(&a.common));
            (apply_staged(&a, &out), out)
        }
        Some(Command::Unstage(a)) => {
            let out = Out::new(verbosity(&a.common));
            (unstage(&a, &out), out)
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
        "OK {}: {} {} (serial {}), signed by trusted key {}, {} artifacts ({} bytes) verified{}",
        a.bundle,
        m.name,
        m.version,
        m.serial,
        v.key_id,
        m.carried().count(),
        v.artifact_bytes,
        m.left_out()
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

/// `status [NAME]`: every receipt and staged bundle (or NAME's), each
/// installed path, package and image checked against the receipt; exit 7
/// when anything drifted.
fn status(a: &StatusArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    // Read only: a missing state directory means nothing is installed.
    let state = root
        .open_dir(STATE_TARGET)
        .and_then(|d| d.real_path())
        .unwrap_or_else(|_| root.display(STATE_TARGET));
    let (receipts, staged_list) = match &a.name {
        Some(n) => {
            staged::check_name(n).map_err(Failure::usage)?;
            let r = receipt::read(&state, n).map_err(Failure::other)?;
            let s = staged::read_info(&state, n).map_err(Failure::other)?;
            if r.is_none() && s.is_none() {
                return Err(Failure::other(format!(
                    "{n} is neither installed nor staged under {}",
                    root.path().display()
                )));
            }
            (r.into_iter().collect(), s.into_iter().collect())
        }
        None => (
            receipt::read_all(&state).map_err(Failure::other)?,
            staged::list(&state).map_err(Failure::other)?,
        ),
    };
    let mut names: Vec<String> = receipts
        .iter()
        .map(|r: &Receipt| r.name.clone())
        .chain(staged_list.iter().map(|s: &StagedInfo| s.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        out.line(&format!(
            "no bundle is installed or staged under {}",
            root.path().display()
        ));
    }
    let detailed = a.name.is_some();
    let mut docs = Vec::new();
    let mut drifted = Vec::new();
    for name in &names {
        let r = receipts.iter().find(|r| &r.name == name);
        let s = staged_list.iter().find(|s| &s.name == name);
        let mut drift = Vec::new();
        if let Some(r) = r {
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
            if detailed {
                for (k, v) in &r.variables {
                    out.line(&format!("  variable {k}={v}"));
                }
            }
            let problems = install_bundle::status::check_paths(&root, &r.paths);
            for (p, problem) in r.paths.iter().zip(problems) {
                if detailed || problem.is_some() {
                    out.line(&format!(
                        "  {:<10} {} {}",
                        p.kind,
                        p.path,
                        problem.as_deref().unwrap_or("ok")
                    ));
                }
                if let Some(problem) = problem {
                    drift.push(json!({"kind": "path", "path": p.path, "problem": problem}));
                }
            }
            for (p, problem) in install_bundle::status::check_packages(&root, &r.packages) {
                if detailed || problem.is_some() {
                    out.line(&format!(
                        "  package    {} {} {}",
                        p.name,
                        p.version,
                        problem.as_deref().unwrap_or("ok")
                    ));
                }
                if let Some(problem) = problem {
                    drift.push(json!({"kind": "package", "package": p.name, "problem": problem}));
                }
            }
            for (img, problem) in check_images(&root, &r.images) {
                if detailed || problem.is_some() {
                    out.line(&format!(
                        "  image      {} {} {}",
                        img.reference,
                        img.digest,
                        problem
                            .as_deref()
                            .unwrap_or(if img.pinned { "ok (pinned)" } else { "ok" })
                    ));
                }
                if let Some(problem) = problem {
                    drift
                        .push(json!({"kind": "image", "image": img.reference, "problem": problem}));
                }
            }
        } else {
            out.line(&format!("{name}: not installed"));
        }
        if let Some(s) = s {
            out.line(&format!(
                "  staged {} (serial {}) at {} from {}, {} changes planned then; install it with: install-bundle apply {name}",
                s.version, s.serial, s.staged_at, s.bundle, s.planned_changes
            ));
        }
        for d in &drift {
            let item = d
                .get("path")
                .or(d.get("package"))
                .or(d.get("image"))
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            drifted.push(format!(
                "{name}: {item}: {}",
                d["problem"].as_str().unwrap_or("")
            ));
        }
        docs.push(json!({"name": name, "receipt": r, "staged": s, "drifted": !drift.is_empty(), "drift": drift}));
    }
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

/// `recover`: the same rules and exit codes as a failed install: 0 when there
/// was nothing to do (or only a committed run's clean-up), 5 when an
/// interrupted install was rolled back completely, 6 when the host is not
/// fully as it was.
fn recover(a: &RecoverArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    let state = open_state(&root)?;
    let result = flow::finish_interrupted(&root, &state, out);
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

fn open_state(root: &Root) -> Result<StateDir, Failure> {
    StateDir::open(root).map_err(flow::state_failure)
}

fn install(a: &InstallArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let bundle = a
        .bundle
        .as_deref()
        .ok_or_else(|| Failure::usage("a BUNDLE is required".into()))?;
    let root = root_of(&a.common)?;
    let trusted = trust::trusted_keys(&root, &a.common.trusted_keys).map_err(Failure::key)?;
    let state = open_state(&root)?;
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
        warn_journal(state, out);
    } else {
        flow::finish_interrupted(root, state, out)?;
    }
    let opts = flow::Options {
        allow_downgrade: a.allow_downgrade,
        allow_deb_downgrade: a.allow_deb_downgrade,
        no_start: a.no_start,
        diff: a.diff,
    };
    let staging_base = a.staging_dir.clone().unwrap_or_else(|| state.dir.clone());
    let input = flow::BundleInput {
        label: bundle,
        values_file: a.values.as_deref(),
        sets: &a.sets,
        staging_base: &staging_base,
    };
    let prepared = flow::prepare_bundle(
        open_bundle(bundle, trusted, &a.parts_dirs, out)?,
        &input,
        &opts,
        root,
        trusted,
        state,
        out,
    )?;
    let result = plan_and_apply(&prepared, &opts, a.dry_run, root, state, out);
    prepared.staging.remove();
    result
}

fn warn_journal(state: &StateDir, out: &Out) {
    if state.dir.join(journal::JOURNAL_FILE).exists() {
        out.warn("an interrupted install left a journal; the next real run rolls it back first");
    }
}

/// The second half of `install` and `apply`: the plan, then (unless a dry
/// run) the apply; the JSON document with the receipt now on the host.
fn plan_and_apply(
    p: &flow::Prepared,
    opts: &flow::Options,
    dry_run: bool,
    root: &Root,
    state: &StateDir,
    out: &Out,
) -> Result<serde_json::Value, Failure> {
    let planned = flow::plan(p, opts, root, out)?;
    if dry_run {
        out.line(&format!(
            "dry run: {} changes planned, nothing done",
            planned.changes
        ));
        return Ok(flow::document("planned", p, &planned, opts, root, out));
    }
    // The diff is of the host before the apply.
    let diff = opts.diff.then(|| flow::diff(root, &planned.plan));
    let outcome = flow::apply(p, &planned, root, state, out)?;
    let mut doc = flow::document(
        outcome.word(),
        p,
        &planned,
        &flow::Options {
            diff: false,
            ..*opts
        },
        root,
        out,
    );
    if outcome == flow::Outcome::Unchanged {
        doc["changed"] = json!(0);
    }
    if let Some(d) = diff {
        doc["diff"] = serde_json::Value::Array(d);
    }
    let receipt = match outcome {
        flow::Outcome::Installed => Some(&planned.receipt),
        flow::Outcome::Unchanged => p.old_receipt.as_ref(),
    };
    doc["receipt"] = json!(receipt);
    Ok(doc)
}

/// `stage`: the first half and the plan, then the verified artifacts, the
/// signed manifest, its signature and the variable values are kept in
/// `STATE/staged/NAME` for `apply`. Nothing else changes.
fn stage(a: &StageArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    let root = root_of(&a.common)?;
    let trusted = trust::trusted_keys(&root, &a.common.trusted_keys).map_err(Failure::key)?;
    let state = open_state(&root)?;
    let result = stage_locked(a, out, &root, &trusted, &state);
    state.release();
    result
}

fn stage_locked(
    a: &StageArgs,
    out: &Out,
    root: &Root,
    trusted: &bundle_spec::sign::TrustedKeys,
    state: &StateDir,
) -> Result<serde_json::Value, Failure> {
    if state.dir.join(journal::JOURNAL_FILE).exists() {
        if a.dry_run {
            warn_journal(state, out);
        } else {
            return Err(Failure::refused(format!(
                "an interrupted install left a journal in {}; run install-bundle recover first (stage changes nothing, so it does not roll it back)",
                state.dir.display()
            )));
        }
    }
    let opts = flow::Options {
        allow_downgrade: a.allow_downgrade,
        allow_deb_downgrade: a.allow_deb_downgrade,
        no_start: false,
        diff: a.diff,
    };
    let input = flow::BundleInput {
        label: &a.bundle,
        values_file: a.values.as_deref(),
        sets: &a.sets,
        staging_base: &state.dir,
    };
    let prepared = flow::prepare_bundle(
        open_bundle(&a.bundle, trusted, &a.parts_dirs, out)?,
        &input,
        &opts,
        root,
        trusted,
        state,
        out,
    )?;
    let result = stage_prepared(a, &prepared, &opts, out, root, state);
    // Kept (renamed away) when staged; otherwise dropped.
    prepared.staging.remove();
    result
}

fn stage_prepared(
    a: &StageArgs,
    p: &flow::Prepared,
    opts: &flow::Options,
    out: &Out,
    root: &Root,
    state: &StateDir,
) -> Result<serde_json::Value, Failure> {
    let name = p.manifest.name.as_str();
    let serial = p.manifest.serial.get();
    let sha = p.manifest_sha256.to_string();
    // What is staged already; a damaged staged.json is replaced.
    let existing = match staged::read_info(&state.dir, name) {
        Ok(e) => e,
        Err(problem) => {
            out.warn(&format!("{problem}; staging replaces it"));
            None
        }
    };
    if let Some(old) = &existing
        && !a.allow_downgrade
    {
        if old.serial > serial {
            return Err(Failure::refused(format!(
                "{name} {} (serial {}) is staged; this bundle is {} (serial {serial}), older: run install-bundle unstage {name} first to stage it (or pass --allow-downgrade)",
                old.version, old.serial, p.manifest.version
            )));
        }
        if old.serial == serial && old.manifest_sha256 != sha {
            return Err(Failure::refused(format!(
                "serial {serial} of {name} is already staged from a different manifest (sha256 {} vs {sha}); a new release needs a higher serial",
                old.manifest_sha256
            )));
        }
    }
    let planned = flow::plan(p, opts, root, out)?;
    let info = StagedInfo {
        format: staged::STAGED_FORMAT.into(),
        name: name.to_owned(),
        version: p.manifest.version.to_string(),
        serial,
        manifest_sha256: sha.clone(),
        key_id: p.key_id.to_string(),
        staged_at: Timestamp::now().to_string(),
        bundle: a.bundle.clone(),
        variables: p.values.clone(),
        artifact_bytes: p.artifact_bytes,
        planned_changes: planned.changes,
        allow_downgrade: a.allow_downgrade,
        allow_deb_downgrade: a.allow_deb_downgrade,
    };
    let same_as_staged = existing
        .as_ref()
        .filter(|o| o.manifest_sha256 == sha && o.variables == p.values);
    let dir = staged::dir_of(&state.dir, name);
    let (result, staged_now, replaced) = if planned.up_to_date() {
        // Installed exactly so: nothing to stage, and a staged copy of this
        // or an older serial would only be a step back.
        if existing.is_some() && !a.dry_run {
            staged::remove(&state.dir, name)
                .map_err(|e| Failure::other(format!("cannot remove {}: {e}", dir.display())))?;
        }
        out.line(&format!(
            "up to date: {name} {} (serial {serial}) is installed with these values; nothing staged",
            p.manifest.version
        ));
        ("up-to-date", None, existing.clone())
    } else if let Some(same) = same_as_staged {
        out.line(&format!(
            "already staged: {name} {} (serial {serial}) with these values, in {}; install it with: install-bundle apply {name}",
            p.manifest.version,
            dir.display()
        ));
        ("already-staged", Some(same.clone()), None)
    } else if a.dry_run {
        out.line(&format!(
            "dry run: {name} {} (serial {serial}) would be staged ({} changes planned)",
            p.manifest.version, planned.changes
        ));
        ("would-stage", None, existing.clone())
    } else {
        let (manifest_bytes, signature_bytes) = p
            .signed
            .as_ref()
            .ok_or_else(|| Failure::other("the signed manifest was not kept".into()))?;
        let staging = install_bundle::stage::Staging::existing(p.staging.dir().to_owned());
        staged::keep(
            &state.dir,
            staging,
            manifest_bytes,
            signature_bytes,
            p.sbom.as_deref(),
            &info,
        )
        .map_err(|e| {
            Failure::refused(format!(
                "cannot keep the staged bundle in {}: {e}",
                dir.display()
            ))
        })?;
        if let Some(old) = &existing {
            out.line(&format!(
                "  replaced the staged {} (serial {})",
                old.version, old.serial
            ));
        }
        out.line(&format!(
            "staged: {name} {} (serial {serial}), {} changes planned, in {}; install it with: install-bundle apply {name}",
            p.manifest.version,
            planned.changes,
            dir.display()
        ));
        ("staged", Some(info), existing.clone())
    };
    let mut doc = flow::document(result, p, &planned, opts, root, out);
    doc["staged"] = json!(staged_now);
    doc["replaced"] = json!(replaced);
    Ok(doc)
}

/// `apply NAME`: installs the staged bundle; success drops the staged copy.
fn apply_staged(a: &ApplyArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    staged::check_name(&a.name).map_err(Failure::usage)?;
    let root = root_of(&a.common)?;
    let trusted = trust::trusted_keys(&root, &a.common.trusted_keys).map_err(Failure::key)?;
    let state = open_state(&root)?;
    let result = apply_locked(a, out, &root, &trusted, &state);
    state.release();
    result
}

fn apply_locked(
    a: &ApplyArgs,
    out: &Out,
    root: &Root,
    trusted: &bundle_spec::sign::TrustedKeys,
    state: &StateDir,
) -> Result<serde_json::Value, Failure> {
    if a.dry_run {
        warn_journal(state, out);
    } else {
        flow::finish_interrupted(root, state, out)?;
    }
    let (prepared, info) = flow::prepare_staged(&a.name, root, trusted, state, out)?;
    let opts = flow::Options {
        allow_downgrade: info.allow_downgrade,
        allow_deb_downgrade: info.allow_deb_downgrade,
        no_start: a.no_start,
        diff: a.diff,
    };
    let mut doc = plan_and_apply(&prepared, &opts, a.dry_run, root, state, out)?;
    if !a.dry_run
        && let Err(e) = staged::remove(&state.dir, &a.name)
    {
        out.warn(&format!(
            "installed, but the staged copy could not be removed ({e}); run install-bundle unstage {}",
            a.name
        ));
    }
    doc["staged"] = json!(info);
    Ok(doc)
}

/// `unstage NAME`: drops a staged bundle (nothing staged is fine: exit 0).
fn unstage(a: &UnstageArgs, out: &Out) -> Result<serde_json::Value, Failure> {
    staged::check_name(&a.name).map_err(Failure::usage)?;
    let root = root_of(&a.common)?;
    let state = open_state(&root)?;
    let result = (|| {
        let info = staged::read_info(&state.dir, &a.name).unwrap_or(None);
        let removed = staged::remove(&state.dir, &a.name).map_err(|e| {
            Failure::other(format!(
                "cannot remove {}: {e}",
                staged::dir_of(&state.dir, &a.name).display()
            ))
        })?;
        if removed {
            out.line(&format!(
                "unstaged {}{}",
                a.name,
                info.as_ref()
                    .map(|i| format!(" {} (serial {})", i.version, i.serial))
                    .unwrap_or_default()
            ));
        } else {
            out.line(&format!(
                "nothing is staged for {} under {}",
                a.name,
                root.path().display()
            ));
        }
        Ok(
            json!({"result": if removed { "unstaged" } else { "not-staged" }, "name": a.name, "staged": info}),
        )
    })();
    state.release();
    result
}
