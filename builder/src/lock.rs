//! `bundler lock`: a spec's `apt` section (package names) → pinned `.deb`
//! artifacts with their whole dependency closure, in `SPEC.lock.json`.
//!
//! For each source, in order:
//!
//! 1. fetch `dists/SUITE/InRelease` (or, when that fails, `Release` and
//!    `Release.gpg`) through the download layer;
//! 2. verify the OpenPGP signature with `gpgv` against the source's keyring,
//!    as apt does: at least one good, valid signature by a key of the
//!    keyring and no bad one (signatures by other keys are ignored); then
//!    read only the signed text ([`debpkg::index::split_clearsigned`]
//!    refuses anything outside the one signed message);
//! 3. check that the `Release` is for the requested suite (`Suite` or
//!    `Codename`), not past its `Valid-Until`, and lists the architecture and
//!    components;
//! 4. fetch the component's `Packages.xz` (else `.gz`, else plain) pinned to
//!    the size and SHA-256 the signed `Release` lists, and parse it.
//!
//! Then [`debpkg::resolve::resolve`] computes the closure of the requested
//! packages (Depends + Pre-Depends, versions, alternatives, virtual packages;
//! not Recommends) minus the baseline, dependencies first, and the lock is
//! written: one artifact per package (`deb-NAME`; URL = source URL +
//! `Filename`, with the index's SHA-256 and size) and one `debs` step.
//!
//! `bundler build` merges the lock into the spec ([`merge_lock`]): the lock's
//! artifacts join the spec's and its `debs` step runs **first**, before the
//! spec's own steps (OS packages before the software that needs them, as in a
//! manual install). The lock records the SHA-256 of the spec's `apt` section
//! (as parsed, so reformatting the spec does not matter); when it differs the
//! build refuses the lock as stale. A lock may only add pinned `.deb`
//! artifacts and `debs` steps: anything else in it is refused.
//!
//! # Baselines
//!
//! What the target already has is left out. `baseline` is either a built-in
//! name or (when it contains a `/`) a dpkg status file of the target image,
//! relative to the spec. The built-in `debian-12-minbase` is
//! `builder/baselines/debian-12-minbase.status`: the dpkg status of a real
//! `debootstrap --variant=minbase bookworm ROOT http://deb.debian.org/debian`
//! run, trimmed to Package, Status, Priority, Essential, Architecture,
//! Multi-Arch, Version and Provides (its `#` header lines are comments). To
//! regenerate it, run debootstrap and trim `ROOT/var/lib/dpkg/status` the
//! same way; the worker e2e test compares its names with a fresh run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bundle_spec::names::ArtifactName;
use bundle_spec::spec::{AptSection, AptSource, ArtifactSource, DebsStep, Spec, Step};
use bundle_spec::validate::validate_spec;
use bundle_spec::{Limits, Reporter, Sha256Digest};
use debpkg::index::{IndexPackage, Release, read_packages_file, split_clearsigned};
use debpkg::resolve::{ResolveError, resolve};
use debpkg::{Status, StatusError};
use serde::{Deserialize, Serialize};

use crate::build::{BuildError, load_spec, read_capped};
use crate::cache::Cache;
use crate::fetch::{FetchErrors, FetchOptions, FetchRequest, Fetched, Source, fetch_all};
use crate::pin::write_pretty;

/// The lock file format.
pub const LOCK_API_VERSION: &str = "bundle-lock/v1";

/// Built-in baselines: name → dpkg status text (with `#` comment lines).
pub const BUILTIN_BASELINES: &[(&str, &str)] = &[(
    "debian-12-minbase",
    include_str!("../baselines/debian-12-minbase.status"),
)];

/// `SPEC.lock.json`: what `bundler lock` resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// [`LOCK_API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// SHA-256 of the spec's `apt` section ([`apt_digest`]); a different one
    /// makes the lock stale.
    pub apt_sha256: Sha256Digest,
    /// The architecture resolved for.
    pub arch: String,
    /// The baseline left out, as the spec names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The signed `Release` files the packages come from (informational).
    pub sources: Vec<LockedSource>,
    /// Each package, in install order (informational).
    pub packages: Vec<LockedPackage>,
    /// One pinned artifact per package.
    pub artifacts: BTreeMap<ArtifactName, ArtifactSource>,
    /// The `debs` step, merged before the spec's steps.
    pub steps: Vec<Step>,
}

