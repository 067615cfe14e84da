//! Running the programs under test as subprocesses.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo target directory (`.../target`), found from the test executable.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/NAME-HASH -> target
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_owned)
        .unwrap_or_else(|| {
            exe.parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .expect("target dir")
                .to_owned()
        })
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_owned()
}

/// The `bundler` binary of this build.
pub fn bundler() -> PathBuf {
    std::env::var_os("BUNDLER_BIN").map_or_else(|| profile_dir().join("bundler"), PathBuf::from)
}

/// The `install-bundle` binary: `$INSTALL_BUNDLE_BIN`, else the static one
/// `make static` writes (`target/static/install-bundle`), else this build's.
pub fn installer() -> PathBuf {
    if let Some(p) = std::env::var_os("INSTALL_BUNDLE_BIN") {
        return PathBuf::from(p);
    }
    let static_bin = target_dir().join("static/install-bundle");
    if static_bin.exists() {
        static_bin
    } else {
        profile_dir().join("install-bundle")
    }
}

/// What a finished process printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit code {}\n--- stdout\n{}--- stderr\n{}---",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts the exit code, printing everything when it differs.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// Asserts that stderr is empty.
    #[track_caller]
    pub fn stderr_empty(&self) -> &Self {
        assert!(self.stderr.trim().is_empty(), "stderr is not empty\n{self}");
        self
    }

    /// Asserts stderr holds progress only: no warning or error line.
    pub fn stderr_progress_only(&self) -> &Self {
        assert!(
            !self
                .stderr
                .lines()
                .any(|l| l.starts_with("warning") || l.starts_with("error")),
            "stderr has a warning or an error\n{self}"
        );
        self
    }
}

/// Runs `bin` with `args` (and extra environment), stdin closed.
pub fn run<I, S>(bin: &Path, args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(bin);
    cmd.args(&args)
        .stdin(Stdio::null())
        .env_remove("BUNDLER_KEY")
        .env_remove("BUNDLER_CACHE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    }
}

/// A throwaway key pair made by `bundler keygen --unencrypted`.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The secret key file.
    pub secret: PathBuf,
    /// The public key file.
    pub public: PathBuf,
}

/// Makes a throwaway key pair `DIR/NAME.key` + `DIR/NAME.pub`.
pub fn keygen(dir: &Path, name: &str) -> Keys {
    let prefix = dir.join(name);
    run(
        &bundler(),
        [
            OsStr::new("keygen"),
            OsStr::new("--out"),
            prefix.as_os_str(),
            OsStr::new("--unencrypted"),
        ],
        &[],
    )
    .code(0);
    Keys {
        secret: dir.join(format!("{name}.key")),
        public: dir.join(format!("{name}.pub")),
    }
}
