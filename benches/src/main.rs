//! `bench` (`make bench`): bundler and install-bundle side by side with the
//! plain tar + zstd pipelines they replace, on a deterministic ~1 GiB
//! artifact set. Never run by `make test`.
//!
//! ```text
//! bench [--size 1G] [--reps 5] [--only build,install,verify,download,images,parts,transfer]
//!       [--transfer-size 256M]
//! bench --scale [--scale-sizes 256M,512M,1G,2G] [--reps 3]
//! ```
//!
//! Every run of a variant is prepared the same way, untimed: its outputs are
//! removed, `sync` writes back the dirty pages earlier runs left, and its
//! inputs are read once so that they are in the page cache (caches are never
//! dropped). Variants alternate: each repetition runs all of a phase's
//! variants, in an order rotated per repetition and reversed on odd ones. Wall time, CPU time
//! (user + sys) and peak RSS come from the child's `wait4` rusage; for
//! `sh -c 'a | b'` that covers the whole pipeline (RSS: its largest process).

mod data;
mod dataset;
mod download;
mod images;
mod measure;
mod parts;
mod transfer;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use crate::data::Kind;
use crate::dataset::{DataSet, human, parse_size};
use crate::measure::{Job, Sample, Stats, round};

/// Fixed bundle creation time, so that bundles are reproducible.
pub const SOURCE_DATE_EPOCH: &str = "1767225600";

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "bundler and install-bundle vs plain tar+zstd: wall, CPU and peak RSS, side by side"
)]
struct Cli {
    /// Total artifact bytes (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Repetitions of every variant [default: 5; 3 with --scale].
    #[arg(long)]
    reps: Option<usize>,
    /// Phases to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "build,install,verify,download,images,parts,transfer"
    )]
    only: Vec<Phase>,
    /// Transfer: size of the bundle pushed and pulled (K, M, G suffixes).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    transfer_size: u64,
    /// Skip the informational variants (release-build installer, zstd|tar + sync,
    /// install-bundle verify, zstd -dc | sha256sum).
    #[arg(long)]
    no_extras: bool,
    /// Scaling mode: build, install and verify at each of --scale-sizes.
    #[arg(long)]
    scale: bool,
    /// Sizes for --scale.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "256M,512M,1G,2G")]
    scale_sizes: Vec<u64>,
    /// The bundler binary [default: target/release/bundler].
    #[arg(long)]
    bundler: Option<PathBuf>,
    /// The installer binary [default: target/static/install-bundle, else target/release/install-bundle].
    #[arg(long)]
    installer: Option<PathBuf>,
    /// Where to write the results [default: target/bench.json; target/bench-scale.json with --scale].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Work directory (data sets, bundles, roots, logs) [default: target/bench].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Download: bytes per second per connection.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    dl_rate: u64,
    /// Download: latency before each response, in milliseconds.
    #[arg(long, default_value_t = 200)]
    dl_latency_ms: u64,
    /// Download: repetitions.
    #[arg(long, default_value_t = 3)]
    dl_reps: usize,
    /// Before each run, wait up to this many seconds for other processes
    /// to go quiet (the machine may be shared).
    #[arg(long, default_value_t = 20)]
    quiet_wait: u64,
    /// Niceness of the benchmark and everything it runs, and of its session's
    /// scheduler autogroup while it runs (negative needs root): keeps other
    /// work on a shared machine from skewing the runs. 0 leaves both alone.
    #[arg(long, default_value_t = -10, allow_hyphen_values = true)]
    nice: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Build,
    Install,
    Verify,
    Download,
    Images,
    Parts,
    Transfer,
}

/// Paths shared by every phase.
#[derive(Debug)]
pub struct Ctx {
    /// The workspace's target directory.
    target: PathBuf,
    /// `target/bench`.
    pub work: PathBuf,
    /// `target/bench/logs`: stderr of every run.
    pub logs: PathBuf,
    /// bundler.
    pub bundler: PathBuf,
    /// install-bundle (static when built).
    installer: PathBuf,
    /// target/release/install-bundle when `installer` is another binary.
    installer_release: Option<PathBuf>,
    /// Unencrypted throwaway signing key.
    pub key: PathBuf,
    /// Its public key.
    pubkey: PathBuf,
    /// --quiet-wait, seconds.
    pub quiet_wait: u64,
}

