//! The SBOM every bundle carries: CycloneDX 1.5 JSON, the entry after the
//! manifest's signature, its digest in the signed manifest.
//!
//! Why CycloneDX rather than SPDX 2.3: one document type models all three
//! kinds of thing a bundle holds with native fields — Debian packages
//! (`library` components with a `pkg:deb` purl and the licenses their
//! machine-readable copyright files state), upstream files (`file`
//! components with SHA-256 and their download URL) and container images
//! (`container` components with a `pkg:oci` purl, the image's layers as
//! nested components) — and the bundle itself is the document's
//! `metadata.component`, which every component is a dependency of. SPDX
//! would need a relationship graph and package/file duplication for the
//! same facts. The crate `cyclonedx-bom` builds, validates and serializes
//! the document.
//!
//! The document is reproducible: its timestamp is the manifest's `created`
//! and its serial number is derived from the manifest's SHA-256, so the same
//! inputs still give a byte-identical bundle.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr as _;

use bundle_spec::digest::Sha256Digest;
use bundle_spec::format::{SBOM_ENTRY, SBOM_FORMAT};
use bundle_spec::names::ArtifactName;
use bundle_spec::spec::{Manifest, ManifestSbom, Step};
use cyclonedx_bom::external_models::date_time::DateTime;
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::spdx::SpdxExpression;
use cyclonedx_bom::external_models::uri::{Purl, Uri};
use cyclonedx_bom::models::bom::{Bom, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::models::external_reference::{
    ExternalReference, ExternalReferenceType, ExternalReferences,
};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::license::{License, LicenseChoice, Licenses};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::{Tool, Tools};
use cyclonedx_bom::validation::Validate as _;

use crate::images::{BlobKind, Layout};

/// Why the SBOM could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// A `.deb` artifact's control data or copyright file could not be read.
    #[error("SBOM: artifact {name}: {source}")]
    Deb {
        /// The artifact.
        name: ArtifactName,
        /// The cause.
        source: debpkg::DebError,
    },
    /// The document did not validate against CycloneDX 1.5 (a bug: the
    /// facts it is made of are all validated before).
    #[error("SBOM: the generated CycloneDX document is invalid: {0}")]
    Invalid(String),
}

