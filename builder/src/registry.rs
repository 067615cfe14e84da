//! Registries: the OCI distribution API, as `bundler` speaks it.
//!
//! * Transport policy ([`plain_http_allowed`]): HTTPS, trusting the system's
//!   roots and `--registry-ca` files. Plain HTTP only for loopback registries
//!   (`localhost`, `127.0.0.0/8`, `::1`) and those named with
//!   `--insecure-registry HOST:PORT`; such a registry is asked over HTTPS
//!   first and used over HTTP only when it does not speak TLS (as Docker
//!   does). A certificate that is not trusted is never a reason to fall back.
//! * Credentials ([`AuthFile`]): `$REGISTRY_AUTH_FILE`, else
//!   `~/.docker/config.json` (`auths.HOST.auth` = base64 of `user:password`,
//!   or `username`/`password`), read with the `docker_credential` crate.
//! * Protocol: `oci-client` does the token flow (`WWW-Authenticate: Bearer
//!   realm/service/scope`, anonymous or with the credentials; `Basic` when the
//!   registry asks for it) and manifest requests, checking a manifest's bytes
//!   against `Docker-Content-Digest` and the digest asked for. Blobs are
//!   fetched by [`crate::fetch`] (cache, parallelism, retries, resume,
//!   progress) through a [`RepoEndpoint`], which supplies their URLs and the
//!   `Authorization` header.
//!
//! Nothing here touches the network before it is needed: a registry is
//! probed, and a token asked for, on its first use.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bundle_spec::image::{ImageRef, OciDigest};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::HeaderValue;
use url::Url;

use crate::fetch::{Endpoint, FetchOptions};

/// The media types asked for when requesting a manifest.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    bundle_spec::image::MEDIA_TYPE_OCI_INDEX,
    bundle_spec::image::MEDIA_TYPE_OCI_MANIFEST,
    bundle_spec::image::MEDIA_TYPE_DOCKER_LIST,
    bundle_spec::image::MEDIA_TYPE_DOCKER_MANIFEST,
];

/// The longest a registry that may use plain HTTP is given to answer the
/// HTTPS (then the HTTP) probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest manifest or index accepted (containerd's limit for a manifest).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How to reach registries (`bundler build`/`pin` options).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// PEM files of certificates trusted besides the system's roots
    /// (`--registry-ca`).
    pub ca_files: Vec<PathBuf>,
    /// `HOST:PORT` (or `HOST`) of registries that may be reached over plain
    /// HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// Where credentials are read from.
    pub auth_file: AuthFile,
}

/// The credentials file: `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFile {
    /// The file, if any could be named.
    pub path: Option<PathBuf>,
    /// Named by `$REGISTRY_AUTH_FILE`: it must exist.
    pub explicit: bool,
}

