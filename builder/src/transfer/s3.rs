//! S3 (and S3-compatible stores) through `object_store`'s AWS backend.
//!
//! Configuration, as the AWS CLI reads it:
//!
//! * profile: `$AWS_PROFILE`, else `default`;
//! * credentials: `$AWS_ACCESS_KEY_ID` and `$AWS_SECRET_ACCESS_KEY` (and
//!   `$AWS_SESSION_TOKEN`), else `aws_access_key_id`/`aws_secret_access_key`
//!   (`aws_session_token`) of the profile in `$AWS_SHARED_CREDENTIALS_FILE`
//!   (`~/.aws/credentials`, section `[NAME]`), else in `$AWS_CONFIG_FILE`
//!   (`~/.aws/config`, section `[profile NAME]`, or `[default]`);
//!   web-identity and container credentials (`$AWS_WEB_IDENTITY_TOKEN_FILE`,
//!   `$AWS_CONTAINER_CREDENTIALS_*`) are left to `object_store`;
//! * region: `$AWS_REGION`, `$AWS_DEFAULT_REGION`, the profile's `region`,
//!   else `us-east-1`;
//! * endpoint: `$AWS_ENDPOINT_URL_S3`, `$AWS_ENDPOINT_URL`, the profile's
//!   `endpoint_url`, else AWS. Requests are path-style (`ENDPOINT/BUCKET/KEY`),
//!   which S3-compatible stores (MinIO, Ceph RGW, moto) serve; plain HTTP
//!   only when the endpoint says `http://`.
//!
//! Uploads larger than one part use a multipart upload whose parts are sent
//! `jobs` at a time (aborted on failure). Downloads are ranged GETs of
//! part-sized chunks, `jobs` at a time, into `.OUT.pull` beside the output,
//! with the chunks done recorded in `.OUT.pull.json`: an interrupted pull run
//! again fetches only what is missing, as long as the object's ETag is the
//! same.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartUpload as _, ObjectStore as _, PutPayload,
    RetryConfig,
};
use serde::{Deserialize, Serialize};

use super::{Download, LocalBundle, Pushed, TransferError, TransferOptions};

/// Part size when none is given: 64 MiB.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest detached signature accepted.
const MAX_SIGNATURE_BYTES: usize = 64 << 10;

/// Where the credentials came from (for error messages; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `$AWS_ACCESS_KEY_ID` / `$AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// A profile in a file.
    Profile {
        /// The profile.
        profile: String,
        /// The file.
        file: PathBuf,
    },
    /// Left to object_store (web identity, container credentials).
    Provider,
}

/// The S3 configuration of the environment and profile files.
#[derive(Clone)]
pub struct S3Config {
    /// The profile used.
    pub profile: String,
    /// Access key id.
    pub access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    /// Where the credentials came from (`None`: there are none).
    pub credential_source: Option<CredentialSource>,
    /// The region.
    pub region: String,
    /// The endpoint, when not AWS's.
    pub endpoint: Option<String>,
    /// The files read (for hints).
    pub config_file: Option<PathBuf>,
    /// The credentials file.
    pub credentials_file: Option<PathBuf>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("profile", &self.profile)
            .field("access_key_id", &self.access_key_id)
            .field("credential_source", &self.credential_source)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The `key = value` pairs of section `[section]` of an AWS INI file, if
/// the file and section exist. Indented lines (nested settings such as
/// `s3 =\n  max_concurrent_requests = 4`) and comments are skipped.
pub fn read_ini_section(
    path: &Path,
    section: &str,
) -> Result<Option<HashMap<String, String>>, std::io::Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(parse_ini_section(&text, section))
}

fn parse_ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut found: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = name == section;
            if inside && found.is_none() {
                found = Some(HashMap::new());
            }
            continue;
        }
        if !inside {
            continue;
        }
        if let (Some(map), Some((k, v))) = (found.as_mut(), t.split_once('=')) {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    found
}

