//! `bundler`: builds signed install bundles from a spec of pinned artifacts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bundle_spec::read::{BundleReader, ReadError, inspect_unverified};
use bundle_spec::spec::{Manifest, Step};
use bundle_spec::{Limits, Reporter as _, Timestamp};
use bundler::build::{BuildOptions, build};
use bundler::fetch::{FetchOptions, MinRate};
use bundler::keys::{KeygenProtection, keygen, load_secret, load_trusted};
use bundler::pin::pin;
use bundler::progress::{Display, Progress};
use clap::{Args, Parser, Subcommand};
use indicatif::HumanBytes;
use serde_json::json;

/// `println!` that ignores a closed pipe (`bundler inspect X | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit code when a bundle fails verification, or a trusted key given to
/// check it cannot be used (as `install-bundle` exits then).
const EXIT_VERIFY: u8 = 3;

/// A `--key` public key file of `verify` or `inspect` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct TrustedKeyError(bundler::keys::KeysError);

#[derive(Parser)]
#[command(
    name = "bundler",
    version,
    about = "Build signed install bundles for air-gapped hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download, verify, pack and sign the artifacts of a spec into one bundle.
    #[command(
        after_help = "Examples:\n  bundler build k8s-worker.json --key ~/secure/release.key\n  bundler build k8s-worker.json --key release.key -o out/worker.tar.zst --jobs 8 --level 19\n  SOURCE_DATE_EPOCH=1700000000 bundler build k8s-worker.json --key release.key --offline\n  bundler build k8s-worker.json --key release.key --base worker-1.tar.zst -o worker-2.diff.tar.zst --full-output worker-2.tar.zst"
    )]
    Build {
        /// The spec (JSON).
        spec: PathBuf,
        /// Output file [default: NAME.tar.zst in the current directory].
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Secret key to sign with (minisign format).
        #[arg(long, env = "BUNDLER_KEY")]
        key: PathBuf,
        /// zstd compression level (1-19).
        #[arg(long, default_value_t = bundle_spec::format::DEFAULT_ZSTD_LEVEL)]
        level: i32,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Build a differential bundle for hosts that have this bundle
        /// installed: leave out every artifact whose bytes and uses are
        /// unchanged since it.
        #[arg(long, value_name = "OLD.tar.zst")]
        base: Option<PathBuf>,
        /// Public key(s) that the base bundle must be signed by [default:
        /// the signing key's].
        #[arg(long, value_name = "PUB", requires = "base")]
        base_key: Vec<PathBuf>,
        /// With --base: also write the full bundle of the same build here
        /// (the fallback for hosts the differential one refuses).
        #[arg(long, value_name = "FILE", requires = "base")]
        full_output: Option<PathBuf>,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Print errors only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Download unpinned artifacts and write their sha256 and size into the
    /// spec; resolve unpinned images to the digest their registry serves.
    #[command(
        after_help = "Examples:\n  bundler pin k8s-worker.json\n  bundler pin k8s-worker.json --insecure-registry mirror.internal:5000"
    )]
    Pin {
        /// The spec (JSON); rewritten in place.
        spec: PathBuf,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print errors only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Resolve the spec's `apt` packages with their dependencies into SPEC.lock.json.
    #[command(
        after_help = "Examples:\n  bundler lock k8s-worker.json   # writes k8s-worker.json.lock.json\n  git diff k8s-worker.json.lock.json"
    )]
    Lock {
        /// The spec (JSON) with an `apt` section; the lock is written beside it.
        spec: PathBuf,
        #[command(flatten)]
        fetch: FetchArgs,
        /// Print the lock's packages as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Print errors only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a signing key pair: OUT.pub and OUT.key.
    #[command(
        after_help = "Examples:\n  bundler keygen --out ~/secure/release   # release.key (passphrase-protected) and release.pub\n  bundler keygen --out ci/test --unencrypted"
    )]
    Keygen {
        /// Path prefix of the two files, e.g. keys/release.
        #[arg(long)]
        out: PathBuf,
        /// Store the secret key without a passphrase (throwaway keys only).
        #[arg(long)]
        unencrypted: bool,
    },
    /// Verify a bundle completely: signature, manifest and every artifact byte.
    #[command(
        after_help = "Examples:\n  bundler verify worker.tar.zst --key keys/release.pub\n  bundler verify worker.tar.zst --key keys/release.pub --key keys/old-release.pub --json"
    )]
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// Trusted public key(s) (minisign format).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Print errors only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a bundle's SBOM (CycloneDX 1.5 JSON) after verifying the bundle
    /// and every artifact byte against trusted keys.
    #[command(
        after_help = "Examples:\n  bundler sbom worker.tar.zst --key keys/release.pub > worker.cdx.json\n  bundler sbom worker.tar.zst --key keys/release.pub -o worker.cdx.json"
    )]
    Sbom {
        /// The bundle.
        bundle: PathBuf,
        /// Trusted public key(s) (minisign format).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Write the SBOM to this file (written whole, then renamed) instead of stdout.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Split a bundle into parts for removable media, with Reed-Solomon parity
    /// parts and a signed parts index (NAME.tar.zst.001 ..., NAME.tar.zst.parts.json).
    ///
    /// Any PARITY parts may then be lost or corrupt: `bundler join` and
    /// `install-bundle` rebuild them.
    #[command(
        after_help = "Examples:\n  bundler split worker.tar.zst --size 4G --parity 1 --key release.key -o usb/\n  bundler split worker.tar.zst --size 700M --parity 2 --key release.key -o cds/"
    )]
    Split {
        /// The bundle.
        bundle: PathBuf,
        /// Size of each data part (K, M, G suffixes: 1024-based).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Parity parts: how many parts may be lost or corrupt.
        #[arg(long, default_value_t = 1)]
        parity: usize,
        /// Secret key to sign the parts index with.
        #[arg(long, env = "BUNDLER_KEY")]
        key: PathBuf,
        /// Output directory [default: the bundle's].
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Rebuild a bundle from its parts (any set that suffices), naming
    /// missing and corrupt parts; the output appears only when complete.
    #[command(
        after_help = "Examples:\n  bundler join /media/usb1/worker.tar.zst.parts.json --parts-dir /media/usb2 --key release.pub -o worker.tar.zst"
    )]
    Join {
        /// The parts index (NAME.tar.zst.parts.json) or the first part (NAME.tar.zst.001).
        index: PathBuf,
        /// Further directories holding parts (repeatable).
        #[arg(long = "parts-dir")]
        parts_dirs: Vec<PathBuf>,
        /// Trusted public key(s) for the index's signature.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Output file [default: NAME.tar.zst in the current directory].
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Compare two releases: bundles (verified with --key) or specs.
    ///
    /// Reports artifacts, Debian packages (versions), images (digests),
    /// steps (with a unified diff of file and unit content), variables, name,
    /// version, serial, expiry and target. Exit 0 when equal, 1 when
    /// different, 2 on errors, 3 when a bundle fails verification.
    #[command(
        after_help = "Examples:\n  bundler diff worker-1.30.3.tar.zst worker-1.30.4.tar.zst --key keys/release.pub\n  bundler diff k8s-worker.json worker-1.30.4.tar.zst --key keys/release.pub --json > change.json\n  bundler diff old/k8s-worker.json k8s-worker.json"
    )]
    Diff {
        /// The old release: a bundle or a spec.
        old: PathBuf,
        /// The new release: a bundle or a spec.
        new: PathBuf,
        /// Trusted public key(s) for bundles.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Print the report as JSON (builder/schema/diff.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions for bash, zsh or fish on stdout.
    #[command(
        after_help = "Examples:\n  bundler completions bash > /usr/share/bash-completion/completions/bundler\n  bundler completions zsh > /usr/local/share/zsh/site-functions/_bundler\n  bundler completions fish > ~/.config/fish/completions/bundler.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (bundler.1 and one per subcommand) into a directory.
    #[command(
        hide = true,
        after_help = "Examples:\n  bundler man --out target/man && man -l target/man/bundler-build.1"
    )]
    Man {
        /// The directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Upload a bundle and its detached signature (BUNDLE.minisig) to an S3
    /// bucket or an OCI registry.
    ///
    /// s3://BUCKET/KEY: the objects KEY and KEY.minisig; credentials, region
    /// and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE and ~/.aws/{config,credentials};
    /// bundles larger than --part-size go up as a multipart upload, --jobs
    /// parts at a time. oci://REGISTRY/REPOSITORY:TAG: one OCI artifact
    /// (artifactType application/vnd.airgap.bundle.v1) with the bundle and
    /// signature as layers; credentials from $REGISTRY_AUTH_FILE or
    /// ~/.docker/config.json.
    #[command(
        after_help = "Examples:\n  bundler push worker-1.30.4.tar.zst s3://releases/k8s/worker-1.30.4.tar.zst\n  AWS_ENDPOINT_URL=https://minio.internal:9000 bundler push worker.tar.zst s3://bundles/worker.tar.zst\n  bundler push worker-1.30.4.tar.zst oci://registry.internal:5000/bundles/worker:1.30.4"
    )]
    Push {
        /// The bundle (its detached signature BUNDLE.minisig is pushed too).
        bundle: PathBuf,
        /// s3://BUCKET/KEY or oci://REGISTRY/REPOSITORY:TAG.
        url: String,
        #[command(flatten)]
        transfer: TransferArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Download a bundle from an S3 bucket or an OCI registry, verified.
    ///
    /// The detached signature is checked against --key (and the manifest's
    /// own signature) before the output file appears; a tampered or
    /// incomplete download is removed and refused (exit 3). S3 downloads are
    /// ranged, --jobs chunks at a time, and an interrupted one resumes when
    /// run again.
    #[command(
        after_help = "Examples:\n  bundler pull s3://releases/k8s/worker-1.30.4.tar.zst -o worker.tar.zst --key release.pub\n  bundler pull oci://registry.internal:5000/bundles/worker:1.30.4 -o worker.tar.zst --key release.pub\n  install-bundle worker.tar.zst"
    )]
    Pull {
        /// s3://BUCKET/KEY or oci://REGISTRY/REPOSITORY:TAG.
        url: String,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Trusted public key(s) (minisign format).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        transfer: TransferArgs,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest, signing key and artifacts.
    #[command(
        after_help = "Examples:\n  bundler inspect worker.tar.zst\n  bundler inspect worker.tar.zst --key keys/release.pub --json"
    )]
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// Check the manifest's signature against these public keys.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `bundler diff`: a side failed verification (exit 3).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct DiffVerify(bundler::diff::DiffError);