/// The SBOM for `manifest` (whose `sbom` field is ignored) as the bytes of
/// the `SBOM.cdx.json` entry, and the manifest field that names them.
/// `paths` gives each artifact's bytes on disk (the `.deb`s' control data
/// and copyright files are read from them); `layouts` the images' blobs.
pub fn make(
    manifest: &Manifest,
    paths: &BTreeMap<&ArtifactName, &Path>,
    layouts: &[Layout],
) -> Result<(Vec<u8>, ManifestSbom), SbomError> {
    let mut unsigned = manifest.clone();
    unsigned.sbom = None;
    let seed = Sha256Digest::of(&unsigned.to_bytes());

    let debs: std::collections::BTreeSet<&ArtifactName> = manifest
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Debs(d) => Some(d.artifacts.iter()),
            _ => None,
        })
        .flatten()
        .collect();

    let mut components = Vec::new();
    for (name, artifact) in &manifest.artifacts {
        if manifest.images.contains_key(name) {
            continue;
        }
        let mut c = if debs.contains(name) {
            deb_component(name, paths[name])?
        } else {
            let mut c = Component::new(Classification::File, name.as_str(), "", None);
            c.version = None;
            c
        };
        c.bom_ref = Some(format!("artifact:{name}"));
        c.hashes = Some(sha256_hashes(&artifact.sha256.to_hex()));
        if !artifact.url.is_empty() {
            c.external_references = Some(ExternalReferences(vec![ExternalReference::new(
                ExternalReferenceType::Distribution,
                Uri::new(&artifact.url),
            )]));
        }
        let mut props = c.properties.take().map(|p| p.0).unwrap_or_default();
        props.push(Property::new("airgap:artifact", name.as_str()));
        props.push(Property::new("airgap:size", &artifact.size.to_string()));
        c.properties = Some(Properties(props));
        components.push(c);
    }
    for (name, image) in &manifest.images {
        let reference = &image.reference;
        let artifact = &manifest.artifacts[name];
        let last = reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or(reference.repository());
        let mut purl = purl::GenericPurlBuilder::new(String::from("oci"), last)
            .with_version(image.digest.to_string())
            .with_qualifier("repository_url", reference.name())
            .and_then(|b| b.with_qualifier("arch", manifest.target.arch.as_str()));
        if let Some(tag) = reference.tag() {
            purl = purl.and_then(|b| b.with_qualifier("tag", tag));
        }
        let purl = purl
            .ok()
            .and_then(|b| b.build().ok())
            .map(|p| p.to_string());
        let mut c = Component::new(
            Classification::Container,
            &reference.name(),
            reference.tag().unwrap_or(""),
            Some(format!("image:{name}")),
        );
        if reference.tag().is_none() {
            c.version = None;
        }
        c.purl = purl.and_then(|p| Purl::from_str(&p).ok());
        c.hashes = Some(sha256_hashes(&artifact.sha256.to_hex()));
        let mut props = vec![
            Property::new("airgap:artifact", name.as_str()),
            Property::new("airgap:size", &artifact.size.to_string()),
            Property::new("airgap:ref", &reference.to_string()),
            Property::new("airgap:digest", &image.digest.to_string()),
            Property::new("airgap:manifest-digest", &image.manifest.to_string()),
            Property::new("airgap:platform", &image.platform),
        ];
        let mut layers = Vec::new();
        if let Some(layout) = layouts.iter().find(|l| &l.image.name == name) {
            for blob in &layout.image.blobs {
                match blob.kind {
                    BlobKind::Layer(n) => {
                        let mut l = Component::new(
                            Classification::File,
                            &blob.digest.to_string(),
                            "",
                            Some(format!("image:{name}:layer:{n}")),
                        );
                        l.version = None;
                        l.hashes = Some(sha256_hashes(&blob.digest.hex()));
                        l.properties = Some(Properties(vec![
                            Property::new("airgap:layer-index", &n.to_string()),
                            Property::new("airgap:size", &blob.size.to_string()),
                        ]));
                        layers.push(l);
                    }
                    BlobKind::Config => props.push(Property::new(
                        "airgap:config-digest",
                        &blob.digest.to_string(),
                    )),
                    _ => {}
                }
            }
        }
        c.properties = Some(Properties(props));
        if !layers.is_empty() {
            c.components = Some(Components(layers));
        }
        components.push(c);
    }

    let mut bundle = Component::new(
        Classification::Application,
        manifest.name.as_str(),
        manifest.version.as_str(),
        Some("bundle".to_owned()),
    );
    let mut props = vec![
        Property::new("airgap:serial", &manifest.serial.to_string()),
        Property::new(
            "airgap:target",
            &format!(
                "{}/{}",
                manifest.target.os.as_str(),
                manifest.target.arch.as_str()
            ),
        ),
    ];
    if let Some(expires) = &manifest.expires {
        props.push(Property::new("airgap:expires", &expires.to_string()));
    }
    bundle.properties = Some(Properties(props));

    let dependencies = Dependencies(vec![Dependency {
        dependency_ref: "bundle".to_owned(),
        dependencies: components
            .iter()
            .filter_map(|c| c.bom_ref.clone())
            .collect(),
    }]);
    let hex = seed.to_hex();
    let serial = format!(
        "urn:uuid:{}-{}-8{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        0x8 | (u8::from_str_radix(&hex[16..17], 16).unwrap_or(0) & 0x3),
        &hex[17..20],
        &hex[20..32]
    );
    let bom = Bom {
        serial_number: Some(
            UrnUuid::new(serial).map_err(|e| SbomError::Invalid(format!("{e:?}")))?,
        ),
        metadata: Some(Metadata {
            timestamp: DateTime::try_from(manifest.created.to_string()).ok(),
            tools: Some(Tools::List(vec![Tool {
                vendor: None,
                name: Some(NormalizedString::new("bundler")),
                version: Some(NormalizedString::new(env!("CARGO_PKG_VERSION"))),
                hashes: None,
                external_references: None,
            }])),
            authors: None,
            component: Some(bundle),
            manufacture: None,
            supplier: None,
            licenses: None,
            properties: None,
            lifecycles: None,
        }),
        components: Some(Components(components)),
        dependencies: Some(dependencies),
        ..Bom::default()
    };
    let result = bom.validate_version(cyclonedx_bom::models::bom::SpecVersion::V1_5);
    if !result.passed() {
        return Err(SbomError::Invalid(format!("{result:?}")));
    }
    let mut bytes = Vec::new();
    bom.output_as_json_v1_5(&mut bytes)
        .map_err(|e| SbomError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    let entry = ManifestSbom {
        path: SBOM_ENTRY.to_owned(),
        format: SBOM_FORMAT.to_owned(),
        sha256: Sha256Digest::of(&bytes),
        size: bytes.len() as u64,
    };
    Ok((bytes, entry))
}

