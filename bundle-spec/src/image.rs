//! Container images in a bundle: references, digests, and how an image
//! travels (an OCI image layout in a tar, one artifact per image).
//!
//! * [`ImageRef`]: the name a node knows an image by, normalized as
//!   containerd (and Docker) do (`busybox` → `docker.io/library/busybox:latest`,
//!   distribution `reference` grammar).
//! * [`OciDigest`]: `sha256:` and 64 lowercase hex digits, as OCI content
//!   descriptors write digests (OCI image spec, "Digests").
//! * The artifact of an image is a tar of an OCI image layout (OCI image
//!   spec, "Image Layout"): `oci-layout`, `index.json` and `blobs/sha256/*`,
//!   in that order. `index.json` holds one descriptor: the manifest (or the
//!   multi-platform index) the registry served for the pinned digest, annotated
//!   with [`ANNOTATION_IMAGE_NAME`] (the full ref, which containerd's importer
//!   uses as the image name) and [`ANNOTATION_REF_NAME`] (the tag, per the
//!   OCI spec). Only the blobs of the target platform are present;
//!   [`crate::layout`] writes such a tar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Sha256Digest;

/// `index.json` annotation holding the full image name (containerd).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// `index.json` annotation holding the tag (OCI image spec, "Pre-Defined
/// Annotation Keys").
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The CRI plugin's label that keeps the kubelet's image GC away.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker manifest list.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image manifest (schema 2).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The default containerd namespace of the `images` step (the CRI plugin's).
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
/// The containerd socket of a host.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";

/// Whether `media_type` is an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
}

/// Whether `media_type` is an image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

/// Whether a platform of an image index (`os`, `architecture` and `variant`
/// as OCI writes them) is the target's, as containerd's platform matcher
/// normalizes them: amd64 is `amd64` without variant (or `v1`), arm64 is
/// `arm64` without variant or `v8`, armhf is `arm` `v7` (or without variant),
/// i386 is `386`, ppc64el is `ppc64le`; the others keep their Debian name.
pub fn platform_matches(
    target: &crate::spec::Target,
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> bool {
    use crate::spec::Arch;
    let variant = variant.filter(|v| !v.is_empty());
    let (arch, variants): (&str, &[&str]) = match target.arch {
        Arch::Amd64 => ("amd64", &["v1"]),
        Arch::Arm64 => ("arm64", &["v8"]),
        Arch::Armhf => ("arm", &["v7"]),
        Arch::I386 => ("386", &[]),
        Arch::Ppc64el => ("ppc64le", &[]),
        Arch::Riscv64 => ("riscv64", &[]),
        Arch::S390x => ("s390x", &[]),
    };
    os == target.os.as_str()
        && architecture == arch
        && variant.is_none_or(|v| variants.contains(&v))
}

/// A content digest as OCI writes it: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OciDigest(Sha256Digest);

impl OciDigest {
    /// The digest of `sha256`.
    pub fn from_sha256(sha256: Sha256Digest) -> Self {
        Self(sha256)
    }

    /// The SHA-256 part.
    pub fn sha256(&self) -> Sha256Digest {
        self.0
    }

    /// The hex part (the blob's file name in an image layout).
    pub fn hex(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for OciDigest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            "must be \"sha256:\" followed by 64 lowercase hex digits (only sha256 is supported)"
                .to_owned()
        })?;
        hex.parse::<Sha256Digest>()
            .map(Self)
            .map_err(|e| format!("after \"sha256:\": {e}"))
    }
}

impl Serialize for OciDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OciDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An image reference, normalized: `REGISTRY/REPOSITORY[:TAG][@DIGEST]`
/// with the registry and (when there is no digest) the tag made explicit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<OciDigest>,
}

/// The registry of names without one.
pub const DOCKER_HUB: &str = "docker.io";

fn is_domain_like(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    if b.iter().any(|ch| ch.is_ascii_uppercase()) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (r, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5)
    {
        return false;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    // [\w][\w.-]{0,127}
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&ch| ch.is_ascii_alphanumeric() || matches!(ch, b'_' | b'.' | b'-'))
}

impl FromStr for ImageRef {
    type Err = String;

