//! Images: from a pinned digest to the artifact the image travels as.
//!
//! 1. [`resolve`]: the pinned content (index or manifest), from the cache or
//!    the registry (the ref's, then each mirror), its bytes' sha256 checked
//!    against the pin; from an index, the target platform's manifest
//!    ([`bundle_spec::image::platform_matches`]), checked against the
//!    index's digest and size. Manifests enter the download cache like any
//!    object, so a rebuild from a warm cache contacts nothing.
//! 2. [`blob_requests`]: the config and layers, as [`crate::fetch`]
//!    requests (digest and size pinned by the manifest; sources the ref's
//!    registry then the mirrors): same cache, parallelism, retries, resume
//!    and progress as artifacts.
//! 3. [`write_layouts`]: each image's OCI layout tar
//!    ([`bundle_spec::layout`]), in a temporary file of the cache, blobs
//!    checked again while copied; its digest and size go into the manifest.
//!
//! [`pin`] resolves a ref's tag to the digest the registry serves for it.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read as _};
use std::path::PathBuf;
use std::sync::Arc;

use bundle_spec::Reporter;
use bundle_spec::image::{ImageRef, OciDigest, is_index, is_manifest, platform_matches};
use bundle_spec::layout::{LayoutBlob, LayoutRoot, write_layout};
use bundle_spec::names::ArtifactName;
use bundle_spec::spec::{ImageSource, ManifestArtifact, ManifestImage, Target};
use oci_client::manifest::{OciImageIndex, OciImageManifest};

use crate::cache::Cache;
use crate::fetch::{FetchError, FetchRequest, Fetched, Source};
use crate::registry::{MAX_MANIFEST_BYTES, Registries, RegistryError};

/// What a blob is to its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The multi-platform index (the pinned root).
    Index,
    /// The image manifest.
    Manifest,
    /// The image configuration.
    Config,
    /// A layer (1-based position).
    Layer(usize),
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobKind::Index => f.write_str("index"),
            BlobKind::Manifest => f.write_str("manifest"),
            BlobKind::Config => f.write_str("config"),
            BlobKind::Layer(n) => write!(f, "layer {n}"),
        }
    }
}

/// One blob of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    /// Its digest.
    pub digest: OciDigest,
    /// Its size.
    pub size: u64,
    /// What it is.
    pub kind: BlobKind,
}

/// An image whose manifests are known (and cached).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The image's (and its artifact's) name.
    pub name: ArtifactName,
    /// The ref the node knows it by.
    pub reference: ImageRef,
    /// Mirrors, as repositories with the ref's tag.
    pub mirrors: Vec<ImageRef>,
    /// The pinned digest.
    pub digest: OciDigest,
    /// The pinned content's media type.
    pub media_type: String,
    /// The target platform's manifest (the pinned digest when that is a
    /// manifest).
    pub manifest: OciDigest,
    /// `os/arch`.
    pub platform: String,
    /// Every blob the layout holds: the root, the platform manifest (when
    /// the root is an index), the config and the layers.
    pub blobs: Vec<Blob>,
    /// How many manifests came from a registry rather than the cache.
    pub manifests_downloaded: usize,
}