/// One source as it was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    /// The archive root.
    pub url: String,
    /// The suite.
    pub suite: String,
    /// Which file carried the signature: `InRelease` or `Release`.
    pub release_file: String,
    /// SHA-256 of that file.
    pub release_sha256: Sha256Digest,
    /// Its `Date` field, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Fingerprints of the keys whose good signatures were accepted.
    pub signed_by: Vec<String>,
}

/// One resolved package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// Architecture (`amd64` or `all`).
    pub architecture: String,
    /// The artifact holding it.
    pub artifact: ArtifactName,
    /// `requested`, or the package that needed it first.
    pub required_by: String,
}

/// Why locking or merging a lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Loading the spec failed.
    #[error(transparent)]
    Spec(#[from] BuildError),
    /// `bundler lock` on a spec without `apt`.
    #[error("{}: the spec has no \"apt\" section; nothing to lock", path.display())]
    NoApt {
        /// The spec.
        path: PathBuf,
    },
    /// The baseline is unknown or unreadable.
    #[error("apt.baseline: {0}")]
    Baseline(String),
    /// A source could not be fetched, verified or read.
    #[error("apt source {url} {suite}: {reason}")]
    Source {
        /// Its URL.
        url: String,
        /// Its suite.
        suite: String,
        /// What went wrong.
        reason: String,
    },
    /// Downloads failed.
    #[error("apt source {url} {suite}: {errors}")]
    Fetch {
        /// Its URL.
        url: String,
        /// Its suite.
        suite: String,
        /// The download errors.
        errors: FetchErrors,
    },
    /// Some dependency cannot be met.
    #[error("cannot resolve apt.packages:\n{}", indent(&.0.to_string()))]
    Unsatisfiable(ResolveError),
    /// A generated artifact name clashes.
    #[error("{0}")]
    Names(String),
    /// The cache could not be opened.
    #[error("{0}")]
    Cache(String),
    /// Writing the lock failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The spec has `apt` but there is no lock.
    #[error(
        "{}: the spec has an \"apt\" section but {} does not exist; run `bundler lock {}` (on a connected machine) to resolve the packages",
        spec.display(), lock.display(), spec.display()
    )]
    Missing {
        /// The spec.
        spec: PathBuf,
        /// The expected lock path.
        lock: PathBuf,
    },
    /// The lock was made for another `apt` section.
    #[error(
        "{}: stale lock: it was made for a different \"apt\" section of {} (apt sha256 {locked}, now {current}); re-run `bundler lock {}`",
        lock.display(), spec.display(), spec.display()
    )]
    Stale {
        /// The spec.
        spec: PathBuf,
        /// The lock.
        lock: PathBuf,
        /// The digest recorded in the lock.
        locked: Sha256Digest,
        /// The digest of the spec's section now.
        current: Sha256Digest,
    },
    /// The lock is not a valid lock file.
    #[error("{}: invalid lock file: {reason}; re-run `bundler lock`", lock.display())]
    Invalid {
        /// The lock.
        lock: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the lock of `spec` lives: `NAME.json` → `NAME.lock.json` beside it
/// (any other name gets `.lock.json` appended).
pub fn lock_path(spec: &Path) -> PathBuf {
    let name = spec
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    spec.with_file_name(format!("{stem}.lock.json"))
}

/// The SHA-256 of an `apt` section as parsed (field order and formatting of
/// the spec file do not matter).
pub fn apt_digest(apt: &AptSection) -> Sha256Digest {
    Sha256Digest::of(&serde_json::to_vec(apt).expect("apt section serializes"))
}

/// The artifact name of a package: `deb-NAME`, lowercased, with `+` spelled
/// `plus` (artifact names have no `+` or capitals), shortened with a hash
/// when too long.
pub fn deb_artifact_name(package: &str) -> Result<ArtifactName, String> {
    let base = format!("deb-{}", package.to_ascii_lowercase().replace('+', "plus"));
    let name = if base.len() <= 64 {
        base
    } else {
        let h = Sha256Digest::of(package.as_bytes()).to_hex();
        format!("{}-{}", &base[..55], &h[..8])
    };
    name.parse()
        .map_err(|e| format!("package {package:?} gives no valid artifact name: {e}"))
}

/// Reads a baseline: a built-in name, or a status file relative to `spec_dir`.
pub fn load_baseline(baseline: Option<&str>, spec_dir: &Path) -> Result<Status, LockError> {
    let Some(b) = baseline else {
        return Ok(Status::new());
    };
    if !b.contains('/') {
        let Some((_, text)) = BUILTIN_BASELINES.iter().find(|(n, _)| *n == b) else {
            let known: Vec<&str> = BUILTIN_BASELINES.iter().map(|(n, _)| *n).collect();
            return Err(LockError::Baseline(format!(
                "no built-in baseline {b:?} (built in: {}; or give the path of a dpkg status file, such as ./status)",
                known.join(", ")
            )));
        };
        let stripped: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        return Status::from_reader(stripped.as_bytes())
            .map_err(|e| LockError::Baseline(format!("built-in {b}: {e}")));
    }
    let path = spec_dir.join(b);
    if !path.is_file() {
        return Err(LockError::Baseline(format!(
            "{} is not a file (expected a dpkg status file, such as ROOT/var/lib/dpkg/status)",
            path.display()
        )));
    }
    Status::read(&path).map_err(|e: StatusError| LockError::Baseline(e.to_string()))
}

/// What [`lock`] did.
#[derive(Debug)]
pub struct Locked {
    /// The lock file written.
    pub path: PathBuf,
    /// Its content.
    pub lock: LockFile,
    /// Requested packages the baseline already has.
    pub in_baseline: Vec<String>,
    /// Packages that replace an older baseline version.
    pub upgrades: Vec<String>,
    /// Packages in the indexes read.
    pub index_packages: usize,
}

/// Resolves the `apt` section of the spec at `spec_path` and writes its lock.
pub fn lock(
    spec_path: &Path,
    cache: Option<&Path>,
    fetch: &FetchOptions,
    reporter: &dyn Reporter,
) -> Result<Locked, LockError> {
    let (spec, spec_dir) = load_spec(spec_path)?;
    let Some(apt) = spec.apt.clone() else {
        return Err(LockError::NoApt {
            path: spec_path.to_owned(),
        });
    };
    let arch = apt.arch.unwrap_or(spec.target.arch).as_str().to_owned();
    let baseline = load_baseline(apt.baseline.as_deref(), &spec_dir)?;
    let cache = Cache::open(cache).map_err(|e| LockError::Cache(e.to_string()))?;

    let mut all: Vec<IndexPackage> = Vec::new();
    let mut origin: Vec<usize> = Vec::new();
    let mut sources = Vec::new();
    for (i, source) in apt.sources.iter().enumerate() {
        let (locked, packages) = read_source(source, &arch, &spec_dir, &cache, fetch, reporter)?;
        origin.extend(std::iter::repeat_n(i, packages.len()));
        all.extend(packages);
        sources.push(locked);
    }
    reporter.on_phase("resolve");
    let resolution =
        resolve(&all, &apt.packages, &baseline, &arch).map_err(LockError::Unsatisfiable)?;

    let mut artifacts = BTreeMap::new();
    let mut packages = Vec::new();
    let mut names_used: BTreeMap<ArtifactName, String> = BTreeMap::new();
    for &i in &resolution.order {
        let p = &all[i];
        let name = deb_artifact_name(&p.info.package).map_err(LockError::Names)?;
        if let Some(other) = names_used.insert(name.clone(), p.info.package.clone()) {
            return Err(LockError::Names(format!(
                "packages {other} and {} would both be artifact {name}",
                p.info.package
            )));
        }
        if spec.artifacts.contains_key(&name) {
            return Err(LockError::Names(format!(
                "artifacts.{name}: the spec already has an artifact of that name, which the lock needs for package {}; rename the spec's artifact",
                p.info.package
            )));
        }
        let base = apt.sources[origin[i]].url.trim_end_matches('/');
        artifacts.insert(
            name.clone(),
            ArtifactSource {
                url: format!("{base}/{}", p.filename),
                sha256: Some(p.sha256.parse().expect("index sha256 was checked")),
                size: Some(p.size),
                mirrors: Vec::new(),
            },
        );
        packages.push(LockedPackage {
            package: p.info.package.clone(),
            version: p.info.version.to_string(),
            architecture: p.info.architecture.clone(),
            artifact: name,
            required_by: resolution.reasons.get(&i).cloned().unwrap_or_default(),
        });
    }
    let steps = if packages.is_empty() {
        Vec::new()
    } else {
        vec![Step::Debs(DebsStep {
            artifacts: packages.iter().map(|p| p.artifact.clone()).collect(),
        })]
    };
    let lock = LockFile {
        api_version: LOCK_API_VERSION.to_owned(),
        apt_sha256: apt_digest(&apt),
        arch,
        baseline: apt.baseline.clone(),
        sources,
        packages,
        artifacts,
        steps,
    };
    let path = lock_path(spec_path);
    write_lock(&path, &lock)?;
    Ok(Locked {
        path,
        lock,
        in_baseline: resolution.in_baseline,
        upgrades: resolution.upgrades,
        index_packages: all.len(),
    })
}

fn write_lock(path: &Path, lock: &LockFile) -> Result<(), LockError> {
    let err = |source| LockError::Write {
        path: path.to_owned(),
        source,
    };
    let value = serde_json::to_value(lock).expect("lock serializes");
    let mut text = String::new();
    write_pretty(&mut text, &value, 0);
    text.push('\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lock.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    use std::os::unix::fs::PermissionsExt as _;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Fetches, verifies and reads one source's signed `Release` and indexes.
fn read_source(
    source: &AptSource,
    arch: &str,
    spec_dir: &Path,
    cache: &Cache,
    fetch: &FetchOptions,
    reporter: &dyn Reporter,
) -> Result<(LockedSource, Vec<IndexPackage>), LockError> {
    let fail = |reason: String| LockError::Source {
        url: source.url.clone(),
        suite: source.suite.clone(),
        reason,
    };
    let base = source.url.trim_end_matches('/');
    let dists = format!("{base}/dists/{}", source.suite);
    let get = |name: &str, url: &str, sha256: Option<Sha256Digest>, size: Option<u64>| {
        let url = url::Url::parse(url).map_err(|e| fail(format!("bad URL {url:?}: {e}")))?;
        let req = FetchRequest {
            name: name.parse().expect("valid artifact name"),
            sources: vec![Source::Http(url)],
            sha256,
            size,
            label: None,
        };
        fetch_all(vec![req], cache, fetch, reporter)
            .map(|mut f| f.remove(0))
            .map_err(|errors| LockError::Fetch {
                url: source.url.clone(),
                suite: source.suite.clone(),
                errors,
            })
    };
    let keyring = Keyring::open(&spec_dir.join(&source.keyring)).map_err(fail)?;

    reporter.on_phase("fetch index");
    let inrelease_url = format!("{dists}/InRelease");
    let (release_file, fetched, text, signed_by) =
        match get("inrelease", &inrelease_url, None, None) {
            Ok(f) => {
                let bytes = std::fs::read(&f.path).map_err(|e| fail(e.to_string()))?;
                let signed_by = keyring
                    .verify(&f.path, None)
                    .map_err(|e| fail(format!("{inrelease_url}: {e}")))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| fail(format!("{inrelease_url}: not UTF-8 text")))?;
                let signed =
                    split_clearsigned(&text, &inrelease_url).map_err(|e| fail(e.to_string()))?;
                ("InRelease", f, signed, signed_by)
            }
            Err(inrelease_err) => {
                let release_url = format!("{dists}/Release");
                let release = get("release", &release_url, None, None).map_err(|e| {
                    fail(format!(
                        "neither InRelease nor Release could be fetched:\n  {inrelease_err}\n  {e}"
                    ))
                })?;
                let sig = get("release.gpg", &format!("{release_url}.gpg"), None, None)?;
                let signed_by = keyring
                    .verify(&sig.path, Some(&release.path))
                    .map_err(|e| fail(format!("{release_url}.gpg: {e}")))?;
                let text = String::from_utf8(
                    std::fs::read(&release.path).map_err(|e| fail(e.to_string()))?,
                )
                .map_err(|_| fail(format!("{release_url}: not UTF-8 text")))?;
                ("Release", release, text, signed_by)
            }
        };
    let release = Release::parse_named(&text, release_file).map_err(|e| fail(e.to_string()))?;
    check_release(&release, source, arch).map_err(fail)?;

    let mut packages = Vec::new();
    for component in &source.components {
        let entry = release.packages_index(component, arch).ok_or_else(|| {
            fail(format!(
                "{release_file} lists no {component}/binary-{arch}/Packages index (with a SHA256)"
            ))
        })?;
        let url = format!("{dists}/{}", entry.path);
        let f: Fetched = get(
            "packages",
            &url,
            Some(entry.sha256.parse().expect("checked hex")),
            Some(entry.size),
        )?;
        let file = File::open(&f.path).map_err(|e| fail(format!("{}: {e}", f.path.display())))?;
        packages.extend(read_packages_file(file, &url).map_err(|e| fail(e.to_string()))?);
    }
    Ok((
        LockedSource {
            url: source.url.clone(),
            suite: source.suite.clone(),
            release_file: release_file.to_owned(),
            release_sha256: fetched.sha256,
            date: release.stanza.get("Date").map(str::to_owned),
            signed_by,
        },
        packages,
    ))
}

/// The suite, freshness, architecture and components of a verified Release.
fn check_release(release: &Release, source: &AptSource, arch: &str) -> Result<(), String> {
    let names = [release.suite.as_deref(), release.codename.as_deref()];
    if !names.contains(&Some(source.suite.as_str())) {
        return Err(format!(
            "the signed Release is for suite {:?} (codename {:?}), not {:?}; refusing a Release of another suite",
            release.suite.as_deref().unwrap_or("?"),
            release.codename.as_deref().unwrap_or("?"),
            source.suite
        ));
    }
    if let Some(until) = release.valid_until {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if until < now {
            return Err(format!(
                "the signed Release expired (Valid-Until: {}); the mirror is stale or replaying an old Release",
                release.stanza.get("Valid-Until").unwrap_or("?")
            ));
        }
    }
    if !release.architectures.is_empty() && !release.architectures.iter().any(|a| a == arch) {
        return Err(format!(
            "the Release has no architecture {arch} (it has {})",
            release.architectures.join(" ")
        ));
    }
    for c in &source.components {
        if !release.components.is_empty() && !release.components.contains(c) {
            return Err(format!(
                "the Release has no component {c} (it has {})",
                release.components.join(" ")
            ));
        }
    }
    Ok(())
}

/// An OpenPGP keyring for `gpgv`, dearmored into a private directory when
/// it is ASCII-armored.
struct Keyring {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Keyring {
    fn open(path: &Path) -> Result<Keyring, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read keyring {}: {e}", path.display()))?;
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let binary = if bytes.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            dearmor(&bytes)
                .ok_or_else(|| format!("keyring {} is not valid ASCII armor", path.display()))?
        } else {
            bytes
        };
        if binary.is_empty() {
            return Err(format!("keyring {} is empty", path.display()));
        }
        let keyring = dir.path().join("keyring.gpg");
        std::fs::write(&keyring, binary).map_err(|e| format!("{}: {e}", keyring.display()))?;
        Ok(Keyring { dir, path: keyring })
    }

    /// Runs `gpgv` on `signature` (clearsigned, or detached over `data`).
    /// Succeeds with the signing fingerprints when at least one good, valid
    /// signature by a keyring key is there and no bad one.
    fn verify(&self, signature: &Path, data: Option<&Path>) -> Result<Vec<String>, String> {
        let mut cmd = Command::new("gpgv");
        cmd.arg("--homedir")
            .arg(self.dir.path())
            .arg("--status-fd")
            .arg("1")
            .arg("--keyring")
            .arg(&self.path)
            .arg("--")
            .arg(signature);
        if let Some(d) = data {
            cmd.arg(d);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run gpgv (apt-get install gpgv): {e}"))?;
        let status = String::from_utf8_lossy(&out.stdout);
        let verdict = gpgv_verdict(&status);
        verdict.map_err(|reason| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if detail.is_empty() {
                reason
            } else {
                format!("{reason} (gpgv: {})", detail.join("; "))
            }
        })
    }
}

/// Reads gpgv's `--status-fd` output the way apt does: good when some
/// signature is GOODSIG + VALIDSIG, and none is BADSIG.
pub fn gpgv_verdict(status: &str) -> Result<Vec<String>, String> {
    let mut valid = Vec::new();
    let mut good = 0;
    let mut bad = Vec::new();
    let mut missing = Vec::new();
    let mut worthless = Vec::new();
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(kw), arg) = (words.next(), words.next()) else {
            continue;
        };
        let arg = arg.unwrap_or("").to_owned();
        match kw {
            "GOODSIG" => good += 1,
            "VALIDSIG" => valid.push(arg),
            "BADSIG" => bad.push(arg),
            "NO_PUBKEY" => missing.push(arg),
            "EXPKEYSIG" | "REVKEYSIG" | "EXPSIG" => worthless.push(format!("{kw} {arg}")),
            _ => {}
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "BAD signature by key {}: the file was altered",
            bad.join(", ")
        ));
    }
    if good == 0 || valid.is_empty() {
        let mut why = vec!["no good signature by a key of the keyring".to_owned()];
        if !missing.is_empty() {
            why.push(format!(
                "signed only by unknown key(s) {}",
                missing.join(", ")
            ));
        }
        if !worthless.is_empty() {
            why.push(worthless.join(", "));
        }
        return Err(why.join("; "));
    }
    Ok(valid)
}