/// The Debian architecture name of this machine.
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == measure::HELPER_ARG) {
        return match measure::helper(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {}: {e:#}", measure::HELPER_ARG);
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_owned()
}

fn setup(cli: &Cli) -> Result<Ctx> {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let work = cli.work.clone().unwrap_or_else(|| target.join("bench"));
    let logs = work.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let bundler = cli
        .bundler
        .clone()
        .unwrap_or_else(|| target.join("release/bundler"));
    let release_installer = target.join("release/install-bundle");
    let installer = cli.installer.clone().unwrap_or_else(|| {
        let s = target.join("static/install-bundle");
        if s.exists() {
            s
        } else {
            release_installer.clone()
        }
    });
    for b in [&bundler, &installer] {
        if !b.exists() {
            bail!(
                "{} is missing: run `make bench` (or cargo build --release -p bundler -p install-bundle && make static)",
                b.display()
            );
        }
    }
    let installer_release =
        (release_installer.exists() && release_installer != installer).then_some(release_installer);
    for tool in ["tar", "zstd", "sha256sum", "sync", "sh"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("{tool} is not installed");
        }
    }
    let key = work.join("bench.key");
    let pubkey = work.join("bench.pub");
    if !key.exists() || !pubkey.exists() {
        let out = Command::new(&bundler)
            .args(["keygen", "--unencrypted", "--out"])
            .arg(work.join("bench"))
            .output()
            .context("running bundler keygen")?;
        if !out.status.success() {
            bail!(
                "bundler keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(Ctx {
        target,
        work,
        logs,
        bundler,
        installer,
        installer_release,
        key,
        pubkey,
        quiet_wait: cli.quiet_wait,
    })
}

fn run(cli: Cli) -> Result<()> {
    let ctx = setup(&cli)?;
    let _priority = Priority::raise(cli.nice);
    let extras = !cli.no_extras && !cli.scale;
    let machine = machine(&ctx);
    let binaries = json!({
        "bundler": describe_binary(&ctx.bundler),
        "installer": describe_binary(&ctx.installer),
        "installer_release": ctx.installer_release.as_deref().map(describe_binary),
    });
    print_machine(&machine, &ctx);
    println!(
        "priority: nice {} for the benchmark and every command it runs; before each run it waits (<= {} s) until other processes use < {NOISE_CORES} CPUs",
        cli.nice, cli.quiet_wait
    );
    let phases: Vec<Phase> = cli.only.clone();
    if cli.scale {
        let reps = cli.reps.unwrap_or(3);
        let mut per_size = Vec::new();
        let mut out = Vec::new();
        for &size in &cli.scale_sizes {
            let set = dataset::ensure(&ctx.work, size, debian_arch())?;
            let r = run_size(&ctx, &set, &phases, reps, extras)?;
            print_size_report(&set, &r, reps);
            out.push(json!({"size": size, "dataset": set.to_json(), "result": r.to_json()}));
            per_size.push((size, r));
        }
        let fit = print_scale_report(&per_size);
        let doc = json!({
            "schema": "bundle-bench/1", "mode": "scale", "when_unix": now_unix(),
            "machine": machine, "binaries": binaries, "reps": reps, "nice": cli.nice,
            "sizes": out, "fit": fit,
        });
        write_json(
            &cli.json
                .clone()
                .unwrap_or_else(|| ctx.target.join("bench-scale.json")),
            &doc,
        )?;
        return Ok(());
    }
    let reps = cli.reps.unwrap_or(5);
    let size_phases: Vec<Phase> = phases
        .iter()
        .copied()
        .filter(|p| {
            !matches!(
                p,
                Phase::Download | Phase::Images | Phase::Parts | Phase::Transfer
            )
        })
        .collect();
    let mut doc = json!({
        "schema": "bundle-bench/1", "mode": "single", "when_unix": now_unix(),
        "machine": machine, "binaries": binaries, "reps": reps, "nice": cli.nice,
    });
    if !size_phases.is_empty() {
        let set = dataset::ensure(&ctx.work, cli.size, debian_arch())?;
        let r = run_size(&ctx, &set, &size_phases, reps, extras)?;
        print_size_report(&set, &r, reps);
        doc["dataset"] = set.to_json();
        doc["result"] = r.to_json();
    }
    if phases.contains(&Phase::Download) {
        doc["download"] = download::run(
            &ctx,
            download::Config {
                rate: cli.dl_rate,
                latency: Duration::from_millis(cli.dl_latency_ms),
                reps: cli.dl_reps,
            },
        )?;
    }
    if phases.contains(&Phase::Parts) {
        doc["parts"] = parts::run(&ctx, cli.size, reps.min(3))?;
    }
    if phases.contains(&Phase::Images) {
        doc["images"] = images::run(&ctx, reps.min(5))?;
    }
    if phases.contains(&Phase::Transfer) {
        doc["transfer"] = transfer::run(&ctx, cli.transfer_size, reps.min(3))?;
    }
    write_json(
        &cli.json
            .clone()
            .unwrap_or_else(|| ctx.target.join("bench.json")),
        &doc,
    )
}

impl Ctx {
    /// The installer under test.
    pub fn installer_path(&self) -> &Path {
        &self.installer
    }

    /// The public key of [`Ctx::key`].
    pub fn pubkey_path(&self) -> &Path {
        &self.pubkey
    }
}

/// The benchmark's CPU priority, restored when dropped.
///
/// With autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`)
/// niceness only ranks processes within one session; between sessions (other
/// users' builds and tests) the session's autogroup niceness counts. So both
/// are set: this process's (inherited by everything it runs) and its
/// session's autogroup's, which is put back afterwards.
#[derive(Debug)]
struct Priority {
    autogroup_before: Option<i32>,
}

const AUTOGROUP: &str = "/proc/self/autogroup";

impl Priority {
    fn raise(nice: i32) -> Self {
        if nice == 0 {
            return Self {
                autogroup_before: None,
            };
        }
        if let Err(e) = rustix::process::setpriority_process(None, nice) {
            eprintln!("bench: cannot set niceness {nice} ({e}); running at the default priority");
        }
        // "/autogroup-24 nice 0"
        let before = fs::read_to_string(AUTOGROUP).ok().and_then(|s| {
            s.split_whitespace()
                .skip_while(|w| *w != "nice")
                .nth(1)
                .and_then(|n| n.parse().ok())
        });
        let autogroup_before = before.filter(|_| fs::write(AUTOGROUP, nice.to_string()).is_ok());
        Self { autogroup_before }
    }
}

impl Drop for Priority {
    fn drop(&mut self) {
        if let Some(n) = self.autogroup_before {
            let _ = fs::write(AUTOGROUP, n.to_string());
        }
    }
}

fn write_json(path: &Path, doc: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(doc)?;
    bytes.push(b'\n');
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who measures what: `Ours` are our tools, `Base` the pipelines they
/// replace, `Info` extra context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ours,
    Base,
    Info,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Ours => "ours",
            Role::Base => "baseline",
            Role::Info => "info",
        }
    }
}