impl ResolvedImage {
    /// The config and layers: the blobs fetched like artifacts.
    pub fn content_blobs(&self) -> impl Iterator<Item = &Blob> {
        self.blobs
            .iter()
            .filter(|b| matches!(b.kind, BlobKind::Config | BlobKind::Layer(_)))
    }
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The pinned (or a platform) manifest could not be had from any source.
    #[error(
        "image {name} ({reference}): cannot get {what} {digest}: {}",
        failures_text(failures)
    )]
    Manifest {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// `"the pinned manifest"`, `"the linux/amd64 manifest"`.
        what: String,
        /// The digest.
        digest: OciDigest,
        /// One failure per source, in order.
        failures: Vec<RegistryError>,
    },
    /// The ref could not be resolved to a digest (`bundler pin`).
    #[error(
        "image {name}: cannot resolve {reference}: {}",
        failures_text(failures)
    )]
    Resolve {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// One failure per source, in order.
        failures: Vec<RegistryError>,
    },
    /// Not in the cache and `--offline`.
    #[error(
        "image {name} ({reference}): {what} {digest} is not in the cache, and --offline forbids downloading it"
    )]
    Offline {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// What is missing.
        what: String,
        /// Its digest.
        digest: OciDigest,
    },
    /// A manifest or index is not what the image needs.
    #[error("image {name} ({reference}): {what} {digest}: {reason}")]
    Content {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// What it is.
        what: String,
        /// Its digest.
        digest: OciDigest,
        /// What is wrong.
        reason: String,
    },
    /// A config or layer could not be fetched (wrong bytes, every source
    /// failed).
    #[error("image {name} ({reference}): {kind} {digest} ({size} bytes): {error}")]
    Blob {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// Which blob.
        kind: BlobKind,
        /// Its digest.
        digest: OciDigest,
        /// Its size.
        size: u64,
        /// The fetch layer's error.
        error: FetchError,
    },
    /// The layout could not be written.
    #[error("image {name} ({reference}): writing its layout: {source}")]
    Layout {
        /// The image.
        name: ArtifactName,
        /// Its ref.
        reference: ImageRef,
        /// The cause.
        source: bundle_spec::layout::LayoutError,
    },
    /// The cache could not be written.
    #[error("image {name}: cannot store {digest} in the cache at {}: {source}", path.display())]
    Cache {
        /// The image.
        name: ArtifactName,
        /// The object.
        digest: OciDigest,
        /// The cache.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn failures_text(failures: &[RegistryError]) -> String {
    match failures {
        [one] => one.to_string(),
        many => {
            let mut out = format!("all {} sources failed:", many.len());
            for (i, f) in many.iter().enumerate() {
                out.push_str(&format!(" [{}] {f}", i + 1));
            }
            out
        }
    }
}

/// Every image error of a build, one per line.
#[derive(Debug)]
pub struct ImageErrors(pub Vec<ImageError>);

impl fmt::Display for ImageErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImageErrors {}

/// The image's ref at `digest` (the tag dropped: the digest says it all).
fn at_digest(r: &ImageRef, digest: OciDigest) -> ImageRef {
    format!("{}@{digest}", r.name())
        .parse()
        .expect("a normalized name with a digest is a valid reference")
}

/// The ref and mirrors of an image source, in the order they are tried.
pub fn sources_of(source: &ImageSource) -> Vec<ImageRef> {
    std::iter::once(source.reference.clone())
        .chain(source.mirrors.iter().map(|m| {
            source
                .reference
                .with_name(m)
                .expect("validated spec: mirrors are repositories")
        }))
        .collect()
}

/// The media type of a manifest or index: its `mediaType`, or for an OCI
/// one that omits it, what its fields show.
fn media_type_of(bytes: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(format!(
            "schemaVersion {} is not supported (only 2: OCI and Docker schema 2)",
            v.get("schemaVersion")
                .map_or("(none)".into(), |s| s.to_string())
        ));
    }
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) if is_index(m) || is_manifest(m) => Ok(m.to_owned()),
        Some(m) => Err(format!(
            "media type {m:?} is neither an image index nor an image manifest"
        )),
        None if v.get("manifests").is_some() => {
            Ok(bundle_spec::image::MEDIA_TYPE_OCI_INDEX.to_owned())
        }
        None if v.get("config").is_some() => {
            Ok(bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST.to_owned())
        }
        None => Err("neither an image index nor an image manifest".into()),
    }
}

fn parse_digest(d: &str, size: i64) -> Result<(OciDigest, u64), String> {
    let digest = d
        .parse::<OciDigest>()
        .map_err(|e| format!("descriptor digest {d:?} {e}"))?;
    let size = u64::try_from(size).map_err(|_| format!("descriptor {d} has size {size}"))?;
    Ok((digest, size))
}

