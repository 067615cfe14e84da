//! The types of a spec (`spec.json`, written by a user) and of a manifest
//! (`BUNDLE.json`, written by the builder), which share targets, variables and
//! steps.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Sha256Digest;
use crate::image::{ImageRef, OciDigest};
use crate::names::{
    ArtifactName, BundleName, Mode, ModuleName, TargetPath, UnitName, VarName, Version,
};
use crate::time::Timestamp;

/// A spec: what a bundle contains and how it installs. See the README for a
/// full example; [`crate::validate::parse_spec`] parses and validates one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Must be [`crate::format::SPEC_API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The bundle's name; receipts on the host are kept per name.
    pub name: BundleName,
    /// A free-form version label.
    pub version: Version,
    /// A positive integer that only grows between releases of the same name
    /// (the installer refuses a lower serial than the installed one).
    pub serial: Serial,
    /// After this time the installer refuses the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// The host kind the bundle is for.
    pub target: Target,
    /// Per-host values used by templates.
    #[serde(default)]
    pub variables: BTreeMap<VarName, Variable>,
    /// The pinned files the bundle carries.
    #[serde(default)]
    pub artifacts: BTreeMap<ArtifactName, ArtifactSource>,
    /// Container images the bundle carries, pinned by digest; each travels
    /// as an artifact of the same name (an OCI image layout tar).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<ArtifactName, ImageSource>,
    /// What the installer does, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Debian packages by name, resolved with their dependencies into pinned
    /// `.deb` artifacts by `bundler lock` (never copied into a manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt: Option<AptSection>,
}

/// The `apt` section of a spec: which packages to take from which signed
/// Debian repositories. `bundler lock` resolves `packages` and their
/// `Depends`/`Pre-Depends` closure, minus what `baseline` already has, into
/// pinned artifacts and a `debs` step written to `SPEC.lock.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSection {
    /// Repositories, searched together (the highest version wins).
    pub sources: Vec<AptSource>,
    /// Debian architecture of the packages; must equal the target's (the
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// Package names (`socat`), installed with their dependencies.
    pub packages: Vec<String>,
    /// What the target already has: a built-in name (`debian-12-minbase`)
    /// or, when it holds a `/`, a dpkg status file of the target image
    /// (relative to the spec's directory). Without it nothing is assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// One signed Debian repository of an [`AptSection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    /// The archive root (`http://deb.debian.org/debian`), holding `dists/`
    /// and `pool/`.
    pub url: String,
    /// The suite or codename (`bookworm`, `bookworm-updates`).
    pub suite: String,
    /// Components (`main`).
    pub components: Vec<String>,
    /// OpenPGP keyring (binary `.gpg` or armored `.asc`) the suite's
    /// `InRelease`/`Release.gpg` must be signed by, relative to the spec's
    /// directory.
    pub keyring: String,
}

/// A bundle serial: an integer from 1 to 2^53 (exact in every JSON reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Serial(u64);

impl Serial {
    /// Largest serial: 2^53, the largest integer every JSON reader keeps exact.
    pub const MAX: u64 = 1 << 53;

    /// The serial's value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Serial {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 0 || v > Self::MAX {
            Err(format!("serial must be an integer from 1 to 2^53, got {v}"))
        } else {
            Ok(Self(v))
        }
    }
}

impl From<Serial> for u64 {
    fn from(s: Serial) -> u64 {
        s.0
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The kind of host a bundle installs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Operating system; only `linux` in v1.
    pub os: Os,
    /// Debian architecture name.
    pub arch: Arch,
    /// Fields that must match the host's `/etc/os-release` (`{"ID": "debian", "VERSION_ID": "12"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<BTreeMap<String, String>>,
}

/// Operating systems a bundle may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux.
    Linux,
}

impl Os {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
        }
    }
}

/// CPU architectures, by their Debian names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARM, hard float.
    Armhf,
    /// 32-bit x86.
    I386,
    /// 64-bit little-endian POWER.
    Ppc64el,
    /// 64-bit RISC-V.
    Riscv64,
    /// IBM Z.
    S390x,
}