/// One measured command and its (untimed) preparation.
#[derive(Debug)]
struct Variant {
    key: &'static str,
    label: String,
    role: Role,
    job: Job,
    /// Removed before each run.
    remove: Vec<PathBuf>,
    /// Created (empty) before each run.
    mkdir: Option<PathBuf>,
    /// Read before each run.
    warm: Vec<PathBuf>,
    /// Must exist with this size after each run (a sanity check).
    expect: Option<(PathBuf, u64)>,
    /// Removed after each run (install roots).
    cleanup: Vec<PathBuf>,
}

/// Results of one variant.
#[derive(Debug)]
struct VarResult {
    key: &'static str,
    label: String,
    role: Role,
    command: String,
    samples: Vec<Sample>,
    stats: Stats,
}

/// Results at one size.
#[derive(Debug)]
struct SizeResult {
    variants: Vec<VarResult>,
    /// Runs repeated because other processes were busy.
    retries: usize,
    /// Seconds spent waiting for other processes to go quiet.
    waited: f64,
    bundle_bytes: Option<u64>,
    zstd3_bytes: Option<u64>,
}

impl SizeResult {
    fn get(&self, key: &str) -> Option<&VarResult> {
        self.variants.iter().find(|v| v.key == key)
    }

    fn comparisons(&self) -> Vec<Comparison> {
        COMPARISONS
            .iter()
            .filter_map(|c| {
                let (o, b) = (self.get(c.ours)?, self.get(c.base)?);
                Some(Comparison {
                    spec: c,
                    ours: o.stats.median,
                    base: b.stats.median,
                })
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        let mut variants = serde_json::Map::new();
        for v in &self.variants {
            variants.insert(
                v.key.to_owned(),
                json!({
                    "label": v.label, "role": v.role.as_str(), "command": v.command,
                    "samples": v.samples.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
                    "median": v.stats.median.to_json(),
                    "min_wall_s": round(v.stats.min_wall, 4), "max_wall_s": round(v.stats.max_wall, 4),
                }),
            );
        }
        let comparisons: Vec<Value> = self
            .comparisons()
            .iter()
            .map(|c| {
                json!({
                    "name": c.spec.name, "ours": c.spec.ours, "baseline": c.spec.base,
                    "wall_ratio": round(c.wall_ratio(), 4), "cpu_ratio": round(c.cpu_ratio(), 4),
                    "target_max_wall_ratio": c.spec.target,
                    "pass": c.spec.target.map(|t| c.wall_ratio() <= t),
                })
            })
            .collect();
        let rss: Vec<Value> = RSS_TARGETS
            .iter()
            .filter_map(|(key, what, max)| {
                let v = self.get(key)?;
                Some(json!({
                    "name": what, "variant": key, "maxrss_mib": round(v.stats.median.rss_mib(), 2),
                    "max_rss_mib_seen": round(v.samples.iter().map(Sample::rss_mib).fold(0.0, f64::max), 2),
                    "target_max_mib": max, "pass": v.samples.iter().all(|s| s.rss_mib() <= *max),
                }))
            })
            .collect();
        json!({
            "variants": variants,
            "comparisons": comparisons,
            "rss": rss,
            "noisy_runs_repeated": self.retries,
            "waited_for_quiet_s": round(self.waited, 1),
            "bundle_bytes": self.bundle_bytes,
            "zstd3_bytes": self.zstd3_bytes,
        })
    }
}

/// A ratio to report: `ours` / `base`, with a target on the wall-time ratio.
#[derive(Debug)]
struct ComparisonSpec {
    name: &'static str,
    ours: &'static str,
    base: &'static str,
    target: Option<f64>,
}

const COMPARISONS: &[ComparisonSpec] = &[
    ComparisonSpec {
        name: "build   vs tar | zstd -T0 -3",
        ours: "build",
        base: "build_plain",
        target: Some(1.10),
    },
    ComparisonSpec {
        name: "build   vs sha256sum -c && tar | zstd",
        ours: "build",
        base: "build_hand",
        target: None,
    },
    ComparisonSpec {
        name: "install vs zstd -dc | tar -x",
        ours: "install",
        base: "install_plain",
        target: Some(1.10),
    },
    ComparisonSpec {
        name: "install vs zstd -dc | tar -x && sync",
        ours: "install",
        base: "install_plain_sync",
        target: None,
    },
    ComparisonSpec {
        name: "install (release) vs zstd | tar -x",
        ours: "install_release",
        base: "install_plain",
        target: None,
    },
    ComparisonSpec {
        name: "verify  vs zstd -dc >/dev/null",
        ours: "verify",
        base: "verify_plain",
        target: Some(1.10),
    },
    ComparisonSpec {
        name: "verify  vs zstd -dc | sha256sum",
        ours: "verify",
        base: "verify_sha",
        target: None,
    },
    ComparisonSpec {
        name: "install-bundle verify vs zstd -dc",
        ours: "verify_installer",
        base: "verify_plain",
        target: None,
    },
];

/// Peak-RSS targets: variant, what, MiB.
const RSS_TARGETS: &[(&str, &str, f64)] = &[
    ("build", "bundler build", 256.0),
    ("install", "install-bundle", 64.0),
];

#[derive(Debug)]
struct Comparison {
    spec: &'static ComparisonSpec,
    ours: Sample,
    base: Sample,
}

impl Comparison {
    fn wall_ratio(&self) -> f64 {
        self.ours.wall / self.base.wall
    }
    fn cpu_ratio(&self) -> f64 {
        self.ours.cpu() / self.base.cpu()
    }
}

/// "PASS" when `ratio <= target`, else "FAIL (+x%)".
pub fn check(ratio: f64, target: f64) -> String {
    if ratio <= target {
        "PASS".to_owned()
    } else {
        format!("FAIL (+{:.0}% over)", (ratio / target - 1.0) * 100.0)
    }
}

fn sh_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Makes `path` with `job` unless it exists (bundles the install and verify
/// phases need when the build phase did not run).
fn ensure_output(ctx: &Ctx, path: &Path, job: &Job, warm: &[PathBuf]) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    eprintln!("bench: making {} (untimed)", path.display());
    measure::warm(warm)?;
    measure::run(job, &ctx.logs.join("setup.log"))?;
    Ok(())
}

fn run_size(
    ctx: &Ctx,
    set: &DataSet,
    phases: &[Phase],
    reps: usize,
    extras: bool,
) -> Result<SizeResult> {
    let out = ctx.work.join(format!("out-{}", set.total));
    fs::create_dir_all(&out)?;
    let ours = out.join("bench.tar.zst");
    let ours_sig = out.join("bench.tar.zst.minisig");
    let plain = out.join("plain.tar.zst");
    let hand = out.join("hand.tar.zst");
    let files = set.files();
    let names: Vec<String> = set.artifacts.iter().map(|a| a.name.clone()).collect();
    let names_sh = names.join(" ");
    let biggest = set
        .artifacts
        .iter()
        .max_by_key(|a| a.size)
        .expect("artifacts");
    let bins = [ctx.bundler.clone(), ctx.installer.clone()];
    let with_bins = |mut v: Vec<PathBuf>| {
        v.extend(bins.iter().cloned());
        v
    };

    let build_job = Job::new(
        &ctx.bundler,
        &[
            &"build",
            &set.spec(),
            &"--offline",
            &"--cache",
            &set.cache,
            &"-o",
            &ours,
            &"--key",
            &ctx.key,
            &"--quiet",
        ],
    )
    .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    let plain_job = |dest: &Path| {
        Job::shell(&format!(
            "tar -cf - -- {names_sh} | zstd -T0 -3 -q -f -o {}",
            sh_quote(dest)
        ))
        .cwd(&set.dir)
    };
    let hand_job = Job::shell(&format!(
        "sha256sum -c --quiet SHA256SUMS && tar -cf - -- {names_sh} | zstd -T0 -3 -q -f -o {}",
        sh_quote(&hand)
    ))
    .cwd(&set.dir);

    let mut results = Vec::new();
    let mut retries = 0;
    let mut waited = 0.0;
    if phases.contains(&Phase::Build) {
        let v = vec![
            Variant {
                key: "build",
                label: "bundler build --offline (warm cache)".into(),
                role: Role::Ours,
                job: build_job.clone(),
                remove: vec![ours.clone(), ours_sig.clone()],
                mkdir: None,
                warm: with_bins(files.clone()),
                expect: None,
                cleanup: vec![],
            },
            Variant {
                key: "build_plain",
                label: "tar -cf - FILES | zstd -T0 -3".into(),
                role: Role::Base,
                job: plain_job(&plain),
                remove: vec![plain.clone()],
                mkdir: None,
                warm: files.clone(),
                expect: None,
                cleanup: vec![],
            },
            Variant {
                key: "build_hand",
                label: "sha256sum -c && tar | zstd -T0 -3".into(),
                role: Role::Base,
                job: hand_job,
                remove: vec![hand.clone()],
                mkdir: None,
                warm: files.clone(),
                expect: None,
                cleanup: vec![],
            },
        ];
        results.extend(run_phase(
            "build",
            &v,
            reps,
            ctx,
            &mut retries,
            &mut waited,
        )?);
    }
    let need_bundles = phases.contains(&Phase::Install) || phases.contains(&Phase::Verify);
    if need_bundles {
        ensure_output(ctx, &ours, &build_job, &files)?;
        ensure_output(ctx, &plain, &plain_job(&plain), &files)?;
    }
    if phases.contains(&Phase::Install) {
        let root = |tag: &str| out.join(format!("root-{tag}"));
        let install_variant =
            |key: &'static str, label: String, role, bin: &Path, r: PathBuf| Variant {
                key,
                label,
                role,
                job: Job::new(
                    bin,
                    &[
                        &ours,
                        &"--root",
                        &r,
                        &"--trusted-key",
                        &ctx.pubkey,
                        &"--quiet",
                    ],
                ),
                remove: vec![r.clone()],
                mkdir: Some(r.clone()),
                warm: vec![ours.clone(), bin.to_owned()],
                expect: Some((r.join("opt/bench").join(&biggest.name), biggest.size)),
                cleanup: vec![r],
            };
        let mut v = vec![install_variant(
            "install",
            format!(
                "install-bundle --root R ({})",
                ctx.installer
                    .strip_prefix(&ctx.target)
                    .unwrap_or(&ctx.installer)
                    .display()
            ),
            Role::Ours,
            &ctx.installer,
            root("ours"),
        )];
        if extras && let Some(rel) = &ctx.installer_release {
            v.push(install_variant(
                "install_release",
                "install-bundle --root R (release, glibc)".into(),
                Role::Info,
                rel,
                root("release"),
            ));
        }
        let r = root("plain");
        v.push(Variant {
            key: "install_plain",
            label: "zstd -dc | tar -xf - -C R".into(),
            role: Role::Base,
            job: Job::shell(&format!(
                "zstd -dcq {} | tar -xf - -C {}",
                sh_quote(&plain),
                sh_quote(&r)
            )),
            remove: vec![r.clone()],
            mkdir: Some(r.clone()),
            warm: vec![plain.clone()],
            expect: Some((r.join(&biggest.name), biggest.size)),
            cleanup: vec![r],
        });
        if extras {
            let r = root("plain-sync");
            v.push(Variant {
                key: "install_plain_sync",
                label: "zstd -dc | tar -x && sync FILES (fsync each)".into(),
                role: Role::Info,
                job: Job::shell(&format!(
                    "zstd -dcq {p} | tar -xf - -C {r} && cd {r} && sync -- {names_sh} && sync -- .",
                    p = sh_quote(&plain),
                    r = sh_quote(&r)
                )),
                remove: vec![r.clone()],
                mkdir: Some(r.clone()),
                warm: vec![plain.clone()],
                expect: Some((r.join(&biggest.name), biggest.size)),
                cleanup: vec![r],
            });
        }
        results.extend(run_phase(
            "install",
            &v,
            reps,
            ctx,
            &mut retries,
            &mut waited,
        )?);
    }
    if phases.contains(&Phase::Verify) {
        let mut v = vec![
            Variant {
                key: "verify",
                label: "bundler verify".into(),
                role: Role::Ours,
                job: Job::new(
                    &ctx.bundler,
                    &[&"verify", &ours, &"--key", &ctx.pubkey, &"--quiet"],
                ),
                remove: vec![],
                mkdir: None,
                warm: vec![ours.clone(), ctx.bundler.clone()],
                expect: None,
                cleanup: vec![],
            },
            Variant {
                key: "verify_plain",
                label: "zstd -dc BUNDLE >/dev/null".into(),
                role: Role::Base,
                job: Job::shell(&format!("zstd -dcq {} >/dev/null", sh_quote(&ours))),
                remove: vec![],
                mkdir: None,
                warm: vec![ours.clone()],
                expect: None,
                cleanup: vec![],
            },
        ];
        if extras {
            v.push(Variant {
                key: "verify_sha",
                label: "zstd -dc BUNDLE | sha256sum".into(),
                role: Role::Info,
                job: Job::shell(&format!(
                    "zstd -dcq {} | sha256sum >/dev/null",
                    sh_quote(&ours)
                )),
                remove: vec![],
                mkdir: None,
                warm: vec![ours.clone()],
                expect: None,
                cleanup: vec![],
            });
            v.push(Variant {
                key: "verify_installer",
                label: "install-bundle verify".into(),
                role: Role::Info,
                job: Job::new(
                    &ctx.installer,
                    &[&"verify", &ours, &"--trusted-key", &ctx.pubkey, &"--quiet"],
                ),
                remove: vec![],
                mkdir: None,
                warm: vec![ours.clone(), ctx.installer.clone()],
                expect: None,
                cleanup: vec![],
            });
        }
        results.extend(run_phase(
            "verify",
            &v,
            reps,
            ctx,
            &mut retries,
            &mut waited,
        )?);
    }
    let len = |p: &Path| fs::metadata(p).ok().map(|m| m.len());
    Ok(SizeResult {
        variants: results,
        retries,
        waited,
        bundle_bytes: len(&ours),
        zstd3_bytes: len(&plain),
    })
}

/// Before a run, wait (up to --quiet-wait) until other processes use less
/// than this many cores: the machine may be shared.
pub const NOISE_CORES: f64 = 0.25;
/// A run during which other processes used more than this many cores on
/// average is repeated (up to `NOISE_RETRIES` times).
const RETRY_CORES: f64 = 0.5;
const NOISE_RETRIES: usize = 2;

fn run_phase(
    phase: &str,
    variants: &[Variant],
    reps: usize,
    ctx: &Ctx,
    retries: &mut usize,
    waited: &mut f64,
) -> Result<Vec<VarResult>> {
    let quiet_wait = Duration::from_secs(ctx.quiet_wait);
    let log_of = |v: &Variant| ctx.logs.join(format!("{}.log", v.key));
    for v in variants {
        let _ = fs::remove_file(log_of(v));
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    eprintln!(
        "bench: {phase}: {} variants x {reps} runs, interleaved",
        variants.len()
    );
    for rep in 0..reps {
        // Rotated by one per repetition, and reversed on odd ones, so that
        // each variant follows a different one from run to run: what a run
        // leaves behind (a deleted 1 GiB tree of fsync'd files, say) costs
        // the next run time, and with a fixed cyclic order one variant would
        // always pay for the same predecessor (README, Performance).
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.rotate_left((rep / 2) % variants.len());
        if rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let v = &variants[i];
            for p in &v.remove {
                measure::remove(p)?;
            }
            if let Some(d) = &v.mkdir {
                fs::create_dir_all(d)?;
            }
            let mut attempt = 0;
            let s = loop {
                measure::sync()?;
                measure::warm(&v.warm)?;
                *waited += measure::wait_quiet(NOISE_CORES, quiet_wait).as_secs_f64();
                let s = measure::run(&v.job, &log_of(v))?;
                attempt += 1;
                if s.background <= RETRY_CORES * s.wall || attempt > NOISE_RETRIES {
                    break s;
                }
                eprintln!(
                    "  rep {}/{reps} {:<54} {:7.2} s wall, but other processes used {:.2} CPU s: again",
                    rep + 1,
                    v.label,
                    s.wall,
                    s.background
                );
                *retries += 1;
                for p in v.remove.iter().chain(&v.cleanup) {
                    measure::remove(p)?;
                }
                if let Some(d) = &v.mkdir {
                    fs::create_dir_all(d)?;
                }
            };
            if let Some((p, size)) = &v.expect {
                let got = fs::metadata(p).map(|m| m.len()).ok();
                if got != Some(*size) {
                    bail!(
                        "{}: after `{}`, {} has size {got:?}, expected {size}",
                        v.key,
                        v.job.display(),
                        p.display()
                    );
                }
            }
            for p in &v.cleanup {
                measure::remove(p)?;
            }
            eprintln!(
                "  rep {}/{reps} {:<54} {:7.2} s wall {:7.2} s cpu {:7.1} MiB  (other {:.2} s)",
                rep + 1,
                v.label,
                s.wall,
                s.cpu(),
                s.rss_mib(),
                s.background
            );
            samples[i].push(s);
        }
    }
    Ok(variants
        .iter()
        .zip(samples)
        .map(|(v, samples)| VarResult {
            key: v.key,
            label: v.label.clone(),
            role: v.role,
            command: v.job.display(),
            stats: measure::stats(&samples),
            samples,
        })
        .collect())
}

/// Header of the per-variant table.
pub fn print_variant_header() {
    println!(
        "  {:<54} {:>8} {:>17} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "variant", "wall s", "(min–max)", "user s", "sys s", "cpu s", "RSS MiB", "other s"
    );
}

/// One row of the per-variant table (medians).
pub fn print_variant_row(label: &str, st: &Stats) {
    let m = st.median;
    println!(
        "  {:<54} {:>8.2} {:>17} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>8.2}",
        label,
        m.wall,
        format!("({:.2}–{:.2})", st.min_wall, st.max_wall),
        m.user,
        m.sys,
        m.cpu(),
        m.rss_mib(),
        m.background
    );
}

fn print_size_report(set: &DataSet, r: &SizeResult, reps: usize) {
    let pct = |k: Kind| 100.0 * set.bytes_of(k) as f64 / set.total as f64;
    println!();
    println!(
        "== {} in {} artifacts (exec {:.0}%, text {:.0}%, packed {:.0}%; 1 KiB–{}), medians of {reps} interleaved runs ==",
        human(set.total),
        set.artifacts.len(),
        pct(Kind::Exec),
        pct(Kind::Text),
        pct(Kind::Packed),
        human(set.artifacts.iter().map(|a| a.size).max().unwrap_or(0)),
    );
    print_variant_header();
    for v in &r.variants {
        let tag = match v.role {
            Role::Ours => "",
            Role::Base => "",
            Role::Info => " [info]",
        };
        print_variant_row(&format!("{}{tag}", v.label), &v.stats);
    }
    let comps = r.comparisons();
    if !comps.is_empty() {
        println!();
        println!(
            "  {:<40} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} | {:>6} {:>6} | target",
            "ours / baseline (medians)",
            "wall",
            "wall",
            "ratio",
            "cpu",
            "cpu",
            "ratio",
            "RSS",
            "RSS"
        );
        for c in &comps {
            let verdict = c
                .spec
                .target
                .map(|t| format!("<= {t:.2}x {}", check(c.wall_ratio(), t)))
                .unwrap_or_else(|| "(info)".into());
            println!(
                "  {:<40} {:>7.2} {:>7.2} {:>6.2}x | {:>6.2} {:>6.2} {:>5.2}x | {:>6.1} {:>6.1} | {verdict}",
                c.spec.name,
                c.ours.wall,
                c.base.wall,
                c.wall_ratio(),
                c.ours.cpu(),
                c.base.cpu(),
                c.cpu_ratio(),
                c.ours.rss_mib(),
                c.base.rss_mib(),
            );
        }
    }
    for (key, what, max) in RSS_TARGETS {
        if let Some(v) = r.get(key) {
            let worst = v.samples.iter().map(Sample::rss_mib).fold(0.0, f64::max);
            let verdict = if worst <= *max { "PASS" } else { "FAIL" };
            println!(
                "  peak RSS of {what}: {worst:.1} MiB (worst run)   target <= {max:.0} MiB  {verdict}"
            );
        }
    }
    println!(
        "  other s = CPU seconds used by other processes during a run (median); {} run(s) repeated because that exceeded {RETRY_CORES} cores; waited {:.0} s in all for quiet before runs",
        r.retries, r.waited
    );
    if let (Some(b), Some(z)) = (r.bundle_bytes, r.zstd3_bytes) {
        println!(
            "  bundle {} bytes vs tar|zstd -3 {} bytes: {:+.3}%; compression {:.2}x",
            b,
            z,
            (b as f64 / z as f64 - 1.0) * 100.0,
            set.total as f64 / b as f64
        );
    }
}

/// Least-squares fit `y = a + b x`; returns (a, b, r²).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return (my, 0.0, 1.0);
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    (a, b, r2)
}