/// `bundler diff`: a side could not be read (exit 2, as diff(1)).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct DiffUsage(bundler::diff::DiffError);

/// The parts index for `path`: itself, or `NAME.parts.json` beside the
/// first part `NAME.001`.
fn parts_index_path(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(".001") {
        Some(base) => PathBuf::from(format!("{base}.parts.json")),
        None => path.to_owned(),
    }
}

/// `700M`, `4G`, `1048576`: bytes (K, M, G, T are powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (K, M, G, T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 700M, 4G)"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?} is not a positive size")),
        Some(v) => Ok(v),
    }
}

/// How S3 transfers are cut.
#[derive(Args)]
struct TransferArgs {
    /// Parts (S3 multipart upload) or chunks (ranged download) transferred at once.
    #[arg(short, long, default_value_t = 4)]
    jobs: usize,
    /// Size of a multipart-upload part and of a download chunk (K, M, G;
    /// at least 5M) [default: 64M, raised to stay within 10000 parts].
    #[arg(long, value_parser = parse_size)]
    part_size: Option<u64>,
}

#[derive(Args)]
struct FetchArgs {
    /// Download cache [default: $XDG_CACHE_HOME/bundler].
    #[arg(long, env = "BUNDLER_CACHE")]
    cache: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(short, long, default_value_t = 4)]
    jobs: usize,
    /// Use only the cache; never download.
    #[arg(long)]
    offline: bool,
    /// Attempts per URL after the first.
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Seconds without a byte after which a transfer is retried.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Slowest transfer tolerated, in bytes/s averaged over --min-rate-window;
    /// a slower one is retried (resuming). 0 turns the bound off.
    #[arg(long, default_value_t = 1024, value_name = "BYTES_PER_SEC")]
    min_rate: u64,
    /// Seconds over which --min-rate is averaged.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    min_rate_window: u64,
}