/// The platform manifest chosen from an index for `target`.
fn select(index: &OciImageIndex, target: &Target) -> Result<(OciDigest, u64, String), String> {
    let platform = |e: &oci_client::manifest::ImageIndexEntry| {
        e.platform.as_ref().map_or("(no platform)".to_owned(), |p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
                s.push('/');
                s.push_str(v);
            }
            s
        })
    };
    let found = index.manifests.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| platform_matches(target, &p.os, &p.architecture, p.variant.as_deref()))
    });
    let Some(entry) = found else {
        let have: Vec<String> = index.manifests.iter().map(platform).collect();
        return Err(format!(
            "the index has no manifest for {}/{} (it has {})",
            target.os.as_str(),
            target.arch.as_str(),
            if have.is_empty() {
                "none".to_owned()
            } else {
                have.join(", ")
            }
        ));
    };
    if !is_manifest(&entry.media_type) {
        return Err(format!(
            "the {} entry has media type {:?}, not an image manifest",
            platform(entry),
            entry.media_type
        ));
    }
    let (digest, size) = parse_digest(&entry.digest, entry.size)?;
    Ok((digest, size, entry.media_type.clone()))
}

/// Resolves images: manifests from the cache or registries.
#[derive(Debug)]
pub struct Resolver<'a> {
    /// The registries.
    pub registries: &'a Arc<Registries>,
    /// The download cache.
    pub cache: &'a Cache,
    /// Use the cache only.
    pub offline: bool,
    /// The build's target.
    pub target: &'a Target,
}