impl Arch {
    /// The JSON (Debian) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::I386 => "i386",
            Arch::Ppc64el => "ppc64el",
            Arch::Riscv64 => "riscv64",
            Arch::S390x => "s390x",
        }
    }

    /// The architecture this program was compiled for, if it has a Debian name.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Armhf),
            "x86" => Some(Arch::I386),
            "powerpc64" => Some(Arch::Ppc64el),
            "riscv64" => Some(Arch::Riscv64),
            "s390x" => Some(Arch::S390x),
            _ => None,
        }
    }
}

/// A template variable's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Shown to the operator when the value is missing or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The installer refuses to run without a value (from `--set`, `--values`
    /// or `default`).
    #[serde(default)]
    pub required: bool,
    /// A regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The value used when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Where the builder gets an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSource {
    /// `https://`, `http://` or `file:` (relative to the spec's directory) URL.
    pub url: String,
    /// The pinned digest; required to build (`bundler pin` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// The expected size in bytes; a download larger than this is cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Further URLs for the same bytes, tried in order when `url` fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// Where the builder gets a container image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// The name the node knows the image by, normalized as containerd does
    /// (`busybox` → `docker.io/library/busybox:latest`); also where it is
    /// pulled from.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// What the registry serves for `ref`: a multi-platform index or a
    /// single manifest. Required to build (`bundler pin` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<OciDigest>,
    /// Other repositories serving the same content (`mirror.internal:5000/team/app`),
    /// tried in order when `ref`'s registry fails; the ref's tag is used there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// One image as recorded in the manifest; its bytes are the artifact of the
/// same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestImage {
    /// The normalized reference the node knows the image by.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// The pinned digest: what the registry serves for the ref (an index or
    /// a manifest).
    pub digest: OciDigest,
    /// The image manifest for the target platform (the same as `digest`
    /// when that is a single manifest).
    pub manifest: OciDigest,
    /// The platform chosen, `os/arch`.
    pub platform: String,
}

/// The manifest: `BUNDLE.json`, the signed first entry of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be [`crate::format::FORMAT`].
    pub format: String,
    /// From the spec.
    pub name: BundleName,
    /// From the spec.
    pub version: Version,
    /// From the spec.
    pub serial: Serial,
    /// When the bundle was built (`SOURCE_DATE_EPOCH` when set).
    pub created: Timestamp,
    /// From the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// From the spec.
    pub target: Target,
    /// From the spec.
    pub variables: BTreeMap<VarName, Variable>,
    /// Every artifact entry, with its digest and size.
    pub artifacts: BTreeMap<ArtifactName, ManifestArtifact>,
    /// Container images; each one's OCI layout tar is the artifact of the
    /// same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<ArtifactName, ManifestImage>,
    /// From the spec.
    pub steps: Vec<Step>,
    /// The bundle's SBOM, the entry after the signature (absent in bundles
    /// built before SBOMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<ManifestSbom>,
    /// Present in a differential bundle only: the release it applies to,
    /// and the artifacts it leaves out because that release installed them
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ManifestBase>,
}

/// The base of a differential bundle (`bundler build --base OLD`): the one
/// release whose receipt a host must have for the bundle to install there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBase {
    /// The base's bundle name (always this bundle's name).
    pub name: BundleName,
    /// The base's serial (lower than this bundle's).
    pub serial: Serial,
    /// The base's release digest ([`Manifest::release_sha256`]): what the
    /// receipt of a host that installed it records as `manifest_sha256`.
    pub manifest_sha256: Sha256Digest,
    /// The artifacts left out, each with what it put on a host, so that the
    /// installer can check on disk, by sha256, that it is still there and
    /// plan exactly as it would with the bytes.
    pub omitted: BTreeMap<ArtifactName, OmittedArtifact>,
}

/// What an omitted artifact put on a host (see [`ManifestBase::omitted`]).
/// A `binary` step's output is the step's `dest` with the artifact's sha256;
/// the other kinds record theirs here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmittedArtifact {
    /// An `extract` step's archive: the selected members, as the installer's
    /// scan of the archive gives them ([`crate::extract::scan`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<crate::extract::Member>,
    /// A `.deb` of a `debs` step: the package, and the files it installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<OmittedPackage>,
    /// An image: the digests of its blobs (index or manifest, config,
    /// layers) that containerd's content store must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<crate::image::OciDigest>,
}