impl AuthFile {
    /// The file the environment names: `$REGISTRY_AUTH_FILE`, else
    /// `$HOME/.docker/config.json`.
    pub fn from_env() -> AuthFile {
        match std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            Some(p) => AuthFile {
                path: Some(PathBuf::from(p)),
                explicit: true,
            },
            None => AuthFile {
                path: std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".docker").join("config.json")),
                explicit: false,
            },
        }
    }

    /// The user name and password for `registry` (`host[:port]`), if the
    /// file has them. A missing file is no credentials unless it was named by
    /// `$REGISTRY_AUTH_FILE`.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let fail = |reason: String| RegistryError::AuthFile {
            path: path.clone(),
            registry: registry.to_owned(),
            reason,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.explicit => {
                return Ok(None);
            }
            Err(e) => return Err(fail(format!("cannot open it: {e}"))),
        };
        use docker_credential::{CredentialRetrievalError as E, DockerCredential};
        // docker_credential looks `docker.io` up as Docker Hub's keys.
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), registry)
        {
            Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Some(Credentials {
                user,
                password,
                file: path.clone(),
            })),
            Ok(DockerCredential::IdentityToken(_)) => Err(fail(
                "it holds an identity token, which bundler does not support; log in with a user name and password (or a registry access token as the password)".into(),
            )),
            Err(E::NoCredentialConfigured) => Ok(None),
            // ~/.docker/config.json naming a helper this machine lacks
            // (`credsStore: desktop`): pull anonymously, as docker does.
            Err(E::HelperCommunicationError) if !self.explicit => Ok(None),
            Err(E::HelperFailure { stdout, .. }) if stdout.contains("credentials not found") => {
                Ok(None)
            }
            Err(E::ConfigReadError) => Err(fail(
                "it is not a valid auth file (JSON with \"auths\": {\"HOST\": {\"auth\": \"base64 of user:password\"}})".into(),
            )),
            Err(E::CredentialDecodingError) => Err(fail(format!(
                "auths.\"{registry}\".auth is not base64 of user:password"
            ))),
            Err(E::CredentialMismatchError) => Err(fail(format!(
                "auths.\"{registry}\": auth does not match username and password"
            ))),
            Err(e) => Err(fail(e.to_string().trim().to_owned())),
        }
    }
}

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password (never shown).
    pub password: String,
    /// The file they came from.
    pub file: PathBuf,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a registry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A `--registry-ca` file is unusable.
    #[error("--registry-ca {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An `--insecure-registry` value is not `HOST[:PORT]`.
    #[error(
        "--insecure-registry {value:?}: expected HOST:PORT (or HOST) of a registry, as in image references"
    )]
    InsecureValue {
        /// The value.
        value: String,
    },
    /// The credentials file is unusable.
    #[error("credentials for {registry} from {}: {reason}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// The registry looked up.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The registry's certificate is not trusted.
    #[error(
        "{registry}: its TLS certificate is not trusted ({reason}); pass the certificate of the CA that signed it with --registry-ca FILE"
    )]
    Tls {
        /// The registry.
        registry: String,
        /// rustls' reason.
        reason: String,
    },
    /// The registry refused access.
    #[error("{registry} refused access to {repository} (HTTP 401 Unauthorized): {}", unauthorized_hint(registry, credentials.as_deref(), auth_file))]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The credentials sent, if any.
        credentials: Option<Box<Credentials>>,
        /// Where credentials would have come from.
        auth_file: Option<PathBuf>,
    },
    /// The registry does not have the manifest.
    #[error("{reference}: {registry} has no such manifest ({reason})")]
    NotFound {
        /// The reference asked for.
        reference: String,
        /// The registry.
        registry: String,
        /// What it said.
        reason: String,
    },
    /// Connecting or transferring failed.
    #[error("{registry}: {reason}")]
    Transfer {
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
        /// Worth another attempt.
        transient: bool,
    },
    /// A manifest's bytes do not have the digest asked for.
    #[error("{reference}: the manifest {registry} sent has sha256 {actual}, not {expected}")]
    Digest {
        /// The reference.
        reference: String,
        /// The registry.
        registry: String,
        /// The digest asked for (or announced in `Docker-Content-Digest`).
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

fn unauthorized_hint(
    registry: &str,
    credentials: Option<&Credentials>,
    auth_file: &Option<PathBuf>,
) -> String {
    match (credentials, auth_file) {
        (Some(c), _) => format!(
            "it refused the credentials of user {:?} from {}; check auths.\"{registry}\" there",
            c.user,
            c.file.display()
        ),
        (None, Some(f)) => format!(
            "no credentials for {registry} in {}; add auths.\"{registry}\".auth (base64 of user:password) there, or name another file with REGISTRY_AUTH_FILE",
            f.display()
        ),
        (None, None) => format!(
            "no credentials for {registry}: set REGISTRY_AUTH_FILE to a file with auths.\"{registry}\".auth (base64 of user:password)"
        ),
    }
}

impl RegistryError {
    /// Whether another attempt at the same registry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Transfer {
                transient: true,
                ..
            }
        )
    }
}

/// Whether `registry` (`host[:port]`, as in an image reference) may be
/// reached over plain HTTP: a loopback registry (`localhost`,
/// `127.0.0.0/8`, `::1`, with any port), or one named with
/// `--insecure-registry` (compared without regard to case; a value without
/// a port names the registry without one).
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|i| i.eq_ignore_ascii_case(registry))
}