impl Resolver<'_> {
    /// The bytes of `digest` for image `name`: from the cache, else from the
    /// first source that has them (checked, then cached). Returns them and
    /// whether they were downloaded.
    fn manifest_bytes(
        &self,
        name: &ArtifactName,
        sources: &[ImageRef],
        digest: OciDigest,
        what: &str,
    ) -> Result<(Vec<u8>, bool), Box<ImageError>> {
        let reference = &sources[0];
        if let Some(path) = self.cache.lookup(&digest.sha256()) {
            let mut bytes = Vec::new();
            let read = File::open(&path).and_then(|f| {
                f.take(MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            });
            if read.is_ok() && bundle_spec::Sha256Digest::of(&bytes) == digest.sha256() {
                return Ok((bytes, false));
            }
            // A damaged object: fetch it again.
            let _ = std::fs::remove_file(&path);
        }
        if self.offline {
            return Err(Box::new(ImageError::Offline {
                name: name.clone(),
                reference: reference.clone(),
                what: what.to_owned(),
                digest,
            }));
        }
        let mut failures = Vec::new();
        for source in sources {
            match self.registries.manifest(&at_digest(source, digest)) {
                Ok((bytes, _)) => {
                    self.cache
                        .insert_bytes(&bytes, &digest.sha256())
                        .map_err(|e| ImageError::Cache {
                            name: name.clone(),
                            digest,
                            path: self.cache.root().to_owned(),
                            source: e,
                        })?;
                    return Ok((bytes, true));
                }
                Err(e) => failures.push(e),
            }
        }
        Err(Box::new(ImageError::Manifest {
            name: name.clone(),
            reference: reference.clone(),
            what: what.to_owned(),
            digest,
            failures,
        }))
    }

    /// Resolves one image pinned at `digest`.
    pub fn resolve(
        &self,
        name: &ArtifactName,
        source: &ImageSource,
        digest: OciDigest,
    ) -> Result<ResolvedImage, Box<ImageError>> {
        let sources = sources_of(source);
        let reference = &source.reference;
        let platform = format!("{}/{}", self.target.os.as_str(), self.target.arch.as_str());
        let content = |what: &str, d: OciDigest, reason: String| ImageError::Content {
            name: name.clone(),
            reference: reference.clone(),
            what: what.to_owned(),
            digest: d,
            reason,
        };
        let (root, got) = self.manifest_bytes(name, &sources, digest, "the pinned manifest")?;
        let mut downloaded = usize::from(got);
        let media_type =
            media_type_of(&root).map_err(|r| content("the pinned manifest", digest, r))?;
        let mut blobs = vec![Blob {
            digest,
            size: root.len() as u64,
            kind: if is_index(&media_type) {
                BlobKind::Index
            } else {
                BlobKind::Manifest
            },
        }];
        let (manifest_digest, manifest_bytes) = if is_index(&media_type) {
            let index: OciImageIndex = serde_json::from_slice(&root)
                .map_err(|e| content("the pinned index", digest, e.to_string()))?;
            let (d, size, _) =
                select(&index, self.target).map_err(|r| content("the pinned index", digest, r))?;
            let what = format!("the {platform} manifest");
            let (bytes, got) = self.manifest_bytes(name, &sources, d, &what)?;
            downloaded += usize::from(got);
            if bytes.len() as u64 != size {
                return Err(Box::new(content(
                    &what,
                    d,
                    format!("{} bytes, but the index says {size}", bytes.len()),
                )));
            }
            let m = media_type_of(&bytes).map_err(|r| content(&what, d, r))?;
            if !is_manifest(&m) {
                return Err(Box::new(content(
                    &what,
                    d,
                    format!("media type {m:?} is not an image manifest"),
                )));
            }
            blobs.push(Blob {
                digest: d,
                size,
                kind: BlobKind::Manifest,
            });
            (d, bytes)
        } else {
            (digest, root)
        };
        let what = format!("the {platform} manifest");
        let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| content(&what, manifest_digest, e.to_string()))?;
        let descriptor = |d: &oci_client::manifest::OciDescriptor| {
            if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(Box::new(content(
                    &what,
                    manifest_digest,
                    format!(
                        "{} is a foreign layer (fetched from its urls), which is not supported",
                        d.digest
                    ),
                )));
            }
            parse_digest(&d.digest, d.size)
                .map_err(|r| Box::new(content(&what, manifest_digest, r)))
        };
        let (d, size) = descriptor(&manifest.config)?;
        blobs.push(Blob {
            digest: d,
            size,
            kind: BlobKind::Config,
        });
        for (i, layer) in manifest.layers.iter().enumerate() {
            let (d, size) = descriptor(layer)?;
            blobs.push(Blob {
                digest: d,
                size,
                kind: BlobKind::Layer(i + 1),
            });
        }
        Ok(ResolvedImage {
            name: name.clone(),
            reference: reference.clone(),
            mirrors: sources[1..].to_vec(),
            digest,
            media_type,
            manifest: manifest_digest,
            platform,
            blobs,
            manifests_downloaded: downloaded,
        })
    }
}

/// Fetch requests for the config and layers of `images`, each blob once
/// (the first image having it names it), with what each request is.
pub fn blob_requests(
    images: &[ResolvedImage],
    registries: &Arc<Registries>,
) -> Vec<(FetchRequest, usize, Blob)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let endpoints: Vec<_> = std::iter::once(&image.reference)
            .chain(&image.mirrors)
            .map(|r| registries.endpoint(r))
            .collect();
        for blob in image.content_blobs() {
            if !seen.insert(blob.digest) {
                continue;
            }
            let sources = endpoints
                .iter()
                .map(|e| Source::Registry {
                    path: e.blob_path(&blob.digest),
                    endpoint: e.clone(),
                })
                .collect();
            out.push((
                FetchRequest {
                    name: image.name.clone(),
                    sources,
                    sha256: Some(blob.digest.sha256()),
                    size: Some(blob.size),
                    label: Some(format!(
                        "{} {} {}",
                        image.name,
                        blob.kind,
                        &blob.digest.hex()[..12]
                    )),
                },
                i,
                *blob,
            ));
        }
    }
    out
}

/// The error of a failed blob request.
pub fn blob_error(image: &ResolvedImage, blob: Blob, error: FetchError) -> ImageError {
    ImageError::Blob {
        name: image.name.clone(),
        reference: image.reference.clone(),
        kind: blob.kind,
        digest: blob.digest,
        size: blob.size,
        error,
    }
}

