//! Parallel downloads into the content-addressed [`Cache`].
//!
//! [`fetch_all`] fetches every requested artifact, at most
//! [`FetchOptions::jobs`] at once. Each artifact's bytes are hashed while they
//! are written to a partial file, and the file enters the cache only once its
//! SHA-256 (and size, when declared) matched the pin. Sources are tried in
//! order (primary, then mirrors); within one HTTP source, transient failures
//! are retried with exponential backoff and broken transfers resume with a
//! `Range` request.

use std::error::Error as StdError;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bundle_spec::Reporter;
use bundle_spec::Sha256Digest;
use bundle_spec::names::ArtifactName;
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderName, HeaderValue,
    IF_RANGE, LAST_MODIFIED, RANGE, RETRY_AFTER,
};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::cache::Cache;

/// The longest wait between two attempts, whatever the backoff base or a
/// server's `Retry-After` asks for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where an artifact's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An `http:` or `https:` URL.
    Http(Url),
    /// A local file (a spec's `file:` URL, already resolved by the caller
    /// relative to the spec's directory). Read through the same hashing and
    /// verification path as a download, without network.
    File(PathBuf),
    /// A path at a registry (an image's blob, `/v2/REPO/blobs/DIGEST`),
    /// requested with the `Authorization` header its endpoint supplies. A
    /// redirect to another host or port (a registry sending blobs to a CDN)
    /// does not carry the header: reqwest removes `Authorization` on such
    /// redirects.
    Registry {
        /// The registry (and repository) it is at.
        endpoint: Arc<dyn Endpoint>,
        /// The path below the registry's URL.
        path: String,
    },
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Source::Http(a), Source::Http(b)) => a == b,
            (Source::File(a), Source::File(b)) => a == b,
            (
                Source::Registry {
                    endpoint: x,
                    path: a,
                },
                Source::Registry {
                    endpoint: y,
                    path: b,
                },
            ) => a == b && Arc::ptr_eq(x, y),
            _ => false,
        }
    }
}

impl Eq for Source {}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http(url) => f.write_str(url.as_str()),
            Source::Registry { endpoint, path } => write!(f, "{}{path}", endpoint.name()),
            Source::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// A registry as a download source: its URLs and the `Authorization`
/// header of requests to it (a bearer token got from the registry's token
/// service, basic credentials, or none). Both may contact the registry the
/// first time, so they are asked only when something must be downloaded.
pub trait Endpoint: Send + Sync + fmt::Debug {
    /// The registry's name in messages (`registry.k8s.io`).
    fn name(&self) -> String;
    /// The URL of `path` there. An error fails the source with its text.
    fn url(&self, path: &str) -> Result<Url, String>;
    /// The header for the next request (`None`: send none). `renew` is true
    /// after the registry refused the last one (HTTP 401): an expired token
    /// must then be replaced. An error fails the source with its text.
    fn authorization(&self, renew: bool) -> Result<Option<HeaderValue>, String>;
}

/// One artifact to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The artifact's name, used in messages and errors.
    pub name: ArtifactName,
    /// The primary source first, then mirrors.
    pub sources: Vec<Source>,
    /// The pinned digest; `None` is pin mode: the content is stored under the
    /// digest computed while downloading.
    pub sha256: Option<Sha256Digest>,
    /// The declared size: a response announcing or sending more is cut off,
    /// and a different final size is an error.
    pub size: Option<u64>,
    /// What progress shows for it (default: the name).
    pub label: Option<String>,
}

/// How [`fetch_all`] downloads.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Downloads running at once (at least 1). Default 4.
    pub jobs: usize,
    /// Never use the network: artifacts missing from the cache are errors,
    /// unless a `file:` source provides them.
    pub offline: bool,
    /// Retries per source after the first attempt. Default 4.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, at most
    /// [`MAX_BACKOFF`]. Default 500 ms.
    pub backoff: Duration,
    /// Time allowed to establish a connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed without receiving anything (response headers or the next
    /// bytes of the body) before an attempt counts as failed. There is no
    /// limit on a transfer's total duration. Default 30 s.
    pub idle_timeout: Duration,
    /// The slowest transfer tolerated: an attempt that receives fewer than
    /// `min_rate.bytes_per_sec` on average over a whole `min_rate.window`
    /// counts as failed (and is retried, resuming), so that a live but
    /// uselessly slow trickle cannot hold a build forever. Default 1 KiB/s
    /// over 30 s; a rate of 0 turns it off.
    pub min_rate: MinRate,
    /// Certificates trusted for [`Source::Registry`] URLs besides the
    /// system's roots (`--registry-ca`). Artifact URLs ([`Source::Http`])
    /// trust the built-in (Mozilla) roots only.
    pub registry_roots: Vec<reqwest::Certificate>,
}

/// A lower bound on a transfer's speed (curl's `--speed-limit` and
/// `--speed-time`): see [`FetchOptions::min_rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, averaged over `window`; 0 means no bound.
    pub bytes_per_sec: u64,
    /// How long the average is taken over.
    pub window: Duration,
}