/// The host of `host[:port]` (`[::1]:5000` → `[::1]`).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Checks an `--insecure-registry` value.
pub fn check_insecure_value(value: &str) -> Result<(), RegistryError> {
    let bad = || RegistryError::InsecureValue {
        value: value.to_owned(),
    };
    if value.contains('/') || value.contains("://") || value.is_empty() {
        return Err(bad());
    }
    // Reuse the reference grammar: HOST[:PORT]/x must parse with HOST[:PORT]
    // as its registry.
    match format!("{value}/x").parse::<ImageRef>() {
        Ok(r) if r.registry() == value => Ok(()),
        _ => Err(bad()),
    }
}

/// The scheme a registry is reached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// One registry in use: how it is reached and who we are there.
struct Session {
    /// `host[:port]` as the reference names it.
    registry: String,
    /// The host the API is at (`index.docker.io` for `docker.io`).
    api_host: String,
    scheme: Scheme,
    credentials: Option<Credentials>,
    client: oci_client::Client,
}

impl Session {
    fn auth(&self) -> RegistryAuth {
        match &self.credentials {
            Some(c) => RegistryAuth::Basic(c.user.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// The registries a build or pin talks to, opened lazily.
pub struct Registries {
    options: RegistryOptions,
    fetch: FetchOptions,
    roots: Vec<Vec<u8>>,
    runtime: tokio::runtime::Runtime,
    /// Serializes the async client's use (the runtime is single-threaded).
    driving: Mutex<()>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl fmt::Debug for Registries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registries")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The certificates of a PEM file (at least one).
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let fail = |reason: String| RegistryError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

impl Registries {
    /// Checks the options (CA files readable, `--insecure-registry` values
    /// well-formed); contacts nothing.
    pub fn new(
        options: RegistryOptions,
        fetch: &FetchOptions,
    ) -> Result<Registries, RegistryError> {
        for value in &options.insecure {
            check_insecure_value(value)?;
        }
        let mut roots = Vec::new();
        for path in &options.ca_files {
            read_ca_file(path)?;
            roots.push(std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                reason: format!("cannot read it: {e}"),
            })?);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Transfer {
                registry: "-".into(),
                reason: format!("cannot start the async runtime: {e}"),
                transient: false,
            })?;
        Ok(Registries {
            options,
            fetch: fetch.clone(),
            roots,
            runtime,
            driving: Mutex::new(()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The certificates trusted besides the system's (for [`FetchOptions::registry_roots`]).
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, RegistryError> {
        let mut out = Vec::new();
        for path in &self.options.ca_files {
            out.extend(read_ca_file(path)?);
        }
        Ok(out)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        let _guard = self.driving.lock().unwrap_or_else(|e| e.into_inner());
        self.runtime.block_on(f)
    }

    /// The session of `registry`, opening it (probing the scheme when plain
    /// HTTP is allowed, reading credentials) on first use.
    fn session(&self, registry: &str) -> Result<Arc<Session>, RegistryError> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(s.clone());
        }
        let api_host = Reference::with_tag(registry.to_owned(), "x".into(), "x".into())
            .resolve_registry()
            .to_owned();
        let credentials = self.options.auth_file.credentials(registry)?;
        let scheme = if plain_http_allowed(registry, &self.options.insecure) {
            self.probe(registry, &api_host)?
        } else {
            Scheme::Https
        };
        let config = ClientConfig {
            protocol: match scheme {
                Scheme::Https => ClientProtocol::Https,
                Scheme::Http => ClientProtocol::Http,
            },
            extra_root_certificates: self
                .roots
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            platform_resolver: None,
            read_timeout: Some(self.fetch.idle_timeout),
            connect_timeout: Some(self.fetch.connect_timeout),
            user_agent: concat!("bundler/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| RegistryError::Transfer {
            registry: registry.to_owned(),
            reason: format!("cannot set up the HTTP client: {}", describe(&e)),
            transient: false,
        })?;
        let session = Arc::new(Session {
            registry: registry.to_owned(),
            api_host,
            scheme,
            credentials,
            client,
        });
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_owned(), session.clone());
        Ok(session)
    }

    /// HTTPS or HTTP for a registry that may use plain HTTP: HTTPS unless
    /// the server does not speak TLS (the handshake fails other than on its
    /// certificate) and does answer plain HTTP.
    fn probe(&self, registry: &str, api_host: &str) -> Result<Scheme, RegistryError> {
        // A TLS handshake with a live registry takes milliseconds; a plain
        // HTTP server may instead wait for a request head that never comes.
        let wait = self.fetch.idle_timeout.min(PROBE_TIMEOUT);
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(self.fetch.connect_timeout.min(wait))
            .timeout(wait)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")));
        for cert in self.extra_roots()? {
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| RegistryError::Transfer {
            registry: registry.to_owned(),
            reason: format!("cannot set up the HTTP client: {}", describe(&e)),
            transient: false,
        })?;
        let total = self.fetch.retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            let e = match client.get(format!("https://{api_host}/v2/")).send() {
                Ok(_) => return Ok(Scheme::Https),
                Err(e) => e,
            };
            if let Some(reason) = certificate_error(&e) {
                return Err(RegistryError::Tls {
                    registry: registry.to_owned(),
                    reason,
                });
            }
            if client.get(format!("http://{api_host}/v2/")).send().is_ok() {
                return Ok(Scheme::Http);
            }
            if attempt >= total {
                return Err(RegistryError::Transfer {
                    registry: registry.to_owned(),
                    reason: describe(&e),
                    transient: true,
                });
            }
            std::thread::sleep(backoff(&self.fetch, attempt));
            attempt += 1;
        }
    }

    /// Fetches the manifest (or index) `reference` names (by its digest when
    /// it has one, else by its tag) from `registry` (its own, or a mirror's),
    /// retrying transient failures. Returns its bytes and digest; the bytes'
    /// sha256 was checked against the digest asked for and against
    /// `Docker-Content-Digest` when the registry sent it.
    pub fn manifest(&self, reference: &ImageRef) -> Result<(Vec<u8>, OciDigest), RegistryError> {
        let session = self.session(reference.registry())?;
        let oci_ref = oci_reference(reference);
        let shown = reference.to_string();
        let total = self.fetch.retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            let got = self.block_on(session.client.pull_manifest_raw(
                &oci_ref,
                &session.auth(),
                MANIFEST_MEDIA_TYPES,
            ));
            let error = match got {
                Ok((bytes, digest)) => {
                    let actual = OciDigest::from_sha256(bundle_spec::Sha256Digest::of(&bytes));
                    if digest != actual.to_string()
                        || reference.digest().is_some_and(|d| d != actual)
                    {
                        return Err(RegistryError::Digest {
                            reference: shown,
                            registry: session.registry.clone(),
                            expected: reference.digest().map_or(digest, |d| d.to_string()),
                            actual: actual.to_string(),
                        });
                    }
                    if bytes.len() > MAX_MANIFEST_BYTES {
                        return Err(RegistryError::Transfer {
                            registry: session.registry.clone(),
                            reason: format!(
                                "{shown}: the manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                                bytes.len()
                            ),
                            transient: false,
                        });
                    }
                    return Ok((bytes, actual));
                }
                Err(e) => self.classify(&session, reference, &shown, e),
            };
            if !error.is_transient() || attempt >= total {
                return Err(error);
            }
            std::thread::sleep(backoff(&self.fetch, attempt));
            attempt += 1;
        }
    }

    fn classify(
        &self,
        session: &Session,
        reference: &ImageRef,
        shown: &str,
        e: OciDistributionError,
    ) -> RegistryError {
        let registry = session.registry.clone();
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
                registry,
                repository: reference.repository().to_owned(),
                credentials: session.credentials.clone().map(Box::new),
                auth_file: self.options.auth_file.path.clone(),
            },
            OciDistributionError::DigestError(d) => match d {
                oci_client::errors::DigestError::VerificationError { expected, actual } => {
                    RegistryError::Digest {
                        reference: shown.to_owned(),
                        registry,
                        expected,
                        actual,
                    }
                }
                other => RegistryError::Transfer {
                    registry,
                    reason: format!("{shown}: {other}"),
                    transient: false,
                },
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let text = envelope
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                let not_found = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                    )
                });
                if not_found {
                    RegistryError::NotFound {
                        reference: shown.to_owned(),
                        registry,
                        reason: text,
                    }
                } else {
                    RegistryError::Transfer {
                        registry,
                        reason: format!("{shown}: {text}"),
                        transient: false,
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                if code == 404 {
                    RegistryError::NotFound {
                        reference: shown.to_owned(),
                        registry,
                        reason: format!("HTTP 404 {}", message.trim()),
                    }
                } else {
                    RegistryError::Transfer {
                        registry,
                        reason: format!("{shown}: HTTP {code} {}", message.trim()),
                        transient: code == 408 || code == 429 || code >= 500,
                    }
                }
            }
            OciDistributionError::RequestError(r) => {
                if let Some(reason) = certificate_error(&r) {
                    return RegistryError::Tls { registry, reason };
                }
                RegistryError::Transfer {
                    registry,
                    reason: format!("{shown}: {}", describe(&r)),
                    transient: r.is_connect() || r.is_timeout() || r.is_request() || r.is_body(),
                }
            }
            other => RegistryError::Transfer {
                registry,
                reason: format!("{shown}: {}", describe(&other)),
                transient: false,
            },
        }
    }

    /// Where `reference`'s blobs are fetched from, for [`crate::fetch`].
    pub fn endpoint(self: &Arc<Self>, reference: &ImageRef) -> Arc<RepoEndpoint> {
        Arc::new(RepoEndpoint {
            registries: self.clone(),
            reference: reference.clone(),
            token: Mutex::new(None),
        })
    }
}