/// An image's layout tar, written to a temporary file of the cache.
#[derive(Debug)]
pub struct Layout {
    /// The image.
    pub image: ResolvedImage,
    /// The tar (removed when dropped).
    pub file: tempfile::TempPath,
    /// Its entry in the manifest's artifacts.
    pub artifact: ManifestArtifact,
    /// Its entry in the manifest's images.
    pub entry: ManifestImage,
}

/// Writes each image's layout tar from the cache's objects, every entry with
/// modification time `mtime`.
pub fn write_layouts(
    images: Vec<ResolvedImage>,
    cache: &Cache,
    mtime: u64,
    reporter: &dyn Reporter,
) -> Result<Vec<Layout>, ImageErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for image in images {
        match write_one(&image, cache, mtime, reporter) {
            Ok((file, written)) => {
                let artifact = ManifestArtifact {
                    path: format!("{}{}", bundle_spec::format::ARTIFACT_PREFIX, image.name),
                    sha256: written.sha256,
                    size: written.size,
                    url: format!("docker://{}@{}", image.reference.name(), image.digest),
                };
                let entry = ManifestImage {
                    reference: image.reference.clone(),
                    digest: image.digest,
                    manifest: image.manifest,
                    platform: image.platform.clone(),
                };
                out.push(Layout {
                    image,
                    file,
                    artifact,
                    entry,
                });
            }
            Err(e) => errors.push(*e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ImageErrors(errors))
    }
}

fn write_one(
    image: &ResolvedImage,
    cache: &Cache,
    mtime: u64,
    reporter: &dyn Reporter,
) -> Result<(tempfile::TempPath, bundle_spec::layout::LayoutWritten), Box<ImageError>> {
    let dir = cache.partial_dir();
    let cache_err = |source| ImageError::Cache {
        name: image.name.clone(),
        digest: image.digest,
        path: dir.clone(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!("layout-{}.", image.name))
        .suffix(".tar")
        .tempfile_in(&dir)
        .map_err(cache_err)?;
    let root = LayoutRoot {
        reference: image.reference.clone(),
        media_type: image.media_type.clone(),
        digest: image.digest,
        size: image.blobs[0].size,
    };
    let blobs: Vec<LayoutBlob> = image
        .blobs
        .iter()
        .map(|b| LayoutBlob {
            digest: b.digest,
            size: b.size,
        })
        .collect();
    let total = blobs.iter().map(|b| b.size).sum();
    let id = reporter.on_start(&format!("{} layout", image.name), Some(total));
    let result = write_layout(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        &root,
        &blobs,
        mtime,
        &mut |d| {
            let f = File::open(cache.object_path(&d.sha256()))?;
            let size = f.metadata()?.len();
            reporter.on_progress(id, size);
            Ok(Box::new(f))
        },
    );
    reporter.on_finish(id);
    let written = result.map_err(|source| ImageError::Layout {
        name: image.name.clone(),
        reference: image.reference.clone(),
        source,
    })?;
    Ok((tmp.into_temp_path(), written))
}

/// What `bundler pin` found for an image.
#[derive(Debug, Clone)]
pub struct PinnedImage {
    /// The image.
    pub name: ArtifactName,
    /// Its ref.
    pub reference: ImageRef,
    /// The digest the registry serves for the ref.
    pub digest: OciDigest,
    /// The target platform's manifest in it.
    pub manifest: OciDigest,
    /// The registry (the ref's or a mirror's) that answered.
    pub source: String,
}

/// Resolves an unpinned image's ref (its tag) to the digest the registry
/// serves for it, trying the ref's registry, then the mirrors; checks the
/// content is an image with a manifest for the target platform, and caches
/// it.
pub fn pin(
    resolver: &Resolver<'_>,
    name: &ArtifactName,
    source: &ImageSource,
) -> Result<PinnedImage, Box<ImageError>> {
    let sources = sources_of(source);
    if resolver.offline {
        return Err(Box::new(ImageError::Resolve {
            name: name.clone(),
            reference: source.reference.clone(),
            failures: vec![RegistryError::Transfer {
                registry: source.reference.registry().to_owned(),
                reason: "--offline: only the registry knows what the tag names now".into(),
                transient: false,
            }],
        }));
    }
    let mut failures = Vec::new();
    for r in &sources {
        match resolver.registries.manifest(r) {
            Ok((bytes, digest)) => {
                resolver
                    .cache
                    .insert_bytes(&bytes, &digest.sha256())
                    .map_err(|e| ImageError::Cache {
                        name: name.clone(),
                        digest,
                        path: resolver.cache.root().to_owned(),
                        source: e,
                    })?;
                // The same checks as a build: a platform manifest, config, layers.
                let resolved = resolver.resolve(name, source, digest)?;
                return Ok(PinnedImage {
                    name: name.clone(),
                    reference: source.reference.clone(),
                    digest,
                    manifest: resolved.manifest,
                    source: r.to_string(),
                });
            }
            Err(e) => failures.push(e),
        }
    }
    Err(Box::new(ImageError::Resolve {
        name: name.clone(),
        reference: source.reference.clone(),
        failures,
    }))
}

/// What a build reports of each image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image.
    pub name: ArtifactName,
    /// Its ref.
    pub reference: ImageRef,
    /// The pinned digest.
    pub digest: OciDigest,
    /// The platform manifest.
    pub manifest: OciDigest,
    /// Config and layers downloaded (not from the cache).
    pub blobs_downloaded: usize,
    /// Config and layers from the cache.
    pub blobs_cached: usize,
    /// Manifests downloaded.
    pub manifests_downloaded: usize,
    /// Size of the layout tar.
    pub size: u64,
}

