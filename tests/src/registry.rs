//! Real container registries on loopback: Debian's `docker-registry` (the
//! CNCF distribution registry, 2.8), started by the test with its own
//! storage directory and stopped when dropped.
//!
//! Three kinds:
//!
//! * [`Registry::plain`]: plain HTTP, no authentication (what a local
//!   `registry:2` is). `bundler` reaches it over HTTP because it is on
//!   loopback.
//! * [`Registry::tls_htpasswd`]: HTTPS with a certificate for `127.0.0.1`
//!   and `localhost` signed by a CA made for the test ([`Registry::ca_file`]),
//!   and `htpasswd` (bcrypt, made with `htpasswd -B`) basic authentication:
//!   `WWW-Authenticate: Basic`. Credentials go to `bundler` through an auth
//!   file ([`Registry::auth_file`], the `~/.docker/config.json` format).
//! * [`Registry::token`]: plain HTTP with token authentication, the flow of
//!   registry.k8s.io and Docker Hub: `WWW-Authenticate: Bearer
//!   realm=…,service=…,scope=…`, and a token service (a loopback
//!   [`crate::server::Server`]) handing out an RS256 JWT, signed with
//!   `openssl dgst`, whose `x5c` certificate the registry trusts. Anonymous
//!   pulls work, as on those registries.
//!
//! Certificates and keys are made with the `openssl` CLI.
//!
//! ```no_run
//! use bundle_tests::registry::Registry;
//! use bundle_tests::oci::TestImage;
//!
//! let registry = Registry::plain();
//! let image = TestImage::two_platform("hello from the test image");
//! image.push(&registry, "team/app", "1.0");
//! let reference = format!("{}/team/app:1.0", registry.host()); // 127.0.0.1:PORT/team/app:1.0
//! // ... bundler pin/build a spec naming `reference` ...
//! ```
//!
//! Tests that need these skip (with a message on stderr) when
//! [`Registry::available`] is false, unless `BUNDLE_E2E_REQUIRED=1` (CI).

use std::fs;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::server::{Behavior, Server};

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "docker-registry";
/// The user of [`Registry::tls_htpasswd`] registries.
pub const USER: &str = "bundler-test";
/// That user's password.
pub const PASSWORD: &str = "s3cret-pass";
/// The `service` of [`Registry::token`] registries (the JWT audience).
pub const TOKEN_SERVICE: &str = "bundle-test-registry";
/// The JWT issuer of [`Registry::token`] registries.
pub const TOKEN_ISSUER: &str = "bundle-test-issuer";

/// How a registry is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP, anonymous.
    Plain,
    /// HTTPS (test CA) and htpasswd basic authentication.
    TlsHtpasswd,
    /// Plain HTTP with bearer tokens from a token service.
    Token,
}

/// A running `docker-registry`, stopped (killed and reaped) when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    kind: Kind,
    /// The token service of a [`Kind::Token`] registry.
    token_server: Option<Server>,
    /// The JWT it hands out.
    token: Option<String>,
}