/// The blob endpoint of one repository: its URLs and `Authorization`.
pub struct RepoEndpoint {
    registries: Arc<Registries>,
    reference: ImageRef,
    /// The header last got (`Some(None)`: none needed).
    token: Mutex<Option<Option<HeaderValue>>>,
}

impl fmt::Debug for RepoEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoEndpoint")
            .field("reference", &self.reference.name())
            .finish_non_exhaustive()
    }
}

impl RepoEndpoint {
    /// The path of a blob below the registry.
    pub fn blob_path(&self, digest: &OciDigest) -> String {
        format!("/v2/{}/blobs/{digest}", self.reference.repository())
    }
}

impl Endpoint for RepoEndpoint {
    fn name(&self) -> String {
        self.reference.registry().to_owned()
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        let session = self
            .registries
            .session(self.reference.registry())
            .map_err(|e| e.to_string())?;
        Url::parse(&format!(
            "{}://{}{path}",
            session.scheme.as_str(),
            session.api_host
        ))
        .map_err(|e| format!("bad URL: {e}"))
    }

    fn authorization(&self, renew: bool) -> Result<Option<HeaderValue>, String> {
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(header), false) = (token.as_ref(), renew) {
            return Ok(header.clone());
        }
        let session = self
            .registries
            .session(self.reference.registry())
            .map_err(|e| e.to_string())?;
        let oci_ref = oci_reference(&self.reference);
        let got = self.registries.block_on(session.client.auth(
            &oci_ref,
            &session.auth(),
            RegistryOperation::Pull,
        ));
        let header = match got {
            Ok(Some(bearer)) => Some(
                HeaderValue::from_str(&format!("Bearer {bearer}"))
                    .map_err(|_| "the registry's token is not a valid header value".to_owned())?,
            ),
            // No token service: basic credentials, when there are any.
            Ok(None) => match &session.credentials {
                Some(c) => {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.user, c.password));
                    Some(
                        HeaderValue::from_str(&format!("Basic {encoded}"))
                            .map_err(|_| "credentials are not a valid header value".to_owned())?,
                    )
                }
                None => None,
            },
            Err(e) => {
                return Err(self
                    .registries
                    .classify(&session, &self.reference, &self.reference.to_string(), e)
                    .to_string());
            }
        };
        *token = Some(header.clone());
        Ok(header)
    }
}