impl S3Config {
    /// Reads the process environment and the profile files.
    pub fn from_env() -> Result<S3Config, TransferError> {
        S3Config::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads configuration through `env` (a variable's value).
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<S3Config, TransferError> {
        let home = env("HOME").map(PathBuf::from);
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let config_file = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join("config")));
        let credentials_file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join("credentials")));
        let read = |file: &Option<PathBuf>, section: &str| -> Result<_, TransferError> {
            match file {
                Some(p) => read_ini_section(p, section)
                    .map(|s| s.map(|s| (p.clone(), s)))
                    .map_err(|source| TransferError::Io {
                        path: p.clone(),
                        source,
                    }),
                None => Ok(None),
            }
        };
        let config_section = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        let config = read(&config_file, &config_section)?;
        let creds = read(&credentials_file, &profile)?;
        let explicit_profile = env("AWS_PROFILE").is_some();
        if explicit_profile && config.is_none() && creds.is_none() {
            return Err(TransferError::Url {
                url: format!("AWS_PROFILE={profile}"),
                reason: format!(
                    "no such profile: neither [{profile}] in {} nor [{config_section}] in {}",
                    show(&credentials_file),
                    show(&config_file)
                ),
            });
        }
        let get = |key: &str| {
            config
                .as_ref()
                .and_then(|(_, s)| s.get(key).cloned())
                .filter(|v| !v.is_empty())
        };

        let mut cfg = S3Config {
            profile: profile.clone(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            credential_source: None,
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .or_else(|| get("region"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint: env("AWS_ENDPOINT_URL_S3")
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .or_else(|| get("endpoint_url")),
            config_file: config_file.clone(),
            credentials_file: credentials_file.clone(),
        };
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            cfg.access_key_id = Some(id);
            cfg.secret_access_key = Some(secret);
            cfg.session_token = env("AWS_SESSION_TOKEN");
            cfg.credential_source = Some(CredentialSource::Environment);
            return Ok(cfg);
        }
        for (file, section) in [&creds, &config].into_iter().flatten() {
            let value = |k: &str| section.get(k).cloned().filter(|v| !v.is_empty());
            if let (Some(id), Some(secret)) =
                (value("aws_access_key_id"), value("aws_secret_access_key"))
            {
                cfg.access_key_id = Some(id);
                cfg.secret_access_key = Some(secret);
                cfg.session_token = value("aws_session_token");
                cfg.credential_source = Some(CredentialSource::Profile {
                    profile: profile.clone(),
                    file: file.clone(),
                });
                return Ok(cfg);
            }
        }
        if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        {
            cfg.credential_source = Some(CredentialSource::Provider);
        }
        Ok(cfg)
    }

    /// What to check when the store refuses the credentials.
    pub fn credentials_hint(&self) -> String {
        let profile_files = format!(
            "aws_access_key_id and aws_secret_access_key of profile {:?} in {} (AWS_PROFILE selects the profile)",
            self.profile,
            show(&self.credentials_file)
        );
        match &self.credential_source {
            Some(CredentialSource::Environment) => format!(
                "the store refused access key {} from AWS_ACCESS_KEY_ID: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), and that this key may access the bucket",
                self.access_key_id.as_deref().unwrap_or("-")
            ),
            Some(CredentialSource::Profile { profile, file }) => format!(
                "the store refused access key {} of profile {profile:?} from {}: check aws_access_key_id and aws_secret_access_key there, and that this key may access the bucket",
                self.access_key_id.as_deref().unwrap_or("-"),
                file.display()
            ),
            Some(CredentialSource::Provider) => {
                "the store refused the web-identity or container credentials: check the role's permissions on the bucket".to_owned()
            }
            None => format!(
                "no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or {profile_files}"
            ),
        }
    }

    fn store(&self, url: &str, bucket: &str) -> Result<AmazonS3, TransferError> {
        if self.credential_source.is_none() {
            return Err(TransferError::Denied {
                url: url.to_owned(),
                reason: "no AWS credentials".to_owned(),
                hint: self.credentials_hint(),
            });
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(180),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(30))
                    // A whole part (up to 5 GiB) must fit in one request.
                    .with_timeout(Duration::from_secs(3600))
                    .with_allow_http(
                        self.endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = &self.session_token {
                b = b.with_token(t);
            }
        } else {
            // Web identity or container credentials: object_store reads them.
            for (k, v) in std::env::vars() {
                if (k.starts_with("AWS_WEB_IDENTITY")
                    || k.starts_with("AWS_ROLE")
                    || k.starts_with("AWS_CONTAINER"))
                    && let Ok(key) = k.to_ascii_lowercase().parse()
                {
                    b = b.with_config(key, v);
                }
            }
        }
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        b.build().map_err(|e| TransferError::Remote {
            url: url.to_owned(),
            reason: format!(
                "cannot set up the S3 client (region {}, endpoint {}): {e}",
                self.region,
                self.endpoint.as_deref().unwrap_or("AWS")
            ),
        })
    }
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "(no $HOME)".to_owned(), |p| p.display().to_string())
}