/// Decodes an ASCII-armored OpenPGP block (headers and the `=CRC` line
/// skipped); `None` when it is not valid armor.
fn dearmor(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines().map(str::trim);
    lines.next()?;
    // Armor headers end at the first blank line.
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
        l.contains(": ").then_some(())?;
    }
    let mut b64 = String::new();
    for l in lines {
        if l.starts_with("-----END PGP") {
            return base64_decode(&b64);
        }
        if l.starts_with('=') {
            continue;
        }
        b64.push_str(l);
    }
    None
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * k);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// `bundler build`'s use of the lock: when the spec has an `apt` section,
/// reads `SPEC.lock.json`, refuses it when missing, stale or holding
/// anything but pinned `.deb` artifacts and `debs` steps, and returns the
/// spec with the lock's artifacts added and its steps placed **before** the
/// spec's own, validated again as a whole. A spec without `apt` is returned
/// unchanged (a lock file beside it is ignored).
pub fn merge_lock(mut spec: Spec, spec_path: &Path) -> Result<Spec, LockError> {
    let Some(apt) = &spec.apt else {
        return Ok(spec);
    };
    let path = lock_path(spec_path);
    let invalid = |reason: String| LockError::Invalid {
        lock: path.clone(),
        reason,
    };
    let bytes = match read_capped(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LockError::Missing {
                spec: spec_path.to_owned(),
                lock: path,
            });
        }
        Err(e) => return Err(invalid(e.to_string())),
    };
    let lock: LockFile = parse_strict(&bytes).map_err(invalid)?;
    if lock.api_version != LOCK_API_VERSION {
        return Err(invalid(format!(
            "apiVersion {:?}, expected {LOCK_API_VERSION:?}",
            lock.api_version
        )));
    }
    let current = apt_digest(apt);
    if lock.apt_sha256 != current {
        return Err(LockError::Stale {
            spec: spec_path.to_owned(),
            lock: path,
            locked: lock.apt_sha256,
            current,
        });
    }
    for (name, a) in &lock.artifacts {
        if a.sha256.is_none() {
            return Err(invalid(format!("artifacts.{name} has no sha256")));
        }
        if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
            return Err(invalid(format!("artifacts.{name}: not an http(s) URL")));
        }
        if spec.artifacts.contains_key(name) {
            return Err(invalid(format!(
                "artifacts.{name} is also an artifact of the spec"
            )));
        }
    }
    for (i, step) in lock.steps.iter().enumerate() {
        let Step::Debs(d) = step else {
            return Err(invalid(format!(
                "steps[{i}] is a {} step; a lock holds only debs steps",
                step.kind()
            )));
        };
        for a in &d.artifacts {
            if !lock.artifacts.contains_key(a) {
                return Err(invalid(format!(
                    "steps[{i}] names {a}, which is not an artifact of the lock"
                )));
            }
        }
    }
    spec.artifacts.extend(lock.artifacts);
    let own = std::mem::take(&mut spec.steps);
    spec.steps = lock.steps.into_iter().chain(own).collect();
    validate_spec(&spec, &Limits::default()).map_err(|e| {
        invalid(format!(
            "the spec with the lock merged is not valid:\n{}",
            indent(&e.to_string())
        ))
    })?;
    Ok(spec)
}

