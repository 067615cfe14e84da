//! Test container images, made locally and pushed to a [`Registry`] with
//! the OCI distribution API (monolithic blob uploads, manifests by digest,
//! then the root by tag), so every digest is known to the test in advance.
//!
//! * [`TestImage::single`]: one linux/amd64 image manifest whose only layer
//!   holds busybox-static's `/bin/busybox` (Debian package busybox-static)
//!   and whose entrypoint is `/bin/busybox echo LINE`: a container of it
//!   prints LINE (`ctr run --rm REF id` does, offline, once imported).
//! * [`TestImage::pause`]: a sandbox image stand-in (busybox sleeping), for
//!   containerd's `sandbox_image` in tests.
//! * [`TestImage::two_platform`]: an OCI image index of that linux/amd64
//!   manifest and a linux/arm64 (variant v8) one with its own small layer
//!   and config, so a test can check that only the amd64 blobs travel.
//!
//! Everything is deterministic (tar and gzip headers without times), so the
//! same LINE gives the same digests in every run. Layers are gzip-compressed
//! tars (`application/vnd.oci.image.layer.v1.tar+gzip`); manifests, configs
//! and the index use the OCI media types.
//!
//! ```no_run
//! use bundle_tests::oci::TestImage;
//! use bundle_tests::registry::Registry;
//!
//! let registry = Registry::tls_htpasswd();
//! let image = TestImage::two_platform("hello");
//! image.push(&registry, "team/app", "1.0");
//! assert!(image.digest().starts_with("sha256:"));        // the index: what `digest` pins
//! let amd64 = image.platform("amd64").unwrap();
//! assert_eq!(amd64.layers.len(), 1);                      // busybox + entrypoint
//! ```

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::registry::Registry;

/// OCI image index media type.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// gzip-compressed OCI layer media type.
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Some content and its descriptor fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// `sha256:HEX` of the bytes.
    pub digest: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_owned(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }

    /// Its OCI descriptor (`mediaType`, `digest`, `size`).
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size()})
    }
}

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The image of one platform.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `amd64`, `arm64`.
    pub architecture: String,
    /// `v8` for arm64.
    pub variant: Option<String>,
    /// The image manifest.
    pub manifest: Blob,
    /// The config.
    pub config: Blob,
    /// The layers (gzip tars).
    pub layers: Vec<Blob>,
}

/// A test image: its root (what the registry serves for the tag) and the
/// images of each platform.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The index (two platforms) or the amd64 manifest (single).
    pub root: Blob,
    /// The platform images, amd64 first.
    pub platforms: Vec<PlatformImage>,
    /// The line the amd64 entrypoint prints.
    pub line: String,
}

/// A deterministic tar of `files` (`(path, mode, bytes)`; directories end
/// in `/` and are written for every parent).
pub fn tar(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, mode, bytes) in files {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let dir = format!("{}/", parts[..i].join("/"));
            if dirs.insert(dir.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                b.append_data(&mut h, &dir, &[][..]).expect("tar dir");
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, *bytes).expect("tar file");
    }
    b.into_inner().expect("tar")
}

/// gzip without a time or name in its header.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn platform_image(
    architecture: &str,
    variant: Option<&str>,
    layer_tar: Vec<u8>,
    entrypoint: serde_json::Value,
) -> PlatformImage {
    let diff_id = sha256(&layer_tar);
    let layer = Blob::new(LAYER_GZIP, gzip(&layer_tar));
    let mut config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    let config = Blob::new(CONFIG, config.to_string().into_bytes());
    let manifest = Blob::new(
        MANIFEST,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        })
        .to_string()
        .into_bytes(),
    );
    PlatformImage {
        architecture: architecture.to_owned(),
        variant: variant.map(str::to_owned),
        manifest,
        config,
        layers: vec![layer],
    }
}

fn amd64(line: &str) -> PlatformImage {
    amd64_with(serde_json::json!([BUSYBOX, "echo", line]))
}

fn amd64_with(entrypoint: serde_json::Value) -> PlatformImage {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("{BUSYBOX} (apt-get install busybox-static): {e}"));
    platform_image(
        "amd64",
        None,
        tar(&[("bin/busybox", 0o755, &busybox)]),
        entrypoint,
    )
}

impl TestImage {
    /// A single-platform linux/amd64 image whose one layer is `layer_tar`
    /// (gzip-compressed here), for images of a chosen size (the benchmark).
    pub fn with_layer(layer_tar: Vec<u8>, line: &str) -> TestImage {
        let p = platform_image("amd64", None, layer_tar, serde_json::json!(["/bin/true"]));
        TestImage {
            root: p.manifest.clone(),
            platforms: vec![p],
            line: line.to_owned(),
        }
    }

    /// A stand-in for the sandbox ("pause") image: single-platform
    /// linux/amd64, busybox, entrypoint `/bin/busybox sleep 2147483647`, so a
    /// pod sandbox made of it stays up as the real `/pause` does.
    pub fn pause() -> TestImage {
        let image = amd64_with(serde_json::json!([BUSYBOX, "sleep", "2147483647"]));
        TestImage {
            root: image.manifest.clone(),
            platforms: vec![image],
            line: String::new(),
        }
    }