/// The S3 error code and message in an error's text (`<Code>…</Code>`),
/// else the text.
fn summarize(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    let status = text.find("status code: ").map(|i| {
        let rest = &text[i + "status code: ".len()..];
        format!("HTTP {}", rest.split(':').next().unwrap_or(rest).trim())
    });
    match (status, tag("Code"), tag("Message")) {
        (Some(s), Some(c), Some(m)) => format!("{s}, {c}: {m}"),
        (Some(s), Some(c), None) => format!("{s}, {c}"),
        (None, Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(s), None, _) => s,
        _ => text.to_owned(),
    }
}

/// What an operation was, for hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Push,
    Pull,
}

fn remote_error(url: &str, cfg: &S3Config, op: Op, e: object_store::Error) -> TransferError {
    let text = summarize(&e.to_string());
    match e {
        object_store::Error::NotFound { .. } => TransferError::NotFound {
            url: url.to_owned(),
            hint: if text.contains("NoSuchBucket") {
                format!(
                    "check the bucket name{} (endpoint {}, region {})",
                    if op == Op::Push {
                        ", or create the bucket first (aws s3 mb s3://BUCKET)"
                    } else {
                        ""
                    },
                    cfg.endpoint.as_deref().unwrap_or("AWS"),
                    cfg.region
                )
            } else {
                "check the key, or push the bundle there first with `bundler push BUNDLE URL`"
                    .to_owned()
            },
            reason: text,
        },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => TransferError::Denied {
            url: url.to_owned(),
            reason: text,
            hint: cfg.credentials_hint(),
        },
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") => {
            TransferError::Denied {
                url: url.to_owned(),
                reason: text,
                hint: cfg.credentials_hint(),
            }
        }
        _ => TransferError::Remote {
            url: url.to_owned(),
            reason: text,
        },
    }
}

fn runtime(url: &str, jobs: usize) -> Result<tokio::runtime::Runtime, TransferError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(1, 4))
        .enable_all()
        .build()
        .map_err(|e| TransferError::Remote {
            url: url.to_owned(),
            reason: format!("cannot start the async runtime: {e}"),
        })
}

fn object_path(url: &str, key: &str) -> Result<ObjectPath, TransferError> {
    ObjectPath::parse(key).map_err(|e| TransferError::Url {
        url: url.to_owned(),
        reason: format!("the key is not usable as an object path: {e}"),
    })
}

/// The part size for an object of `size` bytes.
pub fn part_size(requested: Option<u64>, size: u64) -> u64 {
    let least = size.div_ceil(MAX_PARTS).max(MIN_PART_SIZE);
    requested
        .unwrap_or(DEFAULT_PART_SIZE)
        .clamp(least, MAX_PART_SIZE.max(least))
}