/// A Debian package an omitted `.deb` installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmittedPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
    /// Its regular files but conffiles (which dpkg lets the administrator
    /// change): absolute path and sha256.
    pub files: Vec<PackageFile>,
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    /// Absolute path on the host (`/usr/bin/socat`).
    pub path: String,
    /// Digest of its bytes.
    pub sha256: Sha256Digest,
}

/// The SBOM entry as recorded in the manifest: the signature covers its
/// digest, so the SBOM is as authentic as the artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSbom {
    /// The tar entry name: always [`crate::format::SBOM_ENTRY`].
    pub path: String,
    /// Always [`crate::format::SBOM_FORMAT`].
    pub format: String,
    /// Digest of the entry's bytes.
    pub sha256: Sha256Digest,
    /// Size of the entry in bytes.
    pub size: u64,
}

/// One artifact as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestArtifact {
    /// The tar entry name: always `artifacts/NAME`.
    pub path: String,
    /// Digest of the entry's bytes.
    pub sha256: Sha256Digest,
    /// Size of the entry in bytes.
    pub size: u64,
    /// Where the builder got it (informational).
    pub url: String,
}

impl Manifest {
    /// The exact bytes of `BUNDLE.json` for this manifest: pretty JSON with a
    /// trailing newline. Maps are sorted, so equal manifests give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    /// The sum of the sizes of the artifacts the bundle carries (all of
    /// them but a differential bundle's omitted ones).
    pub fn total_artifact_bytes(&self) -> u64 {
        self.carried()
            .map(|(_, a)| a.size)
            .fold(0u64, u64::saturating_add)
    }

    /// Whether `name` is an artifact a differential bundle leaves out.
    pub fn is_omitted(&self, name: &ArtifactName) -> bool {
        self.base
            .as_ref()
            .is_some_and(|b| b.omitted.contains_key(name))
    }

    /// For a differential bundle, what it leaves out, as verification output
    /// ends with it: `; 3 left out (a differential bundle for hosts with
    /// serial 1)`; empty for a full bundle.
    pub fn left_out(&self) -> String {
        match &self.base {
            Some(b) => format!(
                "; {} left out (a differential bundle for hosts with serial {})",
                b.omitted.len(),
                b.serial
            ),
            None => String::new(),
        }
    }

    /// The artifacts the bundle carries, in entry (name) order: every one but
    /// a differential bundle's omitted ones.
    pub fn carried(&self) -> impl Iterator<Item = (&ArtifactName, &ManifestArtifact)> {
        self.artifacts.iter().filter(|(n, _)| !self.is_omitted(n))
    }

    /// The digest that identifies the release on a host (its receipt's
    /// `manifest_sha256`): SHA-256 of `manifest_bytes` for a full bundle; for
    /// a differential one, of the manifest without `base`, which is the
    /// manifest of the full bundle of the same build. A host upgraded with a
    /// differential bundle is then exactly where the full bundle takes it.
    pub fn release_sha256(&self, manifest_bytes: &[u8]) -> Sha256Digest {
        if self.base.is_none() {
            return Sha256Digest::of(manifest_bytes);
        }
        let full = Manifest {
            base: None,
            ..self.clone()
        };
        Sha256Digest::of(&full.to_bytes())
    }

    /// The trusted comment the manifest's signature must carry: `name version serial`.
    pub fn trusted_comment(&self) -> String {
        format!("{} {} {}", self.name, self.version, self.serial)
    }
}

/// One install step. The JSON form is an object whose `kind` names the variant
/// (`{"kind": "binary", "artifact": "runc", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Install .deb artifacts with dpkg.
    Debs(DebsStep),
    /// Turn swap off now and in `/etc/fstab`.
    SwapOff(SwapOffStep),
    /// Load a kernel module now and at boot.
    KernelModule(KernelModuleStep),
    /// Install one artifact as a file.
    Binary(BinaryStep),
    /// Install members of a tar artifact below a directory.
    Extract(ExtractStep),
    /// Create directories.
    Directory(DirectoryStep),
    /// Write a file from inline content, optionally templated.
    File(FileStep),
    /// Write, enable and start a systemd unit.
    SystemdUnit(SystemdUnitStep),
    /// Run a command.
    Command(CommandStep),
    /// Import container images into containerd.
    Images(ImagesStep),
}