fn oci_reference(r: &ImageRef) -> Reference {
    let (registry, repository) = (r.registry().to_owned(), r.repository().to_owned());
    match (r.tag(), r.digest()) {
        (_, Some(d)) => Reference::with_digest(registry, repository, d.to_string()),
        (Some(t), None) => Reference::with_tag(registry, repository, t.to_owned()),
        (None, None) => Reference::with_tag(registry, repository, "latest".into()),
    }
}

fn backoff(opts: &FetchOptions, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    opts.backoff
        .saturating_mul(factor)
        .min(crate::fetch::MAX_BACKOFF.max(opts.backoff))
}

/// rustls' reason when `e` is a certificate that was not trusted.
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    tls_error(e).and_then(|t| match t {
        rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
        _ => None,
    })
}

/// The rustls error somewhere in `e`'s chain (io::Error hides its inner
/// error from `source()`, so look inside those too).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // hyper wraps rustls' io::Error in another io::Error.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|i| i.get_ref()) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        current = err.source();
    }
    None
}

/// The innermost message of an error chain.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        let t = err.to_string();
        if !t.is_empty() {
            text = t;
        }
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|i| i.get_ref()) {
            text = inner.to_string();
            io = inner.downcast_ref::<std::io::Error>();
        }
        current = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_named_registries() {
        let none: Vec<String> = Vec::new();
        for loopback in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:443",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(plain_http_allowed(loopback, &none), "{loopback}");
        }
        for remote in [
            "registry.k8s.io",
            "docker.io",
            "10.0.0.1:5000",
            "192.168.1.10",
            "localhost.example.com:5000",
            "127.0.0.1.nip.io:5000",
            "[::2]:5000",
            "mirror.internal:5000",
        ] {
            assert!(!plain_http_allowed(remote, &none), "{remote}");
        }
        let insecure = vec![
            "mirror.internal:5000".to_owned(),
            "plain.example".to_owned(),
        ];
        assert!(plain_http_allowed("mirror.internal:5000", &insecure));
        assert!(plain_http_allowed("Mirror.Internal:5000", &insecure));
        assert!(!plain_http_allowed("mirror.internal:5001", &insecure));
        assert!(!plain_http_allowed("mirror.internal", &insecure));
        assert!(plain_http_allowed("plain.example", &insecure));
        assert!(!plain_http_allowed("plain.example:80", &insecure));
    }

    #[test]
    fn insecure_registry_values_must_be_host_and_port() {
        for good in ["mirror.internal:5000", "registry.example", "localhost:5000"] {
            assert!(check_insecure_value(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "http://mirror.internal:5000",
            "mirror.internal:5000/team",
            "bad host:5000",
            "mirror.internal:",
        ] {
            let e = check_insecure_value(bad).unwrap_err().to_string();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_come_from_auths_by_host_and_a_missing_default_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "bad.example": {"auth": "%%%"}
            }}"#,
        )
        .unwrap();
        let file = AuthFile {
            path: Some(path.clone()),
            explicit: true,
        };
        let c = file.credentials("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let hub = file.credentials("docker.io").unwrap().unwrap();
        assert_eq!(hub.user, "bob");
        assert_eq!(file.credentials("registry.k8s.io").unwrap(), None);
        let e = file.credentials("bad.example").unwrap_err().to_string();
        assert!(
            e.contains("auths.\"bad.example\".auth is not base64"),
            "{e}"
        );
        assert!(e.contains(&path.display().to_string()), "{e}");

        let missing = dir.path().join("none.json");
        let implicit = AuthFile {
            path: Some(missing.clone()),
            explicit: false,
        };
        assert_eq!(implicit.credentials("x.example").unwrap(), None);
        let explicit = AuthFile {
            path: Some(missing),
            explicit: true,
        };
        assert!(explicit.credentials("x.example").is_err());

        std::fs::write(&path, "not json").unwrap();
        let e = file.credentials("x.example").unwrap_err().to_string();
        assert!(e.contains("not a valid auth file"), "{e}");
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// A server that answers anything with a plain HTTP 400, as a plain
    /// HTTP registry answers a TLS handshake.
    fn plain_server() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(4) {
                use std::io::{Read as _, Write as _};
                let Ok(mut s) = s else { continue };
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        addr
    }

    #[test]
    fn a_server_that_does_not_speak_tls_is_told_from_an_untrusted_certificate() {
        let addr = plain_server();
        let e = reqwest::blocking::Client::new()
            .get(format!("https://{addr}/v2/"))
            .send()
            .unwrap_err();
        assert!(tls_error(&e).is_some());
        assert_eq!(certificate_error(&e), None);
        assert_eq!(
            describe(&e),
            "received corrupt message of type InvalidContentType"
        );
    }
}