/// Uploads the bundle to `s3://bucket/key` and its signature to
/// `s3://bucket/key.minisig`.
pub fn push(
    bundle: &LocalBundle,
    bucket: &str,
    key: &str,
    opts: &TransferOptions,
) -> Result<Pushed, TransferError> {
    let url = format!("s3://{bucket}/{key}");
    let cfg = S3Config::from_env()?;
    let store = cfg.store(&url, bucket)?;
    let path = object_path(&url, key)?;
    let sig_path = object_path(&url, &format!("{key}.minisig"))?;
    let part = part_size(opts.part_size, bundle.size);
    let jobs = opts.jobs.max(1);
    let rt = runtime(&url, jobs)?;
    let io = |source| TransferError::Io {
        path: bundle.path.clone(),
        source,
    };
    let remote = |e| remote_error(&url, &cfg, Op::Push, e);
    let mut file = File::open(&bundle.path).map_err(io)?;
    let parts = rt.block_on(async {
        if bundle.size <= part {
            let mut data = Vec::with_capacity(bundle.size as usize);
            file.read_to_end(&mut data).map_err(io)?;
            store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(remote)?;
            return Ok::<usize, TransferError>(1);
        }
        let mut upload = store.put_multipart(&path).await.map_err(remote)?;
        let count = bundle.size.div_ceil(part);
        let result: Result<(), TransferError> = async {
            let mut inflight = FuturesUnordered::new();
            for i in 0..count {
                let len = part.min(bundle.size - i * part) as usize;
                let mut data = vec![0u8; len];
                file.read_exact(&mut data).map_err(io)?;
                inflight.push(upload.put_part(PutPayload::from(data)));
                while inflight.len() >= jobs {
                    if let Some(r) = inflight.next().await {
                        r.map_err(remote)?;
                    }
                }
            }
            while let Some(r) = inflight.next().await {
                r.map_err(remote)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await.map_err(remote)?;
        Ok(count as usize)
    })?;
    rt.block_on(store.put(
        &sig_path,
        PutPayload::from(bundle.signature.clone().into_bytes()),
    ))
    .map_err(|e| remote_error(&format!("{url}.minisig"), &cfg, Op::Push, e))?;
    Ok(Pushed {
        url,
        size: bundle.size,
        parts,
        digest: None,
    })
}

/// What an interrupted pull left: which chunks of which object are done.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ResumeState {
    url: String,
    etag: Option<String>,
    size: u64,
    chunk: u64,
    done: BTreeSet<u64>,
}

/// Downloads `s3://bucket/key` into a file beside `out` (resuming an
/// interrupted pull of the same object), and its detached signature.
pub(super) fn download(
    bucket: &str,
    key: &str,
    out: &Path,
    dir: &Path,
    opts: &TransferOptions,
) -> Result<(Download, String, usize), TransferError> {
    let url = format!("s3://{bucket}/{key}");
    let sig_url = format!("{url}.minisig");
    let cfg = S3Config::from_env()?;
    let store = Arc::new(cfg.store(&url, bucket)?);
    let path = object_path(&url, key)?;
    let sig_path = object_path(&url, &format!("{key}.minisig"))?;
    let jobs = opts.jobs.max(1);
    let rt = runtime(&url, jobs)?;
    let remote = |e| remote_error(&url, &cfg, Op::Pull, e);

    let meta = rt.block_on(store.head(&path)).map_err(remote)?;
    let signature = rt
        .block_on(async { store.get(&sig_path).await?.bytes().await })
        .map_err(|e| match remote_error(&sig_url, &cfg, Op::Pull, e) {
            TransferError::NotFound { url, reason, .. } => TransferError::NotFound {
                url,
                reason,
                hint: "the bundle's detached signature is missing: `bundler push` uploads KEY and KEY.minisig together; push again".to_owned(),
            },
            other => other,
        })?;
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(TransferError::Verify {
            url: sig_url,
            reason: format!("the signature is larger than {MAX_SIGNATURE_BYTES} bytes"),
        });
    }
    let signature = String::from_utf8(signature.to_vec()).map_err(|_| TransferError::Verify {
        url: sig_url.clone(),
        reason: "the detached signature is not text".to_owned(),
    })?;

    let name = out
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
    let data_path = dir.join(format!(".{name}.pull"));
    let state_path = dir.join(format!(".{name}.pull.json"));
    let chunk = part_size(opts.part_size, meta.size);
    let fresh = ResumeState {
        url: url.clone(),
        etag: meta.e_tag.clone(),
        size: meta.size,
        chunk,
        done: BTreeSet::new(),
    };
    let previous: Option<ResumeState> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let io_at = |p: &Path| {
        let p = p.to_owned();
        move |source| TransferError::Io { path: p, source }
    };
    let (mut state, file) = match previous {
        Some(s)
            if s.url == fresh.url
                && s.etag == fresh.etag
                && s.etag.is_some()
                && s.size == fresh.size
                && s.chunk == fresh.chunk
                && std::fs::metadata(&data_path).is_ok_and(|m| m.len() == fresh.size) =>
        {
            let f = OpenOptions::new()
                .write(true)
                .open(&data_path)
                .map_err(io_at(&data_path))?;
            (s, f)
        }
        _ => {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&data_path)
                .map_err(io_at(&data_path))?;
            f.set_len(fresh.size).map_err(io_at(&data_path))?;
            (fresh, f)
        }
    };
    let resumed = state.done.len();
    let file = Arc::new(file);
    let count = meta.size.div_ceil(chunk);
    let todo: Vec<u64> = (0..count).filter(|i| !state.done.contains(i)).collect();
    let save = |s: &ResumeState| -> Result<(), TransferError> {
        let bytes = serde_json::to_vec(s).unwrap_or_default();
        std::fs::write(&state_path, bytes).map_err(io_at(&state_path))
    };
    save(&state)?;
    let result: Result<(), TransferError> = rt.block_on(async {
        let mut inflight = FuturesUnordered::new();
        let mut pending = todo.into_iter();
        loop {
            while inflight.len() < jobs {
                let Some(i) = pending.next() else { break };
                let store = store.clone();
                let path = path.clone();
                let file = file.clone();
                let etag = meta.e_tag.clone();
                let start = i * chunk;
                let end = (start + chunk).min(meta.size);
                let data_path = data_path.clone();
                inflight.push(tokio::spawn(async move {
                    let got = store
                        .get_opts(
                            &path,
                            GetOptions {
                                range: Some(GetRange::Bounded(start..end)),
                                ..GetOptions::default()
                            },
                        )
                        .await
                        .map_err(ChunkError::Remote)?;
                    if got.meta.e_tag != etag {
                        return Err(ChunkError::Changed);
                    }
                    let mut stream = got.into_stream();
                    let mut at = start;
                    while let Some(bytes) = stream.next().await {
                        let bytes = bytes.map_err(ChunkError::Remote)?;
                        if at + bytes.len() as u64 > end {
                            return Err(ChunkError::Changed);
                        }
                        file.write_all_at(&bytes, at)
                            .map_err(|e| ChunkError::Io(data_path.clone(), e))?;
                        at += bytes.len() as u64;
                    }
                    if at != end {
                        return Err(ChunkError::Short(at - start, end - start));
                    }
                    Ok::<u64, ChunkError>(i)
                }));
            }
            let Some(joined) = inflight.next().await else {
                break;
            };
            let done = joined
                .map_err(|e| ChunkError::Io(data_path.clone(), std::io::Error::other(e)))
                .and_then(|r| r);
            match done {
                Ok(i) => {
                    state.done.insert(i);
                    save(&state)?;
                }
                Err(e) => {
                    // Let the other chunks finish (they are kept for a resume).
                    while let Some(j) = inflight.next().await {
                        if let Ok(Ok(i)) = j {
                            state.done.insert(i);
                        }
                    }
                    save(&state)?;
                    return Err(match e {
                        ChunkError::Remote(e) => remote(e),
                        ChunkError::Io(p, source) => TransferError::Io { path: p, source },
                        ChunkError::Changed => {
                            let _ = std::fs::remove_file(&state_path);
                            TransferError::Remote {
                                url: url.clone(),
                                reason: "the object changed during the download (its ETag differs); run the pull again".to_owned(),
                            }
                        }
                        ChunkError::Short(got, want) => TransferError::Remote {
                            url: url.clone(),
                            reason: format!("a ranged GET returned {got} of {want} bytes"),
                        },
                    });
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        return Err(match e {
            TransferError::Remote { url, reason } => TransferError::Remote {
                url,
                reason: format!(
                    "{reason}; {} of {count} chunks are kept in {}: run the same pull again to resume",
                    state.done.len(),
                    data_path.display()
                ),
            },
            other => other,
        });
    }
    file.sync_all().map_err(io_at(&data_path))?;
    Ok((
        Download {
            path: data_path,
            companions: vec![state_path],
        },
        signature,
        resumed,
    ))
}

#[derive(Debug)]
enum ChunkError {
    Remote(object_store::Error),
    Io(PathBuf, std::io::Error),
    Changed,
    Short(u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_credentials_come_before_the_profile_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\n[ci]\naws_access_key_id=CIKEY\naws_secret_access_key=cisecret\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n# comment\n[profile ci]\nregion = eu-central-1\nendpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();

        let env = S3Config::from_lookup(lookup(&[
            ("HOME", &home),
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ]))
        .unwrap();
        assert_eq!(env.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(env.credential_source, Some(CredentialSource::Environment));
        assert_eq!(env.region, "eu-west-1");
        assert_eq!(env.endpoint, None);
        assert!(!format!("{env:?}").contains("envsecret"));

        let file = S3Config::from_lookup(lookup(&[("HOME", &home)])).unwrap();
        assert_eq!(file.access_key_id.as_deref(), Some("FILEKEY"));

        let ci = S3Config::from_lookup(lookup(&[("HOME", &home), ("AWS_PROFILE", "ci")])).unwrap();
        assert_eq!(ci.access_key_id.as_deref(), Some("CIKEY"));
        assert_eq!(ci.region, "eu-central-1");
        assert_eq!(ci.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(ci.credentials_hint().contains("profile \"ci\""));

        let over = S3Config::from_lookup(lookup(&[
            ("HOME", &home),
            ("AWS_PROFILE", "ci"),
            ("AWS_REGION", "ap-south-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5555"),
        ]))
        .unwrap();
        assert_eq!(over.region, "ap-south-1");
        assert_eq!(over.endpoint.as_deref(), Some("http://127.0.0.1:5555"));

        let e = S3Config::from_lookup(lookup(&[("HOME", &home), ("AWS_PROFILE", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such profile"), "{e}");

        let none = S3Config::from_lookup(lookup(&[("HOME", "/nonexistent")])).unwrap();
        assert_eq!(none.credential_source, None);
        assert_eq!(none.region, "us-east-1");
        assert!(none.credentials_hint().contains("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn part_size_stays_within_s3_limits() {
        assert_eq!(part_size(None, 1 << 30), DEFAULT_PART_SIZE);
        assert_eq!(part_size(Some(1 << 20), 1 << 30), MIN_PART_SIZE);
        assert_eq!(part_size(Some(8 << 20), 1 << 30), 8 << 20);
        // 1 TiB in 64 MiB parts would be 16384 parts: raised.
        let big = 1u64 << 40;
        assert!(big.div_ceil(part_size(None, big)) <= MAX_PARTS);
    }

    #[test]
    fn s3_error_bodies_are_summarized_to_code_and_message() {
        let text = "Generic S3 error: Error performing PUT http://x/b/k in 1ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>";
        assert_eq!(
            summarize(text),
            "HTTP 403 Forbidden, InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
        );
        assert_eq!(summarize("connection refused"), "connection refused");
        assert_eq!(
            summarize(
                "Error performing HEAD http://x/b/k in 2ms - Server returned non-2xx status code: 403 Forbidden: "
            ),
            "HTTP 403 Forbidden"
        );
    }
}