/// How container registries are reached. Credentials come from
/// $REGISTRY_AUTH_FILE, else ~/.docker/config.json.
#[derive(Args)]
struct RegistryArgs {
    /// A PEM file of CA certificates trusted for registries, besides the
    /// system's roots (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Allow plain HTTP to this registry (HOST:PORT as in image references;
    /// repeatable). Loopback registries need no flag. HTTPS is still
    /// preferred when the registry speaks it.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    fn options(&self) -> bundler::registry::RegistryOptions {
        bundler::registry::RegistryOptions {
            ca_files: self.ca.clone(),
            insecure: self.insecure.clone(),
            auth_file: bundler::registry::AuthFile::from_env(),
        }
    }
}

impl FetchArgs {
    fn options(&self) -> FetchOptions {
        FetchOptions {
            jobs: self.jobs.max(1),
            offline: self.offline,
            retries: self.retries,
            idle_timeout: Duration::from_secs(self.timeout.max(1)),
            min_rate: MinRate {
                bytes_per_sec: self.min_rate,
                window: Duration::from_secs(self.min_rate_window.max(1)),
            },
            ..FetchOptions::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let parts_refused = e
                .downcast_ref::<bundle_spec::parts::PartsError>()
                .is_some_and(|p| !matches!(p, bundle_spec::parts::PartsError::Io { .. }));
            if e.downcast_ref::<DiffUsage>().is_some() {
                return ExitCode::from(2);
            }
            if e.downcast_ref::<ReadError>().is_some()
                || e.downcast_ref::<TrustedKeyError>().is_some()
                || e.downcast_ref::<DiffVerify>().is_some()
                || parts_refused
                || e.downcast_ref::<bundler::transfer::TransferError>()
                    .is_some_and(|t| t.is_verification())
            {
                ExitCode::from(EXIT_VERIFY)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes `NAME.1` for `cmd` and `NAME-SUB.1` for each visible subcommand
/// into `dir` (clap_mangen, from the same definitions as `--help`).
fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = cmd.get_name().to_owned();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("{name}-{}", sub.get_name());
        pages.push((
            full.clone(),
            sub.clone()
                .name(full.clone())
                .bin_name(full.replace('-', " ")),
        ));
    }
    for (file, page) in pages {
        let path = dir.join(format!("{file}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(file.to_uppercase())
            .render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bundler", &mut script);
            outln!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            use clap::CommandFactory as _;
            write_man_pages(Cli::command(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build {
            spec,
            out,
            key,
            level,
            fetch,
            registry,
            base,
            base_key,
            full_output,
            json,
            quiet,
        } => {
            let key = load_secret(&key)?;
            let base = match base {
                Some(path) => {
                    let trusted = if base_key.is_empty() {
                        let mut t = bundle_spec::sign::TrustedKeys::new();
                        t.add(key.public(), "the signing key");
                        t
                    } else {
                        load_trusted(&base_key).map_err(TrustedKeyError)?
                    };
                    Some((path, trusted))
                }
                None => None,
            };
            let progress = Progress::new(Display::detect(quiet));
            let result = build(
                BuildOptions {
                    spec,
                    out,
                    key,
                    cache: fetch.cache.clone(),
                    fetch: fetch.options(),
                    level,
                    registry: registry.options(),
                    base,
                    full_out: full_output,
                },
                &progress,
            );
            progress.finish();
            let built = result?;
            let downloaded = built.fetched.iter().filter(|f| !f.from_cache).count();
            let m = &built.manifest;
            if json {
                let artifacts: Vec<_> = built
                    .fetched
                    .iter()
                    .map(|f| json!({"name": f.name, "sha256": f.sha256, "size": f.size, "source": f.source, "from_cache": f.from_cache}))
                    .collect();
                let images: Vec<_> = built
                    .images
                    .iter()
                    .map(|i| json!({"name": i.name, "ref": i.reference, "digest": i.digest, "manifest": i.manifest,
                        "size": i.size, "blobs_downloaded": i.blobs_downloaded, "blobs_from_cache": i.blobs_cached,
                        "manifests_downloaded": i.manifests_downloaded}))
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "bundle": built.bundle, "signature": built.signature, "name": m.name, "version": m.version,
                        "serial": m.serial, "created": m.created, "key_id": built_key_id(&built.signature),
                        "manifest_sha256": built.manifest_sha256, "size": built.size, "artifacts": artifacts,
                        "images": images,
                        "base": m.base.as_ref().map(|b| json!({"name": b.name, "serial": b.serial,
                            "manifest_sha256": b.manifest_sha256, "omitted": b.omitted.keys().collect::<Vec<_>>(),
                            "omitted_bytes": m.artifacts.iter().filter(|(n, _)| m.is_omitted(n)).map(|(_, a)| a.size).sum::<u64>()})),
                        "full": built.full.as_ref().map(|(p, size)| json!({"bundle": p, "size": size})),
                    }))?
                );
            } else if !quiet {
                outln!(
                    "built {} {} (serial {}): {} ({}), {} artifacts ({} downloaded, {} from cache){}, signed by key {}",
                    m.name,
                    m.version,
                    m.serial,
                    built.bundle.display(),
                    HumanBytes(built.size),
                    built.fetched.len(),
                    downloaded,
                    built.fetched.len() - downloaded,
                    match built.images.len() {
                        0 => String::new(),
                        n => format!(", {n} image(s)"),
                    },
                    built_key_id(&built.signature)
                );
                for i in &built.images {
                    outln!(
                        "image {} {}@{} ({} manifest {}): {}, {} blob(s) downloaded, {} from cache",
                        i.name,
                        i.reference,
                        i.digest,
                        m.images.get(&i.name).map_or("", |e| e.platform.as_str()),
                        i.manifest,
                        HumanBytes(i.size),
                        i.blobs_downloaded,
                        i.blobs_cached
                    );
                }
                if let Some(b) = &m.base {
                    let left_out: u64 = m
                        .artifacts
                        .iter()
                        .filter(|(n, _)| m.is_omitted(n))
                        .map(|(_, a)| a.size)
                        .sum();
                    outln!(
                        "differential: for hosts with serial {} installed; {} of {} artifacts left out ({}): {}",
                        b.serial,
                        b.omitted.len(),
                        m.artifacts.len(),
                        HumanBytes(left_out),
                        b.omitted
                            .keys()
                            .map(|n| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if let Some((p, size)) = &built.full {
                    outln!("full bundle: {} ({})", p.display(), HumanBytes(*size));
                }
                outln!("detached signature: {}", built.signature.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pin {
            spec,
            fetch,
            registry,
            quiet,
        } => {
            let progress = Progress::new(Display::detect(quiet));
            let result = pin(
                &spec,
                fetch.cache.as_deref(),
                &fetch.options(),
                &registry.options(),
                &progress,
            );
            progress.finish();
            let pinned = result?;
            if quiet {
                return Ok(ExitCode::SUCCESS);
            }
            if pinned.is_empty() {
                outln!("{}: every artifact is already pinned", spec.display());
            }
            for i in &pinned.images {
                outln!(
                    "pinned image {}: {} is {} (manifest {}; from {})",
                    i.name,
                    i.reference,
                    i.digest,
                    i.manifest,
                    i.source
                );
            }
            for f in pinned.artifacts {
                outln!(
                    "pinned {}: sha256 {} size {} (from {})",
                    f.name,
                    f.sha256,
                    f.size,
                    f.source
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lock {
            spec,
            fetch,
            json,
            quiet,
        } => {
            let progress = Progress::new(Display::detect(quiet || json));
            let result =
                bundler::lock::lock(&spec, fetch.cache.as_deref(), &fetch.options(), &progress);
            progress.finish();
            let locked = result?;
            let l = &locked.lock;
            let bytes: u64 = l.artifacts.values().filter_map(|a| a.size).sum();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "lock": locked.path, "packages": l.packages, "bytes": bytes,
                        "in_baseline": locked.in_baseline, "upgrades": locked.upgrades,
                    }))?
                );
                return Ok(ExitCode::SUCCESS);
            }
            if quiet {
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "locked {} package(s) ({}) from {} package(s) in {} signed source(s) into {}",
                l.packages.len(),
                HumanBytes(bytes),
                locked.index_packages,
                l.sources.len(),
                locked.path.display()
            );
            let width = l
                .packages
                .iter()
                .map(|p| p.package.len() + p.version.len() + 1)
                .max()
                .unwrap_or(0);
            for p in &l.packages {
                outln!(
                    "  {:<width$}  {}",
                    format!("{} {}", p.package, p.version),
                    if p.required_by == "requested" {
                        "requested".to_owned()
                    } else {
                        format!("for {}", p.required_by)
                    }
                );
            }
            if !locked.in_baseline.is_empty() {
                outln!(
                    "already in baseline {} (left out): {}",
                    l.baseline.as_deref().unwrap_or("-"),
                    locked.in_baseline.join(", ")
                );
            }
            if !locked.upgrades.is_empty() {
                outln!(
                    "upgrades packages of the baseline: {}",
                    locked.upgrades.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            old,
            new,
            keys,
            json,
        } => {
            let trusted = if keys.is_empty() {
                None
            } else {
                Some(load_trusted(&keys).map_err(TrustedKeyError)?)
            };
            let load = |p: &Path| -> Result<bundler::diff::Side> {
                bundler::diff::load(p, trusted.as_ref()).map_err(|e| match e {
                    bundler::diff::DiffError::Verify { .. } => anyhow::Error::new(DiffVerify(e)),
                    other => anyhow::Error::new(DiffUsage(other)),
                })
            };
            let report = bundler::diff::diff(&load(&old)?, &load(&new)?);
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!("{}", bundler::diff::text(&report).trim_end());
            }
            Ok(if report.equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Split {
            bundle,
            size,
            parity,
            key,
            out,
        } => {
            let key = load_secret(&key)?;
            let dir = out.unwrap_or_else(|| {
                bundle
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_owned)
            });
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let index = bundle_spec::parts::split(
                &bundle,
                &dir,
                size,
                parity,
                bundle_spec::parts::DEFAULT_BLOCK_SIZE,
                &key,
            )?;
            outln!(
                "{}: {} bytes in {} data part(s) of up to {} and {} parity part(s); any {} may be lost",
                index.bundle,
                index.size,
                index.data_parts,
                HumanBytes(index.part_size),
                index.parity_parts,
                index.parity_parts
            );
            for p in &index.parts {
                outln!("  {}  {:>10}  {}", p.file, HumanBytes(p.size), p.sha256);
            }
            outln!(
                "  {}  (signed index; carry it with the parts)",
                bundle_spec::parts::PartsIndex::index_name(&index.bundle)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Join {
            index,
            parts_dirs,
            keys,
            out,
        } => {
            let trusted = load_trusted(&keys).map_err(TrustedKeyError)?;
            let index_path = parts_index_path(&index);
            let parsed = bundle_spec::parts::read_index(&index_path, &trusted)?;
            let mut dirs = vec![
                index_path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_owned),
            ];
            dirs.extend(parts_dirs);
            let paths = bundle_spec::parts::locate(&parsed, &dirs);
            let out = out.unwrap_or_else(|| PathBuf::from(&parsed.bundle));
            let mut reader = bundle_spec::parts::PartsReader::open(parsed, paths)?;
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_owned);
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            std::io::copy(&mut reader, tmp.as_file_mut()).map_err(|e| {
                let is_parts = e
                    .get_ref()
                    .is_some_and(|i| i.is::<bundle_spec::parts::PartsError>());
                match e.into_inner() {
                    Some(inner) if is_parts => {
                        match inner.downcast::<bundle_spec::parts::PartsError>() {
                            Ok(p) => anyhow::Error::new(*p),
                            Err(other) => anyhow::anyhow!(other),
                        }
                    }
                    Some(inner) => anyhow::anyhow!(inner),
                    None => anyhow::anyhow!("reading the parts failed"),
                }
            })?;
            tmp.as_file().sync_all()?;
            tmp.persist(&out)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot write {}", out.display()))?;
            outln!(
                "joined {} ({} bytes, sha256 {}): {}",
                out.display(),
                reader.index().size,
                reader.index().sha256,
                reader.repairs()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Push {
            bundle,
            url,
            transfer,
            registry,
        } => {
            let location: bundler::transfer::Location = url.parse()?;
            let local = bundler::transfer::LocalBundle::open(&bundle)?;
            let start = std::time::Instant::now();
            let pushed = bundler::transfer::push(
                &local,
                &location,
                &bundler::transfer::TransferOptions {
                    jobs: transfer.jobs.max(1),
                    part_size: transfer.part_size,
                    registry: registry.options(),
                },
            )?;
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            outln!(
                "pushed {} {} (serial {}, signed by key {}) to {}: {} in {} part(s){}, {:.1}s ({}/s)",
                local.name,
                local.version,
                local.serial,
                local.key_id,
                pushed.url,
                HumanBytes(pushed.size),
                pushed.parts,
                pushed
                    .digest
                    .as_deref()
                    .map(|d| format!(", manifest {d}"))
                    .unwrap_or_default(),
                secs,
                HumanBytes((pushed.size as f64 / secs) as u64)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull {
            url,
            out,
            keys,
            transfer,
            registry,
            json,
        } => {
            let trusted = load_trusted(&keys).map_err(TrustedKeyError)?;
            let location: bundler::transfer::Location = url.parse()?;
            let start = std::time::Instant::now();
            let p = bundler::transfer::pull(
                &location,
                &out,
                &trusted,
                &bundler::transfer::TransferOptions {
                    jobs: transfer.jobs.max(1),
                    part_size: transfer.part_size,
                    registry: registry.options(),
                },
            )?;
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "url": p.url, "out": p.path, "size": p.size, "name": p.name, "version": p.version,
                        "serial": p.serial, "key_id": p.key_id, "resumed_chunks": p.resumed_chunks,
                        "seconds": secs,
                    }))?
                );
            } else {
                outln!(
                    "pulled {} {} (serial {}), signed by trusted key {}: {} ({}) from {}{}, {:.1}s ({}/s)",
                    p.name,
                    p.version,
                    p.serial,
                    p.key_id,
                    p.path.display(),
                    HumanBytes(p.size),
                    p.url,
                    if p.resumed_chunks > 0 {
                        format!(
                            " (resumed: {} chunk(s) were already here)",
                            p.resumed_chunks
                        )
                    } else {
                        String::new()
                    },
                    secs,
                    HumanBytes((p.size as f64 / secs) as u64)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out, unencrypted } => {
            let protection = if unencrypted {
                KeygenProtection::Unencrypted
            } else {
                KeygenProtection::Passphrase
            };
            let g = keygen(&out, protection)?;
            outln!("key id {}", g.public.id);
            outln!(
                "public key: {} (copy it into keys/ before `make static`, and to hosts' /etc/install-bundle/trusted.d/)",
                g.public_path.display()
            );
            outln!(
                "secret key: {} (mode 0600; keep it offline, never commit it)",
                g.secret_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sbom { bundle, keys, out } => {
            let trusted = load_trusted(&keys).map_err(TrustedKeyError)?;
            let file =
                File::open(&bundle).with_context(|| format!("cannot open {}", bundle.display()))?;
            let v = bundle_spec::read::verify(
                file,
                &trusted,
                &Limits::default(),
                &bundle_spec::report::NoReporter,
            )
            .with_context(|| format!("{} refused", bundle.display()))?;
            let Some(sbom) = v.sbom else {
                anyhow::bail!(
                    "{}: {} {} (serial {}) carries no SBOM: it was built before bundles had one; rebuild it with this bundler",
                    bundle.display(),
                    v.manifest.name,
                    v.manifest.version,
                    v.manifest.serial
                );
            };
            match out {
                None => {
                    use std::io::Write as _;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&sbom)?;
                    stdout.flush()?;
                }
                Some(out) => {
                    let dir = out
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    use std::io::Write as _;
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    tmp.write_all(&sbom)
                        .and_then(|()| tmp.as_file().sync_all())
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    tmp.persist(&out)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            bundle,
            keys,
            json,
            quiet,
        } => {
            let trusted = load_trusted(&keys).map_err(TrustedKeyError)?;
            let file =
                File::open(&bundle).with_context(|| format!("cannot open {}", bundle.display()))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let limits = Limits::default();
            let reader = BundleReader::open(file, &trusted, &limits)
                .with_context(|| format!("{} refused", bundle.display()))?;
            let total = reader.manifest().total_artifact_bytes();
            let progress =
                Progress::new(Display::detect(quiet || json)).with_overall("verify", total);
            progress.on_phase("verify");
            let result = reader.read_artifacts(&mut bundle_spec::read::DiscardSink, &progress);
            progress.finish();
            let v = result.with_context(|| format!("{} refused", bundle.display()))?;
            let m = &v.manifest;
            let now = Timestamp::now();
            let expired = bundle_spec::time::is_expired(m.expires, now);
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "bundle": bundle, "ok": true, "name": m.name, "version": m.version, "serial": m.serial,
                        "key_id": v.key_id.to_string(), "manifest_sha256": v.manifest_sha256,
                        "artifacts": m.artifacts.len(), "artifact_bytes": v.artifact_bytes, "size": size,
                        "created": m.created, "expires": m.expires, "now": now, "expired": expired,
                    }))?
                );
            } else if !quiet {
                outln!(
                    "OK {}: {} {} (serial {}), signed by trusted key {}, {} artifacts ({}) verified{}",
                    bundle.display(),
                    m.name,
                    m.version,
                    m.serial,
                    v.key_id,
                    m.carried().count(),
                    HumanBytes(v.artifact_bytes),
                    m.left_out()
                );
                outln!("  created {}", m.created);
                outln!("  {}", bundle_spec::time::describe_expiry(m.expires, now));
                if expired {
                    eprintln!(
                        "warning: the bundle expired at {}; install-bundle will refuse it",
                        m.expires.map(|e| e.to_string()).unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { bundle, keys, json } => {
            let open =
                || File::open(&bundle).with_context(|| format!("cannot open {}", bundle.display()));
            let limits = Limits::default();
            let size = open()?.metadata().map(|m| m.len()).unwrap_or(0);
            let (manifest, key_id, sig_status) = if keys.is_empty() {
                let u = inspect_unverified(open()?, &limits)
                    .with_context(|| format!("{} refused", bundle.display()))?;
                (
                    u.manifest,
                    u.signature.key_id,
                    "NOT checked (pass --key PUB to check)".to_owned(),
                )
            } else {
                let trusted = load_trusted(&keys).map_err(TrustedKeyError)?;
                let r = BundleReader::open(open()?, &trusted, &limits)
                    .with_context(|| format!("{} refused", bundle.display()))?;
                (
                    r.manifest().clone(),
                    r.key_id(),
                    "good (manifest only; `bundler verify` checks every byte)".to_owned(),
                )
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print_inspect(&bundle, size, &manifest, &key_id.to_string(), &sig_status);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The key id of a detached signature file just written.
fn built_key_id(sig: &std::path::Path) -> String {
    std::fs::read_to_string(sig)
        .ok()
        .and_then(|t| bundle_spec::sign::Signature::parse(&t).ok())
        .map(|s| s.key_id.to_string())
        .unwrap_or_default()
}

fn print_inspect(
    bundle: &std::path::Path,
    size: u64,
    m: &Manifest,
    key_id: &str,
    sig_status: &str,
) {
    outln!("bundle     {} ({})", bundle.display(), HumanBytes(size));
    outln!("name       {} {} (serial {})", m.name, m.version, m.serial);
    outln!("created    {}", m.created);
    outln!(
        "expires    {}",
        m.expires
            .map_or_else(|| "never".to_owned(), |e| e.to_string())
    );
    outln!(
        "target     {}/{}",
        m.target.os.as_str(),
        m.target.arch.as_str()
    );
    outln!("key id     {key_id}");
    outln!("signature  {sig_status}");
    if !m.variables.is_empty() {
        outln!("variables");
        for (name, v) in &m.variables {
            let mut notes = Vec::new();
            if v.required {
                notes.push("required".to_owned());
            }
            if let Some(d) = &v.default {
                notes.push(format!("default {d:?}"));
            }
            if let Some(p) = &v.pattern {
                notes.push(format!("pattern {p:?}"));
            }
            outln!("  {name:<20} {}", notes.join(", "));
        }
    }
    outln!(
        "artifacts  {} ({})",
        m.artifacts.len(),
        HumanBytes(m.total_artifact_bytes())
    );
    let width = m
        .artifacts
        .keys()
        .map(|n| n.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "  {:<width$}  {:>10}  {:<64}  URL",
        "NAME",
        "SIZE",
        "SHA256"
    );
    for (name, a) in &m.artifacts {
        outln!(
            "  {:<width$}  {:>10}  {}  {}",
            name.as_str(),
            HumanBytes(a.size).to_string(),
            a.sha256,
            a.url
        );
    }
    if !m.images.is_empty() {
        outln!("images     {}", m.images.len());
        let width = m
            .images
            .keys()
            .map(|n| n.as_str().len())
            .max()
            .unwrap_or(4)
            .max(4);
        for (name, i) in &m.images {
            let size = m.artifacts.get(name).map_or(0, |a| a.size);
            outln!(
                "  {:<width$}  {:>10}  {}",
                name.as_str(),
                HumanBytes(size).to_string(),
                i.reference
            );
            outln!("  {:<width$}  {:>10}  digest   {}", "", "", i.digest);
            outln!(
                "  {:<width$}  {:>10}  {} manifest {}",
                "",
                "",
                i.platform,
                i.manifest
            );
        }
    }
    outln!("steps      {}", m.steps.len());
    for (i, s) in m.steps.iter().enumerate() {
        let what = match s {
            Step::Debs(d) => d
                .artifacts
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            Step::SwapOff(_) => String::new(),
            Step::KernelModule(k) => k.name.to_string(),
            Step::Binary(b) => format!("{} -> {} ({})", b.artifact, b.dest, b.mode),
            Step::Extract(e) => format!("{} -> {}", e.artifact, e.dest),
            Step::Directory(d) => d
                .paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            Step::File(f) => format!("{} ({})", f.dest, f.mode),
            Step::SystemdUnit(u) => u.name.to_string(),
            Step::Command(c) => c.argv.join(" "),
            Step::Images(i) => format!(
                "{} (namespace {}{})",
                i.images
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                i.namespace,
                if i.pin { ", pinned" } else { "" }
            ),
        };
        outln!("  {:>3}. {:<14} {what}", i + 1, s.kind());
    }
}