/// Every step kind, as spelled in JSON.
pub const STEP_KINDS: &[&str] = &[
    "debs",
    "swap-off",
    "kernel-module",
    "binary",
    "extract",
    "directory",
    "file",
    "systemd-unit",
    "command",
    "images",
];

impl Step {
    /// The step's `kind` as spelled in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Debs(_) => "debs",
            Step::SwapOff(_) => "swap-off",
            Step::KernelModule(_) => "kernel-module",
            Step::Binary(_) => "binary",
            Step::Extract(_) => "extract",
            Step::Directory(_) => "directory",
            Step::File(_) => "file",
            Step::SystemdUnit(_) => "systemd-unit",
            Step::Command(_) => "command",
            Step::Images(_) => "images",
        }
    }

    /// The artifacts this step installs (an image is the artifact of the same name).
    pub fn artifacts(&self) -> Vec<&ArtifactName> {
        match self {
            Step::Debs(s) => s.artifacts.iter().collect(),
            Step::Images(s) => s.images.iter().collect(),
            Step::Binary(s) => vec![&s.artifact],
            Step::Extract(s) => vec![&s.artifact],
            _ => Vec::new(),
        }
    }

    /// Deserializes one step from a JSON value, with the path of the first
    /// error inside it (`dest`, `argv[0]`) as the error's path.
    pub fn from_value(value: serde_json::Value) -> Result<Step, StepError> {
        use serde_json::Value;
        let Value::Object(mut map) = value else {
            return Err(StepError::new(
                "",
                "expected an object with a \"kind\" field",
            ));
        };
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => return Err(StepError::new("kind", "expected a string")),
            None => {
                return Err(StepError::new(
                    "kind",
                    format!("missing; expected one of {}", STEP_KINDS.join(", ")),
                ));
            }
        };
        fn de<T: serde::de::DeserializeOwned>(
            map: serde_json::Map<String, Value>,
            wrap: fn(T) -> Step,
        ) -> Result<Step, StepError> {
            serde_path_to_error::deserialize(Value::Object(map))
                .map(wrap)
                .map_err(|e| StepError::new(&e.path().to_string(), e.into_inner().to_string()))
        }
        match kind.as_str() {
            "debs" => de(map, Step::Debs),
            "swap-off" => de(map, Step::SwapOff),
            "kernel-module" => de(map, Step::KernelModule),
            "binary" => de(map, Step::Binary),
            "extract" => de(map, Step::Extract),
            "directory" => de(map, Step::Directory),
            "file" => de(map, Step::File),
            "systemd-unit" => de(map, Step::SystemdUnit),
            "command" => de(map, Step::Command),
            "images" => de(map, Step::Images),
            other => Err(StepError::new(
                "kind",
                format!(
                    "unknown step kind {:?}; expected one of {}",
                    other.chars().take(64).collect::<String>(),
                    STEP_KINDS.join(", ")
                ),
            )),
        }
    }
}

/// Why a JSON value is not a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() || path == "." { String::new() } else { format!("{path}: ") })]
pub struct StepError {
    /// Path of the offending field inside the step (`""` for the step itself).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl StepError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: if path == "." {
                String::new()
            } else {
                path.to_owned()
            },
            message: message.into(),
        }
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Step::from_value(value).map_err(serde::de::Error::custom)
    }
}

fn default_exec_mode() -> Mode {
    Mode::new(0o755).expect("valid mode")
}

fn default_file_mode() -> Mode {
    Mode::new(0o644).expect("valid mode")
}

/// `{"kind": "debs", "artifacts": [...]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebsStep {
    /// .deb artifacts, installed with one dpkg call.
    pub artifacts: Vec<ArtifactName>,
}

/// `{"kind": "swap-off"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapOffStep {}

/// `{"kind": "kernel-module", "name": "overlay"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelModuleStep {
    /// The module to load.
    pub name: ModuleName,
}

