//! A real Debian root for end-to-end tests: `debootstrap --variant=minbase
//! bookworm` (plus `systemd`, which a worker node runs as init) into a cache
//! directory under `target/e2e/`, built once and reused by later runs, and
//! copied fresh (`cp -a`) for each test case.
//!
//! Requirements: root, `debootstrap`, and the Debian mirror
//! (<http://deb.debian.org/debian>) reachable. [`prerequisites`] says what is
//! missing, so tests can skip with a clear message — unless
//! `BUNDLE_E2E_REQUIRED=1` (set by `.ci/run`) makes a skip a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cli::target_dir;

/// The mirror debootstrap and apt use.
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// The suite.
pub const SUITE: &str = "bookworm";
/// Packages added to minbase in the cached root.
pub const INCLUDE: &[&str] = &["systemd"];

/// `target/e2e`: where roots, apt lists and downloaded packages are cached.
pub fn cache_dir() -> PathBuf {
    target_dir().join("e2e")
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` is on `PATH` (or in the sbin directories root has).
pub fn have(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .any(|d| !d.is_empty() && Path::new(d).join(program).is_file())
}

/// What keeps the Debian-root tests from running, or `None` when nothing
/// does: not root, or one of `tools` missing.
pub fn prerequisites(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not running as root (debootstrap, chroot and dpkg need it)".into());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (apt-get install debootstrap dpkg-dev gnupg gpgv xz-utils)",
            missing.join(", ")
        )
    })
}

/// Prints why a test is skipped, or panics when `BUNDLE_E2E_REQUIRED=1`
/// says it must run (CI).
pub fn skip(test: &str, why: &str) {
    if std::env::var("BUNDLE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run but BUNDLE_E2E_REQUIRED=1: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// Runs a command, returning its stdout or a message with everything it printed.
pub fn sh(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The cached root (`target/e2e/bookworm-minbase+systemd`), made by
/// debootstrap on first use. Concurrent callers (threads or processes) wait
/// for one build; an interrupted build leaves only a `.tmp` directory, which
/// the next one removes.
pub fn base_root() -> Result<PathBuf, String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!("{SUITE}-minbase+{}", INCLUDE.join("+"));
    let root = dir.join(&name);
    let lock = std::fs::File::create(dir.join(format!("{name}.lock")))
        .map_err(|e| format!("lock: {e}"))?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    if root.join(".complete").is_file() {
        return Ok(root);
    }
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let started = Instant::now();
    eprintln!(
        "debootstrap --variant=minbase --include={} {SUITE} {} {MIRROR} (once; cached in {})",
        INCLUDE.join(","),
        tmp.display(),
        dir.display()
    );
    sh(Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(&tmp)
        .arg(MIRROR))?;
    std::fs::write(tmp.join(".complete"), "").map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &root).map_err(|e| format!("rename: {e}"))?;
    eprintln!("debootstrap took {:.1?}", started.elapsed());
    Ok(root)
}

/// A fresh copy of `base` at `dest` (`cp -a`: owners, modes, devices,
/// symlinks kept), without the cache's marker file.
pub fn fresh_copy(base: &Path, dest: &Path) -> Result<(), String> {
    sh(Command::new("cp").arg("-a").arg(base).arg(dest))?;
    let _ = std::fs::remove_file(dest.join(".complete"));
    Ok(())
}

/// The packages a dpkg status file lists as installed, by name.
pub fn installed_names(status: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(status).map_err(|e| format!("{}: {e}", status.display()))?;
    let mut names = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |f: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{f}: ")).map(str::trim))
        };
        if let (Some(name), Some(status)) = (field("Package"), field("Status"))
            && status.ends_with(" installed")
            && !status.starts_with("deinstall")
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}