fn parse_strict<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    T::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_is_beside_the_spec() {
        assert_eq!(
            lock_path(Path::new("a/k8s-worker.json")),
            Path::new("a/k8s-worker.lock.json")
        );
        assert_eq!(lock_path(Path::new("spec")), Path::new("spec.lock.json"));
    }

    #[test]
    fn artifact_names_from_package_names() {
        let name = |p: &str| deb_artifact_name(p).unwrap().to_string();
        assert_eq!(name("socat"), "deb-socat");
        assert_eq!(name("libstdc++6"), "deb-libstdcplusplus6");
        assert_eq!(name("Odd_Name"), "deb-odd_name");
        let long = "a".repeat(100);
        assert_eq!(name(&long).len(), 64);
        assert_ne!(name(&long), name(&"a".repeat(99)));
    }

    #[test]
    fn builtin_baseline_is_the_minbase_set() {
        let s = load_baseline(Some("debian-12-minbase"), Path::new(".")).unwrap();
        assert!(s.len() > 80, "{}", s.len());
        for p in ["libc6", "dpkg", "apt", "base-files", "mawk"] {
            assert!(s.is_installed(p), "{p}");
        }
        assert!(!s.is_installed("systemd"));
        assert!(s.providers("awk").next().is_some());
        let e = load_baseline(Some("debian-13"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("no built-in baseline"), "{e}");
        let e = load_baseline(Some("./nope/status"), Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("is not a file"), "{e}");
    }

    #[test]
    fn gpgv_status_is_read_like_apt() {
        let good = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 6ED0E7B82643E131 Debian\n[GNUPG:] VALIDSIG 4CB50190207B4758A3F73A796ED0E7B82643E131 2024-08-10\n[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 78DB 1 8 01 1 9 B8E5\n[GNUPG:] NO_PUBKEY 78DBA3BC47EF2265\n";
        assert_eq!(
            gpgv_verdict(good).unwrap(),
            ["4CB50190207B4758A3F73A796ED0E7B82643E131"]
        );
        let bad = format!("{good}[GNUPG:] BADSIG F8D2585B8783D481 x\n");
        assert!(gpgv_verdict(&bad).unwrap_err().contains("BAD signature"));
        let unknown = "[GNUPG:] ERRSIG 78DB 1 8 01 1 9 B8E5\n[GNUPG:] NO_PUBKEY 78DBA3BC47EF2265\n";
        assert!(
            gpgv_verdict(unknown)
                .unwrap_err()
                .contains("unknown key(s) 78DBA3BC47EF2265")
        );
        let expired = "[GNUPG:] EXPKEYSIG 6ED0 x\n[GNUPG:] VALIDSIG 4CB5\n";
        assert!(gpgv_verdict(expired).is_err());
    }

    #[test]
    fn armor_is_decoded() {
        let armored = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\naGVsbG8gd29ybGQ=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(dearmor(armored).unwrap(), b"hello world");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a").is_none());
        assert!(dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\naGk\n").is_none());
    }

    fn spec_with_apt(dir: &Path) -> (PathBuf, Spec) {
        let path = dir.join("worker.json");
        std::fs::write(
            &path,
            r#"{"apiVersion": "bundle/v1", "name": "w", "version": "1", "serial": 1,
                "target": {"os": "linux", "arch": "amd64"},
                "artifacts": {"runc": {"url": "https://example.com/runc", "sha256": "9feaa82be15cb190cf0ed76fcb6d22841abd18088d275a47e894cd1e3a0ee4b6"}},
                "steps": [{"kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc"}],
                "apt": {"sources": [{"url": "http://deb.example/debian", "suite": "bookworm", "components": ["main"], "keyring": "k.gpg"}],
                        "packages": ["socat"], "baseline": "debian-12-minbase"}}"#,
        )
        .unwrap();
        let (spec, _) = load_spec(&path).unwrap();
        (path, spec)
    }

    fn write_lock_for(spec: &Spec, path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let lock = LockFile {
            api_version: LOCK_API_VERSION.into(),
            apt_sha256: apt_digest(spec.apt.as_ref().unwrap()),
            arch: "amd64".into(),
            baseline: None,
            sources: Vec::new(),
            packages: Vec::new(),
            artifacts: [(
                "deb-socat".parse().unwrap(),
                ArtifactSource {
                    url: "http://deb.example/debian/pool/s/socat.deb".into(),
                    sha256: Some(Sha256Digest::of(b"x")),
                    size: Some(1),
                    mirrors: Vec::new(),
                },
            )]
            .into(),
            steps: vec![Step::Debs(DebsStep {
                artifacts: vec!["deb-socat".parse().unwrap()],
            })],
        };
        let mut v = serde_json::to_value(&lock).unwrap();
        edit(&mut v);
        std::fs::write(lock_path(path), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn merge_puts_the_debs_step_first() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spec) = spec_with_apt(dir.path());
        let e = merge_lock(spec.clone(), &path).unwrap_err();
        assert!(e.to_string().contains("run `bundler lock"), "{e}");
        write_lock_for(&spec, &path, |_| {});
        let merged = merge_lock(spec.clone(), &path).unwrap();
        assert_eq!(merged.steps.len(), 2);
        assert_eq!(merged.steps[0].kind(), "debs");
        assert_eq!(merged.steps[1].kind(), "binary");
        assert!(
            merged
                .artifacts
                .contains_key(&"deb-socat".parse::<ArtifactName>().unwrap())
        );
        // No apt section: the spec is returned as it is.
        let mut plain = spec.clone();
        plain.apt = None;
        assert_eq!(merge_lock(plain.clone(), &path).unwrap(), plain);
    }

    #[test]
    fn stale_or_tampered_locks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spec) = spec_with_apt(dir.path());
        let mut other = spec.clone();
        other.apt.as_mut().unwrap().packages.push("ipset".into());
        write_lock_for(&other, &path, |_| {});
        let e = merge_lock(spec.clone(), &path).unwrap_err().to_string();
        assert!(
            e.contains("stale lock") && e.contains("re-run `bundler lock"),
            "{e}"
        );

        for (what, edit, expect) in [
            (
                "command step",
                (|v: &mut serde_json::Value| {
                    v["steps"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"kind": "command", "argv": ["sh", "-c", "x"]}));
                }) as fn(&mut serde_json::Value),
                "a lock holds only debs steps",
            ),
            (
                "unpinned",
                |v| v["artifacts"]["deb-socat"]["sha256"] = serde_json::Value::Null,
                "has no sha256",
            ),
            (
                "unknown field",
                |v| v["extra"] = serde_json::json!(1),
                "unknown field",
            ),
            (
                "clash",
                |v| {
                    let a = v["artifacts"]["deb-socat"].clone();
                    v["artifacts"]["runc"] = a;
                },
                "also an artifact of the spec",
            ),
            (
                "unused artifact",
                |v| {
                    let a = v["artifacts"]["deb-socat"].clone();
                    v["artifacts"]["deb-extra"] = a;
                },
                "not used by any step",
            ),
        ] {
            write_lock_for(&spec, &path, edit);
            let e = merge_lock(spec.clone(), &path).unwrap_err().to_string();
            assert!(e.contains(expect), "{what}: {e}");
        }
    }
}