/// `{"kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc", "mode": "0755"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryStep {
    /// The artifact to install.
    pub artifact: ArtifactName,
    /// Where.
    pub dest: TargetPath,
    /// Permission bits (default `0755`).
    #[serde(default = "default_exec_mode")]
    pub mode: Mode,
    /// Permit setuid/setgid bits in `mode`.
    #[serde(default)]
    pub allow_setuid: bool,
}

/// `{"kind": "extract", "artifact": "crictl", "dest": "/usr/local/bin", "include": ["crictl"]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractStep {
    /// A tar, tar.gz, tar.xz or tar.zst artifact (detected by content).
    pub artifact: ArtifactName,
    /// The directory members are written below.
    pub dest: TargetPath,
    /// Globs over member paths as stored (after a leading `./`); all members
    /// when absent. `*` does not cross `/`; `**` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Leading path components removed from each member.
    #[serde(default)]
    pub strip_components: u32,
    /// Permit setuid/setgid members.
    #[serde(default)]
    pub allow_setuid: bool,
}

/// `{"kind": "directory", "paths": [...], "mode": "0755"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryStep {
    /// Directories to create (with missing parents).
    pub paths: Vec<TargetPath>,
    /// Permission bits (default `0755`), also set on existing directories.
    #[serde(default = "default_exec_mode")]
    pub mode: Mode,
    /// Permit setuid/setgid bits in `mode`.
    #[serde(default)]
    pub allow_setuid: bool,
}

/// `{"kind": "file", "dest": "...", "mode": "0644", "content": "...", "template": true}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStep {
    /// Where.
    pub dest: TargetPath,
    /// Permission bits (default `0644`).
    #[serde(default = "default_file_mode")]
    pub mode: Mode,
    /// The file's content.
    pub content: String,
    /// Replace `${VAR}` with variable values (`$${` writes `${`).
    #[serde(default)]
    pub template: bool,
    /// Permit setuid/setgid bits in `mode`.
    #[serde(default)]
    pub allow_setuid: bool,
}

/// `{"kind": "systemd-unit", "name": "containerd.service", "content": "...", "enable": true, "start": true}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdUnitStep {
    /// The unit file name, written to `/etc/systemd/system/NAME`.
    pub name: UnitName,
    /// The unit file's content.
    pub content: String,
    /// Replace `${VAR}` with variable values.
    #[serde(default)]
    pub template: bool,
    /// Enable the unit (default false): the links `systemctl enable` makes
    /// ([`crate::unit`]).
    #[serde(default)]
    pub enable: bool,
    /// Start (or restart when changed) the unit (default false).
    #[serde(default)]
    pub start: bool,
    /// For a template (`NAME@.service`): the instances to enable and start,
    /// as `systemctl enable NAME@INSTANCE.service` would (default: the
    /// template's `DefaultInstance=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
}

impl SystemdUnitStep {
    /// The instances enabled and started: those listed, or `[None]` (the
    /// unit itself, a template's `DefaultInstance=`).
    pub fn instance_choices(&self) -> Vec<Option<&str>> {
        if self.instances.is_empty() {
            vec![None]
        } else {
            self.instances.iter().map(|i| Some(i.as_str())).collect()
        }
    }
}

/// `{"kind": "images", "images": ["pause"], "namespace": "k8s.io", "pin": true}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesStep {
    /// Images (names in `images`) to import.
    pub images: Vec<ArtifactName>,
    /// The containerd namespace (default `k8s.io`, the CRI plugin's).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Set the CRI's pinned label (`io.cri-containerd.pinned=pinned`) so
    /// that the kubelet's image garbage collection never removes them.
    #[serde(default)]
    pub pin: bool,
    /// containerd's socket (default `/run/containerd/containerd.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_namespace() -> String {
    crate::image::DEFAULT_NAMESPACE.to_owned()
}

/// `{"kind": "command", "argv": ["sysctl", "--system"], "unless": [...]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandStep {
    /// The program and its arguments, run without a shell.
    pub argv: Vec<String>,
    /// Skip the command when this one exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<Vec<String>>,
    /// Also run under `--root`, through chroot.
    #[serde(default)]
    pub in_root: bool,
}