fn sha256_hashes(hex: &str) -> Hashes {
    Hashes(vec![Hash {
        alg: HashAlgorithm::SHA_256,
        content: HashValue(hex.to_owned()),
    }])
}

/// A `.deb`'s component: name, version, architecture from its control data,
/// licenses from its machine-readable copyright file.
fn deb_component(name: &ArtifactName, path: &Path) -> Result<Component, SbomError> {
    let err = |source| SbomError::Deb {
        name: name.clone(),
        source,
    };
    let control = debpkg::read_control(path).map_err(err)?;
    let package = control.get("Package").unwrap_or(name.as_str()).to_owned();
    let version = control.get("Version").unwrap_or("").to_owned();
    let arch = control.get("Architecture").unwrap_or("").to_owned();
    let mut c = Component::new(Classification::Library, &package, &version, None);
    let mut purl = purl::GenericPurlBuilder::new(String::from("deb"), package.as_str())
        .with_namespace("debian")
        .with_version(version.as_str());
    if !arch.is_empty() {
        purl = purl
            .with_qualifier("arch", arch.as_str())
            .unwrap_or_else(|_| {
                purl::GenericPurlBuilder::new(String::from("deb"), package.as_str())
                    .with_namespace("debian")
                    .with_version(version.as_str())
            });
    }
    c.purl = purl
        .build()
        .ok()
        .and_then(|p| Purl::from_str(&p.to_string()).ok());
    let mut props = Vec::new();
    if let Some(source) = control.get("Source") {
        props.push(Property::new("airgap:debian:source", source));
    }
    if !arch.is_empty() {
        props.push(Property::new("airgap:debian:architecture", &arch));
    }
    c.properties = Some(Properties(props));
    if let Some(text) = debpkg::read_copyright(path, &package).map_err(err)?
        && let Some(licenses) = debpkg::copyright::dep5_licenses(&text)
    {
        c.licenses = Some(licenses_of(&licenses));
    }
    Ok(c)
}

/// One SPDX expression when every license maps to SPDX ids, else each
/// license by id or, failing that, by its Debian name (CycloneDX 1.5 allows
/// one expression or a list of licenses, not both).
fn licenses_of(debian: &[String]) -> Licenses {
    let spdx: Option<Vec<String>> = debian
        .iter()
        .map(|l| debpkg::copyright::spdx_expression(l))
        .collect();
    if let Some(parts) = spdx {
        let expr = if parts.len() == 1 {
            parts[0].clone()
        } else {
            parts
                .iter()
                .map(|p| {
                    if p.contains(' ') {
                        format!("({p})")
                    } else {
                        p.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        if SpdxExpression::parse_lax(expr.clone()).is_ok() {
            return Licenses(vec![LicenseChoice::Expression(SpdxExpression::new(&expr))]);
        }
    }
    Licenses(
        debian
            .iter()
            .map(|l| match debpkg::copyright::spdx_expression(l) {
                Some(id) if !id.contains(' ') => LicenseChoice::License(License::license_id(&id)),
                _ => LicenseChoice::License(License::named_license(l)),
            })
            .collect(),
    )
}
