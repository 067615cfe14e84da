//! Bundles as OCI artifacts, as ORAS pushes files: a manifest with its own
//! `artifactType` ([`ARTIFACT_TYPE`]), the empty config
//! (`application/vnd.oci.empty.v1+json`, `{}`), and two layers: the bundle
//! ([`BUNDLE_MEDIA_TYPE`]) and its detached signature
//! ([`SIGNATURE_MEDIA_TYPE`]), each titled with its file name
//! (`org.opencontainers.image.title`). Registries that store any OCI
//! manifest (distribution 2.8+, Harbor, Zot, ECR, GHCR...) and their
//! mirroring tools carry it like an image.
//!
//! The registry is reached as `bundler build` reaches it
//! ([`crate::registry`]): HTTPS with the system's roots and `--registry-ca`,
//! plain HTTP only for loopback and `--insecure-registry`, credentials from
//! `$REGISTRY_AUTH_FILE` or `~/.docker/config.json`. The bundle blob is
//! uploaded streaming from the file (a monolithic `PUT`, so a bundle of
//! several GiB is never held in memory); the small blobs and the manifest go
//! through `oci-client`.

use std::io::Read as _;
use std::path::Path;

use bundle_spec::image::ImageRef;
use oci_client::RegistryOperation;
use oci_client::manifest::OciDescriptor;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{Download, LocalBundle, Pushed, TransferError, TransferOptions};
use crate::fetch::FetchOptions;
use crate::registry::{Registries, RegistryError, Session, oci_reference};

/// The artifact type of a bundle.
pub const ARTIFACT_TYPE: &str = "application/vnd.airgap.bundle.v1";
/// The media type of the bundle layer.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.airgap.bundle.v1.tar+zstd";
/// The media type of the detached-signature layer.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.airgap.bundle.signature.v1+minisign";
/// The empty config's media type.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The annotation holding a layer's file name.
pub const TITLE: &str = "org.opencontainers.image.title";
/// Largest signature layer accepted.
const MAX_SIGNATURE_BYTES: i64 = 64 << 10;

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn registry_error(url: &str, e: RegistryError, op: &str) -> TransferError {
    match e {
        RegistryError::Unauthorized { .. } => {
            let text = e.to_string();
            TransferError::Denied {
                url: url.to_owned(),
                reason: format!("HTTP 401 Unauthorized for {op}"),
                hint: text
                    .split_once("): ")
                    .map_or(text.clone(), |(_, h)| h.to_owned()),
            }
        }
        RegistryError::NotFound { reason, .. } => TransferError::NotFound {
            url: url.to_owned(),
            reason,
            hint: "check the repository and tag (a bundle is pushed there with `bundler push BUNDLE oci://REGISTRY/REPOSITORY:TAG`)".to_owned(),
        },
        other => TransferError::Remote {
            url: url.to_owned(),
            reason: other.to_string(),
        },
    }
}

struct Target {
    url: String,
    registries: Registries,
    session: std::sync::Arc<Session>,
    reference: ImageRef,
    oci_ref: oci_client::Reference,
}

fn open(reference: &ImageRef, opts: &TransferOptions) -> Result<Target, TransferError> {
    let url = format!("oci://{reference}");
    let registries = Registries::new(opts.registry.clone(), &FetchOptions::default())
        .map_err(|e| registry_error(&url, e, "setup"))?;
    let session = registries
        .session(reference.registry())
        .map_err(|e| registry_error(&url, e, "connect"))?;
    Ok(Target {
        url,
        oci_ref: oci_reference(reference),
        registries,
        session,
        reference: reference.clone(),
    })
}

impl Target {
    fn classify(&self, e: oci_client::errors::OciDistributionError, op: &str) -> TransferError {
        let shown = self.reference.to_string();
        registry_error(
            &self.url,
            self.registries
                .classify(&self.session, &self.reference, &shown, e),
            op,
        )
    }

    fn base(&self) -> String {
        format!(
            "{}://{}/v2/{}",
            self.session.scheme.as_str(),
            self.session.api_host,
            self.reference.repository()
        )
    }

    fn denied(&self, status: StatusCode) -> TransferError {
        registry_error(
            &self.url,
            RegistryError::Unauthorized {
                registry: self.session.registry.clone(),
                repository: self.reference.repository().to_owned(),
                credentials: self.session.credentials.clone().map(Box::new),
                auth_file: self.registries_auth_file(),
            },
            &format!("push (HTTP {status})"),
        )
    }

