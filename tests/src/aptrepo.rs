//! Signed apt repositories for tests, built from real `.deb`s the way a
//! Debian mirror lays them out:
//!
//! ```text
//! DIR/pool/main/*.deb
//! DIR/dists/SUITE/main/binary-ARCH/Packages{,.xz,.gz}   (dpkg-scanpackages)
//! DIR/dists/SUITE/Release                               (SHA256 of the indexes)
//! DIR/dists/SUITE/InRelease, Release.gpg                 (gpg --clearsign / -abs)
//! ```
//!
//! signed by a throwaway key ([`Gpg`]) whose public keyring the spec names.
//! [`Apt`] runs the host's `apt-get` with private state (its own sources,
//! lists and status file) as an independent oracle for the dependency
//! closure, and downloads the real packages with `apt-get download`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::debootstrap::{MIRROR, SUITE, sh};

/// A throwaway GnuPG home with one signing key. Dropping it stops the
/// `gpg-agent` gpg started for this home (and only that one).
#[derive(Debug)]
pub struct Gpg {
    home: tempfile::TempDir,
    /// Fingerprint of the signing key.
    pub fingerprint: String,
}

impl Gpg {
    /// Makes a new home and an Ed25519 signing key without passphrase.
    pub fn new(name: &str) -> Result<Gpg, String> {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let mut gpg = Gpg {
            home,
            fingerprint: String::new(),
        };
        sh(gpg.cmd().args([
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <e2e@example.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]))?;
        let listing = sh(gpg.cmd().args(["--with-colons", "--list-secret-keys"]))?;
        gpg.fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .ok_or("no fingerprint in gpg --list-secret-keys")?
            .to_owned();
        Ok(gpg)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--quiet"]);
        c
    }