/// Summarizes a build's images from their fetch results.
pub fn summarize(layouts: &[Layout], fetched: &[Fetched]) -> Vec<BuiltImage> {
    layouts
        .iter()
        .map(|l| {
            let mut downloaded = 0;
            let mut cached = 0;
            for b in l.image.content_blobs() {
                match fetched.iter().find(|f| f.sha256 == b.digest.sha256()) {
                    Some(f) if !f.from_cache => downloaded += 1,
                    _ => cached += 1,
                }
            }
            BuiltImage {
                name: l.image.name.clone(),
                reference: l.image.reference.clone(),
                digest: l.image.digest,
                manifest: l.image.manifest,
                blobs_downloaded: downloaded,
                blobs_cached: cached,
                manifests_downloaded: l.image.manifests_downloaded,
                size: l.artifact.size,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_document_or_its_fields() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#).unwrap(),
            bundle_spec::image::MEDIA_TYPE_DOCKER_LIST
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            bundle_spec::image::MEDIA_TYPE_OCI_INDEX
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST
        );
        assert!(
            media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#)
                .unwrap_err()
                .contains("schemaVersion 1 is not supported")
        );
        assert!(
            media_type_of(br#"{"schemaVersion":2,"mediaType":"text/html"}"#)
                .unwrap_err()
                .contains("neither")
        );
    }

    #[test]
    fn the_target_platform_is_chosen_from_an_index_and_a_missing_one_is_named() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index: OciImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST, "digest": d('a'), "size": 10,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST, "digest": d('b'), "size": 11,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST, "digest": d('c'), "size": 12,
                 "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }))
        .unwrap();
        let target = |arch: &str| -> Target {
            serde_json::from_value(serde_json::json!({"os": "linux", "arch": arch})).unwrap()
        };
        let (digest, size, _) = select(&index, &target("amd64")).unwrap();
        assert_eq!((digest.to_string(), size), (d('b'), 11));
        let (digest, _, _) = select(&index, &target("arm64")).unwrap();
        assert_eq!(digest.to_string(), d('a'));
        let e = select(&index, &target("s390x")).unwrap_err();
        assert_eq!(
            e,
            "the index has no manifest for linux/s390x (it has linux/arm64/v8, linux/amd64, unknown/unknown)"
        );
    }
}