fn print_scale_report(per_size: &[(u64, SizeResult)]) -> Value {
    println!();
    println!("== scaling: wall = a + b·GiB (least squares), peak RSS per size ==");
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    for (_, r) in per_size {
        for v in &r.variants {
            if !keys.iter().any(|(k, _)| *k == v.key) {
                keys.push((v.key, v.label.clone()));
            }
        }
    }
    let sizes: Vec<String> = per_size.iter().map(|(s, _)| human(*s)).collect();
    println!(
        "  {:<40} {} | {:>7} {:>7} {:>6} | RSS MiB per size",
        "variant (wall s per size)",
        sizes
            .iter()
            .map(|s| format!("{s:>9}"))
            .collect::<Vec<_>>()
            .join(""),
        "s/GiB",
        "a (s)",
        "r²"
    );
    let mut out = serde_json::Map::new();
    for (key, label) in keys {
        let mut points = Vec::new();
        let mut rss = Vec::new();
        let mut walls = Vec::new();
        for (size, r) in per_size {
            if let Some(v) = r.get(key) {
                let gib = *size as f64 / (1u64 << 30) as f64;
                points.push((gib, v.stats.median.wall));
                walls.push(format!("{:>9.2}", v.stats.median.wall));
                rss.push(v.stats.median.rss_mib());
            } else {
                walls.push(format!("{:>9}", "-"));
            }
        }
        let (a, b, r2) = fit(&points);
        let rss_min = rss.iter().copied().fold(f64::INFINITY, f64::min);
        let rss_max = rss.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<40} {} | {:>7.2} {:>7.2} {:>6.3} | {}  (max/min {:.2})",
            label,
            walls.join(""),
            b,
            a,
            r2,
            rss.iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            rss_max / rss_min
        );
        out.insert(
            key.to_owned(),
            json!({
                "label": label, "seconds_per_gib": round(b, 4), "intercept_s": round(a, 4), "r2": round(r2, 5),
                "rss_mib": rss.iter().map(|r| round(*r, 2)).collect::<Vec<_>>(),
                "rss_max_over_min": round(rss_max / rss_min, 3),
                "linear": r2 >= 0.99, "rss_flat": rss_max / rss_min <= 1.25 || rss_max - rss_min <= 8.0,
            }),
        );
    }
    println!("  linear: r² >= 0.99; RSS flat: max/min <= 1.25 (or within 8 MiB) across sizes");
    Value::Object(out)
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()
        })
        .unwrap_or_default()
}