    fn registries_auth_file(&self) -> Option<std::path::PathBuf> {
        crate::registry::AuthFile::from_env().path
    }
}

/// Pushes the bundle and its signature as one artifact tagged `reference`.
pub fn push(
    bundle: &LocalBundle,
    reference: &ImageRef,
    opts: &TransferOptions,
) -> Result<Pushed, TransferError> {
    let t = open(reference, opts)?;
    let io = |source| TransferError::Io {
        path: bundle.path.clone(),
        source,
    };
    let bundle_digest = {
        let mut f = std::fs::File::open(&bundle.path).map_err(io)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        format!("sha256:{:x}", h.finalize())
    };
    let signature = bundle.signature.as_bytes().to_vec();
    let sig_digest = sha256_digest(&signature);
    let config = b"{}".to_vec();
    let config_digest = sha256_digest(&config);
    let file_name = bundle.path.file_name().map_or_else(
        || "bundle.tar.zst".into(),
        |n| n.to_string_lossy().into_owned(),
    );

    let auth = t.session.auth();
    let token = t
        .registries
        .block_on(
            t.session
                .client
                .auth(&t.oci_ref, &auth, RegistryOperation::Push),
        )
        .map_err(|e| t.classify(e, "push"))?;
    let authorization = match (&token, &t.session.credentials) {
        (Some(tok), _) => Some(format!("Bearer {tok}")),
        (None, Some(c)) => {
            use base64::Engine as _;
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.user, c.password))
            ))
        }
        (None, None) => None,
    };

    // The bundle: streamed from the file.
    upload_file(&t, &bundle.path, bundle.size, &bundle_digest, authorization)?;
    // The signature and the empty config: small, through oci-client.
    for (data, digest) in [(&signature, &sig_digest), (&config, &config_digest)] {
        t.registries
            .block_on(t.session.client.push_blob(&t.oci_ref, data, digest))
            .map_err(|e| t.classify(e, "push"))?;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": config.len(), "data": "e30="},
        "layers": [
            {"mediaType": BUNDLE_MEDIA_TYPE, "digest": bundle_digest, "size": bundle.size,
             "annotations": {TITLE: file_name}},
            {"mediaType": SIGNATURE_MEDIA_TYPE, "digest": sig_digest, "size": signature.len(),
             "annotations": {TITLE: format!("{file_name}.minisig")}},
        ],
        "annotations": {
            "io.airgap.bundle.name": bundle.name,
            "io.airgap.bundle.version": bundle.version,
            "io.airgap.bundle.serial": bundle.serial.to_string(),
            "io.airgap.bundle.key-id": bundle.key_id,
        },
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| TransferError::Remote {
        url: t.url.clone(),
        reason: format!("cannot encode the manifest: {e}"),
    })?;
    let digest = sha256_digest(&body);
    t.registries
        .block_on(t.session.client.push_manifest_raw(
            &t.oci_ref,
            body,
            reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
        ))
        .map_err(|e| t.classify(e, "push"))?;
    Ok(Pushed {
        url: t.url,
        size: bundle.size,
        parts: 1,
        digest: Some(digest),
    })
}