    /// Parses and normalizes as containerd's `reference/docker.ParseNormalizedNamed`
    /// does (then `TagNameOnly`: `:latest` when there is neither tag nor digest).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 255 + 128 + 72 {
            return Err("is too long".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain white space".into());
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(d.parse::<OciDigest>().map_err(|e| format!("digest {e}"))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(format!(
                "tag {t:?} is not valid (letters, digits, _ . -, at most 128, not starting with . or -)"
            ));
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest)) if is_domain_like(first) => (first.to_owned(), rest.to_owned()),
            _ => (DOCKER_HUB.to_owned(), path.to_owned()),
        };
        if !valid_registry(&registry) {
            return Err(format!("registry {registry:?} is not a valid host[:port]"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(format!(
                "repository {repository:?} is not valid (lowercase letters, digits and separators . _ __ - between them, components separated by /)"
            ));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return Err("name is longer than 255 characters".into());
        }
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl ImageRef {
    /// The registry host (`registry.k8s.io`, `localhost:5000`, `docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository (`pause`, `library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest the reference itself names, if any.
    pub fn digest(&self) -> Option<OciDigest> {
        self.digest
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image at another repository (`mirror.internal:5000/team/app`,
    /// a mirror of this one): that name with this tag (and digest).
    pub fn with_name(&self, name: &str) -> Result<ImageRef, String> {
        let base: ImageRef = name.parse()?;
        if base.digest.is_some()
            || (name.contains(':') && name.rsplit('/').next().is_some_and(|l| l.contains(':')))
        {
            return Err(format!(
                "mirror {name:?} must be a repository without tag or digest"
            ));
        }
        Ok(ImageRef {
            registry: base.registry,
            repository: base.repository,
            tag: self.tag.clone(),
            digest: self.digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn references_normalize_as_containerd_does() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("localhost:5000/x/y"), "localhost:5000/x/y:latest");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("127.0.0.1:5000/app:1.2"), "127.0.0.1:5000/app:1.2");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("k8s.gcr.io/pause:3.2@{d}")),
            format!("k8s.gcr.io/pause:3.2@{d}")
        );
    }

    #[test]
    fn invalid_references_are_refused_with_the_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "bad host:5000/x",
            "registry.k8s.io/pause@sha256:zz",
            "-x/y",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mirrors_take_the_tag_of_the_ref() {
        let r: ImageRef = "registry.example:5000/team/app:1.2".parse().unwrap();
        assert_eq!(
            r.with_name("mirror.internal:5000/team/app")
                .unwrap()
                .to_string(),
            "mirror.internal:5000/team/app:1.2"
        );
        assert!(r.with_name("mirror.internal:5000/team/app:9").is_err());
    }

    #[test]
    fn platforms_match_as_containerd_normalizes_them() {
        let target = |arch: &str| -> crate::spec::Target {
            serde_json::from_value(serde_json::json!({"os": "linux", "arch": arch})).unwrap()
        };
        let amd64 = target("amd64");
        assert!(platform_matches(&amd64, "linux", "amd64", None));
        assert!(platform_matches(&amd64, "linux", "amd64", Some("")));
        assert!(platform_matches(&amd64, "linux", "amd64", Some("v1")));
        assert!(!platform_matches(&amd64, "linux", "amd64", Some("v3")));
        assert!(!platform_matches(&amd64, "linux", "arm64", None));
        assert!(!platform_matches(&amd64, "windows", "amd64", None));
        assert!(!platform_matches(&amd64, "unknown", "unknown", None));
        let arm64 = target("arm64");
        assert!(platform_matches(&arm64, "linux", "arm64", None));
        assert!(platform_matches(&arm64, "linux", "arm64", Some("v8")));
        assert!(!platform_matches(&arm64, "linux", "arm64", Some("v9")));
        assert!(platform_matches(
            &target("armhf"),
            "linux",
            "arm",
            Some("v7")
        ));
        assert!(!platform_matches(
            &target("armhf"),
            "linux",
            "arm",
            Some("v6")
        ));
        assert!(platform_matches(&target("i386"), "linux", "386", None));
        assert!(platform_matches(
            &target("ppc64el"),
            "linux",
            "ppc64le",
            None
        ));
    }

    #[test]
    fn digests_are_sha256_with_the_prefix() {
        let d: OciDigest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{}", "0".repeat(64)));
        assert!("0".repeat(64).parse::<OciDigest>().is_err());
        assert!(
            format!("sha512:{}", "0".repeat(128))
                .parse::<OciDigest>()
                .is_err()
        );
    }
}