    /// A single-platform (linux/amd64) image: the root is its manifest.
    pub fn single(line: &str) -> TestImage {
        let image = amd64(line);
        TestImage {
            root: image.manifest.clone(),
            platforms: vec![image],
            line: line.to_owned(),
        }
    }

    /// A two-platform image: the root is an OCI index of the linux/amd64
    /// image of [`TestImage::single`] and a linux/arm64/v8 one (its own
    /// layer with `arm64.txt`, its own config).
    pub fn two_platform(line: &str) -> TestImage {
        let x86 = amd64(line);
        let arm = platform_image(
            "arm64",
            Some("v8"),
            tar(&[(
                "arm64.txt",
                0o644,
                format!("arm64 only: {line}\n").as_bytes(),
            )]),
            serde_json::json!(["/bin/cat", "/arm64.txt"]),
        );
        let entry = |p: &PlatformImage| {
            let mut d = p.manifest.descriptor();
            let mut platform = serde_json::json!({"architecture": p.architecture, "os": "linux"});
            if let Some(v) = &p.variant {
                platform["variant"] = v.clone().into();
            }
            d["platform"] = platform;
            d
        };
        let root = Blob::new(
            INDEX,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [entry(&x86), entry(&arm)],
            })
            .to_string()
            .into_bytes(),
        );
        TestImage {
            root,
            platforms: vec![x86, arm],
            line: line.to_owned(),
        }
    }

    /// The root's digest: what a spec's `digest` pins.
    pub fn digest(&self) -> &str {
        &self.root.digest
    }

    /// The image of `architecture`.
    pub fn platform(&self, architecture: &str) -> Option<&PlatformImage> {
        self.platforms
            .iter()
            .find(|p| p.architecture == architecture)
    }

    /// Every blob of the image (root, manifests, configs, layers), each once.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut out = vec![&self.root];
        for p in &self.platforms {
            for b in std::iter::once(&p.manifest)
                .chain(std::iter::once(&p.config))
                .chain(&p.layers)
            {
                if !out.iter().any(|o| o.digest == b.digest) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Pushes the image to `registry` as `REPOSITORY:TAG`: every config and
    /// layer, then each platform manifest by digest, then the root by tag.
    pub fn push(&self, registry: &Registry, repository: &str, tag: &str) {
        let client = client(registry);
        let base = registry.base_url();
        let auth = registry.authorization();
        let with_auth = |r: reqwest::blocking::RequestBuilder| match &auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        };
        for p in &self.platforms {
            for blob in std::iter::once(&p.config).chain(&p.layers) {
                let start =
                    with_auth(client.post(format!("{base}/v2/{repository}/blobs/uploads/")))
                        .send()
                        .expect("start upload");
                assert_eq!(
                    start.status().as_u16(),
                    202,
                    "start upload: {:?}",
                    start.text()
                );
                let location = start
                    .headers()
                    .get("Location")
                    .and_then(|l| l.to_str().ok())
                    .expect("upload Location")
                    .to_owned();
                let url = if location.starts_with('/') {
                    format!("{base}{location}")
                } else {
                    location
                };
                let sep = if url.contains('?') { '&' } else { '?' };
                let put = with_auth(client.put(format!("{url}{sep}digest={}", blob.digest)))
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.clone())
                    .send()
                    .expect("upload blob");
                assert_eq!(
                    put.status().as_u16(),
                    201,
                    "upload {}: {:?}",
                    blob.digest,
                    put.text()
                );
            }
        }
        let put_manifest = |blob: &Blob, reference: &str| {
            let r = with_auth(client.put(format!("{base}/v2/{repository}/manifests/{reference}")))
                .header("Content-Type", &blob.media_type)
                .body(blob.bytes.clone())
                .send()
                .expect("put manifest");
            assert_eq!(
                r.status().as_u16(),
                201,
                "put manifest {reference}: {:?}",
                r.text()
            );
        };
        for p in &self.platforms {
            if p.manifest.digest != self.root.digest {
                put_manifest(&p.manifest, &p.manifest.digest);
            }
        }
        put_manifest(&self.root, tag);
    }

    /// Writes the whole image (every platform) as an OCI image layout
    /// directory with `index.json` naming the root `ref_name` (for `skopeo
    /// copy oci:DIR:REF_NAME …` or `ctr images import` of its tar).
    pub fn write_layout(&self, dir: &Path, ref_name: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        for b in self.blobs() {
            std::fs::write(blobs.join(b.hex()), &b.bytes).expect("blob");
        }
        let mut d = self.root.descriptor();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": ref_name});
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [d]});
        std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    }
}

/// An HTTP client that trusts `registry`'s test CA.
fn client(registry: &Registry) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(ca) = registry.ca_file() {
        let pem = std::fs::read(ca).expect("read CA");
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
    }
    b.build().expect("HTTP client")
}
