//! A real S3 API on loopback: the `moto` server (PyPI `moto[server]`,
//! installed by `.ci/run`), started by the test and stopped when dropped.
//!
//! Objects larger than 16 MiB are spooled by moto to temporary files: they
//! go to the server's own temporary directory, removed with it.
//!
//! * [`Moto::start`]: any credentials accepted (moto's default).
//! * [`Moto::start_with_auth`]: moto's IAM enforcement on: a user with an
//!   access key allowed `s3:*` is made first ([`Moto::key_id`],
//!   [`Moto::secret`]); any other key is refused (`InvalidAccessKeyId`).
//!
//! Buckets are made, and objects inspected or overwritten, with boto3 (a
//! dependency of moto) through [`Moto::python`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key id of [`Moto::start`] servers (moto accepts any).
pub const ANY_KEY_ID: &str = "AKIDTESTTESTTESTTEST";
/// Its secret.
pub const ANY_SECRET: &str = "test-secret-key";

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    key_id: String,
    secret: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How moto is started: `moto_server`, else `python3 -m moto.server`.
fn moto_command() -> Option<Command> {
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(Command::new("moto_server").arg("--help")) {
        return Some(Command::new("moto_server"));
    }
    if ok(Command::new("python3").args(["-c", "import moto.server, boto3"])) {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        return Some(c);
    }
    None
}

impl Moto {
    /// Whether moto (and boto3) are installed.
    pub fn available() -> bool {
        moto_command().is_some()
            && Command::new("python3")
                .args(["-c", "import boto3"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Skips the calling test (returns true) when moto is missing, after
    /// saying so; panics instead when `BUNDLE_E2E_REQUIRED=1`.
    pub fn skip() -> bool {
        if Moto::available() {
            return false;
        }
        let what = "the moto server (pip install 'moto[server]')";
        if std::env::var_os("BUNDLE_E2E_REQUIRED").is_some_and(|v| v == "1") {
            panic!("BUNDLE_E2E_REQUIRED=1 but {what} is missing");
        }
        eprintln!("SKIPPED: needs {what}");
        true
    }

    /// A server accepting any credentials.
    pub fn start() -> Moto {
        Moto::launch(None)
    }

    /// A server enforcing IAM: only [`Moto::key_id`] / [`Moto::secret`]
    /// (an IAM user allowed `s3:*`) are accepted.
    pub fn start_with_auth() -> Moto {
        // The set-up below is exactly 3 unauthenticated actions.
        let mut m = Moto::launch(Some(3));
        let out = m.python(
            "iam = boto3.client('iam', endpoint_url=E, region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')\n\
             iam.create_user(UserName='bundler')\n\
             iam.put_user_policy(UserName='bundler', PolicyName='s3', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))\n\
             k = iam.create_access_key(UserName='bundler')['AccessKey']\n\
             print(k['AccessKeyId'] + ' ' + k['SecretAccessKey'])\n",
        );
        let (id, secret) = out.trim().split_once(' ').expect("key id and secret");
        m.key_id = id.to_owned();
        m.secret = secret.to_owned();
        m
    }

    fn launch(no_auth_actions: Option<u32>) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("moto.")
            .tempdir()
            .expect("temp dir");
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = moto_command().expect("moto is installed (Moto::skip first)");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null());
        if let Some(n) = no_auth_actions {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("log");
        cmd.stdout(log.try_clone().expect("log")).stderr(log);
        let mut child = cmd.spawn().expect("start moto");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "moto did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            child,
            addr,
            dir,
            key_id: ANY_KEY_ID.to_owned(),
            secret: ANY_SECRET.to_owned(),
        }
    }

    /// The server's process id (to read its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The accepted access key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Its secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The environment that points `bundler` at this server with its
    /// credentials, and away from the user's AWS files (`home`).
    pub fn env(&self, home: &Path) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("HOME".into(), home.display().to_string()),
            (
                "AWS_CONFIG_FILE".into(),
                home.join(".aws/config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                home.join(".aws/credentials").display().to_string(),
            ),
        ]
    }

    /// Runs a Python snippet with `boto3`, `json`, `E` (the endpoint) and
    /// `s3` (a client with the accepted credentials) defined; returns its
    /// stdout, panicking when it fails.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json, sys\nfrom botocore.config import Config\nE = {endpoint:?}\n\
             s3 = boto3.client('s3', endpoint_url=E, region_name='us-east-1', aws_access_key_id={id:?}, aws_secret_access_key={secret:?}, config=Config(s3={{'addressing_style': 'path'}}))\n{code}",
            endpoint = self.endpoint(),
            id = self.key_id,
            secret = self.secret,
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "python3 failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!("s3.create_bucket(Bucket={bucket:?})"));
    }

    /// The ETag of an object (`"…-N"` for an N-part multipart upload).
    pub fn etag(&self, bucket: &str, key: &str) -> String {
        self.python(&format!(
            "print(s3.head_object(Bucket={bucket:?}, Key={key:?})['ETag'])"
        ))
        .trim()
        .to_owned()
    }

    /// The number of parts an object was uploaded in (1 for a single PUT).
    pub fn parts_count(&self, bucket: &str, key: &str) -> u64 {
        self.python(&format!(
            "print(s3.head_object(Bucket={bucket:?}, Key={key:?}, PartNumber=1).get('PartsCount', 1))"
        ))
        .trim()
        .parse()
        .expect("a count")
    }

    /// Overwrites an object with a file's bytes.
    pub fn put_file(&self, bucket: &str, key: &str, file: &Path) {
        self.python(&format!(
            "s3.upload_file({:?}, {bucket:?}, {key:?})",
            file.display().to_string()
        ));
    }

    /// Deletes an object.
    pub fn delete(&self, bucket: &str, key: &str) {
        self.python(&format!("s3.delete_object(Bucket={bucket:?}, Key={key:?})"));
    }
}