fn machine(ctx: &Ctx) -> Value {
    let cpuinfo = read_trim("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let sha_ni = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" sha_ni"));
    let mem_kib: u64 = read_trim("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fs_type = command_line(
        "findmnt",
        &[
            "-n",
            "-o",
            "FSTYPE,SOURCE",
            "-T",
            &ctx.work.to_string_lossy(),
        ],
    );
    let git = command_line(
        "git",
        &[
            "-C",
            &workspace_root().to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = Command::new("git")
        .args([
            "-C",
            &workspace_root().to_string_lossy(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "sha_ni": sha_ni,
        "mem_gib": round(mem_kib as f64 / 1048576.0, 1),
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "filesystem": fs_type,
        "zstd": command_line("zstd", &["-V"]),
        "tar": command_line("tar", &["--version"]),
        "git": format!("{git}{}", if dirty { "+dirty" } else { "" }),
    })
}

fn describe_binary(p: &Path) -> Value {
    let meta = fs::metadata(p).ok();
    json!({
        "path": p,
        "bytes": meta.as_ref().map(fs::Metadata::len),
        "mtime_unix": meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        "file": command_line("file", &["-b", &p.to_string_lossy()]),
    })
}

fn print_machine(m: &Value, ctx: &Ctx) {
    println!(
        "machine: {} ({} CPUs{}), {} GiB RAM, Linux {}, {} at {}; {}; {}; git {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        if m["sha_ni"].as_bool() == Some(true) {
            ", SHA-NI"
        } else {
            ""
        },
        m["mem_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["filesystem"].as_str().unwrap_or("?"),
        ctx.work.display(),
        m["zstd"].as_str().unwrap_or("?"),
        m["tar"].as_str().unwrap_or("?"),
        m["git"].as_str().unwrap_or("?"),
    );
    println!(
        "binaries: {} | {}",
        ctx.bundler.display(),
        ctx.installer.display()
    );
    println!(
        "method: page cache warmed before every run (inputs read once; caches never dropped), `sync` before every run; \
variants interleaved (order rotated, reversed every other repetition); CPU = user+sys and peak RSS from wait4 rusage \
(for sh -c pipelines: all processes' CPU, RSS of the largest one)"
    );
}