    /// Writes the public key as a binary keyring (what apt's `Signed-By`
    /// and `gpgv --keyring` read).
    pub fn export(&self, to: &Path) -> Result<(), String> {
        let out = self
            .cmd()
            .arg("--export")
            .arg(&self.fingerprint)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(format!("gpg --export failed: {out:?}"));
        }
        std::fs::write(to, out.stdout).map_err(|e| e.to_string())
    }

    /// `gpg --clearsign` `input` into `output`.
    pub fn clearsign(&self, input: &Path, output: &Path) -> Result<(), String> {
        sh(self
            .cmd()
            .args([
                "--local-user",
                &self.fingerprint,
                "--digest-algo",
                "SHA256",
                "--clearsign",
                "-o",
            ])
            .arg(output)
            .arg(input))
        .map(drop)
    }

    /// An armored detached signature of `input` into `output`.
    pub fn detach_sign(&self, input: &Path, output: &Path) -> Result<(), String> {
        sh(self
            .cmd()
            .args([
                "--local-user",
                &self.fingerprint,
                "--digest-algo",
                "SHA256",
                "-abs",
                "-o",
            ])
            .arg(output)
            .arg(input))
        .map(drop)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Which signed files a repository gets.
#[derive(Debug, Clone, Copy)]
pub struct Signing {
    /// `InRelease` (clearsigned).
    pub inrelease: bool,
    /// `Release.gpg` (detached).
    pub release_gpg: bool,
}

/// Lays out a repository of `debs` at `dir` for `suite`/`main`/`arch` and
/// signs it with `gpg`. Returns the path of the `Packages` index (plain).
pub fn build_repo(
    dir: &Path,
    debs: &[PathBuf],
    suite: &str,
    arch: &str,
    gpg: &Gpg,
    signing: Signing,
) -> Result<PathBuf, String> {
    let pool = dir.join("pool/main");
    std::fs::create_dir_all(&pool).map_err(|e| e.to_string())?;
    for d in debs {
        let name = d.file_name().ok_or("deb without a name")?;
        std::fs::copy(d, pool.join(name)).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let rel_index = format!("main/binary-{arch}");
    let dists = dir.join("dists").join(suite);
    let index_dir = dists.join(&rel_index);
    std::fs::create_dir_all(&index_dir).map_err(|e| e.to_string())?;
    let packages = sh(Command::new("dpkg-scanpackages")
        .args(["--multiversion", "pool", "/dev/null"])
        .current_dir(dir))?;
    let plain = index_dir.join("Packages");
    std::fs::write(&plain, &packages).map_err(|e| e.to_string())?;
    sh(Command::new("xz").args(["-k", "-f"]).arg(&plain))?;
    sh(Command::new("gzip").args(["-k", "-f", "-n"]).arg(&plain))?;
    let date = sh(Command::new("date").arg("-Ru"))?;
    let mut release = format!(
        "Origin: e2e\nLabel: e2e\nSuite: {suite}\nCodename: {suite}\nDate: {}\nArchitectures: {arch}\nComponents: main\nDescription: test repository\nSHA256:\n",
        date.trim()
    );
    for ext in ["", ".gz", ".xz"] {
        let rel = format!("{rel_index}/Packages{ext}");
        let bytes = std::fs::read(dists.join(&rel)).map_err(|e| e.to_string())?;
        release.push_str(&format!(" {} {} {rel}\n", sha256_hex(&bytes), bytes.len()));
    }
    let release_path = dists.join("Release");
    std::fs::write(&release_path, release).map_err(|e| e.to_string())?;
    if signing.inrelease {
        gpg.clearsign(&release_path, &dists.join("InRelease"))?;
    }
    if signing.release_gpg {
        gpg.detach_sign(&release_path, &dists.join("Release.gpg"))?;
    }
    Ok(plain)
}

/// The host's `apt-get` with private sources (the Debian mirror, one suite),
/// lists, cache and dpkg status, so nothing of the host's apt state is read
/// or changed.
#[derive(Debug)]
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Sets up `dir` with a sources.list for [`MIRROR`] [`SUITE`] main and
    /// `status` (dpkg status text, `#` lines dropped) as the installed set.
    pub fn new(dir: &Path, status: &str) -> Result<Apt, String> {
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        std::fs::write(
            dir.join("sources.list"),
            format!("deb {MIRROR} {SUITE} main\n"),
        )
        .map_err(|e| e.to_string())?;
        let stripped: String = status
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("status"), stripped).map_err(|e| e.to_string())?;
        Ok(Apt {
            dir: dir.to_owned(),
        })
    }

    fn cmd(&self) -> Command {
        self.cmd_of("apt-get")
    }

    fn cmd_of(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut c = Command::new(program);
        for (k, v) in [
            ("Dir::State::status", d("status")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".to_owned()),
            ("Acquire::Languages", "none".to_owned()),
            ("APT::Install-Recommends", "false".to_owned()),
        ] {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        c
    }

    /// `apt-get update` (always when `force`, else only without lists).
    pub fn update(&self, force: bool) -> Result<(), String> {
        let have_lists = std::fs::read_dir(self.dir.join("lists"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false);
        if force || !have_lists {
            sh(self.cmd().arg("update"))?;
        }
        Ok(())
    }

    /// The packages `apt-get install --no-install-recommends PACKAGES` would
    /// install on a system with the status given to [`Apt::new`], as
    /// `(name, version)` (same-version reinstalls left out).
    pub fn closure(&self, packages: &[&str]) -> Result<Vec<(String, String)>, String> {
        let out = sh(self.cmd().args(["-s", "install"]).args(packages))?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let name = w.next()?.to_owned();
                let mut rest = w.next()?;
                // "Inst libssl3 [3.0.11-1] (3.0.13-1 Debian...)" upgrades an
                // installed version. With the same version on both sides it is
                // a reinstall apt plans because a trimmed status file lacks the
                // fields its version hash covers: nothing new, left out.
                let mut installed = None;
                if let Some(v) = rest.strip_prefix('[') {
                    installed = Some(v.trim_end_matches(']'));
                    rest = w.next()?;
                }
                let version = rest.trim_start_matches('(');
                (installed != Some(version)).then(|| (name, version.to_owned()))
            })
            .collect())
    }

    /// The version `apt-get install NAME` would take (`apt-cache policy`'s
    /// candidate).
    pub fn candidate(&self, name: &str) -> Result<String, String> {
        let out = sh(self.cmd_of("apt-cache").args(["policy", name]))?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .filter(|v| *v != "(none)")
            .map(str::to_owned)
            .ok_or_else(|| format!("apt-cache policy {name}: no candidate\n{out}"))
    }

    /// `apt-get download` of exactly these versions into `DIR/debs`
    /// (reusing files already there); the paths, in the given order.
    pub fn download(&self, packages: &[(String, String)]) -> Result<Vec<PathBuf>, String> {
        let debs = self.dir.join("debs");
        let find = |name: &str, version: &str| -> Option<PathBuf> {
            let prefix = format!("{name}_{}_", version.replace(':', "%3a"));
            std::fs::read_dir(&debs).ok()?.flatten().find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                (n.starts_with(&prefix) && n.ends_with(".deb")).then(|| e.path())
            })
        };
        let missing: Vec<String> = packages
            .iter()
            .filter(|(n, v)| find(n, v).is_none())
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if !missing.is_empty() {
            sh(self.cmd().arg("download").args(&missing).current_dir(&debs))?;
        }
        packages
            .iter()
            .map(|(n, v)| find(n, v).ok_or_else(|| format!("apt-get download left no {n} {v}")))
            .collect()
    }
}
