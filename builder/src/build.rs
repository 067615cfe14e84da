//! `bundler build`: fetch → verify → pack → sign.

use std::fs::File;
use std::io::{BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};

use bundle_spec::format::{BUNDLE_EXTENSION, DETACHED_SIGNATURE_EXTENSION, MAX_ZSTD_LEVEL};
use bundle_spec::names::ArtifactName;
use bundle_spec::sign::SecretKey;
use bundle_spec::spec::{Manifest, ManifestArtifact, Spec};
use bundle_spec::validate::{ValidationErrors, parse_spec};
use bundle_spec::write::{WriteError, WriteOptions, write_bundle};
use bundle_spec::{Limits, Reporter, Timestamp};

use crate::cache::Cache;
use crate::fetch::{FetchErrors, FetchOptions, FetchRequest, Fetched, Source, fetch_all};

/// Largest spec file read, in bytes.
const MAX_SPEC_BYTES: u64 = 16 << 20;

/// Why a build failed. Whatever the cause, no file is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The spec file could not be read.
    #[error("cannot read spec {path}: {source}")]
    ReadSpec {
        /// The spec file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The spec is invalid.
    #[error("{path}: invalid spec:\n{}", indent(&errors.to_string()))]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// Every problem.
        errors: ValidationErrors,
    },
    /// Images without a digest.
    #[error(
        "{path}: image(s) not pinned: {}\n  every image needs a digest to be built; on a connected machine run `bundler pin {}` to resolve each ref to the digest its registry serves",
        names.join(", "), path.display()
    )]
    UnpinnedImages {
        /// The spec file.
        path: PathBuf,
        /// The unpinned images.
        names: Vec<String>,
    },
    /// File or unit contents name a sandbox image the bundle does not carry.
    #[error("{path}: {}", if problems.len() == 1 { problems[0].clone() } else { format!("sandbox images not carried:\n{}", indent(&problems.join("\n"))) })]
    Sandbox {
        /// The spec file.
        path: PathBuf,
        /// One line per sandbox image.
        problems: Vec<String>,
    },
    /// Registry options are unusable.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// Images could not be resolved, fetched or written (artifact download
    /// failures, if any, first).
    #[error("{}{images}", artifacts.as_ref().map(|a| format!("{a}\n")).unwrap_or_default())]
    Images {
        /// Artifact download failures of the same build.
        artifacts: Option<FetchErrors>,
        /// The images' failures.
        images: crate::images::ImageErrors,
    },
    /// Artifacts without a sha256.
    #[error(
        "{path}: artifact(s) not pinned: {}\n  every artifact needs a sha256 to be built; on a connected machine run `bundler pin {}` to download them and record sha256 and size",
        names.join(", "), path.display()
    )]
    Unpinned {
        /// The spec file.
        path: PathBuf,
        /// The unpinned artifacts.
        names: Vec<String>,
    },
    /// A URL could not be turned into a source.
    #[error("{path}: artifacts.{name}: {reason}")]
    Url {
        /// The spec file.
        path: PathBuf,
        /// The artifact.
        name: ArtifactName,
        /// Why.
        reason: String,
    },
    /// The bundle would be expired already.
    #[error("{path}: expires {expires} is in the past; raise it (and the serial) to build")]
    Expired {
        /// The spec file.
        path: PathBuf,
        /// The expiry.
        expires: Timestamp,
    },
    /// The spec's `apt` lock is missing, stale or invalid.
    #[error("{0}")]
    Lock(Box<crate::lock::LockError>),
    /// Bad option.
    #[error("{0}")]
    Options(String),
    /// Downloads failed.
    #[error(transparent)]
    Fetch(#[from] FetchErrors),
    /// The cache could not be opened.
    #[error("{0}")]
    Cache(String),
    /// Artifacts do not have the content their steps need.
    #[error(transparent)]
    Unfit(#[from] crate::content::UnfitErrors),
    /// The SBOM could not be made.
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    /// Writing the bundle failed.
    /// The differential bundle could not be made.
    #[error(transparent)]
    Differential(#[from] crate::differential::DifferentialError),
    #[error("writing {path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The cause.
        source: WriteError,
    },
    /// Creating, syncing or renaming the output failed.
    #[error("writing {path}: {source}")]
    Output {
        /// The output.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a spec; returns it with the directory `file:` URLs are relative to.
pub fn load_spec(path: &Path) -> Result<(Spec, PathBuf), BuildError> {
    let bytes = read_capped(path).map_err(|source| BuildError::ReadSpec {
        path: path.to_owned(),
        source,
    })?;
    let spec = parse_spec(&bytes, &Limits::default()).map_err(|errors| BuildError::Spec {
        path: path.to_owned(),
        errors,
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    Ok((spec, dir))
}

pub(crate) fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SPEC_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Turns a spec URL into a fetch source; `file:` URLs are relative to `spec_dir`.
pub fn source_for(url: &str, spec_dir: &Path) -> Result<Source, String> {
    if let Some(rest) = url.strip_prefix("file:") {
        if rest.starts_with("//") {
            let u = url::Url::parse(url).map_err(|e| format!("bad file URL {url:?}: {e}"))?;
            return u
                .to_file_path()
                .map(Source::File)
                .map_err(|()| format!("bad file URL {url:?}: not a local path"));
        }
        let p = Path::new(rest);
        return Ok(Source::File(if p.is_absolute() {
            p.to_owned()
        } else {
            spec_dir.join(p)
        }));
    }
    url::Url::parse(url)
        .map(Source::Http)
        .map_err(|e| format!("bad URL {url:?}: {e}"))
}

/// Fetch requests for a spec's artifacts (all of them, or only the unpinned ones).
pub fn requests(
    spec: &Spec,
    spec_path: &Path,
    spec_dir: &Path,
    only_unpinned: bool,
) -> Result<Vec<FetchRequest>, BuildError> {
    let mut out = Vec::new();
    for (name, a) in &spec.artifacts {
        if only_unpinned && a.sha256.is_some() {
            continue;
        }
        let mut sources = Vec::new();
        for url in std::iter::once(&a.url).chain(&a.mirrors) {
            sources.push(source_for(url, spec_dir).map_err(|reason| BuildError::Url {
                path: spec_path.to_owned(),
                name: name.clone(),
                reason,
            })?);
        }
        out.push(FetchRequest {
            name: name.clone(),
            sources,
            sha256: a.sha256,
            size: a.size,
            label: None,
        });
    }
    Ok(out)
}

/// What to build.
#[derive(Debug)]
pub struct BuildOptions {
    /// The spec file.
    pub spec: PathBuf,
    /// The output file (default `NAME.tar.zst` in the current directory).
    pub out: Option<PathBuf>,
    /// The loaded signing key.
    pub key: SecretKey,
    /// The download cache directory (default: XDG cache).
    pub cache: Option<PathBuf>,
    /// Download settings.
    pub fetch: FetchOptions,
    /// zstd level.
    pub level: i32,
    /// How registries are reached.
    pub registry: crate::registry::RegistryOptions,
    /// `--base OLD`: build a differential bundle against this base bundle,
    /// verified with these keys.
    pub base: Option<(PathBuf, bundle_spec::sign::TrustedKeys)>,
    /// `--full-output`: also write the full bundle of the same build here.
    pub full_out: Option<PathBuf>,
}

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Its detached signature.
    pub signature: PathBuf,
    /// The manifest inside.
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: bundle_spec::Sha256Digest,
    /// Size of the bundle file.
    pub size: u64,
    /// With `--full-output`: the full bundle's path and size.
    pub full: Option<(PathBuf, u64)>,
    /// How each artifact was obtained.
    pub fetched: Vec<Fetched>,
    /// What each image took.
    pub images: Vec<crate::images::BuiltImage>,
}

/// Builds a bundle: validate the spec, fetch and verify every artifact into
/// the cache, check each one's content fits its step, pack and sign into a
/// temp file beside the output, and rename it into place.
pub fn build(opts: BuildOptions, reporter: &dyn Reporter) -> Result<Built, BuildError> {
    if !(1..=MAX_ZSTD_LEVEL).contains(&opts.level) {
        return Err(BuildError::Options(format!(
            "--level must be 1 to {MAX_ZSTD_LEVEL}, got {}",
            opts.level
        )));
    }
    let (spec, spec_dir) = load_spec(&opts.spec)?;
    let unpinned: Vec<String> = spec
        .artifacts
        .iter()
        .filter(|(_, a)| a.sha256.is_none())
        .map(|(n, _)| n.to_string())
        .collect();
    if !unpinned.is_empty() {
        return Err(BuildError::Unpinned {
            path: opts.spec.clone(),
            names: unpinned,
        });
    }
    let unpinned: Vec<String> = spec
        .images
        .iter()
        .filter(|(_, i)| i.digest.is_none())
        .map(|(n, _)| n.to_string())
        .collect();
    if !unpinned.is_empty() {
        return Err(BuildError::UnpinnedImages {
            path: opts.spec.clone(),
            names: unpinned,
        });
    }
    // The lock of the `apt` section: its artifacts join, its debs step goes first.
    let spec =
        crate::lock::merge_lock(spec, &opts.spec).map_err(|e| BuildError::Lock(Box::new(e)))?;
    let problems = crate::sandbox::check(&spec);
    if !problems.is_empty() {
        return Err(BuildError::Sandbox {
            path: opts.spec.clone(),
            problems,
        });
    }
    if let Some(expires) = spec.expires
        && bundle_spec::time::is_expired(spec.expires, Timestamp::now())
    {
        return Err(BuildError::Expired {
            path: opts.spec.clone(),
            expires,
        });
    }
    // The base is checked before anything is downloaded.
    let base = match &opts.base {
        Some((path, trusted)) => {
            let base = crate::differential::read_base(path, trusted)?;
            crate::differential::check_base(&base, &spec.name, spec.serial)?;
            Some(base)
        }
        None => None,
    };
    let created =
        Timestamp::now_or_source_date_epoch().map_err(|e| BuildError::Options(e.to_string()))?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.{BUNDLE_EXTENSION}", spec.name)));

    // fetch + verify: images' manifests first, then artifacts and image
    // blobs together.
    let cache = Cache::open(opts.cache.as_deref()).map_err(|e| BuildError::Cache(e.to_string()))?;
    let mut fetch_opts = opts.fetch.clone();
    let registries = std::sync::Arc::new(crate::registry::Registries::new(
        opts.registry.clone(),
        &opts.fetch,
    )?);
    fetch_opts.registry_roots = registries.extra_roots()?;
    reporter.on_phase("fetch");
    let resolver = crate::images::Resolver {
        registries: &registries,
        cache: &cache,
        offline: opts.fetch.offline,
        target: &spec.target,
    };
    let mut resolved = Vec::new();
    let mut image_errors = Vec::new();
    for (name, source) in &spec.images {
        let digest = source.digest.expect("checked above: every image is pinned");
        match resolver.resolve(name, source, digest) {
            Ok(r) => resolved.push(r),
            Err(e) => image_errors.push(*e),
        }
    }
    let reqs = requests(&spec, &opts.spec, &spec_dir, false)?;
    let artifact_count = reqs.len();
    let blobs = crate::images::blob_requests(&resolved, &registries);
    let all: Vec<FetchRequest> = reqs
        .into_iter()
        .chain(blobs.iter().map(|(r, _, _)| r.clone()))
        .collect();
    let (fetched, artifact_errors) = match fetch_all(all.clone(), &cache, &fetch_opts, reporter) {
        Ok(f) => (f, Vec::new()),
        Err(FetchErrors { errors, fetched }) => {
            // Successes come in request order: what is missing failed, in order.
            let mut errors = errors.into_iter();
            let mut next = fetched.iter().peekable();
            let mut artifact_errors = Vec::new();
            for (i, req) in all.iter().enumerate() {
                if next
                    .peek()
                    .is_some_and(|f| f.name == req.name && Some(f.sha256) == req.sha256)
                {
                    next.next();
                    continue;
                }
                let Some(e) = errors.next() else { break };
                if i < artifact_count {
                    artifact_errors.push(e);
                } else {
                    let (_, image, blob) = &blobs[i - artifact_count];
                    image_errors.push(crate::images::blob_error(&resolved[*image], *blob, e));
                }
            }
            (fetched, artifact_errors)
        }
    };
    let (artifacts_fetched, blobs_fetched): (Vec<Fetched>, Vec<Fetched>) = fetched
        .into_iter()
        .partition(|f| spec.artifacts.contains_key(&f.name));
    if !image_errors.is_empty() {
        return Err(BuildError::Images {
            artifacts: (!artifact_errors.is_empty()).then_some(FetchErrors {
                errors: artifact_errors,
                fetched: artifacts_fetched,
            }),
            images: crate::images::ImageErrors(image_errors),
        });
    }
    if !artifact_errors.is_empty() {
        return Err(BuildError::Fetch(FetchErrors {
            errors: artifact_errors,
            fetched: artifacts_fetched,
        }));
    }
    let fetched = artifacts_fetched;
    crate::content::check(&spec, &fetched, crate::content::Purpose::Build)?;

    // image layouts: the same bytes for the same image, whenever built
    let mtime = if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        u64::try_from(created.unix()).unwrap_or(0)
    } else {
        0
    };
    let layouts =
        crate::images::write_layouts(resolved, &cache, mtime, reporter).map_err(|images| {
            BuildError::Images {
                artifacts: None,
                images,
            }
        })?;
    let images = crate::images::summarize(&layouts, &blobs_fetched);

    // pack + sign
    let mut manifest = Manifest::from_spec(&spec, created, |name, source| {
        let f = fetched.iter().find(|f| &f.name == name)?;
        Some(ManifestArtifact {
            path: format!("{}{name}", bundle_spec::format::ARTIFACT_PREFIX),
            sha256: f.sha256,
            size: f.size,
            url: source.url.clone(),
        })
    })
    .expect("every artifact was fetched");
    for l in &layouts {
        manifest
            .artifacts
            .insert(l.image.name.clone(), l.artifact.clone());
        manifest
            .images
            .insert(l.image.name.clone(), l.entry.clone());
    }
    let paths: std::collections::BTreeMap<&ArtifactName, &Path> = fetched
        .iter()
        .map(|f| (&f.name, f.path.as_path()))
        .chain(layouts.iter().map(|l| (&l.image.name, &*l.file)))
        .collect();
    let (sbom, sbom_entry) = crate::sbom::make(&manifest, &paths, &layouts)?;
    manifest.sbom = Some(sbom_entry);
    let blobs = layouts
        .iter()
        .map(|l| {
            (
                l.image.name.clone(),
                l.image.blobs.iter().map(|b| b.digest).collect(),
            )
        })
        .collect();
    let full = match &opts.full_out {
        Some(full_out) if base.is_some() => {
            let w = write_signed(full_out, &manifest, &sbom, &paths, &opts, reporter)?;
            Some((full_out.clone(), w.size))
        }
        _ => None,
    };
    if let Some(base) = &base {
        manifest.base = Some(crate::differential::base_for(
            base, &manifest, &paths, &blobs,
        )?);
    }
    let written = write_signed(&out, &manifest, &sbom, &paths, &opts, reporter)?;
    Ok(Built {
        bundle: out,
        signature: written.signature,
        manifest_sha256: written.manifest_sha256,
        manifest,
        size: written.size,
        full,
        fetched,
        images,
    })
}

/// A written bundle file.
struct WrittenBundle {
    signature: PathBuf,
    manifest_sha256: bundle_spec::Sha256Digest,
    size: u64,
}

/// Packs and signs `manifest` into `out` and its detached signature beside
/// it: into temporary files renamed into place, so that a failure leaves no
/// partial output.
fn write_signed(
    out: &Path,
    manifest: &Manifest,
    sbom: &[u8],
    paths: &std::collections::BTreeMap<&ArtifactName, &Path>,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<WrittenBundle, BuildError> {
    let out = out.to_path_buf();
    let out_err = |source| BuildError::Output {
        path: out.clone(),
        source,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .ok_or_else(|| BuildError::Options(format!("output {} has no file name", out.display())))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(dir).map_err(out_err)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(out_err)?;
    let bundle_spec::write::Written {
        output,
        manifest_bytes,
        file_prehash,
        file_size,
        ..
    } = write_bundle(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        manifest,
        Some(sbom),
        &opts.key,
        &mut |name, _| Ok(Box::new(File::open(paths[name])?) as Box<dyn Read>),
        WriteOptions {
            level: opts.level,
            ..WriteOptions::default()
        },
        reporter,
    )
    .map_err(|source| BuildError::Write {
        path: out.clone(),
        source,
    })?;
    output.into_inner().map_err(|e| out_err(e.into_error()))?;
    // Temp files are created 0600; a bundle is meant to be copied around.
    use std::os::unix::fs::PermissionsExt as _;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(out_err)?;

    let sig_path = PathBuf::from(format!("{}.{DETACHED_SIGNATURE_EXTENSION}", out.display()));
    let detached = opts.key.sign_digest(
        &file_prehash,
        &format!("{} file:{file_name}", manifest.trusted_comment()),
        "signature of the whole bundle file by an install-bundle release key",
    );
    let mut sig_tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.minisig."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(out_err)?;
    sig_tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(out_err)?;
    sig_tmp
        .write_all(detached.to_file_string().as_bytes())
        .and_then(|()| sig_tmp.as_file().sync_all())
        .map_err(out_err)?;
    tmp.persist(&out).map_err(|e| out_err(e.error))?;
    if let Err(e) = sig_tmp.persist(&sig_path) {
        let _ = std::fs::remove_file(&out);
        return Err(BuildError::Output {
            path: sig_path,
            source: e.error,
        });
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(WrittenBundle {
        signature: sig_path,
        manifest_sha256: bundle_spec::Sha256Digest::of(&manifest_bytes),
        size: file_size,
    })
}