/// Uploads a blob from a file unless the repository has it: `POST
/// /blobs/uploads/`, then one `PUT ?digest=` streaming the file.
fn upload_file(
    t: &Target,
    path: &Path,
    size: u64,
    digest: &str,
    authorization: Option<String>,
) -> Result<(), TransferError> {
    let remote = |reason: String| TransferError::Remote {
        url: t.url.clone(),
        reason,
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(300))
        .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")));
    for cert in t
        .registries
        .extra_roots()
        .map_err(|e| registry_error(&t.url, e, "setup"))?
    {
        builder = builder.add_root_certificate(cert);
    }
    let client = builder
        .build()
        .map_err(|e| remote(format!("cannot set up the HTTP client: {e}")))?;
    let with_auth = |r: reqwest::RequestBuilder| match &authorization {
        Some(a) => r.header(reqwest::header::AUTHORIZATION, a),
        None => r,
    };
    let base = t.base();
    t.registries.block_on(async {
        let send_err = |e: reqwest::Error| remote(crate::registry::describe(&e));
        let head = with_auth(client.head(format!("{base}/blobs/{digest}")))
            .send()
            .await
            .map_err(send_err)?;
        if head.status().is_success() {
            return Ok(());
        }
        let started = with_auth(client.post(format!("{base}/blobs/uploads/")))
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(send_err)?;
        let status = started.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(t.denied(status));
        }
        if status != StatusCode::ACCEPTED {
            let text = started.text().await.unwrap_or_default();
            return Err(remote(format!(
                "starting the blob upload: HTTP {status} {}",
                text.trim()
            )));
        }
        let location = started
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| remote("the registry gave no upload Location".to_owned()))?;
        let mut put_url = url::Url::parse(&base)
            .and_then(|b| b.join(location))
            .map_err(|e| remote(format!("bad upload Location {location:?}: {e}")))?;
        put_url.query_pairs_mut().append_pair("digest", digest);
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| TransferError::Io {
                path: path.to_owned(),
                source,
            })?;
        let done = with_auth(client.put(put_url))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::from(file))
            .send()
            .await
            .map_err(send_err)?;
        let status = done.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(t.denied(status));
        }
        if status != StatusCode::CREATED {
            let text = done.text().await.unwrap_or_default();
            return Err(remote(format!(
                "uploading the bundle blob: HTTP {status} {}",
                text.trim()
            )));
        }
        Ok(())
    })
}

/// Downloads the artifact tagged `reference` into a temporary file in `dir`;
/// returns it and the detached signature.
pub(super) fn download(
    reference: &ImageRef,
    dir: &Path,
    opts: &TransferOptions,
) -> Result<(Download, String), TransferError> {
    let t = open(reference, opts)?;
    let (bytes, _digest) = t
        .registries
        .manifest(reference)
        .map_err(|e| registry_error(&t.url, e, "pull"))?;
    let not_bundle = |reason: String| TransferError::Verify {
        url: t.url.clone(),
        reason: format!(
            "{reason}; this tag is not a bundle pushed by `bundler push` (artifactType {ARTIFACT_TYPE})"
        ),
    };
    let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| not_bundle(format!("not an OCI image manifest: {e}")))?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(not_bundle(format!(
            "its artifactType is {:?}",
            manifest.artifact_type.as_deref().unwrap_or("none")
        )));
    }
    let layer = |media_type: &str| -> Result<&OciDescriptor, TransferError> {
        let found: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == media_type)
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            _ => Err(not_bundle(format!(
                "{} layers of type {media_type}, expected one",
                found.len()
            ))),
        }
    };
    let sig_layer = layer(SIGNATURE_MEDIA_TYPE)?;
    let bundle_layer = layer(BUNDLE_MEDIA_TYPE)?;
    if !(0..=MAX_SIGNATURE_BYTES).contains(&sig_layer.size) {
        return Err(not_bundle(format!(
            "its signature layer is {} bytes",
            sig_layer.size
        )));
    }
    let mut signature = Vec::new();
    t.registries
        .block_on(
            t.session
                .client
                .pull_blob(&t.oci_ref, sig_layer, &mut signature),
        )
        .map_err(|e| t.classify(e, "pull"))?;
    let signature = String::from_utf8(signature)
        .map_err(|_| not_bundle("the signature layer is not text".to_owned()))?;

    let tmp = tempfile::Builder::new()
        .prefix(".bundler-pull.")
        .tempfile_in(dir)
        .map_err(|source| TransferError::Io {
            path: dir.to_owned(),
            source,
        })?;
    let (file, tmp_path) = tmp.into_parts();
    let download = Download {
        path: tmp_path.keep().map_err(|e| TransferError::Io {
            path: dir.to_owned(),
            source: e.error,
        })?,
        companions: Vec::new(),
    };
    let got = t.registries.block_on(async {
        let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
        t.session
            .client
            .pull_blob(&t.oci_ref, bundle_layer, &mut out)
            .await?;
        use tokio::io::AsyncWriteExt as _;
        out.flush().await?;
        Ok::<(), oci_client::errors::OciDistributionError>(())
    });
    if let Err(e) = got {
        let err = match e {
            oci_client::errors::OciDistributionError::DigestError(d) => TransferError::Verify {
                url: t.url.clone(),
                reason: format!("the bundle layer does not match its digest: {d}"),
            },
            other => t.classify(other, "pull"),
        };
        download.discard();
        return Err(err);
    }
    Ok((download, signature))
}