impl Default for MinRate {
    fn default() -> Self {
        Self {
            bytes_per_sec: 1024,
            window: Duration::from_secs(30),
        }
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            offline: false,
            retries: 4,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            min_rate: MinRate::default(),
            registry_roots: Vec::new(),
        }
    }
}

/// A verified artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The artifact's name.
    pub name: ArtifactName,
    /// The object's path in the cache (read-only).
    pub path: PathBuf,
    /// The content's SHA-256 (the pin, or in pin mode the computed digest).
    pub sha256: Sha256Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// The source used (URL, or `file:PATH`), or `"cache"`.
    pub source: String,
    /// Whether the content was already in the cache.
    pub from_cache: bool,
    /// The `Content-Type` the server sent with it (downloads only).
    pub content_type: Option<String>,
    /// The `Content-Encoding` the server sent with it (downloads only).
    /// bundler never decodes: the bytes are what the server sent.
    pub content_encoding: Option<String>,
}

/// Why one source failed to provide an artifact.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The content does not have the pinned digest.
    #[error("{name}: sha256 mismatch for {url}: expected {expected}, got {actual}; not cached")]
    Mismatch {
        /// The artifact.
        name: ArtifactName,
        /// The source.
        url: String,
        /// The pinned digest.
        expected: Sha256Digest,
        /// The digest of the bytes received.
        actual: Sha256Digest,
    },
    /// The content's size differs from the declared size.
    #[error("{name}: {url} has {actual} bytes, not the declared {expected}; not cached")]
    SizeMismatch {
        /// The artifact.
        name: ArtifactName,
        /// The source.
        url: String,
        /// The declared size.
        expected: u64,
        /// The size received or announced.
        actual: u64,
    },
    /// The source announced or sent more than the declared size; the
    /// transfer was stopped there.
    #[error("{name}: {url} {} more than the declared size of {limit} bytes; stopped, not cached",
        match announced { Some(n) => format!("announced {n} bytes,"), None => "sent".to_owned() })]
    TooLarge {
        /// The artifact.
        name: ArtifactName,
        /// The source.
        url: String,
        /// The declared size.
        limit: u64,
        /// The size the server announced, when it did (otherwise the body
        /// itself ran past the limit).
        announced: Option<u64>,
    },
    /// The server answered with an HTTP error status (the last one, after
    /// `attempts` tries).
    #[error("{name}: {url} answered HTTP {}{}", status_text(*status), after_attempts(*attempts))]
    Status {
        /// The artifact.
        name: ArtifactName,
        /// The source.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// Attempts made on this source.
        attempts: u32,
    },
    /// Connecting or transferring failed (the last reason, after `attempts`
    /// tries).
    #[error("{name}: {url}: {reason}{}", after_attempts(*attempts))]
    Transfer {
        /// The artifact.
        name: ArtifactName,
        /// The source.
        url: String,
        /// What went wrong on the last attempt.
        reason: String,
        /// Attempts made on this source.
        attempts: u32,
    },
    /// A size or digest mismatch of a response that had a `Content-Encoding`:
    /// the likely cause, which the message names with what to do.
    #[error("{error}{}", encoding_note(encoding))]
    Encoded {
        /// The response's `Content-Encoding` (`gzip`).
        encoding: String,
        /// The mismatch.
        error: Box<SourceError>,
    },
    /// A `file:` source could not be read.
    #[error("{name}: cannot read {}: {source}", path.display())]
    File {
        /// The artifact.
        name: ArtifactName,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why one artifact could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not in the cache, and `offline` forbids downloading.
    #[error("{name}: not in the cache, and --offline forbids downloading it")]
    Offline {
        /// The artifact.
        name: ArtifactName,
    },
    /// The request lists no source.
    #[error("{name}: no source to fetch it from")]
    NoSource {
        /// The artifact.
        name: ArtifactName,
    },
    /// Every source failed; one entry per source, in order.
    #[error("{}", sources_text(name, failures))]
    Sources {
        /// The artifact.
        name: ArtifactName,
        /// Each source's failure.
        failures: Vec<SourceError>,
    },
    /// The cached object has the pinned digest, so the declared size is wrong.
    #[error(
        "{name}: the declared size is {expected} bytes, but the content with the pinned sha256 ({}) has {actual}",
        path.display()
    )]
    CachedSize {
        /// The artifact.
        name: ArtifactName,
        /// The cached object.
        path: PathBuf,
        /// The declared size.
        expected: u64,
        /// The object's size.
        actual: u64,
    },
    /// A file in the cache could not be read, written or moved.
    #[error("{name}: cannot {action} {}: {source}", path.display())]
    Local {
        /// The artifact.
        name: ArtifactName,
        /// What was being done (`"write"`, `"store in the cache"`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("{name}: cannot set up the HTTP client: {reason}")]
    Client {
        /// The artifact.
        name: ArtifactName,
        /// Why.
        reason: String,
    },
}