/// Whether `bin` runs.
fn runs(bin: &str, arg: &str) -> bool {
    Command::new(bin)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Registry {
    /// Whether the tools these registries need are installed:
    /// `docker-registry`, `openssl` and `htpasswd` (apache2-utils).
    pub fn available() -> bool {
        runs(REGISTRY_BIN, "--version")
            && runs("openssl", "version")
            && Command::new("htpasswd")
                .args(["-nbB", "u", "p"])
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// Skips the calling test (returns true) when [`Registry::available`]
    /// is false, after saying so on stderr; panics instead when
    /// `BUNDLE_E2E_REQUIRED=1`.
    pub fn skip() -> bool {
        if Registry::available() {
            return false;
        }
        let what = "docker-registry, openssl and htpasswd (apt-get install docker-registry openssl apache2-utils)";
        if std::env::var_os("BUNDLE_E2E_REQUIRED").is_some_and(|v| v == "1") {
            panic!("BUNDLE_E2E_REQUIRED=1 but {what} are missing");
        }
        eprintln!("SKIPPED: needs {what}");
        true
    }

    /// A plain HTTP registry without authentication.
    pub fn plain() -> Registry {
        Registry::start(Kind::Plain)
    }

    /// An HTTPS registry (certificate from a test CA, see
    /// [`Registry::ca_file`]) with htpasswd basic authentication for
    /// [`USER`] / [`PASSWORD`].
    pub fn tls_htpasswd() -> Registry {
        Registry::start(Kind::TlsHtpasswd)
    }

    /// A plain HTTP registry with token authentication: a token service on
    /// loopback hands anyone (no credentials needed) a token for pull and
    /// push on `repositories`.
    pub fn token(repositories: &[&str]) -> Registry {
        let mut r = Registry::prepare(Kind::Token);
        let (server, token) = r.token_service(repositories);
        r.token_server = Some(server);
        r.token = Some(token);
        r.launch();
        r
    }

    fn start(kind: Kind) -> Registry {
        let mut r = Registry::prepare(kind);
        r.launch();
        r
    }

    fn prepare(kind: Kind) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("registry.")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(dir.path().join("storage")).expect("storage dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Registry {
            child: None,
            addr,
            dir,
            kind,
            token_server: None,
            token: None,
        }
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {}\n  secret: bundle-test-secret\n",
            d.join("storage").display(),
            self.addr
        );
        match self.kind {
            Kind::Plain => {}
            Kind::TlsHtpasswd => {
                self.make_tls();
                let out = Command::new("htpasswd")
                    .args(["-nbB", USER, PASSWORD])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                fs::write(d.join("htpasswd"), &out.stdout).expect("write htpasswd");
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: bundle-test\n    path: {}\n",
                    d.join("server.pem").display(),
                    d.join("server.key").display(),
                    d.join("htpasswd").display()
                ));
            }
            Kind::Token => {
                let server = self.token_server.as_ref().expect("token service");
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.url("/token"),
                    d.join("token.pem").display()
                ));
            }
        }
        fs::write(d.join("config.yml"), config).expect("write registry config");
        let log = fs::File::create(d.join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{REGISTRY_BIN} exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{REGISTRY_BIN} did not listen on {} within 20 s:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A CA and a server certificate (127.0.0.1, localhost) signed by it.
    fn make_tls(&self) {
        let d = self.dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "3", "-subj", "/CN=bundle test registry CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.pem")));
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.csr")));
        fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write extensions");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "3", "-set_serial", "2"])
            .arg("-in")
            .arg(d.join("server.csr"))
            .arg("-CA")
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(d.join("server.ext"))
            .arg("-out")
            .arg(d.join("server.pem")));
    }

    /// The token service and the token it serves: an RS256 JWT granting
    /// pull and push on `repositories`, signed by a key whose self-signed
    /// certificate is in the JWT's `x5c` header and the registry's
    /// `rootcertbundle`.
    fn token_service(&self, repositories: &[&str]) -> (Server, String) {
        let d = self.dir.path();
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
            ])
            .args(["-subj", "/CN=bundle test token issuer"])
            .arg("-keyout")
            .arg(d.join("token.key"))
            .arg("-out")
            .arg(d.join("token.pem")));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(d.join("token.pem"))
            .output()
            .expect("openssl x509");
        assert!(der.status.success());
        let std64 = base64::engine::general_purpose::STANDARD;
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header =
            serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [std64.encode(&der.stdout)]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let access: Vec<_> = repositories
            .iter()
            .map(|r| serde_json::json!({"type": "repository", "name": r, "actions": ["pull", "push"]}))
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": "", "aud": TOKEN_SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "bundle-test-1",
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            url64.encode(header.to_string()),
            url64.encode(claims.to_string())
        );
        fs::write(d.join("token.input"), &signing_input).expect("write signing input");
        let sig = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(d.join("token.key"))
            .arg(d.join("token.input"))
            .output()
            .expect("openssl dgst");
        assert!(sig.status.success(), "openssl dgst -sign failed");
        let token = format!("{signing_input}.{}", url64.encode(&sig.stdout));
        let server = Server::start();
        server.route(
            "/token",
            Behavior::Body(
                serde_json::json!({"token": token, "access_token": token, "expires_in": 3600})
                    .to_string()
                    .into_bytes(),
            ),
        );
        (server, token)
    }

    /// `127.0.0.1:PORT`: the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry's process id while it runs (to read its CPU time in
    /// /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How it is secured.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The base URL (`http://127.0.0.1:PORT` or `https://…`).
    pub fn base_url(&self) -> String {
        match self.kind {
            Kind::TlsHtpasswd => format!("https://{}", self.addr),
            _ => format!("http://{}", self.addr),
        }
    }

    /// The PEM file of the CA that signed a TLS registry's certificate
    /// (for `bundler --registry-ca`, `ctr --tlscacert`, `skopeo --cert-dir`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        (self.kind == Kind::TlsHtpasswd).then(|| self.dir.path().join("ca.pem"))
    }

    /// The token service of a [`Kind::Token`] registry (its request log
    /// shows the token requests).
    pub fn token_server(&self) -> Option<&Server> {
        self.token_server.as_ref()
    }

    /// The `Authorization` header value that may push and pull: basic
    /// credentials, the bearer token, or none.
    pub fn authorization(&self) -> Option<String> {
        match self.kind {
            Kind::Plain => None,
            Kind::TlsHtpasswd => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            )),
            Kind::Token => self.token.as_ref().map(|t| format!("Bearer {t}")),
        }
    }

    /// Writes an auth file (`~/.docker/config.json` format) with
    /// `user:password` for this registry to `path` (for
    /// `REGISTRY_AUTH_FILE`).
    pub fn auth_file(&self, path: &Path, user: &str, password: &str) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let doc = serde_json::json!({"auths": {self.host(): {"auth": auth}}});
        fs::write(path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write auth file");
    }

    /// The registry's storage directory (filesystem driver root).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest`
    /// (`sha256:HEX`); flip a byte there to make it serve corrupted content
    /// (the registry does not check what it serves).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = fs::File::open(self.dir.path().join("registry.log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// How many requests the access log shows for paths containing `part`
    /// (e.g. `/blobs/` or `/manifests/`).
    pub fn requests_for(&self, part: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
            .filter(|l| l.contains(part))
            .count()
    }

    /// Stops the registry now (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address where nothing listens (a registry that is down).
pub fn dead_host() -> String {
    format!("127.0.0.1:{}", free_port())
}
