//! Spec and manifest types, validation, the signed bundle format, and
//! minisign-compatible signing, shared by `bundler` and `install-bundle`.
//!
//! A bundle is one zstd-compressed tar: a manifest (`BUNDLE.json`), its
//! minisign signature, and the artifacts the manifest pins by SHA-256. This
//! crate writes such files ([`write::write_bundle`]) and reads them in one
//! streaming pass that verifies the signature before it looks at anything
//! else ([`read::BundleReader`]). It does no network, terminal or
//! command-line work; progress goes through [`Reporter`].
//!
//! The format is described in `FORMAT.md` beside this crate.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::io::Read;
//! use bundle_spec::{Limits, NoReporter, Sha256Digest};
//! use bundle_spec::sign::{SecretKey, TrustedKeys};
//! use bundle_spec::spec::{Manifest, ManifestArtifact};
//! use bundle_spec::read::{BundleReader, DiscardSink};
//! use bundle_spec::write::{write_bundle, WriteOptions};
//!
//! let spec = bundle_spec::validate::parse_spec(br#"{
//!     "apiVersion": "bundle/v1", "name": "hello", "version": "1.0", "serial": 1,
//!     "target": { "os": "linux", "arch": "amd64" },
//!     "artifacts": { "greeting": { "url": "file:greeting.txt",
//!         "sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" } },
//!     "steps": [ { "kind": "binary", "artifact": "greeting", "dest": "/usr/share/hello/greeting", "mode": "0644" } ]
//! }"#, &Limits::default())?;
//!
//! // Build: the manifest pins every artifact; the key signs it.
//! let data = b"hello\n";
//! let manifest = Manifest::from_spec(&spec, bundle_spec::Timestamp::from_unix(0).unwrap(), |name, source| {
//!     Some(ManifestArtifact { path: format!("artifacts/{name}"), sha256: Sha256Digest::of(data),
//!                             size: data.len() as u64, url: source.url.clone() })
//! }).unwrap();
//! let key = SecretKey::generate()?;
//! let written = write_bundle(Vec::new(), &manifest, None, &key,
//!     &mut |_, _| Ok(Box::new(&data[..]) as Box<dyn Read>), WriteOptions::default(), &NoReporter)?;
//!
//! // Install side: only a trusted key's signature opens the bundle.
//! let mut trusted = TrustedKeys::new();
//! trusted.add(key.public(), "example");
//! let reader = BundleReader::open(&written.output[..], &trusted, &Limits::default())?;
//! assert_eq!(reader.manifest().name.as_str(), "hello");
//! let verified = reader.read_artifacts(&mut DiscardSink, &NoReporter)?;
//! assert_eq!(verified.artifact_bytes, 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod extract;
pub mod format;
pub mod image;
pub mod layout;
pub mod limits;
pub mod names;
pub mod parts;
pub mod read;
pub mod report;
pub mod sign;
pub mod spec;
mod tarfmt;
pub mod template;
pub mod time;
pub mod unit;
pub mod validate;
pub mod write;

pub use digest::Sha256Digest;
pub use limits::Limits;
pub use report::{NoReporter, Reporter};
pub use time::Timestamp;

impl spec::Manifest {
    /// The manifest for `spec`, created at `created`. `pin` supplies each
    /// artifact's entry (digest and size of the bytes that will be packed);
    /// `None` from it for any artifact gives `None`.
    pub fn from_spec(
        spec: &spec::Spec,
        created: Timestamp,
        mut pin: impl FnMut(
            &names::ArtifactName,
            &spec::ArtifactSource,
        ) -> Option<spec::ManifestArtifact>,
    ) -> Option<spec::Manifest> {
        let mut artifacts = std::collections::BTreeMap::new();
        for (name, source) in &spec.artifacts {
            artifacts.insert(name.clone(), pin(name, source)?);
        }
        Some(spec::Manifest {
            format: format::FORMAT.to_owned(),
            name: spec.name.clone(),
            version: spec.version.clone(),
            serial: spec.serial,
            created,
            expires: spec.expires,
            target: spec.target.clone(),
            variables: spec.variables.clone(),
            artifacts,
            images: std::collections::BTreeMap::new(),
            steps: spec.steps.clone(),
            sbom: None,
            base: None,
        })
    }
}