impl FetchError {
    /// The artifact this error is about.
    pub fn name(&self) -> &ArtifactName {
        match self {
            FetchError::Offline { name }
            | FetchError::NoSource { name }
            | FetchError::Sources { name, .. }
            | FetchError::CachedSize { name, .. }
            | FetchError::Local { name, .. }
            | FetchError::Client { name, .. } => name,
        }
    }
}

/// The failures of [`fetch_all`]: one error per failed artifact (in request
/// order), and the artifacts that did succeed. Displayed one error per line.
#[derive(Debug)]
pub struct FetchErrors {
    /// One error per failed artifact.
    pub errors: Vec<FetchError>,
    /// The artifacts fetched successfully (already in the cache).
    pub fetched: Vec<Fetched>,
}

impl fmt::Display for FetchErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl StdError for FetchErrors {}

/// The explanation added to a size or digest mismatch when the response
/// was content-encoded: the operator can act on the cause, not on two hashes.
fn encoding_note(e: &str) -> String {
    format!(
        "\n  the response had Content-Encoding: {e}: the server (or a proxy) compressed the \
             file on the fly, and bundler does not decode content codings, so these are the \
             encoded bytes, not the file; fix the server or proxy to send the file as it is \
             (no Content-Encoding), use a mirror that does, or, if the encoded form is what you \
             want to install, pin what the server sends (remove sha256 and size, run `bundler pin`)"
    )
}

/// `error`, wrapped in [`SourceError::Encoded`] when the response had a
/// content coding (other than `identity`).
fn with_encoding(error: SourceError, encoding: Option<&str>) -> SourceError {
    match encoding {
        Some(e) if !e.is_empty() && !e.eq_ignore_ascii_case("identity") => SourceError::Encoded {
            encoding: e.to_owned(),
            error: Box::new(error),
        },
        _ => error,
    }
}

fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn after_attempts(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn sources_text(name: &ArtifactName, failures: &[SourceError]) -> String {
    match failures {
        [one] => one.to_string(),
        _ => {
            let mut out = format!("{name}: all {} sources failed:", failures.len());
            let prefix = format!("{name}: ");
            for (i, failure) in failures.iter().enumerate() {
                let text = failure.to_string();
                let text = text.strip_prefix(&prefix).unwrap_or(&text);
                out.push_str(&format!(" [{}] {text}", i + 1));
            }
            out
        }
    }
}

/// Fetches every request into `cache`, at most `opts.jobs` at once, and
/// returns the results in request order. Every request is attempted even when
/// others fail; on any failure the error holds one entry per failed artifact.
pub fn fetch_all(
    reqs: Vec<FetchRequest>,
    cache: &Cache,
    opts: &FetchOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<Fetched>, FetchErrors> {
    let fetcher = Fetcher {
        cache,
        opts,
        reporter,
        client: OnceLock::new(),
        registry_client: OnceLock::new(),
    };
    let next = AtomicUsize::new(0);
    let workers = opts.jobs.max(1).min(reqs.len());
    let mut results: Vec<Option<Result<Fetched, FetchError>>> =
        std::iter::repeat_with(|| None).take(reqs.len()).collect();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(req) = reqs.get(i) else { break };
                        done.push((i, fetcher.fetch_one(req)));
                    }
                    done
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(done) => {
                    for (i, result) in done {
                        results[i] = Some(result);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    let mut fetched = Vec::with_capacity(reqs.len());
    let mut errors = Vec::new();
    for result in results {
        match result.expect("every request was handled by a worker") {
            Ok(f) => fetched.push(f),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(fetched)
    } else {
        Err(FetchErrors { errors, fetched })
    }
}

struct Fetcher<'a> {
    cache: &'a Cache,
    opts: &'a FetchOptions,
    reporter: &'a dyn Reporter,
    client: OnceLock<Result<Client, String>>,
    registry_client: OnceLock<Result<Client, String>>,
}

/// Why one source failed, as seen by the source loop.
enum Failure {
    /// Try the next source; `bad_bytes`: the partial file holds content from
    /// this source that must be discarded.
    Source { error: SourceError, bad_bytes: bool },
    /// A local problem that no other source can fix.
    Local(FetchError),
}

/// How one HTTP attempt ended, when not successfully.
enum Attempt {
    /// Transient: worth another attempt on the same source.
    Retry {
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The server cannot resume from our offset: start again from 0 (does not
    /// count as a failed attempt).
    RestartFromZero(String),
    /// Give up on this source.
    Fail(Failure),
    /// HTTP 401: a registry's token may have expired.
    Unauthorized,
}

/// How copying a body into the partial file ended, when not at its end.
enum PumpError {
    Read(io::Error),
    TooLarge,
    /// Fewer than `bytes` arrived during `window` ([`MinRate`]).
    TooSlow {
        received: u64,
        window: Duration,
    },
    Write(io::Error),
}

/// Progress bookkeeping for one artifact's transfer.
struct Transfer {
    id: usize,
    started: bool,
}

impl Transfer {
    /// Called before every attempt: all but the very first (from 0) report a
    /// restart from the partial file's current length.
    fn attempt(&mut self, reporter: &dyn Reporter, offset: u64) {
        if self.started || offset > 0 {
            reporter.on_restart(self.id, offset);
        }
        self.started = true;
    }
}

impl Fetcher<'_> {
    fn fetch_one(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        let name = &req.name;
        if req.sources.is_empty() {
            return Err(FetchError::NoSource { name: name.clone() });
        }
        if let Some(expected) = &req.sha256
            && let Some(hit) = self.cached(req, expected)?
        {
            return Ok(hit);
        }
        let sources: Vec<&Source> = req
            .sources
            .iter()
            .filter(|s| !self.opts.offline || matches!(s, Source::File(_)))
            .collect();
        if sources.is_empty() {
            return Err(FetchError::Offline { name: name.clone() });
        }

        // In pinned mode one partial file, named by the digest, serves every
        // source (the content is the same), and survives a failed run to be
        // resumed. Holding its lock also keeps a second download of the same
        // content (another artifact or process) from running at once.
        let mut shared = None;
        if let Some(expected) = &req.sha256 {
            let path = self.cache.partial_path(&expected.to_hex());
            let mut partial =
                Partial::open(path.clone(), true).map_err(local(name, "open", &path))?;
            // Someone else may have finished it while we waited for the lock.
            if let Some(hit) = self.cached(req, expected)? {
                return Ok(hit);
            }
            if partial.len > 0 {
                if req.size.is_some_and(|size| partial.len > size) {
                    partial.reset().map_err(local(name, "truncate", &path))?;
                } else if partial.digest() == *expected
                    && req.size.is_none_or(|size| size == partial.len)
                {
                    // A download completed by an earlier run but never stored.
                    let size = partial.len;
                    let stored = self.store(&mut partial, req, expected)?;
                    return Ok(Fetched {
                        name: name.clone(),
                        path: stored,
                        sha256: *expected,
                        size,
                        source: "cache".to_owned(),
                        from_cache: true,
                        content_type: None,
                        content_encoding: None,
                    });
                }
            }
            shared = Some(partial);
        }

        let mut transfer = Transfer {
            id: self
                .reporter
                .on_start(req.label.as_deref().unwrap_or(name.as_str()), req.size),
            started: false,
        };
        let result = self.try_sources(req, &sources, shared.as_mut(), &mut transfer);
        self.reporter.on_finish(transfer.id);
        result
    }

    /// The cached object for `expected`, if there is a usable one.
    fn cached(
        &self,
        req: &FetchRequest,
        expected: &Sha256Digest,
    ) -> Result<Option<Fetched>, FetchError> {
        let name = &req.name;
        let Some(path) = self.cache.lookup(expected) else {
            return Ok(None);
        };
        let len = fs::metadata(&path)
            .map_err(local(name, "read", &path))?
            .len();
        if let Some(size) = req.size
            && size != len
        {
            // Either the declared size is wrong or the object is damaged:
            // its digest tells which.
            let (actual, _) = File::open(&path)
                .and_then(Sha256Digest::of_reader)
                .map_err(local(name, "read", &path))?;
            if actual == *expected {
                return Err(FetchError::CachedSize {
                    name: name.clone(),
                    path,
                    expected: size,
                    actual: len,
                });
            }
            self.reporter.on_message(&format!(
                "{name}: the cached object {} is damaged (its sha256 is {actual}); removing it and downloading again",
                path.display()
            ));
            fs::remove_file(&path).map_err(local(name, "remove", &path))?;
            return Ok(None);
        }
        Ok(Some(Fetched {
            name: name.clone(),
            path,
            sha256: *expected,
            size: len,
            source: "cache".to_owned(),
            from_cache: true,
            content_type: None,
            content_encoding: None,
        }))
    }

    /// Tries each source in turn until one yields verified content.
    fn try_sources(
        &self,
        req: &FetchRequest,
        sources: &[&Source],
        mut shared: Option<&mut Partial>,
        transfer: &mut Transfer,
    ) -> Result<Fetched, FetchError> {
        let name = &req.name;
        let mut failures = Vec::new();
        'sources: for (i, source) in sources.iter().enumerate() {
            let url = source.to_string();
            let next = sources.get(i + 1);
            let mut own = None;
            let partial: &mut Partial = match shared.as_deref_mut() {
                Some(partial) => {
                    // Bytes left by an earlier source or run: a mismatch
                    // then may be theirs, not this source's.
                    partial.inherited = partial.len > 0;
                    partial
                }
                None => {
                    // Pin mode: nothing to check a resumed prefix against, so
                    // each source starts from an empty partial of its own.
                    let key = format!("url-{}", Sha256Digest::of(url.as_bytes()).to_hex());
                    let path = self.cache.partial_path(&key);
                    let partial = own.insert(
                        Partial::open(path.clone(), false).map_err(local(name, "open", &path))?,
                    );
                    partial.reset().map_err(local(name, "truncate", &path))?;
                    partial
                }
            };
            loop {
                let got = match source {
                    Source::Http(u) => self.http(req, u, None, partial, transfer),
                    Source::Registry { endpoint, path } => match endpoint.url(path) {
                        Ok(url) => self.http(req, &url, Some(endpoint.as_ref()), partial, transfer),
                        Err(reason) => Err(Failure::Source {
                            error: SourceError::Transfer {
                                name: name.clone(),
                                url: url.clone(),
                                reason,
                                attempts: 1,
                            },
                            bad_bytes: false,
                        }),
                    },
                    Source::File(path) => self.copy_file(req, path, partial, transfer),
                };
                let failure = match got {
                    Ok(()) => match self.check(req, &url, partial) {
                        Ok(digest) => {
                            let size = partial.len;
                            let path = self.store(partial, req, &digest)?;
                            return Ok(Fetched {
                                name: name.clone(),
                                path,
                                sha256: digest,
                                size,
                                source: url,
                                from_cache: false,
                                content_type: partial.content_type.clone(),
                                content_encoding: partial.content_encoding.clone(),
                            });
                        }
                        Err(error) if partial.inherited => {
                            self.reporter.on_message(&format!(
                                "{error} (after resuming an earlier partial download); restarting from 0"
                            ));
                            partial
                                .reset()
                                .map_err(local(name, "truncate", &partial.path))?;
                            continue;
                        }
                        Err(error) => Failure::Source {
                            error,
                            bad_bytes: true,
                        },
                    },
                    Err(failure) => failure,
                };
                match failure {
                    Failure::Local(e) => return Err(e),
                    Failure::Source { error, bad_bytes } => {
                        if bad_bytes {
                            partial
                                .reset()
                                .map_err(local(name, "truncate", &partial.path))?;
                        }
                        if let Some(next) = next {
                            self.reporter.on_message(&format!("{error}; trying {next}"));
                        }
                        failures.push(error);
                        continue 'sources;
                    }
                }
            }
        }
        Err(FetchError::Sources {
            name: name.clone(),
            failures,
        })
    }

    /// Checks a complete partial file against the declared size and digest;
    /// returns the digest to store it under.
    fn check(
        &self,
        req: &FetchRequest,
        url: &str,
        partial: &Partial,
    ) -> Result<Sha256Digest, SourceError> {
        if let Some(size) = req.size
            && size != partial.len
        {
            return Err(with_encoding(
                SourceError::SizeMismatch {
                    name: req.name.clone(),
                    url: url.to_owned(),
                    expected: size,
                    actual: partial.len,
                },
                partial.content_encoding.as_deref(),
            ));
        }
        let actual = partial.digest();
        match req.sha256 {
            Some(expected) if expected != actual => Err(with_encoding(
                SourceError::Mismatch {
                    name: req.name.clone(),
                    url: url.to_owned(),
                    expected,
                    actual,
                },
                partial.content_encoding.as_deref(),
            )),
            _ => Ok(actual),
        }
    }

    /// Moves a verified partial file into the cache.
    fn store(
        &self,
        partial: &mut Partial,
        req: &FetchRequest,
        digest: &Sha256Digest,
    ) -> Result<PathBuf, FetchError> {
        let path = self.cache.insert(&partial.path, digest).map_err(local(
            &req.name,
            "store in the cache",
            &partial.path,
        ))?;
        partial.inserted = true;
        Ok(path)
    }

    /// Copies a local file through the hashing path.
    fn copy_file(
        &self,
        req: &FetchRequest,
        path: &Path,
        partial: &mut Partial,
        transfer: &mut Transfer,
    ) -> Result<(), Failure> {
        let name = &req.name;
        let read_error = |source, bad_bytes| Failure::Source {
            error: SourceError::File {
                name: name.clone(),
                path: path.to_owned(),
                source,
            },
            bad_bytes,
        };
        let mut file = File::open(path).map_err(|e| read_error(e, false))?;
        partial
            .reset()
            .map_err(|e| Failure::Local(local(name, "truncate", &partial.path)(e)))?;
        transfer.attempt(self.reporter, 0);
        match self.pump(&mut file, partial, transfer.id, req.size, None) {
            Ok(()) => Ok(()),
            Err(PumpError::TooSlow { .. }) => unreachable!("no rate bound on local files"),
            Err(PumpError::Read(e)) => Err(read_error(e, true)),
            Err(PumpError::TooLarge) => Err(Failure::Source {
                error: SourceError::TooLarge {
                    name: name.clone(),
                    url: format!("file:{}", path.display()),
                    limit: req.size.unwrap_or_default(),
                    announced: None,
                },
                bad_bytes: true,
            }),
            Err(PumpError::Write(e)) => Err(Failure::Local(local(name, "write", &partial.path)(e))),
        }
    }

    /// The HTTP client of artifact URLs (`registry: false`: built-in roots
    /// only) or of registries (the system's roots and `registry_roots` too).
    fn client(&self, name: &ArtifactName, registry: bool) -> Result<&Client, Failure> {
        let cell = if registry {
            &self.registry_client
        } else {
            &self.client
        };
        cell.get_or_init(|| {
            let mut builder = Client::builder()
                .connect_timeout(self.opts.connect_timeout)
                // In reqwest's blocking client this bounds each wait (for
                // the response headers, then for every read of the body),
                // not the whole transfer: exactly an idle timeout. Its
                // default of 30 s is replaced by ours.
                .timeout(self.opts.idle_timeout)
                .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")))
                .tls_built_in_native_certs(registry);
            if registry {
                for cert in &self.opts.registry_roots {
                    builder = builder.add_root_certificate(cert.clone());
                }
            }
            builder.build().map_err(|e| describe(&e))
        })
        .as_ref()
        .map_err(|reason| {
            Failure::Local(FetchError::Client {
                name: name.clone(),
                reason: reason.clone(),
            })
        })
    }

    /// Downloads from one URL, retrying transient failures.
    fn http(
        &self,
        req: &FetchRequest,
        url: &Url,
        auth: Option<&dyn Endpoint>,
        partial: &mut Partial,
        transfer: &mut Transfer,
    ) -> Result<(), Failure> {
        let name = &req.name;
        let client = self.client(name, auth.is_some())?;
        let total = self.opts.retries.saturating_add(1);
        let mut attempt = 1;
        let mut validator = None;
        // Renew the authorization once after a 401, then believe the registry.
        let mut renew = false;
        let mut renewed = false;
        loop {
            let authorization = match auth.map(|a| a.authorization(renew)).transpose() {
                Ok(header) => header.flatten(),
                Err(reason) => {
                    return Err(Failure::Source {
                        error: SourceError::Transfer {
                            name: name.clone(),
                            url: url.to_string(),
                            reason,
                            attempts: attempt,
                        },
                        bad_bytes: false,
                    });
                }
            };
            renew = false;
            transfer.attempt(self.reporter, partial.len);
            let outcome = self.http_attempt(
                client,
                req,
                url,
                authorization,
                partial,
                transfer,
                attempt,
                &mut validator,
            );
            match outcome {
                Ok(()) => return Ok(()),
                Err(Attempt::Unauthorized) if auth.is_some() && !renewed => {
                    renew = true;
                    renewed = true;
                }
                Err(Attempt::Unauthorized) => {
                    return Err(Failure::Source {
                        error: SourceError::Status {
                            name: name.clone(),
                            url: url.to_string(),
                            status: 401,
                            attempts: attempt,
                        },
                        bad_bytes: false,
                    });
                }
                Err(Attempt::Fail(failure)) => return Err(failure),
                Err(Attempt::RestartFromZero(why)) => {
                    self.reporter
                        .on_message(&format!("{name}: {why}; restarting from 0"));
                    partial
                        .reset()
                        .map_err(|e| Failure::Local(local(name, "truncate", &partial.path)(e)))?;
                }
                Err(Attempt::Retry {
                    status,
                    reason,
                    retry_after,
                }) => {
                    if attempt >= total {
                        let error = match status {
                            Some(status) => SourceError::Status {
                                name: name.clone(),
                                url: url.to_string(),
                                status,
                                attempts: attempt,
                            },
                            None => SourceError::Transfer {
                                name: name.clone(),
                                url: url.to_string(),
                                reason,
                                attempts: attempt,
                            },
                        };
                        return Err(Failure::Source {
                            error,
                            bad_bytes: false,
                        });
                    }
                    let delay = retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(MAX_BACKOFF);
                    self.reporter.on_message(&format!(
                        "{name}: {reason}, retrying in {} (attempt {}/{total}) from {url}",
                        human_duration(delay),
                        attempt + 1,
                    ));
                    thread::sleep(delay);
                    attempt += 1;
                }
            }
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.opts
            .backoff
            .saturating_mul(factor)
            .min(MAX_BACKOFF.max(self.opts.backoff))
    }

    /// One GET, resuming from the partial file's length.
    #[allow(clippy::too_many_arguments)]
    fn http_attempt(
        &self,
        client: &Client,
        req: &FetchRequest,
        url: &Url,
        authorization: Option<HeaderValue>,
        partial: &mut Partial,
        transfer: &Transfer,
        attempt: u32,
        validator: &mut Option<HeaderValue>,
    ) -> Result<(), Attempt> {
        let name = &req.name;
        let local_failure =
            |action, path: &Path, e| Attempt::Fail(Failure::Local(local(name, action, path)(e)));
        let source_failure = |error| {
            Attempt::Fail(Failure::Source {
                error,
                bad_bytes: false,
            })
        };
        let offset = partial.len;
        let mut request = client.get(url.clone());
        if let Some(mut value) = authorization {
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            if let Some(v) = validator.as_ref() {
                request = request.header(IF_RANGE, v.clone());
            }
        }
        let mut response = request.send().map_err(|e| Attempt::Retry {
            status: None,
            reason: describe(&e),
            retry_after: None,
        })?;
        let status = response.status().as_u16();
        match status {
            200 => {
                *validator = strong_validator(&response);
                if offset > 0 {
                    self.reporter.on_message(&format!(
                        "{name}: {url} ignored the request to resume at byte {offset}; restarting from 0"
                    ));
                    partial
                        .reset()
                        .map_err(|e| local_failure("truncate", &partial.path, e))?;
                    self.reporter.on_restart(transfer.id, 0);
                }
            }
            206 if offset > 0 => match content_range(&response) {
                Some((start, total)) if start == offset => {
                    if let (Some(total), Some(size)) = (total, req.size)
                        && total != size
                    {
                        return Err(source_failure(size_error(
                            req,
                            url,
                            size,
                            total,
                            header_text(&response, CONTENT_ENCODING),
                        )));
                    }
                }
                _ => {
                    partial
                        .reset()
                        .map_err(|e| local_failure("truncate", &partial.path, e))?;
                    return Err(Attempt::Retry {
                        status: None,
                        reason: format!(
                            "the answer to a request for bytes {offset}- did not start there"
                        ),
                        retry_after: None,
                    });
                }
            },
            401 => return Err(Attempt::Unauthorized),
            416 if offset > 0 => {
                return Err(Attempt::RestartFromZero(format!(
                    "{url} cannot resume at byte {offset} (HTTP 416)"
                )));
            }
            408 | 429 | 500..=599 => {
                return Err(Attempt::Retry {
                    status: Some(status),
                    reason: format!("HTTP {}", status_text(status)),
                    retry_after: retry_after(&response),
                });
            }
            _ => {
                return Err(source_failure(SourceError::Status {
                    name: name.clone(),
                    url: url.to_string(),
                    status,
                    attempts: attempt,
                }));
            }
        }

        partial.content_type = header_text(&response, CONTENT_TYPE);
        partial.content_encoding = header_text(&response, CONTENT_ENCODING);
        let announced = response.content_length();
        if let Some(size) = req.size
            && let Some(len) = announced
            && partial.len.saturating_add(len) != size
        {
            return Err(source_failure(size_error(
                req,
                url,
                size,
                partial.len.saturating_add(len),
                header_text(&response, CONTENT_ENCODING),
            )));
        }
        let min_rate = Some(self.opts.min_rate).filter(|r| r.bytes_per_sec > 0);
        match self.pump(&mut response, partial, transfer.id, req.size, min_rate) {
            Ok(()) => {}
            Err(PumpError::TooSlow { received, window }) => {
                let min = self.opts.min_rate.bytes_per_sec;
                return Err(Attempt::Retry {
                    status: None,
                    reason: format!(
                        "too slow: {received} bytes in {}, below the minimum of {min} bytes/s (--min-rate)",
                        human_duration(window)
                    ),
                    retry_after: None,
                });
            }
            Err(PumpError::Read(e)) => {
                return Err(Attempt::Retry {
                    status: None,
                    reason: describe(&e),
                    retry_after: None,
                });
            }
            Err(PumpError::TooLarge) => {
                return Err(Attempt::Fail(Failure::Source {
                    error: with_encoding(
                        SourceError::TooLarge {
                            name: name.clone(),
                            url: url.to_string(),
                            limit: req.size.unwrap_or_default(),
                            announced: None,
                        },
                        partial.content_encoding.as_deref(),
                    ),
                    bad_bytes: true,
                }));
            }
            Err(PumpError::Write(e)) => return Err(local_failure("write", &partial.path, e)),
        }
        if let Some(size) = req.size
            && partial.len < size
            && announced.is_none()
        {
            // Without a Content-Length, a dropped connection looks like the
            // end of the body.
            return Err(Attempt::Retry {
                status: None,
                reason: format!("connection closed after {} of {size} bytes", partial.len),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Copies `reader` to the end of the partial file, hashing as it goes and
    /// never writing past `size`, nor slower than `min_rate`.
    fn pump(
        &self,
        reader: &mut dyn Read,
        partial: &mut Partial,
        id: usize,
        size: Option<u64>,
        min_rate: Option<MinRate>,
    ) -> Result<(), PumpError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        loop {
            if let Some(rate) = min_rate {
                let elapsed = window_start.elapsed();
                if elapsed >= rate.window {
                    let needed = u128::from(rate.bytes_per_sec) * elapsed.as_millis() / 1000;
                    if u128::from(window_bytes) < needed {
                        return Err(PumpError::TooSlow {
                            received: window_bytes,
                            window: elapsed,
                        });
                    }
                    window_start = Instant::now();
                    window_bytes = 0;
                }
            }
            // Within the limit, ask for one byte more than allowed: getting it
            // proves the body is too long.
            let want = match size {
                Some(size) => usize::try_from(size.saturating_sub(partial.len).saturating_add(1))
                    .unwrap_or(usize::MAX)
                    .min(buf.len()),
                None => buf.len(),
            };
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PumpError::Read(e)),
            };
            if size.is_some_and(|size| partial.len + n as u64 > size) {
                return Err(PumpError::TooLarge);
            }
            partial.append(&buf[..n]).map_err(PumpError::Write)?;
            window_bytes += n as u64;
            self.reporter.on_progress(id, n as u64);
        }
    }
}

fn size_error(
    req: &FetchRequest,
    url: &Url,
    size: u64,
    actual: u64,
    encoding: Option<String>,
) -> SourceError {
    let error = if actual > size {
        SourceError::TooLarge {
            name: req.name.clone(),
            url: url.to_string(),
            limit: size,
            announced: Some(actual),
        }
    } else {
        SourceError::SizeMismatch {
            name: req.name.clone(),
            url: url.to_string(),
            expected: size,
            actual,
        }
    };
    with_encoding(error, encoding.as_deref())
}

/// A response header's value as text (lossy), when present.
fn header_text(response: &Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
}

/// A strong validator (`ETag`, else `Last-Modified`) to send as `If-Range`,
/// so that a resumed download never mixes two versions of a file.
fn strong_validator(response: &Response) -> Option<HeaderValue> {
    let headers = response.headers();
    match headers.get(ETAG) {
        Some(etag) if !etag.as_bytes().starts_with(b"W/") => Some(etag.clone()),
        Some(_) => None,
        None => headers.get(LAST_MODIFIED).cloned(),
    }
}

/// `(start, total)` of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range(response: &Response) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// A `Retry-After` given in seconds.
fn retry_after(response: &Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// A short reason for a network error: the innermost cause, which names what
/// happened ("connection reset by peer") without reqwest's wrapping.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut timed_out = false;
    let mut connect = false;
    let mut current = Some(err);
    while let Some(e) = current {
        let reqwest_error = e.downcast_ref::<reqwest::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
        });
        if let Some(r) = reqwest_error {
            timed_out |= r.is_timeout();
            connect |= r.is_connect();
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            timed_out |= io.kind() == io::ErrorKind::TimedOut;
        }
        let text = e.to_string();
        if !text.is_empty() {
            innermost = text;
        }
        current = e.source();
    }
    match (connect, timed_out) {
        (true, true) => "connection timed out".to_owned(),
        (false, true) => "timed out waiting for data".to_owned(),
        (true, false) => format!("cannot connect: {innermost}"),
        (false, false) => innermost,
    }
}

fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Maps an I/O error on a cache file to a [`FetchError::Local`].
fn local<'a>(
    name: &'a ArtifactName,
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Local {
        name: name.clone(),
        action,
        path: path.to_owned(),
        source,
    }
}

/// A locked partial-download file and the running hash of its content.
struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
    /// Holds bytes that did not come from the current source since it last
    /// started from 0.
    inherited: bool,
    /// Moved into the cache: the path no longer belongs to us.
    inserted: bool,
    /// Keep a non-empty file when dropped, to resume it in a later run.
    keep: bool,
    /// The `Content-Type` of the last response that wrote to the file.
    content_type: Option<String>,
    /// The `Content-Encoding` of the last response that wrote to the file.
    content_encoding: Option<String>,
}

impl Partial {
    /// Opens (creating) and exclusively locks the partial file at `path`,
    /// then hashes what it already holds.
    fn open(path: PathBuf, keep: bool) -> io::Result<Partial> {
        let mut file = lock_file(&path)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        file.seek(SeekFrom::Start(0))?;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Partial {
            path,
            file,
            hasher,
            len,
            inherited: len > 0,
            inserted: false,
            keep,
            content_type: None,
            content_encoding: None,
        })
    }

    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = Sha256::new();
        self.len = 0;
        self.inherited = false;
        self.content_type = None;
        self.content_encoding = None;
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    fn digest(&self) -> Sha256Digest {
        Sha256Digest::from_bytes(self.hasher.clone().finalize().into())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Still locked here (the file closes after this body runs), so the
        // path is still ours to remove.
        if !self.inserted && (self.len == 0 || !self.keep) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens `path` and takes an exclusive lock on it, making sure the locked
/// file is still the one at `path` (its holder may have moved it into the
/// cache or removed it meanwhile).
fn lock_file(path: &Path) -> io::Result<File> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.lock()?;
        let held = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(file),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let opts = FetchOptions {
            backoff: Duration::from_millis(500),
            ..FetchOptions::default()
        };
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(cache_dir.path())).unwrap();
        let f = Fetcher {
            cache: &cache,
            opts: &opts,
            reporter: &bundle_spec::NoReporter,
            client: OnceLock::new(),
            registry_client: OnceLock::new(),
        };
        assert_eq!(f.backoff(1), Duration::from_millis(500));
        assert_eq!(f.backoff(2), Duration::from_secs(1));
        assert_eq!(f.backoff(3), Duration::from_secs(2));
        assert_eq!(f.backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }
}
